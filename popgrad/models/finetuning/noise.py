"""Monte Carlo estimates of the chain's noise terms on Chebyshev nodes in m (MATH.md §4).

``V(m) = E[A^2]``, ``N(m) = E[A^2 (q^2 + chi)]`` (the second-order normalisation term is (eta^2/2) m N) and,
for a step size eta, the exact normalisation term ``E(m) = E[(m + eta A q s)(1 - 1/sqrt(1 + eta^2 A^2 (q^2 +
chi)))]`` — each averaged over the draws of :func:`.chain.pre_activations` pushed through :func:`.chain.chain_step`,
the simulator's own step, with the same draws at every node (common random numbers). Streams are
``(seed, NOISE, s)``: never the trajectories' streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from ..._validation import check_integer, check_real
from ...gaussian.programs import STACK_SIZE
from ...numerics import random_streams as streams
from ...numerics.chebyshev import PiecewiseChebyshev, chebyshev_coefficients, chebyshev_evaluate_scalar
from ...numerics.compiled import SOURCE_VERSION, specialised
from ...numerics.linalg import gram_factor
from .chain import chain_step, pre_activations
from .gradients import model_arrays
from .spec import FineTuningProblem

__all__ = ["NoiseEstimate", "noise_estimate"]

STREAMS = 64


@specialised
def _noise_kernel(code: int):
    version = SOURCE_VERSION

    @njit(cache=True, nogil=True)
    def sums(start, stop, out, states, nodes, L, triangular, n, eta, count, lam, c, c_hat, xi, n_t, n_s, parameters, ops, args, d_ops, d_args):
        """Add ``count`` samples per stream to the per-node sums of A^2, A^2 (q^2 + n - 2) and its square,
        and of the normalisation term and its square (the streams' states carry over between calls)."""
        k, rank = L.shape
        z = np.empty(rank + 2)
        a = np.empty(k)
        stack = np.empty(STACK_SIZE)
        for s in range(start, stop):
            s0, s1, s2, s3 = streams.load_words(states[s])
            for _ in range(count):
                chi, s0, s1, s2, s3 = streams.fill_normal_chi_square(z, n - 2.0, s0, s1, s2, s3)
                g_hat, q = pre_activations(L, False, triangular, z, a)
                for index in range(nodes.shape[0]):
                    _, coefficient, normalisation = chain_step(code, nodes[index], a, g_hat, q, chi, eta, lam, c, c_hat, xi, n_t, n_s, parameters, ops, args, d_ops, d_args, stack)
                    square = coefficient * coefficient
                    combined = square * (q * q + n - 2.0)
                    out[s, index, 0] += square
                    out[s, index, 1] += combined
                    out[s, index, 2] += combined * combined
                    out[s, index, 3] += normalisation
                    out[s, index, 4] += normalisation * normalisation
            streams.store_words(states[s], s0, s1, s2, s3)
        return len(version)

    return sums


@dataclass(frozen=True)
class NoiseEstimate:
    """Monte Carlo estimate of ``V(m) = E[A^2]``, ``N(m) = E[A^2 (q^2 + chi)]`` and, for the step size
    ``eta``, the exact normalisation term ``E(m) = E[(m + eta A q s)(1 - 1/sqrt(1 + eta^2 A^2 (q^2 + chi)))]``
    (s = sqrt(1 - m^2); ``E = (eta^2/2) m N + O(eta^4)``) on Chebyshev nodes.

    ``N``, ``E`` and ``N_error``, ``E_error`` (two standard errors) are interpolants in the endpoint
    variable, ready for :class:`popgrad.dynamics.solve.DriftODE`; the ``*_values`` are the raw estimates.

    Attributes
    ----------
    nodes : ndarray
        The 33 Chebyshev nodes in m.
    V_values, N_values, E_values : ndarray
        Raw estimates of V, N and E at the nodes.
    N_standard_errors : ndarray
        Standard errors of ``N_values``.
    N, N_error, E, E_error : PiecewiseChebyshev
        Interpolants of N and E and of two standard errors of each.
    samples : int
        Gaussian draws used (shared by all nodes).
    seed : int
        Seed of the streams (seed, NOISE, s).
    n : int
        Dimension of span(W)^perp, d - rank W.
    eta : float
        Step size of the exact normalisation term (0: not computed).
    """

    nodes: np.ndarray
    V_values: np.ndarray
    N_values: np.ndarray
    N_standard_errors: np.ndarray
    N: PiecewiseChebyshev
    N_error: PiecewiseChebyshev
    samples: int
    seed: int
    n: int
    eta: float
    E_values: np.ndarray
    E: PiecewiseChebyshev
    E_error: PiecewiseChebyshev

    def V(self, m):
        """V(m) = E[A^2] by interpolation of the node estimates."""
        fit = _fit(self.nodes, self.V_values)
        return np.array([chebyshev_evaluate_scalar(fit.breaks, fit.coefficients, True, float(x)) for x in np.atleast_1d(m)])


_DEGREE = 16


def _nodes() -> np.ndarray:
    """Chebyshev points in t on [-1, 0] and [0, 1], mapped to m = t (2 - |t|)."""
    x = np.cos(np.pi * np.arange(_DEGREE + 1) / _DEGREE)[::-1]
    t = np.concatenate([0.5 * (x - 1.0), 0.5 * (x + 1.0)[1:]])
    return t * (2.0 - np.abs(t))


def _fit(nodes: np.ndarray, values: np.ndarray) -> PiecewiseChebyshev:
    left = chebyshev_coefficients(values[: _DEGREE + 1])
    right = chebyshev_coefficients(values[_DEGREE:])
    return PiecewiseChebyshev(np.array([-1.0, 0.0, 1.0]), np.array([left, right]), float("nan"), float("nan"), True)


def noise_estimate(problem: FineTuningProblem, d: int, samples: int = 200_000, seed: int = 0, eta: float = 0.0) -> NoiseEstimate:
    """Estimate V(m), N(m) and (for ``eta``) E(m) at 33 Chebyshev nodes with ``samples`` Gaussian draws
    shared by all nodes.

    Parameters
    ----------
    problem : FineTuningProblem
    d : int
        Input dimension (at least rank W + 3).
    samples : int, default 200 000
        Gaussian draws shared by all nodes (64 to 1e10), in 64 streams (seed, NOISE, s).
    seed : int, default 0
    eta : float, default 0
        Step size for the exact normalisation term E(m) (0: the second-order terms only).

    Returns
    -------
    NoiseEstimate

    Examples
    --------
    >>> from popgrad.models.finetuning.spec import orthonormal_problem
    >>> noise = noise_estimate(orthonormal_problem("relu", 4, 1.0, seed=0), d=100, samples=6400, seed=1)
    >>> noise.samples, bool(np.all(noise.V_values > 0))
    (6400, True)
    """
    samples = check_integer(samples, "samples", STREAMS, 10**10)
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    n = check_integer(d, "d", problem.rank + 3) - problem.rank
    eta = check_real(eta, "eta", 0.0)
    per_stream = max(1, samples // STREAMS)
    total = STREAMS * per_stream
    nodes = _nodes()
    code, model = model_arrays(problem)
    L = gram_factor(problem.gram, problem.rank)
    if L.shape[1] == 0:
        L = np.zeros((problem.k, 1))
    triangular = bool(L.shape[0] == L.shape[1] and np.array_equal(L, np.tril(L)))
    sums = np.zeros((STREAMS, nodes.shape[0], 5))
    states = np.empty((STREAMS, 4), dtype=np.uint64)
    for stream in range(STREAMS):
        streams.seed_stream(np.uint64(seed), streams.NOISE, stream, states[stream])
    # chunks of about 20 ms of work, so that an interrupt is seen quickly; the numbers do not depend on them
    chunk = max(1, 4_000_000 // (STREAMS * nodes.shape[0] * problem.k))
    kernel = _noise_kernel(code)
    for done in range(0, per_stream, chunk):
        streams.run_blocks(kernel, STREAMS, sums, states, nodes, L, triangular, float(n), eta, min(chunk, per_stream - done), *model)
    sums = sums.sum(axis=0)
    V = sums[:, 0] / total
    N, N_error = _mean_and_error(sums[:, 1], sums[:, 2], total)
    E, E_error = _mean_and_error(sums[:, 3], sums[:, 4], total)
    return NoiseEstimate(nodes, V, N, N_error, _fit(nodes, N), _fit(nodes, 2.0 * N_error), total, seed, n, eta, E, _fit(nodes, E), _fit(nodes, 2.0 * E_error))


def _mean_and_error(total: np.ndarray, squares: np.ndarray, count: int) -> tuple:
    mean = total / count
    variance = np.maximum(squares / count - mean**2, 0.0) * count / (count - 1)
    return mean, np.sqrt(variance / count)


