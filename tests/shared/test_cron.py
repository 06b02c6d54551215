"""A schedule's cron: resonate-pg's grammar, each refusal naming its field, and the next firing as resonate-pg finds it.

That the next firing agrees with resonate-pg's own ``_next_cron`` is checked against the real
server in tests/api/test_schedules.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline_shared.cron import CronRefused, next_firing, parse_cron


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("cron", "named"),
    [
        ("* * * *", "has 4 fields"),
        ("* * * * * *", "has 6 fields"),
        ("60 * * * *", "minute field '60': 60 is outside 0-59"),
        ("* 24 * * *", "hour field '24'"),
        ("* * 0 * *", "day of month field '0'"),
        ("* * * 13 *", "month field '13'"),
        ("* * * * 7", "day of week field '7': 7 is outside 0-6"),
        ("* * * JAN *", "month field 'JAN'"),
        ("* * * * MON", "day of week field 'MON'"),
        ("0 0 L * *", "day of month field 'L'"),
        ("0 0 ? * *", "day of month field '?'"),
        ("*/0 * * * *", "minute field '*/0': a step must be at least 1"),
        ("30-10 * * * *", "the range 30-10 runs backwards"),
        ("1,,2 * * * *", "minute field '1,,2'"),
        ("-5 * * * *", "minute field '-5'"),
        ("0 0 30 2 *", "no day that exists"),
    ],
)
def test_a_cron_resonate_pg_would_refuse_or_never_fire_is_refused_naming_the_field(cron: str, named: str) -> None:
    with pytest.raises(CronRefused, match=named.replace("?", r"\?").replace("*", r"\*")):
        parse_cron(cron)


@pytest.mark.parametrize(
    ("cron", "after", "fires"),
    [
        ("* * * * *", "2026-12-05T08:41:30", "2026-12-05T08:42:00"),
        ("* * * * *", "2026-12-05T08:42:00", "2026-12-05T08:43:00"),
        ("*/15 9-17 * * 1-5", "2026-12-05T08:00:00", "2026-12-07T09:00:00"),  # a Saturday: Monday next
        ("5/20 * * * *", "2026-12-05T08:46:00", "2026-12-05T09:05:00"),
        ("0 0 29 2 *", "2026-03-01T00:00:00", "2028-02-29T00:00:00"),
        ("0 0 1,15 * 0", "2026-12-05T12:00:00", "2026-12-06T00:00:00"),  # either day field: Sunday the 6th
        ("30 23 31 12 *", "2026-12-31T23:30:00", "2027-12-31T23:30:00"),
    ],
)
def test_the_next_firing_is_the_first_match_after_in_utc(cron: str, after: str, fires: str) -> None:
    assert next_firing(cron, ms(after)) == ms(fires)
