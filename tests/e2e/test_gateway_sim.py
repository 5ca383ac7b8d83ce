"""The gateway simulator (`python -m mappers.gateway_sim --port P`) over real HTTP: synchronous
Status/Error answers, idempotency by MessageID, the failure modes (HTTP 500, hanging past the
client's timeout, SCRIPT Errors), and late asynchronous answers delivered to a callback receiver."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from lxml import etree

from mappers.gateway_sim.process import ROOT, GatewaySimProcess
from mappers.ncpdp.envelope import Header, build_message, new_message_id, sub
from mappers.ncpdp.inbound import (
    CancelRxResponse,
    ErrorMessage,
    RxRenewalRequest,
    StatusMessage,
    VerifyMessage,
    parse_inbound,
)

XML = {"Content-Type": "application/xml"}
PHARMACY = "0999017"
SENDER = "FHIRTH001"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "erx_inbound"


# ---- helpers ---------------------------------------------------------------------------------------

class CallbackReceiver:
    """A tiny HTTP server (a thread) standing in for our inbound endpoint: it keeps every POST."""

    def __init__(self):
        received: queue.Queue = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.put((time.monotonic(), self.headers.get("Content-Type"), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/erx/inbound"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def next(self, timeout: float = 5.0) -> tuple[float, str, bytes]:
        return self.received.get(timeout=timeout)

    def nothing_within(self, seconds: float) -> bool:
        try:
            self.received.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def newrx(message_id: str | None = None, *, to: str = PHARMACY, return_receipt: bool = False,
          order_number: str = "mr-4471") -> tuple[str, bytes]:
    """A minimal NewRx (enough for the simulator; the real builder is mappers/ncpdp/newrx.py)."""
    message_id = message_id or new_message_id()
    body = etree.Element("NewRx")
    if return_receipt:
        sub(body, "ReturnReceipt", "1")
    name = sub(sub(sub(body, "Patient"), "HumanPatient"), "Name")
    sub(name, "LastName", "Chalmers")
    sub(sub(sub(body, "Pharmacy"), "Identification"), "NCPDPID", to)
    sub(sub(sub(sub(body, "Prescriber"), "NonVeterinarian"), "Identification"), "NPI", "1003000126")
    medication = sub(body, "MedicationPrescribed")
    sub(medication, "DrugDescription", "amlodipine 5 MG Oral Tablet")
    sub(sub(medication, "Sig"), "SigText", "Take one tablet by mouth once daily")
    header = Header(to=to, from_=SENDER, message_id=message_id, sent_time=datetime.now(timezone.utc),
                    prescriber_order_number=order_number)
    return message_id, build_message(header, body)


def cancelrx(relates_to: str | None) -> tuple[str, bytes]:
    message_id = new_message_id()
    body = etree.Element("CancelRx")
    sub(sub(sub(sub(body, "Patient"), "HumanPatient"), "Name"), "LastName", "Chalmers")
    header = Header(to=PHARMACY, from_=SENDER, message_id=message_id, sent_time=datetime.now(timezone.utc),
                    relates_to_message_id=relates_to, prescriber_order_number="mr-4471")
    return message_id, build_message(header, body)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with GatewaySimProcess(log_path=tmp_path_factory.mktemp("gateway_sim") / "sim.log") as process:
        yield process


@pytest.fixture()
def gateway(sim):
    sim.control(reset=True)
    with httpx.Client(base_url=sim.url, timeout=10.0) as client:
        client.sim = sim  # type: ignore[attr-defined]
        yield client


@pytest.fixture()
def receiver(gateway):
    r = CallbackReceiver()
    gateway.sim.control(callback_url=r.url)
    yield r
    r.close()


def delivered(client: httpx.Client, timeout: float = 5.0) -> list[dict]:
    """/deliveries once every delivery has finished (the receiver may see a POST before the
    simulator has recorded its outcome)."""
    deadline = time.monotonic() + timeout
    while True:
        deliveries = client.get("/deliveries").json()
        if all(d["finished_at"] for d in deliveries) or time.monotonic() > deadline:
            return deliveries
        time.sleep(0.05)


def post(client: httpx.Client, xml: bytes, **headers) -> httpx.Response:
    return client.post("/script", content=xml, headers={**XML, **headers})


# ---- synchronous answers ---------------------------------------------------------------------------

def test_a_newrx_is_accepted_with_status_010_addressed_back(gateway):
    message_id, xml = newrx()
    response = post(gateway, xml)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    answer = parse_inbound(response.content)
    assert isinstance(answer, StatusMessage) and answer.code == "010"
    header = answer.header
    assert header.relates_to_message_id == message_id
    assert (header.to, header.to_qualifier, header.from_, header.from_qualifier) == (SENDER, "D", PHARMACY, "P")
    assert header.prescriber_order_number == "mr-4471"
    assert header.message_id != message_id


def test_root_path_accepts_script_too(gateway):
    response = gateway.post("/", content=newrx()[1], headers=XML)
    assert isinstance(parse_inbound(response.content), StatusMessage)


def test_messages_lists_what_arrived(gateway):
    first_id, first = newrx()
    second_id, second = newrx()
    before = datetime.now(timezone.utc)
    post(gateway, first)
    post(gateway, second)
    listed = gateway.get("/messages").json()
    assert [m["message_id"] for m in listed] == [first_id, second_id]
    assert listed[0]["raw"].encode() == first
    assert listed[0]["type"] == "NewRx"
    assert datetime.fromisoformat(listed[0]["received_at"]) >= before.replace(microsecond=0)
    assert listed[0]["duplicates"] == 0
    assert listed[0]["answer"] == {"type": "Status", "code": "010"}
    assert gateway.get("/messages", params={"type": "CancelRx"}).json() == []


def test_a_duplicate_message_id_is_not_recorded_twice_and_gets_the_same_answer(gateway):
    message_id, xml = newrx()
    first = post(gateway, xml)
    again = post(gateway, xml)
    assert again.content == first.content
    listed = gateway.get("/messages").json()
    assert len(listed) == 1 and listed[0]["duplicates"] == 1 and listed[0]["http_statuses"] == [200, 200]


def test_the_idempotency_key_header_deduplicates_too(gateway):
    _, xml = newrx()
    first = post(gateway, xml, **{"Idempotency-Key": "job-77"})
    again = post(gateway, xml, **{"Idempotency-Key": "job-77"})
    assert again.content == first.content
    listed = gateway.get("/messages").json()
    assert len(listed) == 1 and listed[0]["idempotency_key"] == "job-77" and listed[0]["duplicates"] == 1


def test_a_reused_message_id_with_other_content_is_rejected(gateway):
    message_id, xml = newrx("reused0000000000000000000000000001")
    post(gateway, xml)
    _, other = newrx("reused0000000000000000000000000001", order_number="mr-9999")
    answer = parse_inbound(post(gateway, other).content)
    assert isinstance(answer, ErrorMessage) and answer.code == "900"
    assert "already used" in answer.description
    listed = gateway.get("/messages").json()
    assert len(listed) == 1 and listed[0]["conflicts"] == 1


@pytest.mark.parametrize("xml", [
    b"this is not xml",
    b"<Message><Header>",
    b'<?xml version="1.0"?><!DOCTYPE Message [<!ENTITY x SYSTEM "file:///etc/passwd">]><Message>&x;</Message>',
    b"<NotAMessage/>",
])
def test_unreadable_or_unsafe_messages_get_error_601(gateway, xml):
    response = post(gateway, xml)
    assert response.status_code == 200
    answer = parse_inbound(response.content)
    assert isinstance(answer, ErrorMessage) and answer.code == "601"
    assert answer.header.relates_to_message_id is None
    assert b"root:" not in response.content  # /etc/passwd was not read
    assert gateway.get("/messages").json()[0]["message_id"] is None


def test_a_message_to_an_unknown_receiver_gets_error_900_002(gateway):
    message_id, xml = newrx(to="PHARM")
    answer = parse_inbound(post(gateway, xml).content)
    assert isinstance(answer, ErrorMessage)
    assert (answer.code, answer.description_code) == ("900", "002")
    assert answer.header.relates_to_message_id == message_id


def test_a_message_type_the_network_does_not_take_gets_error_900(gateway):
    answer = parse_inbound(post(gateway, (FIXTURES / "status_010.xml").read_bytes()).content)
    assert isinstance(answer, ErrorMessage) and answer.code == "900"
    assert "Status is not a message" in answer.description


def test_a_cancel_without_relates_to_gets_error_900(gateway):
    answer = parse_inbound(post(gateway, cancelrx(None)[1]).content)
    assert isinstance(answer, ErrorMessage) and answer.code == "900" and "RelatesToMessageID" in answer.description


def test_non_xml_and_oversized_bodies_are_refused_at_http_level(gateway):
    assert gateway.post("/script", content=b"{}", headers={"Content-Type": "application/json"}).status_code == 415
    assert post(gateway, b"<Message>" + b"x" * (1024 * 1024 + 1)).status_code == 413


# ---- failure modes ---------------------------------------------------------------------------------

def test_fail_next_answers_http_500_then_recovers(gateway):
    gateway.sim.control(fail_next=2)
    message_id, xml = newrx()
    assert post(gateway, xml).status_code == 500
    assert post(gateway, xml).status_code == 500
    answer = parse_inbound(post(gateway, xml).content)
    assert isinstance(answer, StatusMessage) and answer.header.relates_to_message_id == message_id
    listed = gateway.get("/messages").json()
    assert len(listed) == 1 and listed[0]["duplicates"] == 2 and listed[0]["http_statuses"] == [500, 500, 200]
    assert gateway.sim.control()["fail_next"] == 0


def test_timeout_next_hangs_past_the_client_timeout_and_the_resend_gets_the_answer(gateway):
    gateway.sim.control(timeout_next=1, hang_s=5)
    message_id, xml = newrx()
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        gateway.post("/script", content=xml, headers=XML, timeout=0.5)
    assert time.monotonic() - started < 3
    resent = post(gateway, xml)  # same bytes, same MessageID, as the outbox resends
    answer = parse_inbound(resent.content)
    assert isinstance(answer, StatusMessage) and answer.header.relates_to_message_id == message_id
    listed = gateway.get("/messages").json()
    assert len(listed) == 1 and listed[0]["duplicates"] == 1


@pytest.mark.parametrize("code", ["600", "602"])
def test_a_retryable_error_is_not_replayed_to_the_resend(gateway, code):
    gateway.sim.control(error_next=1, error_code=code, error_description_code="008")
    _, xml = newrx()
    first = parse_inbound(post(gateway, xml).content)
    assert isinstance(first, ErrorMessage) and (first.code, first.description_code) == (code, "008")
    assert first.retryable
    assert isinstance(parse_inbound(post(gateway, xml).content), StatusMessage)


def test_a_final_error_is_replayed_to_the_resend(gateway):
    gateway.sim.control(error_next=1, error_code="900", error_description="No patient match")
    _, xml = newrx()
    first = post(gateway, xml)
    assert parse_inbound(first.content).description == "No patient match"
    assert post(gateway, xml).content == first.content


def test_control_refuses_bad_settings(gateway):
    for settings in ({"fail_next": -1}, {"bogus": 1}, {"late_answer": "sometime"},
                     {"callback_url": "http://example.com/hook"}, {"callback_url": "ftp://127.0.0.1/x"}):
        response = gateway.post("/control", json=settings)
        assert response.status_code == 400, settings
    assert gateway.post("/control", content=b"not json").status_code == 400


def test_reset_clears_messages_and_modes(gateway):
    gateway.sim.control(fail_next=3)
    post(gateway, newrx()[1])
    modes = gateway.sim.control(reset=True)
    assert modes["fail_next"] == 0
    assert gateway.get("/messages").json() == []


# ---- late asynchronous answers -------------------------------------------------------------------

def test_late_verify_goes_to_the_callback_after_the_delay(gateway, receiver):
    gateway.sim.control(late_answer="verify", late_status_after_s=0.4)
    message_id, xml = newrx()
    sent = time.monotonic()
    sync = parse_inbound(post(gateway, xml).content)
    assert isinstance(sync, StatusMessage) and sync.code == "000"  # pending: an answer will follow
    arrived, content_type, body = receiver.next()
    assert arrived - sent >= 0.35
    assert content_type == "application/xml"
    late = parse_inbound(body)
    assert isinstance(late, VerifyMessage) and late.code == "010"
    assert late.header.relates_to_message_id == message_id
    assert (late.header.from_, late.header.to) == (PHARMACY, SENDER)
    deliveries = delivered(gateway)
    assert deliveries[0]["kind"] == "Verify" and deliveries[0]["relates_to_message_id"] == message_id
    assert deliveries[0]["http_status"] == 200


def test_return_receipt_asks_for_a_verify_without_any_mode(gateway, receiver):
    message_id, xml = newrx(return_receipt=True)
    assert parse_inbound(post(gateway, xml).content).code == "000"
    late = parse_inbound(receiver.next()[2])
    assert isinstance(late, VerifyMessage) and late.header.relates_to_message_id == message_id


def test_no_late_answer_without_a_mode_or_return_receipt(gateway, receiver):
    assert parse_inbound(post(gateway, newrx()[1]).content).code == "010"
    assert receiver.nothing_within(0.5)


def test_late_status_010(gateway, receiver):
    gateway.sim.control(late_answer="status")
    message_id, xml = newrx()
    post(gateway, xml)
    late = parse_inbound(receiver.next()[2])
    assert isinstance(late, StatusMessage) and late.delivered and late.header.relates_to_message_id == message_id


def test_late_error_from_the_pharmacy(gateway, receiver):
    gateway.sim.control(late_answer="error", late_error_code="601")
    message_id, xml = newrx()
    post(gateway, xml)
    late = parse_inbound(receiver.next()[2])
    assert isinstance(late, ErrorMessage) and late.code == "601" and late.header.relates_to_message_id == message_id


def test_a_duplicate_does_not_send_the_late_answer_twice(gateway, receiver):
    gateway.sim.control(late_answer="verify")
    _, xml = newrx()
    post(gateway, xml)
    post(gateway, xml)
    receiver.next()
    assert receiver.nothing_within(0.5)


@pytest.mark.parametrize("mode, approved", [("approved", True), ("denied", False)])
def test_cancel_rx_gets_the_pharmacys_cancel_response(gateway, receiver, mode, approved):
    gateway.sim.control(cancel_response=mode)
    newrx_id, xml = newrx()
    post(gateway, xml)
    cancel_id, cancel = cancelrx(newrx_id)
    assert parse_inbound(post(gateway, cancel).content).code == "000"
    late = parse_inbound(receiver.next()[2])
    assert isinstance(late, CancelRxResponse) and late.approved is approved
    assert late.header.relates_to_message_id == cancel_id
    if not approved:
        assert late.denial_reason == "Prescription already dispensed"


def test_inject_delivers_a_pharmacy_initiated_message(gateway, receiver):
    xml = (FIXTURES / "rxrenewal_request.xml").read_bytes()
    response = gateway.post("/inject", content=xml, headers=XML)
    assert response.status_code == 202
    _, _, body = receiver.next()
    assert body == xml
    assert isinstance(parse_inbound(body), RxRenewalRequest)


def test_inject_needs_a_callback_and_a_safe_message(gateway):
    xml = (FIXTURES / "rxrenewal_request.xml").read_bytes()
    assert gateway.post("/inject", content=xml, headers=XML).status_code == 400  # no callback_url yet
    r = CallbackReceiver()
    try:
        gateway.sim.control(callback_url=r.url)
        bad = b'<!DOCTYPE Message [<!ENTITY x "y">]><Message/>'
        assert gateway.post("/inject", content=bad, headers=XML).status_code == 400
    finally:
        r.close()


def test_an_unreachable_callback_is_recorded_not_fatal(gateway):
    from mappers.gateway_sim.process import free_port

    gateway.sim.control(callback_url=f"http://127.0.0.1:{free_port()}/nobody", late_answer="verify")
    assert parse_inbound(post(gateway, newrx()[1]).content).code == "000"
    delivery = delivered(gateway)[0]
    assert delivery["http_status"] is None and "ConnectError" in delivery["error"]


# ---- the command line ------------------------------------------------------------------------------

def test_the_simulator_refuses_a_non_loopback_address_by_default():
    done = subprocess.run([sys.executable, "-m", "mappers.gateway_sim", "--host", "0.0.0.0", "--port", "1"],
                          cwd=ROOT, capture_output=True, timeout=30)
    assert done.returncode == 2
    assert b"not loopback" in done.stderr
