"""Compile-time specialised numba kernels and the version stamp that keeps their cache honest.

Hot kernels are built by factories: ``factory(code, ...)`` returns an ``njit(cache=True)`` closure in
which the activation family (and other switches) are compile-time constants, so the per-neuron loop
carries no run-time branch. numba keys the cache of a closure on its code and the values of its closure
variables; every factory closes over :data:`SOURCE_VERSION`, a hash of the package's sources, so editing
a helper in another file recompiles the kernels that inline it instead of running stale machine code.
Captured values must be plain constants (ints, floats, strings): a captured numba function would be
pickled afresh in each process and never hit the cache.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

__all__ = ["SOURCE_VERSION", "specialised"]


def _source_version() -> str:
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


#: hash of every source file of the package
SOURCE_VERSION = _source_version()


def specialised(factory):
    """Memoise a kernel factory (bounded, safe to call from several threads)."""
    return lru_cache(maxsize=128)(factory)
