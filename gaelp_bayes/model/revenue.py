"""The revenue part (where revenue is present): revenue per conversion by campaign.

    log rpc[c] = level[c],      a cell's revenue ~ Gamma(conversions * tau, tau / rpc)

When every conversion of each campaign is worth the same amount (lead-gen accounts report a fixed value),
the revenue carries no noise: that value is known, not sampled (``known_value_per_conversion``; a Gamma's
shape would run to infinity), and the fit's settings say so.
"""

from __future__ import annotations

import numpy as np

from ..data import Cells
from .common import campaign_levels, gamma_loglik, unseen
from .config import ModelConfig

DERIVED = ("log_rpc",)
KEY_PARAMETERS = ()


def build(cells: Cells, pooled_campaigns: bool, cfg: ModelConfig) -> None:
    """Revenue-per-conversion terms (inside an open model context)."""
    import pymc as pm
    import pytensor.tensor as pt

    sold = (cells.conversions > 0) & (cells.revenue > 0)
    mean_rpc = cells.revenue[sold].sum() / max(cells.conversions[sold].sum(), 1)
    level = campaign_levels("rpc", pm.Data("rpc_prior_center", np.log(max(mean_rpc, 1e-6))), cfg.rpc_level_sd,
                            pooled_campaigns)
    log_rpc = pm.Deterministic("log_rpc", pt.broadcast_to(level, (len(cells.campaigns),)), dims="campaign")
    tau = pm.LogNormal("revenue_shape", np.log(cfg.revenue_shape_median), cfg.revenue_shape_log_sd)
    gamma_loglik("revenue", cells.conversions[sold], cells.revenue[sold], cells.campaign[sold], len(cells.campaigns),
                 tau, log_rpc)


def known_value_per_conversion(cells: Cells) -> np.ndarray | None:
    """Revenue per conversion by campaign when every conversion of each campaign is worth the same amount
    (within 1e-9, relative), else None.  A campaign without conversions gets the conversion-weighted mean
    of the others' values.  Revenue without a conversion means the value is not per conversion: None."""
    if not cells.has_revenue or cells.conversions.sum() == 0:
        return None
    conv, rev = cells.conversions, cells.revenue
    if (rev[conv == 0] > 0).any():
        return None
    values, weights = np.full(len(cells.campaigns), np.nan), np.zeros(len(cells.campaigns))
    for c in range(len(cells.campaigns)):
        sold = (cells.campaign == c) & (conv > 0)
        if sold.any():
            ratio = rev[sold] / conv[sold]
            if not (ratio.min() > 0 and ratio.max() - ratio.min() <= 1e-9 * ratio.max()):
                return None
            values[c], weights[c] = float(np.mean(ratio)), float(conv[sold].sum())
    known = weights > 0
    values[~known] = np.average(values[known], weights=weights[known])
    return values


def known_posterior(values: np.ndarray, campaigns: tuple[str, ...], chains: int, draws: int):
    """The revenue part's 'posterior' when its value is known: the same value in every draw."""
    import xarray as xr

    log_rpc = np.broadcast_to(np.log(values), (chains, draws, len(values))).copy()
    dims, coords = ("chain", "draw", "campaign"), {"chain": np.arange(chains), "draw": np.arange(draws),
                                                   "campaign": list(campaigns)}
    return xr.Dataset({"log_rpc": (dims, log_rpc), "rpc_level": (dims, log_rpc.copy())}, coords=coords)


def export(g, obs, n: int, rng: np.random.Generator, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """``rpc`` [draw, campaign + 1]."""
    return {"rpc": np.exp(np.concatenate([g("log_rpc"), unseen(g("rpc_level"), cfg.unseen_level_sd, rng)[:, None]],
                                         axis=1))}
