"""What the emulator makes of a bundle file: variables, references, paths, and clear refusals.

Most of this reads small bundles in-process with ``load_bundle``; the start-up
behaviour (the default bundle path, a bundle that cannot be served, notebooks
not written yet) is checked on real emulator processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from databricks_emulator.bundle import BundleError, load_bundle
from tests.support.emulator_process import REPO_ROOT, TEST_BUNDLE, start_emulator, stop_emulator

NOTEBOOK = "# Databricks notebook source\nprint('hello')\n"


def write(tmp_path: Path, jobs: str, variables: str = "", extra: str = "") -> Path:
    """A bundle named ``b`` with these ``resources.jobs`` (and variables), and a notebook ``nb.py``."""
    (tmp_path / "nb.py").write_text(NOTEBOOK)
    bundle = tmp_path / "databricks.yml"
    bundle.write_text(
        "bundle:\n  name: b\n"
        + (f"variables:\n{textwrap.indent(textwrap.dedent(variables), '  ')}" if variables else "")
        + extra
        + f"resources:\n  jobs:\n{textwrap.indent(textwrap.dedent(jobs), '    ')}"
    )
    return bundle


def load(path: Path, **variables: object):  # type: ignore[no-untyped-def]
    return load_bundle(path, variables=variables, first_job_id=10, created_time=0)


ONE_JOB = """\
job:
  name: One
  tasks:
    - task_key: t
      notebook_task: {notebook_path: nb}
"""


def test_variables_resolve_to_their_defaults_or_overrides_keeping_their_type(tmp_path):
    path = write(
        tmp_path,
        """\
        job:
          name: ${var.prefix} job of ${bundle.name}
          max_concurrent_runs: ${var.limit}
          tags: {target: "${bundle.target}", flag: "on-${var.flag}"}
          tasks:
            - task_key: t
              notebook_task: {notebook_path: nb}
        """,
        variables="""\
        prefix: {default: My}
        limit: {default: 3}
        flag: {default: true}
        """,
    )

    [job] = load(path).jobs
    assert (job.name, job.max_concurrent_runs, job.extra_settings["tags"]) == (
        "My job of b",
        3,
        {"target": "default", "flag": "on-true"},
    )
    [overridden] = load(path, limit=7, prefix="Your").jobs
    assert (overridden.name, overridden.max_concurrent_runs) == ("Your job of b", 7)


def test_a_notebook_path_may_leave_out_py_and_missing_files_are_reported_not_refused(tmp_path):
    path = write(
        tmp_path,
        """\
        job:
          tasks:
            - task_key: with_py
              notebook_task: {notebook_path: nb.py}
            - task_key: without_py
              notebook_task: {notebook_path: nb}
            - task_key: later
              notebook_task: {notebook_path: sub/later}
        """,
    )

    bundle = load(path)

    with_py, without_py, _later = bundle.jobs[0].tasks
    assert with_py.local_file == without_py.local_file == (tmp_path / "nb.py").resolve()
    assert without_py.settings["notebook_task"]["notebook_path"].endswith("/.bundle/b/default/files/nb")
    assert bundle.jobs[0].name == "Untitled" and (bundle.jobs[0].job_id, bundle.jobs[0].queue_enabled) == (10, True)
    [missing] = bundle.missing_files
    assert "tasks[later]" in missing and missing.endswith("sub/later.py")


def test_settings_the_emulator_neither_shows_nor_acts_on_are_named(tmp_path):
    path = write(tmp_path, ONE_JOB.replace("name: One", "name: One\n  schedule: {quartz_cron_expression: x}"))
    assert load(path).ignored == ("resources.jobs.job.schedule",)


@pytest.mark.parametrize(
    ("jobs", "variables", "overrides", "words"),
    [
        (ONE_JOB.replace("One", "${var.nope}"), "", {}, "${var.nope}: the variable is not declared"),
        (ONE_JOB.replace("One", "${var.empty}"), "empty: {description: no default}\n", {}, "has no default"),
        (ONE_JOB.replace("One", "${workspace.file_path}"), "", {}, "not a reference the emulator resolves"),
        (ONE_JOB, "", {"other": 1}, "BUNDLE_VARIABLES sets other, which"),
        (ONE_JOB.replace("name: One", "name: One\n  max_concurrent_runs: 1001"), "", {}, "from 0 to 1000"),
        (ONE_JOB.replace("name: One", "name: One\n  timeout_seconds: soon"), "", {}, "whole number"),
        (
            ONE_JOB.replace("notebook_task: {notebook_path: nb}", "condition_task: {op: EQUAL_TO}"),
            "",
            {},
            "exactly one task type the emulator models",
        ),
        (ONE_JOB.replace("nb}", "nb.ipynb}"), "", {}, "Python source-format notebooks (.py) only"),
        (ONE_JOB.replace("nb}", "/Workspace/Users/x/nb}"), "", {}, "is a workspace path"),
        (ONE_JOB.replace("- task_key: t", "- task_key: t\n      run_if: SOMETIMES"), "", {}, "run_if must be one of"),
        (
            ONE_JOB.replace("- task_key: t", "- task_key: t\n      depends_on: [{task_key: u}]"),
            "",
            {},
            "depends_on names u, which the job has no task for",
        ),
        (
            ONE_JOB.replace("- task_key: t", "- task_key: t\n      depends_on: [{task_key: t}]"),
            "",
            {},
            "in a cycle: t -> t",
        ),
        (ONE_JOB.replace("task_key: t", "task_key: 'a b'"), "", {}, "task_key must be 1 to 100 letters"),
        (ONE_JOB + "  parameters: [{name: p}]\n", "", {}, "default is required"),
        (ONE_JOB + "  webhook_notifications: {on_lunch: [{id: x}]}\n", "", {}, "on_lunch is no webhook event"),
        ("{}", "", {}, "resources.jobs holds no job"),
    ],
)
def test_what_the_emulator_cannot_serve_is_refused_naming_the_place(tmp_path, jobs, variables, overrides, words):
    path = write(tmp_path, jobs, variables)
    with pytest.raises(BundleError) as refused:
        load(path, **overrides)
    assert words in str(refused.value)


def test_a_file_that_is_no_bundle_is_refused(tmp_path):
    for text, words in (
        ("{not yaml", "not valid YAML"),
        ("- a list", "must be a mapping"),
        ("bundle: {}", "bundle.name"),
    ):
        (tmp_path / "databricks.yml").write_text(text)
        with pytest.raises(BundleError, match=words):
            load(tmp_path / "databricks.yml")
    with pytest.raises(BundleError, match="cannot read the bundle"):
        load(tmp_path / "absent.yml")


def run_emulator(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Start an emulator that is expected to refuse to start; its exit status and output."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DATABRICKS_EMULATOR_")}
    return subprocess.run(
        [sys.executable, "-m", "databricks_emulator"],
        env={**environment, **env, "DATABRICKS_EMULATOR_PORT": "1"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bundle_that_cannot_be_served_stops_the_emulator_with_its_reason(tmp_path):
    path = write(tmp_path, ONE_JOB.replace("nb}", "nb.ipynb}"))
    finished = run_emulator(tmp_path, DATABRICKS_EMULATOR_BUNDLE=str(path))
    assert finished.returncode == 2
    assert "cannot serve the bundle (DATABRICKS_EMULATOR_BUNDLE)" in finished.stderr and ".ipynb" in finished.stderr


def test_required_notebooks_must_exist_at_start(tmp_path):
    finished = run_emulator(
        tmp_path, DATABRICKS_EMULATOR_BUNDLE=str(TEST_BUNDLE), DATABRICKS_EMULATOR_REQUIRE_NOTEBOOKS="true"
    )
    assert finished.returncode == 2
    assert "REQUIRE_NOTEBOOKS is set" in finished.stderr and "not_written_yet.py" in finished.stderr


def test_the_retired_notebook_setting_is_refused_naming_its_replacement(tmp_path):
    finished = run_emulator(tmp_path, DATABRICKS_EMULATOR_NOTEBOOK_PATH="notebooks/pipeline.py")
    assert finished.returncode == 2 and "DATABRICKS_EMULATOR_BUNDLE" in finished.stderr


def test_by_default_the_emulator_serves_the_projects_bundle_from_the_working_directory(tmp_path):
    # As in the image: the working directory holds infra/databricks/databricks.yml and notebooks/.
    emulator = start_emulator(tmp_path, cwd=REPO_ROOT, bundle=None, DATABRICKS_EMULATOR_JOB_ID="1001")
    try:
        jobs = emulator.client().jobs
        assert jobs.get(1001).settings.name == "Resonate pipeline"
        assert [job.settings.name for job in jobs.list(name="Customer report")] == ["Customer report"]
        health = httpx.get(f"{emulator.url}/healthz", timeout=10).json()
        assert list(health["jobs"].values()) == [
            "Resonate pipeline",
            "Word frequencies",
            "Nightly refresh",
            "Customer report",
            "Onboarding ingest",
            "Onboarding risk score",
            "Onboarding report",
        ]
        assert list(health["jobs"]) == ["1001", "1002", "1003", "1004", "1005", "1006", "1007"]
    finally:
        stop_emulator(emulator)
