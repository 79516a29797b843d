"""Open questions of Dayi & Chen answered by designs built for them: open question 4, joint against frozen
c_hat (reproduction ``joint-frozen``), by a paired design.

Joint training starts from the frozen arm's draw: one instance is one (W, c, u, c_hat_0) (the problem's
seed), and run j of both arms starts from the same u_hat_0. (The sweep of ``fig2`` pairs only the instance:
its cell seed hashes ``train_c_hat``, and the frozen arm runs the scalar overlap chain, whose starts come from
another stream than the state chain's, so its u_hat_0 differ between the arms.) With u_hat constrained to
span(W)^perp and rank 1, u_hat_0 enters either arm only through m_0 = <u, u_hat_0> (the joint state chain
starts at Y = m_0 e_u, Gamma = 1 - m_0^2), so the joint runs draw u_hat_0 and the frozen runs start at their
m_0; the SGD noise of the two arms is independent.

The statistics (:func:`paired_bootstrap`, :func:`rank_correlation`) resample instances and, within each,
runs (a run's pair of arms together), and are validated on synthetic hitting times with a known ratio
(:func:`synthetic_paired_hits`, :func:`bootstrap_coverage`).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from .._validation import InvalidArgument, check_choice, check_integer, check_real
from .base import ReproductionReport, print_figure, register

__all__ = ["LEVELS", "STATISTICS", "instance_statistic", "paired_bootstrap", "rank_correlation", "synthetic_paired_hits", "bootstrap_coverage", "overlap_paths", "paired_instance", "joint_frozen_reproduction"]

#: the hitting levels |m| >= level
LEVELS = (0.9, 0.95, 0.98)
#: per-instance statistics of the runs' hitting steps: the (lower) median, and the slowest run
STATISTICS = ("median", "slowest")
#: Figure 2's setting (App. B): relu, xi = 1, k = 50, c and c_hat_0 uniform on S^(k-1)
SETTING = {"activation": "relu", "k": 50, "xi": 1.0, "c_distribution": "sphere"}


def _median_index(runs: int) -> int:
    # numpy's quantile 0.5 by "inverted_cdf" (popgrad.analysis.scaling.censored_median): the ceil(R/2)-th smallest
    return int(math.ceil(0.5 * runs)) - 1


def instance_statistic(hits, statistic: str = "median") -> np.ndarray:
    """The statistic of each instance's runs: the censoring-aware (lower) median of its hitting steps (as
    :func:`popgrad.analysis.scaling.censored_median`: the ceil(R/2)-th smallest of R runs, inf when more than half are censored) or its slowest
    run (inf when any is censored).

    Parameters
    ----------
    hits : array_like (..., runs)
        Hitting steps, inf (or negative) where censored.
    statistic : {'median', 'slowest'}

    Returns
    -------
    ndarray (...)

    Examples
    --------
    >>> instance_statistic([[3.0, 1.0, 2.0, np.inf], [1.0, np.inf, np.inf, np.inf]]).tolist()
    [2.0, inf]
    >>> instance_statistic([[3.0, 1.0, 2.0, 4.0]], "slowest").tolist()
    [4.0]
    """
    check_choice(statistic, "statistic", STATISTICS)
    values = np.asarray(hits, dtype=float)
    values = np.where((values < 0) | np.isnan(values), np.inf, values)
    if statistic == "slowest":
        return values.max(axis=-1)
    return np.sort(values, axis=-1)[..., _median_index(values.shape[-1])]


def _log_ratios(frozen: np.ndarray, joint: np.ndarray, horizon: float) -> np.ndarray:
    """log(frozen / joint) with a censored statistic at the horizon (a bound, never inf)."""
    return np.log(np.minimum(frozen, horizon)) - np.log(np.minimum(joint, horizon))


def _rank_rows(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values, axis=-1)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation along the last axis (ties: average ranks); nan where a row is constant."""
    rx, ry = _rank_rows(x), _rank_rows(y)
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    norm = np.sqrt(np.sum(rx * rx, axis=-1) * np.sum(ry * ry, axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, np.sum(rx * ry, axis=-1) / np.where(norm > 0, norm, 1.0), np.nan)


def _checked_pair(frozen, joint) -> tuple:
    frozen, joint = np.asarray(frozen, dtype=float), np.asarray(joint, dtype=float)
    if frozen.ndim != 2 or frozen.shape != joint.shape:
        raise InvalidArgument(f"frozen and joint must be arrays (instances, runs) of one shape, got {frozen.shape} and {joint.shape}", "joint")
    if frozen.shape[0] < 2 or frozen.shape[1] < 1:
        raise InvalidArgument(f"at least 2 instances of at least 1 run are needed, got {frozen.shape}", "frozen")
    return np.where(frozen < 0, np.inf, frozen), np.where(joint < 0, np.inf, joint)


def _resampled_log_ratios(frozen, joint, statistic, horizon, replicates, generator, within) -> tuple:
    """The per-instance log ratios of ``replicates`` resamples: instances with replacement and, with
    ``within``, each chosen instance's runs with replacement (run j of both arms together)."""
    instances, runs = frozen.shape
    chosen = generator.integers(instances, size=(replicates, instances))
    if within:
        picked = generator.integers(runs, size=(replicates, instances, runs))
        rows = chosen[:, :, None]
        statistic_frozen = instance_statistic(frozen[rows, picked], statistic)
        statistic_joint = instance_statistic(joint[rows, picked], statistic)
    else:
        statistic_frozen = instance_statistic(frozen, statistic)[chosen]
        statistic_joint = instance_statistic(joint, statistic)[chosen]
    return chosen, _log_ratios(statistic_frozen, statistic_joint, horizon)


def paired_bootstrap(frozen, joint, statistic: str = "median", horizon: float = math.inf, replicates: int = 2000, seed: int = 0, level: float = 0.95, within: bool = True, predictors: dict | None = None) -> dict:
    """The geometric mean over instances of the per-instance ratio (statistic of the frozen runs) /
    (statistic of the joint runs), with a paired bootstrap interval: instances resampled with replacement
    and, within each, its runs (run j of both arms together, as they share u_hat_0).

    A censored statistic (inf) enters at ``horizon``: an instance whose frozen runs never arrive gives a
    lower bound of its ratio (horizon / joint), one whose joint runs never arrive an upper bound; the
    counts are returned, and the estimate is a bound where they are not zero.

    Parameters
    ----------
    frozen, joint : array_like (instances, runs)
        Hitting steps, inf (or negative) where censored.
    statistic : {'median', 'slowest'}, default 'median'
    horizon : float, default inf
        The runs' length (steps): where a censored statistic is placed.
    replicates : int, default 2000
    seed : int, default 0
    level : float, default 0.95
    within : bool, default True
        Resample the runs within instances too (False: instances only).
    predictors : dict, optional
        name -> array (instances,): Spearman's rank correlation of each with the per-instance ratio, and
        its percentile interval over the same resamples.

    Returns
    -------
    dict
        ``geometric_mean``, ``interval``, ``ratios`` (per instance), ``median_ratio``, ``favour_joint``
        (share of instances with ratio > 1), ``censored_frozen``, ``censored_joint``, ``censored_both``
        (instances), ``log_sd`` (spread of the log ratios over instances), ``replicates``, and
        ``correlations``: name -> {``spearman``, ``interval``}.

    Examples
    --------
    >>> frozen = np.array([[4.0, 5, 6], [8, 10, 12], [2, 3, 4]])
    >>> result = paired_bootstrap(frozen, frozen / 2, replicates=200)
    >>> round(result["geometric_mean"], 6), [round(x, 6) for x in result["interval"]]
    (2.0, [2.0, 2.0])
    """
    frozen, joint = _checked_pair(frozen, joint)
    check_choice(statistic, "statistic", STATISTICS)
    replicates = check_integer(replicates, "replicates", 10, 10**6)
    level = check_real(level, "level", 0.0, 0.9999, low_open=True)
    horizon = float(horizon)
    statistic_frozen, statistic_joint = instance_statistic(frozen, statistic), instance_statistic(joint, statistic)
    logs = _log_ratios(statistic_frozen, statistic_joint, horizon)
    generator = np.random.default_rng(check_integer(seed, "seed", 0, 2**63 - 1))
    chosen, resampled = _resampled_log_ratios(frozen, joint, statistic, horizon, replicates, generator, bool(within))
    tail = 0.5 * (1.0 - level)
    means = resampled.mean(axis=1)
    low, high = np.quantile(means, [tail, 1.0 - tail])
    ratios = np.exp(logs)
    censored_frozen, censored_joint = ~np.isfinite(statistic_frozen), ~np.isfinite(statistic_joint)
    correlations = {}
    for name, values in (predictors or {}).items():
        values = np.asarray(values, dtype=float)
        if values.shape != (frozen.shape[0],):
            raise InvalidArgument(f"predictor {name!r} must have one value per instance ({frozen.shape[0]}), got shape {values.shape}", "predictors")
        observed = float(_spearman_rows(values, logs))
        spread = _spearman_rows(values[chosen], resampled)
        spread = spread[np.isfinite(spread)]
        correlations[name] = {"spearman": observed, "interval": [float(x) for x in np.quantile(spread, [tail, 1.0 - tail])] if spread.size else [math.nan, math.nan]}
    return {
        "statistic": statistic,
        "geometric_mean": float(np.exp(logs.mean())),
        "interval": [float(np.exp(low)), float(np.exp(high))],
        "ratios": ratios.tolist(),
        "median_ratio": float(np.median(ratios)),
        "favour_joint": float(np.mean(ratios > 1.0)),
        "log_sd": float(np.std(logs, ddof=1)),
        "censored_frozen": int(np.sum(censored_frozen & ~censored_joint)),
        "censored_joint": int(np.sum(censored_joint & ~censored_frozen)),
        "censored_both": int(np.sum(censored_frozen & censored_joint)),
        "replicates": replicates,
        "within": bool(within),
        "level": level,
        "correlations": correlations,
    }


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation of two samples (average ranks for ties).

    Parameters
    ----------
    x, y : array_like (n,)

    Returns
    -------
    float

    Examples
    --------
    >>> rank_correlation([1, 2, 3, 4], [10, 20, 30, 25])
    0.8
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise InvalidArgument(f"x and y must be 1-d arrays of one length, got {x.shape} and {y.shape}", "y")
    return float(_spearman_rows(x, y))


def synthetic_paired_hits(instances: int, runs: int, ratio: float, between: float, within: float, seed: int = 0) -> tuple:
    """Hitting steps with a known answer: instance i has a scale s_i (log-uniform over a decade) and a
    ratio r_i = ``ratio`` exp(``between`` z_i), z_i standard normal, so that the geometric mean over the
    population of instances is exactly ``ratio``; a joint run takes s_i exp(``within`` e) steps and a
    frozen run s_i r_i exp(``within`` e'), e, e' standard normal and independent. The two arms' per-instance
    medians have the same law up to the factor r_i, so the log of their ratio is unbiased for log r_i.

    Parameters
    ----------
    instances, runs : int
    ratio : float > 0
        The population's geometric mean ratio frozen / joint.
    between : float >= 0
        The spread (sd) of log r_i over instances.
    within : float >= 0
        The spread (sd) of a run's log hitting step within an instance.
    seed : int, default 0

    Returns
    -------
    (frozen, joint) : ndarrays (instances, runs)

    Examples
    --------
    >>> frozen, joint = synthetic_paired_hits(3, 4, 2.0, 0.0, 0.0)
    >>> np.allclose(frozen / joint, 2.0)
    True
    """
    instances = check_integer(instances, "instances", 2, 10**6)
    runs = check_integer(runs, "runs", 1, 10**6)
    ratio = check_real(ratio, "ratio", 0.0, 1e12, low_open=True)
    between = check_real(between, "between", 0.0, 10.0)
    within = check_real(within, "within", 0.0, 10.0)
    generator = np.random.default_rng(check_integer(seed, "seed", 0, 2**63 - 1))
    scale = 1e4 * 10.0 ** generator.uniform(0.0, 1.0, size=(instances, 1))
    ratios = ratio * np.exp(between * generator.standard_normal((instances, 1)))
    joint = scale * np.exp(within * generator.standard_normal((instances, runs)))
    frozen = scale * ratios * np.exp(within * generator.standard_normal((instances, runs)))
    return frozen, joint


def bootstrap_coverage(ratio: float = 2.0, instances: int = 30, runs: int = 16, between: float = 0.4, within: float = 0.15, repetitions: int = 200, replicates: int = 500, seed: int = 0, within_resampling: bool = True, statistic: str = "median") -> dict:
    """How often the paired bootstrap interval of :func:`paired_bootstrap` contains the known geometric
    mean ratio of :func:`synthetic_paired_hits` (nominal 95%), over independent repetitions.

    Parameters
    ----------
    ratio, instances, runs, between, within
        As in :func:`synthetic_paired_hits`.
    repetitions : int, default 200
    replicates : int, default 500
        Bootstrap replicates per repetition.
    seed : int, default 0
    within_resampling : bool, default True
        Resample the runs within instances too.
    statistic : {'median', 'slowest'}, default 'median'
        'slowest' has no known answer here (the maxima's ratio is unbiased too: same law up to r_i).

    Returns
    -------
    dict
        ``coverage``, ``standard_error`` (binomial), ``repetitions``, ``mean_width`` (of the log interval),
        and the settings.

    Examples
    --------
    >>> bootstrap_coverage(repetitions=20, replicates=200)["coverage"] >= 0.8
    True
    """
    repetitions = check_integer(repetitions, "repetitions", 1, 10**6)
    covered, widths = 0, []
    for repetition in range(repetitions):
        frozen, joint = synthetic_paired_hits(instances, runs, ratio, between, within, seed=seed * 1_000_003 + repetition)
        result = paired_bootstrap(frozen, joint, statistic=statistic, replicates=replicates, seed=repetition, within=within_resampling)
        low, high = result["interval"]
        covered += low <= ratio <= high
        widths.append(math.log(high / low))
    coverage = covered / repetitions
    return {"coverage": coverage, "standard_error": math.sqrt(0.95 * 0.05 / repetitions), "repetitions": repetitions, "replicates": replicates, "mean_width": float(np.mean(widths)), "ratio": ratio, "instances": instances, "runs": runs, "between": between, "within": within, "within_resampling": bool(within_resampling), "statistic": statistic}


def _problem(instance: int, d: int, convention: str):
    from ..models.finetuning.spec import random_features_problem

    return random_features_problem(SETTING["activation"], SETTING["k"], SETTING["xi"], d=d, c_distribution=SETTING["c_distribution"], seed=instance, convention=convention)


def _first_crossings(steps: np.ndarray, overlap: np.ndarray, level: float) -> np.ndarray:
    """Per run, the first checkpoint with |m| >= level (inf if none)."""
    above = np.abs(overlap) >= level
    first = np.argmax(above, axis=1)
    return np.where(above.any(axis=1), steps[first].astype(float), np.inf)


def overlap_paths(model, d: int, delta: float, checkpoints, trajectories: int, seed: int, first_trajectory: int = 0, m0: float | None = None, hit: float | None = None) -> np.ndarray:
    """m = <u, u_hat> of each trajectory at the checkpoints, on the exact chain: the stepper that
    :func:`popgrad.dynamics.engine.simulate` runs (the same numbers), without the observables it computes
    at every checkpoint (the population loss of the state, most of the cost at 1000 checkpoints). With
    ``hit``, each trajectory stops at m^2 >= 1 - hit and keeps its value.

    Parameters
    ----------
    model : GeneralModel
    d : int
    delta : float
        eta = delta / d.
    checkpoints : array_like of int
        Increasing, from 0.
    trajectories, seed, first_trajectory, m0
        As in :func:`popgrad.dynamics.engine.simulate`.
    hit : float, optional

    Returns
    -------
    ndarray (trajectories, checkpoints)
    """
    from ..dynamics.trajectories import Diverged
    from ..dynamics.protocol import family_of

    family = family_of(model)
    model = family.as_model(model) or model
    d = model.check_dimension(d, "chain", True)
    grid = np.asarray(checkpoints, dtype=np.int64)
    level = math.inf if hit is None else 1.0 - hit
    stepper = family.stepper(model, d, delta / d, method="chain", trajectories=trajectories, seed=seed, first_trajectory=first_trajectory, m0=m0, level=level, stop_when_hit=hit is not None, fast_path=True)

    def overlap() -> np.ndarray:
        record = stepper.record()
        return record["m"].copy() if "m" in record else np.einsum("p,tp->t", model.UF[0], record["Y"][:, :, 0])

    values = np.empty((trajectories, grid.size))
    values[:, 0] = overlap()
    for index in range(1, grid.size):
        if hit is not None and np.all(stepper.hits >= 0):  # every trajectory stopped: its value stays
            values[:, index:] = values[:, index - 1 : index]
            break
        stepper.advance(int(grid[index - 1]), int(grid[index] - grid[index - 1]))
        values[:, index] = overlap()
        if not np.all(np.isfinite(values[:, index])):
            raise Diverged(f"diverged by step {grid[index]}: delta = {delta:g} is too large", "delta")
    return values


def paired_instance(instance: int, d: int, delta: float, horizon: float, runs: int, c_hat_lr: float = 1.0, seed: int = 0, checkpoints: int = 1000, convention: str = "common", threads: int | None = None) -> dict:
    """One instance, both arms: ``runs`` joint runs (state chain, u_hat_0 drawn) and as many frozen runs
    (the exact overlap chain) started at the joint runs' m_0, each stopped at |m| = max(:data:`LEVELS`).

    Parameters
    ----------
    instance : int
        The problem's seed (W, c, c_hat_0 of Figure 2's setting).
    d : int
    delta : float
        eta = delta / d.
    horizon : float
        Steps / d.
    runs : int
    c_hat_lr : float, default 1
        eta_c / eta of the joint arm.
    seed : int, default 0
        The runs' seed (joint: u_hat_0 and noise; frozen: seed + 1, its noise).
    checkpoints : int, default 1000
        Evenly spaced records: the hitting steps of the lower levels are the first records at or above them.
    convention : str, default 'common'
    threads : int, optional
        numba threads.

    Returns
    -------
    dict
        ``hits``: arm -> level -> list of steps (inf: censored), ``m0``, ``frozen_final`` and ``joint_final``
        (|m| of each run at the horizon; a run stopped at the top level keeps its value), the pairing's
        largest deviation, the predictors, ``cpu_seconds`` (this process's CPU time).
    """
    import numba

    from ..models.finetuning.model import general_model
    from ..models.finetuning.population import population_drift
    from ..sweeps.tasks import checkpoint_steps

    if threads is not None:
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    begin = time.process_time()
    problem = _problem(instance, d, convention)
    steps = int(round(horizon * d))
    grid = np.asarray(checkpoint_steps(steps, checkpoints), dtype=np.int64)
    hit = 1.0 - LEVELS[-1] ** 2
    joint_model = general_model(problem, train_c_hat=True, c_hat_lr=c_hat_lr)
    joint = overlap_paths(joint_model, d, delta, grid, runs, seed, hit=hit)
    starts = joint[:, 0]
    frozen_model = general_model(problem)
    frozen = np.concatenate([overlap_paths(frozen_model, d, delta, grid, 1, seed + 1, first_trajectory=j, m0=float(starts[j]), hit=hit) for j in range(runs)])
    hits = {arm: {str(level): _first_crossings(grid, overlap, level).tolist() for level in LEVELS} for arm, overlap in (("frozen", frozen), ("joint", joint))}
    # the pairing: both arms start at one m_0, and the joint start is m_0 e_u (nothing in span(W)), |u_hat_0| = 1
    from ..models.finetuning.initial import initial_states

    Y, Gamma = initial_states(joint_model, d, runs, seed, 0)
    Y, Gamma = Y[:, :, 0], Gamma[:, 0, 0]
    pairing_error = max(float(np.max(np.abs(frozen[:, 0] - starts))), float(np.max(np.abs(Y[:, :-1]))), float(np.max(np.abs(Y[:, -1] - starts))), float(np.max(np.abs(Gamma - (1.0 - starts**2)))))
    c, c_hat = problem.c, problem.c_hat
    return {
        "instance": instance, "d": d, "delta": delta, "horizon_steps": steps, "runs": runs, "seed": seed, "c_hat_lr": c_hat_lr,
        "hits": hits,
        "m0": starts.tolist(),
        "pairing_error": pairing_error,
        "frozen_final": np.abs(frozen[:, -1]).tolist(),
        "joint_final": np.abs(joint[:, -1]).tolist(),
        "predictors": {
            "abs(sum c * sum c_hat_0)": float(abs(c.sum() * c_hat.sum())),
            "<c, c_hat_0>": float(c @ c_hat),
            "abs(h(0)), frozen": float(abs(population_drift(problem, 0.0))),
            "h(0.9) sign(h(0)), frozen": float(population_drift(problem, 0.9) * np.sign(population_drift(problem, 0.0))),
        },
        "cpu_seconds": time.process_time() - begin,
    }


def _run_tasks(tasks: list, workers) -> list:
    """``paired_instance(**task)`` for every task: in this process (``workers`` 0, or one core), else in
    ``workers`` processes (default: one per core), one numba thread each."""
    cores = os.cpu_count() or 1
    if workers is None:
        workers = cores if cores > 2 else 0
    workers = check_integer(workers, "workers", 0, 1024)
    if workers <= 1:
        return [paired_instance(**task, threads=cores) for task in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(paired_instance, **task, threads=1) for task in tasks]
        return [future.result() for future in futures]


def _arrays(results: list, arm: str, level: float) -> np.ndarray:
    return np.array([result["hits"][arm][str(level)] for result in results], dtype=float)


def _label(statistic: str, level: float) -> str:
    return f"median run at abs(m) >= {level:g}" if statistic == "median" else f"slowest of the runs at abs(m) >= {level:g} (every run converged)"


@register("joint-frozen", "Open question 4: joint vs frozen c_hat by a paired design (Figure 2's setting, App. B's common convention): per-instance ratios, paired bootstrap, predictors")
def joint_frozen_reproduction(quick: bool = False, workers=None) -> ReproductionReport:
    """Open question 4, "is joint training of c_hat roughly twice as fast?", on Figure 2's setting (relu,
    xi = 1, k = 50, App. B's common convention, eta_c = eta) by a paired design: per instance the ratio
    frozen / joint of the median (and of the slowest) run's hitting step at |m| >= 0.9, 0.95, 0.98, at two
    step sizes; the geometric mean over instances with a paired bootstrap interval; what predicts an
    instance's ratio (Spearman); and one d-pair on a subset.

    Parameters
    ----------
    quick : bool
        d = 100, 4 instances of 4 runs, the d-pair on 2 instances (instead of d = 250, 30 of 16, 6 at d = 500).
    workers : int, optional
        Worker processes (default: one per core; 0 in this process).

    Returns
    -------
    ReproductionReport
    """
    begin = time.perf_counter()
    if quick:
        d, instances, runs, pair_d, pair_instances, replicates, coverage_repetitions = 100, 4, 4, 200, 2, 500, 40
    else:
        d, instances, runs, pair_d, pair_instances, replicates, coverage_repetitions = 250, 30, 16, 500, 6, 2000, 200
    deltas = (0.02, 0.01)
    # horizons (steps / d): ~1.5x the slowest run to 0.98 of either arm in pilots (d = 250, delta = 0.02: 1280 d)
    horizons = {0.02: 2000.0, 0.01: 4000.0}
    c_hat_lr, convention, seed = 1.0, "common", 4
    tasks = [{"instance": i, "d": d, "delta": delta, "horizon": horizons[delta], "runs": runs, "c_hat_lr": c_hat_lr, "seed": seed + 1000 * i, "convention": convention} for delta in deltas for i in range(instances)]
    tasks += [{"instance": i, "d": pair_d, "delta": 0.01, "horizon": horizons[0.01], "runs": runs // 2, "c_hat_lr": c_hat_lr, "seed": seed + 1000 * i, "convention": convention} for i in range(pair_instances)]
    results = _run_tasks(tasks, workers)
    main = {delta: [r for r in results if r["d"] == d and r["delta"] == delta] for delta in deltas}
    paired = [r for r in results if r["d"] == pair_d]
    names = list(main[deltas[0]][0]["predictors"])
    table, criteria, rows = {}, [], []
    for delta in deltas:
        cells = main[delta]
        horizon_steps = cells[0]["horizon_steps"]
        predictors = {name: np.array([cell["predictors"][name] for cell in cells]) for name in names}
        for statistic in STATISTICS:
            for level in LEVELS:
                if statistic == "slowest" and level != LEVELS[-1]:
                    continue
                frozen, joint = _arrays(cells, "frozen", level), _arrays(cells, "joint", level)
                result = paired_bootstrap(frozen, joint, statistic, horizon_steps, replicates, seed=7, predictors=predictors if statistic == "median" else None)
                unpaired = _unpaired_interval(frozen, joint, statistic, horizon_steps, replicates)
                result["unpaired_interval"] = unpaired
                result["censored_runs"] = {"frozen": int(np.sum(~np.isfinite(frozen))), "joint": int(np.sum(~np.isfinite(joint)))}
                table[(delta, statistic, level)] = result
                bound = " — a lower bound: frozen instances censored at the horizon enter at it" if result["censored_frozen"] or result["censored_both"] else ""
                criteria.append({"name": f"joint roughly twice as fast (the paper): frozen / joint, {_label(statistic, level)}, delta = {delta:g} (eta_c = eta), geometric mean over {len(cells)} instances, paired bootstrap{bound}", "value": result["geometric_mean"], "kind": "claim", "paper": 2.0, "interval": result["interval"]})
                rows.append((delta, statistic, level, result))
    joint_censored = sum(table[(delta, "median", level)]["censored_runs"]["joint"] for delta in deltas for level in LEVELS[:1])
    criteria.append({"name": f"every joint run reaches abs(m) >= {LEVELS[0]:g} within the horizon (censored joint runs, both step sizes)", "value": joint_censored, "pass": joint_censored == 0})
    pairing_error = max(r["pairing_error"] for r in results)
    criteria.append({"name": "the arms are paired: run j of both arms starts at one m_0 = <u, u_hat_0>, the joint start m_0 e_u with Gamma = 1 - m_0^2 (largest deviation; the instance: one W, c, c_hat_0)", "value": pairing_error, "pass": pairing_error < 1e-12})
    # the validation of the paired bootstrap on synthetic data with a known ratio, at the measured spreads
    reference = table[(deltas[-1], "median", LEVELS[0])]
    within_sd = _within_spread(main[deltas[-1]], LEVELS[0])
    # at the full design's size (the quick one's 4 instances are too few for any bootstrap interval)
    validation = bootstrap_coverage(ratio=2.0, instances=max(instances, 30), runs=max(runs, 16), between=max(reference["log_sd"], 0.05), within=within_sd, repetitions=coverage_repetitions, replicates=500, seed=1)
    criteria.append({"name": f"the paired bootstrap's 95% interval covers a known ratio (synthetic: {validation['instances']} instances x {validation['runs']} runs, between-instance log sd {validation['between']:.2f} and within {validation['within']:.2f} as measured; {validation['repetitions']} repetitions; within 4 binomial SE of 0.95)", "value": validation["coverage"], "pass": abs(validation["coverage"] - 0.95) <= 4 * validation["standard_error"]})
    correlations = reference["correlations"]
    for name, entry in correlations.items():
        criteria.append({"name": f"Spearman rank correlation of the instance's ratio (median run, abs(m) >= {LEVELS[0]:g}, delta = {deltas[-1]:g}) with {name} (95% interval [{entry['interval'][0]:.2f}, {entry['interval'][1]:.2f}])", "value": entry["spearman"], "kind": "reported"})
    # the d-pair: the same instances (c, c_hat_0; W redrawn in R^d) at d and pair_d
    small = [r for r in main[0.01] if r["instance"] < pair_instances]
    pair_logs = {}
    for label, cells in ((d, small), (pair_d, paired)):
        frozen, joint = _arrays(cells, "frozen", LEVELS[0]), _arrays(cells, "joint", LEVELS[0])
        pair_logs[label] = np.log(np.minimum(instance_statistic(frozen), cells[0]["horizon_steps"])) - np.log(np.minimum(instance_statistic(joint), cells[0]["horizon_steps"]))
    pair_agreement = rank_correlation(pair_logs[d], pair_logs[pair_d]) if pair_instances > 2 else None
    same_side = float(np.mean(np.sign(pair_logs[d]) == np.sign(pair_logs[pair_d])))
    criteria.append({"name": f"d-pair: share of {pair_instances} instances on the same side of 1 (favouring joint or frozen) at d = {d} and {pair_d} (delta = 0.01, median at abs(m) >= {LEVELS[0]:g}; Spearman {_number(pair_agreement)})", "value": same_side, "kind": "reported"})
    figure = _figure(rows, reference, main[deltas[-1]], pair_logs, d, pair_d, deltas)
    seconds = time.perf_counter() - begin
    parameters = {
        "setting": SETTING | {"generator": "random (rows of W uniform on S^(d-1))", "convention": convention, "prefactor": "k / (k + xi^2) = 50/51 (App. B)", "output_scale": "1/xi (= 1)", "u_hat": "in span(W)^perp (the paper's projected algorithm)"},
        "d": d, "instances": instances, "runs_per_arm": runs, "deltas": list(deltas), "eta": "delta / d", "eta_c / eta": c_hat_lr,
        "horizons_steps_over_d": {str(delta): horizons[delta] for delta in deltas}, "checkpoints": 1000, "levels": list(LEVELS),
        "seeds": {"instance": "problem seed = instance index", "runs": f"{seed} + 1000 instance (joint: u_hat_0 and noise); + 1 (frozen noise)"},
        "pairing": "run j of both arms starts at the same u_hat_0 (the frozen chain at the joint run's m_0); noise independent",
        "bootstrap": {"replicates": replicates, "resampling": "instances with replacement, then runs (pairs of arms) within each", "seed": 7, "censored statistic": "at the horizon (a bound)"},
        "d_pair": {"d": pair_d, "instances": pair_instances, "runs_per_arm": runs // 2, "delta": 0.01},
        "validation": validation,
        "table": [{"delta": delta, "statistic": statistic, "level": level} | {key: result[key] for key in ("geometric_mean", "interval", "unpaired_interval", "median_ratio", "favour_joint", "log_sd", "censored_frozen", "censored_joint", "censored_both", "censored_runs", "ratios")} for delta, statistic, level, result in rows],
        "correlations": correlations,
        "d_pair_log_ratios": {str(key): value.tolist() for key, value in pair_logs.items()},
        "frozen_floor": {str(delta): _floor_summary(main[delta]) for delta in deltas},
        "cpu_seconds_of_the_runs": round(sum(r["cpu_seconds"] for r in results), 1),
        "wall_seconds": round(seconds, 1),
    }
    notes = _notes(rows, table, correlations, validation, deltas, d, pair_d, pair_instances, same_side, pair_agreement, instances, runs, c_hat_lr, main)
    return ReproductionReport("joint-frozen", "open question 4: joint vs frozen c_hat, paired", parameters, criteria, figure, [], notes)


def _quartiles(values) -> str:
    return "none" if values is None else ", ".join(f"{value:.3f}" for value in values)


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _unpaired_interval(frozen, joint, statistic, horizon, replicates) -> list:
    """The interval an unpaired design reports: each arm's instances resampled on their own (the ratio of
    the geometric means of the two arms' statistics)."""
    generator = np.random.default_rng(11)
    stat_frozen = np.log(np.minimum(instance_statistic(frozen, statistic), horizon))
    stat_joint = np.log(np.minimum(instance_statistic(joint, statistic), horizon))
    n = stat_frozen.size
    means = stat_frozen[generator.integers(n, size=(replicates, n))].mean(axis=1) - stat_joint[generator.integers(n, size=(replicates, n))].mean(axis=1)
    return [float(x) for x in np.exp(np.quantile(means, [0.025, 0.975]))]


def _within_spread(cells: list, level: float) -> float:
    """The pooled within-instance sd of log hitting steps (uncensored runs, both arms)."""
    deviations = []
    for cell in cells:
        for arm in ("frozen", "joint"):
            values = np.log(np.asarray(cell["hits"][arm][str(level)], dtype=float))
            values = values[np.isfinite(values)]
            if values.size > 1:
                deviations.append(values - values.mean())
    pooled = np.concatenate(deviations) if deviations else np.zeros(1)
    return float(max(np.sqrt(np.mean(pooled**2)), 0.01))


def _floor_summary(cells: list) -> dict:
    """How the frozen runs that never reach the top level end: their count and |m| at the horizon."""
    finals = [value for cell in cells for value, top in zip(cell["frozen_final"], cell["hits"]["frozen"][str(LEVELS[-1])]) if not math.isfinite(top)]
    return {"runs_below_top_level": len(finals), "of": sum(len(cell["frozen_final"]) for cell in cells), "abs_m_at_horizon_quartiles": [float(x) for x in np.quantile(finals, [0.25, 0.5, 0.75])] if finals else None}


def _log_axis(axis) -> None:
    """Ticks at 1, 2, 5 times powers of ten, labelled as plain numbers (no minor labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _figure(rows, reference, cells, pair_logs, d, pair_d, deltas):
    figure, axes = print_figure(3, height=2.6)
    ax = axes[0]
    groups = [(statistic, level) for statistic in STATISTICS for level in LEVELS if statistic == "median" or level == LEVELS[-1]]
    for delta, offset, color, dark in ((deltas[0], -0.18, "C0", "navy"), (deltas[1], 0.18, "C3", "darkred")):
        for index, (statistic, level) in enumerate(groups):
            result = next(row[3] for row in rows if row[0] == delta and row[1] == statistic and row[2] == level)
            ratios = np.asarray(result["ratios"])
            ax.plot(index + offset + np.linspace(-0.1, 0.1, ratios.size), ratios, ".", color=color, alpha=0.5, ms=3, label=f"instances, delta = {delta:g}" if index == 0 else None)
            mean, (low, high) = result["geometric_mean"], result["interval"]
            ax.errorbar([index + offset], [mean], yerr=[[mean - low], [high - mean]], fmt="s", color=dark, ms=3.5, capsize=2, label=f"geometric mean, paired 95% interval, delta = {delta:g}" if index == 0 else None)
    ax.axhline(2.0, color="grey", ls="--", lw=0.8, label="the paper: roughly 2")
    ax.axhline(1.0, color="grey", ls=":", lw=0.8)
    ax.set_yscale("log")
    _log_axis(ax.yaxis)
    ax.set_xticks(range(len(groups)), [f"{level:g}" if statistic == "median" else f"{level:g}\nslowest" for statistic, level in groups])
    ax.set(xlabel="hitting level abs(m) (of the median run, or the slowest)", ylabel="frozen / joint hitting step", title="open question 4: per-instance ratios, paired arms")
    ax.legend()
    ax = axes[1]
    best = max(reference["correlations"], key=lambda name: abs(reference["correlations"][name]["spearman"]))
    x = np.array([cell["predictors"][best] for cell in cells])
    ax.plot(x, reference["ratios"], "o", color="C2", ms=3)
    ax.axhline(1.0, color="grey", ls=":", lw=0.8)
    ax.set_yscale("log")
    _log_axis(ax.yaxis)
    entry = reference["correlations"][best]
    ax.set(xlabel=best, ylabel=f"ratio, median at {LEVELS[0]:g}, delta = {deltas[-1]:g}", title=f"best predictor: Spearman {entry['spearman']:.2f} [{entry['interval'][0]:.2f}, {entry['interval'][1]:.2f}]")
    ax = axes[2]
    ax.plot(np.exp(pair_logs[d]), np.exp(pair_logs[pair_d]), "o", color="C4", ms=4)
    lo = float(np.exp(min(pair_logs[d].min(), pair_logs[pair_d].min()))) * 0.8
    hi = float(np.exp(max(pair_logs[d].max(), pair_logs[pair_d].max()))) * 1.25
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set(xscale="log", yscale="log")
    _log_axis(ax.xaxis)
    _log_axis(ax.yaxis)
    ax.set(xlabel=f"ratio at d = {d}", ylabel=f"ratio at d = {pair_d}", title=f"the same instances at two d (delta = 0.01, median at {LEVELS[0]:g})")
    return figure


def _notes(rows, table, correlations, validation, deltas, d, pair_d, pair_instances, same_side, pair_agreement, instances, runs, c_hat_lr, main) -> list:
    def shown(result):
        return f"{result['geometric_mean']:.2f} [{result['interval'][0]:.2f}, {result['interval'][1]:.2f}]"

    main_row = table[(deltas[-1], "median", LEVELS[0])]
    noise = 1.2533 * math.sqrt(2.0) * validation["within"] / math.sqrt(runs)
    contain_two = sum(result["interval"][0] <= 2.0 <= result["interval"][1] for *_, result in rows)
    below_two = sum(result["interval"][1] < 2.0 for *_, result in rows)
    contain_one = sum(result["interval"][0] <= 1.0 <= result["interval"][1] for *_, result in rows)
    above_one = sum(result["interval"][0] > 1.0 for *_, result in rows)

    lines = [
        f"Setting: Figure 2's (relu, xi = 1, k = 50, c and c_hat_0 uniform on S^(k-1), rows of W uniform on S^(d-1)) in App. B's common convention (one prefactor k/(k+xi^2), output 1/xi), the paper's default here; d = {d} (the paper: 2000) to fit the budget; eta = delta / d and the c_hat rate eta_c / eta = {c_hat_lr:g} (App. B's one learning rate); {instances} instances x {runs} runs per arm; the exact state chain (joint) and overlap chain (frozen).",
        "Design: an instance is one (W, c, u, c_hat_0); run j of both arms starts from the same u_hat_0 (the frozen chain at the joint run's m_0, which is the whole initial state of both arms with u_hat in span(W)^perp); the per-instance ratio is the frozen statistic over the joint one; its geometric mean over instances gets a paired bootstrap interval (instances resampled, then the run pairs within each).",
        f"In words: with eta_c = eta in App. B's common convention, {len(rows)} paired intervals (two step sizes x levels 0.9, 0.95, 0.98 of the median run, and the slowest run at 0.98): 2 (the paper's 'roughly twice as fast') lies inside {contain_two} of them and above the upper end of {below_two}; 1 (no speed-up) lies inside {contain_one} of them, and {above_one} of them lie wholly above 1 (joint faster).",
        "Answer (geometric mean of the per-instance ratio frozen / joint, paired 95% interval): " + "; ".join(f"delta = {delta:g}, {_label(statistic, level)}: {shown(result)}, joint faster on {100 * result['favour_joint']:.0f}% of instances" + (f", {result['censored_frozen'] + result['censored_both']} instances' frozen statistic censored (a lower bound)" if result["censored_frozen"] or result["censored_both"] else "") for delta, statistic, level, result in rows) + ".",
        f"Paired against unpaired: at delta = {deltas[-1]:g}, median at {LEVELS[0]:g}, the interval of an unpaired design (each arm's instances resampled on their own, the ratio of the arms' geometric means) is [{main_row['unpaired_interval'][0]:.2f}, {main_row['unpaired_interval'][1]:.2f}], the paired one {shown(main_row)}.",
        f"The per-instance ratio varies between instances: log sd {main_row['log_sd']:.2f} over instances at delta = {deltas[-1]:g}, level {LEVELS[0]:g} (range {min(main_row['ratios']):.2f}–{max(main_row['ratios']):.2f}), against about {noise:.2f} that the runs alone would give (1.25 x 1.41 x the within-instance log sd {validation['within']:.2f} / sqrt({runs}): the sampling sd of the log of a ratio of two medians of {runs} runs).",
        "What predicts an instance's ratio (Spearman, 95% paired bootstrap interval; median at " + f"{LEVELS[0]:g}, delta = {deltas[-1]:g}): " + "; ".join(f"{name}: {entry['spearman']:.2f} [{entry['interval'][0]:.2f}, {entry['interval'][1]:.2f}]" for name, entry in correlations.items()) + ".",
        f"The same instances at d = {d} and d = {pair_d} ({pair_instances} instances, {runs // 2} runs per arm at d = {pair_d}, delta = 0.01): {100 * same_side:.0f}% on the same side of 1, rank correlation {_number(pair_agreement)}.",
        "Runs that never reach the top level within the horizon (the frozen arm's noise floor: with c_hat frozen the residual stays): " + "; ".join(f"delta = {delta:g}: {_floor_summary(main[delta])['runs_below_top_level']} of {_floor_summary(main[delta])['of']} frozen runs (their abs(m) at the horizon, quartiles: {_quartiles(_floor_summary(main[delta])['abs_m_at_horizon_quartiles'])}), {sum(not math.isfinite(x) for cell in main[delta] for x in cell['hits']['joint'][str(LEVELS[-1])])} joint runs" for delta in deltas) + ". They are censored, not dropped: an instance's censored statistic enters at the horizon, a bound of its ratio (a lower bound where the frozen runs are censored; the claims say where).",
        f"Validation of the paired bootstrap on synthetic hitting times with a known geometric-mean ratio 2 at the measured spreads (between-instance log sd {validation['between']:.2f}, within {validation['within']:.2f}): coverage {validation['coverage']:.3f} over {validation['repetitions']} repetitions (binomial SE {validation['standard_error']:.3f}); tests/test_joint_frozen.py checks it, and that resampling the runs within instances is conservative (not anti-conservative) when the within-instance spread dominates.",
        "Hitting steps are the first of 1000 evenly spaced records at or above a level (resolution horizon/1000); every run stops at the top level.",
    ]
    return lines
