"""What a notebook's process is given by the emulator: the driver's configuration, never the emulator's secrets."""

from __future__ import annotations

from databricks_emulator.bundle import load_bundle
from databricks_emulator.driver import VOLUMES_ROOT_VARIABLE, notebook_environment
from databricks_emulator.notifications import Notifier
from databricks_emulator.settings import Settings
from databricks_emulator.workspace import Workspace
from tests.support.emulator_process import TEST_BUNDLE
from tests.support.emulator_runs import import_notebook_module


def test_a_notebook_gets_the_volumes_folder_and_none_of_the_emulators_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABRICKS_EMULATOR_TOKEN", "dapi-not-for-notebooks")
    monkeypatch.setenv("PIPELINE_SOURCES_FILE", "/etc/pipeline/rule.json")

    environment = notebook_environment(tmp_path / "Volumes")

    assert environment[VOLUMES_ROOT_VARIABLE] == str(tmp_path / "Volumes")
    assert environment["PIPELINE_SOURCES_FILE"] == "/etc/pipeline/rule.json", "the driver's own configuration"
    assert not [name for name in environment if name.startswith("DATABRICKS_EMULATOR_")]


def test_the_notebooks_read_the_variable_the_emulator_sets():
    assert import_notebook_module("onboarding_tables").VOLUMES_ROOT_VARIABLE == VOLUMES_ROOT_VARIABLE


def workspace(settings: Settings, run_root) -> Workspace:  # type: ignore[no-untyped-def]
    bundle = load_bundle(TEST_BUNDLE, variables={}, first_job_id=1, created_time=0)
    return Workspace(settings, run_root, bundle, Notifier({}, settings.WORKSPACE_ID))


def test_the_volumes_folder_is_the_setting_or_one_in_the_run_root(tmp_path):
    default = workspace(Settings(), tmp_path / "runs")
    chosen = workspace(Settings(VOLUMES_DIR=tmp_path / "shared"), tmp_path / "other-runs")

    assert default.volumes == tmp_path / "runs" / "Volumes" and default.volumes.is_dir()
    assert chosen.volumes == tmp_path / "shared" and chosen.volumes.is_dir()
