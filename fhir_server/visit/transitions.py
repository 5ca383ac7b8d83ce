"""The review Task's steps after $submit, enforced where they land: write hooks on Task and
Communication that run inside the write's unit of work (interactions/write_hooks.py), so a refused
step changes nothing and an accepted one changes the Encounter, the fee and the messages with it.

Task writes (a clinician's PUT or PATCH of the review Task) follow lifecycle.STEPS:
  claim     requested/submitted -> in-progress/in-review, with `owner` = the clinician making the
            request (their fhirUser), who must hold an active licence in the state the patient is
            in (the Encounter Location's address.state). Encounter -> in-progress, the clinician
            added as participant. Of two clinicians claiming at once exactly one wins: the writes
            are serialised, and the second finds the Task already in progress (409 visit-claimed),
            or its If-Match version stale (412).
  decline / refer  -> rejected/declined or rejected/referred-to-synchronous; needs statusReason.
            Encounter cancelled, the fee's ChargeItem cancelled, a Communication tells the patient.
  complete  -> completed/completed; needs a Condition and a CarePlan with this encounter.
            Encounter -> finished in the same unit of work.
  ask / answer   (also made by the server from messages, below).
Any other change of (status, businessStatus) is 409 `visit-transition`; the review Task's focus,
for and code never change (409 `visit-task-fixed`); review Tasks are created only by $submit and
never deleted (decline instead).

Encounter writes: once a visit is submitted its status changes only with the Task's steps (409
`visit-encounter-status`), and it is not deleted.

Communication creates on a submitted visit: only between the visit's patient and its reviewing
clinician (403 otherwise); the owner's message to the patient moves the Task to awaiting-patient;
the patient's message (a reply) moves it back to in-review. Follow-up messages on a finished visit
are kept and change nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Iterator

import orjson

from smart_auth.principal import acting

from ..errors import Forbidden, business_rule, conflict
from ..exchange.document import compose_consultation
from ..interactions.resource_reads import read_resource, read_stored, reference_of, search_resources
from ..storage import ResourceReader, StoredVersion, UnitOfWork
from ..storage.serialization import now_instant
from .licensure import is_licensed
from .lifecycle import CHARGE_CODE, REVIEW_STATUS, STEPS, TASK_CODE, review_task_id
from .metrics import VisitMetrics

__all__ = ["VisitTransitions", "lifecycle_write", "is_review_task", "task_state", "patient_state"]

# Set while the visit's own code ($submit, the hooks below) writes review Tasks: those writes are
# the lifecycle itself, not client steps to check.
_lifecycle: ContextVar[bool] = ContextVar("visit_lifecycle_write", default=False)


@contextmanager
def lifecycle_write() -> Iterator[None]:
    token = _lifecycle.set(True)
    try:
        yield
    finally:
        _lifecycle.reset(token)


def is_review_task(task: dict) -> bool:
    codings = ((task.get("code") or {}).get("coding")) or []
    return any(isinstance(c, dict) and c.get("system") == TASK_CODE["system"] and c.get("code") == TASK_CODE["code"]
               for c in codings)


def task_state(task: dict) -> tuple[str | None, str | None]:
    business = next((c.get("code") for c in ((task.get("businessStatus") or {}).get("coding") or [])
                     if isinstance(c, dict) and c.get("system") == REVIEW_STATUS), None)
    return task.get("status"), business


async def patient_state(reader: ResourceReader, encounter: dict) -> str | None:
    """The state the patient is in during the visit: the Encounter Location's address.state."""
    for entry in encounter.get("location") or []:
        location = await read_resource(reader, reference_of((entry or {}).get("location")))
        if location is not None:
            state = (location.get("address") or {}).get("state")
            if isinstance(state, str) and state:
                return state
    return None


def _step_between(before: tuple, after: tuple):
    for step in STEPS.values():
        if before in step.task_from and step.task_to == after:
            return step
    return None


class VisitTransitions:
    """The write hooks (register with `hooks.register("Task", t.on_task)` and "Communication")."""

    def __init__(self, metrics: VisitMetrics | None = None):
        self.metrics = metrics

    async def stamp_task(self, reader: ResourceReader, id: str, task: dict) -> dict:
        """Before a review Task's step is written: when it happened, in the Task (turnaround is
        measured from these: authoredOn = submitted, executionPeriod.start = claimed,
        executionPeriod.end = completed or declined). The client's own values are kept."""
        if not is_review_task(task) or _lifecycle.get():
            return task
        found = await reader.read("Task", id)
        if found is None or found.body is None:
            return task
        before, after = task_state(orjson.loads(found.body)), task_state(task)
        if before == after:
            return task
        now = now_instant()
        period = dict(task.get("executionPeriod") or {})
        if after[0] == "in-progress":
            period.setdefault("start", now)
        if after[0] in ("completed", "rejected"):
            period.setdefault("end", now)
        return {**task, "executionPeriod": period, "lastModified": now}

    async def on_task(self, uow: UnitOfWork, previous: StoredVersion | None, stored: StoredVersion) -> None:
        old = orjson.loads(previous.body) if previous is not None and previous.body is not None else None
        if stored.body is None:  # a deletion
            if old is not None and is_review_task(old):
                raise conflict("visit-task-delete", "A visit's review Task is never deleted; decline the visit instead",
                               "Task")
            return
        new = orjson.loads(stored.body)
        if not (is_review_task(new) or (old is not None and is_review_task(old))) or _lifecycle.get():
            return
        if old is None:
            raise business_rule("visit-task-create", "A review Task is created by Encounter/$submit, not written directly",
                                "Task")
        for field in ("focus", "for", "code"):
            if old.get(field) != new.get(field):
                raise conflict("visit-task-fixed", f"The review Task's {field} cannot change", f"Task.{field}")
        before, after = task_state(old), task_state(new)
        if before == after:
            if before[0] == "in-progress" and reference_of(old.get("owner")) != reference_of(new.get("owner")):
                raise conflict("visit-claimed", "This visit is already being reviewed by another clinician", "Task.owner")
            return
        step = _step_between(before, after)
        if step is None:
            raise conflict("visit-transition", f"A review Task cannot go from {before[0]}/{before[1]} to "
                            f"{after[0]}/{after[1]}", "Task.status")
        encounter_version = await read_stored(uow, reference_of(new.get("focus")))
        if encounter_version is None:
            raise business_rule("visit-encounter-missing", "The visit's Encounter is not known", "Task.focus")
        encounter = orjson.loads(encounter_version.body)
        if step.name == "claim":
            await self._check_claim(uow, old, new, encounter)
            participants = [p for p in encounter.get("participant") or [] if reference_of((p or {}).get("individual")) != reference_of(new["owner"])]
            participants.append({"type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                                       "code": "PPRF", "display": "primary performer"}]}],
                                 "individual": {"reference": reference_of(new["owner"])}})
            encounter = {**encounter, "participant": participants}
        elif step.name in ("decline", "refer"):
            if not new.get("statusReason"):
                raise business_rule("visit-decline-reason", "Declining a visit needs a statusReason the patient will be told",
                              "Task.statusReason")
            await self._cancel_fee(uow, reference_of(new["focus"]))
            await self._tell_patient(uow, new, encounter)
        elif step.name == "complete":
            reference = reference_of(new["focus"]) or ""
            if not await search_resources(uow, "Condition", [("encounter", reference)]):
                raise business_rule("visit-complete-diagnosis",
                                    "Completing a visit needs a diagnosis (a Condition with this encounter)", "Task")
            if not await search_resources(uow, "CarePlan", [("encounter", reference)]):
                raise business_rule("visit-complete-careplan",
                                    "Completing a visit needs a care plan (a CarePlan with this encounter)", "Task")
        if self.metrics is not None:
            self.metrics.step(step.name, new)
        if step.encounter_to is not None:
            encounter = {**encounter, "status": step.encounter_to}
            if step.encounter_to in ("finished", "cancelled"):
                encounter["period"] = {**(encounter.get("period") or {}), "end": now_instant()}
            await uow.write("Encounter", encounter_version.id, encounter, method="PUT",
                            expected_version=encounter_version.version)
        if step.name == "complete":  # the consultation document, in the same unit of work (exchange/document.py)
            await compose_consultation(uow, reference_of(new["focus"]) or "")

    async def _check_claim(self, uow: UnitOfWork, old: dict, new: dict, encounter: dict) -> None:
        owner = reference_of(new.get("owner"))
        if not owner or not owner.startswith("Practitioner/"):
            raise business_rule("visit-claim-owner", "Claiming a visit sets owner to the reviewing Practitioner", "Task.owner")
        principal = acting.get()
        if principal is not None and not principal.unrestricted and principal.fhir_user and principal.fhir_user != owner:
            raise Forbidden("A clinician claims a visit for themselves: owner must be the signed-in user")
        practitioner = await read_resource(uow, owner)
        state = await patient_state(uow, encounter)
        if practitioner is None or state is None or not is_licensed(practitioner, state, datetime.now(timezone.utc)):
            raise business_rule("visit-claim-licence", "The clinician holds no active licence in the state the patient is in",
                          "Task.owner")

    async def _cancel_fee(self, uow: UnitOfWork, encounter_ref: str | None) -> None:
        for charge in await search_resources(uow, "ChargeItem", [("context", encounter_ref or "")]):
            codes = [(c.get("system"), c.get("code")) for c in (charge.get("code") or {}).get("coding") or []]
            if (CHARGE_CODE["system"], CHARGE_CODE["code"]) in codes and charge.get("status") != "cancelled":
                await uow.write("ChargeItem", charge["id"], {**charge, "status": "cancelled"}, method="PUT")

    async def _tell_patient(self, uow: UnitOfWork, task: dict, encounter: dict) -> None:
        reason = task.get("statusReason") or {}
        text = reason.get("text") or next((c.get("display") for c in reason.get("coding") or [] if c.get("display")), None)
        message = "Your clinician could not complete this visit online" + (f": {text}" if text else ".")
        if task_state(task)[1] == "referred-to-synchronous":
            message += " Please book a live (video or in-person) visit."
        message += " The visit fee was not charged."
        await uow.write("Communication", f"decline-{task['id']}"[:64], {
            "resourceType": "Communication", "status": "completed", "subject": task.get("for"),
            "encounter": task.get("focus"), "recipient": [task.get("for")], "sender": task.get("owner"),
            "sent": now_instant(), "about": [{"reference": f"Task/{task['id']}"}], "payload": [{"contentString": message}],
        }, method="PUT")

    async def on_encounter(self, uow: UnitOfWork, previous: StoredVersion | None, stored: StoredVersion) -> None:
        """A submitted visit's status follows its review Task: a client cannot move it by hand."""
        if previous is None or previous.body is None or _lifecycle.get():
            return
        old = orjson.loads(previous.body)
        new = orjson.loads(stored.body) if stored.body is not None else None
        if new is not None and old.get("status") == new.get("status"):
            return
        task = await uow.read("Task", review_task_id(stored.id))
        if task is not None and task.body is not None:
            raise conflict("visit-encounter-status", "A submitted visit's Encounter follows its review Task: "
                            "claim, decline or complete the Task instead", "Encounter.status")

    async def on_communication(self, uow: UnitOfWork, previous: StoredVersion | None, stored: StoredVersion) -> None:
        if previous is not None or stored.body is None or _lifecycle.get():  # (the server's own notices)
            return
        message = orjson.loads(stored.body)
        encounter_ref = reference_of(message.get("encounter"))
        if not encounter_ref or not encounter_ref.startswith("Encounter/"):
            return
        found = await uow.read("Task", review_task_id(encounter_ref.split("/", 1)[1]))
        if found is None or found.body is None:
            return
        task = orjson.loads(found.body)
        status, business = task_state(task)
        sender = reference_of(message.get("sender"))
        parties = {reference_of(task.get("for")), reference_of(task.get("owner"))} - {None}
        if sender not in parties or any(reference_of(r) not in parties for r in message.get("recipient") or []):
            raise Forbidden("A visit's messages are between its patient and its reviewing clinician")
        if status != "in-progress":
            return
        if sender == reference_of(task.get("owner")) and business == "in-review":
            step = STEPS["ask"]
        elif sender == reference_of(task.get("for")) and business == "awaiting-patient":
            step = STEPS["answer"]
        else:
            return
        after = step.task_to
        if self.metrics is not None:
            self.metrics.step(step.name, task)
        updated = {**task, "status": after[0], "lastModified": now_instant(),
                   "businessStatus": {"coding": [{"system": REVIEW_STATUS, "code": after[1]}]}}
        await uow.write("Task", found.id, updated, method="PUT", expected_version=found.version)
