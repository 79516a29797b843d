"""``popgrad sweep`` and ``popgrad sweep-report``: parameter sweeps on Dask, a resumable store, reports."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .._validation import InvalidArgument
from .common import UsageError, add_force, check_outputs, print_json

__all__ = ["register"]

#: the longest wait for --scheduler, in seconds
MAX_TIMEOUT = 86_400
#: a Dask address: an optional protocol, a host (name, IPv4, or [IPv6]) and an optional port
SCHEDULER_ADDRESS = re.compile(r"(?:[a-z][a-z0-9+.-]*://)?(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?/?")


def register(commands) -> None:
    sweep = commands.add_parser("sweep", help="run a parameter sweep (TOML/JSON spec) on Dask into a resumable store")
    sweep.add_argument("spec", help="the sweep specification (.toml, or JSON of the same structure)")
    sweep.add_argument("--out", required=True, help="the store folder (created; rerunning the same command computes only missing cells)")
    where = sweep.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, help="worker processes of a local Dask cluster (default: one per core as memory allows; in this process on a machine of 2 cores or fewer; 0: in this process, without Dask)")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://host:8786 (dask-jobqueue, dask-kubernetes)")
    sweep.add_argument("--resume", action="store_true", help="require an existing store made by this spec")
    sweep.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for --scheduler (default 10)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar (shown only on a terminal anyway)")
    sweep.set_defaults(handler=_sweep)
    report = commands.add_parser("sweep-report", help="tables, power-law fits and plots of a sweep store")
    report.add_argument("store", help="a store folder written by popgrad sweep")
    report.add_argument("--format", choices=("table", "json"), default="table", help="print the table (default) or the JSON document")
    report.add_argument("--out", default=None, help="report folder (default STORE/report)")
    report.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates of the fitted exponents (default 1000)")
    add_force(report)
    report.set_defaults(handler=_sweep_report)


def _sweep(args) -> int:
    from ..sweeps.executor import check_sweep, run_sweep
    from ..sweeps.spec import load_sweep_spec
    from ..sweeps.store import open_store, remove_empty_store

    spec = load_sweep_spec(args.spec)  # refused in one line naming the file
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be at least 0 (0: in this process, without Dask), got {args.workers}")
    if not 0 < args.timeout <= MAX_TIMEOUT:
        raise UsageError(f"--timeout must be a positive number of seconds, at most {MAX_TIMEOUT} (a day), got {args.timeout}")
    if args.scheduler is not None and not SCHEDULER_ADDRESS.fullmatch(args.scheduler):
        raise UsageError(f"--scheduler: {args.scheduler!r} is not a scheduler address (e.g. tcp://host:8786 or host:8786)")
    try:
        workers = check_sweep(spec, args.workers, args.scheduler)  # the whole specification, before the store is made
    except InvalidArgument as exc:
        if exc.parameter in ("scheduler", "workers"):
            raise
        raise UsageError(f"sweep specification {str(args.spec)!r}: {str(exc).splitlines()[0]}") from None
    out = Path(args.out)
    made_folder, made_store = not out.exists(), not (out / "manifest.json").exists()
    store = open_store(out, spec, resume=args.resume)
    try:
        summary = run_sweep(spec, store, workers=args.workers, scheduler=args.scheduler, progress=None if not args.quiet else False, timeout=args.timeout)
    except BaseException as exc:
        if made_store:
            remove_empty_store(out, made_folder)  # a refused or interrupted command that made the store leaves none (with cells, it resumes)
        if isinstance(exc, InvalidArgument) and exc.parameter not in ("scheduler", "workers"):
            raise UsageError(f"sweep specification {str(args.spec)!r}: {str(exc).splitlines()[0]}") from None
        raise
    where = f" in this process (the default on {os.cpu_count()} cores; --workers N starts a local Dask cluster)" if args.workers is None and args.scheduler is None and workers == 0 else ""
    print(f"sweep {args.spec}: {summary['cells']} cells, {summary['skipped']} already stored, {summary['computed']} computed in {summary['seconds']:.1f} s{where} -> {args.out}")
    return 0


def _sweep_report(args) -> int:
    from ..sweeps.report import write_sweep_report
    from ..sweeps.store import SweepStore

    if args.replicates < 10:
        raise UsageError(f"--replicates must be at least 10, got {args.replicates}")
    store = SweepStore(args.store)
    folder = Path(args.out) if args.out is not None else store.folder / "report"
    check_outputs(args, [folder / name for name in ("sweep.json", "sweep.md", "sweep.csv", "scaling.png", "phase.png")])
    document = write_sweep_report(store, args.out, replicates=args.replicates)
    if args.format == "json":
        print_json(document)
        return 0
    folder = args.out or f"{args.store}/report"
    print(Path(folder, "sweep.md").read_text())  # just written by write_sweep_report
    print(f"wrote {folder}/ (sweep.json, sweep.md, sweep.csv{', scaling.png' if document['fits'] else ''})")
    return 0
