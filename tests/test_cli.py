import json
import subprocess
import sys

import pytest

from popgrad.cli.main import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "popgrad", *args], capture_output=True, text=True, timeout=600)


def test_hermite_json_for_scripts(capsys):
    assert main(["hermite", "relu", "--order", "4", "--digits", "25", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["activation"] == "relu" and payload["scale"] == "1" and payload["information_exponent"] == 1
    rows = payload["coefficients"]
    assert [row["p"] for row in rows] == [0, 1, 2, 3, 4]
    assert rows[1]["exact"] == "1/2" and rows[1]["value"].startswith("0.5")
    assert rows[3]["zero"] and rows[3]["value"] == "0"
    assert rows[2]["value"] == "0.2820947917738781434740397"
    assert all(row["verified_digits"] >= 24 for row in rows)


@pytest.mark.parametrize("fmt, marker", [("markdown", "| p |"), ("latex", r"\begin{tabular}"), ("csv", "p,exact,value"), ("table", "digits verified")])
def test_hermite_formats(capsys, fmt, marker):
    assert main(["hermite", "gelu", "--order", "3", "--scale", "1.7", "--format", fmt]) == 0
    assert marker in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["hermite", "nope", "--order", "3"], "unknown 'nope'"),
        (["hermite", "relu", "--order", "-2"], "--order"),
        (["hermite", "relu", "--order", "3", "--scale", "0"], "--scale must lie in (0, inf), got 0.0"),
        (["hermite", "relu", "--order", "3", "--scale", "-1.5"], "--scale must lie in (0, inf)"),
        (["hermite", "__import__('os').system('true')", "--order", "3"], "only plain function calls"),
        (["hermite", "z.real", "--order", "3"], "attribute access"),
        (["hermite", "relu"], "--order"),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_with_status_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("popgrad: error:") and message in lines[0]
    assert "Traceback" not in result.stderr


SMALL = ["--d", "100", "--steps", "2000", "--trajectories", "8", "--noise-samples", "2000", "--quiet"]


def test_h_json_and_problem_round_trip(tmp_path, capsys):
    path = tmp_path / "problem.json"
    assert main(["problem", "--activation", "tanh", "--features", "random", "--d", "30", "--k", "3", "--seed", "4", "--out", str(path)]) == 0
    capsys.readouterr()
    assert main(["h", "--problem", str(path), "--m=-1:1:5", "--format", "json", "--plot", str(tmp_path / "h.png")]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["m"] == [-1.0, -0.5, 0.0, 0.5, 1.0] and len(payload["h"]) == 5 and len(payload["Phi"]) == 5
    assert payload["problem"] == json.loads(path.read_text())
    assert (tmp_path / "h.png").stat().st_size > 0


def test_simulate_json(capsys):
    # simulate simulates: the run's record (schema popgrad.run/1), every observable, no predictions
    assert main(["simulate", "--d", "100", "--trajectories", "8", "--quiet", "--checkpoints", "0,1000,2000", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["schema"] == "popgrad.run/1" and payload["steps"] == [0, 1000, 2000]
    assert set(payload["observables"]) == {"m", "c_hat_dot_c", "c_hat_cosine", "projection_w", "population_loss"}
    assert set(payload["observables"]["m"]) == {"mean", "standard_error", "quantiles"} and len(payload["observables"]["m"]["mean"]) == 3
    assert payload["parameters"]["eta"] == pytest.approx(0.25 / 100) and payload["parameters"]["path"] == "scalar overlap chain"


def test_compare_json_has_every_prediction_per_observable(tmp_path, capsys):
    assert main(["compare", *SMALL[:2], *SMALL[4:], "--checkpoints", "0,1000,2000", "--format", "json", "--out", str(tmp_path / "c")]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["schema"] == "popgrad.comparison/1" and payload["steps"] == [0, 1000, 2000]
    assert set(payload["observables"]["m"]["predictions"]) == {"gradient_flow", "population_map", "finite_step_ode", "exact_normalization_ode"}
    assert set(payload["conclusions"]["finite_step_ode"]) == {"m", "population_loss"}
    assert payload == json.loads((tmp_path / "c" / "comparison.json").read_text()) | {"provenance": payload["provenance"]}


def test_compare_and_run_write_reports(tmp_path, capsys):
    assert main(["compare", *SMALL, "--method", "full", "--out", str(tmp_path / "compare")]) == 0
    assert {p.name for p in (tmp_path / "compare").iterdir()} - {".popgrad-files.json"} == {"comparison.nc", "comparison.json", "comparison.png"}
    assert main(["run", *SMALL, "--chain-trajectories", "16", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "verdict [full-d SGD (8)]" in out and "verdict [chain (16)]" in out
    assert (tmp_path / "run" / "provenance.json").exists() and (tmp_path / "run" / "chain" / "comparison.nc").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["simulate", "--eta", "-1"], "--eta must lie in (0, inf), got -1.0"),
        (["simulate", "--delta", "0"], "--delta must lie in (0, inf), got 0.0"),
        (["simulate", "--eta", "0.1", "--delta", "0.2"], "not allowed with argument"),
        (["simulate", "--method", "magic"], "invalid choice"),
        (["simulate", "--checkpoints", "5,2"], "strictly increasing"),
        (["simulate", "--d", "5", "--k", "8"], "--d must lie in [11, inf), got 5"),
        (["simulate", "--m0", "3"], "--m0 must lie in [-1, 1]"),
        (["h", "--k", "0"], "--k must lie in [1, 4096]"),
        (["simulate", "--trajectories", "0"], "--trajectories must lie in [1, 100000000], got 0"),
        (["compare", "--noise-samples", "3"], "--noise-samples must lie in [64, 10000000000], got 3"),
        (["simulate", "--noise-samples", "640"], "unrecognized arguments: --noise-samples"),
        (["compare", "--rank", "2", "--m0", "0.1"], "--m0 is the rank-1 overlap"),
        (["h", "--activation", "os.system('x')"], "only plain function calls"),
        # flags that would be ignored, and values that would overflow or exceed the machine
        (["simulate", "--problem", "p.json", "--k", "5"], "--k cannot be used with --problem"),
        (["run", "--method", "chain"], "--method has no effect on popgrad run"),
        (["simulate", "--steps", "10", "--checkpoints", "0,5"], "--steps cannot be used with --checkpoints"),
        (["h", "--d", "50"], "--d has no effect here"),
        (["problem", "--features", "claim2", "--c-distribution", "sphere", "--out", "p.json"], "--c-distribution has no effect with --features claim2"),
        (["h", "--xi", "1e308"], "--xi must lie in (0, 1e+50], got 1e+308"),
        (["simulate", "--checkpoints", "0,10000000000000"], "--checkpoints must not exceed 1e+12 steps"),
        (["simulate", "--method", "full", "--d", "10000000", "--trajectories", "100000"], "--trajectories too large: full-d SGD with 100000 trajectories in dimension d = 10000000 would need 8 TB"),
    ],
)
def test_dynamics_bad_input_is_one_line_with_status_2(args, message, capsys):
    # in process, through the command line's entry point (the console script itself: the test below)
    try:
        code = main(list(args))
    except SystemExit as exit:  # argparse's own usage errors
        code = exit.code
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err and len(lines) == 1 and message in lines[0], captured.err


@pytest.mark.parametrize("args, message", [(["simulate", "--eta", "-1"], "--eta must lie in (0, inf), got -1.0"), (["simulate", "--method", "magic"], "invalid choice")])
def test_the_console_script_reports_bad_input_in_one_line_with_status_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_table_shows_the_requested_digits(capsys):
    assert main(["hermite", "gelu", "--order", "2", "--digits", "12"]) == 0
    out = capsys.readouterr().out
    assert "0.282094791774 " in out and "0.2820947917738" not in out


def test_a_bug_is_not_disguised_as_a_usage_error(monkeypatch, capsys):
    from popgrad.cli import finetuning

    def broken(args):
        raise ValueError("an internal inconsistency")  # not an InvalidArgument: a bug

    monkeypatch.setattr(finetuning, "_problem", broken)
    assert main(["problem", "--out", "unused.json"]) == 1
    err = capsys.readouterr().err
    assert "internal error: ValueError: an internal inconsistency" in err and "--traceback" in err and "Traceback" not in err
    assert main(["--traceback", "problem", "--out", "unused.json"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly():
    result = subprocess.run(f"{sys.executable} -m popgrad hermite tanh --order 40 --digits 20 | head -n 1", shell=True, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


@pytest.mark.slow  # derive --check regenerates every table (~20 s)
def test_scientific_negatives_have_their_own_status(tmp_path, capsys):
    (tmp_path / "stale").mkdir()
    assert main(["derive", "--check", "--out", str(tmp_path / "stale")]) == 3
    assert "stale derivation tables" in capsys.readouterr().out


def test_a_problem_file_sets_d_and_contradictions_are_refused(tmp_path, capsys):
    path = tmp_path / "problem.json"
    assert main(["problem", "--features", "random", "--d", "30", "--k", "3", "--out", str(path)]) == 0
    assert main(["simulate", "--problem", str(path), "--d", "80", "--steps", "10", "--trajectories", "2", "--quiet"]) == 2
    assert "--d 80 contradicts the problem's W, which has input dimension 30" in capsys.readouterr().err
    assert main(["simulate", "--problem", str(path), "--steps", "10", "--trajectories", "2", "--format", "json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["d"] == 30


def test_separate_seeds_for_the_problem_the_simulation_and_the_noise(tmp_path, capsys):
    def saved(*flags):
        path = tmp_path / "problem.json"
        assert main(["problem", "--k", "4", *flags, "--out", str(path)]) == 0
        return json.loads(path.read_text())

    # --seed alone draws the problem; --problem-seed holds it fixed while --seed varies
    assert saved("--seed", "1") != saved("--seed", "2")
    assert saved("--seed", "1", "--problem-seed", "7") == saved("--seed", "2", "--problem-seed", "7") == saved("--seed", "7")
    capsys.readouterr()

    def run(*flags):
        common = ["compare", "--k", "4", "--problem-seed", "3", "--d", "100", "--steps", "200", "--trajectories", "4", "--noise-samples", "640", "--format", "json", "--quiet", "--out", str(tmp_path / "report")]
        assert main([*common, *flags]) == 0
        payload = json.loads(capsys.readouterr().out)
        m = payload["observables"]["m"]
        band = m["predictions"]["finite_step_ode"]
        return m["mean"], (band["lower"], band["upper"]), payload["provenance"]

    means, bands, provenance = run("--seed", "5")
    same_means, other_bands, other = run("--seed", "5", "--noise-seed", "9")
    assert means == same_means and bands != other_bands
    assert (provenance["seed"], provenance["predictions"]["finite_step_ode"]["noise_seed"], other["predictions"]["finite_step_ode"]["noise_seed"]) == (5, 5, 9)
