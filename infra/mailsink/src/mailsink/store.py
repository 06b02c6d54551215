"""What arrived: the sink's mailbox, seen the way a recipient would see it.

A recipient's mail client shows one message per Message-ID; a second delivery
with the same Message-ID is the sender retrying, not news. The notifier derives
its Message-ID from the pipeline so that a retried step is recognisable, and
tests check that by reading ``deliveries`` here: one stored message, counted
twice.

Storage is in memory and bounded (see :class:`Limits`); the oldest messages
are dropped first. Parsing never raises: mail the ``email`` package cannot make
sense of is still stored, with what could be read and the parser's defects, so
a malformed message is something a test can look at rather than a crash.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage

log = logging.getLogger(__name__)

#: The header the notifier stamps with the pipeline id, so tests can find the
#: email of one pipeline among many.
PIPELINE_ID_HEADER = "X-Pipeline-Id"


@dataclass(frozen=True, slots=True)
class Limits:
    """How much the store keeps before dropping its oldest messages."""

    #: Messages kept at most.
    max_messages: int = 1000
    #: Raw bytes kept at most, summed over the messages kept.
    max_total_bytes: int = 64 * 1024 * 1024


def _clean(text: str) -> str:
    """Text safe to put in JSON: undecodable bytes become U+FFFD.

    The parser keeps bytes it could not decode as lone surrogates, which no
    JSON encoder will write.
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


#: One Message-ID as RFC 5322 writes it: ``<left@right>``, no spaces or
#: brackets inside. Threading headers (In-Reply-To, References) are lists of
#: these, and a page that looks one up refuses anything else.
MESSAGE_ID_PATTERN = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")


def message_ids(value: str | None) -> list[str]:
    """The Message-IDs in a threading header, in order, without repeats."""
    return list(dict.fromkeys(MESSAGE_ID_PATTERN.findall(value or "")))


def normalise_message_id(value: str) -> str:
    """A Message-ID as stored and matched: trimmed, inside angle brackets."""
    value = value.strip()
    if not (value.startswith("<") and value.endswith(">")):
        value = f"<{value.strip('<>')}>"
    return value


@dataclass(frozen=True, slots=True)
class Delivery:
    """One accepted SMTP transaction: the envelope and the bytes after DATA."""

    envelope_from: str
    envelope_to: list[str]
    raw: bytes
    #: The login the client authenticated as, when AUTH was used.
    authenticated_as: str | None = None
    #: Whether the transaction ran over TLS (STARTTLS or implicit).
    tls: bool = False


@dataclass(frozen=True, slots=True)
class Attachment:
    """A part the sender attached, described but not kept apart from the raw bytes."""

    filename: str | None
    content_type: str
    #: Decoded bytes, not the transfer-encoded size.
    size: int


@dataclass(slots=True)
class StoredMessage:
    """One message as the recipient sees it, however often it was delivered."""

    id: int
    message_id: str | None
    envelope_from: str
    envelope_to: list[str]
    headers: list[tuple[str, str]]
    text: str | None
    html: str | None
    raw: bytes
    received_at: datetime
    last_received_at: datetime
    authenticated_as: str | None
    tls: bool
    defects: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    deliveries: int = 1

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), decoded."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    @property
    def pipeline_id(self) -> str | None:
        return self.header(PIPELINE_ID_HEADER)

    @property
    def replies_to(self) -> list[str]:
        """The Message-IDs this message names as its ancestors, oldest first.

        References lists the thread from its start; In-Reply-To names the
        parent, which a sender may give without References.
        """
        ancestors = message_ids(self.header("References"))
        ancestors += [i for i in message_ids(self.header("In-Reply-To")) if i not in ancestors]
        return ancestors


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Which messages a reader wants; every given field must match."""

    #: An envelope recipient, compared case-insensitively.
    to: str | None = None
    #: The Message-ID, with or without its angle brackets.
    message_id: str | None = None
    #: The ``X-Pipeline-Id`` header.
    pipeline_id: str | None = None

    def matches(self, message: StoredMessage) -> bool:
        if self.to is not None:
            wanted = self.to.strip().lower()
            if all(rcpt.lower() != wanted for rcpt in message.envelope_to):
                return False
        if self.message_id is not None and (
            message.message_id != normalise_message_id(self.message_id)
        ):
            return False
        return self.pipeline_id is None or message.pipeline_id == self.pipeline_id


def _decoded_headers(parsed: EmailMessage, defects: list[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for name, raw_value in parsed.raw_items():
        try:
            value = str(parsed.policy.header_fetch_parse(name, raw_value))
        except Exception as exc:  # the parser has raised on odd headers before
            defects.append(f"{name}: {exc.__class__.__name__}: {exc}")
            value = raw_value
        headers.append((_clean(name), _clean(value)))
    return headers


def _body_part(parsed: EmailMessage, subtype: str, defects: list[str]) -> str | None:
    try:
        part = parsed.get_body(preferencelist=(subtype,))
    except Exception as exc:
        defects.append(f"text/{subtype} body: {exc.__class__.__name__}: {exc}")
        return None
    if part is None:
        return None
    try:
        content = part.get_content()
    except Exception as exc:  # unknown charset, broken transfer encoding
        defects.append(f"text/{subtype} body: {exc.__class__.__name__}: {exc}")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return None
        content = payload.decode("utf-8", "replace")
    return _clean(content) if isinstance(content, str) else None


def _attachments(parsed: EmailMessage, defects: list[str]) -> list[Attachment]:
    found: list[Attachment] = []
    try:
        parts = list(parsed.iter_attachments())
    except Exception as exc:  # a multipart with no boundary, among others
        defects.append(f"attachments: {exc.__class__.__name__}: {exc}")
        return found
    for part in parts:
        try:
            filename = part.get_filename()
        except Exception as exc:
            defects.append(f"attachment name: {exc.__class__.__name__}: {exc}")
            filename = None
        payload = part.get_payload(decode=True)
        found.append(
            Attachment(
                filename=_clean(filename) if filename else None,
                content_type=_clean(part.get_content_type()),
                size=len(payload) if isinstance(payload, bytes) else 0,
            )
        )
    return found


def parse_message(number: int, delivery: Delivery, now: datetime) -> StoredMessage:
    """Read what a recipient would: headers, the text and HTML bodies."""
    defects: list[str] = []
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(delivery.raw)
    assert isinstance(parsed, EmailMessage)
    defects.extend(f"{d.__class__.__name__}: {d}" for d in parsed.defects)
    headers = _decoded_headers(parsed, defects)
    message = StoredMessage(
        id=number,
        message_id=None,
        envelope_from=_clean(delivery.envelope_from),
        envelope_to=[_clean(rcpt) for rcpt in delivery.envelope_to],
        headers=headers,
        text=_body_part(parsed, "plain", defects),
        html=_body_part(parsed, "html", defects),
        raw=delivery.raw,
        received_at=now,
        last_received_at=now,
        authenticated_as=delivery.authenticated_as,
        tls=delivery.tls,
        defects=defects,
        attachments=_attachments(parsed, defects),
    )
    message_id = message.header("Message-ID")
    if message_id and message_id.strip():
        message.message_id = normalise_message_id(message_id)
    return message


class MailStore:
    """The messages received, newest last, with waiters woken on each change.

    Runs on the sink's event loop only, so it needs no lock.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._messages: OrderedDict[int, StoredMessage] = OrderedDict()
        self._by_message_id: dict[str, int] = {}
        self._total_bytes = 0
        self._next_number = 1
        self._changed = asyncio.Event()
        #: Messages dropped to stay within the limits, ever.
        self.evicted = 0
        #: Callers inside :meth:`wait_for` right now.
        self.waiting = 0

    def __len__(self) -> int:
        return len(self._messages)

    def deliver(self, delivery: Delivery) -> StoredMessage:
        """Record one accepted delivery and return the message it belongs to."""
        now = datetime.now(UTC)
        incoming = parse_message(self._next_number, delivery, now)
        known = self._by_message_id.get(incoming.message_id) if incoming.message_id else None
        if known is not None:
            stored = self._messages[known]
            stored.deliveries += 1
            stored.last_received_at = now
            for rcpt in incoming.envelope_to:
                if rcpt not in stored.envelope_to:
                    stored.envelope_to.append(rcpt)
            self._notify()
            return stored
        self._next_number += 1
        self._messages[incoming.id] = incoming
        if incoming.message_id:
            self._by_message_id[incoming.message_id] = incoming.id
        self._total_bytes += len(delivery.raw)
        self._evict()
        self._notify()
        return incoming

    def _evict(self) -> None:
        while self._messages and (
            len(self._messages) > self.limits.max_messages
            or self._total_bytes > self.limits.max_total_bytes
        ):
            _, oldest = self._messages.popitem(last=False)
            self._total_bytes -= len(oldest.raw)
            if oldest.message_id:
                self._by_message_id.pop(oldest.message_id, None)
            self.evicted += 1
            log.info("dropped message %d to stay within the store's limits", oldest.id)

    def _notify(self) -> None:
        # Replace the event rather than clear it: every waiter holding the old
        # one wakes, and later waiters wait for the next change.
        self._changed.set()
        self._changed = asyncio.Event()

    def get(self, number: int) -> StoredMessage | None:
        return self._messages.get(number)

    def get_by_message_id(self, message_id: str) -> StoredMessage | None:
        """The message stored under ``message_id`` (brackets optional)."""
        number = self._by_message_id.get(normalise_message_id(message_id))
        return None if number is None else self._messages.get(number)

    def all(self) -> list[StoredMessage]:
        """Every message kept, oldest first."""
        return list(self._messages.values())

    def find(self, wanted: MessageFilter) -> list[StoredMessage]:
        return [message for message in self._messages.values() if wanted.matches(message)]

    def clear(self) -> int:
        """Forget every message; the number forgotten."""
        count = len(self._messages)
        self._messages.clear()
        self._by_message_id.clear()
        self._total_bytes = 0
        self._notify()
        return count

    async def wait_for(
        self,
        wanted: MessageFilter,
        *,
        count: int = 1,
        min_deliveries: int = 1,
        timeout: float,
    ) -> list[StoredMessage] | None:
        """Matching messages once at least ``count`` have ``min_deliveries``.

        None when ``timeout`` seconds pass first. Waits on the store's change
        event, so it answers as soon as the message is stored.
        """
        deadline = time.monotonic() + timeout
        self.waiting += 1
        try:
            while True:
                found = [m for m in self.find(wanted) if m.deliveries >= min_deliveries]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    return None
        finally:
            self.waiting -= 1
