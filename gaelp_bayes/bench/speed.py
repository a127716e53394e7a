"""Benchmarks of the runtime's speed and of reading: a bid, a batch, the journal, the cache, allocation, events, the fleet."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import (_header, _markdown, _write)
from ..errors import GaelpError
from ..pipeline import fit_cached


_READ_ONE = """
import json, os, sys, tempfile, time
from pathlib import Path
path, campaign, layout = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
for file in path.rglob("*"):  # a cold read: this cache's pages dropped from the page cache
    if file.is_file():
        fd = os.open(file, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
import numpy as np
from gaelp_bayes import cache
from gaelp_bayes.runtime import Pacer
def kb(field):
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from here
rss = kb("VmRSS:")
start = time.perf_counter()
if layout == "schema 1":  # what reading a schema-1 cache took: sha256 of runtime.npz, then every array
    cache._sha256(path / "runtime.npz")
    with np.load(path / "runtime.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    out = {"load_ms": 1000 * (time.perf_counter() - start)}
else:
    pacer = Pacer.load(path, 100.0, campaign=campaign, journal=tempfile.mkdtemp(), strict=True)
    out = {"load_ms": 1000 * (time.perf_counter() - start)}
    start = time.perf_counter()
    Pacer.load(path, 100.0, campaign=campaign, journal=tempfile.mkdtemp(), strict=True)
    out["warm_ms"] = 1000 * (time.perf_counter() - start)
    from gaelp_bayes.allocate import allocate
    start = time.perf_counter()
    allocate(str(path), 100.0, campaign=campaign, date="2026-03-02")
    out["allocate_ms"] = 1000 * (time.perf_counter() - start)
out["rss_mb"] = (kb("VmHWM:") - rss) / 1024
print(json.dumps(out))
"""


def bench_cache(sizes: list[int], draws: int = 1000, seed: int = 31) -> None:
    """Pacer.load (and allocate) on caches of many campaigns: time with a cold page cache, and the memory it
    adds, in a fresh process each; beside the schema-1 layout's whole-file read up to 1,000 campaigns."""
    from .. import cache, data, sim

    world = sim.make_world(campaigns=3, seed=seed)
    cells = data.aggregate(data.load_windows(sim.log_history(world, days=28, seed=seed + 1)))
    lines = _header("Cache reads at scale: one campaign out of many") + [
        f"A real fit of 3 simulated campaigns x 4 weeks (world seed {seed}, {draws} runtime draws) is written "
        "as a cache of N campaigns (each campaign's draws a copy of one fitted campaign's; the manifest, "
        "digests and layout as a fit of N campaigns writes them). Each row runs in a fresh process with the "
        "cache's pages dropped from the page cache first (posix_fadvise DONTNEED): *load ms* is "
        "`Pacer.load(..., strict=True)` of one campaign (manifest, its digest check, its draws, the checks "
        "of every number), *warm ms* a second load in the same process, *allocate ms* `allocate` for that "
        "campaign, *added RSS MB* the process's peak resident memory (VmHWM, reset after the imports) beyond "
        "what it held after the imports. "
        "*schema 1*: the previous layout's read (sha256 of the one `runtime.npz`, then every array loaded: "
        "what `Pacer.load` did before this layout), up to 1,000 campaigns (10,000 would need 20 GB of RAM).",
        "", "| campaigns | runtime files GB | layout | load ms | warm ms | allocate ms | added RSS MB |",
        "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        base = fit_cached(cells, Path(tmp) / "base", progress=False, seed=seed, runtime_draws=draws)
        _, fitted = cache.read_runtime(base.path)
        fitted = {key: np.array(a) for key, a in fitted.items()}  # [draw, 4, ...]: 3 campaigns + a new one
        for n in sizes:
            path = Path(tmp) / f"c{n}"
            path.mkdir()
            (path / cache.POSTERIOR).symlink_to(base.path / cache.POSTERIOR)

            def blocks(step: int = 250):
                for first in range(0, n + 1, step):
                    slots = list(range(first, min(first + step, n + 1)))
                    source = [3 if s == n else s % 3 for s in slots]
                    yield slots, {key: a[:, source] for key, a in fitted.items()}

            shapes = cache.write_runtime(path, blocks(), n + 1)
            manifest = {**base.manifest, "campaigns": [f"campaign_{i:05d}" for i in range(n)],
                        "runtime_arrays": shapes,
                        "files": {**base.manifest["files"], cache.DIGESTS: cache._sha256(path / cache.DIGESTS)}}
            cache.write_manifest(path, manifest)
            size = sum(f.stat().st_size for f in (path / cache.RUNTIME).iterdir()) / 1e9
            layouts = ["schema 2"]
            if n <= 1000:
                _, arrays = cache.read_runtime(path)
                np.savez(path / "runtime.npz", campaigns=np.array(manifest["campaigns"]), **arrays)
                layouts.append("schema 1")
            for layout in layouts:
                run = subprocess.run([sys.executable, "-c", _READ_ONE, str(path), f"campaign_{n // 2:05d}", layout],
                                     capture_output=True, text=True)
                if run.returncode:
                    raise GaelpError(f"bench cache: the reading process failed: {run.stderr.strip()[-500:]}")
                r = json.loads(run.stdout.strip().splitlines()[-1])
                cell = lambda key: f"{r[key]:.1f}" if key in r else "-"  # noqa: E731
                lines.append(f"| {n:,} | {size:.2f} | {layout} | {r['load_ms']:.1f} | {cell('warm_ms')} | "
                             f"{cell('allocate_ms')} | {r['rss_mb']:.0f} |")
                print(lines[-1], flush=True)
            shutil.rmtree(path)
    _write("cache", lines)


def bench_runtime(model_dir: str, campaign: str | None, n: int = 200_000) -> None:
    """Per-bid adjust_bid time vs a no-op call, record time, batch throughput, import time, memory."""
    import resource

    code = "import time; t = time.perf_counter(); import gaelp_bayes.runtime; print(time.perf_counter() - t)"
    imports = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
               for _ in range(3)]
    from .. import fleet
    from ..runtime import AUCTION_TIMEOUT, CHECK_EVERY, FLUSH_EVERY, MAX_AUCTION_TIMEOUT, SYNC_EVERY, Pacer

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    manifest = json.loads((Path(model_dir) / "manifest.json").read_text())
    if campaign is None:
        campaign = manifest["campaigns"][0]
    import datetime as _dt

    # 14:00 of the day after the data (today may lie past the forecast horizon of an old cache)
    now = (_dt.datetime.fromisoformat(manifest["period"][1]).astimezone(_dt.timezone.utc).replace(
        hour=14, minute=0, second=0, microsecond=0) + _dt.timedelta(days=1)).timestamp()

    class FullPathPacer(Pacer):
        """Every bid takes adjust_bid's full path: the quick window never opens."""

        def _open_quick_window(self, h: int, limit: float, scale: float) -> None:
            pass

    def load(kind: type = Pacer, **kwargs) -> Pacer:  # strict: a stopped pacer would time its early return
        kwargs.setdefault("journal", tempfile.mkdtemp())
        return kind.load(model_dir, daily_budget=1e9, campaign=campaign, force=True, strict=True, now=now, **kwargs)

    pacer = load()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def noop(bid, now=None):
        return bid

    def stream(fn, start: float, calls: int, raw: float) -> float:
        """us per call of ``fn`` on 10,000 opportunities a second from ``start``, none recorded: each placed
        bid expires after the auction timeout, and after MAX_AUCTION_TIMEOUT teaches the market a loss."""
        begin = time.perf_counter()
        for i in range(calls):
            fn(raw, start + i * 1e-4)
        return (time.perf_counter() - begin) / calls * 1e6

    warm = round((MAX_AUCTION_TIMEOUT + 10) * 1e4)  # calls before the timed runs

    def placed(bidding: Pacer, raw: float = 2e-5) -> float:
        """Best of 3 runs of 20 s of the stream, after MAX_AUCTION_TIMEOUT + 10 s of it: in the steady state,
        where every bid also pays its share of both expiries."""
        stream(bidding.adjust_bid, now, warm, raw)
        return min(stream(bidding.adjust_bid, now + (warm + i * n) * 1e-4, n, raw) for i in range(3))

    base = min(stream(noop, now, n, 1.0) for _ in range(3))
    # a raw bid of 2e-5 on a budget of 1e9 asks for about 0.014, which no cap binds: the common case (the
    # plan is capped by the market's volume; the bids in flight, 0.5 s of them, hold about 70).  A raw bid
    # of 1.0 asks for about 700: the per-bid cap (10% of the hour's allocation) clamps it, on the full path;
    # whether the hour's room then binds depends on the plan (a budget no multiplier can spend leaves the
    # hour all the room: every capped bid is placed).
    # Each its own pacer: the records timed below must not meet the 1,000,000s of bids they hold
    per_bid = placed(load())
    capping = load()
    capped = placed(capping, 1.0)
    then = now + (warm + 3 * n) * 1e-4
    capped_share = sum(capping.adjust_bid(1.0, then + i * 1e-4) > 0 for i in range(10_000)) / 10_000
    full_path = placed(load(FullPathPacer))
    # the clock as a datetime (the README's ``now`` is "an instant"), and an hour whose room is full: a budget
    # of 100 spent to its hour's room first, then bids that the room refuses
    dated = load()
    dated_start = _dt.datetime.fromtimestamp(now, _dt.timezone.utc)
    step = _dt.timedelta(microseconds=100)
    for i in range(warm):
        dated.adjust_bid(2e-5, dated_start + i * step)
    begin = time.perf_counter()
    for i in range(warm, warm + n):
        dated.adjust_bid(2e-5, dated_start + i * step)
    datetime_clock = (time.perf_counter() - begin) / n * 1e6
    stamps = [dated_start + i * step for i in range(n)]  # the same loop's cost of making the datetimes alone
    begin = time.perf_counter()
    for i in range(n):
        noop(2e-5, stamps[i])
    datetime_base = (time.perf_counter() - begin) / n * 1e6
    full = Pacer.load(model_dir, daily_budget=100.0, campaign=campaign, force=True, strict=True, now=now,
                      journal=tempfile.mkdtemp())
    while full.adjust_bid(5.0, now) > 0:  # fill the hour's room: every bid recorded as won at its amount
        full.record(full._bid_b[-1] if full._bid_b else 0.0, clicks=1, now=now)
    full_hour = placed(full, 5.0)
    later = now + (warm + 3 * n) * 1e-4
    full_share = sum(full.adjust_bid(5.0, later + i * 1e-4) > 0 for i in range(10_000)) / 10_000
    from ..runtime import AccountPacer

    account = AccountPacer.load(model_dir, 1e9, journal=tempfile.mkdtemp(), now=now, force=True, strict=True)

    def noop_account(bid, campaign, now=None):
        return bid

    def account_stream(fn, start: float, calls: int, raw: float) -> float:
        """``stream`` for a call that names the campaign, as the account path's does."""
        begin = time.perf_counter()
        for i in range(calls):
            fn(raw, campaign, start + i * 1e-4)
        return (time.perf_counter() - begin) / calls * 1e6

    account_stream(account.adjust_bid, now, warm, 2e-5)
    account_bid = min(account_stream(account.adjust_bid, now + (warm + i * n) * 1e-4, n, 2e-5) for i in range(3))
    account_base = min(account_stream(noop_account, now, n, 1.0) for _ in range(3))
    split_ms = _median_ms(lambda: account.resplit(now + 1e4), 5)
    ledgers = []  # (store, us per placed bid, store operations per 1,000 bids)
    with tempfile.TemporaryDirectory() as tmp:
        stores = [("SQLite", f"sqlite:///{tmp}/ledger.db", None)]
        if fleet.redis_server_path():
            server = fleet.RedisServer(Path(tmp) / "redis").start()
            stores.insert(0, ("Redis", server.url, server))
        for label, url, server in stores:
            bidding = load(ledger=url, journal=None)
            operations = bidding._ledger.operations
            us = placed(bidding)
            ledgers.append((label, us, 1000 * (bidding._ledger.operations - operations) / (warm + 3 * n)))
            bidding.close(now + 1000)
            if server is not None:
                server.stop()
    start = time.perf_counter()
    for i in range(n // 10):
        pacer.record(0.0, now=now + i * 1e-3)
    per_record = (time.perf_counter() - start) / (n // 10) * 1e6
    for i in range(200):  # some clicks and conversions so the learning step has data
        pacer.record(0.5, clicks=1, conversions=int(i % 20 == 0), now=now + 1000 + i)
    learn_ms = _median_ms(lambda: pacer._learn(now + 2000, replan=False), 20)
    replan_ms = _median_ms(lambda: pacer._maybe_replan(14), 10)
    def batches(size: int, every: float, raw: float = 2e-5) -> tuple[float, float]:
        """Bids a second through ``adjust_bids``, batches of ``size`` every ``every`` s of the clock after 20 s
        of them, and the share placed: at raw 2e-5 each bid asks for about 0.014, placed as asked."""
        bidding, batch, count = load(), np.full(size, raw), round(20 / every)
        for i in range(count):
            bidding.adjust_bids(batch, now=now + i * every)
        start, placed = time.perf_counter(), 0
        for i in range(count, 2 * count):
            placed += int(np.count_nonzero(bidding.adjust_bids(batch, now=now + i * every)))
        seconds = time.perf_counter() - start
        return count * size / seconds, placed / (count * size)

    placed_batches = [(size, every, *batches(size, every)) for size, every in ((1_000, 0.1), (10_000, 1.0))]
    batch = np.full(1_000_000, 1e-6)  # below a cent each: all refused
    start = time.perf_counter()
    for _ in range(5):
        pacer.adjust_bids(batch, now=now)
    refused_rate = 5 * batch.size / (time.perf_counter() - start)
    lines = _header("Runtime pacer speed") + [
        "| measure | value | baseline in the same run |", "|---|---|---|",
        f"| adjust_bid per call, bid placed as asked | {per_bid:.2f} us | no-op Python call {base:.2f} us "
        f"(ratio {per_bid / base:.1f}x) |",
        f"| adjust_bid per call, bids beyond the per-bid cap ({100 * capped_share:.0f}% placed, at the cap) | "
        f"{capped:.2f} us | "
        f"ratio {capped / base:.1f}x |",
        f"| adjust_bid per call, bid placed as asked by the full path (quick window kept shut) | {full_path:.2f} us "
        f"| ratio {full_path / base:.1f}x |",
        f"| adjust_bid per call, the clock passed as a datetime, bid placed as asked | {datetime_clock:.2f} us | "
        f"no-op call with a datetime {datetime_base:.2f} us (ratio {datetime_clock / max(datetime_base, 1e-9):.1f}x) |",
        f"| adjust_bid per call, a budget of 100 whose hour's room was filled first ({100 * full_share:.0f}% of the "
        f"bids then placed) | {full_hour:.2f} us | "
        f"ratio {full_hour / base:.1f}x |",
        f"| AccountPacer.adjust_bid per call ({len(account.pacers)} campaigns, one budget), bid placed as asked | "
        f"{account_bid:.2f} us | no-op call naming the campaign {account_base:.2f} us (ratio "
        f"{account_bid / account_base:.1f}x) |",
        f"| the account's split of its money between its campaigns (every 15 minutes of the clock) | "
        f"{split_ms:.1f} ms | |"] + [
        f"| adjust_bid per call, bid placed as asked, {label} ledger | {us:.2f} us | ratio {us / base:.1f}x; "
        f"{ops:.3f} store operations per 1,000 bids |" for label, us, ops in ledgers] + [
        f"| record per call (journal on, no learning check) | {per_record:.2f} us | |",
        f"| learning check (importance weights + today's deviation), every {CHECK_EVERY} records | "
        f"{learn_ms:.2f} ms | amortized {1000 * learn_ms / CHECK_EVERY:.1f} us per record |",
        f"| re-plan of the rest of the day (on hour changes) | {replan_ms:.1f} ms | once an hour |",
        *(f"| adjust_bids batch throughput, batches of {size:,} every {every:g} s of the clock | "
          f"{rate / 1e6:.1f} M bids/s | {100 * share:.1f}% placed (as asked) |"
          for size, every, rate, share in placed_batches),
        f"| adjust_bids batch throughput, a batch of {batch.size:,} bids below a cent (all refused) | "
        f"{refused_rate / 1e6:.1f} M bids/s | |",
        f"| import gaelp_bayes.runtime (fresh process, incl. numpy) | {min(imports) * 1000:.0f} ms | |",
        f"| resident memory added by a loaded pacer | {(rss1 - rss0) / 1024:.1f} MB (peak RSS delta) | "
        f"{pacer.posterior.cvr.shape[0]} draws |"]
    group, window, commits = _journal_commit(pacer.posterior, durable=False)
    _, paced_window, paced_commits = _journal_commit(pacer.posterior, durable=False, rate=10_000)
    durable = _journal_commit(pacer.posterior, durable=True)[0]
    lines += [f"| record with its journal line, group commit (default) | {group:.2f} us | every record fsynced "
              f"before it returns (durable=True): {durable:.2f} us ({durable / group:.0f}x) |",
              f"| journal loss window (record returned -> its group's fsync done), max over {paced_commits} commits, "
              f"10,000 records a second | {paced_window:.1f} ms | commit every {1000 * FLUSH_EVERY:.0f} ms |",
              f"| the same, one thread recording without a pause ({1e6 / group:,.0f} a second), max over "
              f"{commits} commits | {window:.1f} ms | the thread holds Python's GIL: the commit thread waits |",
              "", "The adjust_bid rows: a stream of 10,000 opportunities a second on the clock (`now` advancing "
              "0.1 ms a call), none recorded, timed after the first "
              f"{MAX_AUCTION_TIMEOUT + 10:.0f} s of it: every timed bid also pays its share of both expiries (out "
              f"of flight after the {AUCTION_TIMEOUT:g} s auction timeout; after MAX_AUCTION_TIMEOUT, a loss taught "
              "to the market belief). The no-op call runs in the same loop. With a ledger, the pacer syncs its "
              f"lease every {SYNC_EVERY:g} s of its clock (runtime.SYNC_EVERY), in the time measured."]
    _write("runtime_speed", lines)


def _journal_commit(posterior, durable: bool, seconds: float = 2.0,
                    rate: float | None = None) -> tuple[float, float, int]:
    """Record cost (us) with the journal on, and for group commit the loss window: the longest time (ms)
    from a record's return to the end of the fsync that covers it, and the number of commits.  Records as
    fast as they go, or ``rate`` per second."""
    from ..runtime import Pacer

    with tempfile.TemporaryDirectory() as tmp:
        pacer = Pacer(posterior, 1e9, journal=tmp, now=1_772_409_600.0 + 14 * 3600, durable=durable)
        commits, returned = [], []  # (records written before the commit began, its end); each record's return
        commit = pacer._commit

        def timed_commit():
            before = len(returned)
            commit()
            commits.append((before, time.perf_counter()))

        pacer._commit = timed_commit
        now, start = 1_772_409_600.0 + 14 * 3600, time.perf_counter()
        while time.perf_counter() - start < seconds:
            pacer.record(0.0, now=now)
            returned.append(time.perf_counter())
            if rate is not None:  # wait for the next record's slot, as a bidder waits for its exchange
                wait = start + len(returned) / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
        per_record = 1e6 * (returned[-1] - start) / len(returned)
        pacer.close()
    windows, k = [], 0
    for i, t in enumerate(returned):
        while k < len(commits) and commits[k][0] <= i:  # a commit that began before record i was written
            k += 1
        if k < len(commits):
            windows.append(commits[k][1] - t)
    return per_record, 1000 * max(windows, default=0.0), len(commits)


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def bench_allocation_speed(model_dir: str = "models/demo", campaign: str = "campaign_01") -> None:
    """Time one allocation with its scores from the cached draws (median of repeats)."""
    from .. import allocate as al
    from .. import cache

    manifest, arrays = cache.read_runtime(model_dir)
    _, draws, _ = al.campaign_draws(arrays, manifest, campaign, 0)

    lines = _header(f"Allocation speed ({draws.cvr.shape[0]} draws x 24 hours)") + [
        "| operation | median ms | aim |", "|---|---|---|",
        f"| plan + confidence + all scores (allocate_draws) | {_median_ms(lambda: al.allocate_draws(draws, 100), 30):.1f} | < 50 |",
        f"| risk-averse CVaR plan (HiGHS LP) + scores | {_median_ms(lambda: al.allocate_draws(draws, 100, risk='cvar'), 5):.1f} | |",
        f"| with a 10% exploration reserve | {_median_ms(lambda: al.allocate_draws(draws, 100, exploration=0.1), 30):.1f} | |",
        f"| allocate() from the cache (read, sha256-verify, slice, plan) | "
        f"{_median_ms(lambda: al.allocate(model_dir, 100, campaign=campaign, date='2026-03-02'), 5):.1f} | |"]
    _write("allocation_speed", lines)


def bench_events(rows: int = 1_000_000) -> None:
    """`windows` on a raw log of ``rows`` events, and fit time for 10% of the rows vs all of them."""
    import pandas as pd

    from .. import data, model
    from ..data import read_table, windows_from_events

    rng = np.random.default_rng(0)
    t0 = pd.Timestamp("2026-01-05", tz="UTC").value // 10**9
    hours = rng.integers(0, 28 * 24, rows)
    rate = 0.02 * (1 + 0.5 * np.sin(2 * np.pi * (hours % 24) / 24))
    events = pd.DataFrame({"time": pd.to_datetime(t0 + hours * 3600 + rng.integers(0, 3600, rows), unit="s",
                                                  utc=True).strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "outcome": (rng.uniform(size=rows) < rate).astype(int),
                           "campaign": rng.choice(["a", "b", "c"], rows), "cost": rng.gamma(4, 0.25, rows).round(4)})
    lines = _header(f"Raw event logs: aggregation and fit cost ({rows:,} events, 3 campaigns, 4 weeks)") + [
        "| events | read CSV s | windows s | windows | cells | fit s (500 tune + 500 draws x 2 chains) |",
        "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for n in (rows // 10, rows):
            path = Path(tmp) / f"events_{n}.csv"
            events.iloc[:n].to_csv(path, index=False)
            t = time.perf_counter()
            frame = read_table(path)
            t_read = time.perf_counter() - t
            t = time.perf_counter()
            windows = windows_from_events(frame, "time", "outcome", group="campaign", cost="cost")
            t_win = time.perf_counter() - t
            cells = data.aggregate(data.load_windows(windows))
            fitted = model.fit(cells, draws=500, tune=500, chains=2, progress=False)
            lines.append(f"| {n:,} | {t_read:.2f} | {t_win:.2f} | {len(windows)} | {len(cells.clicks)} | "
                         f"{fitted.seconds:.1f} |")
            print(lines[-1], flush=True)
    lines += ["", "The likelihood sees only the cells (campaign x day-of-week x hour sums), so ten times the rows "
              "costs the fit nothing once aggregated; the second fit also reuses the compiled model."]
    _write("events", lines)


FROZEN_SECONDS = 20.0  # the frozen-store measurement's length
FLEET_RUNS = {  # row: run_fleet keyword arguments ("ledger": which store; the outage needs the Redis server)
    "1 process alone (baseline)": {"processes": 1},
    "4 processes, no ledger (before)": {"processes": 4},
    "4 processes, Redis ledger; SIGKILL one at 12:00, restart one at 16:00": {
        "processes": 4, "ledger": "redis", "kill": (1, 12.0), "restart": (2, 16.0)},
    "the same, and Redis stopped from 13:00 to 13:30": {
        "processes": 4, "ledger": "redis", "kill": (1, 12.0), "restart": (2, 16.0), "outage": (13.0, 13.5)},
    "4 processes, SQLite ledger (one machine); SIGKILL at 12:00, restart at 16:00": {
        "processes": 4, "ledger": "sqlite", "kill": (1, 12.0), "restart": (2, 16.0)},
}


def bench_fleet(seed: int = 93, campaigns: int = 3, outage_seconds: float = 30.0, n: int = 200_000) -> None:
    """Bidder processes sharing one campaign-day's budget (``fleet.run_fleet``) beside one process alone and 4
    without a ledger; then the hot path with a ledger, store operations per 1,000 bids and the lease round trip."""
    import datetime as _dt

    import pandas as pd
    import redis

    from .. import data, fleet, sim
    from ..ledger import Ledger, Sync
    from ..runtime import Pacer

    world = sim.make_world(campaigns=campaigns, seed=seed, volume_scale=10.0)
    history = sim.log_auction_history(world, days=35, seed=seed + 1)
    cells = data.aggregate(data.load_windows(history))
    date = str(pd.Timestamp("2026-01-05") + pd.Timedelta(days=35))[:10]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, fleet.RedisServer(Path(tmp) / "redis") as server:
        model = Path(tmp) / "m"
        fitted = fit_cached(cells, model, progress=False, seed=seed).fit
        for c, name in enumerate(world.campaigns):
            day = sim.auction_day(world, c, date, seed=seed + 100 + c)
            budget, raw = sim.usual_budget(history, name), sim.raw_bid(world, c)
            for i, (label, spec) in enumerate(FLEET_RUNS.items()):
                kwargs = dict(spec)
                store = kwargs.pop("ledger", None)
                if store == "redis":
                    redis.Redis.from_url(server.url).flushdb()
                    kwargs["ledger"] = server.url
                elif store == "sqlite":
                    kwargs["ledger"] = f"sqlite:///{tmp}/ledger-{c}-{i}.db"
                if "outage" in kwargs:
                    kwargs["outage"] = (*kwargs["outage"], outage_seconds)
                    kwargs["server"] = server
                t0 = time.perf_counter()
                run = fleet.run_fleet(day, raw, budget, model, name, **kwargs)
                syncs = max([(s["ledger"] or {}).get("fleet_syncs") or 0 for s in run["statuses"]], default=0)
                rows.append({"campaign": name, "run": label, "budget": budget, "spent": round(run["spent"], 2),
                             "over_budget": round(run["overspend"], 2),
                             "utilization_pct": round(100 * run["utilization"], 2),
                             "conversions": round(run["expected_conversions"], 2), "bids": run["bids"],
                             "store_ops": syncs, "store_ops_per_1000_bids": round(1000 * syncs / run["bids"], 1),
                             "wall_s": round(time.perf_counter() - t0, 1)})
                print(rows[-1], flush=True)
        # the hot path: one process bidding as fast as it can on the wall clock (adjust_bid alone; then with a
        # third of the bids won and recorded)
        def calls(adjust, raw: float, bids: int) -> float:
            """us per call of ``adjust(raw)`` (a pacer's ``adjust_bid``, or the no-op: the same loop)."""
            start = time.perf_counter()
            for _ in range(bids):
                adjust(raw)
            return (time.perf_counter() - start) / bids * 1e6

        def with_wins(pacer, raw: float, bids: int) -> float:
            """us per bid when every bid carries an id and a third are recorded by it: without ids a record
            looks through every bid held (up to 120 s of them), which at this rate costs milliseconds."""
            price = 0.5 * raw * pacer.status()["bid_factor"]
            start = time.perf_counter()
            for i in range(bids):
                if pacer.adjust_bid(raw, bid_id=i) > 0 and i % 3 == 0:
                    pacer.record(price, clicks=1, bid_id=i)
            return (time.perf_counter() - start) / bids * 1e6

        def placed(pacer) -> int:  # bids placed so far
            return pacer._bid_offset + len(pacer._bid_t)

        def noop(bid, now=None):
            return bid

        base = min(calls(noop, 1.0, n) for _ in range(3))
        hot = []
        name = world.campaigns[0]
        for label, kwargs in (("alone (journal on disk)", {"journal": Path(tmp) / "journal"}),
                              ("Redis ledger", {"ledger": server.url}),
                              ("SQLite ledger", {"ledger": f"sqlite:///{tmp}/hot.db"})):
            pacer = Pacer.load(model, daily_budget=1e7, campaign=name, strict=True, **kwargs)
            # a raw bid that asks for about 1/100,000 of the hour's plan (at least 0.01): placed as asked, as
            # most bids are, not capped (the full path: ``bench runtime`` times it)
            s = pacer.status()
            raw = max(0.01, 1e-5 * s["plan"][s["hour"]]) / s["bid_factor"]
            with_wins(pacer, raw, 10_000)  # warm
            before = placed(pacer)
            alone_us = min(calls(pacer.adjust_bid, raw, n) for _ in range(3))
            share = (placed(pacer) - before) / (3 * n)
            ops = pacer._ledger.operations if pacer._ledger else 0
            mixed_us = with_wins(pacer, raw, n)
            ops = (pacer._ledger.operations - ops) if pacer._ledger else 0
            hot.append((label, alone_us, share, mixed_us, ops,
                        pacer._ledger.seconds / max(pacer._ledger.operations, 1) * 1e3 if pacer._ledger else None))
            pacer.close()
        # a store that hangs (SIGSTOP: connections open, no answers, as behind a network partition)
        pacer = Pacer.load(model, daily_budget=1e7, campaign=name, strict=True, ledger=server.url)
        server.freeze()
        frozen = {"calls": 0, "placed": 0, "worst": 0.0, "blocked": 0.0}
        start = time.perf_counter()
        while time.perf_counter() < start + FROZEN_SECONDS:
            t0 = time.perf_counter()
            frozen["placed"] += pacer.adjust_bid(1.0) > 0
            took = time.perf_counter() - t0
            frozen["calls"] += 1
            frozen["worst"] = max(frozen["worst"], took)
            frozen["blocked"] += took if took > 0.01 else 0.0
        server.thaw()
        thawed = time.perf_counter()
        while pacer.status()["ledger"]["unreachable"] and time.perf_counter() < thawed + 30:
            pacer.adjust_bid(1.0)
        frozen["resumed"] = time.perf_counter() - thawed
        pacer.close()
        round_trips = {}
        for label, url in (("Redis", server.url), ("SQLite", f"sqlite:///{tmp}/rtt.db")):
            ledger = Ledger(url, "rtt")
            times = []
            for i in range(500):
                t0 = time.perf_counter()
                ledger.sync(_dt.date.today().isoformat(), Sync(ledger.holder, time.time(), 100.0, 0.001, {i % 288: 1.0},
                                                               {i % 24: 0.0}, want=1.0, lines=['{"t": 0}']))
                times.append(time.perf_counter() - t0)
            round_trips[label] = np.percentile(times, [50, 99]) * 1e3
            ledger.close()
    table = pd.DataFrame(rows)
    alone = table[table["run"] == next(iter(FLEET_RUNS))].set_index("campaign")["conversions"]
    table["conversions_vs_alone_pct"] = (100 * table["conversions"] / table["campaign"].map(alone)).round(2)
    summary = table.groupby("run", sort=False).agg(
        spent=("spent", "sum"), budget=("budget", "sum"), max_over_budget=("over_budget", "max"),
        min_utilization_pct=("utilization_pct", "min"), conversions=("conversions", "sum"),
        min_conversions_vs_alone_pct=("conversions_vs_alone_pct", "min"),
        store_ops_per_1000_bids=("store_ops_per_1000_bids", "mean"))
    summary["conversions_vs_alone_pct"] = (100 * summary["conversions"] / summary["conversions"].iloc[0]).round(2)

    lines = _header(f"Fleet: bidder processes sharing one budget (world seed {seed}, {campaigns} campaigns x 1 day, "
                    f"fit gate {'pass' if fitted.diagnostics.passed else 'FAIL'})") + [
        "Each campaign-day's auction stream (second price; ~10x the demo's traffic) is dealt round robin to the "
        "bidder processes (real OS processes, `fleet.run_fleet`); conversions are expected conversions (true "
        "rates of the auctions won). The budget is half the campaign's usual daily spend. `store_ops_per_1000_bids` "
        "here is per opportunity: this stream brings a process an opportunity every several seconds, more "
        f"rarely than its periodic sync (runtime.SYNC_EVERY), so nearly every bid syncs; the hot-path table below "
        "measures a process bidding as fast as it can. The Redis outage: the server stopped (SIGTERM) at 13:00 of "
        f"the stream and started again at 13:30, at least {outage_seconds:.0f} s of wall time later.", "",
        "## Per run, summed over campaigns", "", _markdown(summary), "", "## Per campaign", "", _markdown(table), "",
        "## Hot path: one process bidding as fast as it can (wall clock); then with bid ids, a third of the bids "
        "won and recorded by id", "",
        f"No-op Python call in the same run and the same loop (`noop(raw)` where the pacer's rows call "
        f"`adjust_bid(raw)`): {base:.3f} us. `adjust_bid` reads the wall clock here (`now=None`), "
        "so its periodic syncs are counted in its time.", "",
        "| pacer | adjust_bid per call | ratio to the no-op | bids placed | adjust_bid + record (a third won, by id), "
        "per bid | store operations per 1,000 bids (with records) | mean sync |", "|---|---|---|---|---|---|---|"]
    for label, alone_us, share, mixed_us, ops, sync_ms in hot:
        lines.append(f"| {label} | {alone_us:.2f} us | {alone_us / base:.1f}x | {100 * share:.1f}% | "
                     f"{mixed_us:.2f} us | "
                     f"{1000 * ops / n:.3f} | {'' if sync_ms is None else f'{sync_ms:.2f} ms'} |")
    lines += ["", f"## A store that hangs: Redis frozen (SIGSTOP) for {FROZEN_SECONDS:.0f} s while one process bids "
              "as fast as it can", "",
              f"{frozen['calls']:,} calls, {frozen['placed']:,} placed (what the lease held when it froze covered); "
              f"the longest call took {1000 * frozen['worst']:.0f} ms; calls held back by a sync attempt (> 10 ms) took "
              f"{100 * frozen['blocked'] / FROZEN_SECONDS:.1f}% of the time (attempts after 1, 2, 4, 8, 8, ... s, "
              f"each up to ledger.SOCKET_TIMEOUT); after the thaw, bidding resumed {frozen['resumed']:.1f} s later "
              "(the next attempt).",
              "", "## Lease round trip (one sync: report, take a lease), 500 in a row", "",
              "| store | median | 99th percentile |", "|---|---|---|"]
    lines += [f"| {label} | {p50:.3f} ms | {p99:.3f} ms |" for label, (p50, p99) in round_trips.items()]
    _write("fleet", lines)
