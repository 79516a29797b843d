"""``popgrad reproduce NAME|all [--quick] [--out DIR]``: run the papers' reproductions and write their reports."""

from __future__ import annotations

from .common import EXIT_NEGATIVE, UsageError

__all__ = ["register"]


def _names() -> list:
    from ..reproductions.base import REGISTRY

    return sorted(REGISTRY)


def register(commands) -> None:
    reproduce = commands.add_parser("reproduce", help="reproduce a paper's figure or theorem scaling (derivations/paper/NAME.png/.md/.json)")
    reproduce.add_argument("name", help="a reproduction's name, or all")
    reproduce.add_argument("--quick", action="store_true", help="the reduced version (what CI runs)")
    reproduce.add_argument("--out", default="derivations/paper", help="report folder (default derivations/paper)")
    reproduce.add_argument("--workers", type=int, default=None, help="Dask workers for the sweeps (default: one per core; 0: in this process, without Dask)")
    reproduce.add_argument("--strict", action="store_true", help=f"exit {EXIT_NEGATIVE} when a criterion fails")
    reproduce.set_defaults(handler=_reproduce)


def _reproduce(args) -> int:
    from .._io import check_output_folder
    from ..reproductions.base import run_reproduction
    from ..reproductions.summary import write_summary

    names = _names()
    if args.name != "all" and args.name not in names:
        raise UsageError(f"no reproduction named {args.name!r}; known: {', '.join(names)}, or all")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be at least 0 (0: in this process, without Dask), got {args.workers}")
    check_output_folder(args.out, "out")
    failed = []
    for name in names if args.name == "all" else [args.name]:
        report = run_reproduction(name, quick=args.quick, out=args.out, workers=args.workers)
        print(f"{name}: {'all criteria pass' if report.passed else 'SOME CRITERIA FAIL'}; wrote {args.out}/{name}.png, .md, .json")
        for criterion in report.criteria:
            value = criterion["value"]
            print(f"  {'PASS' if criterion['pass'] else 'FAIL'}  {criterion['name']}: {value:.4g}" if isinstance(value, float) else f"  {'PASS' if criterion['pass'] else 'FAIL'}  {criterion['name']}: {value}")
        if not report.passed:
            failed.append(name)
    print(f"summary: {write_summary(args.out)}")
    return EXIT_NEGATIVE if failed and args.strict else 0
