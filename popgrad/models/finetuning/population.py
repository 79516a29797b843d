"""Population quantities of the rank-1 fine-tuning problem (Proposition 4 and MATH.md §3).

For u_hat ⟂ span(W) the population loss depends on u_hat only through ``m = <u, u_hat>``, and its
spherical gradient is ``-h(m) (u - m u_hat)``. In general form (per-neuron norms ``r_i``, ``r_hat_j``
and scales ``s_i``, ``s_hat_j``, see :mod:`popgrad.model`)::

    rho_ij(m) = (G_ij + xi^2 c_i c_hat_j m) / (r_i r_hat_j)
    Phi(m)    = sum_ij lam_i lam_j [K(s_i, s_j, rho^tt_ij) - 2 K(s_i, s_hat_j, rho_ij(m)) + K(s_hat_i, s_hat_j, rho^ss_ij)]
    h(m)      = -Phi'(m) = 2 xi^2 sum_ij lam_i lam_j c_i c_hat_j s_i s_hat_j / (r_i r_hat_j) K'(s_i, s_hat_j, rho_ij(m))

which reduces to MATH.md's ``(2 xi^2 / r^2) sum lam lam c c_hat kappa'((G + xi^2 c c_hat m) / r^2)`` for
quantized c and unit rows (normalized), and to ``h_raw = r^2 h_normalized`` for relu. The common
convention has the scales ``rho r_i`` and the output scale 1/xi: Phi and h carry ``s_out^2 = 1/xi^2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from numba import njit

from ..._validation import check_integer, check_real, check_unit_interval
from ...gaussian.activations import activation
from ...gaussian.families.fast import closed_kernel
from ...gaussian.hermite import hermite_coefficients
from ...gaussian.kernels import KernelSpec, kernel_spec
from ...numerics.chebyshev import PiecewiseChebyshev, chebyshev_interpolant
from .spec import FineTuningProblem

__all__ = [
    "population_drift",
    "population_loss",
    "population_loss_derivative",
    "drift_interpolant",
    "DriftInterpolant",
    "drift_fixed_points",
    "FixedPoints",
    "glm_drift",
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
class NeuronPairs:
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
    def merge(cls, weight, offset, slope, scale_a, scale_b) -> "NeuronPairs":
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
    drift: NeuronPairs
    teacher: KernelSpec
    student: KernelSpec

    @cached_property
    def loss(self) -> tuple:
        """``(pairs, constant, teacher kernels, student kernels)`` of Phi(m) = constant + pairs(m)."""
        problem = self.problem
        r_t, r_s = problem.teacher_norms, problem.student_norms
        s_t, s_s = problem.teacher_scales, problem.student_scales
        lam2 = np.outer(problem.lam, problem.lam)
        if problem.convention == "common":  # the output scale 1/xi
            lam2 = problem.s_out**2 * lam2
        xi2 = problem.xi**2
        teacher = kernel_spec(problem.activation, s_t, derivative=False)
        student = kernel_spec(problem.activation, s_s, derivative=False)
        zero = np.zeros(1)
        tt = np.clip((problem.gram + xi2 * np.outer(problem.c, problem.c)) / np.outer(r_t, r_t), -1, 1)
        ss = np.clip((problem.gram + xi2 * np.outer(problem.c_hat, problem.c_hat)) / np.outer(r_s, r_s), -1, 1)
        flat = np.zeros_like(tt)
        constant = float(
            NeuronPairs.merge(lam2, tt, flat, s_t, s_t).sum(zero, teacher, teacher)[0]
            + NeuronPairs.merge(lam2, ss, flat, s_s, s_s).sum(zero, student, student)[0]
        )
        return NeuronPairs.merge(-2 * lam2, self.offset, self.slope, s_t, s_s), constant, teacher, student


@lru_cache(maxsize=32)
def pair_geometry(problem: FineTuningProblem) -> _Geometry:
    r_t, r_s = problem.teacher_norms, problem.student_norms
    s_t, s_s = problem.teacher_scales, problem.student_scales
    norms = np.outer(r_t, r_s)
    offset = problem.gram / norms
    slope = problem.xi**2 * np.outer(problem.c, problem.c_hat) / norms
    weight_drift = 2 * problem.xi**2 * np.outer(problem.lam, problem.lam) * np.outer(problem.c, problem.c_hat) * np.outer(s_t, s_s) / norms
    if problem.convention == "common":  # the output scale 1/xi
        weight_drift = problem.s_out**2 * weight_drift
    teacher = kernel_spec(problem.activation, s_t, derivative=True)
    student = kernel_spec(problem.activation, s_s, derivative=True)
    return _Geometry(problem, offset, slope, weight_drift, NeuronPairs.merge(weight_drift, offset, slope, s_t, s_s), teacher, student)


def _check_m(m) -> np.ndarray:
    return check_unit_interval(m, "m")


def population_drift(problem: FineTuningProblem, m) -> np.ndarray:
    """``h(m)``: the population gradient is ``-h(m) (u - m u_hat)`` (direct evaluation, O(k^2) kernels).

    Parameters
    ----------
    problem : FineTuningProblem
    m : float or array of floats in [-1, 1]
        Overlaps <u, u_hat>.

    Returns
    -------
    numpy.ndarray
        h(m), of the shape of ``m``: the spherical population gradient is -h(m) (u - m u_hat), so
        h = -dPhi/dm and gradient flow is dm/dt = eta h(m) (1 - m^2).

    Examples
    --------
    >>> from popgrad import orthonormal_problem
    >>> problem = orthonormal_problem("relu", k=4, xi=1.0, seed=3)
    >>> np.round(population_drift(problem, [0.0, 0.5, 1.0]), 10).tolist()
    [-0.6361337882, -0.5209310781, -0.4100400913]
    """
    m = _check_m(m)
    g = pair_geometry(problem)
    return g.drift.sum(m.ravel(), g.teacher, g.student).reshape(m.shape)


def population_loss(problem: FineTuningProblem, m) -> np.ndarray:
    """``Phi(m) = E[(f*(x) - f_hat(x))^2]`` including the m-independent terms.

    The fine-tuning papers' convention: no factor 1/2 (SGD descends the per-sample loss ``(y - f(x))^2``),
    so a Monte Carlo of ``0.5 * mean((f* - f)**2)`` is Phi/2; ``h = -dPhi/dm`` in the same convention.

    Parameters
    ----------
    problem, m
        As in :func:`population_drift`.

    Returns
    -------
    numpy.ndarray
        Phi(m) = E[(f*(x) - f_hat(x))^2], of the shape of ``m``.

    Examples
    --------
    >>> from popgrad import orthonormal_problem
    >>> problem = orthonormal_problem("relu", k=4, xi=1.0, seed=3)
    >>> bool(population_loss(problem, 0.3) >= 0)
    True
    """
    m = _check_m(m)
    pairs, constant, teacher, student = pair_geometry(problem).loss
    return (constant + pairs.sum(m.ravel(), teacher, student)).reshape(m.shape)


def population_loss_derivative(problem: FineTuningProblem, m) -> np.ndarray:
    """``Phi'(m) = -h(m)``.

    Parameters
    ----------
    problem : FineTuningProblem
    m : float or array_like, in [-1, 1]

    Returns
    -------
    ndarray
    """
    return -population_drift(problem, m)


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

    Attributes
    ----------
    interpolant : PiecewiseChebyshev
        h on [-1, 1] in the endpoint variable t.
    scale : float
        max |h| on a grid.
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

    Parameters
    ----------
    problem : FineTuningProblem
    tolerance : float, default 1e-13
        Target absolute error of the piecewise Chebyshev interpolant of h on [-1, 1].

    Returns
    -------
    DriftInterpolant
        ``interpolant`` (a numba-evaluable PiecewiseChebyshev) and ``measured_error`` (its largest error
        against h on a fine check grid).

    Examples
    --------
    >>> from popgrad import orthonormal_problem
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
    """Zeros of h on [-1, 1] (besides the ODE's fixed points m = ±1), h(0) and its sign, h(±1).

    Attributes
    ----------
    zeros : tuple of float
        Zeros of h in [-1, 1], increasing.
    h0 : float
        h(0).
    sign_h0 : int
        sign(h(0)): the direction m moves from 0 (the sign of the limit of m).
    h_at_minus_one, h_at_one : float
        h(-1), h(1).
    """

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
    """Sign changes of h on a grid refined by Brent's method on the direct evaluation.

    Parameters
    ----------
    problem : FineTuningProblem
    grid : int, default 4001
        Points of [-1, 1] scanned for sign changes of h before each zero is refined (brentq).

    Returns
    -------
    FixedPoints
        ``h0`` = h(0) and ``zeros``, the zeros of h in [-1, 1].
    """
    from scipy import optimize  # 0.15 s of import, only here

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

    Parameters
    ----------
    sigma : str or Activation
    m : float or array_like
    order : int, default 200
        Terms of the series (exact for polynomials of lower degree).

    Returns
    -------
    ndarray

    Examples
    --------
    >>> round(float(glm_drift("He_3", 0.5)), 12)  # only mu_3 = sqrt(6): 3 * 6 * 0.25
    4.5
    """
    m = _check_m(m)
    mu = hermite_coefficients(activation(sigma), order)
    p = np.arange(1, order + 1)
    return np.polynomial.polynomial.polyval(m, p * mu[1:] ** 2)
