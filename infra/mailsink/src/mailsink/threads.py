"""Conversations: the sink's messages grouped the way a mail client threads them.

A reply names its ancestors by Message-ID in ``In-Reply-To`` and
``References``; every message linked that way, directly or through others,
belongs to one conversation. Linking through ids rather than through stored
messages keeps two replies to an original that is not stored (never sent
here, or dropped by the store's bounds) in one conversation, as a client
would show them. Subjects are not compared: "Re:" guessing is what threading
headers exist to avoid, and the notifier sets them.

Pure functions over what the store holds; nothing here is kept, so the
grouping is always that of the messages stored right now.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mailsink.store import StoredMessage


@dataclass(frozen=True, slots=True)
class Conversation:
    """Messages that reply to one another, oldest first."""

    messages: list[StoredMessage]

    @property
    def newest(self) -> StoredMessage:
        return self.messages[-1]

    @property
    def is_thread(self) -> bool:
        """More than one message: worth marking as a conversation."""
        return len(self.messages) > 1


def _key(message: StoredMessage) -> str:
    # A message without a Message-ID can still reply to others; its number
    # stands in, in a form no Message-ID can take.
    return message.message_id or f"#{message.id}"


def conversations(messages: Iterable[StoredMessage]) -> list[Conversation]:
    """``messages`` (oldest first) grouped into conversations, newest activity first."""
    ordered = list(messages)
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for message in ordered:
        own = root(_key(message))
        for ancestor in message.replies_to:
            other = root(ancestor)
            if other != own:
                parent[other] = own
    groups: dict[str, list[StoredMessage]] = {}
    for message in ordered:
        groups.setdefault(root(_key(message)), []).append(message)
    found = [Conversation(members) for members in groups.values()]
    found.sort(key=lambda conversation: conversation.newest.id, reverse=True)
    return found


def conversation_of(message: StoredMessage, messages: Iterable[StoredMessage]) -> Conversation:
    """The conversation among ``messages`` that ``message`` belongs to."""
    for conversation in conversations(messages):
        if any(member.id == message.id for member in conversation.messages):
            return conversation
    return Conversation([message])
