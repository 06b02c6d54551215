"""Injected SMTP failures: what the sink answers instead of accepting mail.

A mail server that is greylisting, full or briefly down answers with a 4xx
reply and expects the client to try again later; one that knows a mailbox does
not exist answers 5xx and expects the client to give up. The notifier must
tell the two apart, so tests need a server that answers either on demand.

This module owns the fault plan and its decisions only. It knows nothing of
sockets: the SMTP handler asks it, at each stage of a transaction, whether to
refuse, and writes the reply it gets back.

Reply codes and their texts are those of RFC 5321 section 4.2; the enhanced
status codes in front of the texts are RFC 3463's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Stage(StrEnum):
    """The command a fault answers: where in the transaction the client sees it."""

    #: ``MAIL FROM``: aiosmtplib raises ``SMTPSenderRefused``.
    MAIL = "mail"
    #: ``RCPT TO``: aiosmtplib raises ``SMTPRecipientsRefused`` when every
    #: recipient is refused.
    RCPT = "rcpt"
    #: The end of ``DATA``: aiosmtplib raises ``SMTPDataError``.
    DATA = "data"


#: Transient replies the sink can give: RFC 5321's text behind an RFC 3463
#: status. 421 also closes the connection, as RFC 5321 4.2.2 requires of it.
TRANSIENT_REPLIES: dict[int, str] = {
    421: "4.3.2 Service not available, closing transmission channel",
    450: "4.2.0 Requested mail action not taken: mailbox unavailable",
    451: "4.3.0 Requested action aborted: local error in processing",
    452: "4.3.1 Requested action not taken: insufficient system storage",
}

#: Permanent replies the sink can give, in the same form.
PERMANENT_REPLIES: dict[int, str] = {
    550: "5.1.1 Requested action not taken: mailbox unavailable",
    552: "5.2.2 Requested mail action aborted: exceeded storage allocation",
    553: "5.1.3 Requested action not taken: mailbox name not allowed",
    554: "5.7.1 Transaction failed",
}

#: The reply that tells the client the server closes the connection after it.
CLOSING_CODE = 421


class FaultError(ValueError):
    """A fault request that cannot be carried out; the message says which field."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply the sink sends in place of accepting."""

    code: int
    text: str

    @property
    def line(self) -> str:
        return f"{self.code} {self.text}"

    @property
    def closes_connection(self) -> bool:
        return self.code == CLOSING_CODE


@dataclass(slots=True)
class TransientFault:
    """Refuse transactions with a 4xx reply, for a count or for a while.

    Exactly one of ``remaining`` (transactions still to refuse) and
    ``until`` (a ``time.monotonic()`` deadline) is set.
    """

    reply: Reply
    stage: Stage
    remaining: int | None
    until: float | None

    def active(self, now: float) -> bool:
        if self.remaining is not None:
            return self.remaining > 0
        return self.until is not None and now < self.until


@dataclass(frozen=True, slots=True)
class PermanentFault:
    """Refuse every transaction to one recipient with a 5xx reply."""

    recipient: str
    reply: Reply
    stage: Stage


def _reply(code: int, table: dict[int, str], kind: str) -> Reply:
    text = table.get(code)
    if text is None:
        allowed = ", ".join(str(c) for c in sorted(table))
        raise FaultError(f"code {code} is not a {kind} reply the sink gives; use one of {allowed}")
    return Reply(code, text)


def _mailbox_key(address: str) -> str:
    # Domains are case-insensitive; local parts may not be, but no real
    # server this stands in for treats them so, and tests expect them equal.
    return address.strip().lower()


class FaultPlan:
    """The faults in force, and the tally of what they refused.

    Runs on the sink's event loop only, so it needs no lock.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._transient: TransientFault | None = None
        self._permanent: dict[str, PermanentFault] = {}

    def set_transient(
        self,
        *,
        code: int = 451,
        stage: Stage = Stage.RCPT,
        count: int | None = None,
        seconds: float | None = None,
    ) -> TransientFault:
        """Refuse the next ``count`` transactions, or all for ``seconds``.

        Replaces any transient fault already set.
        """
        if (count is None) == (seconds is None):
            raise FaultError("give exactly one of count and seconds")
        if count is not None and count < 1:
            raise FaultError(f"count must be at least 1, got {count}")
        if seconds is not None and not seconds > 0:
            raise FaultError(f"seconds must be positive, got {seconds}")
        reply = _reply(code, TRANSIENT_REPLIES, "transient")
        until = None if seconds is None else self._clock() + seconds
        self._transient = TransientFault(reply, Stage(stage), count, until)
        return self._transient

    def set_permanent(
        self, recipient: str, *, code: int = 550, stage: Stage = Stage.RCPT
    ) -> PermanentFault:
        """Refuse mail to ``recipient`` until reset. Replaces its earlier fault."""
        if stage is Stage.MAIL:
            raise FaultError("a permanent fault names a recipient, so its stage is rcpt or data")
        if "@" not in recipient:
            raise FaultError(f"recipient must be an address, got {recipient!r}")
        fault = PermanentFault(
            recipient.strip(), _reply(code, PERMANENT_REPLIES, "permanent"), stage
        )
        self._permanent[_mailbox_key(recipient)] = fault
        return fault

    def reset(self) -> None:
        """Deliver normally again."""
        self._transient = None
        self._permanent.clear()

    def begin_transaction(self) -> TransientFault | None:
        """Called once per ``MAIL FROM``: the transient fault this transaction meets.

        A counted fault is used up here, so "the next N transactions" means N
        ``MAIL`` commands, however far each gets.
        """
        fault = self._transient
        if fault is None:
            return None
        if not fault.active(self._clock()):
            self._transient = None
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
        return fault

    def permanent_for(self, recipient: str, stage: Stage) -> PermanentFault | None:
        fault = self._permanent.get(_mailbox_key(recipient))
        if fault is None or fault.stage is not stage:
            return None
        return fault

    @property
    def transient(self) -> TransientFault | None:
        fault = self._transient
        if fault is not None and not fault.active(self._clock()):
            self._transient = None
        return self._transient

    @property
    def permanent(self) -> list[PermanentFault]:
        return list(self._permanent.values())

    def seconds_left(self, fault: TransientFault) -> float | None:
        if fault.until is None:
            return None
        return max(0.0, fault.until - self._clock())
