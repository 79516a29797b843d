"""Sweep specifications: a problem, what to run per cell, and a grid over any of their keys.

A specification is a TOML file (or a JSON file of the same structure) with the sections ``[problem]``,
``[run]``, ``[grid]`` (axes varied as a product: each key a list) and optionally ``[zip]`` (axes varied
together: lists of one length, forming one axis). Any key of ``[problem]`` or ``[run]`` may instead be a
list under ``[grid]`` or ``[zip]``. Every cell is the flat dictionary of all keys with the grid's values
substituted; :func:`cell_key` hashes it (with the version of the numerics) and :func:`cell_seed` derives
its seed from the sweep's seed and its parameters, so a cell gives the same numbers whichever worker runs
it and in whatever order.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

from .._validation import InvalidArgument

__all__ = ["SweepSpec", "load_sweep_spec", "sweep_spec_from_dict", "cell_key", "cell_seed", "numerics_version"]

GENERATORS = ("orthonormal", "random", "glm", "claim2", "file")
KINDS = ("simulate", "compare", "hitting_time")
#: keys of [problem], with their defaults (None: required or optional without a default)
PROBLEM_KEYS = {
    "generator": "orthonormal",
    "path": None,
    "activation": "relu",
    "k": 8,
    "xi": 1.0,
    "d": None,
    "problem_seed": 0,
    "convention": "normalized",
    # the common convention's prefactor rho (None: k / (k + xi^2)); in a cell only where given, so that the
    # cells (their keys and seeds) of specifications without it are what they were
    "prefactor": None,
    # the student's initial c_hat (the first column of C_hat) times this scale (None: unscaled, |c_hat_0| = 1
    # for c on the sphere); in a cell only where given, like prefactor; 0 starts c_hat at zero
    "c_hat_scale": None,
    "c_distribution": "quantized",
    # the general model's switches (MATH.md §4b); any of them set runs the general model
    "rank": None,
    "alpha": None,
    "train_c_hat": None,
    "c_hat_lr": None,
    "unconstrained": None,
    "output_scale": None,
    "student": None,
}
GENERAL_KEYS = ("rank", "alpha", "train_c_hat", "c_hat_lr", "unconstrained", "output_scale", "student")
#: keys of [problem] that a cell holds only where the specification gives them
OPTIONAL_KEYS = ("prefactor", "c_hat_scale")
#: keys of [run], with their defaults
RUN_KEYS = {
    "kind": "hitting_time",
    "method": "chain",
    "eps": 0.1,
    "delta": None,
    "eta": None,
    "horizon": None,
    "steps": None,
    "checkpoints": 21,
    "trajectories": 32,
    "seed": 0,
    "noise_samples": 200_000,
    "stop_when_hit": True,
    "spacing": "linear",
    "record_trajectories": False,
}
SPACINGS = ("linear", "log")
#: the most steps a cell may run (popgrad.dynamics.trajectories.MAX_STEPS)
MAX_STEPS = 10**12


def numerics_version() -> str:
    """popgrad's version and a hash of the sources that compute numbers (numerics, gaussian, dynamics,
    models, reference): part of every cell's key, so a changed computation never reuses an old result.

    Returns
    -------
    str
    """
    from .. import __version__

    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for folder in ("numerics", "gaussian", "dynamics", "models", "reference"):
        for path in sorted((package / folder).rglob("*.py")):
            digest.update(path.relative_to(package).as_posix().encode())
            digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep.

    Attributes
    ----------
    base : dict
        Every key of [problem] and [run] with its value (defaults filled in), the grid's keys excluded.
    grid : dict
        Product axes: key -> list of values.
    zipped : dict
        Zipped axes (one axis): key -> list of values, all of one length.
    source : dict
        The specification as written (sections problem, run, grid, zip).
    """

    base: dict
    grid: dict
    zipped: dict
    source: dict

    @property
    def axes(self) -> list:
        """The keys that vary, product axes first, then the zipped ones."""
        return list(self.grid) + list(self.zipped)

    def cells(self) -> list:
        """Every cell's parameters (the flat dictionary), in grid order."""
        product = list(itertools.product(*self.grid.values())) if self.grid else [()]
        zipped = list(zip(*self.zipped.values())) if self.zipped else [()]
        cells = []
        for values in product:
            for together in zipped:
                cell = dict(self.base)
                cell.update(zip(self.grid, values))
                cell.update(zip(self.zipped, together))
                cells.append(_checked_cell(cell))
        return cells

    def to_dict(self) -> dict:
        return self.source

    def digest(self) -> str:
        """A hash of the specification as validated (what a store is made by)."""
        return hashlib.sha256(json.dumps({"base": self.base, "grid": self.grid, "zip": self.zipped}, sort_keys=True).encode()).hexdigest()[:16]


def cell_key(cell: dict, version: str | None = None) -> str:
    """The content hash of a cell: its full parameters, the numerics version and, for a problem file, the
    file's content.

    Parameters
    ----------
    cell : dict
    version : str, optional
        The numerics version (default: today's, :func:`numerics_version`).

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    content = {"parameters": cell, "numerics": numerics_version() if version is None else version}
    if cell.get("generator") == "file" and isinstance(cell.get("path"), str) and Path(cell["path"]).exists():
        content["problem_file"] = _file_hash(cell["path"])  # an edited file is a new cell
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


_FILE_HASHES: dict = {}


def _file_hash(path: str) -> str:
    """The SHA-256 of a model file, read once per (path, size, modification time): a store's cells are
    checked against it one by one."""
    import os

    from .._io import read_user_bytes

    info = os.stat(path)
    signature = (path, info.st_size, info.st_mtime_ns)
    if signature not in _FILE_HASHES:
        _FILE_HASHES[signature] = hashlib.sha256(read_user_bytes(path, "model file", "path")).hexdigest()
    return _FILE_HASHES[signature]


def cell_seed(cell: dict) -> int:
    """The cell's seed, from the sweep's ``seed`` and the cell's other parameters.

    Parameters
    ----------
    cell : dict

    Returns
    -------
    int
        In [0, 2^63).
    """
    others = {key: value for key, value in cell.items() if key != "seed"}
    text = json.dumps({"seed": cell["seed"], "cell": others}, sort_keys=True)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _checked_cell(cell: dict) -> dict:
    """Range checks that need the whole cell (the rest happens when the cell runs, before any work)."""
    if cell["kind"] not in KINDS:
        raise InvalidArgument(f"kind must be one of {', '.join(KINDS)}, got {cell['kind']!r}", "kind")
    if cell["generator"] not in GENERATORS:
        raise InvalidArgument(f"generator must be one of {', '.join(GENERATORS)}, got {cell['generator']!r}", "generator")
    if cell["generator"] == "file" and not cell.get("path"):
        raise InvalidArgument("generator 'file' needs path = \"problem.json\"", "path")
    if cell["generator"] == "file" and not isinstance(cell["path"], str):
        raise InvalidArgument(f"path must be a file name, got {cell['path']!r}", "path")
    if cell["generator"] != "file" and cell.get("path") is not None:
        raise InvalidArgument(f"path is read with generator 'file' only, not with {cell['generator']!r}", "path")
    if cell["generator"] == "claim2" and cell["c_distribution"] != "quantized":
        raise InvalidArgument(f"c_distribution = {cell['c_distribution']!r} has no effect with generator 'claim2', which fixes c (c_i = ±1/sqrt(k))", "c_distribution")
    if cell["d"] is None:
        raise InvalidArgument("d (the input dimension) is required, in [problem], [run] or [grid]", "d")
    if (cell["delta"] is None) == (cell["eta"] is None):
        raise InvalidArgument("give the step size as exactly one of delta (eta = delta / d) and eta", "delta")
    if (cell["horizon"] is None) == (cell["steps"] is None):
        raise InvalidArgument("give the length as exactly one of horizon (steps = horizon * d) and steps", "horizon")
    if cell["spacing"] not in SPACINGS:
        raise InvalidArgument(f"spacing must be one of {', '.join(SPACINGS)}, got {cell['spacing']!r}", "spacing")
    for key in ("record_trajectories", "stop_when_hit"):
        if not isinstance(cell[key], bool):
            raise InvalidArgument(f"{key} must be true or false, got {cell[key]!r}", key)
    for key in ("d", "k", "trajectories", "checkpoints"):
        if not isinstance(cell[key], int) or isinstance(cell[key], bool) or cell[key] < 1:
            raise InvalidArgument(f"{key} must be a positive integer, got {cell[key]!r}", key)
    for key in ("seed", "problem_seed", "noise_samples"):
        if not isinstance(cell[key], int) or isinstance(cell[key], bool) or not (key != "noise_samples" or cell[key] >= 1) or not 0 <= cell[key] < 2**63:
            raise InvalidArgument(f"{key} must be {'a positive' if key == 'noise_samples' else 'a non-negative'} integer below 2^63, got {cell[key]!r}", key)
    if not isinstance(cell["method"], str):
        raise InvalidArgument(f"method must be a name (chain, fast or full), got {cell['method']!r}", "method")
    if cell.get("prefactor") is not None and cell["generator"] != "file" and cell["convention"] != "common":
        raise InvalidArgument(f"prefactor is the common convention's (v_i = rho (w_i + xi c_i u)); convention {cell['convention']!r} takes none", "prefactor")
    if cell.get("c_hat_scale") is not None:
        scale = cell["c_hat_scale"]
        if not _is_number(scale) or not math.isfinite(scale) or not 0 <= scale <= 1e6:
            raise InvalidArgument(f"c_hat_scale must be a number in [0, 1e6] (the initial c_hat's scale), got {scale!r}", "c_hat_scale")
        if cell["generator"] == "file":
            raise InvalidArgument("c_hat_scale next to generator 'file': the model file sets c_hat", "c_hat_scale")
    for key in ("xi", "eps", "delta", "eta", "horizon", "prefactor"):
        if cell.get(key) is not None and (not _is_number(cell[key]) or not math.isfinite(cell[key]) or cell[key] <= 0):
            raise InvalidArgument(f"{key} must be a positive number, got {cell[key]!r}", key)
    if cell["eps"] > 1:
        raise InvalidArgument(f"eps must lie in (0, 1] (the level 1 - eps that m^2 must reach), got {cell['eps']!r}", "eps")
    steps = cell["steps"]
    if steps is not None and (not _is_number(steps) or not math.isfinite(steps) or steps != int(steps) or not 1 <= steps <= MAX_STEPS):
        raise InvalidArgument(f"steps must be an integer in [1, {MAX_STEPS:.0e}], got {steps!r}", "steps")
    if cell["horizon"] is not None and not 0.5 <= cell["horizon"] * cell["d"] < MAX_STEPS + 0.5:
        raise InvalidArgument(f"horizon = {cell['horizon']:g} makes horizon * d = {cell['horizon'] * cell['d']:.6g} steps; they must lie in [1, {MAX_STEPS:.0e}]", "horizon")
    return cell


def sweep_spec_from_dict(data: dict) -> SweepSpec:
    """Validate a specification given as a dictionary (the parsed TOML or JSON).

    Parameters
    ----------
    data : dict
        Sections ``problem``, ``run``, ``grid`` and optionally ``zip``.

    Returns
    -------
    SweepSpec

    Examples
    --------
    >>> spec = sweep_spec_from_dict({"problem": {"activation": "relu", "k": 4}, "run": {"delta": 0.05, "horizon": 50}, "grid": {"d": [100, 200]}})
    >>> [cell["d"] for cell in spec.cells()], spec.axes
    ([100, 200], ['d'])
    """
    if not isinstance(data, dict):
        raise InvalidArgument("a sweep specification must be a table (TOML) or object (JSON)", "spec")
    unknown_sections = set(data) - {"problem", "run", "grid", "zip"}
    if unknown_sections:
        raise InvalidArgument(f"unknown sections {sorted(unknown_sections)} (allowed: problem, run, grid, zip)", "spec")
    sections = {name: data.get(name, {}) for name in ("problem", "run", "grid", "zip")}
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise InvalidArgument(f"[{name}] must be a table", name)
    known = {**PROBLEM_KEYS, **RUN_KEYS}
    for name, allowed in (("problem", PROBLEM_KEYS), ("run", RUN_KEYS)):
        unknown = set(sections[name]) - set(known)
        if unknown:
            raise InvalidArgument(f"[{name}]: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})", name)
    for name in ("grid", "zip"):
        unknown = set(sections[name]) - set(known)
        if unknown:
            raise InvalidArgument(f"[{name}]: unknown axis names {sorted(unknown)} (an axis must be a key of [problem] or [run]: {sorted(known)})", name)
        for key, values in sections[name].items():
            if not isinstance(values, list) or not values:
                raise InvalidArgument(f"[{name}] {key} must be a non-empty list of values", key)
            if name == "grid" and len(values) != len(set(json.dumps(v, sort_keys=True) for v in values)):
                raise InvalidArgument(f"[{name}] {key} lists a value twice", key)
    twice = (set(sections["grid"]) & set(sections["zip"])) | ((set(sections["grid"]) | set(sections["zip"])) & (set(sections["problem"]) | set(sections["run"])))
    if twice:
        raise InvalidArgument(f"{sorted(twice)} set in more than one place (a key is either fixed in [problem]/[run] or an axis)", sorted(twice)[0])
    if len({len(values) for values in sections["zip"].values()}) > 1:
        raise InvalidArgument(f"[zip] lists must have one length, got {({key: len(values) for key, values in sections['zip'].items()})}", "zip")
    together = [json.dumps(row, sort_keys=True) for row in zip(*sections["zip"].values())]
    if len(together) != len(set(together)):
        raise InvalidArgument("[zip] lists the same combination of values twice (its lists form one axis; a value may repeat in one list, not a whole row)", "zip")
    base = {key: default for key, default in known.items() if key not in sections["grid"] and key not in sections["zip"] and key not in OPTIONAL_KEYS}
    base.update(sections["problem"])
    base.update(sections["run"])
    spec = SweepSpec(base, dict(sections["grid"]), dict(sections["zip"]), {name: section for name, section in sections.items() if section or name != "zip"})
    count = math.prod(len(values) for values in spec.grid.values()) * (len(next(iter(spec.zipped.values()))) if spec.zipped else 1)
    if count > 1_000_000:
        raise InvalidArgument(f"the grid has {count} cells; at most 1 000 000", "grid")
    spec.cells()  # every cell checked now, before any work
    return spec


def _check_model_files(spec: SweepSpec) -> None:
    """Read every model file the sweep names (generator 'file') now, before any store is made: one that
    cannot be read, or is not a model, is refused naming it."""
    from .._io import read_json_file
    from ..dynamics.protocol import model_from_dict

    paths = {cell["path"] for cell in spec.cells() if cell["generator"] == "file"}
    for path in sorted(paths):
        try:
            model_from_dict(read_json_file(path, "model file", "path"))
        except InvalidArgument as exc:
            message = str(exc).splitlines()[0]
            raise InvalidArgument(message if path in message else f"model file {path!r}: {message}", "path") from None


def load_sweep_spec(path) -> SweepSpec:
    """Read a sweep specification from a TOML file (``.toml``) or a JSON file (anything else).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    SweepSpec
    """
    from .._io import read_json_file, read_toml_file

    path = Path(path)
    if path.suffix.lower() == ".toml":
        data = read_toml_file(path, "sweep specification", "spec")
    else:
        data = read_json_file(path, "sweep specification", "spec")
    problem = data.get("problem")
    if isinstance(problem, dict) and problem.get("generator") == "file" and isinstance(problem.get("path"), str):
        # a problem file is read relative to the specification's folder
        problem["path"] = str((path.parent / problem["path"]).resolve())
    try:
        spec = sweep_spec_from_dict(data)
        _check_model_files(spec)
        return spec
    except InvalidArgument as exc:
        raise InvalidArgument(f"sweep specification {str(path)!r}: {str(exc).splitlines()[0]}", exc.parameter) from None
