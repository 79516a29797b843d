"""LoRA in the NTK regime (Jang, Lee, Ryu; MATH.md §7): derivatives against finite differences, the convex
reference against an independent solver (cvxpy with Clarabel, an interior-point method), the network Jacobian
against the network itself, the L-BFGS against scipy's, and the paper's claims (checks 1-6 of issue 12)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from popgrad.models.ntk_lora.convex import ntk_convex_optimum, ntk_dual_value
from popgrad.models.ntk_lora.examples import ntk_spurious_example, verify_spurious_exactly
from popgrad.models.ntk_lora.landscape import ntk_balance, ntk_certificate, ntk_gradient, ntk_hessian, ntk_hvp, ntk_loss_gradient, ntk_objective
from popgrad.models.ntk_lora.optimise import ntk_gradient_descent, ntk_gradient_flow, ntk_initial_points, ntk_lbfgs
from popgrad.models.ntk_lora.study import ntk_landscape, ntk_threshold_study
from popgrad.models.ntk_lora.spec import gaussian_ntk_problem, load_ntk_problem, network_ntk_problem, ntk_problem

PROBLEMS = {
    "squared": lambda: gaussian_ntk_problem(5, 4, data=3, outputs=2, weight_decay=0.05, seed=3),
    "cross_entropy_K2": lambda: gaussian_ntk_problem(4, 5, data=3, outputs=2, weight_decay=0.05, loss="cross_entropy", seed=4),
    "cross_entropy_K1": lambda: gaussian_ntk_problem(4, 4, data=4, outputs=1, weight_decay=0.05, loss="cross_entropy", seed=5),
    "network_squared": lambda: network_ntk_problem(5, 4, data=3, outputs=2, weight_decay=0.05, seed=6),
}


def _point(problem, rank, seed):
    generator = np.random.default_rng(seed)
    m, n = problem.shape
    return generator.standard_normal((m, rank)), generator.standard_normal((rank, n))


def _direct_objective(problem, B, A):
    """The objective written independently of the kernels (numpy, log-sum-exp from scipy)."""
    from scipy.special import logsumexp

    z = problem.offsets + np.einsum("jmn,mn->j", problem.measurements, B @ A)
    N, K, y = problem.data, problem.outputs, problem.targets
    if problem.loss == "squared":
        loss = np.sum((z - y) ** 2) / (2 * N)
    elif K == 1:
        loss = np.sum(np.logaddexp(0.0, z) - y * z) / N
    else:
        zz, yy = z.reshape(N, K), y.reshape(N, K)
        loss = np.sum(logsumexp(zz, axis=1) - np.sum(yy * zz, axis=1)) / N
    return loss + problem.weight_decay / 2 * (np.sum(A**2) + np.sum(B**2))


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_objective_matches_an_independent_formula(name):
    problem = PROBLEMS[name]()
    B, A = _point(problem, 2, 0)
    assert ntk_objective(problem, B, A) == pytest.approx(_direct_objective(problem, B, A), rel=1e-13)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_gradient_matches_central_differences(name):
    problem = PROBLEMS[name]()
    B, A = _point(problem, 2, 1)
    gB, gA = ntk_gradient(problem, B, A)
    h = 1e-6
    for array, grad in ((B, gB), (A, gA)):
        numeric = np.empty_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + h
            up = _direct_objective(problem, B, A)
            array[index] = saved - h
            down = _direct_objective(problem, B, A)
            array[index] = saved
            numeric[index] = (up - down) / (2 * h)
        # central differences: error O(h^2 F''') + O(eps F / h) ~ 1e-9
        np.testing.assert_allclose(grad, numeric, atol=1e-7 * max(1.0, np.max(np.abs(numeric))))


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_hessian_vector_products_match_differences_of_the_gradient(name):
    problem = PROBLEMS[name]()
    B, A = _point(problem, 3, 2)
    generator = np.random.default_rng(9)
    dB, dA = generator.standard_normal(B.shape), generator.standard_normal(A.shape)
    h = 1e-5
    up = ntk_gradient(problem, B + h * dB, A + h * dA)
    down = ntk_gradient(problem, B - h * dB, A - h * dA)
    hB, hA = ntk_hvp(problem, B, A, dB, dA)
    np.testing.assert_allclose(hB, (up[0] - down[0]) / (2 * h), atol=1e-6 * max(1.0, np.max(np.abs(hB))))
    np.testing.assert_allclose(hA, (up[1] - down[1]) / (2 * h), atol=1e-6 * max(1.0, np.max(np.abs(hA))))
    H = ntk_hessian(problem, B, A)
    np.testing.assert_allclose(H @ np.concatenate([dB.ravel(), dA.ravel()]), np.concatenate([hB.ravel(), hA.ravel()]), rtol=1e-10, atol=1e-10)


def test_network_jacobian_is_the_derivative_of_the_network():
    problem = network_ntk_problem(6, 5, data=4, outputs=3, tokens=3, activation="softplus", seed=2)
    generator = np.random.default_rng(0)
    direction = generator.standard_normal(problem.shape)
    # the offsets are the network at W_0; the measurements its derivative along any direction
    np.testing.assert_allclose(problem.offsets, problem.network_outputs(np.zeros(problem.shape)), rtol=1e-14)
    h = 1e-5
    derivative = (problem.network_outputs(h * direction) - problem.network_outputs(-h * direction)) / (2 * h)
    np.testing.assert_allclose(problem.measure(direction) - problem.offsets, derivative, rtol=1e-7, atol=1e-9)
    # the linearisation error is second order: halving the step quarters it
    errors = [np.max(np.abs(problem.network_outputs(e * direction) - problem.measure(e * direction))) for e in (1e-2, 5e-3)]
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.05)


def _cvxpy_optimum(problem):
    cp = pytest.importorskip("cvxpy")
    m, n = problem.shape
    X = cp.Variable((m, n))
    z = problem.offsets + cp.hstack([cp.sum(cp.multiply(G, X)) for G in problem.measurements])
    N, K, y = problem.data, problem.outputs, problem.targets
    if problem.loss == "squared":
        loss = cp.sum_squares(z - y) / (2 * N)
    elif K == 1:
        loss = cp.sum(cp.logistic(z) - cp.multiply(y, z)) / N
    else:
        loss = sum(cp.log_sum_exp(z[i * K : (i + 1) * K]) - y[i * K : (i + 1) * K] @ z[i * K : (i + 1) * K] for i in range(N)) / N
    value = cp.Problem(cp.Minimize(loss + problem.weight_decay * cp.normNuc(X))).solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return value, X.value


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_convex_optimum_agrees_with_an_interior_point_solver(name):
    problem = PROBLEMS[name]()
    solution = ntk_convex_optimum(problem)
    reference, X = _cvxpy_optimum(problem)
    assert solution.converged and 0 <= solution.gap < 1e-10
    assert abs(solution.value - reference) <= 1e-6
    # the certified interval [value - gap, value] holds the independent optimum (up to its own accuracy)
    assert solution.value - solution.gap - 1e-8 <= reference <= solution.value + 1e-8
    assert solution.certificate <= 1 + 1e-6
    np.testing.assert_allclose(solution.delta, X, atol=1e-4)


def test_dual_values_are_lower_bounds():
    problem = PROBLEMS["cross_entropy_K2"]()
    optimum = ntk_convex_optimum(problem).value
    generator = np.random.default_rng(1)
    for _ in range(20):
        B, A = _point(problem, 2, int(generator.integers(1000)))
        value, S = ntk_loss_gradient(problem, 0.1 * B @ A)
        z = problem.measure(0.1 * B @ A)
        p = np.exp(z.reshape(-1, 2) - z.reshape(-1, 2).max(axis=1, keepdims=True))
        w = ((p / p.sum(axis=1, keepdims=True)).ravel() - problem.targets) / problem.data
        w *= min(1.0, problem.weight_decay / np.linalg.norm(S, 2))
        assert ntk_dual_value(problem, w) <= optimum + 1e-12


def test_check1_convex_optimum_has_low_rank():
    """Theorem 3.1: a minimiser of rank r* with r*(r*+1)/2 <= KN (the nuclear-norm minimiser is generically
    unique, so APG finds it)."""
    for m, n, data in ((8, 8, 3), (8, 8, 6), (8, 8, 10), (6, 10, 15), (12, 12, 10)):
        for seed in range(3):
            solution = ntk_convex_optimum(gaussian_ntk_problem(m, n, data=data, seed=seed))
            assert solution.converged
            assert solution.rank * (solution.rank + 1) // 2 <= data, (m, n, data, seed, solution.singular_values)


def test_check2_no_spurious_limits_above_the_threshold():
    for seed in range(3):
        problem = gaussian_ntk_problem(8, 8, data=6, seed=seed)
        for rank in (4, 5):
            study = ntk_landscape(problem, rank, starts=20, seed=seed)
            assert np.all(study.runs.status == 0)
            assert study.spurious_runs == 0
            assert np.all(study.certificates <= 1 + 1e-6)
            assert np.all(study.balances < 1e-6)
            assert all(limit["global"] and limit["min_hessian_eigenvalue"] > -1e-8 for limit in study.limits)


def test_check3_explicit_spurious_minimum_verified_exactly():
    example = ntk_spurious_example()
    assert example.verified
    assert example.exact["gradient"] == ["0", "0", "0", "0"]
    assert example.exact["positive_definite"] and example.exact["rho_above_one"]
    assert example.value > example.convex_value + 1e-3
    problem = example.problem
    assert (problem.shape, problem.outputs, problem.data) == ((2, 2), 1, 2)
    # the floating-point instance: the point is stationary to round-off, and L-BFGS from many starts lands there
    gB, gA = ntk_gradient(problem, example.b[:, None], example.a[None, :])
    assert max(np.max(np.abs(gB)), np.max(np.abs(gA))) < 1e-12
    study = ntk_landscape(problem, 1, starts=60, seed=0)
    assert any(abs(limit["value"] - example.value) < 1e-9 and not limit["global"] and limit["certificate"] > 1 and limit["min_hessian_eigenvalue"] > 0 for limit in study.limits)
    assert any(limit["global"] for limit in study.limits)
    # with r = 2 (3 > KN = 2) every run is global
    assert ntk_landscape(problem, 2, starts=60, seed=0).spurious_runs == 0


def test_exact_verifier_rejects_a_non_stationary_point():
    report = verify_spurious_exactly([[[1, 0], [0, 0]], [[0, 0], [0, 1]]], [2, 1], 0.125, [1, 0], [1, 1])
    assert not report["stationary"] and not report["verified"]


def test_check4_threshold_study_counts_limits():
    rows = ntk_threshold_study(lambda s: gaussian_ntk_problem(2, 2, data=2, seed=s), 6, [1, 2], starts=20)
    below, above = rows
    assert not below["above_threshold"] and above["above_threshold"]
    assert above["spurious_runs"] == 0 and above["best_is_global"] == 6
    # the bound on the convex optimum's rank (KN = 2: rank 1) makes rank-1 LoRA able to reach it: the best run does
    assert below["best_is_global"] == 6
    # ... so every non-global run sits above the best rank-1 value: a spurious minimum of the rank-1 problem
    assert below["runs_above_best"] == below["spurious_runs"] and above["runs_above_best"] == 0
    assert below["min_certificate_spurious"] is None or below["min_certificate_spurious"] > 1 + 1e-6
    assert below["max_certificate_global"] <= 1 + 1e-6


def test_check5_weight_decay_balances_the_factors_along_gradient_flow():
    problem = gaussian_ntk_problem(4, 3, data=3, weight_decay=0.1, seed=1)
    B0, A0 = _point(problem, 2, 4)
    times = np.linspace(0.0, 5.0, 6)
    Bt, At = ntk_gradient_flow(problem, B0, A0, times)
    D0 = B0.T @ B0 - A0 @ A0.T
    for t, B, A in zip(times, Bt, At):
        # d/dt (B^T B - A A^T) = -2 lambda (B^T B - A A^T): exact, so the only error is the integrator's
        np.testing.assert_allclose(B.T @ B - A @ A.T, math.exp(-2 * 0.1 * t) * D0, atol=1e-8)
    Bt, At = ntk_gradient_flow(problem, B0, A0, times, weight_decay=0.0)
    for B, A in zip(Bt, At):
        np.testing.assert_allclose(B.T @ B - A @ A.T, D0, atol=1e-8)
    # gradient descent: the same decay up to O(lr) per unit time; the slope of log-imbalance is -2 lambda
    runs = ntk_gradient_descent(problem, 2, starts=3, steps=2000, lr=2.5e-3, records=10, seed=2)
    t = runs.record_steps * 2.5e-3
    for record in runs.records:
        slope = np.polyfit(t, np.log(record[:, 2]), 1)[0]
        assert slope == pytest.approx(-0.2, rel=1e-2)
    runs = ntk_gradient_descent(problem, 2, starts=3, steps=2000, lr=1e-3, records=10, seed=2, weight_decay=0.0)
    drift = np.abs(runs.records[:, -1, 2] / runs.records[:, 0, 2] - 1)
    assert np.all(drift < 0.05)


def test_check6_cross_entropy_above_the_threshold():
    for seed in range(3):
        problem = gaussian_ntk_problem(4, 4, data=3, outputs=2, weight_decay=0.05, loss="cross_entropy", seed=seed)
        study = ntk_landscape(problem, 4, starts=30, seed=seed)
        assert study.spurious_runs == 0 and np.all(study.certificates <= 1 + 1e-6)
    network = network_ntk_problem(6, 6, data=4, outputs=2, weight_decay=0.02, loss="cross_entropy", change_scale=3.0, seed=1)
    study = ntk_landscape(network, network.threshold_rank, starts=30, seed=1)
    assert study.spurious_runs == 0


def test_certificate_is_equivalent_to_reaching_the_convex_optimum():
    """JLR-6: at limits, rho <= 1 iff F = F*; below the threshold (8 x 8, KN = 6, r = 1) both kinds occur."""
    seen = set()
    for seed in range(4):
        study = ntk_landscape(gaussian_ntk_problem(6, 6, data=4, seed=seed), 1, starts=20, seed=seed)
        for rho, is_global in zip(study.certificates, study.is_global):
            assert (rho <= 1 + 1e-6) == bool(is_global)
            seen.add(bool(is_global))
    assert seen == {True, False}


def test_lbfgs_agrees_with_scipy_from_the_same_starts():
    from scipy.optimize import minimize

    problem = gaussian_ntk_problem(6, 5, data=4, seed=7)
    rank = 2
    B, A = ntk_initial_points(problem, rank, starts=8, seed=3)
    runs = ntk_lbfgs(problem, rank, points=(B, A))
    m, n = problem.shape

    def fun(x):
        b, a = x[: m * rank].reshape(m, rank), x[m * rank :].reshape(rank, n)
        gb, ga = ntk_gradient(problem, b, a)
        return _direct_objective(problem, b, a), np.concatenate([gb.ravel(), ga.ravel()])

    for j in range(8):
        result = minimize(fun, np.concatenate([B[j].ravel(), A[j].ravel()]), jac=True, method="L-BFGS-B", options={"gtol": 1e-11, "ftol": 1e-15, "maxiter": 10_000})
        # both reach a stationary point; the limit sets agree (the starts may fall into different basins)
        assert min(abs(result.fun - v) for v in runs.values) < 1e-9


def test_same_seed_same_numbers_regardless_of_threads():
    import numba

    problem = gaussian_ntk_problem(5, 5, data=4, seed=2)
    first = ntk_lbfgs(problem, 2, starts=6, seed=11)
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        second = ntk_lbfgs(problem, 2, starts=6, seed=11)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(first.values, second.values)
    # batching: starts 3..5 alone equal the last three of the six
    B, A = ntk_initial_points(problem, 2, starts=6, seed=11)
    part = ntk_lbfgs(problem, 2, points=(B[3:], A[3:]))
    np.testing.assert_array_equal(part.values, first.values[3:])


def test_balance_and_certificate_helpers():
    assert ntk_balance(np.array([[3.0], [4.0]]), np.array([[0.0, 5.0]])) == 0.0
    problem = ntk_problem([[[1.0, 0.0], [0.0, 0.0]]], [2.0], weight_decay=0.5)
    assert ntk_certificate(problem, np.zeros((2, 1)), np.zeros((1, 2))) == pytest.approx(4.0)


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        (dict(measurements=np.zeros((2, 2)), targets=[1.0, 2.0], weight_decay=0.1), "3-dimensional"),
        (dict(measurements=np.zeros((2, 2, 2)), targets=[1.0], weight_decay=0.1), "targets must hold one number per measurement"),
        (dict(measurements=np.zeros((2, 2, 2)), targets=[1.0, 2.0], weight_decay=0.0), "weight_decay must lie in (0"),
        (dict(measurements=np.zeros((2, 2, 2)), targets=[1.0, 2.0], weight_decay=-1.0), "weight_decay"),
        (dict(measurements=np.full((2, 2, 2), np.nan), targets=[1.0, 2.0], weight_decay=0.1), "measurements must be finite"),
        (dict(measurements=np.zeros((2, 2, 2)), targets=[1.0, np.nan], weight_decay=0.1), "targets must be finite"),
        (dict(measurements=np.zeros((3, 2, 2)), targets=[1.0, 0.0, 1.0], weight_decay=0.1, outputs=2), "must divide"),
        (dict(measurements=np.zeros((2, 2, 2)), targets=[0.5, 0.2], weight_decay=0.1, loss="cross_entropy", outputs=2), "sum to 1"),
        (dict(measurements=np.zeros((2, 2, 2)), targets=[1.0, 2.0], weight_decay=0.1, loss="cross_entropy"), "probabilities"),
        (dict(measurements=np.zeros((2, 2, 2)), targets=[1.0, 2.0], weight_decay=0.1, loss="hinge"), "loss must be one of"),
    ],
)
def test_bad_problems_are_refused_with_the_parameter_named(arguments, fragment):
    with pytest.raises(ValueError, match=None) as info:
        ntk_problem(**arguments)
    assert fragment in str(info.value)


def test_bad_ranks_and_factors_are_refused():
    problem = gaussian_ntk_problem(3, 3, data=2)
    with pytest.raises(ValueError, match="rank"):
        ntk_lbfgs(problem, 0)
    with pytest.raises(ValueError, match="B must be m x r"):
        ntk_objective(problem, np.zeros((2, 1)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="starts"):
        ntk_initial_points(problem, 1, starts=0)


def test_problem_file_round_trip(tmp_path):
    problem = network_ntk_problem(4, 3, data=2, outputs=2, loss="cross_entropy", seed=1)
    path = tmp_path / "problem.json"
    problem.save(path)
    loaded = load_ntk_problem(path)
    np.testing.assert_array_equal(loaded.measurements, problem.measurements)
    np.testing.assert_array_equal(loaded.targets, problem.targets)
    assert (loaded.loss, loaded.outputs, loaded.weight_decay) == (problem.loss, problem.outputs, problem.weight_decay)
    delta = np.full(problem.shape, 0.01)
    np.testing.assert_allclose(loaded.network_outputs(delta), problem.network_outputs(delta))


def _cli(*arguments, cwd=None):
    return subprocess.run([sys.executable, "-m", "popgrad", *arguments], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_landscape_json_contract(tmp_path):
    path = tmp_path / "problem.json"
    data = {"measurements": np.random.default_rng(0).standard_normal((6, 8, 8)).tolist(), "targets": np.random.default_rng(1).standard_normal(6).tolist(), "weight_decay": 0.01, "loss": "squared"}
    path.write_text(json.dumps(data))
    result = _cli("ntk", "landscape", str(path), "--rank", "4", "--starts", "10", "--seed", "3", "--format", "json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert isinstance(payload["convex_optimum"], float)
    assert payload["limits"] and set(payload["limits"][0]) >= {"value", "count", "certificate", "min_hessian_eigenvalue", "global"}
    assert sum(limit["count"] for limit in payload["limits"]) == 10
    assert all(limit["global"] for limit in payload["limits"])
    text = _cli("ntk", "landscape", str(path), "--rank", "1", "--starts", "5")
    assert text.returncode == 0 and "convex optimum" in text.stdout


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"weight_decay": 0}, "weight_decay must lie in (0"),
        ({"weight_decay": -0.5}, "weight_decay"),
        ({"targets": [1.0, 2.0, 3.0]}, "targets must hold one number per measurement"),
        ({"measurements": [[[1.0, 2.0]], [[1.0]]]}, "same shape"),
        ({"measurements": [[[1.0, "NaN"]], [[1.0, 2.0]]]}, ""),
        ({"loss": "hinge"}, "loss must be one of"),
        ({"extra": 1}, "unknown keys"),
    ],
)
def test_cli_bad_problem_files_exit_2_in_one_line(tmp_path, change, fragment):
    data = {"measurements": [[[1.0, 2.0]], [[3.0, 4.0]]], "targets": [1.0, 0.0, 2.0][:2], "weight_decay": 0.1, "loss": "squared"}
    data.update(change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data).replace('"NaN"', "NaN"))
    result = _cli("ntk", "landscape", str(path), "--rank", "1")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert fragment in result.stderr


def test_cli_bad_flags_exit_2(tmp_path):
    path = tmp_path / "problem.json"
    gaussian_ntk_problem(3, 3, data=2).save(path)
    for arguments in (["--rank", "0"], ["--rank", "-1"], ["--rank", "1", "--starts", "0"], ["--rank", "1", "--scale", "nan"], []):
        result = _cli("ntk", "landscape", str(path), *arguments)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, (arguments, result.stderr)
    result = _cli("ntk", "build", "--weight-decay", "0", "--out", str(tmp_path / "x.json"))
    assert result.returncode == 2


def test_cli_build_threshold_and_example(tmp_path):
    out = tmp_path / "net.json"
    assert _cli("ntk", "build", "--kind", "network", "--m", "4", "--n", "4", "--data", "3", "--outputs", "2", "--loss", "cross_entropy", "--out", str(out)).returncode == 0
    assert load_ntk_problem(out).network is not None
    plot = tmp_path / "threshold.png"
    result = _cli("ntk", "threshold", "--m", "2", "--n", "2", "--data", "2", "--ranks", "1,2", "--instances", "3", "--starts", "10", "--plot", str(plot), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [row["rank"] for row in rows] == [1, 2] and rows[1]["spurious_runs"] == 0
    assert plot.stat().st_size > 0
    result = _cli("ntk", "example", "--format", "json")
    assert result.returncode == 0 and json.loads(result.stdout)["verified"] is True


def test_gradient_descent_landscape_converges_and_divergence_is_reported():
    problem = gaussian_ntk_problem(4, 4, data=3, weight_decay=0.05, seed=2)
    study = ntk_landscape(problem, 3, starts=4, seed=0, method="gd", steps=200_000, lr=2e-2)
    assert np.all(study.runs.status == 0) and study.spurious_runs == 0
    assert all(limit["global"] and limit["converged"] == limit["count"] for limit in study.limits)
    diverged = ntk_landscape(problem, 3, starts=3, seed=0, method="gd", steps=1000, lr=10.0)
    assert np.all(diverged.runs.status == 3) and diverged.limits == [] and diverged.spurious_runs == 0
    assert diverged.to_dict()["runs"]["diverged"] == 3


def test_exact_verifier_on_a_3x3_saddle():
    # diagonal measurements e1 e1^T, e2 e2^T (3 x 3), y = (6/5, 1), lambda = 1/10: b = a = e1 is stationary
    # (s^2 = y_1 - N lambda = 1); S = diag(-1/10, -1/2, 0), so rho = 5 > 1; the (b_2, a_2) block of the Hessian is
    # [[lambda, -1/2], [-1/2, lambda]]: indefinite, a saddle, not a minimum
    from fractions import Fraction as Q

    e1 = [[1, 0, 0], [0, 0, 0], [0, 0, 0]]
    e2 = [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
    report = verify_spurious_exactly([e1, e2], [Q(6, 5), 1], Q(1, 10), [1, 0, 0], [1, 0, 0])
    assert report["stationary"] and report["rho_above_one"] and not report["positive_definite"] and not report["verified"]
    assert report["rho_squared"] == pytest.approx(25.0)
