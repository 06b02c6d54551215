"""Every promise of one pipeline, read at once: how the gateway reads a pipeline run by its code.

A one-job workflow's promises sit at ids known in advance, so the gateway
reads them one by one along its spine (:func:`pipeline_shared.promise_tree.read_pipeline_tree`).
A pipeline run by its code has as many steps as its code made, under ids
nobody can list in advance; they are read in one statement instead, the
projector's own (:func:`pipeline_api.index.projector._snapshots`, through
``pipelines.promises_of``), so that the status document and the index read
the same snapshot the same way.

That statement needs the resonate-pg database. Every deployed gateway has it
(``RESONATE_DATABASE_URL`` is required); only a gateway run in process on the
SDK's local server (tests) has none, and is handed a local reader instead
(``create_app(..., snapshots=...)``). Without either, a pipeline run by its
code cannot be read, and the gateway says so (503) rather than guess.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import psycopg
from psycopg_pool import PoolTimeout
from resonate.types import PromiseRecord

from pipeline_shared.errors import CoordinatorUnavailable

from ..index.projector import _snapshots

if TYPE_CHECKING:
    from pipeline_shared.resonate_client import ResonateDatabase


class PromiseSnapshots(Protocol):
    """Reads every promise of a pipeline (all those whose ``resonate:origin`` it is), by id, in one snapshot."""

    async def promises_of(self, pipeline_id: str) -> dict[str, PromiseRecord]: ...


class DatabaseSnapshots:
    """The real reader: ``pipelines.promises_of`` in the resonate-pg database, as the projector reads."""

    def __init__(self, database: ResonateDatabase) -> None:
        self._db = database

    async def promises_of(self, pipeline_id: str) -> dict[str, PromiseRecord]:
        try:
            async with self._db.session() as conn:
                return (await _snapshots(conn, [pipeline_id])).get(pipeline_id, {})
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise CoordinatorUnavailable(f"the pipeline's promises cannot be read: {exc}") from exc
        except psycopg.errors.UndefinedFunction as exc:
            raise CoordinatorUnavailable(
                "the pipeline's promises cannot be read: pipelines.promises_of is not in the database "
                "(the index migrations have not run)"
            ) from exc


class NoSnapshots:
    """A gateway without the resonate-pg database (in process): it cannot read a pipeline run by its code."""

    async def promises_of(self, pipeline_id: str) -> dict[str, PromiseRecord]:
        raise CoordinatorUnavailable(
            f"pipeline {pipeline_id!r} is run by its code, and reading one needs the resonate-pg database, "
            "which this gateway runs without"
        )
