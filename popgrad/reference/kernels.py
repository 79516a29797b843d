"""Independent routes to the two-scale kernels ``K(s1, s2, rho) = E[sigma(s1 X) sigma(s2 Y)]`` (and K'
with sigma'): adaptive 2-D quadrature in float64 (breakpoints at kinks), nested mpmath quadrature for
spot checks, and Monte Carlo with a standard error. Each returns an :class:`~popgrad.reference.Estimate`.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
from scipy import integrate

from .._validation import InvalidArgument, check_integer, check_real, check_scale, check_memory
from ..gaussian.activations import activation
from ..gaussian.programs import mpmath_function
from .estimate import Estimate

__all__ = ["kernel_quadrature", "kernel_mpmath", "kernel_monte_carlo"]


def _kernel_arguments(sigma, rho, s1, s2) -> tuple:
    """The activation, the correlation in [-1, 1] and the two scales, checked at the boundary."""
    return activation(sigma), check_real(rho, "rho", -1.0, 1.0), check_scale(s1, "s1"), check_scale(s2, "s2")


def kernel_quadrature(sigma, rho: float, s1: float = 1.0, s2: float = 1.0, derivative: bool = False) -> Estimate:
    """Adaptive 2-D quadrature (scipy) of the kernel in float64, with scipy's error estimate.

    X = g1, Y = rho g1 + sqrt(1 - rho^2) g2; the inner integral over g2 is split at the kinks of
    sigma(s2 Y), the outer over g1 at the kinks of sigma(s1 X). Not defined for the Dirac kernel of a
    jump (step').

    Parameters
    ----------
    sigma : str or Activation
    rho : float in [-1, 1]
    s1, s2 : float, default 1
    derivative : bool, default False

    Returns
    -------
    Estimate
    """
    sigma, rho, s1, s2 = _kernel_arguments(sigma, rho, s1, s2)
    if derivative and sigma.jumps:
        raise InvalidArgument(f"kernel_quadrature: sigma' of {sigma.name!r} has a Dirac part; use the closed form")
    f = sigma.scalar[1] if derivative else sigma.scalar[0]
    limit = 12.0
    co = math.sqrt(max(0.0, 1.0 - rho * rho))

    def inner(g1):
        mean = rho * g1
        if co == 0.0:
            return f(s2 * mean)
        points = [(k / s2 - mean) / co for k in sigma.breakpoints]
        points = [p for p in points if -limit < p < limit]
        value, _ = integrate.quad(lambda g2: f(s2 * (mean + co * g2)) * math.exp(-0.5 * g2 * g2), -limit, limit, points=points or None, epsabs=1e-13, epsrel=1e-12, limit=200)
        return value / math.sqrt(2 * math.pi)

    points = [k / s1 for k in sigma.breakpoints if -limit < k / s1 < limit]
    value, error = integrate.quad(lambda g1: f(s1 * g1) * inner(g1) * math.exp(-0.5 * g1 * g1), -limit, limit, points=points or None, epsabs=1e-12, epsrel=1e-11, limit=200)
    return Estimate(value / math.sqrt(2 * math.pi), error / math.sqrt(2 * math.pi), "2-D adaptive quadrature (scipy)")


def kernel_mpmath(sigma, rho, s1=1, s2=1, derivative: bool = False) -> Estimate:
    """The kernel by nested mpmath quadrature at the working precision (slow; for spot checks); the error
    is mpmath's estimate for the outer integral.

    Parameters
    ----------
    sigma, rho, s1, s2, derivative
        As in :func:`kernel_quadrature` (numbers at the working precision).

    Returns
    -------
    Estimate
    """
    sigma = activation(sigma)
    check_real(float(rho), "rho", -1.0, 1.0)
    check_scale(float(s1), "s1")
    check_scale(float(s2), "s2")
    if derivative and sigma.jumps:
        raise InvalidArgument(f"kernel_mpmath: sigma' of {sigma.name!r} has a Dirac part; use the closed form")
    function = mpmath_function(sigma.derivative_program if derivative else sigma.program)
    rho, s1, s2 = mpmath.mpf(rho), mpmath.mpf(s1), mpmath.mpf(s2)
    co = mpmath.sqrt(1 - rho * rho)
    limit = int(math.sqrt(2 * math.log(10) * (mpmath.mp.dps + 5))) + 2
    normaliser = 1 / mpmath.sqrt(2 * mpmath.pi)

    def inner(g1):
        mean = rho * g1
        kinks = [(k / s2 - mean) / co for k in sigma.breakpoints if abs((k / s2 - mean) / co) < limit]
        points = [mpmath.mpf(-limit)] + sorted(kinks) + [mpmath.mpf(limit)]
        return mpmath.quad(lambda g2: function(s2 * (mean + co * g2)) * mpmath.exp(-g2 * g2 / 2), points) * normaliser

    points = [mpmath.mpf(-limit)] + sorted(mpmath.mpf(k) / s1 for k in sigma.breakpoints) + [mpmath.mpf(limit)]
    value, error = mpmath.quad(lambda g1: function(s1 * g1) * inner(g1) * mpmath.exp(-g1 * g1 / 2), points, error=True)
    return Estimate(value * normaliser, error * normaliser, f"nested tanh-sinh quadrature (mpmath, {mpmath.mp.dps} digits)")


def kernel_monte_carlo(sigma, rho: float, s1: float = 1.0, s2: float = 1.0, derivative: bool = False, samples: int = 1_000_000, seed: int = 0) -> Estimate:
    """Monte Carlo estimate of the kernel; the error is the standard error (numpy Generator with ``seed``).

    Parameters
    ----------
    sigma, rho, s1, s2, derivative
        As in :func:`kernel_quadrature`.
    samples : int, default 1 000 000
    seed : int, default 0

    Returns
    -------
    Estimate
    """
    sigma, rho, s1, s2 = _kernel_arguments(sigma, rho, s1, s2)
    seed = check_integer(seed, "seed", 0, 2**63 - 1)
    samples = check_integer(samples, "samples", 2)
    check_memory(8.0 * 4 * samples, f"{samples} Monte Carlo samples", "samples")  # two normal draws, the products, a temporary
    generator = np.random.default_rng(seed)
    g1 = generator.standard_normal(samples)
    g2 = rho * g1 + math.sqrt(max(0.0, 1 - rho * rho)) * generator.standard_normal(samples)
    function = sigma.prime if derivative else sigma
    values = function(s1 * g1) * function(s2 * g2)
    return Estimate(float(values.mean()), float(values.std(ddof=1) / math.sqrt(samples)), f"Monte Carlo ({samples} samples)")
