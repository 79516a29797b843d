"""Summaries over trajectories (or starts, or batches): the one standard error and the one set of quantile
levels that every record, comparison, sweep and report uses."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["standard_error", "QUANTILE_LEVELS", "summary"]

#: the quantile levels recorded over trajectories
QUANTILE_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)


def standard_error(values, axis: int = 0, fill: float = math.nan) -> np.ndarray:
    """Standard error of the mean along ``axis``: the sample standard deviation (ddof = 1) over
    sqrt(count); ``fill`` where there is a single value (no spread to estimate).

    Parameters
    ----------
    values : array_like
    axis : int, default 0
    fill : float, default nan
        The value for a single sample (0 where one start is exact, nan where it is undefined).

    Returns
    -------
    ndarray

    Examples
    --------
    >>> standard_error([[1.0, 2.0], [3.0, 2.0]]).tolist()
    [1.0, 0.0]
    >>> standard_error([[1.0, 2.0]], fill=0.0).tolist()
    [0.0, 0.0]
    """
    values = np.asarray(values, dtype=float)
    count = values.shape[axis]
    if count < 2:
        return np.full(np.delete(np.array(values.shape), axis).tolist(), fill) if values.ndim > 1 else np.float64(fill)
    return values.std(axis=axis, ddof=1) / math.sqrt(count)


def summary(values) -> dict:
    """``mean``, ``standard_error`` (None for one trajectory) and ``quantiles`` over the first axis, as
    JSON-ready lists.

    Parameters
    ----------
    values : ndarray (trajectories, checkpoints)

    Returns
    -------
    dict

    Examples
    --------
    >>> summary(np.array([[0.0, 1.0], [2.0, 3.0]]))["standard_error"]
    [1.0, 1.0]
    """
    values = np.asarray(values, dtype=float)
    error = standard_error(values) if values.shape[0] > 1 else None
    quantiles = np.quantile(values, QUANTILE_LEVELS, axis=0)
    return {"mean": values.mean(axis=0).tolist(), "standard_error": None if error is None else error.tolist(), "quantiles": {f"{q:g}": row.tolist() for q, row in zip(QUANTILE_LEVELS, quantiles)}}
