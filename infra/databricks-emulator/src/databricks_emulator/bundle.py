"""Reading a Databricks Asset Bundle (``databricks.yml``) into the jobs the workspace holds.

The emulator serves the jobs the project deploys, from the same file, so the
two cannot drift apart. It reads the top-level ``resources.jobs`` only, in
their order, and gives them ids from ``DATABRICKS_EMULATOR_JOB_ID`` on. No
target override is applied and names are as a production-mode deploy leaves
them (no ``[dev user]`` prefix): the emulator stands in for the shared
deployment, whatever target a person deploys to their own copy.

References resolved: ``${var.NAME}`` (the variable's default, or its value in
``DATABRICKS_EMULATOR_BUNDLE_VARIABLES``), ``${bundle.name}`` and
``${bundle.target}`` (the default target). A reference that is a whole value
keeps the variable's type (``max_concurrent_runs: ${var.limit}`` stays a
number); one inside a string is substituted as text. Any other reference is
refused: a value the emulator would have to guess is worse than a clear stop.

Only the fields the emulator acts on are validated here, each with an error
naming the job, the task and the field (Databricks' own models of bundle
resources live in ``databricks-bundles``, a development dependency the
emulator must not need). Settings shown but not acted on pass through as
given; settings neither shown nor acted on (a schedule, a trigger,
permissions) are left out and named in a warning. Notebooks are looked up
relative to the bundle file, with or without ``.py``; whether each exists is
reported, not required (see ``Settings.REQUIRE_NOTEBOOKS``), because the
notebooks a bundle names may be written after the bundle.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

import yaml

from databricks_emulator.jobspec import (
    DEFAULT_RUN_IF,
    JOB_SETTINGS,
    NOTEBOOK_TASK,
    RUN_IF_CONDITIONS,
    STEP_TASKS,
    TASK_SETTINGS,
    USER_NAME,
    JobSpec,
    TaskSpec,
    read_boolean,
)

#: ``${...}`` references of the bundle's own syntax (``{{...}}`` are run-time values, left alone).
REFERENCE: Final = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")
#: A task key, as the Jobs API allows it.
TASK_KEY: Final = re.compile(r"^[\w\-]{1,100}$")
#: The events of ``webhook_notifications`` the Jobs API defines.
WEBHOOK_EVENTS: Final = (
    "on_start",
    "on_success",
    "on_failure",
    "on_duration_warning_threshold_exceeded",
    "on_streaming_backlog_exceeded",
)
#: The most destinations one event may name, and tasks one job may hold (Databricks' limits).
MAX_DESTINATIONS_PER_EVENT: Final = 3
MAX_TASKS: Final = 1000
MAX_CONCURRENT_RUNS_LIMIT: Final = 1000
#: How deep a variable's value may refer to other variables before it counts as a loop.
MAX_REFERENCE_DEPTH: Final = 10


class BundleError(ValueError):
    """The bundle cannot be served: what is wrong, and where in the file."""


@dataclass(frozen=True)
class Bundle:
    """The jobs read from one bundle file, and what the reading had to say about it."""

    name: str
    target: str
    path: Path
    jobs: tuple[JobSpec, ...]
    #: Notebooks and files the jobs name that do not exist on this machine.
    missing_files: tuple[str, ...]
    #: Settings left out because the emulator neither shows nor acts on them.
    ignored: tuple[str, ...]


def load_bundle(path: Path, *, variables: dict[str, Any], first_job_id: int, created_time: int) -> Bundle:
    """The bundle at ``path`` with ``variables`` overriding its defaults; BundleError if unusable."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise BundleError(f"cannot read the bundle {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise BundleError(f"{path} is not valid YAML: {exc}") from None
    return _Reader(path, document, variables).read(first_job_id, created_time)


class _Reader:
    """One pass over one bundle file; collects the ignored settings and missing files."""

    def __init__(self, path: Path, document: object, overrides: dict[str, Any]) -> None:
        self.path = path
        self.root = path.resolve().parent
        self.document = _mapping(document, str(path))
        self.ignored: list[str] = []
        self.missing: list[str] = []
        bundle = _mapping(self.document.get("bundle"), "bundle")
        self.name = bundle.get("name")
        if not isinstance(self.name, str) or not self.name:
            raise BundleError(f"{path}: bundle.name must be a non-empty string")
        self.target = _default_target(self.document.get("targets"))
        self.variables = self._variables(overrides)
        self.workspace_files = self._workspace_file_path()
        self.sync_root = self._sync_root()

    # -- variables and references ------------------------------------------------------

    def _variables(self, overrides: dict[str, Any]) -> dict[str, Any]:
        declared = self.document.get("variables") or {}
        declared = _mapping(declared, "variables")
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise BundleError(
                f"DATABRICKS_EMULATOR_BUNDLE_VARIABLES sets {', '.join(unknown)}, which {self.path} does not "
                f"declare; it declares: {', '.join(declared) or 'no variables'}"
            )
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            if name in overrides:
                values[name] = overrides[name]
            elif isinstance(spec, dict) and "default" in spec:
                values[name] = spec["default"]
            # A variable with no value is an error only where it is used (see _reference).
        return values

    def resolve(self, value: Any, where: str, depth: int = 0) -> Any:
        """``value`` with every ``${...}`` reference replaced."""
        if depth > MAX_REFERENCE_DEPTH:
            raise BundleError(f"{where}: references nest deeper than {MAX_REFERENCE_DEPTH}; is there a loop?")
        if isinstance(value, dict):
            return {key: self.resolve(item, f"{where}.{key}", depth) for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item, f"{where}[{index}]", depth) for index, item in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = REFERENCE.fullmatch(value)
        if whole:
            return self.resolve(self._reference(whole.group(1), where), where, depth + 1)

        def text(match: re.Match[str]) -> str:
            found = self.resolve(self._reference(match.group(1), where), where, depth + 1)
            if isinstance(found, dict | list):
                raise BundleError(f"{where}: ${{{match.group(1)}}} is not a scalar, so it cannot be part of a string")
            return str(found).lower() if isinstance(found, bool) else str(found)

        return REFERENCE.sub(text, value)

    def _reference(self, reference: str, where: str) -> Any:
        if reference == "bundle.name":
            return self.name
        if reference == "bundle.target":
            return self.target
        if reference.startswith("var."):
            name = reference.removeprefix("var.")
            if name not in self.variables:
                declared = self.document.get("variables") or {}
                why = "has no default" if name in declared else "is not declared under variables"
                raise BundleError(
                    f"{where}: ${{{reference}}}: the variable {why}; give it a value in "
                    "DATABRICKS_EMULATOR_BUNDLE_VARIABLES"
                )
            return self.variables[name]
        raise BundleError(
            f"{where}: ${{{reference}}} is not a reference the emulator resolves "
            "(it resolves ${var.*}, ${bundle.name} and ${bundle.target})"
        )

    # -- where files land in the workspace ---------------------------------------------------

    def _workspace_file_path(self) -> str:
        workspace = self.resolve(self.document.get("workspace") or {}, "workspace")
        workspace = _mapping(workspace, "workspace")
        root = workspace.get("root_path") or f"/Workspace/Users/{USER_NAME}/.bundle/{self.name}/{self.target}"
        return str(workspace.get("file_path") or f"{root}/files")

    def _sync_root(self) -> Path:
        """The folder synced to ``file_path``: the bundle's, widened to take in ``sync.paths``."""
        sync = _mapping(self.document.get("sync") or {}, "sync")
        paths = [(self.root / str(entry)).resolve() for entry in sync.get("paths") or []]
        return Path(os.path.commonpath([self.root, *paths]))

    def workspace_path(self, local: Path, *, drop_suffix: bool) -> str:
        try:
            relative = PurePosixPath(local.relative_to(self.sync_root).as_posix())
        except ValueError:
            relative = PurePosixPath(local.name)
        if drop_suffix:
            relative = relative.with_suffix("")
        return f"{self.workspace_files}/{relative}"

    # -- jobs ---------------------------------------------------------------------------------

    def read(self, first_job_id: int, created_time: int) -> Bundle:
        resources = _mapping(self.document.get("resources") or {}, "resources")
        jobs = _mapping(resources.get("jobs") or {}, "resources.jobs")
        if not jobs:
            raise BundleError(f"{self.path}: resources.jobs holds no job; the emulator serves the bundle's jobs")
        specs = tuple(
            self._job(key, first_job_id + index, created_time + index, definition)
            for index, (key, definition) in enumerate(jobs.items())
        )
        return Bundle(
            name=self.name,
            target=self.target,
            path=self.path,
            jobs=specs,
            missing_files=tuple(self.missing),
            ignored=tuple(self.ignored),
        )

    def _job(self, key: str, job_id: int, created_time: int, definition: object) -> JobSpec:
        where = f"resources.jobs.{key}"
        job = _mapping(self.resolve(definition, where), where)
        known = {"name", "parameters", "tasks", "max_concurrent_runs", "timeout_seconds", "queue",
                 "webhook_notifications", "format", *JOB_SETTINGS}  # fmt: skip
        self.ignored += [f"{where}.{name}" for name in job if name not in known]
        name = job.get("name", "Untitled")
        if not isinstance(name, str) or not name:
            raise BundleError(f"{where}.name must be a non-empty string")
        queue = _mapping(job.get("queue") or {"enabled": True}, f"{where}.queue")
        notification_settings = _mapping(job.get("notification_settings") or {}, f"{where}.notification_settings")
        return JobSpec(
            job_id=job_id,
            resource_key=key,
            name=name,
            parameters=_parameters(job.get("parameters") or [], f"{where}.parameters"),
            tasks=self._tasks(job.get("tasks"), f"{where}.tasks"),
            max_concurrent_runs=_integer(
                job.get("max_concurrent_runs", 1), f"{where}.max_concurrent_runs", 0, MAX_CONCURRENT_RUNS_LIMIT
            ),
            timeout_seconds=_integer(job.get("timeout_seconds", 0), f"{where}.timeout_seconds", 0),
            queue_enabled=_boolean(queue.get("enabled", True), f"{where}.queue.enabled"),
            webhooks=_webhooks(job.get("webhook_notifications") or {}, f"{where}.webhook_notifications"),
            no_alert_for_canceled_runs=_boolean(
                notification_settings.get("no_alert_for_canceled_runs", False),
                f"{where}.notification_settings.no_alert_for_canceled_runs",
            ),
            no_alert_for_skipped_runs=_boolean(
                notification_settings.get("no_alert_for_skipped_runs", False),
                f"{where}.notification_settings.no_alert_for_skipped_runs",
            ),
            extra_settings={name: job[name] for name in JOB_SETTINGS if name in job},
            created_time=created_time,
        )

    def _tasks(self, tasks: object, where: str) -> tuple[TaskSpec, ...]:
        if not isinstance(tasks, list) or not tasks:
            raise BundleError(f"{where} must be a non-empty list of tasks")
        if len(tasks) > MAX_TASKS:
            raise BundleError(f"{where} holds {len(tasks)} tasks; a job may hold at most {MAX_TASKS}")
        specs: list[TaskSpec] = []
        for index, task in enumerate(tasks):
            task = _mapping(task, f"{where}[{index}]")
            key = task.get("task_key")
            if not isinstance(key, str) or not TASK_KEY.match(key):
                raise BundleError(
                    f"{where}[{index}].task_key must be 1 to 100 letters, digits, '_' or '-'; got {key!r}"
                )
            if any(spec.key == key for spec in specs):
                raise BundleError(f"{where}: two tasks have the task_key {key!r}")
            specs.append(self._task(key, task, f"{where}[{key}]"))
        keys = {spec.key for spec in specs}
        for spec in specs:
            unknown = [dependency for dependency in spec.depends_on if dependency not in keys]
            if unknown:
                raise BundleError(
                    f"{where}[{spec.key}].depends_on names {', '.join(unknown)}, which the job has no task for"
                )
        _refuse_cycles(specs, where)
        return tuple(specs)

    def _task(self, key: str, task: dict[str, Any], where: str) -> TaskSpec:
        kinds = [name for name in task if name.endswith("_task")]
        modelled = [name for name in kinds if name == NOTEBOOK_TASK or name in STEP_TASKS]
        if len(kinds) != 1 or len(modelled) != 1:
            raise BundleError(
                f"{where} must have exactly one task type the emulator models ({NOTEBOOK_TASK}, which it runs, "
                f"or one of {', '.join(STEP_TASKS)}, which it models as a timed step); it has: "
                f"{', '.join(kinds) or 'none'}"
            )
        kind = kinds[0]
        if task.get("disabled"):
            raise BundleError(f"{where}.disabled: disabled tasks are not modelled")
        known = {"task_key", "depends_on", "run_if", kind, "disabled", *TASK_SETTINGS}
        self.ignored += [f"{where}.{name}" for name in task if name not in known]
        run_if = task.get("run_if", DEFAULT_RUN_IF)
        if run_if not in RUN_IF_CONDITIONS:
            raise BundleError(f"{where}.run_if must be one of {', '.join(RUN_IF_CONDITIONS)}; got {run_if!r}")
        depends_on = _depends_on(task.get("depends_on") or [], f"{where}.depends_on")
        block, local_file = self._task_block(kind, _mapping(task[kind], f"{where}.{kind}"), f"{where}.{kind}")
        settings: dict[str, Any] = {
            "task_key": key,
            **{name: task[name] for name in TASK_SETTINGS if name in task},
            kind: block,
            "run_if": run_if,
        }
        settings.setdefault("timeout_seconds", 0)
        if depends_on:
            settings["depends_on"] = [{"task_key": dependency} for dependency in depends_on]
        return TaskSpec(
            key=key,
            kind=kind,
            depends_on=depends_on,
            run_if=run_if,
            settings=settings,
            local_file=local_file,
            timeout_seconds=_integer(task.get("timeout_seconds", 0), f"{where}.timeout_seconds", 0),
            max_retries=_integer(task.get("max_retries", 0), f"{where}.max_retries", 0),
            min_retry_interval_millis=_integer(
                task.get("min_retry_interval_millis", 0), f"{where}.min_retry_interval_millis", 0
            ),
            retry_on_timeout=_boolean(task.get("retry_on_timeout", False), f"{where}.retry_on_timeout"),
        )

    def _task_block(self, kind: str, block: dict[str, Any], where: str) -> tuple[dict[str, Any], Path | None]:
        """The task type's settings as a workspace shows them, and the local file it runs, if any."""
        block = dict(block)
        if kind == NOTEBOOK_TASK:
            notebook = block.get("notebook_path")
            if not isinstance(notebook, str) or not notebook:
                raise BundleError(f"{where}.notebook_path must be a path relative to {self.path}")
            if block.get("source", "WORKSPACE") != "WORKSPACE":
                raise BundleError(f"{where}.source: only WORKSPACE notebooks are modelled (there is no Git)")
            local = self._notebook(notebook, f"{where}.notebook_path")
            block.update(notebook_path=self.workspace_path(local, drop_suffix=True), source="WORKSPACE")
            return block, local
        if kind == "sql_task" and isinstance(block.get("file"), dict):
            file = dict(block["file"])
            relative = file.get("path")
            if not isinstance(relative, str) or not relative:
                raise BundleError(f"{where}.file.path must be a path relative to {self.path}")
            local = self._local(relative, f"{where}.file.path")
            self._note_if_missing(local, f"{where}.file.path")
            file.update(path=self.workspace_path(local, drop_suffix=False), source=file.get("source", "WORKSPACE"))
            block["file"] = file
            return block, local
        python_file = block.get("python_file") if kind == "spark_python_task" else None
        if isinstance(python_file, str) and not python_file.startswith(("/", "dbfs:", "s3:", "gs:", "abfss:")):
            local = self._local(python_file, f"{where}.python_file")
            block["python_file"] = self.workspace_path(local, drop_suffix=False)
        return block, None

    def _local(self, relative: str, where: str) -> Path:
        if relative.startswith("/"):
            raise BundleError(
                f"{where}: {relative} is a workspace path; the emulator runs files of this repository, "
                f"so name it relative to {self.path}"
            )
        return (self.root / relative).resolve()

    def _notebook(self, relative: str, where: str) -> Path:
        local = self._local(relative, where)
        if local.suffix and local.suffix != ".py":
            raise BundleError(f"{where}: {relative}: the emulator runs Python source-format notebooks (.py) only")
        if not local.suffix:
            local = local.with_suffix(".py")
        self._note_if_missing(local, where)
        return local

    def _note_if_missing(self, local: Path, where: str) -> None:
        if not local.is_file():
            self.missing.append(f"{where}: {local}")


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(f"{where} must be a mapping; got {type(value).__name__}")
    return value


def _integer(value: object, where: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BundleError(f"{where} must be a whole number; got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise BundleError(f"{where} must be a whole number; got {value!r}") from None
    if number < low or (high is not None and number > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise BundleError(f"{where} must be {bounds}; got {number}")
    return number


def _boolean(value: object, where: str) -> bool:
    found = read_boolean(value)
    if found is None:
        raise BundleError(f"{where} must be true or false; got {value!r}")
    return found


def _default_target(targets: object) -> str:
    """The target a plain ``databricks bundle deploy`` picks: the one marked default, else the first."""
    if not isinstance(targets, dict) or not targets:
        return "default"
    for name, target in targets.items():
        if isinstance(target, dict) and target.get("default"):
            return str(name)
    return str(next(iter(targets)))


def _parameters(parameters: object, where: str) -> dict[str, str]:
    if not isinstance(parameters, list):
        raise BundleError(f"{where} must be a list of {{name, default}}")
    declared: dict[str, str] = {}
    for index, parameter in enumerate(parameters):
        parameter = _mapping(parameter, f"{where}[{index}]")
        name = parameter.get("name")
        if not isinstance(name, str) or not name:
            raise BundleError(f"{where}[{index}].name must be a non-empty string")
        if name in declared:
            raise BundleError(f"{where}: the job parameter {name!r} is declared twice")
        if "default" not in parameter or isinstance(parameter["default"], dict | list):
            raise BundleError(f"{where}[{name}].default is required and must be a string (a job parameter has one)")
        default = parameter["default"]
        declared[name] = str(default).lower() if isinstance(default, bool) else str(default)
    return declared


def _depends_on(dependencies: object, where: str) -> tuple[str, ...]:
    if not isinstance(dependencies, list):
        raise BundleError(f"{where} must be a list of {{task_key}}")
    keys: list[str] = []
    for index, dependency in enumerate(dependencies):
        dependency = _mapping(dependency, f"{where}[{index}]")
        if "outcome" in dependency:
            raise BundleError(f"{where}[{index}].outcome: dependencies on a condition's outcome are not modelled")
        key = dependency.get("task_key")
        if not isinstance(key, str) or not key:
            raise BundleError(f"{where}[{index}].task_key must be a task key")
        keys.append(key)
    return tuple(keys)


def _webhooks(webhooks: object, where: str) -> dict[str, tuple[str, ...]]:
    webhooks = _mapping(webhooks, where)
    found: dict[str, tuple[str, ...]] = {}
    for event, destinations in webhooks.items():
        if event not in WEBHOOK_EVENTS:
            raise BundleError(f"{where}.{event} is no webhook event; the events are {', '.join(WEBHOOK_EVENTS)}")
        if not isinstance(destinations, list) or not all(
            isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"] for item in destinations
        ):
            raise BundleError(f"{where}.{event} must be a list of {{id: <notification destination id>}}")
        if len(destinations) > MAX_DESTINATIONS_PER_EVENT:
            raise BundleError(f"{where}.{event} names {len(destinations)} destinations; at most 3 are allowed")
        found[event] = tuple(item["id"] for item in destinations)
    return found


def _refuse_cycles(tasks: list[TaskSpec], where: str) -> None:
    depends = {task.key: task.depends_on for task in tasks}
    done: set[str] = set()

    def visit(key: str, path: tuple[str, ...]) -> None:
        if key in path:
            cycle = " -> ".join((*path[path.index(key) :], key))
            raise BundleError(f"{where}: the tasks depend on each other in a cycle: {cycle}")
        if key in done:
            return
        for dependency in depends[key]:
            visit(dependency, (*path, key))
        done.add(key)

    for task in tasks:
        visit(task.key, ())
