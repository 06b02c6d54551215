"""No module of the services builds or parses a pipeline's promise ids but :mod:`pipeline_shared.promise_tree`.

Those ids are the contract between the worker that writes a pipeline and the
gateway that reads it back (STYLE.md, rule 15): one built or parsed anywhere
else drifts from the rest silently, and pipelines in flight stop being read.
This reads the services' code and fails on anything id-shaped outside that
module: an f-string joining a value to a ``:suffix`` (``f"{id}:attempt{n}"``),
a string naming a promise kind (``:await``, ``watch``, ``databricks-run``), or
a promise id split at its ``:``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"
HOME = SERVICES / "shared" / "src" / "pipeline_shared" / "promise_tree.py"

#: The names of the tree's promises, as an id or a pattern holds them.
PROMISE_KINDS = re.compile(r"databricks-run/|:(?:await|attempt|hint)|watch(?:[({]|\\d|\[0-9)|:\(\?:r")
#: ``{value}:...``: a value joined to a child's suffix at a colon, the shape of a promise id.
JOINED_AT_A_COLON = re.compile(r"^:(?!\s|//)")
#: Id-shaped text that is no promise's: (module, what the check says of it). A principal's
#: id (``kind:name``) is recorded as a pipeline's owner, never as a promise's id.
NOT_PROMISE_IDS = {("api/src/pipeline_api/auth/principals.py", "joins a value to ':'")}


def _sources() -> list[Path]:
    return sorted(p for p in SERVICES.glob("*/src/**/*.py") if p != HOME)


def id_shaped(tree: ast.AST) -> list[tuple[int, str]]:
    """Where ``tree`` builds or parses something shaped like a promise id: (line, why)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            after_a_value = False
            for part in node.values:
                if isinstance(part, ast.Constant) and after_a_value and JOINED_AT_A_COLON.match(part.value):
                    found.append((node.lineno, f"joins a value to {part.value!r}"))
                after_a_value = isinstance(part, ast.FormattedValue)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and PROMISE_KINDS.search(node.value):
            found.append((node.lineno, f"names a promise kind: {node.value!r:.60}"))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"split", "rsplit", "partition", "rpartition"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == ":"
            and _names_an_id(node.func.value)
        ):
            found.append((node.lineno, f"splits at ':' ({node.func.attr})"))
    return found


def _names_an_id(node: ast.expr) -> bool:
    """Whether ``node`` is a variable or attribute named as an id (``promise_id``, ``callback.promise_id``)."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name.endswith("id") or "promise" in name


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(SERVICES)))
def test_no_module_but_the_promise_tree_builds_or_parses_a_promise_id(path: Path) -> None:
    name = str(path.relative_to(SERVICES))
    found = [(line, why) for line, why in id_shaped(ast.parse(path.read_text())) if (name, why) not in NOT_PROMISE_IDS]
    assert not found, f"{name}: build or parse it in pipeline_shared.promise_tree: {found}"


@pytest.mark.parametrize(
    "source",
    [
        'promise_id = f"{pipeline_id}:attempt{n}"',
        'promise_id = f"{pipeline_id}:{seq}"',
        "check = f\"{watch.pipeline_id}:hint{watch.attempt or ''}-{event}-{window}\"",
        'AWAIT = re.compile(r":await(?P<n>\\d+)$")',
        'CHECK = re.compile(r":(?:r(?P<attempt>\\d+))?watch(?P<check>\\d+)$")',
        'index = f"databricks-run/{run_id}"',
        'pipeline_id = promise_id.split(":", 1)[0]',
        'pipeline_id, _, child = promise_id.partition(":")',
    ],
)
def test_the_check_catches_each_way_an_id_was_once_built_or_parsed(source: str) -> None:
    assert id_shaped(ast.parse(source))


@pytest.mark.parametrize(
    "source",
    [
        'message = f"{error.type}: {error.message}"',
        'text = f"{message[:200]}"',
        'url = f"{scheme}://{host}"',
        'header = f"Bearer {token}"',
        'when = f"{hours:02d} h"',
        'user, _, password = base64.b64decode(encoded).decode().partition(":")',
        'notice = f"not delivered after {attempt} attempt(s)"',
    ],
)
def test_the_check_lets_text_that_is_not_an_id_pass(source: str) -> None:
    assert id_shaped(ast.parse(source)) == []


def test_the_promise_tree_itself_is_where_they_are() -> None:
    assert id_shaped(ast.parse(HOME.read_text()))
