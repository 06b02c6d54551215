# Databricks notebook source
# MAGIC %md
# MAGIC # Pipeline: CSV statistics with a signed callback
# MAGIC
# MAGIC The pipeline service starts this notebook as a job run, then **waits for it to call
# MAGIC back**. It does a small data step, posts the outcome to the service, and exits with the
# MAGIC result.
# MAGIC
# MAGIC **Inputs** are job parameters, pushed down to this notebook as widgets:
# MAGIC
# MAGIC | widget | meaning |
# MAGIC | --- | --- |
# MAGIC | `pipeline_id` | the pipeline this run belongs to (for the log) |
# MAGIC | `callback_promise_id` | the promise the callback settles |
# MAGIC | `callback_url` | where to `POST` the outcome; empty when run by hand |
# MAGIC | `callback_signing_key` | the `whsec_...` key for this promise only |
# MAGIC | `parameters` | the user's parameters, a JSON object of strings (`source`: see below) |
# MAGIC
# MAGIC **Data step**: reads the CSV at the user's `source` (a path or an http(s) URL; a small
# MAGIC built-in sample when there is none), counts rows and columns, and describes each column:
# MAGIC numeric columns get count/min/max/mean, other columns their number of distinct values.
# MAGIC
# MAGIC **Callback**: `{"promise_id", "status": "success", "result"}`, or
# MAGIC `{"promise_id", "status": "failure", "error": {"type", "message"}}`, signed with
# MAGIC Standard Webhooks headers. It is retried on connection errors, 5xx and 429 (never on
# MAGIC other 4xx) for at most 5 minutes. A failed data step is reported, then re-raised so the
# MAGIC run is marked failed.
# MAGIC
# MAGIC **Exit value**: the result as JSON, readable through `jobs/runs/get-output` if the
# MAGIC callback is lost.
# MAGIC
# MAGIC Only the Python standard library is used: the notebook runs on any compute as it is.

# COMMAND ----------

# DBTITLE 1,Data step
# ruff: noqa: E402, F811, F821 (each cell imports what it uses; the runtime provides dbutils)
import csv
import io
import json
import math
import urllib.parse
import urllib.request

#: A CSV larger than this is refused rather than read into the driver's memory.
MAX_SOURCE_BYTES = 50 * 1024 * 1024
#: How long an http(s) source may take to answer.
SOURCE_TIMEOUT_SECONDS = 60

#: Used when the user gives no `source`, so a pipeline can be tried without data of its own.
SAMPLE_CSV = """city,country,population,area_km2,founded
Lisbon,Portugal,545796,100.05,
Porto,Portugal,231962,41.42,
Utrecht,Netherlands,361924,99.21,1122
Ghent,Belgium,265086,156.18,
Graz,Austria,298479,127.57,1128
Bologna,Italy,387971,140.86,
"""


def read_source(source):
    """The text of the CSV at `source`: an http(s) URL, a `dbfs:/` URI or a local path.

    Unity Catalog volumes (`/Volumes/...`) and workspace files are local paths on the driver.
    """
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        with urllib.request.urlopen(source, timeout=SOURCE_TIMEOUT_SECONDS) as response:
            raw = response.read(MAX_SOURCE_BYTES + 1)
    elif scheme == "dbfs":
        # DBFS is mounted on the driver under /dbfs.
        return read_source("/dbfs/" + source[len("dbfs:") :].lstrip("/"))
    elif scheme in ("", "file") or len(scheme) == 1:  # a one-letter scheme is a Windows drive
        path = urllib.parse.urlsplit(source).path if scheme == "file" else source
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SOURCE_BYTES + 1)
    else:
        raise ValueError(
            f"parameter 'source' must be a path or an http(s) URL, not a {scheme}: URL: {source}"
        )
    if len(raw) > MAX_SOURCE_BYTES:
        raise ValueError(f"source {source} is larger than {MAX_SOURCE_BYTES} bytes")
    return raw.decode("utf-8-sig")


def parse_number(text):
    """The finite float in `text`, or None (NaN and infinities count as text)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def describe_column(name, values):
    """Statistics of one column.

    Empty cells are missing; a column whose other cells are all numbers is numeric.
    """
    present = [value for value in values if value.strip() != ""]
    numbers = [parse_number(value) for value in present]
    description = {"name": name, "count": len(present), "missing": len(values) - len(present)}
    if present and all(number is not None for number in numbers):
        description.update(
            type="numeric",
            min=min(numbers),
            max=max(numbers),
            mean=math.fsum(numbers) / len(numbers),
        )
    else:
        description.update(type="text", distinct=len(set(present)))
    return description


def csv_statistics(text, source_name):
    """Row and column statistics of a CSV document whose first row is the header."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise ValueError(f"{source_name} has no header row")
    header, body = rows[0], [row for row in rows[1:] if row]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(
                f"{source_name} row {number} has {len(row)} fields; the header has {len(header)}"
            )
    return {
        "source": source_name,
        "row_count": len(body),
        "column_count": len(header),
        "columns": [
            describe_column(name, [row[i] for row in body]) for i, name in enumerate(header)
        ],
    }


def parse_user_parameters(text):
    """The user's parameters: a JSON object of strings, or ValueError saying what is wrong."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"widget 'parameters' is not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError("widget 'parameters' must be a JSON object whose values are strings")
    return value


def summarise(user_parameters):
    """The pipeline's result for the user's parameters."""
    source = user_parameters.get("source", "").strip()
    if not source:
        return csv_statistics(SAMPLE_CSV, "built-in sample")
    return csv_statistics(read_source(source), source)


# COMMAND ----------

# DBTITLE 1,Signed callback
import base64
import hashlib
import hmac
import json
import random
import time
import urllib.error
import urllib.request
import uuid

#: The prefix of a Standard Webhooks signing secret; the rest is the key in base64.
KEY_PREFIX = "whsec_"
#: Give up calling back this long after the first attempt; the service then learns the
#: outcome from the run itself (its state and exit value).
CALLBACK_DEADLINE_SECONDS = 300
#: One attempt may take this long before it counts as a connection error.
CALLBACK_ATTEMPT_TIMEOUT_SECONDS = 10
#: Backoff between attempts: doubles from the first value up to the cap, with jitter.
CALLBACK_FIRST_BACKOFF_SECONDS = 0.5
CALLBACK_MAX_BACKOFF_SECONDS = 30
#: Error types and messages are cut to what the service accepts.
MAX_ERROR_TYPE_CHARS = 200
MAX_ERROR_MESSAGE_CHARS = 20_000


def signing_key_bytes(key):
    """The raw HMAC key inside a `whsec_` secret; ValueError naming the widget if malformed."""
    if not key.startswith(KEY_PREFIX):
        raise ValueError("widget 'callback_signing_key' must start with 'whsec_'")
    try:
        return base64.b64decode(key[len(KEY_PREFIX) :], validate=True)
    except ValueError as exc:
        raise ValueError(
            f"widget 'callback_signing_key' is not valid base64 after 'whsec_': {exc}"
        ) from None


def signature_headers(key, body, msg_id, timestamp):
    """Standard Webhooks headers: HMAC-SHA256 over `id.timestamp.body`, as `v1,<base64>`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key_bytes(key), signed, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def is_retryable(status):
    """Whether an HTTP status may change on retry: server errors and rate limiting may."""
    return status >= 500 or status == 429


def post_callback(
    url,
    key,
    payload,
    *,
    deadline_seconds=CALLBACK_DEADLINE_SECONDS,
    attempt_timeout_seconds=CALLBACK_ATTEMPT_TIMEOUT_SECONDS,
    first_backoff_seconds=CALLBACK_FIRST_BACKOFF_SECONDS,
    max_backoff_seconds=CALLBACK_MAX_BACKOFF_SECONDS,
):
    """POST the signed payload until the service accepts or refuses it, or the deadline passes.

    Returns the final HTTP status, or None when the service was never reached. All attempts
    share one `webhook-id`, so the service can tell a retry from a new message; each is signed
    afresh with the current time, because the service refuses stale timestamps.
    """
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    msg_id = f"msg_{uuid.uuid4().hex}"
    give_up_at = time.monotonic() + deadline_seconds
    backoff = first_backoff_seconds
    attempt = 0
    while True:
        attempt += 1
        headers = signature_headers(key, body, msg_id, int(time.time()))
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=attempt_timeout_seconds) as response:
                status, detail = response.status, ""
        except urllib.error.HTTPError as exc:
            status, detail = exc.code, exc.read(500).decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            status, detail = None, str(getattr(exc, "reason", exc))
        outcome = status if status is not None else "unreachable"
        print(f"callback attempt {attempt}: {outcome} {detail}".rstrip())
        if status is not None and not is_retryable(status):
            return status
        sleep = min(backoff, max_backoff_seconds) * random.uniform(0.5, 1.0)
        if time.monotonic() + sleep >= give_up_at:
            print(f"callback not delivered after {attempt} attempts; giving up")
            return status
        time.sleep(sleep)
        backoff *= 2


def failure_payload(promise_id, error):
    """The callback body that reports an exception."""
    return {
        "promise_id": promise_id,
        "status": "failure",
        "error": {
            "type": type(error).__name__[:MAX_ERROR_TYPE_CHARS],
            "message": str(error)[:MAX_ERROR_MESSAGE_CHARS],
        },
    }


# COMMAND ----------

# DBTITLE 1,Inputs
dbutils.widgets.text("pipeline_id", "", "Pipeline id")
dbutils.widgets.text("callback_promise_id", "", "Callback promise id")
dbutils.widgets.text("callback_url", "", "Callback URL")
dbutils.widgets.text("callback_signing_key", "", "Callback signing key")
dbutils.widgets.text("parameters", "{}", "Parameters (JSON object)")

pipeline_id = dbutils.widgets.get("pipeline_id")
callback_promise_id = dbutils.widgets.get("callback_promise_id")
callback_url = dbutils.widgets.get("callback_url").strip()
callback_signing_key = dbutils.widgets.get("callback_signing_key")
parameters_json = dbutils.widgets.get("parameters")

if callback_url:
    # Checked before any work: without these no outcome could be reported.
    if urllib.parse.urlsplit(callback_url).scheme not in ("http", "https"):
        raise ValueError(f"widget 'callback_url' must be an http(s) URL, not {callback_url!r}")
    signing_key_bytes(callback_signing_key)
    if not callback_promise_id:
        raise ValueError("widget 'callback_promise_id' is required when 'callback_url' is set")
print(f"pipeline {pipeline_id or '(none)'}; callback {callback_url or '(none: run by hand)'}")


# COMMAND ----------

# DBTITLE 1,Run the pipeline and call back
try:
    result = summarise(parse_user_parameters(parameters_json))
except Exception as error:
    if callback_url:
        failure = failure_payload(callback_promise_id, error)
        post_callback(callback_url, callback_signing_key, failure)
    raise

print(json.dumps(result, indent=2))
if callback_url:
    post_callback(
        callback_url,
        callback_signing_key,
        {"promise_id": callback_promise_id, "status": "success", "result": result},
    )


# COMMAND ----------

# DBTITLE 1,Exit value
dbutils.notebook.exit(json.dumps(result, allow_nan=False))
