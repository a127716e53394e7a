"""Daily budget -> 24 hourly amounts from cached posterior draws, with a confidence score.

The response is linear up to an hour's capacity: a dollar in hour h buys
``v[h] = cvr[h] / cpc[h]`` expected conversions (``* rpc`` for revenue).  With
the bounds below, maximising posterior expected value is a fractional
knapsack, solved exactly in integer cents by filling the hours in order of
posterior mean ``v``.  The same fill per draw, vectorised, gives the plan that
would be optimal if that draw were the truth; the confidence score compares
the chosen plan with it draw by draw.

Bounds on hour h: ``min_per_hour <= x[h] <= min(max_per_hour, max_share * budget,
capacity[h])`` where capacity is the posterior mean of the spend the hour
absorbed at the logged bid (clicks per hour x cpc) times ``headroom``
(default 1.5: bidding somewhat higher than history buys somewhat more traffic;
beyond that the linear response is not trusted).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np

from . import cache
from .errors import GaelpError
from .market import MAX_AMOUNT, hour_cap, threshold_plan, threshold_scores
from .runtime import PACER_MAX_SHARE

OBJECTIVES = ("conversions", "revenue", "cpa")
RISKS = ("mean", "cvar")


class AllocationError(GaelpError):
    """Infeasible bounds, missing data for an objective, or an unknown campaign choice."""

    exit_code = 2


@dataclass
class Draws:
    """Per-draw hourly quantities for one campaign on one day of the week, [draw, 24]."""

    cvr: np.ndarray
    cpc: np.ndarray
    capacity: np.ndarray  # spend the hour can absorb (money)
    rpc: np.ndarray | None  # revenue per conversion
    volume: np.ndarray | None = None  # clicks per hour at the logged bid (for the auction-aware plan)


@dataclass
class Plan:
    """An allocation with its scores (money in Decimal, to the cent)."""

    budget: Decimal
    date: str
    campaign: str
    objective: str
    risk: str
    amounts: list[Decimal]
    hourly_conversions: np.ndarray  # [3, 24]: mean, lo, hi of expected conversions
    confidence: float
    confidence_tolerance: float
    p_beats_even: float
    expected_conversions: tuple[float, float, float]  # mean, lo, hi
    expected_cpa: float | None
    expected_roas: float | None
    p_meets_target_cpa: float | None = None
    warnings: list[str] = field(default_factory=list)
    runtime_plan: list[float] | None = None  # expected spend per hour of the plan the runtime pacer follows
    runtime_confidence: float | None = None

    def to_json(self) -> dict:
        mean, lo, hi = self.hourly_conversions
        return {
            "budget": float(self.budget), "date": self.date, "campaign": self.campaign,
            "objective": self.objective, "risk": self.risk,
            "allocations": [{"hour": h, "amount": float(a), "expected_conversions_mean": float(mean[h]),
                             "expected_conversions_lo": float(lo[h]), "expected_conversions_hi": float(hi[h])}
                            for h, a in enumerate(self.amounts)],
            "confidence": self.confidence, "confidence_tolerance": self.confidence_tolerance,
            "p_beats_even": self.p_beats_even,
            "expected_conversions": dict(zip(("mean", "lo", "hi"), self.expected_conversions)),
            "expected_cpa": self.expected_cpa, "expected_roas": self.expected_roas,
            "p_meets_target_cpa": self.p_meets_target_cpa, "warnings": self.warnings,
            "runtime_plan": self.runtime_plan, "runtime_confidence": self.runtime_confidence,
        }

    def table(self) -> str:
        mean, lo, hi = self.hourly_conversions
        m, l_, h_ = self.expected_conversions
        pacer = self.runtime_plan
        lines = [f"Plan for {self.campaign} on {self.date}: budget {self.budget:.2f}, objective {self.objective}"
                 f" ({'risk-averse: CVaR 10%' if self.risk == 'cvar' else 'posterior mean'})",
                 f"{'hour':>4} {'amount':>10} {'share':>6} {'exp. conv':>9} {'90% interval':>16}"
                 + (f" {'pacer':>9}" if pacer else "")]
        for h, a in enumerate(self.amounts):
            share = float(a / self.budget) if self.budget else 0.0
            lines.append(f"{h:>4} {a:>10.2f} {share:>6.1%} {mean[h]:>9.2f} {f'[{lo[h]:.2f}, {hi[h]:.2f}]':>16}"
                         + (f" {pacer[h]:>9.2f}" if pacer else ""))
        lines.append(f"total {sum(self.amounts):>9.2f}        {m:>9.2f} {f'[{l_:.2f}, {h_:.2f}]':>16}"
                     + (f" {sum(pacer):>9.2f}" if pacer else ""))
        if pacer:
            lines.append(f"pacer: the expected spend per hour of the plan the runtime pacer follows (bids proportional "
                         f"to the conversion rate in a second-price market; confidence {self.runtime_confidence:.0%})")
        lines.append(f"confidence {self.confidence:.0%}: the posterior probability that this plan gets at least "
                     f"{self.confidence_tolerance:.0%} of the conversions of the plan that would be best if we knew "
                     "the true rates")
        lines.append(f"P(plan beats even pacing) = {self.p_beats_even:.0%}")
        if self.expected_cpa is not None:
            lines.append(f"expected CPA {self.expected_cpa:.2f}")
        if self.expected_roas is not None:
            lines.append(f"expected ROAS {self.expected_roas:.2f}")
        if self.p_meets_target_cpa is not None:
            lines.append(f"P(CPA <= target) = {self.p_meets_target_cpa:.0%}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def greedy_fill(order: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: int | np.ndarray) -> np.ndarray:
    """Exact solution of max sum(x*v) s.t. sum(x) = total, lo <= x <= hi, given hours sorted by v.

    ``order`` is [..., 24] (hours in decreasing value; leading axes are draws);
    amounts are integer cents.  Returns x with the same leading shape.
    """
    room = np.take_along_axis(np.broadcast_to(hi - lo, order.shape), order, axis=-1)
    left = np.asarray(total - lo.sum())[..., None]
    before = np.cumsum(room, axis=-1) - room
    fill_sorted = np.clip(left - before, 0, room)
    fill = np.empty_like(fill_sorted)
    np.put_along_axis(fill, order, fill_sorted, axis=-1)
    return lo + fill


def cvar_plan(value: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: int, alpha: float = 0.1) -> np.ndarray:
    """Integer-cent plan maximising the CVaR at ``alpha`` of sum(x*v) over draws (Rockafellar-Uryasev LP)."""
    from scipy.optimize import linprog

    s, n = value.shape
    # variables: x (24), t, u (s); maximise t - sum(u)/(alpha*s)
    c = np.concatenate([np.zeros(n), [-1.0], np.full(s, 1.0 / (alpha * s))])
    a_ub = np.hstack([-value, np.ones((s, 1)), -np.eye(s)])  # t - x.v_s - u_s <= 0
    a_eq = np.concatenate([np.ones(n), [0.0], np.zeros(s)])[None, :]
    bounds = [(float(l_), float(h_)) for l_, h_ in zip(lo, hi)] + [(None, None)] + [(0, None)] * s
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(s), A_eq=a_eq, b_eq=[float(total)], bounds=bounds, method="highs")
    if not res.success:
        raise AllocationError(f"risk-averse (CVaR) allocation failed: {res.message}")
    return round_to_total(res.x[:n], lo, hi, total)


def round_to_total(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: int) -> np.ndarray:
    """Integer amounts within [lo, hi] summing to ``total`` (x must sum to about ``total``).

    Floors, then adds a unit to the largest remainders (ties: earlier hour).
    """
    base = np.clip(np.floor(x + 1e-9).astype(np.int64), lo, hi)
    short = int(total - base.sum())
    rem = x - base
    for h in np.argsort(-rem, kind="stable"):
        if short <= 0:
            break
        if base[h] < hi[h]:
            base[h] += 1
            short -= 1
    return base


def hour_bounds(budget_cents: int, capacity: np.ndarray, min_per_hour: float, max_per_hour: float | None,
                max_share: float, headroom: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-hour [lo, hi] in cents, unchecked (one pair per entry of ``capacity``: a campaign's 24 hours, or an
    account's campaign-hours)."""
    lo = np.full(capacity.shape, int(np.ceil(round(min_per_hour * 100, 6))), dtype=np.int64)
    cap = np.floor(capacity * headroom * 100).astype(np.int64)
    hi = np.minimum(cap, int(np.floor(max_share * budget_cents + 1e-9)))
    if max_per_hour is not None:
        hi = np.minimum(hi, int(np.floor(round(max_per_hour * 100, 6))))
    return lo, hi


def bounds_in_cents(budget_cents: int, capacity: np.ndarray, min_per_hour: float, max_per_hour: float | None,
                    max_share: float, headroom: float,
                    hour_name=lambda h: f"hour {h}") -> tuple[np.ndarray, np.ndarray]:
    """Per-hour [lo, hi] in cents, or AllocationError naming the bound that makes the budget infeasible
    (``hour_name``: how the error names an entry of ``capacity``)."""
    lo, hi = hour_bounds(budget_cents, capacity, min_per_hour, max_per_hour, max_share, headroom)
    check_feasible(lo, hi, budget_cents, hour_name, "max share, max per hour or capacity", "the hourly minimums",
                   "the hours", f"max share {max_share:.0%}, hourly capacity x headroom {headroom}")
    return lo, hi


def check_feasible(lo: np.ndarray, hi: np.ndarray, budget_cents: int, name, bound: str, minimums: str, whole: str,
                   why: str) -> None:
    """AllocationError if amounts within [``lo``, ``hi``] (cents; each entry named by ``name(i)``, its upper
    bound explained by ``bound``) cannot add to the budget: ``minimums`` add to more, or ``whole`` can absorb
    less (``why``)."""
    if (lo > hi).any():
        i = int(np.argmax(lo > hi))
        raise AllocationError(f"infeasible bounds: {name(i)} must get at least {lo[i] / 100:.2f} but can take "
                              f"at most {hi[i] / 100:.2f} ({bound})")
    if lo.sum() > budget_cents:
        raise AllocationError(f"infeasible bounds: {minimums} add to {lo.sum() / 100:.2f}, "
                              f"more than the budget {budget_cents / 100:.2f}")
    if hi.sum() < budget_cents:
        raise AllocationError(f"infeasible bounds: {whole} can absorb at most {hi.sum() / 100:.2f} ({why}), "
                              f"less than the budget {budget_cents / 100:.2f}")


def campaign_draws(arrays: dict, manifest: dict, campaign: str | None, dow: int,
                   clicks_as_cost: bool = False, when: float | None = None) -> tuple[str, Draws, list[str]]:
    """Slice the runtime cubes for one campaign and day of week; unseen campaigns use the population slot.
    ``when`` (seconds since the epoch): conversion rates projected to then by the fit's drift
    (``cache.drift_factor``); None: the rates of the data's last week."""
    campaign, c, warnings = cache.campaign_slot(manifest, campaign, AllocationError)
    cvr = arrays["cvr"][:, c, dow].astype(np.float64)
    if when is not None:
        cvr = np.minimum(cvr * cache.drift_factor(arrays, manifest, c, when), 1.0)
    volume = arrays["volume"][:, c, dow].astype(np.float64)
    if "cpc" in arrays:
        cpc = arrays["cpc"][:, c, dow].astype(np.float64)
    elif clicks_as_cost:
        cpc = np.ones_like(cvr)
        warnings.append("no spend data: budget and amounts are in clicks, not money")
    else:
        raise AllocationError("the model was fitted without a 'spend' column, so cost per click is unknown: "
                              "refit with spend, or pass --clicks-as-cost to allocate clicks instead of money")
    rpc = arrays["rpc"][:, c, None].astype(np.float64) * np.ones(24) if "rpc" in arrays else None
    capacity = (volume * cpc).mean(axis=0)
    return campaign, Draws(cvr=cvr, cpc=cpc, capacity=np.broadcast_to(capacity, cvr.shape), rpc=rpc,
                           volume=volume), warnings


def plan_date(date: str | None, timezone: str, manifest: dict | None = None) -> dt.date:
    """The plan's date: given (YYYY-MM-DD) or today in the account timezone; with ``manifest``, never before
    the data's first day (a plan for a day the model never saw the like of) nor past the forecast horizon
    (``cache.check_horizon``)."""
    if date is None:
        day = dt.datetime.now(ZoneInfo(timezone)).date()
    else:
        try:
            day = dt.date.fromisoformat(date)
        except ValueError:
            raise AllocationError(f"--date {date!r}: not a date (YYYY-MM-DD)") from None
    if manifest is not None:
        first = dt.date.fromisoformat(manifest["period"][0][:10])
        if day < first:
            raise AllocationError(f"--date {day}: before the data's first day ({first}); plan a day after the data")
        cache.check_horizon(manifest, dt.datetime.combine(day, dt.time(12), ZoneInfo(timezone)).timestamp())
    return day


# The rule each numeric option of an allocation must meet (None is allowed where the option is optional).
OPTION_RULES = {
    "budget": (lambda v: 0 < v <= MAX_AMOUNT, "an amount > 0 and at most 1e12", False),
    "target_cpa": (lambda v: 0 < v <= MAX_AMOUNT, "an amount > 0 and at most 1e12", True),
    "min_per_hour": (lambda v: 0 <= v <= MAX_AMOUNT, "an amount >= 0 and at most 1e12", False),
    "max_per_hour": (lambda v: 0 < v <= MAX_AMOUNT, "an amount > 0 and at most 1e12", True),
    "max_share": (lambda v: 0 < v <= 1, "a share in (0, 1]", False),
    "headroom": (lambda v: 0 < v < np.inf, "a finite number > 0", False),
    "exploration": (lambda v: 0 <= v < 1, "a share in [0, 1)", False),
    "tolerance": (lambda v: 0 < v <= 1, "a share in (0, 1]", False),
}


def check_options(**values) -> None:
    """AllocationError naming the first option whose value breaks its rule (``OPTION_RULES``)."""
    for name, value in values.items():
        test, words, optional = OPTION_RULES[name]
        if value is None and optional:
            continue
        try:
            ok = bool(test(float(value)))
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise AllocationError(f"{name} must be {words}, got {value!r}")


def allocate_draws(draws: Draws, budget: float | Decimal, *, objective: str = "conversions",
                   target_cpa: float | None = None, risk: str = "mean", min_per_hour: float = 0.0,
                   max_per_hour: float | None = None, max_share: float = 0.2, headroom: float = 1.5,
                   exploration: float = 0.0, tolerance: float = 0.95, open_hours: np.ndarray | None = None,
                   spend_all: bool = True) -> dict:
    """The core solve on per-draw arrays; returns amounts in cents and the scores (see ``allocate``).

    ``open_hours`` (bool [24]) closes the others (re-planning the rest of a day).  With
    ``spend_all=False`` a budget larger than the hours can absorb plans what they can absorb
    (with a warning) instead of failing: the runtime's choice, never the user's default.
    """
    if objective not in OBJECTIVES:
        raise AllocationError(f"unknown objective {objective!r} (one of {', '.join(OBJECTIVES)})")
    if risk not in RISKS:
        raise AllocationError(f"unknown risk option {risk!r} (one of {', '.join(RISKS)})")
    check_options(budget=budget, target_cpa=target_cpa, min_per_hour=min_per_hour, max_per_hour=max_per_hour,
                  max_share=max_share, headroom=headroom, exploration=exploration, tolerance=tolerance)
    if objective == "cpa" and target_cpa is None:
        raise AllocationError("objective 'cpa' needs a positive --target-cpa")
    if objective == "revenue" and draws.rpc is None:
        raise AllocationError("objective 'revenue' needs a model fitted with a 'revenue' column")
    budget_cents = int(Decimal(str(budget)).quantize(Decimal("0.01")) * 100)
    if budget_cents <= 0:
        raise AllocationError(f"budget must be at least 0.01, got {budget!r}")
    conv_per_dollar = draws.cvr / draws.cpc  # [draw, 24]
    value = conv_per_dollar * draws.rpc if objective == "revenue" else conv_per_dollar
    capacity = draws.capacity[0] if open_hours is None else np.where(open_hours, draws.capacity[0], 0.0)
    warnings = []
    if not spend_all:
        absorbable = int(hour_bounds(budget_cents, capacity, min_per_hour, max_per_hour, max_share, headroom)[1].sum())
        if absorbable < budget_cents:
            warnings.append(f"the open hours can absorb about {absorbable / 100:.2f} of the "
                            f"{budget_cents / 100:.2f} left; planning that much")
            share_cap = max_share * budget_cents / 100
            max_per_hour = share_cap if max_per_hour is None else min(max_per_hour, share_cap)
            budget_cents, max_share = absorbable, 1.0
            if budget_cents <= 0:
                raise AllocationError("no open hour can absorb any spend")
    lo, hi = bounds_in_cents(budget_cents, capacity, min_per_hour, max_per_hour, max_share, headroom)

    # Exploration reserve first, Thompson-style: each hour gets the posterior probability that it is the
    # best hour (among hours with room), so uncertain hours that might be best are tried.
    reserve = np.zeros(24, dtype=np.int64)
    if exploration > 0:
        open_value = np.where(hi > lo, value, -np.inf)
        weights = np.bincount(np.argmax(open_value, axis=1), minlength=24) / value.shape[0]
        size = min(int(round(exploration * budget_cents)), budget_cents - int(lo.sum()))
        want = size * weights
        reserve = round_to_total(np.minimum(want, hi - lo), np.zeros(24, np.int64), hi - lo, size)
    lo2 = lo + reserve
    if risk == "cvar":
        x = cvar_plan(value, lo2, hi, budget_cents)
    else:
        x = greedy_fill(np.argsort(-value.mean(axis=0), kind="stable"), lo2, hi, budget_cents)

    # Scores, draw by draw: the plan vs the plan that would be optimal under that draw.
    optimal = greedy_fill(np.argsort(-value, axis=1, kind="stable"), lo, hi, budget_cents)
    plan_conv = conv_per_dollar @ x / 100.0  # expected conversions of the plan, per draw
    opt_score, plan_score = (optimal * value).sum(axis=1), value @ x
    even = np.full(24, budget_cents / 24.0)
    hourly = conv_per_dollar * x / 100.0
    out = {
        "cents": x,
        "hourly": np.stack([hourly.mean(axis=0), *np.quantile(hourly, [0.05, 0.95], axis=0)]),
        "confidence": float(np.mean(plan_score >= tolerance * opt_score)),
        "p_beats_even": float(np.mean(plan_score > value @ even)),
        "expected": (float(plan_conv.mean()), *map(float, np.quantile(plan_conv, [0.05, 0.95]))),
        "expected_cpa": float(budget_cents / 100.0 / plan_conv.mean()) if plan_conv.mean() > 0 else None,
        "expected_roas": None, "p_meets_target_cpa": None, "warnings": warnings,
    }
    if draws.rpc is not None:
        out["expected_roas"] = float((conv_per_dollar * draws.rpc @ x).mean() / budget_cents)
    if objective == "cpa":
        cpa = budget_cents / 100.0 / np.maximum(plan_conv, 1e-12)
        out["p_meets_target_cpa"] = float(np.mean(cpa <= target_cpa))
        if out["expected_cpa"] is None or out["expected_cpa"] > target_cpa:
            out["warnings"].append(f"target CPA {target_cpa:.2f} is not expected at this budget (expected CPA "
                                   f"{out['expected_cpa']:.2f}); a smaller budget on the best hours would reach it")
    return out


def allocate(model_dir: str, budget: float | Decimal, *, date: str | None = None, campaign: str | None = None,
             clicks_as_cost: bool = False, force: bool = False, strict: bool = False, **options) -> Plan:
    """Plan a day's budget from a cached posterior (options: see ``allocate_draws``).

    Needs the conversion and volume parts of the fit, cost where the model has spend, and revenue for the
    revenue objective: a failed part among those is refused (unless ``force``); another failed part is
    left out with a warning (ROAS, say), or refused too with ``strict``."""
    manifest, arrays = cache.read_runtime(model_dir, campaigns=[campaign])
    needs = ["conversion", "volume"] + ["cost"] * ("cpc" in arrays)
    needs += ["revenue"] * (options.get("objective") == "revenue")
    arrays, notes = cache.usable_arrays(manifest, arrays, model_dir, needs, force, strict)
    plan = plan_day(manifest, arrays, budget, plan_date(date, manifest["timezone"], manifest), campaign,
                    clicks_as_cost, **options)
    plan.warnings += notes
    return plan


def plan_day(manifest: dict, arrays: dict, budget: float | Decimal, day: dt.date, campaign: str | None = None,
             clicks_as_cost: bool = False, **options) -> Plan:
    """``allocate`` on runtime arrays already read (and checked) from a cache."""
    noon = dt.datetime.combine(day, dt.time(12), ZoneInfo(manifest["timezone"])).timestamp()
    name, draws, warnings = campaign_draws(arrays, manifest, campaign, day.weekday(), clicks_as_cost, when=noon)
    res = allocate_draws(draws, budget, **options)
    runtime_plan = runtime_confidence = None
    if "cpc" in arrays:  # the auction-aware plan of a runtime pacer with its default options, for this budget
        total = float(res["cents"].sum()) / 100
        cap = hour_cap(total, PACER_MAX_SHARE)
        log_k, spend = threshold_plan(draws.cvr.mean(0), draws.cpc.mean(0), draws.volume.mean(0), total, cap)
        runtime_plan = [round(float(x), 2) for x in spend]
        runtime_confidence = threshold_scores(log_k, draws.cvr, draws.cpc, draws.volume,
                                              options.get("tolerance", 0.95))["confidence"]
    return Plan(budget=Decimal(int(res["cents"].sum())) / 100, date=day.isoformat(), campaign=name,
                objective=options.get("objective", "conversions"), risk=options.get("risk", "mean"),
                amounts=[Decimal(int(c)) / 100 for c in res["cents"]], hourly_conversions=res["hourly"],
                confidence=res["confidence"], confidence_tolerance=options.get("tolerance", 0.95),
                p_beats_even=res["p_beats_even"], expected_conversions=res["expected"],
                expected_cpa=res["expected_cpa"], expected_roas=res["expected_roas"],
                p_meets_target_cpa=res["p_meets_target_cpa"], warnings=warnings + res["warnings"],
                runtime_plan=runtime_plan, runtime_confidence=runtime_confidence)


# ----- the account: one budget over campaigns x hours ------------------------------------------------------
def greedy_fill_groups(order: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: int, group: np.ndarray,
                       group_hi: np.ndarray) -> np.ndarray:
    """``greedy_fill`` with the cells in groups (a campaign's hours) whose sums stay <= ``group_hi``: exact
    for this nested family of upper bounds (a polymatroid, where filling in order of value is optimal).
    ``order`` [..., n] (cells in decreasing value; leading axes are draws); ``lo`` [n] or like ``order``
    (amounts already placed); integer cents."""
    x = np.broadcast_to(lo, order.shape).astype(np.int64).copy()
    members = (group[:, None] == np.arange(len(group_hi))[None, :]).astype(np.int64)  # [n, groups]
    group_left = group_hi - x @ members  # [..., groups]
    left = total - x.sum(axis=-1)
    for r in range(order.shape[-1]):
        cell = order[..., r:r + 1]
        g = group[cell]
        add = np.minimum(np.minimum(hi[cell] - np.take_along_axis(x, cell, -1), left[..., None]),
                         np.take_along_axis(group_left, g, -1))
        add = np.maximum(add, 0)
        np.put_along_axis(x, cell, np.take_along_axis(x, cell, -1) + add, -1)
        np.put_along_axis(group_left, g, np.take_along_axis(group_left, g, -1) - add, -1)
        left = left - add[..., 0]
    return x


def account_fill(value: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: int, group: np.ndarray,
                 floor: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """The best fill of ``total`` cents for ``value`` ([n], or [draw, n] for each draw's own): each group
    first gets its floor in its own best cells, then every cell is filled in order of value under the
    groups' caps."""
    order = np.argsort(-value, axis=-1, kind="stable")
    if floor.any():
        floor = np.maximum(floor, np.bincount(group, weights=lo, minlength=len(floor)).astype(np.int64))
        lo = greedy_fill_groups(order, lo, hi, int(floor.sum()), group, floor)
    return greedy_fill_groups(order, lo, hi, total, group, cap)


@dataclass
class AccountPlan:
    """One budget over the account's campaigns x 24 hours (money in Decimal, to the cent)."""

    budget: Decimal
    date: str
    campaigns: list[str]
    objective: str
    amounts: list[list[Decimal]]  # [campaign][hour]
    campaign_conversions: np.ndarray  # [3, campaign]: mean, lo, hi of expected conversions
    confidence: float
    confidence_tolerance: float
    p_beats_split: float
    expected_conversions: tuple[float, float, float]
    expected_cpa: float | None
    warnings: list[str] = field(default_factory=list)

    def shares(self) -> list[float]:
        return [float(sum(row) / self.budget) if self.budget else 0.0 for row in self.amounts]

    def to_json(self) -> dict:
        mean, lo, hi = self.campaign_conversions
        return {"budget": float(self.budget), "date": self.date, "objective": self.objective,
                "campaigns": [{"campaign": c, "amount": float(sum(row)), "share": share,
                               "hours": [float(a) for a in row],
                               "expected_conversions": {"mean": float(mean[i]), "lo": float(lo[i]), "hi": float(hi[i])}}
                              for i, (c, row, share) in enumerate(zip(self.campaigns, self.amounts, self.shares()))],
                "matrix": [[float(a) for a in row] for row in self.amounts],
                "confidence": self.confidence, "confidence_tolerance": self.confidence_tolerance,
                "p_beats_split": self.p_beats_split,
                "expected_conversions": dict(zip(("mean", "lo", "hi"), self.expected_conversions)),
                "expected_cpa": self.expected_cpa, "warnings": self.warnings}

    def table(self) -> str:
        mean, lo, hi = self.campaign_conversions
        m, l_, h_ = self.expected_conversions
        width = max(8, *(len(c) for c in self.campaigns))
        lines = [f"Account plan on {self.date}: budget {self.budget:.2f} over {len(self.campaigns)} campaigns, "
                 f"objective {self.objective}",
                 f"{'campaign':<{width}} {'amount':>10} {'share':>6} {'exp. conv':>9} {'90% interval':>16}  best hours"]
        for i, (c, row, share) in enumerate(zip(self.campaigns, self.amounts, self.shares())):
            best = sorted(range(24), key=lambda h: -row[h])[:3]
            hours = ", ".join(f"{h:02d}h {row[h]:.2f}" for h in best if row[h] > 0) or "-"
            lines.append(f"{c:<{width}} {sum(row):>10.2f} {share:>6.1%} {mean[i]:>9.2f} "
                         f"{f'[{lo[i]:.2f}, {hi[i]:.2f}]':>16}  {hours}")
        lines.append(f"{'total':<{width}} {sum(sum(r) for r in self.amounts):>10.2f}        {m:>9.2f} "
                     f"{f'[{l_:.2f}, {h_:.2f}]':>16}")
        lines.append(f"confidence {self.confidence:.0%}: the posterior probability that this plan gets at least "
                     f"{self.confidence_tolerance:.0%} of the conversions of the account plan that would be best if "
                     "we knew the true rates (under the same limits)")
        lines.append(f"P(plan beats splitting the budget by past spend, evenly over hours) = {self.p_beats_split:.0%}")
        if self.expected_cpa is not None:
            lines.append(f"expected CPA {self.expected_cpa:.2f}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def allocate_account(model_dir: str, budget: float | Decimal, *, date: str | None = None,
                     campaigns: list[str] | None = None, min_campaign: float = 0.0, max_campaign: float | None = None,
                     objective: str = "conversions", min_per_hour: float = 0.0, max_per_hour: float | None = None,
                     max_share: float = 0.2, headroom: float = 1.5, tolerance: float = 0.95,
                     force: bool = False, strict: bool = False) -> AccountPlan:
    """Plan one day's budget over the account's campaigns (all of the model's, or ``campaigns``) x 24 hours
    by the same per-draw optimisation as a campaign's plan: every (campaign, hour) cell is bounded as an hour
    is (``max_share`` of the account's budget, ``max_per_hour``, capacity x ``headroom``), every campaign gets
    at least ``min_campaign`` and at most ``max_campaign``.  Objectives conversions and revenue."""
    if objective not in ("conversions", "revenue"):
        raise AllocationError(f"objective {objective!r} is not available for the account (conversions or revenue)")
    check_options(budget=budget, min_per_hour=min_per_hour, max_per_hour=max_per_hour, max_share=max_share,
                  headroom=headroom, tolerance=tolerance)
    check_options(min_per_hour=min_campaign, max_per_hour=max_campaign)  # (amounts, as an hour's)
    manifest, arrays = cache.read_runtime(model_dir, campaigns=campaigns)
    needs = ["conversion", "volume", "cost"] + ["revenue"] * (objective == "revenue")
    arrays, notes = cache.usable_arrays(manifest, arrays, model_dir, needs, force, strict)
    names = list(manifest["campaigns"]) if campaigns is None else list(dict.fromkeys(campaigns))
    unknown = [c for c in names if c not in manifest["campaigns"]]
    if unknown or not names:
        raise AllocationError(f"campaign {unknown[0]!r} is not in the model ({', '.join(manifest['campaigns'])})"
                              if unknown else "no campaign to plan")
    if "cpc" not in arrays:
        raise AllocationError("the model was fitted without spend: an account plan needs cost per click")
    day = plan_date(date, manifest["timezone"], manifest)
    noon = dt.datetime.combine(day, dt.time(12), ZoneInfo(manifest["timezone"])).timestamp()
    parts = [campaign_draws(arrays, manifest, c, day.weekday(), when=noon)[1] for c in names]
    if objective == "revenue" and any(d.rpc is None for d in parts):
        raise AllocationError("objective 'revenue' needs a model fitted with a 'revenue' column")
    n_c = len(names)
    cvr = np.concatenate([d.cvr for d in parts], axis=1)  # [draw, campaign x 24], campaign-major
    conv_per_dollar = cvr / np.concatenate([d.cpc for d in parts], axis=1)
    value = conv_per_dollar * np.concatenate([d.rpc for d in parts], axis=1) if objective == "revenue" \
        else conv_per_dollar
    capacity = np.concatenate([d.capacity[0] for d in parts])
    group = np.repeat(np.arange(n_c), 24)
    budget_cents = int(Decimal(str(budget)).quantize(Decimal("0.01")) * 100)
    lo, hi = bounds_in_cents(budget_cents, capacity, min_per_hour, max_per_hour, max_share, headroom,
                             hour_name=lambda cell: f"{names[cell // 24]} hour {cell % 24}")
    floor = np.full(n_c, int(np.ceil(round(min_campaign * 100, 6))), np.int64)
    cap = np.full(n_c, budget_cents if max_campaign is None else int(np.floor(round(max_campaign * 100, 6))), np.int64)
    group_hi = np.minimum(cap, np.bincount(group, weights=hi, minlength=n_c).astype(np.int64))
    check_feasible(np.maximum(floor, np.bincount(group, weights=lo, minlength=n_c).astype(np.int64)), group_hi,
                   budget_cents, lambda c: f"campaign {names[c]}",
                   "its hours' capacity x headroom, max share, max per hour, max per campaign",
                   "the campaigns' and hours' minimums", "the account's campaigns",
                   f"hourly capacity x headroom {headroom}, max share {max_share:.0%}, max per campaign")
    x = account_fill(value.mean(axis=0), lo, hi, budget_cents, group, floor, group_hi)
    optimal = account_fill(value, lo, hi, budget_cents, group, floor, group_hi)
    plan_score, opt_score = value @ x, (optimal * value).sum(axis=1)
    # the baseline: the budget split by the campaigns' usual spend (capacity), evenly over each one's hours
    usual = np.array([d.capacity[0].sum() for d in parts])
    split = np.repeat(budget_cents * usual / max(usual.sum(), 1e-300) / 24, 24)
    per_campaign = (conv_per_dollar * x / 100.0).reshape(len(cvr), n_c, 24).sum(axis=2)  # [draw, campaign]
    total = per_campaign.sum(axis=1)
    return AccountPlan(
        budget=Decimal(int(x.sum())) / 100, date=day.isoformat(), campaigns=names, objective=objective,
        amounts=[[Decimal(int(v)) / 100 for v in x[c * 24:(c + 1) * 24]] for c in range(n_c)],
        campaign_conversions=np.stack([per_campaign.mean(0), *np.quantile(per_campaign, [0.05, 0.95], axis=0)]),
        confidence=float(np.mean(plan_score >= tolerance * opt_score)), confidence_tolerance=tolerance,
        p_beats_split=float(np.mean(plan_score > value @ split)),
        expected_conversions=(float(total.mean()), *map(float, np.quantile(total, [0.05, 0.95]))),
        expected_cpa=float(budget_cents / 100.0 / total.mean()) if total.mean() > 0 else None, warnings=notes)
