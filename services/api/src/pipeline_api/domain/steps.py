"""Which step of a pipeline run by its code a person's decision is about: a gate to approve, a job step to repair.

A client names a step by its id (``"3"``) or its name, or names none when only
one step could be meant. The names come from the pipeline's code and the
reference from the client; both are only compared here, never put in an id.
"""

from __future__ import annotations

from collections.abc import Mapping

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
    pipeline_id = tree.id
    if gate is None:
        open_gates = tree.open_gates()
        if not open_gates:
            raise GateNotOpen(f"pipeline {pipeline_id!r} is not awaiting approval: no gate of it is open")
        if len(open_gates) > 1:
            raise GateAmbiguous(
                f"pipeline {pipeline_id!r} has {len(open_gates)} gates open "
                f'({", ".join(repr(g.record.name) for g in open_gates)}); name one in "gate"'
            )
        return open_gates[0]
    found = referenced({step: g.record.name for step, g in tree.gates.items()}, gate)
    if not found:
        raise GateNotOpen(f"pipeline {pipeline_id!r} has no approval gate {gate!r}")
    if len(found) > 1:
        still_open = [step for step in found if tree.gates[step] in tree.open_gates()]
        if len(still_open) > 1:
            raise GateAmbiguous(
                f"pipeline {pipeline_id!r} has several open gates named {gate!r}; name one by its step id "
                f"({', '.join(still_open)})"
            )
        found = still_open or found[-1:]
    return tree.gates[found[0]]


def chosen_repair(tree: PipelineTree, step: str | None) -> str:
    """The job step a repair or abandon is about: the one named, or the only one awaiting repair."""
    pipeline_id = tree.id
    waiting = tree.awaiting_repair()
    if step is None:
        if not waiting:
            raise NotAwaitingRepair(f"pipeline {pipeline_id!r} is not awaiting repair: no job step of it is")
        if len(waiting) > 1:
            raise StepAmbiguous(
                f"pipeline {pipeline_id!r} has {len(waiting)} job steps awaiting repair "
                f'({", ".join(repr(tree.job_steps[s].record.name) for s in waiting)}); name one in "step"'
            )
        return waiting[0]
    found = referenced({s: job.record.name for s, job in tree.job_steps.items()}, step)
    if not found:
        raise NotAwaitingRepair(f"pipeline {pipeline_id!r} has no job step {step!r}")
    found = [s for s in found if s in waiting]
    if not found:
        raise NotAwaitingRepair(f"job step {step!r} of pipeline {pipeline_id!r} is not awaiting repair")
    if len(found) > 1:
        raise StepAmbiguous(
            f"pipeline {pipeline_id!r} has several job steps named {step!r} awaiting repair; name one by its "
            f"step id ({', '.join(found)})"
        )
    return found[0]
