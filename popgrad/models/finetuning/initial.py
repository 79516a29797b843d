"""Starting points of the fine-tuning model's runs, and the geometry of its full-d SGD.

U_hat_0 is uniform on the Stiefel manifold of span(W)^perp (of R^d when u_hat is free), drawn from the
streams (seed, INITIAL, j): as explicit d-vectors for SGD in dimension d, or as the state (Y, Gamma) of the
same law at a cost independent of d for the chain. At rank 1 a fixed overlap ``m0 = <u, u_hat_0>`` may be
asked for: u_hat_0 is then uniform on the sphere conditioned on it.
"""

from __future__ import annotations

import math

import numpy as np

from ..._validation import InvalidArgument
from ...numerics import random_streams as streams
from .model import GeneralModel, perpendicular_part

__all__ = ["initial_frames", "initial_states", "embedded_geometry", "states_from_overlap", "starting_states", "check_m0"]


def _feasible_direction(model: GeneralModel) -> tuple:
    """``(e, norm)``: the unit direction in F coordinates of u projected onto the set u_hat lives in
    (span(W)^perp, or everything when free), and the length of that projection (the largest |m|)."""
    rank_w = model.L.shape[1]
    e = model.UF[0].copy()
    if not model.unconstrained:
        e[:rank_w] = 0.0
    norm = float(np.linalg.norm(e))
    return (e / norm if norm > 0 else e), norm


def check_m0(model: GeneralModel, m0) -> float | None:
    """``m0`` checked for ``model``: a fixed starting overlap needs rank 1 and one teacher column, and
    |m0| at most the largest overlap u_hat can reach (sqrt(1 - alpha^2) when constrained)."""
    if m0 is None:
        return None
    if model.rank != 1 or model.C.shape[1] != 1:
        raise InvalidArgument(f"m0 is the rank-1 overlap <u, u_hat_0>; this model has rank {model.rank} and {model.C.shape[1]} teacher columns (its U_hat_0 is uniform on the Stiefel manifold)", "m0")
    _, reach = _feasible_direction(model)
    if abs(m0) > reach + 1e-15:
        raise InvalidArgument(f"m0 must lie in [-{reach:.6g}, {reach:.6g}] here: u_hat ⟂ span(W) reaches at most |P u| = sqrt(1 - alpha^2) = {reach:.6g}, got {m0}", "m0")
    return float(m0)


def initial_frames(model: GeneralModel, d: int, trajectories: int, seed: int, first: int, m0: float | None = None, QW: np.ndarray | None = None, QF: np.ndarray | None = None) -> np.ndarray:
    """U_hat_0 for full-d SGD, r x d rows per trajectory: Gaussian columns, projected onto span(W)^perp
    unless unconstrained, orthonormalised (uniform on the Stiefel manifold). ``QW`` (rank W x d) spans
    span(W) (default: the first rank W axes) and ``QF`` (d x p) is F's basis (default: the first p axes);
    with ``m0`` (rank 1) u_hat_0 = mu e + sqrt(1 - mu^2) v, v uniform on the sphere orthogonal to e, the
    feasible direction of u."""
    rank_w, r, p = model.L.shape[1], model.rank, model.p
    frames = np.empty((trajectories, r, d))
    state = np.empty(4, dtype=np.uint64)
    if m0 is not None:
        e_F, reach = _feasible_direction(model)
        e = e_F @ QF.T if QF is not None else np.concatenate([e_F, np.zeros(d - p)])
        mu = m0 / reach if reach > 0 else 0.0
    for j in range(trajectories):
        streams.seed_stream(np.uint64(seed), streams.INITIAL, first + j, state)
        gaussian = np.empty(r * d)
        streams.fill_normal(state, gaussian)
        N = gaussian.reshape(r, d)
        if not model.unconstrained:
            if QW is None:
                N[:, :rank_w] = 0.0
            else:
                N -= (N @ QW.T) @ QW
        if m0 is not None:
            v = N[0] - (N[0] @ e) * e
            frames[j, 0] = mu * e + math.sqrt(max(0.0, 1.0 - mu * mu)) * v / np.linalg.norm(v)
            continue
        values, vectors = np.linalg.eigh(N @ N.T)
        frames[j] = (vectors / np.sqrt(values)) @ vectors.T @ N
    return frames


def initial_states(model: GeneralModel, d: int, trajectories: int, seed: int, first: int, m0: float | None = None) -> tuple:
    """(Y, Gamma) of the law of :func:`initial_frames` at a cost independent of d: U_hat = N T with N's rows
    in F Gaussian (zero in span(W) unless unconstrained), ``N_perp^T N_perp`` Wishart(d - p, I_r) by
    Bartlett's decomposition and ``T = (N^T N)^(-1/2)``. With ``m0`` (rank 1): Y = mu e + sqrt(1 - mu^2)
    v_F and Gamma = (1 - mu^2) |v_perp|^2, v uniform on the sphere orthogonal to e (its part outside F of
    squared length chi^2(d - p) before normalising)."""
    p, rank_w, r = model.p, model.L.shape[1], model.rank
    Y = np.empty((trajectories, p, r))
    Gam = np.empty((trajectories, r, r))
    state = np.empty(4, dtype=np.uint64)
    if m0 is not None:
        e, reach = _feasible_direction(model)
        mu = m0 / reach if reach > 0 else 0.0
    for j in range(trajectories):
        streams.seed_stream(np.uint64(seed), streams.INITIAL, first + j, state)
        gaussian = np.empty(p * r + r * r)
        streams.fill_normal(state, gaussian)
        NF = gaussian[: p * r].reshape(p, r).copy()
        if not model.unconstrained:
            NF[:rank_w] = 0.0
        A = np.tril(gaussian[p * r :].reshape(r, r), -1)
        for i in range(r):
            A[i, i] = math.sqrt(streams.chi_square(state, float(d - p - i)))
        wishart = A @ A.T
        if m0 is not None:
            v = NF[:, 0] - (NF[:, 0] @ e) * e
            length = math.sqrt(float(v @ v) + wishart[0, 0])
            Y[j, :, 0] = mu * e + math.sqrt(max(0.0, 1.0 - mu * mu)) * v / length
            Gam[j, 0, 0] = (1.0 - mu * mu) * wishart[0, 0] / length**2
            continue
        values, vectors = np.linalg.eigh(NF.T @ NF + wishart)
        T = (vectors / np.sqrt(values)) @ vectors.T
        Y[j] = NF @ T
        Gam[j] = T @ wishart @ T
    return Y, Gam


def embedded_geometry(model: GeneralModel, d: int, seed: int) -> tuple:
    """``(W, QF, U)`` in R^d for full-d SGD in the model's own geometry: W the problem's explicit rows
    (``W = L Q_W^T`` with ``Q_W = W^T L (L^T L)^(-1)``) or L placed on a random rank-W subspace, U the
    model's explicit columns or UF placed on ``QF = [Q_W, Q_perp]`` with Q_perp random and orthogonal to
    span(W) (numpy generator ``[seed, 3]``)."""
    rank_w, r_star = model.L.shape[1], model.C.shape[1]
    generator = np.random.default_rng([seed, 3])
    L = model.L
    if model.problem.W is not None:
        if model.problem.W.shape[1] != d:
            raise InvalidArgument(f"d must equal the problem's W dimension {model.problem.W.shape[1]}, got {d}", "d")
        Q_W = model.problem.W.T @ L @ np.linalg.inv(L.T @ L) if rank_w else np.zeros((d, 0))
    else:
        Q_W = np.linalg.qr(generator.standard_normal((d, rank_w)))[0] if rank_w else np.zeros((d, 0))
    if model.U is not None:
        Q_perp, _ = perpendicular_part(Q_W, model.U)
    else:
        G = generator.standard_normal((d, r_star))
        G -= Q_W @ (Q_W.T @ G)
        Q_perp = np.linalg.qr(G)[0]
    QF = np.ascontiguousarray(np.hstack([Q_W, Q_perp]))
    W = np.ascontiguousarray(L @ Q_W.T)
    U = np.ascontiguousarray(model.UF @ QF.T)
    return W, QF, U


def states_from_overlap(model: GeneralModel, m: np.ndarray) -> tuple:
    """The states (Y, Gamma, C_hat) of a model that reduces to the overlap, from m (shape (n,)): u_hat ⟂
    span(W) has component m along u (F's last axis) and the rest, of squared length 1 - m^2, outside F."""
    m = np.asarray(m, dtype=float)
    n, p = m.shape[0], model.p
    Y = np.zeros((n, p, 1))
    Y[:, p - 1, 0] = m / model.UF[0, p - 1]  # u = UF[0, p-1] e_p (|UF[0, p-1]| = 1 when reduced)
    Gamma = (1.0 - m * m).reshape(n, 1, 1)
    C_hat = np.repeat(model.C_hat[None], n, axis=0)
    return Y, Gamma, C_hat


def starting_states(run, count: int) -> tuple:
    """(Y, Gamma, C_hat) of the first ``count`` trajectories of a run at its first checkpoint (from its
    state, or from m where the model reduces to the overlap)."""
    if run.state:
        return tuple(run.state[name][:count, 0].copy() for name in ("Y", "Gamma", "C_hat"))
    if not run.model.reduces_to_overlap:
        raise InvalidArgument("this run holds no state (it was read back without it) and its model does not reduce to the overlap: its starting states are unknown", "run")
    return states_from_overlap(run.model, run.observables["m"][:count, 0])
