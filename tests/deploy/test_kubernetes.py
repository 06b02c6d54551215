"""The Kubernetes manifests (infra/k8s), every overlay rendered and checked as a reviewer would, with no cluster.

Each object is validated against the API schemas of current Kubernetes
releases (kubernetes-validate ships them), then the checks a reviewer makes:
limits, probes, a non-root read-only container, no secret inline, only the
callback listener reachable from outside, and settings the services accept
with ENVIRONMENT=production (built with the services' own Settings classes,
with the Secrets and files docs/production.md has the operator make).
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any
from unittest import mock

import kubernetes_validate
import pytest
import yaml

from pipeline_api.auth.keys import mint
from pipeline_api.domain.callbacks import CALLBACK_PATH
from pipeline_api.domain.notifications import NOTIFICATION_PATH
from pipeline_api.settings import GatewaySettings
from pipeline_notifier.settings import NotifierSettings
from pipeline_worker.settings import WorkerSettings
from tests.support.kubernetes_objects import (
    K8S,
    container_port,
    containers,
    effective,
    environment,
    matches,
    named,
    of_kind,
    pod_spec,
    selects,
)

ROOT = Path(__file__).resolve().parents[2]

#: The oldest release the manifests are for, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())

#: Each service's Deployment and the settings it must accept.
SERVICES = {"pipeline-api": GatewaySettings, "pipeline-worker": WorkerSettings, "pipeline-notifier": NotifierSettings}

#: An environment variable by this name holds a secret (API_KEYS_FILE is a path: see below).
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")

#: Optional Secret keys the operator fills in the test's deployment: a Databricks token (rather than OAuth).
OPERATOR_CHOICES = {("databricks-credentials", "DATABRICKS_TOKEN")}


def test_every_object_is_valid_for_current_kubernetes(overlay: tuple[dict[str, Any], ...]) -> None:
    for version in KUBERNETES_VERSIONS:
        for item in overlay:
            # strict: an unknown field (a typo, a field of another version) fails too.
            kubernetes_validate.validate(item, version, strict=True)


def test_every_container_has_requests_and_limits(overlay: tuple[dict[str, Any], ...]) -> None:
    for item, _, container in containers(overlay):
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(bound, {}))
            assert not missing, f"{item['metadata']['name']}/{container['name']}: no {bound} for {missing}"


def test_every_service_is_probed_on_healthz_and_readyz_where_it_serves_them(
    overlay: tuple[dict[str, Any], ...],
) -> None:
    deployments = of_kind(overlay, "Deployment")
    assert {item["metadata"]["name"] for item in deployments} == set(SERVICES)
    for item, _, container in containers(tuple(deployments)):
        env = {entry["name"]: entry.get("value") for entry in container.get("env", [])}
        # The gateway serves them on its own PORT, the others on OPS_PORT.
        serving = int(env.get("OPS_PORT") or env["PORT"])
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            check = container.get(probe, {}).get("httpGet")
            assert check is not None, f"{item['metadata']['name']}: no {probe}"
            assert check["path"] == path and container_port(container, check["port"]) == serving, (
                f"{item['metadata']['name']}: {probe} is {check}, not {path} on port {serving}"
            )


def test_every_container_runs_as_non_root_on_a_read_only_file_system(overlay: tuple[dict[str, Any], ...]) -> None:
    for item, spec, container in containers(overlay):
        where = f"{item['metadata']['name']}/{container['name']}"
        assert effective(spec, container, "runAsNonRoot") is True, where
        # The images name their user (USER app): the kubelet needs a number to know it is not root.
        assert effective(spec, container, "runAsUser") not in (None, 0), where
        own = container.get("securityContext", {})
        assert own.get("readOnlyRootFilesystem") is True, where
        assert own.get("allowPrivilegeEscalation") is False, where
        assert own.get("privileged") is not True, where
        assert own.get("capabilities", {}).get("drop") == ["ALL"] and not own["capabilities"].get("add"), where
        assert (effective(spec, container, "seccompProfile") or {}).get("type") == "RuntimeDefault", where
        assert not any(spec.get(name) for name in ("hostNetwork", "hostPID", "hostIPC")), where
        assert not any("hostPort" in port for port in container.get("ports", [])), where
        writable = {mount["name"] for mount in container.get("volumeMounts", []) if not mount.get("readOnly")}
        scratch = {volume["name"] for volume in spec.get("volumes", []) if "emptyDir" in volume}
        assert writable <= scratch, f"{where}: writes to {writable - scratch}, which are not scratch volumes"


def test_no_secret_value_is_in_the_manifests(overlay: tuple[dict[str, Any], ...]) -> None:
    assert not of_kind(overlay, "Secret"), "a Secret is created by the operator, never rendered from the repository"
    for item in of_kind(overlay, "ConfigMap"):
        leaked = [key for key in item.get("data", {}) if SECRET_NAME.search(key)]
        assert not leaked, f"ConfigMap {item['metadata']['name']} holds {leaked}: secrets go in Secrets"
    for item, spec, container in containers(overlay):
        secret_mounts = _secret_mount_paths(spec, container)
        for entry in container.get("env", []):
            if not SECRET_NAME.search(entry["name"]):
                continue
            where = f"{item['metadata']['name']}/{container['name']}: {entry['name']}"
            if entry["name"].endswith("_FILE"):
                # A path to a file, which must then come from a Secret volume.
                assert any(entry["value"].startswith(f"{path}/") for path in secret_mounts), where
            else:
                assert "secretKeyRef" in entry.get("valueFrom", {}), f"{where} is not from a Secret"
    text = yaml.safe_dump_all(overlay)
    assert "dev-only-insecure-" not in text and "dapi" not in text


def _secret_mount_paths(spec: dict[str, Any], container: dict[str, Any]) -> set[str]:
    secret_volumes = {volume["name"] for volume in spec.get("volumes", []) if "secret" in volume}
    return {mount["mountPath"] for mount in container.get("volumeMounts", []) if mount["name"] in secret_volumes}


def test_only_the_callback_listener_is_reachable_from_outside(overlay: tuple[dict[str, Any], ...]) -> None:
    for service in of_kind(overlay, "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", f"Service {service['metadata']['name']}"
    ingresses = of_kind(overlay, "Ingress")
    assert ingresses, "the callback listener needs an Ingress"
    for ingress in ingresses:
        assert "defaultBackend" not in ingress["spec"]
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["path"] in (CALLBACK_PATH, NOTIFICATION_PATH) and path["pathType"] == "Exact", path
                backend = path["backend"]["service"]
                for number, callback_port in _reached_ports(overlay, backend["name"], backend["port"]):
                    assert str(number) == callback_port, f"the Ingress reaches port {number}, not CALLBACK_PORT"
    policies = of_kind(overlay, "NetworkPolicy")
    # Every pod is isolated: a policy selects it, so only what a policy allows comes in...
    for item in overlay:
        if item["kind"] in ("Deployment", "Job"):
            labels = item["spec"]["template"]["metadata"]["labels"]
            assert any(matches(policy["spec"]["podSelector"], labels) for policy in policies), item["metadata"]["name"]
    # ...and what a policy lets in from anywhere is the gateway's callback port and nothing else.
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if _from_anywhere(rule):
                assert policy["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "pipeline-api"}}
                assert rule.get("ports") == [{"port": "callback"}], policy["metadata"]["name"]


def _from_anywhere(rule: dict[str, Any]) -> bool:
    """A rule open to every source: no peers, an address block, or every namespace's pods."""
    peers = rule.get("from") or [{}]
    return any(not peer or "ipBlock" in peer or peer.get("namespaceSelector") == {} for peer in peers)


def _reached_ports(
    objects: tuple[dict[str, Any], ...], service_name: str, port: dict[str, Any]
) -> list[tuple[int, str]]:
    """(container port, that container's CALLBACK_PORT) for each container the Service's port leads to."""
    service = named(objects, "Service", service_name)
    chosen = [
        entry for entry in service["spec"]["ports"] if port in ({"name": entry.get("name")}, {"number": entry["port"]})
    ]
    assert len(chosen) == 1, f"the Ingress names port {port} of Service {service_name}, which has no such port"
    reached = []
    for item in of_kind(objects, "Deployment"):
        if selects(service["spec"]["selector"], item):
            for container in pod_spec(item)["containers"]:
                env = {entry["name"]: entry.get("value") for entry in container.get("env", [])}
                target = chosen[0].get("targetPort", chosen[0]["port"])
                reached.append((container_port(container, target), env.get("CALLBACK_PORT", "(none)")))
    assert reached, f"Service {service_name} selects no pod"
    return reached


def test_every_overlay_gives_each_service_every_setting_production_requires(
    overlay: tuple[dict[str, Any], ...], tmp_path: Path
) -> None:
    files = _operator_files(tmp_path)
    for name, settings in SERVICES.items():
        deployment = named(overlay, "Deployment", name)
        [container] = pod_spec(deployment)["containers"]
        env = environment(container, overlay, _operator_secret)
        assert env.get("ENVIRONMENT") == "production", f"{name}: ENVIRONMENT is {env.get('ENVIRONMENT')!r}"
        # The files the volumes hold, where this test keeps them.
        for mount in container.get("volumeMounts", []):
            [volume] = [v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"]]
            source = (volume.get("configMap") or {}).get("name") or (volume.get("secret") or {}).get("secretName")
            if source is not None:
                env = {key: value.replace(mount["mountPath"], str(files / source)) for key, value in env.items()}
        with mock.patch.dict(os.environ, env, clear=True):
            settings()  # raises, naming each setting refused or missing


def _operator_secret(name: str, key: str, optional: bool) -> str | None:
    """A strong random value for each Secret key the manifests need, as docs/production.md has the operator make."""
    return secrets.token_urlsafe(32) if not optional or (name, key) in OPERATOR_CHOICES else None


def _operator_files(folder: Path) -> Path:
    """The catalogue ConfigMap and the API keys Secret as docs/production.md has the operator create them."""
    (folder / "pipeline-catalogue").mkdir()
    (folder / "pipeline-catalogue" / "catalogue.toml").write_text((ROOT / "infra" / "catalogue.toml").read_text())
    (folder / "pipeline-api-keys").mkdir()
    _, entry = mint("reports-service", frozenset({"start", "read"}))
    (folder / "pipeline-api-keys" / "api-keys.toml").write_text(entry.as_toml() + "\n")
    return folder


def test_the_database_job_makes_the_roles_the_services_log_in_with(overlay: tuple[dict[str, Any], ...]) -> None:
    job = named(overlay, "Job", "resonate-pg-apply")
    [container] = pod_spec(job)["containers"]
    assert container["args"] == ["apply"]
    env = {entry["name"]: entry for entry in container["env"]}
    roles = {}
    for name in SERVICES:
        [service] = pod_spec(named(overlay, "Deployment", name))["containers"]
        service_env = {entry["name"]: entry for entry in service["env"]}
        role = re.match(r"postgresql://(\w+)@", service_env["RESONATE_DATABASE_URL"]["value"])
        assert role is not None, name
        roles[name] = role.group(1)
        # The Job sets the very password the service logs in with.
        assert (
            env[f"RESONATE_PG_PASSWORD_{role.group(1)}"]["valueFrom"]
            == service_env["RESONATE_DATABASE_PASSWORD"]["valueFrom"]
        )
        assert {"configMapRef": {"name": _database_map(overlay)}} in service["envFrom"]
    assert env["RESONATE_PG_LOGINS"]["value"].split() == list(roles.values())
    assert env["RESONATE_PG_INDEX_LOGINS"]["value"].split() == [roles["pipeline-api"]]
    assert env["RESONATE_PG_WATCHDOG_LOGINS"]["value"].split() == [roles["pipeline-worker"]]
    # docs/production.md applies the Job first, with the settings it reads, by this label.
    first = [item for item in overlay if item["metadata"].get("labels", {}).get("resonate-databricks/apply") == "first"]
    assert [item for item in first if item["kind"] != "ConfigMap"] == [job]
    read = {source["configMapRef"]["name"] for source in container["envFrom"] if "configMapRef" in source}
    assert read <= {item["metadata"]["name"] for item in first}, "the Job reads a ConfigMap not applied before it"


def _database_map(objects: tuple[dict[str, Any], ...]) -> str:
    [name] = [item["metadata"]["name"] for item in of_kind(objects, "ConfigMap") if "PGHOST" in item.get("data", {})]
    return name


def test_production_keeps_every_service_up_through_upgrades_and_drains(production: tuple[dict[str, Any], ...]) -> None:
    autoscaled = {
        item["spec"]["scaleTargetRef"]["name"]: item["spec"] for item in of_kind(production, "HorizontalPodAutoscaler")
    }
    assert "pipeline-worker" in autoscaled, "production scales its workers"
    budgets = of_kind(production, "PodDisruptionBudget")
    for deployment in of_kind(production, "Deployment"):
        name = deployment["metadata"]["name"]
        if name in autoscaled:
            # The autoscaler owns the count: a replicas field would reset it at each apply.
            assert "replicas" not in deployment["spec"] and autoscaled[name]["minReplicas"] >= 2, name
        else:
            assert deployment["spec"].get("replicas", 1) >= 2, name
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name
        covering = [budget for budget in budgets if selects(budget["spec"]["selector"]["matchLabels"], deployment)]
        assert len(covering) == 1 and covering[0]["spec"].get("maxUnavailable") == 1, name


def test_every_image_is_one_compose_builds(overlay: tuple[dict[str, Any], ...]) -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    built = {f"{compose['name']}-{service}" for service in ("api", "worker", "notifier", "resonate")}
    for item, _, container in containers(overlay):
        # An overlay retags them (kustomize images:) for the operator's registry and version.
        repository = container["image"].rsplit("/", 1)[-1].split(":")[0].split("@")[0]
        assert repository in built, f"{item['metadata']['name']}: {container['image']} is not an image compose builds"


#: What kustomize v2.0.3 (Debian 12's kubectl 1.20) reads of a kustomization; it ignores any other
#: field without a word (`patches`, `replicas`, `components`...), so an overlay using one renders
#: differently there (infra/k8s/README.md).
KUSTOMIZE_V2_FIELDS = {
    "apiVersion", "kind", "bases", "resources", "patchesStrategicMerge", "patchesJson6902", "images",
    "configMapGenerator", "secretGenerator", "generatorOptions", "namePrefix", "nameSuffix", "namespace",
    "commonLabels", "commonAnnotations", "vars", "crds",
}  # fmt: skip
KUSTOMIZE_V2_GENERATOR_FIELDS = {"name", "behavior", "env", "files", "literals"}


@pytest.mark.parametrize(
    "kustomization",
    sorted(K8S.rglob("kustomization.yaml")),
    ids=lambda path: path.parent.relative_to(ROOT).as_posix(),
)
def test_every_kustomization_reads_the_same_in_kustomize_v2(kustomization: Path) -> None:
    fields = yaml.safe_load(kustomization.read_text())
    assert set(fields) <= KUSTOMIZE_V2_FIELDS, f"kustomize v2 ignores {set(fields) - KUSTOMIZE_V2_FIELDS}"
    for resource in fields.get("resources", []):
        # v2 loads a folder only from bases.
        assert (kustomization.parent / resource).is_file(), f"{resource}: a folder goes in bases"
    for generator in fields.get("configMapGenerator", []) + fields.get("secretGenerator", []):
        assert set(generator) <= KUSTOMIZE_V2_GENERATOR_FIELDS, generator
