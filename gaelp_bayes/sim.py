"""A seeded ground-truth world of campaigns, for demos and honest evaluation.

Truth is drawn from a family that is *not* the model's own (bumps on a circle
for the hour curve, multiplicative day effects, per-campaign phase shifts and
lognormal cell noise), so a fit that recovers it is not just recovering its
own prior.  All rates are per click; volumes are clicks per hour at the logged
bid; prices are cost per click.

Parameters (``make_world``): ``campaigns``; base conversion rate per campaign
log-uniform in [1%, 8%]; hour curve: two von-Mises bumps (afternoon peak and an
evening peak) of random heights, shifted per campaign by up to +-2 h;
day-of-week multipliers lognormal(0, 0.15); cell noise lognormal(0, 0.1);
clicks per hour: a daily volume curve peaking mid-day, 20-200 at the peak,
negative-binomial (shape 20) around it; cpc lognormal around 0.3-1.5 with an
hourly curve (+-20%); per-click cost Gamma with shape 4; revenue per
conversion lognormal around 20-80.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

HOURS = np.arange(24)


@dataclass(frozen=True)
class World:
    """True per-cell parameters, indexed [campaign, day-of-week (0 = Monday), hour]."""

    campaigns: tuple[str, ...]
    cvr: np.ndarray  # conversions per click
    clicks: np.ndarray  # expected clicks per hour at the logged bid
    cpc: np.ndarray  # expected cost per click
    rpc: np.ndarray  # expected revenue per conversion
    click_shape: float = 20.0  # negative-binomial shape of hourly clicks
    cost_shape: float = 4.0  # Gamma shape of one click's cost


def _bump(center: float, width: float) -> np.ndarray:
    """A von-Mises-shaped bump over the 24 hours (cyclic, max 1)."""
    return np.exp((np.cos(2 * np.pi * (HOURS - center) / 24) - 1) / width)


def make_world(campaigns: int = 3, seed: int = 0, base_cvr: tuple[float, float] = (0.01, 0.08)) -> World:
    """Draw a world with ``campaigns`` campaigns (see the module doc for its parameters)."""
    rng = np.random.default_rng(seed)
    names = tuple(f"campaign_{i + 1:02d}" for i in range(campaigns))
    cvr = np.empty((campaigns, 7, 24))
    clicks = np.empty_like(cvr)
    cpc = np.empty_like(cvr)
    rpc = np.empty_like(cvr)
    dow_mult = rng.lognormal(0.0, 0.15, size=7)
    for c in range(campaigns):
        base = np.exp(rng.uniform(np.log(base_cvr[0]), np.log(base_cvr[1])))
        shift = rng.uniform(-2, 2)
        shape = (0.5 + rng.uniform(0.5, 1.5) * _bump(14 + shift, 0.15)
                 + rng.uniform(0.2, 1.0) * _bump(21 + shift, 0.05))
        shape /= shape.mean()
        noise = rng.lognormal(0.0, 0.1, size=(7, 24))
        cvr[c] = np.clip(base * shape[None, :] * dow_mult[:, None] * noise, 1e-5, 0.9)
        volume = 0.15 + _bump(13 + shift / 2, 0.3)
        clicks[c] = rng.uniform(20, 200) * volume[None, :] * rng.lognormal(0, 0.1, size=7)[:, None]
        price = rng.uniform(0.3, 1.5) * (1 + 0.2 * np.sin(2 * np.pi * (HOURS - 6) / 24))
        cpc[c] = price[None, :]
        rpc[c] = rng.uniform(20, 80)
    return World(campaigns=names, cvr=cvr, clicks=clicks, cpc=cpc, rpc=rpc)


def log_history(world: World, days: int, start: str = "2026-01-05", seed: int = 1,
                spend: bool = True, revenue: bool = True) -> pd.DataFrame:
    """Hourly performance windows drawn from ``world`` for ``days`` days from ``start`` (UTC)."""
    rng = np.random.default_rng(seed)
    stamps = pd.date_range(start, periods=days * 24, freq="h", tz="UTC")
    dow = np.asarray(stamps.dayofweek)
    hour = np.asarray(stamps.hour)
    frames = []
    for c, name in enumerate(world.campaigns):
        mean = world.clicks[c, dow, hour]
        clicks = rng.negative_binomial(world.click_shape, world.click_shape / (world.click_shape + mean))
        conversions = rng.binomial(clicks, world.cvr[c, dow, hour])
        frame = {"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"), "campaign": name,
                 "impressions": clicks * 20 + rng.poisson(50, size=clicks.size),
                 "clicks": clicks, "conversions": conversions}
        if spend:
            scale = world.cpc[c, dow, hour] / world.cost_shape
            cost = np.where(clicks > 0, rng.gamma(np.maximum(clicks, 1) * world.cost_shape, scale), 0.0)
            frame["spend"] = np.round(cost, 2)
        if revenue:
            value = world.rpc[c, dow, hour]
            rev = np.where(conversions > 0, rng.gamma(np.maximum(conversions, 1) * 2.0, value / 2.0), 0.0)
            frame["revenue"] = np.round(rev, 2)
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def demo_windows(days: int = 56, campaigns: int = 3, seed: int = 7) -> tuple[World, pd.DataFrame]:
    """The built-in demo data: 8 weeks of 3 campaigns from a seeded world."""
    world = make_world(campaigns=campaigns, seed=seed)
    return world, log_history(world, days=days, seed=seed + 1)
