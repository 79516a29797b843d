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
