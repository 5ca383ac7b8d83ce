"""E-prescribing delivery end to end against the real gateway simulator (a child process): the
outbox worker runs in-process over an SQLite store set up as the trigger leaves it (the fixtures'
resources, the MedicationRequest, its queued transmission Task and the "erx.send" job), and the
gateway's asynchronous answers reach inbound.py's route served by uvicorn on a free port.

Covered: acceptance; retries after HTTP 500 and after a timeout; dead-letter after max attempts and
an operator's `erx retry` (as a subprocess, with `erx list`); a crash between send and record (the
resend is the same message, counted once by the gateway as a duplicate); late Verify, late Error and
a pharmacy's RxRenewalRequest through /erx/inbound; a callback without the gateway's token refused."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from functools import cache

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from fhir_server.erx.config import ErxSettings
from fhir_server.erx.delivery import JOB_KIND, ErxDelivery
from fhir_server.erx.inbound import PATH, ROUTES, renewal_task_id
from fhir_server.outbox import Backoff, OutboxWorker
from fhir_server.search.extract import extract_index
from fhir_server.storage import open_store
from fhir_server.storage.base import DEAD, DONE, LEASED
from mappers.gateway_sim.process import GatewaySimProcess
from mappers.ncpdp.inbound import parse_inbound
from mappers.ncpdp.reflect import business_status
from tests.support import ROOT
from tests.unit.test_erx_delivery import (
    PATIENT_DATA, TOKEN, communications, current, queue_newrx, renewal_request, store_directory,
)

XML = {"Content-Type": "application/xml"}
MAX_ATTEMPTS = 3


@pytest.fixture(scope="module")
def gateway():
    with GatewaySimProcess() as sim:
        yield sim


@pytest.fixture()
def sim(gateway):
    gateway.control(reset=True)
    return gateway


@pytest.fixture()
def db(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'erx.db'}"


@pytest.fixture()
async def store(db):
    s = open_store(db, indexer=extract_index)
    await s.open()
    yield s
    await s.close()


def settings(sim, **overrides) -> ErxSettings:
    values = dict(gateway_url=f"{sim.url}/script", sender_id="TELEHEALTH01", timeout_s=5.0,
                  max_attempts=MAX_ATTEMPTS, inbound_token=TOKEN)
    return ErxSettings(**{**values, **overrides})


@asynccontextmanager
async def worker_for(store, erx: ErxSettings, **options):
    delivery = ErxDelivery(store, erx)
    options = {"max_attempts": erx.max_attempts, "backoff": Backoff(base=0.01, cap=0.05), "poll_interval": 0.05,
               **options}
    try:
        yield OutboxWorker(store, {JOB_KIND: delivery.handle}, **options)
    finally:
        await delivery.aclose()


async def drive(worker: OutboxWorker, store, job_id: str, timeout: float = 30.0):
    """Run the worker round after round until the job is done or dead."""
    deadline = time.monotonic() + timeout
    while True:
        await worker.run_once()
        job = await store.get_job(job_id)
        if job.state in (DONE, DEAD):
            return job
        assert time.monotonic() < deadline, f"job still {job.state} after {timeout} s"
        await asyncio.sleep(0.02)


async def wait_for_state(store, task_id: str, state: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task, _ = await current(store, "Task", task_id)
        if business_status(task) == state:
            return task
        assert time.monotonic() < deadline, f"Task still {business_status(task)}, not {state}"
        await asyncio.sleep(0.05)


def received(sim, message_id: str) -> list[dict]:
    return [m for m in sim.messages() if m["message_id"] == message_id]


# -- delivery ----------------------------------------------------------------------------------------


async def test_a_newrx_is_delivered_and_its_task_accepted(sim, store):
    queued = await queue_newrx(store)
    async with worker_for(store, settings(sim)) as worker:
        job = await drive(worker, store, queued.job.id)
    assert (job.state, job.attempts, job.last_error) == (DONE, 1, None)
    task, _ = await current(store, "Task", queued.task_id)
    assert (business_status(task), task["status"]) == ("accepted", "completed")
    [message] = received(sim, queued.message_id)
    assert (message["type"], message["duplicates"], message["idempotency_key"]) == ("NewRx", 0, queued.message_id)
    assert message["raw"].encode("utf-8") == queued.xml


async def test_gateway_500s_are_retried_until_accepted(sim, store):
    sim.control(fail_next=2)
    queued = await queue_newrx(store)
    async with worker_for(store, settings(sim)) as worker:
        job = await drive(worker, store, queued.job.id)
    assert (job.state, job.attempts) == (DONE, 3)
    task, version = await current(store, "Task", queued.task_id)
    assert business_status(task) == "accepted"
    assert version == 3  # queued -> retrying (once, not per failure) -> accepted
    [message] = received(sim, queued.message_id)
    assert message["http_statuses"] == [500, 500, 200] and message["duplicates"] == 2


async def test_a_timeout_is_retried_with_the_same_message(sim, store):
    sim.control(timeout_next=1, hang_s=2.0)
    queued = await queue_newrx(store)
    async with worker_for(store, settings(sim, timeout_s=0.3)) as worker:
        job = await drive(worker, store, queued.job.id)
    assert job.state == DONE and job.attempts >= 2
    assert business_status((await current(store, "Task", queued.task_id))[0]) == "accepted"
    [message] = received(sim, queued.message_id)
    assert message["duplicates"] == job.attempts - 1  # recorded once; the resends were recognised


async def test_dead_letter_after_max_attempts_then_an_operator_retry(sim, store, db):
    sim.control(fail_next=100)
    queued = await queue_newrx(store)
    async with worker_for(store, settings(sim)) as worker:
        job = await drive(worker, store, queued.job.id)
    assert (job.state, job.attempts) == (DEAD, MAX_ATTEMPTS)
    assert job.last_error == f"the gateway answered HTTP 500; gave up after {MAX_ATTEMPTS} attempts"
    task, _ = await current(store, "Task", queued.task_id)
    assert (business_status(task), task["status"]) == ("dead-letter", "failed")
    mr, _ = await current(store, "MedicationRequest", queued.mr_id)
    assert mr["status"] == "on-hold"
    [note] = await communications(store)
    assert note["recipient"] == [mr["requester"]]
    [message] = received(sim, queued.message_id)
    assert message["http_statuses"] == [500] * MAX_ATTEMPTS

    # the operator looks, the gateway recovers, the operator retries
    [line] = cli_ok("list", "--database", db)
    assert line.split("\t")[:5] == [job.id, JOB_KIND, queued.message_id, "dead", str(MAX_ATTEMPTS)]
    assert cli_ok("list", "--database", db, "--state", "pending") == []
    sim.control(fail_next=0)
    [done] = cli_ok("retry", job.id, "--database", db)
    assert done.startswith(f"requeued job {job.id} (MessageID {queued.message_id})")
    assert (await current(store, "MedicationRequest", queued.mr_id))[0]["status"] == "active"
    async with worker_for(store, settings(sim)) as worker:
        job = await drive(worker, store, queued.job.id)
    assert (job.state, job.attempts) == (DONE, 1)
    assert business_status((await current(store, "Task", queued.task_id))[0]) == "accepted"
    [message] = received(sim, queued.message_id)
    assert message["http_statuses"][-1] == 200


class Crash(BaseException):
    """The process dies: nothing after it runs (not an Exception, so no handler catches it)."""


class Clock:
    def __init__(self):
        self.now = datetime.now(timezone.utc) + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.now


async def test_a_crash_between_send_and_record_resends_the_same_message_once(sim, store, monkeypatch):
    queued = await queue_newrx(store)
    real_record = ErxDelivery.record
    crashed = []

    async def crash_once(self, *args, **kwargs):
        if not crashed:
            crashed.append(True)
            raise Crash()  # after the gateway answered, before the Task was written
        return await real_record(self, *args, **kwargs)

    monkeypatch.setattr(ErxDelivery, "record", crash_once)
    clock = Clock()
    async with worker_for(store, settings(sim), clock=clock, lease_seconds=30) as worker:
        with pytest.raises(Crash):
            await worker.run_once()
        job = await store.get_job(queued.job.id)
        assert (job.state, job.attempts) == (LEASED, 1)  # nobody recorded anything
        assert business_status((await current(store, "Task", queued.task_id))[0]) == "queued"
        assert [m["duplicates"] for m in received(sim, queued.message_id)] == [0]  # but the gateway has it

        assert await worker.run_once() == 0  # the lease still holds
        clock.now += timedelta(seconds=31)  # ... until it expires
        assert await worker.run_once() == 1
    job = await store.get_job(queued.job.id)
    assert (job.state, job.attempts) == (DONE, 2)
    assert business_status((await current(store, "Task", queued.task_id))[0]) == "accepted"
    [message] = received(sim, queued.message_id)
    assert message["duplicates"] == 1 and message["raw"].encode("utf-8") == queued.xml


# -- the gateway's asynchronous answers through /erx/inbound -----------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def presenting_token(app, token: str):
    """The simulator cannot send an Authorization header: `/sim-callback` adds the gateway's token and
    goes on to /erx/inbound (any other path, /erx/inbound itself included, is passed as it is)."""

    async def asgi(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/sim-callback":
            headers = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
            headers.append((b"authorization", f"Bearer {token}".encode()))
            scope = {**scope, "path": PATH, "raw_path": PATH.encode(), "headers": headers}
        await app(scope, receive, send)

    return asgi


@pytest.fixture()
def inbound(db, sim):
    """inbound.ROUTES in a small Starlette app (its own store over the same database file), served by
    uvicorn in a thread; yields its base URL."""

    @asynccontextmanager
    async def lifespan(app):
        app.state.store = open_store(db, indexer=extract_index)
        await app.state.store.open()
        try:
            yield
        finally:
            await app.state.store.close()

    app = Starlette(routes=ROUTES, lifespan=lifespan)
    app.state.erx_settings = settings(sim)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(presenting_token(app, TOKEN), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the inbound server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def wait_for_deliveries(sim, count: int, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        done = [d for d in sim.deliveries() if d["finished_at"]]
        if len(done) >= count:
            return done
        assert time.monotonic() < deadline, "the simulator did not deliver its callbacks"
        time.sleep(0.05)


async def test_a_late_verify_reaches_the_task(sim, store, inbound):
    sim.control(callback_url=f"{inbound}/sim-callback", late_answer="verify", late_status_after_s=0.2)
    queued = await queue_newrx(store)
    async with worker_for(store, settings(sim)) as worker:
        job = await drive(worker, store, queued.job.id)
    assert job.state == DONE
    task = await wait_for_state(store, queued.task_id, "verified")
    assert task["status"] == "completed"
    [delivery] = wait_for_deliveries(sim, 1)
    assert (delivery["kind"], delivery["http_status"]) == ("Verify", 200)


async def test_a_late_error_fails_the_task_and_holds_the_prescription(sim, store, inbound):
    sim.control(callback_url=f"{inbound}/sim-callback", late_answer="error", late_error_code="601",
                late_status_after_s=0.2)
    queued = await queue_newrx(store)
    async with worker_for(store, settings(sim)) as worker:
        await drive(worker, store, queued.job.id)
    task = await wait_for_state(store, queued.task_id, "error")
    assert task["status"] == "failed"
    assert (await current(store, "MedicationRequest", queued.mr_id))[0]["status"] == "on-hold"
    assert len(await communications(store)) == 1


async def test_a_callback_without_the_gateways_token_is_refused(sim, store, inbound):
    sim.control(callback_url=f"{inbound}{PATH}", late_answer="verify")  # straight to the route: no token
    queued = await queue_newrx(store)
    async with worker_for(store, settings(sim)) as worker:
        await drive(worker, store, queued.job.id)
    [delivery] = wait_for_deliveries(sim, 1)
    assert delivery["http_status"] == 401
    assert business_status((await current(store, "Task", queued.task_id))[0]) == "sent"


async def test_a_pharmacys_renewal_request_becomes_a_renewal_task(sim, store, inbound):
    mr = await store_directory(store)
    sim.control(callback_url=f"{inbound}/sim-callback")
    xml = renewal_request("RX-2026-000123", message_id="renewal-e2e-1")
    assert httpx.post(f"{sim.url}/inject", content=xml, headers=XML, timeout=5.0).status_code == 202
    [delivery] = wait_for_deliveries(sim, 1)
    assert (delivery["kind"], delivery["http_status"]) == ("RxRenewalRequest", 200)
    task, _ = await current(store, "Task", renewal_task_id(parse_inbound(xml)))
    assert task["focus"] == {"reference": f"MedicationRequest/{mr['id']}"}
    assert task["for"] == mr["subject"] and task["status"] == "requested"


# -- the operator's commands as a subprocess ------------------------------------------------------------


@cache
def _main_cli_has_erx() -> bool:
    from fhir_server import cli
    from fhir_server.config import Settings

    parser = cli._parser(Settings.from_env())
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return "erx" in commands.choices


def cli(*args: str) -> subprocess.CompletedProcess:
    # `python -m fhir_server erx ...` once cli.py adds the erx commands; until then the module's own entry
    command = ["-m", "fhir_server", "erx"] if _main_cli_has_erx() else ["-m", "fhir_server.erx.admin"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_")}
    return subprocess.run([sys.executable, *command, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=environment)


def cli_ok(*args: str) -> list[str]:
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


async def test_cli_refusals_and_no_payload_in_the_listing(store, db):
    queued = await queue_newrx(store)
    [line] = cli_ok("list", "--database", db)
    assert line.split("\t") == [queued.job.id, JOB_KIND, queued.message_id, "pending", "0",
                                line.split("\t")[5], "-"]
    for secret in PATIENT_DATA:
        assert secret not in line
    for args, expected in ((("retry", queued.job.id, "--database", db), "only a dead job can be retried"),
                           (("retry", "no-such-job", "--database", db), "no e-prescribing job"),
                           (("list", "--database", "postgres://x"), "--database")):
        result = cli(*args)
        assert (result.returncode, result.stdout) == (2, ""), result
        assert expected in result.stderr and result.stderr.count("\n") == 1
