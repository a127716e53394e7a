"""The parts' summed likelihood potentials equal the plain per-cell distributions (up to a constant)."""

from __future__ import annotations

import numpy as np
import pytensor
import pytest
from scipy import stats

from gaelp_bayes import data, model, sim


@pytest.fixture(scope="module")
def cells():
    world = sim.make_world(campaigns=3, seed=5)
    return data.aggregate(data.load_windows(sim.log_history(world, days=14, seed=6)))


def _points(part_model, n: int = 3):
    """The initial point and a few random points around it (transformed values, as the sampler sees them)."""
    rng = np.random.default_rng(1)
    start = part_model.initial_point()
    return [start] + [{k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in start.items()} for _ in range(n)]


def _differences(part_model, potential: str, reference) -> tuple[np.ndarray, np.ndarray]:
    """Potential and reference log density at each point, each minus its value at the first point."""
    logp = part_model.compile_logp(vars=[part_model[potential]])
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
        phi, log_vol = _value(m, "volume_shape", point), _value(m, "log_volume", point)
        mean = cells.windows * np.exp(log_vol[cells.campaign, cells.dow, cells.hour])
        shape = cells.windows * phi
        return stats.nbinom.logpmf(cells.clicks, shape, shape / (shape + mean)).sum()

    got, want = _differences(m, "clicks_loglik", reference)
    assert np.abs(want).max() > 1.0
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-6)
