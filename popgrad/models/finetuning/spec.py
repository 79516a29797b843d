"""The rank-1 fine-tuning problem of Dayi & Chen (MATH.md §2) as a frozen specification.

Base model ``f(x) = sum_i lam_i sigma(<w_i, x>)``; teacher weights ``W + xi c u^T``, student weights
``W + xi c_hat u_hat^T`` with u, u_hat unit and orthogonal to span(W). Only u_hat is trained.

Three conventions, named and never mixed:

* ``normalized`` (the paper's proofs): each neuron is divided by its norm,
  ``v_i = (w_i + xi c_i u) / r_i`` with ``r_i = sqrt(|w_i|^2 + xi^2 c_i^2)``;
* ``raw`` (the paper's introduction, LoRA practice): ``sigma(<w_i + xi c_i u, x>)`` as is;
* ``common`` (the paper's App. B, literally): one prefactor for all neurons,
  ``v_i = rho (w_i + xi c_i u)`` with ``rho`` given or ``k / (k + xi^2)``, no per-neuron normalisation,
  and the output scale ``1/xi`` (App. B's ``f(x) = (1/xi) sum_i lam_i sigma(<v_i, x>)``) as the
  problem's own (:attr:`FineTuningProblem.s_out`; a general model may switch it to 1).

Neuron i of the teacher then acts at scale ``s_i = r_i`` (raw), ``rho r_i`` (common) or 1 (normalized)
on a unit direction;
with quantized c (Assumption 3) and unit rows all ``r_i = r = sqrt(1 + xi^2/k)``. General c and
non-unit rows give per-neuron scales, handled by the two-scale kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ..._io import ContentEqual, check_output_file, write_text
from ..._validation import MAX_MAGNITUDE, InvalidArgument, InvalidArgumentType, check_array, check_choice, check_integer, check_real, check_memory
from ...numerics.linalg import numerical_rank

if TYPE_CHECKING:
    from ...gaussian.activations import Activation

__all__ = [
    "FineTuningProblem",
    "CONVENTIONS",
    "orthonormal_problem",
    "random_features_problem",
    "glm_problem",
    "claim2_problem",
    "draw_signs",
    "load_problem",
]

CONVENTIONS = ("normalized", "raw", "common")
_KEYS = {"activation", "lam", "gram", "W", "c", "c_hat", "xi", "convention", "prefactor"}
#: keys of the general model (MATH.md §4b) in a problem file, read by general.general_model_from_dict
GENERAL_MODEL_KEYS = ("model", "u", "U", "alpha", "C", "C_hat", "rank", "output_scale", "student", "train_c_hat", "c_hat_lr", "unconstrained", "seed")


@dataclass(frozen=True, eq=False)
class FineTuningProblem(ContentEqual):
    """A frozen rank-1 fine-tuning problem.

    Parameters
    ----------
    activation : str or Activation
    lam : array (k,)
        Output weights of the base model (known, frozen).
    gram : array (k, k)
        ``G = W W^T``; symmetric positive semi-definite. Omit it when ``W`` is given.
    c, c_hat : array (k,)
        Teacher and (frozen) student adapter coefficients; nonzero entries (so that every neuron has
        positive norm).
    xi : float > 0
        Adapter scale.
    convention : 'normalized', 'raw' or 'common'
    W : array (k, d), optional
        Explicit base weights; ``gram`` is then ``W W^T``.
    prefactor : float > 0, optional
        The common convention's one prefactor rho of every neuron, ``v_i = rho (w_i + xi c_i u)``
        (default ``k / (k + xi^2)``, App. B); only with ``convention='common'``.

    Examples
    --------
    >>> problem = orthonormal_problem("relu", k=4, xi=1.0, seed=0)
    >>> problem.k, problem.convention, round(float(problem.teacher_norms[0]), 6)
    (4, 'normalized', 1.118034)
    >>> common = problem.replace(convention="common")
    >>> common.neuron_prefactor, common.s_out, round(float(common.teacher_scales[0]), 6)
    (0.8, 1.0, 0.894427)
    """

    activation: Activation
    lam: np.ndarray
    gram: np.ndarray
    c: np.ndarray
    c_hat: np.ndarray
    xi: float
    convention: str = "normalized"
    W: np.ndarray | None = field(default=None)
    prefactor: float | None = None

    def __init__(self, activation, lam, gram=None, c=None, c_hat=None, xi=1.0, convention="normalized", W=None, prefactor=None):
        from ...gaussian.activations import activation as _activation  # the catalogue (sympy) on first use

        sigma = _activation(activation)
        lam = check_array(lam, "lam", ndim=1, bound=MAX_MAGNITUDE)
        k = lam.shape[0]
        if k < 1:
            raise InvalidArgument("lam must have at least one entry (k >= 1)")
        if W is not None:
            W = check_array(W, "W", ndim=2, bound=MAX_MAGNITUDE)
            if W.shape[0] != k:
                raise InvalidArgument(f"W must have k = {k} rows (one per neuron), got shape {W.shape}")
            implied = W @ W.T
            if gram is not None and not np.allclose(check_array(gram, "gram", shape=(k, k)), implied, atol=1e-10):
                raise InvalidArgument("gram must equal W W^T when both are given")
            gram = implied
        if gram is None:
            raise InvalidArgument("give gram (k x k) or W (k x d)")
        gram = check_array(gram, "gram", shape=(k, k), bound=MAX_MAGNITUDE)
        if not np.allclose(gram, gram.T, atol=1e-12):
            raise InvalidArgument("gram must be symmetric")
        gram = 0.5 * (gram + gram.T)
        smallest = float(np.linalg.eigvalsh(gram).min()) if k else 0.0
        if smallest < -1e-10 * max(1.0, float(np.abs(gram).max())):
            raise InvalidArgument(f"gram must be positive semi-definite (smallest eigenvalue {smallest:.3g})")
        if np.any(np.diag(gram) < 0):
            raise InvalidArgument("gram must have a non-negative diagonal (squared row norms)")
        c = check_array(c, "c", shape=(k,), bound=MAX_MAGNITUDE)
        c_hat = check_array(c_hat, "c_hat", shape=(k,), bound=MAX_MAGNITUDE)
        if np.any(c == 0) or np.any(c_hat == 0):
            raise InvalidArgument("c and c_hat must have nonzero entries")
        xi = check_real(xi, "xi", 0.0, MAX_MAGNITUDE, low_open=True)
        check_choice(convention, "convention", CONVENTIONS)
        if prefactor is not None:
            if convention != "common":
                raise InvalidArgument(f"prefactor is the common convention's (v_i = rho (w_i + xi c_i u)); convention {convention!r} takes none", "prefactor")
            prefactor = check_real(prefactor, "prefactor", 0.0, MAX_MAGNITUDE, low_open=True)
        if convention != "normalized" and sigma.family == "numeric":
            # raw neurons see pre-activations of standard deviation r_i = sqrt(G_ii + xi^2 c_i^2) (common:
            # rho r_i): an expression square-integrable at scale 1 (exp(z^2/8)) need not be at r_i (sqrt 2)
            multiplier = 1.0 if convention == "raw" else (k / (k + xi**2) if prefactor is None else prefactor)
            scale = multiplier * float(np.sqrt(np.max(np.diag(gram)) + xi**2 * max(np.max(c**2), np.max(c_hat**2))))
            from ...gaussian.activations import not_square_integrable

            reason = not_square_integrable(sigma.expression, scale)
            if reason:
                raise InvalidArgument(f"xi = {xi:g} is too large for {sigma.name!r} with {convention} neurons: {reason}, so h(m) is infinite (use a smaller xi or convention 'normalized')", "xi")
        for name, value in [("activation", sigma), ("lam", lam), ("gram", gram), ("c", c), ("c_hat", c_hat), ("xi", xi), ("convention", convention), ("W", W), ("prefactor", prefactor)]:
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
            object.__setattr__(self, name, value)

    # -- derived quantities ------------------------------------------------------------------------

    @property
    def k(self) -> int:
        return self.lam.shape[0]

    @property
    def teacher_norms(self) -> np.ndarray:
        """``r_i = sqrt(G_ii + xi^2 c_i^2)``: norms of the teacher neurons ``w_i + xi c_i u``."""
        return np.sqrt(np.diag(self.gram) + self.xi**2 * self.c**2)

    @property
    def student_norms(self) -> np.ndarray:
        """``r_hat_j = sqrt(G_jj + xi^2 c_hat_j^2)``."""
        return np.sqrt(np.diag(self.gram) + self.xi**2 * self.c_hat**2)

    @property
    def neuron_prefactor(self) -> float:
        """The factor every neuron's pre-activation carries before any normalisation: the common
        convention's rho (given, or ``k / (k + xi^2)``), 1 in the raw and normalized conventions."""
        if self.convention != "common":
            return 1.0
        return self.k / (self.k + self.xi**2) if self.prefactor is None else self.prefactor

    @property
    def output_scale(self) -> str:
        """The problem's own output scale: ``'inverse_xi'`` (App. B's 1/xi) in the common convention,
        ``'one'`` otherwise; a general model's default (:func:`.model.general_model`)."""
        return "inverse_xi" if self.convention == "common" else "one"

    @property
    def s_out(self) -> float:
        """The output multiplier of :attr:`output_scale`: 1/xi (common) or 1."""
        return 1.0 / self.xi if self.convention == "common" else 1.0

    @property
    def teacher_scales(self) -> np.ndarray:
        """Scale at which each teacher neuron sees a unit direction: ``r_i`` (raw), ``rho r_i`` (common) or
        1 (normalized)."""
        if self.convention == "common":
            return self.neuron_prefactor * self.teacher_norms
        return self.teacher_norms if self.convention == "raw" else np.ones(self.k)

    @property
    def student_scales(self) -> np.ndarray:
        if self.convention == "common":
            return self.neuron_prefactor * self.student_norms
        return self.student_norms if self.convention == "raw" else np.ones(self.k)

    @property
    def quantized(self) -> bool:
        """Assumption 3: c, c_hat in {±1/sqrt(k)}^k."""
        level = 1 / math.sqrt(self.k)
        return bool(np.allclose(np.abs(self.c), level, rtol=1e-12) and np.allclose(np.abs(self.c_hat), level, rtol=1e-12))

    @property
    def unit_rows(self) -> bool:
        return bool(np.allclose(np.diag(self.gram), 1.0, rtol=1e-12))

    @cached_property
    def rank(self) -> int:
        """rank(W) (numerical), so that span(W)^perp has dimension d - rank."""
        return numerical_rank(self.gram)

    def replace(self, **changes) -> "FineTuningProblem":
        """A copy with some fields changed (validated again; a prefactor is dropped with the common
        convention)."""
        fields = self.to_dict(arrays=True)
        if "W" in changes or "gram" in changes:
            fields.pop("W", None)
            fields.pop("gram", None)
        if changes.get("convention", "common") != "common":
            fields.pop("prefactor", None)
        fields.update(changes)
        return FineTuningProblem(**fields)

    # -- serialisation -----------------------------------------------------------------------------

    def to_dict(self, arrays: bool = False) -> dict:
        """The JSON object (``arrays=False``: lists of floats, which round-trip exactly)."""
        convert = (lambda a: a) if arrays else (lambda a: np.asarray(a).tolist())
        out = {
            "activation": self.activation.name,
            "lam": convert(self.lam),
            "c": convert(self.c),
            "c_hat": convert(self.c_hat),
            "xi": self.xi,
            "convention": self.convention,
        }
        if self.prefactor is not None:
            out["prefactor"] = self.prefactor
        if self.W is not None:
            out["W"] = convert(self.W)
        else:
            out["gram"] = convert(self.gram)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    def save(self, path: str | Path) -> None:
        write_text(check_output_file(path, "path"), self.to_json() + "\n")

    @classmethod
    def from_dict(cls, data: dict) -> "FineTuningProblem":
        if not isinstance(data, dict):
            raise InvalidArgumentType("a problem must be a JSON object")
        unknown = set(data) - _KEYS
        if unknown & set(GENERAL_MODEL_KEYS):
            raise InvalidArgument(f"problem: {sorted(unknown & set(GENERAL_MODEL_KEYS))} belong to the general model: read this file with load_general_model")
        if unknown:
            raise InvalidArgument(f"problem: unknown keys {sorted(unknown)} (allowed: {sorted(_KEYS)}, and for the general model {list(GENERAL_MODEL_KEYS)})")
        missing = {"activation", "lam", "c", "c_hat", "xi"} - set(data)
        if missing:
            raise InvalidArgument(f"problem: missing keys {sorted(missing)}")
        if "gram" not in data and "W" not in data:
            raise InvalidArgument("problem: give 'gram' (k x k) or 'W' (k x d)")
        return cls(**data)

    #: the model protocol's family: a problem is the fine-tuning model with every switch at its default
    family = "finetuning"

    def __repr__(self) -> str:
        kind = "quantized" if self.quantized else "general"
        convention = f"common (rho = {self.neuron_prefactor:g}, output 1/xi)" if self.convention == "common" else self.convention
        return f"FineTuningProblem({self.activation.name}, k={self.k}, xi={self.xi:g}, {convention}, {kind} c)"


def load_problem(path: str | Path) -> FineTuningProblem:
    """Read a problem from a JSON file (keys: activation, lam, gram or W, c, c_hat, xi, convention, prefactor).

    Parameters
    ----------
    path : str or Path
        A JSON file written by :meth:`FineTuningProblem.save` (or by hand: keys activation, lam, gram or
        W, c, c_hat, xi, convention and, in the common convention, optionally prefactor).

    Returns
    -------
    FineTuningProblem

    Raises
    ------
    InvalidArgument
        A missing file, invalid JSON, unknown or missing keys, or values out of range (named).
    """
    from ..._io import read_json_file

    return FineTuningProblem.from_dict(read_json_file(path, "problem file", "problem"))


# ------------------------------------------------------------------------------------------------
# constructors
# ------------------------------------------------------------------------------------------------


def draw_signs(k: int, generator: np.random.Generator, distribution: str = "quantized") -> np.ndarray:
    """Adapter coefficients: ``quantized`` ±1/sqrt(k) uniform (Assumption 3) or ``sphere`` (uniform on S^(k-1)).

    Parameters
    ----------
    k : int
    generator : numpy.random.Generator
    distribution : {'quantized', 'sphere'}, default 'quantized'

    Returns
    -------
    ndarray, shape (k,)
        A unit vector.
    """
    check_choice(distribution, "c_distribution", ("quantized", "sphere"))
    if distribution == "quantized":
        return generator.choice([-1.0, 1.0], size=k) / math.sqrt(k)
    v = generator.standard_normal(k)
    return v / np.linalg.norm(v)


def _common(k, xi, seed, lam, c_distribution):
    k = check_integer(k, "k", 1, 4096)
    check_real(xi, "xi", 0.0, MAX_MAGNITUDE, low_open=True)
    generator = np.random.default_rng(check_integer(seed, "seed", 0, 2**63 - 1))
    lam = np.ones(k) if lam is None else check_array(lam, "lam", shape=(k,))  # one per neuron: named before the Gram matrix of k rows
    c = draw_signs(k, generator, c_distribution)
    c_hat = draw_signs(k, generator, c_distribution)
    return k, generator, lam, c, c_hat


def orthonormal_problem(activation, k: int, xi: float, *, seed: int = 0, lam=None, convention: str = "normalized", c_distribution: str = "quantized", prefactor: float | None = None) -> FineTuningProblem:
    """Orthonormal features ``G = I``; c, c_hat drawn independently with ``seed``.

    Every problem constructor takes ``activation, k, xi`` in this order, and the rest as keywords.

    Parameters
    ----------
    activation : str or Activation
        A catalogue name or an expression in ``z`` (see :func:`popgrad.activation`); ``--activation``.
    k : int
        Number of neurons, 1 to 4096.
    xi : float
        Adapter scale, in (0, 1e50].
    seed : int, default 0
        Seed of the draw of c and c_hat (numpy's default generator).
    lam : array of k floats, optional
        Output weights (default all ones), entries of magnitude at most 1e50.
    convention : {'normalized', 'raw', 'common'}, default 'normalized'
        Neurons divided by their norms (the paper's proofs), as they are, or all multiplied by one
        prefactor with the output scaled by 1/xi (App. B).
    c_distribution : {'quantized', 'sphere'}, default 'quantized'
        c, c_hat with entries ±1/sqrt(k) (Assumption 3), or uniform on the unit sphere of R^k.
    prefactor : float > 0, optional
        The common convention's rho (default ``k / (k + xi^2)``).

    Returns
    -------
    FineTuningProblem
        Frozen and validated; ``problem.save(path)`` writes it as JSON.

    Examples
    --------
    >>> orthonormal_problem("tanh", 3, 1.0, seed=1).gram.tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    k, _, lam, c, c_hat = _common(k, xi, seed, lam, c_distribution)
    return FineTuningProblem(activation, lam, np.eye(k), c, c_hat, xi, convention, prefactor=prefactor)


def random_features_problem(activation, k: int, xi: float, *, d: int, seed: int = 0, lam=None, convention: str = "normalized", c_distribution: str = "quantized", prefactor: float | None = None) -> FineTuningProblem:
    """Rows of W uniform on the unit sphere of R^d (nearly orthogonal, as in the paper's simulations).

    Parameters
    ----------
    activation, k, xi, seed, lam, convention, c_distribution, prefactor
        As in :func:`orthonormal_problem`; ``seed`` also draws W.
    d : int (keyword)
        Input dimension of the random rows of W, at least k + 2.

    Returns
    -------
    FineTuningProblem
    """
    k, generator, lam, c, c_hat = _common(k, xi, seed, lam, c_distribution)
    d = check_integer(d, "d", k + 2)
    check_memory(8.0 * 4 * k * d, f"random features W of {k} x {d}", "d")  # W, its Gram matrix pass and copies
    W = generator.standard_normal((k, d))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    return FineTuningProblem(activation, lam, None, c, c_hat, xi, convention, W=W, prefactor=prefactor)


def glm_problem(activation, k: int, xi: float, *, seed: int = 0, lam=None, convention: str = "normalized", c_distribution: str = "quantized", prefactor: float | None = None) -> FineTuningProblem:
    """The GLM case W = 0: learning from scratch, where h(0) vanishes to order m^(l*-1).

    The student's neurons are the teacher's own (``c_hat = c``, MATH.md §3), so the student can reach the
    teacher exactly and the drift is ``h(m) ∝ sum_p p mu_p^2 m^(p-1)`` (k = 1: ``f* = sigma(<u, x>)``).

    Parameters
    ----------
    activation, k, xi, seed, lam, convention, c_distribution, prefactor
        As in :func:`orthonormal_problem` (c_hat is c here).

    Returns
    -------
    FineTuningProblem

    Examples
    --------
    >>> problem = glm_problem("He_3", k=2, xi=1.0, seed=0)
    >>> bool(np.array_equal(problem.c, problem.c_hat)), problem.rank
    (True, 0)
    """
    k, _, lam, c, _ = _common(k, xi, seed, lam, c_distribution)
    return FineTuningProblem(activation, lam, np.zeros((k, k)), c, c, xi, convention, prefactor=prefactor)


def claim2_problem(activation, k: int, xi: float = 1.0, *, seed: int = 0, lam=None, convention: str = "normalized", prefactor: float | None = None) -> FineTuningProblem:
    """Claim 2: teacher neurons orthonormal, ``<w_i, w_j> = -xi^2 c_i c_j`` (i != j), unit rows.

    ``G = (1 + xi^2/k) I - xi^2 c c^T`` is positive semi-definite only for ``xi^2 (1 - 1/k) <= 1``.

    Parameters
    ----------
    activation, k, xi, seed, lam, convention, prefactor
        As in :func:`orthonormal_problem`; xi^2 (1 - 1/k) <= 1 keeps G positive semi-definite.

    Returns
    -------
    FineTuningProblem
    """
    k, _, lam, c, c_hat = _common(k, xi, seed, lam, "quantized")
    gram = -(xi**2) * np.outer(c, c)
    np.fill_diagonal(gram, 1.0)
    if xi**2 * (1 - 1 / k) > 1 + 1e-12:
        raise InvalidArgument(f"xi must satisfy xi^2 (1 - 1/k) <= 1 for the Claim 2 construction (xi <= {1 / math.sqrt(1 - 1 / k):.4g} at k = {k})")
    return FineTuningProblem(activation, lam, gram, c, c_hat, xi, convention, prefactor=prefactor)
