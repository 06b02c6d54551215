"""``python -m mailsink``: run the sink until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import sys

from pydantic import ValidationError

from mailsink.server import MailSink
from mailsink.settings import SinkSettings


async def serve(settings: SinkSettings) -> None:
    sink = MailSink(
        smtp_host=settings.MAILSINK_SMTP_HOST,
        smtp_port=settings.MAILSINK_SMTP_PORT,
        http_host=settings.MAILSINK_HTTP_HOST,
        http_port=settings.MAILSINK_HTTP_PORT,
        options=settings.smtp_options(),
        limits=settings.limits(),
    )
    async with sink:
        # uvicorn turns SIGTERM/SIGINT into a graceful stop of the HTTP API;
        # leaving this block then closes the SMTP listener.
        await sink.wait_closed()


def main() -> int:
    try:
        settings = SinkSettings()
    except ValidationError as exc:
        print(f"mailsink: invalid configuration\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.MAILSINK_LOG_LEVEL,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.MAILSINK_LOG_LEVEL != "DEBUG":
        # aiosmtpd logs every command at INFO; the sink's own log says what
        # was stored or refused.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(settings))
    except OSError as exc:  # the port is taken, the certificate unreadable
        print(f"mailsink: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
