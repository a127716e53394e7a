"""The cost and revenue parts' likelihoods for the Laplace engine: sums of Gamma amounts.

    cost:     log cpc[c, h] = level[c] + q(h),  a cell's spend   ~ Gamma(clicks * kappa, kappa / cpc)
    revenue:  log rpc[c]    = level[c],         a cell's revenue ~ Gamma(conversions * tau, tau / rpc)

as ``model/cost.py`` and ``model/revenue.py``: ``theta = [level]`` under a fixed weak prior, ``shared`` the
cost's hour curve (none for revenue), ``psi = [log shape]`` (LogNormal prior).  The log density is
``common.gamma_loglik``'s, with the shape's own terms (which matter to its posterior) kept per campaign.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

from ...data import Cells
from ..common import fourier_basis
from ..config import ModelConfig
from .engine import Expansion, Prior


class GammaSums:
    """Per campaign, each paid cell's units (clicks or conversions) and amount, padded to [C, 168], and the
    sums per campaign and hour (or per campaign, ``hours=False``)."""

    def __init__(self, cells: Cells, units: np.ndarray, amounts: np.ndarray, hours: bool):
        n_camp = len(cells.campaigns)
        paid = (units > 0) & (amounts > 0)
        flat = cells.campaign[paid] * 168 + cells.dow[paid] * 24 + cells.hour[paid]
        self.units = np.zeros(n_camp * 168)
        self.amounts = np.ones(n_camp * 168)
        self.units[flat], self.amounts[flat] = units[paid], amounts[paid]
        self.units, self.amounts = self.units.reshape(n_camp, 168), self.amounts.reshape(n_camp, 168)
        self.paid = self.units > 0
        self.unit_log_amount = (self.units * np.log(self.amounts)).sum(axis=1)
        groups = 24 if hours else 1
        group = (cells.campaign * 24 + cells.hour)[paid] if hours else cells.campaign[paid]
        self.unit_sums = np.bincount(group, weights=units[paid], minlength=n_camp * groups).reshape(n_camp, groups)
        self.amount_sums = np.bincount(group, weights=amounts[paid], minlength=n_camp * groups).reshape(n_camp, groups)
        self.mean = amounts[paid].sum() / max(units[paid].sum(), 1)

    def take(self, campaigns: np.ndarray) -> "GammaSums":
        out = object.__new__(GammaSums)
        out.__dict__.update({name: value[campaigns] if isinstance(value, np.ndarray) else value
                             for name, value in self.__dict__.items()})
        return out

    def shape_terms(self, campaign: np.ndarray, shape: np.ndarray) -> np.ndarray:
        """The terms of the log density that depend on the shape only [P]."""
        units = self.units[campaign]
        return (shape * np.log(shape) * units.sum(axis=1) + shape * self.unit_log_amount[campaign]
                - np.where(self.paid[campaign], gammaln(np.where(self.paid[campaign], units, 1.0) * shape[:, None]),
                           0.0).sum(axis=1))

    def expand(self, campaign: np.ndarray, log_mean: np.ndarray, shape: np.ndarray, order: int):
        """Value [P] and the derivatives in each group's log mean [P, G] (gradient, diagonal of the Hessian)."""
        u, a = self.unit_sums[campaign], self.amount_sums[campaign]
        scaled = a * np.exp(-log_mean)
        value = self.shape_terms(campaign, shape) - shape * (u * log_mean + scaled).sum(axis=1)
        if order == 0:
            return value, None, None
        return value, -shape[:, None] * (u - scaled), -shape[:, None] * scaled


def _log_normal_prior(psi: np.ndarray, median: float, log_sd: float) -> np.ndarray:
    return -0.5 * ((psi[..., 0] - np.log(median)) / log_sd) ** 2


class CostModel:
    """The cost part as a ``LatentModel`` (``engine``): ``psi = [log cost_shape]``, ``shared = cpc_hour``."""

    hyper = ("cost_shape",)
    campaign_size = 1

    def __init__(self, cells: Cells, config: ModelConfig):
        self.config = config
        self.sums = GammaSums(cells, cells.clicks.astype(np.float64), cells.spend, hours=True)
        self.center = float(np.log(max(self.sums.mean, 1e-6)))
        self.basis = fourier_basis(config.cpc_harmonics)
        self.shared_size = self.basis.shape[1]

    def take(self, campaigns: np.ndarray) -> "CostModel":
        """The same model over some campaigns' data (indices), numbered in that order."""
        out = object.__new__(CostModel)
        out.__dict__.update(self.__dict__)
        out.sums = self.sums.take(campaigns)
        return out

    def hyper_log_prior(self, psi):
        return _log_normal_prior(psi, self.config.cost_shape_median, self.config.cost_shape_log_sd)

    def hyper_start(self):
        return np.log([self.config.cost_shape_median])

    def campaign_prior(self, psi):
        n, sd = len(psi), self.config.cpc_level_sd
        return Prior(np.array([self.center]), np.zeros((1, self.shared_size)), np.full((n, 1, 1), sd**-2),
                     np.full(n, -2 * np.log(sd)))

    def shared_prior(self, psi):
        n, d, sd = len(psi), self.shared_size, self.config.cpc_hour_sd
        return Prior(np.zeros(d), np.zeros((0, d)), np.broadcast_to(np.eye(d) / sd**2, (n, d, d)),
                     np.full(n, -2 * d * np.log(sd)))

    def expand(self, campaign, theta, shared, psi, order=2, with_shared=False) -> Expansion:
        log_mean = theta[:, :1] + shared @ self.basis.T  # [P, 24]
        value, grad, hess = self.sums.expand(campaign, log_mean, np.exp(psi[:, 0]), order)
        out = Expansion(value)
        if order >= 1:
            out.grad = grad.sum(axis=1, keepdims=True)
            if with_shared:
                out.grad_shared = grad @ self.basis
        if order == 2:
            out.hess = hess.sum(axis=1)[:, None, None]
            if with_shared:
                out.hess_shared = np.einsum("hi,ph,hj->pij", self.basis, hess, self.basis)
                out.cross = (hess @ self.basis)[:, None, :]
        return out

    def start(self, campaigns):
        u, a = self.sums.unit_sums[campaigns].sum(axis=1), self.sums.amount_sums[campaigns].sum(axis=1)
        level = np.where(u > 0, np.log(np.maximum(a, 1e-12) / np.maximum(u, 1.0)), self.center)
        return level[:, None], np.zeros(self.shared_size)


class RevenueModel:
    """The revenue part as a ``LatentModel`` (``engine``): ``psi = [log revenue_shape]``, nothing shared."""

    hyper = ("revenue_shape",)
    campaign_size = 1
    shared_size = 0

    def __init__(self, cells: Cells, config: ModelConfig):
        self.config = config
        self.sums = GammaSums(cells, cells.conversions.astype(np.float64), cells.revenue, hours=False)
        self.center = float(np.log(max(self.sums.mean, 1e-6)))

    def take(self, campaigns: np.ndarray) -> "RevenueModel":
        """The same model over some campaigns' data (indices), numbered in that order."""
        out = object.__new__(RevenueModel)
        out.__dict__.update(self.__dict__)
        out.sums = self.sums.take(campaigns)
        return out

    def hyper_log_prior(self, psi):
        return _log_normal_prior(psi, self.config.revenue_shape_median, self.config.revenue_shape_log_sd)

    def hyper_start(self):
        return np.log([self.config.revenue_shape_median])

    def campaign_prior(self, psi):
        n, sd = len(psi), self.config.rpc_level_sd
        return Prior(np.array([self.center]), np.zeros((1, 0)), np.full((n, 1, 1), sd**-2), np.full(n, -2 * np.log(sd)))

    def shared_prior(self, psi):
        n = len(psi)
        return Prior(np.zeros(0), np.zeros((0, 0)), np.zeros((n, 0, 0)), np.zeros(n))

    def expand(self, campaign, theta, shared, psi, order=2, with_shared=False) -> Expansion:
        value, grad, hess = self.sums.expand(campaign, theta[:, :1], np.exp(psi[:, 0]), order)
        out = Expansion(value)
        if order >= 1:
            out.grad = grad
            if with_shared:
                out.grad_shared = np.zeros((len(campaign), 0))
        if order == 2:
            out.hess = hess[:, :, None]
            if with_shared:
                out.hess_shared, out.cross = np.zeros((len(campaign), 0, 0)), np.zeros((len(campaign), 1, 0))
        return out

    def start(self, campaigns):
        u, a = self.sums.unit_sums[campaigns, 0], self.sums.amount_sums[campaigns, 0]
        level = np.where(u > 0, np.log(np.maximum(a, 1e-12) / np.maximum(u, 1.0)), self.center)
        return level[:, None], np.zeros(0)


def cost_variables(model: CostModel, psi, shared, theta, pooled: bool) -> dict:
    """The cost part's posterior variables as ``model/cost.py`` names them."""
    level = theta[:, :, 0]
    return {"cpc_level": (("campaign",), level) if pooled else ((), level[:, 0]),
            "cpc_hour": (("fourier_cpc",), shared),
            "log_cpc": (("campaign", "hour"), level[:, :, None] + (shared @ model.basis.T)[:, None, :]),
            "cost_shape": ((), np.exp(psi[:, 0]))}


def revenue_variables(model: RevenueModel, psi, shared, theta, pooled: bool) -> dict:
    """The revenue part's posterior variables as ``model/revenue.py`` names them."""
    level = theta[:, :, 0]
    return {"rpc_level": (("campaign",), level) if pooled else ((), level[:, 0]),
            "log_rpc": (("campaign",), level), "revenue_shape": ((), np.exp(psi[:, 0]))}
