"""The exact state chain of the committee machine learnt from scratch (MATH.md §8): one SGD step in law,
at a cost independent of d.

F = span(teacher vectors), p = rank T, with an orthonormal basis Q_F in which ``W* = L Q_F^T`` (L L^T = T).
The student's vectors (the columns of ``Theta^T = Q_F Y + R``, R ⟂ F) are known in law from the state
``(Y (p x K), Gamma = R^T R (K x K), a (K))``. One step draws ``z ~ N(0, I_p)`` (= Q_F^T x),
``omega ~ N(0, I_K)``, the output noise ``eps ~ N(0, 1)`` (when tau > 0) and ``chi ~ chi^2_(d-p-K)``; with
``Gamma = B B^T`` (Cholesky, rank-revealing: a pivot below rounding gives a zero column) ``zeta = B omega``
is ``R^T x`` and ``|x_perp|^2 = |omega|^2 + chi`` — exact in law for any rank of Gamma: the omegas of the
zero columns are independent of zeta and complete the chi-square to d - p - rank(Gamma) degrees of
freedom. Pre-activations ``nu = L z``, ``lambda = Y^T z + zeta``. With ``g_i = -c (y - f) s a_i
sigma'(lambda_i)`` (c the loss factor) and ``b = -eta g``:

* no constraint (weight decay wd: ``m = 1 - eta wd``): ``Y' = m Y + z b^T``,
  ``Gamma' = m^2 Gamma + m (zeta b^T + b zeta^T) + |x_perp|^2 b b^T``;
* ``sphere`` (each v_i unit; tangent projection, then normalise): ``X = Theta^T D + x b^T`` with
  ``D = diag(1 - b_i lambda_i)``, then each column divided by its norm;
* ``stiefel`` (rows orthonormal; tangent projection ``G - Theta^T sym(Theta G)`` and polar retraction, as
  §4b): ``X = Theta^T M + x b^T``, ``M = I - sym(lambda b^T)``, then ``X (X^T X)^(-1/2)``;

the second layer (when trained) ``a_i' = a_i - eta_a (-c (y - f) s sigma(lambda_i) + wd_a a_i)`` at the same
sample and the old state. Full-d SGD of the same model (:mod:`.sgd`) checks the chain by two-sample tests.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ...gaussian.families.base import CODE_ERF
from ...gaussian.families.fast import activation_derivative, activation_value
from ...gaussian.programs import STACK_SIZE
from ...numerics import random_streams as streams
from ...numerics.compiled import SOURCE_VERSION, specialised
from ...numerics.linalg import cholesky_lower, inverse_square_root

__all__ = ["CONSTRAINT_CODES", "chain_constants", "chain_kernel", "kernel_activation", "sample_terms", "state_alignment"]

#: the constraint's compile-time code in the kernels
CONSTRAINT_CODES = {"none": 0, "sphere": 1, "stiefel": 2}
#: a Cholesky pivot below this fraction of Gamma's largest diagonal entry is a zero (rank-revealing)
PIVOT_TOLERANCE = 1e-13


def kernel_activation(sigma) -> tuple:
    """``(code, inner, parameters, ops, args, d_ops, d_args)`` for the kernels: the activation's jit spec,
    except that ``erf(c z)`` (e.g. Saad–Solla's erf(z/sqrt 2)) runs on the erf fast path with the inner scale
    ``c`` (value ``erf(c z)``, derivative ``c erf'(c z)``) instead of the interpreted program.

    Parameters
    ----------
    sigma : Activation

    Returns
    -------
    tuple

    Examples
    --------
    >>> import popgrad
    >>> kernel_activation(popgrad.activation("erf(z/sqrt(2))"))[:2]
    (5, 0.7071067811865476)
    """
    code, parameters, ops, args, d_ops, d_args = sigma.jit_spec
    inner = 1.0
    expression = sigma.expression
    if code != CODE_ERF and getattr(expression.func, "__name__", "") == "erf" and len(expression.free_symbols) == 1:
        (z,) = expression.free_symbols
        factor, rest = expression.args[0].as_independent(z, as_Add=False)
        if rest == z and factor.is_number and factor.is_real:
            code, inner = CODE_ERF, float(factor)
    return int(code), float(inner), parameters, ops, args, d_ops, d_args


@njit(cache=True)
def state_alignment(yw, gam, L, teacher_squared):
    """``min_i max_n R_in^2 / (Q_ii T_nn)`` of a chain state (Y as ``yw`` (p x K), Gamma, L): the squared
    cosine of the student neuron worst aligned with its best teacher neuron (0 for a zero vector)."""
    p, K = yw.shape
    M = L.shape[0]
    worst = math.inf
    for i in range(K):
        q = gam[i, i]
        for t in range(p):
            q += yw[t, i] * yw[t, i]
        best = 0.0
        for n in range(M):
            r = 0.0
            for t in range(p):
                r += yw[t, i] * L[n, t]
            if q > 0.0 and teacher_squared[n] > 0.0:
                best = max(best, r * r / (q * teacher_squared[n]))
        worst = min(worst, best)
    return worst


@njit(cache=True, inline="always")
def sample_terms(code_t, code_s, nu, lam, a_star, a, eps, reals, tp, tops, targs, tdops, tdargs, sp, sops, sargs, sdops, sdargs, stack, g, h):
    """One sample's gradient coefficients from the pre-activations (shared by the chain and full-d SGD):
    ``g_i = -c (y - f) s a_i sigma'(lambda_i)`` (the gradient in v_i is g_i x) and ``h_i = -c (y - f) s
    sigma(lambda_i)`` (the gradient in a_i). Returns ``y - f``.

    ``reals`` = (eta, eta_a, s*, s, tau, c, wd, wd_a, chi-square dof, inner scale of sigma*, of sigma)."""
    s_star, s, tau, c = reals[2], reals[3], reals[4], reals[5]
    inner_t, inner_s = reals[9], reals[10]
    teacher = 0.0
    for n in range(nu.shape[0]):
        teacher += a_star[n] * activation_value(code_t, tp, tops, targs, stack, inner_t * nu[n])
    residual = s_star * teacher + tau * eps
    student = 0.0
    K = lam.shape[0]
    for i in range(K):
        value = activation_value(code_s, sp, sops, sargs, stack, inner_s * lam[i])
        h[i] = value
        g[i] = a[i] * inner_s * activation_derivative(code_s, sp, sdops, sdargs, stack, inner_s * lam[i])
        student += a[i] * value
    residual -= s * student
    factor = -c * residual * s
    for i in range(K):
        g[i] *= factor
        h[i] *= factor
    return residual


def chain_constants(model, d: int, eta: float) -> tuple:
    """``(kernel, constants)``: the chain's kernel for ``model`` and the arguments after the per-item ones,
    so that ``streams.run_blocks(kernel, n, Y, Gamma, A, states, hits, level, stop_at_hit, offset,
    steps, *constants)`` advances n states.

    Parameters
    ----------
    model : CommitteeModel
    d : int
    eta : float

    Returns
    -------
    tuple
    """
    code_t, inner_t, *teacher = kernel_activation(model.teacher_activation)
    code_s, inner_s, *student = kernel_activation(model.student_activation)
    L = np.ascontiguousarray(model.L, dtype=float)
    identity = bool(L.shape[0] == L.shape[1] and np.array_equal(L, np.eye(L.shape[0])))
    kernel = chain_kernel(code_t, code_s, identity, model.noise > 0, model.train_second_layer, CONSTRAINT_CODES[model.constraint], model.weight_decay > 0)
    reals = np.array([eta, eta * model.second_layer_ratio, model.teacher_scale, model.student_scale, model.noise, float(model.loss_factor), model.weight_decay, model.second_layer_weight_decay, float(d - model.p - model.K), inner_t, inner_s])
    a_star = np.ascontiguousarray(model.teacher_second_layer, dtype=float)
    teacher_squared = np.ascontiguousarray(np.diag(model.T), dtype=float)
    return kernel, (L, a_star, teacher_squared, reals, *teacher, *student)


@specialised
def chain_kernel(code_t: int, code_s: int, identity: bool, noisy: bool, trained: bool, constraint: int, decay: bool):
    """``advance`` of the chain for the activations' fast paths and the model's switches (compile-time
    constants): T = I (``identity``: nu = z), output noise, a trained second layer, the constraint (0 none,
    1 sphere, 2 stiefel) and weight decay on the vectors::

        advance(start, stop, Y, Gam, A, states, hits, level, stop_at_hit, offset, steps, L, a_star,
                teacher_squared, reals, tp, tops, targs, tdops, tdargs, sp, sops, sargs, sdops, sdargs)

    runs ``steps`` steps of trajectories start..stop-1 (Y (n, p, K), Gam (n, K, K), A (n, K) in place;
    each trajectory on its own stream ``states[j]``) from step ``offset``; ``hits[j]`` (-1 until then)
    records the first step where :func:`state_alignment` reaches ``level``, where trajectory j stops when
    ``stop_at_hit``."""
    version = SOURCE_VERSION

    @njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
    def advance(start, stop, Y, Gam, A, states, hits, level, stop_at_hit, offset, steps, L, a_star, teacher_squared, reals, tp, tops, targs, tdops, tdargs, sp, sops, sargs, sdops, sdargs):
        eta, eta_a, wd, wd_a, dof = reals[0], reals[1], reals[6], reals[7], reals[8]
        M, p = L.shape
        K = A.shape[1]
        shrink = 1.0 - eta * wd if decay and constraint == 0 else 1.0
        drawn = np.empty(p + K + (1 if noisy else 0))
        nu = np.empty(M)
        lam = np.empty(K)
        zeta = np.empty(K)
        g = np.empty(K)
        h = np.empty(K)
        b = np.empty(K)
        diag = np.empty(K)
        B = np.zeros((K, K))
        Mm = np.zeros((K, K))
        X = np.empty((K, K))
        Gn = np.empty((K, K))
        work = np.empty((K, K))
        Tm = np.empty((K, K))
        yw = np.empty((p, K))
        yn = np.empty((p, K))
        gam = np.empty((K, K))
        a = np.empty(K)
        stack = np.empty(STACK_SIZE)
        for j in range(start, stop):
            if stop_at_hit and hits[j] >= 0:
                continue
            for t in range(p):
                for i in range(K):
                    yw[t, i] = Y[j, t, i]
            for i in range(K):
                a[i] = A[j, i]
                for l in range(K):
                    gam[i, l] = Gam[j, i, l]
            s0, s1, s2, s3 = streams.load_words(states[j])
            for step in range(steps):
                chi, s0, s1, s2, s3 = streams.fill_normal_chi_square(drawn, dof, s0, s1, s2, s3)
                eps = drawn[p + K] if noisy else 0.0
                perp = chi
                for i in range(K):
                    perp += drawn[p + i] * drawn[p + i]
                # pre-activations: nu = L z, lambda = Y^T z + zeta, zeta = B omega (B B^T = Gamma)
                if identity:
                    for n in range(M):
                        nu[n] = drawn[n]
                else:
                    for n in range(M):
                        total = 0.0
                        for t in range(p):
                            total += L[n, t] * drawn[t]
                        nu[n] = total
                largest = 0.0
                for i in range(K):
                    largest = max(largest, gam[i, i])
                cholesky_lower(gam, B, PIVOT_TOLERANCE * largest)
                for i in range(K):
                    total = 0.0
                    for l in range(i + 1):
                        total += B[i, l] * drawn[p + l]
                    zeta[i] = total
                    for t in range(p):
                        total += yw[t, i] * drawn[t]
                    lam[i] = total
                sample_terms(code_t, code_s, nu, lam, a_star, a, eps, reals, tp, tops, targs, tdops, tdargs, sp, sops, sargs, sdops, sdargs, stack, g, h)
                for i in range(K):
                    b[i] = -eta * g[i]
                if constraint == 0:
                    for t in range(p):
                        for i in range(K):
                            yw[t, i] = shrink * yw[t, i] + drawn[t] * b[i]
                    for i in range(K):
                        for l in range(i, K):
                            value = shrink * shrink * gam[i, l] + shrink * (zeta[i] * b[l] + b[i] * zeta[l]) + perp * b[i] * b[l]
                            gam[i, l] = value
                            gam[l, i] = value
                elif constraint == 1:
                    # X_i = D_i v_i + b_i x with D_i = 1 - b_i lambda_i, then v_i' = X_i / |X_i|
                    for i in range(K):
                        diag[i] = 1.0 - b[i] * lam[i]
                    for i in range(K):
                        for l in range(i, K):
                            value = diag[i] * diag[l] * gam[i, l] + diag[i] * zeta[i] * b[l] + b[i] * zeta[l] * diag[l] + perp * b[i] * b[l]
                            Gn[i, l] = value
                            Gn[l, i] = value
                    for t in range(p):
                        for i in range(K):
                            yw[t, i] = diag[i] * yw[t, i] + drawn[t] * b[i]
                    for i in range(K):
                        squared = Gn[i, i]
                        for t in range(p):
                            squared += yw[t, i] * yw[t, i]
                        diag[i] = 1.0 / math.sqrt(squared)
                    for t in range(p):
                        for i in range(K):
                            yw[t, i] *= diag[i]
                    for i in range(K):
                        for l in range(K):
                            gam[i, l] = Gn[i, l] * diag[i] * diag[l]
                else:
                    # X = Theta^T M + x b^T, M = I - sym(lambda b^T); then X (X^T X)^(-1/2)
                    for i in range(K):
                        for l in range(K):
                            Mm[i, l] = (1.0 if i == l else 0.0) - 0.5 * (lam[i] * b[l] + b[i] * lam[l])
                    for i in range(K):
                        for l in range(K):
                            total = 0.0
                            for o in range(K):
                                total += gam[i, o] * Mm[o, l]
                            X[i, l] = total  # Gamma M
                    for i in range(K):
                        left = 0.0
                        for o in range(K):
                            left += Mm[o, i] * zeta[o]
                        diag[i] = left  # (M^T zeta)_i
                    for i in range(K):
                        for l in range(K):
                            total = 0.0
                            for o in range(K):
                                total += Mm[o, i] * X[o, l]
                            Gn[i, l] = total + diag[i] * b[l] + b[i] * diag[l] + perp * b[i] * b[l]
                    for t in range(p):
                        for l in range(K):
                            total = drawn[t] * b[l]
                            for o in range(K):
                                total += yw[t, o] * Mm[o, l]
                            yn[t, l] = total
                    for i in range(K):
                        for l in range(i, K):
                            total = 0.5 * (Gn[i, l] + Gn[l, i])
                            for t in range(p):
                                total += yn[t, i] * yn[t, l]
                            work[i, l] = total
                            work[l, i] = total
                    if not (work[0, 0] < math.inf):
                        for t in range(p):
                            for i in range(K):
                                yw[t, i] = math.nan
                        break
                    inverse_square_root(work, Tm)
                    for t in range(p):
                        for l in range(K):
                            total = 0.0
                            for o in range(K):
                                total += yn[t, o] * Tm[o, l]
                            yw[t, l] = total
                    for i in range(K):
                        for l in range(K):
                            total = 0.0
                            for o in range(K):
                                for q in range(K):
                                    total += Tm[o, i] * Gn[o, q] * Tm[q, l]
                            work[i, l] = total
                    for i in range(K):
                        for l in range(K):
                            gam[i, l] = 0.5 * (work[i, l] + work[l, i])
                if trained:
                    for i in range(K):
                        a[i] -= eta_a * (h[i] + wd_a * a[i])
                if level < math.inf and hits[j] < 0 and state_alignment(yw, gam, L, teacher_squared) >= level:
                    hits[j] = offset + step + 1
                    if stop_at_hit:
                        break
            for t in range(p):
                for i in range(K):
                    Y[j, t, i] = yw[t, i]
            for i in range(K):
                A[j, i] = a[i]
                for l in range(K):
                    Gam[j, i, l] = gam[i, l]
            streams.store_words(states[j], s0, s1, s2, s3)
        return len(version)

    return advance
