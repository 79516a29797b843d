"""Every kernel route against every other: closed form / series / 2-D quadrature / Monte Carlo / mpmath."""

import math

import mpmath
import numpy as np
import pytest

from popgrad.gaussian.kernels import dual_kernel, kernel_series
from popgrad.reference.kernels import kernel_monte_carlo, kernel_mpmath, kernel_quadrature

POINTS = [(0.3, 1.0, 1.0), (-0.8, 1.3, 0.7), (0.95, 1.0, 1.2)]


@pytest.fixture
def name(member):
    return member.name


@pytest.mark.parametrize("derivative", [False, True])
@pytest.mark.parametrize("rho, s1, s2", POINTS)
def test_closed_form_series_quadrature_monte_carlo(name, derivative, rho, s1, s2):
    value = float(dual_kernel(name, rho, s1, s2, derivative))
    series = kernel_series(name, rho, s1, s2, derivative, order=150)
    if np.isfinite(series.error_bound):
        assert abs(float(series.value) - value) <= float(series.error_bound)
    if derivative and name == "step":
        return  # sigma' is a Dirac mass: no pointwise quadrature or sampling
    quadrature = kernel_quadrature(name, rho, s1, s2, derivative).value
    assert quadrature == pytest.approx(value, rel=1e-10, abs=1e-11)
    estimate = kernel_monte_carlo(name, rho, s1, s2, derivative, samples=400_000, seed=11)
    assert abs(estimate.value - value) <= 4 * estimate.error


@pytest.mark.parametrize("rho, s1, s2", POINTS)
def test_price_theorem(name, rho, s1, s2):
    # d/drho K(s1, s2, rho) = s1 s2 K'(s1, s2, rho), by central differences
    step = 1e-6
    slope = (dual_kernel(name, rho + step, s1, s2) - dual_kernel(name, rho - step, s1, s2)) / (2 * step)
    assert float(slope) == pytest.approx(s1 * s2 * float(dual_kernel(name, rho, s1, s2, derivative=True)), rel=1e-6, abs=1e-8)


@pytest.mark.slow
@pytest.mark.parametrize("name, derivative", [("relu", False), ("erf", True), ("tanh", True), ("abs", False)])
def test_mpmath_spot_checks(name, derivative):
    with mpmath.workdps(20):
        reference = kernel_mpmath(name, 0.6, 1.1, 0.9, derivative)
    assert float(dual_kernel(name, 0.6, 1.1, 0.9, derivative)) == pytest.approx(float(reference.value), rel=1e-12)
    assert float(reference.error) < 1e-15


def test_closed_forms_of_math_md():
    rho = np.linspace(-0.99, 0.99, 11)
    relu = (np.sqrt(1 - rho**2) + (np.pi - np.arccos(rho)) * rho) / (2 * np.pi)
    np.testing.assert_allclose(dual_kernel("relu", rho), relu, rtol=1e-14)
    np.testing.assert_allclose(dual_kernel("relu", rho, derivative=True), (np.pi - np.arccos(rho)) / (2 * np.pi), rtol=1e-14)
    np.testing.assert_allclose(dual_kernel("He_3", rho), 6 * rho**3, rtol=1e-13)
    assert float(dual_kernel("relu", 0.4, 2.0, 3.0)) == pytest.approx(6 * float(dual_kernel("relu", 0.4)))


def test_series_bound_is_honest_near_one():
    series = kernel_series("relu", 0.999, derivative=True, order=40)
    exact = (math.pi - math.acos(0.999)) / (2 * math.pi)
    assert abs(float(series.value) - exact) <= float(series.error_bound)
    assert float(series.error_bound) > 1e-4  # slow convergence is reported, not hidden


def test_bad_rho():
    with pytest.raises(ValueError, match="rho must lie in"):
        dual_kernel("relu", 1.5)
