"""The market model: what a bid buys in a second-price auction, below both the allocation and the runtime
pacer (numpy and the standard library only).

Within an hour the highest competing bid is lognormal around the hour's median price, with log-sd
``sigma``; the logged (historical) bid won a share ``win_rate`` of the auctions.  These are the pacer's
*priors* about the market (``PRICE_SIGMA``, ``LOGGED_WIN_RATE``), settable per pacer and per plan; the
simulator's *truth* is its own (``sim.World.price_sigma``) and may differ.
"""

from __future__ import annotations

import functools

import numpy as np

PRICE_SIGMA = 0.6  # assumed log-sd of the market price within an hour
LOGGED_WIN_RATE = 2 / 3  # assumed share of auctions the logged (historical) bid won


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF in numpy (Abramowitz-Stegun 7.1.26 erf, |error| < 1.5e-7)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


@functools.lru_cache(maxsize=64)
def _z_logged(sigma: float, win_rate: float) -> float:
    """log(logged bid / median price), from the logged win rate (bisection on the normal CDF; cached, since
    every auction response needs it and the runtime re-plans inside the bid loop)."""
    lo, hi = -10.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if normal_cdf(np.array(mid / sigma)) < win_rate else (lo, mid)
    return (lo + hi) / 2


def auction_response(log_factor: np.ndarray, volume: np.ndarray, cpc: np.ndarray, cvr: np.ndarray,
                     sigma: float = PRICE_SIGMA, win_rate: float = LOGGED_WIN_RATE) -> tuple[np.ndarray, np.ndarray]:
    """Expected spend and conversions per hour when bidding ``exp(log_factor)`` x the logged bid.

    Lognormal market prices: at the logged bid (factor 1) the hour yields ``volume`` clicks at
    ``cpc`` each (the posterior); higher bids win more auctions at rising prices, lower bids fewer.
    """
    z0 = _z_logged(sigma, win_rate)
    base = normal_cdf(np.array((z0 - sigma ** 2) / sigma))
    spend = volume * cpc * normal_cdf((log_factor + z0 - sigma ** 2) / sigma) / base
    conversions = volume * cvr * normal_cdf((log_factor + z0) / sigma) / win_rate
    return spend, conversions


def threshold_plan(cvr: np.ndarray, cpc: np.ndarray, volume: np.ndarray, budget: float,
                   max_per_hour: np.ndarray | float = np.inf, open_hours: np.ndarray | None = None,
                   sigma: float = PRICE_SIGMA, win_rate: float = LOGGED_WIN_RATE) -> tuple[np.ndarray, np.ndarray]:
    """Bid factors proportional to the conversion rate (the second-price optimum under a budget) and the
    expected spend per hour they produce, with the multiplier set so the day's expected spend is the
    budget; hours that would exceed ``max_per_hour`` are held at it.  Inputs are [24] posterior means.
    Returns (log bid factor [24], expected spend [24])."""
    open_hours = np.ones(24, bool) if open_hours is None else open_hours
    cap = np.where(open_hours, np.broadcast_to(max_per_hour, (24,)), 0.0).astype(np.float64)
    rel = np.log(np.maximum(cvr, 1e-12) / np.maximum(cvr[open_hours].mean() if open_hours.any() else 1.0, 1e-12))
    held = ~open_hours
    log_k = np.full(24, -np.inf)
    for _ in range(25):
        free = ~held
        left = budget - np.minimum(cap, np.inf)[held & open_hours].sum()
        lo, hi = -12.0, 6.0
        for _ in range(50):
            mid = (lo + hi) / 2
            spend, _ = auction_response(np.where(free, rel + mid, -np.inf), volume, cpc, cvr, sigma, win_rate)
            lo, hi = (mid, hi) if spend[free].sum() < left else (lo, mid)
        log_k = np.where(free, rel + lo, log_k)
        spend, _ = auction_response(log_k, volume, cpc, cvr, sigma, win_rate)
        over = free & (spend > cap)
        if not over.any():
            break
        held |= over
        # a held hour bids what buys exactly its cap
        for h in np.flatnonzero(over):
            a, b = -12.0, log_k[h]
            for _ in range(50):
                m = (a + b) / 2
                s, _ = auction_response(np.array([m]), volume[h:h + 1], cpc[h:h + 1], cvr[h:h + 1], sigma, win_rate)
                a, b = (m, b) if s[0] < cap[h] else (a, m)
            log_k[h] = a
    spend, _ = auction_response(log_k, volume, cpc, cvr, sigma, win_rate)
    return log_k, spend


def threshold_scores(log_k: np.ndarray, cvr: np.ndarray, cpc: np.ndarray, volume: np.ndarray,
                     tolerance: float = 0.95, sigma: float = PRICE_SIGMA,
                     win_rate: float = LOGGED_WIN_RATE) -> dict:
    """Scores of bid factors ``log_k`` [24] under each draw ([draw, 24] arrays).

    The confidence compares, draw by draw, the plan's conversions with the best threshold policy
    for that draw at the same spend (so a plan is never penalised for spending less).
    """
    spend, conv = auction_response(log_k[None, :], volume, cpc, cvr, sigma, win_rate)
    target = spend.sum(axis=1)
    rel = np.log(np.maximum(cvr, 1e-12))
    lo, hi = np.full(len(cvr), -20.0), np.full(len(cvr), 10.0)
    for _ in range(50):
        mid = (lo + hi) / 2
        s, _ = auction_response(rel + mid[:, None], volume, cpc, cvr, sigma, win_rate)
        under = s.sum(axis=1) < target
        lo, hi = np.where(under, mid, lo), np.where(under, hi, mid)
    _, best = auction_response(rel + lo[:, None], volume, cpc, cvr, sigma, win_rate)
    plan_conv, best_conv = conv.sum(axis=1), best.sum(axis=1)
    return {"confidence": float(np.mean(plan_conv >= tolerance * best_conv)),
            "expected_conversions": plan_conv, "expected_spend": target}


def conversions_at_spend(spend: np.ndarray, cvr: np.ndarray, cpc: np.ndarray, volume: np.ndarray,
                         sigma: float = PRICE_SIGMA, win_rate: float = LOGGED_WIN_RATE) -> np.ndarray:
    """Expected conversions per draw [draw] of spending ``spend`` [24] per hour under the auction response
    (each hour's bid set to buy its amount; an amount beyond what the hour can sell buys all it has)."""
    lo = np.full(cvr.shape, -20.0)
    hi = np.full(cvr.shape, 10.0)
    for _ in range(50):
        mid = (lo + hi) / 2
        s, _ = auction_response(mid, volume, cpc, cvr, sigma, win_rate)
        under = s < spend[None, :]
        lo, hi = np.where(under, mid, lo), np.where(under, hi, mid)
    _, conv = auction_response(np.where(spend[None, :] > 0, lo, -np.inf), volume, cpc, cvr, sigma, win_rate)
    return conv.sum(axis=1)
