"""The account pacer: one budget over several campaigns' pacers, split again during the day."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import replace

import numpy as np
import pytest

from gaelp_bayes.market import logged_bid
from gaelp_bayes.runtime import AccountPacer, Pacer

from helpers import DAY, posterior


def account(budget: float = 300.0, journal=None, now: float = DAY, **limits) -> AccountPacer:
    posteriors = [posterior(i) for i in range(3)]  # a quarter of their volume: a day of auctions in a second or two
    pacers = {f"c{i}": Pacer(replace(post, name=f"c{i}", volume=post.volume / 4), budget, journal=journal, now=now)
              for i, post in enumerate(posteriors)}
    return AccountPacer(pacers, budget, now=now, **limits)


def market_day(acct: AccountPacer, hours: range, seed: int = 0, rates: dict | None = None) -> None:
    """Each campaign's auctions as its posterior knows them (the auctions a logged bid wins 2/3 of, at prices
    spread 0.6 around the hour's), bid at its logged bid, in time order; ``rates``: a campaign's true
    conversion rate today, else its posterior's."""
    rng = np.random.default_rng(seed)
    dow = dt.datetime.fromtimestamp(DAY, dt.timezone.utc).weekday()
    events = []
    for name, pacer in acct.pacers.items():
        post = pacer.posterior
        cpc, volume, cvr = (a[:, dow].mean(0) for a in (post.cpc, post.volume, post.cvr))
        raw = float(logged_bid(cpc, 0.6, 2 / 3).mean())
        median = logged_bid(cpc, 0.6, 2 / 3) / np.exp(0.6 * 0.4307)  # the logged bid is exp(z0) x the median
        for h in hours:
            for t in rng.uniform(0, 3600, rng.poisson(volume[h] * 1.5)) + DAY + 3600 * h:
                events.append((float(t), name, raw,
                               float(median[h] * np.exp(0.6 * rng.standard_normal())),
                               (rates or {}).get(name, float(cvr[h]))))
    for t, name, raw, price, rate in sorted(events):
        b = acct.adjust_bid(raw, campaign=name, now=t)
        if b > price:
            acct.record(price, clicks=1, conversions=int(rng.uniform() < rate), campaign=name, now=t)
        elif b > 0:
            acct.record(0.0, campaign=name, now=t)


def test_the_account_never_spends_more_than_its_budget_and_spends_it():
    """The campaigns' budgets add to the account's at every split, none below what it committed, and the day
    spends the budget where the market allows."""
    acct = account(300.0)
    splits = []
    original = acct.resplit

    def checked(t):
        out = original(t)
        committed = {c: p._spent + p._out_sum + p._late_sum for c, p in acct.pacers.items()}
        assert sum(out.values()) <= 300.0 + 1e-9 and all(out[c] >= committed[c] - 1e-9 for c in out)
        splits.append(out)
        return out

    acct.resplit = checked
    market_day(acct, range(24))
    status = acct.status(DAY + 86_399)
    assert len(splits) >= 90 and status["splits"] >= 90  # every 15 minutes of the day
    assert 0.95 * 300.0 <= status["spent"] <= 300.0
    assert all(s["spent"] <= s["daily_budget"] + 1e-9 for s in status["campaigns"].values())


def test_a_campaign_that_converts_better_today_gets_more_of_the_account():
    """The same three campaigns, one of them converting at 30% today where its posterior expects a few per
    cent: by the afternoon its share of the account has grown, and another's has shrunk."""
    acct = account(300.0)
    before = dict(acct.status(DAY + 60)["split"])
    market_day(acct, range(0, 14), rates={"c1": 0.3})
    after = acct.status(DAY + 14 * 3600)["split"]
    assert after["c1"] > 1.2 * before["c1"] and any(after[c] < before[c] for c in ("c0", "c2"))


def test_a_restart_replays_every_journal_and_splits_what_is_left(tmp_path):
    acct = account(300.0, journal=tmp_path)
    market_day(acct, range(0, 12))
    spent = acct.status(DAY + 12 * 3600)["spent"]
    acct.close(DAY + 12 * 3600)
    again = account(300.0, journal=tmp_path, now=DAY + 12 * 3600 + 1)
    status = again.status(DAY + 12 * 3600 + 2)
    assert status["spent"] == pytest.approx(spent)  # (the status rounds the split to 6 decimals: the budgets below)
    assert math.fsum(p.budget for p in again.pacers.values()) <= 300.0 + 1e-9
    market_day(again, range(12, 24), seed=1)
    assert again.status(DAY + 86_399)["spent"] <= 300.0 + 1e-9


def test_limits_unknown_campaigns_and_budget_moves_are_checked(fitted, tmp_path):
    acct = account(300.0, min_campaign=50.0, max_campaign=150.0)
    assert all(50.0 - 1e-9 <= b <= 150.0 + 1e-9 for b in acct.status(DAY + 60)["split"].values())
    with pytest.raises(ValueError, match="not paced by this account"):
        acct.adjust_bid(1.0, campaign="nope", now=DAY + 60)
    with pytest.raises(ValueError, match="min_campaign"):
        account(300.0, min_campaign=200.0)
    stopped = AccountPacer({"a": Pacer(replace(posterior(0), name="a"), 100.0, now=DAY),
                            "b": Pacer(replace(posterior(1), name="b"), 100.0, now=DAY, stop_reason="a broken cache")},
                           100.0, now=DAY)  # the stopped one keeps no budget: the live one gets the account's
    assert stopped.pacers["b"].budget < 1e-6 and math.fsum(p.budget for p in stopped.pacers.values()) <= 100.0
    with pytest.raises(ValueError, match="its own campaign"):  # their journals would be one file
        AccountPacer({f"c{i}": Pacer(posterior(i), 100.0, now=DAY) for i in range(2)}, 100.0, now=DAY)
    pacer = Pacer(posterior(), 100.0, now=DAY)
    pacer.adjust_bid(1.0, now=DAY + 3600)
    pacer.record(5.0, clicks=1, now=DAY + 3600)
    held = pacer.status(DAY + 3601)["held_for_outstanding"] + pacer.status(DAY + 3601)["held_for_expired"]
    assert pacer.set_budget(1.0, now=DAY + 3601) == pytest.approx(5.0 + held)  # never below what is committed
    with pytest.raises(ValueError, match="re-solving controller"):
        Pacer(posterior(), 100.0, now=DAY, plan_options={"controller": "pi"}).set_budget(50.0, now=DAY)
    day = dt.datetime(2026, 2, 10, tzinfo=dt.timezone.utc)
    loaded = AccountPacer.load(fitted.path, 300.0, now=day, journal=tmp_path, force=True)
    assert sorted(loaded.pacers) == ["campaign_01", "campaign_02", "campaign_03"]
    loaded.status(day + dt.timedelta(hours=1))
    assert math.fsum(p.budget for p in loaded.pacers.values()) <= 300.0 + 1e-9
    loaded.close()
    with pytest.raises(ValueError, match="not in the model"):
        AccountPacer.load(fitted.path, 300.0, campaigns=["campaign_01", "nope"], now=day, force=True)
    for budget in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="daily_budget"):
            account(budget)
    with pytest.raises(TypeError, match="ledger"):
        AccountPacer.load(fitted.path, 300.0, ledger="sqlite:////tmp/x.db")


def test_the_account_scenario_compares_the_account_pacer_with_fixed_splits(fitted):
    """``sim.compare_account_policies`` (what ``simulate --scenario account`` runs) on the shared fit's world,
    one test day: every policy within the account's budget, the oracle above them all, the account pacer
    spending the budget."""
    from gaelp_bayes import sim

    day = str((fitted.train["timestamp"].pipe(lambda s: __import__("pandas").to_datetime(s, utc=True)).max()
               .normalize() + __import__("pandas").Timedelta(days=1)).date())
    res = sim.compare_account_policies(fitted.world, fitted.train, str(fitted.path), [day], seed=5,
                                       moving=(0, 12, 18, 2.0))
    assert list(res["policy"]) == list(sim.ACCOUNT_POLICIES)
    assert (res["overspend"] == 0).all() and (res["spent"] <= res["budget"] + 1e-9).all()
    assert (res["pct_of_oracle"] <= 100.0 + 1e-9).all()
    assert res.set_index("policy").loc["account", "spent"] >= 0.95 * res["budget"].iloc[0]
    summary = sim.summarize_account(res)
    assert list(summary.index) == list(sim.ACCOUNT_POLICIES) and summary["max_overspend"].max() == 0.0
