"""The fine-tuning model's commands: ``problem``, ``h``, ``simulate``, ``compare`` and ``run``.

Ranges are checked once, by the library; the command line only turns flags into arguments."""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

from .. import __version__
from .._io import INCOMPLETE, atomic_path, check_output_file, check_output_folder, write_json, write_text
from .._validation import InvalidArgument
from .common import EXIT_NEGATIVE, UsageError, add_force, check_figure_path, check_outputs, fit_for_print, save_figure, flag_for, given, grid, naming_file, print_json, real, refuse_together, step_list

__all__ = ["register"]

FEATURES = ("orthonormal", "random", "glm", "claim2")
# 2e6 noise samples: with 200 000 the band of the noise ODEs is ~6 SE of the 500-trajectory chain wide,
# and the verdict could only be inconclusive
RUN_DEFAULTS = {"d": 1000, "delta": 0.05, "steps": 50000, "trajectories": 24, "method": "fast", "noise_samples": 2_000_000}
RUN_CHAIN_TRAJECTORIES = 500
#: the files of a comparison report folder (Comparison.save)
COMPARISON_FILES = ("comparison.nc", "comparison.json", "comparison.png", INCOMPLETE)
SIMULATE_DEFAULTS = {"d": 1000, "delta": 0.25, "steps": 30000, "trajectories": 256, "method": "chain"}


def register(commands) -> None:
    run = commands.add_parser("run", help="the main job: compare on the built-in defaults, full-d SGD and the exact chain side by side")
    _problem_options(run, {"d": RUN_DEFAULTS["d"]})
    _dynamics_options(run, RUN_DEFAULTS)
    _model_options(run)
    _prediction_options(run)
    run.add_argument("--chain-trajectories", type=int, default=RUN_CHAIN_TRAJECTORIES, help=f"trajectories of the exact chain (default {RUN_CHAIN_TRAJECTORIES})")
    run.add_argument("--out", default="popgrad-report", help="report folder (default popgrad-report/)")
    run.add_argument("--strict", action="store_true", help=f"exit {EXIT_NEGATIVE} unless every prediction is conclusively consistent with both runs")
    add_force(run)
    run.set_defaults(handler=_run)

    simulate = commands.add_parser("simulate", help="online SGD of any model: its observables per checkpoint")
    _problem_options(simulate, {"d": SIMULATE_DEFAULTS["d"]})
    _dynamics_options(simulate, SIMULATE_DEFAULTS)
    _model_options(simulate)
    simulate.add_argument("--stop-when-hit", action="store_true", help="with --hit: end each trajectory at its hitting step")
    simulate.add_argument("--format", choices=["table", "json"], default="table")
    simulate.add_argument("--out", help="also save the labelled arrays (NetCDF, .nc)")
    add_force(simulate)
    simulate.set_defaults(handler=_simulate)

    compare = commands.add_parser("compare", help="simulate, predict every observable, and write a report with the verdict")
    _problem_options(compare, {"d": SIMULATE_DEFAULTS["d"]})
    _dynamics_options(compare, SIMULATE_DEFAULTS)
    _model_options(compare)
    _prediction_options(compare)
    compare.add_argument("--format", choices=["table", "json"], default="table")
    compare.add_argument("--out", default="popgrad-compare", help="report folder (default popgrad-compare/)")
    compare.add_argument("--strict", action="store_true", help=f"exit {EXIT_NEGATIVE} unless every prediction is conclusively consistent")
    add_force(compare)
    compare.set_defaults(handler=_compare)

    h = commands.add_parser("h", help="population drift h(m) and loss Phi(m) of a problem")
    _problem_options(h)
    h.add_argument("--m", type=grid, default=grid("-1:1:11"), help="m values: list or LOW:HIGH:COUNT (default -1:1:11)")
    h.add_argument("--format", choices=["table", "json", "latex"], default="table")
    h.add_argument("--plot", metavar="FILE.svg", help="also plot h and Phi on [-1, 1], sized for a 3.3 in column (the suffix picks the format: .svg, .pdf, .eps, .ps, .png)")
    add_force(h)
    h.set_defaults(handler=_h)

    problem = commands.add_parser("problem", help="write a problem specification (JSON)")
    _problem_options(problem)
    problem.add_argument("--out", required=True, help="output JSON file (-: print it)")
    add_force(problem)
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
    group.add_argument("--convention", choices=("normalized", "raw", "common"), default="normalized", help="neurons divided by their norms (the paper's proofs), as they are, or all times one prefactor rho with the output scaled by 1/xi (App. B) (default normalized)")
    group.add_argument("--prefactor", type=real, default=None, metavar="RHO", help="the common convention's prefactor rho: v_i = rho (w_i + xi c_i u) (default k / (k + xi^2))")
    group.add_argument("--c-distribution", choices=("quantized", "sphere"), default="quantized", help="law of c, c_hat")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (they are shown only on a terminal anyway)")


#: the flags that describe a problem: a problem file replaces them all
PROBLEM_FLAGS = ("activation", "k", "xi", "features", "convention", "prefactor", "c_distribution", "problem_seed")


def _problem_from_args(args):
    from ..models.finetuning import spec

    refuse_together(args, "problem", PROBLEM_FLAGS, "the problem file sets the problem (edit the file, or drop --problem)")
    if args.features == "claim2" and given(args, "c_distribution"):
        raise UsageError(f"{given(args, 'c_distribution')[0]} has no effect with --features claim2, which fixes c (c_i = ±1/sqrt(k))")
    if getattr(args, "handler", None) in (_h, _problem) and given(args, "dimension") and (args.problem or args.features != "random"):
        raise UsageError(f"{given(args, 'dimension')[0]} has no effect here: it is the input dimension of --features random only")
    if args.problem:
        try:
            return _reduced_problem_from_file(args.problem)
        except InvalidArgument as exc:
            raise naming_file(args.problem, "--problem", exc) from None
    seed = args.seed if args.problem_seed is None else args.problem_seed
    if args.prefactor is not None and args.convention != "common":
        raise UsageError(f"--prefactor is the common convention's (v_i = rho (w_i + xi c_i u)); add --convention common, or drop it (--convention {args.convention} takes none)")
    common = {"seed": seed, "convention": args.convention, "prefactor": args.prefactor}
    if args.features == "random" and args.dimension is None:
        raise UsageError("--features random needs --d (the input dimension)")
    with flag_for("seed", None if args.problem_seed is None else "--problem-seed"):
        if args.features == "random":
            return spec.random_features_problem(args.activation, args.k, args.xi, d=args.dimension, c_distribution=args.c_distribution, **common)
        if args.features == "claim2":
            return spec.claim2_problem(args.activation, args.k, args.xi, **common)
        constructor = spec.orthonormal_problem if args.features == "orthonormal" else spec.glm_problem
        return constructor(args.activation, args.k, args.xi, c_distribution=args.c_distribution, **common)


def _reduced_problem_from_file(path):
    """The problem of a problem file, or of a model file whose model reduces to the overlap (``popgrad run``'s
    ``model.json``): h(m) and Phi(m) are the reduced model's."""
    from .._io import read_json_file
    from ..dynamics.protocol import model_from_dict
    from ..models.finetuning import spec

    data = read_json_file(path, "problem file", "problem")
    if isinstance(data, dict) and set(data) & set(spec.GENERAL_MODEL_KEYS):
        model = model_from_dict(data)
        if not getattr(model, "reduces_to_overlap", False):
            raise UsageError(f"--problem: {path} holds a model that does not reduce to the overlap m; h(m) and Phi(m) are defined for the rank-1 model with every switch at its default")
        return model.reduced_problem()
    return spec.load_problem(path)


def _progress(args):
    """Progress bars: never with --quiet, otherwise only on a terminal (tqdm's ``disable=None``)."""
    return False if args.quiet else None


def _problem(args) -> int:
    if args.out == "-":  # standard output: the JSON itself, nothing else
        print(_problem_from_args(args).to_json())
        return 0
    check_output_file(args.out, "out")
    check_outputs(args, [args.out])
    problem = _problem_from_args(args)
    problem.save(args.out)
    print(f"wrote {args.out}: {problem!r}")
    return 0


def _stacked_population(problem, points=None):
    """h and Phi one above the other, for a column."""
    from matplotlib.figure import Figure

    from ..report.plots import plot_population

    figure = Figure(figsize=(3.3, 5.0))
    return plot_population(problem, points, axes=figure.subplots(2, 1))


def _h(args) -> int:
    from ..models.finetuning.population import drift_fixed_points, population_drift, population_loss
    from ..report.plots import plot_population
    from ..report.tables import Table

    if args.plot is not None:
        check_output_file(args.plot, "plot")
        check_figure_path(args.plot, "--plot")
        check_outputs(args, [args.plot], "plot")
    problem = _problem_from_args(args)
    h = population_drift(problem, args.m)
    loss = population_loss(problem, args.m)
    points = drift_fixed_points(problem)
    if args.plot:
        save_figure(_stacked_population(problem), args.plot, "--plot")
    if args.format == "json":
        payload = {"problem": problem.to_dict(), "m": args.m.tolist(), "h": h.tolist(), "Phi": loss.tolist(), "h0": points.h0, "zeros": list(points.zeros), "popgrad": __version__}
        print_json(payload)
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
# simulate, compare, run: one path for every model
# ------------------------------------------------------------------------------------------------


def _dynamics_options(parser: argparse.ArgumentParser, defaults: dict) -> None:
    group = parser.add_argument_group("dynamics")
    size = group.add_mutually_exclusive_group()
    size.add_argument("--eta", type=real, default=None, help="step size eta")
    size.add_argument("--delta", type=real, default=None, help=f"step size as eta = delta / d (default delta = {defaults['delta']:g})")
    group.add_argument("--steps", type=int, default=defaults["steps"], help=f"number of SGD steps (default {defaults['steps']})")
    group.add_argument("--trajectories", type=int, default=defaults["trajectories"], help=f"independent trajectories (default {defaults['trajectories']})")
    group.add_argument("--method", choices=("chain", "fast", "full"), default=defaults["method"], help=f"simulator: the exact chain, SGD in dimension d rotated, or in the model's (randomly embedded) geometry (default {defaults['method']})")
    group.add_argument("--m0", type=real, default=None, help="initial overlap <u, u_hat_0> (rank 1; default: u_hat_0 uniform on its sphere)")
    group.add_argument("--checkpoints", type=step_list, default=None, help="steps to record, comma-separated (default 21 evenly spaced)")
    group.add_argument("--hit", type=real, default=None, metavar="EPS", help="record each trajectory's first step with m^2 >= 1 - EPS (rank r: the smallest squared singular value of U^T U_hat; censored at the last step)")
    parser.set_defaults(default_delta=defaults["delta"])


#: the flags of the fine-tuning model's switches: a model file replaces them
MODEL_FLAGS = ("train_c_hat", "c_hat_lr", "unconstrained", "rank", "alpha", "output_scale", "student")


def _model_options(parser: argparse.ArgumentParser) -> None:
    """The fine-tuning model's switches (MATH.md §4b); with all at their defaults the model reduces to the
    overlap and its fast paths run."""
    group = parser.add_argument_group("the fine-tuning model's switches (defaults: the rank-1 model of the overlap m)")
    group.add_argument("--train-c-hat", action="store_true", help="train c_hat jointly with u_hat (same sample, simultaneous)")
    group.add_argument("--c-hat-lr", type=real, default=1.0, metavar="RATIO", help="eta_c = RATIO * eta (default 1)")
    group.add_argument("--unconstrained", action="store_true", help="u_hat free in R^d (not projected onto span(W)^perp)")
    group.add_argument("--rank", type=int, default=1, help="student rank r (Stiefel manifold, polar retraction; default 1)")
    group.add_argument("--alpha", type=real, default=0.0, help="teacher's component |P_W u| in span(W), in [0, 1] (default 0)")
    group.add_argument("--output-scale", choices=("one", "inverse_xi"), default=None, help="output multiplier 1 or 1/xi (App. B; default: the convention's, 1/xi in common, else one)")
    group.add_argument("--student", choices=("exact", "linearized"), default="exact", help="the student network or its first order in the adapter (default exact)")


def _prediction_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("predictions (each option goes to the predictions that take it)")
    group.add_argument("--noise-samples", type=int, default=None, help="Monte Carlo samples of the predictions' noise terms (default: 200000 for the finite-step ODEs, 16384 for the one-step mean)")
    group.add_argument("--noise-seed", type=int, default=None, help="seed of that Monte Carlo (default: --seed; its streams never meet the trajectories')")
    group.add_argument("--flow-starts", type=int, default=None, help="starting states of the state gradient flow: the first trajectories' own (default 64)")
    group.add_argument("--map-starts", type=int, default=None, help="starting states of the one-step-mean map (default 4)")
    group.add_argument("--map-substeps", type=int, default=None, help="RK4 steps of the one-step-mean map over the horizon (default 32)")
    group.add_argument("--ode-starts", type=int, default=None, help="committee machines: the trajectories whose starting overlaps the ODE predictions start from (default 16)")
    group.add_argument("--threshold", type=real, default=4.0, help="verdict threshold in standard errors (default 4)")


def _model_from_args(args):
    """The model: a model file (any family, ``--problem``), or the fine-tuning model from the flags."""
    from ..models.finetuning.model import general_model

    switches = {"rank": args.rank, "alpha": args.alpha, "output_scale": args.output_scale, "train_c_hat": args.train_c_hat, "c_hat_lr": args.c_hat_lr, "unconstrained": args.unconstrained, "student": args.student}
    if args.problem:
        from .._io import read_model_file
        from ..dynamics.protocol import model_from_dict

        refuse_together(args, "problem", PROBLEM_FLAGS, "the model file sets the problem (edit the file, or drop --problem)")
        data = read_model_file(args.problem, "model file", "problem")  # an object, or refused naming the file
        if data.get("model", "finetuning") != "finetuning":
            refuse_together(args, "problem", MODEL_FLAGS, f"the fine-tuning model's switches do not apply to a {data['model']!r} model")
            try:
                return model_from_dict(data)
            except InvalidArgument as exc:
                raise naming_file(args.problem, "--problem", exc) from None
        # a problem file with switch flags: the flags set the switches the file leaves at their defaults
        set_by_file = [name for name in MODEL_FLAGS if name in data or (name == "alpha" and ("u" in data or "U" in data))]
        clash = [flag for flag in given(args, *set_by_file)]
        if clash:
            raise UsageError(f"{clash[0]} next to --problem: the model file sets it (edit the file, or drop the flag)")
        given_switches = {name: switches[name] for name in MODEL_FLAGS if given(args, name)}
        try:
            return model_from_dict(data | given_switches)
        except InvalidArgument as exc:
            if exc.parameter in given_switches:  # a flag's value, not the file
                raise
            raise naming_file(args.problem, "--problem", exc) from None
    problem = _problem_from_args(args)
    seed = args.seed if args.problem_seed is None else args.problem_seed  # the model's own draws go with the problem's
    with flag_for("seed", None if args.problem_seed is None else "--problem-seed"):
        return general_model(problem, seed=seed, **switches)


def _prediction_settings(args, model=None) -> dict:
    """The prediction options given on the command line (the predictions' own defaults otherwise)."""
    names = ("noise_samples", "noise_seed", "flow_starts", "map_starts", "map_substeps", "ode_starts")
    if model is not None and getattr(model, "reduces_to_overlap", False) and args.flow_starts is not None:
        raise UsageError("--flow-starts sets the starts of the state gradient flow; this model reduces to the overlap, whose gradient flow starts from 33 quantiles of m_0")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _dynamics_settings(args, model) -> tuple:
    """``(d, eta, checkpoints)`` from the flags; the ranges are the library's."""
    from ..dynamics.trajectories import step_schedule

    d = args.dimension
    W = getattr(getattr(model, "problem", None), "W", None)
    if W is not None:  # the problem's own input dimension (a file's W, or --features random --d)
        if given(args, "dimension") and d != W.shape[1]:
            raise UsageError(f"--d {d} contradicts the problem's W, which has input dimension {W.shape[1]} (drop --d to use it)")
        d = W.shape[1]
    if d is None:
        raise UsageError("--d is required")
    d = model.check_dimension(d, args.method)
    refuse_together(args, "checkpoints", ("steps",), "the last checkpoint is the number of steps")
    delta = (args.default_delta if args.delta is None else args.delta) if args.eta is None else None
    eta, checkpoints = step_schedule(d, args.eta, delta, args.checkpoints, None if args.checkpoints is not None else args.steps)
    return d, eta, checkpoints.tolist()


def _header(model, run) -> None:
    print(model.describe())
    extra = f", eta_c = {run.settings['eta_c']:.4g}" if "eta_c" in run.settings else ""
    print(f"d = {run.d}, eta = {run.eta:.4g} (delta = {run.eta * run.d:.4g}){extra}, {run.trajectories} trajectories ({run.method}: {run.settings.get('path', '')}), {run.seconds:.1f} s")


def _print_hitting(run, predictions=None) -> None:
    times = run.hitting_times()
    print(f"hitting time (m^2 >= 1 - {run.hit:g}; rank r: smallest squared singular value of U^T U_hat): median {times['median']}, quartiles {times['q25']} / {times['q75']}, censored {times['censored_fraction']:.3f} at step {times['horizon']}")
    for name in (predictions.hitting_steps if predictions is not None else ()):
        predicted = predictions.hitting_summary(name)
        print(f"  predicted by {name} ({predicted['starts']} starts): median {predicted['median']}, quartiles {predicted['q25']} / {predicted['q75']}, not reached {predicted['censored_fraction']:.3f}")


def _simulate(args) -> int:
    """``popgrad simulate``: every observable per checkpoint (mean ± SE; JSON: mean, SE and quantiles),
    optionally the labelled arrays as NetCDF."""
    from ..dynamics.engine import simulate

    if args.out is not None:
        check_output_file(args.out, "out")
        check_outputs(args, [args.out])
    if args.stop_when_hit and args.hit is None:
        raise UsageError("--stop-when-hit needs --hit EPS")
    model = _model_from_args(args)
    d, eta, checkpoints = _dynamics_settings(args, model)
    run = simulate(model, d, eta, checkpoints, trajectories=args.trajectories, method=args.method, m0=args.m0, seed=args.seed, hit=args.hit, stop_when_hit=args.stop_when_hit, progress=_progress(args))
    if args.out:
        with atomic_path(args.out) as temporary:
            run.write_netcdf(temporary)
    if args.format == "json":
        print_json(run.to_json_dict())
        return 0
    _header(model, run)
    names = [name for name, values in run.observables.items() if values.ndim == 2]  # scalar observables (the JSON and NetCDF hold every one)
    print(f"{'step':>10s} " + " ".join(f"{name + ' mean ± SE':>26s}" for name in names))
    for index, step in enumerate(run.steps):
        cells = []
        for name in names:
            mean, error = run.mean(name)[index], run.standard_error(name)[index]
            cells.append(f"{mean:>12.5f} ± {error:<11.5f}" if run.trajectories > 1 else f"{mean:>26.5f}")
        print(f"{int(step):>10d} " + " ".join(f"{cell:>26s}" for cell in cells))
    if args.hit is not None:
        _print_hitting(run)
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _print_comparison(comparisons: dict) -> None:
    """Per observable, the Monte Carlo mean ± SE of each comparison beside every prediction, then the
    verdicts."""
    first = next(iter(comparisons.values()))
    names = list(first.predictions.values)
    widths = [max(16, len(name)) for name in names]
    for observable in first.observables:
        if first.run.observables[observable].ndim != 2:  # an observable with entries (Q, R): its verdict below, its values in the report
            continue
        print(f"{observable}:")
        print(f"{'step':>10s} " + " ".join(f"{label + ' mean ± SE':>24s}" for label in comparisons) + " " + " ".join(f"{name:>{width}s}" for name, width in zip(names, widths)))
        for index, step in enumerate(first.steps):
            cells = " ".join(f"{c.mean(observable)[index]:>12.5f} ± {c.standard_error(observable)[index]:<9.5f}" for c in comparisons.values())
            predicted = " ".join(f"{first.predictions.mean(name, observable)[index]:>{width}.5f}" if observable in first.predictions.values[name] else f"{'':>{width}s}" for name, width in zip(names, widths))
            print(f"{int(step):>10d} {cells} {predicted}")
    for label, comparison in comparisons.items():
        print(f"verdict [{label}]: {comparison.verdict}")
    for name in names:  # a prediction's fixed points (the committee ODE's), beside the simulation
        for point_name, point in first.predictions.settings.get(name, {}).get("fixed_points", {}).items():
            if "error" in point:
                print(f"{name}: {point_name} fixed point not found ({point['error']})")
            else:
                escape = f"escape rate {point['escape_rate']:.4g} (largest positive real eigenvalue)" if point["escape_rate"] > 0 else "stable (no eigenvalue with a positive real part)"
                print(f"{name}: {point_name} fixed point eps_g = {point['eps_g']:.6g}, {escape}, residual {point['residual']:.1e}")


def _compare(args) -> int:
    """``popgrad compare``: simulate, predict every observable, print the table and the verdict, write the
    report folder; with --strict, exit 3 unless every prediction is conclusively consistent."""
    from ..analysis.comparison import compare

    check_output_folder(args.out, "out")
    check_outputs(args, [Path(args.out, name) for name in COMPARISON_FILES])
    model = _model_from_args(args)
    d, eta, checkpoints = _dynamics_settings(args, model)
    result = compare(model, d, eta, checkpoints, trajectories=args.trajectories, method=args.method, m0=args.m0, seed=args.seed, threshold=args.threshold, progress=_progress(args), hit=args.hit, **_prediction_settings(args, model))
    paths = result.save(args.out)
    if args.format == "json":
        print_json(result.to_json_dict())
    else:
        _header(model, result.run)
        _print_comparison({args.method: result})
        if args.hit is not None:
            _print_hitting(result.run, result.predictions)
        for path in paths:
            print(f"wrote {path}")
    if args.strict and not all(result.consistent.values()):
        return EXIT_NEGATIVE
    return 0


def _run(args) -> int:
    """``popgrad run``: compare on the built-in defaults, full-d SGD (rotated) and the exact chain side by
    side, into one report folder."""
    from .._io import versions
    from ..analysis.comparison import Comparison
    from ..dynamics.engine import chosen_predictions, predict, simulate
    from ..numerics.compiled import compile_ahead
    from ..report.plots import plot_population

    begin = time.perf_counter()
    if given(args, "method"):
        raise UsageError(f"{given(args, 'method')[0]} has no effect on popgrad run, which runs full-d SGD and the exact chain side by side (use popgrad compare --method)")
    if not 1 <= args.chain_trajectories <= 10**8:
        raise UsageError(f"--chain-trajectories must lie in [1, 100000000], got {args.chain_trajectories}")
    out = check_output_folder(args.out, "out")
    check_outputs(args, [out / name for name in ("drift.png", "model.json", "provenance.json", INCOMPLETE)] + [out / part / name for part in ("full", "chain") for name in COMPARISON_FILES])
    model = _model_from_args(args)
    d, eta, checkpoints = _dynamics_settings(args, model)
    reduced = getattr(model, "reduces_to_overlap", False)
    from ..dynamics.protocol import family_of

    full_method = "fast" if "fast" in family_of(model).methods else "full"  # rotated SGD where the family has it
    options = _prediction_settings(args, model)
    if reduced:
        options = {"noise_samples": RUN_DEFAULTS["noise_samples"]} | options
    chosen_predictions(model, None, options)  # bad prediction options end here, before the simulations
    print(f"popgrad {__version__} — theory vs Monte Carlo" + (" for low-rank fine-tuning (Dayi & Chen)" if model.family == "finetuning" else f" ({model.family})"))
    print(f"model: {model.describe()}; d = {d}, eta = {eta:.4g} (delta = eta d = {eta * d:g}), {checkpoints[-1]} steps")
    # compile the simulations' kernels while the predictions compute (kernels release the GIL)
    ahead = compile_ahead(*(partial(simulate, model, d, eta, [0, 1], trajectories=1, method=method, m0=args.m0, seed=args.seed) for method in (full_method, "chain")))
    if reduced:
        from ..models.finetuning.population import drift_fixed_points, drift_interpolant

        problem = model.reduced_problem()
        points = drift_fixed_points(problem)
        fast = drift_interpolant(problem)
        print(f"h(0) = {points.h0:.6g}; zeros of h on [-1, 1]: {', '.join(f'{z:.6g}' for z in points.zeros) or 'none'}; "
              f"fast evaluator: {fast.interpolant.panels} Chebyshev panels, measured error {fast.measured_error:.1e}")
    # full-d SGD with the structure rotated onto the first coordinates: the same law as a random embedding
    # (the Gaussian input is rotation invariant) at 2.5x the speed; `popgrad compare --method full` runs the other
    full = simulate(model, d, eta, checkpoints, trajectories=args.trajectories, method=full_method, m0=args.m0, seed=args.seed, progress=_progress(args), hit=args.hit)
    chain = simulate(model, d, eta, checkpoints, trajectories=args.chain_trajectories, method="chain", m0=args.m0, seed=args.seed + 1, progress=_progress(args), hit=args.hit)
    ahead.join()
    predictions = predict(full, **options)
    # where the model reduces to the overlap the predictions start from the law of m_0, not from the runs'
    # own starting states: one set serves both runs
    results = {f"full-d SGD ({full.trajectories})": Comparison(full, predictions, args.threshold), f"chain ({chain.trajectories})": Comparison(chain, predictions if reduced else predict(chain, **options), args.threshold)}
    _print_comparison(results)
    out.mkdir(exist_ok=True)
    write_text(out / INCOMPLETE, "written by popgrad run; removed once the report is complete\n")
    for label, comparison in zip(("full", "chain"), results.values()):
        comparison.save(out / label)
    if reduced:
        with atomic_path(out / "drift.png") as temporary:
            fit_for_print(_stacked_population(problem, points)).savefig(temporary, dpi=300, format="png")
    provenance = {"command": "popgrad run", "model": model.to_dict(), "d": d, "eta": eta, "steps": int(checkpoints[-1]), "seed": args.seed, "checkpoints": list(map(int, checkpoints)), "versions": versions(), "seconds": time.perf_counter() - begin}
    write_json(out / "provenance.json", provenance)
    write_json(out / "model.json", model.to_dict())
    (out / INCOMPLETE).unlink()
    print(f"report: {out}/ ({'drift.png, ' if reduced else ''}model.json, provenance.json, full/ and chain/: comparison.png, .json, .nc)")
    print(f"done in {time.perf_counter() - begin:.1f} s")
    if args.strict and not all(all(comparison.consistent.values()) for comparison in results.values()):
        return EXIT_NEGATIVE
    return 0
