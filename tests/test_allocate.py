"""Allocation: bounds and sums (property tests), optimality, truth-based quality, CLI output."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from gaelp_bayes import allocate as al
from gaelp_bayes import cli


def random_draws(seed: int, n: int = 200, spread: float = 0.3, capacity: float = 50.0) -> al.Draws:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.005, 0.08, 24)
    cvr = np.clip(base * rng.lognormal(0, spread, (n, 24)), 1e-6, 0.99)
    cpc = rng.uniform(0.2, 2.0, 24) * rng.lognormal(0, 0.05, (n, 24))
    cap = np.broadcast_to(rng.uniform(0.2, 1.0, 24) * capacity, (n, 24))
    return al.Draws(cvr=cvr, cpc=cpc, capacity=cap, rpc=rng.uniform(10, 50, (n, 1)) * np.ones(24))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), budget=st.decimals("0.24", "400", places=2),
       min_per_hour=st.sampled_from([0.0, 0.01, 0.5]), max_share=st.sampled_from([0.1, 0.2, 0.5, 1.0]),
       max_per_hour=st.sampled_from([None, 30.0, 80.0]), risk=st.sampled_from(["mean", "cvar"]),
       exploration=st.sampled_from([0.0, 0.1]))
def test_amounts_respect_every_bound_and_sum_to_the_cent(seed, budget, min_per_hour, max_share, max_per_hour,
                                                         risk, exploration):
    draws = random_draws(seed, n=100)
    kwargs = dict(min_per_hour=min_per_hour, max_share=max_share, max_per_hour=max_per_hour, risk=risk,
                  exploration=exploration)
    cents = int(budget * 100)
    try:
        lo, hi = al.bounds_in_cents(cents, draws.capacity[0], min_per_hour, max_per_hour, max_share, 1.5)
    except al.AllocationError:
        with pytest.raises(al.AllocationError, match="infeasible bounds"):
            al.allocate_draws(draws, budget, **kwargs)
        return
    res = al.allocate_draws(draws, budget, **kwargs)
    x = res["cents"]
    assert x.dtype.kind == "i" and (x >= 0).all()
    assert int(x.sum()) == cents
    assert (x >= lo).all() and (x <= hi).all()
    assert 0.0 <= res["confidence"] <= 1.0 and 0.0 <= res["p_beats_even"] <= 1.0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), budget=st.integers(500, 20_000))
def test_greedy_fill_matches_a_linear_programme(seed, budget):
    rng = np.random.default_rng(seed)
    v = rng.uniform(0, 1, 24)
    lo = rng.integers(0, 20, 24)
    hi = lo + rng.integers(0, 2_000, 24)
    if not lo.sum() <= budget <= hi.sum():
        return
    x = al.greedy_fill(np.argsort(-v, kind="stable"), lo, hi, budget)
    lp = linprog(-v, A_eq=np.ones((1, 24)), b_eq=[budget], bounds=list(zip(lo, hi)), method="highs")
    assert v @ x >= -lp.fun - 1e-6


def test_infeasible_budget_is_a_clear_error():
    draws = random_draws(0, capacity=1.0)
    with pytest.raises(al.AllocationError, match="can absorb at most .* less than the budget 1000.00"):
        al.allocate_draws(draws, 1000)
    with pytest.raises(al.AllocationError, match="hourly minimums add to 24.00, more than the budget 10.00"):
        al.allocate_draws(random_draws(0), 10, min_per_hour=1.0)


def test_more_certain_posterior_gives_higher_confidence():
    vague = al.allocate_draws(random_draws(3, n=400, spread=0.6), 100)
    sharp = al.allocate_draws(random_draws(3, n=400, spread=0.05), 100)
    assert sharp["confidence"] > vague["confidence"]


def test_exploration_reserve_goes_where_uncertainty_is():
    """Hours 1 and 2 have the same mean value; only the uncertain one (2) may be the best, so it explores."""
    rng = np.random.default_rng(0)
    n = 1000
    cvr = np.full((n, 24), 0.01)
    cvr[:, 0] = 0.05  # clearly best, certain
    cvr[:, 1] = 0.04  # certain
    cvr[:, 2] = 0.04 * rng.lognormal(0, 0.5, n) / np.exp(0.125)  # same mean, uncertain
    draws = al.Draws(cvr=cvr, cpc=np.ones((n, 24)), capacity=np.full((n, 24), 100.0), rpc=None)
    plain = al.allocate_draws(draws, 100, max_share=0.5)["cents"]
    explore = al.allocate_draws(draws, 100, max_share=0.5, exploration=0.1)["cents"]
    assert explore.sum() == plain.sum() == 10_000
    assert explore[2] > plain[2] + 200 and explore[1] <= plain[1]


def test_plan_gets_most_of_the_true_optimum(fitted):
    """On the fitted simulation: the plan's true value vs the plan computed from the true rates.

    Measured with this fixture (5 weeks, 500 draws x 2 chains): 0.90-1.00 of the true optimum, mean 0.96;
    the issue's aim is 0.97 (not met yet: thin night hours are shrunk toward the smooth curve).
    This guards against regressions below the measured level.
    """
    from gaelp_bayes import cache

    manifest, arrays = cache.read_runtime(fitted.path)
    ratios = []
    for c, name in enumerate(manifest["campaigns"]):
        for day in ("2026-02-09", "2026-02-14"):  # a Monday and a Saturday
            dow = al.plan_date(day, "UTC").weekday()
            _, draws, _ = al.campaign_draws(arrays, manifest, name, dow)
            res = al.allocate_draws(draws, 150)
            lo, hi = al.bounds_in_cents(15_000, draws.capacity[0], 0.0, None, 0.2, 1.5)
            true_v = fitted.world.cvr[c, dow] / fitted.world.cpc[c, dow]
            best = al.greedy_fill(np.argsort(-true_v), lo, hi, 15_000)
            ratios.append(true_v @ res["cents"] / (true_v @ best))
    assert min(ratios) >= 0.88 and np.mean(ratios) >= 0.94, np.round(ratios, 3)


def test_allocate_cli_json_has_the_documented_shape(fitted, capsys):
    code = cli.main(["allocate", str(fitted.path), "--budget", "123.45", "--campaign", "campaign_02",
                     "--date", "2026-02-10", "--json", "--force"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert {"budget", "date", "campaign", "objective", "allocations", "confidence", "p_beats_even",
            "expected_conversions", "expected_cpa", "expected_roas", "warnings"} <= set(out)
    assert len(out["allocations"]) == 24 and [a["hour"] for a in out["allocations"]] == list(range(24))
    assert sum(Decimal(str(a["amount"])) for a in out["allocations"]) == Decimal("123.45")
    assert out["date"] == "2026-02-10" and out["campaign"] == "campaign_02"
    assert set(out["expected_conversions"]) == {"mean", "lo", "hi"}


def test_allocate_objectives_and_choices(fitted):
    plan = al.allocate(str(fitted.path), Decimal("80"), campaign="campaign_03", date="2026-02-11", force=True,
                       objective="cpa", target_cpa=0.01)
    assert plan.p_meets_target_cpa == 0.0 and any("target CPA" in w for w in plan.warnings)
    rev = al.allocate(str(fitted.path), 80, campaign="campaign_03", date="2026-02-11", force=True,
                      objective="revenue")
    assert sum(rev.amounts) == Decimal("80.00") and rev.expected_roas > 0
    new = al.allocate(str(fitted.path), 80, campaign="not_seen", date="2026-02-11", force=True)
    assert any("population" in w for w in new.warnings)
    with pytest.raises(al.AllocationError, match="choose one with --campaign"):
        al.allocate(str(fitted.path), 80, date="2026-02-11", force=True)


def test_no_spend_needs_explicit_clicks_as_cost(fitted):
    from gaelp_bayes import cache

    manifest, arrays = cache.read_runtime(fitted.path)
    no_spend = {k: v for k, v in arrays.items() if k != "cpc"}
    with pytest.raises(al.AllocationError, match="without a 'spend' column"):
        al.campaign_draws(no_spend, manifest, "campaign_01", 0)
    _, draws, warnings = al.campaign_draws(no_spend, manifest, "campaign_01", 0, clicks_as_cost=True)
    assert (draws.cpc == 1).all() and "clicks" in warnings[0]


def test_allocate_reports_the_plan_the_runtime_pacer_follows(fitted, tmp_path):
    import datetime as dt

    from gaelp_bayes.runtime import Pacer

    plan = al.allocate(str(fitted.path), 100, campaign="campaign_01", date="2026-03-02", force=True)
    midnight = dt.datetime(2026, 3, 2, 0, 0, 1, tzinfo=dt.timezone.utc)
    pacer = Pacer.load(fitted.path, 100.0, campaign="campaign_01", journal=tmp_path, now=midnight, force=True)
    assert np.allclose(plan.runtime_plan, pacer.status(now=midnight)["plan"], atol=0.011)
    assert abs(sum(plan.runtime_plan) - 100) < 1.0 and 0 <= plan.runtime_confidence <= 1
    assert "pacer" in plan.table() and plan.to_json()["runtime_plan"] == plan.runtime_plan


@pytest.mark.parametrize("budget", ["1e17", "1e308", "1e400", "nan", "0"])
def test_a_budget_past_1e12_or_not_positive_is_one_line_and_exit_2(fitted, budget, capsys):
    code = cli.main(["allocate", str(fitted.path), "--budget", budget, "--campaign", "campaign_02",
                     "--date", "2026-02-10", "--force"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--budget: must be an amount > 0 and at most 1e12" in err[0]
    with pytest.raises(al.AllocationError, match="budget must be an amount"):
        al.allocate(str(fitted.path), Decimal(budget), campaign="campaign_02", date="2026-02-10", force=True)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), groups=st.integers(1, 4), budget=st.integers(100, 20_000))
def test_the_account_fill_matches_a_linear_programme_with_campaign_floors_and_caps(seed, groups, budget):
    """Each campaign's hours as a group with a floor and a cap: filling floors in each campaign's best hours,
    then every cell by value under the caps, is optimal (the LP's value) and keeps every bound."""
    rng = np.random.default_rng(seed)
    n = 24 * groups
    group = np.repeat(np.arange(groups), 24)
    v = rng.uniform(0, 1, n)
    lo = rng.integers(0, 5, n)
    hi = lo + rng.integers(0, 300, n)
    sums = np.bincount(group, weights=hi, minlength=groups).astype(np.int64)
    floor = (rng.uniform(0, 0.3, groups) * sums).astype(np.int64)
    cap = np.maximum(floor, (rng.uniform(0.3, 1.2, groups) * sums).astype(np.int64))
    members = (group[None, :] == np.arange(groups)[:, None]).astype(float)
    lp = linprog(-v, A_ub=np.vstack([members, -members]), b_ub=np.concatenate([cap, -floor]),
                 A_eq=np.ones((1, n)), b_eq=[budget], bounds=list(zip(lo, hi)), method="highs")
    if not lp.success:
        return
    x = al.account_fill(v, lo, hi, budget, group, floor, cap)
    by_group = np.bincount(group, weights=x, minlength=groups)
    assert int(x.sum()) == budget and (x >= lo).all() and (x <= hi).all()
    assert (by_group >= floor - 1e-9).all() and (by_group <= cap + 1e-9).all()
    assert v @ x >= -lp.fun - 1e-6 * max(1.0, abs(lp.fun))
    per_draw = al.account_fill(np.stack([v, v[::-1]]), lo, hi, budget, group, floor, cap)  # each draw its own
    assert (per_draw[0] == x).all() and per_draw[1] @ v[::-1] >= x @ v[::-1]


def test_the_account_plan_splits_one_budget_over_campaigns_and_hours(fitted, capsys):
    """One budget over the three campaigns: every cent placed, the campaign limits kept, the same plan as a
    campaign's own where only that campaign is planned; the CLI's JSON carries the campaign x hour matrix."""
    path = str(fitted.path)
    plan = al.allocate_account(path, Decimal("300"), date="2026-02-10", force=True, min_campaign=40,
                               max_campaign=150)
    totals = [sum(row) for row in plan.amounts]
    assert sum(totals) == Decimal("300") and all(Decimal("40") <= t <= Decimal("150") for t in totals)
    assert all(len(row) == 24 and max(row) <= Decimal("60") for row in plan.amounts)  # max share 0.2 of 300
    assert 0 <= plan.confidence <= 1 and 0 <= plan.p_beats_split <= 1
    mean, lo, hi = plan.campaign_conversions
    assert (lo <= mean).all() and (mean <= hi).all() and plan.expected_conversions[0] == pytest.approx(mean.sum())
    alone = al.allocate_account(path, 80, date="2026-02-10", force=True, campaigns=["campaign_02"])
    single = al.allocate(path, 80, date="2026-02-10", force=True, campaign="campaign_02")
    assert alone.amounts[0] == single.amounts and alone.confidence == pytest.approx(single.confidence)
    assert cli.main(["allocate", path, "--budget", "300", "--account", "--date", "2026-02-10", "--json",
                     "--force", "--max-campaign", "150"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [c["campaign"] for c in out["campaigns"]] == plan.campaigns
    assert len(out["matrix"]) == 3 and all(len(row) == 24 for row in out["matrix"])
    assert sum(map(sum, out["matrix"])) == pytest.approx(300.0)
    for extra, words in ((["--risk", "cvar"], "--risk"), (["--campaign", "campaign_01"], "--campaign"),
                         (["--objective", "cpa"], "--objective cpa"), (["--min-per-hour", "100"], "hour 0 must get"),
                         (["--min-campaign", "200"], "minimums add to 600.00, more than the budget 300.00")):
        assert cli.main(["allocate", path, "--budget", "300", "--account", "--date", "2026-02-10", "--force",
                         *extra]) == 2
        assert words in capsys.readouterr().err
    assert cli.main(["allocate", path, "--budget", "30", "--campaign", "campaign_01", "--max-campaign", "5"]) == 2
    assert "--min-campaign and --max-campaign" in capsys.readouterr().err
