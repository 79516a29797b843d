import json

import numpy as np
import pytest

from popgrad.models.finetuning.geometry import embedding
from popgrad.models.finetuning.spec import (
    FineTuningProblem,
    claim2_problem,
    glm_problem,
    load_problem,
    orthonormal_problem,
    random_features_problem,
)


def test_json_round_trip_is_exact(tmp_path):
    problem = random_features_problem("tanh", 5, 1.3, d=40, seed=4, c_distribution="sphere", convention="raw")
    path = tmp_path / "problem.json"
    problem.save(path)
    loaded = load_problem(path)
    assert loaded == problem
    np.testing.assert_array_equal(loaded.W, problem.W)
    assert set(json.loads(path.read_text())) == {"activation", "lam", "W", "c", "c_hat", "xi", "convention"}


def test_quantized_norms():
    problem = orthonormal_problem("relu", 8, 2.0, seed=0)
    assert problem.quantized and problem.unit_rows
    np.testing.assert_allclose(problem.teacher_norms, np.sqrt(1 + 4 / 8))


def test_claim2_teacher_neurons_are_orthonormal():
    problem = claim2_problem("He_3", 6, xi=1.0, seed=2)
    teacher = (problem.gram + problem.xi**2 * np.outer(problem.c, problem.c)) / np.outer(problem.teacher_norms, problem.teacher_norms)
    np.testing.assert_allclose(teacher, np.eye(6), atol=1e-14)
    with pytest.raises(ValueError, match="xi must satisfy"):
        claim2_problem("He_3", 6, xi=2.0)


def test_glm_problem_has_zero_rows():
    problem = glm_problem("relu", 3, 1.0, seed=0)
    assert problem.rank == 0
    np.testing.assert_allclose(problem.teacher_norms, 1 / np.sqrt(3))


def test_embedding_realises_the_geometry():
    problem = random_features_problem("relu", 4, 1.0, d=12, seed=1)
    e = embedding(problem, m=-0.4, seed=3)
    np.testing.assert_allclose(e.W @ e.W.T, problem.gram, atol=1e-12)
    np.testing.assert_allclose([e.u @ e.u, e.u_hat @ e.u_hat, e.u @ e.u_hat], [1, 1, -0.4], atol=1e-12)
    np.testing.assert_allclose(e.W @ e.u, 0, atol=1e-12)
    np.testing.assert_allclose(e.W @ e.u_hat, 0, atol=1e-12)


BASE = {"activation": "relu", "lam": [1.0, 1.0], "gram": [[1.0, 0.0], [0.0, 1.0]], "c": [0.5, -0.5], "c_hat": [0.5, 0.5], "xi": 1.0}


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"xi": 0.0}, ValueError, r"xi must lie in \(0, 1e\+50\], got 0.0"),
        ({"xi": "big"}, TypeError, "xi must be a real number"),
        ({"gram": [[1.0, 2.0], [2.0, 1.0]]}, ValueError, "positive semi-definite"),
        ({"gram": [[1.0, 0.5], [0.0, 1.0]]}, ValueError, "symmetric"),
        ({"gram": [[1.0, 0.0]]}, ValueError, r"gram must have shape \(2, 2\)"),
        ({"c": [0.5]}, ValueError, r"c must have shape \(2,\)"),
        ({"c_hat": [0.0, 1.0]}, ValueError, "nonzero"),
        ({"lam": [1.0, float("nan")]}, ValueError, "lam must be finite"),
        ({"convention": "weird"}, ValueError, "convention must be one of normalized, raw"),
        ({"activation": "nope"}, ValueError, "unknown 'nope'"),
        ({"extra": 1}, ValueError, "unknown keys"),
        # magnitudes whose products in h and Phi would overflow float64
        ({"xi": 1e308}, ValueError, r"xi must lie in \(0, 1e\+50\], got 1e\+308"),
        ({"lam": [1e300, 1.0]}, ValueError, "lam must have entries of magnitude at most 1e\\+50"),
        ({"c": [1e60, 1.0]}, ValueError, "c must have entries of magnitude at most 1e\\+50"),
        # raw neurons see pre-activations of standard deviation r = sqrt(1 + xi^2 c^2) = sqrt(1.25) here:
        # exp(z^2/5) is square-integrable at scale 1 but not at r (rate r^2/5 = 1/4: E[sigma(r g)^2] diverges)
        ({"activation": "exp(z**2/5)", "convention": "raw"}, ValueError, r"xi = 1 is too large for 'exp\(z\*\*2/5\)' with raw neurons"),
    ],
)
def test_validation_names_the_parameter(change, error, message):
    with pytest.raises(error, match=message):
        FineTuningProblem.from_dict(BASE | change)


def test_load_problem_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_problem(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_problem(bad)
