"""``python -m resonate_dev``: run the stand-in until SIGINT or SIGTERM.

Flags override the environment, which overrides the defaults, as for the
real server's ``serve`` command: ``--host`` / ``--port`` (aliases
``--server-bind`` / ``--server-port``) set ``RESONATE_SERVER__BIND`` /
``RESONATE_SERVER__PORT``.
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn
from pydantic import ValidationError

from resonate_dev.app import StandIn, build_app
from resonate_dev.auth import AuthConfigError
from resonate_dev.settings import Settings, ignored_storage_settings

logger = logging.getLogger("resonate_dev")


class _Server(uvicorn.Server):
    """Ends the open SSE streams first on shutdown.

    uvicorn waits for in-flight responses before running the lifespan's
    shutdown, and an SSE stream never finishes on its own, so without this
    every stop would hang until its graceful-shutdown timeout.
    """

    def __init__(self, config: uvicorn.Config, standin: StandIn) -> None:
        super().__init__(config)
        self.standin = standin

    async def shutdown(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        self.standin.registry.close_all()
        await super().shutdown(sockets)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m resonate_dev",
        description=(
            "In-memory stand-in for the Resonate server, for development and offline CI. "
            "State is lost on exit. Not for production."
        ),
    )
    parser.add_argument(
        "--host",
        "--server-bind",
        dest="bind",
        help="bind address [env RESONATE_SERVER__BIND, default 0.0.0.0]",
    )
    parser.add_argument(
        "--port",
        "--server-port",
        dest="port",
        type=int,
        help="port [env RESONATE_SERVER__PORT, default 8001]",
    )
    return parser.parse_args(argv)


def load_settings(args: argparse.Namespace) -> Settings:
    """The environment's settings with the flags on top (merged field by field)."""
    flags = {"bind": args.bind, "port": args.port}
    server = {name: value for name, value in flags.items() if value is not None}
    return Settings(server=server) if server else Settings()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings(args)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            name = "RESONATE_" + "__".join(str(part).upper() for part in error["loc"])
            flag = {"RESONATE_SERVER__BIND": " (--host)", "RESONATE_SERVER__PORT": " (--port)"}
            print(
                f"resonate-dev: invalid setting {name}{flag.get(name, '')}: {error['msg']}",
                file=sys.stderr,
            )
        return 2
    logging.basicConfig(
        level=settings.logging_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in ignored_storage_settings():
        logger.warning("%s is ignored: this stand-in keeps all state in memory", name)
    try:
        standin = StandIn(settings)
    except AuthConfigError as exc:
        print(f"resonate-dev: RESONATE_AUTH__PUBLICKEY: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        build_app(standin),
        host=settings.server.bind,
        port=settings.server.port,
        log_level=settings.logging_level.lower(),
        access_log=False,
        lifespan="on",
    )
    logger.info(
        "resonate-dev listening on %s:%s (server url %s); in-memory, state is lost on exit",
        settings.server.bind,
        settings.server.port,
        settings.server_url,
    )
    _Server(config, standin).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
