"""The common convention (App. B's literal model): ``f(x) = s_out sum_i lam_i sigma(<v_i, x>)`` with
``v_i = rho (w_i + xi c_i u)``, one prefactor rho for all neurons (given, or k / (k + xi^2)) and the output
scale 1/xi by default. Each quantity against an independent route: the explicit network in R^d (Monte
Carlo, finite differences, the convention-free kernels of ``network_loss``), full-d SGD against the chains
(two-sample KS tests)."""

import json

import numpy as np
import pytest
from scipy import stats

import popgrad
from popgrad.dynamics.engine import simulate
from popgrad.models.finetuning.geometry import embedding
from popgrad.models.finetuning.model import general_model, general_model_from_dict
from popgrad.models.finetuning.population import population_drift, population_loss
from popgrad.models.finetuning.references import network_loss
from popgrad.models.finetuning.spec import FineTuningProblem, load_problem

ALPHA = 1e-3
D = 120
TRAJECTORIES = 400


# -- the specification --------------------------------------------------------------------------


def test_a_common_problem_round_trips_through_json_with_and_without_its_prefactor(tmp_path):
    for prefactor in (None, 0.37):
        problem = popgrad.random_features_problem("tanh", 4, 2.5, d=11, seed=3, convention="common", prefactor=prefactor, c_distribution="sphere")
        data = json.loads(problem.to_json())
        assert data["convention"] == "common" and data.get("prefactor") == prefactor
        again = FineTuningProblem.from_dict(data)
        assert again == problem and again.neuron_prefactor == problem.neuron_prefactor
        problem.save(tmp_path / "p.json")
        assert load_problem(tmp_path / "p.json") == problem
        model = general_model(problem, train_c_hat=True, unconstrained=True, rank=2, seed=1)
        assert general_model_from_dict(json.loads(json.dumps(model.to_dict()))) == model
    # the other conventions' files are what they were: no prefactor key
    assert "prefactor" not in popgrad.orthonormal_problem("relu", 3, 1.0).to_dict()


def test_the_defaults_are_app_b_s():
    problem = popgrad.orthonormal_problem("relu", 5, 2.0, seed=0, convention="common")
    assert problem.neuron_prefactor == 5 / 9 and problem.s_out == 0.5 and problem.output_scale == "inverse_xi"
    np.testing.assert_allclose(problem.teacher_scales, 5 / 9 * np.sqrt(1 + 4 / 5))
    model = general_model(problem)
    assert model.output_scale == "inverse_xi" and model.s_out == 0.5 and model.reduces_to_overlap
    switched = general_model(problem, output_scale="one")  # the switch stays meaningful: s_out = 1, the state chain
    assert switched.s_out == 1.0 and not switched.reduces_to_overlap
    assert general_model(problem.replace(convention="normalized")).output_scale == "one"
    assert problem.replace(prefactor=0.25).neuron_prefactor == 0.25
    assert problem.replace(prefactor=0.25).replace(convention="raw").prefactor is None  # dropped with the convention


@pytest.mark.parametrize(
    "changes, parameter, message",
    [
        (dict(prefactor=0.5), "prefactor", "common convention's"),
        (dict(convention="common", prefactor=0.0), "prefactor", r"prefactor must lie in \(0"),
        (dict(convention="common", prefactor=-1.0), "prefactor", "prefactor"),
        (dict(convention="common", prefactor=float("nan")), "prefactor", "prefactor"),
        (dict(convention="common", prefactor="half"), "prefactor", "prefactor"),
        (dict(convention="Common"), "convention", "normalized, raw, common"),
    ],
)
def test_bad_prefactors_and_conventions_name_the_parameter(changes, parameter, message):
    data = popgrad.orthonormal_problem("relu", 3, 1.0).to_dict() | changes
    with pytest.raises(ValueError, match=message) as caught:
        FineTuningProblem.from_dict(data)
    assert getattr(caught.value, "parameter", None) == parameter


def test_a_numeric_activation_is_checked_at_the_common_scales():
    # exp(z^2/5) is square-integrable at scales below sqrt(5) / 2 = 1.118: rho r = 0.4 sqrt(1 + 4) = 0.894 passes (rho 1: 2.24 fails)
    problem = popgrad.orthonormal_problem("exp(z**2/5)", 1, 2.0, convention="common", prefactor=0.4)
    assert problem.neuron_prefactor == 0.4
    with pytest.raises(ValueError, match="common neurons"):
        popgrad.orthonormal_problem("exp(z**2/5)", 1, 2.0, convention="common", prefactor=1.0)


# -- Phi and h in closed form -------------------------------------------------------------------


def _explicit_network(problem, e, u_hat):
    """The common convention's rows rho (w_i + xi c_i u) and output weights lam / xi, written out."""
    rho, xi = problem.k / (problem.k + problem.xi**2) if problem.prefactor is None else problem.prefactor, problem.xi
    teacher = rho * (e.W + xi * np.outer(problem.c, e.u))
    student = rho * (e.W + xi * np.outer(problem.c_hat, u_hat))
    return teacher, student, np.asarray(problem.lam) / xi


@pytest.mark.parametrize("activation, prefactor", [("relu", None), ("tanh", None), ("erf", 0.8), ("He_3", None)])
def test_phi_in_closed_form_is_the_monte_carlo_loss_of_the_explicit_network(activation, prefactor):
    problem = popgrad.random_features_problem(activation, 4, 2.0, d=10, seed=2, convention="common", prefactor=prefactor, c_distribution="sphere")
    sigma = problem.activation
    generator = np.random.default_rng(7)
    for m in (-0.4, 0.3):
        e = embedding(problem, m=m, seed=3)
        teacher, student, lam = _explicit_network(problem, e, e.u_hat)
        x = generator.standard_normal((400_000, e.d))
        loss = ((sigma(x @ teacher.T) - sigma(x @ student.T)) @ lam) ** 2
        mean, error = loss.mean(), loss.std(ddof=1) / np.sqrt(loss.size)
        exact = float(population_loss(problem, m))
        assert abs(exact - mean) < 4 * error, (m, exact, mean, error)


@pytest.mark.parametrize("activation", ["relu", "tanh", "He_3", "erf"])
def test_h_is_the_finite_difference_gradient_of_the_explicit_loss_in_dimension_d(activation):
    # network_loss knows no convention: rows and output weights are written out here
    problem = popgrad.random_features_problem(activation, 3, 1.7, d=9, seed=8, convention="common")
    m = 0.35
    e = embedding(problem, m=m, seed=2)

    def loss(u_hat):
        teacher, student, lam = _explicit_network(problem, e, u_hat)
        return network_loss(problem.activation, lam, teacher, student)

    frame = np.column_stack([e.basis, e.u_hat])
    q, _ = np.linalg.qr(np.column_stack([frame, np.eye(e.d)]))
    step = 1e-5
    gradient = np.zeros(e.d)
    for direction in q[:, frame.shape[1] : e.d].T:
        plus = (e.u_hat + step * direction) / np.linalg.norm(e.u_hat + step * direction)
        minus = (e.u_hat - step * direction) / np.linalg.norm(e.u_hat - step * direction)
        gradient += (loss(plus) - loss(minus)) / (2 * step) * direction
    expected = -population_drift(problem, m) * (e.u - m * e.u_hat)
    assert np.linalg.norm(gradient - expected) <= 1e-6 * np.linalg.norm(expected)
    assert loss(e.u_hat) == pytest.approx(float(population_loss(problem, m)), rel=1e-12)


def test_relu_is_homogeneous_so_common_is_raw_times_rho_squared_over_xi_squared():
    for k, xi, prefactor in [(4, 1.0, None), (9, 3.0, None), (5, 2.0, 0.3)]:
        common = popgrad.orthonormal_problem("relu", k, xi, seed=1, convention="common", prefactor=prefactor)
        raw = common.replace(convention="raw")
        rho = common.neuron_prefactor
        m = np.linspace(-1, 1, 9)
        np.testing.assert_allclose(population_drift(common, m), rho**2 / xi**2 * population_drift(raw, m), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(population_loss(common, m), rho**2 / xi**2 * population_loss(raw, m), rtol=1e-13, atol=1e-15)


def test_the_series_and_symbolic_h_are_the_closed_form():
    from popgrad.models.finetuning.series import drift_series, symbolic_drift

    for problem in (popgrad.orthonormal_problem("He_3", 2, 1.0, seed=0, convention="common"), popgrad.orthonormal_problem("erf", 3, 2.0, seed=1, convention="common", prefactor=0.6)):
        m = np.array([-0.5, 0.1, 0.6])
        closed = population_drift(problem, m)
        np.testing.assert_allclose(np.polynomial.polynomial.polyval(m, drift_series(problem, 60, order=300)), closed, rtol=1e-10, atol=1e-12)
        expression, exact = symbolic_drift(problem)
        import sympy

        values = [float(expression.subs(sympy.Symbol("m", real=True), value)) for value in m]
        np.testing.assert_allclose(values, closed, rtol=1e-10, atol=1e-12)


LOSS_CASES = {
    "rank 1 perpendicular": (popgrad.orthonormal_problem("relu", 4, 2.0, seed=0, convention="common"), dict()),
    "free, alpha, rank 2, given rho": (popgrad.random_features_problem("erf", 3, 2.5, d=20, seed=2, c_distribution="sphere", convention="common", prefactor=0.7), dict(rank=2, unconstrained=True, alpha=0.6)),
    "output scale one": (popgrad.orthonormal_problem("relu", 3, 3.0, seed=1, convention="common"), dict(output_scale="one", unconstrained=True)),
    "linearized, rank 2": (popgrad.random_features_problem("relu", 3, 1.3, d=20, seed=3, convention="common"), dict(student="linearized", rank=2)),
}


@pytest.mark.parametrize("name", LOSS_CASES)
def test_phi_on_the_state_is_the_monte_carlo_loss_of_the_explicit_network(name):
    # explicit vectors in the coordinates of F ⊕ range(R) (U_hat = [Y; R], R^T R = Gamma), written out here
    from popgrad.models.finetuning.observables import state_population_loss

    problem, options = LOSS_CASES[name]
    model = general_model(problem, seed=4, **options)
    rng = np.random.default_rng(5)
    p, r, rank_w = model.p, model.rank, model.L.shape[1]
    N = rng.standard_normal((p + r, r))
    if not model.unconstrained:
        N[:rank_w] = 0.0
    Q, _ = np.linalg.qr(N)
    Y, Gamma, C_hat = Q[:p], Q[p:].T @ Q[p:], model.C_hat + 0.3 * rng.standard_normal(model.C_hat.shape)
    W = np.zeros((problem.k, p + r))
    W[:, :rank_w] = model.L
    U = np.zeros((p + r, model.C.shape[1]))
    U[:p] = model.UF.T
    rho, xi, sigma = problem.neuron_prefactor, problem.xi, problem.activation
    s_out = 1.0 / xi if options.get("output_scale", "inverse_xi") == "inverse_xi" else 1.0
    teacher = rho * (W + xi * model.C @ U.T)
    x = rng.standard_normal((1_000_000, p + r))
    if model.student == "linearized":  # sigma(rho w.x) + sigma'(rho w.x) rho xi <U_hat c_hat_i, x>
        pre = x @ (rho * W).T
        student = sigma(pre) + sigma.prime(pre) * (x @ (rho * xi * C_hat @ Q.T).T)
    else:
        student = sigma(x @ (rho * (W + xi * C_hat @ Q.T)).T)
    loss = (s_out * (sigma(x @ teacher.T) - student) @ np.asarray(problem.lam)) ** 2
    mean, error = loss.mean(), loss.std(ddof=1) / np.sqrt(loss.size)
    exact = state_population_loss(model, Y, Gamma, C_hat)
    assert abs(exact - mean) < 4 * error, (exact, mean, error)


def test_the_loss_on_the_state_is_phi_of_m_in_the_rank_one_case():
    from popgrad.models.finetuning.observables import state_population_loss, state_population_losses

    problem = popgrad.orthonormal_problem("relu", 6, 2.2, seed=2, convention="common")
    model = general_model(problem)
    for m in (-0.7, 0.0, 0.4):
        Y = np.zeros((model.p, 1))
        Y[-1, 0] = m
        value = state_population_loss(model, Y, np.array([[1.0 - m * m]]), model.C_hat)
        many = state_population_losses(model, Y[None], np.array([[[1.0 - m * m]]]), model.C_hat[None])[0]
        assert np.isclose(value, float(population_loss(problem, m)), rtol=1e-12) and np.isclose(many, value, rtol=1e-12)


# -- one SGD step: the kernels against finite differences of the explicit network ------------------


@pytest.mark.parametrize("method", ["fast", "full"])
@pytest.mark.parametrize("options", [dict(unconstrained=True, rank=2, alpha=0.5), dict(), dict(output_scale="one", unconstrained=True), dict(student="linearized", unconstrained=True)])
def test_one_full_d_step_moves_along_the_finite_difference_gradient(options, method):
    # the sample x the kernel draws from stream (seed, TRAJECTORIES, 0), in the kernel's geometry ('fast': F on
    # the first axes; 'full': the problem's own W and u). At eta = 1e-7 one step moves C_hat by
    # -eta_c dL/dC_hat and U^T U_hat by -eta U^T (tangent, projected gradient), up to O(eta^2)
    from popgrad.models.finetuning.initial import embedded_geometry, initial_frames
    from popgrad.numerics import random_streams as streams

    problem = popgrad.random_features_problem("tanh", 3, 2.5, d=12, seed=3, c_distribution="sphere", convention="common")
    model = general_model(problem, train_c_hat=True, c_hat_lr=2.0, seed=1, **options)
    d, eta, seed = 12, 1e-7, 4
    run = simulate(model, d, eta, [0, 1], trajectories=1, method=method, seed=seed, fast_path=False)
    rank_w = model.L.shape[1]
    if method == "fast":
        W = np.zeros((problem.k, d))
        W[:, :rank_w] = model.L
        U = np.zeros((model.C.shape[1], d))
        U[:, : model.p] = model.UF
        V = initial_frames(model, d, 1, seed, 0)[0]
        QW = np.eye(rank_w, d)
        QF = np.eye(model.p, d)
    else:
        W, QF_columns, U = embedded_geometry(model, d, seed)
        QF = QF_columns.T
        QW = QF[:rank_w]
        V = initial_frames(model, d, 1, seed, 0, QW=np.ascontiguousarray(QW), QF=QF_columns)[0]
    state = np.empty(4, dtype=np.uint64)
    streams.seed_stream(np.uint64(seed), streams.TRAJECTORIES, 0, state)
    x = np.empty(d)
    streams.fill_normal(state, x)
    sigma, xi, lam, rho = problem.activation, problem.xi, np.asarray(problem.lam), problem.k / (problem.k + problem.xi**2)
    s_out = 1.0 if options.get("output_scale") == "one" else 1.0 / xi

    def output(C, rows, linear=False):
        if linear:
            pre = rho * W @ x
            return s_out * np.sum(lam * (sigma(pre) + sigma.prime(pre) * ((rho * xi * C @ rows) @ x)))
        return s_out * np.sum(lam * sigma(rho * (W + xi * C @ rows) @ x))

    target = output(model.C, U)

    def loss(C_hat, rows):
        return (target - output(C_hat, rows, model.student == "linearized")) ** 2

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
    G = gradient(lambda rows: loss(model.C_hat, rows), V)
    if not model.unconstrained:
        G -= (G @ QW.T) @ QW
    H = V @ G.T
    tangent = G - 0.5 * (H + H.T) @ V
    overlap = lambda Y: np.einsum("sq,tcqr->tcsr", model.UF, Y)[0]  # noqa: E731
    moved = overlap(run.state["Y"])[1] - overlap(run.state["Y"])[0]
    expected = U @ (V - eta * tangent).T - U @ V.T
    assert np.allclose(moved, expected, rtol=1e-4, atol=1e-6 * eta * np.abs(tangent).max() + 1e-15)
    assert np.abs(grad_c).max() > 1e-4  # the test has something to see


# -- the chains against full-d SGD ------------------------------------------------------------------


def _ks(samples_a, samples_b):
    if max(np.ptp(samples_a), np.ptp(samples_b)) < 1e-9:
        return np.allclose(samples_a.mean(), samples_b.mean(), atol=1e-9)
    return stats.ks_2samp(samples_a, samples_b).pvalue > ALPHA


STATE_CASES = {
    "rank 1, joint, free": (popgrad.orthonormal_problem("relu", 4, 2.0, seed=1, convention="common"), dict(train_c_hat=True, c_hat_lr=0.5, unconstrained=True), 0.3),
    "random rows, joint, free, given rho": (popgrad.random_features_problem("tanh", 4, 3.0, d=D, seed=3, c_distribution="sphere", convention="common", prefactor=0.6), dict(train_c_hat=True, unconstrained=True), 0.6),
    "output scale one, rank 2, alpha": (popgrad.orthonormal_problem("erf", 4, 2.0, seed=0, convention="common"), dict(output_scale="one", rank=2, alpha=0.5, train_c_hat=True), 0.3),
    "linearized, free": (popgrad.orthonormal_problem("relu", 4, 2.0, seed=1, convention="common"), dict(student="linearized", unconstrained=True, train_c_hat=True), 0.3),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fast", "full"])
@pytest.mark.parametrize("name", STATE_CASES)
def test_the_state_chain_has_the_law_of_full_d_sgd(name, method):
    problem, options, delta = STATE_CASES[name]
    model = general_model(problem, seed=2, **options)
    runs = [simulate(model, D, delta=delta, checkpoints=[0, 300, 1500], trajectories=TRAJECTORIES, method=which, seed=seed, fast_path=False) for which, seed in (("chain", 11), (method, 12))]
    assert runs[0].settings["path"] == "state chain"
    for index in (1, 2):
        for observable in ("m", "c_hat_dot_c", "projection_w", "population_loss"):
            if observable not in runs[0].observables:
                continue
            samples = [run.observables[observable][:, index] for run in runs]
            assert _ks(*samples), (name, method, observable, runs[0].steps[index])
    # it moved: the law of m or of <c_hat, c> at the end is not the law at the start
    assert min(stats.ks_2samp(runs[0].observables[name][:, 0], runs[0].observables[name][:, 2]).pvalue for name in ("m", "c_hat_dot_c")) < ALPHA


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fast", "full"])
def test_the_scalar_chain_of_the_reduced_common_model_has_the_law_of_full_d_sgd_and_of_the_state_chain(method):
    # the reduced case (rank 1, frozen, u_hat in span(W)^perp, output 1/xi): its fast paths (the scalar chain,
    # rank-1 SGD in dimension d) and the general state chain, one law
    problem = popgrad.random_features_problem("relu", 5, 2.0, d=D, seed=4, convention="common")
    model = general_model(problem)
    assert model.reduces_to_overlap
    checkpoints = [0, 1000, 4000]
    scalar = simulate(model, D, delta=0.5, checkpoints=checkpoints, trajectories=TRAJECTORIES, seed=5)
    sgd = simulate(model, D, delta=0.5, checkpoints=checkpoints, trajectories=TRAJECTORIES, seed=6, method=method)
    general = simulate(model, D, delta=0.5, checkpoints=checkpoints, trajectories=TRAJECTORIES, seed=7, fast_path=False)
    assert scalar.settings["path"] == "scalar overlap chain" and general.settings["path"] == "state chain"
    for index in (1, 2):
        for other in (sgd, general):
            for name in ("m", "population_loss"):
                assert _ks(scalar.observables[name][:, index], other.observables[name][:, index]), (method, name, index)
    assert stats.ks_2samp(scalar.observables["m"][:, 0], scalar.observables["m"][:, 2]).pvalue < ALPHA


def test_the_rank_one_kernel_computes_what_the_rank_r_kernel_computes_at_rank_one(monkeypatch):
    from popgrad.models.finetuning import family
    from popgrad.models.finetuning.overlaps import general_chain_kernel

    model = general_model(popgrad.orthonormal_problem("relu", 4, 2.0, seed=1, convention="common"), seed=2, train_c_hat=True, unconstrained=True)
    run = lambda: simulate(model, D, delta=0.2, checkpoints=[0, 10, 300], trajectories=40, seed=9, hit=0.2, fast_path=False)  # noqa: E731
    fast = run()
    monkeypatch.setattr(family, "general_chain_kernel", lambda *arguments: general_chain_kernel(*arguments, generic=True))
    generic = run()
    for part in ("Y", "Gamma", "C_hat"):
        np.testing.assert_allclose(fast.state[part], generic.state[part], rtol=0.0, atol=1e-11)


# -- the command line and sweeps ------------------------------------------------------------------


def test_the_command_line_takes_the_common_convention_and_its_prefactor(capsys, tmp_path):
    from popgrad.cli import main

    assert main(["problem", "--convention", "common", "--prefactor", "0.3", "--k", "3", "--xi", "2", "--out", str(tmp_path / "p.json")]) == 0
    capsys.readouterr()
    problem = load_problem(tmp_path / "p.json")
    assert problem.convention == "common" and problem.prefactor == 0.3
    assert main(["h", "--problem", str(tmp_path / "p.json"), "--m", "0,0.5", "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(printed["h"], population_drift(problem, [0.0, 0.5]), rtol=1e-12)
    assert main(["h", "--k", "3", "--prefactor", "0.3"]) == 2
    assert "--prefactor" in capsys.readouterr().err


def test_a_sweep_cell_builds_the_common_model_and_refuses_a_stray_prefactor():
    from popgrad.sweeps.spec import sweep_spec_from_dict
    from popgrad.sweeps.tasks import build_model

    spec = sweep_spec_from_dict({"problem": {"convention": "common", "prefactor": 0.5, "k": 3, "d": 40}, "run": {"kind": "simulate", "delta": 0.2, "steps": 10}, "grid": {"xi": [1.0, 2.0]}})
    models = [build_model(cell) for cell in spec.cells()]
    assert [model.problem.neuron_prefactor for model in models] == [0.5, 0.5] and all(model.output_scale == "inverse_xi" for model in models)
    plain = sweep_spec_from_dict({"problem": {"k": 3, "d": 40}, "run": {"kind": "simulate", "delta": 0.2, "steps": 10}})
    assert "prefactor" not in plain.cells()[0]  # cells without it keep their keys and seeds
    with pytest.raises(ValueError, match="common convention's") as caught:
        sweep_spec_from_dict({"problem": {"prefactor": 0.5, "k": 3, "d": 40}, "run": {"delta": 0.2, "steps": 10}})
    assert caught.value.parameter == "prefactor"
