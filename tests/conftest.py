import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")

#: data and the scripts that made them (tests/data/make_*.py write files when run): never collected
collect_ignore_glob = ["data/*"]


@pytest.fixture
def rng():
    return np.random.default_rng(20251123)


def _catalogue_names():
    from popgrad.gaussian.activations import catalogue

    return [a.name for a in catalogue()]


#: every standard member of the activation catalogue
CATALOGUE = _catalogue_names()
#: custom activations that exercise other paths (stack programs, kinks off zero, polynomials by name)
EXTRA = ["poly(1, -2, 0.5)", "h_7", "tanh(2*z) + 0.1*z", "abs(z - 1) + z**2"]


@pytest.fixture(params=CATALOGUE)
def member(request):
    """Each catalogue member in turn: the one fixture for activation-parametrised tests."""
    from popgrad.gaussian.activations import activation

    return activation(request.param)


def pytest_collection_modifyitems(config, items):
    # 'xslow' tests (paper scale: the reproductions' full versions, 41 minutes in all on 2 cores) run only
    # when asked for: python3 -m pytest -m xslow
    if "xslow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="xslow: run with -m xslow (paper scale)")
    for item in items:
        if "xslow" in item.keywords:
            item.add_marker(skip)
