"""One vocabulary (issue 23, class 11): the README's table of names is true of the code, and the loss
convention it states (the fine-tuning population loss has no 1/2) is what popgrad computes."""

import importlib.util
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import popgrad
from popgrad.cli.main import build_parser
from popgrad.sweeps.spec import PROBLEM_KEYS, RUN_KEYS

README = Path(__file__).resolve().parent.parent / "README.md"
COMMITTEE = importlib.util.find_spec("popgrad.models.committee") is not None


def _table() -> list:
    """The rows of the README's vocabulary table, as lists of cells (escaped pipes kept inside cells)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| quantity | command line | Python API | sweep spec |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def _subcommands(parser) -> dict:
    return next(action.choices for action in parser._actions if hasattr(action, "choices") and isinstance(action.choices, dict))


def _command_parser(root, words: list):
    parser = root
    for word in words:
        parser = _subcommands(parser)[word]
    return parser


def _cli_entries(cell: str) -> list:
    """``(command words, flag)`` for each flag in a cell: `simulate/compare/run --hit EPS`, `--delta D`
    (the commands of the span before), `mf run --lr LR`, `ntk build/threshold --m ROWS`, `h --m=-1:1:5`."""
    entries, commands = [], None
    for span in re.findall(r"`([^`]*)`", cell):
        if "--" not in span:
            continue
        prefix, _, rest = span.partition("--")
        flag = "--" + re.match(r"[a-z0-9-]+", rest).group(0)
        words = prefix.split()
        if words:
            head, last = words[:-1], words[-1]
            commands = [head + [name] for name in last.split("/")]
        assert commands, f"a flag without a command in {cell!r}"
        entries += [(command, flag) for command in commands]
    return entries


def test_vocabulary_table_is_true_of_the_code():
    rows = _table()
    assert len(rows) >= 12 and all(len(row) == 5 for row in rows), rows
    quantities = " ".join(row[0] for row in rows)
    for needed in ("eps", "length", "record", "step size", "alpha", "m:", "committee: steps", "committee: loss convention"):
        assert needed in quantities
    root = build_parser()
    checked = {"flags": 0, "keywords": 0, "keys": 0}
    for quantity, cli, api, sweep, _note in rows:
        if "committee" in quantity and not COMMITTEE:
            continue  # the committee family's rows are checked where it is installed
        for command, flag in _cli_entries(cli):
            parser = _command_parser(root, command)
            assert flag in parser._option_string_actions, f"{quantity}: popgrad {' '.join(command)} has no {flag}"
            checked["flags"] += 1
        for function, keyword in re.findall(r"`(\w+)\((\w+)=\)`", api):
            target = getattr(popgrad, function)
            parameters = inspect.signature(target).parameters
            through_options = any(p.kind is p.VAR_KEYWORD for p in parameters.values()) and f"``{keyword}``" in target.__doc__
            assert keyword in parameters or through_options, f"{quantity}: popgrad.{function} takes no {keyword}="
            checked["keywords"] += 1
        for section, key in re.findall(r"`\[(problem|run)\] (\w+)`", sweep):
            assert key in (PROBLEM_KEYS if section == "problem" else RUN_KEYS), f"{quantity}: no key {key} in [{section}]"
            checked["keys"] += 1
    assert checked["flags"] >= 25 and checked["keywords"] >= 18 and checked["keys"] >= 10, checked


def test_two_meanings_are_what_the_table_says():
    """The flags that mean two things do mean them: --alpha and --m of the fine-tuning commands and of mf run."""
    root = build_parser()
    helps = {(tuple(command), flag): _command_parser(root, command)._option_string_actions[flag].help or "" for command, flag in [(["simulate"], "--alpha"), (["mf", "run"], "--alpha"), (["h"], "--m"), (["mf", "run"], "--m"), (["ntk", "build"], "--m")]}
    assert "span(W)" in helps[("simulate",), "--alpha"]
    assert "initialisation" in helps[("mf", "run"), "--alpha"]
    assert "m values" in helps[("h",), "--m"]
    assert "rows" in helps[("mf", "run"), "--m"] and "rows" in helps[("ntk", "build"), "--m"]


def test_finetuning_loss_has_no_half():
    """A user's own Monte Carlo of E[(f*(x) - f(x))^2], built from the README's description of the model
    (normalized neurons, u and u_hat orthogonal to span(W)), matches popgrad's Phi within 4 standard errors,
    and half of it does not: the factor 2 is pinned. Its finite difference in m is -h(m) (h = -dPhi/dm)."""
    problem = popgrad.orthonormal_problem("relu", k=4, xi=1.5, seed=3)
    k, xi = problem.k, problem.xi
    lam, c, c_hat = np.asarray(problem.lam), np.asarray(problem.c), np.asarray(problem.c_hat)
    assert np.allclose(problem.gram, np.eye(k))  # orthonormal features: W = the first k coordinates
    d, samples = k + 2, 400_000
    x = np.random.default_rng(20250).standard_normal((samples, d))
    W = np.eye(d)[:k]
    u = np.eye(d)[k]

    def network(coefficients, direction):
        weights = W + xi * np.outer(coefficients, direction)
        weights /= np.linalg.norm(weights, axis=1, keepdims=True)  # the normalized convention
        return np.maximum(x @ weights.T, 0.0) @ lam

    teacher = network(c, u)

    def squared_error(m):
        u_hat = m * u + np.sqrt(1 - m * m) * np.eye(d)[k + 1]
        return (teacher - network(c_hat, u_hat)) ** 2

    for m in (-0.6, 0.0, 0.4):
        errors = squared_error(m)
        estimate, se = errors.mean(), errors.std(ddof=1) / np.sqrt(samples)
        phi = float(popgrad.population_loss(problem, m))
        assert abs(estimate - phi) < 4 * se, (m, estimate, phi, se)
        assert abs(0.5 * estimate - phi) > 50 * se  # the convention with 1/2 is far outside the noise
    # h = -dPhi/dm on the same samples (common random numbers): a central difference of the Monte Carlo
    m, step = 0.2, 0.05
    difference = (squared_error(m + step) - squared_error(m - step)) / (2 * step)
    slope, slope_se = difference.mean(), difference.std(ddof=1) / np.sqrt(samples)
    h = float(popgrad.population_drift(problem, m))
    exact_difference = float(popgrad.population_loss(problem, m + step) - popgrad.population_loss(problem, m - step)) / (2 * step)
    assert abs(slope - exact_difference) < 4 * slope_se, (slope, exact_difference, slope_se)
    assert abs(exact_difference + h) < 0.01 * abs(h)  # the central difference's own error is O(step^2)


def test_readme_states_the_loss_conventions():
    text = README.read_text(encoding="utf-8")
    conventions = text[text.index("## Conventions"):text.index("## Set up")]
    assert "no factor 1/2" in conventions and "E[(f*(x) - f(x))^2]" in conventions
    assert "mf_loss" in conventions and '"saad_solla"' in conventions and '"popgrad"' in conventions
    assert "no factor 1/2" in popgrad.population_loss.__doc__
    assert "1/2" in popgrad.mf_gradient_descent.__doc__
