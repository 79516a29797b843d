"""``popgrad hermite``: verified Hermite coefficients of an activation."""

from __future__ import annotations

import contextlib
import csv
import signal
import sys

from .common import EXIT_TIMEOUT, UsageError, non_negative_int, print_json, real

__all__ = ["register"]


def register(commands) -> None:
    hermite = commands.add_parser("hermite", help="verified Hermite coefficients of an activation")
    hermite.add_argument("activation", help="catalogue name, He_p, h_p, leaky_relu(a), poly(...), or an expression in z")
    hermite.add_argument("--order", "-p", type=non_negative_int, required=True, help="largest order P")
    hermite.add_argument("--scale", "-r", type=real, default=1.0, help="scale r > 0 (default 1)")
    hermite.add_argument("--digits", "-d", type=non_negative_int, default=30, help="decimal digits (default 30)")
    hermite.add_argument("--timeout", type=real, default=600.0, help="seconds (default 600): a request estimated to need more is refused with the estimate, and a run past it stops (exit 124)")
    hermite.add_argument("--format", choices=["table", "markdown", "latex", "csv", "json"], default="table")
    hermite.set_defaults(handler=_hermite)


def estimated_seconds(order: int, digits: int) -> float:
    """The two quadratures' time here, about digits^1.8 x (order + 1): 25 s at order 30 and 200 digits
    (5 s measured for tanh at order 20 and 100 digits; a closed form such as relu's takes about half)."""
    return 25.0 * (max(digits, 5) / 200.0) ** 1.8 * (order + 1) / 31.0


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raise TimeoutError in this (the main) thread after ``seconds`` (mpmath is Python: the signal is taken
    between its operations)."""

    def expire(signum, frame):
        raise TimeoutError(f"stopped at --timeout {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _hermite(args) -> int:
    import mpmath

    from ..gaussian.hermite import information_exponent
    from ..reference.hermite import verify_hermite
    from ..report.tables import hermite_table

    if not (0 < args.timeout <= 1e9):
        raise UsageError(f"--timeout must be a positive number of seconds, at most 1e9, got {args.timeout}")
    estimate = estimated_seconds(args.order, args.digits)
    if estimate > args.timeout:
        raise UsageError(f"--order {args.order} at --digits {args.digits} would take about {_duration(estimate)} here (the cost grows as digits^1.8 x order), above --timeout {args.timeout:g} s: lower --digits or --order, or raise --timeout")
    try:
        with _time_limit(args.timeout):
            check = verify_hermite(args.activation, args.order, args.scale, digits=args.digits)
            exponent = information_exponent(args.activation, args.scale, max_order=max(args.order, 30))
    except TimeoutError:
        print(f"popgrad: stopped: hermite {args.activation} --order {args.order} --digits {args.digits} took more than --timeout {args.timeout:g} s (estimated {_duration(estimate)})", file=sys.stderr)
        return EXIT_TIMEOUT
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


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} minutes" if seconds < 7200 else f"{seconds / 3600:.1f} hours"
