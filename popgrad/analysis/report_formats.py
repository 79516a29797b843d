"""The comparison reports popgrad has written, read back into a :class:`~.comparison.Comparison`: schema
``popgrad.comparison/1`` (any model), and the two formats of 0.x, which had no ``schema`` key: the rank-1
report (``checkpoints`` rows; ``m``, ``prediction_NAME``, ``NAME_lower``/``NAME_upper``, ``predicted_loss_NAME``
in the NetCDF) and the general model's (``observables``; ``NAME_OBSERVABLE`` and ``NAME_OBSERVABLE_band``).
Called by :func:`~.comparison.load_comparison`, which checks the folder and the files first.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..dynamics.engine import Predictions, Run
from ..dynamics.protocol import model_from_dict
from .comparison import Comparison

__all__ = ["read_schema_1", "read_rank_one_0x", "read_general_0x"]


def _hits(arrays: dict):
    return arrays["hitting_step"].astype(np.int64) if "hitting_step" in arrays else None


def _run(model, info: dict, steps, observables: dict, arrays: dict, hit, settings: dict) -> Run:
    first = int(info.get("first_trajectory", 0))
    return Run(model, steps, observables, {}, info["method"], float(info["eta"]), int(info["d"]), int(info["seed"]), info.get("m0"), first, hit, _hits(arrays), float(info.get("simulation_seconds") or math.nan), settings, bool(info.get("stop_when_hit", False)))


def read_schema_1(saved: dict, arrays: dict) -> Comparison:
    info = saved["provenance"]
    model = model_from_dict(info["model"])
    steps = arrays["step"].astype(np.int64)
    observables = {name: arrays[name] for name in saved["observables"] if name in arrays}
    values, bands, errors = {}, {}, {}
    for variable in arrays:
        if variable.startswith("prediction_") and variable.count("__") == 1:
            name, observable = variable.removeprefix("prediction_").split("__")
            values.setdefault(name, {})[observable] = arrays[variable][None, :]
            errors.setdefault(name, {})[observable] = arrays[f"{variable}__start_se"]
            if f"{variable}__lower" in arrays:
                bands.setdefault(name, {})[observable] = (arrays[f"{variable}__lower"], arrays[f"{variable}__upper"])
    hitting = saved.get("hitting_times")
    known = set(Run.__dataclass_fields__) | {"model", "family", "delta", "trajectories", "predictions", "threshold", "simulation_seconds", "versions"}
    settings = {key: value for key, value in info.items() if key in ("eta_c", "path")}
    run = _run(model, info, steps, observables, arrays, None if hitting is None else hitting["eps"], settings)
    run = dataclasses.replace(run, state={name: arrays[name] for name in saved.get("state", []) if name in arrays})
    predicted = {variable.removeprefix("predicted_hitting_step__"): arrays[variable] for variable in arrays if variable.startswith("predicted_hitting_step__")}
    predictions = Predictions(steps, values, bands, dict(saved.get("failures", {})), dict(info.get("predictions", {})), predicted, {}, errors)
    return Comparison(run, predictions, float(info["threshold"]), extra={key: value for key, value in info.items() if key not in known})


def read_rank_one_0x(saved: dict, arrays: dict) -> Comparison:
    """A 0.x rank-1 report: ``m`` and ``population_loss`` per trajectory; ``prediction_NAME`` (mean m),
    ``predicted_loss_NAME`` and the bands ``NAME_lower``/``NAME_upper``."""
    from ..models.finetuning.model import general_model
    from ..models.finetuning.spec import FineTuningProblem

    info = saved["provenance"]
    model = general_model(FineTuningProblem.from_dict(info["problem"]))
    steps = arrays["step"].astype(np.int64)
    observables = {name: arrays[name] for name in ("m", "population_loss") if name in arrays}
    names = [name.removeprefix("prediction_") for name in arrays if name.startswith("prediction_")]
    values = {name: {"m": arrays[f"prediction_{name}"][None, :]} | ({"population_loss": arrays[f"predicted_loss_{name}"][None, :]} if f"predicted_loss_{name}" in arrays else {}) for name in names}
    bands = {name: {"m": (arrays[f"{name}_lower"], arrays[f"{name}_upper"])} for name in names if f"{name}_lower" in arrays}
    hitting = saved.get("hitting_time")
    run = _run(model, info, steps, observables, arrays, None if hitting is None else hitting["eps"], {})
    settings = {name: {"noise_samples": info.get("noise_samples"), "noise_seed": info.get("noise_seed")} for name in names}
    predictions = Predictions(steps, values, bands, dict(saved.get("failures", {})), settings, {}, {name: True for name in names})
    known = {"problem", "d", "eta", "delta", "method", "trajectories", "first_trajectory", "seed", "m0", "threshold", "simulation_seconds"}
    return Comparison(run, predictions, float(info["threshold"]), extra={key: value for key, value in info.items() if key not in known})


def read_general_0x(saved: dict, arrays: dict) -> Comparison:
    """A 0.x general-model report: each observable per trajectory; ``NAME_OBSERVABLE`` (mean over starts)
    and ``NAME_OBSERVABLE_band`` (half-width); the standard errors over starts in the JSON."""
    from ..models.finetuning.model import general_model_from_dict

    info = saved["provenance"]
    switches = {key: value for key, value in info["model"].items()}
    model = general_model_from_dict(info["problem"] | switches)
    steps = arrays["step"].astype(np.int64)
    observables = {name: arrays[name] for name in saved["observables"] if name in arrays}
    values, bands, errors = {}, {}, {}
    for observable, record in saved["observables"].items():
        for name, predicted in record.get("predictions", {}).items():
            mean = arrays[f"{name}_{observable}"]
            values.setdefault(name, {})[observable] = mean[None, :]
            errors.setdefault(name, {})[observable] = np.asarray(predicted["start_standard_error"], dtype=float)
            if f"{name}_{observable}_band" in arrays:
                half = arrays[f"{name}_{observable}_band"]
                bands.setdefault(name, {})[observable] = (mean - half, mean + half)
    hitting = saved.get("hitting_times")
    run = _run(model, info, steps, observables, arrays, None if hitting is None else hitting["eps"], {"eta_c": info.get("eta_c")})
    predictions = Predictions(steps, values, bands, dict(saved.get("failures", {})), dict(info.get("predictions", {})), {}, {}, errors)
    known = {"problem", "model", "d", "eta", "delta", "eta_c", "method", "trajectories", "seed", "predictions", "threshold", "simulation_seconds", "versions"}
    return Comparison(run, predictions, float(info["threshold"]), extra={key: value for key, value in info.items() if key not in known})
