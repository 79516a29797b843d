"""Stein-differentiable activations: some derivative ``sigma^(p0)(z) = Q(z) exp(-c z^2)`` (gelu, erf).

Then ``mu_p(sigma; r) = r^p E[sigma^(p)(r g)] / sqrt(p!)`` for p ≥ p0, where ``sigma^(p) = Q_p exp(-c z^2)``
with ``Q_{p+1} = Q_p' - 2 c z Q_p``, and ``E[Q(r g) exp(-c r^2 g^2)] = sum_n q_n r^n (n-1)!! s^(-(n+1)/2)``
over even n, ``s = 1 + 2 c r^2``. Lower orders come from the member's own closed forms.
"""

from __future__ import annotations

from dataclasses import dataclass, field


from ..._lazy import LazyModule
from .base import CODE_PROGRAM, Family, double_factorial

sympy = LazyModule("sympy")  # the exact side, imported on use: the kernels' fast paths need none of it

__all__ = ["SteinForm", "FAMILY", "stein_coefficients"]


@dataclass(frozen=True)
class SteinForm:
    """``sigma^(p0)(z) = Q(z) exp(-c z^2)``; ``low_orders`` maps p < p0 to a function of the scale r giving
    ``mu_p(sigma; r)`` exactly."""

    p0: int
    polynomial: sympy.Expr
    c: sympy.Expr
    low_orders: dict = field(default_factory=dict, compare=False, hash=False)


def _derivatives(stein: SteinForm, order: int) -> list:
    from ..expressions import Z

    polys = [sympy.Poly(stein.polynomial, Z)]
    two_c_z = sympy.Poly(2 * stein.c * Z, Z)
    for _ in range(stein.p0, order):
        q = polys[-1]
        polys.append(q.diff(Z) - two_c_z * q)
    return polys


def _gaussian_expectation(poly: sympy.Poly, c: sympy.Expr, r: sympy.Expr) -> sympy.Expr:
    s = 1 + 2 * c * r**2
    total = sympy.Integer(0)
    for (n,), q in poly.terms():
        if n % 2 == 0:
            total += q * r**n * double_factorial(n - 1) * s ** (-sympy.Rational(n + 1, 2))
    return total


def stein_coefficients(sigma, order: int, r: sympy.Expr) -> tuple:
    stein = sigma.stein
    derivatives = _derivatives(stein, order)
    values = []
    for p in range(order + 1):
        if p < stein.p0:
            values.append(stein.low_orders[p](r))
        else:
            moment = _gaussian_expectation(derivatives[p - stein.p0], stein.c, r)
            values.append(r**p * moment / sympy.sqrt(sympy.factorial(p)))
    return tuple(values)


FAMILY = Family("stein", stein_coefficients, None, lambda sigma: CODE_PROGRAM)
