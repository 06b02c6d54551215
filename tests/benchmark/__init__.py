"""The benchmark: how fast a user hears back, how much waiting costs, measured on the compose stack.

Run it with ``uv run python -m tests.benchmark [--quick]`` (see ``__main__``
and docs/benchmark.md). It is a package of ``bench_*`` modules so
that pytest never collects it: it loads the machine for minutes, and its
figures are reported, not asserted.
"""
