"""What a finished (or partly finished) sweep says: per-cell records, a labelled Dataset, a summary table,
a scaling plot with a fitted power law and a phase diagram.

``popgrad sweep-report STORE`` writes ``sweep.json`` (``cells``: one record per cell with the grid
parameters as keys and, for hitting times, ``hitting_time`` = {``median``, ``q25``, ``q75``,
``censored_fraction``}; ``fits``), ``sweep.md``, ``sweep.csv``, ``scaling.png`` and, with two numeric axes,
``phase.png``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .._io import check_output_folder, write_json, write_text
from .._validation import InvalidArgument
from .store import SweepStore

__all__ = ["sweep_records", "sweep_dataset", "sweep_fits", "write_sweep_report", "plot_scaling", "plot_phase"]


def _summary(record: dict, axes: list) -> dict:
    result = record["result"]
    row = {axis: record["parameters"][axis] for axis in axes}
    kind = record["parameters"]["kind"]
    if kind == "hitting_time":
        row["hitting_time"] = {key: result["hitting_time"][key] for key in ("median", "q25", "q75", "censored_fraction")}
        if "predicted_hitting_time" in result:
            row["predicted_hitting_time"] = {key: result["predicted_hitting_time"][key] for key in ("median", "q25", "q75", "censored_fraction")}
    elif kind == "compare":
        row["verdict"] = result["verdict"]
    else:
        observables = result.get("observables", {"m": result.get("m")})
        row["final"] = {name: {"mean": values["mean"][-1], "standard_error": None if values["standard_error"] is None else values["standard_error"][-1]} for name, values in observables.items()}
    row["key"] = record["key"]
    row["seed"] = record["provenance"]["seed"]
    row["wall_seconds"] = record["provenance"]["wall_seconds"]
    return row


def sweep_records(store: SweepStore) -> list:
    """One record per stored cell: the grid parameters as keys, then the summary of its result.

    Parameters
    ----------
    store : SweepStore
        Its cells of today's numerics, in grid order.

    Returns
    -------
    list of dict
    """
    axes = store.spec().axes
    return [_summary(record, axes) for record in store.records()]


def _numeric_axes(store: SweepStore) -> list:
    spec = store.spec()
    return [axis for axis, values in {**spec.grid, **spec.zipped}.items() if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and len(values) > 1]


def sweep_fits(store: SweepStore, replicates: int = 1000) -> list:
    """Power laws of the median hitting time along each numeric product axis, one fit per combination of
    the other axes (``case`` names it), with bootstrap intervals over trajectories.

    Parameters
    ----------
    store : SweepStore
    replicates : int, default 1000

    Returns
    -------
    list of dict
        ``case``, ``variable``, ``exponent``, ``ci``, ``prefactor``, ``left_out``.
    """
    from ..analysis.scaling import power_law_fit

    records = [record for record in store.records() if record["parameters"]["kind"] == "hitting_time"]
    spec = store.spec()
    fits = []
    for variable in _numeric_axes(store):
        others = [axis for axis in spec.axes if axis != variable]
        groups: dict = {}
        for record in records:
            case = tuple((axis, record["parameters"][axis]) for axis in others)
            groups.setdefault(case, []).append(record)
        for case, members in groups.items():
            if len(members) < 2:
                continue
            x = [member["parameters"][variable] for member in members]
            steps = [member["result"]["hitting_steps"] for member in members]
            try:
                fit = power_law_fit(x, steps, replicates=replicates, seed=0)
            except InvalidArgument:
                continue
            label = ", ".join(f"{axis} = {value}" for axis, value in case) or "all"
            fits.append({"case": label, "variable": variable, "exponent": fit.exponent, "ci": list(fit.ci), "prefactor": fit.prefactor, "left_out": fit.left_out, "x": fit.x.tolist(), "medians": fit.medians.tolist()})
    return fits


def sweep_dataset(store: SweepStore):
    """The sweep's results as an xarray Dataset indexed by the grid axes (product axes as dimensions; zipped
    axes share the dimension ``zip``): for hitting times ``median``, ``q25``, ``q75``,
    ``censored_fraction``; for simulations the final ``mean_<observable>``; missing cells are NaN.

    Parameters
    ----------
    store : SweepStore

    Returns
    -------
    xarray.Dataset
    """
    import xarray as xr

    spec = store.spec()
    dims = list(spec.grid) + (["zip"] if spec.zipped else [])
    shape = [len(values) for values in spec.grid.values()] + ([len(next(iter(spec.zipped.values())))] if spec.zipped else [])
    coords = {axis: values for axis, values in spec.grid.items()}
    for axis, values in spec.zipped.items():
        coords[axis] = ("zip", values)
    variables: dict = {}

    def put(name, index, value, long_name):
        if name not in variables:
            variables[name] = (np.full(shape, np.nan), long_name)
        variables[name][0][index] = np.nan if value is None else value

    for record in store.records():
        parameters = record["parameters"]
        index = tuple(spec.grid[axis].index(parameters[axis]) for axis in spec.grid)
        if spec.zipped:
            first = next(iter(spec.zipped))
            index += (spec.zipped[first].index(parameters[first]),)
        result = record["result"]
        if parameters["kind"] == "hitting_time":
            for key in ("median", "q25", "q75", "censored_fraction"):
                put(key, index, result["hitting_time"][key], f"{key} of the hitting step (m^2 >= 1 - eps), censored at the horizon")
        else:
            observables = result.get("observables", {"m": result.get("m")})
            for name, values in observables.items():
                if values is not None and "mean" in values:
                    put(f"mean_{name}", index, values["mean"][-1], f"mean {name} at the last checkpoint")
    return xr.Dataset({name: (dims, values, {"long_name": long_name}) for name, (values, long_name) in variables.items()}, coords=coords, attrs={"spec": str(spec.to_dict())})


def _table(records: list, axes: list) -> tuple:
    header = list(axes)
    rows = []
    for record in records:
        cells = [str(record[axis]) for axis in axes]
        if "hitting_time" in record:
            times = record["hitting_time"]
            cells += ["censored" if times[key] is None else f"{times[key]:.6g}" for key in ("median", "q25", "q75")] + [f"{times['censored_fraction']:.3f}"]
        elif "verdict" in record:
            cells.append(record["verdict"])
        else:
            cells += [f"{value['mean']:.6g}" for value in record["final"].values()]
        rows.append(cells)
    if records and "hitting_time" in records[0]:
        header += ["median", "q25", "q75", "censored_fraction"]
    elif records and "verdict" in records[0]:
        header.append("verdict")
    elif records:
        header += [f"final mean {name}" for name in records[0]["final"]]
    return header, rows


def plot_scaling(fits: list, ax=None):
    """Median hitting time against each fitted variable (log-log) with the fitted power law and its
    exponent's interval; returns the Figure.

    Parameters
    ----------
    fits : list of dict
        From :func:`sweep_fits`.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    if ax is None:
        figure = Figure(figsize=(6.5, 4.5), layout="constrained")
        ax = figure.subplots()
    for index, fit in enumerate(fits):
        x = np.array(fit["x"], dtype=float)
        ax.loglog(x, fit["medians"], "o", color=f"C{index}")
        line = np.geomspace(x.min(), x.max(), 50)
        ax.loglog(line, fit["prefactor"] * line ** fit["exponent"], "-", color=f"C{index}", label=f"{fit['case']}: slope {fit['exponent']:.3f} [{fit['ci'][0]:.3f}, {fit['ci'][1]:.3f}]")
    if fits:
        ax.set(xlabel=fits[0]["variable"], ylabel="median hitting step", title="hitting time scaling (95% bootstrap interval over trajectories)")
        ax.legend(fontsize=7)
    return ax.figure


def plot_phase(store: SweepStore, x_axis: str, y_axis: str, ax=None):
    """The median hitting time over two numeric axes as a colour map (log scale), censored cells marked
    with a cross; returns the Figure.

    Parameters
    ----------
    store : SweepStore
    x_axis, y_axis : str
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    records = [record for record in store.records() if record["parameters"]["kind"] == "hitting_time"]
    xs = sorted({record["parameters"][x_axis] for record in records})
    ys = sorted({record["parameters"][y_axis] for record in records})
    grid = np.full((len(ys), len(xs)), np.nan)
    censored = []
    for record in records:
        i, j = ys.index(record["parameters"][y_axis]), xs.index(record["parameters"][x_axis])
        median = record["result"]["hitting_time"]["median"]
        if median is None:
            censored.append((j, i))
        else:
            grid[i, j] = median if np.isnan(grid[i, j]) else min(grid[i, j], median)
    if ax is None:
        figure = Figure(figsize=(6.5, 4.8), layout="constrained")
        ax = figure.subplots()
    finite = grid[np.isfinite(grid)]
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", norm=LogNorm(vmin=finite.min(), vmax=finite.max()) if finite.size else None)
    for j, i in censored:
        ax.plot(j, i, "rx", ms=10)
    ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
    ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys])
    ax.set(xlabel=x_axis, ylabel=y_axis, title="median hitting step (x: censored at the horizon)")
    ax.figure.colorbar(image, ax=ax)
    return ax.figure


def write_sweep_report(store: SweepStore, folder=None, replicates: int = 1000) -> dict:
    """Write ``sweep.json``, ``sweep.md``, ``sweep.csv``, ``scaling.png`` (when a power law can be fitted) and
    ``phase.png`` (two numeric axes) into ``folder`` (default: the store's ``report/``).

    Parameters
    ----------
    store : SweepStore
    folder : str or Path, optional
    replicates : int, default 1000

    Returns
    -------
    dict
        The JSON document (``cells``, ``fits``, ``axes``, ``spec``, ``missing``).
    """
    folder = check_output_folder(Path(folder) if folder is not None else store.folder / "report", "out")
    folder.mkdir(exist_ok=True)
    spec = store.spec()
    records = sweep_records(store)
    fits = sweep_fits(store, replicates)
    document = {"spec": spec.to_dict(), "axes": spec.axes, "cells": records, "fits": fits, "missing": len(spec.cells()) - len(records)}
    write_json(folder / "sweep.json", document)
    header, rows = _table(records, spec.axes)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + ["| " + " | ".join(row) + " |" for row in rows]
    fit_lines = [f"- {fit['case']}: median T ~ {fit['variable']}^{fit['exponent']:.3f}, 95% interval [{fit['ci'][0]:.3f}, {fit['ci'][1]:.3f}]" + (f" (censored, left out: {fit['left_out']})" if fit["left_out"] else "") for fit in fits]
    write_text(folder / "sweep.md", "# Sweep report\n\n" + "\n".join(lines) + "\n" + ("\n## Power laws\n\n" + "\n".join(fit_lines) + "\n" if fit_lines else "") + (f"\n{document['missing']} cells not computed yet.\n" if document["missing"] else ""))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    write_text(folder / "sweep.csv", buffer.getvalue())
    from .._io import atomic_path

    if fits:
        with atomic_path(folder / "scaling.png") as temporary:
            plot_scaling(fits).savefig(temporary, dpi=110, format="png")
    numeric = _numeric_axes(store)
    if len(numeric) >= 2 and any(record.get("hitting_time") for record in records):
        with atomic_path(folder / "phase.png") as temporary:
            plot_phase(store, numeric[0], numeric[1]).savefig(temporary, dpi=110, format="png")
    return document
