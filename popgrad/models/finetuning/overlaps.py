"""The exact state chain of the general model (MATH.md §4b): one SGD step in law, at a cost independent of d.

F = span(rows of W) + span(U) has an orthonormal basis whose first ``rank W`` vectors span span(W); in it
``W Q_F = [L, 0]`` (L L^T = G) and ``U^T Q_F = UF``. The student ``U_hat = Q_F Y + R`` (R ⟂ F) is known
in law from the state ``(Y (p x r), Gamma = R^T R (r x r), C_hat (k x r))``. One step draws
``z ~ N(0, I_p)`` (= Q_F^T x), ``omega ~ N(0, I_r)`` and ``chi ~ chi^2_(d-p-r)``; ``zeta = B omega`` with
``B B^T = Gamma`` is ``R^T x`` and ``|x_perp|^2 = |omega|^2 + chi``. The per-sample gradient of
``(f* - f_hat)^2`` in U_hat is ``x a^T + Q_F E + U_hat M``; after the projection onto span(W)^perp (when
constrained) and onto the tangent space (``G - U_hat sym(U_hat^T G)``) the step is
``U_hat' = (U_hat M' + x b^T + Q_F E') T`` with the polar retraction ``T = (X^T X)^(-1/2)``, so

    Y' = (Y M' + z b^T + E') T,
    Gamma' = T (M'^T Gamma M' + M'^T zeta b^T + b zeta^T M' + |x_perp|^2 b b^T) T,

and C_hat moves by its own gradient at the same sample and the same (old) state. Full-d SGD of the same
model (:mod:`.sgd`) checks this chain by two-sample tests.

(About 1060 lines, one job: the step above, as a scalar kernel for rank 1, a rank-r kernel and the helpers
both inline — and :mod:`.sgd` with them, so that the chain and full-d SGD evaluate the neurons by the same
code. Kept in one file so that numba's per-file cache of the plain helpers follows every edit of them.)
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

from ...gaussian.families.base import CODE_LEAKY_RELU, CODE_POLYNOMIAL
from ...gaussian.families.fast import activation_derivative, activation_value
from ...gaussian.programs import STACK_SIZE
from ...numerics import random_streams as streams
from ...numerics.compiled import SOURCE_VERSION, specialised
from ...numerics.linalg import cholesky_lower, inverse_square_root

__all__ = ["c_hat_gradient", "congruence", "general_chain_kernel", "gram_plus", "neuron_terms", "overlap_reaches", "row_products", "sample_buffers", "smallest_squared_singular_value", "weighted_columns"]


@njit(cache=True)
def smallest_squared_singular_value(O):
    """The smallest squared singular value of the r* x r overlap matrix ``O = U^T U_hat`` over min(r*, r)
    directions (m^2 for rank 1)."""
    rs, r = O.shape
    if rs == 1 and r == 1:
        return O[0, 0] * O[0, 0]
    small = min(rs, r)
    product = np.empty((small, small))
    for i in range(small):
        for j in range(small):
            total = 0.0
            if r <= rs:
                for l in range(rs):
                    total += O[l, i] * O[l, j]
            else:
                for l in range(r):
                    total += O[i, l] * O[j, l]
            product[i, j] = total
    return np.linalg.eigvalsh(product)[0]


@njit(cache=True, inline="always")
def neuron_terms(code, normalized, linear, a, g, gh, C, ch, P, S, w_squared, inverse_teacher, lam, xi, s_out, beta, kappa, parameters, ops, args, d_ops, d_args, stack):
    """One sample's residual and gradient coefficients, shared by the chain and full-d SGD (full-d SGD's
    own check of them is the finite-difference test). Pre-activations: ``a = W x``, ``g = U^T x``,
    ``gh = U_hat^T x``; ``P = W U_hat``, ``S = U_hat^T U_hat``, ``w_squared`` the |w_i|^2.

    The gradient of ``(f* - f_hat)^2`` in U_hat is ``sum_i beta_i x c_hat_i^T - kappa_i w_i c_hat_i^T``
    (+ a term along U_hat), in c_hat_i ``beta_i g_hat - kappa_i (P_i + xi S c_hat_i)``. The exact student
    has ``z_hat_i = <w_i + xi U_hat c_hat_i, x> / n_i``; the ``linear`` one (first order in the adapter,
    Fig 3a) ``sigma(w_i.x / |w_i|) + xi sigma'(w_i.x / |w_i|) <v_i, x>`` with v_i = U_hat c_hat_i
    projected off w_i and divided by |w_i| (raw convention: no division, no projection).
    Returns the residual ``f* - f_hat`` (times 1/s_out)."""
    k = lam.shape[0]
    rs = g.shape[0]
    r = gh.shape[0]
    residual = 0.0
    for i in range(k):
        teacher = a[i]
        for l in range(rs):
            teacher += xi * C[i, l] * g[l]
        along = 0.0
        for l in range(r):
            along += ch[i, l] * gh[l]
        inverse = 1.0
        if linear:
            if normalized:
                inverse = 1.0 / math.sqrt(w_squared[i])
                teacher *= inverse_teacher[i]
                tilted = 0.0
                for l in range(r):
                    tilted += P[i, l] * ch[i, l]
                along = (along - tilted * a[i] * inverse * inverse) * inverse
            z_hat = a[i] * inverse
            slope = activation_derivative(code, parameters, d_ops, d_args, stack, z_hat)
            student = activation_value(code, parameters, ops, args, stack, z_hat) + xi * slope * along
        else:
            if normalized:
                squared = w_squared[i]
                for l in range(r):
                    squared += 2.0 * xi * P[i, l] * ch[i, l]
                    for m in range(r):
                        squared += xi * xi * ch[i, l] * S[l, m] * ch[i, m]
                inverse = 1.0 / math.sqrt(squared)
                teacher *= inverse_teacher[i]
            z_hat = (a[i] + xi * along) * inverse
            slope = activation_derivative(code, parameters, d_ops, d_args, stack, z_hat)
            student = activation_value(code, parameters, ops, args, stack, z_hat)
        residual += lam[i] * (activation_value(code, parameters, ops, args, stack, teacher) - student)
        beta[i] = lam[i] * slope * xi * inverse
        kappa[i] = z_hat * inverse if normalized else 0.0
    factor = -2.0 * s_out * s_out * residual
    for i in range(k):
        beta[i] *= factor
        kappa[i] *= beta[i]  # kappa_i = beta_i z_hat_i / n_i
    return residual


@njit(cache=True, inline="always")
def c_hat_gradient(normalized, linear, beta, kappa, gh, P, S, ch, xi, out):
    """``out_i = beta_i g_hat - kappa_i (P_i + xi S c_hat_i)`` (linear student: without the S term)."""
    k, r = ch.shape
    for i in range(k):
        for l in range(r):
            total = 0.0
            if normalized:
                total = P[i, l]
                if not linear:
                    for m in range(r):
                        total += xi * S[l, m] * ch[i, m]
            out[i, l] = beta[i] * gh[l] - kappa[i] * total


@njit(cache=True, inline="always")
def weighted_columns(beta, ch, out):
    """``out_l = sum_i beta_i c_hat_il``."""
    k, r = ch.shape
    for l in range(r):
        total = 0.0
        for i in range(k):
            total += beta[i] * ch[i, l]
        out[l] = total


@njit(cache=True, inline="always")
def row_products(A, B, out):
    """``out = A B^T`` (``out[i, l] = <A_i, B_l>``)."""
    for i in range(A.shape[0]):
        for l in range(B.shape[0]):
            total = 0.0
            for q in range(A.shape[1]):
                total += A[i, q] * B[l, q]
            out[i, l] = total


@njit(cache=True, inline="always")
def congruence(A, B, out):
    """``out = A^T B A`` for small square matrices."""
    r = out.shape[0]
    for l in range(r):
        for m in range(r):
            total = 0.0
            for n in range(r):
                for o in range(r):
                    total += A[n, l] * B[n, o] * A[o, m]
            out[l, m] = total


@njit(cache=True)
def sample_buffers(k, rs, r):
    """The per-sample arrays of both general kernels: ``(a, g, gh, P, S, beta, kappa, av, H, work, T, O,
    grad_c, stack)`` (W x, U^T x, U_hat^T x, W U_hat, U_hat^T U_hat, the neuron coefficients, their weighted
    sum, three r x r work matrices, U^T U_hat, the C_hat gradient and the activation programs' stack)."""
    return (np.empty(k), np.empty(rs), np.empty(r), np.zeros((k, r)), np.empty((r, r)), np.empty(k), np.zeros(k), np.empty(r), np.empty((r, r)), np.empty((r, r)), np.empty((r, r)), np.empty((rs, r)), np.empty((k, r)), np.empty(STACK_SIZE))


@njit(cache=True)
def overlap_reaches(level, U, rows, O):
    """``O = U rows^T`` (U^T U_hat: ``rows`` are U_hat's columns, or Y^T with U = UF), and whether its
    smallest squared singular value reaches ``level``."""
    row_products(U, rows, O)
    return smallest_squared_singular_value(O) >= level


@njit(cache=True, inline="always")
def gram_plus(base, Y, out):
    """``out = base + Y^T Y`` (Y stored with rows as samples: p x r)."""
    r = out.shape[0]
    for l in range(r):
        for m in range(r):
            total = base[l, m]
            for q in range(Y.shape[0]):
                total += Y[q, l] * Y[q, m]
            out[l, m] = total


def general_chain_kernel(code: int, identity: bool, normalized: bool, constrained: bool, joint: bool, linear: bool, rank: int, degree: int = -1, generic: bool = False):
    """``advance`` of the state chain for the activation fast path ``code`` and the model's switches
    (compile-time constants): ``identity`` (G = I, L = I), the ``normalized`` convention, u_hat
    ``constrained`` to span(W)^perp, ``joint`` training of C_hat, the ``linear`` (linearised) student and
    the rank r; ``degree`` (polynomial activations: the degree, so that their Horner loops unroll; else -1).

    Rank 1 runs the scalar specialisation :func:`_rank_one_chain_kernel` (``generic``: the rank-r kernel
    :func:`_rank_r_chain_kernel` instead, which computes the same numbers up to rounding; kept for the tests).
    Both take the same arguments::

        advance(start, stop, Y, Gam, Ch, states, hits, level, stop_at_hit, offset, steps, L, UF, C, lam,
                inverse_teacher, w_squared, reals, parameters, ops, args, d_ops, d_args)

    with ``reals`` = (eta, eta_c, xi, s_out, chi-square degrees of freedom d - p - r)."""
    if rank == 1 and not generic:
        return _rank_one_chain_kernel(code, degree, identity, normalized, constrained, joint, linear)
    return _rank_r_chain_kernel(code, degree, identity, normalized, constrained, joint, linear, rank)


@specialised
def _rank_r_chain_kernel(code: int, degree: int, identity: bool, normalized: bool, constrained: bool, joint: bool, linear: bool, rank: int):
    """The state chain at any rank r (a compile-time constant: the loops over r unroll), laid out as the
    rank-1 kernel: u_hat's coordinates and c_hat as r rows of padded vectors (``yw[l, t] = Y[t, l]``,
    ``cw[l, i] = C_hat[i, l]``), every per-neuron quantity a pass over the neurons that numba vectorises,
    the students' norms by :func:`inverse_sqrt`, and the sums over neurons as separate one-line passes.
    The r x r algebra (Cholesky factor of Gamma, the polar retraction's inverse square root) is as in
    MATH.md §4b."""
    version = SOURCE_VERSION
    r = rank
    tilted = normalized and not constrained

    @njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract", "nsz"})
    def advance(start, stop, Y, Gam, Ch, states, hits, level, stop_at_hit, offset, steps, L, UF, C, lam, inverse_teacher, w_squared, reals, parameters, ops, args, d_ops, d_args):
        eta, eta_c, xi, s_out, dof = reals[0], reals[1], reals[2], reals[3], reals[4]
        k, rank_w = L.shape
        rs, p = UF.shape
        m = (max(k, p + r) + BLOCK - 1) // BLOCK * BLOCK
        lam_p = np.zeros(m)
        padded = lam_p.shape[0]  # as the rank-1 kernel: vector loads, not gathers
        w_p = np.ones(m)
        inverse_w = np.ones(m)
        inverse_t = np.ones(m)
        for i in range(k):
            lam_p[i] = lam[i]
            w_p[i] = w_squared[i]
            inverse_w[i] = 1.0 / math.sqrt(w_squared[i])
            inverse_t[i] = inverse_teacher[i]
        LT = np.ascontiguousarray(L.T)  # L's columns as rows: E = -L^T w by dot products over contiguous rows
        kc = np.zeros(m)
        cw = np.zeros((r, m))
        cw_new = np.zeros((r, m))
        yw = np.zeros((r, m))
        yw_new = np.zeros((r, m))
        P = np.zeros((r, m))
        E = np.zeros((r, m))
        a = np.zeros(m)
        pre = np.zeros(m)
        b = np.zeros(m)
        q = np.zeros(m)
        kq = np.zeros(m)  # b_i q_i
        norms = np.ones(m)
        inverses = np.ones(m)
        x = np.zeros(m + 1)
        drawn = x[: p + r]
        g = np.empty(rs)
        omega = np.empty(r)
        zeta = np.empty(r)
        gh = np.empty(r)
        av = np.empty(r)
        Bg = np.zeros((r, r))
        S = np.empty((r, r))
        M = np.empty((r, r))
        H = np.empty((r, r))
        Mp = np.empty((r, r))
        Gn = np.empty((r, r))
        work = np.empty((r, r))
        T = np.empty((r, r))
        O = np.empty((rs, r))
        stack = np.empty(STACK_SIZE)
        scale = -2.0 * s_out * s_out
        c = held_coefficients(parameters)
        for j in range(start, stop):
            if stop_at_hit and hits[j] >= 0:
                continue
            for l in range(r):
                for t in range(p):
                    yw[l, t] = Y[j, t, l]
                for i in range(k):
                    cw[l, i] = Ch[j, i, l]
            gam = Gam[j]
            s0, s1, s2, s3 = streams.load_words(states[j])
            for step in range(steps):
                chi, s0, s1, s2, s3 = streams.fill_normal_chi_square(drawn, dof, s0, s1, s2, s3)
                omega_squared = 0.0
                for l in range(r):
                    omega[l] = x[p + l]
                    omega_squared += omega[l] * omega[l]
                    x[p + l] = 0.0
                # pre-activations: a = W x = L z_W, g = U^T x = UF z, g_hat = U_hat^T x = Y^T z + zeta, zeta = B omega (B B^T = Gamma)
                if not identity:
                    _rows_times(L, x, a)
                for l in range(rs):
                    total = 0.0
                    for t in range(p):
                        total += UF[l, t] * x[t]
                    g[l] = total
                cholesky_lower(gam, Bg, 0.0)
                for l in range(r):
                    total = 0.0
                    for n in range(l + 1):
                        total += Bg[l, n] * omega[n]
                    zeta[l] = total
                    for t in range(padded):
                        total += yw[l, t] * x[t]
                    gh[l] = total
                # S = U_hat^T U_hat = Y^T Y + Gamma
                for l in range(r):
                    for n in range(l, r):
                        total = gam[l, n]
                        for t in range(padded):
                            total += yw[l, t] * yw[n, t]
                        S[l, n] = total
                        S[n, l] = total
                if tilted and not identity:
                    for l in range(r):
                        _rows_times(L, yw[l], P[l])
                # the teachers' pre-activations (a_i + xi C_i.g) / n*_i
                for i in range(k):
                    total = x[i] if identity else a[i]
                    for l in range(rs):
                        total += xi * C[i, l] * g[l]
                    pre[i] = total * inverse_t[i]
                if normalized and not linear:
                    # the students' 1 / |w_i + xi U_hat c_hat_i|: |.|^2 = |w_i|^2 + 2 xi P_i.c_hat_i + xi^2 c_hat_i^T S c_hat_i
                    outside = 0
                    for i in range(padded):
                        squared = w_p[i]
                        for l in range(r):
                            if tilted:
                                squared += 2.0 * xi * (yw[l, i] if identity else P[l, i]) * cw[l, i]
                            for n in range(r):
                                squared += xi * xi * cw[l, i] * S[l, n] * cw[n, i]
                        norms[i] = squared
                        inverses[i] = inverse_sqrt(squared)
                        outside += 0 if SMALLEST_NORMAL <= squared < math.inf else 1
                    if outside > 0:
                        for i in range(padded):
                            inverses[i] = 1.0 / math.sqrt(norms[i])
                # the students (neuron_terms): the residual, b_i = lam_i sigma'(z_hat_i) xi / n_i, q_i = z_hat_i / n_i
                residual = 0.0
                for i in range(padded):
                    ai = x[i] if identity else a[i]
                    along = 0.0
                    for l in range(r):
                        along += cw[l, i] * gh[l]
                    inverse = 1.0
                    if linear:
                        if normalized:
                            inverse = inverse_w[i]
                            if tilted:
                                tilt = 0.0
                                for l in range(r):
                                    tilt += (yw[l, i] if identity else P[l, i]) * cw[l, i]
                                along = (along - tilt * ai * inverse * inverse) * inverse
                            else:
                                along = along * inverse
                        z_hat = ai * inverse
                        slope = _derivative(code, degree, c, parameters, d_ops, d_args, stack, z_hat)
                        student = _value(code, degree, c, parameters, ops, args, stack, z_hat) + xi * slope * along
                    else:
                        if normalized:
                            inverse = inverses[i]
                        z_hat = (ai + xi * along) * inverse
                        slope = _derivative(code, degree, c, parameters, d_ops, d_args, stack, z_hat)
                        student = _value(code, degree, c, parameters, ops, args, stack, z_hat)
                    residual += lam_p[i] * (_value(code, degree, c, parameters, ops, args, stack, pre[i]) - student)
                    bi = lam_p[i] * slope * xi * inverse
                    b[i] = bi
                    if normalized:
                        qi = z_hat * inverse
                        q[i] = qi
                        kq[i] = bi * qi
                factor = scale * residual
                # the gradient in U_hat is x av^T + Q_F E + U_hat M: av = sum_i beta_i c_hat_i, M = -xi sum_i kappa_i c_hat_i c_hat_i^T
                # (beta_i = factor b_i, kappa_i = factor b_i q_i)
                for l in range(r):
                    total = 0.0
                    for i in range(padded):
                        total += b[i] * cw[l, i]
                    av[l] = factor * total
                for l in range(r):
                    for n in range(l, r):
                        total = 0.0
                        if normalized and not linear:
                            for i in range(padded):
                                total += kq[i] * cw[l, i] * cw[n, i]
                        M[l, n] = -xi * (factor * total)
                        M[n, l] = M[l, n]
                # E, the part along span(W); H = U_hat^T G = g_hat av^T + Y_W^T E + S M
                if constrained:
                    for l in range(r):
                        for t in range(rank_w):
                            E[l, t] = -x[t] * av[l]
                elif normalized:
                    for l in range(r):
                        if identity:
                            for t in range(padded):
                                E[l, t] = -factor * (kq[t] * cw[l, t])
                        else:
                            for i in range(k):
                                kc[i] = -factor * (kq[i] * cw[l, i])
                            _rows_times(LT, kc, E[l])
                for l in range(r):
                    for n in range(r):
                        total = gh[l] * av[n]
                        if constrained or normalized:
                            for t in range(padded):
                                total += yw[l, t] * E[n, t]
                        for o in range(r):
                            total += S[l, o] * M[o, n]
                        H[l, n] = total
                # U_hat - eta G_tan = U_hat M' + x b^T + Q_F E' with M' = I - eta (M - sym H), b = -eta av, E' = -eta E
                for l in range(r):
                    for n in range(r):
                        Mp[l, n] = (1.0 if l == n else 0.0) - eta * (M[l, n] - 0.5 * (H[l, n] + H[n, l]))
                if joint:
                    # C_hat' = C_hat - eta_c dL/dC_hat at the old state: beta_i g_hat - kappa_i (P_i + xi S c_hat_i)
                    for l in range(r):
                        for i in range(padded):
                            total = 0.0
                            if normalized:
                                if tilted:
                                    total = yw[l, i] if identity else P[l, i]
                                if not linear:
                                    for n in range(r):
                                        total += xi * S[l, n] * cw[n, i]
                            cw_new[l, i] = cw[l, i] - eta_c * factor * (b[i] * gh[l] - kq[i] * total)
                # Y' = Y M' + z b^T + E'
                for l in range(r):
                    for t in range(padded):
                        total = -eta * x[t] * av[l]
                        if constrained or normalized:
                            total -= eta * E[l, t]
                        for n in range(r):
                            total += yw[n, t] * Mp[n, l]
                        yw_new[l, t] = total
                # Gamma' = M'^T Gamma M' + M'^T zeta b^T + b zeta^T M' + |x_perp|^2 b b^T
                perp = omega_squared + chi
                congruence(Mp, gam, Gn)
                for l in range(r):
                    for n in range(r):
                        left = 0.0
                        right = 0.0
                        for o in range(r):
                            left += Mp[o, l] * zeta[o]
                            right += Mp[o, n] * zeta[o]
                        Gn[l, n] += -eta * (left * av[n] + av[l] * right) + perp * eta * eta * av[l] * av[n]
                # polar retraction: T = (Y'^T Y' + Gamma')^(-1/2)
                for l in range(r):
                    for n in range(l, r):
                        total = Gn[l, n]
                        for t in range(padded):
                            total += yw_new[l, t] * yw_new[n, t]
                        work[l, n] = total
                        work[n, l] = total
                if not (work[0, 0] < math.inf):
                    for l in range(r):
                        for t in range(p):
                            yw[l, t] = math.nan
                    break
                inverse_square_root(work, T)
                for l in range(r):
                    for t in range(padded):
                        total = 0.0
                        for n in range(r):
                            total += yw_new[n, t] * T[n, l]
                        yw[l, t] = total
                congruence(T, Gn, work)
                for l in range(r):
                    for n in range(r):
                        gam[l, n] = 0.5 * (work[l, n] + work[n, l])
                if joint:
                    cw, cw_new = cw_new, cw
                if level < math.inf and hits[j] < 0:
                    for l in range(rs):
                        for n in range(r):
                            total = 0.0
                            for t in range(p):
                                total += UF[l, t] * yw[n, t]
                            O[l, n] = total
                    if smallest_squared_singular_value(O) >= level:
                        hits[j] = offset + step + 1
                        if stop_at_hit:
                            break
            for l in range(r):
                for t in range(p):
                    Y[j, t, l] = yw[l, t]
                for i in range(k):
                    Ch[j, i, l] = cw[l, i]
            streams.store_words(states[j], s0, s1, s2, s3)
        return len(version)

    return advance


@intrinsic
def _float_bits(typingctx, value):
    """The IEEE 754 bits of a float64, as an int64."""
    if value != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits_float(typingctx, value):
    """The float64 with the given IEEE 754 bits."""
    if value != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


#: the smallest positive normal float64: :func:`inverse_sqrt` holds from here to the largest finite one
SMALLEST_NORMAL = 2.2250738585072014e-308


@njit(cache=True, inline="always")
def inverse_sqrt(x):
    """``1 / sqrt(x)`` for a positive normal float64 x, within 3 units in the last place (``1.0 /
    math.sqrt(x)``: within 1; checked on 2e6 values from 1e-307 to 1e307) by Newton's iteration
    ``y <- y (3/2 - x y^2 / 2)`` from the bit-level first guess (relative error below 3.5%, then 1.8e-3,
    4.6e-6, 3.2e-11 and rounding): multiplications only, where ``1.0 / math.sqrt(x)`` keeps the core's
    divider busy about 5 cycles a number (measured: with it, the students' norms took a fifth of the
    rank-1 chain's step at k = 20; this made the step 15% faster). Deterministic (a function of x alone),
    so results still do not depend on threads or batching. Outside (0 and subnormal, inf, nan, negative)
    the result is meaningless: callers check the range (:data:`SMALLEST_NORMAL`)."""
    y = _bits_float(np.int64(0x5FE6EB50C7B537A9) - (_float_bits(x) >> 1))
    half = 0.5 * x
    y = y * (1.5 - half * y * y)
    y = y * (1.5 - half * y * y)
    y = y * (1.5 - half * y * y)
    return y * (1.5 - half * y * y)


@njit(cache=True, inline="always")
def _rows_times(L, v, out):
    """``out[:k] = L v`` (the first rank W entries of v), one dot product per row."""
    k, rank_w = L.shape
    for i in range(k):
        total = 0.0
        for l in range(rank_w):
            total += L[i, l] * v[l]
        out[i] = total


#: polynomials up to this degree have their coefficients held in registers by the chain kernels
HELD_DEGREE = 7


@njit(cache=True, inline="always")
def held_coefficients(parameters):
    """The activation's parameters as a tuple of 8 scalars (zeros beyond its own): the kernels read them
    once, so that no neuron loop loads from an array (which would keep it from being vectorised)."""
    c = np.zeros(HELD_DEGREE + 1)
    for n in range(min(parameters.shape[0], HELD_DEGREE + 1)):
        c[n] = parameters[n]
    return (c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7])


@njit(cache=True, inline="always")
def _horner(degree, c, z):
    """``sum_n c_n z^n`` by Horner's rule from the coefficient of ``degree`` (a compile-time constant <= 7):
    the operations of :func:`popgrad.gaussian.families.polynomial.value`, unrolled."""
    total = 0.0
    if degree >= 7:
        total = total * z + c[7]
    if degree >= 6:
        total = total * z + c[6]
    if degree >= 5:
        total = total * z + c[5]
    if degree >= 4:
        total = total * z + c[4]
    if degree >= 3:
        total = total * z + c[3]
    if degree >= 2:
        total = total * z + c[2]
    if degree >= 1:
        total = total * z + c[1]
    return total * z + c[0]


@njit(cache=True, inline="always")
def _horner_derivative(degree, c, z):
    """``sum_n n c_n z^(n-1)`` as :func:`popgrad.gaussian.families.polynomial.derivative`, unrolled."""
    total = 0.0
    if degree >= 7:
        total = total * z + 7 * c[7]
    if degree >= 6:
        total = total * z + 6 * c[6]
    if degree >= 5:
        total = total * z + 5 * c[5]
    if degree >= 4:
        total = total * z + 4 * c[4]
    if degree >= 3:
        total = total * z + 3 * c[3]
    if degree >= 2:
        total = total * z + 2 * c[2]
    if degree >= 1:
        total = total * z + c[1]
    return total


@njit(cache=True, inline="always")
def _value(code, degree, c, parameters, ops, args, stack, z):
    """``sigma(z)`` as :func:`activation_value`, with the parameters ``c`` of :func:`held_coefficients` for
    the leaky ReLU family and polynomials of degree <= 7 (``degree`` a compile-time constant, -1 if not a
    polynomial): the same operations, with no load from an array."""
    if code == CODE_LEAKY_RELU:
        return z if z > 0.0 else c[0] * z
    if code == CODE_POLYNOMIAL and 0 <= degree <= HELD_DEGREE:
        return _horner(degree, c, z)
    return activation_value(code, parameters, ops, args, stack, z)


@njit(cache=True, inline="always")
def _derivative(code, degree, c, parameters, d_ops, d_args, stack, z):
    """``sigma'(z)`` as :func:`activation_derivative`, with held parameters as :func:`_value`."""
    if code == CODE_LEAKY_RELU:
        return 1.0 if z > 0.0 else (c[0] if z < 0.0 else 0.5 * (1.0 + c[0]))
    if code == CODE_POLYNOMIAL and 0 <= degree <= HELD_DEGREE:
        return _horner_derivative(degree, c, z)
    return activation_derivative(code, parameters, d_ops, d_args, stack, z)


#: the rank-1 chain's loops over neurons and over u_hat's coordinates run over max(k, p) rounded up to a
#: multiple of this, on vectors padded with zeros (padding neurons have lam = 0 and c_hat = 0, so they add
#: exact zeros): numba vectorises the loops 8 numbers at a time, and the scalar remainder of a loop with the
#: activation's branches cost more than the whole vectorised part (k = 20: 4 neurons, 22% of a step)
BLOCK = 8


@njit(cache=True, inline="always")
def _load_slot(j, Y, Gam, Ch, states, s, y, ch, gam, T, words):
    """Trajectory j's state into slot s: u_hat's coordinates and c_hat into padded rows (zeros beyond their
    own), Gamma, T = 1 and its stream's words."""
    p, k = Y.shape[1], Ch.shape[1]
    for t in range(y.shape[1]):
        y[s, t] = Y[j, t, 0] if t < p else 0.0
    for i in range(ch.shape[1]):
        ch[s, i] = Ch[j, i, 0] if i < k else 0.0
    gam[s] = Gam[j, 0, 0]
    T[s] = 1.0
    for w in range(4):
        words[s, w] = states[j, w]


@njit(cache=True, inline="always")
def _store_slot(j, Y, Gam, Ch, states, s, y, ch, gam, T, words):
    """Slot s's state back into trajectory j (u_hat's coordinates times the scale T still owed to them)."""
    p, k = Y.shape[1], Ch.shape[1]
    for t in range(p):
        Y[j, t, 0] = T[s] * y[s, t]
    for i in range(k):
        Ch[j, i, 0] = ch[s, i]
    Gam[j, 0, 0] = gam[s]
    for w in range(4):
        states[j, w] = words[s, w]


@njit(cache=True, inline="always")
def _next_trajectory(j, stop, hits, stop_at_hit):
    """The first trajectory from j on that still moves (with ``stop_at_hit``: one that has not hit), or stop."""
    while j < stop and stop_at_hit and hits[j] >= 0:
        j += 1
    return j


@specialised
def _rank_one_chain_kernel(code: int, degree: int, identity: bool, normalized: bool, constrained: bool, joint: bool, linear: bool):
    """The state chain at rank 1, where every r x r matrix is a scalar: the same formulas as
    :func:`_rank_r_chain_kernel` at r = 1, from the same draws in the same order, arranged for speed.

    * A step is a few passes over the neurons without inner loops, which numba vectorises (the activation's
      branches become selects): the students' (the residual, and per neuron
      ``b_i = lam_i sigma'(z_hat_i) xi / n_i`` and ``q_i = z_hat_i / n_i``, with the sums over neurons that
      the step's scalars need: the gradient's coefficients are ``beta_i = factor b_i`` and
      ``kappa_i = beta_i q_i`` with factor = -2 s_out^2 residual, so the sums are taken before the factor is
      known and scaled after), then one pass that moves c_hat and y.
    * All vectors have a common padded length (:data:`BLOCK`), zeros beyond their own.
    * The retraction's scale T is applied to u_hat's coordinates in the next step's first pass over them
      (which also takes g_hat and |y|^2), not in a pass of its own; a call's last step applies it when
      the state is stored, so a trajectory's numbers do not depend on how its steps are split into calls.
    * Two trajectories advance together, in two slots (rows of the per-trajectory buffers): each iteration
      runs one step of slot 0, then one of slot 1, by the same code (a loop over the slots). A step is a
      chain of dependent latencies (draws, sums over neurons, square roots) and the core overlaps the two
      independent chains. A lone trajectory (an odd count) runs in slot 0 alone, and one whose partner stops
      early continues beside a discarded copy of itself: the code per slot is the same either way, so a
      trajectory's numbers never depend on its partner.

    The same numbers as the rank-r kernel up to rounding (sums associated differently)."""
    version = SOURCE_VERSION
    # P = W u_hat enters only the normalised student's norms and gradients, and vanishes when u_hat ⟂ W
    tilted = normalized and not constrained

    @njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract", "nsz"})
    def advance(start, stop, Y, Gam, Ch, states, hits, level, stop_at_hit, offset, steps, L, UF, C, lam, inverse_teacher, w_squared, reals, parameters, ops, args, d_ops, d_args):
        eta, eta_c, xi, s_out, dof = reals[0], reals[1], reals[2], reals[3], reals[4]
        k, rank_w = L.shape
        rs, p = UF.shape
        m = (max(k, p) + BLOCK - 1) // BLOCK * BLOCK
        # per neuron i < k (W = I: also u_hat's coordinate i, z_i = w_i.x): lam, |w|^2, 1/|w| (the linearised
        # student's), 1/|w + xi C u| (the teacher's), C's column (r* = 1)
        lam_p = np.zeros(m)
        padded = lam_p.shape[0]  # m as an array's length: loops over it index without sign checks (vector loads, not gathers)
        w_p = np.ones(m)
        inverse_w = np.ones(m)
        inverse_t = np.ones(m)
        c_p = np.zeros(m)
        for i in range(k):
            lam_p[i] = lam[i]
            w_p[i] = w_squared[i]
            inverse_w[i] = 1.0 / math.sqrt(w_squared[i])
            inverse_t[i] = inverse_teacher[i]
            c_p[i] = C[i, 0]
        LT = np.ascontiguousarray(L.T)  # L's columns as rows: E = -L^T w by dot products over contiguous rows
        # per coordinate t < p: U's first row, span(W)'s indicator
        u_p = np.zeros(m)
        in_w = np.zeros(m)
        for t in range(p):
            u_p[t] = UF[0, t]
        for t in range(rank_w):
            in_w[t] = 1.0
        # per slot s (row s): c_hat (ch[s, cur[s]]) and its next value (ch[s, 1 - cur[s]]), the teachers'
        # pre-activations, b, q, W x, W y, E, kappa c and the students' 1 / |w + xi c_hat u_hat| per
        # neuron; x = z (omega drawn into x[s, p], then zeroed) and y (u_hat's coordinates divided by T) per
        # coordinate; U^T x; T, Gamma, the stream's words, the trajectory (-1: a copy of the other slot's)
        ch = np.zeros((2, 2, m))
        cur = np.zeros(2, dtype=np.int64)
        pre = np.zeros((2, m))
        b = np.zeros((2, m))
        q = np.zeros((2, m))
        a = np.zeros((2, m))
        P = np.zeros((2, m))
        E = np.zeros((2, m))
        kc = np.zeros((2, m))
        inverses = np.ones((2, m))
        x = np.zeros((2, m + 1))
        y = np.zeros((2, m))
        g = np.empty((2, rs))
        T = np.ones(2)
        gam = np.zeros(2)
        words = np.zeros((2, 4), dtype=np.uint64)
        slot_of = np.full(2, -1, dtype=np.int64)
        finite = np.ones(2, dtype=np.bool_)
        stack = np.empty(STACK_SIZE)
        scale = -2.0 * s_out * s_out
        c = held_coefficients(parameters)
        j = _next_trajectory(start, stop, hits, stop_at_hit)
        while j < stop:
            slot_of[0] = j
            j = _next_trajectory(j + 1, stop, hits, stop_at_hit)
            slot_of[1] = -1
            if j < stop:
                slot_of[1] = j
                j = _next_trajectory(j + 1, stop, hits, stop_at_hit)
            for s in range(2):
                cur[s] = 0
                _load_slot(slot_of[s] if slot_of[s] >= 0 else slot_of[0], Y, Gam, Ch, states, s, y, ch[:, 0], gam, T, words)
            # a lone trajectory (odd count, or the last of a block) runs in slot 0 alone: the same code per slot,
            # so its numbers do not depend on whether it had a partner; a partner that stops mid-pair is replaced
            # by a discarded copy of the other slot (below)
            active = 2 if slot_of[1] >= 0 else 1
            for step in range(steps):
                for s in range(active):
                    co = cur[s]
                    no = 1 - co
                    s0, s1, s2, s3 = words[s, 0], words[s, 1], words[s, 2], words[s, 3]
                    chi, s0, s1, s2, s3 = streams.fill_normal_chi_square(x[s, : p + 1], dof, s0, s1, s2, s3)
                    words[s, 0], words[s, 1], words[s, 2], words[s, 3] = s0, s1, s2, s3
                    omega = x[s, p]
                    x[s, p] = 0.0
                    Ts = T[s]
                    gs = gam[s]
                    # pre-activations: a = W x = L z_W, g = U^T x = UF z, g_hat = u_hat.x = y.z + zeta (y = T y first)
                    if not identity:
                        for i in range(k):
                            total = 0.0
                            for l in range(rank_w):
                                total += L[i, l] * x[s, l]
                            a[s, i] = total
                    dot = 0.0
                    squares = 0.0
                    if rs == 1:
                        total = 0.0
                        for t in range(padded):
                            value = y[s, t] * Ts
                            y[s, t] = value
                            total += u_p[t] * x[s, t]
                            dot += value * x[s, t]
                            squares += value * value
                        g[s, 0] = total
                    else:
                        for l in range(rs):
                            total = 0.0
                            for t in range(p):
                                total += UF[l, t] * x[s, t]
                            g[s, l] = total
                        for t in range(padded):
                            value = y[s, t] * Ts
                            y[s, t] = value
                            dot += value * x[s, t]
                            squares += value * value
                    zeta = (math.sqrt(gs) if gs > 0.0 else 0.0) * omega  # Gamma's Cholesky factor times omega
                    gh = zeta + dot
                    S = gs + squares  # u_hat^T u_hat
                    if tilted and not identity:
                        for i in range(k):
                            total = 0.0
                            for l in range(rank_w):
                                total += L[i, l] * y[s, l]
                            P[s, i] = total
                    # the teachers' pre-activations (a_i + xi C_i.g) / n*_i, and the students' 1 / |w_i + xi c_hat_i u_hat|
                    # (inverse_sqrt: no division; 1 / sqrt where a squared norm is not a positive normal number)
                    xg = xi * g[s, 0]
                    if rs > 1:
                        for i in range(k):
                            total = x[s, i] if identity else a[s, i]
                            for l in range(rs):
                                total += xi * C[i, l] * g[s, l]
                            pre[s, i] = total * inverse_t[i]
                    if normalized and not linear:
                        outside = 0
                        for i in range(padded):
                            if rs == 1:
                                pre[s, i] = ((x[s, i] if identity else a[s, i]) + c_p[i] * xg) * inverse_t[i]
                            cv = ch[s, co, i]
                            squared = w_p[i] + xi * xi * cv * S * cv
                            if tilted:
                                squared += 2.0 * xi * (y[s, i] if identity else P[s, i]) * cv
                            inverses[s, i] = inverse_sqrt(squared)
                            outside += 0 if SMALLEST_NORMAL <= squared < math.inf else 1
                        if outside > 0:
                            for i in range(padded):
                                cv = ch[s, co, i]
                                squared = w_p[i] + xi * xi * cv * S * cv
                                if tilted:
                                    squared += 2.0 * xi * (y[s, i] if identity else P[s, i]) * cv
                                inverses[s, i] = 1.0 / math.sqrt(squared)
                    elif rs == 1:
                        for i in range(padded):
                            pre[s, i] = ((x[s, i] if identity else a[s, i]) + c_p[i] * xg) * inverse_t[i]
                    # the students (neuron_terms at r = 1) and the sums over neurons that the step needs
                    residual = 0.0
                    sum_b = 0.0  # sum_i b_i c_i            (av = factor sum_b)
                    sum_curvature = 0.0  # sum_i b_i q_i c_i^2  (M = -xi factor sum_curvature)
                    sum_tilt = 0.0  # sum_i y_i b_i q_i c_i   (W = I: y_W.E = -factor sum_tilt)
                    for i in range(padded):
                        ai = x[s, i] if identity else a[s, i]
                        cv = ch[s, co, i]
                        along = cv * gh
                        inverse = 1.0
                        if linear:
                            if normalized:
                                inverse = inverse_w[i]
                                if tilted:
                                    along = (along - (y[s, i] if identity else P[s, i]) * cv * ai * inverse * inverse) * inverse
                                else:
                                    along = along * inverse
                            z_hat = ai * inverse
                            slope = _derivative(code, degree, c, parameters, d_ops, d_args, stack, z_hat)
                            student = _value(code, degree, c, parameters, ops, args, stack, z_hat) + xi * slope * along
                        else:
                            if normalized:
                                inverse = inverses[s, i]
                            z_hat = (ai + xi * along) * inverse
                            slope = _derivative(code, degree, c, parameters, d_ops, d_args, stack, z_hat)
                            student = _value(code, degree, c, parameters, ops, args, stack, z_hat)
                        residual += lam_p[i] * (_value(code, degree, c, parameters, ops, args, stack, pre[s, i]) - student)
                        bi = lam_p[i] * slope * xi * inverse
                        b[s, i] = bi
                        sum_b += bi * cv
                        if normalized:
                            qi = z_hat * inverse
                            q[s, i] = qi
                            if not linear:
                                sum_curvature += bi * qi * cv * cv
                            if tilted and identity:
                                sum_tilt += y[s, i] * bi * qi * cv
                    factor = scale * residual
                    av = factor * sum_b
                    M = -xi * (factor * sum_curvature) if normalized and not linear else 0.0
                    # H = u_hat^T G = g_hat av + y_W.E + S M, E the gradient's part along span(W)
                    H = gh * av
                    if constrained:
                        # P_W^perp: x -> x - Q_W z_W (E = -z_W av), and the W-directions of the normalisation term vanish
                        total = 0.0
                        for t in range(rank_w):
                            total += y[s, t] * x[s, t]
                        H -= av * total
                    elif normalized:
                        if identity:
                            H -= factor * sum_tilt
                        else:
                            # E = -L^T (kappa_i c_i)_i
                            for i in range(k):
                                kc[s, i] = -factor * (b[s, i] * q[s, i] * ch[s, co, i])
                            for l in range(rank_w):
                                total = 0.0
                                for i in range(k):
                                    total += LT[l, i] * kc[s, i]
                                E[s, l] = total
                            total = 0.0
                            for t in range(rank_w):
                                total += y[s, t] * E[s, t]
                            H += total
                    H += S * M
                    # u_hat - eta G_tan = u_hat M' + x b + Q_F E' with M' = 1 - eta (M - H), b = -eta av, E' = -eta E
                    Mp = 1.0 - eta * (M - H)
                    # c_hat' = c_hat - eta_c dL/dc_hat at the old state (W = I: in the pass over y below)
                    if joint and not identity:
                        for i in range(padded):
                            beta = factor * b[s, i]
                            if normalized:
                                total = 0.0
                                if tilted:
                                    total = P[s, i]
                                if not linear:
                                    total += xi * S * ch[s, co, i]
                                ch[s, no, i] = ch[s, co, i] - eta_c * (beta * gh - beta * q[s, i] * total)
                            else:
                                ch[s, no, i] = ch[s, co, i] - eta_c * (beta * gh)
                    # y' = y M' + z b + E', and |y'|^2
                    squares = 0.0
                    for t in range(padded):
                        if joint and identity:
                            beta = factor * b[s, t]
                            if normalized:
                                total = 0.0
                                if tilted:
                                    total = y[s, t]
                                if not linear:
                                    total += xi * S * ch[s, co, t]
                                ch[s, no, t] = ch[s, co, t] - eta_c * (beta * gh - beta * q[s, t] * total)
                            else:
                                ch[s, no, t] = ch[s, co, t] - eta_c * (beta * gh)
                        value = y[s, t] * Mp - eta * x[s, t] * av
                        if constrained:
                            value += eta * x[s, t] * av * in_w[t]
                        elif normalized:
                            if identity:
                                value += eta * (factor * b[s, t] * q[s, t] * ch[s, co, t])
                            else:
                                value -= eta * E[s, t]
                        y[s, t] = value
                        squares += value * value
                    # Gamma' = M'^2 Gamma - 2 eta M' zeta av + |x_perp|^2 eta^2 av^2
                    perp = omega * omega + chi
                    left = Mp * zeta
                    Gn = Mp * gs * Mp - eta * (left * av + av * left) + perp * eta * eta * av * av
                    # polar retraction: T = (|y'|^2 + Gamma')^(-1/2), applied to y in the next step's first pass
                    work = Gn + squares
                    finite[s] = work < math.inf
                    if not finite[s]:
                        for t in range(p):
                            y[s, t] = math.nan
                        continue
                    Ts = 1.0 / math.sqrt(work)
                    T[s] = Ts
                    gam[s] = Ts * Gn * Ts
                    if joint:
                        cur[s] = no
                # the hits, and the trajectories that stop (diverged, or hit with stop_at_hit): stored, their
                # slot then a copy of the other's; the pair ends when neither slot holds a trajectory
                ends = False
                for s in range(2):
                    jj = slot_of[s]
                    if jj < 0:
                        continue
                    ending = not finite[s]
                    if finite[s] and level < math.inf and hits[jj] < 0:
                        # the smallest squared singular value of U^T u_hat (r* x 1): |UF y|^2
                        reached = 0.0
                        for l in range(rs):
                            total = 0.0
                            for t in range(p):
                                total += UF[l, t] * y[s, t]
                            reached += (T[s] * total) * (T[s] * total)
                        if reached >= level:
                            hits[jj] = offset + step + 1
                            ending = stop_at_hit
                    if ending:
                        _store_slot(jj, Y, Gam, Ch, states, s, y, ch[:, cur[s]], gam, T, words)
                        slot_of[s] = -1
                        ends = True
                if ends:
                    if slot_of[0] < 0 and slot_of[1] < 0:
                        break
                    # the slot left empty copies the other's state
                    to = 0 if slot_of[0] < 0 else 1
                    other = 1 - to
                    for t in range(padded):
                        y[to, t] = y[other, t]
                        ch[to, cur[to], t] = ch[other, cur[other], t]
                    T[to], gam[to] = T[other], gam[other]
                    for w in range(4):
                        words[to, w] = words[other, w]
            for s in range(2):
                if slot_of[s] >= 0:
                    _store_slot(slot_of[s], Y, Gam, Ch, states, s, y, ch[:, cur[s]], gam, T, words)
        return len(version)

    return advance
