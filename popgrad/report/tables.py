"""Derivation tables for papers: Markdown, LaTeX and CSV renderings of verified results.

:func:`derivation_files` renders every table that ``popgrad derive`` writes into ``derivations/``; the
same function backs the staleness test, so the committed files are exactly what the code produces.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import mpmath
import numpy as np
import sympy

from .._io import check_output_folder, write_text
from .._validation import InvalidArgument
from .._progress import progress_bar
from ..gaussian.activations import catalogue
from ..gaussian.hermite import information_exponent
from ..models.finetuning.checks import example1, lemma6_frequency
from ..models.finetuning.population import drift_fixed_points
from ..models.finetuning.series import drift_series, symbolic_drift, symbolic_joint_flow
from ..models.finetuning.spec import orthonormal_problem
from ..reference.hermite import HermiteVerification, verify_hermite

__all__ = ["joint_flow_table", "example1_table", "Table", "hermite_table", "drift_table", "symbolic_drift_table", "lemma6_table", "committee_ode_table", "derivation_files", "write_derivations", "stale_derivations"]

HERMITE_ORDER = 12
HERMITE_DIGITS = 50
VALUE_DIGITS = 30
#: the standard setting of the h(m) tables: orthonormal features, lam = 1, quantized c, normalized
STANDARD = {"k": 8, "xi": 1.0, "seed": 0}
SERIES_TERMS = 5
SYMBOLIC = {"k": 3, "xi": 1.0, "seed": 0}
SYMBOLIC_ACTIVATIONS = ("linear", "relu", "abs", "erf", "quadratic", "He_3")
#: the joint (m, c_hat) flow of the general model: k, xi, seed, eta_c / eta and the point of the numeric check
JOINT = {"k": 2, "xi": 1.0, "seed": 0, "c_hat_lr": 0.5, "activations": ("quadratic", "He_3"), "point": (0.3, 0.4, -0.9)}
#: the committee machines whose d -> inf ODE is derived symbolically (K, M, sigma = sigma*) and the compiled check's point
COMMITTEE = {"cases": ((1, 1, "z"), (1, 1, "He_2"), (1, 1, "He_3"), (2, 2, "z"), (2, 2, "He_2")), "seed": 0, "delta": 0.7, "delta_a": 0.3, "tau": 0.4}
LEMMA6 = {"activation": "relu", "draws": 1000, "seed": 0, "settings": ((8, 1.0), (8, math.sqrt(8)), (32, 1.0), (32, math.sqrt(32)))}


def _number(value: float, digits: int = 10) -> str:
    return "0" if value == 0 else f"{value:.{digits}g}"


@dataclass(frozen=True)
class Table:
    """A titled table of strings with a LaTeX twin for columns holding formulas.

    Attributes
    ----------
    title : str
    columns : tuple of str
    rows : tuple of tuple of str
    latex_rows : tuple or None
        The rows with formulas as LaTeX (None: the same as ``rows``).
    note : str
        A footnote printed under the table.
    """

    title: str
    columns: tuple
    rows: tuple
    latex_rows: tuple | None = None
    note: str = ""

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        rows = self.latex_rows or self.rows
        spec = "l" * len(self.columns)
        escaped = [c.replace("_", r"\_") for c in self.columns]
        lines = [f"% {self.title}", r"\begin{tabular}{" + spec + "}", r"\hline", " & ".join(escaped) + r" \\", r"\hline"]
        lines += [" & ".join(row) + r" \\" for row in rows]
        lines += [r"\hline", r"\end{tabular}"]
        return "\n".join(lines) + "\n"

    def csv_rows(self) -> list:
        return [list(self.columns)] + [list(row) for row in self.rows]


def _latex_math(expression) -> str:
    return "$" + sympy.latex(expression) + "$"


def hermite_table(check: HermiteVerification, exponent: int | None, digits: int = VALUE_DIGITS) -> Table:
    """One activation's verified coefficients as a :class:`Table`, values to ``digits`` significant digits.

    Parameters
    ----------
    check : HermiteVerification
    exponent : int or None
        The information exponent, shown in the title.
    digits : int, default 30

    Returns
    -------
    Table
    """
    rows, latex_rows = [], []
    for p, (exact, value, agreeing, zero) in enumerate(zip(check.exact, check.value, check.digits, check.zero)):
        text = "0" if zero else mpmath.nstr(value, digits, min_fixed=-3, max_fixed=3)
        exact_text = "—" if exact is None else sympy.sstr(exact)
        verified = f"{int(agreeing)}" if not zero else f"zero (|ref| < 1e-{int(agreeing)})"
        rows.append((str(p), exact_text, text, verified))
        latex_rows.append((str(p), "---" if exact is None else _latex_math(exact), text, verified))
    kind = "exact" if any(e is not None for e in check.exact) else "numeric (no closed form)"
    note = (
        f"scale r = {check.scale}; {kind}; information exponent {exponent}; "
        f"verification: {check.method} at {check.dps} digits"
    )
    return Table(f"mu_p({check.activation}; r = {check.scale})", ("p", "exact", "value", "digits verified"), tuple(rows), tuple(latex_rows), note)


def _hermite_tables(order: int = HERMITE_ORDER, digits: int = HERMITE_DIGITS, progress: bool | None = False) -> list:
    tables = []
    for sigma in progress_bar(catalogue(), progress=progress, desc="Hermite tables"):
        check = verify_hermite(sigma, order, 1, digits=digits)
        tables.append((sigma, check, hermite_table(check, information_exponent(sigma))))
    return tables


def drift_table() -> Table:
    """h(0), h(±1), zeros of h and the first coefficients of h's power series for the catalogue.

    Returns
    -------
    Table
    """
    rows = []
    for sigma in catalogue():
        problem = orthonormal_problem(sigma, **STANDARD)
        points = drift_fixed_points(problem)
        series = drift_series(problem, SERIES_TERMS, order=200)
        series[np.abs(series) < 1e-13 * np.max(np.abs(series))] = 0.0  # zero up to rounding
        zeros = ", ".join(_number(z, 8) for z in points.zeros) or "none"
        rows.append((sigma.name, _number(points.h0), _number(points.h_at_minus_one), _number(points.h_at_one), zeros) + tuple(_number(a, 8) for a in series))
    columns = ("activation", "h(0)", "h(-1)", "h(1)", "zeros of h") + tuple(f"a_{l}" for l in range(SERIES_TERMS))
    note = (
        f"orthonormal features, k = {STANDARD['k']}, xi = {STANDARD['xi']:g}, lam = 1, c and c_hat quantized and drawn "
        f"with seed {STANDARD['seed']} (`orthonormal_problem(sigma, k={STANDARD['k']}, xi={STANDARD['xi']:g}, seed={STANDARD['seed']})`), "
        "normalized convention; h(m) = sum_l a_l m^l near m = 0 (Hermite series of K' truncated at order 200). "
        "Values to 10 significant digits."
    )
    return Table("h(m) at the standard setting", columns, tuple(rows), note=note)


def symbolic_drift_table() -> Table:
    """Exact h(m) for small k (closed kernels or finite Hermite series).

    Returns
    -------
    Table
    """
    rows, latex_rows = [], []
    for name in SYMBOLIC_ACTIVATIONS:
        problem = orthonormal_problem(name, **SYMBOLIC)
        expr, exact = symbolic_drift(problem)
        rows.append((name, "exact" if exact else "truncated", sympy.sstr(expr)))
        latex_rows.append((name, "exact" if exact else "truncated", _latex_math(expr)))
    problem = orthonormal_problem("relu", **SYMBOLIC)
    note = (
        f"orthonormal features, k = {SYMBOLIC['k']}, xi = {SYMBOLIC['xi']:g}, lam = 1, "
        f"sqrt(k) c = {np.rint(problem.c * math.sqrt(problem.k)).astype(int).tolist()}, "
        f"sqrt(k) c_hat = {np.rint(problem.c_hat * math.sqrt(problem.k)).astype(int).tolist()} (seed {SYMBOLIC['seed']}), normalized convention"
    )
    return Table("symbolic h(m)", ("activation", "kind", "h(m)"), tuple(rows), tuple(latex_rows), note)


def joint_flow_table() -> Table:
    """The general model's Phi(m, c_hat) and its gradient flow with c_hat trained jointly (sympy, exact for
    polynomial activations), each checked at a point against the numeric closed form of Phi on the state
    and the Price's-theorem flow (two independent routes).

    Returns
    -------
    Table
    """
    from ..models.finetuning.model import general_model
    from ..models.finetuning.observables import state_population_loss
    from ..models.finetuning.state_flow import state_gradient

    rows, latex_rows = [], []
    m0, *point = JOINT["point"]
    for name in JOINT["activations"]:
        problem = orthonormal_problem(name, JOINT["k"], JOINT["xi"], seed=JOINT["seed"])
        symbols, phi, drift = symbolic_joint_flow(problem, c_hat_lr=sympy.Rational(JOINT["c_hat_lr"]).limit_denominator(1000))
        values = dict(zip(symbols, (m0, *point)))
        model = general_model(problem, train_c_hat=True, c_hat_lr=JOINT["c_hat_lr"])
        Y = np.zeros((model.p, 1))
        Y[-1, 0] = m0
        c_hat = np.array(point)[:, None]
        Z = np.vstack([Y, [[math.sqrt(1 - m0 * m0)]]])
        dZ, dC = state_gradient(model, Z, c_hat)
        numeric = [float((model.UF @ dZ[: model.p, 0])[0]), *dC.ravel()]
        gap = max(abs(float(phi.subs(values)) - state_population_loss(model, Y, np.array([[1 - m0 * m0]]), c_hat)), *(abs(float(d.subs(values)) - n) for d, n in zip(drift, numeric)))
        check = "agree to 1e-12" if gap <= 1e-12 else f"DIFFER by {gap:.1e}"
        labels = ["Phi"] + [f"d{symbol}/dt" for symbol in symbols]
        for label, expression in zip(labels, [phi, *drift]):
            simplified = sympy.simplify(expression)
            rows.append((name, label, sympy.sstr(simplified), check))
            latex_rows.append((name, label, _latex_math(simplified), check))
    problem = orthonormal_problem("relu", JOINT["k"], JOINT["xi"], seed=JOINT["seed"])
    note = (
        f"orthonormal features, k = {JOINT['k']}, xi = {JOINT['xi']:g}, lam = 1, sqrt(k) c = {np.rint(problem.c * math.sqrt(problem.k)).astype(int).tolist()} (seed {JOINT['seed']}), "
        f"u_hat in span(W)^perp, c_hat trained with eta_c / eta = {JOINT['c_hat_lr']:g}, normalized convention, time t = eta * steps. "
        f"Check: largest difference from the numeric closed form of Phi on the state and the Price's-theorem flow at (m, c_hat) = {JOINT['point']}."
    )
    return Table("joint (m, c_hat) flow", ("activation", "quantity", "expression", "check"), tuple(rows), tuple(latex_rows), note)


def example1_table() -> Table:
    """Example 1 (MATH.md §5), verified symbolically and through the population loss.

    Returns
    -------
    Table
    """
    report = example1()
    rows = (
        ("V^T V - V'^T V' (sympy)", sympy.sstr(report["difference"].tolist()), "identity" if report["identity"] else "NOT an identity"),
        ("Phi, student (c', u') learning teacher (c, u)", "|Phi| < 1e-8" if abs(report["loss_u_prime_learning_u"]) < 1e-8 else f"{report['loss_u_prime_learning_u']:.3e}", "0 up to rounding" if abs(report["loss_u_prime_learning_u"]) < 1e-8 else "not 0"),
        ("Phi, student (c, u) learning teacher (c', u')", "|Phi| < 1e-8" if abs(report["loss_u_learning_u_prime"]) < 1e-8 else f"{report['loss_u_learning_u_prime']:.3e}", "0 up to rounding" if abs(report["loss_u_learning_u_prime"]) < 1e-8 else "not 0"),
    )
    note = "lam = (1, 1), w = e_1, e_2, sigma(z) = z^2 (raw), u = (1,1)/sqrt 2, u' = (1/sqrt 3, sqrt 6/3), c = (-(1+sqrt 2)(2+sqrt 3), (1+sqrt 2)(sqrt 2+sqrt 3)), c' = -c: two different rank-1 perturbations, one teacher."
    return Table("Example 1 (no Assumption 2: two perturbations, one teacher)", ("check", "value", "result"), rows, None, note)


def lemma6_table(progress: bool | None = False) -> Table:
    """How often Lemma 6's conclusion holds over random c, c_hat (reported, not asserted).

    Parameters
    ----------
    progress : bool or None, default False

    Returns
    -------
    Table
    """
    rows = []
    for k, xi in progress_bar(LEMMA6["settings"], progress=progress, desc="Lemma 6 draws"):
        report = lemma6_frequency(LEMMA6["activation"], k, xi, draws=LEMMA6["draws"], seed=LEMMA6["seed"])
        quantiles = report["ratio_quantiles"]
        rows.append((str(k), f"{xi:.6g}", f"{report['fraction']:.3f} ± {report['standard_error']:.3f}", str(report["degenerate"]), f"{quantiles[0.0]:.4f}", f"{quantiles[0.05]:.4f}", f"{quantiles[0.5]:.4f}"))
    note = (
        f"{LEMMA6['activation']}, orthonormal features, lam = 1, {LEMMA6['draws']} draws of quantized c, c_hat (seed {LEMMA6['seed']}). "
        "Holds: h(m) sign(h(0)) >= |h(0)|/2 for every m with m h(0) >= 0 (201-point grid). Degenerate: h(0) = 0 exactly "
        "(the signs cancel), counted as not holding. Ratio: min over m of h(m) sign(h(0)) / |h(0)| among non-degenerate draws."
    )
    columns = ("k", "xi", "fraction holding", "degenerate", "min ratio", "5% ratio", "median ratio")
    return Table("Lemma 6 over random adapter signs", columns, tuple(rows), note=note)


def committee_ode_table() -> Table:
    """The committee machine's d → ∞ ODE for polynomial activations (sympy, Wick's theorem), each case checked
    against the compiled right-hand side and closed-form eps_g at a random state (two independent routes).

    Returns
    -------
    Table
    """
    from ..models.committee.symbolic import compiled_difference, symbolic_ode

    rows, latex_rows = [], []
    for K, M, name in COMMITTEE["cases"]:
        ode = symbolic_ode(K, M, name)
        gap = compiled_difference(ode, name, seed=COMMITTEE["seed"], delta=COMMITTEE["delta"], delta_a=COMMITTEE["delta_a"], tau=COMMITTEE["tau"])
        check = "agree to 1e-10" if gap <= 1e-10 else f"DIFFER by {gap:.1e}"
        case = f"K = {K}, M = {M}, sigma = sigma* = {name}"
        quantities = [("eps_g", ode.eps_g)]
        quantities += [(f"dR_{i + 1}{n + 1}/dalpha", ode.dR[i, n]) for i in range(K) for n in range(M)]
        quantities += [(f"dQ_{i + 1}{k + 1}/dalpha", ode.dQ[i, k]) for i in range(K) for k in range(i, K)]
        quantities += [(f"da_{i + 1}/dalpha", ode.da[i]) for i in range(K)]
        for label, expression in quantities:
            collected = sympy.collect(expression, [ode.delta**2, ode.delta, ode.delta_a])
            rows.append((case, label, sympy.sstr(collected), check))
            latex_rows.append((case, label, _latex_math(collected), check))
    note = (
        "Saad–Solla convention (loss 1/2 (y - f)^2, eps_g = 1/2 E[(f* - f)^2] against the clean teacher), s = s* = 1, no weight decay, "
        "second layer trained (da/dalpha with its rate delta_a), output noise tau, alpha = steps / d, delta = eta d. "
        "Q and T symmetric (Q_ik = Q_ki), a^*_n the teacher's second layer. Gaussian moments of (lambda, nu) ~ N(0, [[Q, R], [R^T, T]]) by "
        "Isserlis' theorem (`popgrad.models.committee.symbolic.symbolic_ode`). Check: largest difference (relative to max(1, |value|)) from the "
        f"compiled right-hand side (Gauss–Hermite, exact for polynomials) and closed-form eps_g at a random state (seed {COMMITTEE['seed']}), "
        f"delta = {COMMITTEE['delta']:g}, delta_a = {COMMITTEE['delta_a']:g}, tau = {COMMITTEE['tau']:g}."
    )
    return Table("committee machine: d -> inf ODE for polynomial activations", ("case", "quantity", "expression", "check"), tuple(rows), tuple(latex_rows), note)


def _render(tables: list, title: str, intro: str) -> dict:
    markdown = [f"# {title}", "", intro, ""] + [table.markdown() for table in tables]
    latex = [f"% {title} -- generated by `popgrad derive`; do not edit"] + [table.latex() for table in tables]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["table"] + list(tables[0].columns))
    for table in tables:
        for row in table.rows:
            writer.writerow([table.title] + list(row))
    return {"md": "\n".join(markdown), "tex": "\n".join(latex), "csv": buffer.getvalue()}


def derivation_files(progress: bool | None = False) -> dict:
    """File name → content for everything in ``derivations/`` (``progress``: show progress bars).

    Parameters
    ----------
    progress : bool or None, default False
        Progress bars (None: only on a terminal).

    Returns
    -------
    dict of str to str
    """
    hermite = _hermite_tables(progress=progress)
    intro = (
        "Generated by `popgrad derive`; do not edit. Hermite coefficients mu_p(sigma) = E[sigma(g) h_p(g)], "
        f"h_p = He_p/sqrt(p!), for p <= {HERMITE_ORDER}, each computed by two independent routes at "
        f"{HERMITE_DIGITS} digits; values shown to {VALUE_DIGITS} significant digits."
    )
    files = {}
    for suffix, content in _render([t for _, _, t in hermite], "Hermite coefficients of the activation catalogue", intro).items():
        files[f"hermite.{suffix}"] = content
    drift_intro = (
        "Generated by `popgrad derive`; do not edit. The population drift h(m) of Proposition 4 (MATH.md §3): the "
        "spherical population gradient is -h(m)(u - m u_hat), and gradient flow is dm/dtau = h(m)(1 - m^2)."
    )
    for suffix, content in _render([drift_table(), symbolic_drift_table()], "Population drift h(m)", drift_intro).items():
        files[f"drift.{suffix}"] = content
    general_intro = (
        "Generated by `popgrad derive`; do not edit. The general fine-tuning model (MATH.md §4b) in closed form: the "
        "population loss of the state and its gradient flow, and Example 1."
    )
    for suffix, content in _render([joint_flow_table(), example1_table()], "General model: symbolic flow and Example 1", general_intro).items():
        files[f"general.{suffix}"] = content
    committee_intro = (
        "Generated by `popgrad derive`; do not edit. The committee machine's d -> inf online-SGD ODE (MATH.md §8) for "
        "polynomial activations in closed form: dR/dalpha, dQ/dalpha with its delta^2 term (noise tau included), da/dalpha and eps_g."
    )
    for suffix, content in _render([committee_ode_table()], "Committee machines: the symbolic ODE", committee_intro).items():
        files[f"committee.{suffix}"] = content
    lemma_intro = "Generated by `popgrad derive`; do not edit. A report, not an assertion: Lemma 6 holds with high probability."
    for suffix, content in _render([lemma6_table(progress)], "Lemma 6 frequency", lemma_intro).items():
        files[f"lemma6.{suffix}"] = content
    return files


def write_derivations(directory: str | Path, progress: bool | None = False) -> list:
    """Write the derivation tables into ``directory``; returns the paths written.

    Parameters
    ----------
    directory : str or Path
        Created if missing.
    progress : bool or None, default False

    Returns
    -------
    list of Path
    """
    directory = Path(directory)
    directory = check_output_folder(directory, "directory")
    directory.mkdir(exist_ok=True)
    written = []
    for name, content in derivation_files(progress).items():
        path = directory / name
        write_text(path, content)
        written.append(path)
    return written


def stale_derivations(directory: str | Path, progress: bool | None = False) -> list:
    """Names of files in ``directory`` that differ from what the code generates now (missing included).

    Parameters
    ----------
    directory : str or Path
    progress : bool or None, default False

    Returns
    -------
    list of str
    """
    from .._io import read_user_bytes

    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidArgument(f"out: the derivations folder {str(directory)!r} {'is not a folder' if directory.exists() else 'does not exist'}", "out")
    return [name for name, content in derivation_files(progress).items() if not (directory / name).exists() or read_user_bytes(directory / name, "derivation table", "out") != content.encode()]
