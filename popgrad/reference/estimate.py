"""The one result type of the reference routes."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Estimate"]


@dataclass(frozen=True)
class Estimate:
    """A value from an independent route, its error (quadrature error estimate, or the Monte Carlo
    standard error) and how it was computed.

    Attributes
    ----------
    value : float, ndarray or mpmath number
    error : float, ndarray or mpmath number
        Error estimate (quadrature) or standard error (Monte Carlo).
    method : str
        How the value was computed.

    Examples
    --------
    >>> Estimate(0.5, 1e-12, "quadrature").value
    0.5
    """

    value: object
    error: object
    method: str

    def __float__(self) -> float:
        return float(self.value)
