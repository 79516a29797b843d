"""LoRA in matrix factorization (Xu et al., AISTATS 2025; MATH.md §6): the gradient against finite
differences, conservation along gradient flow, GD against GF, Claim 3.1's closed form against the integrator
(and sympy), Theorem 4.1's scalar flows against the matrix flow (and sympy), Appendix G.1's stationary
initialisation, Figure 1's orders of magnitude, reproducibility, and bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from popgrad.models.matrix_factorization.flow import MFState, mf_gradient as gradient, mf_initial_states, mf_loss as loss, mf_gradient_descent, mf_gradient_flow
from popgrad.models.matrix_factorization.spec import load_mf_problem, mf_problem, paper_mf_problem
from popgrad.models.matrix_factorization import theory


def _random_state(problem, seed, scale=0.3):
    generator = np.random.default_rng(seed)
    m, n, h = problem.shape
    r = problem.rank
    return MFState(*(scale * generator.standard_normal((1, *shape)) for shape in ((r, n), (h, r), (r, h), (m, r))))


@pytest.mark.parametrize("shape, rank, seed", [((10, 10, 100), 4, 0), ((3, 5, 7), 2, 1), ((6, 4, 4), 1, 2), ((2, 9, 12), 2, 3)])
def test_the_gradient_is_the_central_difference_of_the_loss(shape, rank, seed):
    m, n, h = shape
    problem = paper_mf_problem(m, n, h, rank, s=2.0, beta=1.3, seed=seed)
    state = _random_state(problem, seed)
    analytic = gradient(problem, state)
    step = 1e-6
    for which, name in enumerate(("A1", "B1", "A2", "B2")):
        array = getattr(state, name)
        estimate = np.empty(array.shape[1:])
        for index in np.ndindex(*array.shape[1:]):
            array[(0, *index)] += step
            up = loss(problem, state)[0]
            array[(0, *index)] -= 2 * step
            down = loss(problem, state)[0]
            array[(0, *index)] += step
            estimate[index] = (up - down) / (2 * step)
        scale = np.max(np.abs(analytic[which]))
        assert np.max(np.abs(analytic[which] - estimate)) <= 1e-7 * max(scale, 1.0), name


@pytest.mark.slow
def test_gradient_flow_conserves_each_layers_imbalance_and_gd_tracks_it():
    # A_i A_i^T - B_i^T B_i is conserved by the flow: the integrator keeps it to its tolerance while the
    # adapters grow by orders of magnitude; GD with step 1e-4 drifts by O(lr) only
    problem = paper_mf_problem(seed=3)
    flow = mf_gradient_flow(problem, "small", alpha=1e-3, repetitions=1, time_end=5.0, records=20, seed=1)
    assert flow.observable("z1_norm")[0, -1] > 20 * flow.observable("z1_norm")[0, 0]
    assert flow.observable("conservation_1").max() < 1e-10 and flow.observable("conservation_2").max() < 1e-10
    descent = mf_gradient_descent(problem, "small", alpha=1e-3, repetitions=1, steps=50_000, lr=1e-4, records=20, seed=1)
    assert descent.observable("conservation_1").max() < 1e-3
    # the same initial state: GD's loss follows the flow's within O(lr) in relative terms on the way down
    np.testing.assert_allclose(np.log(descent.observable("loss")[0, :8]), np.log(flow.observable("loss")[0, :8]), atol=0.05)


@pytest.mark.slow
def test_claim_31_closed_form_matches_the_integrator_and_sympy():
    from popgrad.dynamics.solve import ODE, solve
    from popgrad.dynamics.solvers.base import right_hand_side

    derivation = theory.derive_alignment_solution()
    assert derivation["solves"]
    assert not derivation["paper_formula_solves"]  # (10) as printed drops the part outside span(gamma, gamma_bar)
    problem = paper_mf_problem(seed=2)
    sigma, _, _ = problem.target_pair()
    gamma, _, g, _, sigma_w2 = problem.gammas()
    h = problem.shape[2]
    n = problem.shape[1]
    H = np.zeros((h + n, h + n))
    v = gamma[h:] * np.sqrt(2.0)
    H[:h, h:] = np.outer(g, v)
    H[h:, :h] = np.outer(v, g)
    state = mf_initial_states(problem, "small", alpha=1e-3, seed=4)
    Z0 = np.concatenate([state.B1[0], state.A1[0].T])
    Z0 = Z0 + 1e-3 * np.random.default_rng(0).standard_normal(Z0.shape)  # B_1 != 0 too: every direction tested
    k, r = h + n, problem.rank

    @right_hand_side
    def linear(t, y, parameters, out):
        matrix = parameters.copy().reshape(k, k)
        out[:] = (matrix @ y.copy().reshape(k, r)).ravel()

    times = [0.0, 0.3, 0.8, 1.5]
    numeric = solve(ODE(linear, (sigma * sigma_w2 * H).ravel()), Z0.ravel(), times, rtol=1e-12, atol=1e-15).values.reshape(len(times), h + n, -1)
    exact = theory.alignment_closed_form(problem, Z0, times)
    np.testing.assert_allclose(numeric, exact, rtol=1e-9, atol=1e-14 * np.abs(exact).max())
    # Claim 3.1 (2): d/dt log |gamma gamma^T Z_1|^2 = 2 sigma sigma_W2
    norms = [np.linalg.norm(gamma @ Z) ** 2 for Z in exact]
    slopes = np.diff(np.log(norms)) / np.diff(times)
    np.testing.assert_allclose(slopes, 2 * sigma * sigma_w2, rtol=1e-10)


def test_theorem_41_spectral_flow_decouples_into_the_sympy_scalar_flows():
    derivation = theory.derive_scalar_flow()
    assert derivation["matches_paper"]
    problem = paper_mf_problem(seed=5)
    state = mf_initial_states(problem, "spectral", alpha=1e-3, repetitions=1, seed=6)
    times = np.linspace(0.0, 3.0, 13)
    flow = mf_gradient_flow(problem, state=state, time_end=3.0, records=12, rtol=1e-11, atol=1e-16)
    # the active direction's scalar flow: a_1(0), a_2(0) are the components of A_1, A_2 along (v, g)
    (s, w1, w2), = theory.spectral_directions(problem)[:1]
    _, U_, Vt = np.linalg.svd(problem.delta_y)
    v = Vt[0]
    g = problem.W1 @ v / np.linalg.norm(problem.W1 @ v)
    # each layer's rotated frame has its own r x r rotation; the flow depends on |a_1|, |a_2| only (b_i starts
    # at 0 and takes the sign of a_i)
    start = [np.linalg.norm(state.A1[0] @ v), 0.0, np.linalg.norm(state.A2[0] @ g), 0.0]
    scalar = theory.spectral_scalar_flow(s, w1, w2, start, times)
    error = s - (w2 + scalar[:, 3] * scalar[:, 2]) * (w1 + scalar[:, 1] * scalar[:, 0]) + w2 * w1
    # the residual |s - F| (loss = residual^2 / 2) to the integrators' tolerance, across 12 decades
    np.testing.assert_allclose(np.sqrt(2 * flow.observable("loss")[0]), np.abs(error), rtol=1e-6, atol=1e-10)
    assert np.abs(error[-1]) < 1e-9 < np.abs(error[0])
    # Theorem 4.1's T_1 against the end of the growth phase (the loss halved), same order
    t1 = theory.theorem41_t1(s, w1, w2, start[0] ** 2)
    fine = np.linspace(0.0, 3.0, 3001)
    values = theory.spectral_scalar_flow(s, w1, w2, start, fine)
    loss_curve = 0.5 * (s - (w2 + values[:, 3] * values[:, 2]) * (w1 + values[:, 1] * values[:, 0]) + w2 * w1) ** 2
    halved = fine[np.flatnonzero(loss_curve <= 0.5 * loss_curve[0])[0]]
    assert 0.3 < t1 / halved < 3.0


def test_appendix_g1_initialisation_from_the_pretrained_weights_never_learns():
    problem, state = theory.stationary_example()
    assert all(np.all(part == 0) for part in gradient(problem, state))
    run = mf_gradient_descent(problem, state=state, steps=10_000, lr=1e-3, records=2)
    assert np.all(run.observable("loss") == 0.5)


def test_figure_1_orders_of_magnitude():
    # MATH.md §6, read off the paper's Figure 1: small init alpha = 1e-3 ends near 1e-12.5, spectral init at
    # the float64 floor (~1e-26); independent of the code, these bracket our runs loosely
    problem = paper_mf_problem(seed=0)
    small = mf_gradient_descent(problem, "small", alpha=1e-3, repetitions=6, seed=1, records=4)
    spectral = mf_gradient_descent(problem, "spectral", alpha=1e-3, repetitions=6, seed=1, records=4)
    assert -14.0 < np.log10(small.final_loss()).mean() < -11.0
    assert np.log10(spectral.final_loss()).mean() < -24.0


def test_repetitions_do_not_depend_on_threads_or_on_how_many_are_run():
    import numba

    problem = paper_mf_problem(seed=0)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = mf_gradient_descent(problem, "small", alpha=1e-3, repetitions=3, steps=2000, records=2, seed=9)
    finally:
        numba.set_num_threads(threads)
    many = mf_gradient_descent(problem, "small", alpha=1e-3, repetitions=5, steps=2000, records=2, seed=9)
    np.testing.assert_array_equal(one.records, many.records[:3])


@pytest.mark.parametrize(
    "call, parameter, message",
    [
        (lambda: mf_problem(np.eye(3), np.eye(2), np.eye(2), 1), "W2", "W2 must have h = 3 columns"),
        (lambda: mf_problem(np.eye(2), np.eye(2), np.eye(3), 1), "Y_ft", "Y_ft must have shape"),
        (lambda: mf_problem(np.eye(2), np.eye(2), np.eye(2), 0), "rank", "rank must lie in [1"),
        (lambda: mf_problem(np.eye(2), np.eye(2), [[1.0, np.nan], [0.0, 1.0]], 1), "Y_ft", "Y_ft must be finite"),
        (lambda: mf_problem(np.eye(2), np.eye(2), np.eye(2), 1, G=[[1.0, 0.5], [0.0, 1.0]]), "G", "G must be orthogonal"),
        (lambda: mf_initial_states(paper_mf_problem(), "small", alpha=0.0), "alpha", "alpha must lie in (0"),
        (lambda: mf_initial_states(paper_mf_problem(), "magic"), "init", "init must be one of small, spectral"),
        (lambda: paper_mf_problem(m=10, n=10, h=5), "h", "h must be at least"),
        (lambda: mf_gradient_descent(mf_problem(np.eye(2), np.eye(2), np.eye(2), 1, Y_pre=np.zeros((2, 2)))), "Y_pre", "Y_pre must equal W_2 W_1"),
    ],
)
def test_bad_input_names_the_parameter(call, parameter, message):
    with pytest.raises(ValueError) as caught:
        call()
    assert caught.value.parameter == parameter and message in str(caught.value)


def test_a_problem_file_round_trips_and_the_command_line_reads_it(tmp_path, capsys):
    from popgrad.cli.main import main

    problem = paper_mf_problem(6, 5, 8, 2, seed=4)
    problem.save(tmp_path / "p.json")
    again = load_mf_problem(tmp_path / "p.json")
    np.testing.assert_array_equal(again.W1, problem.W1)
    assert main(["mf", "run", "--problem", str(tmp_path / "p.json"), "--repeats", "3", "--steps", "200", "--format", "json", "--curves"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["final_loss"]) == 3 and set(payload) >= {"final_loss", "log10_final_loss_mean", "curves", "parameters"}
    assert payload["log10_final_loss_mean"] == pytest.approx(np.mean(np.log10(payload["final_loss"])))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--alpha", "0"], "--alpha must be a positive number"),
        (["--rank", "0"], "--rank must be at least 1"),
        (["--problem", "p.json", "--rank", "2"], "--rank cannot be used with --problem"),
        (["--init", "magic"], "invalid choice"),
        (["--h", "5"], "--h must be at least"),
    ],
)
def test_bad_command_lines_end_in_one_line(arguments, message, capsys):
    from popgrad.cli.main import main

    assert main(["mf", "run", "--repeats", "2", "--steps", "10", *arguments]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1 and message in error, error


def test_a_bad_problem_file_ends_in_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"W1": [[1, 0], [0, 1]], "W2": [[1, 0], [0, 1]], "Y_ft": [[1, 0], [0, "NaN"]], "rank": 1}))
    result = subprocess.run([sys.executable, "-m", "popgrad", "mf", "run", "--problem", str(bad), "--repeats", "2", "--steps", "5"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
