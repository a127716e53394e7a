"""The hierarchical PyMC model of hourly conversion rates, its fit and diagnostics.

Conversion rate of cell (campaign c, day-of-week d, local hour h)::

    logit p[c,d,h] = a[c] + f(h) + g[d] + f_c(h) + e[c,d,h]

- ``f``: global hour curve, a Fourier series with ``HOUR_HARMONICS`` harmonics
  (smooth, and cyclic: hour 23 sits next to hour 0); the basis scales harmonic
  k by 1/sqrt(k), so high frequencies need more evidence.
- ``g``: day-of-week, a ZeroSumNormal.
- ``f_c``: campaign-specific hour curves (``DEV_HARMONICS`` harmonics),
  partially pooled toward the global curve.  When every campaign has
  ``CENTRED_CURVE_CONVERSIONS`` conversions, each campaign's level and curve
  are sampled in whitened coordinates (``curve_whitening``) under a centred
  prior, so ``f`` is the campaigns' population mean; otherwise they are
  non-centred and zero-sum over campaigns, so ``f`` is their average (a free
  ``f`` plus free deviations is a ridge: R-hat 1.065 at 200 campaigns).
- ``e``: cell noise (overdispersion) with a learned scale, non-centred, zero-sum
  over campaigns when there are several (``g`` is then their average).
- ``a[c]``: campaign intercepts.  When a campaign has few conversions they
  are partially pooled around ``mu`` (centred for campaigns with
  ``CENTRED_CONVERSIONS`` or more, non-centred for the others).  When every campaign has
  ``DATA_RICH_CONVERSIONS`` or more ("data-rich"), each campaign's data pins
  its own intercept: intercepts are independent under a weak prior, since a
  group scale over well-measured campaigns only makes funnels and ridges
  (a plain hierarchical fit on this machine kind showed them at 200 campaigns, R-hat 1.02-1.03; we saw
  them at 3), and an unseen
  campaign is drawn from the fitted campaigns' spread.  Data-rich fits also
  give ``f`` and ``g`` fixed weakly informative scales (N(0, 1) per
  coefficient, ZeroSumNormal(0.5)) instead of learned ones, as do fits with
  ``CURVE_PINNED_CONVERSIONS`` or more in all (the data pins the global curves
  even if some campaign is sparse); other sparse fits learn them, so the hour
  curve can shrink to flat when the data shows no effect.

The likelihood is the binomial kernel ``k*eta - n*softplus(eta)`` on cell
sums (same posterior as Binomial, about 4x cheaper per gradient).

The parts below have ample data per campaign, so campaigns get independent
levels and curves under fixed weakly informative priors (no variance
hyperparameters: over a handful of campaigns those only make funnels); an
unseen campaign is drawn from the spread of the fitted ones.
Where spend is present: cost per click ``log cpc[c,h] = level[c] + q(h)``
with the cell's total spend ~ Gamma(clicks*kappa, kappa/cpc) (exact for
Gamma-distributed per-click costs), and hourly volume (clicks per window)
``log lam[c,d,h] = level[c] + r_c(h) + s[d]`` (each campaign its own daily cycle; ``s`` only once every
weekday has been seen twice) with the cell's total
clicks ~ NegBinomial(mean W*lam, shape W*phi) (exact for iid NB windows).
Where revenue is present: revenue per conversion ``log rpc[c] = level[c]``
with cell revenue ~ Gamma(conversions*tau, tau/rpc).  When every conversion of
each campaign is worth the same amount (lead-gen accounts report a fixed
value), the revenue carries no noise: that value is known, not sampled
(``known_value_per_conversion``; a Gamma's shape would run to infinity), and
the fit's settings say so.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .data import Cells
from .errors import FitError

HOUR_HARMONICS = 6
DEV_HARMONICS = 6  # equal to HOUR_HARMONICS: whitened campaign curves (see _whitened_curves) hold both
CPC_HARMONICS = 2
DATA_RICH_CONVERSIONS = 200  # per campaign: "data-rich" (independent intercepts, fixed hour/day scales)
CURVE_PINNED_CONVERSIONS = 5000  # in all: the global hour and day curves get fixed scales (see _conversion)
CENTRED_CURVE_CONVERSIONS = 100  # every campaign this many: campaign curves whitened and centred, else non-centred
CENTRED_CONVERSIONS = 20  # per campaign, in a pooled (sparse) fit: its level is centred, else non-centred
MODEL_VERSION = 11  # bump when the model changes: cached fits of other versions are not reused by the demo
RETRY_TARGET_ACCEPT = 0.99
LENGTHEN_MAX_SECONDS = 180  # a slowly mixing part is sampled twice as long only if it took at most this long
GATE = {"rhat_max": 1.01, "ess_bulk_min": 400, "ess_tail_min": 400, "divergences_max": 0}


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


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


PARTS = ("conversion", "cost", "volume", "revenue")


def model_parts(cells: Cells) -> list[str]:
    """The submodels the data supports: conversion and volume always, cost with spend, revenue with revenue."""
    return ["conversion", "volume"] + (["cost"] if cells.has_spend else []) + (["revenue"] if cells.has_revenue else [])


def build_model(cells: Cells, part: str = "conversion"):
    """The PyMC model of one part for ``cells`` (see the module doc).

    The parts share no parameters, so the joint posterior is the product of
    the parts' posteriors: each is sampled on its own, with its own step size
    and mass matrix, and the draws are merged.
    """
    import pymc as pm

    if part not in PARTS:
        raise ValueError(f"unknown model part {part!r}")
    coords = {"campaign": list(cells.campaigns), "dow": list(range(7)), "hour": list(range(24)),
              "fourier": list(range(2 * HOUR_HARMONICS)), "fourier_dev": list(range(2 * DEV_HARMONICS)),
              "fourier_cpc": list(range(2 * CPC_HARMONICS)), "curve_coef": list(range(1 + 2 * HOUR_HARMONICS))}
    with pm.Model(coords=coords) as model:
        model.data_rich = {"conversion": _conversion, "cost": _cost, "volume": _volume,
                                   "revenue": _revenue}[part](cells, len(cells.campaigns) > 1)
    return model


def _flat_cell(cells: Cells) -> np.ndarray:
    """Each cell's position in a flattened [campaign, dow, hour] grid (the likelihoods read the grid there)."""
    return cells.campaign * 168 + cells.dow * 24 + cells.hour


def _conversion(cells: Cells, pooled_campaigns: bool) -> bool:
    """Conversion-rate terms (inside an open model context); returns whether the fit is data-rich."""
    import pymc as pm
    import pytensor.tensor as pt

    n_camp = len(cells.campaigns)
    pooled = (cells.conversions.sum() + 0.5) / (cells.clicks.sum() + 1.0)
    basis = fourier_basis(HOUR_HARMONICS)
    basis_dev = fourier_basis(DEV_HARMONICS)
    per_campaign_conv = np.bincount(cells.campaign, weights=cells.conversions, minlength=n_camp)
    rich = bool(per_campaign_conv.min() >= DATA_RICH_CONVERSIONS)
    curve_pinned = rich or per_campaign_conv.sum() >= CURVE_PINNED_CONVERSIONS
    seen = cells.clicks > 0
    # the logit is built on the whole campaign x day x hour grid by broadcasting, then read at the observed
    # cells with one flat index: its gradient is a single scatter-add (about 1.4x faster than three indices)
    cell_idx = pm.Data("cell_idx", _flat_cell(cells)[seen])
    clicks = pm.Data("clicks", cells.clicks[seen].astype("float64"))
    conv = pm.Data("conversions", cells.conversions[seen].astype("float64"))
    center = pm.Data("conversion_prior_center", _logit(pooled))  # data, not a constant: see nuts.py

    if curve_pinned:  # the data pins these; a scale hyperparameter over a dozen values only adds a funnel
        hour_coef = pm.Normal("hour_coef", 0.0, 1.0, dims="fourier")
        dow = pm.ZeroSumNormal("dow_effect", 0.5, dims="dow")
    else:  # sparse: learned scales let the curve shrink to flat when the data shows no hour effect
        sigma_hour = pm.HalfNormal("sigma_hour", 0.5)
        sigma_dow = pm.HalfNormal("sigma_dow", 0.3)
        hour_coef = pm.Deterministic("hour_coef", pm.Normal("hour_z", 0.0, 1.0, dims="fourier") * sigma_hour,
                                     dims="fourier")
        dow = pm.Deterministic("dow_effect", pm.ZeroSumNormal("dow_z", 1.0, dims="dow") * sigma_dow, dims="dow")
    hour = pm.Deterministic("hour_effect", pt.dot(basis, hour_coef), dims="hour")
    sigma_cell = pm.HalfNormal("sigma_cell", 0.2)
    if pooled_campaigns:  # zero-sum over campaigns: the global day curve is the campaigns' average
        cell_z = pm.ZeroSumNormal("cell_z", 1.0, dims=("dow", "hour", "campaign")).transpose(2, 0, 1)
    else:
        cell_z = pm.Normal("cell_z", 0.0, 1.0, dims=("campaign", "dow", "hour"))
    cell = pm.Deterministic("cell_effect", sigma_cell * cell_z, dims=("campaign", "dow", "hour"))
    grid = dow[None, :, None] + cell  # [campaign, dow, hour]
    if pooled_campaigns and per_campaign_conv.min() >= CENTRED_CURVE_CONVERSIONS:
        # every campaign's data pins its level and curve: sampled in whitened coordinates (see _whitened_curves)
        grid = grid + _whitened_curves(cells, seen, center, hour_coef, rich)[:, None, :]
    elif pooled_campaigns:  # sparse: partial pooling of the levels toward the population
        mu = pm.Normal("mu", center, 2.0)
        sigma_campaign = pm.HalfNormal("sigma_campaign", 1.0)
        # mixed parameterisation: centred where the campaign's own data pins its level (a non-centred
        # offset would sit on a ridge with the scale), non-centred where it does not (a funnel otherwise)
        centred = per_campaign_conv >= CENTRED_CONVERSIONS
        level = pt.zeros(n_camp)
        if centred.any():
            level = pt.set_subtensor(level[np.flatnonzero(centred)], pm.Normal(
                "campaign_level_centred", mu, sigma_campaign, shape=int(centred.sum())))
        if not centred.all():
            level = pt.set_subtensor(level[np.flatnonzero(~centred)], mu + sigma_campaign * pm.Normal(
                "campaign_z", 0.0, 1.0, shape=int((~centred).sum())))
        level = pm.Deterministic("campaign_level", level, dims="campaign")
        sigma_dev = pm.HalfNormal("sigma_dev", 0.3)
        # non-centred (a funnel otherwise) and zero-sum over campaigns, as the cell effects: otherwise the
        # global curve trades off against the mean of the campaigns' curves, a ridge across every campaign
        dev_z = pm.ZeroSumNormal("dev_z", 1.0, dims=("fourier_dev", "campaign")).T
        dev_coef = pm.Deterministic("dev_coef", dev_z * sigma_dev, dims=("campaign", "fourier_dev"))
        grid = grid + level[:, None, None] + (hour[None, :] + pt.dot(dev_coef, basis_dev.T))[:, None, :]
    else:
        grid = grid + hour[None, None, :] + pm.Normal("mu", center, 2.0)
    eta = grid.reshape((-1,))[cell_idx]
    pm.Potential("conversion_loglik", pt.sum(conv * eta - clicks * pt.log1pexp(eta)))
    return rich


WHITENING_CELL_SD = 0.1  # a guess at the cell effects' scale, only for the whitening's approximate precision


def _curve_design() -> np.ndarray:
    """[24, 13]: a level column and the hour Fourier basis (a campaign's 13 curve coefficients)."""
    return np.concatenate([np.ones((24, 1)), fourier_basis(HOUR_HARMONICS)], axis=1)


def curve_whitening(successes: np.ndarray, trials: np.ndarray, center: float, family: str,
                    cell_variance) -> tuple[np.ndarray, np.ndarray]:
    """Per campaign, the approximate posterior mode and a whitening matrix of its 13 curve coefficients.

    The coefficients are the level and the Fourier coefficients of the campaign's hour curve.  Traffic is
    uneven over the day, so under the data a campaign's level and its Fourier coefficients are strongly
    correlated: one 13-dimensional ellipse per campaign, which a diagonal mass matrix cannot undo (at 200
    campaigns NUTS needed 63 leapfrog steps per draw).  Newton steps on the hour sums (``successes`` and
    ``trials`` [campaign, 24]: conversions and clicks for ``family="binomial"``, clicks and windows for
    ``"poisson"``) under the weak prior give the mode ``m``; in the precision ``H`` each hour's information
    ``I`` counts as ``I / (1 + I v)``, ``v = cell_variance(m)`` being the variance beyond the family's
    (cell effects, overdispersion); with ``H = R R'``
    (Cholesky), ``theta = m + R^-T u`` has about the identity as posterior covariance in ``u``.  Returns
    ``m`` [campaign, 13] and ``R^-T`` [campaign, 13, 13].  Data only: the map is linear with a constant
    Jacobian, so the posterior is exactly the model's; a poor guess only costs speed.
    """
    design = _curve_design()
    prior_mean = np.zeros(design.shape[1])
    prior_mean[0] = center
    prior_precision = np.diag([1 / 2.0**2] + [1.0] * (design.shape[1] - 1))
    theta = np.zeros((len(successes), design.shape[1]))
    rate = (successes.sum(1) + 0.5) / (trials.sum(1) + 1.0)
    theta[:, 0] = np.log(rate / (1 - rate)) if family == "binomial" else np.log(rate)

    def mean_and_information(theta):
        eta = theta @ design.T
        if family == "binomial":
            p = 1.0 / (1.0 + np.exp(-eta))
            return trials * p, trials * p * (1 - p)
        return trials * np.exp(eta), trials * np.exp(eta)

    for _ in range(10):  # Newton steps on the likelihood + prior (converges in a few)
        mean, information = mean_and_information(theta)
        grad = (successes - mean) @ design - (theta - prior_mean) @ prior_precision
        hess = np.einsum("ch,hi,hj->cij", information, design, design) + prior_precision
        theta = theta + np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
    _, information = mean_and_information(theta)
    weight = information / (1.0 + information * cell_variance(theta))
    hess = np.einsum("ch,hi,hj->cij", weight, design, design) + prior_precision
    return theta, np.linalg.inv(np.linalg.cholesky(hess)).transpose(0, 2, 1)


def _whitened_coefficients(prefix: str, successes: np.ndarray, trials: np.ndarray, center, family: str,
                           cell_variance):
    """Each campaign's 13 curve coefficients ``theta = m + R^-T u`` [campaign, 13] (``curve_whitening``): ``u``
    is the flat ``{prefix}_white``, ``m`` and ``R^-T`` are data.  The caller adds the prior as a potential."""
    import pymc as pm

    mode, whitening = curve_whitening(successes, trials, float(center.get_value()), family, cell_variance)
    white = pm.Flat(f"{prefix}_white", shape=mode.shape, dims=("campaign", "curve_coef"))
    return pm.Data(f"{prefix}_mode", mode) + (pm.Data(f"{prefix}_whitening", whitening) * white[:, None, :]).sum(axis=2)


def _hour_sums(cells: Cells, rows: np.ndarray, *values: np.ndarray) -> list[np.ndarray]:
    """Each of ``values`` summed over the chosen cells into [campaign, hour]."""
    n_camp = len(cells.campaigns)
    flat = cells.campaign[rows] * 24 + cells.hour[rows]
    return [np.bincount(flat, weights=v[rows], minlength=n_camp * 24).reshape(n_camp, 24) for v in values]


def _whitened_curves(cells: Cells, seen: np.ndarray, center, hour_coef, rich: bool):
    """Campaign hour curves on the logit scale [campaign, hour], sampled in whitened coordinates.

    Each campaign's level and hour-curve coefficients are ``theta = m + W u`` (``curve_whitening``) with
    ``u`` flat and the prior added as a potential.  The prior is centred: levels ~ N(center, 2) when
    data-rich (independent), else ~ N(mu, sigma_campaign); curve coefficients ~ N(hour_coef, sigma_dev), so
    the global curve is the campaigns' population mean (no ridge between it and their average).
    """
    import pymc as pm
    import pytensor.tensor as pt

    conversions, clicks = _hour_sums(cells, seen, cells.conversions, cells.clicks)
    cells_per_hour = np.maximum(_hour_sums(cells, seen, np.ones(len(seen)))[0], 1)
    # cell effects add variance: an hour's information is about its cells' 1/(1/(n p (1-p)) + sd^2) summed
    theta = _whitened_coefficients("curve", conversions, clicks, center, "binomial",
                                   lambda _: WHITENING_CELL_SD**2 / cells_per_hour)
    level = pm.Deterministic("campaign_level", theta[:, 0], dims="campaign")
    dev_coef = pm.Deterministic("dev_coef", theta[:, 1:] - hour_coef[None, :], dims=("campaign", "fourier_dev"))
    sigma_dev = pm.HalfNormal("sigma_dev", 0.3)
    if rich:  # each campaign's data pins its level: independent levels, no group scale to make a funnel
        level_prior = pm.logp(pm.Normal.dist(center, 2.0), level)
    else:
        mu = pm.Normal("mu", center, 2.0)
        level_prior = pm.logp(pm.Normal.dist(mu, pm.HalfNormal("sigma_campaign", 1.0)), level)
    pm.Potential("campaign_curve_prior", level_prior.sum() + pm.logp(pm.Normal.dist(0.0, sigma_dev), dev_coef).sum())
    return pt.dot(theta, _curve_design().T)


def _campaign_levels(name: str, center, scale: float, pooled_campaigns: bool):
    """Independent campaign levels ~ N(center, scale): each campaign's data is ample for these parts,
    and a variance hyperparameter over a handful of campaigns only makes funnels."""
    import pymc as pm

    if not pooled_campaigns:
        return pm.Normal(f"{name}_level", center, scale)
    return pm.Normal(f"{name}_level", center, scale, dims="campaign")


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


def _cost(cells: Cells, pooled_campaigns: bool) -> None:
    """Cost per click by campaign-hour (inside an open model context)."""
    import pymc as pm
    import pytensor.tensor as pt

    n_camp = len(cells.campaigns)
    paid = (cells.clicks > 0) & (cells.spend > 0)
    mean_cpc = cells.spend[paid].sum() / max(cells.clicks[paid].sum(), 1)
    level = _campaign_levels("cpc", pm.Data("cpc_prior_center", np.log(max(mean_cpc, 1e-6))), 1.0, pooled_campaigns)
    curve = pt.dot(fourier_basis(CPC_HARMONICS), pm.Normal("cpc_hour", 0.0, 0.3, dims="fourier_cpc"))
    log_cpc = (level[:, None] if pooled_campaigns else level) + curve[None, :]
    log_cpc = pm.Deterministic("log_cpc", pt.broadcast_to(log_cpc, (n_camp, 24)), dims=("campaign", "hour"))
    kappa = pm.LogNormal("cost_shape", np.log(5.0), 1.0)
    gamma_loglik("spend", cells.clicks[paid], cells.spend[paid], (cells.campaign * 24 + cells.hour)[paid],
                 n_camp * 24, kappa, log_cpc.reshape((-1,)))


def _volume(cells: Cells, pooled_campaigns: bool) -> None:
    """Hourly click volume by campaign x day-of-week x hour (inside an open model context).

    Each campaign's level and hour-curve coefficients are sampled in whitened coordinates
    (``curve_whitening``, as the conversion curves), their N(center, 2) and N(0, 1) priors added as a
    potential: uneven traffic over the day correlates them as it does the conversion curves.
    """
    import pymc as pm
    import pytensor.tensor as pt

    n_camp = len(cells.campaigns)
    cell_idx = pm.Data("vol_idx", _flat_cell(cells))
    vw = pm.Data("vol_windows", cells.windows.astype("float64"))
    vn = pm.Data("vol_clicks", cells.clicks)
    center = pm.Data("vol_prior_center", np.log(cells.clicks.sum() / cells.windows.sum() + 0.5))
    everything = np.ones(len(cells.clicks), dtype=bool)
    clicks, windows = _hour_sums(cells, everything, cells.clicks.astype(float), cells.windows.astype(float))
    # the negative binomial's extra variance: an hour's information is W lam / (1 + lam / phi), phi ~ 10
    theta = _whitened_coefficients("vol", clicks, windows, center, "poisson",
                                   lambda _: 1.0 / (10.0 * np.maximum(windows, 1)))
    pm.Deterministic("vol_level", theta[:, 0] if pooled_campaigns else theta[0, 0],
                     dims="campaign" if pooled_campaigns else None)
    coef = pm.Deterministic("vol_hour", theta[:, 1:], dims=("campaign", "fourier"))  # each campaign's own cycle
    pm.Potential("vol_curve_prior", pm.logp(pm.Normal.dist(center, 2.0), theta[:, 0]).sum()
                 + pm.logp(pm.Normal.dist(0.0, 1.0), coef).sum())
    log_vol = pt.dot(theta, _curve_design().T)[:, None, :]  # [campaign, 1, 24]
    if len(np.unique(cells.dow)) == 7 and cells.windows.max() >= 2:
        # with fewer than two of each weekday, day effects trade off against every campaign level (a ridge)
        log_vol = log_vol + pm.ZeroSumNormal("vol_dow", 0.3, dims="dow")[None, :, None]
    log_vol = pm.Deterministic("log_volume", pt.broadcast_to(log_vol, (n_camp, 7, 24)),
                               dims=("campaign", "dow", "hour"))
    phi = pm.LogNormal("volume_shape", np.log(10.0), 1.5)
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


def known_revenue_part(values: np.ndarray, campaigns: tuple[str, ...], chains: int, draws: int):
    """The revenue part's 'posterior' when its value is known: the same value in every draw."""
    import xarray as xr

    log_rpc = np.broadcast_to(np.log(values), (chains, draws, len(values))).copy()
    dims, coords = ("chain", "draw", "campaign"), {"chain": np.arange(chains), "draw": np.arange(draws),
                                                   "campaign": list(campaigns)}
    return xr.Dataset({"log_rpc": (dims, log_rpc), "rpc_level": (dims, log_rpc.copy())}, coords=coords)


def _revenue(cells: Cells, pooled_campaigns: bool) -> None:
    """Revenue per conversion by campaign (inside an open model context)."""
    import pymc as pm
    import pytensor.tensor as pt

    sold = (cells.conversions > 0) & (cells.revenue > 0)
    mean_rpc = cells.revenue[sold].sum() / max(cells.conversions[sold].sum(), 1)
    level = _campaign_levels("rpc", pm.Data("rpc_prior_center", np.log(max(mean_rpc, 1e-6))), 1.5, pooled_campaigns)
    log_rpc = pm.Deterministic("log_rpc", pt.broadcast_to(level, (len(cells.campaigns),)), dims="campaign")
    tau = pm.LogNormal("revenue_shape", np.log(2.0), 1.0)
    gamma_loglik("revenue", cells.conversions[sold], cells.revenue[sold], cells.campaign[sold], len(cells.campaigns),
                 tau, log_rpc)


@dataclass
class Diagnostics:
    """Convergence diagnostics of a fit and whether it passed the gate."""

    rhat_max: float
    ess_bulk_min: float
    ess_tail_min: float
    divergences: int
    draws: int
    chains: int
    worst: dict = field(default_factory=dict)  # variable names behind each worst figure

    @property
    def failures(self) -> list[str]:
        out = []
        if not self.rhat_max <= GATE["rhat_max"]:
            out.append(f"R-hat {self.rhat_max:.3f} > {GATE['rhat_max']} ({self.worst.get('rhat')})")
        if not self.ess_bulk_min >= GATE["ess_bulk_min"]:
            out.append(f"bulk ESS {self.ess_bulk_min:.0f} < {GATE['ess_bulk_min']} ({self.worst.get('ess_bulk')})")
        if not self.ess_tail_min >= GATE["ess_tail_min"]:
            out.append(f"tail ESS {self.ess_tail_min:.0f} < {GATE['ess_tail_min']} ({self.worst.get('ess_tail')})")
        if self.divergences > GATE["divergences_max"]:
            out.append(f"{self.divergences} divergent transitions")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {"passed": self.passed, "failures": self.failures, "rhat_max": self.rhat_max,
                "ess_bulk_min": self.ess_bulk_min, "ess_tail_min": self.ess_tail_min,
                "divergences": self.divergences, "draws": self.draws, "chains": self.chains,
                "worst": self.worst, "gate": GATE}

    @classmethod
    def combine(cls, parts: dict[str, "Diagnostics"]) -> "Diagnostics":
        """The worst figures over independently sampled parts (variable names prefixed by part)."""
        rhat = max(parts, key=lambda p: parts[p].rhat_max)
        bulk = min(parts, key=lambda p: parts[p].ess_bulk_min)
        tail = min(parts, key=lambda p: parts[p].ess_tail_min)
        first = next(iter(parts.values()))
        return cls(rhat_max=parts[rhat].rhat_max, ess_bulk_min=parts[bulk].ess_bulk_min,
                   ess_tail_min=parts[tail].ess_tail_min,
                   divergences=sum(d.divergences for d in parts.values()), draws=first.draws, chains=first.chains,
                   worst={"rhat": f"{rhat}:{parts[rhat].worst['rhat']}",
                          "ess_bulk": f"{bulk}:{parts[bulk].worst['ess_bulk']}",
                          "ess_tail": f"{tail}:{parts[tail].worst['ess_tail']}"})



def diagnose(posterior_tree) -> Diagnostics:
    """R-hat, bulk/tail ESS (convergence.py: arviz_stats' formulas, vectorised) and divergences of a
    sampled DataTree: the worst over every sampled quantity, with the variable it belongs to."""
    from .convergence import diagnostics

    post = posterior_tree["posterior"].to_dataset()
    names = [v for v in post.data_vars if not v.startswith(("log_", "hour_effect", "cell_effect"))]
    chains, draws = post.sizes["chain"], post.sizes["draw"]
    blocks = [post[v].values.reshape(chains, draws, -1) for v in names]
    owner = np.repeat(names, [b.shape[2] for b in blocks])
    rhat, bulk, tail = diagnostics(np.moveaxis(np.concatenate(blocks, axis=2), 2, 0))  # [quantity, chain, draw]

    def worst(values: np.ndarray, pick) -> tuple[float, str]:
        if np.isnan(values).all():  # too few draws to tell: fails the gate
            return float("nan"), "all"
        i = pick(values)
        return float(values[i]), str(owner[i])

    (rhat_max, rhat_var), (bulk_min, bulk_var), (tail_min, tail_var) = (
        worst(rhat, np.nanargmax), worst(bulk, np.nanargmin), worst(tail, np.nanargmin))
    stats = posterior_tree["sample_stats"].to_dataset()
    div = int(stats["diverging"].sum()) if "diverging" in stats else 0
    return Diagnostics(rhat_max=rhat_max, ess_bulk_min=bulk_min, ess_tail_min=tail_min, divergences=div,
                       draws=draws, chains=chains, worst={"rhat": rhat_var, "ess_bulk": bulk_var,
                                                          "ess_tail": tail_var})


@dataclass
class Fit:
    """A sampled posterior (all parts merged) with its diagnostics and settings."""

    tree: object  # xarray.DataTree: posterior, sample_stats (variables prefixed by part), observed_data
    diagnostics: Diagnostics
    settings: dict
    seconds: float


def cells_dataset(cells: Cells):
    """The fitted sufficient statistics as an xarray Dataset (stored with the posterior)."""
    import xarray as xr

    data = {name: ("cell", getattr(cells, name)) for name in
            ("campaign", "dow", "hour", "windows", "clicks", "conversions", "spend", "revenue")
            if getattr(cells, name) is not None}
    return xr.Dataset(data, coords={"campaign_name": list(cells.campaigns)},
                      attrs={"timezone": cells.timezone, "period_start": cells.period[0],
                             "period_end": cells.period[1], "n_windows": cells.n_windows})


def fit(cells: Cells, draws: int = 1000, tune: int = 1000, chains: int = 4, seed: int = 0,
        sampler: str = "auto", target_accept: float = 0.95, progress: bool = True) -> Fit:
    """Sample each part's posterior with NUTS, merge the draws and diagnose them."""
    import sys

    import xarray as xr

    if cells.clicks.sum() == 0:
        raise FitError("no clicks in the data: nothing to learn a conversion rate from")
    # nutpie by default: with its callbacks cached (nuts.py) it was 6.3x faster than PyMC's sampler for one
    # campaign and 1.9x at 20, warm (reports/benchmarks/fit_speed.md); "pymc" stays available
    sampler = "nutpie" if sampler == "auto" else sampler
    start = time.perf_counter()
    posteriors, stats, diags, data_rich, retried, lengthened = [], [], {}, False, [], []
    parts = model_parts(cells)
    known_rpc = known_value_per_conversion(cells)
    for i, part in enumerate(parts):
        if part == "revenue" and known_rpc is not None:  # no noise to fit: the value is known, not sampled
            if progress:
                print(f"[{i + 1}/{len(parts)}] revenue per conversion is a known value (every conversion of a "
                      "campaign is worth the same): not sampled", file=sys.stderr, flush=True)
            posteriors.append(known_revenue_part(known_rpc, cells.campaigns, chains, draws))
            diags[part] = Diagnostics(1.0, float(chains * draws), float(chains * draws), 0, draws, chains,
                                      worst={k: "known value" for k in ("rhat", "ess_bulk", "ess_tail")})
            continue
        if progress:
            print(f"[{i + 1}/{len(parts)}] sampling the {part} model ({sampler}, {chains} chains x "
                  f"{tune} tune + {draws} draws)", file=sys.stderr, flush=True)
        part_start = time.perf_counter()
        model = build_model(cells, part)
        data_rich = data_rich or bool(model.data_rich)
        sample = functools.partial(_sample, model, sampler, chains, progress, draws=draws, tune=tune, seed=seed + i,
                                   target_accept=target_accept)  # keywords can be overridden for a retry
        tree = sample()
        diags[part] = diagnose(tree)
        if diags[part].divergences and target_accept < RETRY_TARGET_ACCEPT:
            # Divergences mean the step size was too large somewhere (often the tail of a group scale
            # over few campaigns): sample this part again with smaller steps and longer tuning, and say so.
            if progress:
                print(f"    {diags[part].divergences} divergences in the {part} model: sampling it again with "
                      f"target_accept={RETRY_TARGET_ACCEPT} and {2 * tune} tuning steps", file=sys.stderr, flush=True)
            retried.append(part)
            tree = sample(target_accept=RETRY_TARGET_ACCEPT, tune=2 * tune, seed=seed + 100 + i)
            diags[part] = diagnose(tree)
        if (not diags[part].passed and not diags[part].divergences
                and time.perf_counter() - part_start <= LENGTHEN_MAX_SECONDS):
            # Slow mixing (R-hat or ESS short of the gate, no divergences): run twice as long and keep every
            # second draw, so the part still merges with the others and its effective sample size about doubles.
            if progress:
                print(f"    the {part} model mixed slowly ({'; '.join(diags[part].failures)}): sampling it again "
                      f"with {2 * tune} tuning steps and {2 * draws} draws, thinned by 2", file=sys.stderr, flush=True)
            lengthened.append(part)
            longer = sample(tune=2 * tune, draws=2 * draws, seed=seed + 200 + i,
                            target_accept=RETRY_TARGET_ACCEPT if part in retried else target_accept)
            tree = xr.DataTree.from_dict({
                group: longer[group].to_dataset().isel(draw=slice(1, None, 2)).assign_coords(draw=np.arange(draws))
                for group in ("posterior", "sample_stats")})
            diags[part] = diagnose(tree)
        posteriors.append(tree["posterior"].to_dataset())
        st = tree["sample_stats"].to_dataset()
        stats.append(st.rename({v: f"{part}__{v}" for v in st.data_vars}))
    merged = xr.DataTree.from_dict({
        "posterior": xr.merge(posteriors, combine_attrs="drop_conflicts", join="exact"),
        "sample_stats": xr.merge(stats, combine_attrs="drop_conflicts", join="exact"),
        "observed_data": cells_dataset(cells),
    })
    settings = {"model_version": MODEL_VERSION, "draws": draws, "tune": tune, "chains": chains, "seed": seed,
                "sampler": sampler,
                "target_accept": target_accept, "parts": parts, "data_rich": data_rich,
                "hour_harmonics": HOUR_HARMONICS, "dev_harmonics": DEV_HARMONICS,
                "retried_with_target_accept_0.99": retried, "lengthened_and_thinned": lengthened,
                "part_diagnostics": {p: d.as_dict() for p, d in diags.items()},
                "known_value_per_conversion": (None if known_rpc is None else
                                               dict(zip(cells.campaigns, map(float, known_rpc))))}
    return Fit(tree=merged, diagnostics=Diagnostics.combine(diags), settings=settings,
               seconds=time.perf_counter() - start)


def _sample(model, sampler: str, chains: int, progress: bool, draws: int, tune: int, seed: int,
            target_accept: float):
    """One NUTS run of a part: nutpie with its compiled callbacks cached on disk (nuts.py), or PyMC's sampler."""
    cores = min(chains, os.cpu_count() or 1)
    if sampler == "nutpie":
        from . import nuts

        return nuts.sample(model, draws=draws, tune=tune, chains=chains, seed=seed, target_accept=target_accept,
                           cores=cores, progress=progress)
    import pymc as pm

    return pm.sample(draws=draws, tune=tune, chains=chains, cores=min(cores, 2), random_seed=seed,
                     target_accept=target_accept, progressbar=progress, nuts_sampler="pymc",
                     compute_convergence_checks=False, model=model)


def _flat(post, name: str, idx: np.ndarray) -> np.ndarray:
    """Posterior variable as [draw, ...] (chains stacked), at the chosen draw indices."""
    arr = post[name].values
    return arr.reshape((-1,) + arr.shape[2:])[idx]


def runtime_arrays(tree, max_draws: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Float32 cubes the runtime needs, from a fitted DataTree (no PyMC needed).

    Each cube is [draw, campaign + 1, 7, 24]: index ``C`` (the last) is a new,
    unseen campaign drawn from the population level.  ``cvr`` and ``volume``
    (expected clicks per hour) always; ``cpc`` with spend; ``rpc`` (revenue
    per conversion, [draw, campaign + 1]) with revenue.
    """
    post = tree["posterior"].to_dataset()
    obs = tree["observed_data"].to_dataset()
    rng = np.random.default_rng(seed)
    total = post.sizes["chain"] * post.sizes["draw"]
    idx = np.unique(np.linspace(0, total - 1, min(max_draws, total)).round().astype(int))
    n = len(idx)
    n_camp = obs.sizes["campaign_name"]
    pooled = n_camp > 1
    half_normal = lambda scale: np.abs(rng.normal(0, scale, n))  # noqa: E731  prior draw when C == 1

    def g(name):
        return _flat(post, name, idx)

    def unseen(levels: np.ndarray, prior_sd: float) -> np.ndarray:
        """A new campaign's value per draw: normal around the fitted campaigns' mean with their spread
        (the prior's scale when there is a single campaign)."""
        if levels.ndim == 1 or levels.shape[1] < 2:
            flat = levels.reshape(n, -1)[:, 0]
            return flat + prior_sd * rng.normal(size=n)
        return levels.mean(axis=1) + levels.std(axis=1, ddof=1) * rng.normal(size=n)

    # conversion rate
    sig_dev = g("sigma_dev") if pooled else half_normal(0.3)
    level = g("campaign_level") if pooled else g("mu")[:, None]
    if "sigma_campaign" in post:  # partially pooled: the population the campaigns came from
        new_level = g("mu") + g("sigma_campaign") * rng.normal(size=n)
    else:
        new_level = unseen(level, 1.0)
    dev_coef = g("dev_coef") if pooled else np.zeros((n, 1, 2 * DEV_HARMONICS))
    level = np.concatenate([level, new_level[:, None]], axis=1)
    dev_coef = np.concatenate([dev_coef, sig_dev[:, None, None] * rng.normal(size=(n, 1, 2 * DEV_HARMONICS))], axis=1)
    dev = np.einsum("scf,hf->sch", dev_coef, fourier_basis(DEV_HARMONICS))
    new_cell = g("sigma_cell")[:, None, None, None] * rng.normal(size=(n, 1, 7, 24))
    cell = np.concatenate([g("cell_effect"), new_cell], axis=1)
    logit = (level[:, :, None, None] + dev[:, :, None, :] + g("hour_effect")[:, None, None, :]
             + g("dow_effect")[:, None, :, None] + cell)
    out = {"cvr": 1.0 / (1.0 + np.exp(-logit))}

    if "log_cpc" in post:
        curve = g("cpc_hour") @ fourier_basis(CPC_HARMONICS).T  # [draw, 24]
        new = unseen(g("cpc_level"), 1.0)
        log_cpc = np.concatenate([g("log_cpc"), (new[:, None] + curve)[:, None, :]], axis=1)
        out["cpc"] = np.broadcast_to(np.exp(log_cpc)[:, :, None, :], (n, n_camp + 1, 7, 24))
    if "log_volume" in post:
        coef = g("vol_hour")  # [draw, campaign, fourier]
        new_coef = coef.mean(axis=1) + (coef.std(axis=1, ddof=1) if n_camp > 1 else 0.3) * rng.normal(size=coef[:, 0].shape)
        dow = g("vol_dow")[:, :, None] if "vol_dow" in post else np.zeros((n, 7, 1))
        new_vol = (unseen(g("vol_level"), 1.0)[:, None, None] + (new_coef @ fourier_basis(HOUR_HARMONICS).T)[:, None, :]
                   + dow)
        out["volume"] = np.exp(np.concatenate([g("log_volume"), new_vol[:, None]], axis=1))
    if "log_rpc" in post:
        out["rpc"] = np.exp(np.concatenate([g("log_rpc"), unseen(g("rpc_level"), 1.0)[:, None]], axis=1))
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
