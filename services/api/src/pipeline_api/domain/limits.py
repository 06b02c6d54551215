"""What a principal may start: starts per minute, pipelines waiting at once, domains it may email.

Each start is a paid Databricks run and an email to an address the caller
chooses, so a key must not be a cost amplifier or an open mail relay.

**Where the counts live.** In the Resonate database, beside the pipeline
index (``pipelines.start_log``, migration 0002), not in the gateway's memory:
the gateway may run as several replicas, and a limit kept per replica would
let N replicas admit N times the limit. One call of the stored function
``pipelines.admit_unless_taken`` (migration 0007) decides a start and logs it
when it admits it (``pipelines.admit_start``), in one round trip before the
create: an id that already holds a pipeline is told by the same call and
counted for nothing (the create answers that repeat from Resonate).
A refused start writes nothing: no promise, no run, no email. Measured on the
development stack: 0.4-0.6 ms a call at the default limits, about 1 ms with
5,000 starts in a principal's last minute; one principal's calls are taken one
at a time (an advisory lock), other principals' side by side.

**The rate** (``START_RATE_PER_MINUTE``) is exact over any minute: the log
holds each admitted start of the last minute, and ``Retry-After`` is when the
oldest of them leaves it. Starts logged under the same pipeline id are one
start, so a client retrying, or a burst of identical requests racing past the
gateway's read, counts once.

**The waiting quota** (``PIPELINES_WAITING_PER_PRINCIPAL``) counts the
principal's pipelines not yet final. Its source of truth is the pipeline
index, which trails Resonate by a projection (about
``index.PROJECTION_DELAY_SECONDS``); the principal's starts admitted since
the newest of its pipelines the index shows was created are counted too, so
a burst does not slip through the gap. (A start admitted just before that one
but projected after it is missed for that moment: the count is short by at
most what the projector has in hand.) A pipeline that has just finished may still count for that
fraction of a second. ``Retry-After`` is a guess (pipelines take minutes).

With both limits 0 for a principal (the benchmark's setting), the database is
not asked at all. In process (unit tests) there is no database and no limit.

**Recipients** (``RECIPIENT_DOMAINS``): the address's syntax is checked where
the request is read (its model); here only the operator's policy on domains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import psycopg
from psycopg_pool import PoolTimeout

from pipeline_shared.errors import CoordinatorUnavailable, StartRateLimited, TooManyWaiting

if TYPE_CHECKING:
    from pipeline_shared.resonate_client import ResonateDatabase


class LimitSettings(Protocol):
    """The settings the limits are read from (GatewaySettings'); named here because the settings import this module."""

    @property
    def ENVIRONMENT(self) -> str: ...
    @property
    def START_RATE_PER_MINUTE(self) -> int: ...
    @property
    def PIPELINES_WAITING_PER_PRINCIPAL(self) -> int: ...
    @property
    def PRINCIPAL_START_LIMITS(self) -> tuple[str, ...]: ...
    @property
    def RECIPIENT_DOMAINS(self) -> tuple[str, ...]: ...


#: Told to a caller refused by the waiting quota: pipelines take minutes, and
#: how long its own will take is not known here.
WAITING_RETRY_AFTER_SECONDS = 30


class InvalidLimit(ValueError):
    """A limit setting that cannot be read."""


@dataclass(frozen=True)
class PrincipalLimits:
    #: Starts in any minute; 0: no limit.
    starts_per_minute: int
    #: Pipelines not yet final; 0: no limit.
    waiting: int

    @property
    def unlimited(self) -> bool:
        return self.starts_per_minute == 0 and self.waiting == 0


@dataclass(frozen=True)
class StartLimits:
    """Each principal's limits: the defaults, or its own from ``PRINCIPAL_START_LIMITS``."""

    default: PrincipalLimits
    by_principal: dict[str, PrincipalLimits]

    @classmethod
    def from_settings(cls, settings: LimitSettings) -> StartLimits:
        by_principal: dict[str, PrincipalLimits] = {}
        for entry in settings.PRINCIPAL_START_LIMITS:
            principal, _, limits = entry.rpartition("=")
            rate, _, waiting = limits.partition("/")
            if not principal.strip() or not rate.strip().isdigit() or not waiting.strip().isdigit():
                raise InvalidLimit(
                    f"PRINCIPAL_START_LIMITS: {entry!r} is not principal=RATE/WAITING (e.g. key:svc-reports=600/1000)"
                )
            by_principal[principal.strip()] = PrincipalLimits(int(rate), int(waiting))
        default = PrincipalLimits(settings.START_RATE_PER_MINUTE, settings.PIPELINES_WAITING_PER_PRINCIPAL)
        return cls(default, by_principal)

    def of(self, principal_id: str) -> PrincipalLimits:
        return self.by_principal.get(principal_id, self.default)


class StartAdmission(Protocol):
    """Decides whether a principal may start one more pipeline; raises StartLimited when not."""

    def counts(self, principal_id: str) -> bool:
        """Whether the principal's starts are counted at all (False: it has no limits)."""
        ...

    async def admit(self, principal_id: str, pipeline_id: str) -> bool:
        """Count the start and return True; False (nothing counted) when ``pipeline_id`` already holds a pipeline,
        which the create then answers. Raises StartLimited when the principal may not start one more."""
        ...


class DatabaseStartAdmission:
    """The limits kept in the Resonate database (``pipelines.admit_unless_taken``), shared by every replica."""

    def __init__(self, database: ResonateDatabase, limits: StartLimits) -> None:
        self._db = database
        self._limits = limits

    def counts(self, principal_id: str) -> bool:
        return not self._limits.of(principal_id).unlimited

    async def admit(self, principal_id: str, pipeline_id: str) -> bool:
        limits = self._limits.of(principal_id)
        if limits.unlimited:
            return True
        try:
            async with self._db.session() as conn:
                cursor = await conn.execute(
                    "SELECT taken, refused, retry_after_seconds, counted "
                    "FROM pipelines.admit_unless_taken(%s, %s, %s, %s)",
                    (principal_id, pipeline_id, limits.starts_per_minute, limits.waiting),
                )
                row = await cursor.fetchone()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise CoordinatorUnavailable(f"the start limits cannot be checked: {exc}") from exc
        except psycopg.errors.UndefinedFunction as exc:
            raise CoordinatorUnavailable(
                "the start limits are not in the database (migration 0007 has not run)"
            ) from exc
        assert row is not None
        taken, *decision = row
        if taken:
            return False
        raise_if_refused(limits, *decision)
        return True


def raise_if_refused(
    limits: PrincipalLimits, refused: str | None, retry_after: float | None, counted: int | None
) -> None:
    """Raise what ``pipelines.admit_start`` decided, in words; nothing when it admitted the start."""
    if refused == "rate":
        raise StartRateLimited(
            f"too many starts: at most {limits.starts_per_minute} pipelines a minute "
            f"(START_RATE_PER_MINUTE); try again in {retry_after_header(retry_after)} s",
            retry_after_seconds=retry_after_header(retry_after),
        )
    if refused == "waiting":
        raise TooManyWaiting(
            f"too many pipelines waiting: {counted} of yours are not finished, and at most {limits.waiting} "
            "may be (PIPELINES_WAITING_PER_PRINCIPAL); start more once some have finished, or cancel some",
            retry_after_seconds=WAITING_RETRY_AFTER_SECONDS,
        )


def retry_after_header(seconds: float | None) -> int:
    """Whole seconds for ``Retry-After``, rounded up and at least 1: a client that waits that long gets in."""
    return max(1, math.ceil(seconds or 0))


# ── recipients ───────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class RecipientDomains:
    """The domains an operator lets pipelines email: exact ones, and ones whose subdomains are all allowed."""

    #: None: any domain.
    exact: frozenset[str] | None
    parents: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: LimitSettings) -> RecipientDomains:
        entries = [_domain(entry) for entry in settings.RECIPIENT_DOMAINS]
        if "*" in entries or (not entries and settings.ENVIRONMENT == "development"):
            return cls(exact=None)
        if not entries:
            raise InvalidLimit(
                f"RECIPIENT_DOMAINS is required for ENVIRONMENT={settings.ENVIRONMENT}: list the domains pipelines "
                "may email (example.com; .example.com for its subdomains), or * for any"
            )
        for entry in entries:
            if not entry.lstrip(".") or "@" in entry or "*" in entry:
                raise InvalidLimit(f"RECIPIENT_DOMAINS: {entry!r} is not a domain, .domain or *")
        return cls(
            exact=frozenset(e for e in entries if not e.startswith(".")),
            parents=frozenset(e for e in entries if e.startswith(".")),
        )

    def refusal(self, address: str) -> str | None:
        """Why ``address`` may not be emailed, or None when it may."""
        if self.exact is None:
            return None
        given = address.rpartition("@")[2]
        domain = _domain(given)
        if domain in self.exact or any(domain.endswith(parent) for parent in self.parents):
            return None
        return f"the domain {given.lower()!r} is not one this gateway may email (RECIPIENT_DOMAINS)"


def _domain(text: str) -> str:
    """A domain as compared: lower case, no final dot, internationalized ones in their ASCII (IDNA) form."""
    domain = text.strip().rstrip(".").lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain
