"""Campaign curves (a level and an hour curve per campaign) sampled in whitened coordinates.

Traffic is uneven over the day, so under the data a campaign's level and the Fourier coefficients of its
hour curve are strongly correlated: one ellipse per campaign, which a diagonal mass matrix cannot undo (at
200 campaigns NUTS needed 63 leapfrog steps per draw).  Each campaign's likelihood is close to Gaussian in
its coefficients (``curve_approximation``), and the coefficients are sampled through a linear map that
turns that Gaussian into about a standard normal.  Every map here is exact (its Jacobian is in the model),
so the posterior is exactly the model's; how good the approximation is only sets the speed.
"""

from __future__ import annotations

import numpy as np

from .common import curve_design


def weak_prior_precision(size: int) -> np.ndarray:
    """The precision of the weak N(center, 2), N(0, 1) prior the approximations use (level, then curve)."""
    return np.diag([1 / 2.0**2] + [1.0] * (size - 1))


def curve_approximation(successes: np.ndarray, trials: np.ndarray, center: float, family: str,
                        cell_variance, harmonics: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per campaign, a Gaussian approximation of the data's log likelihood in its curve coefficients.

    Newton steps on the hour sums (``successes`` and ``trials`` [campaign, 24]: conversions and clicks for
    ``family="binomial"``, clicks and windows for ``"poisson"``) under a weak N(center, 2), N(0, 1) prior
    give the mode ``m``; in the precision ``H`` each hour's information ``I`` counts as ``I / (1 + I v)``,
    ``v = cell_variance(m)`` being the variance beyond the family's (cell effects, overdispersion).
    Returns ``m`` [campaign, K], ``H`` [campaign, K, K] (the data's part, without the weak prior) and the
    linear term ``r = H m + g`` [campaign, K], ``g`` the likelihood's gradient at ``m``: the log likelihood
    is about ``r' theta - theta' H theta / 2``.
    """
    design = curve_design(harmonics)
    prior_mean = np.zeros(design.shape[1])
    prior_mean[0] = center
    prior_precision = weak_prior_precision(design.shape[1])
    theta = np.zeros((len(successes), design.shape[1]))
    rate = (successes.sum(1) + 0.5) / (trials.sum(1) + 1.0)
    theta[:, 0] = np.log(rate / (1 - rate)) if family == "binomial" else np.log(rate)

    def mean_and_information(theta):
        eta = theta @ design.T
        if family == "binomial":
            p = 1.0 / (1.0 + np.exp(-eta))
            return trials * p, trials * p * (1 - p)
        return trials * np.exp(eta), trials * np.exp(eta)

    for _ in range(10):  # Newton steps on the likelihood + prior (converges in a few)
        mean, information = mean_and_information(theta)
        grad = (successes - mean) @ design - (theta - prior_mean) @ prior_precision
        hess = np.einsum("ch,hi,hj->cij", information, design, design) + prior_precision
        theta = theta + np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
    mean, information = mean_and_information(theta)
    weight = information / (1.0 + information * cell_variance(theta))
    precision = np.einsum("ch,hi,hj->cij", weight, design, design)
    linear = np.einsum("cij,cj->ci", precision, theta) + (successes - mean) @ design
    return theta, precision, linear


def whitened_coefficients(prefix: str, successes: np.ndarray, trials: np.ndarray, center, family: str,
                          cell_variance, harmonics: int):
    """Each campaign's curve coefficients ``theta = m + R^-T u`` [campaign, K] for a part whose priors are
    fixed: ``m`` the approximate posterior mode under the weak prior of ``curve_approximation``, ``R R'``
    its precision, ``u`` the flat ``{prefix}_white``; the map is constant (no Jacobian term).  The caller
    adds the prior as a potential."""
    import pymc as pm

    mode, precision, _ = curve_approximation(successes, trials, float(center.get_value()), family, cell_variance,
                                             harmonics)
    hess = precision + weak_prior_precision(precision.shape[1])
    whitening = np.linalg.inv(np.linalg.cholesky(hess)).transpose(0, 2, 1)
    white = pm.Flat(f"{prefix}_white", shape=mode.shape, dims=("campaign", "curve_coef"))
    return pm.Data(f"{prefix}_mode", mode) + (pm.Data(f"{prefix}_whitening", whitening) * white[:, None, :]).sum(axis=2)


def conditionally_whitened(prefix: str, mode_precision_linear: tuple, mu, sigma_level, coef_mean, sigma_coef):
    """Each campaign's coefficients [campaign, K] under the prior level ~ N(mu, sigma_level), curve
    coefficients ~ N(coef_mean, sigma_coef), in coordinates whitened given those population values.

    With the data's approximation (``curve_approximation``: precision ``H``, linear term ``r``), a
    campaign's posterior given the population values is about N(m, A^-1) with ``A = H + P``, ``P`` the prior
    precision and ``m = A^-1 (r + P prior_mean)``.  The campaign is sampled as ``theta = m + chol(A)^-T u``
    with ``u`` free (``{prefix}_white``): ``u`` is about standard normal whatever the population scales are,
    so a scale near zero (a funnel when centred) and a campaign whose data pins it (a ridge when
    non-centred) are the same easy geometry, with no switch between parameterisations.  ``P`` is diagonal
    and the same for every curve coefficient, so in each campaign's eigenbasis of the coefficients' block
    of ``H``, ``A`` is an arrowhead matrix whose Cholesky factor is elementwise.  Adds the prior and the
    map's Jacobian as potentials.
    """
    import pymc as pm
    import pytensor.tensor as pt

    mode, precision, linear = mode_precision_linear
    eigenvalues, rotation = np.linalg.eigh(precision[:, 1:, 1:])  # per campaign: H_ff = Q diag(l) Q'
    border = np.einsum("cij,ci->cj", rotation, precision[:, 1:, 0])  # Q' H_fl
    lam, rot, g = (pm.Data(f"{prefix}_{name}", v) for name, v in (
        ("eigenvalues", eigenvalues), ("rotation", rotation), ("border", border)))
    h_ll, r_l = pm.Data(f"{prefix}_level_precision", precision[:, 0, 0]), pm.Data(f"{prefix}_linear_level", linear[:, 0])
    r_f = pm.Data(f"{prefix}_linear_rotated", np.einsum("cij,ci->cj", rotation, linear[:, 1:]))
    white = pm.Flat(f"{prefix}_white", shape=mode.shape, dims=("campaign", "curve_coef"))
    prior_level, prior_coef = 1.0 / sigma_level**2, 1.0 / sigma_coef**2
    d = lam + prior_coef  # the coefficients' diagonal block of A, rotated [campaign, K - 1]
    rotated_mean = (rot * coef_mean[None, :, None]).sum(axis=1)  # Q' coef_mean
    rhs_l, rhs_f = r_l + prior_level * mu, r_f + prior_coef * rotated_mean
    schur = h_ll + prior_level - (g**2 / d).sum(axis=1)  # the level's precision given the coefficients
    mean_l = (rhs_l - (g * rhs_f / d).sum(axis=1)) / schur
    mean_f = (rhs_f - g * mean_l[:, None]) / d
    x_l = white[:, 0] / pt.sqrt(schur)
    level = mean_l + x_l
    rotated = mean_f + white[:, 1:] / pt.sqrt(d) - g * x_l[:, None] / d
    pm.Potential(f"{prefix}_jacobian", -0.5 * pt.log(d).sum() - 0.5 * pt.log(schur).sum())
    pm.Potential(f"{prefix}_prior", pm.logp(pm.Normal.dist(mu, sigma_level), level).sum()
                 + pm.logp(pm.Normal.dist(rotated_mean, sigma_coef), rotated).sum())
    return pt.concatenate([level[:, None], (rot * rotated[:, None, :]).sum(axis=2)], axis=1)  # Q rotated


def estimates_and_variances(approximation: tuple, has_data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each campaign's coefficients as the data alone (with the weak prior) estimates them, and their
    marginal variances [campaign, K]: what ``population_mean`` pools.  A campaign without data
    (``has_data`` False: padding) estimates nothing: infinite variance, no weight."""
    mode, precision, _ = approximation
    covariance = np.linalg.inv(precision + weak_prior_precision(precision.shape[1]))
    variances = np.diagonal(covariance, axis1=1, axis2=2).copy()
    variances[~has_data] = np.inf
    return mode, variances


def population_mean(name: str, estimates: np.ndarray, variances: np.ndarray, sigma, center, sd):
    """The population mean [K] of campaign values whose data estimates are ``estimates`` [campaign, K] with
    ``variances`` [campaign, K], when the campaigns spread around it with scale ``sigma``; prior N(center, sd)
    (``sd`` a number or a parameter: a learned scale).

    Given ``sigma``, the mean's posterior is about normal with precision ``sum_c 1/(v_c + sigma^2) +
    1/sd^2``: wide when the campaigns spread widely, narrow when they agree.  Sampled as ``mean(sigma) +
    u / sqrt(precision(sigma))`` with ``u`` free (``{name}_white``), so that a population scale near zero
    does not squeeze a population mean sampled on its own scale (a funnel with few campaigns).  Exact: the
    Jacobian and the prior are added as potentials.
    """
    import pymc as pm
    import pytensor.tensor as pt

    est, var = pm.Data(f"{name}_estimates", estimates), pm.Data(f"{name}_variances", variances)
    weight = 1.0 / (var + sigma**2)
    precision = weight.sum(axis=0) + 1.0 / sd**2
    mean = ((weight * est).sum(axis=0) + center / sd**2) / precision
    white = pm.Flat(f"{name}_white", shape=estimates.shape[1:])
    value = mean + white / pt.sqrt(precision)
    pm.Potential(f"{name}_jacobian", -0.5 * pt.log(precision).sum())
    pm.Potential(f"{name}_prior", pm.logp(pm.Normal.dist(center, sd), value).sum())
    return value
