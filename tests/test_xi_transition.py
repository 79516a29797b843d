"""The xi transition's rules (open question 3, popgrad.reproductions.transition): the local exponent of T in
d, its level crossing, the old 10x rule, validated on a closed-form model whose transition scales as
d^(1/4) by construction; the drift ratio's drift against Proposition 4's closed-form h."""

import math

import numpy as np
import pytest
from scipy import integrate

from popgrad.reproductions.transition import closed_form_hitting_time, drift_ratio, level_crossing, local_exponent_transition, local_exponents, transition_point, validate_rules


def test_the_transition_point_interpolates_in_log_log():
    # T = 100 xi^4 reaches 10 T(1) at xi = 10^(1/4)
    xis = [1.0, 2.0, 4.0]
    assert transition_point(xis, [100 * x**4 for x in xis]) == pytest.approx(10**0.25)
    assert transition_point(xis, [100.0, 120.0, np.inf]) > 2.0
    assert transition_point(xis, [100.0, 120.0, 130.0]) == np.inf


def test_local_exponents_and_their_level_crossing():
    ds = [10.0, 100.0, 1000.0]
    # T = d^(1 + 0.1 j) in column j: every local exponent of column j is 1 + 0.1 j
    times = np.array([[d ** (1.0 + 0.1 * j) for j in range(6)] for d in ds])
    assert local_exponents(ds, times) == pytest.approx(np.tile(1.0 + 0.1 * np.arange(6), (2, 1)))
    xis = 2.0 ** np.arange(6)
    # 1.25 lies half-way between columns 2 (1.2) and 3 (1.3): xi = 4 * 2^(1/2)
    assert local_exponent_transition(xis, ds, times) == pytest.approx([4.0 * math.sqrt(2.0)] * 2)
    assert math.isnan(level_crossing(xis, [1.3, 1.4], 1.25))  # already above at the grid's start
    assert level_crossing(xis, [1.0, 1.1], 1.25) == math.inf
    assert level_crossing([1.0, 2.0], [1.0, math.inf], 1.25) == pytest.approx(2.0 ** 0.2)  # inf counts as above
    assert level_crossing([1.0, 2.0, 4.0], [1.0, math.nan, 1.5], 1.25) == math.inf  # nan (not run) ends the search


def test_the_closed_form_model_is_its_ode_integrated():
    # T = (d / delta) * int_{m0}^{level} dm / (xi^-2 (a + m^2)), a = (xi_0 / xi)^4, by quadrature
    d, xi, xi_0, delta = 400.0, 9.0, 4.0, 0.05
    a = (xi_0 / xi) ** 4
    for level in (0.5, math.inf):
        value, _ = integrate.quad(lambda m: xi**2 / (a + m * m), d**-0.5, level)
        assert closed_form_hitting_time(d, xi, xi_0=xi_0, delta=delta, level=level) == pytest.approx(d / delta * value, rel=1e-9)


def test_the_local_exponent_rule_recovers_a_quarter_where_the_old_rule_misses_it():
    # the closed-form model's transition scales as d^(1/4) exactly (T / d a function of xi^4 / d times xi^2):
    # the local-exponent rule returns 1/4 (up to the grid's interpolation), the 10x rule about 0
    check = validate_rules([64, 640, 6400], np.geomspace(4.0, 128.0, 11))
    assert check["local"]["exponent"] == pytest.approx(0.25, abs=0.02)
    assert abs(check["old"]["exponent"]) < 0.05
    # the local exponent runs from fine-tuning's 1 to from-scratch's 3/2 across the grid
    ds, xis = np.array([1e3, 1e4]), np.geomspace(0.5, 2000.0, 5)
    exponents = local_exponents(ds, closed_form_hitting_time(ds[:, None], xis[None, :]))[0]
    assert exponents[0] == pytest.approx(1.0, abs=0.01) and exponents[-1] == pytest.approx(1.5, abs=0.01)


def test_the_drift_ratio_drift_is_propositions_four_h():
    # c_hat frozen, u_hat ⟂ W: the state flow's drift of m is h(m) (1 - m^2), h in closed form (Prop. 4)
    from popgrad.models.finetuning import spec
    from popgrad.models.finetuning.model import general_model
    from popgrad.models.finetuning.population import population_drift

    d = 200
    problem = spec.random_features_problem("He_3", 5, 6.0, d=d, c_distribution="sphere", seed=3)
    measured = drift_ratio(general_model(problem), d)
    m = np.array([0.0, d**-0.5, -(d**-0.5)])
    assert measured["drift"] == pytest.approx(population_drift(problem, m) * (1.0 - m**2), rel=1e-8)
    assert measured["ratio"] == pytest.approx(measured["part"] / abs(measured["drift"][0]))


def _he3_drift_by_quadrature(problem, m):
    """h(m) = -dPhi/dm by Gauss-Hermite quadrature of each teacher-student pair's E[He_3 He_3'] term: an
    independent route to the closed form (no kernel series): for unit vectors at cosine rho,
    E[He_3(z) He_3(z')] by 2-D quadrature, differentiated in m by central differences."""
    from numpy.polynomial.hermite_e import hermegauss

    nodes, weights = hermegauss(40)
    weights = weights / weights.sum()

    def kernel(rho):  # E[He_3(x) He_3(rho x + sqrt(1 - rho^2) y)]
        x, y = np.meshgrid(nodes, nodes, indexing="ij")
        z = rho * x + math.sqrt(max(0.0, 1.0 - rho * rho)) * y
        return float(np.sum(np.outer(weights, weights) * (x**3 - 3 * x) * (z**3 - 3 * z)))

    xi, c, c_hat, lam = problem.xi, problem.c, problem.c_hat, problem.lam
    r, r_hat = np.sqrt(1 + (xi * c) ** 2), np.sqrt(1 + (xi * c_hat) ** 2)

    def cross(mm):  # the m-dependent part of Phi: -2 sum_ij lam_i lam_j K(rho_ij(m))
        return -2.0 * sum(lam[i] * lam[j] * kernel(((i == j) + xi**2 * c[i] * c_hat[j] * mm) / (r[i] * r_hat[j])) for i in range(len(c)) for j in range(len(c)))

    step = 1e-4
    return -(cross(m + step) - cross(m - step)) / (2 * step)


@pytest.mark.parametrize("distribution,k,xi,seed", [("quantized", 3, 4.0, 0), ("sphere", 4, 1.5, 2)])
def test_the_he3_drift_is_the_hand_derived_quadratic(distribution, k, xi, seed):
    # h(m) = a + b m + c m^2 (he3_drift_coefficients) against Gauss-Hermite quadrature of the loss,
    # differentiated numerically, and against popgrad's closed form
    from popgrad.models.finetuning import spec
    from popgrad.models.finetuning.population import population_drift
    from popgrad.reproductions.transition import he3_drift_coefficients

    problem = spec.orthonormal_problem("He_3", k, xi, seed=seed, c_distribution=distribution)
    a, b, c = he3_drift_coefficients(problem)
    assert b > 0
    for m in (-0.4, 0.0, 0.3):
        assert a + b * m + c * m * m == pytest.approx(_he3_drift_by_quadrature(problem, m), rel=1e-6, abs=1e-8)
    m = np.linspace(-0.95, 0.95, 9)
    assert a + b * m + c * m**2 == pytest.approx(population_drift(problem, m), rel=1e-10, abs=1e-12)


def test_the_he3_drift_refuses_other_models():
    from popgrad._validation import InvalidArgument
    from popgrad.models.finetuning import spec
    from popgrad.reproductions.transition import he3_drift_coefficients

    with pytest.raises(InvalidArgument, match="He_3"):
        he3_drift_coefficients(spec.orthonormal_problem("relu", 3, 1.0))
    with pytest.raises(InvalidArgument, match="orthonormal"):
        he3_drift_coefficients(spec.random_features_problem("He_3", 3, 1.0, d=50))
    with pytest.raises(InvalidArgument, match="normalized"):
        he3_drift_coefficients(spec.orthonormal_problem("He_3", 3, 1.0, convention="common"))


def test_the_regime_points_are_the_quantized_closed_forms():
    # quantized c, lam = 1: xi_1 = sqrt(|sum sign(c c_hat)| / 2) d^(1/4), xi_2 = k sqrt(2 / |S S_hat|) d^(1/4)
    from popgrad.reproductions.transition import regime_points

    generator = np.random.default_rng(5)
    ds = np.array([1e2, 1e4, 1e6])
    for k in (3, 7, 21):
        c, c_hat = (generator.choice([-1.0, 1.0], size=k) / math.sqrt(k) for _ in range(2))
        points = regime_points(c, c_hat, np.ones(k), ds)
        sigma, S, S_hat = np.sum(np.sign(c * c_hat)), np.sum(np.sign(c)), np.sum(np.sign(c_hat))
        assert points["xi_1"] == pytest.approx(math.sqrt(abs(sigma) / 2) * ds**0.25, rel=1e-9)
        assert points["xi_2"] == pytest.approx(k * math.sqrt(2 / abs(S * S_hat)) * ds**0.25, rel=1e-9)
    # no He_3 term (S = 0): the from-scratch law never begins
    c = np.array([1.0, -1.0, 1.0, -1.0]) / 2
    assert np.all(np.isinf(regime_points(c, c, np.ones(4), ds)["xi_2"]))


def test_the_escape_time_is_the_flow_integrated_by_adaptive_quadrature():
    # tau = int_{d^-1/2}^{level} dm / (g(m) (1 - m^2)), g = sign(c) a + b m + |c| m^2, against scipy's quad
    from popgrad.reproductions.transition import escape_flow_time

    generator = np.random.default_rng(3)
    for _ in range(6):
        b, c = generator.uniform(0.1, 50.0), generator.choice([-1.0, 1.0]) * generator.uniform(1.0, 500.0)
        a = math.copysign(generator.uniform(0.0, 5.0), c)
        for d in (50.0, 1e4, 1e8):
            g = lambda m: math.copysign(1.0, c) * a + b * m + abs(c) * m * m  # noqa: E731
            reference = integrate.quad(lambda m: 1.0 / (g(m) * (1.0 - m * m)), d**-0.5, 0.5, epsabs=0.0, epsrel=1e-12, limit=500)[0]
            assert escape_flow_time(a, b, c, d) == pytest.approx(reference, rel=1e-10)
    # a fine-tuning drift against the escape, larger than the start's self-alignment: the flow stops on the way
    assert escape_flow_time(-1.0, 2.0, 3.0, 1e4) == math.inf
    # arrays broadcast with d
    assert escape_flow_time([0.1, 0.2], 1.0, 5.0, np.array([[1e2], [1e4]])).shape == (2, 2)


def test_the_escape_instances_have_drifts_of_one_sign_at_every_xi():
    from popgrad._validation import InvalidArgument
    from popgrad.models.finetuning import spec
    from popgrad.reproductions.transition import escape_instances, he3_drift_coefficients

    seeds = escape_instances(7, 6)
    assert len(seeds) == 6 and seeds == sorted(seeds)
    for seed in range(max(seeds) + 1):
        signs = set()
        for xi in (0.5, 4.0, 40.0):
            a, _, c = he3_drift_coefficients(spec.orthonormal_problem("He_3", 7, xi, seed=seed, c_distribution="quantized"))
            signs.add(bool(a * c > 0))
        assert len(signs) == 1  # the agreement does not depend on xi
        assert signs.pop() == (seed in seeds)
    with pytest.raises(InvalidArgument, match="odd"):
        escape_instances(4, 2)


def test_the_escape_sgd_cell_is_reproducible_and_follows_the_flow_at_a_small_step():
    # SGD on the exact chain from sign(c) d^-1/2: the same arguments give the same steps, and at a small
    # step (kappa = 0.01) the mean hitting step lies within 3 standard errors of the flow's prediction, plus
    # kappa / 2 of it (the bound escape_sgd_cell's step puts on the normalisation's pull against the drift)
    from popgrad.reproductions.transition import escape_sgd_cell

    first = escape_sgd_cell(5, 2, 3.0, 200, 0.25, 4)
    again = escape_sgd_cell(5, 2, 3.0, 200, 0.25, 4)
    assert np.array_equal(first["hits"], again["hits"]) and first["delta"] == again["delta"]
    assert first["horizon"] == math.ceil(10.0 * first["flow_steps"])
    small = escape_sgd_cell(5, 2, 3.0, 200, 0.01, 32)
    hits = small["hits"]
    assert np.all(np.isfinite(hits))
    error = hits.std(ddof=1) / math.sqrt(hits.size)
    assert abs(hits.mean() - small["flow_steps"]) < 3 * error + 0.005 * small["flow_steps"]


def test_the_he3_noise_variance_is_the_tensor_quadrature_of_a_squared():
    # V(m) = E[A^2], A = 2 (f* - f_hat) sum_j t_hat_j He_3'(z_hat_j), by brute-force 5-D Gauss-Hermite
    # quadrature over (x_1, x_2, x_3, <u, x>, q) for k = 3, against the neuron-by-neuron moment recursion;
    # and popgrad's Monte Carlo V (noise_estimate: the chain's own gradient coefficient) at 1e6 samples
    from popgrad.models.finetuning import spec
    from popgrad.models.finetuning.noise import noise_estimate
    from popgrad.reproductions.transition import he3_noise_variance

    problem = spec.orthonormal_problem("He_3", 3, 2.5, seed=1)
    c, c_hat, xi = problem.c, problem.c_hat, problem.xi
    r, r_hat = np.sqrt(1 + (xi * c) ** 2), np.sqrt(1 + (xi * c_hat) ** 2)
    points, weights = np.polynomial.hermite_e.hermegauss(7)
    weights = weights / math.sqrt(2 * math.pi)
    grids = np.meshgrid(*[points] * 5, indexing="ij")
    weight = np.ones_like(grids[0])
    for axis in range(5):
        shape = [1] * 5
        shape[axis] = -1
        weight = weight * weights.reshape(shape)
    x, g, q = grids[:3], grids[3], grids[4]
    for m in (0.0, 0.3, -0.7):
        g_hat = m * g + math.sqrt(1 - m * m) * q
        z = [(x[i] + xi * c[i] * g) / r[i] for i in range(3)]
        z_hat = [(x[i] + xi * c_hat[i] * g_hat) / r_hat[i] for i in range(3)]
        residual = sum(z[i] ** 3 - 3 * z[i] - z_hat[i] ** 3 + 3 * z_hat[i] for i in range(3))
        A = 2 * residual * sum(xi * c_hat[i] / r_hat[i] * (3 * z_hat[i] ** 2 - 3) for i in range(3))
        assert he3_noise_variance(problem, [m])[0] == pytest.approx(float(np.sum(weight * A * A)), rel=1e-10)
    noise = noise_estimate(problem, 100, samples=1_000_000, seed=4)
    # A^2 is a degree-10 polynomial: heavy-tailed, so the Monte Carlo mean is checked to 3 % only
    assert noise.V_values == pytest.approx(he3_noise_variance(problem, noise.nodes), rel=0.03)
    with pytest.raises(ValueError, match="m must lie"):
        he3_noise_variance(problem, [1.5])
