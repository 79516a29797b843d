"""The exact overlap chain (MATH.md §4): one SGD step in law, with cost independent of d.

Because x is Gaussian and every update of u_hat lies along x, the law of m_(t+1) given the past depends
only on m_t. One step draws ``a ~ N(0, G)`` (the pre-activations W x), ``g_hat, q ~ N(0, 1)`` and
``chi ~ chi^2_(n-2)`` (n = d - rank W), sets ``g = m g_hat + sqrt(1-m^2) q`` and

    m' = (m + eta A q sqrt(1-m^2)) / sqrt(1 + eta^2 A^2 (q^2 + chi)).

:func:`pre_activations` and :func:`chain_step` are the one implementation of that step: the simulator
iterates them, and the noise estimate of :mod:`.noise` averages them at fixed m.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ...dynamics.trajectories import record_hit
from ...gaussian.programs import STACK_SIZE
from ...numerics import random_streams as streams
from ...numerics.compiled import SOURCE_VERSION, specialised
from ...numerics.linalg import matvec
from .gradients import gradient_coefficient

__all__ = ["pre_activations", "chain_step", "initial_overlaps", "chain_kernel"]


@njit(cache=True, inline="always")
def pre_activations(L, identity, triangular, z, a):
    """From one step's rank + 2 standard normals ``z`` (drawn with the step's chi-square by
    :func:`popgrad.numerics.random_streams.fill_normal_chi_square`), set ``a = L z ~ N(0, G)``
    (``identity``: G = I, a = z) and return ``(g_hat, q)``, the last two normals.

    The draw stays in the kernel's own loop: the state words returned through one more inlined function
    cost 20% of the chain's speed (measured, 10.7 vs 8.4 M steps/s)."""
    rank = z.shape[0] - 2
    if identity:
        for i in range(rank):
            a[i] = z[i]
    else:
        matvec(L, z, a, triangular)
    return z[rank], z[rank + 1]


@njit(cache=True, inline="always")
def chain_step(code, overlap, a, g_hat, q, chi, eta, lam, c, c_hat, xi, n_t, n_s, parameters, ops, args, d_ops, d_args, stack):
    """One step of the chain from ``overlap`` with the given draws.

    Returns ``(m', A, normalisation)`` where ``normalisation = (m + eta A q s)(1 - 1/sqrt(1 + eps))``,
    ``eps = eta^2 A^2 (q^2 + chi)``, is what the retraction removes (computed without cancellation);
    ``m' = m + eta A q s - normalisation``. An overflow gives m' = nan (reported as divergence)."""
    co = math.sqrt(max(0.0, 1.0 - overlap * overlap))
    g = overlap * g_hat + co * q
    coefficient, _ = gradient_coefficient(code, a, g, g_hat, lam, c, c_hat, xi, n_t, n_s, parameters, ops, args, d_ops, d_args, stack)
    step = eta * coefficient
    epsilon = step * step * (q * q + chi)
    root = math.sqrt(1.0 + epsilon)
    moved = overlap + step * q * co
    if not root < math.inf:
        return math.nan, coefficient, math.nan
    return moved / root, coefficient, moved * epsilon / (root * (1.0 + root))


@njit(cache=True, nogil=True)
def initial_overlaps(start, stop, m, states, seed, first, n, m0):
    """m_0 = first coordinate of a uniform point on S^(n-1), or m0; seeds the trajectories' streams."""
    for j in range(start, stop):
        streams.seed_stream(seed, streams.TRAJECTORIES, first + j, states[j])
        if math.isnan(m0):
            z = streams.normal(states[j])
            m[j] = z / math.sqrt(z * z + streams.chi_square(states[j], n - 1.0))
        else:
            m[j] = m0


@specialised
def chain_kernel(code: int, identity: bool, triangular: bool):
    """``advance`` for the activation fast path ``code`` and the shape of the Gram factor (G = I, or L
    lower triangular), all compile-time constants.

    ``advance`` runs trajectories start..stop-1 on blocks of :func:`popgrad.numerics.random_streams.run_blocks`
    (each trajectory owns its stream, so threads never change the numbers), with the stream state in
    registers (:func:`popgrad.numerics.random_streams.load_words`): measured at k = 20 on one thread, as
    fast as a ``parallel=True`` loop (10.6 M steps/s) for a third of its compilation time (3 s, not 10 s)."""
    version = SOURCE_VERSION

    @njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
    def advance(start, stop, m, states, hits, level, stop_at_hit, offset, L, eta, n, steps, lam, c, c_hat, xi, n_t, n_s, parameters, ops, args, d_ops, d_args):
        """``steps`` steps of trajectories start..stop-1 from step ``offset``; ``hits[j]`` (-1 until then)
        records the first step with m^2 >= ``level``, where trajectory j stops when ``stop_at_hit``."""
        k, rank = L.shape
        z = np.empty(rank + 2)
        a = np.empty(k)
        stack = np.empty(STACK_SIZE)
        for j in range(start, stop):
            if stop_at_hit and hits[j] >= 0:
                continue
            s0, s1, s2, s3 = streams.load_words(states[j])
            overlap = m[j]
            for step in range(steps):
                chi, s0, s1, s2, s3 = streams.fill_normal_chi_square(z, n - 2.0, s0, s1, s2, s3)
                g_hat, q = pre_activations(L, identity, triangular, z, a)
                overlap, _, _ = chain_step(code, overlap, a, g_hat, q, chi, eta, lam, c, c_hat, xi, n_t, n_s, parameters, ops, args, d_ops, d_args, stack)
                if record_hit(hits, j, overlap, level, offset + step + 1) and stop_at_hit:
                    break
            m[j] = overlap
            streams.store_words(states[j], s0, s1, s2, s3)
        return len(version)

    return advance
