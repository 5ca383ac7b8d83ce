"""A FHIR-native pharmacy end to end, with two real servers: the pharmacy is a second instance of
this server (no e-prescribing, --no-auth) whose base URL is the address of an hl7-fhir-rest Endpoint
the pharmacy Organization names at the prescribing server (e-prescribing on). A prescription written
over FHIR REST reaches the pharmacy's server as a transaction: it holds exactly one copy of the
MedicationRequest (found by our prescription identifier) and the Patient, however often it is
delivered; a cancel updates that copy; an unreachable pharmacy dead-letters the delivery and puts
the prescription on-hold."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest

from fhir_server.erx.config import ErxSettings
from fhir_server.erx.fhir_pharmacy import CANCEL, JOB_KIND, ORDER, FhirPharmacyDelivery, delivery_purpose
from fhir_server.search.extract import extract_index
from fhir_server.storage import open_store
from mappers.fhir_pharmacy import ENDPOINT_CONNECTION_TYPE_SYSTEM
from mappers.ncpdp.reflect import TASK_PARAMETER_SYSTEM, business_status
from tests.e2e.erx_support import transmissions, wait_for
from tests.fixtures import erx
from tests.support import FHIR_JSON, ServerProcess, free_port

PRESCRIPTION_SYSTEM = "https://telehealth.example.org/fhir/sid/prescription-number"
MRN = "https://telehealth.example.org/fhir/sid/mrn|MRN-004512"
MAX_ATTEMPTS = 3


@pytest.fixture(scope="module")
def pharmacy(tmp_path_factory):
    process = ServerProcess(tmp_path_factory.mktemp("fhir-pharmacy") / "pharmacy.db").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def prescriber(tmp_path_factory, pharmacy):
    # e-prescribing must be on for the trigger and the worker; no SCRIPT is sent here, so any gateway URL will do
    process = ServerProcess(tmp_path_factory.mktemp("fhir-prescriber") / "fhir.db", extra_args=[
        "--erx-gateway", f"http://127.0.0.1:{free_port()}/script", "--erx-max-attempts", str(MAX_ATTEMPTS)]).start()
    with httpx.Client(base_url=process.base, headers=FHIR_JSON, timeout=30.0) as client:
        for reference in erx._directory():
            kind, id = reference.split("/")
            assert client.put(f"/{kind}/{id}", json=erx.resource(reference)).status_code in (200, 201)
        put_fhir_pharmacy(client, "fhir", pharmacy.base)
        put_fhir_pharmacy(client, "down", f"http://127.0.0.1:{free_port()}/fhir")  # nothing listens there
    yield process
    process.stop()


def put_fhir_pharmacy(client: httpx.Client, name: str, address: str) -> None:
    endpoint = {"resourceType": "Endpoint", "id": f"ep-{name}", "status": "active",
                "connectionType": {"system": ENDPOINT_CONNECTION_TYPE_SYSTEM, "code": "hl7-fhir-rest"},
                "name": "Pharmacy FHIR server",
                "payloadType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type",
                                             "code": "any"}]}],
                "payloadMimeType": ["application/fhir+json"], "address": address}
    assert client.put(f"/Endpoint/ep-{name}", json=endpoint).status_code in (200, 201)
    org = {**erx.resource("Organization/org-pharmacy-main"), "id": f"org-pharmacy-{name}",
           "endpoint": [{"reference": f"Endpoint/ep-{name}"}]}
    assert client.put(f"/Organization/org-pharmacy-{name}", json=org).status_code in (200, 201)


@pytest.fixture()
def client(prescriber):
    with httpx.Client(base_url=prescriber.base, headers=FHIR_JSON, timeout=30.0) as c:
        yield c


@pytest.fixture()
def at_pharmacy(pharmacy):
    with httpx.Client(base_url=pharmacy.base, headers=FHIR_JSON, timeout=30.0) as c:
        yield c


def prescription(name: str, pharmacy: str = "fhir", **changes) -> dict:
    mr = erx.medication_request(name)
    return {**mr, "dispenseRequest": {**mr["dispenseRequest"], "performer": {"reference": f"Organization/org-pharmacy-{pharmacy}"}},
            **changes}


def delivered(client: httpx.Client, mr_id: str, purpose: str) -> dict:
    return wait_for(lambda: next((t for t in transmissions(client, mr_id)
                                  if delivery_purpose(t) == purpose and business_status(t) == "accepted"), None))


def matches(client: httpx.Client, resource_type: str, **params) -> list[dict]:
    r = client.get(f"/{resource_type}", params=params)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", []) if e.get("search", {}).get("mode") == "match"]


def output(task: dict, code: str):
    for entry in task.get("output", []):
        if any(c.get("system") == TASK_PARAMETER_SYSTEM and c.get("code") == code for c in entry["type"]["coding"]):
            return next(v for k, v in entry.items() if k.startswith("value"))
    return None


async def deliver_again(database, job_kind: str, mr_id: str, settings: ErxSettings) -> None:
    """What a resend does (a lease that expired after the pharmacy got it, an operator's retry): the
    same job handled again, here by a handler of our own over the prescribing server's database."""
    store = open_store(f"sqlite:///{database}", indexer=extract_index)
    await store.open()
    try:
        jobs = [j for j in await store.jobs(job_kind) if j.payload["medication_request"] == f"MedicationRequest/{mr_id}"]
        delivery = FhirPharmacyDelivery(store, settings)
        try:
            for job in jobs:
                await delivery.handle(dataclasses.replace(job, attempts=2, state="leased", lease_token="again"))
        finally:
            await delivery.aclose()
    finally:
        await store.close()


def test_a_prescription_reaches_the_fhir_pharmacy_once_however_often_it_is_delivered(client, at_pharmacy, prescriber,
                                                                                     pharmacy):
    mr = prescription("amlodipine-tablet")
    assert client.put(f"/MedicationRequest/{mr['id']}", json=mr).status_code in (200, 201)
    task = delivered(client, mr["id"], ORDER)

    [copy] = matches(at_pharmacy, "MedicationRequest", identifier=f"{PRESCRIPTION_SYSTEM}|RX-2026-000123")
    [patient] = matches(at_pharmacy, "Patient", identifier=MRN)
    assert copy["status"] == "active" and copy["id"] != mr["id"]
    assert copy["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert patient["name"][0]["family"] == "Garcia"
    assert output(task, "pharmacy-location").startswith(f"{pharmacy.base}/MedicationRequest/{copy['id']}")
    [prescriber_copy] = matches(at_pharmacy, "Practitioner", identifier="http://hl7.org/fhir/sid/us-npi|1847293010")
    assert copy["requester"] == {"reference": f"Practitioner/{prescriber_copy['id']}"}
    [pharmacy_org] = matches(at_pharmacy, "Organization", identifier="http://hl7.org/fhir/sid/us-npi|1928374655")
    assert copy["dispenseRequest"]["performer"] == {"reference": f"Organization/{pharmacy_org['id']}"}
    assert [t["status"] for t in transmissions(client, mr["id"])] == ["completed"]
    assert client.get(f"/MedicationRequest/{mr['id']}").json()["status"] == "active"

    # delivered again (same job, same Bundle): still one prescription, one patient at the pharmacy
    settings = ErxSettings(gateway_url="http://127.0.0.1:9/script", timeout_s=10.0, max_attempts=MAX_ATTEMPTS)
    asyncio.run(deliver_again(prescriber.database, JOB_KIND, mr["id"], settings))
    assert len(matches(at_pharmacy, "MedicationRequest", identifier=f"{PRESCRIPTION_SYSTEM}|RX-2026-000123")) == 1
    assert len(matches(at_pharmacy, "Patient", identifier=MRN)) == 1
    [again] = transmissions(client, mr["id"])
    assert business_status(again) == "accepted" and again["meta"]["versionId"] == task["meta"]["versionId"]

    # another prescription for the same patient reuses the pharmacy's Patient
    other = prescription("amlodipine-tablet", id="mr-amlodipine-2",
                         identifier=[{"use": "official", "system": PRESCRIPTION_SYSTEM, "value": "RX-2026-000999"}])
    assert client.put(f"/MedicationRequest/{other['id']}", json=other).status_code in (200, 201)
    delivered(client, other["id"], ORDER)
    [second] = matches(at_pharmacy, "MedicationRequest", identifier=f"{PRESCRIPTION_SYSTEM}|RX-2026-000999")
    assert second["subject"] == copy["subject"]
    assert len(matches(at_pharmacy, "Patient", identifier=MRN)) == 1


def test_a_prescription_without_business_identifiers_travels_contained(client, at_pharmacy):
    mr = prescription("nitrofurantoin-liquid")  # its Patient and PractitionerRole have no identifier
    assert client.put(f"/MedicationRequest/{mr['id']}", json=mr).status_code in (200, 201)
    delivered(client, mr["id"], ORDER)
    [copy] = matches(at_pharmacy, "MedicationRequest", identifier=f"{PRESCRIPTION_SYSTEM}|RX-2026-000124")
    contained = {r["resourceType"]: r for r in copy["contained"]}
    assert copy["subject"] == {"reference": f"#{contained['Patient']['id']}"}
    assert contained["Patient"]["name"][0]["family"] == "Kowalski"
    assert contained["Condition"]["code"]["coding"][0]["code"] == "N39.0"


def test_a_cancel_updates_the_pharmacy_s_copy(client, at_pharmacy):
    mr = prescription("lisinopril-medication")
    client.put(f"/MedicationRequest/{mr['id']}", json=mr)
    delivered(client, mr["id"], ORDER)
    assert client.put(f"/MedicationRequest/{mr['id']}", json={**mr, "status": "cancelled"}).status_code == 200
    delivered(client, mr["id"], CANCEL)
    [copy] = matches(at_pharmacy, "MedicationRequest", identifier=f"{PRESCRIPTION_SYSTEM}|RX-2026-000127")
    assert copy["status"] == "cancelled"
    history = at_pharmacy.get(f"/MedicationRequest/{copy['id']}/_history").json()
    assert [e["resource"]["status"] for e in history["entry"]] == ["cancelled", "active"]


def test_an_unreachable_pharmacy_dead_letters_and_puts_the_prescription_on_hold(client):
    mr = prescription("triamcinolone-cream", pharmacy="down")
    client.put(f"/MedicationRequest/{mr['id']}", json=mr)
    task = wait_for(lambda: next((t for t in transmissions(client, mr["id"]) if business_status(t) == "dead-letter"),
                                 None), timeout=60.0)
    assert output(task, "attempts") == MAX_ATTEMPTS
    stored = client.get(f"/MedicationRequest/{mr['id']}").json()
    assert stored["status"] == "on-hold"
    alerts = client.get("/Communication", params={"about": f"MedicationRequest/{mr['id']}"}).json()
    assert [e for e in alerts.get("entry", []) if e.get("search", {}).get("mode") == "match"]


def test_an_unsendable_prescription_is_refused_before_anything_is_stored(client):
    mr = {k: v for k, v in prescription("amlodipine-tablet", id="mr-no-identifier").items() if k != "identifier"}
    r = client.put(f"/MedicationRequest/{mr['id']}", json=mr)
    assert r.status_code == 422
    assert [i["expression"] for i in r.json()["issue"]] == [["MedicationRequest.identifier"]]
    assert client.get(f"/MedicationRequest/{mr['id']}").status_code == 404
    assert transmissions(client, mr["id"]) == []


def test_the_prescribing_server_logs_no_patient_data(prescriber):
    """Runs last: by now prescriptions were delivered, resent, cancelled, dead-lettered and refused."""
    text = prescriber.log_path.read_text(errors="replace")
    assert "erx.fhir job" in text  # the deliveries were logged, by ids
    for secret in ("Garcia", "MRN-004512", "Kowalski", "RX-2026-000123", "amlodipine 5 MG"):
        assert secret not in text
