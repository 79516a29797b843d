"""The committee machine's part of the model protocol (:mod:`popgrad.dynamics.protocol`): its simulators.

* ``chain`` — the exact state chain on (Y, Gamma, a) (:mod:`.chain`, MATH.md §8): cost independent of d.
* ``full`` — online SGD in dimension d (:mod:`.sgd`): the teacher's explicit vectors, or L on a random
  p-dimensional subspace (stream (seed, GEOMETRY)), the students from the model's initial rule.

Both record the overlaps (Q, R, a) at each checkpoint (the state reduces to them: the law of the future
depends on the past only through them), and the observables of :mod:`.observables` are computed from them.
Trajectory j draws from the streams (seed, TRAJECTORIES, first_trajectory + j) (its start from (seed,
INITIAL, first_trajectory + j)), so results do not depend on threads or batching.

Hitting times (``hit``): the first step where ``min_i max_n R_in^2 / (Q_ii T_nn) >= 1 - hit`` — every student
neuron within angle arccos(sqrt(1 - hit)) of some teacher neuron (K = M = 1 on the sphere: m^2 >= 1 - hit).
``m0`` does not apply.

A fine-tuning student (``V = W0 + B Theta``: lora, full) runs the chain on (Y, Gamma, B, a) of Theta
(:func:`.chain.linear_chain_kernel`) or full-d SGD with Theta explicit (:func:`.sgd.linear_sgd_kernel`); both
record V's overlaps Q, R (from the state: ``V_F = L0 + B Y^T``, ``Q = V_F V_F^T + B Gamma B^T``, ``R = V_F
L^T``), a, and B where it is trained.
"""

from __future__ import annotations

import numpy as np

from ..._validation import InvalidArgument, check_memory
from ...dynamics.engine import Stepper
from ...dynamics.protocol import ModelFamily, register_family
from ...numerics import random_streams as streams
from .chain import chain_constants, linear_chain_constants
from .initial import initial_states, initial_vectors, linear_geometry, linear_initial_states, linear_initial_vectors, teacher_geometry
from .observables import LABELS, committee_observables, worst_cosine
from .sgd import linear_sgd_constants, sgd_constants
from .spec import CommitteeModel, committee_model_from_dict

__all__ = ["METHODS", "committee_stepper"]

METHODS = ("chain", "full")


def committee_stepper(model: CommitteeModel, d: int, eta: float, *, method: str, trajectories: int, seed: int, first_trajectory: int, m0, level: float, stop_when_hit: bool, fast_path: bool = True) -> Stepper:
    """The protocol's ``stepper`` for the committee machine: the exact chain or full-d SGD.

    Parameters
    ----------
    model : CommitteeModel
    d : int
    eta : float
    method : {'chain', 'full'}
    trajectories, seed, first_trajectory : int
    m0 : None
        Refused otherwise.
    level : float
        The hitting level (inf: none).
    stop_when_hit : bool
    fast_path : bool
        No effect (the committee machine has one route per method).

    Returns
    -------
    Stepper

    Examples
    --------
    >>> import popgrad
    >>> from popgrad.models.committee.spec import committee_model
    >>> model = committee_model("erf(z/sqrt(2))", width=2, Q0=[[0.2, 0], [0, 0.2]], R0=[[0.01, 0], [0, 0.01]])
    >>> run = popgrad.simulate(model, d=100, delta=0.5, checkpoints=[0, 100, 1000], trajectories=4)
    >>> run.observables["Q"].shape, run.observables["R_aligned"].shape
    ((4, 3, 2, 2), (4, 3, 2))
    """
    if m0 is not None:
        raise InvalidArgument("m0 does not apply to committee models (give the initial state by the model's overlaps or student.init)", "m0")
    if fast_path and model.reduces_to_glm and method == "chain":
        return _glm_stepper(model, d, eta, method=method, trajectories=trajectories, seed=seed, first_trajectory=first_trajectory, level=level, stop_when_hit=stop_when_hit)
    K, M, p = model.K, model.M, model.p
    states = np.empty((trajectories, 4), dtype=np.uint64)
    for j in range(trajectories):
        streams.seed_stream(np.uint64(seed), streams.TRAJECTORIES, first_trajectory + j, states[j])
    hits = np.full(trajectories, -1, dtype=np.int64)
    if model.linear:
        return _linear_stepper(model, d, eta, method, trajectories, seed, first_trajectory, level, stop_when_hit, states, hits)
    if method == "chain":
        Y, Gam, A = initial_states(model, d, trajectories, seed, first_trajectory)
        kernel, constants = chain_constants(model, d, eta)
        L = model.L

        def record():
            Q = np.einsum("tpk,tpl->tkl", Y, Y) + Gam
            R = np.einsum("tpk,mp->tkm", Y, L)
            return {"Q": 0.5 * (Q + np.swapaxes(Q, 1, 2)), "R": R, "a": A.copy()}

        def run(done, count):
            streams.run_blocks(kernel, trajectories, Y, Gam, A, states, hits, level, stop_when_hit, done, count, *constants)

        moving = (Y, Gam, A)
        work, path = float((p + K) * (K + M) + 2 * K * K * (p + K) + 40 * (K + M)), "state chain"
    else:
        check_memory(8.0 * trajectories * K * d + 8.0 * (M + p) * d, f"full-d SGD with {trajectories} trajectories of width {K} in dimension d = {d}", "trajectories", " (method 'chain' needs no memory in d)")
        W, QF = teacher_geometry(model, d, seed)
        V, A = initial_vectors(model, W, QF, trajectories, seed, first_trajectory)
        kernel, constants = sgd_constants(model, W, eta)

        def record():
            return {"Q": np.einsum("tkq,tlq->tkl", V, V), "R": np.einsum("tkq,mq->tkm", V, W), "a": A.copy()}

        def run(done, count):
            streams.run_blocks(kernel, trajectories, V, A, states, hits, level, stop_when_hit, done, count, *constants)

        moving = (V, A)
        work, path = float((2 * K + M + 2) * d), "SGD in dimension d" + (" (the model's teacher vectors)" if model.teacher_vectors is not None else " (teacher on a random subspace)")

    def advance(done, count):
        if not (stop_when_hit and np.all(hits >= 0)):
            run(done, count)
        # what the driver checks for divergence: every entry of every trajectory's state (no copy)
        return sum(np.sum(part, axis=tuple(range(1, part.ndim))) for part in moving)

    if level < np.inf:
        first = record()
        cosine = worst_cosine(first["Q"], first["R"], model.T)
        hits[cosine * cosine >= level] = 0

    def finish(records):
        return committee_observables(model, records["Q"], records["R"], records["a"]), {}

    settings = {"path": path, "eta_a": eta * model.second_layer_ratio if model.train_second_layer else 0.0}
    return Stepper(advance, record, finish, hits, work, f"committee SGD ({method}, {trajectories} traj.)", settings)


def _linear_stepper(model: CommitteeModel, d: int, eta: float, method: str, trajectories: int, seed: int, first_trajectory: int, level: float, stop_when_hit: bool, states: np.ndarray, hits: np.ndarray) -> Stepper:
    """The stepper of a fine-tuning student (V = W0 + B Theta): the chain on (Y, Gamma, B, a) or full-d SGD
    with Theta explicit."""
    K, M, p, r = model.K, model.M, model.p, model.rank
    trained_b = model.train_coefficients
    if method == "chain":
        Y, Gam, Bc, A = linear_initial_states(model, d, trajectories, seed, first_trajectory)
        kernel, constants = linear_chain_constants(model, d, eta)
        L, L0 = model.L, model.L0

        def record():
            VF = L0[None] + np.einsum("tik,tpk->tip", Bc, Y)  # (n, K, p)
            Q = np.einsum("tip,tlp->til", VF, VF) + np.einsum("tik,tko,tlo->til", Bc, Gam, Bc)
            out = {"Q": 0.5 * (Q + np.swapaxes(Q, 1, 2)), "R": np.einsum("tip,mp->tim", VF, L), "a": A.copy()}
            if trained_b:
                out["B"] = Bc.copy()
            return out

        def run(done, count):
            streams.run_blocks(kernel, trajectories, Y, Gam, Bc, A, states, hits, level, stop_when_hit, done, count, *constants)

        moving = (Y, Gam, Bc, A)
        work = float((p + r) * (r + M + K) + K * (p + 2 * r) + 2 * r * r * (p + r) + 40 * (K + M))
        path = f"state chain of V = W0 + B Theta ({model.kind}, rank {r})"
    else:
        check_memory(8.0 * trajectories * r * d + 8.0 * (M + K + p) * d, f"full-d SGD with {trajectories} trajectories of rank {r} in dimension d = {d}", "trajectories", " (method 'chain' needs no memory in d)")
        W, W0, _ = linear_geometry(model, d, seed)
        Theta, Bc, A = linear_initial_vectors(model, W, W0, _, trajectories, seed, first_trajectory)
        kernel, constants = linear_sgd_constants(model, W, W0, eta)

        def record():
            V = W0[None] + np.einsum("tik,tkq->tiq", Bc, Theta)
            out = {"Q": np.einsum("tkq,tlq->tkl", V, V), "R": np.einsum("tkq,mq->tkm", V, W), "a": A.copy()}
            if trained_b:
                out["B"] = Bc.copy()
            return out

        def run(done, count):
            streams.run_blocks(kernel, trajectories, Theta, Bc, A, states, hits, level, stop_when_hit, done, count, *constants)

        moving = (Theta, Bc, A)
        work = float((2 * r + M + 2 * K) * d)
        path = f"SGD in dimension d of V = W0 + B Theta ({model.kind}, rank {r})" + (" (the model's teacher and base vectors)" if model.teacher_vectors is not None else " (teacher and base on a random subspace)")

    def advance(done, count):
        if not (stop_when_hit and np.all(hits >= 0)):
            run(done, count)
        return sum(np.sum(part, axis=tuple(range(1, part.ndim))) for part in moving)

    if level < np.inf:
        first = record()
        cosine = worst_cosine(first["Q"], first["R"], model.T)
        hits[cosine * cosine >= level] = 0

    def finish(records):
        return committee_observables(model, records["Q"], records["R"], records["a"], records.get("B")), {}

    settings = {"path": path, "eta_a": eta * model.second_layer_ratio if model.train_second_layer else 0.0, "eta_B": eta * model.coefficient_ratio if trained_b else 0.0}
    return Stepper(advance, record, finish, hits, work, f"committee SGD ({model.kind}, {method}, {trajectories} traj.)", settings)


def _glm_stepper(model: CommitteeModel, d: int, eta: float, *, method: str, trajectories: int, seed: int, first_trajectory: int, level: float, stop_when_hit: bool) -> Stepper:
    """The fast path of a chain run of a model that reduces to the fine-tuning family's GLM
    (:attr:`CommitteeModel.reduces_to_glm`): that family's scalar overlap chain, reached through the model
    protocol, its overlap m recorded as the committee's R (Q = [[1]], a = [[1]]). Full-d SGD runs the
    committee's own kernel."""
    from ...dynamics.protocol import family_named, model_from_dict

    finetuning = family_named("finetuning")
    glm = model_from_dict({"model": "finetuning", "activation": model.student_activation.name, "lam": [1.0], "c": [1.0], "c_hat": [1.0], "xi": 1.0, "convention": "normalized", "gram": [[0.0]]})
    inner = finetuning.stepper(glm, d, eta, method="chain", trajectories=trajectories, seed=seed, first_trajectory=first_trajectory, m0=None, level=level, stop_when_hit=stop_when_hit, fast_path=True)

    def finish(records):
        observables, _ = inner.finish(records)
        m = observables["m"]
        shape = m.shape + (1, 1)
        ones = np.ones(shape)
        return committee_observables(model, ones, m.reshape(shape), np.ones(m.shape + (1,))), {}

    settings = dict(inner.settings) | {"path": f"the fine-tuning family's GLM (W = 0, k = 1): {inner.settings.get('path', 'scalar overlap chain')}", "eta_a": 0.0}
    return Stepper(inner.advance, inner.record, finish, inner.hits, inner.work, f"committee = GLM ({method}, {trajectories} traj.)", settings)


def _record_bytes(model: CommitteeModel, fast_path: bool) -> int:
    """A trajectory's record per checkpoint: Q, R, a and the observables derived from them."""
    K, M = model.K, model.M
    coefficients = K * model.rank if model.train_coefficients else 0
    return 8 * (K * K + K * M + K + 4 + (K + 2 if K == M else 0) + coefficients)


FAMILY = register_family(ModelFamily("committee", CommitteeModel, committee_model_from_dict, committee_stepper, METHODS, LABELS, _record_bytes))

from . import predictions  # noqa: E402,F401  (registers the committee predictions)
