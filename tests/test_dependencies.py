"""The package's runtime dependencies: every third-party module its code imports at module level comes from a
distribution pyproject.toml lists in `dependencies`, so that `pip install facefleet` gives programs that
start (extras cover only what is imported where it is used)."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "server", "core", "link", "vision")


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {_normal(re.split(r"[\[<>=;!~ ]", line, maxsplit=1)[0]) for line in project["dependencies"]}


def imported_at_module_level() -> dict[str, set[str]]:
    """Top-level third-party module name → the package files importing it outside any function."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("facefleet", "__future__"):
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_module_imported_at_module_level_comes_from_a_declared_dependency() -> None:
    distributions = packages_distributions()
    dependencies = declared()
    imported = imported_at_module_level()
    assert {"numpy", "openvino", "httpx", "h11"} <= imported.keys()  # the scan sees the package's imports
    undeclared = {
        module: sorted(files)
        for module, files in imported.items()
        if not {_normal(d) for d in distributions.get(module, [])} & dependencies
    }
    assert undeclared == {}, "add their distributions to [project] dependencies"
