"""The vectorised R-hat and ESS (convergence.py) are arviz_stats' to rounding, ties and constants included."""

from __future__ import annotations

import numpy as np
import pytest
from arviz_stats.base import array_stats

from gaelp_bayes import convergence


def _chains(quantities: int, chains: int, draws: int, seed: int) -> np.ndarray:
    """AR(1) chains with autocorrelations from -0.5 to 0.97, one shifted chain, a constant and some ties."""
    rng = np.random.default_rng(seed)
    phi = np.linspace(-0.5, 0.97, quantities)[:, None]
    noise = rng.normal(size=(quantities, chains, draws))
    x = np.zeros_like(noise)
    x[:, :, 0] = noise[:, :, 0]
    for t in range(1, draws):
        x[:, :, t] = phi * x[:, :, t - 1] + noise[:, :, t]
    x[:, 1] += np.linspace(0.0, 0.5, quantities)[:, None]  # chains that disagree: R-hat well above 1
    x[0] = 3.0
    x[1:5] = np.round(x[1:5])
    return x


@pytest.mark.parametrize(("chains", "draws"), [(4, 200), (4, 201), (2, 9), (3, 4)])
def test_diagnostics_match_arviz_stats(chains, draws):
    x = _chains(600, chains, draws, seed=draws)  # 600 quantities: more than one block
    rhat, bulk, tail = convergence.diagnostics(x)
    kw = {"chain_axis": -2, "draw_axis": -1}
    np.testing.assert_allclose(rhat, array_stats.rhat(x, **kw), rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(bulk, array_stats.ess(x, method="bulk", **kw), rtol=1e-8, equal_nan=True)
    np.testing.assert_allclose(tail, array_stats.ess(x, method="tail", prob=(0.05, 0.95), **kw), rtol=1e-8,
                               equal_nan=True)
    if draws >= 200:  # the shifted chains are caught
        assert rhat[-1] > 1.05 and np.nanmin(bulk) < 0.5 * chains * draws
