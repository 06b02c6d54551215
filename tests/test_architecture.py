"""The shape of the code, held by its import graph (built by grimp, the library behind import-linter).

- No import circle between any two modules of any package under services/:
  a circle means neither side can be read, tested or moved without the other.
  Imports made only for type checking count too (they are circles a reader
  still has to follow).
- The gateway's domain (starting, cancelling, repairing, who may do what) is
  apart from HTTP: nothing it imports, directly or not, is FastAPI or Starlette.
- The web page uses the domain, never the JSON API's routes.
- deps.py holds dependency getters and nothing else.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import grimp
import pytest
from fastapi.params import Depends

ROOT = Path(__file__).resolve().parent.parent

#: Every import package of every workspace member under services/ (services/<member>/src/<package>).
PACKAGES = sorted(path.parent.name for path in ROOT.glob("services/*/src/*/__init__.py"))


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=True, cache_dir=None)


def circles(graph: grimp.ImportGraph) -> list[str]:
    """Each strongly connected set of modules (Tarjan), as one circle through it, shortest first found."""
    ours = sorted(m for m in graph.modules if m.split(".")[0] in PACKAGES)
    imported = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in ours) for m in ours}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in imported[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in ours:
        if module not in index:
            visit(module)
    found = []
    for component in components:
        start, *_ = component
        # The shortest way back to where it started, through the component.
        back = min(
            (
                graph.find_shortest_chain(importer=other, imported=start) or ()
                for other in imported[start]
                if other in component
            ),
            key=len,
        )
        found.append(f"{' -> '.join([start, *back])} (all of {', '.join(component)})")
    return found


def test_no_import_circle_anywhere_in_services(graph: grimp.ImportGraph) -> None:
    found = circles(graph)
    assert not found, f"{len(found)} import circle(s):\n" + "\n".join(found)


@pytest.mark.parametrize("http", ["fastapi", "starlette"])
def test_the_domain_imports_nothing_of_http(graph: grimp.ImportGraph, http: str) -> None:
    chain = graph.find_shortest_chain(importer="pipeline_api.domain", imported=http, as_packages=True)
    assert chain is None, " -> ".join(chain or ())


def test_the_web_page_does_not_use_the_routes(graph: grimp.ImportGraph) -> None:
    chain = graph.find_shortest_chain(importer="pipeline_api.ui", imported="pipeline_api.routes", as_packages=True)
    assert chain is None, " -> ".join(chain or ())


def test_deps_holds_only_dependency_getters() -> None:
    from pipeline_api import deps

    own = {name: value for name, value in vars(deps).items() if getattr(value, "__module__", None) == deps.__name__}
    aliases = [value for value in vars(deps).values() if typing.get_origin(value) is typing.Annotated]
    getters = {meta.dependency for alias in aliases for meta in alias.__metadata__ if isinstance(meta, Depends)}
    assert not [name for name, value in own.items() if inspect.isclass(value)], "deps.py defines a class"
    for name, value in own.items():
        if inspect.isfunction(value):
            # A getter an alias depends on, or a factory of such getters (its result is defined inside it).
            made_by_it = any(getter.__qualname__.startswith(f"{value.__qualname__}.<locals>.") for getter in getters)
            assert value in getters or made_by_it, f"deps.{name} is neither a dependency getter nor makes one"
