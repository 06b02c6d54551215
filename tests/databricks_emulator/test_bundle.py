"""The bundle in infra/databricks, checked without a workspace.

No workspace is reachable here, so ``databricks bundle validate`` cannot run.
Instead every job definition (the base one and each target's override) is
loaded with ``databricks-bundles``, Databricks' own generated models of bundle
resources, which refuse unknown fields, wrong types and unknown enum values.
The rest of the file is checked against the bundle's documented top-level and
target keys, the pipeline job against the callback contract the worker and the
notebook share, and the whole file against what the emulator, which serves
these jobs, makes of it.
"""

from __future__ import annotations

import re

import pytest
import yaml
from databricks.bundles.jobs import Job

from databricks_emulator.bundle import load_bundle
from pipeline_shared.catalogue import PIPELINE_PARAMETERS, Catalogue, Completion
from tests.support.emulator_process import NOTEBOOK, REPO_ROOT

BUNDLE = REPO_ROOT / "infra" / "databricks" / "databricks.yml"
CATALOGUE = REPO_ROOT / "infra" / "catalogue.toml"
#: The top-level mappings of databricks.yml, from the bundle configuration reference.
TOP_LEVEL_KEYS = {
    "artifacts", "bundle", "experimental", "include", "permissions", "presets", "python",
    "resources", "run_as", "scripts", "sync", "targets", "variables", "workspace",
}  # fmt: skip
#: What a target may set, from the same reference.
TARGET_KEYS = {
    "artifacts", "bundle", "cluster_id", "compute_id", "default", "git", "mode", "permissions",
    "presets", "resources", "run_as", "sync", "variables", "workspace",
}  # fmt: skip


@pytest.fixture(scope="module")
def bundle() -> dict:
    return yaml.safe_load(BUNDLE.read_text())


def test_bundle_uses_only_known_mappings(bundle):
    assert set(bundle) <= TOP_LEVEL_KEYS, set(bundle) - TOP_LEVEL_KEYS
    assert bundle["bundle"]["name"]
    assert bundle["targets"], "a bundle needs at least one target"
    assert sum(1 for target in bundle["targets"].values() if target.get("default")) == 1
    for name, target in bundle["targets"].items():
        assert set(target) <= TARGET_KEYS, (name, set(target) - TARGET_KEYS)
        assert target.get("mode") in ("development", "production"), name


def test_every_job_definition_is_valid_for_databricks(bundle):
    definitions = list(bundle["resources"]["jobs"].values()) + [
        job for target in bundle["targets"].values() for job in target.get("resources", {}).get("jobs", {}).values()
    ]
    for definition in definitions:
        Job.from_dict(definition)  # raises on any field or value Databricks does not define


def _jobs_by_name(bundle: dict) -> dict[str, Job]:
    return {job["name"]: Job.from_dict(job) for job in bundle["resources"]["jobs"].values()}


def test_the_bundle_and_the_catalogue_describe_the_same_jobs(bundle):
    """Each catalogue entry names a job the bundle deploys, with the same parameters and defaults.

    A job that calls back also declares the pipeline's own inputs (empty by
    default); the catalogue's required parameters have an empty default in
    the bundle, since a Databricks job parameter always has one.
    """
    deployed = _jobs_by_name(bundle)
    variables = {name: spec["default"] for name, spec in bundle["variables"].items()}
    catalogue = Catalogue.load(CATALOGUE)
    for entry in catalogue.jobs.values():
        assert entry.databricks_job_name in deployed, f"{entry.name}: the bundle deploys no {entry.databricks_job}"
        job = deployed[entry.databricks_job_name]
        expected = {name: parameter.default or "" for name, parameter in entry.parameters.items()}
        if entry.completion is Completion.CALLBACK:
            expected |= dict.fromkeys(PIPELINE_PARAMETERS, "")
        assert {p.name: p.default for p in job.parameters} == expected, entry.name
        assert job.queue.enabled is True and int(_resolve(job.max_concurrent_runs, variables)) >= 500
        assert int(_resolve(job.timeout_seconds, variables)) > 0
        task_keys = [task.task_key for task in job.tasks]
        if entry.result_task is not None:
            assert entry.result_task in task_keys, entry.name
        else:
            assert len(task_keys) == 1, f"{entry.name}: a multi-task job needs a result_task"
        notifies = bool(job.webhook_notifications and job.webhook_notifications.on_success)
        assert notifies == (entry.completion is Completion.NOTIFICATION), f"{entry.name}: completion vs notifications"
        for task in job.tasks:
            assert task.max_retries in (None, 0), f"{entry.name}.{task.task_key}: the service repairs, not Databricks"
            path = task.notebook_task.notebook_path if task.notebook_task else None
            path = path or (task.sql_task.file.path if task.sql_task and task.sql_task.file else None)
            if path is not None:
                source = (BUNDLE.parent / path).resolve()
                assert source.is_file(), f"{entry.name}.{task.task_key}: {path} is not in the repository"
                synced = [(BUNDLE.parent / p).resolve() for p in bundle["sync"]["paths"]]
                assert any(source.is_relative_to(folder) for folder in synced), f"{path} must be synced"
    assert set(deployed) == {entry.databricks_job_name for entry in catalogue.jobs.values()}, (
        "every job the bundle deploys is in the catalogue"
    )


def test_every_pipeline_runs_jobs_the_bundle_deploys(bundle):
    """A pipeline's steps are catalogue jobs the bundle deploys; a job no client starts alone is some pipeline's."""
    deployed = _jobs_by_name(bundle)
    catalogue = Catalogue.load(CATALOGUE)
    assert catalogue.pipelines, "the catalogue lists pipelines of several jobs"
    for pipeline in catalogue.pipelines.values():
        for name in pipeline.jobs:
            assert catalogue.job(name).databricks_job_name in deployed, f"{pipeline.name}: {name} is not deployed"
    listed = {name for pipeline in catalogue.pipelines.values() for name in pipeline.jobs}
    steps_only = {name for name, job in catalogue.jobs.items() if not job.standalone}
    assert steps_only <= listed, f"no pipeline runs {sorted(steps_only - listed)}, and no client may start them"


def test_the_callback_helper_is_deployed_beside_the_notebooks(bundle):
    synced = [(BUNDLE.parent / p).resolve() for p in bundle["sync"]["paths"]]
    helper = (REPO_ROOT / "notebooks" / "pipeline_callback.py").resolve()
    assert any(helper.is_relative_to(folder) for folder in synced)


def test_the_emulator_serves_every_job_of_the_bundle(bundle):
    served = load_bundle(BUNDLE, variables={}, first_job_id=1001, created_time=0)

    assert [job.resource_key for job in served.jobs] == list(bundle["resources"]["jobs"])
    assert [job.job_id for job in served.jobs] == list(range(1001, 1001 + len(served.jobs)))
    assert served.jobs[0].name == "Resonate pipeline", "DATABRICKS_JOB_ID=1001 still names the pipeline"
    assert served.ignored == (), "every setting the bundle gives is one the emulator shows or acts on"
    for job in served.jobs:
        definition = bundle["resources"]["jobs"][job.resource_key]
        assert job.name == definition["name"]
        assert list(job.parameters) == [p["name"] for p in definition.get("parameters", [])]
        assert job.task_keys == tuple(task["task_key"] for task in definition["tasks"])
    pipeline = served.jobs[0]
    assert pipeline.tasks[0].local_file == NOTEBOOK.resolve()


def test_every_variable_used_is_declared(bundle):
    used = set(re.findall(r"\$\{var\.([A-Za-z0-9_]+)\}", BUNDLE.read_text()))
    assert used <= set(bundle["variables"]), used - set(bundle["variables"])
    for name, spec in bundle["variables"].items():
        assert spec.get("description"), f"variable {name} needs a description"


def _resolve(value: object, variables: dict) -> object:
    match = re.fullmatch(r"\$\{var\.(\w+)\}", str(value))
    return variables[match.group(1)] if match else value


def test_readme_names_the_worker_settings():
    readme = (BUNDLE.parent / "README.md").read_text()
    for setting in (
        "DATABRICKS_HOST",
        "DATABRICKS_TOKEN",
        "JOB_CATALOGUE_FILE",
        "GATEWAY_CALLBACK_URL",
    ):
        assert setting in readme
    assert "databricks bundle deploy" in readme
