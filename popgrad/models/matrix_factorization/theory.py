"""The paper's theory as checks, each by a route independent of the matrix flow it is compared with.

* :func:`alignment_closed_form`: Claim 3.1's linearised alignment ODE Ż_1 = σ σ_{W2} H_1 Z_1 solved exactly. With
  unit γ̂ = [g; v]/√2 and γ̄̂ = [g; -v]/√2, H_1 = γ̂γ̂^T − γ̄̂γ̄̂^T, so exp(a t H_1) = e^{at} P_+ + e^{-at} P_- + P_0
  (P_0 the projector onto the complement). The paper's (10) omits the P_0 Z_1(0) term, which the flow leaves
  unchanged; :func:`derive_alignment_solution` proves the complete formula with sympy.
* :func:`spectral_scalar_flow`: Theorem 4.1's decoupling. Under spectral initialisation the rotated adapters
  stay diagonal, and each singular direction follows the scalar flow of
  ℓ = ½ (s − (w_2 + b_2 a_2)(w_1 + b_1 a_1) + w_2 w_1)^2 (:func:`derive_scalar_flow` derives it with sympy); a
  direction with s = 0 and b = 0 never moves.
* :func:`theorem41_t1`: the separation time T_1 of Theorem 4.1 (with §3's δ_w = σ_{W1}/σ_{W2} < 1).
* :func:`stationary_example`: Appendix G.1's initialisation from the pre-trained weights only, which is
  stationary (with the printed Y_ft = Y_pre corrected to ΔY = e_2 e_2^T, MATH.md §6).
"""

from __future__ import annotations

import math

import numpy as np

from ..._validation import InvalidArgument, check_real
from .flow import MFState
from .spec import MFProblem, mf_problem

__all__ = ["alignment_closed_form", "derive_alignment_solution", "derive_scalar_flow", "spectral_scalar_flow", "theorem41_t1", "stationary_example", "spectral_directions"]


def alignment_closed_form(problem: MFProblem, Z1_0: np.ndarray, times) -> np.ndarray:
    """Z_1(t) of the linearised alignment ODE Ż_1 = σ σ_{W2} H_1 Z_1 (Claim 3.1), exactly.

    Parameters
    ----------
    problem : MFProblem
    Z1_0 : ndarray (h + n, r)
    times : array_like

    Returns
    -------
    ndarray (len(times), h + n, r)
    """
    sigma, _, _ = problem.target_pair()
    gamma, _, g, _, sigma_w2 = problem.gammas()
    h = problem.shape[2]
    bar = np.concatenate([g, -gamma[h:] * math.sqrt(2.0)]) / math.sqrt(2.0)
    plus, minus = np.outer(gamma, gamma), np.outer(bar, bar)
    rest = np.eye(gamma.size) - plus - minus
    rate = sigma * sigma_w2
    return np.stack([math.exp(rate * t) * plus @ Z1_0 + math.exp(-rate * t) * minus @ Z1_0 + rest @ Z1_0 for t in np.asarray(times, dtype=float)])


def derive_alignment_solution() -> dict:
    """Prove with sympy that Z(t) = e^{at} P_+ Z_0 + e^{-at} P_- Z_0 + P_0 Z_0 solves Ż = a H Z, Z(0) = Z_0, for
    H = [[0, g v^T], [v g^T, 0]] with unit g, v (here in R^2 each, g = (cos θ, sin θ), v = (cos φ, sin φ),
    Z_0 a generic 4 x 1 symbol vector), and that dropping P_0 Z_0 (the paper's (10)) leaves a residual.

    Returns
    -------
    dict
        ``solves`` (bool: the residual simplifies to zero and Z(0) = Z_0), ``paper_formula_solves`` (bool),
        ``residual_without_P0`` (the sympy expression of Z_paper(0) − Z_0).
    """
    import sympy

    t, a, theta, phi = sympy.symbols("t a theta phi", real=True)
    z = sympy.Matrix(sympy.symbols("z0:4", real=True))
    g = sympy.Matrix([sympy.cos(theta), sympy.sin(theta)])
    v = sympy.Matrix([sympy.cos(phi), sympy.sin(phi)])
    H = sympy.zeros(4, 4)
    H[:2, 2:] = g * v.T
    H[2:, :2] = v * g.T
    gamma = sympy.Matrix.vstack(g, v) / sympy.sqrt(2)
    bar = sympy.Matrix.vstack(g, -v) / sympy.sqrt(2)
    plus, minus = gamma * gamma.T, bar * bar.T
    rest = sympy.eye(4) - plus - minus
    Z = sympy.exp(a * t) * plus * z + sympy.exp(-a * t) * minus * z + rest * z
    residual = sympy.simplify(Z.diff(t) - a * H * Z)
    start = sympy.simplify(Z.subs(t, 0) - z)
    paper = sympy.exp(a * t) * plus * z + sympy.exp(-a * t) * minus * z
    paper_start = sympy.simplify(paper.subs(t, 0) - z)
    return {"solves": residual == sympy.zeros(4, 1) and start == sympy.zeros(4, 1), "paper_formula_solves": paper_start == sympy.zeros(4, 1), "residual_without_P0": paper_start}


def derive_scalar_flow() -> dict:
    """The scalar gradient flow of one singular direction under spectral initialisation, derived with sympy
    from ℓ = ½ (s − F)^2, F = w_2 b_1 a_1 + b_2 a_2 w_1 + b_2 a_2 b_1 a_1 (the diagonal of the paper's F̄).

    Returns
    -------
    dict
        ``loss`` and the right-hand sides ``a1``, ``b1``, ``a2``, ``b2`` (sympy expressions in a1, b1, a2, b2,
        w1, w2, s), and ``matches_paper`` (bool: d b_1/dt = (w_2 + b_2 a_2)(s − F) a_1 etc., as §4 prints them).
    """
    import sympy

    a1, b1, a2, b2, w1, w2, s = sympy.symbols("a1 b1 a2 b2 w1 w2 s", real=True)
    F = w2 * b1 * a1 + b2 * a2 * w1 + b2 * a2 * b1 * a1
    loss = (s - F) ** 2 / 2
    rhs = {name: sympy.expand(-sympy.diff(loss, symbol)) for name, symbol in (("a1", a1), ("b1", b1), ("a2", a2), ("b2", b2))}
    paper = {"b1": (w2 + b2 * a2) * (s - F) * a1, "a1": b1 * (w2 + b2 * a2) * (s - F), "b2": (s - F) * (w1 + b1 * a1) * a2, "a2": b2 * (s - F) * (w1 + b1 * a1)}
    matches = all(sympy.expand(rhs[name] - paper[name]) == 0 for name in rhs)
    return {"loss": loss, **rhs, "matches_paper": matches, "symbols": (a1, b1, a2, b2, w1, w2, s)}


def spectral_directions(problem: MFProblem) -> list:
    """Per singular direction i of ΔY's right singular basis: (s_i, w1_i, w2_i) with s_i = σ_i(ΔY) (0 beyond its
    rank), w1_i = |W_1 v_i|, w2_i = u_i^T W_2 g_i (g_i = W_1 v_i / w1_i), for the first ``rank`` directions.

    Parameters
    ----------
    problem : MFProblem

    Returns
    -------
    list of tuple
        ``(s_i, w1_i, w2_i)``, with w2_i >= 0 (s_i carries the sign of the frame).
    """
    U, S, Vt = np.linalg.svd(problem.delta_y)
    out = []
    for i in range(problem.rank):
        image = problem.W1 @ Vt[i]
        w1 = float(np.linalg.norm(image))
        g = image / w1
        w2 = float(U[:, i] @ problem.W2 @ g)
        s = float(S[i]) if S[i] > 1e-12 * S[0] else 0.0
        if w2 < 0:  # in the frame where W_2's entry is positive, ΔY's is -s
            w2, s = -w2, -s
        out.append((s, w1, w2))
    return out


def spectral_scalar_flow(s: float, w1: float, w2: float, start, times, rtol: float = 1e-12, atol: float = 1e-16) -> np.ndarray:
    """Integrate the scalar flow of :func:`derive_scalar_flow` (the project's dopri5 integrator).

    Parameters
    ----------
    s, w1, w2 : float
    start : array_like
        (a1, b1, a2, b2) at t = 0.
    times : array_like
    rtol, atol : float

    Returns
    -------
    ndarray (len(times), 4)
        (a1, b1, a2, b2) at each time.
    """
    from ...dynamics.solve import ODE, solve

    return solve(ODE(_scalar_rhs(), np.array([s, w1, w2], dtype=float)), np.asarray(start, dtype=float), np.asarray(times, dtype=float), rtol=rtol, atol=atol).values


def _scalar_rhs():
    from ...dynamics.solvers.base import right_hand_side

    global _SCALAR
    if _SCALAR is None:

        @right_hand_side
        def scalar(t, y, parameters, out):
            s, w1, w2 = parameters[0], parameters[1], parameters[2]
            a1, b1, a2, b2 = y[0], y[1], y[2], y[3]
            error = s - (w2 + b2 * a2) * (w1 + b1 * a1) + w2 * w1
            out[0] = b1 * (w2 + b2 * a2) * error
            out[1] = (w2 + b2 * a2) * error * a1
            out[2] = b2 * error * (w1 + b1 * a1)
            out[3] = error * (w1 + b1 * a1) * a2

        _SCALAR = scalar
    return _SCALAR


_SCALAR = None


def theorem41_t1(s: float, w1: float, w2: float, z1_0: float) -> float:
    """Theorem 4.1's T_1 = 2 / ((3 + δ) s σ_{W2}) log(s / (16 z_1(0))), with δ = σ_{W1}/σ_{W2} < 1 (§3's
    convention: the theorem prints the reciprocal).

    Parameters
    ----------
    s, w1, w2 : float
        σ_ΔY, σ_{W1}, σ_{W2} of the direction.
    z1_0 : float
        a_1(0)^2 + b_1(0)^2.

    Returns
    -------
    float
    """
    s = check_real(s, "s", 0.0, None, low_open=True)
    z1_0 = check_real(z1_0, "z1_0", 0.0, None, low_open=True)
    delta = w1 / w2
    if not delta < 1:
        raise InvalidArgument(f"theorem 4.1 as stated needs delta_w = sigma_W1 / sigma_W2 < 1, got {delta:.4g}", "w1")
    return 2.0 / ((3.0 + delta) * s * w2) * math.log(s / (16.0 * z1_0))


def stationary_example() -> tuple:
    """Appendix G.1: W_2 = W_1 = diag(10, 1), Y_pre = diag(100, 1), r = 1, and ΔY = e_2 e_2^T (the printed
    Y_ft = Y_pre is a misprint: it would make L = 0, not the stated L = 1). The initialisation built from the
    pre-trained weights' top singular space (A_1 = e_1^T, B_1 = 0, A_2 = e_1^T, B_2 = 0 scaled by alpha)
    has a zero gradient: it never learns.

    Returns
    -------
    tuple
        ``(problem, state)``.
    """
    W = np.diag([10.0, 1.0])
    Y_ft = np.diag([100.0, 2.0])
    problem = mf_problem(W, W, Y_ft, rank=1, construction={"example": "Appendix G.1, Y_ft corrected to Y_pre + e_2 e_2^T"})
    alpha = 0.1
    state = MFState(alpha * np.array([[[1.0, 0.0]]]), np.zeros((1, 2, 1)), alpha * np.array([[[1.0, 0.0]]]), np.zeros((1, 2, 1)))
    return problem, state
