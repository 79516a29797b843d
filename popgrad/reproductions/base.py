"""The frame every reproduction shares: a registry of named reproductions, their reports (parameters,
criteria measured from the data, fitted exponents, a figure) and the files written for each.

``popgrad reproduce NAME|all [--quick] [--out DIR]`` runs a reproduction and writes ``NAME.png``, ``NAME.md``
(parameters, seeds, versions, criteria with measured values and their results) and ``NAME.json`` (``parameters``,
``criteria`` = [{``name``, ``value``, ``kind``, ``pass``}], ``fits`` = [{``case``, ``variable``, ``exponent``,
``ci``}]). A criterion's ``kind`` says what its ``pass`` means:

* ``test`` — a test with a threshold: ``pass`` true or false (PASS / FAIL);
* ``claim`` — a value the paper states (``paper``) against the measured 95% interval (``interval``):
  ``pass`` is true exactly when the interval contains it (reproduced / NOT REPRODUCED); a claim that did not
  reproduce is never counted as passing, nor as a failed test of popgrad;
* ``reported`` — a value only reported: ``pass`` is null, counted neither way.

Figures are drawn for print (:data:`PRINT_STYLE`, :func:`print_figure`: one column 3.3 in wide, every text
at least 8 pt there) and checked when written (:func:`figure_check`, recorded in the report's provenance).
Each report records the hash of its reproduction's definition (:func:`definition_version`: its module's
source and this frame); a committed report whose hash differs from the code's is stale (``tests/test_reproductions.py`` fails on it).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .._io import atomic_path, check_output_folder, write_json, write_text
from .._validation import InvalidArgument

__all__ = ["Reproduction", "ReproductionReport", "REGISTRY", "CRITERION_KINDS", "PRINT_WIDTH", "PRINT_STYLE", "register", "run_reproduction", "definition_version", "stale_reproductions", "sweep_records", "print_figure", "fit_texts", "figure_check"]

#: name -> Reproduction
REGISTRY: dict = {}
#: what a criterion's ``pass`` means (see the module's text)
CRITERION_KINDS = ("test", "claim", "reported")
#: a paper's column width (inches): the reproductions' figures are drawn at it
PRINT_WIDTH = 3.3
#: the smallest text (pt) a figure may have at :data:`PRINT_WIDTH`
SMALLEST_TEXT = 8.0
#: matplotlib settings the reproductions draw under (every text 8 pt at the column width)
PRINT_STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8, "legend.title_fontsize": 8, "figure.titlesize": 8, "lines.linewidth": 1.0, "lines.markersize": 3.5, "axes.linewidth": 0.6, "legend.framealpha": 0.6, "legend.borderaxespad": 0.3, "legend.handlelength": 1.5, "axes.formatter.limits": (-3, 4), "axes.formatter.use_mathtext": True}


def _normalised_criterion(criterion: dict) -> dict:
    """A criterion with its ``kind`` (default ``test``) and a ``pass`` that means what the kind says."""
    criterion = dict(criterion)
    kind = criterion.setdefault("kind", "test")
    if kind not in CRITERION_KINDS:
        raise ValueError(f"criterion {criterion.get('name')!r}: kind must be one of {CRITERION_KINDS}, got {kind!r}")
    if kind == "reported":
        criterion["pass"] = None
    elif kind == "claim":
        low, high = (float(x) for x in criterion["interval"])
        paper = float(criterion["paper"])
        criterion["pass"] = bool(low <= paper <= high)
    else:
        criterion["pass"] = bool(criterion["pass"])
    return criterion


def result_word(criterion: dict) -> str:
    """How a criterion's result reads in a report: PASS / FAIL, reproduced / NOT REPRODUCED, reported."""
    kind = criterion.get("kind", "test")
    if kind == "reported":
        return "reported"
    if kind == "claim":
        return "reproduced" if criterion["pass"] else "NOT REPRODUCED"
    return "PASS" if criterion["pass"] else "FAIL"


def print_figure(panels: int = 1, height: float = 3.0):
    """A figure for print: ``panels`` axes stacked in one column :data:`PRINT_WIDTH` inches wide, each
    ``height`` inches tall (draw under :data:`PRINT_STYLE`, as :func:`run_reproduction` does).

    Parameters
    ----------
    panels : int
    height : float

    Returns
    -------
    (Figure, ndarray of Axes)

    Examples
    --------
    >>> figure, axes = print_figure(2)
    >>> figure.get_size_inches().tolist(), axes.shape
    ([3.3, 6.0], (2,))
    """
    import numpy as np
    from matplotlib.figure import Figure

    figure = Figure(figsize=(PRINT_WIDTH, height * panels), layout="constrained")
    return figure, np.atleast_1d(figure.subplots(panels, 1, squeeze=False)[:, 0])


def fit_texts(figure, title: int = 44, label: int = 44, legend: int = 42) -> None:
    """Wrap a figure's long titles, axis labels and legend entries onto several lines (characters per
    line at 8 pt in a :data:`PRINT_WIDTH` column) and move each legend below its axes, so that nothing runs
    off a print-sized figure and no legend hides data.

    Parameters
    ----------
    figure : matplotlib Figure
    title, label, legend : int
        Characters per line.
    """
    import textwrap

    from matplotlib.transforms import offset_copy

    def wrapped(text: str, width: int) -> str:
        return "\n".join(textwrap.fill(line, width) for line in text.split("\n")) if len(text) > width else text

    for ax in figure.axes:
        ax.set_title(wrapped(ax.get_title(), title))
        ax.set_xlabel(wrapped(ax.get_xlabel(), label))
        height = ax.get_subplotspec().get_position(figure).height * figure.get_size_inches()[1] if ax.get_subplotspec() else 2.0
        ax.set_ylabel(wrapped(ax.get_ylabel(), max(24, int(18 * (height - 0.6)))))
        if ax.get_legend() is not None:  # below the axes (under the tick labels and the x label): it hides no data
            old = ax.get_legend()
            handles, texts = old.legend_handles, [wrapped(text.get_text(), legend) for text in old.get_texts()]
            old.remove()
            lines = ax.get_xlabel().count("\n") + 1 if ax.get_xlabel() else 0
            below = offset_copy(ax.transAxes, fig=figure, y=-(16 + 10 * lines + (8 if "\n" in "".join(t.get_text() for t in ax.get_xticklabels()) else 0)), units="points")
            ax.legend(handles, texts, loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=below, borderaxespad=0.0, frameon=False, ncols=1)


def figure_check(figure) -> dict:
    """What a figure looks like in print: its width, its smallest text scaled to :data:`PRINT_WIDTH`
    (points) and the axes with data whose x or y label is empty (colour bars and empty axes aside).

    Parameters
    ----------
    figure : matplotlib Figure

    Returns
    -------
    dict
        ``width_in``, ``smallest_text_pt`` (at the print width), ``unlabelled_axes`` (titles or indices),
        ``outside_the_figure`` (texts and legends that run off it), ``fit_for_print`` (smallest text >= 8 pt,
        no unlabelled axes, nothing outside).

    Examples
    --------
    >>> figure, (ax,) = print_figure(1)
    >>> _ = ax.plot([0, 1], [0, 1]); _ = ax.set(xlabel="t", ylabel="loss")
    >>> figure_check(figure)["fit_for_print"]
    True
    """
    from matplotlib.text import Text

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()  # the layout and the tick labels' texts
    renderer = canvas.get_renderer()
    width = float(figure.get_size_inches()[0])
    texts = [text for text in figure.findobj(Text) if text.get_visible() and text.get_text().strip()]
    sizes = [text.get_fontsize() for text in texts]
    smallest = min(sizes) * PRINT_WIDTH / width if sizes else float("inf")
    frame = figure.bbox
    ticks = {id(label) for ax in figure.axes for axis in (ax.xaxis, ax.yaxis) for label in axis.get_ticklabels(which="both")}  # drawn only inside the view
    outside = sorted({text.get_text()[:40] for text in texts if id(text) not in ticks and not _inside(text.get_window_extent(renderer), frame)} | {"legend: " + ax.get_legend().get_texts()[0].get_text()[:30] for ax in figure.axes if ax.get_legend() is not None and not _inside(ax.get_legend().get_window_extent(renderer), frame)})
    unlabelled = []
    for index, ax in enumerate(figure.axes):
        if hasattr(ax, "_colorbar") or not ax.get_visible() or not (ax.lines or ax.collections or ax.patches or ax.images):
            continue
        if not ax.get_xlabel().strip() or not ax.get_ylabel().strip():
            unlabelled.append(ax.get_title() or f"axes {index}")
    return {"width_in": round(width, 3), "smallest_text_pt": round(float(smallest), 2), "unlabelled_axes": unlabelled, "outside_the_figure": outside, "fit_for_print": bool(smallest >= SMALLEST_TEXT - 1e-9 and not unlabelled and not outside)}


def _inside(box, frame, slack: float = 2.0) -> bool:
    """Whether a text's box lies within the figure (to ``slack`` pixels)."""
    return box.x0 >= frame.x0 - slack and box.x1 <= frame.x1 + slack and box.y0 >= frame.y0 - slack and box.y1 <= frame.y1 + slack


@dataclass(frozen=True)
class ReproductionReport:
    """What a reproduction measured.

    Attributes
    ----------
    name : str
        The registry's name (``NAME.png``, ``.md``, ``.json``).
    title : str
    parameters : dict
        Everything the run used (sizes, step sizes, seeds; the choices the paper leaves open are named).
    criteria : list of dict
        ``name``, ``value`` (measured), ``kind`` (``test``, the default; ``claim`` with ``paper`` and
        ``interval``; ``reported``), ``pass`` (set from the kind: see the module's text), optionally
        ``detail``.
    figure : matplotlib Figure
    fits : list of dict
        ``case``, ``variable``, ``exponent``, ``ci``.
    notes : list of str
        Findings, choices and disagreements with the paper, in words.
    """

    name: str
    title: str
    parameters: dict
    criteria: list
    figure: object
    fits: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def __post_init__(self):
        object.__setattr__(self, "criteria", [_normalised_criterion(criterion) for criterion in self.criteria])

    @property
    def passed(self) -> bool:
        """Every test passes (claims of the paper and reported values aside: see :attr:`reproduced`)."""
        return all(criterion["pass"] for criterion in self.criteria if criterion["kind"] == "test")

    @property
    def reproduced(self) -> bool:
        """Every claim of the paper lies in its measured interval."""
        return all(criterion["pass"] for criterion in self.criteria if criterion["kind"] == "claim")


@dataclass(frozen=True)
class Reproduction:
    """A named reproduction: ``run(quick, workers) -> ReproductionReport``.

    Attributes
    ----------
    name : str
    description : str
    run : callable
    module : str
        The module that defines it (its source is hashed into the report).
    """

    name: str
    description: str
    run: object
    module: str


def register(name: str, description: str):
    """Decorator: add ``function(quick, workers)`` to the registry under ``name``."""

    def decorate(function):
        REGISTRY[name] = Reproduction(name, description, function, function.__module__)
        return function

    return decorate


def definition_version(name: str) -> str:
    """A hash of the reproduction's definition (the source of the module that defines it, helpers
    included, and this frame's) and popgrad's version: editing one paper's reproductions leaves the other
    modules' committed reports current. The numerics under them are verified by their own tests; each
    report records the numerics version it ran with (``provenance``).

    Parameters
    ----------
    name : str

    Returns
    -------
    str
    """
    import inspect
    import sys

    from .. import __version__

    digest = hashlib.sha256(__version__.encode())
    digest.update(inspect.getsource(sys.modules[REGISTRY[name].module]).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def _markdown(report: ReproductionReport, provenance: dict) -> str:
    claims = [criterion for criterion in report.criteria if criterion["kind"] == "claim"]
    missed = sum(not criterion["pass"] for criterion in claims)
    verdict = "Every test passes." if report.passed else "SOME TESTS FAIL (see below)."
    if claims:
        verdict += f" {len(claims) - missed} of {len(claims)} claims of the paper reproduced" + (f"; {missed} NOT REPRODUCED (see below)." if missed else ".")
    lines = [f"# {report.name}: {report.title}", "", f"Generated by `popgrad reproduce {report.name}{' --quick' if provenance['quick'] else ''}`; do not edit. {verdict} A test has a threshold (PASS/FAIL); a claim of the paper is reproduced when the measured 95% interval contains the paper's value; a reported value is neither.", ""]
    lines += ["## Criteria (measured)", "", "| criterion | kind | value | result |", "|---|---|---|---|"]
    for criterion in report.criteria:
        value = criterion["value"]
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        if criterion["kind"] == "claim":
            shown += f" (95% interval [{criterion['interval'][0]:.4g}, {criterion['interval'][1]:.4g}]; the paper: {criterion['paper']:.4g})"
        lines.append(f"| {criterion['name']} | {criterion['kind']} | {shown} | {result_word(criterion)} |")
    if report.fits:
        lines += ["", "## Fitted exponents (95% bootstrap intervals over trajectories)", "", "| case | variable | exponent | interval |", "|---|---|---|---|"]
        lines += [f"| {fit['case']} | {fit['variable']} | {fit['exponent']:.3f} | [{fit['ci'][0]:.3f}, {fit['ci'][1]:.3f}] |" for fit in report.fits]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report.notes]
    lines += ["", "## Parameters", "", "```json", json.dumps(report.parameters, indent=1), "```", "", "## Provenance", "", "```json", json.dumps(provenance, indent=1), "```", ""]
    return "\n".join(lines)


def run_reproduction(name: str, quick: bool = False, out="derivations/paper", workers: int | None = None) -> ReproductionReport:
    """Run a reproduction and write ``NAME.png``, ``NAME.md`` and ``NAME.json`` into ``out``.

    Parameters
    ----------
    name : str
        A key of :data:`REGISTRY`.
    quick : bool, default False
        The reduced version (the same criteria where they still apply).
    out : str or Path, default 'derivations/paper'
    workers : int, optional
        Dask workers for the reproductions that sweep.

    Returns
    -------
    ReproductionReport
    """
    from ..analysis.comparison import versions

    if name not in REGISTRY:
        raise InvalidArgument(f"no reproduction named {name!r}; known: {', '.join(sorted(REGISTRY))}", "name")
    folder = check_output_folder(Path(out), "out")
    folder.mkdir(parents=True, exist_ok=True)
    import matplotlib

    begin = time.perf_counter()
    with matplotlib.rc_context(PRINT_STYLE):
        report = REGISTRY[name].run(quick=quick, workers=workers)
        from ..sweeps.spec import numerics_version

        provenance = {"definition": definition_version(name), "quick": bool(quick), "seconds": round(time.perf_counter() - begin, 1), "numerics": numerics_version(), "versions": versions(), "figure": None}
        fit_texts(report.figure)
        provenance["figure"] = figure_check(report.figure)
        with atomic_path(folder / f"{name}.png") as temporary:
            report.figure.savefig(temporary, dpi=200, format="png")
    write_text(folder / f"{name}.md", _markdown(report, provenance))
    write_json(folder / f"{name}.json", {"name": name, "title": report.title, "parameters": report.parameters, "criteria": report.criteria, "fits": report.fits, "notes": report.notes, "passed": report.passed, "reproduced": report.reproduced, "provenance": provenance})
    return report


def stale_reproductions(folder="derivations/paper") -> list:
    """Names whose committed report is missing, was made by another definition, or is a quick run.

    Parameters
    ----------
    folder : str or Path

    Returns
    -------
    list of str
    """
    stale = []
    for name in sorted(REGISTRY):
        path = Path(folder) / f"{name}.json"
        if not path.is_file():
            stale.append(name)
            continue
        provenance = json.loads(path.read_text()).get("provenance", {})
        if provenance.get("definition") != definition_version(name) or provenance.get("quick"):
            stale.append(name)
    return stale


def sweep_records(data: dict, workers=None) -> list:
    """Run a sweep specification through the sweep engine (``popgrad sweep``: Dask, one worker per core by
    default) in a temporary store and return its records in grid order.

    Parameters
    ----------
    data : dict
        The specification (sections ``problem``, ``run``, ``grid``, ``zip``), as in a sweep file.
    workers : int, optional

    Returns
    -------
    list of dict
        ``parameters``, ``result``, ``provenance`` per cell.
    """
    from ..sweeps.executor import run_sweep
    from ..sweeps.spec import sweep_spec_from_dict
    from ..sweeps.store import open_store

    spec = sweep_spec_from_dict(data)
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(Path(folder) / "store", spec)
        run_sweep(spec, store, workers=workers)
        return store.records()
