"""Population quantities of the rank-1 fine-tuning problem (Proposition 4 and MATH.md §3).

For u_hat ⟂ span(W) the population loss depends on u_hat only through ``m = <u, u_hat>``, and its
spherical gradient is ``-h(m) (u - m u_hat)``. In general form (per-neuron norms ``r_i``, ``r_hat_j``
and scales ``s_i``, ``s_hat_j``, see :mod:`popgrad.model`)::

    rho_ij(m) = (G_ij + xi^2 c_i c_hat_j m) / (r_i r_hat_j)
    Phi(m)    = sum_ij lam_i lam_j [K(s_i, s_j, rho^tt_ij) - 2 K(s_i, s_hat_j, rho_ij(m)) + K(s_hat_i, s_hat_j, rho^ss_ij)]
    h(m)      = -Phi'(m) = 2 xi^2 sum_ij lam_i lam_j c_i c_hat_j s_i s_hat_j / (r_i r_hat_j) K'(s_i, s_hat_j, rho_ij(m))

which reduces to MATH.md's ``(2 xi^2 / r^2) sum lam lam c c_hat kappa'((G + xi^2 c c_hat m) / r^2)`` for
quantized c and unit rows (normalized), and to ``h_raw = r^2 h_normalized`` for relu.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import sympy
from numba import njit
from scipy import optimize, special

from ..._validation import InvalidArgument, check_integer, check_real, check_unit_interval
from ...gaussian.activations import activation
from ...gaussian.families.fast import closed_kernel
from ...gaussian.hermite import exact_hermite_coefficients, hermite_coefficients
from ...gaussian.kernels import KernelSpec, hermite_series, kernel_spec
from ...numerics.chebyshev import PiecewiseChebyshev, chebyshev_interpolant
from .spec import FineTuningProblem, orthonormal_problem

__all__ = [
    "population_drift",
    "population_loss",
    "population_loss_derivative",
    "drift_series",
    "moment_tensor",
    "paper_drift_series",
    "symbolic_drift",
    "drift_interpolant",
    "DriftInterpolant",
    "drift_fixed_points",
    "FixedPoints",
    "glm_drift",
    "lemma6_frequency",
]


@njit(cache=True)
def _pair_sum(m, weight, offset, slope, scale_a, scale_b, row_a, row_b, code, parameter, derivative, coefficients_a, coefficients_b):
    """``sum_p weight_p K(scale_a_p, scale_b_p, offset_p + slope_p m)`` for each m, over merged pairs p."""
    out = np.empty(m.shape[0])
    for n in range(m.shape[0]):
        total = 0.0
        for p in range(weight.shape[0]):
            rho = offset[p] + slope[p] * m[n]
            total += weight[p] * closed_kernel(code, parameter, derivative, scale_a[p], scale_b[p], rho, coefficients_a[row_a[p]], coefficients_b[row_b[p]])
        out[n] = total
    return out


@dataclass(frozen=True)
class _Pairs:
    """Neuron pairs (i, j) with identical (offset, slope, scales) merged and their weights summed: with
    quantized c and orthonormal features the k^2 pairs collapse to a handful of distinct kernels."""

    weight: np.ndarray
    offset: np.ndarray
    slope: np.ndarray
    scale_a: np.ndarray
    scale_b: np.ndarray
    row_a: np.ndarray
    row_b: np.ndarray

    @classmethod
    def merge(cls, weight, offset, slope, scale_a, scale_b) -> "_Pairs":
        rows, columns = np.meshgrid(np.arange(weight.shape[0]), np.arange(weight.shape[1]), indexing="ij")
        rows, columns = rows.ravel(), columns.ravel()
        keys = np.column_stack([offset.ravel(), slope.ravel(), scale_a[rows], scale_b[columns]])
        unique, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        summed = np.zeros(len(unique))
        np.add.at(summed, inverse.ravel(), weight.ravel())
        keep = summed != 0.0
        return cls(summed[keep], unique[keep, 0], unique[keep, 1], unique[keep, 2], unique[keep, 3], rows[first][keep], columns[first][keep])

    def sum(self, m, spec_a: KernelSpec, spec_b: KernelSpec) -> np.ndarray:
        return _pair_sum(m, self.weight, self.offset, self.slope, self.scale_a, self.scale_b, self.row_a, self.row_b, spec_a.code, spec_a.parameter, spec_a.derivative, spec_a.coefficients, spec_b.coefficients)


@dataclass(frozen=True, eq=False)
class _Geometry:
    """The teacher–student pairs of h (built with the geometry) and of Phi (built on first use, since h
    alone — ODEs, Lemma 6 — never needs the value kernels)."""

    problem: FineTuningProblem
    offset: np.ndarray
    slope: np.ndarray
    weight_drift: np.ndarray
    drift: _Pairs
    teacher: KernelSpec
    student: KernelSpec

    @cached_property
    def loss(self) -> tuple:
        """``(pairs, constant, teacher kernels, student kernels)`` of Phi(m) = constant + pairs(m)."""
        problem = self.problem
        r_t, r_s = problem.teacher_norms, problem.student_norms
        s_t, s_s = problem.teacher_scales, problem.student_scales
        lam2 = np.outer(problem.lam, problem.lam)
        xi2 = problem.xi**2
        teacher = kernel_spec(problem.activation, s_t, derivative=False)
        student = kernel_spec(problem.activation, s_s, derivative=False)
        zero = np.zeros(1)
        tt = np.clip((problem.gram + xi2 * np.outer(problem.c, problem.c)) / np.outer(r_t, r_t), -1, 1)
        ss = np.clip((problem.gram + xi2 * np.outer(problem.c_hat, problem.c_hat)) / np.outer(r_s, r_s), -1, 1)
        flat = np.zeros_like(tt)
        constant = float(
            _Pairs.merge(lam2, tt, flat, s_t, s_t).sum(zero, teacher, teacher)[0]
            + _Pairs.merge(lam2, ss, flat, s_s, s_s).sum(zero, student, student)[0]
        )
        return _Pairs.merge(-2 * lam2, self.offset, self.slope, s_t, s_s), constant, teacher, student


@lru_cache(maxsize=32)
def _geometry(problem: FineTuningProblem) -> _Geometry:
    r_t, r_s = problem.teacher_norms, problem.student_norms
    s_t, s_s = problem.teacher_scales, problem.student_scales
    norms = np.outer(r_t, r_s)
    offset = problem.gram / norms
    slope = problem.xi**2 * np.outer(problem.c, problem.c_hat) / norms
    weight_drift = 2 * problem.xi**2 * np.outer(problem.lam, problem.lam) * np.outer(problem.c, problem.c_hat) * np.outer(s_t, s_s) / norms
    teacher = kernel_spec(problem.activation, s_t, derivative=True)
    student = kernel_spec(problem.activation, s_s, derivative=True)
    return _Geometry(problem, offset, slope, weight_drift, _Pairs.merge(weight_drift, offset, slope, s_t, s_s), teacher, student)


def _check_m(m) -> np.ndarray:
    return check_unit_interval(m, "m")


def population_drift(problem: FineTuningProblem, m) -> np.ndarray:
    """``h(m)``: the population gradient is ``-h(m) (u - m u_hat)`` (direct evaluation, O(k^2) kernels).

    Examples
    --------
    >>> problem = orthonormal_problem("relu", k=4, xi=1.0, seed=3)
    >>> np.round(population_drift(problem, [0.0, 0.5, 1.0]), 10).tolist()
    [-0.6361337882, -0.5209310781, -0.4100400913]
    """
    m = _check_m(m)
    g = _geometry(problem)
    return g.drift.sum(m.ravel(), g.teacher, g.student).reshape(m.shape)


def population_loss(problem: FineTuningProblem, m) -> np.ndarray:
    """``Phi(m) = E[(f*(x) - f_hat(x))^2]`` including the m-independent terms.

    Examples
    --------
    >>> problem = orthonormal_problem("relu", k=4, xi=1.0, seed=3)
    >>> bool(population_loss(problem, 0.3) >= 0)
    True
    """
    m = _check_m(m)
    pairs, constant, teacher, student = _geometry(problem).loss
    return (constant + pairs.sum(m.ravel(), teacher, student)).reshape(m.shape)


def population_loss_derivative(problem: FineTuningProblem, m) -> np.ndarray:
    """``Phi'(m) = -h(m)``."""
    return -population_drift(problem, m)


# ------------------------------------------------------------------------------------------------
# power series in m
# ------------------------------------------------------------------------------------------------


def drift_series(problem: FineTuningProblem, terms: int, order: int = 120) -> np.ndarray:
    """Coefficients ``a_l`` (l < terms) of ``h(m) = sum_l a_l m^l`` from the Hermite series of K'.

    ``(G + xi^2 c c_hat m)^q`` is expanded binomially: ``a_l = sum_ij w_ij sum_{q>=l} kappa_q binom(q, l)
    offset^(q-l) slope^l``, with K' truncated at ``order``. General c, rows and conventions.
    """
    terms = check_integer(terms, "terms", 1, 200)
    order = check_integer(order, "order", terms, 4000)
    g = _geometry(problem)
    teacher, _, _ = hermite_series(problem.activation, problem.teacher_scales, True, order)
    student, _, _ = hermite_series(problem.activation, problem.student_scales, True, order)
    q = np.arange(order + 1)
    out = np.zeros(terms)
    for i in range(problem.k):
        for j in range(problem.k):
            kappa = teacher[i] * student[j]
            for l in range(terms):
                binomial = special.comb(q[l:], l)
                out[l] += g.weight_drift[i, j] * np.sum(kappa[l:] * binomial * g.offset[i, j] ** (q[l:] - l)) * g.slope[i, j] ** l
    return out


def moment_tensor(problem: FineTuningProblem, l: int, s: int) -> float:
    """Proposition 4's ``T(l, s)``: ``||sum_i lam_i w_i^{⊗s}||^2 = sum_ij lam_i lam_j G_ij^s`` for odd l,
    ``k <sum lam_i c_i w_i^{⊗s}, sum lam_i c_hat_i w_i^{⊗s}> = k sum_ij lam_i lam_j c_i c_hat_j G_ij^s`` for even l."""
    lam, gram = problem.lam, problem.gram
    power = gram**s
    if l % 2:
        return float(lam @ power @ lam)
    return float(problem.k * (lam * problem.c) @ power @ (lam * problem.c_hat))


def paper_drift_series(problem: FineTuningProblem, terms: int, order: int = 120) -> np.ndarray:
    """Proposition 4's expansion ``h(m) = 2 sum_l (xi^2/k)^(l+1) (sum_s binom(l+s, l) (l+s+1)
    mu_{l+s+1}^2 r^(-2(l+s+1)) T(l, s)) m^l``. Needs Assumptions 1 and 3 (unit rows, quantized c) and the
    normalized convention; independent of :func:`drift_series` (moment tensors instead of pairs)."""
    if not (problem.quantized and problem.unit_rows and problem.convention == "normalized"):
        raise InvalidArgument("paper_drift_series needs quantized c, c_hat, unit rows and the normalized convention")
    k, xi = problem.k, problem.xi
    r2 = 1 + xi**2 / k
    mu = hermite_coefficients(problem.activation, order + 1)
    out = np.zeros(terms)
    for l in range(terms):
        total = 0.0
        for s in range(order - l + 1):
            p = l + s + 1
            total += special.comb(l + s, l) * p * mu[p] ** 2 * r2 ** (-p) * moment_tensor(problem, l, s)
        out[l] = 2 * (xi**2 / k) ** (l + 1) * total
    return out


# ------------------------------------------------------------------------------------------------
# symbolic h
# ------------------------------------------------------------------------------------------------


def _exact_number(value: float, k: int) -> sympy.Expr:
    """A float as an exact number when it is one of the simple forms the constructors produce."""
    for candidate in (sympy.nsimplify(value, rational=True, tolerance=1e-15), sympy.nsimplify(value * math.sqrt(k), rational=True, tolerance=1e-15) / sympy.sqrt(k)):
        if abs(float(candidate) - value) <= 1e-15 * max(1.0, abs(value)) and (candidate.is_Rational or (candidate * sympy.sqrt(k)).is_Rational):
            if len(str(candidate)) <= 24:
                return candidate
    return sympy.Float(value, 17)


def _symbolic_kernel_derivative(sigma, rho, s1, s2, terms: int):
    """K'(s1, s2, rho) in sympy: closed form where known, else the Hermite series truncated at ``terms``."""
    pi = sympy.pi
    if sigma.family == "relu":
        return (pi - sympy.acos(rho)) / (2 * pi), True
    if sigma.family == "leaky_relu":
        a = sympy.nsimplify(sigma.slope, rational=True)
        return a + (1 - a) ** 2 * (pi - sympy.acos(rho)) / (2 * pi), True
    if sigma.family == "abs":
        return 2 / pi * sympy.asin(rho), True
    if sigma.name == "erf":
        a, b = 1 + 2 * s1**2, 1 + 2 * s2**2
        return 4 / pi / sympy.sqrt(a * b - 4 * s1**2 * s2**2 * rho**2), True
    exact = sigma.has_closed_form
    if sigma.family == "polynomial":
        terms = len(sigma.polynomial_coefficients)
    if exact:
        mu1 = exact_hermite_coefficients(sigma, terms + 1, s1)
        mu2 = exact_hermite_coefficients(sigma, terms + 1, s2)
    else:
        mu1 = [sympy.Float(v, 17) for v in hermite_coefficients(sigma, terms + 1, float(s1))]
        mu2 = [sympy.Float(v, 17) for v in hermite_coefficients(sigma, terms + 1, float(s2))]
    series = sum((p + 1) * mu1[p + 1] * mu2[p + 1] / (s1 * s2) * rho**p for p in range(terms + 1))
    return series, sigma.family == "polynomial"


def symbolic_drift(problem: FineTuningProblem, terms: int = 8) -> tuple:
    """``h(m)`` as a sympy expression in the symbol ``m``, and whether it is exact.

    Exact for polynomial activations (finite Hermite series) and for relu, leaky_relu, abs and erf (closed
    kernels); otherwise the Hermite series of K' truncated after ``terms`` orders with float coefficients
    (then ``exact`` is False). Numbers of the problem are made exact when they are simple (1, ±1/sqrt(k)).

    Examples
    --------
    >>> problem = orthonormal_problem("He_3", k=2, xi=1.0, seed=0)
    >>> expr, exact = symbolic_drift(problem)
    >>> exact, sympy.expand(expr)  # He_3: K'(rho) = 18 rho^2
    (True, 32*m/3)
    """
    sigma = problem.activation
    k = problem.k
    m = sympy.Symbol("m", real=True)
    number = lambda v: _exact_number(float(v), k)  # noqa: E731
    xi = number(problem.xi)
    c = [number(v) for v in problem.c]
    c_hat = [number(v) for v in problem.c_hat]
    lam = [number(v) for v in problem.lam]
    gram = [[number(problem.gram[i, j]) for j in range(k)] for i in range(k)]
    r_t = [sympy.sqrt(gram[i][i] + xi**2 * c[i] ** 2) for i in range(k)]
    r_s = [sympy.sqrt(gram[i][i] + xi**2 * c_hat[i] ** 2) for i in range(k)]
    raw = problem.convention == "raw"
    total, exact = sympy.Integer(0), True
    for i in range(k):
        for j in range(k):
            s1, s2 = (r_t[i], r_s[j]) if raw else (sympy.Integer(1), sympy.Integer(1))
            rho = (gram[i][j] + xi**2 * c[i] * c_hat[j] * m) / (r_t[i] * r_s[j])
            kernel, pair_exact = _symbolic_kernel_derivative(sigma, sympy.simplify(rho), s1, s2, terms)
            exact = exact and pair_exact
            total += lam[i] * lam[j] * c[i] * c_hat[j] * s1 * s2 / (r_t[i] * r_s[j]) * kernel
    expr = 2 * xi**2 * total
    return (sympy.simplify(expr) if exact and k <= 4 else expr), exact


# ------------------------------------------------------------------------------------------------
# fast evaluator
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftInterpolant:
    """h(m) on [-1, 1] as a piecewise Chebyshev interpolant in t, m = t(2 - |t|).

    ``estimated_error`` comes from the trailing coefficients, ``measured_error`` from 2000+ points
    compared with the direct evaluation; ``scale`` is max |h| on a grid (for relative statements).
    Call it like a function, or pass ``breaks``/``coefficients`` to numba code
    (``popgrad.numerics.chebyshev.chebyshev_evaluate_scalar(breaks, coefficients, True, m)``).
    """

    interpolant: PiecewiseChebyshev
    scale: float

    def __call__(self, m):
        return self.interpolant(_check_m(m))

    @property
    def breaks(self) -> np.ndarray:
        return self.interpolant.breaks

    @property
    def coefficients(self) -> np.ndarray:
        return self.interpolant.coefficients

    @property
    def estimated_error(self) -> float:
        return self.interpolant.estimated_error

    @property
    def measured_error(self) -> float:
        return self.interpolant.measured_error


def drift_interpolant(problem: FineTuningProblem, tolerance: float = 1e-13) -> DriftInterpolant:
    """A verified fast evaluator for h(m) (built once per problem and cached).

    Examples
    --------
    >>> problem = orthonormal_problem("relu", k=8, xi=1.0, seed=0)
    >>> fast = drift_interpolant(problem)
    >>> bool(fast.measured_error <= 1e-9 * fast.scale)
    True
    """
    return _drift_interpolant(problem, check_real(tolerance, "tolerance", 1e-15, 1e-2))


@lru_cache(maxsize=32)
def _drift_interpolant(problem: FineTuningProblem, tolerance: float) -> DriftInterpolant:
    function = lambda m: population_drift(problem, np.clip(m, -1.0, 1.0))  # noqa: E731
    interpolant = chebyshev_interpolant(function, tolerance=tolerance, endpoint=True)
    scale = float(np.max(np.abs(function(np.linspace(-1, 1, 513)))))
    return DriftInterpolant(interpolant, scale)


# ------------------------------------------------------------------------------------------------
# fixed points, GLM limit, Lemma 6
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixedPoints:
    """Zeros of h on [-1, 1] (besides the ODE's fixed points m = ±1), h(0) and its sign, h(±1)."""

    zeros: tuple
    h0: float
    sign_h0: int
    h_at_minus_one: float
    h_at_one: float

    @property
    def attractor(self) -> float:
        """Where gradient flow from m ≈ 0 goes: the first zero of h in the direction of sign(h(0)), else ±1."""
        direction = self.sign_h0 or 1
        ahead = [z for z in self.zeros if z * direction > 0]
        return min(ahead, key=abs) if ahead else float(direction)


def drift_fixed_points(problem: FineTuningProblem, grid: int = 4001) -> FixedPoints:
    """Sign changes of h on a grid refined by Brent's method on the direct evaluation."""
    grid = check_integer(grid, "grid", 11, 10**7)
    m = np.linspace(-1, 1, grid)
    h = population_drift(problem, m)
    zeros = [float(z) for z in m[h == 0.0]]
    for a, b, ha, hb in zip(m[:-1], m[1:], h[:-1], h[1:]):
        if ha * hb < 0:
            zeros.append(optimize.brentq(lambda x: float(population_drift(problem, x)), a, b, xtol=1e-15, rtol=4 * np.finfo(float).eps))
    h0 = float(population_drift(problem, 0.0))
    return FixedPoints(tuple(sorted(zeros)), h0, int(np.sign(h0)), float(h[0]), float(h[-1]))


def glm_drift(sigma, m, order: int = 200) -> np.ndarray:
    """The GLM drift ``sum_{p>=1} p mu_p^2 m^(p-1)`` (learning a single index from scratch).

    Examples
    --------
    >>> round(float(glm_drift("He_3", 0.5)), 12)  # only mu_3 = sqrt(6): 3 * 6 * 0.25
    4.5
    """
    m = _check_m(m)
    mu = hermite_coefficients(activation(sigma), order)
    p = np.arange(1, order + 1)
    return np.polynomial.polynomial.polyval(m, p * mu[1:] ** 2)


def lemma6_frequency(sigma, k: int, xi: float, draws: int = 1000, seed: int = 0, grid: int = 201) -> dict:
    """How often Lemma 6's conclusion holds over random quantized c, c_hat (orthonormal features, lam = 1).

    The conclusion: ``h(m) sign(h(0)) >= |h(0)|/2`` for all m with ``m h(0) >= 0`` (checked on a grid of
    ``grid`` points). Draws where h(0) vanishes (|h(0)| <= 1e-12 max|h|: the signs cancel exactly, which
    quantized c allows) are *degenerate*: Lemma 6's lower bound on |h(0)| fails there, so they count as
    not holding and are reported separately. Returns the fraction, its binomial standard error, the
    degenerate count and quantiles of ``min h(m) sign(h(0)) / |h(0)|`` over the other draws.
    """
    k = check_integer(k, "k", 1, 1024)
    draws = check_integer(draws, "draws", 1, 10**6)
    generator = np.random.default_rng(check_integer(seed, "seed", 0))
    m = np.linspace(0.0, 1.0, grid)
    ratios = []
    degenerate = 0
    for _ in range(draws):
        problem = orthonormal_problem(sigma, k, xi, seed=int(generator.integers(2**62)))
        values = population_drift(problem, np.concatenate([m, -m[1:]]))
        h0 = values[0]
        if abs(h0) <= 1e-12 * max(float(np.max(np.abs(values))), 1e-300):
            degenerate += 1
            continue
        direction = 1.0 if h0 > 0 else -1.0
        ahead = values[:grid] if h0 > 0 else np.concatenate([[h0], values[grid:]])
        ratios.append(float(np.min(ahead * direction) / abs(h0)))
    ratios = np.array(ratios)
    fraction = float(np.sum(ratios >= 0.5) / draws)
    return {
        "activation": activation(sigma).name,
        "k": k,
        "xi": float(xi),
        "draws": draws,
        "seed": seed,
        "fraction": fraction,
        "standard_error": math.sqrt(fraction * (1 - fraction) / draws),
        "degenerate": degenerate,
        "ratio_quantiles": {q: float(np.quantile(ratios, q)) if len(ratios) else float("nan") for q in (0.0, 0.05, 0.5)},
    }
