"""A module imported on first use: the evaluation paths name sympy and mpmath (the derive and verify side)
without importing them, so that loading a kernel does not load the computer algebra (1.3 s).

Examples
--------
>>> math = LazyModule("math")
>>> math.sqrt(4.0)
2.0
"""

from __future__ import annotations

from importlib import import_module

__all__ = ["LazyModule"]


class LazyModule:
    """Stands for the module ``name``; the first attribute looked up imports it."""

    __slots__ = ("_name",)

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        return getattr(import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"LazyModule({self._name!r})"
