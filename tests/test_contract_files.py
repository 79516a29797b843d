"""The user's contract at the file boundary and on stdout (round 3).

* Every user file popgrad reads (problem and model files, sweep specifications, sweep stores) passes one
  boundary (:func:`popgrad._io.read_user_file`): a folder, a FIFO, a device, random bytes, a Latin-1 file,
  a file too large, JSON of the wrong shape, a corrupt manifest are each refused in one line naming the
  file, exit 2, at once (CPU time, and an alarm for what would block), with nothing written.
* Every ``--format json`` parses with a strict parser: no NaN or Infinity, even from a diverged run.
* The small ends: ``popgrad`` alone prints its usage to stderr (exit 2); ``derive --check`` of a missing
  folder is a usage error naming it.
"""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from popgrad.cli.main import main

#: the CPU seconds a refusal may take (imports included): a file is refused before any work
CPU_BOUND = 10.0
#: wall seconds after which a refusal that blocks (a FIFO opened for reading) fails the test
ALARM = 30


def _strict(text: str):
    """``text`` parsed by a strict JSON parser (NaN, Infinity and -Infinity refused)."""
    return json.loads(text, parse_constant=lambda constant: (_ for _ in ()).throw(ValueError(f"not strict JSON: {constant}")))


class _Blocked(Exception):
    pass


def _run_refused(arguments, capsys, tmp_path, named: str, message: str = ""):
    """Run the command line in process; assert exit 2, one line on stderr naming ``named``, no traceback,
    nothing written under ``tmp_path``, and little CPU time."""
    before = sorted(tmp_path.rglob("*"))

    def blocked(signum, frame):
        raise _Blocked(f"{arguments} still running after {ALARM} s")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(ALARM)
    begin = time.process_time()
    try:
        status = main([str(a) for a in arguments])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    spent = time.process_time() - begin
    captured = capsys.readouterr()
    error = captured.err
    assert status == 2, (status, error)
    assert len(error.strip().splitlines()) == 1, error
    assert error.startswith("popgrad: error: ") and "Traceback" not in error and "internal error" not in error, error
    assert named in error, error
    assert message in error, error
    assert sorted(tmp_path.rglob("*")) == before, "something was written"
    assert spent < CPU_BOUND, spent
    return error


# ------------------------------------------------------------------------------------------------
# class 1: inputs that are not what they claim
# ------------------------------------------------------------------------------------------------

def _make(kind: str, folder: Path, suffix: str) -> tuple:
    """A bad input of ``kind`` in ``folder``: its path and a piece of the expected message."""
    path = folder / f"input{suffix}"
    if kind == "folder":
        path.mkdir()
        return path, "is a folder"
    if kind == "fifo":
        os.mkfifo(path)
        return path, "FIFO"
    if kind == "dev_zero":
        return Path("/dev/zero"), "character device"
    if kind == "missing":
        return path, "does not exist"
    if kind == "random_bytes":
        path.write_bytes(bytes([0x94, 0x00, 0xFF, 0x13]) + os.urandom(4096))
        return path, "not UTF-8 text (byte 0x94 at offset 0)"
    if kind == "latin1":
        text = '[problem]\nactivation = "caf\xe9"\n' if suffix == ".toml" else '{"activation": "caf\xe9"}'
        path.write_bytes(text.encode("latin-1"))
        return path, f"not UTF-8 text (byte 0xe9 at offset {text.index(chr(0xE9))})"
    if kind == "huge":
        with open(path, "wb") as file:
            file.truncate(300 * 2**20)  # sparse: no disk used
        return path, "at most"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "not valid" if suffix != ".toml" else ""  # an empty TOML file is an empty table
    if kind == "invalid_syntax":
        path.write_text("{]" if suffix != ".toml" else "[problem\n")
        return path, "not valid"
    if kind == "deeply_nested":
        path.write_text("[" * 100_000 if suffix != ".toml" else "a = " + "[" * 100_000)
        return path, ""
    if kind == "json_list":
        path.write_text("[1, 2]")
        return path, "holds a list at the top level"
    if kind == "json_null":
        path.write_text("null")
        return path, "holds null at the top level"
    if kind == "json_string":
        path.write_text('"problem"')
        return path, "holds a string at the top level"
    raise AssertionError(kind)


FILE_KINDS = ["folder", "fifo", "dev_zero", "missing", "random_bytes", "latin1", "huge", "empty", "invalid_syntax", "deeply_nested", "json_list", "json_null", "json_string"]
TOML_KINDS = ["folder", "fifo", "missing", "random_bytes", "latin1", "huge", "empty", "invalid_syntax", "deeply_nested"]

#: every reader of a user file on the command line: (name, suffix, arguments with {} for the file)
READERS = [
    ("h --problem", ".json", ["h", "--problem", "{}"]),
    ("simulate --problem", ".json", ["simulate", "--problem", "{}", "--steps", "10", "--trajectories", "2"]),
    ("compare --problem", ".json", ["compare", "--problem", "{}", "--out", "{tmp}/report"]),
    ("run --problem", ".json", ["run", "--problem", "{}", "--out", "{tmp}/report"]),
    ("problem --problem", ".json", ["problem", "--problem", "{}", "--out", "{tmp}/p.json"]),
    ("mf run --problem", ".json", ["mf", "run", "--problem", "{}", "--steps", "10", "--repeats", "2"]),
    ("ntk landscape", ".json", ["ntk", "landscape", "{}", "--rank", "1"]),
    ("sweep (JSON)", ".json", ["sweep", "{}", "--out", "{tmp}/store", "--workers", "0"]),
    ("sweep (TOML)", ".toml", ["sweep", "{}", "--out", "{tmp}/store", "--workers", "0"]),
]


def _cases():
    for name, suffix, arguments in READERS:
        for kind in TOML_KINDS if suffix == ".toml" else FILE_KINDS:
            if kind == "deeply_nested" and suffix == ".toml":
                continue  # tomllib reads deep nesting without recursion
            yield pytest.param(kind, suffix, arguments, id=f"{name}-{kind}")


@pytest.mark.parametrize("kind, suffix, arguments", list(_cases()))
def test_a_file_that_is_not_what_it_claims_is_refused_in_one_line(kind, suffix, arguments, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    path, message = _make(kind, inputs, suffix)
    command = [str(path) if a == "{}" else a.replace("{tmp}", str(tmp_path)) for a in arguments]
    _run_refused(command, capsys, tmp_path, str(path), message)


SPEC = {"problem": {"activation": "relu", "k": 2}, "run": {"kind": "hitting_time", "eps": 0.5, "delta": 0.05, "horizon": 5, "trajectories": 2, "checkpoints": 2, "seed": 1}, "grid": {"d": [20, 30]}}


#: problem and model files of the right syntax and the wrong shape: (reader, JSON text, expected message)
SHAPES = [
    ("h --problem", '{"model": ["x"]}', "model must be the name of a family"),
    ("simulate --problem", '{"model": null}', "model must be the name of a family"),
    ("simulate --problem", '{"problem": null}', "unknown keys"),
    ("h --problem", '{"problem": [1, 2]}', "unknown keys"),
    ("h --problem", '{"activation": ["relu"], "lam": null}', "missing keys"),
    ("mf run --problem", '{"W1": null, "W2": 1, "Y_ft": [], "rank": "a"}', "W1"),
    ("mf run --problem", '{"W1": [[1, 2], [3]], "W2": [[1]], "Y_ft": [[1]], "rank": 1}', "W1"),
    ("ntk landscape", '{"measurements": null, "targets": 1, "weight_decay": "x", "loss": 3}', "weight_decay"),
    ("ntk landscape", '{"measurements": [[[1, 2]]], "targets": [1], "weight_decay": 0.1, "loss": ["squared"]}', "loss"),
]


@pytest.mark.parametrize("reader, text, message", SHAPES, ids=[f"{reader}-{i}" for i, (reader, _, _) in enumerate(SHAPES)])
def test_a_problem_file_of_the_wrong_shape_is_refused_naming_it(reader, text, message, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    path = inputs / "problem.json"
    path.write_text(text)
    arguments = next(arguments for name, _, arguments in READERS if name == reader)
    command = [str(path) if a == "{}" else a.replace("{tmp}", str(tmp_path)) for a in arguments]
    _run_refused(command, capsys, tmp_path, str(path), message)


def _spec_variants():
    """Specifications (JSON text, TOML text) of the right syntax and the wrong shape or values."""
    yield "problem_list", ".json", json.dumps({**SPEC, "problem": [1, 2]}), "[problem] must be a table"
    yield "problem_null", ".json", json.dumps({**SPEC, "problem": None}), "[problem] must be a table"
    yield "problem_file_list", ".json", json.dumps({**SPEC, "problem": {"generator": "file", "path": ["a"]}}), ""
    yield "run_string", ".json", json.dumps({**SPEC, "run": "fast"}), "[run] must be a table"
    yield "grid_null", ".json", json.dumps({**SPEC, "grid": None}), "[grid] must be a table"
    yield "horizon_1e300", ".toml", '[problem]\nactivation = "relu"\nk = 2\n[run]\ndelta = 0.05\nhorizon = 1e300\n[grid]\nd = [10]\n', "horizon"
    yield "horizon_inf", ".toml", '[problem]\nactivation = "relu"\nk = 2\n[run]\ndelta = 0.05\nhorizon = inf\n[grid]\nd = [10]\n', "horizon"
    yield "steps_1e300", ".json", json.dumps({**SPEC, "run": {**SPEC["run"], "horizon": None, "steps": 1e300}}), "steps"
    yield "steps_fraction", ".json", json.dumps({**SPEC, "run": {**SPEC["run"], "horizon": None, "steps": 10.5}}), "steps"
    yield "big_integer", ".json", '{"run": {"horizon": ' + "9" * 5000 + "}}", ""
    yield "missing_problem_file", ".json", json.dumps({**SPEC, "problem": {"generator": "file", "path": "nowhere.json"}}), "nowhere.json"


@pytest.mark.parametrize("name, suffix, text, message", [pytest.param(*v, id=v[0]) for v in _spec_variants()])
def test_a_sweep_specification_of_the_wrong_shape_is_refused_in_one_line(name, suffix, text, message, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    path = inputs / f"spec{suffix}"
    path.write_text(text)
    _run_refused(["sweep", path, "--out", tmp_path / "store", "--workers", "0"], capsys, tmp_path, str(path), message)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--timeout", "inf", "--scheduler", "tcp://127.0.0.1:9"], "--timeout"),
        (["--timeout", "nan", "--scheduler", "tcp://127.0.0.1:9"], "--timeout"),
        (["--timeout", "-1", "--scheduler", "tcp://127.0.0.1:9"], "--timeout"),
        (["--scheduler", "not a url"], "--scheduler"),
    ],
    ids=["timeout-inf", "timeout-nan", "timeout-negative", "scheduler-not-a-url"],
)
def test_bad_sweep_options_are_refused_before_the_store_is_made(arguments, message, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    path = inputs / "spec.json"
    path.write_text(json.dumps(SPEC))
    _run_refused(["sweep", path, "--out", tmp_path / "store", *arguments], capsys, tmp_path, message)


MANIFESTS = {
    "random_bytes": lambda path: path.write_bytes(b"\xff\xfe" + os.urandom(512)),
    "truncated": lambda path: path.write_text('{"spec": {"problem": '),
    "list": lambda path: path.write_text("[]"),
    "null": lambda path: path.write_text("null"),
    "no_spec": lambda path: path.write_text('{"digest": "abc"}'),
    "spec_list": lambda path: path.write_text('{"spec": [], "digest": "abc"}'),
    "folder": lambda path: path.mkdir(),
    "fifo": lambda path: os.mkfifo(path),
    "huge": lambda path: open(path, "wb").truncate(300 * 2**20),
}


@pytest.mark.parametrize("command", ["sweep", "sweep-report"])
@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_a_corrupt_sweep_manifest_is_refused_in_one_line(kind, command, tmp_path, capsys):
    store = tmp_path / "store"
    (store / "cells").mkdir(parents=True)
    MANIFESTS[kind](store / "manifest.json")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    arguments = ["sweep", spec, "--out", store, "--workers", "0"] if command == "sweep" else ["sweep-report", store]
    _run_refused(arguments, capsys, tmp_path, str(store / "manifest.json"))


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """A two-cell store made by the command line (in process, without Dask)."""
    folder = tmp_path_factory.mktemp("sweep")
    spec = folder / "spec.json"
    spec.write_text(json.dumps(SPEC))
    assert main(["sweep", str(spec), "--out", str(folder / "store"), "--workers", "0", "--quiet"]) == 0
    return spec, folder / "store"


CORRUPT_CELLS = {
    "random_bytes": lambda path: path.write_bytes(os.urandom(300)),
    "truncated": lambda path: path.write_text(path.read_text()[:40]),
    "empty": lambda path: path.write_text(""),
    "list": lambda path: path.write_text("[]"),
    "another_key": lambda path: path.write_text(path.read_text().replace(path.stem, "0" * 64)),
    "fifo": lambda path: (path.unlink(), os.mkfifo(path)),
}


@pytest.mark.parametrize("kind", sorted(CORRUPT_CELLS))
def test_a_corrupt_cell_is_computed_again_never_counted(kind, small_store, tmp_path, capsys):
    import shutil

    from popgrad.sweeps.store import SweepStore

    spec, original = small_store
    store = tmp_path / "store"
    shutil.copytree(original, store)
    cells = sorted((store / "cells").glob("*.json"))
    assert len(cells) == 2
    CORRUPT_CELLS[kind](cells[0])
    capsys.readouterr()
    opened = SweepStore(store)
    assert opened.finished() == {cells[1].stem} and len(opened.records()) == 1  # never counted
    assert main(["sweep-report", str(store), "--format", "json", "--replicates", "10"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert main(["sweep", str(spec), "--out", str(store), "--workers", "0", "--quiet"]) == 0
    assert "1 already stored, 1 computed" in capsys.readouterr().out
    assert json.loads(cells[0].read_text())["key"] == cells[0].stem  # whole again
    assert SweepStore(store).finished() == {cell.stem for cell in cells}


# ------------------------------------------------------------------------------------------------
# class 7: --format json is always JSON
# ------------------------------------------------------------------------------------------------

TINY = ["--k", "2", "--d", "20", "--trajectories", "2", "--checkpoints", "0,10,20"]
MF = ["mf", "run", "--m", "3", "--n", "3", "--h", "4", "--rank", "1", "--repeats", "2", "--steps", "20", "--records", "3", "--format", "json"]
NTK = ["--m", "2", "--n", "2", "--data", "2"]

JSON_COMMANDS = {
    "hermite": lambda tmp: ["hermite", "relu", "--order", "3", "--digits", "15", "--format", "json"],
    "h": lambda tmp: ["h", "--k", "2", "--m=-1,0,1", "--format", "json"],
    "simulate": lambda tmp: ["simulate", *TINY, "--quiet", "--format", "json"],
    "compare": lambda tmp: ["compare", *TINY, "--noise-samples", "640", "--quiet", "--out", str(tmp / "report"), "--format", "json"],
    "mf run": lambda tmp: MF,
    "mf run diverging": lambda tmp: [*MF, "--lr", "10", "--curves"],
    "mf run flow": lambda tmp: [*MF, "--lr", "10", "--method", "gf"],
    "ntk landscape": lambda tmp: ["ntk", "landscape", str(tmp / "ntk.json"), "--rank", "1", "--starts", "2", "--format", "json"],
    "ntk landscape diverging": lambda tmp: ["ntk", "landscape", str(tmp / "ntk.json"), "--rank", "1", "--starts", "2", "--method", "gd", "--lr", "1e6", "--steps", "50", "--format", "json"],
    "ntk threshold": lambda tmp: ["ntk", "threshold", *NTK, "--ranks", "1,2", "--instances", "1", "--starts", "2", "--format", "json"],
    "ntk example": lambda tmp: ["ntk", "example", "--format", "json"],
    "sweep-report": lambda tmp: ["sweep-report", str(tmp / "store"), "--replicates", "10", "--format", "json"],
}


@pytest.mark.parametrize("name", sorted(JSON_COMMANDS))
def test_every_json_output_is_strict_json(name, tmp_path, capsys, small_store):
    import shutil

    if name.startswith("ntk landscape"):
        assert main(["ntk", "build", *NTK, "--out", str(tmp_path / "ntk.json")]) == 0
    if name == "sweep-report":
        shutil.copytree(small_store[1], tmp_path / "store")
    capsys.readouterr()
    status = main(JSON_COMMANDS[name](tmp_path))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    document = _strict(captured.out)
    assert isinstance(document, dict)
    if name == "mf run diverging":
        assert document["diverged"] is True and "final_loss" in document["non_finite"], document.get("non_finite")
        assert None in document["final_loss"]
    if "non_finite" in document:  # the flag names keys that are there
        assert all(key.split(".")[0] in document for key in document["non_finite"])


def test_the_strict_json_helper_flags_what_it_nulls():
    import numpy as np

    from popgrad._io import strict_json

    text = strict_json({"a": np.array([1.0, np.nan]), "b": {"c": float("-inf")}, "d": 1}, indent=None)
    assert _strict(text) == {"a": [1.0, None], "b": {"c": None}, "d": 1, "non_finite": ["a", "b.c"]}
    assert _strict(strict_json({"a": 1.0})) == {"a": 1.0}


# ------------------------------------------------------------------------------------------------
# class 12 (part): small ends
# ------------------------------------------------------------------------------------------------

def test_popgrad_alone_prints_its_usage_to_stderr(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("usage: popgrad") and "a command is required" in captured.err


def test_derive_check_of_a_missing_folder_is_a_usage_error(tmp_path, capsys):
    _run_refused(["derive", "--check", "--out", tmp_path / "missing"], capsys, tmp_path, str(tmp_path / "missing"), "does not exist")
    (tmp_path / "a_file").write_text("x")
    _run_refused(["derive", "--check", "--out", tmp_path / "a_file"], capsys, tmp_path, str(tmp_path / "a_file"), "not a folder")
