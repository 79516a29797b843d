"""The fine-tuning model (MATH.md §4b): one model for every setting of Dayi & Chen's low-rank fine-tuning.

On top of a :class:`.spec.FineTuningProblem` (activation, lam, the features, xi, the convention): the
teacher ``W + xi C U^T`` with a component ``alpha`` of U in span(W), the student ``W + xi C_hat U_hat^T``
of rank r with C_hat frozen or trained jointly, u_hat constrained to span(W)^perp or free, the output
scale 1 or 1/xi (by default the convention's: 1/xi in ``common``, App. B; 1 otherwise), the exact or the
linearised student. Its coordinates in F = span(W) + span(U) are what
the exact state chain runs on.

With every switch at its default (rank 1, alpha 0, c_hat frozen, u_hat ⟂ W, the exact student, the
problem's own output scale) the model *reduces to the overlap* m = <u, u_hat> (:attr:`GeneralModel.reduces_to_overlap`):
then the scalar overlap chain, rotated or embedded full-d SGD and the h(m) predictions are its fast paths
(:mod:`.family`). A problem file is the model with every switch at its default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..._io import ContentEqual
from ..._validation import InvalidArgument, check_array, check_choice, check_integer, check_real
from ...numerics.linalg import gram_factor
from .spec import FineTuningProblem

__all__ = ["GeneralModel", "general_model", "general_model_from_dict", "load_general_model", "OUTPUT_SCALES"]

OUTPUT_SCALES = ("one", "inverse_xi")
STUDENTS = ("exact", "linearized")


@dataclass(frozen=True, eq=False)
class GeneralModel(ContentEqual):
    """The fine-tuning model: a problem with the model's switches, and its coordinates in
    F = span(W) + span(U). Equal models (same :meth:`to_dict`) compare and hash equal.

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
        The output multiplier s_out: 1, or 1/xi (the paper's App. B; the common convention's default).
    train_c_hat : bool
        C_hat trained jointly with U_hat (same sample, gradients at the current state).
    c_hat_lr : float
        eta_c / eta.
    unconstrained : bool
        U_hat free in R^d (not projected onto span(W)^perp).
    student : {'exact', 'linearized'}
        The student network, or its first order in the adapter around the base model (Fig 3a):
        ``sum_i lam_i [sigma(<w_i, x>/|w_i|) + xi sigma'(<w_i, x>/|w_i|) <v_i, x>]``, v_i = U_hat c_hat_i
        projected off w_i and divided by |w_i| (raw convention: no division, no projection; common: the
        raw one with every pre-activation times rho).
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

    #: the model protocol's family (:mod:`popgrad.dynamics.protocol`)
    family = "finetuning"

    @property
    def reduces_to_overlap(self) -> bool:
        """Whether the model's state reduces to the overlap m = <u, u_hat>: rank 1 with one teacher column,
        the teacher ⟂ span(W) (alpha 0), c_hat frozen, u_hat constrained to span(W)^perp, the exact student
        and the problem's own output scale (1; 1/xi in the common convention). Then the scalar chain, rotated/embedded full-d SGD and the h(m) predictions
        serve it (bit for bit the numbers of a problem run on its own)."""
        rank_w = self.L.shape[1]
        # a teacher ⟂ span(W) computed in floating point keeps a part of rounding size there: still reduced
        return self.rank == 1 and self.C.shape[1] == 1 and not np.any(np.abs(self.UF[:, :rank_w]) > 1e-12) and not self.train_c_hat and not self.unconstrained and self.student == "exact" and self.output_scale == self.problem.output_scale

    def reduced_problem(self) -> FineTuningProblem:
        """The rank-1 problem whose overlap chain this model is (its c and c_hat the model's C and C_hat)."""
        if not self.reduces_to_overlap:
            raise InvalidArgument("this model does not reduce to the overlap m (see reduces_to_overlap)", "model")
        problem = self.problem
        if np.array_equal(problem.c, self.C[:, 0]) and np.array_equal(problem.c_hat, self.C_hat[:, 0]):
            return problem
        return problem.replace(c=self.C[:, 0].copy(), c_hat=self.C_hat[:, 0].copy())

    def check_dimension(self, d, method: str, fast_path: bool = True) -> int:
        """``d`` checked for a run by ``method``: at least p + r + 2 (the state chain's Wishart part; rank W
        + 3 on the fast paths of a model that reduces to the overlap), and the explicit W's own dimension
        where the problem has one."""
        p, r = self.p, self.rank
        W = self.problem.W
        if W is not None and method == "full":
            d = W.shape[1] if d is None else d
            if isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d != W.shape[1]:
                raise InvalidArgument(f"d must equal the problem's W dimension {W.shape[1]} for method 'full', got {d}", "d")
        if isinstance(d, (int, np.integer)) and not isinstance(d, bool) and r > d - p - 2 and d >= 1 and r > 1:
            raise InvalidArgument(f"rank must be at most d - p - 2 = {int(d) - p - 2} here (p = rank W + r* = {p}), got {r}", "rank")
        # the scalar chain needs n = d - rank W >= 3; the state chain a Wishart part of d - p - r + 1 >= 1 dof
        return check_integer(d, "d", self.L.shape[1] + 3 if self.reduces_to_overlap and fast_path else p + r + 2)

    def describe(self) -> str:
        """One line: the problem and the switches."""
        if self.reduces_to_overlap:
            return f"{self.problem!r}"
        c_hat = f"trained (eta_c = {self.c_hat_lr:g} eta)" if self.train_c_hat else "frozen"
        return f"{self.problem!r}; rank {self.rank}, alpha = {self.alpha:g}, output scale {self.output_scale}, {self.student} student, c_hat {c_hat}, u_hat {'free' if self.unconstrained else 'in span(W)^perp'}"

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
        data = {"model": "finetuning"} | self.problem.to_dict() | {key: value for key, value in self.settings().items() if key != "alpha"}
        return data | ({"U": self.U.tolist()} if self.U is not None else {"alpha": self.alpha, "seed": self.seed})

    def replace(self, **changes) -> "GeneralModel":
        """The model with some switches changed (rebuilt through :func:`general_model`, so validated)."""
        data = self.to_dict() | changes
        return general_model_from_dict(data)

    def kernel_geometry(self) -> tuple:
        """``(L, xi)`` as the kernels take them: the model's own, except in the common convention, which
        they run as the raw one with ``W -> rho W`` and ``xi -> rho xi`` (the same network
        ``sigma(<rho (w_i + xi U_hat c_hat_i), x>)``, hence the same gradients in U_hat and C_hat; the output
        scale stays :attr:`s_out`, of the model's own xi)."""
        problem = self.problem
        if problem.convention != "common":
            return self.L, problem.xi
        rho = problem.neuron_prefactor
        return np.ascontiguousarray(rho * self.L), rho * problem.xi

    def teacher_norms(self) -> np.ndarray:
        """|w_i + xi U c_i| (normalized convention; ones in raw and common)."""
        if self.problem.convention != "normalized":
            return np.ones(self.problem.k)
        WU = self.L @ self.UF[:, : self.L.shape[1]].T  # (k, r*) = W U
        squared = np.diag(self.problem.gram) + 2 * self.problem.xi * np.sum(WU * self.C, axis=1) + self.problem.xi**2 * np.sum(self.C**2, axis=1)
        return np.sqrt(squared)


def general_model(problem: FineTuningProblem, *, rank: int = 1, alpha: float = 0.0, output_scale: str | None = None, train_c_hat: bool = False, c_hat_lr: float = 1.0, unconstrained: bool = False, student: str = "exact", C=None, C_hat=None, U=None, seed: int = 0) -> GeneralModel:
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
    output_scale : {'one', 'inverse_xi'}, optional
        Default: the problem's own (:attr:`.spec.FineTuningProblem.output_scale`): 'inverse_xi' in the
        common convention (App. B), 'one' otherwise.
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
    output_scale = problem.output_scale if output_scale is None else check_choice(output_scale, "output_scale", OUTPUT_SCALES)
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
    # switches without effect take one value, so that models that run alike compare equal: the seed draws
    # only u's direction in span(W) (C_hat's drawn columns are part of the model), eta_c only acts when
    # c_hat is trained
    seed = seed if alpha > 0 else 0
    c_hat_lr = c_hat_lr if train_c_hat else 1.0
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
    _, R_perp = perpendicular_part(Q_W, U)
    L = np.ascontiguousarray(problem.W @ Q_W)
    UF = np.ascontiguousarray(np.vstack([Q_W.T @ U, R_perp]).T)
    c_hat_lr = c_hat_lr if train_c_hat else 1.0
    return GeneralModel(problem, np.ascontiguousarray(C, dtype=float), np.ascontiguousarray(C_hat, dtype=float), float(np.linalg.norm(UF[:, :rank_w])), output_scale, bool(train_c_hat), float(c_hat_lr), bool(unconstrained), student, L, UF, np.array(U, dtype=float))


def perpendicular_part(Q_W: np.ndarray, U: np.ndarray) -> tuple:
    """``(Q_perp, R_perp)`` with ``U = Q_W Q_W^T U + Q_perp R_perp``: Q_perp (d x r*) orthonormal and
    orthogonal to span(W) (Q_W's columns), spanning U's part outside span(W) and, where that part has rank
    below r* (U in span(W)), completed by fixed directions orthogonal to both; ``R_perp = Q_perp^T U`` with
    a non-negative diagonal. The one construction behind the model's coordinates (``UF``) and the explicit
    geometry of full-d SGD, so that both place U alike.

    Parameters
    ----------
    Q_W : ndarray (d, rank W)
    U : ndarray (d, r*)

    Returns
    -------
    tuple of ndarray
    """
    outside = U - Q_W @ (Q_W.T @ U)
    d, r_star = outside.shape
    left, values, _ = np.linalg.svd(outside, full_matrices=False)
    kept = int(np.sum(values > 1e-12 * max(1.0, float(np.max(np.abs(U))))))
    Q_perp = left[:, :kept]
    if kept < r_star:  # complete with fixed Gaussian directions projected off span(W) and the kept ones
        extra = np.random.default_rng([d, r_star, 7]).standard_normal((d, r_star - kept))
        for basis in (Q_W, Q_perp):
            extra -= basis @ (basis.T @ extra)
        Q_perp = np.hstack([Q_perp, np.linalg.qr(extra)[0]])
    R_perp = Q_perp.T @ outside
    signs = np.where(np.diag(R_perp) < 0, -1.0, 1.0)
    return Q_perp * signs, R_perp * signs[:, None]


def general_model_from_dict(data: dict) -> GeneralModel:
    """A general model from a problem specification (JSON object): the problem's keys (activation, lam,
    gram or W, c, c_hat, xi, convention, prefactor) and the general model's (``u`` or ``U``, ``alpha``, ``C``, ``C_hat``,
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
    if data.get("model", "finetuning") != "finetuning":
        raise InvalidArgument(f"model: this is the fine-tuning model's reader, got model {data['model']!r}", "model")
    data = {key: value for key, value in data.items() if key != "model"}
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
