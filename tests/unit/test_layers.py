"""The packages are layers: each imports only from the layers below it (docs/architecture.md).

Every `import` counts, those under TYPE_CHECKING too: a type is a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import broadcaster

ROOT = Path(broadcaster.__file__).parent
ALLOWED = {  # layer -> what its modules may import from broadcaster
    "core": {"core"},
    "brokers": {"core", "brokers"},
    "delivery": {"core", "brokers.protocol", "delivery"},
    "client": {"core", "brokers", "client"},
    "node": {"core", "brokers", "delivery", "node"},
    "demo": {"core", "brokers", "client", "node", "demo"},
    "cluster": {"node.ports", "cluster"},
}


def imports(path: Path) -> set[str]:
    """The broadcaster modules `path` imports (all its imports are absolute)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import"
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {n.removeprefix("broadcaster.") for n in names if n.startswith("broadcaster.")}
    return found


def test_each_layer_imports_only_from_the_layers_below_it() -> None:
    wrong = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((ROOT / layer).rglob("*.py")):
            for module in imports(path):
                if not any(module == a or module.startswith(a + ".") for a in allowed):
                    wrong.append(f"{path.relative_to(ROOT)} imports broadcaster.{module}")
    assert not wrong, "\n".join(wrong)


def test_the_lower_layers_import_nothing_of_the_node_demo_or_tools() -> None:
    # (The same rule from the other side: a layer may not reach up for a helper.)
    upper = {"node", "demo", "cli", "cluster"}
    for layer in ("core", "brokers", "delivery", "client"):
        for path in (ROOT / layer).rglob("*.py"):
            assert not {m.split(".")[0] for m in imports(path)} & upper, path


def package_of(module: str) -> str:
    """The package a broadcaster module (dotted, without `broadcaster.`) belongs to."""
    return module if (ROOT / module.replace(".", "/")).is_dir() else module.rpartition(".")[0]


def test_no_package_imports_one_that_imports_it() -> None:
    # Package by package (a subpackage on its own), an import graph without cycles. The
    # entry point `python -m broadcaster` (__main__.py) is a script, not imported by any.
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        if path.name == "__main__.py":
            continue
        package = ".".join(path.relative_to(ROOT).parent.parts)
        targets = {package_of(module) for module in imports(path)} - {package}
        graph.setdefault(package, set()).update(targets)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for step in graph.get(start, set()) - seen:
            seen.add(step)
            if step == goal or reaches(step, goal, seen):
                return True
        return False

    cycles = sorted(
        package or "broadcaster" for package in graph if reaches(package, package, set())
    )
    assert not cycles, f"packages in an import cycle: {cycles}"
