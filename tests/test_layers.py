"""The one-way import rule of docs/DESIGN.md, checked over the source (ast, nothing imported):
entry points -> pipeline -> analysis -> models, data, eval, mixing -> ops -> infra. A module
may import its own layer or any layer below it, never one above, and no two modules may
import each other through any chain (a cycle). ``__main__.py`` files are entry points."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "auggen"

# Bottom to top. The first matching prefix names a module's layer.
LAYERS = [
    ("infra", ("auggen.infra", "auggen._C", "auggen._C_cuda")),
    ("ops", ("auggen.ops", "auggen.kernels")),
    (
        "models",
        ("auggen.data", "auggen.eval", "auggen.mixing", "auggen.generator", "auggen.recognition"),
    ),  # fmt: skip
    ("analysis", ("auggen.analysis",)),
    ("pipeline", ("auggen.pipeline",)),
    ("entry", ("auggen.cli", "auggen.__main__")),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


def layer_of(module: str) -> str | None:
    if module.endswith(".__main__"):
        return "entry"
    for name, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every ``auggen.X`` module a file imports (at any depth, type-checking blocks too)."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "auggen"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the package
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base.split(".")[0] != "auggen":
                continue
            for a in node.names:  # "from auggen.x import y": y may be a module
                sub = f"{base}.{a.name}"
                out.add(sub if _exists(sub) else base)
    return out


def _exists(module: str) -> bool:
    p = ROOT.parent.joinpath(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(ROOT.rglob("*.py"))}


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in g.items():
        here = layer_of(mod)
        for dep in sorted(deps):
            there = layer_of(dep)
            if here is None or there is None:
                continue
            if RANK[there] > RANK[here]:
                bad.append(f"{mod} ({here}) imports {dep} ({there})")
    return bad


def _with_parents(mod: str, dep: str) -> set[str]:
    """``dep`` and the packages Python runs first to import it (their ``__init__``), except
    the importer's own packages (already running when it imports)."""
    parts = dep.split(".")
    out = {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
    return {d for d in out if not (mod == d or mod.startswith(d + "."))}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan). Importing a.b.c runs
    a.b's ``__init__`` first, so that counts as an edge too; a package's edges to its own
    submodules are left out (a package re-exporting its parts)."""
    edges = {
        m: {
            d
            for dep in deps
            for d in _with_parents(m, dep)
            if d in g and not d.startswith(m + ".") and d != m
        }
        for m, deps in g.items()
    }
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    loose = [m for m in graph() if layer_of(m) is None and m != "auggen"]
    assert not loose, f"modules outside every layer of tests/test_layers.py: {loose}"


def test_no_import_points_up():
    bad = upward_imports(graph())
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_checker_sees_an_upward_import_and_a_cycle():
    g = {
        "auggen.infra.files": {"auggen.pipeline.stage"},
        "auggen.pipeline.stage": {"auggen.infra.files"},
    }
    assert upward_imports(g) == [
        "auggen.infra.files (infra) imports auggen.pipeline.stage (pipeline)"
    ]
    assert cycles(g) == [["auggen.infra.files", "auggen.pipeline.stage"]]


def test_checker_sees_a_cycle_through_a_package_init():
    g = {
        "auggen.pipeline.pretrained": {"auggen.pipeline.stages.common"},
        "auggen.pipeline.stages": {"auggen.pipeline.pretrained"},
        "auggen.pipeline.stages.common": set(),
    }
    assert cycles(g) == [["auggen.pipeline.pretrained", "auggen.pipeline.stages"]]
