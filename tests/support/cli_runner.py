"""Running the `pipelines` CLI in a test, as a user would from a shell with PIPELINES_API_KEY set or not."""

from __future__ import annotations

import asyncio

import pytest

from pipeline_client.cli import commands as cli


async def run_cli(monkeypatch: pytest.MonkeyPatch, api_key: str | None, *argv: str) -> int:
    """The CLI's exit status for ``argv``, run off the event loop (it runs one of its own)."""
    if api_key is None:
        monkeypatch.delenv("PIPELINES_API_KEY", raising=False)
    else:
        monkeypatch.setenv("PIPELINES_API_KEY", api_key)
    return await asyncio.to_thread(cli.main, list(argv))
