"""LoRA and full fine-tuning of the pre-trained MLP on a shifted task, with the observables of Xu et al.
(MATH.md §6) measured along the run.

LoRA adapts chosen layers ``W_l -> W_l + s B_l A_l`` (B_l: out x r, A_l: r x in, scale s) and minimises the
mean cross-entropy plus ``lambda/2 sum_l (||A_l||_F^2 + ||B_l||_F^2)`` by gradient descent; the product
``B_l A_l`` is never formed in a step (the forward pass is ``a W^T + s ((a A^T) B^T)``). Initialisations
(Xu et al.): ``small`` — A_l with N(0, alpha^2) entries, B_l = 0; ``spectral`` — B_l = 0,
A_l = diag(N(0, alpha^2)) V_r^T with V_r the top r right singular vectors of a given target matrix of the
layer (their G_12: the right singular vectors of the target change; here the full fine-tuning update).

Alignment (their metric): with Z_l = [B_l; A_l^T] and a target matrix M with top singular pair (u, v), the
error ``1 - |cos(gamma, U_Z)|``, gamma = [u; v]/sqrt 2, U_Z the top left singular vector of Z_l.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..._validation import InvalidArgument, check_choice, check_integer, check_real
from .network import MLP, _softmax_residual, mlp_accuracy, mlp_gradients, one_blas_thread

__all__ = ["LORA_INITS", "LoRARun", "lora_layers", "lora_initial_factors", "lora_objective", "lora_step", "lora_fine_tune", "full_fine_tune", "lora_accuracy", "alignment_error", "target_direction"]

LORA_INITS = ("small", "spectral")


def lora_layers(network: MLP, layers, rank: int) -> list:
    """The indices of ``layers`` (names 'W1'..'WL'), each checked to exist and to admit ``rank``.

    Parameters
    ----------
    network : MLP
    layers : str or sequence of str
    rank : int
        At most each layer's smaller dimension.

    Returns
    -------
    list of int

    Examples
    --------
    >>> from popgrad.models.digits.network import init_mlp
    >>> lora_layers(init_mlp((64, 20, 5)), ["W1", "W2"], 4)
    [0, 1]
    >>> lora_layers(init_mlp((64, 20, 5)), ["W2"], 6)
    Traceback (most recent call last):
    ...
    popgrad._validation.InvalidArgument: rank 6 exceeds layer W2's smaller dimension (5 x 20): at most 5
    """
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise InvalidArgument("layers must name at least one layer", "layers")
    indices = [network.layer(name) for name in layers]
    if len(set(indices)) != len(indices):
        raise InvalidArgument(f"layers must be distinct, got {layers}", "layers")
    rank = check_integer(rank, "rank", 1, 10**6)
    for index in indices:
        m, n = network.weights[index].shape
        if rank > min(m, n):
            raise InvalidArgument(f"rank {rank} exceeds layer {network.layer_names[index]}'s smaller dimension ({m} x {n}): at most {min(m, n)}", "rank")
    return indices


def lora_initial_factors(network: MLP, layers, rank: int, init: str = "small", alpha: float = 1e-3, seed: int = 0, targets: dict | None = None) -> dict:
    """Initial LoRA factors ``{layer index: (B, A)}``.

    Parameters
    ----------
    network : MLP
    layers : sequence of str
    rank : int
    init : {'small', 'spectral'}
    alpha : float > 0
    seed : int
        numpy's generator seeded ``(seed, layer index)``.
    targets : dict, optional
        Spectral init: layer name -> the target matrix whose top right singular vectors A spans.

    Returns
    -------
    dict
    """
    indices = lora_layers(network, layers, rank)
    check_choice(init, "init", LORA_INITS)
    alpha = check_real(alpha, "alpha", 0.0, 1e3, low_open=True)
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    factors = {}
    for index in indices:
        m, n = network.weights[index].shape
        generator = np.random.default_rng([seed, index])
        if init == "small":
            A = alpha * generator.standard_normal((rank, n))
        else:
            name = network.layer_names[index]
            if not targets or name not in targets:
                raise InvalidArgument(f"spectral init needs a target matrix for layer {name} (targets)", "targets")
            target = np.asarray(targets[name], dtype=np.float64)
            if target.shape != (m, n):
                raise InvalidArgument(f"the target of layer {name} must have shape {(m, n)}, got {target.shape}", "targets")
            _, _, Vt = np.linalg.svd(target, full_matrices=False)
            A = (alpha * generator.standard_normal(rank))[:, None] * Vt[:rank]
        factors[index] = (np.zeros((m, rank)), A)
    return factors


def _merged(N: int, m: int, n: int, r: int) -> bool:
    """Whether forming W + s B A is cheaper than the low-rank products for a batch of N (multiply-adds of
    the forward and backward passes beyond the frozen layer's own)."""
    return 4 * N * r * (m + n) > N * m * n + 3 * m * n * r


def _lora_pass(network: MLP, X: np.ndarray, labels: np.ndarray, factors: dict, scale: float, gradients: bool = True) -> tuple:
    """(mean cross-entropy, {index: (dB, dA)}) of the adapted network: low-rank products (B A never formed)
    where they are cheaper, the merged weight W + s B A where the rank is large."""
    activations = [X]
    last = len(network.weights) - 1
    projected, merged = {}, {}
    N = X.shape[0]
    for l, (W, b) in enumerate(zip(network.weights, network.biases)):
        if l in factors:
            B, A = factors[l]
            if _merged(N, W.shape[0], W.shape[1], A.shape[0]):
                merged[l] = W + scale * (B @ A)
                pre = activations[-1] @ merged[l].T + b
            else:
                projected[l] = activations[-1] @ A.T  # N x r
                pre = activations[-1] @ W.T + b + scale * (projected[l] @ B.T)
        else:
            pre = activations[-1] @ W.T + b
        activations.append(pre if l == last else np.tanh(pre))
    loss, delta = _softmax_residual(activations[-1], labels)
    if not gradients:
        return loss, {}
    grads = {}
    lowest = min(factors)
    for l in range(last, lowest - 1, -1):
        if l in merged:
            B, A = factors[l]
            G = delta.T @ activations[l]
            grads[l] = (scale * (G @ A.T), scale * (B.T @ G))
            if l > lowest:
                delta = (delta @ merged[l]) * (1.0 - activations[l] ** 2)
        elif l in factors:
            B, A = factors[l]
            deltaB = delta @ B  # N x r
            grads[l] = (scale * (delta.T @ projected[l]), scale * (deltaB.T @ activations[l]))
            if l > lowest:
                delta = (delta @ network.weights[l] + scale * (deltaB @ A)) * (1.0 - activations[l] ** 2)
        else:
            delta = (delta @ network.weights[l]) * (1.0 - activations[l] ** 2)
    return loss, grads


def lora_objective(network: MLP, X, labels, factors: dict, scale: float = 1.0, weight_decay: float = 0.0) -> tuple:
    """(objective, data loss, {index: (dF/dB, dF/dA)}): the mean cross-entropy of ``W_l + s B_l A_l`` plus
    ``weight_decay/2 sum (||A||^2 + ||B||^2)`` and its gradient.

    Parameters
    ----------
    network : MLP
    X : array (N, 64)
    labels : array (N,) of int
    factors : dict
        Layer index -> (B, A).
    scale : float, default 1
    weight_decay : float, default 0

    Returns
    -------
    (float, float, dict)

    Examples
    --------
    >>> from popgrad.models.digits.network import init_mlp, mlp_loss
    >>> net = init_mlp((64, 8, 3), seed=0)
    >>> X, y = np.random.default_rng(0).random((5, 64)), np.array([0, 1, 2, 0, 1])
    >>> factors = {0: (np.ones((8, 2)) / 10, np.ones((2, 64)) / 10)}
    >>> value, loss, grads = lora_objective(net, X, y, factors)
    >>> bool(abs(loss - mlp_loss(net, X, y, {0: factors[0][0] @ factors[0][1]})) < 1e-12)
    True
    """
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    loss, grads = _lora_pass(network, X, labels, factors, scale)
    value = loss
    if weight_decay:
        value += 0.5 * weight_decay * sum(float(np.sum(B * B) + np.sum(A * A)) for B, A in factors.values())
        grads = {l: (gB + weight_decay * factors[l][0], gA + weight_decay * factors[l][1]) for l, (gB, gA) in grads.items()}
    return value, loss, grads


def lora_step(network: MLP, X, labels, factors: dict, lr: float, scale: float = 1.0, weight_decay: float = 0.0) -> tuple:
    """One gradient-descent step on the LoRA objective: (new factors, objective before the step).

    Parameters
    ----------
    network : MLP
    X : array (N, 64)
    labels : array (N,) of int
    factors : dict
        Layer index -> (B, A).
    lr : float
    scale : float, default 1
    weight_decay : float, default 0

    Returns
    -------
    (dict, float)

    Examples
    --------
    >>> from popgrad.models.digits.network import init_mlp
    >>> net = init_mlp((64, 8, 3), seed=0)
    >>> X, y = np.random.default_rng(0).random((5, 64)), np.array([0, 1, 2, 0, 1])
    >>> factors = {0: (np.zeros((8, 2)), np.ones((2, 64)) / 10)}
    >>> new, value = lora_step(net, X, y, factors, lr=0.1)
    >>> bool(np.any(new[0][0] != 0))
    True
    """
    value, _, grads = lora_objective(network, X, labels, factors, scale, weight_decay)
    return {l: (B - lr * grads[l][0], A - lr * grads[l][1]) for l, (B, A) in factors.items()}, value


def target_direction(matrix) -> np.ndarray:
    """gamma = [u; v] / sqrt 2 of the top singular pair (u, v) of ``matrix`` (m x n): the direction along
    which Z = [B; A^T] grows fastest under the linearised flow dZ/dt = [[0, M], [M^T, 0]] Z.

    Parameters
    ----------
    matrix : array (m, n)

    Returns
    -------
    ndarray (m + n,)
    """
    U, _, Vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64), full_matrices=False)
    return np.concatenate([U[:, 0], Vt[0]]) / math.sqrt(2.0)


def alignment_error(B, A, gamma) -> float:
    """1 - |cos(gamma, U_Z)|, U_Z the top left singular vector of Z = [B; A^T] (Xu et al.'s alignment metric).

    Parameters
    ----------
    B : array (m, r)
    A : array (r, n)
    gamma : array (m + n,)
        A unit vector (:func:`target_direction`).

    Returns
    -------
    float

    Examples
    --------
    >>> u, v = np.array([1.0, 0.0]), np.array([0.0, 1.0, 0.0])
    >>> gamma = np.concatenate([u, v]) / np.sqrt(2)
    >>> alignment_error(np.outer(u, [1.0, 0.0]), np.outer([1.0, 0.0], v), gamma) < 1e-15
    True
    """
    Z = np.concatenate([np.asarray(B), np.asarray(A).T])
    U, _, _ = np.linalg.svd(Z, full_matrices=False)
    return float(max(0.0, 1.0 - abs(float(U[:, 0] @ gamma))))


@dataclass(frozen=True)
class LoRARun:
    """A LoRA fine-tuning run.

    Attributes
    ----------
    steps : ndarray (R,)
        The recorded steps (0 = the initialisation).
    loss : ndarray (R,)
        The mean cross-entropy on the training set.
    norms : dict
        Layer name -> ||s B A||_F at the recorded steps.
    alignment : dict
        (layer name, target label) -> 1 - |cos(gamma, U_Z)| at the recorded steps.
    factors : dict
        The final {layer index: (B, A)}.
    parameters : dict
    seconds : float
    history : list
        The factors {layer index: (B, A)} at the recorded steps (with ``keep_factors``; else empty).
    """

    steps: np.ndarray
    loss: np.ndarray
    norms: dict
    alignment: dict
    factors: dict
    parameters: dict = field(default_factory=dict)
    seconds: float = 0.0
    history: list = field(default_factory=list)

    def deltas(self) -> dict:
        """{layer index: s B A}, the final changes of the weights."""
        return {l: self.parameters["scale"] * B @ A for l, (B, A) in self.factors.items()}


def lora_fine_tune(network: MLP, X, labels, layers=("W1",), rank: int = 4, scale: float = 1.0, init: str = "small", alpha: float = 1e-3, weight_decay: float = 0.0, steps: int = 1000, lr: float = 0.1, seed: int = 0, record_steps=None, targets: dict | None = None, directions: dict | None = None, keep_factors: bool = False, start: dict | None = None) -> LoRARun:
    """Gradient descent on the LoRA objective from the initialisation of :func:`lora_initial_factors`.

    Parameters
    ----------
    network : MLP
    X, labels : arrays
        The fine-tuning task's training set.
    layers : sequence of str, default ('W1',)
    rank : int, default 4
    scale : float, default 1
        s in W + s B A.
    init : {'small', 'spectral'}
    alpha : float, default 1e-3
    weight_decay : float, default 0
    steps : int, default 1000
    lr : float, default 0.1
    seed : int
    record_steps : sequence of int, optional
        Steps at which to record (default: 0 and every step up to 100, then every 10th).
    targets : dict, optional
        Layer name -> target matrix (spectral init).
    directions : dict, optional
        (layer name, label) -> target matrix whose top singular pair the alignment is measured against.
    keep_factors : bool, default False
        Keep the factors at the recorded steps (:attr:`LoRARun.history`).
    start : dict, optional
        Initial factors {layer index: (B, A)} in place of ``init`` (their rank must be ``rank``).

    Returns
    -------
    LoRARun

    Examples
    --------
    >>> from popgrad.models.digits.network import init_mlp
    >>> net = init_mlp((64, 8, 3), seed=0)
    >>> X, y = np.random.default_rng(0).random((30, 64)), np.arange(30) % 3
    >>> run = lora_fine_tune(net, X, y, rank=2, steps=50, lr=0.5, alpha=0.1)
    >>> bool(run.loss[-1] < run.loss[0])
    True
    """
    factors = lora_initial_factors(network, layers, rank, init, alpha, seed, targets)
    if start is not None:
        if set(start) != set(factors) or any(np.shape(start[l][0]) != factors[l][0].shape or np.shape(start[l][1]) != factors[l][1].shape for l in factors):
            raise InvalidArgument(f"start must hold factors (B, A) of the shapes of {[(B.shape, A.shape) for B, A in factors.values()]} for layers {list(layers)}", "start")
        factors = {l: (np.array(start[l][0], dtype=np.float64), np.array(start[l][1], dtype=np.float64)) for l in factors}
    scale = check_real(scale, "scale", 0.0, 1e6, low_open=True)
    weight_decay = check_real(weight_decay, "weight_decay", 0.0, 1e6)
    steps = check_integer(steps, "steps", 0, 10**8)
    lr = check_real(lr, "lr", 0.0, 1e6, low_open=True)
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    if record_steps is None:
        record_steps = sorted(set(range(min(steps, 100) + 1)) | set(range(0, steps + 1, 10)) | {steps})
    record_steps = np.array(sorted({int(s) for s in record_steps if 0 <= s <= steps}))
    gammas = {key: target_direction(matrix) for key, matrix in (directions or {}).items()}
    names = network.layer_names
    losses, norms, aligned, history = [], {names[l]: [] for l in factors}, {key: [] for key in gammas}, []
    begin = time.perf_counter()
    with one_blas_thread():
        wanted = set(record_steps.tolist())
        for step in range(steps + 1):
            if step in wanted:
                losses.append(_lora_pass(network, X, labels, factors, scale, gradients=False)[0])
                if keep_factors:
                    history.append(factors)
                for l, (B, A) in factors.items():
                    norms[names[l]].append(scale * math.sqrt(max(0.0, float(np.sum((B.T @ B) * (A @ A.T))))))
                for (name, label), gamma in gammas.items():
                    B, A = factors[network.layer(name)]
                    aligned[(name, label)].append(alignment_error(B, A, gamma))
            if step < steps:
                factors, _ = lora_step(network, X, labels, factors, lr, scale, weight_decay)
    parameters = {"layers": [names[l] for l in factors], "rank": rank, "scale": scale, "init": init, "alpha": alpha, "weight_decay": weight_decay, "steps": steps, "lr": lr, "seed": seed}
    return LoRARun(record_steps, np.array(losses), {k: np.array(v) for k, v in norms.items()}, {k: np.array(v) for k, v in aligned.items()}, factors, parameters, time.perf_counter() - begin, history)


def full_fine_tune(network: MLP, X, labels, layers=("W1",), steps: int = 1000, lr: float = 0.1, weight_decay: float = 0.0) -> tuple:
    """Gradient descent on the weights of ``layers`` (the others and every bias frozen): the reference of LoRA.

    Parameters
    ----------
    network : MLP
    X : array (N, 64)
    labels : array (N,) of int
    layers : sequence of str, default ('W1',)
    steps : int, default 1000
    lr : float, default 0.1
    weight_decay : float, default 0

    Returns
    -------
    (dict, ndarray)
        {layer index: the change of its weight} and the training loss at each step (and after the last).

    Examples
    --------
    >>> from popgrad.models.digits.network import init_mlp
    >>> net = init_mlp((64, 8, 3), seed=0)
    >>> X, y = np.random.default_rng(0).random((30, 64)), np.arange(30) % 3
    >>> deltas, losses = full_fine_tune(net, X, y, ["W1", "W2"], steps=20, lr=0.5)
    >>> sorted(deltas), bool(losses[-1] < losses[0])
    ([0, 1], True)
    """
    indices = lora_layers(network, layers, 1)
    steps = check_integer(steps, "steps", 0, 10**8)
    lr = check_real(lr, "lr", 0.0, 1e6, low_open=True)
    weight_decay = check_real(weight_decay, "weight_decay", 0.0, 1e6)
    deltas = {l: np.zeros_like(network.weights[l]) for l in indices}
    losses = []
    with one_blas_thread():
        for _ in range(steps):
            loss, gW, _ = mlp_gradients(network, X, labels, deltas)
            losses.append(loss)
            deltas = {l: d - lr * (gW[l] + weight_decay * d) for l, d in deltas.items()}
        losses.append(mlp_gradients(network, X, labels, deltas)[0])
    return deltas, np.array(losses)


def lora_accuracy(network: MLP, X, labels, factors: dict, scale: float = 1.0) -> float:
    """Accuracy of the adapted network.

    Parameters
    ----------
    network : MLP
    X : array (N, 64)
    labels : array (N,) of int
    factors : dict
        Layer index -> (B, A).
    scale : float, default 1

    Returns
    -------
    float
    """
    return mlp_accuracy(network, X, labels, {l: scale * B @ A for l, (B, A) in factors.items()})
