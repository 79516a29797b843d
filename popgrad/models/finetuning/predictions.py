"""The fine-tuning model's predictions, registered with the model protocol (:mod:`popgrad.dynamics.protocol`)
so that :func:`popgrad.dynamics.engine.predict` runs those that serve a run's model (MATH.md §4, §4b).

Where the model reduces to the overlap, deterministic predictions of m_t (and Phi(m_t)) in units of SGD
steps:

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
law of m_0 (m_0 = 2 B - 1, B ~ Beta((n-1)/2, (n-1)/2)) at equal-probability quantiles (a quadrature of the
initial law: no standard error over starts).

For every other model ``gradient_flow`` is the population gradient flow on the state; ``one_step_mean``
(the exact chain's one-step mean, integrated) serves every model (:mod:`.state_predictions`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy import special

from ..._validation import InvalidArgument, check_integer, check_real
from ...dynamics.engine import PredictionFailed
from ...dynamics.protocol import Predictor, register_predictor
from ...dynamics.solve import SolverFailed, solve
from ...numerics.chebyshev import chebyshev_evaluate_scalar
from .noise import noise_estimate
from .odes import DriftODE
from .population import drift_interpolant, population_loss
from .state_predictions import one_step_mean_prediction, state_flow_prediction

__all__ = ["PREDICTIONS", "initial_points", "predicted_hitting_steps"]

#: the fine-tuning model's predictions, in the order they are reported
PREDICTIONS = ("gradient_flow", "population_map", "finite_step_ode", "exact_normalization_ode", "one_step_mean")


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


def predicted_hitting_steps(problem, d: int, eta: float, eps: float, horizon: int, starts=None) -> np.ndarray:
    """Gradient flow's hitting step ``dm/dstep = eta h(m) (1 - m^2)`` from each start (default: the
    equal-probability quantiles of the random m_0): the first step with m^2 >= 1 - eps (inf if not by
    ``horizon``).

    Parameters
    ----------
    problem : FineTuningProblem
    d : int
    eta : float
    eps : float
    horizon : int
    starts : array, optional

    Returns
    -------
    ndarray
    """
    ode = DriftODE(drift_interpolant(problem).interpolant, a=eta)
    level = math.sqrt(1.0 - eps)
    out = []
    for m0 in initial_points(d - problem.rank, None) if starts is None else starts:
        if m0 * m0 >= 1.0 - eps:
            out.append(0.0)
            continue
        times = []
        for target in (level, -level):
            solution = solve(ode, float(m0), [float(horizon)], target=target, stop_at_event=True)
            times.append(solution.event_time)
        finite = [t for t in times if math.isfinite(t)]
        out.append(min(finite) if finite else math.inf)
    return np.array(out)


def _integrate(ode, starts, steps, rtol):
    """dopri5, and where it gives up (a stiff ODE: large step sizes) the implicit Radau method."""
    try:
        return solve(ode, starts, steps, rtol=rtol, atol=1e-14, max_steps=DOPRI5_STEPS).values
    except SolverFailed as first:
        try:
            return solve(ode, starts, steps, method="radau", rtol=rtol, atol=1e-14, max_steps=DOPRI5_STEPS).values
        except SolverFailed as second:
            raise PredictionFailed(f"{first}; then {second}") from None


def _setting(run) -> tuple:
    """``(problem, starts, steps)`` of a reduced run: its problem, the starting overlaps (quantiles of m_0's
    law, or [m0]) and the checkpoints as floats."""
    problem = run.model.reduced_problem()
    return problem, initial_points(run.d - problem.rank, run.m0), np.asarray(run.steps, dtype=np.float64)


def _overlap_values(problem, paths) -> dict:
    """paths[checkpoint, start] -> observable -> (starts, checkpoints)."""
    paths = np.asarray(paths).T
    return {"m": paths, "population_loss": np.asarray(population_loss(problem, np.clip(paths, -1.0, 1.0)))}


def _gradient_flow(run, flow_starts: int = 64, rtol: float = 1e-10) -> dict:
    if not run.model.reduces_to_overlap:
        return state_flow_prediction(run, flow_starts, rtol)
    problem, starts, steps = _setting(run)
    paths = _integrate(DriftODE(drift_interpolant(problem).interpolant, run.eta), starts, steps, rtol)
    hitting = None if run.hit is None else predicted_hitting_steps(problem, run.d, run.eta, run.hit, int(run.steps[-1]), starts)
    return {"values": _overlap_values(problem, paths), "hitting_steps": hitting, "exact_mean": True, "settings": {"starts": int(starts.size), "rtol": rtol}}


def _population_map_prediction(run) -> dict:
    problem, starts, steps = _setting(run)
    h = drift_interpolant(problem).interpolant
    paths = np.array([_population_map(h.breaks, h.coefficients, run.eta, float(s), steps.astype(np.int64)) for s in starts]).T
    return {"values": _overlap_values(problem, paths), "exact_mean": True, "settings": {"starts": int(starts.size)}}


_NOISE: dict = {}


def _noise(problem, d: int, samples: int, seed: int, eta: float):
    """The noise terms, estimated once for the finite-step and the exact-normalisation ODE together."""
    key = (problem, int(d), int(samples), int(seed), float(eta))
    if key not in _NOISE:
        if len(_NOISE) >= 4:
            _NOISE.pop(next(iter(_NOISE)))
        _NOISE[key] = noise_estimate(problem, d, samples=samples, seed=seed, eta=eta)
    return _NOISE[key]


def _noisy(name: str):
    def compute(run, noise_samples: int = 200_000, noise_seed: int | None = None, rtol: float = 1e-10) -> dict:
        problem, starts, steps = _setting(run)
        seed = run.seed if noise_seed is None else noise_seed
        noise = _noise(problem, run.d, noise_samples, seed, run.eta)
        term, error, weight, times_m = (noise.N, noise.N_error, 0.5 * run.eta**2, True) if name == "finite_step_ode" else (noise.E, noise.E_error, 1.0, False)
        h = drift_interpolant(problem).interpolant
        runs = {side: _integrate(DriftODE(h, run.eta, term, weight, error, side, times_m), starts, steps, rtol) for side in (-1.0, 0.0, 1.0)}
        values = _overlap_values(problem, runs[0.0])
        sides = [_overlap_values(problem, runs[side]) for side in (-1.0, 1.0)]
        bands = {}
        for observable in values:
            lower, upper = (side[observable].mean(axis=0) for side in sides)
            bands[observable] = (np.minimum(lower, upper), np.maximum(lower, upper))
        return {"values": values, "bands": bands, "exact_mean": True, "settings": {"starts": int(starts.size), "noise_samples": noise.samples, "noise_seed": noise.seed, "rtol": rtol}}

    return compute


def _check_options(model, options: dict) -> None:
    """The ranges of the fine-tuning predictions' options (each named as the caller wrote it)."""
    ranges = {"flow_starts": (1, 10**6), "map_starts": (1, 10**6), "map_batches": (2, 1024), "map_substeps": (1, 10**6), "noise_samples": (64, 10**10)}
    for key, (low, high) in ranges.items():
        if key in options:
            check_integer(options[key], key, low, high)
    if "map_batches" in options and options["noise_samples"] < options["map_batches"]:
        raise InvalidArgument(f"noise_samples must be at least map_batches = {options['map_batches']} (one sample per batch), got {options['noise_samples']}", "noise_samples")
    if options.get("noise_seed") is not None:
        check_integer(options["noise_seed"], "noise_seed", 0, 2**63 - 1)
    if "rtol" in options:
        check_real(options["rtol"], "rtol", 0.0, 1e-2, low_open=True)


def _reduced_only(model):
    return None if model.reduces_to_overlap else "it predicts the overlap m alone; this model's state does not reduce to m (rank 1, alpha 0, c_hat frozen, u_hat in span(W)^perp, exact student, the problem's own output scale)"


def _state_flow_serves(model):
    if model.reduces_to_overlap or (model.problem.convention == "normalized" and model.student == "exact"):
        return None
    return "the state gradient flow is implemented for the normalized convention and the exact student"


register_predictor(Predictor("gradient_flow", "finetuning", _state_flow_serves, _gradient_flow, {"flow_starts": 64, "rtol": 1e-10}, description="population gradient flow: the h(m) ODE dm/dt = eta h(m)(1 - m^2) where the model reduces to the overlap (from 33 quantiles of m_0: flow_starts applies to the state flow), else the flow on the state", check=_check_options))
register_predictor(Predictor("population_map", "finetuning", _reduced_only, _population_map_prediction, {}, description="the exact population step with normalisation, iterated step by step", check=_check_options))
register_predictor(Predictor("finite_step_ode", "finetuning", _reduced_only, _noisy("finite_step_ode"), {"noise_samples": 200_000, "noise_seed": None, "rtol": 1e-10}, description="the h(m) ODE with the second-order normalisation term (Monte Carlo noise term, band)", check=_check_options))
register_predictor(Predictor("exact_normalization_ode", "finetuning", _reduced_only, _noisy("exact_normalization_ode"), {"noise_samples": 200_000, "noise_seed": None, "rtol": 1e-10}, description="the h(m) ODE with the exact chain's normalisation term kept whole (Monte Carlo, band)", check=_check_options))
register_predictor(Predictor("one_step_mean", "finetuning", lambda model: None, one_step_mean_prediction, {"map_starts": 4, "noise_samples": 16384, "map_batches": 4, "map_substeps": 32, "noise_seed": None}, default=lambda model: not model.reduces_to_overlap, description="the exact chain's one-step mean from the run's starting states, integrated (Monte Carlo, band)", check=_check_options))
