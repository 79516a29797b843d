"""The convex reference: ``min_delta L(delta) + lambda ||delta||_*`` (the LoRA objective's convex counterpart,
MATH.md §7) by accelerated proximal gradient, certified by a duality gap.

Accelerated proximal gradient (FISTA with adaptive restart, O'Donoghue & Candès 2015): a gradient step on L
with step 1/Lip (``Lip = c_loss ||G||^2``, c = 1/N for the squared loss, 1/(2N) for softmax cross-entropy,
1/(4N) for the logistic loss; ``||G||^2`` the largest eigenvalue of the Gram matrix <G_j, G_k>), then the
nuclear norm's prox (singular-value soft-thresholding by lambda/Lip).

Duality gap: with ``f(t) = sum_j l_j(f0_j + t_j)``, Fenchel duality gives
``max_w -f*(w)`` over ``||sum_j w_j G_j||_op <= lambda``. The dual point is the loss gradient
``w = dl/dz`` at the iterate, scaled into the feasible set; ``f*(w) = l*(w) - <w, f0>`` with
``l*(w) = sum_j N w_j^2/2 + w_j y_j`` (squared), ``(1/N) sum q log q`` with ``q = N w + t`` on each point's
simplex (cross-entropy; K = 1: ``q log q + (1 - q) log(1 - q)``). The gap ``P(delta) - D(w) >= 0`` bounds the
suboptimality of delta.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..._validation import check_integer, check_real
from .landscape import _loss_at
from .spec import NTKProblem

__all__ = ["ConvexSolution", "ntk_convex_optimum", "ntk_dual_value"]


@dataclass(frozen=True)
class ConvexSolution:
    """The certified solution of the nuclear-norm problem.

    Attributes
    ----------
    delta : ndarray (m, n)
    value : float
        ``L(delta) + lambda ||delta||_*`` (the primal value; the optimum lies in [value - gap, value]).
    gap : float
        The duality gap, an upper bound on value - optimum.
    singular_values : ndarray
        Of delta, descending.
    rank : int
        Singular values above ``rank_tol`` times the largest.
    certificate : float
        ||grad L(delta)||_op / lambda (<= 1 at the optimum, = 1 when delta != 0).
    iterations : int
    converged : bool
        gap <= tol.
    seconds : float
    """

    delta: np.ndarray
    value: float
    gap: float
    singular_values: np.ndarray
    rank: int
    certificate: float
    iterations: int
    converged: bool
    seconds: float


def _lipschitz(problem: NTKProblem) -> float:
    G = problem.measurements.reshape(problem.count, -1)
    norm2 = float(np.linalg.eigvalsh(G @ G.T)[-1])
    factor = 1.0 if problem.loss == "squared" else (0.25 if problem.outputs == 1 else 0.5)
    return max(factor * norm2 / problem.data, 1e-300)


def _entropy(q: np.ndarray) -> float:
    q = np.clip(q, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(np.where(q > 0, q * np.log(q), 0.0)))


def ntk_dual_value(problem: NTKProblem, w) -> float:
    """The Fenchel dual objective ``-f*(w)`` at a dual point w (J numbers); -inf outside the conjugate's domain
    and when ``||sum_j w_j G_j||_op > lambda`` (beyond round-off). A lower bound on the convex optimum.

    Parameters
    ----------
    problem : NTKProblem
    w : array (J,)

    Returns
    -------
    float
    """
    w = np.asarray(w, dtype=np.float64)
    N, K = problem.data, problem.outputs
    if np.linalg.norm(np.tensordot(w, problem.measurements, axes=1), 2) > problem.weight_decay * (1 + 1e-12):
        return -np.inf
    linear = float(w @ problem.offsets)
    if problem.loss == "squared":
        return -float(np.sum(N * w**2 / 2 + w * problem.targets)) + linear
    q = N * w + problem.targets
    if K == 1:
        if np.any(q < -1e-12) or np.any(q > 1 + 1e-12):
            return -np.inf
        return -(_entropy(q) + _entropy(1.0 - q)) / N + linear
    if np.any(q < -1e-12) or np.max(np.abs(q.reshape(-1, K).sum(axis=1) - 1.0)) > 1e-9:
        return -np.inf
    return -_entropy(q) / N + linear


def ntk_convex_optimum(problem: NTKProblem, tol: float = 1e-11, max_iter: int = 200_000, rank_tol: float = 1e-6) -> ConvexSolution:
    """Solve ``min L(delta) + lambda ||delta||_*`` by accelerated proximal gradient to a duality gap <= tol.

    Parameters
    ----------
    problem : NTKProblem
    tol : float > 0, default 1e-11
        Stop when the duality gap falls to ``tol * max(1, |value|)``.
    max_iter : int, default 200000
    rank_tol : float, default 1e-6
        Relative threshold of the reported rank.

    Returns
    -------
    ConvexSolution

    Examples
    --------
    >>> from popgrad.models.ntk_lora.spec import ntk_problem
    >>> G = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    >>> solution = ntk_convex_optimum(ntk_problem(G, [1.0, 2.0], weight_decay=0.1))
    >>> np.round(np.diag(solution.delta), 9).tolist(), solution.converged  # soft-thresholds y by N lambda = 0.2
    ([0.8, 1.8], True)
    """
    tol = check_real(tol, "tol", 0.0, 1.0, low_open=True)
    max_iter = check_integer(max_iter, "max_iter", 1, 10**9)
    rank_tol = check_real(rank_tol, "rank_tol", 0.0, 1.0)
    begin = time.perf_counter()
    lam = problem.weight_decay
    step = 1.0 / _lipschitz(problem)
    x = np.zeros(problem.shape)
    point = x.copy()
    t = 1.0
    value, gap, iterations = np.inf, np.inf, 0
    for iterations in range(1, max_iter + 1):
        _, _, _, S = _loss_at(problem, point)
        U, s, Vt = np.linalg.svd(point - step * S, full_matrices=False)
        s = np.maximum(s - step * lam, 0.0)
        x_new = (U * s) @ Vt
        if np.sum((point - x_new) * (x_new - x)) > 0:  # restart the momentum
            t = 1.0
            point = x_new
        else:
            t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
            point = x_new + ((t - 1.0) / t_new) * (x_new - x)
            t = t_new
        x = x_new
        if iterations % 10 == 0 or iterations == max_iter:
            value, gap = _primal_and_gap(problem, x, s)
            if gap <= tol * max(1.0, abs(value)):
                break
    singular = np.linalg.svd(x, compute_uv=False)
    value, gap = _primal_and_gap(problem, x, singular)
    rank = int(np.sum(singular > rank_tol * singular[0])) if singular[0] > 0 else 0
    _, _, _, S = _loss_at(problem, x)
    certificate = float(np.linalg.norm(S, 2) / lam)
    return ConvexSolution(x, value, gap, singular, rank, certificate, iterations, bool(gap <= tol * max(1.0, abs(value))), time.perf_counter() - begin)


def _primal_and_gap(problem: NTKProblem, x: np.ndarray, singular: np.ndarray) -> tuple:
    loss, _, g, S = _loss_at(problem, x)
    value = loss + problem.weight_decay * float(np.sum(singular))
    norm = float(np.linalg.norm(S, 2))
    w = g * min(1.0, problem.weight_decay / norm) if norm > 0 else g
    dual = ntk_dual_value(problem, w)
    return value, max(value - dual, 0.0)
