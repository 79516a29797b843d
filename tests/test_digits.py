"""The digits model package (issue 24): the data read from scikit-learn's shipped file, the MLP's and the LoRA
objective's gradients against central differences, the LoRA step against the plain merged-weight step, the
network file's validation, the cache, the exact Jacobian and the measurement spans."""

import json

import numpy as np
import pytest

from popgrad._validation import InvalidArgument
from popgrad.models.digits import data as digits_data_module
from popgrad.models.digits.data import DigitsUnavailable, digits_data, digits_task
from popgrad.models.digits.jacobian import digits_ntk_arrays, layer_jacobian, linearisation_error, measurement_bases, network_lora_minimise
from popgrad.models.digits.lora import alignment_error, full_fine_tune, lora_fine_tune, lora_initial_factors, lora_layers, lora_objective, lora_step, target_direction
from popgrad.models.digits.network import MLP, init_mlp, load_network, mlp_forward, mlp_gradients, mlp_loss, pretrained_network

try:
    digits_data()
    HAVE_DATA = True
except DigitsUnavailable:
    HAVE_DATA = False
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="the digits ship with scikit-learn (pip install 'popgrad[digits]')")


def _toy(seed=0, sizes=(64, 12, 7, 4), N=9):
    generator = np.random.default_rng(seed)
    network = init_mlp(sizes, seed=seed)
    network = MLP(network.weights, tuple(0.1 * generator.standard_normal(b.shape) for b in network.biases))
    return network, generator.random((N, sizes[0])), generator.integers(0, sizes[-1], N)


@needs_data
def test_the_data_are_scikit_learns_digits():
    images, labels, digest = digits_data()
    assert images.shape == (1797, 64) and labels.shape == (1797,) and len(digest) == 16
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


@needs_data
@pytest.mark.slow
def test_the_file_read_is_what_scikit_learn_loads():
    # importing scikit-learn takes seconds; popgrad reads its file without it
    images, labels, _ = digits_data()
    sklearn = pytest.importorskip("sklearn.datasets")
    reference = sklearn.load_digits()
    assert np.array_equal(images * 16.0, reference.data) and np.array_equal(labels, reference.target)


@needs_data
def test_tasks_split_by_class_and_relabel():
    task = digits_task((9, 3), test_fraction=0.25, seed=4)
    assert task.outputs == 2 and set(task.y_train.tolist()) == {0, 1}
    assert task.y_train.size + task.y_test.size == 180 + 183
    assert abs(np.sum(task.y_test == 0) - 0.25 * 180) <= 1
    again = digits_task((9, 3), test_fraction=0.25, seed=4)
    assert np.array_equal(task.X_train, again.X_train)
    assert digits_task((0, 1), transform="transpose").X_train.shape[1] == 64
    for bad, parameter in (({"classes": (1, 1)}, "classes"), ({"classes": (1, 10)}, "classes"), ({"test_fraction": 1.0}, "test_fraction"), ({"transform": "rotate"}, "transform")):
        with pytest.raises(InvalidArgument) as error:
            digits_task(**bad)
        assert error.value.parameter == parameter


def test_missing_scikit_learn_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(digits_data_module.importlib.util, "find_spec", lambda name: None)
    digits_data_module._read.cache_clear()
    try:
        with pytest.raises(DigitsUnavailable, match=r"pip install 'popgrad\[digits\]'"):
            digits_data_module._read()
    finally:
        digits_data_module._read.cache_clear()


def test_backpropagation_against_central_differences():
    network, X, y = _toy()
    _, gW, gb = mlp_gradients(network, X, y)
    for l, W in enumerate(network.weights):
        for i, j in ((0, 0), (W.shape[0] - 1, W.shape[1] - 1), (1, 2)):
            E = np.zeros_like(W)
            E[i, j] = 1e-6
            numeric = (mlp_loss(network, X, y, {l: E}) - mlp_loss(network, X, y, {l: -E})) / 2e-6
            assert abs(numeric - gW[l][i, j]) <= 1e-8 * max(1.0, np.abs(gW[l]).max())
    # bias of the first layer
    shifted = [MLP(network.weights, tuple(b + (s * 1e-6 if k == 0 else 0.0) * np.eye(b.size)[0] for k, b in enumerate(network.biases))) for s in (1, -1)]
    numeric = (mlp_loss(shifted[0], X, y) - mlp_loss(shifted[1], X, y)) / 2e-6
    assert abs(numeric - gb[0][0]) <= 1e-8


def test_lora_gradients_against_central_differences_and_the_merged_weights():
    network, X, y = _toy(1)
    generator = np.random.default_rng(2)
    factors = {0: (0.1 * generator.standard_normal((12, 3)), 0.1 * generator.standard_normal((3, 64))), 2: (0.1 * generator.standard_normal((4, 3)), 0.1 * generator.standard_normal((3, 7)))}
    value, loss, grads = lora_objective(network, X, y, factors, scale=0.7, weight_decay=0.05)
    assert abs(loss - mlp_loss(network, X, y, {l: 0.7 * B @ A for l, (B, A) in factors.items()})) < 1e-13
    for l, (B, A) in factors.items():
        for which, array in enumerate((B, A)):
            for index in ((0, 0), (array.shape[0] - 1, array.shape[1] - 1)):
                array[index] += 1e-6
                up = lora_objective(network, X, y, factors, 0.7, 0.05)[0]
                array[index] -= 2e-6
                down = lora_objective(network, X, y, factors, 0.7, 0.05)[0]
                array[index] += 1e-6
                assert abs((up - down) / 2e-6 - grads[l][which][index]) <= 1e-8


def test_the_lora_step_is_the_plain_numpy_step():
    # the same step written the plain way: merge W + s B A, backpropagate the full gradient G, then
    # dB = s G A^T + lambda B, dA = s B^T G + lambda A
    network, X, y = _toy(3)
    generator = np.random.default_rng(4)
    factors = {1: (0.2 * generator.standard_normal((7, 2)), 0.2 * generator.standard_normal((2, 12)))}
    new, value = lora_step(network, X, y, factors, lr=0.3, scale=2.0, weight_decay=0.1)
    B, A = factors[1]
    _, gW, _ = mlp_gradients(network, X, y, {1: 2.0 * B @ A})
    plain_B = B - 0.3 * (2.0 * gW[1] @ A.T + 0.1 * B)
    plain_A = A - 0.3 * (2.0 * B.T @ gW[1] + 0.1 * A)
    assert np.allclose(new[1][0], plain_B, atol=1e-14) and np.allclose(new[1][1], plain_A, atol=1e-14)


def test_bad_layers_and_ranks_are_named():
    network, X, y = _toy()
    with pytest.raises(InvalidArgument, match="layer 'W7' does not exist; this network's layers are W1, W2, W3") as error:
        lora_layers(network, ["W7"], 2)
    assert error.value.parameter == "layers"
    with pytest.raises(InvalidArgument, match="rank 5 exceeds layer W3's smaller dimension") as error:
        lora_fine_tune(network, X, y, ["W3"], rank=5, steps=1)
    assert error.value.parameter == "rank"
    with pytest.raises(InvalidArgument) as error:
        lora_initial_factors(network, ["W1"], 2, init="spectral")
    assert error.value.parameter == "targets"
    with pytest.raises(InvalidArgument) as error:
        layer_jacobian(network, X, "W0")
    assert error.value.parameter == "layers"


def test_spectral_init_spans_the_targets_right_singular_vectors():
    network, _, _ = _toy()
    target = np.random.default_rng(5).standard_normal((12, 64))
    (B, A), = lora_initial_factors(network, ["W1"], 3, "spectral", 1e-3, seed=1, targets={"W1": target}).values()
    _, _, Vt = np.linalg.svd(target)
    assert np.all(B == 0) and np.allclose(A @ Vt[3:].T, 0.0, atol=1e-18)
    assert np.all(np.abs(A) <= 1e-2)


def test_small_init_aligns_with_the_gradients_top_pair_under_the_linearised_flow():
    # in the alignment phase dZ/dt ~ [[0, M], [M^T, 0]] Z: Z's top left singular vector turns to [u; v]/sqrt 2
    network, X, y = _toy(6, sizes=(64, 16, 4), N=40)
    _, gW, _ = mlp_gradients(network, X, y)
    run = lora_fine_tune(network, X, y, ["W1"], rank=2, alpha=1e-6, steps=400, lr=0.5, seed=0, directions={("W1", "g"): -gW[0]}, record_steps=range(401))
    errors = run.alignment[("W1", "g")]
    assert errors[0] >= 1 - 1 / np.sqrt(2) - 1e-12  # B = 0: U_Z lies in the A block
    assert errors.min() < 1e-3 and run.norms["W1"][np.argmin(errors)] < 1.0  # aligned while B A is still small
    assert alignment_error(np.zeros((16, 2)), np.eye(2, 64), target_direction(-gW[0])) >= 1 - 1 / np.sqrt(2) - 1e-12


def test_full_fine_tuning_reduces_the_loss_on_the_chosen_layers_only():
    network, X, y = _toy(7)
    deltas, losses = full_fine_tune(network, X, y, ["W2"], steps=30, lr=0.5)
    assert list(deltas) == [1] and losses[-1] < losses[0]


def test_network_files_round_trip_and_malformed_ones_are_refused(tmp_path):
    network, X, _ = _toy(8)
    path = tmp_path / "net.json"
    network.save(path)
    again = load_network(path)
    assert all(np.array_equal(a, b) for a, b in zip(again.weights, network.weights))
    assert np.array_equal(mlp_forward(again, X), mlp_forward(network, X))
    good = json.loads(path.read_text())
    cases = {
        "not JSON": "{",
        "format": json.dumps({**good, "format": "other"}),
        "missing": json.dumps({key: value for key, value in good.items() if key != "biases"}),
        "sizes": json.dumps({**good, "sizes": [64, True]}),
        "count": json.dumps({**good, "weights": good["weights"][:1]}),
        "shape": json.dumps({**good, "weights": [good["weights"][0][:3]] + good["weights"][1:]}),
        "finite": json.dumps({**good, "biases": [[1e400] * len(good["biases"][0])] + good["biases"][1:]}).replace("Infinity", "1e400"),
        "text": json.dumps({**good, "biases": [["a"] * len(good["biases"][0])] + good["biases"][1:]}),
    }
    for name, text in cases.items():
        bad = tmp_path / f"{name.replace(' ', '_')}.json"
        bad.write_text(text)
        with pytest.raises(InvalidArgument) as error:
            load_network(bad)
        assert error.value.parameter == "network" and "\n" not in str(error.value), name
    with pytest.raises(InvalidArgument):
        load_network(tmp_path / "absent.json")


@needs_data
def test_the_pretrained_network_is_trained_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("POPGRAD_CACHE", str(tmp_path))
    first = pretrained_network(hidden=(8,), steps=60)
    files = list((tmp_path / "digits").glob("mlp-*.json"))
    assert len(files) == 1 and first.info["cache"] == str(files[0])
    stamp = files[0].stat().st_mtime_ns
    second = pretrained_network(hidden=(8,), steps=60)
    assert files[0].stat().st_mtime_ns == stamp
    assert all(np.array_equal(a, b) for a, b in zip(first.weights, second.weights))
    assert second.info["test_accuracy"] == first.info["test_accuracy"] > 0.5
    files[0].write_text("{broken")  # a damaged cache file is trained again
    third = pretrained_network(hidden=(8,), steps=60)
    assert all(np.array_equal(a, b) for a, b in zip(first.weights, third.weights))


def test_the_jacobian_against_central_differences_on_every_layer():
    network, X, y = _toy(9, N=3)
    for name in network.layer_names:
        G = layer_jacobian(network, X, name)
        l = network.layer(name)
        m, n = network.weights[l].shape
        assert G.shape == (3 * 4, m, n)
        for i, j in ((0, 0), (m - 1, n - 1), (m // 2, n // 3)):
            E = np.zeros((m, n))
            E[i, j] = 1e-6
            numeric = (mlp_forward(network, X, {l: E}) - mlp_forward(network, X, {l: -E})).ravel() / 2e-6
            assert np.max(np.abs(numeric - G[:, i, j])) <= 1e-8


def test_the_measurement_spans_keep_every_measurement():
    network, X, y = _toy(10, N=3)
    arrays = digits_ntk_arrays(network, X, y, "W1")
    G = arrays["measurements"]
    U, V = measurement_bases(G)
    assert V.shape[1] == 3 and U.shape[1] <= 12  # first-layer Jacobians b x^T: rows span the 3 inputs
    delta = np.random.default_rng(0).standard_normal(G.shape[1:])
    full = np.tensordot(G, delta, axes=([1, 2], [0, 1]))
    reduced = np.tensordot(np.einsum("mp,jmn,nq->jpq", U, G, V), U.T @ delta @ V, axes=([1, 2], [0, 1]))
    assert np.allclose(full, reduced, atol=1e-12)
    assert np.allclose(arrays["offsets"], mlp_forward(network, X).ravel())
    with pytest.raises(InvalidArgument):
        digits_ntk_arrays(network, X, [0, 1, 9], "W1")


def test_the_linearisation_error_is_second_order():
    network, X, _ = _toy(11, N=5)
    D = np.random.default_rng(1).standard_normal((12, 64))
    errors = [linearisation_error(network, X, "W1", t * D) for t in (1e-4, 1e-3)]
    assert 5 < errors[1] / errors[0] < 20


def test_the_network_minimiser_reaches_a_stationary_point():
    network, X, y = _toy(12, sizes=(64, 10, 3), N=4)
    generator = np.random.default_rng(0)
    starts = [(0.1 * generator.standard_normal((10, 2)), 0.1 * generator.standard_normal((2, 64))) for _ in range(2)]
    out = network_lora_minimise(network, X, y, "W1", starts, weight_decay=0.05, gtol=1e-9)
    assert np.all(out["converged"]) and np.all(out["gradient_norms"] <= 1e-8)
    B, A = out["B"][0], out["A"][0]
    assert np.linalg.norm(B.T @ B - A @ A.T) < 1e-6  # stationary points of weight-decayed LoRA are balanced


def test_the_low_rank_and_the_merged_passes_agree(monkeypatch):
    # the pass forms W + s B A only where that is cheaper (large rank); both routes give the same gradient
    from popgrad.models.digits import lora

    network, X, y = _toy(13, sizes=(64, 30, 20, 5), N=50)
    generator = np.random.default_rng(0)
    factors = {0: (0.1 * generator.standard_normal((30, 3)), 0.1 * generator.standard_normal((3, 64))), 2: (0.1 * generator.standard_normal((5, 3)), 0.1 * generator.standard_normal((3, 20)))}
    results = []
    for choice in (True, False):
        monkeypatch.setattr(lora, "_merged", lambda *args, choice=choice: choice)
        results.append(lora_objective(network, X, y, factors, 0.7, 0.01))
    assert abs(results[0][0] - results[1][0]) < 1e-14
    assert all(np.allclose(results[0][2][l][k], results[1][2][l][k], atol=1e-15) for l in factors for k in (0, 1))
