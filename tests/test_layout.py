"""The package's shape: no runtime import circle, and namespaces that get what they use."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import prism_async

PACKAGE = Path(__file__).resolve().parent.parent / "prism_async"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _runtime_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports when it runs (``if TYPE_CHECKING:`` aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in modules else base)
    return {module for module in found if module in modules and module != name}


def test_no_runtime_import_circle() -> None:
    """Following the imports a module runs never leads back to it."""
    modules = _modules()
    graph = {name: _runtime_imports(name, path, modules) for name, path in modules.items()}
    circles = []
    for start in graph:
        seen: set[str] = set()
        stack = list(graph[start])
        while stack:
            module = stack.pop()
            if module == start:
                circles.append(start)
                break
            if module not in seen:
                seen.add(module)
                stack.extend(graph[module])
    assert circles == []


LOADED_ON_FIRST_USE = (
    "cattrs",
    "prism_async.ledger",
    "prism_async.models.requests",
    "prism_async.runs",
    "redis",
    "rich",
    "sqlite3",
    "taskiq",
    "tenacity",
)
"""Never imported by ``import prism_async``: cattrs with the first response or request body,
tenacity with the first retry, the ledger, runs and request models with the first paid
request or ledger, the others with the features (extras) that need them."""


def test_importing_the_sdk_leaves_the_heavy_parts_for_first_use() -> None:
    """A fresh ``import prism_async`` (the import time a plain client pays) loads none of
    them."""
    code = (
        "import sys, prism_async\n"
        f"print(sorted(m for m in {LOADED_ON_FIRST_USE!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_public_names_loaded_on_first_use_are_the_same_objects() -> None:
    """``from prism_async import Quote`` (and the other lazy names) gives the defining
    module's object, and ``dir()`` lists them."""
    from prism_async.ledger._prices import Quote
    from prism_async.models.requests import GenerationRequest, TemplateRequest
    from prism_async.runs import RunResult

    lazy = {
        "GenerationRequest": GenerationRequest,
        "Quote": Quote,
        "RunResult": RunResult,
        "TemplateRequest": TemplateRequest,
    }
    for name, value in lazy.items():
        assert getattr(prism_async, name) is value
    assert set(prism_async.__all__) <= set(dir(prism_async))


def _private_reads(path: Path) -> list[str]:
    """Reads of a client's private attributes (``client._x``, ``self._client._x``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Attribute):
            continue
        owner = ast.unparse(node.value)
        private = node.attr.startswith("_") and not node.attr.startswith("__")
        if private and owner in ("client", "prism", "self._client", "self.prism", "self._prism"):
            found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    return found


def test_namespaces_read_no_private_attribute_of_the_client() -> None:
    """Namespaces, runs, waits and integrations use what they were given, or public names."""
    paths = [
        *(PACKAGE / "resources").glob("*.py"),
        *(PACKAGE / "integrations").rglob("*.py"),
        *(PACKAGE / "cli").rglob("*.py"),
        PACKAGE / "runs.py",
        PACKAGE / "polling.py",
    ]
    assert [read for path in paths for read in _private_reads(path)] == []


def test_the_check_finds_a_private_read(tmp_path: Path) -> None:
    """The ast check above would see a namespace reaching into the client."""
    module = tmp_path / "namespace.py"
    module.write_text("class N:\n    def f(self):\n        return self._client._http\n")
    assert _private_reads(module) == ["namespace.py:3 self._client._http"]
