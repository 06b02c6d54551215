"""A local Databricks workspace: the bundle's jobs, the Jobs API subset the worker uses, real notebook runs.

There is no Databricks account on a laptop or in CI, so this serves the jobs
of the project's Databricks Asset Bundle (``bundle``) through the part of the
REST API that ``databricks-sdk`` calls (run-now with an idempotency token,
runs/get, runs/cancel, runs/get-output, jobs/get, jobs/list), runs each job's
tasks in dependency order (notebooks really, each in its own process with a
small ``dbutils`` stand-in; other task types as timed steps), and sends the
jobs' webhook notifications. Faults (a failing, hanging or silent notebook,
a task failing with a chosen termination code, a slow start, a throttled
run-now, a run ending INTERNAL_ERROR or SKIPPED) are chosen per pipeline or
per job through a control API, so tests can reproduce what a real workspace
does on a bad day.

It must not be imported by the services: they speak to it only over HTTP,
exactly as they would to a workspace.
"""
