"""ODE solvers on vector states, one per file behind :mod:`.base`'s interface."""

from . import dopri5, radau, rk4

#: solver name -> module (each has ORDER and a function of the same name)
SOLVERS = {"rk4": rk4, "dopri5": dopri5, "radau": radau}
