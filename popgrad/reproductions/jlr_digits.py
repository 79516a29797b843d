"""Jang, Lee & Ryu (MATH.md §7) on a real network and real data (issue 24), ``jlr-digits``: the linearised (NTK)
problem from the exact Jacobian of an MLP pre-trained on the digits 0-4 of scikit-learn's 8x8 digits, on N real
examples of the digits 5-9 (relabelled 0-4) with K = 5 outputs; its landscape and training curves against the
rank below and above r(r+1)/2 > KN, and the same ranks on the non-linearised network with its linearisation
error.
"""

from __future__ import annotations

import numpy as np

from .base import ReproductionReport, print_figure, register

__all__ = ["jlr_digits_reproduction"]

#: the fine-tuning task: the digits the network did not see, relabelled 0..4
FINE_TUNE_CLASSES = (5, 6, 7, 8, 9)
#: tolerance on rho at global limits (as the jlr reproduction)
RHO_TOL = 1e-6


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
    from ..models.ntk_lora.convex import ntk_convex_optimum
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
    criteria.append({"name": "the linearisation's relative error ‖f(W + t D) - f - <G, t D>‖ / ‖f(W + t D) - f‖ falls like t (a second-order remainder): slope in log-log over t = 1e-3..1e-1, ‖D‖_op = 1 (within 0.1 of 1)", "value": order, "pass": abs(order - 1) <= 0.1})

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
                    gd_steps, gd_lr = (800, 0.1) if quick else (2000, 0.1)
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
    criteria.append({"name": f"certificate rho = ‖grad L(BA)‖_op / lambda at those limits (largest; <= 1 + {RHO_TOL:g})", "value": rho_above, "pass": rho_above <= 1 + RHO_TOL})
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
        axes[0].loglog(steps_axis[1:], linear_values[1:], color=f"C{number}", label=f"r = {r}" + (" (above)" if r * (r + 1) // 2 > count else ""))
        axes[0].loglog(steps_axis[1:], network_values[1:], color=f"C{number}", ls="--")
        axes[2].loglog(steps_axis[1:], np.maximum(lin_errors[(decay, r)][1:], 1e-16), color=f"C{number}")
    axes[0].axhline(curves[(decay, ranks[0])][3], color="k", ls=":", lw=0.8)
    axes[0].set(xlabel="GD step", ylabel="objective F (loss + weight decay)", title=f"training curves, instance 0, lambda = {decay:g} (solid: linearised, dashed: network, dotted: convex optimum)")
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
    axes[2].set(xlabel="GD step", ylabel="linearisation error of the network", title=f"‖f(W+BA) - f_lin(BA)‖ / ‖f(W+BA) - f‖, lambda = {decay:g}")
    notes = [
        f"Network and task as xu-digits (64-200-5 tanh MLP pre-trained on digits 0-4; fine-tuning on 5-9 relabelled). LoRA on the first layer W1 (200 x 64); N = {N} training examples of the fine-tuning task per instance (drawn with seed (instance, 7)), K = {K} logits, softmax cross-entropy (mean over the examples) plus lambda/2 (‖A‖^2 + ‖B‖^2): KN = {count}, threshold rank {threshold} (r(r+1)/2 > KN).",
        "The linearised problem's measurements are the exact Jacobian G_(i,k) = d f_k(x_i)/d W1 at the pre-trained weights, its offsets the pre-trained logits; each G_(i,k) = b_(i,k) x_i^T has rank one, so the problem lives on the span of the b's (<= KN columns) and of the N inputs: the convex optimum (certified by its duality gap) and the landscape are computed there, exactly (the weight decay of the components outside separates; a criterion checks it on the full layer).",
        f"Starts: B and A with N(0, {start_scale}^2) entries on the full layer (the linearised runs start from their projections), the same starts for the linearised problem (popgrad's compiled L-BFGS, gradient tolerance 1e-10) and for the network (scipy's L-BFGS-B, tolerance 1e-8).",
        "The network has no certified optimum: its runs are compared with the best value any run reached on the same instance (at any rank), and its values with the linearised optimum.",
    ]
    parameters = {"network": {key: network.info[key] for key in ("key", "task", "test_accuracy")}, "fine_tune_task": task.describe(), "layer": layer, "examples_per_instance": N, "outputs": K, "count": count, "threshold_rank": threshold, "ranks": ranks, "instances": instances, "starts": starts, "weight_decays": decays, "start_scale": start_scale, "convex_ranks": convex_ranks, "rows": [{key: value for key, value in row.items() if key not in ("linear_values",)} for row in rows]}
    return ReproductionReport("jlr-digits", "Jang, Lee & Ryu on a real network: rank threshold on digits", parameters, criteria, figure, [], notes)
