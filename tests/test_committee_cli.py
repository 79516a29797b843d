"""Committee machines on the command line and through the one engine: `popgrad ode`, `simulate`/`compare`
with a committee model file, the predictions' registry, and the d -> infinity ODE against the exact chain at
growing d (the gap shrinks like 1/d)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from popgrad.cli.main import main

CONTRACT = {
    "model": "committee",
    "convention": "saad_solla",
    "teacher": {"activation": "erf(z/sqrt(2))", "second_layer": [1, 1, 1], "noise": 0.0},
    "student": {"activation": "erf(z/sqrt(2))", "width": 3, "second_layer": [1, 1, 1], "train_second_layer": False},
    "overlaps": {"Q": [[0.24, 0, 0], [0, 0.25, 0], [0, 0, 0.25]], "R": [[0.01, 0, 0], [0, 0.01, 0], [0, 0, 0.01]], "T": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]},
}


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "committee.json"
    path.write_text(json.dumps(CONTRACT))
    return path


def _json(capsys, argv):
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return json.loads(captured.out)


def test_ode_json_has_the_contract_keys_and_learns(capsys, model_file):
    payload = _json(capsys, ["ode", str(model_file), "--delta", "0.5", "--times", "0,1,10,100,1000", "--format", "json"])
    assert payload["alpha"] == [0.0, 1.0, 10.0, 100.0, 1000.0]
    assert {"eps_g", "Q", "R", "a", "diverged", "fixed_points"} <= set(payload)
    assert np.asarray(payload["Q"]).shape == (5, 3, 3) and np.asarray(payload["R"]).shape == (5, 3, 3)
    # eps_g(0) from the initial overlaps in closed form: 1/2 sum K(T) - sum K(R) + 1/2 sum K(Q), K = (2/pi) arcsin(c / sqrt((1+a)(1+b)))
    def k(a, b, c):
        return 2 / math.pi * math.asin(c / math.sqrt((1 + a) * (1 + b)))

    Q, R, T = (np.asarray(CONTRACT["overlaps"][name], dtype=float) for name in ("Q", "R", "T"))
    eps0 = 0.5 * sum(k(T[n, n], T[m, m], T[n, m]) for n in range(3) for m in range(3)) - sum(k(Q[i, i], T[n, n], R[i, n]) for i in range(3) for n in range(3)) + 0.5 * sum(k(Q[i, i], Q[j, j], Q[i, j]) for i in range(3) for j in range(3))
    assert payload["eps_g"][0] == pytest.approx(eps0, rel=1e-12)
    assert payload["eps_g"][-1] < 1e-6 and not payload["diverged"]
    plateau = payload["fixed_points"]["symmetric"]
    assert plateau["escape_rate"] > 0 and plateau["residual"] < 1e-10
    assert payload["fixed_points"]["specialised"]["eps_g"] < 1e-12


def test_ode_table_and_gradient_flow(capsys, model_file):
    assert main(["ode", str(model_file), "--delta", "0.5", "--times", "0,50", "--gradient-flow", "--no-fixed-points"]) == 0
    out = capsys.readouterr().out
    assert "population gradient flow" in out and "eps_g" in out


def test_ode_reports_divergence_not_numbers(capsys, tmp_path):
    # linear units: beyond the largest stable delta the overlaps grow exponentially (erf's grow only linearly)
    linear = json.loads(json.dumps(CONTRACT))
    linear["teacher"]["activation"] = linear["student"]["activation"] = "z"
    path = tmp_path / "linear.json"
    path.write_text(json.dumps(linear))
    payload = _json(capsys, ["ode", str(path), "--delta", "4", "--times", "0,10,1000", "--format", "json", "--no-fixed-points"])
    assert payload["diverged"] is True and payload["divergence_alpha"] < 10
    assert payload["eps_g"][-1] is None  # strict JSON: null, not NaN
    assert main(["ode", str(path), "--delta", "4", "--times", "0,10"]) == 0
    assert "diverged at alpha" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["ode", "MODEL", "--times", "0,1"], "--delta"),
        (["ode", "MODEL", "--delta", "0.5", "--times", "a,b"], "--times"),
        (["ode", "MODEL", "--delta", "-1"], "delta"),
        (["ode", "MODEL", "--delta", "0.5", "--times", "10,1"], "times"),
        (["ode", "MODEL", "--delta", "0.5", "--delta-a", "0.5"], "--delta-a"),
        (["ode", "NOTCOMMITTEE", "--delta", "0.5"], "committee"),
        (["ode", "BADWIDTH", "--delta", "0.5"], "width"),
        (["ode", "MISSING", "--delta", "0.5"], "missing"),
    ],
)
def test_ode_bad_input_is_one_line_and_exit_2(capsys, tmp_path, model_file, argv, words):
    (tmp_path / "other.json").write_text(json.dumps({"activation": "relu", "lam": [1.0], "c": [1.0], "c_hat": [1.0], "xi": 1.0, "gram": [[1.0]]}))
    bad = json.loads(json.dumps(CONTRACT))
    bad["student"]["width"] = 0
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    names = {"MODEL": str(model_file), "NOTCOMMITTEE": str(tmp_path / "other.json"), "BADWIDTH": str(tmp_path / "bad.json"), "MISSING": str(tmp_path / "missing.json")}
    assert main([names.get(part, part) for part in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("popgrad: error:")
    assert words in err[-1] or words in " ".join(err)


def test_simulate_json_carries_eps_g_beside_q_and_r(capsys, model_file):
    payload = _json(capsys, ["simulate", "--problem", str(model_file), "--d", "200", "--delta", "0.5", "--steps", "2000", "--trajectories", "4", "--format", "json", "--quiet"])
    assert payload["schema"] == "popgrad.run/1"
    eps = payload["observables"]["eps_g"]
    assert len(eps["mean"]) == len(payload["steps"]) and len(eps["standard_error"]) == len(payload["steps"])
    assert np.asarray(payload["observables"]["Q"]["mean"]).shape == (len(payload["steps"]), 3, 3)
    assert np.asarray(payload["observables"]["R"]["mean"]).shape == (len(payload["steps"]), 3, 3)


def test_simulate_refuses_the_fine_tuning_switches_and_m0(capsys, model_file):
    assert main(["simulate", "--problem", str(model_file), "--d", "200", "--steps", "100", "--train-c-hat"]) == 2
    assert "committee" in capsys.readouterr().err
    assert main(["simulate", "--problem", str(model_file), "--d", "200", "--steps", "100", "--m0", "0.1"]) == 2
    assert "m0" in capsys.readouterr().err


def test_compare_judges_every_observable_against_the_ode(capsys, tmp_path, model_file):
    from popgrad.analysis.comparison import load_comparison

    out = tmp_path / "report"
    payload = _json(capsys, ["compare", "--problem", str(model_file), "--d", "500", "--delta", "0.5", "--checkpoints", "0,5000,10000,20000", "--trajectories", "64", "--format", "json", "--out", str(out), "--quiet"])
    assert set(payload["conclusions"]) == {"ode", "gradient_flow"}
    # early in the learning (alpha <= 40, before the plateau's escape) the chain at d = 500 is on the ODE
    assert payload["conclusions"]["ode"]["eps_g"] == "consistent", payload["verdict"]
    again = load_comparison(out)
    assert again.verdict == payload["verdict"]
    assert again.run.observables["Q"].shape == (64, 4, 3, 3)
    # the ODE's fixed points at the run's delta, beside the simulation (in the report's provenance): the
    # symmetric plateau is a fixed point of the ODE's own right-hand side (an independent route: its RHS there)
    from popgrad.models.committee.population import ode_expectations
    from popgrad.models.committee.spec import load_committee_model

    points = payload["provenance"]["predictions"]["ode"]["fixed_points"]
    assert set(points) == {"symmetric", "specialised"}
    plateau = points["symmetric"]
    e = ode_expectations(load_committee_model(model_file), plateau["Q"], plateau["R"], plateau["a"])
    dR, dQ = 0.5 * e.delta_nu, 0.5 * (e.delta_lambda + e.delta_lambda.T) + 0.25 * e.delta_delta  # loss 1/2, delta = 0.5
    assert np.max(np.abs(dR)) < 1e-10 and np.max(np.abs(dQ)) < 1e-10
    assert plateau["escape_rate"] > 0 and points["specialised"]["escape_rate"] == 0.0
    assert main(["compare", "--problem", str(model_file), "--d", "500", "--delta", "0.5", "--checkpoints", "0,5000", "--trajectories", "8", "--out", str(tmp_path / "text"), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "ode: symmetric fixed point eps_g" in text and "ode: specialised fixed point eps_g = 0, stable" in text


@pytest.mark.slow
def test_the_chain_approaches_the_ode_like_one_over_d():
    """Stationary eps_g with output noise (K = M = 2, tau = 0.5, delta = 0.5): chain minus ODE at d = 10 ... 160,
    fitted log-log slope with a 95% bootstrap interval (over trajectories) containing -1."""
    from popgrad import simulate
    from popgrad.models.committee.ode import integrate_ode
    from popgrad.models.committee.spec import committee_model

    model = committee_model("erf(z/sqrt(2))", width=2, teacher_width=2, noise=0.5, init={"kind": "informed", "scale": 0.1})
    alpha = np.linspace(0.0, 300.0, 61)
    window = alpha >= 100.0
    ode = integrate_ode(model, 0.5, alpha, rtol=1e-11, atol=1e-13).eps_g[window].mean()
    dims = [10, 20, 40, 80, 160]
    gaps = [simulate(model, d, delta=0.5, checkpoints=np.round(alpha * d).astype(np.int64), trajectories=256, seed=7).observables["eps_g"][:, window].mean(axis=1) - ode for d in dims]
    slope = np.polyfit(np.log(dims), np.log(np.abs([g.mean() for g in gaps])), 1)[0]
    generator = np.random.default_rng(0)
    slopes = []
    for _ in range(500):
        sample = np.array([g[generator.integers(0, g.size, g.size)].mean() for g in gaps])
        if np.all(sample < 0) or np.all(sample > 0):
            slopes.append(np.polyfit(np.log(dims), np.log(np.abs(sample)), 1)[0])
    assert len(slopes) > 450
    low, high = np.quantile(slopes, [0.025, 0.975])
    assert low <= -1.0 <= high, (slope, low, high)


def test_a_committee_that_is_the_glm_runs_the_fine_tuning_chain_bit_for_bit():
    import popgrad
    from popgrad.models.committee.spec import committee_model

    member = committee_model("He_3", width=1, teacher_width=1, constraint="sphere", convention="popgrad", init={"kind": "random", "scale": 1.0})
    assert member.reduces_to_glm and not member.replace(noise=0.1).reduces_to_glm
    run = popgrad.simulate(member, 100, delta=0.001, checkpoints=[0, 1000, 5000], trajectories=4, seed=5, hit=0.5)
    reference = popgrad.simulate(popgrad.glm_problem("He_3", 1, 1.0), 100, delta=0.001, checkpoints=[0, 1000, 5000], trajectories=4, seed=5, hit=0.5)
    assert np.array_equal(run.observables["R"][:, :, 0, 0], reference.m)
    assert np.array_equal(run.hitting_steps, reference.hitting_steps)
    # two independent closed forms: the committee's eps_g (loss without 1/2) is the fine-tuning Phi
    np.testing.assert_allclose(run.observables["eps_g"], reference.observables["population_loss"], rtol=1e-10)
    assert "GLM" in run.settings["path"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["chain"])
def test_the_glm_fast_path_and_the_committee_s_own_route_agree_in_law(method):
    from scipy import stats

    import popgrad
    from popgrad.models.committee.spec import committee_model

    member = committee_model("He_3", width=1, teacher_width=1, constraint="sphere", convention="popgrad", init={"kind": "random", "scale": 1.0})
    checkpoints = [0, 20_000, 60_000, 120_000]
    d, trajectories = 40, 300 if method == "chain" else 150
    fast = popgrad.simulate(member, d, delta=0.004, checkpoints=checkpoints, trajectories=trajectories, method=method, seed=11)
    own = popgrad.simulate(member, d, delta=0.004, checkpoints=checkpoints, trajectories=trajectories, method=method, seed=12, fast_path=False)
    assert "GLM" in fast.settings["path"] and "GLM" not in own.settings["path"]
    def merged(values):  # the law has an atom at m = ±1, which the routes reach up to rounding (KS would compare the rounding)
        return np.where(np.abs(np.abs(values) - 1.0) < 1e-9, np.sign(values), values)

    p_values = [stats.ks_2samp(merged(fast.observables["R"][:, t, 0, 0]), merged(own.observables["R"][:, t, 0, 0])).pvalue for t in range(1, len(checkpoints))]
    assert min(p_values) > 0.01 / len(p_values), p_values
    assert np.abs(fast.observables["R"][:, -1, 0, 0]).mean() > np.abs(fast.observables["R"][:, 0, 0, 0]).mean()  # it moved


def test_a_committee_model_file_sweeps(tmp_path, model_file):
    from popgrad.reproductions.base import sweep_records

    records = sweep_records({"problem": {"generator": "file", "path": str(model_file)}, "run": {"kind": "simulate", "trajectories": 4, "seed": 1, "checkpoints": 3, "method": "chain"}, "grid": {"delta": [0.5, 1.0]}, "zip": {"d": [200], "steps": [2000]}}, workers=0)
    assert [record["parameters"]["delta"] for record in records] == [0.5, 1.0]
    for record in records:
        observables = record["result"]["observables"]
        assert {"eps_g", "Q", "R", "a"} <= set(observables) and len(observables["eps_g"]["mean"]) == len(record["result"]["steps"])
        assert np.asarray(observables["Q"]["mean"]).shape == (len(record["result"]["steps"]), 3, 3)
    hitting = sweep_records({"problem": {"generator": "file", "path": str(model_file)}, "run": {"kind": "hitting_time", "eps": 0.5, "trajectories": 4, "seed": 1, "method": "chain"}, "grid": {"delta": [0.5]}, "zip": {"d": [200], "steps": [200_000]}}, workers=0)
    assert hitting[0]["result"]["hitting_time"]["censored_fraction"] == 0.0  # every student neuron within 45 degrees of a teacher's


def test_toml_model_files_work_on_the_command_line(capsys, tmp_path):
    def value(x):
        if isinstance(x, bool):
            return "true" if x else "false"
        if isinstance(x, str):
            return json.dumps(x)
        return json.dumps(x)

    lines = [f"model = {value(CONTRACT['model'])}", f"convention = {value(CONTRACT['convention'])}"]
    for section in ("teacher", "student", "overlaps"):
        lines.append(f"[{section}]")
        lines += [f"{key} = {value(item)}" for key, item in CONTRACT[section].items()]
    path = tmp_path / "committee.toml"
    path.write_text("\n".join(lines) + "\n")
    from_toml = _json(capsys, ["ode", str(path), "--delta", "0.5", "--times", "0,10", "--format", "json", "--no-fixed-points"])
    json_path = tmp_path / "committee.json"
    json_path.write_text(json.dumps(CONTRACT))
    from_json = _json(capsys, ["ode", str(json_path), "--delta", "0.5", "--times", "0,10", "--format", "json", "--no-fixed-points"])
    assert from_toml["eps_g"] == from_json["eps_g"]
    payload = _json(capsys, ["simulate", "--problem", str(path), "--d", "100", "--steps", "100", "--trajectories", "2", "--format", "json", "--quiet"])
    assert "eps_g" in payload["observables"]


def test_a_non_finite_ode_state_is_reported_as_diverged(capsys, model_file):
    from popgrad.dynamics.protocol import model_from_dict
    from popgrad.models.committee.ode import integrate_ode

    model = model_from_dict(CONTRACT)
    for delta in (1e30, 1e300):
        solution = integrate_ode(model, delta, [0.0, 1.0, 10.0])
        assert solution.diverged and not np.all(np.isfinite(solution.eps_g))
    assert main(["ode", str(model_file), "--delta", "1e300", "--times", "0,1"]) == 0
    assert "diverged" in capsys.readouterr().out


def test_the_symmetric_plateau_is_reported_only_for_a_symmetric_model(capsys, tmp_path):
    lopsided = json.loads(json.dumps(CONTRACT))
    lopsided["teacher"]["second_layer"] = [1, 2, 3]
    path = tmp_path / "lopsided.json"
    path.write_text(json.dumps(lopsided))
    payload = _json(capsys, ["ode", str(path), "--delta", "0.5", "--times", "0,10", "--format", "json"])
    assert "not applicable" in payload["fixed_points"]["symmetric"]["error"]
