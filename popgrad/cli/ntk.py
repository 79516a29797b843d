"""``popgrad ntk``: LoRA in the NTK regime (Jang, Lee, Ryu, ICML 2024; MATH.md §7).

* ``ntk landscape PROBLEM.json --rank R --starts S --seed SEED [--format json]``: minimise the LoRA objective
  from S random starts and certify each distinct limit against the convex (nuclear-norm) optimum;
* ``ntk build``: write a problem file (Gaussian measurements, or a small network's Jacobian);
* ``ntk threshold``: the frequency of spurious limits against the rank over random instances (table, plot);
* ``ntk example``: a 2 x 2 instance with a spurious local minimum, verified in exact arithmetic.
"""

from __future__ import annotations

import math


from .._io import versions
from .._validation import InvalidArgument
from .common import UsageError, add_force, add_json_out, check_figure_path, check_json_out, check_outputs, save_figure, given, save_json_out, naming_file, non_negative_int, print_json, real, write

__all__ = ["register"]


def _positive_ints(text: str) -> list:
    import argparse

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ranks, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"ranks must be integers >= 1, got {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"a rank is listed twice in {text!r} (each rank is studied once)")
    return values


def _add_builder_flags(parser) -> None:
    parser.add_argument("--kind", choices=("gaussian", "network"), default="gaussian", help="Gaussian measurements (default) or the Jacobian of a small network")
    parser.add_argument("--m", type=non_negative_int, default=8, help="rows of the adapted matrix (default 8)")
    parser.add_argument("--n", type=non_negative_int, default=8, help="columns of the adapted matrix (default 8)")
    parser.add_argument("--data", type=non_negative_int, default=6, help="data points N (default 6)")
    parser.add_argument("--outputs", type=non_negative_int, default=1, help="outputs per data point K (default 1)")
    parser.add_argument("--tokens", type=non_negative_int, default=4, help="network: inputs per data point (default 4)")
    parser.add_argument("--activation", choices=("tanh", "softplus", "sigmoid"), default="tanh", help="network: activation (default tanh)")
    parser.add_argument("--weight-decay", type=real, default=1e-2, help="lambda > 0 (default 1e-2)")
    parser.add_argument("--loss", choices=("squared", "cross_entropy"), default="squared")


def register(commands) -> None:
    ntk = commands.add_parser("ntk", help="LoRA in the NTK regime (Jang, Lee, Ryu 2024): landscapes, certificates, thresholds")
    actions = ntk.add_subparsers(dest="ntk_command")
    landscape = actions.add_parser("landscape", help="limits of L-BFGS (or GD) from many starts, certified against the convex optimum")
    landscape.add_argument("problem", help="problem JSON: measurements (K N matrices m x n), targets (K N numbers), weight_decay, loss; optional outputs (K), offsets")
    landscape.add_argument("--rank", type=non_negative_int, required=True, help="LoRA rank r >= 1")
    landscape.add_argument("--starts", type=non_negative_int, default=20, help="random starts (default 20)")
    landscape.add_argument("--seed", type=non_negative_int, default=0, help="seed of the starts (default 0)")
    landscape.add_argument("--method", choices=("lbfgs", "gd"), default="lbfgs", help="L-BFGS (default) or gradient descent")
    landscape.add_argument("--gtol", type=real, default=1e-10, help="L-BFGS: gradient tolerance (default 1e-10)")
    landscape.add_argument("--max-iter", type=non_negative_int, default=20_000, help="L-BFGS: iteration limit (default 20000)")
    landscape.add_argument("--steps", type=non_negative_int, default=100_000, help="GD: steps (default 1e5)")
    landscape.add_argument("--lr", type=real, default=1e-2, help="GD: step size (default 1e-2)")
    landscape.add_argument("--gd-gtol", type=real, default=1e-8, help="GD: a run counts as converged when max |grad F| <= this at the end (default 1e-8)")
    landscape.add_argument("--init", choices=("gaussian", "lora"), default="gaussian", help="gaussian (B, A Gaussian; default) or lora (B = 0, A Gaussian)")
    landscape.add_argument("--scale", type=real, default=1.0, help="standard deviation of the initial entries (default 1)")
    landscape.add_argument("--format", choices=("text", "json"), default="text")
    add_json_out(landscape)
    landscape.set_defaults(handler=_landscape)

    build = actions.add_parser("build", help="write a problem file")
    _add_builder_flags(build)
    build.add_argument("--seed", type=non_negative_int, default=0)
    build.add_argument("--out", required=True, help="the problem JSON to write (-: print it)")
    add_force(build)
    build.set_defaults(handler=_build)

    threshold = actions.add_parser("threshold", help="frequency of spurious limits against the rank over random instances")
    _add_builder_flags(threshold)
    threshold.add_argument("--ranks", type=_positive_ints, default=[1, 2, 3, 4, 5], help="comma-separated ranks (default 1,2,3,4,5)")
    threshold.add_argument("--instances", type=non_negative_int, default=10, help="random instances (default 10)")
    threshold.add_argument("--starts", type=non_negative_int, default=20, help="L-BFGS starts per instance (default 20)")
    threshold.add_argument("--seed", type=non_negative_int, default=0, help="instance i has seed SEED + i (default 0)")
    threshold.add_argument("--plot", default=None, help="write the frequency plot here (the suffix picks the format: .svg, .pdf, .eps, .ps, .png)")
    threshold.add_argument("--format", choices=("text", "json"), default="text")
    add_json_out(threshold)
    threshold.set_defaults(handler=_threshold)

    example = actions.add_parser("example", help="a 2 x 2 (K = 1, N = 2, r = 1) spurious local minimum, verified exactly with sympy")
    example.add_argument("--weight-decay", type=real, default=1e-2, help="lambda of the instances searched (default 1e-2)")
    example.add_argument("--format", choices=("text", "json"), default="text")
    add_json_out(example)
    example.set_defaults(handler=_example)
    ntk.set_defaults(handler=_needs_command)


def _needs_command(args) -> int:
    raise UsageError("ntk needs a command: landscape, build, threshold or example")



def _check_positive(value: float, flag: str) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{flag} must be a positive number, got {value}")


def _landscape(args) -> int:
    from ..models.ntk_lora.study import ntk_landscape
    from ..models.ntk_lora.spec import load_ntk_problem

    try:
        problem = load_ntk_problem(args.problem)
    except InvalidArgument as exc:
        raise naming_file(args.problem, "problem file", exc) from None
    if args.rank < 1:
        raise UsageError(f"--rank must be at least 1, got {args.rank}")
    if args.starts < 1:
        raise UsageError(f"--starts must be at least 1, got {args.starts}")
    _check_positive(args.scale, "--scale")
    # each method's own options: one given to the other method would be ignored
    ignored = given(args, "steps", "lr", "gd_gtol") if args.method == "lbfgs" else given(args, "gtol", "max_iter")
    if ignored:
        raise UsageError(f"{ignored[0]} has no effect with --method {args.method} ({'GD' if args.method == 'lbfgs' else 'L-BFGS'} options: {'--steps, --lr, --gd-gtol' if args.method == 'lbfgs' else '--gtol, --max-iter'})")
    if args.method == "lbfgs":
        _check_positive(args.gtol, "--gtol")
        options = {"gtol": args.gtol, "max_iter": args.max_iter, "init": args.init, "scale": args.scale}
    else:
        _check_positive(args.lr, "--lr")
        _check_positive(args.gd_gtol, "--gd-gtol")
        options = {"steps": args.steps, "lr": args.lr, "init": args.init, "scale": args.scale, "gtol": args.gd_gtol}
    check_json_out(args)
    study = ntk_landscape(problem, args.rank, args.starts, args.seed, args.method, **options)
    payload = study.to_dict()
    payload["problem"] = args.problem
    payload["versions"] = versions()
    if save_json_out(args, payload):
        return 0
    if args.format == "json":
        print_json(payload)
        return 0
    m, n = problem.shape
    where = "above" if payload["threshold"]["above"] else "at or below"
    write(f"LoRA rank {args.rank} on a {m} x {n} problem with KN = {problem.count} measurements ({problem.loss}, lambda = {problem.weight_decay:g}): r(r+1)/2 = {args.rank * (args.rank + 1) // 2} is {where} the threshold KN")
    write(f"convex optimum {study.convex.value:.12g} (duality gap {study.convex.gap:.1e}, rank {study.convex.rank})")
    write(f"{'value':>20} {'count':>6} {'rho':>10} {'min eig H':>11} {'balance':>9}  global")
    for limit in study.limits:
        eigenvalue = "n/a" if limit["min_hessian_eigenvalue"] is None else f"{limit['min_hessian_eigenvalue']:.3g}"
        write(f"{limit['value']:20.12g} {limit['count']:6d} {limit['certificate']:10.6g} {eigenvalue:>11} {limit['balance']:9.2g}  {'yes' if limit['global'] else 'NO'}")
    runs = payload["runs"]
    write(f"{runs['global']} of {runs['starts']} runs global, {runs['spurious']} not; {runs['not_converged']} not converged ({runs['method']}, {runs['seconds']:.3f} s)")
    if runs["diverged"]:
        write(f"{runs['diverged']} runs diverged (F stopped being finite): lower --lr")
    elif runs["not_converged"]:
        write("runs that did not meet the gradient tolerance may sit near saddles: their rho and Hessian describe where they stopped, not a limit (more --steps or --max-iter)")
    return 0


def _builder(args):
    from ..models.ntk_lora.spec import gaussian_ntk_problem, network_ntk_problem

    for flag in ("m", "n", "data", "outputs", "tokens"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    _check_positive(args.weight_decay, "--weight-decay")
    if args.kind == "gaussian" and given(args, "tokens", "activation"):
        raise UsageError(f"{given(args, 'tokens', 'activation')[0]} has no effect with --kind gaussian (it sets the network of --kind network)")
    if args.kind == "gaussian":
        return lambda seed: gaussian_ntk_problem(args.m, args.n, args.data, args.outputs, args.weight_decay, args.loss, seed)
    return lambda seed: network_ntk_problem(args.m, args.n, args.data, args.outputs, args.tokens, args.weight_decay, args.loss, args.activation, seed=seed)


def _build(args) -> int:
    from .._io import check_output_file

    if args.out == "-":  # standard output: the JSON itself, nothing else
        print_json(_builder(args)(args.seed).to_dict())
        return 0
    check_output_file(args.out)
    check_outputs(args, [args.out])
    problem = _builder(args)(args.seed)
    problem.save(args.out)
    write(f"wrote {args.out}: {problem.count} measurements of a {problem.shape[0]} x {problem.shape[1]} matrix ({args.kind}, {problem.loss}, lambda = {problem.weight_decay:g}); ranks r >= {problem.threshold_rank} are above the threshold")
    return 0


def _threshold(args) -> int:
    from ..models.ntk_lora.study import ntk_threshold_study

    if args.instances < 1 or args.starts < 1:
        raise UsageError("--instances and --starts must be at least 1")
    if args.plot is not None:
        from .._io import check_output_file

        check_output_file(args.plot, "plot")
        check_figure_path(args.plot, "--plot")
        check_outputs(args, [args.plot], "plot")
    check_json_out(args)
    rows = ntk_threshold_study(_builder(args), args.instances, args.ranks, args.starts, args.seed)
    if args.plot is not None:
        save_figure(threshold_figure(rows, f"{args.kind} {args.m} x {args.n}, KN = {args.data * args.outputs}"), args.plot, "--plot")
    payload = {"rows": rows, "parameters": {key: getattr(args, key) for key in ("kind", "m", "n", "data", "outputs", "tokens", "activation", "weight_decay", "loss", "ranks", "instances", "starts", "seed")}, "versions": versions()}
    if save_json_out(args, payload):
        return 0
    if args.format == "json":
        print_json(payload)
        return 0
    write("non-global: converged runs away from the convex optimum; above best: converged runs above the best value reached at that rank (spurious minima of the rank-r problem)")
    write(f"{'rank':>4} {'above':>6} {'non-global runs':>16} {'instances':>10} {'above best':>11} {'best global':>12}")
    for row in rows:
        write(f"{row['rank']:4d} {('yes' if row['above_threshold'] else 'no'):>6} {row['spurious_runs']:>8d} / {row['runs']:<5d} {row['instances_with_spurious']:>4d} / {row['instances']:<3d} {row['runs_above_best']:>11d} {row['best_is_global']:>6d} / {row['instances']}")
    return 0


def threshold_figure(rows: list, title: str, ax=None):
    from matplotlib.figure import Figure

    figure = None
    if ax is None:
        figure = Figure(figsize=(6, 4), layout="constrained")
        ax = figure.subplots()
    ranks = [row["rank"] for row in rows]
    ax.plot(ranks, [row["spurious_runs"] / row["runs"] for row in rows], "o-", label="runs at a non-global limit")
    ax.plot(ranks, [row["instances_with_spurious"] / row["instances"] for row in rows], "s--", label="instances with one")
    first = next((row["rank"] for row in rows if row["above_threshold"]), None)
    if first is not None:
        ax.axvline(first - 0.5, color="k", lw=0.8, ls=":", label="r(r+1)/2 > KN from here")
    ax.set(xlabel="LoRA rank r", ylabel="fraction of runs / instances at a non-global limit", title=title, ylim=(-0.03, 1.03))
    ax.legend(fontsize=8)
    return figure if figure is not None else ax.figure


def _example(args) -> int:
    from ..models.ntk_lora.examples import ntk_spurious_example

    _check_positive(args.weight_decay, "--weight-decay")
    check_json_out(args)
    example = ntk_spurious_example(args.weight_decay)
    payload = {"verified": example.verified, "value": example.value, "convex_optimum": example.convex_value, "b": example.b.tolist(), "a": example.a.tolist(), "exact": example.exact, "found": {"seed": example.found["seed"], "starts": example.found["starts"]}, "versions": versions()}
    if save_json_out(args, payload):
        return 0
    if args.format == "json":
        print_json(payload)
        return 0
    exact = example.exact
    write("A 2 x 2 instance (K = 1, N = 2, squared loss) whose r = 1 LoRA objective has a spurious local minimum:")
    for j, matrix in enumerate(exact["measurements"]):
        write(f"  G_{j + 1} = {matrix}, y_{j + 1} = {exact['targets'][j]}")
    write(f"  lambda = {exact['weight_decay']}; minimum at b = {exact['b']}, a = {exact['a']}")
    write(f"exactly (sympy): gradient = {exact['gradient']}; Hessian leading minors all positive: {exact['positive_definite']}; rho^2 = {exact['rho_squared']:.6g} > 1: {exact['rho_above_one']}")
    write(f"F there = {example.value:.10g} > convex optimum {example.convex_value:.10g}: {'verified' if example.verified else 'NOT verified'}")
    return 0
