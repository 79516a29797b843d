"""Initialisations, the loss and its gradient, gradient descent (batched over repetitions, numba) and
gradient flow (the project's adaptive Dormand–Prince integrator on the flattened state, dense output) for
the LoRA matrix-factorization problem, with the paper's observables on a record grid.

State: ``A_1`` (r x n), ``B_1`` (h x r), ``A_2`` (r x h), ``B_2`` (m x r); flattened in that order for the
integrator. With ``M_2 = W_2 + B_2 A_2``, ``M_1 = W_1 + B_1 A_1`` and ``E = Y_ft - M_2 M_1``:
``dL/dA_1 = -B_1^T M_2^T E``, ``dL/dB_1 = -M_2^T E A_1^T``, ``dL/dA_2 = -B_2^T E M_1^T``, ``dL/dB_2 = -E M_1^T A_2^T``.
The kernels evaluate these through r-sized intermediates (W_2 B_1, A_2 W_1, A_2 B_1), about four times fewer
operations than forming M_2 M_1.

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
from numba import njit, prange

from ..._validation import InvalidArgument, check_choice, check_integer, check_real
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


@njit(cache=True, parallel=True)
def _descend(W1, W2, D, gamma1, lr, record_steps, A1s, B1s, A2s, B2s, records):
    """Gradient descent for every repetition (in parallel); ``records[j, i]`` = observables at
    record_steps[i]."""
    repetitions = A1s.shape[0]
    for j in prange(repetitions):
        A1 = A1s[j].copy()
        B1 = B1s[j].copy()
        A2 = A2s[j].copy()
        B2 = B2s[j].copy()
        gA1 = np.empty_like(A1)
        gB1 = np.empty_like(B1)
        gA2 = np.empty_like(A2)
        gB2 = np.empty_like(B2)
        scratch = (np.empty_like(A1), np.empty_like(B1), np.empty_like(A2), np.empty_like(B2))
        C1_0 = A1 @ np.ascontiguousarray(A1.T) - np.ascontiguousarray(B1.T) @ B1
        C2_0 = A2 @ np.ascontiguousarray(A2.T) - np.ascontiguousarray(B2.T) @ B2
        done = 0
        for i in range(record_steps.size):
            while done < record_steps[i]:
                value = _loss_and_gradient(W1, W2, D, A1, B1, A2, B2, gA1, gB1, gA2, gB2, True)
                if not math.isfinite(value):
                    break
                A1 -= lr * gA1
                B1 -= lr * gB1
                A2 -= lr * gA2
                B2 -= lr * gB2
                done += 1
            _observe(W1, W2, D, A1, B1, A2, B2, gamma1, C1_0, C2_0, records[j, i], scratch)
        A1s[j] = A1
        B1s[j] = B1
        A2s[j] = A2
        B2s[j] = B2


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
    parts = [np.ascontiguousarray(array[index]) for array in (state.A1, state.B1, state.A2, state.B2)]
    out = [np.empty_like(part) for part in parts]
    _loss_and_gradient(problem.W1, problem.W2, D, *parts, *out, True)
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
    return np.unique(np.linspace(0, steps, records + 1).round().astype(np.int64))


def mf_gradient_descent(problem: MFProblem, init: str = "small", alpha: float = 1e-3, repetitions: int = 1, steps: int = 50_000, lr: float = 1e-4, records: int = 100, seed: int = 0, state: MFState | None = None) -> MFRun:
    """Gradient descent ``X <- X - lr dL/dX`` on every adapter, all repetitions in parallel (numba threads;
    each repetition's numbers do not depend on the thread count).

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
    begin = time.perf_counter()
    _descend(np.ascontiguousarray(problem.W1), np.ascontiguousarray(problem.W2), D, gamma1, lr, grid, current.A1, current.B1, current.A2, current.B2, out)
    return MFRun(grid, grid * lr, out, current, "gd", lr, init, float(alpha), seed, time.perf_counter() - begin)


def mf_gradient_flow(problem: MFProblem, init: str = "small", alpha: float = 1e-3, repetitions: int = 1, time_end: float = 5.0, records: int = 100, seed: int = 0, rtol: float = 1e-10, atol: float = 1e-14, state: MFState | None = None, lr: float = 1e-4) -> MFRun:
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

    Returns
    -------
    MFRun
    """
    from ...dynamics.solve import ODE, solve

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
    for j in range(state.repetitions):
        solution = solve(ODE(_flow_rhs(), parameters), state.flat(j), times, rtol=rtol, atol=atol)
        first = _unflatten(problem, solution.values[0])
        C1_0 = first[0] @ first[0].T - first[1].T @ first[1]
        C2_0 = first[2] @ first[2].T - first[3].T @ first[3]
        scratch = tuple(np.empty_like(part) for part in first)
        for i, row in enumerate(solution.values):
            parts = tuple(np.ascontiguousarray(part) for part in _unflatten(problem, row))
            _observe(problem.W1, problem.W2, D, *parts, gamma1, C1_0, C2_0, out[j, i], scratch)
        finals.append(_unflatten(problem, solution.values[-1]))
    final = MFState(*(np.stack([f[i] for f in finals]) for i in range(4)))
    return MFRun(times / lr, times, out, final, "gf", lr, init, float(alpha), seed, time.perf_counter() - begin)


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
