"""After every fault the suite injects, the pipeline index still agrees with Resonate.

Runs after all the fault tests (marker ``after_faults``; see tests/conftest.py):
by then the workers, the notifier, the gateway and the Resonate server itself
have been killed, partitioned and restarted with pipelines in flight. The
index is checked against Resonate as an operator would: every pipeline root
in ``resonate.promises`` is listed exactly once, and each shows the state the
gateway reads from Resonate. A pipeline may move between the two reads (some
are still in flight), so one that differs is read again until both agree.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.support.stack import Stack
from tests.support.stack_clients import Gateway

pytestmark = pytest.mark.after_faults

#: Longest the projector may take to work through what the faults left noted.
CATCH_UP_SECONDS = 60


def test_the_index_agrees_with_resonate_after_the_faults(stack: Stack) -> None:
    admin = Gateway(stack.api_url, stack.keys.keys["admin"])
    with psycopg.connect(stack.resonate_dsn(), autocommit=True) as conn:
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while (notes := conn.execute("SELECT count(*) FROM pipelines.changes").fetchone()[0]) > 0:
            assert time.monotonic() < deadline, f"{notes} changes still not projected after {CATCH_UP_SECONDS} s"
            time.sleep(0.5)
        roots = {
            pipeline_id
            for (pipeline_id,) in conn.execute(
                "SELECT id FROM resonate.promises WHERE origin_id = id "
                "AND convert_from(decode(param_data, 'base64'), 'UTF8')::jsonb->>'func' = 'run_pipeline'"
            )
        }

    listed: list[dict] = []
    cursor = None
    while True:
        page = admin.page(limit=200, **({"cursor": cursor} if cursor else {}))
        listed.extend(page["items"])
        if (cursor := page["next_cursor"]) is None:
            break
    indexed = {item["id"]: item for item in listed}
    assert len(indexed) == len(listed), "a pipeline listed twice"
    assert set(indexed) == roots, {"not indexed": roots - set(indexed), "not in Resonate": set(indexed) - roots}
    assert len(roots) > 300, f"only {len(roots)} pipelines: did the fault suite run?"

    with ThreadPoolExecutor(max_workers=8) as pool:
        states = dict(zip(roots, pool.map(lambda pid: admin.status(pid)["state"], roots), strict=True))
    differing = {pid for pid, state in states.items() if indexed[pid]["state"] != state}
    # Read at different moments, the two may differ by a change the projector has not taken yet
    # (it lets changes gather for a quarter of a second): such a pipeline must catch up, and soon.
    deadline = time.monotonic() + CATCH_UP_SECONDS
    for pipeline_id in differing:
        while (shown := admin.timeline(pipeline_id)["state"]) != (actual := admin.status(pipeline_id)["state"]):
            assert time.monotonic() < deadline, f"{pipeline_id}: the index shows {shown}, Resonate {actual}"
            time.sleep(0.2)
    assert len(differing) < len(roots) / 10, f"{len(differing)} of {len(roots)} differed when first read"
