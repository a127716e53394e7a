"""An orchestrator episode loop that uses the drop-in API exactly the old way.

    python -m gaelp_bayes.orchestrator_example [models/demo] [--campaign campaign_01] [--budget 100]

One simulated day of second-price auctions for one campaign (``gaelp_bayes.sim``); every
call below is the old optimiser's, only the import changed.
"""

from __future__ import annotations

import argparse
import datetime as dt
from decimal import Decimal
from types import SimpleNamespace

from . import sim
from .compat import (DynamicBudgetOptimizer, OptimizationObjective, PacingStrategy,  # the one changed import
                     PerformanceWindow)


def run_episode(model_dir: str, campaign: str, budget: float, date: str = "2026-03-02", seed: int = 7,
                force: bool = False, journal: str | None = None) -> dict:
    world = sim.make_world(campaigns=3, seed=7, volume_scale=1.0)
    c = world.campaigns.index(campaign) if campaign in world.campaigns else 0
    day = sim.auction_day(world, c, date, seed=seed)
    clock = SimpleNamespace(now=day.start)

    # 1. Initialisation, as in _init_attribution_budget
    optimizer = DynamicBudgetOptimizer(daily_budget=Decimal(str(budget)),
                                       optimization_objective=OptimizationObjective.MAXIMIZE_CONVERSIONS,
                                       model_dir=model_dir, campaign=campaign, clock=lambda: clock.now,
                                       force=force, journal=journal)
    # 2A. Pre-episode optimisation
    result = optimizer.optimize_hourly_allocation(strategy=PacingStrategy.ADAPTIVE_ML)
    reallocations = 0
    raw = sim.raw_bid(world, c)
    conversions = spent = 0.0
    for t, price, converts in zip(day.times.tolist(), day.prices.tolist(), day.converts.tolist()):
        clock.now = t
        hour = int((t - day.start) // 3600)
        at_risk, reason, budget_constraint = optimizer.prevent_early_exhaustion(hour)
        pacing_multiplier = optimizer.get_pacing_multiplier(hour)
        new_allocations = optimizer.reallocate_based_on_performance()
        if new_allocations:
            result.allocations = new_allocations
            reallocations += 1
        # 2B. Action-level budget constraints, exactly the old code
        action = SimpleNamespace(bid_amount=raw)
        original_bid = getattr(action, "bid_amount", 0.0)
        adjusted_bid = original_bid * pacing_multiplier
        if budget_constraint and adjusted_bid > float(budget_constraint):
            adjusted_bid = float(budget_constraint)
        adjusted_bid = min(adjusted_bid, 0.1 * float(result.allocations[hour]))
        action.bid_amount = adjusted_bid
        # the auction
        won = action.bid_amount > price
        cost = price if won else 0.0
        spent += cost
        conversions += converts if won else 0
        # 2C. Performance tracking: a PerformanceWindow per step
        start = dt.datetime.fromtimestamp(t, dt.timezone.utc)
        optimizer.add_performance_data(PerformanceWindow(
            start_time=start, end_time=start, spend=Decimal(str(round(cost, 6))), impressions=1,
            clicks=int(won), conversions=int(won and converts), revenue=Decimal("0"), roas=0.0,
            cpa=Decimal("0"), cvr=0.0, cpc=Decimal(str(round(cost, 6))), quality_score=1.0))
    # 3. Episode results
    status = optimizer.get_optimization_status()
    return {"budget": budget, "spent": round(spent, 2), "conversions": conversions,
            "utilization": status["budget_utilization"], "confidence": result.confidence_score,
            "pacing_multiplier": status["pacing_multiplier"], "reallocations": reallocations,
            "emergency_stop": status["emergency_stop"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default="models/demo")
    p.add_argument("--campaign", default="campaign_01")
    p.add_argument("--budget", type=float, default=100.0)
    p.add_argument("--force", action="store_true")
    args = p.parse_args()
    summary = run_episode(args.model, args.campaign, args.budget, force=args.force)
    print("Episode budget summary:")
    for k, v in summary.items():
        print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
