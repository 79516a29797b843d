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
import stat
import tempfile
from pathlib import Path

from ._validation import InvalidArgument

__all__ = ["atomic_path", "LEDGER", "check_overwrite", "written_by_popgrad", "write_text", "write_json", "read_json_file", "read_toml_file", "read_model_file", "read_user_file", "read_user_bytes", "MAX_USER_FILE", "strict_json", "json_safe", "check_output_file", "check_output_folder", "INCOMPLETE", "ContentEqual", "canonical_json", "versions", "write_netcdf_arrays"]

#: marker file present in a report folder while it is being written
INCOMPLETE = "INCOMPLETE"


#: the file in each output folder that lists what popgrad wrote there (name -> size and SHA-256 as written):
#: a file listed with its content unchanged is popgrad's to replace; any other is the user's
LEDGER = ".popgrad-files.json"


def _file_mode(target: Path) -> int:
    """The permissions a written file gets: the replaced file's, or a new file's under the umask (what
    ``open`` would give; a temporary file from mkstemp is 0600, unreadable to collaborators)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _target(path) -> Path:
    """Where writing ``path`` lands: a symbolic link's target (the link stays a link)."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


@contextlib.contextmanager
def atomic_path(path, ledger: bool = True):
    """Yield a temporary path next to ``path``; on success rename it over ``path``, on failure remove it.

    A symbolic link at ``path`` is followed (its target is replaced, the link stays); the file gets the
    replaced file's permissions, or a new file's under the umask; with ``ledger`` the file is listed as
    popgrad's in its folder's :data:`LEDGER` (see :func:`check_overwrite`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as temporary:
    ...     _ = temporary.write_text("whole")
    >>> target.read_text()
    'whole'
    """
    path = _target(path)
    mode = _file_mode(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if ledger:
        _record(path)


def _digest(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _ledger(folder: Path) -> dict:
    try:
        files = json.loads((folder / LEDGER).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def _record(path: Path) -> None:
    """List ``path`` (just written) in its folder's ledger; a ledger that cannot be written is skipped
    (the file is then the user's to popgrad, which only means --force next time)."""
    files = _ledger(path.parent)
    files[path.name] = {"size": path.stat().st_size, "sha256": _digest(path)}
    try:
        with atomic_path(path.parent / LEDGER, ledger=False) as temporary:
            temporary.write_text(json.dumps({"written_by": "popgrad", "files": files}, indent=0, sort_keys=True) + "\n")
    except OSError:
        pass


def written_by_popgrad(path) -> bool:
    """Whether ``path`` is a file popgrad wrote (listed in its folder's ledger) and nobody changed since.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    bool
    """
    path = _target(path)
    entry = _ledger(path.parent).get(path.name)
    if not isinstance(entry, dict) or not path.is_file():
        return False
    try:
        return path.stat().st_size == entry.get("size") and _digest(path) == entry.get("sha256")
    except OSError:
        return False


def check_overwrite(paths, parameter: str, force: bool = False) -> None:
    """Refuse, before any work, to replace a file popgrad did not write (or that was changed since it
    wrote it) unless ``force``: the first such file among ``paths`` is named.

    Parameters
    ----------
    paths : iterable of str or Path
    parameter : str
        The option that named them (``out``, ``plot``).
    force : bool, default False

    Returns
    -------
    None
    """
    if force:
        return
    for path in map(_target, paths):  # a symbolic link is written through: its target is what is replaced
        if path.exists() and not path.is_dir() and not written_by_popgrad(path):
            raise InvalidArgument(f"{parameter}: {str(path)!r} exists and popgrad did not write it (or it was changed since); give --force to replace it", parameter)


def write_text(path, text: str, ledger: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path, ledger) as temporary:
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


def _non_finite_keys(value, where: str, found: list) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _non_finite_keys(item, f"{where}.{key}" if where else str(key), found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _non_finite_keys(item, where, found)
    elif hasattr(value, "tolist"):
        _non_finite_keys(value.tolist(), where, found)
    elif isinstance(value, float) and not math.isfinite(value) and where not in found:
        found.append(where)


def strict_json(payload, indent: int | None = 1) -> str:
    """``payload`` as strict JSON text, which every JSON parser reads (no NaN or Infinity tokens): each
    non-finite number becomes null, and an object payload then gains ``"non_finite"``, the keys (dotted
    paths, list positions left out) whose values were not finite.

    Examples
    --------
    >>> strict_json({"loss": [1.0, float("inf")], "rate": 0.5}, indent=None)
    '{"loss": [1.0, null], "rate": 0.5, "non_finite": ["loss"]}'
    """
    found: list = []
    _non_finite_keys(payload, "", found)
    safe = json_safe(payload)
    if found and isinstance(safe, dict):
        safe["non_finite"] = found
    return json.dumps(safe, indent=indent, allow_nan=False)


def write_json(path, payload, ledger: bool = True) -> Path:
    """Write ``payload`` as strict JSON (no NaN or Infinity tokens), atomically (:func:`atomic_path`)."""
    return write_text(path, json.dumps(json_safe(payload), indent=1, allow_nan=False) + "\n", ledger)


#: the largest user file popgrad reads (problem, model, specification, store files): 256 MiB
MAX_USER_FILE = 256 * 2**20

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def read_user_bytes(path, what: str, parameter: str, limit: int = MAX_USER_FILE) -> bytes:
    """The bytes of a user file, read through the one boundary every user file passes: a regular file
    (folders, FIFOs, devices and sockets are refused before opening; a FIFO is never opened), at most
    ``limit`` bytes (checked from the file's size before reading, and read with a bounded read). Anything
    else is refused as :class:`InvalidArgument` naming ``what``, the file and what is wrong."""
    path = Path(path)
    name = f"{what} {str(path)!r}"
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise InvalidArgument(f"{name} does not exist", parameter) from None
    except OSError as exc:
        raise InvalidArgument(f"{name} cannot be read ({exc.strerror or type(exc).__name__})", parameter) from None
    kind = _not_regular(info.st_mode)
    if kind:
        raise InvalidArgument(f"{name} is {kind}, not a regular file", parameter)
    if info.st_size > limit:
        raise InvalidArgument(f"{name} is {info.st_size} bytes; at most {limit} ({limit // 2**20} MiB) are read", parameter)
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, opening it must not wait for a writer
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InvalidArgument(f"{name} cannot be read ({exc.strerror or type(exc).__name__})", parameter) from None
    try:
        kind = _not_regular(os.fstat(handle).st_mode)
        if kind:
            raise InvalidArgument(f"{name} is {kind}, not a regular file", parameter)
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(handle, min(2**20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise InvalidArgument(f"{name} cannot be read ({exc.strerror or type(exc).__name__})", parameter) from None
    finally:
        os.close(handle)
    if total > limit:
        raise InvalidArgument(f"{name} is more than {limit} bytes ({limit // 2**20} MiB) long", parameter)
    return b"".join(chunks)


def read_user_file(path, what: str, parameter: str, limit: int = MAX_USER_FILE) -> str:
    """The text of a user file (:func:`read_user_bytes`), which must be UTF-8 (a leading byte-order mark
    is dropped); a bad byte is named with its offset.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> read_user_file(folder, "problem file", "problem")
    Traceback (most recent call last):
    ...
    popgrad._validation.InvalidArgument: problem file '...' is a folder, not a regular file
    """
    data = read_user_bytes(path, what, parameter, limit)
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        raise InvalidArgument(f"{what} {str(path)!r} is not UTF-8 text (byte 0x{data[offset]:02x} at offset {offset})", parameter) from None


def _check_object(data, path, what: str, parameter: str, language: str):
    if not isinstance(data, dict):
        found = "null" if data is None else {list: "a list", str: "a string", bool: "a boolean"}.get(type(data), "a number")
        raise InvalidArgument(f"{what} {str(path)!r} holds {found} at the top level; expected a {language} object", parameter)
    return data


def read_json_file(path, what: str, parameter: str, expect_object: bool = True):
    """The JSON content of ``path`` (read by :func:`read_user_file`); a missing, unreadable or invalid
    file, or (with ``expect_object``) one whose top level is not an object, is refused in one line naming
    ``what`` and the file."""
    text = read_user_file(path, what, parameter)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{what} {str(path)!r} is not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})", parameter) from None
    except RecursionError:
        raise InvalidArgument(f"{what} {str(path)!r} is nested too deeply to be read", parameter) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise InvalidArgument(f"{what} {str(path)!r} is not valid JSON ({str(exc).splitlines()[0]})", parameter) from None
    return _check_object(data, path, what, parameter, "JSON") if expect_object else data


def read_toml_file(path, what: str, parameter: str) -> dict:
    """The TOML content of ``path`` (read by :func:`read_user_file`), refused in one line when invalid."""
    import tomllib

    text = read_user_file(path, what, parameter)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"{what} {str(path)!r} is not valid TOML ({str(exc).splitlines()[0]})", parameter) from None
    except RecursionError:
        raise InvalidArgument(f"{what} {str(path)!r} is nested too deeply to be read", parameter) from None
    except ValueError as exc:
        raise InvalidArgument(f"{what} {str(path)!r} is not valid TOML ({str(exc).splitlines()[0]})", parameter) from None


def read_model_file(path, what: str, parameter: str) -> dict:
    """A model or problem file: TOML where its name ends in ``.toml``, JSON otherwise (the same structure
    either way), refused in one line naming ``what`` and the file."""
    if str(path).lower().endswith(".toml"):
        return read_toml_file(path, what, parameter)
    return read_json_file(path, what, parameter)


def _writable_folder(folder: Path, parameter: str, what: str) -> None:
    if not folder.exists():
        raise InvalidArgument(f"{parameter}: the folder {str(folder)!r} for {what} does not exist", parameter)
    if not folder.is_dir():
        raise InvalidArgument(f"{parameter}: {str(folder)!r} is not a folder", parameter)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidArgument(f"{parameter}: the folder {str(folder)!r} is not writable", parameter)


def check_output_file(path, parameter: str = "out") -> Path:
    """Refuse, before any computation, a file path that cannot be written: ``-`` (standard output, which a
    command that can print there handles before), a missing or read-only parent folder, or a path that is
    a folder (a symbolic link is checked at its target)."""
    if str(path) == "-":
        raise InvalidArgument(f"{parameter}: '-' (standard output) cannot take this output; give a file name", parameter)
    if not str(path).strip():
        raise InvalidArgument(f"{parameter}: the file name is empty; give a file name", parameter)
    path = _target(path)
    if path.is_dir():
        raise InvalidArgument(f"{parameter}: {str(path)!r} is a folder; give a file name", parameter)
    _writable_folder(path.parent if str(path.parent) else Path("."), parameter, str(path.name))
    if path.exists() and not os.access(path, os.W_OK):
        raise InvalidArgument(f"{parameter}: {str(path)!r} exists and is not writable", parameter)
    return path


def check_output_folder(path, parameter: str = "out") -> Path:
    """Refuse, before any computation, a folder that cannot be created or written (or a file in its place,
    or ``-``: a folder of files cannot go to standard output)."""
    if str(path) == "-":
        raise InvalidArgument(f"{parameter}: '-' (standard output) cannot take a report folder; give a folder", parameter)
    if not str(path).strip():
        raise InvalidArgument(f"{parameter}: the folder name is empty; give a folder", parameter)
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
