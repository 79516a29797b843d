"""The result store of a sweep: one JSON file per finished cell, named by the cell's content hash, plus a
manifest.

Why files and not one Zarr array: a cell's result is small and of varying shape (a table of checkpoints,
hitting steps per trajectory, verdicts), cells finish in any order on any worker, and each must be durable
the moment it finishes. One file per cell, written to a temporary name and renamed into place
(:func:`popgrad._io.write_json`), is atomic on POSIX file systems: a killed sweep leaves whole cells and at
most stray ``.partial`` files, which are never read as results. Re-running skips every cell whose file
exists; a changed parameter (or a changed numerics version) has another hash, so it is a new cell, never a
silent reuse. The manifest records the specification that made the store; a store made by another
specification is refused, with the keys that differ.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from .._io import canonical_json, check_output_folder, read_json_file, write_json
from .._validation import InvalidArgument
from .spec import SweepSpec, cell_key, numerics_version

__all__ = ["SweepStore", "open_store", "remove_empty_store"]

MANIFEST = "manifest.json"
CELLS = "cells"


def _checksum(record: dict) -> str:
    """The hash of a cell's content as stored (strict JSON: what reads back), its checksum left out."""
    return hashlib.sha256(canonical_json({name: value for name, value in record.items() if name != "checksum"}).encode()).hexdigest()


class SweepStore:
    """A store folder: ``manifest.json`` and ``cells/<key>.json``.

    Parameters
    ----------
    folder : str or Path
        The store's folder (must exist with a manifest; see :func:`open_store`).
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        manifest = self.folder / MANIFEST
        if not manifest.exists() and not manifest.is_symlink():  # anything else there is read, and refused, below
            raise InvalidArgument(f"{str(self.folder)!r} is not a sweep store (no {MANIFEST})", "store")
        self.manifest = read_json_file(manifest, "sweep store manifest", "store")
        if not isinstance(self.manifest.get("spec"), dict) or not isinstance(self.manifest.get("digest"), str):
            raise InvalidArgument(f"sweep store manifest {str(manifest)!r} is not a manifest popgrad wrote (no spec or digest)", "store")

    @property
    def cells_folder(self) -> Path:
        return self.folder / CELLS

    def path(self, key: str) -> Path:
        return self.cells_folder / f"{key}.json"

    def read_cell(self, key: str) -> dict | None:
        """The stored cell ``key``, or None when its file is missing or is not a whole cell popgrad wrote
        (not a regular file, not JSON, not an object with its key, parameters, result and provenance), when
        its parameters do not hash to ``key`` (:func:`~popgrad.sweeps.spec.cell_key`, under the numerics
        version it records) or when its content does not match its checksum: such a cell is computed again,
        never counted."""
        try:
            record = read_json_file(self.path(key), "sweep cell", "store")
        except InvalidArgument:
            return None
        if record.get("key") != key or not all(isinstance(record.get(name), dict) for name in ("parameters", "result", "provenance")):
            return None
        numerics = record.get("numerics")
        try:
            if cell_key(record["parameters"], numerics if isinstance(numerics, str) else None) != key:
                return None
        except (InvalidArgument, TypeError, ValueError):
            return None
        if "checksum" in record and record["checksum"] != _checksum(record):
            return None
        return record

    def finished(self) -> set:
        """Keys of the cells whose results are stored (whole, readable cells only: temporary files and
        corrupt cells are skipped, and so computed again)."""
        return {path.stem for path in self.cells_folder.glob("*.json") if len(path.stem) == 64 and self.read_cell(path.stem) is not None}

    def write(self, key: str, cell: dict, outcome: dict) -> bool:
        """Store a finished cell once: False (and nothing written) if it is already there; a corrupt cell
        file in its place is replaced."""
        target = self.path(key)
        if self.read_cell(key) is not None:
            return False
        if target.is_dir():
            raise InvalidArgument(f"sweep cell {str(target)!r} is a folder; remove it", "store")
        record = {"key": key, "parameters": cell, "result": outcome["result"], "provenance": outcome["provenance"] | {"stored": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, "numerics": numerics_version()}
        write_json(target, record | {"checksum": _checksum(record)}, ledger=False)  # the store is checked by its manifest
        return True

    def records(self) -> list:
        """The stored cells of the specification under today's numerics (``key``, ``parameters``,
        ``result``, ``provenance``), in grid order; cells computed by other numerics are left aside."""
        keys = [cell_key(cell) for cell in self.spec().cells()]
        return [record for record in (self.read_cell(key) for key in keys) if record is not None]

    def spec(self) -> SweepSpec:
        from .spec import sweep_spec_from_dict

        return sweep_spec_from_dict(self.manifest["spec"])


def open_store(folder, spec: SweepSpec, resume: bool = False) -> SweepStore:
    """Create the store for ``spec`` in ``folder``, or reopen it when it was made by the same specification.

    Parameters
    ----------
    folder : str or Path
    spec : SweepSpec
    resume : bool, default False
        Require an existing store (``--resume``).

    Returns
    -------
    SweepStore

    Raises
    ------
    InvalidArgument
        A folder that is not a store, a store made by another specification (the keys that differ are
        named), or with ``resume`` a store that does not exist.
    """
    folder = check_output_folder(Path(folder), "out")
    manifest = folder / MANIFEST
    if folder.exists() and not manifest.exists() and any(folder.iterdir()):
        raise InvalidArgument(f"{str(folder)!r} is a folder with other files, not a sweep store; give an empty or new folder", "out")
    if manifest.exists():
        store = SweepStore(folder)
        if store.manifest.get("digest") != spec.digest() and not any(store.cells_folder.glob("*.json")) and not resume:
            # a store that holds no cell (e.g. left by a run refused before its first cell) loses nothing
            # when it is made again for this specification
            write_json(manifest, _manifest(spec), ledger=False)
            return SweepStore(folder)
        if store.manifest.get("digest") != spec.digest():
            made = store.manifest.get("spec", {})
            differing = sorted({f"{section}.{key}" for section in ("problem", "run", "grid", "zip") for key in set(made.get(section, {})) | set(spec.source.get(section, {})) if made.get(section, {}).get(key) != spec.source.get(section, {}).get(key)})
            raise InvalidArgument(f"the store {str(folder)!r} was made by another specification (differs in {', '.join(differing) or 'its defaults'}); give another --out", "out")
        return store  # cells of other numerics versions stay, under their own keys
    if resume:
        raise InvalidArgument(f"--resume: {str(folder)!r} holds no sweep store to resume", "resume")
    folder.mkdir(exist_ok=True)
    (folder / CELLS).mkdir(exist_ok=True)
    write_json(manifest, _manifest(spec), ledger=False)
    return SweepStore(folder)


def _manifest(spec: SweepSpec) -> dict:
    return {"spec": spec.to_dict(), "digest": spec.digest(), "numerics": numerics_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cells": len(spec.cells())}


def remove_empty_store(folder, created_folder: bool) -> bool:
    """Remove the store in ``folder`` if it holds no cell: its manifest and cells folder, and ``folder``
    itself when ``created_folder`` (it was made for this store) and nothing else is in it. What a refused or
    interrupted command that made the store calls, so it leaves nothing behind; a store with cells stays
    (it resumes).

    Parameters
    ----------
    folder : str or Path
    created_folder : bool
        Whether ``folder`` itself was made for the store.

    Returns
    -------
    bool
        True when the store was removed.
    """
    folder = Path(folder)
    cells = folder / CELLS
    if not (folder / MANIFEST).is_file() or (cells.exists() and (not cells.is_dir() or any(cells.iterdir()))):
        return False
    (folder / MANIFEST).unlink()
    if cells.is_dir():
        cells.rmdir()
    if created_folder and not any(folder.iterdir()):
        folder.rmdir()
    return True
