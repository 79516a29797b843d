"""Initialisations, the loss and its gradient, gradient descent (eight repetitions per SIMD register, numba)
and gradient flow for LoRA in matrix factorization.

(One file of about 1000 lines, on purpose: the SIMD lane intrinsics, the lane kernels built on them and the
loss/observable kernels they inline are cached by numba per file, keyed on this file's source alone; split
across files, an edit of one would leave the others' cached machine code stale.)

Gradient flow runs on the project's adaptive Dormand–Prince integrator (the flattened state, dense output);
the paper's observables are recorded on a grid.

State: ``A_1`` (r x n), ``B_1`` (h x r), ``A_2`` (r x h), ``B_2`` (m x r); flattened in that order for the
integrator. With ``M_2 = W_2 + B_2 A_2``, ``M_1 = W_1 + B_1 A_1`` and ``E = Y_ft - M_2 M_1``:
``dL/dA_1 = -B_1^T M_2^T E``, ``dL/dB_1 = -M_2^T E A_1^T``, ``dL/dA_2 = -B_2^T E M_1^T``, ``dL/dB_2 = -E M_1^T A_2^T``.
The kernels evaluate these through r-sized intermediates (W_2 B_1, A_2 W_1, A_2 B_1), about four times fewer
operations than forming M_2 M_1: gradient descent (and :func:`mf_gradient`) by the lane kernel below (products
summed in index order by fused multiply-adds, no BLAS), the flow and the recorded loss by ``_loss_and_gradient``
(numba's BLAS products).

Observables (per record): ``loss``; ``alignment`` = log10(1 - |cos(gamma_1, U^S_{Z_1})|) (floored at log10 of float64 epsilon) with U^S the top left
singular vector of Z_1 = [B_1; A_1^T]; ``z1_norm``, ``z2_norm`` (Frobenius); ``imbalance_ratio``
= ||Z_1||_2^2 / ||Z_2||_2^2 (spectral, Claim 3.2); ``conservation_1``, ``conservation_2`` = ||C_i(t) - C_i(0)||_F
with C_i = A_i A_i^T - B_i^T B_i, conserved by gradient flow.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from ..._validation import InvalidArgument, check_choice, check_integer, check_real
from ...dynamics.trajectories import checkpoint_grid
from .spec import MFProblem

__all__ = ["MFState", "mf_initial_states", "mf_loss", "mf_gradient", "mf_gradient_descent", "mf_gradient_flow", "MFRun", "MF_OBSERVABLES", "MF_INITS"]

MF_INITS = ("small", "spectral")
MF_OBSERVABLES = ("loss", "alignment", "z1_norm", "z2_norm", "imbalance_ratio", "conservation_1", "conservation_2")


@dataclass(frozen=True)
class MFState:
    """Adapters of one or many repetitions (leading axis: repetition).

    Attributes
    ----------
    A1 : ndarray (R, r, n)
    B1 : ndarray (R, h, r)
    A2 : ndarray (R, r, h)
    B2 : ndarray (R, m, r)
    """

    A1: np.ndarray
    B1: np.ndarray
    A2: np.ndarray
    B2: np.ndarray

    @property
    def repetitions(self) -> int:
        return self.A1.shape[0]

    def take(self, index: int) -> "MFState":
        """Repetition ``index`` as a one-repetition state."""
        return MFState(*(array[index : index + 1].copy() for array in (self.A1, self.B1, self.A2, self.B2)))

    def flat(self, index: int = 0) -> np.ndarray:
        """Repetition ``index`` flattened (A_1, B_1, A_2, B_2) for the integrator."""
        return np.concatenate([array[index].ravel() for array in (self.A1, self.B1, self.A2, self.B2)])


def _unflatten(problem: MFProblem, vector: np.ndarray) -> tuple:
    m, n, h = problem.shape
    r = problem.rank
    sizes = np.cumsum([r * n, h * r, r * h, m * r])
    A1, B1, A2, B2 = np.split(np.asarray(vector, dtype=np.float64), sizes[:-1])
    return A1.reshape(r, n), B1.reshape(h, r), A2.reshape(r, h), B2.reshape(m, r)


def _haar(generator, size: int) -> np.ndarray:
    Q, R = np.linalg.qr(generator.standard_normal((size, size)))
    return Q * np.sign(np.diag(R))


def mf_initial_states(problem: MFProblem, init: str = "small", alpha: float = 1e-3, repetitions: int = 1, seed: int = 0) -> MFState:
    """Initial adapters: ``small`` (the LoRA default: A_i entries N(0, alpha^2), B_i = 0) or ``spectral``
    (§4: B_i = 0, A_1 = G_11 Σ_{A1} G_12^T, A_2 = G_21 Σ_{A2} G_22^T with diagonal N(0, alpha^2) entries, G_11,
    G_21 Haar r x r, G_12 = [V_ΔY, complement] (n x r: ΔY's right singular vectors first), G_22 = [G^S,
    complement] (h x r: the columns g_i = W_1 v_i / |W_1 v_i| first)).

    Repetition j draws from numpy's generator seeded (seed, j): the same seed gives the same repetitions
    whatever their number.

    Parameters
    ----------
    problem : MFProblem
    init : {'small', 'spectral'}, default 'small'
    alpha : float > 0, default 1e-3
    repetitions : int, default 1
    seed : int, default 0

    Returns
    -------
    MFState

    Examples
    --------
    >>> from popgrad.models.matrix_factorization.spec import paper_mf_problem
    >>> state = mf_initial_states(paper_mf_problem(), "small", alpha=1e-3, repetitions=3)
    >>> state.A1.shape, float(np.abs(state.B1).max())
    ((3, 4, 10), 0.0)
    """
    check_choice(init, "init", MF_INITS)
    alpha = check_real(alpha, "alpha", 0.0, 1e3, low_open=True)
    repetitions = check_integer(repetitions, "repetitions", 1, 10**6)
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    m, n, h = problem.shape
    r = problem.rank
    A1 = np.zeros((repetitions, r, n))
    B1 = np.zeros((repetitions, h, r))
    A2 = np.zeros((repetitions, r, h))
    B2 = np.zeros((repetitions, m, r))
    if init == "spectral":
        if r > min(n, h):
            raise InvalidArgument(f"spectral init needs rank <= min(n, h) = {min(n, h)}, got {r}", "rank")
        U, S, Vt = np.linalg.svd(problem.delta_y)
        k = int(np.sum(S > 1e-12 * max(S[0], 1e-300)))
        if k > r:
            raise InvalidArgument(f"spectral init needs rank >= rank(ΔY) = {k}, got {r}", "rank")
        V = Vt.T
        basis_n = np.linalg.qr(np.concatenate([V[:, :k], np.eye(n)], axis=1))[0][:, :n]
        basis_n[:, :k] = V[:, :k]
        G_S = problem.W1 @ V[:, :k]
        G_S = G_S / np.linalg.norm(G_S, axis=0)
        basis_h = np.linalg.qr(np.concatenate([G_S, np.eye(h)], axis=1))[0][:, :h]
        basis_h[:, :k] = G_S
    for j in range(repetitions):
        generator = np.random.default_rng([seed, j])
        if init == "small":
            A1[j] = alpha * generator.standard_normal((r, n))
            A2[j] = alpha * generator.standard_normal((r, h))
        else:
            A1[j] = _haar(generator, r) @ np.diag(alpha * generator.standard_normal(r)) @ basis_n[:, :r].T
            A2[j] = _haar(generator, r) @ np.diag(alpha * generator.standard_normal(r)) @ basis_h[:, :r].T
    return MFState(A1, B1, A2, B2)


@njit(cache=True)
def _loss_and_gradient(W1, W2, D, A1, B1, A2, B2, gA1, gB1, gA2, gB2, with_gradient):
    """L and (optionally) its gradient, with D = Y_ft - Y_pre and Y_pre = W_2 W_1 assumed, through
    r-sized intermediates: E = D - (W_2 B_1) A_1 - B_2 (A_2 W_1) - B_2 (A_2 B_1) A_1."""
    W2B1 = W2 @ B1  # m x r
    A2W1 = A2 @ W1  # r x n
    A2B1 = A2 @ B1  # r x r
    M2B1 = W2B1 + B2 @ A2B1  # (W_2 + B_2 A_2) B_1, m x r
    E = D - M2B1 @ A1 - B2 @ A2W1  # m x n
    value = 0.5 * np.sum(E * E)
    if with_gradient:
        A2M1 = A2W1 + A2B1 @ A1  # A_2 (W_1 + B_1 A_1), r x n
        EA1t = E @ np.ascontiguousarray(A1.T)  # m x r
        B2tE = np.ascontiguousarray(B2.T) @ E  # r x n
        gB2[:, :] = -(E @ np.ascontiguousarray(A2M1.T))
        gA1[:, :] = -(np.ascontiguousarray(M2B1.T) @ E)
        # dL/dB_1 = -M_2^T E A_1^T = -(W_2^T + A_2^T B_2^T) E A_1^T
        gB1[:, :] = -(np.ascontiguousarray(W2.T) @ EA1t + np.ascontiguousarray(A2.T) @ (np.ascontiguousarray(B2.T) @ EA1t))
        # dL/dA_2 = -B_2^T E M_1^T = -(B_2^T E)(W_1^T + A_1^T B_1^T)
        gA2[:, :] = -(B2tE @ np.ascontiguousarray(W1.T) + (B2tE @ np.ascontiguousarray(A1.T)) @ np.ascontiguousarray(B1.T))
    return value


@njit(cache=True)
def _observe(W1, W2, D, A1, B1, A2, B2, gamma1, C1_0, C2_0, out, scratch):
    """Write the observables (the order of MF_OBSERVABLES) into ``out``."""
    out[0] = _loss_and_gradient(W1, W2, D, A1, B1, A2, B2, scratch[0], scratch[1], scratch[2], scratch[3], False)
    h, r = B1.shape
    n = A1.shape[1]
    m = B2.shape[0]
    Z1 = np.empty((h + n, r))
    Z1[:h] = B1
    Z1[h:] = A1.T
    Z2 = np.empty((m + h, r))
    Z2[:m] = B2
    Z2[m:] = A2.T
    values1, vectors1 = np.linalg.eigh(np.ascontiguousarray(Z1.T) @ Z1)
    values2 = np.linalg.eigvalsh(np.ascontiguousarray(Z2.T) @ Z2)
    top = Z1 @ np.ascontiguousarray(vectors1[:, r - 1])
    norm_top = math.sqrt(np.sum(top * top))
    cosine = abs(np.sum(top * gamma1)) / norm_top if norm_top > 0 else 0.0
    out[1] = math.log10(max(1.0 - min(cosine, 1.0), 2.220446049250313e-16))  # below eps, cos = 1 in float64
    out[2] = math.sqrt(np.sum(Z1 * Z1))
    out[3] = math.sqrt(np.sum(Z2 * Z2))
    out[4] = values1[r - 1] / values2[r - 1] if values2[r - 1] > 0 else np.inf
    C1 = A1 @ np.ascontiguousarray(A1.T) - np.ascontiguousarray(B1.T) @ B1
    C2 = A2 @ np.ascontiguousarray(A2.T) - np.ascontiguousarray(B2.T) @ B2
    out[5] = math.sqrt(np.sum((C1 - C1_0) ** 2))
    out[6] = math.sqrt(np.sum((C2 - C2_0) ** 2))


# ------------------------------------------------------------------------------------------------
# Gradient descent, eight repetitions per SIMD register.
#
# A block of LANES repetitions is stored "lane-last": each adapter is a (rows * cols, LANES) array whose
# row a * cols + b holds entry (a, b) of the block's repetitions side by side, so one vector (a 512-bit
# register with AVX-512, two 256-bit ones with AVX2) holds one matrix entry of eight repetitions. Every
# product of the step is then a small matrix product whose entries are such vectors, computed by tiled
# kernels (_lane_product, _lane_steps_b1_a2) on an explicit <8 x double> type (_Lanes, with load, store
# and fma intrinsics) that keep their accumulators in registers. Lanes never mix: every repetition goes
# through the same instructions whichever block and lane it occupies (and however many threads run the
# blocks); products are summed in index order by fused multiply-adds (llvm.fma: one rounding, the same on
# any machine; no BLAS in the loop); unused lanes hold zero adapters, a fixed point of the step.

LANES = 8
_VECTOR = ir.VectorType(ir.DoubleType(), LANES)


class _Lanes(types.Type):
    """LANES float64 values in one LLVM vector (a register)."""

    def __init__(self):
        super().__init__(name="popgrad.mf.Lanes8")


_lanes = _Lanes()


@register_model(_Lanes)
class _LanesModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VECTOR)


def _is_lane_array(array) -> bool:
    return isinstance(array, types.Array) and array.ndim == 2 and array.dtype == types.float64 and array.layout == "C"


def _row_pointer(context, builder, array_type, array, row_type, row):
    data = context.make_array(array_type)(context, builder, array).data
    offset = builder.mul(context.cast(builder, row, row_type, types.intp), ir.Constant(ir.IntType(64), LANES))
    return builder.bitcast(builder.gep(data, [offset]), _VECTOR.as_pointer())


def _splat_value(builder, value):
    vector = builder.insert_element(ir.Constant(_VECTOR, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(vector, ir.Constant(_VECTOR, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


def _as_vector(builder, value_type, value):
    return value if value_type == _lanes else _splat_value(builder, value)


@intrinsic
def _load(typingctx, array, row):
    """Row ``row`` of a C-contiguous (rows, LANES) float64 array (no bounds check)."""
    if not (_is_lane_array(array) and isinstance(row, types.Integer)):
        return None

    def codegen(context, builder, signature, arguments):
        return builder.load(_row_pointer(context, builder, signature.args[0], arguments[0], signature.args[1], arguments[1]), align=8)

    return _lanes(array, row), codegen


@intrinsic
def _store(typingctx, array, row, value):
    """Write ``value`` into row ``row`` (no bounds check)."""
    if not (_is_lane_array(array) and isinstance(row, types.Integer) and value == _lanes):
        return None

    def codegen(context, builder, signature, arguments):
        builder.store(arguments[2], _row_pointer(context, builder, signature.args[0], arguments[0], signature.args[1], arguments[1]), align=8)
        return context.get_dummy_value()

    return types.none(array, row, value), codegen


@intrinsic
def _splat(typingctx, value):
    """``value`` in every lane."""
    if value != types.float64:
        return None

    def codegen(context, builder, signature, arguments):
        return _splat_value(builder, arguments[0])

    return _lanes(types.float64), codegen


def _lane_operands(*operands):
    return all(operand == _lanes or operand == types.float64 for operand in operands) and any(operand == _lanes for operand in operands)


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` lane by lane, rounded once (a float operand is broadcast)."""
    if not _lane_operands(a, b, c):
        return None

    def codegen(context, builder, signature, arguments):
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3), f"llvm.fma.v{LANES}f64")
        return builder.call(function, [_as_vector(builder, kind, value) for kind, value in zip(signature.args, arguments)])

    return _lanes(a, b, c), codegen


def _binary(a, b, operation):
    """Signature and code of a lane-by-lane ``operation`` (fadd, fsub, fmul); a float operand is broadcast."""
    if not _lane_operands(a, b):
        return None

    def codegen(context, builder, signature, arguments):
        x, y = (_as_vector(builder, kind, value) for kind, value in zip(signature.args, arguments))
        return getattr(builder, operation)(x, y)

    return _lanes(a, b), codegen


@intrinsic
def _add(typingctx, a, b):
    """``a + b`` lane by lane."""
    return _binary(a, b, "fadd")


@intrinsic
def _sub(typingctx, a, b):
    """``a - b`` lane by lane."""
    return _binary(a, b, "fsub")


@intrinsic
def _mul(typingctx, a, b):
    """``a * b`` lane by lane."""
    return _binary(a, b, "fmul")


@njit(cache=True)
def _lane_product(out, o0, o1, M, C, init, I, S, K1, V1, a0, a1, U, u0, u1, K2, V2, b0, b1, lr):
    """Lane matrix ``P(i, c) = J(i, c) + sum_{k < K1} S[i, k] V1(k, c) + sum_{k < K2} U(i, k) V2(k, c)`` for
    i < M, c < C, with ``J`` zero (init 0) or ``I`` (init 1); stored as ``out(i, c) = P`` (lr = 0) or
    ``out(i, c) += lr * P`` (mul, then add). Entry (i, c) of a lane matrix X with strides (x0, x1) is row
    ``i * x0 + c * x1`` of X; S is a plain (M, K1) matrix, broadcast over the lanes. The sums run in k order
    (S term first) by fused multiply-adds.

    Tiles of 2 x 4 entries keep eight accumulators in registers; at the edges a tile repeats its last row
    or column (the repeated entry is computed twice and written twice with the same value: every load of
    the tile precedes its stores, so ``out`` may be ``I`` or be updated in place)."""
    for i in range(0, M, 2):
        j = min(i + 1, M - 1)
        for c in range(0, C, 4):
            d = min(c + 1, C - 1)
            e = min(c + 2, C - 1)
            f = min(c + 3, C - 1)
            if init == 1:
                p0 = _load(I, i * o0 + c * o1)
                p1 = _load(I, i * o0 + d * o1)
                p2 = _load(I, i * o0 + e * o1)
                p3 = _load(I, i * o0 + f * o1)
                q0 = _load(I, j * o0 + c * o1)
                q1 = _load(I, j * o0 + d * o1)
                q2 = _load(I, j * o0 + e * o1)
                q3 = _load(I, j * o0 + f * o1)
            else:
                p0 = _splat(0.0)
                p1 = p0
                p2 = p0
                p3 = p0
                q0 = p0
                q1 = p0
                q2 = p0
                q3 = p0
            for k in range(K1):
                s = S[i, k]
                t = S[j, k]
                row = k * a0
                v0 = _load(V1, row + c * a1)
                v1 = _load(V1, row + d * a1)
                v2 = _load(V1, row + e * a1)
                v3 = _load(V1, row + f * a1)
                p0 = _fma(s, v0, p0)
                p1 = _fma(s, v1, p1)
                p2 = _fma(s, v2, p2)
                p3 = _fma(s, v3, p3)
                q0 = _fma(t, v0, q0)
                q1 = _fma(t, v1, q1)
                q2 = _fma(t, v2, q2)
                q3 = _fma(t, v3, q3)
            for k in range(K2):
                x = _load(U, i * u0 + k * u1)
                y = _load(U, j * u0 + k * u1)
                row = k * b0
                v0 = _load(V2, row + c * b1)
                v1 = _load(V2, row + d * b1)
                v2 = _load(V2, row + e * b1)
                v3 = _load(V2, row + f * b1)
                p0 = _fma(x, v0, p0)
                p1 = _fma(x, v1, p1)
                p2 = _fma(x, v2, p2)
                p3 = _fma(x, v3, p3)
                q0 = _fma(y, v0, q0)
                q1 = _fma(y, v1, q1)
                q2 = _fma(y, v2, q2)
                q3 = _fma(y, v3, q3)
            if lr != 0.0:
                p0 = _add(_load(out, i * o0 + c * o1), _mul(lr, p0))
                p1 = _add(_load(out, i * o0 + d * o1), _mul(lr, p1))
                p2 = _add(_load(out, i * o0 + e * o1), _mul(lr, p2))
                p3 = _add(_load(out, i * o0 + f * o1), _mul(lr, p3))
                q0 = _add(_load(out, j * o0 + c * o1), _mul(lr, q0))
                q1 = _add(_load(out, j * o0 + d * o1), _mul(lr, q1))
                q2 = _add(_load(out, j * o0 + e * o1), _mul(lr, q2))
                q3 = _add(_load(out, j * o0 + f * o1), _mul(lr, q3))
            _store(out, i * o0 + c * o1, p0)
            _store(out, i * o0 + d * o1, p1)
            _store(out, i * o0 + e * o1, p2)
            _store(out, i * o0 + f * o1, p3)
            _store(out, j * o0 + c * o1, q0)
            _store(out, j * o0 + d * o1, q1)
            _store(out, j * o0 + e * o1, q2)
            _store(out, j * o0 + f * o1, q3)


@njit(cache=True)
def _lane_matrix(buffer, start, size):
    return buffer[start * LANES : (start + size) * LANES].reshape(size, LANES), start + size


@njit(cache=True)
def _lane_workspace(m, n, h, r):
    """The block's lane matrices in one zeroed buffer, each row 64-byte aligned (one cache line): A_1, B_1,
    A_2, B_2, W_2 B_1, A_2 W_1, A_2 B_1, M_2 B_1, A_2 M_1, E, E A_1^T, B_2^T E, X = B_2^T E A_1^T (as B_2^T (E
    A_1^T)), Y = B_2^T E A_1^T (as (B_2^T E) A_1^T), two rows of the B_1 and A_2 steps, and the loss."""
    total = 2 * h * r + 4 * m * r + 4 * r * n + 3 * r * r + m * n + 4 * r + 1
    raw = np.zeros((total + 1) * LANES)
    offset = (-(raw.ctypes.data // 8)) % LANES
    buffer = raw[offset : offset + total * LANES]
    A1, start = _lane_matrix(buffer, 0, r * n)
    B1, start = _lane_matrix(buffer, start, h * r)
    A2, start = _lane_matrix(buffer, start, r * h)
    B2, start = _lane_matrix(buffer, start, m * r)
    W2B1, start = _lane_matrix(buffer, start, m * r)
    A2W1, start = _lane_matrix(buffer, start, r * n)
    A2B1, start = _lane_matrix(buffer, start, r * r)
    M2B1, start = _lane_matrix(buffer, start, m * r)
    A2M1, start = _lane_matrix(buffer, start, r * n)
    E, start = _lane_matrix(buffer, start, m * n)
    EA1t, start = _lane_matrix(buffer, start, m * r)
    B2tE, start = _lane_matrix(buffer, start, r * n)
    X, start = _lane_matrix(buffer, start, r * r)
    Y, start = _lane_matrix(buffer, start, r * r)
    rows, start = _lane_matrix(buffer, start, 4 * r)
    loss, start = _lane_matrix(buffer, start, 1)
    return (A1, B1, A2, B2, W2B1, A2W1, A2B1, M2B1, A2M1, E, EA1t, B2tE, X, Y, rows, loss)


@njit(cache=True)
def _lane_residual(W1, W2, D, work, m, n, h, r):
    """W_2 B_1, A_2 W_1, A_2 B_1, M_2 B_1, A_2 M_1 and E = D - M_2 B_1 A_1 - B_2 A_2 W_1 (so E = Y_ft - M_2 M_1
    with Y_pre = W_2 W_1), and 0.5 ||E||_F^2 per lane in ``work[15]``."""
    A1, B1, A2, B2, W2B1, A2W1, A2B1, M2B1, A2M1, E, EA1t, B2tE, X, Y, rows, loss = work
    _lane_product(W2B1, r, 1, m, r, 0, W2B1, W2, h, B1, r, 1, B1, 0, 0, 0, B1, 0, 0, 0.0)  # W_2 B_1
    _lane_product(A2W1, 1, n, n, r, 0, A2W1, W1.T, h, A2, 1, h, A2, 0, 0, 0, A2, 0, 0, 0.0)  # (A_2 W_1)^T = W_1^T A_2^T
    _lane_product(A2B1, r, 1, r, r, 0, A2B1, W2, 0, A2, 0, 0, A2, h, 1, h, B1, r, 1, 0.0)  # A_2 B_1
    _lane_product(M2B1, r, 1, m, r, 1, W2B1, W2, 0, B2, 0, 0, B2, r, 1, r, A2B1, r, 1, 0.0)  # W_2 B_1 + B_2 (A_2 B_1)
    _lane_product(A2M1, 1, n, n, r, 1, A2W1, W2, 0, A1, 0, 0, A1, 1, n, r, A2B1, 1, r, 0.0)  # A_2 W_1 + (A_2 B_1) A_1
    # E holds M_2 B_1 A_1 + B_2 A_2 W_1 first, then D minus it
    _lane_product(E, n, 1, m, n, 0, E, W2, 0, A1, 0, 0, M2B1, r, 1, r, A1, n, 1, 0.0)
    _lane_product(E, n, 1, m, n, 1, E, W2, 0, A1, 0, 0, B2, r, 1, r, A2W1, n, 1, 0.0)
    total = _splat(0.0)
    for i in range(m):
        for j in range(n):
            entry = _sub(_splat(D[i, j]), _load(E, i * n + j))
            _store(E, i * n + j, entry)
            total = _fma(entry, entry, total)
    _store(loss, 0, _mul(0.5, total))


@njit(cache=True)
def _lane_descent_step(W1, W2, work, gA1, gB1, gA2, gB2, m, n, h, r, lr):
    """After :func:`_lane_residual`: the negative gradients, -dL/dA_1 = (M_2 B_1)^T E into gA1 and likewise
    (lr = 0); or, with gA1 ... gB2 the adapters themselves and lr > 0, the step X <- X + lr (-dL/dX)."""
    A1, B1, A2, B2, W2B1, A2W1, A2B1, M2B1, A2M1, E, EA1t, B2tE, X, Y, rows, loss = work
    _lane_product(EA1t, r, 1, m, r, 0, EA1t, W2, 0, E, 0, 0, E, n, 1, n, A1, 1, n, 0.0)  # E A_1^T
    _lane_product(B2tE, 1, n, n, r, 0, B2tE, W2, 0, E, 0, 0, E, 1, n, m, B2, r, 1, 0.0)  # (B_2^T E)^T = E^T B_2
    _lane_product(X, r, 1, r, r, 0, X, W2, 0, E, 0, 0, B2, 1, r, m, EA1t, r, 1, 0.0)  # B_2^T (E A_1^T)
    _lane_product(Y, r, 1, r, r, 0, Y, W2, 0, E, 0, 0, B2tE, n, 1, n, A1, 1, n, 0.0)  # (B_2^T E) A_1^T
    # the last reads of A_1 and B_2 are above: their steps can be written in place
    _lane_product(gB2, r, 1, m, r, 0, gB2, W2, 0, E, 0, 0, E, n, 1, n, A2M1, 1, n, lr)  # E M_1^T A_2^T
    _lane_product(gA1, 1, n, n, r, 0, gA1, W2, 0, E, 0, 0, E, 1, n, m, M2B1, r, 1, lr)  # (M_2 B_1)^T E, transposed
    _lane_steps_b1_a2(W1, W2, work, gB1, gA2, m, n, h, r, lr)


@njit(cache=True)
def _lane_steps_b1_a2(W1, W2, work, gB1, gA2, m, n, h, r, lr):
    """-dL/dB_1 = W_2^T (E A_1^T) + A_2^T X and (-dL/dA_2)^T = W_1 (B_2^T E)^T + B_1 Y^T, two rows l of B_1 (and
    columns l of A_2) at a time: row l of either needs only row l of B_1 and column l of A_2, so both steps
    are written as soon as the pair is done (one pass over the two large adapters). Tiles and sums as in
    :func:`_lane_product`."""
    A1, B1, A2, B2, W2B1, A2W1, A2B1, M2B1, A2M1, E, EA1t, B2tE, X, Y, rows, loss = work
    for l in range(0, h, 2):
        k = min(l + 1, h - 1)
        for c in range(0, r, 4):
            d = min(c + 1, r - 1)
            e = min(c + 2, r - 1)
            f = min(c + 3, r - 1)
            # -dL/dB_1, rows l and k, columns c..f
            p0 = _splat(0.0)
            p1 = p0
            p2 = p0
            p3 = p0
            q0 = p0
            q1 = p0
            q2 = p0
            q3 = p0
            for i in range(m):
                s = W2[i, l]
                t = W2[i, k]
                v0 = _load(EA1t, i * r + c)
                v1 = _load(EA1t, i * r + d)
                v2 = _load(EA1t, i * r + e)
                v3 = _load(EA1t, i * r + f)
                p0 = _fma(s, v0, p0)
                p1 = _fma(s, v1, p1)
                p2 = _fma(s, v2, p2)
                p3 = _fma(s, v3, p3)
                q0 = _fma(t, v0, q0)
                q1 = _fma(t, v1, q1)
                q2 = _fma(t, v2, q2)
                q3 = _fma(t, v3, q3)
            for a in range(r):
                x = _load(A2, a * h + l)
                y = _load(A2, a * h + k)
                v0 = _load(X, a * r + c)
                v1 = _load(X, a * r + d)
                v2 = _load(X, a * r + e)
                v3 = _load(X, a * r + f)
                p0 = _fma(x, v0, p0)
                p1 = _fma(x, v1, p1)
                p2 = _fma(x, v2, p2)
                p3 = _fma(x, v3, p3)
                q0 = _fma(y, v0, q0)
                q1 = _fma(y, v1, q1)
                q2 = _fma(y, v2, q2)
                q3 = _fma(y, v3, q3)
            # -dL/dA_2, columns l and k, rows c..f
            u0 = _splat(0.0)
            u1 = u0
            u2 = u0
            u3 = u0
            w0 = u0
            w1 = u0
            w2 = u0
            w3 = u0
            for j in range(n):
                s = W1[l, j]
                t = W1[k, j]
                v0 = _load(B2tE, c * n + j)
                v1 = _load(B2tE, d * n + j)
                v2 = _load(B2tE, e * n + j)
                v3 = _load(B2tE, f * n + j)
                u0 = _fma(s, v0, u0)
                u1 = _fma(s, v1, u1)
                u2 = _fma(s, v2, u2)
                u3 = _fma(s, v3, u3)
                w0 = _fma(t, v0, w0)
                w1 = _fma(t, v1, w1)
                w2 = _fma(t, v2, w2)
                w3 = _fma(t, v3, w3)
            for b in range(r):
                x = _load(B1, l * r + b)
                y = _load(B1, k * r + b)
                v0 = _load(Y, c * r + b)
                v1 = _load(Y, d * r + b)
                v2 = _load(Y, e * r + b)
                v3 = _load(Y, f * r + b)
                u0 = _fma(x, v0, u0)
                u1 = _fma(x, v1, u1)
                u2 = _fma(x, v2, u2)
                u3 = _fma(x, v3, u3)
                w0 = _fma(y, v0, w0)
                w1 = _fma(y, v1, w1)
                w2 = _fma(y, v2, w2)
                w3 = _fma(y, v3, w3)
            if r <= 4:
                # one tile holds the pair's whole rows: B_1 and A_2 have been read, write the steps (every
                # load before any store, so repeated edge entries are written twice with the same value)
                if lr != 0.0:
                    p0 = _add(_load(gB1, l * r + c), _mul(lr, p0))
                    p1 = _add(_load(gB1, l * r + d), _mul(lr, p1))
                    p2 = _add(_load(gB1, l * r + e), _mul(lr, p2))
                    p3 = _add(_load(gB1, l * r + f), _mul(lr, p3))
                    q0 = _add(_load(gB1, k * r + c), _mul(lr, q0))
                    q1 = _add(_load(gB1, k * r + d), _mul(lr, q1))
                    q2 = _add(_load(gB1, k * r + e), _mul(lr, q2))
                    q3 = _add(_load(gB1, k * r + f), _mul(lr, q3))
                    u0 = _add(_load(gA2, c * h + l), _mul(lr, u0))
                    u1 = _add(_load(gA2, d * h + l), _mul(lr, u1))
                    u2 = _add(_load(gA2, e * h + l), _mul(lr, u2))
                    u3 = _add(_load(gA2, f * h + l), _mul(lr, u3))
                    w0 = _add(_load(gA2, c * h + k), _mul(lr, w0))
                    w1 = _add(_load(gA2, d * h + k), _mul(lr, w1))
                    w2 = _add(_load(gA2, e * h + k), _mul(lr, w2))
                    w3 = _add(_load(gA2, f * h + k), _mul(lr, w3))
                _store(gB1, l * r + c, p0)
                _store(gB1, l * r + d, p1)
                _store(gB1, l * r + e, p2)
                _store(gB1, l * r + f, p3)
                _store(gB1, k * r + c, q0)
                _store(gB1, k * r + d, q1)
                _store(gB1, k * r + e, q2)
                _store(gB1, k * r + f, q3)
                _store(gA2, c * h + l, u0)
                _store(gA2, d * h + l, u1)
                _store(gA2, e * h + l, u2)
                _store(gA2, f * h + l, u3)
                _store(gA2, c * h + k, w0)
                _store(gA2, d * h + k, w1)
                _store(gA2, e * h + k, w2)
                _store(gA2, f * h + k, w3)
            else:
                _store(rows, c, p0)
                _store(rows, d, p1)
                _store(rows, e, p2)
                _store(rows, f, p3)
                _store(rows, r + c, q0)
                _store(rows, r + d, q1)
                _store(rows, r + e, q2)
                _store(rows, r + f, q3)
                _store(rows, 2 * r + c, u0)
                _store(rows, 2 * r + d, u1)
                _store(rows, 2 * r + e, u2)
                _store(rows, 2 * r + f, u3)
                _store(rows, 3 * r + c, w0)
                _store(rows, 3 * r + d, w1)
                _store(rows, 3 * r + e, w2)
                _store(rows, 3 * r + f, w3)
        if r > 4:
            # wider rows took several tiles, kept in ``rows`` until all had read B_1 and A_2; with h odd,
            # the last pair is one row (k = l), written once
            for pair, row in ((0, l), (1, k)):
                if pair == 1 and k == l:
                    break
                for b in range(r):
                    down = _load(rows, pair * r + b)
                    across = _load(rows, (2 + pair) * r + b)
                    if lr != 0.0:
                        down = _add(_load(gB1, row * r + b), _mul(lr, down))
                        across = _add(_load(gA2, b * h + row), _mul(lr, across))
                    _store(gB1, row * r + b, down)
                    _store(gA2, b * h + row, across)


@njit(cache=True)
def _pack_lanes(A1s, B1s, A2s, B2s, first, count, work):
    """Repetitions first .. first + count - 1 into lanes 0 .. count - 1 (the other lanes zero)."""
    for which in range(4):
        work[which][:, :] = 0.0
    for q in range(count):
        _pack_lane(A1s[first + q], work[0], q)
        _pack_lane(B1s[first + q], work[1], q)
        _pack_lane(A2s[first + q], work[2], q)
        _pack_lane(B2s[first + q], work[3], q)


@njit(cache=True)
def _pack_lane(source, target, q):
    rows, cols = source.shape
    for a in range(rows):
        for b in range(cols):
            target[a * cols + b, q] = source[a, b]


@njit(cache=True)
def _unpack_lane(source, q, target):
    rows, cols = target.shape
    for a in range(rows):
        for b in range(cols):
            target[a, b] = source[a * cols + b, q]


@njit(cache=True)
def _descend_block(W1, W2, D, gamma1, lr, record_steps, A1s, B1s, A2s, B2s, records, C1_0, C2_0, first, count):
    """Gradient descent for repetitions first .. first + count - 1 (count <= LANES) in one block of lanes;
    ``C1_0[j]``, ``C2_0[j]``: repetition j's imbalances at the start of the run (the conservation observables)."""
    r, n = A1s.shape[1], A1s.shape[2]
    h = B1s.shape[1]
    m = B2s.shape[1]
    work = _lane_workspace(m, n, h, r)
    _pack_lanes(A1s, B1s, A2s, B2s, first, count, work)
    # a repetition whose loss is not finite stops where it is (its lane keeps computing; its state is kept here)
    frozen = np.zeros(LANES, dtype=np.bool_)
    live = (work[0], work[1], work[2], work[3])
    kept = (np.zeros_like(work[0]), np.zeros_like(work[1]), np.zeros_like(work[2]), np.zeros_like(work[3]))
    A1 = np.empty((r, n))
    B1 = np.empty((h, r))
    A2 = np.empty((r, h))
    B2 = np.empty((m, r))
    scratch = (np.empty_like(A1), np.empty_like(B1), np.empty_like(A2), np.empty_like(B2))
    done = 0
    moving = count
    for i in range(record_steps.size):
        while done < record_steps[i] and moving > 0:
            _lane_residual(W1, W2, D, work, m, n, h, r)
            for q in range(count):
                if not frozen[q] and not math.isfinite(work[15][0, q]):
                    frozen[q] = True
                    moving -= 1
                    for which in range(4):
                        kept[which][:, q] = live[which][:, q]
            _lane_descent_step(W1, W2, work, work[0], work[1], work[2], work[3], m, n, h, r, lr)
            done += 1
        for q in range(count):
            source = kept if frozen[q] else live
            _unpack_lane(source[0], q, A1)
            _unpack_lane(source[1], q, B1)
            _unpack_lane(source[2], q, A2)
            _unpack_lane(source[3], q, B2)
            _observe(W1, W2, D, A1, B1, A2, B2, gamma1, C1_0[first + q], C2_0[first + q], records[first + q, i], scratch)
    for q in range(count):
        source = kept if frozen[q] else live
        _unpack_lane(source[0], q, A1s[first + q])
        _unpack_lane(source[1], q, B1s[first + q])
        _unpack_lane(source[2], q, A2s[first + q])
        _unpack_lane(source[3], q, B2s[first + q])


@njit(cache=True, parallel=True)
def _descend(W1, W2, D, gamma1, lr, record_steps, A1s, B1s, A2s, B2s, records, C1_0, C2_0):
    """Gradient descent for every repetition, LANES repetitions per block and blocks in parallel;
    ``records[j, i]`` = observables of repetition j at record_steps[i] (steps from this call's start)."""
    blocks = (A1s.shape[0] + LANES - 1) // LANES
    for block in prange(blocks):
        first = block * LANES
        _descend_block(W1, W2, D, gamma1, lr, record_steps, A1s, B1s, A2s, B2s, records, C1_0, C2_0, first, min(LANES, A1s.shape[0] - first))


@njit(cache=True)
def _lane_gradient(W1, W2, D, A1s, B1s, A2s, B2s, index, gA1, gB1, gA2, gB2):
    """dL/dA_1, ... of repetition ``index`` by the descent's arithmetic (the repetition alone in lane 0)."""
    r, n = A1s.shape[1], A1s.shape[2]
    h = B1s.shape[1]
    m = B2s.shape[1]
    work = _lane_workspace(m, n, h, r)
    _pack_lanes(A1s, B1s, A2s, B2s, index, 1, work)
    _lane_residual(W1, W2, D, work, m, n, h, r)
    lanes = (np.zeros_like(work[0]), np.zeros_like(work[1]), np.zeros_like(work[2]), np.zeros_like(work[3]))
    _lane_descent_step(W1, W2, work, lanes[0], lanes[1], lanes[2], lanes[3], m, n, h, r, 0.0)
    _unpack_lane(lanes[0], 0, gA1)
    _unpack_lane(lanes[1], 0, gB1)
    _unpack_lane(lanes[2], 0, gA2)
    _unpack_lane(lanes[3], 0, gB2)
    for out in (gA1, gB1, gA2, gB2):
        out *= -1.0


def _check_consistent(problem: MFProblem) -> np.ndarray:
    """D = Y_ft - Y_pre, after checking Y_pre = W_2 W_1 (the kernels rely on it)."""
    product = problem.W2 @ problem.W1
    scale = max(1.0, float(np.max(np.abs(problem.Y_pre))))
    if float(np.max(np.abs(product - problem.Y_pre))) > 1e-9 * scale:
        raise InvalidArgument("Y_pre must equal W_2 W_1 (Assumption 2.1); give Y_pre = W2 @ W1 or leave it out", "Y_pre")
    return np.ascontiguousarray(problem.Y_ft - product)


def mf_loss(problem: MFProblem, state: MFState) -> np.ndarray:
    """L per repetition (computed directly: ½‖Y_ft − (W_2 + B_2 A_2)(W_1 + B_1 A_1)‖_F^2).

    Parameters
    ----------
    problem : MFProblem
    state : MFState

    Returns
    -------
    ndarray (R,)
    """
    M2 = problem.W2[None] + state.B2 @ state.A2
    M1 = problem.W1[None] + state.B1 @ state.A1
    E = problem.Y_ft[None] - M2 @ M1
    return 0.5 * np.sum(E * E, axis=(1, 2))


def mf_gradient(problem: MFProblem, state: MFState, index: int = 0) -> tuple:
    """The gradient (dL/dA_1, dL/dB_1, dL/dA_2, dL/dB_2) of repetition ``index``, by the kernel the runs use.

    Parameters
    ----------
    problem : MFProblem
    state : MFState
    index : int, default 0

    Returns
    -------
    tuple of ndarray
    """
    D = _check_consistent(problem)
    parts = [np.ascontiguousarray(array[index], dtype=np.float64)[None] for array in (state.A1, state.B1, state.A2, state.B2)]
    out = [np.empty_like(part[0]) for part in parts]
    _lane_gradient(np.ascontiguousarray(problem.W1), np.ascontiguousarray(problem.W2), D, *parts, 0, *out)
    return tuple(out)


@dataclass(frozen=True)
class MFRun:
    """Observables of gradient descent or gradient flow on a record grid.

    Attributes
    ----------
    steps : ndarray
        Record points: GD steps, or flow times divided by the step ``lr`` (so both read in steps).
    times : ndarray
        Flow time t = step * lr.
    records : ndarray (R, records, observables)
    final : MFState
    method : str
        'gd' or 'gf'.
    lr : float
    init : str
    alpha : float
    seed : int
    seconds : float
    """

    steps: np.ndarray
    times: np.ndarray
    records: np.ndarray
    final: MFState
    method: str
    lr: float
    init: str
    alpha: float
    seed: int
    seconds: float

    def observable(self, name: str) -> np.ndarray:
        """``records[:, :, name]``: (repetitions, records)."""
        check_choice(name, "name", MF_OBSERVABLES)
        return self.records[:, :, MF_OBSERVABLES.index(name)]

    def final_loss(self) -> np.ndarray:
        """The loss at the last record, per repetition."""
        return self.observable("loss")[:, -1]


def _record_grid(steps: int, records: int) -> np.ndarray:
    return checkpoint_grid(steps, records + 1)


def mf_gradient_descent(problem: MFProblem, init: str = "small", alpha: float = 1e-3, repetitions: int = 1, steps: int = 50_000, lr: float = 1e-4, records: int = 100, seed: int = 0, state: MFState | None = None, progress: bool | None = False, timeout: float | None = None) -> MFRun:
    """Gradient descent ``X <- X - lr dL/dX`` on every adapter (L = 1/2 ||Y_ft - (W_2 + B_2 A_2)(W_1 + B_1 A_1)||_F^2,
    with the 1/2, as :func:`mf_loss`; the fine-tuning model's loss has none), eight repetitions per SIMD register and
    blocks of eight on numba threads (each repetition's numbers depend neither on the thread count nor on
    the other repetitions). A repetition whose loss stops being finite stays at the last state (its records
    repeat it).

    Parameters
    ----------
    problem : MFProblem
    init : {'small', 'spectral'}, default 'small'
    alpha : float > 0, default 1e-3
    repetitions : int, default 1
    steps : int, default 50000
    lr : float > 0, default 1e-4
    records : int, default 100
        Evenly spaced records after step 0 (step 0 included).
    seed : int, default 0
    state : MFState, optional
        Start here instead of drawing ``init``.
    progress : bool or None, default False
        A progress bar over the steps (None: only on a terminal).
    timeout : float, optional
        Seconds; past them the run stops with a TimeoutError that says how far it got and how long the whole
        run would take at its rate. The work is done in pieces of about 0.1 s, so that Ctrl-C
        (KeyboardInterrupt) and the limit act within a fraction of a second.

    Returns
    -------
    MFRun

    Examples
    --------
    >>> from popgrad.models.matrix_factorization.spec import paper_mf_problem
    >>> run = mf_gradient_descent(paper_mf_problem(), "spectral", alpha=1e-3, repetitions=2, steps=50_000, records=5)
    >>> bool(np.all(run.final_loss() < 1e-20))
    True
    """
    D = _check_consistent(problem)
    steps = check_integer(steps, "steps", 0, 10**12)
    lr = check_real(lr, "lr", 0.0, 1e3, low_open=True)
    records = check_integer(records, "records", 1, 10**6)
    if state is None:
        state = mf_initial_states(problem, init, alpha, repetitions, seed)
    grid = _record_grid(steps, records)
    gamma1 = problem.gammas()[0]
    current = MFState(*(np.ascontiguousarray(array, dtype=np.float64).copy() for array in (state.A1, state.B1, state.A2, state.B2)))
    out = np.empty((current.repetitions, grid.size, len(MF_OBSERVABLES)))
    C1_0 = np.stack([A @ np.ascontiguousarray(A.T) - np.ascontiguousarray(B.T) @ B for A, B in zip(current.A1, current.B1)])
    C2_0 = np.stack([A @ np.ascontiguousarray(A.T) - np.ascontiguousarray(B.T) @ B for A, B in zip(current.A2, current.B2)])
    W1, W2 = np.ascontiguousarray(problem.W1), np.ascontiguousarray(problem.W2)
    buffer = np.empty((current.repetitions, 1, len(MF_OBSERVABLES)))
    pieces = _Pieces("mf_gradient_descent", steps, "step", progress, timeout)
    # in pieces of about 0.1 s (the same steps on the same numbers as one call: a lane's state goes back to the
    # arrays and comes again unchanged), so that Ctrl-C, the progress bar and the time limit act between them
    position, index, length = 0, 0, 64
    with pieces:
        while index < grid.size:
            target = min(int(grid[index]), position + length)
            started = time.perf_counter()
            _descend(W1, W2, D, gamma1, lr, np.array([target - position], dtype=grid.dtype), current.A1, current.B1, current.A2, current.B2, buffer, C1_0, C2_0)
            length = _next_length(length, time.perf_counter() - started)
            if target == grid[index]:
                out[:, index] = buffer[:, 0]
                index += 1
            pieces.advance(target - position, done=index == grid.size)
            position = target
    return MFRun(grid, grid * lr, out, current, "gd", lr, init, float(alpha), seed, pieces.seconds)


#: the seconds one piece of work between two checks for Ctrl-C and the time limit aims at
PIECE_SECONDS = 0.1


def _next_length(length: int, seconds: float) -> int:
    """The next piece's length (steps, or integrator steps) from how long this one took."""
    if seconds < PIECE_SECONDS / 2:
        return min(2 * length, 1 << 40)
    if seconds > 2 * PIECE_SECONDS:
        return max(1, length // 2)
    return length


class _Pieces:
    """A long run done in pieces: a progress bar over ``total`` units, and a time limit checked between pieces
    (a KeyboardInterrupt is raised by Python between them too: each piece is about PIECE_SECONDS)."""

    def __init__(self, name: str, total: float, unit: str, progress, timeout):
        from ..._progress import progress_bar

        self.name, self.total, self.unit = name, total, unit
        self.timeout = None if timeout is None else check_real(timeout, "timeout", 0.0, 1e9, low_open=True)
        self.bar = progress_bar(total=total, progress=progress, unit=unit, desc=name)
        self.done = 0.0
        self.begin = time.perf_counter()
        self.seconds = 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()
        self.seconds = time.perf_counter() - self.begin
        return False

    def advance(self, amount: float, done: bool = False) -> None:
        self.done += amount
        self.bar.update(amount)
        elapsed = time.perf_counter() - self.begin
        if self.timeout is not None and not done and elapsed > self.timeout:
            rate = self.done / elapsed if elapsed > 0 else 0.0
            estimate = f"; at this rate the whole run needs about {self.total / rate:.3g} s" if rate > 0 else ""
            raise TimeoutError(f"{self.name} stopped at its time limit of {self.timeout:g} s after {self.done:.6g} of {self.total:.6g} {self.unit}s{estimate}")


def mf_gradient_flow(problem: MFProblem, init: str = "small", alpha: float = 1e-3, repetitions: int = 1, time_end: float = 5.0, records: int = 100, seed: int = 0, rtol: float = 1e-10, atol: float = 1e-14, state: MFState | None = None, lr: float = 1e-4, progress: bool | None = False, timeout: float | None = None) -> MFRun:
    """Gradient flow dX/dt = -dL/dX by the adaptive Dormand–Prince 5(4) integrator (dense output at the
    records), one repetition after another.

    Parameters
    ----------
    problem : MFProblem
    init, alpha, repetitions, seed, state
        As for :func:`mf_gradient_descent`.
    time_end : float > 0, default 5
        The flow time (5 = the paper's 5e4 steps of 1e-4).
    records : int, default 100
    rtol, atol : float
        The integrator's tolerances.
    lr : float, default 1e-4
        Only to express the record times in steps (steps = t / lr), for comparison with GD.
    progress, timeout
        As for :func:`mf_gradient_descent` (the bar counts flow time over all repetitions; the integrator runs
        from record to record in calls of about 0.1 s).

    Returns
    -------
    MFRun
    """
    from ...dynamics.solve import ODE

    D = _check_consistent(problem)
    time_end = check_real(time_end, "time_end", 0.0, 1e9, low_open=True)
    records = check_integer(records, "records", 1, 10**6)
    if state is None:
        state = mf_initial_states(problem, init, alpha, repetitions, seed)
    times = np.linspace(0.0, time_end, records + 1)
    m, n, h = problem.shape
    r = problem.rank
    parameters = np.concatenate([[m, n, h, r], problem.W1.ravel(), problem.W2.ravel(), D.ravel()]).astype(np.float64)
    gamma1 = problem.gammas()[0]
    out = np.empty((state.repetitions, times.size, len(MF_OBSERVABLES)))
    finals = []
    begin = time.perf_counter()
    ode = ODE(_flow_rhs(), parameters)
    with _Pieces("mf_gradient_flow", time_end * state.repetitions, "time unit", progress, timeout) as pieces:
        for j in range(state.repetitions):
            values = _flow_in_pieces(ode, state.flat(j), times, rtol, atol, pieces, last=j == state.repetitions - 1)
            first = _unflatten(problem, values[0])
            C1_0 = first[0] @ first[0].T - first[1].T @ first[1]
            C2_0 = first[2] @ first[2].T - first[3].T @ first[3]
            scratch = tuple(np.empty_like(part) for part in first)
            for i, row in enumerate(values):
                parts = tuple(np.ascontiguousarray(part) for part in _unflatten(problem, row))
                _observe(problem.W1, problem.W2, D, *parts, gamma1, C1_0, C2_0, out[j, i], scratch)
            finals.append(_unflatten(problem, values[-1]))
    final = MFState(*(np.stack([f[i] for f in finals]) for i in range(4)))
    return MFRun(times / lr, times, out, final, "gf", lr, init, float(alpha), seed, pieces.seconds)


def _flow_in_pieces(ode, start: np.ndarray, times: np.ndarray, rtol: float, atol: float, pieces: "_Pieces", last: bool) -> np.ndarray:
    """The flow's states at ``times`` (times[0] = 0), integrated from record to record in calls of at most
    ``budget`` integrator steps (adjusted to about PIECE_SECONDS a call): a piece that needs more is retried on
    a sixteenth of its time span, one that needs few doubles the next."""
    from ...dynamics.solve import SolverFailed, solve

    values = np.empty((times.size, start.size))
    values[0] = start
    state, t, span, budget = start.copy(), 0.0, float(times[1]) if times.size > 1 else 0.0, 250
    for i in range(1, times.size):
        while t < times[i]:
            end = min(times[i], t + span)
            if times[i] - end < 1e-12 * max(1.0, times[i]):
                end = float(times[i])
            started = time.perf_counter()
            try:
                solution = solve(ode, state, [end], rtol=rtol, atol=atol, max_steps=budget, t0=t)
            except SolverFailed as exc:
                if "took more than" not in str(exc) or span < 1e-300:
                    raise
                budget = min(_next_length(budget, time.perf_counter() - started), 100_000)
                span = (end - t) / 16
                pieces.advance(0.0)
                continue
            budget = min(_next_length(budget, time.perf_counter() - started), 100_000)
            state = solution.values[-1].copy()
            pieces.advance(end - t, done=last and end >= times[-1])
            if solution.steps < budget // 4:
                span = 2 * max(span, end - t)
            t = end
        values[i] = state
    return values


@lru_cache(maxsize=1)
def _flow_rhs():
    """The gradient-flow right-hand side, compiled on first use (cached on disk)."""
    from ...dynamics.solvers.base import right_hand_side

    @right_hand_side
    def flow_rhs(t, y, parameters, out):
        m, n, h, r = int(parameters[0]), int(parameters[1]), int(parameters[2]), int(parameters[3])
        offset = 4
        W1 = parameters[offset : offset + h * n].copy().reshape(h, n)
        offset += h * n
        W2 = parameters[offset : offset + m * h].copy().reshape(m, h)
        offset += m * h
        D = parameters[offset : offset + m * n].copy().reshape(m, n)
        a1, b1, a2 = r * n, h * r, r * h
        A1 = y[:a1].copy().reshape(r, n)
        B1 = y[a1 : a1 + b1].copy().reshape(h, r)
        A2 = y[a1 + b1 : a1 + b1 + a2].copy().reshape(r, h)
        B2 = y[a1 + b1 + a2 :].copy().reshape(m, r)
        gA1 = np.empty((r, n))
        gB1 = np.empty((h, r))
        gA2 = np.empty((r, h))
        gB2 = np.empty((m, r))
        _loss_and_gradient(W1, W2, D, A1, B1, A2, B2, gA1, gB1, gA2, gB2, True)
        out[:a1] = -gA1.ravel()
        out[a1 : a1 + b1] = -gB1.ravel()
        out[a1 + b1 : a1 + b1 + a2] = -gA2.ravel()
        out[a1 + b1 + a2 :] = -gB2.ravel()

    return flow_rhs
