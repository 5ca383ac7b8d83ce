"""The e-prescribing trigger: which MedicationRequest writes queue a NewRx or CancelRx, with their
transmission Task, in the same unit of work as the write (and refuse unsendable ones whole)."""

from __future__ import annotations

import orjson
import pytest

from fhir_server.erx.config import ErxSettings
from fhir_server.erx.trigger import JOB_KIND, ErxTrigger, transmissions
from fhir_server.errors import UnprocessableEntity
from fhir_server.interactions.write_hooks import HookedStore, WriteHooks
from fhir_server.search.extract import extract_index
from fhir_server.storage import open_store
from mappers.ncpdp.envelope import parse_message
from mappers.ncpdp.reflect import business_status, transmitted_message_id, transmitted_message_type
from tests.fixtures import erx

SETTINGS = ErxSettings(gateway_url="http://127.0.0.1:9/script", sender_id="TELEHEALTH01")


@pytest.fixture()
async def store(tmp_path):
    raw = open_store(f"sqlite:///{tmp_path / 'erx.db'}", indexer=extract_index)
    await raw.open()
    async with raw.unit_of_work() as uow:  # the people, pharmacies and drugs the fixtures refer to
        for reference in erx._directory():
            kind, id = reference.split("/")
            await uow.write(kind, id, erx.resource(reference), method="PUT")
    hooks = WriteHooks()
    hooks.register("MedicationRequest", ErxTrigger(SETTINGS))
    yield HookedStore(raw, hooks)
    await raw.close()


async def put(store, mr: dict) -> None:
    async with store.unit_of_work() as uow:
        await uow.write("MedicationRequest", mr["id"], mr, method="PUT")


async def tasks_of(store, mr_id: str) -> list[dict]:
    async with store.unit_of_work() as uow:
        return await transmissions(uow, mr_id)


async def test_an_active_order_for_a_pharmacy_queues_a_newrx_with_its_task(store):
    mr = erx.medication_request("amlodipine-tablet")
    await put(store, mr)
    [task] = await tasks_of(store, mr["id"])
    [job] = await store.jobs(kind=JOB_KIND)
    assert (transmitted_message_type(task), business_status(task)) == ("NewRx", "queued")
    assert job.key == job.payload["message_id"] == transmitted_message_id(task)
    header, message_type, _ = parse_message(job.payload["xml"].encode())
    assert (message_type, header.message_id) == ("NewRx", job.key)
    assert job.payload["medication_request"] == f"MedicationRequest/{mr['id']}"


async def test_updating_a_sent_prescription_does_not_send_it_again(store):
    mr = erx.medication_request("amlodipine-tablet")
    await put(store, mr)
    await put(store, {**mr, "note": [{"text": "take with water"}]})
    assert len(await store.jobs(kind=JOB_KIND)) == 1


@pytest.mark.parametrize("change", [{"status": "draft"}, {"intent": "proposal"}, {"dispenseRequest": {}}])
async def test_a_request_that_is_not_an_active_order_to_a_pharmacy_sends_nothing(store, change):
    await put(store, {**erx.medication_request("amlodipine-tablet"), **change})
    assert await store.jobs(kind=JOB_KIND) == []


async def test_an_unsendable_prescription_is_refused_and_nothing_is_stored(store):
    mr = erx.medication_request("free-text")
    with pytest.raises(UnprocessableEntity):
        await put(store, mr)
    assert await store.read("MedicationRequest", mr["id"]) is None
    assert await store.jobs(kind=JOB_KIND) == []


async def test_cancelling_a_sent_prescription_queues_one_cancelrx_related_to_the_newrx(store):
    mr = erx.medication_request("amlodipine-tablet")
    await put(store, mr)
    await put(store, {**mr, "status": "cancelled"})
    await put(store, {**mr, "status": "cancelled", "note": [{"text": "again"}]})
    newrx, cancel = await tasks_of(store, mr["id"])
    assert transmitted_message_type(cancel) == "CancelRx"
    [job] = [j for j in await store.jobs(kind=JOB_KIND) if j.key == transmitted_message_id(cancel)]
    header, message_type, _ = parse_message(job.payload["xml"].encode())
    assert (message_type, header.relates_to_message_id) == ("CancelRx", transmitted_message_id(newrx))
    assert len(await store.jobs(kind=JOB_KIND)) == 2


async def test_cancelling_a_request_that_was_never_sent_sends_nothing(store):
    mr = {**erx.medication_request("amlodipine-tablet"), "status": "draft"}
    await put(store, mr)
    await put(store, {**mr, "status": "cancelled"})
    assert await store.jobs(kind=JOB_KIND) == []


async def test_a_newrx_that_failed_for_good_is_followed_by_a_new_one(store):
    mr = erx.medication_request("amlodipine-tablet")
    await put(store, mr)
    [task] = await tasks_of(store, mr["id"])
    failed = {**task, "status": "failed", "businessStatus": {"coding": [{
        "system": task["businessStatus"]["coding"][0]["system"], "code": "error"}]}}
    async with store.unit_of_work() as uow:
        await uow.write("Task", task["id"], failed, method="PUT")
    await put(store, {**mr, "note": [{"text": "corrected"}]})
    assert len(await store.jobs(kind=JOB_KIND)) == 2


async def test_a_unit_of_work_that_fails_leaves_neither_task_nor_job(store):
    mr = erx.medication_request("amlodipine-tablet")
    with pytest.raises(RuntimeError):
        async with store.unit_of_work() as uow:
            await uow.write("MedicationRequest", mr["id"], mr, method="PUT")
            raise RuntimeError("a later entry of the transaction failed")
    assert await store.jobs(kind=JOB_KIND) == []
    assert await tasks_of(store, mr["id"]) == []


async def test_the_queued_task_is_stored_as_valid_r4(store):
    from fhir_server.interactions.validation import check

    await put(store, erx.medication_request("amlodipine-tablet"))
    [task] = await tasks_of(store, "mr-amlodipine")
    check(orjson.loads(orjson.dumps(task)), "Task")


async def test_a_controlled_substance_is_refused_until_epcs_signing_exists(store):
    mr = erx.medication_request("oxycodone-schedule-ii")
    mr["dispenseRequest"] = {**mr["dispenseRequest"], "numberOfRepeatsAllowed": 0}  # otherwise sendable
    with pytest.raises(UnprocessableEntity) as refused:
        await put(store, mr)
    assert "EPCS" in refused.value.issues[0].diagnostics
    assert await store.read("MedicationRequest", mr["id"]) is None
