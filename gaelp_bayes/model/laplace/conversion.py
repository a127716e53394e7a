"""The conversion part's likelihood in numpy, with exact gradients and Hessians, for the Laplace engine.

The same log density as the PyMC model (``model/conversion.py``), written in each campaign's natural
latent values ``theta = [level, curve coefficients, (trend, walk x_1 .. x_{W-1}) with drift]``:

    eta[d, h] = level + basis[h] . coef + dow[d],          a cell's rate ~ Beta around sigmoid(eta)
    n[d, h]   = sum_w weekly_trials[d, h, w] exp(o_w),     o = G [trend, x]   (drift; else n = trials)

and, per cell, the beta-binomial of its conversions ``k`` out of ``n`` (the cell effects integrated out,
``conversion.beta_binomial_loglik``), plus with drift the weekly split ``sum_w K_w o_w - sum_cells k log n``
(``conversion.weekly_split_loglik``).  Campaigns are evaluated in batches: a *problem* is one campaign
under one value of the population terms the likelihood reads (the weekday effects and ``sigma_cell``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln, psi

from ...data import Cells
from ..common import curve_design
from ..config import ModelConfig
from .engine import Expansion, Prior


def _trigamma(x):
    """The trigamma function (scipy's ``polygamma(1, x)`` is several times slower): the recurrence
    ``psi1(x) = psi1(x + 1) + 1 / x^2`` up to x >= 6, then the asymptotic series (relative error < 1e-10)."""
    x = np.asarray(x, np.float64)
    small = np.zeros_like(x)
    shifted = x.copy()
    for _ in range(6):
        low = shifted < 6.0
        if not low.any():
            break
        small += np.where(low, 1.0 / np.where(low, shifted, 1.0) ** 2, 0.0)
        shifted = np.where(low, shifted + 1.0, shifted)
    inv = 1.0 / shifted
    inv2 = inv * inv
    series = inv + inv2 * (0.5 + inv * (1 / 6 + inv2 * (-1 / 30 + inv2 * (1 / 42 + inv2 * (-1 / 30 + inv2 * 5 / 66)))))
    return small + series


def _rising(x, n):
    """log Gamma(x + n) - log Gamma(x)."""
    return gammaln(x + n) - gammaln(x)


@dataclass(frozen=True)
class ConversionData:
    """Each campaign's cells on a dense [campaign, 7, 24] grid (zeros where it has no data)."""

    conversions: np.ndarray  # [C, 7, 24]
    trials: np.ndarray  # [C, 7, 24]: clicks, or the exposure of censored windows
    weekly: np.ndarray | None  # [C, 7, 24, W] trials by week counted back from the last (drift), else None
    week_conversions: np.ndarray | None  # [C, W]
    offsets: np.ndarray | None  # [C, W, W]: o = offsets @ [trend, x]
    design: np.ndarray  # [24, 1 + 2 harmonics]: level column and the hour basis
    center: float  # logit of the pooled rate: the prior centre of the level
    weekdays: np.ndarray  # the weekdays the data has (sorted)

    @property
    def campaigns(self) -> int:
        return self.conversions.shape[0]

    @property
    def weeks(self) -> int:
        return 0 if self.weekly is None else self.weekly.shape[3]

    @property
    def size(self) -> int:
        """Latent values per campaign."""
        return self.design.shape[1] + self.weeks

    def take(self, campaigns: np.ndarray) -> "ConversionData":
        """The data of some campaigns (indices), in that order."""
        pick = lambda v: None if v is None else v[campaigns]  # noqa: E731
        return ConversionData(self.conversions[campaigns], self.trials[campaigns], pick(self.weekly),
                              pick(self.week_conversions), pick(self.offsets), self.design, self.center,
                              self.weekdays)


def drift_map(share: np.ndarray) -> np.ndarray:
    """[C, W, W]: each week's log rate relative to the campaign's level (its trial-weighted average over the
    weeks) as a linear map of ``[trend, x_1 .. x_{W-1}]`` (``conversion.drift_offsets``): from the last week,
    week ``w`` is ``-trend w + x_w``; the level is the average, so ``o = (I - 1 share') from_last``."""
    campaigns, weeks = share.shape
    from_last = np.zeros((weeks, weeks))
    from_last[1:, 0] = -np.arange(1, weeks)
    from_last[np.arange(1, weeks), np.arange(1, weeks)] = 1.0
    centring = np.eye(weeks)[None] - np.ones((1, weeks, 1)) * share[:, None, :]
    return centring @ from_last


def conversion_data(cells: Cells, harmonics: int, drift: bool) -> ConversionData:
    """The dense per-campaign grids of ``cells`` (drift only when the cells carry weeks and ``drift``)."""
    n_camp = len(cells.campaigns)
    trials = cells.trials.astype(np.float64)
    seen = trials > 0
    where = (cells.campaign[seen], cells.dow[seen], cells.hour[seen])
    k = np.zeros((n_camp, 7, 24))
    n = np.zeros((n_camp, 7, 24))
    k[where] = cells.conversions[seen]
    n[where] = trials[seen]
    pooled = (cells.conversions.sum() + 0.5) / (trials.sum() + 1.0)
    weekly = week_conversions = offsets = None
    if drift and cells.weekly_trials is not None:
        weeks = cells.weekly_trials.shape[1]
        weekly = np.zeros((n_camp, 7, 24, weeks))
        weekly[where] = cells.weekly_trials[seen]
        week_conversions = np.zeros((n_camp, weeks))
        np.add.at(week_conversions, cells.campaign[seen], cells.weekly_conversions[seen])
        share = weekly.sum(axis=(1, 2))
        share = np.where(share.sum(axis=1, keepdims=True) > 0, share, 1.0)
        offsets = drift_map(share / share.sum(axis=1, keepdims=True))
    return ConversionData(k, n, weekly, week_conversions, offsets, curve_design(harmonics),
                          float(np.log(pooled / (1 - pooled))), np.unique(cells.dow[seen]))


def _cell_terms(k, n, eta, s, order: int, drift: bool):
    """Per cell: log likelihood (without data-only constants) and, up to ``order``, its derivatives in eta and
    in n (the cell's weighted trials, with drift).  ``s = 1 / sigma_cell^2`` broadcasts against the cells."""
    e_pos, e_neg = np.exp(eta), np.exp(-eta)
    a, b = s * (1.0 + e_pos), s * (1.0 + e_neg)
    trials = np.maximum(n, k) if drift else n
    fail = trials - k
    value = _rising(a, k) + _rising(b, fail) - _rising(a + b, trials)
    if drift:
        value = value + _rising(fail + 1.0, k) - k * np.log(np.maximum(n, 1e-300))
    if order == 0:
        return (value,)
    a_eta, b_eta = s * e_pos, -s * e_neg  # da/deta; db/deta;  d2a/deta2 = a_eta, d2b/deta2 = -b_eta
    ab, abn = psi(a + b), psi(a + b + trials)
    l_a = psi(a + k) - psi(a) - abn + ab
    l_b = psi(b + fail) - psi(b) - abn + ab
    g_eta = l_a * a_eta + l_b * b_eta
    t_ab, t_abn = _trigamma(a + b), _trigamma(a + b + trials)
    t_bf = _trigamma(b + fail)
    l_aa = _trigamma(a + k) - _trigamma(a) - t_abn + t_ab
    l_bb = t_bf - _trigamma(b) - t_abn + t_ab
    l_ab = t_ab - t_abn
    h_eta = l_aa * a_eta**2 + 2 * l_ab * a_eta * b_eta + l_bb * b_eta**2 + l_a * a_eta - l_b * b_eta
    if not drift:
        return value, g_eta, h_eta
    above = n > k  # where the trials are n (else the conversions: no dependence on n)
    per_trial = np.where(k > 0, k / np.maximum(n, 1e-150), 0.0)  # k / n of the split's -k log n (0 without k)
    g_n = np.where(above, psi(b + fail) - abn + psi(trials + 1.0) - psi(fail + 1.0), 0.0) - per_trial
    h_nn = (np.where(above, t_bf - t_abn + _trigamma(trials + 1.0) - _trigamma(fail + 1.0), 0.0)
            + per_trial / np.maximum(n, 1e-150))
    h_eta_n = np.where(above, -t_abn * a_eta + (t_bf - t_abn) * b_eta, 0.0)
    return value, g_eta, h_eta, g_n, h_nn, h_eta_n


def expand(data: ConversionData, campaign: np.ndarray, theta: np.ndarray, dow: np.ndarray, sigma_cell: np.ndarray,
           order: int = 2, shared: bool = False) -> Expansion:
    """The log likelihood of problems ``campaign`` [P] (indices into ``data``) at ``theta`` [P, K], with weekday
    effects ``dow`` [P, 7] and ``sigma_cell`` [P]; derivatives up to ``order`` (0, 1 or 2); with ``shared``,
    those in the weekday effects too (``grad_shared`` [P, 7], ``hess_shared`` [P, 7]: the diagonal,
    ``cross`` [P, K, 7])."""
    design = data.design
    basis_size = design.shape[1]
    k, trials = data.conversions[campaign], data.trials[campaign]
    curve = theta[:, :basis_size] @ design.T  # [P, 24]
    eta = curve[:, None, :] + dow[:, :, None]
    s = (1.0 / sigma_cell**2)[:, None, None]
    drift = data.weekly is not None
    if drift:
        o = np.einsum("pwv,pv->pw", data.offsets[campaign], theta[:, basis_size:])
        weights = data.weekly[campaign] * np.exp(o)[:, None, None, :]  # [P, 7, 24, W]: dn/do_w
        n = weights.sum(axis=3)
    else:
        n = trials
    terms = _cell_terms(k, n, eta, s, order, drift)
    value = terms[0].sum(axis=(1, 2))
    if drift:
        value = value + (data.week_conversions[campaign] * o).sum(axis=1)
    out = Expansion(value)
    if order == 0:
        return out
    g_eta, h_eta = terms[1], terms[2]
    problems = len(campaign)
    grad = np.zeros_like(theta)
    grad[:, :basis_size] = g_eta.sum(axis=1) @ design
    if drift:
        g_n, h_nn, h_eta_n = terms[3:]
        flat_weights = weights.reshape(problems, 168, -1)
        g_o = (g_n.reshape(problems, 1, 168) @ flat_weights)[:, 0] + data.week_conversions[campaign]
        grad[:, basis_size:] = (g_o[:, None, :] @ data.offsets[campaign])[:, 0]
    out.grad = grad
    if shared:
        out.grad_shared = g_eta.sum(axis=2)
    if order == 1:
        return out
    size = theta.shape[1]
    hess = np.zeros((problems, size, size))
    hess[:, :basis_size, :basis_size] = design.T @ (h_eta.sum(axis=1)[:, :, None] * design)
    if drift:
        offsets = data.offsets[campaign]
        h_oo = np.swapaxes(flat_weights * h_nn.reshape(problems, 168, 1), 1, 2) @ flat_weights
        h_oo[:, np.arange(data.weeks), np.arange(data.weeks)] += g_o - data.week_conversions[campaign]
        hess[:, basis_size:, basis_size:] = np.swapaxes(offsets, 1, 2) @ h_oo @ offsets
        eta_by_week = weights * h_eta_n[..., None]  # [P, 7, 24, W]: d2L / deta do_w per cell
        cross = design.T @ eta_by_week.sum(axis=1) @ offsets  # [P, 13, W]
        hess[:, :basis_size, basis_size:] = cross
        hess[:, basis_size:, :basis_size] = np.swapaxes(cross, 1, 2)
    out.hess = hess
    if shared:
        out.hess_shared = h_eta.sum(axis=2)  # the diagonal: each weekday's effect touches its own cells only
        cross_dow = np.zeros((problems, size, 7))
        cross_dow[:, :basis_size] = np.swapaxes(h_eta @ design, 1, 2)
        if drift:
            cross_dow[:, basis_size:] = np.swapaxes(eta_by_week.sum(axis=2) @ offsets, 1, 2)
        out.cross = cross_dow
    return out


def loglik_draws(data: ConversionData, campaign: int, theta: np.ndarray, dow: np.ndarray,
                 sigma_cell: np.ndarray) -> np.ndarray:
    """The log likelihood of one campaign at many draws ``theta`` [S, K] (``dow`` [S, 7], ``sigma_cell`` [S])."""
    index = np.full(len(theta), campaign)
    return expand(data, index, theta, dow, sigma_cell, order=0).value


def zero_sum_basis(size: int) -> np.ndarray:
    """[size, size - 1]: an orthonormal basis of the vectors of ``size`` values that sum to zero (a
    ZeroSumNormal(sigma) is N(0, sigma^2) in these coordinates)."""
    if size <= 1:
        return np.zeros((size, 0))
    centring = np.eye(size) - 1.0 / size
    u, _, _ = np.linalg.svd(centring)
    return u[:, :size - 1]


def walk_precision(steps: int) -> np.ndarray:
    """The precision of a random walk's positions with unit steps (``x_1, x_2 - x_1, ...``): tridiagonal."""
    difference = np.eye(steps) - np.eye(steps, k=-1)
    return difference.T @ difference


def _log_half_normal(u: np.ndarray, scale: float) -> np.ndarray:
    """log density of u = log(sigma) when sigma ~ HalfNormal(scale) (Jacobian included, constants dropped)."""
    return u - 0.5 * np.exp(2 * u) / scale**2


def _log_gamma(u: np.ndarray, shape: float, rate: float) -> np.ndarray:
    """log density of u = log(sigma) when sigma ~ Gamma(shape, rate) (Jacobian included, constants dropped)."""
    return shape * u - rate * np.exp(u)


class ConversionModel:
    """The conversion part as a ``LatentModel`` (``engine``): the priors of ``model/conversion.py``.

    Several campaigns: ``psi = log [sigma_campaign, sigma_dev, sigma_hour, sigma_cell, (sigma_trend,
    sigma_walk)]``, ``shared = [mu, hour_coef, weekday effects (zero-sum coordinates), (trend_mean)]``, each
    campaign ``level ~ N(mu, sigma_campaign)``, ``coef ~ N(hour_coef, sigma_dev)``, ``trend ~ N(trend_mean,
    sigma_trend)``, walk steps ``~ N(0, sigma_walk)``.  One campaign: ``psi = log [sigma_hour, sigma_cell,
    (sigma_walk)]``, ``shared`` = the weekday effects, ``level ~ N(centre, level_center_sd)``, ``coef ~ N(0,
    sigma_hour)``, ``trend ~ N(0, drift_trend_sd)`` (its trend is the population's ``trend_mean``)."""

    def __init__(self, data: ConversionData, pooled: bool, config: ModelConfig):
        self.data, self.pooled, self.config = data, pooled, config
        self.drift = data.weekly is not None
        self.coefs = data.design.shape[1] - 1
        self.campaign_size = data.size
        self.day_basis = np.zeros((7, max(len(data.weekdays) - 1, 0)))
        self.day_basis[data.weekdays] = zero_sum_basis(len(data.weekdays))
        days = self.day_basis.shape[1]
        if pooled:
            self.hyper = ("sigma_campaign", "sigma_dev", "sigma_hour", "sigma_cell") + (
                ("sigma_trend", "sigma_walk") if self.drift else ())
            self.day_slice = slice(1 + self.coefs, 1 + self.coefs + days)
            self.shared_size = 1 + self.coefs + days + (1 if self.drift else 0)
        else:
            self.hyper = ("sigma_hour", "sigma_cell") + (("sigma_walk",) if self.drift else ())
            self.day_slice = slice(0, days)
            self.shared_size = days
        self.index = {name: i for i, name in enumerate(self.hyper)}

    def sigma(self, psi: np.ndarray, name: str) -> np.ndarray:
        return np.exp(psi[..., self.index[name]])

    def take(self, campaigns: np.ndarray) -> "ConversionModel":
        """The same model over some campaigns' data (indices), numbered in that order."""
        out = object.__new__(ConversionModel)
        out.__dict__.update(self.__dict__)
        out.data = self.data.take(campaigns)
        return out

    def hyper_log_prior(self, psi: np.ndarray) -> np.ndarray:
        cfg, u = self.config, lambda name: psi[..., self.index[name]]  # noqa: E731
        total = _log_half_normal(u("sigma_hour"), cfg.sigma_hour_scale) + _log_gamma(
            u("sigma_cell"), cfg.sigma_cell_shape, cfg.sigma_cell_rate)
        if self.pooled:
            total = total + _log_half_normal(u("sigma_campaign"), cfg.sigma_campaign_scale) + _log_half_normal(
                u("sigma_dev"), cfg.sigma_dev_scale)
            if self.drift:
                total = total + _log_gamma(u("sigma_trend"), cfg.drift_trend_spread_shape, cfg.drift_trend_spread_rate)
        if self.drift:
            total = total + _log_half_normal(u("sigma_walk"), cfg.drift_walk_scale)
        return total

    def hyper_start(self) -> np.ndarray:
        start = {"sigma_campaign": 0.5, "sigma_dev": 0.15, "sigma_hour": 0.25, "sigma_cell": 0.2,
                 "sigma_trend": 0.025, "sigma_walk": 0.025}
        return np.log([start[name] for name in self.hyper])

    def campaign_prior(self, psi: np.ndarray) -> Prior:
        cfg, n = self.config, len(psi)
        size, coefs = self.campaign_size, self.coefs
        precision = np.zeros((n, size, size))
        diagonal = np.zeros((n, size))
        offset = np.zeros(size)
        selector = np.zeros((size, self.shared_size))
        if self.pooled:
            level_sd, coef_sd = self.sigma(psi, "sigma_campaign"), self.sigma(psi, "sigma_dev")
            selector[0, 0] = 1.0
            selector[1:1 + coefs, 1:1 + coefs] = np.eye(coefs)
        else:
            level_sd, coef_sd = np.full(n, cfg.level_center_sd), self.sigma(psi, "sigma_hour")
            offset[0] = self.data.center
        diagonal[:, 0] = level_sd**-2
        diagonal[:, 1:1 + coefs] = coef_sd[:, None] ** -2
        log_det = -2 * np.log(level_sd) - 2 * coefs * np.log(coef_sd)
        if self.drift:
            trend = 1 + coefs
            if self.pooled:
                trend_sd = self.sigma(psi, "sigma_trend")
                selector[trend, -1] = 1.0
            else:
                trend_sd = np.full(n, cfg.drift_trend_sd)
            diagonal[:, trend] = trend_sd**-2
            walk_sd = self.sigma(psi, "sigma_walk")
            steps = self.data.weeks - 1
            precision[:, trend + 1:, trend + 1:] = walk_precision(steps)[None] * walk_sd[:, None, None] ** -2
            log_det = log_det - 2 * np.log(trend_sd) - 2 * steps * np.log(walk_sd)
        precision[:, np.arange(size), np.arange(size)] += diagonal
        return Prior(offset, selector, precision, log_det)

    def shared_prior(self, psi: np.ndarray) -> Prior:
        cfg, n = self.config, len(psi)
        diagonal = np.zeros((n, self.shared_size))
        offset = np.zeros(self.shared_size)
        diagonal[:, self.day_slice] = cfg.dow_sd**-2
        log_det = -2 * (self.day_slice.stop - self.day_slice.start) * np.log(cfg.dow_sd) * np.ones(n)
        if self.pooled:
            offset[0] = self.data.center
            hour_sd = self.sigma(psi, "sigma_hour")
            diagonal[:, 0] = cfg.level_center_sd**-2
            diagonal[:, 1:1 + self.coefs] = hour_sd[:, None] ** -2
            log_det = log_det - 2 * np.log(cfg.level_center_sd) - 2 * self.coefs * np.log(hour_sd)
            if self.drift:
                diagonal[:, -1] = cfg.drift_trend_sd**-2
                log_det = log_det - 2 * np.log(cfg.drift_trend_sd)
        precision = np.zeros((n, self.shared_size, self.shared_size))
        precision[:, np.arange(self.shared_size), np.arange(self.shared_size)] = diagonal
        return Prior(offset, np.zeros((0, self.shared_size)), precision, log_det)

    def dow(self, shared: np.ndarray) -> np.ndarray:
        """The weekday effects [..., 7] of shared values [..., D] (0 on weekdays without data)."""
        return shared[..., self.day_slice] @ self.day_basis.T

    def expand(self, campaign: np.ndarray, theta: np.ndarray, shared: np.ndarray, psi: np.ndarray, order: int = 2,
               with_shared: bool = False) -> Expansion:
        out = expand(self.data, campaign, theta, self.dow(shared), self.sigma(psi, "sigma_cell"), order, with_shared)
        if with_shared and order >= 1:
            grad = np.zeros((len(campaign), self.shared_size))
            grad[:, self.day_slice] = out.grad_shared @ self.day_basis
            out.grad_shared = grad
            if order == 2:
                hess = np.zeros((len(campaign), self.shared_size, self.shared_size))
                hess[:, self.day_slice, self.day_slice] = np.einsum("di,pd,dj->pij", self.day_basis, out.hess_shared,
                                                                    self.day_basis)
                cross = np.zeros((len(campaign), self.campaign_size, self.shared_size))
                cross[:, :, self.day_slice] = out.cross @ self.day_basis
                out.hess_shared, out.cross = hess, cross
        return out

    def start(self, campaigns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self.data.conversions[campaigns].sum(axis=(1, 2))
        n = self.data.trials[campaigns].sum(axis=(1, 2))
        rate = (k + 0.5) / (n + 1.0)
        theta = np.zeros((len(campaigns), self.campaign_size))
        theta[:, 0] = np.log(rate / (1 - rate))
        shared = np.zeros(self.shared_size)
        if self.pooled:
            shared[0] = theta[:, 0].mean()
        return theta, shared


def rate_quantity(model: "ConversionModel", pop_psi: np.ndarray, pop_shared: np.ndarray):
    """The gate's exported rate of a campaign: the log of its trial-weighted mean rate over its cells (in the
    data's last week, with drift), per draw."""
    data = model.data

    def quantity(campaign: int, theta: np.ndarray, m: np.ndarray) -> np.ndarray:
        trials = data.trials[campaign]
        if trials.sum() == 0:
            return np.zeros((len(theta), 0))
        basis = data.design.shape[1]
        eta = (theta[:, :basis] @ data.design.T)[:, None, :] + model.dow(pop_shared[m])[:, :, None]
        rate = (trials / trials.sum() / (1.0 + np.exp(-eta))).sum(axis=(1, 2))
        if model.drift:
            rate = rate * np.exp((theta[:, basis:] @ data.offsets[campaign].T)[:, 0])  # o_0: drift_now
        return np.log(rate)[:, None]

    return quantity


def posterior_variables(model: ConversionModel, psi: np.ndarray, shared: np.ndarray, theta: np.ndarray,
                        rng: np.random.Generator) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """The conversion part's posterior variables as the PyMC model names them (``model/conversion.py``), from
    draws of ``psi`` [N, dpsi], ``shared`` [N, D] and the campaigns' ``theta`` [N, C, K]: {name: (dims
    after chain and draw, values [N, ...])}.  A weekday without data gets its effect from the prior."""
    cfg, data = model.config, model.data
    n, coefs = len(psi), model.coefs
    dow = model.dow(shared)
    unseen = np.setdiff1d(np.arange(7), data.weekdays)
    dow[:, unseen] = rng.normal(0.0, cfg.dow_sd, size=(n, len(unseen)))
    out = {"dow_effect": (("dow",), dow)}
    for name in model.hyper:
        out[name] = ((), model.sigma(psi, name))
    level, coef = theta[:, :, 0], theta[:, :, 1:1 + coefs]
    if model.pooled:
        hour_coef = shared[:, 1:1 + coefs]
        out.update(mu=((), shared[:, 0]), hour_coef=(("fourier",), hour_coef),
                   campaign_level=(("campaign",), level),
                   dev_coef=(("campaign", "fourier"), coef - hour_coef[:, None, :]))
    else:
        hour_coef = coef[:, 0]
        out.update(mu=((), level[:, 0]), hour_coef=(("fourier",), hour_coef))
    out["hour_effect"] = (("hour",), hour_coef @ data.design[:, 1:].T)
    if model.drift:
        trend = theta[:, :, 1 + coefs]
        out["trend"] = (("campaign",), trend)
        out["trend_mean"] = ((), shared[:, -1] if model.pooled else trend[:, 0])
        weeks = data.weeks
        from_last = np.zeros(theta.shape[:2] + (weeks,))
        from_last[:, :, 1:] = -trend[:, :, None] * np.arange(1, weeks) + theta[:, :, 2 + coefs:]
        offsets = np.einsum("cwv,ncv->ncw", data.offsets, theta[:, :, 1 + coefs:])  # = from_last + now
        out["level_offset"] = (("campaign", "week"), from_last)
        out["drift_now"] = (("campaign",), offsets[:, :, 0])
    return out
