"""One engine for every model: the model protocol, the fast paths bit for bit, m0 for every rank-1 model,
the one record and comparison (and reading 0.x reports), content equality of every spec."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import popgrad
from popgrad.analysis.comparison import compare, load_comparison
from popgrad.dynamics.engine import predict, simulate
from popgrad.dynamics.protocol import FAMILY_MODULES, family_of, model_from_dict, predictors_for
from popgrad.models.finetuning.model import general_model

DATA = Path(__file__).parent / "data"


def _pinned_problem(case):
    spec = case["spec"]
    make = {"orthonormal": popgrad.orthonormal_problem, "glm": popgrad.glm_problem, "claim2": popgrad.claim2_problem}
    if spec["features"] == "random":
        return popgrad.random_features_problem(spec["act"], spec["k"], spec["xi"], d=spec["d"], seed=3)
    return make[spec["features"]](spec["act"], spec["k"], spec["xi"], seed=3)


@pytest.mark.parametrize("index", range(5))
def test_the_rank_one_numbers_are_bit_identical_to_0x(index):
    # tests/data/rank1_pinned.json was written by popgrad 0.x's rank-1 simulate (commit 2954acf) for the
    # three methods, fixed and random starts, hitting times; the one engine's fast paths must give the same
    # bits, through a problem and through the model it stands for
    case = json.loads((DATA / "rank1_pinned.json").read_text())[index]
    spec = case["spec"]
    problem = _pinned_problem(case)
    assert problem.to_dict() == case["problem"]
    for model in (problem, general_model(problem)):
        run = simulate(model, spec["d"], 0.1 / spec["d"], spec["steps"], trajectories=6, method=spec["method"], m0=spec["m0"], seed=7, hit=spec["hit"])
        assert run.m.tolist() == case["m"] and run.state == {}
        assert (None if run.hitting_steps is None else run.hitting_steps.tolist()) == case["hits"]


def test_the_model_protocol_dispatches_by_family_and_refuses_unknown_ones():
    problem = popgrad.orthonormal_problem("relu", 3, 1.0, seed=0)
    model = general_model(problem, train_c_hat=True, rank=2)
    assert family_of(problem) is family_of(model) and family_of(model).name == "finetuning" and set(FAMILY_MODULES) >= {"finetuning"}
    assert model_from_dict(model.to_dict()) == model and model_from_dict(model.to_dict() | {"model": "finetuning"}) == model
    with pytest.raises(ValueError, match="model must be one of"):
        model_from_dict({"model": "committee-of-one"})
    with pytest.raises(ValueError, match="registered family"):
        simulate(object(), 100, 0.001, [0, 10])
    # each prediction says whether it serves a model
    served = {name: reason is None for name, (_, reason) in predictors_for(model).items()}
    assert served == {"gradient_flow": True, "population_map": False, "finite_step_ode": False, "exact_normalization_ode": False, "one_step_mean": True}
    assert all(reason is None for _, reason in predictors_for(problem).values())
    run = simulate(model, 60, 0.001, [0, 10], trajectories=2)
    with pytest.raises(ValueError, match="population_map does not serve this model"):
        predict(run, which=("population_map",))
    with pytest.raises(ValueError, match="map_starts is not an option"):
        predict(run, which=("gradient_flow",), map_starts=3)


def test_every_spec_compares_and_hashes_by_content():
    problem = popgrad.orthonormal_problem("relu", 3, 1.0, seed=0)
    pairs = [
        (general_model(problem), general_model(popgrad.orthonormal_problem("relu", 3, 1.0, seed=0))),
        (general_model(problem, alpha=0.5, rank=2, seed=4), general_model(problem, alpha=0.5, rank=2, seed=4)),
        (popgrad.paper_mf_problem(seed=1), popgrad.paper_mf_problem(seed=1)),
        (popgrad.gaussian_ntk_problem(seed=2), popgrad.gaussian_ntk_problem(seed=2)),
        (problem, popgrad.orthonormal_problem("relu", 3, 1.0, seed=0)),
    ]
    for first, second in pairs:
        assert first is not second and first == second and hash(first) == hash(second) and len({first, second}) == 1
    assert general_model(problem) != general_model(problem, train_c_hat=True)
    assert general_model(problem, alpha=0.5, rank=2, seed=4) != general_model(problem, alpha=0.5, rank=2, seed=5)
    assert popgrad.paper_mf_problem(seed=1) != popgrad.paper_mf_problem(seed=2) and popgrad.gaussian_ntk_problem(seed=2) != popgrad.gaussian_ntk_problem(seed=3)
    assert general_model(problem) != problem  # a model and a problem are different things, even where one stands for the other


@pytest.mark.parametrize("options", [dict(train_c_hat=True), dict(unconstrained=True, train_c_hat=True), dict(alpha=0.6), dict(student="linearized")])
def test_m0_starts_every_rank_one_model_at_its_overlap_with_the_conditioned_law(options):
    # u_hat_0 uniform on its sphere conditioned on <u, u_hat_0> = m0: m is m0 at step 0 on every method, and
    # the chain and full-d SGD (both geometries) then agree in law
    model = general_model(popgrad.orthonormal_problem("relu", 4, 1.0, seed=0), seed=2, **options)
    assert not model.reduces_to_overlap
    runs = {method: simulate(model, 80, delta=0.3, checkpoints=[0, 400], trajectories=1000, method=method, m0=0.3, seed=seed) for method, seed in (("chain", 1), ("fast", 2), ("full", 3))}
    for method, run in runs.items():
        np.testing.assert_allclose(run.m[:, 0], 0.3, atol=1e-12, err_msg=method)
    for method in ("fast", "full"):
        for name in ("m", "projection_w", "c_hat_dot_c"):
            first, second = runs["chain"].observables[name][:, 1], runs[method].observables[name][:, 1]
            if np.ptp(first) < 1e-9 and np.ptp(second) < 1e-9:
                assert np.allclose(first.mean(), second.mean(), atol=1e-9)
                continue
            assert stats.ks_2samp(first, second).pvalue > 1e-3 / 6, (method, name)  # Bonferroni over the 6 tests


def test_m0_on_the_state_chain_of_a_reduced_model_has_the_scalar_chains_law():
    model = general_model(popgrad.orthonormal_problem("relu", 4, 1.0, seed=0))
    scalar = simulate(model, 60, delta=0.3, checkpoints=[0, 300, 900], trajectories=400, m0=-0.2, seed=1)
    state = simulate(model, 60, delta=0.3, checkpoints=[0, 300, 900], trajectories=400, m0=-0.2, seed=2, fast_path=False)
    assert np.all(scalar.m[:, 0] == -0.2) and np.allclose(state.m[:, 0], -0.2, atol=1e-12)
    for index in (1, 2):
        assert stats.ks_2samp(scalar.m[:, index], state.m[:, index]).pvalue > 1e-3


def test_one_step_mean_serves_the_reduced_model_from_its_overlaps():
    # the state of a reduced run is rebuilt from m (u_hat ⟂ W: m along u, the rest outside F), so the
    # general one-step-mean map predicts the rank-1 model too, beside the h(m) predictions
    problem = popgrad.orthonormal_problem("relu", 4, 1.0, seed=0)
    result = compare(problem, 100, delta=0.2, checkpoints=[0, 1500, 3000], trajectories=100, seed=3, m0=0.1, which=("exact_normalization_ode", "one_step_mean"), noise_samples=200_000, map_starts=1, map_substeps=8)
    assert result.conclusions["one_step_mean"]["m"] == "consistent", result.verdict
    # two estimates of the same mean path, each with a band of 2 standard errors of its Monte Carlo: they
    # agree within 4 standard errors of their difference
    half = {name: 0.5 * np.abs(np.subtract(*result.predictions.band(name, "m"))) for name in ("one_step_mean", "exact_normalization_ode")}
    gap = np.abs(result.predictions.mean("one_step_mean", "m") - result.predictions.mean("exact_normalization_ode", "m"))
    assert np.all(gap <= 2.0 * np.hypot(half["one_step_mean"], half["exact_normalization_ode"]) + 1e-12), (gap, half)


def test_a_saved_report_reads_back_with_the_same_verdict_and_hitting_times(tmp_path):
    model = general_model(popgrad.orthonormal_problem("relu", 3, 1.0, seed=0), train_c_hat=True, rank=2)
    result = compare(model, 60, delta=0.2, checkpoints=[0, 200, 400], trajectories=12, seed=1, hit=0.5, flow_starts=3, map_starts=1, noise_samples=1024, map_substeps=4)
    result.save(tmp_path)
    again = load_comparison(tmp_path)
    assert again.verdict == result.verdict and again.conclusions == result.conclusions and again.model == model
    assert again.hitting_times() == result.hitting_times() and "predicted" in again.hitting_times()
    for name in result.run.observables:
        np.testing.assert_array_equal(again.run.observables[name], result.run.observables[name])
    assert json.loads((tmp_path / "comparison.json").read_text())["schema"] == "popgrad.comparison/1"


def test_reports_written_by_0x_are_read_back_with_their_statistics():
    # tests/data/report-0x-*: written by popgrad 0.x (commit 2954acf), the rank-1 and the general model's
    # formats; their statistics are recomputed from the saved arrays and agree with the saved ones
    rank_one = load_comparison(DATA / "report-0x-rank1")
    saved = json.loads((DATA / "report-0x-rank1" / "comparison.json").read_text())
    assert rank_one.model.reduces_to_overlap and rank_one.run.trajectories == 16
    for name, statistic in saved["statistics"].items():
        assert rank_one.statistic(name, "m") == pytest.approx(statistic, rel=1e-12), name
        assert (rank_one.conclusions[name]["m"] == "consistent") == saved["consistent"][name]
    assert rank_one.hitting_times()["median"] == saved["hitting_time"]["median"]
    general = load_comparison(DATA / "report-0x-general")
    saved = json.loads((DATA / "report-0x-general" / "comparison.json").read_text())
    assert general.model.train_c_hat
    for observable, record in saved["observables"].items():
        for name, predicted in record["predictions"].items():
            assert general.statistic(name, observable) == pytest.approx(predicted["max_z"], rel=1e-9, abs=1e-12), (name, observable)
    assert general.conclusions == saved["conclusions"]


def test_a_newer_schema_or_a_foreign_json_is_refused_in_one_line(tmp_path):
    import shutil

    folder = tmp_path / "report"
    shutil.copytree(DATA / "report-0x-rank1", folder)
    saved = json.loads((folder / "comparison.json").read_text())
    (folder / "comparison.json").write_text(json.dumps(saved | {"schema": "popgrad.comparison/99"}))
    with pytest.raises(ValueError, match="newer than this popgrad reads"):
        load_comparison(folder)
    (folder / "comparison.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="at the top level"):
        load_comparison(folder)


def test_sweep_cells_of_every_model_have_one_record_schema():
    from popgrad.sweeps.tasks import run_cell

    base = {"generator": "orthonormal", "activation": "relu", "k": 3, "xi": 1.0, "d": 60, "problem_seed": 0, "convention": "normalized", "c_distribution": "quantized", "eta": None, "delta": 0.2, "steps": 200, "horizon": None, "checkpoints": 2, "spacing": "linear", "method": "chain", "trajectories": 4, "seed": 0, "kind": "simulate", "eps": None, "stop_when_hit": False, "noise_samples": 640, "record_trajectories": True}
    base |= {key: None for key in ("rank", "alpha", "train_c_hat", "c_hat_lr", "unconstrained", "output_scale", "student")}
    reduced = run_cell(base)["result"]
    joint = run_cell(base | {"train_c_hat": True})["result"]
    assert set(reduced) == set(joint) == {"steps", "observables", "trajectories"}
    assert set(reduced["observables"]) == set(joint["observables"]) and set(reduced["observables"]["m"]) == {"mean", "standard_error"}
    hitting = run_cell(base | {"kind": "hitting_time", "eps": 0.5})["result"]
    assert {"hitting_steps", "hitting_time", "predicted_hitting_time"} <= set(hitting)


@pytest.mark.parametrize("options, parameter", [(dict(flow_starts=0), "flow_starts"), (dict(map_starts=-1), "map_starts"), (dict(map_batches=1), "map_batches"), (dict(noise_samples=10), "noise_samples"), (dict(map_substeps=0), "map_substeps"), (dict(noise_seed=-2), "noise_seed")])
def test_prediction_options_out_of_range_are_refused_before_the_simulation(options, parameter):
    import time

    model = general_model(popgrad.orthonormal_problem("relu", 3, 1.0, seed=0), train_c_hat=True)
    begin = time.process_time()
    with pytest.raises(ValueError) as caught:
        compare(model, 60, delta=0.2, checkpoints=[0, 10**9], trajectories=4, which=("gradient_flow", "one_step_mean"), **options)
    assert getattr(caught.value, "parameter", None) == parameter and time.process_time() - begin < 5.0  # no 1e9-step simulation


def test_an_undefined_prediction_is_never_called_consistent():
    import dataclasses

    from popgrad.analysis.comparison import Comparison

    model = general_model(popgrad.orthonormal_problem("relu", 3, 1.0, seed=0), train_c_hat=True)
    result = compare(model, 40, delta=0.2, checkpoints=[0, 100, 200], trajectories=16, which="gradient_flow", flow_starts=2)
    values = {name: np.full_like(array, np.nan) for name, array in result.predictions.values["gradient_flow"].items()}
    broken = Comparison(result.run, dataclasses.replace(result.predictions, values={"gradient_flow": values}))
    assert set(broken.conclusions["gradient_flow"].values()) == {"undefined"} and broken.consistent == {"gradient_flow": False}


def test_a_teacher_in_span_w_has_an_orthonormal_basis_of_f_and_states_rebuilt_from_m_keep_u_s_sign():
    from popgrad.models.finetuning.initial import embedded_geometry, states_from_overlap
    from popgrad.models.finetuning.observables import state_observables

    problem = popgrad.random_features_problem("relu", 3, 1.0, d=10, seed=0)
    inside = problem.W[0] + 0.5 * problem.W[1]
    model = general_model(problem, U=inside / np.linalg.norm(inside), unconstrained=True, train_c_hat=True)
    W, QF, U = embedded_geometry(model, 10, seed=1)
    np.testing.assert_allclose(QF.T @ QF, np.eye(QF.shape[1]), atol=1e-12)
    np.testing.assert_allclose(W, problem.W, atol=1e-12)
    np.testing.assert_allclose(U[0], inside / np.linalg.norm(inside), atol=1e-12)
    # an explicit u ⟂ W whose coordinate along F's last axis came out negative in 0.x's QR
    orthogonal = popgrad.random_features_problem("relu", 2, 1.0, d=6, seed=3)
    u = np.zeros(6)
    u[5] = 1.0
    u -= orthogonal.W.T @ np.linalg.solve(orthogonal.W @ orthogonal.W.T, orthogonal.W @ u)
    reduced = general_model(orthogonal, U=u / np.linalg.norm(u))
    assert reduced.reduces_to_overlap and reduced.UF[0, -1] > 0
    Y, Gamma, C_hat = states_from_overlap(reduced, np.array([0.3, -0.6]))
    np.testing.assert_allclose(state_observables(reduced, Y, Gamma, C_hat)["m"], [0.3, -0.6], atol=1e-14)
