"""The d → ∞ online-SGD ODE of the committee machine at fixed delta (MATH.md §8; Saad & Solla 1995, Goldt
et al. 2019), in alpha = steps / d:

``dR_in = delta c E[Delta_i nu_n] - delta wd R_in``,
``dQ_ik = delta c (E[Delta_i lambda_k] + E[Delta_k lambda_i]) + delta^2 c^2 E[Delta_i Delta_k] - 2 delta wd Q_ik``,
``da_i = delta_a (c s E[sigma(lambda_i)(y - f)] - wd_a a_i)`` when the second layer is trained,

with c the loss factor (1 ``saad_solla``, 2 ``popgrad``) and the expectations of
:mod:`popgrad.models.committee.population`. The right-hand side is compiled (numba, cached) and integrated
by the adaptive Dormand–Prince solver of :func:`popgrad.dynamics.solve.solve`. A run whose size
``tr Q + |a|^2`` passes a bound, or whose state stops being finite, is reported as diverged (its later
values are nan), not as numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from ..._validation import InvalidArgument, check_real
from ...dynamics.solve import ODE, SolverFailed, solve
from ...dynamics.solvers.base import RHS_SIGNATURE
from ...numerics.compiled import SOURCE_VERSION, specialised
from .population import Committee, committee_arrays, default_orders, expectation_route, generalisation_error, moments, numeric_error_factor, pack_parameters

__all__ = ["CommitteeODESolution", "integrate_ode", "initial_state", "committee_rhs", "ode_parameters"]


@specialised
def _rhs_factory():
    version = SOURCE_VERSION

    @njit(RHS_SIGNATURE, cache=True)
    def rhs(t, y, parameters, out):
        K, M = int(parameters[0]), int(parameters[1])
        delta, delta_a, c = parameters[4], parameters[5], parameters[6]
        s, wd, wd_a, trained = parameters[8], parameters[10], parameters[11], parameters[12] != 0.0
        second = 1.0 - parameters[15]  # header slot 15: 1 drops the delta^2 term (the population gradient flow)
        Q = y[: K * K].reshape((K, K))
        R = y[K * K: K * K + K * M].reshape((K, M))
        a = y[K * K + K * M: K * K + K * M + K]
        nu = np.empty((K, K + M))
        dd = np.empty((K, K))
        se = np.empty(K)
        moments(parameters, Q, R, a, nu, dd, se)
        size = 0.0
        for i in range(K):
            for k in range(K):
                value = delta * c * (nu[i, k] + nu[k, i]) + second * delta * delta * c * c * dd[i, k] - 2.0 * delta * wd * Q[i, k]
                out[i * K + k] = value
                if i == k:
                    size += value
            for n in range(M):
                out[K * K + i * M + n] = delta * c * nu[i, K + n] - delta * wd * R[i, n]
        at = K * K + K * M
        for i in range(K):
            da = delta_a * (c * s * se[i] - wd_a * a[i]) if trained else 0.0
            out[at + i] = da
            size += 2.0 * a[i] * da
        out[at + K] = size + 0.0 * len(version)

    return rhs


def committee_rhs():
    """The compiled right-hand side ``rhs(alpha, y, parameters, out)``; ``y = (Q, R, a, tr Q + |a|^2)``
    flattened, ``parameters`` from :func:`ode_parameters`.

    Returns
    -------
    numba function
        ``rhs(alpha, y, parameters, out)``, writing dy/dalpha into ``out``.
    """
    return _rhs_factory()


def ode_parameters(model, K: int, delta: float, delta_a: float = 0.0, order: int | None = None, second_order: bool = True) -> np.ndarray:
    """The packed parameters of :func:`committee_rhs` (see :func:`popgrad.models.committee.population.pack_parameters`);
    ``second_order=False`` sets the header's slot 15, which drops the delta² term.

    Parameters
    ----------
    model : CommitteeModel or Committee
    K : int
        Student width.
    delta, delta_a : float
        The steps of the first and the second layer.
    order : int, optional
        Gauss–Hermite order of the numeric route.
    second_order : bool, default True

    Returns
    -------
    ndarray
    """
    parameters = pack_parameters(model, K, order, delta, delta_a)
    parameters[15] = 0.0 if second_order else 1.0
    return parameters


def initial_state(model) -> tuple:
    """The d → ∞ initial overlaps ``(Q0, R0, a0)`` of a ``CommitteeModel``'s init rule.

    ``overlaps``: as given; ``random`` with scale s: ``Q0 = s^2 I``, ``R0 = 0`` (rows iid N(0, s^2/d I));
    ``zero``: zeros; ``informed`` with scale s: ``Q0 = T + s^2 I``, ``R0 = T``.

    Parameters
    ----------
    model : CommitteeModel

    Returns
    -------
    tuple of ndarray
    """
    K, M = len(model.student_second_layer), len(model.teacher_second_layer)
    init = dict(model.init)
    kind = init.get("kind", "random")
    a0 = np.array(model.student_second_layer, dtype=np.float64)
    T = np.asarray(model.T, dtype=np.float64)
    if kind == "overlaps":
        return np.array(init["Q"], dtype=np.float64), np.array(init["R"], dtype=np.float64), a0
    scale = float(init.get("scale", 1.0))
    if kind == "random":
        return scale**2 * np.eye(K), np.zeros((K, M)), a0
    if kind == "zero":
        return np.zeros((K, K)), np.zeros((K, M)), a0
    if kind == "informed":
        return T + scale**2 * np.eye(K), T.copy(), a0
    raise InvalidArgument(f"init kind must be one of overlaps, random, zero, informed; got {kind!r}", "init")


@dataclass(frozen=True)
class CommitteeODESolution:
    """The ODE's answer at the requested alphas.

    Attributes
    ----------
    alpha : ndarray (n,)
    eps_g : ndarray (n,)
        In the model's convention (nan after a divergence).
    Q, R, a : ndarray (n, K, K), (n, K, M), (n, K)
    error : dict
        ``eps_g``, ``Q``, ``R``, ``a``: error estimates per output — for the numeric route the difference
        between the integrations at two Gauss–Hermite orders (plus the eps_g kernels' errors); for the
        closed and exact routes the eps_g kernels' rounding only (the solver's tolerance is rtol).
    diverged : bool
    divergence_alpha : float
        Where the size ``tr Q + |a|^2`` passed the bound (nan if it did not).
    route : str
        ``erf``, ``exact`` or ``numeric``.
    steps : int
        Accepted solver steps (of the last integration).
    divergence : str
        How ``diverged`` was decided: ``bound`` (the size passed the bound, within or beyond the requested
        alphas), ``settled`` (continued past the last alpha until the state came to rest: not diverged),
        ``undecided`` (still moving, below the bound, at the continuation's cap: reported not diverged)
        or ``horizon`` (not continued: ``decide_divergence=False``).
    """

    alpha: np.ndarray
    eps_g: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    a: np.ndarray
    error: dict
    diverged: bool
    divergence_alpha: float
    route: str
    steps: int
    divergence: str = "horizon"

    def to_dict(self) -> dict:
        """JSON-ready: ``alpha``, ``eps_g``, ``Q``, ``R``, ``a`` (nested lists, null for nan), ``diverged``."""

        def listed(x):
            return np.where(np.isfinite(x), x, np.nan).tolist()

        return {"alpha": self.alpha.tolist(), "eps_g": listed(self.eps_g), "Q": listed(self.Q), "R": listed(self.R), "a": listed(self.a), "diverged": self.diverged, "divergence_alpha": None if math.isnan(self.divergence_alpha) else self.divergence_alpha, "divergence": self.divergence, "route": self.route}


def _integrate(rhs, parameters, y0, times, rtol, atol, bound, max_steps) -> tuple:
    try:
        solution = solve(ODE(rhs, parameters), y0, times, rtol=rtol, atol=atol, target=bound, stop_at_event=True, event_component=y0.size - 1, max_steps=max_steps)
    except (SolverFailed, ZeroDivisionError):  # the compiled expectations divide by a vanishing determinant: the state blew up
        return np.full((len(times), y0.size), np.nan), 0, True, math.nan
    values = solution.values
    diverged = math.isfinite(solution.event_time)
    finite = np.all(np.isfinite(values), axis=1)
    if not finite.all():  # a state that turned non-finite diverged, whether or not the size bound saw it first
        if not diverged:
            diverged, event = True, float(times[int(np.argmin(finite))])
            return values, solution.steps, diverged, event
    return values, solution.steps, diverged, solution.event_time


def _continue(rhs, parameters, y_end, alpha_end, delta, rtol, atol, bound, max_steps, cap) -> tuple:
    """Continue from the last requested alpha until the size ``tr Q + |a|^2`` passes ``bound`` (diverged),
    the state comes to rest (max |dy/dalpha| <= 1e-9 delta max(1, |y|), or the size's growth exponent
    ``alpha |d size/dalpha| / size`` below 1e-3 past alpha = 10 / delta), or alpha reaches ``cap``;
    in chunks of growing length (alpha x 4). Returns (diverged, divergence_alpha, verdict)."""
    y, start = np.array(y_end, dtype=np.float64), float(alpha_end)
    out = np.empty_like(y)
    while True:
        rhs(start, y, parameters, out)
        if not np.all(np.isfinite(out)):
            return True, start, "bound"
        if np.max(np.abs(out[:-1])) <= 1e-9 * delta * max(1.0, float(np.max(np.abs(y[:-1])))):
            return False, math.nan, "settled"
        # the size's growth exponent alpha d ln(size) / d alpha: ~0.6 while erf students diverge, -> 0 where
        # the state comes to rest (exponentially, or algebraically along directions that do not change f)
        if start >= 10.0 / delta and start * abs(out[-1]) <= 1e-3 * max(abs(y[-1]), 1e-300):
            return False, math.nan, "settled"
        if start >= cap:
            return False, math.nan, "undecided"
        end = min(cap, max(4.0 * start, start + 10.0 / delta))
        try:
            solution = solve(ODE(rhs, parameters), y, [start, end], rtol=rtol, atol=atol, target=bound, stop_at_event=True, event_component=y.size - 1, max_steps=max_steps, t0=start)
        except (SolverFailed, ZeroDivisionError):
            return True, start, "bound"
        if math.isfinite(solution.event_time):
            return True, float(solution.event_time), "bound"
        y = np.array(solution.values[-1], dtype=np.float64)
        if not np.all(np.isfinite(y)):
            return True, end, "bound"
        start = end


def _check_initial(Q0, R0, a0, T, K: int, M: int) -> None:
    """Shapes, finiteness and the joint Gram matrix [[Q0, R0], [R0^T, T]] PSD (to rounding)."""
    if a0.ndim != 1 or a0.size < 1:
        raise InvalidArgument(f"a0 must be a vector of K >= 1 second-layer weights, got shape {a0.shape}", "a0")
    if Q0.shape != (K, K):
        raise InvalidArgument(f"Q0 must be K x K = {K} x {K} (K = len(a0)), got shape {Q0.shape}", "Q0")
    if R0.shape != (K, M):
        raise InvalidArgument(f"R0 must be K x M = {K} x {M}, got shape {R0.shape}", "R0")
    for name, x in (("Q0", Q0), ("R0", R0), ("a0", a0)):
        if not np.all(np.isfinite(x)):
            raise InvalidArgument(f"{name} must be finite", name)
    size = max(1.0, float(np.abs(Q0).max()), float(np.abs(T).max()))
    if np.abs(Q0 - Q0.T).max() > 1e-12 * size:
        raise InvalidArgument("Q0 must be symmetric", "Q0")
    gram = np.block([[0.5 * (Q0 + Q0.T), R0], [R0.T, T]])
    lowest = float(np.linalg.eigvalsh(gram)[0])
    if lowest < -1e-10 * size:
        name = "Q0" if float(np.linalg.eigvalsh(0.5 * (Q0 + Q0.T))[0]) < -1e-10 * size else "R0"
        raise InvalidArgument(f"the initial overlaps must be a Gram matrix: [[Q0, R0], [R0^T, T]] has eigenvalue {lowest:.3g} < 0 (a student-teacher overlap R0 beyond what Q0 and T allow, or Q0 not PSD)", name)


def integrate_ode(model, delta: float, times, delta_a: float | None = None, Q0=None, R0=None, a0=None, rtol: float = 1e-8, atol: float = 1e-10, orders: tuple | None = None, divergence_bound: float = 1e3, max_steps: int = 2_000_000, second_order: bool = True, decide_divergence: bool | None = None, divergence_cap: float | None = None) -> CommitteeODESolution:
    """Integrate the d → ∞ ODE at fixed ``delta`` (and ``delta_a``) from the model's initial state.

    Parameters
    ----------
    model : CommitteeModel or Committee
    delta : float
        ``eta d`` (Saad–Solla's lr), > 0.
    times : sequence of float
        Output alphas (sorted, ≥ 0).
    delta_a : float, optional
        ``eta_a d`` (lr2); default ``delta * second_layer_ratio`` when the second layer is trained.
    Q0, R0, a0 : array_like, optional
        Initial state (default :func:`initial_state` of the model; required for a :class:`Committee`).
    rtol, atol : float
        dopri5 tolerances.
    orders : (int, int), optional
        Gauss–Hermite orders of the numeric route (integrated at both; the difference is the error).
    divergence_bound : float, default 1e3
        Diverged when ``tr Q + |a|^2`` exceeds this times ``max(1, its initial value, tr T + |a*|^2)``
        (or the state stops being finite).
    decide_divergence : bool, optional
        Default: True for the closed-form routes (``erf``, ``exact``), False for ``piecewise`` and
        ``numeric`` (whose right-hand side costs tens of milliseconds: the continuation can take minutes).
        Whether a run that is below the bound at the last requested alpha diverges is decided without
        an arbitrary horizon: the integration continues (outputs unchanged) until the size passes the bound
        (``diverged``, ``divergence_alpha`` beyond the last alpha), or the state comes to rest (a fixed
        point: not diverged), or ``divergence_cap`` (``undecided``: not diverged). For bounded activations
        above the largest learning delta the student's norms grow without bound but slowly (erf:
        tr Q ~ alpha^0.6), so no finite horizon tells it apart from a slow transient.
    divergence_cap : float, optional
        Largest alpha of the continuation (default ``1e7 / delta``).
    max_steps : int
    second_order : bool, default True
        False drops the delta² term ``delta^2 E[Delta_i Delta_k]``: the population gradient flow of eps_g on the
        overlaps (the small-step limit, in the same alpha).

    Returns
    -------
    CommitteeODESolution

    Examples
    --------
    >>> import numpy as np
    >>> from popgrad import activation
    >>> from popgrad.models.committee.population import Committee
    >>> g = activation("erf(z/sqrt(2))")
    >>> m = Committee(g, g, np.ones(2), np.eye(2))
    >>> s = integrate_ode(m, 0.5, [0, 2000], Q0=0.2 * np.eye(2), R0=[[0.1, 0.0], [0.0, 0.05]], a0=np.ones(2))
    >>> bool(s.eps_g[-1] < 1e-6), s.diverged
    (True, False)
    """
    committee = committee_arrays(model)
    delta = check_real(delta, "delta", 0.0, low_open=True)
    if Q0 is None or R0 is None or a0 is None:
        if isinstance(model, Committee):
            raise InvalidArgument("Q0, R0 and a0 are needed with a Committee (a CommitteeModel has an init rule)", "Q0")
        q, r, a = initial_state(model)
        Q0 = q if Q0 is None else Q0
        R0 = r if R0 is None else R0
        a0 = a if a0 is None else a0
    try:
        Q0, R0, a0 = (np.array(x, dtype=np.float64) for x in (Q0, R0, a0))
    except (TypeError, ValueError) as error:
        raise InvalidArgument(f"Q0, R0 and a0 must be numeric arrays ({error})", "Q0") from None
    a0 = np.atleast_1d(a0)
    K, M = len(a0), committee.M
    _check_initial(Q0, R0, a0, committee.T, K, M)
    if getattr(model, "constraint", "none") != "none":
        raise InvalidArgument(f"the d → ∞ ODE is implemented for constraint 'none', not {model.constraint!r}", "constraint")
    if delta_a is None:
        delta_a = delta * float(getattr(model, "second_layer_ratio", 1.0)) if committee.train_second_layer else 0.0
    delta_a = check_real(delta_a, "delta_a", 0.0)
    times = np.asarray(times, dtype=np.float64).ravel()
    if times.size == 0 or np.any(np.diff(times) < 0) or times[0] < 0 or not np.all(np.isfinite(times)):
        raise InvalidArgument("times must be a non-empty sorted list of finite alphas >= 0", "times")
    route = expectation_route(committee)
    size0 = float(np.trace(Q0) + a0 @ a0)
    bound = check_real(divergence_bound, "divergence_bound", 1.0) * max(1.0, size0, float(np.trace(committee.T) + committee.teacher_second_layer @ committee.teacher_second_layer))
    y0 = np.concatenate([Q0.ravel(), R0.ravel(), a0, [size0]])
    rhs = committee_rhs()
    if route == "erf":
        orders = (None,)
    elif orders is None:
        orders = default_orders(committee)
    packed = [ode_parameters(committee, K, delta, delta_a, order, bool(second_order)) for order in orders]
    runs = [_integrate(rhs, parameters, y0, times, rtol, atol, bound, max_steps) for parameters in packed]
    values, steps, diverged, divergence_alpha = runs[-1]
    verdict = "bound" if diverged else "horizon"
    if decide_divergence is None:
        decide_divergence = route in ("erf", "exact")
    if not diverged and decide_divergence:
        cap = 1e7 / delta if divergence_cap is None else check_real(divergence_cap, "divergence_cap", 0.0)
        # the verdict needs no tight tolerance: the size's growth is smooth
        diverged, divergence_alpha, verdict = _continue(rhs, packed[-1], values[-1], float(times[-1]), delta, max(rtol, 1e-6), max(atol, 1e-9), bound, max_steps, max(cap, float(times[-1])))
    if diverged and math.isnan(divergence_alpha):
        finite = np.all(np.isfinite(values), axis=1)
        divergence_alpha = float(times[np.argmin(finite)]) if not finite.all() else math.nan
    n = len(times)
    Q = values[:, : K * K].reshape(n, K, K)
    R = values[:, K * K: K * K + K * M].reshape(n, K, M)
    a = values[:, K * K + K * M: K * K + K * M + K]
    finite = np.all(np.isfinite(values), axis=1)
    eps = np.full(n, np.nan)
    eps_error = np.full(n, np.nan)
    if finite.any():
        eps[finite], eps_error[finite] = generalisation_error(committee, Q[finite], R[finite], a[finite], with_error=True)
    error = {"eps_g": eps_error, "Q": np.zeros_like(Q), "R": np.zeros_like(R), "a": np.zeros_like(a)}
    if len(runs) == 2:
        low = runs[0][0]
        difference = numeric_error_factor(committee, orders) * np.abs(values - low)
        error["Q"] = difference[:, : K * K].reshape(n, K, K)
        error["R"] = difference[:, K * K: K * K + K * M].reshape(n, K, M)
        error["a"] = difference[:, K * K + K * M: K * K + K * M + K]
        low_finite = np.all(np.isfinite(low), axis=1) & finite
        if low_finite.any():
            low_eps = generalisation_error(committee, low[low_finite, : K * K].reshape(-1, K, K), low[low_finite, K * K: K * K + K * M].reshape(-1, K, M), low[low_finite, K * K + K * M: K * K + K * M + K])
            eps_error[low_finite] += numeric_error_factor(committee, orders) * np.abs(eps[low_finite] - low_eps)
        diverged = diverged or runs[0][2]
    return CommitteeODESolution(times, eps, Q, R, a, error, bool(diverged), float(divergence_alpha), route, int(steps), verdict)
