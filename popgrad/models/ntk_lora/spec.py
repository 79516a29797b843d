"""The linearised (NTK-regime) fine-tuning problem of Jang, Lee & Ryu (ICML 2024; MATH.md §7).

Fine-tuning a weight matrix ``W_0 + delta`` (``delta`` m x n) of a network in the NTK regime changes its
outputs by ``<G_j, delta>``: the loss sees ``delta`` only through the J = KN linear measurements ``G_j``
(N data points, K outputs each; measurement ``j = i K + k`` is output k of data point i). With the
pre-trained outputs ``f0_j`` ("offsets"), ``z_j = f0_j + <G_j, delta>`` and

* ``loss = "squared"``: ``L(delta) = 1/(2N) sum_j (z_j - y_j)^2``;
* ``loss = "cross_entropy"``: K >= 2: ``L = 1/N sum_i [logsumexp(z_i) - <t_i, z_i>]`` with ``t_i`` (the K
  targets of point i) a probability vector; K = 1: the logistic loss ``1/N sum_i [log(1 + e^{z_i}) - t_i z_i]``
  with ``t_i`` in [0, 1].

LoRA writes ``delta = B A`` (B: m x r, A: r x n) and adds weight decay ``lambda/2 (||A||_F^2 + ||B||_F^2)``.

What is certain about the paper is in MATH.md §7 (its body text was not available): popgrad implements
exactly that formulation, with the loss normalisation above (the paper's 1/N convention; the 1/2 of the
squared loss is ours, as the issue's file format states).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..._io import ContentEqual, read_json_file, write_text
from ..._validation import InvalidArgument, InvalidArgumentType, check_array, check_choice, check_integer, check_real

__all__ = ["NTKProblem", "ntk_problem", "gaussian_ntk_problem", "network_ntk_problem", "load_ntk_problem", "NTK_LOSSES", "NTK_ACTIVATIONS"]

NTK_LOSSES = ("squared", "cross_entropy")
#: smooth activations of the Jacobian construction: name -> (sigma, sigma')
NTK_ACTIVATIONS = {
    "tanh": (np.tanh, lambda x: 1.0 / np.cosh(x) ** 2),
    "softplus": (lambda x: np.logaddexp(0.0, x), lambda x: 0.5 * (1.0 + np.tanh(0.5 * x))),
    "sigmoid": (lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)), lambda x: 0.25 / np.cosh(0.5 * x) ** 2),
}
#: largest entry magnitude accepted in G, targets, offsets
MAX_ENTRY = 1e8
#: loss codes of the compiled kernels
LOSS_CODES = {"squared": 0, "cross_entropy": 1}


@dataclass(frozen=True, eq=False)
class NTKProblem(ContentEqual):
    """A validated linearised fine-tuning problem.

    Attributes
    ----------
    measurements : ndarray (J, m, n)
        The matrices G_j, J = K N.
    targets : ndarray (J,)
        y_j (squared loss) or the class probabilities t (cross-entropy).
    weight_decay : float
        lambda > 0.
    loss : {'squared', 'cross_entropy'}
    outputs : int
        K, the outputs per data point.
    offsets : ndarray (J,)
        The pre-trained outputs f0_j (zeros unless given).
    construction : dict
        How the problem was built (empty for explicit data).
    network : dict or None
        For problems built from a network's Jacobian: its arrays (``W0``, ``V``, ``X``) and activation, so that
        :meth:`network_outputs` evaluates the real (not linearised) network.
    """

    measurements: np.ndarray
    targets: np.ndarray
    weight_decay: float
    loss: str
    outputs: int = 1
    offsets: np.ndarray | None = None
    construction: dict = field(default_factory=dict)
    network: dict | None = None

    @property
    def shape(self) -> tuple:
        """(m, n)."""
        return self.measurements.shape[1], self.measurements.shape[2]

    @property
    def count(self) -> int:
        """J = K N, the number of linear measurements."""
        return self.measurements.shape[0]

    @property
    def data(self) -> int:
        """N, the number of data points."""
        return self.count // self.outputs

    @property
    def threshold_rank(self) -> int:
        """The smallest r with r (r + 1) / 2 > K N: from there on, no spurious local minima (Theorem 4.1)."""
        r = 1
        while r * (r + 1) // 2 <= self.count:
            r += 1
        return r

    def measure(self, delta) -> np.ndarray:
        """z_j = f0_j + <G_j, delta> for an m x n ``delta`` (or a stack of them, leading axes kept)."""
        delta = np.asarray(delta, dtype=np.float64)
        return self.offsets + np.tensordot(delta, self.measurements, axes=([-2, -1], [1, 2]))

    def network_outputs(self, delta) -> np.ndarray:
        """The real network's outputs at ``W_0 + delta``, flattened like the measurements (problems built by
        :func:`network_ntk_problem` only): the linearisation is ``measure(delta)``."""
        if self.network is None:
            raise InvalidArgument("this problem was not built from a network (network_ntk_problem)", "problem")
        return _network_forward(self.network, np.asarray(self.network["W0"]) + np.asarray(delta, dtype=np.float64))

    def to_dict(self) -> dict:
        """The JSON file format of ``popgrad ntk landscape`` (``measurements``, ``targets``, ``weight_decay``,
        ``loss``, ``outputs``, ``offsets``, ``construction``, and ``network`` when there is one)."""
        data = {"measurements": self.measurements.tolist(), "targets": self.targets.tolist(), "weight_decay": self.weight_decay, "loss": self.loss, "outputs": self.outputs, "offsets": self.offsets.tolist(), "construction": self.construction}
        if self.network is not None:
            data["network"] = {key: (value.tolist() if isinstance(value, np.ndarray) else value) for key, value in self.network.items()}
        return data

    def save(self, path) -> None:
        """Write the problem as JSON (:func:`load_ntk_problem` reads it back)."""
        write_text(Path(path), json.dumps(self.to_dict(), allow_nan=False))


def ntk_problem(measurements, targets, weight_decay: float, loss: str = "squared", outputs: int = 1, offsets=None, construction: dict | None = None, network: dict | None = None) -> NTKProblem:
    """A problem from explicit data, validated (shapes, finiteness, lambda > 0, the targets of cross-entropy).

    Parameters
    ----------
    measurements : array (J, m, n)
        The K N matrices G_j, measurement ``j = i K + k`` for data point i and output k.
    targets : array (J,)
        Squared loss: any reals. Cross-entropy with K >= 2: each point's K targets are probabilities summing to 1
        (one-hot labels); with K = 1: numbers in [0, 1] (binary labels).
    weight_decay : float > 0
        lambda.
    loss : {'squared', 'cross_entropy'}, default 'squared'
    outputs : int >= 1, default 1
        K; J must be a multiple of K.
    offsets : array (J,), optional
        The pre-trained outputs f0 (default 0).
    construction : dict, optional
        A description kept with the problem.
    network : dict, optional
        Internal: the network of :func:`network_ntk_problem`.

    Returns
    -------
    NTKProblem

    Examples
    --------
    >>> G = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    >>> problem = ntk_problem(G, [1.0, 2.0], weight_decay=0.1)
    >>> problem.shape, problem.count, problem.data, problem.threshold_rank
    ((2, 2), 2, 2, 2)
    >>> problem.measure(np.eye(2)).tolist()
    [1.0, 1.0]
    """
    G = check_array(measurements, "measurements", bound=MAX_ENTRY)
    if G.ndim != 3:
        raise InvalidArgument(f"measurements must be a list of J matrices, each m x n (a 3-dimensional array), got shape {G.shape}", "measurements")
    J, m, n = G.shape
    if min(J, m, n) < 1:
        raise InvalidArgument(f"measurements must hold at least one matrix of at least 1 x 1 entries, got shape {G.shape}", "measurements")
    y = check_array(targets, "targets", bound=MAX_ENTRY)
    if y.shape != (J,):
        raise InvalidArgument(f"targets must hold one number per measurement ({J}), got shape {y.shape}", "targets")
    weight_decay = check_real(weight_decay, "weight_decay", 0.0, 1e8, low_open=True)
    check_choice(loss, "loss", NTK_LOSSES)
    outputs = check_integer(outputs, "outputs", 1, J)
    if J % outputs:
        raise InvalidArgument(f"outputs (K = {outputs}) must divide the number of measurements J = K N = {J}", "outputs")
    f0 = np.zeros(J) if offsets is None else check_array(offsets, "offsets", bound=MAX_ENTRY)
    if f0.shape != (J,):
        raise InvalidArgument(f"offsets must hold one number per measurement ({J}), got shape {f0.shape}", "offsets")
    if loss == "cross_entropy":
        if np.any(y < 0) or (outputs == 1 and np.any(y > 1)):
            raise InvalidArgument("targets of the cross-entropy loss must be probabilities (in [0, 1])", "targets")
        if outputs > 1:
            sums = y.reshape(-1, outputs).sum(axis=1)
            if np.max(np.abs(sums - 1.0)) > 1e-9:
                raise InvalidArgument(f"targets of the cross-entropy loss with K = {outputs} outputs must sum to 1 over each data point's K outputs (one-hot labels or probabilities); a sum is {sums[np.argmax(np.abs(sums - 1.0))]:g}", "targets")
    return NTKProblem(np.ascontiguousarray(G), y, weight_decay, loss, outputs, f0, dict(construction or {}), network)


def gaussian_ntk_problem(m: int = 8, n: int = 8, data: int = 6, outputs: int = 1, weight_decay: float = 1e-2, loss: str = "squared", seed: int = 0) -> NTKProblem:
    """Random measurements: G_j with i.i.d. N(0, 1) entries (MATH.md §7's synthetic surrogate).

    Squared loss: targets N(0, 1), offsets 0. Cross-entropy: offsets (pre-trained logits) N(0, 1) and labels
    uniform over the K classes (one-hot; K = 1: fair binary labels in {0, 1}).

    Parameters
    ----------
    m, n : int, default 8, 8
        The adapted matrix's shape.
    data : int, default 6
        N, the data points.
    outputs : int, default 1
        K, the outputs per point (J = K N measurements).
    weight_decay : float > 0, default 1e-2
    loss : {'squared', 'cross_entropy'}
    seed : int
        numpy's generator, seeded with ``seed``.

    Returns
    -------
    NTKProblem

    Examples
    --------
    >>> problem = gaussian_ntk_problem(8, 8, data=6, seed=1)
    >>> problem.measurements.shape, problem.threshold_rank
    ((6, 8, 8), 4)
    """
    m, n, data, outputs = (check_integer(value, name, 1, 100_000) for value, name in ((m, "m"), (n, "n"), (data, "data"), (outputs, "outputs")))
    check_choice(loss, "loss", NTK_LOSSES)
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    if data * outputs * m * n > 50_000_000:
        raise InvalidArgument(f"K N m n = {data * outputs * m * n} entries exceed the 5e7 this builder keeps in memory", "data")
    generator = np.random.default_rng(seed)
    J = data * outputs
    G = generator.standard_normal((J, m, n))
    if loss == "squared":
        targets, offsets = generator.standard_normal(J), np.zeros(J)
    else:
        offsets = generator.standard_normal(J)
        targets = _random_labels(generator, data, outputs)
    construction = {"kind": "gaussian", "m": m, "n": n, "data": data, "outputs": outputs, "seed": seed}
    return ntk_problem(G, targets, weight_decay, loss, outputs, offsets, construction)


def _random_labels(generator, data: int, outputs: int) -> np.ndarray:
    if outputs == 1:
        return generator.integers(0, 2, data).astype(np.float64)
    return np.eye(outputs)[generator.integers(0, outputs, data)].ravel()


def _network_forward(network: dict, W) -> np.ndarray:
    """f(X_i) = V mean_t sigma(W x_{i,t}), flattened (i, k)."""
    sigma, _ = NTK_ACTIVATIONS[network["activation"]]
    X = np.asarray(network["X"])  # (N, T, n)
    hidden = sigma(np.einsum("mn,itn->itm", W, X)).mean(axis=1)  # (N, m)
    return (hidden @ np.asarray(network["V"]).T).ravel()


def network_jacobian(network: dict) -> np.ndarray:
    """G_{(i, k)} = d f_k(X_i) / d W at W_0: (1/T) sum_t (V_k * sigma'(W_0 x_t)) x_t^T, shape (N K, m, n)."""
    _, derivative = NTK_ACTIVATIONS[network["activation"]]
    X, V, W0 = (np.asarray(network[key]) for key in ("X", "V", "W0"))
    slopes = derivative(np.einsum("mn,itn->itm", W0, X))  # (N, T, m)
    G = np.einsum("km,itm,itn->ikmn", V, slopes, X) / X.shape[1]
    return G.reshape(-1, W0.shape[0], W0.shape[1])


def network_ntk_problem(m: int = 8, n: int = 8, data: int = 6, outputs: int = 1, tokens: int = 4, weight_decay: float = 1e-2, loss: str = "squared", activation: str = "tanh", change_rank: int = 1, change_scale: float = 1.0, seed: int = 0) -> NTKProblem:
    """Measurements from a real network's Jacobian, so that the NTK regime is not only synthetic.

    The network maps a sequence of ``tokens`` inputs ``x_t`` in R^n to K outputs,
    ``f(X) = V mean_t sigma(W x_t)`` (a mean-pooled one-hidden-layer block, W: m x n hidden weights, V: K x m);
    fine-tuning adapts W. Pre-trained weights: W_0 with N(0, 1/n) entries, V with N(0, 1/m) entries, inputs N(0, 1).
    The measurements are the exact Jacobian ``G_(i,k) = d f_k(X_i)/dW`` at W_0 (rank <= tokens each), the offsets
    the pre-trained outputs ``f_{W_0}(X_i)``, and the targets come from a fine-tuned network
    ``W_0 + Delta`` (Delta of rank ``change_rank``, spectral norm ``change_scale``): its outputs (squared loss) or
    its argmax labels (cross-entropy; K = 1: the sign of its output).

    Parameters
    ----------
    m, n : int, default 8, 8
    data : int, default 6
        N.
    outputs : int, default 1
        K.
    tokens : int, default 4
        Inputs per data point (1 gives rank-one Jacobians).
    weight_decay : float > 0, default 1e-2
    loss : {'squared', 'cross_entropy'}
    activation : {'tanh', 'softplus', 'sigmoid'}
    change_rank : int, default 1
    change_scale : float > 0, default 1
    seed : int

    Returns
    -------
    NTKProblem
        With ``network`` set: :meth:`NTKProblem.network_outputs` evaluates the real network.

    Examples
    --------
    >>> problem = network_ntk_problem(6, 5, data=4, outputs=2, seed=0)
    >>> problem.measurements.shape
    (8, 6, 5)
    >>> delta = 1e-4 * np.ones((6, 5))
    >>> bool(np.max(np.abs(problem.network_outputs(delta) - problem.measure(delta))) < 1e-6)
    True
    """
    m, n, data, outputs, tokens = (check_integer(value, name, 1, 100_000) for value, name in ((m, "m"), (n, "n"), (data, "data"), (outputs, "outputs"), (tokens, "tokens")))
    check_choice(loss, "loss", NTK_LOSSES)
    check_choice(activation, "activation", tuple(NTK_ACTIVATIONS))
    change_rank = check_integer(change_rank, "change_rank", 1, min(m, n))
    change_scale = check_real(change_scale, "change_scale", 0.0, 1e6, low_open=True)
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    if data * outputs * m * n > 50_000_000 or data * tokens * n > 50_000_000:
        raise InvalidArgument("the Jacobian (K N m n entries) or the inputs (N tokens n) exceed the 5e7 entries this builder keeps in memory", "data")
    generator = np.random.default_rng(seed)
    network = {
        "activation": activation,
        "W0": generator.standard_normal((m, n)) / math.sqrt(n),
        "V": generator.standard_normal((outputs, m)) / math.sqrt(m),
        "X": generator.standard_normal((data, tokens, n)),
    }
    left, _ = np.linalg.qr(generator.standard_normal((m, change_rank)))
    right, _ = np.linalg.qr(generator.standard_normal((n, change_rank)))
    change = change_scale * left @ right.T
    G = network_jacobian(network)
    offsets = _network_forward(network, network["W0"])
    tuned = _network_forward(network, network["W0"] + change)
    if loss == "squared":
        targets = tuned
    elif outputs == 1:
        targets = (tuned > 0).astype(np.float64)
    else:
        targets = np.eye(outputs)[np.argmax(tuned.reshape(data, outputs), axis=1)].ravel()
    construction = {"kind": "network", "m": m, "n": n, "data": data, "outputs": outputs, "tokens": tokens, "activation": activation, "change_rank": change_rank, "change_scale": change_scale, "seed": seed}
    return ntk_problem(G, targets, weight_decay, loss, outputs, offsets, construction, network)


def load_ntk_problem(path) -> NTKProblem:
    """Read a problem file: ``measurements`` (the K N matrices G_j, each m x n), ``targets`` (K N numbers),
    ``weight_decay`` (lambda > 0), ``loss`` ('squared' or 'cross_entropy'); optionally ``outputs`` (K, default 1),
    ``offsets`` (K N numbers, default 0), ``construction``, ``network``. Validated as :func:`ntk_problem` does.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    NTKProblem
    """
    data = read_json_file(path, "problem file", "problem")
    if not isinstance(data, dict):
        raise InvalidArgument("an NTK problem file must hold a JSON object", "problem")
    missing = [key for key in ("measurements", "targets", "weight_decay", "loss") if key not in data]
    if missing:
        raise InvalidArgument(f"problem file lacks {missing}", missing[0])
    unknown = set(data) - {"measurements", "targets", "weight_decay", "loss", "outputs", "offsets", "construction", "network"}
    if unknown:
        raise InvalidArgument(f"problem file: unknown keys {sorted(unknown)}", sorted(unknown)[0])
    measurements = data["measurements"]
    if isinstance(measurements, list) and measurements and isinstance(measurements[0], list):
        shapes = {np.shape(matrix) if _rectangular(matrix) else None for matrix in measurements}
        if None in shapes or len(shapes) != 1:
            raise InvalidArgument("measurements must all be m x n matrices of the same shape (lists of equal-length rows)", "measurements")
    network = data.get("network")
    if network is not None:
        if not isinstance(network, dict) or set(network) != {"activation", "W0", "V", "X"} or network.get("activation") not in NTK_ACTIVATIONS:
            raise InvalidArgument("network must be an object with activation, W0, V and X", "network")
        network = {key: (value if key == "activation" else np.asarray(value, dtype=np.float64)) for key, value in network.items()}
    weight_decay = data["weight_decay"]
    if not isinstance(weight_decay, (int, float)) or isinstance(weight_decay, bool):
        raise InvalidArgumentType(f"weight_decay must be a number, got {weight_decay!r}", "weight_decay")
    outputs = data.get("outputs", 1)
    construction = data.get("construction") or {}
    if not isinstance(construction, dict):
        raise InvalidArgument("construction must be an object", "construction")
    return ntk_problem(measurements, data["targets"], weight_decay, data["loss"], outputs, data.get("offsets"), construction, network)


def _rectangular(matrix) -> bool:
    return isinstance(matrix, list) and len(matrix) > 0 and all(isinstance(row, list) for row in matrix) and len({len(row) for row in matrix}) == 1
