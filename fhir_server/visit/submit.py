"""`POST Encounter/{id}/$submit`: the patient hands the visit over for review (issue 9, step 2;
profiles/operations/submit.json).

Checks, each refusal a 422 business-rule OperationOutcome naming its rule, nothing changed:
  submit-not-async-visit   the Encounter is not an async visit (class VR)
  submit-not-planned       it was already submitted or closed (409: a conflict with its state)
  submit-intake-missing    no completed intake QuestionnaireResponse with this encounter
  submit-intake-invalid    a completed intake does not validate against its Questionnaire
  submit-state-unknown     where the patient is is unknown: neither the Encounter's Location gives an
                           address.state nor the intake answers its patient-state question

Then, in one unit of work (lifecycle.py rows `submit` / `triage-decline`):
  - any red-flag item (intake-concept#red-flag) answered true: the visit is declined at once:
    Encounter cancelled, the review Task rejected (declined, reason red-flag-emergency), and a
    Communication tells the patient to seek emergency or in-person care; no fee;
  - otherwise: Encounter arrived, the review Task requested/submitted (focus the Encounter, for the
    Patient, input the intakes and the visit's Media), and a ChargeItem for the flat fee.
The review Task's id is derived from the Encounter's, and created with must_not_exist: a second
$submit finds the first one's Task and returns it (200) instead of making another; one racing the
first is refused (409) and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

import orjson

from smart_auth.access import UPDATE
from smart_auth.principal import Principal

from ..errors import Conflict, NotFound, business_rule
from ..interactions.guard import check_write
from ..interactions.profile_check import find_questionnaire
from ..interactions.resource_reads import search_resources
from ..storage import ResourceExists, StoredVersion, UnitOfWork
from ..storage.serialization import format_instant
from ..validation.issues import has_errors
from ..validation.questionnaire import validate_response
from ..validation.service import Validation
from .licensure import USPS
from .lifecycle import CHARGE_CODE, DECLINE_REASON, REVIEW_STATUS, STEPS, TASK_CODE, review_task_id
from .metrics import VisitMetrics
from .prescribing.intake import answers, coded_link_ids
from .transitions import lifecycle_write, patient_state

__all__ = ["VisitFee", "submit_visit"]

_CANONICAL = "http://fhir-async-telehealth.example/StructureDefinition/"
_TASK_PROFILE = _CANONICAL + "visit-review-task"
_VR = ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "VR")


@dataclass(frozen=True)
class VisitFee:
    value: Decimal = Decimal("39.99")
    currency: str = "USD"

    @classmethod
    def parse(cls, text: str) -> "VisitFee":
        """'39.99 USD' (the --visit-fee flag)."""
        amount, _, currency = text.strip().partition(" ")
        value = Decimal(amount)
        if value < 0 or len(currency.strip()) != 3:
            raise ValueError(f"expected an amount and an ISO 4217 currency, e.g. '39.99 USD', got {text!r}")
        return cls(value, currency.strip().upper())


def red_flags(response: dict, questionnaire: dict) -> list[str]:
    """linkIds of red-flag questions (item code intake-concept#red-flag) answered true."""
    return [link_id for link_id in sorted(coded_link_ids(questionnaire, "red-flag"))
            if any(a.get("valueBoolean") is True for a in answers(response, link_id))]


def intake_state(response: dict, questionnaire: dict | None) -> str | None:
    """The USPS code answered to the intake's patient-state question (item code intake-concept#patient-state)."""
    if questionnaire is None:
        return None
    for link_id in sorted(coded_link_ids(questionnaire, "patient-state")):
        for answer in answers(response, link_id):
            coding = answer.get("valueCoding")
            if isinstance(coding, dict) and coding.get("system") == USPS and coding.get("code"):
                return coding["code"]
    return None


async def submit_visit(
    uow: UnitOfWork, validation: Validation, encounter_id: str, principal: Principal, fee: VisitFee,
    *, now: datetime | None = None, metrics: VisitMetrics | None = None,
) -> tuple[StoredVersion, bool]:
    """(the review Task, whether this call created it)."""
    current = await uow.read("Encounter", encounter_id)
    if current is None or current.body is None:
        raise NotFound(f"Resource Encounter/{encounter_id} is not known")
    await check_write(uow, principal, UPDATE, "Encounter", None, current=current)
    encounter = orjson.loads(current.body)
    visit_class = encounter.get("class") or {}
    if (visit_class.get("system"), visit_class.get("code")) != _VR:
        raise business_rule("submit-not-async-visit", "Only an asynchronous visit (Encounter.class VR) can be submitted",
                      "Encounter.class")
    task_id = review_task_id(encounter_id)
    existing = await uow.read("Task", task_id)
    if existing is not None and existing.body is not None:
        return existing, False  # submitted before: the same Task
    if encounter.get("status") != "planned":
        raise Conflict(f"The visit cannot be submitted from status '{encounter.get('status')}': it must be planned")

    reference = f"Encounter/{encounter_id}"
    intakes = [r for r in await search_resources(uow, "QuestionnaireResponse", [("encounter", reference)])
               if r.get("status") in ("completed", "amended")]
    if not intakes:
        raise business_rule("submit-intake-missing", "The visit has no completed intake (a QuestionnaireResponse with "
                      "this encounter and status completed)", "Encounter")
    flags: list[str] = []
    answered: list[tuple[dict, dict]] = []  # (intake, its Questionnaire)
    for intake in intakes:
        questionnaire = await find_questionnaire(uow, validation, intake.get("questionnaire") or "")
        if questionnaire is None:
            raise business_rule("submit-intake-invalid", "The intake's Questionnaire is not known to this server",
                                "Encounter")
        if has_errors(validate_response(intake, questionnaire, validation.terminology)):
            raise business_rule("submit-intake-invalid", f"The intake QuestionnaireResponse/{intake['id']} is not valid "
                          "against its Questionnaire (see $validate)", "Encounter")
        flags += red_flags(intake, questionnaire)
        answered.append((intake, questionnaire))
    new_location: dict | None = None
    if not await patient_state(uow, encounter):
        # A patient app (patient/ scopes) cannot write a Location, which is not patient data; the
        # intake's patient-state answer then says where the patient is, and the server records it.
        state = next(filter(None, (intake_state(i, q) for i, q in answered)), None)
        if state is None:
            raise business_rule("submit-state-unknown", "Where the patient is during the visit is unknown: the Encounter "
                          "needs a location whose address.state is given, or the intake its patient-state answer",
                          "Encounter.location")
        new_location = {"resourceType": "Location", "id": f"where-{review_task_id(encounter_id)}",
                        "meta": {"profile": [_CANONICAL + "patient-location"]}, "status": "active", "mode": "instance",
                        "name": "Where the patient is during an asynchronous visit",
                        "address": {"state": state, "country": "US"}}
        encounter = {**encounter, "location": [*(encounter.get("location") or []),
                                               {"location": {"reference": f"Location/{new_location['id']}"}}]}

    when = format_instant(now or datetime.now(timezone.utc))
    patient = encounter.get("subject") or {}
    step = STEPS["triage-decline" if flags else "submit"]
    media = await search_resources(uow, "Media", [("encounter", reference)])
    task: dict = {
        "resourceType": "Task", "id": task_id, "meta": {"profile": [_TASK_PROFILE]},
        "status": step.task_to[0],
        "businessStatus": {"coding": [{"system": REVIEW_STATUS, "code": step.task_to[1]}]},
        "intent": "order", "code": {"coding": [TASK_CODE]},
        "focus": {"reference": reference}, "for": patient, "authoredOn": when, "lastModified": when,
        "input": [
            *({"type": {"coding": [{"system": "http://hl7.org/fhir/resource-types", "code": "QuestionnaireResponse"}],
                        "text": "Intake"}, "valueReference": {"reference": f"QuestionnaireResponse/{r['id']}"}}
              for r in intakes),
            *({"type": {"coding": [{"system": "http://hl7.org/fhir/resource-types", "code": "Media"}],
                        "text": "Photo or video"}, "valueReference": {"reference": f"Media/{m['id']}"}}
              for m in media),
        ],
    }
    if flags:
        task["statusReason"] = {"coding": [{"system": DECLINE_REASON, "code": "red-flag-emergency"}],
                                "text": "Symptoms that need emergency or in-person care"}
        task["executionPeriod"] = {"start": when, "end": when}
    with lifecycle_write():
        if new_location is not None and await uow.read("Location", new_location["id"]) is None:
            await uow.write("Location", new_location["id"], new_location, method="PUT")
        stored, created = await _write(uow, task, encounter, current, step.encounter_to, flags, fee, when)
    if created and metrics is not None:
        metrics.step(step.name)
    return stored, created


async def _write(uow: UnitOfWork, task: dict, encounter: dict, current: StoredVersion, encounter_to: str | None,
                 flags: list[str], fee: VisitFee, when: str) -> tuple[StoredVersion, bool]:
    task_id, reference, patient = task["id"], task["focus"]["reference"], task["for"]
    # the Encounter first: the Task's profile checks that its focus is an async-visit Encounter
    await uow.write("Encounter", current.id, {**encounter, "status": encounter_to}, method="PUT",
                    expected_version=current.version)
    try:
        stored = await uow.write("Task", task_id, task, method="POST", must_not_exist=True)
    except ResourceExists:  # a concurrent $submit got there first: undo ours, it stands
        raise Conflict("The visit was submitted at the same time by another request; read its review Task") from None
    if flags:
        await uow.write("Communication", f"triage-{task_id}", {
            "resourceType": "Communication", "id": f"triage-{task_id}", "status": "completed",
            "subject": patient, "encounter": {"reference": reference}, "recipient": [patient], "sent": when,
            "about": [{"reference": f"Task/{task_id}"}],
            "payload": [{"contentString": (
                "Your answers describe symptoms that need care now, which an online visit cannot give. "
                "Call your local emergency number or go to an emergency department or urgent care. "
                "This visit was not charged.")}],
        }, method="POST", must_not_exist=True)
    else:
        await uow.write("ChargeItem", f"fee-{task_id}", {
            "resourceType": "ChargeItem", "id": f"fee-{task_id}", "status": "billable", "code": {"coding": [CHARGE_CODE],
            "text": "Asynchronous visit, flat fee"}, "subject": patient, "context": {"reference": reference},
            "occurrenceDateTime": when, "enteredDate": when,
            "priceOverride": {"value": float(fee.value), "currency": fee.currency},
            "overrideReason": "Flat fee of an asynchronous visit, shown to the patient before submitting",
        }, method="POST", must_not_exist=True)
    return stored, True
