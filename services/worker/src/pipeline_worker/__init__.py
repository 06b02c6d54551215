"""The Resonate worker: runs the pipeline workflow and talks to Databricks.

It listens in the ``worker`` group. It never sends email (the notifier does)
and never serves the public API (the gateway does).
"""
