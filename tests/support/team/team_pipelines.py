"""A team's pipelines module, as a team writes one: the worker imports it when PIPELINE_MODULES names it."""

from __future__ import annotations

from pipeline_worker.pipelines import Pipeline, pipeline


@pipeline("team-hello")
async def team_hello(p: Pipeline) -> dict:
    """Count the rows of the built-in sample, then say so."""
    counted = await p.job("csv-statistics", {"source": ""})
    await p.email("Rows counted", [f"{counted.result['row_count']} rows."])
    return {"rows": counted.result["row_count"]}
