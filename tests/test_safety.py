"""Money safety at the runtime's edge: every case a hostile or careless caller found, one test each.

Each number that reaches the pacer (bids, costs, counts, times, the cache's arrays, the journal's lines,
campaign names) is checked once, at the edge: a bad bid gives 0.0, a bad record an error, a bad cache or
journal a stopped pacer that says why.  The property-based harness over random interleavings is in
``test_fuzz.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from gaelp_bayes import cache
from gaelp_bayes.compat import DynamicBudgetOptimizer, PerformanceWindow
from gaelp_bayes.errors import GaelpError
from gaelp_bayes.market import MarketBelief
from gaelp_bayes.runtime import MAX_AUCTION_TIMEOUT, CampaignPosterior, Pacer, journal_file_name
from gaelp_bayes.runtime.lock import PacerLock
from gaelp_bayes.runtime.pacer import _placed_by

from helpers import DAY, FullPathPacer, posterior, run_in_threads

NAN, INF = float("nan"), float("inf")


# ----- bids ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [NAN, INF, -INF, -1.0, 0.0, -0.0, 10**400, "1", True, None, Decimal("NaN"),
                                 Decimal("sNaN"), Decimal("-1")])
def test_a_bid_that_is_not_a_finite_positive_number_places_nothing(raw):
    pacer = Pacer(posterior(), 100.0, now=DAY)
    t = DAY + int(np.argmax(pacer.status(DAY)["plan"])) * 3600 + 1800  # an hour where bids are placed
    assert pacer.adjust_bid(raw, now=t) == 0.0
    assert pacer.adjust_bid(1e3, now=t) > 0  # one bad bid does not stop the pacer


@pytest.mark.parametrize("raw", [1000, np.float32(1e3), np.int64(1000), Decimal("1000")])
def test_a_bid_of_any_real_number_type_is_placed_as_its_float(raw):
    pacer = Pacer(posterior(), 100.0, now=DAY)
    t = DAY + int(np.argmax(pacer.status(DAY)["plan"])) * 3600 + 1800
    same = Pacer(posterior(), 100.0, now=DAY)
    assert pacer.adjust_bid(raw, now=t) == same.adjust_bid(1e3, now=t) > 0


@pytest.mark.parametrize("bids", [1.0, np.ones((2, 2)), ["a", "b"], [10**400]])
def test_a_batch_that_is_not_a_list_of_numbers_is_one_error(bids):
    pacer = Pacer(posterior(), 100.0, now=DAY)
    with pytest.raises(ValueError, match="bids must be a 1-D array"):
        pacer.adjust_bids(bids, now=DAY + 15 * 3600)


def test_a_numpy_datetime_is_an_instant_and_nat_is_none():
    pacer = Pacer(posterior(), 100.0, now=DAY)
    t = DAY + int(np.argmax(pacer.status(DAY)["plan"])) * 3600 + 1800
    when = np.datetime64(int(t * 1e6), "us")
    assert pacer.adjust_bid(1e3, now=when) == Pacer(posterior(), 100.0, now=DAY).adjust_bid(1e3, now=t) > 0
    assert pacer.adjust_bid(1e3, now=np.datetime64("NaT")) == 0.0
    pacer.record(Decimal("0.5"), now=when)
    assert pacer.status(t)["spent"] == 0.5


@pytest.mark.parametrize("budget", [10**400, 1e13, Decimal("1e27"), "100", True, 0])
def test_a_budget_that_is_not_an_amount_up_to_1e12_is_one_error(budget):
    with pytest.raises(ValueError, match="daily_budget must be a number > 0 and at most 1e\\+12"):
        Pacer(posterior(), budget, now=DAY)


def test_a_campaign_that_is_not_a_name_is_one_error(fitted):
    with pytest.raises(ValueError, match="campaign must be a campaign's name"):
        Pacer.load(fitted.path, 100.0, campaign=0, now=DAY)


def test_a_nan_bid_cannot_open_the_guard():
    """A NaN outstanding bid used to poison the guard: 200 bids of 50 then placed 400 against 100."""
    pacer = Pacer(posterior(), 100.0, now=DAY)
    t = DAY + 15 * 3600
    assert pacer.adjust_bid(NAN, now=t) == 0.0
    placed = [pacer.adjust_bid(50.0, now=t + i * 0.01) for i in range(200)]
    assert all(np.isfinite(placed)) and sum(placed) <= 100.0 + 1e-9


def test_batch_bids_that_are_not_finite_place_nothing():
    pacer = Pacer(posterior(), 100.0, now=DAY)
    busiest = int(np.argmax(pacer.status(DAY)["plan"]))
    out = pacer.adjust_bids(np.array([NAN, INF, -INF, -1.0, 1e3, 2e3]), now=DAY + busiest * 3600 + 1800)
    assert np.isfinite(out).all() and (out[:4] == 0).all() and (out[4:] > 0).all()
    assert pacer.adjust_bids(np.array([1.0, 2.0]), now=NAN).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("now", [NAN, INF, -INF, 0.0, 1e13])  # 1e13: milliseconds passed as seconds
def test_a_time_that_is_not_a_finite_plausible_instant_bids_nothing_and_records_nothing(now):
    pacer = Pacer(posterior(), 100.0, now=DAY)
    assert pacer.adjust_bid(1.0, now=now) == 0.0
    with pytest.raises(ValueError, match="now"):
        pacer.record(1.0, now=now)
    assert pacer.status(DAY + 3600)["spent"] == 0.0 and pacer.date == dt.date(2026, 3, 2)


@pytest.mark.parametrize("kwargs", [dict(cost=NAN), dict(cost=INF), dict(cost=-0.5), dict(cost="1.0"),
                                    dict(cost=1.0, clicks=NAN), dict(cost=1.0, clicks=Decimal("1.5")),
                                    dict(cost=1.0, conversions=-1), dict(cost=1.0, clicks=True + 0.5),
                                    dict(cost=10**400), dict(cost=1e13), dict(cost=1.0, clicks=10**400),
                                    dict(cost=Decimal("sNaN"))])
def test_a_record_with_a_bad_number_is_an_error_and_changes_nothing(kwargs):
    pacer = Pacer(posterior(), 100.0, now=DAY)
    with pytest.raises(ValueError):
        pacer.record(**kwargs, now=DAY + 3600)
    s = pacer.status(DAY + 3600)
    assert s["spent"] == 0.0 and s["clicks_today"] == 0


# ----- the ledger ------------------------------------------------------------------------------------------
def test_threads_on_the_wall_clock_lose_no_record():
    """4 threads bidding and recording with now=None: the clock used to be read before the lock, so records
    raced each other into 'out-of-order' errors and real cost went unrecorded."""
    pacer = Pacer(posterior(), 100.0)
    costs, lock = [], threading.Lock()
    stop_at = time.monotonic() + 2.0

    def bidder(seed):
        rng = np.random.default_rng(seed)
        while time.monotonic() < stop_at:
            b = pacer.adjust_bid(50.0)
            cost = b * float(rng.uniform(0.3, 1.0)) if b > 0 else 0.0
            pacer.record(cost, clicks=int(cost > 0))
            with lock:
                costs.append((pacer.date, cost))

    errors = run_in_threads(bidder)
    assert not errors, errors[:3]
    today = sum(c for d, c in costs if d == pacer.date)
    assert today <= 100.0 + 1e-9
    assert pacer.status()["spent"] == pytest.approx(today, abs=1e-6)  # (status rounds to 6 decimals; a night hour
    # of the wall clock plans little, and 0.27 spent failed the relative tolerance alone)


def test_the_pacer_lock_excludes_wakes_its_waiters_and_reenters():
    """``PacerLock``: 8 threads, half taking it as ``adjust_bid`` does (the token, or a wait for it) and half
    with nested ``with``, each yielding the interpreter between reading and writing a shared count: no
    increment is lost (without the lock most are), and no thread is left waiting for a token given back."""
    lock, count, switch = PacerLock(), [0], sys.getswitchinterval()

    def as_adjust_bid(seed):
        for _ in range(1500):
            try:
                lock.take()
            except IndexError:
                lock.take_waiting()
            try:
                seen = count[0]
                time.sleep(0)  # another thread runs here: it must find the lock held
                count[0] = seen + 1
            finally:
                lock.give()

    def with_with(seed):
        for _ in range(1500):
            with lock:
                with lock:  # re-entry (``status`` calls ``prevent_exhaustion``)
                    seen = count[0]
                    time.sleep(0)
                    count[0] = seen + 1

    threads = [threading.Thread(target=as_adjust_bid if i % 2 else with_with, args=(i,), daemon=True)
               for i in range(8)]
    sys.setswitchinterval(1e-5)
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        sys.setswitchinterval(switch)
    assert not any(thread.is_alive() for thread in threads), "a thread waits for a token given back"
    assert count[0] == 8 * 1500
    assert lock.waiting == 0 and lock.owner is None and lock.depth == 0
    lock.take()  # the token is back, once
    with pytest.raises(IndexError):
        lock.take()
    lock.give()
    with lock, pytest.raises(RuntimeError, match="held by this thread"):  # adjust_bid's way in, from within
        lock.take_waiting()


def test_a_record_earlier_than_the_last_is_booked_not_lost():
    """A late outcome (its time before the last record's) is money spent: it is counted, at the ledger's time."""
    pacer = Pacer(posterior(), 100.0, now=DAY)
    pacer.record(1.0, now=DAY + 3600)
    pacer.record(2.0, clicks=1, now=DAY + 60)
    assert pacer.status(DAY + 3600)["spent"] == pytest.approx(3.0)


def test_outcomes_in_any_order_never_release_more_than_was_in_flight():
    """A record used to release the oldest outstanding bid, whatever its size: with a large bid in flight and
    a small one's outcome arriving first, the large bid's budget was handed out again."""
    pacer = Pacer(posterior(), 10.0, now=DAY, plan_options={"bid_cap_share": 1.0})
    t = DAY + 23.5 * 3600  # the last hour: the whole budget is room
    big = pacer.adjust_bid(1e6, now=t)
    factor = pacer.status(t)["bid_factor"]
    small = [pacer.adjust_bid(0.1 * big / factor, now=t) for _ in range(1000)]
    small = [b for b in small if b > 0]
    assert big > 0 and small and big + sum(small) == pytest.approx(10.0, abs=0.01)  # every cent is in flight
    pacer.record(small.pop(0), clicks=1, now=t)  # a small bid's outcome arrives first
    late = pacer.adjust_bid(1e6, now=t)
    for cost in [big, *small, late]:  # then every other bid turns out won, at its full price
        pacer.record(cost, clicks=1, now=t)
    assert pacer.status(t)["spent"] <= 10.0 + 1e-9


def test_the_clock_going_back_across_midnight_keeps_today():
    """now jumping back to yesterday used to switch the pacer to yesterday, with a full budget."""
    pacer = Pacer(posterior(), 100.0, now=DAY + 86_400 + 1800)
    pacer.record(40.0, now=DAY + 86_400 + 1800)
    assert pacer.adjust_bid(1e6, now=DAY + 86_000) <= 60.0
    s = pacer.status(DAY + 86_000)
    assert s["date"] == "2026-03-03" and s["spent"] == pytest.approx(40.0)
    pacer.record(1.0, now=DAY + 3600)  # a record dated yesterday counts today: the safe side
    assert pacer.status(DAY + 86_400 + 3600)["spent"] == pytest.approx(41.0)


# ----- the journal -----------------------------------------------------------------------------------------
def _journal_with_records(tmp_path: Path, n: int = 30) -> tuple[Path, float]:
    pacer = Pacer(posterior(), 100.0, journal=tmp_path, now=DAY)
    for i in range(n):
        pacer.record(0.5 + 0.01 * i, clicks=1, conversions=i % 10 == 0, now=DAY + 14 * 3600 + i)
    spent = pacer.status(DAY + 15 * 3600)["spent"]
    pacer.close()
    return next(tmp_path.glob("*.jsonl")), spent


@pytest.mark.parametrize("bad_line", [b"{}", b"null", b'"x"', b"[1, 2]", b'{"t": 1e9, "cost": "9.5", "clicks": 0, '
                                      b'"conversions": 0}', b'{"t": 1e9, "cost": NaN, "clicks": 0, "conversions": 0}',
                                      b'{"t": 1e9, "cost": -1.0, "clicks": 0, "conversions": 0}',
                                      b'{"t": 1e9, "cost": 1.0, "clicks": 1.5, "conversions": 0}',
                                      b"\xff\xfe not utf-8", b'{"t": 1e9, "co'])
def test_a_journal_line_that_cannot_be_read_stops_the_pacer(tmp_path, bad_line):
    """A corrupt line in the middle used to be skipped: the day's spend came back lower and was spent again."""
    path, _ = _journal_with_records(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:15]) + bad_line + b"\n" + b"".join(lines[15:]))
    pacer = Pacer(posterior(), 100.0, journal=tmp_path, now=DAY + 15 * 3600)
    s = pacer.status(DAY + 15 * 3600)
    assert not s["bidding"] and path.name in s["emergency_stop"] and "line 16" in s["emergency_stop"]
    assert pacer.adjust_bid(1.0, now=DAY + 15 * 3600) == 0.0
    assert s["spent"] >= 0.5 * 15  # what could be read still counts


def test_a_corrupt_journal_is_an_error_with_strict_load(tmp_path, fitted):
    model = tmp_path / "m"
    shutil.copytree(fitted.path, model)
    pacer = Pacer.load(model, 100.0, campaign="campaign_01", journal=tmp_path / "j", now=DAY, force=True)
    pacer.record(1.0, now=DAY + 60)
    pacer.close()
    path = next((tmp_path / "j").glob("*.jsonl"))
    path.write_text("{}\n" + path.read_text())
    stopped = Pacer.load(model, 100.0, campaign="campaign_01", journal=tmp_path / "j", now=DAY, force=True)
    assert "line 1" in stopped.status(DAY)["emergency_stop"]
    with pytest.raises(GaelpError, match="line 1"):
        Pacer.load(model, 100.0, campaign="campaign_01", journal=tmp_path / "j", now=DAY, force=True, strict=True)


@pytest.mark.parametrize("edit", ["a year later", "time 1e308", "nested 100,000 deep", "a middle line missing",
                                  "a cost edited", "only NUL bytes"])
def test_a_journal_edited_or_cut_stops_the_pacer_and_says_where(tmp_path, edit):
    """Each of these replayed without a word: a time with one digit changed (2026 -> 2058) moved its spend to a
    2058 day (0 spent today); a time of 1e308 raised OverflowError and a line nested 100,000 deep
    RecursionError at load; a line deleted from the middle, or a cost edited, lowered the day's spend
    silently; a file of NUL bytes was dropped whole as a torn last line.  Every record line now carries a
    running checksum (a missing or edited line breaks it) and a time inside the journal's day."""
    import re

    path, _ = _journal_with_records(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    if edit == "a year later":
        lines[10] = re.sub(rb'"t": (\d+)', lambda m: b'"t": ' + str(int(m.group(1)) + 32 * 31_557_600).encode(),
                           lines[10])
    elif edit == "time 1e308":
        lines[10] = re.sub(rb'"t": [0-9.e+]+', b'"t": 1e308', lines[10])
    elif edit == "nested 100,000 deep":
        lines.insert(10, b"[" * 100_000 + b"]" * 100_000 + b"\n")
    elif edit == "a middle line missing":
        del lines[10]
    elif edit == "a cost edited":
        lines[10] = re.sub(rb'"cost": [0-9.]+', b'"cost": 0.01', lines[10])
    path.write_bytes(b"\0" * 4096 if edit == "only NUL bytes" else b"".join(lines))
    pacer = Pacer(posterior(), 100.0, journal=tmp_path, now=DAY + 15 * 3600)
    s = pacer.status(DAY + 15 * 3600)
    line = 1 if edit == "only NUL bytes" else 11
    assert not s["bidding"] and f"line {line}" in s["emergency_stop"], s["emergency_stop"]
    assert pacer.adjust_bid(1.0, now=DAY + 15 * 3600) == 0.0
    assert path.stat().st_size > 0  # nothing dropped


def test_a_torn_last_line_is_a_crash_mid_write_and_the_rest_counts(tmp_path):
    path, spent = _journal_with_records(tmp_path)
    with open(path, "ab") as f:
        f.write(b'{"t": 1.0, "cost": 9')
    pacer = Pacer(posterior(), 100.0, journal=tmp_path, now=DAY + 15 * 3600)
    s = pacer.status(DAY + 15 * 3600)
    assert s["bidding"] and s["spent"] == pytest.approx(spent)
    pacer.record(1.0, now=DAY + 15 * 3600)  # the next record starts on a line of its own
    pacer.close()
    again = Pacer(posterior(), 100.0, journal=tmp_path, now=DAY + 15 * 3600 + 1)
    assert again.status(DAY + 15 * 3600 + 1)["spent"] == pytest.approx(spent + 1.0)


@pytest.mark.parametrize("name", ["../../etc", "/abs/olute", "a/b", "..", ".", "x" * 300, "Promo $x^^y$ €",
                                  "nul\x00byte", "CON", "-rf"])
def test_campaign_names_map_to_safe_bounded_file_names(tmp_path, name):
    journal = tmp_path / "journal"
    post = posterior()
    pacer = Pacer(CampaignPosterior(name, post.cvr, post.cpc, post.volume), 100.0, journal=journal, now=DAY)
    pacer.record(1.0, now=DAY + 60)
    pacer.close()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].parent == journal and len(files[0].name.encode()) <= 120
    again = Pacer(CampaignPosterior(name, post.cvr, post.cpc, post.volume), 100.0, journal=journal, now=DAY + 61)
    assert again.status(DAY + 61)["spent"] == 1.0


def test_file_names_keep_ordinary_campaigns_and_tell_names_apart():
    assert journal_file_name("campaign_01", dt.date(2026, 3, 2)) == "campaign_01-2026-03-02.jsonl"
    names = ["a/b", "a_b", "a%2Fb", "A/b", "x" * 300, "x" * 299 + "y"]
    assert len({journal_file_name(n, dt.date(2026, 3, 2)) for n in names}) == len(names)


# ----- the cache's arrays ----------------------------------------------------------------------------------
def _tamper_runtime(src: Path, dst: Path, rewrite, **changes) -> Path:
    """A copy of a cache whose runtime arrays are changed and whose checksums are made to match again."""
    shutil.copytree(src, dst)
    _, arrays = cache.read_runtime(dst)
    arrays = {key: change(np.array(arrays[key])) if (change := changes.get(key)) else np.array(a)
              for key, a in arrays.items()}
    return rewrite(dst, arrays)


def _set(value, index=(0, 0, 0, 5)):
    def change(a):
        a[index] = value
        return a
    return change


@pytest.mark.parametrize("key,change,rule", [("cvr", _set(NAN), "finite"), ("cvr", _set(1.5), "in [0, 1]"),
                                             ("cpc", _set(INF), "finite"), ("cpc", _set(-1.0), "> 0"),
                                             ("volume", _set(-3.0), ">= 0"), ("cvr", lambda a: a[:, :, :3], "shape")])
def test_a_runtime_file_with_bad_numbers_gives_a_stopped_pacer(tmp_path, fitted, rewrite_runtime, key, change,
                                                               rule):
    """A NaN-filled runtime file whose sha256 matches its manifest used to give NaN bids and no stop."""
    model = _tamper_runtime(fitted.path, tmp_path / "m", rewrite_runtime, **{key: change})
    pacer = Pacer.load(model, 100.0, campaign="campaign_01", now=DAY, journal=tmp_path / "j", force=True)
    reason = pacer.status(DAY + 3600)["emergency_stop"]
    assert reason and key in reason and rule in reason
    assert pacer.adjust_bid(1.0, now=DAY + 3600) == 0.0
    with pytest.raises(GaelpError, match=key):
        Pacer.load(model, 100.0, campaign="campaign_01", now=DAY, journal=tmp_path / "j", force=True, strict=True)


def test_a_posterior_built_in_code_is_checked_too():
    post = posterior()
    cvr = post.cvr.copy()
    cvr[3, 2, 1] = NAN
    with pytest.raises(GaelpError, match="cvr"):
        Pacer(CampaignPosterior("x", cvr, post.cpc, post.volume), 100.0, now=DAY)


# ----- options and status ----------------------------------------------------------------------------------
def test_unknown_or_out_of_range_options_are_errors(tmp_path):
    with pytest.raises(TypeError, match="unknown pacer option ledgr"):
        Pacer.load(tmp_path / "none", 100.0, ledgr="redis://x")
    with pytest.raises(ValueError, match="ledger must be a URL"):
        Pacer(posterior(), 100.0, now=DAY, ledger="redis:")
    with pytest.raises(ValueError, match="max_share"):
        Pacer(posterior(), 100.0, now=DAY, plan_options={"max_share": NAN})
    with pytest.raises(ValueError, match="tolerance"):
        Pacer(posterior(), 100.0, now=DAY, plan_options={"tolerance": 2})
    for budget in (NAN, INF, 0.0, -5.0):
        with pytest.raises(ValueError, match="daily_budget"):
            Pacer(posterior(), budget, now=DAY)


def test_a_stopped_pacer_reports_no_confidence_and_no_plan(tmp_path):
    stopped = Pacer.load(tmp_path / "none", 100.0, now=DAY)
    s = stopped.status(DAY + 3600)
    assert s["emergency_stop"] and not s["bidding"]
    assert s["confidence"] == 0.0 and s["p_beats_even"] == 0.0
    assert s["multiplier"] == 0.0 and s["bid_factor"] == 0.0 and s["plan"] == [0.0] * 24
    opt = DynamicBudgetOptimizer(Decimal("100"), model_dir=str(tmp_path / "none"), clock=lambda: DAY + 3600)
    status = opt.get_optimization_status()
    assert status["optimization_confidence"] == 0.0 and status["pacing_multiplier"] == 0.0


# ----- the drop-in API -------------------------------------------------------------------------------------
@pytest.fixture
def optimizer(fitted, tmp_path):
    return DynamicBudgetOptimizer(Decimal("100"), model_dir=str(fitted.path), campaign="campaign_01", force=True,
                                  journal=str(tmp_path), clock=lambda: DAY + 9 * 3600)


@pytest.mark.parametrize("hour", [24, -1, 3.5, "9"])
def test_the_drop_in_api_refuses_hours_outside_0_to_23(optimizer, hour):
    with pytest.raises(ValueError, match="current_hour"):
        optimizer.prevent_early_exhaustion(hour)
    with pytest.raises(ValueError, match="current_hour"):
        optimizer.get_pacing_multiplier(hour)


def _window(**fields) -> PerformanceWindow:
    start = dt.datetime.fromtimestamp(DAY + 9 * 3600 - 60, dt.timezone.utc)
    return PerformanceWindow(**{"start_time": start, "end_time": start + dt.timedelta(seconds=30), **fields})


@pytest.mark.parametrize("fields,name", [(dict(clicks=Decimal("1.5")), "clicks"), (dict(conversions=-1), "conversions"),
                                         (dict(spend=Decimal("1e27")), "spend"),
                                         (dict(clicks=1, conversions=2), "conversions"),
                                         (dict(spend=Decimal("NaN")), "spend"), (dict(spend=-1.0), "spend"),
                                         (dict(end_time=dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)), "end_time"),
                                         (dict(end_time="yesterday"), "end_time")])
def test_the_drop_in_api_refuses_windows_it_cannot_book(optimizer, tmp_path, fields, name):
    with pytest.raises(ValueError, match=name):
        optimizer.add_performance_data(_window(**fields))
    assert optimizer.get_optimization_status()["current_spend"] == Decimal("0.00")
    assert optimizer.pacer.date == dt.date(2026, 3, 2)
    assert all("2100" not in p.name for p in Path(tmp_path).rglob("*"))


def test_a_stopped_pacer_still_journals_the_spend_it_is_told_of(tmp_path, fitted):
    """A restart on a broken cache bids nothing, but outcomes of bids already placed still reach the journal."""
    model = tmp_path / "m"
    shutil.copytree(fitted.path, model)
    (model / cache.RUNTIME / "cvr.npy").write_bytes(b"broken")
    stopped = Pacer.load(model, 100.0, campaign="campaign_01", journal=tmp_path / "j", now=DAY, force=True)
    assert stopped.status(DAY)["emergency_stop"]
    stopped.record(3.0, clicks=1, now=DAY + 60)
    stopped.close()
    good = Pacer.load(fitted.path, 100.0, campaign="campaign_01", journal=tmp_path / "j", now=DAY + 120, force=True)
    assert good.status(DAY + 120)["spent"] == 3.0


def test_a_whole_last_record_without_its_newline_counts_and_is_terminated(tmp_path):
    path, spent = _journal_with_records(tmp_path)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # the crash came between the record and its newline
    pacer = Pacer(posterior(), 100.0, journal=tmp_path, now=DAY + 15 * 3600)
    pacer.record(1.0, now=DAY + 15 * 3600)
    pacer.close()
    again = Pacer(posterior(), 100.0, journal=tmp_path, now=DAY + 15 * 3600 + 1)
    s = again.status(DAY + 15 * 3600 + 1)
    assert s["bidding"] and s["spent"] == pytest.approx(spent + 1.0)


def test_held_bids_expire_only_when_every_one_is_old():
    """Found by the deep fuzz run: a batch that placed nothing, at a clock gone back 2 s, moved the 'last bid'
    time back, so a bid 119 s old was released as if past the 120 s timeout while still in flight."""
    pacer = Pacer(posterior(), 1.0, now=DAY, plan_options={"bid_cap_share": 0.1, "auction_timeout": 120.0})
    busiest = int(np.argmax(pacer.status(DAY)["plan"])) * 3600
    t = DAY + busiest + 2.0
    b = pacer.adjust_bid(1e3, now=t)
    assert b > 0
    pacer.adjust_bids(np.array([0.0]), now=t - 2.0)  # places nothing, at an earlier instant
    late = pacer.adjust_bid(1e3, now=t - 2.0 + 121.0)  # 119 s after the first bid, which is still in flight
    assert pacer._out_sum >= b + late - 1e-12


def test_a_clock_gone_back_a_day_does_not_age_the_bids_in_flight():
    """Found by the deep fuzz run: with the clock a day behind the ledger, bids were aged from today's start
    (a day) instead of by the clock (119 s) and released while in flight."""
    pacer = Pacer(posterior(), 1.0, now=DAY, plan_options={"bid_cap_share": 0.1, "auction_timeout": 120.0})
    busiest = int(np.argmax(pacer.status(DAY)["plan"])) * 3600
    t = DAY + busiest
    b = pacer.adjust_bid(1e3, now=t)
    assert b > 0
    pacer.status(t + 86_400)  # the ledger moves to the next day (bids in flight carry over)
    late = pacer.adjust_bid(1e3, now=t + 119)  # the clock is back: 119 s after the bid
    assert pacer._out_sum >= b + late - 1e-12


def test_each_bid_expires_on_its_own_after_the_auction_timeout():
    """An unrecorded bid used to hold budget until 120 s passed with no bid at all: in a busy hour, never.
    Now each expires after ``auction_timeout`` (no loss notices needed); ``bid_id`` settles a given bid."""
    pacer = Pacer(posterior(), 10.0, now=DAY, plan_options={"bid_cap_share": 1.0})
    t = DAY + 23.5 * 3600  # the last hour: the whole budget is room
    first = pacer.adjust_bid(1.0, now=t, bid_id="a")
    second = pacer.adjust_bid(1.0, now=t + 0.3, bid_id="b")
    assert pacer.status(t + 0.3)["held_for_outstanding"] == pytest.approx(first + second, abs=1e-6)
    third = pacer.adjust_bid(1.0, now=t + 0.6)  # the first is 0.6 s old: expired, the second is not
    assert pacer._out_sum == pytest.approx(second + third)
    pacer.record(0.5 * second, clicks=1, now=t + 0.7, bid_id="b")  # settles "b", not the smaller third
    assert pacer._out_sum == pytest.approx(third) and pacer.status(t + 0.7)["late_wins"] == 0
    pacer.record(0.5 * first, clicks=1, now=t + 0.8, bid_id="a")  # a win whose bid had expired: booked, and
    s = pacer.status(t + 0.8)  # the timeout doubles
    assert s["late_wins"] == 1 and s["auction_timeout"] == 1.0 and pacer._out_sum == pytest.approx(third)
    assert s["spent"] == pytest.approx(0.5 * (first + second), abs=1e-6)
    pacer.adjust_bid(1.0, now=t + 3.0)  # every bid expired (1 s now) ...
    pacer.record(0.01, clicks=1, now=t + 3.0)  # ... this one just placed settles at 0.01
    pacer.record(0.01, clicks=1, now=t + 3.1)  # and no bid in flight could have cost this: late
    assert pacer.status(t + 3.1)["late_wins"] == 2 and pacer.status(t + 3.1)["auction_timeout"] == 2.0


def test_a_busy_day_of_unrecorded_bids_holds_what_each_bid_would_alone():
    """The bids held are two lists of floats with moving boundaries (``Pacer._expire``): hours of 20 bids a
    second, none recorded but a few wins by id, hold exactly what walking every bid's own expiries holds, teach the
    market a loss per unrecorded bid (at the reference price the full path gives it), and drop the done ones
    from memory (a bid id still settles its bid)."""
    pacer = Pacer(posterior(), 1e6, now=DAY, plan_options={"bid_cap_share": 1.0})
    full = FullPathPacer(posterior(), 1e6, now=DAY, plan_options={"bid_cap_share": 1.0})
    t0 = DAY + 14 * 3600
    placed, settled = [], set()
    for i in range(20 * 600):  # 10 minutes of the clock
        t = t0 + i * 0.05
        b = pacer.adjust_bid(1e-3, now=t, bid_id=i if i % 1000 == 7 else None)
        assert full.adjust_bid(1e-3, now=t, bid_id=i if i % 1000 == 7 else None) == b
        placed.append((t, b))
        if i % 2000 == 9:  # a win reported for a bid placed 0.1 s earlier, by its id
            for p in (pacer, full):
                p.record(0.5 * placed[i - 2][1], now=t, bid_id=i - 2)
            settled.add(i - 2)
    t = t0 + 20 * 600 * 0.05
    for p in (pacer, full):
        p._expire(t)  # what the next full path does (at most CONTROL_STEP later)
    assert pacer._market.state() == full._market.state()
    in_flight = [b for i, (s, b) in enumerate(placed) if s > t - pacer._timeout and i not in settled]
    held = [b for i, (s, b) in enumerate(placed) if t - MAX_AUCTION_TIMEOUT < s <= t - pacer._timeout
            and i not in settled]
    assert pacer._out_sum == pytest.approx(math.fsum(in_flight), rel=1e-9)
    assert pacer._late_sum == pytest.approx(math.fsum(held), rel=1e-9)
    lost = sum(1 for i, (s, b) in enumerate(placed) if b > 0 and s <= t - MAX_AUCTION_TIMEOUT and i not in settled)
    assert pacer.status(t)["market"]["auctions_lost"] == lost and pacer.status(t)["late_wins"] == 0
    assert pacer.status(t)["market"]["auctions_won"] == len(settled) and min(b for _, b in placed) > 0
    assert pacer._bid_offset > 0 and len(pacer._bid_t) < len(placed) - pacer._bid_offset + 1
    assert set(pacer._bid_ids) == {i for i in range(len(placed)) if i % 1000 == 7 and i not in settled
                                   and placed[i][0] > t - MAX_AUCTION_TIMEOUT}


def test_expiry_counts_bids_placed_by_a_clock_gone_back_as_a_walk_does():
    """Placement order is time order but for a clock gone back; the bisection must not skip over a later
    time (``_placed_by``): it gives the first position whose time is past the limit, as walking would."""
    ordered = [float(i) for i in range(40)]  # past the first steps' walk: the bisection, and its check
    back = ordered[:20] + [3.0] + ordered[20:]  # the clock back by 17 s after 20 bids
    for times in ([1.0, 2.0, 3.0], [10.0, 20.0, 5.0, 6.0, 7.0], [1.0, 9.0, 2.0, 3.0, 4.0, 5.0, 6.0], [5.0],
                  ordered, back, back[::-1]):
        for limit in (0.0, 1.0, 4.5, 8.0, 15.5, 25.0, 30.0, 50.0):
            walk = 0
            while walk < len(times) and times[walk] <= limit:
                walk += 1
            assert _placed_by(times, limit, 0, len(times)) == walk


def test_market_losses_in_bulk_bin_as_one_at_a_time():
    one, bulk = MarketBelief(), MarketBelief()
    bids = np.array([0.0, 1e-12, 0.01, 0.3, 1.0, 2.5, 1e3, 7.0])
    references = np.array([1.0, 1.0, 0.02, 0.3, 0.0, 1.0, 1e-9, 1.0])
    for b, r in zip(bids, references):
        one.lost(float(b), float(r))
    bulk.lost_many(bids, references)
    assert np.array_equal(one.losses, bulk.losses) and one.losses.sum() == 4


@pytest.mark.parametrize("controller", ["pi", "resolve"])
def test_the_controller_resumes_after_a_restart_to_the_record(tmp_path, controller):
    """The PI multiplier's integral state used to restart from 1 after a reload: it comes back from the
    journal.  The re-solving controller has no state of its own: solved at the same instant, the reloaded
    pacer's multiplier and plan of the hours left are the ones it would have had."""
    options = {"controller": controller}
    pacer = Pacer(posterior(), 100.0, journal=tmp_path, now=DAY, plan_options=options)
    t = DAY + 9 * 3600
    for i in range(300):  # spending ahead of the plan for a while winds the integral term down
        pacer.adjust_bid(1.0, now=t + 10 * i)
        pacer.record(0.3, clicks=1, now=t + 10 * i + 1)
    later = t + 3001 + 60  # (the re-solving controller solves every minute: both solve at this instant)
    status = pacer.status(later)
    before = (pacer.multiplier(later), pacer._control.L, pacer._control.t_int, status["spent"], status["plan"][10:])
    pacer.close()
    again = Pacer(posterior(), 100.0, journal=tmp_path, now=t + 3001, plan_options=options)
    if controller == "pi":
        assert -3.0 < before[1] < -0.1  # the state is neither the fresh one nor a clamp
    else:
        assert before[0] != 1.0 and before[1] == 0.0
    status = again.status(later)
    assert (again.multiplier(later), again._control.L, again._control.t_int, status["spent"], status["plan"][10:]) == before


def test_the_journal_is_committed_within_the_group_window(tmp_path):
    pacer = Pacer(posterior(), 100.0, journal=tmp_path, now=DAY)
    pacer.record(1.0, now=DAY + 60)
    time.sleep(0.3)  # several commit windows: the record is on disk though the pacer stays open
    [file] = list(tmp_path.iterdir())
    assert file.read_text().count("\n") == 1
    pacer.close()


_KILLED_MID_DAY = """
import json, os, signal, sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from helpers import DAY, posterior
from gaelp_bayes.runtime import Pacer
pacer = Pacer(posterior(), 100.0, journal=sys.argv[1], now=DAY, plan_options={"controller": "pi"})
rng = np.random.default_rng(1)
t = DAY + 8 * 3600
for i in range(3000):  # a morning of bids and outcomes, conversions included (learning and re-plans)
    t += 20
    b = pacer.adjust_bid(1.0, now=t)
    if b > 0 and rng.uniform() < 0.6:
        pacer.record(0.9 * b, clicks=1, conversions=int(rng.uniform() < 0.04), now=t + 0.1)
        state = {"t": t + 0.1, "L": pacer._control.L, "ti": pacer._control.t_int}  # the controller as of the last record
s = pacer.status(state["t"])
print(json.dumps({**state, "spent": s["spent"], "x": s["today_rate_factor"], "plan": s["plan"], "ess": s["ess"],
                  "replans": s["replans"]}), flush=True)
time.sleep(0.3)  # past the journal's group commit window
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_pacer_killed_mid_day_resumes_to_the_record(tmp_path):
    """SIGKILL after a morning's records: the reloaded pacer has the same spend, learning, plan and controller."""
    run = subprocess.run([sys.executable, "-c", _KILLED_MID_DAY, str(tmp_path), str(Path(__file__).parent)],
                         capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    before = json.loads(run.stdout)
    again = Pacer(posterior(), 100.0, journal=tmp_path, now=before["t"], plan_options={"controller": "pi"})
    assert before["spent"] > 2 and before["x"] != [1.0] * 24 and before["L"] != 0.0  # not a fresh pacer's
    assert (again._control.L, again._control.t_int) == (before["L"], before["ti"])
    s = again.status(before["t"])
    assert s["spent"] == before["spent"] and s["today_rate_factor"] == before["x"] and s["plan"] == before["plan"]
    assert s["ess"] == pytest.approx(before["ess"]) and s["replans"] == before["replans"]
