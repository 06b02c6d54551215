# Databricks notebook source
# MAGIC %md
# MAGIC # Word frequencies: your own notebook as a pipeline
# MAGIC
# MAGIC The most frequent words of the job parameter `text`, the `top` of them (default 10).
# MAGIC The notebook is its own small function and three lines of `pipeline_callback`: the
# MAGIC helper reads the parameters, reports the result to the pipeline service with a signed
# MAGIC callback, and ends the run with the result as its exit value (or reports the error and
# MAGIC fails the run). Run by hand, it only computes the result.

# COMMAND ----------

# DBTITLE 1,Count the words
# ruff: noqa: E402, F821 (the helper is imported where it is used; the runtime provides dbutils)
import collections
import re

#: A word: letters, with inner apostrophes ("don't", "l'eau"); digits and punctuation split words.
WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")


def word_frequencies(text, top):
    """The `top` most frequent words of `text` (case-folded), the most frequent first, ties by word."""
    if not top.isdigit() or not 1 <= int(top) <= 100:
        raise ValueError(f"parameter 'top' must be a whole number from 1 to 100, not {top!r}")
    words = [word.casefold() for word in WORD.findall(text)]
    counts = collections.Counter(words)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: int(top)]
    return {
        "words": [{"word": word, "count": count} for word, count in ranked],
        "total_words": len(words),
        "distinct_words": len(counts),
    }


# COMMAND ----------

# DBTITLE 1,Run as a pipeline
from pipeline_callback import pipeline_run

with pipeline_run(dbutils, defaults={"text": "", "top": "10"}) as run:
    run.result = word_frequencies(run.parameters["text"], run.parameters["top"])
