"""The numba integrators against exact solutions and scipy.integrate.solve_ivp."""

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from popgrad.dynamics.solve import DriftODE, solve
from popgrad.numerics.chebyshev import chebyshev_interpolant
from popgrad.models.finetuning.spec import orthonormal_problem, random_features_problem
from popgrad.models.finetuning.population import drift_interpolant, population_drift

ONE = chebyshev_interpolant(lambda m: 1.0 + 0.0 * m, endpoint=True)


def test_exact_solutions_and_dense_output():
    times = np.linspace(0, 4, 41)
    logistic = solve(DriftODE(ONE, a=1.3), 0.2, times, rtol=1e-12, atol=1e-14)  # m = tanh(1.3 t + atanh 0.2)
    np.testing.assert_allclose(logistic.values, np.tanh(1.3 * times + math.atanh(0.2)), atol=1e-11)
    decay = solve(DriftODE(ONE, a=0.0, V=ONE, b=0.7), 0.4, times, rtol=1e-12, atol=1e-14)  # m = 0.4 exp(-0.7 t)
    np.testing.assert_allclose(decay.values, 0.4 * np.exp(-0.7 * times), atol=1e-12)
    sparse = solve(DriftODE(ONE, a=1.3), 0.2, [4.0], rtol=1e-12, atol=1e-14)
    assert logistic.steps == sparse.steps  # dense output: output times never force steps


def test_event_is_the_first_passage_time():
    solution = solve(DriftODE(ONE, a=2.0), -0.5, [10.0], target=0.9, stop_at_event=True, rtol=1e-12, atol=1e-14)
    assert solution.event_time == pytest.approx((math.atanh(0.9) - math.atanh(-0.5)) / 2.0, rel=1e-10)


def test_rk4_converges_at_order_four():
    ode = DriftODE(ONE, a=1.0)
    exact = math.tanh(3.0 + math.atanh(0.1))
    errors = [abs(solve(ode, 0.1, [3.0], method="rk4", step=h).values[0] - exact) for h in (0.2, 0.1, 0.05, 0.025)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(3.7 < order < 4.3 for order in orders), orders


@pytest.mark.parametrize("problem", [orthonormal_problem("relu", 8, 1.0, seed=0), random_features_problem("tanh", 5, 40, 2.0, seed=1, c_distribution="sphere")])
def test_gradient_flow_matches_solve_ivp_on_the_direct_drift(problem):
    eta = 1.0
    times = np.linspace(0, 8, 17)
    ours = solve(DriftODE(drift_interpolant(problem).interpolant, eta), 0.05, times, rtol=1e-12, atol=1e-14)
    reference = solve_ivp(lambda t, y: eta * population_drift(problem, np.clip(y, -1, 1)) * (1 - y**2), (0, 8), [0.05], t_eval=times, method="DOP853", rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ours.values, reference.y[0], atol=1e-9)


def test_bad_arguments():
    with pytest.raises(ValueError, match="times must be"):
        solve(DriftODE(ONE, a=1.0), 0.0, [2.0, 1.0])
    with pytest.raises(ValueError, match="m0 must lie"):
        solve(DriftODE(ONE, a=1.0), 2.0, [1.0])
    with pytest.raises(ValueError, match="rk4 needs a step"):
        solve(DriftODE(ONE, a=1.0), 0.0, [1.0], method="rk4")
