"""The committee machine's d -> inf ODE for polynomial activations: the sympy right-hand side (Isserlis/Wick,
popgrad.models.committee.symbolic) against the compiled route (Gauss–Hermite expectations in
popgrad.models.committee.ode.committee_rhs, closed-form eps_g) at random states — two independent routes."""

import numpy as np
import pytest
import sympy

from popgrad._validation import InvalidArgument
from popgrad.models.committee.symbolic import compiled_difference, gaussian_moment_expectation, random_state, symbolic_ode

CASES = [(1, 1, "z", None), (1, 1, "He_2", None), (1, 1, "He_3", None), (2, 2, "z", None), (2, 2, "He_2", None), (2, 1, "He_2", "He_3"), (1, 2, "z**3 + z", "quadratic")]


@pytest.mark.parametrize("K, M, student, teacher", CASES)
def test_symbolic_rhs_equals_the_compiled_rhs_at_random_states(K, M, student, teacher):
    ode = symbolic_ode(K, M, student, teacher)
    for seed in (0, 1):
        assert compiled_difference(ode, student, teacher, seed=seed) < 1e-10


def test_symbolic_rhs_in_the_popgrad_convention_with_scales_and_weight_decay():
    options = dict(convention="popgrad", student_scale=0.8, teacher_scale=1.2, weight_decay=0.05, second_layer_weight_decay=0.1)
    ode = symbolic_ode(2, 2, "z**3 + z", "He_2", **options)
    assert compiled_difference(ode, "z**3 + z", "He_2", seed=3, **options) < 1e-10
    frozen = symbolic_ode(2, 2, "He_2", train_second_layer=False)
    assert frozen.da == sympy.zeros(2, 1)
    assert compiled_difference(frozen, "He_2", seed=4, train_second_layer=False) < 1e-10


def test_the_comparison_sees_a_wrong_noise_term():
    # the check is not vacuous: the symbolic side at another tau differs from the compiled one
    ode = symbolic_ode(1, 1, "He_2")
    Q, R, T, a, a_star = random_state(1, 1, 0)
    right = ode.evaluate(Q, R, T, a, a_star, 0.7, 0.3, 0.4)["dQ"]
    wrong = ode.evaluate(Q, R, T, a, a_star, 0.7, 0.3, 0.5)["dQ"]
    assert abs(right - wrong).max() > 1e-3


def test_linear_committee_by_hand():
    # K = M = 1, sigma = z: E[(a* nu - a lambda)^2] = a*^2 T - 2 a a* R + a^2 Q, E[Delta nu] = a (a* T - a R),
    # E[Delta^2] = a^2 (E[(f* - f)^2] + tau^2)
    ode = symbolic_ode(1, 1, "z")
    Q, R, T, a, b, delta, tau = ode.Q[0, 0], ode.R[0, 0], ode.T[0, 0], ode.a[0], ode.a_star[0], ode.delta, ode.tau
    error = b**2 * T - 2 * a * b * R + a**2 * Q
    assert sympy.expand(ode.eps_g - error / 2) == 0
    assert sympy.expand(ode.dR[0, 0] - delta * a * (b * T - a * R)) == 0
    assert sympy.expand(ode.dQ[0, 0] - (2 * delta * a * (b * R - a * Q) + delta**2 * a**2 * (error + tau**2))) == 0


def test_gaussian_moments_match_isserlis_counts():
    x, y = sympy.symbols("x y")
    assert gaussian_moment_expectation(x**6, (x,), sympy.Matrix([[2]])) == 15 * 8
    assert gaussian_moment_expectation(x**3 * y, (x, y), sympy.Matrix([[1, sympy.Rational(1, 3)], [sympy.Rational(1, 3), 1]])) == 1


def test_bad_input():
    with pytest.raises(InvalidArgument, match="student"):
        symbolic_ode(1, 1, "relu")
    with pytest.raises(InvalidArgument, match="convention"):
        symbolic_ode(1, 1, "z", convention="other")
    with pytest.raises(InvalidArgument, match="K"):
        symbolic_ode(0, 1, "z")
