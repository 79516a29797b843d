"""The Heaviside step (1/2 at 0). ``mu_0 = 1/2``, ``mu_p = He_{p-1}(0) / sqrt(2 pi p!)`` (Stein once,
sigma' = delta), independent of the scale. ``K = (pi - arccos rho) / (2 pi)``; sigma' is a Dirac mass, and
``K'(s1, s2, rho) = 1 / (2 pi s1 s2 sqrt(1 - rho^2))`` (infinite at rho = ±1)."""

from __future__ import annotations

import math

from numba import njit

from ..._lazy import LazyModule
from .base import CODE_STEP, KERNEL_STEP, Family, hermite_at_zero
from .leaky_relu import step_kernel

sympy = LazyModule("sympy")  # the exact side, imported on use: the kernels' fast paths need none of it

__all__ = ["FAMILY"]


def _coefficients(sigma, order: int, r: sympy.Expr) -> tuple:
    first = (sympy.Rational(1, 2),)
    return first + tuple(hermite_at_zero(p - 1) / sympy.sqrt(2 * sympy.pi * sympy.factorial(p)) for p in range(1, order + 1))


def _kernel(sigma, rho, s1, s2, derivative: bool):
    if derivative:
        return 1 / (2 * sympy.pi * s1 * s2 * sympy.sqrt(1 - rho**2))
    return (sympy.pi - sympy.acos(rho)) / (2 * sympy.pi)


FAMILY = Family("step", _coefficients, _kernel, lambda sigma: CODE_STEP, KERNEL_STEP)


@njit(cache=True, inline="always")
def value(z):
    return 1.0 if z > 0.0 else (0.0 if z < 0.0 else 0.5)


@njit(cache=True, inline="always")
def kernel(derivative, s1, s2, rho):
    if derivative:
        c = min(1.0, max(-1.0, rho))
        return 1.0 / (2.0 * math.pi * s1 * s2 * math.sqrt(1.0 - c * c)) if abs(c) < 1.0 else math.inf
    return step_kernel(rho)
