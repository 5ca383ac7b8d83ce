"""FHIR-native pharmacies: the transaction Bundle (mappers/fhir_pharmacy.py), the trigger's choice
between FHIR and SCRIPT per pharmacy Organization (fhir_server/erx/trigger.py), and the "erx.fhir"
handler (fhir_server/erx/fhir_pharmacy.py) against an SQLite store with the pharmacy's server faked
by httpx.MockTransport."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging

import httpx
import orjson
import pytest

from fhir_server.erx.config import ErxSettings
from fhir_server.erx.fhir_pharmacy import (
    CANCEL, JOB_KIND, MESSAGE_TYPE, ORDER, FhirPharmacyDelivery, delivery_endpoint, delivery_purpose,
    fhir_delivery_id, pharmacy_endpoint,
)
from fhir_server.erx.trigger import JOB_KIND as SCRIPT_JOB_KIND
from fhir_server.erx.trigger import ErxTrigger, transmissions
from fhir_server.errors import UnprocessableEntity
from fhir_server.interactions.search import build_query
from fhir_server.interactions.validation import check
from fhir_server.interactions.write_hooks import HookedStore, WriteHooks
from fhir_server.outbox import Permanent, RetryLater
from fhir_server.search.extract import extract_index
from fhir_server.storage import open_store
from mappers.fhir_pharmacy import (
    ENDPOINT_CONNECTION_TYPE_SYSTEM, FHIR_DELIVERY_ID_SYSTEM, address_problems, build_transaction,
    identifier_criteria, is_fhir_rest_endpoint, match_identifier,
)
from mappers.ncpdp.reflect import business_status, transmitted_message_type
from mappers.ncpdp.resources import resolve_context
from tests.fixtures import erx

ADDRESS = "https://pharmacy.test/fhir"
SETTINGS = ErxSettings(gateway_url="http://127.0.0.1:9/script", sender_id="TELEHEALTH01", timeout_s=2.0,
                       max_attempts=3)
DEA = "http://terminology.hl7.org/NamingSystem/USDEANumber"
# What must never reach a log line or a job's last_error: the patient, the drug, the pharmacy's words
SECRETS = ("Garcia", "Maria", "1984-03-12", "MRN-004512", "amlodipine", "RX-2026-000123", "DIAGNOSTIC-SECRET")


def endpoint(status: str = "active", code: str = "hl7-fhir-rest", address: str | None = ADDRESS, id: str = "ep-fhir"):
    resource = {"resourceType": "Endpoint", "id": id, "status": status,
                "connectionType": {"system": ENDPOINT_CONNECTION_TYPE_SYSTEM, "code": code},
                "payloadType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type",
                                             "code": "any"}]}]}
    if address is not None:
        resource["address"] = address
    return resource


def fhir_pharmacy(endpoint_ref: str = "Endpoint/ep-fhir") -> dict:
    org = erx.resource("Organization/org-pharmacy-main")
    return {**org, "endpoint": [{"reference": endpoint_ref}]}


def context(name: str = "amlodipine-tablet", *, mr_changes: dict | None = None, overrides: dict | None = None):
    mr = {**erx.medication_request(name), **(mr_changes or {})}
    return erx.context(mr, overrides)


def by_type(bundle: dict) -> dict[str, dict]:
    return {e["resource"]["resourceType"]: e for e in bundle["entry"]}


def references(value) -> list[str]:
    found = []
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            found.append(value["reference"])
        for v in value.values():
            found += references(v)
    elif isinstance(value, list):
        for v in value:
            found += references(v)
    return found


# -- the Bundle --------------------------------------------------------------------------------------


def test_the_bundle_is_a_transaction_with_the_request_first_as_a_conditional_update():
    bundle = build_transaction(context())
    assert bundle["type"] == "transaction"
    first = bundle["entry"][0]
    assert first["resource"]["resourceType"] == "MedicationRequest"
    assert first["request"] == {
        "method": "PUT", "url": "MedicationRequest?identifier=https%3A%2F%2Ftelehealth.example.org%2Ffhir%2Fsid%2F"
                                "prescription-number|RX-2026-000123"}
    assert "id" not in first["resource"]
    entries = by_type(bundle)
    assert set(entries) == {"MedicationRequest", "Patient", "Practitioner", "Organization"}
    assert entries["Patient"]["request"] == {
        "method": "POST", "url": "Patient",
        "ifNoneExist": "identifier=https%3A%2F%2Ftelehealth.example.org%2Ffhir%2Fsid%2Fmrn|MRN-004512"}
    assert entries["Practitioner"]["request"]["ifNoneExist"] == "identifier=http%3A%2F%2Fhl7.org%2Ffhir%2Fsid%2Fus-npi|1847293010"
    assert entries["Organization"]["request"]["ifNoneExist"] == "identifier=http%3A%2F%2Fhl7.org%2Ffhir%2Fsid%2Fus-npi|1928374655"
    for entry in bundle["entry"]:
        assert entry["fullUrl"].startswith("urn:uuid:") and "id" not in entry["resource"]


def test_references_between_the_resources_sent_are_rewritten_to_their_full_urls():
    bundle = build_transaction(context())
    entries = by_type(bundle)
    mr = entries["MedicationRequest"]["resource"]
    assert mr["subject"] == {"reference": entries["Patient"]["fullUrl"]}
    assert mr["requester"] == {"reference": entries["Practitioner"]["fullUrl"]}
    assert mr["dispenseRequest"]["performer"] == {"reference": entries["Organization"]["fullUrl"]}
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    for entry in bundle["entry"]:
        for reference in references(entry["resource"]):
            assert reference in full_urls or reference.startswith("#")


def test_the_same_prescription_gives_the_same_bundle():
    assert build_transaction(context()) == build_transaction(context())
    other = build_transaction(context("lisinopril-medication"))
    assert other["entry"][0]["fullUrl"] != build_transaction(context())["entry"][0]["fullUrl"]


def test_every_resource_sent_is_valid_r4():
    for name in ("amlodipine-tablet", "nitrofurantoin-liquid", "lisinopril-medication", "albuterol-inhaler",
                 "triamcinolone-cream", "pharmacy-without-ncpdpid"):
        for entry in build_transaction(context(name))["entry"]:
            check(json.loads(json.dumps(entry["resource"])), entry["resource"]["resourceType"])


def test_resources_without_a_business_identifier_travel_contained():
    bundle = build_transaction(context("nitrofurantoin-liquid"))  # Patient and role without identifiers
    entries = by_type(bundle)
    mr = entries["MedicationRequest"]["resource"]
    contained = {r["resourceType"]: r for r in mr["contained"]}
    assert set(entries) == {"MedicationRequest", "Practitioner", "Organization"}
    assert mr["subject"] == {"reference": f"#{contained['Patient']['id']}"}
    assert mr["requester"] == {"reference": f"#{contained['PractitionerRole']['id']}"}
    # the role's practitioner has an NPI: an entry, referred to from the contained role
    assert contained["PractitionerRole"]["practitioner"] == {"reference": entries["Practitioner"]["fullUrl"]}
    # the reason's Condition is contained and names the contained patient
    assert mr["reasonReference"] == [{"reference": f"#{contained['Condition']['id']}"}]
    assert contained["Condition"]["subject"] == {"reference": f"#{contained['Patient']['id']}"}


def test_a_medication_is_sent_with_the_request():
    bundle = build_transaction(context("lisinopril-medication"))
    mr = bundle["entry"][0]["resource"]
    [medication] = [r for r in mr["contained"] if r["resourceType"] == "Medication"]
    assert mr["medicationReference"] == {"reference": f"#{medication['id']}"}
    assert medication["code"]["coding"][0]["code"] == "314076"
    # a Medication contained already stays as it is
    inhaler = build_transaction(context("albuterol-inhaler"))["entry"][0]["resource"]
    assert inhaler["medicationReference"] == {"reference": "#albuterol"}
    assert [r["id"] for r in inhaler["contained"] if r["resourceType"] == "Medication"] == ["albuterol"]


def test_a_medication_with_an_identifier_is_a_conditional_create():
    medication = {**erx.resource("Medication/med-lisinopril"),
                  "identifier": [{"system": "https://telehealth.example.org/fhir/sid/formulary", "value": "F-314076"}]}
    bundle = build_transaction(context("lisinopril-medication", overrides={"Medication/med-lisinopril": medication}))
    entries = by_type(bundle)
    assert entries["Medication"]["request"]["ifNoneExist"].endswith("|F-314076")
    assert entries["MedicationRequest"]["resource"]["medicationReference"] == {"reference": entries["Medication"]["fullUrl"]}


def test_references_to_resources_not_sent_keep_only_their_type_identifier_and_display():
    patient = {**erx.resource("Patient/pat-maria"), "managingOrganization": {"reference": "Organization/clinic",
                                                                             "display": "Telehealth clinic"},
               "generalPractitioner": [{"reference": "Practitioner/prac-sanchez"}]}
    bundle = build_transaction(context(mr_changes={"encounter": {"reference": "Encounter/enc-1"},
                                                   "basedOn": [{"reference": "https://elsewhere.example/fhir/CarePlan/9"}]},
                                       overrides={"Patient/pat-maria": patient}))
    entries = by_type(bundle)
    mr = entries["MedicationRequest"]["resource"]
    assert mr["encounter"] == {"type": "Encounter"}
    assert mr["basedOn"] == [{"reference": "https://elsewhere.example/fhir/CarePlan/9"}]  # absolute: left alone
    sent_patient = entries["Patient"]["resource"]
    assert sent_patient["managingOrganization"] == {"display": "Telehealth clinic", "type": "Organization"}
    # the prescriber is in the bundle: the patient's reference to them is rewritten too
    assert sent_patient["generalPractitioner"] == [{"reference": entries["Practitioner"]["fullUrl"]}]


def test_copies_lose_version_metadata_routing_and_never_sent_identifiers():
    meta = {"versionId": "7", "lastUpdated": "2026-11-20T10:00:00Z", "profile": ["http://example.org/p"],
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}
    patient = {**erx.resource("Patient/pat-maria"), "meta": meta,
               "identifier": [*erx.resource("Patient/pat-maria")["identifier"],
                              {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"}]}
    org = {**fhir_pharmacy("#ep"), "contained": [endpoint(id="ep")], "meta": {"versionId": "2"}}
    ctx = context(mr_changes={"meta": {"versionId": "3", "lastUpdated": "2026-11-20T10:00:00Z"}},
                  overrides={"Patient/pat-maria": patient, "Organization/org-pharmacy-main": org})
    entries = by_type(build_transaction(ctx))
    assert "meta" not in entries["MedicationRequest"]["resource"]
    assert entries["Patient"]["resource"]["meta"] == {"profile": meta["profile"], "security": meta["security"]}
    assert [i["system"] for i in entries["Patient"]["resource"]["identifier"]] == [
        "https://telehealth.example.org/fhir/sid/mrn"]
    assert DEA not in json.dumps(entries["Practitioner"]["resource"])
    sent_org = entries["Organization"]["resource"]
    assert "endpoint" not in sent_org and "contained" not in sent_org and "meta" not in sent_org


def test_a_role_s_contained_practitioner_moves_up_under_a_fresh_id():
    practitioner = {k: v for k, v in erx.resource("Practitioner/prac-kim").items() if k != "identifier"}
    role = {**erx.resource("PractitionerRole/role-kim-telehealth"), "contained": [{**practitioner, "id": "patient"}],
            "practitioner": {"reference": "#patient"}}  # an id that clashes with the contained Patient's
    ctx = context("nitrofurantoin-liquid", overrides={"PractitionerRole/role-kim-telehealth": role})
    mr = build_transaction(ctx)["entry"][0]["resource"]
    ids = [r["id"] for r in mr["contained"]]
    assert len(ids) == len(set(ids))
    by_id = {r["id"]: r for r in mr["contained"]}
    sent_role = next(r for r in mr["contained"] if r["resourceType"] == "PractitionerRole")
    target = sent_role["practitioner"]["reference"]
    assert by_id[target[1:]]["resourceType"] == "Practitioner" and "contained" not in sent_role
    check(json.loads(json.dumps(mr)), "MedicationRequest")


def test_a_role_entry_contains_its_practitioner_without_identifier():
    role = {**erx.resource("PractitionerRole/role-kim-telehealth"),
            "identifier": [{"system": "https://telehealth.example.org/fhir/sid/role", "value": "kim-th"}]}
    practitioner = {k: v for k, v in erx.resource("Practitioner/prac-kim").items() if k != "identifier"}
    ctx = context("nitrofurantoin-liquid", overrides={"PractitionerRole/role-kim-telehealth": role,
                                                      "Practitioner/prac-kim": practitioner})
    entries = by_type(build_transaction(ctx))
    sent_role = entries["PractitionerRole"]["resource"]
    assert "Practitioner" not in entries
    assert sent_role["practitioner"] == {"reference": f"#{sent_role['contained'][0]['id']}"}
    assert entries["MedicationRequest"]["resource"]["requester"] == {"reference": entries["PractitionerRole"]["fullUrl"]}


def test_match_identifiers_are_business_identifiers_only():
    assert match_identifier({"identifier": [{"value": "no-system"}]}) is None
    assert match_identifier({"identifier": [{"use": "old", "system": "s", "value": "v"}]}) is None
    assert match_identifier({"identifier": [{"system": "s", "value": "v", "period": {"end": "2020-01-01"}}]}) is None
    assert match_identifier({"identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "1"}]}) is None
    assert match_identifier({"identifier": [{"system": "local", "value": "a", "use": "official"},
                                            {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1"}]})["value"] == "1"
    assert identifier_criteria({"system": "urn:x", "value": "a|b,c$d"}) == "identifier=urn%3Ax|a%5C%7Cb%5C%2Cc%5C%24d"


# -- refusals ------------------------------------------------------------------------------------------


def refusal(ctx, **options) -> dict[str, str]:
    with pytest.raises(UnprocessableEntity) as refused:
        build_transaction(ctx, **options)
    return {issue.expression: issue.diagnostics for issue in refused.value.issues}


def test_a_prescription_without_identifier_is_refused():
    problems = refusal(context(mr_changes={"identifier": [{"value": "no system"}]}))
    assert list(problems) == ["MedicationRequest.identifier"]


def test_every_problem_is_named_at_once():
    ctx = context(mr_changes={"identifier": [], "subject": {"reference": "Patient/gone"},
                              "requester": {"reference": "Practitioner/gone"}})
    problems = refusal(ctx, endpoint={"address": None})
    assert set(problems) == {"MedicationRequest.identifier", "MedicationRequest.subject", "MedicationRequest.requester",
                             "Endpoint.address"}
    for diagnostics in problems.values():
        assert "Garcia" not in diagnostics


@pytest.mark.parametrize("address, ok", [
    ("https://pharmacy.test/fhir", True), ("http://127.0.0.1:8080", True), ("http://localhost/fhir", True),
    ("http://[::1]:9/fhir", True), ("http://pharmacy.test/fhir", False), ("ftp://pharmacy.test", False),
    ("https://user:secret@pharmacy.test/fhir", False), ("https://pharmacy.test/fhir?x=1", False), ("", False),
    ("pharmacy.test/fhir", False),
])
def test_endpoint_addresses(address, ok):
    assert (address_problems(address) == []) is ok
    if not ok:
        assert "Endpoint.address" in refusal(context(), endpoint={"address": address})


def test_a_controlled_substance_is_refused():
    mr = erx.medication_request("oxycodone-schedule-ii")
    assert "MedicationRequest.medication[x]" in refusal(erx.context(mr))


def test_a_pharmacy_given_only_by_identifier_cannot_be_a_fhir_pharmacy():
    performer = {"identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1928374655"}}
    ctx = context(mr_changes={"dispenseRequest": {**erx.medication_request("amlodipine-tablet")["dispenseRequest"],
                                                  "performer": performer}})
    assert "MedicationRequest.dispenseRequest.performer" in refusal(ctx)


# -- choosing --------------------------------------------------------------------------------------


def test_which_endpoints_are_fhir_rest():
    assert is_fhir_rest_endpoint(endpoint())
    assert not is_fhir_rest_endpoint(endpoint(status="off"))
    assert not is_fhir_rest_endpoint(endpoint(code="direct-project"))
    assert not is_fhir_rest_endpoint({**endpoint(), "resourceType": "Organization"})
    assert not is_fhir_rest_endpoint(None)


async def test_the_pharmacy_endpoint_is_found_stored_or_contained():
    mr = erx.medication_request("amlodipine-tablet")
    stored = {"Organization/org-pharmacy-main": fhir_pharmacy(), "Endpoint/ep-fhir": endpoint()}
    ctx = await resolve_context(mr, erx.reader(stored))
    assert (await pharmacy_endpoint(ctx, erx.reader(stored)))["address"] == ADDRESS
    contained = {"Organization/org-pharmacy-main": {**fhir_pharmacy("#ep"), "contained": [endpoint(id="ep")]}}
    ctx = await resolve_context(mr, erx.reader(contained))
    assert (await pharmacy_endpoint(ctx, erx.reader(contained)))["address"] == ADDRESS
    # an Organization contained in the request: its Endpoint is contained there too
    org = {**fhir_pharmacy("#ep"), "id": "pharm"}
    inline = {**mr, "contained": [org, endpoint(id="ep")],
              "dispenseRequest": {**mr["dispenseRequest"], "performer": {"reference": "#pharm"}}}
    ctx = await resolve_context(inline, erx.reader())
    assert (await pharmacy_endpoint(ctx, erx.reader()))["address"] == ADDRESS
    for off in ({"Endpoint/ep-fhir": endpoint(status="suspended")}, {"Endpoint/ep-fhir": endpoint(code="ihe-xds")}, {}):
        overrides = {"Organization/org-pharmacy-main": fhir_pharmacy(), **off}
        ctx = await resolve_context(mr, erx.reader(overrides))
        assert await pharmacy_endpoint(ctx, erx.reader(overrides)) is None


# -- the trigger ---------------------------------------------------------------------------------------


@pytest.fixture()
async def raw_store(tmp_path):
    raw = open_store(f"sqlite:///{tmp_path / 'erx.db'}", indexer=extract_index)
    await raw.open()
    async with raw.unit_of_work() as uow:
        for reference in erx._directory():
            kind, id = reference.split("/")
            await uow.write(kind, id, erx.resource(reference), method="PUT")
        await uow.write("Endpoint", "ep-fhir", endpoint(), method="PUT")
        await uow.write("Organization", "org-pharmacy-fhir", {**fhir_pharmacy(), "id": "org-pharmacy-fhir"}, method="PUT")
    yield raw
    await raw.close()


@pytest.fixture()
def store(raw_store):
    hooks = WriteHooks()
    hooks.register("MedicationRequest", ErxTrigger(SETTINGS))
    return HookedStore(raw_store, hooks)


def to_fhir_pharmacy(mr: dict) -> dict:
    return {**mr, "dispenseRequest": {**mr["dispenseRequest"], "performer": {"reference": "Organization/org-pharmacy-fhir"}}}


async def put(store, mr: dict) -> None:
    async with store.unit_of_work() as uow:
        await uow.write("MedicationRequest", mr["id"], mr, method="PUT")


async def tasks_of(store, mr_id: str) -> list[dict]:
    async with store.unit_of_work() as uow:
        return await transmissions(uow, mr_id)


async def test_a_fhir_native_pharmacy_gets_a_transaction_and_a_transmission_task(store):
    mr = to_fhir_pharmacy(erx.medication_request("amlodipine-tablet"))
    await put(store, mr)
    [task] = await tasks_of(store, mr["id"])
    [job] = await store.jobs(kind=JOB_KIND)
    assert await store.jobs(kind=SCRIPT_JOB_KIND) == []
    assert (transmitted_message_type(task), delivery_purpose(task), business_status(task), task["status"]) == (
        MESSAGE_TYPE, ORDER, "queued", "requested")
    assert task["identifier"] == [{"system": FHIR_DELIVERY_ID_SYSTEM, "value": job.key}]
    assert fhir_delivery_id(task) == job.key and len(job.key) == 32
    assert task["focus"] == {"reference": "MedicationRequest/mr-amlodipine"}
    assert task["owner"] == {"reference": "Organization/org-pharmacy-fhir"}
    assert delivery_endpoint(task) == ADDRESS
    check(orjson.loads(orjson.dumps(task)), "Task")
    payload = job.payload
    assert (payload["endpoint"], payload["purpose"], payload["task"]) == (ADDRESS, ORDER, f"Task/{task['id']}")
    assert payload["medication_request"] == "MedicationRequest/mr-amlodipine"
    assert payload["bundle"]["entry"][0]["resource"]["status"] == "active"


async def test_other_pharmacies_still_get_script(store):
    await put(store, erx.medication_request("amlodipine-tablet"))
    assert len(await store.jobs(kind=SCRIPT_JOB_KIND)) == 1 and await store.jobs(kind=JOB_KIND) == []


async def test_an_inactive_endpoint_means_script(store):
    async with store.unit_of_work() as uow:
        await uow.write("Endpoint", "ep-fhir", endpoint(status="off"), method="PUT")
    await put(store, to_fhir_pharmacy(erx.medication_request("amlodipine-tablet")))
    assert len(await store.jobs(kind=SCRIPT_JOB_KIND)) == 1 and await store.jobs(kind=JOB_KIND) == []


async def test_a_fhir_pharmacy_needs_no_ncpdp_id(store):
    """The SCRIPT refusal (no NCPDPID) does not apply to a pharmacy reached over FHIR."""
    async with store.unit_of_work() as uow:
        org = {**erx.resource("Organization/org-pharmacy-no-ncpdp"), "endpoint": [{"reference": "Endpoint/ep-fhir"}]}
        await uow.write("Organization", "org-pharmacy-no-ncpdp", org, method="PUT")
    await put(store, erx.medication_request("pharmacy-without-ncpdpid"))
    assert len(await store.jobs(kind=JOB_KIND)) == 1


async def test_an_unsendable_fhir_prescription_is_refused_and_nothing_is_stored(store):
    mr = {**to_fhir_pharmacy(erx.medication_request("amlodipine-tablet")), "identifier": []}
    with pytest.raises(UnprocessableEntity):
        await put(store, mr)
    assert await store.read("MedicationRequest", mr["id"]) is None
    assert await store.jobs(kind=JOB_KIND) == []


async def test_updates_do_not_resend_and_a_cancel_goes_once_where_the_order_went(store):
    mr = to_fhir_pharmacy(erx.medication_request("amlodipine-tablet"))
    await put(store, mr)
    await put(store, {**mr, "note": [{"text": "take with water"}]})
    assert len(await store.jobs(kind=JOB_KIND)) == 1
    async with store.unit_of_work() as uow:  # the pharmacy's Endpoint is switched off meanwhile
        await uow.write("Endpoint", "ep-fhir", endpoint(status="off"), method="PUT")
    await put(store, {**mr, "status": "cancelled"})
    await put(store, {**mr, "status": "cancelled", "note": [{"text": "again"}]})
    order, cancel = await tasks_of(store, mr["id"])
    assert (delivery_purpose(order), delivery_purpose(cancel)) == (ORDER, CANCEL)
    jobs = {j.key: j for j in await store.jobs(kind=JOB_KIND)}
    assert len(jobs) == 2 and await store.jobs(kind=SCRIPT_JOB_KIND) == []
    payload = jobs[fhir_delivery_id(cancel)].payload
    assert (payload["endpoint"], payload["purpose"], payload["order_task"]) == (ADDRESS, CANCEL, f"Task/{order['id']}")
    sent = payload["bundle"]["entry"][0]
    assert sent["resource"]["status"] == "cancelled"
    assert sent["request"] == jobs[fhir_delivery_id(order)].payload["bundle"]["entry"][0]["request"]


async def test_a_script_order_is_cancelled_with_script_even_if_the_pharmacy_became_fhir_native(store):
    mr = erx.medication_request("amlodipine-tablet")
    await put(store, mr)
    async with store.unit_of_work() as uow:
        await uow.write("Organization", "org-pharmacy-main", fhir_pharmacy(), method="PUT")
    await put(store, {**mr, "status": "cancelled"})
    assert [transmitted_message_type(t) for t in await tasks_of(store, mr["id"])] == ["NewRx", "CancelRx"]
    assert await store.jobs(kind=JOB_KIND) == []


# -- delivering ------------------------------------------------------------------------------------------


class Pharmacy:
    """A fake pharmacy FHIR server: each request gets the next answer (the last one repeats)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer(request)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


def transaction_response(request: httpx.Request) -> httpx.Response:
    bundle = orjson.loads(request.content)
    entries = [{"response": {"status": "201 Created", "location": f"{e['request']['url'].split('?')[0]}/p{i}/_history/1"}}
               for i, e in enumerate(bundle["entry"])]
    return httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": entries},
                          headers={"Content-Type": "application/fhir+json"})


def http(status: int, body: object = None, **headers):
    def answer(request):
        if body is None:
            return httpx.Response(status, text="pharmacy trouble", headers=headers)
        return httpx.Response(status, json=body, headers={"Content-Type": "application/fhir+json", **headers})
    return answer


REFUSAL = {"resourceType": "OperationOutcome", "issue": [
    {"severity": "error", "code": "business-rule", "diagnostics": "DIAGNOSTIC-SECRET Garcia is unknown",
     "expression": ["MedicationRequest.subject"]},
    {"severity": "error", "code": "required", "details": {"text": "DIAGNOSTIC-SECRET"}},
    {"severity": "nonsense", "code": "x"}, "not an issue"]}


def delivery(store, pharmacy: Pharmacy, **settings) -> FhirPharmacyDelivery:
    return FhirPharmacyDelivery(store, dataclasses.replace(SETTINGS, **settings), client=pharmacy.client())


async def queued(store, *, status: str | None = None, mr_id: str = "mr-amlodipine"):
    """The prescription written to the FHIR pharmacy (then to `status`): [(job, Task id)], oldest first."""
    mr = {**to_fhir_pharmacy(erx.medication_request("amlodipine-tablet")), "id": mr_id}
    await put(store, mr)
    if status:
        await put(store, {**mr, "status": status})
    by_key = {j.key: j for j in await store.jobs(kind=JOB_KIND)}
    return [(by_key[fhir_delivery_id(t)], t["id"]) for t in await tasks_of(store, mr_id)]


def attempt(job, n: int):
    return dataclasses.replace(job, attempts=n, state="leased", lease_token="t")


async def current(store, resource_type: str, id: str) -> tuple[dict, int]:
    stored = await store.read(resource_type, id)
    assert stored is not None and stored.body is not None
    return orjson.loads(stored.body), stored.version


async def communications(store) -> list[dict]:
    page = await store.search(build_query(["Communication"], []))
    return [orjson.loads(v.body) for v in page.matches]


async def test_an_accepted_transaction_completes_the_task_with_the_pharmacy_s_location(store):
    [(job, task_id)] = await queued(store)
    pharmacy = Pharmacy(transaction_response)
    await delivery(store, pharmacy).handle(attempt(job, 1))

    [request] = pharmacy.requests
    assert request.method == "POST" and str(request.url) == ADDRESS
    assert request.headers["content-type"] == "application/fhir+json"
    assert "authorization" not in request.headers
    assert orjson.loads(request.content) == job.payload["bundle"]
    task, version = await current(store, "Task", task_id)
    assert (business_status(task), task["status"], version) == ("accepted", "completed", 2)
    outputs = {o["type"]["coding"][0]["code"]: next(v for k, v in o.items() if k.startswith("value"))
               for o in task["output"]}
    assert outputs["pharmacy-location"] == f"{ADDRESS}/MedicationRequest/p0/_history/1"
    assert outputs["response-status"] == "201 Created"
    check(task, "Task")
    mr, mr_version = await current(store, "MedicationRequest", "mr-amlodipine")
    assert (mr["status"], mr_version) == ("active", 1)
    assert await communications(store) == []


async def test_delivering_twice_sends_the_same_bundle_and_writes_nothing_more(store):
    [(job, task_id)] = await queued(store)
    pharmacy = Pharmacy(transaction_response)
    await delivery(store, pharmacy).handle(attempt(job, 1))
    await delivery(store, pharmacy).handle(attempt(job, 2))
    first, second = pharmacy.requests
    assert first.content == second.content
    assert (await current(store, "Task", task_id))[1] == 2


@pytest.mark.parametrize("answer, after", [
    (http(503), None), (http(429, **{"Retry-After": "30"}), 30.0), (http(408), None),
    (httpx.ConnectError("refused"), None), (httpx.ReadTimeout("slow"), None),
    (http(200, {"resourceType": "OperationOutcome", "issue": []}), None), (lambda r: httpx.Response(200, text="<html>"), None),
    (http(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": [{"response": {"status": "400"}}]}), None),
])
async def test_transient_failures_are_retried(store, answer, after):
    [(job, task_id)] = await queued(store)
    with pytest.raises(RetryLater) as raised:
        await delivery(store, Pharmacy(answer)).handle(attempt(job, 1))
    assert raised.value.after == after
    task, _ = await current(store, "Task", task_id)
    assert (business_status(task), task["status"]) == ("retrying", "in-progress")
    assert (await current(store, "MedicationRequest", "mr-amlodipine"))[0]["status"] == "active"


async def test_the_last_failed_attempt_dead_letters_and_puts_the_order_on_hold(store):
    [(job, task_id)] = await queued(store)
    with pytest.raises(Permanent):
        await delivery(store, Pharmacy(http(502))).handle(attempt(job, SETTINGS.max_attempts))
    task, _ = await current(store, "Task", task_id)
    assert (business_status(task), task["status"]) == ("dead-letter", "failed")
    mr, _ = await current(store, "MedicationRequest", "mr-amlodipine")
    assert mr["status"] == "on-hold" and mr["statusReason"] == task["statusReason"]
    [message] = await communications(store)
    assert message["recipient"] == [{"reference": "Practitioner/prac-sanchez"}]
    assert "pharmacy's FHIR server" in message["payload"][0]["contentString"]
    check(message, "Communication")


async def test_a_refusal_is_permanent_with_the_pharmacy_s_issue_codes(store):
    [(job, task_id)] = await queued(store)
    with pytest.raises(Permanent) as raised:
        await delivery(store, Pharmacy(http(422, REFUSAL))).handle(attempt(job, 1))
    assert raised.value.error == "the pharmacy's FHIR server refused the transaction: HTTP 422 (business-rule, required)"
    task, _ = await current(store, "Task", task_id)
    assert (business_status(task), task["status"]) == ("error", "failed")
    assert [c["code"] for c in task["statusReason"]["coding"]] == ["business-rule", "required"]
    assert {c["system"] for c in task["statusReason"]["coding"]} == {"http://hl7.org/fhir/issue-type"}
    [outcome] = task["contained"]
    assert [i["code"] for i in outcome["issue"]] == ["business-rule", "required"]  # invalid issues dropped
    check(task, "Task")
    mr, _ = await current(store, "MedicationRequest", "mr-amlodipine")
    assert mr["status"] == "on-hold" and mr["statusReason"]["coding"] == task["statusReason"]["coding"]
    check(mr, "MedicationRequest")
    assert len(await communications(store)) == 1


async def test_a_refusal_without_an_outcome_is_still_an_error(store):
    [(job, task_id)] = await queued(store)
    with pytest.raises(Permanent):
        await delivery(store, Pharmacy(http(404))).handle(attempt(job, 1))
    task, _ = await current(store, "Task", task_id)
    assert business_status(task) == "error" and "contained" not in task
    assert task["statusReason"]["text"].endswith("HTTP 404")


async def test_a_late_failure_does_not_undo_an_acceptance(store):
    [(job, task_id)] = await queued(store)
    await delivery(store, Pharmacy(transaction_response)).handle(attempt(job, 1))
    with pytest.raises(RetryLater):
        await delivery(store, Pharmacy(http(500))).handle(attempt(job, 2))
    with pytest.raises(Permanent):
        await delivery(store, Pharmacy(http(400))).handle(attempt(job, 3))
    task, version = await current(store, "Task", task_id)
    assert (business_status(task), version) == ("accepted", 2)
    assert (await current(store, "MedicationRequest", "mr-amlodipine"))[0]["status"] == "active"


async def test_a_cancel_waits_for_its_order_and_an_order_cancelled_first_is_not_sent(store):
    (order_job, order_task), (cancel_job, cancel_task) = await queued(store, status="cancelled")
    pharmacy = Pharmacy(transaction_response)
    send = delivery(store, pharmacy)
    with pytest.raises(RetryLater):  # the order has not been tried yet
        await send.handle(attempt(cancel_job, 1))
    await send.handle(attempt(order_job, 1))  # the request is cancelled by now: nothing is sent
    assert pharmacy.requests == []
    task, _ = await current(store, "Task", order_task)
    assert (business_status(task), task["status"]) == ("dead-letter", "failed")
    assert await communications(store) == []
    assert (await current(store, "MedicationRequest", "mr-amlodipine"))[0]["status"] == "cancelled"
    await send.handle(attempt(cancel_job, 2))  # now the cancel goes
    [request] = pharmacy.requests
    sent = orjson.loads(request.content)["entry"][0]
    assert sent["resource"]["status"] == "cancelled" and sent["request"]["method"] == "PUT"
    task, _ = await current(store, "Task", cancel_task)
    assert (business_status(task), task["status"]) == ("accepted", "completed")


async def test_a_cancel_is_sent_on_its_last_attempt_whatever_the_order_s_state(store):
    (order_job, _), (cancel_job, cancel_task) = await queued(store, status="cancelled")
    pharmacy = Pharmacy(transaction_response)
    await delivery(store, pharmacy).handle(attempt(cancel_job, SETTINGS.max_attempts))
    assert len(pharmacy.requests) == 1
    assert business_status((await current(store, "Task", cancel_task))[0]) == "accepted"


async def test_a_refused_cancel_tells_the_prescriber_and_leaves_the_request_cancelled(store):
    (order_job, _), (cancel_job, cancel_task) = await queued(store, status="cancelled")
    send = delivery(store, Pharmacy(http(409, REFUSAL)))
    await send.handle(attempt(order_job, 1))  # withdrawn
    with pytest.raises(Permanent):
        await send.handle(attempt(cancel_job, 1))
    assert business_status((await current(store, "Task", cancel_task))[0]) == "error"
    assert (await current(store, "MedicationRequest", "mr-amlodipine"))[0]["status"] == "cancelled"
    [message] = await communications(store)
    assert "cancellation" in message["payload"][0]["contentString"]


async def test_a_payload_that_is_not_an_erx_fhir_payload_is_permanent(store):
    [(job, _)] = await queued(store)
    for payload in ({}, {**job.payload, "purpose": "other"}, {**job.payload, "task": "nope"}):
        with pytest.raises(Permanent):
            await delivery(store, Pharmacy(transaction_response)).handle(attempt(dataclasses.replace(job, payload=payload), 1))


async def test_an_address_that_is_not_acceptable_is_never_posted_to(store):
    [(job, task_id)] = await queued(store)
    bad = dataclasses.replace(job, payload={**job.payload, "endpoint": "http://pharmacy.test/fhir"})
    pharmacy = Pharmacy(transaction_response)
    with pytest.raises(Permanent):
        await delivery(store, pharmacy).handle(attempt(bad, 1))
    assert pharmacy.requests == []
    assert business_status((await current(store, "Task", task_id))[0]) == "error"


async def test_nothing_patient_identifying_reaches_logs_or_job_errors(store, caplog):
    errors = []
    with caplog.at_level(logging.DEBUG):
        for n, (answer, attempts) in enumerate(((http(500), 1), (http(422, REFUSAL), 1), (http(503), 3),
                                               (transaction_response, 1), (lambda r: httpx.Response(200, text="Garcia"), 1),
                                               (httpx.ConnectError("Garcia"), 1))):
            [(job, _)] = await queued(store, mr_id=f"mr-{n}")
            try:
                await delivery(store, Pharmacy(answer)).handle(attempt(job, attempts))
            except (RetryLater, Permanent) as exc:
                errors.append(exc.error)
    text = "\n".join(errors + [r.getMessage() for r in caplog.records])
    assert errors and caplog.records
    for secret in SECRETS:
        assert secret not in text


def test_the_transaction_survives_a_json_round_trip_unchanged():
    bundle = build_transaction(context("nitrofurantoin-liquid"))
    assert orjson.loads(orjson.dumps(bundle)) == copy.deepcopy(bundle)
