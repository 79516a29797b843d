"""Gaussian dual kernels ``K(s1, s2, rho) = E[sigma(s1 X) sigma(s2 Y)]`` and ``K'`` (with sigma').

(X, Y) are unit-variance Gaussians with correlation rho. Routes:

* closed forms (arc-cosine type for relu / leaky_relu / abs / step, arcsin type for erf) — numba
  scalar functions, so the population kernels can call them in compiled loops;
* the Hermite series ``sum_p mu_p(sigma; s1) mu_p(sigma; s2) rho^p`` with the rigorous tail bound
  ``|rho|^(P+1) sqrt(T1 T2)``, ``T = E[sigma(s g)^2] - sum_{p<=P} mu_p^2`` (Cauchy–Schwarz + Parseval);
  exact for polynomials;
* independent checks: adaptive 2-D quadrature in float64 (breakpoints at kinks), mpmath quadrature for
  spot checks, and Monte Carlo with a standard error.

For the derivative kernel, sigma' has Hermite coefficients ``mu_p(sigma'; s) = sqrt(p+1) mu_{p+1}(sigma; s)/s``
(Stein), and Price's theorem gives ``d/drho K = s1 s2 K'``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mpmath
import numpy as np
from numba import njit
from scipy import integrate

from ._validation import check_integer, check_real, check_scale
from .activations import Activation, activation
from .hermite import exact_hermite_coefficients, hermite_coefficients, second_moment

__all__ = [
    "dual_kernel",
    "kernel_series",
    "kernel_quadrature",
    "kernel_mpmath",
    "kernel_monte_carlo",
    "KernelSpec",
    "kernel_spec",
    "hermite_series",
    "kernel_value",
    "SeriesValue",
]

CODE_SERIES, CODE_RELU, CODE_LEAKY_RELU, CODE_ABS, CODE_STEP, CODE_ERF = 0, 1, 2, 3, 4, 5
_CLOSED_CODES = {"relu": CODE_RELU, "leaky_relu": CODE_LEAKY_RELU, "abs": CODE_ABS, "step": CODE_STEP}
DEFAULT_SERIES_ORDER = 400


@njit(cache=True)
def _clip(rho):
    return min(1.0, max(-1.0, rho))


@njit(cache=True)
def _relu_kernel(rho):
    rho = _clip(rho)
    return (math.sqrt(1.0 - rho * rho) + (math.pi - math.acos(rho)) * rho) / (2.0 * math.pi)


@njit(cache=True)
def _step_kernel(rho):
    return (math.pi - math.acos(_clip(rho))) / (2.0 * math.pi)


@njit(cache=True)
def kernel_value(code, parameter, derivative, s1, s2, rho, series_a, series_b):
    """One kernel value. ``series_a``/``series_b`` are the Hermite coefficients (of sigma, or of sigma'
    when ``derivative``) at scales s1, s2, used when ``code`` is the series code."""
    if code == CODE_RELU:
        return _step_kernel(rho) if derivative else s1 * s2 * _relu_kernel(rho)
    if code == CODE_LEAKY_RELU:
        a = parameter
        if derivative:
            return a + (1.0 - a) * (1.0 - a) * _step_kernel(rho)
        return s1 * s2 * (a * _clip(rho) + (1.0 - a) * (1.0 - a) * _relu_kernel(rho))
    if code == CODE_ABS:
        if derivative:
            return 2.0 / math.pi * math.asin(_clip(rho))
        return s1 * s2 * (4.0 * _relu_kernel(rho) - _clip(rho))
    if code == CODE_STEP:
        if derivative:
            c = _clip(rho)
            return 1.0 / (2.0 * math.pi * s1 * s2 * math.sqrt(1.0 - c * c)) if abs(c) < 1.0 else math.inf
        return _step_kernel(rho)
    if code == CODE_ERF:
        a, b = 1.0 + 2.0 * s1 * s1, 1.0 + 2.0 * s2 * s2
        if derivative:
            return 4.0 / math.pi / math.sqrt(a * b - 4.0 * s1 * s1 * s2 * s2 * rho * rho)
        return 2.0 / math.pi * math.asin(2.0 * s1 * s2 * rho / math.sqrt(a * b))
    value = 0.0
    for p in range(series_a.shape[0] - 1, -1, -1):
        value = value * rho + series_a[p] * series_b[p]
    return value


def _closed_code(sigma: Activation) -> int:
    if sigma.family in _CLOSED_CODES:
        return _CLOSED_CODES[sigma.family]
    if sigma.name == "erf":
        return CODE_ERF
    return CODE_SERIES


@dataclass(frozen=True)
class KernelSpec:
    """What the compiled population loops need to evaluate K or K' at a set of scales.

    ``coefficients[i]`` are the Hermite coefficients (of sigma, or sigma' when ``derivative``) at
    ``scales[i]``, used only when ``code`` is the series code.
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
    """
    sigma = activation(sigma)
    scales = np.atleast_1d(np.asarray(scales, dtype=np.float64))
    for s in scales:
        check_scale(float(s))
    code = _closed_code(sigma)
    if code != CODE_SERIES:
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
        out[n] = kernel_value(code, parameter, derivative, s1, s2, rho[n], a, b)
    return out


def dual_kernel(sigma, rho, s1: float = 1.0, s2: float = 1.0, derivative: bool = False, order: int | None = None) -> np.ndarray:
    """``E[sigma(s1 X) sigma(s2 Y)]`` (or with sigma' when ``derivative``), corr(X, Y) = rho.

    Closed form where the catalogue has one, else the Hermite series (see :func:`kernel_series` for its
    error bound).

    Examples
    --------
    >>> float(dual_kernel("relu", 0.0))  # E[relu(X)] E[relu(Y)] = 1/(2 pi)
    0.15915494309189535
    >>> float(dual_kernel("relu", 1.0, derivative=True))  # E[step(X)^2]
    0.5
    >>> round(float(dual_kernel("He_3", 0.5)), 12)  # 3! rho^3
    0.75
    """
    rho = _check_rho(rho)
    spec = kernel_spec(sigma, [s1, s2], derivative, order)
    values = _evaluate(spec.code, spec.parameter, derivative, float(s1), float(s2), rho.ravel(), spec.coefficients[0], spec.coefficients[1])
    return values.reshape(rho.shape)


def _check_rho(rho) -> np.ndarray:
    rho = np.asarray(rho, dtype=np.float64)
    if not np.all(np.isfinite(rho)) or np.any(np.abs(rho) > 1.0):
        raise ValueError("rho must lie in [-1, 1]")
    return rho


@dataclass(frozen=True)
class SeriesValue:
    """A truncated series value with a rigorous bound on the truncation error."""

    value: np.ndarray
    error_bound: np.ndarray


def kernel_series(sigma, rho, s1: float = 1.0, s2: float = 1.0, derivative: bool = False, order: int = 60) -> SeriesValue:
    """The Hermite series of the kernel truncated at ``order`` and its truncation bound.

    The bound ``|rho|^(P+1) sqrt(T1 T2)`` follows from Cauchy–Schwarz on the tail and Parseval
    (``T`` is the uncaptured second moment at each scale; 0 for polynomials of degree ≤ P), plus a
    float64 floor of ``1e-13 sqrt(E1 E2)`` for the rounding of the coefficients.

    Examples
    --------
    >>> s = kernel_series("tanh", 0.5, order=20)
    >>> bool(s.error_bound < 1e-7)
    True
    """
    sigma = activation(sigma)
    rho = _check_rho(rho)
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


def kernel_quadrature(sigma, rho: float, s1: float = 1.0, s2: float = 1.0, derivative: bool = False) -> tuple:
    """Adaptive 2-D quadrature (scipy) of the kernel in float64: ``(value, error estimate)``.

    X = g1, Y = rho g1 + sqrt(1 - rho^2) g2; the inner integral over g2 is split at the kinks of
    sigma(s2 Y), the outer over g1 at the kinks of sigma(s1 X). Not defined for the Dirac kernel of a
    jump (step').
    """
    sigma = activation(sigma)
    rho = check_real(rho, "rho", -1.0, 1.0)
    if derivative and sigma.jumps:
        raise ValueError(f"kernel_quadrature: sigma' of {sigma.name!r} has a Dirac part; use the closed form")
    f = sigma.scalar[1] if derivative else sigma.scalar[0]
    limit = 12.0
    co = math.sqrt(max(0.0, 1.0 - rho * rho))

    def inner(g1):
        mean = rho * g1
        if co == 0.0:
            return f(s2 * mean)
        points = [(k / s2 - mean) / co for k in sigma.breakpoints]
        points = [p for p in points if -limit < p < limit]
        value, _ = integrate.quad(lambda g2: f(s2 * (mean + co * g2)) * math.exp(-0.5 * g2 * g2), -limit, limit, points=points or None, epsabs=1e-13, epsrel=1e-12, limit=200)
        return value / math.sqrt(2 * math.pi)

    points = [k / s1 for k in sigma.breakpoints if -limit < k / s1 < limit]
    value, error = integrate.quad(lambda g1: f(s1 * g1) * inner(g1) * math.exp(-0.5 * g1 * g1), -limit, limit, points=points or None, epsabs=1e-12, epsrel=1e-11, limit=200)
    return value / math.sqrt(2 * math.pi), error


def kernel_mpmath(sigma, rho, s1=1, s2=1, derivative: bool = False):
    """The kernel by nested mpmath quadrature at the working precision (slow; for spot checks)."""
    from .expressions import mpmath_function

    sigma = activation(sigma)
    if derivative and sigma.jumps:
        raise ValueError(f"kernel_mpmath: sigma' of {sigma.name!r} has a Dirac part; use the closed form")
    function = mpmath_function(sigma.derivative_program if derivative else sigma.program)
    rho, s1, s2 = mpmath.mpf(rho), mpmath.mpf(s1), mpmath.mpf(s2)
    co = mpmath.sqrt(1 - rho * rho)
    limit = int(math.sqrt(2 * math.log(10) * (mpmath.mp.dps + 5))) + 2
    normaliser = 1 / mpmath.sqrt(2 * mpmath.pi)

    def inner(g1):
        mean = rho * g1
        kinks = [(k / s2 - mean) / co for k in sigma.breakpoints if abs((k / s2 - mean) / co) < limit]
        points = [mpmath.mpf(-limit)] + sorted(kinks) + [mpmath.mpf(limit)]
        return mpmath.quad(lambda g2: function(s2 * (mean + co * g2)) * mpmath.exp(-g2 * g2 / 2), points) * normaliser

    points = [mpmath.mpf(-limit)] + sorted(mpmath.mpf(k) / s1 for k in sigma.breakpoints) + [mpmath.mpf(limit)]
    return mpmath.quad(lambda g1: function(s1 * g1) * inner(g1) * mpmath.exp(-g1 * g1 / 2), points) * normaliser


def kernel_monte_carlo(sigma, rho: float, s1: float = 1.0, s2: float = 1.0, derivative: bool = False, samples: int = 1_000_000, seed: int = 0) -> tuple:
    """Monte Carlo estimate of the kernel: ``(mean, standard error)`` (numpy Generator with ``seed``)."""
    sigma = activation(sigma)
    rho = check_real(rho, "rho", -1.0, 1.0)
    samples = check_integer(samples, "samples", 2)
    generator = np.random.default_rng(seed)
    g1 = generator.standard_normal(samples)
    g2 = rho * g1 + math.sqrt(max(0.0, 1 - rho * rho)) * generator.standard_normal(samples)
    function = sigma.prime if derivative else sigma
    values = function(s1 * g1) * function(s2 * g2)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(samples))
