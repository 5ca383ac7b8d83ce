"""The prescribing rules (prescribing/) on the write path: a write hook on MedicationRequest that
runs inside the write's unit of work, so a refused prescription is never stored and never reaches
the e-prescribing trigger's outbox job (both hooks share the unit of work).

Which writes: every one that makes a MedicationRequest active (created active, or changed to active)
when it belongs to the asynchronous-visit world: its encounter is an async visit (class VR), or it
claims the async-prescription profile, or a signed-in user (a token with a fhirUser) writes it.
Records an EHR imports with a backend-services token (system/ scopes) for its own visits are stored
as records: the server holds EHR data too, and those prescriptions were not made here.

A signed-in user may only write a prescription whose requester they are (a patient app cannot
write one, a clinician cannot prescribe in a colleague's name): 403.
Refusals: 422, one business-rule issue per broken rule, each naming the rule id.
"""

from __future__ import annotations

import orjson

from smart_auth.principal import acting

from ..errors import Forbidden, OutcomeIssue, UnprocessableEntity
from ..interactions.resource_reads import read_resource, relative_reference_of
from ..search.parse import parse_search
from ..storage import StoredVersion, UnitOfWork
from .lifecycle import review_task_id
from .prescribing import PrescribingContext, RuleSet

__all__ = ["PrescribingHook", "ASYNC_PRESCRIPTION"]

ASYNC_PRESCRIPTION = "http://fhir-async-telehealth.example/StructureDefinition/async-prescription"
_VR = ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "VR")


class PrescribingHook:
    def __init__(self, rules: RuleSet):
        self.rules = rules

    async def __call__(self, uow: UnitOfWork, previous: StoredVersion | None, stored: StoredVersion) -> None:
        if stored.body is None:
            return
        request = orjson.loads(stored.body)
        old = orjson.loads(previous.body) if previous is not None and previous.body is not None else None
        if request.get("status") != "active" or (old is not None and old.get("status") == "active"):
            return  # not a write that makes it active
        principal = acting.get()
        user = principal.fhir_user if principal is not None and not principal.unrestricted else None
        encounter = await read_resource(uow, relative_reference_of(request.get("encounter")))
        visit_class = (encounter or {}).get("class") or {}
        claims = ASYNC_PRESCRIPTION in ((request.get("meta") or {}).get("profile") or [])
        if not ((visit_class.get("system"), visit_class.get("code")) == _VR or claims or user):
            return
        if user is not None and user != relative_reference_of(request.get("requester")):
            raise Forbidden("A prescription is written by its prescriber: requester must be the signed-in clinician")
        ctx = await self._context(uow, request, encounter)
        refusals = self.rules.check(ctx)
        if refusals:
            raise UnprocessableEntity("The prescription breaks the rules of asynchronous prescribing", issues=[
                OutcomeIssue("error", "business-rule",
                             f"{r.rule_id}: {r.message}" + (f" ({r.detail})" if r.detail else ""), r.expression, r.rule_id)
                for r in refusals])

    async def _context(self, uow: UnitOfWork, request: dict, encounter: dict | None) -> PrescribingContext:
        location = task = None
        intakes: list[dict] = []
        encounter_ref = relative_reference_of(request.get("encounter"))
        if encounter is not None and encounter_ref:
            for entry in encounter.get("location") or []:
                location = await read_resource(uow, relative_reference_of((entry or {}).get("location")))
                if location is not None:
                    break
            task = await read_resource(uow, f"Task/{review_task_id(encounter_ref.split('/', 1)[1])}")
            page = await uow.search(parse_search(["QuestionnaireResponse"], [("encounter", encounter_ref), ("_count", "50")]))
            intakes = [orjson.loads(v.body) for v in page.matches]
        medication = await read_resource(uow, relative_reference_of(request.get("medicationReference")))
        questionnaires: dict[str, dict] = {}
        for intake in intakes:  # stored Questionnaires (the shipped intakes the rules know already)
            canonical = intake.get("questionnaire")
            if isinstance(canonical, str) and canonical not in questionnaires:
                url, _, version = canonical.partition("|")
                params = [("url", url), ("_count", "1")] + ([("version", version)] if version else [])
                page = await uow.search(parse_search(["Questionnaire"], params))
                if page.matches:
                    questionnaires[canonical] = orjson.loads(page.matches[0].body)
        return PrescribingContext(
            medication_request=request, encounter=encounter, location=location,
            practitioner=await read_resource(uow, relative_reference_of(request.get("requester"))), task=task,
            intake_responses=intakes, questionnaires=questionnaires, medication=medication,
        )
