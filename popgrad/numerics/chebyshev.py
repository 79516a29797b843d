"""Adaptive piecewise Chebyshev interpolation with numba evaluation and an error estimate.

Used to make ODE right-hand sides cheap: h(m) costs O(k^2) kernel calls directly, the interpolant a
binary search and a Clenshaw recurrence. Panels are bisected until the trailing Chebyshev coefficients
fall below the tolerance (the chebfun criterion) or a panel is narrower than ``min_width``: where the
function's own float64 evaluation is noisy (relu's arccos kernel within ~1e-3 of rho = 1, where
rounding of m is amplified by 1/sqrt(1 - rho)) no tolerance is reachable, and the panel's trailing
coefficients then report that noise floor honestly as the estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import fft

from .._validation import InvalidArgument

__all__ = ["PiecewiseChebyshev", "chebyshev_interpolant", "chebyshev_evaluate", "chebyshev_evaluate_scalar", "chebyshev_coefficients", "to_endpoint_variable", "evaluate_packed"]


@njit(cache=True)
def to_endpoint_variable(m):
    """t with m = t (2 - |t|): sqrt(1 - |m|) = 1 - |t| is smooth in t."""
    m = min(1.0, max(-1.0, m))
    root = 1.0 - math.sqrt(1.0 - abs(m))
    return root if m >= 0.0 else -root


@njit(cache=True)
def chebyshev_evaluate_scalar(breaks, coefficients, endpoint, x):
    """Value at x of the piecewise Chebyshev series (x clipped to [breaks[0], breaks[-1]]); with
    ``endpoint`` the series is in t = to_endpoint_variable(x) on [-1, 1]."""
    if endpoint:
        x = to_endpoint_variable(x)
    n = breaks.shape[0] - 1
    if x <= breaks[0]:
        panel = 0
        x = breaks[0]
    elif x >= breaks[n]:
        panel = n - 1
        x = breaks[n]
    else:
        low, high = 0, n
        while high - low > 1:
            middle = (low + high) // 2
            if breaks[middle] <= x:
                low = middle
            else:
                high = middle
        panel = low
    a, b = breaks[panel], breaks[panel + 1]
    t = (2.0 * x - a - b) / (b - a)
    b1, b2 = 0.0, 0.0
    row = coefficients[panel]
    for j in range(row.shape[0] - 1, 0, -1):
        b1, b2 = 2.0 * t * b1 - b2 + row[j], b1
    return t * b1 - b2 + row[0]


@njit(cache=True)
def chebyshev_evaluate(breaks, coefficients, endpoint, x):
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = chebyshev_evaluate_scalar(breaks, coefficients, endpoint, x[i])
    return out


@njit(cache=True)
def evaluate_packed(packed, offset, x):
    """Value at x of the interpolant packed at ``packed[offset:]`` by :meth:`PiecewiseChebyshev.pack`."""
    panels, width = int(packed[offset]), int(packed[offset + 1])
    endpoint = packed[offset + 2] != 0.0
    start = offset + 3
    breaks = packed[start : start + panels + 1]
    coefficients = packed[start + panels + 1 : start + panels + 1 + panels * width].reshape((panels, width))
    return chebyshev_evaluate_scalar(breaks, coefficients, endpoint, x)


def chebyshev_coefficients(values: np.ndarray) -> np.ndarray:
    """Chebyshev coefficients from values at the n+1 points cos(j pi / n), j = 0..n."""
    n = values.shape[0] - 1
    c = fft.dct(values[::-1], type=1) / n
    c[0] /= 2
    c[-1] /= 2
    return c


@dataclass(frozen=True)
class PiecewiseChebyshev:
    """A piecewise Chebyshev interpolant on [breaks[0], breaks[-1]].

    ``estimated_error`` is the largest trailing-coefficient sum over the panels (an estimate of the
    sup-norm error); ``measured_error`` the largest difference to the function at random points not used
    in the fit (set by :func:`chebyshev_interpolant` when it verifies).
    """

    breaks: np.ndarray
    coefficients: np.ndarray
    estimated_error: float
    measured_error: float = float("nan")
    endpoint: bool = False

    def __call__(self, x):
        x = np.asarray(x, dtype=np.float64)
        return chebyshev_evaluate(self.breaks, self.coefficients, self.endpoint, x.ravel()).reshape(x.shape)

    @property
    def panels(self) -> int:
        return self.breaks.shape[0] - 1

    def pack(self) -> np.ndarray:
        """One float64 vector ``[panels, width, endpoint, breaks..., coefficients...]`` for numba right-hand
        sides (:func:`evaluate_packed`)."""
        header = [self.panels, self.coefficients.shape[1], float(self.endpoint)]
        return np.concatenate([header, self.breaks, np.ascontiguousarray(self.coefficients).ravel()])


def chebyshev_interpolant(function, a: float = -1.0, b: float = 1.0, degree: int = 32, tolerance: float = 1e-13, min_width: float = 1e-5, verify_points: int = 2000, seed: int = 0, endpoint: bool = False) -> PiecewiseChebyshev:
    """Fit ``function`` (vectorised, float64) on [a, b] to relative ``tolerance``.

    With ``endpoint`` (only on [-1, 1]) the fit is in t, m = t (2 - |t|), which removes square-root
    singularities at m = ±1 such as relu's arccos kernel at rho = 1.

    Examples
    --------
    >>> f = chebyshev_interpolant(np.exp)
    >>> bool(f.measured_error < 1e-14), f.panels
    (True, 1)
    >>> g = chebyshev_interpolant(lambda x: np.sqrt(1 - x), endpoint=True)  # endpoint singularity
    >>> bool(g.measured_error < 1e-13), g.panels
    (True, 2)
    """
    target = function
    if endpoint:
        if (a, b) != (-1.0, 1.0):
            raise InvalidArgument("endpoint=True needs the interval [-1, 1]")

        def function(t):
            return target(t * (2.0 - np.abs(t)))

    nodes = np.cos(np.pi * np.arange(degree + 1) / degree)[::-1]
    scale = max(float(np.max(np.abs(function(np.linspace(a, b, 257))))), 1e-300)
    accepted = []
    pending = [(0.0, b), (a, 0.0)] if endpoint else [(a, b)]
    while pending:
        left, right = pending.pop()
        x = 0.5 * (left + right) + 0.5 * (right - left) * nodes
        c = chebyshev_coefficients(function(x))
        tail = float(np.sum(np.abs(c[-3:])))
        if tail <= tolerance * scale or right - left <= min_width:
            accepted.append((left, right, c, tail))
        else:
            middle = 0.5 * (left + right)
            pending += [(middle, right), (left, middle)]
    accepted.sort(key=lambda panel: panel[0])
    breaks = np.array([p[0] for p in accepted] + [accepted[-1][1]])
    coefficients = np.array([p[2] for p in accepted])
    interpolant = PiecewiseChebyshev(breaks, coefficients, max(p[3] for p in accepted), endpoint=endpoint)
    if verify_points:
        x = np.random.default_rng(seed).uniform(a, b, verify_points)
        x = np.concatenate([x, [a, b], a + (b - a) * np.logspace(-12, -1, 24), b - (b - a) * np.logspace(-12, -1, 24)])
        measured = float(np.max(np.abs(interpolant(x) - target(x))))
        interpolant = PiecewiseChebyshev(breaks, coefficients, interpolant.estimated_error, measured, endpoint)
    return interpolant
