"""A fleet's shared ledger: one campaign-day's budget, leases, outcomes and journal in a store that every
bidder process reaches.  Standard library only, plus the ``redis`` client for ``redis://`` URLs (imported
when one is used), so the runtime can import this lazily and stay numpy + stdlib.

    redis://HOST:PORT/DB          a Redis server (many machines)
    sqlite:////abs/path/ledger.db a SQLite file in WAL mode (one machine, no server): an absolute path, so that
                                  bidders started in different folders share one file

A process never asks the store per bid.  It holds a **lease**: an amount of the budget it may commit to bids
(placed and not yet settled, or spent) without asking anyone; it ``sync``\\ s when the lease runs short or
every few seconds, reporting what it spent and learned since and asking for the lease it wants next.  One
sync is one atomic update of the campaign-day's state (Redis: WATCH/MULTI/EXEC on one key, retried on a
conflict; SQLite: one ``BEGIN IMMEDIATE`` transaction), computed by the one function ``apply_sync``, so
both stores keep the same rule:

    spent + sum(leases) <= budget      (a lease is granted only from what is neither spent nor leased)

A lease is never taken back: a process that dies keeps it, so money it committed to bids before it could
report them is still covered (the fleet loses at most that lease, never overspends); a process that stops
returns the rest of its lease (``want`` = what its bids in flight hold).

State (one JSON document under ``gaelp:{campaign}:{date}:state``): ``budget``, ``spent``, ``leases``
{holder: [amount, last sync time]}, ``clicks`` per 5-minute bin of the day (to the last bin with a click),
``conversions`` per hour (of the click), ``controller`` [L, its time] of the last sync, ``market``: the
auctions' statistics (summed over the fleet: ``MarketBelief.statistics``), ``plan``: the newest re-plan of
the day (every holder paces on it, so that their controllers track one curve), ``syncs``, and ``digest``: a
hash of the rest, so that a state edited by hand or damaged is refused (``check_state``) rather than spent
from.  The records' journal lines are appended to the list ``gaelp:{campaign}:{date}:journal`` in the same
transaction.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import reprlib
import secrets
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

# seconds: a store that does not answer in time is unreachable for this sync.  A sync runs inside the pacer's
# lock, so a store that hangs (a network partition, a frozen server) holds bids back this long per attempt;
# a store in the bidders' data centre answers in about a millisecond (reports/benchmarks/fleet.md)
CONNECT_TIMEOUT = 0.05
SOCKET_TIMEOUT = 0.1
SQLITE_LOCK_TIMEOUT = 0.25  # seconds a SQLite sync waits for another process's transaction (each takes ~0.4 ms)
MAX_RETRIES = 100  # optimistic-transaction conflicts before a sync gives up (then: unreachable)
CLICK_BINS = 25 * 12  # 5-minute bins of the longest day (25 hours: daylight saving ending)
DIGEST_KEY = "digest"
URL_FORMS = "redis://HOST:PORT/DB or sqlite:////absolute/path/ledger.db"


class LedgerUnavailable(Exception):
    """The store could not be reached (or kept conflicting): nothing was changed by this sync."""


@dataclass
class Sync:
    """What one process reports and asks for: spend, clicks and conversions booked since its last sync,
    journal lines, its controller state, and the lease it wants to hold afterwards (``want``; it must cover
    the bids it has in flight)."""

    holder: str
    now: float
    budget: float
    spent: float = 0.0
    clicks: dict[int, float] = field(default_factory=dict)  # 5-minute bin of the day -> clicks
    conversions: dict[int, float] = field(default_factory=dict)  # hour of the click -> conversions
    want: float = 0.0
    controller: tuple[float, float] | None = None
    market: list[float] | None = None  # the market statistics learned since (``MarketBelief.statistics``)
    plan: dict | None = None  # a plan this process made (``version``, ``holder``, ...): the fleet's if newer
    lines: list[str] = field(default_factory=list)


@dataclass
class Fleet:
    """The campaign-day after a sync: the whole fleet's spend and outcomes, and this holder's lease."""

    budget: float
    spent: float
    lease: float
    leased: float  # every holder's lease, this one's included
    holders: int
    clicks: list[float]
    conversions: list[float]
    controller: tuple[float, float] | None
    market: list[float] | None  # the fleet's market statistics of the day
    plan: dict | None  # the fleet's plan (the newest any holder made), None while every holder paces the morning's
    syncs: int


def new_state(budget: float) -> dict:
    return {"budget": budget, "spent": 0.0, "leases": {}, "clicks": [],
            "conversions": [0.0] * 24, "controller": None, "market": None, "plan": None,
            "syncs": 0}


def check_state(state: dict) -> None:
    """A stored state this package could have written, or a ``ValueError`` saying what is wrong with it: the
    ledger is the fleet's money, and a state edited by hand or damaged (a negative spend, leases beyond the
    budget, a field of the wrong shape) must stop the fleet, not be spent from or crash its bidders."""
    def money(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0

    def amounts(value, lengths: range) -> bool:
        return isinstance(value, list) and len(value) in lengths and all(money(v) for v in value)

    if not isinstance(state, dict):
        raise ValueError(f"the stored state is {type(state).__name__}, not a campaign-day's state")
    digest = state.get(DIGEST_KEY)
    if digest is not None and digest != state_digest(state):
        raise ValueError("it was edited: its digest does not match what the pacers wrote (to start the day again, "
                         "delete the state and the day's journal)")
    budget, spent, leases = state.get("budget"), state.get("spent"), state.get("leases")
    if not (money(budget) and budget > 0):
        raise ValueError(f"its budget {budget!r} is not an amount > 0")
    if not money(spent):
        raise ValueError(f"its spend {spent!r} is not an amount >= 0")
    if not isinstance(leases, dict) or not all(isinstance(v, list) and len(v) == 2 and money(v[0])
                                                and isinstance(v[1], (int, float)) for v in leases.values()):
        raise ValueError(f"its leases {leases!r} are not {{holder: [amount >= 0, time]}}")
    committed = spent + math.fsum(v[0] for v in leases.values())
    if committed > budget * (1 + 1e-9) + 1e-9:
        raise ValueError(f"its spend and leases ({committed:g}) exceed its budget ({budget:g})")
    rules = {"clicks": (lambda v: amounts(v, range(CLICK_BINS + 1)), f"at most {CLICK_BINS} counts >= 0"),
             "conversions": (lambda v: amounts(v, range(24, 25)), "24 counts >= 0"),
             "controller": (lambda v: v is None or (isinstance(v, list) and len(v) == 2 and all(
                 isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)),
                 "null or [L, time]"),
             "market": (lambda v: v is None or (isinstance(v, list) and all(
                 isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)),
                 "null or a list of numbers"),
             "plan": (_valid_plan, "null or a plan as a pacer writes it"),
             "syncs": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a count >= 0")}
    for key, (valid, rule) in rules.items():
        if key in state and not valid(state[key]):
            raise ValueError(f"its {key} {reprlib.repr(state[key])} is not {rule}")


def _valid_plan(plan) -> bool:
    """A plan as ``Pacer._plan_state`` writes it (or None): version, holder, log bid factors and spend per hour
    of the day, and the market it was made for."""
    if plan is None:
        return True
    if not (isinstance(plan, dict) and {"version", "holder", "log_k", "alloc", "market"} <= set(plan)):
        return False
    log_k, alloc, market = plan["log_k"], plan["alloc"], plan["market"]
    return (isinstance(plan["version"], int) and not isinstance(plan["version"], bool) and plan["version"] >= 0
            and isinstance(plan["holder"], str)
            and isinstance(log_k, list) and isinstance(alloc, list) and 23 <= len(log_k) == len(alloc) <= 25
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v < math.inf and v == v for v in log_k)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < math.inf for v in alloc)
            and isinstance(market, list) and len(market) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in market))


def state_digest(state: dict) -> str:
    """A digest of everything in the state but the digest itself (written with every update, checked on
    every read): a state edited by hand or damaged is refused, not spent from."""
    body = json.dumps({k: v for k, v in state.items() if k != DIGEST_KEY}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def sealed(state: dict) -> str:
    """The state as stored: its JSON with its digest."""
    return json.dumps({**state, DIGEST_KEY: state_digest(state)})


def apply_sync(state: dict | None, sync: Sync) -> tuple[dict, Fleet]:
    """The one ledger rule, applied inside the store's transaction: book the holder's spend and outcomes
    against its lease, then grant the lease it wants from what is neither spent nor leased to others.
    A budget other than the campaign-day's, or a stored state that fails ``check_state``, is a
    ``ValueError`` (nothing changes)."""
    if state is not None:
        try:
            check_state(state)
        except ValueError as exc:
            raise ValueError(f"the campaign-day's state in the ledger is not valid ({exc}): repair or delete it") from None
    state = new_state(sync.budget) if state is None else {**new_state(state["budget"]), **state}  # keys added since
    if state["market"] is not None and sync.market is not None and len(state["market"]) != len(sync.market):
        raise ValueError(f"the campaign-day's market in the ledger has {len(state['market'])} statistics, this "
                         f"pacer's {len(sync.market)}: repair or delete the state")
    if abs(state["budget"] - sync.budget) > 1e-9:
        raise ValueError(f"the ledger holds a daily budget of {state['budget']:g} for this campaign-day; this "
                         f"pacer was given {sync.budget:g} (every process of a fleet must pace the same budget)")
    leases = state["leases"]
    leases.pop(sync.holder, None)  # its lease is granted anew: the spend it reports came out of it
    state["spent"] += sync.spent
    others = math.fsum(amount for amount, _ in leases.values())
    free = state["budget"] - state["spent"] - others
    lease = max(min(sync.want, free), 0.0)
    if lease > 0 or sync.want > 0:
        leases[sync.holder] = [lease, sync.now]
    clicks = state["clicks"]
    for b, n in sync.clicks.items():
        clicks.extend([0.0] * (b + 1 - len(clicks)))  # as long as the latest bin with a click
        clicks[b] += n
    for h, n in sync.conversions.items():
        state["conversions"][h] += n
    if sync.controller is not None:
        state["controller"] = list(sync.controller)
    if sync.market is not None:
        market = state["market"] or [0.0] * len(sync.market)
        state["market"] = [a + b for a, b in zip(market, sync.market)]
    if sync.plan is not None and (state["plan"] is None or sync.plan["version"] > state["plan"]["version"]):
        state["plan"] = sync.plan
    state["syncs"] += 1
    controller = tuple(state["controller"]) if state["controller"] else None
    return state, Fleet(state["budget"], state["spent"], lease, others + lease, len(leases), state["clicks"],
                        state["conversions"], controller, state["market"], state["plan"],
                        state["syncs"])


def _stored(raw, journal_length) -> dict | None:
    """The state read from a store (None: the campaign-day has not started).  A missing or ``null`` state
    beside journal lines of the day is a ``ValueError``: the day's spend would restart at 0 (the journal
    holds what was spent)."""
    try:
        state = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"the campaign-day's state in the ledger is not JSON ({exc}): repair or delete it") from None
    if state is None and journal_length():
        raise ValueError("the campaign-day's state is missing from the ledger, but its journal holds records of the "
                         "day: its spend would restart at 0; restore the state, or delete the day's journal too")
    return state


def holder_name() -> str:
    """A name no other process shares: host, process id and a random tag (a restarted process is a new holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def keys(campaign: str, date: str) -> tuple[str, str]:
    """The store keys (state, journal) of a campaign-day."""
    return f"gaelp:{campaign}:{date}:state", f"gaelp:{campaign}:{date}:journal"


class RedisStore:
    """Ledger state in Redis: each sync is WATCH state / GET / MULTI SET + RPUSH journal / EXEC."""

    def __init__(self, url: str):
        import redis  # the client, only where a redis:// ledger is used

        self._errors = redis.RedisError  # connection, timeout, authentication, a database out of range, ...
        self._watch_error = redis.WatchError
        self._client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT,
                                            socket_timeout=SOCKET_TIMEOUT)

    def update(self, campaign: str, date: str, sync: Sync) -> Fleet:
        state_key, journal_key = keys(campaign, date)
        try:
            with self._client.pipeline() as pipe:
                for _ in range(MAX_RETRIES):
                    try:
                        pipe.watch(state_key)
                        raw = pipe.get(state_key)
                        state = _stored(raw, lambda: pipe.llen(journal_key))
                        state, fleet = apply_sync(state, sync)
                        pipe.multi()
                        pipe.set(state_key, sealed(state))
                        if sync.lines:
                            pipe.rpush(journal_key, *sync.lines)
                        pipe.execute()
                        return fleet
                    except self._watch_error:  # another holder synced in between: read again
                        continue
        except self._errors as exc:
            raise LedgerUnavailable(f"redis: {exc}") from None
        raise LedgerUnavailable(f"redis: {MAX_RETRIES} conflicting updates in a row")

    def journal(self, campaign: str, date: str) -> list[str]:
        return [line.decode() for line in self._client.lrange(keys(campaign, date)[1], 0, -1)]

    def close(self) -> None:
        self._client.close()


class SqliteStore:
    """Ledger state in a SQLite file (WAL, synchronous=FULL): each sync is one BEGIN IMMEDIATE transaction."""

    def __init__(self, path: str):
        self.path = Path(path)
        self._db = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=SQLITE_LOCK_TIMEOUT, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE IF NOT EXISTS ledger (key TEXT PRIMARY KEY, state TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS journal (key TEXT NOT NULL, line TEXT NOT NULL)")
            self._db = db
        return self._db

    def update(self, campaign: str, date: str, sync: Sync) -> Fleet:
        state_key, journal_key = keys(campaign, date)
        try:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT state FROM ledger WHERE key = ?", (state_key,)).fetchone()
                state = _stored(row[0] if row else None, lambda: db.execute(
                    "SELECT COUNT(*) FROM journal WHERE key = ?", (journal_key,)).fetchone()[0])
                state, fleet = apply_sync(state, sync)
                db.execute("INSERT OR REPLACE INTO ledger (key, state) VALUES (?, ?)", (state_key, sealed(state)))
                db.executemany("INSERT INTO journal (key, line) VALUES (?, ?)", [(journal_key, s) for s in sync.lines])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return fleet
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"sqlite {self.path}: {exc}") from None

    def journal(self, campaign: str, date: str) -> list[str]:
        rows = self._connect().execute("SELECT line FROM journal WHERE key = ? ORDER BY rowid",
                                       (keys(campaign, date)[1],))
        return [r[0] for r in rows]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def open_store(url: str) -> RedisStore | SqliteStore:
    """The store a ledger URL names; anything else is a ``ValueError`` naming the forms."""
    if not isinstance(url, str):
        raise ValueError(f"ledger must be a URL ({URL_FORMS}), got {url!r}")
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss", "unix") and (parts.netloc or parts.path):
        return RedisStore(url)
    if parts.scheme == "sqlite" and url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not Path(path).is_absolute():
            raise ValueError(f"ledger {url!r}: a SQLite ledger's path must be absolute (sqlite:////var/gaelp/ledger.db, "
                             f"four slashes): {path!r} is relative to each process's working folder, and bidders "
                             "started in two folders would keep two ledgers and spend the budget twice")
        return SqliteStore(path)
    raise ValueError(f"ledger must be a URL ({URL_FORMS}), got {url!r}")


class Ledger:
    """One process's handle on a campaign's ledger: its holder name, the store, and the count of store
    operations (for ``status()`` and benchmarks)."""

    def __init__(self, url: str, campaign: str):
        self.campaign = campaign
        self.store = open_store(url)
        parts = urlsplit(url)  # the URL without a password, for status and messages
        self.url = url if parts.password is None else url.replace(f":{parts.password}@", ":***@", 1)
        self.holder = holder_name()
        self.operations = 0
        self.seconds = 0.0  # time spent in syncs
        self.closed = False

    def sync(self, date: str, sync: Sync) -> Fleet:
        """One atomic update (``apply_sync``) of the campaign-day; ``LedgerUnavailable`` when the store
        cannot be reached, ``ValueError`` when the budget is not the campaign-day's or its state cannot be read
        (nothing is changed either way)."""
        started = time.perf_counter()
        try:
            return self.store.update(self.campaign, date, sync)
        except (KeyError, TypeError, IndexError, AttributeError) as exc:  # a state no version of this wrote
            raise ValueError(f"the campaign-day's state in the ledger cannot be read ({type(exc).__name__}: {exc}); "
                             "repair or delete it") from None
        finally:
            self.operations += 1
            self.seconds += time.perf_counter() - started

    def journal(self, date: str) -> list[str]:
        return self.store.journal(self.campaign, date)

    def close(self) -> None:
        self.store.close()
        self.closed = True
