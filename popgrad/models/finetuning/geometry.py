"""Explicit vectors in R^d realising a fine-tuning problem, built from thin bases (never d x d)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..._validation import InvalidArgument, check_integer, check_real
from ...numerics.linalg import complement_vectors, gram_factor, orthonormal_columns
from .spec import FineTuningProblem

__all__ = ["Embedding", "embedding"]


@dataclass(frozen=True)
class Embedding:
    """Explicit vectors in R^d realising a problem: W (k x d) with W W^T = G, u and u_hat unit,
    orthogonal to span(W), with <u, u_hat> = m; ``basis`` is an orthonormal basis of span(W) (d x rank)."""

    W: np.ndarray
    u: np.ndarray
    u_hat: np.ndarray
    basis: np.ndarray

    @property
    def d(self) -> int:
        return self.W.shape[1]


def embedding(problem: FineTuningProblem, d: int | None = None, m: float = 0.0, seed: int = 0, rotate: bool = True) -> Embedding:
    """Realise ``problem`` in R^d. Uses ``problem.W`` when present; otherwise ``W = L Q^T`` with
    ``L L^T = G`` (k x rank) and Q (d x rank) orthonormal: a uniformly random frame with ``rotate``, the
    first rank coordinates without. u and u_hat are drawn from the complement of span(W). Memory is
    O(d (k + 2)).

    Examples
    --------
    >>> from popgrad import orthonormal_problem
    >>> problem = orthonormal_problem("relu", k=3, xi=1.0, seed=0)
    >>> e = embedding(problem, d=8, m=0.25, seed=1)
    >>> np.allclose(e.W @ e.W.T, problem.gram), round(float(e.u @ e.u_hat), 12), bool(np.allclose(e.W @ e.u, 0))
    (True, 0.25, True)
    """
    m = check_real(m, "m", -1.0, 1.0)
    generator = np.random.default_rng(check_integer(seed, "seed", 0))
    rank = problem.rank
    if problem.W is not None:
        W = np.array(problem.W)
        if d is not None and d != W.shape[1]:
            raise InvalidArgument(f"d must equal the problem's W dimension {W.shape[1]}, got {d}")
        d = W.shape[1]
        basis = orthonormal_columns(W.T, rank)
    else:
        d = check_integer(d, "d", rank + 2)
        if rotate:
            basis, _ = np.linalg.qr(generator.standard_normal((d, rank)))
        else:
            basis = np.eye(d, rank)
        W = gram_factor(problem.gram, rank) @ basis.T
    if rank >= d - 1:
        raise InvalidArgument(f"d = {d} leaves no room for u, u_hat orthogonal to span(W) (rank {rank})")
    e1, e2 = complement_vectors(basis, 2, generator).T
    u_hat = m * e1 + math.sqrt(max(0.0, 1 - m * m)) * e2
    return Embedding(W, e1, u_hat, basis)
