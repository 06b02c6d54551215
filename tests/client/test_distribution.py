"""``pip install pipelines-client`` brings none of the server: the wheel, built and installed in a fresh venv.

It builds the wheel with ``uv build``, installs it into a new virtual
environment from the package index this machine reaches, and looks at what
came: the client imports, and FastAPI, uvicorn, resonate and the shared
library are absent. With the ``cli`` extra, ``pipelines --help`` works.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The gateway's dependencies and the workspace's own server packages: none may come with the client.
SERVER_DISTRIBUTIONS = ("fastapi", "uvicorn", "resonate-sdk", "resonate-pg", "pipeline-shared", "pipeline-api")

pytestmark = pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv on PATH")


def _run(*argv: str | Path, cwd: Path = ROOT) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run("uv", "build", "--package", "pipelines-client", "--wheel", "--out-dir", out)
    (built,) = out.glob("pipelines_client-*.whl")
    return built


def _venv_with(tmp_path: Path, requirement: str) -> Path:
    venv = tmp_path / "venv"
    _run("uv", "venv", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    _run("uv", "pip", "install", "--python", python, requirement)
    return venv


def _installed(venv: Path) -> set[str]:
    listed = _run("uv", "pip", "list", "--python", venv / "bin" / "python", "--format", "freeze")
    return {line.split("==")[0].lower() for line in listed.splitlines() if "==" in line}


def test_the_wheel_installs_the_client_and_none_of_the_server(wheel: Path, tmp_path: Path) -> None:
    venv = _venv_with(tmp_path, str(wheel))
    imported = _run(
        venv / "bin" / "python",
        "-c",
        "import pipeline_client; print(pipeline_client.Client.__name__, pipeline_client.AsyncClient.__name__)",
        cwd=tmp_path,
    )
    installed = _installed(venv)

    assert imported.split() == ["Client", "AsyncClient"]
    assert "pipelines-client" in installed and {"httpx", "pydantic", "httpx-sse"} <= installed
    assert installed.isdisjoint(SERVER_DISTRIBUTIONS), installed & set(SERVER_DISTRIBUTIONS)
    assert "rich" not in installed, "rich comes only with the cli extra"


def test_the_cli_extra_gives_a_working_pipelines_command(wheel: Path, tmp_path: Path) -> None:
    venv = _venv_with(tmp_path, f"pipelines-client[cli] @ {wheel.as_uri()}")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIPELINES_")}
    done = subprocess.run(
        [venv / "bin" / "pipelines", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env
    )
    installed = _installed(venv)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: pipelines") and "exit status:" in done.stdout
    assert "rich" in installed and installed.isdisjoint(SERVER_DISTRIBUTIONS)
