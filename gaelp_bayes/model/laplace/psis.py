"""Pareto-smoothed importance sampling (Vehtari, Simpson, Gelman, Yao & Gabry, JMLR 2024), vectorised over rows.

``smooth(log_ratios)`` takes log importance ratios ``log target - log proposal`` (the sign matters: the
leave-one-out convention of some libraries negates them) with the draws on the last axis, replaces each
row's largest ratios by the quantiles of a generalized Pareto distribution fitted to them, and returns the
normalised log weights with the fitted shape k-hat.  ``khat`` estimates the shape of the right tail of any
positive values (a ratio times a function of the draws: the diagnostic of one expectation).  Numpy only.
"""

from __future__ import annotations

import numpy as np

PRIOR_STRENGTH, PRIOR_K = 10.0, 0.5  # the weak prior on k-hat of the reference implementation (arviz, loo)


def tail_size(draws: int) -> int:
    """The number of largest values the Pareto fit uses: 3 sqrt(S), at most S / 5."""
    return int(min(np.floor(3 * np.sqrt(draws)), np.floor(draws / 5)))


def khat_threshold(draws: int) -> float:
    """The sample-size dependent threshold ``min(1 - 1 / log10(S), 0.7)``: above it the estimate of an
    expectation is unreliable (its error no longer falls like 1 / sqrt(S))."""
    return float(min(1.0 - 1.0 / np.log10(draws), 0.7))


def _gpd_fit(excess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Generalized Pareto (k, sigma) of each row of sorted, non-negative exceedances [rows, M] by Zhang &
    Stephens' empirical Bayes estimate with a weak prior on k (the reference implementation's)."""
    rows, m = excess.shape
    grid = 30 + int(np.sqrt(m))
    xstar = excess[:, int(m / 4 + 0.5) - 1]  # the first quartile
    degenerate = ~(xstar > excess[:, 0])
    xstar = np.where(degenerate, 1.0, xstar)
    top = np.where(excess[:, -1] > 0, excess[:, -1], 1.0)
    b = (1 - np.sqrt(grid / (np.arange(1, grid + 1) - 0.5)))[None, :] / (3.0 * xstar[:, None]) + 1 / top[:, None]
    k = np.mean(np.log1p(-b[:, :, None] * excess[:, None, :]), axis=2)  # [rows, grid]
    log_likelihood = m * (np.log(-b / k) - k - 1)
    weight = np.exp(log_likelihood - log_likelihood.max(axis=1, keepdims=True))
    weight = np.where(weight >= 10 * np.finfo(float).eps, weight, 0.0)
    b_post = (b * weight).sum(axis=1) / weight.sum(axis=1)
    k_post = np.mean(np.log1p(-b_post[:, None] * excess), axis=1)
    sigma = -k_post / b_post
    k_post = (m * k_post + PRIOR_STRENGTH * PRIOR_K) / (m + PRIOR_STRENGTH)
    return np.where(degenerate, np.nan, k_post), np.where(degenerate, np.nan, sigma)


def _tail(values: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's ``m`` largest values (sorted), the value below them, and their positions."""
    order = np.argsort(values, axis=-1)
    tail_idx = order[:, -m:]
    tail = np.take_along_axis(values, tail_idx, axis=-1)
    cutoff = np.take_along_axis(values, order[:, -m - 1:-m], axis=-1)[:, 0]
    return tail, cutoff, tail_idx


def khat(values: np.ndarray) -> np.ndarray:
    """k-hat of the right tail of positive values [..., S] (draws on the last axis): below 0.7 (and the
    sample-size threshold) their mean is estimated reliably.  NaN where the tail is flat (all equal)."""
    values = np.asarray(values, np.float64)
    shape = values.shape[:-1]
    flat = values.reshape(-1, values.shape[-1])
    m = tail_size(flat.shape[1])
    tail, cutoff, _ = _tail(flat, m)
    scale = np.where(tail[:, -1] > 0, tail[:, -1], 1.0)[:, None]
    k, _ = _gpd_fit((tail - cutoff[:, None]) / scale)
    return k.reshape(shape)


def smooth(log_ratios: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed, normalised log weights [..., S] and k-hat [...] from log ratios ``log p - log q``."""
    log_ratios = np.asarray(log_ratios, np.float64)
    shape = log_ratios.shape
    flat = log_ratios.reshape(-1, shape[-1])
    flat = flat - flat.max(axis=1, keepdims=True)
    m = tail_size(flat.shape[1])
    tail, cutoff, tail_idx = _tail(flat, m)
    k, sigma = _gpd_fit(np.exp(tail) - np.exp(cutoff)[:, None])
    p = (np.arange(m) + 0.5) / m
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        quantiles = np.exp(cutoff)[:, None] + sigma[:, None] * np.expm1(-k[:, None] * np.log1p(-p[None, :])) / k[:, None]
        smoothed = np.minimum(np.log(quantiles), tail[:, -1:])
    ok = np.isfinite(k) & np.isfinite(smoothed).all(axis=1)
    out = flat.copy()
    rows = np.flatnonzero(ok)
    out[rows[:, None], tail_idx[rows]] = smoothed[rows]
    out -= np.log(np.exp(out - out.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True)) + out.max(axis=1, keepdims=True)
    return out.reshape(shape), k.reshape(shape[:-1])


def ess(log_weights: np.ndarray) -> np.ndarray:
    """The effective sample size ``1 / sum w^2`` of normalised log weights [..., S]."""
    return 1.0 / np.exp(2 * log_weights).sum(axis=-1)
