"""One entry point for ODEs on vector states: :func:`solve`.

An ODE is a right-hand side compiled by :func:`~popgrad.dynamics.solvers.base.right_hand_side` plus its
packed float64 parameters (:class:`ODE`); model objects that describe an ODE (such as the fine-tuning
model's ``DriftODE``) provide ``as_ode()``. Solvers: ``rk4`` (fixed step), ``dopri5`` (adaptive, dense
output, events) and ``radau`` (implicit, for stiff problems, through scipy); see :mod:`popgrad.dynamics.solvers`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._validation import InvalidArgument, check_choice, check_integer, check_real
from .solvers import SOLVERS
from .solvers.base import STATUS_MAX_STEPS, STATUS_NOT_FINITE

__all__ = ["ODE", "Solution", "solve", "SolverFailed"]


class SolverFailed(RuntimeError):
    """The solver could not reach the last output time (too many steps, or a non-finite state)."""


@dataclass(frozen=True)
class ODE:
    """``dy/dt = rhs(t, y, parameters)``.

    Attributes
    ----------
    rhs : numba function
        ``rhs(t, y, parameters, out)`` writing dy/dt into ``out`` (see :func:`right_hand_side`).
    parameters : ndarray
        Passed to ``rhs`` unchanged.
    """

    rhs: object
    parameters: np.ndarray

    def as_ode(self) -> "ODE":
        return self


@dataclass(frozen=True)
class Solution:
    """Values at the requested times (``values[i]`` at ``times[i]``: a number for a scalar problem, a row
    for a vector one); ``event_time`` is the first time the event component reached its target (nan if
    not); ``steps`` and ``rejected`` count the solver's steps.

    Attributes
    ----------
    times : ndarray
    values : ndarray
    event_time : float
    steps : int
    rejected : int
    method : str
        The solver that produced the values.
    """

    times: np.ndarray
    values: np.ndarray
    event_time: float
    steps: int
    rejected: int
    method: str


def solve(ode, y0, times, method: str = "dopri5", rtol: float = 1e-10, atol: float = 1e-12, step: float | None = None, target: float | None = None, stop_at_event: bool = False, max_steps: int = 10_000_000, event_component: int = 0, t0: float = 0.0) -> Solution:
    """Integrate ``ode`` (an :class:`ODE` or anything with ``as_ode()``) from ``y(t0) = y0``.

    Parameters
    ----------
    ode : ODE or object with ``as_ode()``
    y0 : float or array
        Initial state; a float gives scalar values in the solution.
    times : sequence of float
        Sorted output times ≥ t0.
    method : 'dopri5', 'radau' or 'rk4'
    rtol, atol : float
        dopri5 tolerances (max norm over components).
    step : float
        rk4 step.
    target : float, optional
        Event: the first time component ``event_component`` crosses ``target`` (dopri5).
    stop_at_event : bool
        End the integration at the event (later values are nan).
    max_steps : int
        Step budget (radau: right-hand side evaluations); beyond it :class:`SolverFailed` is raised.
    event_component : int
        Component of the state watched by the event.
    t0 : float
        Initial time.

    Returns
    -------
    Solution

    Raises
    ------
    SolverFailed
        When dopri5 needs more than ``max_steps`` steps or the state stops being finite.

    Examples
    --------
    >>> from popgrad.dynamics.solvers.base import right_hand_side
    >>> @right_hand_side
    ... def rotation(t, y, parameters, out):
    ...     out[0], out[1] = -y[1], y[0]
    >>> solution = solve(ODE(rotation, np.zeros(1)), [1.0, 0.0], [np.pi / 2], rtol=1e-12, atol=1e-14)
    >>> (np.round(solution.values[0], 10) + 0.0).tolist()  # (cos, sin) at pi/2
    [0.0, 1.0]
    """
    system = ode.as_ode()
    scalar = np.ndim(y0) == 0
    state = np.atleast_1d(np.asarray(y0, dtype=np.float64)).copy()
    if state.ndim != 1 or not np.all(np.isfinite(state)):
        raise InvalidArgument("y0 must be a finite number or a finite 1-D array")
    t0 = check_real(t0, "t0")
    times = np.asarray(times, dtype=np.float64).ravel()
    if times.size == 0 or np.any(np.diff(times) < 0) or times[0] < t0 or not np.all(np.isfinite(times)):
        raise InvalidArgument("times must be a non-empty sorted list of finite times >= t0")
    check_choice(method, "method", tuple(SOLVERS))
    parameters = np.ascontiguousarray(system.parameters, dtype=np.float64)
    if method == "rk4":
        if step is None or not step > 0:
            raise InvalidArgument("rk4 needs a step > 0")
        values = SOLVERS["rk4"].rk4(system.rhs, parameters, state, t0, times, float(step))
        result = Solution(times, values, math.nan, int(math.ceil((times[-1] - t0) / step)), 0, method)
    elif method == "radau":
        if target is not None:
            raise InvalidArgument("events (target) need method 'dopri5'", "target")
        check_real(rtol, "rtol", 1e-15, 1.0)
        check_real(atol, "atol", 0.0, 1.0)
        values, steps, message = SOLVERS["radau"].radau(system.rhs, parameters, state, t0, times, float(rtol), float(atol), check_integer(max_steps, "max_steps", 1))
        if message is not None:
            raise SolverFailed(f"radau: {message}")
        result = Solution(times, values, math.nan, steps, 0, method)
    else:
        check_real(rtol, "rtol", 1e-15, 1.0)
        check_real(atol, "atol", 0.0, 1.0)
        component = check_integer(event_component, "event_component", 0, state.size - 1)
        max_steps = check_integer(max_steps, "max_steps", 1)
        values, event, accepted, rejected, status = SOLVERS["dopri5"].dopri5(system.rhs, parameters, state, t0, times, float(rtol), float(atol), -1 if target is None else component, math.nan if target is None else float(target), bool(stop_at_event), max_steps)
        if status == STATUS_MAX_STEPS:
            raise SolverFailed(f"dopri5 took more than {max_steps} steps (rtol={rtol}, atol={atol})")
        if status == STATUS_NOT_FINITE:
            raise SolverFailed(f"dopri5: the state stopped being finite after {accepted} steps")
        result = Solution(times, values, float(event), int(accepted), int(rejected), method)
    if scalar:
        return Solution(result.times, result.values[:, 0], result.event_time, result.steps, result.rejected, result.method)
    return result
