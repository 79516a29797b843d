"""The arbitrary-precision reference route to Hermite coefficients, and the verification of the others.

* :func:`mpmath_hermite_coefficients` — tanh–sinh (or Gauss–Legendre) quadrature at ``mpmath.mp.dps``
  (set it with :func:`precision`) on panels split at kinks: independent of the closed forms.
* :func:`verify_hermite` — two independent routes and their agreeing significant digits.
* :func:`parseval_check` — ``sum mu_p^2`` against ``E[sigma(r g)^2]``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import mpmath
import sympy

from .._validation import InvalidArgument, check_integer, check_order
from ..gaussian.activations import Activation, activation
from ..gaussian.hermite import exact_hermite_coefficients, exact_scale
from ..gaussian.programs import mpmath_function

__all__ = ["mpmath_hermite_coefficients", "verify_hermite", "HermiteVerification", "parseval_check", "precision", "agreeing_digits"]


#: the largest order and precision :func:`verify_hermite` accepts (mpmath quadrature cost grows fast in both)
MAX_VERIFIED_ORDER, MAX_DIGITS = 200, 1000


@contextlib.contextmanager
def precision(digits: int):
    """Context manager setting mpmath's working precision (an alias of ``mpmath.workdps``).

    Parameters
    ----------
    digits : int
        Decimal digits.

    Returns
    -------
    context manager

    Examples
    --------
    >>> with precision(30):
    ...     str(mpmath_hermite_coefficients("relu", 1)[1])
    '0.5'
    """
    with mpmath.workdps(digits):
        yield


# ------------------------------------------------------------------------------------------------
# mpmath route
# ------------------------------------------------------------------------------------------------


def mpmath_hermite_coefficients(sigma, order: int, scale=1) -> list:
    """``mu_p(sigma; r)``, p = 0..order, as mpmath numbers at the working precision.

    Tanh–sinh quadrature of ``sigma(r g) h_p(g) phi(g)`` on panels of width 2 covering the region where
    the integrand exceeds 10^-(dps+10) (Cramér's bound |h_p(g)| phi(g)^(1/2) <= 1), split at kinks,
    with 20 guard digits. All orders share the integrand evaluations. Independent of the closed forms.

    Parameters
    ----------
    sigma : str or Activation
    order : int
    scale : number, default 1

    Returns
    -------
    list of mpmath.mpf

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
        cache: dict = {}  # one panel's nodes: the rows of all orders at a node are computed once

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

        # panel by panel (mpmath.quad treats the intervals between the points independently anyway), so
        # that the cache holds one panel's nodes: at 400 digits and order 30 all panels' rows took 2.5 GB
        results = [mpmath.mpf(0)] * (order + 1)
        for a, b in zip(edges[:-1], edges[1:]):
            cache.clear()
            for p in range(order + 1):
                results[p] += mpmath.quad(lambda g, p=p: row(g)[p], [a, b], method=method)
    return [+value for value in results]


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
    raise InvalidArgument("activation grows too fast for Gaussian quadrature (E[sigma(r g)^2] may not exist)")


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
    """Significant digits on which two numbers agree, capped at ``cap``; absolute for a zero reference.

    Parameters
    ----------
    value, reference : mpmath number or float
    cap : int
        The most digits reported (the working precision).

    Returns
    -------
    float
    """
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

    Attributes
    ----------
    activation : str
    scale : str
        The scale r, as given (exact).
    dps : int
        mpmath's working precision in decimal digits.
    method : str
        The two routes compared.
    exact : tuple
        Per order, a sympy expression or None.
    value, reference : tuple
        Per order, the two routes' mpmath values.
    digits : tuple of float
        Agreeing significant digits per order.
    zero : tuple of bool
        Orders whose coefficient is 0.
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

    Parameters
    ----------
    sigma : str or Activation
    order : int
        Highest order p (0 to 200).
    scale : number or str, default 1
        The scale r of mu_p(sigma; r) (exact rationals and square roots are kept exact).
    digits : int, optional
        Working precision in decimal digits (5 to 1000; default: mpmath's current precision). Cost grows
        about as digits^1.8 x order: order 30 at 200 digits takes ~25 s and 0.25 GB here.

    Returns
    -------
    HermiteVerification
        Both routes' values and their agreeing digits per order.

    Examples
    --------
    >>> check = verify_hermite("relu", 6, digits=30)
    >>> check.min_digits >= 29, check.max_abs_at_zeros < 1e-28
    (True, True)
    """
    sigma = activation(sigma)
    order = check_integer(order, "order", 0, MAX_VERIFIED_ORDER)
    dps = check_integer(mpmath.mp.dps if digits is None else digits, "digits", 5, MAX_DIGITS)
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


def parseval_check(sigma, order: int, scale=1) -> dict:
    """Parseval: ``sum_{p<=P} mu_p^2`` against ``E[sigma(r g)^2]`` (mpmath at the working precision).

    Returns the partial sum, the second moment and the tail ``E[sigma^2] - sum`` (≥ 0 up to rounding; 0
    for polynomials once P reaches the degree).

    Parameters
    ----------
    sigma, order, scale
        As in :func:`mpmath_hermite_coefficients`.

    Returns
    -------
    dict
        ``sum``, ``second_moment`` and ``tail`` (mpmath numbers).

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
