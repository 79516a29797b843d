"""Explicit vectors in R^d realising a fine-tuning problem, built from thin bases (never d x d)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..._validation import InvalidArgument, check_integer, check_real
from ...numerics.linalg import complement_rows, gram_factor, orthonormal_rows, row_space
from ...numerics.random_streams import gaussian_matrix
from .spec import FineTuningProblem

__all__ = ["Embedding", "embedding"]


@dataclass(frozen=True)
class Embedding:
    """Explicit vectors in R^d realising a problem: W (k x d) with W W^T = G, u and u_hat unit,
    orthogonal to span(W), with <u, u_hat> = m; ``basis`` is an orthonormal basis of span(W) (d x rank).

    Attributes
    ----------
    W : ndarray, shape (k, d)
    u : ndarray, shape (d,)
        The teacher's direction.
    u_hat : ndarray, shape (d,)
        The student's direction.
    basis : ndarray, shape (d, rank)
        Orthonormal basis of span(W).
    """

    W: np.ndarray
    u: np.ndarray
    u_hat: np.ndarray
    basis: np.ndarray

    @property
    def d(self) -> int:
        return self.W.shape[1]


def embedding(problem: FineTuningProblem, d: int | None = None, m: float = 0.0, seed: int = 0, rotate: bool = True) -> Embedding:
    """Realise ``problem`` in R^d. Uses ``problem.W`` when present; otherwise ``W = L Q^T`` with
    ``L L^T = G`` (k x rank) and Q (d x rank) orthonormal, the first rank rows of a uniformly random
    frame of rank + 2 rows whose last two give u and u_hat (``rotate``), or the first coordinates. u and
    u_hat lie in the complement of span(W). Memory is O(d (k + 2)); the Gaussian draws come from the
    streams ``(seed, GEOMETRY, row)``. ``basis`` (d x rank) is a view of the frame's rows.

    Parameters
    ----------
    problem : FineTuningProblem
    d : int, optional
        Input dimension (default: the problem's W's); at least rank + 2.
    m : float in [-1, 1], default 0
        The overlap <u, u_hat>.
    seed : int, default 0
    rotate : bool, default True
        A random frame (False: span(W) on the first coordinates).

    Returns
    -------
    Embedding

    Examples
    --------
    >>> from popgrad import orthonormal_problem
    >>> problem = orthonormal_problem("relu", k=3, xi=1.0, seed=0)
    >>> e = embedding(problem, d=8, m=0.25, seed=1)
    >>> np.allclose(e.W @ e.W.T, problem.gram), round(float(e.u @ e.u_hat), 12), bool(np.allclose(e.W @ e.u, 0))
    (True, 0.25, True)
    """
    m = check_real(m, "m", -1.0, 1.0)
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    rank = problem.rank
    if problem.W is not None:
        W = np.array(problem.W)
        if d is not None and d != W.shape[1]:
            raise InvalidArgument(f"d must equal the problem's W dimension {W.shape[1]}, got {d}")
        d = W.shape[1]
        if rank >= d - 1:
            raise InvalidArgument(f"d = {d} leaves no room for u, u_hat orthogonal to span(W) (rank {rank})")
        rows = row_space(W, rank)
        directions = complement_rows(rows, gaussian_matrix(2, d, seed))
    else:
        d = check_integer(d, "d", rank + 2)
        if rotate:  # one uniformly random frame: span(W), then u and the second direction of u_hat
            frame = orthonormal_rows(gaussian_matrix(rank + 2, d, seed))
        else:
            frame = np.eye(rank + 2, d)
        rows, directions = frame[:rank], frame[rank:]
        W = gram_factor(problem.gram, rank) @ rows
    e1, e2 = directions
    u_hat = m * e1 + math.sqrt(max(0.0, 1 - m * m)) * e2
    return Embedding(W, e1, u_hat, rows.T)
