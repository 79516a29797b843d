"""The ``popgrad`` command line.

Every error from bad input is one line on stderr, ``popgrad: error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mpmath

from . import __version__

__all__ = ["main"]


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


# ------------------------------------------------------------------------------------------------
# hermite
# ------------------------------------------------------------------------------------------------


def _hermite(args) -> int:
    from .hermite import information_exponent, verify_hermite
    from .tables import hermite_table

    if args.order > 200:
        raise UsageError(f"--order must lie in [0, 200], got {args.order}")
    if not 5 <= args.digits <= 1000:
        raise UsageError(f"--digits must lie in [5, 1000], got {args.digits}")
    if not args.scale > 0:
        raise UsageError(f"--scale must be > 0, got {args.scale}")
    check = verify_hermite(args.activation, args.order, args.scale, digits=args.digits)
    exponent = information_exponent(args.activation, args.scale, max_order=max(args.order, 30))
    if args.format == "json":
        payload = {
            "activation": check.activation,
            "scale": check.scale,
            "digits": args.digits,
            "method": check.method,
            "information_exponent": exponent,
            "coefficients": [
                {
                    "p": p,
                    "exact": None if exact is None else str(exact),
                    "value": "0" if zero else mpmath.nstr(value, args.digits, min_fixed=-5, max_fixed=12),
                    "verified_digits": round(digits, 1),
                    "zero": bool(zero),
                }
                for p, (exact, value, digits, zero) in enumerate(zip(check.exact, check.value, check.digits, check.zero))
            ],
        }
        print(json.dumps(payload, indent=2))
        return 0
    table = hermite_table(check, exponent)
    if args.format == "markdown":
        print(table.markdown(), end="")
    elif args.format == "latex":
        print(table.latex(), end="")
    elif args.format == "csv":
        import csv

        csv.writer(sys.stdout, lineterminator="\n").writerows(table.csv_rows())
    else:
        print(table.note)
        widths = [max(len(str(c)) for c in column) for column in zip(table.columns, *table.rows)]
        for row in (table.columns,) + table.rows:
            print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


# ------------------------------------------------------------------------------------------------
# derive
# ------------------------------------------------------------------------------------------------


def _derive(args) -> int:
    from .tables import stale_derivations, write_derivations

    if args.check:
        stale = stale_derivations(args.out)
        if stale:
            print(f"stale derivation tables in {args.out}: {', '.join(stale)} (run: popgrad derive)")
            return 1
        print(f"derivation tables in {args.out} are up to date")
        return 0
    for path in write_derivations(args.out):
        print(f"wrote {path}")
    return 0


# ------------------------------------------------------------------------------------------------
# run
# ------------------------------------------------------------------------------------------------


def _run(args) -> int:
    from .activations import catalogue
    from .hermite import verify_hermite

    print(f"popgrad {__version__}: Hermite verification of the activation catalogue (p <= {args.order}, 50 digits)")
    print(f"{'activation':18s} {'scale':>6s} {'route':8s} {'min digits':>10s} {'max |zero|':>11s}")
    worst = 50.0
    for sigma in catalogue():
        for scale in (1, 1.7):
            check = verify_hermite(sigma, args.order, scale, digits=50)
            route = "exact" if sigma.has_closed_form else "numeric"
            worst = min(worst, check.min_digits)
            print(f"{sigma.name:18s} {check.scale:>6s} {route:8s} {check.min_digits:10.1f} {check.max_abs_at_zeros:11.1e}")
    print(f"verdict: every coefficient agrees to >= {worst:.1f} significant digits across two independent routes")
    return 0


# ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="popgrad", description="Numerical verification of gradient-dynamics theorems.")
    parser.add_argument("--version", action="version", version=f"popgrad {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = commands.add_parser("run", help="the main job: theory vs Monte Carlo on built-in defaults")
    run.add_argument("--order", type=_positive_int, default=20, help="largest Hermite order checked")
    run.set_defaults(handler=_run)

    hermite = commands.add_parser("hermite", help="verified Hermite coefficients of an activation")
    hermite.add_argument("activation", help="catalogue name, He_p, h_p, leaky_relu(a), poly(...), or an expression in z")
    hermite.add_argument("--order", "-p", type=_positive_int, required=True, help="largest order P")
    hermite.add_argument("--scale", "-r", type=_float, default=1.0, help="scale r > 0 (default 1)")
    hermite.add_argument("--digits", "-d", type=_positive_int, default=30, help="decimal digits (default 30)")
    hermite.add_argument("--format", choices=["table", "markdown", "latex", "csv", "json"], default="table")
    hermite.set_defaults(handler=_hermite)

    derive = commands.add_parser("derive", help="regenerate the derivation tables")
    derive.add_argument("--out", default="derivations", help="output folder (default derivations/)")
    derive.add_argument("--check", action="store_true", help="only report whether the folder is stale (exit 1)")
    derive.set_defaults(handler=_derive)
    return parser


def main(argv: list | None = None) -> int:
    """Entry point of the ``popgrad`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return args.handler(args)
    except UsageError as exc:
        print(f"popgrad: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:
        print(f"popgrad: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("popgrad: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
