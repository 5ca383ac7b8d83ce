"""E-prescribing delivery (fhir_server/erx/delivery.py), the gateway's inbound route (inbound.py)
and the operator commands (admin.py) against an SQLite store, with the gateway faked by
httpx.MockTransport (answers built by the simulator's own message builders) and the inbound route
called through httpx.ASGITransport."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from fhir_server.erx.admin import AdminError, list_jobs, retry_job
from fhir_server.erx.config import ErxSettings
from fhir_server.erx.delivery import JOB_KIND, ErxDelivery, apply_to_transmission
from fhir_server.erx.inbound import ROUTES, renewal_task_id
from fhir_server.interactions.search import build_query
from fhir_server.interactions.validation import check
from fhir_server.outbox import Backoff, OutboxWorker, Permanent, RetryLater
from fhir_server.search.extract import extract_index
from fhir_server.storage import open_store
from fhir_server.storage.base import DEAD, DONE
from fhir_server.storage.errors import VersionConflict
from mappers.gateway_sim import messages
from mappers.ncpdp.envelope import Header, new_message_id, parse_message
from mappers.ncpdp.inbound import parse_inbound
from mappers.ncpdp.newrx import build_newrx
from mappers.ncpdp.reflect import (
    MESSAGE_ID_SYSTEM, NCPDP_ERROR_SYSTEM, business_status, reflect_delivery, transmission_task,
)
from mappers.ncpdp.resources import resolve_context
from tests.fixtures import erx

TOKEN = "inbound-secret-for-tests"
SETTINGS = ErxSettings(gateway_url="https://gateway.test/script", sender_id="TELEHEALTH01", timeout_s=2.0,
                       max_attempts=3, inbound_token=TOKEN)
INBOUND_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "erx_inbound"
# What must never reach a log line or a job's last_error: the patient's name, birth date, MRN
PATIENT_DATA = ("Garcia", "Maria", "1984-03-12", "19840312", "MRN-004512", "<Message", "amlodipine")


# -- set-up: what the trigger commits (the fixtures' resources, the MedicationRequest, the Task, the job)


@dataclass(frozen=True)
class Queued:
    job: object  # OutboxJob
    task_id: str
    mr_id: str
    message_id: str
    xml: bytes

    @property
    def header(self) -> Header:
        return parse_message(self.xml)[0]


async def store_directory(store, name: str = "amlodipine-tablet") -> dict:
    """The fixture directory and one scenario's MedicationRequest, stored as they are."""
    mr = erx.medication_request(name)
    async with store.unit_of_work() as uow:
        for reference in erx._directory():
            kind, id = reference.split("/")
            if await uow.read(kind, id) is None:
                await uow.write(kind, id, erx.resource(reference), method="PUT")
        if await uow.read("MedicationRequest", mr["id"]) is None:
            await uow.write("MedicationRequest", mr["id"], mr, method="PUT")
    return mr


async def queue_newrx(store, name: str = "amlodipine-tablet", *, sender_id: str = "TELEHEALTH01") -> Queued:
    """As the trigger will: the NewRx built and validated, its Task (queued) and job in one unit of work."""
    mr = await store_directory(store, name)
    ctx = await resolve_context(mr, erx.reader())
    message_id = new_message_id()
    xml = build_newrx(ctx, sender_id=sender_id, message_id=message_id)
    task_id = str(uuid.uuid4())
    async with store.unit_of_work() as uow:
        await uow.write("Task", task_id, transmission_task(mr, "NewRx", message_id), method="POST",
                        must_not_exist=True)
        job = await uow.enqueue(JOB_KIND, message_id, {
            "message_type": "NewRx", "message_id": message_id, "xml": xml.decode("utf-8"),
            "medication_request": f"MedicationRequest/{mr['id']}", "task": f"Task/{task_id}"})
    return Queued(job, task_id, mr["id"], message_id, xml)


async def current(store, resource_type: str, id: str) -> tuple[dict, int]:
    stored = await store.read(resource_type, id)
    assert stored is not None and stored.body is not None
    return orjson.loads(stored.body), stored.version


async def communications(store) -> list[dict]:
    page = await store.search(build_query(["Communication"], []))
    return [orjson.loads(v.body) for v in page.matches]


def attempt(queued: Queued, n: int):
    return dataclasses.replace(queued.job, attempts=n, state="leased", lease_token="t")


class Gateway:
    """A fake gateway: each request gets the next answer (the last one repeats). An answer is a
    callable(request, received Header) -> httpx.Response, or an exception to raise."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer(request, parse_message(request.content)[0])

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


def xml_answer(build):
    return lambda request, header: httpx.Response(200, content=build(header),
                                                  headers={"Content-Type": "application/xml"})


def http(status: int, **headers):
    return lambda request, header: httpx.Response(status, text="gateway trouble", headers=headers)


STATUS_010 = xml_answer(lambda h: messages.status(h, "010", "Transaction accepted"))
STATUS_000 = xml_answer(lambda h: messages.status(h, "000", "Transaction pending"))
ERROR_600 = xml_answer(lambda h: messages.error(h, "600", "008", "Request timed out"))
ERROR_601 = xml_answer(lambda h: messages.error(h, "601", None, "Receiver unable to process: patient Garcia"))


@pytest.fixture()
async def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'erx.db'}", indexer=extract_index)
    await s.open()
    yield s
    await s.close()


def delivery(store, gateway: Gateway, **settings) -> ErxDelivery:
    return ErxDelivery(store, dataclasses.replace(SETTINGS, **settings), client=gateway.client())


# -- sending -----------------------------------------------------------------------------------------


async def test_an_accepted_newrx_completes_its_task_and_sends_the_exact_bytes(store):
    queued = await queue_newrx(store)
    gateway = Gateway(STATUS_010)
    await delivery(store, gateway).handle(attempt(queued, 1))

    [request] = gateway.requests
    assert request.method == "POST" and str(request.url) == SETTINGS.gateway_url
    assert request.headers["content-type"] == "application/xml"
    assert request.headers["idempotency-key"] == queued.message_id
    assert request.content == queued.xml  # the trigger's bytes, unchanged
    task, version = await current(store, "Task", queued.task_id)
    assert (business_status(task), task["status"], version) == ("accepted", "completed", 2)
    check(task, "Task")
    mr, mr_version = await current(store, "MedicationRequest", queued.mr_id)
    assert (mr["status"], mr_version) == ("active", 1)
    assert await communications(store) == []


async def test_status_000_means_sent_and_the_job_is_done(store):
    queued = await queue_newrx(store)
    await delivery(store, Gateway(STATUS_000)).handle(attempt(queued, 1))
    task, _ = await current(store, "Task", queued.task_id)
    assert (business_status(task), task["status"]) == ("sent", "in-progress")


async def test_http_500_retries_and_records_the_state_change_once(store):
    queued = await queue_newrx(store)
    send = delivery(store, Gateway(http(500)))
    with pytest.raises(RetryLater) as raised:
        await send.handle(attempt(queued, 1))
    assert raised.value.error == "the gateway answered HTTP 500" and raised.value.after is None
    task, version = await current(store, "Task", queued.task_id)
    assert (business_status(task), task["status"], version) == ("retrying", "in-progress", 2)
    assert task["statusReason"]["text"] == "the gateway answered HTTP 500"
    check(task, "Task")
    with pytest.raises(RetryLater):
        await send.handle(attempt(queued, 2))
    assert (await current(store, "Task", queued.task_id))[1] == 2  # same state: nothing written


async def test_a_timeout_retries(store):
    queued = await queue_newrx(store)
    with pytest.raises(RetryLater) as raised:
        await delivery(store, Gateway(httpx.ReadTimeout("slow"))).handle(attempt(queued, 1))
    assert raised.value.error == "no answer from the gateway within 2 s"
    task, _ = await current(store, "Task", queued.task_id)
    assert business_status(task) == "retrying"


async def test_the_whole_send_is_bounded_by_the_timeout(store):
    async def slow(request):
        await asyncio.sleep(5)
        return httpx.Response(200)

    queued = await queue_newrx(store)
    send = ErxDelivery(store, dataclasses.replace(SETTINGS, timeout_s=0.2),
                       client=httpx.AsyncClient(transport=httpx.MockTransport(slow)))
    with pytest.raises(RetryLater) as raised:
        await send.handle(attempt(queued, 1))
    assert raised.value.error == "no answer from the gateway within 0.2 s"


async def test_a_connection_failure_retries(store):
    queued = await queue_newrx(store)
    with pytest.raises(RetryLater) as raised:
        await delivery(store, Gateway(httpx.ConnectError("refused"))).handle(attempt(queued, 1))
    assert raised.value.error == "could not reach the gateway (ConnectError)"


@pytest.mark.parametrize("status", [408, 429, 502, 503])
async def test_retryable_http_statuses(store, status):
    queued = await queue_newrx(store)
    with pytest.raises(RetryLater):
        await delivery(store, Gateway(http(status))).handle(attempt(queued, 1))


async def test_retry_after_is_honoured(store):
    queued = await queue_newrx(store)
    with pytest.raises(RetryLater) as raised:
        await delivery(store, Gateway(http(429, **{"Retry-After": "7"}))).handle(attempt(queued, 1))
    assert raised.value.after == 7.0


async def test_error_600_retries_then_an_acceptance_completes(store):
    queued = await queue_newrx(store)
    send = delivery(store, Gateway(ERROR_600, STATUS_010))
    with pytest.raises(RetryLater) as raised:
        await send.handle(attempt(queued, 1))
    assert raised.value.error == "the gateway answered Error 600/008"
    task, _ = await current(store, "Task", queued.task_id)
    assert business_status(task) == "retrying"
    assert task["statusReason"]["coding"][0] == {"system": NCPDP_ERROR_SYSTEM, "code": "600",
                                                 "display": "Communication problem, try again later"}
    await send.handle(attempt(queued, 2))
    task, version = await current(store, "Task", queued.task_id)
    assert (business_status(task), version) == ("accepted", 3)
    assert "statusReason" not in task


async def test_error_601_fails_the_task_holds_the_prescription_and_tells_the_prescriber(store):
    queued = await queue_newrx(store)
    await delivery(store, Gateway(ERROR_601)).handle(attempt(queued, 1))  # returns: the job is done
    task, _ = await current(store, "Task", queued.task_id)
    assert (business_status(task), task["status"]) == ("error", "failed")
    mr, version = await current(store, "MedicationRequest", queued.mr_id)
    assert (mr["status"], version) == ("on-hold", 2)
    assert mr["statusReason"] == task["statusReason"]
    [note] = await communications(store)
    assert note["recipient"] == [{"reference": "Practitioner/prac-sanchez"}]
    assert {"reference": f"Task/{queued.task_id}"} in note["about"]
    for resource, kind in ((task, "Task"), (mr, "MedicationRequest"), (note, "Communication")):
        check(resource, kind)


async def test_the_final_attempt_dead_letters_instead_of_retrying(store):
    queued = await queue_newrx(store)
    send = delivery(store, Gateway(http(500)))
    with pytest.raises(RetryLater):
        await send.handle(attempt(queued, 2))
    with pytest.raises(Permanent) as raised:
        await send.handle(attempt(queued, 3))  # max_attempts = 3
    assert raised.value.error == "the gateway answered HTTP 500; gave up after 3 attempts"
    task, _ = await current(store, "Task", queued.task_id)
    assert (business_status(task), task["status"]) == ("dead-letter", "failed")
    mr, _ = await current(store, "MedicationRequest", queued.mr_id)
    assert mr["status"] == "on-hold"
    [note] = await communications(store)
    assert "could not be delivered" in note["payload"][0]["contentString"]
    check(task, "Task")


async def test_a_retryable_error_on_the_final_attempt_dead_letters(store):
    queued = await queue_newrx(store)
    with pytest.raises(Permanent) as raised:
        await delivery(store, Gateway(ERROR_600)).handle(attempt(queued, 3))
    assert raised.value.error == "the gateway answered Error 600/008; gave up after 3 attempts"
    task, version = await current(store, "Task", queued.task_id)
    assert (business_status(task), version) == ("dead-letter", 2)
    assert (await current(store, "MedicationRequest", queued.mr_id))[0]["status"] == "on-hold"


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 413, 415])
async def test_a_refusal_4xx_is_permanent_and_marks_the_task_error(store, status):
    queued = await queue_newrx(store)
    with pytest.raises(Permanent) as raised:
        await delivery(store, Gateway(http(status))).handle(attempt(queued, 1))
    assert raised.value.error == f"the gateway refused the message: HTTP {status}"
    task, _ = await current(store, "Task", queued.task_id)
    assert (business_status(task), task["status"]) == ("error", "failed")
    check(task, "Task")
    assert (await current(store, "MedicationRequest", queued.mr_id))[0]["status"] == "on-hold"


async def test_the_same_answer_twice_writes_nothing_the_second_time(store):
    queued = await queue_newrx(store)
    send = delivery(store, Gateway(ERROR_601))
    await send.handle(attempt(queued, 1))
    before = [await current(store, t, i) for t, i in (("Task", queued.task_id), ("MedicationRequest", queued.mr_id))]
    await send.handle(attempt(queued, 2))  # e.g. the worker died before completing the job
    after = [await current(store, t, i) for t, i in (("Task", queued.task_id), ("MedicationRequest", queued.mr_id))]
    assert after == before
    assert len(await communications(store)) == 1

    accepted = await queue_newrx(store, "albuterol-inhaler")
    send = delivery(store, Gateway(STATUS_010))
    await send.handle(attempt(accepted, 1))
    await send.handle(attempt(accepted, 2))
    assert (await current(store, "Task", accepted.task_id))[1] == 2


async def test_an_unreadable_answer_is_retried(store):
    queued = await queue_newrx(store)
    html = lambda request, header: httpx.Response(200, text="<html>maintenance</html>")  # noqa: E731
    with pytest.raises(RetryLater) as raised:
        await delivery(store, Gateway(html)).handle(attempt(queued, 1))
    assert "not a SCRIPT message" in raised.value.error


async def test_any_2xx_answer_is_read(store):
    queued = await queue_newrx(store)
    accepted = xml_answer(lambda h: messages.status(h, "010"))
    answer = lambda request, header: httpx.Response(202, content=accepted(request, header).content)  # noqa: E731
    await delivery(store, Gateway(answer)).handle(attempt(queued, 1))
    assert business_status((await current(store, "Task", queued.task_id))[0]) == "accepted"


async def test_an_oversized_answer_is_not_read_and_retried(store):
    queued = await queue_newrx(store)
    huge = lambda request, header: httpx.Response(200, content=b"<" * (1024 * 1024 + 10))  # noqa: E731
    with pytest.raises(RetryLater) as raised:
        await delivery(store, Gateway(huge)).handle(attempt(queued, 1))
    assert raised.value.error == "the gateway's answer is over 1048576 bytes"


async def test_an_answer_to_another_message_is_not_recorded(store):
    queued = await queue_newrx(store)
    other = xml_answer(lambda h: messages.status(dataclasses.replace(h, message_id="someone-else"), "010"))
    with pytest.raises(RetryLater) as raised:
        await delivery(store, Gateway(other)).handle(attempt(queued, 1))
    assert raised.value.error == "the gateway's answer relates to another message"
    assert business_status((await current(store, "Task", queued.task_id))[0]) == "retrying"


async def test_a_malformed_payload_is_permanent(store):
    queued = await queue_newrx(store)
    job = dataclasses.replace(attempt(queued, 1), payload={"message_id": "x"})
    with pytest.raises(Permanent):
        await delivery(store, Gateway(STATUS_010)).handle(job)


async def test_a_missing_task_is_made_again(store):
    queued = await queue_newrx(store)
    async with store.unit_of_work() as uow:
        await uow.delete("Task", queued.task_id)
    await delivery(store, Gateway(STATUS_010)).handle(attempt(queued, 1))
    task, _ = await current(store, "Task", queued.task_id)
    assert business_status(task) == "accepted"
    assert task["identifier"] == [{"system": MESSAGE_ID_SYSTEM, "value": queued.message_id}]


async def test_a_version_conflict_is_read_again_and_applied_again(store):
    queued = await queue_newrx(store)

    class ConflictOnce:
        """The store, whose first Task write loses a race with another writer."""

        def __init__(self, inner):
            self.inner, self.conflicts = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def unit_of_work(self):
            outer = self

            @asynccontextmanager
            async def uow():
                async with outer.inner.unit_of_work() as inner_uow:
                    original = inner_uow.write

                    async def write(resource_type, id, resource, **options):
                        if resource_type == "Task" and outer.conflicts == 0:
                            outer.conflicts += 1
                            await original(resource_type, id, {**resource, "note": [{"text": "a clinician's note"}]},
                                           method="PUT")
                            raise VersionConflict(options.get("expected_version"), None)
                        return await original(resource_type, id, resource, **options)

                    inner_uow.write = write
                    yield inner_uow

            return uow()

    racing = ConflictOnce(store)
    answer = parse_inbound(messages.status(queued.header, "010"))
    recorded = await apply_to_transmission(racing, queued.task_id,
                                           lambda task, mr: reflect_delivery(mr, answer, task))
    assert racing.conflicts == 1 and recorded.written and recorded.after == "accepted"


async def test_nothing_patient_identifying_reaches_logs_or_job_errors(store, caplog):
    errors = []
    with caplog.at_level(logging.DEBUG):
        for answers, n in (((http(500),), 1), ((ERROR_601,), 1), ((ERROR_600,), 3), ((http(400),), 1),
                           ((STATUS_010,), 1), ((lambda r, h: httpx.Response(200, text="x"),), 1)):
            queued = await queue_newrx(store)
            try:
                await delivery(store, Gateway(*answers)).handle(attempt(queued, n))
            except (RetryLater, Permanent) as exc:
                errors.append(exc.error)
    text = "\n".join(errors + [r.getMessage() for r in caplog.records])
    assert errors and caplog.records
    for secret in PATIENT_DATA:
        assert secret not in text


async def test_the_outbox_worker_runs_the_handler_to_done(store):
    queued = await queue_newrx(store)
    send = delivery(store, Gateway(http(503), STATUS_010))
    worker = OutboxWorker(store, {JOB_KIND: send.handle}, max_attempts=3, backoff=Backoff(base=0.01, cap=0.02),
                          poll_interval=0.05)
    for _ in range(100):
        await worker.run_once()
        if (await store.get_job(queued.job.id)).state == DONE:
            break
        await asyncio.sleep(0.01)
    job = await store.get_job(queued.job.id)
    assert (job.state, job.attempts) == (DONE, 2)
    assert business_status((await current(store, "Task", queued.task_id))[0]) == "accepted"


async def test_a_default_client_is_made_and_closed(store):
    send = ErxDelivery(store, SETTINGS)
    assert send._http() is send._http()
    await send.aclose()
    assert send._client is None


# -- the operator: list and retry --------------------------------------------------------------------


async def dead_job(store) -> Queued:
    queued = await queue_newrx(store)
    send = delivery(store, Gateway(http(500)), max_attempts=1)
    worker = OutboxWorker(store, {JOB_KIND: send.handle}, max_attempts=1)
    await worker.run_once()
    assert (await store.get_job(queued.job.id)).state == DEAD
    return queued


async def test_list_shows_jobs_without_their_payload(store):
    queued = await dead_job(store)
    [line] = await list_jobs(store)
    fields = line.split("\t")
    assert fields[:6] == [queued.job.id, JOB_KIND, queued.message_id, "dead", "1", "-"]
    assert fields[6] == "the gateway answered HTTP 500; gave up after 1 attempts"
    assert await list_jobs(store, "pending") == []
    for secret in PATIENT_DATA:
        assert secret not in line
    with pytest.raises(AdminError):
        await list_jobs(store, "lost")
    with pytest.raises(AdminError):
        await list_jobs(store, None, 0)


async def test_retry_reopens_the_task_and_the_prescription_and_requeues(store):
    queued = await dead_job(store)
    assert (await current(store, "MedicationRequest", queued.mr_id))[0]["status"] == "on-hold"
    line = await retry_job(store, queued.job.id)
    assert line.startswith(f"requeued job {queued.job.id} (MessageID {queued.message_id})")
    job = await store.get_job(queued.job.id)
    assert (job.state, job.attempts) == ("pending", 0)
    task, _ = await current(store, "Task", queued.task_id)
    assert (business_status(task), task["status"]) == ("retrying", "in-progress")
    check(task, "Task")
    mr, _ = await current(store, "MedicationRequest", queued.mr_id)
    assert mr["status"] == "active" and "statusReason" not in mr
    worker = OutboxWorker(store, {JOB_KIND: delivery(store, Gateway(STATUS_010)).handle}, max_attempts=3)
    await worker.run_once()
    assert (await store.get_job(queued.job.id)).state == DONE
    assert business_status((await current(store, "Task", queued.task_id))[0]) == "accepted"


async def test_retry_refuses_what_is_not_dead(store):
    queued = await queue_newrx(store)
    with pytest.raises(AdminError, match="only a dead job"):
        await retry_job(store, queued.job.id)
    with pytest.raises(AdminError, match="no e-prescribing job"):
        await retry_job(store, "nope")


async def test_retry_leaves_a_prescription_held_for_another_reason(store):
    queued = await dead_job(store)
    mr, version = await current(store, "MedicationRequest", queued.mr_id)
    async with store.unit_of_work() as uow:
        await uow.write("MedicationRequest", queued.mr_id, {**mr, "statusReason": {"text": "clinician review"}},
                        method="PUT", expected_version=version)
    await retry_job(store, queued.job.id)
    assert (await current(store, "MedicationRequest", queued.mr_id))[0]["status"] == "on-hold"


# -- inbound ------------------------------------------------------------------------------------------


def inbound_app(store, settings: ErxSettings | None = SETTINGS) -> httpx.AsyncClient:
    app = Starlette(routes=ROUTES)
    app.state.store = store
    app.state.erx_settings = settings
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fhir.test")


def post(client: httpx.AsyncClient, body: bytes, *, token: str | None = TOKEN, content_type="application/xml"):
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.post("/erx/inbound", content=body, headers=headers)


async def test_inbound_is_404_when_not_configured(store):
    verify = messages.verify(Header("0999017", "TELEHEALTH01", "m1", datetime.now(timezone.utc)))
    for settings in (None, dataclasses.replace(SETTINGS, inbound_token=None)):
        async with inbound_app(store, settings) as client:
            r = await post(client, verify)
        assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-secret", f"Basic {TOKEN}", "Bearer", f"bearer {TOKEN}x"])
async def test_inbound_needs_the_gateways_token(store, authorization):
    queued = await queue_newrx(store)
    headers = {"Content-Type": "application/xml"}
    if authorization:
        headers["Authorization"] = authorization
    async with inbound_app(store) as client:
        r = await client.post("/erx/inbound", content=messages.verify(queued.header), headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["issue"][0]["code"] == "login"
    assert (await current(store, "Task", queued.task_id))[1] == 1


async def test_inbound_verify_is_reflected_and_answered_with_status_010(store):
    queued = await queue_newrx(store)
    verify = messages.verify(queued.header)
    async with inbound_app(store) as client:
        r = await post(client, verify)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
        receipt = parse_inbound(r.content)
        assert receipt.message_type == "Status" and receipt.code == "010"
        assert receipt.header.relates_to_message_id == parse_message(verify)[0].message_id
        assert receipt.header.to == parse_message(verify)[0].from_
        task, version = await current(store, "Task", queued.task_id)
        assert (business_status(task), version) == ("verified", 2)
        again = await post(client, verify)  # the gateway delivers it again
        assert again.status_code == 200
        assert (await current(store, "Task", queued.task_id))[1] == 2


async def test_inbound_error_after_acceptance_does_not_go_backwards_but_601_fails(store):
    queued = await queue_newrx(store)
    async with inbound_app(store) as client:
        assert (await post(client, messages.status(queued.header, "000"))).status_code == 200
        assert business_status((await current(store, "Task", queued.task_id))[0]) == "sent"
        assert (await post(client, messages.error(queued.header, "601", None, "Rejected"))).status_code == 200
    task, _ = await current(store, "Task", queued.task_id)
    assert business_status(task) == "error"
    assert (await current(store, "MedicationRequest", queued.mr_id))[0]["status"] == "on-hold"
    assert len(await communications(store)) == 1


async def test_inbound_refusals(store):
    queued = await queue_newrx(store)
    unknown = messages.verify(dataclasses.replace(queued.header, message_id="never-sent"))
    no_relates = messages.verify(queued.header).replace(b"<RelatesToMessageID>", b"<Ignored>").replace(
        b"</RelatesToMessageID>", b"</Ignored>")
    cancel_answer = messages.cancel_rx_response(queued.header, True)
    async with inbound_app(store) as client:
        assert (await post(client, b"{}", content_type="application/json")).status_code == 415
        assert (await post(client, b"<not-closed")).status_code == 400
        assert (await post(client, b"x" * (1024 * 1024 + 1))).status_code == 413
        assert (await post(client, (INBOUND_FIXTURES / "newrx_unsupported.xml").read_bytes())).status_code == 400
        assert (await post(client, unknown)).status_code == 404
        assert (await post(client, no_relates)).status_code == 400
        assert (await post(client, cancel_answer)).status_code == 400  # a CancelRxResponse to a NewRx
    assert (await current(store, "Task", queued.task_id))[1] == 1


async def test_inbound_refusals_do_not_quote_the_message(store):
    renewal = (INBOUND_FIXTURES / "rxrenewal_request.xml").read_bytes().replace(
        b"<Date>1974-12-25</Date>", b"<Date>1974-13-99</Date>")
    async with inbound_app(store) as client:
        r = await post(client, renewal)
    assert r.status_code == 400
    assert "1974" not in r.text and "DateOfBirth" in r.text


def renewal_request(order_number: str, message_id: str | None = None) -> bytes:
    xml = (INBOUND_FIXTURES / "rxrenewal_request.xml").read_bytes()
    xml = xml.replace(b"<PrescriberOrderNumber>mr-4471</PrescriberOrderNumber>",
                      f"<PrescriberOrderNumber>{order_number}</PrescriberOrderNumber>".encode())
    if message_id:
        xml = xml.replace(b"5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d", message_id.encode())
    return xml


async def test_inbound_renewal_request_becomes_one_renewal_task_for_the_prescription(store):
    mr = await store_directory(store)
    xml = renewal_request("RX-2026-000123")  # the amlodipine MedicationRequest's official identifier
    async with inbound_app(store) as client:
        r = await post(client, xml)
        assert r.status_code == 200 and parse_inbound(r.content).code == "010"
        again = await post(client, xml)
        assert again.status_code == 200
    task_id = renewal_task_id(parse_inbound(xml))
    task, version = await current(store, "Task", task_id)
    assert version == 1
    assert task["for"] == mr["subject"] and task["owner"] == mr["requester"]
    assert task["focus"] == {"reference": f"MedicationRequest/{mr['id']}"}
    assert task["code"]["coding"][0]["code"] == "renewal-request"
    check(task, "Task")
    page = await store.search(build_query(["Task"], [("code", "renewal-request")]))
    assert len(page.matches) == 1


async def test_inbound_renewal_request_for_an_unknown_prescription_is_kept_for_a_person(store):
    await store_directory(store)
    xml = renewal_request("unknown-order", message_id="renewal-unmatched-1")
    async with inbound_app(store) as client:
        assert (await post(client, xml)).status_code == 200
    task, _ = await current(store, "Task", renewal_task_id(parse_inbound(xml)))
    assert task["for"]["display"].startswith("Patient not matched: Chalmers, Peter")
    assert task["owner"]["identifier"] == {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1003000126"}
    assert "focus" not in task
    check(task, "Task")


async def test_a_late_retryable_error_is_recorded_as_undelivered_not_left_retrying(store):
    queued = await queue_newrx(store)
    async with inbound_app(store) as client:
        assert (await post(client, messages.status(queued.header, "000"))).status_code == 200
        assert (await post(client, messages.error(queued.header, "600", None, "Try later"))).status_code == 200
    task, _ = await current(store, "Task", queued.task_id)
    assert business_status(task) == "error"  # nothing would resend it: the prescriber is told instead
    assert (await current(store, "MedicationRequest", queued.mr_id))[0]["status"] == "on-hold"
    assert len(await communications(store)) == 1


async def test_a_job_given_up_for_an_unexpected_failure_leaves_its_task_dead_letter(store):
    queued = await queue_newrx(store)
    send = delivery(store, Gateway(RuntimeError("a bug, not a gateway answer")))
    worker = OutboxWorker(store, {JOB_KIND: send.handle}, max_attempts=1,
                          on_dead_letter={JOB_KIND: send.dead_lettered})
    await worker.run_once()
    assert (await store.get_job(queued.job.id)).state == DEAD
    task, _ = await current(store, "Task", queued.task_id)
    assert business_status(task) == "dead-letter"  # not left queued for ever
    assert (await current(store, "MedicationRequest", queued.mr_id))[0]["status"] == "on-hold"


async def test_the_dead_letter_hook_leaves_a_settled_task_alone(store):
    queued = await dead_job(store)  # the handler itself marked it dead-letter on its last attempt
    _, version = await current(store, "Task", queued.task_id)
    await delivery(store, Gateway(STATUS_010)).dead_lettered(queued.job, "given up")
    assert (await current(store, "Task", queued.task_id))[1] == version
