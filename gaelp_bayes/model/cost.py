"""The cost part (where spend is present): cost per click by campaign and hour.

    log cpc[c,h] = level[c] + q(h),      a cell's spend ~ Gamma(clicks * kappa, kappa / cpc)

exact for Gamma-distributed per-click costs.  Each campaign's data is ample here, so levels are
independent under a fixed weak prior (no variance hyperparameter to make a funnel); a new campaign is
drawn from the fitted campaigns' spread.
"""

from __future__ import annotations

import numpy as np

from ..data import Cells
from .common import campaign_levels, fourier_basis, gamma_loglik, unseen
from .config import ModelConfig

DERIVED = ("log_cpc",)
KEY_PARAMETERS = ("cpc_level",)


def build(cells: Cells, pooled_campaigns: bool, cfg: ModelConfig) -> None:
    """Cost-per-click terms (inside an open model context)."""
    import pymc as pm
    import pytensor.tensor as pt

    n_camp = len(cells.campaigns)
    paid = (cells.clicks > 0) & (cells.spend > 0)
    mean_cpc = cells.spend[paid].sum() / max(cells.clicks[paid].sum(), 1)
    level = campaign_levels("cpc", pm.Data("cpc_prior_center", np.log(max(mean_cpc, 1e-6))), cfg.cpc_level_sd,
                            pooled_campaigns)
    curve = pt.dot(fourier_basis(cfg.cpc_harmonics), pm.Normal("cpc_hour", 0.0, cfg.cpc_hour_sd, dims="fourier_cpc"))
    log_cpc = (level[:, None] if pooled_campaigns else level) + curve[None, :]
    log_cpc = pm.Deterministic("log_cpc", pt.broadcast_to(log_cpc, (n_camp, 24)), dims=("campaign", "hour"))
    kappa = pm.LogNormal("cost_shape", np.log(cfg.cost_shape_median), cfg.cost_shape_log_sd)
    gamma_loglik("spend", cells.clicks[paid], cells.spend[paid], (cells.campaign * 24 + cells.hour)[paid],
                 n_camp * 24, kappa, log_cpc.reshape((-1,)))


def export(g, obs, n: int, rng: np.random.Generator, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """``cpc`` [draw, campaign + 1, 7, 24] (the same over weekdays)."""
    curve = g("cpc_hour") @ fourier_basis(cfg.cpc_harmonics).T  # [draw, 24]
    new = unseen(g("cpc_level"), cfg.unseen_level_sd, rng)
    log_cpc = np.concatenate([g("log_cpc"), (new[:, None] + curve)[:, None, :]], axis=1)
    return {"cpc": np.broadcast_to(np.exp(log_cpc)[:, :, None, :], (n, log_cpc.shape[1], 7, 24))}
