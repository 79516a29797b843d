"""Safe parsing of activation expressions and their compilation to a small stack program.

User strings are never given to ``eval`` or ``sympify``. :func:`parse_expression` walks Python's
``ast`` of the string and admits only numbers, the variable ``z``, the constants ``pi`` and ``e``,
the arithmetic operators and a whitelist of functions; the sympy expression is built node by node.

A trusted sympy expression (one built here or by the catalogue) is compiled by :func:`compile_program`
into a postfix program of integer opcodes and float constants. One program has three evaluators:
vectorised numpy (:func:`evaluate_numpy`), arbitrary precision mpmath (:func:`evaluate_mpmath`) and
numba (``popgrad._jit.program_eval``), so every backend computes the same function.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import mpmath
import numpy as np
import sympy
from scipy import special

__all__ = [
    "Z",
    "ExpressionError",
    "parse_expression",
    "Program",
    "compile_program",
    "evaluate_numpy",
    "evaluate_mpmath",
    "mpmath_function",
    "ALLOWED_FUNCTIONS",
]

#: The activation variable; real so that ``Abs`` differentiates to ``sign``.
Z = sympy.Symbol("z", real=True)

MAX_LENGTH = 400
MAX_DEPTH = 40
MAX_EXPONENT = 64
MAX_CONSTANT = 1e6


class ExpressionError(ValueError):
    """An activation expression that is not in the admitted language."""


def _relu(x):
    return (x + sympy.Abs(x)) / 2


def _sigmoid(x):
    return 1 / (1 + sympy.exp(-x))


ALLOWED_FUNCTIONS = {
    "exp": sympy.exp,
    "log": sympy.log,
    "sqrt": sympy.sqrt,
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tanh": sympy.tanh,
    "sinh": sympy.sinh,
    "cosh": sympy.cosh,
    "atan": sympy.atan,
    "asinh": sympy.asinh,
    "erf": sympy.erf,
    "erfc": sympy.erfc,
    "abs": sympy.Abs,
    "sign": sympy.sign,
    "heaviside": sympy.Heaviside,
    "relu": _relu,
    "sigmoid": _sigmoid,
    "softplus": lambda x: sympy.log(1 + sympy.exp(x)),
}
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
    popgrad.expressions.ExpressionError: expression: function '__import__' is not allowed (use z, pi, e and the functions exp, log, sqrt, sin, cos, tanh, sinh, cosh, atan, asinh, erf, erfc, abs, sign, heaviside, relu, sigmoid, softplus)
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
        if not np.isfinite(value) or abs(value) > MAX_CONSTANT:
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


# --------------------------------------------------------------------------------------------------
# Stack programs
# --------------------------------------------------------------------------------------------------

OP_Z, OP_CONST, OP_ADD, OP_MUL, OP_POW, OP_INTPOW = 0, 1, 2, 3, 4, 5
_UNARY_OPS = [
    (sympy.exp, "exp"),
    (sympy.log, "log"),
    (sympy.sin, "sin"),
    (sympy.cos, "cos"),
    (sympy.tanh, "tanh"),
    (sympy.sinh, "sinh"),
    (sympy.cosh, "cosh"),
    (sympy.atan, "atan"),
    (sympy.asinh, "asinh"),
    (sympy.erf, "erf"),
    (sympy.erfc, "erfc"),
    (sympy.Abs, "abs"),
    (sympy.sign, "sign"),
    (sympy.Heaviside, "heaviside"),
    (sympy.DiracDelta, "delta"),
]
#: opcode of each unary function, numbered after the structural opcodes
UNARY_OPCODES = {name: 10 + index for index, (_, name) in enumerate(_UNARY_OPS)}
OP_SQRT = 30


@dataclass(frozen=True)
class Program:
    """A postfix program: ``ops[i]`` is an opcode, ``args[i]`` its float argument (constant or exponent).

    ``constants`` keeps each constant as an exact sympy number so that the mpmath evaluator works at
    any precision.
    """

    ops: np.ndarray
    args: np.ndarray
    constants: tuple = ()

    def __len__(self) -> int:
        return len(self.ops)


def compile_program(expr: sympy.Expr) -> Program:
    """Compile a trusted sympy expression in :data:`Z` to a :class:`Program`.

    ``DiracDelta`` compiles to an opcode that evaluates to 0 pointwise (the derivative of a step is 0
    almost everywhere); distributional parts are handled by the kernels, not by pointwise evaluation.

    Examples
    --------
    >>> import numpy as np
    >>> program = compile_program(parse_expression("z**2 + tanh(z)"))
    >>> float(evaluate_numpy(program, np.array([0.5]))[0])
    0.7121171572600098
    """
    ops: list[int] = []
    args: list[float] = []
    constants: list = []

    def emit(op: int, arg: float = 0.0, exact=None) -> None:
        ops.append(op)
        args.append(arg)
        constants.append(exact)

    def walk(node: sympy.Expr) -> None:
        if node == Z:
            emit(OP_Z)
        elif node.is_number:
            value = complex(sympy.N(node, 20))
            if value.imag != 0 or not np.isfinite(value.real):
                raise ExpressionError(f"expression: constant {node} is not a finite real number")
            emit(OP_CONST, value.real, node)
        elif isinstance(node, (sympy.Add, sympy.Mul)):
            walk(node.args[0])
            for term in node.args[1:]:
                walk(term)
                emit(OP_ADD if isinstance(node, sympy.Add) else OP_MUL)
        elif isinstance(node, sympy.Pow):
            base, exponent = node.args
            walk(base)
            if exponent == sympy.Rational(1, 2):
                emit(OP_SQRT)
            elif exponent.is_Integer:
                emit(OP_INTPOW, float(exponent))
            else:
                walk(exponent)
                emit(OP_POW)
        else:
            for function, name in _UNARY_OPS:
                if isinstance(node, function):
                    if len(node.args) != 1:
                        if function is sympy.Heaviside and node.args[1] == sympy.Rational(1, 2):
                            walk(node.args[0])
                            emit(UNARY_OPCODES[name])
                            return
                        raise ExpressionError(f"expression: {node} is not supported pointwise")
                    walk(node.args[0])
                    emit(UNARY_OPCODES[name])
                    return
            raise ExpressionError(f"expression: {type(node).__name__} cannot be evaluated")

    walk(sympy.sympify(expr))
    return Program(np.asarray(ops, dtype=np.int64), np.asarray(args, dtype=np.float64), tuple(constants))


def _heaviside_numpy(x):
    return np.heaviside(x, 0.5)


_NUMPY_UNARY = {
    "exp": np.exp,
    "log": np.log,
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "atan": np.arctan,
    "asinh": np.arcsinh,
    "erf": special.erf,
    "erfc": special.erfc,
    "abs": np.abs,
    "sign": np.sign,
    "heaviside": _heaviside_numpy,
    "delta": np.zeros_like,
}


def _mp_heaviside(x):
    return mpmath.mpf(1) if x > 0 else (mpmath.mpf(0) if x < 0 else mpmath.mpf(1) / 2)


_MPMATH_UNARY = {
    "exp": mpmath.exp,
    "log": mpmath.log,
    "sin": mpmath.sin,
    "cos": mpmath.cos,
    "tanh": mpmath.tanh,
    "sinh": mpmath.sinh,
    "cosh": mpmath.cosh,
    "atan": mpmath.atan,
    "asinh": mpmath.asinh,
    "erf": mpmath.erf,
    "erfc": mpmath.erfc,
    "abs": abs,
    "sign": mpmath.sign,
    "heaviside": _mp_heaviside,
    "delta": lambda x: mpmath.mpf(0),
}
_OPCODE_NAMES = {code: name for name, code in UNARY_OPCODES.items()}


def _run(program: Program, z, unary, constants, sqrt, power):
    stack = []
    for op, arg, constant in zip(program.ops.tolist(), program.args.tolist(), constants):
        if op == OP_Z:
            stack.append(z)
        elif op == OP_CONST:
            stack.append(constant)
        elif op == OP_ADD:
            right = stack.pop()
            stack.append(stack.pop() + right)
        elif op == OP_MUL:
            right = stack.pop()
            stack.append(stack.pop() * right)
        elif op == OP_INTPOW:
            stack.append(power(stack.pop(), int(arg)))
        elif op == OP_POW:
            exponent = stack.pop()
            stack.append(power(stack.pop(), exponent))
        elif op == OP_SQRT:
            stack.append(sqrt(stack.pop()))
        else:
            stack.append(unary[_OPCODE_NAMES[op]](stack.pop()))
    return stack.pop()


def evaluate_numpy(program: Program, z: np.ndarray) -> np.ndarray:
    """Evaluate a program elementwise on a float64 array (overflow to inf is left to the caller)."""
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        result = _run(program, z, _NUMPY_UNARY, program.args.tolist(), np.sqrt, np.power)
    return np.broadcast_to(np.asarray(result, dtype=np.float64), z.shape).copy()


def mpmath_function(program: Program):
    """The program as a function of one mpmath number, at the working precision of ``mpmath.mp``.

    Constants are rounded once, at the precision in force when this is called.
    """
    digits = mpmath.mp.dps + 10
    constants = [None if c is None else mpmath.mpf(str(sympy.N(c, digits))) for c in program.constants]

    def function(z):
        return _run(program, mpmath.mpf(z), _MPMATH_UNARY, constants, mpmath.sqrt, _mp_power)

    return function


def _mp_power(base, exponent):
    return base**exponent


def evaluate_mpmath(program: Program, z):
    """Evaluate a program at one mpmath number, at the working precision of ``mpmath.mp``."""
    return mpmath_function(program)(z)
