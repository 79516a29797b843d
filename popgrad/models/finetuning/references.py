"""Independent references for the fine-tuning model: an explicit network's population loss, and Monte
Carlo per-sample gradients in dimension d. Neither uses the reduction to m, so both check Proposition 4."""

from __future__ import annotations

import numpy as np
from numba import njit

from ..._validation import InvalidArgument, check_integer
from ...gaussian.activations import activation
from ...gaussian.kernels import kernel_spec
from ...gaussian.programs import STACK_SIZE
from ...numerics import random_streams as streams
from ...numerics.compiled import SOURCE_VERSION, specialised
from .gradients import gradient_coefficient, model_arrays
from .population import NeuronPairs
from .spec import FineTuningProblem

__all__ = ["network_loss", "monte_carlo_gradient"]


def network_loss(sigma, lam, teacher_weights: np.ndarray, student_weights: np.ndarray) -> float:
    """``E[(sum_i lam_i sigma(<a_i, x>) - sum_j lam_j sigma(<b_j, x>))^2]`` for explicit weight vectors.

    Each pair is a two-scale kernel at the vectors' norms and the cosine of their angle: nothing here
    knows about m, u, c or conventions.

    Parameters
    ----------
    sigma : str or Activation
    lam : array_like
        Output weights, one per row.
    teacher_weights, student_weights : ndarray, shape (k, d)

    Returns
    -------
    float

    Examples
    --------
    >>> w = np.eye(3)[:2]
    >>> network_loss("relu", [1.0, 1.0], w, w)
    0.0
    """
    sigma = activation(sigma)
    lam = np.asarray(lam, dtype=np.float64)
    vectors = np.vstack([teacher_weights, student_weights])
    signs = np.concatenate([lam, -lam])
    norms = np.linalg.norm(vectors, axis=1)
    cosines = np.clip((vectors @ vectors.T) / np.outer(norms, norms), -1.0, 1.0)
    spec = kernel_spec(sigma, norms, derivative=False)
    pairs = NeuronPairs.merge(np.outer(signs, signs), cosines, np.zeros_like(cosines), norms, norms)
    return float(pairs.sum(np.zeros(1), spec, spec)[0])


@specialised
def _gradient_kernel(code: int):
    version = SOURCE_VERSION

    @njit(cache=True, nogil=True)
    def sums_kernel(start, stop, sums, squares, W, u, u_hat, basis, seed, per_stream, lam, c, c_hat, xi, n_t, n_s, parameters, ops, args, d_ops, d_args):
        d = W.shape[1]
        state = np.empty(4, dtype=np.uint64)
        x = np.empty(d)
        a = np.empty(W.shape[0])
        stack = np.empty(STACK_SIZE)
        for s in range(start, stop):
            streams.seed_stream(seed, streams.GRADIENTS, s, state)
            for _ in range(per_stream):
                for j in range(d):
                    x[j] = streams.normal(state)
                for i in range(W.shape[0]):
                    a[i] = W[i] @ x
                coefficient, _ = gradient_coefficient(code, a, u @ x, u_hat @ x, lam, c, c_hat, xi, n_t, n_s, parameters, ops, args, d_ops, d_args, stack)
                projected = x.copy()
                for r in range(basis.shape[0]):
                    projected -= (basis[r] @ x) * basis[r]
                tangent = projected - (u_hat @ projected) * u_hat
                for j in range(d):
                    value = -coefficient * tangent[j]
                    sums[s, j] += value
                    squares[s, j] += value * value
        return len(version)

    return sums_kernel


def monte_carlo_gradient(problem: FineTuningProblem, W, u, u_hat, basis, samples: int, seed: int = 0, streams_count: int = 64) -> tuple:
    """Mean and standard error (per coordinate) of the projected spherical per-sample gradient
    ``-A (I - u_hat u_hat^T) P_W^perp x`` over ``samples`` fresh Gaussian inputs in dimension d
    (``basis``: d x rank, orthonormal columns spanning span(W)).

    Its expectation is the population gradient ``-h(m) (u - m u_hat)`` (Proposition 4).

    Parameters
    ----------
    problem : FineTuningProblem
    W : ndarray, shape (k, d)
    u, u_hat : ndarray, shape (d,)
    basis : ndarray, shape (d, rank)
    samples : int
    seed : int, default 0
    streams_count : int, default 64
        Independent streams (the result does not depend on the threads).

    Returns
    -------
    tuple of ndarray
        ``(mean, standard_error)``, each of shape (d,).
    """
    W = np.ascontiguousarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != problem.k:
        raise InvalidArgument(f"W must have shape (k, d) = ({problem.k}, d), got {W.shape}")
    d = W.shape[1]
    u, u_hat = (np.ascontiguousarray(v, dtype=np.float64) for v in (u, u_hat))
    basis = np.ascontiguousarray(np.asarray(basis, dtype=np.float64).reshape(d, -1).T)
    if u.shape != (d,) or u_hat.shape != (d,):
        raise InvalidArgument(f"u and u_hat must be {d}-dimensional vectors")
    samples = check_integer(samples, "samples", 2, 10**10)
    streams_count = check_integer(streams_count, "streams_count", 1, 4096)
    per_stream = max(1, samples // streams_count)
    sums = np.zeros((streams_count, d))
    squares = np.zeros_like(sums)
    code, model = model_arrays(problem)
    streams.run_blocks(_gradient_kernel(code), streams_count, sums, squares, W, u, u_hat, basis, np.uint64(check_integer(seed, "seed", 0, 2**63 - 1)), per_stream, *model)
    total = streams_count * per_stream
    mean = sums.sum(axis=0) / total
    variance = squares.sum(axis=0) / total - mean**2
    return mean, np.sqrt(np.maximum(variance, 0.0) * total / (total - 1) / total)
