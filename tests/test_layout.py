"""The package layout is the data flow: each room imports only rooms below it, and nothing cycles.

Reads every module's imports (including those under ``TYPE_CHECKING`` and inside functions), so a
cycle cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import crdtmem

PACKAGE = Path(crdtmem.__file__).parent

# Bottom to top. A module may import its own room or any room on a lower level.
LEVELS: list[set[str]] = [
    {"errors", "lru", "metrics", "offloop", "eager"},
    {"limits", "rates"},
    {"ids", "clock", "extras"},
    {"crdt"},
    {"document"},
    {"events", "access"},
    {"store", "index"},
    {"engine"},
    {"sync", "testing", "bus", "integrations"},
    {"server"},
    {"cli", "mem0"},
    {"__init__", "__main__"},
]
LEVEL = {room: n for n, rooms in enumerate(LEVELS) for room in rooms}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    parts = ["crdtmem", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "crdtmem" or target.startswith("crdtmem."):
                if target == "crdtmem":  # from crdtmem import x: x may be a room
                    found.update(f"crdtmem.{alias.name}" for alias in node.names)
                else:
                    found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("crdtmem."))
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_every_room_has_a_level() -> None:
    rooms = {_room(name) for name in _modules()}
    assert rooms <= set(LEVEL), f"rooms without a level in LEVELS: {sorted(rooms - set(LEVEL))}"


def test_rooms_import_only_rooms_below() -> None:
    wrong = []
    for name, path in _modules().items():
        room = _room(name)
        for target in _imports(path):
            other = _room(target)
            if other != room and LEVEL.get(other, -1) >= LEVEL[room] and room not in ("__init__", "__main__"):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {
        name: {t for t in _imports(path) if t in modules and t != name} for name, path in modules.items()
    }
    for name, targets in graph.items():  # a package's own __init__ re-exporting its modules is no cycle
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for target in graph[node]:
            if state.get(target) == 1:
                cycle.extend([*trail[trail.index(target) :], target] if target in trail else [node, target])
                return True
            if state.get(target) is None and visit(target, [*trail, target]):
                return True
        state[node] = 2
        return False

    for name in sorted(graph):
        if state.get(name) is None and visit(name, [name]):
            break
    assert not cycle, " -> ".join(cycle)
