"""erf: a Stein activation (erf' = 2 exp(-z^2) / sqrt(pi)) with arcsine kernels:
``K = (2/pi) arcsin(2 s1 s2 rho / sqrt((1 + 2 s1^2)(1 + 2 s2^2)))``,
``K' = (4/pi) / sqrt((1 + 2 s1^2)(1 + 2 s2^2) - 4 s1^2 s2^2 rho^2)``."""

from __future__ import annotations

import math

from numba import njit

from ..._lazy import LazyModule
from .base import CODE_ERF, KERNEL_ERF, Family
from .stein import stein_coefficients

sympy = LazyModule("sympy")  # the exact side, imported on use: the kernels' fast paths need none of it

__all__ = ["FAMILY"]


def _kernel(sigma, rho, s1, s2, derivative: bool):
    a, b = 1 + 2 * s1**2, 1 + 2 * s2**2
    if derivative:
        return 4 / sympy.pi / sympy.sqrt(a * b - 4 * s1**2 * s2**2 * rho**2)
    return 2 / sympy.pi * sympy.asin(2 * s1 * s2 * rho / sympy.sqrt(a * b))


FAMILY = Family("erf", stein_coefficients, _kernel, lambda sigma: CODE_ERF, KERNEL_ERF)


@njit(cache=True, inline="always")
def value(z):
    return math.erf(z)


@njit(cache=True, inline="always")
def derivative(z):
    return 1.1283791670955126 * math.exp(-z * z)


@njit(cache=True, inline="always")
def kernel(derivative, s1, s2, rho):
    a, b = 1.0 + 2.0 * s1 * s1, 1.0 + 2.0 * s2 * s2
    if derivative:
        return 4.0 / math.pi / math.sqrt(a * b - 4.0 * s1 * s1 * s2 * s2 * rho * rho)
    return 2.0 / math.pi * math.asin(2.0 * s1 * s2 * rho / math.sqrt(a * b))
