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

import os
import socket
import time

import numpy as np

from .._io import versions
from .._validation import InvalidArgument
from .spec import GENERAL_KEYS, cell_seed

__all__ = ["run_cell", "build_model", "check_cell", "checkpoint_steps"]

#: fault injection for the tests (a worker killed mid-cell): when this variable names a file that does not
#: exist yet, the first cell to see it creates the file and kills its own process
KILL_ONCE = "POPGRAD_SWEEP_KILL_ONCE"


def build_model(cell: dict):
    """The cell's model: a model file (any family), or the fine-tuning model from the cell's problem keys
    and switches (with every switch at its default, the model of the overlap m)."""
    from ..models.finetuning import spec
    from ..models.finetuning.model import general_model

    generator = cell["generator"]
    common = {"seed": cell["problem_seed"], "convention": cell["convention"], "prefactor": cell.get("prefactor")}
    switches = {key: cell[key] for key in GENERAL_KEYS if cell.get(key) is not None}
    if generator == "file":
        from .._io import read_json_file
        from ..dynamics.protocol import model_from_dict

        if switches or cell.get("prefactor") is not None:
            name = sorted(switches)[0] if switches else "prefactor"
            raise InvalidArgument(f"{name} next to generator 'file': the model file sets the model", name)
        model = model_from_dict(read_json_file(cell["path"], "model file", "path"))
        W = getattr(getattr(model, "problem", None), "W", None)
        if W is not None and W.shape[1] != cell["d"]:
            raise InvalidArgument(f"d = {cell['d']} contradicts the problem file's W, which has input dimension {W.shape[1]}", "d")
        return model
    if generator == "random":
        problem = spec.random_features_problem(cell["activation"], cell["k"], cell["xi"], d=cell["d"], c_distribution=cell["c_distribution"], **common)
    elif generator == "claim2":
        problem = spec.claim2_problem(cell["activation"], cell["k"], cell["xi"], **common)
    else:
        constructor = spec.orthonormal_problem if generator == "orthonormal" else spec.glm_problem
        problem = constructor(cell["activation"], cell["k"], cell["xi"], c_distribution=cell["c_distribution"], **common)
    model = general_model(problem, seed=cell["problem_seed"], **switches)
    scale = cell.get("c_hat_scale")
    if scale is not None and scale != 1:
        # the initial c_hat scaled (its first column; a drawn problem's c_hat has no zero entry, so the model
        # takes the scaled one as its C_hat)
        C_hat = model.C_hat.copy()
        C_hat[:, 0] *= float(scale)
        model = general_model(problem, seed=cell["problem_seed"], C_hat=C_hat, **switches)
    return model


def check_cell(cell: dict, build: bool = True) -> None:
    """Every check :func:`run_cell` makes before its work, made without it: the model (built unless
    ``build`` is False), the method, the dimension, the step size, the record and its memory, and for
    ``compare`` the predictions' options. A sweep runs it on every cell before its store is made, so a
    refused specification leaves nothing behind.

    Parameters
    ----------
    cell : dict
    build : bool, default True
        Build the model (False: the checks that need no model only, for problems too large to build twice).

    Returns
    -------
    None

    Raises
    ------
    InvalidArgument
        Naming the key at fault.
    """
    from .._validation import check_memory
    from ..dynamics.protocol import family_of
    from ..dynamics.trajectories import MAX_STEPS, step_schedule

    d = cell["d"]
    steps = int(cell["steps"]) if cell["steps"] is not None else int(round(cell["horizon"] * d))
    count = min(int(cell["checkpoints"]), steps) + 1
    # the recorded steps themselves, before they are laid out (a billion checkpoints is refused, not allocated)
    check_memory(8.0 * count * (1 + cell["trajectories"]), f"{count} checkpoints of {cell['trajectories']} trajectories", "checkpoints")
    if not 1 <= steps <= MAX_STEPS:
        raise InvalidArgument(f"steps must lie in [1, {MAX_STEPS:.0e}], got {steps}", "steps")
    if not build:
        return
    model = build_model(cell)
    family = family_of(model)
    model = family.as_model(model) or model
    if cell["method"] not in family.methods:
        raise InvalidArgument(f"method must be one of {', '.join(family.methods)}, got {cell['method']!r}", "method")
    if cell["trajectories"] > 10**8:
        raise InvalidArgument(f"trajectories must lie in [1, 100000000], got {cell['trajectories']}", "trajectories")
    d = model.check_dimension(d, cell["method"])
    eta, checkpoints = step_schedule(d, cell["eta"], None if cell["eta"] is not None else cell["delta"], checkpoint_steps(steps, cell["checkpoints"], cell.get("spacing", "linear")), None)
    per_checkpoint = float(family.record_bytes(model, True)) * cell["trajectories"]
    check_memory(per_checkpoint * (checkpoints.size + 2) + 64.0 * cell["trajectories"], f"the record of {cell['trajectories']} trajectories at {checkpoints.size} checkpoints", "trajectories")
    if cell["kind"] == "compare":
        from ..dynamics.engine import chosen_predictions

        chosen_predictions(model, None, {"noise_samples": cell["noise_samples"] if getattr(model, "reduces_to_overlap", False) else min(cell["noise_samples"], 65536)})


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
    from ..dynamics.trajectories import checkpoint_grid

    return checkpoint_grid(steps, max(int(count), 1) + 1, spacing).tolist()


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

    marker = os.environ.get(KILL_ONCE)
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), 9)
    if threads is not None:
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    begin = time.time()
    seed = cell_seed(cell)
    model = build_model(cell)
    d = cell["d"]
    eta = cell["eta"] if cell["eta"] is not None else cell["delta"] / d
    steps = int(cell["steps"]) if cell["steps"] is not None else int(round(cell["horizon"] * d))
    checkpoints = checkpoint_steps(steps, cell["checkpoints"], cell.get("spacing", "linear"))
    kind, method, trajectories = cell["kind"], cell["method"], cell["trajectories"]
    hit = cell["eps"] if kind == "hitting_time" else None
    stop = bool(cell["stop_when_hit"]) if kind == "hitting_time" else False
    if kind == "compare":
        from ..analysis.comparison import compare

        # the noise ODEs of a reduced model take the cell's samples; the one-step-mean map (state models) at most 65536 per evaluation
        options = {"noise_samples": cell["noise_samples"] if getattr(model, "reduces_to_overlap", False) else min(cell["noise_samples"], 65536)}
        comparison = compare(model, d, eta, checkpoints, trajectories=trajectories, method=method, seed=seed, **options)
        result = {"verdict": comparison.verdict, "conclusions": comparison.conclusions, "statistics": {name: {observable: comparison.statistic(name, observable) for observable in conclusions} for name, conclusions in comparison.conclusions.items() if name not in comparison.predictions.failures}, "steps": checkpoints, "observables": {name: {"mean": comparison.mean(name), "standard_error": comparison.standard_error(name)} for name in comparison.observables}}
    else:
        from ..dynamics.engine import predict, simulate

        run = simulate(model, d, eta, checkpoints, trajectories=trajectories, method=method, seed=seed, hit=hit, stop_when_hit=stop)
        result = {"steps": checkpoints, "observables": {name: {"mean": run.mean(name), "standard_error": run.standard_error(name) if trajectories > 1 else None} for name in run.observables}}
        if cell.get("record_trajectories"):
            result["trajectories"] = _per_trajectory(run.observables)
        if kind == "hitting_time":
            if stop:
                result = {"steps": checkpoints}  # stopped trajectories have no later observables
            hits = run.hitting_steps
            times = np.where(hits >= 0, hits.astype(float), np.inf)
            result["hitting_steps"] = [int(h) for h in hits]
            result["hitting_time"] = _quantiles(times) | {"horizon": steps, "eps": cell["eps"]}
            if getattr(model, "reduces_to_overlap", False):  # the flow's hitting steps from the law of m_0 (other models: from their own starts, in compare)
                predicted = predict(run, which=("gradient_flow",))
                result["predicted_hitting_time"] = _quantiles(predicted.hitting_steps["gradient_flow"]) | {"method": "gradient flow from 33 quantiles of m_0"}
    provenance = {"seed": seed, "versions": versions(), "wall_seconds": time.time() - begin, "host": socket.gethostname(), "pid": os.getpid(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return {"result": result, "provenance": provenance}
