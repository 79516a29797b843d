"""The committee machine's observables per trajectory and checkpoint, from the recorded overlaps.

``eps_g`` (the generalisation error in the model's convention, closed form:
:func:`.population.generalisation_error`), ``Q`` (K x K), ``R`` (K x M), ``a`` (K), ``cosine_min`` (the
signed cosine of the student neuron worst aligned with its best teacher neuron:
``sign(R_in) sqrt(min_i max_n R_in^2 / (Q_ii T_nn))``, the overlap m for K = M = 1; its square is what
hitting times compare with 1 - hit) and, for K = M, ``R_aligned`` (R's entries ``R[sigma(n), n]`` for the
permutation sigma of the student neurons maximising ``sum_n |R[sigma(n), n]|``) with its ``R_aligned_min``
and ``R_aligned_mean``: a specialised student has them near the teacher's, an unspecialised one does not.
A fine-tuning student (V = W0 + B Theta) reports the same on V's overlaps, and ``B`` (K x r) where its
coefficients are trained.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LABELS", "committee_observables", "aligned_overlaps", "worst_cosine"]

#: observable -> (label, units)
LABELS = {
    "eps_g": ("generalisation error eps_g", "1"),
    "Q": ("student-student overlaps Q = V V^T", "1"),
    "R": ("student-teacher overlaps R = V W*^T", "1"),
    "a": ("student second layer a", "1"),
    "cosine_min": ("signed cosine of the worst-aligned student neuron with its best teacher neuron", "1"),
    "R_aligned": ("R[sigma(n), n] after the best assignment sigma of student neurons (K = M)", "1"),
    "R_aligned_min": ("smallest aligned student-teacher overlap (K = M)", "1"),
    "R_aligned_mean": ("mean aligned student-teacher overlap (K = M)", "1"),
    "B": ("coefficients B of V = W0 + B Theta (trained)", "1"),
}


def aligned_overlaps(R: np.ndarray) -> np.ndarray:
    """``R[..., sigma(n), n]`` (..., M) for square R (..., K, K): sigma the assignment of student neurons to
    teacher neurons maximising the trace of |R| (scipy's linear_sum_assignment per matrix).

    Parameters
    ----------
    R : ndarray (..., K, K)

    Returns
    -------
    ndarray (..., K)

    Examples
    --------
    >>> aligned_overlaps(np.array([[0.1, 0.9], [-0.8, 0.2]])).tolist()
    [-0.8, 0.9]
    """
    from scipy.optimize import linear_sum_assignment

    R = np.asarray(R, dtype=float)
    flat = R.reshape(-1, R.shape[-2], R.shape[-1])
    out = np.empty((flat.shape[0], R.shape[-1]))
    for item, matrix in enumerate(flat):
        rows, columns = linear_sum_assignment(np.abs(matrix), maximize=True)
        out[item, columns] = matrix[rows, columns]
    return out.reshape(R.shape[:-2] + (R.shape[-1],))


def worst_cosine(Q: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``sign(R_in) sqrt(min_i max_n R_in^2 / (Q_ii T_nn))`` (the n maximising for the i minimising), 0 for a
    zero student vector.

    Parameters
    ----------
    Q : ndarray (..., K, K)
    R : ndarray (..., K, M)
    T : ndarray (M, M)

    Returns
    -------
    ndarray (...)
    """
    q = np.diagonal(Q, axis1=-2, axis2=-1)[..., :, None]
    t = np.diag(T)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.where((q > 0) & (t > 0), R / np.sqrt(q * t), 0.0)
    best = np.argmax(cosine * cosine, axis=-1)  # (..., K)
    per_neuron = np.take_along_axis(cosine, best[..., None], axis=-1)[..., 0]
    worst = np.argmin(per_neuron * per_neuron, axis=-1)
    return np.take_along_axis(per_neuron, worst[..., None], axis=-1)[..., 0]


def committee_observables(model, Q: np.ndarray, R: np.ndarray, a: np.ndarray, B: np.ndarray | None = None) -> dict:
    """The observables of :data:`LABELS` from overlaps with leading axes (trajectories, checkpoints).

    Parameters
    ----------
    model : CommitteeModel
    Q : ndarray (n, c, K, K)
    R : ndarray (n, c, K, M)
    a : ndarray (n, c, K)
    B : ndarray (n, c, K, r), optional
        The trained coefficients of a fine-tuning student.

    Returns
    -------
    dict
    """
    observables = {}
    try:
        from .population import generalisation_error  # the closed forms (imported on use)
    except ModuleNotFoundError as exc:  # only while population.py has not landed on this branch
        if exc.name != __name__.rsplit(".", 1)[0] + ".population":
            raise
    else:
        observables["eps_g"] = np.asarray(generalisation_error(model, Q, R, a), dtype=float)
    observables |= {"Q": Q, "R": R, "a": a, "cosine_min": worst_cosine(Q, R, model.T)}
    if model.K == model.M:
        aligned = aligned_overlaps(R)
        observables |= {"R_aligned": aligned, "R_aligned_min": aligned.min(axis=-1), "R_aligned_mean": aligned.mean(axis=-1)}
    if B is not None:
        observables["B"] = B
    return observables
