"""numba building blocks shared by the fast kernels: activation evaluation and random streams.

Everything here takes plain arrays and scalars. Activations are passed as the tuple
``Activation.jit_spec = (kind, parameters, ops, args, d_ops, d_args)``: common activations have a
hand-written branch, everything else runs its compiled stack program (``popgrad.expressions``).

Random numbers come from one xoshiro256** stream per trajectory, seeded by SplitMix64 from
``(seed, stream index)``. A trajectory's numbers therefore depend only on the seed and its index, never
on the number of threads or on how trajectories are batched. Normals use a 256-layer ziggurat whose
layer index and value come from disjoint bits of one 64-bit draw.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

KIND_PROGRAM, KIND_RELU, KIND_LEAKY_RELU, KIND_ABS, KIND_STEP, KIND_POLYNOMIAL = 0, 1, 2, 3, 4, 5
KIND_TANH, KIND_ERF, KIND_SIGMOID = 6, 7, 8

STACK_SIZE = 64

# ------------------------------------------------------------------------------------------------
# stack programs (opcodes as in popgrad.expressions)
# ------------------------------------------------------------------------------------------------


@njit(cache=True)
def _unary(op, x):
    if op == 10:
        return math.exp(x)
    if op == 11:
        return math.log(x)
    if op == 12:
        return math.sin(x)
    if op == 13:
        return math.cos(x)
    if op == 14:
        return math.tanh(x)
    if op == 15:
        return math.sinh(x)
    if op == 16:
        return math.cosh(x)
    if op == 17:
        return math.atan(x)
    if op == 18:
        return math.asinh(x)
    if op == 19:
        return math.erf(x)
    if op == 20:
        return math.erfc(x)
    if op == 21:
        return abs(x)
    if op == 22:
        return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)
    if op == 23:
        return 1.0 if x > 0 else (0.0 if x < 0 else 0.5)
    if op == 24:
        return 0.0
    if op == 30:
        return math.sqrt(x)
    return math.nan


@njit(cache=True)
def program_eval(ops, args, stack, z):
    """Evaluate a stack program at ``z`` using ``stack`` (float64 scratch of length ≥ the program)."""
    top = 0
    for i in range(ops.shape[0]):
        op = ops[i]
        if op == 0:
            stack[top] = z
            top += 1
        elif op == 1:
            stack[top] = args[i]
            top += 1
        elif op == 2:
            top -= 1
            stack[top - 1] = stack[top - 1] + stack[top]
        elif op == 3:
            top -= 1
            stack[top - 1] = stack[top - 1] * stack[top]
        elif op == 4:
            top -= 1
            stack[top - 1] = stack[top - 1] ** stack[top]
        elif op == 5:
            stack[top - 1] = stack[top - 1] ** args[i]
        else:
            stack[top - 1] = _unary(op, stack[top - 1])
    return stack[0]


@njit(cache=True, inline="always")
def activation_value(kind, parameters, ops, args, stack, z):
    """``sigma(z)`` for an activation given by its jit spec."""
    if kind == KIND_RELU:
        return z if z > 0.0 else 0.0
    if kind == KIND_LEAKY_RELU:
        return z if z > 0.0 else parameters[0] * z
    if kind == KIND_ABS:
        return abs(z)
    if kind == KIND_STEP:
        return 1.0 if z > 0.0 else (0.0 if z < 0.0 else 0.5)
    if kind == KIND_POLYNOMIAL:
        value = 0.0
        for n in range(parameters.shape[0] - 1, -1, -1):
            value = value * z + parameters[n]
        return value
    if kind == KIND_TANH:
        return math.tanh(z)
    if kind == KIND_ERF:
        return math.erf(z)
    if kind == KIND_SIGMOID:
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0.0 else math.exp(z) / (1.0 + math.exp(z))
    return program_eval(ops, args, stack, z)


@njit(cache=True, inline="always")
def activation_derivative(kind, parameters, d_ops, d_args, stack, z):
    """``sigma'(z)`` pointwise (0 where sigma jumps: Dirac parts carry no per-sample gradient)."""
    if kind == KIND_RELU:
        return 1.0 if z > 0.0 else (0.0 if z < 0.0 else 0.5)
    if kind == KIND_LEAKY_RELU:
        return 1.0 if z > 0.0 else (parameters[0] if z < 0.0 else 0.5 * (1.0 + parameters[0]))
    if kind == KIND_ABS:
        return 1.0 if z > 0.0 else (-1.0 if z < 0.0 else 0.0)
    if kind == KIND_STEP:
        return 0.0
    if kind == KIND_POLYNOMIAL:
        value = 0.0
        for n in range(parameters.shape[0] - 1, 0, -1):
            value = value * z + n * parameters[n]
        return value
    if kind == KIND_TANH:
        t = math.tanh(z)
        return 1.0 - t * t
    if kind == KIND_ERF:
        return 1.1283791670955126 * math.exp(-z * z)
    if kind == KIND_SIGMOID:
        s = 1.0 / (1.0 + math.exp(-z)) if z >= 0.0 else math.exp(z) / (1.0 + math.exp(z))
        return s * (1.0 - s)
    return program_eval(d_ops, d_args, stack, z)


@njit(cache=True, inline="always")
def matvec(matrix, vector, out, triangular):
    """``out = matrix @ vector[:columns]`` (only the lower triangle when ``triangular``)."""
    columns = matrix.shape[1]
    for i in range(matrix.shape[0]):
        total = 0.0
        for r in range(min(i + 1, columns) if triangular else columns):
            total += matrix[i, r] * vector[r]
        out[i] = total


# ------------------------------------------------------------------------------------------------
# random streams
# ------------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _splitmix64(x):
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    z = x
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x, z ^ (z >> np.uint64(31))


@njit(cache=True)
def seed_stream(seed, stream, state):
    """Fill ``state`` (uint64[4]) with the xoshiro256** state of stream ``stream`` under ``seed``."""
    x = np.uint64(seed) * np.uint64(0xD1B54A32D192ED03) + np.uint64(stream) * np.uint64(0x8CB92BA72F3D8DD7)
    x, _ = _splitmix64(x)
    for i in range(4):
        x, value = _splitmix64(x)
        state[i] = value


@njit(cache=True, inline="always")
def _rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(cache=True, inline="always")
def next_u64(state):
    result = _rotl(state[1] * np.uint64(5), 7) * np.uint64(9)
    t = state[1] << np.uint64(17)
    state[2] ^= state[0]
    state[3] ^= state[1]
    state[1] ^= state[2]
    state[0] ^= state[3]
    state[2] ^= t
    state[3] = _rotl(state[3], 45)
    return result


@njit(cache=True, inline="always")
def uniform(state):
    """Uniform on (0, 1): 53 random bits, never exactly 0."""
    return (float(np.int64(next_u64(state) >> np.uint64(11))) + 0.5) * 1.1102230246251565e-16


def _ziggurat_tables():
    layers, r, v = 256, 3.6541528853610088, 0.00492867323399
    x = np.zeros(layers + 1)
    x[0], x[1] = v / math.exp(-0.5 * r * r), r
    for i in range(1, layers - 1):
        x[i + 1] = math.sqrt(-2.0 * math.log(v / x[i] + math.exp(-0.5 * x[i] * x[i])))
    x[layers] = 0.0
    return x, np.exp(-0.5 * x * x)


_ZIG_X, _ZIG_F = _ziggurat_tables()
_ZIG_R = 3.6541528853610088


@njit(cache=True, inline="always")
def normal(state):
    """A standard normal draw (256-layer ziggurat, exact)."""
    while True:
        bits = next_u64(state)
        i = np.int64(bits & np.uint64(255))
        u = 2.0 * (float(np.int64(bits >> np.uint64(11))) * 1.1102230246251565e-16) - 1.0
        x = u * _ZIG_X[i]
        if abs(x) < _ZIG_X[i + 1]:
            return x
        if i == 0:
            while True:
                tail = -math.log(uniform(state)) / _ZIG_R
                y = -math.log(uniform(state))
                if y + y > tail * tail:
                    return _ZIG_R + tail if u > 0.0 else -_ZIG_R - tail
        if _ZIG_F[i + 1] + (_ZIG_F[i] - _ZIG_F[i + 1]) * uniform(state) < math.exp(-0.5 * x * x):
            return x


@njit(cache=True)
def gamma(state, shape):
    """A Gamma(shape, 1) draw (Marsaglia–Tsang; boosted for shape < 1). shape ≤ 0 gives 0."""
    if shape <= 0.0:
        return 0.0
    boost = 1.0
    if shape < 1.0:
        boost = uniform(state) ** (1.0 / shape)
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = normal(state)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u = uniform(state)
        if u < 1.0 - 0.0331 * x * x * x * x or math.log(u) < 0.5 * x * x + d * (1.0 - v + math.log(v)):
            return d * v * boost


@njit(cache=True)
def chi_square(state, dof):
    """A chi-square draw with ``dof`` degrees of freedom (exact, via Gamma)."""
    return 2.0 * gamma(state, 0.5 * dof)


def run_blocks(kernel, count: int, *args) -> None:
    """Call ``kernel(start, stop, *args)`` on contiguous blocks of ``range(count)``, one block per thread.

    Kernels are compiled with ``nogil=True`` and loop over their block; items (trajectories, random
    streams) own their random streams, so the split never changes the numbers. Threads:
    ``numba.get_num_threads()`` (``NUMBA_NUM_THREADS`` or ``numba.set_num_threads``). Serial kernels on a
    thread pool compile in about half the time of numba's parallel loops.
    """
    threads = max(1, min(numba.get_num_threads(), count))
    edges = np.linspace(0, count, threads + 1).astype(np.int64)
    if threads == 1:
        kernel(0, count, *args)
        return
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(kernel, int(edges[i]), int(edges[i + 1]), *args) for i in range(threads)]:
            future.result()


@njit(cache=True)
def _normal_samples(seed, streams, per_stream):
    out = np.empty((streams, per_stream))
    for s in range(streams):
        state = np.empty(4, dtype=np.uint64)
        seed_stream(seed, s, state)
        for j in range(per_stream):
            out[s, j] = normal(state)
    return out


@njit(cache=True)
def _chi_square_samples(seed, streams, per_stream, dof):
    out = np.empty((streams, per_stream))
    for s in range(streams):
        state = np.empty(4, dtype=np.uint64)
        seed_stream(seed, s, state)
        for j in range(per_stream):
            out[s, j] = chi_square(state, dof)
    return out


def normal_samples(seed: int, streams: int, per_stream: int) -> np.ndarray:
    """``(streams, per_stream)`` standard normals, row s from stream s (for tests and diagnostics)."""
    return _normal_samples(np.uint64(seed), streams, per_stream)


def chi_square_samples(seed: int, streams: int, per_stream: int, dof: float) -> np.ndarray:
    """``(streams, per_stream)`` chi-square draws, row s from stream s (for tests and diagnostics)."""
    return _chi_square_samples(np.uint64(seed), streams, per_stream, float(dof))
