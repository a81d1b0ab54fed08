"""The package's architecture, checked from the source (AST), without importing it.

* No import cycles among cxrkit's modules. Every import counts, also one inside a function (a
  lazy import hides a cycle from Python's import machinery, not from a reader). An import of
  ``a.b.c`` is an edge to the module ``a.b.c``; the parent packages Python imports on the way are
  not edges (a package ``__init__`` that re-exports its modules is the usual pattern), so a module
  must not import from its own package's ``__init__`` (that would be a cycle here).
* Layers: each part of the package imports only the parts below it (:data:`MAY_IMPORT`); the
  lower layers (utils, data, models, losses, evaluation) never import training or the study.
* Sizes: no module over :data:`MAX_MODULE_LINES` lines, no function (or method) over
  :data:`MAX_FUNCTION_LINES` lines from its ``def`` to its last line, docstring included, unless
  listed, with the reason, in :data:`LARGE_MODULES` / :data:`LONG_FUNCTIONS`.
* The map: every module (``__init__`` files aside) is named in the README's "Where things are"
  table, and every module the table names exists (:func:`_readme_table_modules`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cxrkit"
README = PACKAGE.parent / "README.md"

#: The part of the package each module belongs to: the first name below ``cxrkit``
#: (``cxrkit`` itself is the root package: ``LABELS`` and ``__version__``).
PARTS = ("root", "utils", "data", "models", "losses", "evaluation", "phantom", "training", "study", "tools", "cli")

#: What each part may import (itself included). Lower layers first.
MAY_IMPORT: dict[str, set[str]] = {
    "root": {"root", "data"},
    "utils": {"utils"},
    "data": {"utils", "data"},
    "models": {"utils", "data", "models"},
    "losses": {"utils", "losses"},
    "evaluation": {"utils", "data", "evaluation"},
    "phantom": {"root", "utils", "data", "phantom"},
    "training": {"utils", "data", "models", "losses", "evaluation", "training"},
    "study": {"utils", "data", "models", "evaluation", "phantom", "training", "study"},
    "tools": {"utils", "data", "models", "losses", "evaluation", "phantom", "training", "tools"},
    "cli": {"utils", "data", "evaluation", "phantom", "training", "study", "tools", "cli"},
}

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

#: Modules allowed over MAX_MODULE_LINES: path relative to cxrkit/ -> why. (None at present: the
#: renderer is split into scene, anatomy and findings, the oracle into posterior and oracle.)
LARGE_MODULES: dict[str, str] = {}

#: Functions allowed over MAX_FUNCTION_LINES: "path:qualified name" -> why. (None at present.)
LONG_FUNCTIONS: dict[str, str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _part(module: str) -> str:
    parts = module.split(".")
    return "root" if len(parts) == 1 else parts[1]


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The cxrkit module ``name`` is, or the one it is a name in (the longest module prefix)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The cxrkit modules ``module`` imports anywhere (function bodies included), with a line."""
    found: dict[str, int] = {}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for name in names:
            target = _resolve(name, modules) if name.split(".")[0] == "cxrkit" else None
            if target is not None and target != module:
                found.setdefault(target, node.lineno)
    return found


def _graph() -> dict[str, dict[str, int]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_module_belongs_to_a_known_part() -> None:
    unknown = sorted(m for m in _modules() if _part(m) not in PARTS)
    assert not unknown, f"modules outside the known parts {PARTS} (add the part and its layer): {unknown}"


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    detail = [" <-> ".join(c) + ": " + "; ".join(f"{a} imports {b} (line {graph[a][b]})" for a in c for b in c
                                                   if b in graph[a]) for c in cycles]
    assert not cycles, "import cycles among cxrkit modules:\n" + "\n".join(detail)


def test_layers() -> None:
    wrong = [f"{m} ({_part(m)}) imports {t} ({_part(t)}), line {line}"
             for m, targets in _graph().items() for t, line in targets.items()
             if _part(t) not in MAY_IMPORT[_part(m)]]
    assert not wrong, "imports against the layering (MAY_IMPORT):\n" + "\n".join(wrong)


def test_lower_layers_never_import_training_or_the_study() -> None:
    lower = {"utils", "data", "models", "losses", "evaluation"}
    assert not any(MAY_IMPORT[p] & {"training", "study"} for p in lower)  # the rule itself, stated plainly
    wrong = [f"{m} imports {t}" for m, targets in _graph().items() if _part(m) in lower
             for t in targets if _part(t) in ("training", "study")]
    assert not wrong, wrong


def _sizes() -> tuple[dict[str, int], dict[str, int]]:
    """Lines per module (path relative to cxrkit/) and per function (``path:Qualified.name``)."""
    module_lines, function_lines = {}, {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        source = path.read_text()
        module_lines[rel] = len(source.splitlines())

        def walk(node: ast.AST, prefix: str, rel: str = rel) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        function_lines[f"{rel}:{name}"] = child.end_lineno - child.lineno + 1
                    walk(child, name + ".")
                else:
                    walk(child, prefix)

        walk(ast.parse(source, str(path)), "")
    return module_lines, function_lines


def test_module_sizes() -> None:
    module_lines, _ = _sizes()
    large = {m: n for m, n in module_lines.items() if n > MAX_MODULE_LINES and m not in LARGE_MODULES}
    assert not large, f"modules over {MAX_MODULE_LINES} lines (split them, or list them with the reason): {large}"


def test_function_sizes() -> None:
    _, function_lines = _sizes()
    long = {f: n for f, n in function_lines.items() if n > MAX_FUNCTION_LINES and f not in LONG_FUNCTIONS}
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them, or list them with the reason): {long}"


def test_allowlists_are_current() -> None:
    """An exception that no longer applies leaves the list (so the list says what is still large)."""
    module_lines, function_lines = _sizes()
    stale = [m for m in LARGE_MODULES if module_lines.get(m, 0) <= MAX_MODULE_LINES]
    stale += [f for f in LONG_FUNCTIONS if function_lines.get(f, 0) <= MAX_FUNCTION_LINES]
    assert not stale, f"allowlisted but within the limits (or gone): {stale}"


def test_the_checks_see_cycles_and_lazy_imports(tmp_path: Path) -> None:
    """The checker itself: a cycle through a function-level import is found."""
    graph = {"cxrkit.a": {"cxrkit.b": 1}, "cxrkit.b": {"cxrkit.c": 3}, "cxrkit.c": {"cxrkit.a": 9}, "cxrkit.d": {}}
    assert _cycles(graph) == [["cxrkit.a", "cxrkit.b", "cxrkit.c"]]
    pkg = tmp_path / "cxrkit"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from cxrkit import b\n    return b\n")
    (pkg / "b.py").write_text("from cxrkit.a import f\n")
    modules = {"cxrkit": pkg / "__init__.py", "cxrkit.a": pkg / "a.py", "cxrkit.b": pkg / "b.py"}
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    assert graph["cxrkit.a"] == {"cxrkit.b": 2} and graph["cxrkit.b"] == {"cxrkit.a": 1}
    assert _cycles(graph) == [["cxrkit.a", "cxrkit.b"]]


def _readme_table_modules(readme: str) -> set[str]:
    """The modules (paths relative to cxrkit/) that the "Where things are" table of ``readme`` names.

    In the table's second column, a code span holding a path with a ``/`` (``data/labels.py``, or a
    folder ``data/images/``) is a path from cxrkit/ and sets the folder; a bare file name
    (``raster.py``) is in the folder of the last path before it in the same row (cxrkit/ itself
    when there is none: ``cli.py``). Other code spans (``DATASETS``, ``cxrkit infer``) are not
    modules.
    """
    section = readme.split("\n## Where things are\n", 1)[1].split("\n## ", 1)[0]
    found: set[str] = set()
    for line in section.splitlines():
        cells = line.split("|")
        if not line.startswith("|") or len(cells) < 4 or set(cells[2].strip()) <= {"-"}:
            continue
        folder = ""
        for span in re.findall(r"`([^`]+)`", cells[2]):
            if "/" in span and " " not in span:
                folder = span if span.endswith("/") else span.rpartition("/")[0] + "/"
                if span.endswith(".py"):
                    found.add(span)
            elif re.fullmatch(r"\w+\.py", span):
                found.add(folder + span)
    return found


def test_every_module_is_on_the_readme_map() -> None:
    named = _readme_table_modules(README.read_text())
    modules = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}
    missing = sorted(m for m in modules - named if not m.endswith("__init__.py"))
    assert not missing, f"modules the README's 'Where things are' table does not name (add them to a row): {missing}"
    gone = sorted(named - modules)
    assert not gone, f"the README's 'Where things are' table names modules that do not exist: {gone}"


def test_the_readme_map_reads_paths_and_file_names_after_their_folder() -> None:
    readme = """# x
## Where things are

| concern | where (in `cxrkit/`) |
|---|---|
| a | `data/images/`: `policy.py`, `raster.py`; `data/labels.py`, `views.py` (`DATASETS`) |
| b | `cli.py`; `tools/bench.py` (`cxrkit infer` in `tools/bench_infer.py`), `weights.py` |

## Next
| c | `elsewhere.py` |
"""
    assert _readme_table_modules(readme) == {
        "data/images/policy.py", "data/images/raster.py", "data/labels.py", "data/views.py", "cli.py",
        "tools/bench.py", "tools/bench_infer.py", "tools/weights.py"}
