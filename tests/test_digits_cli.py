"""``popgrad digits``: the base model and a fine-tuning run from the command line; bad input ends in one line
(issue 24: a layer that does not exist, a rank larger than the layer, a malformed network file)."""

import json

import pytest

from popgrad.cli.main import main

pytest.importorskip("popgrad.models.digits.data")


@pytest.fixture
def network_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POPGRAD_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "net.json"
    try:
        code = main(["digits", "pretrain", "--hidden", "16", "--steps", "150", "--network-out", str(path), "--format", "json"])
    except Exception as exc:  # scikit-learn's data missing: the error says how to get it
        pytest.skip(str(exc))
    if code != 0:
        pytest.skip(capsys.readouterr().err)
    payload = json.loads(capsys.readouterr().out)
    assert payload["sizes"] == [64, 16, 5] and payload["test_accuracy"] > 0.9 and path.is_file()
    return path


def test_finetune_with_lora_and_fully(network_file, capsys):
    assert main(["digits", "finetune", "--network", str(network_file), "--layers", "W1,W2", "--rank", "2", "--steps", "60", "--lr", "0.2", "--format", "json"]) == 0
    lora = json.loads(capsys.readouterr().out)
    assert lora["method"] == "lora" and set(lora["per_layer"]) == {"W1", "W2"}
    assert lora["test_accuracy_after"] > lora["test_accuracy_before"]
    # small init: the factors first align with the gradient's top singular pair (Xu et al.'s alignment phase)
    assert lora["per_layer"]["W1"]["best_alignment_with_gradient"] < 0.05
    assert main(["digits", "finetune", "--network", str(network_file), "--full", "--steps", "60", "--lr", "0.2", "--format", "json"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["method"] == "full" and full["test_accuracy_after"] > full["test_accuracy_before"]


@pytest.mark.parametrize("arguments, named", [
    (["--layers", "W3"], "layer 'W3' does not exist"),
    (["--rank", "17"], "--rank 17 exceeds layer W1's smaller dimension"),
    (["--classes", "5,6,7"], "--classes: the network has 5 outputs"),
    (["--classes", "5,x"], "comma-separated list of digits"),
    (["--lr", "-1"], "lr"),
    (["--network", "MALFORMED"], "lacks ['weights', 'biases']"),
    (["--network", "MISSING"], "MISSING"),
])
def test_bad_input_ends_in_one_line(arguments, named, network_file, tmp_path, capsys):
    malformed = tmp_path / "malformed.json"
    malformed.write_text('{"format": "popgrad-mlp", "sizes": [64, 5]}')
    arguments = [str(malformed) if a == "MALFORMED" else str(tmp_path / "missing.json") if a == "MISSING" else a for a in arguments]
    if "--network" not in arguments:
        arguments += ["--network", str(network_file)]
    assert main(["digits", "finetune", "--steps", "5", *arguments]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named.replace("MISSING", "missing.json") in err, err


def test_digits_needs_a_command(capsys):
    assert main(["digits"]) == 2
    assert "pretrain or finetune" in capsys.readouterr().err
