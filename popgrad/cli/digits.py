"""``popgrad digits``: the LoRA theories on a real network and real data (scikit-learn's 8x8 digits).

* ``popgrad digits pretrain`` trains (once: cached) the base model, an MLP 64 -> hidden -> K on some digits,
  prints its accuracies and, with ``--network-out FILE``, writes its network file;
* ``popgrad digits finetune`` fine-tunes a base model (``--network FILE``, or the default pre-trained one) on
  a shifted task with LoRA adapters on chosen layers, or fully (``--full``), and prints the training loss,
  the test accuracy and, per adapted layer, the alignment of the factors with the top singular pair of the
  gradient at the base weights and ‖s B A‖.
"""

from __future__ import annotations

from .common import UsageError, add_json_out, check_json_out, check_outputs, non_negative_int, print_json, real, save_json_out

__all__ = ["register"]


def _digits(text: str) -> tuple:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"expected a comma-separated list of digits 0-9, got {text!r}") from None
    return values


def _layers(text: str) -> tuple:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise UsageError("expected a comma-separated list of layers, e.g. W1 or W1,W2")
    return names


def register(commands) -> None:
    digits = commands.add_parser("digits", help="LoRA on a real network and real data: an MLP on scikit-learn's 8x8 digits (needs popgrad[digits])")
    actions = digits.add_subparsers(dest="digits_command")
    pretrain = actions.add_parser("pretrain", help="train (once; cached) the base model and print its accuracies")
    pretrain.add_argument("--classes", type=_digits, default=(0, 1, 2, 3, 4), help="the digits of the base task (default 0,1,2,3,4; relabelled 0..K-1)")
    pretrain.add_argument("--hidden", type=non_negative_int, default=200, help="hidden units (default 200)")
    pretrain.add_argument("--steps", type=non_negative_int, default=500, help="full-batch Adam steps (default 500)")
    pretrain.add_argument("--seed", type=non_negative_int, default=0, help="seed of the initialisation and of the train/test split (default 0)")
    pretrain.add_argument("--network-out", default=None, metavar="FILE.json", help="write the network file (JSON) here")
    pretrain.add_argument("--format", choices=("text", "json"), default="text")
    add_json_out(pretrain)
    pretrain.set_defaults(handler=_pretrain)
    finetune = actions.add_parser("finetune", help="fine-tune a base model on a shifted task with LoRA (or fully) and print loss, accuracy and alignment")
    finetune.add_argument("--network", default=None, metavar="FILE.json", help="the base model's network file (default: the pre-trained one of `digits pretrain`'s defaults)")
    finetune.add_argument("--classes", type=_digits, default=(5, 6, 7, 8, 9), help="the digits of the fine-tuning task (default 5,6,7,8,9; relabelled 0..K-1)")
    finetune.add_argument("--transform", choices=("none", "transpose", "noise"), default="none", help="a shift of the images (default none)")
    finetune.add_argument("--layers", type=_layers, default=("W1",), help="the adapted layers (default W1; e.g. W1,W2)")
    finetune.add_argument("--rank", type=non_negative_int, default=4, help="LoRA rank r (default 4)")
    finetune.add_argument("--scale", type=real, default=1.0, help="s in W + s B A (default 1)")
    finetune.add_argument("--init", choices=("small", "spectral"), default="small", help="small: B = 0, A ~ alpha N(0, 1); spectral: A on the top right singular vectors of the full fine-tuning update (default small)")
    finetune.add_argument("--alpha", type=real, default=1e-3, help="initialisation scale (default 1e-3)")
    finetune.add_argument("--weight-decay", type=real, default=0.0, help="weight decay on the factors (default 0)")
    finetune.add_argument("--steps", type=non_negative_int, default=600, help="gradient-descent steps (default 600)")
    finetune.add_argument("--lr", type=real, default=0.05, help="step size (default 0.05)")
    finetune.add_argument("--seed", type=non_negative_int, default=0, help="seed of the factors' initialisation and of the task's split (default 0)")
    finetune.add_argument("--full", action="store_true", help="full fine-tuning of the layers (the reference) instead of LoRA")
    finetune.add_argument("--format", choices=("text", "json"), default="text")
    add_json_out(finetune)
    finetune.set_defaults(handler=_finetune)
    digits.set_defaults(handler=_needs_command)


def _needs_command(args) -> int:
    raise UsageError("digits needs a command: pretrain or finetune")


def _pretrain(args) -> int:
    from .._io import check_output_file
    from ..models.digits.network import pretrained_network

    check_json_out(args)
    if args.network_out is not None:
        check_output_file(args.network_out, "network_out")
        check_outputs(args, [args.network_out], "network_out")
    if args.hidden < 1:
        raise UsageError(f"--hidden must be at least 1, got {args.hidden}")
    network = pretrained_network(classes=args.classes, hidden=(args.hidden,), seed=args.seed, steps=args.steps)
    if args.network_out is not None:
        network.save(args.network_out)
    payload = {"sizes": list(network.sizes), "classes": list(args.classes), "train_accuracy": network.info.get("train_accuracy"), "test_accuracy": network.info.get("test_accuracy"), "final_loss": network.info.get("final_loss"), "seed": args.seed, "steps": args.steps, "cache": str(network.info.get("cache")), "network_out": args.network_out}
    if save_json_out(args, payload):
        return 0
    if args.format == "json":
        print_json(payload)
    else:
        print(f"base model {'-'.join(map(str, network.sizes))} (tanh) on digits {','.join(map(str, args.classes))}: train accuracy {payload['train_accuracy']:.4f}, test accuracy {payload['test_accuracy']:.4f} (seed {args.seed}, {args.steps} Adam steps; cached at {payload['cache']})")
        if args.network_out is not None:
            print(f"wrote {args.network_out}")
    return 0


def _finetune(args) -> int:
    import numpy as np

    from ..models.digits.data import digits_task
    from ..models.digits.lora import full_fine_tune, lora_accuracy, lora_fine_tune, lora_layers, target_direction
    from ..models.digits.network import load_network, mlp_accuracy, mlp_gradients, pretrained_network

    check_json_out(args)
    network = load_network(args.network) if args.network is not None else pretrained_network()
    indices = lora_layers(network, args.layers, 1 if args.full else args.rank)
    task = digits_task(args.classes, transform=args.transform, seed=args.seed)
    if task.outputs != network.sizes[-1]:
        raise UsageError(f"--classes: the network has {network.sizes[-1]} outputs, the task {len(args.classes)} classes ({','.join(map(str, args.classes))})")
    X, y = task.X_train, task.y_train
    _, gradients, _ = mlp_gradients(network, X, y)
    names = network.layer_names
    before = mlp_accuracy(network, task.X_test, task.y_test)
    if args.full:
        deltas, losses = full_fine_tune(network, X, y, args.layers, args.steps, args.lr, args.weight_decay)
        after = mlp_accuracy(network, task.X_test, task.y_test, deltas)
        layers = {names[l]: {"update_norm": float(np.linalg.norm(delta)), "alignment_with_gradient": float(1.0 - abs(float(np.sum(target_direction(-gradients[l]) * target_direction(delta)))))} for l, delta in deltas.items()}
        final_loss = float(losses[-1])
    else:
        targets = None
        if args.init == "spectral":  # A on the top right singular vectors of the full fine-tuning update
            deltas, _ = full_fine_tune(network, X, y, args.layers, args.steps, args.lr, args.weight_decay)
            targets = {names[l]: delta for l, delta in deltas.items()}
        directions = {(names[l], "gradient"): -gradients[l] for l in indices}
        run = lora_fine_tune(network, X, y, args.layers, args.rank, args.scale, args.init, args.alpha, args.weight_decay, args.steps, args.lr, args.seed, targets=targets, directions=directions)
        after = lora_accuracy(network, task.X_test, task.y_test, run.factors, args.scale)
        layers = {}
        for l, (B, A) in run.factors.items():
            aligned = run.alignment[(names[l], "gradient")]
            layers[names[l]] = {"norm_BA": float(run.norms[names[l]][-1]), "alignment_with_gradient": float(aligned[-1]), "best_alignment_with_gradient": float(np.min(aligned)), "best_at_step": int(run.steps[int(np.argmin(aligned))])}
        final_loss = float(run.loss[-1])
    payload = {"method": "full" if args.full else "lora", "network": args.network or "the default pre-trained base model", "task": task.describe(), "layers": list(args.layers), "rank": None if args.full else args.rank, "scale": args.scale, "init": None if args.full else args.init, "alpha": None if args.full else args.alpha, "weight_decay": args.weight_decay, "steps": args.steps, "lr": args.lr, "seed": args.seed, "test_accuracy_before": before, "test_accuracy_after": after, "final_training_loss": final_loss, "per_layer": layers}
    if save_json_out(args, payload):
        return 0
    if args.format == "json":
        print_json(payload)
        return 0
    what = "full fine-tuning" if args.full else f"LoRA rank {args.rank} ({args.init} init, alpha {args.alpha:g}, scale {args.scale:g})"
    print(f"{what} of {','.join(args.layers)} on digits {','.join(map(str, args.classes))} ({args.transform}), {args.steps} steps at lr {args.lr:g}: training loss {final_loss:.4g}, test accuracy {before:.4f} -> {after:.4f}")
    for name, values in layers.items():
        print(f"  {name}: " + ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}" for key, value in values.items()))
    return 0
