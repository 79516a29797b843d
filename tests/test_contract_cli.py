"""The user's contract, round 3 (issue 23), classes 2-6, 8, 11 and 12 on the command line, in process.

Each class is a table of its members (every example of the issue among them), run through
:func:`popgrad.cli.main.main`; refusals are checked as in ``test_contract_files.py``: exit 2, one line on
stderr naming what the caller wrote, no traceback, nothing written, little CPU time.
"""

import json
import os
import shutil
import stat

import pytest

from popgrad.cli.main import main
from test_contract_files import SPEC, _run_refused, _strict

# ------------------------------------------------------------------------------------------------
# class 3: sweep stores that a bad specification cannot poison
# ------------------------------------------------------------------------------------------------

#: specifications that parse but are refused (before this round, most of them after the store was made):
#: (name, changes to SPEC's sections, what the message names)
BAD_SPECS = [
    ("unknown activation", {"problem": {"activation": "relu2"}}, "relu2"),
    ("unknown method", {"run": {"method": "bogus"}}, "method"),
    ("unknown convention", {"problem": {"convention": "bogus"}}, "convention"),
    ("unknown c_distribution", {"problem": {"c_distribution": "bogus"}}, "c_distribution"),
    ("rank above d", {"problem": {"rank": 40}}, "rank"),
    ("alpha above 1", {"problem": {"alpha": 2.0}}, "alpha"),
    ("unknown output_scale", {"problem": {"output_scale": "x"}}, "output_scale"),
    ("unknown student", {"problem": {"student": "x"}}, "student"),
    ("xi 1e300", {"problem": {"xi": 1e300}}, "xi"),
    ("eps above 1", {"run": {"eps": 2.0}}, "eps"),
    ("trajectories 1e9", {"run": {"trajectories": 10**9}}, "trajectories"),
    ("checkpoints 1e9", {"run": {"checkpoints": 10**9, "horizon": None, "steps": 10**10}}, "checkpoints"),
    ("negative seed", {"run": {"seed": -1}}, "seed"),
    ("seed beyond 64 bits", {"run": {"seed": 2**64}}, "seed"),
    ("method a number", {"run": {"method": 3}}, "method"),
    ("noise_samples 0", {"run": {"kind": "compare", "noise_samples": 0}}, "noise_samples"),
    ("full d too large", {"run": {"method": "full", "trajectories": 10**6}, "grid": {"d": [10**6]}}, "memory"),
    ("claim2 with sphere", {"problem": {"generator": "claim2", "c_distribution": "sphere"}}, "c_distribution"),
    ("path without generator file", {"problem": {"path": "problem.json"}}, "path"),
]


def _spec(changes: dict) -> dict:
    spec = json.loads(json.dumps(SPEC))
    for section, values in changes.items():
        spec.setdefault(section, {})
        for key, value in values.items():
            if value is None:
                spec[section].pop(key, None)
            else:
                spec[section][key] = value
    return spec


@pytest.mark.parametrize("name, changes, named", BAD_SPECS, ids=[name for name, _, _ in BAD_SPECS])
def test_a_refused_specification_leaves_no_store(name, changes, named, tmp_path, capsys):
    spec = tmp_path / "inputs" / "spec.json"
    spec.parent.mkdir()
    spec.write_text(json.dumps(_spec(changes)))
    _run_refused(["sweep", spec, "--out", tmp_path / "store", "--workers", "0"], capsys, tmp_path, str(spec), named)
    assert not (tmp_path / "store").exists()


def test_a_corrected_specification_runs_where_a_refused_one_was(tmp_path, capsys):
    # the store folder exists already (empty): the refused run leaves it empty, the corrected one fills it
    store = tmp_path / "store"
    store.mkdir()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_spec({"run": {"method": "bogus"}})))
    assert main(["sweep", str(spec), "--out", str(store), "--workers", "0", "--quiet"]) == 2
    assert list(store.iterdir()) == []
    spec.write_text(json.dumps(SPEC))
    assert main(["sweep", str(spec), "--out", str(store), "--workers", "0", "--quiet"]) == 0
    assert "2 computed" in capsys.readouterr().out


def test_a_store_without_cells_is_made_again_for_another_specification(tmp_path, capsys):
    # a manifest with no cell (left by a run stopped before its first cell, or an older popgrad) loses
    # nothing when it is replaced; a store with cells is still refused for another specification
    from popgrad.sweeps.spec import sweep_spec_from_dict
    from popgrad.sweeps.store import open_store

    store = tmp_path / "store"
    open_store(store, sweep_spec_from_dict(_spec({"run": {"seed": 7}})))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    assert main(["sweep", str(spec), "--out", str(store), "--workers", "0", "--quiet"]) == 0
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_spec({"run": {"seed": 7}})))
    assert main(["sweep", str(other), "--out", str(store), "--workers", "0", "--quiet"]) == 2
    assert "made by another specification (differs in run.seed)" in capsys.readouterr().err


def test_an_interrupted_sweep_before_its_first_cell_leaves_no_store(tmp_path, capsys, monkeypatch):
    from popgrad.sweeps import executor

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(executor, "run_cell", interrupted)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "store"), "--workers", "0", "--quiet"]) == 130
    assert not (tmp_path / "store").exists()
    assert capsys.readouterr().err.strip() == "popgrad: interrupted"


def _tamper_result(path):
    record = json.loads(path.read_text())
    record["result"]["steps"][-1] += 1
    path.write_text(json.dumps(record))


def _tamper_parameters(path):
    record = json.loads(path.read_text())
    record["parameters"]["k"] = 3
    record.pop("checksum")
    path.write_text(json.dumps(record))


def _drop_checksum_keep_parameters(path):
    record = json.loads(path.read_text())
    record.pop("checksum")
    path.write_text(json.dumps(record))


#: cells whose content does not match: (how, whether the cell still counts)
TAMPERED = {"result edited": (_tamper_result, False), "parameters edited": (_tamper_parameters, False), "no checksum, parameters hash to the key": (_drop_checksum_keep_parameters, True)}


@pytest.mark.parametrize("kind", sorted(TAMPERED))
def test_a_cell_whose_content_does_not_match_is_computed_again(kind, tmp_path, capsys):
    from popgrad.sweeps.store import SweepStore

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    store = tmp_path / "store"
    assert main(["sweep", str(spec), "--out", str(store), "--workers", "0", "--quiet"]) == 0
    cells = sorted((store / "cells").glob("*.json"))
    tamper, counts = TAMPERED[kind]
    tamper(cells[0])
    assert (cells[0].stem in SweepStore(store).finished()) == counts
    capsys.readouterr()
    assert main(["sweep", str(spec), "--out", str(store), "--workers", "0", "--quiet"]) == 0
    assert ("2 already stored" if counts else "1 already stored, 1 computed") in capsys.readouterr().out
    assert SweepStore(store).finished() == {cell.stem for cell in cells}


# ------------------------------------------------------------------------------------------------
# class 4: no file popgrad did not write is replaced unless --force; --out - is stdout or refused
# ------------------------------------------------------------------------------------------------

NTK_BUILD = ["ntk", "build", "--m", "2", "--n", "2", "--data", "2"]
TINY_PROBLEM = ["--k", "2"]

#: (name, arguments with {out} for the output, the user's file the command would replace (relative to
#: {out}, or "" when {out} is the file), and the option refused)
USER_FILES = [
    ("problem --out FILE", ["problem", *TINY_PROBLEM, "--out", "{out}"], "", "--out"),
    ("simulate --out FILE", ["simulate", *TINY_PROBLEM, "--d", "20", "--steps", "10", "--trajectories", "2", "--out", "{out}"], "", "--out"),
    ("h --plot FILE", ["h", *TINY_PROBLEM, "--plot", "{out}"], "", "--plot"),
    ("ntk build --out FILE", [*NTK_BUILD, "--out", "{out}"], "", "--out"),
    ("ntk threshold --plot FILE", ["ntk", "threshold", "--m", "2", "--n", "2", "--data", "2", "--ranks", "1", "--instances", "1", "--starts", "1", "--plot", "{out}"], "", "--plot"),
    ("compare --out DIR", ["compare", *TINY_PROBLEM, "--d", "20", "--steps", "10", "--out", "{out}"], "comparison.json", "--out"),
    ("run --out DIR (model.json)", ["run", *TINY_PROBLEM, "--d", "20", "--steps", "10", "--out", "{out}"], "model.json", "--out"),
    ("run --out DIR (full/comparison.png)", ["run", *TINY_PROBLEM, "--d", "20", "--steps", "10", "--out", "{out}"], "full/comparison.png", "--out"),
    ("reproduce --out DIR (README.md)", ["reproduce", "jlr", "--quick", "--out", "{out}"], "README.md", "--out"),
    ("reproduce all --out DIR (a report)", ["reproduce", "all", "--quick", "--out", "{out}"], "fig2.md", "--out"),
    ("derive --out DIR", ["derive", "--out", "{out}"], "hermite.md", "--out"),
    ("sweep-report --out DIR", ["sweep-report", "{store}", "--out", "{out}", "--replicates", "10"], "sweep.md", "--out"),
]


@pytest.mark.parametrize("name, arguments, user_file, option", USER_FILES, ids=[row[0] for row in USER_FILES])
def test_a_file_popgrad_did_not_write_is_never_replaced(name, arguments, user_file, option, tmp_path, capsys):
    out = tmp_path / "out"
    target = out / user_file if user_file else out
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("the user's own\n")
    store = tmp_path / "store"
    if "{store}" in arguments:
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps(SPEC))
        assert main(["sweep", str(spec), "--out", str(store), "--workers", "0", "--quiet"]) == 0
        capsys.readouterr()
    command = [a.replace("{out}", str(out)).replace("{store}", str(store)) for a in arguments]
    _run_refused(command, capsys, tmp_path, option, str(target))
    assert target.read_text() == "the user's own\n"


def test_force_replaces_and_popgrads_own_file_is_replaced_without_it(tmp_path, capsys):
    path = tmp_path / "problem.json"
    path.write_text("the user's own\n")
    assert main(["problem", "--k", "2", "--out", str(path), "--force"]) == 0
    assert json.loads(path.read_text())["activation"] == "relu"
    assert main(["problem", "--k", "3", "--out", str(path)]) == 0  # popgrad's own: rerunning replaces it
    path.write_text(path.read_text().replace('"relu"', '"tanh"'))  # edited by the user: theirs now
    capsys.readouterr()
    assert main(["problem", "--k", "2", "--out", str(path)]) == 2
    assert "give --force" in capsys.readouterr().err and '"tanh"' in path.read_text()


def test_a_symlinked_out_stays_a_link(tmp_path, capsys):
    target = tmp_path / "target.json"
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert main(["problem", "--k", "2", "--out", str(link)]) == 0  # a dangling link: its target is made
    assert link.is_symlink() and json.loads(target.read_text())["activation"] == "relu"
    assert main(["problem", "--k", "3", "--out", str(link)]) == 0  # through the link, popgrad's own target
    assert link.is_symlink() and len(json.loads(target.read_text())["lam"]) == 3


@pytest.mark.parametrize("arguments", [["problem", "--k", "2", "--out", "-"], [*NTK_BUILD, "--out", "-"]], ids=["problem", "ntk build"])
def test_out_dash_prints_the_json(arguments, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(arguments) == 0
    assert isinstance(_strict(capsys.readouterr().out), dict)
    assert list(tmp_path.iterdir()) == []  # no file named '-'


DASH_REFUSED = [
    ("simulate", ["simulate", "--k", "2", "--d", "20", "--steps", "10", "--out", "-"], "--out"),
    ("h --plot", ["h", "--k", "2", "--plot", "-"], "--plot"),
    ("ntk threshold --plot", ["ntk", "threshold", "--plot", "-"], "--plot"),
    ("compare", ["compare", "--k", "2", "--d", "20", "--out", "-"], "--out"),
    ("run", ["run", "--k", "2", "--out", "-"], "--out"),
    ("reproduce", ["reproduce", "jlr", "--quick", "--out", "-"], "--out"),
    ("derive", ["derive", "--out", "-"], "--out"),
    ("sweep", ["sweep", "{spec}", "--out", "-"], "--out"),
    ("sweep-report", ["sweep-report", "{store}", "--out", "-"], "--out"),
]


@pytest.mark.parametrize("name, arguments, option", DASH_REFUSED, ids=[row[0] for row in DASH_REFUSED])
def test_out_dash_is_refused_where_the_output_is_not_text(name, arguments, option, tmp_path, capsys, monkeypatch):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    store = tmp_path / "store"
    if "{store}" in arguments:
        assert main(["sweep", str(spec), "--out", str(store), "--workers", "0", "--quiet"]) == 0
        capsys.readouterr()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    command = [a.replace("{spec}", str(spec)).replace("{store}", str(store)) for a in arguments]
    _run_refused(command, capsys, work, option, "standard output")


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_output_files_respect_the_umask(umask, tmp_path, capsys):
    previous = os.umask(umask)
    try:
        assert main(["problem", "--k", "2", "--out", str(tmp_path / "problem.json")]) == 0
        assert main(["compare", "--k", "2", "--d", "20", "--steps", "10", "--trajectories", "2", "--noise-samples", "640", "--quiet", "--out", str(tmp_path / "report")]) == 0
    finally:
        os.umask(previous)
    for path in [tmp_path / "problem.json", *(tmp_path / "report").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_reproduce_writes_the_committed_reports_only_when_asked(tmp_path, capsys, monkeypatch):
    from popgrad.cli.reproduce import committed_reports

    committed = committed_reports()
    before = {path.name: path.stat().st_mtime_ns for path in committed.iterdir()}
    _run_refused(["reproduce", "jlr", "--quick", "--update-derivations"], capsys, tmp_path, "--quick")
    _run_refused(["reproduce", "jlr", "--quick", "--out", committed], capsys, tmp_path, "--update-derivations")
    _run_refused(["reproduce", "jlr", "--update-derivations", "--out", tmp_path / "x"], capsys, tmp_path, "--update-derivations")
    monkeypatch.chdir(committed.parent.parent)  # the repository's root, where derivations/paper is relative
    _run_refused(["reproduce", "jlr", "--quick", "--out", "derivations/paper"], capsys, tmp_path, "--update-derivations")
    assert {path.name: path.stat().st_mtime_ns for path in committed.iterdir()} == before
    # the default folder is popgrad-reproductions/ (here: in the current folder)
    from popgrad.cli import reproduce

    assert reproduce.DEFAULT_OUT == "popgrad-reproductions"


# ------------------------------------------------------------------------------------------------
# class 5: silently ignored or meaningless arguments are refused, naming them
# ------------------------------------------------------------------------------------------------

HUGE_SEED = str(2**64)

#: (name, arguments; {ntk} is an NTK problem file, what the message names)
IGNORED = [
    ("ntk landscape gd --gtol", ["ntk", "landscape", "{ntk}", "--rank", "1", "--method", "gd", "--gtol", "1e-3"], "--gtol"),
    ("ntk landscape gd --max-iter", ["ntk", "landscape", "{ntk}", "--rank", "1", "--method", "gd", "--max-iter", "5"], "--max-iter"),
    ("ntk landscape lbfgs --lr", ["ntk", "landscape", "{ntk}", "--rank", "1", "--lr", "0.1"], "--lr"),
    ("ntk landscape lbfgs --steps", ["ntk", "landscape", "{ntk}", "--rank", "1", "--steps", "5"], "--steps"),
    ("ntk landscape lbfgs --gd-gtol", ["ntk", "landscape", "{ntk}", "--rank", "1", "--gd-gtol", "1e-3"], "--gd-gtol"),
    ("ntk build gaussian --tokens", ["ntk", "build", "--kind", "gaussian", "--tokens", "9", "--out", "{tmp}/p.json"], "--tokens"),
    ("ntk build gaussian --activation", ["ntk", "build", "--activation", "softplus", "--out", "{tmp}/p.json"], "--activation"),
    ("ntk threshold gaussian --tokens", ["ntk", "threshold", "--tokens", "9", "--ranks", "1"], "--tokens"),
    ("ntk threshold --ranks 1,1", ["ntk", "threshold", "--ranks", "1,1"], "--ranks"),
    ("mf run --rank 11 (m = n = 10)", ["mf", "run", "--rank", "11", "--steps", "2", "--repeats", "2"], "--rank"),
    ("mf run --rank 3 (m = 2)", ["mf", "run", "--m", "2", "--rank", "3", "--steps", "2", "--repeats", "2"], "--rank"),
    ("h --plot ''", ["h", "--k", "2", "--plot", ""], "--plot"),
    ("problem --out ''", ["problem", "--k", "2", "--out", ""], "--out"),
    ("simulate --seed 2^64", ["simulate", "--k", "2", "--d", "20", "--steps", "10", "--seed", HUGE_SEED], "--seed"),
    ("problem --seed 2^64", ["problem", "--k", "2", "--seed", HUGE_SEED, "--out", "-"], "--seed"),
    ("simulate --problem-seed 2^64", ["simulate", "--k", "2", "--d", "20", "--steps", "10", "--problem-seed", HUGE_SEED], "--problem-seed"),
    ("compare --noise-seed 2^64", ["compare", "--k", "2", "--d", "20", "--steps", "10", "--noise-seed", HUGE_SEED, "--out", "{tmp}/report"], "--noise-seed"),
    ("mf run --seed 2^64", ["mf", "run", "--seed", HUGE_SEED, "--steps", "2", "--repeats", "2"], "--seed"),
    ("mf run --problem-seed 2^64", ["mf", "run", "--problem-seed", HUGE_SEED, "--steps", "2", "--repeats", "2"], "--problem-seed"),
    ("ntk build --seed 2^64", ["ntk", "build", "--seed", HUGE_SEED, "--out", "{tmp}/p.json"], "--seed"),
    ("ntk threshold --seed 2^64", ["ntk", "threshold", "--seed", HUGE_SEED, "--ranks", "1"], "--seed"),
    ("ntk landscape --seed 2^64", ["ntk", "landscape", "{ntk}", "--rank", "1", "--seed", HUGE_SEED], "--seed"),
    ("sweep-report --replicates 2^64", ["sweep-report", "{tmp}/none", "--replicates", HUGE_SEED], ""),
]


@pytest.fixture(scope="module")
def ntk_problem(tmp_path_factory):
    path = tmp_path_factory.mktemp("ntk") / "ntk.json"
    assert main(["ntk", "build", "--m", "2", "--n", "2", "--data", "2", "--out", str(path)]) == 0
    return path


@pytest.mark.parametrize("name, arguments, named", IGNORED, ids=[row[0] for row in IGNORED])
def test_an_ignored_or_meaningless_argument_is_refused_naming_it(name, arguments, named, ntk_problem, tmp_path, capsys):
    command = [a.replace("{ntk}", str(ntk_problem)).replace("{tmp}", str(tmp_path)) for a in arguments]
    _run_refused(command, capsys, tmp_path, named)


def _api_cases():
    import popgrad

    problem = popgrad.orthonormal_problem("relu", 2, 1.0)
    rng_cells = [[100.0, 110.0], [1000.0, 1100.0]]
    yield "progress='yes'", lambda: popgrad.simulate(problem, 20, 0.001, [0, 10], trajectories=2, progress="yes"), "progress"
    yield "progress=1", lambda: popgrad.simulate(problem, 20, 0.001, [0, 10], trajectories=2, progress=1), "progress"
    yield "power_law_fit(level=2)", lambda: popgrad.power_law_fit([100, 1000], rng_cells, level=2), "level"
    yield "power_law_fit(level=0)", lambda: popgrad.power_law_fit([100, 1000], rng_cells, level=0), "level"
    yield "power_law_fit(level=1)", lambda: popgrad.power_law_fit([100, 1000], rng_cells, level=1.0), "level"
    yield "power_law_fit(seed=2^64)", lambda: popgrad.power_law_fit([100, 1000], rng_cells, seed=2**64), "seed"
    yield "moment_tensor(l=-1)", lambda: popgrad.moment_tensor(problem, -1, 1), "l"
    yield "moment_tensor(s=-1)", lambda: popgrad.moment_tensor(problem, 1, -1), "s"
    yield "moment_tensor(l=1.5)", lambda: popgrad.moment_tensor(problem, 1.5, 1), "l"
    yield "complex m", lambda: popgrad.population_drift(problem, 0.5 + 0.1j), "m"
    yield "complex m in a list", lambda: popgrad.population_drift(problem, [0.5, 0.5 + 0.1j]), "m"
    yield "string m", lambda: popgrad.population_drift(problem, "0.5"), "m"
    yield "string m (loss)", lambda: popgrad.population_loss(problem, "0.5"), "m"
    yield "strings in m", lambda: popgrad.population_drift(problem, ["0.5", "0.1"]), "m"
    yield "boolean m", lambda: popgrad.population_drift(problem, True), "m"
    yield "string scale", lambda: popgrad.hermite_coefficients("relu", 3, "1"), "scale"
    yield "string lam", lambda: popgrad.orthonormal_problem("relu", 2, 1.0, lam=["1", "1"]), "lam"
    yield "complex lam", lambda: popgrad.orthonormal_problem("relu", 2, 1.0, lam=[1 + 1j, 1]), "lam"
    yield "seed 2^64", lambda: popgrad.orthonormal_problem("relu", 2, 1.0, seed=2**64), "seed"
    yield "mf rank above min(m, n)", lambda: popgrad.paper_mf_problem(10, 10, 100, 11), "rank"


@pytest.mark.parametrize("name, call, parameter", list(_api_cases()), ids=[case[0] for case in _api_cases()])
def test_an_ignored_or_meaningless_api_argument_is_refused_naming_it(name, call, parameter):
    from popgrad._validation import InvalidArgument

    with pytest.raises(InvalidArgument) as caught:
        call()
    assert caught.value.parameter == parameter, (caught.value.parameter, str(caught.value))
    assert parameter in str(caught.value) and "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------------------
# class 6: messages name what the caller wrote
# ------------------------------------------------------------------------------------------------


def _api_naming_cases():
    import popgrad

    yield "dual_kernel(s1=0)", lambda: popgrad.dual_kernel("relu", 0.5, s1=0), "s1", "scale"
    yield "dual_kernel(s2=-1)", lambda: popgrad.dual_kernel("relu", 0.5, s2=-1), "s2", "scale"
    yield "information_exponent(max_order=-1)", lambda: popgrad.information_exponent("relu", max_order=-1), "max_order", None
    yield "lam of the wrong length", lambda: popgrad.orthonormal_problem("relu", 3, 1.0, lam=[1, 1]), "lam", "gram"
    yield "lam of the wrong length (glm)", lambda: popgrad.glm_problem("relu", 3, 1.0, lam=[1, 1]), "lam", "gram"
    yield "c_distribution", lambda: popgrad.orthonormal_problem("relu", 3, 1.0, c_distribution="x"), "c_distribution", None

    def sweep(**options):
        import tempfile

        spec = popgrad.sweep_spec_from_dict({"problem": {"k": 2}, "run": {"delta": 0.05, "horizon": 5, "trajectories": 2, "checkpoints": 2}, "grid": {"d": [20]}})
        return popgrad.run_sweep(spec, popgrad.open_store(tempfile.mkdtemp() + "/store", spec), **options)

    yield "run_sweep(timeout=-1)", lambda: sweep(timeout=-1, scheduler="tcp://127.0.0.1:9"), "timeout", "convert"
    yield "run_sweep(timeout='x')", lambda: sweep(timeout="x", workers=0), "timeout", "convert"
    yield "run_sweep(progress='yes')", lambda: sweep(progress="yes", workers=0), "progress", None


@pytest.mark.parametrize("name, call, parameter, wrong", list(_api_naming_cases()), ids=[case[0] for case in _api_naming_cases()])
def test_an_api_message_names_the_argument_the_caller_gave(name, call, parameter, wrong):
    from popgrad._validation import InvalidArgument

    with pytest.raises(InvalidArgument) as caught:
        call()
    message = str(caught.value)
    assert caught.value.parameter == parameter and message.startswith(parameter), message
    assert wrong is None or wrong not in message, message


#: (name, arguments, what the message must name, what it must not)
NAMING = [
    ("--noise-seed", ["compare", "--k", "2", "--d", "20", "--steps", "10", "--noise-seed", "-1", "--out", "{tmp}/r"], "--noise-seed", "--seed "),
    ("--problem-seed", ["simulate", "--k", "2", "--d", "20", "--steps", "10", "--problem-seed", str(2**63)], "--problem-seed", "--seed "),
    ("--chain-trajectories", ["run", "--k", "2", "--chain-trajectories", "0", "--out", "{tmp}/r"], "--chain-trajectories", "--trajectories "),
    ("a problem file's xi", ["h", "--problem", "{problem}"], "xi must lie", "--xi"),
    ("a problem file's xi (simulate)", ["simulate", "--problem", "{problem}", "--steps", "10"], "xi must lie", "--xi"),
    ("--workers beyond 4096", ["sweep", "{spec}", "--out", "{tmp}/s", "--workers", "5000"], "--workers", None),
    ("the predictions' options as flags", ["compare", "--k", "2", "--d", "20", "--steps", "10", "--map-starts", "2", "--out", "{tmp}/r"], "--noise-samples", "noise_samples"),
    ("--c-distribution", ["problem", "--k", "2", "--features", "glm", "--c-distribution", "sphere", "--seed", "-1", "--out", "-"], "--seed", None),
]


@pytest.mark.parametrize("name, arguments, named, wrong", NAMING, ids=[row[0] for row in NAMING])
def test_a_command_line_message_names_the_flag_or_key_the_user_wrote(name, arguments, named, wrong, tmp_path, capsys):
    problem = tmp_path / "inputs" / "problem.json"
    problem.parent.mkdir()
    assert main(["problem", "--k", "2", "--out", str(problem)]) == 0
    problem.write_text(problem.read_text().replace('"xi": 1.0', '"xi": -1.0'))
    spec = problem.parent / "spec.json"
    spec.write_text(json.dumps(SPEC))
    capsys.readouterr()
    command = [a.replace("{tmp}", str(tmp_path)).replace("{problem}", str(problem)).replace("{spec}", str(spec)) for a in arguments]
    error = _run_refused(command, capsys, tmp_path, named)
    assert wrong is None or wrong not in error, error


# ------------------------------------------------------------------------------------------------
# class 12: a loader for simulate --out; mf and ntk have --out
# ------------------------------------------------------------------------------------------------

SIMULATIONS = [
    ("rank-1 chain with hits", ["--k", "2", "--d", "20", "--steps", "40", "--trajectories", "3", "--hit", "0.5"]),
    ("general model, full SGD", ["--k", "2", "--d", "20", "--steps", "20", "--trajectories", "2", "--rank", "2", "--method", "full"]),
    ("joint c_hat, stopped when hit", ["--k", "2", "--d", "20", "--steps", "40", "--trajectories", "2", "--train-c-hat", "--hit", "0.9", "--stop-when-hit", "--m0", "0.5"]),
]


@pytest.mark.parametrize("name, arguments", SIMULATIONS, ids=[row[0] for row in SIMULATIONS])
def test_a_simulate_out_file_reads_back_as_the_run(name, arguments, tmp_path, capsys):
    import numpy as np

    import popgrad

    path = tmp_path / "run.nc"
    assert main(["simulate", *arguments, "--quiet", "--format", "json", "--out", str(path)]) == 0
    printed = _strict(capsys.readouterr().out)
    run = popgrad.load_run(path)
    again = run.to_json_dict()
    assert again["steps"] == printed["steps"] and again["state"] == printed["state"] and again["hitting_times"] == printed["hitting_times"]
    assert json.loads(json.dumps(again["observables"])) == printed["observables"]
    keys = set(printed["parameters"]) - {"seconds", "versions"}
    assert {key: again["parameters"][key] for key in keys} == {key: printed["parameters"][key] for key in keys}
    for block in printed["state"]:
        assert run.state[block].ndim >= 3 and np.all(np.isfinite(run.state[block]))


@pytest.mark.parametrize("kind", ["missing", "not_netcdf", "netcdf_without_provenance"])
def test_load_run_refuses_what_is_not_a_run(kind, tmp_path):
    import popgrad

    path = tmp_path / "run.nc"
    if kind == "not_netcdf":
        path.write_text("{}")
    elif kind == "netcdf_without_provenance":
        from popgrad._io import write_netcdf_arrays

        write_netcdf_arrays(path, {"step": 2}, [("step", ("step",), [0, 1], "step", "steps")], {})
    from popgrad._validation import InvalidArgument

    with pytest.raises(InvalidArgument) as caught:
        popgrad.load_run(path)
    assert caught.value.parameter == "path" and str(path) in str(caught.value)


JSON_OUT = {
    "mf run": ["mf", "run", "--m", "3", "--n", "3", "--h", "4", "--rank", "1", "--repeats", "2", "--steps", "20", "--records", "3"],
    "ntk landscape": ["ntk", "landscape", "{ntk}", "--rank", "1", "--starts", "2"],
    "ntk threshold": ["ntk", "threshold", "--m", "2", "--n", "2", "--data", "2", "--ranks", "1,2", "--instances", "1", "--starts", "2"],
    "ntk example": ["ntk", "example"],
}


def _timeless(document):
    """``document`` without its wall times and versions (what differs between two runs)."""
    if isinstance(document, dict):
        return {key: _timeless(value) for key, value in document.items() if "seconds" not in key and key != "versions"}
    if isinstance(document, list):
        return [_timeless(value) for value in document]
    return document


@pytest.mark.parametrize("name", sorted(JSON_OUT))
def test_mf_and_ntk_save_their_json_with_out(name, ntk_problem, tmp_path, capsys):
    arguments = [a.replace("{ntk}", str(ntk_problem)) for a in JSON_OUT[name]]
    path = tmp_path / "result.json"
    assert main([*arguments, "--out", str(path)]) == 0
    saved = _strict(path.read_text())
    assert main([*arguments, "--format", "json"]) == 0
    capsys.readouterr()
    assert main([*arguments, "--out", "-"]) == 0
    printed = _strict(capsys.readouterr().out)
    assert _timeless(saved) == _timeless(printed)
    path.write_text("the user's own\n")
    _run_refused([*arguments, "--out", str(path)], capsys, tmp_path, "--force")
    assert main([*arguments, "--out", str(path), "--force"]) == 0


# ------------------------------------------------------------------------------------------------
# class 2: huge requests are refused before anything is allocated, against what this process can get
# ------------------------------------------------------------------------------------------------

HUGE = [
    ("h --m=0:1:2e9", ["h", "--k", "2", "--m=0:1:2e9"], "grid values"),
    ("h --m=0:1:2000000000", ["h", "--k", "2", "--m=0:1:2000000000"], "grid values"),
    ("random features d = 2e9", ["problem", "--features", "random", "--k", "2", "--d", "2000000000", "--out", "-"], "--d too large"),
    ("mf m = n = h = 1e5", ["mf", "run", "--m", "100000", "--n", "100000", "--h", "100000", "--steps", "1", "--repeats", "2"], "too large"),
    ("full-d SGD d = 1e9", ["simulate", "--k", "2", "--d", "1000000000", "--method", "full", "--trajectories", "1000", "--steps", "10"], "--trajectories too large"),
    ("sweep --workers 4096", ["sweep", "{spec}", "--out", "{tmp}/store", "--workers", "4096"], "--workers too large"),
    ("sweep 1e9 checkpoints", ["sweep", "{huge_spec}", "--out", "{tmp}/store", "--workers", "0"], "checkpoints too large"),
]


@pytest.mark.parametrize("name, arguments, message", HUGE, ids=[row[0] for row in HUGE])
def test_a_huge_request_is_refused_with_what_it_would_need(name, arguments, message, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "spec.json").write_text(json.dumps(SPEC))
    (inputs / "huge.json").write_text(json.dumps(_spec({"run": {"checkpoints": 10**9, "horizon": None, "steps": 10**10}})))
    command = [a.replace("{spec}", str(inputs / "spec.json")).replace("{huge_spec}", str(inputs / "huge.json")).replace("{tmp}", str(tmp_path)) for a in arguments]
    error = _run_refused(command, capsys, tmp_path, message)
    assert "would need" in error and "of memory" in error


def _huge_api_cases():
    import numpy as np

    import popgrad

    problem = popgrad.orthonormal_problem("relu", 2, 1.0)
    yield "kernel_monte_carlo 1e13 samples", lambda: popgrad.kernel_monte_carlo("relu", 0.5, samples=10**13), "samples"
    yield "random features d = 1e12", lambda: popgrad.random_features_problem("relu", 2, 1.0, d=10**12), "d"
    yield "a broadcast m of 1e12 values", lambda: popgrad.population_drift(problem, np.broadcast_to(0.5, (10**6, 10**6))), "m"
    yield "full-d SGD in d = 1e12", lambda: popgrad.simulate(problem, 10**12, 1e-13, [0, 10], trajectories=2, method="full"), "trajectories"
    yield "mf construction 1e5", lambda: popgrad.paper_mf_problem(10**5, 10**5, 10**5, 4), "h"


@pytest.mark.parametrize("name, call, parameter", list(_huge_api_cases()), ids=[case[0] for case in _huge_api_cases()])
def test_a_huge_api_request_is_refused_before_allocation(name, call, parameter):
    import time

    from popgrad._validation import InvalidArgument

    begin = time.process_time()
    with pytest.raises(InvalidArgument) as caught:
        call()
    assert time.process_time() - begin < 5.0
    assert caught.value.parameter == parameter and "would need" in str(caught.value), str(caught.value)


@pytest.mark.parametrize("limit, where", [("_rlimit", "ulimit"), ("_cgroup_limit", "control group")])
def test_the_memory_check_honours_the_process_limits(limit, where, monkeypatch):
    from popgrad import _validation

    monkeypatch.setattr(_validation, limit, lambda: 10**9)
    assert _validation.available_memory() == (10**9, _validation.available_memory()[1]) and where in _validation.available_memory()[1]
    with pytest.raises(_validation.InvalidArgument, match=f"would need 2 GB of memory; this process's {where} allows 1 GB"):
        _validation.check_memory(2e9, "a thing", "trajectories")
    _validation.check_memory(5e8, "a thing", "trajectories")


def test_workers_default_to_this_process_on_a_small_machine_and_are_capped_by_memory(monkeypatch):
    from popgrad._validation import InvalidArgument
    from popgrad.sweeps import executor
    from popgrad.sweeps.spec import sweep_spec_from_dict

    monkeypatch.setattr(executor.os, "cpu_count", lambda: 2)
    assert executor.default_workers() == 0
    monkeypatch.setattr(executor.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(executor, "available_memory", lambda: (2 * 10**9, "this machine has"))
    assert executor.default_workers() == 6  # 0.8 * 2 GB / 250 MB
    monkeypatch.setattr(executor, "available_memory", lambda: (10**12, "this machine has"))
    assert executor.default_workers() == 64
    with pytest.raises(InvalidArgument) as caught:
        executor.check_sweep(sweep_spec_from_dict(SPEC), workers=4096)
    assert caught.value.parameter == "workers" and "would need 1.02 TB" in str(caught.value)


# ------------------------------------------------------------------------------------------------
# class 2 (the rest): long-but-legal work shows progress, honours --timeout, or is refused with an estimate
# ------------------------------------------------------------------------------------------------

LONG_REFUSED = [
    ("hermite tanh order 200 at 1000 digits", ["hermite", "tanh", "--order", "200", "--digits", "1000"], "about 49 minutes"),
    ("hermite relu order 200 at 1000 digits", ["hermite", "relu", "--order", "200", "--digits", "1000"], "--timeout 600"),
    ("hermite tanh order 20 at 100 digits, 1 s", ["hermite", "tanh", "--order", "20", "--digits", "100", "--timeout", "1"], "about 5 s"),
    ("hermite order 60 at 1000 digits", ["hermite", "tanh", "--order", "60", "--digits", "1000"], "lower --digits"),
    ("hermite --timeout 0", ["hermite", "tanh", "--order", "3", "--timeout", "0"], "--timeout"),
    ("mf --timeout -1", ["mf", "run", "--timeout", "-1"], "--timeout"),
    ("mf --timeout inf", ["mf", "run", "--timeout", "inf"], "--timeout"),
]


@pytest.mark.parametrize("name, arguments, named", LONG_REFUSED, ids=[row[0] for row in LONG_REFUSED])
def test_long_work_beyond_its_timeout_is_refused_with_an_estimate(name, arguments, named, tmp_path, capsys):
    _run_refused(arguments, capsys, tmp_path, named)


def _stopped(arguments, capsys, cpu_bound: float):
    """Run in process; the command must stop at its --timeout: exit 124, one line saying how far it got."""
    import time

    begin = time.process_time()
    status = main(arguments)
    spent = time.process_time() - begin
    error = capsys.readouterr().err
    assert status == 124, (status, error)
    lines = error.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("popgrad: stopped: ") and "Traceback" not in error, error
    assert spent < cpu_bound, spent
    return lines[0]


TIMED_OUT = [
    # the example: silent for over 5 minutes before; the limit takes effect within a piece (~0.1 s)
    ("mf gf alpha 10 lr 1", ["mf", "run", "--method", "gf", "--alpha", "10", "--lr", "1", "--timeout", "1"], "mf_gradient_flow"),
    ("mf gd 1e9 steps", ["mf", "run", "--steps", "1000000000", "--repeats", "8", "--timeout", "1"], "mf_gradient_descent"),
    ("mf gf spectral 1e9 steps", ["mf", "run", "--method", "gf", "--init", "spectral", "--steps", "1000000000", "--repeats", "1", "--timeout", "1"], "mf_gradient_flow"),
]


@pytest.mark.parametrize("name, arguments, named", TIMED_OUT, ids=[row[0] for row in TIMED_OUT])
def test_long_mf_runs_stop_at_their_timeout_saying_how_long_all_would_take(name, arguments, named, tmp_path, capsys):
    out = tmp_path / "run.json"
    # CPU time: the limit's second on two numba threads, the compile of a cold cache aside (checked warm)
    main(["mf", "run", "--steps", "1", "--repeats", "8", "--records", "1", "--format", "json"] + (["--method", "gf"] if "gf" in name else []))
    capsys.readouterr()
    line = _stopped(arguments + ["--out", str(out)], capsys, cpu_bound=6.0)
    assert named in line and "at this rate the whole run needs about" in line, line
    assert not out.exists()


def test_hermite_stops_at_its_timeout_when_the_estimate_was_low(monkeypatch, capsys):
    from popgrad.cli import hermite

    import popgrad.reference.hermite as reference

    def endless(*arguments, **options):  # the work itself (mpmath caches results: a second run in a worker would be instant)
        while True:
            pass

    monkeypatch.setattr(hermite, "estimated_seconds", lambda order, digits: 0.1)
    monkeypatch.setattr(reference, "verify_hermite", endless)
    line = _stopped(["hermite", "tanh", "--order", "20", "--digits", "100", "--timeout", "0.5"], capsys, cpu_bound=3.0)
    assert "--timeout 0.5" in line and "estimated" in line


def test_hermite_estimate_follows_a_measured_point():
    from popgrad.cli.hermite import estimated_seconds

    # measured here: tanh at order 20 and 100 digits, 5.0 s; order 30 at 200 digits, ~25 s
    assert 2.5 < estimated_seconds(20, 100) < 10 and 12 < estimated_seconds(30, 200) < 50


def test_long_mf_runs_show_progress(capsys):
    from popgrad.models.matrix_factorization.flow import mf_gradient_descent, mf_gradient_flow
    from popgrad.models.matrix_factorization.spec import paper_mf_problem

    problem = paper_mf_problem()
    mf_gradient_descent(problem, repetitions=8, steps=2000, records=2, progress=True)
    assert "mf_gradient_descent" in capsys.readouterr().err
    mf_gradient_flow(problem, repetitions=1, time_end=0.1, records=2, progress=True)
    assert "mf_gradient_flow" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# class 8: Ctrl-C stops mf run within a piece of work: one line, exit 130, nothing partial
# ------------------------------------------------------------------------------------------------

INTERRUPTED = [
    ("mf gd", ["mf", "run", "--steps", "1000000000", "--repeats", "16"], "popgrad.models.matrix_factorization.flow", "_descend"),
    ("mf gf (the issue's example)", ["mf", "run", "--method", "gf", "--alpha", "10", "--lr", "1"], "popgrad.dynamics.solve", "solve"),
    ("mf gf, --curves --out", ["mf", "run", "--method", "gf", "--init", "spectral", "--steps", "1000000000", "--curves"], "popgrad.dynamics.solve", "solve"),
]


@pytest.mark.parametrize("name, arguments, module, function", INTERRUPTED, ids=[row[0] for row in INTERRUPTED])
def test_ctrl_c_stops_mf_run_within_a_second_of_cpu(name, arguments, module, function, tmp_path, capsys, monkeypatch):
    """SIGINT once the work has run a few pieces; then the process spends under 2 s of CPU (two numba
    threads for at most a piece each, and the way out) before main returns 130 with one line."""
    import importlib
    import signal
    import time

    target = importlib.import_module(module)
    inner = getattr(target, function)
    calls = {"n": 0, "sent": None}

    def counting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5 and calls["sent"] is None:
            calls["sent"] = time.process_time()
            os.kill(os.getpid(), signal.SIGINT)
        return inner(*args, **kwargs)

    monkeypatch.setattr(target, function, counting)
    out = tmp_path / "run.json"
    status = main(arguments + ["--out", str(out)])
    after = time.process_time()
    error = capsys.readouterr().err
    assert calls["sent"] is not None, "the work never reached its fifth piece"
    assert status == 130, (status, error)
    assert error.strip().splitlines() == ["popgrad: interrupted"], error
    assert after - calls["sent"] < 2.0, after - calls["sent"]
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# class 9: honest summaries: reported values say "reported"; a claim that did not reproduce never passes
# ------------------------------------------------------------------------------------------------

CRITERIA = [
    # the example: the paper's 2x joint-training speed-up outside the measured interval: a claim, never a pass
    ("fig2 speed-up", {"name": "speed-up of joint training (the paper: roughly 2)", "value": 0.819, "kind": "claim", "paper": 2.0, "interval": [0.25, 1.896], "pass": True}, "not reproduced"),
    ("xi_c exponent", {"name": "k = 20: exponent of xi_c in d (predicted 1/4)", "value": -0.039, "kind": "claim", "paper": 0.25, "interval": [-0.124, 0.013]}, "not reproduced"),
    ("claim inside its interval", {"name": "exponent (predicted 1/4)", "value": 0.26, "kind": "claim", "paper": 0.25, "interval": [0.2, 0.3]}, "reproduced"),
    ("a reported value", {"name": "median step where abs(m) first reaches 0.9", "value": 4.4e5, "kind": "reported", "pass": True}, "reported"),
    ("a reported value flagged fail", {"name": "plateau", "value": 1.0, "kind": "reported", "pass": False}, "reported"),
    ("a failed test", {"name": "every run reaches abs(m) >= 0.9", "value": 3, "kind": "test", "pass": False}, "failed"),
    ("a passed test", {"name": "slope within 0.1 of 1", "value": 1.02, "kind": "test", "pass": True}, "passed"),
    ("a name that says reported is still a test", {"name": "unreported bias below 1e-3 (reported)", "value": 1e-4, "kind": "test", "pass": True}, "passed"),
    ("the paper's value in e-notation", {"name": "rate (the paper: 5e-3)", "value": 1.5e-3, "kind": "claim", "paper": 5e-3, "interval": [1e-3, 2e-3]}, "not reproduced"),
]


@pytest.mark.parametrize("name, criterion, kind", CRITERIA, ids=[row[0] for row in CRITERIA])
def test_a_criterion_is_classified_honestly(name, criterion, kind):
    # the kind decides, and a report normalises pass to what the kind says (a claim's from its interval)
    from popgrad.reproductions.base import ReproductionReport
    from popgrad.reproductions.summary import classify

    (normalised,) = ReproductionReport("x", "x", {}, [criterion], None).criteria
    assert classify(normalised) == kind


def test_the_committed_summary_counts_no_reported_value_or_unreproduced_claim_as_passing():
    from pathlib import Path

    from popgrad.reproductions.summary import _load, classify, summary_markdown

    folder = Path(__file__).resolve().parents[1] / "derivations" / "paper"
    text = summary_markdown(folder)
    reports = _load(folder)
    kinds = {(name, c["name"]): classify(c) for name, document in reports.items() for c in document["criteria"]}
    for (report, criterion), kind in kinds.items():
        if kind == "not reproduced":
            assert f"- {report}: {criterion} — measured" in text.split("## Where the paper did not reproduce")[1]
        if kind == "reported":
            assert f"- {report}: {criterion} — " in text.split("## Values only reported")[1]
    # a report's count of passed tests counts neither reported values nor claims of the paper
    for name, document in reports.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| [{name}]"))
        tests = [c for c in document["criteria"] if c["kind"] == "test"]
        claims = [c for c in document["criteria"] if c["kind"] == "claim"]
        assert f"| {sum(c['pass'] for c in tests)} / {len(tests)} | {sum(c['pass'] for c in claims)} / {len(claims)} |" in row, row


# ------------------------------------------------------------------------------------------------
# class 10: the command line's own figures: the format by suffix, sized for a column, axes that say what
# ------------------------------------------------------------------------------------------------

FIGURES = [
    ("h --plot", ["h", "--k", "2", "--format", "json", "--plot"]),
    ("ntk threshold --plot", ["ntk", "threshold", "--instances", "1", "--starts", "2", "--ranks", "1,2", "--format", "json", "--plot"]),
]
SUFFIXES = [(".svg", b"<svg"), (".pdf", b"%PDF"), (".eps", b"%!PS"), (".png", b"\x89PNG")]


@pytest.mark.parametrize("suffix, magic", SUFFIXES, ids=[s for s, _ in SUFFIXES])
@pytest.mark.parametrize("name, arguments", FIGURES, ids=[row[0] for row in FIGURES])
def test_a_figure_is_written_in_the_format_its_suffix_names(name, arguments, suffix, magic, tmp_path, capsys):
    path = tmp_path / f"figure{suffix}"
    assert main(arguments + [str(path)]) == 0, capsys.readouterr().err
    assert magic in path.read_bytes()[:400]
    if suffix == ".svg":
        assert 'width="237.6pt"' in path.read_text()  # 3.3 in


@pytest.mark.parametrize("suffix", [".jpgx", ".txt", "", ".svg.bak", ".json"])
@pytest.mark.parametrize("name, arguments", FIGURES, ids=[row[0] for row in FIGURES])
def test_an_unknown_figure_suffix_is_refused_before_the_work(name, arguments, suffix, tmp_path, capsys):
    _run_refused(arguments + [str(tmp_path / f"figure{suffix}")], capsys, tmp_path, "--plot", "names no figure format")


@pytest.mark.parametrize("name, arguments", FIGURES, ids=[row[0] for row in FIGURES])
def test_a_figure_is_sized_for_a_column_with_text_of_8_points_and_labelled_axes(name, arguments, tmp_path, capsys, monkeypatch):
    from matplotlib.text import Text

    from popgrad.cli import common

    kept = []
    original = common.fit_for_print

    def keeping(figure, *args, **kwargs):
        kept.append(original(figure, *args, **kwargs))
        return kept[-1]

    monkeypatch.setattr(common, "fit_for_print", keeping)
    assert main(arguments + [str(tmp_path / "figure.svg")]) == 0
    (figure,) = kept
    figure.canvas.draw()  # the tick labels exist once drawn
    assert figure.get_size_inches()[0] == pytest.approx(3.3)
    sizes = [text.get_fontsize() for text in figure.findobj(Text) if text.get_text()]
    assert sizes and min(sizes) >= 8.0, sizes
    for axis in figure.axes:
        assert axis.get_xlabel() and axis.get_ylabel()
