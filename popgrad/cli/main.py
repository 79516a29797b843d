"""The ``popgrad`` command line.

Exit statuses: 0 success; 2 a usage error (bad flags or values: one line on stderr, ``popgrad: error:
...``, no traceback); 3 a scientific negative (``compare --strict`` with an inconsistent prediction,
``derive --check`` with stale tables); 1 an internal error (a bug: one line, and the traceback with
``--traceback``); 124 stopped at ``--timeout`` (one line: how far it got, how long all of it would take);
130 interrupted (one line, nothing partial left).
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings

import numpy as np

from .. import __version__
from .._validation import InvalidArgument
from . import committee, derive, digits, finetuning, hermite, mf, ntk, reproduce, sweep
from .common import EXIT_BUG, EXIT_USAGE, Parser, UsageError, flag_message

__all__ = ["main", "build_parser"]


def build_parser() -> Parser:
    parser = Parser(prog="popgrad", description="Numerical verification of gradient-dynamics theorems.")
    parser.add_argument("--version", action="version", version=f"popgrad {__version__}")
    parser.add_argument("--traceback", action="store_true", help="on an internal error, print the traceback")
    commands = parser.add_subparsers(dest="command", parser_class=Parser)
    finetuning.register(commands)
    committee.register(commands)
    hermite.register(commands)
    derive.register(commands)
    sweep.register(commands)
    reproduce.register(commands)
    mf.register(commands)
    ntk.register(commands)
    digits.register(commands)
    return parser


def main(argv: list | None = None) -> int:
    """Entry point of the ``popgrad`` console script; returns the exit status."""
    parser = build_parser()
    show_traceback = "--traceback" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        if args.command is None:  # the usage on stderr: stdout stays for what a command prints
            parser.print_usage(sys.stderr)
            print("popgrad: error: a command is required (popgrad --help lists them)", file=sys.stderr)
            return EXIT_USAGE
        # floating-point conditions are handled where they matter (divergence, overflow checks): numpy's
        # warnings about them are noise on the command line
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"numpy(\.|$)")
            return args.handler(args)
    except UsageError as exc:
        print(f"popgrad: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InvalidArgument as exc:
        print(f"popgrad: error: {flag_message(str(exc).splitlines()[0], exc.parameter)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("popgrad: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: stop quietly, and keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug: say so, and show it on request
        if show_traceback:
            traceback.print_exc()
        else:
            print(f"popgrad: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (rerun with --traceback for details)", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
