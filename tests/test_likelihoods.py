"""The parts' summed likelihood potentials equal the plain per-cell distributions (up to a constant)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytensor
import pytest
from scipy import stats

from gaelp_bayes import data, model, sim
from gaelp_bayes.model import volume
from gaelp_bayes.model.config import DEFAULT


@pytest.fixture(scope="module")
def cells():
    world = sim.make_world(campaigns=3, seed=5)
    return data.aggregate(data.load_windows(sim.log_history(world, days=14, seed=6)))


def _points(part_model, n: int = 3):
    """The initial point and a few random points around it (transformed values, as the sampler sees them)."""
    rng = np.random.default_rng(1)
    start = part_model.initial_point()
    return [start] + [{k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in start.items()} for _ in range(n)]


def _differences(part_model, potential: str, reference, *more: str) -> tuple[np.ndarray, np.ndarray]:
    """Potential (plus ``more`` potentials) and reference log density at each point, each minus its value
    at the first point."""
    logp = part_model.compile_logp(vars=[part_model[name] for name in (potential, *more)])
    got, want = [], []
    for point in _points(part_model):
        got.append(float(logp(point)))
        want.append(reference(point))
    return np.array(got) - got[0], np.array(want) - want[0]


def _value(part_model, name: str, point) -> np.ndarray:
    """A model variable (a deterministic, say) at a point of the transformed values."""
    (out,) = part_model.replace_rvs_by_values([part_model[name]])
    fn = pytensor.function(part_model.value_vars, out, on_unused_input="ignore")
    return np.asarray(fn(**point))


def test_cost_potential_is_the_gamma_likelihood(cells):
    m = model.build_model(cells, "cost")
    paid = (cells.clicks > 0) & (cells.spend > 0)

    def reference(point):
        kappa, log_cpc = _value(m, "cost_shape", point), _value(m, "log_cpc", point)
        cpc = np.exp(log_cpc[cells.campaign[paid], cells.hour[paid]])
        return stats.gamma.logpdf(cells.spend[paid], a=cells.clicks[paid] * kappa, scale=cpc / kappa).sum()

    got, want = _differences(m, "spend_loglik", reference)
    assert np.abs(want).max() > 1.0  # the points differ enough to test anything
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-6)


def test_revenue_potential_is_the_gamma_likelihood(cells):
    m = model.build_model(cells, "revenue")
    sold = (cells.conversions > 0) & (cells.revenue > 0)

    def reference(point):
        tau, rpc = _value(m, "revenue_shape", point), np.exp(_value(m, "log_rpc", point))[cells.campaign[sold]]
        return stats.gamma.logpdf(cells.revenue[sold], a=cells.conversions[sold] * tau, scale=rpc / tau).sum()

    got, want = _differences(m, "revenue_loglik", reference)
    assert np.abs(want).max() > 1.0
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-6)


def test_volume_potential_is_the_negative_binomial_likelihood(cells):
    m = model.build_model(cells, "volume")

    def reference(point):
        phi = _value(m, "volume_shape", point)
        dow = _value(m, "vol_dow", point) if "vol_dow" in m.named_vars else None
        log_vol = volume.log_volume(_value(m, "vol_level", point), _value(m, "vol_hour", point), dow,
                                    DEFAULT.hour_harmonics)  # the export's formula: the model's, or this fails
        mean = cells.windows * np.exp(log_vol[cells.campaign, cells.dow, cells.hour])
        shape = cells.windows * phi
        return stats.nbinom.logpmf(cells.clicks, shape, shape / (shape + mean)).sum()

    got, want = _differences(m, "clicks_loglik", reference)
    assert np.abs(want).max() > 1.0
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-6)


def _cell_beta(m, cells, point) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's Beta(a, b) at a point: its campaign-hour-weekday mean and the cell effects' scale."""
    level, coef = _value(m, "campaign_level", point), _value(m, "hour_coef", point) + _value(m, "dev_coef", point)
    eta = (level[:, None] + coef @ model.fourier_basis(model.DEFAULT.hour_harmonics).T)[cells.campaign, cells.hour]
    eta = eta + _value(m, "dow_effect", point)[cells.dow]
    return model.cell_beta(eta, _value(m, "sigma_cell", point))


def test_conversion_potential_is_the_beta_binomial_likelihood(cells):
    """Cell effects integrated out: each cell's count is beta-binomial around the campaign-hour-weekday mean."""
    m = model.build_model(cells, "conversion", replace(DEFAULT, drift=False))
    seen = cells.clicks > 0

    def reference(point):
        a, b = _cell_beta(m, cells, point)
        return stats.betabinom.logpmf(cells.conversions, cells.clicks, a, b)[seen].sum()

    got, want = _differences(m, "conversion_loglik", reference)
    assert np.abs(want).max() > 1.0
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-5)


def test_drift_potentials_are_each_week_poisson_with_a_shared_beta_cell_rate(cells):
    """With drift, a cell's conversions in week w are binomial (about Poisson: rates well below 1) with its
    trials times its rate times exp(offset[w]), the cell's rate Beta as without drift: the beta-binomial of
    the totals at the weighted trials, times the multinomial split over the weeks (each written out here)."""
    from scipy.special import betaln, gammaln

    m = model.build_model(cells, "conversion")
    seen = cells.clicks > 0
    trials, conversions = cells.weekly_trials[seen], cells.weekly_conversions[seen]
    k = cells.conversions[seen]

    def reference(point):
        a, b = (v[seen] for v in _cell_beta(m, cells, point))
        offset = _value(m, "level_offset", point) + _value(m, "drift_now", point)[:, None]
        weighted = trials * np.exp(offset[cells.campaign[seen]])
        n = weighted.sum(axis=1)
        totals = (gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1) + betaln(k + a, n - k + b) - betaln(a, b))
        split = (conversions * np.log(np.where(weighted > 0, weighted / n[:, None], 1.0))).sum()
        return totals.sum() + split

    got, want = _differences(m, "conversion_loglik", reference, "drift_loglik")
    assert np.abs(want).max() > 1.0
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-5)


def test_cell_beta_matches_the_cell_effects_scale():
    """Beta(a, b) has mean sigmoid(eta) and about the log-odds spread sigma_cell."""
    rng = np.random.default_rng(0)
    for eta, sd in ((-4.0, 0.1), (-1.0, 0.3), (0.5, 0.05)):
        a, b = model.cell_beta(np.float64(eta), sd)
        draws = rng.beta(a, b, 200_000)
        assert abs(draws.mean() - 1 / (1 + np.exp(-eta))) < 0.01 * draws.mean()
        assert abs(np.log(draws / (1 - draws)).std() - sd) < 0.1 * sd


@pytest.mark.parametrize("free, value, jacobian", [
    ("curve_white", lambda m: pt_concat_curves(m), "curve_jacobian"),
    ("hour_coef_white", lambda m: m["hour_coef"], "hour_coef_jacobian"),
    ("mu_white", lambda m: m["mu"], "mu_jacobian"),
])
def test_whitening_changes_of_variables_are_exact(cells, free, value, jacobian):
    """Each whitened map (campaign curves given the population; population means given their scales): the
    Jacobian the model adds equals log|det d value / d free| (autodiff), at several points."""
    m = model.build_model(cells, "conversion")
    white = m.rvs_to_values[m[free]]
    (out,) = m.replace_rvs_by_values([value(m).ravel()])
    (term,) = m.replace_rvs_by_values([m[jacobian]])
    fn = pytensor.function(m.value_vars, [pytensor.gradient.jacobian(out, white), term], on_unused_input="ignore")
    for point in _points(m):
        full, want = fn(**point)
        sign, logdet = np.linalg.slogdet(full.reshape(point[free].size, -1))
        assert sign != 0
        np.testing.assert_allclose(logdet, want, rtol=1e-8)


def test_the_walk_is_whitened_exactly_and_its_prior_is_a_random_walk():
    """Six weeks (some campaigns' weeks without data): the walk's map from ``walk_white`` has the Jacobian the
    model adds (autodiff), and its prior term is the random walk's Gaussian density, written out densely."""
    world = sim.make_world(campaigns=3, seed=8)
    six = data.aggregate(data.load_windows(sim.log_history(world, days=42, seed=9)))
    six = replace(six, weekly_trials=six.weekly_trials.copy())
    six.weekly_trials[six.campaign == 1, 2] = 0.0  # a week without data
    m = model.build_model(six, "conversion")
    white, sigma = m.rvs_to_values[m["walk_white"]], m["sigma_walk"]
    walk = m["level_offset"][:, 1:] + m["trend"][:, None] * np.arange(1, six.weekly_trials.shape[1])
    (walk, sigma, jacobian, prior) = m.replace_rvs_by_values([walk, sigma, m["walk_jacobian"], m["walk_prior"]])
    fn = pytensor.function(m.value_vars, [pytensor.gradient.jacobian(walk.ravel(), white), walk, sigma, jacobian,
                                          prior], on_unused_input="ignore")
    steps = six.weekly_trials.shape[1] - 1
    precision = 2.0 * np.eye(steps) - np.eye(steps, k=1) - np.eye(steps, k=-1)
    precision[-1, -1] = 1.0
    for point in _points(m):
        full, x, s, got_jacobian, got_prior = fn(**point)
        sign, logdet = np.linalg.slogdet(full.reshape(x.size, -1))
        assert sign != 0
        np.testing.assert_allclose(logdet, got_jacobian, rtol=1e-8)
        want = sum(stats.multivariate_normal(np.zeros(steps), np.linalg.inv(precision) * s**2).logpdf(row) for row in x)
        np.testing.assert_allclose(got_prior, want + x.size * 0.5 * np.log(2 * np.pi) - 0.5 * len(x) * np.log(
            np.linalg.det(precision)), rtol=1e-8)


def pt_concat_curves(m):
    """A campaign's 13 curve values as the model holds them: level, then hour coefficients."""
    import pytensor.tensor as pt

    return pt.concatenate([m["campaign_level"][:, None], m["hour_coef"][None, :] + m["dev_coef"]], axis=1)


def test_campaign_buckets():
    assert [model.campaign_bucket(n) for n in (1, 2, 3, 4, 5, 7, 9, 13, 20, 200)] == [1, 2, 3, 4, 6, 8, 12, 16, 24, 256]


@pytest.mark.parametrize("part", ["conversion", "volume", "cost", "revenue"])
def test_padding_campaigns_leaves_the_posterior_unchanged(part):
    """A padding campaign (no data) is a draw from the population that integrates out: the padded model's
    log density is the plain model's plus a term in the padding's own free values alone, at any point."""
    world = sim.make_world(campaigns=5, seed=5)
    cells = data.aggregate(data.load_windows(sim.log_history(world, days=7, seed=6)))
    bucketed = model.padded(cells)
    assert len(bucketed.campaigns) == 6 and bucketed.campaigns[:5] == cells.campaigns
    plain, pad = model.build_model(cells, part), model.build_model(bucketed, part)
    plain_logp, pad_logp = plain.compile_logp(mode="FAST_COMPILE"), pad.compile_logp(mode="FAST_COMPILE")
    rng = np.random.default_rng(3)
    extra = {k: rng.normal(0, 0.5, np.shape(v)[:1] and (1,) + np.shape(v)[1:])
             for k, v in pad.initial_point().items() if np.shape(v) != np.shape(plain.initial_point()[k])}
    assert extra  # the padding has free values of its own
    gaps = []
    for point in _points(plain):
        padded_point = {k: np.concatenate([v, extra[k]]) if k in extra else v for k, v in point.items()}
        gaps.append(float(pad_logp(padded_point)) - float(plain_logp(point)))
    np.testing.assert_allclose(gaps, gaps[0], atol=1e-6)
