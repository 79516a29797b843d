"""popgrad benchmarks: each figure next to a plain reference implementation measured in the same run
(batched numpy, and torch when installed, for SGD; scipy for quadrature and ODEs); public names only.

    python benchmarks/bench.py            # everything (includes a cold `popgrad run`, about a minute)
    python benchmarks/bench.py --quick    # skip the cold/warm `popgrad run` timings
    python benchmarks/bench.py --only general simulation   # some sections

Simulation kernels are timed on one core (numba.set_num_threads(1)) after compilation.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from scipy import integrate, special

import popgrad
from popgrad import (
    DriftODE,
    activation,
    drift_interpolant,
    embedding,
    exact_hermite_coefficients,
    hermite_coefficients,
    noise_estimate,
    orthonormal_problem,
    population_drift,
    random_features_problem,
    simulate,
    solve,
    verify_hermite,
)

ROWS: list = []


def timed(function, repeat: int = 1) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def report(what: str, value: str, reference: str = "", ratio: str = "", target: str = "") -> None:
    ROWS.append((what, value, reference, ratio, target))
    print(f"{what:52s} {value:>16s} {reference:>22s} {ratio:>10s} {target:>12s}", flush=True)


# ------------------------------------------------------------------------------------------------


def bench_hermite() -> None:
    seconds = timed(lambda: exact_hermite_coefficients("erf", 16, scale=1.3))  # a scale not computed before
    report("exact mu_p(erf), p <= 16 (sympy, Stein route)", f"{seconds:.3f} s", "", "", "<= 5 s")
    for name in ("relu", "tanh"):
        seconds = timed(lambda: verify_hermite(name, 30, 1, digits=50))
        report(f"mpmath verification {name}, p <= 30, 50 digits", f"{seconds:.2f} s")
    sigma = activation("tanh")

    def naive():
        phi = lambda g: math.exp(-0.5 * g * g) / math.sqrt(2 * math.pi)  # noqa: E731
        for p in range(21):
            integrate.quad(lambda g: math.tanh(g) * special.eval_hermitenorm(p, g) / math.sqrt(math.factorial(p)) * phi(g), -38, 38, limit=400, epsabs=1e-15)

    hermite_coefficients(sigma, 20)
    fast = timed(lambda: hermite_coefficients(sigma, 20), repeat=5)
    reference = timed(naive)
    report("float64 mu_p(tanh), p <= 20 (composite Gauss-Legendre)", f"{fast * 1e3:.2f} ms", f"quad per p: {reference * 1e3:.0f} ms", f"{reference / fast:.0f}x")


def _numpy_drift(problem, m: float) -> float:
    """Plain reference: MATH.md's closed form with numpy, one m at a time (relu, quantized, normalized)."""
    r2 = 1 + problem.xi**2 / problem.k
    rho = np.clip((problem.gram + problem.xi**2 * np.outer(problem.c, problem.c_hat) * m) / r2, -1, 1)
    kappa = (np.pi - np.arccos(rho)) / (2 * np.pi)
    return float(2 * problem.xi**2 / r2 * np.sum(np.outer(problem.lam * problem.c, problem.lam * problem.c_hat) * kappa))


def bench_population() -> None:
    problem = orthonormal_problem("relu", 50, 1.0, seed=0)
    grid = np.random.default_rng(0).uniform(-1, 1, 20000)
    population_drift(problem, grid[:10])
    direct = timed(lambda: population_drift(problem, grid), repeat=3) / grid.size
    scalar = timed(lambda: [population_drift(problem, m) for m in grid[:2000]], repeat=3) / 2000
    reference = timed(lambda: [_numpy_drift(problem, m) for m in grid[:2000]], repeat=3) / 2000
    assert abs(_numpy_drift(problem, 0.3) - float(population_drift(problem, 0.3))) < 1e-12
    build = timed(lambda: drift_interpolant(problem, tolerance=2e-13))  # not built before
    fast = drift_interpolant(problem)
    fast(grid[:10])
    interpolated = timed(lambda: fast(grid), repeat=5) / grid.size
    report("h(m), k = 50 relu: direct, vectorised over m", f"{1 / direct / 1e3:.1f} k/s", f"numpy per m: {1 / reference / 1e3:.1f} k/s", f"{reference / direct:.0f}x")
    report("h(m), k = 50 relu: direct, one m per call", f"{1 / scalar / 1e3:.1f} k/s", f"numpy per m: {1 / reference / 1e3:.1f} k/s", f"{reference / scalar:.1f}x")
    report("h(m), k = 50 relu: Chebyshev fast evaluator", f"{1 / interpolated / 1e6:.1f} M/s", f"numpy per m: {1 / reference / 1e3:.1f} k/s", f"{reference / interpolated:.0f}x")
    report("  fast evaluator: panels / measured max error", f"{fast.interpolant.panels} / {fast.measured_error:.1e}", f"relative {fast.measured_error / fast.scale:.1e}", "", f"build {build:.2f} s")
    generic = random_features_problem("relu", 50, 1.0, d=2000, seed=0, c_distribution="sphere")
    population_drift(generic, grid[:10])
    generic_direct = timed(lambda: population_drift(generic, grid[:2000]), repeat=3) / 2000
    report("h(m), k = 50 relu, random W, sphere c (no merging)", f"{1 / generic_direct / 1e3:.1f} k/s", "", "", "")
    smooth = drift_interpolant(orthonormal_problem("tanh", 50, 1.0, seed=0))
    report("  tanh k = 50: panels / measured max error", f"{smooth.interpolant.panels} / {smooth.measured_error:.1e}", f"relative {smooth.measured_error / smooth.scale:.1e}")


def _batched_sgd(problem, W, u, basis, eta, steps, trajectories, seed, xp=np) -> float:
    """Plain reference a competent user would write: the paper's update vectorised over trajectories
    (relu, normalized), in numpy float64 (or torch, ``xp=torch``). Returns the mean final overlap."""
    if xp is np:
        generator = np.random.default_rng(seed)
        normal = lambda *shape: generator.standard_normal(shape)  # noqa: E731
        asarray = np.asarray
    else:
        generator = xp.Generator().manual_seed(seed)
        normal = lambda *shape: xp.randn(*shape, generator=generator, dtype=xp.float64)  # noqa: E731
        asarray = lambda a: xp.as_tensor(np.asarray(a), dtype=xp.float64)  # noqa: E731
    d = W.shape[1]
    basis, u = asarray(basis), asarray(u)
    lam, c_hat = asarray(problem.lam), asarray(problem.c_hat)
    r_s = asarray(problem.student_norms)
    teacher = asarray((W + problem.xi * np.outer(problem.c, np.asarray(u))) / problem.teacher_norms[:, None])
    base = asarray(W) / r_s[:, None]
    u_hat = normal(trajectories, d)
    u_hat = u_hat - (u_hat @ basis.T) @ basis
    u_hat = u_hat / (u_hat * u_hat).sum(1, keepdims=True) ** 0.5
    weight = lam * problem.xi * c_hat / r_s
    for _ in range(steps):
        x = normal(trajectories, d)
        z = x @ teacher.T
        g_hat = (x * u_hat).sum(1)
        z_hat = x @ base.T + g_hat[:, None] * (problem.xi * c_hat / r_s)
        residual = ((z * (z > 0) - z_hat * (z_hat > 0)) * lam).sum(1)
        A = 2 * residual * ((z_hat > 0) * weight).sum(1)
        projected = x - (x @ basis.T) @ basis
        u_hat = u_hat + eta * A[:, None] * (projected - (projected * u_hat).sum(1, keepdims=True) * u_hat)
        u_hat = u_hat / (u_hat * u_hat).sum(1, keepdims=True) ** 0.5
    return float((u_hat @ u).mean())


def bench_simulation() -> None:
    numba.set_num_threads(1)
    d, k = 1000, 20
    problem = orthonormal_problem("relu", k, 1.0, seed=0)
    eta = 0.05 / d
    geometry = embedding(problem, d, seed=0)
    batch, reference_steps = 64, 300
    numpy_rate = batch * reference_steps / timed(lambda: _batched_sgd(problem, geometry.W, geometry.u, geometry.basis.T, eta, reference_steps, batch, 0))
    references = {"batched numpy": numpy_rate}
    try:
        import torch

        torch.set_num_threads(1)
        references["batched torch"] = batch * reference_steps / timed(lambda: _batched_sgd(problem, geometry.W, geometry.u, geometry.basis.T, eta, reference_steps, batch, 0, xp=torch))
    except ImportError:
        report("  torch reference", "not installed", "", "", "")
    best = max(references, key=references.get)
    reference_text = f"{best}: {references[best] / 1e3:.1f} k/s"
    for method in ("full", "fast"):
        simulate(problem, d, eta, [0, 10], trajectories=2, method=method)
        steps, trajectories = 20000, 4
        set_up = timed(lambda: simulate(problem, d, eta, [0], trajectories=trajectories, method=method), repeat=3)
        seconds = timed(lambda: simulate(problem, d, eta, [0, steps], trajectories=trajectories, method=method)) - set_up
        rate = steps * trajectories / seconds
        label = "general W" if method == "full" else "rotated (span W = first k coords)"
        report(f"full-d SGD d = 1000, k = 20, one core, {label}", f"{rate / 1e3:.0f} k steps/s", reference_text, f"{rate / references[best]:.1f}x", ">= 60 k/s")
        report("  its set-up (geometry, initial directions; excluded above)", f"{set_up * 1e3:.1f} ms")
    floor = _random_floor(k, d)
    for name, chain_problem in (("orthonormal", problem), ("random features", random_features_problem("relu", k, 1.0, d=d, seed=0)), ("orthonormal, k = 50", orthonormal_problem("relu", 50, 1.0, seed=0))):
        simulate(chain_problem, d, eta, [0, 10], trajectories=2, method="chain")
        steps, trajectories = 200000, 20
        seconds = timed(lambda: simulate(chain_problem, d, eta, [0, steps], trajectories=trajectories, method="chain"))
        rate = steps * trajectories / seconds
        fraction = f"{rate / floor:.2f} of floor" if "50" not in name else ""
        target = {"orthonormal": ">= 10 M/s", "orthonormal, k = 50": ">= 4 M/s"}.get(name, "")  # the targets
        report(f"overlap chain, one core, {name}", f"{rate / 1e6:.2f} M steps/s", reference_text + " (full d)", f"{rate / references[best]:.0f}x", ", ".join(part for part in (target, fraction) if part))
    report("  random-number floor, k = 20 (22 normals + chi^2 per step)", f"{floor / 1e6:.2f} M steps/s", "", "", "")
    noisy = orthonormal_problem("relu", 8, 1.0, seed=0)
    noise_estimate(noisy, d, samples=6400)
    seconds = timed(lambda: noise_estimate(noisy, d, samples=200_000), repeat=3)
    report("noise estimate (k = 8, 33 nodes), one core", f"{200_000 * 33 / seconds / 1e6:.1f} M grad/s", "", "", ">= 20 M/s")
    big = 100_000
    seconds = timed(lambda: simulate(problem, big, 0.05 / big, [0], trajectories=1, method="full"), repeat=5)
    report("full-d SGD set-up, d = 1e5, k = 20 (thin basis)", f"{seconds * 1e3:.0f} ms", "", "", "< 50 ms")
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def bench_general() -> None:
    """The general model (popgrad.models.finetuning.general): the state chain and full-d SGD."""
    from popgrad.models.finetuning.general import general_model, simulate_general

    numba.set_num_threads(1)
    d = 1000
    joint_free = dict(train_c_hat=True, unconstrained=True)
    rates = {}
    for name, k, options, steps, target in (
        ("rank 1, joint + free u_hat, k = 20", 20, joint_free, 200_000, ">= 5 M/s"),
        ("rank 1, joint + free u_hat, k = 50", 50, joint_free, 100_000, ">= 2 M/s"),
        ("rank 2, joint + free u_hat, k = 20", 20, dict(joint_free, rank=2), 100_000, ">= 2 M/s"),
    ):
        model = general_model(orthonormal_problem("relu", k, 1.0, seed=0), **options)
        simulate_general(model, d, delta=0.05, checkpoints=[0, 10], trajectories=2)
        trajectories = 10
        seconds = timed(lambda: simulate_general(model, d, delta=0.05, checkpoints=[0, steps], trajectories=trajectories), repeat=3)
        rates[name] = steps * trajectories / seconds
        if k == 20 and "rank 1" in name:
            floor = _general_floor(model, d)
            report(f"general chain, one core, {name}", f"{rates[name] / 1e6:.2f} M steps/s", f"floor: {floor / 1e6:.2f} M/s", f"{rates[name] / floor:.2f} of floor", f"{target}, >= 0.4")
        else:
            report(f"general chain, one core, {name}", f"{rates[name] / 1e6:.2f} M steps/s", "", "", target)
    model = general_model(orthonormal_problem("relu", 20, 1.0, seed=0), **joint_free)
    simulate_general(model, d, delta=0.05, checkpoints=[0, 10], trajectories=2, method="full")
    steps, trajectories = 25000, 4
    set_up = timed(lambda: simulate_general(model, d, delta=0.05, checkpoints=[0], trajectories=trajectories, method="full"), repeat=3)
    seconds = timed(lambda: simulate_general(model, d, delta=0.05, checkpoints=[0, steps], trajectories=trajectories, method="full")) - set_up
    rate = steps * trajectories / seconds
    chain = rates["rank 1, joint + free u_hat, k = 20"]
    report("general full-d SGD, d = 1000, k = 20, joint + free", f"{rate / 1e3:.0f} k steps/s", f"chain: {chain / 1e6:.2f} M/s", f"{chain / rate:.0f}x", ">= 60 k/s")
    # the paper's Fig 6b length: He_3, d = 1000, k = 20, xi = 25, joint, free u_hat, 2.5e7 steps, one trajectory;
    # W orthonormal, and W with random unit rows (the paper's)
    for label, problem in (("orthonormal W", orthonormal_problem("He_3", 20, 25.0, seed=0)), ("random unit rows", random_features_problem("He_3", 20, 25.0, d=d, seed=0))):
        model = general_model(problem, **joint_free)
        simulate_general(model, d, delta=0.05, checkpoints=[0, 10], trajectories=1)
        seconds = timed(lambda: simulate_general(model, d, delta=0.05, checkpoints=[0, 25_000_000], trajectories=1))
        report(f"Fig 6b length: He_3, k = 20, xi = 25, 2.5e7 steps, {label}", f"{seconds:.1f} s", "", "", "<= 10 s")
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def _general_floor(model, d: int) -> float:
    """Steps per second of what one step of the general state chain cannot avoid, timed as such a loop on
    one core: the draws (p + r normals, one chi-square, with the stream state in registers as the kernel
    holds it) and the small matvecs of the pre-activations (W x = L z unless W = I, U^T x = UF z,
    U_hat^T x = Y^T z)."""
    from numba import njit

    from popgrad.numerics import random_streams as streams

    @njit(nogil=True, fastmath={"reassoc", "contract", "nsz"})
    def draws(state, steps, L, UF, Y, identity, dof):
        k, rank_w = L.shape
        rs, p = UF.shape
        r = Y.shape[1]
        z = np.empty(p + r)
        a = np.empty(k)
        total = 0.0
        s0, s1, s2, s3 = streams.load_words(state)
        for _ in range(steps):
            chi, s0, s1, s2, s3 = streams.fill_normal_chi_square(z, dof, s0, s1, s2, s3)
            if not identity:
                for i in range(k):
                    value = 0.0
                    for l in range(rank_w):
                        value += L[i, l] * z[l]
                    a[i] = value
                total += a[0]
            for l in range(rs):
                value = 0.0
                for t in range(p):
                    value += UF[l, t] * z[t]
                total += value
            for l in range(r):
                value = z[p + l]
                for t in range(p):
                    value += Y[t, l] * z[t]
                total += value
            total += chi
        streams.store_words(state, s0, s1, s2, s3)
        return total

    k, rank_w = model.L.shape
    identity = bool(rank_w == k and np.array_equal(model.L, np.eye(k)))
    Y = np.random.default_rng(0).standard_normal((model.p, model.rank)) / math.sqrt(model.p)
    dof = float(d - model.p - model.rank)
    state = np.empty(4, dtype=np.uint64)
    streams.seed_stream(np.uint64(1), streams.DIAGNOSTICS, 0, state)
    draws(state, 10, model.L, model.UF, Y, identity, dof)
    steps = 2_000_000
    return steps / timed(lambda: draws(state, steps, model.L, model.UF, Y, identity, dof), repeat=3)


def bench_sweeps() -> None:
    """popgrad sweep on a LocalCluster: overhead per cell (scheduling + store) and the speed-up from 1 to 2
    workers on a CPU-bound grid (numba at one thread per cell in both, so workers are what scales)."""
    from popgrad.sweeps.executor import run_sweep
    from popgrad.sweeps.spec import sweep_spec_from_dict
    from popgrad.sweeps.store import open_store

    def sweep(grid: dict, run: dict, workers: int) -> float:
        spec = sweep_spec_from_dict({"problem": {"activation": "relu", "k": 8}, "run": {"kind": "hitting_time", "eps": 0.5, "delta": 0.05, "trajectories": 8, "seed": 1} | run, "grid": grid})
        with tempfile.TemporaryDirectory() as folder:
            return run_sweep(spec, open_store(Path(folder) / "store", spec), workers=workers, numba_threads=1)["seconds"]

    tiny = {"horizon": 1}
    sweep({"d": [99]}, tiny, 2)  # warm: the workers' imports and numba caches
    one = sweep({"d": [100]}, tiny, 2)
    many = sweep({"d": list(range(100, 141))}, tiny, 2)
    report("sweep overhead per cell (41 tiny cells, 2 workers)", f"{(many - one) / 40 * 1e3:.1f} ms", f"cluster start + 1 cell: {one:.1f} s", "", "< 50 ms")
    heavy = {"kind": "simulate", "steps": 2_000_000, "trajectories": 16}  # about 2 s a cell on one core
    grid = {"d": [2000, 2001, 2002, 2003, 2004, 2005, 2006, 2007]}
    serial = sweep(grid, heavy, 1) - one
    parallel = sweep(grid, heavy, 2) - one
    report("sweep speed-up, 1 -> 2 workers (8 CPU-bound cells)", f"{serial / parallel:.2f}x", f"{serial:.1f} s -> {parallel:.1f} s", "", "near 2x")


def _random_floor(k: int, d: int) -> float:
    """Steps per second of the chain's random numbers alone (k + 2 normals and one chi-square)."""
    from numba import njit

    from popgrad.numerics import random_streams as streams

    @njit(nogil=True)
    def draws(state, steps, k, dof):
        # the chain's own draw for one step, with the state in registers as the kernel holds it
        z = np.empty(k + 2)
        total = 0.0
        s0, s1, s2, s3 = streams.load_words(state)
        for _ in range(steps):
            chi, s0, s1, s2, s3 = streams.fill_normal_chi_square(z, dof, s0, s1, s2, s3)
            total += chi + z[0]
        streams.store_words(state, s0, s1, s2, s3)
        return total

    state = np.empty(4, dtype=np.uint64)
    streams.seed_stream(np.uint64(1), streams.DIAGNOSTICS, 0, state)
    draws(state, 10, k, d - k - 2.0)
    steps = 2_000_000
    return steps / timed(lambda: draws(state, steps, k, d - k - 2.0), repeat=3)


def bench_ode() -> None:
    problem = orthonormal_problem("relu", 50, 1.0, seed=0)
    fast = drift_interpolant(problem)
    target = 0.999 * np.sign(float(population_drift(problem, 0.0)))
    ode = DriftODE(fast.interpolant, 1.0)
    solve(ode, 0.0, [1e6], target=target, stop_at_event=True)
    ours = timed(lambda: solve(ode, 0.0, [1e6], target=target, stop_at_event=True), repeat=20)
    event = lambda t, y: y[0] - target  # noqa: E731
    event.terminal = True
    h = fast.interpolant  # the same interpolated h for the reference
    reference = timed(lambda: integrate.solve_ivp(lambda t, y: h(np.clip(y, -1, 1)) * (1 - y**2), (0, 1e6), [0.0], method="LSODA", rtol=1e-10, atol=1e-12, events=event), repeat=3)
    report("gradient flow to m = 0.999, k = 50 relu (dopri5)", f"{ours * 1e3:.3f} ms", f"LSODA, same h: {reference * 1e3:.1f} ms", f"{reference / ours:.0f}x", "<= 2 ms")


def bench_run() -> None:
    package = Path(popgrad.__file__).parent
    for cache in list(package.rglob("*.nbi")) + list(package.rglob("*.nbc")):
        cache.unlink()
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "popgrad", "run", "--quiet", "--out", folder]
        cold = timed(lambda: subprocess.run(command, check=True, capture_output=True))
        warm = [timed(lambda: subprocess.run(command, check=True, capture_output=True)) for _ in range(3)]
    report("`popgrad run` wall time (defaults), cold numba cache", f"{cold:.1f} s", "", "", "<= 25 s")
    report("`popgrad run` wall time (defaults), warm: best of 3", f"{min(warm):.1f} s", f"all three: {', '.join(f'{w:.1f}' for w in warm)} s", "", "<= 8 s")


def _numpy_gd_step(W1, W2, Y, A1, B1, A2, B2, lr):
    """What a competent user writes: form M_2, M_1 and E, then the four gradients (numpy, one repetition)."""
    M2 = W2 + B2 @ A2
    M1 = W1 + B1 @ A1
    E = Y - M2 @ M1
    GM2 = -E @ M1.T
    GM1 = -M2.T @ E
    return A1 - lr * (B1.T @ GM1), B1 - lr * (GM1 @ A1.T), A2 - lr * (B2.T @ GM2), B2 - lr * (GM2 @ A2.T)


def bench_matrix_factorization() -> None:
    from popgrad import mf_gradient_descent, mf_initial_states, paper_mf_problem

    problem = paper_mf_problem()
    numba.set_num_threads(1)
    mf_gradient_descent(problem, "small", 1e-3, 1, steps=10, records=1)
    steps = 20_000
    seconds = timed(lambda: mf_gradient_descent(problem, "small", 1e-3, 1, steps=steps, records=1))
    state = mf_initial_states(problem, "small", 1e-3, 1)
    A1, B1, A2, B2 = state.A1[0], state.B1[0], state.A2[0], state.B2[0]

    def plain():
        a1, b1, a2, b2 = A1, B1, A2, B2
        for _ in range(5_000):
            a1, b1, a2, b2 = _numpy_gd_step(problem.W1, problem.W2, problem.Y_ft, a1, b1, a2, b2, 1e-4)

    reference = timed(plain) / 5_000
    ours = seconds / steps
    report("LoRA MF GD step, Fig 1 setting (m=n=10, h=100, r=4), 1 core", f"{ours * 1e6:.1f} us", f"numpy loop: {reference * 1e6:.1f} us", f"{reference / ours:.1f}x", "")
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    begin = time.perf_counter()
    for index, (init, alpha) in enumerate((i, a) for i in ("small", "spectral") for a in (1e-3, 1e-4, 1e-5)):
        mf_gradient_descent(problem, init, alpha, 30, steps=50_000, records=250, seed=index)
    whole = time.perf_counter() - begin
    report("Xu et al. Figure 1: 6 x 30 runs x 5e4 GD steps, all cores", f"{whole:.1f} s", f"numpy loop (est.): {6 * 30 * 50_000 * reference:.0f} s", f"{6 * 30 * 50_000 * reference / whole:.1f}x", "< 120 s")


def _numpy_ntk_objective(x, G, y, lam, m, n, r):
    """The squared-loss LoRA objective and gradient as a competent numpy user writes it."""
    B, A = x[: m * r].reshape(m, r), x[m * r :].reshape(r, n)
    residual = np.einsum("jmn,mn->j", G, B @ A) - y
    N = y.size
    S = np.tensordot(residual / N, G, axes=1)
    value = residual @ residual / (2 * N) + lam / 2 * (np.sum(A * A) + np.sum(B * B))
    return value, np.concatenate([(S @ A.T + lam * B).ravel(), (B.T @ S + lam * A).ravel()])


def bench_ntk() -> None:
    from scipy.optimize import minimize

    from popgrad import gaussian_ntk_problem, ntk_gradient_descent, ntk_initial_points, ntk_lbfgs

    problem = gaussian_ntk_problem(8, 8, data=6, seed=0)
    m, n = problem.shape
    G, y, lam = problem.measurements, problem.targets, problem.weight_decay
    for rank in (1, 4):
        numba.set_num_threads(1)
        ntk_lbfgs(problem, rank, starts=2)
        starts = 400
        begin = time.perf_counter()
        runs = ntk_lbfgs(problem, rank, starts=starts, seed=1)
        ours = starts / (time.perf_counter() - begin)
        # the floor: objective-and-gradient evaluations alone, timed as gradient-descent steps (one evaluation each)
        ntk_gradient_descent(problem, rank, starts=1, steps=10, records=1)
        gd = ntk_gradient_descent(problem, rank, starts=1, steps=200_000, records=1)
        floor = runs.evaluations.sum() * gd.seconds / 200_000 / (starts / ours)
        B, A = ntk_initial_points(problem, rank, starts=40, seed=1)

        def plain():
            for j in range(40):
                minimize(_numpy_ntk_objective, np.concatenate([B[j].ravel(), A[j].ravel()]), args=(G, y, lam, m, n, rank), jac=True, method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 20_000})

        reference = 40 / timed(plain)
        report(f"NTK landscape 8x8, KN=6, r={rank}: L-BFGS starts/s, 1 core", f"{ours:.0f}/s", f"scipy L-BFGS loop: {reference:.0f}/s", f"{ours / reference:.0f}x", "")
        report(f"  fraction of the evaluation floor ({runs.evaluations.mean():.0f} evals/start)", f"{floor:.0%}", "", "", "")
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        begin = time.perf_counter()
        ntk_lbfgs(problem, rank, starts=starts, seed=1)
        report(f"NTK landscape 8x8, KN=6, r={rank}: L-BFGS starts/s, all cores", f"{starts / (time.perf_counter() - begin):.0f}/s", "", "", "")


#: the benchmark sections, in the order they run (``--only`` picks some)
SECTIONS = {"hermite": bench_hermite, "population": bench_population, "ode": bench_ode, "simulation": bench_simulation, "general": bench_general, "sweeps": bench_sweeps, "matrix_factorization": bench_matrix_factorization, "ntk": bench_ntk, "run": bench_run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the cold/warm `popgrad run` timings")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), metavar="SECTION", help=f"run only these sections ({', '.join(SECTIONS)})")
    args = parser.parse_args()
    print(f"popgrad {popgrad.__version__}, numba {numba.__version__}, numpy {np.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"{'benchmark':52s} {'popgrad':>16s} {'reference':>22s} {'ratio':>10s} {'target':>12s}")
    for name, section in SECTIONS.items():
        if args.only is not None and name not in args.only:
            continue
        if name == "run" and args.quick:
            continue
        section()


if __name__ == "__main__":
    main()
