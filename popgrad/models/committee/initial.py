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
"""

from __future__ import annotations

import math

import numpy as np

from ...numerics import random_streams as streams
from .spec import CommitteeModel, overlap_coordinates

__all__ = ["initial_states", "initial_vectors", "teacher_geometry", "states_from_overlaps"]


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
