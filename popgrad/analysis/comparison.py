"""Theory vs Monte Carlo for any model: every observable of a run against every prediction, with a verdict.

:func:`compare` simulates a model (:func:`popgrad.dynamics.engine.simulate`), predicts its observables on
the same checkpoints (:func:`popgrad.dynamics.engine.predict`) and returns a :class:`Comparison`. For each
prediction and observable the residual ``z_t = (mean_t - prediction_t) / SE_t`` (0 inside the prediction's
band; SE combines the Monte Carlo standard error of the mean with the prediction's standard error over its
starts) and the statistic ``max_t |z_t|`` over the checkpoints after the start; a prediction is
``consistent`` with an observable when the statistic stays below the threshold (default 4) and its band is
not wider than that, ``inconsistent`` when it exceeds it, ``inconclusive`` when the band is too wide to
tell. Results convert to NetCDF (xarray), JSON (``schema`` ``popgrad.comparison/1``; :func:`load_comparison`
reads that and the two formats 0.x wrote) and a PNG plot.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import INCOMPLETE, atomic_path, check_output_folder, json_safe, read_json_file, read_user_bytes, versions, write_json, write_netcdf_arrays, write_text
from .._validation import InvalidArgument, check_real
from ..dynamics.engine import Predictions, Run, chosen_predictions, observable_axes, predict, simulate
from ..dynamics.protocol import family_of
from ..numerics.statistics import QUANTILE_LEVELS, summary

__all__ = ["Comparison", "compare", "load_comparison", "load_run", "save_report", "COMPARISON_SCHEMA", "QUANTILES"]

#: the ``schema`` of a comparison's JSON report
COMPARISON_SCHEMA = "popgrad.comparison/1"
QUANTILES = QUANTILE_LEVELS
#: a gap this small relative to the value is rounding (an observable both sides hold at a constant)
ROUNDING = 1e-10


def save_report(result, folder: str | Path) -> list:
    """Write a comparison's ``comparison.nc`` (NetCDF), ``comparison.json`` and ``comparison.png`` into
    ``folder``. Each file is written whole or not at all; the folder holds a file ``INCOMPLETE`` until all
    three are written.

    Parameters
    ----------
    result : Comparison
    folder : str or Path

    Returns
    -------
    list of Path
    """
    folder = check_output_folder(Path(folder), "folder")
    folder.mkdir(exist_ok=True)
    marker = folder / INCOMPLETE
    write_text(marker, "written by popgrad; removed once comparison.nc, .json and .png are complete\n")
    with atomic_path(folder / "comparison.nc") as temporary:
        result.write_netcdf(temporary)
    write_json(folder / "comparison.json", result.to_json_dict())
    with atomic_path(folder / "comparison.png") as temporary:
        result.plot().savefig(temporary, dpi=120, format="png")
    marker.unlink()
    return [folder / "comparison.nc", folder / "comparison.json", folder / "comparison.png"]


@dataclass(frozen=True)
class Comparison:
    """A run and its predictions on the same checkpoints.

    Attributes
    ----------
    run : Run
        The Monte Carlo side: every observable per trajectory and checkpoint.
    predictions : Predictions
        The population side, on the run's checkpoints.
    threshold : float, default 4
        Verdict threshold in standard errors.
    extra : dict
        Further records saved with the report (e.g. a command's settings).
    """

    run: Run
    predictions: Predictions
    threshold: float = 4.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not np.array_equal(np.asarray(self.predictions.steps), np.asarray(self.run.steps)):
            raise InvalidArgument("predictions must be made on the run's checkpoints", "predictions")

    @property
    def steps(self) -> np.ndarray:
        return self.run.steps

    @property
    def model(self):
        return self.run.model

    @property
    def observables(self) -> list:
        """The observables that the run records and some prediction predicts, in the run's order."""
        predicted = set().union(*(set(values) for values in self.predictions.values.values())) if self.predictions.values else set()
        return [name for name in self.run.observables if name in predicted]

    def mean(self, observable: str = "m") -> np.ndarray:
        return self.run.mean(observable)

    def standard_error(self, observable: str = "m") -> np.ndarray:
        return self.run.standard_error(observable)

    def quantiles(self, observable: str = "m") -> np.ndarray:
        return self.run.quantiles(observable)

    def _combined_error(self, name: str, observable: str) -> np.ndarray:
        return np.sqrt(self.standard_error(observable) ** 2 + self.predictions.start_error(name, observable) ** 2)

    def _gap(self, name: str, observable: str) -> np.ndarray:
        mean = self.mean(observable)
        band = self.predictions.band(name, observable)
        if band is None:
            gap = mean - self.predictions.mean(name, observable)
        else:
            lower, upper = np.minimum(*band), np.maximum(*band)
            gap = np.where(mean < lower, mean - lower, np.where(mean > upper, mean - upper, 0.0))
            gap = np.where(np.isfinite(lower) & np.isfinite(upper), gap, np.nan)  # an undefined band hides nothing
        return gap

    def residual(self, name: str, observable: str = "m") -> np.ndarray:
        """``(mean - prediction) / SE`` per checkpoint, signed (0 inside the prediction's band); where both
        sides hold the observable at a constant (|P_W u_hat| = 0 when constrained, a frozen c_hat: the gap and
        the spread both of rounding size) it is 0; nan where the prediction is undefined."""
        error = self._combined_error(name, observable)
        gap = self._gap(name, observable)
        scale = ROUNDING * np.maximum(1.0, np.abs(self.mean(observable)))
        rounding = (np.abs(gap) <= scale) & (error <= scale)  # both the gap and the spread at rounding level
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(rounding, 0.0, np.where(error > 0, gap / error, np.sign(gap) * np.inf))

    def statistic(self, name: str, observable: str = "m") -> float:
        """``max_t |residual_t|`` over the checkpoints after step 0."""
        z = np.abs(self.residual(name, observable))[self.steps > 0]  # over the checkpoints (and the entries)
        return float(np.max(z)) if z.size else 0.0

    def band_ratio(self, name: str, observable: str = "m") -> float:
        """The widest half-width of the prediction's band in standard errors (0 without a band): a band wider
        than the threshold could hide a discrepancy the threshold is meant to detect."""
        band = self.predictions.band(name, observable)
        if band is None:
            return 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (0.5 * np.abs(band[1] - band[0]) / self._combined_error(name, observable))[self.steps > 0]
        ratio = ratio[np.isfinite(ratio)]
        return float(np.max(ratio)) if ratio.size else 0.0

    @property
    def conclusions(self) -> dict:
        """prediction -> observable -> ``consistent``, ``inconsistent``, ``inconclusive`` (a band wider than
        the threshold, and no discrepancy beyond it), ``undefined`` (one trajectory: no standard error) or
        ``failed`` (the prediction could not be computed: ``predictions.failures``)."""
        out = {}
        for name in list(self.predictions.values) + [name for name in self.predictions.failures if name not in self.predictions.values]:
            if name in self.predictions.failures:
                out[name] = {observable: "failed" for observable in self.observables or ["m"]}
                continue
            out[name] = {}
            for observable in self.observables:
                if observable not in self.predictions.values[name]:
                    continue
                statistic = self.statistic(name, observable)
                if self.run.trajectories < 2 or np.isnan(statistic):
                    out[name][observable] = "undefined"
                elif statistic > self.threshold:
                    out[name][observable] = "inconsistent"
                elif self.band_ratio(name, observable) > self.threshold:
                    out[name][observable] = "inconclusive"
                else:
                    out[name][observable] = "consistent"
        return out

    @property
    def consistent(self) -> dict:
        """Per prediction: True only where it is conclusively consistent with every observable it predicts."""
        return {name: bool(conclusions) and all(conclusion == "consistent" for conclusion in conclusions.values()) for name, conclusions in self.conclusions.items()}

    @property
    def verdict(self) -> str:
        if self.run.trajectories < 2:
            return "undefined: one trajectory has no standard error"
        parts = []
        for name, conclusions in self.conclusions.items():
            if name in self.predictions.failures:
                parts.append(f"{name}: failed ({self.predictions.failures[name]})")
                continue
            cells = []
            for observable, conclusion in conclusions.items():
                band = f", band {self.band_ratio(name, observable):.1f} SE" if self.predictions.band(name, observable) is not None else ""
                cells.append(f"{observable} max z = {self.statistic(name, observable):.2f}{band} ({conclusion})")
            parts.append(f"{name}: " + ", ".join(cells))
        return f"threshold {self.threshold:g} SE; " + "; ".join(parts)

    # -- export -------------------------------------------------------------------------------------

    def provenance(self) -> dict:
        """What made the comparison: the run's parameters, the predictions' settings, the threshold, the wall
        time and the versions."""
        return self.run.parameters | {"predictions": self.predictions.settings, "threshold": self.threshold, "simulation_seconds": self.run.seconds, "versions": versions()} | self.extra

    def hitting_times(self) -> dict | None:
        """The run's hitting-time summary with each prediction's own (None without ``hit``)."""
        if self.run.hitting_steps is None:
            return None
        record = self.run.hitting_times()
        if self.predictions.hitting_steps:
            record["predicted"] = {name: self.predictions.hitting_summary(name) for name in self.predictions.hitting_steps}
        return record

    def to_json_dict(self) -> dict:
        """The report: ``schema``, ``provenance``, ``steps``; per observable the Monte Carlo ``mean``,
        ``standard_error`` and ``quantiles`` and per prediction its ``mean``, band (``lower``, ``upper``),
        ``start_standard_error``, ``residual``, ``max_z`` and ``band_ratio``; ``state`` (the names of the state
        blocks saved in the NetCDF file, where the state does not reduce); the ``conclusions``,
        ``consistent``, ``verdict``, ``failures`` and ``hitting_times``."""
        observables = {}
        for observable, values in self.run.observables.items():
            record = summary(values)
            record["predictions"] = {}
            for name in self.predictions.values:
                if observable not in self.predictions.values[name]:
                    continue
                band = self.predictions.band(name, observable)
                record["predictions"][name] = {
                    "mean": self.predictions.mean(name, observable).tolist(),
                    "lower": None if band is None else np.asarray(band[0]).tolist(),
                    "upper": None if band is None else np.asarray(band[1]).tolist(),
                    "start_standard_error": self.predictions.start_error(name, observable).tolist(),
                    "residual": self.residual(name, observable).tolist() if observable in self.observables else None,
                    "max_z": self.statistic(name, observable) if observable in self.observables else None,
                    "band_ratio": self.band_ratio(name, observable) if observable in self.observables else None,
                }
            observables[observable] = record
        return {
            "schema": COMPARISON_SCHEMA,
            "provenance": self.provenance(),
            "steps": self.steps.tolist(),
            "observables": observables,
            "state": list(self.run.state),
            "conclusions": self.conclusions,
            "consistent": self.consistent,
            "verdict": self.verdict,
            "failures": dict(self.predictions.failures),
            "hitting_times": self.hitting_times(),
        }

    def _arrays(self) -> tuple:
        """``(dimensions, variables, attributes)``: the run's arrays and each prediction's mean, band and
        standard error over starts per step, with long_name and units."""
        dimensions, variables = self.run.netcdf_variables()
        labels = family_of(self.model).labels
        for name in self.predictions.values:
            for observable in self.predictions.values[name]:
                label, units = labels.get(observable, (observable, "1"))
                what = name.replace("_", " ")
                mean = self.predictions.mean(name, observable)
                axes = ("step",) + observable_axes(observable, mean.shape[1:])
                dimensions |= dict(zip(axes[1:], mean.shape[1:]))
                variables.append((f"prediction_{name}__{observable}", axes, mean, f"{label} predicted by {what} (mean over its starts)", units))
                variables.append((f"prediction_{name}__{observable}__start_se", axes, self.predictions.start_error(name, observable), f"standard error over the starts of {what}'s {label}", units))
                band = self.predictions.band(name, observable)
                if band is not None:
                    variables.append((f"prediction_{name}__{observable}__lower", axes, band[0], f"lower edge of the {what} band of {label} (2 SE of its Monte Carlo)", units))
                    variables.append((f"prediction_{name}__{observable}__upper", axes, band[1], f"upper edge of the {what} band of {label} (2 SE of its Monte Carlo)", units))
        for name, steps in self.predictions.hitting_steps.items():
            dimensions[f"start_{name}"] = steps.size
            variables.append((f"predicted_hitting_step__{name}", (f"start_{name}",), steps, f"first step of {name.replace('_', ' ')} at the hitting level, per start (inf: not by the last checkpoint)", "steps"))
        return dimensions, variables, {"schema": COMPARISON_SCHEMA, "provenance": json.dumps(json_safe(self.provenance()), allow_nan=False), "verdict": self.verdict}

    def write_netcdf(self, path) -> None:
        """The arrays as a NetCDF3 file (:func:`popgrad._io.write_netcdf_arrays`); xarray reads it back as the
        Dataset of :meth:`to_dataset`."""
        write_netcdf_arrays(path, *self._arrays())

    def to_dataset(self):
        """The arrays as an xarray.Dataset: every observable ``[trajectory, step]``, each prediction's mean,
        band and standard error over starts ``[step]``, with long_name and units."""
        import xarray as xr

        _, variables, attributes = self._arrays()
        coordinates = {name: ((name,), np.asarray(values, dtype=np.float64), {"long_name": long_name, "units": units}) for name, dims, values, long_name, units in variables if name in ("step", "trajectory")}
        data = {name: (dims, np.asarray(values, dtype=np.float64), {"long_name": long_name, "units": units}) for name, dims, values, long_name, units in variables if name not in ("step", "trajectory")}
        return xr.Dataset(data, coords=coordinates, attrs=attributes)

    def save(self, folder: str | Path) -> list:
        """Write ``comparison.nc``, ``comparison.json`` and ``comparison.png`` into ``folder``
        (:func:`save_report`)."""
        return save_report(self, folder)

    def plot(self, observables=None):
        """One column per observable: the SGD mean ± 2 SE with its 5–95% band and every prediction above, and
        below it the residual panel ``(mean - prediction) / SE`` with the ±threshold lines; returns the
        Figure."""
        from matplotlib.figure import Figure

        names = list([name for name in self.observables if self.run.observables[name].ndim == 2] if observables is None else observables) or ["m"]  # scalar observables (one panel each)
        labels = family_of(self.model).labels
        figure = Figure(figsize=(4.2 * max(1, len(names)), 6.5), layout="constrained")
        axes = figure.subplots(2, max(1, len(names)), sharex=True, squeeze=False, gridspec_kw={"height_ratios": [3, 1.4]})
        steps = self.steps
        styles = {"gradient_flow": ("C3", "--"), "population_map": ("C2", ":"), "finite_step_ode": ("k", "-"), "exact_normalization_ode": ("C1", "-."), "one_step_mean": ("k", "-")}
        for column, observable in enumerate(names):
            top, bottom = axes[0, column], axes[1, column]
            quantiles = self.quantiles(observable)
            top.fill_between(steps, quantiles[0], quantiles[-1], color="C0", alpha=0.15, label="SGD 5–95%")
            top.errorbar(steps, self.mean(observable), yerr=2 * self.standard_error(observable), fmt="o", ms=3, color="C0", label=f"SGD mean ± 2 SE ({self.run.method}, {self.run.trajectories} traj.)")
            for name in self.predictions.values:
                if observable not in self.predictions.values[name]:
                    continue
                color, style = styles.get(name, ("C4", "-"))
                top.plot(steps, self.predictions.mean(name, observable), color=color, ls=style, label=f"{name.replace('_', ' ')} (max z {self.statistic(name, observable):.1f})")
                band = self.predictions.band(name, observable)
                if band is not None:
                    top.fill_between(steps, band[0], band[1], color=color, alpha=0.2)
                bottom.plot(steps, self.residual(name, observable), "o-", ms=3, color=color)
            for level in (-self.threshold, self.threshold):
                bottom.axhline(level, color="0.5", ls=":", lw=1)
            bottom.axhline(0.0, color="0.7", lw=0.8)
            top.set(title=labels.get(observable, (observable,))[0], ylabel=observable)
            bottom.set(xlabel="SGD step t", ylabel="(mean − pred.) / SE")
            if column == 0:
                top.legend(fontsize=7)
        figure.suptitle(f"{self.model.describe()}\nd = {self.run.d}, eta = {self.run.eta:.3g}", fontsize=9)
        return figure


def compare(model, d: int, eta: float | None = None, checkpoints=None, trajectories: int = 256, method: str = "chain", m0: float | None = None, seed: int = 0, which=None, *, threshold: float = 4.0, progress: bool | None = False, hit: float | None = None, delta: float | None = None, steps: int | None = None, **prediction_options) -> Comparison:
    """Simulate any model and predict its observables on the same checkpoints.

    Parameters
    ----------
    model : a family's model
        E.g. a :class:`~popgrad.models.finetuning.spec.FineTuningProblem` or
        :func:`~popgrad.models.finetuning.model.general_model`.
    d : int
    eta, delta : float
        The step size (one of the two; delta = eta d).
    checkpoints, steps
        The record (one of the two).
    trajectories : int, default 256
    method : str, default 'chain'
        'chain', 'fast' or 'full' (see :func:`~popgrad.dynamics.engine.simulate`).
    m0 : float, optional
        A fixed starting overlap (rank 1).
    seed : int, default 0
        Seed of the simulation (and of the predictions' Monte Carlo unless ``noise_seed`` is given).
    which : sequence of str, optional
        The predictions (default: those that serve the model by default).
    threshold : float, default 4
    progress : bool or None, default False
    hit : float in (0, 1], optional
        Record hitting times (and each prediction's own where it has them).
    **prediction_options
        Options of the predictions (:func:`~popgrad.dynamics.engine.predict`): ``noise_samples``,
        ``noise_seed``, ``flow_starts``, ``map_starts``, ``map_batches``, ``map_substeps``, ``rtol``.

    Returns
    -------
    Comparison

    Examples
    --------
    >>> import popgrad
    >>> problem = popgrad.orthonormal_problem("relu", k=4, xi=1.0, seed=0)
    >>> result = compare(problem, d=200, eta=0.05 / 200, checkpoints=[0, 5000, 20000], trajectories=64, seed=1, noise_samples=20000)
    >>> sorted(result.consistent)
    ['exact_normalization_ode', 'finite_step_ode', 'gradient_flow', 'population_map']
    >>> joint = compare(popgrad.general_model(problem, train_c_hat=True), 100, delta=0.05, checkpoints=[0, 1000, 2000], trajectories=32, seed=1, which=("gradient_flow",))
    >>> sorted(joint.conclusions["gradient_flow"])
    ['c_hat_cosine', 'c_hat_dot_c', 'm', 'population_loss', 'projection_w']
    """
    threshold = check_real(threshold, "threshold", 0.0, None, low_open=True)
    family = family_of(model)
    chosen_predictions(family.as_model(model) or model, which, prediction_options)  # refused before the simulation
    run = simulate(model, d, eta, checkpoints, trajectories=trajectories, method=method, m0=m0, seed=seed, hit=hit, delta=delta, steps=steps, progress=progress)
    return Comparison(run, predict(run, which, **prediction_options), threshold)


# ------------------------------------------------------------------------------------------------
# reading reports back
# ------------------------------------------------------------------------------------------------


def load_comparison(folder: str | Path) -> Comparison:
    """Read back a report folder written by :meth:`Comparison.save` (``popgrad compare``, the ``full/`` and
    ``chain/`` folders of ``popgrad run``), including those popgrad 0.x wrote (the rank-1 and the general
    model's formats, without a ``schema`` key): the trajectories and predictions from ``comparison.nc``, the
    model and parameters from ``comparison.json``.

    Parameters
    ----------
    folder : str or Path
        A folder holding ``comparison.nc`` and ``comparison.json``.

    Returns
    -------
    Comparison
        With the saved observables and predictions (the state and the predictions' per-start values are not
        saved: their standard errors over starts are); its statistics and verdict are recomputed from them.

    Raises
    ------
    InvalidArgument
        When the folder is missing, incomplete (an ``INCOMPLETE`` marker) or lacks one of the two files.

    Examples
    --------
    >>> import tempfile, popgrad
    >>> problem = popgrad.orthonormal_problem("relu", k=4, xi=1.0, seed=0)
    >>> result = compare(problem, d=200, eta=0.05 / 200, checkpoints=[0, 5000], trajectories=16, seed=1, noise_samples=6400)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = result.save(folder)
    ...     again = load_comparison(folder)
    >>> again.verdict == result.verdict, bool(np.array_equal(again.run.m, result.run.m))
    (True, True)
    """
    from scipy.io import netcdf_file

    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidArgument(f"folder {str(folder)!r} is not a folder", "folder")
    if (folder / INCOMPLETE).exists():
        raise InvalidArgument(f"folder {str(folder)!r} holds an incomplete report (its writer stopped before the end)", "folder")
    for name in ("comparison.nc", "comparison.json"):
        if not (folder / name).is_file():
            raise InvalidArgument(f"folder {str(folder)!r} has no {name}", "folder")
    try:
        with netcdf_file(io.BytesIO(read_user_bytes(folder / "comparison.nc", "report", "folder")), "r", mmap=False) as file:
            arrays = {name: np.array(variable[...]) for name, variable in file.variables.items()}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise InvalidArgument(f"folder {str(folder)!r}: comparison.nc is not a NetCDF file popgrad wrote ({exc})", "folder") from None
    saved = read_json_file(folder / "comparison.json", "report", "folder")
    if not isinstance(saved, dict) or not isinstance(saved.get("provenance"), dict):
        raise InvalidArgument(f"folder {str(folder)!r}: comparison.json is not a popgrad comparison report", "folder")
    from .report_formats import read_general_0x, read_rank_one_0x, read_schema_1

    schema = saved.get("schema")
    if schema is None:
        reader = read_rank_one_0x if "checkpoints" in saved else read_general_0x
    elif schema == COMPARISON_SCHEMA:
        reader = read_schema_1
    else:
        raise InvalidArgument(f"folder {str(folder)!r}: report schema {schema!r} is newer than this popgrad reads ({COMPARISON_SCHEMA})", "folder")
    try:
        return reader(saved, arrays)
    except KeyError as exc:
        raise InvalidArgument(f"folder {str(folder)!r}: the report lacks {exc}", "folder") from None


def load_run(path) -> Run:
    """Read back a run saved by ``popgrad simulate --out FILE.nc`` (:meth:`~popgrad.dynamics.engine.Run.write_netcdf`):
    every observable and state block per trajectory and checkpoint, the hitting steps, and the model, step
    size, seeds and settings from its ``provenance`` attribute.

    Parameters
    ----------
    path : str or Path
        The NetCDF file.

    Returns
    -------
    Run

    Raises
    ------
    InvalidArgument
        When the file is missing or not a run popgrad wrote (named, with what is wrong).

    Examples
    --------
    >>> import tempfile, pathlib, popgrad
    >>> problem = popgrad.orthonormal_problem("relu", k=4, xi=1.0, seed=0)
    >>> run = simulate(problem, d=100, eta=1e-3, checkpoints=[0, 100], trajectories=4, seed=1, hit=0.5)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.nc"
    >>> run.write_netcdf(path)
    >>> again = load_run(path)
    >>> bool(np.array_equal(again.m, run.m)), again.eta == run.eta, again.hit
    (True, True, 0.5)
    """
    from scipy.io import netcdf_file

    from ..dynamics.engine import RUN_SCHEMA
    from ..dynamics.protocol import model_from_dict

    name = f"run file {str(path)!r}"
    data = read_user_bytes(path, "run file", "path")
    try:
        with netcdf_file(io.BytesIO(data), "r", mmap=False) as file:
            arrays = {key: np.array(variable[...]) for key, variable in file.variables.items()}
            record = json.loads(file.provenance.decode() if isinstance(file.provenance, bytes) else file.provenance)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidArgument(f"{name} is not a run popgrad wrote (a NetCDF file with its provenance: {type(exc).__name__})", "path") from None
    if not isinstance(record, dict) or record.get("schema") != RUN_SCHEMA or not isinstance(record.get("parameters"), dict):
        raise InvalidArgument(f"{name} is not a run of schema {RUN_SCHEMA}", "path")
    info = record["parameters"]
    try:
        model = model_from_dict(info["model"])
        state = {key: arrays[key] for key in record.get("state", [])}
        observables = {key: values for key, values in arrays.items() if key not in ("step", "trajectory", "hitting_step") and key not in state}
        hits = arrays["hitting_step"].astype(np.int64) if "hitting_step" in arrays else None
        settings = {key: value for key, value in info.items() if key not in ("model", "family", "d", "eta", "delta", "method", "trajectories", "first_trajectory", "seed", "m0", "hit", "stop_when_hit", "seconds", "versions")}
        return Run(model, arrays["step"].astype(np.int64), observables, state, info["method"], float(info["eta"]), int(info["d"]), int(info["seed"]), info.get("m0"), int(info.get("first_trajectory", 0)), info.get("hit"), hits, float(info.get("seconds", float("nan"))), settings, bool(info.get("stop_when_hit", False)))
    except KeyError as exc:
        raise InvalidArgument(f"{name} lacks {exc}", "path") from None
