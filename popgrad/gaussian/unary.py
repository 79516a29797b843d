"""The one table of unary functions: one row per elementary function — its sympy class, numpy and mpmath
evaluators — in opcode order. The stack programs (:mod:`.programs`) and their numba evaluator are driven by
it, the expression parser (:mod:`.expressions`) admits its parseable rows. sympy and mpmath are named here,
not imported: a kernel that only evaluates programs loads neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from .._lazy import LazyModule

__all__ = ["UnaryFunction", "UNARY_FUNCTIONS"]

sympy = LazyModule("sympy")
mpmath = LazyModule("mpmath")


@dataclass(frozen=True)
class UnaryFunction:
    """One elementary function: its sympy class and its numpy and mpmath evaluators. ``parseable`` is
    False for functions that only arise from differentiation (``DiracDelta``).

    Attributes
    ----------
    sympy_name : str
        The sympy function class's name (``sympy``: the class, imported on use).
    numpy : callable
        Vectorised float64 evaluator.
    mpmath_evaluator : str or callable
        Arbitrary-precision evaluator: an mpmath function's name or a function (``mpmath``: the callable).
    parseable : bool, default True
        Admitted by the expression parser.
    """

    sympy_name: str
    numpy: object
    mpmath_evaluator: object
    parseable: bool = True

    @property
    def sympy(self):
        return getattr(sympy, self.sympy_name)

    @property
    def mpmath(self):
        return getattr(mpmath, self.mpmath_evaluator) if isinstance(self.mpmath_evaluator, str) else self.mpmath_evaluator


def _mp_heaviside(x):
    return mpmath.mpf(1) if x > 0 else (mpmath.mpf(0) if x < 0 else mpmath.mpf(1) / 2)


#: opcode of row i is ``programs.FIRST_UNARY_OPCODE + i``: the order is part of the program format
UNARY_FUNCTIONS = {
    "exp": UnaryFunction("exp", np.exp, "exp"),
    "log": UnaryFunction("log", np.log, "log"),
    "sin": UnaryFunction("sin", np.sin, "sin"),
    "cos": UnaryFunction("cos", np.cos, "cos"),
    "tanh": UnaryFunction("tanh", np.tanh, "tanh"),
    "sinh": UnaryFunction("sinh", np.sinh, "sinh"),
    "cosh": UnaryFunction("cosh", np.cosh, "cosh"),
    "atan": UnaryFunction("atan", np.arctan, "atan"),
    "asinh": UnaryFunction("asinh", np.arcsinh, "asinh"),
    "erf": UnaryFunction("erf", special.erf, "erf"),
    "erfc": UnaryFunction("erfc", special.erfc, "erfc"),
    "abs": UnaryFunction("Abs", np.abs, abs),
    "sign": UnaryFunction("sign", np.sign, "sign"),
    "heaviside": UnaryFunction("Heaviside", lambda x: np.heaviside(x, 0.5), _mp_heaviside),
    "delta": UnaryFunction("DiracDelta", np.zeros_like, lambda x: mpmath.mpf(0), parseable=False),
}

