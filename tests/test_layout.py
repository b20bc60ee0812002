"""The code's layout, as a maintainer relies on it: layers point one way, subpackages do not
import each other in a circle, modules and functions stay readable, public names are documented,
and the README's Layout section names every subpackage.

Read from the source with ``ast`` (nothing is imported), so a lazy import inside a function
counts the same as one at the top of a module.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("finetune_core", "evaluation", "ui")
# What each layer must never import. `finetune_core/__main__.py` is exempt: it is the program
# (like app.py) that joins the core's commands with evaluation's into one command line.
FORBIDDEN = {
    "finetune_core": {"evaluation", "ui", "app", "gradio"},
    "evaluation": {"ui", "app", "gradio"},
    "ui": {"app"},
}
ENTRY_POINTS = {Path("finetune_core/__main__.py")}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _sources(*packages: str, root: Path = ROOT) -> list[Path]:
    return sorted(p.relative_to(root) for pkg in packages for p in (root / pkg).rglob("*.py"))


def _imports(path: Path, root: Path = ROOT) -> list[str]:
    """Absolute module names imported anywhere in the file (relative imports resolved)."""
    tree = ast.parse((root / path).read_text(encoding="utf-8"))
    package = list(path.with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if node.module:
                found.append(module)
            else:  # `from . import x`: each name is a module of that package
                found += [f"{module}.{alias.name}" for alias in node.names]
    return found


def _unit(path_or_module: str) -> str | None:
    """The core's unit of layering: a subpackage (`data`) or a top-level module (`config`)."""
    parts = path_or_module.replace("/", ".").removesuffix(".py").split(".")
    if parts[0] != "finetune_core" or len(parts) < 2 or parts[1] in ("__init__", "__main__"):
        return None
    return parts[1]


def _layer_violations(package: str, root: Path = ROOT) -> list[str]:
    return [f"{path} imports {module}" for path in _sources(package, root=root) if path not in ENTRY_POINTS
            for module in _imports(path, root) if module.split(".")[0] in FORBIDDEN[package]]


@pytest.mark.parametrize("package", PACKAGES)
def test_layers_point_one_way(package):
    wrong = _layer_violations(package)
    assert not wrong, "\n".join(wrong)


def test_the_layer_check_sees_reversed_imports_even_lazy_ones(tmp_path):
    """The check above is only worth something if it catches what it is there to catch."""
    (tmp_path / "finetune_core" / "data").mkdir(parents=True)
    (tmp_path / "finetune_core" / "data" / "bad.py").write_text(
        "import gradio as gr\n\ndef f():\n    from evaluation import report\n    from ..runs import store\n")
    assert _layer_violations("finetune_core", tmp_path) == [
        "finetune_core/data/bad.py imports gradio", "finetune_core/data/bad.py imports evaluation"]
    assert "finetune_core.runs" in _imports(Path("finetune_core/data/bad.py"), tmp_path)


def test_core_subpackages_do_not_import_each_other_in_a_circle():
    graph: dict[str, set[str]] = {}
    for path in _sources("finetune_core"):
        src = _unit(str(path))
        if src is None:
            continue
        for module in _imports(path):
            dst = _unit(module)
            if dst and dst != src:
                graph.setdefault(src, set()).add(dst)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle between core subpackages: " + " -> ".join(cycle or [])


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else path + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_module_is_too_long_to_read():
    long = [f"{p}: {n} lines" for p in _sources(*PACKAGES)
            if (n := len((ROOT / p).read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not long, f"split these by concept (limit {MAX_MODULE_LINES}):\n" + "\n".join(long)


def test_no_function_is_longer_than_a_screen():
    """Tabs' `build*` functions only lay out widgets, so they are allowed to be long."""
    long = []
    for path in _sources(*PACKAGES):
        for node in ast.walk(ast.parse((ROOT / path).read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                layout = path.parts[0] == "ui" and node.name.startswith("build")
                if lines > MAX_FUNCTION_LINES and not layout:
                    long.append(f"{path}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "\n".join(long)


def _public_without_docstring(path: Path) -> list[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    missing = [] if ast.get_docstring(tree) else [f"{path}: module"]
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or node.name.startswith("_"):
            continue
        if not ast.get_docstring(node):
            missing.append(f"{path}:{node.lineno} {node.name}")
        if isinstance(node, ast.ClassDef) and not _extends_a_library_class(node):
            missing += [f"{path}:{m.lineno} {node.name}.{m.name}" for m in node.body
                        if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                        and not m.name.startswith("_") and not ast.get_docstring(m)]
    return missing


def _extends_a_library_class(node: ast.ClassDef) -> bool:
    """Methods of a torch/transformers subclass (forward, backward, update ...) override
    documented library methods; the class docstring says what the subclass changes."""
    names = {ast.unparse(b) for b in node.bases}
    return any(re.match(r"(nn|torch|autograd|Cache|DynamicCache|DynamicLayer|Function|TextStreamer|"
                        r"BaseStreamer|TrainerCallback|logging)\b", n) for n in names)


def test_every_public_function_and_class_has_a_docstring():
    missing = [m for path in _sources(*PACKAGES) + [Path("app.py")] for m in _public_without_docstring(path)]
    assert not missing, f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)


def _layout_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Layout\n(.*?)(?=^## )", readme, flags=re.M | re.S)
    assert match, "README.md has no '## Layout' section"
    return match.group(1)


def test_readme_layout_names_every_subpackage_and_package():
    section = _layout_section()
    subpackages = sorted(p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("finetune_core/*/__init__.py"))
    assert subpackages, "no core subpackages found"
    named = [f"{name}/" for name in subpackages] + ["evaluation/", "ui/", "app.py"]
    missing = [name for name in named if f"`{name}`" not in section]
    assert not missing, f"README Layout section does not name: {missing}"
