"""The committee machine's predictions, registered with the model protocol (:mod:`popgrad.dynamics.protocol`).

* ``ode`` — the d → ∞ ODE at the run's fixed delta = eta d (and delta_a = eta_a d), with its delta² term
  (MATH.md §8; Saad & Solla 1995, Goldt et al. 2019), in alpha = steps / d, from each of the first
  ``ode_starts`` trajectories' own starting overlaps (Q, R, a at step 0): at finite d a random start
  breaks the student's permutation symmetry by O(1/sqrt d), which sets when a run leaves the plateau.
  Its band carries the error estimate of the numeric route (two Gauss–Hermite orders); the closed-form
  (erf) and exact (polynomial) routes have none beyond the solver's tolerance.
* ``gradient_flow`` — the same without the delta² term: the population gradient flow of eps_g on the
  overlaps (the O(delta) part), the small-step limit.
* ``one_step_mean`` — the exact finite-d mean drift of (Q, R, a) per SGD step (:mod:`.one_step`), iterated
  step by step from the run's starting overlaps; its band is the Monte Carlo error of its one O(1) term. Not
  run by default (ask for it by name).

Both predict every observable of :mod:`.observables` (eps_g, Q, R, a, cosine_min and, for K = M, the
aligned overlaps), computed from the predicted overlaps exactly as the runs' are. They serve the
unconstrained model (the ODE of a constrained student is not implemented; the chain is exact there).
"""

from __future__ import annotations

import numpy as np

from ..._validation import InvalidArgument, check_integer
from ...dynamics.engine import PredictionFailed
from ...dynamics.protocol import Predictor, register_predictor
from .observables import committee_observables

__all__ = ["ode_prediction", "flow_prediction", "fixed_point_summary", "print_fixed_points", "DEFAULT_ODE_STARTS"]

#: the trajectories whose starting overlaps the ODE predictions start from (by default)
DEFAULT_ODE_STARTS = 16


def scratch_equivalent(model) -> bool:
    """Whether a model's first layer moves as a student learnt from scratch (V = Theta): the scratch model
    itself, or full fine-tuning with B = I frozen, no constraint, no projection off the base and no weight
    decay (the gradients in Theta and in V = W0 + Theta agree), whose ODE starts at the run's own overlaps."""
    if not getattr(model, "linear", False):
        return True
    return bool(model.kind == "full" and not model.train_coefficients and np.array_equal(model.coefficients, np.eye(model.K)) and model.constraint == "none" and not model.orthogonal_to_base and model.weight_decay == 0)


def _serves(model):
    if model.constraint != "none":
        return f"the d -> infinity ODE is implemented for an unconstrained student (constraint 'none'), not {model.constraint!r}"
    if not scratch_equivalent(model):
        return f"the d -> infinity ODE is implemented for a student learnt from scratch (V = Theta, or full fine-tuning with B = I frozen), not a {model.kind} student (the chain is exact for it)"
    return None


def _starts(run, ode_starts: int) -> tuple:
    """The distinct starting overlaps of the first ``ode_starts`` trajectories and whether they are all the
    same (an ``overlaps`` init: one start, exact)."""
    Q, R, a = (run.observables[name][:ode_starts, 0] for name in ("Q", "R", "a"))
    identical = bool(np.all(Q == Q[:1]) and np.all(R == R[:1]) and np.all(a == a[:1]))
    if identical:
        return Q[:1], R[:1], a[:1], True
    return Q, R, a, False


def _predict(run, ode_starts: int, second_order: bool) -> dict:
    from .ode import integrate_ode

    model = run.model
    starts = check_integer(ode_starts, "ode_starts", 1, 10_000)
    Q0, R0, a0, exact = _starts(run, min(starts, run.trajectories))
    alpha = np.asarray(run.steps, dtype=np.float64) / run.d
    delta = run.eta * run.d
    delta_a = float(run.settings.get("eta_a", 0.0)) * run.d
    solutions = []
    for q, r, a in zip(Q0, R0, a0):
        solution = integrate_ode(model, delta, alpha, delta_a=delta_a if model.train_second_layer else None, Q0=q, R0=r, a0=a, second_order=second_order)
        if solution.diverged:
            raise PredictionFailed(f"the ODE diverges at alpha = {solution.divergence_alpha:.4g} (delta = {delta:g}): no finite prediction")
        solutions.append(solution)
    Q = np.stack([s.Q for s in solutions])
    R = np.stack([s.R for s in solutions])
    a = np.stack([s.a for s in solutions])
    values = committee_observables(model, Q, R, a)
    bands = {}
    if solutions[0].route in ("numeric", "piecewise"):  # the integration at two orders: its difference bounds the mean's error
        for name in ("eps_g", "Q", "R", "a"):
            error = np.mean([np.nan_to_num(s.error[name], nan=np.inf) for s in solutions], axis=0)
            mean = values[name].mean(axis=0)
            bands[name] = (mean - error, mean + error)
    settings = {"ode_starts": int(len(solutions)), "delta": delta, "delta_a": delta_a if model.train_second_layer else 0.0, "route": solutions[0].route, "second_order": bool(second_order), "starts": "the first trajectories' own starting overlaps" if not exact else "the model's initial overlaps (every trajectory starts there)"}
    if second_order:  # the ODE's fixed points at the run's delta, reported beside the simulation
        settings["fixed_points"] = fixed_point_summary(model, delta, delta_a if model.train_second_layer else None)
    return {"values": values, "bands": bands, "settings": settings, "exact_mean": exact}


def fixed_point_summary(model, delta: float, delta_a=None, second_order: bool = True) -> dict:
    """The ODE's fixed points at ``delta``: the symmetric plateau (a permutation-symmetric model) and, for
    K = M, the specialised solution, each with its eps_g, escape rate (largest positive real part of the
    Jacobian's eigenvalues), residual, eigenvalues and overlaps — or the reason it was not found.

    Parameters
    ----------
    model : CommitteeModel
    delta : float
    delta_a : float, optional
        The second layer's step (a trained second layer).
    second_order : bool, default True
        The ODE with its delta² term (fixed points are reported for it only).

    Returns
    -------
    dict
        ``name -> {"eps_g", "escape_rate", "residual", "eigenvalues_real", "Q", "R", "a"}`` or
        ``name -> {"error": reason}``.

    Examples
    --------
    >>> from popgrad.models.committee.spec import committee_model
    >>> points = fixed_point_summary(committee_model("erf(z/sqrt(2))", width=2, teacher_width=2), 0.5)
    >>> sorted(points), round(points["symmetric"]["eps_g"], 4) > 0
    (['specialised', 'symmetric'], True)
    """
    from .fixed_points import specialised_solution, symmetric_plateau

    points = {}
    makers = {}
    a_star, a = model.teacher_second_layer, model.student_second_layer
    symmetric = bool(np.all(a == a[0]) and np.all(a_star == a_star[0]) and np.allclose(model.T, model.T[0, 0] * np.eye(model.M)) and not model.train_second_layer)
    if symmetric:  # the symmetric subspace Q = q + (Q - q) I, R = r is invariant only for a permutation-symmetric model
        makers["symmetric"] = symmetric_plateau
    else:
        points["symmetric"] = {"error": "not applicable: the symmetric subspace is invariant only with equal second layers (frozen) and T proportional to I"}
    if model.K == model.M:
        makers["specialised"] = specialised_solution
    for name, maker in makers.items():
        if not second_order:
            points[name] = {"error": "fixed points are reported for the ODE with its delta^2 term"}
            continue
        try:
            point = maker(model, delta, delta_a=delta_a)
        except (InvalidArgument, ArithmeticError, RuntimeError, ValueError) as exc:
            points[name] = {"error": " ".join(str(exc).split())}
            continue
        points[name] = {"eps_g": point.eps_g, "escape_rate": point.escape_rate, "residual": point.residual, "eigenvalues_real": [float(v.real) for v in point.eigenvalues], "Q": point.Q.tolist(), "R": point.R.tolist(), "a": point.a.tolist()}
    return points


def print_fixed_points(points: dict, prefix: str = "") -> None:
    """One line per fixed point of :func:`fixed_point_summary` (its eps_g and escape rate, or why not
    found)."""
    for name, point in points.items():
        if "error" in point:
            print(f"{prefix}{name} fixed point: not found ({point['error']})")
        else:
            escape = f"escape rate (largest positive real eigenvalue) = {point['escape_rate']:.6g}" if point["escape_rate"] > 0 else "stable (no eigenvalue with a positive real part)"
            print(f"{prefix}{name} fixed point: eps_g = {point['eps_g']:.8g}, {escape}, residual {point['residual']:.1e}")


def ode_prediction(run, ode_starts: int = DEFAULT_ODE_STARTS) -> dict:
    """The d → ∞ ODE at the run's delta (with its delta² term) on the run's checkpoints.

    Parameters
    ----------
    run : Run
        A committee machine's run.
    ode_starts : int, default 16
        How many of the run's first trajectories' starting overlaps the ODE starts from (one where every
        trajectory starts at the same overlaps).

    Returns
    -------
    dict
        ``values`` (observable -> (starts, checkpoints, ...)), ``bands``, ``settings``, ``exact_mean``.

    Examples
    --------
    >>> import popgrad
    >>> from popgrad.models.committee.spec import committee_model
    >>> model = committee_model("erf(z/sqrt(2))", width=2, teacher_width=2, Q0=0.2 * np.eye(2), R0=[[0.1, 0.0], [0.0, 0.05]])
    >>> run = popgrad.simulate(model, d=500, delta=0.5, checkpoints=[0, 5000, 50000], trajectories=4)
    >>> ode_prediction(run)["values"]["eps_g"].shape
    (1, 3)
    """
    return _predict(run, ode_starts, True)


def flow_prediction(run, ode_starts: int = DEFAULT_ODE_STARTS) -> dict:
    """The population gradient flow (the ODE without its delta² term) on the run's checkpoints; as
    :func:`ode_prediction`."""
    return _predict(run, ode_starts, False)


def _check(model, options):
    ranges = {"ode_starts": (1, 10_000), "map_starts": (1, 10_000), "map_batches": (2, 1024), "map_substeps": (1, 10**6), "noise_samples": (64, 10**9)}
    for key, (low, high) in ranges.items():
        if key in options:
            check_integer(options[key], key, low, high)
    if "map_batches" in options and options["noise_samples"] < options["map_batches"]:
        raise InvalidArgument(f"noise_samples must be at least map_batches = {options['map_batches']} (one sample per batch), got {options['noise_samples']}", "noise_samples")
    if options.get("noise_seed") is not None:
        check_integer(options["noise_seed"], "noise_seed", 0, 2**63 - 1)


def _one_step_mean(run, **options):
    from .one_step import one_step_mean_prediction

    return one_step_mean_prediction(run, **options)


register_predictor(Predictor("ode", "committee", _serves, ode_prediction, {"ode_starts": DEFAULT_ODE_STARTS}, description="the d -> infinity ODE at fixed delta with its delta^2 term (Saad & Solla; Goldt et al.)", check=_check))
register_predictor(Predictor("gradient_flow", "committee", _serves, flow_prediction, {"ode_starts": DEFAULT_ODE_STARTS}, description="the population gradient flow of eps_g on the overlaps (the ODE's O(delta) part)", check=_check))
register_predictor(Predictor("one_step_mean", "committee", _serves, _one_step_mean, {"map_starts": 4, "noise_samples": 16384, "map_batches": 4, "map_substeps": 64, "noise_seed": None}, default=lambda model: False, description="the exact finite-d mean drift of (Q, R, a) per SGD step, iterated (Monte Carlo band for its O(1) curvature term)", check=_check))
