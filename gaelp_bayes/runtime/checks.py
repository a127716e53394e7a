"""Every number the pacer takes, checked where it enters: bids, costs, counts and instants."""

from __future__ import annotations

import datetime as dt
import math
import numbers
import reprlib
import time
from decimal import Decimal

import numpy as np

from ..market import MAX_AMOUNT
from .options import INF

EARLIEST, LATEST = 946_684_800.0, 7_258_118_400.0  # plausible instants: 2000-01-01 to 2200-01-01 UTC (epoch s)


def as_real(value) -> float:
    """``value`` as a float if it is a real number (int, float, a numpy number, Decimal; not a bool or a
    string), else NaN; one past float's range is infinite (so every check for a finite number refuses it)."""
    if value.__class__ is float:
        return value
    if not isinstance(value, (numbers.Real, Decimal)) or isinstance(value, (bool, np.bool_)):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return INF if value > 0 else -INF
    except ValueError:  # a signalling Decimal NaN
        return math.nan


def _epoch(now) -> float:
    """Seconds since the epoch of ``now`` (None: the wall clock; a number; a datetime, naive = UTC; a numpy
    datetime64, NaT = NaN)."""
    if now is None:
        return time.time()
    if now.__class__ is float:
        return now
    if isinstance(now, dt.datetime):  # before the numbers' check, which costs a datetime clock 0.2 us a bid
        return (now if now.tzinfo else now.replace(tzinfo=dt.timezone.utc)).timestamp()
    if isinstance(now, (numbers.Real, Decimal)) and not isinstance(now, (bool, np.bool_)):
        return as_real(now)
    if isinstance(now, np.datetime64):
        return math.nan if np.isnat(now) else float(now.astype("datetime64[us]").astype(np.int64)) / 1e6
    raise ValueError(f"now must be None, seconds since the epoch or a datetime, got {now!r}")


def check_instant(now, name: str = "now") -> float:
    """``now`` as seconds since the epoch, or ``ValueError`` if it is not a plausible instant
    (finite, between ``EARLIEST`` and ``LATEST``: milliseconds passed as seconds land far beyond)."""
    t = _epoch(now)
    if not EARLIEST <= t < LATEST:
        raise ValueError(f"{name} must be an instant between 2000 and 2200 (seconds since the epoch or a "
                         f"datetime), got {now!r}")
    return t


def check_cost(cost) -> float:
    """A cost (``record``'s, a journal line's): a number >= 0 and at most ``MAX_AMOUNT``, else ``ValueError``."""
    value = as_real(cost)
    if not 0 <= value <= MAX_AMOUNT:  # (False for NaN)
        raise ValueError(f"cost must be a number >= 0 and at most {MAX_AMOUNT:.0e}, got {reprlib.repr(cost)}")
    return value


def check_count(name: str, value) -> int:
    """A count (``record``'s clicks and conversions): a whole number >= 0 and at most ``MAX_AMOUNT`` (bools
    count as 0/1), else ``ValueError``."""
    if value.__class__ is int and 0 <= value <= MAX_AMOUNT:
        return value
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        n = None
    if n is None or n != value or not 0 <= n <= MAX_AMOUNT:
        raise ValueError(f"{name} must be a whole number >= 0 and at most {MAX_AMOUNT:.0e}, got {reprlib.repr(value)}")
    return n
