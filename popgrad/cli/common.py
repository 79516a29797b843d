"""What every command shares: the parser that reports in one line, argument types, and the mapping from
the library's parameter names to the flags a user typed."""

from __future__ import annotations

import argparse
import sys

import numpy as np

__all__ = ["UsageError", "Parser", "given", "refuse_together", "non_negative_int", "real", "grid", "step_list", "FLAGS", "flag_message", "EXIT_USAGE", "EXIT_NEGATIVE", "EXIT_BUG", "print_json", "write", "naming_file"]

#: exit statuses: a usage error, a scientific negative (--strict inconsistency, stale tables), a crash
EXIT_USAGE, EXIT_NEGATIVE, EXIT_BUG = 2, 3, 1

#: library parameter name -> the flag that sets it
FLAGS = {
    "rank": "--rank",
    "alpha": "--alpha",
    "c_hat_lr": "--c-hat-lr",
    "output_scale": "--output-scale",
    "student": "--student",
    "order": "--order",
    "scale": "--scale",
    "digits": "--digits",
    "k": "--k",
    "xi": "--xi",
    "seed": "--seed",
    "d": "--d",
    "eta": "--eta",
    "delta": "--delta",
    "steps": "--steps",
    "trajectories": "--trajectories",
    "m0": "--m0",
    "m": "--m",
    "samples": "--noise-samples",
    "noise_samples": "--noise-samples",
    "noise_seed": "--noise-seed",
    "flow_starts": "--flow-starts",
    "map_starts": "--map-starts",
    "map_substeps": "--map-substeps",
    "threshold": "--threshold",
    "checkpoints": "--checkpoints",
    "method": "--method",
    "convention": "--convention",
    "c distribution": "--c-distribution",
    "hit": "--hit",
    "out": "--out",
    "plot": "--plot",
    "repetitions": "--repeats",
    "h": "--h",
    "n": "--n",
    "s": "--s",
    "beta": "--beta",
    "pair": "--pair",
    "init": "--init",
    "lr": "--lr",
    "delta_a": "--delta-a",
    "times": "--times",
    "ode_starts": "--ode-starts",
}


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


def _recording(base: type) -> type:
    """``base`` (an argparse action class) that also notes, in ``namespace.given``, each option the user
    typed (dest -> the flag as typed), so that handlers can refuse flags that would be ignored."""

    class Recording(base):
        def __call__(self, parser, namespace, values, option_string=None):
            super().__call__(parser, namespace, values, option_string)
            if option_string is not None:
                namespace.given = {**getattr(namespace, "given", {}), self.dest: option_string}

    Recording.__name__ = f"Recording{base.__name__}"
    return Recording


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in (None, "store", "store_const", "store_true", "store_false", "append"):
            self.register("action", name, _recording(self._registry_get("action", name)))

    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


def given(args, *dests: str) -> list:
    """The flags (as typed) among ``dests`` that the user gave on the command line."""
    typed = getattr(args, "given", {})
    return [typed[dest] for dest in dests if dest in typed]


def refuse_together(args, dest: str, others: tuple, why: str) -> None:
    """A usage error when ``dest`` and any of ``others`` were both typed: one of them would be ignored."""
    if given(args, dest) and given(args, *others):
        raise UsageError(f"{given(args, *others)[0]} cannot be used with {given(args, dest)[0]}: {why}")


def flag_message(message: str, parameter: str | None) -> str:
    """The library's message with its leading parameter name replaced by the command-line flag."""
    flag = FLAGS.get(parameter or "")
    if flag and message.startswith((parameter + " ", parameter + ":")):
        return flag + message[len(parameter):]
    return message


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def real(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def grid(text: str) -> np.ndarray:
    """A comma-separated list, or LOW:HIGH:COUNT."""
    try:
        if ":" in text:
            low, high, count = text.split(":")
            values = np.linspace(float(low), float(high), int(count))
        else:
            values = np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list or LOW:HIGH:COUNT, got {text!r}") from None
    if values.size == 0:
        raise argparse.ArgumentTypeError("the list is empty")
    return values


def step_list(text: str) -> list:
    """Comma-separated step counts (their order and signs are checked by the library)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated step counts, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("the list is empty")
    return values


def write(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def print_json(payload) -> None:
    """Print ``payload`` as strict JSON (:func:`popgrad._io.strict_json`): the one way every ``--format
    json`` reaches stdout, so a diverged run prints null (and names the keys under ``non_finite``), never
    NaN or Infinity."""
    from .._io import strict_json

    write(strict_json(payload))


def naming_file(path, flag: str, exc: Exception) -> UsageError:
    """The usage error for ``exc``, raised while reading the file ``path`` given as ``flag``: its first
    line, prefixed by the flag and the file unless the message names the file already."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if str(path) in message:
        return UsageError(message)
    return UsageError(f"{flag} {path}: {flag_message(message, getattr(exc, 'parameter', None))}")
