"""Xu et al. (MATH.md §6) on a real network and real data (issue 24), ``xu-digits``: an MLP pre-trained on the
digits 0-4 of scikit-learn's 8x8 digits and fine-tuned with LoRA on the digits 5-9 (relabelled 0-4). The
alignment of the LoRA factors' top singular vector with the target directions (the top singular pair of the
gradient at initialisation, and of the full fine-tuning update) and the growth of ‖B A‖ over the first steps,
for small initialisation at several alpha and for spectral initialisation, with intervals over seeds; against
the linearised flow's predictions.
"""

from __future__ import annotations

import math

import numpy as np

from .base import ReproductionReport, print_figure, register

__all__ = ["xu_digits_reproduction"]

#: the fine-tuning task: the digits the network did not see, relabelled 0..4
FINE_TUNE_CLASSES = (5, 6, 7, 8, 9)


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


@register("xu-digits", "Xu et al. on a real network: the alignment phase of small-init LoRA (alignment with the gradient's and the full update's top singular pair, ‖BA‖) against alpha, and spectral init, on an MLP pre-trained on digits 0-4 and fine-tuned on 5-9")
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
    criteria.append({"name": f"smaller alpha, longer alignment phase: GD steps until ‖B_1 A_1‖_F >= {escape_level:g} per decade of 1/alpha; 95% bootstrap interval [{escape_interval[0]:.2f}, {escape_interval[1]:.2f}] above 0", "value": escape_slope, "pass": escape_interval[0] > 0})
    predicted_escape = math.log(10.0) / math.log1p(lr * s1)
    criteria.append({"name": f"the linearised flow dZ/dt = [[0, M], [M^T, 0]] Z (M = -grad L(W_1) at the pre-trained weights, top singular value s_1 = {s1:.3f}) predicts ‖B A‖ ~ alpha^2 (1 + lr s_1)^(2 t): ln 10 / ln(1 + lr s_1) = {predicted_escape:.2f} steps per decade; the measured slope within 15%", "value": escape_slope / predicted_escape, "pass": abs(escape_slope / predicted_escape - 1) <= 0.15})
    predicted_alignment = 2 * (1 - math.log1p(lr * s2) / math.log1p(lr * s1))
    at_slope, at_interval = _bootstrap_slope(logs, [at_escape[a] for a in alphas])
    criteria.append({"name": f"slope of log10(1 - cos) with the gradient's top pair at the end of the alignment phase (‖B_1 A_1‖ = {escape_level:g}) against log10 alpha, 95% interval [{at_interval[0]:.3f}, {at_interval[1]:.3f}]; the linearised flow's 2 (1 - ln(1 + lr s_2)/ln(1 + lr s_1)) = {predicted_alignment:.3f} (s_2 = {s2:.3f}); in Xu et al.'s matrix factorisation (their Figure 1) about 2 decades per decade", "value": at_slope, "kind": "reported"})
    full_slope, full_interval = _bootstrap_slope(logs, [full_best[a] for a in alphas])
    criteria.append({"name": f"alignment with the full fine-tuning update's top pair (its overlap with the gradient's: abs(<gamma_grad, gamma_full>) = {overlap:.3f}): best log10(1 - cos) per alpha " + ", ".join(f"{a:g}: {full_best[a].mean():.2f}" for a in alphas) + f"; slope against log10 alpha {full_slope:.3f}, 95% interval [{full_interval[0]:.3f}, {full_interval[1]:.3f}]", "value": full_slope, "kind": "reported"})
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
    axes[1].set(xlabel="GD step", ylabel="log10 ‖B_1 A_1‖_F", title="growth of the adapter from step 1 (dotted: end of alignment)")
    axes[2].set(xlabel="GD step", ylabel="training loss (cross-entropy)", title="loss (full FT reaches " + f"{full_losses[-1]:.3g})")
    notes = [
        "Base model: a 64-200-5 tanh MLP (logits, softmax cross-entropy) pre-trained by full-batch Adam on the digits 0-4 of scikit-learn's 8x8 digits (70/30 split, seed 0; cached, trained once); fine-tuning task: the digits 5-9 relabelled 0-4 (the same head), 70/30 split, seed 0, full-batch gradient descent.",
        f"LoRA on both layers (Xu et al.'s Problem 2 adapts both): W_l + B_l A_l, rank {rank}, scale 1, no weight decay, GD step {lr} (lr s_1 = {lr * s1:.3f}: close to the flow); small init A_l ~ N(0, alpha^2), B_l = 0; spectral init A_l = diag(N(0, alpha^2)) V_l^T, V_l the top {rank} right singular vectors of the full fine-tuning update of layer l (the analogue of their ΔY's), B_l = 0.",
        f"Alignment: 1 - |cos(gamma, U_Z1)|, Z_1 = [B_1; A_1^T], gamma = [u; v]/sqrt 2 from the top singular pair of (a) M = -grad_W1 L at the pre-trained weights (the direction the linearised flow grows along: singular values {', '.join(f'{v:.3f}' for v in singular['W1'][:4])}) and (b) the full fine-tuning update of W1 ({full_steps} GD steps, lr {full_lr}). The best value over the run marks the end of the alignment phase; the phase ends when ‖B_1 A_1‖_F reaches {escape_level:g}.",
        "Where the nonlinearity enters: the gradient M changes once B A does, so the alignment with M's top pair peaks and is then lost as the loss falls; the full update's top pair differs from M's (their overlap above), and no alpha aligns the factors with it during the alignment phase.",
    ]
    parameters = {"network": {key: network.info[key] for key in ("key", "task", "train_accuracy", "test_accuracy", "final_loss")}, "fine_tune_task": task.describe(), "layers": layers, "rank": rank, "lr": lr, "steps": steps, "alphas": alphas, "seeds": seeds, "spectral_alpha": spectral_alpha, "full_fine_tuning": {"steps": full_steps, "lr": full_lr, "final_loss": float(full_losses[-1])}, "escape_level": escape_level, "gradient_singular_values": {name: values[:5].tolist() for name, values in singular.items()}, "table": [{"alpha": a, "best_log10_alignment_gradient": best[a].tolist(), "escape_steps": escapes[a].tolist(), "log10_alignment_at_escape": at_escape[a].tolist(), "best_log10_alignment_full": full_best[a].tolist(), "test_accuracy": accuracies[a]} for a in alphas]}
    return ReproductionReport("xu-digits", "Xu et al. on a real network: the alignment phase of LoRA on digits", parameters, criteria, figure, [], notes)
