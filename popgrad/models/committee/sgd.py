"""Online SGD of the committee machine in dimension d: the students' vectors explicitly (K x d per
trajectory), the independent route the exact chain (:mod:`.chain`) is checked against.

One step draws ``x ~ N(0, I_d)`` and (with output noise) ``eps`` from the trajectory's stream, computes
``lambda = V x`` and ``nu = W* x``, the coefficients of :func:`.chain.sample_terms` (the same per-sample
algebra), and moves ``v_i`` by ``b_i x`` (``b = -eta g``) with weight decay ``(1 - eta wd) v_i``, or on the
constraint's manifold: ``sphere`` ``v_i <- ((1 - b_i lambda_i) v_i + b_i x) / |.|``; ``stiefel``
``V <- M V + b x^T`` (``M = I - sym(lambda b^T)``, the tangent projection) then ``(V V^T)^(-1/2) V``
(the polar retraction). The second layer moves as in the chain.

A fine-tuning student (``V = W0 + B Theta``) runs :func:`linear_sgd_kernel`: Theta (r x d) explicit, the base
W0 (K x d) frozen, ``u = Theta x``, ``lambda = W0 x + B u``; Theta moves by ``b x'^T`` (``b = -eta B^T g``) on
its constraint's manifold, with ``x' = x`` or, with ``orthogonal_to_base``, x projected onto span(W0)^⟂ (the
tangent projection then uses ``Theta x'``, computed, not assumed); a trained B by ``-eta_B (g u^T + wd B)``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ...gaussian.programs import STACK_SIZE
from ...numerics import random_streams as streams
from ...numerics.compiled import SOURCE_VERSION, specialised
from ...numerics.linalg import inverse_square_root
from .chain import CONSTRAINT_CODES, kernel_activation, sample_terms

__all__ = ["sgd_constants", "sgd_kernel", "vector_alignment", "linear_sgd_constants", "linear_sgd_kernel"]


def sgd_constants(model, W: np.ndarray, eta: float) -> tuple:
    """``(kernel, constants)`` so that ``streams.run_blocks(kernel, n, V, A, states, hits, level, stop_at_hit,
    offset, steps, *constants)``
    advances n trajectories of full-d SGD with teacher vectors ``W`` (M x d).

    Parameters
    ----------
    model : CommitteeModel
    W : ndarray (M, d)
    eta : float

    Returns
    -------
    tuple
    """
    code_t, inner_t, *teacher = kernel_activation(model.teacher_activation)
    code_s, inner_s, *student = kernel_activation(model.student_activation)
    kernel = sgd_kernel(code_t, code_s, model.noise > 0, model.train_second_layer, CONSTRAINT_CODES[model.constraint], model.weight_decay > 0)
    reals = np.array([eta, eta * model.second_layer_ratio, model.teacher_scale, model.student_scale, model.noise, float(model.loss_factor), model.weight_decay, model.second_layer_weight_decay, 0.0, inner_t, inner_s])
    a_star = np.ascontiguousarray(model.teacher_second_layer, dtype=float)
    W = np.ascontiguousarray(W, dtype=float)
    return kernel, (W, a_star, np.sum(W * W, axis=1), reals, *teacher, *student)


@njit(cache=True)
def vector_alignment(v, W, teacher_squared):
    """``min_i max_n <v_i, w*_n>^2 / (|v_i|^2 |w*_n|^2)`` (0 for a zero vector), as
    :func:`.chain.state_alignment` from explicit vectors."""
    K, d = v.shape
    worst = math.inf
    for i in range(K):
        q = 0.0
        for t in range(d):
            q += v[i, t] * v[i, t]
        best = 0.0
        for n in range(W.shape[0]):
            r = 0.0
            for t in range(d):
                r += v[i, t] * W[n, t]
            if q > 0.0 and teacher_squared[n] > 0.0:
                best = max(best, r * r / (q * teacher_squared[n]))
        worst = min(worst, best)
    return worst


@specialised
def sgd_kernel(code_t: int, code_s: int, noisy: bool, trained: bool, constraint: int, decay: bool):
    """``advance`` of full-d SGD for the activations' fast paths and the model's switches (compile-time
    constants, as :func:`.chain.chain_kernel`)::

        advance(start, stop, V, A, states, hits, level, stop_at_hit, offset, steps, W, a_star,
                teacher_squared, reals, tp, tops, targs, tdops, tdargs, sp, sops, sargs, sdops, sdargs)

    with V (n, K, d) and A (n, K) moved in place, and the hitting steps as the chain's."""
    version = SOURCE_VERSION

    @njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
    def advance(start, stop, V, A, states, hits, level, stop_at_hit, offset, steps, W, a_star, teacher_squared, reals, tp, tops, targs, tdops, tdargs, sp, sops, sargs, sdops, sdargs):
        eta, eta_a, wd, wd_a = reals[0], reals[1], reals[6], reals[7]
        M, d = W.shape
        K = A.shape[1]
        shrink = 1.0 - eta * wd if decay and constraint == 0 else 1.0
        drawn = np.empty(d + (1 if noisy else 0))
        nu = np.empty(M)
        lam = np.empty(K)
        g = np.empty(K)
        h = np.empty(K)
        b = np.empty(K)
        a = np.empty(K)
        Mm = np.empty((K, K))
        S = np.empty((K, K))
        Tm = np.empty((K, K))
        moved = np.empty((K, d))
        stack = np.empty(STACK_SIZE)
        for j in range(start, stop):
            if stop_at_hit and hits[j] >= 0:
                continue
            v = V[j]
            for i in range(K):
                a[i] = A[j, i]
            s0, s1, s2, s3 = streams.load_words(states[j])
            for step in range(steps):
                _, s0, s1, s2, s3 = streams.fill_normal_chi_square(drawn, 0.0, s0, s1, s2, s3)
                eps = drawn[d] if noisy else 0.0
                for n in range(M):
                    total = 0.0
                    for t in range(d):
                        total += W[n, t] * drawn[t]
                    nu[n] = total
                for i in range(K):
                    total = 0.0
                    for t in range(d):
                        total += v[i, t] * drawn[t]
                    lam[i] = total
                sample_terms(code_t, code_s, nu, lam, a_star, a, eps, reals, tp, tops, targs, tdops, tdargs, sp, sops, sargs, sdops, sdargs, stack, g, h)
                for i in range(K):
                    b[i] = -eta * g[i]
                if constraint == 0:
                    for i in range(K):
                        for t in range(d):
                            v[i, t] = shrink * v[i, t] + b[i] * drawn[t]
                elif constraint == 1:
                    for i in range(K):
                        factor = 1.0 - b[i] * lam[i]
                        squared = 0.0
                        for t in range(d):
                            value = factor * v[i, t] + b[i] * drawn[t]
                            v[i, t] = value
                            squared += value * value
                        inverse = 1.0 / math.sqrt(squared)
                        for t in range(d):
                            v[i, t] *= inverse
                else:
                    for i in range(K):
                        for l in range(K):
                            Mm[i, l] = (1.0 if i == l else 0.0) - 0.5 * (lam[i] * b[l] + b[i] * lam[l])
                    for i in range(K):
                        for t in range(d):
                            total = b[i] * drawn[t]
                            for o in range(K):
                                total += Mm[i, o] * v[o, t]
                            moved[i, t] = total
                    for i in range(K):
                        for l in range(i, K):
                            total = 0.0
                            for t in range(d):
                                total += moved[i, t] * moved[l, t]
                            S[i, l] = total
                            S[l, i] = total
                    if not (S[0, 0] < math.inf):
                        v[0, 0] = math.nan
                        break
                    inverse_square_root(S, Tm)
                    for i in range(K):
                        for t in range(d):
                            total = 0.0
                            for o in range(K):
                                total += Tm[i, o] * moved[o, t]
                            v[i, t] = total
                if trained:
                    for i in range(K):
                        a[i] -= eta_a * (h[i] + wd_a * a[i])
                if level < math.inf and hits[j] < 0 and vector_alignment(v, W, teacher_squared) >= level:
                    hits[j] = offset + step + 1
                    if stop_at_hit:
                        break
            for i in range(K):
                A[j, i] = a[i]
            streams.store_words(states[j], s0, s1, s2, s3)
        return len(version)

    return advance


def linear_sgd_constants(model, W: np.ndarray, W0: np.ndarray, eta: float) -> tuple:
    """``(kernel, constants)`` so that ``streams.run_blocks(kernel, n, Theta, B, A, states, hits, level,
    stop_at_hit, offset, steps, *constants)`` advances n trajectories of a fine-tuning student's full-d SGD
    (teacher ``W`` (M x d), base ``W0`` (K x d)).

    Parameters
    ----------
    model : CommitteeModel
    W, W0 : ndarray
    eta : float

    Returns
    -------
    tuple
    """
    from .initial import base_rows

    code_t, inner_t, *teacher = kernel_activation(model.teacher_activation)
    code_s, inner_s, *student = kernel_activation(model.student_activation)
    kernel = linear_sgd_kernel(code_t, code_s, model.noise > 0, model.train_second_layer, model.train_coefficients, CONSTRAINT_CODES[model.constraint], model.weight_decay > 0, model.orthogonal_to_base)
    reals = np.array([eta, eta * model.second_layer_ratio, model.teacher_scale, model.student_scale, model.noise, float(model.loss_factor), model.weight_decay, model.second_layer_weight_decay, 0.0, inner_t, inner_s, eta * model.coefficient_ratio])
    a_star = np.ascontiguousarray(model.teacher_second_layer, dtype=float)
    W = np.ascontiguousarray(W, dtype=float)
    W0 = np.ascontiguousarray(W0, dtype=float)
    rows = np.ascontiguousarray(base_rows(W0) if model.orthogonal_to_base else np.zeros((0, W.shape[1])))
    return kernel, (W, W0, rows, a_star, np.sum(W * W, axis=1), reals, *teacher, *student)


@specialised
def linear_sgd_kernel(code_t: int, code_s: int, noisy: bool, trained: bool, trained_b: bool, constraint: int, decay: bool, perp: bool):
    """``advance`` of a fine-tuning student's full-d SGD (switches as :func:`.chain.linear_chain_kernel`)::

        advance(start, stop, Theta, Bc, A, states, hits, level, stop_at_hit, offset, steps, W, W0, rows, a_star,
                teacher_squared, reals, tp, tops, targs, tdops, tdargs, sp, sops, sargs, sdops, sdargs)

    with Theta (n, r, d), Bc (n, K, r), A (n, K) moved in place; ``rows`` orthonormal rows spanning W0 (the
    projection of ``orthogonal_to_base``)."""
    version = SOURCE_VERSION

    @njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
    def advance(start, stop, Theta, Bc, A, states, hits, level, stop_at_hit, offset, steps, W, W0, rows, a_star, teacher_squared, reals, tp, tops, targs, tdops, tdargs, sp, sops, sargs, sdops, sdargs):
        eta, eta_a, wd, wd_a, eta_b = reals[0], reals[1], reals[6], reals[7], reals[11]
        M, d = W.shape
        K = A.shape[1]
        r = Theta.shape[1]
        k0 = rows.shape[0]
        shrink = 1.0 - eta * wd if decay and constraint == 0 else 1.0
        shrink_b = 1.0 - eta_b * wd if decay else 1.0
        drawn = np.empty(d + (1 if noisy else 0))
        xp = np.empty(d)
        coordinates = np.empty(max(k0, 1))
        nu = np.empty(M)
        lam = np.empty(K)
        u = np.empty(r)
        up = np.empty(r)
        g = np.empty(K)
        h = np.empty(K)
        b = np.empty(r)
        a = np.empty(K)
        bc = np.empty((K, r))
        Mm = np.empty((r, r))
        S = np.empty((r, r))
        Tm = np.empty((r, r))
        moved = np.empty((r, d))
        v = np.empty((K, d))
        stack = np.empty(STACK_SIZE)
        for j in range(start, stop):
            if stop_at_hit and hits[j] >= 0:
                continue
            th = Theta[j]
            for i in range(K):
                a[i] = A[j, i]
                for k in range(r):
                    bc[i, k] = Bc[j, i, k]
            s0, s1, s2, s3 = streams.load_words(states[j])
            for step in range(steps):
                _, s0, s1, s2, s3 = streams.fill_normal_chi_square(drawn, 0.0, s0, s1, s2, s3)
                eps = drawn[d] if noisy else 0.0
                for n in range(M):
                    total = 0.0
                    for t in range(d):
                        total += W[n, t] * drawn[t]
                    nu[n] = total
                for k in range(r):
                    total = 0.0
                    for t in range(d):
                        total += th[k, t] * drawn[t]
                    u[k] = total
                for i in range(K):
                    total = 0.0
                    for t in range(d):
                        total += W0[i, t] * drawn[t]
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
                # the gradient's x, projected off the base's span where asked; Theta x' for the tangent projection
                for t in range(d):
                    xp[t] = drawn[t]
                if perp:
                    for o in range(k0):
                        total = 0.0
                        for t in range(d):
                            total += rows[o, t] * drawn[t]
                        coordinates[o] = total
                    for t in range(d):
                        total = drawn[t]
                        for o in range(k0):
                            total -= coordinates[o] * rows[o, t]
                        xp[t] = total
                    for k in range(r):
                        total = 0.0
                        for t in range(d):
                            total += th[k, t] * xp[t]
                        up[k] = total
                else:
                    for k in range(r):
                        up[k] = u[k]
                if constraint == 0:
                    for k in range(r):
                        for t in range(d):
                            th[k, t] = shrink * th[k, t] + b[k] * xp[t]
                elif constraint == 1:
                    for k in range(r):
                        factor = 1.0 - b[k] * up[k]
                        squared = 0.0
                        for t in range(d):
                            value = factor * th[k, t] + b[k] * xp[t]
                            th[k, t] = value
                            squared += value * value
                        inverse = 1.0 / math.sqrt(squared)
                        for t in range(d):
                            th[k, t] *= inverse
                else:
                    for k in range(r):
                        for l in range(r):
                            Mm[k, l] = (1.0 if k == l else 0.0) - 0.5 * (up[k] * b[l] + b[k] * up[l])
                    for k in range(r):
                        for t in range(d):
                            total = b[k] * xp[t]
                            for o in range(r):
                                total += Mm[k, o] * th[o, t]
                            moved[k, t] = total
                    for k in range(r):
                        for l in range(k, r):
                            total = 0.0
                            for t in range(d):
                                total += moved[k, t] * moved[l, t]
                            S[k, l] = total
                            S[l, k] = total
                    if not (S[0, 0] < math.inf):
                        th[0, 0] = math.nan
                        break
                    inverse_square_root(S, Tm)
                    for k in range(r):
                        for t in range(d):
                            total = 0.0
                            for o in range(r):
                                total += Tm[k, o] * moved[o, t]
                            th[k, t] = total
                if trained:
                    for i in range(K):
                        a[i] -= eta_a * (h[i] + wd_a * a[i])
                if level < math.inf and hits[j] < 0:
                    for i in range(K):
                        for t in range(d):
                            total = W0[i, t]
                            for k in range(r):
                                total += bc[i, k] * th[k, t]
                            v[i, t] = total
                    if vector_alignment(v, W, teacher_squared) >= level:
                        hits[j] = offset + step + 1
                        if stop_at_hit:
                            break
            for i in range(K):
                A[j, i] = a[i]
                for k in range(r):
                    Bc[j, i, k] = bc[i, k]
            streams.store_words(states[j], s0, s1, s2, s3)
        return len(version)

    return advance
