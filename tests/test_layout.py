"""The project's map: no import circle between its modules, and every module imports.

    python -m pytest tests/test_layout.py

The import graph is read with ``ast`` from the source, every ``import`` statement included, also
those inside functions (a deferred import hides a circle from Python but not from the reader).
"""
import ast
import re
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


# ---- README's map ------------------------------------------------------------------------------------

def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    return text[start: text.index("\n## ", start + 1)]


def definitions(path: Path) -> set:
    """What a module defines: its top-level names, ``Class.method`` for its classes' methods, and the
    parameters of its functions (the paragraphs name a few arguments)."""
    names = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{item.name}" for item in node.body if isinstance(item, ast.FunctionDef)}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
    return names | {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}


def test_readme_architecture_has_a_row_for_every_module():
    rows = {line.split("`")[1] for line in readme_section("Architecture").splitlines() if line.startswith("| `")}
    modules = {f"{package}/{path.name}" for package in PACKAGES for path in (ROOT / package).glob("*.py")
               if path.name != "__init__.py"}
    assert modules - rows == set()
    assert set(ENTRY_POINTS) <= rows


def test_the_flow_paragraphs_name_functions_that_exist():
    """Each ``module.name``, ``Class.method`` or bare name in "How a batch flows" and "How a drawing
    is coloured" is defined where it says (file names, config keys and commands aside)."""
    section = readme_section("Architecture")
    defined = {name: definitions(path) for name, path in module_files().items()}
    anywhere = set().union(*defined.values())
    for title in ("How a batch flows:", "How a drawing is coloured:"):
        paragraph = section[section.index(title):].split("\n\n")[0]
        names = [span for span in paragraph.split("`")[1::2]
                 if re.fullmatch(r"\w+(\.\w+)?", span) and not span.endswith((".jsonl", ".png", ".psd"))]
        assert len(names) >= 5, title  # the parse found the names
        for span in names:
            module, _, name = span.partition(".")
            where = defined.get(f"colorizer.{module}") if name else None
            assert (name in where) if where is not None else (span in anywhere), f"{title} names `{span}`"
