"""Hermite coefficients ``mu_p(sigma; r) = E[sigma(r g) h_p(g)]``, ``g ~ N(0, 1)``, by three routes.

* :func:`exact_hermite_coefficients` — sympy closed forms, owned by each activation's family
  (:mod:`popgrad.gaussian.families`): polynomials (Gaussian moments), the ReLU family (homogeneous in r),
  step, and the Stein route ``mu_p(sigma; r) = r^p E[sigma^(p)(r g)] / sqrt(p!)`` (erf, gelu).
* :func:`hermite_coefficients` — float64, composite Gauss–Legendre quadrature on panels of width 1/2
  split at every kink, all orders at once through the stable three-term recurrence of
  ``h_p(g) phi(g)``. Works for every activation; it never uses the closed forms.
The arbitrary-precision reference route and the verification live in :mod:`popgrad.reference.hermite`.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import sympy

from .._validation import MAX_ORDER, InvalidArgument, check_integer, check_order, check_scale
from .activations import Activation, activation
from .families import NoClosedForm

__all__ = [
    "exact_hermite_coefficients",
    "hermite_coefficients",
    "hermite_recurrence",
    "second_moment",
    "information_exponent",
    "exact_scale",
    "NoClosedForm",
]


def exact_scale(scale) -> sympy.Expr:
    """The scale r as an exact sympy number: floats are read by their shortest repr (1.7 -> 17/10).

    Parameters
    ----------
    scale : int, float, str or sympy number
        Positive.

    Returns
    -------
    sympy.Expr
    """
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

    Returns
    -------
    list of sympy expressions
        mu_0 .. mu_order.

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
    family = sigma.family_spec
    if not family.exact:
        raise NoClosedForm(f"activation {sigma.name!r} has no closed-form Hermite coefficients; use float64 or mpmath")
    return family.coefficients(sigma, order, r)


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

    Parameters
    ----------
    g : ndarray
        Points.
    order : int
        Highest order.

    Returns
    -------
    ndarray, shape (order + 1, len(g))

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

    Parameters
    ----------
    sigma : str or Activation
    order : int
        Highest order p (0 to 2000).
    scale : float, default 1
        The scale r > 0.

    Returns
    -------
    numpy.ndarray
        mu_0 .. mu_order in float64.

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
        raise InvalidArgument(f"activation {sigma.name!r} is not finite on the Gaussian's support at scale {scale}")
    return hermite_recurrence(nodes, order) @ (values * weights)


def second_moment(sigma, scale: float = 1.0, derivative: bool = False) -> float:
    """``E[sigma(r g)^2]`` (or ``E[sigma'(r g)^2]``) in float64 by the same quadrature.

    Parameters
    ----------
    sigma : str or Activation
    scale : float, default 1
    derivative : bool, default False

    Returns
    -------
    float
    """
    sigma = activation(sigma)
    nodes, weights = _quadrature_nodes(sigma, check_scale(scale))
    values = sigma.prime(scale * nodes) if derivative else sigma(scale * nodes)
    return float(values**2 @ weights)


def information_exponent(sigma, scale=1, max_order: int = 30) -> int | None:
    """Smallest p ≥ 1 with ``mu_p(sigma) != 0``, or None up to ``max_order`` (up to the degree for a
    polynomial, whose exponent can exceed it: He_64 has 64).

    Exact where a closed form exists. Otherwise mu_p counts as zero when the quadrature of
    ``sigma(r g) h_p(g)`` cancels to 1e-10 of the integral of its absolute value: cancellation, not size,
    decides (for exp(10 z) every mu_p is nonzero, though mu_1 is 1e-40 of the norm of sigma).

    Parameters
    ----------
    sigma : str or Activation
    scale : number, default 1
    max_order : int, default 30
        Highest order examined (polynomials: their degree when larger).

    Returns
    -------
    int or None
        The information exponent, or None when every mu_p vanishes up to the order examined.

    Examples
    --------
    >>> information_exponent("relu"), information_exponent("He_3"), information_exponent("He_64")
    (1, 3, 64)
    >>> information_exponent("exp(10*z)"), information_exponent("cos(z)")
    (1, 2)
    """
    sigma = activation(sigma)
    max_order = check_integer(max_order, "max_order", 0, MAX_ORDER)
    if sigma.has_closed_form:
        polynomial = sigma.polynomial_coefficients
        order = max(max_order, len(polynomial) - 1) if polynomial is not None else max_order
        coefficients = exact_hermite_coefficients(sigma, order, scale)
        for p in range(1, order + 1):
            if coefficients[p] != 0:
                return p
        return None
    r = float(exact_scale(scale))
    nodes, weights = _quadrature_nodes(sigma, r)
    basis = hermite_recurrence(nodes, max_order) * sigma(r * nodes)
    signed, absolute = basis @ weights, np.abs(basis) @ weights
    for p in range(1, max_order + 1):
        if abs(signed[p]) > 1e-10 * absolute[p]:
            return p
    return None
