"""The volume part: clicks per hourly window by campaign x day-of-week x hour.

    log lam[c,d,h] = level[c] + r_c(h) + s[d],      a cell's clicks ~ NegBinomial(mean W lam, shape W phi)

exact for iid negative-binomial windows (``W`` windows in the cell).  Each campaign has its own daily
cycle ``r_c``; its level and cycle coefficients are sampled whitened (``curves.whitened_coefficients``)
under fixed weak priors.  ``s`` only once every weekday has been seen twice: with fewer, day effects
trade off against every campaign level (a ridge).
"""

from __future__ import annotations

import numpy as np

from ..data import Cells
from .common import curve_design, flat_cell, fourier_basis, hour_sums, unseen
from .config import ModelConfig
from .curves import whitened_coefficients

DERIVED = ()
KEY_PARAMETERS = ()


def build(cells: Cells, pooled_campaigns: bool, cfg: ModelConfig) -> None:
    """Hourly click volume terms (inside an open model context)."""
    import pymc as pm
    import pytensor.tensor as pt

    n_camp = len(cells.campaigns)
    cell_idx = pm.Data("vol_idx", flat_cell(cells))
    vw = pm.Data("vol_windows", cells.windows.astype("float64"))
    vn = pm.Data("vol_clicks", cells.clicks)
    center = pm.Data("vol_prior_center", np.log(cells.clicks.sum() / cells.windows.sum() + 0.5))
    everything = np.ones(len(cells.clicks), dtype=bool)
    clicks, windows = hour_sums(cells, everything, cells.clicks.astype(float), cells.windows.astype(float))
    # the negative binomial's extra variance: an hour's information is W lam / (1 + lam / phi), phi ~ 10
    theta = whitened_coefficients("vol", clicks, windows, center, "poisson",
                                  lambda _: 1.0 / (10.0 * np.maximum(windows, 1)), cfg.hour_harmonics)
    pm.Deterministic("vol_level", theta[:, 0] if pooled_campaigns else theta[0, 0],
                     dims="campaign" if pooled_campaigns else None)
    coef = pm.Deterministic("vol_hour", theta[:, 1:], dims=("campaign", "fourier"))  # each campaign's own cycle
    pm.Potential("vol_curve_prior", pm.logp(pm.Normal.dist(center, cfg.volume_level_sd), theta[:, 0]).sum()
                 + pm.logp(pm.Normal.dist(0.0, cfg.volume_coef_sd), coef).sum())
    log_vol = pt.dot(theta, curve_design(cfg.hour_harmonics).T)[:, None, :]  # [campaign, 1, 24]
    if len(np.unique(cells.dow)) == 7 and cells.windows.max() >= 2:
        log_vol = log_vol + pm.ZeroSumNormal("vol_dow", cfg.volume_dow_sd, dims="dow")[None, :, None]
    log_vol = pt.broadcast_to(log_vol, (n_camp, 7, 24))  # not stored: ``log_volume`` recomputes it
    phi = pm.LogNormal("volume_shape", np.log(cfg.volume_shape_median), cfg.volume_shape_log_sd)
    # NegativeBinomial(mean W*lam, shape W*phi) log density without its constant terms (lgamma(k+1), k*log W).
    # Its log-gamma terms depend on a cell's (clicks, windows) and windows alone, which repeat across cells:
    # they are summed over the distinct values (5x cheaper gradient at 200 campaigns than per cell)
    pairs, pair_counts = np.unique(np.stack([cells.clicks, cells.windows]), axis=1, return_counts=True)
    windows_seen, window_counts = np.unique(cells.windows, return_counts=True)
    pair_clicks, pair_windows, pair_n = (pm.Data(f"vol_pair_{name}", v.astype("float64")) for name, v in
                                         (("clicks", pairs[0]), ("windows", pairs[1]), ("count", pair_counts)))
    distinct_w, distinct_w_n = pm.Data("vol_distinct_windows", windows_seen.astype("float64")), pm.Data(
        "vol_distinct_windows_count", window_counts.astype("float64"))
    eta, shape = log_vol.reshape((-1,))[cell_idx], vw * phi
    log_gammas = (pt.sum(pair_n * pt.gammaln(pair_clicks + pair_windows * phi))
                  - pt.sum(distinct_w_n * (pt.gammaln(distinct_w * phi) - distinct_w * phi * pt.log(distinct_w * phi))))
    pm.Potential("clicks_loglik", log_gammas + pt.sum(vn * eta - (shape + vn) * pt.log(shape + vw * pt.exp(eta))))


def log_volume(level: np.ndarray, hour_coef: np.ndarray, dow: np.ndarray | None, harmonics: int) -> np.ndarray:
    """The model's log clicks per window [..., campaign, 7, 24] from its parameters: ``level`` [...,
    campaign], ``hour_coef`` [..., campaign, fourier], ``dow`` [..., 7] or None.  Computed where needed,
    not stored with the posterior (168 numbers per campaign and draw: 11 GB at 2,000 campaigns)."""
    curve = level[..., None] + hour_coef @ fourier_basis(harmonics).T  # [..., campaign, 24]
    out = curve[..., :, None, :] + (0.0 if dow is None else dow[..., None, :, None])
    return np.broadcast_to(out, out.shape[:-2] + (7, 24))


def export(g, obs, n: int, rng: np.random.Generator, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """``volume`` (expected clicks per hour) [draw, campaign + 1, 7, 24]."""
    coef = g("vol_hour")  # [draw, campaign, fourier]
    seen = log_volume(g("vol_level").reshape(n, -1), coef, g("vol_dow"), cfg.hour_harmonics)
    spread = coef.std(axis=1, ddof=1) if coef.shape[1] > 1 else cfg.unseen_curve_sd
    new_coef = coef.mean(axis=1) + spread * rng.normal(size=coef[:, 0].shape)
    new_level = unseen(g("vol_level"), cfg.unseen_level_sd, rng)  # a new campaign, from the same formula
    new = log_volume(new_level[:, None], new_coef[:, None, :], g("vol_dow"), cfg.hour_harmonics)
    return {"volume": np.exp(np.concatenate([seen, new], axis=1))}
