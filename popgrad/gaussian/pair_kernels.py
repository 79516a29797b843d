"""Two-activation kernels ``K_{s1 s2}(Sigma) = E[s1(X) s2(Y)]``, (X, Y) ~ N(0, Sigma), with an error per entry.

Sigma is any 2×2 covariance (the two variances are the two scales; either may be 0, as for a student
started at zero). Routes, chosen by what the two activations are (:func:`pair_form`):

* ``A erf(c z)`` with ``A' erf(c' z)`` (erf, ``erf(z/sqrt(2))``, any amplitude and inner scale):
  ``A A' (2/pi) arcsin(2 c c' S12 / sqrt((1 + 2 c^2 S11)(1 + 2 c'^2 S22)))``;
* piecewise linear ``alpha z + beta relu(z)`` pairs (relu, leaky_relu, abs, ``relu(2*z)``, ``z + 2*abs(z)``):
  Stein for the linear parts (``E[X relu(Y)] = S12/2``) and the arc-cosine kernel for ``relu x relu``;
* a polynomial with anything: the Hermite series is finite (degree q), so
  ``sum_{p<=q} mu_p(s1; sqrt S11) mu_p(s2; sqrt S22) rho^p`` is exact (linear: Stein);
* otherwise the Hermite series with the rigorous tail bound ``|rho|^(P+1) sqrt(T1 T2)`` of
  :mod:`popgrad.gaussian.kernels`; where that bound exceeds the tolerance (kinked pairs near |rho| = 1),
  composite Gauss–Legendre 2-D quadrature at two resolutions, split at the kinks, whose difference is the
  error estimate.

Closed forms and finite series report a rounding-level error (``1e-14`` of the sizes involved).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy

from .._validation import InvalidArgument
from .activations import Activation, activation
from .expressions import Z
from .hermite import hermite_coefficients, second_moment

__all__ = ["PairForm", "pair_form", "PairKernel", "pair_kernel", "polynomial_hermite_coefficients", "scaled_hermite_coefficients"]

#: relative rounding level reported for closed forms and finite series
ROUNDING = 1e-14
#: the series is accepted where its tail bound is below this (relative to sqrt(E[s1^2] E[s2^2]))
SERIES_TOLERANCE = 1e-11
SERIES_ORDER = 200
_QUADRATURE_HALF_WIDTH = 11.0


@dataclass(frozen=True)
class PairForm:
    """How an activation enters the pair kernels.

    Attributes
    ----------
    kind : str
        ``erf`` (``amplitude * erf(inner * z)``), ``piecewise_linear`` (``alpha z + beta relu(z)``),
        ``polynomial`` (``coefficients``, lowest first) or ``general``.
    activation : Activation
    amplitude, inner : float
        erf: ``sigma(z) = amplitude * erf(inner * z)``.
    alpha, beta : float
        piecewise linear: ``sigma(z) = alpha z + beta relu(z)``.
    coefficients : tuple of float
        polynomial: monomial coefficients a_0..a_q.
    """

    kind: str
    activation: Activation
    amplitude: float = 0.0
    inner: float = 0.0
    alpha: float = 0.0
    beta: float = 0.0
    coefficients: tuple = ()

    @property
    def degree(self) -> int:
        return len(self.coefficients) - 1


def _number(expression) -> float | None:
    expression = sympy.nsimplify(expression) if expression.has(sympy.Float) else expression
    if expression.free_symbols or not expression.is_number or not expression.is_real:
        return None
    return float(expression)


def _erf_form(expression) -> tuple | None:
    """(A, c) with ``expression == A erf(c z)``, or None."""
    atoms = expression.atoms(sympy.erf)
    if len(atoms) != 1:
        return None
    node = atoms.pop()
    argument = sympy.expand(node.args[0])
    if not argument.is_polynomial(Z) or sympy.Poly(argument, Z).degree() != 1 or argument.subs(Z, 0) != 0:
        return None
    inner = _number(sympy.diff(argument, Z))
    amplitude = sympy.simplify(expression / node)
    amplitude = _number(amplitude) if Z not in amplitude.free_symbols else None
    if inner is None or amplitude is None or inner == 0.0 or amplitude == 0.0:
        return None
    return amplitude, inner


def _piecewise_linear_form(expression) -> tuple | None:
    """(alpha, beta) with ``expression == alpha z + beta relu(z)``, or None (``gamma |z| = gamma (2 relu(z) - z)``)."""
    expanded = sympy.expand(expression)
    gamma = expanded.coeff(sympy.Abs(Z))
    rest = sympy.expand(expanded - gamma * sympy.Abs(Z))
    gamma = _number(gamma) if gamma != 0 else 0.0
    if gamma is None or gamma == 0.0 or not rest.is_polynomial(Z):
        return None
    if rest != 0 and (sympy.Poly(rest, Z).degree() > 1 or rest.subs(Z, 0) != 0):
        return None
    alpha = _number(sympy.diff(rest, Z)) if rest != 0 else 0.0
    if alpha is None:
        return None
    return alpha - gamma, 2.0 * gamma


@lru_cache(maxsize=256)
def _form(sigma: Activation) -> PairForm:
    if sigma.family == "erf":
        return PairForm("erf", sigma, amplitude=1.0, inner=1.0)
    if sigma.family in ("relu", "leaky_relu", "abs"):
        return PairForm("piecewise_linear", sigma, alpha=sigma.slope, beta=1.0 - sigma.slope)
    if sigma.family == "polynomial":
        return PairForm("polynomial", sigma, coefficients=tuple(float(c) for c in sigma.polynomial_coefficients))
    found = _erf_form(sigma.expression)
    if found is not None:
        return PairForm("erf", sigma, amplitude=found[0], inner=found[1])
    found = _piecewise_linear_form(sigma.expression)
    if found is not None:
        return PairForm("piecewise_linear", sigma, alpha=found[0], beta=found[1])
    return PairForm("general", sigma)


def pair_form(sigma) -> PairForm:
    """Recognise the closed-form shape of an activation for the pair kernels.

    ``erf(z/sqrt(2))`` parses to a generic expression (family ``numeric``); it is recognised here as
    ``erf(c z)`` with ``c = 1/sqrt(2)``, and any ``A erf(c z)`` likewise. ``relu(2*z)`` and
    ``z + 2*abs(z)`` are piecewise linear.

    Parameters
    ----------
    sigma : str or Activation

    Returns
    -------
    PairForm

    Examples
    --------
    >>> f = pair_form("erf(z/sqrt(2))")
    >>> f.kind, f.amplitude, round(f.inner, 12)
    ('erf', 1.0, 0.707106781187)
    >>> g = pair_form("relu(2*z)")
    >>> g.kind, g.alpha, g.beta
    ('piecewise_linear', 0.0, 2.0)
    >>> pair_form("tanh").kind
    'general'
    """
    return _form(activation(sigma))


@dataclass(frozen=True)
class PairKernel:
    """Kernel values with an error per entry.

    Attributes
    ----------
    value : ndarray
    error : ndarray
        Rounding level for closed forms and finite series, the rigorous tail bound for the Hermite
        series, the two-resolution difference for quadrature.
    route : str
        The routes used, joined by ``+`` (``erf``, ``piecewise_linear``, ``finite_series``, ``series``,
        ``quadrature``).
    """

    value: np.ndarray
    error: np.ndarray
    route: str


def _check_covariance(sigma_matrix) -> np.ndarray:
    matrix = np.asarray(sigma_matrix, dtype=np.float64)
    if matrix.ndim < 2 or matrix.shape[-2:] != (2, 2):
        raise InvalidArgument(f"Sigma must have shape (..., 2, 2), got {matrix.shape}", "Sigma")
    if not np.all(np.isfinite(matrix)):
        raise InvalidArgument("Sigma must be finite", "Sigma")
    s11, s22, s12, s21 = matrix[..., 0, 0], matrix[..., 1, 1], matrix[..., 0, 1], matrix[..., 1, 0]
    size = np.maximum(np.abs(s11) + np.abs(s22), 1e-300)
    if np.any(np.abs(s12 - s21) > 1e-12 * size):
        raise InvalidArgument("Sigma must be symmetric", "Sigma")
    if np.any(s11 < 0) or np.any(s22 < 0) or np.any(s12 * s12 > s11 * s22 * (1 + 1e-9) + 1e-14 * size**2):
        raise InvalidArgument("Sigma must be positive semi-definite (variances >= 0, S12^2 <= S11 S22)", "Sigma")
    return matrix


def _correlation(s11, s22, s12):
    scale = np.sqrt(s11 * s22)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(scale > 0, s12 / np.where(scale > 0, scale, 1.0), 0.0)
    return np.clip(rho, -1.0, 1.0)


def _erf_pair(f1: PairForm, f2: PairForm, s11, s22, s12):
    c1, c2 = f1.inner, f2.inner
    argument = 2 * c1 * c2 * s12 / np.sqrt((1 + 2 * c1 * c1 * s11) * (1 + 2 * c2 * c2 * s22))
    value = f1.amplitude * f2.amplitude * 2 / math.pi * np.arcsin(np.clip(argument, -1.0, 1.0))
    return value, ROUNDING * (np.abs(value) + abs(f1.amplitude * f2.amplitude))


def _arccos_kernel(rho):
    return (np.sqrt(1 - rho * rho) + (math.pi - np.arccos(rho)) * rho) / (2 * math.pi)


def _piecewise_linear_pair(f1: PairForm, f2: PairForm, s11, s22, s12):
    rho = _correlation(s11, s22, s12)
    linear = (f1.alpha * f2.alpha + 0.5 * (f1.alpha * f2.beta + f1.beta * f2.alpha)) * s12
    value = linear + f1.beta * f2.beta * np.sqrt(s11 * s22) * _arccos_kernel(rho)
    size = (abs(f1.alpha) + abs(f1.beta)) * (abs(f2.alpha) + abs(f2.beta)) * np.sqrt(s11 * s22)
    return value, ROUNDING * (np.abs(value) + size)


def polynomial_hermite_coefficients(coefficients, order: int, scale: float) -> np.ndarray:
    """``mu_p(P; r)`` for p = 0..order of ``P(z) = sum_n a_n z^n`` in float64 (Gaussian moments:
    ``E[g^n He_p(g)] = n! / (((n-p)/2)! 2^((n-p)/2))`` for n ≥ p of the parity of p).

    Parameters
    ----------
    coefficients : sequence of float
        a_0..a_q.
    order : int
    scale : float
        r ≥ 0.

    Returns
    -------
    ndarray, shape (order + 1,)

    Examples
    --------
    >>> polynomial_hermite_coefficients([0.0, 0.0, 1.0], 2, 1.0).round(12).tolist()  # z^2 = 1 + sqrt(2) h_2
    [1.0, 0.0, 1.414213562373]
    """
    out = np.zeros(order + 1)
    for p in range(order + 1):
        total = 0.0
        for n, a in enumerate(coefficients):
            if a == 0 or n < p or (n - p) % 2:
                continue
            half = (n - p) // 2
            total += a * scale**n * math.factorial(n) / (math.factorial(half) * 2.0**half)
        out[p] = total / math.sqrt(math.factorial(p))
    return out


def scaled_hermite_coefficients(form: PairForm, order: int, scale: float) -> np.ndarray:
    """``mu_p(sigma; r)``, p ≤ order, for r ≥ 0 (r = 0: ``sigma(0)`` then zeros); polynomials exactly,
    everything else by the float64 quadrature of :func:`popgrad.gaussian.hermite.hermite_coefficients`.

    Parameters
    ----------
    form : PairForm
    order : int
    scale : float
        r >= 0.

    Returns
    -------
    ndarray (order + 1,)
    """
    if form.kind == "polynomial":
        return polynomial_hermite_coefficients(form.coefficients, order, scale)
    if scale == 0.0:
        out = np.zeros(order + 1)
        out[0] = float(form.activation(np.array([0.0]))[0])
        return out
    return hermite_coefficients(form.activation, order, scale)


def _finite_series(f1: PairForm, f2: PairForm, s11, s22, s12):
    order = min(f.degree for f in (f1, f2) if f.kind == "polynomial")
    rho = _correlation(s11, s22, s12)
    r1, r2 = np.sqrt(s11), np.sqrt(s22)
    pairs, index = np.unique(np.stack([r1, r2]), axis=1, return_inverse=True)
    index = np.asarray(index).ravel()
    products = np.array([scaled_hermite_coefficients(f1, order, a) * scaled_hermite_coefficients(f2, order, b) for a, b in pairs.T])[index]
    powers = rho[:, None] ** np.arange(order + 1)
    terms = products * powers
    return terms.sum(axis=1), 1e-13 * np.abs(terms).sum(axis=1) + 1e-300


def _second_moment(form: PairForm, scale: float) -> float:
    if scale == 0.0:
        return float(form.activation(np.array([0.0]))[0]) ** 2
    return second_moment(form.activation, scale)


@lru_cache(maxsize=4096)
def _series_side(form: PairForm, scale: float) -> tuple:
    """The series' coefficients of one side at one scale, its second moment and tail (cached: a
    trajectory's states share the teacher's scales, and a state's pairs the students')."""
    mu = scaled_hermite_coefficients(form, SERIES_ORDER, scale)
    mu.setflags(write=False)
    moment = _second_moment(form, scale)
    return mu, moment, max(moment - float(mu @ mu), 0.0)


def _series(f1: PairForm, f2: PairForm, s11: float, s22: float, s12: float) -> tuple:
    r1, r2 = math.sqrt(s11), math.sqrt(s22)
    rho = float(_correlation(np.array(s11), np.array(s22), np.array(s12)))
    mu1, e1, tail1 = _series_side(f1, r1)
    mu2, e2, tail2 = _series_side(f2, r2)
    terms = mu1 * mu2 * rho ** np.arange(SERIES_ORDER + 1)
    bound = abs(rho) ** (SERIES_ORDER + 1) * math.sqrt(tail1 * tail2) + 1e-13 * math.sqrt(e1 * e2)
    return float(terms.sum()), bound, math.sqrt(e1 * e2)


_GL16 = np.polynomial.legendre.leggauss(16)


def _composite_rule(edges: np.ndarray) -> tuple:
    """Gauss–Legendre nodes and weights on the panels between consecutive ``edges`` (last axis)."""
    a, b = edges[..., :-1, None], edges[..., 1:, None]
    nodes = 0.5 * (b - a) * _GL16[0] + 0.5 * (a + b)
    weights = 0.5 * (b - a) * _GL16[1]
    shape = edges.shape[:-1] + (-1,)
    return nodes.reshape(shape), weights.reshape(shape)


def _kinked_edges(kinks: np.ndarray, panels: int) -> np.ndarray:
    """Panel edges on [-L, L] with the kinks (last axis; clipped into the interval) added, sorted per row."""
    half = _QUADRATURE_HALF_WIDTH
    base = np.broadcast_to(np.linspace(-half, half, panels + 1), kinks.shape[:-1] + (panels + 1,))
    return np.sort(np.concatenate([base, np.clip(kinks, -half, half)], axis=-1), axis=-1)


def _quadrature_at(f1: PairForm, f2: PairForm, s11: float, s22: float, s12: float, panels: int) -> float:
    """X = r1 g1, Y = r2 (rho g1 + co g2): the outer rule is split at the kinks of s1 and where the mean of Y
    meets a kink of s2, the inner rule at the kinks of s2."""
    r1, r2 = math.sqrt(s11), math.sqrt(s22)
    rho = float(_correlation(np.array(s11), np.array(s22), np.array(s12)))
    co = math.sqrt(max(0.0, 1 - rho * rho))
    k1 = [k / r1 for k in f1.activation.breakpoints] if r1 > 0 else []
    # where the conditional mean of Y crosses a kink of s2, the inner integral bends sharply when co is small
    # (a smooth bend of width ~co: graded edges at co 4^j on both sides resolve it)
    crossings = [k / (r2 * rho) for k in f2.activation.breakpoints] if r2 > 0 and rho != 0 else []
    grading = [co * 4.0**j for j in range(12) if co * 4.0**j < 0.5] if co > 0 else []
    k1 += [c + sign * g for c in crossings for g in grading for sign in (-1.0, 1.0)] + crossings
    k1 = np.array(k1, dtype=np.float64)
    outer, outer_w = _composite_rule(_kinked_edges(k1, panels))
    mean = rho * outer
    k2 = np.array(f2.activation.breakpoints, dtype=np.float64)
    if co > 0 and r2 > 0 and k2.size:
        kinks = (k2[None, :] / r2 - mean[:, None]) / co
    else:
        kinks = np.zeros((outer.size, 0))
    inner, inner_w = _composite_rule(_kinked_edges(kinks, panels))
    gauss = np.exp(-0.5 * inner * inner) / math.sqrt(2 * math.pi)
    values2 = f2.activation(r2 * (mean[:, None] + co * inner))
    conditional = np.sum(values2 * inner_w * gauss, axis=1)
    outer_gauss = np.exp(-0.5 * outer * outer) / math.sqrt(2 * math.pi)
    return float(np.sum(f1.activation(r1 * outer) * conditional * outer_w * outer_gauss))


def _quadrature(f1: PairForm, f2: PairForm, s11: float, s22: float, s12: float) -> tuple:
    coarse = _quadrature_at(f1, f2, s11, s22, s12, 44)
    fine = _quadrature_at(f1, f2, s11, s22, s12, 88)
    return fine, abs(fine - coarse) + 1e-14 * abs(fine)


def pair_kernel(sigma1, sigma2, Sigma) -> PairKernel:
    """``K_{s1 s2}(Sigma) = E[s1(X) s2(Y)]`` for (X, Y) ~ N(0, Sigma), over leading axes of Sigma.

    Parameters
    ----------
    sigma1, sigma2 : str or Activation
    Sigma : array_like, shape (..., 2, 2)
        Symmetric positive semi-definite covariances (zero variances allowed).

    Returns
    -------
    PairKernel
        ``value`` and ``error`` of shape ``Sigma.shape[:-2]``.

    Raises
    ------
    InvalidArgument
        For a Sigma of the wrong shape, not symmetric or not PSD.

    Examples
    --------
    >>> k = pair_kernel("erf(z/sqrt(2))", "erf(z/sqrt(2))", [[1.0, 0.5], [0.5, 1.0]])
    >>> round(float(k.value), 12), k.route  # (2/pi) arcsin(1/4)
    (0.16086124651, 'erf')
    >>> round(float(pair_kernel("relu", "linear", [[2.0, 1.0], [1.0, 1.0]]).value), 12)  # S12 E[step]
    0.5
    >>> k = pair_kernel("tanh", "relu", [[1.0, 0.3], [0.3, 2.0]])
    >>> k.route, bool(k.error < 1e-10)
    ('series', True)
    """
    f1, f2 = pair_form(sigma1), pair_form(sigma2)
    matrix = _check_covariance(Sigma)
    shape = matrix.shape[:-2]
    flat = matrix.reshape(-1, 2, 2)
    s11, s22, s12 = flat[:, 0, 0], flat[:, 1, 1], 0.5 * (flat[:, 0, 1] + flat[:, 1, 0])
    if f1.kind == f2.kind == "erf":
        value, error = _erf_pair(f1, f2, s11, s22, s12)
        route = "erf"
    elif f1.kind == f2.kind == "piecewise_linear":
        value, error = _piecewise_linear_pair(f1, f2, s11, s22, s12)
        route = "piecewise_linear"
    elif "polynomial" in (f1.kind, f2.kind):
        value, error = _finite_series(f1, f2, s11, s22, s12)
        route = "finite_series"
    else:
        value, error, routes = np.empty(len(s11)), np.empty(len(s11)), set()
        cache = {}
        for n, key in enumerate(zip(s11.tolist(), s22.tolist(), s12.tolist())):
            if key not in cache:
                v, e, size = _series(f1, f2, *key)
                if e <= SERIES_TOLERANCE * max(size, 1e-300):
                    cache[key] = (v, e, "series")
                else:
                    cache[key] = _quadrature(f1, f2, *key) + ("quadrature",)
            value[n], error[n], r = cache[key]
            routes.add(r)
        route = "+".join(sorted(routes))
    return PairKernel(value.reshape(shape), error.reshape(shape), route)
