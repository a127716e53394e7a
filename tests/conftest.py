"""Shared fixtures.  One fitted posterior for the whole session, made through the CLI.

The world has 3 campaigns and 6 weeks of history; the fit sees the first 5
weeks, the last week is held out for calibration checks.  It uses the default
settings (engine auto: Laplace + importance sampling, NUTS where the gate says)
and must pass its gate in every part: a fit that stops passing fails the session
here, not quietly elsewhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

# the suite's compiled samplers go to a cache of the project's own (.cache/compile), never the user's
# ~/.pytensor, unless the caller chose one; set before anything imports PyTensor or numba
COMPILE_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "compile"
os.environ.setdefault("PYTENSOR_FLAGS", f"base_compiledir={COMPILE_CACHE / 'pytensor'}")
os.environ.setdefault("NUMBA_CACHE_DIR", str(COMPILE_CACHE / "numba"))

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from gaelp_bayes import cli, sim  # noqa: E402

FIT_DAYS, HOLDOUT_DAYS = 35, 7


@dataclass
class Fitted:
    path: Path
    train_csv: Path
    holdout_csv: Path
    world: sim.World
    train: pd.DataFrame
    holdout: pd.DataFrame
    manifest: dict


@pytest.fixture(scope="session")
def fitted(tmp_path_factory) -> Fitted:
    root = tmp_path_factory.mktemp("fitted")
    world = sim.make_world(campaigns=3, seed=11)
    history = sim.log_history(world, days=FIT_DAYS + HOLDOUT_DAYS, seed=12)
    stamps = pd.to_datetime(history["timestamp"], utc=True)
    cut = stamps.min() + pd.Timedelta(days=FIT_DAYS)
    train, holdout = history[stamps < cut], history[stamps >= cut]
    train_csv, holdout_csv = root / "train.csv", root / "holdout.csv"
    train.to_csv(train_csv, index=False)
    holdout.to_csv(holdout_csv, index=False)
    path = root / "models" / "sim"
    code = cli.main(["fit", str(train_csv), "--out", str(path), "--seed", "3", "--quiet"])
    assert code == 0, "the shared fit failed its diagnostics gate (or crashed): see the output above"
    manifest = json.loads((path / "manifest.json").read_text())
    return Fitted(path, train_csv, holdout_csv, world, train.reset_index(drop=True),
                  holdout.reset_index(drop=True), manifest)


@pytest.fixture(scope="session")
def rewrite_runtime():
    """A function that replaces a cache's runtime arrays ({name: [draw, slot, ...]}) and makes its
    checksums match again: a consistent cache holding whatever draws a test needs."""
    import shutil

    from gaelp_bayes import cache

    def rewrite(path: Path, arrays: dict) -> Path:
        shutil.rmtree(path / cache.RUNTIME)
        slots = arrays["cvr"].shape[1]
        shapes = cache.write_runtime(path, [(range(slots), arrays)], slots)
        manifest = json.loads((path / cache.MANIFEST).read_text())
        manifest["runtime_arrays"] = shapes
        manifest["files"][cache.DIGESTS] = cache._sha256(path / cache.DIGESTS)
        cache.write_manifest(path, manifest)
        return path

    return rewrite


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free port of 127.0.0.1 for the session (Debian's package, which `make test`
    installs where it can); the tests that need it skip, saying why, where it is not installed."""
    from gaelp_bayes import fleet

    if fleet.redis_server_path() is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; `make test` installs it "
                    "where it runs as root or with password-less sudo)")
    with fleet.RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


class InstantFit:
    """The shared fit's cache as a fit, returned instantly (``instant_fit``): for tests of where a fit is
    written, not of fitting.  Whatever the engine, it writes the same cache (``cache.write``)."""

    def __init__(self, fitted: Fitted):
        import numpy as np

        from gaelp_bayes import cache

        _, self.tree = cache.read_posterior(fitted.path)
        _, arrays = cache.read_runtime(fitted.path)
        self.arrays = {name: np.array(a) for name, a in arrays.items()}
        self.settings = dict(fitted.manifest["settings"])
        self.seconds = 1.23
        self.diagnostics = _Verdict(fitted.manifest["diagnostics"])

    def runtime_blocks(self, max_draws: int = 1000):
        yield range(self.arrays["cvr"].shape[1]), {name: a[:max_draws] for name, a in self.arrays.items()}

    def close(self) -> None:
        pass


class _Verdict:
    def __init__(self, as_dict: dict):
        self._dict = as_dict
        self.passed, self.failures = as_dict["passed"], as_dict["failures"]

    def as_dict(self) -> dict:
        return self._dict


@pytest.fixture
def instant_fit(fitted, monkeypatch):
    """``model.fit`` replaced by the shared fit's cache (``InstantFit``) for this test."""
    from gaelp_bayes import model

    monkeypatch.setattr(model, "fit", lambda *args, **kwargs: InstantFit(fitted))
