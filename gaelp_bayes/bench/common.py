"""What every benchmark shares: the table header (machine and versions), Markdown tables, writing a table under
reports/benchmarks/, the held-out checks of a fitted cache against a simulated world's truth, and the options'
comma-separated lists of whole numbers."""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

OUT_DIR = Path("reports/benchmarks")


def gate_summary(diagnostics) -> str:
    """A fit's gate in a few words, for either engine: NUTS's R-hat, ESS and divergences, or the Laplace engine's
    Pareto k-hat, ESS and the campaigns refitted with NUTS."""
    d = diagnostics.as_dict()
    verdict = "pass" if d["passed"] else "FAIL: " + "; ".join(d["failures"])
    if d.get("engine") == "laplace":
        return (f"{verdict} (Laplace: max Pareto k-hat {d['khat_max']:.2f}, min ESS {d['ess_min']:.0f}, "
                f"population k-hat {d['population_khat_max']:.2f}, {len(d['fallback'])} campaign(s) refitted "
                "with NUTS)")
    return (f"{verdict} (NUTS: max R-hat {d['rhat_max']:.3f}, min bulk ESS {d['ess_bulk_min']:.0f}, min tail ESS "
            f"{d['ess_tail_min']:.0f}, divergences {d['divergences']})")


def whole_numbers(text: str) -> list[int]:
    """An option's comma-separated whole numbers >= 0 (sizes, seeds, workers), or argparse's one-line error."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers >= 0, got {text!r}")
    return values


def _header(title: str) -> list[str]:
    import arviz
    import nutpie
    import pymc

    return [f"# {title}", "",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
            f"pymc {pymc.__version__}, nutpie {nutpie.__version__}, arviz {arviz.__version__}. "
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]


def _markdown(frame) -> str:
    """A pandas DataFrame as a Markdown table (index first), without extra dependencies."""
    cols = [frame.index.name or ""] + [str(c) for c in frame.columns]
    rows = [[str(i)] + [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
            for i, row in zip(frame.index, frame.itertuples(index=False))]
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(r) + " |" for r in rows])


def _write(name: str, lines: list[str]) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    (OUT_DIR / f"{name}.md").write_text(text)
    print(text)
    print(f"wrote {OUT_DIR / name}.md")


def _standard_error(values) -> float:
    """The standard error of the mean of ``values`` (a pandas Series over world seeds); NaN for one value."""
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def _held_out(model_dir: Path, holdout, world) -> dict:
    """A cache's 90% coverage on held-out windows (randomized PIT; the inclusive predictive interval) and of
    the true cell rates, with the number of held-out windows and their predicted conversions (the mean)."""
    from .. import cache
    from ..predict import predict

    pred, _ = predict(str(model_dir), holdout.reset_index(drop=True), force=True)
    manifest, arrays = cache.read_runtime(model_dir)
    truth = world.cvr[[world.campaigns.index(c) for c in manifest["campaigns"]]]  # the cache's order (sorted names)
    covered = 0
    for start in range(0, len(truth), 100):  # 100 campaigns at a time: memory bounded at thousands
        lo, hi = np.quantile(arrays["cvr"][:, start:min(start + 100, len(truth))], [0.05, 0.95], axis=0)
        covered += int(((lo <= truth[start:start + 100]) & (truth[start:start + 100] <= hi)).sum())
    return {"windows": len(pred), "predicted_conversions": float(pred["pred_conversions_mean"].sum()),
            "pit_coverage": float(((pred["pred_pit"] >= 0.05) & (pred["pred_pit"] <= 0.95)).mean()),
            "interval_coverage": float(((pred["pred_conversions_lo"] <= pred["conversions"])
                                        & (pred["conversions"] <= pred["pred_conversions_hi"])).mean()),
            "rate_coverage": covered / truth.size}


def _campaign_rates(model_dir: Path) -> np.ndarray:
    """[draw, campaign]: each campaign's conversion rate averaged over its 168 weekday-hour cells."""
    from .. import cache

    cvr = cache.read_runtime(model_dir)[1]["cvr"][:, :-1]
    return cvr.reshape(cvr.shape[0], cvr.shape[1], -1).mean(axis=2)


def _named(table: str, engine: str) -> str:
    """A benchmark table's name: the default engine's under its own name, another engine's beside it."""
    return table if engine == "auto" else f"{table}_{engine}"


def _engine_line(fitted) -> str:
    """What fitted the posteriors of a table (the last fit's engine)."""
    return f"\nPosteriors fitted by the {fitted.settings.get('engine', 'nuts')} engine."
