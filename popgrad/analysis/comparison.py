"""Theory vs Monte Carlo: statistics of m_t over trajectories against each prediction, with a verdict.

:func:`compare` runs the simulation and the predictions on the same checkpoints and returns a
:class:`Comparison`: mean, standard error and quantile bands of m_t; for each prediction the discrepancy
``z_t = |mean_t - prediction_t| / SE_t`` (for the finite-step ODE the distance to its band) and the
statistic ``max_t z_t`` over checkpoints after the start; the verdict says which predictions are
consistent at the threshold (default 4). Results convert to an xarray Dataset (NetCDF) that records
the problem, step size, seeds and versions, to JSON, and to a PNG plot.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from .._io import INCOMPLETE, atomic_path, check_output_folder, write_json, write_text
from .._validation import InvalidArgument, check_real
from ..models.finetuning.population import population_loss
from ..models.finetuning.predictions import PREDICTIONS, Predictions, initial_points, predict
from ..models.finetuning.simulation import SimulationResult, simulate
from ..models.finetuning.spec import FineTuningProblem

__all__ = ["Comparison", "compare", "load_comparison", "QUANTILES", "versions", "write_netcdf", "save_report"]

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_DESCRIPTIONS = {
    "step": ("SGD step", "steps"),
    "trajectory": ("trajectory index (its random stream)", "1"),
    "quantile": ("quantile level over trajectories", "1"),
    "m": ("overlap m = <u, u_hat> of each trajectory", "1"),
    "mean": ("mean overlap over trajectories", "1"),
    "standard_error": ("standard error of the mean overlap", "1"),
    "quantiles": ("quantiles of the overlap over trajectories", "1"),
    "population_loss": ("population loss Phi(m) at each trajectory's overlap", "squared output units"),
    "hitting_step": ("first step with m^2 >= 1 - eps (-1: not by the last checkpoint)", "steps"),
}


def write_netcdf(dataset, path) -> None:
    """NetCDF3 (scipy) with the step counts stored as float64: exact below 2^53, where NetCDF3's int32 would
    refuse counts beyond 2^31 after the simulation had run.

    Parameters
    ----------
    dataset : xarray.Dataset
        With a ``step`` coordinate.
    path : str or Path

    Returns
    -------
    None
    """
    dataset.to_netcdf(path, engine="scipy", encoding={"step": {"dtype": "float64"}})


def versions() -> dict:
    """Versions of popgrad and the numerical stack, recorded with every saved result.

    Returns
    -------
    dict of str to str
    """
    import mpmath
    import numba
    import scipy
    import sympy

    return {"popgrad": __version__, "numpy": np.__version__, "scipy": scipy.__version__, "sympy": sympy.__version__, "mpmath": mpmath.__version__, "numba": numba.__version__, "python": platform.python_version()}


def save_report(result, folder: str | Path) -> list:
    """Write a comparison's ``comparison.nc`` (its ``write_netcdf``), ``comparison.json`` (its
    ``to_json_dict``) and ``comparison.png`` (its ``plot``) into ``folder``.

    Each file is written whole or not at all; the folder holds a file ``INCOMPLETE`` until all three are
    written.

    Parameters
    ----------
    result : Comparison or GeneralComparison
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


class ReportMixin:
    """What every comparison shares: its checkpoints (``simulation.steps``) and :func:`save_report`."""

    @property
    def steps(self) -> np.ndarray:
        return self.simulation.steps

    def save(self, folder: str | Path) -> list:
        """Write ``comparison.nc`` (NetCDF), ``comparison.json`` and ``comparison.png`` into ``folder``
        (:func:`save_report`)."""
        return save_report(self, folder)


@dataclass(frozen=True)
class Comparison(ReportMixin):
    """A simulation and its predictions on the same checkpoints.

    Attributes
    ----------
    problem : FineTuningProblem
    simulation : SimulationResult
        The Monte Carlo side: ``m[trajectory, checkpoint]``.
    predictions : Predictions
        The population side, on the simulation's checkpoints.
    threshold : float, default 4
        Verdict threshold, in standard errors of the SGD mean.
    extra : dict
        Further records saved with the report (e.g. the command line's settings).
    """

    problem: FineTuningProblem
    simulation: SimulationResult
    predictions: Predictions
    threshold: float = 4.0
    extra: dict = field(default_factory=dict)

    @property
    def mean(self) -> np.ndarray:
        return self.simulation.m.mean(axis=0)

    @property
    def standard_error(self) -> np.ndarray:
        m = self.simulation.m
        return m.std(axis=0, ddof=1) / math.sqrt(m.shape[0]) if m.shape[0] > 1 else np.full(m.shape[1], np.nan)

    @property
    def population_loss(self) -> np.ndarray:
        """``Phi(m_t)`` of every trajectory, ``[trajectory, checkpoint]``."""
        return population_loss(self.problem, np.clip(self.simulation.m, -1.0, 1.0))

    @property
    def quantiles(self) -> np.ndarray:
        return np.quantile(self.simulation.m, QUANTILES, axis=0)

    def discrepancy(self, name: str) -> np.ndarray:
        """``|mean - prediction| / SE`` per checkpoint (distance to the band for predictions with one)."""
        prediction = self.predictions.values[name]
        gap = np.abs(self.mean - prediction)
        if name in self.predictions.bands:
            lower, upper = np.minimum(*self.predictions.bands[name]), np.maximum(*self.predictions.bands[name])
            gap = np.where(self.mean < lower, lower - self.mean, np.where(self.mean > upper, self.mean - upper, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.standard_error > 0, gap / self.standard_error, np.where(gap > 0, np.inf, 0.0))

    def statistic(self, name: str) -> float:
        """``max_t z_t`` over the checkpoints after step 0."""
        z = self.discrepancy(name)[self.steps > 0]
        return float(np.max(z)) if z.size else 0.0

    def band_ratio(self, name: str) -> float:
        """The widest half-width of a prediction's uncertainty band in standard errors of the mean (0 for a
        prediction without a band): a band wider than the threshold could hide a discrepancy the
        threshold is meant to detect."""
        if name not in self.predictions.bands:
            return 0.0
        lower, upper = self.predictions.bands[name]
        later = self.steps > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (0.5 * np.abs(upper - lower) / self.standard_error)[later]
        return float(np.max(ratio)) if ratio.size else 0.0

    @property
    def conclusions(self) -> dict:
        """Per prediction: ``consistent``, ``inconsistent``, ``inconclusive`` (a band wider than the
        threshold in standard errors, and no discrepancy beyond it), ``undefined`` (one trajectory: no
        standard error) or ``failed`` (the prediction could not be computed: ``predictions.failures``)."""
        out = {}
        for name in self.predictions.values:
            if name in self.predictions.failures:
                out[name] = "failed"
            elif self.simulation.trajectories < 2:
                out[name] = "undefined"
            elif self.statistic(name) > self.threshold:
                out[name] = "inconsistent"
            elif self.band_ratio(name) > self.threshold:
                out[name] = "inconclusive"
            else:
                out[name] = "consistent"
        return out

    @property
    def consistent(self) -> dict:
        """Per prediction: True only for a conclusive ``consistent``."""
        return {name: conclusion == "consistent" for name, conclusion in self.conclusions.items()}

    @property
    def verdict(self) -> str:
        if self.simulation.trajectories < 2:
            return "undefined: one trajectory has no standard error"
        parts = []
        for name, conclusion in self.conclusions.items():
            if conclusion == "failed":
                parts.append(f"{name}: failed ({self.predictions.failures[name]})")
                continue
            band = f", band {self.band_ratio(name):.1f} SE" if name in self.predictions.bands else ""
            parts.append(f"{name}: max z = {self.statistic(name):.2f}{band} ({conclusion})")
        return f"threshold {self.threshold:g} SE; " + "; ".join(parts)

    # -- export -------------------------------------------------------------------------------------

    def provenance(self) -> dict:
        simulation = self.simulation
        return {
            "problem": self.problem.to_dict(),
            "d": simulation.d,
            "eta": simulation.eta,
            "delta": simulation.eta * simulation.d,
            "method": simulation.method,
            "trajectories": simulation.trajectories,
            "first_trajectory": simulation.first_trajectory,
            "seed": simulation.seed,
            "m0": simulation.m0,
            "noise_samples": None if self.predictions.noise is None else self.predictions.noise.samples,
            "noise_seed": None if self.predictions.noise is None else self.predictions.noise.seed,
            "threshold": self.threshold,
            "simulation_seconds": simulation.seconds,
            "versions": versions(),
        } | self.extra

    def to_json_dict(self) -> dict:
        checkpoints = []
        quantiles = self.quantiles
        loss = self.population_loss
        loss_mean = loss.mean(axis=0)
        loss_error = loss.std(axis=0, ddof=1) / math.sqrt(loss.shape[0]) if loss.shape[0] > 1 else np.full(loss.shape[1], np.nan)
        for index, step in enumerate(self.steps):
            row = {
                "step": int(step),
                "mean": float(self.mean[index]),
                "standard_error": float(self.standard_error[index]),
                "quantiles": {f"{q:g}": float(quantiles[i, index]) for i, q in enumerate(QUANTILES)},
                "population_loss": {"mean": float(loss_mean[index]), "standard_error": float(loss_error[index])},
                "predicted_population_loss": {name: float(values[index]) for name, values in self.predictions.loss.items()},
                "predictions": {name: float(values[index]) for name, values in self.predictions.values.items()},
            }
            row["bands"] = {name: [float(lower[index]), float(upper[index])] for name, (lower, upper) in self.predictions.bands.items()}
            checkpoints.append(row)
        return {
            "provenance": self.provenance(),
            "checkpoints": checkpoints,
            "statistics": {name: self.statistic(name) for name in self.predictions.values},
            "consistent": self.consistent,
            "conclusions": self.conclusions,
            "band_ratios": {name: self.band_ratio(name) for name in self.predictions.bands},
            "verdict": self.verdict,
            "failures": dict(self.predictions.failures),
            "hitting_time": None if self.simulation.hitting_steps is None else self.simulation.hitting_times() | {"eps": self.simulation.hit},
        }

    def _variables(self) -> tuple:
        """``(coordinates, variables, attributes)``, each variable ``name -> (dims, values, attrs)`` with its
        long_name and units: the one description that :meth:`to_dataset` and the NetCDF file are made of."""
        described = dict(_DESCRIPTIONS)
        for name in self.predictions.values:
            label = name.replace("_", " ")
            described[f"prediction_{name}"] = (f"predicted mean overlap ({label})", "1")
            described[f"discrepancy_{name}"] = (f"|mean - {label}| in standard errors (distance to its band where it has one)", "standard errors")
            described[f"predicted_loss_{name}"] = (f"predicted mean population loss Phi ({label}, averaged over the starting points)", "squared output units")
            described[f"{name}_lower"] = (f"lower edge of the {label} band (2 SE of its noise Monte Carlo)", "1")
            described[f"{name}_upper"] = (f"upper edge of the {label} band (2 SE of its noise Monte Carlo)", "1")
        # trajectory indices as float64 like the steps: exact below 2^53, where NetCDF3 has no int64
        coordinates = {"step": self.steps.astype(np.float64), "trajectory": (np.arange(self.simulation.trajectories) + self.simulation.first_trajectory).astype(np.float64), "quantile": np.array(QUANTILES)}
        data = {
            "m": (("trajectory", "step"), self.simulation.m),
            "mean": (("step",), self.mean),
            "standard_error": (("step",), self.standard_error),
            "quantiles": (("quantile", "step"), self.quantiles),
            "population_loss": (("trajectory", "step"), self.population_loss),
        }
        if self.simulation.hitting_steps is not None:
            data["hitting_step"] = (("trajectory",), self.simulation.hitting_steps.astype(np.float64))
        for name, values in self.predictions.values.items():
            data[f"prediction_{name}"] = (("step",), values)
            data[f"discrepancy_{name}"] = (("step",), self.discrepancy(name))
        for name, values in self.predictions.loss.items():
            data[f"predicted_loss_{name}"] = (("step",), values)
        for name, (lower, upper) in self.predictions.bands.items():
            data[f"{name}_lower"] = (("step",), lower)
            data[f"{name}_upper"] = (("step",), upper)

        def labelled(name, dims, values):
            long_name, units = described[name]
            return dims, np.asarray(values, dtype=np.float64), {"long_name": long_name, "units": units}

        coordinates = {name: labelled(name, (name,), values) for name, values in coordinates.items()}
        variables = {name: labelled(name, dims, values) for name, (dims, values) in data.items()}
        return coordinates, variables, {"provenance": json.dumps(self.provenance()), "verdict": self.verdict}

    def to_dataset(self):
        """Labelled arrays (xarray.Dataset): m[trajectory, step], mean/SE/quantiles and predictions per step."""
        import xarray as xr

        coordinates, variables, attributes = self._variables()
        return xr.Dataset(variables, coords=coordinates, attrs=attributes)

    def write_netcdf(self, path) -> None:
        """The arrays of :meth:`to_dataset` as a NetCDF3 file (64-bit offsets), written with scipy: xarray
        reads it back as the same Dataset, and saving needs no xarray (0.3 s of import)."""
        from scipy.io import netcdf_file

        coordinates, variables, attributes = self._variables()
        with netcdf_file(path, "w", version=2) as file:
            for name, value in attributes.items():
                setattr(file, name, value)
            for name, (dims, values, _) in coordinates.items():
                file.createDimension(name, values.shape[0])
            for name, (dims, values, attrs) in {**coordinates, **variables}.items():
                variable = file.createVariable(name, "d", dims)
                variable[...] = values
                for key, value in attrs.items():
                    setattr(variable, key, value)

    def plot(self, ax=None):
        """The SGD quantile bands, mean ± 2 SE and every prediction against the step; returns the Figure
        (drawn into ``ax`` when given)."""
        from matplotlib.figure import Figure

        if ax is None:
            figure = Figure(figsize=(8, 5), layout="tight")
            ax = figure.subplots()
        steps, quantiles = self.steps, self.quantiles
        ax.fill_between(steps, quantiles[0], quantiles[-1], color="C0", alpha=0.15, label="SGD 5–95%")
        ax.fill_between(steps, quantiles[1], quantiles[-2], color="C0", alpha=0.3, label="SGD 25–75%")
        ax.errorbar(steps, self.mean, yerr=2 * self.standard_error, fmt="o", ms=3, color="C0", label=f"SGD mean ± 2 SE ({self.simulation.method}, {self.simulation.trajectories} traj.)")
        styles = {"gradient_flow": ("C3", "--"), "population_map": ("C2", ":"), "finite_step_ode": ("k", "-"), "exact_normalization_ode": ("C1", "-.")}
        for name, values in self.predictions.values.items():
            color, style = styles.get(name, ("C4", "-"))
            ax.plot(steps, values, color=color, ls=style, label=f"{name.replace('_', ' ')} (max z {self.statistic(name):.1f})")
        for name, (lower, upper) in self.predictions.bands.items():
            ax.fill_between(steps, lower, upper, color=styles.get(name, ("C4", ""))[0], alpha=0.2)
        ax.set(xlabel="SGD step t", ylabel="m_t = <u, u_hat_t>", title=f"{self.problem!r}\nd = {self.simulation.d}, eta = {self.simulation.eta:.3g}")
        ax.legend(fontsize=8)
        return ax.figure


def load_comparison(folder: str | Path) -> Comparison:
    """Read back a report folder written by :meth:`Comparison.save` (``popgrad compare``, or the ``full/`` and
    ``chain/`` folders of ``popgrad run``): the trajectories, predictions and bands from ``comparison.nc``,
    the problem and parameters from ``comparison.json``.

    Parameters
    ----------
    folder : str or Path
        A folder holding ``comparison.nc`` and ``comparison.json``.

    Returns
    -------
    Comparison
        With the saved trajectories and predictions; its statistics and verdict are recomputed from them
        (the Monte Carlo noise estimate itself is not saved: ``predictions.noise`` is None).

    Raises
    ------
    InvalidArgument
        When the folder is missing, incomplete (an ``INCOMPLETE`` marker) or lacks one of the two files.

    Examples
    --------
    >>> import tempfile
    >>> from popgrad.models.finetuning.spec import orthonormal_problem
    >>> result = compare(orthonormal_problem("relu", k=4, xi=1.0, seed=0), d=200, eta=0.05 / 200, checkpoints=[0, 5000], trajectories=16, seed=1, noise_samples=6400)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = result.save(folder)
    ...     again = load_comparison(folder)
    >>> again.verdict == result.verdict, bool(np.array_equal(again.simulation.m, result.simulation.m))
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
    with netcdf_file(folder / "comparison.nc", "r", mmap=False) as file:
        dataset = {name: np.array(variable[...]) for name, variable in file.variables.items()}
    saved = json.loads((folder / "comparison.json").read_text())
    info = saved["provenance"]
    problem = FineTuningProblem.from_dict(info["problem"])
    steps = dataset["step"].astype(np.int64)
    names = [name.removeprefix("prediction_") for name in dataset if name.startswith("prediction_")]
    values = {name: dataset[f"prediction_{name}"] for name in names}
    bands = {name: (dataset[f"{name}_lower"], dataset[f"{name}_upper"]) for name in names if f"{name}_lower" in dataset}
    loss = {name: dataset[f"predicted_loss_{name}"] for name in names if f"predicted_loss_{name}" in dataset}
    predictions = Predictions(steps, values, bands, None, initial_points(info["d"] - problem.rank, info["m0"]), loss, saved.get("failures", {}))
    hitting = saved.get("hitting_time")
    hits = dataset["hitting_step"].astype(np.int64) if "hitting_step" in dataset else None
    simulation = SimulationResult(steps, dataset["m"], info["method"], info["eta"], info["d"], info["seed"], info["m0"], info["first_trajectory"], info.get("simulation_seconds", math.nan), {}, hits, None if hitting is None else hitting["eps"])
    # what the provenance recomputes; the rest (noise samples and seed, the versions that made the data, a
    # command's own keys) is carried over as saved
    known = {"problem", "d", "eta", "delta", "method", "trajectories", "first_trajectory", "seed", "m0", "threshold", "simulation_seconds"}
    return Comparison(problem, simulation, predictions, info["threshold"], extra={key: value for key, value in info.items() if key not in known})


def compare(problem: FineTuningProblem, d: int, eta: float | None = None, checkpoints=None, trajectories: int = 256, method: str = "chain", m0: float | None = None, seed: int = 0, which=PREDICTIONS, noise_samples: int = 200_000, threshold: float = 4.0, progress: bool | None = False, hit: float | None = None, noise_seed: int | None = None, *, delta: float | None = None, steps: int | None = None) -> Comparison:
    """Simulate online SGD and compute the predictions on the same checkpoints.

    Parameters
    ----------
    problem : FineTuningProblem
    d : int
        Input dimension (a problem with W has its own: d must match it for method 'full').
    eta : float, optional
        Step size, > 0 (the paper's scaling is eta = delta / d); or give ``delta``.
    checkpoints : sequence of int, optional
        Increasing step counts at which m_t is recorded, at most 1e12; or give ``steps``.
    trajectories : int, default 256
        Independent SGD runs (trajectory j uses stream (seed, TRAJECTORIES, j)).
    method : {'chain', 'fast', 'full'}, default 'chain'
        The exact d-independent chain, full-d SGD with span(W) rotated onto the first coordinates, or
        full-d SGD with a random embedding of W.
    m0 : float in [-1, 1], optional
        Starting overlap (default: random, u_hat_0 uniform on the sphere of span(W)^perp).
    seed : int, default 0
        Seed of the simulation (and of the noise Monte Carlo unless ``noise_seed`` is given).
    which : sequence of str, default all four predictions
    noise_samples : int, default 200 000
        Monte Carlo samples of the noise terms of the finite-step predictions.
    threshold : float, default 4
        Verdict threshold in standard errors of the SGD mean.
    progress : bool or None, default False
        Progress bars (None: only on a terminal).
    hit : float in (0, 1], optional
        Record each trajectory's first step with m^2 >= 1 - hit.
    noise_seed : int, optional
        Seed of the noise Monte Carlo, apart from the simulation's.
    delta : float, optional
        The step size as ``delta = eta d`` (``--delta``), instead of ``eta``.
    steps : int, optional
        The run's length, at 21 evenly spaced checkpoints (``--steps``), instead of ``checkpoints``.

    Returns
    -------
    Comparison
        Its ``verdict``, ``conclusions``, statistics, ``save(folder)``, ``plot()`` and ``to_dataset()``.

    Examples
    --------
    >>> from popgrad.models.finetuning.spec import orthonormal_problem
    >>> problem = orthonormal_problem("relu", k=4, xi=1.0, seed=0)
    >>> result = compare(problem, d=200, eta=0.05 / 200, checkpoints=[0, 5000, 20000], trajectories=64, seed=1, noise_samples=20000)
    >>> sorted(result.consistent)
    ['exact_normalization_ode', 'finite_step_ode', 'gradient_flow', 'population_map']
    """
    threshold = check_real(threshold, "threshold", 0.0, None, low_open=True)
    simulation = simulate(problem, d, eta, checkpoints, trajectories=trajectories, method=method, m0=m0, seed=seed, progress=progress, hit=hit, delta=delta, steps=steps)
    predictions = predict(problem, simulation.d, simulation.eta, simulation.steps, m0=m0, which=which, noise_samples=noise_samples, seed=seed if noise_seed is None else noise_seed)
    return Comparison(problem, simulation, predictions, threshold)
