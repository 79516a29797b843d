"""``popgrad derive``: regenerate (or check) the derivation tables."""

from __future__ import annotations

from .._io import check_output_folder
from .common import EXIT_NEGATIVE, add_force, check_outputs, given

__all__ = ["register"]


def register(commands) -> None:
    derive = commands.add_parser("derive", help="regenerate the derivation tables")
    derive.add_argument("--out", default="derivations", help="output folder (default derivations/)")
    derive.add_argument("--check", action="store_true", help=f"only report whether the folder is stale (exit {EXIT_NEGATIVE} when it is)")
    add_force(derive)
    derive.set_defaults(handler=_derive)


def _derive(args) -> int:
    from ..report.tables import stale_derivations, write_derivations

    if args.check:
        stale = stale_derivations(args.out, progress=None)
        if stale:
            print(f"stale derivation tables in {args.out}: {', '.join(stale)} (run: popgrad derive)")
            return EXIT_NEGATIVE
        print(f"derivation tables in {args.out} are up to date")
        return 0
    check_output_folder(args.out, "out")
    if given(args, "out"):  # the default folder is the committed tables, which popgrad derive exists to regenerate
        check_outputs(args, [f"{args.out}/{stem}.{suffix}" for stem in ("hermite", "drift", "general", "lemma6") for suffix in ("md", "csv", "tex")])
    for path in write_derivations(args.out, progress=None):
        print(f"wrote {path}")
    return 0
