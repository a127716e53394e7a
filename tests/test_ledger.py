"""The fleet's shared ledger: one budget for many processes, leases, a real redis-server, SQLite alone."""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import sqlite3

import numpy as np
import pytest

from gaelp_bayes import fleet, sim
from gaelp_bayes.ledger import Ledger, LedgerUnavailable, Sync, apply_sync
from gaelp_bayes.runtime import MAX_STORE_RETRY, RESOLVE_EVERY, SYNC_EVERY, Pacer

from helpers import DAY, posterior


def test_a_lease_is_granted_only_from_what_is_neither_spent_nor_leased():
    state = None
    grants = []
    for holder, spent, want in [("a", 0, 40), ("b", 0, 40), ("c", 0, 40), ("a", 30, 50), ("b", 10, 0)]:
        state, fleet_now = apply_sync(state, Sync(holder, DAY, 100.0, spent, want=want))
        grants.append(fleet_now.lease)
        leased = sum(amount for amount, _ in state["leases"].values())
        assert state["spent"] + leased <= 100.0 + 1e-9
    # c gets what a and b left; a, back having spent 30 of its 40, gets the 10 neither spent nor leased to
    # b and c; b, back having spent 10, returns the rest
    assert grants == [40, 40, 20, 10, 0] and state["spent"] == 40
    with pytest.raises(ValueError, match="daily budget of 100 .* given 120"):
        apply_sync(state, Sync("d", DAY, 120.0))


def test_ledger_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="ledger must be a URL"):
        Pacer(posterior(), 100.0, now=DAY, ledger="http://example.com/ledger")
    with pytest.raises(ValueError, match="journal or ledger, not both"):
        Pacer(posterior(), 100.0, now=DAY, ledger=f"sqlite:///{tmp_path}/l.db", journal=tmp_path)
    with pytest.raises(TypeError, match="unknown pacer option leger"):
        Pacer.load(tmp_path, leger="redis://127.0.0.1:6379/0")


def test_pacers_on_one_sqlite_ledger_share_the_budget_and_the_day(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.db"
    budget = 30.0

    def day(pacers) -> tuple[float, float]:
        """A day's stream dealt in turn to ``pacers``: (spend, last instant)."""
        rng = np.random.default_rng(5)
        t, spent = DAY, 0.0
        for i in range(4300):
            t += 20.0
            pacer = pacers[i % len(pacers)]
            bid = pacer.adjust_bid(float(rng.lognormal(0, 0.5)), now=t)
            price = float(rng.lognormal(-0.5, 0.5))
            cost = price if price < bid else 0.0
            spent += cost
            pacer.record(cost, clicks=int(cost > 0), conversions=int(cost > 0 and i % 7 == 0), now=t)
        return spent, t

    alone, _ = day([Pacer(posterior(), budget, now=DAY)])
    apart, _ = day([Pacer(posterior(), budget, now=DAY), Pacer(posterior(), budget, now=DAY)])
    a, b = Pacer(posterior(), budget, now=DAY, ledger=url), Pacer(posterior(), budget, now=DAY, ledger=url)
    spent, t = day([a, b])
    assert apart > 1.3 * budget and spent <= budget and spent == pytest.approx(alone, rel=0.03), (alone, apart, spent)
    a.record(0.0, now=t + SYNC_GAP)
    b.record(0.0, now=t + SYNC_GAP)  # both synced: each sees the fleet's day
    sa, sb = a.status(t + SYNC_GAP), b.status(t + SYNC_GAP)
    assert sa["spent"] == pytest.approx(spent) == pytest.approx(sb["spent"])
    assert sa["clicks_today"] == sb["clicks_today"] > 0 and sa["conversions_today"] == sb["conversions_today"] > 0
    assert sa["ledger"]["url"] == url and sa["ledger"]["holder"] != sb["ledger"]["holder"]
    # one plan for the fleet (whoever re-planned last), so both controllers, solving on the fleet's spend a
    # minute later, agree
    assert sa["replans"] + sb["replans"] > 0 and a._plan_alloc == b._plan_alloc
    sa, sb = a.status(t + SYNC_GAP + RESOLVE_EVERY), b.status(t + SYNC_GAP + RESOLVE_EVERY)
    assert sa["multiplier"] == pytest.approx(sb["multiplier"], rel=0.02)
    assert sa["plan"] == pytest.approx(sb["plan"], abs=0.05)
    # a third process joining the day (a restart) knows the day's spend and learning from the ledger
    c = Pacer(posterior(), budget, now=t + SYNC_GAP, ledger=url)
    assert c.status(t + SYNC_GAP)["spent"] == pytest.approx(spent)
    assert c.status(t + SYNC_GAP)["clicks_today"] == sa["clicks_today"]
    for p in (a, b, c):
        p.close(now=t + SYNC_GAP)
    journal = c._ledger.journal("2026-03-02")
    assert len(journal) == 4302 and sum(json.loads(line)["cost"] for line in journal) == pytest.approx(spent)
    # the next day is a campaign-day of its own
    d = Pacer(posterior(), budget, now=DAY + 86_400 + 60, ledger=url)
    assert d.status(DAY + 86_400 + 60)["spent"] == 0.0
    d.close(now=DAY + 86_400 + 60)


SYNC_GAP = 10.0  # seconds: more than runtime.SYNC_EVERY


def test_unreported_losses_do_not_make_every_bid_sync(tmp_path):
    """A lease was sized from spend alone: with no outcome recorded (no loss notices, no win yet) the bids held
    until their expiry outgrew it at the next bid, and every bid synced with the store.  Leases now cover what
    the process commits: after a ramp (top-ups that about double the lease, 16 of them here) it syncs every
    SYNC_EVERY seconds of its clock."""
    pacer = Pacer(posterior(), 1e6, now=DAY, ledger=f"sqlite:///{tmp_path}/ledger.db")
    t0, rate = DAY + 14 * 3600, 200

    def bids(start: int, seconds: int) -> int:
        return sum(pacer.adjust_bid(1e-3, now=t0 + start + i / rate) > 0 for i in range(seconds * rate))

    assert bids(0, 30) == 30 * rate
    ramp = pacer._ledger.operations
    assert ramp <= 30 and bids(30, 170) == 170 * rate  # past MAX_AUCTION_TIMEOUT: expired bids are lost too
    assert pacer._ledger.operations - ramp <= 1 + 170 / SYNC_EVERY
    pacer.close(t0 + 200)


def test_batches_of_a_fleet_hold_no_more_than_the_budget(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.db"
    pacers = [Pacer(posterior(), 50.0, now=DAY, ledger=url) for _ in range(3)]
    t = DAY + 3600 * int(np.argmax(pacers[0].status(DAY)["plan"]))  # the hour the plan spends most in
    placed = sum(p.adjust_bids(np.full(10_000, 100.0), now=t + i).sum() for i, p in enumerate(pacers))
    assert 0 < placed <= 50.0 + 1e-9  # every bid held until its outcome: the batches share one budget
    stopped = Pacer._stopped("a test", 50.0, "UTC", DAY, ledger=url)  # bids nothing, so leases nothing
    assert stopped.status(t)["ledger"]["lease_left"] == 0.0
    other = Pacer(posterior(), 80.0, now=DAY, ledger=url)  # a process given another budget for the day
    assert "daily budget of 50" in other.status(t)["emergency_stop"] and other.adjust_bid(1.0, now=t) == 0.0
    with sqlite3.connect(tmp_path / "ledger.db") as db:  # a state no version wrote: stops, says why, no crash
        db.execute("UPDATE ledger SET state = ?", ('{"budget": 50.0, "spent": 1.0, "leases": []}',))
    broken = Pacer(posterior(), 50.0, now=DAY, ledger=url)
    assert "not valid" in broken.status(t)["emergency_stop"] and broken.adjust_bid(1.0, now=t) == 0.0


def test_a_store_outage_spends_only_the_lease_then_bidding_resumes(tmp_path):
    if fleet.redis_server_path() is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    with fleet.RedisServer(tmp_path / "redis") as server:  # a server of its own: this test stops it
        pacer = Pacer(posterior(), 100.0, now=DAY, ledger=server.url)
        t = DAY + 12 * 3600
        for _ in range(20):  # a few wins: the lease follows the spend rate
            t += 1.0
            pacer.record(pacer.adjust_bid(1.0, now=t), clicks=1, now=t)
        server.stop()
        status = pacer.status(t)
        spent_before, lease = status["spent"], status["ledger"]["lease_left"]
        assert lease > 0
        bids = []
        for _ in range(200):
            t += 0.5
            bid = pacer.adjust_bid(1.0, now=t)
            bids.append(bid)
            pacer.record(bid, clicks=1, now=t)
        status = pacer.status(t)
        assert status["spent"] - spent_before <= lease + 1e-9  # at most the lease while the store is away
        assert bids[-1] == 0.0 and status["ledger"]["unreachable"].startswith("since ")
        assert "ledger_unreachable" in status["flags"]
        server.start()  # its data came back from its append-only file
        t += MAX_STORE_RETRY  # attempts grew rarer while it was away: at most this long
        assert pacer.adjust_bid(1.0, now=t) > 0  # bidding resumes
        status = pacer.status(t)
        assert status["ledger"]["unreachable"] is None and "ledger_unreachable" not in status["flags"]
        spent = status["spent"]
        pacer.close(now=t)
        again = Pacer(posterior(), 100.0, now=t, ledger=server.url)
        assert again.status(t)["spent"] == pytest.approx(spent)  # every record reached the ledger
        again.close(now=t)


def _random_holder(url: str, budget: float, key: str, seed: int, steps: int, results) -> None:
    """One process of the property test: random spend within its lease, random syncs, a random death."""
    rng = random.Random(seed)
    ledger = Ledger(url, key)
    lease = unreported = true_spent = 0.0
    for step in range(steps):
        r = rng.random()
        if r < 0.55:
            if lease - unreported > 0:  # a bid won: it may cost up to what the lease has left
                cost = rng.uniform(0, lease - unreported)
                unreported += cost
                true_spent += cost
            continue
        if r > 0.99:
            break  # killed: its unreported spend and its lease are never seen again
        want = 0.0 if r > 0.97 else rng.uniform(0, budget / 3)  # sometimes it gives its lease back
        try:
            fleet_now = ledger.sync("2026-03-02", Sync(ledger.holder, DAY + step, budget, unreported, want=want))
        except LedgerUnavailable:
            continue
        if fleet_now.spent + fleet_now.leased > budget + 1e-6:
            results.put(("broken", fleet_now.spent, fleet_now.leased))
        lease, unreported = fleet_now.lease, 0.0
    results.put(("spent", true_spent))


def test_random_interleavings_of_eight_processes_never_exceed_the_budget(redis_server):
    ctx = mp.get_context("spawn")
    budget = 100.0
    for round_ in range(3):
        results = ctx.Queue()
        key = f"property-{round_}"
        workers = [ctx.Process(target=_random_holder, args=(redis_server.url, budget, key, 1000 * round_ + i, 400,
                                                            results)) for i in range(8)]
        for w in workers:
            w.start()
        outcomes = [results.get(timeout=120) for _ in workers]
        for w in workers:
            w.join()
        assert not [o for o in outcomes if o[0] == "broken"], outcomes
        total = sum(o[1] for o in outcomes)
        assert 0.5 * budget < total <= budget + 1e-6, total  # the budget was contended for, never exceeded


def test_a_fleet_of_four_processes_paces_one_budget(redis_server, fitted):
    """One campaign-day's auction stream dealt round robin to 4 processes; one killed at noon (SIGKILL), another
    killed and restarted at 16:00.  Against one process pacing the same stream, and 4 processes without a ledger."""
    c = 0
    name = fitted.world.campaigns[c]
    budget = sim.usual_budget(fitted.train, name)
    day = sim.auction_day(fitted.world, c, "2026-02-16", seed=77)
    raw = sim.raw_bid(fitted.world, c)
    alone = fleet.run_fleet(day, raw, budget, fitted.path, name, processes=1)
    apart = fleet.run_fleet(day, raw, budget, fitted.path, name, processes=4)
    shared = fleet.run_fleet(day, raw, budget, fitted.path, name, processes=4, ledger=redis_server.url[:-1] + "1",
                             kill=(1, 12.0), restart=(2, 16.0))
    outage = fleet.run_fleet(day, raw, budget, fitted.path, name, processes=4, ledger=redis_server.url[:-1] + "2",
                             outage=(13.0, 13.5, 1.0), server=redis_server)
    assert apart["spent"] > 1.3 * budget  # the failure this fixes: each process believed the budget its own
    for run in (alone, shared, outage):
        assert run["spent"] <= budget + 0.005  # to the cent
    assert shared["utilization"] >= 0.98
    assert shared["expected_conversions"] == pytest.approx(alone["expected_conversions"], rel=0.01)
    assert outage["utilization"] >= 0.98 and outage["placed_after_outage"] > 0


def test_a_relative_sqlite_path_is_refused_two_folders_would_keep_two_ledgers(tmp_path, monkeypatch):
    """Two bidders started from two folders with ``sqlite:///var/gaelp/ledger.db`` (three slashes: relative)
    made two ledgers and spent 200 of a 100 budget: the path must be absolute (four slashes)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="must be absolute .*four slashes"):
        Pacer(posterior(), 100.0, now=DAY, ledger="sqlite:///var/gaelp/ledger.db")
    assert not (tmp_path / "var").exists()  # nothing created where the process happened to stand


@pytest.mark.parametrize("damage", ["negative spend", "null state", "deleted state row", "leases past the budget"])
def test_a_damaged_sqlite_state_stops_the_fleet_instead_of_restarting_the_day(tmp_path, damage):
    """The stored state is the fleet's money: with ``spent`` set to -1000 a reloaded pacer spent about 1,100
    of 100, and a ``null`` state or a deleted state row (the journal table still holding every record)
    restarted the day at 0 (143.8 of 100).  Each is refused: the pacer stops and says why."""
    import sqlite3

    url = f"sqlite:///{tmp_path}/ledger.db"
    first = Pacer(posterior(), 100.0, now=DAY, ledger=url)
    t = DAY + 12 * 3600
    for i in range(200):  # spend some of the day, recorded through the ledger
        t += 1.0
        bid = first.adjust_bid(1.0, now=t)
        first.record(min(bid, 0.2), clicks=1, now=t)
    first.close(now=t)
    db = sqlite3.connect(tmp_path / "ledger.db")
    key = db.execute("SELECT key FROM ledger").fetchone()[0]
    assert db.execute("SELECT COUNT(*) FROM journal").fetchone()[0] > 0
    state = json.loads(db.execute("SELECT state FROM ledger").fetchone()[0])
    if damage == "negative spend":
        state["spent"] = -1000.0
        db.execute("UPDATE ledger SET state = ? WHERE key = ?", (json.dumps(state), key))
    elif damage == "null state":
        db.execute("UPDATE ledger SET state = 'null' WHERE key = ?", (key,))
    elif damage == "deleted state row":
        db.execute("DELETE FROM ledger WHERE key = ?", (key,))
    else:
        state["leases"] = {"someone": [500.0, t]}
        db.execute("UPDATE ledger SET state = ? WHERE key = ?", (json.dumps(state), key))
    db.commit()
    db.close()
    second = Pacer(posterior(), 100.0, now=t + 1, ledger=url)
    bids = [second.adjust_bid(1.0, now=t + 2 + i) for i in range(50)]
    assert max(bids) == 0.0
    assert "ledger" in second.status(now=t + 60)["emergency_stop"]
    second.close(now=t + 60)
