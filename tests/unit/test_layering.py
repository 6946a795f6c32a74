"""The architecture rules of ../shared/STYLE.md and DESIGN.md, checked on the source.

- sans-IO cores (everything in a domain outside its ``aio/`` adapters) import no asyncio,
  socket, select or threading and never read the wall clock (``time.time``/``monotonic``);
- imports go downward: cli -> node -> endpoint -> locator -> overlay, endpoint -> media;
  media knows no SIP; nothing imports cli or simulations.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "p2psip"
IO_MODULES = {"asyncio", "socket", "select", "selectors", "threading", "ssl"}
CLOCK_CALLS = {"time", "monotonic", "perf_counter", "time_ns", "monotonic_ns"}
# what each layer may import from p2psip (besides itself and the shared top-level modules)
ALLOWED = {
    "overlay": set(),
    "locator": {"overlay"},
    "media": set(),
    "endpoint": {"locator", "overlay", "media"},
    "node": {"endpoint", "locator", "overlay", "media"},
    "cli": {"endpoint", "locator", "overlay", "media", "node"},
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _is_core(path: Path) -> bool:
    rel = path.relative_to(PACKAGE).parts
    return (
        len(rel) > 1
        and rel[0] in ("endpoint", "locator", "overlay", "media")
        and ("aio" not in rel)
    )


@pytest.mark.parametrize("path", [p for p in _modules() if _is_core(p)], ids=str)
def test_sans_io_cores_do_no_io_and_read_no_clock(path: Path) -> None:
    imported = {name.split(".")[0] for name in _imports(path)}
    assert not imported & IO_MODULES, f"{path.name} imports {imported & IO_MODULES}"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("time", "datetime")
            and node.attr in CLOCK_CALLS | {"now", "utcnow"}
        ):
            pytest.fail(
                f"{path.name}:{node.lineno} reads the wall clock ({node.value.id}.{node.attr})"
            )


@pytest.mark.parametrize("path", _modules(), ids=str)
def test_imports_go_downward(path: Path) -> None:
    rel = path.relative_to(PACKAGE).parts
    layer = rel[0] if len(rel) > 1 else None
    for name in _imports(path):
        parts = name.split(".")
        assert parts[0] != "simulations", f"{path} imports {name}: nothing imports the simulations"
        if parts[0] != "p2psip" or len(parts) < 2:
            continue
        target = parts[1]
        assert target not in ("cli", "simulations") or layer == "cli", (
            f"{path} imports {name}: nothing imports the CLI or the simulations"
        )
        if layer in ALLOWED and target in ALLOWED and target != layer:
            assert target in ALLOWED[layer], f"{path} ({layer}) must not import {name}"
