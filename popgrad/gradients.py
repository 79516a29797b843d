"""Per-sample gradients of the fine-tuning loss, compiled with numba.

With pre-activations ``a = W x``, ``g = <u, x>`` and ``g_hat = <u_hat, x>``, the teacher and student
neurons are ``z_i = (a_i + xi c_i g) / n_i`` and ``z_hat_j = (a_j + xi c_hat_j g_hat) / n_hat_j`` (n the
neuron norms in the normalized convention, 1 in raw). The per-sample loss ``(f* - f_hat)^2`` has gradient
``grad_{u_hat} = -A x`` with ``A = 2 (f* - f_hat) sum_j lam_j xi c_hat_j sigma'(z_hat_j) / n_hat_j``
(MATH.md §4). Everything downstream — Monte Carlo gradients, full-d SGD, the overlap chain — uses
:func:`gradient_coefficient`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import _jit
from .model import FineTuningProblem

__all__ = ["gradient_coefficient", "neuron_divisors", "monte_carlo_gradient"]


@njit(cache=True, inline="always")
def gradient_coefficient(a, g, g_hat, lam, c, c_hat, xi, divisor_teacher, divisor_student, kind, parameters, ops, args, d_ops, d_args, stack):
    """Return ``(A, f* - f_hat)`` for one sample given its pre-activations."""
    residual = 0.0
    slope = 0.0
    for i in range(lam.shape[0]):
        z = (a[i] + xi * c[i] * g) / divisor_teacher[i]
        z_hat = (a[i] + xi * c_hat[i] * g_hat) / divisor_student[i]
        residual += lam[i] * (_jit.activation_value(kind, parameters, ops, args, stack, z) - _jit.activation_value(kind, parameters, ops, args, stack, z_hat))
        slope += lam[i] * xi * c_hat[i] * _jit.activation_derivative(kind, parameters, d_ops, d_args, stack, z_hat) / divisor_student[i]
    return 2.0 * residual * slope, residual


def neuron_divisors(problem: FineTuningProblem) -> tuple:
    """``(n, n_hat)``: the neuron norms in the normalized convention, ones in raw."""
    if problem.convention == "raw":
        return np.ones(problem.k), np.ones(problem.k)
    return np.ascontiguousarray(problem.teacher_norms), np.ascontiguousarray(problem.student_norms)


@njit(cache=True, nogil=True)
def _gradient_sums(start, stop, sums, squares, W, u, u_hat, basis, lam, c, c_hat, xi, n_t, n_s, kind, parameters, ops, args, d_ops, d_args, seed, per_stream):
    d = W.shape[1]
    for s in range(start, stop):
        state = np.empty(4, dtype=np.uint64)
        _jit.seed_stream(seed, s, state)
        x = np.empty(d)
        a = np.empty(W.shape[0])
        coords = np.empty(basis.shape[0])
        stack = np.empty(_jit.STACK_SIZE)
        for _ in range(per_stream):
            for j in range(d):
                x[j] = _jit.normal(state)
            for i in range(W.shape[0]):
                a[i] = W[i] @ x
            g = u @ x
            g_hat = u_hat @ x
            coefficient, _ = gradient_coefficient(a, g, g_hat, lam, c, c_hat, xi, n_t, n_s, kind, parameters, ops, args, d_ops, d_args, stack)
            projected = x.copy()
            for r in range(basis.shape[0]):
                coords[r] = basis[r] @ x
                projected -= coords[r] * basis[r]
            tangent = projected - (u_hat @ projected) * u_hat
            for j in range(d):
                value = -coefficient * tangent[j]
                sums[s, j] += value
                squares[s, j] += value * value


def monte_carlo_gradient(problem: FineTuningProblem, W, u, u_hat, basis, samples: int, seed: int = 0, streams: int = 64) -> tuple:
    """Mean and standard error (per coordinate) of the projected spherical per-sample gradient
    ``-A (I - u_hat u_hat^T) P_W^perp x`` over ``samples`` fresh Gaussian inputs in dimension d.

    Its expectation is the population gradient ``-h(m) (u - m u_hat)`` (Proposition 4).
    """
    n_t, n_s = neuron_divisors(problem)
    per_stream = max(1, samples // streams)
    sums = np.zeros((streams, np.shape(W)[1]))
    squares = np.zeros_like(sums)
    _jit.run_blocks(
        _gradient_sums, streams, sums, squares,
        np.ascontiguousarray(W, dtype=np.float64), np.asarray(u, float), np.asarray(u_hat, float), np.ascontiguousarray(np.asarray(basis, dtype=np.float64).T),
        np.asarray(problem.lam), np.asarray(problem.c), np.asarray(problem.c_hat), float(problem.xi), n_t, n_s,
        *problem.activation.jit_spec, np.uint64(seed), per_stream,
    )
    total = streams * per_stream
    mean = sums.sum(axis=0) / total
    variance = squares.sum(axis=0) / total - mean**2
    return mean, np.sqrt(np.maximum(variance, 0.0) * total / (total - 1) / total)
