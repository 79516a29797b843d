"""Power laws fitted to hitting times, with bootstrap confidence intervals over trajectories.

A theorem's scaling (T ~ d, T ~ d^{l*-1}, ...) is a statement about the hitting time's growth. The fit is
least squares of log(median T) on log(x); its uncertainty comes from the trajectories themselves: each
bootstrap replicate resamples every cell's hitting steps (censored ones at infinity, as in the
Kaplan–Meier estimate with one censoring time), recomputes the medians and refits. A cell whose median is
censored in the data cannot enter the fit and is reported as left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._validation import InvalidArgument, check_integer, check_real

__all__ = ["PowerLawFit", "power_law_fit", "censored_median"]


def censored_median(steps: np.ndarray) -> float:
    """The median of hitting steps with censored ones (< 0, or inf) at infinity: inf when half or more
    are censored.

    Parameters
    ----------
    steps : array_like

    Returns
    -------
    float
    """
    values = np.asarray(steps, dtype=float)
    values = np.where((values < 0) | ~np.isfinite(values), np.inf, values)
    return float(np.quantile(values, 0.5, method="inverted_cdf")) if values.size else math.inf


@dataclass(frozen=True)
class PowerLawFit:
    """``median T = prefactor * x^exponent``.

    Attributes
    ----------
    exponent : float
        The least-squares slope of log median T on log x.
    ci : tuple of float
        The (1 - level) bootstrap percentile interval of the exponent.
    prefactor : float
    x : ndarray
        The abscissae that entered the fit.
    medians : ndarray
    left_out : list
        Abscissae whose median is censored.
    level : float
    replicates : int
    """

    exponent: float
    ci: tuple
    prefactor: float
    x: np.ndarray
    medians: np.ndarray
    left_out: list
    level: float
    replicates: int

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the confidence interval."""
        return self.ci[0] <= value <= self.ci[1]


def power_law_fit(x, hitting_steps, replicates: int = 1000, level: float = 0.05, seed: int = 0) -> PowerLawFit:
    """Fit ``log median T = log a + b log x`` over cells, with a bootstrap interval for b.

    Parameters
    ----------
    x : array_like
        The abscissa of each cell (positive).
    hitting_steps : list of array_like
        Each cell's hitting steps per trajectory (negative: censored).
    replicates : int, default 1000
    level : float, default 0.05
        The interval is the [level/2, 1 - level/2] percentile interval.
    seed : int, default 0
        Seed of the resampling (numpy generator).

    Returns
    -------
    PowerLawFit

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> cells = [x * rng.uniform(0.9, 1.1, 64) for x in (100.0, 1000.0, 10000.0)]
    >>> fit = power_law_fit([100, 1000, 10000], cells, replicates=200)
    >>> round(fit.exponent, 2), fit.contains(1.0)
    (1.0, True)
    """
    level = check_real(level, "level", 0.0, 1.0, low_open=True)
    if level == 1.0:
        raise InvalidArgument(f"level must lie in (0, 1) (the interval covers 1 - level), got {level}", "level")
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    x = np.asarray(x, dtype=float)
    replicates = check_integer(replicates, "replicates", 10, 10**6)
    if x.ndim != 1 or x.size != len(hitting_steps):
        raise InvalidArgument("x and hitting_steps must have one entry per cell", "x")
    if np.any(x <= 0):
        raise InvalidArgument("x must be positive for a power law", "x")
    samples = [np.where(np.asarray(s, dtype=float) < 0, np.inf, np.asarray(s, dtype=float)) for s in hitting_steps]
    medians = np.array([censored_median(s) for s in samples])
    keep = np.isfinite(medians) & (medians > 0)
    if np.count_nonzero(keep) < 2 or np.unique(x[keep]).size < 2:
        raise InvalidArgument(f"a power law needs two cells with uncensored medians at different x; have {int(np.count_nonzero(keep))}", "hitting_steps")
    log_x = np.log(x[keep])
    slope, intercept = np.polyfit(log_x, np.log(medians[keep]), 1)
    generator = np.random.default_rng(seed)
    kept = [samples[i] for i in np.flatnonzero(keep)]
    slopes = []
    for _ in range(replicates):
        boot = np.array([censored_median(s[generator.integers(0, s.size, s.size)]) for s in kept])
        good = np.isfinite(boot) & (boot > 0)
        if np.count_nonzero(good) >= 2 and np.unique(log_x[good]).size >= 2:
            slopes.append(np.polyfit(log_x[good], np.log(boot[good]), 1)[0])
    low, high = np.quantile(slopes, [level / 2, 1 - level / 2]) if slopes else (math.nan, math.nan)
    return PowerLawFit(float(slope), (float(low), float(high)), float(math.exp(intercept)), x[keep], medians[keep], [float(v) for v in x[~keep]], level, len(slopes))
