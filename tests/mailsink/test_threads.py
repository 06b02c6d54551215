"""Conversations: which stored messages a mail client would show as one thread."""

from __future__ import annotations

from datetime import UTC, datetime

from mailsink.store import Delivery, StoredMessage, parse_message
from mailsink.threads import conversation_of, conversations


def stored(number: int, message_id: str | None, *, replying_to: str = "", extra: str = "") -> StoredMessage:
    headers = f"Subject: message {number}\r\n"
    if message_id:
        headers += f"Message-ID: {message_id}\r\n"
    if replying_to:
        headers += f"References: {replying_to}\r\n"
    raw = (headers + extra + "\r\nbody\r\n").encode()
    return parse_message(number, Delivery("s@example.test", ["r@example.test"], raw), datetime.now(UTC))


def numbers(messages: list[StoredMessage]) -> list[list[int]]:
    return [[m.id for m in c.messages] for c in conversations(messages)]


def test_replies_join_their_original_and_conversations_come_newest_first() -> None:
    messages = [
        stored(1, "<a@x>"),
        stored(2, "<lone@x>"),
        stored(3, "<b@x>", replying_to="<a@x>"),
        stored(4, "<c@x>", replying_to="<a@x>\r\n <b@x>"),  # folded, as long References are
    ]
    assert numbers(messages) == [[1, 3, 4], [2]]
    (thread, lone) = conversations(messages)
    assert thread.is_thread and not lone.is_thread
    assert thread.newest.id == 4


def test_in_reply_to_alone_is_enough() -> None:
    messages = [stored(1, "<a@x>"), stored(2, "<b@x>", extra="In-Reply-To: <a@x>\r\n")]
    assert numbers(messages) == [[1, 2]]
    assert messages[1].replies_to == ["<a@x>"]


def test_replies_to_an_original_that_is_not_stored_are_one_conversation() -> None:
    messages = [
        stored(1, "<b@x>", replying_to="<gone@x>"),
        stored(2, "<other@x>"),
        stored(3, "<c@x>", replying_to="<gone@x>"),
    ]
    assert numbers(messages) == [[1, 3], [2]]


def test_a_message_without_a_message_id_can_still_reply() -> None:
    messages = [stored(1, "<a@x>"), stored(2, None, replying_to="<a@x>"), stored(3, None)]
    assert numbers(messages) == [[3], [1, 2]]
    assert [m.id for m in conversation_of(messages[1], messages).messages] == [1, 2]


def test_garbage_in_threading_headers_links_nothing() -> None:
    messages = [
        stored(1, "<a@x>"),
        stored(2, "<b@x>", replying_to="a@x, not-an-id <no at sign>", extra="In-Reply-To: ???\r\n"),
    ]
    assert numbers(messages) == [[2], [1]]
    assert messages[1].replies_to == []
