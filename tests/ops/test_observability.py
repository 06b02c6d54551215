"""The operators' dashboard and alerts (infra/observability), checked without the stack.

promtool, from Debian's prometheus package, checks the alerting rules, runs
their unit tests (alerts.test.yml) and checks the scrape config. The
dashboard's queries go through the same parser, written as recording rules
into a rules file of their own. Every metric, label and label value the
dashboard and the alerts use must be one the services' metrics modules
export, so that a renamed metric fails here instead of leaving a panel empty
and an alert silent. Last, a real Prometheus runs prometheus.yml against the
three services' real metrics, served on loopback: `job` must reach it as the
Databricks job, every rule must evaluate and every panel's query must run.

The binaries are not optional: a missing one fails the test and says how to
install it, as a missing Docker fails the integration tests.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, MetricsHandler
from prometheus_client.metrics import MetricWrapperBase

from pipeline_api import metrics as api_metrics
from pipeline_api.app import create_app
from pipeline_api.settings import GatewaySettings
from pipeline_notifier import metrics as notifier_metrics
from pipeline_shared import errors
from pipeline_shared.ops import ops_app
from pipeline_worker import metrics as worker_metrics
from tests.support import promql

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "infra" / "observability"
ALERTS = OBSERVABILITY / "prometheus" / "alerts.yml"
ALERT_TESTS = OBSERVABILITY / "prometheus" / "alerts.test.yml"
SCRAPE_CONFIG = OBSERVABILITY / "prometheus" / "prometheus.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "pipelines-dashboard.json"
PROVISIONING = OBSERVABILITY / "grafana" / "provisioning"

#: Each scrape job of prometheus.yml (named as the compose service), and the
#: metrics module of that service.
SERVICE_METRICS: dict[str, ModuleType] = {"api": api_metrics, "worker": worker_metrics, "notifier": notifier_metrics}
#: Series Prometheus makes itself for every target, with their labels.
PROMETHEUS_SERIES = {"up": frozenset({"job", "instance"})}
#: The series a metric family exports, by type, with the labels a suffix adds.
SERIES_SUFFIXES: dict[str, tuple[tuple[str, frozenset[str]], ...]] = {
    "counter": (("_total", frozenset()), ("_created", frozenset())),
    "gauge": (("", frozenset()),),
    "histogram": (
        ("_bucket", frozenset({"le"})),
        ("_count", frozenset()),
        ("_sum", frozenset()),
        ("_created", frozenset()),
    ),
}
#: Grafana's own variables, as they expand for a dashboard over 6 hours at
#: the data source's 15 s scrape interval.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__range": "6h", "__interval": "15s"}
#: What a query variable stands for in a checked expression: "All" (allValue).
QUERY_VARIABLE_VALUE = ".*"

#: Enough for the gateway to serve /metrics: it never connects to this
#: database nor checks a callback. (Not tests.support's, whose import brings
#: databricks-sdk and takes seconds.)
GATEWAY_SETTINGS = {
    "RESONATE_DATABASE_URL": "postgresql://unused@unused.invalid/resonate",
    "CALLBACK_SIGNING_SECRET": "ops-test-secret-ops-test-secret-0000",
}

INSTALL_HINT = (
    "install Debian's prometheus package, which provides both promtool and prometheus: "
    "apt-get install -y --no-install-recommends prometheus (.ci/run does it when promtool is missing)"
)


# ── reading the files ────────────────────────────────────────────────────────


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def scrape_jobs() -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in yaml.safe_load(SCRAPE_CONFIG.read_text())["scrape_configs"]}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def expand_variables(expr: str, board: dict[str, Any]) -> str:
    """``expr`` with the dashboard's and Grafana's variables replaced by values they may take."""
    values = GRAFANA_VARIABLES | {
        variable["name"]: QUERY_VARIABLE_VALUE
        for variable in board["templating"]["list"]
        if variable["type"] == "query"
    }

    def value_of(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"the dashboard uses ${name}, which is neither its variable nor Grafana's: {expr!r}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value_of, expr)


def dashboard_queries(board: dict[str, Any]) -> dict[str, str]:
    """Each panel target's expression, variables expanded, by where it is."""
    return {
        f"panel {panel['id']} ({panel['title']}) target {target['refId']}": expand_variables(target["expr"], board)
        for panel in panels(board)
        for target in panel.get("targets", [])
    }


def every_expression() -> dict[str, str]:
    """Every PromQL expression of the alerts and the dashboard, by where it is."""
    return {f"alert {rule['alert']}": rule["expr"] for rule in alert_rules()} | dashboard_queries(dashboard())


def variable_queries(board: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Each ``label_values(metric, label)`` query variable: its metric and label."""
    found = {}
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
            assert match, f"variable {variable['name']}: not a label_values(metric, label) query"
            found[f"variable {variable['name']}"] = (match.group(1), match.group(2))
    return found


# ── what the services export ─────────────────────────────────────────────────


def collectors(module: ModuleType) -> list[MetricWrapperBase]:
    return [value for value in vars(module).values() if isinstance(value, MetricWrapperBase)]


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name the services export, with its label names.

    A counter ``x`` is exported as ``x_total`` (and ``x_created``), a
    histogram as ``x_bucket`` (with ``le``), ``x_count`` and ``x_sum``. Read
    from each service's metrics module: those are what its /metrics serves.
    """
    series = dict(PROMETHEUS_SERIES)
    for module in SERVICE_METRICS.values():
        for collector in collectors(module):
            # prometheus_client keeps label names only here; describe() gives name and type.
            labels = frozenset(collector._labelnames)
            for family in collector.describe():
                for suffix, extra in SERIES_SUFFIXES[family.type]:
                    series[family.name + suffix] = labels | extra
    return series


def known_label_values() -> dict[tuple[str, str], frozenset[str]]:
    """Label values an expression may match exactly, where the code says which exist."""

    def error_classes(cls: type[errors.PipelineError]) -> Iterator[type[errors.PipelineError]]:
        yield cls
        for subclass in cls.__subclasses__():
            yield from error_classes(subclass)

    return {
        # The gateway counts a refused callback under the code of its error
        # (and an oversized body as body_too_large, the body limit's own code,
        # which no expression matches).
        ("callback_rejections_total", "reason"): frozenset(error.code for error in error_classes(errors.PipelineError)),
        # Exported from the start, every reason (pipeline_notifier.metrics).
        ("emails_failed_total", "reason"): frozenset(
            sample.labels["reason"] for sample in notifier_metrics.EMAILS_FAILED.collect()[0].samples
        ),
    }


# ── promtool and prometheus ──────────────────────────────────────────────────


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; {INSTALL_HINT}", pytrace=False)
    return path


def promtool(*args: str | Path) -> str:
    command = [binary("promtool"), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout + result.stderr


# ── the alerts ───────────────────────────────────────────────────────────────


def test_the_alerting_rules_pass_promtool_check() -> None:
    assert f"SUCCESS: {len(alert_rules())} rules found" in promtool("check", "rules", ALERTS)


def test_each_alert_fires_and_stays_silent_as_its_unit_tests_expect() -> None:
    assert "SUCCESS" in promtool("test", "rules", ALERT_TESTS)


def test_each_alert_is_tested_both_firing_and_silent() -> None:
    cases = [case for group in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for case in group["alert_rule_test"]]
    for rule in alert_rules():
        outcomes = {bool(case.get("exp_alerts")) for case in cases if case["alertname"] == rule["alert"]}
        assert outcomes == {True, False}, f"{rule['alert']} is not tested both firing and silent"


def test_each_alert_waits_says_how_serious_and_what_to_do() -> None:
    for rule in alert_rules():
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), f"{rule['alert']}: no for: duration"
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_the_readme_lists_every_alert_with_its_severity() -> None:
    """Issue 20, finding 10: README's table of alerts listed 8 of the 9 (the table is now in docs/operations.md)."""
    readme = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    table = readme.split("| alert | severity |", 1)[1].split("\n\n", 1)[0]
    listed = dict(re.findall(r"^\| `(\w+)` \| (\w+) \|", table, flags=re.MULTILINE))
    assert listed == {rule["alert"]: rule["labels"]["severity"] for rule in alert_rules()}


# ── the scrape config ────────────────────────────────────────────────────────


def test_the_scrape_config_passes_promtool_check() -> None:
    # Also checks the rule files it loads: alerts.yml, found beside it.
    assert "SUCCESS" in promtool("check", "config", SCRAPE_CONFIG)


def test_the_scrape_config_reaches_each_service_where_compose_serves_its_metrics() -> None:
    jobs = scrape_jobs()
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert jobs.keys() == SERVICE_METRICS.keys()
    for name, job in jobs.items():
        [target] = [target for config in job["static_configs"] for target in config["targets"]]
        host, port = target.split(":")
        published = {entry.rsplit(":", 1)[1] for entry in compose[name]["ports"]}
        assert host == name and port in published, f"{name}: {target} is not a port compose publishes for it"
        assert port != compose[name]["environment"].get("CALLBACK_PORT"), f"{name}: the public callback listener"
        # The services' metrics carry the Databricks job as `job`; without
        # this, Prometheus would rename it to exported_job.
        assert job.get("honor_labels") is True, f"{name}: honor_labels"


async def test_each_service_serves_its_metrics_at_the_scrape_path() -> None:
    async def never_ready() -> str:
        return "not under test"

    gateway = create_app(GatewaySettings(**GATEWAY_SETTINGS))
    apps = {"api": gateway, "worker": ops_app("worker", never_ready), "notifier": ops_app("notifier", never_ready)}
    for name, app in apps.items():
        path = scrape_jobs()[name]["metrics_path"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
            response = await client.get(path)
        assert response.status_code == 200, f"{name}: {path} answers {response.status_code}"
        for collector in collectors(SERVICE_METRICS[name]):
            assert f"# TYPE {collector.describe()[0].name}" in response.text, f"{name}: {collector} not served"


# ── the dashboard ────────────────────────────────────────────────────────────


def test_the_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus() -> None:
    board = dashboard()
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {sorted(ids)}"
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 39
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert (variables["DS_PROMETHEUS"]["type"], variables["DS_PROMETHEUS"]["query"]) == ("datasource", "prometheus")
    assert variables["job"]["definition"] == "label_values(pipelines_started_total, job)"
    chosen = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == chosen, f"panel {panel['id']}: not on the chosen data source"
        assert panel["targets"] and all(target["datasource"] == chosen for target in panel["targets"]), panel["id"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['id']} is wider than the dashboard"


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_queries(dashboard())
    rules = [
        {"record": f"dashboard:query_{index}", "expr": expr, "labels": {"where": where}}
        for index, (where, expr) in enumerate(queries.items())
    ]
    rules_file = tmp_path / "dashboard-queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", rules_file)


def test_every_metric_label_and_value_used_is_one_the_services_export() -> None:
    series = exported_series()
    values = known_label_values()
    problems = []
    for where, (metric, label) in variable_queries(dashboard()).items():
        if label not in series.get(metric, ()):
            problems.append(f"{where}: {metric} has no label {label}")
    for where, expr in every_expression().items():
        reading = promql.read(expr)
        for selector in reading.selectors:
            if selector.metric not in series:
                problems.append(f"{where}: no service exports {selector.metric}")
                continue
            for label, (operator, value) in selector.matchers.items():
                if label not in series[selector.metric]:
                    problems.append(f"{where}: {selector.metric} has no label {label}")
                elif operator == "=" and value not in values.get((selector.metric, label), {value}):
                    problems.append(f'{where}: {selector.metric} never has {label}="{value}"')
        for grouping in reading.groupings:
            for metric in grouping.metrics & series.keys():
                if missing := grouping.labels - series[metric]:
                    problems.append(f"{where}: grouped by {sorted(missing)}, which {metric} does not have")
    assert not problems, "\n".join(problems)


def test_every_metric_the_services_export_is_on_the_dashboard() -> None:
    used = set().union(*(promql.read(expr).metrics for expr in dashboard_queries(dashboard()).values()))
    for name, module in SERVICE_METRICS.items():
        for collector in collectors(module):
            family = collector.describe()[0]
            shown = {family.name + suffix for suffix, _ in SERIES_SUFFIXES[family.type]} & used
            assert shown, f"{name}'s {family.name} is on no panel"


def test_the_grafana_provisioning_loads_a_prometheus_and_this_dashboard() -> None:
    [source] = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert (source["type"], source["access"], source["isDefault"]) == ("prometheus", "proxy", True)
    [provider] = yaml.safe_load((PROVISIONING / "dashboards" / "pipelines.yml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


# ── a real Prometheus ────────────────────────────────────────────────────────


@contextlib.contextmanager
def serve_metrics(module: ModuleType) -> Iterator[str]:
    """A service's metrics, from its own module's collectors, on a loopback port; yields host:port."""
    registry = CollectorRegistry()
    for collector in collectors(module):
        registry.register(collector)
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler.factory(registry))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def loopback_config(targets: dict[str, str]) -> dict[str, Any]:
    """prometheus.yml as committed, but scraping ``targets`` by job every second, with its rules found by path."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(SCRAPE_CONFIG.parent / path) for path in config["rule_files"]]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    return config


class Prometheus:
    def __init__(self, client: httpx.Client, log: Path) -> None:
        self.client = client
        self.log = log

    def api(self, path: str, **params: str) -> Any:
        answer = self.client.get(f"/api/v1/{path}", params=params).json()
        assert answer["status"] == "success", f"{path} {params}: {answer.get('error')}"
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def wait_for[T](self, what: str, read: Callable[[], T | None], timeout: float = 30) -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (found := read()) is not None:
                    return found
            time.sleep(0.2)
        pytest.fail(f"Prometheus: no {what} within {timeout} s; its log:\n{self.log.read_text()[-3000:]}")


@contextlib.contextmanager
def run_prometheus(config: dict[str, Any], workdir: Path) -> Iterator[Prometheus]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config_file, log = workdir / "prometheus.yml", workdir / "prometheus.log"
    config_file.write_text(yaml.safe_dump(config))
    command = [
        binary("prometheus"),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
                prometheus = Prometheus(client, log)
                # Its API answers 503 until the storage is open: queries wait for /-/ready.
                prometheus.wait_for("readiness", lambda: True if client.get("/-/ready").status_code == 200 else None)
                yield prometheus
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_a_real_prometheus_with_this_config_keeps_the_job_label_and_runs_every_rule_and_query(
    tmp_path: Path,
) -> None:
    # A job of its own, so that the counters other tests of this process
    # moved do not matter.
    job = f"ops-test-{uuid.uuid4().hex[:8]}"
    api_metrics.PIPELINES_STARTED.labels(job=job).inc()
    worker_metrics.PIPELINES_FINISHED.labels(state="succeeded", job=job).inc()
    worker_metrics.PIPELINE_OVERDUE_CHECKS.labels(job=job).inc()
    rule_count = len(alert_rules())
    with contextlib.ExitStack() as stack:
        targets = {name: stack.enter_context(serve_metrics(module)) for name, module in SERVICE_METRICS.items()}
        prometheus = stack.enter_context(run_prometheus(loopback_config(targets), tmp_path))

        def scraped() -> list[dict[str, Any]] | None:
            up = prometheus.query("up")
            return up if len(up) == len(targets) else None

        up = prometheus.wait_for("scrape of every service", scraped)
        assert {(s["metric"]["job"], s["value"][1]) for s in up} == {(name, "1") for name in targets}

        # `job` is the Databricks job, as the dashboard's variable and the alerts read it.
        names = {s["metric"]["__name__"] for s in prometheus.query(f'{{job="{job}"}}')}
        assert {"pipelines_started_total", "pipelines_finished_total", "pipeline_overdue_checks_total"} <= names
        assert prometheus.query('{exported_job!=""}') == []

        def evaluated_rules() -> list[dict[str, Any]] | None:
            rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
            return rules if len(rules) == rule_count and all(rule["health"] != "unknown" for rule in rules) else None

        for rule in prometheus.wait_for("evaluation of every alerting rule", evaluated_rules):
            assert (rule["name"], rule["health"], rule.get("lastError", "")) == (rule["name"], "ok", "")

        for where, expr in dashboard_queries(dashboard()).items():
            try:
                prometheus.query(expr)
            except AssertionError as exc:
                pytest.fail(f"{where}: {exc}")
