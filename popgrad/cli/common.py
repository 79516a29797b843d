"""What every command shares: the parser that reports in one line, argument types, and the mapping from
the library's parameter names to the flags a user typed."""

from __future__ import annotations

import argparse
import sys

import numpy as np

__all__ = ["UsageError", "Parser", "non_negative_int", "real", "grid", "step_list", "FLAGS", "flag_message", "EXIT_USAGE", "EXIT_NEGATIVE", "EXIT_BUG"]

#: exit statuses: a usage error, a scientific negative (--strict inconsistency, stale tables), a crash
EXIT_USAGE, EXIT_NEGATIVE, EXIT_BUG = 2, 3, 1

#: library parameter name -> the flag that sets it
FLAGS = {
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
    "threshold": "--threshold",
    "checkpoints": "--checkpoints",
    "method": "--method",
    "convention": "--convention",
    "c distribution": "--c-distribution",
    "hit": "--hit",
    "out": "--out",
    "plot": "--plot",
}


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


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
