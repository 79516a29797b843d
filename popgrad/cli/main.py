"""The ``popgrad`` command line.

Every error from bad input is one line on stderr, ``popgrad: error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mpmath

from .. import __version__

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
    from ..gaussian.hermite import information_exponent
    from ..reference.hermite import verify_hermite
    from ..report.tables import hermite_table

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
    table = hermite_table(check, exponent, digits=args.digits)
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
    defaults = {"activation": "relu", "k": 8, "xi": 1.0, "features": "orthonormal", "seed": 0, "d": None} | (defaults or {})
    group = parser.add_argument_group("problem (or --problem FILE.json)")
    group.add_argument("--problem", metavar="FILE", help="a problem JSON file (overrides the options below)")
    group.add_argument("--activation", "-a", default=defaults["activation"], help=f"activation (default {defaults['activation']})")
    group.add_argument("--k", type=int, default=defaults["k"], help=f"number of neurons (default {defaults['k']})")
    group.add_argument("--xi", type=_float, default=defaults["xi"], help=f"adapter scale xi > 0 (default {defaults['xi']:g})")
    group.add_argument("--features", choices=FEATURES, default=defaults["features"], help=f"base features (default {defaults['features']})")
    dimension = "" if defaults["d"] is None else f" (default {defaults['d']})"
    group.add_argument("--d", dest="dimension", type=int, default=defaults["d"], help=f"input dimension d: of random features and of the simulation{dimension}")
    group.add_argument("--seed", type=int, default=defaults["seed"], help=f"seed for W, c, c_hat (default {defaults['seed']})")
    group.add_argument("--convention", choices=("normalized", "raw"), default="normalized")
    group.add_argument("--c-distribution", choices=("quantized", "sphere"), default="quantized", help="law of c, c_hat")


def _problem_from_args(args):
    from ..models.finetuning import spec as model

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
        if args.dimension is None:
            raise UsageError("--features random needs --d (the input dimension)")
        return model.random_features_problem(args.activation, args.k, args.dimension, args.xi, c_distribution=args.c_distribution, **common)
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

    from ..models.finetuning.population import drift_fixed_points, population_drift, population_loss
    from ..report.tables import Table

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

    from ..models.finetuning.population import population_drift, population_loss

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
    from ..report.tables import stale_derivations, write_derivations

    if args.check:
        stale = stale_derivations(args.out, progress=True)
        if stale:
            print(f"stale derivation tables in {args.out}: {', '.join(stale)} (run: popgrad derive)")
            return 1
        print(f"derivation tables in {args.out} are up to date")
        return 0
    for path in write_derivations(args.out, progress=True):
        print(f"wrote {path}")
    return 0


# ------------------------------------------------------------------------------------------------
# simulate, compare, run
# ------------------------------------------------------------------------------------------------


def _add_dynamics_options(parser: argparse.ArgumentParser, defaults: dict) -> None:
    group = parser.add_argument_group("dynamics")
    size = group.add_mutually_exclusive_group()
    size.add_argument("--eta", type=_float, default=None, help="step size eta")
    size.add_argument("--delta", type=_float, default=None, help=f"step size as eta = delta / d (default delta = {defaults['delta']:g})")
    group.add_argument("--steps", type=int, default=defaults["steps"], help=f"number of SGD steps (default {defaults['steps']})")
    group.add_argument("--trajectories", type=int, default=defaults["trajectories"], help=f"independent trajectories (default {defaults['trajectories']})")
    group.add_argument("--method", choices=("chain", "fast", "full"), default=defaults["method"], help=f"simulator (default {defaults['method']})")
    group.add_argument("--m0", type=_float, default=None, help="initial overlap (default: u_hat_0 uniform on the sphere of span(W)^perp)")
    group.add_argument("--checkpoints", type=_checkpoint_list, default=None, help="steps to record, comma-separated (default 21 evenly spaced)")
    group.add_argument("--noise-samples", type=int, default=200_000, help="Monte Carlo samples for V(m) (default 200000)")
    group.add_argument("--threshold", type=_float, default=4.0, help="verdict threshold in standard errors (default 4)")
    parser.set_defaults(default_delta=defaults["delta"])


def _checkpoint_list(text: str):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated step counts, got {text!r}") from None
    if not values or any(v < 0 for v in values) or any(b <= a for a, b in zip(values, values[1:])):
        raise argparse.ArgumentTypeError("checkpoints must be non-negative and strictly increasing")
    return values


def _dynamics_settings(args, problem):
    from ..models.finetuning.simulation import checkpoint_grid

    d = args.dimension
    if problem.W is not None and args.method == "full":
        d = problem.W.shape[1]
    if d is None or d < problem.rank + 3:
        raise UsageError(f"--d must be >= rank(W) + 3 = {problem.rank + 3}, got {d}")
    if args.eta is not None:
        if not args.eta > 0:
            raise UsageError(f"--eta must be > 0, got {args.eta:g}")
        eta = args.eta
    else:
        delta = args.default_delta if args.delta is None else args.delta
        if not delta > 0:
            raise UsageError(f"--delta must be > 0, got {delta:g}")
        eta = delta / d
    if not 1 <= args.trajectories <= 10**7:
        raise UsageError(f"--trajectories must lie in [1, 10000000], got {args.trajectories}")
    if args.m0 is not None and not -1 <= args.m0 <= 1:
        raise UsageError(f"--m0 must lie in [-1, 1], got {args.m0:g}")
    if args.checkpoints is not None:
        checkpoints = args.checkpoints
    else:
        if not 1 <= args.steps <= 10**10:
            raise UsageError(f"--steps must lie in [1, 1e10], got {args.steps}")
        checkpoints = checkpoint_grid(args.steps, 21).tolist()
    if args.noise_samples < 64:
        raise UsageError(f"--noise-samples must be >= 64, got {args.noise_samples}")
    return d, eta, checkpoints


def _print_comparison(comparisons: dict) -> None:
    first = next(iter(comparisons.values()))
    names = list(first.predictions.values)
    widths = [max(16, len(name)) for name in names]
    header = f"{'step':>9s} " + " ".join(f"{label + ' mean ± SE':>22s}" for label in comparisons) + " " + " ".join(f"{name:>{width}s}" for name, width in zip(names, widths))
    print(header)
    for index, step in enumerate(first.steps):
        cells = " ".join(f"{c.mean[index]:>12.5f} ± {c.standard_error[index]:<7.5f}" for c in comparisons.values())
        predictions = " ".join(f"{first.predictions.values[name][index]:>{width}.5f}" for name, width in zip(names, widths))
        print(f"{int(step):>9d} {cells} {predictions}")
    import numpy as np

    for name, (lower, upper) in first.predictions.bands.items():
        print(f"{name} band (noise Monte Carlo, 2 SE): width <= {float(np.max(np.abs(upper - lower))):.2e}")
    for label, comparison in comparisons.items():
        print(f"verdict [{label}]: {comparison.verdict}")


def _simulate(args) -> int:
    from ..analysis.comparison import compare

    problem = _problem_from_args(args)
    d, eta, checkpoints = _dynamics_settings(args, problem)
    result = compare(problem, d, eta, checkpoints, trajectories=args.trajectories, method=args.method, m0=args.m0, seed=args.seed, noise_samples=args.noise_samples, threshold=args.threshold, progress=not args.quiet)
    if args.out:
        result.to_dataset().to_netcdf(args.out, engine="scipy")
    if args.format == "json":
        print(json.dumps(result.to_json_dict(), indent=1))
        return 0
    print(f"{problem!r}; d = {d}, eta = {eta:.4g} (delta = {eta * d:.4g}), {args.trajectories} trajectories ({args.method})")
    _print_comparison({args.method: result})
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _compare(args) -> int:
    from ..analysis.comparison import compare

    problem = _problem_from_args(args)
    d, eta, checkpoints = _dynamics_settings(args, problem)
    result = compare(problem, d, eta, checkpoints, trajectories=args.trajectories, method=args.method, m0=args.m0, seed=args.seed, noise_samples=args.noise_samples, threshold=args.threshold, progress=not args.quiet)
    print(f"{problem!r}; d = {d}, eta = {eta:.4g} (delta = {eta * d:.4g}), {args.trajectories} trajectories ({args.method})")
    _print_comparison({args.method: result})
    for path in result.save(args.out):
        print(f"wrote {path}")
    if args.strict and not all(result.consistent.values()):
        return 1
    return 0


RUN_DEFAULTS = {"d": 1000, "delta": 0.05, "steps": 50000, "trajectories": 24, "method": "full"}
RUN_CHAIN_TRAJECTORIES = 500


def _run(args) -> int:
    import time

    from ..analysis.comparison import Comparison, versions
    from ..models.finetuning.population import drift_fixed_points, drift_interpolant
    from ..models.finetuning.predictions import predict
    from ..models.finetuning.simulation import simulate

    begin = time.perf_counter()
    problem = _problem_from_args(args)
    d, eta, checkpoints = _dynamics_settings(args, problem)
    out = Path(args.out)
    print(f"popgrad {__version__} — theory vs Monte Carlo for rank-1 fine-tuning (Dayi & Chen)")
    print(f"problem: {problem!r}; d = {d}, eta = {eta:.4g} (delta = eta d = {eta * d:g}), {args.steps} steps")
    points = drift_fixed_points(problem)
    fast = drift_interpolant(problem)
    print(f"h(0) = {points.h0:.6g}; zeros of h on [-1, 1]: {', '.join(f'{z:.6g}' for z in points.zeros) or 'none'}; "
          f"fast evaluator: {fast.interpolant.panels} Chebyshev panels, measured error {fast.measured_error:.1e}")
    predictions = predict(problem, d, eta, checkpoints, m0=args.m0, samples=args.noise_samples, seed=args.seed)
    full = simulate(problem, d, eta, checkpoints, trajectories=args.trajectories, method="full", m0=args.m0, seed=args.seed, progress=not args.quiet)
    chain = simulate(problem, d, eta, checkpoints, trajectories=args.chain_trajectories, method="chain", m0=args.m0, seed=args.seed + 1, progress=not args.quiet)
    results = {
        f"full-d SGD ({full.trajectories})": Comparison(problem, full, predictions, args.threshold),
        f"chain ({chain.trajectories})": Comparison(problem, chain, predictions, args.threshold),
    }
    _print_comparison(results)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for label, comparison in zip(("full", "chain"), results.values()):
        folder = out / label
        written += comparison.save(folder)
    _plot_drift(problem, points, out / "drift.png")
    provenance = {"command": "popgrad run", "problem": problem.to_dict(), "d": d, "eta": eta, "steps": args.steps, "seed": args.seed, "checkpoints": list(map(int, checkpoints)), "versions": versions(), "seconds": time.perf_counter() - begin}
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    problem.save(out / "problem.json")
    print(f"report: {out}/ (drift.png, problem.json, provenance.json, full/ and chain/: comparison.png, .json, .nc)")
    print(f"done in {time.perf_counter() - begin:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="popgrad", description="Numerical verification of gradient-dynamics theorems.")
    parser.add_argument("--version", action="version", version=f"popgrad {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = commands.add_parser("run", help="the main job: theory vs Monte Carlo on built-in defaults")
    _add_problem_options(run, {"d": RUN_DEFAULTS["d"]})
    _add_dynamics_options(run, RUN_DEFAULTS)
    run.add_argument("--chain-trajectories", type=int, default=RUN_CHAIN_TRAJECTORIES, help=f"trajectories of the exact chain (default {RUN_CHAIN_TRAJECTORIES})")
    run.add_argument("--out", default="popgrad-report", help="report folder (default popgrad-report/)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(handler=_run)

    simulate_defaults = {"d": 1000, "delta": 0.25, "steps": 30000, "trajectories": 256, "method": "chain"}
    simulate = commands.add_parser("simulate", help="online SGD with the predictions at checkpoints")
    _add_problem_options(simulate, {"d": simulate_defaults["d"]})
    _add_dynamics_options(simulate, simulate_defaults)
    simulate.add_argument("--format", choices=["table", "json"], default="table")
    simulate.add_argument("--out", help="also save the labelled arrays (NetCDF, .nc)")
    simulate.add_argument("--quiet", action="store_true", help="no progress bars")
    simulate.set_defaults(handler=_simulate)

    compare = commands.add_parser("compare", help="simulate, predict, and write a report with the verdict")
    _add_problem_options(compare, {"d": simulate_defaults["d"]})
    _add_dynamics_options(compare, simulate_defaults)
    compare.add_argument("--out", default="popgrad-compare", help="report folder (default popgrad-compare/)")
    compare.add_argument("--strict", action="store_true", help="exit 1 when a prediction is inconsistent")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    compare.set_defaults(handler=_compare)

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
