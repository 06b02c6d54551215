"""A local Databricks workspace: the Jobs API subset the worker uses, really running the notebook.

There is no Databricks account on a laptop or in CI, so this serves the part
of the REST API that ``databricks-sdk`` calls for a pipeline (run-now with an
idempotency token, runs/get, runs/cancel, runs/get-output, jobs/get) and runs
``notebooks/pipeline.py`` for every run in its own process, with a small
``dbutils`` stand-in. Faults (a failing, hanging or silent notebook, a slow
start, a throttled run-now) are chosen per pipeline through a control API, so
tests can reproduce what a real workspace does on a bad day.

It must not be imported by the services: they speak to it only over HTTP,
exactly as they would to a workspace.
"""
