"""The network's exact Jacobian with respect to one layer's weight, for the linearised (NTK) fine-tuning
problem of Jang, Lee & Ryu (MATH.md §7): ``f(X_i; W_l + delta) ~ f(X_i; W_l) + <G_(i,k), delta>`` with
``G_(i,k) = d f_k(X_i) / d W_l`` (measurement ``j = i K + k``, as in the NTK problems of popgrad), and the
non-linearised LoRA objective on the same examples (mean cross-entropy plus weight decay), so that the two
can be compared rank by rank.
"""

from __future__ import annotations

import time

import numpy as np

from ..._validation import InvalidArgument, check_integer, check_real
from .lora import lora_layers, lora_objective
from .network import MLP, _forward, mlp_forward, one_blas_thread

__all__ = ["layer_jacobian", "digits_ntk_arrays", "measurement_bases", "network_lora_minimise", "linearisation_error"]


def layer_jacobian(network: MLP, X, layer: str = "W1", delta=None) -> np.ndarray:
    """G_(i,k) = d f_k(X_i) / d W_layer at ``W_layer + delta`` (default: the network's weight), shape (N K, m, n).

    Parameters
    ----------
    network : MLP
    X : array (N, 64)
    layer : str, default 'W1'
    delta : array (m, n), optional

    Returns
    -------
    ndarray (N K, m, n)

    Examples
    --------
    >>> from popgrad.models.digits.network import init_mlp
    >>> net = init_mlp((64, 6, 3), seed=0)
    >>> X = np.random.default_rng(0).random((2, 64))
    >>> G = layer_jacobian(net, X, "W1")
    >>> E = np.zeros((6, 64)); E[1, 5] = 1e-6
    >>> numeric = (mlp_forward(net, X, {0: E}) - mlp_forward(net, X, {0: -E})).ravel() / 2e-6
    >>> bool(np.max(np.abs(numeric - G[:, 1, 5])) < 1e-8)
    True
    """
    (index,) = lora_layers(network, [layer], 1)
    X = np.asarray(X, dtype=np.float64)
    deltas = None if delta is None else {index: np.asarray(delta, dtype=np.float64)}
    _, activations = _forward(network, X, deltas)
    weights = [W + deltas[l] if deltas and l in deltas else W for l, W in enumerate(network.weights)]
    N, K = X.shape[0], weights[-1].shape[0]
    last = len(weights) - 1
    # back[i, k, :]: d f_k(X_i) / d (pre-activation of layer ``index``)
    back = np.broadcast_to(np.eye(K), (N, K, K)).copy()
    for l in range(last, index, -1):
        back = np.einsum("ikm,mn->ikn", back, weights[l]) * (1.0 - activations[l] ** 2)[:, None, :]
    G = np.einsum("ikm,in->ikmn", back, activations[index])
    return G.reshape(N * K, *weights[index].shape)


def digits_ntk_arrays(network: MLP, X, labels, layer: str = "W1") -> dict:
    """The arrays of the linearised problem on the examples X: ``measurements`` (the Jacobian, N K x m x n),
    ``offsets`` (the pre-trained logits, N K), ``targets`` (one-hot labels, N K), ``outputs`` (K) — what
    ``ntk_problem(measurements, targets, weight_decay, 'cross_entropy', outputs, offsets)`` takes.

    Parameters
    ----------
    network : MLP
    X : array (N, 64)
    labels : array (N,) of int
    layer : str, default 'W1'

    Returns
    -------
    dict

    Examples
    --------
    >>> from popgrad.models.digits.network import init_mlp
    >>> arrays = digits_ntk_arrays(init_mlp((64, 6, 3), seed=0), np.ones((2, 64)), [0, 2])
    >>> arrays["measurements"].shape, arrays["targets"].tolist()
    ((6, 6, 64), [1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    """
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    K = network.weights[-1].shape[0]
    if labels.shape != (X.shape[0],) or labels.min() < 0 or labels.max() >= K:
        raise InvalidArgument(f"labels must be one integer in 0..{K - 1} per example", "labels")
    return {"measurements": layer_jacobian(network, X, layer), "offsets": mlp_forward(network, X).ravel(), "targets": np.eye(K)[labels].ravel(), "outputs": K}


def measurement_bases(measurements, tol: float = 1e-12) -> tuple:
    """Orthonormal bases U (m x p) and V (n x q) of the spaces spanned by the columns and by the rows of all the
    measurements G_j, so that ``<G_j, delta> = <U^T G_j V, U^T delta V>`` for every delta.

    The linearised LoRA problem on (m, n) is then exactly the problem on the p x q matrices ``U^T G_j V``:
    writing B = U B_1 + U_perp B_2 and A = A_1 V^T + A_2 V_perp^T, the loss sees only B_1 A_1 and weight decay
    adds ``lambda/2 (||B_2||^2 + ||A_2||^2)`` apart, so the local minima, their values and the convex optimum
    (lifted as U delta V^T) are the same. For the first layer of an MLP each G_(i,k) = b_(i,k) x_i^T has rank
    one and q <= N: the optimum's row space lies in the span of the N inputs.

    Parameters
    ----------
    measurements : array (J, m, n)
    tol : float, default 1e-12
        Singular values below ``tol`` times the largest are dropped.

    Returns
    -------
    (ndarray (m, p), ndarray (n, q))

    Examples
    --------
    >>> G = np.zeros((2, 5, 4)); G[0, 0, 1] = 1.0; G[1, 2, 1] = 3.0
    >>> U, V = measurement_bases(G)
    >>> U.shape, V.shape
    ((5, 2), (4, 1))
    """
    G = np.asarray(measurements, dtype=np.float64)
    J, m, n = G.shape
    bases = []
    for stacked in (G.transpose(1, 0, 2).reshape(m, J * n), G.transpose(2, 0, 1).reshape(n, J * m)):
        U, s, _ = np.linalg.svd(stacked, full_matrices=False)
        bases.append(U[:, s > tol * max(s[0], 1e-300)] if s.size else U[:, :0])
    return bases[0], bases[1]


def linearisation_error(network: MLP, X, layer: str, delta) -> float:
    """||f(W + delta) - f(W) - <G, delta>|| / ||f(W + delta) - f(W)|| over the examples (0 where delta = 0).

    Parameters
    ----------
    network : MLP
    X : array (N, 64)
    layer : str
    delta : array (m, n)

    Returns
    -------
    float
    """
    (index,) = lora_layers(network, [layer], 1)
    f0 = mlp_forward(network, X).ravel()
    f = mlp_forward(network, X, {index: delta}).ravel()
    linear = f0 + np.tensordot(layer_jacobian(network, X, layer), delta, axes=([1, 2], [0, 1]))
    change = np.linalg.norm(f - f0)
    return float(np.linalg.norm(f - linear) / change) if change > 0 else 0.0


def network_lora_minimise(network: MLP, X, labels, layer: str, starts, weight_decay: float, gtol: float = 1e-9, max_iter: int = 20_000) -> dict:
    """Minimise the non-linearised LoRA objective (mean cross-entropy of ``W + B A`` plus
    ``weight_decay/2 (||A||^2 + ||B||^2)``) by L-BFGS (scipy) from each start.

    Parameters
    ----------
    network : MLP
    X, labels : arrays
    layer : str
    starts : sequence of (B, A)
        Initial factors (all of one rank).
    weight_decay : float > 0
    gtol : float
        Stop when the largest gradient entry is below it.
    max_iter : int

    Returns
    -------
    dict
        ``values``, ``gradient_norms`` (largest entry), ``iterations``, ``converged``, ``B``, ``A`` (per
        start), ``seconds``.
    """
    from scipy.optimize import minimize

    (index,) = lora_layers(network, [layer], np.asarray(starts[0][1]).shape[0])
    weight_decay = check_real(weight_decay, "weight_decay", 0.0, 1e6, low_open=True)
    max_iter = check_integer(max_iter, "max_iter", 1, 10**7)
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    m, n = network.weights[index].shape
    begin = time.perf_counter()
    out = {"values": [], "gradient_norms": [], "iterations": [], "converged": [], "B": [], "A": []}
    with one_blas_thread():
        for B0, A0 in starts:
            r = A0.shape[0]

            def objective(x):
                B, A = x[: m * r].reshape(m, r), x[m * r :].reshape(r, n)
                value, _, grads = lora_objective(network, X, labels, {index: (B, A)}, 1.0, weight_decay)
                return value, np.concatenate([grads[index][0].ravel(), grads[index][1].ravel()])

            result = minimize(objective, np.concatenate([np.ravel(B0), np.ravel(A0)]), jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "maxcor": 20, "gtol": gtol, "ftol": 0.0, "maxls": 50})
            value, gradient = objective(result.x)
            out["values"].append(float(value))
            out["gradient_norms"].append(float(np.max(np.abs(gradient))))
            out["iterations"].append(int(result.nit))
            out["converged"].append(bool(np.max(np.abs(gradient)) <= 10 * gtol))
            out["B"].append(result.x[: m * r].reshape(m, r))
            out["A"].append(result.x[m * r :].reshape(r, n))
    out = {key: (np.array(value) if key not in ("B", "A") else value) for key, value in out.items()}
    out["seconds"] = time.perf_counter() - begin
    return out
