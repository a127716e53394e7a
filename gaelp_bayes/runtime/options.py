"""The pacer's numbers and its plan options (``PLAN_OPTIONS``, checked by ``check_plan_options``)."""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..market import LOGGED_WIN_RATE, PRICE_SIGMA
from .controllers import CONTROLLERS

BID_CAP_SHARE = 0.10  # a single bid <= 10% of the hour's allocation (plan option bid_cap_share)
HOUR_SLACK = 0.25  # spend through hour h may run ahead of the plan by 25% of hour h's allocation
PACER_MAX_SHARE = 0.5  # the pacer's hour share (plan option max_share; ``allocate``'s table uses 0.2 and
# shows the pacer's plan beside it): the hindsight optimum of a day's auctions often puts more than 20% of
# the day into its best hour
CHECK_EVERY = 50  # records between learning checks (re-weighting, outage); re-plans on hour changes
REPLAN_GAIN = 0.01  # adopt a new plan for the rest of the day if it is >= 1% better ...
REPLAN_PROB = 0.75  # ... with posterior probability >= 0.75 (both set on the tuning world, seed 31)
MARKET_MOVED = 0.05  # re-plan when the learned price spread moves by 5% (or the logged win rate by 2.5 points)
REFIT_ESS = 0.25  # refit due when the effective sample size falls below this share of the draws
OUTAGE_P = 1e-3  # a silence this improbable (no conversion reported) is a tracking outage: an alert, ...
OUTAGE_FLOOR = 0.25  # ... judged at a quarter of the usual rate, so a real drop in rates is learned, not alerted
OUTAGE_LOG = -math.log(OUTAGE_P)
EARLIER_DAY = 3600.0  # seconds: a clock further before the pacer's day is another day, not skew (``_hour_of``)
OVERSPEND_STOP = 1.5  # spend beyond 1.5x the curve paced on so far (+5% of budget) stops bidding: spend the
# controller did not place (the re-solving controller's curve passes through the spend at each solve)
CONTROL_STEP = 0.1  # seconds: adjust_bid steps the controller at most this often between records
AUCTION_TIMEOUT = 0.5  # seconds a placed bid holds budget unless its outcome is recorded (plan option)
MAX_AUCTION_TIMEOUT = 120.0  # a won bid recorded after its timeout doubles the timeout, up to this
EXPIRY_BATCH = 0.01  # seconds: bids expire once the oldest in flight is this far past its timeout, a batch at a
# time (at thousands of bids a second, one at every bid would cost more than the bid); they hold room meanwhile
DELAY_BIN = 300.0  # seconds: today's clicks are counted in 5-minute bins, for the conversion delay
DAY_BINS = 25 * 12  # the longest day (25 hours, daylight saving ending) in bins
FLUSH_EVERY = 0.05  # seconds: the journal's group commit (flush + fsync of every record written since)
SYNC_EVERY = 5.0  # seconds between a fleet process's syncs with its ledger (and whenever its lease runs short)
LEASE_SECONDS = 60.0  # a lease covers the bids held and this long of what the process recently committed
STORE_RETRY, MAX_STORE_RETRY = 1.0, 8.0  # seconds to the next attempt to reach an unreachable ledger, doubling
PLAN_OPTIONS = {"max_share": PACER_MAX_SHARE, "max_per_hour": None, "tolerance": 0.95, "sigma": PRICE_SIGMA,
                "win_rate": LOGGED_WIN_RATE, "bid_cap_share": BID_CAP_SHARE, "learn": True,
                "auction_timeout": AUCTION_TIMEOUT, "controller": "resolve", "conversion_delay": None}
INF = math.inf


def check_plan_options(options: dict) -> dict:
    """The pacer's plan options over their defaults (``PLAN_OPTIONS``); unknown names are a ``TypeError``,
    values out of range a ``ValueError`` naming the option."""
    unknown = sorted(set(options) - set(PLAN_OPTIONS))
    if unknown:
        raise TypeError(f"unknown pacer option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                        f"(known: {', '.join(PLAN_OPTIONS)})")
    out = {**PLAN_OPTIONS, **options}
    ranges = {"max_share": (0, 1, True), "tolerance": (0, 1, True), "win_rate": (0, 1, False),
              "bid_cap_share": (0, 1, True), "sigma": (0, INF, False), "max_per_hour": (0, INF, False),
              "auction_timeout": (0, MAX_AUCTION_TIMEOUT, True)}
    for name, (lo, hi, closed) in ranges.items():
        v = out[name]
        if name == "max_per_hour" and v is None:
            continue
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and lo < v and (v <= hi if closed else v < hi)
        if not ok:
            raise ValueError(f"pacer option {name} must be a number in ({lo:g}, {hi:g}{']' if closed else ')'}, "
                             f"got {v!r}")
    if not isinstance(out["learn"], bool):
        raise ValueError(f"pacer option learn must be True or False, got {out['learn']!r}")
    delay = out["conversion_delay"]
    if delay is not None:
        try:
            sample = np.sort(np.asarray(delay, dtype=np.float64).ravel())
        except (TypeError, ValueError):
            sample = np.array([np.nan])
        if not (0 < sample.size <= 1_000_000 and np.all(np.isfinite(sample)) and sample[0] >= 0):
            raise ValueError("pacer option conversion_delay must be None or a sample of delays in seconds "
                             "(finite numbers >= 0, at most 1,000,000)")
        out["conversion_delay"] = sample
    if out["controller"] not in CONTROLLERS:
        raise ValueError(f"pacer option controller must be one of {', '.join(CONTROLLERS)}, "
                         f"got {out['controller']!r}")
    return out
