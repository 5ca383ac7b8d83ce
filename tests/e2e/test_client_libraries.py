"""The EHR-exchange features driven by real FHIR client libraries, not hand-built requests (issue 10):

- fhirpy 2.3 (sync `SyncFHIRClient` over requests, async `AsyncFHIRClient` over aiohttp) as an EHR
  holding a SMART backend-services token (client_credentials with a private_key_jwt assertion,
  scope narrowed to reading plus creating Groups and Subscriptions): searches completed Encounters
  with _include/_revinclude and pages through them with the library's iteration, reads the consult
  note and calls `$document`, `Encounter/$everything` and `Patient/$everything` through `execute`,
  creates a Group and exports it (Bulk Data), creates a Subscription and gets its notification.
- the SMART Python `fhirclient` 4.4.0 as the patient's app, after a standalone launch (the walk
  through sign-in and consent of test_fhirclient_launch.py): reads the patient, searches its
  Conditions, MedicationRequests and DocumentReferences through the models, and downloads the
  consult note's HTML page checking the attachment's size and SHA-1.

The server runs with authorization on. The visits themselves are set up with httpx and a loader
token (as the other visit tests do); everything the assertions look at comes through the libraries.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid

import httpx
import pytest

from tests.e2e.smart_support import REDIRECT, backend_services_token, start_smart_server
from tests.e2e.test_consultation_document import completed_visit
from tests.e2e.test_fhirclient_launch import walk_authorize_url
from tests.e2e.test_subscriptions import Receiver, of_type, params, subscription
from tests.e2e.test_visit_review import claim, practitioner, submitted, with_state
from tests.e2e.visit_support import load
from tests.support import FHIR_JSON

fhirpy = pytest.importorskip("fhirpy", reason="fhirpy is not installed: pip install 'fhirpy>=2.3,<2.4'")
pytest.importorskip("fhirclient", reason="fhirclient is not installed: pip install 'fhirclient>=4.4.0'")

import requests  # noqa: E402  (fhirpy's own HTTP transport)
from fhirclient import client as smart_client  # noqa: E402
from fhirclient.models.condition import Condition  # noqa: E402
from fhirclient.models.documentreference import DocumentReference  # noqa: E402
from fhirclient.models.medicationrequest import MedicationRequest  # noqa: E402
from fhirclient.models.patient import Patient  # noqa: E402
from fhirpy import AsyncFHIRClient, SyncFHIRClient  # noqa: E402
from fhirclient.server import FHIRNotFoundException, FHIRPermissionDeniedException  # noqa: E402
from fhirpy.base.exceptions import ForbiddenError, ResourceNotFound  # noqa: E402

EHR = "ehr-backend"
EHR_SCOPE = "system/*.rs system/Group.c system/Subscription.c"
PATIENT_APP, PATIENT_USER = "patient-app", "jordan"
PATIENT_SCOPE = "launch/patient openid fhirUser offline_access patient/*.read"
NDJSON = "application/fhir+ndjson"
SERVER_ENV = {"FHIR_SUBSCRIPTION_ALLOW_HTTP_LOOPBACK": "1", "FHIR_SUBSCRIPTION_POLL_SECONDS": "0.2",
              "FHIR_EXPORT_RETRY_AFTER": "1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_smart_server(tmp_path_factory.mktemp("client-libraries"), env=SERVER_ENV)
    try:
        yield srv
    finally:
        srv.process.stop()


def loader(server) -> httpx.Client:
    """The visit tests' way of building data (patient app, clinician): httpx with a system/*.cruds token."""
    return httpx.Client(base_url=server.base, timeout=30.0,
                        headers={**FHIR_JSON, "Authorization": f"Bearer {server.system_token()}"})


@pytest.fixture(scope="module")
def visits(server) -> dict:
    """Two completed visits of two patients: `ours` (what the EHR and the patient look at) and `other`."""
    with loader(server) as c:
        return {"ours": completed_visit(c), "other": completed_visit(c)}


@pytest.fixture(scope="module")
def ehr_token(server) -> str:
    """SMART Backend Services: the EHR's registered RS384 key signs a client assertion; the token
    endpoint answers a short-lived access token with the scopes granted."""
    answer = backend_services_token(server, EHR, EHR_SCOPE, alg="RS384")
    assert set(answer["scope"].split()) == set(EHR_SCOPE.split())
    return answer["access_token"]


class LastResponse:
    """fhirpy hands back only a response's JSON body. Bulk Data lives in the headers (the kick-off's
    Content-Location, the status's Retry-After and X-Progress), so a requests response hook, passed
    through fhirpy's public `requests_config`, keeps the last response for the test to read."""

    def __init__(self):
        self.response: requests.Response | None = None
        self.urls: list[str] = []

    def __call__(self, response: requests.Response, *args, **kwargs) -> requests.Response:
        self.response = response
        self.urls.append(response.url)
        return response


@pytest.fixture()
def last() -> LastResponse:
    return LastResponse()


@pytest.fixture()
def ehr(server, ehr_token, last) -> SyncFHIRClient:
    return SyncFHIRClient(server.base, authorization=f"Bearer {ehr_token}",
                          requests_config={"timeout": 30, "hooks": {"response": [last]}})


def ref(resource) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def refs(bundle) -> list[str]:
    return [ref(e["resource"]) for e in bundle.get("entry", [])]


def visit_refs(visit: dict) -> set[str]:
    return {visit["encounter"], visit["patient"], visit["doctor"], ref(visit["condition"]), ref(visit["careplan"]),
            ref(visit["prescription"]), f"Task/{visit['task']['id']}"}


# -- fhirpy, synchronous ----------------------------------------------------------------------------


def test_search_completed_encounters_with_includes_and_page_through_them(ehr, last, visits):
    ours, other = visits["ours"], visits["other"]
    # (the two visits' patients: other tests of this module complete visits of their own)
    finished = ehr.resources("Encounter").search(status="finished", subject=f"{ours['patient']},{other['patient']}")
    with_context = (finished.include("Encounter", "subject").revinclude("Composition", "encounter")
                    .revinclude("MedicationRequest", "encounter"))
    bundle = with_context.fetch_raw()
    matches = [ref(e.resource) for e in bundle.entry if e.search.mode == "match"]
    included = {ref(e.resource) for e in bundle.entry if e.search.mode == "include"}
    assert sorted(matches) == sorted([ours["encounter"], other["encounter"]])
    assert {ours["patient"], other["patient"], ref(ours["prescription"]), ref(other["prescription"])} <= included
    compositions = [e.resource for e in bundle.entry if e.resource.resourceType == "Composition"]
    assert sorted(c.encounter.reference for c in compositions) == sorted([ours["encounter"], other["encounter"]])
    assert all(c.type.coding[0].code == "11488-4" and c.status == "final" for c in compositions)

    # one Encounter per page: the library's iteration follows the `next` links to the end
    before = len(last.urls)
    assert sorted(ref(e) for e in with_context.limit(1)) == sorted(matches)
    assert len(last.urls) - before == 2  # two pages, the second from the first's `next` link
    # the library's count() (it asks `_count=0`) and the standard `_summary=count` agree
    assert finished.count() == 2
    assert finished.search(_summary="count").fetch_raw().total == 2
    # narrowed to one patient: only that visit
    [mine] = finished.search(subject=ours["patient"]).fetch_all()
    assert ref(mine) == ours["encounter"] and mine.subject.reference == ours["patient"]


def test_consult_note_and_its_document_through_execute(ehr, visits):
    ours = visits["ours"]
    found = ehr.resources("Composition").search(encounter=ours["encounter"], status="final").get()
    note = ehr.reference("Composition", found.id).to_resource()  # a read: GET Composition/{id}
    assert note.id == found.id and note.meta.versionId == "1"
    assert note.subject.reference == ours["patient"] and note.author[0].reference == ours["doctor"]
    sections = {s.title: s for s in note.section}
    assert [e.reference for e in sections["Medications prescribed"].entry] == [ref(ours["prescription"])]

    document = note.execute("$document", method="get")
    assert document.resourceType == "Bundle" and document.type == "document"
    assert document.identifier.value.startswith("urn:uuid:") and document.timestamp
    assert refs(document)[0] == ref(note)
    assert visit_refs(ours) - {f"Task/{ours['task']['id']}"} <= set(refs(document))
    assert len(refs(document)) == len(set(refs(document)))
    assert not set(refs(document)) & visit_refs(visits["other"])

    # the DocumentReference an EHR files: pointing at this document and at the HTML page
    docref = ehr.resources("DocumentReference").search(encounter=ours["encounter"], status="current").get()
    document_url, page_url = (c.attachment.url for c in docref.content)
    assert document_url == f"Composition/{note.id}/$document"
    assert page_url.startswith("Binary/")


def test_encounter_and_patient_everything_through_execute_with_paging(ehr, visits):
    ours = visits["ours"]
    encounter_id = ours["encounter"].split("/")[1]
    whole_visit = ehr.reference("Encounter", encounter_id).execute("$everything", method="get")
    found = set(refs(whole_visit))
    assert visit_refs(ours) <= found
    composition = ehr.resources("Composition").search(encounter=ours["encounter"]).get()
    docref = ehr.resources("DocumentReference").search(encounter=ours["encounter"]).get()
    assert {ref(composition), ref(docref)} <= found
    assert not found & {visits["other"]["encounter"], visits["other"]["patient"], ref(visits["other"]["condition"])}

    # Patient/$everything, 3 per page. fhirpy iterates search sets only (its iteration keeps the
    # entries of the searched type), so an operation's pages are followed with `execute` on each
    # `next` link, which fhirpy accepts as an absolute URL on its own base.
    patient = ehr.reference("Patient", ours["patient"].split("/")[1])
    whole = patient.execute("$everything", method="get")
    pages, paged = 0, []
    page = patient.execute("$everything", method="get", params={"_count": 3})
    while True:
        pages += 1
        matches = [ref(e.resource) for e in page.entry if e.search.mode == "match"]
        assert len(matches) <= 3
        paged += matches
        next_url = next((link.url for link in page.get("link", []) if link.relation == "next"), None)
        if next_url is None:
            break
        page = ehr.execute(next_url, method="get")
    all_matches = {ref(e.resource) for e in whole.entry if e.search.mode == "match"}
    assert pages > 1 and len(paged) == len(set(paged)) == whole.total
    assert set(paged) == all_matches
    assert {ours["patient"], ours["encounter"], ref(ours["condition"]), ref(ours["prescription"])} <= all_matches
    assert not all_matches & visit_refs(visits["other"])


def test_group_bulk_export_through_the_library(server, ehr, ehr_token, last, visits):
    ours, other = visits["ours"], visits["other"]
    group = ehr.resource("Group", type="person", actual=True, name="Telehealth follow-ups",
                         member=[{"entity": {"reference": ours["patient"]}}])
    group.save()
    assert group.id and last.response.status_code == 201

    # Bulk kick-off needs `Prefer: respond-async`: fhirpy sets request headers per client
    # (`extra_headers`), so the EHR keeps a second client for kick-offs.
    kickoff = SyncFHIRClient(server.base, authorization=f"Bearer {ehr_token}",
                             extra_headers={"Prefer": "respond-async"},
                             requests_config={"timeout": 30, "hooks": {"response": [last]}})
    types = "Patient,Encounter,Condition,CarePlan,MedicationRequest"
    outcome = kickoff.reference("Group", group.id).execute("$export", method="get", params={"_type": types})
    assert last.response.status_code == 202 and outcome.resourceType == "OperationOutcome"
    status_url = last.response.headers["Content-Location"]

    deadline = time.monotonic() + 60
    while True:
        manifest = ehr.execute(status_url, method="get")  # 202 answers no body: None
        if last.response.status_code == 200:
            break
        assert last.response.status_code == 202 and last.response.headers["X-Progress"]
        assert time.monotonic() < deadline, "the export did not finish within 60 s"
        time.sleep(float(last.response.headers["Retry-After"]))
    assert manifest.requiresAccessToken is True and manifest.error == []
    assert f"/Group/{group.id}/$export" in manifest.request

    # The files are NDJSON, which fhirpy cannot parse (it reads every answer as one JSON
    # document); they are fetched with fhirpy's own transport, requests, and the EHR's token.
    exported: dict[str, list[dict]] = {}
    for item in manifest.output:
        answer = requests.get(item.url, headers={"Authorization": ehr.authorization, "Accept": NDJSON}, timeout=30)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(NDJSON)
        lines = [json.loads(line) for line in answer.content.splitlines() if line]
        assert len(lines) == item.count and {r["resourceType"] for r in lines} == {item.type}
        exported.setdefault(item.type, []).extend(lines)
    ids = {t: {f"{t}/{r['id']}" for r in rs} for t, rs in exported.items()}
    assert ids["Patient"] == {ours["patient"]}
    assert ids["Encounter"] == {ours["encounter"]}
    assert ids["Condition"] == {ref(ours["condition"])}
    assert ids["CarePlan"] == {ref(ours["careplan"])}
    assert ids["MedicationRequest"] == {ref(ours["prescription"])}
    assert not set().union(*ids.values()) & visit_refs(other)
    # the same counts as a search of the store for that patient
    assert len(exported["Condition"]) == ehr.resources("Condition").search(subject=ours["patient"],
                                                                          _summary="count").fetch_raw().total


def test_subscription_created_through_the_library_notifies_on_completion(server, ehr, visits):
    receiver = Receiver().start()
    try:
        with loader(server) as c:
            task = submitted(c)  # a visit waiting for review: the EHR subscribes to its patient
            patient = task["for"]["reference"]
            sub = ehr.resource("Subscription", **subscription(receiver.url, patient, content="full-resource"))
            sub.save()
            assert sub.id and sub.status == "requested"
            [handshake] = receiver.wait(of_type("handshake"))
            # the receiver gets the header the EHR asked for, never the EHR's own token
            assert handshake["headers"]["Authorization"] == "Bearer receiver-secret"
            deadline = time.monotonic() + 15
            while ehr.get("Subscription", sub.id).status != "active":
                assert time.monotonic() < deadline, "the Subscription did not become active"
                time.sleep(0.2)

            claimed = claim(c, task, practitioner(c, "CA")).json()
            diagnosis = load("profiles/examples/visit-diagnosis-valid.json")
            plan = load("profiles/examples/visit-careplan-valid.json")
            for resource in (diagnosis, plan):
                resource.pop("id")
                resource.pop("meta", None)
                resource.update(encounter=task["focus"], subject=task["for"])
            plan["addresses"] = [{"reference": "Condition/" + c.post("/Condition", json=diagnosis).json()["id"]}]
            assert c.post("/CarePlan", json=plan).status_code == 201
            assert c.put(f"/Task/{task['id']}", json=with_state(claimed, "completed", "completed")).status_code == 200
        [note] = receiver.wait(of_type("event-notification"))
        event = {p["name"]: p for p in params(note["body"])["notification-event"]["part"]}
        assert event["event-number"]["valueString"] == "1"
        assert event["focus"]["valueReference"]["reference"].endswith(task["focus"]["reference"])
        [encounter] = [e["resource"] for e in note["body"]["entry"][1:] if e["resource"]["resourceType"] == "Encounter"]
        assert encounter["status"] == "finished" and encounter["subject"]["reference"] == patient
        # the EHR reads the subscription's state back through the library too
        status = ehr.reference("Subscription", sub.id).execute("$status", method="get")
        assert params(status)["events-since-subscription-start"]["valueString"] == "1"
    finally:
        receiver.stop()


def test_the_ehr_token_is_read_only_where_its_scopes_say(ehr, visits):
    """The narrow backend scope holds through the library: creating a Condition is refused."""
    with pytest.raises(ForbiddenError):
        ehr.resource("Condition", subject={"reference": visits["ours"]["patient"]},
                     code={"text": "should not be stored"}).save()
    with pytest.raises(ResourceNotFound):
        ehr.get("Encounter", str(uuid.uuid4()))


# -- fhirpy, asynchronous ---------------------------------------------------------------------------


async def test_async_client_searches_pages_and_runs_operations(server, ehr_token, visits):
    ours = visits["ours"]
    ehr = AsyncFHIRClient(server.base, authorization=f"Bearer {ehr_token}")
    other = visits["other"]
    finished = ehr.resources("Encounter").search(status="finished", subject=f"{ours['patient']},{other['patient']}")
    assert sorted([ref(e) async for e in finished.limit(1)]) == sorted([ours["encounter"], other["encounter"]])
    note = await ehr.resources("Composition").search(encounter=ours["encounter"]).get()
    document = await note.execute("$document", method="get")
    assert document.type == "document" and refs(document)[0] == ref(note)
    everything = await ehr.reference("Encounter", ours["encounter"].split("/")[1]).execute("$everything", method="get")
    assert visit_refs(ours) <= set(refs(everything))


# -- fhirclient: the patient's own app after a standalone launch -------------------------------------


@pytest.fixture(scope="module")
def patient_app(server, visits) -> smart_client.FHIRClient:
    """A standalone launch of the patient's app (public client, PKCE) by the visit's patient."""
    server.add_client(PATIENT_APP, "public", PATIENT_SCOPE)
    server.add_user(PATIENT_USER, visits["ours"]["patient"])
    smart = smart_client.FHIRClient(settings={"app_id": PATIENT_APP, "api_base": server.base,
                                              "redirect_uri": REDIRECT, "scope": PATIENT_SCOPE})
    smart.handle_callback(walk_authorize_url(server, smart.authorize_url, PATIENT_USER))
    assert smart.ready
    return smart


def test_patient_app_reads_its_own_record_with_fhirclient(patient_app, visits):
    ours, other = visits["ours"], visits["other"]
    patient_id = ours["patient"].split("/")[1]
    assert patient_app.patient_id == patient_id
    patient = Patient.read(patient_id, patient_app.server)
    assert patient.id == patient_id and patient.name[0].family == "Rivera" and patient.birthDate.isostring == "1991-04-17"

    # perform_resources_iter: fhirclient 4.4's form of perform_resources (now deprecated and
    # defined as list(perform_resources_iter(...))), which follows the Bundle's next links
    conditions = list(Condition.where(struct={"patient": patient_id}).perform_resources_iter(patient_app.server))
    assert [c.id for c in conditions] == [ours["condition"]["id"]]
    assert conditions[0].code.text == ours["condition"]["code"]["text"]
    prescriptions = list(MedicationRequest.where(struct={"patient": patient_id}).perform_resources_iter(patient_app.server))
    assert [m.id for m in prescriptions] == [ours["prescription"]["id"]]
    assert prescriptions[0].encounter.reference == ours["encounter"]

    # a search without a patient is narrowed to the token's patient: the other visit never shows
    every = {c.id for c in Condition.where(struct={}).perform_resources_iter(patient_app.server)}
    assert every == {ours["condition"]["id"]} and other["condition"]["id"] not in every
    with pytest.raises((FHIRNotFoundException, FHIRPermissionDeniedException)):
        Patient.read(other["patient"].split("/")[1], patient_app.server)


def test_patient_app_downloads_the_consult_note_page_and_checks_size_and_hash(patient_app, visits):
    ours = visits["ours"]
    [docref] = DocumentReference.where(struct={"patient": ours["patient"].split("/")[1], "status": "current"}) \
        .perform_resources_iter(patient_app.server)
    assert docref.type.coding[0].code == "11488-4" and docref.context.encounter[0].reference == ours["encounter"]
    page = next(c.attachment for c in docref.content if c.attachment.contentType == "text/html")
    assert page.size and page.hash
    # fhirclient's raw download (request_data: the response's bytes, with the patient's token)
    content = patient_app.server.request_data(page.url, headers={"Accept": "text/html"})
    assert len(content) == page.size
    assert base64.b64encode(hashlib.sha1(content).digest()).decode() == page.hash
    assert b"Allergic contact dermatitis" in content
