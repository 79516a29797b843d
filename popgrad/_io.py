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

__all__ = ["atomic_path", "write_text", "write_json", "read_json_file", "json_safe", "check_output_file", "check_output_folder", "INCOMPLETE"]

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
