"""Reading a small CSV document and describing its columns, for every notebook that reads one.

``pipeline.py`` (CSV statistics) and the onboarding notebooks read CSV the same
way: the first row is the header, blank lines are skipped, and a row with
another number of fields than the header is an error naming the row. A column
is described the same way wherever it is shown (the statistics of
``csv-statistics`` and the report of ``report-build``), so the rule lives here
once.

Standard library only, as every module the notebooks import: the bundle syncs
it beside them.
"""

from __future__ import annotations

import csv
import io
import math


def parse_csv(text: str, source_name: str) -> tuple[list[str], list[list[str]]]:
    """The header and the data rows of a CSV document; ValueError naming ``source_name`` and the row."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise ValueError(f"{source_name} has no header row")
    header, body = rows[0], [row for row in rows[1:] if row]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(f"{source_name} row {number} has {len(row)} fields; the header has {len(header)}")
    return header, body


def parse_number(text: str) -> float | None:
    """The finite float in ``text``, or None (NaN and infinities count as text)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def describe_column(name: str, values: list[str]) -> dict:
    """Statistics of one column.

    Empty cells are missing; a column whose other cells are all numbers is numeric
    (count/min/max/mean), any other has its number of distinct values.
    """
    present = [value for value in values if value.strip() != ""]
    numbers = [number for number in map(parse_number, present) if number is not None]
    description: dict = {"name": name, "count": len(present), "missing": len(values) - len(present)}
    if present and len(numbers) == len(present):
        description.update(type="numeric", min=min(numbers), max=max(numbers), mean=math.fsum(numbers) / len(numbers))
    else:
        description.update(type="text", distinct=len(set(present)))
    return description


def csv_statistics(text: str, source_name: str) -> dict:
    """Row and column statistics of a CSV document whose first row is the header."""
    header, body = parse_csv(text, source_name)
    return {
        "source": source_name,
        "row_count": len(body),
        "column_count": len(header),
        "columns": [describe_column(name, [row[i] for row in body]) for i, name in enumerate(header)],
    }
