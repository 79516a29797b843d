"""The committee machine's linear parametrisation V = W0 + B Theta (issue 21, MATH.md §8): LoRA and full
fine-tuning students. The spec's contract and validation; the student learnt from scratch unchanged to the
last bit (runs pinned before the change); the exact chain against full-d SGD (two-sample KS tests), against an
independent numpy step in dimension d, against the scratch chain (full fine-tuning from Theta = 0 is a student
learnt from scratch that starts at V = W0) and against the fine-tuning family's chain (MATH.md §4b)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import special, stats

import popgrad
from popgrad._validation import InvalidArgument
from popgrad.dynamics.protocol import model_from_dict
from popgrad.models.committee.spec import committee_model, committee_model_from_dict, finetuning_committee_model

DATA = Path(__file__).parent / "data"

#: a base W0 = 0.9 W* + (its own directions) for an orthonormal teacher of width 3
BASE3 = {"gram": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], "teacher_overlap": [[0.8, 0.1, 0.0], [0.0, 0.8, 0.0], [0.1, 0.0, 0.8]]}

LORA = {
    "model": "committee",
    "convention": "saad_solla",
    "teacher": {"activation": "erf(z/sqrt(2))", "second_layer": [1, 1, 1], "noise": 0.1},
    "student": {"activation": "erf(z/sqrt(2))", "width": 3, "second_layer": [1, 1, 1], "constraint": "sphere",
                "parametrisation": {"kind": "lora", "rank": 1, "base": BASE3, "orthogonal_to_base": True}},
}


@pytest.fixture
def without_eps_g(monkeypatch):
    """eps_g (population.py, tested there) left out of runs whose test reads only Q, R, a and B."""
    import importlib

    try:
        population = importlib.import_module("popgrad.models.committee.population")
    except ModuleNotFoundError:
        return
    monkeypatch.setattr(population, "generalisation_error", lambda model, Q, R, a: np.zeros(np.shape(a)[:-1]))


# ------------------------------------------------------------------------------------------------
# the spec
# ------------------------------------------------------------------------------------------------


def test_lora_contract_defaults_and_round_trip():
    model = model_from_dict(copy.deepcopy(LORA))
    assert (model.kind, model.rank, model.K, model.M, model.p) == ("lora", 1, 3, 3, 6)
    assert model.train_coefficients and model.coefficient_ratio == 1.0 and model.orthogonal_to_base
    assert np.array_equal(model.coefficients, np.zeros((3, 1))) and model.init == {"kind": "random", "scale": 1.0}
    # the joint factor reproduces the Grams, P removes the base's span
    J = np.vstack([model.L, model.L0])
    assert np.allclose(J @ J.T, np.block([[model.T, np.array(BASE3["teacher_overlap"]).T], [np.array(BASE3["teacher_overlap"]), np.eye(3)]]))
    assert np.allclose(model.L0 @ model.base_projector, 0.0) and np.allclose(model.base_projector @ model.base_projector, model.base_projector)
    again = committee_model_from_dict(json.loads(json.dumps(model.to_dict())))
    assert again == model and hash(again) == hash(model) and again.replace(noise=0.0) != model
    assert "LoRA rank 1" in model.describe() and "Theta ⟂ W0" in model.describe()
    assert not model.reduces_to_glm and model.check_dimension(20) == 20
    with pytest.raises(InvalidArgument):
        model.check_dimension(7)  # p + r + 1 = 8


@pytest.mark.parametrize("parametrisation, changes", [
    ({"kind": "full", "base": {"gram": [[1.0, 0.2], [0.2, 1.0]], "teacher_overlap": [[0.9, 0.0], [0.1, 0.9]]}}, dict(noise=0.3, train_second_layer=True)),
    ({"kind": "lora", "rank": 2, "base": {"gram": [[1.0, 0.2], [0.2, 1.0]], "teacher_overlap": [[0.9, 0.0], [0.1, 0.9]]}, "coefficients": [[1.0, 0.0], [0.5, 1.0]], "train_coefficients": False}, dict(init={"kind": "zero"}, weight_decay=0.1)),
    ({"kind": "lora", "rank": 2, "base": {"gram": [[1.0, 0.0], [0.0, 1.0]], "teacher_overlap": [[0.9, 0.0], [0.0, 0.9]]}, "coefficient_ratio": 0.5, "orthogonal_to_base": True},
     dict(constraint="stiefel", init={"kind": "explicit", "gram": [[1.0, 0.0], [0.0, 1.0]], "teacher_overlap": [[0.3, 0.0], [0.0, 0.2]], "base_overlap": [[0.0, 0.0], [0.0, 0.0]]})),
    ({"kind": "full", "base": {"vectors": [[1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 0.5, 0.0]]}, "train_coefficients": True}, dict(teacher_vectors=[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])),
])
def test_api_members_round_trip(parametrisation, changes):
    model = committee_model("erf(z/sqrt(2))", width=2, parametrisation=parametrisation, **changes)
    data = json.loads(json.dumps(model.to_dict()))
    assert committee_model_from_dict(data) == model and model_from_dict(data) == model
    assert model.describe().startswith("committee machine") and "V = W0 + B Theta" in model.describe()
    assert model.replace(second_layer_ratio=2.0).parametrisation["kind"] == model.kind


def test_scratch_parametrisation_is_today_s_model():
    explicit = committee_model("erf(z/sqrt(2))", width=3, parametrisation={"kind": "scratch"})
    plain = committee_model("erf(z/sqrt(2))", width=3)
    assert explicit == plain and explicit.to_dict() == plain.to_dict() and "parametrisation" not in plain.to_dict()["student"]
    assert (plain.kind, plain.rank, plain.linear) == ("scratch", 3, False) and np.array_equal(plain.coefficients, np.eye(3))


def _lora_edit(changes=(), drop=()):
    data = copy.deepcopy(LORA)
    for path, value in changes:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    for path in drop:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return data


PAR = ("student", "parametrisation")
BAD = [
    ([(PAR + ("kind",), "adapter")], (), "student.parametrisation.kind"),
    ([(PAR + ("rank",), 0)], (), "student.parametrisation.rank"),
    ([(PAR + ("rank",), 4)], (), "student.parametrisation.rank"),
    ([(PAR + ("rank",), 1.5)], (), "student.parametrisation.rank"),
    ([], [PAR + ("rank",)], "student.parametrisation.rank"),
    ([(PAR + ("kind",), "full"), (PAR + ("rank",), 2)], (), "student.parametrisation.rank"),
    ([], [PAR + ("base",)], "student.parametrisation.base"),
    ([(PAR + ("base", "gram"), [[1.0, 0.0], [0.0, 1.0]])], (), "student.parametrisation.base.gram"),
    ([(PAR + ("base", "teacher_overlap"), [[0.8, 0.1], [0.0, 0.8], [0.1, 0.0]])], (), "student.parametrisation.base.teacher_overlap"),
    ([(PAR + ("base", "gram"), [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])], (), "student.parametrisation.base.gram"),
    ([(PAR + ("base", "teacher_overlap"), [[1.2, 0.0, 0.0], [0.0, 0.8, 0.0], [0.0, 0.0, 0.8]])], (), "student.parametrisation.base.teacher_overlap"),  # joint Gram not PSD
    ([(PAR + ("base", "colour"), 1)], (), "student.parametrisation.base.colour"),
    ([(PAR + ("base", "vectors"), [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])], [PAR + ("base", "gram"), PAR + ("base", "teacher_overlap")], "student.parametrisation.base.vectors"),  # no teacher vectors
    ([(PAR + ("coefficients",), [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])], (), "student.parametrisation.coefficients"),
    ([(PAR + ("train_coefficients",), False)], (), "student.parametrisation.coefficients"),  # frozen B needs its value
    ([(PAR + ("train_coefficients",), "yes")], (), "student.parametrisation.train_coefficients"),
    ([(PAR + ("coefficient_ratio",), -1.0)], (), "student.parametrisation.coefficient_ratio"),
    ([(PAR + ("coefficient_ratio",), 0.0)], (), "student.parametrisation.coefficient_ratio"),
    ([(PAR + ("orthogonal_to_base",), 1)], (), "student.parametrisation.orthogonal_to_base"),
    ([(PAR + ("adapter",), 1)], (), "student.parametrisation.adapter"),
    ([(("student", "init"), {"kind": "informed", "scale": 0.1})], (), "student.init"),
    ([(("overlaps",), {"Q": np.eye(3).tolist(), "R": np.zeros((3, 3)).tolist()})], (), "overlaps"),
    ([(("student", "init"), {"kind": "zero"})], (), "student.init"),  # zero Theta, zero B: never moves (and off the sphere)
    ([(("student", "init"), {"kind": "explicit", "gram": [[1.0]], "teacher_overlap": [[0.0, 0.0, 0.0]], "base_overlap": [[0.5, 0.0, 0.0]]})], (), "student.init.base_overlap"),  # not ⟂ W0
    ([(("student", "init"), {"kind": "explicit", "gram": [[0.5]], "teacher_overlap": [[0.0, 0.0, 0.0]], "base_overlap": [[0.0, 0.0, 0.0]]})], (), "student.init.gram"),  # off the sphere
    ([(("student", "init"), {"kind": "explicit", "gram": [[1.0]], "teacher_overlap": [[2.0, 0.0, 0.0]], "base_overlap": [[0.0, 0.0, 0.0]]})], (), "student.init.gram"),  # Gamma < 0
    ([(("student", "init"), {"kind": "explicit", "gram": [[1.0]], "teacher_overlap": [[0.0, 0.0]], "base_overlap": [[0.0, 0.0, 0.0]]})], (), "student.init.teacher_overlap"),
]


@pytest.mark.parametrize("edits, drop, parameter", BAD)
def test_contract_validation_names_the_key(edits, drop, parameter):
    with pytest.raises(InvalidArgument) as info:
        committee_model_from_dict(_lora_edit(edits, drop))
    assert info.value.parameter == parameter, str(info.value)


def test_api_refuses_overlaps_for_lora():
    with pytest.raises(InvalidArgument, match="learnt from scratch") as info:
        committee_model("erf(z/sqrt(2))", width=3, Q0=np.eye(3), R0=np.zeros((3, 3)), parametrisation=LORA["student"]["parametrisation"])
    assert info.value.parameter == "Q0"
    with pytest.raises(InvalidArgument) as info:
        committee_model("erf(z/sqrt(2))", width=3, parametrisation={"kind": "scratch", "rank": 2})
    assert info.value.parameter == "parametrisation.rank"


# ------------------------------------------------------------------------------------------------
# runs: batching, hitting times, observables
# ------------------------------------------------------------------------------------------------


def test_lora_chain_independent_of_batching_and_observables():
    model = model_from_dict(copy.deepcopy(LORA))
    whole = popgrad.simulate(model, d=40, delta=1.0, checkpoints=[0, 200, 400], trajectories=6, seed=3)
    part = popgrad.simulate(model, d=40, delta=1.0, checkpoints=[0, 400], trajectories=3, seed=3, first_trajectory=3)
    for name in ("Q", "R", "a", "B"):
        assert np.array_equal(whole.observables[name][3:, [0, 2]], part.observables[name])
    assert whole.observables["B"].shape == (6, 3, 3, 1) and whole.observables["R_aligned"].shape == (6, 3, 3)
    # Theta ⟂ W0 on the sphere: V_i = W0_i + B_i theta gives Q_ii = G0_ii + B_i^2 and Q_ij = G0_ij + B_i B_j
    Q, B = whole.observables["Q"], whole.observables["B"][..., 0]
    assert np.allclose(Q, np.eye(3) + B[..., :, None] * B[..., None, :], atol=1e-10)


@pytest.mark.parametrize("method", ["chain", "full"])
def test_lora_hitting_times_follow_the_alignment(method):
    model = model_from_dict(copy.deepcopy(LORA))
    checkpoints = np.arange(0, 2001, 100)
    run = popgrad.simulate(model, d=30, delta=1.0, checkpoints=checkpoints, trajectories=8, seed=5, method=method, hit=0.34)
    cosine = run.observables["cosine_min"]
    assert np.any(run.hitting_steps > 0)
    for j in range(8):
        reached = np.nonzero(cosine[j] ** 2 >= 0.66)[0]
        if reached.size:
            assert 0 <= run.hitting_steps[j] <= checkpoints[reached[0]]


# ------------------------------------------------------------------------------------------------
# the student learnt from scratch: the same numbers, to the last bit, as before the parametrisation
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_scratch_runs_unchanged_to_the_bit():
    # tests/data/committee_scratch_pinned.json: written by tests/data/make_committee_scratch_pinned.py from the
    # code of commit 5bcd967 (main, before V = W0 + B Theta)
    for case in json.loads((DATA / "committee_scratch_pinned.json").read_text()):
        model = committee_model_from_dict(case["model"])
        run = popgrad.simulate(model, d=case["d"], delta=case["delta"], checkpoints=case["checkpoints"], trajectories=case["trajectories"], seed=case["seed"], method=case["method"])
        for name in ("Q", "R", "a"):
            assert np.array_equal(run.observables[name], np.array(case[name])), (case["method"], case["model"]["student"], name)


# ------------------------------------------------------------------------------------------------
# the chain against full-d SGD (two-sample KS tests on every entry of Q, R, a, B)
# ------------------------------------------------------------------------------------------------


def _perturbed_base():
    """A base W0 = 0.9 W* + small moves inside and outside the teacher's span (K = M = 2, T = I)."""
    W = np.eye(2, 4)
    W0 = 0.9 * W + np.array([[0.0, 0.15, 0.3, 0.0], [0.1, 0.0, 0.0, 0.3]])
    return {"gram": (W0 @ W0.T).tolist(), "teacher_overlap": (W0 @ W.T).tolist()}


CASES = {
    # (i) full fine-tuning from Theta = 0 (singular Gamma), W0 a perturbed teacher, output noise, a trained
    "full fine-tuning": dict(model=dict(teacher_activation="erf(z/sqrt(2))", width=2, teacher_width=2, noise=0.3, train_second_layer=True, parametrisation={"kind": "full", "base": _perturbed_base()}), d=40, delta=1.0, checkpoints=[3, 100, 1000]),
    # (ii) LoRA r = 1, trained B, Theta on the sphere and ⟂ W0
    "lora r=1 sphere, perp base, trained B": dict(model=dict(teacher_activation="erf(z/sqrt(2))", width=3, teacher_width=2, constraint="sphere", noise=0.2, parametrisation={"kind": "lora", "rank": 1, "base": {"gram": np.eye(3).tolist(), "teacher_overlap": [[0.8, 0.0], [0.0, 0.8], [0.3, 0.3]]}, "orthogonal_to_base": True, "coefficients": [[0.5], [-0.5], [0.5]], "coefficient_ratio": 2.0}), d=30, delta=1.0, checkpoints=[0, 100, 1000]),
    # (iii) LoRA r = 2, frozen B, Theta from zero (singular Gamma), unconstrained
    "lora r=2 frozen B, zero Theta": dict(model=dict(teacher_activation="erf(z/sqrt(2))", student_activation="tanh", width=3, teacher_width=3, init={"kind": "zero"}, parametrisation={"kind": "lora", "rank": 2, "base": {"gram": (0.8 * np.eye(3)).tolist(), "teacher_overlap": [[0.7, 0.1, 0.0], [0.0, 0.7, 0.0], [0.0, 0.2, 0.7]]}, "coefficients": [[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]], "train_coefficients": False}), d=30, delta=1.0, checkpoints=[2, 100, 1000]),
    # Stiefel r = 2, ⟂ W0, trained B with weight decay
    "lora r=2 stiefel, perp base, weight decay": dict(model=dict(teacher_activation="erf(z/sqrt(2))", width=3, teacher_width=2, constraint="stiefel", weight_decay=0.05, parametrisation={"kind": "lora", "rank": 2, "base": {"gram": np.eye(3).tolist(), "teacher_overlap": [[0.8, 0.0], [0.0, 0.8], [0.3, 0.3]]}, "orthogonal_to_base": True, "coefficients": [[0.5, 0.0], [0.0, 0.5], [0.3, -0.3]]}), d=30, delta=1.0, checkpoints=[0, 100, 1000]),
}


def _entries(run, checkpoint):
    """Every entry of Q's upper triangle, R, a (trained) and B (trained) of each trajectory at a checkpoint."""
    Q, R, a = (run.observables[name][:, checkpoint] for name in ("Q", "R", "a"))
    K = Q.shape[1]
    out = {f"Q{i}{l}": Q[:, i, l] for i in range(K) for l in range(i, K)}
    out |= {f"R{i}{n}": R[:, i, n] for i in range(K) for n in range(R.shape[2])}
    if run.model.train_second_layer:
        out |= {f"a{i}": a[:, i] for i in range(K)}
    if "B" in run.observables:
        B = run.observables["B"][:, checkpoint]
        out |= {f"B{i}{k}": B[:, i, k] for i in range(K) for k in range(B.shape[2])}
    return out


def _ks_family(runs, checkpoints):
    """Two-sample KS p-values of every entry at every checkpoint; deterministic entries must agree."""
    pvalues = {}
    for c, step in enumerate(checkpoints):
        first, second = _entries(runs[0], c), _entries(runs[1], c)
        assert first.keys() == second.keys()
        for name in first:
            scale = max(1.0, float(np.max(np.abs(first[name]))))
            if np.ptp(first[name]) <= 1e-12 * scale and np.ptp(second[name]) <= 1e-12 * scale:
                # deterministic up to rounding (a fixed start, a unit norm, an overlap that Theta ⟂ W0 keeps at its base value)
                assert np.allclose(first[name], second[name], atol=1e-9), (step, name)
                continue
            pvalues[(step, name)] = stats.ks_2samp(first[name], second[name]).pvalue
    return pvalues


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_chain_matches_full_sgd(case, without_eps_g):
    setting = CASES[case]
    model = committee_model(**setting["model"])
    runs = [popgrad.simulate(model, d=setting["d"], delta=setting["delta"], checkpoints=setting["checkpoints"], trajectories=400, seed=seed, method=method) for seed, method in ((11, "chain"), (12, "full"))]
    if model.orthogonal_to_base:  # Theta stays ⟂ W0: V's overlaps with the base are those of W0 alone
        for run in runs:
            assert run.observables["Q"].shape[-1] == model.K
    pvalues = _ks_family(runs, setting["checkpoints"])
    worst = min(pvalues, key=pvalues.get)
    # Bonferroni over the entries and checkpoints: the family-wise level 0.001
    assert pvalues[worst] * len(pvalues) > 1e-3, (worst, pvalues[worst], len(pvalues))


@pytest.mark.slow
def test_full_fine_tuning_is_scratch_started_at_the_base(without_eps_g):
    # B = I frozen, Theta unconstrained from 0, no weight decay: V = W0 + Theta moves exactly as a student learnt
    # from scratch that starts at V = W0 (the gradients in Theta and V agree), so the two chains have one law
    setting = CASES["full fine-tuning"]
    model = committee_model(**setting["model"])
    base = setting["model"]["parametrisation"]["base"]
    scratch = model.replace(parametrisation=None, init=None, Q0=base["gram"], R0=base["teacher_overlap"])
    assert scratch.kind == "scratch" and scratch.init["kind"] == "overlaps"
    runs = [popgrad.simulate(m, d=setting["d"], delta=setting["delta"], checkpoints=setting["checkpoints"], trajectories=400, seed=seed) for seed, m in ((21, model), (22, scratch))]
    pvalues = _ks_family(runs, setting["checkpoints"])
    worst = min(pvalues, key=pvalues.get)
    assert pvalues[worst] * len(pvalues) > 1e-3, (worst, pvalues[worst], len(pvalues))


# ------------------------------------------------------------------------------------------------
# one step of the chain against an independent numpy step in dimension d
# ------------------------------------------------------------------------------------------------


def _numpy_step(W, W0, Theta0, B0, a0, eta, eta_a, eta_b, tau, wd, constraint, orthogonal, samples, rng):
    """One online SGD step of V = W0 + B Theta (erf(z/sqrt 2) teacher, tanh student, loss (y - f)^2, trained
    a and B) for each of ``samples`` independent samples: the changes of (Q upper triangle, R, a, B)."""
    d = W.shape[1]
    K, r = B0.shape
    X = rng.standard_normal((samples, d))
    eps = rng.standard_normal(samples)
    V0 = W0 + B0 @ Theta0
    lam, nu = X @ V0.T, X @ W.T
    y = special.erf(nu / np.sqrt(2)).sum(axis=1) + tau * eps
    residual = y - np.tanh(lam) @ a0
    g = -2.0 * residual[:, None] * a0 * (1 - np.tanh(lam) ** 2)  # the gradient in v_i: g_i x
    h = -2.0 * residual[:, None] * np.tanh(lam)
    if orthogonal:
        basis = np.linalg.svd(W0, full_matrices=False)[2]
        X = X - (X @ basis.T) @ basis
    G = (g @ B0)[:, :, None] * X[:, None, :]  # the gradient in Theta: (B^T g) x^T, per sample (r x d)
    if constraint == "none":
        Theta = (1 - eta * wd) * Theta0 - eta * G
    elif constraint == "sphere":
        Theta = Theta0 - eta * (G - np.sum(G * Theta0, axis=2, keepdims=True) * Theta0)
        Theta /= np.linalg.norm(Theta, axis=2, keepdims=True)
    else:
        H = np.einsum("kd,sld->skl", Theta0, G)
        Theta = Theta0 - eta * (G - np.einsum("skl,ld->skd", 0.5 * (H + np.swapaxes(H, 1, 2)), Theta0))
        S = np.einsum("skd,sld->skl", Theta, Theta)
        values, vectors = np.linalg.eigh(S)
        Theta = np.einsum("skl,sl,sml,smd->skd", vectors, 1 / np.sqrt(values), vectors, Theta)
    U = np.einsum("kd,sd->sk", Theta0, X)  # u = Theta x (with x projected off W0: the same, Theta0 ⟂ W0)
    B = (1 - eta_b * wd) * B0 - eta_b * g[:, :, None] * U[:, None, :]
    a = a0 - eta_a * h
    V = W0 + np.einsum("skr,srd->skd", B, Theta)
    Q = np.einsum("skd,sld->skl", V, V) - V0 @ V0.T
    R = np.einsum("skd,md->skm", V, W) - V0 @ W.T
    upper = np.triu_indices(K)
    return np.hstack([Q[:, upper[0], upper[1]], R.reshape(samples, -1), a - a0, (B - B0).reshape(samples, -1)])


def _moments_agree(first, second):
    """Means and covariances of two samples of vectors agree within 4 standard errors, entry by entry."""
    n1, n2 = first.shape[0], second.shape[0]
    difference = first.mean(0) - second.mean(0)
    error = np.sqrt(first.var(0, ddof=1) / n1 + second.var(0, ddof=1) / n2)
    assert np.all(np.abs(difference) <= 4 * error + 1e-12), np.max(np.abs(difference) / (error + 1e-300))
    products = []
    for sample in (first, second):
        centred = sample - sample.mean(0)
        products.append(np.einsum("si,sj->sij", centred, centred).reshape(sample.shape[0], -1))
    difference = products[0].mean(0) - products[1].mean(0)
    error = np.sqrt(products[0].var(0, ddof=1) / n1 + products[1].var(0, ddof=1) / n2)
    assert np.all(np.abs(difference) <= 4 * error + 1e-12), np.max(np.abs(difference) / (error + 1e-300))


@pytest.mark.slow
@pytest.mark.parametrize("constraint, orthogonal", [("none", False), ("stiefel", True)])
def test_one_step_moments_against_numpy(constraint, orthogonal, without_eps_g):
    d, K, M, r, samples = 12, 3, 2, 2, 40000
    rng = np.random.default_rng(7)
    W = rng.standard_normal((M, d)) / np.sqrt(d)
    W[1] += 0.5 * W[0]
    W0 = 0.8 * np.vstack([W, W[0] - W[1]]) + 0.4 * rng.standard_normal((K, d)) / np.sqrt(d)
    Theta0 = rng.standard_normal((r, d)) / np.sqrt(d)
    if orthogonal:
        basis = np.linalg.svd(W0, full_matrices=False)[2]
        Theta0 -= (Theta0 @ basis.T) @ basis
    if constraint == "stiefel":
        Theta0 = np.linalg.qr(Theta0.T)[0].T
    B0 = np.array([[0.6, -0.2], [0.1, 0.5], [-0.3, 0.4]])
    a0 = np.array([1.0, -0.5, 0.8])
    eta, ratio, ratio_b, tau, wd = 0.3, 0.5, 1.5, 0.4, 0.2
    init = {"kind": "explicit", "gram": Theta0 @ Theta0.T, "teacher_overlap": Theta0 @ W.T, "base_overlap": Theta0 @ W0.T}
    if orthogonal:
        init["base_overlap"] = np.zeros((r, K))
    parametrisation = {"kind": "lora", "rank": r, "base": {"vectors": W0}, "coefficients": B0, "coefficient_ratio": ratio_b, "orthogonal_to_base": orthogonal}
    model = committee_model("erf(z/sqrt(2))", "tanh", teacher_vectors=W, student_second_layer=a0, noise=tau, train_second_layer=True, second_layer_ratio=ratio, constraint=constraint, convention="popgrad", weight_decay=wd, init=init, parametrisation=parametrisation)
    run = popgrad.simulate(model, d=d, eta=eta, checkpoints=[0, 1], trajectories=samples, seed=2)
    Q, R, a, B = (run.observables[name] for name in ("Q", "R", "a", "B"))
    V0 = W0 + B0 @ Theta0
    assert np.allclose(Q[:, 0], V0 @ V0.T) and np.allclose(R[:, 0], V0 @ W.T)
    upper = np.triu_indices(K)
    chain = np.hstack([(Q[:, 1] - Q[:, 0])[:, upper[0], upper[1]], (R[:, 1] - R[:, 0]).reshape(samples, -1), a[:, 1] - a[:, 0], (B[:, 1] - B[:, 0]).reshape(samples, -1)])
    reference = _numpy_step(W, W0, Theta0, B0, a0, eta, eta * ratio, eta * ratio_b, tau, wd, constraint, orthogonal, samples, rng)
    _moments_agree(chain, reference)
    # the full-d route from the same explicit start
    full = popgrad.simulate(model, d=d, eta=eta, checkpoints=[0, 1], trajectories=samples, seed=3, method="full")
    assert np.allclose(full.observables["Q"][:, 0], V0 @ V0.T) and np.allclose(full.observables["R"][:, 0], V0 @ W.T)


# ------------------------------------------------------------------------------------------------
# cross-family: the fine-tuning family's rank-1 model (MATH.md §4b) is a LoRA member
# ------------------------------------------------------------------------------------------------


def _overlap_m(problem, R):
    """m = <u_hat, u> from the committee's R = D G D* + xi^2 (D c_hat)(D* c)^T m (entry 0, 0)."""
    teacher = problem.teacher_scales / problem.teacher_norms
    student = problem.student_scales / problem.student_norms
    base = student[0] * problem.gram[0, 0] * teacher[0]
    return (R[..., 0, 0] - base) / (problem.xi**2 * student[0] * problem.c_hat[0] * problem.c[0] * teacher[0])


@pytest.mark.slow
@pytest.mark.parametrize("convention", ["normalized", "raw", "common"])
def test_lora_member_has_the_fine_tuning_law(convention, without_eps_g):
    problem = popgrad.orthonormal_problem("relu", k=3, xi=1.5, seed=4, convention=convention)
    model = finetuning_committee_model(problem)
    d, delta, checkpoints = 40, 0.5, [0, 100, 300, 1000]
    reference = popgrad.simulate(problem, d=d, delta=delta, checkpoints=checkpoints, trajectories=400, seed=31)
    member = popgrad.simulate(model, d=d, delta=delta, checkpoints=checkpoints, trajectories=400, seed=32)
    m = _overlap_m(problem, member.observables["R"])
    # all of R follows from m: R = D G D* + xi^2 (D c_hat)(D* c)^T m
    teacher = problem.teacher_scales / problem.teacher_norms
    student = problem.student_scales / problem.student_norms
    expected = (student[:, None] * problem.gram * teacher[None, :]) + problem.xi**2 * np.outer(student * problem.c_hat, teacher * problem.c)[None, None] * m[..., None, None]
    assert np.allclose(member.observables["R"], expected, atol=1e-9)
    pvalues = []
    for c in range(len(checkpoints)):
        ours, theirs = m[:, c], reference.observables["m"][:, c]
        if np.ptp(ours) < 1e-9 and np.ptp(theirs) < 1e-9:  # both converged to rounding (m = ±1)
            assert np.allclose(ours, theirs, atol=1e-8)
            continue
        pvalues.append(stats.ks_2samp(ours, theirs).pvalue)
        assert abs(np.mean(ours) - np.mean(theirs)) < 4 * np.sqrt(np.var(ours) / 400 + np.var(theirs) / 400)
    assert len(pvalues) >= 3 and min(pvalues) * len(pvalues) > 1e-3, pvalues


# ------------------------------------------------------------------------------------------------
# predictions: the d -> infinity ODE serves the members that move as a student learnt from scratch
# ------------------------------------------------------------------------------------------------


def test_the_ode_serves_only_the_members_that_move_as_scratch():
    from popgrad.dynamics.protocol import predictors_for

    lora = committee_model(**CASES["lora r=2 frozen B, zero Theta"]["model"])
    reasons = {name: reason for name, (_, reason) in predictors_for(lora).items()}
    assert "lora student" in reasons["ode"] and "lora student" in reasons["gradient_flow"]
    full = committee_model(**(CASES["full fine-tuning"]["model"] | {"noise": 0.0, "train_second_layer": False}))
    assert predictors_for(full)["ode"][1] is None


@pytest.mark.slow
def test_full_fine_tuning_follows_the_scratch_ode_from_its_base():
    # the ODE prediction of a full fine-tuning run (B = I frozen) starts at the run's own overlaps (V = W0 at
    # step 0) and is judged like any other: early in the run at d = 500 the chain's mean is on it
    from popgrad.analysis.comparison import compare

    model = committee_model(**(CASES["full fine-tuning"]["model"] | {"noise": 0.0, "train_second_layer": False}))
    result = compare(model, 500, 1.0 / 500, [0, 500, 2000, 5000], trajectories=64, seed=3, which=["ode"])
    assert result.conclusions["ode"]["R"] == "consistent", result.verdict
