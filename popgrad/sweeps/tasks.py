"""One sweep cell: build its problem, run it, return a JSON-ready result with its provenance.

:func:`run_cell` is what a worker executes. It depends only on the cell's parameters (its seed comes from
:func:`~popgrad.sweeps.spec.cell_seed`), so the same cell gives the same numbers on any worker, in any
order. Kinds:

* ``hitting_time``: per trajectory the first step with m^2 >= 1 - eps (rank r: the smallest squared singular
  value of U^T U_hat), -1 when censored at the horizon; the median, quartiles and censored fraction; and the
  population gradient flow's own hitting step (from the quantiles of the initial overlap, or the general
  model's starts) for comparison;
* ``simulate``: mean and standard error of m (or every observable of the general model) per checkpoint;
* ``compare``: the verdicts and statistics of the comparison with the predictions.

``spacing = "log"`` places the checkpoints geometrically (step 0, then 1 to the end), for dynamics with a long
plateau; ``record_trajectories = true`` adds every trajectory's observables per checkpoint (``trajectories``:
name -> [trajectory][checkpoint]) to ``simulate`` and to ``hitting_time`` cells that do not stop when hit.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import time
from pathlib import Path

import numpy as np

from .._validation import InvalidArgument
from .spec import GENERAL_KEYS, cell_seed

__all__ = ["run_cell", "build_problem", "predicted_hitting_steps", "checkpoint_steps"]

#: fault injection for the tests (a worker killed mid-cell): when this variable names a file that does not
#: exist yet, the first cell to see it creates the file and kills its own process
KILL_ONCE = "POPGRAD_SWEEP_KILL_ONCE"


def build_problem(cell: dict):
    """The cell's problem (and general model, when any general key is set): ``(problem, model or None)``."""
    from ..models.finetuning import spec

    generator = cell["generator"]
    common = {"seed": cell["problem_seed"], "convention": cell["convention"]}
    if generator == "file":
        import json

        from ..models.finetuning.general import load_general_model

        general_file = bool(set(json.loads(Path(cell["path"]).read_text())) & set(spec.GENERAL_MODEL_KEYS)) if Path(cell["path"]).is_file() else False
        model = load_general_model(cell["path"]) if general_file else None
        problem = model.problem if general_file else spec.load_problem(cell["path"])
        if problem.W is not None and problem.W.shape[1] != cell["d"]:
            raise InvalidArgument(f"d = {cell['d']} contradicts the problem file's W, which has input dimension {problem.W.shape[1]}", "d")
    elif generator == "random":
        problem = spec.random_features_problem(cell["activation"], cell["k"], cell["xi"], d=cell["d"], c_distribution=cell["c_distribution"], **common)
    elif generator == "claim2":
        problem = spec.claim2_problem(cell["activation"], cell["k"], cell["xi"], **common)
    else:
        constructor = spec.orthonormal_problem if generator == "orthonormal" else spec.glm_problem
        problem = constructor(cell["activation"], cell["k"], cell["xi"], c_distribution=cell["c_distribution"], **common)
    switches = {key: cell[key] for key in GENERAL_KEYS if cell.get(key) is not None}
    if generator == "file":
        if switches:
            raise InvalidArgument(f"{sorted(switches)[0]} next to generator 'file': the problem file sets the model", sorted(switches)[0])
        return problem, model
    if not switches:
        return problem, None
    from ..models.finetuning.general import general_model

    return problem, general_model(problem, seed=cell["problem_seed"], **switches)


def predicted_hitting_steps(problem, d: int, eta: float, eps: float, horizon: int) -> np.ndarray:
    """Gradient flow's hitting step ``dm/dstep = eta h(m) (1 - m^2)`` from each equal-probability quantile
    of the initial overlap m_0: the first step with m^2 >= 1 - eps (inf if not by ``horizon``).

    Parameters
    ----------
    problem : FineTuningProblem
    d : int
    eta : float
    eps : float
    horizon : int

    Returns
    -------
    ndarray
    """
    from ..dynamics.solve import solve
    from ..models.finetuning.odes import DriftODE
    from ..models.finetuning.population import drift_interpolant
    from ..models.finetuning.predictions import initial_points

    ode = DriftODE(drift_interpolant(problem).interpolant, a=eta)
    level = math.sqrt(1.0 - eps)
    out = []
    for m0 in initial_points(d - problem.rank, None):
        if m0 * m0 >= 1.0 - eps:
            out.append(0.0)
            continue
        times = []
        for target in (level, -level):
            solution = solve(ode, float(m0), [float(horizon)], target=target, stop_at_event=True)
            times.append(solution.event_time)
        finite = [t for t in times if math.isfinite(t)]
        out.append(min(finite) if finite else math.inf)
    return np.array(out)


def _quantiles(steps: np.ndarray) -> dict:
    """Median, quartiles and censored fraction of hitting steps (inf: censored), as the simulators report them."""
    from ..dynamics.trajectories import hitting_summary

    summary = hitting_summary(np.where(np.isfinite(steps), steps, -1.0), 0)
    return {key: summary[key] for key in ("median", "q25", "q75", "censored_fraction")}


def checkpoint_steps(steps: int, count: int, spacing: str = "linear") -> list:
    """The recorded steps: ``count`` intervals from 0 to ``steps``, evenly spaced or geometric (0, then 1 to
    ``steps``), without repeats.

    Parameters
    ----------
    steps : int
    count : int
    spacing : {'linear', 'log'}

    Returns
    -------
    list of int

    Examples
    --------
    >>> checkpoint_steps(1000, 4), checkpoint_steps(1000, 4, "log")
    ([0, 250, 500, 750, 1000], [0, 1, 10, 100, 1000])
    """
    count = max(int(count), 1)
    if spacing == "log" and steps > 1:
        grid = np.concatenate([[0.0], np.geomspace(1.0, steps, count)])
    else:
        grid = np.linspace(0, steps, count + 1)
    return np.unique(grid.round().astype(np.int64)).tolist()


def _per_trajectory(observables: dict) -> dict:
    return {name: np.asarray(values).tolist() for name, values in observables.items()}


def run_cell(cell: dict, threads: int | None = None) -> dict:
    """Run one cell and return ``{"result": ..., "provenance": ...}`` (JSON-ready).

    Parameters
    ----------
    cell : dict
        A cell of :meth:`~popgrad.sweeps.spec.SweepSpec.cells`.
    threads : int, optional
        numba threads for this cell (the executor sets workers x threads <= cores).

    Returns
    -------
    dict
    """
    import numba

    from .. import __version__

    marker = os.environ.get(KILL_ONCE)
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), 9)
    if threads is not None:
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    begin = time.time()
    seed = cell_seed(cell)
    problem, model = build_problem(cell)
    d = cell["d"]
    eta = cell["eta"] if cell["eta"] is not None else cell["delta"] / d
    steps = int(cell["steps"]) if cell["steps"] is not None else int(round(cell["horizon"] * d))
    checkpoints = checkpoint_steps(steps, cell["checkpoints"], cell.get("spacing", "linear"))
    kind, method, trajectories = cell["kind"], cell["method"], cell["trajectories"]
    hit = cell["eps"] if kind == "hitting_time" else None
    stop = bool(cell["stop_when_hit"]) if kind == "hitting_time" else False
    if kind == "compare":
        if model is None:
            from ..analysis.comparison import compare

            comparison = compare(problem, d, eta, checkpoints, trajectories=trajectories, method=method, seed=seed, noise_samples=cell["noise_samples"])
            record = comparison.to_json_dict()
            result = {"verdict": record["verdict"], "conclusions": record["conclusions"], "statistics": record["statistics"], "steps": checkpoints, "mean": comparison.mean, "standard_error": comparison.standard_error}
        else:
            from ..analysis.general_comparison import compare_general

            comparison = compare_general(model, d, eta, checkpoints, trajectories=trajectories, method=method, seed=seed, map_samples=min(cell["noise_samples"], 65536))
            result = {"verdict": comparison.verdict, "conclusions": comparison.conclusions, "steps": checkpoints, "observables": {name: {"mean": comparison.mean(name), "standard_error": comparison.standard_error(name)} for name in comparison.observables}}
    else:
        if model is None:
            from ..models.finetuning.simulation import simulate

            simulation = simulate(problem, d, eta, checkpoints, trajectories=trajectories, method=method, seed=seed, hit=hit, stop_when_hit=stop)
            error = simulation.m.std(axis=0, ddof=1) / math.sqrt(trajectories) if trajectories > 1 else np.full(len(checkpoints), np.nan)
            result = {"steps": checkpoints, "m": {"mean": simulation.m.mean(axis=0), "standard_error": error}}
            if cell.get("record_trajectories"):
                result["trajectories"] = _per_trajectory({"m": simulation.m})
        else:
            from ..models.finetuning.general import simulate_general

            simulation = simulate_general(model, d, eta, checkpoints, trajectories=trajectories, method=method, seed=seed, hit=hit, stop_when_hit=stop)
            observables = simulation.observables()
            result = {"steps": checkpoints, "observables": {name: {"mean": values.mean(axis=0), "standard_error": values.std(axis=0, ddof=1) / math.sqrt(trajectories) if trajectories > 1 else None} for name, values in observables.items()}}
            if cell.get("record_trajectories"):
                result["trajectories"] = _per_trajectory(observables)
        if kind == "hitting_time":
            if stop:
                result = {"steps": checkpoints}  # stopped trajectories have no later observables
            hits = simulation.hitting_steps
            times = np.where(hits >= 0, hits.astype(float), np.inf)
            result["hitting_steps"] = [int(h) for h in hits]
            result["hitting_time"] = _quantiles(times) | {"horizon": steps, "eps": cell["eps"]}
            if model is None:
                predicted = predicted_hitting_steps(problem, d, eta, cell["eps"], steps)
                result["predicted_hitting_time"] = _quantiles(predicted) | {"method": "gradient flow from 33 quantiles of m_0"}
    provenance = {"seed": seed, "versions": {"popgrad": __version__, "numpy": np.__version__, "numba": numba.__version__, "python": platform.python_version()}, "wall_seconds": time.time() - begin, "host": socket.gethostname(), "pid": os.getpid(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return {"result": result, "provenance": provenance}
