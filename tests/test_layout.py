"""The project's map: no import circle between its modules, and every module imports.

    python -m pytest tests/test_layout.py

The import graph is read with ``ast`` from the source, every ``import`` statement included, also
those inside functions (a deferred import hides a circle from Python but not from the reader).
"""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("colorizer", "data_prep")
ENTRY_POINTS = ("train.py", "serve.py")


def module_files() -> dict:
    """{dotted module name: its file} for the packages' modules and the entry points."""
    files = {p.stem: ROOT / p for p in map(Path, ENTRY_POINTS)}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            files[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return files


def imported_modules(path: Path, name: str, known: set) -> set:
    """The project modules that the module ``name`` (file ``path``) imports anywhere in its source."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # `from package import module` names a module; `from module import name` names the module
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:  # colorizer.data.read_manifest -> colorizer.data
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict:
    files = module_files()
    return {name: imported_modules(path, name, set(files)) for name, path in files.items()}


def find_cycle(graph: dict) -> list:
    """One import circle of ``graph`` as [a, b, ..., a], or [] when there is none (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == "open":
                return stack[stack.index(child):] + [child]
            if child not in state:
                cycle = visit(child)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_the_cycle_finder_finds_a_deferred_import_circle(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("from .b import thing\n")
    (tmp_path / "pkg" / "b.py").write_text("def thing():\n    from .a import other  # deferred\n")
    known = {"pkg.a", "pkg.b"}
    graph = {name: imported_modules(tmp_path / "pkg" / f"{name[4:]}.py", name, known) for name in known}
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
    assert find_cycle({"pkg.a": {"pkg.b"}, "pkg.b": set()}) == []


def test_no_import_circle():
    graph = import_graph()
    assert graph["data_prep.outputs"] >= {"data_prep.linequality", "data_prep.common"}  # the graph sees imports
    assert find_cycle(graph) == []


def test_every_module_imports_in_a_fresh_interpreter():
    """Every module of the packages imports, in one fresh interpreter (one each would take a minute
    on 2 cores; the graph above is what finds a circle, deferred or not)."""
    names = [name for name in module_files() if name.startswith(PACKAGES)]
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run([sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
