"""The package's layering, read from its source with ``ast`` (every import statement, those inside functions too):

- no module outside ``affectfuse.cli`` imports ``affectfuse.cli``;
- no import cycles among the package's modules;
- a module of a lower layer never imports one of a higher layer (the order is :data:`LAYERS`, docs/design.md).

An import ``from affectfuse.a import b`` is an edge to the module ``affectfuse.a.b`` when that module exists, else to
``affectfuse.a``; the implicit import of a package's ``__init__`` is not an edge (it is how Python imports, not a
dependency the module chose). ``from affectfuse import __version__`` (a constant of the package root, which imports
its API lazily by name) is not an edge either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "affectfuse"
PACKAGE = "affectfuse"

# Lowest first; a module may import its own layer and the layers before it (docs/design.md "Layers"). Where this
# differs from the stage order media -> faces -> features -> data -> models -> training -> metrics -> outputs ->
# inference -> cli, the code says why: the feature store (data.store) is what extractors write into, so `data`
# comes before `features`; training scores with `metrics` and writes its prediction files with `outputs`, so both
# come before `training`.
# 'cluster' is library code (the Ray back end of two commands), above what it runs and below `cli`.
LAYERS = ("labels", "utils", "weights", "media", "faces", "data", "features", "models", "metrics", "outputs",
          "training", "inference", "api", "cluster", "cli")

# Breaks of the order that exist today, each with its way out. The test fails on any other break, and also when a
# listed one is gone (delete its line then), so this list is always the true one.
KNOWN_BREAKS = {
    ("affectfuse.outputs.report", "affectfuse.inference.confidence"):
        "the report's confidence rules (smooth, floor2, UNCERTAIN) are presentation: inference/confidence.py -> outputs/",
    ("affectfuse.outputs.report_html", "affectfuse.inference.confidence"):
        "the same rules, for the HTML page split out of outputs/report.py",
    ("affectfuse.outputs.expr_files", "affectfuse.training.temporal"):
        "submission_labels needs only resolve/apply_smoothing: move those next to data.windows' smoothing",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` is or lies in (``affectfuse.a.b.func`` -> ``affectfuse.a.b``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def root_constants() -> set[str]:
    """Names the package root binds to a literal (``__version__``): importing them runs no other module."""
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    return {t.id for node in tree.body if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for t in node.targets if isinstance(t, ast.Name)}


def imports_of(name: str, path: Path, known: set[str], constants: frozenset[str] = frozenset()) -> dict[str, int]:
    """Package modules imported anywhere in the file -> the first line importing each."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: dict[str, int] = {}
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{a.name}" for a in node.names]
        for target in targets:
            if target.split(".")[0] != PACKAGE or target in {f"{PACKAGE}.{c}" for c in constants}:
                continue
            mod = _resolve(target, known)
            if mod and mod != name:
                out.setdefault(mod, node.lineno)
    return out


def import_graph() -> dict[str, dict[str, int]]:
    mods = modules()
    known, constants = set(mods), frozenset(root_constants())
    return {name: imports_of(name, path, known, constants) for name, path in mods.items()}


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as one cycle through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:  # iterative would be longer; the package is far below the recursion limit
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, sorted(c)) for c in comps]


def _one_cycle(graph: dict[str, dict[str, int]], comp: list[str]) -> list[str]:
    """A shortest cycle from the component's first module back to it (breadth-first inside the component)."""
    members, start = set(comp), comp[0]
    parent = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return list(reversed(path)) + [start]
            if w in members and w not in parent:
                parent[w] = v
                queue.append(w)
    return comp


def layer_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def describe(graph, cycle: list[str]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_the_walker_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "affectfuse"
    (pkg / "a").mkdir(parents=True)
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("def f():\n    from affectfuse.a.y import g\n")
    (pkg / "a" / "y.py").write_text("from . import x\nimport affectfuse.a\n")
    known = {"affectfuse.a", "affectfuse.a.x", "affectfuse.a.y"}
    gx = imports_of("affectfuse.a.x", pkg / "a" / "x.py", known)
    gy = imports_of("affectfuse.a.y", pkg / "a" / "y.py", known)
    assert gx == {"affectfuse.a.y": 2}
    assert gy == {"affectfuse.a.x": 1, "affectfuse.a": 2}
    graph = {"affectfuse.a": {}, "affectfuse.a.x": gx, "affectfuse.a.y": gy}
    assert find_cycles(graph) == [["affectfuse.a.x", "affectfuse.a.y", "affectfuse.a.x"]]


def test_nothing_outside_cli_imports_cli():
    graph = import_graph()
    bad = [f"{src} imports {dst} (line {line})" for src, deps in graph.items() for dst, line in deps.items()
           if layer_of(dst) == "cli" and layer_of(src) != "cli"]
    assert not bad, "library code must not import affectfuse.cli:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (lazy imports inside functions count too):\n" + "\n".join(
        describe(graph, c) for c in cycles)


def layer_breaks(graph) -> dict[tuple[str, str], int]:
    """(importer, imported) -> line, for every import of a higher layer (or of the package root)."""
    rank = {layer: k for k, layer in enumerate(LAYERS)}
    out = {}
    for src, deps in graph.items():
        for dst, line in deps.items():
            if dst == PACKAGE or (src != PACKAGE and rank[layer_of(dst)] > rank[layer_of(src)]):
                out[(src, dst)] = line
    return out


def test_lower_layers_never_import_higher_ones():
    graph = import_graph()
    unknown = sorted({layer_of(m) for m in graph} - set(LAYERS) - {None})
    if unknown:
        pytest.fail(f"modules outside the layer order {LAYERS}: {unknown}; add them to LAYERS (docs/design.md)")
    breaks = layer_breaks(graph)
    new = [f"{src} ({layer_of(src)}) imports {dst} ({layer_of(dst)}), line {line}"
           for (src, dst), line in breaks.items() if (src, dst) not in KNOWN_BREAKS]
    assert not new, f"layer order {' -> '.join(LAYERS)} broken:\n" + "\n".join(new)
    fixed = [f"{a} -> {b}" for a, b in KNOWN_BREAKS if (a, b) not in breaks]
    assert not fixed, "fixed, delete from KNOWN_BREAKS: " + ", ".join(fixed)
