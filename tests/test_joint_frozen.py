"""Open question 4's statistics (popgrad.reproductions.questions): the per-instance statistics, the paired
bootstrap of the geometric-mean ratio validated on synthetic hitting times whose answer is known, the rank
correlations, and the pairing of the two arms on the model."""

import math

import numpy as np
import pytest

from popgrad._validation import InvalidArgument
from popgrad.analysis.scaling import censored_median
from popgrad.reproductions.questions import bootstrap_coverage, instance_statistic, paired_bootstrap, rank_correlation, synthetic_paired_hits


def test_the_instance_median_is_the_censoring_aware_median():
    generator = np.random.default_rng(0)
    for runs in (1, 2, 5, 16):
        hits = generator.exponential(size=(50, runs))
        hits[generator.random(hits.shape) < 0.3] = np.inf
        assert instance_statistic(hits).tolist() == [censored_median(row) for row in hits]
    assert instance_statistic([[1.0, -1.0, 3.0]], "slowest").tolist() == [math.inf]


def test_a_constant_ratio_gives_a_degenerate_interval_and_censoring_enters_at_the_horizon():
    frozen, joint = synthetic_paired_hits(10, 8, 3.0, 0.0, 0.0, seed=1)
    result = paired_bootstrap(frozen, joint, replicates=200)
    assert result["geometric_mean"] == pytest.approx(3.0) and result["interval"] == pytest.approx([3.0, 3.0])
    assert result["favour_joint"] == 1.0 and result["censored_frozen"] == 0
    # an instance whose frozen runs never arrive: its ratio is horizon / joint, a lower bound
    frozen[0, :] = np.inf
    horizon = 10 * float(np.max(frozen[1:]))
    censored = paired_bootstrap(frozen, joint, horizon=horizon, replicates=200)
    assert censored["censored_frozen"] == 1 and censored["ratios"][0] == pytest.approx(horizon / censored_median(joint[0]))
    assert censored["geometric_mean"] > 3.0


def test_the_paired_bootstrap_covers_a_known_ratio():
    # the real data's spreads (d = 250: log sd between instances ~0.4, within an instance ~0.15): nominal 95%
    result = bootstrap_coverage(ratio=2.0, instances=30, runs=16, between=0.4, within=0.15, repetitions=200, replicates=400, seed=3)
    assert abs(result["coverage"] - 0.95) <= 4 * result["standard_error"], result


def test_resampling_the_runs_within_instances_is_conservative_where_they_dominate():
    # within-instance noise dominating: resampling runs as well counts it twice (wider, over-covering),
    # never narrower than resampling instances alone
    both = bootstrap_coverage(ratio=0.5, instances=30, runs=4, between=0.05, within=0.8, repetitions=150, replicates=300, seed=5)
    alone = bootstrap_coverage(ratio=0.5, instances=30, runs=4, between=0.05, within=0.8, repetitions=150, replicates=300, seed=5, within_resampling=False)
    assert both["coverage"] >= 0.95 - 4 * both["standard_error"]
    assert abs(alone["coverage"] - 0.95) <= 4 * alone["standard_error"], alone
    assert both["mean_width"] > alone["mean_width"]


def test_pairing_gives_a_narrower_interval_than_resampling_the_arms_apart():
    from popgrad.reproductions.questions import _unpaired_interval

    # instance scales spread over a decade: the unpaired design sees them, the paired one divides them out
    frozen, joint = synthetic_paired_hits(30, 16, 2.0, 0.3, 0.1, seed=2)
    paired = paired_bootstrap(frozen, joint, replicates=1000, seed=1)["interval"]
    unpaired = _unpaired_interval(frozen, joint, "median", math.inf, 1000)
    assert unpaired[0] <= paired[0] <= 2.0 * 1.5 and math.log(paired[1] / paired[0]) < 0.6 * math.log(unpaired[1] / unpaired[0])


def test_the_rank_correlation_is_spearmans():
    from scipy.stats import spearmanr

    generator = np.random.default_rng(4)
    x, y = generator.normal(size=40), generator.normal(size=40)
    y[:5] = y[5]  # ties
    assert rank_correlation(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert rank_correlation(x, np.exp(x)) == pytest.approx(1.0)


def test_a_predictor_of_the_ratio_is_found_with_its_interval():
    frozen, joint = synthetic_paired_hits(30, 16, 1.0, 0.5, 0.1, seed=6)
    truth = np.log(np.median(frozen, axis=1) / np.median(joint, axis=1))
    noise = np.random.default_rng(7).normal(size=30)
    result = paired_bootstrap(frozen, joint, replicates=500, predictors={"truth": truth, "noise": noise})
    assert result["correlations"]["truth"]["spearman"] > 0.9 and result["correlations"]["truth"]["interval"][0] > 0.7
    low, high = result["correlations"]["noise"]["interval"]
    assert low < 0.0 < high


def test_bad_input_names_its_parameter():
    with pytest.raises(InvalidArgument) as error:
        paired_bootstrap(np.ones((3, 2)), np.ones((3, 3)))
    assert error.value.parameter == "joint"
    with pytest.raises(InvalidArgument) as error:
        paired_bootstrap(np.ones((3, 2)), np.ones((3, 2)), predictors={"x": np.ones(2)})
    assert error.value.parameter == "predictors"
    with pytest.raises(InvalidArgument) as error:
        synthetic_paired_hits(1, 2, 2.0, 0.1, 0.1)
    assert error.value.parameter == "instances"


@pytest.mark.slow
def test_the_two_arms_start_from_one_draw():
    from popgrad.reproductions.questions import LEVELS, paired_instance

    result = paired_instance(3, d=60, delta=0.02, horizon=50.0, runs=3, seed=9, checkpoints=20, threads=1)
    assert result["pairing_error"] < 1e-12
    assert set(result["hits"]) == {"frozen", "joint"} and set(result["hits"]["joint"]) == {str(level) for level in LEVELS}
    again = paired_instance(3, d=60, delta=0.02, horizon=50.0, runs=3, seed=9, checkpoints=20, threads=1)
    assert again["hits"] == result["hits"] and again["m0"] == result["m0"]


@pytest.mark.slow
def test_the_overlap_paths_are_the_engines_numbers():
    from popgrad.dynamics.engine import simulate
    from popgrad.models.finetuning.model import general_model
    from popgrad.reproductions.questions import _problem, overlap_paths

    problem = _problem(2, 60, "common")
    grid = [0, 40, 100, 400, 900]
    for model, m0 in ((general_model(problem, train_c_hat=True), None), (general_model(problem), 0.1)):
        engine = simulate(model, 60, delta=0.05, checkpoints=grid, trajectories=3, seed=5, m0=m0).m
        assert np.array_equal(overlap_paths(model, 60, 0.05, grid, 3, 5, m0=m0), engine)
    # stopped at the level, a trajectory keeps its value
    stopped = overlap_paths(general_model(problem, train_c_hat=True), 60, 0.05, np.arange(0, 20001, 500), 3, 5, hit=1 - 0.5**2)
    reached = np.abs(stopped) >= 0.5
    assert reached[:, -1].all() and all(np.all(row[np.argmax(flag):] == row[np.argmax(flag)]) for row, flag in zip(stopped, reached))
