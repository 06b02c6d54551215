"""A backup taken with pg_dump while pipelines wait, restored into a new server: the pipelines complete, once.

The runbook of docs/operations.md ("Backup and restore"), step by step: a
custom-format ``pg_dump`` of the resonate database taken online; the services
stopped; the Resonate server replaced by a new container on an empty volume
(the image makes the cluster, the login roles and the pg_cron jobs); the dump
restored over it with ``pg_restore --clean --if-exists``; the server restarted
so that its bootstrap runs once more over the restored database; the services
started. The notebooks call back after that, into the restored server.

The stack keeps its service name for the new server rather than being pointed
at a server under another name: compose.yaml names the server ``resonate`` in
every service's RESONATE_DATABASE_URL, and a new container with a new volume
under that name is the same thing to the services (a new address they
reconnect to, a new database). Everything the restored server holds comes
from the dump and from the image's bootstrap; nothing of the old volume stays.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import BinaryIO

from tests.support.fault_batch import Batch
from tests.support.replicas import REPLICATED
from tests.support.stack import Stack

#: What pg_cron must run on the restored server (infra/resonate-pg/bootstrap.sql).
CRON_JOBS = ["resonate_cron_history", "resonate_gc", "resonate_process_timeouts"]


def test_a_backup_taken_while_pipelines_wait_restored_into_a_new_server_completes_them(
    stack: Stack, batch: Batch, tmp_path: Path
) -> None:
    # The notebooks are held (their runs PENDING) until the restored server and the services are up.
    batch.plan(held=True).start()
    batch.wait_for("waiting")
    began = time.monotonic()

    backup = tmp_path / "resonate.dump"
    with backup.open("wb") as out:
        _in_server(stack, "pg_dump", "--username=postgres", "--dbname=resonate", "--format=custom", stdout=out)
    dumped = time.monotonic() - began

    stack.compose("stop", *REPLICATED)
    # A notebook that called back before the services stopped would have settled its pipeline in
    # the old server only: none may have started yet.
    started = [pid for pid in batch.ids for run in batch.emulator.runs(pid) for task in run["tasks"] if task["pid"]]
    assert not started, f"notebooks started before the restore, though held: {started}"
    _replace_server(stack)
    with backup.open("rb") as dump:
        _in_server(
            stack,
            "pg_restore",
            "--username=postgres",
            "--dbname=resonate",
            "--clean",
            "--if-exists",
            "--single-transaction",
            stdin=dump,
        )
    stack.restart("resonate")  # its bootstrap once more, over the restored database: roles, pg_cron jobs
    jobs = _in_server(
        stack,
        "psql",
        "--username=postgres",
        "--dbname=resonate",
        "--tuples-only",
        "--no-align",
        "--command=SELECT jobname FROM cron.job ORDER BY jobname",
    )
    assert jobs.decode().split() == CRON_JOBS
    for service in REPLICATED:
        stack.start(service, wait=False)
    for service in REPLICATED:
        stack.wait_healthy(service)
    restored = time.monotonic() - began
    batch.release()

    batch.wait_for("succeeded", timeout=180)
    batch.assert_exactly_once()
    print(
        f"\nbackup of {backup.stat().st_size / 1e6:.1f} MB in {dumped:.1f} s; new server restored and the services "
        f"back {restored:.1f} s after the backup began; all succeeded {time.monotonic() - began:.1f} s after"
    )


def _in_server(stack: Stack, *command: str, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> bytes:
    """Run a Postgres client inside the Resonate server's container, as its superuser over the local socket."""
    done = subprocess.run(
        ["docker", "exec", "--interactive", stack.container_name("resonate"), *command],
        stdin=stdin,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, f"{command[0]} failed: {done.stderr.decode(errors='replace')}"
    return done.stdout or b""


def _replace_server(stack: Stack) -> None:
    """The Resonate server's container and volume removed; a new one up on an empty volume, bootstrapped."""
    container = stack.container_name("resonate")
    volumes = subprocess.run(
        [
            "docker",
            "inspect",
            "--format",
            '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}',
            container,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert volumes, f"{container} has no named volume"
    stack.compose("rm", "--stop", "--force", "resonate")
    subprocess.run(["docker", "volume", "rm", *volumes], check=True, capture_output=True)
    stack.up("resonate")
