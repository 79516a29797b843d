"""What every command shares: the parser that reports in one line, argument types, and the mapping from
the library's parameter names to the flags a user typed."""

from __future__ import annotations

import argparse
import contextlib
import sys

from pathlib import Path

import numpy as np

__all__ = ["UsageError", "Parser", "given", "refuse_together", "non_negative_int", "real", "grid", "step_list", "FLAGS", "flag_message", "EXIT_USAGE", "EXIT_NEGATIVE", "EXIT_BUG", "EXIT_TIMEOUT", "print_json", "write", "naming_file", "add_force", "check_outputs", "flag_for", "add_json_out", "check_json_out", "save_json_out", "check_figure_path", "fit_for_print", "save_figure", "FIGURE_FORMATS"]

#: exit statuses: a usage error, a scientific negative (--strict inconsistency, stale tables), a crash
EXIT_USAGE, EXIT_NEGATIVE, EXIT_BUG, EXIT_TIMEOUT = 2, 3, 1, 124

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
    "prefactor": "--prefactor",
    "c_distribution": "--c-distribution",
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
    "workers": "--workers",
    "scheduler": "--scheduler",
    "timeout": "--timeout",
    "replicates": "--replicates",
    "records": "--records",
    "starts": "--starts",
    "instances": "--instances",
    "weight_decay": "--weight-decay",
    "problem_seed": "--problem-seed",
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
        message = flag + message[len(parameter):]
    if "(they take: " in message:  # the options a prediction takes, as the flags that set them
        head, _, rest = message.partition("(they take: ")
        names, _, tail = rest.partition(")")
        message = head + "(they take: " + ", ".join(FLAGS.get(name.strip(), name.strip()) for name in names.split(",")) + ")" + tail
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
            count = float(count)
            if not count.is_integer() or count < 1:
                raise ValueError(count)
            from .._validation import InvalidArgument, check_memory

            try:  # the values and what each costs downstream (h, Phi and their temporaries), before any is made
                check_memory(64.0 * count, f"{int(count)} grid values", "grid")
            except InvalidArgument as exc:
                raise argparse.ArgumentTypeError(str(exc).removeprefix("grid too large: ")) from None
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
    # the parameter is a key of the file, named as the file spells it (not as the flag of the same name)
    return UsageError(f"{flag} {path}: {message}")


def add_force(parser) -> None:
    """``--force``: what lets a command replace output files popgrad did not write."""
    parser.add_argument("--force", action="store_true", help="replace output files that popgrad did not write, or that were changed since (default: refuse them)")


def check_outputs(args, paths, parameter: str = "out") -> None:
    """Refuse, before any work, output files among ``paths`` that popgrad did not write, unless --force
    (:func:`popgrad._io.check_overwrite`)."""
    from .._io import check_overwrite

    check_overwrite(paths, parameter, bool(getattr(args, "force", False)))


@contextlib.contextmanager
def flag_for(parameter: str, flag: str | None):
    """Within this block, the library's refusal of ``parameter`` names ``flag``: where several flags feed
    one parameter (``--seed`` and ``--problem-seed`` both reach a constructor's ``seed``), the message names
    the one the user typed. ``flag`` None leaves messages as they are."""
    from .._validation import InvalidArgument

    try:
        yield
    except InvalidArgument as exc:
        if flag is None or exc.parameter != parameter:
            raise
        message = str(exc).splitlines()[0]
        raise UsageError(flag + message[len(parameter):] if message.startswith(parameter + " ") else f"{flag}: {message}") from None


def add_json_out(parser) -> None:
    """``--out FILE.json`` (and ``--force``): the command's JSON document saved to a file as well."""
    parser.add_argument("--out", default=None, metavar="FILE.json", help="also save the JSON document (what --format json prints) to this file; -: print it")
    add_force(parser)


def check_json_out(args) -> None:
    """Refuse an unusable ``--out`` before any work."""
    from .._io import check_output_file

    if args.out is not None and args.out != "-":
        check_output_file(args.out, "out")
        check_outputs(args, [args.out])


def save_json_out(args, payload) -> bool:
    """Save ``payload`` to ``--out`` (strict JSON); True when it went to standard output (``--out -``),
    which then holds nothing else."""
    from .._io import strict_json, write_text

    if args.out is None:
        return False
    if args.out == "-":
        print_json(payload)
        return True
    write_text(args.out, strict_json(payload) + "\n")
    return False


#: the figure formats by suffix (vector ones first)
FIGURE_FORMATS = {".svg": "svg", ".pdf": "pdf", ".eps": "eps", ".ps": "ps", ".png": "png"}
#: a paper's column and the smallest text a figure printed at that width keeps
COLUMN_INCHES, SMALLEST_POINTS = 3.3, 8.0


def check_figure_path(path, flag: str) -> str:
    """The figure format ``path``'s suffix names (svg, pdf, eps, ps, png), or a UsageError naming ``flag``."""
    suffix = Path(str(path)).suffix.lower()
    if suffix not in FIGURE_FORMATS:
        raise UsageError(f"{flag} {path}: the suffix {suffix or '(none)'} names no figure format; use one of {', '.join(FIGURE_FORMATS)} (vector: .svg, .pdf, .eps)")
    return FIGURE_FORMATS[suffix]


def fit_for_print(figure, wrap: int = 44):
    """Resize ``figure`` to a column (3.3 in wide, the height scaled with it, panels stacked by the caller)
    and raise every text to at least 8 pt, wrapping long titles; returns the figure."""
    import textwrap

    from matplotlib.text import Text

    width, height = figure.get_size_inches()
    figure.set_size_inches(COLUMN_INCHES, max(2.4, height * COLUMN_INCHES / width))
    for text in figure.findobj(Text):
        if text.get_text():
            text.set_fontsize(max(SMALLEST_POINTS, min(text.get_fontsize(), 9.0)))
            if len(text.get_text()) > wrap and "\n" not in text.get_text() and "$" not in text.get_text():
                text.set_text(textwrap.fill(text.get_text(), wrap))
    figure.set_layout_engine("constrained")
    return figure


def save_figure(figure, path, flag: str) -> None:
    """Write ``figure`` fitted for print in the format its suffix names (through popgrad's file boundary)."""
    from .._io import atomic_path

    kind = check_figure_path(path, flag)
    fit_for_print(figure)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=300, format=kind)
