"""The landscape study: the distinct limits that minimisation from many starts reaches, each certified
against the convex optimum (the certificate rho, the smallest Hessian eigenvalue, the balance), and the
frequency of spurious limits against the rank over many instances (MATH.md §7).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..._validation import check_choice, check_integer, check_real
from .convex import ConvexSolution, ntk_convex_optimum
from .landscape import ntk_balance, ntk_certificate, ntk_hessian
from .optimise import NTKRuns, _check_rank, ntk_gradient_descent, ntk_lbfgs
from .spec import NTKProblem

__all__ = ["Landscape", "ntk_landscape", "ntk_threshold_study"]


@dataclass(frozen=True)
class Landscape:
    """The limits of an optimiser from many starts, certified.

    Attributes
    ----------
    convex : ConvexSolution
        The nuclear-norm problem's certified optimum.
    rank : int
    runs : NTKRuns
    certificates : ndarray (S,)
        rho = ||grad L(BA)||_op / lambda per run.
    balances : ndarray (S,)
        ||B^T B - A A^T||_F per run.
    is_global : ndarray (S,) of bool
        F within ``value_tol`` of the convex optimum.
    limits : list of dict
        The distinct limit values (clustered within ``value_tol``), ascending: ``value``, ``count``,
        ``certificate`` (the largest rho in the cluster), ``min_hessian_eigenvalue`` (at the run with the
        smallest gradient), ``balance`` (largest), ``max_gradient``, ``converged`` (members that met the gradient
        tolerance), ``global``. Diverged runs (gradient descent with too large a step) join no limit.
    value_tol : float
    seconds : float
    parameters : dict
        The study's settings (rank, starts, seed, method, the problem's sizes, the optimiser's options).
    """

    convex: ConvexSolution
    rank: int
    runs: NTKRuns
    certificates: np.ndarray
    balances: np.ndarray
    is_global: np.ndarray
    limits: list
    value_tol: float
    seconds: float
    parameters: dict = field(default_factory=dict)

    @property
    def spurious_runs(self) -> int:
        """Converged runs (gradient tolerance met) that ended away from the convex optimum; runs that did not
        converge or diverged are counted apart (``runs.status``)."""
        return int(np.sum(~self.is_global & (self.runs.status == 0)))

    def to_dict(self) -> dict:
        """JSON-ready: ``convex_optimum``, ``limits`` (the CLI's contract) and the details."""
        return {
            "convex_optimum": self.convex.value,
            "limits": self.limits,
            "convex": {"value": self.convex.value, "duality_gap": self.convex.gap, "rank": self.convex.rank, "singular_values": self.convex.singular_values.tolist(), "certificate": self.convex.certificate, "iterations": self.convex.iterations, "converged": self.convex.converged},
            "rank": self.rank,
            "threshold": {"count": int(self.parameters.get("count", 0)), "rank_needed": int(self.parameters.get("threshold_rank", 0)), "above": bool(self.rank * (self.rank + 1) // 2 > self.parameters.get("count", 0))},
            "runs": {"starts": self.runs.starts, "global": int(np.sum(self.is_global)), "spurious": self.spurious_runs, "not_converged": int(np.sum(self.runs.status != 0)), "diverged": int(np.sum(self.runs.status == 3)), "method": self.runs.method, "seconds": self.runs.seconds},
            "value_tol": self.value_tol,
            "parameters": self.parameters,
            "seconds": self.seconds,
        }


def ntk_landscape(problem: NTKProblem, rank: int, starts: int = 20, seed: int = 0, method: str = "lbfgs", value_tol: float = 1e-7, hessian: bool = True, convex: ConvexSolution | None = None, **kwargs) -> Landscape:
    """Run an optimiser from many starts and classify its limits against the convex optimum.

    A run is global when its F is within ``value_tol * max(1, |F*|)`` (plus the convex solution's duality gap)
    of the nuclear-norm optimum F*; distinct limits are clusters of final values within the same tolerance.

    Parameters
    ----------
    problem : NTKProblem
    rank : int >= 1
    starts : int, default 20
    seed : int, default 0
    method : {'lbfgs', 'gd'}
    value_tol : float, default 1e-7
    hessian : bool, default True
        Compute the smallest Hessian eigenvalue at each limit (a dense eigenproblem of size (m + n) r).
    convex : ConvexSolution, optional
        A solution already computed for this problem.
    **kwargs
        Passed to :func:`ntk_lbfgs` or :func:`ntk_gradient_descent` (e.g. ``gtol``, ``max_iter``, ``steps``, ``lr``).

    Returns
    -------
    Landscape

    Examples
    --------
    >>> from popgrad.models.ntk_lora.spec import gaussian_ntk_problem
    >>> study = ntk_landscape(gaussian_ntk_problem(8, 8, data=6, seed=0), rank=4, starts=10)
    >>> [(limit["count"], limit["global"]) for limit in study.limits]
    [(10, True)]
    """
    check_choice(method, "method", ("lbfgs", "gd"))
    value_tol = check_real(value_tol, "value_tol", 0.0, 1.0, low_open=True)
    rank = _check_rank(problem, rank)
    begin = time.perf_counter()
    if convex is None:
        convex = ntk_convex_optimum(problem)
    runs = ntk_lbfgs(problem, rank, starts, seed, **kwargs) if method == "lbfgs" else ntk_gradient_descent(problem, rank, starts, seed=seed, **kwargs)
    finite = np.isfinite(runs.values)
    certificates = np.array([ntk_certificate(problem, B, A) if ok else np.nan for B, A, ok in zip(runs.B, runs.A, finite)])
    balances = np.array([ntk_balance(B, A) if ok else np.nan for B, A, ok in zip(runs.B, runs.A, finite)])
    tolerance = value_tol * max(1.0, abs(convex.value))
    is_global = finite & (runs.values <= convex.value + tolerance + convex.gap)
    order = [index for index in np.argsort(runs.values, kind="stable") if finite[index]]
    clusters = []
    for index in order:
        if clusters and runs.values[index] - runs.values[clusters[-1][0]] <= tolerance:
            clusters[-1].append(index)
        else:
            clusters.append([index])
    limits = []
    for members in clusters:
        members = np.array(members)
        best = members[np.argmin(runs.gradient_norms[members])]
        eigenvalue = float(np.linalg.eigvalsh(ntk_hessian(problem, runs.B[best], runs.A[best]))[0]) if hessian else None
        limits.append({
            "value": float(np.mean(runs.values[members])),
            "count": int(members.size),
            "certificate": float(np.max(certificates[members])),
            "min_hessian_eigenvalue": eigenvalue,
            "balance": float(np.max(balances[members])),
            "max_gradient": float(np.max(runs.gradient_norms[members])),
            "converged": int(np.sum(runs.status[members] == 0)),
            "global": bool(np.all(is_global[members])),
        })
    parameters = {"rank": rank, "starts": int(runs.starts), "seed": seed, "method": method, "count": problem.count, "threshold_rank": problem.threshold_rank, "shape": list(problem.shape), "outputs": problem.outputs, "loss": problem.loss, "weight_decay": problem.weight_decay, **{key: value for key, value in kwargs.items() if key != "points"}}
    return Landscape(convex, rank, runs, certificates, balances, is_global, limits, value_tol, time.perf_counter() - begin, parameters)


def _above_best(study: Landscape) -> int:
    """Converged runs whose value exceeds the best converged value of the study (by its tolerance)."""
    converged = study.runs.status == 0
    if not np.any(converged):
        return 0
    best = float(np.min(study.runs.values[converged]))
    return int(np.sum(converged & (study.runs.values > best + study.value_tol * max(1.0, abs(best)))))


def ntk_threshold_study(builder, instances: int, ranks, starts: int = 20, seed: int = 0, **kwargs) -> list:
    """How often runs end at spurious limits, against the rank, over random instances.

    Parameters
    ----------
    builder : callable
        ``builder(seed) -> NTKProblem`` (e.g. ``lambda s: gaussian_ntk_problem(8, 8, data=6, seed=s)``);
        instance i is ``builder(seed + i)``.
    instances : int >= 1
    ranks : sequence of int
    starts : int, default 20
    seed : int, default 0
    **kwargs
        Passed to :func:`ntk_landscape` (e.g. ``method``, ``gtol``).

    Returns
    -------
    list of dict
        Per rank: ``rank``, ``above_threshold`` (r(r+1)/2 > KN), ``instances``, ``instances_with_spurious``,
        ``runs``, ``spurious_runs`` (converged runs away from the convex optimum), ``not_converged``,
        ``convex_ranks`` (rank of each instance's convex optimum), ``best_is_global`` (instances whose best run
        reached the convex optimum), ``runs_above_best`` and ``instances_with_runs_above_best`` (converged runs
        above the best value any run reached at this rank: local minima of the rank-r problem that are not its
        best - the spurious minima in the rank-constrained sense, which below the threshold differ from the
        runs that merely cannot reach a convex optimum of higher rank), ``max_certificate_global`` (the largest rho
        among global runs), ``min_certificate_spurious``, ``seconds``.

    Examples
    --------
    >>> from popgrad.models.ntk_lora.spec import gaussian_ntk_problem
    >>> rows = ntk_threshold_study(lambda s: gaussian_ntk_problem(4, 4, data=3, seed=s), 2, [3], starts=4)
    >>> rows[0]["above_threshold"], rows[0]["spurious_runs"]
    (True, 0)
    """
    instances = check_integer(instances, "instances", 1, 10**6)
    ranks = [check_integer(r, "ranks", 1, 10_000) for r in ranks]
    problems = [builder(seed + i) for i in range(instances)]
    convex = [ntk_convex_optimum(problem) for problem in problems]
    rows = []
    for r in ranks:
        studies = [ntk_landscape(problem, r, starts, seed=seed + 1000 * i, convex=solution, hessian=False, **kwargs) for i, (problem, solution) in enumerate(zip(problems, convex))]
        above_best = [_above_best(s) for s in studies]
        global_rho = [rho for s in studies for rho, ok in zip(s.certificates, s.is_global) if ok]
        spurious_rho = [rho for s in studies for rho, ok in zip(s.certificates, s.is_global) if not ok]
        rows.append({
            "rank": r,
            "above_threshold": bool(r * (r + 1) // 2 > problems[0].count),
            "count": problems[0].count,
            "instances": instances,
            "instances_with_spurious": int(sum(s.spurious_runs > 0 for s in studies)),
            "runs": int(sum(s.runs.starts for s in studies)),
            "spurious_runs": int(sum(s.spurious_runs for s in studies)),
            "not_converged": int(sum(np.sum(s.runs.status != 0) for s in studies)),
            "convex_ranks": [c.rank for c in convex],
            "best_is_global": int(sum(bool(np.any(s.is_global)) for s in studies)),
            "runs_above_best": int(sum(above_best)),
            "instances_with_runs_above_best": int(sum(count > 0 for count in above_best)),
            "max_certificate_global": float(max(global_rho)) if global_rho else None,
            "min_certificate_spurious": float(min(spurious_rho)) if spurious_rho else None,
            "seconds": float(sum(s.seconds for s in studies)),
        })
    return rows
