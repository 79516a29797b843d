"""The committee machine's d → ∞ ODE in sympy for polynomial activations (MATH.md §8) — the derive side.

For polynomial sigma and sigma* every expectation of the ODE is a Gaussian moment of the pre-activations
``u = (lambda_1..lambda_K, nu_1..nu_M)`` with covariance ``C = [[Q, R], [R^T, T]]``, computed exactly by
Isserlis' (Wick's) theorem in its recursive form ``E[u_j m(u)] = sum_l C_jl E[d m / d u_l]``, memoised
over monomials. The result is the right-hand side as polynomials in the entries of Q, R, T, a, a*, delta,
delta_a and tau:

``dR_in = delta c E[Delta_i nu_n] - delta wd R_in``,
``dQ_ik = delta c (E[Delta_i lambda_k] + E[Delta_k lambda_i]) + delta^2 c^2 E[Delta_i Delta_k] - 2 delta wd Q_ik``,
``da_i = delta_a (c s E[sigma(lambda_i)(f* - f)] - wd_a a_i)`` (second layer trained), and
``eps_g = e E[(f* - f)^2]``,

with ``Delta_i = s a_i sigma'(lambda_i)(y - f)``, ``E[Delta_i Delta_k] = s^2 a_i a_k E[sigma' sigma' ((f* - f)^2
+ tau^2)]``, c = 1, e = 1/2 (``saad_solla``) or c = 2, e = 1 (``popgrad``). This is a route independent of the
compiled one (:mod:`popgrad.models.committee.population`: Gauss–Hermite rules exact for polynomials), and
the two are compared in the tests and in ``derivations/committee.*``.

sympy is imported inside the functions: evaluation code never imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..._validation import InvalidArgument, check_choice, check_integer

__all__ = ["SymbolicODE", "symbolic_ode", "gaussian_moment_expectation"]


def _polynomial_activation(sigma, parameter: str):
    import sympy

    from ...gaussian.activations import Z, activation

    expression = activation(sigma).expression
    if not expression.is_polynomial(Z):
        raise InvalidArgument(f"{parameter}: the symbolic ODE needs a polynomial activation, got {activation(sigma).name!r}", parameter)
    return sympy.expand(expression)


def gaussian_moment_expectation(polynomial, variables, covariance):
    """``E[polynomial(u)]`` for u ~ N(0, covariance), exactly (Isserlis/Wick, recursive form).

    Parameters
    ----------
    polynomial : sympy.Expr
        A polynomial in ``variables`` (coefficients may hold other symbols).
    variables : sequence of sympy.Symbol
    covariance : sympy.Matrix
        Symbolic or numeric, ``len(variables)`` square.

    Returns
    -------
    sympy.Expr
        Expanded.

    Examples
    --------
    >>> import sympy
    >>> x, y, c = sympy.symbols("x y c")
    >>> gaussian_moment_expectation(x**2 * y**2, (x, y), sympy.Matrix([[1, c], [c, 1]]))
    2*c**2 + 1
    """
    import sympy

    variables = tuple(variables)
    n = len(variables)
    memo = {}

    def moment(exponents: tuple):
        if exponents in memo:
            return memo[exponents]
        total = sum(exponents)
        if total == 0:
            value = sympy.Integer(1)
        elif total % 2:
            value = sympy.Integer(0)
        else:
            j = next(index for index, e in enumerate(exponents) if e)
            rest = list(exponents)
            rest[j] -= 1  # E[u_j m] = sum_l C_jl E[d m / d u_l]
            value = sympy.Integer(0)
            for l in range(n):
                if rest[l]:
                    lowered = list(rest)
                    lowered[l] -= 1
                    value += covariance[j, l] * rest[l] * moment(tuple(lowered))
            value = sympy.expand(value)
        memo[exponents] = value
        return value

    poly = sympy.Poly(sympy.expand(polynomial), *variables)
    return sympy.expand(sum((coefficient * moment(tuple(monomial)) for monomial, coefficient in poly.terms()), sympy.Integer(0)))


@dataclass(frozen=True)
class SymbolicODE:
    """The ODE's right-hand side for one (K, M, sigma, sigma*) in sympy.

    Attributes
    ----------
    K, M : int
    Q, R, T : sympy.Matrix
        The state's symbols (Q and T symmetric: ``Q_ik`` with i ≤ k).
    a, a_star : sympy.Matrix
        Columns of the second layers' symbols ``a_i``, ``a^*_n``.
    delta, delta_a, tau : sympy.Symbol
    dQ, dR : sympy.Matrix
        d/dalpha of Q (K×K) and R (K×M).
    da : sympy.Matrix
        d a / d alpha (K×1; zeros when the second layer is frozen).
    eps_g : sympy.Expr
        The generalisation error against the clean teacher, in the convention's units.
    """

    K: int
    M: int
    Q: object
    R: object
    T: object
    a: object
    a_star: object
    delta: object
    delta_a: object
    tau: object
    dQ: object
    dR: object
    da: object
    eps_g: object

    def substitutions(self, Q, R, T, a, a_star, delta: float, delta_a: float, tau: float) -> dict:
        """Symbol → number for a numeric state."""
        Q, R, T = (np.asarray(x, dtype=np.float64) for x in (Q, R, T))
        values = {self.delta: delta, self.delta_a: delta_a, self.tau: tau}
        for matrix, numbers in ((self.Q, Q), (self.R, R), (self.T, T)):
            for i in range(matrix.rows):
                for k in range(matrix.cols):
                    values[matrix[i, k]] = float(numbers[i, k])
        values.update({s: float(v) for s, v in zip(self.a, np.ravel(a))})
        values.update({s: float(v) for s, v in zip(self.a_star, np.ravel(a_star))})
        return values

    def evaluate(self, Q, R, T, a, a_star, delta: float, delta_a: float, tau: float) -> dict:
        """The right-hand side and eps_g at a numeric state (exact rational arithmetic on the floats given).

        Returns
        -------
        dict
            ``dQ`` (K, K), ``dR`` (K, M), ``da`` (K,) ndarrays and ``eps_g`` float.
        """
        import sympy

        values = {s: sympy.Rational(v) for s, v in self.substitutions(Q, R, T, a, a_star, delta, delta_a, tau).items()}

        def number(expression):
            return float(sympy.sympify(expression).xreplace(values))

        return {
            "dQ": np.array([[number(self.dQ[i, k]) for k in range(self.K)] for i in range(self.K)]),
            "dR": np.array([[number(self.dR[i, n]) for n in range(self.M)] for i in range(self.K)]),
            "da": np.array([number(self.da[i]) for i in range(self.K)]),
            "eps_g": number(self.eps_g),
        }


def symbolic_ode(K: int, M: int, student="z", teacher=None, *, convention: str = "saad_solla", train_second_layer: bool = True, student_scale=1, teacher_scale=1, weight_decay=0, second_layer_weight_decay=0) -> SymbolicODE:
    """The d → ∞ online-SGD ODE of the committee machine with polynomial activations, symbolically.

    Parameters
    ----------
    K, M : int >= 1
        Student and teacher widths.
    student : str or Activation, default 'z'
        sigma (a polynomial).
    teacher : str or Activation, optional
        sigma* (a polynomial; default the student's).
    convention : {'saad_solla', 'popgrad'}
    train_second_layer : bool, default True
    student_scale, teacher_scale, weight_decay, second_layer_weight_decay : number or sympy expression
        s, s*, wd, wd_a (numbers are made exact rationals).

    Returns
    -------
    SymbolicODE

    Examples
    --------
    >>> ode = symbolic_ode(1, 1, "z")
    >>> ode.dR[0, 0]
    -R_11*a_1**2*delta + T_11*a^*_1*a_1*delta
    >>> ode.eps_g
    Q_11*a_1**2/2 - R_11*a^*_1*a_1 + T_11*a^*_1**2/2
    """
    import sympy

    K = check_integer(K, "K", 1, 8)
    M = check_integer(M, "M", 1, 8)
    convention = check_choice(convention, "convention", ("saad_solla", "popgrad"))
    sigma = _polynomial_activation(student, "student")
    sigma_star = _polynomial_activation(student if teacher is None else teacher, "teacher")
    c = sympy.Integer(1 if convention == "saad_solla" else 2)
    e = sympy.Rational(1, 2) if convention == "saad_solla" else sympy.Integer(1)
    s, s_star, wd, wd_a = (sympy.nsimplify(x, rational=True) if not isinstance(x, sympy.Basic) else x for x in (student_scale, teacher_scale, weight_decay, second_layer_weight_decay))

    def symmetric(name: str, n: int):
        return sympy.Matrix(n, n, lambda i, k: sympy.Symbol(f"{name}_{min(i, k) + 1}{max(i, k) + 1}", real=True))

    Q, T = symmetric("Q", K), symmetric("T", M)
    R = sympy.Matrix(K, M, lambda i, n: sympy.Symbol(f"R_{i + 1}{n + 1}", real=True))
    a = sympy.Matrix([sympy.Symbol(f"a_{i + 1}", real=True) for i in range(K)])
    a_star = sympy.Matrix([sympy.Symbol(f"a^*_{n + 1}", real=True) for n in range(M)])
    delta, delta_a, tau = sympy.symbols("delta delta_a tau", real=True)
    lam = sympy.symbols(f"lambda_1:{K + 1}", real=True)
    nu = sympy.symbols(f"nu_1:{M + 1}", real=True)
    u = lam + nu
    C = sympy.Matrix(sympy.BlockMatrix([[Q, R], [R.T, T]]))
    z = next(iter(sigma.free_symbols | sigma_star.free_symbols))

    def at(expression, x):
        return expression.subs(z, x)

    d_sigma = sympy.diff(sigma, z)
    error = s_star * sum(a_star[n] * at(sigma_star, nu[n]) for n in range(M)) - s * sum(a[i] * at(sigma, lam[i]) for i in range(K))

    def expect(expression):
        return gaussian_moment_expectation(expression, u, C)

    def delta_i(i):  # Delta_i without the noise (its mean is 0 in every first moment)
        return s * a[i] * at(d_sigma, lam[i]) * error

    first = [[expect(delta_i(i) * u[j]) for j in range(K + M)] for i in range(K)]
    dR = sympy.Matrix(K, M, lambda i, n: sympy.expand(delta * c * first[i][K + n] - delta * wd * R[i, n]))
    dQ = sympy.zeros(K, K)
    for i in range(K):
        for k in range(i, K):
            second = expect(s**2 * a[i] * a[k] * at(d_sigma, lam[i]) * at(d_sigma, lam[k]) * (error**2 + tau**2))
            value = sympy.expand(delta * c * (first[i][k] + first[k][i]) + delta**2 * c**2 * second - 2 * delta * wd * Q[i, k])
            dQ[i, k] = dQ[k, i] = value
    if train_second_layer:
        da = sympy.Matrix([sympy.expand(delta_a * (c * s * expect(at(sigma, lam[i]) * error) - wd_a * a[i])) for i in range(K)])
    else:
        da = sympy.zeros(K, 1)
    eps_g = sympy.expand(e * expect(error**2))
    return SymbolicODE(K, M, Q, R, T, a, a_star, delta, delta_a, tau, dQ, dR, da, eps_g)


def random_state(K: int, M: int, seed: int = 0, scale: float = 1.0) -> tuple:
    """A random consistent state ``(Q, R, T, a, a*)``: overlaps of Gaussian vectors in dimension K + M + 1
    (so ``[[Q, R], [R^T, T]]`` is positive definite) and Gaussian second layers."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(K + M, K + M + 1)) * scale / np.sqrt(K + M + 1)
    C = vectors @ vectors.T
    return C[:K, :K], C[:K, K:], C[K:, K:], rng.normal(size=K), rng.normal(size=M)


def compiled_difference(ode: SymbolicODE, student, teacher=None, *, seed: int = 0, delta: float = 0.7, delta_a: float = 0.3, tau: float = 0.4, convention: str = "saad_solla", train_second_layer: bool = True, student_scale: float = 1.0, teacher_scale: float = 1.0, weight_decay: float = 0.0, second_layer_weight_decay: float = 0.0) -> float:
    """Largest difference, relative to max(1, |value|), between the symbolic right-hand side and eps_g and the
    compiled route (:func:`popgrad.models.committee.ode.committee_rhs` with
    :func:`~popgrad.models.committee.ode.ode_parameters`; :func:`~popgrad.models.committee.population.generalisation_error`)
    at :func:`random_state` ``(K, M, seed)``. The keyword values must be the ones ``ode`` was derived with."""
    from ...gaussian.activations import activation
    from .ode import committee_rhs, ode_parameters
    from .population import Committee, generalisation_error

    K, M = ode.K, ode.M
    Q, R, T, a, a_star = random_state(K, M, seed)
    sigma = activation(student)
    committee = Committee(sigma, sigma if teacher is None else activation(teacher), a_star, T, student_scale, teacher_scale, tau, convention, weight_decay, second_layer_weight_decay, train_second_layer)
    parameters = ode_parameters(committee, K, delta, delta_a)
    y = np.concatenate([Q.ravel(), R.ravel(), a, [np.trace(Q) + a @ a]])
    out = np.empty_like(y)
    committee_rhs()(0.0, y, parameters, out)
    exact = ode.evaluate(Q, R, T, a, a_star, delta, delta_a, tau)
    compiled = {"dQ": out[: K * K].reshape(K, K), "dR": out[K * K: K * K + K * M].reshape(K, M), "da": out[K * K + K * M: K * K + K * M + K], "eps_g": float(generalisation_error(committee, Q, R, a))}
    return max(float(np.max(np.abs(exact[key] - compiled[key]) / np.maximum(1.0, np.abs(exact[key])))) for key in exact)
