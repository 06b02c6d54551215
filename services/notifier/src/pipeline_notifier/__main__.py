"""Run the notifier: ``python -m pipeline_notifier``."""

from __future__ import annotations

import logging
import socket

import uvloop

from pipeline_shared import names
from pipeline_shared.logs import configure_logging
from pipeline_shared.ops import run_resonate_worker
from pipeline_shared.resonate_client import connect
from pipeline_shared.settings import load_settings
from pipeline_shared.testhooks import NOTIFIER_POINTS, TestHooks
from pipeline_shared.tracing import configure_tracing

from .notify import EMAIL_RETRY, NotifierDeps, send_pipeline_email
from .settings import NotifierSettings
from .smtp import RetryPolicy, SmtpConfig
from .smtp_pool import SmtpPool

logger = logging.getLogger("pipeline_notifier")


async def main() -> None:
    settings = load_settings(NotifierSettings)
    configure_logging("notifier", settings.LOG_LEVEL)
    configure_tracing("pipeline-notifier")  # off unless an OTEL_EXPORTER_OTLP_*ENDPOINT is set

    link = connect(settings, names.NOTIFIER_GROUP, max_concurrent_tasks=settings.MAX_CONCURRENT_TASKS)
    resonate = link.resonate
    hooks = TestHooks(enabled=settings.WORKER_TEST_HOOKS, points=NOTIFIER_POINTS)
    smtp = SmtpPool(
        SmtpConfig(
            host=settings.SMTP_HOST,
            port=settings.SMTP_PORT,
            security=settings.SMTP_SECURITY,
            username=settings.SMTP_USERNAME,
            password=settings.SMTP_PASSWORD,
            timeout_seconds=settings.SMTP_TIMEOUT_SECONDS,
            # Looked up once: left unset, aiosmtplib resolves the FQDN for
            # every connection, a thread hop and a hosts/DNS lookup each time.
            local_hostname=socket.getfqdn(),
            retry=RetryPolicy(max_attempts=settings.SMTP_MAX_ATTEMPTS),
        ),
        size=settings.SMTP_POOL_SIZE,
        max_idle_seconds=settings.SMTP_POOL_IDLE_SECONDS,
    )
    resonate.with_dependency(
        NotifierDeps(
            smtp=smtp,
            sender=settings.MAIL_FROM,
            message_id_domain=settings.message_id_domain,
            page_url=settings.PAGE_URL,
            hooks=hooks,
            promises=resonate.promises,
        )
    )
    resonate.register(send_pipeline_email, name=names.SEND_PIPELINE_EMAIL, retry_policy=EMAIL_RETRY)
    logger.info("SMTP at %s:%s (%s)", settings.SMTP_HOST, settings.SMTP_PORT, settings.SMTP_SECURITY)
    try:
        await run_resonate_worker("notifier", link, settings.OPS_PORT, hooks.routes())
    finally:
        # Resonate has stopped handing out emails: QUIT the kept connections
        # rather than leave the server to time them out.
        await smtp.close()


if __name__ == "__main__":
    # uvloop: the process is mostly network I/O (Resonate's database, and
    # Databricks or SMTP); it made the gateway's requests markedly cheaper
    # (see the benchmark).
    uvloop.run(main())
