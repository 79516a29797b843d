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
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ...gaussian.families.fast import activation_derivative, activation_value
from ...gaussian.programs import STACK_SIZE
from ...numerics import random_streams as streams
from ...numerics.compiled import SOURCE_VERSION, specialised

__all__ = ["inverse_square_root", "smallest_squared_singular_value", "neuron_terms", "c_hat_gradient", "weighted_columns", "overlap_reaches", "gram_plus", "row_products", "congruence", "sample_buffers", "general_chain_kernel"]


@njit(cache=True, inline="always")
def inverse_square_root(S, out):
    """``out = S^(-1/2)`` for a symmetric positive definite r x r matrix (closed forms for r = 1, 2)."""
    r = S.shape[0]
    if r == 1:
        out[0, 0] = 1.0 / math.sqrt(S[0, 0])
        return
    if r == 2:
        # sqrt(S) = (S + s I) / t with s = sqrt(det S), t = sqrt(tr S + 2 s); its inverse in closed form
        s = math.sqrt(max(S[0, 0] * S[1, 1] - S[0, 1] * S[1, 0], 0.0))
        t = math.sqrt(S[0, 0] + S[1, 1] + 2.0 * s)
        a, b, c, e = (S[0, 0] + s) / t, S[0, 1] / t, S[1, 0] / t, (S[1, 1] + s) / t
        det = a * e - b * c
        out[0, 0], out[0, 1], out[1, 0], out[1, 1] = e / det, -b / det, -c / det, a / det
        return
    values, vectors = np.linalg.eigh(S)
    for i in range(r):
        for j in range(r):
            total = 0.0
            for l in range(r):
                total += vectors[i, l] * vectors[j, l] / math.sqrt(values[l])
            out[i, j] = total


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
def _cholesky_lower(A, out):
    """``out`` lower triangular with ``out out^T = A`` (a non-positive pivot gives a zero column: the state's
    Gamma may be singular, and R^T x then has no component there)."""
    r = A.shape[0]
    for j in range(r):
        total = A[j, j]
        for l in range(j):
            total -= out[j, l] * out[j, l]
        pivot = math.sqrt(total) if total > 0.0 else 0.0
        out[j, j] = pivot
        for i in range(j + 1, r):
            value = A[i, j]
            for l in range(j):
                value -= out[i, l] * out[j, l]
            out[i, j] = value / pivot if pivot > 0.0 else 0.0
        for i in range(j):
            out[i, j] = 0.0


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


@specialised
def general_chain_kernel(code: int, identity: bool, normalized: bool, constrained: bool, joint: bool, linear: bool, rank: int):
    """``advance`` of the state chain for the activation fast path ``code`` and the model's switches
    (compile-time constants): ``identity`` (G = I, L = I), the ``normalized`` convention, u_hat
    ``constrained`` to span(W)^perp, and ``joint`` training of C_hat.

    ``reals`` = (eta, eta_c, xi, s_out, chi-square degrees of freedom d - p - r)."""
    version = SOURCE_VERSION

    @njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract", "nsz"})
    def advance(start, stop, Y, Gam, Ch, states, hits, level, stop_at_hit, offset, steps, L, UF, C, lam, inverse_teacher, w_squared, reals, parameters, ops, args, d_ops, d_args):
        """``steps`` steps of trajectories start..stop-1 from step ``offset``; ``hits[j]`` (-1 until then)
        records the first step where the smallest squared singular value of U^T U_hat reaches ``level``."""
        eta, eta_c, xi, s_out, dof = reals[0], reals[1], reals[2], reals[3], reals[4]
        k, rank_w = L.shape
        rs, p = UF.shape
        r = rank  # a compile-time constant: the r x r loops unroll
        draws = np.empty(p + r)
        a, g, gh, P, S, beta, kappa, av, H, work, T, O, grad_c, stack = sample_buffers(k, rs, r)
        zeta = np.empty(r)
        E = np.zeros((p, r))
        M = np.empty((r, r))
        Mp = np.empty((r, r))
        Bg = np.empty((r, r))
        Yn = np.empty((p, r))
        Gn = np.empty((r, r))
        for j in range(start, stop):
            if stop_at_hit and hits[j] >= 0:
                continue
            y = Y[j]
            gam = Gam[j]
            ch = Ch[j]
            s0, s1, s2, s3 = streams.load_words(states[j])
            for step in range(steps):
                chi, s0, s1, s2, s3 = streams.fill_normal_chi_square(draws, dof, s0, s1, s2, s3)
                # pre-activations: a = W x = L z_W, g = U^T x = UF z, g_hat = U_hat^T x = Y^T z + zeta
                if identity:
                    for i in range(k):
                        a[i] = draws[i]
                else:
                    for i in range(k):
                        total = 0.0
                        for l in range(rank_w):
                            total += L[i, l] * draws[l]
                        a[i] = total
                for l in range(rs):
                    total = 0.0
                    for q in range(p):
                        total += UF[l, q] * draws[q]
                    g[l] = total
                _cholesky_lower(gam, Bg)
                omega_squared = 0.0
                for l in range(r):
                    total = 0.0
                    for m in range(l + 1):
                        total += Bg[l, m] * draws[p + m]
                    zeta[l] = total
                    omega_squared += draws[p + l] * draws[p + l]
                for l in range(r):
                    total = zeta[l]
                    for q in range(p):
                        total += y[q, l] * draws[q]
                    gh[l] = total
                # S = U_hat^T U_hat and P = W U_hat = L Y_W (zero when u_hat stays in span(W)^perp)
                gram_plus(gam, y, S)
                if normalized and not constrained:
                    for i in range(k):
                        for l in range(r):
                            total = 0.0
                            if identity:
                                total = y[i, l]
                            else:
                                for q in range(rank_w):
                                    total += L[i, q] * y[q, l]
                            P[i, l] = total
                neuron_terms(code, normalized, linear, a, g, gh, C, ch, P, S, w_squared, inverse_teacher, lam, xi, s_out, beta, kappa, parameters, ops, args, d_ops, d_args, stack)
                # gradient = x av^T + Q_F E + U_hat M
                weighted_columns(beta, ch, av)
                for l in range(r):
                    for m in range(r):
                        total = 0.0
                        if normalized and not linear:
                            for i in range(k):
                                total += kappa[i] * ch[i, l] * ch[i, m]
                        M[l, m] = -xi * total
                if constrained:
                    # P_W^perp: x -> x - Q_W z_W, and the W-directions of the normalisation term vanish
                    for q in range(rank_w):
                        for l in range(r):
                            E[q, l] = -draws[q] * av[l]
                elif normalized:
                    for q in range(rank_w):
                        for l in range(r):
                            total = 0.0
                            if identity:
                                total = kappa[q] * ch[q, l]
                            else:
                                for i in range(k):
                                    total += L[i, q] * kappa[i] * ch[i, l]
                            E[q, l] = -total
                # H = U_hat^T G = g_hat av^T + Y^T E + S M
                for l in range(r):
                    for m in range(r):
                        total = gh[l] * av[m]
                        for q in range(rank_w):
                            total += y[q, l] * E[q, m]
                        for n in range(r):
                            total += S[l, n] * M[n, m]
                        H[l, m] = total
                # U_hat - eta G_tan = U_hat M' + x b^T + Q_F E' with M' = I - eta (M - sym H), b = -eta av, E' = -eta E
                for l in range(r):
                    for m in range(r):
                        Mp[l, m] = (1.0 if l == m else 0.0) - eta * (M[l, m] - 0.5 * (H[l, m] + H[m, l]))
                if joint:
                    # dL/dC_hat_i at the old state
                    c_hat_gradient(normalized, linear, beta, kappa, gh, P, S, ch, xi, grad_c)
                for q in range(p):
                    for l in range(r):
                        total = -eta * draws[q] * av[l] - (eta * E[q, l] if q < rank_w else 0.0)
                        for m in range(r):
                            total += y[q, m] * Mp[m, l]
                        Yn[q, l] = total
                # Gamma' = M'^T Gamma M' + M'^T zeta b^T + b zeta^T M' + |x_perp|^2 b b^T (b = -eta av)
                perp = omega_squared + chi
                congruence(Mp, gam, Gn)
                for l in range(r):
                    for m in range(r):
                        left = 0.0
                        right = 0.0
                        for n in range(r):
                            left += Mp[n, l] * zeta[n]
                            right += Mp[n, m] * zeta[n]
                        Gn[l, m] += -eta * (left * av[m] + av[l] * right) + perp * eta * eta * av[l] * av[m]
                # polar retraction: T = (Y'^T Y' + Gamma')^(-1/2)
                gram_plus(Gn, Yn, work)
                if not (work[0, 0] < math.inf):
                    for q in range(p):
                        for l in range(r):
                            y[q, l] = math.nan
                    break
                inverse_square_root(work, T)
                for q in range(p):
                    for l in range(r):
                        total = 0.0
                        for m in range(r):
                            total += Yn[q, m] * T[m, l]
                        y[q, l] = total
                congruence(T, Gn, work)
                for l in range(r):
                    for m in range(r):
                        gam[l, m] = 0.5 * (work[l, m] + work[m, l])
                if joint:
                    for i in range(k):
                        for l in range(r):
                            ch[i, l] -= eta_c * grad_c[i, l]
                if level < math.inf and hits[j] < 0 and overlap_reaches(level, UF, y.T, O):
                    hits[j] = offset + step + 1
                    if stop_at_hit:
                        break
            streams.store_words(states[j], s0, s1, s2, s3)
        return len(version)

    return advance
