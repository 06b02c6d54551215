"""Where test code lives: tests in test_*.py, fixtures in conftest.py, helpers in tests/support.

A test module is run by pytest, never imported: a helper another module
imports from one drags that module's tests, fixtures and import-time work
along, and a newcomer looking for the helper would not think to look there.
A conftest.py is pytest's to load (with its fixtures scoped to its folder);
imported as a plain module it is loaded twice, under two names. So nothing
under tests/ imports from either; what two modules share goes in
tests/support (helpers and doubles) or a conftest.py (fixtures).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent

def _imported_modules(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, dotted module name) of every import in ``path`` (or in ``source``, as if it were that file).

    Relative imports are made absolute; ``from package import name`` counts
    ``package.name`` too, since the name may be a module.
    """
    package = path.relative_to(TESTS.parent).with_suffix("").parts[:-1]
    text = path.read_text(encoding="utf-8") if source is None else source
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def _is_test_module_or_conftest(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return module.split(".", 1)[0] == "tests" and (last.startswith("test_") or last == "conftest")


def test_nothing_imports_from_a_test_module_or_a_conftest() -> None:
    offending = [
        f"{path.relative_to(TESTS.parent)}:{line} imports {module}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, module in _imported_modules(path)
        if _is_test_module_or_conftest(module)
    ]
    assert not offending, (
        "a helper shared by test modules belongs in tests/support, a shared fixture in a conftest.py:\n  "
        + "\n  ".join(offending)
    )


def test_the_check_sees_each_kind_of_import() -> None:
    """What the check above must catch, and what it must let through."""
    source = (
        "from tests.api.test_gateway import SETTINGS\n"
        "from .test_fuzz import WitnessedGateway\n"
        "from tests.databricks_emulator import conftest\n"
        "import tests.notifier.test_email\n"
        "from tests.support.gateway_app import Gateway\n"
        "from tests.support.stack import Stack\n"
    )
    imports = _imported_modules(TESTS / "api" / "not_a_file.py", source)
    assert [module for _, module in imports if _is_test_module_or_conftest(module)] == [
        "tests.api.test_gateway",
        "tests.api.test_fuzz",
        "tests.databricks_emulator.conftest",
        "tests.notifier.test_email",
    ]
