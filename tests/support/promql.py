"""Just enough reading of PromQL to say which series an expression selects.

The ops tests need the metric names, label matchers and ``by (...)`` labels
of the dashboard's and the alerts' expressions, to hold them against what the
services export. Whether an expression is valid PromQL is promtool's to say,
not this module's: it assumes a valid expression and only tokenises it. It
reads the forms this repository writes (selectors, ranges, function calls,
``sum by (labels) (...)`` with the grouping before its argument); a grouping
written after the argument (``sum(...) by (job)``) is not seen as one, so
write it first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<matchers>\{[^}]*\})
    | (?P<range>\[[^\]]*\])
    | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-zA-Z]*)
    | (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<punct>\S)
    """,
    re.VERBOSE,
)
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')

#: Words that stand where a metric name could, and are not one.
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset"})
#: Keywords followed by a parenthesised list of label names.
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


@dataclass(frozen=True)
class Selector:
    """``metric{label op "value", ...}``: one series selector."""

    metric: str
    #: label name → (operator, value).
    matchers: dict[str, tuple[str, str]]


@dataclass(frozen=True)
class Grouping:
    """``by (labels) (argument)``: the labels kept, and the metrics the argument reads."""

    labels: frozenset[str]
    metrics: frozenset[str]


@dataclass(frozen=True)
class Reading:
    selectors: list[Selector]
    groupings: list[Grouping]

    @property
    def metrics(self) -> set[str]:
        return {selector.metric for selector in self.selectors}


def read(expr: str) -> Reading:
    """The selectors and ``by`` groupings of a valid PromQL expression."""
    tokens = [(match.lastgroup, match.group()) for match in _TOKEN.finditer(expr)]
    selectors: list[tuple[int, Selector]] = []
    spans: list[tuple[frozenset[str], int, int]] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else (None, "")
        if kind == "name" and text in _LABEL_LISTS and following[1] == "(":
            close = _closing(tokens, i + 1)
            labels = frozenset(t for k, t in tokens[i + 2 : close] if k == "name")
            if text == "by" and close + 1 < len(tokens) and tokens[close + 1][1] == "(":
                spans.append((labels, close + 1, _closing(tokens, close + 1)))
            i = close + 1
            continue
        # A name before "(" is a function; before "by" or "without", an aggregation.
        is_call = following[1] == "(" or following[1] in _LABEL_LISTS
        if kind == "name" and not is_call and text not in _KEYWORDS:
            matchers = _matchers(following[1]) if following[0] == "matchers" else {}
            selectors.append((i, Selector(text, matchers)))
        i += 1
    groupings = [
        Grouping(labels, frozenset(s.metric for at, s in selectors if start < at < end)) for labels, start, end in spans
    ]
    return Reading([selector for _, selector in selectors], groupings)


def _closing(tokens: list[tuple[str | None, str]], opening: int) -> int:
    depth = 0
    for index in range(opening, len(tokens)):
        depth += {"(": 1, ")": -1}.get(tokens[index][1], 0)
        if depth == 0:
            return index
    raise ValueError(f"unbalanced parentheses in {''.join(t for _, t in tokens)!r}")


def _matchers(block: str) -> dict[str, tuple[str, str]]:
    inner = block[1:-1]
    found = {m.group(1): (m.group(2), m.group(3)) for m in _MATCHER.finditer(inner)}
    if _MATCHER.sub("", inner).strip():
        raise ValueError(f"cannot read the label matchers {block!r}")
    return found
