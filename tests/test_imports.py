"""Package structure: the networks (``models/``) never import the loading layer (``weights/``), and the
package's import graph has no cycle (render and its Triton kernel included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "met3r_metrics"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(package modules ``name`` imports anywhere, those imported only by a PEP 562 ``__getattr__`` alias)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    alias_nodes = {id(n) for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "__getattr__"
                   for n in ast.walk(f)}
    found: set[str] = set()
    via_alias: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                (via_alias if id(node) in alias_nodes else found).add(target)
    return found, via_alias - found


def test_models_never_import_weights() -> None:
    code = (
        "import sys, pkgutil, importlib, met3r_metrics.models as m\n"
        "for info in pkgutil.iter_modules(m.__path__):\n"
        "    importlib.import_module('met3r_metrics.models.' + info.name)\n"
        "print(sorted(k for k in sys.modules if k.startswith('met3r_metrics.weights')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_import_graph_has_no_cycle() -> None:
    modules = _modules()
    graph, aliases = {}, {}
    for name, path in modules.items():
        graph[name], aliases[name] = _imports(name, path, modules)
    # No import hides behind a PEP 562 alias (the featup -> weights one is gone: models never reach into weights).
    assert {k: v for k, v in aliases.items() if v} == {}
    for name in modules:
        if name.startswith("met3r_metrics.models"):
            assert not any(d.startswith("met3r_metrics.weights") for d in graph[name]), name
    assert "met3r_metrics.render" not in graph["met3r_metrics.kernels.composite_triton"]

    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join(path[path.index(dep):] + [dep])}"
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for name in sorted(modules):
        if name not in state:
            visit(name, [name])


#: Where imports sit at module level only: the networks, their loading, the renderer and the kernels. The one
#: deferred import is :func:`met3r_metrics.kernels.triton_module` / ``triton_importable`` (triton is optional).
_TOP_LEVEL_ONLY = ("models", "weights", "render", "render_reference.py", "raster_ties.py", "kernels")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules)[0] for name, path in modules.items()}


def test_the_data_flow_is_never_reached_back_up() -> None:
    """stages/ never import the scorer or the network builder; networks.py never imports the stages or the
    scorer; models/ and weights/ never import any of the three (the layers of issue 23)."""
    graph = _graph()
    pkg = "met3r_metrics."
    upper = {"stages": (pkg + "scorer", pkg + "networks"), "networks": (pkg + "stages", pkg + "scorer"),
             "models": (pkg + "scorer", pkg + "networks", pkg + "stages"),
             "weights": (pkg + "scorer", pkg + "networks", pkg + "stages")}
    seen = set()
    for name, deps in graph.items():
        layer = name[len(pkg):].split(".")[0] if name.startswith(pkg) else None
        for banned in upper.get(layer, ()):
            seen.add(layer)
            bad = sorted(d for d in deps if d == banned or d.startswith(banned + "."))
            assert not bad, f"{name} imports {bad}"
    assert seen == set(upper)  # every layer was checked (none was renamed away)
    stages = {n for n in graph if n.startswith(pkg + "stages.")}
    assert {pkg + "stages." + s for s in ("geometry", "features", "splat", "warp", "distance")} <= stages
    assert stages <= graph[pkg + "scorer"] | {pkg + "stages"}  # the scorer orchestrates every stage


def test_each_core_module_imports_alone_without_hydra_or_lightning() -> None:
    """Each module of the scoring core imports in a fresh interpreter (no hidden order dependence) and
    pulls in neither hydra, lightning nor matplotlib (metric.py: torchmetrics itself imports matplotlib)."""
    names = ["met3r_metrics.scorer", "met3r_metrics.networks", "met3r_metrics.precision", "met3r_metrics.switch",
             "met3r_metrics.directed_pairs", "met3r_metrics.functional",
             *(f"met3r_metrics.stages.{s}" for s in ("geometry", "features", "splat", "warp", "distance")),
             "met3r_metrics.metric"]  # last: torchmetrics leaves matplotlib in sys.modules
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for k in [k for k in sys.modules if k.startswith('met3r_metrics')]:\n"
        "        del sys.modules[k]\n"
        "    importlib.import_module(name)\n"
        "    banned = ('hydra', 'lightning', 'pytorch_lightning') + (() if name.endswith('metric') else ('matplotlib',))\n"
        "    heavy = sorted(k for k in sys.modules if k.split('.')[0] in banned)\n"
        "    assert not heavy, (name, heavy)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_no_import_inside_a_function_body_of_the_networks_weights_render_and_kernels() -> None:
    found = []
    for entry in _TOP_LEVEL_ONLY:
        root = PACKAGE / entry
        for path in sorted([root] if root.is_file() else root.rglob("*.py")):
            tree = ast.parse(path.read_text())
            for func in ast.walk(tree):
                if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(func):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        found.append(f"{path.relative_to(PACKAGE)} in {func.name}")
    assert found == ["kernels/__init__.py in triton_importable"] * 2  # import triton, triton.language
