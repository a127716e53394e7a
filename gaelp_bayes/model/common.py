"""Building blocks the parts share: hour bases, sums over hours, campaign levels, the Gamma likelihood."""

from __future__ import annotations

import numpy as np

from ..data import Cells


def fourier_basis(harmonics: int) -> np.ndarray:
    """[24, 2*harmonics] cos/sin basis over the hours, columns scaled by 1/sqrt(k).

    The scaling is the prior's smoothness: higher harmonics need more evidence,
    yet a peak a couple of hours wide (prime time) stays within reach.
    """
    hours = np.arange(24)
    cols = []
    for k in range(1, harmonics + 1):
        cols += [np.cos(2 * np.pi * k * hours / 24) / np.sqrt(k), np.sin(2 * np.pi * k * hours / 24) / np.sqrt(k)]
    return np.stack(cols, axis=1)


def curve_design(harmonics: int) -> np.ndarray:
    """[24, 1 + 2*harmonics]: a level column and the hour Fourier basis (a campaign's curve coefficients)."""
    return np.concatenate([np.ones((24, 1)), fourier_basis(harmonics)], axis=1)


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def flat_cell(cells: Cells) -> np.ndarray:
    """Each cell's position in a flattened [campaign, dow, hour] grid (the likelihoods read the grid there)."""
    return cells.campaign * 168 + cells.dow * 24 + cells.hour


def hour_sums(cells: Cells, rows: np.ndarray, *values: np.ndarray) -> list[np.ndarray]:
    """Each of ``values`` summed over the chosen cells into [campaign, hour]."""
    n_camp = len(cells.campaigns)
    flat = cells.campaign[rows] * 24 + cells.hour[rows]
    return [np.bincount(flat, weights=v[rows], minlength=n_camp * 24).reshape(n_camp, 24) for v in values]


def campaign_levels(name: str, center, scale: float, pooled_campaigns: bool):
    """Independent campaign levels ~ N(center, scale): each campaign's data is ample for the money parts,
    and a variance hyperparameter over a handful of campaigns only makes funnels."""
    import pymc as pm

    if not pooled_campaigns:
        return pm.Normal(f"{name}_level", center, scale)
    return pm.Normal(f"{name}_level", center, scale, dims="campaign")


def unseen(levels: np.ndarray, prior_sd: float, rng: np.random.Generator) -> np.ndarray:
    """A new campaign's value per draw from per-draw campaign values [draw, campaign] (or [draw]): normal
    around the fitted campaigns' mean with their spread (``prior_sd`` around the one campaign there is)."""
    n = levels.shape[0]
    if levels.ndim == 1 or levels.shape[1] < 2:
        return levels.reshape(n, -1)[:, 0] + prior_sd * rng.normal(size=n)
    return levels.mean(axis=1) + levels.std(axis=1, ddof=1) * rng.normal(size=n)


def gamma_loglik(name: str, units: np.ndarray, amounts: np.ndarray, group: np.ndarray, n_groups: int, shape,
                 log_mean) -> None:
    """Adds the log density of ``amounts[i] ~ Gamma(units[i] * shape, shape / exp(log_mean[group[i]]))`` as a
    potential, without constant terms (an amount is the sum of ``units[i]`` Gamma(shape) draws with that mean).

    Summed per group and over the distinct unit counts, with the data-only sum of ``units * log(amounts)``,
    instead of per cell: the same log density up to a constant, in O(groups + distinct counts) per gradient
    (at 200 campaigns 33,600 cells became about 5,000 terms).
    """
    import pymc as pm
    import pytensor.tensor as pt

    values, counts = np.unique(units, return_counts=True)
    per_group = lambda v: np.bincount(group, weights=v, minlength=n_groups).astype("float64")  # noqa: E731
    units_total = pm.Data(f"{name}_units_per_group", per_group(units))
    amount_total = pm.Data(f"{name}_amount_per_group", per_group(amounts))
    distinct = pm.Data(f"{name}_distinct_units", values.astype("float64"))
    distinct_n = pm.Data(f"{name}_distinct_units_count", counts.astype("float64"))
    units_log_amount = pm.Data(f"{name}_units_log_amount", float(np.sum(units * np.log(amounts))))
    pm.Potential(f"{name}_loglik", shape * pt.log(shape) * pt.sum(units_total)
                 - pt.sum(distinct_n * pt.gammaln(distinct * shape)) + shape * units_log_amount
                 - shape * pt.sum(units_total * log_mean + amount_total * pt.exp(-log_mean)))
