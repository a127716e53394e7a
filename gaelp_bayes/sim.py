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

import heapq
import math
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
    price_sigma: float = 0.6  # log-sd of the highest competing bid around the hour's median price (the truth)


def bump(center: float, width: float) -> np.ndarray:
    """A von-Mises-shaped bump over the 24 hours (cyclic, max 1)."""
    return np.exp((np.cos(2 * np.pi * (HOURS - center) / 24) - 1) / width)


def make_world(campaigns: int = 3, seed: int = 0, base_cvr: tuple[float, float] = (0.01, 0.08),
               volume_scale: float = 1.0, price_sigma: float = 0.6) -> World:
    """Draw a world with ``campaigns`` campaigns (see the module doc; ``volume_scale`` multiplies traffic,
    ``price_sigma`` is the market prices' log-sd within an hour)."""
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
        shape = (0.5 + rng.uniform(0.5, 1.5) * bump(14 + shift, 0.15)
                 + rng.uniform(0.2, 1.0) * bump(21 + shift, 0.05))
        shape /= shape.mean()
        noise = rng.lognormal(0.0, 0.1, size=(7, 24))
        cvr[c] = np.clip(base * shape[None, :] * dow_mult[:, None] * noise, 1e-5, 0.9)
        volume = 0.15 + bump(13 + shift / 2, 0.3)
        clicks[c] = volume_scale * rng.uniform(20, 200) * volume[None, :] * rng.lognormal(0, 0.1, size=7)[:, None]
        price = rng.uniform(0.3, 1.5) * (1 + 0.2 * np.sin(2 * np.pi * (HOURS - 6) / 24))
        cpc[c] = price[None, :]
        rpc[c] = rng.uniform(20, 80)
    return World(campaigns=names, cvr=cvr, clicks=clicks, cpc=cpc, rpc=rpc, price_sigma=price_sigma)


def drifting_cvr(world: World, days: int, per_week: float = 0.0, step: float = 0.0,
                 step_day: int | None = None) -> np.ndarray:
    """[campaign, day * 24]: each hour's true conversion rate over ``days`` days from the history's start (a
    Monday) when the log-odds move by ``per_week`` a week and jump by ``step`` on ``step_day``."""
    hours = np.arange(days * 24)
    dow, hour = (hours // 24) % 7, hours % 24
    shift = per_week * hours / (7 * 24) + (0.0 if step_day is None else step * (hours >= step_day * 24))
    log_odds = np.log(world.cvr / (1 - world.cvr))[:, dow, hour] + shift[None, :]
    return 1.0 / (1.0 + np.exp(-log_odds))


def history_truth(world: World, history: pd.DataFrame, cvr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of a ``log_history`` drawn with ``cvr`` [campaign, hour of the history]: its hour of the
    history and its true conversion rate (the log holds each campaign's hours in order)."""
    hours = np.arange(len(history)) % cvr.shape[1]
    return hours, cvr[history["campaign"].map(world.campaigns.index).to_numpy(), hours]


def log_history(world: World, days: int, start: str = "2026-01-05", seed: int = 1,
                spend: bool = True, revenue: bool = True, cvr: np.ndarray | None = None) -> pd.DataFrame:
    """Hourly performance windows drawn from ``world`` for ``days`` days from ``start`` (UTC, a Monday);
    ``cvr`` [campaign, hour of the history]: the true conversion rates when they drift (``drifting_cvr``)."""
    rng = np.random.default_rng(seed)
    stamps = pd.date_range(start, periods=days * 24, freq="h", tz="UTC")
    dow = np.asarray(stamps.dayofweek)
    hour = np.asarray(stamps.hour)
    frames = []
    for c, name in enumerate(world.campaigns):
        mean = world.clicks[c, dow, hour]
        clicks = rng.negative_binomial(world.click_shape, world.click_shape / (world.click_shape + mean))
        conversions = rng.binomial(clicks, world.cvr[c, dow, hour] if cvr is None else cvr[c])
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





# ----- auctions: history at a fixed raw bid, and test days replayed bid by bid ------------------------
RAW_BID_OVER_MEDIAN = 1.3  # the logged raw bid, relative to the median price (wins 2/3 of auctions at spread 0.6)


def _win_rate_at_raw(world: World) -> float:
    from math import erf, log, sqrt

    return 0.5 * (1 + erf(log(RAW_BID_OVER_MEDIAN) / (world.price_sigma * sqrt(2))))


def at_raw_bid(world: World, campaign: int) -> tuple[np.ndarray, np.ndarray]:
    """What a history logged at the campaign's raw bid measures, [day, hour] each: the expected clicks (the
    auctions won at that bid) and their mean price.  ``world.clicks`` are the clicks a bid of 1.3x each hour's
    own median price would win and ``world.cpc`` that median; the raw bid is one for the day, so each hour wins
    its own share of auctions, and the won ones are the cheaper part of the prices."""
    from .market import normal_cdf

    s = world.price_sigma
    z = np.log(raw_bid(world, campaign) / world.cpc[campaign])  # log(raw bid / the hour's median price)
    won = normal_cdf(z / s)  # the hour's win rate at the raw bid
    clicks = world.clicks[campaign] / _win_rate_at_raw(world) * won
    return clicks, world.cpc[campaign] * np.exp(s * s / 2) * normal_cdf((z - s * s) / s) / won


def raw_bid(world: World, campaign: int) -> float:
    """The fixed raw bid the orchestrator logged history at (the campaign's mean price x 1.3)."""
    return float(world.cpc[campaign].mean() * RAW_BID_OVER_MEDIAN)


def log_auction_history(world: World, days: int, start: str = "2026-01-05", seed: int = 1) -> pd.DataFrame:
    """Windows logged by bidding the raw bid on every opportunity (second price: pay the market price)."""
    rng = np.random.default_rng(seed)
    stamps = pd.date_range(start, periods=days * 24, freq="h", tz="UTC")
    rows = []
    for c, name in enumerate(world.campaigns):
        bid = raw_bid(world, c)
        for ts in stamps:
            d, h = ts.dayofweek, ts.hour
            n = rng.poisson(world.clicks[c, d, h] / _win_rate_at_raw(world))
            prices = world.cpc[c, d, h] * rng.lognormal(0.0, world.price_sigma, n)
            won = prices < bid
            clicks = int(won.sum())
            conv = int(rng.binomial(clicks, world.cvr[c, d, h]))
            revenue = float(rng.gamma(2.0 * conv, world.rpc[c, d, h] / 2.0)) if conv else 0.0
            rows.append((ts.strftime("%Y-%m-%dT%H:%M:%SZ"), name, clicks, conv, round(float(prices[won].sum()), 4),
                         round(revenue, 2)))
    return pd.DataFrame(rows, columns=["timestamp", "campaign", "clicks", "conversions", "spend", "revenue"])


@dataclass
class AuctionDay:
    """One test day's opportunities for one campaign, in time order (common to every policy)."""

    campaign: int
    start: float  # epoch seconds of local midnight (UTC here)
    times: np.ndarray
    prices: np.ndarray
    cvr: np.ndarray  # true conversion probability of each opportunity
    converts: np.ndarray  # bool: would convert if won (drawn once, shared by policies)
    hours: np.ndarray


def auction_day(world: World, campaign: int, date: str, seed: int,
                cvr_shift: tuple[int, int, float] | None = None,
                price_spike: tuple[int, int, float] | None = None, auctions_per_hour: float | None = None,
                from_hour: int = 0) -> AuctionDay:
    """Opportunities of one day.  ``cvr_shift=(from_hour, to_hour, factor)`` multiplies true conversion rates
    in those hours; ``price_spike=(from_hour, to_hour, factor)`` multiplies market prices in those hours;
    ``auctions_per_hour``: that many opportunities every hour (None: the world's, which follow its clicks);
    ``from_hour``: the day's opportunities from that hour on only (a pacer started mid-day)."""
    rng = np.random.default_rng(seed)
    day = pd.Timestamp(date, tz="UTC")
    d = day.dayofweek
    times, prices, cvr, hours = [], [], [], []
    for h in range(24):
        n = rng.poisson(world.clicks[campaign, d, h] / _win_rate_at_raw(world) if auctions_per_hour is None
                        else auctions_per_hour)
        times.append(day.timestamp() + 3600 * h + np.sort(rng.uniform(0, 3600, n)))
        p = world.cpc[campaign, d, h] * rng.lognormal(0.0, world.price_sigma, n)
        if price_spike and price_spike[0] <= h < price_spike[1]:
            p = p * price_spike[2]
        prices.append(p)
        rate = world.cvr[campaign, d, h] * (cvr_shift[2] if cvr_shift and cvr_shift[0] <= h < cvr_shift[1] else 1.0)
        cvr.append(np.full(n, min(rate, 0.95)))
        hours.append(np.full(n, h))
    cvr_all = np.concatenate(cvr)
    times_all, prices_all, hours_all = np.concatenate(times), np.concatenate(prices), np.concatenate(hours)
    converts = rng.uniform(size=cvr_all.size) < cvr_all
    kept = hours_all >= from_hour
    return AuctionDay(campaign, day.timestamp(), times_all[kept], prices_all[kept], cvr_all[kept], converts[kept],
                      hours_all[kept])


def oracle_finish_hour(day: AuctionDay, budget: float) -> float:
    """When the hindsight oracle has spent 99% of the budget (hours since midnight; 24 if never)."""
    order = np.argsort(-day.cvr / day.prices, kind="stable")
    taken = order[np.cumsum(day.prices[order]) <= budget]
    chrono = np.sort(taken)
    spent = np.cumsum(day.prices[chrono])
    reach = np.searchsorted(spent, 0.99 * budget)
    return float((day.times[chrono[reach]] - day.start) / 3600) if reach < len(chrono) else 24.0


def oracle_conversions(day: AuctionDay, budget: float) -> float:
    """Hindsight optimum: win the opportunities with the most conversions per dollar until the budget is spent.

    A uniform threshold bid cvr/lambda in a second-price auction wins exactly these, so this is the
    value of the best budget-feasible bidding policy that knows true rates and prices.
    """
    return best_conversions(day.cvr, day.prices, budget)


def best_conversions(cvr: np.ndarray, prices: np.ndarray, budget: float) -> float:
    """The expected conversions of the opportunities with the most conversions per dollar, until ``budget``."""
    order = np.argsort(-cvr / prices, kind="stable")
    taken = np.cumsum(prices[order]) <= budget
    return float(cvr[order][taken].sum())


def replay(day: AuctionDay, policy, raw: float, budget: float, outage_from: float | None = None,
           report_losses: bool = True, conversion_delay: tuple[float, float, float] | None = None,
           trace: bool = False) -> dict:
    """Run one day bid by bid: the policy bids, wins if above the price, pays the price, learns the outcome.

    ``outage_from`` (hour): from then on conversions still happen but are not reported to the policy.
    ``report_losses``: a lost bid is recorded with cost 0.0 (False: only won auctions are reported, as
    on exchanges without loss notices).
    ``conversion_delay``: (share, fast mean, slow mean) in seconds: each conversion is reported that long
    after its click (``delays``), through ``policy.record_conversion`` where the policy has it (the others
    ignore conversions); those due after midnight never arrive that day.
    ``trace``: also return each opportunity's bid and the cumulative spend after it (``bids``, ``spend``).
    """
    spent = conv = expected = 0.0
    ran_out = None
    outage_t = day.start + 3600 * outage_from if outage_from is not None else float("inf")
    bids, spend = (np.empty(len(day.times)), np.empty(len(day.times))) if trace else (None, None)
    postbacks: list[tuple[float, float]] = []  # (report time, click time), a heap
    delay = delays(conversion_delay, len(day.times), seed=int(day.start)) if conversion_delay else None
    late = conversion_delay is not None and hasattr(policy, "record_conversion")
    for i, (t, price, rate, converts) in enumerate(zip(day.times.tolist(), day.prices.tolist(), day.cvr.tolist(),
                                                       day.converts.tolist())):
        while postbacks and postbacks[0][0] <= t:
            due, click = heapq.heappop(postbacks)
            policy.record_conversion(click, now=due)
        b = policy.adjust_bid(raw, now=t)
        if trace:
            bids[i] = b
        if b > price:
            spent += price
            expected += rate
            conv += converts
            reported = int(converts) if t < outage_t else 0
            if late and reported:
                if t + delay[i] < day.start + 86_400:
                    heapq.heappush(postbacks, (t + delay[i], t))
                reported = 0
            policy.record(price, clicks=1, conversions=reported, now=t)
            if ran_out is None and spent >= 0.99 * budget:
                ran_out = (t - day.start) / 3600
        elif b > 0 and report_losses:
            policy.record(0.0, now=t)
        if trace:
            spend[i] = spent
    out = {"spent": spent, "expected_conversions": expected, "conversions": conv,
           "ran_out_hour": ran_out, "overspend": max(0.0, spent - budget)}
    return {**out, "bids": bids, "spend": spend} if trace else out


DELAYED_POSTBACKS = (0.5, 180.0, 4 * 3600.0)  # half reported within minutes (mean 3 min), half after hours


def delays(spec: tuple[float, float, float], n: int, seed: int) -> np.ndarray:
    """``n`` conversion delays in seconds: a share ``spec[0]`` exponential with mean ``spec[1]``, the rest
    with mean ``spec[2]``."""
    rng = np.random.default_rng(seed)
    return np.where(rng.uniform(size=n) < spec[0], rng.exponential(spec[1], n), rng.exponential(spec[2], n))


class EvenPacing:
    """Spend the budget evenly over the clock: bid the raw bid while spend is behind linear time."""

    def __init__(self, budget: float, day_start: float):
        self.budget, self.start, self.spent = budget, day_start, 0.0

    def adjust_bid(self, bid: float, now: float) -> float:
        target = self.budget * min(max((now - self.start) / 86400, 0.0), 1.0)
        return min(bid, self.budget - self.spent) if self.spent < target + 0.01 * self.budget else 0.0

    def record(self, cost: float, clicks: int = 0, conversions: int = 0, now: float | None = None) -> None:
        self.spent += cost


class LegacyRules:
    """The old optimiser's rules: hourly shares by historical conversions per dollar, a pace-ratio
    multiplier on linear time clamped to [0.7, 1.3] and smoothed at rate 0.1 (updated every 5
    minutes), a single bid <= 10% of the hour's allocation, and a budget safety stop."""

    def __init__(self, budget: float, day_start: float, history: pd.DataFrame):
        by_hour = history.assign(hour=pd.to_datetime(history["timestamp"], utc=True).dt.hour).groupby("hour")
        cpd = (by_hour["conversions"].sum() / by_hour["spend"].sum().clip(lower=1e-9)).reindex(range(24), fill_value=0)
        self.alloc = (budget * cpd / cpd.sum()).to_numpy()
        self.budget, self.start, self.spent, self.m, self.next_update = budget, day_start, 0.0, 1.0, day_start

    def adjust_bid(self, bid: float, now: float) -> float:
        if now >= self.next_update:
            elapsed = min(max((now - self.start) / 86400, 1e-6), 1.0)
            pace = self.spent / (self.budget * elapsed)
            target = 1.3 if pace == 0 else min(max(1.0 / pace, 0.7), 1.3)
            self.m = 0.9 * self.m + 0.1 * target
            self.next_update = now + 300
        h = min(int((now - self.start) // 3600), 23)
        return max(0.0, min(bid * self.m, 0.1 * self.alloc[h], self.budget - self.spent))

    def record(self, cost: float, clicks: int = 0, conversions: int = 0, now: float | None = None) -> None:
        self.spent += cost


class DualPacing:
    """The plain baseline, no Bayes: bid = raw bid x the hour's smoothed empirical conversion rate (relative
    to the day's) / a multiplier; the multiplier follows spend against a plan curve (the budget over the
    hours in proportion to the history's spend x rate), integrating the gap (in hours' budgets) over
    time; a bid never exceeds the budget left."""

    GAIN = 2.0  # per hour, per hour's budget of gap

    def __init__(self, budget: float, day_start: float, history: pd.DataFrame, prior_clicks: float = 50.0):
        hour = pd.to_datetime(history["timestamp"], utc=True).dt.hour
        g = history.assign(hour=hour).groupby("hour")[["clicks", "conversions", "spend"]].sum()
        g = g.reindex(range(24), fill_value=0)
        base = g["conversions"].sum() / max(g["clicks"].sum(), 1)
        rate = ((g["conversions"] + prior_clicks * base) / (g["clicks"] + prior_clicks)).to_numpy()
        self.value = rate / base
        weight = g["spend"].to_numpy() * self.value + 1e-9
        self.cum = np.concatenate([[0.0], np.cumsum(budget * weight / weight.sum())])
        self.budget, self.start, self.spent, self.log_m, self.last = budget, day_start, 0.0, 0.0, day_start

    def adjust_bid(self, bid: float, now: float) -> float:
        x = min(max((now - self.start) / 3600, 0.0), 23.999)
        h = int(x)
        planned = self.cum[h] + (self.cum[h + 1] - self.cum[h]) * (x - h)
        gap = (self.spent - planned) / (self.budget / 24)
        self.log_m = min(max(self.log_m + self.GAIN * gap * (now - self.last) / 3600, -3.0), 3.0)
        self.last = max(self.last, now)
        return max(0.0, min(bid * self.value[h] * math.exp(-self.log_m), self.budget - self.spent))

    def record(self, cost: float, clicks: int = 0, conversions: int = 0, now: float | None = None) -> None:
        self.spent += cost


def plugin_posterior(history: pd.DataFrame, campaign: str, prior_clicks: float = 50.0):
    """A careful non-Bayesian plug-in: smoothed empirical hourly rates (toward the campaign's rate),
    empirical hourly cpc and volume, as a single 'draw' for the same pacer."""
    from .runtime import CampaignPosterior

    rows = history[history["campaign"] == campaign]
    hour = pd.to_datetime(rows["timestamp"], utc=True).dt.hour
    g = rows.assign(hour=hour, n=1).groupby("hour")[["clicks", "conversions", "spend", "n"]].sum()
    g = g.reindex(range(24), fill_value=0)
    base = rows["conversions"].sum() / max(rows["clicks"].sum(), 1)
    cvr = (g["conversions"] + prior_clicks * base) / (g["clicks"] + prior_clicks)
    cpc = (g["spend"] / g["clicks"].clip(lower=1)).where(g["clicks"] > 0, rows["spend"].sum() / max(rows["clicks"].sum(), 1))
    volume = g["clicks"] / g["n"].clip(lower=1)
    cube = lambda s: np.broadcast_to(s.to_numpy(np.float32)[None, None, :], (1, 7, 24)).copy()  # noqa: E731
    return CampaignPosterior(campaign, cube(cvr), cube(cpc), cube(volume))


POLICIES = ("oracle", "even", "legacy", "dual", "plugin", "bayes")
# also available: "bayes-static", the same pacer with online learning off (the plan of the morning all day);
# "bayes-pi" and "bayes-dg", the same pacer with a PI controller on the plan's curve, or Balseiro & Gur's
# dual-gradient update, instead of its re-solving controller; and the ceilings of TRUTH_POLICIES
TRUTH_POLICIES = {  # the pacer given the world's true rates, costs and volumes (one exact draw, learning off)
    "truth": {"learn": False},  # under the default caps: what a perfect posterior gives this pacer
    "truth-uncapped": {"learn": False, "max_share": 1.0, "bid_cap_share": 1.0},  # and without its caps
}
PACER_POLICIES = {  # the policies that are the runtime pacer: their plan options over the caller's
    "plugin": {}, "bayes": {}, "bayes-static": {"learn": False}, "bayes-pi": {"controller": "pi"},
    "bayes-dg": {"controller": "dual-gradient"},
    **TRUTH_POLICIES}
MORE_POLICIES = tuple(p for p in PACER_POLICIES if p not in POLICIES)


SCENARIOS = {  # name: {"world": make_world, "day": auction_day, "replay": replay, "pacer": Pacer keyword arguments}
    "stationary": {},
    "shift": {"day": {"cvr_shift": (12, 18, 0.4)}},  # the afternoon (12:00-18:00) converts at 0.4x the usual rate
    "price-spike": {"day": {"price_spike": (10, 14, 2.5)}},  # prices x2.5 from 10:00 to 14:00
    "outage": {"replay": {"outage_from": 12.0}},  # conversions stop being reported at noon
    "no-loss-notices": {"replay": {"report_losses": False}},  # only won auctions are reported
    "price-spread": {"world": {"price_sigma": 1.0}},  # market prices spread wider than the pacer's prior (0.6)
    "narrow-prices": {"world": {"price_sigma": 0.35}},  # ... and narrower
    "new-campaign": {},  # the last campaign has only 2 days of history (see simulate)
    # conversions reported late (half within minutes, half after hours); the pacers know the delay distribution
    # from a sample (as a fit on event logs would give it)
    "delayed-postbacks": {"replay": {"conversion_delay": DELAYED_POSTBACKS},
                          "pacer": {"plan_options": {"conversion_delay": delays(DELAYED_POSTBACKS, 2000, 0)}}},
    # markets unlike the history: prices 1.5 log-units below it and 200 auctions every hour; prices 1 log-unit
    # above and 20 an hour; prices that fall or rise by 1 log-unit at 10:00; a pacer started at 14:00
    "cheap-busy": {"day": {"price_spike": (0, 24, math.exp(-1.5)), "auctions_per_hour": 200}},
    "dear-thin": {"day": {"price_spike": (0, 24, math.e), "auctions_per_hour": 20}},
    "prices-fall": {"day": {"price_spike": (10, 24, math.exp(-1.0))}},
    "prices-rise": {"day": {"price_spike": (10, 24, math.e)}},
    "mid-day-start": {"day": {"from_hour": 14}},
}


def usual_budget(history: pd.DataFrame, campaign: str, share: float = 0.5) -> float:
    """``share`` of the campaign's mean daily spend in the history: a budget that binds, so pacing matters."""
    days = pd.to_datetime(history["timestamp"], utc=True).dt.normalize().nunique()
    return round(share * history.loc[history["campaign"] == campaign, "spend"].sum() / days, 2)


def trace_day(world: World, history: pd.DataFrame, model_dir: str | None, campaign: int, date: str,
              policies: tuple[str, ...], seed: int, budget_share: float = 0.5, day_kwargs: dict | None = None,
              replay_kwargs: dict | None = None, pacer_kwargs: dict | None = None) -> dict:
    """One campaign-day replayed by each policy with traces (for figures): opportunity times (hours), the
    budget, per policy the bids and cumulative spend, and the bayes pacer's planned spend per hour."""
    from . import cache

    cached = cache.read_runtime(model_dir) if model_dir is not None else None
    name = world.campaigns[campaign]
    budget = usual_budget(history, name, budget_share)
    day = auction_day(world, campaign, date, seed=seed, **(day_kwargs or {}))
    out = {"campaign": name, "date": date, "budget": budget, "hours": (day.times - day.start) / 3600,
           "policies": {}, "plan": None}
    for policy in policies:
        if policy == "oracle":
            continue
        pacer = make_policy(policy, name, budget, day.start, history, cached, pacer_kwargs, world)
        if policy == "bayes":
            out["plan"] = pacer.status(day.start)["plan"]
        out["policies"][policy] = replay(day, pacer, raw_bid(world, campaign), budget, trace=True,
                                         **(replay_kwargs or {}))
    return out


def make_policy(policy: str, campaign: str, budget: float, day_start: float, history: pd.DataFrame,
                cached: tuple[dict, dict] | None = None, pacer_kwargs: dict | None = None,
                world: World | None = None):
    """A fresh policy for one campaign-day: ``even``, ``legacy``, ``dual``, ``plugin``, ``bayes``, ``bayes-static``,
    ``bayes-pi`` or ``bayes-dg`` (the bayes ones need ``cached`` = (manifest, runtime arrays) of a fitted
    posterior), or a ceiling for the pacer, ``truth`` or ``truth-uncapped`` (``TRUTH_POLICIES``; they need the
    ``world``)."""
    from .runtime import CampaignPosterior, Pacer

    if policy == "even":
        return EvenPacing(budget, day_start)
    if policy == "legacy":
        return LegacyRules(budget, day_start, history[history["campaign"] == campaign])
    if policy == "dual":
        return DualPacing(budget, day_start, history[history["campaign"] == campaign])
    if policy not in PACER_POLICIES:
        raise ValueError(f"unknown policy {policy!r} (one of {', '.join(POLICIES + MORE_POLICIES)})")
    if policy in TRUTH_POLICIES:
        if world is None:
            raise ValueError(f"policy {policy!r} needs the world's truth")
        c = world.campaigns.index(campaign)
        clicks, cpc = at_raw_bid(world, c)
        post = CampaignPosterior(campaign, *(np.asarray(a, np.float32)[None] for a in (world.cvr[c], cpc, clicks)))
    elif policy == "plugin":
        post = plugin_posterior(history, campaign)
    elif cached is None:
        raise ValueError(f"policy {policy!r} needs a fitted posterior")
    else:
        post = CampaignPosterior.from_cache(cached[1], cached[0], campaign, when=day_start)[0]
    kwargs = dict(pacer_kwargs or {})
    kwargs["plan_options"] = {**kwargs.get("plan_options", {}), **PACER_POLICIES[policy]}
    return Pacer(post, budget, "UTC", now=day_start, **kwargs)


def compare_policies(world: World, history: pd.DataFrame, model_dir: str | None, test_days: list[str],
                     budget_share: float = 0.5, policies: tuple[str, ...] = POLICIES, seed: int = 100,
                     day_kwargs: dict | None = None, pacer_kwargs: dict | None = None,
                     replay_kwargs: dict | None = None) -> pd.DataFrame:
    """One row per (campaign, day, policy): conversions (expected, from true rates) and spend.

    Each campaign's daily budget is ``budget_share`` of its mean daily spend in the history at
    the raw bid, so the budget binds and pacing matters.
    """
    from . import cache
    from .runtime import Pacer

    cached = cache.read_runtime(model_dir) if model_dir is not None else None
    rows = []
    for c, name in enumerate(world.campaigns):
        budget = usual_budget(history, name, budget_share)
        raw = raw_bid(world, c)
        for i, date in enumerate(test_days):
            day = auction_day(world, c, date, seed=seed + 1000 * c + i, **(day_kwargs or {}))
            oracle = oracle_conversions(day, budget)
            oracle_finish = oracle_finish_hour(day, budget)
            for policy in policies:
                if policy == "oracle":
                    res = {"spent": budget, "expected_conversions": oracle, "conversions": float("nan"),
                           "ran_out_hour": None, "overspend": 0.0}
                else:
                    pacer = make_policy(policy, name, budget, day.start, history, cached, pacer_kwargs, world)
                    res = replay(day, pacer, raw, budget, **(replay_kwargs or {}))
                ran_dry = res["ran_out_hour"] is not None and res["ran_out_hour"] < oracle_finish - 1.0
                rows.append({"campaign": name, "date": date, "policy": policy, "budget": budget,
                             "stopped": pacer.status(day.start + 86_399)["emergency_stop"]
                             if policy != "oracle" and isinstance(pacer, Pacer) else None,
                             "oracle": oracle, "oracle_finish_hour": oracle_finish, "ran_dry": ran_dry, **res})
    out = pd.DataFrame(rows)
    out["pct_of_oracle"] = 100 * out["expected_conversions"] / out["oracle"]
    return out


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per policy: % of oracle (mean and 5-95% over campaign-days), spend/budget, overspend, run-out hour, CPA.

    ``days_ran_dry``: days on which the policy had spent 99% of the budget more than an hour before the
    hindsight oracle did (running out early, rather than finishing early because late hours are poor).
    """
    g = results.groupby("policy", sort=False)
    return pd.DataFrame({
        "pct_of_oracle": g["pct_of_oracle"].mean(),
        "pct_lo": g["pct_of_oracle"].quantile(0.05),
        "pct_hi": g["pct_of_oracle"].quantile(0.95),
        "spend_over_budget": g.apply(lambda x: x["spent"].sum() / x["budget"].sum(), include_groups=False),
        "max_overspend": g["overspend"].max(),
        "days_ran_out_before_23h": g["ran_out_hour"].apply(lambda s: int((s < 23).sum())),
        "days_ran_dry": g["ran_dry"].sum().astype(int),
        "earliest_run_out_hour": g["ran_out_hour"].min(),
        "cpa": g.apply(lambda x: x["spent"].sum() / max(x["expected_conversions"].sum(), 1e-9), include_groups=False),
    }).round(3)


def demo_windows(days: int = 56, campaigns: int = 3, seed: int = 7) -> tuple[World, pd.DataFrame]:
    """The built-in demo data: 8 weeks of 3 campaigns bidding the raw bid in a seeded auction world."""
    world = make_world(campaigns=campaigns, seed=seed)
    return world, log_auction_history(world, days=days, seed=seed + 1)


# ----- the account: one budget over several campaigns -------------------------------------------------------
ACCOUNT_POLICIES = ("oracle", "split-by-spend", "split-by-plan", "account")


def account_day_replay(days: list[AuctionDay], raws: list[float], policy, budget: float) -> dict:
    """One day of several campaigns' auctions, merged in time order, bid by bid through ``policy`` (an object
    with ``adjust_bid(raw, campaign_index, now)`` and ``record(cost, clicks, conversions, campaign_index,
    now)``): spend and expected conversions per campaign."""
    times = np.concatenate([d.times for d in days])
    which = np.concatenate([np.full(len(d.times), c) for c, d in enumerate(days)])
    index = np.concatenate([np.arange(len(d.times)) for d in days])
    order = np.argsort(times, kind="stable")
    spent, expected = np.zeros(len(days)), np.zeros(len(days))
    for i in order.tolist():
        c, j = int(which[i]), int(index[i])
        day, t = days[c], float(times[i])
        b = policy.adjust_bid(raws[c], c, t)
        if b > day.prices[j]:
            spent[c] += day.prices[j]
            expected[c] += day.cvr[j]
            policy.record(float(day.prices[j]), 1, int(day.converts[j]), c, t)
        elif b > 0:
            policy.record(0.0, 0, 0, c, t)
    return {"spent": spent, "expected_conversions": expected, "overspend": max(0.0, spent.sum() - budget)}


def account_oracle(days: list[AuctionDay], budget: float) -> float:
    """The hindsight optimum over the account: the opportunities with the most conversions per dollar, of
    any campaign, until the budget is spent."""
    return best_conversions(np.concatenate([d.cvr for d in days]), np.concatenate([d.prices for d in days]), budget)


class _CampaignPacers:
    """Fixed budgets per campaign, each paced by its own bayes pacer (the splits the account pacer is
    compared with)."""

    def __init__(self, pacers: list):
        self.pacers = pacers

    def adjust_bid(self, raw: float, c: int, now: float) -> float:
        return self.pacers[c].adjust_bid(raw, now=now)

    def record(self, cost: float, clicks: int, conversions: int, c: int, now: float) -> None:
        self.pacers[c].record(cost, clicks, conversions, now=now)


class _Account:
    """The account pacer behind the replay's campaign indices."""

    def __init__(self, account, names: list[str]):
        self.account, self.names = account, names

    def adjust_bid(self, raw: float, c: int, now: float) -> float:
        return self.account.adjust_bid(raw, self.names[c], now=now)

    def record(self, cost: float, clicks: int, conversions: int, c: int, now: float) -> None:
        self.account.record(cost, clicks, conversions, campaign=self.names[c], now=now)


def compare_account_policies(world: World, history: pd.DataFrame, model_dir: str, test_days: list[str],
                             budget_share: float = 0.5, seed: int = 100,
                             moving: tuple[int, int, int, float] | None = None) -> pd.DataFrame:
    """One row per (day, policy) for one budget over every campaign of ``world``: ``split-by-spend`` (each
    campaign's bayes pacer on a fixed share in proportion to its usual spend), ``split-by-plan`` (fixed shares
    from the account plan made at midnight, ``allocate.allocate_account``), ``account`` (``AccountPacer``) and
    the hindsight ``oracle`` over the account.  The budget is ``budget_share`` of the account's usual daily
    spend.  ``moving=(campaign, from_hour, to_hour, factor)``: that campaign's true rate moves by ``factor`` in
    those hours of every test day."""
    from . import cache
    from .allocate import allocate_account
    from .runtime import AccountPacer, CampaignPosterior, Pacer

    manifest, arrays = cache.read_runtime(model_dir)
    names = list(world.campaigns)
    usual = np.array([usual_budget(history, name, 1.0) for name in names])
    budget = round(budget_share * float(usual.sum()), 2)
    raws = [raw_bid(world, c) for c in range(len(names))]
    rows = []
    for i, date in enumerate(test_days):
        days = [auction_day(world, c, date, seed=seed + 1000 * c + i,
                            cvr_shift=moving[1:] if moving and moving[0] == c else None) for c in range(len(names))]
        start = days[0].start
        posteriors = [CampaignPosterior.from_cache(arrays, manifest, name, when=start)[0] for name in names]
        plan = allocate_account(model_dir, budget, date=date, max_share=0.5)
        planned = [float(sum(row)) for row in plan.amounts]
        for policy in ACCOUNT_POLICIES:
            if policy == "oracle":
                res = {"spent": np.full(1, budget), "expected_conversions": np.array([account_oracle(days, budget)]),
                       "overspend": 0.0}
            elif policy == "account":
                pacers = {name: Pacer(post, budget, "UTC", now=start) for name, post in zip(names, posteriors)}
                res = account_day_replay(days, raws, _Account(AccountPacer(pacers, budget, now=start), names), budget)
            else:
                shares = usual / usual.sum() * budget if policy == "split-by-spend" else np.array(planned)
                pacers = [Pacer(post, max(float(b), 0.01), "UTC", now=start) for post, b in zip(posteriors, shares)]
                res = account_day_replay(days, raws, _CampaignPacers(pacers), budget)
            rows.append({"date": date, "policy": policy, "budget": budget, "spent": float(res["spent"].sum()),
                         "expected_conversions": float(res["expected_conversions"].sum()),
                         "overspend": res["overspend"]})
    out = pd.DataFrame(rows)
    oracle = out[out["policy"] == "oracle"].set_index("date")["expected_conversions"]
    out["pct_of_oracle"] = 100 * out["expected_conversions"] / out["date"].map(oracle)
    return out


def summarize_account(results: pd.DataFrame) -> pd.DataFrame:
    """Per policy of ``compare_account_policies``: % of the account's oracle (mean and 5-95% over days),
    spend / budget and the largest overspend."""
    g = results.groupby("policy", sort=False)
    return pd.DataFrame({
        "pct_of_oracle": g["pct_of_oracle"].mean(), "pct_lo": g["pct_of_oracle"].quantile(0.05),
        "pct_hi": g["pct_of_oracle"].quantile(0.95),
        "spend_over_budget": g.apply(lambda x: x["spent"].sum() / x["budget"].sum(), include_groups=False),
        "max_overspend": g["overspend"].max()}).round(3)
