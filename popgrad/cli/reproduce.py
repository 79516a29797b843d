"""``popgrad reproduce NAME|all [--quick] [--out DIR | --update-derivations]``: run the papers' reproductions
and write their reports.

The committed full reports in ``derivations/paper/`` are written only on request (``--update-derivations``,
never with ``--quick``); by default the reports go to ``popgrad-reproductions/``."""

from __future__ import annotations

import os
from pathlib import Path

from .common import EXIT_NEGATIVE, UsageError, add_force, check_outputs, given

__all__ = ["register"]

#: where reports go unless --out or --update-derivations says otherwise
DEFAULT_OUT = "popgrad-reproductions"


def _names() -> list:
    from ..reproductions.base import REGISTRY

    return sorted(REGISTRY)


def committed_reports() -> Path:
    """The repository's folder of committed reports (``derivations/paper/`` beside the package)."""
    return Path(__file__).resolve().parents[2] / "derivations" / "paper"


def register(commands) -> None:
    reproduce = commands.add_parser("reproduce", help="reproduce a paper's figure or theorem scaling (NAME.png/.md/.json; the committed ones with --update-derivations)")
    reproduce.add_argument("name", help="a reproduction's name, or all")
    reproduce.add_argument("--quick", action="store_true", help="the reduced version (what CI runs)")
    reproduce.add_argument("--out", default=None, help=f"report folder (default {DEFAULT_OUT}/)")
    reproduce.add_argument("--update-derivations", action="store_true", help="write the committed full reports in derivations/paper/ and its README.md (not with --quick or --out)")
    reproduce.add_argument("--workers", type=int, default=None, help="Dask workers for the sweeps (default: one per core, in this process on a machine of 2 cores or fewer; 0: in this process, without Dask)")
    reproduce.add_argument("--strict", action="store_true", help=f"exit {EXIT_NEGATIVE} when a criterion fails")
    add_force(reproduce)
    reproduce.set_defaults(handler=_reproduce)


def _output_folder(args) -> tuple:
    """The report folder, and whether its reports may be replaced without --force."""
    committed = committed_reports()
    if args.update_derivations:
        if args.quick:
            raise UsageError("--update-derivations writes the committed full reports; a --quick run never does (drop one of them)")
        if given(args, "out"):
            raise UsageError(f"{given(args, 'out')[0]} cannot be used with --update-derivations, which writes {committed}")
        if not committed.is_dir():
            raise UsageError(f"--update-derivations: no committed reports at {committed} (an installed popgrad); give --out DIR")
        return committed, True
    out = Path(args.out or DEFAULT_OUT)
    if out.resolve() == committed.resolve():
        raise UsageError(f"--out {args.out}: this is the committed reports' folder; rewrite them with --update-derivations (full runs only)")
    return out, False


def _reproduce(args) -> int:
    from .._io import check_output_folder
    from ..reproductions.base import result_word, run_reproduction
    from ..reproductions.summary import write_summary

    names = _names()
    if args.name != "all" and args.name not in names:
        raise UsageError(f"no reproduction named {args.name!r}; known: {', '.join(names)}, or all")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be at least 0 (0: in this process, without Dask), got {args.workers}")
    out, committed = _output_folder(args)
    check_output_folder(out, "out")
    chosen = names if args.name == "all" else [args.name]
    if not committed:
        check_outputs(args, [out / f"{name}.{suffix}" for name in chosen for suffix in ("png", "md", "json")] + [out / "README.md"])
    from ..sweeps.executor import default_workers

    if args.workers is None and default_workers() == 0:
        print(f"reproduce: sweeps run in this process (the default on {os.cpu_count()} cores; --workers N starts a local Dask cluster)")
    failed = []
    for name in chosen:
        report = run_reproduction(name, quick=args.quick, out=out, workers=args.workers)
        print(f"{name}: {'all criteria pass' if report.passed else 'SOME CRITERIA FAIL'}; wrote {out}/{name}.png, .md, .json")
        for criterion in report.criteria:
            value = criterion["value"]
            word = result_word(criterion)  # a reported value or a claim of the paper is no PASS/FAIL
            print(f"  {word}  {criterion['name']}: {value:.4g}" if isinstance(value, float) else f"  {word}  {criterion['name']}: {value}")
        if not report.passed:
            failed.append(name)
    print(f"summary: {write_summary(out)}")
    return EXIT_NEGATIVE if failed and args.strict else 0
