"""Power series of h(m) in m and h(m) in closed form with sympy (MATH.md §3).

* :func:`drift_series` — ``h(m) = sum_l a_l m^l`` from the Hermite series of K' (pairs of neurons);
* :func:`paper_drift_series` — Proposition 4's expansion with the moment tensors ``T(l, s)``
  (:func:`moment_tensor`), an independent route under Assumptions 1 and 3;
* :func:`symbolic_drift` — h(m) as a sympy expression: exact with the families' closed kernels or finite
  Hermite series, truncated otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import sympy
from scipy import special

from ..._validation import InvalidArgument, check_integer
from ...gaussian.hermite import exact_hermite_coefficients, hermite_coefficients
from ...gaussian.kernels import hermite_series
from .population import pair_geometry
from .spec import FineTuningProblem

__all__ = ["drift_series", "moment_tensor", "paper_drift_series", "symbolic_drift"]


def drift_series(problem: FineTuningProblem, terms: int, order: int = 120) -> np.ndarray:
    """Coefficients ``a_l`` (l < terms) of ``h(m) = sum_l a_l m^l`` from the Hermite series of K'.

    ``(G + xi^2 c c_hat m)^q`` is expanded binomially: ``a_l = sum_ij w_ij sum_{q>=l} kappa_q binom(q, l)
    offset^(q-l) slope^l``, with K' truncated at ``order``. General c, rows and conventions.

    Parameters
    ----------
    problem : FineTuningProblem
    terms : int
        Number of coefficients returned.
    order : int, default 120
        Truncation order of the Hermite series of K'.

    Returns
    -------
    ndarray, shape (terms,)
    """
    terms = check_integer(terms, "terms", 1, 200)
    order = check_integer(order, "order", terms, 4000)
    g = pair_geometry(problem)
    teacher, _, _ = hermite_series(problem.activation, problem.teacher_scales, True, order)
    student, _, _ = hermite_series(problem.activation, problem.student_scales, True, order)
    q = np.arange(order + 1)
    out = np.zeros(terms)
    for i in range(problem.k):
        for j in range(problem.k):
            kappa = teacher[i] * student[j]
            for l in range(terms):
                binomial = special.comb(q[l:], l)
                out[l] += g.weight_drift[i, j] * np.sum(kappa[l:] * binomial * g.offset[i, j] ** (q[l:] - l)) * g.slope[i, j] ** l
    return out


def moment_tensor(problem: FineTuningProblem, l: int, s: int) -> float:
    """Proposition 4's ``T(l, s)``: ``||sum_i lam_i w_i^{⊗s}||^2 = sum_ij lam_i lam_j G_ij^s`` for odd l,
    ``k <sum lam_i c_i w_i^{⊗s}, sum lam_i c_hat_i w_i^{⊗s}> = k sum_ij lam_i lam_j c_i c_hat_j G_ij^s`` for even l.

    Parameters
    ----------
    problem : FineTuningProblem
    l : int
        Power of m (its parity picks the form).
    s : int
        Tensor order.

    Returns
    -------
    float
    """
    from ..._validation import check_integer

    l = check_integer(l, "l", 0)
    s = check_integer(s, "s", 0)
    lam, gram = problem.lam, problem.gram
    power = gram**s
    if l % 2:
        return float(lam @ power @ lam)
    return float(problem.k * (lam * problem.c) @ power @ (lam * problem.c_hat))


def paper_drift_series(problem: FineTuningProblem, terms: int, order: int = 120) -> np.ndarray:
    """Proposition 4's expansion ``h(m) = 2 sum_l (xi^2/k)^(l+1) (sum_s binom(l+s, l) (l+s+1)
    mu_{l+s+1}^2 r^(-2(l+s+1)) T(l, s)) m^l``. Needs Assumptions 1 and 3 (unit rows, quantized c) and the
    normalized convention; independent of :func:`drift_series` (moment tensors instead of pairs).

    Parameters
    ----------
    problem : FineTuningProblem
    terms : int
    order : int, default 120

    Returns
    -------
    ndarray, shape (terms,)
    """
    if not (problem.quantized and problem.unit_rows and problem.convention == "normalized"):
        raise InvalidArgument("paper_drift_series needs quantized c, c_hat, unit rows and the normalized convention")
    k, xi = problem.k, problem.xi
    r2 = 1 + xi**2 / k
    mu = hermite_coefficients(problem.activation, order + 1)
    out = np.zeros(terms)
    for l in range(terms):
        total = 0.0
        for s in range(order - l + 1):
            p = l + s + 1
            total += special.comb(l + s, l) * p * mu[p] ** 2 * r2 ** (-p) * moment_tensor(problem, l, s)
        out[l] = 2 * (xi**2 / k) ** (l + 1) * total
    return out


# ------------------------------------------------------------------------------------------------
# symbolic h
# ------------------------------------------------------------------------------------------------


def _exact_number(value: float, k: int) -> sympy.Expr:
    """A float as an exact number when it is one of the simple forms the constructors produce."""
    for candidate in (sympy.nsimplify(value, rational=True, tolerance=1e-15), sympy.nsimplify(value * math.sqrt(k), rational=True, tolerance=1e-15) / sympy.sqrt(k)):
        if abs(float(candidate) - value) <= 1e-15 * max(1.0, abs(value)) and (candidate.is_Rational or (candidate * sympy.sqrt(k)).is_Rational):
            if len(str(candidate)) <= 24:
                return candidate
    return sympy.Float(value, 17)


def _symbolic_kernel_derivative(sigma, rho, s1, s2, terms: int):
    """K'(s1, s2, rho) in sympy: the family's closed form where it has one, else the Hermite series
    truncated at ``terms`` (exact for polynomials)."""
    family = sigma.family_spec
    if family.kernel is not None and not sigma.jumps:
        return family.kernel(sigma, rho, s1, s2, True), True
    exact = sigma.has_closed_form
    if sigma.family == "polynomial":
        terms = len(sigma.polynomial_coefficients)
    if exact:
        mu1 = exact_hermite_coefficients(sigma, terms + 1, s1)
        mu2 = exact_hermite_coefficients(sigma, terms + 1, s2)
    else:
        mu1 = [sympy.Float(v, 17) for v in hermite_coefficients(sigma, terms + 1, float(s1))]
        mu2 = [sympy.Float(v, 17) for v in hermite_coefficients(sigma, terms + 1, float(s2))]
    series = sum((p + 1) * mu1[p + 1] * mu2[p + 1] / (s1 * s2) * rho**p for p in range(terms + 1))
    return series, sigma.family == "polynomial"


def symbolic_drift(problem: FineTuningProblem, terms: int = 8) -> tuple:
    """``h(m)`` as a sympy expression in the symbol ``m``, and whether it is exact.

    Exact for polynomial activations (finite Hermite series) and for relu, leaky_relu, abs and erf (closed
    kernels); otherwise the Hermite series of K' truncated after ``terms`` orders with float coefficients
    (then ``exact`` is False). Numbers of the problem are made exact when they are simple (1, ±1/sqrt(k)).

    Parameters
    ----------
    problem : FineTuningProblem
    terms : int, default 8

    Returns
    -------
    tuple
        ``(expression, exact)``.

    Examples
    --------
    >>> from popgrad import orthonormal_problem
    >>> problem = orthonormal_problem("He_3", k=2, xi=1.0, seed=0)
    >>> expr, exact = symbolic_drift(problem)
    >>> exact, sympy.expand(expr)  # He_3: K'(rho) = 18 rho^2
    (True, 32*m/3)
    """
    sigma = problem.activation
    k = problem.k
    m = sympy.Symbol("m", real=True)
    number = lambda v: _exact_number(float(v), k)  # noqa: E731
    xi = number(problem.xi)
    c = [number(v) for v in problem.c]
    c_hat = [number(v) for v in problem.c_hat]
    lam = [number(v) for v in problem.lam]
    gram = [[number(problem.gram[i, j]) for j in range(k)] for i in range(k)]
    r_t = [sympy.sqrt(gram[i][i] + xi**2 * c[i] ** 2) for i in range(k)]
    r_s = [sympy.sqrt(gram[i][i] + xi**2 * c_hat[i] ** 2) for i in range(k)]
    raw = problem.convention != "normalized"
    # the common convention: neurons at the scales rho r_i, and the output scale 1/xi
    prefactor = (number(problem.prefactor) if problem.prefactor is not None else sympy.Integer(k) / (k + xi**2)) if problem.convention == "common" else sympy.Integer(1)
    total, exact = sympy.Integer(0), True
    for i in range(k):
        for j in range(k):
            s1, s2 = (prefactor * r_t[i], prefactor * r_s[j]) if raw else (sympy.Integer(1), sympy.Integer(1))
            rho = (gram[i][j] + xi**2 * c[i] * c_hat[j] * m) / (r_t[i] * r_s[j])
            kernel, pair_exact = _symbolic_kernel_derivative(sigma, sympy.simplify(rho), s1, s2, terms)
            exact = exact and pair_exact
            total += lam[i] * lam[j] * c[i] * c_hat[j] * s1 * s2 / (r_t[i] * r_s[j]) * kernel
    expr = 2 * xi**2 * total if problem.convention != "common" else 2 * total
    return (sympy.simplify(expr) if exact and k <= 4 else expr), exact


def symbolic_joint_flow(problem: FineTuningProblem, c_hat_lr=1) -> tuple:
    """Phi and the gradient flow of the state (m, c_hat) in closed form (sympy), for a polynomial activation:
    rank 1, u_hat in span(W)^perp, c_hat trained jointly, the exact student, normalized convention.

    With u, u_hat ⟂ span(W) every cosine of the neurons is explicit in (m, c_hat):
    ``<w_i + xi c_i u, w_j + xi c_hat_j u_hat> = G_ij + xi^2 c_i c_hat_j m`` and so on, and the kernel is the
    finite sum ``K(rho) = sum_p mu_p^2 rho^p``, so ``Phi(m, c_hat)`` is exact and the flow is
    ``dm/dt = -(1 - m^2) dPhi/dm``, ``dc_hat_j/dt = -(eta_c / eta) dPhi/dc_hat_j`` (t = eta * steps).

    Parameters
    ----------
    problem : FineTuningProblem
        Normalized convention, a polynomial activation.
    c_hat_lr : number, default 1
        eta_c / eta.

    Returns
    -------
    tuple
        ``(symbols, Phi, drift)``: the symbols ``(m, c_hat_1, ..., c_hat_k)``, Phi, and the list of
        their time derivatives.

    Examples
    --------
    >>> from popgrad.models.finetuning.spec import orthonormal_problem
    >>> (m, *c_hat), phi, drift = symbolic_joint_flow(orthonormal_problem("quadratic", 1, 1.0, seed=0))
    >>> sympy.simplify(phi.subs({m: 1, c_hat[0]: 1}))  # the student is the teacher
    0
    """
    sigma = problem.activation
    if sigma.family != "polynomial" or problem.convention != "normalized":
        raise InvalidArgument("the symbolic joint flow needs a polynomial activation and the normalized convention", "problem")
    k = problem.k
    number = lambda v: _exact_number(float(v), k)  # noqa: E731
    xi, c, lam = number(problem.xi), [number(v) for v in problem.c], [number(v) for v in problem.lam]
    gram = [[number(problem.gram[i, j]) for j in range(k)] for i in range(k)]
    m = sympy.Symbol("m", real=True)
    c_hat = list(sympy.symbols(f"c_hat_1:{k + 1}", real=True))
    degree = len(sigma.polynomial_coefficients) - 1
    mu = exact_hermite_coefficients(sigma, degree)

    def K(rho):
        return sum(mu[p] ** 2 * rho**p for p in range(degree + 1))

    teacher = [sympy.sqrt(gram[i][i] + xi**2 * c[i] ** 2) for i in range(k)]
    student = [sympy.sqrt(gram[j][j] + xi**2 * c_hat[j] ** 2) for j in range(k)]
    phi = sympy.Integer(0)
    for i in range(k):
        for j in range(k):
            tt = (gram[i][j] + xi**2 * c[i] * c[j]) / (teacher[i] * teacher[j])
            ts = (gram[i][j] + xi**2 * c[i] * c_hat[j] * m) / (teacher[i] * student[j])
            ss = (gram[i][j] + xi**2 * c_hat[i] * c_hat[j]) / (student[i] * student[j])
            phi += lam[i] * lam[j] * (K(tt) - 2 * K(ts) + K(ss))
    drift = [-(1 - m**2) * sympy.diff(phi, m)] + [-sympy.nsimplify(c_hat_lr) * sympy.diff(phi, c) for c in c_hat]
    return (m, *c_hat), phi, drift
