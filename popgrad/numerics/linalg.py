"""Small linear algebra: matrix-vector products inside numba kernels, Gram factors, thin orthonormal bases.

Nothing here allocates a d x d matrix: full-d simulations in dimension 10^5 need only d x (k + 2) bases.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["matvec", "gram_factor", "numerical_rank", "orthonormal_columns", "complement_vectors"]


@njit(cache=True, inline="always")
def matvec(matrix, vector, out, triangular):
    """``out = matrix @ vector[:columns]`` (only the lower triangle when ``triangular``)."""
    columns = matrix.shape[1]
    for i in range(matrix.shape[0]):
        total = 0.0
        for r in range(min(i + 1, columns) if triangular else columns):
            total += matrix[i, r] * vector[r]
        out[i] = total


def numerical_rank(gram: np.ndarray) -> int:
    """rank of a symmetric positive semi-definite matrix (eigenvalues above 1e-10 of the largest)."""
    if not np.any(gram):
        return 0
    eigenvalues = np.linalg.eigvalsh(gram)
    return int(np.sum(eigenvalues > 1e-10 * eigenvalues.max()))


def gram_factor(gram: np.ndarray, rank: int | None = None) -> np.ndarray:
    """L (k x rank) with ``L L^T = G``: the identity for G = I (orthonormal features stay O(k)), the
    Cholesky factor (lower triangular: half the work) at full rank, scaled eigenvectors otherwise.

    Examples
    --------
    >>> G = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> L = gram_factor(G)
    >>> bool(np.allclose(L @ L.T, G)), bool(np.allclose(L, np.tril(L)))
    (True, True)
    """
    k = gram.shape[0]
    rank = numerical_rank(gram) if rank is None else rank
    if rank == 0:
        return np.zeros((k, 0))
    if np.array_equal(gram, np.eye(k)):
        return np.eye(k)
    if rank == k:
        try:
            return np.linalg.cholesky(gram)
        except np.linalg.LinAlgError:
            pass
    eigenvalues, vectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1][:rank]
    return np.ascontiguousarray(vectors[:, order] * np.sqrt(np.clip(eigenvalues[order], 0.0, None)))


def orthonormal_columns(matrix: np.ndarray, rank: int) -> np.ndarray:
    """An orthonormal basis (d x rank) of the column space of ``matrix`` (d x n) by a thin SVD."""
    if rank == 0:
        return np.zeros((matrix.shape[0], 0))
    left, _, _ = np.linalg.svd(matrix, full_matrices=False)
    return np.ascontiguousarray(left[:, :rank])


def complement_vectors(basis: np.ndarray, count: int, generator: np.random.Generator) -> np.ndarray:
    """``count`` orthonormal columns drawn uniformly from the orthogonal complement of ``basis`` (d x r,
    orthonormal columns): Gaussian columns, projected twice (for rounding), then a thin QR."""
    d = basis.shape[0]
    draws = generator.standard_normal((d, count))
    for _ in range(2):
        draws -= basis @ (basis.T @ draws)
    q, r = np.linalg.qr(draws)
    return q * np.sign(np.diag(r))
