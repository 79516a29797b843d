"""Gaussian dual kernels ``K(s1, s2, rho) = E[sigma(s1 X) sigma(s2 Y)]`` and ``K'`` (with sigma').

(X, Y) are unit-variance Gaussians with correlation rho. Routes:

* closed forms owned by the activation's family (arc-cosine type for relu / leaky_relu / abs / step,
  arcsine type for erf) — numba scalar functions, so the population kernels call them in compiled loops;
* the Hermite series ``sum_p mu_p(sigma; s1) mu_p(sigma; s2) rho^p`` with the rigorous tail bound
  ``|rho|^(P+1) sqrt(T1 T2)``, ``T = E[sigma(s g)^2] - sum_{p<=P} mu_p^2`` (Cauchy–Schwarz + Parseval);
  exact for polynomials;
* independent checks (quadrature, mpmath, Monte Carlo) live in :mod:`popgrad.reference.kernels`.

For the derivative kernel, sigma' has Hermite coefficients ``mu_p(sigma'; s) = sqrt(p+1) mu_{p+1}(sigma; s)/s``
(Stein), and Price's theorem gives ``d/drho K = s1 s2 K'``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from .._validation import check_integer, check_scale, check_unit_interval
from .activations import activation
from .families.base import KERNEL_SERIES
from .families.fast import closed_kernel
from .hermite import exact_hermite_coefficients, hermite_coefficients, second_moment

__all__ = ["dual_kernel", "kernel_series", "KernelSpec", "kernel_spec", "hermite_series", "SeriesValue"]

DEFAULT_SERIES_ORDER = 400


@dataclass(frozen=True)
class KernelSpec:
    """What the compiled population loops need to evaluate K or K' at a set of scales.

    ``coefficients[i]`` are the Hermite coefficients (of sigma, or sigma' when ``derivative``) at
    ``scales[i]``, used only when ``code`` is the series code.

    Attributes
    ----------
    code : int
        The activation family's kernel code (or the series code).
    parameter : float
        The family's parameter (e.g. leaky_relu's slope).
    derivative : bool
        K' (kernel of sigma') instead of K.
    scales : ndarray
        The scales r at which the kernel is needed.
    coefficients : ndarray, shape (len(scales), order + 1)
        Hermite coefficients per scale (series code only).
    """

    code: int
    parameter: float
    derivative: bool
    scales: np.ndarray
    coefficients: np.ndarray


def hermite_series(sigma, scales, derivative: bool = False, order: int = DEFAULT_SERIES_ORDER) -> tuple:
    """Float64 Hermite coefficients of sigma (or of sigma', ``derivative``) through ``order`` at each scale.

    Returns ``(coefficients, tails, moments)``: ``coefficients[i, p]``; ``moments[i]`` the second moment
    ``E[sigma(s g)^2]`` (or of sigma'; infinite when sigma' has a Dirac part); ``tails[i]`` its part not
    captured by the coefficients (Parseval; 0 for polynomials whose degree the order reaches). sigma'
    uses ``mu_p(sigma'; s) = sqrt(p+1) mu_{p+1}(sigma; s) / s`` (Stein). Each distinct scale is computed once.

    Parameters
    ----------
    sigma : str or Activation
    scales : array_like of float
        Positive scales r.
    derivative : bool, default False
    order : int, default 400

    Returns
    -------
    tuple of ndarray
        ``(coefficients, tails, moments)`` as above.
    """
    sigma = activation(sigma)
    scales = np.atleast_1d(np.asarray(scales, dtype=np.float64))
    distinct, index = np.unique(scales, return_inverse=True)
    degree = len(sigma.polynomial_coefficients) - 1 - int(derivative) if sigma.family == "polynomial" else None
    rows, tails, moments = [], [], []
    for s in distinct:
        mu = hermite_coefficients(sigma, order + 1, float(check_scale(float(s))))
        if derivative:
            row = np.sqrt(np.arange(1.0, order + 2)) * mu[1:] / s
            moment = math.inf if sigma.jumps else second_moment(sigma, float(s), derivative=True)
        else:
            row = mu[: order + 1]
            moment = second_moment(sigma, float(s))
        rows.append(row)
        moments.append(moment)
        tails.append(0.0 if degree is not None and degree <= order else max(moment - float(np.sum(row**2)), 0.0))
    return np.array(rows)[index], np.array(tails)[index], np.array(moments)[index]


def kernel_spec(sigma, scales, derivative: bool = False, order: int | None = None) -> KernelSpec:
    """Prepare kernel evaluation for ``sigma`` at the given scales.

    Closed forms need no coefficients. Polynomials use their exact (finite) Hermite coefficients. Other
    activations use ``order`` (default 400) float64 coefficients (:func:`hermite_series`).

    Parameters
    ----------
    sigma : str or Activation
    scales : array_like of float
    derivative : bool, default False
    order : int, optional

    Returns
    -------
    KernelSpec
    """
    sigma = activation(sigma)
    scales = np.atleast_1d(np.asarray(scales, dtype=np.float64))
    for s in scales:
        check_scale(float(s))
    code = sigma.family_spec.kernel_code
    if code != KERNEL_SERIES:
        return KernelSpec(code, sigma.slope, derivative, scales, np.zeros((len(scales), 1)))
    if sigma.family == "polynomial":
        degree = len(sigma.polynomial_coefficients) - 1
        distinct, index = np.unique(scales, return_inverse=True)
        rows = np.array([[float(v) for v in exact_hermite_coefficients(sigma, degree, float(s))] for s in distinct])[index]
        if derivative:
            rows = np.sqrt(np.arange(1.0, degree + 1)) * rows[:, 1:] / scales[:, None]
        return KernelSpec(code, 0.0, derivative, scales, rows)
    order = DEFAULT_SERIES_ORDER if order is None else check_integer(order, "order", 1, 4000)
    coefficients, _, _ = hermite_series(sigma, scales, derivative, order)
    return KernelSpec(code, 0.0, derivative, scales, coefficients)


@njit(cache=True)
def _evaluate(code, parameter, derivative, s1, s2, rho, a, b):
    out = np.empty(rho.shape[0])
    for n in range(rho.shape[0]):
        out[n] = closed_kernel(code, parameter, derivative, s1, s2, rho[n], a, b)
    return out


@njit(cache=True)
def scaled_closed_kernel(code, parameter, s1, s2, rho, derivative=False):
    """``E[sigma(s1 X) sigma(s2 Y)]`` (or with sigma', ``derivative``) elementwise over flat arrays, for a
    family with a closed-form kernel (``code`` of :func:`kernel_spec`, not the series code): many scale
    pairs in one call."""
    out = np.empty(rho.shape[0])
    unused = np.zeros(1)
    for n in range(rho.shape[0]):
        out[n] = closed_kernel(code, parameter, derivative, s1[n], s2[n], rho[n], unused, unused)
    return out


def dual_kernel(sigma, rho, s1: float = 1.0, s2: float = 1.0, derivative: bool = False, order: int | None = None) -> np.ndarray:
    """``E[sigma(s1 X) sigma(s2 Y)]`` (or with sigma' when ``derivative``), corr(X, Y) = rho.

    Closed form where the catalogue has one, else the Hermite series (see :func:`kernel_series` for its
    error bound).

    Parameters
    ----------
    sigma : str or Activation
        The activation.
    rho : float or array_like, in [-1, 1]
        Correlation of X and Y.
    s1, s2 : float, default 1
        Scales of the two arguments.
    derivative : bool, default False
        Use sigma' (the kernel K' of the drift).
    order : int, optional
        Truncation order of the Hermite series when there is no closed form (default 400).

    Returns
    -------
    ndarray
        Same shape as ``rho``.

    Examples
    --------
    >>> float(dual_kernel("relu", 0.0))  # E[relu(X)] E[relu(Y)] = 1/(2 pi)
    0.15915494309189535
    >>> float(dual_kernel("relu", 1.0, derivative=True))  # E[step(X)^2]
    0.5
    >>> round(float(dual_kernel("He_3", 0.5)), 12)  # 3! rho^3
    0.75
    """
    rho = check_unit_interval(rho, "rho")
    s1, s2 = check_scale(s1, "s1"), check_scale(s2, "s2")  # named as the caller wrote them, before the shared scale check
    spec = kernel_spec(sigma, [s1, s2], derivative, order)
    values = _evaluate(spec.code, spec.parameter, derivative, float(s1), float(s2), rho.ravel(), spec.coefficients[0], spec.coefficients[1])
    return values.reshape(rho.shape)


@dataclass(frozen=True)
class SeriesValue:
    """A truncated series value with a rigorous bound on the truncation error.

    Attributes
    ----------
    value : ndarray
        The truncated series.
    error_bound : ndarray
        A bound on the truncation (and coefficient rounding) error.
    """

    value: np.ndarray
    error_bound: np.ndarray


def kernel_series(sigma, rho, s1: float = 1.0, s2: float = 1.0, derivative: bool = False, order: int = 60) -> SeriesValue:
    """The Hermite series of the kernel truncated at ``order`` and its truncation bound.

    The bound ``|rho|^(P+1) sqrt(T1 T2)`` follows from Cauchy–Schwarz on the tail and Parseval
    (``T`` is the uncaptured second moment at each scale; 0 for polynomials of degree ≤ P), plus a
    float64 floor of ``1e-13 sqrt(E1 E2)`` for the rounding of the coefficients.

    Parameters
    ----------
    sigma : str or Activation
    rho : float or array_like, in [-1, 1]
    s1, s2 : float, default 1
    derivative : bool, default False
    order : int, default 60

    Returns
    -------
    SeriesValue

    Examples
    --------
    >>> s = kernel_series("tanh", 0.5, order=20)
    >>> bool(s.error_bound < 1e-7)
    True
    """
    sigma = activation(sigma)
    rho = check_unit_interval(rho, "rho")
    order = check_integer(order, "order", 1, 4000)
    coefficients, tails, moments = hermite_series(sigma, [check_scale(s1), check_scale(s2)], derivative, order)
    products = coefficients[0] * coefficients[1]
    value = np.polynomial.polynomial.polyval(rho, products)
    # float64 floor: the coefficients are accurate to ~1e-14 absolute (tests), summed over the series
    rounding = 1e-13 * math.sqrt(moments[0] * moments[1]) if all(np.isfinite(moments)) else 0.0
    if np.all(np.isfinite(moments)):
        bound = np.abs(rho) ** (order + 1) * math.sqrt(tails[0] * tails[1]) + rounding
    else:
        bound = np.full(rho.shape, np.inf)
    return SeriesValue(value, np.broadcast_to(bound, rho.shape))
