"""Predictions of the general model's observables on its state (MATH.md §4b).

* ``gradient_flow``: the population gradient-flow ODE on the state (:mod:`.state_flow`, closed form by
  Price's theorem), at time ``eta * step``; the normalized convention and the exact student.
* ``one_step_mean``: the finite-step prediction. The one-step mean ``D(state) = E[state' - state]`` of the
  exact chain — the retraction kept whole, so the normalisation noise of a finite step is in it — is
  estimated by Monte Carlo over the chain's own step (the same kernel as the simulator, from fixed random
  streams: common random numbers make the estimate a smooth function of the state), and
  ``d (Y, C_hat) / d step = D`` is integrated by RK4, with Gamma = I - Y^T Y (U_hat stays orthonormal). Every switch of the model is covered. Its
  uncertainty band comes from independent sample sets (batches): 2 standard errors of the batch means.

Both start from states of the simulation's initial law (its first trajectories' own starting states) and
predict the mean of each observable of :func:`.general.state_observables` over those starts; the spread of
the predictions over the starts is part of the comparison's standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..._validation import InvalidArgument, check_choice, check_integer
from ...numerics import random_streams as streams
from .general import GeneralModel, GeneralSimulation, chain_stepper, state_observables

__all__ = ["GENERAL_PREDICTIONS", "GeneralPredictions", "predict_general", "one_step_mean"]

GENERAL_PREDICTIONS = ("gradient_flow", "one_step_mean")


@dataclass(frozen=True)
class GeneralPredictions:
    """Predicted observables on the simulation's checkpoints.

    Attributes
    ----------
    steps : ndarray of int64
    values : dict
        prediction -> observable -> ndarray (starts, checkpoints): the prediction from each start.
    bands : dict
        prediction -> observable -> ndarray (checkpoints,): half-width of the Monte Carlo band (2 SE) of
        the mean over starts (``one_step_mean`` only).
    failures : dict
        prediction -> the reason it could not be computed.
    settings : dict
        What each prediction used (starts, samples, batches, substeps, seed), saved with reports.
    hitting_steps : dict
        prediction -> ndarray (starts,): the first step where the smallest squared singular value of
        U^T U_hat reaches 1 - eps (the simulation's ``hit``), inf where not by the horizon (gradient flow).
    """

    steps: np.ndarray
    values: dict
    bands: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    hitting_steps: dict = field(default_factory=dict)

    def hitting_summary(self, name: str) -> dict:
        """Median and quartiles over the starts of the prediction's hitting step (None where fewer than that
        fraction of the starts reach it by the horizon) and the fraction that do not."""
        from ...dynamics.trajectories import hitting_summary

        steps = self.hitting_steps[name]
        summary = hitting_summary(np.where(np.isfinite(steps), steps, -1.0), 0)
        return {key: summary[key] for key in ("median", "q25", "q75", "censored_fraction")} | {"starts": int(steps.size)}

    def mean(self, name: str, observable: str) -> np.ndarray:
        """The prediction's mean over its starts, per checkpoint."""
        return self.values[name][observable].mean(axis=0)

    def start_error(self, name: str, observable: str) -> np.ndarray:
        """Standard error of that mean from the spread over starts (0 with one start)."""
        values = self.values[name][observable]
        return values.std(axis=0, ddof=1) / math.sqrt(values.shape[0]) if values.shape[0] > 1 else np.zeros(values.shape[1])


#: intervals of the grid on which the gradient flow's hitting step is located
HITTING_GRID = 2000


def _first_crossing(grid: np.ndarray, values: np.ndarray, level: float) -> np.ndarray:
    """Per row of ``values`` (on ``grid``), the first grid point where it reaches ``level``, linearly
    interpolated from the point before; inf where it never does."""
    out = np.full(values.shape[0], np.inf)
    for j, row in enumerate(values):
        above = np.flatnonzero(row >= level)
        if above.size:
            i = above[0]
            out[j] = grid[0] if i == 0 else grid[i - 1] + (level - row[i - 1]) / (row[i] - row[i - 1]) * (grid[i] - grid[i - 1])
    return out


def _starts(simulation: GeneralSimulation, count: int) -> tuple:
    return simulation.Y[:count, 0].copy(), simulation.Gamma[:count, 0].copy(), simulation.c_hat[:count, 0].copy()


def one_step_mean(model: GeneralModel, d: int, eta: float, Y: np.ndarray, Gamma: np.ndarray, C_hat: np.ndarray, samples: int = 4096, seed: int = 0) -> tuple:
    """Monte Carlo estimate of ``E[state' - state]`` for one step of the exact chain from each state.

    Sample s of every state uses the stream ``(seed, NOISE, s)``: the same variates for every state and
    every call (common random numbers), so the estimate is a smooth function of the state.

    Parameters
    ----------
    model : GeneralModel
    d : int
    eta : float
    Y, Gamma, C_hat : ndarray (n, p, r), (n, r, r), (n, k, r)
        The states.
    samples : int, default 4096
    seed : int, default 0

    Returns
    -------
    tuple of ndarray
        ``(dY, dGamma, dC_hat)``, each with the states' shapes.
    """
    kernel, constants = chain_stepper(model, d, eta)
    count = Y.shape[0]
    items = count * samples
    template = np.empty((samples, 4), dtype=np.uint64)
    for s in range(samples):
        streams.seed_stream(np.uint64(seed), streams.NOISE, s, template[s])
    states = np.tile(template, (count, 1))
    Yn = np.repeat(Y, samples, axis=0)
    Gn = np.repeat(Gamma, samples, axis=0)
    Cn = np.repeat(C_hat, samples, axis=0)
    streams.run_blocks(kernel, items, Yn, Gn, Cn, states, np.full(items, -1, dtype=np.int64), math.inf, False, 0, 1, *constants)
    return tuple(new.reshape(count, samples, *old.shape[1:]).mean(axis=1) - old for new, old in ((Yn, Y), (Gn, Gamma), (Cn, C_hat)))


def _complement(Y: np.ndarray) -> np.ndarray:
    """``Gamma = I - Y^T Y``, the part of U_hat's Gram matrix outside F on the Stiefel manifold (its
    eigenvalues clipped at 0 where an intermediate stage overshoots)."""
    r = Y.shape[-1]
    values, vectors = np.linalg.eigh(np.eye(r) - np.einsum("...ql,...qm->...lm", Y, Y))
    return np.einsum("...lk,...k,...mk->...lm", vectors, np.clip(values, 0.0, None), vectors)


def _one_step_mean_paths(model, d, eta, Y, C_hat, checkpoints, samples, seed, substeps) -> tuple:
    """RK4 on ``d (Y, C_hat) / d step = D(Y, C_hat)`` through the checkpoints, ``substeps`` steps over the
    horizon (at least one per checkpoint interval); returns ``(Y, Gamma, C_hat)`` at the checkpoints
    (axis 1).

    The ODE's state is (Y, C_hat) alone, with Gamma = I - Y^T Y: on the chain's states U_hat^T U_hat = I
    fixes Gamma, and a mean state fed back with another Gamma would be pulled back to the manifold in one
    step (a stiff term that is not part of the dynamics)."""
    horizon = float(checkpoints[-1])
    state = [Y.copy(), C_hat.copy()]
    record = [[part.copy()] for part in state]

    def drift(parts):
        dY, _, dC = one_step_mean(model, d, eta, parts[0], _complement(parts[0]), parts[1], samples=samples, seed=seed)
        return dY, dC

    for begin, end in zip(checkpoints[:-1], checkpoints[1:]):
        count = max(1, int(round(substeps * (end - begin) / horizon)))
        h = (end - begin) / count
        for _ in range(count):
            k1 = drift(state)
            k2 = drift([s + 0.5 * h * k for s, k in zip(state, k1)])
            k3 = drift([s + 0.5 * h * k for s, k in zip(state, k2)])
            k4 = drift([s + h * k for s, k in zip(state, k3)])
            state = [s + h / 6.0 * (a + 2 * b + 2 * c + e) for s, a, b, c, e in zip(state, k1, k2, k3, k4)]
            if not all(np.all(np.isfinite(part)) for part in state):
                raise FloatingPointError(f"the one-step-mean map left the finite numbers before step {end}")
        for stored, part in zip(record, state):
            stored.append(part.copy())
    Y_path, C_path = (np.stack(stored, axis=1) for stored in record)
    return Y_path, _complement(Y_path), C_path


def predict_general(simulation: GeneralSimulation, which=GENERAL_PREDICTIONS, flow_starts: int = 64, map_starts: int = 4, map_samples: int = 16384, map_batches: int = 4, map_substeps: int = 32, noise_seed: int | None = None) -> GeneralPredictions:
    """Predict the observables of ``simulation`` (a :func:`.general.simulate_general` result) at its
    checkpoints, from its own initial states.

    Parameters
    ----------
    simulation : GeneralSimulation
    which : sequence of {'gradient_flow', 'one_step_mean'}
    flow_starts : int, default 64
        Starting states for gradient flow (the simulation's first trajectories).
    map_starts : int, default 4
        Starting states for the one-step-mean map.
    map_samples : int, default 16384
        Monte Carlo samples per evaluation of the one-step mean, split into ``map_batches`` independent
        sets (each integrated on its own; the band is 2 SE of their means).
    map_batches : int, default 4
    map_substeps : int, default 32
        RK4 steps over the horizon (at least one per checkpoint interval).
    noise_seed : int, optional
        Seed of the one-step-mean Monte Carlo (default: the simulation's seed; stream purpose NOISE).

    Returns
    -------
    GeneralPredictions

    Examples
    --------
    >>> import popgrad
    >>> model = popgrad.general_model(popgrad.orthonormal_problem("relu", 3, 1.0, seed=0), train_c_hat=True)
    >>> run = popgrad.simulate_general(model, 100, delta=0.1, checkpoints=[0, 500, 1000], trajectories=16, seed=1)
    >>> predictions = predict_general(run, which=("gradient_flow",), flow_starts=4)
    >>> predictions.values["gradient_flow"]["m"].shape
    (4, 3)
    """
    from .state_flow import predict_state_flow

    which = tuple(check_choice(name, "which", GENERAL_PREDICTIONS) for name in ((which,) if isinstance(which, str) else which))
    if not which:
        raise InvalidArgument(f"which must name at least one of {', '.join(GENERAL_PREDICTIONS)}", "which")
    model = simulation.model
    trajectories = simulation.Y.shape[0]
    flow_starts = min(check_integer(flow_starts, "flow_starts", 1, 10**6), trajectories)
    map_starts = min(check_integer(map_starts, "map_starts", 1, 10**6), trajectories)
    map_batches = check_integer(map_batches, "map_batches", 2, 1024)
    map_samples = check_integer(map_samples, "map_samples", map_batches, 10**9)
    map_substeps = check_integer(map_substeps, "map_substeps", 1, 10**6)
    seed = simulation.seed if noise_seed is None else check_integer(noise_seed, "noise_seed", 0, 2**63 - 1)
    checkpoints = np.asarray(simulation.steps, dtype=np.int64)
    values, bands, failures, settings, hitting = {}, {}, {}, {}, {}
    if "gradient_flow" in which:
        settings["gradient_flow"] = {"starts": flow_starts}
        if model.problem.convention != "normalized" or model.student != "exact":
            failures["gradient_flow"] = "the state gradient flow is implemented for the normalized convention and the exact student"
        else:
            if simulation.hit is None:
                Y, Gamma, C_hat = predict_state_flow(model, *_starts(simulation, flow_starts), simulation.eta, checkpoints)
                values["gradient_flow"] = state_observables(model, Y, Gamma, C_hat)
            else:
                # the flow's own hitting steps: on a grid of HITTING_GRID intervals over the horizon (with the
                # checkpoints), the first crossing of 1 - eps, linearly interpolated
                grid = np.union1d(checkpoints, np.linspace(0.0, float(checkpoints[-1]), HITTING_GRID + 1))
                Y, Gamma, C_hat = predict_state_flow(model, *_starts(simulation, flow_starts), simulation.eta, grid)
                at = np.searchsorted(grid, checkpoints)
                values["gradient_flow"] = state_observables(model, Y[:, at], Gamma[:, at], C_hat[:, at])
                squared = np.linalg.svd(np.einsum("sq,tcqr->tcsr", model.UF, Y), compute_uv=False)[..., -1] ** 2
                hitting["gradient_flow"] = _first_crossing(grid, squared, 1.0 - simulation.hit)
    if "one_step_mean" in which:
        per_batch = map_samples // map_batches
        settings["one_step_mean"] = {"starts": map_starts, "samples": per_batch * map_batches, "batches": map_batches, "substeps": map_substeps, "seed": seed}
        Y0, _, C0 = _starts(simulation, map_starts)
        batches = []
        try:
            for batch in range(map_batches):
                # batch b draws streams (seed', NOISE, s) with seed' = seed + b: disjoint sample sets
                paths = _one_step_mean_paths(model, simulation.d, simulation.eta, Y0, C0, checkpoints, per_batch, seed + batch, map_substeps)
                batches.append(state_observables(model, *paths))
        except FloatingPointError as exc:
            failures["one_step_mean"] = str(exc)
        else:
            values["one_step_mean"] = {name: np.mean([batch[name] for batch in batches], axis=0) for name in batches[0]}
            bands["one_step_mean"] = {name: 2.0 * np.std([batch[name].mean(axis=0) for batch in batches], axis=0, ddof=1) / math.sqrt(map_batches) for name in batches[0]}
    return GeneralPredictions(checkpoints, values, bands, failures, settings, hitting)
