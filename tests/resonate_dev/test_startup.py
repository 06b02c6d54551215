"""Starting and stopping the stand-in: settings, refusals, and a prompt stop."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.resonate_dev.conftest import PYTHON, unique, wait_until
from tests.resonate_dev.test_wire import PollReader


def run_standin(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "resonate_dev", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_bad_setting_stops_it_with_the_variable_named() -> None:
    result = run_standin(RESONATE_SERVER__PORT="eighty")
    assert result.returncode == 2
    assert "RESONATE_SERVER__PORT" in result.stderr

    result = run_standin("--port", "70000")
    assert result.returncode == 2
    assert "RESONATE_SERVER__PORT (--port)" in result.stderr

    result = run_standin(RESONATE_AUTH__PUBLICKEY="/nonexistent/key.pem")
    assert result.returncode == 2
    assert "RESONATE_AUTH__PUBLICKEY" in result.stderr and "/nonexistent/key.pem" in result.stderr


def test_storage_settings_are_reported_as_ignored(start_standin) -> None:
    standin = start_standin(
        RESONATE_STORAGE__TYPE="postgres", RESONATE_STORAGE__POSTGRES__URL="postgres://x"
    )
    log = standin.log()
    assert "RESONATE_STORAGE__TYPE is ignored" in log
    assert "RESONATE_STORAGE__POSTGRES__URL is ignored" in log


def test_sigterm_with_open_streams_stops_promptly(standin) -> None:
    readers = [PollReader(standin, unique("group"), unique("pid")) for _ in range(3)]
    assert all(reader.status == 200 for reader in readers)

    standin.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    wait_until(lambda: standin.process.poll() is not None, "the stand-in to exit", timeout=10)

    # uvicorn shuts down cleanly, then re-raises the signal it caught.
    assert standin.process.returncode in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 5
    assert "stopped after" in standin.log()
    for reader in readers:
        reader.close()
