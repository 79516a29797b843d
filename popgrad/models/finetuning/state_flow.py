"""Population gradient flow of the general model on its state (MATH.md §4b), normalized convention.

The population gradient of ``Phi = s_out^2 sum_ab w_a w_b K(rho_ab)`` (w = (lam, -lam) over the teacher's
and the student's neurons, rho the cosines) in a student neuron b_j is, by Price's theorem
(``dK/drho = K'``, the kernel of sigma'),

    g_j = 2 s_out^2 w_j sum_(a != j) w_a K'(rho_aj) (v_a/|v_a| - rho_aj b_j/|b_j|) / |b_j|,

so ``grad_{U_hat} Phi = xi sum_j g_j c_hat_j^T`` and ``grad_{c_hat_j} Phi = xi U_hat^T g_j``. Every g_j lies
in F + range(U_hat), so U_hat stays in F ⊕ range(U_hat(0)): the flow is an ODE for ``Z = [Y; R]``
((p + r) x r, ``R^T R = Gamma``) and C_hat, integrated by the project's dopri5 with time t = eta * steps.
"""

from __future__ import annotations

import math

import numpy as np

from ..._validation import InvalidArgument
from ...dynamics.solve import ODE, solve
from ...dynamics.solvers.base import right_hand_side
from ...gaussian.families.fast import closed_kernel
from ...gaussian.kernels import kernel_spec

__all__ = ["state_flow_ode", "state_gradient", "predict_state_flow", "HEADER"]

#: slots before the arrays in the parameter vector
HEADER = 16


@right_hand_side
def _state_flow(t, y, parameters, out):
    k, p, r, rs, rank_w = int(parameters[0]), int(parameters[1]), int(parameters[2]), int(parameters[3]), int(parameters[4])
    xi, s_out, rate = parameters[5], parameters[6], parameters[7]
    constrained, joint = parameters[8] > 0.0, parameters[9] > 0.0
    code, kernel_parameter, terms = int(parameters[10]), parameters[11], int(parameters[12])
    n = p + r
    at_L = HEADER
    at_UF = at_L + k * rank_w
    at_C = at_UF + rs * p
    at_lam = at_C + k * rs
    at_series = at_lam + k
    series = parameters[at_series : at_series + terms]
    vectors = np.zeros((2 * k, n))
    for i in range(k):
        for q in range(rank_w):
            vectors[i, q] = parameters[at_L + i * rank_w + q]
            vectors[k + i, q] = parameters[at_L + i * rank_w + q]
        for q in range(p):
            for l in range(rs):
                vectors[i, q] += xi * parameters[at_C + i * rs + l] * parameters[at_UF + l * p + q]
        for q in range(n):
            for l in range(r):
                vectors[k + i, q] += xi * y[n * r + i * r + l] * y[q * r + l]
    norms = np.empty(2 * k)
    for a in range(2 * k):
        total = 0.0
        for q in range(n):
            total += vectors[a, q] * vectors[a, q]
        norms[a] = math.sqrt(total)
    g = np.zeros((k, n))
    for j in range(k):
        b = k + j
        lam_j = parameters[at_lam + j]
        for a in range(2 * k):
            if a == b:
                continue
            w_a = parameters[at_lam + a] if a < k else -parameters[at_lam + a - k]
            rho = 0.0
            for q in range(n):
                rho += vectors[a, q] * vectors[b, q]
            rho = min(1.0, max(-1.0, rho / (norms[a] * norms[b])))
            weight = 2.0 * s_out * s_out * (-lam_j) * w_a * closed_kernel(code, kernel_parameter, True, 1.0, 1.0, rho, series, series) / norms[b]
            for q in range(n):
                g[j, q] += weight * (vectors[a, q] / norms[a] - rho * vectors[b, q] / norms[b])
    # grad_Z = xi sum_j g_j c_hat_j^T, projected off span(W) when constrained, then onto the tangent space
    G = np.zeros((n, r))
    for q in range(rank_w if constrained else 0, n):
        for l in range(r):
            total = 0.0
            for j in range(k):
                total += g[j, q] * y[n * r + j * r + l]
            G[q, l] = xi * total
    H = np.zeros((r, r))
    for l in range(r):
        for m in range(r):
            for q in range(n):
                H[l, m] += y[q * r + l] * G[q, m]
    for q in range(n):
        for l in range(r):
            total = G[q, l]
            for m in range(r):
                total -= y[q * r + m] * 0.5 * (H[m, l] + H[l, m])
            out[q * r + l] = -total
    for j in range(k):
        for l in range(r):
            total = 0.0
            if joint:
                for q in range(n):
                    total += y[q * r + l] * g[j, q]
            out[n * r + j * r + l] = -rate * xi * total


def state_flow_ode(model) -> ODE:
    """The gradient-flow ODE of ``model`` (a :class:`.general.GeneralModel`, normalized convention, exact
    student) on ``y = [Z.ravel(), C_hat.ravel()]``."""
    problem = model.problem
    if problem.convention != "normalized" or model.student != "exact":
        raise InvalidArgument("the state gradient flow is implemented for the normalized convention and the exact student", "model")
    spec = kernel_spec(problem.activation, np.array([1.0]), derivative=True)
    series = np.ascontiguousarray(spec.coefficients[0], dtype=float)
    k, r, p, rank_w, rs = problem.k, model.rank, model.p, model.L.shape[1], model.C.shape[1]
    header = np.zeros(HEADER)
    header[:13] = [k, p, r, rs, rank_w, problem.xi, model.s_out, model.c_hat_lr, float(not model.unconstrained), float(model.train_c_hat), spec.code, spec.parameter, series.size]
    parameters = np.concatenate([header, model.L.ravel(), model.UF.ravel(), model.C.ravel(), np.asarray(problem.lam, dtype=float), series])
    return ODE(_state_flow, np.ascontiguousarray(parameters))


def state_gradient(model, Z: np.ndarray, C_hat: np.ndarray) -> tuple:
    """``(dZ/dt, dC_hat/dt)`` of the flow at one state: minus the projected population gradients
    (C_hat's scaled by ``c_hat_lr``; zero when C_hat is frozen)."""
    ode = state_flow_ode(model)
    y = np.concatenate([np.asarray(Z, dtype=float).ravel(), np.asarray(C_hat, dtype=float).ravel()])
    out = np.empty_like(y)
    ode.rhs(0.0, y, ode.parameters, out)
    n, r = model.p + model.rank, model.rank
    return out[: n * r].reshape(n, r), out[n * r :].reshape(C_hat.shape)


def predict_state_flow(model, Y: np.ndarray, Gamma: np.ndarray, C_hat: np.ndarray, eta: float, checkpoints, rtol: float = 1e-10) -> tuple:
    """Gradient flow from each of the given states (leading axis: starts) to ``eta * checkpoints``.

    Returns the states on the way, ``(Y (starts, checkpoints, p, r), Gamma (starts, checkpoints, r, r),
    C_hat (starts, checkpoints, k, r))``: the part of U_hat outside F keeps the direction of R(0) and
    moves within range(R(0)), so Gamma = R^T R."""
    ode = state_flow_ode(model)
    times = eta * np.asarray(checkpoints, dtype=float)
    count = Y.shape[0]
    n, r, k, p = model.p + model.rank, model.rank, model.problem.k, model.p
    Ys = np.empty((count, times.size, p, r))
    Gammas = np.empty((count, times.size, r, r))
    C_hats = np.empty((count, times.size, k, r))
    for j in range(count):
        values, vectors = np.linalg.eigh(0.5 * (Gamma[j] + Gamma[j].T))
        R = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
        y0 = np.concatenate([np.vstack([Y[j], R]).ravel(), np.asarray(C_hat[j], dtype=float).ravel()])
        solution = solve(ode, y0, times, rtol=rtol, atol=1e-12)
        Z = solution.values[:, : n * r].reshape(times.size, n, r)
        Ys[j] = Z[:, :p]
        Gammas[j] = np.einsum("tql,tqm->tlm", Z[:, p:], Z[:, p:])
        C_hats[j] = solution.values[:, n * r :].reshape(times.size, k, r)
    return Ys, Gammas, C_hats
