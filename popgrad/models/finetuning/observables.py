"""The fine-tuning model's observables (MATH.md §4b): the one definition shared by runs, predictions and
reports, on the state (Y, Gamma, C_hat) in the coordinates of F = span(W) + span(U), or on the overlap m
alone where the model reduces to it; and the population loss Phi at a state in closed form, with its
Monte Carlo check.
"""

from __future__ import annotations

import math

import numpy as np

from ..._validation import InvalidArgument
from .model import GeneralModel

__all__ = ["OBSERVABLES", "LABELS", "state_observables", "overlap_observables", "closed_form_loss", "state_population_loss", "state_population_losses", "state_loss_monte_carlo", "neuron_vectors"]

#: the observables recorded per checkpoint (``population_loss`` only where Phi has a closed form here)
OBSERVABLES = ("m", "c_hat_dot_c", "c_hat_cosine", "projection_w", "population_loss")
#: observable -> (label, units)
LABELS = {"m": ("overlap m = <u, u_hat> (rank r: least singular value of U^T U_hat)", "1"), "c_hat_dot_c": ("<c_hat, c>", "1"), "c_hat_cosine": ("cos(c_hat, c)", "1"), "projection_w": ("|P_W u_hat|", "1"), "population_loss": ("population loss Phi", "squared output units")}


def state_observables(model: GeneralModel, Y: np.ndarray, Gamma: np.ndarray, C_hat: np.ndarray) -> dict:
    """The named observables of states (any leading axes), the one definition shared by simulations and
    predictions.

    ``m``: <u, u_hat> at rank 1, else the smallest singular value of U^T U_hat (and then every singular
    value, descending, as ``singular_value_1``, ...); ``c_hat_dot_c``: <C_hat, C>
    (Frobenius, C_hat's first r* columns) and ``c_hat_cosine`` its cosine; ``projection_w``: |Π_W U_hat|;
    ``population_loss``: Phi at the state in closed form, where :func:`closed_form_loss` says it is available
    (absent otherwise: the linearised student, or the raw or common convention with a series-only
    activation).

    Parameters
    ----------
    model : GeneralModel
    Y, Gamma, C_hat : ndarray (..., p, r), (..., r, r), (..., k, r)
        The states (any leading axes).

    Returns
    -------
    dict of str to ndarray (the leading axes)
    """
    overlap = np.einsum("sq,...qr->...sr", model.UF, Y)
    singular = None if overlap.shape[-2:] == (1, 1) else np.linalg.svd(overlap, compute_uv=False)
    m = overlap[..., 0, 0] if singular is None else singular[..., -1]
    C = model.C
    head = C_hat[..., : C.shape[1]]
    dot = np.einsum("...ir,ir->...", head, C)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = dot / (np.linalg.norm(head, axis=(-2, -1)) * np.linalg.norm(C))
    rank_w = model.L.shape[1]
    out = {"m": m, "c_hat_dot_c": dot, "c_hat_cosine": cosine, "projection_w": np.sqrt(np.sum(Y[..., :rank_w, :] ** 2, axis=(-2, -1)))}
    if singular is not None:  # rank r or r* > 1: every singular value of U^T U_hat (m is the smallest)
        out |= {f"singular_value_{i + 1}": singular[..., i] for i in range(singular.shape[-1])}
    if closed_form_loss(model):
        out["population_loss"] = state_population_losses(model, Y, Gamma, C_hat)
    return out


def overlap_observables(model: GeneralModel, m: np.ndarray) -> dict:
    """The observables of a model that reduces to the overlap, from m alone (any shape): c_hat stays at
    C_hat_0 and u_hat in span(W)^perp, so <c_hat, c> and its cosine are constants, |P_W u_hat| = 0, and
    Phi = Phi(m) of the reduced problem.

    Parameters
    ----------
    model : GeneralModel
        A model with ``reduces_to_overlap``.
    m : ndarray

    Returns
    -------
    dict of str to ndarray (m's shape)
    """
    from .population import population_loss

    m = np.asarray(m, dtype=float)
    dot = float(np.sum(model.C_hat[:, 0] * model.C[:, 0]))
    cosine = dot / float(np.linalg.norm(model.C_hat[:, 0]) * np.linalg.norm(model.C[:, 0]))
    loss = population_loss(model.reduced_problem(), np.clip(m, -1.0, 1.0))
    return {"m": m, "c_hat_dot_c": np.full(m.shape, dot), "c_hat_cosine": np.full(m.shape, cosine), "projection_w": np.zeros(m.shape), "population_loss": np.asarray(loss, dtype=float).reshape(m.shape)}


def closed_form_loss(model: GeneralModel) -> bool:
    """Whether :func:`state_population_losses` serves ``model``: in the raw and common conventions (neurons
    at their own scales) it needs an activation whose two-scale kernel has a closed form, and for the linearised student
    also u_hat constrained to span(W)^perp (else sigma'' terms at two scales would enter).

    Parameters
    ----------
    model : GeneralModel

    Returns
    -------
    bool
    """
    from ...gaussian.families.base import KERNEL_SERIES

    if model.problem.convention == "normalized":
        return True
    return model.problem.activation.family_spec.kernel_code != KERNEL_SERIES and (model.student == "exact" or not model.unconstrained)


def state_population_losses(model: GeneralModel, Y: np.ndarray, Gamma: np.ndarray, C_hat: np.ndarray) -> np.ndarray:
    """Phi at many states at once (leading axes any), in closed form; the exact and the linearised student.

    Every Gaussian expectation needs only the covariances of the neurons' pre-activations, computed from
    explicit vectors on F ⊕ range(R) (U_hat = [Y; R], R^T R = Gamma). Exact student: the teacher's and the
    student's neurons enter through the (two-scale) kernel K. Linearised student
    ``f_lin = s_out sum_j lam_j [sigma(a_j) + sigma'(a_j) t_j]`` (a_j the base neuron, t_j = xi <v_j, x>
    the adapter's tilt, uncorrelated with a_j): by Stein's lemma

        E[sigma(b_i) sigma'(a_j) t_j] = c(t_j, b_i) K'(b_i, a_j),
        E[sigma(a_i) sigma'(a_j) t_j] = c(t_j, a_i) K'(a_i, a_j),
        E[sigma'(a_i) t_i sigma'(a_j) t_j] = c(t_i, t_j) K'(a_i, a_j) + c(t_i, a_j) c(t_j, a_i) K''(a_i, a_j),

    with K' the kernel of sigma' and K'' = dK'/drho that of sigma'' (Price's theorem; a central difference
    of K' here, needed only where u_hat leaves span(W)^perp).

    Parameters
    ----------
    model : GeneralModel
        :func:`closed_form_loss` must hold.
    Y, Gamma, C_hat : ndarray (..., p, r), (..., r, r), (..., k, r)
        The states (any leading axes).

    Returns
    -------
    ndarray (the leading axes)
    """
    from ...gaussian.kernels import dual_kernel, kernel_spec, scaled_closed_kernel

    problem = model.problem
    if not closed_form_loss(model):
        raise InvalidArgument("Phi in closed form needs, in the raw and common conventions, an activation with a closed-form kernel (relu, leaky_relu, abs, step, erf), and for the linearized student also u_hat constrained to span(W)^perp; estimate it with state_loss_monte_carlo", "model")
    Y, Gamma, C_hat = (np.asarray(a, dtype=float) for a in (Y, Gamma, C_hat))
    lead = Y.shape[:-2]
    k, p, r, xi = problem.k, model.p, model.rank, problem.xi
    n = p + r
    normalized = problem.convention == "normalized"
    rho = problem.neuron_prefactor  # common: every neuron rho (w_i + xi ...); 1 otherwise
    values, vectors = np.linalg.eigh(0.5 * (Gamma + np.swapaxes(Gamma, -1, -2)))
    R = np.einsum("...lk,...k,...mk->...lm", vectors, np.sqrt(np.clip(values, 0.0, None)), vectors)
    U_hat = np.concatenate([Y, R], axis=-2)  # (..., n, r)
    base = np.zeros((k, n))
    base[:, : model.L.shape[1]] = model.L
    U = np.zeros((n, model.C.shape[1]))
    U[:p] = model.UF.T
    if problem.convention == "common":
        base, xi = rho * base, rho * xi
    teacher = np.broadcast_to(base + xi * model.C @ U.T, lead + (k, n))
    adapters = xi * np.einsum("...qr,...ir->...iq", U_hat, C_hat)  # xi U_hat c_hat_i (common: rho xi ...)
    lam = np.asarray(problem.lam, dtype=float)

    def kernel(A, B, derivative=False):
        """E[s(<A_i, x>) s(<B_j, x>)] for the rows' directions (normalized) or the rows themselves (raw,
        common)."""
        norms_a, norms_b = np.linalg.norm(A, axis=-1), np.linalg.norm(B, axis=-1)
        cosines = np.clip(np.einsum("...iq,...jq->...ij", A, B) / (norms_a[..., :, None] * norms_b[..., None, :]), -1.0, 1.0)
        if normalized:
            return dual_kernel(problem.activation, cosines, derivative=derivative)
        spec = kernel_spec(problem.activation, [1.0])
        s1, s2 = (np.ascontiguousarray(np.broadcast_to(s, cosines.shape)).ravel() for s in (norms_a[..., :, None], norms_b[..., None, :]))
        return scaled_closed_kernel(spec.code, spec.parameter, s1, s2, cosines.ravel(), derivative).reshape(cosines.shape)

    if model.student == "exact":
        rows = np.concatenate([teacher, base + adapters], axis=-2)
        weights = np.concatenate([lam, -lam])
        return model.s_out**2 * np.einsum("i,...ij,j->...", weights, kernel(rows, rows), weights)
    # the linearised student: a_j = <w_j, x> / |w_j| (normalized), <w_j, x> (raw) or rho <w_j, x>; t_j = <tilt_j, x>
    w_norms = np.linalg.norm(base, axis=1)
    if normalized:
        unit = base / w_norms[:, None]
        tilts = (adapters - np.einsum("...iq,iq->...i", adapters, unit)[..., None] * unit) / w_norms[:, None]
        teacher_unit = teacher / np.linalg.norm(teacher, axis=-1, keepdims=True)
        pre, teacher_pre = np.broadcast_to(unit, lead + unit.shape), teacher_unit
    else:
        tilts, pre, teacher_pre = adapters, np.broadcast_to(base, lead + base.shape), teacher

    def covariance(A, B):
        return np.einsum("...iq,...jq->...ij", A, B)

    K_tt, K_ta, K_aa = kernel(teacher_pre, teacher_pre), kernel(teacher_pre, pre), kernel(pre, pre)
    Kp_ta, Kp_aa = kernel(teacher_pre, pre, True), kernel(pre, pre, True)
    c_tb = covariance(teacher_pre, tilts)  # [i, j] = c(t_j, b_i)
    c_ta = covariance(pre, tilts)  # [i, j] = c(t_j, a_i)
    second = covariance(tilts, tilts) * Kp_aa
    if np.any(np.abs(c_ta) > 1e-14 * max(1.0, float(np.max(np.abs(tilts))))):
        # K'' by a central difference of K' in the correlation (normalized convention)
        cosines = np.clip(covariance(pre, pre), -1.0 + 2e-4, 1.0 - 2e-4)
        h = 1e-5
        curvature = (dual_kernel(problem.activation, cosines + h, derivative=True) - dual_kernel(problem.activation, cosines - h, derivative=True)) / (2 * h)
        second = second + np.swapaxes(c_ta, -1, -2) * c_ta * curvature
    cross = K_ta + c_tb * Kp_ta  # E[sigma(b_i) (sigma(a_j) + sigma'(a_j) t_j)]
    student = K_aa + 2.0 * c_ta * Kp_aa + second
    total = np.einsum("i,...ij,j->...", lam, K_tt - 2.0 * cross, lam) + np.einsum("i,...ij,j->...", lam, student, lam)
    return model.s_out**2 * total


def neuron_vectors(model: GeneralModel, Y: np.ndarray, Gamma: np.ndarray, C_hat: np.ndarray) -> tuple:
    """The teacher's and the student's neuron vectors ``(A, B)`` (k x (p + r) each) in coordinates of
    F ⊕ range(R) (in the common convention times its prefactor rho, as the network sees them): ``U_hat = [Y; R]`` with ``R^T R = Gamma`` (R the symmetric square root), ``W = [L, 0; 0]``,
    ``U = [UF^T; 0]``. Every inner product of the model's neurons, hence every Gaussian expectation of the
    network, is the same as in R^d.

    Parameters
    ----------
    model : GeneralModel
    Y, Gamma, C_hat : ndarray (p, r), (r, r), (k, r)
        The state.

    Returns
    -------
    tuple of ndarray
        ``(teacher, student)``, each k x (p + r).
    """
    p, r, rank_w = model.p, model.rank, model.L.shape[1]
    values, vectors = np.linalg.eigh(0.5 * (Gamma + Gamma.T))
    R = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T  # symmetric square root: R^T R = Gamma
    U_hat = np.vstack([Y, R])
    W = np.zeros((model.problem.k, p + r))
    W[:, :rank_w] = model.L
    U = np.zeros((p + r, model.C.shape[1]))
    U[:p] = model.UF.T
    xi = model.problem.xi
    if model.problem.convention == "common":
        rho = model.problem.neuron_prefactor
        return rho * (W + xi * model.C @ U.T), rho * (W + xi * C_hat @ U_hat.T)
    return W + xi * model.C @ U.T, W + xi * C_hat @ U_hat.T


def state_population_loss(model: GeneralModel, Y: np.ndarray, Gamma: np.ndarray, C_hat: np.ndarray) -> float:
    """``Phi = E[(f*(x) - f_hat(x))^2]`` at the state (Y, Gamma, C_hat), in closed form through the two-scale
    kernels: for the exact student ``s_out^2 sum_ij lam_i lam_j [K(a_i, a_j) - 2 K(a_i, b_j) + K(b_i, b_j)]``
    with ``K(a, b) = E[sigma(<a, x>/n_a) sigma(<b, x>/n_b)]`` (n the norms in the normalized convention, 1 in
    raw and common, whose vectors carry rho); for the linearised student see :func:`state_population_losses`.

    Parameters
    ----------
    model : GeneralModel
    Y, Gamma, C_hat : ndarray (p, r), (r, r), (k, r)
        The state.

    Returns
    -------
    float
    """
    from ...gaussian.kernels import dual_kernel

    problem = model.problem
    if model.student == "linearized":
        return float(state_population_losses(model, Y, Gamma, C_hat))
    teacher, student = neuron_vectors(model, Y, Gamma, C_hat)
    vectors = np.vstack([teacher, student])
    norms = np.linalg.norm(vectors, axis=1)
    cosines = np.clip((vectors @ vectors.T) / np.outer(norms, norms), -1.0, 1.0)
    lam = np.asarray(problem.lam, dtype=float)
    weights = np.concatenate([lam, -lam])
    if problem.convention == "normalized":
        kernel = dual_kernel(problem.activation, cosines)
    else:
        kernel = np.empty_like(cosines)
        for i in range(len(norms)):
            for j in range(len(norms)):
                kernel[i, j] = dual_kernel(problem.activation, cosines[i, j], norms[i], norms[j])
    return float(model.s_out**2 * weights @ kernel @ weights)


def state_loss_monte_carlo(model: GeneralModel, Y: np.ndarray, Gamma: np.ndarray, C_hat: np.ndarray, samples: int = 1_000_000, seed: int = 0) -> tuple:
    """Monte Carlo ``(mean, standard error)`` of ``(f*(x) - f_hat(x))^2`` at the state, with explicit
    networks evaluated on Gaussian inputs in the coordinates of :func:`neuron_vectors` (numpy generator
    ``seed``); the independent check of :func:`state_population_loss`.

    Parameters
    ----------
    model : GeneralModel
    Y, Gamma, C_hat : ndarray (p, r), (r, r), (k, r)
        The state.
    samples : int, default 1 000 000
    seed : int, default 0

    Returns
    -------
    tuple of float
        ``(mean, standard_error)``.
    """
    problem = model.problem
    teacher, student = neuron_vectors(model, Y, Gamma, C_hat)
    base = teacher - problem.neuron_prefactor * problem.xi * model.C @ np.vstack([model.UF.T, np.zeros((model.rank, model.C.shape[1]))]).T  # the rows w_i (common: rho w_i)
    adapters = student - base  # xi U_hat c_hat_i (common: rho xi U_hat c_hat_i)
    if problem.convention == "normalized":
        teacher = teacher / np.linalg.norm(teacher, axis=1, keepdims=True)
        student = student / np.linalg.norm(student, axis=1, keepdims=True)
        norms = np.linalg.norm(base, axis=1, keepdims=True)
        unit = base / norms
        tilted = (adapters - np.sum(adapters * unit, axis=1, keepdims=True) * unit) / norms
    else:
        unit, tilted = base, adapters
    lam = np.asarray(problem.lam, dtype=float)
    generator = np.random.default_rng(seed)
    total = squares = 0.0
    done = 0
    while done < samples:
        batch = min(100_000, samples - done)
        x = generator.standard_normal((batch, teacher.shape[1]))
        if model.student == "linearized":
            pre = x @ unit.T
            output = problem.activation(pre) + problem.activation.prime(pre) * (x @ tilted.T)
        else:
            output = problem.activation(x @ student.T)
        loss = (model.s_out * (problem.activation(x @ teacher.T) - output) @ lam) ** 2
        total += loss.sum()
        squares += (loss**2).sum()
        done += batch
    mean = total / samples
    return float(mean), float(math.sqrt(max(squares / samples - mean**2, 0.0) / (samples - 1)))
