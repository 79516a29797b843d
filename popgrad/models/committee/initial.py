"""Starting points of the committee machine's runs, as the chain's state (Y, Gamma, a) or as explicit
vectors in dimension d, of the same law; and the teacher's vectors for full-d SGD.

Trajectory j draws its start from the stream (seed, INITIAL, first + j). Rules (``model.init``):

* ``random`` (scale s): rows iid N(0, s^2/d I_d). In F coordinates ``Y = (s / sqrt d) N_F`` (p x K
  Gaussian) and ``Gamma = (s^2/d) A A^T`` with A lower triangular by Bartlett's decomposition of
  Wishart(d - p, I_K) (A_ii^2 ~ chi^2(d - p - i), below the diagonal N(0, 1));
* ``informed`` (K = M, scale s): ``v_i = w*_i`` plus the random rule's rows;
* ``zero``: V = 0 (Y = 0, Gamma = 0: the chain's singular start);
* ``overlaps`` (Q, R): ``Y`` with ``R = Y^T L^T`` and ``Gamma = Q - Y^T Y`` (deterministic); in dimension d
  ``V^T = Q_F Y + O B^T`` with ``B B^T = Gamma`` and O orthonormal columns ⟂ F.

A constrained student is then put on its manifold: ``sphere`` divides each vector by its norm,
``stiefel`` orthonormalises the rows (``V <- (V V^T)^(-1/2) V``).

A fine-tuning student (``V = W0 + B Theta``, MATH.md §8) starts from its coefficients B and Theta's rule
(:func:`linear_initial_states`, :func:`linear_initial_vectors`): F is the span of the teacher's and the base's
vectors (``[W*; W0] = [L; L0] Q_F^T``); ``random`` draws Theta's r rows as above (projected onto span(W0)^⟂
first with ``orthogonal_to_base``), ``zero`` starts at Theta = 0 and ``explicit`` from Theta's Gram and
overlaps with teacher and base.
"""

from __future__ import annotations

import math

import numpy as np

from ...numerics import random_streams as streams
from .spec import CommitteeModel, overlap_coordinates

__all__ = ["initial_states", "initial_vectors", "teacher_geometry", "states_from_overlaps", "linear_initial_states", "linear_geometry", "linear_initial_vectors"]


def _psd_factor(gamma: np.ndarray) -> np.ndarray:
    """B (K x K) with B B^T = gamma (symmetric PSD; tiny negative eigenvalues of rounding set to 0)."""
    values, vectors = np.linalg.eigh(0.5 * (gamma + gamma.T))
    return vectors * np.sqrt(np.clip(values, 0.0, None))


def _inverse_sqrt(S: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(S)
    return (vectors / np.sqrt(values)) @ vectors.T


def _constrain_state(model: CommitteeModel, Y: np.ndarray, Gam: np.ndarray) -> None:
    """Put one state (Y (p x K), Gamma (K x K)) on the constraint's manifold, in place."""
    if model.constraint == "sphere":
        norms = np.sqrt(np.sum(Y * Y, axis=0) + np.diag(Gam))
        Y /= norms
        Gam /= np.outer(norms, norms)
    elif model.constraint == "stiefel":
        T = _inverse_sqrt(Y.T @ Y + Gam)
        Y[:] = Y @ T
        Gam[:] = T @ Gam @ T


def states_from_overlaps(model: CommitteeModel, Q: np.ndarray, R: np.ndarray) -> tuple:
    """``(Y, Gamma)`` of overlaps ``Q`` (..., K, K) and ``R`` (..., K, M): ``R = Y^T L^T`` and ``Gamma = Q -
    Y^T Y``.

    Parameters
    ----------
    model : CommitteeModel
    Q, R : ndarray

    Returns
    -------
    tuple of ndarray
    """
    Q, R = np.asarray(Q, dtype=float), np.asarray(R, dtype=float)
    pinv = np.linalg.pinv(model.L)  # (p, M): Y = L^+ R^T
    Y = np.einsum("pm,...km->...pk", pinv, R)
    Gam = Q - np.einsum("...pk,...pl->...kl", Y, Y)
    return Y, 0.5 * (Gam + np.swapaxes(Gam, -1, -2))


def initial_states(model: CommitteeModel, d: int, trajectories: int, seed: int, first: int) -> tuple:
    """``(Y (n, p, K), Gamma (n, K, K), a (n, K))``: the chain's start for ``trajectories`` trajectories, in the
    law of :func:`initial_vectors`, at a cost independent of d.

    Parameters
    ----------
    model : CommitteeModel
    d : int
    trajectories : int
    seed : int
    first : int
        The first trajectory's index (its stream).

    Returns
    -------
    tuple of ndarray
    """
    p, K = model.p, model.K
    Y = np.zeros((trajectories, p, K))
    Gam = np.zeros((trajectories, K, K))
    A = np.repeat(np.asarray(model.student_second_layer, dtype=float)[None], trajectories, axis=0)
    kind = model.init["kind"]
    if kind == "overlaps":
        Y0, G0 = overlap_coordinates(model.init["R"], model.L)[0], None
        G0 = model.init["Q"] - Y0.T @ Y0
        G0 = 0.5 * (G0 + G0.T)
        Y[:] = Y0
        Gam[:] = G0
    elif kind in ("random", "informed"):
        scale = model.init["scale"]
        state = np.empty(4, dtype=np.uint64)
        for j in range(trajectories):
            if scale > 0:
                streams.seed_stream(np.uint64(seed), streams.INITIAL, first + j, state)
                gaussian = np.empty(p * K + K * K)
                streams.fill_normal(state, gaussian)
                NF = gaussian[: p * K].reshape(p, K)
                B = np.tril(gaussian[p * K :].reshape(K, K), -1)
                for i in range(K):
                    B[i, i] = math.sqrt(streams.chi_square(state, float(d - p - i)))
                Y[j] = scale / math.sqrt(d) * NF
                Gam[j] = scale * scale / d * (B @ B.T)
            if kind == "informed":
                Y[j] += model.L.T  # w*_i = L_i in F coordinates (K = M)
    for j in range(trajectories):
        _constrain_state(model, Y[j], Gam[j])
    return Y, Gam, A


def teacher_geometry(model: CommitteeModel, d: int, seed: int) -> tuple:
    """``(W, QF)``: the teacher's vectors (M x d) and an orthonormal basis of their span (d x p) with
    ``W = L QF^T``: the model's explicit vectors, or L placed on a random p-dimensional subspace (stream
    (seed, GEOMETRY)).

    Parameters
    ----------
    model : CommitteeModel
    d : int
    seed : int

    Returns
    -------
    tuple of ndarray
    """
    L = model.L
    if model.teacher_vectors is not None:
        W = np.ascontiguousarray(model.teacher_vectors, dtype=float)
        QF = W.T @ L @ np.linalg.inv(L.T @ L)  # W = L QF^T with QF's columns orthonormal (L L^T = W W^T)
        return W, np.ascontiguousarray(QF)
    QF = np.linalg.qr(streams.gaussian_matrix(d, model.p, seed, streams.GEOMETRY))[0]
    return np.ascontiguousarray(L @ QF.T), np.ascontiguousarray(QF)


def initial_vectors(model: CommitteeModel, W: np.ndarray, QF: np.ndarray, trajectories: int, seed: int, first: int) -> tuple:
    """``(V (n, K, d), a (n, K))``: the students' starts in dimension d (teacher ``W``, F's basis ``QF``).

    Parameters
    ----------
    model : CommitteeModel
    W : ndarray (M, d)
    QF : ndarray (d, p)
    trajectories, seed, first : int

    Returns
    -------
    tuple of ndarray
    """
    K = model.K
    d = W.shape[1]
    V = np.zeros((trajectories, K, d))
    A = np.repeat(np.asarray(model.student_second_layer, dtype=float)[None], trajectories, axis=0)
    kind = model.init["kind"]
    if kind == "overlaps":
        Y, Gam = states_from_overlaps(model, model.init["Q"], model.init["R"])
        G = streams.gaussian_matrix(d, K, seed, streams.GEOMETRY, first=d)  # rows beyond F's draws
        G -= QF @ (QF.T @ G)
        O = np.linalg.qr(G)[0]
        V[:] = (QF @ Y + O @ _psd_factor(Gam).T).T
    elif kind in ("random", "informed"):
        scale = model.init["scale"]
        state = np.empty(4, dtype=np.uint64)
        for j in range(trajectories):
            if scale > 0:
                streams.seed_stream(np.uint64(seed), streams.INITIAL, first + j, state)
                gaussian = np.empty(K * d)
                streams.fill_normal(state, gaussian)
                V[j] = scale / math.sqrt(d) * gaussian.reshape(K, d)
            if kind == "informed":
                V[j] += W
    if model.constraint == "sphere":
        V /= np.linalg.norm(V, axis=2, keepdims=True)
    elif model.constraint == "stiefel":
        for j in range(trajectories):
            V[j] = _inverse_sqrt(V[j] @ V[j].T) @ V[j]
    return V, A


def linear_initial_states(model: CommitteeModel, d: int, trajectories: int, seed: int, first: int) -> tuple:
    """``(Y (n, p, r), Gamma (n, r, r), B (n, K, r), a (n, K))``: a fine-tuning student's chain start (Theta's
    state in F = span(teacher, base) and the coefficients), in the law of :func:`linear_initial_vectors`.

    Parameters
    ----------
    model : CommitteeModel
        A lora or full member.
    d, trajectories, seed, first : int

    Returns
    -------
    tuple of ndarray
    """
    p, r, K = model.p, model.rank, model.K
    Y = np.zeros((trajectories, p, r))
    Gam = np.zeros((trajectories, r, r))
    Bc = np.repeat(np.asarray(model.coefficients, dtype=float)[None], trajectories, axis=0)
    A = np.repeat(np.asarray(model.student_second_layer, dtype=float)[None], trajectories, axis=0)
    kind = model.init["kind"]
    if kind == "explicit":
        Y0, G0 = _explicit_state(model)
        Y[:] = Y0
        Gam[:] = G0
    elif kind == "random":
        scale = model.init["scale"]
        P = model.base_projector if model.orthogonal_to_base else None
        state = np.empty(4, dtype=np.uint64)
        for j in range(trajectories):
            streams.seed_stream(np.uint64(seed), streams.INITIAL, first + j, state)
            gaussian = np.empty(p * r + r * r)
            streams.fill_normal(state, gaussian)
            NF = gaussian[: p * r].reshape(p, r)
            if P is not None:
                NF = P @ NF
            Bt = np.tril(gaussian[p * r :].reshape(r, r), -1)
            for i in range(r):
                Bt[i, i] = math.sqrt(streams.chi_square(state, float(d - p - i)))
            Y[j] = scale / math.sqrt(d) * NF
            Gam[j] = scale * scale / d * (Bt @ Bt.T)
    for j in range(trajectories):
        _constrain_state(model, Y[j], Gam[j])
    return Y, Gam, Bc, A


def _explicit_state(model: CommitteeModel) -> tuple:
    """``(Y (p x r), Gamma (r x r))`` of an explicit start of Theta."""
    init = model.init
    Y = overlap_coordinates(np.hstack([init["teacher_overlap"], init["base_overlap"]]), model.joint_factor)[0]
    G0 = init["gram"] - Y.T @ Y
    return Y, 0.5 * (G0 + G0.T)


def linear_geometry(model: CommitteeModel, d: int, seed: int) -> tuple:
    """``(W (M x d), W0 (K x d), QF (d x p))``: the teacher's and the base's vectors and an orthonormal basis
    of their span with ``[W; W0] = [L; L0] QF^T``: the model's explicit vectors, or ``[L; L0]`` placed on a
    random p-dimensional subspace (stream (seed, GEOMETRY), as :func:`teacher_geometry`).

    Parameters
    ----------
    model : CommitteeModel
    d, seed : int

    Returns
    -------
    tuple of ndarray
    """
    J = model.joint_factor
    if model.teacher_vectors is not None:
        stacked = np.vstack([model.teacher_vectors, model.parametrisation["base"]["vectors"]])
        QF = stacked.T @ J @ np.linalg.inv(J.T @ J)
    else:
        QF = np.linalg.qr(streams.gaussian_matrix(d, model.p, seed, streams.GEOMETRY))[0]
        stacked = J @ QF.T
    M = model.M
    return np.ascontiguousarray(stacked[:M]), np.ascontiguousarray(stacked[M:]), np.ascontiguousarray(QF)


def base_rows(W0: np.ndarray) -> np.ndarray:
    """Orthonormal rows (k0 x d) spanning the base's vectors (k0 = their rank; none for W0 = 0)."""
    if not np.any(W0):
        return np.zeros((0, W0.shape[1]))
    _, values, right = np.linalg.svd(W0, full_matrices=False)
    rank = int(np.sum(values > 1e-10 * values[0]))
    return np.ascontiguousarray(right[:rank])


def linear_initial_vectors(model: CommitteeModel, W: np.ndarray, W0: np.ndarray, QF: np.ndarray, trajectories: int, seed: int, first: int) -> tuple:
    """``(Theta (n, r, d), B (n, K, r), a (n, K))``: a fine-tuning student's start in dimension d.

    Parameters
    ----------
    model : CommitteeModel
    W, W0 : ndarray (M, d), (K, d)
    QF : ndarray (d, p)
    trajectories, seed, first : int

    Returns
    -------
    tuple of ndarray
    """
    r, K = model.rank, model.K
    d = W.shape[1]
    Theta = np.zeros((trajectories, r, d))
    Bc = np.repeat(np.asarray(model.coefficients, dtype=float)[None], trajectories, axis=0)
    A = np.repeat(np.asarray(model.student_second_layer, dtype=float)[None], trajectories, axis=0)
    kind = model.init["kind"]
    if kind == "explicit":
        Y, Gam = _explicit_state(model)
        G = streams.gaussian_matrix(d, r, seed, streams.GEOMETRY, first=d)  # rows beyond F's draws
        G -= QF @ (QF.T @ G)
        G -= QF @ (QF.T @ G)
        O = np.linalg.qr(G)[0]
        Theta[:] = (QF @ Y + O @ _psd_factor(Gam).T).T
    elif kind == "random":
        scale = model.init["scale"]
        rows = base_rows(W0) if model.orthogonal_to_base else None
        state = np.empty(4, dtype=np.uint64)
        for j in range(trajectories):
            streams.seed_stream(np.uint64(seed), streams.INITIAL, first + j, state)
            gaussian = np.empty(r * d)
            streams.fill_normal(state, gaussian)
            Theta[j] = scale / math.sqrt(d) * gaussian.reshape(r, d)
            if rows is not None:
                Theta[j] -= (Theta[j] @ rows.T) @ rows
    if model.constraint == "sphere":
        Theta /= np.linalg.norm(Theta, axis=2, keepdims=True)
    elif model.constraint == "stiefel":
        for j in range(trajectories):
            Theta[j] = _inverse_sqrt(Theta[j] @ Theta[j].T) @ Theta[j]
    return Theta, Bc, A
