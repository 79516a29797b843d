"""The ``popgrad`` command line: one module per group of commands."""

from .main import build_parser, main

__all__ = ["main", "build_parser"]
