"""The Laplace engine: a part's campaigns given its population, by Laplace approximation and importance sampling.

A part (``LatentModel``) has three kinds of values:

- ``psi``: a few hyperparameters (the logs of scales: the population spreads, ``sigma_cell``, a shape);
- ``shared``: values every campaign's prior or likelihood reads (population means, weekday effects), about
  Gaussian given ``psi``;
- ``theta_c``: each campaign's latent values, independent across campaigns given ``(psi, shared)``, with a
  Gaussian prior whose mean is linear in ``shared`` and whose precision depends on ``psi``.

Two stages, both numpy (nothing is compiled):

1. **Population** (``population``), on the member campaigns (all of them, or a stratified subsample of a
   large account): for a given ``psi``, Newton's method finds the mode of ``(shared, theta_1..theta_C)``
   (the Hessian is block-arrow: each campaign's block, bordered by the shared values, solved through the
   shared block's Schur complement), and the Laplace approximation gives ``log p(y | psi)`` (the nested
   Laplace of INLA, Rue, Martino & Chopin 2009).  ``psi``'s posterior is found by Newton steps on that
   marginal, then sampled by importance sampling from split Student-t proposals around its mode with
   Pareto-smoothed weights (``psis``: their k-hat is the population's own gate), and ``shared`` is drawn
   given each ``psi`` from the Laplace approximation's marginal (the Schur complement is its precision).
   Then ``correct``: the members' exact evidence given each population draw (importance sampling, as in
   stage 2) over its Laplace approximation weighs the draws, which are resampled: where a sparse
   campaign's Laplace approximation is off, the population goes where the exact evidence puts it.
2. **Campaigns** (``campaigns``): for every campaign and every population draw ``m``, one Newton step from the
   campaign's mode under the population's average gives its mode given ``(psi_m, shared_m)`` (exact gradients
   and Hessians), ``S / M`` draws come from the Gaussian there, and each is weighted by the exact log density
   over the Gaussian's
   (normalised within its population draw: each draw of the population gets its share of the output).
   Per campaign the gate checks the weights' Pareto k-hat, their effective sample size, and the k-hat of
   each exported quantity's mean and variance; and, for a campaign outside the members (whose data the
   population has not seen), whether its data conflicts with the population: each latent value's posterior
   mean against its prior, in sds of what the data can move it by (``|z| > CONFLICT_Z``: a campaign ten
   times the others' rate).  Such a campaign would move the population, which this stage holds fixed.  And
   together, those campaigns' levels must not sit on one side of the population (``population_shift``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from . import psis

LOG_2PI = float(np.log(2 * np.pi))
# prior-data conflict: a latent value's posterior mean this many sds (of what the data moves it by under the
# model) from its prior mean; |z| > 4 happens by chance once in 16,000 values (about 1 campaign in 800)
CONFLICT_Z = 4.0
MIN_CORRECTION_ESS = 20.0  # the population's correction (``correct``) keeps at least this many draws' worth
EQUAL_WEIGHTS = 0.99  # an ESS above this share of the importance draws: the weights are all but equal


@dataclass
class Expansion:
    """A batch of problems' log likelihood: value [P], gradient [P, K] and Hessian [P, K, K] in ``theta``, and
    (when asked) the gradient [P, D], Hessian [P, D, D] and cross terms [P, K, D] in the shared values."""

    value: np.ndarray
    grad: np.ndarray | None = None
    hess: np.ndarray | None = None
    grad_shared: np.ndarray | None = None
    hess_shared: np.ndarray | None = None
    cross: np.ndarray | None = None


@dataclass(frozen=True)
class Prior:
    """A Gaussian prior for a batch of ``psi`` values [J]: ``mean = offset + selector @ shared`` (selector
    [K, D]), precision [J, K, K] and the log determinant of the precision [J]."""

    offset: np.ndarray
    selector: np.ndarray
    precision: np.ndarray
    log_det: np.ndarray


class LatentModel(Protocol):
    """What a part provides to the engine (``laplace/conversion.py`` and the others)."""

    hyper: tuple[str, ...]  # the names of psi's values (each the log of a scale)
    campaign_size: int
    shared_size: int

    def hyper_log_prior(self, psi: np.ndarray) -> np.ndarray: ...  # [J] (log density of psi, Jacobian included)

    def hyper_start(self) -> np.ndarray: ...  # [dpsi]

    def campaign_prior(self, psi: np.ndarray) -> Prior: ...

    def shared_prior(self, psi: np.ndarray) -> Prior: ...  # offset [D], selector unused, precision [J, D, D]

    def expand(self, campaign: np.ndarray, theta: np.ndarray, shared: np.ndarray, psi: np.ndarray, order: int = 2,
               with_shared: bool = False) -> Expansion: ...

    def start(self, campaigns: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...  # theta [C, K], shared [D]


def _cholesky(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cholesky factors of a batch of symmetric matrices [..., K, K] and which were positive definite; a
    matrix that is not is shifted by enough of the identity to be (a damped Newton step there)."""
    shifted, positive = _positive_definite(matrix)
    return np.linalg.cholesky(shifted), positive


def _positive_definite(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The batch [..., K, K] with each matrix that is not positive definite shifted by enough of the identity
    to be, and which were."""
    try:
        np.linalg.cholesky(matrix)
        return matrix, np.ones(matrix.shape[:-2], bool)
    except np.linalg.LinAlgError:
        pass
    finite = np.isfinite(matrix).all(axis=(-2, -1))  # an overflow far out in a tail: the identity, not positive
    matrix = np.where(finite[..., None, None], matrix, np.eye(matrix.shape[-1]))
    eigenvalues = np.linalg.eigvalsh(matrix)
    scale = np.maximum(np.abs(eigenvalues).max(axis=-1), 1e-12)
    shift = np.maximum(1e-8 * scale - eigenvalues.min(axis=-1), 0.0)
    return matrix + shift[..., None, None] * np.eye(matrix.shape[-1]), (shift == 0) & finite


def _log_det(factor: np.ndarray) -> np.ndarray:
    return 2 * np.log(np.diagonal(factor, axis1=-2, axis2=-1)).sum(axis=-1)


# ----- stage 1: the population -------------------------------------------------------------------------------------

@dataclass
class JointMode:
    """The mode of ``(shared, theta)`` given each of J ``psi`` values, with the Laplace approximation there."""

    psi: np.ndarray  # [J, dpsi]
    shared: np.ndarray  # [J, D]
    theta: np.ndarray  # [J, C, K]
    log_joint: np.ndarray  # [J]: log p(y, shared, theta | psi) at the mode
    log_det: np.ndarray  # [J]: log det of the negative Hessian there
    schur_factor: np.ndarray  # [J, D, D]: Cholesky factor of the shared values' marginal precision
    positive: np.ndarray  # [J]: the negative Hessian was positive definite at the mode
    converged: np.ndarray  # [J]

    @property
    def log_marginal(self) -> np.ndarray:
        """Laplace's ``log p(y | psi)`` [J] (up to a constant)."""
        dims = self.shared.shape[1] + self.theta.shape[1] * self.theta.shape[2]
        return self.log_joint + 0.5 * dims * LOG_2PI - 0.5 * self.log_det


def _joint_terms(model: LatentModel, campaigns: np.ndarray, psi: np.ndarray, shared: np.ndarray, theta: np.ndarray,
                 order: int):
    """The log joint [J] and (order 2) its gradient and negative Hessian blocks at (shared, theta)."""
    n_psi, n_camp, size = theta.shape
    prior, shared_prior = model.campaign_prior(psi), model.shared_prior(psi)
    flat = lambda v: v.reshape((n_psi * n_camp,) + v.shape[2:])  # noqa: E731
    problems = np.tile(campaigns, n_psi)
    rep = lambda v: np.repeat(v, n_camp, axis=0)  # noqa: E731
    ex = model.expand(problems, flat(theta), rep(shared), rep(psi), order=order, with_shared=order > 0)
    resid = theta - prior.offset - np.einsum("kd,jd->jk", prior.selector, shared)[:, None, :]  # [J, C, K]
    p_resid = np.einsum("jkl,jcl->jck", prior.precision, resid)
    s_resid = shared - shared_prior.offset
    q_resid = np.einsum("jde,je->jd", shared_prior.precision, s_resid)
    value = (ex.value.reshape(n_psi, n_camp).sum(axis=1)
             + n_camp * (0.5 * prior.log_det - 0.5 * size * LOG_2PI) - 0.5 * (resid * p_resid).sum(axis=(1, 2))
             + 0.5 * shared_prior.log_det - 0.5 * shared.shape[1] * LOG_2PI - 0.5 * (s_resid * q_resid).sum(axis=1))
    if order == 0:
        return value, None
    grad_theta = ex.grad.reshape(theta.shape) - p_resid
    grad_shared = (ex.grad_shared.reshape(n_psi, n_camp, shared.shape[1]).sum(axis=1)
                   + np.einsum("kd,jck->jd", prior.selector, p_resid) - q_resid)
    a_cc = -ex.hess.reshape(n_psi, n_camp, size, size) + prior.precision[:, None]
    pe = np.einsum("jkl,ld->jkd", prior.precision, prior.selector)  # P E
    dim = shared.shape[1]
    a_cs = -ex.cross.reshape(n_psi, n_camp, size, dim) - pe[:, None]
    a_ss = (-ex.hess_shared.reshape(n_psi, n_camp, dim, dim).sum(axis=1)
            + n_camp * np.einsum("kd,jke->jde", prior.selector, pe) + shared_prior.precision)
    return value, (grad_theta, grad_shared, a_cc, a_cs, a_ss)


def _newton_step(blocks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Newton step (in shared [J, D] and theta [J, C, K]) and its decrement [J], through the shared
    block's Schur complement."""
    grad_theta, grad_shared, a_cc, a_cs, a_ss = blocks
    dim = a_cs.shape[-1]
    solved = np.linalg.solve(_positive_definite(a_cc)[0], np.concatenate([a_cs, grad_theta[..., None]], axis=-1))
    inv_cs, inv_g = solved[..., :dim], solved[..., dim]  # [J, C, K, D], [J, C, K]
    schur = a_ss - np.einsum("jckd,jcke->jde", a_cs, inv_cs)
    rhs = grad_shared - np.einsum("jckd,jck->jd", a_cs, inv_g)
    step_shared = np.linalg.solve(_positive_definite(schur)[0], rhs[..., None])[..., 0] if dim else rhs
    step_theta = inv_g - np.einsum("jckd,jd->jck", inv_cs, step_shared)
    decrement = (grad_theta * step_theta).sum(axis=(1, 2)) + (grad_shared * step_shared).sum(axis=1)
    return step_shared, step_theta, decrement


def _laplace_terms(blocks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From the negative Hessian's blocks at a mode [J]: its log determinant (the campaigns' blocks and the
    shared block's Schur complement), the Cholesky factor of that complement (the shared values' marginal
    precision) and whether every block was positive definite."""
    _, _, a_cc, a_cs, a_ss = blocks
    factor, positive = _cholesky(a_cc)
    inv_cs = np.linalg.solve(factor @ np.swapaxes(factor, -1, -2), a_cs)
    schur = a_ss - np.einsum("jckd,jcke->jde", a_cs, inv_cs)
    if not schur.shape[1]:
        return _log_det(factor).sum(axis=1), schur, positive.all(axis=1)
    s_factor, s_positive = _cholesky(schur)
    return _log_det(factor).sum(axis=1) + _log_det(s_factor), s_factor, positive.all(axis=1) & s_positive


def joint_mode(model: LatentModel, campaigns: np.ndarray, psi: np.ndarray, shared: np.ndarray, theta: np.ndarray,
               iterations: int = 50, tolerance: float = 1e-8) -> JointMode:
    """Newton's method (with step halving) for the mode of ``(shared, theta)`` given each ``psi`` [J],
    from ``shared`` [J, D] and ``theta`` [J, C, K]; each ``psi`` stops where its Newton decrement is below
    ``tolerance`` (only the others are evaluated again)."""
    shared, theta = shared.copy(), theta.copy()
    value, blocks = _joint_terms(model, campaigns, psi, shared, theta, 2)
    blocks = list(blocks)
    done = np.zeros(len(psi), bool)
    for _ in range(iterations):
        active = np.flatnonzero(~done)
        here = [b[active] for b in blocks]
        step_shared, step_theta, decrement = _newton_step(here)
        finished = decrement < tolerance
        done[active[finished]] = True
        keep = ~finished
        active, step_shared, step_theta = active[keep], step_shared[keep], step_theta[keep]
        if not len(active):
            break
        alpha = np.ones(len(active))
        old = value[active]
        for halving in range(31):
            trial_shared = shared[active] + alpha[:, None] * step_shared
            trial_theta = theta[active] + alpha[:, None, None] * step_theta
            trial_value, trial_blocks = _joint_terms(model, campaigns, psi[active], trial_shared, trial_theta, 2)
            worse = ~(trial_value >= old - 1e-12)
            if not worse.any() or halving == 30:
                break
            alpha = np.where(worse, alpha / 2, alpha)
        shared[active], theta[active], value[active] = trial_shared, trial_theta, trial_value
        for b, new in zip(blocks, trial_blocks):
            b[active] = new
    log_det, s_factor, positive = _laplace_terms(blocks)
    return JointMode(psi, shared, theta, value, log_det, s_factor, positive, done)


def one_step_mode(model: LatentModel, campaigns: np.ndarray, psi: np.ndarray, shared: np.ndarray,
                  theta: np.ndarray) -> JointMode:
    """``joint_mode`` in one Newton step from a start close to the mode (``_start_predictor``): the log joint
    at the mode is the start's plus half the Newton decrement, the Hessian the start's (errors of third order
    in the distance to the mode): one evaluation of the likelihood per ``psi`` instead of two or three."""
    value, blocks = _joint_terms(model, campaigns, psi, shared, theta, 2)
    step_shared, step_theta, decrement = _newton_step(blocks)
    log_det, s_factor, positive = _laplace_terms(blocks)
    # where the start was far (a decrement of 100: ten posterior sds), the caller iterates further; nearer, the
    # error in the log marginal was at most 0.02 in a 20-campaign test (most of the decrement lies in the
    # Gaussian priors' directions, where the log joint is quadratic and one step is exact)
    close = decrement < 100.0
    return JointMode(psi, shared + step_shared, theta + step_theta, value + 0.5 * decrement, log_det, s_factor,
                     positive & close, close)


@dataclass
class Population:
    """Draws of a part's population: ``psi`` [M, dpsi] and ``shared`` [M, D], and how they were made."""

    psi: np.ndarray
    shared: np.ndarray
    members: np.ndarray  # campaign indices the population was fitted on
    khat: float  # Pareto k-hat of the importance weights of psi
    ess: float  # their effective sample size
    proposals: int
    mode: np.ndarray  # psi's posterior mode
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    correction_base: np.ndarray | None = None  # [M]: see ``draw_shared``
    shared_mode: np.ndarray | None = None  # [M, D]: the shared values' Laplace mode given each psi
    shared_factor: np.ndarray | None = None  # [M, D, D]: Cholesky factor of their Laplace precision
    log_marginal: np.ndarray | None = None  # [M]: Laplace's log p(y | psi)
    correction_khat: float = float("nan")  # ``correct``'s weights: Pareto k-hat, ESS, how many draws weighed
    correction_ess: float = float("nan")
    correction_draws: int = 0

    def at_mean(self) -> "Population":
        """The population held at its posterior mean (each draw the same): a point, not a posterior."""
        from dataclasses import replace

        return replace(self, psi=np.repeat(self.psi.mean(axis=0, keepdims=True), len(self.psi), 0),
                       shared=np.repeat(self.shared.mean(axis=0, keepdims=True), len(self.shared), 0))

    @property
    def failures(self) -> list[str]:
        out = []
        if not (np.isfinite(self.khat) and self.khat <= psis.khat_threshold(self.proposals)
                and self.ess >= min(400.0, self.proposals / 4)):
            out.append(f"population: importance weights of its hyperparameters k-hat {self.khat:.2f}, ESS "
                       f"{self.ess:.0f} of {self.proposals}")
        if self.correction_draws and not (self.correction_khat <= 0.7 and self.correction_ess >= MIN_CORRECTION_ESS):
            out.append(f"population: its correction by the members' exact evidence k-hat {self.correction_khat:.2f}, "
                       f"ESS {self.correction_ess:.0f} of {self.correction_draws} (the Laplace approximation is too "
                       "far from it)")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures


def _stencil(dim: int, step: float) -> np.ndarray:
    """Offsets [n, dim] for a central-difference gradient and Hessian: 0, +-h e_i, +-h e_i +-h e_j."""
    points = [np.zeros(dim)]
    for i in range(dim):
        for sign in (1, -1):
            p = np.zeros(dim)
            p[i] = sign * step
            points.append(p)
    for i in range(dim):
        for j in range(i + 1, dim):
            for si in (1, -1):
                for sj in (1, -1):
                    p = np.zeros(dim)
                    p[i], p[j] = si * step, sj * step
                    points.append(p)
    return np.array(points)


def _derivatives(values: np.ndarray, dim: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian from ``values`` on ``_stencil(dim, step)``."""
    f0 = values[0]
    plus, minus = values[1:1 + 2 * dim:2], values[2:2 + 2 * dim:2]
    grad = (plus - minus) / (2 * step)
    hess = np.diag((plus - 2 * f0 + minus) / step**2)
    k = 1 + 2 * dim
    for i in range(dim):
        for j in range(i + 1, dim):
            pp, pm, mp, mm = values[k:k + 4]
            hess[i, j] = hess[j, i] = (pp - pm - mp + mm) / (4 * step**2)
            k += 4
    return grad, hess


def _start_predictor(stencil: JointMode, psi: np.ndarray, dim: int, step: float):
    """Where the mode of ``(shared, theta)`` lies for other ``psi``, by a second-order expansion (without
    cross terms) from its modes on the central-difference stencil around ``psi``: Newton then starts close
    and needs a step or two."""
    values = [stencil.shared.reshape(len(stencil.shared), -1), stencil.theta.reshape(len(stencil.theta), -1)]
    flat = np.concatenate(values, axis=1)
    centre = flat[0]
    plus, minus = flat[1:1 + 2 * dim:2], flat[2:2 + 2 * dim:2]
    slope = (plus - minus) / (2 * step)  # [dim, X]
    curve = (plus - 2 * centre + minus) / step**2
    split = values[0].shape[1]

    def predict(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        delta = points - psi
        start = centre + delta @ slope + 0.5 * (delta**2) @ curve
        return (start[:, :split].reshape((len(points),) + stencil.shared.shape[1:]),
                start[:, split:].reshape((len(points),) + stencil.theta.shape[1:]))

    return predict


def _log_target(model: LatentModel, mode: JointMode) -> np.ndarray:
    """log p(psi | y) up to a constant; -inf where the Laplace approximation does not exist (a numerical
    overflow far out in the tails)."""
    value = model.hyper_log_prior(mode.psi) + mode.log_marginal
    return np.where(np.isfinite(value), value, -np.inf)


def _curvature(hess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and vectors of ``-hess``; where differences ran into -inf, the unit curvature instead."""
    if not np.isfinite(hess).all():
        hess = -np.eye(len(hess))
    return np.linalg.eigh(-hess)


class SplitT:
    """A multivariate Student-t stretched differently on each side of its centre along each axis: ``x = centre
    + axes @ (scale_plus or scale_minus by the sign of z) * z``, ``z`` a standard multivariate t.  A proposal
    for hyperparameters whose posteriors are skewed (the log of a scale has a long tail towards zero)."""

    def __init__(self, center: np.ndarray, axes: np.ndarray, plus: np.ndarray, minus: np.ndarray, dof: float):
        self.center, self.axes, self.plus, self.minus, self.dof = center, axes, plus, minus, dof

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal((count, len(self.center))) * np.sqrt(self.dof / rng.chisquare(self.dof, count))[:, None]
        return self.center + (np.where(z >= 0, self.plus, self.minus) * z) @ self.axes.T

    def log_density(self, x: np.ndarray) -> np.ndarray:
        u = (x - self.center) @ self.axes
        scale = np.where(u >= 0, self.plus, self.minus)
        z = u / scale
        return -0.5 * (self.dof + len(self.center)) * np.log1p((z**2).sum(axis=1) / self.dof) - np.log(scale).sum(axis=1)


def population(model: LatentModel, members: np.ndarray, draws: int, rng: np.random.Generator,
               proposals: int = 400, step: float = 0.05, dof: float = 5.0) -> Population:
    """Draws of ``psi`` and ``shared`` from the population posterior given the ``members``' data (module doc);
    far-out proposals may overflow (their weight is then 0)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _population(model, members, draws, rng, proposals, step, dof)


def _population(model: LatentModel, members: np.ndarray, draws: int, rng: np.random.Generator,
                proposals: int, step: float, dof: float) -> Population:
    """``population``.

    ``psi``'s posterior (Laplace's marginal likelihood times its prior) is found by Newton's method (the
    Hessian by central differences, then BFGS), and sampled by adaptive importance sampling: half the
    proposals from a split Student-t at the mode whose scale on each side of each axis reaches as far as
    probes of the posterior at 1 to 4 sds say (the scales' posteriors have long tails towards zero), half
    from a Student-t with the weighted moments of the first half, all weighted against their equal mixture.
    Each candidate's Laplace approximation is one Newton step from a prediction of its mode
    (``one_step_mode``)."""
    import time

    start = time.perf_counter()
    theta0, shared0 = model.start(members)
    dim = len(model.hyper)
    psi = model.hyper_start()
    offsets = _stencil(dim, step)
    gradient_offsets = offsets[:1 + 2 * dim]
    centre = joint_mode(model, members, psi[None], shared0[None], theta0[None])
    warm_theta, warm_shared = centre.theta, centre.shared

    def on_stencil(points: np.ndarray) -> JointMode:
        return joint_mode(model, members, points, np.repeat(warm_shared, len(points), 0),
                          np.repeat(warm_theta, len(points), 0))

    # Newton's method on log p(psi | y): the Hessian by central differences first, then updated by BFGS from
    # central-difference gradients (13 points for 6 hyperparameters, not 73), the full stencil again at the end
    mode = on_stencil(psi + offsets)
    values = _log_target(model, mode)
    grad, hess = _derivatives(values, dim, step)
    notes = []
    for iteration in range(40):
        eigenvalues, vectors = _curvature(hess)
        curvature = np.maximum(eigenvalues, 1e-3)  # where the marginal is not concave, a short gradient step
        move = vectors @ ((vectors.T @ grad) / curvature)
        if np.abs(move).max() < 0.02 or grad @ move < 1e-3:
            break
        move *= min(1.0, 1.0 / max(np.abs(move).max(), 1e-12))  # at most one log unit in any scale per step
        for _ in range(20):
            trial = joint_mode(model, members, (psi + move)[None], warm_shared, warm_theta)
            if _log_target(model, trial)[0] >= values[0] - 1e-9:
                break
            move /= 2
        psi = psi + move
        warm_theta, warm_shared = trial.theta, trial.shared
        mode = on_stencil(psi + gradient_offsets)
        values = _log_target(model, mode)
        new_grad = (values[1::2] - values[2::2]) / (2 * step)
        change, turn = new_grad - grad, move
        if change @ turn < 0:  # BFGS update of -hess (curvature condition holds)
            b = -hess
            b = b - np.outer(b @ turn, b @ turn) / (turn @ b @ turn) + np.outer(change, change) / (-(change @ turn))
            hess = -b
        grad = new_grad
    else:
        notes.append("the hyperparameters' mode search stopped after 40 steps")
    mode = on_stencil(psi + offsets)
    values = _log_target(model, mode)
    grad, hess = _derivatives(values, dim, step)
    eigenvalues, vectors = _curvature(hess)
    sd = 1.0 / np.sqrt(np.maximum(eigenvalues, 1e-2))
    predict = _start_predictor(mode, psi, dim, step)

    def evaluate(candidates: np.ndarray) -> JointMode:
        """The Laplace approximation at each candidate: one Newton step from the predicted mode, and the
        full Newton iteration where that step was long."""
        shared_start, theta_start = predict(candidates)
        out = one_step_mode(model, members, candidates, shared_start, theta_start)
        far = np.flatnonzero(~out.converged)
        if len(far):
            again = joint_mode(model, members, candidates[far], out.shared[far], out.theta[far])
            for name in ("shared", "theta", "log_joint", "log_det", "schur_factor", "positive", "converged"):
                getattr(out, name)[far] = getattr(again, name)
        return out

    # how far the posterior reaches on each side of the mode along each axis of the curvature: probes at 1 to
    # 4 sds; each side's scale the largest that the drop in log density at a probe implies (a normal drops
    # by z^2 / 2 at z sds), so that a long tail is not cut short by the curvature at the mode
    reach = np.array([1.0, 2.0, 3.0, 4.0])
    signs = np.array([1.0, -1.0])
    probes = (psi + (signs[:, None, None, None] * reach[None, :, None, None] * sd[None, None, :, None]
                     * vectors.T[None, None, :, :])).reshape(-1, dim)  # [side, reach, axis] -> dim
    drop = values[0] - _log_target(model, evaluate(probes)).reshape(2, len(reach), dim)
    implied = reach[None, :, None] * sd[None, None, :] / np.sqrt(2 * np.maximum(drop, 1e-3))
    implied = np.where(np.isfinite(drop), implied, sd[None, None, :])
    scales = np.maximum(implied.max(axis=1), sd[None, :])
    first_proposal = SplitT(psi, vectors, 1.2 * scales[0], 1.2 * scales[1], dof)
    first = first_proposal.sample(proposals // 2, rng)
    first_mode = evaluate(first)
    log_ratio = _log_target(model, first_mode) - first_proposal.log_density(first)
    log_ratio = np.where(first_mode.positive & np.isfinite(log_ratio), log_ratio, -np.inf)
    weights = np.exp(psis.smooth(log_ratio[None])[0][0])
    center = weights @ first
    moments = np.einsum("n,ni,nj->ij", weights, first - center, first - center) + 1e-6 * np.eye(dim)
    m_values, m_vectors = np.linalg.eigh(moments)
    second_proposal = SplitT(center, m_vectors, np.sqrt(m_values), np.sqrt(m_values), dof)
    second = second_proposal.sample(proposals - len(first), rng)
    second_mode = evaluate(second)
    candidates = np.concatenate([first, second])
    cand_mode = JointMode(*(np.concatenate([getattr(first_mode, f), getattr(second_mode, f)]) for f in
                            ("psi", "shared", "theta", "log_joint", "log_det", "schur_factor", "positive", "converged")))
    mixture = np.logaddexp(first_proposal.log_density(candidates), second_proposal.log_density(candidates)) - np.log(2)
    log_ratio = _log_target(model, cand_mode) - mixture
    log_ratio = np.where(cand_mode.positive & np.isfinite(log_ratio), log_ratio, -np.inf)
    log_weights, khat = psis.smooth(log_ratio[None])
    log_weights, khat = log_weights[0], float(khat[0])
    picks = systematic(np.exp(log_weights), draws, rng)
    pop = Population(candidates[picks], np.empty_like(cand_mode.shared[picks]), members, khat,
                     float(psis.ess(log_weights)), proposals, psi, time.perf_counter() - start, notes,
                     shared_mode=cand_mode.shared[picks], shared_factor=cand_mode.schur_factor[picks],
                     log_marginal=cand_mode.log_marginal[picks])
    return draw_shared(model, pop, np.zeros(pop.shared.shape[1]), rng)


def draw_shared(model: LatentModel, pop: Population, shift: np.ndarray, rng: np.random.Generator) -> Population:
    """The population's shared values drawn given each psi from the Laplace approximation's marginal,
    N(mode + ``shift``, Schur^-1), and what ``correct`` weighs each draw by but for the members' exact
    evidence: log p(shared | psi) minus the Laplace marginal of psi and minus the density drawn from."""
    from dataclasses import replace

    factor, dim = pop.shared_factor, pop.shared_mode.shape[1]
    z = rng.standard_normal(pop.shared_mode.shape)
    shared = pop.shared_mode + shift + (np.linalg.solve(np.swapaxes(factor, 1, 2), z[..., None])[..., 0] if dim else z)
    prior = model.shared_prior(pop.psi)
    resid = shared - prior.offset
    log_prior = 0.5 * prior.log_det - 0.5 * np.einsum("md,mde,me->m", resid, prior.precision, resid)
    log_drawn = (np.log(np.diagonal(factor, axis1=1, axis2=2)).sum(axis=1) if dim else 0.0) - 0.5 * (z**2).sum(axis=1)
    return replace(pop, shared=shared, correction_base=log_prior - pop.log_marginal - log_drawn)


def systematic(weights: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``draws`` resampled by systematic resampling from normalised ``weights``, in a random order."""
    edges = np.cumsum(weights)
    edges /= edges[-1]
    positions = (rng.uniform() + np.arange(draws)) / draws
    picks = np.minimum(np.searchsorted(edges, positions), len(weights) - 1)
    return rng.permutation(picks)


# ----- stage 2: each campaign given the population -----------------------------------------------------------------

@dataclass
class CampaignDraws:
    """Each campaign's draws given the population, and the importance sampling's diagnostics per campaign."""

    theta: np.ndarray  # [N, C, K]: output draw i goes with population draw i % M
    khat: np.ndarray  # [C]: Pareto k-hat of the importance weights
    ess: np.ndarray  # [C]: their effective sample size
    quantity_khat: np.ndarray  # [C]: the largest k-hat of an exported quantity's mean or variance
    conflict: np.ndarray  # [C]: the largest |z| of a latent value's posterior mean against its prior
    log_evidence: np.ndarray  # [C, M]: log p(y_c | population draw m), up to a constant per campaign
    proposals: int
    level_z: np.ndarray | None = None  # [C]: the level's signed z (``_conflict``; ``population_shift``)
    level_load: np.ndarray | None = None  # [C]: how much of that z the population's own uncertainty moves

    def passed(self, members: np.ndarray | None = None, conflict_max: float | None = None) -> np.ndarray:
        """[C]: the gate per campaign (module doc); the conflict check applies to campaigns outside ``members``.
        Weights all but equal (ESS above 99% of the draws: the proposal is the posterior) pass whatever their
        k-hat: fitted to the last digits of ratios within a percent of one another, it says nothing."""
        equal = self.ess >= EQUAL_WEIGHTS * self.proposals
        reliable = (np.isfinite(self.khat) & (self.khat <= psis.khat_threshold(self.proposals))) | equal
        ok = reliable & (self.ess >= 400.0) & (np.nan_to_num(self.quantity_khat, nan=0.0) < 0.7)
        outside = np.ones(len(ok), bool)
        if members is not None:
            outside[members] = False
        limit = CONFLICT_Z if conflict_max is None else conflict_max
        return ok & ~(outside & (self.conflict > limit))


SHIFT_MIN_CAMPAIGNS = 5  # ``population_shift`` needs at least this many campaigns outside the members


def level_is_pooled(model: LatentModel, pop: Population) -> bool:
    """Whether the campaigns' levels are drawn around a population value (the conversion part) rather than under
    a fixed prior (volume, cost, revenue: ample data per campaign); ``population_shift`` means something
    only for the first: a fixed prior is not fitted to the members, so they cannot misrepresent the others."""
    return bool(np.any(model.campaign_prior(pop.psi[:1]).selector[0]))


def population_shift(level_z: np.ndarray, level_load: np.ndarray) -> float:
    """How far the campaigns outside a population's members sit from it together: the sum of their levels'
    signed z (``_conflict``) over its sd under the model, standard normal when the members represent them;
    beyond ``CONFLICT_Z``, the population is not theirs (members unlike the others, or a population gone
    wrong), which no single campaign's check sees.  The z's share one error, the population mean's own
    (each z moves by ``level_load`` times it, in its sds), so their sum's variance is
    ``N + (sum load)^2 - sum load^2``, not ``N``: with thousands of campaigns the mean z is measured in the
    population mean's sds, not in a thousandth of one.  The caller leaves out campaigns flagged on their
    own (an outlier is refitted alone); 0 with fewer than ``SHIFT_MIN_CAMPAIGNS``."""
    keep = np.isfinite(level_z) & np.isfinite(level_load)
    z, load = level_z[keep], level_load[keep]
    if len(z) < SHIFT_MIN_CAMPAIGNS:
        return 0.0
    return float(z.sum() / np.sqrt(len(z) + load.sum() ** 2 - (load ** 2).sum()))


def conditional_modes(model: LatentModel, campaign: np.ndarray, psi: np.ndarray, shared: np.ndarray,
                      theta: np.ndarray, iterations: int = 50, tolerance: float = 1e-8):
    """The mode of each problem's ``theta`` [P, K] given its population values (``psi`` [P, dpsi], ``shared``
    [P, D]), by Newton's method with step halving, and the Cholesky factor of the negative Hessian there."""
    prior = model.campaign_prior(psi)
    mean = prior.offset + shared @ prior.selector.T
    theta = theta.copy()
    value, grad, neg_hess = _Subset(model, campaign, shared, psi, mean, prior.precision).terms(theta, 2)
    done = np.zeros(len(theta), bool)
    for _ in range(iterations):
        active = np.flatnonzero(~done)
        step = np.linalg.solve(_positive_definite(neg_hess[active])[0], grad[active][..., None])[..., 0]
        decrement = (grad[active] * step).sum(axis=1)
        finished = decrement < tolerance
        done[active[finished]] = True
        active, step = active[~finished], step[~finished]
        if not len(active):
            break
        alpha = np.ones(len(active))
        for halving in range(31):
            trial = theta[active] + alpha[:, None] * step
            sub = _Subset(model, campaign[active], shared[active], psi[active], mean[active],
                          prior.precision[active])
            t_value, t_grad, t_neg_hess = sub.terms(trial, 2)
            worse = ~(t_value >= value[active] - 1e-12)
            if not worse.any() or halving == 30:
                break
            alpha = np.where(worse, alpha / 2, alpha)
        theta[active], value[active], grad[active], neg_hess[active] = trial, t_value, t_grad, t_neg_hess
    factor, positive = _cholesky(neg_hess)
    return theta, factor, positive & done, prior, mean


def _one_step(model: LatentModel, campaign: np.ndarray, psi: np.ndarray, shared: np.ndarray, start: np.ndarray):
    """Each problem's proposal: one Newton step from ``start`` (the campaign's mode under the population's
    average, close to its mode under each draw) and the negative Hessian there (its Cholesky factor): one
    evaluation of the likelihood per problem; the importance weights correct what the step leaves."""
    prior = model.campaign_prior(psi)
    mean = prior.offset + shared @ prior.selector.T
    _, grad, neg_hess = _Subset(model, campaign, shared, psi, mean, prior.precision).terms(start, 2)
    factor, _ = _cholesky(neg_hess)
    step = np.linalg.solve(factor @ np.swapaxes(factor, 1, 2), grad[..., None])[..., 0]
    return start + step, factor, prior, mean


@dataclass
class _Subset:
    """Some problems' conditional log posterior (``conditional_modes``)."""

    model: LatentModel
    campaign: np.ndarray
    shared: np.ndarray
    psi: np.ndarray
    mean: np.ndarray
    precision: np.ndarray

    def terms(self, theta: np.ndarray, order: int):
        ex = self.model.expand(self.campaign, theta, self.shared, self.psi, order=order)
        resid = theta - self.mean
        p_resid = np.einsum("pkl,pl->pk", self.precision, resid)
        value = ex.value - 0.5 * (resid * p_resid).sum(axis=1)
        if order == 0:
            return value, None, None
        return value, ex.grad - p_resid, -ex.hess + self.precision


def campaigns(model: LatentModel, chosen: np.ndarray, pop: Population, draws: int, rng: np.random.Generator,
              proposals: int = 2000, quantities=None) -> CampaignDraws:
    """Each of the ``chosen`` campaigns' draws given the population draws ``pop`` (``_campaigns``)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _campaigns(model, chosen, pop, draws, rng, proposals, quantities)


def _importance_draws(model: LatentModel, chosen: np.ndarray, pop: Population, proposals: int,
                      rng: np.random.Generator):
    """For each of the ``chosen`` campaigns (by position): its importance draws given each population draw
    (``proposals / M`` per draw: theta [M, per, K]), their log ratios ``log p(y, theta | pop_m) - log q``
    [M, per] and the prior's mean [M, K] and marginal variances [M, K] under each population draw."""
    n_pop = len(pop.psi)
    per = proposals // n_pop
    if per * n_pop != proposals:
        raise ValueError(f"proposals ({proposals}) must be a multiple of the population's {n_pop} draws")
    size = model.campaign_size
    # each campaign's mode under the population's average first: the start of its M conditional modes
    mean_psi, mean_shared = pop.psi.mean(axis=0), pop.shared.mean(axis=0)
    start, _ = model.start(chosen)
    centre, _, _, _, _ = conditional_modes(model, chosen, np.repeat(mean_psi[None], len(chosen), 0),
                                           np.repeat(mean_shared[None], len(chosen), 0), start)
    chunk = max(1, 4000 // n_pop)
    m_of = np.repeat(np.arange(n_pop), per)
    for lo in range(0, len(chosen), chunk):
        block = np.arange(lo, min(lo + chunk, len(chosen)))
        camp = np.repeat(chosen[block], n_pop)
        psi, shared = np.tile(pop.psi, (len(block), 1)), np.tile(pop.shared, (len(block), 1))
        mode, factor, prior, mean = _one_step(model, camp, psi, shared, np.repeat(centre[block], n_pop, 0))
        log_det = _log_det(factor)  # of the proposal's precision
        inverse_factor = np.linalg.inv(factor)  # theta = mode + L^-T z: rows z @ L^-1
        prior_variance = np.diagonal(np.linalg.inv(prior.precision), axis1=1, axis2=2)
        for b, c in enumerate(block):
            rows = slice(b * n_pop, (b + 1) * n_pop)
            z = rng.standard_normal((n_pop, per, size))
            theta = mode[rows, None, :] + z @ inverse_factor[rows]  # [M, per, K]
            log_q = 0.5 * log_det[rows, None] - 0.5 * (z**2).sum(axis=2)
            flat = theta.reshape(-1, size)
            ex = model.expand(np.full(len(flat), chosen[c]), flat, pop.shared[m_of], pop.psi[m_of], order=0)
            resid = flat - mean[rows][m_of]
            log_prior = 0.5 * prior.log_det[rows][m_of] - 0.5 * np.einsum(
                "pk,pkl,pl->p", resid, prior.precision[rows][m_of], resid)
            log_ratio = (ex.value + log_prior).reshape(n_pop, per) - log_q
            yield c, theta, np.where(np.isfinite(log_ratio), log_ratio, -np.inf), mean[rows], prior_variance[rows]


def _log_mean_exp(log_ratio: np.ndarray) -> np.ndarray:
    """log of the mean of exp over the last axis."""
    top = log_ratio.max(axis=-1, keepdims=True)
    return top[..., 0] + np.log(np.exp(log_ratio - top).mean(axis=-1))


def evidence(model: LatentModel, chosen: np.ndarray, pop: Population, proposals: int,
             rng: np.random.Generator) -> np.ndarray:
    """[C, M]: each chosen campaign's log marginal likelihood given each population draw, estimated by
    importance sampling (unbiased on the natural scale; up to a constant per campaign)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        out = np.empty((len(chosen), len(pop.psi)))
        for c, _, log_ratio, _, _ in _importance_draws(model, chosen, pop, proposals, rng):
            out[c] = _log_mean_exp(log_ratio)
        return out


def correct(model: LatentModel, pop: Population, members: np.ndarray, draws: int, rng: np.random.Generator,
            per_draw: int = 10) -> Population:
    """The population's draws weighted by the members' exact evidence (importance sampling, ``per_draw`` draws
    of each member per population draw) over the Laplace approximation of it, and ``draws`` of them
    resampled: where the Laplace approximation of a sparse campaign's marginal likelihood is off (a handful
    of conversions: its mode is not its mean), the population moves to where the exact evidence puts it.
    Where the weights keep less than half the draws' worth, the shared values are drawn again around the
    weighted mean of their offsets from the Laplace modes (the bias the weights found) and weighed again."""
    from dataclasses import replace

    def weigh(population: Population) -> tuple[np.ndarray, float]:
        member_evidence = evidence(model, members, population, per_draw * len(population.psi), rng).sum(axis=0)
        log_weights, khat = psis.smooth((population.correction_base + member_evidence)[None])
        return log_weights[0], float(khat[0])

    log_weights, khat = weigh(pop)
    if psis.ess(log_weights) < 0.5 * len(pop.psi) and pop.shared.shape[1]:
        shift = np.exp(log_weights) @ (pop.shared - pop.shared_mode)
        pop = draw_shared(model, pop, shift, rng)
        log_weights, khat = weigh(pop)
    picks = systematic(np.exp(log_weights), draws, rng)
    return replace(pop, psi=pop.psi[picks], shared=pop.shared[picks], correction_base=pop.correction_base[picks],
                   shared_mode=pop.shared_mode[picks], shared_factor=pop.shared_factor[picks],
                   log_marginal=pop.log_marginal[picks], correction_khat=khat,
                   correction_ess=float(psis.ess(log_weights)), correction_draws=len(log_weights))


def _campaigns(model: LatentModel, chosen: np.ndarray, pop: Population, draws: int, rng: np.random.Generator,
               proposals: int, quantities) -> CampaignDraws:
    """Each of the ``chosen`` campaigns' draws given the population draws ``pop`` (module doc): ``draws``
    output draws (a multiple of the population's M draws), from ``proposals`` importance draws.
    ``quantities(campaign, theta [S, K], m [S]) -> [S, Q]``: exported quantities beyond ``theta`` (draw ``s``
    under population draw ``m[s]``) whose k-hat the gate checks too (the rates)."""
    n_pop = len(pop.psi)
    out_per = draws // n_pop
    if out_per * n_pop != draws:
        raise ValueError(f"draws ({draws}) must be a multiple of the population's {n_pop} draws")
    theta_out = np.empty((draws, len(chosen), model.campaign_size))
    khat, ess, q_khat, conflict, level_z, level_load = (np.empty(len(chosen)) for _ in range(6))
    evidence_out = np.empty((len(chosen), n_pop))
    output_draws = np.arange(draws) % n_pop  # output draw i goes with population draw i % M
    m_of = np.repeat(np.arange(n_pop), proposals // n_pop)
    for c, theta, log_ratio, mean, prior_variance in _importance_draws(model, chosen, pop, proposals, rng):
        log_evidence = _log_mean_exp(log_ratio)  # log Z_m, up to a constant
        normalised = log_ratio - log_evidence[:, None]  # each population draw's own posterior, weighted alike
        smoothed, k = psis.smooth(normalised.reshape(1, -1))
        khat[c], ess[c] = float(k[0]), float(psis.ess(smoothed)[0])
        weights = np.exp(normalised - normalised.max())
        flat = theta.reshape(-1, theta.shape[-1])
        values = flat if quantities is None else np.concatenate([flat, quantities(chosen[c], flat, m_of)], axis=1)
        q_khat[c] = _quantity_khat(weights, values.reshape(n_pop, -1, values.shape[-1]))
        evidence_out[c] = log_evidence
        conflict[c], level_z[c], level_load[c] = _conflict(weights, theta, mean, prior_variance)
        for m in range(n_pop):
            picks = systematic(weights[m] / weights[m].sum(), out_per, rng)
            theta_out[output_draws == m, c] = theta[m, picks]
    return CampaignDraws(theta_out, khat, ess, q_khat, conflict, evidence_out, proposals, level_z, level_load)


def _quantity_khat(weights: np.ndarray, values: np.ndarray) -> float:
    """The largest k-hat over the exported quantities ``values`` [M, per, Q] (each population draw's
    importance draws) of their importance-weighted means (each tail of ``w (q - mean)``) and variances
    (``w (q - mean_m)^2 / var_m``: each population draw's own spread, so that quantities whose spread moves
    with the population (the walk with sigma_walk) do not read as heavy tails of the weights)."""
    w = weights / weights.sum()
    flat_w, flat_v = w.reshape(-1), values.reshape(-1, values.shape[-1])
    centred = flat_v - flat_w @ flat_v
    w_m = w / w.sum(axis=1, keepdims=True)
    mean_m = np.einsum("mp,mpq->mq", w_m, values)
    var_m = np.einsum("mp,mpq->mq", w_m, (values - mean_m[:, None]) ** 2)
    scaled = ((values - mean_m[:, None]) ** 2 / np.where(var_m > 0, var_m, 1.0)[:, None]).reshape(centred.shape)
    tails = np.concatenate([np.maximum(centred, 0), np.maximum(-centred, 0), scaled], axis=1) * flat_w[:, None]
    tails = tails.T
    spread = tails.max(axis=1) > 0
    if not spread.any():
        return float("nan")
    return float(np.nanmax(psis.khat(tails[spread])))


def _conflict(weights: np.ndarray, theta: np.ndarray, prior_mean: np.ndarray,
              prior_variance: np.ndarray) -> tuple[float, float, float]:
    """A campaign's posterior means against its prior (the mixture over the population draws), each latent
    value's ``z = (posterior mean - prior mean) / sqrt(prior var - posterior var)`` (standard normal under the
    model) over the values the data informs (posterior variance at most 80% of the prior's): the largest
    |z|, the level's own z (signed; NaN where the data does not inform it), and that z's load on the error
    of the population's mean level (shared by every campaign): the data's weight on the level, ``1 -
    posterior var / prior var``, times the population mean's sd over the z's denominator."""
    w = weights / weights.sum()  # [M, per]
    post_mean = np.einsum("mp,mpk->k", w, theta)
    post_var = np.einsum("mp,mpk->k", w, (theta - post_mean) ** 2)
    mean = prior_mean.mean(axis=0)
    variance = prior_variance.mean(axis=0) + prior_mean.var(axis=0)
    informed = post_var <= 0.8 * variance
    spread = np.sqrt(np.where(informed, variance - post_var, 1.0))
    z = np.where(informed, (post_mean - mean) / spread, np.nan)
    load = (1.0 - post_var[0] / variance[0]) * np.sqrt(prior_mean[:, 0].var()) / spread[0]
    return (float(np.nanmax(np.abs(z))) if informed.any() else 0.0), float(z[0]), float(load)
