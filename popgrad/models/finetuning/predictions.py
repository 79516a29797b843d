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
from dataclasses import dataclass, field

import numpy as np
from numba import njit
from scipy import special

from ..._validation import InvalidArgument, check_choices, check_integer, check_real
from ...dynamics.solve import SolverFailed, solve
from ...dynamics.trajectories import step_schedule
from ...numerics.chebyshev import chebyshev_evaluate_scalar
from .noise import NoiseEstimate, noise_estimate
from .odes import DriftODE
from .population import drift_interpolant, population_loss
from .spec import FineTuningProblem

__all__ = ["Predictions", "predict", "PREDICTIONS", "initial_points"]

PREDICTIONS = ("gradient_flow", "population_map", "finite_step_ode", "exact_normalization_ode")


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
    ODEs with a Monte Carlo noise term, under 2 standard errors of that term (comparison principle);
    ``loss[name]`` the predicted mean population loss, the average of Phi(m_t) over the starting points
    (to set beside the mean of Phi(m_t) over trajectories: Phi of the mean m is not the mean of Phi).

    Attributes
    ----------
    steps : ndarray
        The checkpoints.
    values : dict of str to ndarray
        Predicted mean m per prediction.
    bands : dict of str to (ndarray, ndarray)
        Lower and upper band of the predictions with a Monte Carlo noise term.
    noise : NoiseEstimate or None
        The noise terms used (None when no finite-step prediction was asked for).
    initial_points : ndarray
        The starting overlaps averaged over (33 quantiles of m_0, or [m0]).
    loss : dict of str to ndarray
        Predicted mean population loss per prediction.
    failures : dict of str to str
        Predictions that could not be computed, with the reason (their values are nan).
    """

    steps: np.ndarray
    values: dict
    bands: dict
    noise: NoiseEstimate | None
    initial_points: np.ndarray
    loss: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)
    """name -> why that prediction could not be computed (its values are nan)"""


#: dopri5 steps before a prediction switches to the implicit solver (a non-stiff prediction takes hundreds)
DOPRI5_STEPS = 200_000


def initial_points(n: int, m0: float | None, count: int = 33) -> np.ndarray:
    """Equal-probability quantiles of m_0 (uniform u_hat_0 on S^(n-1)), or [m0].

    Parameters
    ----------
    n : int
        Dimension of span(W)^perp (at least 3).
    m0 : float or None
        A fixed start, or None for the random one.
    count : int, default 33

    Returns
    -------
    ndarray
    """
    if m0 is not None:
        return np.array([float(m0)])
    levels = (np.arange(count) + 0.5) / count
    return 2.0 * special.betaincinv((n - 1) / 2, (n - 1) / 2, levels) - 1.0  # the Beta quantiles (scipy.stats: +0.3 s import)


def predict(problem: FineTuningProblem, d: int, eta: float | None = None, checkpoints=None, m0: float | None = None, which=PREDICTIONS, samples: int | None = None, seed: int = 0, rtol: float = 1e-10, noise_samples: int | None = None, *, delta: float | None = None, steps: int | None = None) -> Predictions:
    """The predictions of m_t at the checkpoints (steps), averaged over the law of m_0 when it is random.

    ``noise_samples`` (the name :func:`popgrad.compare` and ``--noise-samples`` use) and ``samples`` are
    the same parameter, the Monte Carlo samples of the noise terms; ``seed`` seeds that Monte Carlo.

    Parameters
    ----------
    problem : FineTuningProblem
    d : int
        Input dimension.
    eta : float, optional
        Step size, > 0; or give ``delta``.
    checkpoints : sequence of int, optional
        Increasing step counts, at most 1e12; or give ``steps``.
    m0 : float in [-1, 1], optional
        Starting overlap; by default m_0 is random (u_hat_0 uniform on the sphere of span(W)^perp) and each
        prediction is averaged over 33 equal-probability quantiles of its law.
    which : sequence of str, default all four
        'gradient_flow', 'population_map', 'finite_step_ode', 'exact_normalization_ode'.
    samples, noise_samples : int, default 200 000
        One parameter under two names: Monte Carlo samples of the noise terms.
    seed : int, default 0
        Seed of that Monte Carlo.
    rtol : float, default 1e-10
        Relative tolerance of the ODE integration.
    delta : float, optional
        The step size as ``delta = eta d``, instead of ``eta``.
    steps : int, optional
        The run's length, at 21 evenly spaced checkpoints, instead of ``checkpoints``.

    Returns
    -------
    Predictions
        ``values`` (mean m), ``bands`` (2 SE of the noise terms) and ``loss`` (mean Phi) per prediction.

    Examples
    --------
    >>> from popgrad.models.finetuning.spec import orthonormal_problem
    >>> problem = orthonormal_problem("relu", k=4, xi=1.0, seed=0)
    >>> p = predict(problem, d=200, eta=0.05 / 200, checkpoints=[0, 20000], m0=0.0, which=("gradient_flow",))
    >>> round(float(p.values["gradient_flow"][1]), 6)
    -0.999982
    """
    if samples is not None and noise_samples is not None and samples != noise_samples:
        raise InvalidArgument(f"noise_samples and samples are one parameter: give one of them (got {noise_samples} and {samples})", "noise_samples")
    samples = next((value for value in (noise_samples, samples) if value is not None), 200_000)
    d = check_integer(d, "d", problem.rank + 3)
    eta, steps = step_schedule(d, eta, delta, checkpoints, steps)
    steps = steps.astype(np.float64)
    which = check_choices(which, "which", PREDICTIONS)
    if m0 is not None:
        m0 = check_real(m0, "m0", -1.0, 1.0)
    n = d - problem.rank
    starts = initial_points(n, m0)
    h = drift_interpolant(problem).interpolant
    values, bands, loss, failures, noise = {}, {}, {}, {}, None

    def record(name, paths):  # paths[checkpoint, start]
        values[name] = paths.mean(axis=1)
        loss[name] = population_loss(problem, np.clip(paths, -1.0, 1.0)).mean(axis=1)

    def integrate(ode):
        """dopri5, and where it gives up (a stiff ODE: large step sizes) the implicit Radau method."""
        try:
            return solve(ode, starts, steps, rtol=rtol, atol=1e-14, max_steps=DOPRI5_STEPS).values
        except SolverFailed as first:
            try:
                return solve(ode, starts, steps, method="radau", rtol=rtol, atol=1e-14, max_steps=DOPRI5_STEPS).values
            except SolverFailed as second:
                raise SolverFailed(f"{first}; then {second}") from None

    if "gradient_flow" in which:
        try:
            record("gradient_flow", integrate(DriftODE(h, eta)))
        except SolverFailed as exc:
            failures["gradient_flow"] = str(exc)
    if "population_map" in which:
        integer_steps = steps.astype(np.int64)
        record("population_map", np.array([_population_map(h.breaks, h.coefficients, eta, float(s), integer_steps) for s in starts]).T)
    if "finite_step_ode" in which or "exact_normalization_ode" in which:
        noise = noise_estimate(problem, d, samples=samples, seed=seed, eta=eta)
    noisy = {"finite_step_ode": (noise.N, noise.N_error, 0.5 * eta**2, True), "exact_normalization_ode": (noise.E, noise.E_error, 1.0, False)} if noise else {}
    for name, (term, error, weight, times_m) in noisy.items():
        if name not in which:
            continue
        try:
            runs = {side: integrate(DriftODE(h, eta, term, weight, error, side, times_m)) for side in (-1.0, 0.0, 1.0)}
        except SolverFailed as exc:
            failures[name] = str(exc)
            continue
        record(name, runs[0.0])
        bands[name] = (runs[-1.0].mean(axis=1), runs[1.0].mean(axis=1))
    for name in failures:  # reported, with nan values, so that the simulation beside them is kept
        values[name] = np.full(steps.shape, np.nan)
        loss[name] = np.full(steps.shape, np.nan)
    return Predictions(steps.astype(np.int64), values, bands, noise, starts, loss, failures)
