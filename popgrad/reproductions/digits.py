"""The LoRA theories on a real network and real data (issue 24): an MLP pre-trained on the digits 0-4 of
scikit-learn's 8x8 digits and fine-tuned on the digits 5-9 (relabelled 0-4).

* ``xu-digits`` — Xu et al. (MATH.md §6): the alignment of the LoRA factors' top singular vector with the
  target directions (the top singular pair of the gradient at initialisation, and of the full fine-tuning
  update) and the growth of ||B A|| over the first steps, for small initialisation at several alpha and for
  spectral initialisation, with intervals over seeds; against the linearised flow's predictions.
* ``jlr-digits`` — Jang, Lee & Ryu (MATH.md §7): the linearised (NTK) problem from this network's exact
  Jacobian on N real examples with K = 5 outputs, its landscape and training curves against the rank below and
  above r(r+1)/2 > KN, and the same ranks on the non-linearised network with its linearisation error.
"""

from __future__ import annotations

import math

import numpy as np

from .base import ReproductionReport, print_figure, register

__all__ = ["xu_digits_reproduction", "jlr_digits_reproduction"]

#: the fine-tuning task: the digits the network did not see, relabelled 0..4
FINE_TUNE_CLASSES = (5, 6, 7, 8, 9)
#: tolerance on rho at global limits (as the jlr reproduction)
RHO_TOL = 1e-6


def _bootstrap_slope(x_values, samples, draws: int = 2000, seed: int = 0) -> tuple:
    """Least-squares slope of the per-x means against x, and its 95% bootstrap interval (seeds resampled
    within each x)."""
    x = np.asarray(x_values, dtype=np.float64)
    samples = [np.asarray(s, dtype=np.float64) for s in samples]
    means = np.array([s.mean() for s in samples])
    slope = float(np.polyfit(x, means, 1)[0])
    generator = np.random.default_rng(seed)
    boot = np.empty(draws)
    for d in range(draws):
        resampled = np.array([s[generator.integers(0, s.size, s.size)].mean() for s in samples])
        boot[d] = np.polyfit(x, resampled, 1)[0]
    return slope, (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)))


def _mean_interval(values) -> tuple:
    """Mean and its normal 95% interval (1.96 standard errors)."""
    values = np.asarray(values, dtype=np.float64)
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size) if values.size > 1 else float("nan")
    return float(values.mean()), (float(values.mean() - half), float(values.mean() + half))


def _gradient_check(network, X, y) -> float:
    """Largest error of the network's and the LoRA objective's gradients against central differences,
    relative to the gradient's scale (20 entries of each)."""
    from ..models.digits.lora import lora_objective
    from ..models.digits.network import mlp_gradients, mlp_loss

    generator = np.random.default_rng(11)
    X, y = X[:40], y[:40]
    _, gW, _ = mlp_gradients(network, X, y)
    worst = 0.0
    step = 1e-6
    for layer, grad in enumerate(gW):
        for _ in range(10):
            i, j = (int(generator.integers(0, size)) for size in grad.shape)
            E = np.zeros_like(grad)
            E[i, j] = step
            numeric = (mlp_loss(network, X, y, {layer: E}) - mlp_loss(network, X, y, {layer: -E})) / (2 * step)
            worst = max(worst, abs(numeric - grad[i, j]) / max(np.abs(grad).max(), 1e-12))
    factors = {0: (0.05 * generator.standard_normal((network.weights[0].shape[0], 3)), 0.05 * generator.standard_normal((3, 64))), 1: (0.05 * generator.standard_normal((network.weights[1].shape[0], 3)), 0.05 * generator.standard_normal((3, network.weights[1].shape[1])))}
    _, _, grads = lora_objective(network, X, y, factors, 1.0, 0.01)
    for layer, (B, A) in factors.items():
        for which, array in enumerate((B, A)):
            for _ in range(5):
                i, j = (int(generator.integers(0, size)) for size in array.shape)
                values = []
                for sign in (1, -1):
                    array[i, j] += sign * step
                    values.append(lora_objective(network, X, y, factors, 1.0, 0.01)[0])
                    array[i, j] -= sign * step
                numeric = (values[0] - values[1]) / (2 * step)
                worst = max(worst, abs(numeric - grads[layer][which][i, j]) / max(np.abs(grads[layer][which]).max(), 1e-12))
    return float(worst)


@register("xu-digits", "Xu et al. on a real network: the alignment phase of small-init LoRA (alignment with the gradient's and the full update's top singular pair, ||BA||) against alpha, and spectral init, on an MLP pre-trained on digits 0-4 and fine-tuned on 5-9")
def xu_digits_reproduction(quick: bool = False, workers=None) -> ReproductionReport:
    """Xu et al.'s alignment phase on a pre-trained MLP fine-tuned with LoRA on both layers.

    Parameters
    ----------
    quick : bool
        Three alphas and three seeds, 200 steps (instead of five alphas, six seeds, 600 steps), and a
        shorter full fine-tuning reference.
    workers : int, optional
        Unused.

    Returns
    -------
    ReproductionReport
    """
    from ..models.digits.data import digits_task
    from ..models.digits.lora import full_fine_tune, lora_accuracy, lora_fine_tune, target_direction
    from ..models.digits.network import mlp_accuracy, mlp_gradients, pretrained_network

    alphas = [1e-2, 1e-4, 1e-6] if quick else [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
    seeds = list(range(3 if quick else 6))
    steps = 200 if quick else 600
    full_steps = 300 if quick else 1000
    lr, full_lr, rank, layers, escape_level = 0.05, 0.5, 4, ["W1", "W2"], 0.1
    network = pretrained_network()
    task = digits_task(FINE_TUNE_CLASSES, seed=0)
    X, y = task.X_train, task.y_train
    criteria, notes = [], []
    accuracy = float(network.info["test_accuracy"])
    criteria.append({"name": f"the base model (64-200-5 tanh MLP, digits 0-4, {network.info['task']['train']} training images, 500 Adam steps, seed 0) reaches a test accuracy >= 0.95 on its {network.info['task']['test']} test images", "value": accuracy, "pass": accuracy >= 0.95})
    worst = _gradient_check(network, X, y)
    criteria.append({"name": "backpropagation (network weights) and the LoRA gradients (both layers, weight decay 0.01) against central differences (step 1e-6): largest error relative to the gradient's scale (<= 1e-6)", "value": worst, "pass": worst <= 1e-6})
    before = mlp_accuracy(network, task.X_test, task.y_test)
    deltas, full_losses = full_fine_tune(network, X, y, layers, full_steps, full_lr)
    full_accuracy = mlp_accuracy(network, task.X_test, task.y_test, deltas)
    criteria.append({"name": f"test accuracy on the shifted task (digits 5-9 relabelled): before fine-tuning / after full fine-tuning of W1 and W2 ({full_steps} GD steps, lr {full_lr})", "value": f"{before:.3f} / {full_accuracy:.3f}", "kind": "reported"})
    _, gW, _ = mlp_gradients(network, X, y)
    singular = {name: np.linalg.svd(-gW[l], compute_uv=False) for l, name in enumerate(network.layer_names)}
    s1, s2 = float(singular["W1"][0]), float(singular["W1"][1])
    directions = {}
    for l, name in enumerate(network.layer_names):
        directions[(name, "gradient")] = -gW[l]
        directions[(name, "full")] = deltas[l]
    overlap = float(abs(target_direction(-gW[0]) @ target_direction(deltas[0])))
    record = sorted(set(range(min(steps, 300) + 1)) | set(range(0, steps + 1, 5)))
    runs = {alpha: [lora_fine_tune(network, X, y, layers, rank, 1.0, "small", alpha, 0.0, steps, lr, seed, record, directions=directions) for seed in seeds] for alpha in alphas}
    targets = {network.layer_names[l]: deltas[l] for l in deltas}
    spectral_alpha = 1e-4
    spectral = [lora_fine_tune(network, X, y, layers, rank, 1.0, "spectral", spectral_alpha, 0.0, steps, lr, seed, record, targets=targets, directions=directions) for seed in seeds]

    def escape(run):
        above = np.flatnonzero(run.norms["W1"] >= escape_level)
        return int(run.steps[above[0]]) if above.size else steps + 1

    best = {alpha: np.array([np.log10(max(run.alignment[("W1", "gradient")].min(), 1e-17)) for run in runs[alpha]]) for alpha in alphas}
    escapes = {alpha: np.array([escape(run) for run in runs[alpha]], dtype=float) for alpha in alphas}
    at_escape = {alpha: np.array([np.log10(max(run.alignment[("W1", "gradient")][min(escape(run), steps)], 1e-17)) for run in runs[alpha]]) for alpha in alphas}
    full_best = {alpha: np.array([np.log10(max(run.alignment[("W1", "full")].min(), 1e-17)) for run in runs[alpha]]) for alpha in alphas}
    logs = np.log10(alphas)
    slope, interval = _bootstrap_slope(logs, [best[a] for a in alphas])
    criteria.append({"name": f"smaller alpha aligns better: slope of the best log10(1 - cos(gamma_grad, U_Z1)) over the run against log10 alpha ({len(seeds)} seeds per alpha, alphas {', '.join(f'{a:g}' for a in alphas)}); 95% bootstrap interval [{interval[0]:.3f}, {interval[1]:.3f}] above 0", "value": slope, "pass": interval[0] > 0})
    escape_slope, escape_interval = _bootstrap_slope(-logs, [escapes[a] for a in alphas])
    criteria.append({"name": f"smaller alpha, longer alignment phase: GD steps until ||B_1 A_1||_F >= {escape_level:g} per decade of 1/alpha; 95% bootstrap interval [{escape_interval[0]:.2f}, {escape_interval[1]:.2f}] above 0", "value": escape_slope, "pass": escape_interval[0] > 0})
    predicted_escape = math.log(10.0) / math.log1p(lr * s1)
    criteria.append({"name": f"the linearised flow dZ/dt = [[0, M], [M^T, 0]] Z (M = -grad L(W_1) at the pre-trained weights, top singular value s_1 = {s1:.3f}) predicts ||B A|| ~ alpha^2 (1 + lr s_1)^(2 t): ln 10 / ln(1 + lr s_1) = {predicted_escape:.2f} steps per decade; the measured slope within 15%", "value": escape_slope / predicted_escape, "pass": abs(escape_slope / predicted_escape - 1) <= 0.15})
    predicted_alignment = 2 * (1 - math.log1p(lr * s2) / math.log1p(lr * s1))
    at_slope, at_interval = _bootstrap_slope(logs, [at_escape[a] for a in alphas])
    criteria.append({"name": f"slope of log10(1 - cos) with the gradient's top pair at the end of the alignment phase (||B_1 A_1|| = {escape_level:g}) against log10 alpha, 95% interval [{at_interval[0]:.3f}, {at_interval[1]:.3f}]; the linearised flow's 2 (1 - ln(1 + lr s_2)/ln(1 + lr s_1)) = {predicted_alignment:.3f} (s_2 = {s2:.3f}); in Xu et al.'s matrix factorisation (their Figure 1) about 2 decades per decade", "value": at_slope, "kind": "reported"})
    full_slope, full_interval = _bootstrap_slope(logs, [full_best[a] for a in alphas])
    criteria.append({"name": f"alignment with the full fine-tuning update's top pair (its overlap with the gradient's: |<gamma_grad, gamma_full>| = {overlap:.3f}): best log10(1 - cos) per alpha " + ", ".join(f"{a:g}: {full_best[a].mean():.2f}" for a in alphas) + f"; slope against log10 alpha {full_slope:.3f}, 95% interval [{full_interval[0]:.3f}, {full_interval[1]:.3f}]", "value": full_slope, "kind": "reported"})
    criteria.append({"name": "W2's factors (5 x 200, smaller gradient: s_1 = " + f"{singular['W2'][0]:.3f}): best log10(1 - cos) with its gradient's top pair per alpha " + ", ".join(f"{a:g}: {np.mean([np.log10(max(run.alignment[('W2', 'gradient')].min(), 1e-17)) for run in runs[a]]):.2f}" for a in alphas), "value": float(np.mean([np.log10(max(run.alignment[("W2", "gradient")].min(), 1e-17)) for run in runs[alphas[-1]]])), "kind": "reported"})

    def steps_to(run, level):
        below = np.flatnonzero(run.loss <= level)
        return int(run.steps[below[0]]) if below.size else steps + 1

    level = 2.0
    small_reach = _mean_interval([steps_to(run, level) for run in runs[spectral_alpha]]) if spectral_alpha in runs else None
    spectral_reach = _mean_interval([steps_to(run, level) for run in spectral])
    criteria.append({"name": f"spectral init (A_l on the top {rank} right singular vectors of the full update, alpha = {spectral_alpha:g}): steps to training loss {level:g}, mean and 95% interval [{spectral_reach[1][0]:.1f}, {spectral_reach[1][1]:.1f}]" + (f"; small init at the same alpha: {small_reach[0]:.1f} [{small_reach[1][0]:.1f}, {small_reach[1][1]:.1f}]" if small_reach else ""), "value": spectral_reach[0], "kind": "reported"})
    spectral_align = float(np.mean([run.alignment[("W1", "full")][-1] for run in spectral]))
    criteria.append({"name": f"spectral init: 1 - cos with the full update's top pair after {steps} steps (mean over seeds)", "value": spectral_align, "kind": "reported"})
    accuracies = {alpha: float(np.mean([lora_accuracy(network, task.X_test, task.y_test, run.factors) for run in runs[alpha]])) for alpha in alphas}
    criteria.append({"name": f"test accuracy after {steps} LoRA steps (mean over seeds) per alpha: " + ", ".join(f"{a:g}: {accuracies[a]:.3f}" for a in alphas) + f"; spectral: {np.mean([lora_accuracy(network, task.X_test, task.y_test, run.factors) for run in spectral]):.3f}", "value": accuracies[alphas[-1]], "kind": "reported"})

    figure, axes = print_figure(3, height=2.6)
    for number, alpha in enumerate(alphas):
        curves = np.log10(np.maximum(np.array([run.alignment[("W1", "gradient")] for run in runs[alpha]]), 1e-17))
        steps_axis = runs[alpha][0].steps
        axes[0].plot(steps_axis, curves.mean(axis=0), color=f"C{number}", label=f"small init, alpha = {alpha:g}")
        axes[0].fill_between(steps_axis, curves.min(axis=0), curves.max(axis=0), color=f"C{number}", alpha=0.2, lw=0)
        norms = np.log10(np.maximum(np.array([run.norms["W1"] for run in runs[alpha]]), 1e-30))
        axes[1].plot(steps_axis[1:], norms.mean(axis=0)[1:], color=f"C{number}")
        axes[2].plot(steps_axis, np.array([run.loss for run in runs[alpha]]).mean(axis=0), color=f"C{number}")
    spectral_curve = np.log10(np.maximum(np.array([run.alignment[("W1", "gradient")] for run in spectral]), 1e-17)).mean(axis=0)
    axes[0].plot(spectral[0].steps, spectral_curve, "k--", label=f"spectral init, alpha = {spectral_alpha:g}")
    axes[1].plot(spectral[0].steps[1:], np.log10(np.maximum(np.array([run.norms["W1"] for run in spectral]), 1e-30)).mean(axis=0)[1:], "k--")
    axes[2].plot(spectral[0].steps, np.array([run.loss for run in spectral]).mean(axis=0), "k--")
    axes[1].axhline(np.log10(escape_level), color="grey", ls=":", lw=0.8)
    axes[0].set(xlabel="GD step", ylabel="log10(1 - cos(gamma_grad, U_Z1))", title="W1: alignment with the gradient's top pair")
    axes[0].legend()
    axes[1].set(xlabel="GD step", ylabel="log10 ||B_1 A_1||_F", title="growth of the adapter from step 1 (dotted: end of alignment)")
    axes[2].set(xlabel="GD step", ylabel="training loss (cross-entropy)", title="loss (full FT reaches " + f"{full_losses[-1]:.3g})")
    notes = [
        "Base model: a 64-200-5 tanh MLP (logits, softmax cross-entropy) pre-trained by full-batch Adam on the digits 0-4 of scikit-learn's 8x8 digits (70/30 split, seed 0; cached, trained once); fine-tuning task: the digits 5-9 relabelled 0-4 (the same head), 70/30 split, seed 0, full-batch gradient descent.",
        f"LoRA on both layers (Xu et al.'s Problem 2 adapts both): W_l + B_l A_l, rank {rank}, scale 1, no weight decay, GD step {lr} (lr s_1 = {lr * s1:.3f}: close to the flow); small init A_l ~ N(0, alpha^2), B_l = 0; spectral init A_l = diag(N(0, alpha^2)) V_l^T, V_l the top {rank} right singular vectors of the full fine-tuning update of layer l (the analogue of their ΔY's), B_l = 0.",
        f"Alignment: 1 - |cos(gamma, U_Z1)|, Z_1 = [B_1; A_1^T], gamma = [u; v]/sqrt 2 from the top singular pair of (a) M = -grad_W1 L at the pre-trained weights (the direction the linearised flow grows along: singular values {', '.join(f'{v:.3f}' for v in singular['W1'][:4])}) and (b) the full fine-tuning update of W1 ({full_steps} GD steps, lr {full_lr}). The best value over the run marks the end of the alignment phase; the phase ends when ||B_1 A_1||_F reaches {escape_level:g}.",
        "Where the nonlinearity enters: the gradient M changes once B A does, so the alignment with M's top pair peaks and is then lost as the loss falls; the full update's top pair differs from M's (their overlap above), and no alpha aligns the factors with it during the alignment phase.",
    ]
    parameters = {"network": {key: network.info[key] for key in ("key", "task", "train_accuracy", "test_accuracy", "final_loss")}, "fine_tune_task": task.describe(), "layers": layers, "rank": rank, "lr": lr, "steps": steps, "alphas": alphas, "seeds": seeds, "spectral_alpha": spectral_alpha, "full_fine_tuning": {"steps": full_steps, "lr": full_lr, "final_loss": float(full_losses[-1])}, "escape_level": escape_level, "gradient_singular_values": {name: values[:5].tolist() for name, values in singular.items()}, "table": [{"alpha": a, "best_log10_alignment_gradient": best[a].tolist(), "escape_steps": escapes[a].tolist(), "log10_alignment_at_escape": at_escape[a].tolist(), "best_log10_alignment_full": full_best[a].tolist(), "test_accuracy": accuracies[a]} for a in alphas]}
    return ReproductionReport("xu-digits", "Xu et al. on a real network: the alignment phase of LoRA on digits", parameters, criteria, figure, [], notes)


@register("jlr-digits", "Jang, Lee & Ryu on a real network: the NTK problem from an MLP's exact Jacobian on N real digits with K = 5 outputs, landscapes and training curves against the rank around r(r+1)/2 > KN, and the non-linearised network at the same ranks")
def jlr_digits_reproduction(quick: bool = False, workers=None) -> ReproductionReport:
    """The linearised problem of the pre-trained MLP's first layer on N = 4 fine-tuning examples (K N = 20,
    threshold rank 6), against the non-linearised network.

    Parameters
    ----------
    quick : bool
        Two instances and 8 starts (instead of 6 and 20), one weight decay.
    workers : int, optional
        Unused.

    Returns
    -------
    ReproductionReport
    """
    from ..models.digits.data import digits_task
    from ..models.digits.jacobian import digits_ntk_arrays, layer_jacobian, linearisation_error, measurement_bases, network_lora_minimise
    from ..models.digits.lora import lora_fine_tune
    from ..models.digits.network import mlp_forward, pretrained_network
    from ..models.ntk_lora.convex import ConvexSolution, ntk_convex_optimum
    from ..models.ntk_lora.optimise import ntk_gradient_descent, ntk_lbfgs
    from ..models.ntk_lora.spec import ntk_problem
    from ..models.ntk_lora.study import ntk_landscape

    instances = 2 if quick else 6
    starts = 8 if quick else 20
    decays = [0.02] if quick else [0.02, 0.005]
    N, ranks, layer, start_scale = 4, [1, 2, 3, 4, 5, 6, 8], "W1", 0.1
    network = pretrained_network()
    task = digits_task(FINE_TUNE_CLASSES, seed=0)
    K = network.weights[-1].shape[0]
    count = N * K
    threshold = next(r for r in range(1, 100) if r * (r + 1) // 2 > count)
    m, n = network.weights[0].shape
    criteria, notes = [], []

    # the exact Jacobian against central differences of the network
    generator = np.random.default_rng(3)
    examples = task.X_train[:N]
    G = layer_jacobian(network, examples, layer)
    worst = 0.0
    for _ in range(20):
        i, j = int(generator.integers(0, m)), int(generator.integers(0, n))
        E = np.zeros((m, n))
        E[i, j] = 1e-6
        numeric = (mlp_forward(network, examples, {0: E}) - mlp_forward(network, examples, {0: -E})).ravel() / 2e-6
        worst = max(worst, float(np.max(np.abs(numeric - G[:, i, j]))) / float(np.abs(G).max()))
    criteria.append({"name": "the Jacobian d f_k(x_i) / d W1 (backpropagated per output) against central differences of the network (20 entries, step 1e-6): largest error relative to its scale (<= 1e-7)", "value": worst, "pass": worst <= 1e-7})
    direction = generator.standard_normal((m, n))
    direction /= np.linalg.norm(direction, 2)
    sizes = np.array([1e-3, 1e-2, 1e-1])
    errors = np.array([linearisation_error(network, examples, layer, size * direction) for size in sizes])
    order = float(np.polyfit(np.log10(sizes), np.log10(errors), 1)[0])
    criteria.append({"name": "the linearisation's relative error ||f(W + t D) - f - <G, t D>|| / ||f(W + t D) - f|| falls like t (a second-order remainder): slope in log-log over t = 1e-3..1e-1, ||D||_op = 1 (within 0.1 of 1)", "value": order, "pass": abs(order - 1) <= 0.1})

    rows, curves, lin_errors = [], {}, {}
    spurious_above, runs_above, rho_above, not_converged, reduction_gap = 0, 0, 0.0, 0, 0.0
    convex_ranks = []
    for decay in decays:
        for instance in range(instances):
            pick = np.random.default_rng([instance, 7]).choice(task.y_train.size, N, replace=False)
            X, y = task.X_train[pick], task.y_train[pick]
            arrays = digits_ntk_arrays(network, X, y, layer)
            U, V = measurement_bases(arrays["measurements"])
            reduced = np.einsum("mp,jmn,nq->jpq", U, arrays["measurements"], V)
            problem = ntk_problem(reduced, arrays["targets"], decay, "cross_entropy", K, arrays["offsets"], {"kind": "digits", "instance": instance, "examples": pick.tolist(), "layer": layer})
            convex = ntk_convex_optimum(problem)
            convex_ranks.append({"decay": decay, "instance": instance, "rank": convex.rank, "row_space": V.shape[1], "column_space": U.shape[1]})
            lifted = U @ convex.delta @ V.T
            if instance == 0:
                # the reduction is exact: L-BFGS on the full 200 x 64 problem reaches the reduced optimum
                full = ntk_problem(arrays["measurements"], arrays["targets"], decay, "cross_entropy", K, arrays["offsets"])
                full_runs = ntk_lbfgs(full, threshold, 1 if quick else 2, seed=1, scale=start_scale, gtol=1e-9)
                reduction_gap = max(reduction_gap, float(np.max(np.abs(full_runs.values - convex.value))))
            for r in ranks:
                point_generator = np.random.default_rng([instance, r, 99])
                full_starts = [(start_scale * point_generator.standard_normal((m, r)), start_scale * point_generator.standard_normal((r, n))) for _ in range(starts)]
                points = (np.array([U.T @ B for B, _ in full_starts]), np.array([A @ V for _, A in full_starts]))
                study = ntk_landscape(problem, r, starts, seed=0, convex=convex, hessian=False, points=points)
                network_runs = network_lora_minimise(network, X, y, layer, full_starts, decay, gtol=1e-8, max_iter=5000)
                network_errors = [linearisation_error(network, X, layer, B @ A) for B, A in zip(network_runs["B"], network_runs["A"])]
                row = {"decay": decay, "instance": instance, "rank": r, "above": r * (r + 1) // 2 > count, "convex_value": convex.value, "convex_rank": convex.rank, "linear_values": study.runs.values.tolist(), "linear_global": int(np.sum(study.is_global)), "linear_spurious": study.spurious_runs, "linear_not_converged": int(np.sum(study.runs.status != 0)), "linear_best": float(np.min(study.runs.values)), "rho_global": float(max([rho for rho, ok in zip(study.certificates, study.is_global) if ok], default=0.0)), "network_values": network_runs["values"].tolist(), "network_converged": int(np.sum(network_runs["converged"])), "network_linearisation_error": network_errors, "lifted_linearisation_error": linearisation_error(network, X, layer, lifted)}
                rows.append(row)
                if row["above"]:
                    spurious_above += study.spurious_runs
                    runs_above += starts
                    rho_above = max(rho_above, row["rho_global"])
                not_converged += row["linear_not_converged"]
            if instance == 0:
                # training curves: gradient descent from one start per rank, linearised and on the network
                for r in ranks:
                    point_generator = np.random.default_rng([instance, r, 5])
                    B0, A0 = start_scale * point_generator.standard_normal((m, r)), start_scale * point_generator.standard_normal((r, n))
                    gd_steps, gd_lr = (1500, 0.5) if quick else (4000, 0.5)
                    linear = ntk_gradient_descent(problem, r, 1, steps=gd_steps, lr=gd_lr, records=80, points=(np.array([U.T @ B0]), np.array([A0 @ V])))
                    run = lora_fine_tune(network, X, y, [layer], r, 1.0, "small", 1.0, decay, gd_steps, gd_lr, 0, linear.record_steps, keep_factors=True, start={0: (B0, A0)})
                    objective = np.array([loss + 0.5 * decay * (np.sum(f[0][0] ** 2) + np.sum(f[0][1] ** 2)) for loss, f in zip(run.loss, run.history)])
                    curves[(decay, r)] = (linear.record_steps, linear.records[0, :, 0], objective, convex.value)
                    lin_errors[(decay, r)] = np.array([linearisation_error(network, X, layer, f[0][0] @ f[0][1]) for f in run.history])

    criteria.append({"name": f"the linearised problem on the 200 x 64 layer is exactly the one on the spans of its Jacobians (U^T G V, {convex_ranks[0]['column_space']} x {convex_ranks[0]['row_space']}): L-BFGS on the full problem at r = {threshold} reaches the reduced convex optimum (largest difference, <= 1e-8)", "value": reduction_gap, "pass": reduction_gap <= 1e-8})
    bound = max(r for r in range(1, 100) if r * (r + 1) // 2 <= count)
    largest = max(row["rank"] for row in convex_ranks)
    criteria.append({"name": f"Theorem 3.1: the certified convex optimum's rank r* obeys r*(r*+1)/2 <= KN = {count} (r* <= {bound}) over {len(convex_ranks)} instances (ranks {[row['rank'] for row in convex_ranks]}; first-layer Jacobians are rank one, so r* <= N = {N} here too)", "value": int(largest), "pass": largest <= bound})
    criteria.append({"name": f"Theorem 4.1: above the threshold (r = {', '.join(str(r) for r in ranks if r * (r + 1) // 2 > count)}, r(r+1)/2 > KN = {count}) every linearised L-BFGS run reaches the convex optimum: non-global runs among {runs_above}", "value": int(spurious_above), "pass": spurious_above == 0 and runs_above > 0})
    criteria.append({"name": f"certificate rho = ||grad L(BA)||_op / lambda at those limits (largest; <= 1 + {RHO_TOL:g})", "value": rho_above, "pass": rho_above <= 1 + RHO_TOL})
    criteria.append({"name": "every linearised L-BFGS run met its gradient tolerance (1e-10): runs that did not", "value": int(not_converged), "pass": not_converged == 0})
    for row in rows:
        best = min(v for other in rows if other["decay"] == row["decay"] and other["instance"] == row["instance"] for v in other["network_values"])
        row["network_at_best"] = int(np.sum(np.array(row["network_values"]) <= best + 1e-6 * max(1.0, abs(best))))
    for decay in decays:
        for r in ranks:
            members = [row for row in rows if row["decay"] == decay and row["rank"] == r]
            total = len(members) * starts
            linear_global = sum(row["linear_global"] for row in members)
            network_at_best = sum(row["network_at_best"] for row in members)
            gap = float(np.mean([min(row["network_values"]) - row["convex_value"] for row in members]))
            error = float(np.median([e for row in members for e in row["network_linearisation_error"]]))
            criteria.append({"name": f"lambda = {decay:g}, r = {r} ({'above' if r * (r + 1) // 2 > count else 'below'} the threshold): linearised runs at the convex optimum {linear_global}/{total}; network runs at the best network value of their instance {network_at_best}/{total}; network's best minus the convex optimum (mean over instances) {gap:.2e}; median linearisation error at the network's limits {error:.3f}", "value": linear_global / total, "kind": "reported"})
    lifted = float(np.median([row["lifted_linearisation_error"] for row in rows]))
    criteria.append({"name": "linearisation error of the network at the linearised problem's optimum (median over instances and lambdas)", "value": lifted, "kind": "reported"})

    figure, axes = print_figure(3, height=2.6)
    decay = decays[0]
    for number, r in enumerate(ranks):
        steps_axis, linear_values, network_values, optimum = curves[(decay, r)]
        axes[0].semilogy(steps_axis, np.maximum(linear_values - optimum, 1e-16), color=f"C{number}", label=f"r = {r}" + (" (above)" if r * (r + 1) // 2 > count else ""))
        axes[0].semilogy(steps_axis, np.maximum(network_values - optimum, 1e-16), color=f"C{number}", ls="--")
        axes[2].semilogy(steps_axis[1:], np.maximum(lin_errors[(decay, r)][1:], 1e-16), color=f"C{number}")
    axes[0].set(xlabel="GD step", ylabel="F - F* (linearised optimum)", title=f"training curves, lambda = {decay:g} (solid: linearised, dashed: network)")
    axes[0].legend(ncols=2)
    for which, decay_value in enumerate(decays):
        x = np.array(ranks, dtype=float) + 0.08 * (which - 0.5 * (len(decays) - 1))
        linear_fraction = [sum(row["linear_global"] for row in rows if row["decay"] == decay_value and row["rank"] == r) / (instances * starts) for r in ranks]
        axes[1].plot(x, linear_fraction, "o-", color=f"C{which}", label=f"linearised, lambda = {decay_value:g}")
        network_fraction = [sum(row["network_at_best"] for row in rows if row["decay"] == decay_value and row["rank"] == r) / (instances * starts) for r in ranks]
        axes[1].plot(x, network_fraction, "s--", mfc="none", color=f"C{which}", label=f"network, lambda = {decay_value:g}")
    axes[1].axvline(threshold - 0.5, color="k", ls=":", lw=0.8)
    axes[1].set(xlabel="LoRA rank r (dotted: r(r+1)/2 > KN to the right)", ylabel="fraction of runs at the best value", title=f"landscape: {instances} instances x {starts} starts per rank", ylim=(-0.03, 1.03), xticks=ranks)
    axes[1].legend()
    axes[2].set(xlabel="GD step", ylabel="linearisation error of the network", title=f"||f(W+BA) - f_lin(BA)|| / ||f(W+BA) - f||, lambda = {decay:g}")
    notes = [
        f"Network and task as xu-digits (64-200-5 tanh MLP pre-trained on digits 0-4; fine-tuning on 5-9 relabelled). LoRA on the first layer W1 (200 x 64); N = {N} training examples of the fine-tuning task per instance (drawn with seed (instance, 7)), K = {K} logits, softmax cross-entropy (mean over the examples) plus lambda/2 (||A||^2 + ||B||^2): KN = {count}, threshold rank {threshold} (r(r+1)/2 > KN).",
        "The linearised problem's measurements are the exact Jacobian G_(i,k) = d f_k(x_i)/d W1 at the pre-trained weights, its offsets the pre-trained logits; each G_(i,k) = b_(i,k) x_i^T has rank one, so the problem lives on the span of the b's (<= KN columns) and of the N inputs: the convex optimum (certified by its duality gap) and the landscape are computed there, exactly (the weight decay of the components outside separates; a criterion checks it on the full layer).",
        f"Starts: B and A with N(0, {start_scale}^2) entries on the full layer (the linearised runs start from their projections), the same starts for the linearised problem (popgrad's compiled L-BFGS, gradient tolerance 1e-10) and for the network (scipy's L-BFGS-B, tolerance 1e-8).",
        "The network has no certified optimum: its runs are compared with the best value any run reached on the same instance (at any rank), and its values with the linearised optimum.",
    ]
    parameters = {"network": {key: network.info[key] for key in ("key", "task", "test_accuracy")}, "fine_tune_task": task.describe(), "layer": layer, "examples_per_instance": N, "outputs": K, "count": count, "threshold_rank": threshold, "ranks": ranks, "instances": instances, "starts": starts, "weight_decays": decays, "start_scale": start_scale, "convex_ranks": convex_ranks, "rows": [{key: value for key, value in row.items() if key not in ("linear_values",)} for row in rows]}
    return ReproductionReport("jlr-digits", "Jang, Lee & Ryu on a real network: rank threshold on digits", parameters, criteria, figure, [], notes)
