"""Kept SMTP connections: reused across emails, never shared, dropped when stale, closed at shutdown.

Every test reaches the in-process sink through a relay that counts the
connections the notifier opens and can end them as a server would.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from mailsink import Credentials, MailSink, SmtpOptions, Stage
from pipeline_notifier.smtp import RetryPolicy, deliver
from pipeline_notifier.smtp_pool import SmtpPool
from tests.support.mail_messages import TlsMaterial
from tests.support.smtp_delivery import config_for, message_for, stored
from tests.support.smtp_relay import SmtpRelay, smtp_relay

#: A retry would wait at least 2.5 s: a send well under that did not retry.
PATIENT = RetryPolicy(max_attempts=3, backoff_base_seconds=5.0, backoff_cap_seconds=5.0)


@pytest.fixture
async def relay(sink: MailSink) -> AsyncIterator[SmtpRelay]:
    async with smtp_relay(sink.smtp_host, sink.smtp_port) as running:
        yield running


def pool_for(sink: MailSink, relay: SmtpRelay, **pool: Any) -> SmtpPool:
    return SmtpPool(config_for(sink, host=relay.host, port=relay.port, retry=PATIENT), **pool)


def opened_total() -> float:
    return REGISTRY.get_sample_value("smtp_connections_opened_total") or 0.0


async def test_emails_in_a_row_share_one_connection(sink: MailSink, relay: SmtpRelay) -> None:
    pool = pool_for(sink, relay)
    before = opened_total()
    messages = [message_for() for _ in range(5)]
    for message in messages:
        assert (await deliver(message, pool)).delivered is True

    assert relay.opened == 1
    assert opened_total() - before == 1
    assert [len(stored(sink, message)) for message in messages] == [1] * 5
    assert pool.idle == 1
    await pool.close()


async def test_a_configuration_alone_opens_and_closes_a_connection_per_email(sink: MailSink, relay: SmtpRelay) -> None:
    config = config_for(sink, host=relay.host, port=relay.port)
    for _ in range(3):
        assert (await deliver(message_for(), config)).delivered is True
    assert relay.opened == 3
    await relay.until_open(0)


async def test_a_pool_of_size_0_keeps_nothing(sink: MailSink, relay: SmtpRelay) -> None:
    pool = pool_for(sink, relay, size=0)
    for _ in range(3):
        assert (await deliver(message_for(), pool)).delivered is True
    assert (relay.opened, pool.idle) == (3, 0)
    await relay.until_open(0)


async def test_concurrent_sends_take_distinct_connections_and_only_size_are_kept(
    sink: MailSink, relay: SmtpRelay
) -> None:
    pool = pool_for(sink, relay, size=3)
    messages = [message_for() for _ in range(10)]
    receipts = await asyncio.gather(*(deliver(message, pool) for message in messages))

    assert all(receipt.delivered for receipt in receipts)
    assert [len(stored(sink, message)) for message in messages] == [1] * 10
    # One connection per send in flight at most, never one shared by two;
    # afterwards only the pool's size stays open.
    assert relay.opened <= 10
    assert pool.idle == 3
    await relay.until_open(3)

    opened = relay.opened
    await asyncio.gather(*(deliver(message_for(), pool) for _ in range(3)))
    assert relay.opened == opened, "three sends at once fit the three kept connections"
    await pool.close()


@pytest.mark.parametrize("how", ["socket closed", "421 reply"])
async def test_a_connection_the_server_dropped_is_replaced_at_once(
    sink: MailSink, relay: SmtpRelay, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    pool = pool_for(sink, relay)
    await deliver(message_for(), pool)
    if how == "socket closed":
        await relay.cut_all()
    else:
        # What a server that timed the connection out answers the next command.
        sink.faults.set_transient(code=421, stage=Stage.MAIL, count=1)

    message = message_for()
    caplog.set_level(logging.INFO, logger="pipeline_notifier")
    started = time.monotonic()
    receipt = await deliver(message, pool)

    assert receipt.delivered is True
    assert time.monotonic() - started < 1.0, "no retry delay"
    assert f"delivered {message['Message-ID']} on attempt 1" in caplog.messages
    assert not any("retrying in" in line for line in caplog.messages)
    assert relay.opened == 2
    assert len(stored(sink, message)) == 1
    await pool.close()


async def test_a_new_connection_refused_with_421_is_an_ordinary_failed_attempt(
    sink: MailSink, relay: SmtpRelay
) -> None:
    """The at-once resend is for kept connections only: a fresh one's 421 is the server's trouble."""
    sink.faults.set_transient(code=421, stage=Stage.MAIL, count=2)
    fast = RetryPolicy(max_attempts=3, backoff_base_seconds=0.01, backoff_cap_seconds=0.01)
    pool = SmtpPool(config_for(sink, host=relay.host, port=relay.port, retry=fast))
    assert (await deliver(message_for(), pool)).delivered is True
    assert sink.stats.transactions == 3
    assert relay.opened == 3
    await pool.close()


@pytest.mark.parametrize(("code", "stage"), [(451, Stage.DATA), (550, Stage.RCPT)], ids=["4xx", "5xx"])
async def test_a_refusal_mid_send_discards_the_connection(
    sink: MailSink, relay: SmtpRelay, code: int, stage: Stage
) -> None:
    fast = RetryPolicy(max_attempts=3, backoff_base_seconds=0.01, backoff_cap_seconds=0.01)
    pool = SmtpPool(config_for(sink, host=relay.host, port=relay.port, retry=fast))
    await deliver(message_for(), pool)
    refused = message_for()
    if code >= 500:
        sink.faults.set_permanent(refused["To"], code=code, stage=stage)
    else:
        sink.faults.set_transient(code=code, stage=stage, count=1)

    receipt = await deliver(refused, pool)
    assert receipt.delivered is (code < 500)
    # The refused attempt's connection is closed: 4xx, its retry opened the
    # one now kept; 5xx, nothing is kept.
    await relay.until_open(1 if code < 500 else 0)
    assert pool.idle == (1 if code < 500 else 0)

    await deliver(message_for(), pool)
    assert relay.opened == 2, "only a connection in a clean state serves the next email"
    await pool.close()


async def test_a_connection_idle_past_the_bound_is_closed_not_reused(sink: MailSink, relay: SmtpRelay) -> None:
    now = [1000.0]
    pool = pool_for(sink, relay, max_idle_seconds=30, clock=lambda: now[0])
    await deliver(message_for(), pool)
    now[0] += 29
    await deliver(message_for(), pool)
    assert relay.opened == 1, "idle under the bound: reused"

    now[0] += 31
    await deliver(message_for(), pool)
    assert relay.opened == 2
    await relay.until_open(1)
    await pool.close()


async def test_closing_the_pool_ends_kept_connections_and_keeps_no_more(sink: MailSink, relay: SmtpRelay) -> None:
    pool = pool_for(sink, relay)
    await asyncio.gather(*(deliver(message_for(), pool) for _ in range(2)))
    await relay.until_open(2)

    await pool.close()
    await relay.until_open(0)
    assert pool.idle == 0
    # An email still being sent at shutdown ends its connection after it.
    assert (await deliver(message_for(), pool)).delivered is True
    assert pool.idle == 0
    await relay.until_open(0)


async def test_starttls_and_login_happen_once_per_connection(tls: TlsMaterial, ca_file: Path) -> None:
    credentials = Credentials("notifier", "smtp-test-password")
    options = SmtpOptions(tls_context=tls.server, credentials=credentials)
    async with MailSink(options=options, serve_http=False) as sink, smtp_relay(sink.smtp_host, sink.smtp_port) as relay:
        config = config_for(
            sink,
            host=relay.host,
            port=relay.port,
            security="starttls",
            ca_file=str(ca_file),
            username=credentials.username,
            password=credentials.password,
        )
        pool = SmtpPool(config)
        messages = [message_for() for _ in range(3)]
        for message in messages:
            assert (await deliver(message, pool)).delivered is True
        arrived = [stored(sink, message)[0] for message in messages]
        await pool.close()

    assert relay.opened == 1
    assert {(mail.tls, mail.authenticated_as) for mail in arrived} == {(True, "notifier")}


@pytest.mark.parametrize(("fields", "complaint"), [({"size": -1}, "size"), ({"max_idle_seconds": 0}, "max_idle")])
def test_impossible_pool_settings_are_refused(sink: MailSink, fields: dict, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        SmtpPool(config_for(sink), **fields)
