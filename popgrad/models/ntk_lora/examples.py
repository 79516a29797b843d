"""Explicit spurious local minima below the threshold (2 x 2, K = 1, N = 2, r = 1), found numerically and
then verified in exact rational arithmetic (sympy).

The paper's own small examples were not available (MATH.md §7), so popgrad constructs its own:

1. L-BFGS from many starts on random Gaussian instances finds a limit whose value lies above the certified
   convex optimum, with a positive-definite Hessian (floating point);
2. the instance is made exact: G_j rounded to rationals, the limit point (b, a) moved to a nearby rational
   point with ||b|| = ||a|| exactly (rational points on the circle, t -> ((1 - t^2)/(1 + t^2), 2t/(1 + t^2))), and
   the targets y and lambda re-solved, in rationals, so that this point is exactly stationary (the gradient is
   linear in (y, lambda); stationarity needs ||b|| = ||a|| since b.dF/db - a.dF/da = lambda (||b||^2 - ||a||^2));
3. sympy verifies, exactly: the gradient of F vanishes; every leading principal minor of the 4 x 4 Hessian
   is positive (Sylvester: a strict local minimum); and ||grad L(b a^T)||_op > lambda (rho > 1), so b a^T is not
   a minimiser of the convex problem, whose optimum a rank-one point attains (r*(r*+1)/2 <= KN = 2): the
   minimum is spurious. The largest eigenvalue of S^T S exceeds lambda^2 iff some principal minor of
   lambda^2 I - S^T S is negative - rational arithmetic only.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..._validation import InvalidArgument, check_integer, check_real
from .convex import ntk_convex_optimum
from .study import ntk_landscape
from .spec import NTKProblem, gaussian_ntk_problem, ntk_problem

__all__ = ["SpuriousExample", "ntk_spurious_example", "verify_spurious_exactly"]


@dataclass(frozen=True)
class SpuriousExample:
    """A 2 x 2 (K = 1, N = 2, r = 1) instance with a spurious local minimum, verified exactly.

    Attributes
    ----------
    problem : NTKProblem
        The exact instance in floating point (its rationals are in ``exact``).
    b, a : ndarray (2,)
        The spurious minimum: B = b (2 x 1), A = a^T (1 x 2).
    exact : dict
        The rational data as strings: ``measurements``, ``targets``, ``weight_decay``, ``b``, ``a``; and the
        exact verification: ``gradient`` (four zeros), ``hessian_minors`` (the leading principal minors),
        ``certificate_squared_bounds`` (rho^2 > 1 decided exactly, with the numeric rho^2).
    verified : bool
        Gradient exactly zero, Hessian positive definite and rho > 1.
    value : float
        F at the spurious minimum.
    convex_value : float
        The convex optimum (certified, duality gap below 1e-11) of the same instance.
    found : dict
        How the minimum was found: the Gaussian instance's seed, starts, the limits there.
    """

    problem: NTKProblem
    b: np.ndarray
    a: np.ndarray
    exact: dict
    verified: bool
    value: float
    convex_value: float
    found: dict


def _rational(value: float, denominator: int) -> Fraction:
    return Fraction(value).limit_denominator(denominator)


def _circle_point(direction: np.ndarray, denominator: int) -> tuple:
    """A rational unit vector near ``direction`` (2,), via the rational parametrisation of the circle."""
    angle = math.atan2(direction[1], direction[0])
    if abs(abs(angle) - math.pi) < 1e-3:  # tan(angle/2) blows up near pi: use the opposite point's parametrisation, negated
        t = _rational(math.tan((angle - math.pi) / 2), denominator)
        return tuple(-c for c in ((1 - t * t) / (1 + t * t), 2 * t / (1 + t * t)))
    t = _rational(math.tan(angle / 2), denominator)
    return ((1 - t * t) / (1 + t * t), 2 * t / (1 + t * t))


def verify_spurious_exactly(measurements, targets, weight_decay, b, a) -> dict:
    """Exact (sympy, rationals) verification that (b, a) is a strict local minimum of the r = 1 LoRA objective
    ``F = 1/(2N) sum_j (b^T G_j a - y_j)^2 + lambda/2 (|a|^2 + |b|^2)`` (squared loss, offsets 0) with rho > 1.

    Parameters
    ----------
    measurements : sequence of 2-D arrays of rationals (``fractions.Fraction``, ints or sympy Rationals)
    targets : sequence of rationals
    weight_decay : rational
    b, a : sequences of rationals

    Returns
    -------
    dict
        ``gradient`` (strings), ``stationary`` (bool), ``hessian_minors`` (strings), ``positive_definite``,
        ``rho_squared`` (float), ``rho_above_one`` (bool, decided exactly), ``verified``.

    Examples
    --------
    >>> from fractions import Fraction as Q
    >>> G = [[[1, 0], [0, 0]], [[0, 0], [0, 1]]]  # diagonal measurements: the rank-one point on e1 is global
    >>> report = verify_spurious_exactly(G, [Q(6, 5), 1], Q(1, 10), [1, 0], [1, 0])
    >>> report["stationary"], report["rho_above_one"]
    (True, True)
    """
    import sympy

    G = [sympy.Matrix([[sympy.Rational(str(v)) if isinstance(v, Fraction) else sympy.Rational(v) for v in row] for row in matrix]) for matrix in measurements]
    y = [sympy.Rational(str(v)) if isinstance(v, Fraction) else sympy.Rational(v) for v in targets]
    lam = sympy.Rational(str(weight_decay)) if isinstance(weight_decay, Fraction) else sympy.Rational(weight_decay)
    m, n = G[0].shape
    N = len(y)
    bs = sympy.symbols(f"b0:{m}")
    as_ = sympy.symbols(f"a0:{n}")
    bv, av = sympy.Matrix(bs), sympy.Matrix(as_)
    F = sum(((bv.T * Gj * av)[0, 0] - yj) ** 2 for Gj, yj in zip(G, y)) / (2 * N) + lam / 2 * (sum(v**2 for v in bs) + sum(v**2 for v in as_))
    variables = list(bs) + list(as_)
    point = {v: (sympy.Rational(str(x)) if isinstance(x, Fraction) else sympy.Rational(x)) for v, x in zip(variables, list(b) + list(a))}
    gradient = [sympy.diff(F, v).subs(point) for v in variables]
    hessian = sympy.hessian(F, variables).subs(point)
    minors = [hessian[:k, :k].det() for k in range(1, len(variables) + 1)]
    delta = sympy.Matrix([point[v] for v in bs]) * sympy.Matrix([point[v] for v in as_]).T
    S = sum(((sum(Gj[i, k] * delta[i, k] for i in range(m) for k in range(n)) - yj) * Gj for Gj, yj in zip(G, y)), sympy.zeros(m, n)) / N
    M = S.T * S
    # the largest eigenvalue of S^T S exceeds lambda^2 iff lambda^2 I - S^T S is not positive semidefinite, iff
    # one of its principal minors is negative: rational arithmetic only
    shifted = lam**2 * sympy.eye(n) - M
    above = any(shifted.extract(list(subset), list(subset)).det() < 0 for size in range(1, n + 1) for subset in itertools.combinations(range(n), size))
    rho_squared = float(max(np.linalg.eigvalsh(np.array(M.evalf(30), dtype=float)))) / float(lam) ** 2
    stationary = all(g == 0 for g in gradient)
    positive = all(minor > 0 for minor in minors)
    return {"gradient": [str(g) for g in gradient], "stationary": stationary, "hessian_minors": [str(minor) for minor in minors], "positive_definite": positive, "rho_squared": rho_squared, "rho_above_one": above, "verified": stationary and positive and above}


def ntk_spurious_example(weight_decay: float = 1e-2, seeds: int = 50, starts: int = 20, denominator: int = 1000) -> SpuriousExample:
    """Find a spurious local minimum of the r = 1 LoRA objective on a 2 x 2 instance with K = 1, N = 2 (KN = 2,
    below the threshold r(r+1)/2 > 2), make the instance exact, and verify the minimum in rationals.

    Parameters
    ----------
    weight_decay : float > 0, default 1e-2
        lambda of the Gaussian instances searched (the exact instance's lambda is re-solved nearby).
    seeds : int, default 50
        Gaussian instances tried (seeds 0, 1, ...), until one has a spurious limit that verifies.
    starts : int, default 20
        L-BFGS starts per instance.
    denominator : int, default 1000
        Largest denominator of the rounded rationals.

    Returns
    -------
    SpuriousExample

    Raises
    ------
    ValueError
        When no instance among ``seeds`` gives a verified example.

    Examples
    --------
    >>> example = ntk_spurious_example()
    >>> example.verified, example.value > example.convex_value + 1e-4
    (True, True)
    """
    weight_decay = check_real(weight_decay, "weight_decay", 0.0, 1e3, low_open=True)
    seeds = check_integer(seeds, "seeds", 1, 10**6)
    starts = check_integer(starts, "starts", 2, 10**6)
    denominator = check_integer(denominator, "denominator", 10, 10**12)
    for seed in range(seeds):
        problem = gaussian_ntk_problem(2, 2, data=2, outputs=1, weight_decay=weight_decay, seed=seed)
        study = ntk_landscape(problem, 1, starts, seed=seed)
        spurious = [limit for limit in study.limits if not limit["global"] and (limit["min_hessian_eigenvalue"] or 0) > 1e-6]
        if not spurious:
            continue
        target = spurious[0]["value"]
        index = int(np.argmin(np.abs(study.runs.values - target)))
        b, a = study.runs.B[index][:, 0], study.runs.A[index][0]
        example = _exact_instance(problem, b, a, denominator)
        if example is None:
            continue
        exact_problem, b_q, a_q, G_q, y_q, lam_q = example
        report = verify_spurious_exactly(G_q, y_q, lam_q, b_q, a_q)
        if not report["verified"]:
            continue
        convex = ntk_convex_optimum(exact_problem)
        b_f, a_f = np.array([float(v) for v in b_q]), np.array([float(v) for v in a_q])
        value = float(sum((b_f @ G @ a_f - y) ** 2 for G, y in zip(exact_problem.measurements, exact_problem.targets)) / 4 + exact_problem.weight_decay / 2 * (b_f @ b_f + a_f @ a_f))
        exact = {"measurements": [[[str(v) for v in row] for row in matrix] for matrix in G_q], "targets": [str(v) for v in y_q], "weight_decay": str(lam_q), "b": [str(v) for v in b_q], "a": [str(v) for v in a_q], **report}
        found = {"seed": seed, "starts": starts, "limits": study.limits, "search_weight_decay": weight_decay}
        return SpuriousExample(exact_problem, b_f, a_f, exact, report["verified"], value, convex.value, found)
    raise InvalidArgument(f"no verified spurious minimum among {seeds} Gaussian 2 x 2 instances (try more seeds)", "seeds")


def _exact_instance(problem: NTKProblem, b: np.ndarray, a: np.ndarray, denominator: int):
    """A rational instance near ``problem`` at which a rational point near (b, a) is exactly stationary.

    Stationarity with r = 1 says that S = grad L(b a^T) maps a to -lambda b and b to -lambda a: with b = s u,
    a = s v (unit u, v), S = -lambda u v^T + nu u_perp v_perp^T for some nu (and rho = max(lambda, |nu|)/lambda).
    So: round u, v to rational points of the circle, s, lambda, nu and the loss weights c_j = (p_j - y_j)/N to
    rationals, set S exactly, solve S = sum_j c_j G_j for the measurement with the largest |c_j| (the others
    rounded), and put y_j = p_j - N c_j with p_j = b^T G_j a. None when that weight rounds to zero.
    """
    from .landscape import ntk_loss_gradient

    N, J = problem.data, problem.count
    s = _rational(math.sqrt(float(np.linalg.norm(b) * np.linalg.norm(a))), denominator)
    u = _circle_point(b / np.linalg.norm(b), denominator)
    v = _circle_point(a / np.linalg.norm(a), denominator)
    u_perp, v_perp = (-u[1], u[0]), (-v[1], v[0])
    lam = _rational(problem.weight_decay, denominator)
    b_float, a_float = np.array([float(x) for x in u]) * float(s), np.array([float(x) for x in v]) * float(s)
    delta = np.outer(b_float, a_float)
    _, S_float = ntk_loss_gradient(problem, delta)
    nu = _rational(float(np.array([float(x) for x in u_perp]) @ S_float @ np.array([float(x) for x in v_perp])), denominator)
    weights = (problem.measure(delta) - problem.targets) / N
    solved = int(np.argmax(np.abs(weights)))
    c = [_rational(float(w), denominator) for w in weights]
    if c[solved] == 0:
        return None
    S = [[-lam * u[i] * v[k] + nu * u_perp[i] * v_perp[k] for k in range(2)] for i in range(2)]
    G_q = [[[_rational(float(x), denominator) for x in row] for row in matrix] for matrix in problem.measurements]
    G_q[solved] = [[(S[i][k] - sum(c[j] * G_q[j][i][k] for j in range(J) if j != solved)) / c[solved] for k in range(2)] for i in range(2)]
    b_q, a_q = [s * x for x in u], [s * x for x in v]
    p = [sum(b_q[i] * G_q[j][i][k] * a_q[k] for i in range(2) for k in range(2)) for j in range(J)]
    y_q = [p[j] - N * c[j] for j in range(J)]
    construction = {"kind": "exact spurious example", "from_gaussian_seed": problem.construction.get("seed"), "changed_measurement": solved}
    exact_problem = ntk_problem(np.array([[[float(x) for x in row] for row in matrix] for matrix in G_q]), [float(x) for x in y_q], float(lam), "squared", 1, None, construction)
    return exact_problem, b_q, a_q, G_q, y_q, lam
