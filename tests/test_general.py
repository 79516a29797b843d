"""The general model's exact state chain against full-d SGD of the same model (two-sample KS tests), switch
by switch and combined; and against today's scalar chain in the rank-1, frozen, perpendicular case."""

import json

import numpy as np
import pytest
from scipy import stats

import popgrad
from popgrad.dynamics.engine import simulate
from popgrad.models.finetuning.model import general_model
from popgrad.models.finetuning.overlaps import inverse_square_root, smallest_squared_singular_value


def _overlap(run):
    """U^T U_hat per trajectory and checkpoint, from the run's state."""
    return np.einsum("sq,tcqr->tcsr", run.model.UF, run.state["Y"])

#: KS p-values below this fail; each case makes 4 comparisons, about 60 in all (fixed seeds: deterministic)
ALPHA = 1e-3
D = 120
TRAJECTORIES = 400


def _problem(kind):
    if kind == "random":
        return popgrad.random_features_problem("tanh", 4, 1.5, d=D, seed=3, c_distribution="sphere")
    if kind == "glm":
        return popgrad.glm_problem("He_3", 1, 1.0, seed=0)
    if kind == "raw":
        return popgrad.orthonormal_problem("relu", 4, 1.5, seed=1, convention="raw")
    return popgrad.orthonormal_problem("relu", 4, 1.0, seed=0)


CASES = {
    "joint c_hat": ("orthonormal", dict(train_c_hat=True, c_hat_lr=0.5)),
    "unconstrained": ("orthonormal", dict(unconstrained=True)),
    "alpha = 0.5": ("orthonormal", dict(alpha=0.5)),
    "rank 2": ("orthonormal", dict(rank=2, C=np.linalg.qr(np.random.default_rng(0).standard_normal((4, 2)))[0])),
    "W = 0 with He_3": ("glm", dict()),
    "output scale 1/xi": ("raw", dict(output_scale="inverse_xi")),
    "random unit rows, sphere c": ("random", dict(train_c_hat=True)),
    "combined": ("random", dict(train_c_hat=True, unconstrained=True, alpha=0.5, rank=2, output_scale="inverse_xi")),
    "linearized student, joint": ("orthonormal", dict(student="linearized", train_c_hat=True)),
    "linearized, free, random rows": ("random", dict(student="linearized", train_c_hat=True, unconstrained=True, rank=2)),
    "linearized, raw, free": ("raw", dict(student="linearized", unconstrained=True)),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fast", "full"])
@pytest.mark.parametrize("name", CASES)
def test_the_state_chain_has_the_law_of_full_d_sgd(name, method):
    # 'fast': F on the first p axes; 'full': the model in a random embedding (or the problem's own W)
    kind, options = CASES[name]
    model = general_model(_problem(kind), seed=2, **options)
    delta = 0.3 if kind != "glm" else 0.05
    runs = [simulate(model, D, delta=delta, checkpoints=[0, 300, 1500], trajectories=TRAJECTORIES, method=which, seed=seed, fast_path=False) for which, seed in (("chain", 11), (method, 12))]
    for index in (1, 2):
        for observable in ("m", "c_hat_dot_c", "projection_w"):
            if observable == "m":
                samples = [_overlap(run)[:, index].reshape(TRAJECTORIES, -1)[:, 0] for run in runs]
            elif observable == "c_hat_dot_c":
                samples = [run.observables["c_hat_dot_c"][:, index] for run in runs]
            else:
                samples = [run.observables["projection_w"][:, index] for run in runs]
            if max(np.ptp(samples[0]), np.ptp(samples[1])) < 1e-9:
                # frozen (c_hat) or zero up to rounding (|Π_W u_hat| when constrained) in both
                assert np.allclose(samples[0].mean(), samples[1].mean(), atol=1e-9), (name, observable)
                continue
            result = stats.ks_2samp(*samples)
            assert result.pvalue > ALPHA, (name, observable, runs[0].steps[index], result)


def test_the_rank_one_frozen_perpendicular_chain_is_todays_scalar_chain():
    # the model that reduces to the overlap: its fast path (the scalar chain) against its general state chain
    problem = popgrad.orthonormal_problem("relu", 8, 1.0, seed=0)
    model = general_model(problem)
    assert model.reduces_to_overlap and not general_model(problem, train_c_hat=True).reduces_to_overlap
    general = simulate(model, 500, delta=0.5, checkpoints=[0, 1000, 4000], trajectories=TRAJECTORIES, seed=5, fast_path=False)
    scalar = simulate(model, 500, delta=0.5, checkpoints=[0, 1000, 4000], trajectories=TRAJECTORIES, seed=6)
    assert general.state and not scalar.state and general.settings["path"] == "state chain" and scalar.settings["path"] == "scalar overlap chain"
    for index in range(3):
        for name in ("m", "population_loss"):
            assert stats.ks_2samp(general.observables[name][:, index], scalar.observables[name][:, index]).pvalue > ALPHA, name
    # the observables that stay constant agree exactly (up to rounding)
    for name in ("c_hat_dot_c", "c_hat_cosine", "projection_w"):
        assert np.allclose(general.observables[name], scalar.observables[name][:, :1], atol=1e-12), name


SPECIALISATION_CASES = {
    "joint, free, W = I": ("orthonormal", dict(train_c_hat=True, unconstrained=True)),
    "frozen, constrained, W = I": ("orthonormal", dict()),
    "joint, constrained, random rows": ("random", dict(train_c_hat=True)),
    "joint, free, alpha, random rows, 1/xi": ("random", dict(train_c_hat=True, unconstrained=True, alpha=0.5, output_scale="inverse_xi")),
    "linearized, raw, free": ("raw", dict(student="linearized", unconstrained=True)),
    "linearized, joint": ("orthonormal", dict(student="linearized", train_c_hat=True)),
    "r* = 2, joint, free": ("orthonormal", dict(C=np.linalg.qr(np.random.default_rng(0).standard_normal((4, 2)))[0], train_c_hat=True, unconstrained=True)),
    "W = 0 with He_3": ("glm", dict()),
}


@pytest.mark.parametrize("name", SPECIALISATION_CASES)
def test_the_rank_one_kernel_computes_what_the_rank_r_kernel_computes_at_rank_one(name, monkeypatch):
    # two independent implementations of the same step (the scalar specialisation, and the rank-r kernel run
    # at r = 1), from the same states and streams: the same numbers up to rounding, the same hitting steps
    from popgrad.models.finetuning import family
    from popgrad.models.finetuning.overlaps import general_chain_kernel

    kind, options = SPECIALISATION_CASES[name]
    model = general_model(_problem(kind), seed=2, **options)
    delta = 0.2 if kind != "glm" else 0.05
    run = lambda: simulate(model, D, delta=delta, checkpoints=[0, 10, 300], trajectories=40, seed=9, hit=0.2, fast_path=False)  # noqa: E731
    fast = run()
    monkeypatch.setattr(family, "general_chain_kernel", lambda *arguments: general_chain_kernel(*arguments, generic=True))
    generic = run()
    for ours, theirs in ((fast.state["Y"], generic.state["Y"]), (fast.state["Gamma"], generic.state["Gamma"]), (fast.state["C_hat"], generic.state["C_hat"])):
        np.testing.assert_allclose(ours, theirs, rtol=0.0, atol=1e-11, err_msg=name)
    assert np.array_equal(fast.hitting_steps, generic.hitting_steps), name


@pytest.mark.parametrize("rank", [1, 2])
def test_a_trajectory_does_not_depend_on_how_its_steps_are_split_into_calls(rank):
    # the simulator advances in chunks whose length depends on the number of trajectories; the kernels carry
    # nothing between calls but the state, so trajectory j's numbers are the same bit for bit
    model = general_model(_problem("orthonormal"), seed=2, rank=rank, train_c_hat=True, unconstrained=True)
    whole = simulate(model, D, delta=0.3, checkpoints=[0, 400], trajectories=3, seed=4)
    split = simulate(model, D, delta=0.3, checkpoints=[0, 1, 7, 100, 400], trajectories=5, seed=4)
    for ours, theirs in ((whole.state["Y"], split.state["Y"]), (whole.state["Gamma"], split.state["Gamma"]), (whole.state["C_hat"], split.state["C_hat"])):
        assert np.array_equal(ours[:, -1], theirs[:3, -1])


def test_the_initial_student_is_uniform_on_the_sphere_of_the_allowed_space():
    # m_0 = <u, u_hat_0> has the law of a coordinate of a uniform point of S^(n-1), n = d - rank W (constrained)
    # or d (free): E m_0^2 = 1/n; the chain's d-free draw and the full-d frames agree on it
    problem = popgrad.orthonormal_problem("relu", 4, 1.0, seed=0)
    for unconstrained, n in ((False, D - 4), (True, D)):
        model = general_model(problem, unconstrained=unconstrained)
        for method in ("chain", "fast", "full"):
            m0 = simulate(model, D, delta=0.1, checkpoints=[0, 1], trajectories=4000, method=method, seed=3, fast_path=False).m[:, 0]
            # n m0^2 ~ Beta(1/2, (n-1)/2) n: mean 1, standard deviation about sqrt(2)
            assert abs(np.mean(n * m0**2) - 1.0) < 4 * np.sqrt(2.0 / 4000), (unconstrained, method)


def test_small_matrix_helpers_against_numpy():
    rng = np.random.default_rng(0)
    for r in (1, 2, 3, 5):
        A = rng.standard_normal((r, r + 2))
        S = A @ A.T
        out = np.empty((r, r))
        inverse_square_root(S, out)
        assert np.allclose(out @ S @ out, np.eye(r), atol=1e-10) and np.allclose(out, out.T, atol=1e-12)
        O = rng.standard_normal((2, r))
        assert np.isclose(smallest_squared_singular_value(O), np.linalg.svd(O, compute_uv=False)[-1] ** 2)


def test_inverse_sqrt_is_within_three_units_in_the_last_place():
    from numba import njit

    from popgrad.models.finetuning.overlaps import SMALLEST_NORMAL, inverse_sqrt

    @njit
    def apply(values, out):
        for i in range(values.shape[0]):
            out[i] = inverse_sqrt(values[i])

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(0.5, 4.0, 100_000), 10.0 ** rng.uniform(-307, 307, 100_000), [SMALLEST_NORMAL, 1.0, 2.0, np.finfo(float).max]])
    out = np.empty_like(values)
    apply(values, out)
    reference = 1.0 / np.sqrt(values)
    assert np.max(np.abs(out - reference) / np.spacing(reference)) <= 3.0


@pytest.mark.parametrize(
    "options, parameter",
    [(dict(rank=0), "rank"), (dict(alpha=1.5), "alpha"), (dict(output_scale="two"), "output_scale"), (dict(c_hat_lr=0.0), "c_hat_lr"), (dict(C_hat=np.ones((3, 1))), "C_hat"), (dict(C=np.ones((5, 1))), "C")],
)
def test_bad_switches_name_the_parameter(options, parameter):
    with pytest.raises(ValueError) as caught:
        general_model(popgrad.orthonormal_problem("relu", 4, 1.0, seed=0), **options)
    assert getattr(caught.value, "parameter", None) == parameter


@pytest.mark.parametrize("options", [dict(unconstrained=True, rank=2, alpha=0.5, output_scale="inverse_xi"), dict(rank=1), dict(student="linearized", unconstrained=True, rank=2), dict(student="linearized")])
def test_one_full_d_step_moves_along_the_finite_difference_gradient(options):
    # an independent route to the gradient: central differences of the per-sample loss (f* - f_hat)^2, written
    # here with explicit vectors, on the sample x that the kernel draws from stream (seed, TRAJECTORIES, 0).
    # At eta = 1e-7 one step moves C_hat by -eta_c dL/dC_hat and U^T U_hat by -eta U^T (tangent, projected
    # gradient), up to O(eta^2)
    from popgrad.models.finetuning.initial import initial_frames as _initial_frames
    from popgrad.numerics import random_streams as streams

    problem = popgrad.random_features_problem("tanh", 3, 1.5, d=12, seed=3, c_distribution="sphere")
    model = general_model(problem, train_c_hat=True, c_hat_lr=2.0, seed=1, **options)
    d, eta, seed = 12, 1e-7, 4
    run = simulate(model, d, eta, [0, 1], trajectories=1, method="fast", seed=seed, fast_path=False)
    V = _initial_frames(model, d, 1, seed, 0)[0]
    state = np.empty(4, dtype=np.uint64)
    streams.seed_stream(np.uint64(seed), streams.TRAJECTORIES, 0, state)
    x = np.empty(d)
    streams.fill_normal(state, x)
    rank_w = model.L.shape[1]
    W = np.zeros((problem.k, d))
    W[:, :rank_w] = model.L
    U = np.zeros((model.C.shape[1], d))
    U[:, : model.p] = model.UF
    sigma, xi, lam = problem.activation, problem.xi, np.asarray(problem.lam)

    def output(C, V_rows, norms, linear=False):
        if linear:  # first order in the adapter: d/dt sigma(<w + t v, x> / |w + t v|) at t = 0
            w_norms = np.linalg.norm(W, axis=1) if norms else np.ones(problem.k)
            v = xi * C @ V_rows
            tilted = (v - (np.sum(v * W, axis=1) / w_norms**2)[:, None] * W) / w_norms[:, None] if norms else v
            pre = W @ x / w_norms
            return model.s_out * np.sum(lam * (sigma(pre) + sigma.prime(pre) * (tilted @ x)))
        vectors = W + xi * C @ V_rows
        scale = np.linalg.norm(vectors, axis=1) if norms else np.ones(problem.k)
        return model.s_out * np.sum(lam * sigma(vectors @ x / scale))

    normalized = problem.convention == "normalized"
    target = output(model.C, U, normalized)

    def loss(C_hat, V_rows):
        return (target - output(C_hat, V_rows, normalized, model.student == "linearized")) ** 2

    def gradient(function, point, h=1e-6):
        result = np.zeros_like(point)
        for index in np.ndindex(point.shape):
            step = np.zeros_like(point)
            step[index] = h
            result[index] = (function(point + step) - function(point - step)) / (2 * h)
        return result

    grad_c = gradient(lambda C_hat: loss(C_hat, V), model.C_hat)
    expected_c = model.C_hat - eta * model.c_hat_lr * grad_c
    assert np.allclose(run.state["C_hat"][0, 1], expected_c, rtol=0, atol=1e-12 + 1e-6 * eta * np.abs(grad_c).max())
    G = gradient(lambda rows: loss(model.C_hat, rows), V)  # rows: the columns of U_hat
    if not model.unconstrained:
        G[:, :rank_w] = 0.0
    H = V @ G.T
    tangent = G - 0.5 * (H + H.T) @ V
    expected_overlap = U @ (V - eta * tangent).T
    moved = _overlap(run)[0, 1] - _overlap(run)[0, 0]
    assert np.allclose(moved, expected_overlap - U @ V.T, rtol=1e-4, atol=1e-6 * eta * np.abs(tangent).max() + 1e-15)


def _state(model, seed):
    """A random state: Y, Gamma from a random U_hat (free, or in span(W)^perp), C_hat perturbed."""
    rng = np.random.default_rng(seed)
    p, r, rank_w = model.p, model.rank, model.L.shape[1]
    N = rng.standard_normal((p + r, r))
    if not model.unconstrained:
        N[:rank_w] = 0.0
    Q, _ = np.linalg.qr(N)
    return Q[:p], Q[p:].T @ Q[p:], model.C_hat + 0.3 * rng.standard_normal(model.C_hat.shape)


LOSS_CASES = {
    "rank 1 perpendicular": (popgrad.orthonormal_problem("relu", 4, 1.0, seed=0), dict()),
    "free, alpha, joint": (popgrad.orthonormal_problem("tanh", 3, 1.5, seed=1), dict(unconstrained=True, alpha=0.6)),
    "rank 2, 1/xi, random rows": (popgrad.random_features_problem("relu", 3, 2.0, d=20, seed=2, c_distribution="sphere"), dict(rank=2, output_scale="inverse_xi", unconstrained=True)),
    "raw convention": (popgrad.orthonormal_problem("erf", 3, 1.3, seed=3, convention="raw"), dict(unconstrained=True)),
    # the linearised student (Stein's lemma; sigma'' enters where u_hat leaves span(W)^perp: 10 SE here)
    "linearized, rank 1": (popgrad.orthonormal_problem("relu", 4, 1.0, seed=0), dict(student="linearized")),
    "linearized, free, alpha": (popgrad.orthonormal_problem("tanh", 3, 1.5, seed=1), dict(student="linearized", unconstrained=True, alpha=0.6)),
    "linearized, rank 2, 1/xi, free": (popgrad.random_features_problem("relu", 3, 2.0, d=20, seed=2, c_distribution="sphere"), dict(student="linearized", rank=2, output_scale="inverse_xi", unconstrained=True)),
    "linearized, raw, rank 2": (popgrad.random_features_problem("relu", 3, 1.3, d=20, seed=3, convention="raw"), dict(student="linearized", rank=2)),
}


@pytest.mark.parametrize("name", LOSS_CASES)
def test_the_closed_form_loss_on_the_state_matches_monte_carlo(name):
    from popgrad.models.finetuning.observables import state_loss_monte_carlo, state_population_loss

    problem, options = LOSS_CASES[name]
    model = general_model(problem, seed=4, **options)
    Y, Gamma, C_hat = _state(model, 5)
    exact = state_population_loss(model, Y, Gamma, C_hat)
    mean, error = state_loss_monte_carlo(model, Y, Gamma, C_hat, samples=1_000_000, seed=6)
    assert abs(exact - mean) < 4 * error, (exact, mean, error)


def test_the_loss_on_the_state_is_todays_phi_of_m_in_the_rank_one_case():
    from popgrad.models.finetuning.observables import state_population_loss

    problem = popgrad.orthonormal_problem("relu", 6, 1.2, seed=2)
    model = general_model(problem)
    for m in (-0.7, 0.0, 0.4):
        Y = np.zeros((model.p, 1))
        Y[-1, 0] = m
        value = state_population_loss(model, Y, np.array([[1.0 - m * m]]), model.C_hat)
        assert np.isclose(value, float(popgrad.population_loss(problem, m)), rtol=1e-12, atol=1e-14)


FLOW_CASES = {
    "rank 1 perpendicular, frozen": (popgrad.orthonormal_problem("relu", 4, 1.0, seed=0), dict()),
    "joint, free, alpha, 1/xi": (popgrad.orthonormal_problem("tanh", 3, 1.5, seed=1), dict(unconstrained=True, alpha=0.6, train_c_hat=True, c_hat_lr=0.7, output_scale="inverse_xi")),
    "rank 2, random rows": (popgrad.random_features_problem("gelu", 3, 2.0, d=20, seed=2, c_distribution="sphere"), dict(rank=2, train_c_hat=True)),
}


@pytest.mark.parametrize("name", FLOW_CASES)
def test_the_state_flow_is_minus_the_projected_gradient_of_the_closed_form_loss(name):
    # Price's theorem in the flow against central differences of the closed-form Phi (a separate route:
    # dual kernels K, not K'), projected off span(W) when constrained and onto the tangent space
    from popgrad.models.finetuning.observables import state_population_loss
    from popgrad.models.finetuning.state_flow import state_gradient

    problem, options = FLOW_CASES[name]
    model = general_model(problem, seed=4, **options)
    Y, Gamma, C_hat = _state(model, 7)
    values, vectors = np.linalg.eigh(Gamma)
    Z = np.vstack([Y, (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T])
    p = model.p

    def loss(Z_, C_):
        return state_population_loss(model, Z_[:p], Z_[p:].T @ Z_[p:], C_)

    h = 1e-6
    G = np.zeros_like(Z)
    for index in np.ndindex(Z.shape):
        step = np.zeros_like(Z)
        step[index] = h
        G[index] = (loss(Z + step, C_hat) - loss(Z - step, C_hat)) / (2 * h)
    if not model.unconstrained:
        G[: model.L.shape[1]] = 0.0
    H = Z.T @ G
    expected_Z = -(G - Z @ (0.5 * (H + H.T)))
    G_c = np.zeros_like(C_hat)
    for index in np.ndindex(C_hat.shape):
        step = np.zeros_like(C_hat)
        step[index] = h
        G_c[index] = (loss(Z, C_hat + step) - loss(Z, C_hat - step)) / (2 * h)
    expected_c = -model.c_hat_lr * G_c if model.train_c_hat else np.zeros_like(C_hat)
    flow_Z, flow_c = state_gradient(model, Z, C_hat)
    scale = max(np.abs(expected_Z).max(), np.abs(expected_c).max())
    assert np.allclose(flow_Z, expected_Z, rtol=1e-6, atol=1e-6 * scale), np.abs(flow_Z - expected_Z).max()
    assert np.allclose(flow_c, expected_c, rtol=1e-6, atol=1e-6 * scale), np.abs(flow_c - expected_c).max()


@pytest.mark.slow
@pytest.mark.parametrize("options", [dict(train_c_hat=True), dict(unconstrained=True)])
def test_the_state_flow_predicts_the_sgd_mean_at_a_small_step(options):
    # delta = eta d = 0.02: gradient flow from each trajectory's own initial state against the chain's mean,
    # m and <C_hat, C>, within 4 SE of the SGD mean while m moves (near convergence the finite-step
    # normalisation shifts the SGD mean by O(delta): there the one-step-mean map is the prediction)
    from popgrad.models.finetuning.initial import initial_states as _initial_states
    from popgrad.models.finetuning.state_flow import predict_state_flow

    d, trajectories, delta, checkpoints = 200, 200, 0.02, [0, 2000, 5000]
    model = general_model(popgrad.orthonormal_problem("relu", 4, 1.0, seed=0), **options)
    simulation = simulate(model, d, delta=delta, checkpoints=checkpoints, trajectories=trajectories, seed=3)
    Y, Gamma = _initial_states(model, d, trajectories, 3, 0)
    Y_flow, _, c_hat = predict_state_flow(model, Y, Gamma, np.repeat(model.C_hat[None], trajectories, axis=0), delta / d, checkpoints)
    overlap = np.einsum("sq,tcqr->tcsr", model.UF, Y_flow)
    for observed, predicted in ((simulation.m, overlap[:, :, 0, 0]), (simulation.observables["c_hat_dot_c"], np.einsum("tcir,ir->tc", c_hat, model.C))):
        error = observed.std(axis=0, ddof=1) / np.sqrt(trajectories)
        moving = error > 0
        assert np.all(np.abs(observed.mean(axis=0) - predicted.mean(axis=0))[moving] < 4 * error[moving])
    assert abs(simulation.m[:, -1].mean()) > 0.3  # the overlap has moved far from its start (~ 1/sqrt(d))


def test_the_command_line_runs_the_general_model_and_reports_each_observable(capsys):
    import json

    from popgrad.cli.main import main

    arguments = ["simulate", "--train-c-hat", "--c-hat-lr", "0.5", "--unconstrained", "--rank", "2", "--k", "3", "--d", "60", "--steps", "200", "--trajectories", "8", "--hit", "0.5", "--format", "json", "--quiet"]
    assert main(arguments) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["schema"] == "popgrad.run/1"
    parameters = record["parameters"]
    switches = {key: parameters["model"][key] for key in ("rank", "output_scale", "student", "train_c_hat", "c_hat_lr", "unconstrained")}
    assert switches == {"rank": 2, "output_scale": "one", "student": "exact", "train_c_hat": True, "c_hat_lr": 0.5, "unconstrained": True} and parameters["model"]["alpha"] == 0.0
    assert np.array(parameters["model"]["C_hat"]).shape == (3, 2) and set(parameters["versions"]) >= {"popgrad", "numba"}
    assert parameters["eta_c"] == 0.5 * parameters["eta"] and len(record["steps"]) == 21
    # rank 2 with one teacher column: U^T U_hat has one singular value, which is m
    for name in ("m", "c_hat_dot_c", "c_hat_cosine", "projection_w", "population_loss", "singular_value_1"):
        observable = record["observables"][name]
        assert set(observable) == {"mean", "standard_error", "quantiles"} and len(observable["mean"]) == 21
    assert record["observables"]["singular_value_1"]["mean"] == record["observables"]["m"]["mean"]
    assert set(record["hitting_times"]) >= {"median", "censored_fraction", "horizon", "eps"}
    # the same seed gives the same numbers
    assert main(arguments) == 0
    assert json.loads(capsys.readouterr().out)["observables"] == record["observables"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--rank", "0"], "--rank must"),
        (["--alpha", "1.5"], "--alpha must"),
        (["--c-hat-lr", "0", "--train-c-hat"], "--c-hat-lr must"),
        (["--rank", "60"], "--rank must be at most"),
        (["--stop-when-hit"], "--stop-when-hit needs --hit"),
        (["--rank", "2", "--m0", "0.1"], "--m0 is the rank-1 overlap"),
        (["--alpha", "0.8", "--m0", "0.7"], "--m0 must lie in"),
    ],
)
def test_bad_general_flags_end_in_one_line(arguments, message, capsys):
    # in process (the command line's own entry point; tests/test_cli.py runs the console script itself)
    from popgrad.cli.main import main

    assert main(["simulate", "--k", "3", "--d", "60", "--steps", "10", "--trajectories", "2", *arguments]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and not captured.out, captured
    assert len(captured.err.strip().splitlines()) == 1 and message in captured.err, captured.err


@pytest.mark.parametrize("activation, convention", [("tanh", "normalized"), ("relu", "raw"), ("erf", "raw")])
def test_the_loss_over_many_states_is_the_loss_state_by_state(activation, convention):
    # state_population_losses (one Gram matrix per state, vectorised kernels) against the per-state closed
    # form built from explicit neuron vectors (neuron_vectors), at states the chain visits
    from popgrad.models.finetuning.observables import closed_form_loss, state_population_loss

    problem = popgrad.random_features_problem(activation, 4, 1.5, d=60, seed=3, c_distribution="sphere", convention=convention)
    model = general_model(problem, seed=2, train_c_hat=True, unconstrained=True, rank=2, alpha=0.5)
    assert closed_form_loss(model)
    run = simulate(model, 60, delta=0.3, checkpoints=[0, 100, 300], trajectories=6, seed=1)
    many = run.observables["population_loss"]
    one = np.array([[state_population_loss(model, run.state["Y"][j, c], run.state["Gamma"][j, c], run.state["C_hat"][j, c]) for c in range(3)] for j in range(6)])
    np.testing.assert_allclose(many, one, rtol=1e-12, atol=1e-14)


def test_loss_is_absent_where_it_has_no_closed_form_here():
    problem = popgrad.orthonormal_problem("tanh", 3, 1.0, seed=0, convention="raw")
    run = simulate(general_model(problem, train_c_hat=True), 60, delta=0.3, checkpoints=[0, 10], trajectories=2, seed=1)
    assert set(run.observables) == {"m", "c_hat_dot_c", "c_hat_cosine", "projection_w"}
    free_raw = general_model(popgrad.orthonormal_problem("relu", 3, 1.0, seed=0, convention="raw"), student="linearized", unconstrained=True)
    linearized = simulate(free_raw, 60, delta=0.3, checkpoints=[0, 10], trajectories=2, seed=1)
    assert "population_loss" not in linearized.observables


@pytest.mark.slow
def test_the_one_step_mean_map_tracks_sgd_where_gradient_flow_is_off():
    # delta = eta d = 0.5: gradient flow misses the SGD mean by tens of standard errors (the normalisation
    # noise of a finite step), the one-step-mean map of the chain's own step keeps within 4 SE, with a band
    # narrower than the threshold (a conclusive verdict), for m, <c_hat, c> and Phi
    from popgrad.analysis.comparison import compare as compare_general

    model = general_model(popgrad.orthonormal_problem("relu", 4, 1.0, seed=0), train_c_hat=True)
    result = compare_general(model, 200, delta=0.5, checkpoints=[0, 500, 1000, 2000, 4000], trajectories=200, seed=3, noise_samples=32768)
    conclusions = result.conclusions
    for observable in ("m", "c_hat_dot_c", "population_loss"):
        assert conclusions["gradient_flow"][observable] == "inconsistent" and result.statistic("gradient_flow", observable) > 10, (observable, result.verdict)
        assert conclusions["one_step_mean"][observable] == "consistent", (observable, result.verdict)
    # |P_W u_hat| stays 0 on both sides (constrained): rounding is no discrepancy
    assert conclusions["gradient_flow"]["projection_w"] == "consistent"


def test_compare_writes_a_general_report_with_every_observable(tmp_path, capsys):
    import json

    from popgrad.cli.main import main

    out = tmp_path / "report"
    arguments = ["compare", "--unconstrained", "--train-c-hat", "--k", "3", "--d", "60", "--delta", "0.2", "--checkpoints", "0,100,300", "--trajectories", "16", "--map-starts", "2", "--noise-samples", "2048", "--map-substeps", "4", "--flow-starts", "4", "--out", str(out), "--quiet"]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "verdict [chain]: threshold 4 SE; gradient_flow: m max z" in printed and "one_step_mean: m max z" in printed
    record = json.loads((out / "comparison.json").read_text())
    assert record["provenance"]["model"]["unconstrained"] and record["provenance"]["predictions"]["one_step_mean"]["samples"] == 2048
    for name in ("m", "c_hat_dot_c", "c_hat_cosine", "projection_w", "population_loss"):
        observable = record["observables"][name]
        assert len(observable["mean"]) == 3 and len(observable["standard_error"]) == 3
        assert set(observable["predictions"]) == {"gradient_flow", "one_step_mean"}
        assert set(record["conclusions"]["one_step_mean"]) >= {"m", "c_hat_dot_c"}
    assert (out / "comparison.png").stat().st_size > 10_000 and not (out / "INCOMPLETE").exists()
    from scipy.io import netcdf_file

    with netcdf_file(out / "comparison.nc", "r", mmap=False) as file:
        assert file.variables["m"].shape == (16, 3) and file.variables["prediction_one_step_mean__m__lower"].long_name.startswith(b"lower edge")
    assert record["schema"] == "popgrad.comparison/1"


def test_one_trajectory_gives_an_undefined_verdict():
    from popgrad.analysis.comparison import compare as compare_general

    model = general_model(popgrad.orthonormal_problem("relu", 3, 1.0, seed=0))
    result = compare_general(model, 60, delta=0.2, checkpoints=[0, 50], trajectories=1, which=("gradient_flow",))
    assert result.verdict.startswith("undefined") and set(result.conclusions["gradient_flow"].values()) == {"undefined"}


def test_simulate_saves_the_general_model_as_netcdf(tmp_path, capsys):
    import xarray as xr

    from popgrad.cli.main import main

    out = tmp_path / "run.nc"
    assert main(["simulate", "--rank", "2", "--alpha", "0.5", "--k", "3", "--d", "60", "--checkpoints", "0,50,100", "--trajectories", "5", "--hit", "0.5", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    data = xr.open_dataset(out)
    # the state where it does not reduce: Y (p x r in F's coordinates; p = rank W + r* = 4), Gamma, C_hat
    assert data["Y"].shape == (5, 3, 4, 2) and data["Gamma"].shape == (5, 3, 2, 2) and data["C_hat"].shape == (5, 3, 3, 2) and data["m"].shape == (5, 3)
    model = popgrad.model_from_dict(json.loads(data.attrs["provenance"])["parameters"]["model"])
    overlap = np.einsum("sq,tcqr->tcsr", model.UF, data["Y"].values)
    np.testing.assert_allclose(data["m"].values, np.linalg.svd(overlap, compute_uv=False)[..., -1], atol=1e-12)
    assert data["singular_value_1"].attrs["long_name"].startswith("singular_value_1") and data["hitting_step"].shape == (5,)
    assert model.alpha == 0.5


def test_a_teacher_given_in_r_d_has_the_same_geometry_in_the_state_coordinates():
    # u given explicitly next to an explicit W: the model's coordinates on F must reproduce every inner
    # product of the teacher's neurons and of W with u computed directly in R^d
    from popgrad.models.finetuning.model import general_model_from_dict

    problem = popgrad.random_features_problem("relu", 4, 1.5, d=30, seed=3, c_distribution="sphere")
    W = problem.W
    rng = np.random.default_rng(1)
    inside = W.T @ rng.standard_normal(4)
    outside = rng.standard_normal(30)
    outside -= W.T @ np.linalg.lstsq(W.T, outside, rcond=None)[0]
    u = 0.6 * inside / np.linalg.norm(inside) + 0.8 * outside / np.linalg.norm(outside)
    model = general_model_from_dict(problem.to_dict() | {"u": u.tolist(), "train_c_hat": True})
    assert model.alpha == pytest.approx(0.6, abs=1e-12) and model.train_c_hat
    teacher_rd = W + problem.xi * np.outer(problem.c, u)
    teacher_f = np.zeros((4, model.p))
    teacher_f[:, : model.L.shape[1]] = model.L
    teacher_f += problem.xi * model.C @ model.UF
    np.testing.assert_allclose(teacher_f @ teacher_f.T, teacher_rd @ teacher_rd.T, atol=1e-12)
    np.testing.assert_allclose(model.L @ model.UF[:, : model.L.shape[1]].T, (W @ u)[:, None], atol=1e-12)
    # the specification round-trips exactly, and an old rank-1 file is a general model at its defaults
    again = general_model_from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_array_equal(again.UF, model.UF)
    np.testing.assert_array_equal(again.L, model.L)
    drawn = general_model(problem, alpha=0.5, rank=2, seed=7)
    back = general_model_from_dict(drawn.to_dict())
    np.testing.assert_array_equal(back.UF, drawn.UF)
    np.testing.assert_array_equal(back.C_hat, drawn.C_hat)
    plain = general_model_from_dict(problem.to_dict())
    assert plain.rank == 1 and not plain.train_c_hat and plain.alpha == 0.0


@pytest.mark.parametrize(
    "extra, parameter, message",
    [
        ({"u": [1.0] + [0.0] * 28}, "U", "U must be d x r*"),
        ({"u": [0.5] + [0.0] * 29}, "U", "orthonormal columns"),
        ({"u": [1.0] + [0.0] * 29, "alpha": 0.5}, "alpha", "not both"),
        ({"u": [1.0] + [0.0] * 29, "U": [[1.0]] + [[0.0]] * 29}, "U", "not both"),
        ({"C": [[0.5, 0.5]] * 3}, "C", "k = 4 rows"),
        ({"output_scale": "half"}, "output_scale", "output_scale must be one of"),
        ({"train_c_hat": "yes"}, "train_c_hat", "true or false"),
    ],
)
def test_bad_general_specifications_name_the_key(extra, parameter, message):
    from popgrad.models.finetuning.model import general_model_from_dict

    problem = popgrad.random_features_problem("relu", 4, 1.5, d=30, seed=3)
    with pytest.raises(ValueError, match=message) as caught:
        general_model_from_dict(problem.to_dict() | extra)
    assert caught.value.parameter == parameter and "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="belong to the general model"):
        popgrad.FineTuningProblem.from_dict(problem.to_dict() | extra)


def test_an_explicit_u_needs_an_explicit_w():
    from popgrad.models.finetuning.model import general_model_from_dict

    with pytest.raises(ValueError, match="needs the problem's W"):
        general_model_from_dict(popgrad.orthonormal_problem("relu", 3, 1.0, seed=0).to_dict() | {"u": [0.0, 0.0, 0.0, 1.0]})


def test_a_problem_file_with_general_keys_runs_the_general_model(tmp_path, capsys):
    from popgrad.cli.main import main

    problem = popgrad.random_features_problem("relu", 3, 1.0, d=40, seed=2)
    path = tmp_path / "general.json"
    path.write_text(json.dumps(problem.to_dict() | {"alpha": 0.5, "train_c_hat": True, "student": "linearized", "seed": 3}))
    assert main(["simulate", "--problem", str(path), "--steps", "40", "--trajectories", "4", "--format", "json", "--quiet"]) == 0
    record = json.loads(capsys.readouterr().out)
    parameters = record["parameters"]
    assert parameters["model"]["student"] == "linearized" and parameters["model"]["train_c_hat"] and parameters["d"] == 40
    assert main(["simulate", "--problem", str(path), "--student", "exact", "--steps", "10"]) == 2
    error = capsys.readouterr().err
    assert "--student next to --problem: the model file sets it" in error and len(error.strip().splitlines()) == 1
    # a switch the file leaves at its default may be set by its flag
    assert main(["simulate", "--problem", str(path), "--rank", "2", "--steps", "10", "--trajectories", "2", "--format", "json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["model"]["rank"] == 2
    path.write_text(json.dumps(problem.to_dict() | {"u": [2.0] + [0.0] * 39}))
    assert main(["simulate", "--problem", str(path), "--steps", "10"]) == 2
    error = capsys.readouterr().err
    assert "orthonormal columns" in error and "Traceback" not in error and len(error.strip().splitlines()) == 1


@pytest.mark.parametrize("activation, convention_xi", [("relu", 1.0), ("tanh", 2.0), ("He_3", 0.7)])
def test_proposition_4_is_the_rank_one_frozen_perpendicular_case_of_the_state_flow(activation, convention_xi):
    # the state flow (Price's theorem on the general Phi) against today's h(m) (Proposition 4's closed form):
    # dm/dt = h(m) (1 - m^2) with u_hat in span(W)^perp, c_hat frozen, rank 1
    from popgrad.models.finetuning.state_flow import state_gradient

    problem = popgrad.orthonormal_problem(activation, 6, convention_xi, seed=2)
    model = general_model(problem)
    for m in (-0.7, 0.0, 0.3, 0.9):
        Z = np.zeros((model.p + 1, 1))
        Z[model.p - 1, 0] = m  # Y: u_hat's coordinate along u (F = span(W) + span(u), u last)
        Z[model.p, 0] = np.sqrt(1 - m * m)  # R
        dZ, dC = state_gradient(model, Z, model.C_hat)
        dm = float((model.UF @ dZ[: model.p, 0])[0])
        assert dm == pytest.approx(float(popgrad.population_drift(problem, m)) * (1 - m * m), rel=1e-10, abs=1e-13)
        assert not np.any(dC)


def test_gradient_flow_predicts_its_own_hitting_time():
    # the flow's hitting step per start (interpolated on a fine grid) next to the simulation's: at a small
    # step the medians agree within the spread of the trajectories' hitting steps
    from popgrad.analysis.comparison import compare as compare_general

    model = general_model(popgrad.orthonormal_problem("relu", 4, 1.0, seed=0), train_c_hat=True)
    result = compare_general(model, 300, delta=0.02, steps=120000, trajectories=64, seed=3, which=("gradient_flow",), hit=0.1, flow_starts=16)
    record = result.to_json_dict()["hitting_times"]
    predicted = record["predicted"]["gradient_flow"]
    assert record["censored_fraction"] == 0.0 and predicted["censored_fraction"] == 0.0
    assert abs(predicted["median"] - record["median"]) < 0.1 * record["median"]
    assert predicted["q25"] <= predicted["median"] <= predicted["q75"]


def test_example_1_two_perturbations_one_teacher():
    # sympy proves V^T V = V'^T V'; the closed-form loss is 0 both ways, and is not 0 for a student that
    # keeps c but takes u' (the check can fail)
    from popgrad.models.finetuning.checks import example1

    report = example1()
    assert report["identity"] and report["different"]
    assert abs(report["loss_u_prime_learning_u"]) < 1e-8 and abs(report["loss_u_learning_u_prime"]) < 1e-8
    from popgrad.models.finetuning.observables import state_population_loss

    c = np.array([-(1 + np.sqrt(2)) * (2 + np.sqrt(3)), (1 + np.sqrt(2)) * (np.sqrt(2) + np.sqrt(3))])
    problem = popgrad.FineTuningProblem("quadratic", [1.0, 1.0], c=c, c_hat=c, xi=1.0, W=np.eye(2), convention="raw")
    model = general_model(problem, U=np.array([1.0, 1.0]) / np.sqrt(2))
    _, _, right = np.linalg.svd(problem.W)
    Y = np.zeros((model.p, 1))
    Y[:2, 0] = right[:2] @ np.array([1 / np.sqrt(3), np.sqrt(6) / 3])
    assert state_population_loss(model, Y, np.zeros((1, 1)), c[:, None]) > 1.0


@pytest.mark.parametrize("activation", ["quadratic", "He_3"])
def test_the_symbolic_joint_flow_is_the_numeric_one(activation):
    import sympy

    from popgrad.models.finetuning.observables import state_population_loss
    from popgrad.models.finetuning.series import symbolic_joint_flow
    from popgrad.models.finetuning.state_flow import state_gradient

    problem = popgrad.orthonormal_problem(activation, 3, 1.3, seed=4)
    symbols, phi, drift = symbolic_joint_flow(problem, c_hat_lr=sympy.Rational(2))
    model = general_model(problem, train_c_hat=True, c_hat_lr=2.0)
    for m0, point in ((0.3, (0.4, -0.9, 0.2)), (-0.8, (1.1, 0.5, -0.3))):
        values = dict(zip(symbols, (m0, *point)))
        Y = np.zeros((model.p, 1))
        Y[-1, 0] = m0
        c_hat = np.array(point)[:, None]
        assert float(phi.subs(values)) == pytest.approx(state_population_loss(model, Y, np.array([[1 - m0**2]]), c_hat), rel=1e-12)
        dZ, dC = state_gradient(model, np.vstack([Y, [[np.sqrt(1 - m0**2)]]]), c_hat)
        numeric = [float((model.UF @ dZ[: model.p, 0])[0]), *dC.ravel()]
        np.testing.assert_allclose([float(d.subs(values)) for d in drift], numeric, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["free, alpha, joint", "rank 2, 1/xi, random rows"])
def test_the_state_flow_is_the_mean_of_per_sample_gradients(name):
    # a third route to the population gradient: the average over Gaussian inputs of the per-sample gradient of
    # (f* - f_hat)^2, written here for explicit networks on F ⊕ range(R) (U_hat = [Y; R]), projected like the
    # flow (tangent to the Stiefel manifold; off span(W) when constrained); within 4 SE in every entry
    from popgrad.models.finetuning.observables import neuron_vectors
    from popgrad.models.finetuning.state_flow import state_gradient

    problem, options = LOSS_CASES[name]
    model = general_model(problem, seed=4, train_c_hat=True, c_hat_lr=0.7, **options)
    Y, Gamma, C_hat = _state(model, 5)
    values, vectors = np.linalg.eigh(Gamma)
    R = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    Z = np.vstack([Y, R])
    teacher, student = neuron_vectors(model, Y, Gamma, C_hat)
    sigma, xi, lam, s_out = problem.activation, problem.xi, np.asarray(problem.lam), model.s_out
    teacher_unit = teacher / np.linalg.norm(teacher, axis=1, keepdims=True)
    norms = np.linalg.norm(student, axis=1)
    rng = np.random.default_rng(8)
    samples, batch = 1_000_000, 100_000
    n, r = Z.shape
    flows = []
    for _ in range(samples // batch):
        x = rng.standard_normal((batch, n))
        z = x @ (student / norms[:, None]).T
        residual = s_out * (sigma(x @ teacher_unit.T) - sigma(z)) @ lam  # f* - f_hat
        # d/db_j (f* - f_hat)^2 = -2 (f* - f_hat) s_out lam_j sigma'(z_j) (x - z_j b_j/|b_j|) / |b_j|
        weight = -2.0 * residual[:, None] * s_out * lam * sigma.prime(z) / norms  # (batch, k)
        grad_b = weight[:, :, None] * (x[:, None, :] - z[:, :, None] * (student / norms[:, None])[None])
        G = xi * np.einsum("bjq,jl->bql", grad_b, C_hat)  # d/dU_hat
        grad_c = xi * np.einsum("bjq,ql->bjl", grad_b, Z)  # d/dc_hat_j
        if not model.unconstrained:
            G[:, : model.L.shape[1]] = 0.0
        H = np.einsum("ql,bqm->blm", Z, G)
        tangent = G - np.einsum("qm,bml->bql", Z, 0.5 * (H + np.swapaxes(H, 1, 2)))
        flows.append(np.concatenate([-tangent.reshape(batch, -1), -model.c_hat_lr * grad_c.reshape(batch, -1)], axis=1))
    flows = np.concatenate(flows)
    mean, error = flows.mean(axis=0), flows.std(axis=0, ddof=1) / np.sqrt(samples)
    dZ, dC = state_gradient(model, Z, C_hat)
    exact = np.concatenate([dZ.ravel(), dC.ravel()])
    z_scores = np.abs(mean - exact) / np.maximum(error, 1e-300)
    assert np.all(z_scores < 4.0), (z_scores.max(), exact, mean)
