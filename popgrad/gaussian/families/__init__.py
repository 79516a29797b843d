"""Closed-form families of activations, registered once: each owns its exact mu_p(r), its sympy kernels
K and K', and its numba fast path (:mod:`.fast`)."""

from . import erf, leaky_relu, numeric, polynomial, step, stein
from .base import Family, NoClosedForm

__all__ = ["FAMILIES", "family", "Family", "NoClosedForm"]

#: every family by name
FAMILIES = {f.name: f for f in leaky_relu.FAMILIES + (step.FAMILY, polynomial.FAMILY, stein.FAMILY, erf.FAMILY, numeric.FAMILY)}


def family(name: str) -> Family:
    return FAMILIES[name]
