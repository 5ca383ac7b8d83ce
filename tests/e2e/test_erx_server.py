"""E-prescribing through the real server: a prescription written over FHIR REST reaches the gateway
simulator as a NewRx and its transmission Task follows the answers; a cancel sends a CancelRx; an
unsendable prescription is refused before anything is stored."""

from __future__ import annotations

import httpx
import pytest

from mappers.gateway_sim.process import GatewaySimProcess
from mappers.ncpdp.reflect import business_status, transmitted_message_id, transmitted_message_type
from tests.e2e.erx_support import transmissions, wait_for
from tests.fixtures import erx
from tests.support import FHIR_JSON, ServerProcess

INBOUND_TOKEN = "test-inbound-secret"


@pytest.fixture(scope="module")
def gateway():
    with GatewaySimProcess() as sim:
        yield sim


@pytest.fixture(scope="module")
def server(tmp_path_factory, gateway):
    process = ServerProcess(tmp_path_factory.mktemp("erx") / "fhir.db", extra_args=[
        "--erx-gateway", f"{gateway.url}/script", "--erx-sender-id", "TELEHEALTH01",
        "--erx-inbound-token", INBOUND_TOKEN, "--erx-max-attempts", "3"]).start()
    with httpx.Client(base_url=process.base, headers=FHIR_JSON, timeout=30.0) as client:
        for reference in erx._directory():
            kind, id = reference.split("/")
            assert client.put(f"/{kind}/{id}", json=erx.resource(reference)).status_code in (200, 201)
    yield process
    process.stop()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.base, headers=FHIR_JSON, timeout=30.0) as c:
        yield c


def test_a_prescription_reaches_the_pharmacy_and_its_task_says_accepted(client, gateway):
    mr = erx.medication_request("amlodipine-tablet")
    assert client.put(f"/MedicationRequest/{mr['id']}", json=mr).status_code in (200, 201)
    task = wait_for(lambda: next((t for t in transmissions(client, mr["id"])
                                  if business_status(t) in ("accepted", "verified")), None))
    received = [m for m in gateway.messages() if m["message_id"] == transmitted_message_id(task)]
    assert [m["type"] for m in received] == ["NewRx"]


def test_an_unsendable_prescription_is_refused_with_422_and_not_stored(client):
    mr = erx.medication_request("pharmacy-without-ncpdpid")
    r = client.put(f"/MedicationRequest/{mr['id']}", json=mr)
    assert r.status_code == 422
    assert r.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/MedicationRequest/{mr['id']}").status_code == 404


def test_cancelling_a_sent_prescription_sends_a_cancelrx(client, gateway):
    mr = erx.medication_request("nitrofurantoin-liquid")
    client.put(f"/MedicationRequest/{mr['id']}", json=mr)
    wait_for(lambda: any(business_status(t) in ("accepted", "verified") for t in transmissions(client, mr["id"])))
    assert client.put(f"/MedicationRequest/{mr['id']}", json={**mr, "status": "cancelled"}).status_code == 200
    cancel = wait_for(lambda: next((t for t in transmissions(client, mr["id"])
                                    if transmitted_message_type(t) == "CancelRx"), None))
    wait_for(lambda: any(m["message_id"] == transmitted_message_id(cancel) and m["type"] == "CancelRx"
                         for m in gateway.messages()))


def test_a_gateway_outage_is_retried_until_the_message_is_accepted(client, gateway):
    gateway.control(fail_next=2)
    mr = erx.medication_request("albuterol-inhaler")
    client.put(f"/MedicationRequest/{mr['id']}", json=mr)
    task = wait_for(lambda: next((t for t in transmissions(client, mr["id"])
                                  if business_status(t) in ("accepted", "verified")), None), timeout=60.0)
    assert sum(1 for m in gateway.messages() if m["message_id"] == transmitted_message_id(task)) == 1


def test_a_late_verify_from_the_network_marks_the_task_verified(client, gateway, server):
    gateway.control(callback_url=f"{server.base}/erx/inbound", callback_token=INBOUND_TOKEN,
                    late_answer="verify", late_status_after_s=0.2)
    try:
        mr = erx.medication_request("triamcinolone-cream")
        client.put(f"/MedicationRequest/{mr['id']}", json=mr)
        wait_for(lambda: any(business_status(t) == "verified" for t in transmissions(client, mr["id"])))
    finally:
        gateway.control(reset=True)


def test_the_gateway_callback_needs_the_inbound_token(server):
    r = httpx.post(f"{server.base}/erx/inbound", content=b"<Message/>", headers={"Content-Type": "application/xml"})
    assert r.status_code == 401


def test_the_capability_statement_says_how_delivery_state_is_shown(client):
    statement = client.get("/metadata").json()
    documented = {r["type"]: r.get("documentation", "") for r in statement["rest"][0]["resource"]}
    assert "erx-delivery-status" in documented["Task"]
    assert "NewRx" in documented["MedicationRequest"]
