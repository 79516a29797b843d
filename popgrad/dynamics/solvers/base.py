"""The small interface every solver shares.

A right-hand side is a numba function ``rhs(t, y, parameters, out)`` that writes ``dy/dt`` into ``out``
(all float64; ``y``, ``parameters`` and ``out`` contiguous 1-D arrays), compiled with
:data:`RHS_SIGNATURE` — :func:`right_hand_side` does that. Solvers take it as a first-class function of
that type, so one compiled (and cached) solver serves every right-hand side at the cost of an indirect
call per evaluation.
"""

from __future__ import annotations

from pathlib import Path

from numba import njit, types

__all__ = ["RHS_SIGNATURE", "RHS_TYPE", "right_hand_side"]

#: ``rhs(t, y, parameters, out)``
RHS_SIGNATURE = types.void(types.float64, types.float64[::1], types.float64[::1], types.float64[::1])
#: the type solvers declare for their right-hand side argument
RHS_TYPE = types.FunctionType(RHS_SIGNATURE)

STATUS_OK, STATUS_EVENT, STATUS_MAX_STEPS, STATUS_NOT_FINITE = 0, 1, 2, 3


def compiled_on_first_use(signature):
    """Decorate a solver: compiled (and cached) with its explicit ``signature`` when first called, not at
    import — ``import popgrad`` then pays nothing for solvers it does not use."""

    def decorate(function):
        compiled = None

        def solver(*args):
            nonlocal compiled
            if compiled is None:
                compiled = njit(signature, cache=True)(function)
            return compiled(*args)

        solver.__doc__, solver.__name__, solver.__wrapped__ = function.__doc__, function.__name__, function
        return solver

    return decorate


def right_hand_side(function):
    """Compile ``function(t, y, parameters, out)`` as a right-hand side (cached on disk when it is defined
    in a file; functions typed at a prompt cannot be).

    Parameters
    ----------
    function : callable
        ``function(t, y, parameters, out)``, numba-compilable.

    Returns
    -------
    numba dispatcher
        Usable in :class:`ODE`.

    Examples
    --------
    >>> @right_hand_side
    ... def decay(t, y, parameters, out):
    ...     out[:] = -parameters[0] * y
    >>> import numpy as np
    >>> out = np.empty(2)
    >>> decay(0.0, np.array([1.0, 2.0]), np.array([0.5]), out)
    >>> out.tolist()
    [-0.5, -1.0]
    """
    return njit(RHS_SIGNATURE, cache=Path(function.__code__.co_filename).is_file())(function)
