"""A pharmacy's renewal request answered through the real server: the gateway simulator pushes an
RxRenewalRequest to /erx/inbound, which makes a renewal Task; a clinician answers it with an
ordinary FHIR update of that Task, and the RxRenewalResponse reaches the gateway (once), its
transmission Task following the answers. An answer that cannot be sent is a 422 and changes nothing."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from mappers.gateway_sim.process import GatewaySimProcess
from mappers.ncpdp.envelope import parse_message
from mappers.ncpdp.reflect import MESSAGE_ID_SYSTEM, TASK_PARAMETER_SYSTEM, business_status, transmitted_message_type
from tests.e2e.erx_support import wait_for
from tests.fixtures import erx
from tests.support import FHIR_JSON, ServerProcess

INBOUND_TOKEN = "test-inbound-secret"
REQUEST_XML = (Path(__file__).resolve().parents[1] / "fixtures" / "erx_inbound" / "rxrenewal_request.xml").read_bytes()
FIXTURE_MESSAGE_ID = b"5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d"
ORDER_NUMBER = "RX-2026-000123"  # mr-amlodipine's official identifier


@pytest.fixture(scope="module")
def gateway():
    with GatewaySimProcess() as sim:
        yield sim


@pytest.fixture(scope="module")
def server(tmp_path_factory, gateway):
    process = ServerProcess(tmp_path_factory.mktemp("erx-renewal") / "fhir.db", extra_args=[
        "--erx-gateway", f"{gateway.url}/script", "--erx-sender-id", "TELEHEALTH01",
        "--erx-inbound-token", INBOUND_TOKEN]).start()
    with httpx.Client(base_url=process.base, headers=FHIR_JSON, timeout=30.0) as client:
        for reference in erx._directory():
            kind, id = reference.split("/")
            assert client.put(f"/{kind}/{id}", json=erx.resource(reference)).status_code in (200, 201)
        mr = erx.medication_request("amlodipine-tablet")  # the original prescription (its NewRx goes out too)
        assert client.put(f"/MedicationRequest/{mr['id']}", json=mr).status_code in (200, 201)
    gateway.control(callback_url=f"{process.base}/erx/inbound", callback_token=INBOUND_TOKEN)
    yield process
    process.stop()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.base, headers=FHIR_JSON, timeout=30.0) as c:
        yield c


def search(client: httpx.Client, **params) -> list[dict]:
    bundle = client.get("/Task", params=params).json()
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]


def pharmacy_asks(client: httpx.Client, gateway, order_number: str = ORDER_NUMBER) -> tuple[str, dict]:
    """Inject an RxRenewalRequest (a new MessageID) and wait for its renewal Task: (MessageID, Task)."""
    message_id = uuid.uuid4().hex
    xml = (REQUEST_XML.replace(FIXTURE_MESSAGE_ID, message_id.encode())
           .replace(b"<PrescriberOrderNumber>mr-4471<", f"<PrescriberOrderNumber>{order_number}<".encode()))
    r = httpx.post(f"{gateway.url}/inject", content=xml, headers={"Content-Type": "application/xml"}, timeout=5.0)
    assert r.status_code == 202, r.text
    [task] = wait_for(lambda: search(client, identifier=f"{MESSAGE_ID_SYSTEM}|{message_id}"))
    return message_id, task


def decision(code: str) -> dict:
    return {"type": {"coding": [{"system": TASK_PARAMETER_SYSTEM, "code": "decision"}]}, "valueCode": code}


def responses_to(gateway, request_id: str) -> list[tuple]:
    """(header, the Response's child) of each RxRenewalResponse the gateway got for the request."""
    found = []
    for message in gateway.messages():
        if message["type"] == "RxRenewalResponse":
            header, _, body = parse_message(message["raw"].encode())
            if header.relates_to_message_id == request_id:
                found.append((header, body.find("Response")[0]))
    return found


def test_an_approval_reaches_the_pharmacy_once(client, gateway):
    request_id, task = pharmacy_asks(client, gateway)
    assert task["focus"] == {"reference": "MedicationRequest/mr-amlodipine"}
    r = client.put(f"/Task/{task['id']}", json={**task, "status": "completed", "output": [decision("Approved")]})
    assert r.status_code == 200, r.text

    [(header, answer)] = wait_for(lambda: responses_to(gateway, request_id))
    assert answer.tag == "Approved"
    assert (header.to, header.to_qualifier, header.from_) == ("0999017", "P", "TELEHEALTH01")
    transmission = wait_for(lambda: next((t for t in search(client, **{"part-of": f"Task/{task['id']}"})
                                          if business_status(t) in ("accepted", "verified")), None))
    assert transmitted_message_type(transmission) == "RxRenewalResponse"

    answered = r.json()
    assert client.put(f"/Task/{task['id']}", json={**answered, "note": [{"text": "faxed too"}]}).status_code == 200
    time.sleep(1.0)  # the outbox would have sent a second answer by now
    assert len(responses_to(gateway, request_id)) == 1
    assert len(search(client, **{"part-of": f"Task/{task['id']}"})) == 1


def test_a_denial_reaches_the_pharmacy_with_its_reason(client, gateway):
    request_id, task = pharmacy_asks(client, gateway)
    r = client.put(f"/Task/{task['id']}", json={**task, "status": "rejected",
                                                 "statusReason": {"text": "Needs a follow-up visit"}})
    assert r.status_code == 200, r.text
    [(_, answer)] = wait_for(lambda: responses_to(gateway, request_id))
    assert answer.tag == "Denied"
    assert [(c.tag, c.text) for c in answer] == [("DenialReason", "Needs a follow-up visit")]


def test_an_answer_without_a_matched_prescription_is_refused_with_422(client, gateway):
    request_id, task = pharmacy_asks(client, gateway, order_number="mr-4471")  # not an order number here
    assert "focus" not in task
    r = client.put(f"/Task/{task['id']}", json={**task, "status": "completed", "output": [decision("Approved")]})
    assert r.status_code == 422
    assert [i.get("expression") for i in r.json()["issue"]] == [["Task.focus"]]
    current = client.get(f"/Task/{task['id']}").json()
    assert (current["status"], current["meta"]["versionId"]) == ("requested", task["meta"]["versionId"])
    time.sleep(0.5)
    assert responses_to(gateway, request_id) == []
