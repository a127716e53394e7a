"""Posterior predictions per window from a cached posterior (no refit, no PyMC)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import cache
from .data import load_windows, local_dow_hour, read_table

PREDICTED = ("pred_conversions_mean", "pred_conversions_lo", "pred_conversions_hi", "pred_cvr_mean", "pred_cvr_lo",
             "pred_cvr_hi")
ROW_CHUNK_VALUES = 1 << 23  # draws x rows predicted at a time (64 MB per float64 array)


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
    A fit with drift projects each row's rate to the row's time (``cache.drift_factor``: rows after the
    fitted weeks get wider intervals the further ahead they are).
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
    clicks = rows["clicks"].to_numpy()
    when = rows["timestamp"].map(pd.Timestamp.timestamp).to_numpy(np.float64)
    observed = rows["conversions"].to_numpy() if "conversions" in rows else None
    columns = {name: np.empty(len(rows)) for name in PREDICTED + (("pred_pit",) if observed is not None else ())}
    rng, pit_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    lo_q, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    step = max(1, ROW_CHUNK_VALUES // arrays["cvr"].shape[0])  # rows at a time: memory bounded at any size
    for start in range(0, len(rows), step):
        rows_here = slice(start, start + step)
        p = arrays["cvr"][:, cidx[rows_here], dow[rows_here], hour[rows_here]].astype(np.float64)  # [draw, row]
        p = np.minimum(p * cache.drift_factor(arrays, manifest, cidx[rows_here], when[rows_here], seed), 1.0)
        conv = rng.binomial(clicks[None, rows_here], p)
        for name, values in (("pred_conversions_mean", clicks[rows_here] * p.mean(axis=0)),
                             ("pred_conversions_lo", np.quantile(conv, lo_q, axis=0)),
                             ("pred_conversions_hi", np.quantile(conv, hi_q, axis=0)),
                             ("pred_cvr_mean", p.mean(axis=0)), ("pred_cvr_lo", np.quantile(p, lo_q, axis=0)),
                             ("pred_cvr_hi", np.quantile(p, hi_q, axis=0))):
            columns[name][rows_here] = values
        if observed is not None:
            columns["pred_pit"][rows_here] = randomized_pit(observed[rows_here], clicks[rows_here], p, pit_rng)
    out = windows.copy() if isinstance(windows, pd.DataFrame) else read_table(windows)
    for name, values in columns.items():
        out[name] = values
    return out, warnings


def randomized_pit(observed: np.ndarray, trials: np.ndarray, p: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Randomized PIT of binomial counts under a mixture over draws ``p`` [draw, row]."""
    from scipy.stats import binom

    below = binom.cdf(observed - 1, trials, p).mean(axis=0)
    at_most = binom.cdf(observed, trials, p).mean(axis=0)
    return below + rng.uniform(size=observed.shape) * (at_most - below)
