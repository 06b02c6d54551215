"""The pipeline index's code in process against a real resonate-pg server (one container for the session).

The index is SQL: its queries, its migrations, the trigger that notes a
change and the functions the gateway calls. Only a real Postgres with the
project's schema can tell whether they do what the code expects, so these
tests run the gateway's own index code (:class:`PipelineIndex`, the start
limits, the sign-out record) against the stack's resonate-pg image started
once for them all (tests/support/resonate_pg.py), as the gateway's own
database role. Each test uses principals and pipeline ids of its own, so the
tests share the server without sharing state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from pipeline_api.index.queries import PipelineIndex
from pipeline_api.settings import GatewaySettings
from pipeline_shared import names
from pipeline_shared.resonate_client import ResonateDatabase, ResonateLink
from tests.support.composed_promises import ComposedPromises
from tests.support.pipeline_promises import PipelinePromises
from tests.support.resonate_pg import ResonatePg, client_settings, running_resonate_pg, send_only_link


@pytest.fixture(scope="package")
def resonate_pg() -> Iterator[ResonatePg]:
    """The server, started once for the tests of this folder and stopped after them (before the stack tiers run)."""
    with running_resonate_pg() as server:
        yield server


@pytest.fixture
def settings(resonate_pg: ResonatePg) -> GatewaySettings:
    """A gateway's settings on the session's server, as its own role."""
    return client_settings(resonate_pg.gateway_url, resonate_pg.gateway_password)


@pytest.fixture
async def link(settings: GatewaySettings) -> AsyncIterator[ResonateLink]:
    """The gateway's connection to the server: a send-only Resonate client and its database sessions."""
    async with send_only_link(settings, names.API_GROUP) as link:
        yield link


@pytest.fixture
def database(link: ResonateLink) -> ResonateDatabase:
    assert link.database is not None
    return link.database


@pytest.fixture
def promises(link: ResonateLink, settings: GatewaySettings) -> PipelinePromises:
    """Writes pipelines' promises into the server, as the gateway (the start) and the worker (the rest) do."""
    return PipelinePromises(link.resonate.promises, settings)


@pytest.fixture
def composed(link: ResonateLink) -> ComposedPromises:
    """Writes the promises of pipelines run by their code (steps, gates, emails), as the worker leaves them."""
    return ComposedPromises(link.resonate.promises)


@pytest.fixture
def index(database: ResonateDatabase, settings: GatewaySettings) -> PipelineIndex:
    """The gateway's index, reading and projecting; no projector runs unless a test asks it to."""
    return PipelineIndex(database, settings)


@pytest.fixture
async def superuser(resonate_pg: ResonatePg) -> AsyncIterator[psycopg.AsyncConnection]:
    """The database as an operator sees it, to look at what the gateway's role may not read or to arrange it."""
    async with await psycopg.AsyncConnection.connect(resonate_pg.superuser_dsn, autocommit=True) as conn:
        yield conn
