"""The Databricks emulator as a real subprocess on a free loopback port, and what a client needs to reach it.

It serves the emulator tests' own bundle (``tests/databricks_emulator/bundle``)
wrapped in the check of :mod:`tests.support.sdk_model_check`, so every
answer reads back unchanged through databricks-sdk's models; stopping it fails
on any answer that did not.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from databricks.sdk import WorkspaceClient
from databricks.sdk.core import Config

from tests.support.sdk_model_check import LOG_ENV, problems_logged

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO_ROOT / "notebooks"
#: The project's pipeline notebook (its own tests read its cells).
NOTEBOOK = NOTEBOOKS / "pipeline.py"
#: The tests' bundle, which the session's emulator serves.
TEST_BUNDLE = REPO_ROOT / "tests" / "databricks_emulator" / "bundle" / "databricks.yml"
#: The id of the test bundle's first job (the pipeline job); deliberately not the default.
JOB_ID = 4242
#: The ids of the test bundle's jobs, in its order from JOB_ID on.
TEST_JOBS = ("pipeline", "report", "conditions", "tolerant", "refresh", "serial", "exclusive", "retrying", "wide")
JOB_IDS = {key: JOB_ID + index for index, key in enumerate((*TEST_JOBS, "unwritten"))}
#: The notification destination of the test bundle's refresh job, and its Basic credentials.
DESTINATION_ID = "test-destination"
DESTINATION_CREDENTIALS = ("emulator-webhook", "webhook-test-password")
#: How long the test bundle's non-notebook tasks take.
TASK_SECONDS = 0.1
#: The SDK retries transient errors for this long; a test that needs longer is broken.
SDK_RETRY_TIMEOUT_SECONDS = 20
#: How long the emulator may take to answer /healthz after it is started.
STARTUP_DEADLINE_SECONDS = 30
#: The OAuth token lifetime of test emulators: databricks-sdk treats a token as
#: expired 40 s before its end, so it refreshes one of these after 2 s.
OAUTH_TOKEN_LIFETIME_SECONDS = 42
#: How soon after it got one databricks-sdk refreshes such a token.
SDK_REFRESHES_AFTER_SECONDS = OAUTH_TOKEN_LIFETIME_SECONDS - 40


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Emulator:
    """A running emulator process and what a client needs to reach it."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, env: dict[str, str], log: Path) -> None:
        self.process = process
        self.url = url
        self.token = env["DATABRICKS_EMULATOR_TOKEN"]
        self.client_id = env["DATABRICKS_EMULATOR_CLIENT_ID"]
        self.client_secret = env["DATABRICKS_EMULATOR_CLIENT_SECRET"]
        self.job_id = JOB_ID
        self.jobs = JOB_IDS
        self.log = log
        self.model_log = Path(env[LOG_ENV])
        self._problems_seen = 0

    def new_model_problems(self) -> list[dict]:
        """Answers that failed the SDK-model check since the last call."""
        problems = problems_logged(self.model_log, after=self._problems_seen)
        self._problems_seen += len(problems)
        return problems

    def client(self, token: str | None = None) -> WorkspaceClient:
        config = Config(
            host=self.url,
            token=token or self.token,
            retry_timeout_seconds=SDK_RETRY_TIMEOUT_SECONDS,
        )
        return WorkspaceClient(config=config)

    def oauth_client(self, client_secret: str | None = None) -> WorkspaceClient:
        """A client that signs in as the service principal; the SDK's unified auth finds the rest."""
        config = Config(
            host=self.url,
            client_id=self.client_id,
            client_secret=client_secret or self.client_secret,
            retry_timeout_seconds=SDK_RETRY_TIMEOUT_SECONDS,
        )
        return WorkspaceClient(config=config)

    def oauth_counters(self) -> dict:
        return httpx.get(f"{self.url}/emulator/oauth", headers=self.bearer, timeout=10).json()

    @property
    def bearer(self) -> dict[str, str]:
        """The header the Jobs API and the control routes need."""
        return {"Authorization": f"Bearer {self.token}"}


def start_emulator(
    tmp: Path, *, cwd: Path | None = None, bundle: Path | None = TEST_BUNDLE, **env_overrides: str
) -> Emulator:
    """An emulator on a free port, serving ``bundle`` (None: its default, relative to ``cwd``)."""
    port = free_port()
    served = (
        {
            "DATABRICKS_EMULATOR_BUNDLE": str(bundle),
            "DATABRICKS_EMULATOR_BUNDLE_VARIABLES": json.dumps({"run_timeout_seconds": 120}),
        }
        if bundle is not None
        else {}
    )
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("DATABRICKS_EMULATOR_")},
        **served,
        # The checked emulator is a module of the tests, so the repository must be importable.
        "PYTHONPATH": str(REPO_ROOT),
        LOG_ENV: str(tmp / f"model-check-{port}.jsonl"),
        "DATABRICKS_EMULATOR_PORT": str(port),
        "DATABRICKS_EMULATOR_TOKEN": f"dapi-test-{uuid.uuid4().hex}",
        "DATABRICKS_EMULATOR_CLIENT_ID": str(uuid.uuid4()),
        "DATABRICKS_EMULATOR_CLIENT_SECRET": f"dose-test-{uuid.uuid4().hex}",
        "DATABRICKS_EMULATOR_OAUTH_TOKEN_LIFETIME_SECONDS": str(OAUTH_TOKEN_LIFETIME_SECONDS),
        "DATABRICKS_EMULATOR_JOB_ID": str(JOB_ID),
        "DATABRICKS_EMULATOR_TASK_SECONDS": str(TASK_SECONDS),
        "DATABRICKS_EMULATOR_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "DATABRICKS_EMULATOR_QUEUED_SECONDS": "0.05",
        "DATABRICKS_EMULATOR_PENDING_SECONDS": "0.1",
        "DATABRICKS_EMULATOR_TERMINATING_SECONDS": "0.05",
        "DATABRICKS_EMULATOR_KILL_GRACE_SECONDS": "1",
        **env_overrides,
    }
    log = tmp / f"emulator-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.sdk_model_check"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=cwd or tmp,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"emulator exited with {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Emulator(process, url, env, log)
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"emulator did not answer /healthz in time: {log.read_text()}")
        time.sleep(0.05)


def stop_emulator(emulator: Emulator) -> None:
    emulator.process.terminate()
    try:
        emulator.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        emulator.process.kill()
        emulator.process.wait()
    problems = problems_logged(emulator.model_log)
    assert not problems, f"answers outside databricks-sdk's models: {problems}"
