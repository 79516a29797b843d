"""Classical fixed-step Runge–Kutta (order 4) on vector states, landing exactly on every output time."""

from __future__ import annotations

import numpy as np
from numba import types

from ...numerics.linalg import copy_into
from .base import RHS_TYPE, compiled_on_first_use

__all__ = ["rk4", "ORDER"]

ORDER = 4
_VECTOR = types.float64[::1]


@compiled_on_first_use(types.float64[:, ::1](RHS_TYPE, _VECTOR, _VECTOR, types.float64, _VECTOR, types.float64))
def rk4(rhs, parameters, y0, t0, times, step):
    """Values at ``times`` (rows) from ``y(t0) = y0`` with steps of at most ``step``."""
    n = y0.shape[0]
    out = np.empty((times.shape[0], n))
    y = y0.copy()
    k1, k2, k3, k4, trial = np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    t = t0
    for index in range(times.shape[0]):
        while t < times[index]:
            h = min(step, times[index] - t)
            rhs(t, y, parameters, k1)
            for i in range(n):
                trial[i] = y[i] + 0.5 * h * k1[i]
            rhs(t + 0.5 * h, trial, parameters, k2)
            for i in range(n):
                trial[i] = y[i] + 0.5 * h * k2[i]
            rhs(t + 0.5 * h, trial, parameters, k3)
            for i in range(n):
                trial[i] = y[i] + h * k3[i]
            rhs(t + h, trial, parameters, k4)
            for i in range(n):
                y[i] += h * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]) / 6.0
            t += h
            if t > times[index] - 1e-12 * max(1.0, abs(times[index])):
                t = times[index]
        copy_into(y, out[index])
    return out
