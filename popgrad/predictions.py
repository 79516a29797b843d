"""Deterministic predictions of m_t in units of SGD steps (MATH.md §4).

* ``gradient_flow`` — ``dm/dt = eta h(m) (1 - m^2)`` (tau = eta t);
* ``population_map`` — the exact population step with normalisation,
  ``m' = (m + eta h (1 - m^2)) / sqrt(1 + eta^2 h^2 (1 - m^2))``, iterated step by step;
* ``finite_step_ode`` — ``dm/dt = eta h(m) (1 - m^2) - (eta^2 / 2) m N(m)`` with
  ``N(m) = E[A^2 (q^2 + chi)] = E[A^2 q^2] + (n - 2) V(m)`` (≈ n V(m), V = E[A^2]), the second-order
  expansion of the exact chain's normalisation. N is estimated by Monte Carlo on Chebyshev nodes with
  common random numbers; its uncertainty (2 standard errors) gives a band by the comparison principle.
* ``exact_normalization_ode`` — ``dm/dt = eta h(m) (1 - m^2) - E(m)`` with the normalisation term of
  the exact chain kept whole, ``E(m) = E[(m + eta A q s)(1 - 1/sqrt(1 + eta^2 A^2 (q^2 + chi)))]``, so
  that dm/dt is the exact one-step mean E[m' - m | m] (by Monte Carlo for the normalisation part only,
  which has small variance). It agrees with ``finite_step_ode`` for small delta = eta n and stays
  accurate where the second-order expansion drifts (measured: delta = 0.25, d = 300).

With a random start (u_hat_0 uniform on the sphere of span(W)^perp) each prediction is averaged over the
law of m_0 (m_0 = 2 B - 1, B ~ Beta((n-1)/2, (n-1)/2)) at equal-probability quantiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import stats

from . import _jit
from ._validation import check_integer, check_real
from .gradients import gradient_coefficient, neuron_divisors
from .integrators import DriftODE, solve
from .interpolation import PiecewiseChebyshev, _coefficients, chebyshev_evaluate_scalar
from .model import FineTuningProblem
from .population import drift_interpolant
from .simulation import _factor

__all__ = ["NoiseEstimate", "noise_estimate", "Predictions", "predict", "PREDICTIONS"]

PREDICTIONS = ("gradient_flow", "population_map", "finite_step_ode", "exact_normalization_ode")


@njit(cache=True, nogil=True)
def _noise_sums(start, stop, out, nodes, L, lam, c, c_hat, xi, n_t, n_s, kind, parameters, ops, args, d_ops, d_args, n, eta, seed, per_stream):
    """Per stream and node: sums of A^2, A^2 (q^2 + n - 2) and its square, and of the exact normalisation
    term (m + eta A q s)(1 - 1/sqrt(1 + eta^2 A^2 (q^2 + chi))) and its square; the same draws at every node."""
    k, rank = L.shape
    for s in range(start, stop):
        state = np.empty(4, dtype=np.uint64)
        _jit.seed_stream(seed, s, state)
        z = np.empty(rank)
        a = np.empty(k)
        stack = np.empty(_jit.STACK_SIZE)
        for _ in range(per_stream):
            for r in range(rank):
                z[r] = _jit.normal(state)
            _jit.matvec(L, z, a, False)
            g_hat = _jit.normal(state)
            q = _jit.normal(state)
            chi = _jit.chi_square(state, n - 2.0)
            for index in range(nodes.shape[0]):
                m = nodes[index]
                co = math.sqrt(max(0.0, 1.0 - m * m))
                g = m * g_hat + co * q
                coefficient, _ = gradient_coefficient(a, g, g_hat, lam, c, c_hat, xi, n_t, n_s, kind, parameters, ops, args, d_ops, d_args, stack)
                square = coefficient * coefficient
                combined = square * (q * q + n - 2.0)
                out[s, index, 0] += square
                out[s, index, 1] += combined
                out[s, index, 2] += combined * combined
                epsilon = eta * eta * square * (q * q + chi)
                root = math.sqrt(1.0 + epsilon)
                term = (m + eta * coefficient * q * co) * epsilon / (root * (1.0 + root))  # 1 - 1/root, no cancellation
                out[s, index, 3] += term
                out[s, index, 4] += term * term


@dataclass(frozen=True)
class NoiseEstimate:
    """Monte Carlo estimate of ``V(m) = E[A^2]``, ``N(m) = E[A^2 (q^2 + chi)]`` and, for the step size
    ``eta``, the exact normalisation term ``E(m) = E[(m + eta A q s)(1 - 1/sqrt(1 + eta^2 A^2 (q^2 + chi)))]``
    (s = sqrt(1 - m^2); ``E = (eta^2/2) m N + O(eta^4)``) on Chebyshev nodes.

    ``N``, ``E`` and ``N_error``, ``E_error`` (two standard errors) are interpolants in the endpoint
    variable, ready for :class:`popgrad.integrators.DriftODE`; the ``*_values`` are the raw estimates.
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
    left = _coefficients(values[: _DEGREE + 1])
    right = _coefficients(values[_DEGREE:])
    return PiecewiseChebyshev(np.array([-1.0, 0.0, 1.0]), np.array([left, right]), float("nan"), float("nan"), True)


def noise_estimate(problem: FineTuningProblem, d: int, samples: int = 200_000, seed: int = 0, eta: float = 0.0) -> NoiseEstimate:
    """Estimate V(m), N(m) and (for ``eta``) E(m) at 33 Chebyshev nodes with ``samples`` Gaussian draws
    shared by all nodes."""
    samples = check_integer(samples, "samples", 64)
    n = check_integer(d, "d", problem.rank + 3) - problem.rank
    streams = 64
    per_stream = max(1, samples // streams)
    total = streams * per_stream
    nodes = _nodes()
    n_t, n_s = neuron_divisors(problem)
    L = _factor(problem.gram, problem.rank)
    if L.shape[1] == 0:
        L = np.zeros((problem.k, 1))
    eta = check_real(eta, "eta", 0.0)
    sums = np.zeros((streams, nodes.shape[0], 5))
    _jit.run_blocks(_noise_sums, streams, sums, nodes, L, np.asarray(problem.lam), np.asarray(problem.c), np.asarray(problem.c_hat), float(problem.xi), n_t, n_s, *problem.activation.jit_spec, float(n), eta, np.uint64(seed), per_stream)
    sums = sums.sum(axis=0)
    V = sums[:, 0] / total
    N, N_error = _mean_and_error(sums[:, 1], sums[:, 2], total)
    E, E_error = _mean_and_error(sums[:, 3], sums[:, 4], total)
    return NoiseEstimate(nodes, V, N, N_error, _fit(nodes, N), _fit(nodes, 2.0 * N_error), total, seed, n, eta, E, _fit(nodes, E), _fit(nodes, 2.0 * E_error))


def _mean_and_error(total: np.ndarray, squares: np.ndarray, count: int) -> tuple:
    mean = total / count
    variance = np.maximum(squares / count - mean**2, 0.0) * count / (count - 1)
    return mean, np.sqrt(variance / count)


@njit(cache=True)
def _population_map(h_breaks, h_coefficients, eta, m0, checkpoints):
    out = np.empty(checkpoints.shape[0])
    m = m0
    done = 0
    for index in range(checkpoints.shape[0]):
        while done < checkpoints[index]:
            h = chebyshev_evaluate_scalar(h_breaks, h_coefficients, True, m)
            slack = 1.0 - m * m
            m = (m + eta * h * slack) / math.sqrt(1.0 + eta * eta * h * h * slack)
            done += 1
        out[index] = m
    return out


@dataclass(frozen=True)
class Predictions:
    """Predicted mean m at the checkpoints: ``values[name]``; ``bands[name]`` holds (lower, upper) of the
    ODEs with a Monte Carlo noise term, under 2 standard errors of that term (comparison principle)."""

    steps: np.ndarray
    values: dict
    bands: dict
    noise: NoiseEstimate | None
    initial_points: np.ndarray


def initial_points(n: int, m0: float | None, count: int = 33) -> np.ndarray:
    """Equal-probability quantiles of m_0 (uniform u_hat_0 on S^(n-1)), or [m0]."""
    if m0 is not None:
        return np.array([float(m0)])
    levels = (np.arange(count) + 0.5) / count
    return 2.0 * stats.beta.ppf(levels, (n - 1) / 2, (n - 1) / 2) - 1.0


def predict(problem: FineTuningProblem, d: int, eta: float, checkpoints, m0: float | None = None, which=PREDICTIONS, samples: int = 200_000, seed: int = 0, rtol: float = 1e-10) -> Predictions:
    """The predictions of m_t at the checkpoints (steps), averaged over the law of m_0 when it is random.

    Examples
    --------
    >>> from popgrad.model import orthonormal_problem
    >>> problem = orthonormal_problem("relu", k=4, xi=1.0, seed=0)
    >>> p = predict(problem, d=200, eta=0.05 / 200, checkpoints=[0, 20000], m0=0.0, which=("gradient_flow",))
    >>> round(float(p.values["gradient_flow"][1]), 6)
    -0.999982
    """
    eta = check_real(eta, "eta", 0.0, None, low_open=True)
    steps = np.asarray(checkpoints, dtype=np.float64)
    unknown = set(which) - set(PREDICTIONS)
    if unknown:
        raise ValueError(f"unknown predictions {sorted(unknown)} (known: {', '.join(PREDICTIONS)})")
    n = check_integer(d, "d", problem.rank + 3) - problem.rank
    starts = initial_points(n, m0)
    h = drift_interpolant(problem).interpolant
    values, bands, noise = {}, {}, None
    if "gradient_flow" in which:
        ode = DriftODE(h, eta)
        values["gradient_flow"] = np.mean([solve(ode, s, steps, rtol=rtol, atol=1e-14).values for s in starts], axis=0)
    if "population_map" in which:
        integer_steps = np.asarray(checkpoints, dtype=np.int64)
        values["population_map"] = np.mean([_population_map(h.breaks, h.coefficients, eta, float(s), integer_steps) for s in starts], axis=0)
    if "finite_step_ode" in which or "exact_normalization_ode" in which:
        noise = noise_estimate(problem, d, samples=samples, seed=seed, eta=eta)
    noisy = {"finite_step_ode": (noise.N, noise.N_error, 0.5 * eta**2, True), "exact_normalization_ode": (noise.E, noise.E_error, 1.0, False)} if noise else {}
    for name, (term, error, weight, times_m) in noisy.items():
        if name not in which:
            continue
        runs = {}
        for side in (-1.0, 0.0, 1.0):
            ode = DriftODE(h, eta, term, weight, error, side, times_m)
            runs[side] = np.mean([solve(ode, s, steps, rtol=rtol, atol=1e-14).values for s in starts], axis=0)
        values[name] = runs[0.0]
        bands[name] = (runs[-1.0], runs[1.0])
    return Predictions(steps.astype(np.int64), values, bands, noise, starts)
