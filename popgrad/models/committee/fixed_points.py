"""Fixed points of the committee machine's d → ∞ ODE (:mod:`popgrad.models.committee.ode`): the symmetric
plateau ``Q_ik = q + (Q - q) delta_ik``, ``R_in = r`` and the specialised solution, the eigenvalues of the
Jacobian there (in alpha units), the plateau's eps_g and the predicted escape rate (the largest positive
real part of an eigenvalue: the unstable direction along which the student specialises).

The state's coordinates are the upper triangle of Q, R and (when trained) a; the Jacobian is taken by
central differences of the compiled right-hand side. Fixed points are found by scipy's ``root`` on the
right-hand side divided by delta (so that small delta is well scaled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..._validation import InvalidArgument, check_real
from .ode import committee_rhs, integrate_ode, ode_parameters
from .population import Committee, committee_arrays, generalisation_error

__all__ = ["FixedPoint", "fixed_point", "symmetric_plateau", "specialised_solution", "jacobian_eigenvalues"]


@dataclass(frozen=True)
class FixedPoint:
    """A fixed point of the ODE.

    Attributes
    ----------
    Q, R, a : ndarray
    eps_g : float
        In the model's convention.
    eigenvalues : ndarray (complex)
        Of the Jacobian in (upper triangle of Q, R, a if trained), sorted by decreasing real part, in alpha units.
    escape_rate : float
        The largest positive real part (0 when the fixed point is stable).
    residual : float
        Max norm of the right-hand side / delta at the point.
    kind : str
        ``symmetric``, ``specialised`` or ``general``.
    """

    Q: np.ndarray
    R: np.ndarray
    a: np.ndarray
    eps_g: float
    eigenvalues: np.ndarray
    escape_rate: float
    residual: float
    kind: str


class _System:
    """The right-hand side on reduced coordinates (upper triangle of Q, R, a when trained)."""

    def __init__(self, committee: Committee, K: int, delta: float, delta_a: float, a: np.ndarray):
        self.committee, self.K, self.M = committee, K, committee.M
        self.delta, self.trained = delta, committee.train_second_layer and delta_a > 0
        self.parameters = ode_parameters(committee, K, delta, delta_a)
        self.rhs = committee_rhs()
        self.upper = np.triu_indices(K)
        self.a = np.array(a, dtype=np.float64)

    def full(self, z: np.ndarray) -> tuple:
        K, M = self.K, self.M
        n = len(self.upper[0])
        Q = np.zeros((K, K))
        Q[self.upper] = z[:n]
        Q = Q + np.triu(Q, 1).T
        R = z[n: n + K * M].reshape(K, M)
        a = z[n + K * M:] if self.trained else self.a
        return Q, R, a

    def reduce(self, Q, R, a) -> np.ndarray:
        parts = [np.asarray(Q)[self.upper], np.asarray(R).ravel()] + ([np.asarray(a)] if self.trained else [])
        return np.concatenate(parts).astype(np.float64)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        Q, R, a = self.full(z)
        y = np.concatenate([Q.ravel(), R.ravel(), a, [0.0]])
        out = np.empty_like(y)
        self.rhs(0.0, y, self.parameters, out)
        K, M = self.K, self.M
        dQ = out[: K * K].reshape(K, K)
        return self.reduce(dQ, out[K * K: K * K + K * M].reshape(K, M), out[K * K + K * M: K * K + K * M + K]) / self.delta

    def jacobian(self, z: np.ndarray) -> np.ndarray:
        columns = []
        for j in range(z.size):
            h = 1e-6 * max(1.0, abs(z[j]))
            up, down = z.copy(), z.copy()
            up[j] += h
            down[j] -= h
            columns.append((self(up) - self(down)) / (2 * h))
        return self.delta * np.array(columns).T


def _finish(system: _System, z: np.ndarray, kind: str) -> FixedPoint:
    Q, R, a = system.full(z)
    eigenvalues = np.linalg.eigvals(system.jacobian(z))
    eigenvalues = eigenvalues[np.argsort(-eigenvalues.real)]
    escape = max(0.0, float(eigenvalues.real[0]))
    eps = float(generalisation_error(system.committee, Q, R, a))
    return FixedPoint(Q, R, np.array(a), eps, eigenvalues, escape, float(np.max(np.abs(system(z)))), kind)


def _arguments(model, delta, delta_a, a) -> tuple:
    committee = committee_arrays(model)
    delta = check_real(delta, "delta", 0.0, low_open=True)
    if delta_a is None:
        delta_a = delta * float(getattr(model, "second_layer_ratio", 1.0)) if committee.train_second_layer else 0.0
    if a is None:
        if isinstance(model, Committee):
            raise InvalidArgument("a is needed with a Committee", "a")
        a = np.asarray(model.student_second_layer, dtype=np.float64)
    return committee, delta, check_real(delta_a, "delta_a", 0.0), np.asarray(a, dtype=np.float64)


def jacobian_eigenvalues(model, delta: float, Q, R, a=None, delta_a: float | None = None) -> np.ndarray:
    """Eigenvalues of the ODE's Jacobian at (Q, R, a), sorted by decreasing real part (alpha units).

    Parameters
    ----------
    model : CommitteeModel or Committee
    delta : float
    Q, R : array_like
    a : array_like, optional
        Default the model's second layer.
    delta_a : float, optional

    Returns
    -------
    ndarray (complex)
    """
    committee, delta, delta_a, a = _arguments(model, delta, delta_a, a)
    system = _System(committee, len(a), delta, delta_a, a)
    eigenvalues = np.linalg.eigvals(system.jacobian(system.reduce(Q, R, a)))
    return eigenvalues[np.argsort(-eigenvalues.real)]


def fixed_point(model, delta: float, Q, R, a=None, delta_a: float | None = None, kind: str = "general", tolerance: float = 1e-12) -> FixedPoint:
    """The fixed point nearest the guess (Q, R, a), by scipy's ``root`` (hybrid Powell) on the right-hand
    side divided by delta.

    Parameters
    ----------
    model : CommitteeModel or Committee
    delta : float
    Q, R : array_like
        The guess.
    a : array_like, optional
        The second layer (the guess when it is trained; default the model's).
    delta_a : float, optional
    kind : str
        Label of the result.
    tolerance : float
        Required max norm of the right-hand side / delta.

    Returns
    -------
    FixedPoint

    Raises
    ------
    InvalidArgument
        When no fixed point is found from the guess.
    """
    from scipy import optimize

    committee, delta, delta_a, a = _arguments(model, delta, delta_a, a)
    system = _System(committee, len(a), delta, delta_a, a)
    found = optimize.root(system, system.reduce(Q, R, a), method="hybr", tol=1e-14)
    if not np.max(np.abs(system(found.x))) <= tolerance:
        raise InvalidArgument(f"no fixed point found from the guess (residual {np.max(np.abs(system(found.x))):.3g}: {found.message})", "Q")
    return _finish(system, found.x, kind)


def symmetric_plateau(model, delta: float, a=None, delta_a: float | None = None, start: tuple = (0.25, 0.0, 0.01), alpha: float | None = None) -> FixedPoint:
    """The symmetric fixed point ``Q_ik = q + (Q - q) delta_ik``, ``R_in = r``: the ODE integrated from a
    symmetric start (``(Q, q, r)`` = ``start``), where it stays, to the attractor of that subspace, then
    polished by :func:`fixed_point`.

    Parameters
    ----------
    model : CommitteeModel or Committee
    delta : float
    a : array_like, optional
    delta_a : float, optional
    start : (float, float, float)
        ``(Q, q, r)`` of the symmetric start.
    alpha : float, optional
        How long to integrate (default ``200 / delta``).

    Returns
    -------
    FixedPoint
        ``kind = "symmetric"``; ``escape_rate`` is the plateau's predicted escape rate.

    Examples
    --------
    >>> import numpy as np
    >>> from popgrad import activation
    >>> g = activation("erf(z/sqrt(2))")
    >>> p = symmetric_plateau(Committee(g, g, np.ones(2), np.eye(2)), 0.1, a=np.ones(2))
    >>> bool(p.escape_rate > 0), bool(p.residual < 1e-10)
    (True, True)
    """
    committee, delta, delta_a, a = _arguments(model, delta, delta_a, a)
    K, M = len(a), committee.M
    diagonal, off, r = start
    Q0 = off * np.ones((K, K)) + (diagonal - off) * np.eye(K)
    R0 = r * np.ones((K, M))
    alpha = 200.0 / delta if alpha is None else check_real(alpha, "alpha", 0.0, low_open=True)
    run = integrate_ode(committee, delta, [0.0, alpha], delta_a=delta_a, Q0=Q0, R0=R0, a0=a)
    if run.diverged:
        raise InvalidArgument(f"the symmetric start diverges at delta = {delta}", "delta")
    return fixed_point(committee, delta, run.Q[-1], run.R[-1], run.a[-1], delta_a, kind="symmetric")


def specialised_solution(model, delta: float, a=None, delta_a: float | None = None) -> FixedPoint:
    """The specialised fixed point, from the guess ``Q = T``, ``R = T`` (each student on its teacher; K = M).

    Without noise and with matching activations and second layers it is the perfect student (eps_g = 0);
    with output noise the delta^2 term moves it, and the returned point is where the ODE comes to rest.

    Parameters
    ----------
    model : CommitteeModel or Committee
    delta : float
    a : array_like, optional
    delta_a : float, optional

    Returns
    -------
    FixedPoint
    """
    committee, delta, delta_a, a = _arguments(model, delta, delta_a, a)
    if len(a) != committee.M:
        raise InvalidArgument(f"the specialised solution needs K = M, got K = {len(a)}, M = {committee.M}", "K")
    return fixed_point(committee, delta, committee.T, committee.T, a, delta_a, kind="specialised")
