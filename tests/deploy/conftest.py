"""The Kubernetes overlays (infra/k8s/overlays) rendered once per test session, as an operator renders them.

Rendered by ``kubectl kustomize``: the kustomize an operator's kubectl has.
Debian 12's kubectl (1.20, kustomize v2.0.3) is what .ci/run installs on a
machine with none; the overlays are written so that it and a current kubectl
give the same objects (infra/k8s/README.md).
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"

#: Every overlay in the repository, so that one added is checked like the others.
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir() if (path / "kustomization.yaml").is_file())


@cache
def render(folder: Path) -> tuple[dict[str, Any], ...]:
    """The objects ``kubectl kustomize folder`` prints, or a failed test saying why there are none."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is not installed: install Debian's kubernetes-client "
            "(apt-get install -y --no-install-recommends kubernetes-client; .ci/run does it when kubectl is missing)",
            pytrace=False,
        )
    done = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {folder} failed:\n{done.stderr}", pytrace=False)
    return tuple(item for item in yaml.safe_load_all(done.stdout) if item)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[dict[str, Any], ...]:
    """The objects of one overlay; a test taking it runs once per overlay."""
    return render(K8S / "overlays" / request.param)


@pytest.fixture
def production() -> tuple[dict[str, Any], ...]:
    """The objects of the production overlay."""
    return render(K8S / "overlays" / "production")
