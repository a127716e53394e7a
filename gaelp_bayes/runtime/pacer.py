"""The pacer: plans the day on the posterior, shapes every bid, learns from every outcome."""

from __future__ import annotations

import bisect
import datetime as dt
import json
import math
import os
import reprlib
import threading
import time
from collections import deque
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from .. import cache
from ..errors import CacheError, GaelpError
from ..market import (MAX_AMOUNT, MarketBelief, auction_response, conversions_at_spend, hour_cap, threshold_plan,
                      threshold_scores)
from .checks import EARLIEST, LATEST, _epoch, as_real, check_cost, check_count, check_instant
from .controllers import CONTROLLERS, L_MAX, L_MIN, ResolvingController
from .journal import _journal_record, chain_next, chained, journal_file_name, unchained
from .lock import PacerLock
from .options import (CHECK_EVERY, CONTROL_STEP, DAY_BINS, DELAY_BIN, EARLIER_DAY, EXPIRY_BATCH, FLUSH_EVERY,
                      HOUR_SLACK, INF, LEASE_SECONDS, MARKET_MOVED, MAX_AUCTION_TIMEOUT, MAX_STORE_RETRY, OUTAGE_FLOOR,
                      OUTAGE_LOG, OVERSPEND_STOP, REFIT_ESS, REPLAN_GAIN, REPLAN_PROB, STORE_RETRY, SYNC_EVERY,
                      check_plan_options)
from .posterior import PACER_PARTS, CampaignPosterior, today_deviation

_clock = time.time  # the wall clock, bound once: adjust_bid reads it per bid


def _placed_by(times: list[float], limit: float, start: int, end: int) -> int:
    """The first position from ``start`` (before ``end``) whose time is after ``limit``: ``times`` is in
    placement order, which is time order (a bisection) but for a clock gone back, where a later time stops
    the count just as it would walking from ``start``."""
    if start == end or times[start] > limit:
        return start
    start += 1  # most calls move a bid or a few (the full path expires at every bid): walk first
    if start == end or times[start] > limit:
        return start
    walk = min(end, start + 8)
    while start < walk and times[start] <= limit:
        start += 1
    if start < walk or start == end:
        return start
    at = bisect.bisect_right(times, limit, start, end)
    if at == start or max(times[start:at]) <= limit:  # what the bisection skipped is in order too
        return at
    while times[start] <= limit:
        start += 1
    return start


class Pacer:
    """Per-bid pacing on cached posterior draws (see the module doc)."""

    def __init__(self, posterior: CampaignPosterior, daily_budget: float, timezone: str = "UTC",
                 journal: str | Path | None = None, now=None, plan_options: dict | None = None,
                 stop_reason: str | None = None, warnings: list[str] | None = None, durable: bool = False,
                 ledger: str | None = None):
        if not 0 < as_real(daily_budget) <= MAX_AMOUNT:
            raise ValueError(f"daily_budget must be a number > 0 and at most {MAX_AMOUNT:.0e}, "
                             f"got {reprlib.repr(daily_budget)}")
        if ledger is not None and journal is not None:
            raise ValueError("a pacer with a ledger keeps its journal there: pass journal or ledger, not both")
        self.posterior = posterior
        self.budget = as_real(daily_budget)
        self.tz = ZoneInfo(timezone)
        self.journal_dir = Path(journal) if journal else None
        self.durable = durable
        self.plan_options = check_plan_options(plan_options or {})
        self._bid_cap = float(self.plan_options["bid_cap_share"])
        # the most one hour may be planned (the plan's and the re-solving controller's bound alike)
        self._hour_cap = hour_cap(self.budget, self.plan_options["max_share"], self.plan_options["max_per_hour"])
        self.warnings = list(warnings or [])
        self._fixed_stop = stop_reason
        self.journal_error: str | None = None  # why the day's journal could not be read or written, if so
        self._lock = PacerLock()
        self._mean_cvr = posterior.cvr.astype(np.float64).mean(axis=0)  # [7, 24]
        self._log_cvr = np.log(np.clip(posterior.cvr.astype(np.float64), 1e-12, 1.0))
        self._log_ncvr = np.log1p(-np.clip(posterior.cvr.astype(np.float64), 0.0, 1 - 1e-12))
        self._journal = None
        self._dirty = False  # records written since the last group commit
        self._flusher: threading.Thread | None = None
        self._closed = threading.Event()
        # Bids placed, in placement order, as two parallel lists of floats (time placed, amount): floats
        # append and slice at C speed where a tuple per bid would not.  Positions before ``_first_held`` are
        # done (recorded or lost); ``_first_held`` to ``_first_out`` expired but still hold the budget
        # (``_late_sum``); from ``_first_out`` on they are in flight (``_out_sum``) until their outcome is
        # recorded or ``auction_timeout`` passes (``_expire``).  A recorded bid's amount becomes 0.0.  They
        # carry over midnight: a bid placed at 23:59:59.9 holds tomorrow's room.
        self._bid_t: list[float] = []
        self._bid_b: list[float] = []
        self._push_t, self._push_b = self._bid_t.append, self._bid_b.append
        self._first_held = self._first_out = 0
        self._bid_offset = 0  # bids dropped from the lists' front (``_expire``): a position plus this is a bid's number
        # The scale of each bid's reference price (the raw bid x the hour's relative cost, which the market
        # belief compares prices with, per unit of the amount), in runs: from bid number ``_scale_from[i]`` on,
        # ``_scales[i]``.  A quick window's bids share one run, so its bids push nothing (``_set_scale``).
        self._scale_from: list[int] = [0]
        self._scales: list[float] = [1.0]
        # A batch (``adjust_bids``) is one entry in the lists, its amount the sum of the batch's bids; the bids
        # themselves are an array here, by the entry's number (with their scale: one, or one per bid), until
        # the entry is done.  Its settled bids are 0.0 there too.
        self._batches: dict[int, tuple[np.ndarray, float | np.ndarray]] = {}
        self._bid_ids: dict = {}  # bid id -> the bid's number, for the bids placed with an id and still held
        self._id_order: deque[tuple[int, object]] = deque()  # (number, id) in placement order, to forget them
        self._sync_mark = 0  # with a ledger: the number of the first bid placed since the last sync
        self._out_sum = 0.0
        self._late_sum = 0.0
        self._timeout = float(self.plan_options["auction_timeout"])
        self._late_wins = 0
        # the market as learned from this pacer's own auctions; the plan options' spread and win rate are
        # its priors (kept across days: the market does not start over at midnight)
        self._market = MarketBelief(self.plan_options["sigma"], self.plan_options["win_rate"])
        self._ledger = None  # the fleet's shared ledger (``ledger.py``), if any
        self._fleet = None  # what its last sync said (``ledger.Fleet``)
        if ledger is not None:
            from ..ledger import Ledger  # only here: the runtime itself is numpy + stdlib

            self._ledger = Ledger(ledger, posterior.name)
        self._rate = None  # what this process recently committed per second (sizes its leases; None: the plan's)
        self._store_retry = STORE_RETRY  # the wait before the next attempt while the ledger is unreachable
        self.date = None
        self._start_day(check_instant(now))

    # ----- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, daily_budget: float = 100.0, campaign: str | None = None,
             timezone: str | None = None, journal: str | Path | None = None, now=None, strict: bool = False,
             force: bool = False, max_cache_age_days: float = 30.0, durable: bool = False,
             ledger: str | None = None, **plan_options) -> "Pacer":
        """A pacer on a model cache.  An invalid or stale cache, one whose conversion, volume or cost part
        failed its diagnostics gate, or a journal that cannot be read completely, gives a stopped pacer
        (bids 0.0, ``status()`` says why) unless ``strict``, which raises instead, and then also for any
        other failed part.  Unknown or out-of-range options are errors either way.  A cache fitted on censored
        windows carries its conversion delay, the default ``conversion_delay``.  ``ledger``: a URL
        (``redis://HOST:PORT/DB`` or ``sqlite:////absolute/path/ledger.db``) whose campaign-day this pacer shares with
        every process pacing the same campaign (the journal then lives there too; see ``ledger.py``)."""
        check_plan_options(plan_options)
        if campaign is not None and not isinstance(campaign, str):
            raise ValueError(f"campaign must be a campaign's name (a string) or None, got {campaign!r}")
        path = Path(path)
        if ledger is None:
            journal = journal or path.parent / f"{path.name}.journal"
        try:
            manifest, arrays = cache.read_runtime(path, campaigns=[campaign])
            arrays, notes = cache.usable_arrays(manifest, arrays, path, PACER_PARTS, force, strict)
            posterior, warnings = CampaignPosterior.from_cache(arrays, manifest, campaign, when=_epoch(now))
            warnings += notes
            try:  # the cache's age on the pacer's day (a replay's day, or today) from the data's end
                day = time.time() if now is None else _epoch(now)
                age = (day - dt.datetime.fromisoformat(manifest["period"][1]).timestamp()) / 86400
                zone = timezone or manifest["timezone"]
                ZoneInfo(zone)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise CacheError(f"{path}: invalid manifest ({type(exc).__name__}: {exc}); refit") from None
            stop = None
            if age > max_cache_age_days:
                stop = (f"stale cache: its data ends {age:.0f} days before this day (limit {max_cache_age_days:g}); "
                        "refit on recent data")
                if strict:
                    raise GaelpError(f"{path}: {stop}")
        except GaelpError as exc:
            if strict:
                raise
            return cls._stopped(str(exc), daily_budget, timezone or "UTC", now, journal if campaign else None,
                                campaign or "(none)", ledger if campaign else None)
        if "conversion_delay" not in plan_options and manifest.get("conversion_delay") is not None:
            plan_options["conversion_delay"] = manifest["conversion_delay"]  # the fit's, from event logs
        pacer = cls(posterior, daily_budget, zone, journal, now, plan_options, stop_reason=stop, warnings=warnings,
                    durable=durable, ledger=ledger)
        if strict and pacer.journal_error:
            pacer.close()
            raise GaelpError(pacer.journal_error)
        return pacer

    @classmethod
    def _stopped(cls, reason: str, daily_budget: float, timezone: str, now, journal: str | Path | None = None,
                 campaign: str = "(none)", ledger: str | None = None) -> "Pacer":
        """A pacer that bids nothing and says why; outcomes recorded to it still reach the campaign's journal
        (or ledger), so a later pacer on a good cache knows the day's spend."""
        flat = np.full((1, 7, 24), 0.01, np.float32)
        dummy = CampaignPosterior(campaign, flat, np.ones_like(flat), np.ones_like(flat))
        return cls(dummy, daily_budget, timezone, journal, now, stop_reason=reason, ledger=ledger)

    # ----- day state ---------------------------------------------------------------------------
    def _start_day(self, t: float) -> None:
        if self._ledger is not None and self.date is not None:  # the day that ends: report it, return its lease
            self._sync(t, closing=True)
        local = dt.datetime.fromtimestamp(t, self.tz)
        self.date = local.date()
        midnight = dt.datetime.combine(self.date, dt.time(0), self.tz)
        self._starts = [midnight.replace(hour=h).timestamp() for h in range(24)]
        self._starts.append(dt.datetime.combine(self.date + dt.timedelta(days=1), dt.time(0), self.tz).timestamp())
        self._dow = self.date.weekday()
        self._spent = 0.0
        self._clicks = np.zeros(24)
        self._conversions = np.zeros(24)
        self._click_bins = np.zeros(DAY_BINS)  # today's clicks per 5-minute bin
        mids = [self._starts[0] + DELAY_BIN * (b + 0.5) for b in range(DAY_BINS)]
        self._bin_hour = np.array([self._hour_index(m) for m in mids])
        self._bin_mid = np.array(mids)
        self._silent_bins = np.zeros(DAY_BINS)  # clicks per bin since the last reported conversion
        self._silent_expected = 0.0  # the conversions the posterior expects of them (all reported)
        self._outage_recheck = (0.0, -math.inf)  # (expected, time) before which the delay need not be rechecked
        self._unreported = np.zeros(24)  # clicks during tracking outages: left out of learning
        self._outage: float | None = None  # when the current tracking outage was detected
        self._weights = None  # importance weights of the draws under today's outcomes (None: uniform)
        self._beliefs = None  # today's posterior means of cvr, cpc and volume, [24] each (``_resolve``; None: due)
        self._today_x = np.zeros(24)  # learned log-rate deviation of today, per hour
        self._today_cov = None  # its Laplace covariance (None: nothing learned yet)
        self._ess = float(self.posterior.cvr.shape[0])
        self._control = CONTROLLERS[self.plan_options["controller"]](t)  # the multiplier's controller, for the day
        self._last_t = -math.inf
        self._records = 0
        self._hour = -1
        self._replans = 0
        self._plan_id: tuple[int, str | None] = (0, None)  # (version, holder) of the plan: 0 = the morning's
        self._plan_news = False  # a re-plan this process made, for the fleet (with a ledger)
        self._stop = self._fixed_stop
        self._flags: dict[str, str] = {}
        self._gap_scale = 24.0 / self.budget
        self._h, self._h_start, self._h_end = -1, math.inf, -math.inf
        self._quick_until, self._quick_cap, self._quick_limit = -INF, 0.0, 0.0  # closed
        self._quick_refusing = -INF
        self._plan(np.ones(24, bool), self.budget, first=True)
        self._open_journal()
        # the budget this process may commit (spend + bids held): all of it alone; with a ledger, the fleet's
        # spend plus this process's lease, as of its last sync (``_sync``)
        self._ceiling = self.budget if self._ledger is None else 0.0
        self._sync_at = self._retry_at = INF  # next periodic sync; no lease top-up before (alone: never)
        if self._ledger is not None:
            self._d_spent, self._d_bins, self._d_conv = 0.0, np.zeros(DAY_BINS), np.zeros(24)  # since the last sync
            self._pending: list[str] = []  # journal lines not yet in the ledger
            self._synced_t = t
            self._adopt_controller = True  # the fleet's controller state, for a process joining the day
            # the market: what this process learned before today, plus the fleet's auctions of today
            self._market_before = self._market_synced = self._market.statistics()
            self._sync(t)

    def _today(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Today's draws of cvr, cpc and volume, [draw, 24]: resampled by the importance weights, and the
        rates times a draw of today's learned deviation."""
        p, d = self.posterior, self._dow
        idx = self._resampled()
        sel = slice(None) if idx is None else idx
        cvr = p.cvr[sel, d].astype(np.float64)
        if self._today_cov is not None:  # one draw of today's deviation per posterior draw
            rng = np.random.default_rng(self._records)
            x = self._today_x + rng.standard_normal((len(cvr), 24)) @ np.linalg.cholesky(self._today_cov).T
            cvr = np.minimum(cvr * np.exp(x), 1.0)
        return cvr, p.cpc[sel, d].astype(np.float64), p.volume[sel, d].astype(np.float64)

    def _market_now(self) -> tuple[float, float]:
        """The market to plan for (price spread, logged win rate): as learned so far (the priors before any
        auction), or the priors with ``learn=False``."""
        return self._market.estimate() if self.plan_options["learn"] else self._market.prior

    def _resampled(self) -> np.ndarray | None:
        """Systematic resample of draw indices by the importance weights (None: weights are uniform)."""
        if self._weights is None:
            return None
        n = len(self._weights)
        positions = (np.arange(n) + 0.5) / n
        return np.minimum(np.searchsorted(np.cumsum(self._weights), positions), n - 1)

    def _threshold(self, open_hours: np.ndarray, budget: float,
                   market: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """Bid factors and expected spend per hour for ``budget`` over the open hours (today's posterior,
        ``market``: price spread and logged win rate)."""
        cvr, cpc, vol = self._today()
        return threshold_plan(cvr.mean(0), cpc.mean(0), vol.mean(0), budget, self._hour_cap, open_hours, *market,
                              logged_win_rate=self._market.prior[1])

    def _plan(self, open_hours: np.ndarray, budget: float, first: bool = False, scored: bool = True) -> None:
        """Plan ``budget`` over the open hours (``scored``: and its confidence, a few tens of milliseconds:
        ``set_budget`` keeps the day's instead, as it runs inside a bid)."""
        self._plan_market = self._market_now()  # the market the plan was made for
        log_k, spend = self._threshold(open_hours, budget, self._plan_market)
        self._log_k = log_k
        self._alloc = [float(s) for s in spend]
        self._k = [float(k) for k in np.exp(log_k)]
        cvr, cpc, vol = self._today()
        if scored or first:
            scores = threshold_scores(log_k, cvr, cpc, vol, self.plan_options["tolerance"], *self._plan_market,
                                      logged_win_rate=self._market.prior[1])
            self._confidence = scores["confidence"]
        self._plan_warnings = []
        if sum(self._alloc) < 0.99 * budget:
            self._plan_warnings.append(f"the hours can absorb about {sum(self._alloc):.2f} of {budget:.2f}")
        if first:  # even pacing valued under the same auction response
            even = conversions_at_spend(np.full(24, self.budget / 24), cvr, cpc, vol, *self._plan_market,
                                        logged_win_rate=self._market.prior[1])
            self._p_beats_even = float(np.mean(scores["expected_conversions"] > even))
            log_cpc = np.log(np.maximum(cpc.mean(0), 1e-12))
            self._reference = [float(r) for r in np.exp(log_cpc - log_cpc.mean())]  # the hours' relative cost
        self._refresh_curve()

    def _refresh_curve(self) -> None:
        """Cumulative planned spend from the allocation of a new plan."""
        self._m_until = -INF  # a new plan: the next bid steps the controller
        self._control.new_plan()
        self._cum = [0.0]
        for a in self._alloc:
            self._cum.append(self._cum[-1] + a)
        # the plan as made, which ``_resolve`` does not move (``_alloc`` and ``_cum`` are the curve paced on):
        # what re-plans start from and the overspend stop compares with, alike live and replayed on restart
        self._plan_alloc, self._plan_cum = self._alloc[:], self._cum[:]

    # ----- journal -------------------------------------------------------------------------------
    def _open_journal(self) -> None:
        """Replay today's journal (if any) into the ledger and open it for appending.  A line that cannot be
        read stops the pacer (the day's spend would come back short); every readable line still counts."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self.journal_error = None
        if self.journal_dir is None:
            return
        path = self.journal_dir / journal_file_name(self.posterior.name, self.date)
        self._chain = ""
        try:
            self.journal_dir.mkdir(parents=True, exist_ok=True)
            raw = path.read_bytes() if path.exists() else b""
            lines = raw.split(b"\n")
            torn = lines.pop()  # b"" after a complete last line; else a crash in mid-write
            torn_is_record = bool(torn) and _journal_record(torn)[0] is not None
            if torn and not torn_is_record and torn.startswith(b'{"t": ') and b"\0" not in torn:
                with open(path, "r+b") as f:  # drop it, so the next record starts a line of its own
                    f.truncate(len(raw) - len(torn))
                self.warnings.append(f"journal {path}: dropped an incomplete last line ({len(torn)} bytes, a "
                                     "crash in mid-write)")
            elif torn:  # a whole record whose newline was not written (it counts, and gets its newline); or
                lines.append(torn)  # no line at all (NUL bytes): not a record, so it stops the pacer below
                if torn_is_record:
                    with open(path, "ab") as f:
                        f.write(b"\n")
            chained_yet = False
            for number, line in enumerate(lines, 1):
                body, checksum = unchained(line)
                entry, why, state, market = _journal_record(body)
                if number == 1 and entry is None and market is not None:  # the day's market: today's plan used it
                    if self._market.restore(market):
                        self._plan(np.ones(24, bool), self.budget, first=True)
                    continue
                if entry is not None and not self._starts[0] <= entry[0] < self._starts[24] + 3600:
                    entry, why = None, (f"its time {entry[0]!r} is not in the journal's day ({self.date}); a record "
                                        "edited or moved")
                if entry is not None and (checksum is not None or chained_yet):
                    expected = chain_next(self._chain, body)
                    if checksum != expected:
                        entry, why = None, ("its checksum does not follow the line before: this line or one before "
                                            "it was edited, or a line is missing")
                    chained_yet, self._chain = True, expected
                if entry is None:
                    self.journal_error = self.journal_error or (
                        f"journal {path}: line {number} is not a record ({why}); the day's spend cannot be "
                        "restored completely, so bidding stops (repair or remove the line, then reload)")
                    continue
                self._apply(*entry)
                if state is not None:
                    self._control.L, self._control.t_int = state
                if market is not None:  # an invalid one is ignored: the market is learned again
                    self._market.restore(market)
                self._review(self._last_t, self._hour_of(self._last_t))
            self._journal = open(path, "ab")  # binary: its writes and the group commit's flushes are thread-safe
            if not lines and self._market.auctions:  # a new day's plan used what earlier days learned
                self._journal.write(f'{{"market": {json.dumps(self._market.state())}}}\n'.encode())
        except OSError as exc:
            self.journal_error = f"journal {path}: cannot be read or opened ({exc.strerror or exc}); bidding stops"
        if self.journal_error:  # named first, even when the replay stopped for another reason before it
            self._stop = self.journal_error + (f" (also: {self._stop})" if self._stop else "")

    # ----- fleet ---------------------------------------------------------------------------------
    def _sync(self, t: float, need: float = 0.0, closing: bool = False) -> None:
        """One atomic update of the campaign-day in the ledger: report the spend, clicks, conversions and
        journal lines booked since the last sync, the market statistics learned since and a re-plan made
        since; take the fleet's spend, outcomes, market and plan (every process learns from the whole fleet's
        day and paces on one plan) and a lease of what this process wants: its bids held, ``need`` and
        ``LEASE_SECONDS`` of what it recently committed (``closing``, or a stopped pacer: its bids held only,
        the rest returned).  Periodic every ``SYNC_EVERY`` seconds, and when the lease is short.  An unreachable
        store leaves the lease as it was (spent down, then bids 0.0), flags why and is tried again after
        ``STORE_RETRY`` seconds, doubling up to ``MAX_STORE_RETRY`` while it lasts (each attempt at a store
        that hangs holds bids back up to ``ledger.SOCKET_TIMEOUT``)."""
        from ..ledger import LedgerUnavailable, Sync

        held = self._out_sum + self._late_sum
        h = self._hour_index(t)
        rate = self._alloc[h] / 3600.0 if self._rate is None else self._rate  # before any: the plan's own rate
        request = Sync(self._ledger.holder, t, self.budget, self._d_spent,
                       {int(b): float(self._d_bins[b]) for b in np.flatnonzero(self._d_bins)},
                       {int(k): float(self._d_conv[k]) for k in np.flatnonzero(self._d_conv)},
                       held if closing or self._stop else held + need + LEASE_SECONDS * rate,
                       (self._control.L, self._control.t_int),
                       (self._market.statistics() - self._market_synced).tolist(),
                       self._plan_state() if self._plan_news else None, self._pending)
        try:
            fleet = self._ledger.sync(self.date.isoformat(), request)
        except LedgerUnavailable as exc:  # try again later, less often the longer it lasts
            self._sync_at = self._retry_at = t + self._store_retry
            self._store_retry = min(2 * self._store_retry, MAX_STORE_RETRY)
            if "ledger_unreachable" not in self._flags:
                since = dt.datetime.fromtimestamp(t, self.tz).isoformat(timespec="seconds")
                self._flags["ledger_unreachable"] = (
                    f"since {since}: {exc}; bidding on what is left of this process's lease "
                    f"({self._lease_left():.2f}), then 0.0 until the ledger answers")
            return
        except ValueError as exc:  # another budget for this campaign-day: this pacer must not spend it
            self._stop = self._stop or f"ledger {self._ledger.url}: {exc}"
            return
        self._flags.pop("ledger_unreachable", None)
        self._store_retry = STORE_RETRY
        elapsed = t - self._synced_t
        if elapsed > 0:  # the own commit rate, smoothed over about LEASE_SECONDS
            w = 1.0 if self._rate is None else min(elapsed / LEASE_SECONDS, 1.0)
            self._rate = (1 - w) * (self._rate or 0.0) + w * self._committed_since_sync() / elapsed
        self._synced_t = t
        self._sync_mark = self._bid_offset + len(self._bid_b)
        self._spent = fleet.spent
        self._ceiling = fleet.spent + fleet.lease
        self._click_bins = np.zeros(DAY_BINS)
        self._click_bins[:len(fleet.clicks)] = fleet.clicks
        self._clicks = self._hourly(self._click_bins)
        self._conversions = np.array(fleet.conversions)
        if self._adopt_controller and fleet.controller is not None:  # joining a day the fleet has paced
            self._control.L, self._control.t_int = min(max(fleet.controller[0], L_MIN), L_MAX), fleet.controller[1]
        self._adopt_controller = False
        if fleet.market is not None:
            self._market.set_statistics(self._market_before + np.asarray(fleet.market))
        self._market_synced = self._market.statistics()
        self._plan_news = False
        if fleet.plan is not None and (fleet.plan["version"], fleet.plan["holder"]) != self._plan_id:
            self._adopt_plan(fleet.plan)  # another holder's newer plan: the fleet paces on one curve
        self._d_spent, self._d_bins[:], self._d_conv[:] = 0.0, 0.0, 0.0
        self._pending = []
        self._fleet = fleet
        self._sync_at = t + SYNC_EVERY
        # a lease short of what was asked (the budget is spent or leased): no top-up before the next sync
        self._retry_at = self._sync_at if fleet.lease < request.want - 1e-9 else -INF
        self._m_until = -INF

    def _committed_since_sync(self) -> float:
        """What this process committed since its last sync: the spend booked and the bids placed and still
        held or lost (a settled bid's amount is 0.0; a won one's cost is in the spend).  Bids hold the lease
        until they are settled or lost, up to ``MAX_AUCTION_TIMEOUT``: with no outcomes recorded at all (no
        loss notices, no wins yet) spend alone would size a lease that the next bid outgrows, and every bid
        would sync."""
        start = max(self._sync_mark - self._bid_offset, 0)
        return self._d_spent + math.fsum(self._bid_b[start:])

    def _plan_state(self) -> dict:
        """This process's plan, for the ledger."""
        return {"version": self._plan_id[0], "holder": self._plan_id[1], "log_k": [float(k) for k in self._log_k],
                "alloc": self._plan_alloc, "market": list(self._plan_market)}

    def _adopt_plan(self, plan: dict) -> None:
        """Pace on the fleet's plan (``_plan_state`` of the holder that made it)."""
        self._plan_id = (plan["version"], plan["holder"])
        self._log_k = np.array(plan["log_k"], np.float64)
        self._k = [float(k) for k in np.exp(self._log_k)]
        self._alloc = [float(a) for a in plan["alloc"]]
        self._plan_market = tuple(plan["market"])
        self._refresh_curve()

    def _lease_left(self) -> float:
        """What this process may still commit to bids (alone: the budget left after spend and bids held);
        ``adjust_bid`` and ``adjust_bids`` compute it inline, unclamped."""
        return max(self._ceiling - self._spent - self._out_sum - self._late_sum, 0.0)

    def _fleet_status(self) -> dict | None:
        """The ledger's part of ``status()`` (None alone)."""
        if self._ledger is None:
            return None
        fleet = self._fleet
        return {"url": self._ledger.url, "holder": self._ledger.holder,
                "lease_left": round(self._lease_left(), 6),
                "holders": fleet.holders if fleet else None, "fleet_leased": fleet.leased if fleet else None,
                "store_operations": self._ledger.operations, "fleet_syncs": fleet.syncs if fleet else None,
                "unreachable": self._flags.get("ledger_unreachable")}

    # ----- hot path ------------------------------------------------------------------------------
    def _hour_of(self, t: float) -> int:
        """Hour of today for ``t``; a later day starts a new day.  An earlier instant counts as today's first
        hour (days roll forward only: a clock going back must not bring yesterday's budget back), unless it
        is more than ``EARLIER_DAY`` before today and nothing has happened today (no record, no bid held):
        then it is the day a replay is pacing (a pacer loaded without ``now``, on the wall clock, then given
        the replayed times), and the pacer's day becomes that one, planned afresh, said in ``status()``."""
        if t >= self._starts[24]:
            self._start_day(t)
        if t < self._starts[0]:
            if t < self._starts[0] - EARLIER_DAY and self._records == 0 and self._spent == 0 and not self._out_sum:
                was = self.date
                self._start_day(t)
                self.warnings.append(f"the pacer's day moved from {was} to {self.date}: its first call's clock "
                                     "was that day's (a replay: pass its clock to Pacer.load(now=...))")
                return bisect.bisect_right(self._starts, t) - 1
            return 0
        return bisect.bisect_right(self._starts, t) - 1

    def _instant(self, now) -> float:
        """``now`` for a call that only reads the state: a plausible instant, never before today."""
        return max(check_instant(now), self._starts[0])

    def _multiplier(self, t: float, h: int) -> float:
        """The budget multiplier at ``t`` (in hour ``h``), by the day's controller (``controllers.py``)."""
        return self._control.multiplier(self, t, h)

    def adjust_bid(self, bid: float, now=None, bid_id=None) -> float:
        """The bid to place for an opportunity whose raw bid is ``bid``; 0.0 means do not bid.

        The placed bid holds budget until ``record`` reports its outcome (``bid_id``: any hashable value
        the caller passes again to ``record``, to settle exactly this bid) or ``auction_timeout`` seconds
        pass: an exchange that reports only won auctions needs no loss notices.  A ``bid`` that is not a
        finite number > 0, or a ``now`` that is not a plausible instant, places nothing.
        """
        lock = self._lock
        try:  # not ``with``: its enter and exit calls cost more than half a placed bid
            lock.take()
        except IndexError:  # another thread holds it
            lock.take_waiting()
        try:  # the clock is read inside the lock, so bids and records keep time order
            t = _clock() if now is None else now if now.__class__ is float else _epoch(now)
            if bid.__class__ is not float:
                bid = as_real(bid)  # an int, a numpy number or a Decimal; NaN for anything else (no bid)
            if self._h_start <= t < self._quick_until:  # the quick window (``_open_quick_window``)
                b = bid * self._factor  # NaN, infinities, zero and negatives fail every test below
                if 0.005 <= b <= self._quick_cap and (held := self._out_sum + b) <= self._quick_limit:
                    self._out_sum = held
                    self._push_t(t)
                    self._push_b(b)
                    if bid_id is not None:
                        self._remember(bid_id)
                    return b
                if t < self._quick_refusing and (b < 0.005 or self._quick_limit - self._out_sum < 0.005 - 2e-6) \
                        and not self._expiry_due(t):
                    return 0.0  # below a cent, or the room left is: refused, as in full (no expiry is due)
            lock.owner, lock.depth = threading.get_ident(), 1  # the full path may take the lock again
            try:
                return self._adjust_bid(bid, t, bid_id)
            finally:
                lock.owner, lock.depth = None, 0
        finally:
            lock.put(None)  # ``PacerLock.give``, inline
            if lock.waiting:
                lock.wake()

    def _adjust_bid(self, bid: float, t: float, bid_id) -> float:
        """``adjust_bid`` in full: the hour, the controller's step, expiries, the fleet's sync and every cap."""
        if not 0.0 < bid < INF:  # NaN, infinities, zero and negatives
            return 0.0
        self._quick_until = -INF
        seen = t
        h = self._h
        if not self._h_start <= t < self._h_end:  # also NaN: every comparison with it is False
            if not EARLIEST <= t < LATEST:
                return 0.0
            h = self._locate(t)
            if t < self._h_start:  # a clock behind today: plan at today's start, age bids by the clock
                t = self._h_start
        if self._stop:
            return 0.0
        if self._expiry_due(seen):
            self._expire(seen)
        spent = self._spent + self._out_sum
        if t < self._m_until:  # the controller steps every CONTROL_STEP (and on every record)
            b = bid * self._factor
        else:
            self._factor = self._k[h] * self._multiplier(t, h)
            self._m_until = t + CONTROL_STEP
            b = bid * self._factor
        room = self._ceiling - spent - self._late_sum
        if t >= self._sync_at or room < b and t >= self._retry_at:  # a fleet process's sync (alone: never):
            self._sync(t, need=b)  # periodic, or its lease is short
            spent = self._spent + self._out_sum
            room = self._ceiling - spent - self._late_sum
        alloc = self._alloc[h]
        cap = self._bid_cap * alloc
        if room < cap:
            cap = room
        hour_room = self._cum[h + 1] + HOUR_SLACK * alloc - spent
        if hour_room < cap:
            cap = hour_room
        if b > cap:
            b = cap
        if b < 0.005:  # below a cent: do not bid
            return 0.0
        self._out_sum += b
        scale = self._reference[h] / self._factor  # the quick window's, where no cap bound (the same bits)
        bid_scale = scale if b == bid * self._factor else bid * self._reference[h] / b
        if bid_scale != self._scales[-1]:  # (else ``_set_scale`` changes nothing)
            self._set_scale(bid_scale)
        self._push_t(seen)
        self._push_b(b)
        if bid_id is not None:
            self._remember(bid_id)
        self._open_quick_window(h, self._out_sum + min(room, hour_room) - b, scale)
        return b

    def _open_quick_window(self, h: int, limit: float, scale: float) -> None:
        """Until the next thing that is due (the hour's end, the controller's step, the fleet's sync), a bid
        that needs no cap is placed by ``adjust_bid``'s first lines alone: the same bid as in full, as long
        as the bids in flight then hold at most ``limit`` (what the caps leave them, less a micro-unit
        against rounding); and until a fleet process's lease could be topped up (alone: the whole window), a
        bid below a cent, or one that less than a cent of room is left for, is refused there when no bid is
        due to expire (an expiry could free room).  Any other call on the pacer closes the window
        (``_quick_until = -INF``): a record, a sync or a stop changes what the caps leave.  Bids that expire
        meanwhile are expired by the next full path (at most ``CONTROL_STEP`` later): until then they hold
        room, so the window places no bid the full path would not (an expiry only frees room), and bids that
        expire one by one at the bid rate do not close it on every bid."""
        self._quick_until = min(self._h_end, self._m_until, self._sync_at)
        self._quick_cap = self._bid_cap * self._alloc[h]
        self._quick_limit = limit - 1e-6
        self._quick_refusing = min(self._quick_until, self._retry_at)
        if scale != self._scales[-1]:  # the reference price per unit of a bid placed as asked: the window's bids'
            self._set_scale(scale)

    def _set_scale(self, scale: float) -> None:
        """The bids placed from now on have reference-price scale ``scale`` (a new run, where it differs)."""
        number = self._bid_offset + len(self._bid_t)
        if self._scale_from[-1] == number:  # no bid placed in the last run: replace it
            self._scales[-1] = scale
            if len(self._scales) > 1 and self._scales[-2] == scale:
                del self._scale_from[-1], self._scales[-1]
        elif self._scales[-1] != scale:
            self._scale_from.append(number)
            self._scales.append(scale)

    def _scales_of(self, start: int, end: int) -> list[float]:
        """The reference-price scales of the bids at positions ``start`` to ``end`` (exclusive)."""
        offset, starts, scales = self._bid_offset, self._scale_from, self._scales
        run = bisect.bisect_right(starts, start + offset) - 1
        out: list[float] = []
        while start < end:
            upto = end if run + 1 == len(starts) else min(end, starts[run + 1] - offset)
            out += [scales[run]] * (upto - start)
            start, run = upto, run + 1
        return out

    def _locate(self, t: float) -> int:
        """Hour of ``t`` (rolling the day over if needed); caches that hour's bounds."""
        h = self._hour_of(t)
        self._h, self._h_start, self._h_end = h, self._starts[h], self._starts[h + 1]
        self._m_until = -INF  # a new hour: its bid factor
        return h

    def _remember(self, bid_id) -> None:
        """The bid just placed was placed with ``bid_id`` (a repeated id names the latest bid placed with it)."""
        number = self._bid_offset + len(self._bid_t) - 1
        self._bid_ids[bid_id] = number
        self._id_order.append((number, bid_id))

    def _expiry_due(self, now: float) -> bool:
        """Whether the oldest bid in flight is ``EXPIRY_BATCH`` past its auction timeout (``_expire``'s turn)."""
        return self._first_out < len(self._bid_t) and self._bid_t[self._first_out] <= now - self._timeout - EXPIRY_BATCH

    def _expire(self, now: float) -> None:
        """Bids placed ``auction_timeout`` or more before ``now`` stop holding the plan's room: their auctions
        are over, and a lost one may never be reported.  Until ``MAX_AUCTION_TIMEOUT`` has passed they still
        hold the budget itself (``_late_sum``), so a win reported late is still covered: money stays safe
        whatever the timeout.  (Placement order is time order but for a clock gone back, whose bids then
        wait for the ones before them: the safe side.)"""
        times, amounts = self._bid_t, self._bid_b
        start = self._first_out
        end = _placed_by(times, now - self._timeout, start, len(times))
        if end > start:  # at one bid per call (the full path at every bid) each step below counts
            moved = amounts[start] if end == start + 1 else math.fsum(amounts[start:end])
            self._out_sum -= moved
            self._late_sum += moved
            self._first_out = end
        start = self._first_held
        if start < self._first_out and times[start] <= now - MAX_AUCTION_TIMEOUT:
            end = _placed_by(times, now - MAX_AUCTION_TIMEOUT, start, self._first_out)
            # never recorded: lost (the exchange sends no loss notices)
            lost, scales = amounts[start:end], self._scales_of(start, end)
            self._late_sum -= math.fsum(lost)
            if self._batches:
                self._batches_lost(start, end, lost)
            if end - start > 64:  # recorded ones (0.0) teach nothing
                lost = np.array(lost)
                self._market.lost_many(lost, lost * np.array(scales))
            else:  # a few (the full path expires at every bid): numpy's per-call cost would dominate
                for b, scale in zip(lost, scales):
                    if b:
                        self._market.lost(b, b * scale)
            self._first_held = end
            if self._id_order or 2 * end >= len(times) >= 8192:
                self._forget_done()
        if self._first_out == len(times) or self._out_sum < 0:
            self._out_sum = math.fsum(amounts[self._first_out:])
        if self._first_held == self._first_out or self._late_sum < 0:
            self._late_sum = math.fsum(amounts[self._first_held:self._first_out])

    def _batches_lost(self, start: int, end: int, lost: list[float]) -> None:
        """The batches among the done bids at positions ``start`` to ``end`` (``lost``, their amounts): learn
        from their bids never recorded, drop them, and leave their entries in ``lost`` as 0.0 (not a bid)."""
        offset, batches = self._bid_offset, self._batches
        done = []
        for number in batches:  # in placement order: every batch before ``start`` is gone already
            if number - offset >= end:
                break
            done.append(number)
        for number in done:
            amounts, scale = batches.pop(number)
            if scale.__class__ is float:  # one scale: every bid of the batch in one bin (settled ones: 0.0)
                self._market.lost(1.0, scale, int(np.count_nonzero(amounts)))
            else:
                with np.errstate(invalid="ignore"):  # a settled bid (0.0) of an absurd raw bid (inf scale): NaN
                    self._market.lost_many(amounts, amounts * scale)  # settled ones teach nothing
            lost[number - offset - start] = 0.0

    def _outstanding(self) -> int:
        """How many bids are in flight (placed, neither recorded nor expired)."""
        in_flight = self._bid_b[self._first_out:]
        count = len(in_flight) - in_flight.count(0.0)
        if self._batches:
            first = self._bid_offset + self._first_out
            for number, (amounts, _) in self._batches.items():
                if number >= first and self._bid_b[number - self._bid_offset]:
                    count += int(np.count_nonzero(amounts)) - 1  # the entry counted above is its bids
        return count

    def _forget_done(self) -> None:
        """Drop the ids of bids that are done, and the done bids themselves once they are most of the lists
        (one move of the rest: amortized, a bid is moved about once)."""
        first = self._bid_offset + self._first_held
        order, ids = self._id_order, self._bid_ids
        while order and order[0][0] < first:
            number, bid_id = order.popleft()
            if ids.get(bid_id) == number:
                del ids[bid_id]
        done = self._first_held
        if done >= 4096 and 2 * done >= len(self._bid_t):
            for values in (self._bid_t, self._bid_b):
                del values[:done]  # in place: the bound ``_push_*`` appends stay valid
            self._bid_offset += done
            runs = bisect.bisect_right(self._scale_from, self._bid_offset) - 1  # the runs wholly done
            del self._scale_from[:runs], self._scales[:runs]
            self._first_held, self._first_out = 0, self._first_out - done

    def _release(self, cost: float, bid_id=None) -> None:
        """Release the bid a record settles: the one placed with ``bid_id``; without an id, the smallest one
        >= ``cost``, outstanding or expired alike (whichever bid the record was for is at least that large,
        so what stays held still covers every bid in flight, whatever order outcomes arrive in; on a tie, one
        still in flight).  A won bid settled among the expired ones (``_expire``) came after its auction
        timeout: it is counted (``status()["late_wins"]``) and doubles the timeout (up to
        ``MAX_AUCTION_TIMEOUT``).  Without ids a record looks through the bids of the last 120 s; at
        thousands of bids a second, pass ids."""
        amounts, first = self._bid_b, self._first_held
        batch = None
        if bid_id is not None:  # (an id names a bid of ``adjust_bid``, never one of a batch)
            number = self._bid_ids.pop(bid_id, None)
            at = -1 if number is None else number - self._bid_offset
            if at < first or not amounts[at]:  # unknown, done, or already settled without its id
                return
        else:
            at, batch = self._smallest_held(cost)
            if at < 0:
                return
        if batch is None:
            b = amounts[at]
            reference = b * self._scales_of(at, at + 1)[0]
            amounts[at] = 0.0
        else:  # a bid of a batch: the batch's entry holds what its other bids still hold
            bids, scale, i = batch
            b = float(bids[i])
            reference = b * float(scale if scale.__class__ is float else scale[i])
            bids[i] = 0.0
            amounts[at] = float(bids.sum())
        if cost > 0:  # a second price: the market's price, below the bid
            self._market.won(cost, reference)
        else:
            self._market.lost(b, reference)
        if at >= self._first_out:
            self._out_sum = self._out_sum - b if self._out_sum >= b else math.fsum(amounts[self._first_out:])
            return
        self._late_sum = self._late_sum - b if self._late_sum >= b else math.fsum(amounts[first:self._first_out])
        if cost > 0:
            self._late_wins += 1
            self._timeout = min(2 * self._timeout, MAX_AUCTION_TIMEOUT)

    def _smallest_held(self, cost: float) -> tuple[int, tuple[np.ndarray, float | np.ndarray, int] | None]:
        """The smallest bid held that is >= ``cost`` (and > 0), for ``_release``: its position in the lists
        (-1: none) and, for a bid of a batch, (the batch's bids, their scale, its index there).  On a tie the
        first one still in flight, else the first one."""
        amounts, first, offset = self._bid_b, self._first_held, self._bid_offset
        held = amounts[first:]
        for number in self._batches:  # a batch's entry is not a bid (every batch here is held)
            held[number - offset - first] = 0.0
        b = min((b for b in held if b >= cost and b > 0.0), default=None)
        best: tuple = (INF, True, -1)  # (bid, expired, position)
        if b is not None:
            try:
                best = (b, False, first + held.index(b, self._first_out - first))
            except ValueError:
                best = (b, True, first + held.index(b))
        found = None
        for number, (bids, scale) in self._batches.items():
            candidates = bids[bids >= cost] if cost > 0 else bids[bids > 0]
            if candidates.size:
                at = number - offset
                key = (float(candidates.min()), at < self._first_out, at)
                if key < best:
                    best, found = key, (bids, scale, int(np.argmax(bids == key[0])))
        return best[2], found

    def adjust_bids(self, bids: np.ndarray, now=None) -> np.ndarray:
        """Vectorised ``adjust_bid`` for a batch of opportunities arriving at the same instant.

        The hard guard holds for the batch as a whole: bids are placed in order
        until the budget room is used (later ones get 0.0).  Bids that are not finite numbers > 0, or a
        ``now`` that is not a plausible instant, place nothing.  The batch's placed bids are held as one
        array (``_batches``), at a few numpy passes per bid; a record without an id can settle any of them.
        """
        try:
            bids = np.asarray(bids, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"bids must be a 1-D array of numbers ({type(exc).__name__}: {exc})") from None
        if bids.ndim != 1:
            raise ValueError(f"bids must be a 1-D array of numbers (for one bid, adjust_bid), got {bids.ndim}-D")
        with self._lock:
            self._quick_until = -INF  # the quick window closes (``_open_quick_window``)
            try:
                seen = check_instant(now)
            except ValueError:
                return np.zeros_like(bids)
            h = self._hour_of(seen)
            t = max(seen, self._starts[0])
            if self._stop:
                return np.zeros_like(bids)
            if self._expiry_due(seen):
                self._expire(seen)
            if t >= self._sync_at:
                self._sync(t)
            factor = self._k[h] * self._multiplier(t, h)
            cap = self._bid_cap * self._alloc[h]
            with np.errstate(over="ignore", invalid="ignore"):  # an absurd raw bid: infinite, then capped
                asked = bids * factor
            capped = None
            if asked.size and asked.min() >= 0.005 and asked.max() <= cap:  # (False with a NaN)
                out = asked  # every bid as asked: the common case, at four passes over the batch
            else:
                out = np.minimum(asked, cap)  # NaN stays NaN
                ok = out >= 0.005  # False for NaN, zero, negatives and bids below a cent
                ok &= bids < INF  # an infinite raw bid places nothing (a finite one that overflows is capped)
                out = np.where(ok, out, 0.0)
                capped = (asked > cap) & ok
            wanted = float(out.sum())
            if self._ceiling - self._late_sum - self._spent - self._out_sum < wanted and t >= self._retry_at:
                self._sync(t, need=wanted)  # a fleet process whose lease is short: top it up
            room = min(self._cum[h + 1] + HOUR_SLACK * self._alloc[h],
                       self._ceiling - self._late_sum) - self._spent - self._out_sum
            n = out.size
            if wanted > room:  # the bids placed: the first n, whose sum fits the room
                total = out.cumsum()
                n = int(total.searchsorted(room, "right"))
                out[n:] = 0.0
                wanted = float(total[n - 1]) if n else 0.0
            if wanted > 0:
                placed = out[:n].copy()  # held apart from the caller's array, which may change it
                scale = self._reference[h] / factor  # a bid placed as asked: ``_adjust_bid``'s scale
                if capped is not None and capped[:n].any():  # where the cap bound: the raw bid's reference
                    bound = capped[:n]  # price per unit of the bid placed
                    with np.errstate(over="ignore"):
                        scale = np.where(bound, bids[:n] * self._reference[h] / np.where(bound, placed, 1.0), scale)
                self._batches[self._bid_offset + len(self._bid_t)] = (placed, scale)
                self._push_t(seen)
                self._push_b(wanted)  # one entry in the lists, holding the batch's sum
                self._out_sum += wanted
            return out

    def multiplier(self, now=None) -> float:
        """The current budget multiplier (times the hour's relative value gives the bid factor); 0.0 when
        the pacer is stopped."""
        with self._lock:
            self._quick_until = -INF  # the quick window closes (``_open_quick_window``)
            t = self._instant(now)
            m = self._multiplier(t, self._hour_of(t))
            return 0.0 if self._stop else m

    # ----- feedback ------------------------------------------------------------------------------
    def record(self, cost: float, clicks: int = 0, conversions: int = 0, now=None, bid_id=None) -> None:
        """Outcome of one placed bid (cost 0.0 when lost; a lost bid need not be recorded at all): updates
        spend, journal and learning.  ``bid_id``: the id the bid was placed with (``adjust_bid``).

        A value that is not a finite cost >= 0, a whole count >= 0 or a plausible instant is a
        ``ValueError`` and changes nothing.  A record dated before the last one (or before today) is
        booked at the ledger's current time: the money was spent, whatever its timestamp says.  The
        journal line is on disk within ``FLUSH_EVERY`` seconds (group commit), or before this returns
        with ``durable=True``.
        """
        cost = check_cost(cost)
        clicks, conversions = check_count("clicks", clicks), check_count("conversions", conversions)
        with self._lock:  # the clock is read inside the lock: records from many threads stay in order
            self._quick_until = -INF  # the quick window closes (``_open_quick_window``)
            t = check_instant(now)
            h = self._hour_of(t)
            t = max(t, self._last_t, self._starts[0])
            self._release(cost, bid_id)
            self._apply(t, cost, clicks, conversions)
            self._journal_line(t, h, f'"cost": {cost!r}, "clicks": {clicks}, "conversions": {conversions}')
            self._review(t, h)
            if t >= self._sync_at:
                self._sync(t)

    def record_conversion(self, click_time, conversions: int = 1, now=None) -> None:
        """Conversions reported after their click (a postback): learning credits the click's hour, where
        the evidence of each hour is weighed by the share of its conversions that can have arrived by now
        (plan option ``conversion_delay``: a sample of delays in seconds; without it, all have).  Touches
        neither spend nor the bids outstanding.  A click before today teaches today nothing (ignored); a
        click after ``now``, or a value that is not valid, is a ``ValueError``."""
        click = check_instant(click_time, "click_time")
        conversions = check_count("conversions", conversions)
        with self._lock:
            self._quick_until = -INF  # the quick window closes (``_open_quick_window``)
            t = check_instant(now)
            if click > t:
                raise ValueError(f"click_time {click_time!r} is after the conversion's report ({now!r})")
            h = self._hour_of(t)
            if click < self._starts[0] or not conversions:
                return
            t = max(t, self._last_t, self._starts[0])
            self._apply(t, 0.0, 0, conversions, click)
            self._journal_line(t, h, f'"cost": 0.0, "clicks": 0, "conversions": {conversions}, "click_t": {click!r}')
            self._review(t, h)
            if t >= self._sync_at:
                self._sync(t)

    def _journal_line(self, t: float, h: int, fields: str) -> None:
        """Append a record's line, with the controller's state after it (a restart resumes the controller,
        not from 1) and, where ``_review`` is about to learn, the market belief.  With a ledger, the line
        goes there with the next sync."""
        if self._journal is None and self._ledger is None:
            return
        market = f', "market": {json.dumps(self._market.state())}' if self._learning_due(h) else ""
        line = f'{{"t": {t!r}, {fields}, "L": {self._control.L!r}, "ti": {self._control.t_int!r}{market}}}'
        if self._ledger is not None:
            self._pending.append(line)
            return
        line, self._chain = chained(line, self._chain)
        try:
            self._journal.write(f"{line}\n".encode())
            if self.durable:
                self._journal.flush()
                os.fsync(self._journal.fileno())
            elif not self._dirty:
                self._dirty = True
                self._commit_soon()
        except OSError as exc:  # counted in memory, but a restart would forget it: stop
            self._journal_failed(exc)

    def _review(self, t: float, h: int) -> None:
        """After each record, live or replayed from the journal (so a restart learns and re-plans at the
        same records): the overspend stop, on the curve the controller paces on (the re-solving controller's
        own, solved here too when due, so a replay compares with what the day live did); learning on hour
        changes and every ``CHECK_EVERY`` records."""
        self._control.review(self, t, h)
        if self._spent > OVERSPEND_STOP * self._cum[h + 1] + 0.05 * self.budget:
            self._stop = self._stop or (f"spend {self._spent:.2f} is far beyond the plan "
                                        f"({self._cum[h + 1]:.2f} by the end of hour {h})")
        if self._learning_due(h):
            self._learn(t, replan=h != self._hour)

    def _learning_due(self, h: int) -> bool:
        """Whether the record just booked (in hour ``h``) is one the pacer learns after: an hour change or
        every ``CHECK_EVERY`` records (its journal line then carries the market belief)."""
        return h != self._hour or self._records % CHECK_EVERY == 0

    def _journal_failed(self, exc: OSError) -> None:
        self.journal_error = f"journal write failed ({exc.strerror or exc}); bidding stops"
        self._stop = self._stop or self.journal_error
        self._quick_until = -INF

    def _commit_soon(self) -> None:
        """Group commit: the journal's records written in the next ``FLUSH_EVERY`` seconds go to disk
        together (flush + fsync), by one thread per pacer, started with the first record."""
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._commit_loop, name=f"journal {self.posterior.name}",
                                             daemon=True)
            self._flusher.start()

    def _commit_loop(self) -> None:
        """Commit every ``FLUSH_EVERY`` seconds while records come; end when none came (or on close).  The
        pacer's lock is taken only to end (so a record cannot be left without a commit): a thread recording
        as fast as it can would otherwise keep the commits waiting for the lock."""
        while not self._closed.wait(FLUSH_EVERY):
            if not self._dirty:
                with self._lock:
                    if not self._dirty:
                        self._flusher = None
                        return
            self._commit()

    def _commit(self) -> None:
        """Flush and fsync the journal's records written so far, without the pacer's lock (the binary file's
        own lock orders its writes and flushes): bids and records go on meanwhile.  A record written while
        this runs is in this commit or marks the next one dirty."""
        journal, self._dirty = self._journal, False
        if journal is None:
            return
        try:
            journal.flush()
            os.fsync(journal.fileno())
        except ValueError:  # closed since (a new day's file, or close()): its close flushed it
            pass
        except OSError as exc:
            with self._lock:
                self._journal_failed(exc)

    def _apply(self, t: float, cost: float, clicks: int, conversions: int, click_t: float | None = None) -> None:
        """Book one record (``click_t``: the conversions are a postback for a click at that time)."""
        h = self._hour_index(t)
        if self._control.integrates:  # bring its state up to now before the spend jumps
            self._multiplier(max(t, self._starts[0]), h)
        self._m_until = -INF  # and the next bid steps the controller with the new spend
        self._spent += cost
        b = min(max(int((t - self._starts[0]) / DELAY_BIN), 0), DAY_BINS - 1)
        hc = h if click_t is None else self._hour_index(click_t)
        self._clicks[h] += clicks
        self._click_bins[b] += clicks
        self._conversions[hc] += conversions
        if self._ledger is not None:  # for the ledger, with the next sync
            self._d_spent += cost
            self._d_bins[b] += clicks
            self._d_conv[hc] += conversions
        if conversions:
            self._silent_bins[:] = 0.0
            self._silent_expected = 0.0
            self._outage_recheck = (0.0, -math.inf)
            if self._outage is not None:  # reports are back: learning from conversions resumes
                self._outage = None
                self._flags.pop("tracking_outage", None)
        elif clicks:
            self._silent_bins[b] += clicks
            self._silent_expected += self._mean_cvr[self._dow, h] * clicks
            if self._outage is not None:
                self._unreported[h] += clicks
            elif OUTAGE_FLOOR * self._silent_expected > OUTAGE_LOG and (
                    self._silent_expected >= self._outage_recheck[0] or t >= self._outage_recheck[1]):
                due = self._silent_due(t)  # with a conversion delay, fewer of them can have been reported yet
                if OUTAGE_FLOOR * due > OUTAGE_LOG:
                    self._tracking_outage(t, due)
                else:  # look again after more clicks or time
                    self._outage_recheck = (self._silent_expected + OUTAGE_LOG / OUTAGE_FLOOR - due, t + DELAY_BIN)
        self._last_t = t
        self._records += 1

    def _learn(self, t: float, replan: bool = True) -> None:
        """Learn today's rates from today's outcomes; flag refits and outages; re-plan the rest of the day
        (on hour changes: a plan is a few milliseconds, a record a few microseconds)."""
        h = self._hour_index(t)
        self._hour = h
        d = self._dow
        if not self._clicks.any():
            return
        conv = self._conversions
        reported = np.where(self._clicks > 0, 1 - self._unreported / np.maximum(self._clicks, 1), 0.0)
        clicks = self._exposure(t) * reported  # clicks whose conversions were reported (and can have been)
        fails = np.maximum(clicks - conv, 0.0)
        logw = self._log_cvr[:, d] @ conv + self._log_ncvr[:, d] @ fails
        w = np.exp(logw - logw.max())
        w /= w.sum()
        self._ess = float(1.0 / np.sum(w ** 2))
        n = len(w)
        if self.plan_options["learn"]:
            self._weights = w
            expected = clicks * (w @ self.posterior.cvr[:, d].astype(np.float64))
            self._today_x, self._today_cov = today_deviation(expected, conv)
            self._beliefs = None
        if n > 1 and self._ess < REFIT_ESS * n:
            self._flags["refit_due"] = (f"importance weights' effective sample size {self._ess:.0f} of {n}: "
                                        "today differs from the fitted posterior; refit soon")
        if replan and h < 23 and not self._stop and self.plan_options["learn"]:
            self._maybe_replan(h)

    def _hour_index(self, t: float) -> int:
        """Hour of today that ``t`` falls in, clamped to today's hours (for booking, not for bidding)."""
        return min(max(bisect.bisect_right(self._starts, t) - 1, 0), 23)

    def _hourly(self, per_bin: np.ndarray) -> np.ndarray:
        """Today's 5-minute bins summed into its 24 hours."""
        return np.bincount(self._bin_hour, per_bin, minlength=24)

    def _arrived(self, elapsed: np.ndarray) -> np.ndarray:
        """Share of conversions reported within ``elapsed`` seconds of their click (the ``conversion_delay``
        sample's distribution; all of them without one)."""
        sample = self.plan_options["conversion_delay"]
        if sample is None:
            return np.ones_like(elapsed)
        return np.searchsorted(sample, elapsed, side="right") / sample.size

    def _exposure(self, t: float) -> np.ndarray:
        """Today's clicks per hour weighted by the share of their conversions that can have been reported by
        ``t``: what the reported conversions are evidence about."""
        if self.plan_options["conversion_delay"] is None:
            return self._clicks.copy()
        arrived = self._arrived(np.maximum(t - self._bin_mid, 0.0))
        return self._hourly(self._click_bins * arrived)

    def _silent_due(self, t: float) -> float:
        """The conversions the posterior expects to have been reported by ``t`` of the clicks since the last
        reported one."""
        if self.plan_options["conversion_delay"] is None:
            return self._silent_expected
        rates = self._mean_cvr[self._dow, self._bin_hour]
        return float(np.sum(self._silent_bins * rates * self._arrived(np.maximum(t - self._bin_mid, 0.0))))

    def _tracking_outage(self, t: float, due: float) -> None:
        """No conversion reported for so long that even a quarter of the usual rate makes the silence
        improbable (P < ``OUTAGE_P``): conversion reports have stopped arriving, not conversions.  An
        alert, not a stop: pacing goes on on the posterior; the silent clicks (those since the last
        conversion, and every click until reports return) are not evidence of a lower rate, so learning
        leaves them out.  A real drop in rates (to a half, say) still reports conversions: it is learned."""
        silent = self._silent_bins.sum()
        since = dt.datetime.fromtimestamp(t, self.tz).isoformat(timespec="seconds")
        self._outage = t
        self._unreported += self._hourly(self._silent_bins)
        self._flags["tracking_outage"] = (
            f"since {since}: no conversion reported over the last {silent:.0f} clicks, where the posterior "
            f"expects {due:.1f} reported by now (P = {math.exp(-OUTAGE_FLOOR * due):.1e} even at a quarter of "
            "that rate); pacing goes on on the posterior, learning from conversions waits for reports to return")

    def _maybe_replan(self, h: int) -> None:
        """Re-plan hours after ``h`` if the weighted posterior says a different plan is materially better, or
        the market learned since the plan was made has moved (``MARKET_MOVED``)."""
        open_hours = np.arange(24) > h
        left = self.budget - max(self._spent + self._out_sum, self._plan_cum[h + 1])
        if left < 0.01 * self.budget:
            return
        market = self._market_now()
        moved = (abs(math.log(market[0] / self._plan_market[0])) > MARKET_MOVED
                 or abs(market[1] - self._plan_market[1]) > MARKET_MOVED / 2)
        log_k, spend = self._threshold(open_hours, left, market)
        cvr, cpc, vol = self._today()
        old_k = np.where(open_hours, self._log_k, -np.inf)
        _, new_conv = auction_response(log_k[None, :], vol, cpc, cvr, *market, logged_win_rate=self._market.prior[1])
        _, old_conv = auction_response(old_k[None, :], vol, cpc, cvr, *market, logged_win_rate=self._market.prior[1])
        gain = new_conv.sum(1) - old_conv.sum(1)  # draws already resampled by the weights
        base = max(float(old_conv.sum(1).mean()), 1e-12)
        if moved or (float(gain.mean()) >= REPLAN_GAIN * base and float(np.mean(gain > 0)) >= REPLAN_PROB):
            self._plan_market = market  # a materially better plan, or the plan's market was not the one learned
            self._log_k = np.where(open_hours, log_k, self._log_k)
            self._k = [float(k) for k in np.exp(self._log_k)]
            self._alloc = [a if not o else float(s) for a, o, s in zip(self._plan_alloc, open_hours, spend)]
            self._replans += 1
            self._refresh_curve()
            if self._ledger is not None:  # the fleet paces on one plan: this one, from the next sync (at once)
                self._plan_id = (self._plan_id[0] + 1, self._ledger.holder)
                self._plan_news = True
                self._sync_at = -INF

    # ----- reporting -----------------------------------------------------------------------------
    def prevent_exhaustion(self, now=None) -> tuple[bool, str, float]:
        """(at_risk, reason, recommended per-bid cap) for the current instant."""
        with self._lock:
            self._quick_until = -INF  # the quick window closes (``_open_quick_window``)
            t = self._instant(now)
            h = self._hour_of(t)
            if self._stop:
                return True, self._stop, 0.0
            planned = self._planned(t, h)
            cap = self._cap(h)
            if self._spent > 1.2 * planned + 0.01 * self.budget:
                return True, (f"spend {self._spent:.2f} is ahead of the plan's {planned:.2f} at this time; "
                              f"bids capped until the plan catches up"), cap
            return False, "spend is on plan", cap

    def _cap(self, h: int) -> float:
        """The largest bid placed now in hour ``h``: the per-bid cap (``bid_cap_share`` of the hour's plan), what
        is left of the budget (a fleet's: of the lease), and the hour's room (the plan through it plus
        ``HOUR_SLACK`` of it), each net of the spend and the bids held.  ``adjust_bid`` and ``adjust_bids``
        apply the same bounds inline."""
        spent = self._spent + self._out_sum
        alloc = self._alloc[h]
        return max(0.0, min(self._bid_cap * alloc, self._ceiling - self._late_sum - spent,
                            self._cum[h + 1] + HOUR_SLACK * alloc - spent))

    def _planned(self, t: float, h: int) -> float:
        """The plan's cumulative spend at ``t`` (in hour ``h``)."""
        return self._cum[h] + self._alloc[h] * (t - self._starts[h]) / (self._starts[h + 1] - self._starts[h])

    def set_budget(self, daily_budget: float, now=None) -> float:
        """Move today's budget mid-day (an account pacer's re-split): never below what is spent and held, so
        the money already committed stays covered; the hours left are planned again for what is left of it
        and the re-solving controller draws the curve through the spend so far at once.  Alone only (a
        fleet's budget is its ledger's) and with the re-solving controller.  Returns the budget in force."""
        if self._ledger is not None:
            raise ValueError("a fleet's budget is its ledger's: set_budget is for a pacer alone")
        if not isinstance(self._control, ResolvingController):
            raise ValueError(f"set_budget needs the re-solving controller, not {self._control.name!r}")
        budget = as_real(daily_budget)
        if not 0 < budget <= MAX_AMOUNT:
            raise ValueError(f"daily_budget must be a number > 0 and at most {MAX_AMOUNT:.0e}, "
                             f"got {reprlib.repr(daily_budget)}")
        with self._lock:
            self._quick_until = -INF  # the quick window closes (``_open_quick_window``)
            t = self._instant(now)
            h = self._hour_of(t)
            budget = max(budget, self._spent + self._out_sum + self._late_sum)
            self.budget = self._ceiling = budget
            self._gap_scale = 24.0 / budget
            self._hour_cap = hour_cap(budget, self.plan_options["max_share"], self.plan_options["max_per_hour"])
            left = budget - self._spent
            if left > 0 and not self._stop:
                self._plan(np.arange(24) >= h, left, scored=False)  # (the controller then solves below)
            self._control.review(self, t, h)  # solved now, for the new budget
            self._m_until = -INF
            return budget

    def status(self, now=None) -> dict:
        """Utilization, multiplier, plan, confidence and risk flags.  A stopped pacer plans nothing, is
        confident of nothing and bids with factor 0.0; ``emergency_stop`` says why."""
        with self._lock:
            self._quick_until = -INF  # the quick window closes (``_open_quick_window``)
            t = self._instant(now)
            h = self._hour_of(t)
            m = self._multiplier(t, h)
            at_risk, reason, cap = self.prevent_exhaustion(t)
            stopped = bool(self._stop)
            planned = 0.0 if stopped else self._planned(t, h)
            k = 0.0 if stopped else self._k[h]
            m = 0.0 if stopped else m
            return {
                "campaign": self.posterior.name, "date": self.date.isoformat(), "hour": h,
                "daily_budget": self.budget, "spent": round(self._spent, 6),
                "remaining": round(self.budget - self._spent, 6), "utilization": self._spent / self.budget,
                "planned_spend_so_far": planned, "pace": self._spent / planned if planned > 0 else None,
                "multiplier": m, "hour_bid_factor": k, "bid_factor": m * k,
                "plan": [0.0] * 24 if stopped else [round(a, 2) for a in self._alloc],
                "confidence": 0.0 if stopped else self._confidence,
                "p_beats_even": 0.0 if stopped else self._p_beats_even, "clicks_today": int(self._clicks.sum()),
                "conversions_today": int(self._conversions.sum()), "ess": self._ess,
                "draws": int(self.posterior.cvr.shape[0]), "refit_due": "refit_due" in self._flags,
                "today_rate_factor": [round(float(f), 3) for f in np.exp(self._today_x)],
                "replans": self._replans, "exhaustion_risk": at_risk, "exhaustion_reason": reason,
                "bid_cap": cap, "emergency_stop": self._stop, "bidding": not stopped,
                "tracking_outage_since": None if self._outage is None else
                dt.datetime.fromtimestamp(self._outage, self.tz).isoformat(timespec="seconds"),
                "bids_outstanding": self._outstanding(), "held_for_outstanding": round(self._out_sum, 6),
                "held_for_expired": round(self._late_sum, 6),
                "auction_timeout": self._timeout, "late_wins": self._late_wins,
                "market": self._market.landscape(), "ledger": self._fleet_status(),
                "flags": dict(self._flags), "warnings": self.warnings + self._plan_warnings,
            }

    def close(self, now=None) -> None:
        """Commit and close the journal (records are on disk when this returns); with a ledger, report the
        last records and return the lease but what the bids still in flight hold."""
        self._closed.set()
        with self._lock:
            self._quick_until = -INF  # the quick window closes (``_open_quick_window``)
            if self._ledger is not None and not self._ledger.closed:
                self._sync(max(check_instant(now), self._starts[0]), closing=True)
                self._ledger.close()
            if self._journal is not None:
                try:
                    self._journal.flush()
                    os.fsync(self._journal.fileno())
                except OSError as exc:
                    self._journal_failed(exc)
                self._journal.close()
                self._journal = None
