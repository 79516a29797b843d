"""The fine-tuning model's part of the model protocol (:mod:`popgrad.dynamics.protocol`): its simulators.

One model, one engine (:func:`popgrad.dynamics.engine.simulate`). Where the model reduces to the overlap
(:attr:`~.model.GeneralModel.reduces_to_overlap`), its fast paths run:

* ``chain`` — the exact scalar overlap chain (:mod:`.chain`): the law of m_(t+1) given the past depends
  only on m_t; one step draws ``a ~ N(0, G)``, ``g_hat, q ~ N(0, 1)`` and ``chi ~ chi^2_(n-2)``, n = d -
  rank W. Cost independent of d.
* ``fast`` — full-d SGD with span(W) rotated onto the first coordinates and u = e_(rank W + 1) (:mod:`.sgd`).
* ``full`` — full-d SGD with a random embedding of W (or the problem's explicit W).

Otherwise the state chain on (Y, Gamma, C_hat) (:mod:`.overlaps`, MATH.md §4b) and full-d SGD of the
general model (:func:`.sgd.general_sgd_kernel`) run, ``fast`` with F = span(W) + span(U) on the first p
axes and ``full`` in the model's own (or a randomly embedded) geometry. The reduced paths give, bit for
bit, the numbers a problem gave on its own.
"""

from __future__ import annotations

import math

import numpy as np

from ..._validation import check_memory
from ...dynamics.engine import Stepper
from ...dynamics.protocol import ModelFamily, register_family
from ...numerics import random_streams as streams
from ...numerics.linalg import gram_factor
from .chain import chain_kernel, initial_overlaps
from .geometry import embedding
from .gradients import model_arrays
from .initial import check_m0, embedded_geometry, initial_frames, initial_states
from .model import GeneralModel, general_model, general_model_from_dict
from .observables import LABELS, overlap_observables, state_observables
from .overlaps import general_chain_kernel
from .sgd import general_sgd_stepper, initial_directions, sgd_kernel
from .spec import FineTuningProblem

__all__ = ["METHODS", "chain_stepper", "finetuning_stepper"]

METHODS = ("chain", "fast", "full")


def chain_stepper(model: GeneralModel, d: int, eta: float) -> tuple:
    """``(kernel, constants)``: the state chain's kernel for ``model`` and the arguments that follow the
    per-item ones, so that ``streams.run_blocks(kernel, n, Y, Gamma, C_hat, states, hits, level,
    stop_at_hit, offset, steps, *constants)`` advances n states (the simulator and the one-step-mean
    prediction share it).

    Parameters
    ----------
    model : GeneralModel
    d : int
    eta : float

    Returns
    -------
    tuple
    """
    from ...gaussian.families.base import CODE_POLYNOMIAL

    problem = model.problem
    k, r, p, rank_w = problem.k, model.rank, model.p, model.L.shape[1]
    code, parameters, ops, args, d_ops, d_args = problem.activation.jit_spec
    L, xi = model.kernel_geometry()  # the common convention runs as the raw one with rho W, rho xi
    identity = bool(rank_w == k and np.array_equal(L, np.eye(k)))
    degree = len(parameters) - 1 if code == CODE_POLYNOMIAL else -1  # polynomials: Horner loops of fixed length
    kernel = general_chain_kernel(code, identity, problem.convention == "normalized", not model.unconstrained, model.train_c_hat, model.student == "linearized", r, degree)
    reals = np.array([eta, eta * model.c_hat_lr, xi, model.s_out, float(d - p - r)])
    w_squared = np.ascontiguousarray(np.diag(problem.gram) * problem.neuron_prefactor**2 if problem.convention == "common" else np.diag(problem.gram), dtype=float)
    lam = np.asarray(problem.lam, dtype=float)
    return kernel, (L, model.UF, model.C, lam, 1.0 / model.teacher_norms(), w_squared, reals, parameters, ops, args, d_ops, d_args)


def _overlap_stepper(model: GeneralModel, d: int, eta: float, method: str, trajectories: int, seed: int, first_trajectory: int, m0, level: float, stop: bool) -> Stepper:
    """The fast paths of a model that reduces to the overlap: m of every trajectory, advanced by the scalar
    chain or by rank-1 SGD in dimension d."""
    problem = model.reduced_problem()
    rank = problem.rank
    if method != "chain":
        check_memory(8.0 * trajectories * d + 8.0 * (rank + 2) * d, f"full-d SGD with {trajectories} trajectories in dimension d = {d}", "trajectories", " (method 'chain' needs no memory in d)")
    code, arrays = model_arrays(problem)
    start_value = math.nan if m0 is None else m0
    states = np.empty((trajectories, 4), dtype=np.uint64)
    m = np.empty(trajectories)
    hits = np.full(trajectories, -1, dtype=np.int64)
    if method == "chain":
        L = gram_factor(problem.gram, rank)
        identity = bool(L.shape == (problem.k, problem.k) and np.array_equal(L, np.eye(problem.k)))
        triangular = bool(L.shape[0] == L.shape[1] and np.array_equal(L, np.tril(L)))
        kernel = chain_kernel(code, identity, triangular)
        streams.run_blocks(initial_overlaps, trajectories, m, states, np.uint64(seed), first_trajectory, d - rank, start_value)

        def advance(done, count):
            if not (stop and np.all(hits >= 0)):
                streams.run_blocks(kernel, trajectories, m, states, hits, level, stop, done, L, eta, float(d - rank), count, *arrays)
            return m

        work, path = problem.k, "scalar overlap chain"
    else:
        structured = method == "fast"
        if structured:  # rotated: span(W) = the first rank coordinates, u = e_rank
            basis, W, u = np.eye(rank, d), gram_factor(problem.gram, rank), np.eye(1, d, rank)[0]
        else:
            geometry = embedding(problem, d, seed=seed)
            basis, W, u = geometry.basis.T, geometry.W @ geometry.basis, geometry.u  # W in the basis of span(W)
        basis, W, u = np.ascontiguousarray(basis), np.ascontiguousarray(W), np.ascontiguousarray(u)
        u_hat = np.empty((trajectories, d))
        streams.run_blocks(initial_directions, trajectories, u_hat, states, np.uint64(seed), first_trajectory, u, basis, start_value)
        kernel = sgd_kernel(code, structured)

        def advance(done, count):
            if not (stop and np.all(hits >= 0)):
                streams.run_blocks(kernel, trajectories, u_hat, states, m, hits, level, stop, done, W, basis, u, eta, count, *arrays)
            return m

        m[:] = u_hat @ u
        work, path = d, "rank-1 SGD in dimension d" + (" (span(W) rotated onto the first axes)" if structured else " (random embedding)")
    hits[m * m >= level] = 0

    def finish(records):
        return overlap_observables(model, records["m"]), {}

    return Stepper(advance, lambda: {"m": m.copy()}, finish, hits, float(work), f"SGD ({method}, {trajectories} traj.)", {"path": path})


def _state_stepper(model: GeneralModel, d: int, eta: float, method: str, trajectories: int, seed: int, first_trajectory: int, m0, level: float, stop: bool) -> Stepper:
    """The general model: the state chain on (Y, Gamma, C_hat), or full-d SGD of U_hat (r x d rows) and
    C_hat with the state read off the vectors at each checkpoint."""
    problem = model.problem
    k, r, p, rank_w = problem.k, model.rank, model.p, model.L.shape[1]
    states = np.empty((trajectories, 4), dtype=np.uint64)
    for j in range(trajectories):
        streams.seed_stream(np.uint64(seed), streams.TRAJECTORIES, first_trajectory + j, states[j])
    Ch = np.repeat(model.C_hat[None], trajectories, axis=0)
    hits = np.full(trajectories, -1, dtype=np.int64)
    if method == "chain":
        Y, Gam = initial_states(model, d, trajectories, seed, first_trajectory, m0)
        kernel, constants = chain_stepper(model, d, eta)

        def record():
            return {"Y": Y.copy(), "Gamma": Gam.copy(), "C_hat": Ch.copy()}

        def run(done, count):
            streams.run_blocks(kernel, trajectories, Y, Gam, Ch, states, hits, level, stop, done, count, *constants)

        work, path = k * (p + r) * r + p * r * r, "state chain"
    else:
        check_memory(8.0 * trajectories * r * d + 8.0 * (k + p + rank_w) * d, f"full-d SGD with {trajectories} trajectories of rank {r} in dimension d = {d}", "trajectories", " (method 'chain' needs no memory in d)")
        code, parameters, ops, args, d_ops, d_args = problem.activation.jit_spec
        if method == "fast":  # F = span(W) + span(U) on the first p axes
            W = np.zeros((k, d))
            W[:, :rank_w] = model.L
            U = np.zeros((model.C.shape[1], d))
            U[:, :p] = model.UF
            QF = None
            V = initial_frames(model, d, trajectories, seed, first_trajectory, m0)
        else:
            W, QF, U = embedded_geometry(model, d, seed)
            V = initial_frames(model, d, trajectories, seed, first_trajectory, m0, QW=np.ascontiguousarray(QF[:, :rank_w].T), QF=QF)
        QW = np.eye(rank_w, d) if QF is None else np.ascontiguousarray(QF[:, :rank_w].T)
        _, xi = model.kernel_geometry()
        if problem.convention == "common":  # run as the raw convention with rho W and rho xi
            W = np.ascontiguousarray(problem.neuron_prefactor * W)
        reals = np.array([eta, eta * model.c_hat_lr, xi, model.s_out])
        w_squared = np.sum(W**2, axis=1)  # from the explicit rows
        lam = np.asarray(problem.lam, dtype=float)
        inverse_teacher = 1.0 / model.teacher_norms()
        sgd = general_sgd_stepper(code, problem.convention == "normalized", not model.unconstrained, model.train_c_hat, model.student == "linearized", r, V, W, QW, U, model.C, lam, inverse_teacher, w_squared, reals, parameters, ops, args, d_ops, d_args)

        def record():
            # the state in F's coordinates: Y = (V QF)^T, Gamma = V V^T - Y^T Y (the part outside F)
            inside = V[:, :, :p] if QF is None else V @ QF
            if QF is None:
                outside = V[:, :, p:]
                gamma = np.einsum("tlq,tmq->tlm", outside, outside)
            else:
                gamma = np.einsum("tlq,tmq->tlm", V, V) - np.einsum("tlq,tmq->tlm", inside, inside)
            return {"Y": np.swapaxes(inside, 1, 2).copy(), "Gamma": gamma, "C_hat": Ch.copy()}

        def run(done, count):
            sgd(Ch, states, hits, level, stop, done, count)

        # a call costs about one step's pass over W to write V back: chunks of >= ~10 steps amortise it
        work, path = d * r, "general SGD in dimension d" + (" (F on the first axes)" if QF is None else " (the model's geometry in R^d)")

    moving = (Y, Gam, Ch) if method == "chain" else (V, Ch)

    def advance(done, count):
        run(done, count)
        # what the driver checks for divergence: every entry of every trajectory's state (no copy)
        return sum(np.sum(part, axis=tuple(range(1, part.ndim))) for part in moving)

    initial = record()
    overlap = np.einsum("sq,tqr->tsr", model.UF, initial["Y"])
    squared = np.linalg.svd(overlap, compute_uv=False)[:, -1] ** 2
    hits[squared >= level] = 0

    def finish(records):
        return state_observables(model, records["Y"], records["Gamma"], records["C_hat"]), records

    return Stepper(advance, record, finish, hits, float(work), f"general SGD ({method}, {trajectories} traj.)", {"eta_c": eta * model.c_hat_lr, "path": path})


def finetuning_stepper(model: GeneralModel, d: int, eta: float, *, method: str, trajectories: int, seed: int, first_trajectory: int, m0, level: float, stop_when_hit: bool, fast_path: bool = True) -> Stepper:
    """The protocol's ``stepper`` for the fine-tuning model: its fast paths where it reduces to the
    overlap (unless ``fast_path`` is False), else the state chain or general full-d SGD."""
    m0 = check_m0(model, m0)
    build = _overlap_stepper if model.reduces_to_overlap and fast_path else _state_stepper
    return build(model, d, eta, method, trajectories, seed, first_trajectory, m0, level, stop_when_hit)


def _record_bytes(model: GeneralModel, fast_path: bool) -> int:
    """A trajectory's record per checkpoint: m alone on the fast paths, else the state (Y, Gamma, C_hat)."""
    if model.reduces_to_overlap and fast_path:
        return 8
    return 8 * (model.p * model.rank + model.rank**2 + model.problem.k * model.rank)


def _as_model(value):
    """A fine-tuning problem is the model with every switch at its default."""
    return general_model(value) if isinstance(value, FineTuningProblem) else None


FAMILY = register_family(ModelFamily("finetuning", GeneralModel, general_model_from_dict, finetuning_stepper, METHODS, LABELS, _record_bytes, _as_model))

from . import predictions  # noqa: E402,F401  (registers the fine-tuning predictions)
