"""The asynchronous visit's state machine, as data: one row per step, saying which states of the
review Task (status, businessStatus) and of the Encounter it starts from and leads to.

    step                 Task from                          Task to                                Encounter to
    submit               (none)                             requested / submitted                  arrived
    triage-decline       (none)                             rejected / declined                    cancelled
    claim                requested / submitted              in-progress / in-review                in-progress
    ask                  in-progress / in-review            in-progress / awaiting-patient         -
    answer               in-progress / awaiting-patient     in-progress / in-review                -
    decline              in-progress / in-review|awaiting   rejected / declined|referred-to-sync.  cancelled
    complete             in-progress / in-review            completed / completed                  finished

`submit` and `triage-decline` are enforced by `$submit` (submit.py); the other rows are the
transitions the Task write rules enforce as they land (issue 9, in progress).
R4 value sets: Task.status (task-status), Encounter.status (encounter-status); businessStatus
codes: profiles/codesystems/visit-review-status.json.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from profiles.canonical import CANONICAL_BASE

__all__ = ["review_task_id", "Step", "STEPS", "REVIEW_STATUS", "TASK_CODE", "DECLINE_REASON", "CHARGE_CODE", "INTAKE_CONCEPT"]

REVIEW_STATUS = f"{CANONICAL_BASE}/CodeSystem/visit-review-status"
DECLINE_REASON = f"{CANONICAL_BASE}/CodeSystem/visit-decline-reason"
INTAKE_CONCEPT = f"{CANONICAL_BASE}/CodeSystem/intake-concept"
# Task.code of a review Task (what makes a Task the review of a visit, and the $submit idempotency key)
TASK_CODE = {"system": f"{CANONICAL_BASE}/CodeSystem/visit-task", "code": "review"}
CHARGE_CODE = {"system": f"{CANONICAL_BASE}/CodeSystem/visit-task", "code": "async-visit-fee"}


@dataclass(frozen=True)
class Step:
    name: str
    task_from: frozenset[tuple[str, str]]  # (Task.status, businessStatus) it may start from; empty: no Task yet
    task_to: tuple[str, str]
    encounter_to: str | None  # None: the Encounter does not change


def _states(*pairs: tuple[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset(pairs)


STEPS: dict[str, Step] = {s.name: s for s in (
    Step("submit", _states(), ("requested", "submitted"), "arrived"),
    Step("triage-decline", _states(), ("rejected", "declined"), "cancelled"),
    Step("claim", _states(("requested", "submitted")), ("in-progress", "in-review"), "in-progress"),
    Step("ask", _states(("in-progress", "in-review")), ("in-progress", "awaiting-patient"), None),
    Step("answer", _states(("in-progress", "awaiting-patient")), ("in-progress", "in-review"), None),
    Step("decline", _states(("in-progress", "in-review"), ("in-progress", "awaiting-patient")),
         ("rejected", "declined"), "cancelled"),
    Step("refer", _states(("in-progress", "in-review"), ("in-progress", "awaiting-patient")),
         ("rejected", "referred-to-synchronous"), "cancelled"),
    Step("complete", _states(("in-progress", "in-review")), ("completed", "completed"), "finished"),
)}


def review_task_id(encounter_id: str) -> str:
    """The review Task of a visit has an id derived from the Encounter's (at most 64 characters):
    $submit creates it once, and the message hooks find it without a search."""
    return "review-" + hashlib.sha256(encounter_id.encode()).hexdigest()[:40]
