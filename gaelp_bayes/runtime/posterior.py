"""A campaign's cached draws as the pacer reads them, and today's learned deviation from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import cache
from ..errors import CacheError, GaelpError

PACER_PARTS = ("conversion", "volume", "cost")  # the fitted parts whose gate the pacer needs passed
TODAY_SD = 0.3  # prior sd of today's log conversion rate around the posterior's, per hour (an assumption)
TODAY_CORR = 0.8  # prior correlation of that deviation between neighbouring hours (AR(1) over the day)
_HOURS = np.arange(24)
TODAY_COVARIANCE = TODAY_SD ** 2 * TODAY_CORR ** np.abs(_HOURS[:, None] - _HOURS[None, :])
TODAY_PRECISION = np.linalg.inv(TODAY_COVARIANCE)


def today_deviation(expected: np.ndarray, observed: np.ndarray,
                    precision: np.ndarray = TODAY_PRECISION) -> tuple[np.ndarray, np.ndarray]:
    """Laplace posterior (mode, covariance) of today's log-rate deviation ``x`` [24] per hour, given
    conversions ``observed[h] ~ Poisson(expected[h] * exp(x[h]))`` and the prior ``x ~ N(0, precision^-1)``."""
    x = np.zeros(24)
    for _ in range(30):
        mu = expected * np.exp(x)
        step = np.linalg.solve(precision + np.diag(mu), observed - mu - precision @ x)
        x += np.clip(step, -1.0, 1.0)
        if np.abs(step).max() < 1e-6:
            break
    return x, np.linalg.inv(precision + np.diag(expected * np.exp(x)))


# Each runtime array: the rule its every value must meet, as (test, words).
DRAW_RULES = {
    "cvr": (lambda a: (a >= 0) & (a <= 1), "a finite number in [0, 1]"),
    "cpc": (lambda a: a > 0, "a finite number > 0"),
    "volume": (lambda a: a >= 0, "a finite number >= 0"),
    "rpc": (lambda a: a >= 0, "a finite number >= 0"),
}


@dataclass
class CampaignPosterior:
    """One campaign's draws, [draw, 7, 24]; ``rpc`` may be None.  Checked on creation (``CacheError``)."""

    name: str
    cvr: np.ndarray
    cpc: np.ndarray
    volume: np.ndarray
    rpc: np.ndarray | None = None

    def __post_init__(self) -> None:
        shape = np.shape(self.cvr)
        if len(shape) != 3 or shape[0] < 1 or shape[1:] != (7, 24):
            raise CacheError(f"runtime draws of {self.name!r}: cvr has shape {shape}, expected (draws, 7, 24)")
        for key, (rule, words) in DRAW_RULES.items():
            a = getattr(self, key)
            if a is None:
                continue
            if np.shape(a) != shape:
                raise CacheError(f"runtime draws of {self.name!r}: {key} has shape {np.shape(a)}, expected {shape}")
            bad = ~(np.isfinite(a) & rule(a))
            if bad.any():
                raise CacheError(f"runtime draws of {self.name!r}: every {key} must be {words}; "
                                 f"{int(bad.sum())} are not (e.g. {a[bad].flat[0]!r})")

    @classmethod
    def from_cache(cls, arrays: dict, manifest: dict, campaign: str | None,
                   when: float | None = None) -> tuple["CampaignPosterior", list[str]]:
        """One campaign's draws from a cache's runtime arrays; ``when`` (seconds since the epoch): conversion
        rates projected to then by the fit's drift (``cache.drift_factor``); None: the data's last week."""
        campaign, c, warnings = cache.campaign_slot(manifest, campaign)
        if "cpc" not in arrays:
            raise GaelpError("the model was fitted without spend: the runtime needs cost per click")
        slots = len(manifest["campaigns"]) + 1  # the campaigns and the population level
        for key in ("cvr", "cpc", "volume", "rpc"):
            want = 2 if key == "rpc" else 4
            if key in arrays and (arrays[key].ndim != want or arrays[key].shape[1] != slots):
                raise CacheError(f"runtime file: {key} has shape {arrays[key].shape}, expected {want} axes with "
                                 f"{slots} campaign slots; refit")
        rpc = arrays["rpc"][:, c, None, None] * np.ones((1, 7, 24), np.float32) if "rpc" in arrays else None
        cvr, cpc, volume = (np.array(arrays[key][:, c]) for key in ("cvr", "cpc", "volume"))  # copies: no map kept
        posterior = cls(campaign, cvr, cpc, volume, rpc)  # checked as stored
        if when is None:
            return posterior, warnings
        projected = np.minimum(cvr * cache.drift_factor(arrays, manifest, c, when)[:, :, None], 1.0)
        return cls(campaign, projected.astype(np.float32), cpc, volume, rpc), warnings  # and as projected
