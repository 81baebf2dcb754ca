"""The import layers of the package, read from the source (every import, those inside functions included):
runners/ reads as a line from its options up to the command line, a module imports only from its own layer's
leaves or below, nothing imports in a circle, and kernels/ and fusion/ never import runners/."""
from __future__ import annotations

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# bottom to top: a module imports modules of lower layers only (sources/: also its own modules)
LAYERS = [
    {"gpuinfo"},  # what this machine has (GPUs, NVDEC)
    {"config", "events", "batching", "control"},  # options, messages, the pure batching policy
    {"sources"},  # every runners/sources/ module
    {"monitor", "outputs", "strategies", "mps"},  # figures, sinks, admission and submission; the process's MPS
    {"concurrent"},  # the threads of a run
    {"assembly"},  # the one assembly of a run on a device
    {"multigpu", "archive"},  # many assemblies: worker processes, Ray actors
    {"run"},  # run(config) -> Report
    {"serve", "client"},  # the service around one run; its thin client (standard library only)
    {"cli"},
]


def _modules() -> dict:
    mods = {}
    for p in sorted(ROOT.glob("**/*.py")):
        rel = p.relative_to(ROOT)
        if rel.parts[0] not in ("runners", "fusion", "kernels"):
            continue
        name = ".".join(rel.with_suffix("").parts)
        mods[name[:-9] if name.endswith(".__init__") else name] = p
    return mods


def _imports(mods: dict) -> dict:
    """{module: {module of this package it imports}}, relative and absolute imports alike."""
    edges = collections.defaultdict(set)
    for name, p in mods.items():
        pkg = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                t = ".".join(base + ([node.module] if node.module else []))
                targets = [t] + [f"{t}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("posefuse."):
                t = node.module[len("posefuse."):]
                targets = [t] + [f"{t}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name[len("posefuse."):] for a in node.names if a.name.startswith("posefuse.")]
            for t in targets:
                if t in mods and t != name:
                    edges[name].add(t)
    return edges


def _layer(name: str) -> int:
    parts = name.split(".")
    key = parts[1] if len(parts) > 1 else None
    for i, layer in enumerate(LAYERS):
        if key in layer:
            return i
    raise AssertionError(f"{name}: not in any layer of tests/test_layers.py (add it where it belongs)")


def test_runners_import_only_downwards():
    mods = _modules()
    edges = _imports(mods)
    bad = []
    for a, targets in edges.items():
        if not a.startswith("runners."):
            continue
        for b in targets:
            if b.startswith("runners.") and _layer(b) > _layer(a):
                bad.append(f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})")
            if b.startswith("runners.") and _layer(b) == _layer(a) != LAYERS.index({"sources"}):
                bad.append(f"{a} imports {b} of its own layer")
    assert not bad, "\n".join(bad)


def test_kernels_and_fusion_never_import_runners():
    edges = _imports(_modules())
    bad = [f"{a} imports {b}" for a, ts in edges.items() if a.split(".")[0] in ("kernels", "fusion")
           for b in ts if b.startswith("runners")]
    assert not bad, bad


def test_no_import_circle_in_runners():
    mods = _modules()
    edges = {a: {b for b in ts if b.startswith("runners")} for a, ts in _imports(mods).items()}
    state: dict = {}
    stack: list = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(mods):
        if n.startswith("runners") and n not in state:
            visit(n)
