"""Theory vs Monte Carlo for the general fine-tuning model: every observable against every prediction.

:func:`compare_general` simulates the general model (:func:`~popgrad.models.finetuning.general.simulate_general`)
and predicts its observables from the simulation's own starting states
(:func:`~popgrad.models.finetuning.general_predictions.predict_general`). For each observable and prediction
the discrepancy at a checkpoint is ``z_t = gap_t / SE_t``: ``gap`` the distance of the SGD mean from the
prediction's mean over its starts (from its Monte Carlo band where it has one), ``SE`` the standard error
of the SGD mean combined with that of the prediction's mean over starts. The conclusions follow the rank-1
:class:`~popgrad.analysis.comparison.Comparison`: consistent, inconsistent (``max_t z_t`` beyond the
threshold), inconclusive (a band wider than the threshold), undefined (one trajectory) or failed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from .._validation import check_real
from ..models.finetuning.general import GeneralSimulation, observable_summary, simulate_general
from ..models.finetuning.general_predictions import GENERAL_PREDICTIONS, GeneralPredictions, predict_general
from .comparison import ReportMixin, versions

__all__ = ["GeneralComparison", "compare_general", "simulation_record", "write_simulation_netcdf"]

#: gaps below this (relative to max(1, |mean|)) are rounding, not discrepancy
ROUNDING = 1e-10

_UNITS = {"m": "1", "c_hat_dot_c": "1", "c_hat_cosine": "1", "projection_w": "1", "population_loss": "squared output units"}
_LABELS = {"m": "overlap m (rank r: least singular value of U^T U_hat)", "c_hat_dot_c": "<c_hat, c>", "c_hat_cosine": "cos(c_hat, c)", "projection_w": "|P_W u_hat|", "population_loss": "population loss Phi"}


@dataclass(frozen=True)
class GeneralComparison(ReportMixin):
    """A simulation of the general model and its predictions on the same checkpoints.

    Attributes
    ----------
    simulation : GeneralSimulation
        Its states, hence every observable, per trajectory and checkpoint.
    predictions : GeneralPredictions
    threshold : float, default 4
        Verdict threshold in standard errors.
    extra : dict
        Further records saved with the report.
    """

    simulation: GeneralSimulation
    predictions: GeneralPredictions
    threshold: float = 4.0
    extra: dict = field(default_factory=dict)

    @property
    def observed(self) -> dict:
        """Observable -> values ``[trajectory, checkpoint]``."""
        if not hasattr(self, "_observed"):
            object.__setattr__(self, "_observed", self.simulation.observables())
        return self._observed

    @property
    def observables(self) -> list:
        """The observables that the simulation records and some prediction predicts."""
        predicted = set().union(*(set(values) for values in self.predictions.values.values())) if self.predictions.values else set()
        return [name for name in self.observed if name in predicted]

    def mean(self, observable: str) -> np.ndarray:
        return self.observed[observable].mean(axis=0)

    def standard_error(self, observable: str) -> np.ndarray:
        values = self.observed[observable]
        return values.std(axis=0, ddof=1) / math.sqrt(values.shape[0]) if values.shape[0] > 1 else np.full(values.shape[1], np.nan)

    def _combined_error(self, name: str, observable: str) -> np.ndarray:
        return np.sqrt(self.standard_error(observable) ** 2 + self.predictions.start_error(name, observable) ** 2)

    def _gap(self, name: str, observable: str) -> np.ndarray:
        mean = self.mean(observable)
        gap = mean - self.predictions.mean(name, observable)
        band = self.predictions.bands.get(name, {}).get(observable)
        if band is not None:
            gap = np.sign(gap) * np.maximum(np.abs(gap) - band, 0.0)
        # an observable that both sides hold at a constant (|P_W u_hat| = 0 when constrained, a frozen
        # c_hat) differs only by rounding: that is no discrepancy
        return np.where(np.abs(gap) <= ROUNDING * np.maximum(1.0, np.abs(mean)), 0.0, gap)

    def residual(self, name: str, observable: str) -> np.ndarray:
        """``(mean - prediction) / SE`` per checkpoint, signed (0 inside the prediction's band)."""
        error = self._combined_error(name, observable)
        gap = self._gap(name, observable)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(error > 0, gap / error, np.where(gap != 0, np.sign(gap) * np.inf, 0.0))

    def statistic(self, name: str, observable: str) -> float:
        """``max_t |residual_t|`` over the checkpoints after step 0."""
        z = np.abs(self.residual(name, observable))[self.steps > 0]
        return float(np.max(z)) if z.size else 0.0

    def band_ratio(self, name: str, observable: str) -> float:
        """The widest band half-width in standard errors (0 without a band)."""
        band = self.predictions.bands.get(name, {}).get(observable)
        if band is None:
            return 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (band / self._combined_error(name, observable))[self.steps > 0]
        ratio = ratio[np.isfinite(ratio)]
        return float(np.max(ratio)) if ratio.size else 0.0

    @property
    def conclusions(self) -> dict:
        """prediction -> observable -> consistent | inconsistent | inconclusive | undefined | failed."""
        out = {}
        for name in self.predictions.settings:
            if name in self.predictions.failures:
                out[name] = {observable: "failed" for observable in self.observed}
                continue
            out[name] = {}
            for observable in self.predictions.values[name]:
                if observable not in self.observed:
                    continue
                if self.simulation.Y.shape[0] < 2:
                    out[name][observable] = "undefined"
                elif self.statistic(name, observable) > self.threshold:
                    out[name][observable] = "inconsistent"
                elif self.band_ratio(name, observable) > self.threshold:
                    out[name][observable] = "inconclusive"
                else:
                    out[name][observable] = "consistent"
        return out

    @property
    def verdict(self) -> str:
        if self.simulation.Y.shape[0] < 2:
            return "undefined: one trajectory has no standard error"
        parts = []
        for name, conclusions in self.conclusions.items():
            if name in self.predictions.failures:
                parts.append(f"{name}: failed ({self.predictions.failures[name]})")
                continue
            cells = []
            for observable, conclusion in conclusions.items():
                band = f", band {self.band_ratio(name, observable):.1f} SE" if name in self.predictions.bands else ""
                cells.append(f"{observable} max z = {self.statistic(name, observable):.2f}{band} ({conclusion})")
            parts.append(f"{name}: " + ", ".join(cells))
        return f"threshold {self.threshold:g} SE; " + "; ".join(parts)

    # -- export -------------------------------------------------------------------------------------

    def provenance(self) -> dict:
        simulation = self.simulation
        return _parameters(simulation) | {
            "predictions": self.predictions.settings,
            "threshold": self.threshold,
            "simulation_seconds": simulation.seconds,
            "versions": versions(),
        } | self.extra

    def to_json_dict(self) -> dict:
        """Per observable: the Monte Carlo ``mean``, ``standard_error`` and ``quantiles`` per checkpoint, and
        per prediction its mean, band, residuals and statistic; the conclusions and the verdict."""
        observables = {}
        for observable, values in self.observed.items():
            record = observable_summary(values)
            record["predictions"] = {}
            for name in self.predictions.values:
                if observable not in self.predictions.values[name]:
                    continue
                band = self.predictions.bands.get(name, {}).get(observable)
                record["predictions"][name] = {
                    "mean": self.predictions.mean(name, observable).tolist(),
                    "start_standard_error": self.predictions.start_error(name, observable).tolist(),
                    "band_half_width": None if band is None else band.tolist(),
                    "residual": self.residual(name, observable).tolist(),
                    "max_z": self.statistic(name, observable),
                    "band_ratio": self.band_ratio(name, observable),
                }
            observables[observable] = record
        return {
            "provenance": self.provenance(),
            "steps": self.steps.tolist(),
            "observables": observables,
            "conclusions": self.conclusions,
            "verdict": self.verdict,
            "failures": dict(self.predictions.failures),
            "hitting_times": _hitting(self.simulation, self.predictions),
        }

    def write_netcdf(self, path) -> None:
        """The simulation's arrays (:func:`write_simulation_netcdf`) and each prediction's mean (and band) per
        step, with long_name/units."""
        predicted = [(f"{name}_{observable}", ("step",), self.predictions.mean(name, observable), f"{_LABELS[observable]} predicted by {name.replace('_', ' ')} (mean over its starts)", _UNITS[observable]) for name in self.predictions.values for observable in self.predictions.values[name] if observable in self.observed]
        bands = [(f"{name}_{observable}_band", ("step",), band, f"half-width of the {name.replace('_', ' ')} band (2 SE of its Monte Carlo)", _UNITS[observable]) for name in self.predictions.bands for observable, band in self.predictions.bands[name].items() if observable in self.observed]
        write_simulation_netcdf(self.simulation, path, {"provenance": json.dumps(self.provenance()), "verdict": self.verdict}, predicted + bands)

    def plot(self, observables=None):
        """One column per observable: the SGD mean ± 2 SE with its 5–95% band and every prediction above, and
        below it the residual panel ``(mean - prediction) / SE`` with the ±threshold lines; returns the
        Figure."""
        from matplotlib.figure import Figure

        names = list(self.observables if observables is None else observables)
        figure = Figure(figsize=(4.2 * max(1, len(names)), 6.5), layout="constrained")
        axes = figure.subplots(2, max(1, len(names)), sharex=True, squeeze=False, gridspec_kw={"height_ratios": [3, 1.4]})
        steps = self.steps
        colors = {"gradient_flow": "C3", "one_step_mean": "k"}
        for column, observable in enumerate(names):
            top, bottom = axes[0, column], axes[1, column]
            values = self.observed[observable]
            low, high = np.quantile(values, [0.05, 0.95], axis=0)
            top.fill_between(steps, low, high, color="C0", alpha=0.15, label="SGD 5–95%")
            top.errorbar(steps, self.mean(observable), yerr=2 * self.standard_error(observable), fmt="o", ms=3, color="C0", label=f"SGD mean ± 2 SE ({self.simulation.method})")
            for name in self.predictions.values:
                if observable not in self.predictions.values[name]:
                    continue
                color = colors.get(name, "C4")
                mean = self.predictions.mean(name, observable)
                top.plot(steps, mean, color=color, ls="--" if name == "gradient_flow" else "-", label=name.replace("_", " "))
                band = self.predictions.bands.get(name, {}).get(observable)
                if band is not None:
                    top.fill_between(steps, mean - band, mean + band, color=color, alpha=0.2)
                bottom.plot(steps, self.residual(name, observable), "o-", ms=3, color=color)
            for level in (-self.threshold, self.threshold):
                bottom.axhline(level, color="0.5", ls=":", lw=1)
            bottom.axhline(0.0, color="0.7", lw=0.8)
            top.set(title=_LABELS[observable], ylabel=observable)
            bottom.set(xlabel="SGD step t", ylabel="(mean − pred.) / SE")
            if column == 0:
                top.legend(fontsize=7)
        model = self.simulation.model
        figure.suptitle(f"{model.problem!r}, rank {model.rank}, d = {self.simulation.d}, eta = {self.simulation.eta:.3g}", fontsize=9)
        return figure


def compare_general(model, d: int, eta: float | None = None, checkpoints=None, trajectories: int = 256, method: str = "chain", seed: int = 0, which=GENERAL_PREDICTIONS, threshold: float = 4.0, progress: bool | None = False, hit: float | None = None, noise_seed: int | None = None, *, delta: float | None = None, steps: int | None = None, **prediction_options) -> GeneralComparison:
    """Simulate the general model and predict every observable on the same checkpoints.

    Parameters
    ----------
    model : GeneralModel
    d : int
    eta, delta : float
        The step size (one of the two; delta = eta d).
    checkpoints, steps
        The record (one of the two).
    trajectories : int, default 256
    method : {'chain', 'full'}, default 'chain'
    seed : int, default 0
    which : sequence of {'gradient_flow', 'one_step_mean'}
    threshold : float, default 4
    progress : bool or None, default False
    hit : float in (0, 1], optional
    noise_seed : int, optional
        Seed of the one-step-mean Monte Carlo (default: ``seed``).
    prediction_options : keyword arguments
        ``flow_starts``, ``map_starts``, ``map_samples``, ``map_batches``, ``map_substeps`` of
        :func:`~popgrad.models.finetuning.general_predictions.predict_general`.

    Returns
    -------
    GeneralComparison

    Examples
    --------
    >>> import popgrad
    >>> problem = popgrad.orthonormal_problem("relu", 3, 1.0, seed=0)
    >>> result = compare_general(popgrad.general_model(problem, train_c_hat=True), 100, delta=0.05, checkpoints=[0, 1000, 2000], trajectories=32, seed=1, which=("gradient_flow",))
    >>> sorted(result.conclusions["gradient_flow"])
    ['c_hat_cosine', 'c_hat_dot_c', 'm', 'population_loss', 'projection_w']
    """
    threshold = check_real(threshold, "threshold", 0.0, None, low_open=True)
    simulation = simulate_general(model, d, eta, checkpoints, trajectories=trajectories, method=method, seed=seed, hit=hit, delta=delta, steps=steps, progress=progress)
    predictions = predict_general(simulation, which=which, noise_seed=noise_seed, **prediction_options)
    return GeneralComparison(simulation, predictions, threshold)


def _parameters(simulation: GeneralSimulation) -> dict:
    """What made a simulation: problem, model, d, step sizes, method, trajectories, seed."""
    model = simulation.model
    return {"problem": model.problem.to_dict(), "model": model.settings(), "d": simulation.d, "eta": simulation.eta, "delta": simulation.eta * simulation.d, "eta_c": simulation.eta_c, "method": simulation.method, "trajectories": int(simulation.Y.shape[0]), "seed": simulation.seed}


def _hitting(simulation: GeneralSimulation, predictions: GeneralPredictions | None = None):
    if simulation.hitting_steps is None:
        return None
    record = simulation.hitting_times() | {"eps": simulation.hit}
    if predictions is not None and predictions.hitting_steps:
        record["predicted"] = {name: predictions.hitting_summary(name) for name in predictions.hitting_steps}
    return record


def _singular_values(simulation: GeneralSimulation) -> np.ndarray:
    return np.linalg.svd(simulation.overlap, compute_uv=False)  # (trajectories, checkpoints, min(r*, r))


def simulation_record(simulation: GeneralSimulation) -> dict:
    """A general-model simulation as a JSON-ready record: its parameters, seed and versions, and per
    observable ``mean``, ``standard_error`` and ``quantiles`` at each checkpoint; also the overlap matrix
    U^T U_hat and its singular values (mean and SE, ``[checkpoint][...]``) and the hitting times.

    Parameters
    ----------
    simulation : GeneralSimulation

    Returns
    -------
    dict
    """
    trajectories = simulation.Y.shape[0]

    def moments(values):
        error = values.std(axis=0, ddof=1) / math.sqrt(trajectories) if trajectories > 1 else None
        return {"mean": values.mean(axis=0).tolist(), "standard_error": None if error is None else error.tolist()}

    return _parameters(simulation) | {
        "steps": simulation.steps.tolist(),
        "observables": simulation.summary(),
        "overlap_matrix": moments(simulation.overlap),
        "singular_values": moments(_singular_values(simulation)),
        "hitting_times": _hitting(simulation),
        "seconds": simulation.seconds,
        "versions": versions(),
    }


def write_simulation_netcdf(simulation: GeneralSimulation, path, attributes: dict | None = None, extra: list = ()) -> None:
    """A general-model simulation as NetCDF3 (written by scipy; xarray reads it as a Dataset): every
    observable ``[trajectory, step]``, the overlap matrix ``[trajectory, step, teacher_column,
    student_column]``, its singular values, C_hat ``[trajectory, step, neuron, student_column]`` and the
    hitting steps, each with long_name and units; the steps as float64 (exact below 2^53).

    Parameters
    ----------
    simulation : GeneralSimulation
    path : str or Path
    attributes : dict, optional
        Global attributes (default: the simulation's record without its arrays, as JSON).
    extra : list of (name, dims, values, long_name, units)
        Further variables.

    Returns
    -------
    None
    """
    from scipy.io import netcdf_file

    if attributes is None:
        record = simulation_record(simulation)
        attributes = {"provenance": json.dumps({key: value for key, value in record.items() if key not in ("observables", "overlap_matrix", "singular_values")})}
    trajectories, checkpoints, r_star, r = simulation.overlap.shape
    singular = _singular_values(simulation)
    with netcdf_file(path, "w", version=2) as file:
        for name, value in attributes.items():
            setattr(file, name, value)
        for name, size in (("step", checkpoints), ("trajectory", trajectories), ("teacher_column", r_star), ("student_column", r), ("singular_index", singular.shape[-1]), ("neuron", simulation.c_hat.shape[2])):
            file.createDimension(name, size)
        variables = [
            ("step", ("step",), simulation.steps.astype(np.float64), "SGD step", "steps"),
            ("trajectory", ("trajectory",), np.arange(trajectories, dtype=np.float64), "trajectory index (its random stream)", "1"),
            *((observable, ("trajectory", "step"), values, f"{_LABELS[observable]} of each trajectory", _UNITS[observable]) for observable, values in simulation.observables().items()),
            ("overlap", ("trajectory", "step", "teacher_column", "student_column"), simulation.overlap, "overlap matrix U^T U_hat", "1"),
            ("singular_values", ("trajectory", "step", "singular_index"), singular, "singular values of U^T U_hat (descending)", "1"),
            ("c_hat", ("trajectory", "step", "neuron", "student_column"), simulation.c_hat, "student adapter coefficients C_hat", "1"),
            *extra,
        ]
        if simulation.hitting_steps is not None:
            variables.append(("hitting_step", ("trajectory",), simulation.hitting_steps.astype(np.float64), f"first step with the smallest squared singular value of U^T U_hat >= 1 - {simulation.hit:g} (-1: not by the last checkpoint)", "steps"))
        for name, dims, values, long_name, units in variables:
            variable = file.createVariable(name, "d", dims)
            variable[...] = np.asarray(values, dtype=np.float64)
            variable.long_name = long_name
            variable.units = units
