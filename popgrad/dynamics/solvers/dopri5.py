"""Dormand–Prince 5(4) on vector states: error control (rtol, atol, max norm), Shampine's quartic dense
output at the requested times, and an event — the first time component ``i`` crosses a target, located
on the dense output by bisection."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types

from ...numerics.linalg import copy_into
from .base import RHS_TYPE, compiled_on_first_use, STATUS_EVENT, STATUS_MAX_STEPS, STATUS_NOT_FINITE, STATUS_OK

__all__ = ["dopri5", "ORDER"]

ORDER = 5
_A = np.array(
    [
        [0, 0, 0, 0, 0],
        [1 / 5, 0, 0, 0, 0],
        [3 / 40, 9 / 40, 0, 0, 0],
        [44 / 45, -56 / 15, 32 / 9, 0, 0],
        [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0],
        [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    ]
)
_C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0])
_B = np.array([35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0])
_E = np.array([-71 / 57600, 0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40])
_P = np.array(
    [
        [1, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432],
        [0, 0, 0, 0],
        [0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799],
        [0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072],
        [0, 127303824393 / 49829197408, -318862633887 / 49829197408, 701980252875 / 199316789632],
        [0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844],
        [0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423],
    ]
)


@njit(cache=True)
def _dense(y_old, h, K, theta, component):
    """Component ``component`` of the dense output at ``t + theta h``."""
    value = 0.0
    for i in range(7):
        weight = 0.0
        power = theta
        for j in range(4):
            weight += _P[i, j] * power
            power *= theta
        value += K[i, component] * weight
    return y_old[component] + h * value


_VECTOR = types.float64[::1]
_RESULT = types.Tuple((types.float64[:, ::1], types.float64, types.int64, types.int64, types.int64))


@compiled_on_first_use(_RESULT(RHS_TYPE, _VECTOR, _VECTOR, types.float64, _VECTOR, types.float64, types.float64, types.int64, types.float64, types.boolean, types.int64))
def dopri5(rhs, parameters, y0, t0, times, rtol, atol, event_component, event_target, stop_at_event, max_steps):
    """Returns ``(values at times, event time or nan, accepted steps, rejected steps, status)``.

    ``event_component < 0`` disables the event; with ``stop_at_event`` the integration ends at the event
    and later output rows stay nan."""
    n = y0.shape[0]
    out = np.full((times.shape[0], n), np.nan)
    K = np.empty((7, n))
    y = y0.copy()
    y_new = np.empty(n)
    trial = np.empty(n)
    t = t0
    t_end = times[times.shape[0] - 1]
    rhs(t, y, parameters, K[0])
    scale = 0.0
    slope = 0.0
    for i in range(n):
        scale = max(scale, atol + rtol * abs(y[i]))
        slope = max(slope, abs(K[0, i]))
    h = 0.01 * scale / slope if slope > 0.0 else (t_end - t0) * 1e-3
    h = min(max(h, 1e-12 * max(1.0, abs(t_end - t0))), max(t_end - t0, 1e-300))
    next_output = 0
    while next_output < times.shape[0] and times[next_output] <= t0:
        copy_into(y0, out[next_output])
        next_output += 1
    event = np.nan
    accepted, rejected, status = 0, 0, STATUS_OK
    while next_output < times.shape[0]:
        if accepted + rejected >= max_steps:
            status = STATUS_MAX_STEPS
            break
        h = min(h, t_end - t)
        for s in range(1, 6):
            for i in range(n):
                increment = 0.0
                for j in range(s):
                    increment += _A[s, j] * K[j, i]
                trial[i] = y[i] + h * increment
            rhs(t + _C[s] * h, trial, parameters, K[s])
        for i in range(n):
            total = 0.0
            for s in range(6):
                total += _B[s] * K[s, i]
            y_new[i] = y[i] + h * total
        rhs(t + h, y_new, parameters, K[6])
        error = 0.0
        for i in range(n):
            local = 0.0
            for s in range(7):
                local += _E[s] * K[s, i]
            error = max(error, abs(h * local) / (atol + rtol * max(abs(y[i]), abs(y_new[i]))))
        if not math.isfinite(error):
            status = STATUS_NOT_FINITE
            break
        if error <= 1.0:
            accepted += 1
            crossed = False
            if event_component >= 0 and math.isnan(event):
                before, after = y[event_component] - event_target, y_new[event_component] - event_target
                crossed = before * after <= 0.0 and before != 0.0
                if crossed:
                    low, high = 0.0, 1.0
                    for _ in range(80):
                        middle = 0.5 * (low + high)
                        if (_dense(y, h, K, middle, event_component) - event_target) * before > 0.0:
                            low = middle
                        else:
                            high = middle
                    event = t + high * h
            while next_output < times.shape[0] and times[next_output] <= t + h:
                if stop_at_event and crossed and times[next_output] > event:
                    break
                theta = (times[next_output] - t) / h
                for i in range(n):
                    out[next_output, i] = _dense(y, h, K, theta, i)
                next_output += 1
            t += h
            copy_into(y_new, y)
            copy_into(K[6], K[0])
            if stop_at_event and crossed:
                status = STATUS_EVENT
                break
            factor = 5.0 if error == 0.0 else min(5.0, max(0.2, 0.9 * error**-0.2))
        else:
            rejected += 1
            factor = max(0.2, 0.9 * error**-0.2)
        h *= factor
    return out, event, accepted, rejected, status
