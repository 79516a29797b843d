"""numba ODE integrators for the overlap dynamics ``dm/dt = a h(m) (1 - m^2) - b (s V(m) - band |s| W(m))``.

Every prediction of popgrad is of this form (MATH.md §4), with s = m or s = 1: gradient flow (b = 0), and
the finite-step SGD ODEs whose second term is the normalisation noise; ``band = ±1`` with W the
uncertainty of V gives the comparison-principle bounds of the band. h, V and W are piecewise Chebyshev interpolants
(:mod:`popgrad.interpolation`), so a right-hand side costs two binary searches and two Clenshaw sums.

Two solvers behind one entry point, :func:`solve`:

* ``rk4`` — classical fixed-step Runge–Kutta, landing exactly on every output time;
* ``dopri5`` — Dormand–Prince 5(4) with error control (rtol, atol), Shampine's quartic dense output at
  the requested times, and an event: the first time m reaches a target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from .._validation import check_real
from ..numerics.chebyshev import PiecewiseChebyshev, chebyshev_evaluate_scalar

__all__ = ["DriftODE", "Solution", "solve"]

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
def drift_rhs(h_breaks, h_coefficients, v_breaks, v_coefficients, w_breaks, w_coefficients, a, b, band, times_m, m):
    """``a h(m) (1 - m^2) - b (s V(m) - band |s| W(m))`` with s = m (``times_m``) or 1; m is clipped to
    [-1, 1] for the lookups."""
    value = 0.0
    if a != 0.0:
        value += a * chebyshev_evaluate_scalar(h_breaks, h_coefficients, True, m) * (1.0 - m * m)
    if b != 0.0:
        factor = m if times_m else 1.0
        noise = factor * chebyshev_evaluate_scalar(v_breaks, v_coefficients, True, m)
        if band != 0.0:
            noise -= band * abs(factor) * chebyshev_evaluate_scalar(w_breaks, w_coefficients, True, m)
        value -= b * noise
    return value


@njit(cache=True)
def _rk4(hb, hc, vb, vc, wb, wc, a, b, band, times_m, y0, t0, times, step):
    out = np.empty(times.shape[0])
    y, t = y0, t0
    for n in range(times.shape[0]):
        while t < times[n]:
            h = min(step, times[n] - t)
            k1 = drift_rhs(hb, hc, vb, vc, wb, wc, a, b, band, times_m, y)
            k2 = drift_rhs(hb, hc, vb, vc, wb, wc, a, b, band, times_m, y + 0.5 * h * k1)
            k3 = drift_rhs(hb, hc, vb, vc, wb, wc, a, b, band, times_m, y + 0.5 * h * k2)
            k4 = drift_rhs(hb, hc, vb, vc, wb, wc, a, b, band, times_m, y + h * k3)
            y += h * (k1 + 2.0 * k2 + 2.0 * k3 + k4) / 6.0
            t += h
            if t > times[n] - 1e-12 * max(1.0, abs(times[n])):
                t = times[n]
        out[n] = y
    return out


@njit(cache=True)
def _dense(y_old, h, K, theta):
    value = 0.0
    for i in range(7):
        weight = 0.0
        power = theta
        for j in range(4):
            weight += _P[i, j] * power
            power *= theta
        value += K[i] * weight
    return y_old + h * value


@njit(cache=True)
def _dopri5(hb, hc, vb, vc, wb, wc, a, b, band, times_m, y0, t0, times, rtol, atol, target, stop_at_event, max_steps):
    """Returns (values at times, event time or nan, accepted steps, rejected steps, status).
    status: 0 ok, 1 stopped at the event, 2 too many steps."""
    out = np.full(times.shape[0], np.nan)
    K = np.empty(7)
    t, y = t0, y0
    t_end = times[times.shape[0] - 1]
    f = drift_rhs(hb, hc, vb, vc, wb, wc, a, b, band, times_m, y)
    scale = atol + rtol * abs(y)
    h = 0.01 * scale / max(abs(f), 1e-300) if f != 0.0 else (t_end - t0) * 1e-3
    h = min(max(h, 1e-12 * max(1.0, abs(t_end - t0))), max(t_end - t0, 1e-300))
    next_output = 0
    while next_output < times.shape[0] and times[next_output] <= t0:
        out[next_output] = y0
        next_output += 1
    event = np.nan
    accepted, rejected, status = 0, 0, 0
    while next_output < times.shape[0]:
        if accepted + rejected >= max_steps:
            status = 2
            break
        h = min(h, t_end - t)
        K[0] = f
        for s in range(1, 6):
            increment = 0.0
            for j in range(s):
                increment += _A[s, j] * K[j]
            K[s] = drift_rhs(hb, hc, vb, vc, wb, wc, a, b, band, times_m, y + h * increment)
        y_new = y
        for s in range(6):
            y_new += h * _B[s] * K[s]
        K[6] = drift_rhs(hb, hc, vb, vc, wb, wc, a, b, band, times_m, y_new)
        error = 0.0
        for s in range(7):
            error += _E[s] * K[s]
        error = abs(h * error) / (atol + rtol * max(abs(y), abs(y_new)))
        if error <= 1.0:
            accepted += 1
            crossed = (y - target) * (y_new - target) <= 0.0 and y != target and math.isnan(event)
            if crossed:
                low, high = 0.0, 1.0
                for _ in range(80):
                    middle = 0.5 * (low + high)
                    if (_dense(y, h, K, middle) - target) * (y - target) > 0.0:
                        low = middle
                    else:
                        high = middle
                event = t + high * h
            while next_output < times.shape[0] and times[next_output] <= t + h:
                if stop_at_event and crossed and times[next_output] > event:
                    break
                out[next_output] = _dense(y, h, K, (times[next_output] - t) / h)
                next_output += 1
            t, y, f = t + h, y_new, K[6]
            if stop_at_event and crossed:
                status = 1
                break
            factor = 5.0 if error == 0.0 else min(5.0, max(0.2, 0.9 * error ** -0.2))
        else:
            rejected += 1
            factor = max(0.2, 0.9 * error ** -0.2)
        h *= factor
    return out, event, accepted, rejected, status


@dataclass(frozen=True)
class DriftODE:
    """``dm/dt = a h(m) (1 - m^2) - b (s V(m) - band |s| W(m))`` with interpolants h, V, W; s = m when
    ``times_m`` (the second-order noise term m N(m)), else 1 (a noise term given as a whole).

    ``V`` and ``W`` may be None when ``b == 0``. All interpolants are fitted on [-1, 1] with
    ``endpoint=True``.
    """

    h: PiecewiseChebyshev
    a: float
    V: PiecewiseChebyshev | None = None
    b: float = 0.0
    W: PiecewiseChebyshev | None = None
    band: float = 0.0
    times_m: bool = True

    def arrays(self) -> tuple:
        zero = (np.array([-1.0, 1.0]), np.zeros((1, 1)))
        v = (self.V.breaks, self.V.coefficients) if self.V is not None else zero
        w = (self.W.breaks, self.W.coefficients) if self.W is not None else zero
        for name, part in (("h", self.h), ("V", self.V), ("W", self.W)):
            if part is not None and not part.endpoint:
                raise ValueError(f"DriftODE needs {name} fitted with endpoint=True (chebyshev_interpolant(..., endpoint=True))")
        return (self.h.breaks, self.h.coefficients) + v + w + (float(self.a), float(self.b), float(self.band), bool(self.times_m))

    def __call__(self, m: float) -> float:
        return drift_rhs(*self.arrays(), float(m))


@dataclass(frozen=True)
class Solution:
    """Values at the requested times; ``event_time`` is the first time m reached the target (nan if not)."""

    times: np.ndarray
    values: np.ndarray
    event_time: float
    steps: int
    rejected: int
    method: str


def solve(ode: DriftODE, m0: float, times, method: str = "dopri5", rtol: float = 1e-10, atol: float = 1e-12, step: float | None = None, target: float | None = None, stop_at_event: bool = False, max_steps: int = 10_000_000) -> Solution:
    """Integrate ``ode`` from ``m(0) = m0`` and report m at ``times`` (sorted, ≥ 0).

    Examples
    --------
    >>> from popgrad.numerics.chebyshev import chebyshev_interpolant
    >>> ode = DriftODE(chebyshev_interpolant(lambda m: 1.0 + 0 * m, endpoint=True), a=1.0)  # dm/dt = 1 - m^2
    >>> solution = solve(ode, 0.0, [1.0, 2.0], target=0.5)
    >>> np.round(solution.values, 10).tolist(), round(solution.event_time, 10)  # tanh(t), atanh(0.5)
    ([0.761594156, 0.9640275801], 0.5493061443)
    """
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0 or np.any(np.diff(times) < 0) or times[0] < 0 or not np.all(np.isfinite(times)):
        raise ValueError("times must be a non-empty sorted list of finite times >= 0")
    m0 = check_real(m0, "m0", -1.0, 1.0)
    arrays = ode.arrays()
    if method == "rk4":
        if step is None or not step > 0:
            raise ValueError("rk4 needs a step > 0")
        values = _rk4(*arrays, m0, 0.0, times, float(step))
        return Solution(times, values, math.nan, int(math.ceil(times[-1] / step)), 0, method)
    if method != "dopri5":
        raise ValueError(f"method must be 'rk4' or 'dopri5', got {method!r}")
    check_real(rtol, "rtol", 1e-15, 1.0)
    check_real(atol, "atol", 0.0, 1.0)
    values, event, accepted, rejected, status = _dopri5(*arrays, m0, 0.0, times, float(rtol), float(atol), math.nan if target is None else float(target), bool(stop_at_event), int(max_steps))
    if status == 2:
        raise RuntimeError(f"dopri5 took more than {max_steps} steps (rtol={rtol}, atol={atol})")
    return Solution(times, values, float(event), int(accepted), int(rejected), method)
