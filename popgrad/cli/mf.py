"""``popgrad mf run``: LoRA gradient descent (or flow) in matrix factorization (Xu et al., AISTATS 2025), in
the Figure 1 setting by default (m = n = 10, h = 100, r = 4, s = 5 on the top pair, beta = 1.05, step 1e-4,
5e4 steps)."""

from __future__ import annotations

import math
import sys

import numpy as np

from .._validation import InvalidArgument
from .common import EXIT_TIMEOUT, UsageError, add_json_out, check_json_out, flag_for, save_json_out, naming_file, non_negative_int, print_json, real, write

__all__ = ["register"]


def register(commands) -> None:
    mf = commands.add_parser("mf", help="LoRA in matrix factorization (Xu et al. 2025): gradient descent and flow")
    actions = mf.add_subparsers(dest="mf_command")
    run = actions.add_parser("run", help="run LoRA gradient descent (or flow) from small or spectral initialisation")
    run.add_argument("--init", choices=("small", "spectral"), default="small", help="initialisation (default small: A ~ N(0, alpha^2), B = 0)")
    run.add_argument("--alpha", type=real, default=1e-3, help="initialisation scale (default 1e-3)")
    run.add_argument("--repeats", type=non_negative_int, default=30, help="repetitions (default 30)")
    run.add_argument("--steps", type=non_negative_int, default=50_000, help="GD steps (default 5e4; gradient flow: time = steps * lr)")
    run.add_argument("--lr", type=real, default=1e-4, help="GD step size (default 1e-4)")
    run.add_argument("--seed", type=non_negative_int, default=0, help="seed of the initialisations (default 0)")
    run.add_argument("--method", choices=("gd", "gf"), default="gd", help="gradient descent (default) or gradient flow (adaptive Dormand-Prince)")
    run.add_argument("--problem", default=None, help="a problem JSON file (W1, W2, Y_ft, rank; see popgrad.models.matrix_factorization.spec) instead of the construction")
    run.add_argument("--m", type=non_negative_int, default=10, help="rows of Y (default 10)")
    run.add_argument("--n", type=non_negative_int, default=10, help="columns of Y (default 10)")
    run.add_argument("--h", type=non_negative_int, default=100, help="inner width (default 100)")
    run.add_argument("--rank", type=non_negative_int, default=4, help="LoRA rank r (default 4)")
    run.add_argument("--s", type=real, default=5.0, help="singular value of the rank-one change ΔY (default 5)")
    run.add_argument("--beta", type=real, default=1.05, help="W_2 = beta U Σ^1/2 G^T, W_1 = G Σ^1/2 V^T / beta; delta_w = 1/beta^2 (default 1.05)")
    run.add_argument("--pair", choices=("top", "bottom"), default="top", help="the singular pair of Y_pre that carries ΔY (default top)")
    run.add_argument("--problem-seed", type=non_negative_int, default=0, help="seed of Y_pre and G (default 0)")
    run.add_argument("--records", type=non_negative_int, default=100, help="recorded points of the curves (default 100)")
    run.add_argument("--curves", action="store_true", help="include the recorded curves (loss, alignment, norms, imbalance) in the JSON")
    run.add_argument("--timeout", type=real, default=None, help="stop after this many seconds (exit 124, saying how far the run got and how long all of it would take); the run shows a progress bar on a terminal")
    run.add_argument("--format", choices=("text", "json"), default="text")
    add_json_out(run)
    run.set_defaults(handler=_run)
    mf.set_defaults(handler=_needs_command)


def _needs_command(args) -> int:
    raise UsageError("mf needs a command: run")


def _run(args) -> int:
    from ..models.matrix_factorization.flow import MF_OBSERVABLES, mf_gradient_descent, mf_gradient_flow
    from ..models.matrix_factorization.spec import load_mf_problem, paper_mf_problem
    from .common import given

    if args.problem is not None:
        typed = given(args, "m", "n", "h", "rank", "s", "beta", "pair", "problem_seed")
        if typed:
            raise UsageError(f"{typed[0]} cannot be used with --problem: the file sets the problem")
        try:
            problem = load_mf_problem(args.problem)
        except InvalidArgument as exc:
            raise naming_file(args.problem, "--problem", exc) from None
    else:
        for name in ("m", "n", "h", "rank"):
            if getattr(args, name) < 1:
                raise UsageError(f"--{name} must be at least 1, got {getattr(args, name)}")
        with flag_for("seed", "--problem-seed"):
            problem = paper_mf_problem(args.m, args.n, args.h, args.rank, args.s, args.beta, args.pair, args.problem_seed)
    if args.repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {args.repeats}")
    if not (args.alpha > 0 and math.isfinite(args.alpha)):
        raise UsageError(f"--alpha must be a positive number, got {args.alpha}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise UsageError(f"--lr must be a positive number, got {args.lr}")
    if args.records < 1:
        raise UsageError(f"--records must be at least 1, got {args.records}")
    if args.timeout is not None and not (0 < args.timeout <= 1e9):
        raise UsageError(f"--timeout must be a positive number of seconds, at most 1e9, got {args.timeout}")
    if args.method == "gf" and args.steps < 1:
        raise UsageError("--steps must be at least 1 for gradient flow (time = steps * lr)")
    check_json_out(args)
    try:
        if args.method == "gd":
            run = mf_gradient_descent(problem, args.init, args.alpha, args.repeats, args.steps, args.lr, args.records, args.seed, progress=None, timeout=args.timeout)
        else:
            run = mf_gradient_flow(problem, args.init, args.alpha, args.repeats, args.steps * args.lr, args.records, args.seed, lr=args.lr, progress=None, timeout=args.timeout)
    except TimeoutError as exc:
        print(f"popgrad: stopped: {exc} (--timeout {args.timeout:g})", file=sys.stderr)
        return EXIT_TIMEOUT
    final = run.final_loss()
    logs = np.log10(np.maximum(final, 1e-300))
    payload = {
        "diverged": bool(not np.all(np.isfinite(final))),
        "final_loss": final.tolist(),
        "log10_final_loss_mean": float(logs.mean()),
        "log10_final_loss_std": float(logs.std(ddof=1)) if final.size > 1 else None,
        "parameters": {"init": args.init, "alpha": args.alpha, "repeats": args.repeats, "steps": args.steps, "lr": args.lr, "seed": args.seed, "method": args.method, "problem": problem.construction or {"file": args.problem}, "rank": problem.rank, "shape": list(problem.shape), "delta_w": problem.delta_w},
        "seconds": round(run.seconds, 3),
    }
    if args.curves:
        payload["curves"] = {"steps": run.steps.tolist(), **{name: {"mean": run.observable(name).mean(axis=0).tolist(), "std": run.observable(name).std(axis=0).tolist()} for name in MF_OBSERVABLES}}
    from .._io import versions

    payload["versions"] = versions()
    if save_json_out(args, payload):
        return 0
    if args.format == "json":
        print_json(payload)
        return 0
    write(f"LoRA matrix factorization: {args.method}, init {args.init}, alpha {args.alpha:g}, {args.repeats} repetitions, {args.steps} steps of {args.lr:g} (delta_w = {problem.delta_w:.4g})")
    write(f"final log10 loss: mean {payload['log10_final_loss_mean']:.3f}" + (f", std {payload['log10_final_loss_std']:.3f}" if payload["log10_final_loss_std"] is not None else ""))
    write(f"final alignment log10(1 - cos): mean {run.observable('alignment')[:, -1].mean():.3f}; ||Z_1||_F mean {run.observable('z1_norm')[:, -1].mean():.4g}")
    write(f"({run.seconds:.2f} s)")
    return 0
