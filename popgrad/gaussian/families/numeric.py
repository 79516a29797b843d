"""Activations without closed forms (tanh, sigmoid, softplus, silu, custom expressions): Hermite
coefficients by quadrature, kernels by the Hermite series with its tail bound. tanh and sigmoid have
hand-written numba fast paths; everything else runs its stack program."""

from __future__ import annotations

import math

import sympy
from numba import njit

from ..expressions import Z
from .base import CODE_PROGRAM, CODE_SIGMOID, CODE_TANH, Family

__all__ = ["FAMILY"]

_FAST = {sympy.tanh(Z): CODE_TANH, 1 / (1 + sympy.exp(-Z)): CODE_SIGMOID}


def _fast_code(sigma) -> int:
    return _FAST.get(sigma.expression, CODE_PROGRAM)


FAMILY = Family("numeric", None, None, _fast_code)


@njit(cache=True, inline="always")
def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0.0 else math.exp(z) / (1.0 + math.exp(z))


@njit(cache=True, inline="always")
def tanh_derivative(z):
    t = math.tanh(z)
    return 1.0 - t * t
