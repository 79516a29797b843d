"""Compile-time specialised numba kernels and the version stamp that keeps their cache honest.

Hot kernels are built by factories: ``factory(code, ...)`` returns an ``njit(cache=True)`` closure in
which the activation family (and other switches) are compile-time constants, so the per-neuron loop
carries no run-time branch. numba keys the cache of a closure on its code and the values of its closure
variables; every factory closes over :data:`SOURCE_VERSION`, a hash of the sources of the subpackages that
hold compiled code (numerics, gaussian, dynamics, models, reference), so editing a helper in another file
recompiles the kernels that inline it instead of running stale machine code, while editing the layers
above (analysis, sweeps, reproductions, the command line) leaves the cache warm.
Captured values must be plain constants (ints, floats, strings): a captured numba function would be
pickled afresh in each process and never hit the cache.
"""

from __future__ import annotations

import hashlib
import threading
from functools import lru_cache
from pathlib import Path

__all__ = ["SOURCE_VERSION", "specialised", "compile_ahead"]


#: the subpackages whose functions compiled kernels may inline (nothing above them in the layer order is jitted)
COMPILED_SUBPACKAGES = ("numerics", "gaussian", "dynamics", "models", "reference")


def _source_version() -> str:
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(path for folder in COMPILED_SUBPACKAGES for path in (package / folder).rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


#: hash of every source file of the package
SOURCE_VERSION = _source_version()


def specialised(factory):
    """Memoise a kernel factory (bounded, safe to call from several threads)."""
    return lru_cache(maxsize=128)(factory)


def compile_ahead(*calls) -> threading.Thread:
    """Run ``calls`` (callables without arguments that compile what a later stage needs, such as a
    one-step simulation) one after another in a daemon thread, and return the thread.

    numba's compiler lock serialises compilations and the kernels release the GIL, so what this thread
    compiles overlaps the computations that run meanwhile. Errors are dropped here: the real call raises
    them where the user sees them.

    Examples
    --------
    >>> import numba
    >>> twice = numba.njit(lambda x: 2 * x)
    >>> compile_ahead(lambda: twice(1.0)).join()
    >>> len(twice.signatures)
    1
    """

    def run() -> None:
        for call in calls:
            try:
                call()
            except Exception:  # noqa: BLE001 - the real call reports it
                pass

    thread = threading.Thread(target=run, name="popgrad-compile-ahead", daemon=True)
    thread.start()
    return thread
