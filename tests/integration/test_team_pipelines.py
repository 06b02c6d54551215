"""A team's own pipeline, mounted on the worker and started by the client, with no change to this project's code.

The test stack mounts tests/support/team/ as the worker's TEAM_PIPELINES,
names its module in PIPELINE_MODULES, and adds the module's catalogue entry
to the catalogue the gateway and the worker read (tests.support.stack).
"""

from __future__ import annotations

from pipeline_client import Client
from tests.support.stack import Stack
from tests.support.stack_clients import AUTHENTICATED, MailSink, new_id


def test_a_teams_pipeline_runs_from_its_module_and_emails_what_it_asked(stack: Stack, mail: MailSink) -> None:
    pipeline_id = new_id("team")
    client = Client(stack.api_url, api_key=AUTHENTICATED["authorization"].removeprefix("Bearer "))

    client.start(job="team-hello", email=f"{pipeline_id}@example.com", id=pipeline_id)
    done = client.wait(pipeline_id, timeout=120)

    assert done.state == "succeeded" and done.result["rows"] > 0
    assert [(step.kind, step.name, step.state) for step in done.steps] == [
        ("job", "csv-statistics", "succeeded"),
        ("email", "email", "sent"),
    ]
    subjects = {message["subject"] for message in mail.messages(pipeline_id)}
    assert subjects == {
        f"Pipeline {pipeline_id} (Team hello): Rows counted",
        f"Pipeline {pipeline_id} (Team hello) succeeded",
    }
