"""The budget multiplier's controllers, chosen by the plan option ``controller`` (``CONTROLLERS``).

A controller turns the spend so far, against the curve the pacer paces on, into the multiplier of every
hour's bid factor.  To add one: a ``Controller`` with a ``name`` and ``multiplier``, listed in
``CONTROLLERS``; its state, if it keeps one, is ``L`` and its time ``t_int``, which the journal and the
fleet's ledger carry (a controller without state leaves them at 0 and the day's start)."""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from ..market import MarketBelief, auction_response

KP, KI = 0.5, 1.0  # proportional gain, integral gain per hour (gap in units of budget/24)
L_MIN, L_MAX = -3.0, 1.1  # bounds of the integral term L (log multiplier): no wind-up past them
M_MIN, M_MAX = 0.05, 3.0  # bounds of the multiplier exp(L - KP * gap)
DUAL_STEP = 0.5  # the dual-gradient controller's step: dual variable per average hour's budget of gap
RESOLVE_EVERY = 60.0  # seconds between the re-solving controller's solves (and at every new plan)
RESOLVE_MAX = 20.0  # the re-solving controller's largest multiplier: a market far dearer than the history (the
# plan's factors are the history's) may need it; where the market is as learned it stays near 1
RESOLVE_GRID = np.linspace(math.log(M_MIN), math.log(RESOLVE_MAX), 161)  # the log multipliers it solves among
_HOURS = np.arange(24)


def hours_ahead(starts: list[float], t: float, h: int) -> np.ndarray:
    """How much of each hour of the day is still ahead at ``t`` (in hour ``h``, whose hours start at ``starts``):
    1 for the hours after it, the rest of ``h``, 0 before."""
    weight = np.where(_HOURS > h, 1.0, 0.0)
    weight[h] = min(max((starts[h + 1] - t) / (starts[h + 1] - starts[h]), 0.0), 1.0)
    return weight


class Pacer(Protocol):
    """What a controller reads of the pacer (``pacer.Pacer``) and, for the re-solving one, redraws."""

    budget: float
    _spent: float
    _gap_scale: float
    _starts: list[float]
    _hour_cap: float
    _log_k: np.ndarray
    _plan_market: tuple[float, float]
    _market: MarketBelief
    _beliefs: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    _alloc: list[float]
    _cum: list[float]

    def _planned(self, t: float, h: int) -> float: ...

    def _today(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class Controller:
    """The multiplier from spend against the curve.  ``multiplier(pacer, t, h)`` is called at most every
    ``CONTROL_STEP`` between records and before every record (``integrates``: it must be brought up to the
    record's time before the spend jumps); ``review`` after every record, live or replayed; ``new_plan`` when
    the curve is redrawn."""

    name = ""
    integrates = False

    def __init__(self, start: float) -> None:
        self.L, self.t_int = 0.0, start  # the state the journal and the ledger carry

    def multiplier(self, pacer: Pacer, t: float, h: int) -> float:
        raise NotImplementedError

    def review(self, pacer: Pacer, t: float, h: int) -> None:
        """After a record (the spend has moved)."""

    def new_plan(self) -> None:
        """The curve was redrawn (a new plan)."""


class PIController(Controller):
    """``m = exp(L - KP * gap)`` within [M_MIN, M_MAX], where ``gap`` is spend minus the curve's
    (``Pacer._planned``) in average hours' budgets and ``L`` its integral over time (rate ``KI`` per hour,
    within [L_MIN, L_MAX]), brought up to ``t`` at every call: the multiplier settles wherever spend tracks
    the morning's curve."""

    name = "pi"
    integrates = True

    def multiplier(self, pacer: Pacer, t: float, h: int) -> float:
        gap = (pacer._spent - pacer._planned(t, h)) * pacer._gap_scale
        if t > self.t_int:
            L = self.L - KI * gap * (t - self.t_int) * (1 / 3600.0)
            self.L = L_MIN if L < L_MIN else L_MAX if L > L_MAX else L
            self.t_int = t
        m = math.exp(self.L - KP * gap)
        return M_MIN if m < M_MIN else M_MAX if m > M_MAX else m


class DualGradientController(Controller):
    """Balseiro & Gur's adaptive pacing: the dual variable takes a gradient step per auction,
    ``mu += step x (spend - target spend)``, whose sum is ``DUAL_STEP x gap`` (the plan's own dual is already
    in the bid factors, so ``mu`` is the correction to it), and the multiplier is ``1 / (1 + mu)`` within
    [M_MIN, M_MAX]: no integral term."""

    name = "dual-gradient"

    def multiplier(self, pacer: Pacer, t: float, h: int) -> float:
        mu = DUAL_STEP * (pacer._spent - pacer._planned(t, h)) * pacer._gap_scale
        m = 1.0 / (1.0 + mu) if mu > 1.0 / M_MAX - 1.0 else M_MAX
        return M_MIN if m < M_MIN else m


class ResolvingController(Controller):
    """The multiplier ``m`` of every hour's bid factor under which the rest of the day (the rest of this hour
    and the hours after it, each at most its cap) is expected to spend exactly the budget not yet spent, on
    the latest beliefs and the plan's market; the curve from here on is what ``m`` is expected to spend, so
    the hour's room follows it.  Solved every ``RESOLVE_EVERY`` seconds, after a record when due and at
    every new plan, on a grid of multipliers (``RESOLVE_GRID``, interpolated): a day richer or poorer than
    expected spreads its difference over all that is left of it instead of being steered back to the
    morning's curve."""

    name = "resolve"

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.m, self.resolve_at = 1.0, -math.inf

    def multiplier(self, pacer: Pacer, t: float, h: int) -> float:
        if t >= self.resolve_at:
            self.solve(pacer, t, h)
        return self.m

    def review(self, pacer: Pacer, t: float, h: int) -> None:
        if t >= self.resolve_at:
            self.solve(pacer, t, h)

    def new_plan(self) -> None:
        self.resolve_at = -math.inf

    def solve(self, pacer: Pacer, t: float, h: int) -> None:
        """Solve for ``m`` at ``t`` (hour ``h``) and redraw the pacer's curve from it."""
        spent = pacer._spent  # (not the bids held, which are no cost yet: a restart, which has none, solves alike)
        weight = hours_ahead(pacer._starts, t, h)
        if pacer._beliefs is None:  # the posterior means of today (as learned so far)
            pacer._beliefs = tuple(a.mean(0) for a in pacer._today())
        cvr, cpc, vol = pacer._beliefs
        spend, _ = auction_response(pacer._log_k[None, :] + RESOLVE_GRID[:, None], vol, cpc, cvr,
                                    *pacer._plan_market, logged_win_rate=pacer._market.prior[1])
        spend = np.minimum(spend, pacer._hour_cap)  # [grid, 24]
        totals = spend @ weight  # non-decreasing along the grid
        i = int(totals.searchsorted(pacer.budget - spent))
        if i == 0 or i == len(totals):  # beyond the grid: its end
            i = min(i, len(totals) - 1)
            share, lo = 1.0, i
        else:
            lo = i - 1
            share = (pacer.budget - spent - totals[lo]) / max(totals[i] - totals[lo], 1e-300)
        curve = spend[lo] + share * (spend[i] - spend[lo])
        self.m = math.exp(RESOLVE_GRID[lo] + share * (RESOLVE_GRID[i] - RESOLVE_GRID[lo]))
        pacer._alloc[h:] = [float(a) for a in curve[h:]]
        # the curve ends at the budget: through now at the solution (the later hours keep what they are
        # expected to take), and where no multiplier spends all that is left, this hour may take the rest
        pacer._cum[24] = pacer.budget
        for j in range(23, h - 1, -1):
            pacer._cum[j] = pacer._cum[j + 1] - pacer._alloc[j]
        before = pacer._cum[h]
        past = math.fsum(pacer._alloc[:h])  # the earlier hours: the spend so far, in the plan's shape
        pacer._alloc[:h] = [a * before / past if before > 0 and past > 0 else 0.0 for a in pacer._alloc[:h]]
        for j in range(h - 1):
            pacer._cum[j + 1] = pacer._cum[j] + pacer._alloc[j]
        self.resolve_at = t + RESOLVE_EVERY


CONTROLLERS = {c.name: c for c in (PIController, DualGradientController, ResolvingController)}
