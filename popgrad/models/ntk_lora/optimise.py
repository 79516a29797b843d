"""Minimising the LoRA objective from many random starts (L-BFGS and gradient descent, compiled, one start per
numba thread), gradient flow (the project's adaptive Dormand–Prince integrator), and the landscape study:
the distinct limits reached, each certified against the convex optimum, is in :mod:`.study`.

Every start ``j`` draws its initial point from numpy's generator seeded ``(seed, j)``, so results do not depend
on the number of threads or on how starts are batched.

The L-BFGS is the standard two-loop recursion (Nocedal & Wright, Algorithm 7.4) with a backtracking line
search that accepts the Armijo condition or, near convergence where F's round-off exceeds its decrease,
Hager & Zhang's approximate Wolfe conditions; a pair with non-positive curvature is skipped, and a failed
line search restarts from steepest descent once before the run stops.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import njit, prange

from ..._validation import InvalidArgument, check_choice, check_integer, check_real
from ...dynamics.trajectories import checkpoint_grid
from .landscape import _arrays, _flat_objective
from .spec import NTKProblem

__all__ = ["NTK_INITS", "NTKRuns", "ntk_initial_points", "ntk_lbfgs", "ntk_gradient_descent", "ntk_gradient_flow"]

NTK_INITS = ("gaussian", "lora")
#: status codes of a run
STATUS = ("converged", "iteration limit", "line search failed", "diverged")


@njit(cache=True)
def _dot(a, b):
    s = 0.0
    for i in range(a.size):
        s += a[i] * b[i]
    return s


@njit(cache=True)
def _lbfgs_one(G, f0, y, code, K, N, lam, r, x, max_iter, gtol, memory):
    """Minimise from x (overwritten); returns (F, max |grad|, iterations, status, objective evaluations)."""
    m, n = G.shape[1], G.shape[2]
    J = G.shape[0]
    P = x.size
    delta = np.empty((m, n))
    S = np.empty((m, n))
    z = np.empty(J)
    g = np.empty(J)
    grad = np.empty(P)
    new_grad = np.empty(P)
    new_x = np.empty(P)
    direction = np.empty(P)
    Ss = np.zeros((memory, P))
    Ys = np.zeros((memory, P))
    rho = np.zeros(memory)
    coefficients = np.zeros(memory)
    F = _flat_objective(G, f0, y, code, K, N, lam, r, x, grad, delta, z, g, S)
    evaluations = 1
    count = 0
    head = 0
    restarted = False
    for iteration in range(max_iter):
        gmax = 0.0
        for i in range(P):
            gmax = max(gmax, abs(grad[i]))
        if gmax <= gtol:
            return F, gmax, iteration, 0, evaluations
        for i in range(P):
            direction[i] = -grad[i]
        for c in range(count):
            index = (head - 1 - c) % memory
            a = rho[index] * _dot(Ss[index], direction)
            coefficients[index] = a
            for i in range(P):
                direction[i] -= a * Ys[index, i]
        if count > 0:
            index = (head - 1) % memory
            gamma = _dot(Ss[index], Ys[index]) / _dot(Ys[index], Ys[index])
        else:
            gamma = min(1.0, 1.0 / math.sqrt(_dot(grad, grad)))
        for i in range(P):
            direction[i] *= gamma
        for c in range(count - 1, -1, -1):
            index = (head - 1 - c) % memory
            b = rho[index] * _dot(Ys[index], direction)
            for i in range(P):
                direction[i] += Ss[index, i] * (coefficients[index] - b)
        slope = _dot(grad, direction)
        if not slope < 0.0:
            count = 0
            scale = min(1.0, 1.0 / math.sqrt(_dot(grad, grad)))
            for i in range(P):
                direction[i] = -scale * grad[i]
            slope = _dot(grad, direction)
        step = 1.0
        accepted = False
        new_F = F
        for _ in range(60):
            for i in range(P):
                new_x[i] = x[i] + step * direction[i]
            new_F = _flat_objective(G, f0, y, code, K, N, lam, r, new_x, new_grad, delta, z, g, S)
            evaluations += 1
            new_slope = _dot(new_grad, direction)
            if new_F <= F + 1e-4 * step * slope:
                accepted = True
            elif new_F <= F + 1e-12 * abs(F) and 0.9 * slope <= new_slope <= -0.8 * slope:
                accepted = True  # approximate Wolfe (Hager & Zhang 2005)
            if accepted:
                break
            # safeguarded quadratic interpolation of F along the direction
            curvature = new_F - F - slope * step
            trial = -slope * step * step / (2.0 * curvature) if curvature > 0.0 else 0.5 * step
            step = min(max(trial, 0.1 * step), 0.5 * step)
        if not accepted:
            if count > 0 and not restarted:
                count = 0
                restarted = True
                continue
            return F, gmax, iteration, 2, evaluations
        restarted = False
        sy = 0.0
        yy = 0.0
        for i in range(P):
            s_i = new_x[i] - x[i]
            y_i = new_grad[i] - grad[i]
            Ss[head, i] = s_i
            Ys[head, i] = y_i
            sy += s_i * y_i
            yy += y_i * y_i
        if sy > 1e-16 * yy and sy > 0.0:
            rho[head] = 1.0 / sy
            head = (head + 1) % memory
            count = min(count + 1, memory)
        for i in range(P):
            x[i] = new_x[i]
            grad[i] = new_grad[i]
        F = new_F
    gmax = 0.0
    for i in range(P):
        gmax = max(gmax, abs(grad[i]))
    return F, gmax, max_iter, 0 if gmax <= gtol else 1, evaluations


@njit(cache=True, parallel=True)
def _lbfgs_batch(G, f0, y, code, K, N, lam, r, X, max_iter, gtol, memory, out):
    for s in prange(X.shape[0]):
        x = X[s].copy()
        F, gmax, iterations, status, evaluations = _lbfgs_one(G, f0, y, code, K, N, lam, r, x, max_iter, gtol, memory)
        X[s] = x
        out[s, 4] = evaluations
        out[s, 0] = F
        out[s, 1] = gmax
        out[s, 2] = iterations
        out[s, 3] = status


@njit(cache=True, parallel=True)
def _descend_batch(G, f0, y, code, K, N, lam, r, X, lr, record_steps, records):
    """Gradient descent x <- x - lr grad F from every row of X; records[s, i] = (F, max |grad|, balance) at
    step record_steps[i]."""
    m, n = G.shape[1], G.shape[2]
    J = G.shape[0]
    P = X.shape[1]
    steps = record_steps[-1]
    for s in prange(X.shape[0]):
        x = X[s].copy()
        grad = np.empty(P)
        delta = np.empty((m, n))
        S = np.empty((m, n))
        z = np.empty(J)
        g = np.empty(J)
        imbalance = np.empty((r, r))
        index = 0
        for step in range(steps + 1):
            F = _flat_objective(G, f0, y, code, K, N, lam, r, x, grad, delta, z, g, S)
            if not math.isfinite(F):  # diverged: the remaining records are nan
                for later in range(index, record_steps.size):
                    records[s, later, 0] = np.nan
                    records[s, later, 1] = np.nan
                    records[s, later, 2] = np.nan
                break
            if step == record_steps[index]:
                gmax = 0.0
                for i in range(P):
                    gmax = max(gmax, abs(grad[i]))
                B = x[: m * r].reshape((m, r))
                A = x[m * r :].reshape((r, n))
                total = 0.0
                for a in range(r):
                    for b in range(r):
                        v = 0.0
                        for i in range(m):
                            v += B[i, a] * B[i, b]
                        for i in range(n):
                            v -= A[a, i] * A[b, i]
                        imbalance[a, b] = v
                        total += v * v
                records[s, index, 0] = F
                records[s, index, 1] = gmax
                records[s, index, 2] = math.sqrt(total)
                index += 1
            if step == steps:
                break
            for i in range(P):
                x[i] -= lr * grad[i]
        X[s] = x


@dataclass(frozen=True)
class NTKRuns:
    """Runs of an optimiser from many starts.

    Attributes
    ----------
    B : ndarray (S, m, r)
    A : ndarray (S, r, n)
        The final points.
    values : ndarray (S,)
        F at the final points.
    gradient_norms : ndarray (S,)
        max |grad F| there.
    iterations : ndarray (S,)
    status : ndarray (S,) of int
        0 converged (max |grad F| <= gtol), 1 iteration (step) limit, 2 line search failed (L-BFGS), 3 diverged
        (gradient descent: F stopped being finite; its final point and values are nan).
    method : str
    seconds : float
    record_steps : ndarray or None
        Gradient descent: the recorded steps.
    records : ndarray (S, R, 3) or None
        Gradient descent: F, max |grad F| and ||B^T B - A A^T||_F at the recorded steps.
    weight_decay : float
        The lambda the runs used.
    evaluations : ndarray (S,) or None
        L-BFGS: objective-and-gradient evaluations per run.
    """

    B: np.ndarray
    A: np.ndarray
    values: np.ndarray
    gradient_norms: np.ndarray
    iterations: np.ndarray
    status: np.ndarray
    method: str
    seconds: float
    record_steps: np.ndarray | None = None
    records: np.ndarray | None = None
    weight_decay: float = math.nan
    evaluations: np.ndarray | None = None

    @property
    def starts(self) -> int:
        return self.values.size


def _check_rank(problem: NTKProblem, rank) -> int:
    rank = check_integer(rank, "rank", 1, 10_000)
    m, n = problem.shape
    if (m + n) * rank > 1_000_000:
        raise InvalidArgument(f"rank {rank} gives (m + n) r = {(m + n) * rank} parameters per start: too many (at most 1e6)", "rank")
    return rank


def ntk_initial_points(problem: NTKProblem, rank: int, starts: int = 1, seed: int = 0, init: str = "gaussian", scale: float = 1.0) -> tuple:
    """Initial factors for ``starts`` runs.

    Parameters
    ----------
    problem : NTKProblem
    rank : int >= 1
    starts : int >= 1
    seed : int
        Start j uses numpy's generator seeded ``(seed, j)``.
    init : {'gaussian', 'lora'}
        'gaussian': B and A with i.i.d. N(0, scale^2) entries; 'lora': B = 0 and A Gaussian (LoRA's own
        initialisation).
    scale : float > 0, default 1

    Returns
    -------
    tuple
        ``(B, A)`` of shapes (S, m, r) and (S, r, n).

    Examples
    --------
    >>> from popgrad.models.ntk_lora.spec import gaussian_ntk_problem
    >>> B, A = ntk_initial_points(gaussian_ntk_problem(3, 4, data=2), rank=2, starts=5, seed=1)
    >>> B.shape, A.shape
    ((5, 3, 2), (5, 2, 4))
    """
    rank = _check_rank(problem, rank)
    starts = check_integer(starts, "starts", 1, 10**7)
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    check_choice(init, "init", NTK_INITS)
    scale = check_real(scale, "scale", 0.0, 1e6, low_open=True)
    m, n = problem.shape
    B = np.empty((starts, m, rank))
    A = np.empty((starts, rank, n))
    for j in range(starts):
        generator = np.random.default_rng([seed, j])
        A[j] = scale * generator.standard_normal((rank, n))
        B[j] = scale * generator.standard_normal((m, rank)) if init == "gaussian" else 0.0
    return B, A


def _flat(B: np.ndarray, A: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate([B.reshape(B.shape[0], -1), A.reshape(A.shape[0], -1)], axis=1))


def _unflat(problem: NTKProblem, X: np.ndarray, rank: int) -> tuple:
    m, n = problem.shape
    return X[:, : m * rank].reshape(-1, m, rank).copy(), X[:, m * rank :].reshape(-1, rank, n).copy()


def _start_points(problem, rank, starts, seed, init, scale, points) -> tuple:
    if points is None:
        return ntk_initial_points(problem, rank, starts, seed, init, scale)
    B, A = (np.asarray(p, dtype=np.float64) for p in points)
    m, n = problem.shape
    if B.ndim != 3 or A.ndim != 3 or B.shape[1:] != (m, rank) or A.shape[1:] != (rank, n) or B.shape[0] != A.shape[0] or not (np.all(np.isfinite(B)) and np.all(np.isfinite(A))):
        raise InvalidArgument(f"points must be finite arrays (B, A) of shapes (S, {m}, {rank}) and (S, {rank}, {n})", "points")
    return B, A


def ntk_lbfgs(problem: NTKProblem, rank: int, starts: int = 20, seed: int = 0, gtol: float = 1e-10, max_iter: int = 20_000, memory: int = 10, init: str = "gaussian", scale: float = 1.0, points=None) -> NTKRuns:
    """L-BFGS on the LoRA objective from ``starts`` random points (compiled, starts in parallel).

    Parameters
    ----------
    problem : NTKProblem
    rank : int >= 1
    starts : int, default 20
    seed : int, default 0
    gtol : float > 0, default 1e-10
        Stop when max |grad F| <= gtol.
    max_iter : int, default 20000
    memory : int, default 10
        Stored curvature pairs.
    init, scale
        As for :func:`ntk_initial_points`.
    points : tuple (B, A), optional
        Start here (shapes (S, m, r), (S, r, n)) instead of drawing.

    Returns
    -------
    NTKRuns

    Examples
    --------
    >>> from popgrad.models.ntk_lora.spec import gaussian_ntk_problem
    >>> runs = ntk_lbfgs(gaussian_ntk_problem(8, 8, data=6, seed=0), rank=4, starts=8, seed=0)
    >>> bool(np.all(runs.status == 0)), bool(np.ptp(runs.values) < 1e-9)
    (True, True)
    """
    rank = _check_rank(problem, rank)
    gtol = check_real(gtol, "gtol", 0.0, 1e6, low_open=True)
    max_iter = check_integer(max_iter, "max_iter", 0, 10**9)
    memory = check_integer(memory, "memory", 1, 1000)
    B, A = _start_points(problem, rank, starts, seed, init, scale, points)
    X = _flat(B, A)
    out = np.empty((X.shape[0], 5))
    G, f0, y, code, K, N, lam = _arrays(problem)
    begin = time.perf_counter()
    _lbfgs_batch(G, f0, y, code, K, N, lam, rank, X, max_iter, gtol, memory, out)
    seconds = time.perf_counter() - begin
    B, A = _unflat(problem, X, rank)
    return NTKRuns(B, A, out[:, 0].copy(), out[:, 1].copy(), out[:, 2].astype(np.int64), out[:, 3].astype(np.int64), "lbfgs", seconds, weight_decay=lam, evaluations=out[:, 4].astype(np.int64))


def ntk_gradient_descent(problem: NTKProblem, rank: int, starts: int = 20, steps: int = 10_000, lr: float = 1e-2, seed: int = 0, records: int = 100, init: str = "gaussian", scale: float = 1.0, weight_decay: float | None = None, points=None, gtol: float = 1e-8) -> NTKRuns:
    """Gradient descent ``x <- x - lr grad F`` for a fixed number of steps from ``starts`` random points,
    recording F, max |grad F| and the imbalance ||B^T B - A A^T||_F.

    Parameters
    ----------
    problem : NTKProblem
    rank : int >= 1
    starts : int, default 20
    steps : int, default 10000
    lr : float > 0, default 1e-2
    seed : int, default 0
    records : int, default 100
        Evenly spaced records (step 0 included).
    init, scale, points
        As for :func:`ntk_lbfgs`.
    weight_decay : float >= 0, optional
        Overrides the problem's lambda (0: no decay, the imbalance is conserved up to O(lr^2) per step).
    gtol : float > 0, default 1e-8
        A run counts as converged (status 0) when its final max |grad F| <= gtol; gradient descent always runs
        all ``steps``.

    Returns
    -------
    NTKRuns
        With ``records`` and ``record_steps``.

    Examples
    --------
    >>> from popgrad.models.ntk_lora.spec import gaussian_ntk_problem
    >>> runs = ntk_gradient_descent(gaussian_ntk_problem(4, 4, data=2, weight_decay=0.1), rank=2, starts=2, steps=1000, lr=1e-2, records=2)
    >>> decay = runs.records[:, -1, 2] / runs.records[:, 0, 2]  # about exp(-2 lambda t), t = 10
    >>> bool(np.all(np.abs(decay / np.exp(-2.0) - 1) < 0.05))
    True
    """
    rank = _check_rank(problem, rank)
    steps = check_integer(steps, "steps", 0, 10**12)
    lr = check_real(lr, "lr", 0.0, 1e6, low_open=True)
    records = check_integer(records, "records", 1, 10**6)
    B, A = _start_points(problem, rank, starts, seed, init, scale, points)
    X = _flat(B, A)
    grid = checkpoint_grid(steps, min(records, steps) + 1)
    out = np.empty((X.shape[0], grid.size, 3))
    G, f0, y, code, K, N, lam = _arrays(problem)
    if weight_decay is not None:
        lam = check_real(weight_decay, "weight_decay", 0.0, 1e8)
    begin = time.perf_counter()
    gtol = check_real(gtol, "gtol", 0.0, 1e6, low_open=True)
    _descend_batch(G, f0, y, code, K, N, lam, rank, X, lr, grid, out)
    seconds = time.perf_counter() - begin
    B, A = _unflat(problem, X, rank)
    values, gradients = out[:, -1, 0].copy(), out[:, -1, 1].copy()
    status = np.where(~np.isfinite(values), 3, np.where(gradients <= gtol, 0, 1)).astype(np.int64)
    B[status == 3] = np.nan
    A[status == 3] = np.nan
    return NTKRuns(B, A, values, gradients, np.full(X.shape[0], steps), status, "gd", seconds, grid, out, lam)


def ntk_gradient_flow(problem: NTKProblem, B, A, times, weight_decay: float | None = None, rtol: float = 1e-10, atol: float = 1e-13) -> tuple:
    """Gradient flow dB/dt = -dF/dB, dA/dt = -dF/dA from (B, A), by the adaptive Dormand–Prince 5(4)
    integrator with dense output.

    Parameters
    ----------
    problem : NTKProblem
    B, A : arrays (m, r), (r, n)
    times : sequence of float
        Sorted output times >= 0.
    weight_decay : float >= 0, optional
        Overrides the problem's lambda.
    rtol, atol : float

    Returns
    -------
    tuple
        ``(B_t, A_t)`` of shapes (T, m, r), (T, r, n).

    Examples
    --------
    >>> from popgrad.models.ntk_lora.spec import gaussian_ntk_problem
    >>> problem = gaussian_ntk_problem(3, 3, data=2, weight_decay=0.5, seed=0)
    >>> B0, A0 = np.ones((3, 1)), np.full((1, 3), 2.0)
    >>> Bt, At = ntk_gradient_flow(problem, B0, A0, [0.0, 1.0])
    >>> D0, D1 = (Bt[i].T @ Bt[i] - At[i] @ At[i].T for i in (0, 1))  # decays exactly like exp(-2 lambda t)
    >>> bool(abs(D1[0, 0] / D0[0, 0] - np.exp(-1.0)) < 1e-8)
    True
    """
    from ...dynamics.solve import ODE, solve
    from .landscape import _factors

    B, A = _factors(problem, B, A)
    rank = B.shape[1]
    lam = problem.weight_decay if weight_decay is None else check_real(weight_decay, "weight_decay", 0.0, 1e8)
    G, f0, y, code, K, N, _ = _arrays(problem)
    m, n = problem.shape
    parameters = np.concatenate([[code, K, N, lam, m, n, rank, problem.count], G.ravel(), f0, y]).astype(np.float64)
    solution = solve(ODE(_flow_rhs(), parameters), np.concatenate([B.ravel(), A.ravel()]), times, rtol=rtol, atol=atol)
    values = np.asarray(solution.values)
    return values[:, : m * rank].reshape(-1, m, rank), values[:, m * rank :].reshape(-1, rank, n)


@lru_cache(maxsize=1)
def _flow_rhs():
    """The gradient-flow right-hand side, compiled on first use (cached on disk)."""
    from ...dynamics.solvers.base import right_hand_side

    @right_hand_side
    def flow_rhs(t, x, parameters, out):
        code, K, N, lam = int(parameters[0]), int(parameters[1]), parameters[2], parameters[3]
        m, n, r, J = int(parameters[4]), int(parameters[5]), int(parameters[6]), int(parameters[7])
        offset = 8
        G = parameters[offset : offset + J * m * n].copy().reshape((J, m, n))
        offset += J * m * n
        f0 = parameters[offset : offset + J].copy()
        y = parameters[offset + J : offset + 2 * J].copy()
        grad = np.empty(x.size)
        _flat_objective(G, f0, y, code, K, N, lam, r, x.copy(), grad, np.empty((m, n)), np.empty(J), np.empty(J), np.empty((m, n)))
        for i in range(x.size):
            out[i] = -grad[i]

    return flow_rhs
