"""Small linear algebra: matrix-vector products inside numba kernels, Gram factors, thin orthonormal bases.

Nothing here allocates a d x d matrix: full-d simulations in dimension 10^5 need only (k + 2) x d bases,
kept as rows so that numba kernels read them contiguously.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["cholesky_lower", "complement_rows", "copy_into", "gram_factor", "inverse_square_root", "matvec", "normalise", "numerical_rank", "orthonormal_rows", "row_space", "subtract_rows"]


@njit(cache=True, inline="always")
def copy_into(source, destination):
    """``destination[:] = source`` for 1-d arrays of one length, as a loop: numba compiles a slice
    assignment with a formatted shape-mismatch error that cost ~1.7 s of compilation per kernel."""
    for i in range(source.shape[0]):
        destination[i] = source[i]


@njit(cache=True, inline="always")
def matvec(matrix, vector, out, triangular):
    """``out = matrix @ vector[:columns]`` (only the lower triangle when ``triangular``)."""
    columns = matrix.shape[1]
    for i in range(matrix.shape[0]):
        total = 0.0
        for r in range(min(i + 1, columns) if triangular else columns):
            total += matrix[i, r] * vector[r]
        out[i] = total


@njit(cache=True, inline="always")
def subtract_rows(rows, coefficients, vector):
    """``vector -= rows^T coefficients``: with ``coefficients = rows @ vector`` and orthonormal rows, the
    projection of ``vector`` onto their complement."""
    for r in range(rows.shape[0]):
        for l in range(vector.shape[0]):
            vector[l] -= coefficients[r] * rows[r, l]


@njit(cache=True, inline="always")
def normalise(vector):
    """Scale ``vector`` to unit length in place and return its former norm."""
    norm = 0.0
    for l in range(vector.shape[0]):
        norm += vector[l] * vector[l]
    norm = math.sqrt(norm)
    for l in range(vector.shape[0]):
        vector[l] /= norm
    return norm



@njit(cache=True, inline="always")
def inverse_square_root(S, out):
    """``out = S^(-1/2)`` for a symmetric positive definite r x r matrix (closed forms for r = 1, 2)."""
    r = S.shape[0]
    if r == 1:
        out[0, 0] = 1.0 / math.sqrt(S[0, 0])
        return
    if r == 2:
        # sqrt(S) = (S + s I) / t with s = sqrt(det S), t = sqrt(tr S + 2 s); its inverse in closed form
        s = math.sqrt(max(S[0, 0] * S[1, 1] - S[0, 1] * S[1, 0], 0.0))
        t = math.sqrt(S[0, 0] + S[1, 1] + 2.0 * s)
        a, b, c, e = (S[0, 0] + s) / t, S[0, 1] / t, S[1, 0] / t, (S[1, 1] + s) / t
        det = a * e - b * c
        out[0, 0], out[0, 1], out[1, 0], out[1, 1] = e / det, -b / det, -c / det, a / det
        return
    values, vectors = np.linalg.eigh(S)
    for i in range(r):
        for j in range(r):
            total = 0.0
            for l in range(r):
                total += vectors[i, l] * vectors[j, l] / math.sqrt(values[l])
            out[i, j] = total


@njit(cache=True, inline="always")
def cholesky_lower(A, out, tolerance):
    """``out`` lower triangular with ``out out^T = A`` for a symmetric PSD ``A``; a pivot at most
    ``tolerance`` gives a zero column (rank-revealing for the singular Gamma of a small or zero start)."""
    r = A.shape[0]
    for j in range(r):
        total = A[j, j]
        for l in range(j):
            total -= out[j, l] * out[j, l]
        pivot = math.sqrt(total) if total > tolerance else 0.0
        out[j, j] = pivot
        for i in range(j + 1, r):
            value = A[i, j]
            for l in range(j):
                value -= out[i, l] * out[j, l]
            out[i, j] = value / pivot if pivot > 0.0 else 0.0
        for i in range(j):
            out[i, j] = 0.0


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


def row_space(matrix: np.ndarray, rank: int) -> np.ndarray:
    """Orthonormal rows (rank x d) spanning the row space of ``matrix`` (k x d), by a thin SVD."""
    if rank == 0:
        return np.zeros((0, matrix.shape[1]))
    _, _, right = np.linalg.svd(matrix, full_matrices=False)
    return np.ascontiguousarray(right[:rank])


def orthonormal_rows(rows: np.ndarray) -> np.ndarray:
    """Orthonormal rows spanning those of a wide, well-conditioned matrix (n x d, d >> n), by Cholesky QR,
    repeated once when the first pass leaves an orthogonality error above 1e-14 (CholeskyQR2: orthogonal
    to rounding for condition numbers up to ~1e7). For Gaussian rows this is the Gram–Schmidt frame, i.e.
    uniformly distributed, at the cost of two n x n x d products.

    Examples
    --------
    >>> q = orthonormal_rows(np.random.default_rng(0).standard_normal((5, 1000)))
    >>> bool(np.allclose(q @ q.T, np.eye(5), atol=1e-14))
    True
    """
    q = rows
    for _ in range(2):
        factor = np.linalg.cholesky(q @ q.T)
        q = np.linalg.inv(factor) @ q  # L^-1 of a small, well-conditioned factor
        if np.max(np.abs(q @ q.T - np.eye(q.shape[0]))) <= 1e-14:
            break  # one pass suffices for well-conditioned rows (error ~ cond^2 eps)
    return np.ascontiguousarray(q)


def complement_rows(basis: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Orthonormal rows drawn uniformly from the orthogonal complement of the rows of ``basis`` (r x d,
    orthonormal), given standard Gaussian ``draws`` (count x d): projected twice (for rounding), then
    orthonormalised."""
    draws = np.array(draws, dtype=np.float64)
    for _ in range(2):
        draws -= (draws @ basis.T) @ basis
    return orthonormal_rows(draws)
