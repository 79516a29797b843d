"""The leaky ReLU family ``sigma(z) = a z + (1 - a) relu(z)``: relu (a = 0), abs (a = -1), leaky_relu(a).

Homogeneous of degree one, so ``mu_p(sigma; r) = r mu_p(sigma; 1)``; Stein twice gives
``mu_p(relu) = He_{p-2}(0) / sqrt(2 pi p!)`` for p ≥ 2. Kernels (arc-cosine):
``K = s1 s2 (a rho + (1 - a)^2 kappa(rho))``, ``kappa(rho) = (sqrt(1 - rho^2) + (pi - arccos rho) rho) / (2 pi)``,
``K' = a + (1 - a)^2 (pi - arccos rho) / (2 pi)`` (K' = 2 arcsin(rho) / pi for abs).
"""

from __future__ import annotations

import math

from numba import njit

from ..._lazy import LazyModule
from .base import CODE_LEAKY_RELU, KERNEL_LEAKY_RELU, Family, hermite_at_zero

sympy = LazyModule("sympy")  # the exact side, imported on use: the kernels' fast paths need none of it

__all__ = ["FAMILIES", "relu_unit"]


def relu_unit(p: int) -> sympy.Expr:
    """mu_p(relu; 1): 1/sqrt(2 pi), 1/2, then He_{p-2}(0)/sqrt(2 pi p!) (Stein twice)."""
    if p == 0:
        return 1 / sympy.sqrt(2 * sympy.pi)
    if p == 1:
        return sympy.Rational(1, 2)
    return hermite_at_zero(p - 2) / sympy.sqrt(2 * sympy.pi * sympy.factorial(p))


def _slope(sigma) -> sympy.Expr:
    return sympy.nsimplify(sigma.slope, rational=True)


def _coefficients(sigma, order: int, r: sympy.Expr) -> tuple:
    a = _slope(sigma)
    return tuple(r * ((1 - a) * relu_unit(p) + (a if p == 1 else 0)) for p in range(order + 1))


def _kernel(sigma, rho, s1, s2, derivative: bool):
    a, pi = _slope(sigma), sympy.pi
    if derivative:
        return a + (1 - a) ** 2 * (pi - sympy.acos(rho)) / (2 * pi)
    return s1 * s2 * (a * rho + (1 - a) ** 2 * (sympy.sqrt(1 - rho**2) + (pi - sympy.acos(rho)) * rho) / (2 * pi))


def _family(name: str) -> Family:
    return Family(name, _coefficients, _kernel, lambda sigma: CODE_LEAKY_RELU, KERNEL_LEAKY_RELU, lambda sigma: (sigma.slope,))


FAMILIES = (_family("relu"), _family("leaky_relu"), _family("abs"))


@njit(cache=True, inline="always")
def value(slope, z):
    return z if z > 0.0 else slope * z


@njit(cache=True, inline="always")
def derivative(slope, z):
    return 1.0 if z > 0.0 else (slope if z < 0.0 else 0.5 * (1.0 + slope))


@njit(cache=True, inline="always")
def _clip(rho):
    return min(1.0, max(-1.0, rho))


@njit(cache=True, inline="always")
def arccos_kernel(rho):
    """``kappa(rho) = E[relu(X) relu(Y)]`` for unit-variance (X, Y) with correlation rho."""
    rho = _clip(rho)
    return (math.sqrt(1.0 - rho * rho) + (math.pi - math.acos(rho)) * rho) / (2.0 * math.pi)


@njit(cache=True, inline="always")
def step_kernel(rho):
    """``E[1(X > 0) 1(Y > 0)] = (pi - arccos rho) / (2 pi)``."""
    return (math.pi - math.acos(_clip(rho))) / (2.0 * math.pi)


@njit(cache=True, inline="always")
def kernel(slope, derivative, s1, s2, rho):
    if derivative:
        return slope + (1.0 - slope) * (1.0 - slope) * step_kernel(rho)
    return s1 * s2 * (slope * _clip(rho) + (1.0 - slope) * (1.0 - slope) * arccos_kernel(rho))
