"""The fine-tuning model's commands: ``problem``, ``h``, ``simulate``, ``compare`` and ``run``.

Ranges are checked once, by the library; the command line only turns flags into arguments."""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

from .. import __version__
from .._io import INCOMPLETE, atomic_path, check_output_file, check_output_folder, json_safe, write_json, write_text
from .common import EXIT_NEGATIVE, UsageError, given, grid, real, refuse_together, step_list

__all__ = ["register"]

FEATURES = ("orthonormal", "random", "glm", "claim2")
# 2e6 noise samples: with 200 000 the band of the noise ODEs is ~6 SE of the 500-trajectory chain wide,
# and the verdict could only be inconclusive
RUN_DEFAULTS = {"d": 1000, "delta": 0.05, "steps": 50000, "trajectories": 24, "method": "fast", "noise_samples": 2_000_000}
RUN_CHAIN_TRAJECTORIES = 500
SIMULATE_DEFAULTS = {"d": 1000, "delta": 0.25, "steps": 30000, "trajectories": 256, "method": "chain"}


def register(commands) -> None:
    run = commands.add_parser("run", help="the main job: theory vs Monte Carlo on built-in defaults")
    _problem_options(run, {"d": RUN_DEFAULTS["d"]})
    _dynamics_options(run, RUN_DEFAULTS)
    run.add_argument("--chain-trajectories", type=int, default=RUN_CHAIN_TRAJECTORIES, help=f"trajectories of the exact chain (default {RUN_CHAIN_TRAJECTORIES})")
    run.add_argument("--out", default="popgrad-report", help="report folder (default popgrad-report/)")
    run.set_defaults(handler=_run)

    for name, help_text in (("simulate", "online SGD with the predictions at checkpoints"), ("compare", "simulate, predict, and write a report with the verdict")):
        command = commands.add_parser(name, help=help_text)
        _problem_options(command, {"d": SIMULATE_DEFAULTS["d"]})
        _dynamics_options(command, SIMULATE_DEFAULTS)
        _general_options(command)
        if name == "simulate":
            command.add_argument("--format", choices=["table", "json"], default="table")
            command.add_argument("--out", help="also save the labelled arrays (NetCDF, .nc)")
        else:
            predictions = command.add_argument_group("general model's predictions (with any general-model flag)")
            predictions.add_argument("--flow-starts", type=int, default=64, help="starting states of the gradient-flow prediction: the first trajectories' own (default 64)")
            predictions.add_argument("--map-starts", type=int, default=4, help="starting states of the one-step-mean map (default 4)")
            predictions.add_argument("--map-substeps", type=int, default=32, help="RK4 steps of the one-step-mean map over the horizon (default 32)")
            command.add_argument("--out", default="popgrad-compare", help="report folder (default popgrad-compare/)")
            command.add_argument("--strict", action="store_true", help=f"exit {EXIT_NEGATIVE} unless every prediction is conclusively consistent")
        command.set_defaults(handler=_simulate_or_compare, report=name == "compare")

    h = commands.add_parser("h", help="population drift h(m) and loss Phi(m) of a problem")
    _problem_options(h)
    h.add_argument("--m", type=grid, default=grid("-1:1:11"), help="m values: list or LOW:HIGH:COUNT (default -1:1:11)")
    h.add_argument("--format", choices=["table", "json", "latex"], default="table")
    h.add_argument("--plot", metavar="FILE.png", help="also plot h and Phi on [-1, 1]")
    h.set_defaults(handler=_h)

    problem = commands.add_parser("problem", help="write a problem specification (JSON)")
    _problem_options(problem)
    problem.add_argument("--out", required=True, help="output JSON file")
    problem.set_defaults(handler=_problem)


# ------------------------------------------------------------------------------------------------
# problems
# ------------------------------------------------------------------------------------------------


def _problem_options(parser: argparse.ArgumentParser, defaults: dict | None = None) -> None:
    defaults = {"activation": "relu", "k": 8, "xi": 1.0, "features": "orthonormal", "seed": 0, "d": None} | (defaults or {})
    group = parser.add_argument_group("problem (or --problem FILE.json)")
    group.add_argument("--problem", metavar="FILE", help="a problem JSON file (overrides the options below)")
    group.add_argument("--activation", "-a", default=defaults["activation"], help=f"activation (default {defaults['activation']})")
    group.add_argument("--k", type=int, default=defaults["k"], help=f"number of neurons (default {defaults['k']})")
    group.add_argument("--xi", type=real, default=defaults["xi"], help=f"adapter scale xi > 0 (default {defaults['xi']:g})")
    group.add_argument("--features", choices=FEATURES, default=defaults["features"], help=f"base features (default {defaults['features']})")
    dimension = "" if defaults["d"] is None else f" (default {defaults['d']})"
    group.add_argument("--d", dest="dimension", type=int, default=defaults["d"], help=f"input dimension d: of random features and of the simulation{dimension}")
    group.add_argument("--seed", type=int, default=defaults["seed"], help=f"seed of the simulation, and of the problem draw and noise estimate unless set apart below (default {defaults['seed']})")
    group.add_argument("--problem-seed", type=int, default=None, help="seed of the problem draw (W, c, c_hat; default: --seed), so that --seed alone repeats the simulation of one problem")
    group.add_argument("--convention", choices=("normalized", "raw"), default="normalized")
    group.add_argument("--c-distribution", choices=("quantized", "sphere"), default="quantized", help="law of c, c_hat")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (they are shown only on a terminal anyway)")


#: the flags that describe a problem: a problem file replaces them all
PROBLEM_FLAGS = ("activation", "k", "xi", "features", "convention", "c_distribution", "problem_seed")


def _problem_from_args(args):
    from ..models.finetuning import spec

    refuse_together(args, "problem", PROBLEM_FLAGS, "the problem file sets the problem (edit the file, or drop --problem)")
    if args.features == "claim2" and given(args, "c_distribution"):
        raise UsageError(f"{given(args, 'c_distribution')[0]} has no effect with --features claim2, which fixes c (c_i = ±1/sqrt(k))")
    if getattr(args, "handler", None) in (_h, _problem) and given(args, "dimension") and (args.problem or args.features != "random"):
        raise UsageError(f"{given(args, 'dimension')[0]} has no effect here: it is the input dimension of --features random only")
    if args.problem:
        if getattr(args, "handler", None) is _simulate_or_compare:
            # a file with the general model's keys (u/U, alpha, C, C_hat, rank, ...) runs the general model
            from ..models.finetuning.general import load_general_model

            text = Path(args.problem).read_text() if Path(args.problem).is_file() else ""
            try:
                keys = set(json.loads(text)) if text.lstrip().startswith("{") else set()
            except json.JSONDecodeError:
                keys = set()
            if keys & set(spec.GENERAL_MODEL_KEYS):
                args.file_model = load_general_model(args.problem)
                return args.file_model.problem
        return spec.load_problem(args.problem)
    seed = args.seed if args.problem_seed is None else args.problem_seed
    common = {"seed": seed, "convention": args.convention}
    if args.features == "random":
        if args.dimension is None:
            raise UsageError("--features random needs --d (the input dimension)")
        return spec.random_features_problem(args.activation, args.k, args.xi, d=args.dimension, c_distribution=args.c_distribution, **common)
    if args.features == "claim2":
        return spec.claim2_problem(args.activation, args.k, args.xi, **common)
    constructor = spec.orthonormal_problem if args.features == "orthonormal" else spec.glm_problem
    return constructor(args.activation, args.k, args.xi, c_distribution=args.c_distribution, **common)


def _progress(args):
    """Progress bars: never with --quiet, otherwise only on a terminal (tqdm's ``disable=None``)."""
    return False if args.quiet else None


def _problem(args) -> int:
    check_output_file(args.out, "out")
    problem = _problem_from_args(args)
    problem.save(args.out)
    print(f"wrote {args.out}: {problem!r}")
    return 0


def _h(args) -> int:
    from ..models.finetuning.population import drift_fixed_points, population_drift, population_loss
    from ..report.plots import plot_population
    from ..report.tables import Table

    if args.plot:
        check_output_file(args.plot, "plot")
    problem = _problem_from_args(args)
    h = population_drift(problem, args.m)
    loss = population_loss(problem, args.m)
    points = drift_fixed_points(problem)
    if args.plot:
        with atomic_path(args.plot) as temporary:
            plot_population(problem).savefig(temporary, dpi=120, format="png")
    if args.format == "json":
        payload = {"problem": problem.to_dict(), "m": args.m.tolist(), "h": h.tolist(), "Phi": loss.tolist(), "h0": points.h0, "zeros": list(points.zeros), "popgrad": __version__}
        print(json.dumps(json_safe(payload), indent=1, allow_nan=False))
        return 0
    rows = tuple((f"{a:.6g}", f"{b:.12g}", f"{c:.12g}") for a, b, c in zip(args.m, h, loss))
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


# ------------------------------------------------------------------------------------------------
# simulate, compare, run
# ------------------------------------------------------------------------------------------------


def _dynamics_options(parser: argparse.ArgumentParser, defaults: dict) -> None:
    group = parser.add_argument_group("dynamics")
    size = group.add_mutually_exclusive_group()
    size.add_argument("--eta", type=real, default=None, help="step size eta")
    size.add_argument("--delta", type=real, default=None, help=f"step size as eta = delta / d (default delta = {defaults['delta']:g})")
    group.add_argument("--steps", type=int, default=defaults["steps"], help=f"number of SGD steps (default {defaults['steps']})")
    group.add_argument("--trajectories", type=int, default=defaults["trajectories"], help=f"independent trajectories (default {defaults['trajectories']})")
    group.add_argument("--method", choices=("chain", "fast", "full"), default=defaults["method"], help=f"simulator (default {defaults['method']})")
    group.add_argument("--m0", type=real, default=None, help="initial overlap (default: u_hat_0 uniform on the sphere of span(W)^perp)")
    group.add_argument("--checkpoints", type=step_list, default=None, help="steps to record, comma-separated (default 21 evenly spaced)")
    samples = defaults.get("noise_samples", 200_000)
    group.add_argument("--noise-samples", type=int, default=samples, help=f"Monte Carlo samples of the noise terms (default {samples})")
    group.add_argument("--threshold", type=real, default=4.0, help="verdict threshold in standard errors (default 4)")
    group.add_argument("--noise-seed", type=int, default=None, help="seed of the noise Monte Carlo (default: --seed; its streams never meet the trajectories')")
    group.add_argument("--hit", type=real, default=None, metavar="EPS", help="record each trajectory's first step with m^2 >= 1 - EPS (censored at the last step)")
    parser.set_defaults(default_delta=defaults["delta"])


GENERAL_FLAGS = ("train_c_hat", "c_hat_lr", "unconstrained", "rank", "alpha", "output_scale", "student", "stop_when_hit")


def _general_options(parser: argparse.ArgumentParser) -> None:
    """The general model's switches (MATH.md §4b); any of them runs the state chain / full-d SGD of
    :mod:`popgrad.models.finetuning.general` (methods chain and full)."""
    group = parser.add_argument_group("general model (joint c_hat, free u_hat, rank r, ...; methods chain and full)")
    group.add_argument("--train-c-hat", action="store_true", help="train c_hat jointly with u_hat (same sample, simultaneous)")
    group.add_argument("--c-hat-lr", type=real, default=1.0, metavar="RATIO", help="eta_c = RATIO * eta (default 1)")
    group.add_argument("--unconstrained", action="store_true", help="u_hat free in R^d (not projected onto span(W)^perp)")
    group.add_argument("--rank", type=int, default=1, help="student rank r (Stiefel manifold, polar retraction; default 1)")
    group.add_argument("--alpha", type=real, default=0.0, help="teacher's component |P_W u| in span(W), in [0, 1] (default 0)")
    group.add_argument("--output-scale", choices=("one", "inverse_xi"), default="one", help="output multiplier 1 or 1/xi (App. B; default one)")
    group.add_argument("--student", choices=("exact", "linearized"), default="exact", help="the student network or its first order in the adapter (default exact)")
    group.add_argument("--stop-when-hit", action="store_true", help="with --hit: end each trajectory at its hitting step")


def _general_model(args, problem):
    """The general model from the flags, after the checks that both simulate and compare need."""
    from ..models.finetuning.general import general_model

    if args.method == "fast":
        raise UsageError("--method fast is not available for the general model (use chain or full)")
    if args.m0 is not None:
        raise UsageError("--m0 is not available for the general model (u_hat_0 is uniform on its sphere)")
    if args.stop_when_hit and args.hit is None:
        raise UsageError("--stop-when-hit needs --hit EPS")
    if getattr(args, "file_model", None) is not None:
        model_flags = [name for name in GENERAL_FLAGS if name != "stop_when_hit"]
        if given(args, *model_flags):
            raise UsageError(f"{given(args, *model_flags)[0]} next to --problem: the problem file sets the general model (edit its keys, or drop the flag)")
        return args.file_model
    return general_model(problem, rank=args.rank, alpha=args.alpha, output_scale=args.output_scale, train_c_hat=args.train_c_hat, c_hat_lr=args.c_hat_lr, unconstrained=args.unconstrained, student=args.student, seed=args.seed)


def _compare_general(args, problem) -> int:
    """``popgrad compare`` with the general model's switches: every observable against gradient flow and
    the one-step-mean map, a verdict per observable, and the report folder (NetCDF, JSON, residual plots)."""
    from ..analysis.general_comparison import compare_general

    if args.stop_when_hit:
        raise UsageError("--stop-when-hit is not available in compare (a stopped trajectory has no later observables to compare)")
    model = _general_model(args, problem)
    d, eta, checkpoints = _dynamics_settings(args, problem)
    samples = args.noise_samples if given(args, "noise_samples") else 16384
    result = compare_general(model, d, eta, checkpoints, trajectories=args.trajectories, method=args.method, seed=args.seed, threshold=args.threshold, progress=_progress(args), hit=args.hit, noise_seed=args.noise_seed, flow_starts=args.flow_starts, map_starts=args.map_starts, map_samples=samples, map_substeps=args.map_substeps)
    print(f"{problem!r}; rank {model.rank}, alpha = {model.alpha:g}, output scale {model.output_scale}, {model.student} student, c_hat {'trained (eta_c = ' + format(result.simulation.eta_c, '.4g') + ')' if model.train_c_hat else 'frozen'}, u_hat {'free' if model.unconstrained else 'in span(W)^perp'}")
    print(f"d = {d}, eta = {eta:.4g} (delta = {eta * d:.4g}), {args.trajectories} trajectories ({args.method})")
    names = list(result.predictions.values)
    for observable in result.observables:
        print(f"{observable}:")
        print(f"{'step':>10s} {'mean ± SE':>24s} " + " ".join(f"{name:>16s}" for name in names))
        mean, error = result.mean(observable), result.standard_error(observable)
        for index, step in enumerate(result.steps):
            predicted = " ".join(f"{result.predictions.mean(name, observable)[index]:>16.5f}" if observable in result.predictions.values[name] else f"{'':>16s}" for name in names)
            print(f"{int(step):>10d} {mean[index]:>11.5f} ± {error[index]:<10.5f} {predicted}")
    print(f"verdict: {result.verdict}")
    if args.hit is not None:
        times = result.simulation.hitting_times()
        print(f"hitting time (smallest squared singular value of U^T U_hat >= 1 - {args.hit:g}): median {times['median']}, quartiles {times['q25']} / {times['q75']}, censored {times['censored_fraction']:.3f} at step {times['horizon']}")
        for name in result.predictions.hitting_steps:
            predicted = result.predictions.hitting_summary(name)
            print(f"  predicted by {name} ({predicted['starts']} starts): median {predicted['median']}, quartiles {predicted['q25']} / {predicted['q75']}, not reached {predicted['censored_fraction']:.3f}")
    for path in result.save(args.out):
        print(f"wrote {path}")
    if args.strict and not all(conclusion == "consistent" for conclusions in result.conclusions.values() for conclusion in conclusions.values()):
        return EXIT_NEGATIVE
    return 0


def _simulate_general(args, problem) -> int:
    """``popgrad simulate`` with the general model's switches: observables m, <c_hat, c> (and its cosine),
    |P_W u_hat|, Phi per checkpoint with mean, SE and quantiles."""
    from ..models.finetuning.general import simulate_general

    model = _general_model(args, problem)
    d, eta, checkpoints = _dynamics_settings(args, problem)
    result = simulate_general(model, d, eta, checkpoints, trajectories=args.trajectories, method=args.method, seed=args.seed, hit=args.hit, stop_when_hit=args.stop_when_hit, progress=_progress(args))
    if args.out:
        from ..analysis.general_comparison import write_simulation_netcdf

        with atomic_path(args.out) as temporary:
            write_simulation_netcdf(result, temporary)
    if args.format == "json":
        from ..analysis.general_comparison import simulation_record

        print(json.dumps(json_safe(simulation_record(result)), indent=1, allow_nan=False))
        return 0
    summary = result.summary()
    settings = {key: value for key, value in model.settings().items() if key not in ("C", "C_hat")}
    print(f"{problem!r}; {', '.join(f'{key} = {value}' for key, value in settings.items())}")
    print(f"d = {d}, eta = {eta:.4g} (delta = {eta * d:.4g}), eta_c = {result.eta_c:.4g}, {args.trajectories} trajectories ({args.method}), {result.seconds:.1f} s")
    names = list(summary)
    print(f"{'step':>10s} " + " ".join(f"{name + ' mean ± SE':>26s}" for name in names))
    for index, step in enumerate(result.steps):
        cells = []
        for name in names:
            mean, error = summary[name]["mean"][index], summary[name]["standard_error"]
            cells.append(f"{mean:>12.5f} ± {error[index]:<11.5f}" if error is not None else f"{mean:>26.5f}")
        print(f"{int(step):>10d} " + " ".join(f"{cell:>26s}" for cell in cells))
    if args.hit is not None:
        times = result.hitting_times()
        print(f"hitting time (smallest squared singular value of U^T U_hat >= 1 - {args.hit:g}): median {times['median']}, quartiles {times['q25']} / {times['q75']}, censored {times['censored_fraction']:.3f} at step {times['horizon']}")
    return 0


def _dynamics_settings(args, problem) -> tuple:
    """``(d, eta, checkpoints)`` from the flags; the ranges are the library's."""
    from .._validation import check_integer
    from ..dynamics.trajectories import step_schedule

    d = args.dimension
    if problem.W is not None:  # the problem's own input dimension (a file's W, or --features random --d)
        if given(args, "dimension") and d != problem.W.shape[1]:
            raise UsageError(f"--d {d} contradicts the problem's W, which has input dimension {problem.W.shape[1]} (drop --d to use it)")
        d = problem.W.shape[1]
    d = check_integer(d, "d", problem.rank + 3) if d is not None else None
    if d is None:
        raise UsageError("--d is required")
    refuse_together(args, "checkpoints", ("steps",), "the last checkpoint is the number of steps")
    delta = (args.default_delta if args.delta is None else args.delta) if args.eta is None else None
    eta, checkpoints = step_schedule(d, args.eta, delta, args.checkpoints, None if args.checkpoints is not None else args.steps)
    checkpoints = checkpoints.tolist()
    return d, eta, checkpoints


def _print_comparison(comparisons: dict) -> None:
    import numpy as np

    first = next(iter(comparisons.values()))
    names = list(first.predictions.values)
    widths = [max(16, len(name)) for name in names]
    header = f"{'step':>9s} " + " ".join(f"{label + ' mean ± SE':>22s}" for label in comparisons) + " " + " ".join(f"{name:>{width}s}" for name, width in zip(names, widths))
    print(header)
    for index, step in enumerate(first.steps):
        cells = " ".join(f"{c.mean[index]:>12.5f} ± {c.standard_error[index]:<7.5f}" for c in comparisons.values())
        predictions = " ".join(f"{first.predictions.values[name][index]:>{width}.5f}" for name, width in zip(names, widths))
        print(f"{int(step):>9d} {cells} {predictions}")
    for name, (lower, upper) in first.predictions.bands.items():
        print(f"{name} band (noise Monte Carlo, 2 SE): width <= {float(np.max(np.abs(upper - lower))):.2e}")
    for label, comparison in comparisons.items():
        print(f"verdict [{label}]: {comparison.verdict}")


def _simulate_or_compare(args) -> int:
    """``simulate`` prints (table or JSON) and optionally saves the NetCDF; ``compare`` also writes the
    report folder and, with --strict, exits 3 unless every prediction is conclusively consistent."""
    from ..analysis.comparison import compare

    if args.out:
        (check_output_folder if args.report else check_output_file)(args.out, "out")
    problem = _problem_from_args(args)
    if given(args, *GENERAL_FLAGS) or getattr(args, "file_model", None) is not None:
        if not args.report:
            return _simulate_general(args, problem)
        return _compare_general(args, problem)
    if args.report and given(args, "flow_starts", "map_starts", "map_substeps"):
        raise UsageError(f"{given(args, 'flow_starts', 'map_starts', 'map_substeps')[0]} applies to the general model only (give one of its flags, e.g. --rank 1)")
    d, eta, checkpoints = _dynamics_settings(args, problem)
    result = compare(problem, d, eta, checkpoints, trajectories=args.trajectories, method=args.method, m0=args.m0, seed=args.seed, noise_samples=args.noise_samples, noise_seed=args.noise_seed, threshold=args.threshold, progress=_progress(args), hit=args.hit)
    if getattr(args, "format", "table") == "json":
        print(json.dumps(json_safe(result.to_json_dict()), indent=1, allow_nan=False))
    else:
        print(f"{problem!r}; d = {d}, eta = {eta:.4g} (delta = {eta * d:.4g}), {args.trajectories} trajectories ({args.method})")
        _print_comparison({args.method: result})
        if args.hit is not None:
            summary = result.simulation.hitting_times()
            print(f"hitting time (m^2 >= 1 - {args.hit:g}): median {summary['median']}, quartiles {summary['q25']} / {summary['q75']}, censored {summary['censored_fraction']:.3f} at step {summary['horizon']}")
    if args.report:
        for path in result.save(args.out):
            print(f"wrote {path}")
        if args.strict and not all(result.consistent.values()):
            return EXIT_NEGATIVE
    elif args.out:
        with atomic_path(args.out) as temporary:
            result.write_netcdf(temporary)
        if getattr(args, "format", "table") != "json":
            print(f"wrote {args.out}")
    return 0


def _run(args) -> int:
    from ..analysis.comparison import Comparison, versions
    from ..models.finetuning.population import drift_fixed_points, drift_interpolant
    from ..models.finetuning.predictions import predict
    from ..models.finetuning.simulation import simulate
    from ..numerics.compiled import compile_ahead
    from ..report.plots import plot_population

    begin = time.perf_counter()
    if given(args, "method"):
        raise UsageError(f"{given(args, 'method')[0]} has no effect on popgrad run, which runs full-d SGD and the exact chain side by side (use popgrad compare --method)")
    out = check_output_folder(args.out, "out")
    problem = _problem_from_args(args)
    d, eta, checkpoints = _dynamics_settings(args, problem)
    print(f"popgrad {__version__} — theory vs Monte Carlo for rank-1 fine-tuning (Dayi & Chen)")
    print(f"problem: {problem!r}; d = {d}, eta = {eta:.4g} (delta = eta d = {eta * d:g}), {checkpoints[-1]} steps")
    # compile the simulations' kernels while the predictions compute (kernels release the GIL)
    ahead = compile_ahead(*(partial(simulate, problem, d, eta, [0, 1], trajectories=1, method=method, m0=args.m0, seed=args.seed, progress=False) for method in ("fast", "chain")))
    points = drift_fixed_points(problem)
    fast = drift_interpolant(problem)
    print(f"h(0) = {points.h0:.6g}; zeros of h on [-1, 1]: {', '.join(f'{z:.6g}' for z in points.zeros) or 'none'}; "
          f"fast evaluator: {fast.interpolant.panels} Chebyshev panels, measured error {fast.measured_error:.1e}")
    predictions = predict(problem, d, eta, checkpoints, m0=args.m0, samples=args.noise_samples, seed=args.seed if args.noise_seed is None else args.noise_seed)
    # full-d SGD with span(W) rotated onto the first coordinates: the same law as a random embedding (the
    # Gaussian input is rotation invariant) at 2.5x the speed; `popgrad compare --method full` runs the other
    full = simulate(problem, d, eta, checkpoints, trajectories=args.trajectories, method="fast", m0=args.m0, seed=args.seed, progress=_progress(args), hit=args.hit)
    chain = simulate(problem, d, eta, checkpoints, trajectories=args.chain_trajectories, method="chain", m0=args.m0, seed=args.seed + 1, progress=_progress(args), hit=args.hit)
    ahead.join()
    results = {f"full-d SGD ({full.trajectories})": Comparison(problem, full, predictions, args.threshold), f"chain ({chain.trajectories})": Comparison(problem, chain, predictions, args.threshold)}
    _print_comparison(results)
    out.mkdir(exist_ok=True)
    write_text(out / INCOMPLETE, "written by popgrad run; removed once the report is complete\n")
    for label, comparison in zip(("full", "chain"), results.values()):
        comparison.save(out / label)
    with atomic_path(out / "drift.png") as temporary:
        plot_population(problem, points).savefig(temporary, dpi=120, format="png")
    provenance = {"command": "popgrad run", "problem": problem.to_dict(), "d": d, "eta": eta, "steps": int(checkpoints[-1]), "seed": args.seed, "checkpoints": list(map(int, checkpoints)), "versions": versions(), "seconds": time.perf_counter() - begin}
    write_json(out / "provenance.json", provenance)
    problem.save(out / "problem.json")
    (out / INCOMPLETE).unlink()
    print(f"report: {out}/ (drift.png, problem.json, provenance.json, full/ and chain/: comparison.png, .json, .nc)")
    print(f"done in {time.perf_counter() - begin:.1f} s")
    return 0
