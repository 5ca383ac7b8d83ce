"""Answering a pharmacy's renewal request (fhir_server/erx/renewal.py): closing the renewal Task
queues one RxRenewalResponse with its transmission Task, in the update's own unit of work; an
answer that cannot be sent is refused and the update undone."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from fhir_server.erx.config import ErxSettings
from fhir_server.erx.inbound import record_renewal_request
from fhir_server.erx.renewal import RENEWAL_DENIAL_SYSTEM, RenewalAnswer
from fhir_server.erx.trigger import JOB_KIND
from fhir_server.errors import UnprocessableEntity
from fhir_server.interactions.search import build_query
from fhir_server.interactions.write_hooks import HookedStore, WriteHooks
from fhir_server.search.extract import extract_index
from fhir_server.storage import open_store
from mappers.ncpdp.envelope import parse_message
from mappers.ncpdp.inbound import parse_inbound
from mappers.ncpdp.reflect import (
    TASK_CODE_SYSTEM, TASK_PARAMETER_SYSTEM, business_status, renewal_task, transmitted_message_id,
    transmitted_message_type,
)
from tests.fixtures import erx

SETTINGS = ErxSettings(gateway_url="http://127.0.0.1:9/script", sender_id="TELEHEALTH01")
REQUEST_XML = (Path(__file__).resolve().parents[1] / "fixtures" / "erx_inbound" / "rxrenewal_request.xml").read_bytes()
REQUEST_ID = "5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d"
ORDER_NUMBER = "RX-2026-000123"  # mr-amlodipine's official identifier: what its NewRx carried


def renewal_request(order_number: str = ORDER_NUMBER, message_id: str | None = None):
    xml = REQUEST_XML.replace(b"<PrescriberOrderNumber>mr-4471<", f"<PrescriberOrderNumber>{order_number}<".encode())
    if message_id:
        xml = xml.replace(REQUEST_ID.encode(), message_id.encode())
    return parse_inbound(xml)


@pytest.fixture()
async def store(tmp_path):
    raw = open_store(f"sqlite:///{tmp_path / 'erx.db'}", indexer=extract_index)
    await raw.open()
    async with raw.unit_of_work() as uow:  # the people, pharmacies and drugs, and the original prescription
        for reference in erx._directory():
            kind, id = reference.split("/")
            await uow.write(kind, id, erx.resource(reference), method="PUT")
        await uow.write("MedicationRequest", "mr-amlodipine", erx.medication_request("amlodipine-tablet"), method="PUT")
    hooks = WriteHooks()
    hooks.register("Task", RenewalAnswer(SETTINGS))
    yield HookedStore(raw, hooks)
    await raw.close()


async def received(store, request=None) -> dict:
    """The renewal Task /erx/inbound makes for the request."""
    task_id, created = await record_renewal_request(store, request or renewal_request())
    assert created
    return await read_task(store, task_id)


async def read_task(store, task_id: str) -> dict:
    stored = await store.read("Task", task_id)
    return {**orjson.loads(stored.body), "_version": stored.version}


async def update(store, task: dict) -> None:
    body = {k: v for k, v in task.items() if k != "_version"}
    async with store.unit_of_work() as uow:
        await uow.write("Task", task["id"], body, method="PUT")


def output(code: str, kind: str, value) -> dict:
    return {"type": {"coding": [{"system": TASK_PARAMETER_SYSTEM, "code": code}]}, f"value{kind}": value}


def approved(task: dict, decision: str = "Approved", **extra_outputs) -> dict:
    outputs = [output("decision", "Code", decision)]
    outputs += [output(code, kind, value) for code, (kind, value) in extra_outputs.items()]
    return {**task, "status": "completed", "output": outputs}


async def responses(store) -> list[tuple]:
    """(job, header, Response element, body) of every queued message."""
    found = []
    for job in await store.jobs(kind=JOB_KIND):
        header, message_type, body = parse_message(job.payload["xml"].encode())
        assert message_type == job.payload["message_type"] == "RxRenewalResponse"
        found.append((job, header, body.find("Response")[0], body))
    return found


async def transmission_tasks(store, renewal_id: str) -> list[dict]:
    page = await store.search(build_query(["Task"], [("part-of", f"Task/{renewal_id}")]))
    return [orjson.loads(v.body) for v in page.matches if v.body]


async def test_approving_queues_an_approved_response_to_the_pharmacy_that_asked(store):
    task = await received(store)
    assert task["focus"] == {"reference": "MedicationRequest/mr-amlodipine"}
    await update(store, approved(task))

    [(job, header, answer, body)] = await responses(store)
    assert answer.tag == "Approved"
    assert header.relates_to_message_id == REQUEST_ID
    assert (header.to, header.to_qualifier) == ("0999017", "P")
    assert header.from_ == "TELEHEALTH01"
    assert header.rx_reference_number == "RX7750213"
    assert header.prescriber_order_number == ORDER_NUMBER
    assert body.findtext("MedicationPrescribed/NumberOfRefills") == "3"  # what the pharmacy asked for
    [transmission] = await transmission_tasks(store, task["id"])
    assert (transmitted_message_type(transmission), business_status(transmission)) == ("RxRenewalResponse", "queued")
    assert transmitted_message_id(transmission) == header.message_id == job.key == job.payload["message_id"]
    assert transmission["focus"] == {"reference": "MedicationRequest/mr-amlodipine"}
    assert job.payload["medication_request"] == "MedicationRequest/mr-amlodipine"
    assert job.payload["task"] == f"Task/{transmission['id']}"
    assert (await read_task(store, task["id"]))["status"] == "completed"


async def test_an_approval_with_a_different_number_of_refills_and_a_note(store):
    task = await received(store)
    await update(store, approved(task, "ApprovedWithChanges", refills=("UnsignedInt", 1),
                                 note=("String", "Book a blood pressure check")))
    [(_, _, answer, body)] = await responses(store)
    assert answer.tag == "ApprovedWithChanges"
    assert answer.findtext("Note") == "Book a blood pressure check"
    assert body.findtext("MedicationPrescribed/NumberOfRefills") == "1"


@pytest.mark.parametrize("decision, refills", [("Approved", 1), ("ApprovedWithChanges", 3)])
async def test_approved_is_what_was_asked_and_with_changes_is_not(store, decision, refills):
    task = await received(store)
    with pytest.raises(UnprocessableEntity):
        await update(store, approved(task, decision, refills=("UnsignedInt", refills)))
    assert await store.jobs(kind=JOB_KIND) == []


async def test_rejecting_sends_denied_with_the_reason(store):
    task = await received(store)
    await update(store, {**task, "status": "rejected", "statusReason": {"text": "Needs a follow-up visit"}})
    [(_, header, answer, body)] = await responses(store)
    assert answer.tag == "Denied"
    assert [(c.tag, c.text) for c in answer] == [("DenialReason", "Needs a follow-up visit")]
    assert header.relates_to_message_id == REQUEST_ID and header.to == "0999017"
    assert body.find("MedicationPrescribed") is not None  # the original, echoed


async def test_a_denial_reason_code_goes_as_reason_code(store):
    task = await received(store)
    coded = output("denial-reason", "CodeableConcept", {
        "coding": [{"system": RENEWAL_DENIAL_SYSTEM, "code": "AM"}], "text": "Please book a visit first"})
    await update(store, {**task, "status": "rejected", "output": [coded]})
    [(_, _, answer, _)] = await responses(store)
    assert [(c.tag, c.text) for c in answer] == [("ReasonCode", "AM"), ("DenialReason", "Please book a visit first")]


async def test_a_completed_task_may_also_say_denied(store):
    task = await received(store)
    await update(store, {**approved(task, "Denied"), "statusReason": {
        "coding": [{"system": RENEWAL_DENIAL_SYSTEM, "code": "AC"}]}})
    [(_, _, answer, _)] = await responses(store)
    assert [(c.tag, c.text) for c in answer] == [("ReasonCode", "AC")]


async def test_later_updates_of_an_answered_task_send_nothing(store):
    task = await received(store)
    await update(store, approved(task))
    answered = await read_task(store, task["id"])
    await update(store, {**answered, "note": [{"text": "called the pharmacy"}]})
    await update(store, {**answered, "status": "in-progress"})  # reopened and closed again
    await update(store, approved(answered))
    assert len(await responses(store)) == 1
    assert len(await transmission_tasks(store, task["id"])) == 1


async def test_a_task_without_a_matched_prescription_is_refused_and_unchanged(store):
    task = await received(store, renewal_request("mr-4471"))  # no such order number here
    assert "focus" not in task
    with pytest.raises(UnprocessableEntity) as refused:
        await update(store, approved(task))
    assert [i.expression for i in refused.value.issues] == ["Task.focus"]
    after = await read_task(store, task["id"])
    assert (after["status"], after["_version"]) == ("requested", task["_version"])
    assert await store.jobs(kind=JOB_KIND) == []


async def test_the_clinician_may_match_the_prescription_in_the_answer(store):
    task = await received(store, renewal_request("mr-4471"))
    await update(store, {**approved(task), "focus": {"reference": "MedicationRequest/mr-amlodipine"}})
    [(_, header, answer, _)] = await responses(store)
    assert (answer.tag, header.relates_to_message_id) == ("Approved", REQUEST_ID)


async def test_another_patients_prescription_is_refused(store):
    task = await received(store)
    async with store.unit_of_work() as uow:
        other = {**erx.medication_request("amlodipine-tablet"), "id": "mr-other",
                 "subject": {"reference": "Patient/pat-lena"}}
        await uow.write("MedicationRequest", "mr-other", other, method="PUT")
    with pytest.raises(UnprocessableEntity) as refused:
        await update(store, {**approved(task), "focus": {"reference": "MedicationRequest/mr-other"}})
    assert [i.expression for i in refused.value.issues] == ["Task.focus"]


@pytest.mark.parametrize("change, expression", [
    ({"status": "completed"}, "Task.output"),  # no decision: never an implied approval
    ({"status": "completed", "output": [output("decision", "Code", "Maybe")]}, "Task.output"),
    ({"status": "completed", "output": [output("decision", "Code", "Replace")]}, "Task.output"),
    ({"status": "rejected", "output": [output("decision", "Code", "Approved")]}, "Task.output"),
    ({"status": "rejected"}, "Task.statusReason"),  # a denial without a reason
    ({"status": "rejected", "output": [output("denial-reason", "Code", "ZZ")]}, "Task.output"),
    ({"status": "rejected", "statusReason": {"text": "x" * 71}}, "Task.statusReason"),  # too long for SCRIPT
    ({"status": "rejected", "statusReason": {"text": "no"}, "output": [output("refills", "UnsignedInt", 2)]},
     "Task.output"),
])
async def test_an_answer_that_cannot_be_sent_is_refused_and_the_update_undone(store, change, expression):
    task = await received(store)
    with pytest.raises(UnprocessableEntity) as refused:
        await update(store, {**task, **change})
    assert expression in [i.expression for i in refused.value.issues]
    after = await read_task(store, task["id"])
    assert (after["status"], after["_version"]) == ("requested", task["_version"])
    assert await store.jobs(kind=JOB_KIND) == []


async def test_the_request_kept_in_the_task_cannot_be_changed_by_the_answer(store):
    task = await received(store)
    tampered = [i for i in task["input"] if i["type"]["coding"][0]["code"] != "rx-reference-number"]
    with pytest.raises(UnprocessableEntity) as refused:
        await update(store, {**approved(task), "input": tampered})
    assert [i.expression for i in refused.value.issues] == ["Task.input"]


async def test_approving_a_controlled_substance_is_refused_until_epcs_signing_exists(store):
    mr = erx.medication_request("oxycodone-schedule-ii")
    mr["dispenseRequest"] = {**mr["dispenseRequest"], "numberOfRepeatsAllowed": 0,
                             "performer": {"reference": "Organization/org-pharmacy-main"}}
    request = renewal_request("mr-oxycodone")
    task = renewal_task(request, mr["subject"], mr["requester"], "MedicationRequest/mr-oxycodone")
    async with store.unit_of_work() as uow:
        await uow.write("MedicationRequest", mr["id"], mr, method="PUT")
        await uow.write("Task", "renewal-oxy", task, method="PUT")  # created: answers nothing yet
    task = await read_task(store, "renewal-oxy")
    with pytest.raises(UnprocessableEntity) as refused:
        await update(store, approved(task, "ApprovedWithChanges", refills=("UnsignedInt", 0)))
    assert "EPCS" in refused.value.issues[0].diagnostics
    await update(store, {**task, "status": "rejected", "statusReason": {"text": "Needs an in-person visit"}})
    [(_, _, answer, _)] = await responses(store)
    assert answer.tag == "Denied"


async def test_other_tasks_and_new_tasks_send_nothing(store):
    other = {"resourceType": "Task", "status": "requested", "intent": "order",
             "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": "something-else"}]}}
    async with store.unit_of_work() as uow:
        await uow.write("Task", "other", other, method="PUT")
        await uow.write("Task", "other", {**other, "status": "completed"}, method="PUT")
    task = await received(store)
    body = {k: v for k, v in approved(task).items() if k not in ("_version", "id")}
    async with store.unit_of_work() as uow:  # a renewal Task created already completed: no transition
        await uow.write("Task", str(uuid.uuid4()), body, method="POST", must_not_exist=True)
        await uow.delete("Task", task["id"])
    assert await store.jobs(kind=JOB_KIND) == []


async def test_the_transmission_task_is_stored_as_valid_r4(store):
    from fhir_server.interactions.validation import check

    task = await received(store)
    await update(store, approved(task))
    [transmission] = await transmission_tasks(store, task["id"])
    check(orjson.loads(orjson.dumps(transmission)), "Task")
