"""The package layout a newcomer reads (docs/architecture.md): no import cycle, small modules, and the
settings, the CLI's start and the ONNX path never import Keras."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ultrasonic"
MAX_LINES = 400  # STYLE.md: a file over ~400 lines is a sign it does two things


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """Modules of ours imported when `path` is imported: module level, not inside functions or TYPE_CHECKING."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ultrasonic"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ultrasonic"))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: {m for m in top_level_imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_our_modules():
    assert find_cycle(import_graph()) is None


def test_no_module_is_over_400_lines():
    long = {module_name(p): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules: {long}"


def test_the_top_level_has_only_the_shared_modules():
    flat = sorted(p.stem for p in SRC.glob("*.py"))
    assert flat == ["__init__", "atomic", "backend", "cli", "config", "errors", "lazy", "pause", "rundir", "validate"]


def test_no_public_name_of_a_package_is_also_one_of_its_modules():
    """Importing package.name (the module) would replace the lazily exported package.name (the function)."""
    import importlib

    for init in SRC.rglob("__init__.py"):
        package = importlib.import_module(module_name(init))
        modules = {p.stem for p in init.parent.glob("*.py")} | {p.name for p in init.parent.iterdir() if p.is_dir()}
        assert not set(getattr(package, "__all__", ())) & modules, package.__name__


@pytest.mark.parametrize("module", ["ultrasonic.config", "ultrasonic.cli", "ultrasonic.inference.predictor",
                                    "ultrasonic.data.cache", "ultrasonic.models.names"])
def test_settings_cli_and_decoding_do_not_import_keras(module):
    code = f"import sys, {module}; print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_two_test_modules_share_a_file_name():
    """The test folders have no __init__.py (pytest's default import mode): two test_x.py in two folders
    stop the whole run at collection ("import file mismatch")."""
    names: dict[str, list[str]] = {}
    for path in (SRC.parents[1] / "tests").rglob("test_*.py"):
        names.setdefault(path.name, []).append(str(path.parent.name))
    assert not {name: folders for name, folders in names.items() if len(folders) > 1}
