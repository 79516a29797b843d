"""Hermite coefficients ``mu_p(sigma; r) = E[sigma(r g) h_p(g)]``, ``g ~ N(0, 1)``, by three routes.

* :func:`exact_hermite_coefficients` — sympy closed forms: polynomials (Gaussian moments), the
  ReLU family (closed form in p, homogeneous in r), step, and the Stein route
  ``mu_p(sigma; r) = r^p E[sigma^(p)(r g)] / sqrt(p!)`` for activations whose derivative is a
  polynomial times a Gaussian (erf, gelu).
* :func:`hermite_coefficients` — float64, composite Gauss–Legendre quadrature on panels of width 1/2
  split at every kink, all orders at once through the stable three-term recurrence of
  ``h_p(g) phi(g)``. Works for every activation; it never uses the closed forms.
* :func:`mpmath_hermite_coefficients` — arbitrary precision (``mpmath.mp.dps`` or :func:`precision`)
  tanh–sinh quadrature on panels split at kinks: an independent reference.

:func:`verify_hermite` compares two routes and reports the agreeing significant digits.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from functools import lru_cache

import mpmath
import numpy as np
import sympy

from ._validation import check_order, check_scale
from .activations import Activation, activation
from .expressions import Z, mpmath_function

__all__ = [
    "exact_hermite_coefficients",
    "hermite_coefficients",
    "mpmath_hermite_coefficients",
    "hermite_recurrence",
    "verify_hermite",
    "HermiteVerification",
    "information_exponent",
    "parseval_check",
    "precision",
    "exact_scale",
    "NoClosedForm",
]


class NoClosedForm(ValueError):
    """The activation has no closed-form Hermite coefficients in the catalogue."""


@contextlib.contextmanager
def precision(digits: int):
    """Context manager setting mpmath's working precision (an alias of ``mpmath.workdps``).

    Examples
    --------
    >>> with precision(30):
    ...     str(mpmath_hermite_coefficients("relu", 1)[1])
    '0.5'
    """
    with mpmath.workdps(digits):
        yield


def exact_scale(scale) -> sympy.Expr:
    """The scale r as an exact sympy number: floats are read by their shortest repr (1.7 -> 17/10)."""
    if isinstance(scale, sympy.Basic):
        value = scale
    elif isinstance(scale, (int, np.integer)):
        value = sympy.Integer(int(scale))
    else:
        value = sympy.Rational(repr(float(scale)))
    check_scale(float(value))
    return value


# ------------------------------------------------------------------------------------------------
# exact route
# ------------------------------------------------------------------------------------------------


def _double_factorial(n: int) -> sympy.Integer:
    return sympy.Integer(1) if n <= 0 else sympy.factorial2(n)


def _hermite_at_zero(n: int) -> sympy.Integer:
    """He_n(0): 0 for odd n, (-1)^(n/2) (n-1)!! for even n."""
    return sympy.Integer(0) if n % 2 else (-1) ** (n // 2) * _double_factorial(n - 1)


def _relu_unit(p: int) -> sympy.Expr:
    """mu_p(relu; 1): 1/sqrt(2 pi), 1/2, then He_{p-2}(0)/sqrt(2 pi p!) (Stein twice)."""
    if p == 0:
        return 1 / sympy.sqrt(2 * sympy.pi)
    if p == 1:
        return sympy.Rational(1, 2)
    return _hermite_at_zero(p - 2) / sympy.sqrt(2 * sympy.pi * sympy.factorial(p))


def _step_unit(p: int) -> sympy.Expr:
    """mu_p(step): 1/2, then He_{p-1}(0)/sqrt(2 pi p!) (Stein once, sigma' = delta)."""
    if p == 0:
        return sympy.Rational(1, 2)
    return _hermite_at_zero(p - 1) / sympy.sqrt(2 * sympy.pi * sympy.factorial(p))


def _gaussian_moment_polynomial(coefficients: list, p: int, r: sympy.Expr) -> sympy.Expr:
    """E[P(r g) He_p(g)] / sqrt(p!) for P = sum a_n z^n, using E[g^n He_p(g)] = n!/(((n-p)/2)! 2^((n-p)/2))."""
    total = sympy.Integer(0)
    for n, a in enumerate(coefficients):
        if a == 0 or n < p or (n - p) % 2:
            continue
        half = (n - p) // 2
        total += a * r**n * sympy.factorial(n) / (sympy.factorial(half) * 2**half)
    return total / sympy.sqrt(sympy.factorial(p))


def _stein_derivatives(stein, order: int) -> list:
    """Polynomials Q_p with sigma^(p) = Q_p exp(-c z^2) for p0 <= p <= order."""
    polys = [sympy.Poly(stein.polynomial, Z)]
    two_c_z = sympy.Poly(2 * stein.c * Z, Z)
    for _ in range(stein.p0, order):
        q = polys[-1]
        polys.append(q.diff(Z) - two_c_z * q)
    return polys


def _gaussian_expectation(poly: sympy.Poly, c: sympy.Expr, r: sympy.Expr) -> sympy.Expr:
    """E[Q(r g) exp(-c r^2 g^2)] = sum_n q_n r^n (n-1)!! s^(-(n+1)/2) over even n, s = 1 + 2 c r^2."""
    s = 1 + 2 * c * r**2
    total = sympy.Integer(0)
    for (n,), q in poly.terms():
        if n % 2 == 0:
            total += q * r**n * _double_factorial(n - 1) * s ** (-sympy.Rational(n + 1, 2))
    return total


def exact_hermite_coefficients(sigma, order: int, scale=1) -> list:
    """Exact ``mu_p(sigma; r)`` for p = 0..order as sympy expressions.

    Parameters
    ----------
    sigma : str or Activation
        An activation with a closed form (``Activation.has_closed_form``).
    order : int
        Largest p (≥ 0).
    scale : float or sympy number
        r > 0; floats are read exactly by their decimal repr (1.7 is 17/10).

    Raises
    ------
    NoClosedForm
        For activations without a closed form (tanh, sigmoid, softplus, silu, non-polynomial custom).

    Examples
    --------
    >>> exact_hermite_coefficients("relu", 4)
    [sqrt(2)/(2*sqrt(pi)), 1/2, 1/(2*sqrt(pi)), 0, -sqrt(3)/(12*sqrt(pi))]
    >>> exact_hermite_coefficients("erf", 3, scale=1)
    [0, 2*sqrt(3)/(3*sqrt(pi)), 0, -2*sqrt(2)/(9*sqrt(pi))]
    """
    sigma = activation(sigma)
    order = check_order(order)
    r = exact_scale(scale)
    return list(_exact_cached(sigma, order, r))


@lru_cache(maxsize=256)
def _exact_cached(sigma: Activation, order: int, r: sympy.Expr) -> tuple:
    family = sigma.family
    if family == "polynomial":
        coefficients = list(reversed(sympy.Poly(sigma.expression, Z).all_coeffs()))
        values = [_gaussian_moment_polynomial(coefficients, p, r) for p in range(order + 1)]
    elif family in ("relu", "leaky_relu", "abs"):
        slope = sympy.nsimplify(sigma.slope, rational=True)
        weight, linear = {"relu": (1, 0), "abs": (2, -1), "leaky_relu": (1 - slope, slope)}[family]
        values = [r * (weight * _relu_unit(p) + (linear if p == 1 else 0)) for p in range(order + 1)]
    elif family == "step":
        values = [_step_unit(p) for p in range(order + 1)]
    elif family == "stein":
        stein = sigma.stein
        derivatives = _stein_derivatives(stein, order)
        values = []
        for p in range(order + 1):
            if p < stein.p0:
                values.append(stein.low_orders[p](r))
            else:
                moment = _gaussian_expectation(derivatives[p - stein.p0], stein.c, r)
                values.append(r**p * moment / sympy.sqrt(sympy.factorial(p)))
    else:
        raise NoClosedForm(f"activation {sigma.name!r} has no closed-form Hermite coefficients; use float64 or mpmath")
    return tuple(values)


# ------------------------------------------------------------------------------------------------
# float64 route
# ------------------------------------------------------------------------------------------------

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(32)
_HALF_WIDTH = 38.0  # phi(38) ~ 1e-314: nothing beyond contributes in float64
_PANEL = 0.5


def _panel_edges(kinks, half_width: float, panel: float) -> np.ndarray:
    edges = np.arange(-half_width, half_width + panel / 2, panel)
    inside = [k for k in kinks if -half_width < k < half_width]
    return np.unique(np.concatenate([edges, inside]))


@lru_cache(maxsize=64)
def _float_rule(kinks: tuple) -> tuple:
    edges = _panel_edges(kinks, _HALF_WIDTH, _PANEL)
    a, b = edges[:-1, None], edges[1:, None]
    nodes = (0.5 * (b - a) * _GL_NODES + 0.5 * (a + b)).ravel()
    weights = (0.5 * (b - a) * _GL_WEIGHTS).ravel() * np.exp(-0.5 * nodes**2) / math.sqrt(2 * math.pi)
    return nodes, weights


def hermite_recurrence(g: np.ndarray, order: int) -> np.ndarray:
    """``h_p(g)`` for p = 0..order, shape ``(order + 1, len(g))``, by the normalised recurrence
    ``h_{p+1} = (g h_p - sqrt(p) h_{p-1}) / sqrt(p + 1)`` (stable; no factorials).

    Examples
    --------
    >>> hermite_recurrence(np.array([2.0]), 3)[:, 0]  # He_3(2)/sqrt(6) = 2/sqrt(6)
    array([1.        , 2.        , 2.12132034, 0.81649658])
    """
    g = np.asarray(g, dtype=np.float64)
    out = np.empty((order + 1,) + g.shape)
    out[0] = 1.0
    if order >= 1:
        out[1] = g
    for p in range(1, order):
        out[p + 1] = (g * out[p] - math.sqrt(p) * out[p - 1]) / math.sqrt(p + 1)
    return out


def _quadrature_nodes(sigma: Activation, scale: float) -> tuple:
    kinks = tuple(sorted(k / scale for k in sigma.breakpoints))
    return _float_rule(kinks)


def hermite_coefficients(sigma, order: int, scale: float = 1.0) -> np.ndarray:
    """``mu_p(sigma; r)`` for p = 0..order in float64 (quadrature; every activation).

    Composite 32-point Gauss–Legendre on panels of width 1/2 over [-38, 38], split at kinks. Agrees with
    the mpmath reference to ~1e-14 absolute for the catalogue (see tests).

    Examples
    --------
    >>> mu = hermite_coefficients("relu", 3)
    >>> (np.round(mu, 12) + 0.0).tolist()
    [0.398942280401, 0.5, 0.282094791774, 0.0]
    """
    sigma = activation(sigma)
    order = check_order(order)
    scale = check_scale(scale)
    nodes, weights = _quadrature_nodes(sigma, scale)
    values = sigma(scale * nodes)
    if not np.all(np.isfinite(values[weights > 0])):
        raise ValueError(f"activation {sigma.name!r} is not finite on the Gaussian's support at scale {scale}")
    return hermite_recurrence(nodes, order) @ (values * weights)


def second_moment(sigma, scale: float = 1.0, derivative: bool = False) -> float:
    """``E[sigma(r g)^2]`` (or ``E[sigma'(r g)^2]``) in float64 by the same quadrature."""
    sigma = activation(sigma)
    nodes, weights = _quadrature_nodes(sigma, check_scale(scale))
    values = sigma.prime(scale * nodes) if derivative else sigma(scale * nodes)
    return float(values**2 @ weights)


# ------------------------------------------------------------------------------------------------
# mpmath route
# ------------------------------------------------------------------------------------------------


def mpmath_hermite_coefficients(sigma, order: int, scale=1) -> list:
    """``mu_p(sigma; r)``, p = 0..order, as mpmath numbers at the working precision.

    Tanh–sinh quadrature of ``sigma(r g) h_p(g) phi(g)`` on panels of width 2 covering the region where
    the integrand exceeds 10^-(dps+10) (Cramér's bound |h_p(g)| phi(g)^(1/2) <= 1), split at kinks,
    with 20 guard digits. All orders share the integrand evaluations. Independent of the closed forms.

    Examples
    --------
    >>> with precision(40):
    ...     mu = mpmath_hermite_coefficients("erf", 1)
    >>> mpmath.nstr(mu[1], 30)  # = 2/sqrt(3 pi)
    '0.651470015870559895448512830451'
    """
    sigma = activation(sigma)
    return _mp_quadrature(sigma, check_order(order), exact_scale(scale), "tanh-sinh", 2)


def _mp_quadrature(sigma: Activation, order: int, r_exact: sympy.Expr, method: str, panel: int) -> list:
    target = mpmath.mp.dps
    with mpmath.workdps(target + 20):
        r = mpmath.mpf(str(sympy.N(r_exact, target + 30)))
        function = mpmath_function(sigma.program)
        half_width = _negligible_beyond(function, r, order, target + 10)
        kinks = [mpmath.mpf(k) / r for k in sigma.breakpoints]
        edges = sorted(set([mpmath.mpf(x) for x in range(-half_width, half_width + 1, panel)] + kinks))
        normaliser = 1 / mpmath.sqrt(2 * mpmath.pi)
        roots = [mpmath.sqrt(p) for p in range(order + 2)]
        cache: dict = {}

        def row(g):
            values = cache.get(g)
            if values is None:
                base = function(r * g) * mpmath.exp(-g * g / 2) * normaliser
                values = [base, base * g]
                previous, current = mpmath.mpf(1), g
                for p in range(1, order):
                    previous, current = current, (g * current - roots[p] * previous) / roots[p + 1]
                    values.append(base * current)
                cache[g] = values
            return values

        results = [mpmath.quad(lambda g, p=p: row(g)[p], edges, method=method) for p in range(order + 1)]
    return [+value for value in results[: order + 1]]


def _negligible_beyond(function, r, order: int, digits: int) -> int:
    """An integer L with |sigma(r g) h_p(g) phi(g)| < 10^-digits for |g| >= L and all p <= order.

    Uses |h_p(g)| <= |He_p(g)| <= (|g| + sqrt(p))^p; the bound is checked at L and 2L, beyond which
    the Gaussian factor dominates any activation of sub-Gaussian growth.
    """
    with mpmath.workdps(20):
        threshold = -digits * math.log(10)

        def log_bound(g):
            size = max(abs(function(r * g)), abs(function(-r * g)), mpmath.mpf(10) ** -300)
            return float(mpmath.log(size) - g * g / 2 + order * mpmath.log(g + mpmath.sqrt(order)))

        for length in range(4, 200):
            if log_bound(mpmath.mpf(length)) < threshold and log_bound(mpmath.mpf(2 * length)) < threshold:
                return length
    raise ValueError("activation grows too fast for Gaussian quadrature (E[sigma(r g)^2] may not exist)")


def _mp_second_moment(sigma: Activation, r) -> mpmath.mpf:
    function = mpmath_function(sigma.program)
    half_width = _negligible_beyond(lambda z: function(z) ** 2, r, 0, mpmath.mp.dps + 10)
    kinks = [mpmath.mpf(k) / r for k in sigma.breakpoints]
    edges = sorted(set([mpmath.mpf(x) for x in range(-half_width, half_width + 1, 2)] + kinks))
    normaliser = 1 / mpmath.sqrt(2 * mpmath.pi)
    return mpmath.quad(lambda g: function(r * g) ** 2 * mpmath.exp(-g * g / 2) * normaliser, edges)


# ------------------------------------------------------------------------------------------------
# verification
# ------------------------------------------------------------------------------------------------


def agreeing_digits(value, reference, cap: int) -> float:
    """Significant digits on which two numbers agree, capped at ``cap``; absolute for a zero reference."""
    difference = abs(mpmath.mpf(value) - mpmath.mpf(reference))
    if difference == 0:
        return float(cap)
    size = abs(mpmath.mpf(reference))
    relative = difference / size if size != 0 else difference
    return float(min(cap, max(0.0, -mpmath.log10(relative))))


def _zero_digits(reference, cap: int) -> float:
    """For a zero coefficient: how many decimal places the independent reference is zero to (capped)."""
    return float(cap) if reference == 0 else min(float(cap), -float(mpmath.log10(abs(reference))))


@dataclass(frozen=True)
class HermiteVerification:
    """Two independent routes to ``mu_p(sigma; r)`` and their agreement.

    ``exact`` holds sympy expressions (or None where there is no closed form); ``value`` the best value
    (the exact one evaluated, else the mpmath tanh–sinh value); ``reference`` the independent mpmath
    value (tanh–sinh quadrature against the exact route; Gauss–Legendre quadrature against the tanh–sinh
    value when there is no closed form); ``digits`` the agreeing significant digits. ``zero`` marks
    orders whose value is 0: exactly (closed form) or, without a closed form, below 10^(5-dps) by both
    routes; there ``digits`` is the count of zero digits of ``abs(reference)`` and ``max_abs_at_zeros``
    reports the largest such reference value.
    """

    activation: str
    scale: str
    dps: int
    method: str
    exact: tuple
    value: tuple
    reference: tuple
    digits: tuple

    zero: tuple

    @property
    def min_digits(self) -> float:
        """Fewest agreeing significant digits over the non-zero orders."""
        nonzero = [d for d, z in zip(self.digits, self.zero) if not z]
        return min(nonzero) if nonzero else float(self.dps)

    @property
    def max_abs_at_zeros(self) -> float:
        zeros = [abs(r) for r, z in zip(self.reference, self.zero) if z]
        return float(max(zeros)) if zeros else 0.0


def verify_hermite(sigma, order: int, scale=1, digits: int | None = None) -> HermiteVerification:
    """Compute ``mu_p(sigma; r)`` by two independent routes and report the agreeing digits.

    With a closed form: symbolic value vs mpmath tanh–sinh quadrature. Without: mpmath tanh–sinh vs
    mpmath Gauss–Legendre quadrature. Precision is ``digits`` or the current ``mpmath.mp.dps``.

    Examples
    --------
    >>> check = verify_hermite("relu", 6, digits=30)
    >>> check.min_digits >= 29, check.max_abs_at_zeros < 1e-28
    (True, True)
    """
    sigma = activation(sigma)
    order = check_order(order)
    dps = mpmath.mp.dps if digits is None else int(digits)
    r = exact_scale(scale)
    with mpmath.workdps(dps):
        tanh_sinh = mpmath_hermite_coefficients(sigma, order, r)
        if sigma.has_closed_form:
            exact = tuple(exact_hermite_coefficients(sigma, order, r))
            value = tuple(mpmath.mpf(str(sympy.N(e, dps + 10))) for e in exact)
            reference = tuple(tanh_sinh)
            method = "exact (sympy) vs tanh-sinh quadrature (mpmath)"
        else:
            exact = (None,) * (order + 1)
            value = tuple(tanh_sinh)
            reference = tuple(_mp_quadrature(sigma, order, r, "gauss-legendre", 1))
            method = "tanh-sinh vs Gauss-Legendre quadrature (mpmath)"
        tiny = mpmath.mpf(10) ** (5 - dps)
        if sigma.has_closed_form:
            zero = tuple(e == 0 for e in exact)
        else:
            zero = tuple(abs(v) < tiny and abs(ref) < tiny for v, ref in zip(value, reference))
        agree = tuple(_zero_digits(ref, dps) if z else agreeing_digits(v, ref, dps) for z, v, ref in zip(zero, value, reference))
    return HermiteVerification(sigma.name, str(r), dps, method, exact, value, reference, agree, zero)


def information_exponent(sigma, scale=1, max_order: int = 30) -> int | None:
    """Smallest p ≥ 1 with ``mu_p(sigma) != 0`` (exact where a closed form exists), or None up to max_order.

    Examples
    --------
    >>> information_exponent("relu"), information_exponent("He_3"), information_exponent("quadratic")
    (1, 3, 2)
    """
    sigma = activation(sigma)
    if sigma.has_closed_form:
        coefficients = exact_hermite_coefficients(sigma, max_order, scale)
        for p in range(1, max_order + 1):
            if coefficients[p] != 0:
                return p
        return None
    r = float(exact_scale(scale))
    coefficients = hermite_coefficients(sigma, max_order, r)
    size = math.sqrt(max(second_moment(sigma, r), 1e-300))
    for p in range(1, max_order + 1):
        if abs(coefficients[p]) > 1e-12 * size:
            return p
    return None


def parseval_check(sigma, order: int, scale=1) -> dict:
    """Parseval: ``sum_{p<=P} mu_p^2`` against ``E[sigma(r g)^2]`` (mpmath at the working precision).

    Returns the partial sum, the second moment and the tail ``E[sigma^2] - sum`` (≥ 0 up to rounding; 0
    for polynomials once P reaches the degree).

    Examples
    --------
    >>> with precision(25):
    ...     check = parseval_check("He_3", 3)
    >>> bool(abs(check["tail"]) < 1e-20)
    True
    """
    sigma = activation(sigma)
    r_exact = exact_scale(scale)
    coefficients = mpmath_hermite_coefficients(sigma, order, r_exact)
    with mpmath.workdps(mpmath.mp.dps + 10):
        moment = _mp_second_moment(sigma, mpmath.mpf(str(sympy.N(r_exact, mpmath.mp.dps + 10))))
        partial = mpmath.fsum(c**2 for c in coefficients)
        tail = moment - partial
    return {"sum": +partial, "second_moment": +moment, "tail": +tail}
