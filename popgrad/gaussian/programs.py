"""Stack programs: a trusted sympy expression compiled to integer opcodes, with three evaluators.

:func:`compile_program` turns an expression in ``z`` into a postfix :class:`Program`. One program has
three evaluators — vectorised numpy (:func:`evaluate_numpy`), arbitrary precision mpmath
(:func:`evaluate_mpmath`) and numba (:func:`program_eval`) — so every backend computes the same function.
Unary opcodes follow the rows of :data:`popgrad.gaussian.expressions.UNARY_FUNCTIONS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from .._lazy import LazyModule
from .unary import UNARY_FUNCTIONS

sympy = LazyModule("sympy")
mpmath = LazyModule("mpmath")

__all__ = ["Program", "compile_program", "evaluate_numpy", "evaluate_mpmath", "mpmath_function", "program_eval", "UNARY_OPCODES", "STACK_SIZE"]

OP_Z, OP_CONST, OP_ADD, OP_MUL, OP_POW, OP_INTPOW, OP_SQRT = 0, 1, 2, 3, 4, 5, 6
FIRST_UNARY_OPCODE = 10
#: opcode of each unary function of the table
UNARY_OPCODES = {name: FIRST_UNARY_OPCODE + index for index, name in enumerate(UNARY_FUNCTIONS)}
_OPCODE_ROWS = {code: UNARY_FUNCTIONS[name] for name, code in UNARY_OPCODES.items()}
#: scratch length the numba evaluator needs (programs are refused beyond it)
STACK_SIZE = 64


@njit(cache=True)
def _unary(op, x):
    """The numba column of the unary table, in the table's order (a test checks every row against numpy):
    a binary search on the opcode, four comparisons at most."""
    if op < 16:  # exp log sin cos tanh sinh
        if op < 13:
            if op == 10:
                return math.exp(x)
            if op == 11:
                return math.log(x) if x > 0.0 else (-math.inf if x == 0.0 else math.nan)
            return math.sin(x)
        if op == 13:
            return math.cos(x)
        return math.tanh(x) if op == 14 else math.sinh(x)
    if op < 20:  # cosh atan asinh erf
        if op < 18:
            return math.cosh(x) if op == 16 else math.atan(x)
        return math.asinh(x) if op == 18 else math.erf(x)
    if op < 22:  # erfc abs
        return math.erfc(x) if op == 20 else abs(x)
    if op == 22:  # sign
        return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)
    if op == 23:  # heaviside
        return 1.0 if x > 0 else (0.0 if x < 0 else 0.5)
    return 0.0 if op == 24 else math.nan


@njit(cache=True)
def program_eval(ops, args, stack, z):
    """Evaluate a stack program at ``z`` using ``stack`` (float64 scratch of length ≥ the program)."""
    top = 0
    for i in range(ops.shape[0]):
        op = ops[i]
        if op == OP_Z:
            stack[top] = z
            top += 1
        elif op == OP_CONST:
            stack[top] = args[i]
            top += 1
        elif op == OP_ADD:
            top -= 1
            stack[top - 1] = stack[top - 1] + stack[top]
        elif op == OP_MUL:
            top -= 1
            stack[top - 1] = stack[top - 1] * stack[top]
        elif op == OP_POW:
            top -= 1
            stack[top - 1] = stack[top - 1] ** stack[top]
        elif op == OP_INTPOW:
            stack[top - 1] = stack[top - 1] ** args[i]
        elif op == OP_SQRT:
            stack[top - 1] = math.sqrt(stack[top - 1]) if stack[top - 1] >= 0.0 else math.nan
        else:
            stack[top - 1] = _unary(op, stack[top - 1])
    return stack[0]


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
    >>> from popgrad.gaussian.expressions import parse_expression
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

    from .expressions import Z, ExpressionError

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
            for name, row in UNARY_FUNCTIONS.items():
                if isinstance(node, row.sympy):
                    heaviside_half = row.sympy is sympy.Heaviside and len(node.args) == 2 and node.args[1] == sympy.Rational(1, 2)
                    if len(node.args) != 1 and not heaviside_half:
                        raise ExpressionError(f"expression: {node} is not supported pointwise")
                    walk(node.args[0])
                    emit(UNARY_OPCODES[name])
                    return
            raise ExpressionError(f"expression: {type(node).__name__} cannot be evaluated")

    walk(sympy.sympify(expr))
    if _stack_depth(ops) > STACK_SIZE:
        raise ExpressionError(f"expression: needs a stack deeper than {STACK_SIZE}")
    return Program(np.asarray(ops, dtype=np.int64), np.asarray(args, dtype=np.float64), tuple(constants))


def _stack_depth(ops: list) -> int:
    depth = deepest = 0
    for op in ops:
        depth += 1 if op in (OP_Z, OP_CONST) else (-1 if op in (OP_ADD, OP_MUL, OP_POW) else 0)
        deepest = max(deepest, depth)
    return deepest


def _run(program: Program, z, unary_column: str, constants, sqrt, power):
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
            stack.append(getattr(_OPCODE_ROWS[op], unary_column)(stack.pop()))
    return stack.pop()


def evaluate_numpy(program: Program, z: np.ndarray) -> np.ndarray:
    """Evaluate a program elementwise on a float64 array (overflow to inf is left to the caller)."""
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        result = _run(program, z, "numpy", program.args.tolist(), np.sqrt, np.power)
    return np.broadcast_to(np.asarray(result, dtype=np.float64), z.shape).copy()


def mpmath_function(program: Program):
    """The program as a function of one mpmath number, at the working precision of ``mpmath.mp``.

    Constants are rounded once, at the precision in force when this is called.
    """
    digits = mpmath.mp.dps + 10
    constants = [None if c is None else mpmath.mpf(str(sympy.N(c, digits))) for c in program.constants]

    def function(z):
        return _run(program, mpmath.mpf(z), "mpmath", constants, mpmath.sqrt, _mp_power)

    return function


def _mp_power(base, exponent):
    return base**exponent


def evaluate_mpmath(program: Program, z):
    """Evaluate a program at one mpmath number, at the working precision of ``mpmath.mp``."""
    return mpmath_function(program)(z)
