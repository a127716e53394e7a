"""The cached nutpie callbacks compute what PyTensor computes, and a refit on new data reuses them."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pytensor.compile.mode import get_mode

from gaelp_bayes import data, model, nuts, sim


def _cells(seed: int, days: int, campaigns: int = 2):
    world = sim.make_world(campaigns=campaigns, seed=5)
    return data.aggregate(data.load_windows(sim.log_history(world, days=days, seed=seed)))


def _call_logp(compiled, x: np.ndarray) -> tuple[float, np.ndarray]:
    grad, logp = np.zeros_like(x), np.zeros(())
    as_ptr = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_double))  # noqa: E731
    code = compiled.compiled_logp_func.ctypes(len(x), as_ptr(x), as_ptr(grad), as_ptr(logp),
                                              ctypes.c_void_p(compiled.user_data.ctypes.data))
    assert code == 0
    return float(logp), grad


def _pytensor_logp(pymc_model, compiled):
    """The log density at a flat point ``x`` by PyMC's own (uncached, Python) function, and its gradient by
    central differences of it (PyTensor's Python gradient of the drift's sums would take Elemwise ops of
    more than the 32 operands Python allows)."""
    import pytensor
    import pytensor.tensor as pt

    names, slices, shapes = compiled.shape_info
    inputs = pymc_model.value_vars
    total = pt.sum(pt.stack([pt.sum(term) for term in pymc_model.logp(sum=False)]))  # stacked: <= 32 operands
    mode = get_mode("FAST_COMPILE").excluding("fusion", "add_mul_fusion", "canonicalize")  # no merged sums
    function = pytensor.function(inputs, total, mode=mode)

    def logp(x: np.ndarray) -> float:
        point = {name: x[where].reshape(shape) for name, where, shape in zip(names, slices, shapes)
                 if where.stop <= compiled.n_dim}
        return float(function(*(point[v.name] for v in inputs)))

    def at(x: np.ndarray) -> tuple[float, np.ndarray]:
        step = 1e-6 * np.maximum(1.0, np.abs(x))
        grad = np.array([(logp(x + h) - logp(x - h)) / (2 * h[i]) for i, h in
                         enumerate(np.diag(step))])
        return logp(x), grad

    return at


@pytest.mark.parametrize("part", ["conversion", "volume", "cost"])
def test_cached_callback_matches_pytensor(part):
    pymc_model = model.build_model(_cells(seed=6, days=14), part)
    compiled = nuts.compile_model(pymc_model)
    reference = _pytensor_logp(pymc_model, compiled)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.normal(0, 0.5, compiled.n_dim)
        want_logp, want_grad = reference(x)
        got_logp, got_grad = _call_logp(compiled, x)
        np.testing.assert_allclose(got_logp, want_logp, rtol=1e-9)
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-4)


def test_refit_on_new_data_loads_callbacks_through_the_index():
    first = nuts.compile_model(model.build_model(_cells(seed=6, days=14), "conversion"))
    # other data (other counts, another number of cells, another prior centre): same model structure
    refit = model.build_model(_cells(seed=9, days=12), "conversion")
    second = nuts.compile_model(refit)
    assert second.from_index and second.logp_func is None
    assert second.compiled_logp_func.cache_hits == 1 and second.compiled_expand_func.cache_hits == 1
    assert first.n_dim == second.n_dim and first.shape_info[0] == second.shape_info[0]
    x = np.random.default_rng(1).normal(0, 0.5, second.n_dim)
    np.testing.assert_allclose(_call_logp(second, x)[0], _pytensor_logp(refit, second)(x)[0], rtol=1e-9)


def test_structure_key_follows_the_structure_not_the_data():
    def key(cells, part="conversion"):
        pymc_model = model.build_model(cells, part)
        return nuts.structure_key(pymc_model, nuts._graphs(pymc_model))

    two = key(_cells(seed=6, days=14))
    assert key(_cells(seed=9, days=12)) == two  # other counts, cells and prior centre
    # weeks of drift, padded to a bucket as campaigns: a log that grew by a week is one structure
    assert key(model.padded(_cells(seed=6, days=29))) == key(model.padded(_cells(seed=9, days=36)))
    assert key(_cells(seed=6, days=21)) != two
    assert key(_cells(seed=6, days=14, campaigns=3)) != two  # another number of campaigns
    assert key(_cells(seed=6, days=14), "volume") != two
    # padded to the campaign bucket (what fit builds), 5 and 6 campaigns are one structure
    assert key(model.padded(_cells(seed=6, days=14, campaigns=5))) == key(model.padded(_cells(seed=9, days=12, campaigns=6)))


def test_a_stale_index_entry_falls_back_to_compiling(monkeypatch):
    """An entry whose callbacks are gone from numba's cache (or never were) costs a compile, not a failure."""
    pymc_model = model.build_model(_cells(seed=6, days=14), "cost")
    path = nuts._index_path(nuts.structure_key(pymc_model, nuts._graphs(pymc_model)))
    nuts.compile_model(pymc_model)
    entry = json.loads(path.read_text())
    stale = {**entry, "logp": {**entry["logp"], "inner_key": "0" * 64}}
    path.write_text(json.dumps(stale))
    compiled = nuts.compile_model(model.build_model(_cells(seed=9, days=21), "cost"))
    assert not compiled.from_index and compiled.logp_func is not None
    assert json.loads(path.read_text()) == entry  # written again by the full compile
    x = np.random.default_rng(2).normal(0, 0.5, compiled.n_dim)
    np.testing.assert_allclose(_call_logp(compiled, x)[0], float(compiled.logp_func(x)[0]), rtol=1e-9)


def test_nutpie_gets_arviz_base_and_everyone_else_the_real_arviz():
    """In a new process (this one may have imported arviz already): importing nuts leaves arviz_stats and
    arviz_plots unimported, nutpie's two arviz functions are arviz_base's, and ``import arviz`` is the real one."""
    probe = textwrap.dedent("""
        import sys
        from gaelp_bayes import nuts
        import arviz_base
        seen_by_nutpie = sys.modules["nutpie.sample"].arviz
        checks = [isinstance(seen_by_nutpie, nuts._DeferredArviz), "arviz" not in sys.modules,
                  "arviz_stats" not in sys.modules, "arviz_plots" not in sys.modules,
                  seen_by_nutpie.from_dict is arviz_base.from_dict,
                  seen_by_nutpie.dict_to_dataset is arviz_base.dict_to_dataset]
        import arviz
        checks += [not isinstance(arviz, nuts._DeferredArviz), seen_by_nutpie.summary is arviz.summary]
        print(checks)
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == str([True] * 8)


def test_without_nutpies_internals_the_public_uncached_path_samples(monkeypatch):
    """Another nutpie minor version may lack the internals nuts.py uses: it falls back to nutpie's public API."""
    import types

    import pymc as pm

    monkeypatch.setattr(nuts, "nutpie_pymc", types.SimpleNamespace())  # a nutpie module without them
    with pm.Model() as small:
        pm.Normal("x", 1.0, 2.0, shape=2)
    compiled = nuts.compile_model(small)
    assert not getattr(compiled, "from_index", None) and not hasattr(compiled, "data_arrays")
    tree = nuts.sample(small, draws=200, tune=200, chains=2, seed=1, target_accept=0.9, cores=1, progress=False)
    draws = tree["posterior"]["x"].values.reshape(-1, 2)
    assert abs(draws.mean() - 1.0) < 0.5 and 1.5 < draws.std() < 2.5


def test_parts_compile_ahead_in_child_processes_only_when_cold(monkeypatch):
    """fit compiles the cold parts' samplers in plain child interpreters (the first part in one, the rest in
    another); with every part in the cache it starts no child."""
    from gaelp_bayes.model import fitting

    cells = model.padded(_cells(seed=6, days=14))
    models = {part: model.build_model(cells, part) for part in ("conversion", "cost")}
    for m in models.values():
        nuts.compile_model(m)  # both in the cache now
    assert fitting._compile_ahead(cells, models, model.DEFAULT) == []
    monkeypatch.setattr(nuts, "is_cached", lambda m: False)
    aheads = fitting._compile_ahead(cells, models, model.DEFAULT)
    assert [ahead.parts for ahead in aheads] == [["conversion"], ["cost"]]
    sent = fitting._read_request(aheads[1]._path)
    assert sent[0].fingerprint() == cells.fingerprint() and sent[0].campaigns == cells.campaigns
    assert sent[1:] == (["cost"], model.DEFAULT, None)
    assert all(ahead.wait() for ahead in aheads)  # each child built its models from the cells it was sent
    monkeypatch.undo()
    fresh = {part: model.build_model(cells, part) for part in models}  # as fit builds them: loaded, not compiled
    monkeypatch.setattr(nuts, "_compile", lambda m: pytest.fail("fit compiled a sampler in its own process"))
    assert all(nuts.compile_model(m).from_index for m in fresh.values())


@pytest.mark.slow  # 46 s: a compile on an empty cache, every run (``pytest -m slow``)
def test_draws_are_the_same_on_an_empty_compile_cache_as_on_a_warm_one(tmp_path):
    """Two processes sample the same part as ``fit`` does, the first on an empty compile cache, the second on
    what it left: the same draws, to the bit (a sampler compiled in the sampling process itself rounds
    differently: without the children, the volume part's draws differed).  The suite checks the mechanism
    (``test_parts_compile_ahead_in_child_processes_only_when_cold``)."""
    script = textwrap.dedent("""
        import hashlib, sys
        sys.path.insert(0, sys.argv[1])
        from test_nuts import _cells
        from gaelp_bayes import model, nuts
        from gaelp_bayes.model import fitting
        cells = model.padded(_cells(seed=6, days=14, campaigns=1))
        part = model.build_model(cells, sys.argv[2])
        for ahead in fitting._compile_ahead(cells, {sys.argv[2]: part}, model.DEFAULT):
            ahead.wait()
        tree = nuts.sample(part, draws=100, tune=100, chains=1, seed=3, target_accept=0.9, cores=1, progress=False)
        post = tree["posterior"].to_dataset()
        print(hashlib.sha256(b"".join(post[v].values.tobytes() for v in sorted(post.data_vars))).hexdigest())
    """)
    env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={tmp_path}"}
    digests = [subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent), "volume"], env=env,
                              capture_output=True, text=True, check=True).stdout.split()[-1] for _ in range(2)]
    assert digests[0] == digests[1]


def test_a_compile_child_ends_with_its_parent(tmp_path):
    """A parent killed mid-fit leaves no compile running on (nor its request file)."""
    import time

    request = tmp_path / "request.npz"
    request.write_bytes(b"")
    child = ("import sys, time; from gaelp_bayes.model.fitting import exit_when_orphaned; "
             "exit_when_orphaned(int(sys.argv[1]), sys.argv[2]); time.sleep(60)")
    parent = ("import os, subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', sys.argv[1], "
              "str(os.getpid()), sys.argv[2]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
              "print(p.pid, flush=True); time.sleep(3); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", parent, child, str(request)], capture_output=True, text=True,
                         timeout=60)
    pid = int(out.stdout.split()[0])
    deadline = time.time() + 10
    while time.time() < deadline and Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid), "the child outlived its parent"
    assert not request.exists()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "gone"
