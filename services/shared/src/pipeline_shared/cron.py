"""A schedule's cron, read as resonate-pg reads it: checked when the catalogue loads, and its next firing.

resonate-pg (``_cron_field`` and ``_next_cron`` in resonate.sql) takes five whitespace-separated
fields, each a comma-separated list of ``*``, ``N`` or ``N-M``, each optionally ``/STEP``; numbers
only. It refuses a cron it cannot parse or that fires nowhere within nine years, but accepts some
that cannot fire as written (a minute of 75, a day of week of 7, a range that runs backwards), which
simply never match: those are refused here too, naming the field, so a catalogue never holds a
schedule that silently does not fire. The next firing is computed by the same walk as
``_next_cron`` (month, then day, then hour, then minute), in UTC.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: The five fields, in order, with the values each may name (day of week: 0 is Sunday, 6 Saturday).
CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 6))
#: One comma-separated part of a field: ``*``, ``N`` or ``N-M``, optionally ``/STEP``. No names
#: (MON, JAN), no ``?``, ``L``, ``W`` or ``#``: resonate-pg reads numbers only.
_CRON_PART = re.compile(r"(?P<range>\*|[0-9]{1,2}|[0-9]{1,2}-[0-9]{1,2})(?:/(?P<step>[0-9]{1,2}))?")
#: resonate-pg looks this far ahead for a firing and refuses a cron that has none.
CRON_HORIZON_YEARS = 9


@dataclass(frozen=True)
class Cron:
    """A parsed cron: the values of each field, and whether day of month and day of week are ``*``.

    As in resonate-pg (and Vixie cron), when both day fields are restricted a day matches if
    either one does.
    """

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    def matches_day(self, moment: datetime) -> bool:
        weekday = (moment.weekday() + 1) % 7  # Postgres's dow: Sunday 0
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return weekday in self.weekdays
        if self.any_weekday:
            return moment.day in self.days
        return moment.day in self.days or weekday in self.weekdays

    def next_after(self, after_ms: int) -> int | None:
        """The first firing after ``after_ms`` (epoch ms, UTC) as resonate-pg finds it; None if none in the horizon."""
        moment = datetime.fromtimestamp(after_ms // 60_000 * 60, UTC) + timedelta(minutes=1)
        cutoff = moment.replace(year=moment.year + CRON_HORIZON_YEARS, day=min(moment.day, 28))
        while moment < cutoff:
            if moment.month not in self.months:
                moment = _start_of_next_month(moment)
            elif not self.matches_day(moment):
                moment = moment.replace(hour=0, minute=0) + timedelta(days=1)
            elif moment.hour not in self.hours:
                moment = moment.replace(minute=0) + timedelta(hours=1)
            elif moment.minute in self.minutes:
                return int(moment.timestamp()) * 1000
            else:
                moment += timedelta(minutes=1)
        return None


def _start_of_next_month(moment: datetime) -> datetime:
    first = moment.replace(day=1, hour=0, minute=0)
    return first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)


class CronRefused(ValueError):
    """A cron resonate-pg would refuse, or would accept and never fire as written; the message names the field."""


def _field_values(text: str, field: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        match = _CRON_PART.fullmatch(part)
        if match is None:
            raise CronRefused(
                f"{field} field {text!r}: {part!r} is not *, a number or a range N-M (each optionally /STEP)"
            )
        step = int(match["step"] or 1)
        if step < 1:
            raise CronRefused(f"{field} field {text!r}: a step must be at least 1")
        spec = match["range"]
        if spec == "*":
            first, last = low, high
        elif "-" in spec:
            first, last = (int(bound) for bound in spec.split("-"))
        else:
            # resonate-pg reads ``N/STEP`` as from N to the field's end.
            first = int(spec)
            last = high if match["step"] else first
        for bound in (first, last):
            if not low <= bound <= high:
                raise CronRefused(f"{field} field {text!r}: {bound} is outside {low}-{high}")
        if first > last:
            raise CronRefused(f"{field} field {text!r}: the range {first}-{last} runs backwards")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def parse_cron(text: str) -> Cron:
    """``text`` as resonate-pg reads it; :class:`CronRefused` naming the field that is wrong."""
    fields = text.split()
    if len(fields) != len(CRON_FIELDS):
        raise CronRefused(
            f"{text!r} has {len(fields)} fields; a cron has 5: minute hour day-of-month month day-of-week (UTC)"
        )
    values = [_field_values(part, *spec) for part, spec in zip(fields, CRON_FIELDS, strict=True)]
    cron = Cron(*values, any_day=fields[2] == "*", any_weekday=fields[4] == "*")
    if cron.next_after(int(time.time() * 1000)) is None:
        raise CronRefused(f"{text!r} names no day that exists within {CRON_HORIZON_YEARS} years (such as 30 February)")
    return cron


def next_firing(cron: str, after_ms: int | None = None) -> int | None:
    """When a schedule of ``cron`` next fires after ``after_ms`` (default: now), epoch ms UTC."""
    return parse_cron(cron).next_after(int(time.time() * 1000) if after_ms is None else after_ms)
