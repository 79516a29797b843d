"""Polynomial activations (He_p, h_p, poly(...), polynomial expressions): finite Hermite expansions.

``mu_p(P; r) = sum_n a_n r^n E[g^n He_p(g)] / sqrt(p!)`` with ``E[g^n He_p(g)] = n! / (((n-p)/2)! 2^((n-p)/2))``
for n ≥ p of the same parity. Kernels are the finite series (exact), so no closed kernel is registered.
"""

from __future__ import annotations

from numba import njit

from ..._lazy import LazyModule
from .base import CODE_POLYNOMIAL, Family

sympy = LazyModule("sympy")  # the exact side, imported on use: the kernels' fast paths need none of it

__all__ = ["FAMILY", "gaussian_moment_polynomial"]


def gaussian_moment_polynomial(coefficients: list, p: int, r: sympy.Expr) -> sympy.Expr:
    """E[P(r g) He_p(g)] / sqrt(p!) for P = sum a_n z^n."""
    total = sympy.Integer(0)
    for n, a in enumerate(coefficients):
        if a == 0 or n < p or (n - p) % 2:
            continue
        half = (n - p) // 2
        total += a * r**n * sympy.factorial(n) / (sympy.factorial(half) * 2**half)
    return total / sympy.sqrt(sympy.factorial(p))


def _coefficients(sigma, order: int, r: sympy.Expr) -> tuple:
    from ..expressions import Z

    coefficients = list(reversed(sympy.Poly(sigma.expression, Z).all_coeffs()))
    return tuple(gaussian_moment_polynomial(coefficients, p, r) for p in range(order + 1))


FAMILY = Family("polynomial", _coefficients, None, lambda sigma: CODE_POLYNOMIAL, parameters=lambda sigma: tuple(sigma.polynomial_coefficients))


@njit(cache=True, inline="always")
def value(coefficients, z):
    total = 0.0
    for n in range(coefficients.shape[0] - 1, -1, -1):
        total = total * z + coefficients[n]
    return total


@njit(cache=True, inline="always")
def derivative(coefficients, z):
    total = 0.0
    for n in range(coefficients.shape[0] - 1, 0, -1):
        total = total * z + n * coefficients[n]
    return total
