"""The package's layers, checked on the source: no import climbs back down the layer order, and no import cycle.

Layers, bottom to top (a part may import any part on a lower layer):

    types, config, plugins                    the vocabulary
    algorithms, models, rollout, rewards,     peers: imports between them only without a cycle
    plan (the memory planner)
    data                                      runtime input (prepared reader, prompts, sampler, row vocabulary)
    spark                                     SPARK's recycling, judge and test-time scaling
    trainer, eval                             beside each other: the trainer may use eval, eval never the trainer
    prep                                      offline dataset tools (may use models, rollout, rewards)
    cli                                       the `spark-vl` command

Every import counts, at module level or inside a function: an import hidden in a function is still a dependency
(and hiding one was how the old trainer <-> eval and data <-> rollout cycles went unnoticed).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "spark_vl"
LAYERS = (
    ("types", "config", "plugins"),
    ("algorithms", "models", "rollout", "rewards", "plan"),
    ("data",),
    ("spark",),
    ("trainer", "eval"),
    ("prep",),
    ("cli",),
)
RANK = {part: rank for rank, layer in enumerate(LAYERS) for part in layer}
FORBIDDEN = {("eval", "trainer"): "eval stands beside the trainer: the trainer may use eval, never the reverse"}
# Known back-edges, file to file, each with the reason it is still here. Delete an entry once it is fixed.
ALLOWED_BACK_EDGES: set[tuple[str, str]] = set()


def _module_name(file: Path) -> str:
    parts = ["spark_vl", *file.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(f): f for f in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, file: Path) -> set[str]:
    """The spark_vl modules that `file` imports anywhere (a `from pkg import sub` names the submodule)."""
    is_package = file.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import spark_vl.x.y` of an attribute: its module
                target = target.rpartition(".")[0]
            if target.startswith("spark_vl.") and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, file) for name, file in MODULES.items()}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

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
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_every_part_has_a_layer():
    parts = {_part(m) for m in MODULES} - {""}
    assert parts <= set(RANK), f"add {sorted(parts - set(RANK))} to LAYERS in {__file__}"


def test_no_import_climbs_back_down_the_layers():
    problems = []
    for source, targets in sorted(GRAPH.items()):
        for target in sorted(targets):
            a, b = _part(source), _part(target)
            if not a or not b or a == b or (source, target) in ALLOWED_BACK_EDGES:
                continue
            if RANK[b] > RANK[a]:
                problems.append(f"{source} imports {target}: {a} (layer {RANK[a]}) is below {b} (layer {RANK[b]})")
            elif (a, b) in FORBIDDEN:
                problems.append(f"{source} imports {target}: {FORBIDDEN[a, b]}")
    assert not problems, "layer back-edges:\n" + "\n".join(problems)


def test_allowed_back_edges_still_exist():
    """An allow-list entry whose import is gone must be deleted, so the list never hides a new edge."""
    stale = [edge for edge in ALLOWED_BACK_EDGES if edge[1] not in GRAPH.get(edge[0], set())]
    assert not stale, f"delete these from ALLOWED_BACK_EDGES: {stale}"


def test_no_import_cycle_between_parts():
    parts: dict[str, set[str]] = defaultdict(set)
    for source, targets in GRAPH.items():
        for target in targets:
            if _part(source) and _part(target) and _part(source) != _part(target):
                parts[_part(source)].add(_part(target))
    cycles = _cycles(parts)
    assert not cycles, f"import cycles between packages: {cycles}"


def test_no_import_cycle_between_files():
    cycles = _cycles(GRAPH)
    assert not cycles, f"import cycles between modules: {cycles}"


def test_no_module_shadows_a_stdlib_module_its_neighbours_import():
    """`data/io.py` beside a module that does `import io` reads as a circle to tools and people alike."""
    offenders = []
    for name, file in MODULES.items():
        stem = name.rpartition(".")[2]
        if stem not in sys.stdlib_module_names:
            continue
        for other in file.parent.glob("*.py"):
            tree = ast.parse(other.read_text(), str(other))
            imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                         if isinstance(n, ast.ImportFrom) and n.module and not n.level}
            if stem in imported:
                offenders.append(f"{name} (stdlib {stem} imported by {other.name})")
    assert not offenders, f"rename these modules: {offenders}"
