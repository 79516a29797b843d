"""Full-d SGD of the general model (popgrad.models.finetuning.sgd): trajectories advance in blocks, so check
that a trajectory's numbers depend on nothing but its own stream, and that the kernel's closed-form step is
the explicit one in a geometry where W, its basis and U are dense."""

import numba
import numpy as np
import pytest

import popgrad
from popgrad.dynamics.engine import simulate
from popgrad.models.finetuning.initial import initial_frames as _initial_frames
from popgrad.models.finetuning.model import general_model
from popgrad.models.finetuning.sgd import BLOCK, general_sgd_stepper
from popgrad.numerics import random_streams as streams

#: problem, switches, and the hit level and horizon at which some of the 13 trajectories hit and some do not
SWITCHES = {
    "joint, free": (popgrad.random_features_problem("relu", 6, 1.0, d=50, seed=1, c_distribution="sphere"), dict(train_c_hat=True, unconstrained=True), 0.4, 400),
    "frozen, constrained": (popgrad.orthonormal_problem("relu", 5, 1.0, seed=0), dict(), 0.9, 100),
    "rank 2, joint, free": (popgrad.orthonormal_problem("tanh", 3, 1.0, seed=0), dict(rank=2, unconstrained=True, train_c_hat=True), 0.4, 100),
}


@pytest.mark.parametrize("method", ["fast", "full"])
@pytest.mark.parametrize("name", SWITCHES)
def test_a_trajectory_does_not_depend_on_threads_blocks_or_the_split_into_calls(name, method):
    # 13 trajectories: blocks of 8 + 5 on one thread, 6 + 7 on two; trajectories stop at their hits, so the
    # groups of four that share W's tiles change along the way
    problem, options, hit, horizon = SWITCHES[name]
    model = general_model(problem, seed=1, **options)
    runs = {}
    for threads, trajectories, first, checkpoints in ((1, 13, 0, [0, horizon]), (2, 13, 0, [0, horizon]), (1, 5, 0, [0, horizon]), (2, 13, 0, [0, 7, horizon // 4, horizon]), (1, 8, 5, [0, 33, horizon])):
        numba.set_num_threads(threads)
        try:
            run = simulate(model, 50, delta=0.6, checkpoints=checkpoints, trajectories=trajectories, first_trajectory=first, method=method, seed=4, hit=hit, stop_when_hit=True, fast_path=False)
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        runs[threads, trajectories, first, len(checkpoints)] = run
    reference = runs[1, 13, 0, 2]
    assert 0 < np.sum(reference.hitting_steps >= 0) < 13  # some stop early, some run on
    for key, run in runs.items():
        rows = slice(key[2], key[2] + key[1])
        for mine, theirs in ((run.state["Y"][:, -1], reference.state["Y"][rows, -1]), (run.state["Gamma"][:, -1], reference.state["Gamma"][rows, -1]), (run.state["C_hat"][:, -1], reference.state["C_hat"][rows, -1]), (run.hitting_steps, reference.hitting_steps[rows])):
            assert np.array_equal(mine, theirs), key


def _explicit_step(model, W, QW, U, V, C_hat, x, eta):
    """One SGD step written out: the gradient of (f*(x) - f_hat(x))^2 by central differences of the explicit
    network, projected onto span(W)^perp (constrained) and the tangent space, the polar retraction, and C_hat
    moved by its own gradient at the same state."""
    problem = model.problem
    sigma, lam, xi = problem.activation, np.asarray(problem.lam), problem.xi
    normalized, linear = problem.convention == "normalized", model.student == "linearized"
    w_norms = np.linalg.norm(W, axis=1) if normalized else np.ones(problem.k)

    def output(C, rows, student):
        if student and linear:  # first order in the adapter
            v = xi * C @ rows
            tilted = (v - (np.sum(v * W, axis=1) / w_norms**2)[:, None] * W) / w_norms[:, None] if normalized else v
            pre = W @ x / w_norms
            return model.s_out * np.sum(lam * (sigma(pre) + sigma.prime(pre) * (tilted @ x)))
        vectors = W + xi * C @ rows
        norms = np.linalg.norm(vectors, axis=1) if normalized else np.ones(problem.k)
        return model.s_out * np.sum(lam * sigma(vectors @ x / norms))

    target = output(model.C, U, False)

    def gradient(function, point, h=1e-6):
        result = np.zeros_like(point)
        for index in np.ndindex(point.shape):
            step = np.zeros_like(point)
            step[index] = h
            result[index] = (function(point + step) - function(point - step)) / (2 * h)
        return result

    G = gradient(lambda rows: (target - output(C_hat, rows, True)) ** 2, V)
    G_c = gradient(lambda C: (target - output(C, V, True)) ** 2, C_hat)
    if not model.unconstrained:
        G -= (G @ QW.T) @ QW
    H = V @ G.T
    X = V - eta * (G - 0.5 * (H + H.T) @ V)
    values, vectors = np.linalg.eigh(X @ X.T)
    C_next = C_hat - eta * model.c_hat_lr * G_c if model.train_c_hat else C_hat
    return (vectors / np.sqrt(values)) @ vectors.T @ X, C_next


DENSE = {
    "joint, free, rank 2": (popgrad.random_features_problem("tanh", 3, 1.5, d=14, seed=3, c_distribution="sphere"), dict(rank=2, unconstrained=True, train_c_hat=True, alpha=0.5)),
    "frozen, constrained": (popgrad.random_features_problem("relu", 3, 1.0, d=14, seed=2), dict()),
    "joint, constrained, 1/xi": (popgrad.orthonormal_problem("erf", 3, 2.0, seed=1), dict(train_c_hat=True, c_hat_lr=2.0, output_scale="inverse_xi")),
    "linearized, free, rank 2": (popgrad.random_features_problem("tanh", 3, 1.5, d=14, seed=3, c_distribution="sphere"), dict(student="linearized", unconstrained=True, rank=2, train_c_hat=True)),
    "raw, free": (popgrad.orthonormal_problem("relu", 3, 1.5, seed=1, convention="raw"), dict(unconstrained=True)),
}


@pytest.mark.parametrize("name", DENSE)
def test_in_a_dense_geometry_the_kernel_takes_the_explicit_steps(name):
    # W, its basis and U rotated by a random orthogonal matrix (no zero entries, unlike the rotated method's
    # coordinates); 70 steps, so that the deferred part E R is folded into the d-vectors once (every 64)
    problem, options = DENSE[name]
    model = general_model(problem, seed=1, **options)
    d, eta, seed, steps, trajectories = 14, 0.02, 3, 70, 2
    rotation, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((d, d)))
    rank_w, p = model.L.shape[1], model.p
    W = np.zeros((problem.k, d))
    W[:, :rank_w] = model.L
    U = np.zeros((model.C.shape[1], d))
    U[:, :p] = model.UF
    W, QW, U = W @ rotation.T, np.eye(rank_w, d) @ rotation.T, U @ rotation.T
    V = _initial_frames(model, d, trajectories, seed, 0) @ rotation.T
    code, parameters, ops, args, d_ops, d_args = problem.activation.jit_spec
    reals = np.array([eta, eta * model.c_hat_lr, problem.xi, model.s_out])
    states = np.empty((trajectories, 4), dtype=np.uint64)
    for j in range(trajectories):
        streams.seed_stream(np.uint64(seed), streams.TRAJECTORIES, j, states[j])
    expected = [(V[j].copy(), model.C_hat.copy(), states[j].copy()) for j in range(trajectories)]
    Ch = np.repeat(model.C_hat[None], trajectories, axis=0)
    stepper = general_sgd_stepper(code, problem.convention == "normalized", not model.unconstrained, model.train_c_hat, model.student == "linearized", model.rank, V, W, QW, U, model.C, np.asarray(problem.lam, dtype=float), 1.0 / model.teacher_norms(), np.sum(W**2, axis=1), reals, parameters, ops, args, d_ops, d_args)
    stepper(Ch, states, np.full(trajectories, -1), np.inf, False, 0, steps)
    x = np.empty(d)
    for j, (rows, C_hat, state) in enumerate(expected):
        for _ in range(steps):
            streams.fill_normal(state, x)
            rows, C_hat = _explicit_step(model, W, QW, U, rows, C_hat, x, eta)
        assert np.allclose(V[j], rows, rtol=0, atol=1e-8), (name, np.abs(V[j] - rows).max())
        assert np.allclose(Ch[j], C_hat, rtol=0, atol=1e-8), (name, np.abs(Ch[j] - C_hat).max())
        if not model.unconstrained:
            assert np.abs(V[j] @ QW.T).max() < 1e-13
    assert BLOCK > trajectories  # one partial block, completed by the zero vector
