"""Committee machine population quantities, ODE and fixed points against independent routes: Monte Carlo
(4 standard errors), scipy/mpmath quadrature, finite differences, scipy's solve_ivp and the Saad–Solla
symmetric plateau derived from eps_g alone."""

import math

import mpmath
import numpy as np
import pytest
from scipy import integrate, optimize
from scipy.special import ndtr

from popgrad import activation
from popgrad._validation import InvalidArgument
from popgrad.gaussian.pair_kernels import pair_form, pair_kernel
from popgrad.models.committee import population
from popgrad.models.committee.fixed_points import specialised_solution, symmetric_plateau
from popgrad.models.committee.ode import committee_rhs, integrate_ode, ode_parameters
from popgrad.models.committee.population import Committee, generalisation_error, ode_expectations, population_flow

G = "erf(z/sqrt(2))"
PAIRS = [(G, G), ("erf", "2*erf(-0.5*z)"), ("relu", "relu"), ("relu", "leaky_relu(0.1)"), ("linear", G), ("He_3", "tanh"), ("tanh", "tanh"), ("relu", G), ("relu", "abs(z-0.3)")]
SIGMA = np.array([[1.3, 0.6], [0.6, 0.8]])


def _quadrature_2d(s1, s2, S) -> tuple:
    """E[s1(X) s2(Y)] by nested scipy quad in (g1, g2), split at 0 and the kinks."""
    f1, f2 = activation(s1), activation(s2)
    r1 = math.sqrt(S[0, 0])
    rho = S[0, 1] / math.sqrt(S[0, 0] * S[1, 1])
    co, r2 = math.sqrt(1 - rho * rho), math.sqrt(S[1, 1])

    def inner(g1):
        points = [(k / r2 - rho * g1) / co for k in f2.breakpoints]
        value, _ = integrate.quad(lambda g2: float(f2(np.array([r2 * (rho * g1 + co * g2)]))[0]) * math.exp(-g2 * g2 / 2), -12, 12, points=points or None, epsabs=1e-12, limit=200)
        return value / math.sqrt(2 * math.pi)

    points = [k / r1 for k in f1.breakpoints] + [k / (r2 * rho) for k in f2.breakpoints]
    value, error = integrate.quad(lambda g1: float(f1(np.array([r1 * g1]))[0]) * inner(g1) * math.exp(-g1 * g1 / 2), -12, 12, points=points or None, epsabs=1e-11, limit=200)
    return value / math.sqrt(2 * math.pi), error


def test_erf_over_sqrt2_is_recognised_as_erf():
    form = pair_form(G)
    assert form.kind == "erf" and form.amplitude == 1.0 and abs(form.inner - 1 / math.sqrt(2)) < 1e-15
    assert pair_form("3*erf(-2*z)").amplitude == -3.0 and pair_form("3*erf(-2*z)").inner == 2.0
    assert (pair_form("relu(2*z)").alpha, pair_form("relu(2*z)").beta) == (0.0, 2.0)
    assert pair_form("erf(z) + 1").kind == "general"


@pytest.mark.parametrize("s1, s2", PAIRS)
def test_pair_kernels_against_quadrature_and_monte_carlo(s1, s2):
    k = pair_kernel(s1, s2, SIGMA)
    reference, quad_error = _quadrature_2d(s1, s2, SIGMA)
    assert abs(float(k.value) - reference) <= 1e-9 + 10 * quad_error + float(k.error)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1_000_000, 2)) @ np.linalg.cholesky(SIGMA).T
    sample = activation(s1)(x[:, 0]) * activation(s2)(x[:, 1])
    assert abs(float(k.value) - sample.mean()) <= 4 * sample.std() / math.sqrt(len(sample))


def test_pair_kernel_near_unit_correlation_and_zero_variance():
    S = np.array([[1.0, 0.999999], [0.999999, 1.0]])
    k = pair_kernel("relu", "abs(z-0.3)", S)
    assert k.route == "quadrature"
    # mpmath: |Y - 0.3| = 2 relu(Y - 0.3) - (Y - 0.3), and E[relu(Y - 0.3) | X = x] = co phi(m/co) + m Phi(m/co)
    with mpmath.workdps(30):
        rho = mpmath.mpf("0.999999")
        co, shift = mpmath.sqrt(1 - rho**2), mpmath.mpf("0.3")
        phi = lambda t: mpmath.exp(-t * t / 2) / mpmath.sqrt(2 * mpmath.pi)  # noqa: E731
        inner = lambda x: co * phi((rho * x - shift) / co) + (rho * x - shift) * mpmath.ncdf((rho * x - shift) / co)  # noqa: E731
        c = shift / rho
        J = mpmath.quad(lambda x: x * inner(x) * phi(x), [0, c - 10 * co, c - co, c, c + co, c + 10 * co, mpmath.inf])
        reference = float(2 * J - (rho / 2 - shift / mpmath.sqrt(2 * mpmath.pi)))
    assert abs(float(k.value) - reference) <= 1e-12 + float(k.error)
    zero = pair_kernel("tanh", "relu", np.array([[0.0, 0.0], [0.0, 2.0]]))  # tanh(0) E[relu] = 0
    assert abs(float(zero.value)) < 1e-12
    constant = pair_kernel("cos(z)", "relu", np.array([[0.0, 0.0], [0.0, 2.0]]))  # cos(0) E[relu(sqrt 2 g)]
    assert abs(float(constant.value) - math.sqrt(2) / math.sqrt(2 * math.pi)) < 1e-12
    with pytest.raises(InvalidArgument):
        pair_kernel("relu", "relu", [[1.0, 2.0], [2.0, 1.0]])


def _overlaps(K, M, seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(K + M, K + M)) / math.sqrt(K + M)
    C = A @ A.T + 0.1 * np.eye(K + M)
    return C[:K, :K], C[:K, K:], C[K:, K:]


MODELS = {
    "erf": (G, G, 0.0),
    "erf mixed scales, noise": ("erf", "1.5*erf(0.5*z)", 0.4),
    "relu on erf": ("relu", G, 0.3),
    "abs on tanh": ("abs", "tanh", 0.2),
    "tanh": ("tanh", "tanh", 0.0),
    "linear on He_2 + z": ("linear", "poly(0, 1, 0.5)", 0.2),
}


def _model(name, K=None, M=2, seed=3, convention="saad_solla"):
    student, teacher, noise = MODELS[name]
    if K is None:  # the numeric route costs seconds per state at K = 3
        K = 2 if population.expectation_route(Committee(activation(student), activation(teacher), np.ones(M), np.eye(M))) == "numeric" else 3
    Q, R, T = _overlaps(K, M, seed)
    committee = Committee(activation(student), activation(teacher), np.array([1.0, -0.6])[:M], T, student_scale=0.8, teacher_scale=1.2, noise=noise, convention=convention)
    return committee, Q, R, np.array([0.7, -0.4, 1.1])[:K]


def _network_samples(committee, Q, R, a, d=40, n=1_000_000, seed=11):
    """f*, f and the pre-activations for x ~ N(0, I_d), with student and teacher vectors in dimension d that
    have exactly the overlaps (Q, R, T)."""
    K, M = len(a), committee.M
    gram = np.block([[Q, R], [R.T, committee.T]])
    vectors = np.zeros((K + M, d))
    vectors[:, : K + M] = np.linalg.cholesky(gram)
    rng = np.random.default_rng(seed)
    out = []
    for chunk in range(n // 250_000):
        x = rng.standard_normal((250_000, d))
        u = x @ vectors.T
        lam, nu = u[:, :K], u[:, K:]
        f = committee.student_scale * committee.student_activation(lam) @ a
        f_star = committee.teacher_scale * committee.teacher_activation(nu) @ committee.teacher_second_layer
        noise = committee.noise * rng.standard_normal(250_000)
        out.append((lam, nu, f, f_star, noise))
    return [np.concatenate(parts) for parts in zip(*out)]


@pytest.mark.parametrize("name", ["erf", "erf mixed scales, noise", "relu on erf", "tanh"])
def test_generalisation_error_against_a_network_in_dimension_d(name):
    committee, Q, R, a = _model(name)
    value, error = generalisation_error(committee, Q, R, a, with_error=True)
    _, _, f, f_star, _ = _network_samples(committee, Q, R, a)
    sample = committee.error_factor * (f_star - f) ** 2
    assert abs(float(value) - sample.mean()) <= 4 * sample.std() / math.sqrt(len(sample)) + float(error)
    batch = generalisation_error(committee, np.stack([Q, Q]), np.stack([R, R]), np.stack([a, a]))
    assert batch.shape == (2,) and np.allclose(batch, value, rtol=1e-14)


def _finite_difference_flow(committee, Q, R, a, h=1e-5):
    """-grad eps_g mapped to (Q, R, a): dR = -(2 G R + H T), dQ = -(2 G Q + H R^T) - (...)^T, da = -d eps/da."""
    K, M = R.shape

    def eps(Q_, R_, a_):
        return float(generalisation_error(committee, Q_, R_, a_))

    G, H, A = np.zeros((K, K)), np.zeros((K, M)), np.zeros(K)
    for i in range(K):
        for k in range(i, K):
            E = np.zeros((K, K))
            E[i, k] = E[k, i] = h
            derivative = (eps(Q + E, R, a) - eps(Q - E, R, a)) / (2 * h)
            G[i, k] = G[k, i] = derivative if i == k else derivative / 2
        for n in range(M):
            E = np.zeros((K, M))
            E[i, n] = h
            H[i, n] = (eps(Q, R + E, a) - eps(Q, R - E, a)) / (2 * h)
        e = np.zeros(K)
        e[i] = h
        A[i] = (eps(Q, R, a + e) - eps(Q, R, a - e)) / (2 * h)
    moved = 2 * G @ Q + H @ R.T
    return -(moved + moved.T), -(2 * G @ R + H @ committee.T), -A


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "tanh" else n for n in MODELS])
@pytest.mark.parametrize("convention", ["saad_solla", "popgrad"])
def test_first_order_part_is_the_gradient_flow_of_eps_g(name, convention):
    committee, Q, R, a = _model(name, convention=convention)
    dQ, dR, da = population_flow(committee, Q, R, a)
    fQ, fR, fa = _finite_difference_flow(committee, Q, R, a)
    e = ode_expectations(committee, Q, R, a)
    c = committee.loss_factor
    # finite differences of a function accurate to ~1e-15: error ~ h^2 eps''' + 1e-15 / h ~ 1e-9
    tolerance = 1e-8
    assert np.abs(dR - fR).max() <= tolerance + c * e.error["delta_nu"].max()
    assert np.abs(dQ - fQ).max() <= tolerance + 2 * c * e.error["delta_lambda"].max()
    assert np.abs(da - fa).max() <= tolerance + c * committee.student_scale * e.error["sigma_residual"].max()


@pytest.mark.parametrize("name", ["erf", "erf mixed scales, noise", "relu on erf", "abs on tanh", "linear on He_2 + z"])
def test_second_order_term_against_monte_carlo(name):
    committee, Q, R, a = _model(name)
    e = ode_expectations(committee, Q, R, a)
    lam, nu, f, f_star, noise = _network_samples(committee, Q, R, a)
    Delta = committee.student_scale * a * committee.student_activation.prime(lam) * (f_star + noise - f)[:, None]
    for i in range(len(a)):
        for k in range(len(a)):
            sample = Delta[:, i] * Delta[:, k]
            assert abs(e.delta_delta[i, k] - sample.mean()) <= 4 * sample.std() / math.sqrt(len(sample)) + e.error["delta_delta"][i, k]
        for n in range(committee.M):
            sample = Delta[:, i] * nu[:, n]
            assert abs(e.delta_nu[i, n] - sample.mean()) <= 4 * sample.std() / math.sqrt(len(sample)) + e.error["delta_nu"][i, n]


def _g(x):
    return mpmath.erf(x / mpmath.sqrt(2))


def _g_prime(x):
    return mpmath.sqrt(2 / mpmath.pi) * mpmath.exp(-x * x / 2)


@pytest.mark.slow
def test_erf_i3_against_mpmath_quadrature():
    """E[g'(u1) u2 g(u3)]: u2 replaced by its regression on (u1, u3), then a 2-D mpmath integral."""
    C = np.array([[0.7, 0.3, -0.2], [0.3, 1.1, 0.4], [-0.2, 0.4, 0.9]])
    sub = C[np.ix_([0, 2], [0, 2])]
    beta = np.linalg.solve(sub, C[[0, 2], 1])
    L = np.linalg.cholesky(sub)

    def integrand(z1, z3):
        x1 = L[0, 0] * z1
        x3 = L[1, 0] * z1 + L[1, 1] * z3
        return _g_prime(x1) * (beta[0] * x1 + beta[1] * x3) * _g(x3) * mpmath.exp(-(z1 * z1 + z3 * z3) / 2) / (2 * mpmath.pi)

    with mpmath.workdps(15):
        reference = float(mpmath.quad(integrand, [-10, 0, 10], [-10, 0, 10]))
    c = C[0, 0] + 1
    closed = 2 / math.pi * (C[1, 2] * c - C[0, 1] * C[0, 2]) / (c * math.sqrt(c * (1 + C[2, 2]) - C[0, 2] ** 2))
    assert abs(closed - reference) < 1e-12
    params = population.pack_parameters(Committee(activation(G), activation(G), np.ones(2), C[1:, 1:]), 1)
    nu, dd, se = np.empty((1, 3)), np.empty((1, 1)), np.empty(1)
    population.moments(params, C[:1, :1].copy(), C[:1, 1:].copy(), np.array([1.0]), nu, dd, se)
    # Delta_1 = g'(u1)(g(u2) + g(u3) - g(u1)): the compiled route against the same formula term by term
    terms = [2 / math.pi * (C[1, p] * c - C[0, 1] * C[0, p]) / (c * math.sqrt(c * (1 + C[p, p]) - C[0, p] ** 2)) for p in range(3)]
    assert abs(nu[0, 1] - (terms[1] + terms[2] - terms[0])) < 1e-14


@pytest.mark.slow
def test_erf_i4_against_mpmath_and_gauss_hermite():
    """E[g'(u1) g'(u2) g(u3) g(u4)] by tensor Gauss–Hermite at 40 and 48 nodes (erf is entire: geometric
    convergence) and, for a block where u4 = u3 (a 3-variable integral), by mpmath."""
    C = np.array([[0.6, 0.2, 0.3, -0.1], [0.2, 0.9, 0.1, 0.4], [0.3, 0.1, 1.0, 0.25], [-0.1, 0.4, 0.25, 0.8]])

    def closed(C, a, b, c, d):
        caa, cbb = 1 + C[a, a], 1 + C[b, b]
        l4 = caa * cbb - C[a, b] ** 2
        l0 = l4 * C[c, d] - C[b, c] * C[b, d] * caa - C[a, c] * C[a, d] * cbb + C[a, b] * C[a, c] * C[b, d] + C[a, b] * C[a, d] * C[b, c]
        l1 = l4 * (1 + C[c, c]) - C[b, c] ** 2 * caa - C[a, c] ** 2 * cbb + 2 * C[a, b] * C[a, c] * C[b, c]
        l2 = l4 * (1 + C[d, d]) - C[b, d] ** 2 * caa - C[a, d] ** 2 * cbb + 2 * C[a, b] * C[a, d] * C[b, d]
        return 4 / (math.pi**2 * math.sqrt(l4)) * math.asin(l0 / math.sqrt(l1 * l2))

    from scipy.special import erf

    def gauss_hermite(C, n):
        z, w = np.polynomial.hermite_e.hermegauss(n)
        w = w / math.sqrt(2 * math.pi)
        L = np.linalg.cholesky(C)
        grid = np.stack(np.meshgrid(z, z, z, z, indexing="ij"), -1).reshape(-1, 4)
        weight = np.prod(np.stack(np.meshgrid(w, w, w, w, indexing="ij"), -1).reshape(-1, 4), axis=1)
        x = grid @ L.T
        gp = math.sqrt(2 / math.pi) * np.exp(-x[:, :2] ** 2 / 2)
        return float(np.sum(weight * gp[:, 0] * gp[:, 1] * erf(x[:, 2] / math.sqrt(2)) * erf(x[:, 3] / math.sqrt(2))))

    low, high = gauss_hermite(C, 40), gauss_hermite(C, 48)
    assert abs(low - high) < 1e-13
    assert abs(closed(C, 0, 1, 2, 3) - high) < 1e-12
    # a two-variable block, E[g'(u1)^2 g(u2)^2] (indices 0, 0, 1, 1), by mpmath
    sub = C[:2, :2]
    L = np.linalg.cholesky(sub)

    def integrand(z1, z2):
        x1 = L[0, 0] * z1
        x2 = L[1, 0] * z1 + L[1, 1] * z2
        return _g_prime(x1) ** 2 * _g(x2) ** 2 * mpmath.exp(-(z1 * z1 + z2 * z2) / 2) / (2 * mpmath.pi)

    with mpmath.workdps(15):
        reference = float(mpmath.quad(integrand, [-10, 0, 10], [-10, 0, 10]))
    assert abs(closed(sub, 0, 0, 1, 1) - reference) < 1e-12


def _saad_solla(K=3, convention="saad_solla"):
    g = activation(G)
    return Committee(g, g, np.ones(K), np.eye(K), convention=convention)


def test_ode_against_scipy_solve_ivp_on_the_same_right_hand_side():
    committee, Q, R, a = _model("erf mixed scales, noise")
    committee = Committee(committee.student_activation, committee.teacher_activation, committee.teacher_second_layer, committee.T, 0.8, 1.2, 0.4, "saad_solla", 0.05, 0.1, True)
    times = [0.0, 1.0, 5.0, 20.0]
    ours = integrate_ode(committee, 0.7, times, delta_a=0.3, Q0=Q, R0=R, a0=a, rtol=1e-11, atol=1e-13)
    rhs, params = committee_rhs(), ode_parameters(committee, 3, 0.7, 0.3)

    def f(t, y):
        out = np.empty_like(y)
        rhs(t, np.ascontiguousarray(y), params, out)
        return out

    y0 = np.concatenate([Q.ravel(), R.ravel(), a, [np.trace(Q) + a @ a]])
    reference = integrate.solve_ivp(f, (0, times[-1]), y0, method="DOP853", t_eval=times, rtol=1e-12, atol=1e-14)
    K, M = 3, 2
    assert np.abs(ours.Q.reshape(4, -1) - reference.y[: K * K].T).max() < 1e-8
    assert np.abs(ours.R.reshape(4, -1) - reference.y[K * K: K * K + K * M].T).max() < 1e-8
    assert np.abs(ours.a - reference.y[K * K + K * M: K * K + K * M + K].T).max() < 1e-8
    assert np.all(ours.a[-1] != a)  # the second layer moved


def test_popgrad_convention_is_saad_solla_at_twice_delta():
    times = [0.0, 10.0, 50.0]
    Q0, R0, a0 = np.diag([0.24, 0.25, 0.25]), 0.01 * np.eye(3), np.ones(3)
    ours = integrate_ode(_saad_solla(convention="popgrad"), 0.25, times, Q0=Q0, R0=R0, a0=a0, rtol=1e-11)
    theirs = integrate_ode(_saad_solla(), 0.5, times, Q0=Q0, R0=R0, a0=a0, rtol=1e-11)
    assert np.abs(ours.Q - theirs.Q).max() < 1e-8 and np.allclose(ours.eps_g, 2 * theirs.eps_g, rtol=1e-7)


def test_divergence_is_reported_not_numbers():
    linear = Committee(activation("linear"), activation("linear"), np.ones(2), np.eye(2))
    run = integrate_ode(linear, 5.0, [0.0, 1.0, 100.0], Q0=0.5 * np.eye(2), R0=np.zeros((2, 2)), a0=np.ones(2))
    assert run.diverged and math.isfinite(run.divergence_alpha) and np.isnan(run.eps_g[-1])
    fine = integrate_ode(linear, 0.2, [0.0, 100.0], Q0=0.5 * np.eye(2), R0=np.zeros((2, 2)), a0=np.ones(2))
    assert not fine.diverged and fine.eps_g[-1] < 1e-8


@pytest.mark.parametrize("K", [2, 3])
def test_symmetric_plateau_matches_saad_solla_and_the_integrated_ode(K):
    committee = _saad_solla(K)
    # delta -> 0: the plateau minimises eps_g over students all equal to r sum_n w_n (independent of the
    # ODE code: eps_g's kernels only); r = 1/sqrt(K(2K - 1)), Q = q = 1/(2K - 1)
    res = optimize.minimize_scalar(lambda r: float(generalisation_error(committee, K * r * r * np.ones((K, K)), r * np.ones((K, K)), np.ones(K))), bounds=(0.01, 1), method="bounded", options={"xatol": 1e-12})
    assert abs(res.x - 1 / math.sqrt(K * (2 * K - 1))) < 1e-7
    points = [symmetric_plateau(committee, delta, a=np.ones(K)) for delta in (1e-3, 2e-3)]
    # the fixed point moves linearly in delta: extrapolated to 0 it is the Saad–Solla point
    for value, exact in ((lambda p: p.R[0, 1], res.x), (lambda p: p.Q[0, 0], 1 / (2 * K - 1)), (lambda p: p.Q[0, 1], 1 / (2 * K - 1)), (lambda p: p.eps_g, res.fun)):
        extrapolated = 2 * value(points[0]) - value(points[1])
        assert abs(extrapolated - exact) < 1e-6
    # the integrated ODE from a nearly symmetric start: its flattest point lies on the plateau, and the
    # asymmetry grows at the predicted escape rate
    delta = 0.1
    plateau = symmetric_plateau(committee, delta, a=np.ones(K))
    Q0 = 0.2 * np.eye(K)
    R0 = 0.01 * np.ones((K, K)) + 1e-10 * np.eye(K)
    alphas = np.linspace(0, 3000, 601)
    run = integrate_ode(committee, delta, alphas, Q0=Q0, R0=R0, a0=np.ones(K), rtol=1e-11, atol=1e-14)
    slope = np.abs(np.gradient(run.eps_g, alphas))
    j = np.argmin(slope[20:]) + 20
    assert abs(run.eps_g[j] - plateau.eps_g) < 1e-3 * plateau.eps_g
    # from the plateau nudged off the symmetric subspace, the asymmetry grows at the predicted escape rate
    nudge = np.zeros((K, K))
    nudge[0, 0] = 1e-9
    alphas = np.linspace(0, 8 / plateau.escape_rate, 81)
    off = integrate_ode(committee, delta, alphas, Q0=plateau.Q, R0=plateau.R + nudge, a0=np.ones(K), rtol=1e-12, atol=1e-16)
    asymmetry = np.abs(off.R[:, 0, 0] - off.R[:, 1, 0])
    window = alphas > 5 / plateau.escape_rate  # stable and slow modes of the nudge have faded against e^(5)
    rate = np.polyfit(alphas[window], np.log(asymmetry[window]), 1)[0]
    assert abs(rate - plateau.escape_rate) < 0.01 * plateau.escape_rate
    special = specialised_solution(committee, delta, a=np.ones(K))
    assert special.eps_g < 1e-14 and np.all(special.eigenvalues.real < 0)


# ------------------------------------------------------------------------------------------------
# the piecewise route (piecewise-linear students): closed-form step probabilities, Gauss–Legendre outside
# ------------------------------------------------------------------------------------------------


def test_bivariate_normal_against_scipy():
    from scipy.stats import multivariate_normal

    for h, k, r in [(0.3, -0.2, 0.1), (1.0, 0.5, 0.6), (-0.4, 0.7, 0.95), (0.2, 0.1, -0.97), (0.0, 0.0, 0.5), (-1.0, -1.0, -0.5), (2.5, -3.0, 0.999), (0.4, 0.4, 1.0), (0.4, -0.6, -1.0)]:
        if abs(r) < 1:
            reference = multivariate_normal([0, 0], [[1, r], [r, 1]]).cdf([-h, -k])
        else:  # X = r Y: an interval of one normal
            reference = 1 - ndtr(max(h, k)) if r > 0 else max(0.0, ndtr(-k) - ndtr(h))
        assert abs(population.bivariate_upper(h, k, r) - reference) < 1e-12


PIECEWISE = [("relu", "relu"), ("relu", G), ("abs", "tanh"), ("leaky_relu(0.1)", "abs(z-0.3)")]
_T = np.array([[1.0, 0.3], [0.3, 0.8]])
#: random states and the singular ones an integration meets: the specialised point (student = teacher),
#: a zero start, two identical students, a student at zero beside another, students nearly aligned
DEGENERATE = {
    "specialised": (_T, _T),
    "zero": (np.zeros((2, 2)), np.zeros((2, 2))),
    "identical students": (np.full((2, 2), 0.5), np.full((2, 2), 0.2)),
    "one student at zero": (np.diag([0.0, 0.7]), np.array([[0.0, 0.0], [0.3, 0.2]])),
    "nearly aligned": (_T + 1e-6 * np.eye(2), _T * (1 - 1e-7)),
}


@pytest.mark.parametrize("student, teacher", PIECEWISE)
def test_piecewise_route_error_bounds_a_high_order_reference(student, teacher):
    """The reported error (difference between orders 7 and 10) bounds the distance to order 28 (the rule
    converges geometrically: ~1e-13 there) on random and singular states."""
    committee = Committee(activation(student), activation(teacher), np.array([1.0, 0.5]), _T, noise=0.3)
    assert population.expectation_route(committee) == "piecewise"
    states = dict(DEGENERATE)
    for seed in (1, 2):
        Q, R, _ = _overlaps(2, 2, seed)
        states[f"random {seed}"] = (Q, R)
    for name, (Q, R) in states.items():
        a = np.array([1.0, -0.7])
        e = ode_expectations(committee, Q, R, a)
        reference = ode_expectations(committee, Q, R, a, orders=(28,))
        for key in ("delta_delta", "delta_nu", "delta_lambda", "sigma_residual"):
            distance = np.abs(getattr(e, key) - getattr(reference, key))
            assert np.all(distance <= e.error[key]), (name, key, distance.max(), e.error[key].max())
            assert e.error[key].max() < 1e-6  # and the estimate is small: the route is accurate, not merely honest


def _gaussian_samples(C, n, seed, chunk=1_000_000):
    rng = np.random.default_rng(seed)
    L = np.linalg.cholesky(C + 1e-300 * np.eye(len(C)))
    for _ in range(n // chunk):
        yield rng.standard_normal((chunk, len(C))) @ L.T


@pytest.mark.slow
@pytest.mark.parametrize("student, teacher", PIECEWISE[:3])
def test_piecewise_route_against_ten_million_samples(student, teacher):
    """E[Delta_i Delta_k], E[Delta_i u_n] and E[sigma(lambda_i)(y - f)] against 1e7 Gaussian samples of the
    pre-activations (4 standard errors plus the reported error), K = 3 > M = 2, on two random states."""
    for seed in (5, 6):
        Q, R, T = _overlaps(3, 2, seed)
        committee = Committee(activation(student), activation(teacher), np.array([1.0, -0.6]), T, student_scale=0.8, teacher_scale=1.2, noise=0.3)
        a = np.array([0.7, -0.4, 1.1])
        e = ode_expectations(committee, Q, R, a)
        C = np.block([[Q, R], [R.T, T]])
        sums = {}
        n = 10_000_000
        for u in _gaussian_samples(C, n, seed):
            lam, nu = u[:, :3], u[:, 3:]
            f = committee.student_scale * committee.student_activation(lam) @ a
            f_star = committee.teacher_scale * committee.teacher_activation(nu) @ committee.teacher_second_layer
            noise = committee.noise * np.random.default_rng(seed + 100).standard_normal(len(u))
            Delta = committee.student_scale * a * committee.student_activation.prime(lam) * (f_star + noise - f)[:, None]
            parts = {"dd": Delta[:, :, None] * Delta[:, None, :], "nu": Delta[:, :, None] * u[:, None, :], "se": committee.student_activation(lam) * (f_star - f)[:, None]}
            for key, x in parts.items():
                s1, s2 = sums.get(key, (0.0, 0.0))
                sums[key] = (s1 + x.sum(axis=0), s2 + (x * x).sum(axis=0))
        ours = {"dd": (e.delta_delta, e.error["delta_delta"]), "nu": (np.concatenate([e.delta_lambda, e.delta_nu], -1), np.concatenate([e.error["delta_lambda"], e.error["delta_nu"]], -1)), "se": (e.sigma_residual, e.error["sigma_residual"])}
        for key, (s1, s2) in sums.items():
            mean = s1 / n
            se = np.sqrt((s2 / n - mean * mean) / n)
            value, error = ours[key]
            assert np.all(np.abs(value - mean) <= 4 * se + error), (key, seed)


# ------------------------------------------------------------------------------------------------
# divergence without an arbitrary horizon; explicit initial overlaps validated
# ------------------------------------------------------------------------------------------------

#: Saad–Solla K = M = 3 from the saad-solla reproduction's start: its bisection puts the largest delta that
#: still learns at 1.6226 (learns at 1.62, stalls at a fixed point at 1.63)
LARGEST_LEARNING_DELTA = 1.6226


@pytest.mark.slow
@pytest.mark.parametrize("horizon", [10.0, 100.0, 1000.0])
def test_divergence_beyond_the_largest_learning_delta_at_any_horizon(horizon):
    committee = _saad_solla(3)
    start = dict(Q0=np.diag([0.24, 0.25, 0.25]), R0=0.01 * np.eye(3), a0=np.ones(3))
    below = integrate_ode(committee, 0.8 * LARGEST_LEARNING_DELTA, [0.0, horizon], **start)
    assert not below.diverged and below.divergence == "settled"
    above = integrate_ode(committee, 1.25 * LARGEST_LEARNING_DELTA, [0.0, horizon], **start)
    # erf saturates: tr Q grows like alpha^0.6 and passes 1e3 max(tr T + |a*|^2, ...) only near alpha ~ 5e5
    assert above.diverged and above.divergence == "bound" and above.divergence_alpha > horizon
    assert np.all(np.isfinite(above.eps_g))  # the requested alphas precede the divergence: their values stand
    stalled = integrate_ode(committee, 1.63, [0.0, horizon], **start)  # stuck at a fixed point: not diverged
    assert not stalled.diverged
    unchecked = integrate_ode(committee, 1.25 * LARGEST_LEARNING_DELTA, [0.0, horizon], decide_divergence=False, **start)
    assert not unchecked.diverged and unchecked.divergence == "horizon"


@pytest.mark.parametrize("Q0, R0, a0, parameter", [
    (np.eye(3), np.zeros((2, 2)), np.ones(2), "Q0"),  # Q0 of the wrong size
    (np.eye(2), np.zeros((2, 3)), np.ones(2), "R0"),
    (np.eye(2), np.zeros((2, 2)), np.ones((2, 2)), "a0"),
    ([[1.0, np.nan], [np.nan, 1.0]], np.zeros((2, 2)), np.ones(2), "Q0"),
    (np.eye(2), [[np.inf, 0.0], [0.0, 0.0]], np.ones(2), "R0"),
    (np.eye(2), np.zeros((2, 2)), [1.0, np.nan], "a0"),
    ([[1.0, 0.5], [0.4, 1.0]], np.zeros((2, 2)), np.ones(2), "Q0"),  # not symmetric
    ([[1.0, 2.0], [2.0, 1.0]], np.zeros((2, 2)), np.ones(2), "Q0"),  # not PSD
    (0.25 * np.eye(2), 0.9 * np.eye(2), np.ones(2), "R0"),  # |R| beyond sqrt(Q T): no vectors have these overlaps
])
def test_explicit_initial_overlaps_are_validated(Q0, R0, a0, parameter):
    with pytest.raises(InvalidArgument) as raised:
        integrate_ode(_saad_solla(2), 0.5, [0.0, 1.0], Q0=Q0, R0=R0, a0=a0)
    assert raised.value.parameter == parameter


def test_boundary_initial_overlaps_are_accepted():
    """The specialised point (student = teacher: the joint Gram matrix singular) and a zero start are PSD."""
    T = np.eye(2)
    run = integrate_ode(_saad_solla(2), 0.5, [0.0, 1.0], Q0=T, R0=T, a0=np.ones(2))
    assert not run.diverged and run.eps_g[0] < 1e-15
    # (from an exactly zero start the two students stay identical forever: accepted, integrated to the horizon)
    zero = integrate_ode(_saad_solla(2), 0.5, [0.0, 1.0], Q0=np.zeros((2, 2)), R0=np.zeros((2, 2)), a0=np.ones(2), decide_divergence=False)
    assert np.all(np.isfinite(zero.eps_g)) and not zero.diverged
