"""The shape of the house, from the source: layers, no circles, the lab outside the product.

Layers, bottom up (docs/DESIGN.md draws them):

    model  <  render  <  hosts  <  ops | components  <  faces | the Pulumi program  <  lab

A module may import its own package and any layer below it; `ops` and `components` are siblings
that never import each other. Nothing outside `bluegreen/lab/` imports `bluegreen.lab` (the lab
plugs in from above: entry points, injection). Every import counts, also the ones inside functions
and under `TYPE_CHECKING`: a circle hidden in a function is still a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80

# (module prefix, layer, the group it belongs to); the longest matching prefix wins. Modules of one
# group import each other freely (no circles); across groups, only downward.
LAYERS: tuple[tuple[str, int, str], ...] = (
    ("bluegreen", 0, "bluegreen"),  # the package itself (an empty __init__)
    ("bluegreen.model", 0, "model"),
    ("bluegreen.render", 1, "render"),
    ("bluegreen.hosts", 2, "hosts"),
    ("bluegreen.ops", 3, "ops"),
    ("components", 3, "components"),
    ("bluegreen.faces", 4, "faces"),
    ("bluegreen.__main__", 4, "faces"),  # `python -m bluegreen`
    ("__main__", 4, "program"),  # the Pulumi program
    ("bluegreen.lab", 5, "lab"),
)
LAB = "bluegreen.lab"

Graph = Mapping[str, set[str]]


# --------------------------------------------------------------------------- pure: the checks


def layer_of(module: str) -> tuple[str, int]:
    """(the group the module belongs to, its layer) by the longest matching prefix."""
    best = ("", -1, "")
    for prefix, layer, group in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best[0]):
            best = (prefix, layer, group)
    if best[1] < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return best[2], best[1]


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def wrong_way(graph: Graph) -> list[str]:
    """Imports that run up a layer, or sideways between sibling packages of one layer."""
    problems = []
    for src, targets in sorted(graph.items()):
        src_group, src_layer = layer_of(src)
        for dst in sorted(targets):
            dst_group, dst_layer = layer_of(dst)
            if dst_layer > src_layer or (dst_layer == src_layer and dst_group != src_group
                                         and dst_group != "bluegreen"):
                problems.append(f"{src} -> {dst}")
    return problems


def into_the_lab(graph: Graph) -> list[str]:
    return [f"{src} -> {dst}" for src, targets in sorted(graph.items()) for dst in sorted(targets)
            if (dst == LAB or dst.startswith(LAB + ".")) and not (src == LAB or src.startswith(LAB + "."))]


# --------------------------------------------------------------------------- reading the source


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def product_files() -> list[Path]:
    files = [REPO / "__main__.py", *sorted((REPO / "bluegreen").rglob("*.py")),
             *sorted((REPO / "components").rglob("*.py"))]
    return [f for f in files if "__pycache__" not in f.parts]


def imports_of(path: Path, known: set[str], root: Path = REPO) -> set[str]:
    """The project modules `path` imports, anywhere in the file."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()

    def deepest(name: str) -> str:
        # the deepest project module a dotted name reaches (a symbol resolves to its module)
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [deepest(a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else deepest(base) for a in node.names]
        found.update(name for name in names if name and name != me)
    return found


def project_graph() -> dict[str, set[str]]:
    files = product_files()
    known = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, known) for f in files}


# --------------------------------------------------------------------------- the checks, proven


@pytest.mark.parametrize(("graph", "expected"), [
    ({"a": {"b"}, "b": set()}, []),
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"a"}}, [["a"]]),
])
def test_cycles_finds_every_circle(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(graph) == expected


@pytest.mark.parametrize(("edge", "wrong"), [
    (("bluegreen.ops.deploy", "bluegreen.hosts.executor"), False),
    (("bluegreen.ops.deploy", "bluegreen.ops.estate"), False),
    (("bluegreen.model.topology", "bluegreen.render.haproxy"), True),
    (("bluegreen.hosts.journal", "bluegreen.ops.estate"), True),
    (("bluegreen.ops.rebuild", "components.container"), True),
    (("components.container", "bluegreen.ops.status"), True),
    (("bluegreen.faces.cli", "bluegreen.lab.lab"), True),
    (("bluegreen.lab.demo", "bluegreen.faces.cli"), False),
])
def test_wrong_way_names_upward_and_sideways_imports(edge: tuple[str, str], wrong: bool) -> None:
    assert bool(wrong_way({edge[0]: {edge[1]}})) is wrong


def test_into_the_lab_allows_the_lab_alone() -> None:
    graph = {"bluegreen.lab.demo": {"bluegreen.lab.lab"}, "bluegreen.ops.rebuild": {"bluegreen.lab.rebuild"}}
    assert into_the_lab(graph) == ["bluegreen.ops.rebuild -> bluegreen.lab.rebuild"]


def test_imports_are_read_in_every_form_and_place(tmp_path: Path) -> None:
    source = tmp_path / "bluegreen" / "ops" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text("from typing import TYPE_CHECKING\n"
                      "from . import estate\n"
                      "from ..hosts import pve\n"
                      "import bluegreen.render.shell\n"
                      "if TYPE_CHECKING:\n    from bluegreen.faces.cli import main\n"
                      "def f():\n    from bluegreen.model.errors import ConfigError\n")
    known = {"bluegreen.ops.x", "bluegreen.ops.estate", "bluegreen.hosts", "bluegreen.hosts.pve",
             "bluegreen.render.shell", "bluegreen.faces.cli", "bluegreen.model.errors", "bluegreen"}
    assert imports_of(source, known, tmp_path) == {
        "bluegreen.ops.estate", "bluegreen.hosts.pve", "bluegreen.render.shell", "bluegreen.faces.cli",
        "bluegreen.model.errors"}


# --------------------------------------------------------------------------- the house itself


def test_the_import_graph_has_no_circle() -> None:
    assert cycles(project_graph()) == []


def test_no_import_runs_up_a_layer_or_sideways() -> None:
    assert wrong_way(project_graph()) == []


def test_nothing_outside_the_lab_imports_the_lab() -> None:
    assert into_the_lab(project_graph()) == []


def test_files_and_functions_stay_small() -> None:
    long_files, long_functions = [], []
    for path in product_files():
        text = path.read_text()
        rel = path.relative_to(REPO)
        if len(text.splitlines()) > MAX_FILE_LINES:
            long_files.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    assert long_files == [] and long_functions == []
