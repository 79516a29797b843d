"""Activations without closed forms (tanh, sigmoid, softplus, silu, custom expressions): Hermite
coefficients by quadrature, kernels by the Hermite series with its tail bound. tanh and sigmoid have
hand-written numba fast paths; everything else runs its stack program."""

from __future__ import annotations

import math

from numba import njit

from ..._lazy import LazyModule
from .base import CODE_PROGRAM, CODE_SIGMOID, CODE_TANH, Family

sympy = LazyModule("sympy")  # the exact side, imported on use: the kernels' fast paths need none of it

__all__ = ["FAMILY"]

def _fast_code(sigma) -> int:
    from ..expressions import Z

    fast = {sympy.tanh(Z): CODE_TANH, 1 / (1 + sympy.exp(-Z)): CODE_SIGMOID}
    return fast.get(sigma.expression, CODE_PROGRAM)


FAMILY = Family("numeric", None, None, _fast_code)


@njit(cache=True, inline="always")
def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0.0 else math.exp(z) / (1.0 + math.exp(z))


@njit(cache=True, inline="always")
def tanh_derivative(z):
    t = math.tanh(z)
    return 1.0 - t * t
