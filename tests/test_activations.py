import numpy as np
import pytest

from popgrad.gaussian.families.fast import activation_derivative, activation_value
from popgrad.gaussian.programs import STACK_SIZE
from popgrad.gaussian.activations import activation

from conftest import CATALOGUE, EXTRA

NAMES = CATALOGUE + EXTRA


def test_numba_and_numpy_agree_with_derivative_by_finite_differences(member):
    _check_evaluators(member)


@pytest.mark.parametrize("name", EXTRA)
def test_custom_activations_evaluate_alike(name):
    _check_evaluators(activation(name))


def _check_evaluators(sigma):
    z = np.linspace(-3.1, 2.9, 41)
    kind, parameters, ops, args, d_ops, d_args = sigma.jit_spec
    stack = np.empty(STACK_SIZE)
    values = np.array([activation_value(kind, parameters, ops, args, stack, x) for x in z])
    slopes = np.array([activation_derivative(kind, parameters, d_ops, d_args, stack, x) for x in z])
    np.testing.assert_allclose(values, sigma(z), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(slopes, sigma.prime(z), rtol=1e-12, atol=1e-12)
    step = 1e-6
    away = np.all(np.abs(z[:, None] - np.array(sigma.breakpoints or [np.inf])[None, :]) > 1e-3, axis=1)
    central = (sigma(z + step) - sigma(z - step)) / (2 * step)
    np.testing.assert_allclose(slopes[away], central[away], rtol=1e-6, atol=1e-6)


def test_names_round_trip():
    for name in NAMES:
        assert activation(activation(name).name) == activation(name)


def test_parameterised_members():
    assert activation("leaky_relu(0.2)").slope == pytest.approx(0.2)
    assert activation("He_4").polynomial_coefficients.tolist() == [3.0, 0.0, -6.0, 0.0, 1.0]
    assert activation("step").jumps and not activation("relu").jumps


@pytest.mark.parametrize(
    "spec, message",
    [
        ("leaky_relu(0.1, 2)", "one slope"),
        ("leaky_relu(abc)", "slope must be a real number"),
        ("poly(1)", "constant polynomial"),
        ("He_100", "exceeds 64"),
        ("unknown_thing", "known: linear"),
        ("pi", "does not depend on z"),
    ],
)
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        activation(spec)


def test_type_error_for_non_strings():
    with pytest.raises(TypeError, match="activation"):
        activation(3)


@pytest.mark.parametrize(
    "expression, reason",
    [
        ("1/z", "|z - z0|^-2 at z0 = 0"),
        ("1/(z-0.3)", "at z0 = 0.3"),
        ("1/abs(z)**0.5", "|z - z0|^-1 at z0 = 0"),
        ("1/log(abs(z))", "at z0 = -1"),
        ("exp(z**2/4)", "exp(0.25 z^2) at r = 1 as z -> +inf"),
        ("exp(z**2/4 - z)", "as z -> -inf"),
        ("exp(exp(exp(exp(z))))", "exceeds the float64 range"),  # refused before mpmath (GMP would abort)
        # a double zero between the grid's points: the base touches 0 without changing sign
        ("1/(z**2 - 0.2469134*z + 0.01524155677489)", "at z0 = 0.123457"),
        ("1/(1 - cos(z - 0.0001234))", "|z - z0|^-4 at z0 = "),
    ],
)
def test_activations_without_a_second_moment_are_refused(expression, reason):
    # E[sigma(g)^2] = inf: 1/z and 1/|z|^(1/2) at 0 (the integral of 1/|z| diverges), exp(z^2/4) at infinity
    with pytest.raises(ValueError, match="not square-integrable") as caught:
        activation(expression)
    assert reason in str(caught.value)


@pytest.mark.parametrize("expression", ["1/abs(z)**0.4", "log(abs(z))", "exp(z**2/5)", "1/(1 + z**2)", "tanh(2*z) + 0.1*z**2", "1/((z - 0.1234567)**2 + 0.01)", "exp(-1/(z - 0.1234567)**2)"])
def test_square_integrable_expressions_are_accepted(expression):
    # |z|^-0.8, log^2|z| and exp(2 z^2 / 5) e^{-z^2/2} are integrable
    assert activation(expression).name == expression
