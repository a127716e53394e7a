"""Drop-in replacement for the old heuristic ``DynamicBudgetOptimizer``: change one import.

    from gaelp_bayes.compat import DynamicBudgetOptimizer, OptimizationObjective, PacingStrategy, PerformanceWindow

The old names, arguments and return shapes are kept; the answers come from the
cached posterior through the runtime ``Pacer``.  The model cache is the
``model_dir`` argument, else the ``GAELP_BAYES_MODEL`` environment variable,
else ``models/default``.  Without a usable cache the optimizer still answers
(confidence 0.0, multiplier 0.0: it bids nothing) and says why in
``get_optimization_status()["emergency_stop"]``.

``prevent_early_exhaustion`` always returns the current per-bid cap (the 10%
hourly cap, the plan through this hour and the budget left), so a loop that
applies it on every bid can never overspend; ``adjust_bid`` is the same
pacer's one-call form.

What the old optimiser accepted silently is an error here (``ValueError``
naming the field): an hour outside 0-23, a window whose counts are not whole
numbers >= 0 (or whose conversions exceed its clicks), whose spend is not a
finite amount >= 0, or whose ``end_time`` is not a datetime or lies more than
``WINDOW_CLOCK_SLACK`` seconds after the optimiser's clock.  Unknown
constructor options are a ``TypeError``.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, Callable

import numpy as np

from .allocate import round_to_total
from .market import MAX_AMOUNT
from .runtime import Pacer, check_count, check_instant

WINDOW_CLOCK_SLACK = 300.0  # seconds a window may end after the optimiser's clock (clock skew between hosts)


class PacingStrategy(Enum):
    EVEN_DISTRIBUTION = "even_distribution"
    FRONT_LOADED = "front_loaded"
    PERFORMANCE_BASED = "performance_based"
    DAYPARTING_OPTIMIZED = "dayparting_optimized"
    ADAPTIVE_ML = "adaptive_ml"
    CONVERSION_PATTERN_ADAPTIVE = "conversion_pattern_adaptive"


class OptimizationObjective(Enum):
    MAXIMIZE_CONVERSIONS = "maximize_conversions"
    MAXIMIZE_REVENUE = "maximize_revenue"
    MAXIMIZE_ROAS = "maximize_roas"
    MINIMIZE_CPA = "minimize_cpa"
    MAXIMIZE_IMPRESSIONS = "maximize_impressions"


@dataclass
class PerformanceWindow:
    """One step's performance, as the old orchestrator built it (derived fields are accepted, not needed)."""

    start_time: dt.datetime
    end_time: dt.datetime
    spend: Decimal = Decimal("0")
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    revenue: Decimal = Decimal("0")
    roas: float = 0.0
    cpa: Decimal = Decimal("0")
    cvr: float = 0.0
    cpc: Decimal = Decimal("0")
    quality_score: float = 0.0


@dataclass
class OptimizationResult:
    allocations: dict[int, Decimal]
    confidence_score: float
    expected_performance: dict[str, float]
    strategy: PacingStrategy = PacingStrategy.ADAPTIVE_ML
    reasoning: str = ""
    risk_factors: list[str] = field(default_factory=list)
    timestamp: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))


class DynamicBudgetOptimizer:
    """The old optimizer's interface backed by the Bayesian pacer (see the module doc)."""

    def __init__(self, daily_budget: Decimal | float = Decimal("1000"),
                 optimization_objective: OptimizationObjective = OptimizationObjective.MAXIMIZE_CONVERSIONS,
                 model_dir: str | None = None, campaign: str | None = None, timezone: str | None = None,
                 journal: str | None = None, clock: Callable[[], float] = time.time, force: bool = False):
        self.daily_budget = _amount("daily_budget", daily_budget).quantize(Decimal("0.01"))
        if not self.daily_budget > 0:
            raise ValueError(f"daily_budget must be an amount > 0 and at most {MAX_AMOUNT:.0e}, got {daily_budget!r}")
        self.optimization_objective = optimization_objective
        self.clock = clock
        self.model_dir = model_dir or os.environ.get("GAELP_BAYES_MODEL", "models/default")
        self.pacer = Pacer.load(self.model_dir, daily_budget=float(self.daily_budget), campaign=campaign,
                                timezone=timezone, journal=journal, now=clock(), force=force)
        self.performance_history: list[PerformanceWindow] = []
        self._last_replans = 0

    # The old methods -----------------------------------------------------------------------------
    def add_performance_data(self, window: PerformanceWindow) -> None:
        """Feed one window back: its spend, clicks and conversions update the pacer's ledger and learning."""
        spend = float(_amount("spend", window.spend))
        clicks, conversions = check_count("clicks", window.clicks), check_count("conversions", window.conversions)
        check_count("impressions", window.impressions)
        if conversions > clicks:
            raise ValueError(f"conversions ({conversions}) must be <= clicks ({clicks})")
        if not isinstance(window.end_time, dt.datetime):
            raise ValueError(f"end_time must be a datetime, got {window.end_time!r}")
        end = check_instant(window.end_time, "end_time")
        if end > self.clock() + WINDOW_CLOCK_SLACK:
            raise ValueError(f"end_time {window.end_time.isoformat()} is after the optimizer's clock "
                             f"({dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc).isoformat()}): a window "
                             "is booked when it has ended")
        self.pacer.record(spend, clicks=clicks, conversions=conversions, now=end)
        self.performance_history.append(window)

    def optimize_hourly_allocation(self, strategy: PacingStrategy = PacingStrategy.ADAPTIVE_ML) -> OptimizationResult:
        """Hourly allocations (hours 0-23, Decimal, summing to the daily budget) with a real confidence.  A
        stopped pacer allocates nothing (every hour 0.00, like its multiplier): callers that spend their
        allocations as hourly budgets must not keep spending while the pacer bids nothing."""
        status = self.pacer.status(self.clock())
        risks = [status["emergency_stop"]] if status["emergency_stop"] else []
        risks += status["warnings"] + list(status["flags"].values())
        if status["emergency_stop"]:
            return OptimizationResult({h: Decimal("0.00") for h in range(24)}, 0.0, {}, strategy,
                                      f"pacer stopped: {status['emergency_stop']}", risks)
        allocations = self._to_decimal(status["plan"])
        return OptimizationResult(
            allocations=allocations, confidence_score=status["confidence"],
            expected_performance={"p_beats_even_pacing": status["p_beats_even"], "utilization": status["utilization"]},
            strategy=strategy, risk_factors=risks,
            reasoning=(f"bids proportional to the posterior conversion rate of each hour; confidence "
                       f"{status['confidence']:.0%} = posterior probability this plan gets >= 95% of the conversions "
                       "of the plan that would be best if the true rates were known"))

    def prevent_early_exhaustion(self, current_hour: int | None = None) -> tuple[bool, str, Decimal | None]:
        """(at_risk, reason, per-bid cap): the cap is always given, so applying it keeps spend within budget.
        The pacer's clock decides the hour; ``current_hour`` is checked (0-23), as the old callers pass it."""
        _hour(current_hour)
        at_risk, reason, cap = self.pacer.prevent_exhaustion(self.clock())
        return at_risk, reason, Decimal(str(cap)).quantize(Decimal("0.0001"), rounding="ROUND_DOWN")

    def adjust_bid(self, bid: float) -> float:
        """The pacer's bid for a raw bid (multiplier, caps and hard guard in one call)."""
        return self.pacer.adjust_bid(bid, self.clock())

    def get_pacing_multiplier(self, current_hour: int | None = None) -> float:
        """The factor to apply to a raw bid now (hour value x budget multiplier; 0.0 when stopped)."""
        _hour(current_hour)
        s = self.pacer.status(self.clock())
        return 0.0 if s["emergency_stop"] else float(s["bid_factor"])

    def reallocate_based_on_performance(self) -> dict[int, Decimal] | None:
        """The new allocations if the pacer re-planned since the last call, else None."""
        s = self.pacer.status(self.clock())
        if s["replans"] == self._last_replans:
            return None
        self._last_replans = s["replans"]
        return self._to_decimal(s["plan"])

    def get_optimization_status(self) -> dict[str, Any]:
        s = self.pacer.status(self.clock())
        return {**s, "daily_budget": self.daily_budget, "current_spend": Decimal(str(round(s["spent"], 2))),
                "budget_utilization": s["utilization"], "pacing_multiplier": s["bid_factor"],
                "optimization_confidence": s["confidence"], "objective": self.optimization_objective.value,
                "performance_windows": len(self.performance_history), "model_dir": str(self.model_dir)}

    # helpers ---------------------------------------------------------------------------------------
    def _to_decimal(self, plan: list[float]) -> dict[int, Decimal]:
        """Plan amounts scaled to the daily budget, in cents summing to it exactly (even split when empty)."""
        cents = int(self.daily_budget * 100)
        x = np.asarray(plan, dtype=np.float64)
        x = x / x.sum() * cents if x.sum() > 0 else np.full(24, cents / 24)
        out = round_to_total(x, np.zeros(24, np.int64), np.full(24, cents, np.int64), cents)
        return {h: Decimal(int(c)) / 100 for h, c in enumerate(out)}


def _hour(value) -> None:
    """An hour argument of the old API: None or a whole hour 0-23."""
    if value is not None and not (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                                  and 0 <= value <= 23):
        raise ValueError(f"current_hour must be an hour 0-23 (or None), got {value!r}")


def _amount(name: str, value) -> Decimal:
    """A money amount of the old API (Decimal, int or float): >= 0 and at most ``MAX_AMOUNT``."""
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError, TypeError):
        amount = None
    if amount is None or not amount.is_finite() or not 0 <= amount <= MAX_AMOUNT or isinstance(value, bool):
        raise ValueError(f"{name} must be an amount >= 0 and at most {MAX_AMOUNT:.0e}, got {value!r}")
    return amount

