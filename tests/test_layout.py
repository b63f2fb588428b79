"""The library's import graph reads like the pipeline: no cycle, no stage importing a later one, no CLI."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

LIBRARY = Path(__file__).resolve().parent.parent / "ct_pipeline"
# Infrastructure first (usable by every stage), then the stages in the order the data flows.
ORDER = [
    "ct_pipeline",
    "errors",
    "paths",
    "atomic",
    "outputs",
    "run_lock",
    "preemption",
    "logfile",
    "sharding",
    "threads",
    "precision",
    "devices",
    "pacs",
    "geometry",
    "volume",
    "pose",
    "dicom_writer",
    "loading",
    "luna16",
    "catalog",
    "synth",
    "crops",
    "cache",
    "prepcache",
    "datasets",
    "models",
    "training",
    "diagnosis",
    "followup",
    "evaluation",
    "reports",
    "apps",
    "recipe",
    "demo",
]


def _unit(module: str) -> str:
    """ct_pipeline.diagnosis.batch -> "diagnosis"; ct_pipeline -> "ct_pipeline"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports() -> dict[str, set[str]]:
    """Unit -> units it imports (anywhere in its files, function bodies included)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in LIBRARY.rglob("*.py"):
        relative = path.relative_to(LIBRARY.parent).with_suffix("")
        module = ".".join(p for p in relative.parts if p != "__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name == "cli" or name.startswith("cli."):
                    edges[_unit(module)].add("cli")
                elif name.startswith("ct_pipeline") and _unit(name) != _unit(module):
                    edges[_unit(module)].add(_unit(name))
    return edges


def test_every_unit_of_the_library_has_a_place_in_the_order():
    units = {
        p.stem if p.is_file() else p.name
        for p in LIBRARY.iterdir()
        if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    units = {("ct_pipeline" if u == "__init__" else u) for u in units}
    assert units <= set(ORDER), sorted(units - set(ORDER))


def test_no_stage_imports_a_later_one_or_the_cli():
    backwards = [
        f"{unit} -> {imported}"
        for unit, imported_units in _imports().items()
        for imported in imported_units
        if imported == "cli" or ORDER.index(imported) > ORDER.index(unit)
    ]
    assert not backwards, backwards


def test_no_library_module_starts_the_cli():
    """The demo and the recipe hand `ct` command lines to a runner the caller gives; only cli/ runs them."""
    texts = {p.name: p.read_text(encoding="utf-8") for p in LIBRARY.rglob("*.py")}
    starts = [name for name, text in texts.items() if '"-m", "cli"' in text or "'-m', 'cli'" in text]
    assert not starts, starts


def test_no_cli_function_has_a_body_over_25_statements():
    """The CLI only wires: parsing, one library call, printing (docstrings not counted).

    Counted in statements, not lines: the formatter decides the line breaks, and a request built
    from twenty typed options is one statement over twenty lines."""
    long = []
    for path in sorted((LIBRARY.parent / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[1:] if ast.get_docstring(node) is not None else node.body
                statements = sum(isinstance(inner, ast.stmt) for part in body for inner in ast.walk(part))
                if statements > 25:
                    long.append(f"{path.name}:{node.name} ({statements} statements)")
    assert not long, long


def _module_imports(library: Path = LIBRARY) -> dict[str, set[str]]:
    """Module -> modules of ``library`` it imports: in function bodies and ``if TYPE_CHECKING:`` blocks too.

    A type-only import back is still a cycle for the reader: neither module can be read, or moved,
    without the other (``synth/config.py`` <-> ``synth/style.py`` was one).
    """
    modules = {}
    for path in library.rglob("*.py"):
        modules[".".join(p for p in path.relative_to(library.parent).with_suffix("").parts if p != "__init__")] = path
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            edges[module] |= {name for name in names if name in modules and name != module}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle found by a depth-first walk, each as ``[a, b, ..., a]``."""
    cycles, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append(path[path.index(module) :] + [module])
            return
        if module in done:
            return
        for imported in sorted(edges.get(module, ())):
            visit(imported, path + [module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])
    return cycles


def test_no_import_cycle_between_modules():
    """Not even inside a package, nor hidden in a function or behind TYPE_CHECKING."""
    cycles = _cycles(_module_imports())
    assert not cycles, cycles[:3]


def test_the_cycle_check_sees_a_cycle_inside_a_package(tmp_path):
    """The check above must not pass by looking away: a cycle two modules deep in a package, through a
    type-only import and one inside a function, is found (the shape config <-> style had)."""
    package = tmp_path / "lib" / "pkg"
    package.mkdir(parents=True)
    for folder in (tmp_path / "lib", package):
        (folder / "__init__.py").write_text("")
    (package / "config.py").write_text("from lib.pkg.style import STYLES\n")
    (package / "style.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lib.pkg.config import Layout\n"
    )
    (package / "writer.py").write_text("def write():\n    from lib.pkg import config\n")
    (package / "clean.py").write_text("import lib.pkg.writer\n")
    edges = _module_imports(tmp_path / "lib")
    assert edges["lib.pkg.clean"] == {"lib.pkg.writer"} and edges["lib.pkg.writer"] == {"lib.pkg", "lib.pkg.config"}
    assert _cycles(edges) == [["lib.pkg.config", "lib.pkg.style", "lib.pkg.config"]]
