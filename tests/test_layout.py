"""The library's import graph reads like the pipeline: no cycle, no stage importing a later one, no CLI."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

LIBRARY = Path(__file__).resolve().parent.parent / "ct_pipeline"
# Infrastructure first (usable by every stage), then the stages in the order the data flows.
ORDER = [
    "ct_pipeline", "errors", "paths", "atomic", "outputs", "run_lock", "preemption", "logfile", "sharding", "threads",
    "devices", "pacs",
    "geometry", "volume", "pose", "dicom_writer", "loading", "luna16", "catalog", "synth", "crops", "cache", "prepcache",
    "datasets", "models", "training", "diagnosis", "followup", "evaluation", "reports", "apps", "recipe", "demo",
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
    units = {p.stem if p.is_file() else p.name for p in LIBRARY.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
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


def test_no_cli_function_has_a_body_over_30_lines():
    """The CLI only wires: parsing, one library call, printing (docstrings not counted)."""
    long = []
    for path in sorted((LIBRARY.parent / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[1:] if ast.get_docstring(node) is not None else node.body
                if body and body[-1].end_lineno - body[0].lineno + 1 > 30:
                    long.append(f"{path.name}:{node.name}")
    assert not long, long


def _module_imports() -> dict[str, set[str]]:
    """Module -> library modules it imports at run time (``if TYPE_CHECKING:`` blocks left out)."""
    modules = {".".join(p for p in path.relative_to(LIBRARY.parent).with_suffix("").parts if p != "__init__"): path
               for path in LIBRARY.rglob("*.py")}  # fmt: skip
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
                       for child in node.body for n in ast.walk(child)}  # fmt: skip
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            edges[module] |= {name for name in names if name in modules and name != module}
    return edges


def test_no_import_cycle_between_modules():
    """Not even inside a package, and not hidden in a function: a module never needs itself back."""
    edges = _module_imports()
    cycles, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append(path[path.index(module):] + [module])
            return
        if module in done:
            return
        for imported in sorted(edges[module]):
            visit(imported, path + [module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])
    assert not cycles, cycles[:3]
