"""The committee-machine model (MATH.md §8) as a frozen specification, and its JSON/TOML contract.

Teacher ``f*(x) = s* sum_n a*_n sigma*(<w*_n, x>) + tau eps`` (M neurons, eps ~ N(0, 1) fresh per sample),
student ``f(x) = s sum_i a_i sigma(<v_i, x>)`` (K neurons), x ~ N(0, I_d). The student's first layer is
linearly parametrised, ``V = W0 + B Theta`` (MATH.md §8): from scratch (W0 = 0, B = I, V = Theta, the
default), LoRA (W0 the frozen base, Theta r x d, B K x r frozen or trained) or full fine-tuning (W0, B = I).
Overlaps ``Q = V V^T`` (K x K), ``R = V W*^T`` (K x M), ``T = W* W*^T`` (M x M). In the Saad–Solla
convention (``lambda = w.x / sqrt N``, O(1) weight entries) the overlaps are the same numbers (v = w / sqrt N),
so a file's overlaps are used as they are; the conventions differ in the loss:

* ``saad_solla``: per-sample loss ``1/2 (y - f)^2``, ``eps_g = 1/2 E[(f* - f)^2]`` (clean teacher);
* ``popgrad``: loss ``(y - f)^2`` (the fine-tuning papers'), ``eps_g = E[(f* - f)^2]``.

One SGD step with step ``eta`` on the vectors and ``eta_a = second_layer_ratio * eta`` on the second layer
(delta = eta d is Saad–Solla's lr, delta_a = eta_a d their lr2, alpha = steps / d).

The JSON contract (TOML of the same structure is read by :func:`load_committee_model`)::

    {"model": "committee", "convention": "saad_solla",
     "teacher": {"activation": "erf(z/sqrt(2))", "second_layer": [1, 1, 1], "noise": 0.0},
     "student": {"activation": "erf(z/sqrt(2))", "width": 3, "second_layer": [1, 1, 1],
                 "train_second_layer": false},
     "overlaps": {"Q": [[...]], "R": [[...]], "T": [[...]]}}

``teacher`` may give ``vectors`` (M x d, explicit: T = W* W*^T and d is theirs) or ``gram`` (T) instead of
``overlaps.T`` (default: the identity, orthonormal teacher vectors), and ``scale`` (s*, default 1).
``student`` may give ``init`` instead of ``overlaps`` ({"kind": "random", "scale": s}: rows iid
N(0, s^2/d I), the default with s = 1; {"kind": "zero"}; {"kind": "informed", "scale": s}: v_i = w*_i + rows
iid N(0, s^2/d I), K = M only), and ``second_layer_ratio`` (eta_a / eta, default 1), ``constraint`` ("none",
"sphere": each v_i unit, "stiefel": rows orthonormal), ``weight_decay`` and ``second_layer_weight_decay``
(the loss gains ``wd/2 |v_i|^2`` and ``wd_a/2 a_i^2``; default 0) and ``scale`` (s, default 1).

``student.parametrisation`` (optional; default ``{"kind": "scratch"}``) gives a fine-tuning student::

    "parametrisation": {"kind": "lora", "rank": r,
                        "base": {"gram": W0 W0^T (K x K), "teacher_overlap": W0 W*^T (K x M)},
                        "coefficients": B (K x r), "train_coefficients": true, "coefficient_ratio": 1.0,
                        "orthogonal_to_base": false}

``kind`` "lora" (``rank`` 1 <= r <= K; ``coefficients`` default zeros when trained, required when frozen;
``train_coefficients`` default true) or "full" (r = K; ``coefficients`` default the identity,
``train_coefficients`` default false). The base is given by its Gram matrices (the joint Gram
``[[T, R0^T], [R0, G0]]`` of teacher and base must be PSD), or by ``"vectors"`` (K x d) beside explicit
teacher vectors. ``coefficient_ratio`` is eta_B / eta. ``orthogonal_to_base``: Theta's rows stay in
span(W0)^⟂ (the gradient's x is projected there, as the fine-tuning papers' P_W^⟂; the random start is drawn
there). The constraint, the weight decay (``wd/2 (|Theta|^2 + |B|^2)``) and ``init`` then apply to Theta
(r rows): ``random`` (default for lora), ``zero`` (default for full) or ``{"kind": "explicit", "gram": Theta
Theta^T, "teacher_overlap": Theta W*^T, "base_overlap": Theta W0^T}``; ``informed`` and the top-level
``overlaps`` (of V) are for learning from scratch only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from ..._io import ContentEqual
from ..._validation import MAX_MAGNITUDE, InvalidArgument, InvalidArgumentType, check_array, check_choice, check_integer, check_real

if TYPE_CHECKING:
    from ...gaussian.activations import Activation

__all__ = ["CommitteeModel", "committee_model", "committee_model_from_dict", "load_committee_model", "COMMITTEE_CONVENTIONS", "COMMITTEE_CONSTRAINTS", "COMMITTEE_INIT_KINDS", "COMMITTEE_PARAMETRISATIONS", "finetuning_committee_model"]

COMMITTEE_CONVENTIONS = ("saad_solla", "popgrad")
COMMITTEE_CONSTRAINTS = ("none", "sphere", "stiefel")
COMMITTEE_INIT_KINDS = ("random", "zero", "informed", "overlaps")
#: the kinds of the student's first layer V = W0 + B Theta (MATH.md §8)
COMMITTEE_PARAMETRISATIONS = ("scratch", "lora", "full")
#: init kinds of a fine-tuning student's Theta (lora, full)
LINEAR_INIT_KINDS = ("random", "zero", "explicit")
MAX_WIDTH = 4096

_TOP_KEYS = ("model", "convention", "teacher", "student", "overlaps")
_TEACHER_KEYS = ("activation", "second_layer", "noise", "vectors", "gram", "scale")
_STUDENT_KEYS = ("activation", "width", "second_layer", "train_second_layer", "second_layer_ratio", "constraint", "weight_decay", "second_layer_weight_decay", "init", "scale", "parametrisation")
_PARAMETRISATION_KEYS = ("kind", "rank", "base", "coefficients", "train_coefficients", "coefficient_ratio", "orthogonal_to_base")
_BASE_KEYS = ("gram", "teacher_overlap", "vectors")
_OVERLAP_KEYS = ("Q", "R", "T")
#: tolerance (relative to the largest entry) of the PSD, symmetry and constraint checks
_TOLERANCE = 1e-10


def _readonly(array):
    if isinstance(array, np.ndarray):
        array.setflags(write=False)
    return array


def _symmetric_psd(matrix: np.ndarray, name: str) -> np.ndarray:
    """``matrix`` symmetrised, refused unless symmetric and positive semi-definite (to rounding)."""
    scale = max(1.0, float(np.max(np.abs(matrix)))) if matrix.size else 1.0
    if not np.allclose(matrix, matrix.T, atol=_TOLERANCE * scale, rtol=0.0):
        raise InvalidArgument(f"{name} must be symmetric", name)
    matrix = 0.5 * (matrix + matrix.T)
    if matrix.size:
        smallest = float(np.linalg.eigvalsh(matrix).min())
        if smallest < -1e-9 * scale:
            raise InvalidArgument(f"{name} must be positive semi-definite (smallest eigenvalue {smallest:.3g})", name)
    return matrix


def gram_factor_rank(T: np.ndarray) -> np.ndarray:
    """``L`` (M x p, p = rank T) with ``L L^T = T``: the identity for T = I, the Cholesky factor at full rank,
    scaled eigenvectors otherwise (eigenvalues above 1e-10 of the largest)."""
    from ...numerics.linalg import gram_factor

    return np.ascontiguousarray(gram_factor(T))


@dataclass(frozen=True, eq=False)
class CommitteeModel(ContentEqual):
    """A two-layer teacher–student model learnt from scratch by online SGD (MATH.md §8).

    Build it with :func:`committee_model` (API) or :func:`committee_model_from_dict` (the JSON contract).

    Attributes
    ----------
    convention : {'saad_solla', 'popgrad'}
        The loss ``1/2 (y - f)^2`` and ``eps_g = 1/2 E[(f* - f)^2]``, or both without the 1/2.
    teacher_activation, student_activation : Activation
    teacher_second_layer : ndarray (M,)
        a*.
    student_second_layer : ndarray (K,)
        The initial a.
    teacher_scale, student_scale : float
        s*, s (output multipliers).
    noise : float
        tau >= 0, the teacher's output noise.
    T : ndarray (M, M)
        The teacher's Gram matrix (PSD).
    teacher_vectors : ndarray (M, d) or None
        Explicit teacher vectors (then d is theirs and T = W* W*^T).
    train_second_layer : bool
    second_layer_ratio : float
        eta_a / eta.
    weight_decay, second_layer_weight_decay : float
    constraint : {'none', 'sphere', 'stiefel'}
    init : dict
        The initial-state rule: ``{"kind": "overlaps", "Q": (K, K), "R": (K, M)}``, ``{"kind": "random",
        "scale": s}``, ``{"kind": "zero"}`` or ``{"kind": "informed", "scale": s}``; for a fine-tuning
        student the rule of Theta (``random``, ``zero`` or ``{"kind": "explicit", "gram": (r, r),
        "teacher_overlap": (r, M), "base_overlap": (r, K)}``).
    parametrisation : dict
        ``{"kind": "scratch"}`` (V = Theta) or, for ``"lora"`` and ``"full"`` (V = W0 + B Theta), with
        ``rank``, ``base`` (``gram``, ``teacher_overlap``, optionally ``vectors``), ``coefficients`` (the
        initial B), ``train_coefficients``, ``coefficient_ratio`` and ``orthogonal_to_base``.

    Examples
    --------
    >>> model = committee_model("erf(z/sqrt(2))", width=3, teacher_width=3)
    >>> model.K, model.M, model.loss_factor, model.error_factor
    (3, 3, 1, 0.5)
    >>> committee_model_from_dict(model.to_dict()) == model
    True
    """

    convention: str
    teacher_activation: Activation
    student_activation: Activation
    teacher_second_layer: np.ndarray
    student_second_layer: np.ndarray
    teacher_scale: float
    student_scale: float
    noise: float
    T: np.ndarray
    teacher_vectors: np.ndarray | None
    train_second_layer: bool
    second_layer_ratio: float
    weight_decay: float
    second_layer_weight_decay: float
    constraint: str
    init: dict
    parametrisation: dict = field(default_factory=lambda: {"kind": "scratch"})

    #: the model protocol's family (:mod:`popgrad.dynamics.protocol`)
    family = "committee"

    # -- derived -------------------------------------------------------------------------------------

    @property
    def K(self) -> int:
        """The student's width."""
        return self.student_second_layer.shape[0]

    @property
    def M(self) -> int:
        """The teacher's width."""
        return self.teacher_second_layer.shape[0]

    @property
    def loss_factor(self) -> int:
        """c: 1 (loss 1/2 (y - f)^2, Saad–Solla) or 2 (loss (y - f)^2)."""
        return 1 if self.convention == "saad_solla" else 2

    @property
    def error_factor(self) -> float:
        """eps_g = error_factor E[(f* - f)^2]: 1/2 (Saad–Solla) or 1."""
        return 0.5 if self.convention == "saad_solla" else 1.0

    @property
    def reduces_to_glm(self) -> bool:
        """True where the model *is* the fine-tuning family's single-index model (GLM: W = 0, k = 1,
        MATH.md §4b): K = M = 1, the student on the sphere, teacher and student with the same activation,
        T = [[1]], a = a* = 1 frozen, s = s* = 1, no output noise, no weight decay, the fine-tuning papers'
        loss (convention ``popgrad``: (y - f)^2) and a random (uniform on the sphere) start. Its chain runs
        then take the fast path: the fine-tuning family's scalar overlap chain, reached through the model
        protocol — the same kernel, streams and draws, so the `scaling` reproduction's GLM cells give the
        same numbers through either family (``fast_path=False``: the committee's own state chain)."""
        return (
            self.K == 1 and self.M == 1 and self.constraint == "sphere" and self.convention == "popgrad"
            and self.teacher_activation.expression == self.student_activation.expression
            and float(self.T[0, 0]) == 1.0 and self.teacher_vectors is None
            and float(self.teacher_second_layer[0]) == 1.0 and float(self.student_second_layer[0]) == 1.0
            and not self.train_second_layer and self.teacher_scale == 1.0 and self.student_scale == 1.0
            and self.noise == 0.0 and self.weight_decay == 0.0 and self.init.get("kind") == "random"
            and self.kind == "scratch"
        )

    # -- the linear parametrisation V = W0 + B Theta --------------------------------------------------

    @property
    def kind(self) -> str:
        """The first layer's parametrisation: 'scratch' (V = Theta), 'lora' or 'full' (V = W0 + B Theta)."""
        return self.parametrisation["kind"]

    @property
    def linear(self) -> bool:
        """True for a fine-tuning student (lora, full): a frozen base W0 and coefficients B."""
        return self.kind != "scratch"

    @property
    def rank(self) -> int:
        """r: the number of trained d-vectors (Theta's rows); K from scratch."""
        return self.parametrisation.get("rank", self.K)

    @property
    def train_coefficients(self) -> bool:
        """Whether B is trained (step ``coefficient_ratio * eta``)."""
        return bool(self.parametrisation.get("train_coefficients", False))

    @property
    def coefficient_ratio(self) -> float:
        """eta_B / eta."""
        return float(self.parametrisation.get("coefficient_ratio", 1.0))

    @property
    def orthogonal_to_base(self) -> bool:
        """Whether Theta's rows are kept in span(W0)^⟂."""
        return bool(self.parametrisation.get("orthogonal_to_base", False))

    @property
    def coefficients(self) -> np.ndarray:
        """The initial B (K x r); the identity from scratch."""
        return self.parametrisation["coefficients"] if self.linear else np.eye(self.K)

    @cached_property
    def joint_factor(self) -> np.ndarray:
        """``[L; L0]`` ((M + K) x p) with ``[L; L0][L; L0]^T = [[T, R0^T], [R0, G0]]``, the joint Gram of the
        teacher's and the base's vectors (p = its rank = dim F); from scratch ``[L; 0]``."""
        if not self.linear:
            L = gram_factor_rank(np.asarray(self.T))
            return _readonly(np.vstack([L, np.zeros((self.K, L.shape[1]))]))
        return _readonly(gram_factor_rank(joint_gram(self.T, self.parametrisation["base"])))

    @cached_property
    def L(self) -> np.ndarray:
        """``L`` (M x p) with ``L L^T = T``: the teacher vectors in an orthonormal basis of F (the span of the
        teacher's vectors, and of the base's for a fine-tuning student)."""
        if not self.linear:
            return _readonly(gram_factor_rank(np.asarray(self.T)))
        return _readonly(np.ascontiguousarray(self.joint_factor[: self.M]))

    @cached_property
    def L0(self) -> np.ndarray:
        """``L0`` (K x p) with ``L0 L0^T = G0`` and ``L0 L^T = R0``: the base's vectors in F's basis (zero from
        scratch)."""
        if not self.linear:
            return _readonly(np.zeros((self.K, self.p)))
        return _readonly(np.ascontiguousarray(self.joint_factor[self.M :]))

    @cached_property
    def base_projector(self) -> np.ndarray:
        """``P`` (p x p): the orthogonal projector onto the complement of span(L0's rows) in F's coordinates
        (the base's span removed; the identity from scratch)."""
        L0 = self.L0
        if not np.any(L0):
            return _readonly(np.eye(self.p))
        _, values, right = np.linalg.svd(L0, full_matrices=True)
        rank = int(np.sum(values > 1e-10 * values[0]))
        kept = right[rank:]
        return _readonly(np.ascontiguousarray(kept.T @ kept))

    @property
    def p(self) -> int:
        """dim F = rank T (from scratch), the rank of the joint Gram of teacher and base (fine-tuning)."""
        return self.L.shape[1]

    @property
    def d(self) -> int | None:
        """The explicit teacher vectors' dimension (None: any d)."""
        return None if self.teacher_vectors is None else self.teacher_vectors.shape[1]

    def check_dimension(self, d, method: str = "chain", fast_path: bool = True) -> int:
        """``d`` checked for a run: at least p + K + 1 (the chain's chi-square part keeps a degree of
        freedom; the random initial state's Wishart part needs d - p >= K), and the explicit teacher
        vectors' own dimension where the model has them (``None``: theirs)."""
        if self.teacher_vectors is not None:
            if d is None:
                d = self.d
            if isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d != self.d:
                raise InvalidArgument(f"d must equal the teacher vectors' dimension {self.d}, got {d}", "d")
        low = self.p + self.rank + 1
        if self.constraint == "stiefel":
            low = max(low, self.rank + 1)
        return check_integer(d, "d", low)

    def describe(self) -> str:
        """One line: widths, activations, the second layer, noise and the switches."""
        a = f"a trained (eta_a = {self.second_layer_ratio:g} eta)" if self.train_second_layer else "a frozen"
        extras = []
        if self.constraint != "none":
            extras.append(f"constraint {self.constraint}")
        if self.weight_decay or self.second_layer_weight_decay:
            extras.append(f"weight decay {self.weight_decay:g}/{self.second_layer_weight_decay:g}")
        init = self.init["kind"] + (f" (scale {self.init['scale']:g})" if "scale" in self.init else "")
        if self.linear:
            name = {"lora": f"LoRA rank {self.rank}", "full": "full fine-tuning"}[self.kind]
            B = f"B trained (eta_B = {self.coefficient_ratio:g} eta)" if self.train_coefficients else "B frozen"
            extras.insert(0, f"V = W0 + B Theta ({name}, {B}{', Theta ⟂ W0' if self.orthogonal_to_base else ''})")
        return f"committee machine ({self.convention}): K = {self.K} {self.student_activation.name} student, M = {self.M} {self.teacher_activation.name} teacher, tau = {self.noise:g}, {a}, init {init}" + "".join(", " + e for e in extras)

    # -- the JSON contract ------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The JSON object of the contract (``committee_model_from_dict(model.to_dict()) == model``)."""
        teacher = {"activation": self.teacher_activation.name, "second_layer": self.teacher_second_layer.tolist(), "noise": self.noise, "scale": self.teacher_scale}
        student = {
            "activation": self.student_activation.name,
            "width": self.K,
            "second_layer": self.student_second_layer.tolist(),
            "train_second_layer": self.train_second_layer,
            "second_layer_ratio": self.second_layer_ratio,
            "constraint": self.constraint,
            "weight_decay": self.weight_decay,
            "second_layer_weight_decay": self.second_layer_weight_decay,
            "scale": self.student_scale,
        }
        if self.teacher_vectors is not None:
            teacher["vectors"] = self.teacher_vectors.tolist()
        if self.linear:
            student["parametrisation"] = _parametrisation_dict(self.parametrisation)
        data = {"model": "committee", "convention": self.convention, "teacher": teacher, "student": student}
        if self.init["kind"] == "overlaps":
            data["overlaps"] = {"Q": self.init["Q"].tolist(), "R": self.init["R"].tolist(), "T": self.T.tolist()}
        else:
            if self.teacher_vectors is None:
                teacher["gram"] = self.T.tolist()
            student["init"] = {key: value.tolist() if isinstance(value, np.ndarray) else value for key, value in self.init.items()}
        return data

    def replace(self, **changes) -> "CommitteeModel":
        """The model with some of :func:`committee_model`'s arguments changed (validated again)."""
        arguments = self._arguments() | changes
        return committee_model(**arguments)

    def _arguments(self) -> dict:
        init = dict(self.init)
        Q0 = R0 = None
        if init["kind"] == "overlaps":
            Q0, R0 = init.pop("Q"), init.pop("R")
            init = None
        return dict(
            teacher_activation=self.teacher_activation,
            student_activation=self.student_activation,
            width=self.K,
            teacher_second_layer=self.teacher_second_layer,
            student_second_layer=self.student_second_layer,
            noise=self.noise,
            T=None if self.teacher_vectors is not None else self.T,
            teacher_vectors=self.teacher_vectors,
            convention=self.convention,
            train_second_layer=self.train_second_layer,
            second_layer_ratio=self.second_layer_ratio,
            constraint=self.constraint,
            weight_decay=self.weight_decay,
            second_layer_weight_decay=self.second_layer_weight_decay,
            init=init,
            Q0=Q0,
            R0=R0,
            teacher_scale=self.teacher_scale,
            student_scale=self.student_scale,
            parametrisation=_parametrisation_dict(self.parametrisation) if self.linear else None,
        )

    def initial_overlaps(self) -> tuple | None:
        """``(Q0, R0)`` where the initial state is given by its overlaps, else None (drawn)."""
        if self.init["kind"] == "overlaps":
            return self.init["Q"], self.init["R"]
        return None


def _activation(value, name: str):
    from ...gaussian.activations import activation

    if not isinstance(value, str) and type(value).__name__ != "Activation":
        raise InvalidArgumentType(f"{name} must be an activation name or expression (a string), got {type(value).__name__}", name)
    try:
        return activation(value)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{name}: {exc}", name) from None


def _boolean(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgumentType(f"{name} must be true or false, got {value!r}", name)
    return bool(value)


def committee_model(
    teacher_activation="erf(z/sqrt(2))",
    student_activation=None,
    *,
    width: int | None = None,
    teacher_width: int | None = None,
    teacher_second_layer=None,
    student_second_layer=None,
    noise: float = 0.0,
    T=None,
    teacher_vectors=None,
    convention: str = "saad_solla",
    train_second_layer: bool = False,
    second_layer_ratio: float = 1.0,
    constraint: str = "none",
    weight_decay: float = 0.0,
    second_layer_weight_decay: float = 0.0,
    init: dict | None = None,
    Q0=None,
    R0=None,
    teacher_scale: float = 1.0,
    student_scale: float = 1.0,
    parametrisation: dict | None = None,
    _names: dict | None = None,
) -> CommitteeModel:
    """A committee-machine model, validated.

    Parameters
    ----------
    teacher_activation : str or Activation, default 'erf(z/sqrt(2))'
    student_activation : str or Activation, optional
        Default: the teacher's.
    width : int >= 1, optional
        K (default: the length of ``student_second_layer``, else M).
    teacher_width : int >= 1, optional
        M (default: the length of ``teacher_second_layer``, the rows of T or of ``teacher_vectors``, else K,
        else 1).
    teacher_second_layer, student_second_layer : array, optional
        a* (M,) and the initial a (K,); default all ones.
    noise : float >= 0, default 0
        tau.
    T : array (M, M), optional
        The teacher's Gram matrix (PSD); default the identity (or W* W*^T of ``teacher_vectors``).
    teacher_vectors : array (M, d), optional
        Explicit teacher vectors.
    convention : {'saad_solla', 'popgrad'}, default 'saad_solla'
    train_second_layer : bool, default False
    second_layer_ratio : float > 0, default 1
        eta_a / eta.
    constraint : {'none', 'sphere', 'stiefel'}, default 'none'
    weight_decay, second_layer_weight_decay : float >= 0, default 0
    init : dict, optional
        ``{"kind": "random", "scale": s}`` (default, s = 1), ``{"kind": "zero"}``, ``{"kind": "informed",
        "scale": s}`` (K = M; s default 0) — or give ``Q0`` and ``R0``.
    Q0, R0 : array (K, K), (K, M), optional
        The initial overlaps (both, consistent with T: ``Q0 - Y^T Y`` PSD where R0 = Y^T L^T, L L^T = T).
    teacher_scale, student_scale : float > 0, default 1
        s*, s.
    parametrisation : dict, optional
        The first layer ``V = W0 + B Theta`` (the JSON contract's ``student.parametrisation``, see the module's
        text): ``{"kind": "scratch"}`` (default), or ``"lora"`` / ``"full"`` with ``rank``, ``base``
        (``{"gram": G0, "teacher_overlap": R0}`` or ``{"vectors": W0}``), ``coefficients``,
        ``train_coefficients``, ``coefficient_ratio``, ``orthogonal_to_base``. ``init`` and ``constraint``
        then apply to Theta.
    _names : dict, optional
        Internal: the names the caller's spec gives each parameter (a file's keys, e.g. ``student.width``),
        so that an error names what the caller wrote.

    Returns
    -------
    CommitteeModel

    Examples
    --------
    >>> model = committee_model("erf(z/sqrt(2))", width=2, Q0=[[0.25, 0], [0, 0.25]], R0=[[0.01, 0], [0, 0.01]])
    >>> model.init["kind"], model.M, model.p
    ('overlaps', 2, 2)

    A LoRA student (rank 1, B trained from zero) of a base that is a perturbed teacher:

    >>> lora = committee_model("erf(z/sqrt(2))", width=2, constraint="sphere", parametrisation={"kind": "lora",
    ...     "rank": 1, "base": {"gram": [[1.0, 0.0], [0.0, 1.0]], "teacher_overlap": [[0.9, 0.0], [0.0, 0.9]]}})
    >>> lora.kind, lora.rank, lora.p, lora.coefficients.tolist(), lora.train_coefficients
    ('lora', 1, 4, [[0.0], [0.0]], True)
    """
    names = {"teacher_activation": "teacher_activation", "student_activation": "student_activation", "width": "width", "teacher_width": "teacher_width", "teacher_second_layer": "teacher_second_layer", "student_second_layer": "student_second_layer", "noise": "noise", "T": "T", "teacher_vectors": "teacher_vectors", "convention": "convention", "train_second_layer": "train_second_layer", "second_layer_ratio": "second_layer_ratio", "constraint": "constraint", "weight_decay": "weight_decay", "second_layer_weight_decay": "second_layer_weight_decay", "init": "init", "Q0": "Q0", "R0": "R0", "teacher_scale": "teacher_scale", "student_scale": "student_scale", "parametrisation": "parametrisation"} | (_names or {})
    n = names.__getitem__
    check_choice(convention, n("convention"), COMMITTEE_CONVENTIONS)
    sigma_star = _activation(teacher_activation, n("teacher_activation"))
    sigma = sigma_star if student_activation is None else _activation(student_activation, n("student_activation"))
    if width is not None:
        width = check_integer(width, n("width"), 1, MAX_WIDTH)
    if teacher_width is not None:
        teacher_width = check_integer(teacher_width, n("teacher_width"), 1, MAX_WIDTH)
    if teacher_vectors is not None:
        teacher_vectors = check_array(teacher_vectors, n("teacher_vectors"), ndim=2, bound=MAX_MAGNITUDE)
        if teacher_vectors.shape[0] < 1 or teacher_vectors.shape[1] < 1:
            raise InvalidArgument(f"{n('teacher_vectors')} must have at least one row (M >= 1) and one column (d >= 1), got shape {teacher_vectors.shape}", n("teacher_vectors"))
        if T is not None:
            raise InvalidArgument(f"give the teacher as {n('teacher_vectors')} or by its Gram matrix {n('T')}, not both", n("T"))
    # M: from whatever gives it, all of which must agree
    sizes = []
    if teacher_width is not None:
        sizes.append((teacher_width, n("teacher_width")))
    if teacher_second_layer is not None:
        teacher_second_layer = check_array(teacher_second_layer, n("teacher_second_layer"), ndim=1, bound=MAX_MAGNITUDE)
        sizes.append((teacher_second_layer.shape[0], n("teacher_second_layer")))
    if T is not None:
        T = check_array(T, n("T"), ndim=2, bound=MAX_MAGNITUDE)
        if T.shape[0] != T.shape[1]:
            raise InvalidArgument(f"{n('T')} must be square (M x M), got shape {T.shape}", n("T"))
        sizes.append((T.shape[0], n("T")))
    if teacher_vectors is not None:
        sizes.append((teacher_vectors.shape[0], n("teacher_vectors")))
    if R0 is not None:
        R0 = check_array(R0, n("R0"), ndim=2, bound=MAX_MAGNITUDE)
        sizes.append((R0.shape[1], n("R0")))
    if sizes:
        M = sizes[0][0]
        for size, where in sizes[1:]:
            if size != M:
                raise InvalidArgument(f"{where} gives the teacher width M = {size}, but {sizes[0][1]} gives {M}", where)
    else:
        M = width if width is not None else (len(student_second_layer) if student_second_layer is not None and np.ndim(student_second_layer) == 1 else 1)
    if M < 1:
        raise InvalidArgument(f"the teacher width M must be at least 1, got {M}", sizes[0][1] if sizes else n("teacher_width"))
    # K
    ksizes = []
    if width is not None:
        ksizes.append((width, n("width")))
    if student_second_layer is not None:
        student_second_layer = check_array(student_second_layer, n("student_second_layer"), ndim=1, bound=MAX_MAGNITUDE)
        ksizes.append((student_second_layer.shape[0], n("student_second_layer")))
    if Q0 is not None:
        Q0 = check_array(Q0, n("Q0"), ndim=2, bound=MAX_MAGNITUDE)
        ksizes.append((Q0.shape[0], n("Q0")))
    if R0 is not None:
        ksizes.append((R0.shape[0], n("R0")))
    if ksizes:
        K = ksizes[0][0]
        for size, where in ksizes[1:]:
            if size != K:
                raise InvalidArgument(f"{where} gives the student width K = {size}, but {ksizes[0][1]} gives {K}", where)
    else:
        K = M
    if K < 1:
        raise InvalidArgument(f"the student width K must be at least 1, got {K}", ksizes[0][1])
    if K > MAX_WIDTH or M > MAX_WIDTH:
        raise InvalidArgument(f"widths must be at most {MAX_WIDTH}, got K = {K}, M = {M}", n("width"))
    a_star = np.ones(M) if teacher_second_layer is None else teacher_second_layer
    a = np.ones(K) if student_second_layer is None else student_second_layer
    noise = check_real(noise, n("noise"), 0.0, MAX_MAGNITUDE)
    teacher_scale = check_real(teacher_scale, n("teacher_scale"), 0.0, MAX_MAGNITUDE, low_open=True)
    student_scale = check_real(student_scale, n("student_scale"), 0.0, MAX_MAGNITUDE, low_open=True)
    train_second_layer = _boolean(train_second_layer, n("train_second_layer"))
    second_layer_ratio = check_real(second_layer_ratio, n("second_layer_ratio"), 0.0, MAX_MAGNITUDE, low_open=True)
    check_choice(constraint, n("constraint"), COMMITTEE_CONSTRAINTS)
    weight_decay = check_real(weight_decay, n("weight_decay"), 0.0, MAX_MAGNITUDE)
    second_layer_weight_decay = check_real(second_layer_weight_decay, n("second_layer_weight_decay"), 0.0, MAX_MAGNITUDE)
    # the teacher's Gram matrix
    if teacher_vectors is not None:
        T = teacher_vectors @ teacher_vectors.T
    elif T is None:
        T = np.eye(M)
    T = _symmetric_psd(T, n("T"))
    if not np.any(T):
        raise InvalidArgument(f"{n('T')} must not be zero (the teacher needs at least one nonzero vector)", n("T"))
    L = gram_factor_rank(T)
    if parametrisation is not None:
        parametrisation = _check_parametrisation(parametrisation, K, M, T, teacher_vectors, n("parametrisation"))
        if parametrisation["kind"] == "scratch":
            parametrisation = None
    if parametrisation is not None:
        if Q0 is not None or R0 is not None:
            where = n("Q0") if Q0 is not None else n("R0")
            raise InvalidArgument(f"{where}: initial overlaps Q, R of V are for a student learnt from scratch; a {parametrisation['kind']} student's initial Theta is given by {n('init')} (random, zero or explicit)", where)
        init = _check_linear_init(init, parametrisation, T, n("init"))
        _check_constraint(constraint, init, parametrisation["rank"], n)
        values = dict(convention=convention, teacher_activation=sigma_star, student_activation=sigma, teacher_second_layer=_readonly(np.array(a_star, dtype=float)), student_second_layer=_readonly(np.array(a, dtype=float)), teacher_scale=teacher_scale, student_scale=student_scale, noise=noise, T=_readonly(T), teacher_vectors=_readonly(teacher_vectors), train_second_layer=train_second_layer, second_layer_ratio=second_layer_ratio, weight_decay=weight_decay, second_layer_weight_decay=second_layer_weight_decay, constraint=constraint, init=init, parametrisation=parametrisation)
        return CommitteeModel(**values)
    # the initial state
    if Q0 is not None or R0 is not None:
        if init is not None:
            raise InvalidArgument(f"give the initial state as overlaps ({n('Q0')}, {n('R0')}) or as a rule ({n('init')}), not both", n("init"))
        if Q0 is None or R0 is None:
            missing = n("Q0") if Q0 is None else n("R0")
            raise InvalidArgument(f"initial overlaps need both Q and R: {missing} is missing", missing)
        if Q0.shape != (K, K):
            raise InvalidArgument(f"{n('Q0')} must have shape ({K}, {K}), got {Q0.shape}", n("Q0"))
        if R0.shape != (K, M):
            raise InvalidArgument(f"{n('R0')} must have shape ({K}, {M}), got {R0.shape}", n("R0"))
        Q0 = _symmetric_psd(Q0, n("Q0"))
        _check_overlaps(Q0, R0, L, names)
        init = {"kind": "overlaps", "Q": _readonly(Q0), "R": _readonly(R0)}
    else:
        init = _check_init({"kind": "random", "scale": 1.0} if init is None else init, K, M, n("init"))
    _check_constraint(constraint, init, K, n)
    values = dict(convention=convention, teacher_activation=sigma_star, student_activation=sigma, teacher_second_layer=_readonly(np.array(a_star, dtype=float)), student_second_layer=_readonly(np.array(a, dtype=float)), teacher_scale=teacher_scale, student_scale=student_scale, noise=noise, T=_readonly(T), teacher_vectors=_readonly(teacher_vectors), train_second_layer=train_second_layer, second_layer_ratio=second_layer_ratio, weight_decay=weight_decay, second_layer_weight_decay=second_layer_weight_decay, constraint=constraint, init=init)
    return CommitteeModel(**values)


def _check_overlaps(Q0: np.ndarray, R0: np.ndarray, L: np.ndarray, names: dict) -> None:
    """R0's rows must lie in the span of T's columns (R0 = Y^T L^T) and Gamma = Q0 - Y^T Y must be PSD."""
    Y, residual = overlap_coordinates(R0, L)
    scale = max(1.0, float(np.max(np.abs(R0))))
    if residual > 1e-9 * scale:
        raise InvalidArgument(f"{names['R0']} is not consistent with T: its rows must lie in the span of T's columns (student-teacher overlaps of a singular teacher Gram matrix), off by {residual:.3g}", names["R0"])
    gamma = Q0 - Y.T @ Y
    smallest = float(np.linalg.eigvalsh(0.5 * (gamma + gamma.T)).min())
    if smallest < -1e-9 * max(1.0, float(np.max(np.abs(Q0)))):
        raise InvalidArgument(f"{names['Q0']}, {names['R0']} and T are not the overlaps of vectors: Gamma = Q - R T^+ R^T (the students' part outside the teacher's span) must be positive semi-definite (smallest eigenvalue {smallest:.3g})", names["Q0"])


def overlap_coordinates(R: np.ndarray, L: np.ndarray) -> tuple:
    """``(Y, residual)``: the students' coordinates in F (p x K) with ``R = Y^T L^T`` (least squares), and
    the largest misfit."""
    Y = np.linalg.lstsq(L, R.T, rcond=None)[0]
    residual = float(np.max(np.abs(L @ Y - R.T))) if R.size else 0.0
    return Y, residual


def _check_init(init, K: int, M: int, name: str) -> dict:
    if not isinstance(init, dict):
        raise InvalidArgumentType(f"{name} must be an object with a 'kind' ({', '.join(COMMITTEE_INIT_KINDS[:3])}), got {type(init).__name__}", name)
    kind = init.get("kind")
    kinds = COMMITTEE_INIT_KINDS[:3]
    if kind == "overlaps":
        raise InvalidArgument(f"{name}: give initial overlaps as the top-level 'overlaps' object (Q, R), not as an init kind", name)
    check_choice(kind, f"{name}.kind", kinds)
    allowed = {"random": ("kind", "scale"), "zero": ("kind",), "informed": ("kind", "scale")}[kind]
    unknown = sorted(set(init) - set(allowed))
    if unknown:
        raise InvalidArgument(f"{name}: unknown key {unknown[0]!r} for kind {kind!r} (known: {', '.join(allowed)})", f"{name}.{unknown[0]}")
    result = {"kind": kind}
    if kind == "random":
        result["scale"] = check_real(init.get("scale", 1.0), f"{name}.scale", 0.0, MAX_MAGNITUDE, low_open=True)
    elif kind == "informed":
        if K != M:
            raise InvalidArgument(f"{name}: 'informed' initialisation (v_i = w*_i + noise) needs K = M, got K = {K}, M = {M}", name)
        result["scale"] = check_real(init.get("scale", 0.0), f"{name}.scale", 0.0, MAX_MAGNITUDE)
    return result


def _check_constraint(constraint: str, init: dict, K: int, n) -> None:
    """A constrained student starts on its manifold: overlaps must satisfy the constraint; zero refused."""
    if constraint == "none":
        return
    if init["kind"] == "zero":
        raise InvalidArgument(f"{n('init')}: a zero initial state is not on the {constraint} constraint's manifold", n("init"))
    if init["kind"] == "overlaps":
        Q = init["Q"]
        if constraint == "sphere" and not np.allclose(np.diag(Q), 1.0, atol=1e-9):
            raise InvalidArgument(f"{n('Q0')}: constraint 'sphere' needs unit student vectors (diag Q = 1), got diag {np.diag(Q).tolist()}", n("Q0"))
        if constraint == "stiefel" and not np.allclose(Q, np.eye(K), atol=1e-9):
            raise InvalidArgument(f"{n('Q0')}: constraint 'stiefel' needs orthonormal student vectors (Q = I)", n("Q0"))
    if init["kind"] == "explicit":
        Q = init["gram"]
        if constraint == "sphere" and not np.allclose(np.diag(Q), 1.0, atol=1e-9):
            raise InvalidArgument(f"{n('init')}.gram: constraint 'sphere' needs unit rows of Theta (diag = 1), got diag {np.diag(Q).tolist()}", f"{n('init')}.gram")
        if constraint == "stiefel" and not np.allclose(Q, np.eye(K), atol=1e-9):
            raise InvalidArgument(f"{n('init')}.gram: constraint 'stiefel' needs orthonormal rows of Theta (gram = I)", f"{n('init')}.gram")


def joint_gram(T: np.ndarray, base: dict) -> np.ndarray:
    """``[[T, R0^T], [R0, G0]]``: the Gram matrix of the teacher's (M) and the base's (K) vectors.

    Parameters
    ----------
    T : ndarray (M, M)
    base : dict
        ``gram`` (G0 = W0 W0^T, K x K) and ``teacher_overlap`` (R0 = W0 W*^T, K x M).

    Returns
    -------
    ndarray (M + K, M + K)
    """
    G0, R0 = np.asarray(base["gram"], dtype=float), np.asarray(base["teacher_overlap"], dtype=float)
    return np.block([[np.asarray(T, dtype=float), R0.T], [R0, G0]])


def _parametrisation_dict(parametrisation: dict) -> dict:
    """The JSON form of a validated parametrisation (arrays as lists)."""
    out = {key: value for key, value in parametrisation.items() if key != "base"}
    out["coefficients"] = np.asarray(parametrisation["coefficients"]).tolist()
    base = parametrisation["base"]
    out["base"] = {"vectors": base["vectors"].tolist()} if "vectors" in base else {"gram": base["gram"].tolist(), "teacher_overlap": base["teacher_overlap"].tolist()}
    return out


def _check_parametrisation(value, K: int, M: int, T: np.ndarray, teacher_vectors, name: str) -> dict:
    """A parametrisation validated (every key named as ``name.key``), with its defaults filled in."""
    _check_keys(value, _PARAMETRISATION_KEYS, name, prefix=f"{name}.")
    kind = value.get("kind", "scratch")
    check_choice(kind, f"{name}.kind", COMMITTEE_PARAMETRISATIONS)
    if kind == "scratch":
        extra = [key for key in value if key != "kind"]
        if extra:
            raise InvalidArgument(f"{name}.{extra[0]}: a student learnt from scratch (V = Theta) takes no {extra[0]!r} (only lora and full do)", f"{name}.{extra[0]}")
        return {"kind": "scratch"}
    if kind == "lora":
        if "rank" not in value:
            raise InvalidArgument(f"{name}.rank is missing (a LoRA student needs its rank r, 1 <= r <= K = {K})", f"{name}.rank")
        r = check_integer(value["rank"], f"{name}.rank", 1, K)
    else:
        r = K
        if "rank" in value and (isinstance(value["rank"], bool) or value["rank"] != K):
            raise InvalidArgument(f"{name}.rank: full fine-tuning has rank K = {K} (B is K x K), got {value['rank']!r}", f"{name}.rank")
    # the base
    if "base" not in value:
        raise InvalidArgument(f"{name}.base is missing (a {kind} student needs its frozen base W0: gram and teacher_overlap, or vectors)", f"{name}.base")
    base_in = value["base"]
    _check_keys(base_in, _BASE_KEYS, f"{name}.base", prefix=f"{name}.base.")
    base = {}
    if "vectors" in base_in:
        where = f"{name}.base.vectors"
        if "gram" in base_in or "teacher_overlap" in base_in:
            raise InvalidArgument(f"{where}: give the base as vectors or by its Gram matrices (gram, teacher_overlap), not both", where)
        if teacher_vectors is None:
            raise InvalidArgument(f"{where}: explicit base vectors need explicit teacher vectors (else give the base by gram and teacher_overlap)", where)
        W0 = check_array(base_in["vectors"], where, ndim=2, bound=MAX_MAGNITUDE)
        if W0.shape != (K, teacher_vectors.shape[1]):
            raise InvalidArgument(f"{where} must have shape ({K}, {teacher_vectors.shape[1]}) (K x the teacher vectors' d), got {W0.shape}", where)
        base = {"vectors": _readonly(W0), "gram": _readonly(W0 @ W0.T), "teacher_overlap": _readonly(W0 @ teacher_vectors.T)}
    else:
        if teacher_vectors is not None:
            raise InvalidArgument(f"{name}.base: with explicit teacher vectors give the base's vectors too ({name}.base.vectors, K x d)", f"{name}.base")
        for key, shape in (("gram", (K, K)), ("teacher_overlap", (K, M))):
            where = f"{name}.base.{key}"
            if key not in base_in:
                raise InvalidArgument(f"{where} is missing (the base needs gram = W0 W0^T, K x K, and teacher_overlap = W0 W*^T, K x M)", where)
            array = check_array(base_in[key], where, ndim=2, bound=MAX_MAGNITUDE)
            if array.shape != shape:
                raise InvalidArgument(f"{where} must have shape {shape}, got {array.shape}", where)
            base[key] = array
        base["gram"] = _readonly(_symmetric_psd(base["gram"], f"{name}.base.gram"))
        base["teacher_overlap"] = _readonly(base["teacher_overlap"])
        joint = joint_gram(T, base)
        scale = max(1.0, float(np.max(np.abs(joint))))
        smallest = float(np.linalg.eigvalsh(joint).min())
        if smallest < -1e-9 * scale:
            raise InvalidArgument(f"{name}.base: T, teacher_overlap and gram are not the Gram matrix of vectors: the joint Gram [[T, R0^T], [R0, G0]] of teacher and base must be positive semi-definite (smallest eigenvalue {smallest:.3g})", f"{name}.base.teacher_overlap")
    # the coefficients
    train = _boolean(value.get("train_coefficients", kind == "lora"), f"{name}.train_coefficients")
    if "coefficients" in value:
        B = check_array(value["coefficients"], f"{name}.coefficients", ndim=2, bound=MAX_MAGNITUDE)
        if B.shape != (K, r):
            raise InvalidArgument(f"{name}.coefficients must have shape ({K}, {r}) (K x rank), got {B.shape}", f"{name}.coefficients")
    elif kind == "full":
        B = np.eye(K)
    elif train:
        B = np.zeros((K, r))
    else:
        raise InvalidArgument(f"{name}.coefficients is missing: a LoRA student with frozen coefficients needs them (K x r); zeros would never move", f"{name}.coefficients")
    ratio = check_real(value.get("coefficient_ratio", 1.0), f"{name}.coefficient_ratio", 0.0, MAX_MAGNITUDE, low_open=True)
    orthogonal = _boolean(value.get("orthogonal_to_base", False), f"{name}.orthogonal_to_base")
    return {"kind": kind, "rank": r, "base": base, "coefficients": _readonly(B), "train_coefficients": train, "coefficient_ratio": ratio, "orthogonal_to_base": orthogonal}


def _check_linear_init(init, parametrisation: dict, T: np.ndarray, name: str) -> dict:
    """The rule of Theta's start for a fine-tuning student: random (scale), zero or explicit (its Gram and its
    overlaps with the teacher's and the base's vectors, consistent with them)."""
    kind_name = parametrisation["kind"]
    if init is None:
        init = {"kind": "zero"} if kind_name == "full" else {"kind": "random", "scale": 1.0}
    if not isinstance(init, dict):
        raise InvalidArgumentType(f"{name} must be an object with a 'kind' ({', '.join(LINEAR_INIT_KINDS)}), got {type(init).__name__}", name)
    kind = init.get("kind")
    if kind in ("informed", "overlaps"):
        raise InvalidArgument(f"{name}: {kind!r} initialisation is for a student learnt from scratch; a {kind_name} student's Theta starts random, zero or explicit", name)
    check_choice(kind, f"{name}.kind", LINEAR_INIT_KINDS)
    allowed = {"random": ("kind", "scale"), "zero": ("kind",), "explicit": ("kind", "gram", "teacher_overlap", "base_overlap")}[kind]
    unknown = sorted(set(init) - set(allowed))
    if unknown:
        raise InvalidArgument(f"{name}: unknown key {unknown[0]!r} for kind {kind!r} (known: {', '.join(allowed)})", f"{name}.{unknown[0]}")
    if kind == "random":
        return {"kind": "random", "scale": check_real(init.get("scale", 1.0), f"{name}.scale", 0.0, MAX_MAGNITUDE, low_open=True)}
    if kind == "zero":
        if parametrisation["kind"] == "lora" and parametrisation["train_coefficients"] and not np.any(parametrisation["coefficients"]):
            raise InvalidArgument(f"{name}: zero Theta with zero coefficients B never moves (both gradients vanish); start Theta random or B nonzero", name)
        return {"kind": "zero"}
    r, K, M = parametrisation["rank"], parametrisation["coefficients"].shape[0], T.shape[0]
    out = {"kind": "explicit"}
    for key, shape in (("gram", (r, r)), ("teacher_overlap", (r, M)), ("base_overlap", (r, K))):
        where = f"{name}.{key}"
        if key not in init:
            raise InvalidArgument(f"{where} is missing (an explicit Theta needs gram (r x r), teacher_overlap (r x M) and base_overlap (r x K))", where)
        array = check_array(init[key], where, ndim=2, bound=MAX_MAGNITUDE)
        if array.shape != shape:
            raise InvalidArgument(f"{where} must have shape {shape}, got {array.shape}", where)
        out[key] = array
    out["gram"] = _symmetric_psd(out["gram"], f"{name}.gram")
    base = parametrisation["base"]
    factor = gram_factor_rank(joint_gram(T, base))
    Y, residual = overlap_coordinates(np.hstack([out["teacher_overlap"], out["base_overlap"]]), factor)
    scale = max(1.0, float(np.max(np.abs(out["teacher_overlap"]))), float(np.max(np.abs(out["base_overlap"]))))
    if residual > 1e-9 * scale:
        raise InvalidArgument(f"{name}: teacher_overlap and base_overlap are not consistent with the teacher's and the base's Gram matrices (Theta's component in their span), off by {residual:.3g}", f"{name}.teacher_overlap")
    gamma = out["gram"] - Y.T @ Y
    smallest = float(np.linalg.eigvalsh(0.5 * (gamma + gamma.T)).min())
    if smallest < -1e-9 * max(1.0, float(np.max(np.abs(out["gram"])))):
        raise InvalidArgument(f"{name}.gram: gram, teacher_overlap and base_overlap are not the overlaps of vectors (Theta's part outside the span of teacher and base would have a negative Gram, smallest eigenvalue {smallest:.3g})", f"{name}.gram")
    if parametrisation["orthogonal_to_base"] and np.any(np.abs(out["base_overlap"]) > 1e-12 * scale):
        raise InvalidArgument(f"{name}.base_overlap: with orthogonal_to_base Theta starts orthogonal to the base (base_overlap = 0)", f"{name}.base_overlap")
    for key in ("gram", "teacher_overlap", "base_overlap"):
        out[key] = _readonly(out[key])
    return out


def _check_keys(data, allowed, where: str, prefix: str | None = None) -> None:
    if not isinstance(data, dict):
        raise InvalidArgumentType(f"{where} must be an object, got {type(data).__name__}", where)
    unknown = [key for key in data if key not in allowed]
    if unknown:
        if prefix is None:
            prefix = f"{where}." if where != "model" else ""
        raise InvalidArgument(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(allowed)})", f"{prefix}{unknown[0]}")


def committee_model_from_dict(data: dict) -> CommitteeModel:
    """The model of the JSON contract (see the module's text); every key validated, errors naming it
    (e.g. ``student.width``, ``overlaps.R``).

    Parameters
    ----------
    data : dict

    Returns
    -------
    CommitteeModel

    Examples
    --------
    >>> spec = {"model": "committee", "convention": "saad_solla",
    ...         "teacher": {"activation": "erf(z/sqrt(2))", "second_layer": [1, 1], "noise": 0.0},
    ...         "student": {"activation": "erf(z/sqrt(2))", "width": 2, "second_layer": [1, 1], "train_second_layer": False},
    ...         "overlaps": {"Q": [[0.24, 0], [0, 0.25]], "R": [[0.01, 0], [0, 0.01]], "T": [[1, 0], [0, 1]]}}
    >>> model = committee_model_from_dict(spec)
    >>> model.K, model.M, committee_model_from_dict(model.to_dict()) == model
    (2, 2, True)
    """
    _check_keys(data, _TOP_KEYS, "model")
    if data.get("model", "committee") != "committee":
        raise InvalidArgument(f"model: this is the committee model's reader, got model {data.get('model')!r}", "model")
    teacher = data.get("teacher", {})
    student = data.get("student", {})
    overlaps = data.get("overlaps")
    _check_keys(teacher, _TEACHER_KEYS, "teacher")
    _check_keys(student, _STUDENT_KEYS, "student")
    arguments = {}
    names = {}
    for key, argument in (("activation", "teacher_activation"), ("second_layer", "teacher_second_layer"), ("noise", "noise"), ("vectors", "teacher_vectors"), ("gram", "T"), ("scale", "teacher_scale")):
        names[argument] = f"teacher.{key}"
        if key in teacher:
            arguments[argument] = teacher[key]
    for key, argument in (("activation", "student_activation"), ("width", "width"), ("second_layer", "student_second_layer"), ("train_second_layer", "train_second_layer"), ("second_layer_ratio", "second_layer_ratio"), ("constraint", "constraint"), ("weight_decay", "weight_decay"), ("second_layer_weight_decay", "second_layer_weight_decay"), ("init", "init"), ("scale", "student_scale"), ("parametrisation", "parametrisation")):
        names[argument] = f"student.{key}"
        if key in student:
            arguments[argument] = student[key]
    if "convention" in data:
        arguments["convention"] = data["convention"]
    names["teacher_width"] = "teacher.second_layer"
    if overlaps is not None:
        _check_keys(overlaps, _OVERLAP_KEYS, "overlaps")
        kind = student.get("parametrisation", {}).get("kind", "scratch") if isinstance(student.get("parametrisation"), dict) else "scratch"
        if kind in ("lora", "full") and ("Q" in overlaps or "R" in overlaps):
            raise InvalidArgument(f"overlaps: the initial overlaps Q, R of V are for a student learnt from scratch; a {kind} student's Theta starts by student.init (random, zero or explicit)", "overlaps")
        names |= {"Q0": "overlaps.Q", "R0": "overlaps.R"}
        if "init" in student:
            raise InvalidArgument("give the initial state as 'overlaps' (Q, R) or as 'student.init', not both", "student.init")
        for key in ("Q", "R"):
            if key not in overlaps:
                raise InvalidArgument(f"overlaps.{key} is missing (the initial state needs Q and R)", f"overlaps.{key}")
        arguments["Q0"], arguments["R0"] = overlaps["Q"], overlaps["R"]
        if "T" in overlaps:
            T = check_array(overlaps["T"], "overlaps.T", ndim=2, bound=MAX_MAGNITUDE)
            if "vectors" in teacher:
                implied = check_array(teacher["vectors"], "teacher.vectors", ndim=2, bound=MAX_MAGNITUDE)
                implied = implied @ implied.T
                if implied.shape != T.shape or not np.allclose(implied, T, atol=1e-9 * max(1.0, float(np.max(np.abs(T))))):
                    raise InvalidArgument("overlaps.T must equal W* W*^T of teacher.vectors when both are given", "overlaps.T")
            elif "gram" in teacher:
                gram = check_array(teacher["gram"], "teacher.gram", ndim=2, bound=MAX_MAGNITUDE)
                if gram.shape != T.shape or not np.allclose(gram, T, atol=1e-12):
                    raise InvalidArgument("overlaps.T and teacher.gram must agree when both are given", "overlaps.T")
            else:
                arguments["T"] = T
                names["T"] = "overlaps.T"
    if "activation" not in teacher:
        arguments.setdefault("teacher_activation", "erf(z/sqrt(2))")
    return committee_model(**arguments, _names=names)


def load_committee_model(path) -> CommitteeModel:
    """Read a committee model from a JSON file, or a TOML file (``.toml``) of the same structure.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    CommitteeModel
    """
    from ..._io import read_json_file, read_toml_file

    if str(path).lower().endswith(".toml"):
        data = read_toml_file(path, "model file", "path")
    else:
        data = read_json_file(path, "model file", "path")
    return committee_model_from_dict(data)


def finetuning_committee_model(problem, *, init_scale: float = 1.0) -> CommitteeModel:
    """The rank-1 fine-tuning model of Dayi & Chen (MATH.md §2, §4b) as a LoRA member of the committee family.

    Base ``W``, teacher rows ``W + xi c u^T`` (u ⟂ span W), student rows ``W + xi c_hat u_hat^T`` with only
    ``u_hat`` trained on the unit sphere of span(W)^⟂: ``W0 = D W``, ``B = xi D c_hat`` (frozen), ``Theta =
    u_hat^T`` (rank 1, constraint ``sphere``, ``orthogonal_to_base``, a uniform start), the teacher's Gram
    ``D* (G + xi^2 c c^T) D*``, ``a = a* = lam`` frozen, the output scale ``s_out`` on both, and the loss
    ``(y - f)^2`` (convention ``popgrad``). D, D* are the neurons' multipliers of the problem's convention:
    1 (raw), rho (common), ``1 / |w_i + xi c_i u|`` (normalized: the norms are constant because u_hat stays
    a unit vector ⟂ W, so the normalised neurons are a linear parametrisation too). The overlap of the
    fine-tuning chain is ``m = <u_hat, u> = (R - D G D*)_ij / (xi^2 D_i c_hat_i c_j D*_j)``.

    Parameters
    ----------
    problem : FineTuningProblem
    init_scale : float > 0, default 1
        The scale of Theta's random start (no effect on the law: the sphere normalises it).

    Returns
    -------
    CommitteeModel

    Examples
    --------
    >>> import popgrad
    >>> problem = popgrad.orthonormal_problem("relu", k=3, xi=1.0, seed=0, convention="raw")
    >>> model = finetuning_committee_model(problem)
    >>> model.kind, model.rank, model.orthogonal_to_base, model.p
    ('lora', 1, True, 4)
    """
    G = np.asarray(problem.gram, dtype=float)
    xi = float(problem.xi)
    c, c_hat = np.asarray(problem.c, dtype=float), np.asarray(problem.c_hat, dtype=float)
    teacher = np.asarray(problem.teacher_scales, dtype=float) / np.asarray(problem.teacher_norms, dtype=float)
    student = np.asarray(problem.student_scales, dtype=float) / np.asarray(problem.student_norms, dtype=float)
    T = teacher[:, None] * (G + xi**2 * np.outer(c, c)) * teacher[None, :]
    base = {"gram": student[:, None] * G * student[None, :], "teacher_overlap": student[:, None] * G * teacher[None, :]}
    lam = np.asarray(problem.lam, dtype=float)
    s_out = float(problem.s_out)
    parametrisation = {"kind": "lora", "rank": 1, "base": base, "coefficients": (xi * student * c_hat)[:, None], "train_coefficients": False, "orthogonal_to_base": True}
    return committee_model(problem.activation, T=0.5 * (T + T.T), teacher_second_layer=lam, student_second_layer=lam, convention="popgrad", constraint="sphere", init={"kind": "random", "scale": init_scale}, teacher_scale=s_out, student_scale=s_out, parametrisation=parametrisation)
