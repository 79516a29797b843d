"""numba dispatch to the families' fast paths. Called with a compile-time constant ``code`` (inside the
specialised kernels of :mod:`popgrad.numerics.compiled`), each switch folds to one branch."""

from __future__ import annotations

import math

from numba import njit

from ..programs import program_eval
from . import erf, leaky_relu, polynomial, step
from .base import CODE_ERF, CODE_LEAKY_RELU, CODE_POLYNOMIAL, CODE_SIGMOID, CODE_STEP, CODE_TANH, KERNEL_ERF, KERNEL_LEAKY_RELU, KERNEL_STEP
from .numeric import sigmoid, tanh_derivative

__all__ = ["activation_value", "activation_derivative", "closed_kernel"]


@njit(cache=True, inline="always")
def activation_value(code, parameters, ops, args, stack, z):
    """``sigma(z)`` through the fast path ``code``."""
    if code == CODE_LEAKY_RELU:
        return leaky_relu.value(parameters[0], z)
    if code == CODE_STEP:
        return step.value(z)
    if code == CODE_POLYNOMIAL:
        return polynomial.value(parameters, z)
    if code == CODE_TANH:
        return math.tanh(z)
    if code == CODE_ERF:
        return erf.value(z)
    if code == CODE_SIGMOID:
        return sigmoid(z)
    return program_eval(ops, args, stack, z)


@njit(cache=True, inline="always")
def activation_derivative(code, parameters, d_ops, d_args, stack, z):
    """``sigma'(z)`` pointwise (0 where sigma jumps: Dirac parts carry no per-sample gradient)."""
    if code == CODE_LEAKY_RELU:
        return leaky_relu.derivative(parameters[0], z)
    if code == CODE_STEP:
        return 0.0
    if code == CODE_POLYNOMIAL:
        return polynomial.derivative(parameters, z)
    if code == CODE_TANH:
        return tanh_derivative(z)
    if code == CODE_ERF:
        return erf.derivative(z)
    if code == CODE_SIGMOID:
        s = sigmoid(z)
        return s * (1.0 - s)
    return program_eval(d_ops, d_args, stack, z)


@njit(cache=True)
def closed_kernel(code, parameter, derivative, s1, s2, rho, series_a, series_b):
    """One kernel value: a family's closed form, or the Hermite series ``sum_p a_p b_p rho^p`` (the
    coefficients of sigma, or of sigma' when ``derivative``, at scales s1, s2)."""
    if code == KERNEL_LEAKY_RELU:
        return leaky_relu.kernel(parameter, derivative, s1, s2, rho)
    if code == KERNEL_STEP:
        return step.kernel(derivative, s1, s2, rho)
    if code == KERNEL_ERF:
        return erf.kernel(derivative, s1, s2, rho)
    value = 0.0
    for p in range(series_a.shape[0] - 1, -1, -1):
        value = value * rho + series_a[p] * series_b[p]
    return value
