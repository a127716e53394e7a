"""Property-based fuzzing of the places where money and files are at stake.

1. ``PacerMachine``: random interleavings of ``adjust_bid``, ``adjust_bids``, ``record`` (outcomes in any
   order, lost bids never reported), reloads from the journal, clock jumps forwards and backwards (across
   midnight too) and hostile values (NaN, inf, huge, negative, wrong types).  Invariants after every step:
   a bid is a finite number >= 0; the budget held for unrecorded bids covers every bid in flight; the
   ledger's spend equals the sum of the costs it accepted; no day's accepted costs exceed the budget.
   ``test_threads_on_the_wall_clock``: the same ledger invariants with threads on the wall clock.
2. ``test_outputs_touch_nothing_but_their_own``: ``fit``, ``predict`` and ``windows`` (``report`` in its
   own, smaller test) pointed at random paths of a random tree of files, with and without ``--overwrite``.
   Nothing outside the output is ever touched; a refused command changes nothing at all; an existing
   output is replaced only with ``--overwrite``; an input is never the output; no temp file is left.
3. ``test_a_journal_edited_anywhere_but_its_last_line_restores_its_spend_or_stops``: one edit (a byte, a
   digit, a line dropped, repeated or swapped) anywhere in a day's journal but its last line: the reload
   restores exactly the day's spend, or stops and names the journal.
4. ``test_a_ledger_state_edited_between_runs_stops_the_fleet_or_changes_nothing``: one field of a fleet's
   stored state (SQLite and Redis) set to an odd value, deleted, or one item inside it set: the reloaded
   pacer stops and names the ledger, or reads what was written; never a traceback or an overspend.

Examples per run: ``PACER_EXAMPLES`` x up to ``PACER_STEPS`` steps, ``THREAD_EXAMPLES`` thread runs,
``JOURNAL_EXAMPLES`` journals, ``LEDGER_EXAMPLES`` ledger states per store, ``OUTPUT_EXAMPLES`` and
``REPORT_EXAMPLES`` trees, each times ``GAELP_FUZZ_SCALE`` (default 1, about a minute in all; a deeper run:
``GAELP_FUZZ_SCALE=10 pytest tests/test_fuzz.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gaelp_bayes import cli, model
from gaelp_bayes.runtime import AUCTION_TIMEOUT, MAX_AUCTION_TIMEOUT, Pacer

from conftest import InstantFit
from helpers import DAY, posterior, run_in_threads

SCALE = int(os.environ.get("GAELP_FUZZ_SCALE", "1"))
PACER_EXAMPLES, PACER_STEPS = 100 * SCALE, 50
OUTPUT_EXAMPLES, REPORT_EXAMPLES = 25 * SCALE, 4 * SCALE
THREAD_EXAMPLES, THREAD_SECONDS = 8 * SCALE, 0.25

# Hypothesis health checks stay on but these: every example here does real work (files written and fsynced,
# a pacer planned, a CLI command run), so generating one is slow by its standard, not by a strategy's fault;
# and the ledger test takes ``request`` (function-scoped) only to reach the session's redis server, which
# is the same for every example
SLOW = [HealthCheck.too_slow]
FIXTURE = [HealthCheck.function_scoped_fixture]

HOSTILE = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e308, 5e-324, -1e-300])
BIDS = st.one_of(st.floats(0.0, 100.0), st.floats(1e-6, 1e6), HOSTILE)


class PacerMachine(RuleBasedStateMachine):
    """A model of what the ledger must hold, against the real pacer with a journal on disk."""

    @initialize(budget=st.floats(0.5, 500.0), seed=st.integers(0, 50),
                start=st.one_of(st.floats(0, 86_399), st.floats(82_800, 86_399)),  # the last hour: all is room
                bid_cap_share=st.sampled_from([0.1, 0.5, 1.0]))
    def start(self, budget, seed, start, bid_cap_share):
        self.dir = Path(tempfile.mkdtemp(prefix="pacer-fuzz-"))
        self.budget, self.seed, self.t = budget, seed, DAY + start
        self.options = {"bid_cap_share": bid_cap_share}
        self.pacer = Pacer(posterior(seed), budget, journal=self.dir, now=self.t, plan_options=self.options)
        self.in_flight: list[tuple[float, float]] = []  # (bid, time placed)
        self.expired: list[tuple[float, float]] = []  # past the auction timeout, a late win still possible
        self.accepted: dict = {}  # day -> costs the ledger accepted
        self.last_placed = -math.inf

    def teardown(self):
        if hasattr(self, "pacer"):
            self.pacer.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _expire(self) -> None:
        """Bids older than the auction timeout are lost (their outcome need never be reported) or, until
        ``MAX_AUCTION_TIMEOUT``, won and reported late."""
        timed_out = [x for x in self.in_flight if self.t - x[1] >= AUCTION_TIMEOUT]
        self.expired = [(b, t0) for b, t0 in self.expired + timed_out if self.t - t0 < MAX_AUCTION_TIMEOUT]
        self.in_flight = [(b, t0) for b, t0 in self.in_flight if self.t - t0 < AUCTION_TIMEOUT]

    @rule(raw=BIDS, dt=st.floats(0.0, 5.0))
    def bid(self, raw, dt):
        self.t += dt
        self._expire()
        b = self.pacer.adjust_bid(raw, now=self.t)
        assert isinstance(b, float) and math.isfinite(b) and b >= 0.0, (raw, b)
        if not (0.0 < raw < math.inf):
            assert b == 0.0, (raw, b)
        if b > 0:
            self.in_flight.append((b, self.t))

    @rule(raws=st.lists(BIDS, min_size=1, max_size=60))
    def bids(self, raws):
        self._expire()
        out = self.pacer.adjust_bids(np.array(raws, dtype=np.float64), now=self.t)
        assert out.shape == (len(raws),) and np.isfinite(out).all() and (out >= 0).all(), (raws, out)
        self.in_flight += [(float(b), self.t) for b in out if b > 0]

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(0, 10_000), won=st.booleans(), price=st.one_of(st.just(1.0), st.floats(0.0, 1.0)),
          dt=st.floats(0.0, 2.0))
    def outcome(self, pick, won, price, dt):
        """The outcome of any bid in flight (not necessarily the oldest): won at most at its bid, or lost."""
        self.t += dt
        self._expire()
        if not self.in_flight:
            return
        b, _ = self.in_flight.pop(pick % len(self.in_flight))
        cost = b * price if won else 0.0
        self.pacer.record(cost, clicks=int(won), conversions=int(won and price > 0.9), now=self.t)
        self.accepted[self.pacer.date] = self.accepted.get(self.pacer.date, 0.0) + cost

    @precondition(lambda self: self.expired)
    @rule(pick=st.integers(0, 10_000), price=st.floats(0.0, 1.0))
    def late_win(self, pick, price):
        """A win reported after its auction timeout (but within 120 s): booked, and still covered."""
        self._expire()
        if not self.expired:
            return
        b, _ = self.expired.pop(pick % len(self.expired))
        self.pacer.record(b * price, clicks=1, now=self.t)
        self.accepted[self.pacer.date] = self.accepted.get(self.pacer.date, 0.0) + b * price

    @rule(cost=st.one_of(HOSTILE, st.just("1.0"), st.just(None)), clicks=st.sampled_from([0, 1, -1, 1.5, math.nan]))
    def hostile_record(self, cost, clicks):
        """A record with a bad number is refused and changes nothing."""
        valid = isinstance(cost, float) and math.isfinite(cost) and cost >= 0 and clicks in (0, 1)
        if valid:
            return
        before = self.pacer.status(self.t)["spent"]
        with pytest.raises((ValueError, TypeError)):
            self.pacer.record(cost, clicks=clicks, now=self.t)
        assert self.pacer.status(self.t)["spent"] == before

    @rule(jump=st.one_of(st.floats(-90_000, 90_000), st.sampled_from([-86_400.0, 86_400.0, -1.0, 3 * 86_400.0])))
    def clock_jump(self, jump):
        """The clock jumps (a sleeping process, a corrected system clock); days roll forward only."""
        self.t = max(self.t + jump, DAY)

    @rule()
    def reload(self):
        """A restart: the journal restores the day; bids in flight at the crash are lost with the process."""
        self.pacer.close()
        self.in_flight.clear()
        self.expired.clear()
        self.pacer = Pacer(posterior(self.seed), self.budget, journal=self.dir, now=self.t, plan_options=self.options)

    @invariant()
    def bids_in_flight_are_held(self):
        """The budget the pacer holds for unrecorded bids covers every bid still in flight."""
        if hasattr(self, "pacer"):
            held = self.pacer._out_sum + self.pacer._late_sum
            assert held >= sum(b for b, _ in self.in_flight + self.expired) - 1e-9

    @invariant()
    def ledger_matches_and_never_exceeds(self):
        if not hasattr(self, "pacer"):
            return
        spent = self.pacer._spent
        assert spent == pytest.approx(self.accepted.get(self.pacer.date, 0.0), abs=1e-9)
        for day, total in self.accepted.items():
            assert total <= self.budget + 1e-9, (day, total, self.budget)


PacerMachine.TestCase.settings = settings(max_examples=PACER_EXAMPLES, stateful_step_count=PACER_STEPS,
                                          deadline=None, suppress_health_check=SLOW)
test_pacer_ledger_under_random_interleavings = PacerMachine.TestCase


@settings(max_examples=THREAD_EXAMPLES, deadline=None)
@given(budget=st.floats(0.5, 200.0), raw=st.floats(0.01, 1e4), threads=st.integers(2, 6),
       batch=st.booleans(), seed=st.integers(0, 50))
def test_threads_on_the_wall_clock(budget, raw, threads, batch, seed):
    """Threads bid (one by one or in batches) and record on the wall clock (``now=None``), each outcome when
    its own bid resolves, so records arrive in any order: none is refused, the ledger holds every cost
    accepted, and no day exceeds the budget."""
    pacer = Pacer(posterior(seed), budget, plan_options={"bid_cap_share": 1.0})
    day = pacer.date
    costs: list[float] = []  # list.append is atomic: the tally needs no lock of its own
    stop_at = time.monotonic() + THREAD_SECONDS

    def bidder(k):
        rng = np.random.default_rng(seed * 100 + k)
        while time.monotonic() < stop_at:
            placed = pacer.adjust_bids(np.full(5, raw)) if batch else [pacer.adjust_bid(raw)]
            for b in placed:
                if b > 0:
                    cost = float(b) * float(rng.uniform(0.5, 1.0)) if rng.uniform() < 0.7 else 0.0
                    pacer.record(cost, clicks=int(cost > 0))
                    costs.append(cost)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads switch often: races show up within a fraction of a second
    try:
        errors = run_in_threads(bidder, threads)
    finally:
        sys.setswitchinterval(switch)
    assert not errors, errors[:3]
    assume(pacer.date == day)  # a run that straddles midnight splits its costs over two days
    assert pacer._spent == pytest.approx(math.fsum(costs), abs=1e-9)
    assert math.fsum(costs) <= budget + 1e-9, (math.fsum(costs), budget)


# ----- a journal edited between runs -------------------------------------------------------------------------
JOURNAL_EXAMPLES = 60 * SCALE
JOURNAL_EDIT = st.one_of(
    st.tuples(st.just("byte"), st.integers(0, 10**6), st.integers(0, 255)),  # one byte of a line set to any value
    st.tuples(st.just("drop"), st.integers(0, 10**6), st.just(0)),  # a line removed
    st.tuples(st.just("repeat"), st.integers(0, 10**6), st.just(0)),  # a line written twice
    st.tuples(st.just("swap"), st.integers(0, 10**6), st.just(0)),  # a line and the next in the other order
    st.tuples(st.just("digit"), st.integers(0, 10**6), st.integers(0, 9)))  # one digit of a line changed


@settings(max_examples=JOURNAL_EXAMPLES, deadline=None, suppress_health_check=SLOW)
@example(edit=("byte", 10, 0), records=12, seed=257)  # found at scale 30: a replay that stopped for overspend first
@given(edit=JOURNAL_EDIT, records=st.integers(3, 25), seed=st.integers(0, 1000))
def test_a_journal_edited_anywhere_but_its_last_line_restores_its_spend_or_stops(tmp_path_factory, edit, records,
                                                                                 seed):
    """Whatever one edit does to a line before the last (the last line may be torn by a crash, and a cut
    after a whole line cannot be told from a shorter day), a reload restores exactly the day's spend or stops
    and names the journal: never a different spend in silence."""
    folder = tmp_path_factory.mktemp("journal")
    rng = np.random.default_rng(seed)
    pacer = Pacer(posterior(), 100.0, journal=folder, now=DAY)
    for i in range(records):
        pacer.record(float(rng.uniform(0, 2)), clicks=int(rng.integers(0, 3)), now=DAY + 10 * 3600 + 7 * i)
    spent = pacer.status(DAY + 11 * 3600)["spent"]
    pacer.close()
    path = next(folder.glob("*.jsonl"))
    lines = path.read_bytes().splitlines(keepends=True)
    kind, where, value = edit
    at = where % (len(lines) - 1)  # a line before the last
    line = lines[at]
    if kind == "byte":
        i = where % (len(line) - 1)  # (its newline kept: a line merged with the next is a "byte" of another kind)
        lines[at] = line[:i] + bytes([value]) + line[i + 1:]
    elif kind == "drop":
        del lines[at]
    elif kind == "repeat":
        lines.insert(at, line)
    elif kind == "swap":
        lines[at], lines[at + 1] = lines[at + 1], lines[at]
    else:
        digits = [i for i, c in enumerate(line) if 48 <= c <= 57]
        i = digits[where % len(digits)]
        lines[at] = line[:i] + str(value).encode() + line[i + 1:]
    edited = b"".join(lines)
    assume(edited != path.read_bytes())
    path.write_bytes(edited)
    again = Pacer(posterior(), 100.0, journal=folder, now=DAY + 11 * 3600)
    s = again.status(DAY + 11 * 3600)
    again.close()
    assert (s["emergency_stop"] and path.name in s["emergency_stop"]) or s["spent"] == pytest.approx(spent, abs=1e-9), (
        edit, s["spent"], spent, s["emergency_stop"])


# ----- a fleet ledger's state edited between runs ------------------------------------------------------------
LEDGER_EXAMPLES = 10 * SCALE
LEDGER_FIELDS = ["budget", "spent", "leases", "clicks", "conversions", "controller", "market", "plan", "syncs",
                 "digest", "a key of its own"]
ODD_VALUES = st.sampled_from([None, -1.0, 0.0, 1e-9, 0.5, 7, 1e308, math.nan, math.inf, -math.inf, "x", True, [],
                              {}, [None], [-1.0], [0.0] * 24, [1.0] * 400, {"x": [1.0, 2.0]}, [[1.0, 2.0]]])
LEDGER_EDIT = st.tuples(st.sampled_from(LEDGER_FIELDS), st.sampled_from(["set", "delete", "set inside"]), ODD_VALUES,
                        st.integers(0, 10**6))


def edit_state(state: dict, edit) -> dict:
    """``state`` with one field set, deleted, or one element inside it set (a list's item, a dict's entry)."""
    field, how, value, where = edit
    if how == "delete":
        state.pop(field, None)
    elif how == "set inside" and isinstance(state.get(field), list) and state[field]:
        state[field][where % len(state[field])] = value
    elif how == "set inside" and isinstance(state.get(field), dict) and state[field]:
        keys = sorted(state[field])
        state[field][keys[where % len(keys)]] = value
    else:
        state[field] = value
    return state


@pytest.mark.parametrize("store", ["sqlite", "redis"])
@settings(max_examples=LEDGER_EXAMPLES, deadline=None, suppress_health_check=SLOW + FIXTURE)
@example(edit=("spent", "set", 0.0, 0), seed=0)  # a day's spend set back to 0: the fleet would spend it again
@given(edit=LEDGER_EDIT, seed=st.integers(0, 1000))
def test_a_ledger_state_edited_between_runs_stops_the_fleet_or_changes_nothing(request, tmp_path_factory, store,
                                                                                edit, seed):
    """One field of a campaign-day's stored state (SQLite or Redis) set to an odd value, deleted, or one of its
    items set, between two runs of a bidder: the reloaded pacer either stops and names the ledger, or the
    state it reads is the one written (only the digest deleted); never a traceback, never more than the
    budget spent over both runs."""
    import sqlite3

    from gaelp_bayes.ledger import keys

    if store == "sqlite":
        folder = tmp_path_factory.mktemp("ledger")
        url = f"sqlite:///{folder}/ledger.db"
    else:
        server = request.getfixturevalue("redis_server")
        url = server.url
    campaign_day = f"c{seed}-{abs(hash(repr(edit)))}"  # a campaign-day of its own per example (Redis is shared)
    budget, rng = 3.0, np.random.default_rng(seed)
    paid, t = 0.0, DAY

    def run(pacer, bids, every):
        nonlocal paid, t
        for _ in range(bids):
            t += every
            bid = pacer.adjust_bid(float(rng.uniform(0.5, 2.0)), now=t)
            if bid > 0:
                cost = float(rng.uniform(0.3, 1.0)) * bid
                pacer.record(cost, clicks=1, conversions=int(rng.random() < 0.1), now=t)
                paid += cost
        return pacer.status(now=t)

    first = Pacer(replace(posterior(), name=campaign_day), budget, now=t, ledger=url)
    run(first, 330, 240.0)  # to 22:00: most of the budget spent
    first.close(now=t)
    state_key = keys(campaign_day, "2026-03-02")[0]
    if store == "sqlite":
        db = sqlite3.connect(folder / "ledger.db")
        written = json.loads(db.execute("SELECT state FROM ledger WHERE key = ?", (state_key,)).fetchone()[0])
        edited = edit_state(json.loads(json.dumps(written)), edit)
        db.execute("UPDATE ledger SET state = ? WHERE key = ?", (json.dumps(edited), state_key))
        db.commit()
        db.close()
    else:
        import redis

        client = redis.Redis.from_url(url)
        written = json.loads(client.get(state_key))
        edited = edit_state(json.loads(json.dumps(written)), edit)
        client.set(state_key, json.dumps(edited))
        client.close()
    second = Pacer(replace(posterior(), name=campaign_day), budget, now=t, ledger=url)
    status = run(second, 300, 10.0)  # the day's last hours: all of what is left is room
    second.close(now=t)
    unchanged = {k: v for k, v in edited.items() if k != "digest"} == {k: v for k, v in written.items() if k != "digest"}
    assert paid <= budget + 0.005, (edit, paid)
    assert unchanged or (status["emergency_stop"] and "ledger" in status["emergency_stop"]), (edit, status["emergency_stop"])


# ----- --out over a tree of files -----------------------------------------------------------------------------
NAMES = ["a", "b", "m", "in", "out.csv", "p.csv", "r.html", "r_figures", "model"]
ENTRY = st.tuples(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3), st.booleans())


def snapshot(root: Path) -> dict[str, str | None]:
    """Every path under ``root`` -> sha256 of its bytes (None for a folder)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def build_tree(root: Path, entries, fitted) -> dict[str, Path]:
    """Inputs at fixed places, then random files and folders around them (where they fit)."""
    inputs = {"model": root / "models" / "m", "windows": root / "in" / "windows.csv", "raw": root / "in" / "raw.csv"}
    shutil.copytree(fitted.path, inputs["model"])
    inputs["windows"].parent.mkdir(parents=True)
    shutil.copy(fitted.holdout_csv, inputs["windows"])
    inputs["raw"].write_text("t,y\n2026-01-05T00:10:00Z,1\n2026-01-05T02:10:00Z,0\n")
    for parts, is_file in entries:
        path = root.joinpath(*parts)
        with contextlib.suppress(OSError):  # a name taken by a file or folder already: skip it
            if is_file:
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    path.write_text("/".join(parts))
            else:
                path.mkdir(parents=True, exist_ok=True)
    return inputs


def out_candidates(root: Path, inputs: dict[str, Path]) -> list[Path]:
    existing = sorted(root.rglob("*"))
    fresh = [root / "new", root / "a" / "new.csv", root / "in" / "windows.csv" / "under_a_file",
             inputs["model"].with_suffix(".html")]  # a report beside its model
    return existing + fresh + [root, *inputs.values(), inputs["model"] / "manifest.json"]


def command(kind: str, inputs: dict[str, Path], out: Path, overwrite: bool
            ) -> tuple[list[str], list[Path], list[Path]]:
    """The command line, the paths it may write, and its inputs."""
    flag = ["--overwrite"] if overwrite else []
    model, windows, raw = inputs["model"], inputs["windows"], inputs["raw"]
    if kind == "fit":
        return ["fit", str(windows), "--out", str(out), "--quiet", *flag], [out], [windows]
    if kind == "predict":
        return ["predict", str(model), str(windows), "--out", str(out), "--force", *flag], [out], [model, windows]
    if kind == "windows":
        return ["windows", str(raw), "--time", "t", "--outcome", "y", "--out", str(out), *flag], [out], [raw]
    return (["report", str(model), "--out", str(out), "--budget", "50", "--campaign", "campaign_01", *flag],
            [out, out.with_name(f"{out.stem}_figures")], [model])


def check_outputs_touch_nothing_but_their_own(fitted, kind, entries, pick, overwrite):
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(model, "fit", lambda *a, **k: InstantFit(fitted)):
        root = Path(tmp).resolve()
        inputs = build_tree(root, entries, fitted)
        candidates = out_candidates(root, inputs)
        out = candidates[pick % len(candidates)]
        argv, owned, used = command(kind, inputs, out, overwrite)
        before = snapshot(root)
        existed = {o: o.exists() and not (o.is_dir() and not any(o.iterdir())) for o in owned}
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            code = cli.main(argv)
        after = snapshot(root)

        def owned_by_output(rel: str) -> bool:
            path = root / rel
            return any(path == o or o in path.parents for o in owned)

        if code not in (0, 4):
            assert after == before, (argv, code, err.getvalue())
            return
        for rel, digest in before.items():  # nothing outside the outputs changed or vanished
            if not owned_by_output(rel):
                assert after.get(rel, "gone") == digest, (argv, rel)
        for rel in after.keys() - before.keys():  # nothing new but the outputs and their folders (no temp files)
            assert owned_by_output(rel) or any(root / rel in o.parents for o in owned), (argv, rel)
        assert overwrite or not any(existed.values()), (argv, "replaced an existing output without --overwrite")
        for rel, digest in before.items():  # the inputs, and everything inside them, are never written
            path = root / rel
            if any(path == i or i in path.parents for i in used):
                assert after.get(rel, "gone") == digest, (argv, rel)


@settings(max_examples=OUTPUT_EXAMPLES, deadline=None, suppress_health_check=SLOW)
@given(kind=st.sampled_from(["fit", "predict", "windows"]), entries=st.lists(ENTRY, max_size=8),
       pick=st.integers(0, 1000), overwrite=st.booleans())
def test_outputs_touch_nothing_but_their_own(fitted, kind, entries, pick, overwrite):
    check_outputs_touch_nothing_but_their_own(fitted, kind, entries, pick, overwrite)


@settings(max_examples=REPORT_EXAMPLES, deadline=None, suppress_health_check=SLOW)
@given(entries=st.lists(ENTRY, max_size=8), pick=st.integers(0, 1000), overwrite=st.booleans())
def test_report_outputs_touch_nothing_but_their_own(fitted, entries, pick, overwrite):
    check_outputs_touch_nothing_but_their_own(fitted, "report", entries, pick, overwrite)
