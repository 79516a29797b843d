"""Checks of the paper's lemmas over random draws (reported in derivations/, not asserted)."""

from __future__ import annotations

import math

import numpy as np

from ..._validation import check_integer
from ...gaussian.activations import activation
from .population import population_drift
from .spec import orthonormal_problem

__all__ = ["lemma6_frequency", "example1"]


def lemma6_frequency(sigma, k: int, xi: float, draws: int = 1000, seed: int = 0, grid: int = 201) -> dict:
    """How often Lemma 6's conclusion holds over random quantized c, c_hat (orthonormal features, lam = 1).

    The conclusion: ``h(m) sign(h(0)) >= |h(0)|/2`` for all m with ``m h(0) >= 0`` (checked on a grid of
    ``grid`` points). Draws where h(0) vanishes (|h(0)| <= 1e-12 max|h|: the signs cancel exactly, which
    quantized c allows) are *degenerate*: Lemma 6's lower bound on |h(0)| fails there, so they count as
    not holding and are reported separately. Returns the fraction, its binomial standard error, the
    degenerate count and quantiles of ``min h(m) sign(h(0)) / |h(0)|`` over the other draws.

    Parameters
    ----------
    sigma : str or Activation
    k : int
    xi : float
    draws : int, default 1000
    seed : int, default 0
    grid : int, default 201

    Returns
    -------
    dict
        ``fraction``, ``standard_error``, ``degenerate``, ``ratio_quantiles`` and the settings.
    """
    k = check_integer(k, "k", 1, 1024)
    draws = check_integer(draws, "draws", 1, 10**6)
    generator = np.random.default_rng(check_integer(seed, "seed", 0, 2**63 - 1))
    m = np.linspace(0.0, 1.0, grid)
    ratios = []
    degenerate = 0
    for _ in range(draws):
        problem = orthonormal_problem(sigma, k, xi, seed=int(generator.integers(2**62)))
        values = population_drift(problem, np.concatenate([m, -m[1:]]))
        h0 = values[0]
        if abs(h0) <= 1e-12 * max(float(np.max(np.abs(values))), 1e-300):
            degenerate += 1
            continue
        direction = 1.0 if h0 > 0 else -1.0
        ahead = values[:grid] if h0 > 0 else np.concatenate([[h0], values[grid:]])
        ratios.append(float(np.min(ahead * direction) / abs(h0)))
    ratios = np.array(ratios)
    fraction = float(np.sum(ratios >= 0.5) / draws)
    return {
        "activation": activation(sigma).name,
        "k": k,
        "xi": float(xi),
        "draws": draws,
        "seed": seed,
        "fraction": fraction,
        "standard_error": math.sqrt(fraction * (1 - fraction) / draws),
        "degenerate": degenerate,
        "ratio_quantiles": {q: float(np.quantile(ratios, q)) if len(ratios) else float("nan") for q in (0.0, 0.05, 0.5)},
    }


def example1() -> dict:
    """Example 1 of the paper (MATH.md §5): without Assumption 2 two different rank-1 perturbations give the
    same teacher. lam = (1, 1), w_1 = e_1, w_2 = e_2 in R^2, sigma(z) = z^2 (raw convention, xi = 1),
    u = (1, 1)/sqrt 2, u' = (1/sqrt 3, sqrt 6/3), c = (-(1 + sqrt 2)(2 + sqrt 3), (1 + sqrt 2)(sqrt 2 + sqrt 3)),
    c' = -c.

    Two routes: sympy proves ``V^T V = V'^T V'`` for ``V = W + c u^T``, ``V' = W + c' u'^T`` (with sigma = z^2
    the network is the quadratic form ``x^T V^T V x``, so the two teachers are one function), and the
    general model's closed-form population loss (two-scale kernels) is 0 for each as student of the other.

    Returns
    -------
    dict
        ``difference`` (the sympy matrix V^T V - V'^T V', simplified), ``identity`` (True when it is 0),
        ``loss_u_prime_learning_u`` and ``loss_u_learning_u_prime`` (float), ``different`` (u != u' and
        c != c').

    Examples
    --------
    >>> report = example1()
    >>> report["identity"], report["different"], report["loss_u_prime_learning_u"] < 1e-9
    (True, True, True)
    """
    import sympy

    from .model import general_model
    from .observables import state_population_loss
    from .spec import FineTuningProblem

    root2, root3, root6 = sympy.sqrt(2), sympy.sqrt(3), sympy.sqrt(6)
    W = sympy.eye(2)
    u = sympy.Matrix([1, 1]) / root2
    u_prime = sympy.Matrix([1 / root3, root6 / 3])
    c = sympy.Matrix([-(1 + root2) * (2 + root3), (1 + root2) * (root2 + root3)])
    c_prime = -c
    V, V_prime = W + c * u.T, W + c_prime * u_prime.T
    difference = sympy.simplify(V.T * V - V_prime.T * V_prime)
    losses = []
    for (teacher_c, teacher_u), (student_c, student_u) in (((c, u), (c_prime, u_prime)), ((c_prime, u_prime), (c, u))):
        to_array = lambda matrix: np.array([float(v) for v in matrix])  # noqa: E731
        problem = FineTuningProblem("quadratic", [1.0, 1.0], c=to_array(teacher_c), c_hat=to_array(student_c), xi=1.0, W=np.eye(2), convention="raw")
        model = general_model(problem, U=to_array(teacher_u))
        # the student's u_hat in the coordinates of F (it lies in span(W) = R^2: nothing outside F)
        _, _, right = np.linalg.svd(problem.W)
        Y = np.zeros((model.p, 1))
        Y[:2, 0] = right[:2] @ to_array(student_u)
        losses.append(state_population_loss(model, Y, np.zeros((1, 1)), to_array(student_c)[:, None]))
    return {"difference": difference, "identity": difference == sympy.zeros(2, 2), "loss_u_prime_learning_u": losses[0], "loss_u_learning_u_prime": losses[1], "different": bool(u != u_prime and c != c_prime)}
