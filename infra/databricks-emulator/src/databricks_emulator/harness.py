"""Runs one Databricks source-format notebook the way a job's notebook task would.

The emulator starts this file as a script, one process (and process group) per
run: ``python -I -S harness.py SPEC.json``. It must use the standard library
only, because it runs without the emulator's environment, exactly like the
notebook it runs.

What it stands in for:

- ``dbutils.widgets``: ``text``/``get``/``getAll``, with values from the job
  parameters (Databricks pushes job parameters down to notebook widgets by
  name; a widget the run gives no value keeps its declared default).
- ``dbutils.notebook.exit(value)``: ends the notebook; ``value`` becomes the
  task's ``notebook_output.result``.
- Cell-by-cell execution in one namespace, as a notebook task runs its cells.

Faults are induced from outside, leaving the notebook untouched:

- ``fail``: the ``source`` widget (the job parameter the pipeline notebook
  reads its data from) names a file that does not exist, in the folder the
  development stack's notebook may read, so the notebook
  fails as it would on bad input, and reports that itself;
- ``hang``: the harness blocks before the first cell and never finishes (the
  emulator ends it by cancel or timeout, or kills it to model a platform
  failure);
- ``drop_callback``: ``callback_url`` is swapped for the emulator's sink,
  which accepts and discards the callback (the notebook sees success);
- ``raise`` (a spec field, for a task fault): the run fails before the first
  cell with ``InjectedFailure`` and that message, so the notebook reports
  nothing itself;
- ``widgets`` of a task fault replace the run's before any of the above.

The notebook's own folder comes first on ``sys.path``, as on Databricks for
workspace files, so a notebook can import a module that sits next to it.

The outcome (exit value, or the exception's type, message and traceback) is
written as JSON to the spec's ``outcome_path``; the exit status is 0 for a
notebook that finished and 1 for one that raised.
"""

from __future__ import annotations

import json
import linecache
import re
import sys
import threading
import traceback
from pathlib import Path

#: The first line of a Databricks source-format notebook.
NOTEBOOK_HEADER = "# Databricks notebook source"
#: The line between two cells.
CELL_SEPARATOR = re.compile(r"^# COMMAND -{10,}\s*$", re.MULTILINE)
#: A cell's optional title line: ``# DBTITLE 1,<title>``.
TITLE_LINE = re.compile(r"^# DBTITLE \d+,(.*)$")
#: ``# MAGIC`` lines hold markdown and other non-Python cells.
MAGIC_PREFIX = "# MAGIC"

FAULT_NONE = "none"
FAULT_FAIL = "fail"
FAULT_HANG = "hang"
FAULT_DROP_CALLBACK = "drop_callback"
FAULTS = (FAULT_NONE, FAULT_FAIL, FAULT_HANG, FAULT_DROP_CALLBACK)
#: The ``source`` of a ``fail`` run: a file that is not there, in the folder the development
#: stack's notebook may read (so it fails on the missing file, not on the folder).
FAULT_MISSING_SOURCE = "/Workspace/Shared/pipelines/emulator-fault-injected/missing.csv"


class NotebookFormatError(ValueError):
    """The file is not a Databricks source-format Python notebook."""


class InjectedFailure(Exception):
    """A task fault: the run fails before its first cell, as if the notebook had raised."""


class InputWidgetNotDefined(Exception):
    """``widgets.get`` of a widget neither declared nor passed (Databricks' name for it)."""


class NotebookExit(BaseException):
    """Raised by ``dbutils.notebook.exit`` to stop the notebook.

    A BaseException, so the notebook's own ``except Exception`` cannot swallow it.
    """

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


class Cell:
    """One cell of a notebook: its title (empty when it has none) and source."""

    def __init__(self, index: int, title: str, source: str) -> None:
        self.index = index
        self.title = title
        self.source = source

    @property
    def is_python(self) -> bool:
        lines = [line for line in self.source.splitlines() if line.strip()]
        return bool(lines) and not all(line.startswith(MAGIC_PREFIX) for line in lines)


def parse_notebook(text: str) -> list[Cell]:
    """The cells of a Databricks source-format notebook, in order."""
    first, _, rest = text.partition("\n")
    if first.strip() != NOTEBOOK_HEADER:
        raise NotebookFormatError(f"a Databricks notebook starts with {NOTEBOOK_HEADER!r}")
    cells = []
    for index, chunk in enumerate(CELL_SEPARATOR.split(rest)):
        body = chunk.strip("\n")
        title = ""
        first_line, _, remainder = body.partition("\n")
        match = TITLE_LINE.match(first_line)
        if match:
            title, body = match.group(1).strip(), remainder
        cells.append(Cell(index, title, body))
    return cells


def cell_titled(cells: list[Cell], title: str) -> Cell:
    """The cell with this title; KeyError naming the titles there are."""
    for cell in cells:
        if cell.title == title:
            return cell
    raise KeyError(f"no cell titled {title!r}; titles: {[c.title for c in cells if c.title]}")


class Widgets:
    """``dbutils.widgets`` for a job run: declared defaults, overridden by the run's parameters."""

    def __init__(self, values: dict[str, str]) -> None:
        self._passed = dict(values)
        self._defaults: dict[str, str] = {}

    def text(self, name: str, defaultValue: str = "", label: str | None = None) -> None:
        self._defaults[name] = defaultValue

    def get(self, name: str) -> str:
        if name in self._passed:
            return self._passed[name]
        if name in self._defaults:
            return self._defaults[name]
        raise InputWidgetNotDefined(f"No input widget named {name} is defined")

    def getAll(self) -> dict[str, str]:
        return {**self._defaults, **self._passed}


class NotebookUtils:
    """``dbutils.notebook``: only ``exit`` has a meaning inside a job run."""

    def exit(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"dbutils.notebook.exit takes a string, not {type(value).__name__}")
        raise NotebookExit(value)


class Dbutils:
    """The part of ``dbutils`` a job's notebook task uses."""

    def __init__(self, widget_values: dict[str, str]) -> None:
        self.widgets = Widgets(widget_values)
        self.notebook = NotebookUtils()


def run_cells(cells: list[Cell], namespace: dict, path: str) -> None:
    """Execute the Python cells in order in one namespace, as a notebook does."""
    for cell in cells:
        if cell.is_python:
            label = f"{path} [cell {cell.index}{': ' + cell.title if cell.title else ''}]"
            # Registered so tracebacks quote the cell's lines, as a notebook's do.
            linecache.cache[label] = (len(cell.source), None, cell.source.splitlines(True), label)
            exec(compile(cell.source, label, "exec"), namespace)


def induce_fault(fault: str, widgets: dict[str, str], spec: dict) -> dict[str, str]:
    """The widget values a run sees under ``fault``; ``hang`` blocks here for good."""
    widgets = dict(widgets)
    if fault == FAULT_FAIL:
        widgets["source"] = FAULT_MISSING_SOURCE
    elif fault == FAULT_DROP_CALLBACK:
        widgets["callback_url"] = spec["callback_sink_url"]
    elif fault == FAULT_HANG:
        print("emulator fault 'hang': blocking before the first cell", flush=True)
        threading.Event().wait()
    elif fault != FAULT_NONE:
        raise ValueError(f"unknown fault {fault!r}; known: {FAULTS}")
    return widgets


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python harness.py SPEC.json", file=sys.stderr)
        return 2
    spec_path = Path(argv[1])
    spec = json.loads(spec_path.read_text())
    # The spec holds the run's widgets, its callback signing key among them: once read, it
    # leaves the disk, where another run's code might look for it.
    spec_path.unlink(missing_ok=True)
    sys.path.insert(0, str(Path(spec["notebook_path"]).resolve().parent))
    outcome: dict = {"exit_value": None, "error": None}
    status = 0
    sys.path.insert(0, str(Path(spec["notebook_path"]).resolve().parent))
    try:
        widgets = induce_fault(spec.get("fault", FAULT_NONE), spec["widgets"], spec)
        if spec.get("raise"):
            raise InjectedFailure(spec["raise"])
        cells = parse_notebook(Path(spec["notebook_path"]).read_text())
        namespace = {"__name__": "__main__", "dbutils": Dbutils(widgets)}
        run_cells(cells, namespace, spec["notebook_path"])
    except NotebookExit as stop:
        outcome["exit_value"] = stop.value
    except Exception as exc:
        status = 1
        trace = traceback.format_exc()
        print(trace, file=sys.stderr, flush=True)
        outcome["error"] = {"type": type(exc).__name__, "message": str(exc), "trace": trace}
    Path(spec["outcome_path"]).write_text(json.dumps(outcome))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
