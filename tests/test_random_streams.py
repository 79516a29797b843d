"""The samplers the kernels use, against scipy's distributions, and the independence of stream purposes."""

import numpy as np
import pytest
from scipy import stats

from popgrad.numerics import random_streams as streams

PURPOSES = (streams.TRAJECTORIES, streams.NOISE, streams.GRADIENTS, streams.DIAGNOSTICS, streams.GEOMETRY, streams.INITIAL)


@pytest.mark.parametrize("law, parameter, reference", [("normal", 0.0, stats.norm()), ("gamma", 0.4, stats.gamma(0.4)), ("gamma", 7.5, stats.gamma(7.5)), ("chi_square", 998.0, stats.chi2(998.0)), ("chi_square", 1.0, stats.chi2(1.0))])
def test_samplers_follow_their_laws(law, parameter, reference):
    draws = streams.samples(law, seed=3, streams=8, per_stream=25_000, parameter=parameter).ravel()
    # four samplers x up to two parameters: a family level of 1e-2 leaves 2e-3 per test
    assert stats.kstest(draws, reference.cdf).pvalue > 2e-3


def test_normal_tails_of_the_ziggurat():
    draws = streams.samples("normal", seed=5, streams=16, per_stream=250_000).ravel()
    beyond = np.mean(np.abs(draws) > 3.6541528853610088)  # the ziggurat's base strip
    expected = 2 * stats.norm.sf(3.6541528853610088)
    assert abs(beyond - expected) < 4 * np.sqrt(expected / draws.size)


def test_purposes_never_share_variates():
    # the first draws of streams 0..63 under each purpose, and under neighbouring seeds: no value twice
    rows = [streams.samples("normal", seed=seed, streams=64, per_stream=32, purpose=purpose) for seed in (0, 1, 2) for purpose in PURPOSES]
    values = np.concatenate([row.ravel() for row in rows])
    assert np.unique(values).size == values.size


def test_a_stream_depends_only_on_its_key():
    one = streams.samples("normal", seed=9, streams=5, per_stream=10, purpose=streams.NOISE)
    two = streams.samples("normal", seed=9, streams=3, per_stream=10, purpose=streams.NOISE)
    np.testing.assert_array_equal(one[:3], two)
    with pytest.raises(ValueError, match="law must be one of"):
        streams.samples("cauchy", seed=1, streams=1, per_stream=1)
