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

DERIVED = ("hour_effect",)  # deterministic summaries the gate need not check twice
KEY_PARAMETERS = ("mu", "sigma_campaign", "campaign_level", "sigma_hour", "sigma_cell", "sigma_dev")


# the population values a shard of campaigns is fitted under (``PopulationPrior``), with whether each is a
# scale (normal on its log); sizes: 1, 1, 1, 2 * hour_harmonics, 7, 1
POPULATION = (("sigma_campaign", True), ("sigma_dev", True), ("mu", False), ("hour_coef", False),
              ("dow_effect", False), ("sigma_cell", True))


@dataclass(frozen=True)
class PopulationPrior:
    """The campaigns' population (``POPULATION``) as another fit's posterior knows it: normal on the
    unconstrained values (the scales' logs), ``mean + scale @ z`` with ``z`` standard normal.  A shard of
    campaigns is fitted under it instead of the hyperpriors (``model/sharded.py``): the population's
    uncertainty carried into the shard, not a point estimate."""

    mean: np.ndarray  # [K]
    scale: np.ndarray  # [K, K]: the covariance's eigenvectors times the square roots of its eigenvalues

    @classmethod
    def from_posterior(cls, post) -> "PopulationPrior":
        """From a posterior Dataset with the ``POPULATION`` variables (chains and draws stacked)."""
        columns = []
        for name, is_scale in POPULATION:
            values = post[name].values.reshape(post.sizes["chain"] * post.sizes["draw"], -1)
            columns.append(np.log(values) if is_scale else values)
        values = np.concatenate(columns, axis=1)
        eigenvalues, vectors = np.linalg.eigh(np.cov(values, rowvar=False))  # zero-sum weekdays: one is 0
        return cls(values.mean(axis=0), vectors * np.sqrt(np.clip(eigenvalues, 0.0, None)))


def population_dimension(harmonics: int) -> int:
    """The number of unconstrained ``POPULATION`` values."""
    return 3 + 2 * harmonics + 7 + 1


def _given_population(prior: PopulationPrior, harmonics: int) -> dict:
    """The ``POPULATION`` values (model variables) under ``prior``, sampled whitened."""
    import pymc as pm
    import pytensor.tensor as pt

    white = pm.Normal("population_white", 0.0, 1.0, shape=len(prior.mean))
    values = pm.Data("population_mean", prior.mean) + pt.dot(pm.Data("population_scale", prior.scale), white)
    out, start = {}, 0
    for name, is_scale in POPULATION:
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
    pm.Potential("conversion_loglik", beta_binomial_loglik(cells.conversions[seen], trials[seen], eta,
                                                           sigma_cell))


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


def beta_binomial_loglik(k: np.ndarray, n: np.ndarray, eta, sigma_cell):
    """Log density, without its binomial coefficient, of ``k`` successes in ``n`` trials (data) when the
    cell's rate is Beta around ``sigmoid(eta)`` (``cell_beta``): the cell effects integrated out, exactly.
    Cells without a success skip the successes' term (zero): fewer log-gammas on sparse data."""
    import pymc as pm
    import pytensor.tensor as pt

    a, b = cell_beta(eta, sigma_cell, pt)
    some = np.flatnonzero(k > 0)
    successes = pm.Data("conversions_nonzero", k[some].astype("float64"))
    trials = pm.Data("clicks", n.astype("float64"))
    failures = pm.Data("failures", (n - k).astype("float64"))
    return (pt.sum(_log_rising(a[pm.Data("cells_with_conversions", some)], successes))
            + pt.sum(_log_rising(b, failures) - _log_rising(a + b, trials)))


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
    a[:, cell[0], cell[1], cell[2]] += obs["conversions"].values
    b[:, cell[0], cell[1], cell[2]] += np.maximum(trials - obs["conversions"].values, 0.0)
    return {"cvr": rng.beta(a, b)}
