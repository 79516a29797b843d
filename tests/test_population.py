"""Proposition 4 and the population quantities, each checked by an independent route."""

import numpy as np
import pytest
import sympy

from popgrad.models.finetuning.geometry import embedding
from popgrad.models.finetuning.gradients import neuron_divisors
from popgrad.models.finetuning.references import monte_carlo_gradient, network_loss
from popgrad.reference.kernels import kernel_quadrature
from popgrad.models.finetuning.spec import FineTuningProblem, glm_problem, orthonormal_problem, random_features_problem
from popgrad.models.finetuning.checks import lemma6_frequency
from popgrad.models.finetuning.population import drift_fixed_points, drift_interpolant, glm_drift, population_drift, population_loss
from popgrad.models.finetuning.series import drift_series, paper_drift_series, symbolic_drift

ACTIVATIONS = ["relu", "tanh", "erf", "sigmoid", "He_3", "quadratic"]


def problems(name):
    return [orthonormal_problem(name, 3, 1.0, seed=5), random_features_problem(name, 3, 1.0, d=20, seed=6)]


def drift_by_quadrature(problem, m):
    """h(m) with every kernel computed by adaptive 2-D quadrature (no closed form, no series)."""
    total = 0.0
    r_t, r_s = problem.teacher_norms, problem.student_norms
    s_t, s_s = problem.teacher_scales, problem.student_scales
    for i in range(problem.k):
        for j in range(problem.k):
            rho = (problem.gram[i, j] + problem.xi**2 * problem.c[i] * problem.c_hat[j] * m) / (r_t[i] * r_s[j])
            kernel = kernel_quadrature(problem.activation, rho, s_t[i], s_s[j], derivative=True).value
            total += problem.lam[i] * problem.lam[j] * problem.c[i] * problem.c_hat[j] * s_t[i] * s_s[j] / (r_t[i] * r_s[j]) * kernel
    return 2 * problem.xi**2 * total


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_closed_form_vs_moment_series_vs_quadrature(name):
    for problem in problems(name):
        m = np.array([-0.5, -0.1, 0.2, 0.5])
        closed = population_drift(problem, m)
        series = np.polynomial.polynomial.polyval(m, paper_drift_series(problem, 60, order=300))
        general = np.polynomial.polynomial.polyval(m, drift_series(problem, 60, order=300))
        tolerance = 1e-8 if name == "relu" else 1e-12
        np.testing.assert_allclose(series, closed, rtol=tolerance, atol=tolerance)
        np.testing.assert_allclose(general, closed, rtol=tolerance, atol=tolerance)
        quadrature = [drift_by_quadrature(problem, value) for value in m[[0, 3]]]
        np.testing.assert_allclose(quadrature, closed[[0, 3]], rtol=1e-9, atol=1e-10)


def _explicit_loss(problem, e, u_hat):
    n_t, n_s = neuron_divisors(problem)
    teacher = (e.W + problem.xi * np.outer(problem.c, e.u)) / n_t[:, None]
    student = (e.W + problem.xi * np.outer(problem.c_hat, u_hat)) / n_s[:, None]
    return network_loss(problem.activation, problem.lam, teacher, student)


@pytest.mark.parametrize("name, tolerance", [("tanh", 1e-6), ("erf", 1e-6), ("sigmoid", 1e-6), ("He_3", 1e-6), ("relu", 1e-6)])
@pytest.mark.parametrize("convention", ["normalized", "raw"])
def test_proposition_4_by_finite_differences_in_dimension_d(name, tolerance, convention):
    problem = random_features_problem(name, 3, 1.2, d=9, seed=8, convention=convention)
    m = 0.35
    e = embedding(problem, m=m, seed=2)
    # orthonormal basis of the tangent space: span(W)^perp intersected with u_hat^perp
    frame = np.column_stack([e.basis, e.u_hat])
    q, _ = np.linalg.qr(np.column_stack([frame, np.eye(e.d)]))
    tangent = q[:, frame.shape[1] : e.d]
    step = 1e-5
    gradient = np.zeros(e.d)
    for direction in tangent.T:
        plus = (e.u_hat + step * direction) / np.linalg.norm(e.u_hat + step * direction)
        minus = (e.u_hat - step * direction) / np.linalg.norm(e.u_hat - step * direction)
        gradient += (_explicit_loss(problem, e, plus) - _explicit_loss(problem, e, minus)) / (2 * step) * direction
    expected = -population_drift(problem, m) * (e.u - m * e.u_hat)
    assert np.linalg.norm(gradient - expected) <= tolerance * np.linalg.norm(expected)
    # and the loss itself is Phi(m)
    assert _explicit_loss(problem, e, e.u_hat) == pytest.approx(float(population_loss(problem, m)), rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["relu", "tanh", "He_3", "sigmoid"])
def test_monte_carlo_gradient_matches_population_gradient(name):
    problem = random_features_problem(name, 3, 1.0, d=10, seed=2)
    m = 0.3
    e = embedding(problem, m=m, seed=5)
    mean, standard_error = monte_carlo_gradient(problem, e.W, e.u, e.u_hat, e.basis, samples=1_000_000, seed=7)
    expected = -population_drift(problem, m) * (e.u - m * e.u_hat)
    assert np.all(np.abs(mean - expected) <= 4 * standard_error), np.abs(mean - expected) / standard_error


def test_raw_convention_for_relu():
    for k, xi in [(4, 1.0), (9, 3.0)]:
        normalized = orthonormal_problem("relu", k, xi, seed=1)
        raw = normalized.replace(convention="raw")
        m = np.linspace(-1, 1, 9)
        np.testing.assert_allclose(population_drift(raw, m), (1 + xi**2 / k) * population_drift(normalized, m), rtol=1e-13)


def test_loss_derivative_is_minus_drift():
    for problem in [orthonormal_problem("tanh", 4, 1.0, seed=2), random_features_problem("gelu", 3, 2.0, d=10, seed=3, c_distribution="sphere", convention="raw")]:
        m = np.linspace(-0.9, 0.9, 7)
        step = 1e-5
        derivative = (population_loss(problem, m + step) - population_loss(problem, m - step)) / (2 * step)
        np.testing.assert_allclose(-derivative, population_drift(problem, m), rtol=1e-8, atol=1e-9)


def test_loss_at_the_teacher_vanishes_when_c_hat_equals_c():
    problem = orthonormal_problem("tanh", 4, 1.0, seed=2)
    problem = problem.replace(c_hat=problem.c)
    assert float(population_loss(problem, 1.0)) == pytest.approx(0.0, abs=1e-12)
    assert population_drift(problem, 0.5) > 0


@pytest.mark.parametrize("name", ["relu", "abs", "leaky_relu(0.1)", "He_3", "quadratic", "erf", "tanh"])
def test_symbolic_drift_matches_numeric(name):
    problem = orthonormal_problem(name, 2, 1.0, seed=0)
    expr, exact = symbolic_drift(problem, terms=30 if name != "tanh" else 200)
    assert exact == (name != "tanh")
    m = sympy.Symbol("m", real=True)
    function = sympy.lambdify(m, expr, "mpmath")
    for value in [-0.7, 0.0, 0.4]:
        assert float(function(value)) == pytest.approx(float(population_drift(problem, value)), rel=1e-10, abs=1e-12)
    assert expr.free_symbols <= {m}
    if problem.activation.family == "polynomial":  # K' of a degree-q polynomial is a polynomial of degree q - 1 in rho, so in m
        assert sympy.Poly(sympy.expand(expr), m).degree() <= len(problem.activation.polynomial_coefficients) - 2


@pytest.mark.parametrize("problem", [orthonormal_problem("relu", 8, 1.0, seed=0), orthonormal_problem("tanh", 8, 2.0, seed=1), random_features_problem("relu", 6, 1.0, d=30, seed=2, c_distribution="sphere")])
def test_interpolant_error_is_verified(problem):
    fast = drift_interpolant(problem)
    m = np.random.default_rng(0).uniform(-1, 1, 500)
    error = np.max(np.abs(fast(m) - population_drift(problem, m)))
    assert error <= max(fast.measured_error, 1e-15) * 1.0001
    assert fast.measured_error <= 1e-9 * fast.scale


def test_fixed_points():
    # quadratic, G = I: kappa'(rho) = 4 rho, so h is proportional to sum_i c_i c_hat_i + xi^2 m
    for seed in range(4):
        problem = orthonormal_problem("quadratic", 4, 1.0, seed=seed)
        overlap = float(problem.c @ problem.c_hat)
        points = drift_fixed_points(problem)
        assert points.zeros == pytest.approx((-overlap,), abs=1e-12)
        assert points.sign_h0 == int(np.sign(overlap))
        if overlap != 0:
            assert points.attractor == float(np.sign(overlap))
    for zero in drift_fixed_points(orthonormal_problem("He_3", 6, 2.0, seed=3)).zeros:
        assert abs(float(population_drift(orthonormal_problem("He_3", 6, 2.0, seed=3), zero))) < 1e-10


def test_glm_limit():
    # W = 0, k = 1, c = c_hat: h = 2 lam^2 sum_p p mu_p^2 m^(p-1) exactly
    for name in ["tanh", "relu", "He_3"]:
        problem = FineTuningProblem(name, [1.5], np.zeros((1, 1)), [1.0], [1.0], 2.0)
        m = np.linspace(-0.6, 0.6, 5)
        np.testing.assert_allclose(population_drift(problem, m), 2 * 1.5**2 * glm_drift(name, m, order=400), rtol=1e-6, atol=1e-9)
    # general k: h = 2 sum_p p mu_p^2 m^(p-1) sum_ij lam_i lam_j sign(c_i c_hat_j)^p
    problem = glm_problem("He_3", 5, 1.0, seed=4)
    signs = np.sign(np.outer(problem.c, problem.c_hat))
    assert float(population_drift(problem, 0.5)) == pytest.approx(2 * 3 * 6 * 0.25 * np.sum(signs**3), rel=1e-12)
    # information exponent 3: no drift at m = 0, the plateau of learning from scratch
    assert float(population_drift(problem, 0.0)) == pytest.approx(0.0, abs=1e-12)


def test_lemma6_report_is_reproducible():
    first = lemma6_frequency("relu", 8, 1.0, draws=50, seed=3)
    assert first == lemma6_frequency("relu", 8, 1.0, draws=50, seed=3)
    assert 0.0 <= first["fraction"] <= 1.0 and first["degenerate"] <= 50
    # k = 1: h = 2 xi^2 lam^2 c c_hat kappa'(rho(m)) / r^2 keeps its sign and |h| grows in the direction of
    # sign(h(0)) (kappa' of relu is increasing), so the conclusion holds in every draw
    single = lemma6_frequency("relu", 1, 1.0, draws=20, seed=1)
    assert single["fraction"] == 1.0 and single["degenerate"] == 0 and single["ratio_quantiles"][0.0] >= 1.0 - 1e-12


def test_m_outside_the_interval():
    with pytest.raises(ValueError, match="m must lie in"):
        population_drift(orthonormal_problem("relu", 2, 1.0), 1.5)
