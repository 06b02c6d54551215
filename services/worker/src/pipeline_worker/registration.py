"""Loading the pipelines a worker runs: the shipped ones and a team's, checked against the catalogue."""

from __future__ import annotations

import importlib
import logging

from pipeline_shared.catalogue import Catalogue

from .pipelines import registered, versions_of

logger = logging.getLogger(__name__)


class PipelinesNotLoaded(RuntimeError):
    """A team's module does not import, or the catalogue names a function no module registers."""


def load_pipelines(modules: list[str], catalogue: Catalogue) -> None:
    """Import ``modules`` (their ``@pipeline`` functions register themselves) and check the catalogue's.

    Every pipeline of the catalogue must find its function at its version, or
    the worker does not start: a start the worker cannot run is better
    refused now than failed later.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise PipelinesNotLoaded(
                f"PIPELINE_MODULES: {name!r} does not import: {type(exc).__name__}: {exc}"
            ) from exc
    missing = [
        f"{entry.name} needs {entry.function_name!r} version {entry.version} "
        f"(registered: {', '.join(map(str, versions_of(entry.function_name))) or 'none'})"
        for entry in catalogue.startable.values()
        if registered(entry.function_name, entry.version) is None
    ]
    if missing:
        raise PipelinesNotLoaded("the catalogue names pipelines no module registers: " + "; ".join(missing))
    logger.info("pipelines: %s", ", ".join(sorted(f"{e.name} v{e.version}" for e in catalogue.startable.values())))
