"""The README's Python examples run unchanged and print what it says."""

import doctest
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow
def test_readme_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # result.save("my-report") writes here
    failures, attempted = doctest.testfile(str(README), module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert attempted >= 15 and failures == 0
    assert (tmp_path / "my-report" / "comparison.json").exists()
    assert (tmp_path / "my-general-report" / "comparison.png").exists()
