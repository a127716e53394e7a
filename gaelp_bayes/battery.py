"""Shapes of ordinary data for the robustness battery (``gaelp-bayes bench robustness``).

Each shape changes one thing about a plain base world (3 campaigns x 4 weeks, conversion rates of 1-5%
that vary by campaign, hour, weekday and cell, spend and revenue) and is drawn from a family that is not
the model's: hour curves are bumps on a circle, campaign deviations are bumps at random hours, day and
cell effects are Gaussian on the log-odds.  Every shape comes with held-out days drawn from the same
truth, and with that truth, so a fit can be checked for calibration (randomized PIT of held-out counts)
and accuracy (posterior-mean rates against raw per-cell rates).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from .sim import bump


@dataclass(frozen=True)
class Shape:
    """A data shape; every scale is on the log-odds of the conversion rate unless named otherwise."""

    campaigns: int = 3
    days: int = 28
    holdout_days: int = 7
    base_cvr: tuple[float, float] = (0.01, 0.05)  # per campaign, log-uniform in this range
    hour_sd: float = 0.5  # standard deviation over the day of the global hour curve
    campaign_hour_sd: float = 0.3  # standard deviation of each campaign's own deviation from it
    dow_sd: float = 0.15  # day-of-week effects
    cell_sd: float = 0.1  # campaign x weekday x hour effects (persistent from week to week)
    clicks_per_day: tuple[float, float] = (300.0, 3000.0)  # campaigns spaced evenly (log scale) over this range
    spend: bool = True
    revenue: str = "gamma"  # "gamma" (noisy value per conversion), "fixed" (60.00 each), "few" (a handful), "none"
    late_start: int = 0  # this many campaigns start halfway through the history
    missing_hours: float = 0.0  # share of hourly windows missing from the log


SHAPES: dict[str, Shape] = {
    "base": Shape(),
    "no_cell_noise": Shape(cell_sd=0.0),
    "no_campaign_hours": Shape(campaign_hour_sd=0.0),
    "no_day_of_week": Shape(dow_sd=0.0),
    "flat_hours": Shape(hour_sd=0.0),
    "nothing_but_levels": Shape(cell_sd=0.0, campaign_hour_sd=0.0, dow_sd=0.0, hour_sd=0.0),
    "large_cell_noise": Shape(cell_sd=0.6),
    "fixed_value": Shape(revenue="fixed"),
    "revenue_few": Shape(revenue="few"),
    "no_spend_no_revenue": Shape(spend=False, revenue="none"),
    "campaigns_1": Shape(campaigns=1),
    "campaigns_2_no_cell_noise": Shape(campaigns=2, days=21, cell_sd=0.0),
    "campaigns_20": Shape(campaigns=20),
    "campaigns_200": Shape(campaigns=200, clicks_per_day=(50.0, 5000.0)),
    "very_sparse": Shape(base_cvr=(0.0004, 0.0006), clicks_per_day=(2000.0, 3000.0)),
    "young_account": Shape(days=6, holdout_days=2, base_cvr=(0.008, 0.012)),
    "very_dense": Shape(base_cvr=(0.35, 0.45)),
    "days_2": Shape(days=2, holdout_days=1),
    "days_365": Shape(days=365),
    "gaps": Shape(late_start=1, missing_hours=0.2),
    "mixed_sizes": Shape(campaigns=4, clicks_per_day=(1.0, 100_000.0)),
}


def _unit(curve: np.ndarray) -> np.ndarray:
    """The curve centred to mean 0 and scaled to standard deviation 1 over its last axis."""
    centred = curve - curve.mean(axis=-1, keepdims=True)
    return centred / centred.std(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Drawn:
    """One shape's data: training and held-out windows, and the true rates [campaign, dow, hour]."""

    shape: Shape
    train: pd.DataFrame
    holdout: pd.DataFrame
    cvr: np.ndarray
    campaigns: tuple[str, ...]


def draw(shape: Shape, seed: int, start: str = "2026-01-05") -> Drawn:
    """Draw the true rates of ``shape`` and its windows (training days, then held-out days)."""
    rng = np.random.default_rng(seed)
    n = shape.campaigns
    names = tuple(f"c{c:03d}" for c in range(n))
    base = np.exp(rng.uniform(*np.log(shape.base_cvr), n))
    hour = shape.hour_sd * _unit(bump(14, 0.15) + 0.6 * bump(21, 0.05))
    own = _unit(rng.normal(size=(n, 2))[:, :, None] * np.stack([bump(c, 0.1) for c in rng.uniform(0, 24, 2)]))
    own = shape.campaign_hour_sd * own.sum(axis=1) / np.sqrt(2)
    dow = shape.dow_sd * rng.normal(size=7)
    cell = shape.cell_sd * rng.normal(size=(n, 7, 24))
    logit = (np.log(base / (1 - base))[:, None, None] + hour[None, None, :] + own[:, None, :] + dow[None, :, None]
             + cell)
    cvr = 1.0 / (1.0 + np.exp(-logit))
    volume = 0.15 + bump(13, 0.3)
    per_day = np.geomspace(*shape.clicks_per_day, n) if n > 1 else np.array([np.sqrt(np.prod(shape.clicks_per_day))])
    mean_clicks = per_day[:, None] * volume[None, :] / volume.sum()  # [campaign, hour]
    cpc = np.exp(rng.uniform(np.log(0.3), np.log(1.5), n))
    value = np.exp(rng.uniform(np.log(20), np.log(80), n))

    days = shape.days + shape.holdout_days
    stamps = pd.date_range(start, periods=days * 24, freq="h", tz="UTC")
    d, h = np.asarray(stamps.dayofweek), np.asarray(stamps.hour)
    frames = []
    for c, name in enumerate(names):
        mean = mean_clicks[c, h]
        clicks = rng.negative_binomial(20.0, 20.0 / (20.0 + mean))
        conversions = rng.binomial(clicks, cvr[c, d, h])
        frame = pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"), "campaign": name,
                              "clicks": clicks, "conversions": conversions})
        if shape.spend:
            frame["spend"] = np.round(np.where(clicks > 0, rng.gamma(np.maximum(clicks, 1) * 4.0, cpc[c] / 4.0), 0.0), 2)
        if shape.revenue == "gamma":
            frame["revenue"] = np.round(np.where(conversions > 0, rng.gamma(np.maximum(conversions, 1) * 2.0,
                                                                            value[c] / 2.0), 0.0), 2)
        elif shape.revenue == "fixed":
            frame["revenue"] = 60.0 * conversions
        elif shape.revenue == "few":  # revenue reported for a handful of conversions only
            reported = np.zeros(len(frame))
            sold = np.flatnonzero(conversions > 0)
            for i in rng.choice(sold, size=min(5, len(sold)), replace=False):
                reported[i] = round(float(rng.gamma(2.0 * conversions[i], value[c] / 2.0)), 2)
            frame["revenue"] = reported
        if c < shape.late_start:
            frame = frame[stamps >= stamps[0] + pd.Timedelta(days=shape.days // 2)]
        frames.append(frame)
    windows = pd.concat(frames, ignore_index=True)
    if shape.missing_hours:
        windows = windows[rng.uniform(size=len(windows)) >= shape.missing_hours]
    cut = (stamps[0] + pd.Timedelta(days=shape.days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    train, holdout = windows[windows["timestamp"] < cut], windows[windows["timestamp"] >= cut]
    return Drawn(shape, train.reset_index(drop=True), holdout.reset_index(drop=True), cvr, names)


def small(shape: Shape) -> Shape:
    """The shape at test-suite size: at most 3 campaigns and 3 weeks (shorter histories kept as they are)."""
    return replace(shape, campaigns=min(shape.campaigns, 3), days=min(shape.days, 21))


def evaluate(drawn: Drawn, seed: int = 0, **fit_options) -> dict:
    """Fit ``drawn``'s training windows with the default settings (or ``fit_options``) and check the fit.

    Returns the gate's verdict on the first sampling of every part (what failed, where a part was sampled
    again) and after the automatic retries, the fit's seconds, the share of held-out windows whose
    randomized PIT lies in [0.05, 0.95] (0.90 when calibrated), and the click-weighted RMSE against the
    true rates of the posterior-mean rates and of the raw per-cell rates (the baseline), over the cells
    the fit saw.
    """
    import tempfile
    from pathlib import Path

    from . import cache, data
    from .pipeline import fit_cached
    from .predict import predict

    cells = data.aggregate(data.load_windows(drawn.train))
    with tempfile.TemporaryDirectory() as tmp:
        fitted = fit_cached(cells, Path(tmp) / "m", seed=seed, progress=False, **fit_options).fit
        _, arrays = cache.read_runtime(Path(tmp) / "m")
        held = drawn.holdout[drawn.holdout["clicks"] > 0].reset_index(drop=True)
        pit = predict(str(Path(tmp) / "m"), held, force=True)[0]["pred_pit"].to_numpy() if len(held) else np.array([])
    truth = drawn.cvr[[drawn.campaigns.index(c) for c in cells.campaigns]][cells.campaign, cells.dow, cells.hour]
    posterior_mean = arrays["cvr"][:, cells.campaign, cells.dow, cells.hour].mean(axis=0)
    raw = cells.conversions / np.maximum(cells.clicks, 1)
    weight = cells.clicks / cells.clicks.sum()
    verdicts, redone = fitted.settings["part_diagnostics"], dict(fitted.settings["retried"])
    fallback = sorted({name for v in verdicts.values() for name in v.get("fallback", [])})
    if fallback:  # the Laplace engine refitted these campaigns with NUTS
        redone["NUTS fallback"] = ", ".join(fallback)
    return {"first_pass": all(v["passed"] for v in verdicts.values()) and not redone,
            "passed": fitted.diagnostics.passed, "failures": fitted.diagnostics.failures,
            "redone": sorted(redone), "why_redone": redone, "seconds": fitted.seconds,
            "held_out_windows": len(pit),
            "pit_coverage": float(((pit >= 0.05) & (pit <= 0.95)).mean()) if len(pit) else float("nan"),
            "rmse_posterior": float(np.sqrt(np.sum(weight * (posterior_mean - truth) ** 2))),
            "rmse_raw": float(np.sqrt(np.sum(weight * (raw - truth) ** 2))),
            "zero_cells": float((cells.conversions == 0).mean())}
