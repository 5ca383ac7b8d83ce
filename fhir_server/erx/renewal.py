"""Answering a pharmacy's renewal request: when a clinician closes a renewal Task (an ordinary FHIR
update of it), the RxRenewalResponse goes to the pharmacy (a write hook on Task, so the answer, its
transmission Task and its outbox job commit with the update, or not at all).

The renewal Task is the one /erx/inbound made for an RxRenewalRequest (reflect.renewal_task: code
`renewal-request`, owner = the prescriber, focus = the original MedicationRequest when matched).
The clinician answers it by moving it from an open status (requested, received, accepted,
in-progress) to:

- `completed` with a `Task.output` of type `decision` (a code of reflect.TASK_PARAMETER_SYSTEM,
  like every parameter of these Tasks) whose value is `Approved`, `ApprovedWithChanges` or
  `Denied` (valueCode, or a valueCoding/valueCodeableConcept coding of RENEWAL_DECISION_SYSTEM).
  Completing without a decision is refused: an approval lets the pharmacy dispense, so it is never
  implied. Optional outputs: `refills` (valueUnsignedInt/valueInteger: the refills granted;
  Approved grants what the pharmacy asked for, and defaults to it; ApprovedWithChanges is a
  different number and needs it) and `note` (valueString: text for the pharmacy, at most 210
  characters).
- `rejected`: Denied (an explicit `decision` may only say Denied). Why, for the pharmacy: a
  `denial-reason` output (valueCode, or a coding of RENEWAL_DENIAL_SYSTEM, with a SCRIPT reason
  code of codes.RENEWAL_DENIAL_REASONS, e.g. AM "Patient needs appointment"; or valueString free
  text; a valueCodeableConcept may carry both) and/or `Task.statusReason` (text, or a coding of
  RENEWAL_DENIAL_SYSTEM). At least a code or a text is needed; the text is at most 70 characters.
  A `note` output is used as the reason text only when there is no other.

What is sent: build_renewal_response(the request's Header, kept in the Task's inputs; the
decision; the context of the original MedicationRequest = `Task.focus`). The message therefore
carries the original prescription (its PrescriberOrderNumber, drug, sig, pharmacy) with the
refills granted. When no MedicationRequest was matched on arrival, the clinician sets
`Task.focus` to the right one in the same update; without it the update is refused (422 naming
Task.focus). The focus must be the Task's patient's (when the Task names one by reference).

Not sent here (each refused with a 422 naming what to do instead, and the update undone):
- `Replace`: its message carries the replacement prescription, which this server has no way to
  take in a renewal answer yet. Deny the renewal and write the new prescription (which goes to the
  pharmacy as a NewRx). Creating any new MedicationRequest (a changed or replacement order, or a
  record of the renewed one) is the clinician's, not this hook's.
- a controlled substance's approval (EPCS signing, as for NewRx: trigger.refuse_controlled_substances);
- anything the mapper refuses (a pharmacy other than the one that asked, a missing name ...).

Once: the answer is sent on the update that closes the Task. Later updates (or a reopen and a
second close) send nothing: the RxRenewalResponse's transmission Task has `partOf` = the renewal
Task, which is looked up (`Task?part-of=Task/<id>`) before sending. Its delivery state is the
transmission Task's (businessStatus), as for NewRx and CancelRx.
"""

from __future__ import annotations

import uuid

import orjson

from mappers.ncpdp import codes
from mappers.ncpdp.envelope import new_message_id
from mappers.ncpdp.reflect import (
    BASE,
    TASK_CODE_SYSTEM,
    TASK_PARAMETER_SYSTEM,
    renewal_request_header,
    transmission_task,
    transmitted_message_type,
)
from mappers.ncpdp.refusals import Refusals
from mappers.ncpdp.renewal_response import build_renewal_response
from mappers.ncpdp.resources import resolve_context

from ..errors import UnprocessableEntity
from ..interactions.search import build_query
from ..storage import StoredVersion, UnitOfWork
from .config import ErxSettings
from .trigger import JOB_KIND, refuse_controlled_substances, store_reader

MESSAGE_TYPE = "RxRenewalResponse"
RENEWAL_CODE = "renewal-request"
RENEWAL_DECISION_SYSTEM = f"{BASE}/CodeSystem/erx-renewal-decision"
RENEWAL_DENIAL_SYSTEM = f"{BASE}/CodeSystem/ncpdp-renewal-denial-reason"
# Task.output types (codes of TASK_PARAMETER_SYSTEM) the clinician's answer uses
DECISION, REFILLS, NOTE, DENIAL_REASON = "decision", "refills", "note", "denial-reason"

OPEN = frozenset({"requested", "received", "accepted", "in-progress"})
ANSWERED = frozenset({"completed", "rejected"})
SENDABLE_DECISIONS = ("Approved", "ApprovedWithChanges", "Denied")


def is_renewal_task(task: dict) -> bool:
    return any(c.get("system") == TASK_CODE_SYSTEM and c.get("code") == RENEWAL_CODE
               for c in (task.get("code") or {}).get("coding") or [])


def _outputs(task: dict) -> dict[str, dict]:
    """{output type code: the output entry} (the first of each type)."""
    found: dict[str, dict] = {}
    for entry in task.get("output") or []:
        if not isinstance(entry, dict):
            continue
        for coding in (entry.get("type") or {}).get("coding") or []:
            if coding.get("system") == TASK_PARAMETER_SYSTEM and isinstance(coding.get("code"), str):
                found.setdefault(coding["code"], entry)
    return found


def _codes(entry: dict, system: str) -> list[str]:
    """The codes an output carries: valueCode, or codings (of `system`, or without a system)."""
    if isinstance(entry.get("valueCode"), str):
        return [entry["valueCode"].strip()]
    codings = []
    if isinstance(entry.get("valueCoding"), dict):
        codings.append(entry["valueCoding"])
    if isinstance(entry.get("valueCodeableConcept"), dict):
        codings.extend(entry["valueCodeableConcept"].get("coding") or [])
    return [c["code"].strip() for c in codings if isinstance(c, dict) and isinstance(c.get("code"), str)
            and c.get("system") in (None, system)]


def _text(entry: dict | None) -> str | None:
    if not entry:
        return None
    for key in ("valueString", "valueMarkdown"):
        if isinstance(entry.get(key), str):
            return entry[key]
    concept = entry.get("valueCodeableConcept")
    if isinstance(concept, dict) and isinstance(concept.get("text"), str):
        return concept["text"]
    return None


class _Answer:
    """What the clinician's update says, checked; every problem goes into `refusals`."""

    def __init__(self, task: dict, refusals: Refusals):
        outputs = _outputs(task)
        self.refills: int | None = None
        self.note: str | None = None
        self.denial_code: str | None = None
        self.denial_reason: str | None = None
        decision = None
        if DECISION in outputs:
            found = [c for c in _codes(outputs[DECISION], RENEWAL_DECISION_SYSTEM)
                     if c in SENDABLE_DECISIONS or c == "Replace"]
            if not found:
                refusals.add("Task.output", "the decision must be Approved, ApprovedWithChanges or Denied "
                             f"(a valueCode, or a coding of {RENEWAL_DECISION_SYSTEM})")
            else:
                decision = found[0]
        if task.get("status") == "rejected":
            if decision not in (None, "Denied"):
                refusals.add("Task.output", f"a rejected renewal request is Denied, not {decision}; "
                             "to approve it, complete the Task")
            decision = "Denied"
        elif decision is None and DECISION not in outputs:
            refusals.add("Task.output", "completing a renewal request needs a decision output "
                         f"(type {TASK_PARAMETER_SYSTEM}|{DECISION}): Approved, ApprovedWithChanges or Denied")
        if decision == "Replace":
            refusals.add("Task.output", "Replace (a different prescription instead) cannot be sent from this "
                         "server yet: deny the renewal and write the new prescription, which goes to the "
                         "pharmacy as a NewRx")
        self.decision = decision

        if REFILLS in outputs:
            entry = outputs[REFILLS]
            value = next((entry[k] for k in ("valueUnsignedInt", "valueInteger", "valuePositiveInt") if k in entry),
                         None)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                refusals.add("Task.output", "refills must be a whole number of refills (valueUnsignedInt)")
            elif decision == "Denied":
                refusals.add("Task.output", "a denial grants no refills")
            else:
                self.refills = value
        if decision == "ApprovedWithChanges" and REFILLS not in outputs:
            refusals.add("Task.output", "ApprovedWithChanges needs the refills granted (a refills output): "
                         "a different number than the pharmacy asked for")
        note = _text(outputs.get(NOTE))
        if NOTE in outputs and note is None:
            refusals.add("Task.output", "the note must be text (valueString)")

        if decision == "Denied":
            self.denial_code, self.denial_reason = self._denial(task, outputs, note, refusals)
        else:
            self.note = note
            if DENIAL_REASON in outputs:
                refusals.add("Task.output", "a denial reason goes only with a denial")

    @staticmethod
    def _denial(task: dict, outputs: dict[str, dict], note: str | None,
                refusals: Refusals) -> tuple[str | None, str | None]:
        entry = outputs.get(DENIAL_REASON)
        reason = task.get("statusReason") if isinstance(task.get("statusReason"), dict) else {}
        code_candidates = _codes(entry, RENEWAL_DENIAL_SYSTEM) if entry else []
        code_candidates += [c["code"].strip() for c in reason.get("coding") or []
                            if isinstance(c, dict) and c.get("system") == RENEWAL_DENIAL_SYSTEM
                            and isinstance(c.get("code"), str)]
        code = code_candidates[0] if code_candidates else None
        bad_code = code is not None and code not in codes.RENEWAL_DENIAL_REASONS
        if bad_code:
            refusals.add("Task.output", "the denial reason code must be a SCRIPT renewal denial code: "
                         + ", ".join(f"{k} ({v})" for k, v in codes.RENEWAL_DENIAL_REASONS.items()))
            code = None
        texts = [t.strip() for t in (_text(entry), reason.get("text"), note) if isinstance(t, str) and t.strip()]
        text = texts[0] if texts else None
        if code is None and text is None and not bad_code:
            refusals.add("Task.statusReason", "a denial needs a reason for the pharmacy: Task.statusReason.text "
                         "or a denial-reason output (a SCRIPT denial code such as AM, or text)")
        return code, text


async def answered_before(uow: UnitOfWork, task_id: str) -> bool:
    """Whether an RxRenewalResponse was already queued for this renewal Task."""
    query = build_query(["Task"], [("part-of", f"Task/{task_id}"), ("_count", "100")])
    page = await uow.search(query)
    return any(transmitted_message_type(orjson.loads(v.body)) == MESSAGE_TYPE for v in page.matches if v.body)


def _reference(value: object) -> str | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref.split("/_history/")[0].strip() if isinstance(ref, str) and ref.strip() else None


class RenewalAnswer:
    """Write hook on Task: the RxRenewalResponse when a renewal Task is answered (module docstring)."""

    def __init__(self, settings: ErxSettings):
        self.settings = settings

    async def __call__(self, uow: UnitOfWork, previous: StoredVersion | None, stored: StoredVersion) -> None:
        if stored.body is None or previous is None or previous.body is None:
            return  # deletions and creations answer nothing
        task, before = orjson.loads(stored.body), orjson.loads(previous.body)
        if not (is_renewal_task(task) and task.get("status") in ANSWERED and before.get("status") in OPEN):
            return
        if await answered_before(uow, stored.id):
            return
        await self._answer(uow, stored.id, task, before)

    async def _answer(self, uow: UnitOfWork, task_id: str, task: dict, before: dict) -> None:
        refusals = Refusals(MESSAGE_TYPE)
        try:
            header = renewal_request_header(before)  # the request as it arrived
        except ValueError:
            raise UnprocessableEntity("the Task does not keep the renewal request it answers (its inputs)",
                                      expression="Task.input") from None
        try:
            changed = renewal_request_header(task) != header
        except ValueError:
            changed = True
        if changed:
            refusals.add("Task.input", "the renewal request's details (Task.input) are the pharmacy's and cannot "
                         "change; answer in Task.output")
        answer = _Answer(task, refusals)

        mr = await self._original(uow, task, refusals)
        if mr is not None and answer.decision != "Denied" and mr.get("status") == "entered-in-error":
            refusals.add("Task.focus", "the MedicationRequest was entered in error; it cannot be renewed")
        refusals.raise_if_any()
        assert mr is not None and answer.decision is not None

        refills = answer.refills
        requested = _requested_refills(before)
        if answer.decision == "Approved" and refills is None:
            refills = requested  # Approved grants what the pharmacy asked for
        ctx = await resolve_context(mr, store_reader(uow))
        message_id = new_message_id()
        try:
            xml = build_renewal_response(
                header, answer.decision, ctx, refills=refills, note=answer.note,
                denial_code=answer.denial_code, denial_reason=answer.denial_reason,
                pharmacy_requested_refills=requested, sender_id=self.settings.sender_id, message_id=message_id)
        except ValueError as err:  # what the pharmacy sent does not fit its Header elements, or settings
            raise UnprocessableEntity(f"the RxRenewalResponse cannot be sent: {err}", expression="Task") from None
        if answer.decision != "Denied":
            try:
                refuse_controlled_substances(xml)
            except UnprocessableEntity:
                raise UnprocessableEntity(
                    "Approving a controlled substance's renewal needs an EPCS-signed message, which this server "
                    "cannot send yet: deny it here and prescribe outside this system",
                    expression="Task.focus") from None
        await self._queue(uow, task_id, mr, message_id, xml)

    @staticmethod
    async def _original(uow: UnitOfWork, task: dict, refusals: Refusals) -> dict | None:
        ref = _reference(task.get("focus"))
        parts = ref.rstrip("/").split("/") if ref else []
        if len(parts) < 2 or parts[-2] != "MedicationRequest":
            refusals.add("Task.focus", "no prescription was matched to this renewal request: set Task.focus to the "
                         "MedicationRequest the pharmacy asks to renew")
            return None
        version = await uow.read("MedicationRequest", parts[-1])
        if version is None or version.body is None:
            refusals.add("Task.focus", "the MedicationRequest in Task.focus does not exist")
            return None
        mr = orjson.loads(version.body)
        patient, subject = _reference(task.get("for")), _reference(mr.get("subject"))
        if patient and subject and patient.split("/")[-2:] != subject.split("/")[-2:]:
            refusals.add("Task.focus", "the MedicationRequest in Task.focus is another patient's than the Task's")
            return None
        return mr

    @staticmethod
    async def _queue(uow: UnitOfWork, renewal_task_id: str, mr: dict, message_id: str, xml: bytes) -> None:
        """As trigger.ErxTrigger._queue: the transmission Task and the outbox job, in this unit of work."""
        transmission = transmission_task(mr, MESSAGE_TYPE, message_id)
        transmission["partOf"] = [{"reference": f"Task/{renewal_task_id}"}]
        transmission_id = str(uuid.uuid4())
        await uow.write("Task", transmission_id, transmission, method="POST", must_not_exist=True)
        await uow.enqueue(JOB_KIND, message_id, {
            "message_type": MESSAGE_TYPE, "message_id": message_id, "xml": xml.decode("utf-8"),
            "medication_request": f"MedicationRequest/{mr['id']}", "task": f"Task/{transmission_id}",
        })


def _requested_refills(task: dict) -> int | None:
    for entry in task.get("input") or []:
        if any(c.get("system") == TASK_PARAMETER_SYSTEM and c.get("code") == "requested-refills"
               for c in (entry.get("type") or {}).get("coding") or []):
            value = entry.get("valueUnsignedInt")
            return value if isinstance(value, int) and not isinstance(value, bool) else None
    return None


__all__ = ["RENEWAL_DECISION_SYSTEM", "RENEWAL_DENIAL_SYSTEM", "RenewalAnswer", "answered_before", "is_renewal_task"]
