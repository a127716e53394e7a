"""Posterior predictions per window from a cached posterior (no refit, no PyMC)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import cache
from .data import load_windows, local_dow_hour, read_table


def predict(model_dir: str, windows: str | pd.DataFrame, interval: float = 0.9, seed: int = 0,
            force: bool = False, strict: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Copy the input rows and add predicted conversions and conversion-rate intervals.

    Needs ``timestamp`` and ``clicks`` per row (``conversions`` optional).
    Adds ``pred_conversions_{mean,lo,hi}``: posterior predictive conversions
    given the row's clicks (central ``interval``), and ``pred_cvr_{mean,lo,hi}``.
    When the rows have ``conversions``, also ``pred_pit``: the randomized
    probability integral transform of the observed count, uniform on [0, 1]
    when the predictions are calibrated (counts are discrete, so an inclusive
    central interval covers more than its nominal level on small counts; the
    PIT does not).
    A campaign the model has not seen is predicted from the population level
    (wider intervals) and named in the returned warnings.  Needs the conversion
    part of the fit to have passed its gate (every part with ``strict``).
    """
    if not 0 < interval < 1:
        raise ValueError("interval must be between 0 and 1")
    manifest = cache.read_manifest(model_dir)
    cache.check_usable(manifest, model_dir, force, parts=["conversion"], strict=strict)
    tz = manifest["timezone"]
    rows = load_windows(windows, timezone=tz, required=("timestamp", "clicks"))
    _, arrays = cache.read_runtime(model_dir, campaigns=sorted(set(rows["campaign"])), manifest=manifest)
    known = {c: i for i, c in enumerate(manifest["campaigns"])}
    unseen = sorted(set(rows["campaign"]) - set(known))
    warnings = [f"campaign {c!r} not in the model: predicted from the population level (wider intervals)"
                for c in unseen]
    cidx = rows["campaign"].map(known).fillna(len(known)).to_numpy(np.int64)
    dow, hour = local_dow_hour(rows["timestamp"], tz)
    p = arrays["cvr"][:, cidx, dow, hour].astype(np.float64)  # [draw, row]
    clicks = rows["clicks"].to_numpy()
    conv = np.random.default_rng(seed).binomial(clicks[None, :], p)
    lo_q, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    out = windows.copy() if isinstance(windows, pd.DataFrame) else read_table(windows)
    out["pred_conversions_mean"] = clicks * p.mean(axis=0)
    out["pred_conversions_lo"] = np.quantile(conv, lo_q, axis=0)
    out["pred_conversions_hi"] = np.quantile(conv, hi_q, axis=0)
    out["pred_cvr_mean"] = p.mean(axis=0)
    out["pred_cvr_lo"] = np.quantile(p, lo_q, axis=0)
    out["pred_cvr_hi"] = np.quantile(p, hi_q, axis=0)
    if "conversions" in rows:
        out["pred_pit"] = randomized_pit(rows["conversions"].to_numpy(), clicks, p, seed)
    return out, warnings


def randomized_pit(observed: np.ndarray, trials: np.ndarray, p: np.ndarray, seed: int = 0) -> np.ndarray:
    """Randomized PIT of binomial counts under a mixture over draws ``p`` [draw, row]."""
    from scipy.stats import binom

    below = binom.cdf(observed - 1, trials, p).mean(axis=0)
    at_most = binom.cdf(observed, trials, p).mean(axis=0)
    return below + np.random.default_rng(seed + 1).uniform(size=observed.shape) * (at_most - below)
