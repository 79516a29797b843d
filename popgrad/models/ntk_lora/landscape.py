"""The LoRA objective of the linearised problem, its exact gradient and Hessian-vector products, and the
optimality certificate (MATH.md §7).

``F(B, A) = L(B A) + lambda/2 (||A||_F^2 + ||B||_F^2)`` with ``L`` the problem's loss of the measurements
``z = f0 + G(delta)`` (:mod:`.spec`). With ``S = grad L(B A) = sum_j (dl/dz_j) G_j`` (m x n):

* ``dF/dB = S A^T + lambda B``, ``dF/dA = B^T S + lambda A``;
* along ``(dB, dA)``, with ``d delta = dB A + B dA`` and ``S' = sum_j (H_z G(d delta))_j G_j`` (H_z the loss's
  Hessian in the measurements): ``H (dB, dA) = (S' A^T + S dA^T + lambda dB, B^T S' + dB^T S + lambda dA)``.

Certificate: at a stationary point with lambda > 0, ``B A`` solves the convex problem
``min L(delta) + lambda ||delta||_*`` iff ``rho = ||S||_op / lambda <= 1``; stationary points are balanced,
``B^T B = A A^T``.

The flat parameter vector of the compiled kernels is ``[B.ravel(), A.ravel()]`` (B: m x r, A: r x n, row-major).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..._validation import InvalidArgument, check_array, check_real
from .spec import LOSS_CODES, NTKProblem

__all__ = ["ntk_objective", "ntk_gradient", "ntk_hvp", "ntk_hessian", "ntk_certificate", "ntk_balance", "ntk_loss_gradient"]


@njit(cache=True)
def _loss_terms(z, y, code, K, N, g):
    """The loss of the measurements z (normalised by N); fills g = dloss/dz."""
    J = z.size
    total = 0.0
    if code == 0:
        for j in range(J):
            e = z[j] - y[j]
            total += 0.5 * e * e
            g[j] = e / N
        return total / N
    if K == 1:
        for j in range(J):
            zj = z[j]
            if zj > 0.0:
                t = math.exp(-zj)
                softplus = zj + math.log1p(t)
                p = 1.0 / (1.0 + t)
            else:
                t = math.exp(zj)
                softplus = math.log1p(t)
                p = t / (1.0 + t)
            total += softplus - y[j] * zj
            g[j] = (p - y[j]) / N
        return total / N
    for i in range(J // K):
        base = i * K
        top = z[base]
        for k in range(1, K):
            top = max(top, z[base + k])
        s = 0.0
        for k in range(K):
            s += math.exp(z[base + k] - top)
        lse = top + math.log(s)
        total += lse
        for k in range(K):
            total -= y[base + k] * z[base + k]
            g[base + k] = (math.exp(z[base + k] - top) / s - y[base + k]) / N
    return total / N


@njit(cache=True)
def _loss_curvature(z, code, K, N, dz, out):
    """out = H_z dz, the loss's Hessian in the measurements applied to dz."""
    J = z.size
    if code == 0:
        for j in range(J):
            out[j] = dz[j] / N
        return
    if K == 1:
        for j in range(J):
            p = 1.0 / (1.0 + math.exp(-z[j])) if z[j] > 0.0 else math.exp(z[j]) / (1.0 + math.exp(z[j]))
            out[j] = p * (1.0 - p) * dz[j] / N
        return
    p = np.empty(K)
    for i in range(J // K):
        base = i * K
        top = z[base]
        for k in range(1, K):
            top = max(top, z[base + k])
        s = 0.0
        for k in range(K):
            p[k] = math.exp(z[base + k] - top)
            s += p[k]
        mean = 0.0
        for k in range(K):
            p[k] /= s
            mean += p[k] * dz[base + k]
        for k in range(K):
            out[base + k] = p[k] * (dz[base + k] - mean) / N


@njit(cache=True)
def _measure(G, f0, delta, z):
    J, m, n = G.shape
    for j in range(J):
        s = f0[j]
        for a in range(m):
            for b in range(n):
                s += G[j, a, b] * delta[a, b]
        z[j] = s


@njit(cache=True)
def _combine(G, weights, S):
    """S = sum_j weights_j G_j."""
    J, m, n = G.shape
    for a in range(m):
        for b in range(n):
            S[a, b] = 0.0
    for j in range(J):
        w = weights[j]
        for a in range(m):
            for b in range(n):
                S[a, b] += w * G[j, a, b]


@njit(cache=True)
def _product(B, A, delta):
    m, r = B.shape
    n = A.shape[1]
    for a in range(m):
        for b in range(n):
            s = 0.0
            for l in range(r):
                s += B[a, l] * A[l, b]
            delta[a, b] = s


@njit(cache=True)
def _objective(G, f0, y, code, K, N, lam, B, A, gB, gA, delta, z, g, S, with_gradient):
    """F(B, A); with ``with_gradient`` also gB, gA (and S = grad L(BA))."""
    m, r = B.shape
    n = A.shape[1]
    _product(B, A, delta)
    _measure(G, f0, delta, z)
    F = _loss_terms(z, y, code, K, N, g)
    decay = 0.0
    for a in range(m):
        for l in range(r):
            decay += B[a, l] * B[a, l]
    for l in range(r):
        for b in range(n):
            decay += A[l, b] * A[l, b]
    F += 0.5 * lam * decay
    if with_gradient:
        _combine(G, g, S)
        for a in range(m):
            for l in range(r):
                s = 0.0
                for b in range(n):
                    s += S[a, b] * A[l, b]
                gB[a, l] = s + lam * B[a, l]
        for l in range(r):
            for b in range(n):
                s = 0.0
                for a in range(m):
                    s += B[a, l] * S[a, b]
                gA[l, b] = s + lam * A[l, b]
    return F


@njit(cache=True)
def _flat_objective(G, f0, y, code, K, N, lam, r, x, grad, delta, z, g, S):
    """F and its gradient at the flat point x = [B.ravel(), A.ravel()]."""
    m, n = G.shape[1], G.shape[2]
    B = x[: m * r].reshape((m, r))
    A = x[m * r :].reshape((r, n))
    gB = grad[: m * r].reshape((m, r))
    gA = grad[m * r :].reshape((r, n))
    return _objective(G, f0, y, code, K, N, lam, B, A, gB, gA, delta, z, g, S, True)


def _arrays(problem: NTKProblem) -> tuple:
    """The problem as the kernels take it: (G, f0, y, loss code, K, N, lambda)."""
    return problem.measurements, problem.offsets, problem.targets, LOSS_CODES[problem.loss], problem.outputs, float(problem.data), problem.weight_decay


def _factors(problem: NTKProblem, B, A) -> tuple:
    m, n = problem.shape
    B = check_array(B, "B", ndim=2)
    A = check_array(A, "A", ndim=2)
    if B.shape[0] != m or A.shape[1] != n or B.shape[1] != A.shape[0] or B.shape[1] < 1:
        raise InvalidArgument(f"B must be m x r and A r x n with (m, n) = ({m}, {n}) and r >= 1, got B {B.shape}, A {A.shape}", "B")
    return np.ascontiguousarray(B), np.ascontiguousarray(A)


def _weight_decay(problem: NTKProblem, weight_decay) -> float:
    return problem.weight_decay if weight_decay is None else check_real(weight_decay, "weight_decay", 0.0, 1e8)


def _evaluate(problem: NTKProblem, B, A, weight_decay, with_gradient: bool) -> tuple:
    """(F, gB, gA) at validated factors (gB, gA unset without ``with_gradient``)."""
    B, A = _factors(problem, B, A)
    G, f0, y, code, K, N, _ = _arrays(problem)
    lam = _weight_decay(problem, weight_decay)
    m, n = problem.shape
    gB, gA = np.empty_like(B), np.empty_like(A)
    value = _objective(G, f0, y, code, K, N, lam, B, A, gB, gA, np.empty((m, n)), np.empty(problem.count), np.empty(problem.count), np.empty((m, n)), with_gradient)
    return float(value), gB, gA


def ntk_loss_gradient(problem: NTKProblem, delta) -> tuple:
    """The loss L(delta) (without weight decay) and its gradient ``S = grad L(delta)`` (m x n).

    Parameters
    ----------
    problem : NTKProblem
    delta : array (m, n)

    Returns
    -------
    tuple
        ``(L, S)``.

    Examples
    --------
    >>> from popgrad.models.ntk_lora.spec import ntk_problem
    >>> problem = ntk_problem([[[1.0, 0.0], [0.0, 0.0]]], [2.0], weight_decay=0.1)
    >>> value, S = ntk_loss_gradient(problem, np.zeros((2, 2)))
    >>> value, S.tolist()
    (2.0, [[-2.0, 0.0], [0.0, 0.0]])
    """
    value, _, _, S = _loss_at(problem, check_array(delta, "delta", shape=problem.shape))
    return value, S


def _loss_at(problem: NTKProblem, delta: np.ndarray) -> tuple:
    """(L(delta), z, g = dl/dz, S = grad L(delta)) at an already validated delta."""
    G, f0, y, code, K, N, _ = _arrays(problem)
    z = np.empty(problem.count)
    g = np.empty(problem.count)
    _measure(G, f0, np.ascontiguousarray(delta, dtype=np.float64), z)
    value = _loss_terms(z, y, code, K, N, g)
    S = np.empty(problem.shape)
    _combine(G, g, S)
    return float(value), z, g, S


def ntk_objective(problem: NTKProblem, B, A, weight_decay: float | None = None) -> float:
    """F(B, A) = L(B A) + lambda/2 (||A||_F^2 + ||B||_F^2).

    Parameters
    ----------
    problem : NTKProblem
    B : array (m, r)
    A : array (r, n)
    weight_decay : float >= 0, optional
        Overrides the problem's lambda (e.g. 0 for the undecayed flow).

    Returns
    -------
    float

    Examples
    --------
    >>> from popgrad.models.ntk_lora.spec import ntk_problem
    >>> problem = ntk_problem([[[1.0, 0.0], [0.0, 0.0]]], [2.0], weight_decay=0.1)
    >>> ntk_objective(problem, np.array([[1.0], [0.0]]), np.array([[1.0, 0.0]]))  # (1 - 2)^2 / 2 + 0.1
    0.6
    """
    return _evaluate(problem, B, A, weight_decay, False)[0]


def ntk_gradient(problem: NTKProblem, B, A, weight_decay: float | None = None) -> tuple:
    """The exact gradient ``(dF/dB, dF/dA)``.

    Parameters
    ----------
    problem : NTKProblem
    B : array (m, r)
    A : array (r, n)
    weight_decay : float >= 0, optional

    Returns
    -------
    tuple of ndarray
        ``(gB, gA)``, shaped like B and A.

    Examples
    --------
    >>> from popgrad.models.ntk_lora.spec import ntk_problem
    >>> problem = ntk_problem([[[1.0, 0.0], [0.0, 0.0]]], [2.0], weight_decay=0.1)
    >>> gB, gA = ntk_gradient(problem, np.array([[1.0], [0.0]]), np.array([[1.0, 0.0]]))
    >>> gB.ravel().tolist(), gA.ravel().tolist()  # S = -e1 e1^T: S A^T + 0.1 B
    ([-0.9, 0.0], [-0.9, 0.0])
    """
    _, gB, gA = _evaluate(problem, B, A, weight_decay, True)
    return gB, gA


def ntk_hvp(problem: NTKProblem, B, A, dB, dA, weight_decay: float | None = None) -> tuple:
    """The exact Hessian-vector product of F at (B, A) along (dB, dA).

    Parameters
    ----------
    problem : NTKProblem
    B, A : arrays (m, r), (r, n)
    dB, dA : arrays shaped like B, A
    weight_decay : float >= 0, optional

    Returns
    -------
    tuple of ndarray
        ``(H_B, H_A)``.
    """
    B, A = _factors(problem, B, A)
    dB = check_array(dB, "dB", shape=B.shape)
    dA = check_array(dA, "dA", shape=A.shape)
    G, _, _, code, K, N, _ = _arrays(problem)
    lam = _weight_decay(problem, weight_decay)
    _, z, _, S = _loss_at(problem, B @ A)
    dz = np.tensordot(G, dB @ A + B @ dA, axes=([1, 2], [0, 1]))
    curvature = np.empty(problem.count)
    _loss_curvature(z, code, K, N, dz, curvature)
    S2 = np.tensordot(curvature, G, axes=1)
    return S2 @ A.T + S @ dA.T + lam * dB, B.T @ S2 + dB.T @ S + lam * dA


def ntk_hessian(problem: NTKProblem, B, A, weight_decay: float | None = None) -> np.ndarray:
    """The dense Hessian of F in the flat coordinates ``[B.ravel(), A.ravel()]`` (built from exact
    Hessian-vector products, symmetrised against round-off).

    Parameters
    ----------
    problem : NTKProblem
    B, A : arrays (m, r), (r, n)
    weight_decay : float >= 0, optional

    Returns
    -------
    ndarray (P, P), P = (m + n) r
    """
    B, A = _factors(problem, B, A)
    size_b = B.size
    P = size_b + A.size
    if P > 4000:
        raise InvalidArgument(f"the dense Hessian has {P} x {P} entries: too large (at most 4000 coordinates); use ntk_hvp", "B")
    H = np.empty((P, P))
    unit = np.zeros(P)
    for p in range(P):
        unit[p] = 1.0
        hB, hA = ntk_hvp(problem, B, A, unit[:size_b].reshape(B.shape), unit[size_b:].reshape(A.shape), weight_decay)
        H[:, p] = np.concatenate([hB.ravel(), hA.ravel()])
        unit[p] = 0.0
    return 0.5 * (H + H.T)


def ntk_certificate(problem: NTKProblem, B, A) -> float:
    """rho = ||grad L(B A)||_op / lambda: at a stationary point, B A is a global minimiser of the convex problem
    (and (B, A) of the LoRA objective) iff rho <= 1.

    Parameters
    ----------
    problem : NTKProblem
    B, A : arrays (m, r), (r, n)

    Returns
    -------
    float

    Examples
    --------
    >>> from popgrad.models.ntk_lora.spec import ntk_problem
    >>> problem = ntk_problem([[[1.0, 0.0], [0.0, 0.0]]], [2.0], weight_decay=0.1)
    >>> ntk_certificate(problem, np.zeros((2, 1)), np.zeros((1, 2)))  # ||S||_op = 2 at delta = 0
    20.0
    """
    B, A = _factors(problem, B, A)
    _, S = ntk_loss_gradient(problem, B @ A)
    return float(np.linalg.norm(S, 2) / problem.weight_decay)


def ntk_balance(B, A) -> float:
    """||B^T B - A A^T||_F, zero at every stationary point with lambda > 0; decays like e^{-2 lambda t}
    along gradient flow (conserved when lambda = 0).

    Parameters
    ----------
    B, A : arrays (m, r), (r, n)

    Returns
    -------
    float

    Examples
    --------
    >>> ntk_balance(np.array([[3.0], [4.0]]), np.array([[5.0, 0.0]]))
    0.0
    """
    B = check_array(B, "B", ndim=2)
    A = check_array(A, "A", ndim=2)
    if B.shape[1] != A.shape[0]:
        raise InvalidArgument(f"B must have as many columns as A has rows, got B {B.shape}, A {A.shape}", "B")
    return float(np.linalg.norm(B.T @ B - A @ A.T))
