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

__all__ = ["inverse_square_root", "smallest_squared_singular_value", "general_chain_kernel"]


@njit(cache=True)
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


@specialised
def general_chain_kernel(code: int, identity: bool, normalized: bool, constrained: bool, joint: bool):
    """``advance`` of the state chain for the activation fast path ``code`` and the model's switches
    (compile-time constants): ``identity`` (G = I, L = I), the ``normalized`` convention, u_hat
    ``constrained`` to span(W)^perp, and ``joint`` training of C_hat.

    ``reals`` = (eta, eta_c, xi, s_out, chi-square degrees of freedom d - p - r)."""
    version = SOURCE_VERSION

    @njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
    def advance(start, stop, Y, Gam, Ch, states, hits, level, stop_at_hit, offset, steps, L, UF, C, lam, inverse_teacher, w_squared, reals, parameters, ops, args, d_ops, d_args):
        """``steps`` steps of trajectories start..stop-1 from step ``offset``; ``hits[j]`` (-1 until then)
        records the first step where the smallest squared singular value of U^T U_hat reaches ``level``."""
        eta, eta_c, xi, s_out, dof = reals[0], reals[1], reals[2], reals[3], reals[4]
        k, rank_w = L.shape
        rs, p = UF.shape
        r = Y.shape[2]
        draws = np.empty(p + r)
        a = np.empty(k)
        g = np.empty(rs)
        gh = np.empty(r)
        zeta = np.empty(r)
        P = np.zeros((k, r))
        S = np.empty((r, r))
        beta = np.empty(k)
        kappa = np.zeros(k)
        av = np.empty(r)
        E = np.zeros((p, r))
        M = np.empty((r, r))
        H = np.empty((r, r))
        Mp = np.empty((r, r))
        Bg = np.empty((r, r))
        Yn = np.empty((p, r))
        Gn = np.empty((r, r))
        T = np.empty((r, r))
        work = np.empty((r, r))
        O = np.empty((rs, r))
        grad_c = np.empty((k, r))
        stack = np.empty(STACK_SIZE)
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
                for l in range(r):
                    for m in range(r):
                        total = gam[l, m]
                        for q in range(p):
                            total += y[q, l] * y[q, m]
                        S[l, m] = total
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
                # the residual and the per-neuron coefficients of the gradient
                residual = 0.0
                for i in range(k):
                    teacher = a[i]
                    student = a[i]
                    for l in range(rs):
                        teacher += xi * C[i, l] * g[l]
                    for l in range(r):
                        student += xi * ch[i, l] * gh[l]
                    inverse = 1.0
                    if normalized:
                        squared = w_squared[i]
                        for l in range(r):
                            squared += 2.0 * xi * P[i, l] * ch[i, l]
                            for m in range(r):
                                squared += xi * xi * ch[i, l] * S[l, m] * ch[i, m]
                        inverse = 1.0 / math.sqrt(squared)
                        teacher *= inverse_teacher[i]
                    z_hat = student * inverse
                    residual += lam[i] * (activation_value(code, parameters, ops, args, stack, teacher) - activation_value(code, parameters, ops, args, stack, z_hat))
                    beta[i] = lam[i] * activation_derivative(code, parameters, d_ops, d_args, stack, z_hat) * xi * inverse
                    if normalized:
                        kappa[i] = z_hat * inverse
                factor = -2.0 * s_out * s_out * residual
                for i in range(k):
                    beta[i] *= factor
                    kappa[i] *= beta[i]  # kappa_i = beta_i s_i / n_i^2
                # gradient = x av^T + Q_F E + U_hat M
                for l in range(r):
                    total = 0.0
                    for i in range(k):
                        total += beta[i] * ch[i, l]
                    av[l] = total
                for l in range(r):
                    for m in range(r):
                        total = 0.0
                        if normalized:
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
                    # dL/dC_hat_i = beta_i g_hat - kappa_i (P_i + xi S C_hat_i), at the old state
                    for i in range(k):
                        for l in range(r):
                            total = 0.0
                            if normalized:
                                total = P[i, l]
                                for m in range(r):
                                    total += xi * S[l, m] * ch[i, m]
                            grad_c[i, l] = beta[i] * gh[l] - kappa[i] * total
                for q in range(p):
                    for l in range(r):
                        total = -eta * draws[q] * av[l] - (eta * E[q, l] if q < rank_w else 0.0)
                        for m in range(r):
                            total += y[q, m] * Mp[m, l]
                        Yn[q, l] = total
                # Gamma' = M'^T Gamma M' + M'^T zeta b^T + b zeta^T M' + |x_perp|^2 b b^T (b = -eta av)
                perp = omega_squared + chi
                for l in range(r):
                    for m in range(r):
                        total = 0.0
                        for n in range(r):
                            for o in range(r):
                                total += Mp[n, l] * gam[n, o] * Mp[o, m]
                        left = 0.0
                        right = 0.0
                        for n in range(r):
                            left += Mp[n, l] * zeta[n]
                            right += Mp[n, m] * zeta[n]
                        total += -eta * (left * av[m] + av[l] * right) + perp * eta * eta * av[l] * av[m]
                        Gn[l, m] = total
                # polar retraction: T = (Y'^T Y' + Gamma')^(-1/2)
                for l in range(r):
                    for m in range(r):
                        total = Gn[l, m]
                        for q in range(p):
                            total += Yn[q, l] * Yn[q, m]
                        work[l, m] = total
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
                for l in range(r):
                    for m in range(r):
                        total = 0.0
                        for n in range(r):
                            for o in range(r):
                                total += T[n, l] * Gn[n, o] * T[o, m]
                        work[l, m] = total
                for l in range(r):
                    for m in range(r):
                        gam[l, m] = 0.5 * (work[l, m] + work[m, l])
                if joint:
                    for i in range(k):
                        for l in range(r):
                            ch[i, l] -= eta_c * grad_c[i, l]
                if level < math.inf and hits[j] < 0:
                    for l in range(rs):
                        for m in range(r):
                            total = 0.0
                            for q in range(p):
                                total += UF[l, q] * y[q, m]
                            O[l, m] = total
                    if smallest_squared_singular_value(O) >= level:
                        hits[j] = offset + step + 1
                        if stop_at_hit:
                            break
            streams.store_words(states[j], s0, s1, s2, s3)
        return len(version)

    return advance
