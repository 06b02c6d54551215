"""The page a run's ``run_page_url`` opens: that run, as a workspace's run page shows it.

A workspace's run page URL is ``https://<host>/?o=<workspace>#job/<job>/run/<run>``:
the run is named in the fragment, which the browser keeps to itself. The
emulator gives the same URL (the gateway, the CLI and the emails show it as
they would a real one), so the page it lands on is one page with every run,
each a section whose ``id`` is exactly that fragment. The browser then marks
the named run as ``:target`` and the page's style shows that run alone (no
script; a link leads to every run). Opened without a fragment, the page lists
every run, newest first.

What it shows is the run's state and its tasks' attempts, never its
parameters: they name callback addresses and are nobody else's business.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape

from databricks_emulator.runs import JobRun

#: With a run named in the fragment, that run alone; without, the list of every run.
STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; margin: 0 auto; padding: 1rem; max-width: 60rem; color: #1d2430; }
table { border-collapse: collapse; margin-bottom: 1rem; }
th, td { text-align: left; padding: 0.3rem 0.6rem; border-bottom: 1px solid #d5dae1; vertical-align: top; }
section.run { display: none; }
section.run:target { display: block; }
body:has(section.run:target) #all-runs { display: none; }
.back { display: none; }
section.run:target .back { display: inline; }
"""


def fragment(run: JobRun) -> str:
    """The part of the run's page URL after ``#``: its section's id."""
    return run.page_url(run.run_id).split("#", 1)[1]


def _moment(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "—"
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _state(run: JobRun) -> str:
    return f"{run.life_cycle.value}{' / ' + run.result_state.value if run.result_state else ''}"


def _section(run: JobRun) -> str:
    attempts = "".join(
        f"<tr><td>{escape(attempt.key)}</td><td>{attempt.attempt_number}</td>"
        f"<td>{attempt.life_cycle.value}</td><td>{attempt.result_state.value if attempt.result_state else ''}</td>"
        f"<td>{escape(attempt.state_message)}</td></tr>"
        for attempt in run.task_runs()
    )
    return (
        f'<section class="run" id="{escape(fragment(run))}" data-run="{run.run_id}">'
        f'<p><a class="back" href="#all-runs">Every run</a></p>'
        f"<h2>Run {run.run_id} of {escape(run.job.name)} ({run.job.job_id})</h2>"
        "<table><tbody>"
        f"<tr><th>State</th><td class='state'>{_state(run)}</td></tr>"
        f"<tr><th>Message</th><td>{escape(run.state_message)}</td></tr>"
        f"<tr><th>Pipeline</th><td>{escape(run.pipeline_id)}</td></tr>"
        f"<tr><th>Started</th><td>{_moment(run.start_time)}</td></tr>"
        f"<tr><th>Ended</th><td>{_moment(run.end_time)}</td></tr>"
        f"<tr><th>Repairs</th><td>{max(len(run.history) - 1, 0)}</td></tr>"
        "</tbody></table>"
        "<h3>Tasks</h3><table><thead><tr><th>task</th><th>attempt</th><th>state</th><th>result</th>"
        f"<th>message</th></tr></thead><tbody>{attempts}</tbody></table>"
        "</section>"
    )


def render(workspace_name: str, runs: Iterable[JobRun]) -> str:
    """The whole page: every run's section, and the list of every run linking to each."""
    newest_first = sorted(runs, key=lambda r: r.start_time, reverse=True)
    rows = "".join(
        f"<tr id='run-{run.run_id}'><td><a href='#{escape(fragment(run))}'>{run.run_id}</a></td>"
        f"<td>{escape(run.job.name)} ({run.job.job_id})</td>"
        f"<td>{escape(run.pipeline_id)}</td>"
        f"<td>{run.life_cycle.value}</td><td>{run.result_state.value if run.result_state else ''}</td>"
        f"<td>{escape(run.state_message)}</td></tr>"
        for run in newest_first
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Databricks emulator: runs</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(workspace_name)}: runs</h1>"
        '<div id="all-runs"><table><thead><tr><th>run</th><th>job</th><th>pipeline</th><th>state</th>'
        f"<th>result</th><th>message</th></tr></thead><tbody>{rows}</tbody></table></div>"
        f"{''.join(_section(run) for run in newest_first)}"
        "</body></html>"
    )
