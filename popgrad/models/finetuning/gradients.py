"""The per-sample gradient of the fine-tuning loss, for numba kernels.

With pre-activations ``a = W x``, ``g = <u, x>`` and ``g_hat = <u_hat, x>``, the teacher and student
neurons are ``z_i = (a_i + xi c_i g) / n_i`` and ``z_hat_j = (a_j + xi c_hat_j g_hat) / n_hat_j`` (n the
neuron norms in the normalized convention, 1 in raw, 1/rho in common). The per-sample loss ``(f* - f_hat)^2`` has gradient
``grad_{u_hat} = -A x`` with ``A = 2 (f* - f_hat) sum_j lam_j xi c_hat_j sigma'(z_hat_j) / n_hat_j``
(MATH.md §4). The common convention's output scale 1/xi enters through lam (``s_out lam``), which
scales ``f* - f_hat`` and A's sum alike. Every kernel — full-d SGD, the overlap chain, the noise estimate, Monte Carlo gradients —
calls :func:`gradient_coefficient` with the activation's fast-path code as a compile-time constant.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ...gaussian.families.fast import activation_derivative, activation_value
from .spec import FineTuningProblem  # noqa: F401  (annotations; spec imports the catalogue only on use)

__all__ = ["gradient_coefficient", "neuron_divisors", "model_arrays"]


@njit(cache=True, inline="always")
def gradient_coefficient(code, a, g, g_hat, lam, c, c_hat, xi, inverse_teacher, inverse_student, parameters, ops, args, d_ops, d_args, stack):
    """Return ``(A, f* - f_hat)`` for one sample given its pre-activations; ``inverse_*`` are 1/n, 1/n_hat
    (multiplications: a division per neuron cost a quarter of the chain's step)."""
    residual = 0.0
    slope = 0.0
    for i in range(lam.shape[0]):
        z = (a[i] + xi * c[i] * g) * inverse_teacher[i]
        z_hat = (a[i] + xi * c_hat[i] * g_hat) * inverse_student[i]
        residual += lam[i] * (activation_value(code, parameters, ops, args, stack, z) - activation_value(code, parameters, ops, args, stack, z_hat))
        slope += lam[i] * xi * c_hat[i] * activation_derivative(code, parameters, d_ops, d_args, stack, z_hat) * inverse_student[i]
    return 2.0 * residual * slope, residual


def neuron_divisors(problem: FineTuningProblem) -> tuple:
    """``(n, n_hat)``: the neuron norms in the normalized convention, ones in raw, ``1/rho`` in common."""
    if problem.convention == "raw":
        return np.ones(problem.k), np.ones(problem.k)
    if problem.convention == "common":
        divisor = np.full(problem.k, 1.0 / problem.neuron_prefactor)
        return divisor, divisor.copy()
    return np.ascontiguousarray(problem.teacher_norms), np.ascontiguousarray(problem.student_norms)


def model_arrays(problem: FineTuningProblem) -> tuple:
    """``(code, model)``: the fast-path code and the plain arrays every kernel takes after its own,
    ``(lam, c, c_hat, xi, 1/n, 1/n_hat, parameters, ops, args, d_ops, d_args)`` (lam times the problem's
    output scale in the common convention)."""
    code, parameters, ops, args, d_ops, d_args = problem.activation.jit_spec
    n_t, n_s = neuron_divisors(problem)
    if problem.convention == "common":
        inverse = np.full(problem.k, problem.neuron_prefactor)
        model = (np.asarray(problem.lam) * problem.s_out, np.asarray(problem.c), np.asarray(problem.c_hat), float(problem.xi), inverse, inverse.copy(), parameters, ops, args, d_ops, d_args)
        return code, model
    model = (np.asarray(problem.lam), np.asarray(problem.c), np.asarray(problem.c_hat), float(problem.xi), 1.0 / n_t, 1.0 / n_s, parameters, ops, args, d_ops, d_args)
    return code, model
