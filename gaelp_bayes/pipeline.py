"""Fit or reuse a cache: the one place that turns cells into a model cache (CLI, demo, benchmarks,
notebooks and the battery all come through here)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import cache
from .data import Cells
from .outputs import is_model_cache


@dataclass
class Cached:
    """A model cache on disk: its path, its manifest and, when it was just fitted, the fit."""

    path: Path
    manifest: dict
    fit: object | None  # model.Fit or ShardedFit (its shards' trees closed: read path's), None when reused


def fit_cached(cells: Cells, out: str | Path, *, reuse: bool = False, accept_failed: bool = False,
               overwrite: bool = False, runtime_draws: int = 1000, sharding: dict | None = None,
               conversion_delay=None, **fit_options) -> Cached:
    """Fit ``cells`` (``model.fit`` with ``fit_options``: ``engine`` among them) and write the cache ``out``
    atomically.

    With ``sharding`` (any of ``workers``, ``scheduler``, ``shard_size``, ``population_size``), the work is
    spread: the Laplace engine's blocks of campaigns (``shard_size`` each), or with ``engine="nuts"`` a
    sharded NUTS fit (``model.sharded``), on a Dask cluster (a ``LocalCluster`` of ``workers``, or
    ``scheduler``'s) or, with neither, in this process.  With ``reuse``, an intact cache at ``out`` of the
    same data by the same model version that passed its gate (any such cache, with ``accept_failed``) is
    kept instead, and another model cache there is replaced.  Anything else at ``out`` is replaced only with
    ``overwrite`` (``outputs.check_output``).  ``conversion_delay``: the delay sample the cells were
    censored with; its quantiles travel in the cache (``cache.write``) for the runtime."""
    from . import model

    engine = fit_options.get("engine") or fit_options.get("config", model.DEFAULT).engine
    if reuse and cache.holds_fit_of(out, cells.fingerprint(), model.MODEL_VERSION, accept_failed, engine):
        return Cached(Path(out), cache.read_manifest(out), None)
    replace = overwrite or (reuse and is_model_cache(Path(out)))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{Path(out).name}.shards.", dir=Path(out).parent) as spill:
        fitted = _fit(cells, dict(sharding or {}), fit_options, Path(spill))
        path = cache.write(out, fitted, cells, max_runtime_draws=runtime_draws, overwrite=replace,
                           conversion_delay=conversion_delay)
        fitted.close()  # a sharded fit's posteriors were read from the spill folder: read the cache's from now on
    return Cached(path, cache.read_manifest(path), fitted)


def _fit(cells: Cells, sharding: dict, fit_options: dict, spill: Path):
    """``model.fit`` with the work spread as ``sharding`` says (``fit_cached``)."""
    from . import model
    from .cluster import DaskRunner, Runner
    from .model import sharded
    from .model.config import DEFAULT

    from dataclasses import replace

    engine = fit_options.pop("engine", None) or fit_options.get("config", DEFAULT).engine
    fit_options["config"] = replace(fit_options.get("config", DEFAULT), engine=engine)
    workers, scheduler = sharding.pop("workers", None), sharding.pop("scheduler", None)
    with (DaskRunner(workers, scheduler) if workers or scheduler else Runner()) as runner:
        nuts = None
        if sharding or workers or scheduler:  # NUTS, where it is used, sharded the same way
            def nuts():
                return sharded.fit_sharded(cells, runner=runner, spill=spill, **sharding, **fit_options)
        laplace = {"population_size": sharding["population_size"]} if "population_size" in sharding else {}
        if "shard_size" in sharding:
            laplace["block_size"] = sharding["shard_size"]
        return model.fit(cells, runner=runner, nuts=nuts, spill=spill, **laplace, **fit_options)
