"""Checks at the API boundary: each raises :class:`InvalidArgument` (a ValueError; a TypeError too for
wrong types) naming the parameter and its range. The command line reports exactly these as usage errors
(one line, exit status 2); any other exception is a bug and is not disguised."""

from __future__ import annotations

import math
import numbers
import os

import numpy as np

MAX_ORDER = 2000


class InvalidArgument(ValueError):
    """Bad input at the API boundary; ``parameter`` names the offending argument when there is one."""

    def __init__(self, message: str, parameter: str | None = None):
        super().__init__(message)
        self.parameter = parameter


class InvalidArgumentType(InvalidArgument, TypeError):
    """An argument of the wrong type."""


def check_integer(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentType(f"{name} must be an integer, got {type(value).__name__}", name)
    value = int(value)
    if value < low or (high is not None and value > high):
        upper = "inf)" if high is None else f"{high}]"
        raise InvalidArgument(f"{name} must lie in [{low}, {upper}, got {value}", name)
    return value


def physical_memory() -> int:
    """Bytes of physical memory of this machine (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _cgroup_limit() -> int:
    """The memory limit of this process's control group (v2 ``memory.max``, v1 ``memory.limit_in_bytes``),
    0 where there is none."""
    candidates = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
    try:
        with open("/proc/self/cgroup") as file:
            for line in file:
                parts = line.strip().split(":", 2)
                if len(parts) == 3 and parts[1] in ("", "memory") and parts[2] not in ("", "/"):
                    candidates.insert(0, f"/sys/fs/cgroup{parts[2]}/memory.max" if parts[1] == "" else f"/sys/fs/cgroup/memory{parts[2]}/memory.limit_in_bytes")
    except OSError:
        pass
    for path in candidates:
        try:
            with open(path) as file:
                text = file.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # 'max', or v1's "no limit" (close to 2^63)
            return int(text)
    return 0


def _rlimit() -> int:
    """The process's address-space or data-segment limit (``ulimit -v`` / ``-d``), 0 where unlimited."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 0
    limits = []
    for name in ("RLIMIT_AS", "RLIMIT_DATA"):
        if hasattr(resource, name):
            soft = resource.getrlimit(getattr(resource, name))[0]
            if soft != resource.RLIM_INFINITY and soft > 0:
                limits.append(soft)
    return min(limits, default=0)


def available_memory() -> tuple:
    """What this process can get: ``(bytes, where)``, the smallest of the machine's physical memory, its
    control group's limit and its ``ulimit``, and which of them it is (``(0, '')`` where none is known)."""
    limits = [(value, where) for value, where in ((physical_memory(), "this machine has"), (_cgroup_limit(), "this process's control group allows"), (_rlimit(), "this process's ulimit allows")) if value]
    return min(limits, default=(0, ""))


def _size(nbytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} bytes"


def check_memory(nbytes: float, what: str, parameter: str, hint: str = "") -> None:
    """Refuse, before anything is allocated, a request whose arrays need more than 80% of the memory this
    process can get (:func:`available_memory`: RAM, control group, ulimit): the message says what it would
    need and names ``parameter`` to reduce."""
    total, where = available_memory()
    if total and nbytes > 0.8 * total:
        raise InvalidArgument(f"{parameter} too large: {what} would need {_size(nbytes)} of memory; {where} {_size(total)}{hint}", parameter)


def check_order(order) -> int:
    return check_integer(order, "order", 0, MAX_ORDER)


def check_real(value, name: str, low: float | None = None, high: float | None = None, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentType(f"{name} must be a real number, got {type(value).__name__}", name)
    value = float(value)
    if not math.isfinite(value):
        raise InvalidArgument(f"{name} must be finite, got {value}", name)
    bracket = "(" if low_open else "["
    interval = f"{bracket}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{')' if high is None else ']'}"
    if low is not None and (value < low or (low_open and value == low)):
        raise InvalidArgument(f"{name} must lie in {interval}, got {value}", name)
    if high is not None and value > high:
        raise InvalidArgument(f"{name} must lie in {interval}, got {value}", name)
    return value


def check_scale(scale, name: str = "scale") -> float:
    return check_real(scale, name, 0.0, None, low_open=True)


def _check_real_kind(value, name: str) -> None:
    """Refuse what numpy would turn into real numbers by conversion, not by value: strings ('0.5'), bytes,
    booleans and complex numbers (whose imaginary part would be dropped)."""
    try:
        raw = np.asarray(value) if not isinstance(value, np.ndarray) else value
    except (TypeError, ValueError):
        return  # ragged or otherwise not an array: the caller's conversion says so
    kind = raw.dtype.kind
    if kind in "iuf":
        return
    if kind == "O" and all(isinstance(item, numbers.Real) and not isinstance(item, (bool, np.bool_)) for item in raw.ravel()):
        return
    found = {"U": "a string", "S": "bytes", "b": "a boolean", "c": "a complex number"}.get(kind, "a value that is not a real number")
    raise InvalidArgumentType(f"{name} must be a real number or an array of real numbers, got {found}{'' if raw.ndim == 0 else ' among its entries'}", name)


def check_unit_interval(value, name: str) -> np.ndarray:
    """The one check of values that must lie in [-1, 1] (overlaps m, correlations rho): float64 array."""
    _check_real_kind(value, name)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgumentType(f"{name} must be a real number or an array of real numbers", name) from None
    # what the caller's computation allocates per value (a broadcast view of 1e12 entries costs nothing until then)
    check_memory(64.0 * array.size, f"{array.size} values of {name}", name)
    if not np.all(np.isfinite(array)) or np.any(np.abs(array) > 1.0):
        raise InvalidArgument(f"{name} must lie in [-1, 1]", name)
    return array


def check_choice(value, name: str, choices) -> str:
    """A string among ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgument(f"{name} must be one of {', '.join(choices)}, got {value!r}", name)
    return value


def check_choices(values, name: str, choices) -> tuple:
    """A collection of strings among ``choices`` (a single string is refused, not read letter by letter)."""
    if isinstance(values, str):
        raise InvalidArgumentType(f"{name} must be a list of names (e.g. [{values!r}]), got the string {values!r}", name)
    values = tuple(values)
    unknown = [v for v in values if v not in choices]
    if unknown:
        raise InvalidArgument(f"{name}: unknown {unknown} (known: {', '.join(choices)})", name)
    return values


#: largest magnitude accepted for a model's parameters (lam, c, c_hat, xi, W, G): h and Phi multiply up to
#: four of them, which stays inside float64 (1e308) from here; beyond it they would overflow to inf/nan
MAX_MAGNITUDE = 1e50


def check_array(value, name: str, shape: tuple | None = None, ndim: int | None = None, bound: float | None = None) -> np.ndarray:
    _check_real_kind(value, name)
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgumentType(f"{name} must be an array of real numbers", name) from None
    if ndim is not None and array.ndim != ndim:
        raise InvalidArgument(f"{name} must be {ndim}-dimensional, got shape {array.shape}", name)
    if shape is not None and array.shape != shape:
        raise InvalidArgument(f"{name} must have shape {shape}, got {array.shape}", name)
    if not np.all(np.isfinite(array)):
        raise InvalidArgument(f"{name} must be finite", name)
    if bound is not None and array.size and np.max(np.abs(array)) > bound:
        raise InvalidArgument(f"{name} must have entries of magnitude at most {bound:g} (larger ones overflow float64 in h and Phi), got {np.max(np.abs(array)):g}", name)
    return array
