"""The web page's signed-out sessions, recorded in the database every gateway replica reads."""

from __future__ import annotations

import time
import uuid

from pipeline_api.ui.sign_outs import CLOCK_MARGIN_SECONDS, DatabaseSignOuts
from pipeline_shared.resonate_client import ResonateDatabase


def session_id() -> str:
    return uuid.uuid4().hex


async def test_a_signed_out_session_is_ended_for_every_replica_and_others_are_not(database: ResonateDatabase) -> None:
    here, elsewhere = DatabaseSignOuts(database), DatabaseSignOuts(database)
    ended, live = session_id(), session_id()
    in_an_hour = int(time.time()) + 3600

    await here.end(ended, in_an_hour)
    await here.end(ended, in_an_hour)  # signing out twice records it once

    assert await elsewhere.ended(ended)
    assert not await elsewhere.ended(live)


async def test_a_record_is_kept_until_its_session_would_have_expired_and_the_margin_has_passed(
    database: ResonateDatabase,
) -> None:
    sign_outs = DatabaseSignOuts(database)
    now = int(time.time())
    long_over, within_margin = session_id(), session_id()

    await sign_outs.end(within_margin, now - CLOCK_MARGIN_SECONDS // 2)
    await sign_outs.end(long_over, now - CLOCK_MARGIN_SECONDS - 60)

    # Recording a sign-out deletes the records no longer needed: the one past its end and the margin.
    assert await sign_outs.ended(within_margin)
    assert not await sign_outs.ended(long_over)
