"""``popgrad hermite``: verified Hermite coefficients of an activation."""

from __future__ import annotations

import csv
import sys

from .common import non_negative_int, print_json, real

__all__ = ["register"]


def register(commands) -> None:
    hermite = commands.add_parser("hermite", help="verified Hermite coefficients of an activation")
    hermite.add_argument("activation", help="catalogue name, He_p, h_p, leaky_relu(a), poly(...), or an expression in z")
    hermite.add_argument("--order", "-p", type=non_negative_int, required=True, help="largest order P")
    hermite.add_argument("--scale", "-r", type=real, default=1.0, help="scale r > 0 (default 1)")
    hermite.add_argument("--digits", "-d", type=non_negative_int, default=30, help="decimal digits (default 30)")
    hermite.add_argument("--format", choices=["table", "markdown", "latex", "csv", "json"], default="table")
    hermite.set_defaults(handler=_hermite)


def _hermite(args) -> int:
    import mpmath

    from ..gaussian.hermite import information_exponent
    from ..reference.hermite import verify_hermite
    from ..report.tables import hermite_table

    check = verify_hermite(args.activation, args.order, args.scale, digits=args.digits)
    exponent = information_exponent(args.activation, args.scale, max_order=max(args.order, 30))
    if args.format == "json":
        coefficients = [
            {"p": p, "exact": None if exact is None else str(exact), "value": "0" if zero else mpmath.nstr(value, args.digits, min_fixed=-5, max_fixed=12), "verified_digits": round(digits, 1), "zero": bool(zero)}
            for p, (exact, value, digits, zero) in enumerate(zip(check.exact, check.value, check.digits, check.zero))
        ]
        payload = {"activation": check.activation, "scale": check.scale, "digits": args.digits, "method": check.method, "information_exponent": exponent, "coefficients": coefficients}
        print_json(payload)
        return 0
    table = hermite_table(check, exponent, digits=args.digits)
    if args.format == "markdown":
        print(table.markdown(), end="")
    elif args.format == "latex":
        print(table.latex(), end="")
    elif args.format == "csv":
        csv.writer(sys.stdout, lineterminator="\n").writerows(table.csv_rows())
    else:
        print(table.note)
        widths = [max(len(str(c)) for c in column) for column in zip(table.columns, *table.rows)]
        for row in (table.columns,) + table.rows:
            print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0
