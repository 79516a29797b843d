"""The vector-state solvers against exact solutions and scipy.integrate.solve_ivp."""

import math

import numpy as np
import pytest
from scipy import optimize
from scipy.integrate import solve_ivp
from scipy.linalg import expm

from popgrad.dynamics.solve import ODE, SolverFailed, solve
from popgrad.dynamics.solvers.base import right_hand_side
from popgrad.models.finetuning.odes import DriftODE
from popgrad.models.finetuning.population import drift_interpolant, population_drift
from popgrad.models.finetuning.spec import orthonormal_problem, random_features_problem
from popgrad.numerics.chebyshev import chebyshev_interpolant

ONE = chebyshev_interpolant(lambda m: 1.0 + 0.0 * m, endpoint=True)


@right_hand_side
def linear(t, y, parameters, out):
    """dy/dt = M y with M (n x n) packed row-major after n."""
    n = int(parameters[0])
    for i in range(n):
        total = 0.0
        for j in range(n):
            total += parameters[1 + i * n + j] * y[j]
        out[i] = total


@right_hand_side
def lotka_volterra(t, y, parameters, out):
    a, b, c, d = parameters[0], parameters[1], parameters[2], parameters[3]
    out[0] = a * y[0] - b * y[0] * y[1]
    out[1] = c * y[0] * y[1] - d * y[1]


@right_hand_side
def forced(t, y, parameters, out):
    out[0] = math.cos(parameters[0] * t) - y[0]  # time-dependent: checks that stages see their own t


MATRIX = np.array([[-0.5, 2.0, 0.0], [-2.0, -0.5, 0.3], [0.0, -0.3, -0.1]])
LINEAR = ODE(linear, np.concatenate([[3.0], MATRIX.ravel()]))


def test_linear_system_against_its_matrix_exponential():
    y0 = np.array([1.0, -0.5, 2.0])
    times = np.linspace(0, 5, 11)
    exact = np.array([expm(MATRIX * t) @ y0 for t in times])
    solution = solve(LINEAR, y0, times, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(solution.values, exact, atol=1e-11)
    fixed = solve(LINEAR, y0, times, method="rk4", step=1e-3)
    np.testing.assert_allclose(fixed.values, exact, atol=1e-11)


@pytest.mark.parametrize("ode, y0", [(ODE(lotka_volterra, np.array([1.1, 0.4, 0.1, 0.4])), [10.0, 5.0]), (ODE(forced, np.array([3.0])), [0.2])])
def test_nonlinear_and_time_dependent_against_solve_ivp(ode, y0):
    times = np.linspace(0, 15, 31)
    ours = solve(ode, y0, times, rtol=1e-12, atol=1e-12)
    out = np.empty(len(y0))

    def f(t, y):
        ode.rhs(t, np.ascontiguousarray(y), ode.parameters, out)
        return out.copy()

    reference = solve_ivp(f, (0, 15), y0, t_eval=times, method="DOP853", rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(ours.values, reference.y.T, rtol=1e-9, atol=1e-9)


def test_exact_solutions_and_dense_output():
    times = np.linspace(0, 4, 41)
    logistic = solve(DriftODE(ONE, a=1.3), 0.2, times, rtol=1e-12, atol=1e-14)  # m = tanh(1.3 t + atanh 0.2)
    np.testing.assert_allclose(logistic.values, np.tanh(1.3 * times + math.atanh(0.2)), atol=1e-11)
    decay = solve(DriftODE(ONE, a=0.0, V=ONE, b=0.7), 0.4, times, rtol=1e-12, atol=1e-14)  # m = 0.4 exp(-0.7 t)
    np.testing.assert_allclose(decay.values, 0.4 * np.exp(-0.7 * times), atol=1e-12)
    sparse = solve(DriftODE(ONE, a=1.3), 0.2, [4.0], rtol=1e-12, atol=1e-14)
    assert logistic.steps == sparse.steps  # dense output: output times never force steps


def test_many_starts_in_one_vector_solve():
    starts = np.array([-0.5, 0.0, 0.3])
    times = np.linspace(0, 3, 7)
    together = solve(DriftODE(ONE, a=1.0), starts, times, rtol=1e-12, atol=1e-14).values
    np.testing.assert_allclose(together, np.tanh(times[:, None] + np.arctanh(starts)[None, :]), atol=1e-11)


def test_event_is_the_first_passage_time():
    solution = solve(DriftODE(ONE, a=2.0), -0.5, [10.0], target=0.9, stop_at_event=True, rtol=1e-12, atol=1e-14)
    assert solution.event_time == pytest.approx((math.atanh(0.9) - math.atanh(-0.5)) / 2.0, rel=1e-10)
    assert np.isnan(solution.values[0])  # the output time lies after the event
    # a vector state: the first zero of y_0(t) = (expm(M t) y0)_0, bracketed on a grid and found by Brent
    y0 = np.array([1.0, 0.0, 0.0])
    rotation = solve(LINEAR, y0, [5.0], target=0.0, event_component=0, rtol=1e-12, atol=1e-14)
    first = lambda t: (expm(MATRIX * t) @ y0)[0]  # noqa: E731
    grid = np.linspace(0, 5, 501)
    upper = grid[np.argmax([first(t) < 0 for t in grid])]
    assert rotation.event_time == pytest.approx(optimize.brentq(first, upper - 0.01, upper, xtol=1e-14), abs=1e-9)


def test_rk4_converges_at_order_four():
    ode = DriftODE(ONE, a=1.0)
    exact = math.tanh(3.0 + math.atanh(0.1))
    errors = [abs(solve(ode, 0.1, [3.0], method="rk4", step=h).values[0] - exact) for h in (0.2, 0.1, 0.05, 0.025)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(3.7 < order < 4.3 for order in orders), orders


@pytest.mark.parametrize("problem", [orthonormal_problem("relu", 8, 1.0, seed=0), random_features_problem("tanh", 5, 2.0, d=40, seed=1, c_distribution="sphere")])
def test_gradient_flow_matches_solve_ivp_on_the_direct_drift(problem):
    eta = 1.0
    times = np.linspace(0, 8, 17)
    ours = solve(DriftODE(drift_interpolant(problem).interpolant, eta), 0.05, times, rtol=1e-12, atol=1e-14)
    reference = solve_ivp(lambda t, y: eta * population_drift(problem, np.clip(y, -1, 1)) * (1 - y**2), (0, 8), [0.05], t_eval=times, method="DOP853", rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ours.values, reference.y[0], atol=1e-9)


def test_failures_and_bad_arguments():
    with pytest.raises(ValueError, match="times must be"):
        solve(DriftODE(ONE, a=1.0), 0.0, [2.0, 1.0])
    with pytest.raises(ValueError, match="y0 must be"):
        solve(DriftODE(ONE, a=1.0), [np.nan], [1.0])
    with pytest.raises(ValueError, match="rk4 needs a step"):
        solve(DriftODE(ONE, a=1.0), 0.0, [1.0], method="rk4")
    with pytest.raises(ValueError, match="method must be one of"):
        solve(DriftODE(ONE, a=1.0), 0.0, [1.0], method="euler")
    with pytest.raises(SolverFailed, match="more than 5 steps"):
        solve(LINEAR, [1.0, 0.0, 0.0], [50.0], max_steps=5)


def test_radau_solves_a_stiff_linear_problem_that_dopri5_cannot():
    # y' = -lam (y - cos t), lam = 1e6: exact y = (lam^2 cos t + lam sin t - lam^2 e^(-lam t)) / (lam^2 + 1)
    from popgrad.dynamics.solve import ODE, SolverFailed, solve
    from popgrad.dynamics.solvers.base import right_hand_side

    @right_hand_side
    def stiff(t, y, parameters, out):
        out[0] = -parameters[0] * (y[0] - np.cos(t))

    lam, times = 1e6, np.array([0.0, 1.0, 10.0])
    exact = (lam**2 * np.cos(times) + lam * np.sin(times) - lam**2 * np.exp(-lam * times)) / (lam**2 + 1)
    solution = solve(ODE(stiff, np.array([lam])), 0.0, times, method="radau", rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(solution.values - exact)) < 1e-10 and solution.steps < 5000
    with pytest.raises(SolverFailed, match="dopri5 took more than 100000 steps"):
        solve(ODE(stiff, np.array([lam])), 0.0, times, rtol=1e-10, atol=1e-12, max_steps=100_000)
