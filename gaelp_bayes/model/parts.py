"""The model's parts and the PyMC model of each (one module per part: priors, likelihood, runtime export)."""

from __future__ import annotations

from ..data import Cells
from . import conversion, cost, revenue, volume
from .config import DEFAULT, ModelConfig

PART_MODULES = {"conversion": conversion, "cost": cost, "volume": volume, "revenue": revenue}
PARTS = tuple(PART_MODULES)
KEY_PARAMETERS = tuple(name for module in PART_MODULES.values() for name in module.KEY_PARAMETERS)


def model_parts(cells: Cells) -> list[str]:
    """The parts the data supports: conversion and volume always, cost with spend, revenue with revenue."""
    return ["conversion", "volume"] + (["cost"] if cells.has_spend else []) + (["revenue"] if cells.has_revenue else [])


def build_model(cells: Cells, part: str = "conversion", config: ModelConfig = DEFAULT):
    """The PyMC model of one part for ``cells``."""
    import pymc as pm

    if part not in PART_MODULES:
        raise ValueError(f"unknown model part {part!r}")
    coords = {"campaign": list(cells.campaigns), "dow": list(range(7)), "hour": list(range(24)),
              "fourier": list(range(2 * config.hour_harmonics)), "fourier_cpc": list(range(2 * config.cpc_harmonics)),
              "curve_coef": list(range(1 + 2 * config.hour_harmonics))}
    with pm.Model(coords=coords) as model:
        PART_MODULES[part].build(cells, len(cells.campaigns) > 1, config)
    return model
