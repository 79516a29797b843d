"""Run a sweep's missing cells on Dask and store each as it finishes.

By default a ``dask.distributed.LocalCluster`` of worker *processes* on this machine (one thread each, so
numba's threads per cell are ``cores // workers``); with ``scheduler`` an existing Dask cluster (Slurm,
Kubernetes, ... through dask-jobqueue or dask-kubernetes), whose workers run one cell per thread with one
numba thread. Results travel back to this process, which writes each finished cell into the store at once:
killing the sweep loses at most the cells in flight, and a worker that dies mid-cell has its task re-run by
Dask (the store still holds the cell once).
"""

from __future__ import annotations

import os
import time

from .._progress import progress_bar
from .._validation import InvalidArgument, available_memory, check_integer, check_memory, check_real
from .spec import PROBLEM_KEYS, SweepSpec, cell_key
from .store import SweepStore
from .tasks import check_cell, run_cell

__all__ = ["run_sweep", "check_sweep", "default_workers"]


#: what one local worker process holds before its cells (measured: 200-250 MB with the compiled kernels)
WORKER_BYTES = 250e6
#: up to this many cores the cells run in this process by default: a LocalCluster's start and its workers'
#: imports cost more there than they save (measured on 2 cores: 33-38 s against 24 s in process)
SMALL_MACHINE_CORES = 2


def default_workers() -> int:
    """Local worker processes when none are asked for: 0 (in this process) on a machine of at most
    :data:`SMALL_MACHINE_CORES` cores, else one per core, as many as the memory this process can get holds.

    Returns
    -------
    int
    """
    cores = os.cpu_count() or 1
    if cores <= SMALL_MACHINE_CORES:
        return 0
    total, _ = available_memory()
    return max(1, min(cores, int(0.8 * total // WORKER_BYTES))) if total else cores


def check_sweep(spec: SweepSpec, workers: int | None = None, scheduler: str | None = None) -> int:
    """Every check a sweep makes before its work, made before anything is created: the executor's options,
    and each distinct cell (:func:`~popgrad.sweeps.tasks.check_cell`: the model is built once per distinct
    problem; random features beyond d = 1e5 are built by the worker only). A specification refused here
    leaves no store.

    Parameters
    ----------
    spec : SweepSpec
    workers : int, optional
    scheduler : str, optional

    Returns
    -------
    int or None
        The number of local worker processes (0: in this process; by default :func:`default_workers`; None
        with a scheduler).

    Raises
    ------
    InvalidArgument
        Naming the key or option at fault.
    """
    if workers is not None and scheduler is not None:
        raise InvalidArgument("give --workers (a local cluster) or --scheduler (an existing one), not both", "workers")
    workers = default_workers() if workers is None and scheduler is None else (None if workers is None else check_integer(workers, "workers", 0, 4096))
    if workers == 0 and scheduler is not None:
        raise InvalidArgument("workers = 0 (in this process) cannot be used with a scheduler", "workers")
    if workers:
        check_memory(WORKER_BYTES * workers, f"{workers} worker processes (about {WORKER_BYTES / 1e6:.0f} MB each: Python, numpy, numba and the compiled kernels)", "workers", "; give fewer --workers")
    seen = set()
    for cell in spec.cells():
        problem_keys = {key: cell.get(key) for key in PROBLEM_KEYS}
        run_keys = {key: cell[key] for key in ("kind", "method", "trajectories", "d", "eta", "delta", "horizon", "steps", "checkpoints", "spacing", "noise_samples")}
        signature = repr(sorted(problem_keys.items())) + repr(sorted(run_keys.items()))
        if signature in seen:
            continue
        seen.add(signature)
        check_cell(cell, build=not (cell["generator"] == "random" and cell["d"] > 100_000))
    return workers


def run_sweep(spec: SweepSpec, store: SweepStore, workers: int | None = None, scheduler: str | None = None, progress: bool | None = False, timeout: float = 10.0, numba_threads: int | None = None) -> dict:
    """Compute every cell of ``spec`` that ``store`` does not hold yet.

    Parameters
    ----------
    spec : SweepSpec
    store : SweepStore
    workers : int, optional
        Worker processes of the local cluster (default: :func:`default_workers`, one per core as memory
        allows, and 0 on a machine of 2 cores or fewer); 0 runs the cells one after another in this process,
        without Dask (numba threads: all cores) - for small sweeps and small machines, where starting worker
        processes (and loading compiled kernels in each) costs more than the cells.
    scheduler : str, optional
        Address of an existing Dask scheduler (then ``workers`` must not be given).
    progress : bool or None, default False
        A progress bar over cells (None: only on a terminal).
    timeout : float, default 10
        Seconds to wait for the scheduler.
    numba_threads : int, optional
        numba threads per cell (default: cores // workers locally, 1 on an existing cluster).

    Returns
    -------
    dict
        ``cells`` (in the grid), ``skipped`` (already stored), ``computed``, ``seconds``.
    """
    timeout = check_real(timeout, "timeout", 0.0, 86_400.0, low_open=True)
    if progress is not None and not isinstance(progress, bool):
        raise InvalidArgument(f"progress must be True, False or None (only on a terminal), got {progress!r}", "progress")
    cores = os.cpu_count() or 1
    workers = check_sweep(spec, workers, scheduler)  # before any work (the command line calls it before the store too)
    cells = spec.cells()
    keys = [cell_key(cell) for cell in cells]
    finished = store.finished()
    todo = {}
    for key, cell in zip(keys, cells):
        if key not in finished:
            todo.setdefault(key, cell)
    begin = time.perf_counter()
    if not todo:
        return {"cells": len(cells), "skipped": len(cells), "computed": 0, "seconds": 0.0}
    if workers == 0:
        threads = cores if numba_threads is None else check_integer(numba_threads, "numba_threads", 1, 4096)
        with progress_bar(total=len(todo), progress=progress, unit="cell", desc="sweep") as bar:
            for key, cell in todo.items():
                store.write(key, cell, run_cell(cell, threads))
                bar.update(1)
        return {"cells": len(cells), "skipped": len(cells) - len(todo), "computed": len(todo), "seconds": time.perf_counter() - begin}
    from dask.distributed import Client, LocalCluster, as_completed  # only here: the in-process path needs no Dask

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise InvalidArgument(f"cannot reach the Dask scheduler at {scheduler!r} within {timeout:g} s ({type(exc).__name__})", "scheduler") from None
        cluster, threads = None, 1
    else:
        # the dashboard on a free port (None would still take dask's default 8787 and warn when it is busy)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50)
        client = Client(cluster)
        threads = max(1, cores // workers)
    if numba_threads is not None:
        threads = check_integer(numba_threads, "numba_threads", 1, 4096)
    computed = 0
    try:
        futures = {client.submit(run_cell, cell, threads, key=f"popgrad-cell-{key}", pure=False, retries=2): key for key, cell in todo.items()}
        with progress_bar(total=len(todo), progress=progress, unit="cell", desc="sweep") as bar:
            for future in as_completed(futures):
                key = futures[future]
                computed += store.write(key, todo[key], future.result())
                bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return {"cells": len(cells), "skipped": len(cells) - len(todo), "computed": computed, "seconds": time.perf_counter() - begin}
