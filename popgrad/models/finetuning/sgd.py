"""Online SGD in dimension d (MATH.md §4): the paper's update, compiled per activation.

Fresh ``x ~ N(0, I_d)`` per step, per-sample gradient ``-A x``, projection onto span(W)^perp, tangent
projection and normalisation. ``basis`` (rank x d) spans span(W) and the kernel receives W in that basis,
so the pre-activations ``a = W (basis x)`` reuse the coordinates the projection needs. ``structured``
selects the rotated geometry (span(W) = the first rank coordinates, u = e_rank): the same law at O(k rank + d)
per step instead of O(d rank).

The general model (MATH.md §4b): :func:`general_sgd_stepper` runs :func:`general_sgd_kernel` on blocks of
trajectories that share each pass over W.

(About 690 lines, one job — SGD in dimension d — for the rank-1 model and the general one, whose kernels
share the plain numba helpers here and in :mod:`.overlaps`; one file keeps numba's per-file cache of those
helpers in step with their edits.)
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ...dynamics.trajectories import record_hit
from ...gaussian.programs import STACK_SIZE
from ...numerics import random_streams as streams
from ...numerics.compiled import SOURCE_VERSION, specialised
from ...numerics.linalg import copy_into, inverse_square_root, matvec, normalise, subtract_rows
from .gradients import gradient_coefficient
from .overlaps import c_hat_gradient, neuron_terms, sample_buffers, smallest_squared_singular_value, weighted_columns

__all__ = ["general_sgd_kernel", "general_sgd_stepper", "initial_directions", "sgd_kernel"]

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


#: trajectories that :func:`general_sgd_kernel` advances together, step by step: one pass over W (or the
#: basis) per step serves all of them
BLOCK = 8
#: columns per tile: the block's samples meet a tile of every row of W (or the basis) while it is in cache
TILE = 512
FAST = {"reassoc", "contract", "nsz"}  # the fastmath flags of the kernels below
#: steps between foldings of E into the students' d-vectors in :func:`general_sgd_kernel`: each costs two
#: passes over R (64 instead of 16: 10.7 instead of 11.3 us per trajectory and step at d = 2000, k = 50,
#: measured). The growth of rounding along span(W) that REPROJECT bounds (1e-16 to O(1) in 4e4 steps at
#: d = 200, eta = 1e-3) is 6% over 64 steps
ABSORB = 64


@njit(cache=True, nogil=True, fastmath=FAST)
def _quad_products(R, x0, x1, x2, x3, q0, n, out0, out1, out2, out3):
    """``out_v[i] += <R_i, x_v>`` over the columns q0..q0+n-1, for every row of R and the four vectors x_v.

    Four vectors share each load of R, four rows at a time (measured: 51 GFLOP/s at d = 2000, k = 50, against
    36 for two vectors). Each sum is formed by the same instructions whichever place its vector takes and
    whatever the others are, so a trajectory's numbers do not depend on the trajectories it shares a block
    with (the tests compare blockings bit for bit)."""
    rows = R.shape[0]
    y0, y1, y2, y3 = x0[q0 : q0 + n], x1[q0 : q0 + n], x2[q0 : q0 + n], x3[q0 : q0 + n]
    i = 0
    while i + 4 <= rows:
        r0, r1, r2, r3 = R[i, q0 : q0 + n], R[i + 1, q0 : q0 + n], R[i + 2, q0 : q0 + n], R[i + 3, q0 : q0 + n]
        s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = 0.0
        for q in range(n):
            c0, c1, c2, c3 = r0[q], r1[q], r2[q], r3[q]
            e = y0[q]
            s00 += c0 * e
            s01 += c1 * e
            s02 += c2 * e
            s03 += c3 * e
            e = y1[q]
            s10 += c0 * e
            s11 += c1 * e
            s12 += c2 * e
            s13 += c3 * e
            e = y2[q]
            s20 += c0 * e
            s21 += c1 * e
            s22 += c2 * e
            s23 += c3 * e
            e = y3[q]
            s30 += c0 * e
            s31 += c1 * e
            s32 += c2 * e
            s33 += c3 * e
        out0[i] += s00
        out0[i + 1] += s01
        out0[i + 2] += s02
        out0[i + 3] += s03
        out1[i] += s10
        out1[i + 1] += s11
        out1[i + 2] += s12
        out1[i + 3] += s13
        out2[i] += s20
        out2[i + 1] += s21
        out2[i + 2] += s22
        out2[i + 3] += s23
        out3[i] += s30
        out3[i + 1] += s31
        out3[i + 2] += s32
        out3[i + 3] += s33
        i += 4
    while i < rows:
        r0 = R[i, q0 : q0 + n]
        s00 = s10 = s20 = s30 = 0.0
        for q in range(n):
            c0 = r0[q]
            s00 += c0 * y0[q]
            s10 += c0 * y1[q]
            s20 += c0 * y2[q]
            s30 += c0 * y3[q]
        out0[i] += s00
        out1[i] += s10
        out2[i] += s20
        out3[i] += s30
        i += 1


@njit(cache=True, nogil=True)
def _products(R, vectors, out, items, count, q0, n, zero, spare):
    """``out[v] += R vectors[v]`` over the columns q0..q0+n-1 for the rows v = ``items[:count]``, four at a
    time; the last group is completed with ``zero`` (a zero d-vector) whose products go to ``spare`` (3 x
    rows of R)."""
    for p in range(0, count, 4):
        v0 = items[p]
        v1 = items[p + 1] if p + 1 < count else -1
        v2 = items[p + 2] if p + 2 < count else -1
        v3 = items[p + 3] if p + 3 < count else -1
        _quad_products(
            R,
            vectors[v0],
            vectors[v1] if v1 >= 0 else zero,
            vectors[v2] if v2 >= 0 else zero,
            vectors[v3] if v3 >= 0 else zero,
            q0,
            n,
            out[v0],
            out[v1] if v1 >= 0 else spare[0],
            out[v2] if v2 >= 0 else spare[1],
            out[v3] if v3 >= 0 else spare[2],
        )


@njit(cache=True, nogil=True, fastmath=FAST)
def _add_rows(R, coefficients, v, q0, n):
    """``v[q0:q0+n] += sum_i coefficients[i] R_i[q0:q0+n]``, four rows at a time."""
    rows = R.shape[0]
    vs = v[q0 : q0 + n]
    i = 0
    while i + 4 <= rows:
        r0, r1, r2, r3 = R[i, q0 : q0 + n], R[i + 1, q0 : q0 + n], R[i + 2, q0 : q0 + n], R[i + 3, q0 : q0 + n]
        c0, c1, c2, c3 = coefficients[i], coefficients[i + 1], coefficients[i + 2], coefficients[i + 3]
        for q in range(n):
            vs[q] += c0 * r0[q] + c1 * r1[q] + c2 * r2[q] + c3 * r3[q]
        i += 4
    while i < rows:
        r0 = R[i, q0 : q0 + n]
        c0 = coefficients[i]
        for q in range(n):
            vs[q] += c0 * r0[q]
        i += 1


@njit(cache=True, nogil=True, fastmath=FAST)
def _dot(x, y, q0, n):
    """``<x, y>`` over the columns q0..q0+n-1."""
    xs = x[q0 : q0 + n]
    ys = y[q0 : q0 + n]
    total = 0.0
    for q in range(n):
        total += xs[q] * ys[q]
    return total


@njit(cache=True, nogil=True, fastmath=FAST)
def _sample_products(x, V, U, q0, n, sums, gx, ghs, Ss, Os):
    """Add the tile q0..q0+n-1 of ``|x|^2`` (to ``sums[0]``), ``U x``, ``V x``, ``V V^T`` (lower triangle)
    and ``U V^T``; one loop for all five when r = r* = 1."""
    r, rs = V.shape[0], U.shape[0]
    if r == 1 and rs == 1:
        xs, vs, us = x[q0 : q0 + n], V[0, q0 : q0 + n], U[0, q0 : q0 + n]
        xx = ux = vx = vv = uv = 0.0
        for q in range(n):
            e, f, g = xs[q], vs[q], us[q]
            xx += e * e
            ux += g * e
            vx += f * e
            vv += f * f
            uv += g * f
        sums[0] += xx
        gx[0] += ux
        ghs[0] += vx
        Ss[0, 0] += vv
        Os[0, 0] += uv
        return
    sums[0] += _dot(x, x, q0, n)
    for l in range(r):
        ghs[l] += _dot(V[l], x, q0, n)
        for m in range(l + 1):
            Ss[l, m] += _dot(V[l], V[m], q0, n)
    for m in range(rs):
        gx[m] += _dot(U[m], x, q0, n)
        for l in range(r):
            Os[m, l] += _dot(U[m], V[l], q0, n)


@njit(cache=True, nogil=True)
def _absorb(rows, E, EG, PsT, R, items, count, add, zero, spare):
    """For the rows ``items[:count]`` of ``rows`` (trajectory j, column l of U_hat at j r + l): ``rows +=
    E R`` when ``add`` (the deferred part of the student, see :func:`general_sgd_kernel`), ``E = EG = 0`` and
    ``PsT = rows R^T`` computed afresh; tile by tile, so that R is read once for all of them. ``zero``: a
    zero d-vector, ``spare``: 3 x rows of R."""
    d = rows.shape[1]
    for p in range(count):
        for i in range(R.shape[0]):
            PsT[items[p], i] = 0.0
    for q0 in range(0, d, TILE):
        n = min(TILE, d - q0)
        if add:
            for p in range(count):
                _add_rows(R, E[items[p]], rows[items[p]], q0, n)
        _products(R, rows, PsT, items, count, q0, n, zero, spare)
    for p in range(count):
        for i in range(R.shape[0]):
            E[items[p], i] = 0.0
            EG[items[p], i] = 0.0


@njit(cache=True, nogil=True, fastmath=FAST)
def _student_products(constrained, E, PsT, EG, aR, ghs, Ss, gx, WQ, a, g, gh, P, S, PRT):
    """The sample's and the student's inner products from the tracked ones (U_hat^T = rows + E R): ``PRT =
    U_hat^T R^T``, ``gh = U_hat^T x``, ``S = U_hat^T U_hat``, ``g = U^T x``, ``a = W x`` (``WQ a_R`` when
    constrained) and ``P = W U_hat`` (left 0 when constrained: U_hat is kept in span(W)^perp)."""
    r, m_R = E.shape
    for l in range(r):
        for i in range(m_R):
            PRT[l, i] = PsT[l, i] + EG[l, i]
        total = ghs[l]
        for i in range(m_R):
            total += E[l, i] * aR[i]
        gh[l] = total
        for m in range(l + 1):
            total = Ss[l, m]
            for i in range(m_R):
                total += PsT[l, i] * E[m, i] + E[l, i] * PsT[m, i] + EG[l, i] * E[m, i]
            S[l, m] = total
            S[m, l] = total
    for m in range(gx.shape[0]):
        g[m] = gx[m]
    if constrained:
        for i in range(a.shape[0]):
            total = 0.0
            for m in range(m_R):
                total += WQ[i, m] * aR[m]
            a[i] = total
    else:
        for i in range(a.shape[0]):
            a[i] = aR[i]
            for l in range(r):
                P[i, l] = PRT[l, i]


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _step(constrained, curved, eta, xi, av, kappa, ch, aR, xx, gh, S, PRT, GR, E, PsT, EG, TA, Tb, Zg, ZG, square, vector):
    """The step's coefficients ``U_hat' = TA rows + Tb x^T + E' R`` from the sample's gradient (``av``,
    ``kappa``: :func:`.overlaps.neuron_terms`), and the tracked E, PsT and EG carried to the new student;
    False (and nothing carried) when the Gram matrix of the retraction overflows.

    The Euclidean gradient is ``G_l = av_l x + sum_i Zg_li R_i - sum_m M_lm U_hat_m``, R's part being
    ``-kappa_i c_hat_il w_i`` (free) or ``-av_l a_R`` (the projection of x, constrained), M the curvature of
    the exact normalized student (``curved``). With ``H = U_hat^T G``, ``X = U_hat - eta (G - U_hat sym(H)) =
    A U_hat + b x^T + Z R`` (``Z = -eta Zg``), its Gram matrix K follows in closed form and ``T =
    K^(-1/2)``. Scratch: ``Zg``, ``ZG`` (r x rows of R), ``square`` (6 x r x r), ``vector`` (6 x r)."""
    r, m_R = E.shape
    M, ZP, A, H, K, T = square[0], square[1], square[2], square[3], square[4], square[5]
    b, Agh, Za, moved = vector[0], vector[1], vector[2], vector[3:]
    for l in range(r):
        for m in range(r):
            total = 0.0
            if curved:
                for i in range(kappa.shape[0]):
                    total += kappa[i] * ch[i, l] * ch[i, m]
            M[l, m] = xi * total
    for l in range(r):
        for i in range(m_R):
            Zg[l, i] = -av[l] * aR[i] if constrained else -kappa[i] * ch[i, l]
        total = 0.0
        for i in range(m_R):
            total += Zg[l, i] * aR[i]
        Za[l] = -eta * total
        for m in range(r):
            total = 0.0
            for i in range(m_R):
                total += Zg[l, i] * PRT[m, i]
            ZP[l, m] = total
        for i in range(m_R):
            if constrained:
                ZG[l, i] = -eta * Zg[l, i]  # R R^T = I
            else:
                total = 0.0
                for m in range(m_R):
                    total += Zg[l, m] * GR[i, m]  # GR is symmetric
                ZG[l, i] = -eta * total
    for l in range(r):
        for m in range(r):
            total = av[l] * gh[m] + ZP[l, m]
            for n in range(r):
                total -= M[l, n] * S[n, m]
            H[m, l] = total
    for l in range(r):
        b[l] = -eta * av[l]
        for m in range(r):
            A[l, m] = (1.0 if l == m else 0.0) + eta * (0.5 * (H[l, m] + H[m, l]) + M[l, m])
    for l in range(r):
        total = 0.0
        for m in range(r):
            total += A[l, m] * gh[m]
        Agh[l] = total
    for l in range(r):
        for m in range(l + 1):
            total = xx * b[l] * b[m] + Agh[l] * b[m] + b[l] * Agh[m] + b[l] * Za[m] + Za[l] * b[m]
            for n in range(r):
                for o in range(r):
                    total += A[l, n] * S[n, o] * A[m, o]
                total -= eta * (A[l, n] * ZP[m, n] + ZP[l, n] * A[m, n])
            for i in range(m_R):
                total -= eta * ZG[l, i] * Zg[m, i]
            K[l, m] = total
            K[m, l] = total
    if not (K[0, 0] < math.inf):
        return False
    inverse_square_root(K, T)
    for l in range(r):
        total = 0.0
        for m in range(r):
            total += T[l, m] * b[m]
        Tb[l] = total
        for m in range(r):
            total = 0.0
            for n in range(r):
                total += T[l, n] * A[n, m]
            TA[l, m] = total
    # E' = TA E + T Z, PsT' = TA PsT + Tb a_R^T, EG' = TA EG + T ZG (EG is E itself when constrained)
    if r == 1:  # the loop below with its trip counts of 1 cost 1 us per step at k = 50 (measured)
        scale, along, t = TA[0, 0], Tb[0], T[0, 0]
        for i in range(m_R):
            E[0, i] = scale * E[0, i] - eta * t * Zg[0, i]
            PsT[0, i] = scale * PsT[0, i] + along * aR[i]
            if not constrained:
                EG[0, i] = scale * EG[0, i] + t * ZG[0, i]
        return True
    for i in range(m_R):
        for l in range(r):
            e_total = 0.0
            p_total = Tb[l] * aR[i]
            g_total = 0.0
            for m in range(r):
                e_total += TA[l, m] * E[m, i] - eta * T[l, m] * Zg[m, i]
                p_total += TA[l, m] * PsT[m, i]
                g_total += TA[l, m] * EG[m, i] + T[l, m] * ZG[m, i]
            moved[0, l] = e_total
            moved[1, l] = p_total
            moved[2, l] = g_total
        for l in range(r):
            E[l, i] = moved[0, l]
            PsT[l, i] = moved[1, l]
            if not constrained:
                EG[l, i] = moved[2, l]
    return True


@specialised
def general_sgd_kernel(code: int, normalized: bool, constrained: bool, joint: bool, linear: bool, rank: int):
    """``advance`` of full-d online SGD for the general model (MATH.md §4b), the independent check of
    :func:`.overlaps.general_chain_kernel`: explicit samples x in R^d and the student's columns in R^d, the
    gradient of ``(f* - f_hat)^2`` projected onto span(W)^perp (``constrained``) and onto the tangent space,
    then the polar retraction ``X (X^T X)^(-1/2)``. Run through :func:`general_sgd_stepper`.

    Trajectories advance in blocks of :data:`BLOCK`, step-major: each step draws x for every trajectory of
    the block (its own stream, in its own order) and meets R, a tile at a time, once for all of them. R is W
    (free) or ``QW``, orthonormal rows spanning span(W) (constrained, where ``W x = WQ QW x``), and a sample
    meets it only through ``a_R = R x``: the student is kept as ``U_hat^T = rows + E R`` (E: r x rows of R
    per trajectory), so that the gradient's part along the rows of R (``-kappa_i c_hat_i w_i`` when free,
    the projection of x when constrained) moves E instead of d-vectors, with ``PsT = rows R^T`` and ``EG = E
    R R^T`` carried by the same update. Every inner product of the step (W U_hat, U_hat^T U_hat, U^T U_hat,
    the tangent projection and the Gram matrix of the retraction) then follows from ``a_R``, ``rows x``,
    ``rows rows^T``, ``U x``, ``|x|^2``, E, EG and PsT, and the d-vectors move by ``rows <- TA rows + Tb x``.
    Every :data:`ABSORB` steps (counted from step 0) E is folded into the rows and PsT recomputed; when
    constrained, that is the re-projection of :func:`sgd_kernel`, and U_hat's component in span(W) (W U_hat,
    taken as 0) stays at rounding level between them. ``V_out`` (trajectories x r x d) receives ``rows + E
    R`` at the end of each call; the rest is the stepper's state between calls.

    ``rows``, E, EG, PsT: one row per column of each student (trajectory j, column l at j r + l); ``reals`` =
    (eta, eta_c, xi, s_out); ``w_squared`` the squared row norms of W; ``WQ = W QW^T``, ``GR = R R^T``, ``UR
    = U R^T``."""
    version = SOURCE_VERSION

    @njit(cache=True, nogil=True, error_model="numpy", fastmath=FAST)
    def advance(start, stop, V_out, rows, E, EG, PsT, fresh, Ch, states, hits, level, stop_at_hit, offset, steps, R, WQ, GR, UR, U, C, lam, inverse_teacher, w_squared, reals, parameters, ops, args, d_ops, d_args):
        eta, eta_c, xi, s_out = reals[0], reals[1], reals[2], reals[3]
        k = lam.shape[0]
        d = rows.shape[1]
        m_R = R.shape[0]
        rs = U.shape[0]
        r = rank  # a compile-time constant
        overlap = level < math.inf
        X = np.zeros((BLOCK + 1, d))  # row BLOCK stays zero: it completes the last group of four
        zero = X[BLOCK]
        spare = np.empty((3, m_R))
        aR = np.empty((BLOCK, m_R))
        gx = np.empty((BLOCK, rs))
        ghs = np.empty((BLOCK, r))
        xx = np.empty((BLOCK, 1))
        Ss = np.empty((BLOCK, r, r))
        Os = np.empty((BLOCK, rs, r))
        TA = np.empty((BLOCK, r, r))
        Tb = np.empty((BLOCK, r))
        words = np.empty((BLOCK, 4), dtype=np.uint64)
        live = np.zeros(BLOCK, dtype=np.bool_)
        updated = np.zeros(BLOCK, dtype=np.bool_)
        order = np.empty(BLOCK, dtype=np.int64)
        items = np.empty(BLOCK * r, dtype=np.int64)
        a, g, gh, P, S, beta, kappa, av, _, _, _, O, grad_c, stack = sample_buffers(k, rs, r)
        PRT, Zg, ZG = np.empty((r, m_R)), np.empty((r, m_R)), np.empty((r, m_R))
        square, vector = np.empty((6, r, r)), np.empty((6, r))
        column = np.empty(r)
        for first in range(start, stop, BLOCK):
            slots = min(BLOCK, stop - first)
            for s in range(slots):
                copy_into(states[first + s], words[s])  # private copies of the stream states
                live[s] = not (stop_at_hit and hits[first + s] >= 0)
                for l in range(r):
                    items[s * r + l] = (first + s) * r + l
            if fresh:
                _absorb(rows, E, EG, PsT, R, items, slots * r, False, zero, spare)
            for step in range(steps):
                active = 0
                for s in range(slots):
                    updated[s] = False
                    if live[s]:
                        order[active] = s
                        active += 1
                if active == 0:
                    break
                # the block's samples, and every inner product of d-vectors that the step needs
                for p in range(active):
                    s = order[p]
                    xx[s, 0] = 0.0
                    for i in range(m_R):
                        aR[s, i] = 0.0
                    for m in range(rs):
                        gx[s, m] = 0.0
                        for l in range(r):
                            Os[s, m, l] = 0.0
                    for l in range(r):
                        ghs[s, l] = 0.0
                        for m in range(r):
                            Ss[s, l, m] = 0.0
                for q0 in range(0, d, TILE):
                    n = min(TILE, d - q0)
                    for p in range(active):
                        s = order[p]
                        streams.fill_normal(words[s], X[s, q0 : q0 + n])
                        _sample_products(X[s], rows[(first + s) * r : (first + s + 1) * r], U, q0, n, xx[s], gx[s], ghs[s], Ss[s], Os[s])
                    _products(R, X, aR, order, active, q0, n, zero, spare)
                # per trajectory: the sample's gradient and the step's coefficients, from those products
                for p in range(active):
                    s = order[p]
                    j = first + s
                    Ej, Pj, ch = E[j * r : (j + 1) * r], PsT[j * r : (j + 1) * r], Ch[j]
                    EGj = Ej if constrained else EG[j * r : (j + 1) * r]  # R R^T = I when constrained
                    _student_products(constrained, Ej, Pj, EGj, aR[s], ghs[s], Ss[s], gx[s], WQ, a, g, gh, P, S, PRT)
                    neuron_terms(code, normalized, linear, a, g, gh, C, ch, P, S, w_squared, inverse_teacher, lam, xi, s_out, beta, kappa, parameters, ops, args, d_ops, d_args, stack)
                    weighted_columns(beta, ch, av)
                    if joint:
                        c_hat_gradient(normalized, linear, beta, kappa, gh, P, S, ch, xi, grad_c)
                    if not _step(constrained, normalized and not linear, eta, xi, av, kappa, ch, aR[s], xx[s, 0], gh, S, PRT, GR, Ej, Pj, EGj, TA[s], Tb[s], Zg, ZG, square, vector):
                        for l in range(r):
                            for q in range(d):
                                rows[j * r + l, q] = math.nan
                        live[s] = False
                        continue
                    if joint:
                        for i in range(k):
                            for l in range(r):
                                ch[i, l] -= eta_c * grad_c[i, l]
                    updated[s] = True
                    if overlap and hits[j] < 0:
                        # U^T U_hat' = Os TA^T + g Tb^T + UR E'^T
                        for m in range(rs):
                            for l in range(r):
                                total = g[m] * Tb[s, l]
                                for n in range(r):
                                    total += Os[s, m, n] * TA[s, l, n]
                                for i in range(m_R):
                                    total += UR[m, i] * Ej[l, i]
                                O[m, l] = total
                        if smallest_squared_singular_value(O) >= level:
                            hits[j] = offset + step + 1
                            if stop_at_hit:
                                live[s] = False
                # the d-vectors: rows <- TA rows + Tb x
                for p in range(active):
                    s = order[p]
                    if not updated[s]:
                        continue
                    V = rows[(first + s) * r : (first + s + 1) * r]
                    x = X[s]
                    if r == 1:
                        scale, along = TA[s, 0, 0], Tb[s, 0]
                        v = V[0]
                        for q in range(d):
                            v[q] = scale * v[q] + along * x[q]
                    else:
                        for q in range(d):
                            for l in range(r):
                                total = Tb[s, l] * x[q]
                                for m in range(r):
                                    total += TA[s, l, m] * V[m, q]
                                column[l] = total
                            for l in range(r):
                                V[l, q] = column[l]
                if (offset + step) % ABSORB == ABSORB - 1:
                    count = 0
                    for s in range(slots):
                        if updated[s]:
                            for l in range(r):
                                items[count] = (first + s) * r + l
                                count += 1
                    _absorb(rows, E, EG, PsT, R, items, count, True, zero, spare)
            for s in range(slots):
                copy_into(words[s], states[first + s])
                for l in range(r):
                    copy_into(rows[(first + s) * r + l], V_out[first + s, l])
            for q0 in range(0, d, TILE):
                n = min(TILE, d - q0)
                for s in range(slots):
                    for l in range(r):
                        _add_rows(R, E[(first + s) * r + l], V_out[first + s, l], q0, n)
        return len(version)

    return advance


@njit(cache=True, nogil=True)
def _row_products(start, stop, A, B, out):
    """``out[i] = A_i B^T`` for rows start..stop-1 of A (``out`` rows x rows of B)."""
    for i in range(start, stop):
        for l in range(B.shape[0]):
            out[i, l] = _dot(A[i], B[l], 0, A.shape[1])


def general_sgd_stepper(code: int, normalized: bool, constrained: bool, joint: bool, linear: bool, rank: int, V, W, QW, U, C, lam, inverse_teacher, w_squared, reals, parameters, ops, args, d_ops, d_args):
    """``advance(Ch, states, hits, level, stop_at_hit, offset, steps)``: full-d SGD of the general model for
    the students ``V`` (trajectories x r x d, their columns as rows; rewritten at the end of every call), by
    :func:`general_sgd_kernel` on blocks of trajectories (:func:`.random_streams.run_blocks`).

    ``W`` (k x d), ``QW`` (orthonormal rows spanning span(W)) and ``U`` (r* x d) may be any dense geometry.
    The stepper keeps the kernel's representation of the students between calls (``V`` is written, not
    read, after the first call), so a run's numbers depend neither on how its steps are split into calls nor
    on the number of threads or how trajectories share blocks."""
    kernel = general_sgd_kernel(code, normalized, constrained, joint, linear, rank)
    R = np.ascontiguousarray(QW if constrained else W, dtype=np.float64)

    def products(A, B):
        # compiled, not BLAS: the same numbers whatever the library's threads
        out = np.empty((A.shape[0], B.shape[0]))
        _row_products(0, A.shape[0], np.ascontiguousarray(A, dtype=np.float64), np.ascontiguousarray(B, dtype=np.float64), out)
        return out

    GR = products(R, R)
    if constrained and not np.allclose(GR, np.eye(R.shape[0]), rtol=0.0, atol=1e-12):
        raise ValueError("QW must have orthonormal rows")
    WQ = products(W, QW) if constrained else np.zeros((0, 0))
    UR = products(U, R)
    rows = np.array(V, dtype=np.float64).reshape(V.shape[0] * rank, V.shape[2])
    E = np.zeros((rows.shape[0], R.shape[0]))
    EG = np.zeros_like(E)
    PsT = np.empty_like(E)
    fresh = [True]

    def advance(Ch, states, hits, level, stop_at_hit, offset, steps):
        streams.run_blocks(kernel, V.shape[0], V, rows, E, EG, PsT, fresh[0], Ch, states, hits, level, stop_at_hit, offset, steps, R, WQ, GR, UR, U, C, lam, inverse_teacher, w_squared, reals, parameters, ops, args, d_ops, d_args)
        fresh[0] = False

    return advance
