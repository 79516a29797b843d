"""Imports run one way (LAYOUT.md): every edge between the package's layers points down, a model package
never imports a sibling, and the fast evaluation layers never import the slow reference routes."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "popgrad"
#: layer of each top-level part of the package; an import must go to a lower layer or stay in its part
# _progress checks its argument with _validation: half a layer above it, below everything else
LAYERS = {"_validation": 0, "_progress": 0.5, "_lazy": 0, "_io": 1, "numerics": 1, "gaussian": 2, "dynamics": 2, "reference": 3, "models": 4, "analysis": 5, "report": 6, "sweeps": 7, "reproductions": 8, "cli": 9}
#: parts on the fast evaluation path, which must not import the reference routes
FAST = {"numerics", "gaussian", "dynamics", "models"}


def _module(root: Path, path: Path) -> list:
    parts = [root.name] + list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(root: Path, path: Path):
    """(line, target module parts) for every import of the package in ``path``, relative ones resolved."""
    here = _module(root, path)
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                targets = [base + node.module.split(".")] if node.module else [base + [alias.name] for alias in node.names]
            else:
                targets = [node.module.split(".")]
        elif isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        else:
            continue
        for target in targets:
            if target[0] == root.name and len(target) >= 2:
                yield node.lineno, target


def violations(root: Path) -> list:
    """Every import in the package at ``root`` that breaks one of the three rules, as readable lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        source = _module(root, path)
        if len(source) < 2 or source[1].startswith("__"):
            continue  # the package's __init__ and __main__ re-export and dispatch
        for line, target in _imports(root, path):
            a, b = source[1], target[1]
            where = f"{path.relative_to(root)}:{line} imports {'.'.join(target)}"
            if a != b and b in LAYERS and LAYERS[b] >= LAYERS[a]:
                found.append(f"{where} (upward: {a} -> {b})")
            if a == b == "models" and len(source) > 2 and len(target) > 2 and source[2] != target[2]:
                found.append(f"{where} (a model package imports a sibling)")
            if a in FAST and b == "reference":
                found.append(f"{where} (fast code imports a reference route)")
    return found


def test_every_part_has_a_layer():
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and not p.name.startswith("__"))}
    assert parts and parts <= set(LAYERS), parts - set(LAYERS)


def test_the_package_keeps_the_rules():
    assert violations(PACKAGE) == []


def test_the_rules_catch_each_kind_of_bad_edge(tmp_path):
    root = tmp_path / "popgrad"
    files = {
        "__init__.py": "",
        "gaussian/__init__.py": "",
        "gaussian/kernels.py": "from ..models.finetuning import spec\n",
        "models/__init__.py": "",
        "models/finetuning/__init__.py": "",
        "models/finetuning/spec.py": "from ..ntk_lora import landscape\nimport popgrad.reference.hermite\n",
        "models/ntk_lora/__init__.py": "",
        "models/ntk_lora/landscape.py": "from ...gaussian import kernels\n",
        "reference/__init__.py": "",
        "reference/hermite.py": "from ..gaussian import kernels\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    found = violations(root)
    assert len(found) == 3, found
    assert any("upward: gaussian -> models" in line for line in found)
    assert any("sibling" in line for line in found)
    assert any("fast code imports a reference route" in line for line in found)


def test_the_type_stub_lists_the_public_api_where_it_lives():
    # popgrad/__init__.pyi is what type checkers and IDEs see of the lazy API: the same names, from the
    # same modules as popgrad.__getattr__ imports them
    import ast

    import popgrad

    stub = ast.parse((PACKAGE / "__init__.pyi").read_text())
    listed = {alias.asname or alias.name: node.module for node in stub.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert listed == {name: module for name, module in popgrad._index().items()}
    assert (PACKAGE / "py.typed").exists()


def test_compiled_code_lives_only_where_the_kernel_cache_key_looks():
    # SOURCE_VERSION (the numba cache key of every specialised kernel) hashes only these subpackages: a
    # jitted function anywhere else could be inlined into a kernel and go stale unseen
    from popgrad.numerics.compiled import COMPILED_SUBPACKAGES

    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = path.relative_to(PACKAGE).parts[0]
        if part in COMPILED_SUBPACKAGES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Name, ast.Attribute)) and (node.id if isinstance(node, ast.Name) else node.attr) in {"njit", "jit", "vectorize", "guvectorize", "cfunc"}:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


#: the evaluation paths: they never import sympy or mpmath at module level (the derive and verify side,
#: 1.3 s to import), so loading a kernel loads no computer algebra
EVALUATE = ("numerics", "dynamics", "models", "gaussian/programs.py", "gaussian/unary.py", "gaussian/families")
#: derive-side modules inside those parts, with the reason
DERIVE_INSIDE = {"models/finetuning/series.py": "the symbolic drift series (sympy) behind the derivation tables"}


def _module_level_imports(path: Path) -> list:
    tree = ast.parse(path.read_text())
    found = []
    for node in tree.body:  # top-level statements only: imports inside functions load on use
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def test_the_evaluation_paths_import_no_computer_algebra_at_module_level():
    offenders = []
    for part in EVALUATE:
        paths = [PACKAGE / part] if part.endswith(".py") else sorted((PACKAGE / part).rglob("*.py"))
        for path in paths:
            relative = str(path.relative_to(PACKAGE))
            if relative in DERIVE_INSIDE:
                continue
            offenders += [f"{relative}:{line} imports {name}" for line, name in _module_level_imports(path) if name in ("sympy", "mpmath")]
    assert offenders == []


def test_loading_the_kernels_loads_no_sympy_or_mpmath():
    import subprocess
    import sys

    modules = ["popgrad.dynamics.engine", "popgrad.models.finetuning.chain", "popgrad.models.finetuning.overlaps", "popgrad.models.finetuning.sgd", "popgrad.models.finetuning.spec", "popgrad.models.matrix_factorization.flow", "popgrad.models.ntk_lora.landscape", "popgrad.models.ntk_lora.optimise"]
    script = "import sys\n" + "".join(f"import {name}\n" for name in modules) + "print(sorted(name for name in ('sympy', 'mpmath') if name in sys.modules))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
