"""The notifier's start and stop: its emails go through one pool built from the settings, QUIT at shutdown.

Resonate is left out (``connect`` and ``run_resonate_worker`` are stood in
for): what is checked is the wiring around them, on a real SMTP sink.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mailsink import MailSink
from pipeline_notifier import __main__ as notifier_main
from pipeline_notifier.notify import NotifierDeps
from pipeline_notifier.smtp import deliver
from pipeline_notifier.smtp_pool import SmtpPool
from tests.support.smtp_delivery import message_for, stored
from tests.support.smtp_relay import smtp_relay


class _Resonate:
    def __init__(self) -> None:
        self.deps: NotifierDeps | None = None
        #: Where the notifier reads a pipeline's trace context (never, here: tracing is off).
        self.promises = None

    def with_dependency(self, deps: NotifierDeps) -> None:
        self.deps = deps

    def register(self, *args: Any, **kwargs: Any) -> None:
        pass


class _Link:
    def __init__(self) -> None:
        self.resonate = _Resonate()


def _worker_that_runs(work: Callable[[NotifierDeps], Any]) -> Callable[..., Any]:
    async def run_resonate_worker(service: str, link: _Link, *args: Any) -> None:
        assert link.resonate.deps is not None
        await work(link.resonate.deps)

    return run_resonate_worker


@pytest.mark.parametrize("ends", ["stopped", "crashed"])
async def test_the_notifier_sends_on_its_pool_and_closes_it_when_it_stops(
    sink: MailSink, monkeypatch: pytest.MonkeyPatch, ends: str
) -> None:
    async with smtp_relay(sink.smtp_host, sink.smtp_port) as relay:
        for name, value in {
            "RESONATE_DATABASE_URL": "postgresql://pipeline_notifier@resonate/resonate",
            "SMTP_HOST": relay.host,
            "SMTP_PORT": str(relay.port),
            "SMTP_SECURITY": "none",
            "MAIL_FROM": "pipelines@example.com",
            "SMTP_POOL_SIZE": "2",
            "SMTP_POOL_IDLE_SECONDS": "45",
        }.items():
            monkeypatch.setenv(name, value)
        messages = [message_for() for _ in range(3)]
        pools: list[SmtpPool] = []

        async def send_then_stop(deps: NotifierDeps) -> None:
            assert isinstance(deps.smtp, SmtpPool)
            pools.append(deps.smtp)
            for message in messages:
                assert (await deliver(message, deps.smtp)).delivered is True
            await relay.until_open(1)
            if ends == "crashed":
                raise RuntimeError("the ops server failed")

        monkeypatch.setattr(notifier_main, "connect", lambda *args, **kwargs: _Link())
        monkeypatch.setattr(notifier_main, "configure_logging", lambda *args: None)
        monkeypatch.setattr(notifier_main, "run_resonate_worker", _worker_that_runs(send_then_stop))
        if ends == "crashed":
            with pytest.raises(RuntimeError, match="ops server"):
                await notifier_main.main()
        else:
            await notifier_main.main()

        await relay.until_open(0)
        assert relay.opened == 1
        [pool] = pools
        assert (pool.size, pool.max_idle_seconds, pool.idle) == (2, 45.0, 0)
        assert all(len(stored(sink, message)) == 1 for message in messages)
