"""The trajectory driver shared by the simulators: checkpoints, chunking, divergence, progress, timing.

A simulator supplies ``advance(done, count)``, which moves every trajectory ``count`` steps from step
``done`` and returns the observable (one value per trajectory); hitting times are recorded by the kernels
step by step and summarised by :func:`hitting_summary`. :func:`run_to_checkpoints` calls it in chunks that land on every
checkpoint, so how steps are split never changes the numbers (each trajectory owns its random stream).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from .._progress import progress_bar
from .._validation import InvalidArgument, check_integer, check_real

__all__ = ["record_hit", "Diverged", "checkpoint_grid", "check_checkpoints", "step_schedule", "run_to_checkpoints", "Recording", "hitting_summary"]


@njit(cache=True, inline="always")
def record_hit(hits, j, overlap, level, step):
    """In a kernel: record ``step`` as trajectory j's hitting step if it is the first with overlap^2 >=
    level; True exactly when this step is the hit."""
    if hits[j] < 0 and overlap * overlap >= level:
        hits[j] = step
        return True
    return False


class Diverged(InvalidArgument):
    """A trajectory produced a non-finite value (the step size is too large for the problem)."""


@dataclass(frozen=True)
class Recording:
    """``values[trajectory, checkpoint]`` at ``steps``, and the wall time spent."""

    steps: np.ndarray
    values: np.ndarray
    seconds: float


def checkpoint_grid(steps: int, count: int = 21, spacing: str = "linear") -> np.ndarray:
    """``count`` checkpoints from 0 to ``steps`` (linear, or logarithmic after 0).

    Parameters
    ----------
    steps : int
        The last checkpoint, at least 1.
    count : int, default 21
        Number of checkpoints (fewer when rounding makes some coincide).
    spacing : {'linear', 'log'}, default 'linear'

    Returns
    -------
    ndarray of int64

    Examples
    --------
    >>> checkpoint_grid(100, 5).tolist()
    [0, 25, 50, 75, 100]
    """
    steps = check_integer(steps, "steps", 1)
    if spacing == "log":
        grid = np.unique(np.round(np.logspace(0, math.log10(steps), count - 1)).astype(np.int64))
        return np.concatenate([[0], grid])
    return np.unique(np.round(np.linspace(0, steps, count)).astype(np.int64))


#: the most steps a simulation may be asked for (about a day of the chain at 10^7 steps/s on one core)
MAX_STEPS = 10**12


def check_checkpoints(checkpoints) -> np.ndarray:
    """Non-negative, strictly increasing integer step counts."""
    steps = np.asarray(checkpoints)
    if steps.ndim != 1 or steps.size == 0 or not (np.issubdtype(steps.dtype, np.integer) or np.all(np.isfinite(steps)) and np.all(steps == np.round(steps))):
        raise InvalidArgument("checkpoints must be a list of non-negative integers (step counts)", "checkpoints")
    if np.max(steps) > MAX_STEPS:
        raise InvalidArgument(f"checkpoints must not exceed {MAX_STEPS:.0e} steps, got {np.max(steps):.6g}", "checkpoints")
    steps = steps.astype(np.int64)
    if np.any(steps < 0) or np.any(np.diff(steps) <= 0):
        raise InvalidArgument("checkpoints must be non-negative and strictly increasing", "checkpoints")
    return steps


def step_schedule(d: int, eta=None, delta=None, checkpoints=None, steps=None) -> tuple:
    """The step size and the checkpoints of a run, as the API and the command line take them: the step size
    as ``eta`` or as ``delta = eta d`` (one of the two), the record as ``checkpoints`` or as ``steps`` (21
    evenly spaced checkpoints from 0 to ``steps``; one of the two).

    Returns ``(eta, checkpoints)`` with the checkpoints checked (:func:`check_checkpoints`).

    Examples
    --------
    >>> eta, checkpoints = step_schedule(1000, delta=0.05, steps=100)
    >>> eta, checkpoints[:3].tolist()
    (5e-05, [0, 5, 10])
    """
    if (eta is None) == (delta is None):
        raise InvalidArgument("give the step size as eta or as delta = eta * d (one of the two)", "eta" if eta is None else "delta")
    if (checkpoints is None) == (steps is None):
        raise InvalidArgument("give checkpoints (a list of steps) or steps (the run's length; one of the two)", "checkpoints" if checkpoints is None else "steps")
    if eta is None:
        eta = check_real(delta, "delta", 0.0, None, low_open=True) / check_integer(d, "d", 1)
    eta = check_real(eta, "eta", 0.0, None, low_open=True)
    if checkpoints is None:
        checkpoints = checkpoint_grid(check_integer(steps, "steps", 1, MAX_STEPS), 21)
    return eta, check_checkpoints(checkpoints)


def run_to_checkpoints(advance, initial: np.ndarray, checkpoints, chunk: int, progress: bool | None = False, label: str = "", divergence: str = "") -> Recording:
    """Record ``initial`` and then ``advance(done, count)`` at each checkpoint, in chunks of at most
    ``chunk`` steps (so a progress bar moves and an interrupt is seen between chunks).

    Raises :class:`Diverged` (with ``divergence`` in the message) when a value becomes non-finite."""
    steps = check_checkpoints(checkpoints)
    record = np.empty((initial.shape[0], steps.size))
    begin = time.perf_counter()
    done = 0
    values = initial
    with progress_bar(total=int(steps[-1]), progress=progress, unit="step", desc=label) as bar:
        for index, target in enumerate(steps):
            while done < target:
                count = int(min(target - done, max(1, chunk)))
                values = advance(done, count)
                done += count
                bar.update(count)
                if not np.all(np.isfinite(values)):
                    raise Diverged(f"diverged by step {done}: {divergence}")
            record[:, index] = values
    return Recording(steps, record, time.perf_counter() - begin)


def hitting_summary(hits: np.ndarray, horizon: int) -> dict:
    """Median and quartiles of hitting steps censored at ``horizon`` (``hits`` < 0: not hit by then).

    With one censoring time shared by every trajectory, the Kaplan–Meier estimate of the hitting-time law
    is the empirical one up to the horizon, so the q-quantile is the empirical quantile of the hitting
    steps with censored trajectories placed at infinity, and it is undefined (None) when fewer than a
    fraction q of the trajectories hit.

    Examples
    --------
    >>> hitting_summary(np.array([10, 30, -1, 20]), horizon=100)
    {'median': 20.0, 'q25': 10.0, 'q75': 30.0, 'censored_fraction': 0.25, 'horizon': 100}
    >>> hitting_summary(np.array([10, -1, -1, -1]), horizon=100)["median"] is None
    True
    """
    hits = np.asarray(hits)
    times = np.where(hits >= 0, hits.astype(np.float64), np.inf)

    def quantile(q):
        value = float(np.quantile(times, q, method="inverted_cdf"))
        return value if np.isfinite(value) else None

    return {"median": quantile(0.5), "q25": quantile(0.25), "q75": quantile(0.75), "censored_fraction": float(np.mean(hits < 0)), "horizon": int(horizon)}
