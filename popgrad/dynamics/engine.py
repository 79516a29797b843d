"""The one engine: :func:`simulate` any model into a :class:`Run`, :func:`predict` its observables into
:class:`Predictions` (the model protocol of :mod:`.protocol` supplies the kernels and the predictions).

A run holds named observables per trajectory and checkpoint (``observables[name][trajectory,
checkpoint]``), and the state only where it does not reduce to them (``state[name][trajectory, checkpoint,
...]``; empty for a model that reduces to a scalar overlap). Trajectory j draws from its own random streams
(seed, purpose, first_trajectory + j), and the state (vectors and stream states) persists between calls,
so results do not depend on the thread count, on how trajectories are batched, or on how steps are split
between checkpoints.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .._io import versions, write_netcdf_arrays
from .._validation import InvalidArgument, check_choice, check_choices, check_integer, check_memory, check_real
from ..numerics.statistics import QUANTILE_LEVELS, standard_error, summary
from .protocol import family_of, predictors_for
from .trajectories import Diverged, checkpoint_grid, hitting_summary, run_to_checkpoints, step_schedule

__all__ = ["Stepper", "Run", "simulate", "Predictions", "predict", "chosen_predictions", "PredictionFailed", "RUN_SCHEMA", "checkpoint_grid", "observable_axes"]

#: the ``schema`` of a run's JSON record
RUN_SCHEMA = "popgrad.run/1"


@dataclass
class Stepper:
    """What a family's ``stepper`` hands the engine: trajectories' state and the functions on it.

    Attributes
    ----------
    advance : callable
        ``(done, count) -> ndarray (trajectories,)``: move every trajectory ``count`` steps from step
        ``done``; the values returned must be finite while the run is (divergence is checked on them).
    record : callable
        ``() -> dict``: copies of what a checkpoint keeps (name -> array with trajectories first).
    finish : callable
        ``records -> (observables, state)``, records being name -> array (trajectories, checkpoints, ...).
    hits : ndarray of int64
        Per trajectory, the first step at the hitting level (-1: not yet), written by the kernels.
    work : float
        Cost of one step of one trajectory (arithmetic operations), to size the chunks between interrupts.
    label : str
        What the progress bar says.
    settings : dict
        What the run used beyond the engine's parameters (e.g. the joint step size, the path taken).
    """

    advance: Callable
    record: Callable
    finish: Callable
    hits: np.ndarray
    work: float
    label: str
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """Observables of every trajectory at the checkpoints, with what made them.

    Attributes
    ----------
    model : object
        The model (its family's spec).
    steps : ndarray of int64
        The checkpoints.
    observables : dict
        name -> ndarray (trajectories, checkpoints) for a scalar observable, (trajectories, checkpoints, ...)
        for one with entries (e.g. the overlap matrices Q and R of a committee machine).
    state : dict
        name -> ndarray (trajectories, checkpoints, ...): the state where it does not reduce to the
        observables (empty otherwise).
    method : str
    eta : float
    d : int
    seed : int
    m0 : float or None
        The fixed starting overlap (None: random start).
    first_trajectory : int
    hit : float or None
        The eps of ``hitting_steps``.
    hitting_steps : ndarray of int64 or None
        Per trajectory, the first step at the hitting level (-1: censored at the last checkpoint).
    seconds : float
    settings : dict
        The family's settings of this run (see :class:`Stepper`).
    stop_when_hit : bool
    """

    model: object
    steps: np.ndarray
    observables: dict
    state: dict
    method: str
    eta: float
    d: int
    seed: int
    m0: float | None = None
    first_trajectory: int = 0
    hit: float | None = None
    hitting_steps: np.ndarray | None = None
    seconds: float = float("nan")
    settings: dict = field(default_factory=dict)
    stop_when_hit: bool = False

    @property
    def trajectories(self) -> int:
        return next(iter(self.observables.values())).shape[0]

    @property
    def m(self) -> np.ndarray:
        """The overlap m ``[trajectory, checkpoint]`` (rank r: the smallest singular value of U^T U_hat)."""
        return self.observables["m"]

    def mean(self, name: str) -> np.ndarray:
        """The mean over trajectories of an observable, per checkpoint."""
        return self.observables[name].mean(axis=0)

    def standard_error(self, name: str) -> np.ndarray:
        """Its standard error per checkpoint (nan for one trajectory)."""
        return standard_error(self.observables[name])

    def quantiles(self, name: str) -> np.ndarray:
        """Its 5/25/50/75/95% quantiles over trajectories, ``[level, checkpoint]``."""
        return np.quantile(self.observables[name], QUANTILE_LEVELS, axis=0)

    def summary(self) -> dict:
        """Per observable: ``mean``, ``standard_error`` (None for one trajectory) and ``quantiles`` per
        checkpoint (JSON-ready lists)."""
        return {name: summary(values) for name, values in self.observables.items()}

    def hitting_times(self) -> dict:
        """Median and quartiles of the hitting steps, censored at the last checkpoint (Kaplan–Meier with one
        censoring time: the empirical quantiles), the censored fraction, ``horizon`` (the censoring step: the
        last checkpoint, a number of steps, not a sweep's horizon = steps / d) and ``eps`` (simulate's ``hit``)."""
        if self.hitting_steps is None:
            raise InvalidArgument("this run recorded no hitting times (give hit=eps to simulate)", "hit")
        return hitting_summary(self.hitting_steps, int(self.steps[-1])) | {"eps": self.hit}

    @property
    def parameters(self) -> dict:
        """Everything needed to repeat the run: the model, d, step size, method, trajectories, seeds."""
        return {"model": self.model.to_dict(), "family": self.model.family, "d": self.d, "eta": self.eta, "delta": self.eta * self.d, "method": self.method, "trajectories": self.trajectories, "first_trajectory": self.first_trajectory, "seed": self.seed, "m0": self.m0, "hit": self.hit, "stop_when_hit": self.stop_when_hit} | self.settings

    def to_json_dict(self) -> dict:
        """The run's record: ``schema``, ``parameters`` (with the versions and wall time), ``steps``, per
        observable its summary, ``state`` (the names of the state blocks its NetCDF file holds) and the
        hitting times."""
        return {"schema": RUN_SCHEMA, "parameters": self.parameters | {"seconds": self.seconds, "versions": versions()}, "steps": self.steps.tolist(), "observables": self.summary(), "state": list(self.state), "hitting_times": None if self.hitting_steps is None else self.hitting_times()}

    def netcdf_variables(self) -> tuple:
        """``(dimensions, variables)`` of the run for :func:`popgrad._io.write_netcdf_arrays`: every
        observable ``[trajectory, step]`` with its label and units, the state blocks ``[trajectory, step,
        ...]`` where the state does not reduce, and the hitting steps."""
        labels = family_of(self.model).labels
        dimensions = {"step": self.steps.size, "trajectory": self.trajectories}
        variables = [("step", ("step",), self.steps, "SGD step", "steps"), ("trajectory", ("trajectory",), np.arange(self.trajectories) + self.first_trajectory, "trajectory index (its random stream)", "1")]
        for name, values in self.observables.items():  # an observable with entries (Q, R, ...): its own axes after (trajectory, step)
            label, units = labels.get(name, (name, "1"))
            axes = observable_axes(name, values.shape[2:])
            dimensions |= dict(zip(axes, values.shape[2:]))
            variables.append((name, ("trajectory", "step") + axes, values, f"{label} of each trajectory", units))
        for name, values in self.state.items():  # the state where it does not reduce: its own axes after (trajectory, step)
            axes = tuple(f"{name}_axis{i}" for i in range(values.ndim - 2))
            dimensions |= dict(zip(axes, values.shape[2:]))
            variables.append((name, ("trajectory", "step") + axes, values, f"state block {name} of each trajectory", "1"))
        if self.hitting_steps is not None:
            variables.append(("hitting_step", ("trajectory",), self.hitting_steps, f"first step at the hitting level (eps = {self.hit:g}; -1: not by the last checkpoint)", "steps"))
        return dimensions, variables

    def write_netcdf(self, path) -> None:
        """The run as NetCDF3 (xarray reads it as a Dataset), its record without the arrays as the global
        attribute ``provenance``."""
        record = self.to_json_dict()
        dimensions, variables = self.netcdf_variables()
        write_netcdf_arrays(path, dimensions, variables, {"provenance": json.dumps({key: value for key, value in record.items() if key != "observables"})})


def simulate(model, d: int, eta: float | None = None, checkpoints=None, trajectories: int = 100, method: str = "chain", m0: float | None = None, seed: int = 0, first_trajectory: int = 0, *, hit: float | None = None, stop_when_hit: bool = False, delta: float | None = None, steps: int | None = None, progress: bool | None = False, fast_path: bool = True) -> Run:
    """Online SGD of any model, by its exact chain or in dimension d, recorded at the checkpoints.

    Parameters
    ----------
    model : a family's model
        E.g. :func:`~popgrad.models.finetuning.model.general_model`, or a
        :class:`~popgrad.models.finetuning.spec.FineTuningProblem` (the fine-tuning model with every
        switch at its default, which runs on the scalar overlap chain).
    d : int
        Input dimension (a model with an explicit W has its own: d must match it).
    eta, delta : float
        The step size (one of the two; delta = eta d): eta multiplies the gradient of the family's
        per-sample loss (fine-tuning: ``(y - f(x))^2``, no factor 1/2, whose mean is the observable
        ``population_loss`` = Phi).
    checkpoints, steps
        The record (one of the two): ``checkpoints`` a list of steps, ``steps`` the total (21 evenly spaced
        checkpoints). A sweep's ``checkpoints`` key is a count instead (README, "One vocabulary").
    trajectories : int, default 100
        Independent trajectories, trajectory j on the streams of index ``first_trajectory + j``.
    method : str, default 'chain'
        One of the family's methods: 'chain' (exact, cost independent of d), 'fast' (SGD in dimension d with
        the structure rotated onto the first coordinates) or 'full' (SGD in dimension d in the model's own,
        or a randomly embedded, geometry).
    m0 : float, optional
        A fixed starting overlap <u, u_hat_0> (rank 1); default: u_hat_0 uniform on its sphere.
    seed : int, default 0
    first_trajectory : int, default 0
    hit : float in (0, 1], optional
        Record, per trajectory, the first step where m^2 (rank r: the smallest squared singular value of
        U^T U_hat) reaches 1 - hit (-1: not by the last checkpoint). The same level is called ``eps`` in a
        sweep's ``[run]`` and in :meth:`Run.hitting_times`.
    stop_when_hit : bool, default False
        Stop each trajectory at its hitting step, and the run once every trajectory has hit.
    progress : bool or None, default False
        A progress bar (None: only on a terminal).
    fast_path : bool, default True
        Let the family take its fast path where the model reduces (e.g. the scalar overlap chain of the
        rank-1 fine-tuning model); False runs the general state chain / SGD of the model, the independent
        route the fast paths are checked against.

    Returns
    -------
    Run

    Raises
    ------
    Diverged
        When an iterate becomes non-finite (names the step size).

    Examples
    --------
    >>> import popgrad
    >>> problem = popgrad.orthonormal_problem("relu", k=4, xi=1.0, seed=0)
    >>> run = simulate(problem, d=100, eta=0.1 / 100, checkpoints=[0, 1000], trajectories=8, seed=1)
    >>> run.m.shape, sorted(run.observables)
    ((8, 2), ['c_hat_cosine', 'c_hat_dot_c', 'm', 'population_loss', 'projection_w'])
    >>> joint = popgrad.general_model(problem, train_c_hat=True)
    >>> simulate(joint, d=100, delta=0.1, steps=1000, trajectories=4).state["C_hat"].shape
    (4, 21, 4, 1)
    """
    family = family_of(model)
    model = family.as_model(model) or model
    check_choice(method, "method", family.methods)
    trajectories = check_integer(trajectories, "trajectories", 1, 10**8)
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    first_trajectory = check_integer(first_trajectory, "first_trajectory", 0, 2**62)
    if m0 is not None:
        m0 = check_real(m0, "m0", -1.0, 1.0)
    level = math.inf if hit is None else 1.0 - check_real(hit, "hit", 0.0, 1.0, low_open=True)
    if stop_when_hit and hit is None:
        raise InvalidArgument("stop_when_hit needs hit (the level 1 - hit that the overlap must reach)", "stop_when_hit")
    if not isinstance(fast_path, (bool, np.bool_)):
        raise InvalidArgument(f"fast_path must be True or False, got {fast_path!r}", "fast_path")
    d = model.check_dimension(d, method, bool(fast_path))
    eta, checkpoints = step_schedule(d, eta, delta, checkpoints, steps)
    # before anything is allocated: the record at every checkpoint (the kernels' own state is checked by the family)
    per_checkpoint = float(family.record_bytes(model, bool(fast_path))) * trajectories
    check_memory(per_checkpoint * (checkpoints.size + 2) + 64.0 * trajectories, f"the record of {trajectories} trajectories at {checkpoints.size} checkpoints", "trajectories")
    stepper = family.stepper(model, d, eta, method=method, trajectories=trajectories, seed=seed, first_trajectory=first_trajectory, m0=m0, level=level, stop_when_hit=bool(stop_when_hit), fast_path=bool(fast_path))
    first = stepper.record()
    wanted = set(int(s) for s in checkpoints)
    records = {0: first}

    def advance(done, count):
        values = stepper.advance(done, count)
        if done + count in wanted:
            records[done + count] = stepper.record()
        return values

    chunk = max(1, int(20_000_000 // max(1.0, trajectories * stepper.work)))  # ~50 ms of work between interrupts
    try:
        recording = run_to_checkpoints(advance, np.zeros(trajectories), checkpoints, chunk, progress, stepper.label, f"eta = {eta:g} is too large (try a smaller --eta or --delta)")
    except Diverged as exc:
        raise Diverged(f"SGD {exc}", "eta") from None
    stacked = {name: np.stack([records[int(s)][name] for s in checkpoints], axis=1) for name in first}
    observables, state = stepper.finish(stacked)
    hits = stepper.hits if hit is not None else None
    return Run(model, checkpoints, observables, state, method, float(eta), int(d), seed, m0, first_trajectory, None if hit is None else float(hit), hits, recording.seconds, dict(stepper.settings), bool(stop_when_hit))


def observable_axes(name: str, shape: tuple) -> tuple:
    """The NetCDF dimension names of an observable's entries (e.g. ``Q`` (K, K): ``Q_axis0``, ``Q_axis1``);
    empty for a scalar observable.

    Parameters
    ----------
    name : str
    shape : tuple
        The entries' shape (after trajectories and checkpoints).

    Returns
    -------
    tuple of str

    Examples
    --------
    >>> observable_axes("Q", (3, 3))
    ('Q_axis0', 'Q_axis1')
    """
    return tuple(f"{name}_axis{i}" for i in range(len(shape)))


# ------------------------------------------------------------------------------------------------
# predictions
# ------------------------------------------------------------------------------------------------


class PredictionFailed(Exception):
    """A prediction could not be computed for this run (the reason is reported beside the others)."""


@dataclass(frozen=True)
class Predictions:
    """Predicted observables on a run's checkpoints.

    Attributes
    ----------
    steps : ndarray of int64
    values : dict
        prediction -> observable -> ndarray (starts, checkpoints): the prediction from each start.
    bands : dict
        prediction -> observable -> (lower, upper): the uncertainty band of the mean over starts of a
        prediction with a Monte Carlo part (2 standard errors of it).
    failures : dict
        prediction -> the reason it could not be computed.
    settings : dict
        prediction -> what it used (starts, samples, seeds, ...), saved with reports.
    hitting_steps : dict
        prediction -> ndarray (starts,): its first step at the run's hitting level (inf where not reached).
    exact_mean : dict
        prediction -> True where its starts are a quadrature of the initial law (no standard error over
        starts).
    start_errors : dict
        prediction -> observable -> ndarray (checkpoints,): the standard error over starts where it was read
        from a saved report (whose per-start values were not saved).
    """

    steps: np.ndarray
    values: dict
    bands: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    hitting_steps: dict = field(default_factory=dict)
    exact_mean: dict = field(default_factory=dict)
    start_errors: dict = field(default_factory=dict)

    def mean(self, name: str, observable: str) -> np.ndarray:
        """The prediction's mean over its starts, per checkpoint."""
        return self.values[name][observable].mean(axis=0)

    def start_error(self, name: str, observable: str) -> np.ndarray:
        """Standard error of that mean from the spread over starts (0 with one start, or where the starts
        are a quadrature of the initial law)."""
        saved = self.start_errors.get(name, {}).get(observable)
        if saved is not None:
            return np.asarray(saved, dtype=float)
        values = self.values[name][observable]
        if self.exact_mean.get(name):
            return np.zeros(values.shape[1:])
        return standard_error(values, fill=0.0)

    def band(self, name: str, observable: str):
        """``(lower, upper)`` of the prediction's band, or None."""
        return self.bands.get(name, {}).get(observable)

    def hitting_summary(self, name: str) -> dict:
        """Median and quartiles over the starts of the prediction's hitting step (None where fewer than that
        fraction of the starts reach it by the horizon) and the fraction that do not."""
        steps = self.hitting_steps[name]
        result = hitting_summary(np.where(np.isfinite(steps), steps, -1.0), 0)
        return {key: result[key] for key in ("median", "q25", "q75", "censored_fraction")} | {"starts": int(steps.size)}


def chosen_predictions(model, which=None, options: dict | None = None) -> list:
    """The predictions :func:`predict` runs for ``model`` (``which``, or the model's defaults), with
    ``options`` checked against what they take: a prediction that does not serve the model, or an option
    none of them takes, is refused (before any simulation, where :func:`~popgrad.analysis.comparison.compare`
    calls it).

    Parameters
    ----------
    model : a family's model
    which : str or sequence of str, optional
    options : dict, optional

    Returns
    -------
    list of str
    """
    available = predictors_for(model)
    if which is None:
        names = [name for name, (predictor, reason) in available.items() if reason is None and predictor.default(model)]
    else:
        names = list(check_choices((which,) if isinstance(which, str) else which, "which", tuple(available)))
        for name in names:
            reason = available[name][1]
            if reason is not None:
                raise InvalidArgument(f"which: {name} does not serve this model: {reason}", "which")
    options = options or {}
    taken = set().union(*(set(available[name][0].options) for name in names)) if names else set()
    unknown = sorted(set(options) - taken)
    if unknown:
        raise InvalidArgument(f"{unknown[0]} is not an option of the predictions {', '.join(names)} (they take: {', '.join(sorted(taken)) or 'none'})", unknown[0])
    for name in names:  # each prediction checks the values it will take
        predictor = available[name][0]
        predictor.check(model, {key: options.get(key, default) for key, default in predictor.options.items()})
    return names


def predict(run: Run, which=None, **options) -> Predictions:
    """Predict the observables of ``run`` at its checkpoints with every prediction that serves its model
    (or those named in ``which``).

    Parameters
    ----------
    run : Run
    which : str or sequence of str, optional
        Predictions to compute (default: those registered as default for the run's model). A prediction
        that does not serve the model is refused, naming the reason.
    **options
        The predictions' options (``noise_samples``, ``noise_seed``, ``flow_starts``, ``map_starts``,
        ``map_batches``, ``map_substeps``, ``rtol``, ...): each is passed to the predictions that take it;
        one that none of the chosen predictions takes is refused.

    Returns
    -------
    Predictions

    Examples
    --------
    >>> import popgrad
    >>> problem = popgrad.orthonormal_problem("relu", k=4, xi=1.0, seed=0)
    >>> run = simulate(problem, d=200, eta=0.05 / 200, checkpoints=[0, 20000], trajectories=8, m0=0.0)
    >>> p = predict(run, which="gradient_flow")
    >>> round(float(p.mean("gradient_flow", "m")[1]), 6)
    -0.999982
    """
    if not isinstance(run, Run):
        raise InvalidArgument(f"run must be a Run (what simulate returns), got {type(run).__name__}", "run")
    available = predictors_for(run.model)
    names = chosen_predictions(run.model, which, options)
    values, bands, failures, settings, hitting, exact = {}, {}, {}, {}, {}, {}
    for name in names:
        predictor = available[name][0]
        chosen = {key: options.get(key, default) for key, default in predictor.options.items()}
        try:
            result = predictor.compute(run, **chosen)
        except PredictionFailed as exc:
            failures[name] = str(exc)
            settings[name] = chosen
            continue
        values[name] = result["values"]
        settings[name] = result.get("settings", chosen)
        if result.get("bands"):
            bands[name] = result["bands"]
        if result.get("hitting_steps") is not None:
            hitting[name] = result["hitting_steps"]
        exact[name] = bool(result.get("exact_mean", False))
    return Predictions(np.asarray(run.steps, dtype=np.int64), values, bands, failures, settings, hitting, exact)
