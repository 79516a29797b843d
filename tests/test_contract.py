"""The user's contract at the Python boundary: bad input raises a ValueError/TypeError (InvalidArgument) that
names the parameter, in one line, quickly, before any work or allocation; saved reports read back whole."""

import time

import numpy as np
import pytest

import popgrad
from popgrad._validation import InvalidArgument, check_memory
from popgrad.dynamics.trajectories import checkpoint_grid

PROBLEM = popgrad.orthonormal_problem("relu", k=4, xi=1.0, seed=0)


def _unsimulated_run():
    """A run of PROBLEM (d = 100, eta = 1e-3, checkpoints [0, 10]) built without simulating: predictions are
    made from a run, and a refusal must come before any work."""
    return popgrad.Run(popgrad.general_model(PROBLEM), np.array([0, 10]), {"m": np.zeros((1, 2))}, {}, "chain", 1e-3, 100, 0)


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
        # the two names of the noise samples are one now (noise_samples); an option that none of the chosen
        # predictions takes is refused, naming it
        (lambda: popgrad.predict(_unsimulated_run(), samples=200_000), "samples", "samples is not an option of the predictions"),
        (lambda: popgrad.predict(_unsimulated_run(), which=("gradient_flow",), noise_samples=640), "noise_samples", "noise_samples is not an option of the predictions gradient_flow"),
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
    assert np.array_equal(again.run.m, result.run.m) and np.array_equal(again.steps, result.steps)
    assert np.array_equal(again.run.hitting_steps, result.run.hitting_steps) and again.run.hit == 0.5
    assert again.verdict == result.verdict and again.conclusions == result.conclusions
    # a report keeps each prediction's mean over its starts (not the per-start paths): those read back whole
    for name in result.predictions.values:
        for observable in result.predictions.values[name]:
            assert np.array_equal(again.predictions.mean(name, observable), result.predictions.mean(name, observable))
    written, read = result.to_json_dict(), again.to_json_dict()
    assert read["steps"] == written["steps"] and read["observables"] == written["observables"]
    # the run's hitting times, what this compared before (the report now also holds each prediction's own,
    # under "predicted")
    assert {key: value for key, value in read["hitting_times"].items() if key != "predicted"} == {key: value for key, value in written["hitting_times"].items() if key != "predicted"}
    # noise_samples and noise_seed are recorded per prediction now; the problem as the model it runs as
    keys = ("predictions", "seed", "d", "eta", "model")
    assert {key: read["provenance"][key] for key in keys} == {key: written["provenance"][key] for key in keys}
    assert written["provenance"]["predictions"]["finite_step_ode"]["noise_samples"] == 6400 and written["provenance"]["predictions"]["finite_step_ode"]["noise_seed"] == 4


def test_an_incomplete_report_is_refused(tmp_path):
    result = popgrad.compare(PROBLEM, d=200, eta=0.05 / 200, checkpoints=[0, 2000], trajectories=4, seed=1, noise_samples=640)
    result.save(tmp_path / "report")
    (tmp_path / "report" / "INCOMPLETE").write_text("")
    with pytest.raises(InvalidArgument, match="incomplete report"):
        popgrad.load_comparison(tmp_path / "report")


def test_the_predicted_population_loss_is_phi_along_each_predicted_path():
    # from one starting point the prediction of Phi(m_t) is Phi of the predicted m_t; from the random start
    # it averages Phi over the starting quantiles (not Phi of the averaged m)
    # (predictions come from a run: its model, d, eta, checkpoints and m0; one trajectory carries them)
    one = popgrad.predict(popgrad.simulate(PROBLEM, d=200, eta=0.05 / 200, checkpoints=[0, 1000, 8000], trajectories=1, m0=0.1), noise_samples=640)
    for name in one.values:
        assert np.allclose(one.mean(name, "population_loss"), popgrad.population_loss(PROBLEM, one.mean(name, "m")), rtol=1e-12)
    spread = popgrad.predict(popgrad.simulate(PROBLEM, d=200, eta=0.05 / 200, checkpoints=[0, 8000], trajectories=1), which=("gradient_flow",))
    starts = popgrad.initial_points(200 - PROBLEM.rank, None)  # the starting quantiles the prediction averages over
    assert np.array_equal(spread.values["gradient_flow"]["m"][:, 0], starts)
    assert spread.mean("gradient_flow", "population_loss")[0] == pytest.approx(np.mean(popgrad.population_loss(PROBLEM, starts)), rel=1e-12)
    assert spread.mean("gradient_flow", "population_loss")[0] != pytest.approx(float(popgrad.population_loss(PROBLEM, np.mean(starts))), rel=1e-9)


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
        # a ``**options`` catch-all (named now: the predictions' options) is documented as ``**options``
        names = [line.split(" : ")[0].replace(",", " ").replace("*", "").split() for line in section.splitlines() if line and not line[0].isspace()]
        assert any(parameter in entry for entry in names), f"{name}: {parameter} undocumented"


@pytest.mark.slow
def test_a_stiff_prediction_is_solved_and_one_that_fails_keeps_the_simulation(tmp_path, monkeypatch):
    from popgrad.models.finetuning import predictions

    # at eta = 0.5 (delta = 50) the finite-step ODE is stiff: dopri5 gives up within its budget and the
    # implicit Radau method takes over
    stiff = popgrad.predict(popgrad.simulate(PROBLEM, d=100, eta=0.5, checkpoints=[0, 10, 1000, 10**6], trajectories=1, m0=0.0), which=("finite_step_ode",), noise_samples=6400)
    assert not stiff.failures and np.all(np.isfinite(stiff.values["finite_step_ode"]["m"]))
    # the noise terms the prediction used (its settings: the samples and the seed, the run's by default)
    used = stiff.settings["finite_step_ode"]
    noise = popgrad.noise_estimate(PROBLEM, 100, samples=used["noise_samples"], seed=used["noise_seed"], eta=0.5)
    with pytest.raises(popgrad.SolverFailed, match="dopri5 took more than"):
        popgrad.solve(popgrad.DriftODE(popgrad.drift_interpolant(PROBLEM).interpolant, 0.5, noise.N, 0.125, noise.N_error, 0.0, True), [0.0], [0, 10**6], max_steps=predictions.DOPRI5_STEPS)
    # with no budget left every ODE prediction fails: each is reported with its reason, and the
    # simulation, the population map and the report are kept
    monkeypatch.setattr(predictions, "DOPRI5_STEPS", 20)
    result = popgrad.compare(PROBLEM, d=100, eta=0.5, checkpoints=[0, 10, 1000], trajectories=8, m0=0.0, seed=1, noise_samples=6400)
    assert np.all(np.isfinite(result.run.m)) and np.all(np.isfinite(result.predictions.values["population_map"]["m"]))
    # conclusions are per observable now: the overlap m, as before
    assert {name for name, conclusions in result.conclusions.items() if conclusions["m"] == "failed"} == {"gradient_flow", "finite_step_ode", "exact_normalization_ode"}
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
    by_eta = popgrad.simulate(problem, 100, 0.001, checkpoint_grid(1000), trajectories=4, seed=1)
    assert by_delta.eta == 0.001 and np.array_equal(by_delta.steps, by_eta.steps) and np.array_equal(by_delta.m, by_eta.m)
    # predictions take the step size and the record from the run
    p = popgrad.predict(popgrad.simulate(problem, 100, delta=0.1, steps=1000, trajectories=1, m0=0.0), which=("gradient_flow",))
    q = popgrad.predict(popgrad.simulate(problem, 100, 0.001, checkpoint_grid(1000), trajectories=1, m0=0.0), which=("gradient_flow",))
    assert np.array_equal(p.values["gradient_flow"]["m"], q.values["gradient_flow"]["m"])
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
