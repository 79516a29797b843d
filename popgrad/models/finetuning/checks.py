"""Checks of the paper's lemmas over random draws (reported in derivations/, not asserted)."""

from __future__ import annotations

import math

import numpy as np

from ..._validation import check_integer
from ...gaussian.activations import activation
from .population import population_drift
from .spec import orthonormal_problem

__all__ = ["lemma6_frequency"]


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
    generator = np.random.default_rng(check_integer(seed, "seed", 0))
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
