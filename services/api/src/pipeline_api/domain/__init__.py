"""The gateway's domain, apart from HTTP: starting, reading, cancelling and repairing pipelines
(:mod:`.pipelines`), who may do which (:mod:`.access`) and the commands they act on (:mod:`.commands`),
the start limits (:mod:`.limits`), and checking what Databricks sends (:mod:`.callbacks`,
:mod:`.notifications`).

Nothing here imports FastAPI or Starlette (tests/test_architecture.py holds it): the JSON routes and
the web page both call into it, and it answers with the shared library's errors, never HTTP ones.
"""
