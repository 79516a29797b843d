"""The committee machine's command: ``popgrad ode MODEL`` integrates the d → ∞ ODE (MATH.md §8).

``simulate``, ``compare`` and ``run`` take a committee model file through ``--problem`` like any model."""

from __future__ import annotations

import math

import numpy as np

from .._validation import InvalidArgument
from .common import UsageError, naming_file, print_json, real

__all__ = ["register"]


def _times(text: str) -> list:
    """``0,1,10,100`` -> floats (sorted, >= 0, finite: checked by the library)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--times must be comma-separated numbers (alpha = steps / d), got {text!r}") from None
    if not values:
        raise UsageError("--times needs at least one alpha")
    return values


def register(commands) -> None:
    ode = commands.add_parser("ode", help="the d -> infinity ODE of a committee machine (Saad & Solla; Goldt et al.) at fixed delta")
    ode.add_argument("model", metavar="MODEL", help="a committee model file (JSON, or TOML of the same structure; \"model\": \"committee\")")
    ode.add_argument("--delta", type=real, required=True, help="the first layer's step delta = eta d (Saad-Solla's lr in their convention)")
    ode.add_argument("--delta-a", type=real, default=None, help="the second layer's step delta_a = eta_a d (lr2; default: delta times the model's second_layer_ratio when it trains the second layer)")
    ode.add_argument("--times", type=_times, default=_times("0,1,10,100"), help="alphas = steps / d to report, comma-separated (default 0,1,10,100)")
    ode.add_argument("--gradient-flow", action="store_true", help="drop the delta^2 term: the population gradient flow of eps_g (the small-step limit)")
    ode.add_argument("--no-fixed-points", action="store_true", help="do not look for the symmetric plateau and the specialised solution")
    ode.add_argument("--format", choices=["table", "json"], default="table")
    ode.set_defaults(handler=_ode)


def _model(path):
    from .._io import read_model_file
    from ..dynamics.protocol import model_from_dict

    data = read_model_file(path, "model file", "model")
    if data.get("model") != "committee":
        raise UsageError(f"MODEL: {path} is not a committee model file (it needs \"model\": \"committee\"; fine-tuning models have popgrad simulate/compare)")
    try:
        return model_from_dict(data)
    except InvalidArgument as exc:
        raise naming_file(path, "MODEL", exc) from None


def _ode(args) -> int:
    from .. import __version__
    from ..models.committee.ode import integrate_ode
    from ..models.committee.predictions import fixed_point_summary, print_fixed_points

    model = _model(args.model)
    if args.delta_a is not None and not model.train_second_layer:
        raise UsageError("--delta-a sets the second layer's step; this model keeps its second layer frozen (\"train_second_layer\": true in the file trains it)")
    solution = integrate_ode(model, args.delta, args.times, delta_a=args.delta_a, second_order=not args.gradient_flow)
    delta_a = (args.delta * model.second_layer_ratio if args.delta_a is None else args.delta_a) if model.train_second_layer else 0.0
    points = {} if args.no_fixed_points or solution.diverged else fixed_point_summary(model, args.delta, delta_a if model.train_second_layer else None, not args.gradient_flow)
    if args.format == "json":
        payload = solution.to_dict() | {"eps_g_error": [None if not math.isfinite(e) else float(e) for e in solution.error["eps_g"]], "delta": args.delta, "delta_a": delta_a, "convention": model.convention, "second_order": not args.gradient_flow, "fixed_points": points, "model": model.to_dict(), "popgrad": __version__}
        print_json(payload)
        return 0
    print(model.describe())
    print(f"d -> infinity ODE ({'population gradient flow, no delta^2 term' if args.gradient_flow else 'with its delta^2 term'}), delta = {args.delta:g}" + (f", delta_a = {delta_a:g}" if model.train_second_layer else "") + f"; convention {model.convention}; route {solution.route}")
    K, M = model.K, model.M
    header = f"{'alpha':>12s} {'eps_g':>14s}  " + " ".join(f"{f'Q{i}{i}':>9s}" for i in range(K)) + "  " + " ".join(f"{f'R{i}{n}':>9s}" for i in range(K) for n in range(M)) + ("  " + " ".join(f"{f'a{i}':>9s}" for i in range(K)))
    print(header)
    for t, alpha in enumerate(solution.alpha):
        cells = [f"{alpha:>12.6g}", f"{solution.eps_g[t]:>14.8g}"]
        cells.append(" " + " ".join(f"{solution.Q[t, i, i]:>9.5f}" for i in range(K)))
        cells.append(" " + " ".join(f"{solution.R[t, i, n]:>9.5f}" for i in range(K) for n in range(M)))
        cells.append(" " + " ".join(f"{solution.a[t, i]:>9.5f}" for i in range(K)))
        print(" ".join(cells))
    if solution.diverged:
        print(f"diverged at alpha = {solution.divergence_alpha:.6g}: delta = {args.delta:g} is beyond the largest step that learns (the values after it are nan)")
    print_fixed_points(points)
    return 0
