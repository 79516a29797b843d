"""The trajectory driver shared by the simulators: checkpoints, chunking, divergence, progress, timing.

A simulator supplies ``advance(count)``, which moves every trajectory ``count`` steps and returns the
observable (one value per trajectory). :func:`run_to_checkpoints` calls it in chunks that land on every
checkpoint, so how steps are split never changes the numbers (each trajectory owns its random stream).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .._validation import InvalidArgument, check_integer

__all__ = ["Diverged", "checkpoint_grid", "check_checkpoints", "run_to_checkpoints", "Recording"]


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


def check_checkpoints(checkpoints) -> np.ndarray:
    """Non-negative, strictly increasing integer step counts."""
    steps = np.asarray(checkpoints)
    if steps.ndim != 1 or steps.size == 0 or not (np.issubdtype(steps.dtype, np.integer) or np.all(np.isfinite(steps)) and np.all(steps == np.round(steps))):
        raise InvalidArgument("checkpoints must be a list of non-negative integers (step counts)")
    steps = steps.astype(np.int64)
    if np.any(steps < 0) or np.any(np.diff(steps) <= 0):
        raise InvalidArgument("checkpoints must be non-negative and strictly increasing")
    return steps


def run_to_checkpoints(advance, initial: np.ndarray, checkpoints, chunk: int, progress: bool | None = False, label: str = "", divergence: str = "") -> Recording:
    """Record ``initial`` and then ``advance(count)`` at each checkpoint, in chunks of at most ``chunk``
    steps (so a progress bar moves and an interrupt is seen between chunks).

    Raises :class:`Diverged` (with ``divergence`` in the message) when a value becomes non-finite."""
    from tqdm.auto import tqdm

    steps = check_checkpoints(checkpoints)
    record = np.empty((initial.shape[0], steps.size))
    begin = time.perf_counter()
    done = 0
    values = initial
    with tqdm(total=int(steps[-1]), disable=None if progress is None else not progress, unit="step", desc=label, leave=False) as bar:
        for index, target in enumerate(steps):
            while done < target:
                count = int(min(target - done, max(1, chunk)))
                values = advance(count)
                done += count
                bar.update(count)
                if not np.all(np.isfinite(values)):
                    raise Diverged(f"diverged by step {done}: {divergence}")
            record[:, index] = values
    return Recording(steps, record, time.perf_counter() - begin)
