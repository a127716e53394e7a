"""A fleet of bidder processes on one auction stream, for the fleet benchmark and tests.

The exchange (this process) deals each opportunity of a simulated day (``sim.AuctionDay``) to one live
bidder process, round robin; the process's pacer (``Pacer.load`` on a model cache, with or without a
shared ledger) bids; the exchange runs the second-price auction and reports the outcome to that process.
Bidders are real OS processes: one can be killed with SIGKILL (its bids and records stop there) and
another restarted in its place (a new process: it knows only what the ledger tells it).  The ledger's store
is a real ``redis-server`` (``RedisServer``), which can be stopped for a while mid-day.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 60.0  # seconds a bidder process may take to load its pacer
REDIS_SERVER_PATHS = ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server")


def redis_server_path() -> str | None:
    """Debian's redis-server (the Makefile installs it), or one on PATH; None if there is none."""
    found = shutil.which("redis-server")
    return found or next((p for p in REDIS_SERVER_PATHS if Path(p).exists()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real redis-server on 127.0.0.1, on a free port, its data (append-only file) in ``folder``: started,
    stopped (SHUTDOWN: the data is on disk) and started again with the same data."""

    def __init__(self, folder: str | Path, port: int | None = None):
        self.exe = redis_server_path()
        if self.exe is None:
            raise FileNotFoundError("redis-server is not installed (Debian: apt-get install redis-server; "
                                    "`make test` installs it where it can)")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "RedisServer":
        import redis

        self._proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--save", "", "--logfile", "redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port} (see {self.folder}/redis.log)")
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()  # SIGTERM: redis shuts down cleanly, its append-only file complete
            self._proc.wait(10)
        self._proc = None

    def freeze(self) -> None:
        """SIGSTOP: the server hangs (connections open, no answers), as behind a network partition."""
        os.kill(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self._proc.pid, signal.SIGCONT)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _bidder(conn, model_dir: str, campaign: str, budget: float, start: float, ledger: str | None,
            journal: str | None, plan_options: dict) -> None:
    """One bidder process: a pacer answering the exchange's messages until told to close."""
    from .runtime import Pacer

    pacer = Pacer.load(model_dir, daily_budget=budget, campaign=campaign, now=start, ledger=ledger,
                       journal=journal, strict=True, **plan_options)
    conn.send("ready")
    while True:
        kind, *args = conn.recv()
        if kind == "bid":
            conn.send(pacer.adjust_bid(args[0], now=args[1]))
        elif kind == "record":
            pacer.record(args[0], clicks=args[1], conversions=args[2], now=args[3])
        elif kind == "close":
            status = pacer.status(args[0])
            pacer.close(now=args[0])
            conn.send(status)
            return


@dataclass
class Bidder:
    process: mp.Process
    conn: object
    name: str


def _spawn(name: str, model_dir: str, campaign: str, budget: float, start: float, ledger: str | None,
           journal: str | None, plan_options: dict) -> Bidder:
    ctx = mp.get_context("spawn")  # a clean interpreter, as a separate bidder would be
    mine, theirs = ctx.Pipe()
    process = ctx.Process(target=_bidder, args=(theirs, model_dir, campaign, budget, start, ledger, journal,
                                                plan_options), daemon=True, name=name)
    process.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not mine.poll(0.1):
        if process.exitcode is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"bidder {name} did not start (exit code {process.exitcode})")
    if mine.recv() != "ready":
        raise RuntimeError(f"bidder {name} did not start")
    return Bidder(process, mine, name)


def run_fleet(day, raw: float, budget: float, model_dir: str | Path, campaign: str, processes: int = 4,
              ledger: str | None = None,
              kill: tuple[int, float] | None = None, restart: tuple[int, float] | None = None,
              outage: tuple[float, float, float] | None = None, server: RedisServer | None = None,
              report_losses: bool = True, plan_options: dict | None = None) -> dict:
    """Pace one campaign-day's auction stream with ``processes`` bidders (see the module doc).

    ``kill=(i, hour)``: bidder ``i`` is killed (SIGKILL) at that hour and not replaced; ``restart=(i, hour)``:
    bidder ``i`` is killed and a new process takes its place; ``outage=(from_hour, to_hour, seconds)``: the
    ledger's ``server`` is stopped over those hours of the stream, and for at least ``seconds`` of wall time.
    Without ``ledger`` each bidder paces the whole budget alone (with a journal of its own, in a
    temporary folder).
    Returns spend, expected conversions (true rates of the auctions won), bids and the bidders' statuses."""
    start = float(day.start)
    journals = tempfile.TemporaryDirectory()  # without a ledger: each bidder's own journal

    def spawn(i: int, generation: int = 0, at: float = start) -> Bidder:
        journal = None if ledger is not None else str(Path(journals.name) / f"bidder{i}.{generation}")
        return _spawn(f"bidder{i}", str(model_dir), campaign, budget, at, ledger, journal, plan_options or {})

    events = []  # (hour, what, bidder)
    if kill:
        events.append((kill[1], "kill", kill[0]))
    if restart:
        events.append((restart[1], "restart", restart[0]))
    if outage:
        events += [(outage[0], "stop", -1), (outage[1], "resume", -1)]
    events.sort()
    spent = expected = conversions = 0.0
    bids = placed = placed_after_outage = 0
    resumed = start + 3600 * outage[1] if outage else float("inf")
    stopped_at = None
    statuses, turn = [], 0
    bidders: list[Bidder | None] = []
    try:
        bidders += [spawn(i) for i in range(processes)]
        for t, price, rate, converts in zip(day.times.tolist(), day.prices.tolist(), day.cvr.tolist(),
                                            day.converts.tolist()):
            while events and t >= start + 3600 * events[0][0]:
                _, what, i = events.pop(0)
                if what in ("kill", "restart"):
                    bidders[i].process.kill()
                    bidders[i].process.join()
                    bidders[i] = spawn(i, 1, t) if what == "restart" else None
                elif what == "stop":
                    server.stop()
                    stopped_at = time.monotonic()
                else:
                    time.sleep(max(0.0, outage[2] - (time.monotonic() - stopped_at)))
                    server.start()
            live = [b for b in bidders if b is not None]
            bidder = live[turn % len(live)]
            turn += 1
            bidder.conn.send(("bid", raw, t))
            bid = bidder.conn.recv()
            bids += 1
            placed += bid > 0
            placed_after_outage += bid > 0 and t >= resumed
            if bid > price:
                spent += price
                expected += rate
                conversions += converts
                bidder.conn.send(("record", price, 1, int(converts), t))
            elif bid > 0 and report_losses:
                bidder.conn.send(("record", 0.0, 0, 0, t))
        for bidder in bidders:
            if bidder is not None:
                bidder.conn.send(("close", start + 86_399.0))
                statuses.append(bidder.conn.recv())
                bidder.process.join()
    finally:  # on an error too: no bidder outlives the run
        for bidder in bidders:
            if bidder is not None and bidder.process.is_alive():
                bidder.process.kill()
        journals.cleanup()
    return {"processes": processes, "ledger": ledger is not None, "spent": spent, "budget": budget,
            "utilization": spent / budget, "overspend": max(0.0, spent - budget), "expected_conversions": expected,
            "conversions": conversions, "bids": bids, "bids_placed": placed,
            "placed_after_outage": placed_after_outage if outage else None, "statuses": statuses}
