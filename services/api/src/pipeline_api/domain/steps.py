"""Which step of a pipeline run by its code a person's decision is about: a gate to approve, a job step to repair.

A client names a step by its id (``"3"``) or its name, or names none when only
one step could be meant. The names come from the pipeline's code and the
reference from the client; both are only compared here, never put in an id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline_shared.errors import GateAmbiguous, GateNotOpen, NotAwaitingRepair, StepAmbiguous
from pipeline_shared.promise_tree import Gate, PipelineTree


def referenced(names: Mapping[str, str], reference: str) -> list[str]:
    """The step ids ``reference`` names among ``names`` (step id -> name): by id, else by name."""
    if reference in names:
        return [reference]
    return [step for step, name in names.items() if name == reference]


def chosen_gate(tree: PipelineTree, gate: str | None) -> Gate:
    """The gate a decision is about: the one named, or the only one open.

    GateNotOpen when there is none to decide (no gate by that reference, or
    none open); GateAmbiguous when several are open and none was named, or
    the name is several open gates'. Whether the one named is still open is
    the caller's to check (after the caller's scopes, which say whether it
    may know).
    """
    names = {step: g.record.name for step, g in tree.gates.items()}
    open_gates = tree.open_gates()
    open_now = [step for step, g in tree.gates.items() if g in open_gates]
    return tree.gates[_chosen(tree.id, names, open_now, gate, _GATES)]


def chosen_repair(tree: PipelineTree, step: str | None) -> str:
    """The job step a repair or abandon is about: the one named, or the only one awaiting repair."""
    names = {s: job.record.name for s, job in tree.job_steps.items()}
    return _chosen(tree.id, names, tree.awaiting_repair(), step, _REPAIRS)


@dataclass(frozen=True)
class _Choice:
    """What is being chosen, in the words of its errors."""

    #: What the steps are, and what the request's field naming one is called.
    noun: str
    field: str
    #: What the steps that may be chosen are doing, and the pipeline when one is.
    doing: str
    pipeline_doing: str
    #: Whether a step named that is not doing it is refused here (else the caller says why).
    only_those_doing_it: bool
    none: type[Exception]
    ambiguous: type[Exception]


_GATES = _Choice("approval gate", "gate", "open", "awaiting approval", False, GateNotOpen, GateAmbiguous)
_REPAIRS = _Choice("job step", "step", "awaiting repair", "awaiting repair", True, NotAwaitingRepair, StepAmbiguous)


def _chosen(pipeline_id: str, names: Mapping[str, str], doing: list[str], reference: str | None, of: _Choice) -> str:
    """The one rule of both: the step ``reference`` names (by id, else by name), or the only one ``doing``.

    ``names`` maps each step of the kind to its name; ``doing`` lists, in
    order, those that may be chosen now.
    """
    if reference is None:
        if not doing:
            raise of.none(f"pipeline {pipeline_id!r} is not {of.pipeline_doing}: no {of.noun} of it is {of.doing}")
        if len(doing) > 1:
            raise of.ambiguous(
                f"pipeline {pipeline_id!r} has {len(doing)} {of.noun}s {of.doing} "
                f'({", ".join(repr(names[step]) for step in doing)}); name one in "{of.field}"'
            )
        return doing[0]
    found = referenced(names, reference)
    if not found:
        raise of.none(f"pipeline {pipeline_id!r} has no {of.noun} {reference!r}")
    live = [step for step in found if step in doing]
    if not live and of.only_those_doing_it:
        raise of.none(f"{of.noun} {reference!r} of pipeline {pipeline_id!r} is not {of.doing}")
    if len(live) > 1:
        raise of.ambiguous(
            f"pipeline {pipeline_id!r} has several {of.noun}s named {reference!r} {of.doing}; name one by its "
            f"step id ({', '.join(live)})"
        )
    return (live or found[-1:])[0]
