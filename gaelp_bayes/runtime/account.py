"""One budget for the account: a pacer per campaign, and the day's money split between them again and again.

    from gaelp_bayes.runtime import AccountPacer
    account = AccountPacer.load("models/demo", daily_budget=300.0)   # every campaign of the model
    bid = account.adjust_bid(raw_bid, campaign="campaign_01")        # 0.0 means: do not bid
    account.record(cost, clicks=1, conversions=0, campaign="campaign_01")

Each campaign is paced by its own ``Pacer`` (journal, learning, caps, the re-solving controller) on its share
of the budget.  Every ``RESPLIT_EVERY`` seconds of the clock the money not yet spent or held is split again
between the campaigns: at one price per conversion ``lambda`` for the whole account, every campaign-hour
left in the day bids its conversion rate / ``lambda`` (the second-price optimum under one budget), on what
each campaign has learned today (its rates, its market), and ``lambda`` is the one under which the account
is expected to spend exactly what is left; each campaign's budget becomes what it has committed plus its
expected spend at that price (within ``min_campaign`` and ``max_campaign``).  A campaign that converts
better today than planned gets more; one whose market cannot take its share gives it back.

Money: the campaigns' budgets always add to at most the account's, and none is ever set below what that
campaign has spent and holds for bids in flight, so the account never spends more than its budget.  A
restart replays every campaign's journal and splits what is left again.  Numpy and the standard library
only, like the rest of the runtime.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ..market import MAX_AMOUNT, auction_response, hour_cap, logged_bid
from .checks import as_real, check_instant
from .controllers import hours_ahead
from .pacer import Pacer

_clock = time.time  # the wall clock, bound once, as the pacer's
RESPLIT_EVERY = 900.0  # seconds between splits of the account's money between its campaigns


class AccountPacer:
    """Paces one daily budget over several campaigns (see the module doc)."""

    def __init__(self, pacers: dict[str, Pacer], daily_budget: float, now=None, min_campaign: float = 0.0,
                 max_campaign: float | None = None):
        budget = as_real(daily_budget)
        if not 0 < budget <= MAX_AMOUNT:
            raise ValueError(f"daily_budget must be a number > 0 and at most {MAX_AMOUNT:.0e}, got {daily_budget!r}")
        if not pacers:
            raise ValueError("an account pacer needs at least one campaign")
        if len({pacer.posterior.name for pacer in pacers.values()}) != len(pacers):
            raise ValueError("every pacer of an account must pace its own campaign (their journals are by name)")
        low, high = as_real(min_campaign), (math.inf if max_campaign is None else as_real(max_campaign))
        if not (0 <= low <= budget / len(pacers) and low <= high and high > 0):
            raise ValueError(f"min_campaign {min_campaign!r} and max_campaign {max_campaign!r}: need 0 <= min <= "
                             f"budget / campaigns ({budget / len(pacers):g}) and min <= max")
        self.budget, self.min_campaign, self.max_campaign = budget, low, high
        self.pacers = dict(pacers)
        self._split_at = -math.inf
        self._splitting = threading.Lock()  # one split at a time; a bid that finds one under way goes on
        self.splits = 0
        self.resplit(check_instant(time.time() if now is None else now))

    @classmethod
    def load(cls, path: str | Path, daily_budget: float = 100.0, campaigns: list[str] | None = None,
             journal: str | Path | None = None, now=None, min_campaign: float = 0.0,
             max_campaign: float | None = None, **options) -> "AccountPacer":
        """An account pacer on a model cache: a ``Pacer.load`` per campaign (every campaign of the model, or
        ``campaigns``), each replaying its own journal, then the day's money split between them.  ``options``
        are ``Pacer.load``'s (strict, force, max_cache_age_days, durable and the plan options); a ledger is not
        one of them (a fleet's budget is per campaign in its ledger)."""
        from .. import cache

        if "ledger" in options:
            raise TypeError("an account pacer paces alone: ledger is not one of its options")
        if options.get("controller", "resolve") != "resolve":
            raise ValueError("an account pacer moves budgets mid-day: its campaigns need the re-solving controller")
        known = list(cache.read_manifest(Path(path))["campaigns"])
        names = known if campaigns is None else list(campaigns)
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"campaigns must be distinct campaign names, got {names!r}")
        unknown = [c for c in names if c not in known]
        if unknown:  # (a campaign's pacer would pace it on the population level: not an account's campaign)
            raise ValueError(f"campaign {unknown[0]!r} is not in the model ({', '.join(known)})")
        budget = as_real(daily_budget)
        pacers = {name: Pacer.load(path, budget, campaign=name, journal=journal, now=now, **options)
                  for name in names}  # each on the whole budget until the split: its replayed spend fits
        return cls(pacers, budget, now, min_campaign, max_campaign)

    # ----- the hot path: one dictionary look-up, then the campaign's pacer ---------------------------------
    def adjust_bid(self, bid: float, campaign: str, now=None, bid_id=None) -> float:
        """The bid to place for an opportunity of ``campaign`` whose raw bid is ``bid`` (``Pacer.adjust_bid``)."""
        try:
            pacer = self.pacers[campaign]
        except (KeyError, TypeError):
            pacer = self._pacer(campaign)  # (raises)
        if now is None:
            now = _clock()
        if now.__class__ is not float or now >= self._split_at:  # a split is due (or a clock to check first)
            t = check_instant(now)
            if t >= self._split_at:
                self.resplit(t)
        return pacer.adjust_bid(bid, now, bid_id)

    def adjust_bids(self, bids: np.ndarray, campaign: str, now=None) -> np.ndarray:
        """``Pacer.adjust_bids`` for ``campaign``."""
        t = check_instant(time.time() if now is None else now)
        if t >= self._split_at:
            self.resplit(t)
        return self._pacer(campaign).adjust_bids(bids, t)

    def record(self, cost: float, clicks: int = 0, conversions: int = 0, campaign: str | None = None, now=None,
               bid_id=None) -> None:
        """``Pacer.record`` for ``campaign``."""
        self._pacer(campaign).record(cost, clicks, conversions, now=now, bid_id=bid_id)

    def record_conversion(self, click_time, conversions: int = 1, campaign: str | None = None, now=None) -> None:
        """``Pacer.record_conversion`` for ``campaign``."""
        self._pacer(campaign).record_conversion(click_time, conversions, now=now)

    def _pacer(self, campaign: str | None) -> Pacer:
        """The pacer of ``campaign``, or a ``ValueError`` naming the account's campaigns."""
        try:
            return self.pacers[campaign]
        except (KeyError, TypeError):
            raise ValueError(f"campaign {campaign!r} is not paced by this account ({', '.join(self.pacers)})") from None

    # ----- the split ------------------------------------------------------------------------------------------
    def resplit(self, t: float) -> dict[str, float]:
        """Split the money not yet committed between the campaigns at ``t`` (module doc); their budgets.
        Every campaign's pacer is held meanwhile, so what each has committed cannot move under the split."""
        if not self._splitting.acquire(blocking=False):
            return {c: p.budget for c, p in self.pacers.items()}
        try:
            with ExitStack() as held:
                for pacer in self.pacers.values():
                    held.enter_context(pacer._lock)
                    pacer._hour_of(max(t, pacer._starts[0]))  # a new day starts for every campaign alike
                return self._split(t)
        finally:
            self._splitting.release()

    def _split(self, t: float) -> dict[str, float]:
        live = [c for c, p in self.pacers.items() if not p._stop]
        committed = {c: p._spent + p._out_sum + p._late_sum for c, p in self.pacers.items()}
        # a stopped pacer keeps what it committed (a budget must be > 0: at least a nanocent); it bids no more
        budgets = {c: v if c in live else max(v, 1e-9) for c, v in committed.items()}
        left = max(self.budget - math.fsum(budgets.values()), 0.0)
        expected = expected_spend_at_one_price({c: self.pacers[c] for c in live}, left, t, self.budget)
        if live:
            for c, share in split_within_limits(expected, left, committed, self.min_campaign,
                                                self.max_campaign).items():
                budgets[c] = max(budgets[c] + share, 1e-9)
            # the budgets add to at most the account's (floating point: the last live one takes the exact rest)
            last = live[-1]
            budgets[last] = max(self.budget - math.fsum(v for c, v in budgets.items() if c != last), committed[last])
        for c, pacer in self.pacers.items():
            pacer.set_budget(max(budgets[c], 1e-9), t)
        self._split_at = t + RESPLIT_EVERY
        self.splits += 1
        return {c: p.budget for c, p in self.pacers.items()}

    def status(self, now=None) -> dict:
        """The account's budget, spend and split, and every campaign's ``Pacer.status``."""
        per = {c: p.status(now) for c, p in self.pacers.items()}
        spent = math.fsum(s["spent"] for s in per.values())
        return {"daily_budget": self.budget, "spent": round(spent, 6), "remaining": round(self.budget - spent, 6),
                "split": {c: round(p.budget, 6) for c, p in self.pacers.items()}, "splits": self.splits,
                "campaigns": per}

    def close(self, now=None) -> None:
        """Close every campaign's pacer (journals committed)."""
        for pacer in self.pacers.values():
            pacer.close(now)


def expected_spend_at_one_price(pacers: dict[str, Pacer], left: float, t: float, budget: float) -> dict[str, float]:
    """Each campaign's expected spend over the rest of its day when every campaign-hour bids its conversion
    rate / ``lambda``, at the ``lambda`` under which the campaigns together spend ``left`` (each hour at most
    its pacer's ``max_share`` of the account's ``budget``, not of the campaign's own, which the split itself
    sets; on each pacer's beliefs of today and the market it learned)."""
    if not pacers or left <= 0:
        return {c: 0.0 for c in pacers}
    rows = []
    for pacer in pacers.values():
        weight = hours_ahead(pacer._starts, t, pacer._hour_index(t))
        cvr, cpc, vol = (a.mean(0) for a in pacer._today())
        sigma, win_rate = pacer._market_now()
        logged = pacer._market.prior[1]
        bid_at_logged = logged_bid(cpc, pacer._market.prior[0], logged)
        rows.append((np.log(np.maximum(cvr, 1e-300)) - np.log(np.maximum(bid_at_logged, 1e-300)),
                     vol, cpc, cvr, sigma, win_rate, logged, weight,
                     hour_cap(budget, pacer.plan_options["max_share"], pacer.plan_options["max_per_hour"])))

    # each campaign's spend on one grid of log lambda (spend falls as the price per conversion rises), then
    # the lambda where the account's total is what is left, interpolated between its grid points
    low = min(float(r[0].min()) for r in rows) - 12.0
    high = max(float(r[0].max()) for r in rows) + 12.0
    grid = np.linspace(low, high, 481)
    curves = []
    for log_value, vol, cpc, cvr, sigma, win_rate, logged, weight, cap in rows:
        spend, _ = auction_response(log_value[None, :] - grid[:, None], vol, cpc, cvr, sigma, win_rate,
                                    logged_win_rate=logged)
        curves.append(np.minimum(spend, cap) @ weight)  # [grid], non-increasing
    total = np.sum(curves, axis=0)
    if total[0] <= left:  # even the lowest price does not spend it all: what each can take
        return {c: float(curve[0]) for c, curve in zip(pacers, curves)}
    i = int(np.searchsorted(-total, -left))  # the first grid point spending no more than ``left``
    share = (total[i - 1] - left) / max(total[i - 1] - total[i], 1e-300)
    return {c: float(curve[i - 1] + share * (curve[i] - curve[i - 1])) for c, curve in zip(pacers, curves)}


def split_within_limits(expected: dict[str, float], left: float, committed: dict[str, float], low: float,
                        high: float) -> dict[str, float]:
    """``left`` over the campaigns in proportion to ``expected`` (evenly where nothing is expected), each
    campaign's total (``committed`` + its share) within [``low``, ``high``] where the money allows."""
    names = list(expected)
    share = np.array([expected[c] for c in names], np.float64)
    share = share / share.sum() * left if share.sum() > 0 else np.full(len(names), left / len(names))
    base = np.array([committed[c] for c in names])
    lower = np.maximum(low - base, 0.0)
    upper = np.maximum(high - base, 0.0)
    if lower.sum() > left:  # the floors cannot all be met: in proportion to what each lacks
        return dict(zip(names, (lower * left / lower.sum()).tolist()))
    for _ in range(len(names) + 1):  # clip to the limits, give what was clipped to the others in proportion
        clipped = np.clip(share, lower, upper)
        gap = left - clipped.sum()
        free = (clipped < upper) if gap > 0 else (clipped > lower)
        if abs(gap) <= 1e-12 * max(left, 1.0) or not free.any():
            share = clipped
            break
        room = np.where(free, clipped, 0.0) if clipped[free].sum() > 0 else free.astype(float)
        share = clipped + gap * room / room.sum()
    total = share.sum()
    if total > left > 0:  # never more than what is left
        share = share * (left / total)
    return dict(zip(names, share.tolist()))
