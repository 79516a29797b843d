from pathlib import Path

import pytest

from popgrad.report.tables import stale_derivations

DERIVATIONS = Path(__file__).resolve().parent.parent / "derivations"


@pytest.mark.slow
def test_committed_derivation_tables_are_current():
    stale = stale_derivations(DERIVATIONS)
    assert not stale, f"derivations/ is stale ({', '.join(stale)}): run `popgrad derive`"
