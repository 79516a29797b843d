"""Predictions of the fine-tuning model's observables on its state (MATH.md §4b).

* the state gradient flow: the population gradient-flow ODE on the state (:mod:`.state_flow`, closed form
  by Price's theorem), at time ``eta * step``; the normalized convention and the exact student. It is the
  ``gradient_flow`` prediction of models that do not reduce to the overlap (:mod:`.predictions`).
* ``one_step_mean``: the finite-step prediction, for every model. The one-step mean ``D(state) =
  E[state' - state]`` of the exact chain — the retraction kept whole, so the normalisation noise of a finite
  step is in it — is estimated by Monte Carlo over the chain's own step (the same kernel as the simulator,
  from fixed random streams: common random numbers make the estimate a smooth function of the state), and
  ``d (Y, C_hat) / d step = D`` is integrated by RK4, with Gamma = I - Y^T Y (U_hat stays orthonormal).
  Its uncertainty band comes from independent sample sets (batches): 2 standard errors of the batch means.

Both start from states of the run's initial law (its first trajectories' own starting states, or the
states of their m where the model reduces to the overlap) and predict each observable of
:func:`.observables.state_observables` from each start; the spread over the starts is part of the
comparison's standard error.
"""

from __future__ import annotations

import math

import numpy as np

from ...dynamics.engine import PredictionFailed
from ...numerics import random_streams as streams
from ...numerics.statistics import standard_error
from .family import chain_stepper
from .initial import starting_states
from .model import GeneralModel
from .observables import state_observables

__all__ = ["one_step_mean", "state_flow_prediction", "one_step_mean_prediction"]

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


_TEMPLATES: dict = {}


def _template(seed: int, samples: int) -> np.ndarray:
    """The stream states ``(seed, NOISE, s)`` of samples s < ``samples``, built once per (seed, samples):
    every evaluation of the one-step mean starts from them (common random numbers)."""
    key = (int(seed), int(samples))
    if key not in _TEMPLATES:
        template = np.empty((samples, 4), dtype=np.uint64)
        for s in range(samples):
            streams.seed_stream(np.uint64(seed), streams.NOISE, s, template[s])
        if len(_TEMPLATES) >= 8:
            _TEMPLATES.pop(next(iter(_TEMPLATES)))
        _TEMPLATES[key] = template
    return _TEMPLATES[key]


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
    states = np.tile(_template(seed, samples), (count, 1))
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


def state_flow_prediction(run, flow_starts: int = 64, rtol: float = 1e-10) -> dict:
    """The population gradient flow on the state from the run's first ``flow_starts`` starting states, at
    the checkpoints; with the run's ``hit``, also each start's hitting step: on a grid of HITTING_GRID
    intervals over the horizon (with the checkpoints), the first crossing of 1 - eps by the smallest squared
    singular value of U^T U_hat, linearly interpolated."""
    from ...dynamics.solve import SolverFailed
    from .state_flow import predict_state_flow

    model = run.model
    count = min(int(flow_starts), run.trajectories)
    checkpoints = np.asarray(run.steps, dtype=np.int64)
    starts = starting_states(run, count)
    hitting = None
    grid = checkpoints if run.hit is None else np.union1d(checkpoints, np.linspace(0.0, float(checkpoints[-1]), HITTING_GRID + 1))
    try:
        Y, Gamma, C_hat = predict_state_flow(model, *starts, run.eta, grid, rtol=rtol)
    except SolverFailed as exc:
        raise PredictionFailed(str(exc)) from None
    if run.hit is None:
        values = state_observables(model, Y, Gamma, C_hat)
    else:
        at = np.searchsorted(grid, checkpoints)
        values = state_observables(model, Y[:, at], Gamma[:, at], C_hat[:, at])
        squared = np.linalg.svd(np.einsum("sq,tcqr->tcsr", model.UF, Y), compute_uv=False)[..., -1] ** 2
        hitting = _first_crossing(grid, squared, 1.0 - run.hit)
    return {"values": values, "hitting_steps": hitting, "settings": {"starts": count, "rtol": rtol}}


def one_step_mean_prediction(run, map_starts: int = 4, noise_samples: int = 16384, map_batches: int = 4, map_substeps: int = 32, noise_seed: int | None = None) -> dict:
    """The one-step-mean map from the run's first ``map_starts`` starting states: ``map_batches``
    independent sample sets of ``noise_samples / map_batches`` samples each (streams (seed + b, NOISE, s)),
    each integrated on its own; the band is 2 standard errors of their means."""
    model = run.model
    count = min(int(map_starts), run.trajectories)
    seed = run.seed if noise_seed is None else noise_seed
    per_batch = noise_samples // map_batches
    checkpoints = np.asarray(run.steps, dtype=np.int64)
    Y0, _, C0 = starting_states(run, count)
    batches = []
    try:
        for batch in range(map_batches):
            paths = _one_step_mean_paths(model, run.d, run.eta, Y0, C0, checkpoints, per_batch, seed + batch, map_substeps)
            batches.append(state_observables(model, *paths))
    except FloatingPointError as exc:
        raise PredictionFailed(str(exc)) from None
    values = {name: np.mean([batch[name] for batch in batches], axis=0) for name in batches[0]}
    bands = {}
    for name in batches[0]:
        mean = values[name].mean(axis=0)
        half = 2.0 * standard_error([batch[name].mean(axis=0) for batch in batches])
        bands[name] = (mean - half, mean + half)
    return {"values": values, "bands": bands, "settings": {"starts": count, "samples": per_batch * map_batches, "batches": map_batches, "substeps": map_substeps, "seed": seed}}
