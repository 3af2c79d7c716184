"""The import graph of etcd_dr, read with `ast` (module-level and function-local imports, relative
ones resolved, `if TYPE_CHECKING:` ones left out: they never run): no circle, and the layers point one
way: the CLI (etcd_dr/cli/) and the lab (etcd_dr/lab/) use the core, the core uses neither."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "etcd_dr"

# Core modules that still import the lab, each with why it has not moved yet (issue 9; see README
# "Layout"). Shrink this, never grow it: a new lab use in the core is a parameter passed in instead.
LAB_ALLOWED: dict[str, str] = {
    # the `lab` power driver (inventory power.driver: lab) reads the lab's state file; passing it in
    # means a driver registry that every entry point (CLI, flows, workers) must load, or fencing
    # silently finds no evidence: a safety decision left for the fencing work, not a CLI move
    "etcd_dr.recovery.fencing": "_lab_power(): the lab power driver",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _type_checking_only(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The etcd_dr modules `name` imports when it runs (at import time or inside a function)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(mod: str) -> str | None:
        # `import a.b.c` / `from a.b import c` name a module or something inside one: the longest known prefix
        while mod and mod not in known:
            mod = mod.rpartition(".")[0]
        return mod or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                for n in child.orelse:
                    visit(n)
                continue
            if isinstance(child, ast.Import):
                for a in child.names:
                    if (m := resolve(a.name)) is not None:
                        found.add(m)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join([*base, child.module] if child.module else base)
                else:
                    mod = child.module or ""
                for a in child.names:  # `from pkg import submodule` imports the submodule
                    if (m := resolve(f"{mod}.{a.name}")) is not None:
                        found.add(m)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle as [a, b, ..., a], or None."""
    edges = graph
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(edges, WHITE)
    stack: list[str] = []

    def dfs(m: str) -> list[str] | None:
        color[m] = GREY
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if color.get(d) == GREY:
                return [*stack[stack.index(d) :], d]
            if color.get(d) == WHITE and (c := dfs(d)) is not None:
                return c
        stack.pop()
        color[m] = BLACK
        return None

    for m in sorted(edges):
        if color[m] == WHITE and (c := dfs(m)) is not None:
            return c
    return None


def _inside(mod: str, pkg: str) -> bool:
    return mod == pkg or mod.startswith(pkg + ".")


def test_the_graph_sees_function_local_and_relative_imports(tmp_path: Path) -> None:
    src = "from . import b\nimport typing\nif typing.TYPE_CHECKING:\n    import p.c\n"
    src += "def f():\n    from p.c import x\n"
    (tmp_path / "a.py").write_text(src)
    assert _imports("p.a", tmp_path / "a.py", {"p", "p.a", "p.b", "p.c"}) == {"p.b", "p.c"}
    assert find_circle({"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}}) == ["p.a", "p.b", "p.c", "p.a"]
    assert find_circle({"p.a": {"p.b"}, "p.b": set()}) is None


def test_no_import_circle_in_etcd_dr() -> None:
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_only_the_lab_imports_the_cli() -> None:
    bad = [
        f"{m} imports {d}"
        for m, deps in sorted(import_graph().items())
        for d in sorted(deps)
        if _inside(d, "etcd_dr.cli") and not (_inside(m, "etcd_dr.cli") or _inside(m, "etcd_dr.lab"))
    ]
    assert not bad, "the core must not import the CLI: " + "; ".join(bad)


def test_the_core_does_not_import_the_lab() -> None:
    bad = [
        f"{m} imports {d}"
        for m, deps in sorted(import_graph().items())
        for d in sorted(deps)
        if _inside(d, "etcd_dr.lab")
        and not (_inside(m, "etcd_dr.cli") or _inside(m, "etcd_dr.lab") or m in LAB_ALLOWED)
    ]
    assert not bad, "the core must not import the lab (pass what it needs in): " + "; ".join(bad)


# The layers above the core: the core never imports them (nor Prefect); only the CLI's `server`
# command reaches up, to console/ (`etcd-dr server`), and only when it runs.
ABOVE = ("console", "flows", "tasks", "blocks", "prefect")
ABOVE_ALLOWED = {("etcd_dr.cli.server", "console")}


def _external_imports(path: Path) -> set[str]:
    """Top-level package names imported (anywhere in the module) that are not relative."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_core_does_not_import_prefect_or_the_layers_above() -> None:
    bad = [
        f"{name} imports {top}"
        for name, path in sorted(_modules().items())
        for top in sorted(_external_imports(path) & set(ABOVE))
        if (name, top) not in ABOVE_ALLOWED
    ]
    assert not bad, "the core must not import Prefect or the layers above it: " + "; ".join(bad)
