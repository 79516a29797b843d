"""Imports run one way (LAYOUT.md): every edge between the package's layers points down, a model package
never imports a sibling, and the fast evaluation layers never import the slow reference routes."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "popgrad"
#: layer of each top-level part of the package; an import must go to a lower layer or stay in its part
LAYERS = {"_validation": 0, "numerics": 1, "gaussian": 2, "dynamics": 2, "reference": 3, "models": 4, "analysis": 5, "report": 6, "sweeps": 7, "reproductions": 8, "cli": 9}
FAST = {"numerics", "gaussian", "dynamics", "models"}


def _module_name(path: Path) -> list:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path):
    """(line, target module parts) for every popgrad import in ``path``, relative ones resolved."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [alias.name] for alias in node.names] if not node.module else [target]
            else:
                names = [node.module.split(".")]
            for name in names:
                if name[0] == "popgrad":
                    yield node.lineno, name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "popgrad":
                    yield node.lineno, alias.name.split(".")


def _edges():
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _module_name(path)
        if len(source) < 2 or source[1].startswith("__"):
            continue  # popgrad/__init__ and __main__ re-export and dispatch
        for line, target in _imports(path):
            if len(target) >= 2:
                yield path, line, source, target


def _part(module: list) -> str:
    return module[1] if len(module) > 1 else ""


def test_every_part_has_a_layer():
    parts = {p.name for p in PACKAGE.iterdir() if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and not p.name.startswith("__"))}
    assert parts
    for name in parts:
        assert name.removesuffix(".py") in LAYERS, f"{name} has no layer in tests/test_layers.py"


def test_imports_point_down():
    broken = []
    for path, line, source, target in _edges():
        a, b = _part(source), _part(target)
        if a == b or b not in LAYERS:
            continue
        if LAYERS[b] >= LAYERS[a]:
            broken.append(f"{path.relative_to(PACKAGE)}:{line} imports {'.'.join(target)} ({a} -> {b})")
    assert not broken, "\n".join(broken)


def test_model_packages_do_not_import_siblings():
    broken = [f"{path.relative_to(PACKAGE)}:{line} imports {'.'.join(target)}" for path, line, source, target in _edges() if _part(source) == "models" and _part(target) == "models" and len(source) > 2 and len(target) > 2 and source[2] != target[2]]
    assert not broken, "\n".join(broken)


def test_fast_code_does_not_import_reference_routes():
    broken = [f"{path.relative_to(PACKAGE)}:{line} imports {'.'.join(target)}" for path, line, source, target in _edges() if _part(source) in FAST and _part(target) == "reference"]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("edge, rule", [((["popgrad", "gaussian", "kernels"], ["popgrad", "models", "finetuning", "spec"]), "down"), ((["popgrad", "models", "finetuning", "chain"], ["popgrad", "reference", "hermite"]), "fast")])
def test_the_rules_catch_a_bad_edge(edge, rule):
    source, target = edge
    if rule == "down":
        assert LAYERS[_part(target)] >= LAYERS[_part(source)]
    else:
        assert _part(source) in FAST and _part(target) == "reference"
