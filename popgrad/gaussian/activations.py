"""The activation catalogue: declarative activation objects and the verbs that find them.

An :class:`Activation` knows its sympy expression ``sigma(z)``, its derivative, where it has kinks, and
its *family* (:mod:`popgrad.gaussian.families`), which owns the closed forms of its Hermite coefficients
and kernels and its numba fast path. Evaluation in numpy and mpmath goes through one compiled stack
program (:mod:`popgrad.gaussian.programs`). An expression that equals a catalogue member (``"erf(z)"``,
``"relu(z)"``) is that member.

Examples
--------
>>> from popgrad import activation
>>> relu = activation("relu")
>>> relu.derivative
sign(z)/2 + 1/2
>>> activation("He_3").expression
z**3 - 3*z
>>> activation("leaky_relu(0.1)").name
'leaky_relu(0.1)'
>>> activation("tanh(z) + z**2").family
'numeric'
>>> activation("erf(z)") is activation("erf")
True
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache

import mpmath
import numpy as np
import sympy
from numba import njit

from .._validation import InvalidArgument, InvalidArgumentType
from .expressions import Z, ExpressionError, parse_expression
from .families import FAMILIES, Family
from .families.fast import activation_derivative, activation_value
from .families.stein import SteinForm
from .programs import STACK_SIZE, Program, compile_program, evaluate_numpy, mpmath_function

__all__ = ["Activation", "activation", "catalogue", "CATALOGUE_NAMES"]

MAX_POLYNOMIAL_DEGREE = 64


@dataclass(frozen=True)
class Activation:
    """An activation function ``sigma(z)``.

    Attributes
    ----------
    name : str
        The name that :func:`activation` maps back to this object (a catalogue name or an expression).
    expression : sympy.Expr
        ``sigma`` in the real symbol ``z``.
    family : str
        The name of its family in :data:`popgrad.gaussian.families.FAMILIES`: ``polynomial``, ``relu``,
        ``leaky_relu``, ``abs``, ``step``, ``erf``, ``stein`` (a derivative is a polynomial times a
        Gaussian: gelu) or ``numeric`` (no closed form; coefficients by quadrature, and said so).
    slope : float
        Negative-side slope a of the leaky ReLU family (relu: 0, abs: -1); 0 for other families.
    breakpoints : tuple of float
        Points where ``sigma`` or a low derivative is not smooth; quadrature splits there.
    stein : SteinForm or None
        The Stein data for the ``stein`` family.
    description : str
        A one-line description in words (e.g. "max(z, 0)"; "custom" for parsed expressions).
    """

    name: str
    expression: sympy.Expr
    family: str = "numeric"
    slope: float = 0.0
    breakpoints: tuple = ()
    stein: SteinForm | None = None
    description: str = ""

    @cached_property
    def derivative(self) -> sympy.Expr:
        """``sigma'(z)`` as a sympy expression (``DiracDelta`` where sigma jumps)."""
        return sympy.diff(self.expression, Z)

    @property
    def family_spec(self) -> Family:
        return FAMILIES[self.family]

    @property
    def has_closed_form(self) -> bool:
        """Whether exact symbolic Hermite coefficients exist for every order."""
        return self.family_spec.exact

    @cached_property
    def polynomial_coefficients(self) -> np.ndarray | None:
        """Monomial coefficients ``a_0..a_q`` (float64) when sigma is a polynomial, else None."""
        if self.family != "polynomial":
            return None
        poly = sympy.Poly(self.expression, Z)
        return np.array([float(c) for c in reversed(poly.all_coeffs())], dtype=np.float64)

    @cached_property
    def program(self) -> Program:
        return compile_program(self.expression)

    @cached_property
    def derivative_program(self) -> Program:
        return compile_program(self.derivative)

    @property
    def jumps(self) -> bool:
        """True when sigma is discontinuous, so that sigma' has a Dirac part (step-like activations)."""
        return self.derivative.has(sympy.DiracDelta)

    def __call__(self, z) -> np.ndarray:
        """``sigma(z)`` elementwise in float64."""
        return evaluate_numpy(self.program, z)

    def prime(self, z) -> np.ndarray:
        """``sigma'(z)`` elementwise in float64 (Dirac parts evaluate to 0 pointwise)."""
        return evaluate_numpy(self.derivative_program, z)

    @cached_property
    def scalar(self):
        """``(sigma, sigma')`` as fast scalar Python callables (numba-backed), for scalar quadrature."""
        code, parameters, ops, args, d_ops, d_args = self.jit_spec
        stack = np.empty(STACK_SIZE)

        def value(z: float) -> float:
            return _scalar_value(code, parameters, ops, args, stack, z)

        def slope(z: float) -> float:
            return _scalar_derivative(code, parameters, d_ops, d_args, stack, z)

        return value, slope

    @cached_property
    def jit_spec(self) -> tuple:
        """Plain arrays for the numba kernels: ``(code, parameters, ops, args, d_ops, d_args)``; ``code``
        selects the family's fast path and is a compile-time constant of the specialised kernels."""
        spec = self.family_spec
        return (
            int(spec.fast_code(self)),
            np.ascontiguousarray(spec.parameters(self), dtype=np.float64),
            self.program.ops,
            self.program.args,
            self.derivative_program.ops,
            self.derivative_program.args,
        )

    def __str__(self) -> str:
        return self.name


@njit(cache=True)
def _scalar_value(code, parameters, ops, args, stack, z):
    return activation_value(code, parameters, ops, args, stack, z)


@njit(cache=True)
def _scalar_derivative(code, parameters, d_ops, d_args, stack, z):
    return activation_derivative(code, parameters, d_ops, d_args, stack, z)


def _relu_expression():
    return (Z + sympy.Abs(Z)) / 2


def _leaky_relu(slope: sympy.Rational, name: str) -> Activation:
    return Activation(
        name=name,
        expression=slope * Z + (1 - slope) * _relu_expression(),
        family="leaky_relu",
        slope=float(slope),
        breakpoints=(0.0,),
        description="leaky ReLU max(z, a z)",
    )


def _polynomial(expression: sympy.Expr, name: str, description: str) -> Activation:
    degree = sympy.Poly(expression, Z).degree()
    if degree > MAX_POLYNOMIAL_DEGREE:
        raise InvalidArgument(f"activation: polynomial degree {degree} exceeds {MAX_POLYNOMIAL_DEGREE}")
    return Activation(name=name, expression=sympy.expand(expression), family="polynomial", description=description)


def _probabilists_hermite(p: int) -> sympy.Expr:
    return sympy.expand(sympy.hermite_prob(p, Z))


_SQRT_2PI = sympy.sqrt(2 * sympy.pi)

_BASE = {
    "linear": lambda: _polynomial(Z, "linear", "identity z"),
    "quadratic": lambda: _polynomial(Z**2, "quadratic", "z^2"),
    "cubic": lambda: _polynomial(Z**3, "cubic", "z^3"),
    "relu": lambda: Activation("relu", _relu_expression(), "relu", breakpoints=(0.0,), description="max(z, 0)"),
    "leaky_relu": lambda: _leaky_relu(sympy.Rational(1, 100), "leaky_relu"),
    "abs": lambda: Activation("abs", sympy.Abs(Z), "abs", slope=-1.0, breakpoints=(0.0,), description="|z|"),
    "step": lambda: Activation(
        "step", sympy.Heaviside(Z), "step", breakpoints=(0.0,), description="Heaviside step, 1/2 at 0"
    ),
    "tanh": lambda: Activation("tanh", sympy.tanh(Z), description="hyperbolic tangent"),
    "erf": lambda: Activation(
        "erf",
        sympy.erf(Z),
        "erf",
        stein=SteinForm(1, 2 / sympy.sqrt(sympy.pi) + 0 * Z, sympy.Integer(1), {0: lambda r: sympy.Integer(0)}),
        description="error function",
    ),
    "sigmoid": lambda: Activation("sigmoid", 1 / (1 + sympy.exp(-Z)), description="logistic 1/(1+e^-z)"),
    "softplus": lambda: Activation("softplus", sympy.log(1 + sympy.exp(Z)), description="log(1+e^z)"),
    "gelu": lambda: Activation(
        "gelu",
        Z * (1 + sympy.erf(Z / sympy.sqrt(2))) / 2,
        "stein",
        stein=SteinForm(
            2,
            (2 - Z**2) / _SQRT_2PI,
            sympy.Rational(1, 2),
            {0: lambda r: r**2 / sympy.sqrt(2 * sympy.pi * (1 + r**2)), 1: lambda r: r / 2},
        ),
        description="z Phi(z) (exact GELU)",
    ),
    "silu": lambda: Activation("silu", Z / (1 + sympy.exp(-Z)), description="z sigmoid(z) (swish)"),
}

#: Names of the catalogue; parameterised members are also reachable as ``leaky_relu(a)``, ``He_p``,
#: ``h_p`` and ``poly(a0, a1, ...)``, and any admitted expression in ``z`` is a custom activation.
CATALOGUE_NAMES = tuple(_BASE) + ("He_p", "h_p", "poly(a0,a1,...)")

_HERMITE = re.compile(r"^(He|h)_?(\d+)$")
_CALL = re.compile(r"^(leaky_relu|poly|polynomial)\s*\((.*)\)$")
_CACHE_SIZE = 256


def _number(text: str, what: str) -> sympy.Rational:
    try:
        value = parse_expression(text)
    except ExpressionError:
        value = None
    if value is None or not value.is_number or not value.is_real:
        raise InvalidArgument(f"activation: {what} must be a real number, got {text.strip()!r}")
    return sympy.nsimplify(value, rational=True) if value.is_Float else value


def activation(spec: str | Activation) -> Activation:
    """Look up or build an activation.

    Parameters
    ----------
    spec : str or Activation
        A catalogue name (``relu``, ``tanh``, ...), ``leaky_relu(a)``, ``He_p`` or ``h_p`` (p ≤ 64),
        ``poly(a0, a1, ...)`` (monomial coefficients, lowest first), or an expression in ``z`` parsed
        through the whitelist of :func:`popgrad.expressions.parse_expression`.

    Returns
    -------
    Activation
        Frozen: name, sympy expression, family and the family's parameters.

    Raises
    ------
    InvalidArgument
        (a ValueError) for an unknown name or an expression outside the admitted language; the message
        lists the catalogue.

    Examples
    --------
    >>> activation("h_2").expression
    sqrt(2)*z**2/2 - sqrt(2)/2
    >>> activation("poly(0, 1, 1/2)").expression
    z**2/2 + z
    >>> activation("gamma(z)")
    Traceback (most recent call last):
    ...
    popgrad._validation.InvalidArgument: activation: unknown 'gamma(z)' (known: linear, quadratic, cubic, relu, leaky_relu, abs, step, tanh, erf, sigmoid, softplus, gelu, silu, He_p, h_p, poly(a0,a1,...), or an expression in z): expression: function 'gamma' is not allowed (use z, pi, e and the functions exp, log, sin, cos, tanh, sinh, cosh, atan, asinh, erf, erfc, abs, sign, heaviside, sqrt, relu, sigmoid, softplus)
    """
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise InvalidArgumentType(f"activation: expected a name or expression string, got {type(spec).__name__}")
    return _build(spec.strip())


@lru_cache(maxsize=_CACHE_SIZE)
def _build(key: str) -> Activation:
    if key in _BASE:
        return _BASE[key]()
    match = _HERMITE.match(key)
    if match:
        kind, p = match.group(1), int(match.group(2))
        if p > MAX_POLYNOMIAL_DEGREE:
            raise InvalidArgument(f"activation: Hermite order {p} exceeds {MAX_POLYNOMIAL_DEGREE}")
        he = _probabilists_hermite(p)
        if kind == "He":
            return _polynomial(he, f"He_{p}", f"probabilists' Hermite polynomial He_{p}")
        return _polynomial(he / sympy.sqrt(sympy.factorial(p)), f"h_{p}", f"normalised Hermite He_{p}/sqrt({p}!)")
    match = _CALL.match(key)
    if match:
        function, inside = match.group(1), match.group(2)
        arguments = [a for a in inside.split(",")]
        if function == "leaky_relu":
            if len(arguments) != 1:
                raise InvalidArgument("activation: leaky_relu takes one slope, e.g. leaky_relu(0.1)")
            slope = _number(arguments[0], "the leaky_relu slope")
            if abs(float(slope)) > 1e3:
                raise InvalidArgument("activation: the leaky_relu slope must lie in [-1000, 1000]")
            return _leaky_relu(slope, f"leaky_relu({arguments[0].strip()})")
        coefficients = [_number(a, "a polynomial coefficient") for a in arguments]
        if len(coefficients) - 1 > MAX_POLYNOMIAL_DEGREE:
            raise InvalidArgument(f"activation: polynomial degree exceeds {MAX_POLYNOMIAL_DEGREE}")
        expression = sum((c * Z**n for n, c in enumerate(coefficients)), sympy.Integer(0))
        if expression.is_number:
            raise InvalidArgument("activation: a constant polynomial has no gradient; give a non-constant one")
        name = "poly(" + ", ".join(a.strip() for a in arguments) + ")"
        return _polynomial(expression, name, "polynomial with monomial coefficients " + inside)
    return _custom(key)


def _custom(key: str) -> Activation:
    try:
        expression = parse_expression(key)
    except ExpressionError as exc:
        known = ", ".join(CATALOGUE_NAMES)
        raise InvalidArgument(f"activation: unknown {key!r} (known: {known}, or an expression in z): {exc}") from None
    if Z not in expression.free_symbols:
        raise InvalidArgument(f"activation: {key!r} does not depend on z")
    member = _catalogue_member(expression)
    if member is not None:
        return member
    if expression.is_polynomial(Z):
        poly = sympy.Poly(expression, Z)
        if poly.degree() > MAX_POLYNOMIAL_DEGREE:
            raise InvalidArgument(f"activation: polynomial degree {poly.degree()} exceeds {MAX_POLYNOMIAL_DEGREE}")
        return Activation(name=key, expression=sympy.expand(expression), family="polynomial", description="custom")
    obstruction = not_square_integrable(expression)
    if obstruction:
        raise InvalidArgument(f"activation: {key!r} is not square-integrable under the Gaussian: {obstruction}, so E[sigma(g)^2], the kernels and h(m) are infinite")
    return Activation(name=key, expression=expression, breakpoints=_kinks(expression), description="custom")


def not_square_integrable(expression: sympy.Expr, scale: float = 1.0) -> str | None:
    """Why ``E[sigma(r g)^2]`` (g ~ N(0, 1), r = ``scale``) is infinite, or None: growth like exp(a z^2)
    with a >= 1/4 on either side, or a singularity where sigma^2 ~ |z - z0|^-alpha with alpha >= 1 at a real zero of the
    base of a negative power (1/z, abs(z)**-0.5, 1/log(abs(z)), 1/(z - 0.123)**2, ...), the zeros searched on
    [-40, 40]: sign changes, and zeros where the base touches 0 without crossing (local minima of its size).

    Numerical, at fixed cost (a few ms): rates and exponents are measured from values at two points each."""
    program = compile_program(expression)
    with np.errstate(all="ignore"):
        outside = evaluate_numpy(program, scale * np.array([-40.0, -20.0, 20.0, 40.0]))
    if np.any(np.isinf(outside)):
        # beyond float64 (> e^709) at |z| <= 40: growth far past exp(z^2 / 4); a gate before mpmath,
        # whose integers would overflow inside GMP (an abort) on towers such as exp(exp(exp(z)))
        side = "+" if np.isinf(outside[2:]).any() else "-"
        return f"it exceeds the float64 range (e^709) by |z| = 40 as z -> {side}inf (growth far beyond exp(z^2 / 4))"
    function = mpmath_function(program)
    with mpmath.workdps(30):
        def log_size(z) -> float:
            try:
                value = abs(function(mpmath.mpf(z)))
            except (ZeroDivisionError, ValueError, OverflowError):
                return math.inf
            return float(mpmath.log(value)) if value > 0 and mpmath.isfinite(value) else (math.inf if value else -math.inf)

        for side in (1, -1):
            near, far = log_size(40 * side * scale), log_size(80 * side * scale)
            if math.isfinite(near) and math.isfinite(far) and (far - near) / (80**2 - 40**2) >= 0.25 - 1e-9:
                return f"sigma(r z) grows like exp({(far - near) / 4800:.3g} z^2) at r = {scale:.6g} as z -> {'+' if side > 0 else '-'}inf (rate 1/4 or more)"
        grid = np.linspace(-40.0, 40.0, 160001)
        for node in expression.atoms(sympy.Pow):
            base, exponent = node.args
            if not (exponent.is_number and exponent < 0 and Z in base.free_symbols):
                continue
            base_program = compile_program(base)
            values = evaluate_numpy(base_program, grid)
            roots = list(grid[values == 0])
            for i in np.nonzero(values[:-1] * values[1:] < 0)[0][:50]:
                low, high = mpmath.mpf(grid[i]), mpmath.mpf(grid[i + 1])
                base_function, sign = mpmath_function(base_program), np.sign(values[i])
                for _ in range(100):
                    middle = (low + high) / 2
                    low, high = (middle, high) if np.sign(float(base_function(middle))) == sign else (low, middle)
                roots.append((low + high) / 2)
            roots += _touching_zeros(mpmath_function(base_program), grid, values)
            for root in roots[:100]:
                for step in (1, -1):
                    inner, outer = log_size(mpmath.mpf(root) + step * mpmath.mpf(10) ** -12), log_size(mpmath.mpf(root) + step * mpmath.mpf(10) ** -6)
                    alpha = math.inf if inner == math.inf else 2 * (inner - outer) / (6 * math.log(10))
                    if alpha >= 0.95:
                        return f"sigma^2 grows like |z - z0|^-{alpha:.3g} at z0 = {float(root):.6g}"
    return None


def _touching_zeros(function, grid: np.ndarray, values: np.ndarray, count: int = 50) -> list:
    """Zeros of ``function`` between grid points where it does not change sign (a double zero such as
    (z - 0.123)^2): each of the ``count`` smallest local minima of |values| is refined by golden-section
    search at 30 digits and kept when the minimum is below 1e-20 of its neighbours' size."""
    size = np.abs(values)
    inner = np.nonzero((size[1:-1] < size[:-2]) & (size[1:-1] <= size[2:]) & (size[1:-1] > 0) & np.isfinite(size[1:-1]))[0] + 1
    zeros = []
    for i in inner[np.argsort(size[inner])][:count]:
        low, high = mpmath.mpf(grid[i - 1]), mpmath.mpf(grid[i + 1])
        ratio = (mpmath.sqrt(5) - 1) / 2
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        fa, fb = abs(function(a)), abs(function(b))
        for _ in range(110):
            if fa < fb:
                high, b, fb = b, a, fa
                a = high - ratio * (high - low)
                fa = abs(function(a))
            else:
                low, a, fa = a, b, fb
                b = low + ratio * (high - low)
                fb = abs(function(b))
        if min(fa, fb) < 1e-20 * max(size[i - 1], size[i + 1]):
            zeros.append(a if fa < fb else b)
    return zeros


def _catalogue_member(expression: sympy.Expr) -> Activation | None:
    """The base catalogue member whose expression equals ``expression`` (after expansion), if any."""
    expanded = sympy.expand(expression)
    for name in _BASE:
        member = activation(name)
        if expanded == sympy.expand(member.expression):
            return member
    return None


def _kinks(expression: sympy.Expr) -> tuple:
    """Real zeros of the arguments of Abs, sign and Heaviside: where a custom activation may kink."""
    points = set()
    for node in expression.atoms(sympy.Abs, sympy.sign, sympy.Heaviside):
        argument = node.args[0]
        if argument.is_polynomial(Z):
            for root in sympy.Poly(argument, Z).nroots():
                if abs(sympy.im(root)) < 1e-12:
                    points.add(float(sympy.re(root)))
        else:
            points.add(0.0)
    return tuple(sorted(points))


def catalogue() -> list[Activation]:
    """The catalogue's standard members (with ``leaky_relu(0.1)``, ``He_3`` and ``h_4`` as examples).

    Returns
    -------
    list of Activation

    Examples
    --------
    >>> [a.name for a in catalogue()][:4]
    ['linear', 'quadratic', 'cubic', 'relu']
    """
    names = [n for n in _BASE if n != "leaky_relu"] + ["leaky_relu(0.1)", "He_3", "h_4"]
    return [activation(n) for n in names]
