"""The user's contract at the Python boundary: bad input raises a ValueError/TypeError (InvalidArgument) that
names the parameter, in one line, quickly, before any work or allocation; saved reports read back whole."""

import time

import numpy as np
import pytest

import popgrad
from popgrad._validation import InvalidArgument, check_memory

PROBLEM = popgrad.orthonormal_problem("relu", k=4, xi=1.0, seed=0)


@pytest.mark.parametrize(
    "call, parameter, message",
    [
        (lambda: popgrad.simulate(PROBLEM, 10**7, 1e-8, [0, 10], trajectories=10**5, method="full"), "trajectories", "would need 8 TB of memory"),
        (lambda: popgrad.simulate(PROBLEM, 100, 1e-3, [0, 10**13]), "checkpoints", "must not exceed 1e+12 steps"),
        (lambda: popgrad.simulate(PROBLEM, 100, 1e-3, [0, 1e300]), "checkpoints", "must not exceed"),
        (lambda: popgrad.simulate(PROBLEM, 100, 1e-3, [5, 2]), "checkpoints", "strictly increasing"),
        (lambda: popgrad.simulate(PROBLEM, 100, 1e-3, list(range(0, 10**6, 10)), trajectories=10**8, method="chain"), "trajectories", "the record of 100000000 trajectories at 100000 checkpoints would need 80 TB"),
        (lambda: popgrad.orthonormal_problem("relu", 4, xi=1e300), "xi", "xi must lie in (0, 1e+50]"),
        (lambda: popgrad.orthonormal_problem("relu", 4, xi=1.0, lam=[1e200] * 4), "lam", "magnitude at most 1e+50"),
        (lambda: popgrad.load_comparison("/nonexistent/folder"), "folder", "is not a folder"),
        (lambda: popgrad.predict(PROBLEM, 100, 1e-3, [0, 10], samples=200_000, noise_samples=640), "noise_samples", "one parameter"),
    ],
)
def test_bad_input_names_the_parameter_at_once(call, parameter, message):
    begin = time.perf_counter()
    with pytest.raises(InvalidArgument) as caught:
        call()
    assert time.perf_counter() - begin < 5.0  # refused before any work (no compilation, no allocation)
    assert caught.value.parameter == parameter
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_memory_check_says_what_it_would_need():
    with pytest.raises(InvalidArgument, match=r"trajectories too large: a thing would need 1e\+03 TB of memory; this machine has .* \(hint\)"):
        check_memory(1e15, "a thing", "trajectories", " (hint)")
    check_memory(1e3, "a thing", "trajectories")  # small requests pass


def test_a_saved_report_reads_back_whole(tmp_path):
    result = popgrad.compare(PROBLEM, d=200, eta=0.05 / 200, checkpoints=[0, 2000, 20000], trajectories=16, seed=1, noise_samples=6400, hit=0.5, noise_seed=4)
    result.save(tmp_path / "report")
    again = popgrad.load_comparison(tmp_path / "report")
    assert np.array_equal(again.simulation.m, result.simulation.m) and np.array_equal(again.steps, result.steps)
    assert np.array_equal(again.simulation.hitting_steps, result.simulation.hitting_steps) and again.simulation.hit == 0.5
    assert again.verdict == result.verdict and again.conclusions == result.conclusions
    for name in result.predictions.values:
        assert np.array_equal(again.predictions.values[name], result.predictions.values[name])
    written, read = result.to_json_dict(), again.to_json_dict()
    assert read["checkpoints"] == written["checkpoints"] and read["hitting_time"] == written["hitting_time"]
    assert {key: read["provenance"][key] for key in ("noise_samples", "noise_seed", "seed", "d", "eta", "problem")} == {key: written["provenance"][key] for key in ("noise_samples", "noise_seed", "seed", "d", "eta", "problem")}


def test_an_incomplete_report_is_refused(tmp_path):
    result = popgrad.compare(PROBLEM, d=200, eta=0.05 / 200, checkpoints=[0, 2000], trajectories=4, seed=1, noise_samples=640)
    result.save(tmp_path / "report")
    (tmp_path / "report" / "INCOMPLETE").write_text("")
    with pytest.raises(InvalidArgument, match="incomplete report"):
        popgrad.load_comparison(tmp_path / "report")


def test_the_predicted_population_loss_is_phi_along_each_predicted_path():
    # from one starting point the prediction of Phi(m_t) is Phi of the predicted m_t; from the random start
    # it averages Phi over the starting quantiles (not Phi of the averaged m)
    one = popgrad.predict(PROBLEM, d=200, eta=0.05 / 200, checkpoints=[0, 1000, 8000], m0=0.1, samples=640)
    for name, values in one.values.items():
        assert np.allclose(one.loss[name], popgrad.population_loss(PROBLEM, values), rtol=1e-12)
    spread = popgrad.predict(PROBLEM, d=200, eta=0.05 / 200, checkpoints=[0, 8000], which=("gradient_flow",))
    starts = spread.initial_points
    assert spread.loss["gradient_flow"][0] == pytest.approx(np.mean(popgrad.population_loss(PROBLEM, starts)), rel=1e-12)
    assert spread.loss["gradient_flow"][0] != pytest.approx(float(popgrad.population_loss(PROBLEM, np.mean(starts))), rel=1e-9)


def _public_callables():
    import inspect

    for name in popgrad.__all__:
        value = getattr(popgrad, name)
        if inspect.isfunction(value) or (inspect.isclass(value) and not issubclass(value, Exception)):
            yield name
        elif name == "precision":  # a contextmanager-wrapped function
            yield name


def _section(doc: str, title: str) -> str:
    underline = "\n" + "-" * len(title) + "\n"
    if title + underline not in doc:
        return ""
    rest = doc.split(title + underline, 1)[1]
    ends = [rest.find("\n\n" + other + "\n") for other in ("Parameters", "Attributes", "Returns", "Raises", "Examples", "Notes")]
    return rest[: min([e for e in ends if e >= 0], default=len(rest))]


@pytest.mark.parametrize("name", sorted(_public_callables()))
def test_every_public_callable_documents_its_parameters_and_result(name):
    # numpy docstrings: a function names each argument under Parameters and has Returns; a class names
    # each constructor argument under Parameters or Attributes
    import inspect

    value = getattr(popgrad, name)
    doc = inspect.getdoc(value)
    parameters = [p for p in inspect.signature(value).parameters if p not in ("args", "kwargs")]
    if inspect.isclass(value):
        section = _section(doc, "Parameters") + _section(doc, "Attributes")
    else:
        assert "Returns\n-------\n" in doc, f"{name}: no Returns section"
        section = _section(doc, "Parameters")
    for parameter in parameters:
        names = [line.split(" : ")[0].replace(",", " ").split() for line in section.splitlines() if line and not line[0].isspace()]
        assert any(parameter in entry for entry in names), f"{name}: {parameter} undocumented"


@pytest.mark.slow
def test_a_stiff_prediction_is_solved_and_one_that_fails_keeps_the_simulation(tmp_path, monkeypatch):
    from popgrad.models.finetuning import predictions

    # at eta = 0.5 (delta = 50) the finite-step ODE is stiff: dopri5 gives up within its budget and the
    # implicit Radau method takes over
    stiff = popgrad.predict(PROBLEM, d=100, eta=0.5, checkpoints=[0, 10, 1000, 10**6], m0=0.0, which=("finite_step_ode",), noise_samples=6400)
    assert not stiff.failures and np.all(np.isfinite(stiff.values["finite_step_ode"]))
    with pytest.raises(popgrad.SolverFailed, match="dopri5 took more than"):
        popgrad.solve(popgrad.DriftODE(popgrad.drift_interpolant(PROBLEM).interpolant, 0.5, stiff.noise.N, 0.125, stiff.noise.N_error, 0.0, True), [0.0], [0, 10**6], max_steps=predictions.DOPRI5_STEPS)
    # with no budget left every ODE prediction fails: each is reported with its reason, and the
    # simulation, the population map and the report are kept
    monkeypatch.setattr(predictions, "DOPRI5_STEPS", 20)
    result = popgrad.compare(PROBLEM, d=100, eta=0.5, checkpoints=[0, 10, 1000], trajectories=8, m0=0.0, seed=1, noise_samples=6400)
    assert np.all(np.isfinite(result.simulation.m)) and np.all(np.isfinite(result.predictions.values["population_map"]))
    assert {name for name, conclusion in result.conclusions.items() if conclusion == "failed"} == {"gradient_flow", "finite_step_ode", "exact_normalization_ode"}
    assert "gradient_flow: failed (dopri5 took more than 20 steps" in result.verdict and "then radau: more than 20" in result.verdict
    result.save(tmp_path / "report")
    again = popgrad.load_comparison(tmp_path / "report")
    assert again.conclusions == result.conclusions and again.predictions.failures == result.predictions.failures


def test_the_netcdf_file_holds_the_dataset_with_names_and_units(tmp_path):
    # written with scipy (saving needs no xarray), read back by xarray as the Dataset to_dataset() builds
    import xarray as xr

    result = popgrad.compare(PROBLEM, d=200, eta=0.05 / 200, checkpoints=[0, 2000], trajectories=8, seed=1, noise_samples=640, hit=0.5)
    result.save(tmp_path)
    saved, built = xr.open_dataset(tmp_path / "comparison.nc", engine="scipy").load(), result.to_dataset()
    assert sorted(saved.data_vars) == sorted(built.data_vars) and sorted(saved.coords) == sorted(built.coords)
    for name in list(built.data_vars) + list(built.coords):
        assert np.array_equal(saved[name].values, built[name].values, equal_nan=True), name
        assert saved[name].attrs["long_name"] and saved[name].attrs["units"], name
    assert saved.attrs["verdict"] == result.verdict


def test_step_size_and_record_by_the_command_lines_names():
    # delta = eta d and steps (21 checkpoints) are the CLI's --delta and --steps; the run is the same
    problem = popgrad.orthonormal_problem("relu", 4, 1.0, seed=0)
    by_delta = popgrad.simulate(problem, 100, delta=0.1, steps=1000, trajectories=4, seed=1)
    by_eta = popgrad.simulate(problem, 100, 0.001, popgrad.checkpoint_grid(1000), trajectories=4, seed=1)
    assert by_delta.eta == 0.001 and np.array_equal(by_delta.steps, by_eta.steps) and np.array_equal(by_delta.m, by_eta.m)
    p = popgrad.predict(problem, 100, delta=0.1, steps=1000, m0=0.0, which=("gradient_flow",))
    q = popgrad.predict(problem, 100, 0.001, popgrad.checkpoint_grid(1000), m0=0.0, which=("gradient_flow",))
    assert np.array_equal(p.values["gradient_flow"], q.values["gradient_flow"])
    for arguments, parameter in [(dict(eta=0.1, delta=1.0, steps=10), "delta"), (dict(steps=10), "eta"), (dict(eta=0.1), "checkpoints"), (dict(eta=0.1, steps=10, checkpoints=[0, 1]), "steps")]:
        with pytest.raises(ValueError) as caught:
            popgrad.simulate(problem, 100, **arguments)
        assert caught.value.parameter == parameter and "one of the two" in str(caught.value)


def test_problem_constructors_share_one_order_and_take_the_rest_by_keyword():
    import inspect

    for name in ("orthonormal_problem", "random_features_problem", "glm_problem", "claim2_problem"):
        parameters = inspect.signature(getattr(popgrad, name)).parameters
        assert list(parameters)[:3] == ["activation", "k", "xi"], name
        assert all(p.kind is p.KEYWORD_ONLY for p in list(parameters.values())[3:]), name
    # the former order random_features_problem(sigma, k, d, xi) fails loudly instead of swapping d and xi
    with pytest.raises(TypeError):
        popgrad.random_features_problem("relu", 4, 40, 1.0)
