import math

import mpmath
import numpy as np
import pytest
import sympy
from hypothesis import example, given
from hypothesis import strategies as st

from popgrad.gaussian.expressions import UNARY_FUNCTIONS, Z, ExpressionError, parse_expression
from popgrad.gaussian.programs import STACK_SIZE, UNARY_OPCODES, compile_program, evaluate_mpmath, evaluate_numpy, program_eval

INJECTIONS = [
    "__import__('os').system('echo pwned')",
    "().__class__.__bases__[0].__subclasses__()",
    "z.__class__",
    "exec('1')",
    "eval('z')",
    "open('/etc/passwd')",
    "lambda: z",
    "[x for x in (1,)]",
    "z if z else 1",
    "z; import os",
    "import os",
    "globals()",
    "__builtins__",
    "z.real",
    "sympy.exp(z)",
    "Symbol('x')",
    "y + z",
    "x",
    "tanh(z, 2)",
    "tanh(z=1)",
    "tanh(*[z])",
    "'z'",
    "b'z'",
    "True + z",
    "1j * z",
    "z ^ 2",
    "z @ z",
    "z // 2",
    "z % 2",
    "z < 1",
    "9**9**9",
    "((9**64)**64)**64",
    "z ** 1000",
    "1e400 * z",
    "",
    "   ",
    "(",
    "z" * 500,
    "f'{z}'",
    "{z: 1}",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_payloads_are_refused(payload):
    with pytest.raises(ExpressionError, match="^expression: "):
        parse_expression(payload)


def test_admitted_language():
    assert parse_expression("z**3 - 3*z") == Z**3 - 3 * Z
    assert parse_expression("relu(z)") == (Z + sympy.Abs(Z)) / 2
    assert parse_expression("sigmoid(2*z) + pi*e") == 1 / (1 + sympy.exp(-2 * Z)) + sympy.pi * sympy.E
    assert parse_expression("0.5*z") == Z / 2


@given(st.text(max_size=60))
@example("20000000000000000000")  # an int beyond int64 once reached np.isfinite (TypeError)
def test_arbitrary_text_only_ever_raises_expression_error(text):
    try:
        expr = parse_expression(text)
    except ExpressionError:
        return
    assert expr.free_symbols <= {Z}


_FUNCTIONS = ["tanh", "sin", "cos", "atan", "erf", "sigmoid", "asinh", "abs", "relu", "softplus"]


def _expressions():
    leaves = st.sampled_from(["z", "1", "2", "0.5", "pi", "3*z"])

    def extend(children):
        return st.one_of(
            st.builds(lambda a, b: f"({a} + {b})", children, children),
            st.builds(lambda a, b: f"({a} - {b})", children, children),
            st.builds(lambda a, b: f"({a} * {b})", children, children),
            st.builds(lambda f, a: f"{f}({a})", st.sampled_from(_FUNCTIONS), children),
            st.builds(lambda a, n: f"({a})**{n}", children, st.integers(0, 3)),
        )

    return st.recursive(leaves, extend, max_leaves=8)


@given(_expressions(), st.floats(-2.5, 2.5))
def test_three_evaluators_agree(text, point):
    program = compile_program(parse_expression(text))
    expected = float(evaluate_mpmath(program, mpmath.mpf(point)))
    numpy_value = float(evaluate_numpy(program, np.array([point]))[0])
    numba_value = program_eval(program.ops, program.args, np.empty(STACK_SIZE), point)
    if not math.isfinite(expected):
        return
    assert numpy_value == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert numba_value == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_mpmath_constants_are_exact():
    program = compile_program(parse_expression("z/sqrt(2) + pi"))
    with mpmath.workdps(60):
        value = evaluate_mpmath(program, 1)
        assert abs(value - (1 / mpmath.sqrt(2) + mpmath.pi)) < mpmath.mpf(10) ** -55


@pytest.mark.parametrize("name", list(UNARY_FUNCTIONS))
def test_every_row_of_the_unary_table_agrees_in_numba_numpy_and_mpmath(name):
    # the table's numpy and mpmath columns against the numba switch, at points inside every domain
    row = UNARY_FUNCTIONS[name]
    ops = np.array([0, UNARY_OPCODES[name]], dtype=np.int64)
    for point in (-1.7, -0.3, 0.0, 0.45, 2.2):
        if name == "log" and point <= 0:
            continue
        numba_value = program_eval(ops, np.zeros(2), np.empty(STACK_SIZE), point)
        assert numba_value == pytest.approx(float(row.numpy(np.array([point]))[0]), rel=1e-14, abs=1e-15)
        assert numba_value == pytest.approx(float(row.mpmath(mpmath.mpf(point))), rel=1e-14, abs=1e-15)
