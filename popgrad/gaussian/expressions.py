"""Safe parsing of activation expressions, and the one table of unary functions.

User strings are never given to ``eval`` or ``sympify``. :func:`parse_expression` walks Python's
``ast`` of the string and admits only numbers, the variable ``z``, the constants ``pi`` and ``e``,
the arithmetic operators and a whitelist of functions; the sympy expression is built node by node.

:data:`UNARY_FUNCTIONS` (:mod:`.unary`) holds one row per elementary function — its sympy class, numpy and
mpmath evaluators — in opcode order; the stack programs of :mod:`popgrad.gaussian.programs` (and their numba
evaluator) are driven by it. :data:`MACROS` are names the parser expands (relu, sigmoid, softplus, sqrt).
"""

from __future__ import annotations

import ast

import sympy

from .._validation import InvalidArgument
from .unary import UNARY_FUNCTIONS, UnaryFunction

__all__ = ["Z", "ExpressionError", "parse_expression", "UnaryFunction", "UNARY_FUNCTIONS", "MACROS", "ALLOWED_FUNCTIONS"]

#: The activation variable; real so that ``Abs`` differentiates to ``sign``.
Z = sympy.Symbol("z", real=True)

MAX_LENGTH = 400
MAX_DEPTH = 40
MAX_EXPONENT = 64
MAX_CONSTANT = 1e6


class ExpressionError(InvalidArgument):
    """An activation expression that is not in the admitted language."""


#: names the parser expands into table functions
MACROS = {
    "sqrt": sympy.sqrt,
    "relu": lambda x: (x + sympy.Abs(x)) / 2,
    "sigmoid": lambda x: 1 / (1 + sympy.exp(-x)),
    "softplus": lambda x: sympy.log(1 + sympy.exp(x)),
}

#: every function name a user may write
ALLOWED_FUNCTIONS = {name: row.sympy for name, row in UNARY_FUNCTIONS.items() if row.parseable} | MACROS
_CONSTANTS = {"pi": sympy.pi, "e": sympy.E}
_BINARY = {ast.Add: sympy.Add, ast.Sub: lambda a, b: a - b, ast.Mult: sympy.Mul, ast.Div: lambda a, b: a / b}


def parse_expression(text: str) -> sympy.Expr:
    """Parse an activation expression in ``z`` through a whitelist.

    Parameters
    ----------
    text : str
        For example ``"z**3 - 3*z"`` or ``"tanh(2*z) + 0.1*z"``. Admitted: numbers, ``z``, ``pi``,
        ``e``, ``+ - * / **``, unary minus and the functions in :data:`ALLOWED_FUNCTIONS`.

    Returns
    -------
    sympy.Expr
        The expression in the real symbol :data:`Z`.

    Raises
    ------
    ExpressionError
        With a message naming what was refused (attribute access, imports, dunder names, unknown
        functions, other free symbols, huge exponents, ...).

    Examples
    --------
    >>> parse_expression("z**2 - 1")
    z**2 - 1
    >>> parse_expression("__import__('os')")
    Traceback (most recent call last):
    ...
    popgrad.gaussian.expressions.ExpressionError: expression: function '__import__' is not allowed (use z, pi, e and the functions exp, log, sin, cos, tanh, sinh, cosh, atan, asinh, erf, erfc, abs, sign, heaviside, sqrt, relu, sigmoid, softplus)
    """
    if not isinstance(text, str):
        raise ExpressionError(f"expression: expected a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression: longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise ExpressionError("expression: empty")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"expression: not a valid formula ({exc.msg})") from None
    expr = _build(tree.body, 0)
    expr = sympy.sympify(expr)
    if not expr.free_symbols <= {Z}:
        raise ExpressionError("expression: only the variable z is allowed")
    if expr.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo) or expr.has(sympy.I):
        raise ExpressionError("expression: not a finite real function of z")
    return expr


def _allowed_names() -> str:
    return "use z, pi, e and the functions " + ", ".join(ALLOWED_FUNCTIONS)


def _build(node: ast.AST, depth: int):
    if depth > MAX_DEPTH:
        raise ExpressionError(f"expression: nested deeper than {MAX_DEPTH}")
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExpressionError(f"expression: constant {value!r} is not a real number")
        if not abs(value) <= MAX_CONSTANT:  # also nan, and ints beyond float64 or int64 (no np.isfinite)
            raise ExpressionError(f"expression: constant {value!r} is outside [-{MAX_CONSTANT:g}, {MAX_CONSTANT:g}]")
        return sympy.Integer(value) if isinstance(value, int) else sympy.nsimplify(value, rational=True)
    if isinstance(node, ast.Name):
        if node.id == "z":
            return Z
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ExpressionError(f"expression: name {node.id!r} is not allowed ({_allowed_names()})")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _build(node.operand, depth + 1)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Pow):
            base = _build(node.left, depth + 1)
            exponent = _build(node.right, depth + 1)
            if exponent.is_number and abs(float(exponent)) > MAX_EXPONENT:
                raise ExpressionError(f"expression: exponent {exponent} is outside [-{MAX_EXPONENT}, {MAX_EXPONENT}]")
            if base.is_number and exponent.is_number and base != 0:
                # sympy evaluates numeric powers eagerly: refuse before a nest of powers explodes
                if abs(float(exponent)) * abs(float(sympy.log(abs(base), 10))) > 300:
                    raise ExpressionError("expression: a constant power exceeds 1e300")
            return sympy.Pow(base, exponent)
        operator = _BINARY.get(type(node.op))
        if operator is None:
            hint = " (use ** for powers)" if isinstance(node.op, ast.BitXor) else ""
            raise ExpressionError(f"expression: operator {type(node.op).__name__} is not allowed{hint}")
        return operator(_build(node.left, depth + 1), _build(node.right, depth + 1))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise ExpressionError("expression: only plain function calls like tanh(z) are allowed")
        function = ALLOWED_FUNCTIONS.get(node.func.id)
        if function is None:
            raise ExpressionError(f"expression: function {node.func.id!r} is not allowed ({_allowed_names()})")
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            raise ExpressionError(f"expression: {node.func.id} takes exactly one argument")
        return function(_build(node.args[0], depth + 1))
    if isinstance(node, ast.Attribute):
        raise ExpressionError("expression: attribute access is not allowed")
    raise ExpressionError(f"expression: {type(node).__name__} is not allowed ({_allowed_names()})")
