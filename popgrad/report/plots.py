"""Figures with matplotlib's object API (no pyplot, no global state): each function takes optional axes
and returns the Figure, so scripts can compose panels and save or show them as they like."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_population"]


def plot_population(problem, points=None, axes=None):
    """h(m) (with its zeros) and Phi(m) on [-1, 1] side by side.

    Parameters
    ----------
    problem : FineTuningProblem
    points : FixedPoints, optional
        From :func:`popgrad.drift_fixed_points` (computed when omitted).
    axes : pair of matplotlib Axes, optional
        Where to draw; a new Figure with two panels when omitted.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from popgrad import orthonormal_problem
    >>> figure = plot_population(orthonormal_problem("relu", k=4, xi=1.0, seed=0))
    >>> [axis.get_ylabel() for axis in figure.axes]
    ['h(m)', 'Phi(m)']
    """
    from matplotlib.figure import Figure

    from ..models.finetuning.population import drift_fixed_points, population_drift, population_loss

    points = drift_fixed_points(problem) if points is None else points
    if axes is None:
        figure = Figure(figsize=(10, 4), layout="tight")
        axes = figure.subplots(1, 2)
    left, right = axes
    grid = np.linspace(-1, 1, 801)
    left.plot(grid, population_drift(problem, grid))
    left.axhline(0, color="grey", lw=0.5)
    for zero in points.zeros:
        left.axvline(zero, color="red", lw=0.8, ls="--")
    left.set(xlabel="m", ylabel="h(m)", title="population drift (gradient flow: dm/dt = h(m)(1 - m²))")
    right.plot(grid, population_loss(problem, grid))
    right.set(xlabel="m", ylabel="Phi(m)", title="population loss (dPhi/dm = -h(m))")
    left.figure.suptitle(repr(problem), fontsize=9)
    return left.figure
