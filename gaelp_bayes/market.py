"""The market model: what a bid buys in a second-price auction, below both the allocation and the runtime
pacer (numpy and the standard library only).

Within an hour the highest competing bid is lognormal around the hour's median price, with log-sd
``sigma``; the logged (historical) bid won a share ``win_rate`` of the auctions.  These are the pacer's
*priors* about the market (``PRICE_SIGMA``, ``LOGGED_WIN_RATE``), settable per pacer and per plan; the
simulator's *truth* is its own (``sim.World.price_sigma``) and may differ.
"""

from __future__ import annotations

import bisect
import functools
import math

import numpy as np

MAX_AMOUNT = 1e12  # the largest budget or amount taken (as a data row's): cents past it leave float's exact range


def hour_cap(budget: float, max_share: float = 0.2, max_per_hour: float | None = None) -> float:
    """The most one hour may take of a day's budget: ``max_share`` of it, and at most ``max_per_hour``."""
    cap = max_share * budget
    return min(cap, max_per_hour) if max_per_hour else cap


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
                     sigma: float = PRICE_SIGMA, win_rate: float = LOGGED_WIN_RATE,
                     logged_win_rate: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Expected spend and conversions per hour when bidding ``exp(log_factor)`` x the logged bid.

    Lognormal market prices: at the logged bid (factor 1) the history yielded ``volume`` clicks at ``cpc``
    each (the posterior), winning ``logged_win_rate`` of the auctions (None: ``win_rate``); in a market
    (spread ``sigma``) where the logged bid wins ``win_rate`` of them, the same auctions are dearer or
    cheaper by the shift of the price level between the two; higher bids win more auctions at rising prices,
    lower bids fewer.
    """
    z0 = _z_logged(sigma, win_rate)  # log(logged bid / median price) in this market
    logged = win_rate if logged_win_rate is None else logged_win_rate
    z_logged = z0 if logged_win_rate is None else _z_logged(sigma, logged)  # ... and in the history's
    base = normal_cdf(np.array((z_logged - sigma ** 2) / sigma)) * math.exp(z0 - z_logged)
    spend = volume * cpc * normal_cdf((log_factor + z0 - sigma ** 2) / sigma) / base
    conversions = volume * cvr * normal_cdf((log_factor + z0) / sigma) / logged
    return spend, conversions


def logged_bid(cpc: np.ndarray, sigma: float, win_rate: float) -> np.ndarray:
    """The logged bid in money implied by the mean price paid at it (``cpc``) in a market of spread ``sigma``
    where it wins ``win_rate`` of the auctions: the median price times ``exp(z0)``."""
    z0 = _z_logged(sigma, win_rate)
    paid_over_median = math.exp(sigma ** 2 / 2) * float(normal_cdf(np.array((z0 - sigma ** 2) / sigma))) / win_rate
    return cpc / paid_over_median * math.exp(z0)


def threshold_plan(cvr: np.ndarray, cpc: np.ndarray, volume: np.ndarray, budget: float,
                   max_per_hour: np.ndarray | float = np.inf, open_hours: np.ndarray | None = None,
                   sigma: float = PRICE_SIGMA, win_rate: float = LOGGED_WIN_RATE,
                   logged_win_rate: float | None = None) -> tuple[np.ndarray, np.ndarray]:
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
            spend, _ = auction_response(np.where(free, rel + mid, -np.inf), volume, cpc, cvr, sigma, win_rate,
                                        logged_win_rate)
            lo, hi = (mid, hi) if spend[free].sum() < left else (lo, mid)
        log_k = np.where(free, rel + lo, log_k)
        spend, _ = auction_response(log_k, volume, cpc, cvr, sigma, win_rate, logged_win_rate)
        over = free & (spend > cap)
        if not over.any():
            break
        held |= over
        # a held hour bids what buys exactly its cap
        for h in np.flatnonzero(over):
            a, b = -12.0, log_k[h]
            for _ in range(50):
                m = (a + b) / 2
                s, _ = auction_response(np.array([m]), volume[h:h + 1], cpc[h:h + 1], cvr[h:h + 1], sigma, win_rate,
                                      logged_win_rate)
                a, b = (m, b) if s[0] < cap[h] else (a, m)
            log_k[h] = a
    spend, _ = auction_response(log_k, volume, cpc, cvr, sigma, win_rate, logged_win_rate)
    return log_k, spend


def threshold_scores(log_k: np.ndarray, cvr: np.ndarray, cpc: np.ndarray, volume: np.ndarray,
                     tolerance: float = 0.95, sigma: float = PRICE_SIGMA,
                     win_rate: float = LOGGED_WIN_RATE, logged_win_rate: float | None = None) -> dict:
    """Scores of bid factors ``log_k`` [24] under each draw ([draw, 24] arrays).

    The confidence compares, draw by draw, the plan's conversions with the best threshold policy
    for that draw at the same spend (so a plan is never penalised for spending less).
    """
    spend, conv = auction_response(log_k[None, :], volume, cpc, cvr, sigma, win_rate, logged_win_rate)
    target = spend.sum(axis=1)
    rel = np.log(np.maximum(cvr, 1e-12))
    lo, hi = np.full(len(cvr), -20.0), np.full(len(cvr), 10.0)
    for _ in range(50):
        mid = (lo + hi) / 2
        s, _ = auction_response(rel + mid[:, None], volume, cpc, cvr, sigma, win_rate, logged_win_rate)
        under = s.sum(axis=1) < target
        lo, hi = np.where(under, mid, lo), np.where(under, hi, mid)
    _, best = auction_response(rel + lo[:, None], volume, cpc, cvr, sigma, win_rate, logged_win_rate)
    plan_conv, best_conv = conv.sum(axis=1), best.sum(axis=1)
    return {"confidence": float(np.mean(plan_conv >= tolerance * best_conv)),
            "expected_conversions": plan_conv, "expected_spend": target}


def conversions_at_spend(spend: np.ndarray, cvr: np.ndarray, cpc: np.ndarray, volume: np.ndarray,
                         sigma: float = PRICE_SIGMA, win_rate: float = LOGGED_WIN_RATE,
                         logged_win_rate: float | None = None) -> np.ndarray:
    """Expected conversions per draw [draw] of spending ``spend`` [24] per hour under the auction response
    (each hour's bid set to buy its amount; an amount beyond what the hour can sell buys all it has)."""
    lo = np.full(cvr.shape, -20.0)
    hi = np.full(cvr.shape, 10.0)
    for _ in range(50):
        mid = (lo + hi) / 2
        s, _ = auction_response(mid, volume, cpc, cvr, sigma, win_rate, logged_win_rate)
        under = s < spend[None, :]
        lo, hi = np.where(under, mid, lo), np.where(under, hi, mid)
    _, conv = auction_response(np.where(spend[None, :] > 0, lo, -np.inf), volume, cpc, cvr, sigma, win_rate,
                               logged_win_rate)
    return conv.sum(axis=1)


# ----- learning the market from the pacer's own auctions -----------------------------------------------
MARKET_PRIOR_AUCTIONS = 200.0  # the spread's prior counts as this many auctions (a property of the market) ...
LEVEL_PRIOR_AUCTIONS = 20.0  # ... the price level's as this many: today's may be another than the history's
# (a log-level sd of about spread / sqrt(20), 0.13 at 0.6: markets move by more than that from day to day)
LOSS_EDGES = np.linspace(-5.0, 5.0, 101)  # bins of a lost bid's log(bid / reference price)
LOSS_BOUNDS = LOSS_EDGES.tolist()
LOSS_CENTERS = np.concatenate([[LOSS_EDGES[0]], (LOSS_EDGES[:-1] + LOSS_EDGES[1:]) / 2, [LOSS_EDGES[-1]]])


def _upper_tail_ratio(a: np.ndarray) -> np.ndarray:
    """phi(a) / (1 - Phi(a)), the standard normal's inverse Mills ratio, stable for large ``a``."""
    tail = 1.0 - normal_cdf(a)
    ratio = np.exp(-0.5 * a * a) / np.sqrt(2 * np.pi) / np.maximum(tail, 1e-300)
    return np.where(a > 5.0, a + 1.0 / np.maximum(a, 1e-12) - 2.0 / np.maximum(a, 1e-12) ** 3, ratio)


class MarketBelief:
    """The market price as the pacer learns it from its own auctions (a Tobit model with conjugate-style
    priors; numpy and the standard library only).

    Each bid is compared with a *reference price*: its raw (logged) bid times ``exp(offset[h])``, the hour's
    posterior cost per click relative to the day's (so hours with dearer clicks are expected dearer).  The
    log ratio ``x = log(price / reference)`` is normal with mean ``m`` and sd ``s``; a won auction reveals
    ``x`` (a second price pays the market price), a lost one (recorded with cost 0, or expired without a
    notice) only that ``x`` was above ``log(bid / reference)``.  The priors are the plan's assumptions about
    the history's market (spread ``sigma``, the logged bid winning ``win_rate`` of auctions): the spread's
    counted as ``prior_auctions`` auctions, the level's (``m``) as ``level_prior_auctions``; the estimate
    (EM over the wins' sufficient statistics and a histogram of the losses' bounds) gives today's spread
    and logged win rate, which the plan's auction response compares with the history's (a dearer market
    sells fewer clicks at the logged bid: ``auction_response``'s ``logged_win_rate``)."""

    def __init__(self, sigma: float = PRICE_SIGMA, win_rate: float = LOGGED_WIN_RATE,
                 prior_auctions: float = MARKET_PRIOR_AUCTIONS, level_prior_auctions: float = LEVEL_PRIOR_AUCTIONS):
        self.prior = (float(sigma), float(win_rate))
        self.prior_auctions = float(prior_auctions)
        self.level_prior_auctions = float(level_prior_auctions)
        self.m0 = -_z_logged(float(sigma), float(win_rate))
        self.wins = [0, 0.0, 0.0]  # count, sum of x, sum of x^2
        self.losses = np.zeros(len(LOSS_CENTERS))  # lost bids by bin of log(bid / reference)
        self.sigma, self.win_rate = self.prior

    def won(self, price: float, reference: float) -> None:
        """A won auction paid ``price`` (a bid placed at ``reference``'s scale); extreme ratios teach nothing."""
        ratio = price / reference if reference > 0 else 0.0
        if not 1e-9 < ratio < 1e9:
            return
        x = math.log(ratio)
        w = self.wins
        w[0] += 1
        w[1] += x
        w[2] += x * x

    def lost(self, bid: float, reference: float, count: int = 1) -> None:
        """An auction lost at ``bid`` (``count`` of them): the price was above it."""
        ratio = bid / reference if reference > 0 else 0.0
        if 1e-9 < ratio < 1e9:
            self.losses[bisect.bisect_left(LOSS_BOUNDS, math.log(ratio))] += count

    def lost_many(self, bids: np.ndarray, references: np.ndarray) -> None:
        """``lost`` for many auctions at once (the same bins): the bids that expired without a notice."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(references > 0, bids / references, 0.0)
        ratios = ratios[(ratios > 1e-9) & (ratios < 1e9)]
        bins = np.searchsorted(LOSS_EDGES, np.log(ratios), side="left")  # bisect_left, as ``lost``
        self.losses += np.bincount(bins, minlength=self.losses.size)

    @property
    def auctions(self) -> int:
        return int(self.wins[0] + self.losses.sum())

    def estimate(self, iterations: int = 30) -> tuple[float, float]:
        """Update and return (spread, logged win rate) from the auctions so far (EM; the prior as
        pseudo-auctions at the prior's mean and spread)."""
        n0, s0, n_level = self.prior_auctions, self.prior[0], self.level_prior_auctions
        count, total, squares = self.wins
        lost = self.losses.sum()
        m, s = self.m0, s0
        for _ in range(iterations):
            if lost:
                a = (LOSS_CENTERS - m) / s
                ratio = _upper_tail_ratio(a)
                first = m + s * ratio  # E[x | x > c]
                second = s * s * (1 + a * ratio) + 2 * m * s * ratio + m * m  # E[x^2 | x > c]
                lost_first, lost_second = float(self.losses @ first), float(self.losses @ second)
            else:
                lost_first = lost_second = 0.0
            seen = count + lost
            m = (n_level * self.m0 + total + lost_first) / (n_level + seen)
            # the auctions' squared deviations from m, and the spread's prior as n0 of them at sd s0
            deviations = squares + lost_second - 2 * m * (total + lost_first) + seen * m * m
            variance = (n0 * s0 * s0 + deviations) / (n0 + seen)
            s = math.sqrt(max(variance, 1e-4))
        self.sigma, self.win_rate = s, float(normal_cdf(np.array(-m / s)))
        return self.sigma, self.win_rate

    def landscape(self, factors=(0.5, 0.75, 1.0, 1.5, 2.0)) -> dict:
        """What was learned, for ``status()``: the spread, the logged bid's win rate, the win rate at a few
        multiples of the logged bid, and how many auctions taught it."""
        z0 = _z_logged(self.sigma, self.win_rate)
        return {"price_sigma": round(self.sigma, 4), "logged_win_rate": round(self.win_rate, 4),
                "win_rate_at_bid_factor": {f"{f:g}": round(float(normal_cdf(np.array((math.log(f) + z0) /
                                                                                     self.sigma))), 4)
                                           for f in factors},
                "auctions_won": int(self.wins[0]), "auctions_lost": int(self.losses.sum()),
                "prior": {"price_sigma": self.prior[0], "logged_win_rate": self.prior[1],
                          "counted_as_auctions": self.prior_auctions,
                          "level_counted_as_auctions": self.level_prior_auctions}}

    def statistics(self) -> np.ndarray:
        """The learned statistics as one additive vector (wins' count, sum, sum of squares, then the losses'
        histogram): the sum of two processes' vectors is what one process seeing both auctions would learn."""
        return np.concatenate([np.asarray(self.wins, np.float64), self.losses])

    def set_statistics(self, vector: np.ndarray) -> None:
        """Take ``statistics()`` (e.g. a fleet's sum) as what was learned."""
        self.wins = [int(round(vector[0])), float(vector[1]), float(vector[2])]
        self.losses = np.maximum(np.asarray(vector[3:], np.float64), 0.0)

    def state(self) -> list:
        """The learned statistics, for the journal (``restore`` reads them back)."""
        return [*self.wins, *np.flatnonzero(self.losses).tolist(), *self.losses[self.losses > 0].tolist()]

    def restore(self, state) -> bool:
        """Take back ``state()``; False (nothing changed) if it is not one."""
        try:
            count, total, squares, *rest = state
            k = len(rest) // 2
            where, values = np.array(rest[:k], np.int64), np.array(rest[k:], np.float64)
            ok = (len(rest) % 2 == 0 and count >= 0 and all(map(math.isfinite, (total, squares)))
                  and np.all((where >= 0) & (where < len(self.losses))) and np.all(values >= 0))
        except (TypeError, ValueError):
            return False
        if not ok:
            return False
        self.wins = [int(count), float(total), float(squares)]
        self.losses = np.zeros(len(LOSS_CENTERS))
        self.losses[where] = values
        return True
