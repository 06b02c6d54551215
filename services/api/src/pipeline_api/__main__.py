"""Run the gateway: ``python -m pipeline_api``."""

from __future__ import annotations

import uvicorn

from pipeline_shared.logs import configure_logging
from pipeline_shared.settings import load_settings

from .app import create_app
from .settings import GatewaySettings


def main() -> None:
    settings = load_settings(GatewaySettings)
    configure_logging("api", settings.LOG_LEVEL)
    uvicorn.run(
        create_app(settings), host="0.0.0.0", port=settings.PORT, log_config=None, proxy_headers=True
    )


if __name__ == "__main__":
    main()
