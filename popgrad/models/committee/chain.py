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

A fine-tuning student (``V = W0 + B Theta``: LoRA, full fine-tuning) runs :func:`linear_chain_kernel`; the
student learnt from scratch keeps :func:`chain_kernel` (its numbers and speed unchanged). F = span(teacher
vectors, rows of W0), ``[L; L0] [L; L0]^T`` the joint Gram; the state is Theta's ``(Y (p x r), Gamma (r x r))``,
``B (K x r)`` and ``a``. One step: ``u = Theta x = Y^T z + zeta`` (r), ``lambda = L0 z + B u`` (K), ``nu = L z``;
g from :func:`sample_terms`; the gradient in Theta is ``(B^T g) x^T``, so ``b = -eta B^T g`` and the
constraint's update above runs with ``(u, b)`` in place of ``(lambda, b)``. ``orthogonal_to_base``: the
gradient's x is projected onto span(W0)^⟂ (z replaced by ``P z`` in Y's update, P the projector onto the
complement of L0's rows; ``zeta`` and ``|x_perp|^2`` unchanged; Theta's rows start ⟂ W0 and stay there, so the
tangent projection's ``Theta P x = u``). A trained B: ``B' = B - eta_B (g u^T + wd B)`` at the same sample
and the old state.
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

__all__ = ["CONSTRAINT_CODES", "chain_constants", "chain_kernel", "kernel_activation", "sample_terms", "state_alignment", "linear_chain_constants", "linear_chain_kernel"]

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


def linear_chain_constants(model, d: int, eta: float) -> tuple:
    """``(kernel, constants)`` of a fine-tuning student's chain (``model.linear``), so that
    ``streams.run_blocks(kernel, n, Y, Gamma, B, A, states, hits, level, stop_at_hit, offset, steps,
    *constants)`` advances n states (Y (n, p, r), Gamma (n, r, r), B (n, K, r), A (n, K)).

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
    L0 = np.ascontiguousarray(model.L0, dtype=float)
    P = np.ascontiguousarray(model.base_projector, dtype=float)
    kernel = linear_chain_kernel(code_t, code_s, model.noise > 0, model.train_second_layer, model.train_coefficients, CONSTRAINT_CODES[model.constraint], model.weight_decay > 0, model.orthogonal_to_base)
    reals = np.array([eta, eta * model.second_layer_ratio, model.teacher_scale, model.student_scale, model.noise, float(model.loss_factor), model.weight_decay, model.second_layer_weight_decay, float(d - model.p - model.rank), inner_t, inner_s, eta * model.coefficient_ratio])
    a_star = np.ascontiguousarray(model.teacher_second_layer, dtype=float)
    teacher_squared = np.ascontiguousarray(np.diag(model.T), dtype=float)
    return kernel, (L, L0, P, a_star, teacher_squared, reals, *teacher, *student)


@specialised
def linear_chain_kernel(code_t: int, code_s: int, noisy: bool, trained: bool, trained_b: bool, constraint: int, decay: bool, perp: bool):
    """``advance`` of a fine-tuning student's chain (V = W0 + B Theta) for the activations' fast paths and the
    switches (compile-time constants): output noise, a trained second layer, trained coefficients B, Theta's
    constraint (0 none, 1 sphere, 2 stiefel), weight decay (on Theta, and B when trained) and
    ``orthogonal_to_base``::

        advance(start, stop, Y, Gam, Bc, A, states, hits, level, stop_at_hit, offset, steps, L, L0, P, a_star,
                teacher_squared, reals, tp, tops, targs, tdops, tdargs, sp, sops, sargs, sdops, sdargs)

    runs ``steps`` steps of trajectories start..stop-1 in place (Y (n, p, r), Gam (n, r, r), Bc (n, K, r),
    A (n, K)), the hitting steps as :func:`chain_kernel`'s on V's overlaps (``V_F = L0 + B Y^T``, ``B Gamma
    B^T``). ``reals`` as the scratch chain's, plus eta_B at index 11."""
    version = SOURCE_VERSION

    @njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
    def advance(start, stop, Y, Gam, Bc, A, states, hits, level, stop_at_hit, offset, steps, L, L0, P, a_star, teacher_squared, reals, tp, tops, targs, tdops, tdargs, sp, sops, sargs, sdops, sdargs):
        eta, eta_a, wd, wd_a, dof, eta_b = reals[0], reals[1], reals[6], reals[7], reals[8], reals[11]
        M, p = L.shape
        K = A.shape[1]
        r = Y.shape[2]
        shrink = 1.0 - eta * wd if decay and constraint == 0 else 1.0
        shrink_b = 1.0 - eta_b * wd if decay else 1.0
        drawn = np.empty(p + r + (1 if noisy else 0))
        nu = np.empty(M)
        lam = np.empty(K)
        u = np.empty(r)
        zeta = np.empty(r)
        zp = np.empty(p)
        g = np.empty(K)
        h = np.empty(K)
        b = np.empty(r)
        diag = np.empty(r)
        Bch = np.zeros((r, r))
        Mm = np.zeros((r, r))
        X = np.empty((r, r))
        Gn = np.empty((r, r))
        work = np.empty((r, r))
        Tm = np.empty((r, r))
        yw = np.empty((p, r))
        yn = np.empty((p, r))
        gam = np.empty((r, r))
        bc = np.empty((K, r))
        a = np.empty(K)
        vf = np.empty((p, K))
        bgb = np.empty((K, K))
        stack = np.empty(STACK_SIZE)
        for j in range(start, stop):
            if stop_at_hit and hits[j] >= 0:
                continue
            for t in range(p):
                for k in range(r):
                    yw[t, k] = Y[j, t, k]
            for k in range(r):
                for l in range(r):
                    gam[k, l] = Gam[j, k, l]
            for i in range(K):
                a[i] = A[j, i]
                for k in range(r):
                    bc[i, k] = Bc[j, i, k]
            s0, s1, s2, s3 = streams.load_words(states[j])
            for step in range(steps):
                chi, s0, s1, s2, s3 = streams.fill_normal_chi_square(drawn, dof, s0, s1, s2, s3)
                eps = drawn[p + r] if noisy else 0.0
                outside = chi
                for k in range(r):
                    outside += drawn[p + k] * drawn[p + k]
                # pre-activations: nu = L z, u = Y^T z + zeta (zeta = Bch omega, Bch Bch^T = Gamma), lambda = L0 z + B u
                for n in range(M):
                    total = 0.0
                    for t in range(p):
                        total += L[n, t] * drawn[t]
                    nu[n] = total
                largest = 0.0
                for k in range(r):
                    largest = max(largest, gam[k, k])
                cholesky_lower(gam, Bch, PIVOT_TOLERANCE * largest)
                for k in range(r):
                    total = 0.0
                    for l in range(k + 1):
                        total += Bch[k, l] * drawn[p + l]
                    zeta[k] = total
                    for t in range(p):
                        total += yw[t, k] * drawn[t]
                    u[k] = total
                for i in range(K):
                    total = 0.0
                    for t in range(p):
                        total += L0[i, t] * drawn[t]
                    for k in range(r):
                        total += bc[i, k] * u[k]
                    lam[i] = total
                sample_terms(code_t, code_s, nu, lam, a_star, a, eps, reals, tp, tops, targs, tdops, tdargs, sp, sops, sargs, sdops, sdargs, stack, g, h)
                for k in range(r):
                    total = 0.0
                    for i in range(K):
                        total += bc[i, k] * g[i]
                    b[k] = -eta * total
                if trained_b:
                    for i in range(K):
                        for k in range(r):
                            bc[i, k] = shrink_b * bc[i, k] - eta_b * g[i] * u[k]
                # the gradient's x in F: z, or P z (projected off the base)
                for t in range(p):
                    if perp:
                        total = 0.0
                        for o in range(p):
                            total += P[t, o] * drawn[o]
                        zp[t] = total
                    else:
                        zp[t] = drawn[t]
                if constraint == 0:
                    for t in range(p):
                        for k in range(r):
                            yw[t, k] = shrink * yw[t, k] + zp[t] * b[k]
                    for k in range(r):
                        for l in range(k, r):
                            value = shrink * shrink * gam[k, l] + shrink * (zeta[k] * b[l] + b[k] * zeta[l]) + outside * b[k] * b[l]
                            gam[k, l] = value
                            gam[l, k] = value
                elif constraint == 1:
                    for k in range(r):
                        diag[k] = 1.0 - b[k] * u[k]
                    for k in range(r):
                        for l in range(k, r):
                            value = diag[k] * diag[l] * gam[k, l] + diag[k] * zeta[k] * b[l] + b[k] * zeta[l] * diag[l] + outside * b[k] * b[l]
                            Gn[k, l] = value
                            Gn[l, k] = value
                    for t in range(p):
                        for k in range(r):
                            yw[t, k] = diag[k] * yw[t, k] + zp[t] * b[k]
                    for k in range(r):
                        squared = Gn[k, k]
                        for t in range(p):
                            squared += yw[t, k] * yw[t, k]
                        diag[k] = 1.0 / math.sqrt(squared)
                    for t in range(p):
                        for k in range(r):
                            yw[t, k] *= diag[k]
                    for k in range(r):
                        for l in range(r):
                            gam[k, l] = Gn[k, l] * diag[k] * diag[l]
                else:
                    for k in range(r):
                        for l in range(r):
                            Mm[k, l] = (1.0 if k == l else 0.0) - 0.5 * (u[k] * b[l] + b[k] * u[l])
                    for k in range(r):
                        for l in range(r):
                            total = 0.0
                            for o in range(r):
                                total += gam[k, o] * Mm[o, l]
                            X[k, l] = total
                    for k in range(r):
                        left = 0.0
                        for o in range(r):
                            left += Mm[o, k] * zeta[o]
                        diag[k] = left
                    for k in range(r):
                        for l in range(r):
                            total = 0.0
                            for o in range(r):
                                total += Mm[o, k] * X[o, l]
                            Gn[k, l] = total + diag[k] * b[l] + b[k] * diag[l] + outside * b[k] * b[l]
                    for t in range(p):
                        for l in range(r):
                            total = zp[t] * b[l]
                            for o in range(r):
                                total += yw[t, o] * Mm[o, l]
                            yn[t, l] = total
                    for k in range(r):
                        for l in range(k, r):
                            total = 0.5 * (Gn[k, l] + Gn[l, k])
                            for t in range(p):
                                total += yn[t, k] * yn[t, l]
                            work[k, l] = total
                            work[l, k] = total
                    if not (work[0, 0] < math.inf):
                        for t in range(p):
                            for k in range(r):
                                yw[t, k] = math.nan
                        break
                    inverse_square_root(work, Tm)
                    for t in range(p):
                        for l in range(r):
                            total = 0.0
                            for o in range(r):
                                total += yn[t, o] * Tm[o, l]
                            yw[t, l] = total
                    for k in range(r):
                        for l in range(r):
                            total = 0.0
                            for o in range(r):
                                for q in range(r):
                                    total += Tm[o, k] * Gn[o, q] * Tm[q, l]
                            work[k, l] = total
                    for k in range(r):
                        for l in range(r):
                            gam[k, l] = 0.5 * (work[k, l] + work[l, k])
                if trained:
                    for i in range(K):
                        a[i] -= eta_a * (h[i] + wd_a * a[i])
                if level < math.inf and hits[j] < 0:
                    # V's state: V_F^T = L0^T + Y B^T (p x K), its part outside F B Gamma B^T
                    for t in range(p):
                        for i in range(K):
                            total = L0[i, t]
                            for k in range(r):
                                total += yw[t, k] * bc[i, k]
                            vf[t, i] = total
                    for i in range(K):
                        for l in range(K):
                            total = 0.0
                            for k in range(r):
                                for o in range(r):
                                    total += bc[i, k] * gam[k, o] * bc[l, o]
                            bgb[i, l] = total
                    if state_alignment(vf, bgb, L, teacher_squared) >= level:
                        hits[j] = offset + step + 1
                        if stop_at_hit:
                            break
            for t in range(p):
                for k in range(r):
                    Y[j, t, k] = yw[t, k]
            for k in range(r):
                for l in range(r):
                    Gam[j, k, l] = gam[k, l]
            for i in range(K):
                A[j, i] = a[i]
                for k in range(r):
                    Bc[j, i, k] = bc[i, k]
            streams.store_words(states[j], s0, s1, s2, s3)
        return len(version)

    return advance
