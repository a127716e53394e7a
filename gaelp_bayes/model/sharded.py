"""A sharded fit for many campaigns: the population from a subsample, then shards fitted independently
under its posterior, one after another here or in parallel on Dask workers (``cluster.py``).

1. **Population.** A joint fit (``fitting.fit``) of ``population_size`` campaigns chosen across the range
   of click volumes (``choose_population``): the conversion part's population (``mu``, ``sigma_campaign``,
   the hour curve, ``sigma_dev``, day of week, ``sigma_cell``) and those campaigns' own posterior.
2. **Shards.** The other campaigns in shards of ``shard_size`` (each, the last one too, padded to that
   size's bucket: one compiled sampler serves every shard), each fitted on its own with the population
   as a normal prior on its unconstrained values (``conversion.PopulationPrior``): the population's
   uncertainty goes into each shard, not a point estimate, and each shard's data updates it.  A shard's
   posterior is then the model's given that shard's data and the population campaigns' data (the other
   shards' data is not used: a little pooling lost, nothing counted twice, since population campaigns
   are in no shard).  The parts without pooling across campaigns (volume, cost, revenue) share their
   common terms (weekday effects, the cost hour curve, the shapes) within a shard.

The result (``ShardedFit``) writes the same cache as a joint fit (``cache.write``): the runtime's cubes
for every campaign in the data's order, a new campaign drawn from the population fit's population, the
gate per part over the population fit and every shard (the worst figure named with its shard).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..data import Cells
from ..errors import UsageError
from .conversion import PopulationPrior
from .config import DEFAULT, POPULATION_SIZE, SHARD_SIZE
from .fitting import Fit, cells_dataset, fit
from .gate import Diagnostics


def choose_population(cells: Cells, size: int) -> list[int]:
    """``size`` campaigns (indices) evenly spread over the campaigns sorted by clicks: small, typical and
    large accounts all inform the population."""
    clicks = np.bincount(cells.campaign, weights=cells.clicks, minlength=len(cells.campaigns))
    order = np.argsort(clicks, kind="stable")
    picks = np.unique(np.linspace(0, len(order) - 1, min(size, len(order))).round().astype(int))
    return sorted(int(i) for i in order[picks])


def subset(cells: Cells, campaigns: list[int]) -> Cells:
    """The cells of some campaigns (indices into ``cells.campaigns``), renumbered in that order."""
    index = np.full(len(cells.campaigns), -1)
    index[campaigns] = np.arange(len(campaigns))
    keep = index[cells.campaign] >= 0
    pick = lambda v: None if v is None else v[keep]  # noqa: E731
    return replace(cells, campaigns=tuple(cells.campaigns[i] for i in campaigns), campaign=index[cells.campaign[keep]],
                   dow=cells.dow[keep], hour=cells.hour[keep], windows=cells.windows[keep], clicks=cells.clicks[keep],
                   conversions=cells.conversions[keep], spend=pick(cells.spend), revenue=pick(cells.revenue),
                   exposure=pick(cells.exposure), weekly_trials=pick(cells.weekly_trials),
                   weekly_conversions=pick(cells.weekly_conversions))


def plan(cells: Cells, population_size: int = POPULATION_SIZE, shard_size: int = SHARD_SIZE) -> list[list[int]]:
    """Campaign indices of the population fit, then of each shard (the rest, in the data's order)."""
    population = choose_population(cells, population_size)
    rest = [i for i in range(len(cells.campaigns)) if i not in set(population)]
    return [population] + [rest[k:k + shard_size] for k in range(0, len(rest), shard_size)]


@dataclass
class ShardedFit:
    """The population fit and the shards' fits: what ``cache.write`` needs of a ``Fit``."""

    population: Fit
    shards: list[Fit]
    cells: Cells  # all campaigns
    seconds: float
    extra: dict  # how it ran (workers, scheduler), for the manifest

    @property
    def fits(self) -> list[Fit]:
        return [self.population, *self.shards]

    @property
    def labels(self) -> list[str]:
        return ["population"] + [f"shard {k + 1}" for k in range(len(self.shards))]

    @property
    def config(self):
        return self.population.config

    @property
    def part_diagnostics(self) -> dict[str, Diagnostics]:
        """Each part's worst figures over the population fit and every shard."""
        parts = self.population.settings["part_diagnostics"]
        return {part: Diagnostics.combine({label: Diagnostics.from_dict(f.settings["part_diagnostics"][part])
                                           for label, f in zip(self.labels, self.fits)}) for part in parts}

    @property
    def diagnostics(self) -> Diagnostics:
        return Diagnostics.combine(self.part_diagnostics)

    @property
    def settings(self) -> dict:
        settings = dict(self.population.settings)
        settings["part_diagnostics"] = {part: d.as_dict() for part, d in self.part_diagnostics.items()}
        settings["retried"] = {f"{label} {part}": why for label, f in zip(self.labels, self.fits)
                               for part, why in f.settings["retried"].items()}
        known = {name: value for f in self.fits for name, value in
                 (f.settings["known_value_per_conversion"] or {}).items()}
        settings["known_value_per_conversion"] = known or None
        settings["sharded"] = {**self.extra, "population": list(self.population.campaigns),
                               "shards": [list(f.campaigns) for f in self.shards],
                               "seconds": [round(f.seconds, 2) for f in self.fits]}
        return settings

    @property
    def tree(self):
        """The population fit's posterior and sample statistics, each shard's under ``shards/shard_K``, and
        every campaign's cells as the observed data."""
        import xarray as xr

        nodes = {group: self.population.tree[group].to_dataset() for group in ("posterior", "sample_stats")}
        nodes["observed_data"] = cells_dataset(self.cells)
        for k, shard in enumerate(self.shards):
            for group in ("posterior", "sample_stats"):
                nodes[f"shards/shard_{k + 1}/{group}"] = shard.tree[group].to_dataset()
        return xr.DataTree.from_dict(nodes)

    def close(self) -> None:
        """Close the shards' posterior files when they were spilled (``fit_sharded(spill=...)``): their
        trees are unusable afterwards; the diagnostics and settings stay."""
        for f in self.shards:
            f.tree.close()

    def runtime_blocks(self, max_draws: int = 1000):
        """What ``cache.write_runtime`` writes, one fit at a time (never every campaign's draws at once):
        each fit's campaigns into their slots in the data's order; a new campaign from the population fit."""
        slot = {name: i for i, name in enumerate(self.cells.campaigns)}
        for k, f in enumerate(self.fits):
            arrays = f.runtime_arrays(max_draws)
            where = [slot[name] for name in f.campaigns] + ([len(slot)] if k == 0 else [])
            yield where, {key: a[:, :len(where)] for key, a in arrays.items()}


def fit_one(cells: Cells, options: dict, population: PopulationPrior | None = None) -> Fit:
    """One fit of the population or of a shard: the task a worker runs."""
    return fit(cells, population=population, **options)


def compile_shards(cells: Cells, options: dict) -> bool:
    """Compile into the disk cache the samplers of a shard shaped like ``cells`` (the population fit runs
    meanwhile on another worker): a population prior's values are data, any will do.  In child processes
    (``fitting._compile_ahead``), as a fit compiles: a worker that compiled a sampler itself would sample
    the shards it fits later with other rounding than one that loads it.  Whether it compiled."""
    from .. import nuts
    from .conversion import population_dimension
    from .fitting import _compile_ahead
    from .parts import build_model, model_parts, padded
    from .revenue import known_value_per_conversion

    if options.get("sampler", "auto") not in ("auto", "nutpie") or not nuts.can_cache():
        return False
    config = options.get("config", DEFAULT)
    drift = config.drift and cells.weekly_trials is not None
    size = population_dimension(config.hour_harmonics, drift)
    placeholder = PopulationPrior(np.zeros(size), np.eye(size), drift)
    shaped = padded(cells, options.get("size", 1))
    try:
        models = {part: build_model(shaped, part, config, placeholder) for part in model_parts(cells)
                  if not (part == "revenue" and known_value_per_conversion(cells) is not None)}
        return all([ahead.wait() for ahead in _compile_ahead(shaped, models, config, placeholder)])
    except Exception:  # only a head start: each shard's fit compiles what it needs itself
        return False


def fit_sharded(cells: Cells, *, population_size: int = POPULATION_SIZE, shard_size: int = SHARD_SIZE,
                runner=None, progress: bool = True, point_population: bool = False, spill: Path | None = None,
                **options) -> ShardedFit:
    """Fit ``cells`` in a population fit and shards (module docstring).  ``runner``: how tasks run
    (``cluster.Runner``; None: here, one after another).  ``options`` go to every ``fitting.fit``; each
    fit gets its own seed (its draws are independent of the others').  ``point_population``: shards
    conditioned on the population's posterior mean instead of its posterior (to measure what carrying
    its uncertainty is worth: ``bench scale``).  ``spill``: a folder where each shard's posterior is
    written as it lands and then read lazily (``Fit.spill``), so that memory does not grow with the number
    of campaigns (about 0.6 MB per campaign at 4 x 1,000 draws); None: kept in memory."""
    from .. import cluster

    if population_size < 2:
        raise UsageError(f"a sharded fit's population needs at least 2 campaigns, got {population_size}")
    runner = runner or cluster.Runner()
    start = time.perf_counter()
    groups = plan(cells, population_size, shard_size)
    options = {**runner.fit_options, **options, "progress": progress and not runner.parallel}
    seed = options.pop("seed", 0)
    shard_cells = [subset(cells, g) for g in groups[1:]]
    shard_options = {**options, "size": shard_size}  # the last shard too: one compiled sampler for all
    ahead = runner.submit(compile_shards, shard_cells[0], shard_options) if shard_cells else None
    # the population fit runs alone (beside the shards' compile, when cold): its chains take every core
    [population] = runner.run([(fit_one, subset(cells, groups[0]), {**options, "seed": seed, "cores": None})],
                              ["population"], progress)
    if ahead is not None:
        runner.result(ahead)
    prior = PopulationPrior.from_posterior(population.tree["posterior"].to_dataset())
    if point_population:
        prior = PopulationPrior(prior.mean, np.zeros_like(prior.scale), prior.drift)
    shards = runner.run([(fit_one, part, {**shard_options, "seed": seed + 1000 * (k + 1)}, prior)
                         for k, part in enumerate(shard_cells)],
                        [f"shard {k + 1}" for k in range(len(shard_cells))], progress,
                        keep=None if spill is None else lambda k, f: f.spill(Path(spill) / f"shard_{k + 1}.nc"))
    extra = {"population_size": population_size, "shard_size": shard_size, "point_population": point_population,
             **runner.describe()}
    return ShardedFit(population, shards, cells, time.perf_counter() - start, extra)
