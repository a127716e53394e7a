"""Fitting: sample each part with a sampler backend, retry a part once if it fails the gate, merge.

The parts share no parameters, so the joint posterior is the product of the parts' posteriors: each is
sampled on its own, with its own step size and mass matrix, and the draws are merged.  A sampler backend
is a function ``(model, draws, tune, chains, seed, target_accept, progress, cores) -> DataTree`` registered in
``SAMPLERS``; nutpie (with its compiled model cached on disk, ``nuts.py``) is the default, PyMC's own
sampler stays available, and a distributed backend plugs in the same way.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..data import Cells
from ..errors import FitError
from .conversion import PopulationPrior
from .parts import PART_MODULES, build_model, model_parts, padded
from .config import CHAINS, DEFAULT, DRAWS, MODEL_VERSION, TARGET_ACCEPT, TUNE, ModelConfig
from .gate import Diagnostics, diagnose
from .revenue import known_posterior, known_value_per_conversion


def _nutpie(model, draws: int, tune: int, chains: int, seed: int, target_accept: float, progress: bool,
            cores: int | None = None):
    """nutpie with its compiled callbacks cached on disk (nuts.py)."""
    from .. import nuts

    return nuts.sample(model, draws=draws, tune=tune, chains=chains, seed=seed, target_accept=target_accept,
                       cores=min(chains, cores or os.cpu_count() or 1), progress=progress)


def _pymc(model, draws: int, tune: int, chains: int, seed: int, target_accept: float, progress: bool,
          cores: int | None = None):
    """PyMC's own NUTS (about 1 ms per iteration in Python: slower than nutpie past a few campaigns)."""
    import pymc as pm

    return pm.sample(draws=draws, tune=tune, chains=chains, cores=min(chains, cores or os.cpu_count() or 1, 2),
                     random_seed=seed, target_accept=target_accept, progressbar=progress, nuts_sampler="pymc",
                     compute_convergence_checks=False, model=model)


def _read_request(path: str) -> tuple[Cells, list[str], ModelConfig, PopulationPrior | None]:
    """The cells, parts, configuration and population prior a ``_CompiledAhead`` file holds (arrays and
    JSON only: nothing in the file can run code)."""
    import json

    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        arrays = {name: npz[name] for name in npz.files if name != "meta"}
    scalars = {name: tuple(v) if isinstance(v, list) else v for name, v in meta["cells"].items()}
    population = (PopulationPrior(arrays.pop("population_mean"), arrays.pop("population_scale"),
                                  meta["population_drift"]) if "population_mean" in arrays else None)
    return Cells(**scalars, **arrays), meta["parts"], ModelConfig(**meta["config"]), population


def exit_when_orphaned(parent: int, cleanup: str | None = None) -> None:
    """End this process (removing ``cleanup``) once ``parent`` has ended: a compile that nobody will wait
    for would only take a core from whatever runs next."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        if cleanup and os.path.exists(cleanup):
            os.unlink(cleanup)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _compile_parts(path: str, parent: int) -> None:
    """Compile into the disk cache the nutpie samplers of the parts a ``_compile_ahead`` file names (until
    the ``parent`` process ends, if it ends first)."""
    from .. import nuts

    exit_when_orphaned(parent, cleanup=path)
    cells, parts, config, population = _read_request(path)
    for part in parts:
        nuts.compile_model(build_model(cells, part, config, population))


class _CompiledAhead:
    """A child process compiling some parts' samplers (``_compile_ahead``); ``wait`` before sampling them."""

    def __init__(self, cells: Cells, parts: list[str], config: ModelConfig, population: PopulationPrior | None):
        import dataclasses
        import json
        import subprocess
        import tempfile

        self.parts = parts
        values = {f.name: getattr(cells, f.name) for f in dataclasses.fields(cells)}
        arrays = {name: v for name, v in values.items() if isinstance(v, np.ndarray)}
        if population is not None:
            arrays.update(population_mean=population.mean, population_scale=population.scale)
        meta = {"cells": {name: v for name, v in values.items() if name not in arrays}, "parts": parts,
                "config": config.as_dict(), "population_drift": population is not None and population.drift}
        fd, self._path = tempfile.mkstemp(prefix="gaelp_compile_", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
        # a plain interpreter, not multiprocessing: that would run the caller's unguarded script again
        self._child = subprocess.Popen(
            [sys.executable, "-c", "import sys; from gaelp_bayes.model.fitting import _compile_parts; "
             "_compile_parts(sys.argv[1], int(sys.argv[2]))", self._path, str(os.getpid())],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait(self) -> bool:
        """Until the child is done; whether it succeeded (if not, the parts compile here as before)."""
        code = self._child.wait()
        if os.path.exists(self._path):
            os.unlink(self._path)
        return code == 0


def _compile_ahead(cells: Cells, models: dict, config: ModelConfig,
                   population: PopulationPrior | None = None) -> list[_CompiledAhead]:
    """Child processes compiling into the disk cache the nutpie samplers of the parts not in it yet: one for
    the first such part and one for the rest (compiling is single-threaded: one campaign on an empty cache,
    conversion 49 s and the other three parts 33 s; one core: one child for all).  This process then loads
    every sampler from the cache and never compiles one itself: a sampler compiled in a process computes
    the log density in that process with different rounding than the same sampler loaded from the cache
    (gradients differed in the 12th digit), and NUTS trajectories amplify that until the draws differ
    (on the battery's mixed sizes: 2 divergent transitions on an empty cache, none on a warm one).  So a
    fit's draws do not depend on whether the cache was warm.  Empty for a warm cache or a nutpie whose
    compiled models cannot be cached."""
    from .. import nuts

    if not nuts.can_cache():
        return []
    cold = [part for part, model in models.items() if not nuts.is_cached(model)]
    groups = [cold[:1], cold[1:]] if (os.cpu_count() or 1) >= 2 else [cold]
    return [_CompiledAhead(cells, parts, config, population) for parts in groups if parts]


SAMPLERS: dict[str, Callable] = {"nutpie": _nutpie, "pymc": _pymc}
# nutpie by default: with its callbacks cached it was 6.3x faster than PyMC's sampler for one campaign and
# 1.9x at 20, warm (reports/benchmarks/fit_speed.md)
DEFAULT_SAMPLER = "nutpie"


@dataclass
class Fit:
    """A sampled posterior (all parts merged) with its diagnostics, settings and model configuration."""

    tree: object  # xarray.DataTree: posterior, sample_stats (variables prefixed by part), observed_data
    diagnostics: Diagnostics
    settings: dict
    seconds: float
    config: ModelConfig = field(default=DEFAULT)
    campaigns: tuple[str, ...] = ()  # the fitted campaigns, in the order of the posterior's campaign axis

    def runtime_arrays(self, max_draws: int = 1000) -> dict[str, np.ndarray]:
        """The float32 cubes the runtime reads (``export.runtime_arrays``)."""
        from .export import runtime_arrays

        return runtime_arrays(self.tree, max_draws=max_draws, seed=self.settings["seed"], config=self.config)

    def spill(self, path: Path) -> Fit:
        """This fit with its tree moved to the netCDF file ``path`` and read back lazily (each variable
        read when used): a sharded fit keeps thousands of campaigns' posteriors on disk, not in memory."""
        import xarray as xr

        from ..cache import write_tree

        write_tree(self.tree, path)  # cache=False: what is read is not kept (xarray's default keeps it)
        return replace(self, tree=xr.open_datatree(path, engine="h5netcdf", cache=False))

    def runtime_blocks(self, max_draws: int = 1000):
        """What ``cache.write_runtime`` writes: every slot (the campaigns, then a new campaign) at once."""
        arrays = self.runtime_arrays(max_draws)
        yield range(arrays["cvr"].shape[1]), arrays

    def close(self) -> None:
        """Nothing to release (a spilled tree is closed by ``ShardedFit.close``)."""


def cells_dataset(cells: Cells):
    """The fitted sufficient statistics as an xarray Dataset (stored with the posterior)."""
    import xarray as xr

    data = {name: ("cell", getattr(cells, name)) for name in
            ("campaign", "dow", "hour", "windows", "clicks", "conversions", "spend", "revenue", "exposure")
            if getattr(cells, name) is not None}
    if cells.weekly_trials is not None:
        data["weekly_trials"] = (("cell", "week"), cells.weekly_trials)
        data["weekly_conversions"] = (("cell", "week"), cells.weekly_conversions)
    return xr.Dataset(data, coords={"campaign_name": list(cells.campaigns)},
                      attrs={"timezone": cells.timezone, "period_start": cells.period[0],
                             "period_end": cells.period[1], "n_windows": cells.n_windows})


def real_campaigns(tree, cells: Cells):
    """``tree`` (sampled for ``padded(cells)``) without the padding campaigns' draws."""
    import xarray as xr

    keep = list(cells.campaigns)
    return xr.DataTree.from_dict({group: tree[group].to_dataset().sel(campaign=keep) if "campaign" in tree[group].dims
                                  else tree[group].to_dataset() for group in ("posterior", "sample_stats")})


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _retry(sample, model, first, diverged: bool, cells: Cells, draws: int, tune: int, chains: int, seed: int,
           target_accept: float, config: ModelConfig, progress: bool, part: str):
    """The one automatic retry of a part that failed the gate, returning ``draws`` draws per chain again
    (so the part still merges with the others).

    - Slow mixing only (R-hat, ESS; no divergence): as many draws again from new chains, each appended to
      one of the first sampling's chains, thinned by 2.  Split R-hat then compares 2 x ``chains``
      independent halves, and the effective sample size about doubles, for the cost of the first sampling
      (restarting with twice the draws cost twice that and told the same).
    - Divergences: the geometry is the problem, not the length: a restart with twice the tuning at
      ``config.retry_target_accept`` (a smaller step), twice the draws thinned by 2.
    """
    import xarray as xr

    groups = ("posterior", "sample_stats")

    def thinned(datasets: dict):
        return xr.DataTree.from_dict({group: data.isel(draw=slice(1, None, 2)).assign_coords(draw=np.arange(draws))
                                      for group, data in datasets.items()})

    if not diverged:
        _say(progress, f"    the {part} model mixed too slowly: {draws} more draws from {chains} new chains, "
                       "appended to the first and thinned by 2")
        more = real_campaigns(sample(model, draws=draws, tune=tune, chains=chains, seed=seed,
                                     target_accept=target_accept, progress=progress), cells)
        return thinned({group: xr.concat([first[group].to_dataset(), more[group].to_dataset()], dim="draw")
                        for group in groups})
    _say(progress, f"    the {part} model diverged: sampling it again with {2 * tune} tuning steps and "
                   f"{2 * draws} draws thinned by 2, target_accept {config.retry_target_accept}")
    longer = real_campaigns(sample(model, draws=2 * draws, tune=2 * tune, chains=chains, seed=seed,
                                   target_accept=config.retry_target_accept, progress=progress), cells)
    return thinned({group: longer[group].to_dataset() for group in groups})


def fit(cells: Cells, draws: int = DRAWS, tune: int = TUNE, chains: int = CHAINS, seed: int = 0,
        sampler: str = "auto", target_accept: float = TARGET_ACCEPT, progress: bool = True,
        config: ModelConfig = DEFAULT, population: PopulationPrior | None = None, cores: int | None = None,
        size: int = 1) -> Fit:
    """Sample each part's posterior, retry a part that fails the gate once, merge the draws and diagnose.

    The retry (``_retry``) samples the part once more: new chains appended to the first when it only mixed
    too slowly, a restart at ``config.retry_target_accept`` when it diverged; with
    ``config.retry_max_seconds`` set, a part whose first sampling took longer is not retried.  Each part's
    model is built for the campaign count rounded up to a bucket (``padded``: the padding's draws are
    dropped), and on an empty compile cache the samplers compile in two child processes, every one then
    loaded from the cache here (``_compile_ahead``: the draws do not depend on the cache's state).  With
    ``population``, the conversion part's campaigns come from that population (a shard of
    ``sharded.fit_sharded``); ``cores``: at most this many chains at once (default: one per CPU); ``size``:
    build the model for at least this many campaigns (a shard's size).
    """
    import xarray as xr

    if cells.clicks.sum() == 0:
        raise FitError("no clicks in the data: nothing to learn a conversion rate from")
    sampler = DEFAULT_SAMPLER if sampler == "auto" else sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")
    sample = functools.partial(SAMPLERS[sampler], cores=cores)
    start = time.perf_counter()
    posteriors, stats, diags, retried = [], [], {}, {}
    parts = model_parts(cells)
    bucketed = padded(cells, size)  # the model's size: a few campaigns more or fewer reuse the compiled sampler
    known_rpc = known_value_per_conversion(cells)
    models = {part: build_model(bucketed, part, config, population) for part in parts
              if not (part == "revenue" and known_rpc is not None)}
    aheads = _compile_ahead(bucketed, models, config, population) if sampler == "nutpie" else []
    for i, part in enumerate(parts):
        if part not in models:  # revenue with no noise to fit: the value is known, not sampled
            _say(progress, f"[{i + 1}/{len(parts)}] revenue per conversion is a known value (every conversion of "
                           "a campaign is worth the same): not sampled")
            posteriors.append(known_posterior(known_rpc, cells.campaigns, chains, draws))
            diags[part] = Diagnostics.known(chains, draws, config.gate)
            continue
        _say(progress, f"[{i + 1}/{len(parts)}] sampling the {part} model ({sampler}, {chains} chains x "
                       f"{tune} tune + {draws} draws)")
        for ahead in aheads:
            if part in ahead.parts:
                ahead.wait()  # its sampler is in the cache now (or, if the child failed, compiles here)
        part_start = time.perf_counter()
        model = models[part]
        derived = PART_MODULES[part].DERIVED
        tree = real_campaigns(sample(model, draws=draws, tune=tune, chains=chains, seed=seed + i,
                                     target_accept=target_accept, progress=progress), cells)
        diags[part] = diagnose(tree, derived, config.gate)
        if not diags[part].passed and (config.retry_max_seconds is None
                                       or time.perf_counter() - part_start <= config.retry_max_seconds):
            retried[part] = "; ".join(diags[part].failures)
            tree = _retry(sample, model, tree, diags[part].divergences > 0, cells, draws, tune, chains,
                          seed + 100 + i, target_accept, config, progress, part)
            diags[part] = diagnose(tree, derived, config.gate)
        posteriors.append(tree["posterior"].to_dataset())
        st = tree["sample_stats"].to_dataset()
        stats.append(st.rename({v: f"{part}__{v}" for v in st.data_vars}))
    merged = xr.DataTree.from_dict({
        "posterior": xr.merge(posteriors, combine_attrs="drop_conflicts", join="exact"),
        "sample_stats": xr.merge(stats, combine_attrs="drop_conflicts", join="exact"),
        "observed_data": cells_dataset(cells),
    })
    settings = {"engine": "nuts", "model_version": MODEL_VERSION, "draws": draws, "tune": tune, "chains": chains,
                "seed": seed,
                "sampler": sampler, "target_accept": target_accept, "parts": parts,
                "retried": retried, "part_diagnostics": {p: d.as_dict() for p, d in diags.items()},
                "known_value_per_conversion": (None if known_rpc is None else
                                               dict(zip(cells.campaigns, map(float, known_rpc)))),
                "config": config.as_dict()}
    return Fit(tree=merged, diagnostics=Diagnostics.combine(diags), settings=settings,
               seconds=time.perf_counter() - start, config=config, campaigns=cells.campaigns)
