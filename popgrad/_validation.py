"""Checks at the API boundary: each raises ValueError/TypeError naming the parameter and its range."""

from __future__ import annotations

import math
import numbers

import numpy as np

MAX_ORDER = 2000


def check_integer(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if value < low or (high is not None and value > high):
        upper = "inf)" if high is None else f"{high}]"
        raise ValueError(f"{name} must lie in [{low}, {upper}, got {value}")
    return value


def check_order(order) -> int:
    return check_integer(order, "order", 0, MAX_ORDER)


def check_real(value, name: str, low: float | None = None, high: float | None = None, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    bracket = "(" if low_open else "["
    interval = f"{bracket}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{']' if high is not None else ')'}"
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    return value


def check_scale(scale) -> float:
    return check_real(scale, "scale", 0.0, None, low_open=True)


def check_array(value, name: str, shape: tuple | None = None, ndim: int | None = None) -> np.ndarray:
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of real numbers") from None
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {array.shape}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array
