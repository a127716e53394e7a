"""The drop-in API keeps the old calls, shapes and the old orchestrator loop working."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from gaelp_bayes.compat import (DynamicBudgetOptimizer, OptimizationObjective, OptimizationResult,
                                PacingStrategy, PerformanceWindow)
from gaelp_bayes.orchestrator_example import run_episode

T0 = dt.datetime(2026, 3, 2, 9, tzinfo=dt.timezone.utc)


def test_old_calls_and_shapes(fitted, tmp_path):
    opt = DynamicBudgetOptimizer(daily_budget=Decimal("100"),
                                 optimization_objective=OptimizationObjective.MAXIMIZE_CONVERSIONS,
                                 model_dir=str(fitted.path), campaign="campaign_01", force=True,
                                 journal=str(tmp_path), clock=lambda: T0.timestamp())
    result = opt.optimize_hourly_allocation(strategy=PacingStrategy.ADAPTIVE_ML)
    assert isinstance(result, OptimizationResult)
    assert sorted(result.allocations) == list(range(24))
    assert sum(result.allocations.values()) == Decimal("100.00")
    assert all(isinstance(v, Decimal) for v in result.allocations.values())
    assert 0.0 <= result.confidence_score <= 1.0
    at_risk, reason, cap = opt.prevent_early_exhaustion(9)
    assert isinstance(at_risk, bool) and isinstance(reason, str) and cap >= 0
    assert opt.get_pacing_multiplier(9) > 0
    opt.add_performance_data(PerformanceWindow(start_time=T0, end_time=T0, spend=Decimal("1.5"), impressions=100,
                                               clicks=3, conversions=1, revenue=Decimal("30"), roas=20.0,
                                               cpa=Decimal("1.5"), cvr=0.33, cpc=Decimal("0.5"), quality_score=7.0))
    status = opt.get_optimization_status()
    assert status["current_spend"] == Decimal("1.50") and status["daily_budget"] == Decimal("100.00")
    assert status["performance_windows"] == 1
    first = opt.reallocate_based_on_performance()  # a re-plan since the start, or None
    assert first is None or (sorted(first) == list(range(24)) and sum(first.values()) == Decimal("100.00"))
    assert opt.reallocate_based_on_performance() is None  # nothing re-planned since the last call


def test_missing_model_bids_nothing_allocates_nothing_and_says_why(tmp_path):
    """A stopped optimiser's allocations were an even split of the whole budget (confidence 0): callers that
    spend allocations as hourly budgets kept spending while the multiplier said 0.  Now every hour is 0.00."""
    opt = DynamicBudgetOptimizer(daily_budget=Decimal("50"), model_dir=str(tmp_path / "none"),
                                 clock=lambda: T0.timestamp())
    assert opt.get_pacing_multiplier(9) == 0.0
    result = opt.optimize_hourly_allocation()
    assert result.confidence_score == 0.0 and "not a model cache" in result.reasoning
    assert sorted(result.allocations) == list(range(24)) and set(result.allocations.values()) == {Decimal("0.00")}


def test_old_orchestrator_loop_runs_and_never_overspends(fitted, tmp_path):
    summary = run_episode(str(fitted.path), "campaign_02", 60.0, force=True, journal=str(tmp_path))
    assert summary["emergency_stop"] is None
    assert 0.5 * 60.0 <= summary["spent"] <= 60.0
    assert abs(summary["utilization"] * 60.0 - summary["spent"]) < 0.01  # the status agrees with the spend
