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
