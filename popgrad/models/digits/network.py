"""A multilayer perceptron on the 64 pixels: ``a_0 = x``, ``a_l = tanh(W_l a_{l-1} + b_l)`` for the hidden
layers and logits ``f = W_L a_{L-1} + b_L``; loss the mean cross-entropy of the softmax of the logits.

Layers are named ``W1`` (the first, hidden x 64) to ``WL`` (the output layer, K x hidden). Gradients by
backpropagation (checked against central differences in the tests); pre-training by full-batch Adam from a
seeded initialisation, cached as a JSON network file under the cache folder keyed by everything that
determines it (so it is trained once); network files are read back validated (:func:`load_network`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..._io import read_json_file, write_text
from ..._validation import InvalidArgument, check_integer, check_real
from .data import digits_data, digits_task

__all__ = ["one_blas_thread", "MLP", "mlp_forward", "mlp_loss", "mlp_gradients", "mlp_accuracy", "init_mlp", "train_mlp", "pretrained_network", "load_network", "cache_folder", "NETWORK_VERSION"]

#: bumped when training changes, so that cached networks of an older definition are not reused
NETWORK_VERSION = 1
#: the largest weight magnitude accepted from a network file
MAX_WEIGHT = 1e6


def one_blas_thread():
    """A context in which BLAS runs on one thread (threadpoolctl where installed; it comes with
    scikit-learn): the small matrix products here are many times slower when BLAS threads compete for cores.

    Returns
    -------
    context manager

    Examples
    --------
    >>> with one_blas_thread():
    ...     pass
    """
    import contextlib
    import importlib.util

    if importlib.util.find_spec("threadpoolctl") is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


@dataclass(frozen=True, eq=False)
class MLP:
    """A tanh multilayer perceptron with a linear output layer.

    Attributes
    ----------
    weights : tuple of ndarray
        ``W_l`` of shape (out, in), l = 1..L.
    biases : tuple of ndarray
        ``b_l`` of shape (out,).
    info : dict
        How it was made (task, seed, steps, accuracies).
    """

    weights: tuple
    biases: tuple
    info: dict = field(default_factory=dict)

    @property
    def sizes(self) -> tuple:
        """(64, hidden..., K)."""
        return (self.weights[0].shape[1],) + tuple(W.shape[0] for W in self.weights)

    @property
    def layer_names(self) -> tuple:
        """('W1', ..., 'WL')."""
        return tuple(f"W{l + 1}" for l in range(len(self.weights)))

    def layer(self, name) -> int:
        """The index of the layer called ``name`` ('W1'..'WL'); anything else is refused naming the layers."""
        if not isinstance(name, str) or name not in self.layer_names:
            raise InvalidArgument(f"layer {name!r} does not exist; this network's layers are {', '.join(self.layer_names)} (sizes {'-'.join(map(str, self.sizes))})", "layers")
        return self.layer_names.index(name)

    def to_dict(self) -> dict:
        """The network file's content: ``format``, ``sizes``, ``weights``, ``biases``, ``info``."""
        return {"format": "popgrad-mlp", "activation": "tanh", "sizes": list(self.sizes), "weights": [W.tolist() for W in self.weights], "biases": [b.tolist() for b in self.biases], "info": self.info}

    def save(self, path) -> None:
        """Write the network file (JSON; floats round-trip exactly)."""
        write_text(Path(path), json.dumps(self.to_dict()), ledger=False)


def _forward(network: MLP, X: np.ndarray, deltas: dict | None = None) -> tuple:
    """(pre-activations, activations) per layer; ``deltas`` maps a layer index to a change of its weight."""
    activations = [X]
    pres = []
    last = len(network.weights) - 1
    for l, (W, b) in enumerate(zip(network.weights, network.biases)):
        if deltas and l in deltas:
            W = W + deltas[l]
        pre = activations[-1] @ W.T + b
        pres.append(pre)
        activations.append(pre if l == last else np.tanh(pre))
    return pres, activations


def mlp_forward(network: MLP, X, deltas: dict | None = None) -> np.ndarray:
    """The logits (N, K) at inputs X (N, 64), optionally with ``W_l + deltas[l]`` (layer index -> change).

    Parameters
    ----------
    network : MLP
    X : array (N, 64)
    deltas : dict, optional
        Layer index -> a change of that layer's weight.

    Returns
    -------
    ndarray (N, K)

    Examples
    --------
    >>> net = init_mlp((64, 10, 3), seed=0)
    >>> mlp_forward(net, np.zeros((2, 64))).shape
    (2, 3)
    """
    return _forward(network, np.asarray(X, dtype=np.float64), deltas)[1][-1]


def _softmax_residual(logits: np.ndarray, labels: np.ndarray) -> tuple:
    """(mean cross-entropy, d loss / d logits)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    N = logits.shape[0]
    loss = float(np.mean(log_z - shifted[np.arange(N), labels]))
    p = np.exp(shifted - log_z[:, None])
    p[np.arange(N), labels] -= 1.0
    return loss, p / N


def mlp_loss(network: MLP, X, labels, deltas: dict | None = None) -> float:
    """Mean cross-entropy of the softmax of the logits against integer ``labels``.

    Parameters
    ----------
    network : MLP
    X : array (N, 64)
    labels : array (N,) of int
    deltas : dict, optional
        Layer index -> a change of that layer's weight.

    Returns
    -------
    float
    """
    return _softmax_residual(mlp_forward(network, X, deltas), np.asarray(labels))[0]


def _backward(network: MLP, pres: list, activations: list, residual: np.ndarray) -> tuple:
    """d loss / d W_l and d loss / d b_l from d loss / d logits."""
    grads_W, grads_b = [None] * len(network.weights), [None] * len(network.weights)
    delta = residual
    for l in range(len(network.weights) - 1, -1, -1):
        grads_W[l] = delta.T @ activations[l]
        grads_b[l] = delta.sum(axis=0)
        if l:
            delta = (delta @ network.weights[l]) * (1.0 - activations[l] ** 2)
    return grads_W, grads_b


def mlp_gradients(network: MLP, X, labels, deltas: dict | None = None) -> tuple:
    """(loss, [dL/dW_l], [dL/db_l]) by backpropagation (with ``deltas``, the gradients are at W_l + deltas[l],
    and dL/dW_l is also the gradient with respect to the change).

    Parameters
    ----------
    network : MLP
    X : array (N, 64)
    labels : array (N,) of int
    deltas : dict, optional
        Layer index -> a change of that layer's weight.

    Returns
    -------
    (float, list of ndarray, list of ndarray)

    Examples
    --------
    >>> net = init_mlp((64, 10, 3), seed=0)
    >>> loss, gW, gb = mlp_gradients(net, np.ones((4, 64)) / 8, [0, 1, 2, 0])
    >>> [g.shape for g in gW], round(loss, 6) == round(mlp_loss(net, np.ones((4, 64)) / 8, [0, 1, 2, 0]), 6)
    ([(10, 64), (3, 10)], True)
    """
    X = np.asarray(X, dtype=np.float64)
    pres, activations = _forward(network, X, deltas)
    loss, residual = _softmax_residual(activations[-1], np.asarray(labels))
    if deltas:
        network = MLP(tuple(W + deltas[l] if l in deltas else W for l, W in enumerate(network.weights)), network.biases)
    grads_W, grads_b = _backward(network, pres, activations, residual)
    return loss, grads_W, grads_b


def mlp_accuracy(network: MLP, X, labels, deltas: dict | None = None) -> float:
    """The fraction of inputs whose largest logit is the label.

    Parameters
    ----------
    network : MLP
    X : array (N, 64)
    labels : array (N,) of int
    deltas : dict, optional
        Layer index -> a change of that layer's weight.

    Returns
    -------
    float
    """
    return float(np.mean(np.argmax(mlp_forward(network, X, deltas), axis=1) == np.asarray(labels)))


def init_mlp(sizes, seed: int = 0) -> MLP:
    """A network with N(0, 1/fan_in) weights and zero biases (numpy's generator seeded ``seed``).

    Parameters
    ----------
    sizes : sequence of int
        (64, hidden..., K): at least an input and an output size, each in [1, 4096].
    seed : int

    Returns
    -------
    MLP
    """
    sizes = [check_integer(size, "sizes", 1, 4096) for size in sizes]
    if len(sizes) < 2:
        raise InvalidArgument(f"sizes must name an input and an output size at least, got {sizes}", "sizes")
    generator = np.random.default_rng(check_integer(seed, "seed", 0, 2**63 - 1))
    weights = tuple(generator.standard_normal((out, fan_in)) / math.sqrt(fan_in) for fan_in, out in zip(sizes[:-1], sizes[1:]))
    return MLP(weights, tuple(np.zeros(out) for out in sizes[1:]))


def train_mlp(network: MLP, X, labels, steps: int = 2000, lr: float = 3e-3, weight_decay: float = 1e-4) -> tuple:
    """Full-batch Adam (beta 0.9, 0.999) on the mean cross-entropy plus ``weight_decay/2 sum ||W_l||^2``.

    Parameters
    ----------
    network : MLP
        The start.
    X : array (N, 64)
    labels : array (N,) of int
    steps : int, default 2000
    lr : float, default 3e-3
    weight_decay : float, default 1e-4

    Returns
    -------
    (MLP, ndarray)
        The trained network and the loss per step.
    """
    steps = check_integer(steps, "steps", 0, 10**7)
    lr = check_real(lr, "lr", 0.0, 10.0, low_open=True)
    weight_decay = check_real(weight_decay, "weight_decay", 0.0, 10.0)
    params = [W.copy() for W in network.weights] + [b.copy() for b in network.biases]
    L = len(network.weights)
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    losses = np.empty(steps)
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    for step in range(steps):
        current = MLP(tuple(params[:L]), tuple(params[L:]))
        loss, gW, gb = mlp_gradients(current, X, labels)
        grads = [g + weight_decay * W for g, W in zip(gW, params[:L])] + gb
        losses[step] = loss
        for p, g, m, v in zip(params, grads, first, second):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= lr * (m / (1 - 0.9 ** (step + 1))) / (np.sqrt(v / (1 - 0.999 ** (step + 1))) + 1e-8)
    return MLP(tuple(params[:L]), tuple(params[L:]), dict(network.info)), losses


def cache_folder() -> Path:
    """Where pre-trained networks are cached: ``$POPGRAD_CACHE`` or ``$XDG_CACHE_HOME/popgrad`` (default
    ``~/.cache/popgrad``), then ``digits/``.

    Returns
    -------
    Path
    """
    base = os.environ.get("POPGRAD_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "popgrad")
    return Path(base) / "digits"


def pretrained_network(classes=(0, 1, 2, 3, 4), hidden=(200,), seed: int = 0, steps: int = 500, lr: float = 3e-3, weight_decay: float = 1e-4, cache: bool = True) -> MLP:
    """The base model: an MLP 64 -> hidden -> K trained on the digits of ``classes`` (a 70/30 split seeded
    ``seed``), trained once and cached (the file's name is a hash of every argument, the data's digest and
    :data:`NETWORK_VERSION`).

    Parameters
    ----------
    classes : sequence of int, default (0, 1, 2, 3, 4)
    hidden : sequence of int, default (200,)
    seed : int, default 0
        The initialisation's and the split's.
    steps, lr, weight_decay
        Of :func:`train_mlp`.
    cache : bool, default True

    Returns
    -------
    MLP
        ``info`` holds the task, the training settings, ``train_accuracy``, ``test_accuracy``, ``final_loss``,
        ``seconds`` (of the training run) and ``cache`` (the file).

    Examples
    --------
    >>> net = pretrained_network(hidden=(16,), steps=200, cache=False)
    >>> net.sizes, net.info["test_accuracy"] > 0.9
    ((64, 16, 5), True)
    """
    task = digits_task(classes, seed=seed)
    hidden = [check_integer(h, "hidden", 1, 4096) for h in hidden]
    key = {"version": NETWORK_VERSION, "data": digits_data()[2], "classes": list(task.classes), "hidden": hidden, "seed": seed, "steps": steps, "lr": lr, "weight_decay": weight_decay}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_folder() / f"mlp-{name}.json"
    if cache and path.is_file():
        try:
            network = load_network(path)
            if network.info.get("key") == key:
                return MLP(network.weights, network.biases, {**network.info, "cache": str(path)})
        except InvalidArgument:
            pass  # a damaged cache file is trained again and replaced
    begin = time.perf_counter()
    start = init_mlp([64, *hidden, task.outputs], seed=seed)
    with one_blas_thread():
        network, losses = train_mlp(start, task.X_train, task.y_train, steps, lr, weight_decay)
    info = {"key": key, "task": task.describe(), "train_accuracy": mlp_accuracy(network, task.X_train, task.y_train), "test_accuracy": mlp_accuracy(network, task.X_test, task.y_test), "final_loss": float(losses[-1]) if steps else math.nan, "seconds": round(time.perf_counter() - begin, 2)}
    network = MLP(network.weights, network.biases, info)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        network.save(path)
        info = {**info, "cache": str(path)}
    return MLP(network.weights, network.biases, info)


def load_network(path) -> MLP:
    """Read a network file (written by :meth:`MLP.save`), validated: every shape, every number finite.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    MLP

    Examples
    --------
    >>> import tempfile, pathlib
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "net.json"
    >>> _ = bad.write_text('{"format": "popgrad-mlp", "sizes": [64, 3], "weights": [[[1.0]]], "biases": [[0, 0, 0]]}')
    >>> load_network(bad)
    Traceback (most recent call last):
    ...
    popgrad._validation.InvalidArgument: network file ...: weights[0] must have shape (3, 64), got (1, 1)
    """
    data = read_json_file(path, "network file", "network")
    where = f"network file {str(path)!r}"
    if data.get("format") != "popgrad-mlp":
        raise InvalidArgument(f"{where} is not a popgrad network (its 'format' must be 'popgrad-mlp')", "network")
    missing = [key for key in ("sizes", "weights", "biases") if key not in data]
    if missing:
        raise InvalidArgument(f"{where} lacks {missing}", "network")
    sizes = data["sizes"]
    if not isinstance(sizes, list) or len(sizes) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 4096 for s in sizes):
        raise InvalidArgument(f"{where}: sizes must be a list of at least two integers in [1, 4096], got {sizes!r}", "network")
    layers = len(sizes) - 1
    if not isinstance(data["weights"], list) or not isinstance(data["biases"], list) or len(data["weights"]) != layers or len(data["biases"]) != layers:
        raise InvalidArgument(f"{where}: weights and biases must be lists of {layers} arrays (one per layer of sizes {sizes})", "network")
    weights, biases = [], []
    for l in range(layers):
        for kind, value, shape, out in (("weights", data["weights"][l], (sizes[l + 1], sizes[l]), weights), ("biases", data["biases"][l], (sizes[l + 1],), biases)):
            try:
                array = np.array(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise InvalidArgument(f"{where}: {kind}[{l}] must be an array of numbers of shape {shape}", "network") from None
            if array.shape != shape:
                raise InvalidArgument(f"{where}: {kind}[{l}] must have shape {shape}, got {array.shape}", "network")
            if not np.all(np.isfinite(array)) or (array.size and np.max(np.abs(array)) > MAX_WEIGHT):
                raise InvalidArgument(f"{where}: {kind}[{l}] must be finite numbers of magnitude at most {MAX_WEIGHT:g}", "network")
            out.append(array)
    info = data.get("info", {})
    if not isinstance(info, dict):
        raise InvalidArgument(f"{where}: info must be an object", "network")
    return MLP(tuple(weights), tuple(biases), info)
