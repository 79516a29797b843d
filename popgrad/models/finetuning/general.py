"""The general fine-tuning model (MATH.md §4b) on top of a :class:`.spec.FineTuningProblem`: the teacher
``W + xi C U^T`` with a component ``alpha`` of U in span(W), the student ``W + xi C_hat U_hat^T`` of rank r
with C_hat frozen or trained jointly, u_hat constrained to span(W)^perp or free, the output scale 1 or 1/xi;
simulated by the exact state chain (:mod:`.overlaps`) and by full-d SGD (:mod:`.sgd`).

Work in progress toward issue 8: the exact student only (the linearised student, closed-form population
quantities and predictions are not here yet), so nothing of this module is exported from ``popgrad``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..._validation import InvalidArgument, check_array, check_choice, check_integer, check_memory, check_real
from ...dynamics.trajectories import Diverged, hitting_summary, run_to_checkpoints, step_schedule
from ...numerics import random_streams as streams
from ...numerics.linalg import gram_factor
from .overlaps import general_chain_kernel
from .sgd import general_sgd_kernel
from .spec import FineTuningProblem

__all__ = ["GeneralModel", "general_model", "general_model_from_dict", "load_general_model", "GeneralSimulation", "simulate_general", "state_observables", "state_population_loss", "state_population_losses", "closed_form_loss", "state_loss_monte_carlo", "OUTPUT_SCALES", "OBSERVABLES"]

OUTPUT_SCALES = ("one", "inverse_xi")
STUDENTS = ("exact", "linearized")


@dataclass(frozen=True)
class GeneralModel:
    """A problem with the general model's switches, and its coordinates in F = span(W) + span(U).

    Attributes
    ----------
    problem : FineTuningProblem
        Activation, lam, the features (G or W), xi and the convention.
    C : ndarray, shape (k, r*)
        The teacher's adapter coefficients.
    C_hat : ndarray, shape (k, r)
        The student's initial adapter coefficients.
    alpha : float
        |Π_W u| for each column of U (0: U ⟂ span(W)).
    output_scale : {'one', 'inverse_xi'}
        The output multiplier s_out: 1, or 1/xi (the paper's App. B).
    train_c_hat : bool
        C_hat trained jointly with U_hat (same sample, gradients at the current state).
    c_hat_lr : float
        eta_c / eta.
    unconstrained : bool
        U_hat free in R^d (not projected onto span(W)^perp).
    student : {'exact', 'linearized'}
        The student network, or its first order in the adapter around the base model (Fig 3a):
        ``sum_i lam_i [sigma(<w_i, x>/|w_i|) + xi sigma'(<w_i, x>/|w_i|) <v_i, x>]``, v_i = U_hat c_hat_i
        projected off w_i and divided by |w_i| (raw convention: no division, no projection).
    L : ndarray, shape (k, rank W)
        ``L L^T = G``: W in an orthonormal basis of span(W).
    UF : ndarray, shape (r*, p)
        U^T in the basis of F (its first rank W coordinates span span(W)).
    U : ndarray (d, r*) or None
        The teacher's directions where they were given in R^d.
    seed : int
        The seed that drew U's direction in span(W) (alpha > 0) and C_hat's extra columns.
    """

    problem: FineTuningProblem
    C: np.ndarray
    C_hat: np.ndarray
    alpha: float
    output_scale: str
    train_c_hat: bool
    c_hat_lr: float
    unconstrained: bool
    student: str
    L: np.ndarray
    UF: np.ndarray
    U: np.ndarray | None = None
    seed: int = 0

    @property
    def rank(self) -> int:
        """The student's rank r."""
        return self.C_hat.shape[1]

    @property
    def s_out(self) -> float:
        return 1.0 if self.output_scale == "one" else 1.0 / self.problem.xi

    @property
    def p(self) -> int:
        """dim F = rank W + r*."""
        return self.UF.shape[1]

    def settings(self) -> dict:
        """The switches and adapter coefficients, JSON-ready (what saved results record)."""
        return {"rank": self.rank, "alpha": self.alpha, "output_scale": self.output_scale, "student": self.student, "train_c_hat": self.train_c_hat, "c_hat_lr": self.c_hat_lr, "unconstrained": self.unconstrained, "C": self.C.tolist(), "C_hat": self.C_hat.tolist()}

    def to_dict(self) -> dict:
        """The problem's keys and the model's, as :func:`general_model_from_dict` reads them back: the
        teacher as ``U`` where it was given in R^d, else as ``alpha`` with the ``seed`` that draws its
        direction in span(W)."""
        data = self.problem.to_dict() | {key: value for key, value in self.settings().items() if key != "alpha"}
        return data | ({"U": self.U.tolist()} if self.U is not None else {"alpha": self.alpha, "seed": self.seed})

    def teacher_norms(self) -> np.ndarray:
        """|w_i + xi U c_i| (normalized convention; ones in raw)."""
        if self.problem.convention == "raw":
            return np.ones(self.problem.k)
        WU = self.L @ self.UF[:, : self.L.shape[1]].T  # (k, r*) = W U
        squared = np.diag(self.problem.gram) + 2 * self.problem.xi * np.sum(WU * self.C, axis=1) + self.problem.xi**2 * np.sum(self.C**2, axis=1)
        return np.sqrt(squared)


def general_model(problem: FineTuningProblem, *, rank: int = 1, alpha: float = 0.0, output_scale: str = "one", train_c_hat: bool = False, c_hat_lr: float = 1.0, unconstrained: bool = False, student: str = "exact", C=None, C_hat=None, U=None, seed: int = 0) -> GeneralModel:
    """The general model for ``problem`` with the given switches.

    Parameters
    ----------
    problem : FineTuningProblem
        Its ``c`` is the teacher's rank-1 C and its ``c_hat`` the first column of C_hat unless ``C``,
        ``C_hat`` are given.
    rank : int, default 1
        The student's rank r (C_hat's columns beyond the first are drawn ±1/sqrt(k) with ``seed``).
    alpha : float in [0, 1], default 0
        The teacher's component in span(W): u = alpha u_1 + sqrt(1 - alpha^2) u_2 (u_1 ∈ span W drawn with
        ``seed``, u_2 ⟂ W).
    output_scale : {'one', 'inverse_xi'}, default 'one'
    train_c_hat : bool, default False
    c_hat_lr : float > 0, default 1
        eta_c / eta.
    unconstrained : bool, default False
    student : {'exact', 'linearized'}, default 'exact'
    C : array (k, r*), optional
    C_hat : array (k, r), optional
    U : array (d, r*) or (d,), optional
        The teacher's directions given explicitly (orthonormal columns; a unit d-vector for r* = 1), in the
        coordinates of the problem's explicit W (k x d); instead of ``alpha``.
    seed : int, default 0
        Seed of u_1 and of C_hat's extra columns.

    Returns
    -------
    GeneralModel
    """
    k = problem.k
    rank = check_integer(rank, "rank", 1, 64)
    alpha = check_real(alpha, "alpha", 0.0, 1.0)
    check_choice(output_scale, "output_scale", OUTPUT_SCALES)
    check_choice(student, "student", STUDENTS)
    c_hat_lr = check_real(c_hat_lr, "c_hat_lr", 0.0, 1e6, low_open=True)
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    # one generator per drawn thing, so that giving C_hat explicitly leaves u_1's draw unchanged
    columns, direction = (np.random.default_rng([seed, purpose]) for purpose in (1, 2))
    C = problem.c[:, None].copy() if C is None else check_array(C, "C", ndim=2)
    if C.shape[0] != k:
        raise InvalidArgument(f"C must have k = {k} rows, got shape {C.shape}", "C")
    if C_hat is None:
        C_hat = np.empty((k, rank))
        C_hat[:, 0] = problem.c_hat
        for column in range(1, rank):
            C_hat[:, column] = columns.choice([-1.0, 1.0], size=k) / math.sqrt(k)
    else:
        C_hat = check_array(C_hat, "C_hat", ndim=2)
        if C_hat.shape != (k, rank):
            raise InvalidArgument(f"C_hat must have shape (k, r) = ({k}, {rank}), got {C_hat.shape}", "C_hat")
    rank_w = int(np.linalg.matrix_rank(problem.gram, hermitian=True, tol=1e-10 * max(1.0, float(np.max(np.abs(problem.gram)))))) if np.any(problem.gram) else 0
    r_star = C.shape[1]
    if U is not None:
        return _explicit_teacher(problem, rank_w, U, alpha, C, C_hat, output_scale, train_c_hat, c_hat_lr, unconstrained, student)
    L = np.ascontiguousarray(gram_factor(problem.gram, rank_w)) if rank_w else np.zeros((k, 0))
    UF = np.zeros((r_star, rank_w + r_star))
    if alpha > 0:
        if rank_w < r_star:
            raise InvalidArgument(f"alpha > 0 needs rank W >= r* = {r_star}, got rank W = {rank_w}", "alpha")
        B1, _ = np.linalg.qr(direction.standard_normal((rank_w, r_star)))
        UF[:, :rank_w] = alpha * B1.T
    UF[:, rank_w:] = math.sqrt(1.0 - alpha**2) * np.eye(r_star)
    return GeneralModel(problem, np.ascontiguousarray(C, dtype=float), np.ascontiguousarray(C_hat, dtype=float), float(alpha), output_scale, bool(train_c_hat), float(c_hat_lr), bool(unconstrained), student, L, UF, None, seed)


def _explicit_teacher(problem, rank_w, U, alpha, C, C_hat, output_scale, train_c_hat, c_hat_lr, unconstrained, student) -> GeneralModel:
    """The model with U given in R^d: F = span(W) + span(U) in the basis [Q_W, Q_perp] (Q_W an orthonormal
    basis of span(W), Q_perp one of U's part outside it), L = W Q_W and UF = U^T [Q_W, Q_perp]."""
    if problem.W is None:
        raise InvalidArgument("an explicit teacher direction u (or U) needs the problem's W (k x d) to place it; this problem has only its Gram matrix", "U")
    if alpha != 0.0:
        raise InvalidArgument("give the teacher either explicitly (U) or through alpha, not both", "alpha")
    d = problem.W.shape[1]
    U = check_array(U, "U")
    if U.ndim == 1:
        U = U[:, None]
    if U.ndim != 2 or U.shape != (d, C.shape[1]):
        raise InvalidArgument(f"U must be d x r* = {d} x {C.shape[1]} (u a {d}-vector for r* = 1), got shape {U.shape}", "U")
    if not np.allclose(U.T @ U, np.eye(U.shape[1]), rtol=0.0, atol=1e-8):
        raise InvalidArgument(f"U must have orthonormal columns (u a unit vector); |U^T U - I| = {float(np.max(np.abs(U.T @ U - np.eye(U.shape[1])))):.3g}", "U")
    _, _, right = np.linalg.svd(problem.W, full_matrices=False)
    Q_W = right[:rank_w].T  # (d, rank W)
    outside = U - Q_W @ (Q_W.T @ U)
    # U = Q_W (Q_W^T U) + Q_perp R_perp: U's coordinates along Q_perp are R_perp (exactly 0 where U lies in
    # span(W), whatever direction QR then picks for Q_perp)
    _, R_perp = np.linalg.qr(outside)
    L = np.ascontiguousarray(problem.W @ Q_W)
    UF = np.ascontiguousarray(np.vstack([Q_W.T @ U, R_perp]).T)
    return GeneralModel(problem, np.ascontiguousarray(C, dtype=float), np.ascontiguousarray(C_hat, dtype=float), float(np.linalg.norm(UF[:, :rank_w])), output_scale, bool(train_c_hat), float(c_hat_lr), bool(unconstrained), student, L, UF, np.array(U, dtype=float))


def general_model_from_dict(data: dict) -> GeneralModel:
    """A general model from a problem specification (JSON object): the problem's keys (activation, lam,
    gram or W, c, c_hat, xi, convention) and the general model's (``u`` or ``U``, ``alpha``, ``C``, ``C_hat``,
    ``rank``, ``output_scale``, ``student``, ``train_c_hat``, ``c_hat_lr``, ``unconstrained``, ``seed``),
    each optional with :func:`general_model`'s default. A rank-1 problem file is a general model with
    every switch at its default.

    Parameters
    ----------
    data : dict

    Returns
    -------
    GeneralModel

    Examples
    --------
    >>> import popgrad
    >>> problem = popgrad.random_features_problem("relu", 2, 1.0, d=5, seed=0)
    >>> spec = problem.to_dict() | {"u": [0.0, 0.0, 0.0, 0.6, 0.8], "student": "linearized", "train_c_hat": True}
    >>> model = general_model_from_dict(spec)
    >>> model.student, model.UF.shape
    ('linearized', (1, 3))
    """
    from .spec import GENERAL_MODEL_KEYS

    if not isinstance(data, dict):
        raise InvalidArgument("a problem must be a JSON object", "data")
    general = {key: data[key] for key in GENERAL_MODEL_KEYS if key in data}
    problem = FineTuningProblem.from_dict({key: value for key, value in data.items() if key not in GENERAL_MODEL_KEYS})
    if "u" in general and "U" in general:
        raise InvalidArgument("give the teacher direction as 'u' (a d-vector) or 'U' (d x r*), not both", "U")
    if "u" in general:
        general["U"] = general.pop("u")
    for key in ("train_c_hat", "unconstrained"):
        if key in general and not isinstance(general[key], bool):
            raise InvalidArgument(f"{key} must be true or false, got {general[key]!r}", key)
    for key in ("C", "C_hat", "U"):
        if key in general:
            general[key] = np.asarray(general[key], dtype=float)
    return general_model(problem, **general)


def load_general_model(path) -> GeneralModel:
    """Read a general model from a JSON file (see :func:`general_model_from_dict` for the keys).

    Parameters
    ----------
    path : str or Path
        A JSON file: a problem's keys and, optionally, the general model's.

    Returns
    -------
    GeneralModel
    """
    from ..._io import read_json_file

    return general_model_from_dict(read_json_file(path, "problem file", "path"))


@dataclass(frozen=True)
class GeneralSimulation:
    """Observables of a simulation of the general model at the checkpoints.

    Attributes
    ----------
    steps : ndarray of int64
    overlap : ndarray, shape (trajectories, checkpoints, r*, r)
        O = U^T U_hat.
    c_hat : ndarray, shape (trajectories, checkpoints, k, r)
    projection_w : ndarray, shape (trajectories, checkpoints)
        |Π_W U_hat| (Frobenius).
    Y : ndarray, shape (trajectories, checkpoints, p, r)
        U_hat in the basis of F = span(W) + span(U) (MATH.md §4b).
    Gamma : ndarray, shape (trajectories, checkpoints, r, r)
        R^T R for the part R of U_hat outside F: with Y and C_hat the whole state.
    method : str
    eta, eta_c : float
    d : int
    seed : int
    hitting_steps : ndarray of int64 or None
    seconds : float
    model : GeneralModel
    hit : float or None
        The eps of the hitting times (first step with the smallest squared singular value >= 1 - eps).
    """

    steps: np.ndarray
    overlap: np.ndarray
    c_hat: np.ndarray
    projection_w: np.ndarray
    Y: np.ndarray
    Gamma: np.ndarray
    method: str
    eta: float
    eta_c: float
    d: int
    seed: int
    hitting_steps: np.ndarray | None
    seconds: float

    model: GeneralModel | None = None
    hit: float | None = None

    @property
    def m(self) -> np.ndarray:
        """<u, u_hat> (rank 1), shape (trajectories, checkpoints)."""
        return self.overlap[:, :, 0, 0]

    def c_hat_dot_c(self, C: np.ndarray) -> np.ndarray:
        """<C_hat, C> (Frobenius) per trajectory and checkpoint (C_hat's first r* columns)."""
        return np.einsum("tcir,ir->tc", self.c_hat[..., : C.shape[1]], C)

    def observables(self) -> dict:
        """Name -> values ``[trajectory, checkpoint]``: see :func:`state_observables`."""
        return state_observables(self.model, self.Y, self.Gamma, self.c_hat)

    def summary(self) -> dict:
        """Per observable: ``mean``, ``standard_error`` (None for one trajectory) and the 5/25/50/75/95%
        ``quantiles`` at each checkpoint (JSON-ready lists)."""
        return {name: observable_summary(values) for name, values in self.observables().items()}

    def hitting_times(self) -> dict:
        """Median and quartiles of the hitting steps, censored at the last checkpoint (Kaplan–Meier with one
        censoring time: the empirical quantiles), and the censored fraction."""
        if self.hitting_steps is None:
            raise InvalidArgument("this simulation recorded no hitting times (give hit)", "hit")
        return hitting_summary(self.hitting_steps, int(self.steps[-1]))


def _initial_frames(model: GeneralModel, d: int, trajectories: int, seed: int, first: int) -> np.ndarray:
    """U_hat_0 for full-d SGD, r x d rows per trajectory: Gaussian columns, projected onto span(W)^perp
    unless unconstrained, orthonormalised (uniform on the Stiefel manifold); F is the first p axes."""
    rank_w, r = model.L.shape[1], model.rank
    frames = np.empty((trajectories, r, d))
    state = np.empty(4, dtype=np.uint64)
    for j in range(trajectories):
        streams.seed_stream(np.uint64(seed), streams.INITIAL, first + j, state)
        gaussian = np.empty(r * d)
        streams.fill_normal(state, gaussian)
        N = gaussian.reshape(r, d)
        if not model.unconstrained:
            N[:, :rank_w] = 0.0
        values, vectors = np.linalg.eigh(N @ N.T)
        frames[j] = (vectors / np.sqrt(values)) @ vectors.T @ N
    return frames


def _initial_states(model: GeneralModel, d: int, trajectories: int, seed: int, first: int) -> tuple:
    """(Y, Gamma) of the same law at a cost independent of d: U_hat = N T with N's rows in F Gaussian
    (zero in span(W) unless unconstrained), ``N_perp^T N_perp`` Wishart(d - p, I_r) by Bartlett's
    decomposition and ``T = (N^T N)^(-1/2)``."""
    p, rank_w, r = model.p, model.L.shape[1], model.rank
    Y = np.empty((trajectories, p, r))
    Gam = np.empty((trajectories, r, r))
    state = np.empty(4, dtype=np.uint64)
    for j in range(trajectories):
        streams.seed_stream(np.uint64(seed), streams.INITIAL, first + j, state)
        gaussian = np.empty(p * r + r * r)
        streams.fill_normal(state, gaussian)
        NF = gaussian[: p * r].reshape(p, r).copy()
        if not model.unconstrained:
            NF[:rank_w] = 0.0
        A = np.tril(gaussian[p * r :].reshape(r, r), -1)
        for i in range(r):
            A[i, i] = math.sqrt(streams.chi_square(state, float(d - p - i)))
        wishart = A @ A.T
        values, vectors = np.linalg.eigh(NF.T @ NF + wishart)
        T = (vectors / np.sqrt(values)) @ vectors.T
        Y[j] = NF @ T
        Gam[j] = T @ wishart @ T
    return Y, Gam


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
    identity = bool(rank_w == k and np.array_equal(model.L, np.eye(k)))
    degree = len(parameters) - 1 if code == CODE_POLYNOMIAL else -1  # polynomials: Horner loops of fixed length
    kernel = general_chain_kernel(code, identity, problem.convention == "normalized", not model.unconstrained, model.train_c_hat, model.student == "linearized", r, degree)
    reals = np.array([eta, eta * model.c_hat_lr, problem.xi, model.s_out, float(d - p - r)])
    w_squared = np.ascontiguousarray(np.diag(problem.gram), dtype=float)
    lam = np.asarray(problem.lam, dtype=float)
    return kernel, (model.L, model.UF, model.C, lam, 1.0 / model.teacher_norms(), w_squared, reals, parameters, ops, args, d_ops, d_args)


def simulate_general(model: GeneralModel, d: int, eta: float | None = None, checkpoints=None, trajectories: int = 100, method: str = "chain", seed: int = 0, first_trajectory: int = 0, hit: float | None = None, stop_when_hit: bool = False, *, delta: float | None = None, steps: int | None = None, progress: bool | None = False) -> GeneralSimulation:
    """Online SGD of the general model by the exact state chain or in dimension d.

    Both methods start from the same U_hat_0 (uniform on the Stiefel manifold of span(W)^perp, or of R^d
    when unconstrained; streams (seed, INITIAL, j)) and then draw their own samples from the streams
    (seed, TRAJECTORIES, j), so the two laws are compared, not the paths.

    Parameters
    ----------
    model : GeneralModel
    d : int
        Input dimension, at least p + r + 2.
    eta, delta : float
        The step size (one of the two; delta = eta d).
    checkpoints, steps
        The record (one of the two; steps: 21 evenly spaced checkpoints).
    trajectories : int, default 100
    method : {'chain', 'full'}, default 'chain'
    seed : int, default 0
    first_trajectory : int, default 0
    hit : float in (0, 1], optional
        Record the first step where the smallest squared singular value of U^T U_hat reaches 1 - hit.
    stop_when_hit : bool, default False
    progress : bool or None, default False

    Returns
    -------
    GeneralSimulation
    """
    check_choice(method, "method", ("chain", "full"))
    problem = model.problem
    k, r, p, rank_w = problem.k, model.rank, model.p, model.L.shape[1]
    if r > 10**9 - p - 2 or (isinstance(d, (int, np.integer)) and not isinstance(d, bool) and r > d - p - 2):
        raise InvalidArgument(f"rank must be at most d - p - 2 = {int(d) - p - 2} here (p = rank W + r* = {p}), got {r}", "rank")
    d = check_integer(d, "d", p + r + 2, 10**9)
    eta, checkpoints = step_schedule(d, eta, delta, checkpoints, steps)
    trajectories = check_integer(trajectories, "trajectories", 1, 10**8)
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    level = math.inf if hit is None else 1.0 - check_real(hit, "hit", 0.0, 1.0, low_open=True)
    eta_c = eta * model.c_hat_lr
    code, parameters, ops, args, d_ops, d_args = problem.activation.jit_spec
    normalized = problem.convention == "normalized"
    inverse_teacher = 1.0 / model.teacher_norms()
    lam = np.asarray(problem.lam, dtype=float)
    states = np.empty((trajectories, 4), dtype=np.uint64)
    for j in range(trajectories):
        streams.seed_stream(np.uint64(seed), streams.TRAJECTORIES, first_trajectory + j, states[j])
    Ch = np.repeat(model.C_hat[None], trajectories, axis=0)
    hits = np.full(trajectories, -1, dtype=np.int64)
    if method == "chain":
        Y, Gam = _initial_states(model, d, trajectories, seed, first_trajectory)
        kernel, constants = chain_stepper(model, d, eta)

        def observe():
            return Y.copy(), Gam.copy(), Ch.copy()

        def run(done, count):
            streams.run_blocks(kernel, trajectories, Y, Gam, Ch, states, hits, level, bool(stop_when_hit), done, count, *constants)

        work = k * (p + r) * r + p * r * r
    else:
        W = np.zeros((k, d))
        W[:, :rank_w] = model.L
        QW = np.eye(rank_w, d)
        U = np.zeros((model.C.shape[1], d))
        U[:, :p] = model.UF
        V = _initial_frames(model, d, trajectories, seed, first_trajectory)
        kernel = general_sgd_kernel(code, normalized, not model.unconstrained, model.train_c_hat, model.student == "linearized", r)
        reals = np.array([eta, eta_c, problem.xi, model.s_out])
        w_squared = np.sum(W**2, axis=1)  # from the explicit rows

        def observe():
            # the state in F's coordinates: Y = V_F^T, Gamma = V_perp V_perp^T (F = the first p axes here)
            outside = V[:, :, p:]
            return np.swapaxes(V[:, :, :p], 1, 2).copy(), np.einsum("tlq,tmq->tlm", outside, outside), Ch.copy()

        def run(done, count):
            streams.run_blocks(kernel, trajectories, V, Ch, states, hits, level, bool(stop_when_hit), done, count, W, QW, U, model.C, lam, inverse_teacher, w_squared, reals, parameters, ops, args, d_ops, d_args)

        work = d * (k + 4) * r
    check_memory(8.0 * trajectories * len(checkpoints) * (p * r + r * r + k * r), f"the record of the state of {trajectories} trajectories at {len(checkpoints)} checkpoints", "trajectories")
    records = {}
    wanted = set(int(s) for s in checkpoints)

    def advance(done, count):
        run(done, count)
        observed = observe()
        if done + count in wanted:
            records[done + count] = observed
        # what the driver checks for divergence: every entry of every trajectory's state
        return sum(np.sum(part, axis=tuple(range(1, part.ndim))) for part in observed)

    records[0] = observe()
    chunk = max(1, 20_000_000 // max(1, trajectories * work))
    try:
        recording = run_to_checkpoints(advance, np.zeros(trajectories), checkpoints, chunk, progress, f"general SGD ({method}, {trajectories} traj.)", f"eta = {eta:g} is too large")
    except Diverged as exc:
        raise Diverged(str(exc), "eta") from None
    Y_record, Gamma_record, C_hat_record = (np.stack([records[int(s)][part] for s in checkpoints], axis=1) for part in range(3))
    return GeneralSimulation(
        checkpoints,
        np.einsum("sq,tcqr->tcsr", model.UF, Y_record),
        C_hat_record,
        np.sqrt(np.sum(Y_record[:, :, :rank_w, :] ** 2, axis=(2, 3))),
        Y_record,
        Gamma_record,
        method,
        float(eta),
        float(eta_c),
        d,
        seed,
        hits if hit is not None else None,
        recording.seconds,
        model,
        None if hit is None else float(hit),
    )


#: the observables recorded per checkpoint (``population_loss`` only where Phi has a closed form here)
OBSERVABLES = ("m", "c_hat_dot_c", "c_hat_cosine", "projection_w", "population_loss")
QUANTILE_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)


def state_observables(model: GeneralModel, Y: np.ndarray, Gamma: np.ndarray, C_hat: np.ndarray) -> dict:
    """The named observables of states (any leading axes), the one definition shared by simulations and
    predictions.

    ``m``: <u, u_hat> at rank 1, else the smallest singular value of U^T U_hat; ``c_hat_dot_c``: <C_hat, C>
    (Frobenius, C_hat's first r* columns) and ``c_hat_cosine`` its cosine; ``projection_w``: |Π_W U_hat|;
    ``population_loss``: Phi at the state in closed form, where :func:`closed_form_loss` says it is available
    (absent otherwise: the linearised student, or the raw convention with a series-only activation).

    Parameters
    ----------
    model : GeneralModel
    Y, Gamma, C_hat : ndarray (..., p, r), (..., r, r), (..., k, r)
        The states (any leading axes).

    Returns
    -------
    dict of str to ndarray (the leading axes)
    """
    overlap = np.einsum("sq,...qr->...sr", model.UF, Y)
    m = overlap[..., 0, 0] if overlap.shape[-2:] == (1, 1) else np.linalg.svd(overlap, compute_uv=False)[..., -1]
    C = model.C
    head = C_hat[..., : C.shape[1]]
    dot = np.einsum("...ir,ir->...", head, C)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = dot / (np.linalg.norm(head, axis=(-2, -1)) * np.linalg.norm(C))
    rank_w = model.L.shape[1]
    out = {"m": m, "c_hat_dot_c": dot, "c_hat_cosine": cosine, "projection_w": np.sqrt(np.sum(Y[..., :rank_w, :] ** 2, axis=(-2, -1)))}
    if closed_form_loss(model):
        out["population_loss"] = state_population_losses(model, Y, Gamma, C_hat)
    return out


def closed_form_loss(model: GeneralModel) -> bool:
    """Whether :func:`state_population_losses` serves ``model``: in the raw convention (neurons at their own
    scales) it needs an activation whose two-scale kernel has a closed form, and for the linearised student
    also u_hat constrained to span(W)^perp (else sigma'' terms at two scales would enter).

    Parameters
    ----------
    model : GeneralModel

    Returns
    -------
    bool
    """
    from ...gaussian.families.base import KERNEL_SERIES

    if model.problem.convention == "normalized":
        return True
    return model.problem.activation.family_spec.kernel_code != KERNEL_SERIES and (model.student == "exact" or not model.unconstrained)


def observable_summary(values: np.ndarray) -> dict:
    """``mean``, ``standard_error`` (None for one trajectory) and ``quantiles`` over the first axis, as lists.

    Parameters
    ----------
    values : ndarray (trajectories, checkpoints)

    Returns
    -------
    dict
    """
    count = values.shape[0]
    error = values.std(axis=0, ddof=1) / math.sqrt(count) if count > 1 else None
    quantiles = np.quantile(values, QUANTILE_LEVELS, axis=0)
    return {"mean": values.mean(axis=0).tolist(), "standard_error": None if error is None else error.tolist(), "quantiles": {f"{q:g}": row.tolist() for q, row in zip(QUANTILE_LEVELS, quantiles)}}


def state_population_losses(model: GeneralModel, Y: np.ndarray, Gamma: np.ndarray, C_hat: np.ndarray) -> np.ndarray:
    """Phi at many states at once (leading axes any), in closed form; the exact and the linearised student.

    Every Gaussian expectation needs only the covariances of the neurons' pre-activations, computed from
    explicit vectors on F ⊕ range(R) (U_hat = [Y; R], R^T R = Gamma). Exact student: the teacher's and the
    student's neurons enter through the (two-scale) kernel K. Linearised student
    ``f_lin = s_out sum_j lam_j [sigma(a_j) + sigma'(a_j) t_j]`` (a_j the base neuron, t_j = xi <v_j, x>
    the adapter's tilt, uncorrelated with a_j): by Stein's lemma

        E[sigma(b_i) sigma'(a_j) t_j] = c(t_j, b_i) K'(b_i, a_j),
        E[sigma(a_i) sigma'(a_j) t_j] = c(t_j, a_i) K'(a_i, a_j),
        E[sigma'(a_i) t_i sigma'(a_j) t_j] = c(t_i, t_j) K'(a_i, a_j) + c(t_i, a_j) c(t_j, a_i) K''(a_i, a_j),

    with K' the kernel of sigma' and K'' = dK'/drho that of sigma'' (Price's theorem; a central difference
    of K' here, needed only where u_hat leaves span(W)^perp).

    Parameters
    ----------
    model : GeneralModel
        :func:`closed_form_loss` must hold.
    Y, Gamma, C_hat : ndarray (..., p, r), (..., r, r), (..., k, r)
        The states (any leading axes).

    Returns
    -------
    ndarray (the leading axes)
    """
    from ...gaussian.kernels import dual_kernel, kernel_spec, scaled_closed_kernel

    problem = model.problem
    if not closed_form_loss(model):
        raise InvalidArgument("Phi in closed form needs, in the raw convention, an activation with a closed-form kernel (relu, leaky_relu, abs, step, erf), and for the linearized student also u_hat constrained to span(W)^perp; estimate it with state_loss_monte_carlo", "model")
    Y, Gamma, C_hat = (np.asarray(a, dtype=float) for a in (Y, Gamma, C_hat))
    lead = Y.shape[:-2]
    k, p, r, xi = problem.k, model.p, model.rank, problem.xi
    n = p + r
    normalized = problem.convention == "normalized"
    values, vectors = np.linalg.eigh(0.5 * (Gamma + np.swapaxes(Gamma, -1, -2)))
    R = np.einsum("...lk,...k,...mk->...lm", vectors, np.sqrt(np.clip(values, 0.0, None)), vectors)
    U_hat = np.concatenate([Y, R], axis=-2)  # (..., n, r)
    base = np.zeros((k, n))
    base[:, : model.L.shape[1]] = model.L
    U = np.zeros((n, model.C.shape[1]))
    U[:p] = model.UF.T
    teacher = np.broadcast_to(base + xi * model.C @ U.T, lead + (k, n))
    adapters = xi * np.einsum("...qr,...ir->...iq", U_hat, C_hat)  # xi U_hat c_hat_i
    lam = np.asarray(problem.lam, dtype=float)

    def kernel(A, B, derivative=False):
        """E[s(<A_i, x>) s(<B_j, x>)] for the rows' directions (normalized) or the rows themselves (raw)."""
        norms_a, norms_b = np.linalg.norm(A, axis=-1), np.linalg.norm(B, axis=-1)
        cosines = np.clip(np.einsum("...iq,...jq->...ij", A, B) / (norms_a[..., :, None] * norms_b[..., None, :]), -1.0, 1.0)
        if normalized:
            return dual_kernel(problem.activation, cosines, derivative=derivative)
        spec = kernel_spec(problem.activation, [1.0])
        s1, s2 = (np.ascontiguousarray(np.broadcast_to(s, cosines.shape)).ravel() for s in (norms_a[..., :, None], norms_b[..., None, :]))
        return scaled_closed_kernel(spec.code, spec.parameter, s1, s2, cosines.ravel(), derivative).reshape(cosines.shape)

    if model.student == "exact":
        rows = np.concatenate([teacher, base + adapters], axis=-2)
        weights = np.concatenate([lam, -lam])
        return model.s_out**2 * np.einsum("i,...ij,j->...", weights, kernel(rows, rows), weights)
    # the linearised student: a_j = <w_j, x> / |w_j| (normalized) or <w_j, x>; t_j = <tilt_j, x>
    w_norms = np.linalg.norm(base, axis=1)
    if normalized:
        unit = base / w_norms[:, None]
        tilts = (adapters - np.einsum("...iq,iq->...i", adapters, unit)[..., None] * unit) / w_norms[:, None]
        teacher_unit = teacher / np.linalg.norm(teacher, axis=-1, keepdims=True)
        pre, teacher_pre = np.broadcast_to(unit, lead + unit.shape), teacher_unit
    else:
        tilts, pre, teacher_pre = adapters, np.broadcast_to(base, lead + base.shape), teacher

    def covariance(A, B):
        return np.einsum("...iq,...jq->...ij", A, B)

    K_tt, K_ta, K_aa = kernel(teacher_pre, teacher_pre), kernel(teacher_pre, pre), kernel(pre, pre)
    Kp_ta, Kp_aa = kernel(teacher_pre, pre, True), kernel(pre, pre, True)
    c_tb = covariance(teacher_pre, tilts)  # [i, j] = c(t_j, b_i)
    c_ta = covariance(pre, tilts)  # [i, j] = c(t_j, a_i)
    second = covariance(tilts, tilts) * Kp_aa
    if np.any(np.abs(c_ta) > 1e-14 * max(1.0, float(np.max(np.abs(tilts))))):
        # K'' by a central difference of K' in the correlation (normalized convention)
        cosines = np.clip(covariance(pre, pre), -1.0 + 2e-4, 1.0 - 2e-4)
        h = 1e-5
        curvature = (dual_kernel(problem.activation, cosines + h, derivative=True) - dual_kernel(problem.activation, cosines - h, derivative=True)) / (2 * h)
        second = second + np.swapaxes(c_ta, -1, -2) * c_ta * curvature
    cross = K_ta + c_tb * Kp_ta  # E[sigma(b_i) (sigma(a_j) + sigma'(a_j) t_j)]
    student = K_aa + 2.0 * c_ta * Kp_aa + second
    total = np.einsum("i,...ij,j->...", lam, K_tt - 2.0 * cross, lam) + np.einsum("i,...ij,j->...", lam, student, lam)
    return model.s_out**2 * total


def neuron_vectors(model: GeneralModel, Y: np.ndarray, Gamma: np.ndarray, C_hat: np.ndarray) -> tuple:
    """The teacher's and the student's neuron vectors ``(A, B)`` (k x (p + r) each) in coordinates of
    F ⊕ range(R): ``U_hat = [Y; R]`` with ``R^T R = Gamma`` (R upper triangular), ``W = [L, 0; 0]``,
    ``U = [UF^T; 0]``. Every inner product of the model's neurons, hence every Gaussian expectation of the
    network, is the same as in R^d."""
    p, r, rank_w = model.p, model.rank, model.L.shape[1]
    values, vectors = np.linalg.eigh(0.5 * (Gamma + Gamma.T))
    R = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T  # symmetric square root: R^T R = Gamma
    U_hat = np.vstack([Y, R])
    W = np.zeros((model.problem.k, p + r))
    W[:, :rank_w] = model.L
    U = np.zeros((p + r, model.C.shape[1]))
    U[:p] = model.UF.T
    xi = model.problem.xi
    return W + xi * model.C @ U.T, W + xi * C_hat @ U_hat.T


def state_population_loss(model: GeneralModel, Y: np.ndarray, Gamma: np.ndarray, C_hat: np.ndarray) -> float:
    """``Phi = E[(f*(x) - f_hat(x))^2]`` at the state (Y, Gamma, C_hat), in closed form through the two-scale
    kernels: for the exact student ``s_out^2 sum_ij lam_i lam_j [K(a_i, a_j) - 2 K(a_i, b_j) + K(b_i, b_j)]``
    with ``K(a, b) = E[sigma(<a, x>/n_a) sigma(<b, x>/n_b)]`` (n the norms in the normalized convention, 1 in
    raw); for the linearised student see :func:`state_population_losses`.

    Parameters
    ----------
    model : GeneralModel
    Y, Gamma, C_hat : ndarray (p, r), (r, r), (k, r)
        The state.

    Returns
    -------
    float
    """
    from ...gaussian.kernels import dual_kernel

    problem = model.problem
    if model.student == "linearized":
        return float(state_population_losses(model, Y, Gamma, C_hat))
    teacher, student = neuron_vectors(model, Y, Gamma, C_hat)
    vectors = np.vstack([teacher, student])
    norms = np.linalg.norm(vectors, axis=1)
    cosines = np.clip((vectors @ vectors.T) / np.outer(norms, norms), -1.0, 1.0)
    lam = np.asarray(problem.lam, dtype=float)
    weights = np.concatenate([lam, -lam])
    if problem.convention == "normalized":
        kernel = dual_kernel(problem.activation, cosines)
    else:
        kernel = np.empty_like(cosines)
        for i in range(len(norms)):
            for j in range(len(norms)):
                kernel[i, j] = dual_kernel(problem.activation, cosines[i, j], norms[i], norms[j])
    return float(model.s_out**2 * weights @ kernel @ weights)


def state_loss_monte_carlo(model: GeneralModel, Y: np.ndarray, Gamma: np.ndarray, C_hat: np.ndarray, samples: int = 1_000_000, seed: int = 0) -> tuple:
    """Monte Carlo ``(mean, standard error)`` of ``(f*(x) - f_hat(x))^2`` at the state, with explicit
    networks evaluated on Gaussian inputs in the coordinates of :func:`neuron_vectors` (numpy generator
    ``seed``); the independent check of :func:`state_population_loss`.

    Parameters
    ----------
    model : GeneralModel
    Y, Gamma, C_hat : ndarray (p, r), (r, r), (k, r)
        The state.
    samples : int, default 1 000 000
    seed : int, default 0

    Returns
    -------
    tuple of float
        ``(mean, standard_error)``.
    """
    problem = model.problem
    teacher, student = neuron_vectors(model, Y, Gamma, C_hat)
    base = teacher - problem.xi * model.C @ np.vstack([model.UF.T, np.zeros((model.rank, model.C.shape[1]))]).T  # the rows w_i
    adapters = student - base  # xi U_hat c_hat_i
    if problem.convention == "normalized":
        teacher = teacher / np.linalg.norm(teacher, axis=1, keepdims=True)
        student = student / np.linalg.norm(student, axis=1, keepdims=True)
        norms = np.linalg.norm(base, axis=1, keepdims=True)
        unit = base / norms
        tilted = (adapters - np.sum(adapters * unit, axis=1, keepdims=True) * unit) / norms
    else:
        unit, tilted = base, adapters
    lam = np.asarray(problem.lam, dtype=float)
    generator = np.random.default_rng(seed)
    total = squares = 0.0
    done = 0
    while done < samples:
        batch = min(100_000, samples - done)
        x = generator.standard_normal((batch, teacher.shape[1]))
        if model.student == "linearized":
            pre = x @ unit.T
            output = problem.activation(pre) + problem.activation.prime(pre) * (x @ tilted.T)
        else:
            output = problem.activation(x @ student.T)
        loss = (model.s_out * (problem.activation(x @ teacher.T) - output) @ lam) ** 2
        total += loss.sum()
        squares += (loss**2).sum()
        done += batch
    mean = total / samples
    return float(mean), float(math.sqrt(max(squares / samples - mean**2, 0.0) / (samples - 1)))
