"""What a closed-form family of activations provides, and the numba codes of the fast paths.

A :class:`Family` owns, for its members: the exact Hermite coefficients ``mu_p(sigma; r)`` (sympy), the
closed-form two-scale kernels ``K(s1, s2, rho) = E[sigma(s1 X) sigma(s2 Y)]`` and ``K'`` (with sigma') as
sympy expressions where they exist, and which numba fast path evaluates sigma, sigma' and the kernels
(:mod:`popgrad.gaussian.families.fast`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


from ..._lazy import LazyModule
from ..._validation import InvalidArgument

sympy = LazyModule("sympy")  # the exact side, imported on use: the kernels' fast paths need none of it

__all__ = ["Family", "NoClosedForm", "hermite_at_zero", "double_factorial"]

# numba codes of the activation fast paths (compile-time constants of the specialised kernels)
CODE_PROGRAM, CODE_LEAKY_RELU, CODE_STEP, CODE_POLYNOMIAL, CODE_TANH, CODE_ERF, CODE_SIGMOID = 0, 1, 2, 3, 4, 5, 6
# numba codes of the closed kernels (CODE_SERIES: the Hermite series)
KERNEL_SERIES, KERNEL_LEAKY_RELU, KERNEL_STEP, KERNEL_ERF = 0, 1, 2, 3


class NoClosedForm(InvalidArgument):
    """The activation has no closed-form Hermite coefficients in the catalogue."""


@dataclass(frozen=True)
class Family:
    """A family of activations with what is known about them in closed form.

    ``coefficients(sigma, order, r)`` gives the exact ``mu_p(sigma; r)``, p ≤ order (None: no closed form).
    ``kernel(sigma, rho, s1, s2, derivative)`` gives the sympy kernel (None: use the Hermite series).
    ``fast_code(sigma)`` and ``kernel_code`` select the numba paths; ``parameters(sigma)`` are their
    float parameters (slope, polynomial coefficients).
    """

    name: str
    coefficients: Callable | None
    kernel: Callable | None
    fast_code: Callable
    kernel_code: int = KERNEL_SERIES
    parameters: Callable = lambda sigma: (0.0,)

    @property
    def exact(self) -> bool:
        return self.coefficients is not None


def double_factorial(n: int) -> sympy.Integer:
    return sympy.Integer(1) if n <= 0 else sympy.factorial2(n)


def hermite_at_zero(n: int) -> sympy.Integer:
    """He_n(0): 0 for odd n, (-1)^(n/2) (n-1)!! for even n."""
    return sympy.Integer(0) if n % 2 else (-1) ** (n // 2) * double_factorial(n - 1)
