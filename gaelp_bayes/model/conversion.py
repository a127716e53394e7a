"""The conversion part: the rate of each campaign x day-of-week x hour cell.

    logit mean[c,d,h] = level[c] + curve_c(h) + day[d],      rate[c,d,h] ~ Beta around mean[c,d,h]

- ``curve_c``: the campaign's hour curve, a Fourier series (``hour_harmonics``; basis scaled 1/sqrt(k),
  cyclic: hour 23 sits next to hour 0).  With several campaigns, levels ~ N(mu, sigma_campaign) and curve
  coefficients ~ N(hour_coef, sigma_dev): partial pooling toward the population, whose hour curve
  (``hour_effect``, coefficients ~ N(0, sigma_hour): flat when the data shows no hour effect) predicts a
  new campaign; the population means are sampled whitened given their scales (``curves.population_mean``).  Level and curve are sampled conditionally whitened
  (``curves.conditionally_whitened``): no funnel as a scale goes to zero, no ridge when data pins a
  campaign, and no data-dependent switch between the two.  One campaign: fixed weak priors.
- ``day``: zero-sum over the weekdays the data has; a weekday never seen is drawn from the prior.
- Drift (``drift_offsets``; data over two weeks or more, ``config.drift``): ``level[c]`` is the campaign's
  level averaged over the data's weeks; in week ``w`` (counted back from the last) the rate is
  ``exp(offset[c, w])`` times the level's: a pooled trend per week plus a random walk.  The likelihood
  weighs each cell's trials of week ``w`` by ``exp(offset[c, w])`` (for conversion rates well below 1, a
  week's expected conversions are its trials times the rate), and adds how the conversions split over
  the weeks (``weekly_split_loglik``).  The runtime's rates are the last week's (``drift_now``); a forecast
  ``h`` weeks past that week's middle moves them by ``trend h`` with a walk of sd ``sigma_walk sqrt(h)``
  (``cache.drift_factor``).
- Cell effects (campaign x weekday x hour, persistent from week to week): each cell's rate is Beta with
  the cell mean and a log-odds spread ``sigma_cell`` (``cell_beta``), integrated out of the likelihood
  (beta-binomial on the cell's sums), so they cost no parameters and have no funnel when their true scale
  is zero.  The runtime draws each cell's rate from its conjugate Beta given the cell's own counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import Cells
from .common import curve_design, flat_cell, fourier_basis, hour_sums, logit
from .config import ModelConfig
from .curves import conditionally_whitened, curve_approximation, estimates_and_variances, population_mean

DERIVED = ("hour_effect", "level_offset", "drift_now")  # deterministic summaries the gate need not check twice
KEY_PARAMETERS = ("mu", "sigma_campaign", "campaign_level", "sigma_hour", "sigma_cell", "sigma_dev", "trend_mean",
                  "sigma_walk")


# the population values a shard of campaigns is fitted under (``PopulationPrior``), with whether each is a
# scale (normal on its log); sizes: 1, 1, 1, 2 * hour_harmonics, 7, 1; with drift, the drift's population too
POPULATION = (("sigma_campaign", True), ("sigma_dev", True), ("mu", False), ("hour_coef", False),
              ("dow_effect", False), ("sigma_cell", True))
DRIFT_POPULATION = (("trend_mean", False), ("sigma_trend", True), ("sigma_walk", True))


def population_names(drift: bool) -> tuple[tuple[str, bool], ...]:
    """The ``POPULATION`` values, and the drift's (``DRIFT_POPULATION``) with ``drift``."""
    return POPULATION + (DRIFT_POPULATION if drift else ())


@dataclass(frozen=True)
class PopulationPrior:
    """The campaigns' population (``population_names``) as another fit's posterior knows it: normal on the
    unconstrained values (the scales' logs), ``mean + scale @ z`` with ``z`` standard normal.  A shard of
    campaigns is fitted under it instead of the hyperpriors (``model/sharded.py``): the population's
    uncertainty carried into the shard, not a point estimate.  With ``drift``, the drift's trend mean and
    spreads are population values too: a shard never learns them again."""

    mean: np.ndarray  # [K]
    scale: np.ndarray  # [K, K]: the covariance's eigenvectors times the square roots of its eigenvalues
    drift: bool = False

    @classmethod
    def from_values(cls, values: dict[str, np.ndarray], weights: np.ndarray | None = None) -> "PopulationPrior":
        """From draws of the population values ({name: [draw, ...]}, natural scales), optionally weighted."""
        drift = "sigma_walk" in values
        columns = []
        for name, is_scale in population_names(drift):
            v = np.asarray(values[name], np.float64).reshape(len(values[name]), -1)
            columns.append(np.log(v) if is_scale else v)
        stacked = np.concatenate(columns, axis=1)
        weights = np.full(len(stacked), 1.0 / len(stacked)) if weights is None else weights / weights.sum()
        mean = weights @ stacked
        covariance = np.einsum("n,ni,nj->ij", weights, stacked - mean, stacked - mean)
        eigenvalues, vectors = np.linalg.eigh(covariance)  # zero-sum weekdays: one is 0
        return cls(mean, vectors * np.sqrt(np.clip(eigenvalues, 0.0, None)), drift)

    @classmethod
    def from_posterior(cls, post) -> "PopulationPrior":
        """From a posterior Dataset with the population variables (chains and draws stacked)."""
        names = [name for name, _ in population_names("sigma_walk" in post)]
        return cls.from_values({name: post[name].values.reshape(post.sizes["chain"] * post.sizes["draw"], -1)
                                for name in names})


def population_dimension(harmonics: int, drift: bool = False) -> int:
    """The number of unconstrained population values."""
    return 3 + 2 * harmonics + 7 + 1 + (3 if drift else 0)


def _given_population(prior: PopulationPrior, harmonics: int) -> dict:
    """The population values (model variables) under ``prior``, sampled whitened."""
    import pymc as pm
    import pytensor.tensor as pt

    white = pm.Normal("population_white", 0.0, 1.0, shape=len(prior.mean))
    values = pm.Data("population_mean", prior.mean) + pt.dot(pm.Data("population_scale", prior.scale), white)
    out, start = {}, 0
    for name, is_scale in population_names(prior.drift):
        size = {"hour_coef": 2 * harmonics, "dow_effect": 7}.get(name, 1)
        value = values[start:start + size] if size > 1 else values[start]
        dims = {"hour_coef": "fourier", "dow_effect": "dow"}.get(name)
        out[name] = pm.Deterministic(name, pt.exp(value) if is_scale else value, dims=dims)
        start += size
    return out


def build(cells: Cells, pooled_campaigns: bool, cfg: ModelConfig, population: PopulationPrior | None = None) -> None:
    """Conversion-rate terms (inside an open model context); with ``population``, the campaigns' population
    is that prior's (a shard of a sharded fit) instead of being learned here under the hyperpriors."""
    import pymc as pm
    import pytensor.tensor as pt

    harmonics = cfg.hour_harmonics
    trials = cells.trials
    pooled = (cells.conversions.sum() + 0.5) / (trials.sum() + 1.0)
    seen = trials > 0
    center = pm.Data("conversion_prior_center", logit(pooled))  # data, not a constant: see nuts.py
    conversions, clicks = hour_sums(cells, seen, cells.conversions, trials)
    cells_per_hour = np.maximum(hour_sums(cells, seen, np.ones(len(seen)))[0], 1)
    # cell effects add variance: an hour's information is about its cells' 1/(1/(n p (1-p)) + sd^2) summed
    cell_variance = cell_sd_guess(cells, seen, conversions, clicks) ** 2
    approximation = curve_approximation(conversions, clicks, float(center.get_value()), "binomial",
                                        lambda _: cell_variance / cells_per_hour, harmonics)
    if population is not None:  # a shard of a sharded fit: the population is the prior's
        given = _given_population(population, harmonics)
        day, sigma_cell, hour_coef = given["dow_effect"], given["sigma_cell"], given["hour_coef"]
        theta = conditionally_whitened("curve", approximation, given["mu"], given["sigma_campaign"], hour_coef,
                                       given["sigma_dev"])
    elif pooled_campaigns:  # the population the campaigns come from; its means sampled given its scales
        day = day_of_week(np.unique(cells.dow[seen]), cfg.dow_sd)
        sigma_campaign = pm.HalfNormal("sigma_campaign", cfg.sigma_campaign_scale)
        sigma_dev = pm.HalfNormal("sigma_dev", cfg.sigma_dev_scale)
        sigma_hour = pm.HalfNormal("sigma_hour", cfg.sigma_hour_scale)
        mode, variances = estimates_and_variances(approximation, clicks.sum(axis=1) > 0)
        mu = pm.Deterministic("mu", population_mean("mu", mode[:, :1], variances[:, :1], sigma_campaign, center,
                                                    cfg.level_center_sd)[0])
        hour_coef = pm.Deterministic("hour_coef", population_mean("hour_coef", mode[:, 1:], variances[:, 1:],
                                                                  sigma_dev, 0.0, sigma_hour), dims="fourier")
        theta = conditionally_whitened("curve", approximation, mu, sigma_campaign, hour_coef, sigma_dev)
    else:  # one campaign: its curve is the hour curve (with a learned scale), its level under a weak prior
        day = day_of_week(np.unique(cells.dow[seen]), cfg.dow_sd)
        theta = conditionally_whitened("curve", approximation, center, cfg.level_center_sd, pt.zeros(2 * harmonics),
                                       pm.HalfNormal("sigma_hour", cfg.sigma_hour_scale))
        pm.Deterministic("mu", theta[0, 0])
        hour_coef = pm.Deterministic("hour_coef", theta[0, 1:], dims="fourier")
    if population is not None or pooled_campaigns:
        pm.Deterministic("campaign_level", theta[:, 0], dims="campaign")
        pm.Deterministic("dev_coef", theta[:, 1:] - hour_coef[None, :], dims=("campaign", "fourier"))
    pm.Deterministic("hour_effect", pt.dot(fourier_basis(harmonics), hour_coef), dims="hour")
    if population is None:
        sigma_cell = pm.Gamma("sigma_cell", alpha=cfg.sigma_cell_shape, beta=cfg.sigma_cell_rate)
    grid = pt.dot(theta, curve_design(harmonics).T)[:, None, :] + day[None, :, None]  # [campaign, dow, hour]
    eta = grid.reshape((-1,))[pm.Data("cell_idx", flat_cell(cells)[seen])]
    n, k = trials[seen], cells.conversions[seen]
    if cfg.drift and cells.weekly_trials is not None:  # each week's trials at that week's level
        offset = drift_offsets(cells, seen, population is not None or pooled_campaigns, cfg,
                               given if population is not None and population.drift else None)
        weekly = pm.Data("weekly_trials", cells.weekly_trials[seen])
        n = (weekly * pt.exp(offset)[pm.Data("cell_campaign", cells.campaign[seen])]).sum(axis=1)
        pm.Potential("drift_loglik", weekly_split_loglik(cells, seen, n, offset))
    pm.Potential("conversion_loglik", beta_binomial_loglik(k, n, eta, sigma_cell))


def weekly_split_loglik(cells: Cells, seen: np.ndarray, n, offset):
    """How each cell's conversions split over the weeks, given their total: multinomial with probabilities
    ``weekly_trials exp(offset) / n`` (``n`` the cells' weighted trials).  The cell's own rate cancels
    (its conversions in each week are about Poisson with that rate times the week's weighted trials), so
    the split is what tells the drift from the level, and the beta-binomial of the totals the rest.
    Without constants: ``sum K[c, w] offset[c, w] - sum_cells k log n``, ``K`` the campaign-week sums."""
    import pymc as pm
    import pytensor.tensor as pt

    k = cells.conversions[seen]
    some = np.flatnonzero(k > 0)
    by_week = campaign_weeks(cells, seen, cells.weekly_conversions)
    return (pt.sum(pm.Data("campaign_week_conversions", by_week) * offset)
            - pt.sum(pm.Data("drift_conversions", k[some].astype("float64"))
                     * pt.log(n[pm.Data("drift_cells_with_conversions", some)])))


def drift_offsets(cells: Cells, seen: np.ndarray, pooled_campaigns: bool, cfg: ModelConfig, given: dict | None = None):
    """[campaign, week]: the log of each campaign's rate in each week (counted back from the last) relative
    to its level, the rate averaged over its weeks (weighted by their trials).  Relative to the last week
    (``level_offset``) the weeks are ``-(trend[c] w + the walk's steps between)``: trends pooled
    (``trend_mean``, ``sigma_trend``, whose prior avoids zero as ``sigma_cell``'s: with a few campaigns a
    spread at zero is a funnel; one campaign: its trend is ``trend_mean``), steps ~ N(0, sigma_walk)
    (``random_walk``).  Both are sampled whitened given their scales and the data's estimates (as
    ``curves.conditionally_whitened``): no funnel when a scale is near zero (stationary data), no ridge when
    a campaign's data pins its weeks.  Centring on the average keeps the level about independent of the
    drift (what the data pins best is the average); ``drift_now`` [campaign] is the last week relative to
    the level.  ``given``: the trend mean and the spreads from a shard's population (``_given_population``)
    instead of their priors."""
    import pymc as pm
    import pytensor.tensor as pt

    campaigns, weeks = len(cells.campaigns), cells.weekly_trials.shape[1]
    log_rate, information = weekly_rates(cells, seen)
    if given is not None:
        trend_mean, sigma_walk, sigma_trend = given["trend_mean"], given["sigma_walk"], given["sigma_trend"]
    else:
        trend_mean = pm.Normal("trend_mean", 0.0, cfg.drift_trend_sd)
        sigma_walk = pm.HalfNormal("sigma_walk", cfg.drift_walk_scale)
    if pooled_campaigns:
        if given is None:
            sigma_trend = pm.Gamma("sigma_trend", alpha=cfg.drift_trend_spread_shape,
                                   beta=cfg.drift_trend_spread_rate)
        estimate, precision = trend_approximation(log_rate, information)
        # the walk blurs what the weeks say of a trend: over n weeks, by a variance sigma_walk^2 / (n - 1)
        spans = np.maximum((information > 0).sum(axis=1) - 1, 1)
        blur = pm.Data("trend_walk_blur", np.where(precision > 0, 1.0 / spans, 0.0)) * sigma_walk**2
        data_precision = pm.Data("trend_information", precision)
        data_precision = data_precision / (1.0 + data_precision * blur)
        precision = data_precision + 1.0 / sigma_trend**2
        mean = (data_precision * pm.Data("trend_estimate", estimate) + trend_mean / sigma_trend**2) / precision
        trend = mean + pm.Flat("trend_white", dims="campaign") / pt.sqrt(precision)
        pm.Potential("trend_jacobian", -0.5 * pt.log(precision).sum())
        pm.Potential("trend_prior", pm.logp(pm.Normal.dist(trend_mean, sigma_trend), trend).sum())
    else:
        trend = pt.ones(campaigns) * trend_mean
    trend = pm.Deterministic("trend", trend, dims="campaign")
    back = random_walk(-trend[:, None] * np.arange(1, weeks), sigma_walk, log_rate, information)
    from_last = pm.Deterministic("level_offset", pt.concatenate([pt.zeros((campaigns, 1)), back], axis=1),
                                 dims=("campaign", "week"))
    share = campaign_weeks(cells, seen, cells.weekly_trials)
    share = np.where(share.sum(axis=1, keepdims=True) > 0, share, 1.0)  # padding: any weights
    share /= share.sum(axis=1, keepdims=True)
    now = pm.Deterministic("drift_now", -(pm.Data("week_share", share) * from_last).sum(axis=1), dims="campaign")
    return from_last + now[:, None]


def random_walk(mean, sigma, log_rate: np.ndarray, information: np.ndarray):
    """[campaign, week - 1]: weeks 1.. (counted back) relative to the last, a random walk back from it
    around ``mean`` (the trend): ``x = offsets - mean`` ~ N(0, sigma^2 min(i, j)), whose precision is
    ``R / sigma^2`` with ``R`` tridiagonal.  With the data's approximation (each week's log rate
    relative to the last, precision ``D``), ``x`` given the scale is about N(m, A^-1), ``A = D + R /
    sigma^2``, ``m = A^-1 D (estimate - mean)``: sampled as ``m + chol(A)^-T u`` with ``u`` free
    (``walk_white``), the prior and the map's Jacobian added as potentials.  ``A`` is tridiagonal, so
    its Cholesky factor is bidiagonal: factor and solves are written out as a recurrence over the weeks
    (elementwise over campaigns), with no batched linear-algebra ops to compile."""
    import pymc as pm
    import pytensor.tensor as pt

    steps = log_rate.shape[1] - 1
    known = information[:, 1:] > 0
    precision = np.where(known, 1.0 / (1.0 / np.where(known, information[:, 1:], 1.0)
                                       + 1.0 / np.maximum(information[:, :1], 1e-12)), 0.0)
    estimate = np.where(known, log_rate[:, 1:] - log_rate[:, :1], 0.0)
    d = pm.Data("walk_information", precision)
    coupling = 1.0 / sigma**2
    walk_diagonal = np.full(steps, 2.0)
    walk_diagonal[-1] = 1.0  # the oldest week has no older neighbour
    # A = L L^T with L bidiagonal: diagonal l[i], below it s[i] = -coupling / l[i - 1]
    l, s = [], [None]
    for i in range(steps):
        pivot = d[:, i] + walk_diagonal[i] * coupling
        if i:
            s.append(-coupling / l[i - 1])
            pivot = pivot - s[i] ** 2
        l.append(pt.sqrt(pivot))
    rhs = d * (pm.Data("walk_estimate", estimate) - mean)
    half = []  # L^-1 rhs
    for i in range(steps):
        half.append((rhs[:, i] - (s[i] * half[i - 1] if i else 0.0)) / l[i])
    white = pm.Flat("walk_white", shape=(log_rate.shape[0], steps))
    x = [None] * steps  # L^-T (half + white)
    for i in reversed(range(steps)):
        z = half[i] + white[:, i]
        x[i] = (z - s[i + 1] * x[i + 1] if i + 1 < steps else z) / l[i]
    x = pt.stack(x, axis=1)
    pm.Potential("walk_jacobian", -pt.log(pt.stack(l, axis=1)).sum())
    steps_between = pt.concatenate([x[:, :1], x[:, 1:] - x[:, :-1]], axis=1)  # x^T R x = their squares' sum
    pm.Potential("walk_prior", -0.5 * (steps_between**2).sum() / sigma**2 - x.size * pt.log(sigma))
    return mean + x


def campaign_weeks(cells: Cells, seen: np.ndarray, weekly: np.ndarray) -> np.ndarray:
    """[campaign, week]: a per-cell weekly array (``Cells.weekly_trials`` or ``weekly_conversions``) summed
    over each campaign's cells."""
    out = np.zeros((len(cells.campaigns), weekly.shape[1]))
    np.add.at(out, cells.campaign[seen], weekly[seen])
    return out


def weekly_rates(cells: Cells, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each campaign's log conversion rate per week [campaign, week] and its information (about the week's
    conversions; 0 for a week without trials): what the drift's whitening approximates the data by (only
    the sampler's speed depends on it)."""
    conversions = campaign_weeks(cells, seen, cells.weekly_conversions)
    trials = campaign_weeks(cells, seen, cells.weekly_trials)
    return np.log((conversions + 0.5) / (trials + 1.0)), np.where(trials > 0, conversions + 0.5, 0.0)


def trend_approximation(log_rate: np.ndarray, information: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each campaign's trend (log rate per week) as its weekly rates alone estimate it, and that estimate's
    precision (weighted least squares): what the trends are whitened by.  A campaign without data: 0."""
    time = -np.arange(log_rate.shape[1], dtype=np.float64)  # forward in time
    total = np.maximum(information.sum(axis=1, keepdims=True), 1e-12)
    centred = time - (information * time).sum(axis=1, keepdims=True) / total
    precision = (information * centred**2).sum(axis=1)
    return (information * centred * log_rate).sum(axis=1) / np.maximum(precision, 1e-12), precision


def cell_sd_guess(cells: Cells, seen: np.ndarray, conversions: np.ndarray, clicks: np.ndarray) -> float:
    """A moment estimate of the cell effects' log-odds scale (clipped to [0.02, 1]): the cells' variance
    beyond the binomial around their campaign-hour rate.  Only the whitening uses it (a guess that sets the
    sampler's speed, not the model)."""
    rate = ((conversions + 0.5) / (clicks + 1.0))[cells.campaign[seen], cells.hour[seen]]
    k, n = cells.conversions[seen], cells.trials[seen]
    binomial = n * rate * (1 - rate)
    excess = np.sum((k - n * rate) ** 2 - binomial) / max(np.sum(binomial**2), 1e-12)
    return float(np.clip(np.sqrt(max(excess, 0.0)), 0.02, 1.0))


def day_of_week(observed: np.ndarray, scale: float):
    """Day-of-week effects [7]: zero-sum over the weekdays the data has (the levels are their average), and
    for a weekday never seen, an effect drawn from the prior that the likelihood does not touch (inside the
    zero-sum it would trade off against every level: a ridge)."""
    import pymc as pm
    import pytensor.tensor as pt

    if len(observed) == 7:
        return pm.ZeroSumNormal("dow_effect", scale, dims="dow")
    day = pt.zeros(7)
    if len(observed) > 1:
        day = pt.set_subtensor(day[observed], pm.ZeroSumNormal("dow_seen", scale, shape=len(observed)))
    unseen = np.setdiff1d(np.arange(7), observed)
    day = pt.set_subtensor(day[unseen], pm.Normal("dow_unseen", 0.0, scale, shape=len(unseen)))
    return pm.Deterministic("dow_effect", day, dims="dow")


def cell_beta(eta, sigma_cell, backend=np):
    """The Beta(a, b) of a cell's rate around the mean ``sigmoid(eta)``, with the cell effects' standard
    deviation ``sigma_cell`` on the log-odds scale (moment-matched: a = 1/(sd^2 (1-p)), b = 1/(sd^2 p))."""
    inv_var = 1.0 / sigma_cell**2
    return inv_var * (1.0 + backend.exp(eta)), inv_var * (1.0 + backend.exp(-eta))


def _log_rising(x, n):
    """log Gamma(x + n) - log Gamma(x).  Plain log-gammas: with ``sigma_cell``'s zero-avoiding prior, arguments
    large enough to lose digits (above 1e11: sigma_cell below 1e-5) have a prior probability under 1e-6."""
    import pytensor.tensor as pt

    return pt.gammaln(x + n) - pt.gammaln(x)


def beta_binomial_loglik(k: np.ndarray, n, eta, sigma_cell):
    """Log density, without its binomial coefficient, of ``k`` successes in ``n`` trials (data, or a tensor
    of the parameters: then with the binomial coefficient's part that depends on them) when the
    cell's rate is Beta around ``sigmoid(eta)`` (``cell_beta``): the cell effects integrated out, exactly.
    Cells without a success skip the successes' term (zero): fewer log-gammas on sparse data."""
    import pymc as pm
    import pytensor.tensor as pt

    a, b = cell_beta(eta, sigma_cell, pt)
    some = np.flatnonzero(k > 0)
    successes = pm.Data("conversions_nonzero", k[some].astype("float64"))
    with_conversions = pm.Data("cells_with_conversions", some)
    loglik = pt.sum(_log_rising(a[with_conversions], successes))
    if isinstance(n, np.ndarray):
        trials, failures = pm.Data("clicks", n.astype("float64")), pm.Data("failures", (n - k).astype("float64"))
    else:  # trials that depend on parameters (drift; never below the conversions, as ``Cells.trials``): the
        # binomial coefficient is no constant any more.  Data, not constants: see nuts.py
        conversions = pm.Data("conversions", k.astype("float64"))
        trials = pt.maximum(n, conversions)
        failures = trials - conversions
        loglik = loglik + pt.sum(_log_rising(failures[with_conversions] + 1.0, successes))
    return loglik + pt.sum(_log_rising(b, failures) - _log_rising(a + b, trials))


def export(g, obs, n: int, rng: np.random.Generator, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """``cvr`` [draw, campaign + 1, 7, 24] from ``n`` posterior draws (``g(name)``: a variable's draws);
    the last campaign is a new one, drawn from the population."""
    basis = fourier_basis(cfg.hour_harmonics)
    if g("campaign_level") is not None:  # campaigns pooled, or a shard's campaigns under a given population
        level, coef = g("campaign_level"), g("hour_coef")[:, None, :] + g("dev_coef")
        new_level = g("mu") + g("sigma_campaign") * rng.normal(size=n)
        new_dev = g("sigma_dev")[:, None]
    else:  # one campaign: a new one is drawn around it with the priors' spread
        level, coef = g("mu")[:, None], g("hour_coef")[:, None, :]
        new_level = level[:, 0] + cfg.unseen_level_sd * rng.normal(size=n)
        new_dev = np.abs(rng.normal(0, cfg.unseen_curve_sd, n))[:, None]
    new_coef = g("hour_coef") + new_dev * rng.normal(size=(n, basis.shape[1]))
    level = np.concatenate([level, new_level[:, None]], axis=1)
    coef = np.concatenate([coef, new_coef[:, None, :]], axis=1)
    eta = ((level[:, :, None] + coef @ basis.T)[:, :, None, :]
           + g("dow_effect")[:, None, :, None])  # [draw, campaign + 1, dow, hour]: the cells' mean log-odds
    # each cell's rate given its mean: Beta(a, b) (cell_beta), updated by the cell's own counts (conjugate)
    a, b = cell_beta(eta, g("sigma_cell")[:, None, None, None])
    cell = (obs["campaign"].values, obs["dow"].values, obs["hour"].values)
    trials = obs["exposure"].values if "exposure" in obs else obs["clicks"].values  # censored: the exposure
    offset, now = g("level_offset"), g("drift_now")
    if offset is not None:  # drift: each week's trials at its level (``drift_offsets``), a campaign at a time
        weekly = obs["weekly_trials"].values
        trials = np.empty((n, len(cell[0])))
        for c in np.unique(cell[0]):
            mine = np.flatnonzero(cell[0] == c)
            trials[:, mine] = np.exp(offset[:, c, :weekly.shape[1]] + now[:, c, None]) @ weekly[mine].T
    a[:, cell[0], cell[1], cell[2]] += obs["conversions"].values
    b[:, cell[0], cell[1], cell[2]] += np.maximum(trials - obs["conversions"].values, 0.0)
    cvr = rng.beta(a, b)
    if offset is None:
        return {"cvr": cvr}
    # the last week's rates; a new campaign's moved as the campaigns' were on average
    now = np.concatenate([now, now.mean(axis=1, keepdims=True)], axis=1)
    return {"cvr": np.minimum(cvr * np.exp(now)[:, :, None, None], 1.0), "drift": drift_export(g, n, rng)}


def drift_export(g, n: int, rng: np.random.Generator) -> np.ndarray:
    """``drift`` [draw, campaign + 1, 2]: each campaign's trend and the walk's sd (log rate per week, what
    ``cache.drift_factor`` moves a forecast by); a new campaign's trend drawn from the campaigns' population."""
    trend = g("trend")
    spread = g("sigma_trend")
    new = g("trend_mean") + (0.0 if spread is None else spread * rng.normal(size=n))
    trend = np.concatenate([trend, new[:, None]], axis=1)
    return np.stack([trend, np.broadcast_to(g("sigma_walk")[:, None], trend.shape)], axis=2)
