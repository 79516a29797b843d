"""Online SGD for the rank-1 fine-tuning problem, compiled with numba (MATH.md §4).

Three simulators share one interface, :func:`simulate`:

* ``full`` — the paper's update in dimension d: fresh ``x ~ N(0, I_d)``, per-sample gradient ``-A x``,
  projection onto span(W)^perp, tangent projection, normalisation. General W.
* ``fast`` — the same law using rotational invariance: span(W) is the first rank(W) coordinates
  (``W = [L, 0]`` with ``L L^T = G``) and ``u = e_(rank+1)``; cost O(k rank + d) per step.
* ``chain`` — the exact overlap chain: the law of m_(t+1) given the past depends only on m_t, so one step
  draws ``a ~ N(0, G)``, ``g_hat, q ~ N(0, 1)`` and ``chi ~ chi^2_(n-2)`` and sets
  ``m' = (m + eta A q sqrt(1-m^2)) / sqrt(1 + eta^2 A^2 (q^2 + chi))``, n = d - rank(W). Cost
  independent of d.

Trajectory j draws from random stream ``(seed, TRAJECTORIES, first_trajectory + j)`` (see
:mod:`popgrad.numerics.random_streams`), and the state (vectors and stream states) persists between
calls, so results do not depend on the thread count, on how trajectories are batched, or on how steps
are split between checkpoints. The kernels (:mod:`.chain`, :mod:`.sgd`) are compiled per activation
family; trajectories run in parallel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..._validation import InvalidArgument, check_choice, check_integer, check_memory, check_real
from ...dynamics.trajectories import Diverged, checkpoint_grid, hitting_summary, run_to_checkpoints, step_schedule
from ...numerics.linalg import gram_factor
from ...numerics.random_streams import run_blocks
from .chain import chain_kernel, initial_overlaps
from .geometry import embedding
from .gradients import model_arrays
from .sgd import initial_directions, sgd_kernel
from .spec import FineTuningProblem

__all__ = ["simulate", "SimulationResult", "SimulationDiverged", "METHODS", "checkpoint_grid"]

METHODS = ("full", "fast", "chain")


class SimulationDiverged(Diverged):
    """SGD produced a non-finite iterate: the step size is too large."""


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationResult:
    """m_t of every trajectory at the checkpoints: ``m[trajectory, checkpoint]``.

    Attributes
    ----------
    steps : ndarray of int64
        The checkpoints.
    m : ndarray, shape (trajectories, checkpoints)
    method : str
        'chain', 'fast' or 'full'.
    eta : float
    d : int
    seed : int
    m0 : float or None
        The starting overlap (None: random).
    first_trajectory : int
        Stream index of trajectory 0.
    seconds : float
        Wall time of the simulation.
    parameters : dict
        Everything needed to repeat the run (with the problem and the versions).
    hitting_steps : ndarray of int64 or None
        Per trajectory, the first step with m^2 >= 1 - hit (-1: censored at the last checkpoint).
    hit : float or None
        The eps of ``hitting_steps``.
    """

    steps: np.ndarray
    m: np.ndarray
    method: str
    eta: float
    d: int
    seed: int
    m0: float | None
    first_trajectory: int = 0
    seconds: float = float("nan")
    parameters: dict = field(default_factory=dict)
    hitting_steps: np.ndarray | None = None
    hit: float | None = None

    @property
    def trajectories(self) -> int:
        return self.m.shape[0]

    def hitting_times(self) -> dict:
        """Median and quartiles of the first step with m^2 >= 1 - hit, with the censored fraction (see
        :func:`popgrad.dynamics.trajectories.hitting_summary`)."""
        if self.hitting_steps is None:
            raise InvalidArgument("this simulation recorded no hitting times (pass hit=eps to simulate)", "hit")
        return hitting_summary(self.hitting_steps, int(self.steps[-1]))


def simulate(problem: FineTuningProblem, d: int, eta: float | None = None, checkpoints=None, trajectories: int = 100, method: str = "chain", m0: float | None = None, seed: int = 0, first_trajectory: int = 0, progress: bool | None = False, hit: float | None = None, stop_when_hit: bool = False, *, delta: float | None = None, steps: int | None = None) -> SimulationResult:
    """Run online SGD and record m_t at the checkpoints.

    Parameters
    ----------
    problem : FineTuningProblem
    d : int
        Input dimension (must equal ``problem.W.shape[1]`` when the problem has an explicit W and the method
        is ``full``).
    eta : float, optional
        Constant step size (the paper's Theorem 16 uses eta = delta / (d V_k)); or give ``delta``.
    checkpoints : list of int, optional
        Steps at which m is recorded (0 records the initial overlap); or give ``steps``.
    trajectories : int
        Independent trajectories, trajectory j on random stream ``first_trajectory + j``.
    method : 'chain', 'fast' or 'full'
    m0 : float or None
        Initial overlap; None draws u_hat_0 uniformly on the sphere of span(W)^perp (m_0 ~ 1/sqrt(d)).
    seed : int
        Seed of the trajectories' streams (seed, TRAJECTORIES, j) and, for ``full``, of the embedding of W.
    first_trajectory : int
        Index of the first trajectory's stream: runs split into batches give the numbers of one run.
    progress : bool or None
        Show a progress bar (tqdm) over the steps; None: only on a terminal.
    hit : float in (0, 1], optional
        Record, per trajectory, the first step with m^2 >= 1 - hit (-1: not by the last checkpoint).
    stop_when_hit : bool
        Stop each trajectory at its hitting step (its later m stay at the hitting value), and the whole
        run once every trajectory has hit.
    delta : float, optional
        The step size as ``delta = eta d`` (``--delta`` of the command line), instead of ``eta``.
    steps : int, optional
        The run's length, recorded at 21 evenly spaced checkpoints (``--steps``), instead of ``checkpoints``.

    Returns
    -------
    SimulationResult
        ``m[trajectory, checkpoint]``, the parameters, and ``hitting_steps`` when ``hit`` is given.

    Raises
    ------
    SimulationDiverged
        When an iterate becomes non-finite (names the step size).

    Examples
    --------
    >>> from popgrad.models.finetuning.spec import orthonormal_problem
    >>> problem = orthonormal_problem("relu", k=4, xi=1.0, seed=0)
    >>> result = simulate(problem, d=100, eta=0.1 / 100, checkpoints=[0, 1000], trajectories=8, seed=1)
    >>> result.m.shape
    (8, 2)
    """
    check_choice(method, "method", METHODS)
    trajectories = check_integer(trajectories, "trajectories", 1, 10**8)
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    first_trajectory = check_integer(first_trajectory, "first_trajectory", 0, 2**62)
    if m0 is not None:
        m0 = check_real(m0, "m0", -1.0, 1.0)
    rank = problem.rank
    if method == "full" and problem.W is not None:
        d = problem.W.shape[1] if d is None else d
        if d != problem.W.shape[1]:
            raise InvalidArgument(f"d must equal the problem's W dimension {problem.W.shape[1]} for method 'full', got {d}")
    d = check_integer(d, "d", rank + 3)
    eta, steps = step_schedule(d, eta, delta, checkpoints, steps)
    level = math.inf if hit is None else 1.0 - check_real(hit, "hit", 0.0, 1.0, low_open=True)
    if stop_when_hit and hit is None:
        raise InvalidArgument("stop_when_hit needs hit (the level 1 - hit that m^2 must reach)", "stop_when_hit")
    stop = bool(stop_when_hit)
    check_memory(8.0 * trajectories * (steps.size + 6), f"the record of {trajectories} trajectories at {steps.size} checkpoints", "trajectories")
    if method != "chain":
        check_memory(8.0 * trajectories * d + 8.0 * (rank + 2) * d, f"full-d SGD with {trajectories} trajectories in dimension d = {d}", "trajectories", " (method 'chain' needs no memory in d)")
    code, model = model_arrays(problem)
    start_value = math.nan if m0 is None else m0
    states = np.empty((trajectories, 4), dtype=np.uint64)
    m = np.empty(trajectories)
    hits = np.full(trajectories, -1, dtype=np.int64)
    if method == "chain":
        L = gram_factor(problem.gram, rank)
        identity = bool(L.shape == (problem.k, problem.k) and np.array_equal(L, np.eye(problem.k)))
        triangular = bool(L.shape[0] == L.shape[1] and np.array_equal(L, np.tril(L)))
        kernel = chain_kernel(code, identity, triangular)
        run_blocks(initial_overlaps, trajectories, m, states, np.uint64(seed), first_trajectory, d - rank, start_value)

        def advance(done, count):
            if not (stop and np.all(hits >= 0)):
                run_blocks(kernel, trajectories, m, states, hits, level, stop, done, L, eta, float(d - rank), count, *model)
            return m

        work = problem.k
    else:
        structured = method == "fast"
        if structured:  # rotated: span(W) = the first rank coordinates, u = e_rank
            basis, W, u = np.eye(rank, d), gram_factor(problem.gram, rank), np.eye(1, d, rank)[0]
        else:
            geometry = embedding(problem, d, seed=seed)
            basis, W, u = geometry.basis.T, geometry.W @ geometry.basis, geometry.u  # W in the basis of span(W)
        basis, W, u = np.ascontiguousarray(basis), np.ascontiguousarray(W), np.ascontiguousarray(u)
        u_hat = np.empty((trajectories, d))
        run_blocks(initial_directions, trajectories, u_hat, states, np.uint64(seed), first_trajectory, u, basis, start_value)
        kernel = sgd_kernel(code, structured)

        def advance(done, count):
            if not (stop and np.all(hits >= 0)):
                run_blocks(kernel, trajectories, u_hat, states, m, hits, level, stop, done, W, basis, u, eta, count, *model)
            return m

        m[:] = u_hat @ u
        work = d
    hits[m * m >= level] = 0
    chunk = 20_000_000 // max(1, trajectories * work)  # ~50 ms of work: prompt interrupts, few GIL hand-offs
    try:
        recording = run_to_checkpoints(advance, m, steps, chunk, progress, f"SGD ({method}, {trajectories} traj.)", f"eta = {eta:g} is too large (try a smaller --eta or --delta)")
    except Diverged as exc:
        raise SimulationDiverged(f"SGD {exc}") from None
    parameters = {"problem": problem.to_dict(), "d": d, "eta": eta, "method": method, "m0": m0, "seed": seed, "trajectories": trajectories, "first_trajectory": first_trajectory, "hit": hit, "stop_when_hit": stop}
    return SimulationResult(recording.steps, recording.values, method, eta, d, seed, m0, first_trajectory, recording.seconds, parameters, None if hit is None else hits, hit)
