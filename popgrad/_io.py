"""Output files that are either whole or absent, and output paths checked before any work starts.

Every file popgrad writes goes through :func:`atomic_path`: the content is written to a temporary file
in the same folder and renamed over the target only once complete, so an interrupt, a crash or a full
disk leaves the previous file (or nothing), never a truncated one that opens as if whole.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path

from ._validation import InvalidArgument

__all__ = ["atomic_path", "write_text", "write_json", "read_json_file", "json_safe", "check_output_file", "check_output_folder", "INCOMPLETE", "ContentEqual", "canonical_json", "versions", "write_netcdf_arrays"]

#: marker file present in a report folder while it is being written
INCOMPLETE = "INCOMPLETE"


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; on success rename it over ``path``, on failure remove it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as temporary:
    ...     _ = temporary.write_text("whole")
    >>> target.read_text()
    'whole'
    """
    path = Path(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def json_safe(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN or Infinity) and numpy
    scalars and arrays turned into Python numbers and lists."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, payload) -> Path:
    """Write ``payload`` as strict JSON (no NaN or Infinity tokens), atomically."""
    return write_text(path, json.dumps(json_safe(payload), indent=1, allow_nan=False) + "\n")


def read_json_file(path, what: str, parameter: str):
    """The JSON content of ``path``; a missing file or invalid JSON is refused in one line naming ``what``."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InvalidArgument(f"{what} {str(path)!r} does not exist", parameter) from None
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{what} {str(path)!r} is not valid JSON ({exc.msg}, line {exc.lineno})", parameter) from None


def _writable_folder(folder: Path, parameter: str, what: str) -> None:
    if not folder.exists():
        raise InvalidArgument(f"{parameter}: the folder {str(folder)!r} for {what} does not exist", parameter)
    if not folder.is_dir():
        raise InvalidArgument(f"{parameter}: {str(folder)!r} is not a folder", parameter)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidArgument(f"{parameter}: the folder {str(folder)!r} is not writable", parameter)


def check_output_file(path, parameter: str = "out") -> Path:
    """Refuse, before any computation, a file path that cannot be written: a missing or read-only parent
    folder, or a path that is a folder."""
    path = Path(path)
    if path.is_dir():
        raise InvalidArgument(f"{parameter}: {str(path)!r} is a folder; give a file name", parameter)
    _writable_folder(path.parent if str(path.parent) else Path("."), parameter, str(path.name))
    if path.exists() and not os.access(path, os.W_OK):
        raise InvalidArgument(f"{parameter}: {str(path)!r} exists and is not writable", parameter)
    return path


def check_output_folder(path, parameter: str = "out") -> Path:
    """Refuse, before any computation, a folder that cannot be created or written (or a file in its place)."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise InvalidArgument(f"{parameter}: {str(path)!r} is a file; give a folder", parameter)
        _writable_folder(path, parameter, "the report")
    else:
        _writable_folder(path.parent if str(path.parent) else Path("."), parameter, str(path.name))
    return path


def canonical_json(value) -> str:
    """The canonical JSON text of a value (sorted keys, no spaces, numpy turned into lists): what content
    equality and hashing of specifications compare.

    Examples
    --------
    >>> canonical_json({"b": 1, "a": [1.5, None]})
    '{"a":[1.5,null],"b":1}'
    """
    return json.dumps(json_safe(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


class ContentEqual:
    """Equality and hash by content: two specifications are equal when their ``to_dict()`` are, as
    canonical JSON (:func:`canonical_json`), whatever arrays they hold. The text is computed once per
    object (specifications are immutable).

    Examples
    --------
    >>> import popgrad
    >>> problem = popgrad.orthonormal_problem("relu", 3, 1.0, seed=0)
    >>> popgrad.general_model(problem) == popgrad.general_model(problem), len({popgrad.general_model(problem), popgrad.general_model(problem)})
    (True, 1)
    """

    __slots__ = ()

    def _content(self) -> str:
        cached = self.__dict__.get("_canonical_json")
        if cached is None:
            cached = canonical_json({"type": type(self).__name__, "content": self.to_dict()})
            object.__setattr__(self, "_canonical_json", cached)
        return cached

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self is other or self._content() == other._content()

    def __hash__(self) -> int:
        return hash(self._content())


def versions() -> dict:
    """Versions of popgrad and the numerical stack (from the installed packages' metadata, importing none
    of them), recorded with every saved result.

    Returns
    -------
    dict of str to str
    """
    import platform
    from importlib import metadata

    from . import __version__

    out = {"popgrad": __version__}
    for name in ("numpy", "scipy", "sympy", "mpmath", "numba"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover - every one is a dependency
            out[name] = "not installed"
    return out | {"python": platform.python_version()}


def write_netcdf_arrays(path, dimensions: dict, variables: list, attributes: dict) -> None:
    """The one NetCDF writer: a NetCDF3 file (64-bit offsets, written by scipy; xarray reads it back as a
    Dataset) with every variable as float64 (step counts exact below 2^53, where NetCDF3 has no int64).

    Parameters
    ----------
    path : str or Path
    dimensions : dict
        name -> size.
    variables : list of (name, dims, values, long_name, units)
    attributes : dict
        Global attributes (strings).

    Returns
    -------
    None
    """
    import numpy as np
    from scipy.io import netcdf_file

    with netcdf_file(path, "w", version=2) as file:
        for name, value in attributes.items():
            setattr(file, name, value)
        for name, size in dimensions.items():
            file.createDimension(name, int(size))
        for name, dims, values, long_name, units in variables:
            variable = file.createVariable(name, "d", dims)
            variable[...] = np.asarray(values, dtype=np.float64)
            variable.long_name = long_name
            variable.units = units
