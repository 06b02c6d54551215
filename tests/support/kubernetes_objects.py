"""Reading rendered Kubernetes objects as the cluster would: containers, what a Service selects, environments.

For the manifest tests (tests/deploy): the overlays rendered as an operator
renders them, by ``kubectl kustomize`` (Debian 12's kubectl 1.20, kustomize
v2.0.3, is what .ci/run installs on a machine with none; the overlays render
the same there as with a current one: infra/k8s/README.md), and only what
those checks need of Kubernetes' rules, each as the API documents it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

#: The kustomize folders: a base and its overlays.
K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"

#: Every overlay in the repository, so that one added is checked like the others.
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir() if (path / "kustomization.yaml").is_file())

Object = dict[str, Any]

#: The kinds whose objects run pods, and where their pod template is.
POD_TEMPLATES = {"Deployment": ("spec", "template"), "Job": ("spec", "template")}

#: ``$(NAME)`` in an env value is replaced by NAME's value when defined before it;
#: ``$$`` stands for a ``$`` (Kubernetes' dependent environment variables).
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@cache
def render(overlay: str) -> tuple[Object, ...]:
    """The objects ``kubectl kustomize`` prints for an overlay, or a failed test saying why there are none."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is not installed: install Debian's kubernetes-client "
            "(apt-get install -y --no-install-recommends kubernetes-client; .ci/run does it when kubectl is missing)",
            pytrace=False,
        )
    folder = K8S / "overlays" / overlay
    done = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {folder} failed:\n{done.stderr}", pytrace=False)
    return tuple(item for item in yaml.safe_load_all(done.stdout) if item)


def of_kind(objects: tuple[Object, ...], kind: str) -> list[Object]:
    return [item for item in objects if item["kind"] == kind]


def named(objects: tuple[Object, ...], kind: str, name: str) -> Object:
    matches = [item for item in of_kind(objects, kind) if item["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name!r}, found {len(matches)}"
    return matches[0]


def pod_spec(item: Object) -> Object:
    template = item
    for key in POD_TEMPLATES[item["kind"]]:
        template = template[key]
    return template["spec"]


def containers(objects: tuple[Object, ...]) -> Iterator[tuple[Object, Object, Object]]:
    """(the object, its pod spec, a container) for every container, init containers too, of every pod template."""
    for item in objects:
        if item["kind"] in POD_TEMPLATES:
            spec = pod_spec(item)
            for container in spec.get("initContainers", []) + spec["containers"]:
                yield item, spec, container


def effective(spec: Object, container: Object, field: str) -> Any:
    """A security setting as it applies to the container: its own, else the pod's."""
    own = container.get("securityContext", {}).get(field)
    return own if own is not None else spec.get("securityContext", {}).get(field)


def selects(selector: dict[str, str], item: Object) -> bool:
    """Whether a Service's (equality) selector matches the pods of a workload."""
    labels = item["spec"]["template"]["metadata"].get("labels", {})
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions with In and NotIn) matches these labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        inside = labels.get(expression["key"]) in expression["values"]
        assert expression["operator"] in ("In", "NotIn"), f"{expression['operator']}: not read here"
        if inside != (expression["operator"] == "In"):
            return False
    return True


def container_port(container: Object, port: int | str) -> int:
    """A container's port number, given as a number or by the name the container gives it."""
    if isinstance(port, int):
        return port
    numbers = [entry["containerPort"] for entry in container.get("ports", []) if entry.get("name") == port]
    assert numbers, f"container {container['name']!r} has no port named {port!r}"
    return numbers[0]


SecretValue = Callable[[str, str, bool], str | None]


def environment(container: Object, objects: tuple[Object, ...], secret: SecretValue) -> dict[str, str]:
    """The container's environment: envFrom first, then env in order, references expanded as the kubelet does.

    ``secret(name, key, optional)`` stands for the Secrets the operator made:
    a value, or None for a key the Secret does not hold (only an optional one may be missing).
    """
    found: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            found.update(named(objects, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
    for entry in container.get("env", []):
        if "value" in entry:
            found[entry["name"]] = _REFERENCE.sub(lambda m: _expanded(m, found), entry["value"])
        elif (ref := entry.get("valueFrom", {}).get("secretKeyRef")) is not None:
            value = secret(ref["name"], ref["key"], ref.get("optional", False))
            if value is not None:
                found[entry["name"]] = value
        elif (ref := entry.get("valueFrom", {}).get("configMapKeyRef")) is not None:
            found[entry["name"]] = named(objects, "ConfigMap", ref["name"])["data"][ref["key"]]
    return found


def _expanded(match: re.Match[str], defined: dict[str, str]) -> str:
    if match.group(0) == "$$":
        return "$"
    return defined.get(match.group(1), match.group(0))
