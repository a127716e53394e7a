"""The diagnostics gate: R-hat, bulk and tail ESS and divergences of every sampled quantity, per part."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import DEFAULT


@dataclass
class Diagnostics:
    """Convergence diagnostics of a fit (or of one part) and whether it passed the gate."""

    rhat_max: float
    ess_bulk_min: float
    ess_tail_min: float
    divergences: int
    draws: int
    chains: int
    worst: dict = field(default_factory=dict)  # variable names behind each worst figure
    gate: dict = field(default_factory=lambda: DEFAULT.gate)

    @property
    def failures(self) -> list[str]:
        out, gate = [], self.gate
        if not self.rhat_max <= gate["rhat_max"]:
            out.append(f"R-hat {self.rhat_max:.3f} > {gate['rhat_max']} ({self.worst.get('rhat')})")
        if not self.ess_bulk_min >= gate["ess_bulk_min"]:
            out.append(f"bulk ESS {self.ess_bulk_min:.0f} < {gate['ess_bulk_min']:.0f} ({self.worst.get('ess_bulk')})")
        if not self.ess_tail_min >= gate["ess_tail_min"]:
            out.append(f"tail ESS {self.ess_tail_min:.0f} < {gate['ess_tail_min']:.0f} ({self.worst.get('ess_tail')})")
        if self.divergences > gate["divergences_max"]:
            out.append(f"{self.divergences} divergent transitions")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {"passed": self.passed, "failures": self.failures, "rhat_max": self.rhat_max,
                "ess_bulk_min": self.ess_bulk_min, "ess_tail_min": self.ess_tail_min,
                "divergences": self.divergences, "draws": self.draws, "chains": self.chains,
                "worst": self.worst, "gate": self.gate}

    @classmethod
    def from_dict(cls, d: dict) -> "Diagnostics":
        """Back from ``as_dict`` (a manifest's or a fit's settings)."""
        return cls(**{k: d[k] for k in ("rhat_max", "ess_bulk_min", "ess_tail_min", "divergences", "draws", "chains",
                                         "worst", "gate")})

    @classmethod
    def combine(cls, parts: dict[str, "Diagnostics"]) -> "Diagnostics":
        """The worst figures over independently sampled parts (variable names prefixed by part)."""
        rhat = max(parts, key=lambda p: parts[p].rhat_max)
        bulk = min(parts, key=lambda p: parts[p].ess_bulk_min)
        tail = min(parts, key=lambda p: parts[p].ess_tail_min)
        first = next(iter(parts.values()))
        return cls(rhat_max=parts[rhat].rhat_max, ess_bulk_min=parts[bulk].ess_bulk_min,
                   ess_tail_min=parts[tail].ess_tail_min,
                   divergences=sum(d.divergences for d in parts.values()), draws=first.draws, chains=first.chains,
                   worst={"rhat": f"{rhat}:{parts[rhat].worst['rhat']}",
                          "ess_bulk": f"{bulk}:{parts[bulk].worst['ess_bulk']}",
                          "ess_tail": f"{tail}:{parts[tail].worst['ess_tail']}"}, gate=first.gate)

    @classmethod
    def known(cls, chains: int, draws: int, gate: dict) -> "Diagnostics":
        """A part that was not sampled because its value is known: passes by construction."""
        return cls(1.0, float(chains * draws), float(chains * draws), 0, draws, chains,
                   worst={k: "known value" for k in ("rhat", "ess_bulk", "ess_tail")}, gate=gate)


def diagnose(posterior_tree, derived: tuple[str, ...] = (), gate: dict | None = None) -> Diagnostics:
    """R-hat, bulk/tail ESS (convergence.py: arviz_stats' formulas, vectorised) and divergences of a
    sampled DataTree: the worst over every sampled quantity but the ``derived`` ones, with the variable it
    belongs to."""
    from ..convergence import diagnostics

    post = posterior_tree["posterior"].to_dataset()
    names = [v for v in post.data_vars if v not in derived]
    chains, draws = post.sizes["chain"], post.sizes["draw"]
    blocks = [post[v].values.reshape(chains, draws, -1) for v in names]
    owner = np.repeat(names, [b.shape[2] for b in blocks])
    rhat, bulk, tail = diagnostics(np.moveaxis(np.concatenate(blocks, axis=2), 2, 0))  # [quantity, chain, draw]

    def worst(values: np.ndarray, pick) -> tuple[float, str]:
        if np.isnan(values).all():  # too few draws to tell: fails the gate
            return float("nan"), "all"
        i = pick(values)
        return float(values[i]), str(owner[i])

    (rhat_max, rhat_var), (bulk_min, bulk_var), (tail_min, tail_var) = (
        worst(rhat, np.nanargmax), worst(bulk, np.nanargmin), worst(tail, np.nanargmin))
    stats = posterior_tree["sample_stats"].to_dataset()
    div = int(stats["diverging"].sum()) if "diverging" in stats else 0
    return Diagnostics(rhat_max=rhat_max, ess_bulk_min=bulk_min, ess_tail_min=tail_min, divergences=div,
                       draws=draws, chains=chains, worst={"rhat": rhat_var, "ess_bulk": bulk_var,
                                                          "ess_tail": tail_var},
                       gate=DEFAULT.gate if gate is None else gate)
