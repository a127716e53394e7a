"""The volume part's likelihood for the Laplace engine: clicks per hourly window, negative binomial.

    log lam[c, d, h] = level[c] + curve_c(h) + day[d],      a cell's clicks ~ NegBinomial(W lam, W phi)

as ``model/volume.py``: each campaign's ``theta = [level, curve coefficients]`` under fixed weak priors,
``shared`` = the weekday effects (zero-sum coordinates; only once every weekday has been seen twice),
``psi = [log phi]`` (the shape, LogNormal prior).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from ...data import Cells
from ..common import curve_design
from ..config import ModelConfig
from .conversion import zero_sum_basis
from .engine import Expansion, Prior


class VolumeModel:
    """The volume part as a ``LatentModel`` (``engine``)."""

    hyper = ("volume_shape",)

    def __init__(self, cells: Cells, config: ModelConfig):
        n_camp = len(cells.campaigns)
        where = (cells.campaign, cells.dow, cells.hour)
        self.clicks = np.zeros((n_camp, 7, 24))
        self.windows = np.zeros((n_camp, 7, 24))
        self.clicks[where] = cells.clicks
        self.windows[where] = cells.windows
        self.config = config
        self.design = curve_design(config.hour_harmonics)
        self.center = float(np.log(cells.clicks.sum() / cells.windows.sum() + 0.5))
        self.campaign_size = self.design.shape[1]
        days = 6 if len(np.unique(cells.dow)) == 7 and cells.windows.max() >= 2 else 0
        self.day_basis = zero_sum_basis(7) if days else np.zeros((7, 0))
        self.shared_size = days
        # the log-gamma terms of the windows alone (their shape W phi), summed per campaign: constants in theta
        self.seen = self.windows > 0

    def take(self, campaigns: np.ndarray) -> "VolumeModel":
        """The same model over some campaigns' data (indices), numbered in that order."""
        out = object.__new__(VolumeModel)
        out.__dict__.update(self.__dict__)
        out.clicks, out.windows, out.seen = self.clicks[campaigns], self.windows[campaigns], self.seen[campaigns]
        return out

    def hyper_log_prior(self, psi: np.ndarray) -> np.ndarray:
        cfg = self.config
        return -0.5 * ((psi[..., 0] - np.log(cfg.volume_shape_median)) / cfg.volume_shape_log_sd) ** 2

    def hyper_start(self) -> np.ndarray:
        return np.log([self.config.volume_shape_median])

    def campaign_prior(self, psi: np.ndarray) -> Prior:
        cfg, n, size = self.config, len(psi), self.campaign_size
        diagonal = np.r_[cfg.volume_level_sd**-2, np.full(size - 1, cfg.volume_coef_sd**-2)]
        offset = np.zeros(size)
        offset[0] = self.center
        log_det = np.log(diagonal).sum() * np.ones(n)
        return Prior(offset, np.zeros((size, self.shared_size)), np.broadcast_to(np.diag(diagonal), (n, size, size)),
                     log_det)

    def shared_prior(self, psi: np.ndarray) -> Prior:
        n, d = len(psi), self.shared_size
        sd = self.config.volume_dow_sd
        return Prior(np.zeros(d), np.zeros((0, d)), np.broadcast_to(np.eye(d) / sd**2, (n, d, d)),
                     -2 * d * np.log(sd) * np.ones(n))

    def expand(self, campaign: np.ndarray, theta: np.ndarray, shared: np.ndarray, psi: np.ndarray, order: int = 2,
               with_shared: bool = False) -> Expansion:
        phi = np.exp(psi[:, 0])[:, None, None]
        k, w, seen = self.clicks[campaign], self.windows[campaign], self.seen[campaign]
        eta = (theta @ self.design.T)[:, None, :] + (shared @ self.day_basis.T)[:, :, None]
        shape = w * phi
        lam = np.exp(eta)
        log_denominator = np.log(np.where(seen, shape + w * lam, 1.0))
        cell = np.where(seen, gammaln(k + shape) - gammaln(np.where(seen, shape, 1.0))
                        + shape * np.log(np.where(seen, shape, 1.0)) + k * eta - (shape + k) * log_denominator, 0.0)
        out = Expansion(cell.sum(axis=(1, 2)))
        if order == 0:
            return out
        g = np.where(seen, k - (phi + k / np.where(seen, w, 1.0)) * w * lam / (phi + lam), 0.0)
        out.grad = g.sum(axis=1) @ self.design
        if with_shared:
            out.grad_shared = g.sum(axis=2) @ self.day_basis
        if order == 1:
            return out
        h = np.where(seen, -(shape + k) * lam * phi / (phi + lam) ** 2, 0.0)
        out.hess = self.design.T @ (h.sum(axis=1)[:, :, None] * self.design)
        if with_shared:
            out.hess_shared = np.einsum("di,pd,dj->pij", self.day_basis, h.sum(axis=2), self.day_basis)
            out.cross = np.swapaxes(h @ self.design, 1, 2) @ self.day_basis
        return out

    def start(self, campaigns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rate = (self.clicks[campaigns].sum(axis=(1, 2)) + 0.5) / (self.windows[campaigns].sum(axis=(1, 2)) + 1.0)
        theta = np.zeros((len(campaigns), self.campaign_size))
        theta[:, 0] = np.log(rate)
        return theta, np.zeros(self.shared_size)


def posterior_variables(model: VolumeModel, psi: np.ndarray, shared: np.ndarray, theta: np.ndarray,
                        pooled: bool) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """The volume part's posterior variables as ``model/volume.py`` names them."""
    out = {"vol_level": (("campaign",), theta[:, :, 0]) if pooled else ((), theta[:, 0, 0]),
           "vol_hour": (("campaign", "fourier"), theta[:, :, 1:]), "volume_shape": ((), np.exp(psi[:, 0]))}
    if model.shared_size:
        out["vol_dow"] = (("dow",), shared @ model.day_basis.T)
    return out
