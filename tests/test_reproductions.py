"""Reproductions: the --quick versions run (CI), their reports hold the promised keys and pass their
criteria, and the committed full reports in derivations/paper/ are not stale."""

import json
from pathlib import Path

import pytest

from popgrad.reproductions.base import REGISTRY, run_reproduction, stale_reproductions

PAPER = Path(__file__).resolve().parent.parent / "derivations" / "paper"


def _check_files(folder: Path, name: str) -> dict:
    document = json.loads((folder / f"{name}.json").read_text())
    assert set(document) >= {"parameters", "criteria", "fits", "provenance"}
    for criterion in document["criteria"]:
        assert set(criterion) >= {"name", "value", "pass"}
    for fit in document["fits"]:
        assert set(fit) >= {"case", "variable", "exponent", "ci"} and len(fit["ci"]) == 2
    assert (folder / f"{name}.png").stat().st_size > 10_000
    markdown = (folder / f"{name}.md").read_text()
    assert "## Criteria (measured)" in markdown and ("PASS" in markdown or "FAIL" in markdown)
    return document


@pytest.mark.parametrize("name", ["example1", "lemma6"])
def test_quick_reproductions_pass(tmp_path, name):
    report = run_reproduction(name, quick=True, out=tmp_path)
    assert report.passed, report.criteria
    _check_files(tmp_path, name)


@pytest.mark.slow
def test_claim2_quick_fine_tuning_is_linear_in_d_and_from_scratch_faster(tmp_path):
    report = run_reproduction("claim2", quick=True, out=tmp_path, workers=2)
    assert report.passed, report.criteria
    document = _check_files(tmp_path, "claim2")
    assert {fit["case"] for fit in document["fits"]} == {"finetuning", "glm_h3"}


def test_the_committed_reports_are_not_stale():
    # each committed report was made by today's definition of its reproduction (full version, not --quick);
    # regenerate with: popgrad reproduce all
    assert stale_reproductions(PAPER) == [], "stale: run popgrad reproduce NAME (full version) and commit derivations/paper/"


def test_every_reproduction_is_registered_with_a_description():
    assert {"example1", "lemma6", "claim2"} <= set(REGISTRY)
    assert all(reproduction.description for reproduction in REGISTRY.values())
