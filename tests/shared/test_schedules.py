"""A catalogue's schedules: refused at load naming what is wrong, and what a firing starts.

Against a real resonate-pg (firing, reconciling, deleting): tests/api/test_schedules.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline_shared.catalogue import Catalogue, CatalogueError
from pipeline_shared.models import PIPELINE_ID
from pipeline_shared.schedules import (
    ScheduledStart,
    declared_schedules,
    firing_time,
    next_firing_at,
    schedule_id,
    scheduled_name,
    scheduled_pipeline_id,
)

CATALOGUE = """
default = "one"
[jobs.one]
title = "One"
description = "The one job."
databricks_job_id = 7
completion = "poll"

[pipelines.nightly]
title = "Nightly"
description = "Every night."
jobs = ["one"]
[pipelines.nightly.parameters.table]
description = "The table."
required = true
[pipelines.nightly.parameters.depth]
description = "How deep."
default = "3"
allowed = ["1", "3"]
[pipelines.nightly.schedule]
cron = "{cron}"
email = "{email}"
parameters = {parameters}
"""


def load(tmp_path: Path, cron: str = "0 2 * * *", email: str = "ops@example.com", parameters: str = '{table = "t"}'):
    path = tmp_path / "catalogue.toml"
    path.write_text(CATALOGUE.format(cron=cron, email=email, parameters=parameters))
    return Catalogue.load(path)


def test_a_schedule_loads_with_its_parameters_resolved(tmp_path: Path) -> None:
    [declared] = declared_schedules(load(tmp_path), finish_grace_seconds=60)
    assert (declared.id, declared.cron) == ("pipeline-schedule.nightly", "0 2 * * *")
    assert declared.start.parameters == {"table": "t", "depth": "3"}
    assert declared.start.email == "ops@example.com"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"cron": "10 12 * *"}, "pipelines.nightly.schedule.cron: .*has 4 fields"),
        ({"cron": "0 2 * * 7"}, "pipelines.nightly.schedule.cron: .*day of week field '7'"),
        ({"cron": "0 25 * * *"}, "pipelines.nightly.schedule.cron: .*hour field '25'"),
        ({"email": "ops@localhost"}, "pipelines.nightly.schedule.email"),
        ({"email": "Ops <ops@example.com>"}, "pipelines.nightly.schedule.email"),
        ({"parameters": "{}"}, "pipelines.nightly: .*schedule parameters: table is required"),
        ({"parameters": '{table = "t", depth = "2"}'}, "schedule parameters: depth must be one of"),
        ({"parameters": '{table = "t", colour = "red"}'}, "schedule parameters: colour is not a parameter"),
    ],
)
def test_a_bad_schedule_stops_the_catalogue_naming_it(tmp_path: Path, change: dict[str, str], named: str) -> None:
    with pytest.raises(CatalogueError, match=named):
        load(tmp_path, **change)


def test_a_scheduled_pipelines_name_leaves_room_for_the_firings_time(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.toml"
    long_name = "n" * 51
    path.write_text(
        CATALOGUE.format(cron="0 2 * * *", email="ops@example.com", parameters='{table = "t"}').replace(
            "pipelines.nightly", f"pipelines.{long_name}"
        )
    )
    with pytest.raises(CatalogueError, match="at most 50 characters"):
        Catalogue.load(path)


def test_the_next_firing_is_shown_in_utc_and_none_without_a_schedule(tmp_path: Path) -> None:
    catalogue = load(tmp_path, cron="30 2 * * 1-5")
    saturday_noon = 1_796_472_000_000  # 2026-12-05T12:00:00Z
    assert next_firing_at(catalogue.pipeline("nightly"), saturday_noon) == datetime(2026, 12, 7, 2, 30, tzinfo=UTC)
    assert next_firing_at(catalogue.pipeline("one")) is None


def test_an_id_of_a_scheduled_pipelines_form_is_named(tmp_path: Path) -> None:
    catalogue = load(tmp_path)
    assert scheduled_name("nightly-20261205T2000", catalogue) == "nightly"
    assert scheduled_name("nightly-today", catalogue) is None
    assert scheduled_name("one-20261205T2000", catalogue) is None  # a job's: no schedule


def test_a_firing_names_its_pipeline_by_its_time_in_utc() -> None:
    fired = 1_796_500_800_000  # 2026-12-05T20:00:00Z
    firing = f"{schedule_id('nightly')}.{fired}"
    assert firing_time(firing) == fired
    pipeline_id = scheduled_pipeline_id("n" * 50, fired)
    assert pipeline_id == "n" * 50 + "-20261205T2000"
    assert PIPELINE_ID.fullmatch(pipeline_id)
    with pytest.raises(ValueError, match="not a schedule's firing"):
        firing_time("nightly.123")


def test_a_firings_spec_reads_as_a_started_pipelines() -> None:
    start = ScheduledStart(
        pipeline="nightly",
        email="ops@example.com",
        parameters={"table": "t"},
        timeout_seconds=600,
        version=2,
        finish_grace_seconds=60,
    )
    spec = start.spec(1_796_500_800_000)
    assert (spec.id, spec.job, spec.version, spec.scheduled_at) == (
        "nightly-20261205T2000",
        "nightly",
        2,
        1_796_500_800_000,
    )
