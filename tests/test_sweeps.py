"""Sweeps: specifications, the content-hash store, the Dask executor on a real LocalCluster (processes),
faults (the whole sweep killed with SIGKILL, a worker killed mid-cell), reports and the theorems' scaling."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from popgrad.sweeps.spec import cell_key, cell_seed, load_sweep_spec, sweep_spec_from_dict
from popgrad.sweeps.store import SweepStore, open_store

def _readme_spec() -> str:
    """The README's example specification, as written there (the first ```toml block)."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    return text.split("```toml\n", 1)[1].split("```", 1)[0]


README_SPEC = _readme_spec()

#: small cells (a fraction of a second each once compiled) for the cluster tests
SMALL = {"problem": {"activation": "relu", "k": 4}, "run": {"kind": "hitting_time", "eps": 0.5, "delta": 0.05, "horizon": 60, "trajectories": 16, "seed": 3}, "grid": {"d": [100, 200, 300], "xi": [1.0, 2.0]}}


def test_the_readme_specification_works_as_written_in_toml_and_json(tmp_path):
    toml_path = tmp_path / "sweep.toml"
    toml_path.write_text(README_SPEC)
    spec = load_sweep_spec(toml_path)
    assert [cell["d"] for cell in spec.cells()] == [500, 1000, 2000, 4000] and spec.axes == ["d"]
    import tomllib

    json_path = tmp_path / "sweep.json"
    json_path.write_text(json.dumps(tomllib.loads(README_SPEC)))
    same = load_sweep_spec(json_path)
    assert same.cells() == spec.cells() and same.digest() == spec.digest()


def test_cells_are_a_product_with_zipped_axes_and_own_seeds():
    spec = sweep_spec_from_dict({"problem": {"k": 4}, "run": {"delta": 0.05, "horizon": 10}, "grid": {"d": [100, 200], "k": [2, 4, 8]}, "zip": {"eps": [0.1, 0.2], "trajectories": [8, 16]}} | {"problem": {}})
    cells = spec.cells()
    assert len(cells) == 2 * 3 * 2 and spec.axes == ["d", "k", "eps", "trajectories"]
    assert {(cell["eps"], cell["trajectories"]) for cell in cells} == {(0.1, 8), (0.2, 16)}
    keys = [cell_key(cell) for cell in cells]
    seeds = [cell_seed(cell) for cell in cells]
    assert len(set(keys)) == len(keys) and len(set(seeds)) == len(seeds)
    # a cell's seed depends on the sweep seed and its own parameters only, not on its place in the grid
    other = sweep_spec_from_dict({"run": {"delta": 0.05, "horizon": 10}, "grid": {"k": [8, 4]}, "zip": {"eps": [0.2], "trajectories": [16]}, "problem": {"d": 200}})
    match = next(cell for cell in other.cells() if cell["k"] == 4)
    assert cell_seed(match) == cell_seed(next(cell for cell in cells if cell["d"] == 200 and cell["k"] == 4 and cell["eps"] == 0.2))


@pytest.mark.parametrize(
    "data, parameter, message",
    [
        ({"run": {"delta": 0.05, "horizon": 10}, "grid": {"dd": [100]}}, "grid", "unknown axis names ['dd']"),
        ({"run": {"delta": 0.05, "horizon": 10}, "grid": {"d": []}}, "d", "non-empty list"),
        ({"run": {"delta": 0.05, "horizon": 10, "colour": 1}, "grid": {"d": [100]}}, "run", "unknown keys ['colour']"),
        ({"run": {"delta": 0.05, "eta": 0.1, "horizon": 10}, "grid": {"d": [100]}}, "delta", "exactly one of delta"),
        ({"run": {"delta": 0.05, "horizon": 10}, "grid": {"d": [100]}, "zip": {"k": [1, 2], "xi": [1.0]}}, "zip", "one length"),
        ({"run": {"delta": 0.05, "horizon": 10, "kind": "train"}, "grid": {"d": [100]}}, "kind", "kind must be one of"),
        ({"run": {"delta": 0.05, "horizon": 10}, "problem": {"d": 100}, "grid": {"d": [100]}}, "d", "more than one place"),
        ({"run": {"delta": 0.05, "horizon": 10}, "grid": {"d": [100, 100]}}, "d", "twice"),
        ({"run": {"delta": 0.05, "horizon": 10}, "grid": {"d": [100]}, "zip": {"k": [1, 1], "xi": [2.0, 2.0]}}, "zip", "same combination of values twice"),
        ({"run": {"delta": 0.05, "horizon": 10, "spacing": "cubic"}, "grid": {"d": [100]}}, "spacing", "spacing must be one of linear, log"),
        ({"run": {"delta": 0.05, "horizon": 10, "record_trajectories": "yes"}, "grid": {"d": [100]}}, "record_trajectories", "must be true or false"),
    ],
)
def test_bad_specifications_are_refused_naming_the_key(data, parameter, message):
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        sweep_spec_from_dict(data)
    assert caught.value.parameter == parameter


def test_a_store_of_another_spec_is_refused_and_cells_are_written_once(tmp_path):
    spec = sweep_spec_from_dict(SMALL)
    store = open_store(tmp_path / "store", spec)
    cell = spec.cells()[0]
    outcome = {"result": {"x": 1}, "provenance": {"seed": 1}}
    assert store.write(cell_key(cell), cell, outcome) and not store.write(cell_key(cell), cell, outcome)
    assert open_store(tmp_path / "store", spec).finished() == {cell_key(cell)}
    changed = json.loads(json.dumps(SMALL))
    changed["run"]["eps"] = 0.4
    with pytest.raises(ValueError, match=r"made by another specification \(differs in run.eps\)"):
        open_store(tmp_path / "store", sweep_spec_from_dict(changed))
    with pytest.raises(ValueError, match="holds no sweep store to resume"):
        open_store(tmp_path / "new", spec, resume=True)
    # a changed parameter is a new cell: another key, never a reuse
    assert cell_key(dict(cell, eps=0.4)) != cell_key(cell)


def _results(folder) -> dict:
    store = SweepStore(folder)
    return {record["key"]: record["result"] for record in store.records()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The small sweep, uninterrupted, on a LocalCluster of two worker processes."""
    from popgrad.sweeps.executor import run_sweep

    folder = tmp_path_factory.mktemp("reference") / "store"
    spec = sweep_spec_from_dict(SMALL)
    summary = run_sweep(spec, open_store(folder, spec), workers=2)
    assert summary["computed"] == 6 and summary["skipped"] == 0
    return folder


def _spec_file(tmp_path) -> Path:
    """The small sweep as a JSON specification file."""
    path = tmp_path / "small.json"
    path.write_text(json.dumps(SMALL))
    return path


@pytest.mark.slow
def test_one_worker_gives_the_numbers_of_two_and_rerunning_computes_nothing(reference, tmp_path):
    from popgrad.sweeps.executor import run_sweep

    spec = sweep_spec_from_dict(SMALL)
    store = open_store(tmp_path / "one", spec)
    run_sweep(spec, store, workers=1)
    assert _results(tmp_path / "one") == _results(reference)
    again = run_sweep(spec, open_store(tmp_path / "one", spec), workers=1)
    assert again["computed"] == 0 and again["skipped"] == 6


def test_in_process_gives_the_numbers_of_the_dask_workers(reference, tmp_path):
    from popgrad.sweeps.executor import run_sweep

    spec = sweep_spec_from_dict(SMALL)
    summary = run_sweep(spec, open_store(tmp_path / "here", spec), workers=0)
    assert summary["computed"] == 6
    assert _results(tmp_path / "here") == _results(reference)


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_resumes_to_the_same_results(reference, tmp_path):
    spec_path = _spec_file(tmp_path)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "popgrad", "sweep", str(spec_path), "--out", str(out), "--workers", "1", "--quiet"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "cells").glob("*.json"))) < 2:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the sweep and its Dask workers, mid-run
    process.wait()
    stored = list((out / "cells").glob("*.json"))
    assert 2 <= len(stored) < 6, len(stored)
    for path in (out / "cells").iterdir():  # no partial file reads as a result: whole JSON or a .partial name
        assert path.suffix == ".json" and json.loads(path.read_text())["result"] or path.name.endswith(".partial")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"{len(stored)} already stored" in result.stdout
    assert sorted(p.name for p in (out / "cells").glob("*.json")) == sorted(p.name for p in (reference / "cells").glob("*.json"))
    assert _results(out) == _results(reference)


@pytest.mark.slow
def test_a_worker_killed_mid_cell_is_retried_and_stored_once(reference, tmp_path, monkeypatch):
    from popgrad.sweeps.executor import run_sweep
    from popgrad.sweeps.tasks import KILL_ONCE

    marker = tmp_path / "killed-once"
    monkeypatch.setenv(KILL_ONCE, str(marker))  # the workers inherit it: the first cell kills its worker
    spec = sweep_spec_from_dict(SMALL)
    summary = run_sweep(spec, open_store(tmp_path / "store", spec), workers=2)
    assert marker.exists() and summary["computed"] == 6
    assert len(list((tmp_path / "store" / "cells").glob("*.json"))) == 6
    assert _results(tmp_path / "store") == _results(reference)


@pytest.mark.slow
def test_the_report_has_a_record_per_cell_fits_and_a_phase_diagram(reference, tmp_path, capsys):
    from popgrad.cli.main import main

    assert main(["sweep-report", str(reference), "--format", "json", "--replicates", "100", "--out", str(tmp_path / "report")]) == 0
    document = json.loads(capsys.readouterr().out)
    assert len(document["cells"]) == 6 and document["missing"] == 0
    first = document["cells"][0]
    assert first["d"] == 100 and first["xi"] == 1.0 and set(first["hitting_time"]) == {"median", "q25", "q75", "censored_fraction"}
    assert {fit["variable"] for fit in document["fits"]} == {"d", "xi"} and all(len(fit["ci"]) == 2 for fit in document["fits"])
    for name in ("sweep.json", "sweep.md", "sweep.csv", "scaling.png", "phase.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    from popgrad.sweeps.report import sweep_dataset

    dataset = sweep_dataset(SweepStore(reference))
    assert dataset["median"].dims == ("d", "xi") and dataset["median"].shape == (3, 2)
    assert dataset["median"].sel(d=100, xi=1.0).item() == first["hitting_time"]["median"]


def test_a_hitting_time_cell_agrees_with_gradient_flow_at_a_small_step():
    # delta = 0.002: the flow's hitting step (from 33 quantiles of m_0) is within 2% of the SGD median (the
    # finite step slows SGD by O(delta): about 4% at delta = 0.01)
    from popgrad.sweeps.tasks import run_cell

    spec = sweep_spec_from_dict({"problem": {"activation": "relu", "k": 8, "xi": 1.0, "d": 400}, "run": {"kind": "hitting_time", "eps": 0.5, "delta": 0.002, "horizon": 1000, "trajectories": 64, "seed": 5}})
    result = run_cell(spec.cells()[0])["result"]
    measured, predicted = result["hitting_time"]["median"], result["predicted_hitting_time"]["median"]
    assert result["hitting_time"]["censored_fraction"] == 0.0
    assert abs(measured - predicted) < 0.02 * predicted, (measured, predicted)


@pytest.mark.slow
def test_the_fine_tuning_hitting_time_grows_linearly_in_d():
    # MATH.md §4c: eta = delta / d gives T(eps) ~ d; the chain from d = 1e3 to 1e5, the exponent's bootstrap
    # interval (over trajectories) contains 1
    from popgrad.analysis.scaling import power_law_fit
    from popgrad.sweeps.tasks import run_cell

    spec = sweep_spec_from_dict({"problem": {"activation": "relu", "k": 8, "xi": 1.0}, "run": {"kind": "hitting_time", "eps": 0.5, "delta": 0.05, "horizon": 100, "trajectories": 32, "seed": 2}, "grid": {"d": [1000, 10000, 100000]}})
    results = [run_cell(cell)["result"] for cell in spec.cells()]
    fit = power_law_fit([1000, 10000, 100000], [r["hitting_steps"] for r in results], replicates=500)
    assert fit.contains(1.0), (fit.exponent, fit.ci)
    assert fit.ci[1] - fit.ci[0] < 0.1


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--workers", "-1"], "--workers must be at least 0"),
        (["--workers", "0", "--scheduler", "tcp://127.0.0.1:9"], "not allowed with"),
        (["--scheduler", "tcp://127.0.0.1:9", "--timeout", "2"], "cannot reach the Dask scheduler"),
    ],
)
def test_bad_sweep_commands_end_in_one_line(tmp_path, arguments, message, capsys):
    from popgrad.cli.main import main

    spec_path = _spec_file(tmp_path)
    begin = time.time()
    assert main(["sweep", str(spec_path), "--out", str(tmp_path / "s"), *arguments]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1 and message in error, error
    assert time.time() - begin < 30


def test_a_bad_spec_file_ends_in_one_line(tmp_path, capsys):
    from popgrad.cli.main import main

    bad = tmp_path / "bad.toml"
    bad.write_text(README_SPEC.replace("d = [500", "dim = [500"))
    assert main(["sweep", str(bad), "--out", str(tmp_path / "s")]) == 2
    error = capsys.readouterr().err
    assert "unknown axis names ['dim']" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_a_zip_list_may_repeat_a_value_when_its_rows_differ():
    spec = sweep_spec_from_dict({"run": {"horizon": 10}, "grid": {"d": [100]}, "zip": {"activation": ["relu", "tanh", "erf"], "delta": [0.05, 0.05, 0.1]}})
    assert [(cell["activation"], cell["delta"]) for cell in spec.cells()] == [("relu", 0.05), ("tanh", 0.05), ("erf", 0.1)]


def test_log_checkpoints_and_recorded_trajectories():
    from popgrad.sweeps.tasks import checkpoint_steps, run_cell

    assert checkpoint_steps(10**6, 6, "log") == [0, 1, 16, 251, 3981, 63096, 1000000]
    spec = sweep_spec_from_dict({"problem": {"k": 3, "d": 60, "train_c_hat": True}, "run": {"kind": "hitting_time", "eps": 0.5, "delta": 0.05, "steps": 400, "checkpoints": 4, "spacing": "log", "trajectories": 3, "stop_when_hit": False, "record_trajectories": True}})
    result = run_cell(spec.cells()[0])["result"]
    assert result["steps"] == [0, 1, 7, 54, 400]
    per_trajectory = np.asarray(result["trajectories"]["m"])
    assert per_trajectory.shape == (3, 5)
    # the recorded trajectories are the ones summarised
    np.testing.assert_allclose(per_trajectory.mean(axis=0), result["observables"]["m"]["mean"])


# -- c_hat_scale: the student's initial c_hat times a scale (issue 22's sensitivity tables) ----------


def test_c_hat_scale_is_optional_so_cells_without_it_are_what_they_were():
    from popgrad.sweeps.tasks import build_model

    base = {"problem": {"generator": "random", "c_distribution": "sphere", "k": 4, "d": 30, "train_c_hat": True, "rank": 2}, "run": {"kind": "simulate", "delta": 0.2, "steps": 10}}
    plain = sweep_spec_from_dict(base).cells()[0]
    assert "c_hat_scale" not in plain
    scaled = sweep_spec_from_dict(base | {"grid": {"c_hat_scale": [1.0, 0.1, 0.0]}}).cells()
    assert [cell["c_hat_scale"] for cell in scaled] == [1.0, 0.1, 0.0]
    assert len({cell_seed(cell) for cell in scaled} | {cell_seed(plain)}) == 4
    models = [build_model(cell) for cell in scaled]
    reference = build_model(plain)
    assert models[0] == reference  # scale 1 is the unscaled model
    # only the first column (the rank-1 c_hat) is scaled; the drawn extra columns stay
    assert np.allclose(models[1].C_hat[:, 0], 0.1 * reference.C_hat[:, 0]) and np.array_equal(models[1].C_hat[:, 1], reference.C_hat[:, 1])
    assert np.all(models[2].C_hat[:, 0] == 0.0) and np.array_equal(models[2].C_hat[:, 1], reference.C_hat[:, 1])


@pytest.mark.parametrize("value", [-0.5, float("nan"), float("inf"), "half", True, 2e6])
def test_a_bad_c_hat_scale_is_refused_naming_it(value):
    from popgrad._validation import InvalidArgument

    with pytest.raises(InvalidArgument, match="c_hat_scale") as info:
        sweep_spec_from_dict({"problem": {"k": 3, "d": 30, "c_hat_scale": value}, "run": {"delta": 0.2, "steps": 10}})
    assert info.value.parameter == "c_hat_scale"


def test_c_hat_scale_next_to_a_model_file_is_refused(tmp_path):
    import popgrad
    from popgrad._validation import InvalidArgument

    popgrad.orthonormal_problem("relu", 3, 1.0).save(tmp_path / "p.json")
    with pytest.raises(InvalidArgument, match="c_hat_scale"):
        sweep_spec_from_dict({"problem": {"generator": "file", "path": str(tmp_path / "p.json"), "d": 30, "c_hat_scale": 0.5}, "run": {"delta": 0.2, "steps": 10}})


@pytest.mark.slow
@pytest.mark.parametrize("convention", ["normalized", "common"])
def test_a_chain_from_c_hat_zero_has_the_law_of_full_d_sgd(convention):
    # c_hat_0 = 0: u_hat has no gradient until c_hat grows; the chain (exact in law) against full-d SGD of
    # the same cell, KS tests of m at 4 checkpoints with Bonferroni (independent seeds)
    from popgrad.reproductions.figures import spot_check

    cell = sweep_spec_from_dict({"problem": {"generator": "random", "c_distribution": "sphere", "output_scale": "inverse_xi", "activation": "relu", "k": 6, "xi": 2.0, "d": 60, "train_c_hat": True, "c_hat_lr": 3.0, "c_hat_scale": 0.0, "convention": convention}, "run": {"delta": 0.5, "horizon": 100}}).cells()[0]
    check = spot_check(cell, steps=3000, full_trajectories=200, chain_trajectories=200, seed=5)
    assert check["passed"], check
