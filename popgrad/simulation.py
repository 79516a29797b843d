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

Trajectory j draws from random stream ``first_trajectory + j`` of ``seed`` (see :mod:`popgrad._jit`),
and the state (vectors and stream states) persists between calls, so results do not depend on the thread
count, on how trajectories are batched, or on how steps are split between checkpoints.

The two step kernels use numba's parallel loops: measured here, the same body compiled as a plain
serial function ran 3.5x slower (0.70 vs 2.44 M chain steps/s at k = 20), for reasons not yet found;
the cheaper kernels run serially on a thread pool (:func:`popgrad._jit.run_blocks`), which compiles
in half the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np
from numba import njit

from . import _jit
from ._validation import check_integer, check_real
from .gradients import gradient_coefficient, neuron_divisors
from .model import FineTuningProblem, embedding

__all__ = ["simulate", "SimulationResult", "SimulationDiverged", "METHODS", "checkpoint_grid"]

METHODS = ("full", "fast", "chain")


class SimulationDiverged(ValueError):
    """SGD produced a non-finite iterate: the step size is too large."""


# ------------------------------------------------------------------------------------------------
# kernels
# ------------------------------------------------------------------------------------------------


@njit(cache=True)
def _uniform_direction(state, out, start):
    """Fill out[start:] with a uniform unit vector (out[:start] = 0)."""
    norm = 0.0
    for i in range(out.shape[0]):
        if i < start:
            out[i] = 0.0
        else:
            out[i] = _jit.normal(state)
            norm += out[i] * out[i]
    norm = math.sqrt(norm)
    for i in range(start, out.shape[0]):
        out[i] /= norm


@njit(cache=True, nogil=True)
def _init_vectors(start, stop, u_hat, states, seed, first, u, basis, m0):
    """u_hat uniform on the unit sphere of span(W)^perp (m0 is nan) or with <u, u_hat> = m0."""
    d = u_hat.shape[1]
    for j in range(start, stop):
        _jit.seed_stream(seed, first + j, states[j])
        v = np.empty(d)
        _uniform_direction(states[j], v, 0)
        for r in range(basis.shape[0]):
            v -= (basis[r] @ v) * basis[r]
        if not math.isnan(m0):
            v -= (u @ v) * u
        norm = math.sqrt(v @ v)
        for i in range(d):
            v[i] /= norm
        if not math.isnan(m0):
            for i in range(d):
                v[i] = m0 * u[i] + math.sqrt(1.0 - m0 * m0) * v[i]
        u_hat[j] = v


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract", "nsz"})
def _advance_full(start, stop, u_hat, states, W, basis, u, structured, lam, c, c_hat, xi, n_t, n_s, kind, parameters, ops, args, d_ops, d_args, eta, steps, m_out):
    """``steps`` SGD steps for every trajectory. ``basis`` (rank x d) spans span(W) and ``W`` is given
    in it: the pre-activations are ``a = W (basis x)`` (k x rank), which reuses the coordinates that the
    projection needs. With ``structured`` the geometry is the rotated one: span(W) = first rank
    coordinates and u = e_rank."""
    d = u_hat.shape[1]
    k = W.shape[0]
    rank = basis.shape[0]
    for j in numba.prange(start, stop):
        state = states[j]
        v = u_hat[j]
        x = np.empty(d)
        a = np.empty(k)
        coords = np.empty(rank)
        stack = np.empty(_jit.STACK_SIZE)
        for _ in range(steps):
            for i in range(d):
                x[i] = _jit.normal(state)
            if structured:
                _jit.matvec(W, x, a, False)
                for r in range(rank):
                    x[r] = 0.0  # P_W^perp x
                g = x[rank]
            else:
                g = 0.0
                for l in range(d):
                    g += u[l] * x[l]
                _jit.matvec(basis, x, coords, False)
                _jit.matvec(W, coords, a, False)
                for r in range(rank):
                    for l in range(d):
                        x[l] -= coords[r] * basis[r, l]
            g_hat = 0.0
            for l in range(d):
                g_hat += v[l] * x[l]  # u_hat is orthogonal to span(W): <u_hat, x> = <u_hat, P x>
            coefficient, _ = gradient_coefficient(a, g, g_hat, lam, c, c_hat, xi, n_t, n_s, kind, parameters, ops, args, d_ops, d_args, stack)
            step = eta * coefficient
            norm = 0.0
            for l in range(d):
                v[l] += step * (x[l] - g_hat * v[l])
                norm += v[l] * v[l]
            norm = math.sqrt(norm)
            if not (0.0 < norm < math.inf):
                norm = math.nan  # overflow: report it rather than normalise to a zero vector
            for l in range(d):
                v[l] /= norm
        if structured:
            m_out[j] = v[rank]
        else:
            total = 0.0
            for l in range(d):
                total += u[l] * v[l]
            m_out[j] = total


@njit(cache=True, nogil=True)
def _init_chain(start, stop, m, states, seed, first, n, m0):
    """m_0 = first coordinate of a uniform point on S^(n-1), or m0."""
    for j in range(start, stop):
        _jit.seed_stream(seed, first + j, states[j])
        if math.isnan(m0):
            z = _jit.normal(states[j])
            m[j] = z / math.sqrt(z * z + _jit.chi_square(states[j], n - 1.0))
        else:
            m[j] = m0


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract", "nsz"})
def _advance_chain(start, stop, m, states, L, identity, triangular, lam, c, c_hat, xi, n_t, n_s, kind, parameters, ops, args, d_ops, d_args, eta, n, steps):
    k, rank = L.shape
    for j in numba.prange(start, stop):
        state = states[j]
        z = np.empty(rank)
        a = np.empty(k)
        stack = np.empty(_jit.STACK_SIZE)
        overlap = m[j]
        for _ in range(steps):
            if identity:
                for i in range(k):
                    a[i] = _jit.normal(state)
            else:
                for r in range(rank):
                    z[r] = _jit.normal(state)
                _jit.matvec(L, z, a, triangular)
            g_hat = _jit.normal(state)
            q = _jit.normal(state)
            chi = _jit.chi_square(state, n - 2.0)
            co = math.sqrt(max(0.0, 1.0 - overlap * overlap))
            g = overlap * g_hat + co * q
            coefficient, _ = gradient_coefficient(a, g, g_hat, lam, c, c_hat, xi, n_t, n_s, kind, parameters, ops, args, d_ops, d_args, stack)
            step = eta * coefficient
            denominator = math.sqrt(1.0 + step * step * (q * q + chi))
            overlap = (overlap + step * q * co) / denominator if denominator < math.inf else math.nan
        m[j] = overlap


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationResult:
    """m_t of every trajectory at the checkpoints: ``m[trajectory, checkpoint]``."""

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

    @property
    def trajectories(self) -> int:
        return self.m.shape[0]


def checkpoint_grid(steps: int, count: int = 21, spacing: str = "linear") -> np.ndarray:
    """``count`` checkpoints from 0 to ``steps`` (linear, or logarithmic after 0)."""
    steps = check_integer(steps, "steps", 1)
    if spacing == "log":
        grid = np.unique(np.round(np.logspace(0, math.log10(steps), count - 1)).astype(np.int64))
        return np.concatenate([[0], grid])
    return np.unique(np.round(np.linspace(0, steps, count)).astype(np.int64))


def _check_checkpoints(checkpoints) -> np.ndarray:
    steps = np.asarray(checkpoints)
    if steps.ndim != 1 or steps.size == 0 or not np.issubdtype(steps.dtype, np.integer) and not np.all(steps == np.round(steps)):
        raise ValueError("checkpoints must be a list of non-negative integers (step counts)")
    steps = steps.astype(np.int64)
    if np.any(steps < 0) or np.any(np.diff(steps) <= 0):
        raise ValueError("checkpoints must be non-negative and strictly increasing")
    return steps


def simulate(problem: FineTuningProblem, d: int, eta: float, checkpoints, trajectories: int = 100, method: str = "chain", m0: float | None = None, seed: int = 0, first_trajectory: int = 0, progress: bool = False) -> SimulationResult:
    """Run online SGD and record m_t at the checkpoints.

    Parameters
    ----------
    problem : FineTuningProblem
    d : int
        Input dimension (must equal ``problem.W.shape[1]`` when the problem has an explicit W and the method
        is ``full``).
    eta : float
        Constant step size (the paper's Theorem 16 uses eta = delta / (d V_k)).
    checkpoints : list of int
        Steps at which m is recorded (0 records the initial overlap).
    trajectories : int
        Independent trajectories, trajectory j on random stream ``first_trajectory + j``.
    method : 'chain', 'fast' or 'full'
    m0 : float or None
        Initial overlap; None draws u_hat_0 uniformly on the sphere of span(W)^perp (m_0 ~ 1/sqrt(d)).
    seed : int
    progress : bool
        Show a progress bar (tqdm) over the steps.

    Raises
    ------
    SimulationDiverged
        When an iterate becomes non-finite (names the step size).

    Examples
    --------
    >>> from popgrad.model import orthonormal_problem
    >>> problem = orthonormal_problem("relu", k=4, xi=1.0, seed=0)
    >>> result = simulate(problem, d=100, eta=0.1 / 100, checkpoints=[0, 1000], trajectories=8, seed=1)
    >>> result.m.shape
    (8, 2)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    eta = check_real(eta, "eta", 0.0, None, low_open=True)
    trajectories = check_integer(trajectories, "trajectories", 1, 10**8)
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    first_trajectory = check_integer(first_trajectory, "first_trajectory", 0, 2**62)
    steps = _check_checkpoints(checkpoints)
    if m0 is not None:
        m0 = check_real(m0, "m0", -1.0, 1.0)
    rank = problem.rank
    if method == "full" and problem.W is not None:
        d = problem.W.shape[1] if d is None else d
        if d != problem.W.shape[1]:
            raise ValueError(f"d must equal the problem's W dimension {problem.W.shape[1]} for method 'full', got {d}")
    d = check_integer(d, "d", rank + 3)
    n_t, n_s = neuron_divisors(problem)
    spec = problem.activation.jit_spec
    common = (np.asarray(problem.lam), np.asarray(problem.c), np.asarray(problem.c_hat), float(problem.xi), n_t, n_s) + spec
    start_value = math.nan if m0 is None else m0
    states = np.empty((trajectories, 4), dtype=np.uint64)
    record = np.empty((trajectories, steps.size))

    if method == "chain":
        L = _factor(problem.gram, rank)
        identity = bool(L.shape == (problem.k, problem.k) and np.array_equal(L, np.eye(problem.k)))
        triangular = bool(L.shape[0] == L.shape[1] and np.array_equal(L, np.tril(L)))
        m = np.empty(trajectories)
        _jit.run_blocks(_init_chain, trajectories, m, states, np.uint64(seed), first_trajectory, d - rank, start_value)

        def advance(count):
            _advance_chain(0, trajectories, m, states, L, identity, triangular, *common, eta, float(d - rank), count)
            return m
    else:
        if method == "fast":
            W = np.zeros((problem.k, d))
            W[:, :rank] = _factor(problem.gram, rank)
            basis = np.eye(d)[:rank]
            u = np.eye(d)[rank]
        else:
            geometry = embedding(problem, d, seed=seed)
            W, basis, u = geometry.W, np.ascontiguousarray(geometry.basis.T), geometry.u
        u_hat = np.empty((trajectories, d))
        _jit.run_blocks(_init_vectors, trajectories, u_hat, states, np.uint64(seed), first_trajectory, u, basis, start_value)
        m = np.empty(trajectories)
        structured = method == "fast"
        W = np.ascontiguousarray(W[:, :rank] if structured else W @ basis.T)  # W in the basis of span(W)
        basis = np.ascontiguousarray(basis)

        def advance(count):
            _advance_full(0, trajectories, u_hat, states, W, basis, u, structured, *common, eta, count, m)
            return m

        m[:] = u_hat @ u

    import time

    from tqdm.auto import tqdm

    begin = time.perf_counter()
    done = 0
    bar = tqdm(total=int(steps[-1]), disable=not progress, unit="step", desc=f"SGD ({method}, {trajectories} traj.)", leave=False)
    for index, target in enumerate(steps):
        while done < target:
            count = int(min(target - done, max(1, 2_000_000 // max(1, trajectories * (d if method != "chain" else problem.k)))))
            advance(count)
            done += count
            bar.update(count)
            if not np.all(np.isfinite(m)):
                bar.close()
                raise SimulationDiverged(f"SGD diverged by step {done}: eta = {eta:g} is too large (try a smaller --eta or --delta)")
        record[:, index] = m
    bar.close()
    parameters = {"problem": problem.to_dict(), "d": d, "eta": eta, "method": method, "m0": m0, "seed": seed, "trajectories": trajectories, "first_trajectory": first_trajectory}
    return SimulationResult(steps, record, method, eta, d, seed, m0, first_trajectory, time.perf_counter() - begin, parameters)


def _factor(gram: np.ndarray, rank: int) -> np.ndarray:
    """L (k x rank) with L L^T = G: the identity for G = I (orthonormal features stay O(k)), Cholesky
    for full rank, eigenvectors otherwise."""
    k = gram.shape[0]
    if rank == 0:
        return np.zeros((k, 0))
    if np.array_equal(gram, np.eye(k)):
        return np.eye(k)
    if rank == k:
        try:
            return np.linalg.cholesky(gram)  # lower triangular: half the work of a full factor
        except np.linalg.LinAlgError:
            pass
    eigenvalues, vectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1][:rank]
    return np.ascontiguousarray(vectors[:, order] * np.sqrt(np.clip(eigenvalues[order], 0.0, None)))
