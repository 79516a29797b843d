"""Online SGD in dimension d (MATH.md §4): the paper's update, compiled per activation.

Fresh ``x ~ N(0, I_d)`` per step, per-sample gradient ``-A x``, projection onto span(W)^perp, tangent
projection and normalisation. ``basis`` (rank x d) spans span(W) and the kernel receives W in that basis,
so the pre-activations ``a = W (basis x)`` reuse the coordinates the projection needs. ``structured``
selects the rotated geometry (span(W) = the first rank coordinates, u = e_rank): the same law at O(k rank + d)
per step instead of O(d rank).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ...dynamics.trajectories import record_hit
from ...gaussian.programs import STACK_SIZE
from ...numerics import random_streams as streams
from ...numerics.compiled import SOURCE_VERSION, specialised
from ...numerics.linalg import copy_into, matvec, normalise, subtract_rows
from .gradients import gradient_coefficient
from .overlaps import c_hat_gradient, gram_plus, inverse_square_root, neuron_terms, overlap_reaches, row_products, sample_buffers, weighted_columns

__all__ = ["initial_directions", "sgd_kernel", "general_sgd_kernel"]

#: steps between re-projections of u_hat onto span(W)^perp (general geometry)
REPROJECT = 16


@njit(cache=True, nogil=True)
def initial_directions(start, stop, u_hat, states, seed, first, u, basis, m0):
    """u_hat uniform on the unit sphere of span(W)^perp (m0 is nan) or with <u, u_hat> = m0; seeds the
    trajectories' streams."""
    d = u_hat.shape[1]
    v = np.empty(d)
    for j in range(start, stop):
        streams.seed_stream(seed, streams.TRAJECTORIES, first + j, states[j])
        streams.fill_normal(states[j], v)
        for r in range(basis.shape[0]):
            along = 0.0
            for l in range(d):
                along += basis[r, l] * v[l]
            for l in range(d):
                v[l] -= along * basis[r, l]
        if not math.isnan(m0):
            along = 0.0
            for l in range(d):
                along += u[l] * v[l]
            for l in range(d):
                v[l] -= along * u[l]
        normalise(v)
        if not math.isnan(m0):
            for l in range(d):
                v[l] = m0 * u[l] + math.sqrt(1.0 - m0 * m0) * v[l]
        copy_into(v, u_hat[j])


@specialised
def sgd_kernel(code: int, structured: bool):
    """``advance`` for the activation fast path ``code`` and the geometry (compile-time constants), run on
    blocks of trajectories by :func:`popgrad.numerics.random_streams.run_blocks`. Unlike the chain, a
    parallel loop was not faster here (measured: 128 vs 126 k steps/s, general W, d = 1000) and compiled
    4 s slower."""
    version = SOURCE_VERSION

    @njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
    def advance(start, stop, u_hat, states, m_out, hits, level, stop_at_hit, offset, W, basis, u, eta, steps, lam, c, c_hat, xi, n_t, n_s, parameters, ops, args, d_ops, d_args):
        """``steps`` steps of trajectories start..stop-1 from step ``offset``; ``m_out[j]`` gets the overlap
        and ``hits[j]`` (-1 until then) the first step with m^2 >= ``level``, where trajectory j stops when
        ``stop_at_hit``."""
        d = u_hat.shape[1]
        k = W.shape[0]
        rank = basis.shape[0]
        for j in range(start, stop):
            if stop_at_hit and hits[j] >= 0:
                continue
            x = np.empty(d)
            a = np.empty(k)
            coords = np.empty(rank)
            stack = np.empty(STACK_SIZE)
            state = states[j].copy()  # a private copy of the stream state (see chain.chain_kernel)
            v = u_hat[j]
            overlap = m_out[j]
            for step in range(steps):
                streams.fill_normal(state, x)
                if structured:
                    matvec(W, x, a, False)
                    for r in range(rank):
                        x[r] = 0.0  # P_W^perp x
                    g = x[rank]
                    g_hat = 0.0
                    for l in range(d):
                        g_hat += v[l] * x[l]
                else:
                    g = 0.0
                    g_hat = 0.0
                    for l in range(d):
                        g += u[l] * x[l]
                        g_hat += v[l] * x[l]  # u_hat ⟂ span(W): <u_hat, x> = <u_hat, P x>
                    matvec(basis, x, coords, False)
                    matvec(W, coords, a, False)
                    subtract_rows(basis, coords, x)
                coefficient, _ = gradient_coefficient(code, a, g, g_hat, lam, c, c_hat, xi, n_t, n_s, parameters, ops, args, d_ops, d_args, stack)
                move = eta * coefficient
                norm = 0.0
                along = 0.0
                for l in range(d):
                    v[l] += move * (x[l] - g_hat * v[l])
                    norm += v[l] * v[l]
                    along += u[l] * v[l]
                norm = math.sqrt(norm)
                if not (0.0 < norm < math.inf):
                    norm = math.nan  # overflow: report it rather than normalise to a zero vector
                scale = 1.0 / norm
                for l in range(d):
                    v[l] *= scale
                overlap = along * scale
                if not structured and (offset + step) % REPROJECT == REPROJECT - 1:
                    # u_hat's component in span(W) is never driven by the update, but it is multiplied by
                    # (1 - eta A g_hat) / norm each step, which grows it geometrically when E[A g_hat] < 0:
                    # rounding errors of 1e-16 reached O(1) within 4e4 steps (d = 200, eta = 1e-3,
                    # measured). Projecting it out every REPROJECT steps keeps it at rounding level.
                    matvec(basis, v, coords, False)
                    subtract_rows(basis, coords, v)
                    normalise(v)
                if record_hit(hits, j, overlap, level, offset + step + 1) and stop_at_hit:
                    break
            copy_into(state, states[j])
            m_out[j] = overlap
        return len(version)

    return advance


@njit(cache=True, inline="always")
def _polar(V, S, T, scratch):
    """``V <- (V V^T)^(-1/2) V`` given ``S = V V^T`` (rows of V: the columns of U_hat); ``scratch`` holds
    at least one row of r numbers."""
    r, d = V.shape
    inverse_square_root(S, T)
    for q in range(d):
        for l in range(r):
            scratch[0, l] = 0.0
            for m in range(r):
                scratch[0, l] += T[l, m] * V[m, q]
        for l in range(r):
            V[l, q] = scratch[0, l]


@specialised
def general_sgd_kernel(code: int, normalized: bool, constrained: bool, joint: bool, linear: bool, rank: int):
    """``advance`` of full-d online SGD for the general model (MATH.md §4b), the independent check of
    :func:`.overlaps.general_chain_kernel`: explicit vectors in R^d, the student's columns stored as the
    rows of ``V`` (r x d), every inner product computed from them, the gradient of ``(f* - f_hat)^2``
    formed in R^d, projected onto span(W)^perp (``constrained``, with ``QW`` orthonormal rows spanning
    span(W)) and onto the tangent space, then the polar retraction ``X (X^T X)^(-1/2)``.

    ``reals`` = (eta, eta_c, xi, s_out); ``w_squared`` the squared row norms of W."""
    version = SOURCE_VERSION

    @njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract", "nsz"})
    def advance(start, stop, V_all, Ch, states, hits, level, stop_at_hit, offset, steps, W, QW, U, C, lam, inverse_teacher, w_squared, reals, parameters, ops, args, d_ops, d_args):
        eta, eta_c, xi, s_out = reals[0], reals[1], reals[2], reals[3]
        k, d = W.shape
        rank_w = QW.shape[0]
        rs = U.shape[0]
        r = rank  # a compile-time constant
        x = np.empty(d)
        a, g, gh, P, S, beta, kappa, av, H, work, T, O, grad_c, stack = sample_buffers(k, rs, r)
        coords = np.empty(rank_w)
        Gd = np.empty((r, d))
        zero = np.zeros((r, r))
        for j in range(start, stop):
            V, ch, state = V_all[j], Ch[j], states[j].copy()
            if stop_at_hit and hits[j] >= 0:
                continue
            for step in range(steps):
                streams.fill_normal(state, x)
                matvec(W, x, a, False)
                matvec(U, x, g, False)
                matvec(V, x, gh, False)
                gram_plus(zero, V.T, S)
                if normalized:
                    row_products(W, V, P)
                neuron_terms(code, normalized, linear, a, g, gh, C, ch, P, S, w_squared, inverse_teacher, lam, xi, s_out, beta, kappa, parameters, ops, args, d_ops, d_args, stack)
                weighted_columns(beta, ch, av)
                # the Euclidean gradient in R^d: G_l = av_l x - sum_i kappa_i ch_il (w_i + xi sum_m ch_im V_m)
                for l in range(r):
                    for q in range(d):
                        Gd[l, q] = av[l] * x[q]
                    if normalized:
                        for i in range(k):
                            weight = kappa[i] * ch[i, l]
                            for q in range(d):
                                Gd[l, q] -= weight * W[i, q]
                            for m in range(r if not linear else 0):
                                along = weight * xi * ch[i, m]
                                for q in range(d):
                                    Gd[l, q] -= along * V[m, q]
                    if constrained:
                        matvec(QW, Gd[l], coords, False)
                        subtract_rows(QW, coords, Gd[l])
                if joint:
                    c_hat_gradient(normalized, linear, beta, kappa, gh, P, S, ch, xi, grad_c)
                # tangent projection G - U_hat sym(U_hat^T G), then X = U_hat - eta G_tan
                row_products(V, Gd, H)
                for l in range(r):
                    for m in range(r):
                        symmetric = 0.5 * (H[m, l] + H[l, m])
                        for q in range(d):
                            Gd[l, q] -= symmetric * V[m, q]
                for l in range(r):
                    for q in range(d):
                        V[l, q] -= eta * Gd[l, q]
                gram_plus(zero, V.T, work)
                if not (work[0, 0] < math.inf):
                    for l in range(r):
                        for q in range(d):
                            V[l, q] = math.nan
                    break
                _polar(V, work, T, H)
                if constrained and (offset + step) % REPROJECT == REPROJECT - 1:
                    # as in sgd_kernel: rounding in span(W) would grow; project it out and re-orthonormalise
                    for l in range(r):
                        matvec(QW, V[l], coords, False)
                        subtract_rows(QW, coords, V[l])
                    gram_plus(zero, V.T, work)
                    _polar(V, work, T, H)
                if joint:
                    for i in range(k):
                        for l in range(r):
                            ch[i, l] -= eta_c * grad_c[i, l]
                if level < math.inf and hits[j] < 0 and overlap_reaches(level, U, V, O):
                    hits[j] = offset + step + 1
                    if stop_at_hit:
                        break
            copy_into(state, states[j])
        return len(version)

    return advance
