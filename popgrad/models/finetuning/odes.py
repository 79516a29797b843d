"""The overlap ODEs of the predictions, ``dm/dt = a h(m) (1 - m^2) - b (s V(m) - band |s| W(m))``.

Every prediction of popgrad is of this form (MATH.md §4), with s = m or s = 1: gradient flow (b = 0), and
the finite-step SGD ODEs whose second term is the normalisation noise; ``band = ±1`` with W the
uncertainty of V gives the comparison-principle bounds of the band. h, V and W are piecewise Chebyshev
interpolants, so a right-hand side costs binary searches and Clenshaw sums. The right-hand side acts on
every component of the state, so one solve integrates many initial overlaps at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..._validation import InvalidArgument
from ...dynamics.solve import ODE
from ...dynamics.solvers.base import right_hand_side
from ...numerics.chebyshev import PiecewiseChebyshev, evaluate_packed

__all__ = ["DriftODE"]

_HEADER = 7  # a, b, band, times_m, offsets of h, V, W


@right_hand_side
def drift_rhs(t, y, parameters, out):
    a, b, band, times_m = parameters[0], parameters[1], parameters[2], parameters[3] != 0.0
    h_at, v_at, w_at = int(parameters[4]), int(parameters[5]), int(parameters[6])
    for i in range(y.shape[0]):
        m = y[i]
        value = 0.0
        if a != 0.0:
            value += a * evaluate_packed(parameters, h_at, m) * (1.0 - m * m)
        if b != 0.0:
            factor = m if times_m else 1.0
            noise = factor * evaluate_packed(parameters, v_at, m)
            if band != 0.0:
                noise -= band * abs(factor) * evaluate_packed(parameters, w_at, m)
            value -= b * noise
        out[i] = value


@dataclass(frozen=True)
class DriftODE:
    """``dm/dt = a h(m) (1 - m^2) - b (s V(m) - band |s| W(m))`` with interpolants h, V, W; s = m when
    ``times_m`` (the second-order noise term m N(m)), else 1 (a noise term given as a whole).

    ``V`` and ``W`` may be None when ``b == 0``. All interpolants are fitted on [-1, 1] with
    ``endpoint=True``. Solve it with :func:`popgrad.solve`.

    Parameters
    ----------
    h : PiecewiseChebyshev
        The drift h(m) (endpoint variable).
    a : float
        Factor of the drift term (the step size eta for steps as time).
    V : PiecewiseChebyshev or None
        The noise term (needed when ``b`` is not 0).
    b : float, default 0
        Its weight (eta^2/2 for the second-order term, 1 for the exact normalisation term).
    W : PiecewiseChebyshev or None
        Two standard errors of the noise term, for the band.
    band : float in [-1, 1], default 0
        Side of the band: the noise term is moved by ``band`` times W.
    times_m : bool, default True
        Multiply the noise term by m.

    Examples
    --------
    >>> from popgrad.numerics.chebyshev import chebyshev_interpolant
    >>> from popgrad.dynamics.solve import solve
    >>> ode = DriftODE(chebyshev_interpolant(lambda m: 1.0 + 0 * m, endpoint=True), a=1.0)  # dm/dt = 1 - m^2
    >>> solution = solve(ode, 0.0, [1.0, 2.0], target=0.5)
    >>> np.round(solution.values, 10).tolist(), round(solution.event_time, 10)  # tanh(t), atanh(0.5)
    ([0.761594156, 0.9640275801], 0.5493061443)
    """

    h: PiecewiseChebyshev
    a: float
    V: PiecewiseChebyshev | None = None
    b: float = 0.0
    W: PiecewiseChebyshev | None = None
    band: float = 0.0
    times_m: bool = True

    def as_ode(self) -> ODE:
        zero = PiecewiseChebyshev(np.array([-1.0, 1.0]), np.zeros((1, 1)), 0.0, endpoint=True)
        parts = []
        for name, part in (("h", self.h), ("V", self.V), ("W", self.W)):
            if part is not None and not part.endpoint:
                raise InvalidArgument(f"DriftODE needs {name} fitted with endpoint=True (chebyshev_interpolant(..., endpoint=True))")
            parts.append((part or zero).pack())
        offsets = np.cumsum([_HEADER] + [len(p) for p in parts[:-1]])
        header = [float(self.a), float(self.b), float(self.band), float(self.times_m)] + offsets.tolist()
        return ODE(drift_rhs, np.concatenate([header] + parts))

    def __call__(self, m) -> np.ndarray:
        """The right-hand side at m (any shape)."""
        m = np.asarray(m, dtype=np.float64)
        system = self.as_ode()
        out = np.empty(m.size)
        system.rhs(0.0, np.ascontiguousarray(m.ravel()), system.parameters, out)
        return out.reshape(m.shape)
