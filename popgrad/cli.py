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
# problems
# ------------------------------------------------------------------------------------------------

FEATURES = ("orthonormal", "random", "glm", "claim2")


def _add_problem_options(parser: argparse.ArgumentParser, defaults: dict | None = None) -> None:
    defaults = {"activation": "relu", "k": 8, "xi": 1.0, "features": "orthonormal", "seed": 0} | (defaults or {})
    group = parser.add_argument_group("problem (or --problem FILE.json)")
    group.add_argument("--problem", metavar="FILE", help="a problem JSON file (overrides the options below)")
    group.add_argument("--activation", "-a", default=defaults["activation"], help=f"activation (default {defaults['activation']})")
    group.add_argument("--k", type=int, default=defaults["k"], help=f"number of neurons (default {defaults['k']})")
    group.add_argument("--xi", type=_float, default=defaults["xi"], help=f"adapter scale xi > 0 (default {defaults['xi']:g})")
    group.add_argument("--features", choices=FEATURES, default=defaults["features"], help=f"base features (default {defaults['features']})")
    group.add_argument("--d", type=int, default=None, help="input dimension (random features; the simulation's d)")
    group.add_argument("--seed", type=int, default=defaults["seed"], help=f"seed for W, c, c_hat (default {defaults['seed']})")
    group.add_argument("--convention", choices=("normalized", "raw"), default="normalized")
    group.add_argument("--c-distribution", choices=("quantized", "sphere"), default="quantized", help="law of c, c_hat")


def _problem_from_args(args):
    from . import model

    if args.problem:
        return model.load_problem(args.problem)
    if not 1 <= args.k <= 4096:
        raise UsageError(f"--k must lie in [1, 4096], got {args.k}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if not args.xi > 0:
        raise UsageError(f"--xi must be > 0, got {args.xi:g}")
    common = {"seed": args.seed, "convention": args.convention}
    if args.features == "random":
        if args.d is None:
            raise UsageError("--features random needs --d (the input dimension)")
        return model.random_features_problem(args.activation, args.k, args.d, args.xi, c_distribution=args.c_distribution, **common)
    if args.features == "claim2":
        return model.claim2_problem(args.activation, args.k, args.xi, **common)
    constructor = model.orthonormal_problem if args.features == "orthonormal" else model.glm_problem
    return constructor(args.activation, args.k, args.xi, c_distribution=args.c_distribution, **common)


def _grid(text: str):
    import numpy as np

    try:
        if ":" in text:
            low, high, count = text.split(":")
            values = np.linspace(float(low), float(high), int(count))
        else:
            values = np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list or LOW:HIGH:COUNT, got {text!r}") from None
    if values.size == 0:
        raise argparse.ArgumentTypeError("the list is empty")
    return values


def _problem(args) -> int:
    problem = _problem_from_args(args)
    problem.save(args.out)
    print(f"wrote {args.out}: {problem!r}")
    return 0


def _h(args) -> int:
    import numpy as np

    from .population import drift_fixed_points, population_drift, population_loss
    from .tables import Table

    problem = _problem_from_args(args)
    m = args.m
    if np.any(np.abs(m) > 1):
        raise UsageError("--m values must lie in [-1, 1]")
    h = population_drift(problem, m)
    loss = population_loss(problem, m)
    points = drift_fixed_points(problem)
    if args.plot:
        _plot_drift(problem, points, args.plot)
    if args.format == "json":
        payload = {
            "problem": problem.to_dict(),
            "m": m.tolist(),
            "h": h.tolist(),
            "Phi": loss.tolist(),
            "h0": points.h0,
            "zeros": list(points.zeros),
            "popgrad": __version__,
        }
        print(json.dumps(payload, indent=1))
        return 0
    rows = tuple((f"{a:.6g}", f"{b:.12g}", f"{c:.12g}") for a, b, c in zip(m, h, loss))
    table = Table("h(m) and Phi(m)", ("m", "h(m)", "Phi(m)"), rows, note=repr(problem))
    if args.format == "latex":
        print(table.latex(), end="")
        return 0
    print(repr(problem))
    print(f"h(0) = {points.h0:.12g}; zeros of h on [-1, 1]: {', '.join(f'{z:.10g}' for z in points.zeros) or 'none'}")
    print(f"{'m':>10s} {'h(m)':>20s} {'Phi(m)':>20s}")
    for a, b, c in rows:
        print(f"{a:>10s} {b:>20s} {c:>20s}")
    return 0


def _plot_drift(problem, points, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .population import population_drift, population_loss

    grid = np.linspace(-1, 1, 801)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(grid, population_drift(problem, grid))
    left.axhline(0, color="grey", lw=0.5)
    for zero in points.zeros:
        left.axvline(zero, color="red", lw=0.8, ls="--")
    left.set(xlabel="m", ylabel="h(m)", title="population drift")
    right.plot(grid, population_loss(problem, grid))
    right.set(xlabel="m", ylabel="Phi(m)", title="population loss")
    figure.suptitle(repr(problem), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


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

    h = commands.add_parser("h", help="population drift h(m) and loss Phi(m) of a problem")
    _add_problem_options(h)
    h.add_argument("--m", type=_grid, default=_grid("-1:1:11"), help="m values: list or LOW:HIGH:COUNT (default -1:1:11)")
    h.add_argument("--format", choices=["table", "json", "latex"], default="table")
    h.add_argument("--plot", metavar="FILE.png", help="also plot h and Phi on [-1, 1]")
    h.set_defaults(handler=_h)

    problem = commands.add_parser("problem", help="write a problem specification (JSON)")
    _add_problem_options(problem)
    problem.add_argument("--out", required=True, help="output JSON file")
    problem.set_defaults(handler=_problem)

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
