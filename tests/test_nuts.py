"""The cached nutpie callbacks compute what PyTensor computes, and a refit on new data reuses them."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from gaelp_bayes import data, model, nuts, sim


def _cells(seed: int, days: int):
    world = sim.make_world(campaigns=2, seed=5)
    return data.aggregate(data.load_windows(sim.log_history(world, days=days, seed=seed)))


def _call_logp(compiled, x: np.ndarray) -> tuple[float, np.ndarray]:
    grad, logp = np.zeros_like(x), np.zeros(())
    as_ptr = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_double))  # noqa: E731
    code = compiled.compiled_logp_func.ctypes(len(x), as_ptr(x), as_ptr(grad), as_ptr(logp),
                                              ctypes.c_void_p(compiled.user_data.ctypes.data))
    assert code == 0
    return float(logp), grad


@pytest.mark.parametrize("part", ["conversion", "volume", "cost"])
def test_cached_callback_matches_pytensor(part):
    compiled = nuts.compile_model(model.build_model(_cells(seed=6, days=14), part))
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.normal(0, 0.5, compiled.n_dim)
        want_logp, want_grad = compiled.logp_func(x)
        got_logp, got_grad = _call_logp(compiled, x)
        np.testing.assert_allclose(got_logp, want_logp, rtol=1e-9)
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-9, atol=1e-9)


def test_refit_on_new_data_loads_callbacks_from_the_disk_cache():
    first = nuts.compile_model(model.build_model(_cells(seed=6, days=14), "conversion"))
    # other data (other counts, another number of cells, another prior centre): same model structure
    second = nuts.compile_model(model.build_model(_cells(seed=9, days=21), "conversion"))
    assert second.compiled_logp_func.cache_hits == 1 and second.compiled_expand_func.cache_hits == 1
    assert first.n_dim == second.n_dim
    x = np.random.default_rng(1).normal(0, 0.5, second.n_dim)
    np.testing.assert_allclose(_call_logp(second, x)[0], second.logp_func(x)[0], rtol=1e-9)


def test_without_nutpies_internals_the_public_uncached_path_samples(monkeypatch):
    """Another nutpie minor version may lack the internals nuts.py uses: it falls back to nutpie's public API."""
    import types

    import pymc as pm

    monkeypatch.setattr(nuts, "nutpie_pymc", types.SimpleNamespace())  # a nutpie module without them
    with pm.Model() as small:
        pm.Normal("x", 1.0, 2.0, shape=2)
    compiled = nuts.compile_model(small)
    assert not isinstance(compiled, nuts.CachedCompiledModel)
    tree = nuts.sample(small, draws=200, tune=200, chains=2, seed=1, target_accept=0.9, cores=1, progress=False)
    draws = tree["posterior"]["x"].values.reshape(-1, 2)
    assert abs(draws.mean() - 1.0) < 0.5 and 1.5 < draws.std() < 2.5
