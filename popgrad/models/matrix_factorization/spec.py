"""The LoRA matrix-factorization problem of Xu et al. (AISTATS 2025, their Problem 2; MATH.md §6).

Frozen pre-trained factors ``W_2`` (m x h) and ``W_1`` (h x n); adapters on both layers,
``L = 1/2 ||Y_ft - (W_2 + B_2 A_2)(W_1 + B_1 A_1)||_F^2`` over ``A_1`` (r x n), ``B_1`` (h x r), ``A_2`` (r x h),
``B_2`` (m x r). The paper's construction (Assumptions 2.1 and 2.2): ``Y_pre = U_Y Σ V_Y^T`` with i.i.d.
N(0, 1) entries, ``W_2 = beta U_Y Σ^{1/2} G^T``, ``W_1 = G Σ^{1/2} V_Y^T / beta`` (Σ^{1/2} zero-padded, G
orthogonal h x h), so ``Y_pre = W_2 W_1`` and delta_w = sigma_{W_1} / sigma_{W_2} = 1 / beta^2 (§3's
convention; Theorem 4.1 prints the reciprocal), and ``Y_ft = Y_pre + s u v^T`` on the top or bottom singular
pair (u, v) of Y_pre.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..._io import ContentEqual, read_json_file, write_text
from ..._validation import InvalidArgument, check_array, check_choice, check_integer, check_memory, check_real

__all__ = ["MFProblem", "mf_problem", "paper_mf_problem", "load_mf_problem", "MF_PAIRS"]

MF_PAIRS = ("top", "bottom")
#: largest entry magnitude accepted in W_1, W_2, Y (products of four factors stay far inside float64)
MAX_ENTRY = 1e12


@dataclass(frozen=True, eq=False)
class MFProblem(ContentEqual):
    """A validated LoRA matrix-factorization problem.

    Attributes
    ----------
    W1 : ndarray (h, n)
    W2 : ndarray (m, h)
    Y_ft : ndarray (m, n)
        The fine-tuning target.
    rank : int
        The LoRA rank r.
    Y_pre : ndarray (m, n)
        The pre-training target (W_2 W_1 under Assumption 2.1).
    construction : dict
        How the problem was built (sizes, s, beta, pair, seed), empty for explicit matrices.
    G : ndarray (h, h) or None
        The orthogonal matrix of the construction.
    """

    W1: np.ndarray
    W2: np.ndarray
    Y_ft: np.ndarray
    rank: int
    Y_pre: np.ndarray
    construction: dict = field(default_factory=dict)
    G: np.ndarray | None = None

    @property
    def shape(self) -> tuple:
        """(m, n, h)."""
        return self.W2.shape[0], self.W1.shape[1], self.W1.shape[0]

    @property
    def delta_y(self) -> np.ndarray:
        """ΔY = Y_ft − Y_pre."""
        return self.Y_ft - self.Y_pre

    def target_pair(self) -> tuple:
        """The top singular triplet (sigma, u, v) of ΔY."""
        U, S, Vt = np.linalg.svd(self.delta_y)
        return float(S[0]), U[:, 0], Vt[0]

    def gammas(self) -> tuple:
        """Unit vectors gamma_1 = [g; v] / sqrt 2 and gamma_2 = [u; g] / sqrt 2 of the paper's §3.1, with
        (sigma_{W1}, g, v) the singular triplet of W_1 along v and (sigma_{W2}, u, g) that of W_2 along u
        (u, v: ΔY's top singular pair; signs chosen so that sigma_{W1}, sigma_{W2} > 0).

        Returns
        -------
        tuple
            ``(gamma_1, gamma_2, g, sigma_w1, sigma_w2)``.
        """
        _, u, v = self.target_pair()
        image = self.W1 @ v
        sigma_w1 = float(np.linalg.norm(image))
        if sigma_w1 == 0.0:
            raise InvalidArgument("W_1 annihilates ΔY's right singular vector: gamma_1 is undefined", "W1")
        g = image / sigma_w1
        sigma_w2 = float(u @ self.W2 @ g)
        if sigma_w2 < 0:
            u, sigma_w2 = -u, -sigma_w2
        gamma_1 = np.concatenate([g, v]) / math.sqrt(2.0)
        gamma_2 = np.concatenate([u, g]) / math.sqrt(2.0)
        return gamma_1, gamma_2, g, sigma_w1, sigma_w2

    @property
    def delta_w(self) -> float:
        """sigma_{W1} / sigma_{W2} along ΔY's top pair (§3's convention)."""
        _, _, _, sigma_w1, sigma_w2 = self.gammas()
        return sigma_w1 / sigma_w2

    def to_dict(self) -> dict:
        """JSON-ready: the matrices as nested lists, the rank and the construction."""
        data = {"W1": self.W1.tolist(), "W2": self.W2.tolist(), "Y_ft": self.Y_ft.tolist(), "Y_pre": self.Y_pre.tolist(), "rank": self.rank, "construction": self.construction}
        if self.G is not None:
            data["G"] = self.G.tolist()
        return data

    def save(self, path) -> None:
        """Write the problem as JSON (:func:`load_mf_problem` reads it back)."""
        write_text(Path(path), json.dumps(self.to_dict(), allow_nan=False))


def mf_problem(W1, W2, Y_ft, rank: int, Y_pre=None, G=None, construction: dict | None = None) -> MFProblem:
    """A problem from explicit matrices (validated: shapes, finiteness, rank, G orthogonal when given).

    Parameters
    ----------
    W1 : array (h, n)
    W2 : array (m, h)
    Y_ft : array (m, n)
    rank : int
        The LoRA rank r >= 1.
    Y_pre : array (m, n), optional
        Default W_2 W_1.
    G : array (h, h), optional
        The orthogonal matrix of a construction (checked: ||G^T G - I|| <= 1e-8).
    construction : dict, optional

    Returns
    -------
    MFProblem

    Examples
    --------
    >>> problem = mf_problem(np.eye(2), np.eye(2), np.diag([1.0, 2.0]), rank=1)
    >>> problem.shape, problem.delta_y.tolist()
    ((2, 2, 2), [[0.0, 0.0], [0.0, 1.0]])
    """
    W1 = check_array(W1, "W1", ndim=2, bound=MAX_ENTRY)
    W2 = check_array(W2, "W2", ndim=2, bound=MAX_ENTRY)
    Y_ft = check_array(Y_ft, "Y_ft", ndim=2, bound=MAX_ENTRY)
    h, n = W1.shape
    m = W2.shape[0]
    if W2.shape[1] != h:
        raise InvalidArgument(f"W2 must have h = {h} columns (W1 has {h} rows), got shape {W2.shape}", "W2")
    if Y_ft.shape != (m, n):
        raise InvalidArgument(f"Y_ft must have shape (m, n) = ({m}, {n}), got {Y_ft.shape}", "Y_ft")
    if min(m, n, h) < 1:
        raise InvalidArgument(f"sizes must be positive, got m, n, h = {m}, {n}, {h}", "W1")
    rank = check_integer(rank, "rank", 1, 10_000)
    Y_pre = W2 @ W1 if Y_pre is None else check_array(Y_pre, "Y_pre", shape=(m, n), bound=MAX_ENTRY)
    if G is not None:
        G = check_array(G, "G", shape=(h, h), bound=MAX_ENTRY)
        deviation = float(np.max(np.abs(G.T @ G - np.eye(h))))
        if deviation > 1e-8:
            raise InvalidArgument(f"G must be orthogonal (max |G^T G - I| <= 1e-8), got {deviation:.3g}", "G")
    return MFProblem(W1, W2, Y_ft, rank, Y_pre, dict(construction or {}), G)


def paper_mf_problem(m: int = 10, n: int = 10, h: int = 100, rank: int = 4, s: float = 5.0, beta: float = 1.05, pair: str = "top", seed: int = 0) -> MFProblem:
    """The paper's §5.1 construction (Figure 1; App. H.1 with other beta and the bottom pair).

    Parameters
    ----------
    m, n, h : int, default 10, 10, 100
        h >= max(m, n) (over-parametrised) or any h >= 1 (Σ^{1/2} is zero-padded or truncated; truncation
        breaks Y_pre = W_2 W_1 and is refused).
    rank : int, default 4
        The LoRA rank r.
    s : float > 0, default 5
        The singular value of ΔY = s u v^T.
    beta : float > 0, default 1.05
        W_2 = beta U_Y Σ^{1/2} G^T, W_1 = G Σ^{1/2} V_Y^T / beta: delta_w = 1 / beta^2.
    pair : {'top', 'bottom'}, default 'top'
        Which singular pair of Y_pre carries ΔY.
    seed : int, default 0
        Y_pre's entries and G (Haar, by QR with sign correction) from numpy's generator.

    Returns
    -------
    MFProblem

    Examples
    --------
    >>> problem = paper_mf_problem(seed=1)
    >>> problem.shape, round(problem.delta_w, 4), round(1 / 1.05**2, 4)
    ((10, 10, 100), 0.907, 0.907)
    """
    m, n, h = (check_integer(value, name, 1, 100_000) for value, name in ((m, "m"), (n, "n"), (h, "h")))
    rank = check_integer(rank, "rank", 1, 10_000)
    if rank > min(m, n, h):
        # the adapted layers are h x n and m x h: a rank beyond their sizes only adds redundant parameters
        raise InvalidArgument(f"rank {rank} exceeds min(m, n, h) = {min(m, n, h)}: the LoRA factors of the h x n and m x h layers have at most that many independent directions", "rank")
    s = check_real(s, "s", 0.0, 1e6, low_open=True)
    beta = check_real(beta, "beta", 0.0, 1e6, low_open=True)
    check_choice(pair, "pair", MF_PAIRS)
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    if h < min(m, n):
        raise InvalidArgument(f"h must be at least min(m, n) = {min(m, n)} so that Y_pre = W_2 W_1, got {h}", "h")
    # Y_pre and its SVD (m x n, m x m, n x n), G and its QR (h x h), W_1, W_2, and copies
    check_memory(8.0 * (3 * m * n + 2 * m * m + 2 * n * n + 3 * h * h + 2 * h * (m + n)), f"the m = {m}, n = {n}, h = {h} construction", "h" if h >= max(m, n) else ("m" if m >= n else "n"))
    generator = np.random.default_rng(seed)
    Y_pre = generator.standard_normal((m, n))
    U, S, Vt = np.linalg.svd(Y_pre)
    q = min(m, n)
    Q, R = np.linalg.qr(generator.standard_normal((h, h)))
    G = Q * np.sign(np.diag(R))
    root = np.sqrt(S)
    W2 = beta * (U[:, :q] * root) @ G[:, :q].T
    W1 = (G[:, :q] * root) @ Vt[:q] / beta
    index = 0 if pair == "top" else q - 1
    Y_ft = Y_pre + s * np.outer(U[:, index], Vt[index])
    construction = {"m": m, "n": n, "h": h, "s": s, "beta": beta, "pair": pair, "seed": seed}
    return MFProblem(W1, W2, Y_ft, rank, Y_pre, construction, G)


def load_mf_problem(path) -> MFProblem:
    """Read a problem written by :meth:`MFProblem.save` (or by hand: ``W1``, ``W2``, ``Y_ft``, ``rank`` and
    optionally ``Y_pre``, ``G``, ``construction``), validated as :func:`mf_problem` does.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    MFProblem
    """
    data = read_json_file(path, "problem file", "problem")
    if not isinstance(data, dict):
        raise InvalidArgument("a matrix-factorization problem must be a JSON object", "problem")
    missing = [key for key in ("W1", "W2", "Y_ft", "rank") if key not in data]
    if missing:
        raise InvalidArgument(f"problem file lacks {missing}", missing[0])
    unknown = set(data) - {"W1", "W2", "Y_ft", "Y_pre", "rank", "G", "construction"}
    if unknown:
        raise InvalidArgument(f"problem file: unknown keys {sorted(unknown)}", sorted(unknown)[0])
    return mf_problem(data["W1"], data["W2"], data["Y_ft"], data["rank"], data.get("Y_pre"), data.get("G"), data.get("construction"))
