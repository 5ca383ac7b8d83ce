"""The consultation document (fhir_server/exchange/document.py): composed when the review Task
completes, in the same unit of work; readable, escaped section narratives; a correction after
completion makes a new Composition that replaces the current one, never a silent edit."""

from __future__ import annotations

import base64

import orjson
import pytest

from fhir_server.api.document_routes import composition_references, document_bundle
from fhir_server.errors import Forbidden, NotFound
from fhir_server.exchange import narrative
from fhir_server.exchange.document import current_composition, register_document_hooks
from fhir_server.interactions.write_hooks import HookedStore, WriteHooks
from fhir_server.search.extract import extract_index
from fhir_server.search.parse import parse_search
from fhir_server.storage import open_store
from fhir_server.validation.profile.xhtml import narrative_has_content, narrative_ok
from fhir_server.validation.structure import validate_resource
from fhir_server.visit.lifecycle import REVIEW_STATUS, TASK_CODE, review_task_id
from fhir_server.visit.transitions import VisitTransitions, lifecycle_write
from smart_auth.principal import Principal
from smart_auth.scopes import ScopeSet

ENC = "Encounter/visit-1"
PATIENT = {"reference": "Patient/pat-1"}
DOCTOR = {"reference": "Practitioner/doc-1"}
NASTY = "<script>alert('x')</script> & \"quotes\""


def task(status: str, business: str) -> dict:
    return {"resourceType": "Task", "id": review_task_id("visit-1"), "status": status, "intent": "order",
            "code": {"coding": [TASK_CODE]}, "focus": {"reference": ENC}, "for": PATIENT, "owner": DOCTOR,
            "businessStatus": {"coding": [{"system": REVIEW_STATUS, "code": business}]}}


CONDITION = {"resourceType": "Condition", "id": "dx-1", "subject": PATIENT, "encounter": {"reference": ENC},
             "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "L23.9"}],
                      "text": "Allergic contact dermatitis, left forearm"}}
CAREPLAN = {"resourceType": "CarePlan", "id": "plan-1", "status": "active", "intent": "plan", "subject": PATIENT,
            "encounter": {"reference": ENC}, "title": "Treatment plan", "description": "Avoid the band",
            "activity": [{"detail": {"status": "not-started", "description": "Apply the cream twice daily"}}]}
PRESCRIPTION = {"resourceType": "MedicationRequest", "id": "rx-1", "status": "active", "intent": "order",
                "subject": PATIENT, "encounter": {"reference": ENC}, "requester": DOCTOR,
                "medicationCodeableConcept": {"text": "Triamcinolone 0.1% cream"},
                "dosageInstruction": [{"text": "Apply thinly twice a day"}]}


@pytest.fixture()
async def store(tmp_path):
    raw = open_store(f"sqlite:///{tmp_path / 'doc.db'}", indexer=extract_index)
    await raw.open()
    hooks = WriteHooks()
    transitions = VisitTransitions()
    hooks.register("Task", transitions.on_task)
    hooks.register("Encounter", transitions.on_encounter)
    register_document_hooks(hooks)
    hooked = HookedStore(raw, hooks)
    async with hooked.unit_of_work() as uow:
        await uow.write("Patient", "pat-1", {"resourceType": "Patient", "name": [{"family": "Doe", "given": ["Ann"]}]},
                        method="PUT")
        await uow.write("Practitioner", "doc-1", {"resourceType": "Practitioner",
                                                  "name": [{"family": "Lee", "given": ["Sam"], "prefix": ["Dr"]}]},
                        method="PUT")
        await uow.write("Questionnaire", "intake", {
            "resourceType": "Questionnaire", "url": "http://clinic.example/Questionnaire/intake", "status": "active",
            "item": [{"linkId": "reason", "text": "What brings you here?", "type": "string"},
                     {"linkId": "itchy", "text": "Does it itch?", "type": "boolean"}]}, method="PUT")
        await uow.write("Encounter", "visit-1", {
            "resourceType": "Encounter", "status": "in-progress", "subject": PATIENT,
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"}}, method="PUT")
        await uow.write("QuestionnaireResponse", "qr-1", {
            "resourceType": "QuestionnaireResponse", "status": "completed", "subject": PATIENT,
            "encounter": {"reference": ENC}, "questionnaire": "http://clinic.example/Questionnaire/intake",
            "item": [{"linkId": "reason", "text": "reason?", "answer": [{"valueString": NASTY}]},
                     {"linkId": "itchy", "answer": [{"valueBoolean": True}]}]}, method="PUT")
        await uow.write("Media", "photo-1", {
            "resourceType": "Media", "status": "completed", "subject": PATIENT, "encounter": {"reference": ENC},
            "content": {"contentType": "image/png", "url": "Binary/b-1", "title": "Left forearm"}}, method="PUT")
        await uow.write("Communication", "msg-1", {
            "resourceType": "Communication", "status": "completed", "subject": PATIENT, "encounter": {"reference": ENC},
            "sender": DOCTOR, "recipient": [PATIENT], "sent": "2026-11-29T10:00:00Z",
            "payload": [{"contentString": "Does it itch at night?"}]}, method="PUT")
        for resource in (CONDITION, CAREPLAN, PRESCRIPTION):
            await uow.write(resource["resourceType"], resource["id"], resource, method="PUT")
        with lifecycle_write():
            await uow.write("Task", review_task_id("visit-1"), task("in-progress", "in-review"), method="PUT")
    yield hooked
    await raw.close()


async def complete(store) -> None:
    async with store.unit_of_work() as uow:
        await uow.write("Task", review_task_id("visit-1"), task("completed", "completed"), method="PUT")


async def find(store, resource_type: str, *params: tuple[str, str]) -> list[dict]:
    page = await store.search(parse_search([resource_type], [*params, ("_count", "100")]))
    return [orjson.loads(v.body) for v in page.matches]


def section(composition: dict, title: str) -> dict:
    return next(s for s in composition["section"] if s["title"] == title)


async def test_no_document_before_the_visit_completes_and_one_when_it_does(store):
    assert await find(store, "Composition") == []
    async with store.unit_of_work() as uow:  # a change before completion is no correction
        await uow.write("Condition", "dx-1", {**CONDITION, "note": [{"text": "early"}]}, method="PUT")
    assert await find(store, "Composition") == []
    await complete(store)
    [composition] = await find(store, "Composition", ("encounter", ENC), ("status", "final"))
    assert composition["type"]["coding"][0]["code"] == "11488-4"
    assert composition["author"] == [DOCTOR] and composition["subject"] == PATIENT
    assert composition["encounter"] == {"reference": ENC}
    assert "relatesTo" not in composition
    assert (await store.read("Encounter", "visit-1")).body is not None


async def test_sections_reference_the_visit_and_everything_written_is_valid_r4(store):
    await complete(store)
    [composition] = await find(store, "Composition")
    titles = [s["title"] for s in composition["section"]]
    assert titles == ["Reason for visit", "Intake answers", "Photos", "Assessment and diagnosis", "Plan",
                      "Medications prescribed", "Follow-up and messages"]
    assert section(composition, "Assessment and diagnosis")["entry"] == [{"reference": "Condition/dx-1"}]
    assert section(composition, "Plan")["entry"] == [{"reference": "CarePlan/plan-1"}]
    assert section(composition, "Medications prescribed")["entry"] == [{"reference": "MedicationRequest/rx-1"}]
    assert section(composition, "Photos")["entry"] == [{"reference": "Media/photo-1"}]
    assert section(composition, "Intake answers")["entry"] == [{"reference": "QuestionnaireResponse/qr-1"}]
    assert section(composition, "Follow-up and messages")["entry"] == [{"reference": "Communication/msg-1"}]
    assert section(composition, "Plan")["code"]["coding"][0]["code"] == "18776-5"
    for s in composition["section"]:
        assert s["text"]["status"] == "generated"
        assert narrative_ok(s["text"]["div"]) and narrative_has_content(s["text"]["div"])
    [docref] = await find(store, "DocumentReference")
    [binary_version] = (await store.search(parse_search(["Binary"], []))).matches
    binary = orjson.loads(binary_version.body)
    for resource in (composition, docref, binary):
        validate_resource(resource, resource["resourceType"])  # raises StructureError when not valid R4
    assert docref["status"] == "current"
    assert docref["category"][0]["coding"][0]["code"] == "clinical-note"
    assert docref["context"]["encounter"] == [{"reference": ENC}]
    assert docref["content"][0]["attachment"]["url"] == f"Composition/{composition['id']}/$document"
    assert docref["content"][1]["attachment"] == {**docref["content"][1]["attachment"], "contentType": "text/html",
                                                  "url": f"Binary/{binary['id']}"}
    assert binary["securityContext"] == PATIENT
    page = base64.b64decode(binary["data"]).decode()
    assert "Allergic contact dermatitis, left forearm" in page and "Apply thinly twice a day" in page
    assert composition_references(composition)[:3] == ["Patient/pat-1", ENC, "Practitioner/doc-1"]


async def test_intake_answers_use_the_questionnaires_text_and_are_escaped(store):
    await complete(store)
    [composition] = await find(store, "Composition")
    intake = section(composition, "Intake answers")["text"]["div"]
    assert "What brings you here?" in intake and "Does it itch?" in intake and "Yes" in intake
    assert "<script>" not in intake and "&lt;script&gt;" in intake and "&amp;" in intake
    reason = section(composition, "Reason for visit")["text"]["div"]
    assert "&lt;script&gt;" in reason and narrative_ok(reason)


def test_narrative_helpers_escape_and_never_leave_a_section_empty():
    empty = narrative.div()
    assert narrative_ok(empty) and narrative_has_content(empty)
    made = narrative.div(narrative.bullet_list([narrative.labelled("<b>", "a</li><script>")]))
    assert narrative_ok(made) and "<script>" not in made
    assert narrative.answer_text({"valueCoding": {"code": "CA", "display": "California"}}) == "California"
    assert narrative.answer_text({"valueQuantity": {"value": 38.5, "unit": "Cel"}}) == "38.5 Cel"


async def test_a_correction_after_completion_replaces_the_document(store):
    await complete(store)
    [first] = await find(store, "Composition")
    [first_ref] = await find(store, "DocumentReference")
    async with store.unit_of_work() as uow:
        await uow.write("Condition", "dx-1", {**CONDITION, "code": {**CONDITION["code"], "text": "Irritant dermatitis"}},
                        method="PUT")
    compositions = await find(store, "Composition", ("encounter", ENC))
    assert len(compositions) == 2
    second = next(c for c in compositions if c["id"] != first["id"])
    assert second["relatesTo"] == [{"code": "replaces", "targetReference": {"reference": f"Composition/{first['id']}"}}]
    assert "Irritant dermatitis" in section(second, "Assessment and diagnosis")["text"]["div"]
    assert "Allergic contact" in section(first, "Assessment and diagnosis")["text"]["div"]  # the old one unchanged
    refs = {d["id"]: d for d in await find(store, "DocumentReference")}
    assert refs[first_ref["id"]]["status"] == "superseded"
    [new_ref] = [d for d in refs.values() if d["id"] != first_ref["id"]]
    assert new_ref["status"] == "current"
    assert new_ref["relatesTo"] == [{"code": "replaces", "target": {"reference": f"DocumentReference/{first_ref['id']}"}}]
    async with store.unit_of_work() as uow:
        assert (await current_composition(uow, ENC))["id"] == second["id"]
        # a new prescription: a third version, replacing the second
        await uow.write("MedicationRequest", "rx-2", {**PRESCRIPTION, "id": "rx-2"}, method="PUT")
    async with store.unit_of_work() as uow:
        third = await current_composition(uow, ENC)
    assert third["relatesTo"][0]["targetReference"]["reference"] == f"Composition/{second['id']}"
    assert len(section(third, "Medications prescribed")["entry"]) == 2


async def test_an_unchanged_write_makes_no_new_version(store):
    await complete(store)
    async with store.unit_of_work() as uow:
        await uow.write("CarePlan", "plan-1", CAREPLAN, method="PUT")
        # a change the document does not show (a note on the diagnosis) is no new version either
        await uow.write("Condition", "dx-1", {**CONDITION, "note": [{"text": "seen again"}]}, method="PUT")
    assert len(await find(store, "Composition")) == 1


def principal(scope: str, patient: str | None) -> Principal:
    return Principal(client_id="app", subject="u", scopes=ScopeSet.parse(scope), patient=patient)


async def test_the_document_bundle_is_whole_or_refused(store):
    await complete(store)
    [composition] = await find(store, "Composition")
    bundle = await document_bundle(store, composition["id"], Principal.anonymous_superuser(), "http://x")
    assert bundle["type"] == "document" and bundle["entry"][0]["fullUrl"] == f"http://x/Composition/{composition['id']}"
    ids = [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]]
    assert len(ids) == len(set(ids))
    assert {"Patient/pat-1", "Practitioner/doc-1", ENC, "Condition/dx-1", "CarePlan/plan-1", "MedicationRequest/rx-1",
            "Media/photo-1", "QuestionnaireResponse/qr-1", "Communication/msg-1"} <= set(ids)
    validate_resource(bundle, "Bundle")
    with pytest.raises(Forbidden):  # may read the Composition, not the Condition it includes: no partial document
        await document_bundle(store, composition["id"], principal("patient/Composition.read", "pat-1"), "http://x")
    with pytest.raises(NotFound):  # another patient's document does not exist for this one
        await document_bundle(store, composition["id"], principal("patient/*.read", "someone-else"), "http://x")
