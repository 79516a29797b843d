"""Population quantities of the committee machine (MATH.md §8): the generalisation error in closed form and
the Gaussian expectations of the d → ∞ online-SGD ODE.

Pre-activations ``u = (lambda_1..lambda_K, nu_1..nu_M)`` are jointly Gaussian with covariance
``C = [[Q, R], [R^T, T]]``. With ``f* - f = sum_p b_p phi_p(u_p)`` (``b = (-s a, s* a*)``, ``phi`` = sigma for
students, sigma* for teachers) and ``Delta_i = s a_i sigma'(lambda_i) (y - f)`` (MATH.md §8, loss 1/2):

* ``eps_g = e sum_pq b_p b_q K_{phi_p phi_q}(C_pp, C_qq, C_pq)`` with e = 1/2 (``saad_solla``) or 1 (``popgrad``),
  through the two-activation kernels of :mod:`popgrad.gaussian.pair_kernels`;
* ``E[Delta_i u_n] = s a_i sum_p b_p E[sigma'(lambda_i) u_n phi_p(u_p)]`` (three variables);
* ``E[Delta_i Delta_k] = s^2 a_i a_k (sum_pq b_p b_q E[sigma'(lambda_i) sigma'(lambda_k) phi_p phi_q] + tau^2 E[sigma' sigma'])``;
* ``E[sigma(lambda_i)(y - f)] = sum_p b_p E[sigma(lambda_i) phi_p(u_p)]``.

Routes for the expectations (:func:`expectation_route`): ``erf`` when both activations are ``A erf(c z)``
(Saad & Solla 1995: with ``g(x) = erf(x / sqrt 2)`` and ``u' = sqrt(2) c u``,
``I3 = (2/pi) (C23 (1 + C11) - C12 C13) / ((1 + C11) sqrt(L3))``, ``I4 = 4 / (pi^2 sqrt(L4)) arcsin(L0 / sqrt(L1 L2))``);
``exact`` for polynomials (tensor Gauss–Hermite with enough nodes to be exact); ``piecewise`` for a
piecewise-linear student (relu, leaky relu, abs; any teacher): sigma' = alpha + beta H, and conditioning on
the pre-activations of the non-closed-form factors leaves the steps as Gaussian probabilities in closed form
(Phi; Genz's bivariate normal), then composite Gauss–Legendre split at every kink on the remaining 1-D (two-
and three-variable moments) or 2-D (four-variable) integral: geometric convergence, so the difference
between two orders (:data:`PIECEWISE_ORDERS`) bounds the error (~1e-13 true against ~1e-9 reported at
orders 7, 10; checked against order 28 on random and singular states and against 1e7 samples);
``numeric`` otherwise (smooth students such as tanh: tensor Gauss–Hermite on each 2-, 3- or 4-variable
block at two orders, the difference enlarged by :func:`numeric_error_factor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from ..._validation import InvalidArgument, check_integer
from ...gaussian.activations import Activation, activation
from ...gaussian.families.fast import activation_derivative, activation_value
from ...gaussian.pair_kernels import pair_form, pair_kernel
from ...gaussian.programs import STACK_SIZE
from ...numerics.linalg import cholesky_lower

__all__ = [
    "Committee",
    "committee_arrays",
    "generalisation_error",
    "expectation_route",
    "ODEExpectations",
    "ode_expectations",
    "population_flow",
    "pack_parameters",
    "ROUTE_ERF",
    "ROUTE_NUMERIC",
]

ROUTE_ERF, ROUTE_NUMERIC, ROUTE_PIECEWISE = 0, 1, 2
#: Gauss–Hermite orders of the numeric route (the error is the difference between them)
NUMERIC_ORDERS = (10, 14)
HEADER = 20  # K, M, route, order, delta, delta_a, c, tau^2, s, s*, wd, wd_a, train_a, two offsets, 1 to drop the delta^2 term (ode.py), the piecewise data's offset, 3 spare


@dataclass(frozen=True)
class Committee:
    """The arrays the population quantities need, under the attribute names of ``CommitteeModel``.

    Attributes
    ----------
    student_activation, teacher_activation : Activation
    teacher_second_layer : ndarray (M,)
    T : ndarray (M, M)
    student_scale, teacher_scale : float
    noise : float
        tau ≥ 0.
    convention : str
        ``saad_solla`` (loss 1/2, eps_g = 1/2 E[(f* - f)^2]) or ``popgrad`` (loss and eps_g without 1/2).
    weight_decay, second_layer_weight_decay : float
    train_second_layer : bool
    """

    student_activation: Activation
    teacher_activation: Activation
    teacher_second_layer: np.ndarray
    T: np.ndarray
    student_scale: float = 1.0
    teacher_scale: float = 1.0
    noise: float = 0.0
    convention: str = "saad_solla"
    weight_decay: float = 0.0
    second_layer_weight_decay: float = 0.0
    train_second_layer: bool = False

    @property
    def M(self) -> int:
        return len(self.teacher_second_layer)

    @property
    def loss_factor(self) -> float:
        return 1.0 if self.convention == "saad_solla" else 2.0

    @property
    def error_factor(self) -> float:
        return 0.5 if self.convention == "saad_solla" else 1.0


def committee_arrays(model) -> Committee:
    """The population view of a ``CommitteeModel`` (or a :class:`Committee`, returned as it is).

    Parameters
    ----------
    model : CommitteeModel or Committee

    Returns
    -------
    Committee
    """
    if isinstance(model, Committee):
        return model
    if model.convention not in ("saad_solla", "popgrad"):
        raise InvalidArgument(f"convention must be 'saad_solla' or 'popgrad', got {model.convention!r}", "convention")
    return Committee(
        activation(model.student_activation),
        activation(model.teacher_activation),
        np.asarray(model.teacher_second_layer, dtype=np.float64),
        np.asarray(model.T, dtype=np.float64),
        float(model.student_scale),
        float(model.teacher_scale),
        float(model.noise),
        model.convention,
        float(getattr(model, "weight_decay", 0.0)),
        float(getattr(model, "second_layer_weight_decay", 0.0)),
        bool(getattr(model, "train_second_layer", False)),
    )


def _state(committee: Committee, Q, R, a) -> tuple:
    Q, R, a = (np.asarray(x, dtype=np.float64) for x in (Q, R, a))
    M = committee.M
    if Q.ndim < 2 or Q.shape[-1] != Q.shape[-2]:
        raise InvalidArgument(f"Q must have shape (..., K, K), got {Q.shape}", "Q")
    K = Q.shape[-1]
    if R.shape[-2:] != (K, M):
        raise InvalidArgument(f"R must have shape (..., {K}, {M}), got {R.shape}", "R")
    if a.shape[-1:] != (K,):
        raise InvalidArgument(f"a must have shape (..., {K}), got {a.shape}", "a")
    if not (np.all(np.isfinite(Q)) and np.all(np.isfinite(R)) and np.all(np.isfinite(a))):
        raise InvalidArgument("Q, R and a must be finite", "Q")
    batch = np.broadcast_shapes(Q.shape[:-2], R.shape[:-2], a.shape[:-1])
    return np.broadcast_to(Q, batch + (K, K)), np.broadcast_to(R, batch + (K, M)), np.broadcast_to(a, batch + (K,)), K, M


def _pair(sigma1, sigma2, s11, s22, s12) -> tuple:
    # an integrated state (the ODE at rtol ~1e-8) may leave the PSD cone by that much where two neurons
    # align (|corr| -> 1): clip |S12| to sqrt(S11 S22) within 1e-6 relative; a larger violation is refused
    bound = np.sqrt(np.maximum(s11, 0.0) * np.maximum(s22, 0.0))
    s12 = np.where(np.abs(s12) <= bound * (1.0 + 1e-6), np.clip(s12, -bound, bound), s12)
    matrix = np.stack([np.stack([s11, s12], -1), np.stack([s12, s22], -1)], -2)
    k = pair_kernel(sigma1, sigma2, matrix)
    return k.value, k.error


def generalisation_error(model, Q, R, a, with_error: bool = False):
    """``eps_g`` at the state (Q, R, a), in the model's convention, over leading batch axes.

    ``eps_g = e E[(f* - f)^2]`` against the teacher's clean output (e = 1/2 for ``saad_solla``, 1 for
    ``popgrad``; the expected loss on a noisy sample adds ``e tau^2``).

    Parameters
    ----------
    model : CommitteeModel or Committee
    Q : array_like (..., K, K)
        Student–student overlaps.
    R : array_like (..., K, M)
        Student–teacher overlaps.
    a : array_like (..., K)
        The student's second layer.
    with_error : bool, default False
        Also return the error estimate (rounding for closed forms; the kernels' bounds otherwise).

    Returns
    -------
    ndarray (...,), or (value, error) with ``with_error``

    Examples
    --------
    >>> import numpy as np
    >>> from popgrad import activation
    >>> g = activation("erf(z/sqrt(2))")
    >>> m = Committee(g, g, np.ones(2), np.eye(2))
    >>> float(generalisation_error(m, np.eye(2), np.eye(2), np.ones(2)))  # the student is the teacher
    0.0
    >>> round(float(generalisation_error(m, np.zeros((2, 2)), np.zeros((2, 2)), np.ones(2))), 12)  # 1/2 * 2 * (2/pi) arcsin(1/2)
    0.333333333333
    """
    committee = committee_arrays(model)
    Q, R, a, K, M = _state(committee, Q, R, a)
    sigma, star = committee.student_activation, committee.teacher_activation
    s, s_star, a_star, T = committee.student_scale, committee.teacher_scale, committee.teacher_second_layer, committee.T
    batch = Q.shape[:-2]
    dq = np.diagonal(Q, axis1=-2, axis2=-1)
    tt = np.diag(T)
    # teacher–teacher (state independent)
    kt, et = _pair(star, star, np.broadcast_to(tt[:, None], (M, M)), np.broadcast_to(tt[None, :], (M, M)), T)
    teacher = s_star**2 * a_star @ kt @ a_star
    teacher_error = s_star**2 * np.abs(a_star) @ et @ np.abs(a_star)
    kc, ec = _pair(sigma, star, np.broadcast_to(dq[..., :, None], batch + (K, M)), np.broadcast_to(tt, batch + (K, M)), R)
    cross = np.einsum("...i,...in,n->...", a, kc, a_star)
    cross_error = np.einsum("...i,...in,n->...", np.abs(a), ec, np.abs(a_star))
    ks, es = _pair(sigma, sigma, np.broadcast_to(dq[..., :, None], Q.shape), np.broadcast_to(dq[..., None, :], Q.shape), Q)
    student = np.einsum("...i,...ik,...k->...", a, ks, a)
    student_error = np.einsum("...i,...ik,...k->...", np.abs(a), es, np.abs(a))
    e = committee.error_factor
    value = e * (teacher - 2 * s * s_star * cross + s * s * student)
    if not with_error:
        return value
    error = e * (teacher_error + 2 * abs(s * s_star) * cross_error + s * s * student_error + 1e-15 * (abs(teacher) + np.abs(2 * s * s_star * cross) + np.abs(s * s * student)))
    return value, error


# ------------------------------------------------------------------------------------------------
# the expectations of the ODE: packed parameters and one compiled routine for both routes
# ------------------------------------------------------------------------------------------------


def expectation_route(model) -> str:
    """``erf`` (closed forms: both activations ``A erf(c z)``), ``exact`` (both polynomials: Gauss–Hermite
    with enough nodes), ``piecewise`` (a piecewise-linear student ``alpha z + beta relu(z)``: relu, leaky
    relu, abs; any teacher) or ``numeric``.

    Parameters
    ----------
    model : CommitteeModel or Committee

    Returns
    -------
    str

    Examples
    --------
    >>> import numpy as np
    >>> from popgrad import activation
    >>> expectation_route(Committee(activation("erf(z/sqrt(2))"), activation("erf"), np.ones(1), np.eye(1)))
    'erf'
    >>> expectation_route(Committee(activation("linear"), activation("He_2"), np.ones(1), np.eye(1)))
    'exact'
    >>> expectation_route(Committee(activation("relu"), activation("erf(z/sqrt(2))"), np.ones(1), np.eye(1)))
    'piecewise'
    """
    committee = committee_arrays(model)
    forms = pair_form(committee.student_activation), pair_form(committee.teacher_activation)
    if all(f.kind == "erf" for f in forms):
        return "erf"
    if all(f.kind == "polynomial" for f in forms):
        return "exact"
    if forms[0].kind == "piecewise_linear":
        return "piecewise"
    return "numeric"


def exact_orders(model) -> tuple:
    """Gauss–Hermite orders exact for the polynomial route: the 4-variable integrand
    ``sigma' sigma' phi phi`` has degree ``2 (q - 1) + 2 q*``, q = max degree (and one order beyond)."""
    committee = committee_arrays(model)
    q = max(pair_form(committee.student_activation).degree, pair_form(committee.teacher_activation).degree)
    degree = 2 * (pair_form(committee.student_activation).degree - 1) + 2 * q
    n = degree // 2 + 1
    return n, n + 1


def default_orders(model) -> tuple:
    """The two orders a route is evaluated at (value at the second, error from the difference):
    :func:`exact_orders`, :data:`PIECEWISE_ORDERS` or :data:`NUMERIC_ORDERS`; ``(None,)`` for ``erf``."""
    route = expectation_route(model)
    if route == "erf":
        return (None,)
    if route == "exact":
        return exact_orders(model)
    return PIECEWISE_ORDERS if route == "piecewise" else NUMERIC_ORDERS


def numeric_error_factor(model, orders: tuple) -> float:
    """Factor on the difference between the two Gauss–Hermite orders (n1 < n2) that makes it an error
    estimate for the higher one. Gauss–Hermite converges geometrically only for entire integrands; tanh or
    sigmoid (poles) converge like exp(-c sqrt n), kinked activations algebraically. Assuming
    err(n) ~ n^-1/2 gives ``difference / ((n2/n1)^(1/2) - 1)`` (5.4 for orders 10 and 14); for
    activations whose sigma' jumps (relu) even this underestimates (measured: see the tests), so the
    numeric route is not to be trusted there beyond its order of magnitude: piecewise-linear students take
    the ``piecewise`` route (factor 1: composite Gauss–Legendre split at every kink converges geometrically,
    so the difference between orders bounds the higher order's error).""" 
    if expectation_route(model) == "piecewise":
        return 1.0  # geometric convergence: the lower order's error bounds the higher one's
    n1, n2 = orders
    return 1.0 / (math.sqrt(n2 / n1) - 1.0)


def _program_blob(sigma: Activation) -> np.ndarray:
    code, parameters, ops, args, d_ops, d_args = sigma.jit_spec
    parts = [np.array([code, len(parameters)], dtype=np.float64), parameters]
    for array in (ops, args, d_ops, d_args):
        parts += [np.array([len(array)], dtype=np.float64), np.asarray(array, dtype=np.float64)]
    return np.concatenate(parts)


def pack_parameters(model, K: int, order: int | None = None, delta: float = 0.0, delta_a: float = 0.0) -> np.ndarray:
    """One float64 vector with everything the compiled expectations (and the ODE's right-hand side) need.

    Layout: a header of 16 numbers (K, M, route, Gauss–Hermite order, delta, delta_a, c, tau^2, s, s*,
    weight decays, train flag, offsets), then a* (M), T (M×M), amplitudes and inner scales of the K + M
    units (erf route), the Gauss–Hermite rule and the two activations' programs (numeric route).

    Parameters
    ----------
    model : CommitteeModel or Committee
    K : int
        Student width.
    order : int, optional
        Gauss–Hermite order (numeric and exact routes; default the higher of :data:`NUMERIC_ORDERS` or
        :func:`exact_orders`).
    delta, delta_a : float
        The ODE's learning rates (0 for the expectations alone).

    Returns
    -------
    ndarray
    """
    committee = committee_arrays(model)
    K = check_integer(K, "K", 1)
    M = committee.M
    route = expectation_route(committee)
    if order is None:
        order = 1 if route == "erf" else default_orders(committee)[1]
    order = check_integer(order, "order", 1, 64)
    code = {"erf": ROUTE_ERF, "piecewise": ROUTE_PIECEWISE}.get(route, ROUTE_NUMERIC)
    student, teacher = pair_form(committee.student_activation), pair_form(committee.teacher_activation)
    amplitude = np.ones(K + M)
    kappa = np.ones(K + M)
    if code == ROUTE_ERF:
        amplitude[:K], kappa[:K] = student.amplitude, math.sqrt(2) * student.inner
        amplitude[K:], kappa[K:] = teacher.amplitude, math.sqrt(2) * teacher.inner
    if code == ROUTE_PIECEWISE:
        nodes, weights = np.polynomial.legendre.leggauss(order)
    else:
        nodes, weights = np.polynomial.hermite_e.hermegauss(order)
        weights = weights / math.sqrt(2 * math.pi)
    body = [committee.teacher_second_layer, committee.T.ravel(), amplitude, kappa, nodes, weights]
    student_at = HEADER + sum(len(b) for b in body)
    student_blob = _program_blob(committee.student_activation)
    teacher_at = student_at + len(student_blob)
    teacher_blob = _program_blob(committee.teacher_activation)
    piecewise_at = teacher_at + len(teacher_blob)
    piecewise = np.zeros(4)
    if code == ROUTE_PIECEWISE:
        # sigma = alpha z + beta relu(z); H(0) = (sigma'(0) - alpha) / beta as the activation's derivative has it
        h0 = (float(committee.student_activation.prime(np.array([0.0]))[0]) - student.alpha) / student.beta
        breaks = np.asarray(committee.teacher_activation.breakpoints, dtype=np.float64)
        piecewise = np.concatenate([[student.alpha, student.beta, h0, 1.0, 0.0, len(breaks)], breaks])
    header = [K, M, code, order, delta, delta_a, committee.loss_factor, committee.noise**2, committee.student_scale, committee.teacher_scale, committee.weight_decay, committee.second_layer_weight_decay, float(committee.train_second_layer), student_at, teacher_at, 0.0, piecewise_at, 0.0, 0.0, 0.0]
    return np.concatenate([np.array(header, dtype=np.float64)] + body + [student_blob, teacher_blob, piecewise])


@njit(cache=True)
def _unpack_program(parameters, at):
    code = int(parameters[at])
    n = int(parameters[at + 1])
    values = parameters[at + 2: at + 2 + n]
    at += 2 + n
    n = int(parameters[at])
    ops = parameters[at + 1: at + 1 + n].astype(np.int64)
    at += 1 + n
    n = int(parameters[at])
    args = parameters[at + 1: at + 1 + n]
    at += 1 + n
    n = int(parameters[at])
    d_ops = parameters[at + 1: at + 1 + n].astype(np.int64)
    at += 1 + n
    n = int(parameters[at])
    d_args = parameters[at + 1: at + 1 + n]
    return code, values, ops, args, d_ops, d_args


@njit(cache=True)
def _erf_i2(C, a, b):
    return 2.0 / math.pi * math.asin(C[a, b] / math.sqrt((1.0 + C[a, a]) * (1.0 + C[b, b])))


@njit(cache=True)
def _erf_i3(C, a, b, c):
    """``E[g'(u_a) u_b g(u_c)]`` for g(x) = erf(x / sqrt 2)."""
    caa = 1.0 + C[a, a]
    l3 = caa * (1.0 + C[c, c]) - C[a, c] * C[a, c]
    return 2.0 / math.pi * (C[b, c] * caa - C[a, b] * C[a, c]) / (caa * math.sqrt(l3))


@njit(cache=True)
def _erf_i4_parts(C, a, b):
    """``L4 = (1 + C_aa)(1 + C_bb) - C_ab^2`` of the pair (a, b) of sigma' arguments."""
    return (1.0 + C[a, a]) * (1.0 + C[b, b]) - C[a, b] * C[a, b]


@njit(cache=True)
def _erf_i4_arcsin(C, a, b, c, d, l4):
    """``arcsin(L0 / sqrt(L1 L2))`` of ``I4 = E[g'(u_a) g'(u_b) g(u_c) g(u_d)] = 4 / (pi^2 sqrt(L4)) arcsin(...)``."""
    caa, cbb = 1.0 + C[a, a], 1.0 + C[b, b]
    l0 = l4 * C[c, d] - C[b, c] * C[b, d] * caa - C[a, c] * C[a, d] * cbb + C[a, b] * C[a, c] * C[b, d] + C[a, b] * C[a, d] * C[b, c]
    l1 = l4 * (1.0 + C[c, c]) - C[b, c] * C[b, c] * caa - C[a, c] * C[a, c] * cbb + 2.0 * C[a, b] * C[a, c] * C[b, c]
    l2 = l4 * (1.0 + C[d, d]) - C[b, d] * C[b, d] * caa - C[a, d] * C[a, d] * cbb + 2.0 * C[a, b] * C[a, d] * C[b, d]
    x = l0 / math.sqrt(l1 * l2)
    return math.asin(min(1.0, max(-1.0, x)))


@njit(cache=True)
def _erf_moments(C, amplitude, kappa, b, a, K, N, s, tau2, moments_nu, moments_dd, moments_se):
    """The three expectations for A erf(c z) units (Saad–Solla closed forms on u' = kappa u)."""
    Cp = np.empty((N, N))
    for p in range(N):
        for q in range(N):
            Cp[p, q] = kappa[p] * kappa[q] * C[p, q]
    weight = np.empty(N)
    for p in range(N):
        weight[p] = b[p] * amplitude[p]
    for i in range(K):
        factor = s * a[i] * amplitude[i] * kappa[i]
        for n in range(N):
            total = 0.0
            for p in range(N):
                total += weight[p] * _erf_i3(Cp, i, n, p)
            moments_nu[i, n] = factor * total / kappa[n]
        total = 0.0
        for p in range(N):
            total += weight[p] * _erf_i2(Cp, i, p)
        moments_se[i] = amplitude[i] * total
    for i in range(K):
        for k in range(i, K):
            l4 = _erf_i4_parts(Cp, i, k)
            total = 0.0
            for p in range(N):
                total += weight[p] * weight[p] * _erf_i4_arcsin(Cp, i, k, p, p, l4)
                for q in range(p + 1, N):
                    total += 2.0 * weight[p] * weight[q] * _erf_i4_arcsin(Cp, i, k, p, q, l4)
            value = 4.0 / (math.pi * math.pi * math.sqrt(l4)) * total + tau2 * 2.0 / (math.pi * math.sqrt(l4))
            value *= s * s * a[i] * a[k] * amplitude[i] * kappa[i] * amplitude[k] * kappa[k]
            moments_dd[i, k] = value
            moments_dd[k, i] = value


# kinds of factor in a Gauss–Hermite block
_PRIME, _IDENTITY, _STUDENT, _TEACHER = 0, 1, 2, 3


@njit(cache=True)
def _gauss_block(C, index, kinds, nodes, weights, student, teacher, stack):
    """``E[prod_j f_kind_j(u_index_j)]`` by tensor Gauss–Hermite on the block of C (2 to 4 variables)."""
    m = index.shape[0]
    block = np.empty((m, m))
    for i in range(m):
        for j in range(m):
            block[i, j] = C[index[i], index[j]]
    scale = 0.0
    for i in range(m):
        scale = max(scale, block[i, i])
    L = np.empty((m, m))
    cholesky_lower(block, L, 1e-13 * scale)  # rank-revealing: a repeated variable gives a zero column
    n = nodes.shape[0]
    total = 0.0
    counter = np.zeros(m, dtype=np.int64)
    x = np.empty(m)
    for _ in range(n**m):
        w = 1.0
        for j in range(m):
            w *= weights[counter[j]]
        for i in range(m):
            value = 0.0
            for j in range(m):
                value += L[i, j] * nodes[counter[j]]
            x[i] = value
        product = w
        for j in range(m):
            kind = kinds[j]
            if kind == _PRIME:
                product *= activation_derivative(student[0], student[1], student[4], student[5], stack, x[j])
            elif kind == _IDENTITY:
                product *= x[j]
            elif kind == _STUDENT:
                product *= activation_value(student[0], student[1], student[2], student[3], stack, x[j])
            else:
                product *= activation_value(teacher[0], teacher[1], teacher[2], teacher[3], stack, x[j])
        total += product
        for j in range(m):
            counter[j] += 1
            if counter[j] < n:
                break
            counter[j] = 0
    return total


@njit(cache=True)
def _numeric_moments(C, b, a, K, N, s, tau2, nodes, weights, student, teacher, moments_nu, moments_dd, moments_se):
    stack = np.empty(STACK_SIZE)
    pair = np.empty(2, dtype=np.int64)
    triple = np.empty(3, dtype=np.int64)
    quad = np.empty(4, dtype=np.int64)
    kinds2 = np.empty(2, dtype=np.int64)
    kinds3 = np.empty(3, dtype=np.int64)
    kinds4 = np.empty(4, dtype=np.int64)
    for i in range(K):
        total = 0.0
        for p in range(N):
            pair[0], pair[1] = i, p
            kinds2[0], kinds2[1] = _STUDENT, _STUDENT if p < K else _TEACHER
            total += b[p] * _gauss_block(C, pair, kinds2, nodes, weights, student, teacher, stack)
        moments_se[i] = total
        for n in range(N):
            total = 0.0
            for p in range(N):
                triple[0], triple[1], triple[2] = i, n, p
                kinds3[0], kinds3[1], kinds3[2] = _PRIME, _IDENTITY, _STUDENT if p < K else _TEACHER
                total += b[p] * _gauss_block(C, triple, kinds3, nodes, weights, student, teacher, stack)
            moments_nu[i, n] = s * a[i] * total
    for i in range(K):
        for k in range(i, K):
            total = 0.0
            for p in range(N):
                for q in range(p, N):
                    quad[0], quad[1], quad[2], quad[3] = i, k, p, q
                    kinds4[0], kinds4[1] = _PRIME, _PRIME
                    kinds4[2] = _STUDENT if p < K else _TEACHER
                    kinds4[3] = _STUDENT if q < K else _TEACHER
                    term = b[p] * b[q] * _gauss_block(C, quad, kinds4, nodes, weights, student, teacher, stack)
                    total += term if p == q else 2.0 * term
            if tau2 != 0.0:
                pair[0], pair[1] = i, k
                kinds2[0], kinds2[1] = _PRIME, _PRIME
                total += tau2 * _gauss_block(C, pair, kinds2, nodes, weights, student, teacher, stack)
            value = s * s * a[i] * a[k] * total
            moments_dd[i, k] = value
            moments_dd[k, i] = value


# ------------------------------------------------------------------------------------------------
# the piecewise-linear route: sigma = alpha z + beta relu(z), sigma' = alpha + beta H(z), any teacher
# ------------------------------------------------------------------------------------------------
# Conditioning on the one or two variables that carry a non-closed-form factor (phi_p, phi_q) leaves the
# step factors H(u_i) as Gaussian probabilities in closed form: P(U > 0) = Phi(m / s) and
# P(U > 0, V > 0) = Phi_2 (Genz's bivariate normal algorithm), E[H(U) V] = m_V Phi(m_U/s_U) +
# (c_UV / s_U) phi(m_U/s_U), E[relu(U)] = m Phi(m/s) + s phi(m/s). What remains is a 1-D (two- and
# three-variable moments) or 2-D (four-variable moments) integral of a function that is smooth apart from
# known kinks (the activations' breakpoints, the lines where a deterministic step flips; steep but smooth
# transitions where a conditional standard deviation is small are graded around their centres): composite
# Gauss–Legendre on panels split there converges geometrically, and two orders bound the error.

#: Gauss–Legendre nodes per panel of the piecewise route (value at the second, error from the difference)
PIECEWISE_ORDERS = (7, 10)
_PANELS = 8  # base panels on [-_HALF_WIDTH, _HALF_WIDTH] (standard normal coordinates)
_HALF_WIDTH = 8.5
_MAX_SPLITS = 256
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _half_legendre(n):
    x, w = np.polynomial.legendre.leggauss(n)
    keep = x > 0
    return np.ascontiguousarray(x[keep]), np.ascontiguousarray(w[keep])


_BVN_X6, _BVN_W6 = _half_legendre(6)
_BVN_X12, _BVN_W12 = _half_legendre(12)
_BVN_X20, _BVN_W20 = _half_legendre(20)


@njit(cache=True)
def _ncdf(x):
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@njit(cache=True)
def _npdf(x):
    return math.exp(-0.5 * x * x) / _SQRT_2PI


@njit(cache=True)
def bivariate_upper(h, k, r):
    """``P(X > h, Y > k)`` for standard normals with correlation r (Genz 2004, after Drezner & Wesolowsky
    1990: Gauss–Legendre on the arcsine form for |r| < 0.925, a series-corrected form beyond; ~1e-15)."""
    if r == 0.0:
        return _ncdf(-h) * _ncdf(-k)
    if abs(r) < 0.3:
        xs, ws = _BVN_X6, _BVN_W6
    elif abs(r) < 0.75:
        xs, ws = _BVN_X12, _BVN_W12
    else:
        xs, ws = _BVN_X20, _BVN_W20
    tp = 2.0 * math.pi
    hk = h * k
    bvn = 0.0
    if abs(r) < 0.925:
        hs = (h * h + k * k) / 2.0
        asr = math.asin(r) / 2.0
        for j in range(xs.shape[0]):
            for sign in (-1.0, 1.0):
                sn = math.sin(asr * (1.0 + sign * xs[j]))
                bvn += ws[j] * math.exp((sn * hk - hs) / (1.0 - sn * sn))
        bvn = bvn * asr / tp + _ncdf(-h) * _ncdf(-k)
    else:
        if r < 0.0:
            k = -k
            hk = -hk
        if abs(r) < 1.0:
            a_s = (1.0 - r) * (1.0 + r)
            a = math.sqrt(a_s)
            bs = (h - k) * (h - k)
            c = (4.0 - hk) / 8.0
            d = (12.0 - hk) / 80.0
            asr = -(bs / a_s + hk) / 2.0
            if asr > -100.0:
                bvn = a * math.exp(asr) * (1.0 - c * (bs - a_s) * (1.0 - d * bs) / 3.0 + c * d * a_s * a_s)
            if hk > -100.0:
                b = math.sqrt(bs)
                sp = math.sqrt(tp) * _ncdf(-b / a)
                bvn -= math.exp(-hk / 2.0) * sp * b * (1.0 - c * bs * (1.0 - d * bs) / 3.0)
            a = a / 2.0
            total = 0.0
            for j in range(xs.shape[0]):
                for sign in (-1.0, 1.0):
                    xx = a * (1.0 + sign * xs[j])
                    xx = xx * xx
                    asr = -(bs / xx + hk) / 2.0
                    if asr > -100.0:
                        sp = 1.0 + c * xx * (1.0 + 5.0 * d * xx)
                        rs = math.sqrt(1.0 - xx)
                        ep = math.exp(-(hk / 2.0) * xx / ((1.0 + rs) * (1.0 + rs))) / rs
                        total += ws[j] * math.exp(asr) * (sp - ep)
            bvn = (a * total - bvn) / tp
        if r > 0.0:
            bvn += _ncdf(-max(h, k))
        elif h >= k:
            bvn = -bvn
        else:
            if h < 0.0:
                span = _ncdf(k) - _ncdf(h)
            else:
                span = _ncdf(-h) - _ncdf(-k)
            bvn = span - bvn
    return min(1.0, max(0.0, bvn))


@njit(cache=True)
def _add_split(splits, count, point):
    if count < splits.shape[0] and abs(point) < _HALF_WIDTH:
        splits[count] = point
        count += 1
    return count


@njit(cache=True)
def _add_graded(splits, count, centre, width):
    """The centre of a transition of the given width (in standard coordinates), and, for a steep one,
    edges at centre ± width 4^j up to the panel scale."""
    count = _add_split(splits, count, centre)
    if width < 0.5:
        g = max(width, 1e-12)
        while g < 1.0:
            count = _add_split(splits, count, centre - g)
            count = _add_split(splits, count, centre + g)
            g *= 4.0
    return count


@njit(cache=True)
def _composite(splits, count, gl_x, gl_w, nodes, weights):
    """Composite Gauss–Legendre on [-W, W] split at the base panels and ``splits[:count]``, the standard
    normal density folded into the weights; returns the number of nodes."""
    edges = np.empty(_PANELS + 1 + count)
    for j in range(_PANELS + 1):
        edges[j] = -_HALF_WIDTH + 2.0 * _HALF_WIDTH * j / _PANELS
    for j in range(count):
        edges[_PANELS + 1 + j] = splits[j]
    edges.sort()
    n = 0
    for j in range(edges.shape[0] - 1):
        lo, hi = edges[j], edges[j + 1]
        if hi - lo <= 1e-14:
            continue
        half, mid = 0.5 * (hi - lo), 0.5 * (hi + lo)
        for l in range(gl_x.shape[0]):
            z = mid + half * gl_x[l]
            nodes[n] = z
            weights[n] = half * gl_w[l] * _npdf(z)
            n += 1
    return n


@njit(cache=True)
def _outer_value(kind, u, student, teacher, stack):
    if kind == _IDENTITY:
        return u
    if kind == _STUDENT:
        return activation_value(student[0], student[1], student[2], student[3], stack, u)
    return activation_value(teacher[0], teacher[1], teacher[2], teacher[3], stack, u)


@njit(cache=True)
def _step_probability(m, sd, h0):
    """P(U > 0) for U ~ N(m, sd^2); a deterministic U (sd = 0) gives H(m), with H(0) = h0."""
    if sd > 0.0:
        return _ncdf(m / sd)
    if m > 0.0:
        return 1.0
    if m < 0.0:
        return 0.0
    return h0


@njit(cache=True)
def _add_kinks(splits, count, breaks, scale, shift):
    """Kinks of f(scale z + shift) in z: (k - shift) / scale."""
    if scale != 0.0:
        for j in range(breaks.shape[0]):
            count = _add_split(splits, count, (breaks[j] - shift) / scale)
    return count


@njit(cache=True)
def _piecewise_moments(C, b, a, K, N, s, tau2, alpha, beta, h0, student_breaks, teacher_breaks, gl_x, gl_w, student, teacher, moments_nu, moments_dd, moments_se):
    stack = np.empty(STACK_SIZE)
    capacity = (_PANELS + _MAX_SPLITS) * gl_x.shape[0]
    nodes1, weights1 = np.empty(capacity), np.empty(capacity)
    nodes2, weights2 = np.empty(capacity), np.empty(capacity)
    splits = np.empty(_MAX_SPLITS)
    splits2 = np.empty(_MAX_SPLITS)
    for i in range(K):
        moments_se[i] = 0.0
        for n in range(N):
            moments_nu[i, n] = 0.0
    # two and three variables: condition on u_p (1-D), everything else in closed form
    mean_i, sd_i = np.empty(K), np.empty(K)
    for p in range(N):
        kind = _STUDENT if p < K else _TEACHER
        breaks = student_breaks if p < K else teacher_breaks
        cpp = C[p, p]
        L = math.sqrt(max(cpp, 0.0))
        count = 0
        for i in range(K):
            slope = C[i, p] / L if L > 0.0 else 0.0
            var = C[i, i] - slope * slope
            sd_i[i] = math.sqrt(var) if var > 1e-12 * C[i, i] else 0.0
            if slope != 0.0:
                count = _add_graded(splits, count, 0.0, sd_i[i] / abs(slope))
        if L > 0.0:
            count = _add_kinks(splits, count, breaks, L, 0.0)
            m1 = _composite(splits, count, gl_x, gl_w, nodes1, weights1)
        else:
            nodes1[0], weights1[0], m1 = 0.0, 1.0, 1
        for node in range(m1):
            z = nodes1[node]
            up = L * z
            f = b[p] * weights1[node] * _outer_value(kind, up, student, teacher, stack)
            if f == 0.0:
                continue
            for i in range(K):
                slope = C[i, p] / L if L > 0.0 else 0.0
                mi = slope * z
                sd = sd_i[i]
                ratio = mi / sd if sd > 0.0 else 0.0
                prob = _step_probability(mi, sd, h0)
                density = _npdf(ratio) if sd > 0.0 else 0.0
                relu_mean = mi * prob + sd * density
                moments_se[i] += f * (alpha * mi + beta * relu_mean)
                for n in range(N):
                    slope_n = C[n, p] / L if L > 0.0 else 0.0
                    mn = slope_n * z
                    cin = C[i, n] - slope * slope_n
                    moments_nu[i, n] += f * (alpha * mn + beta * (mn * prob + (cin / sd * density if sd > 0.0 else 0.0)))
    for i in range(K):
        for n in range(N):
            moments_nu[i, n] *= s * a[i]
    # four variables: condition on (u_p, u_q), the two step factors by Phi and Phi_2
    acc = np.zeros((K, K))
    c1, c2, sd = np.empty(K), np.empty(K), np.empty(K)
    prob = np.empty(K)
    corr = np.empty((K, K))
    for p0 in range(N):
        for q0 in range(p0, N):
            p, q = (p0, q0) if C[p0, p0] >= C[q0, q0] else (q0, p0)
            kind_p = _STUDENT if p < K else _TEACHER
            kind_q = _STUDENT if q < K else _TEACHER
            breaks_p = student_breaks if p < K else teacher_breaks
            breaks_q = student_breaks if q < K else teacher_breaks
            L11 = math.sqrt(max(C[p, p], 0.0))
            L21 = C[p, q] / L11 if L11 > 0.0 else 0.0
            var22 = C[q, q] - L21 * L21
            two = p != q and var22 > 1e-12 * C[q, q]
            L22 = math.sqrt(var22) if two else 0.0
            for i in range(K):
                c1[i] = C[i, p] / L11 if L11 > 0.0 else 0.0
                c2[i] = (C[i, q] - L21 * c1[i]) / L22 if two else 0.0
                var = C[i, i] - c1[i] * c1[i] - c2[i] * c2[i]
                sd[i] = math.sqrt(var) if var > 1e-12 * C[i, i] else 0.0
            for i in range(K):
                for k in range(i + 1, K):
                    if sd[i] > 0.0 and sd[k] > 0.0:
                        corr[i, k] = max(-1.0, min(1.0, (C[i, k] - c1[i] * c1[k] - c2[i] * c2[k]) / (sd[i] * sd[k])))
            count = 0
            if L11 > 0.0:
                count = _add_kinks(splits, count, breaks_p, L11, 0.0)
                if not two:
                    count = _add_kinks(splits, count, breaks_q, L21, 0.0)
                elif L21 != 0.0:  # u_q's kinks cross z1 = k / L21 within a band of width ~L22 / |L21|
                    for j in range(breaks_q.shape[0]):
                        count = _add_graded(splits, count, breaks_q[j] / L21, L22 / abs(L21))
                for i in range(K):
                    if c1[i] != 0.0:
                        count = _add_graded(splits, count, 0.0, (sd[i] + abs(c2[i])) / abs(c1[i]))
                m1 = _composite(splits, count, gl_x, gl_w, nodes1, weights1)
            else:
                nodes1[0], weights1[0], m1 = 0.0, 1.0, 1
            factor = b[p] * b[q] * (1.0 if p == q else 2.0)
            for node in range(m1):
                z1 = nodes1[node]
                fp = _outer_value(kind_p, L11 * z1, student, teacher, stack)
                if fp == 0.0 or weights1[node] < 1e-300:
                    continue
                if two:
                    count2 = _add_kinks(splits2, 0, breaks_q, L22, L21 * z1)
                    for i in range(K):
                        if c2[i] != 0.0:
                            count2 = _add_graded(splits2, count2, -c1[i] * z1 / c2[i], sd[i] / abs(c2[i]))
                    m2 = _composite(splits2, count2, gl_x, gl_w, nodes2, weights2)
                else:
                    nodes2[0], weights2[0], m2 = 0.0, 1.0, 1
                for node2 in range(m2):
                    z2 = nodes2[node2]
                    f = factor * weights1[node] * weights2[node2] * fp * _outer_value(kind_q, L21 * z1 + L22 * z2, student, teacher, stack)
                    if f == 0.0:
                        continue
                    for i in range(K):
                        prob[i] = _step_probability(c1[i] * z1 + c2[i] * z2, sd[i], h0)
                    for i in range(K):
                        acc[i, i] += f * (alpha * alpha + (2.0 * alpha * beta + beta * beta) * prob[i])
                        for k in range(i + 1, K):
                            if sd[i] > 0.0 and sd[k] > 0.0:
                                both = bivariate_upper(-(c1[i] * z1 + c2[i] * z2) / sd[i], -(c1[k] * z1 + c2[k] * z2) / sd[k], corr[i, k])
                            else:
                                both = prob[i] * prob[k]  # one of them is deterministic given the outer pair
                            acc[i, k] += f * (alpha * alpha + alpha * beta * (prob[i] + prob[k]) + beta * beta * both)
    for i in range(K):
        for k in range(i, K):
            value = acc[i, k]
            if tau2 != 0.0:
                pi = _step_probability(0.0, math.sqrt(max(C[i, i], 0.0)), h0)
                if i == k:
                    value += tau2 * (alpha * alpha + (2.0 * alpha * beta + beta * beta) * pi)
                else:
                    pk = _step_probability(0.0, math.sqrt(max(C[k, k], 0.0)), h0)
                    if C[i, i] > 0.0 and C[k, k] > 0.0:
                        both = bivariate_upper(0.0, 0.0, max(-1.0, min(1.0, C[i, k] / math.sqrt(C[i, i] * C[k, k]))))
                    else:
                        both = pi * pk
                    value += tau2 * (alpha * alpha + alpha * beta * (pi + pk) + beta * beta * both)
            value *= s * s * a[i] * a[k]
            moments_dd[i, k] = value
            moments_dd[k, i] = value


@njit(cache=True)
def moments(parameters, Q, R, a, moments_nu, moments_dd, moments_se):
    """Fill ``moments_nu[i, n] = E[Delta_i u_n]`` (u = (lambda, nu), K × (K + M)), ``moments_dd[i, k] =
    E[Delta_i Delta_k]`` and ``moments_se[i] = E[sigma(lambda_i)(y - f)]`` (loss 1/2, without the factor s)
    from the packed parameters (:func:`pack_parameters`)."""
    K, M, route, order = int(parameters[0]), int(parameters[1]), int(parameters[2]), int(parameters[3])
    tau2, s, s_star = parameters[7], parameters[8], parameters[9]
    N = K + M
    at = HEADER
    a_star = parameters[at: at + M]
    at += M
    C = np.empty((N, N))
    for i in range(K):
        for k in range(K):
            C[i, k] = Q[i, k]
        for n in range(M):
            C[i, K + n] = R[i, n]
            C[K + n, i] = R[i, n]
    for n in range(M):
        for m in range(M):
            C[K + n, K + m] = parameters[at + n * M + m]
    at += M * M
    b = np.empty(N)
    for i in range(K):
        b[i] = -s * a[i]
    for n in range(M):
        b[K + n] = s_star * a_star[n]
    amplitude = parameters[at: at + N]
    kappa = parameters[at + N: at + 2 * N]
    at += 2 * N
    if route == ROUTE_ERF:
        _erf_moments(C, amplitude, kappa, b, a, K, N, s, tau2, moments_nu, moments_dd, moments_se)
        return
    nodes = parameters[at: at + order]
    weights = parameters[at + order: at + 2 * order]
    student = _unpack_program(parameters, int(parameters[13]))
    teacher = _unpack_program(parameters, int(parameters[14]))
    if route == ROUTE_PIECEWISE:
        at = int(parameters[16])
        alpha, beta, h0 = parameters[at], parameters[at + 1], parameters[at + 2]
        n = int(parameters[at + 3])
        student_breaks = parameters[at + 4: at + 4 + n]
        at += 4 + n
        n = int(parameters[at])
        teacher_breaks = parameters[at + 1: at + 1 + n]
        _piecewise_moments(C, b, a, K, N, s, tau2, alpha, beta, h0, student_breaks, teacher_breaks, nodes, weights, student, teacher, moments_nu, moments_dd, moments_se)
        return
    _numeric_moments(C, b, a, K, N, s, tau2, nodes, weights, student, teacher, moments_nu, moments_dd, moments_se)


@dataclass(frozen=True)
class ODEExpectations:
    """The Gaussian expectations of the ODE (loss 1/2; the ``popgrad`` convention multiplies the Deltas by c = 2).

    Attributes
    ----------
    delta_lambda : ndarray (..., K, K)
        ``E[Delta_i lambda_k]``.
    delta_nu : ndarray (..., K, M)
        ``E[Delta_i nu_n]``.
    delta_delta : ndarray (..., K, K)
        ``E[Delta_i Delta_k]`` including ``tau^2 s^2 a_i a_k E[sigma'(lambda_i) sigma'(lambda_k)]``.
    sigma_residual : ndarray (..., K)
        ``E[sigma(lambda_i)(y - f)]``.
    error : dict
        The same keys, their error estimates (rounding level for the closed and exact routes; the
        difference between two Gauss–Hermite orders for the numeric route).
    route : str
    """

    delta_lambda: np.ndarray
    delta_nu: np.ndarray
    delta_delta: np.ndarray
    sigma_residual: np.ndarray
    error: dict
    route: str


def _moments_at(parameters, Q, R, a, K, M) -> tuple:
    batch = Q.shape[:-2]
    nu = np.empty(batch + (K, K + M))
    dd = np.empty(batch + (K, K))
    se = np.empty(batch + (K,))
    for index in np.ndindex(*batch):
        moments(parameters, np.ascontiguousarray(Q[index]), np.ascontiguousarray(R[index]), np.ascontiguousarray(a[index]), nu[index], dd[index], se[index])
    return nu, dd, se


def ode_expectations(model, Q, R, a, orders: tuple | None = None) -> ODEExpectations:
    """``E[Delta_i lambda_k]``, ``E[Delta_i nu_n]``, ``E[Delta_i Delta_k]`` and ``E[sigma(lambda_i)(y - f)]`` at
    (Q, R, a), over leading batch axes, with ``Delta_i = s a_i sigma'(lambda_i)(y - f)``.

    Parameters
    ----------
    model : CommitteeModel or Committee
    Q, R, a : array_like (..., K, K), (..., K, M), (..., K)
    orders : (int, int), optional
        Gauss–Hermite orders of the numeric route (value at the second, error from the difference).

    Returns
    -------
    ODEExpectations

    Examples
    --------
    >>> import numpy as np
    >>> from popgrad import activation
    >>> m = Committee(activation("linear"), activation("linear"), np.ones(1), np.eye(1))
    >>> e = ode_expectations(m, [[1.0]], [[0.5]], [1.0])   # Delta = nu - lambda
    >>> [round(float(x), 12) for x in (e.delta_nu[0, 0], e.delta_lambda[0, 0], e.delta_delta[0, 0])]  # 1 - R, R - Q, T - 2R + Q
    [0.5, -0.5, 1.0]
    """
    committee = committee_arrays(model)
    Q, R, a, K, M = _state(committee, Q, R, a)
    route = expectation_route(committee)
    if route == "erf":
        orders = (None,)
    elif orders is None:
        orders = default_orders(committee)
    results = [_moments_at(pack_parameters(committee, K, order), Q, R, a, K, M) for order in orders]
    nu, dd, se = results[-1]
    if len(results) == 2:
        factor = numeric_error_factor(committee, orders)
        errors = [factor * np.abs(x - y) + 1e-14 * np.abs(x) for x, y in zip(results[1], results[0])]
    else:
        errors = [1e-13 * (np.abs(x) + 1e-300) for x in results[0]]
    error = {"delta_lambda": errors[0][..., :K], "delta_nu": errors[0][..., K:], "delta_delta": errors[1], "sigma_residual": errors[2]}
    return ODEExpectations(nu[..., :K], nu[..., K:], dd, se, error, route)


def population_flow(model, Q, R, a) -> tuple:
    """The O(delta) part of the ODE per unit delta (and per unit delta_a): the population gradient flow.

    ``dQ_ik = c (E[Delta_i lambda_k] + E[Delta_k lambda_i])``, ``dR_in = c E[Delta_i nu_n]``,
    ``da_i = c s E[sigma(lambda_i)(y - f)]`` with c the loss factor; then ``dR = -dEps/dV`` mapped to the
    overlaps (``-(2 G R + H T)`` with G, H the derivatives of eps_g in Q and R) and ``da = -d eps_g / da``.

    Parameters
    ----------
    model : CommitteeModel or Committee
    Q, R, a : array_like

    Returns
    -------
    tuple of ndarray
        (dQ, dR, da).
    """
    committee = committee_arrays(model)
    e = ode_expectations(committee, Q, R, a)
    c = committee.loss_factor
    dq = c * (e.delta_lambda + np.swapaxes(e.delta_lambda, -1, -2))
    return dq, c * e.delta_nu, c * committee.student_scale * e.sigma_residual
