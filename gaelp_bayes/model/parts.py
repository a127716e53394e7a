"""The model's parts and the PyMC model of each (one module per part: priors, likelihood, runtime export)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..data import Cells
from . import conversion, cost, revenue, volume
from .config import DEFAULT, ModelConfig

PART_MODULES = {"conversion": conversion, "cost": cost, "volume": volume, "revenue": revenue}
PARTS = tuple(PART_MODULES)
KEY_PARAMETERS = tuple(name for module in PART_MODULES.values() for name in module.KEY_PARAMETERS)


def model_parts(cells: Cells) -> list[str]:
    """The parts the data supports: conversion and volume always, cost with spend, revenue with revenue."""
    return ["conversion", "volume"] + (["cost"] if cells.has_spend else []) + (["revenue"] if cells.has_revenue else [])


def campaign_bucket(campaigns: int) -> int:
    """The number of campaigns a model is built for: ``campaigns`` rounded up to 1, 2, 3, 4, 6, 8, 12, 16,
    24, ... (at most 1.5x), so that a refit with a few campaigns more or fewer reuses the compiled sampler."""
    power = 1
    while power < campaigns:
        power *= 2
    return power * 3 // 4 if power >= 4 and power * 3 // 4 >= campaigns else power


def padded(cells: Cells, at_least: int = 1) -> Cells:
    """``cells`` with campaigns without data appended up to ``campaign_bucket`` (of ``at_least`` campaigns
    if that is more: every shard of a sharded fit has one size).  A campaign without data is a draw from the
    population that no likelihood term touches: it integrates out exactly, so the other campaigns'
    posterior is unchanged (``fitting`` drops its draws).  The weeks of the drift are padded the same way
    (weeks before the data, without trials): a log that grew by a week refits on the same sampler."""
    size = campaign_bucket(max(len(cells.campaigns), at_least))
    names, i = list(cells.campaigns), 0
    while len(names) < size:
        i += 1
        if f"(padding {i})" not in names:
            names.append(f"(padding {i})")
    weekly = {}
    if cells.weekly_trials is not None:  # weeks before the data, without trials, up to a bucket too
        extra = campaign_bucket(cells.weekly_trials.shape[1]) - cells.weekly_trials.shape[1]
        weekly = {name: np.pad(getattr(cells, name), ((0, 0), (0, extra)))
                  for name in ("weekly_trials", "weekly_conversions")}
    return replace(cells, campaigns=tuple(names), **weekly)


def build_model(cells: Cells, part: str = "conversion", config: ModelConfig = DEFAULT,
                population: conversion.PopulationPrior | None = None):
    """The PyMC model of one part for ``cells`` (as given: ``padded`` makes the bucketed size); with
    ``population``, the conversion part's campaigns come from that population (a shard of a sharded fit)."""
    import pymc as pm

    if part not in PART_MODULES:
        raise ValueError(f"unknown model part {part!r}")
    coords = {"campaign": list(cells.campaigns), "dow": list(range(7)), "hour": list(range(24)),
              "fourier": list(range(2 * config.hour_harmonics)), "fourier_cpc": list(range(2 * config.cpc_harmonics)),
              "curve_coef": list(range(1 + 2 * config.hour_harmonics))}
    if cells.weekly_trials is not None:
        coords["week"] = list(range(cells.weekly_trials.shape[1]))
    with pm.Model(coords=coords) as model:
        if part == "conversion":
            conversion.build(cells, len(cells.campaigns) > 1, config, population)
        else:
            PART_MODULES[part].build(cells, len(cells.campaigns) > 1, config)
    return model
