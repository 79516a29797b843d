import numpy as np
import pytest
import sympy

from popgrad.gaussian.activations import activation, catalogue
from popgrad.gaussian.hermite import NoClosedForm, exact_hermite_coefficients, hermite_coefficients, information_exponent, second_moment
from popgrad.reference.hermite import mpmath_hermite_coefficients, parseval_check, precision, verify_hermite

CLOSED = [a.name for a in catalogue() if a.has_closed_form] + ["poly(1, -2, 0.5)", "z**3 + 2*z"]
NUMERIC = [a.name for a in catalogue() if not a.has_closed_form] + ["abs(z - 0.5) + z**2*tanh(z)"]


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1, 1.7])
@pytest.mark.parametrize("name", CLOSED)
def test_symbolic_and_mpmath_quadrature_agree_to_40_digits(name, scale):
    check = verify_hermite(name, 30, scale, digits=50)
    assert check.min_digits >= 40, check.digits
    assert check.max_abs_at_zeros <= 1e-45


@pytest.mark.parametrize("scale", [1, 1.7])
@pytest.mark.parametrize("name", CLOSED + NUMERIC)
def test_float64_matches_mpmath(name, scale):
    fast = hermite_coefficients(name, 20, scale)
    with precision(30):
        reference = np.array([float(v) for v in mpmath_hermite_coefficients(name, 20, scale)])
    error = np.abs(fast - reference)
    assert np.all((error <= 1e-12 * np.abs(reference)) | (error <= 1e-14)), error


def test_relu_closed_form_of_math_md():
    # MATH.md §1: mu_p(relu) for even p >= 2 is (-1)^(p/2-1) (p-3)!! / sqrt(2 pi p!)
    exact = exact_hermite_coefficients("relu", 12)
    for p in range(4, 13, 2):
        expected = (-1) ** (p // 2 - 1) * sympy.factorial2(p - 3) / sympy.sqrt(2 * sympy.pi * sympy.factorial(p))
        assert sympy.simplify(exact[p] - expected) == 0
    assert exact[0] == 1 / sympy.sqrt(2 * sympy.pi) and exact[1] == sympy.Rational(1, 2)
    assert all(exact[p] == 0 for p in range(3, 13, 2))


def test_homogeneity_in_the_scale():
    # relu is 1-homogeneous, step 0-homogeneous: an identity the exact route must respect at any r
    r = sympy.Rational(17, 10)
    assert [sympy.simplify(a - r * b) for a, b in zip(exact_hermite_coefficients("relu", 8, r), exact_hermite_coefficients("relu", 8))] == [0] * 9
    assert exact_hermite_coefficients("step", 8, r) == exact_hermite_coefficients("step", 8)


def test_stein_identity_against_naive_integration_for_small_orders():
    # the Stein route for erf vs sympy's direct Gaussian integral at low order (slow beyond p ~ 3)
    g = sympy.Symbol("g", real=True)
    phi = sympy.exp(-(g**2) / 2) / sympy.sqrt(2 * sympy.pi)
    exact = exact_hermite_coefficients("erf", 3)
    direct = sympy.integrate(sympy.erf(g) * g * phi, (g, -sympy.oo, sympy.oo))
    assert sympy.simplify(exact[1] - direct) == 0


def test_no_closed_form_is_reported():
    with pytest.raises(NoClosedForm, match="tanh"):
        exact_hermite_coefficients("tanh", 3)


# beyond the default max_order of 30 for a polynomial (He_64), and where mu_1 is tiny beside the norm but
# not zero: exp(10 z) has mu_p = e^50 10^p / sqrt(p!), cos(z) has mu_p = Re(i^p) e^(-1/2) / sqrt(p!)
@pytest.mark.parametrize("name, expected", [("relu", 1), ("quadratic", 2), ("He_3", 3), ("h_4", 4), ("tanh", 1), ("abs", 2), ("gelu", 1), ("cubic", 1), ("He_64", 64), ("exp(10*z)", 1), ("cos(z)", 2), ("tanh(z)**2", 2)])
def test_information_exponent(name, expected):
    assert information_exponent(name) == expected


@pytest.mark.slow  # 25-digit quadrature, 2-3 s each
@pytest.mark.parametrize("name", ["relu", "tanh", "He_3", "erf"])
def test_parseval(name):
    with precision(25):
        check = parseval_check(name, 60)
    assert check["tail"] >= -1e-20
    assert check["tail"] < (1e-20 if activation(name).family == "polynomial" else 5e-3)
    assert float(check["second_moment"]) == pytest.approx(second_moment(name), rel=1e-12)


def test_numeric_activations_verify_across_two_quadratures():
    check = verify_hermite("sigmoid", 10, 1, digits=40)
    assert check.exact == (None,) * 11
    assert check.min_digits >= 35


@pytest.mark.parametrize("bad, error", [({"order": -1}, ValueError), ({"order": 1.5}, TypeError), ({"scale": 0}, ValueError), ({"scale": -2.0}, ValueError)])
def test_bad_arguments(bad, error):
    arguments = {"order": 3, "scale": 1.0} | bad
    with pytest.raises(error, match="order|scale"):
        hermite_coefficients("relu", arguments["order"], arguments["scale"])
