"""Radau IIA (order 5, implicit) through ``scipy.integrate.solve_ivp``, for stiff problems.

The explicit Dormand–Prince pair needs steps of the size of the fastest time scale; where a problem is stiff
(the finite-step SGD ODE at large step sizes: its normalisation term pulls m to a fixed point on a scale of
1/(eta^2 n V) steps) it takes millions of steps and gives up. An implicit method takes steps of the size of
the solution's own variation. The right-hand side is the same compiled function, called from Python.
"""

from __future__ import annotations

import numpy as np

__all__ = ["radau", "ORDER"]

ORDER = 5


class _Budget(Exception):
    """Raised from the right-hand side once the evaluation budget is spent (scipy takes no step limit)."""


def radau(rhs, parameters, y0, t0, times, rtol, atol, max_steps):
    """Values at ``times`` (rows) from ``y(t0) = y0``; returns ``(values, steps, message)`` with
    ``message`` None on success, else why the solver stopped (values after that point are nan).
    ``max_steps`` bounds the right-hand side evaluations (Jacobian columns included)."""
    from scipy import integrate  # 0.2 s of import, paid only when a problem is stiff

    out = np.empty(y0.shape[0])
    evaluations = [0]

    def f(t, y):
        evaluations[0] += 1
        if evaluations[0] > max_steps:  # scipy takes no step budget: bound the right-hand side calls
            raise _Budget
        rhs(t, np.ascontiguousarray(y), parameters, out)
        return out.copy()

    values = np.full((times.shape[0], y0.shape[0]), np.nan)
    t, y, steps = t0, y0.copy(), 0
    for index in range(times.shape[0]):
        if times[index] > t:
            # integrate to each output time (Radau's dense output is accurate to ~1e-5 only, measured on a
            # stiff linear problem), restarting there
            try:
                result = integrate.solve_ivp(f, (t, times[index]), y, method="Radau", rtol=max(rtol, 1e-13), atol=max(atol, 1e-15))
            except _Budget:
                return values, steps, f"more than {max_steps} right-hand side evaluations before t = {times[index]:g}"
            steps += int(result.t.shape[0] - 1)
            if not result.success:
                return values, steps, result.message
            t, y = times[index], result.y[:, -1].copy()
        values[index] = y
    return values, steps, None
