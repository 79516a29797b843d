"""The committee machine's one-step mean at finite d: the exact mean drift of the overlaps (Q, R, a) per SGD
step, iterated (MATH.md §8).

One online-SGD step of the unconstrained student (``v_i' = m v_i + eta c Delta_i x``, ``m = 1 - eta wd``,
``Delta_i = s a_i sigma'(lambda_i)(y - f)``, the second layer updated on the same sample) moves the overlaps by

``R' - R = (m - 1) R + eta c Delta nu^T``,
``Q' - Q = (m^2 - 1) Q + m eta c (Delta lambda^T + lambda Delta^T) + eta^2 c^2 Delta Delta^T |x|^2``,
``a' - a = eta_a (c s sigma(lambda)(y - f) - wd_a a)``.

At any d, given the state, (lambda, nu) ~ N(0, C) exactly (C = [[Q, R], [R^T, T]]), so the means of the first
moments are the ODE's expectations (:func:`popgrad.models.committee.population.ode_expectations`). The only
finite-d part is ``E[F(u) |x|^2]`` with ``F = Delta_i Delta_k``: Stein's lemma in x gives
``E[F |x|^2] = d E[F] + E[tr(C grad^2 F)]``, and the second term equals ``E[F(C^(1/2) g)(|g|^2 - (K + M))]``,
g ~ N(0, I_(K+M)) (the same lemma in g). That O(1) term is estimated by Monte Carlo from fixed streams
(common random numbers: the estimate is smooth in the state); it enters the drift at eta^2, so its Monte
Carlo error is O(1/d^2) per step. With the noise, ``F = s^2 a_i a_k sigma'_i sigma'_k ((f* - f)^2 + tau^2)``.

The map ``D(state) = E[state' - state]`` is iterated step by step (``state_(t+1) = state_t + D(state_t)``; for
horizons beyond :data:`MAP_STEP_LIMIT` steps, ``d state / d step = D`` by RK4 with ``map_substeps``
intervals). Where D is affine in the state (linear activations, frozen second layer) the iteration is the
chain's exact mean; otherwise it neglects the O(1/d) bias of the state's fluctuations through D's curvature,
which the d → ∞ ODE neglects too, beside its own O(1/d) errors (d E[F] + E[tr(C grad^2 F)] → d E[F], and the
steps' discreteness).
"""

from __future__ import annotations

import numpy as np

from ...dynamics.engine import PredictionFailed
from ...numerics.statistics import standard_error
from .observables import committee_observables
from .population import _moments_at, committee_arrays, pack_parameters

__all__ = ["one_step_mean", "one_step_mean_prediction", "MAP_STEP_LIMIT"]

#: horizons (in steps) up to which the map is iterated step by step; beyond, RK4 in the step count
MAP_STEP_LIMIT = 20_000


def _root(C: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(C)
    return np.einsum("...ik,...k,...jk->...ij", vectors, np.sqrt(np.clip(values, 0.0, None)), vectors)


def one_step_mean(model, d: int, eta: float, Q, R, a, g: np.ndarray, parameters: np.ndarray | None = None) -> tuple:
    """``E[state' - state]`` for one SGD step from each state (Q, R, a), exact but for one Monte Carlo term.

    Parameters
    ----------
    model : CommitteeModel
        Unconstrained.
    d : int
    eta : float
        Step on the vectors (the second layer's is ``eta * model.second_layer_ratio``).
    Q, R, a : ndarray (n, K, K), (n, K, M), (n, K)
    g : ndarray (n, samples, K + M) or (samples, K + M)
        Standard Gaussian variates for the O(1) term ``E[tr(C grad^2 Delta_i Delta_k)]``.
    parameters : ndarray, optional
        :func:`~popgrad.models.committee.population.pack_parameters` of the model (computed when omitted).

    Returns
    -------
    tuple of ndarray
        ``(dQ, dR, da)`` with the states' shapes.

    Examples
    --------
    >>> import numpy as np
    >>> from popgrad.models.committee.spec import committee_model
    >>> model = committee_model("linear", width=1, teacher_width=1)
    >>> g = np.random.default_rng(0).normal(size=(4096, 2))
    >>> dQ, dR, da = one_step_mean(model, 10, 0.1, np.eye(1)[None], np.zeros((1, 1, 1)), np.ones((1, 1)), g)
    >>> round(float(dQ[0, 0, 0]), 2)  # 2 eta (R - Q) + eta^2 (d + 2)(Q - 2R + T) = 0.04 for a linear unit
    0.04
    """
    committee = committee_arrays(model)
    Q, R, a = (np.asarray(x, dtype=np.float64) for x in (Q, R, a))
    n, K, M = Q.shape[0], Q.shape[-1], R.shape[-1]
    if parameters is None:
        parameters = pack_parameters(committee, K)
    nu, dd, se = _moments_at(parameters, Q, R, a, K, M)
    c, s, s_star, tau = committee.loss_factor, committee.student_scale, committee.teacher_scale, committee.noise
    # the O(1) term E[F (|g|^2 - K - M)] at u = C^(1/2) g
    T = np.broadcast_to(committee.T, (n, M, M))
    C = np.concatenate([np.concatenate([Q, R], -1), np.concatenate([np.swapaxes(R, -1, -2), T], -1)], -2)
    g = np.broadcast_to(g, (n,) + g.shape[-2:])
    u = np.einsum("nij,nsj->nsi", _root(C), g)
    lam, nuv = u[..., :K], u[..., K:]
    error = s_star * np.einsum("nsm,m->ns", committee.teacher_activation(nuv), committee.teacher_second_layer) - s * np.einsum("nsk,nk->ns", committee.student_activation(lam), a)
    slopes = s * a[:, None, :] * committee.student_activation.prime(lam)
    weight = (error**2 + tau**2) * (np.einsum("nsj,nsj->ns", g, g) - (K + M))
    curvature = np.einsum("nsi,nsk,ns->nik", slopes, slopes, weight) / g.shape[-2]
    shrink = 1.0 - eta * committee.weight_decay
    first = nu[..., :K]
    dQ = (shrink**2 - 1.0) * Q + shrink * eta * c * (first + np.swapaxes(first, -1, -2)) + eta**2 * c**2 * (d * dd + curvature)
    dR = (shrink - 1.0) * R + eta * c * nu[..., K:]
    if committee.train_second_layer:
        da = eta * model.second_layer_ratio * (c * s * se - committee.second_layer_weight_decay * a)
    else:
        da = np.zeros_like(a)
    return dQ, dR, da


def _paths(model, d, eta, Q, R, a, g, checkpoints, substeps) -> tuple:
    parameters = pack_parameters(committee_arrays(model), Q.shape[-1])
    state = [Q.copy(), R.copy(), a.copy()]
    record = [[part.copy()] for part in state]

    def drift(parts):
        return one_step_mean(model, d, eta, *parts, g, parameters)

    stepwise = checkpoints[-1] <= MAP_STEP_LIMIT
    for begin, end in zip(checkpoints[:-1], checkpoints[1:]):
        if stepwise:
            for _ in range(int(end - begin)):
                state = [s + k for s, k in zip(state, drift(state))]
        else:
            count = max(1, int(round(substeps * (end - begin) / float(checkpoints[-1]))))
            h = (end - begin) / count
            for _ in range(count):
                k1 = drift(state)
                k2 = drift([s + 0.5 * h * k for s, k in zip(state, k1)])
                k3 = drift([s + 0.5 * h * k for s, k in zip(state, k2)])
                k4 = drift([s + h * k for s, k in zip(state, k3)])
                state = [s + h / 6.0 * (p + 2 * q + 2 * r + w) for s, p, q, r, w in zip(state, k1, k2, k3, k4)]
        if not all(np.all(np.isfinite(part)) for part in state):
            raise PredictionFailed(f"the one-step-mean map left the finite numbers before step {end}")
        for stored, part in zip(record, state):
            stored.append(part.copy())
    return tuple(np.stack(stored, axis=1) for stored in record)


def one_step_mean_prediction(run, map_starts: int = 4, noise_samples: int = 16384, map_batches: int = 4, map_substeps: int = 64, noise_seed: int | None = None) -> dict:
    """The one-step-mean map from the run's first ``map_starts`` starting overlaps (one where they all
    coincide) on the run's checkpoints: ``map_batches`` independent sets of ``noise_samples / map_batches``
    Gaussian variates (numpy ``default_rng(seed + batch)``), each iterated on its own; the band is 2
    standard errors of the batch means (it carries the Monte Carlo error of the O(1) curvature term).

    Returns
    -------
    dict
        ``values`` (observable -> (starts, checkpoints, ...)), ``bands``, ``settings``, ``exact_mean``.
    """
    from .predictions import _starts

    model = run.model
    Q0, R0, a0, exact = _starts(run, min(int(map_starts), run.trajectories))
    checkpoints = np.asarray(run.steps, dtype=np.int64)
    if checkpoints[0] != 0:
        checkpoints = np.concatenate([[0], checkpoints])
    seed = run.seed if noise_seed is None else int(noise_seed)
    per_batch = max(1, noise_samples // map_batches)
    K, M = model.K, model.M
    batches = []
    for batch in range(map_batches):
        g = np.random.default_rng(seed + batch).normal(size=(per_batch, K + M))
        Q, R, a = _paths(model, run.d, run.eta, Q0, R0, a0, g, checkpoints, map_substeps)
        if len(checkpoints) != len(run.steps):
            Q, R, a = Q[:, 1:], R[:, 1:], a[:, 1:]
        batches.append(committee_observables(model, Q, R, a))
    values = {name: np.mean([batch[name] for batch in batches], axis=0) for name in batches[0]}
    bands = {}
    for name in batches[0]:
        mean = values[name].mean(axis=0)
        half = 2.0 * standard_error([batch[name].mean(axis=0) for batch in batches])
        bands[name] = (mean - half, mean + half)
    settings = {"starts": int(Q0.shape[0]), "samples": per_batch * map_batches, "batches": map_batches, "seed": seed, "iteration": "step by step" if checkpoints[-1] <= MAP_STEP_LIMIT else f"RK4, {map_substeps} intervals"}
    return {"values": values, "bands": bands, "settings": settings, "exact_mean": exact}
