"""SMART authorization enforced by the real server (research/smart.md section 7, items 20-22):
bearer tokens (401), scopes per type and interaction (403), the patient compartment and v2 scope
restrictions on reads, searches, includes, chains, _has, history, writes and Bundles.

The server runs with authorization on; the test mints real access tokens with the server's own
signing key by opening the same SQLite file's record store.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from smart_auth.service import AuthService
from tests.support import FHIR_JSON, ONE_PIXEL_PNG, ServerProcess

CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
LAB = f"{CAT}|laboratory"
VITALS = f"{CAT}|vital-signs"



class Env:
    def __init__(self, server: ServerProcess, svc: AuthService):
        self.server, self.svc, self.base = server, svc, server.base

    def token(self, scope: str, *, patient: str | None = None, grant: str | None = None, **kw) -> str:
        kw.setdefault("issuer", self.base)
        kw.setdefault("audience", self.base)
        token, _ = self.svc.tokens.access_token(
            client_id="test-app", subject="tester", scope=scope, grant_id=grant or uuid.uuid4().hex,
            patient=patient, **kw)
        return token

    def client(self, scope: str | None = None, *, token: str | None = None, **kw) -> httpx.Client:
        headers = dict(FHIR_JSON)
        if scope is not None:
            token = self.token(scope, **kw)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.base, headers=headers, timeout=30.0)


def obs(id: str, patient: str, category: str, **extra) -> dict:
    return {"resourceType": "Observation", "id": id, "status": "final",
            "category": [{"coding": [{"system": CAT, "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": f"code-{id}"}]},
            "subject": {"reference": f"Patient/{patient}"}, **extra}


DATA = [
    {"resourceType": "Patient", "id": "pa", "name": [{"family": "Alpha"}]},
    {"resourceType": "Patient", "id": "pb", "name": [{"family": "Bravo"}],
     "generalPractitioner": [{"reference": "Practitioner/dr"}]},
    {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Who"}]},
    obs("a-lab", "pa", "laboratory", hasMember=[{"reference": "Observation/b-lab"}]),
    obs("a-vital", "pa", "vital-signs", performer=[{"reference": "Practitioner/dr"}]),
    obs("b-lab", "pb", "laboratory", performer=[{"reference": "Practitioner/dr"}]),
    obs("b-vital", "pb", "vital-signs"),
    {"resourceType": "Encounter", "id": "enc-a", "status": "finished", "class": {"code": "VR"},
     "subject": {"reference": "Patient/pa"}},
    {"resourceType": "Encounter", "id": "enc-b", "status": "finished", "class": {"code": "VR"},
     "subject": {"reference": "Patient/pb"}},
    {"resourceType": "Binary", "id": "bin-a", "contentType": "image/png", "data": ONE_PIXEL_PNG,
     "securityContext": {"reference": "Patient/pa"}},
    {"resourceType": "Binary", "id": "bin-b", "contentType": "image/png", "data": ONE_PIXEL_PNG,
     "securityContext": {"reference": "Patient/pb"}},
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    db = tmp_path_factory.mktemp("auth") / "fhir.db"
    server = ServerProcess(db, auth=True).start()
    svc = AuthService.from_url(f"sqlite:///{db}")
    svc.open_sync()  # the server created the signing key on start-up
    e = Env(server, svc)
    with e.client("user/*.cruds") as admin:
        for resource in DATA:
            r = admin.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
            assert r.status_code == 201, r.text
        # a second version of b-vital, and a deleted resource of B's
        assert admin.put("/Observation/b-vital", json={**obs("b-vital", "pb", "vital-signs"), "status": "amended"}
                         ).status_code == 200
        assert admin.put("/Observation/b-gone", json=obs("b-gone", "pb", "laboratory")).status_code == 201
        assert admin.delete("/Observation/b-gone").status_code == 204
    yield e
    server.stop()
    svc.store.close()


def ids(bundle: dict, mode: str | None = None) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])
            if "resource" in e and e["resource"]["resourceType"] != "OperationOutcome"
            and (mode is None or e.get("search", {}).get("mode") == mode)}


def assert_outcome(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


PATIENT_A = "patient/*.cruds launch/patient"


# -- tokens: 401 ---------------------------------------------------------------------------------


def test_no_token_is_401_with_a_bearer_challenge(env):
    with env.client() as anonymous:
        r = anonymous.get("/Patient/pa")
        assert_outcome(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.get("/metadata").status_code == 200  # the CapabilityStatement stays public


@pytest.mark.parametrize("method, path", [
    ("GET", "/Patient/pa"), ("GET", "/Patient/pa/_history/1"), ("GET", "/Patient/pa/_history"),
    ("GET", "/Patient"), ("POST", "/Patient/_search"), ("GET", "/"), ("POST", "/_search"), ("GET", "/_history"),
    ("GET", "/Patient/_history"), ("GET", "/Patient/pa/Observation"), ("POST", "/Patient"), ("PUT", "/Patient/pa"),
    ("PATCH", "/Patient/pa"), ("DELETE", "/Patient/pa"), ("PUT", "/Patient?name=x"), ("DELETE", "/Patient?name=x"),
    ("POST", "/"),
])
def test_every_fhir_route_needs_a_token(env, method, path):
    with env.client() as anonymous:
        r = anonymous.request(method, path, content=b"{}")
        assert_outcome(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")


def _forged(env: Env) -> str:
    other = RSAKey.generate_key(2048, parameters={"kid": env.svc.keys.signing_key.kid})
    now = int(time.time())
    claims = {"iss": env.base, "aud": env.base, "sub": "x", "client_id": "x", "scope": "user/*.cruds",
              "iat": now, "exp": now + 300, "jti": "j", "grant": "g"}
    return jwt.encode({"alg": "RS256", "kid": other.kid}, claims, other)


def _tampered(env: Env) -> str:
    header, payload, signature = env.token("patient/Observation.rs", patient="pa").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "user/*.cruds"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize("make", [
    lambda env: env.token("user/*.rs", lifetime=-120),  # expired
    _forged,  # signed with another key
    _tampered,  # payload changed after signing
    lambda env: env.token("user/*.rs", audience="http://elsewhere.example/fhir"),  # wrong aud
    lambda env: env.token("user/*.rs", issuer="http://elsewhere.example/fhir"),  # wrong iss
    lambda env: "not-a-jwt",
])
def test_bad_tokens_are_401(env, make):
    with env.client(token=make(env)) as c:
        r = c.get("/Practitioner/dr")
        assert_outcome(r, 401)
        assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_malformed_authorization_header_is_401(env):
    with httpx.Client(base_url=env.base, headers={"Authorization": "Basic dXNlcjpwYXNz"}) as c:
        assert_outcome(c.get("/Patient/pa"), 401)


def test_a_token_that_worked_stops_when_it_expires(env):
    # accepted until exp + 30 s of clock skew: this one has about a second left
    with env.client("user/*.rs", lifetime=-29) as c:
        assert c.get("/Patient/pa").status_code == 200
        time.sleep(1.5)
        assert_outcome(c.get("/Patient/pa"), 401)


def test_revoked_grant_stops_working_within_a_second_or_so(env):
    grant = uuid.uuid4().hex
    with env.client("user/*.rs", grant=grant) as c:
        assert c.get("/Patient/pa").status_code == 200
        env.svc.records.revoke_grant(grant)
        deadline = time.monotonic() + 3.0
        while c.get("/Patient/pa").status_code == 200:
            assert time.monotonic() < deadline, "the revoked token still works after 3 s"
            time.sleep(0.1)
        assert_outcome(c.get("/Patient/pa"), 401)


# -- scopes per type and interaction: 403 --------------------------------------------------------


def test_type_not_granted_is_403(env):
    with env.client("patient/Observation.rs", patient="pa") as c:
        assert_outcome(c.get("/Encounter/enc-a"), 403)
        assert_outcome(c.get("/Encounter"), 403)
        assert_outcome(c.get("/", params={"_type": "Encounter,Observation"}), 403)
        assert c.get("/Observation/a-lab").status_code == 200


def test_read_only_and_search_only_scopes(env):
    with env.client("patient/Observation.r", patient="pa") as c:
        assert c.get("/Observation/a-lab").status_code == 200
        assert_outcome(c.get("/Observation"), 403)
    with env.client("patient/Observation.s", patient="pa") as c:
        assert ids(c.get("/Observation").json()) == {"a-lab", "a-vital"}
        assert_outcome(c.get("/Observation/a-lab"), 403)


def test_patient_scope_without_patient_context_is_refused(env):
    with env.client("patient/*.rs") as c:
        assert_outcome(c.get("/Observation/a-lab"), 403)
        assert_outcome(c.get("/Practitioner/dr"), 403)


# -- the patient compartment -----------------------------------------------------------------------


def test_patient_reads_only_its_own_compartment(env):
    with env.client(PATIENT_A, patient="pa") as c:
        assert c.get("/Patient/pa").status_code == 200
        assert c.get("/Observation/a-lab").status_code == 200
        for path in ("/Patient/pb", "/Observation/b-lab", "/Observation/b-vital/_history/1", "/Encounter/enc-b",
                     "/Observation/b-gone", "/Observation/b-gone/_history/2", "/Observation/b-vital/_history"):
            assert_outcome(c.get(path), 404)
        assert_outcome(c.get("/Observation/never-existed"), 404)


def test_search_without_patient_parameter_is_narrowed(env):
    with env.client(PATIENT_A, patient="pa") as c:
        assert ids(c.get("/Observation").json()) == {"a-lab", "a-vital"}
        assert ids(c.get("/Observation", params={"patient": "pb"}).json()) == set()
        assert ids(c.get("/Observation", params={"_total": "accurate"}).json()) == {"a-lab", "a-vital"}
        assert c.get("/Observation", params={"_total": "accurate"}).json()["total"] == 2
        assert ids(c.get("/Patient").json()) == {"pa"}
        assert ids(c.post("/Observation/_search", data={"category": "laboratory"},
                          headers={"Content-Type": "application/x-www-form-urlencoded"}).json()) == {"a-lab"}
        assert ids(c.get("/Patient/pb/Observation").json()) == set()  # compartment search of B
        assert ids(c.get("/Patient/pa/Observation").json()) == {"a-lab", "a-vital"}
        system = c.get("/", params={"_type": "Observation,Encounter"}).json()
        assert ids(system) == {"a-lab", "a-vital", "enc-a"}
        everything = ids(c.get("/", params={"_count": "100"}).json())
        assert {"pb", "b-lab", "b-vital", "enc-b"}.isdisjoint(everything)
        assert {"pa", "a-lab", "enc-a", "dr"} <= everything


def test_includes_and_revincludes_never_leak(env):
    with env.client(PATIENT_A, patient="pa") as c:
        # a-lab has a member in B's compartment
        bundle = c.get("/Observation", params={"_include": "Observation:has-member"}).json()
        assert ids(bundle) == {"a-lab", "a-vital"}
        bundle = c.get("/Observation", params={"_include": "Observation:performer"}).json()
        assert ids(bundle, "include") == {"dr"}  # not patient data: shown
        bundle = c.get("/Practitioner", params={"_revinclude": "Observation:performer"}).json()
        assert ids(bundle, "include") == {"a-vital"}  # b-lab has the same performer
        bundle = c.get("/Practitioner", params={"_revinclude:iterate": "Patient:general-practitioner",
                                                "_revinclude": "Observation:performer"}).json()
        assert "pb" not in ids(bundle) and "b-lab" not in ids(bundle)
        bundle = c.get("/Patient", params={"_revinclude": "Observation:subject", "_revinclude:iterate":
                                           "Observation:has-member"}).json()
        assert ids(bundle) == {"pa", "a-lab", "a-vital"}
        bundle = c.get("/Observation", params={"_include": "*", "_revinclude": "*"}).json()
        assert {"pb", "b-lab", "b-vital", "enc-b", "bin-b"}.isdisjoint(ids(bundle))


def test_chains_and_has_cannot_probe_other_patients(env):
    with env.client(PATIENT_A, patient="pa") as c:
        assert ids(c.get("/Observation", params={"subject:Patient.family": "Bravo"}).json()) == set()
        assert ids(c.get("/Observation", params={"subject:Patient.family": "Alpha"}).json()) == {"a-lab", "a-vital"}
        assert ids(c.get("/Observation", params={"has-member.subject": "Patient/pb"}).json()) == set()
        assert ids(c.get("/Practitioner", params={"_has:Observation:performer:subject": "Patient/pb"}).json()) == set()
        assert ids(c.get("/Practitioner", params={"_has:Observation:performer:subject": "Patient/pa"}).json()) == {"dr"}
        assert ids(c.get("/Patient", params={"_has:Observation:subject:code": "code-b-lab"}).json()) == set()
    with env.client("patient/Observation.rs", patient="pa") as c:  # may not search Patient: no chain through it
        assert_outcome(c.get("/Observation", params={"subject:Patient.family": "Alpha"}), 403)


def test_history_shows_only_the_compartment(env):
    with env.client(PATIENT_A, patient="pa") as c:
        history = c.get("/Observation/_history").json()
        assert ids(history) == {"a-lab", "a-vital"}
        assert not any("b-gone" in e["fullUrl"] for e in history.get("entry", []))
        system = c.get("/_history", params={"_count": "1000"}).json()
        assert {"pb", "b-lab", "b-vital", "enc-b", "bin-b"}.isdisjoint({e["fullUrl"].rsplit("/", 1)[1]
                                                                         for e in system.get("entry", [])})
        assert c.get("/Observation/a-lab/_history").json()["total"] == 1


def test_binary_through_its_security_context(env):
    with env.client(PATIENT_A, patient="pa") as c:
        assert c.get("/Binary/bin-a").status_code == 200
        assert_outcome(c.get("/Binary/bin-b"), 404)
        assert_outcome(c.get("/Binary"), 403)
        upload = {"resourceType": "Binary", "contentType": "image/png", "data": ONE_PIXEL_PNG,  # (its bytes must be a PNG)
                  "securityContext": {"reference": "Patient/pb"}}
        assert_outcome(c.post("/Binary", json=upload), 403)
        upload["securityContext"] = {"reference": "Patient/pa"}
        assert c.post("/Binary", json=upload).status_code == 201


def test_non_compartment_types_are_readable_not_writable(env):
    with env.client("patient/Practitioner.cruds", patient="pa") as c:
        assert c.get("/Practitioner/dr").status_code == 200
        assert ids(c.get("/Practitioner").json()) >= {"dr"}
        assert_outcome(c.post("/Practitioner", json={"resourceType": "Practitioner"}), 403)
        assert_outcome(c.delete("/Practitioner/dr"), 403)


# -- v2 query restrictions ------------------------------------------------------------------------


def test_category_restriction_filters_searches_and_hides_reads(env):
    with env.client(f"patient/Observation.rs?category={LAB}", patient="pa") as c:
        assert ids(c.get("/Observation", params={"patient": "pa"}).json()) == {"a-lab"}
        assert ids(c.get("/Observation").json()) == {"a-lab"}
        assert c.get("/Observation/a-lab").status_code == 200
        assert_outcome(c.get("/Observation/a-vital"), 404)
    two = f"patient/Observation.rs?category={LAB} patient/Observation.rs?category={VITALS}"
    with env.client(two, patient="pa") as c:
        assert ids(c.get("/Observation").json()) == {"a-lab", "a-vital"}
        assert c.get("/Observation/a-vital").status_code == 200
    with env.client(f"user/Observation.rs?category={LAB}") as c:
        assert ids(c.get("/Observation").json()) == {"a-lab", "b-lab"}
        assert_outcome(c.get("/Observation/b-vital"), 404)


# -- writes -----------------------------------------------------------------------------------------


def test_patient_writes_stay_in_the_compartment(env):
    with env.client(PATIENT_A, patient="pa") as c:
        r = c.post("/Observation", json=obs("x", "pb", "laboratory"))
        assert_outcome(r, 403)
        r = c.post("/Observation", json=obs("x", "pa", "laboratory"))
        assert r.status_code == 201, r.text
        mine = r.json()["id"]
        assert_outcome(c.put("/Observation/b-lab", json=obs("b-lab", "pa", "laboratory")), 403)  # take B's
        assert_outcome(c.put(f"/Observation/{mine}", json=obs(mine, "pb", "laboratory")), 403)  # give to B
        assert_outcome(c.patch("/Observation/b-lab", content=b'[{"op":"replace","path":"/status","value":"amended"}]',
                               headers={"Content-Type": "application/json-patch+json"}), 403)
        assert_outcome(c.patch(f"/Observation/{mine}",
                               content=b'[{"op":"replace","path":"/subject/reference","value":"Patient/pb"}]',
                               headers={"Content-Type": "application/json-patch+json"}), 403)
        assert_outcome(c.delete("/Observation/b-lab"), 403)
        assert_outcome(c.put("/Patient/pb", json={"resourceType": "Patient", "id": "pb"}), 403)
        # in A's compartment, but also pointing into B's: refused
        assert_outcome(c.post("/Observation", json=obs("x", "pa", "laboratory",
                                                       performer=[{"reference": "Patient/pb"}])), 403)
        # conditional delete and update cannot reach B's data
        assert c.delete("/Observation", params={"code": "http://loinc.org|code-b-vital"}).status_code == 204
        r = c.put("/Observation", params={"code": "http://loinc.org|code-b-lab"}, json=obs("zz", "pb", "laboratory"))
        assert_outcome(r, 403)
        assert c.delete(f"/Observation/{mine}").status_code == 204
    with env.client("user/*.rs") as reader:
        assert reader.get("/Observation/b-vital").status_code == 200
        assert reader.get("/Observation/b-lab").json()["status"] == "final"


def test_transaction_with_one_forbidden_entry_writes_nothing(env):
    tag = uuid.uuid4().hex
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**obs("t1", "pa", "laboratory"), "identifier": [{"system": "urn:t", "value": tag}]},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": {**obs("t2", "pb", "laboratory"), "identifier": [{"system": "urn:t", "value": tag}]},
         "request": {"method": "POST", "url": "Observation"}},
    ]}
    with env.client(PATIENT_A, patient="pa") as c:
        r = c.post("/", json=bundle)
        assert_outcome(r, 403)
        assert "Bundle.entry[1]" in r.json()["issue"][0]["diagnostics"]
    with env.client("user/*.rs") as reader:
        assert ids(reader.get("/Observation", params={"identifier": f"urn:t|{tag}"}).json()) == set()


def test_batch_entries_are_decided_one_by_one(env):
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/a-lab"}},
        {"request": {"method": "GET", "url": "Observation/b-lab"}},
        {"request": {"method": "GET", "url": "Encounter?subject=Patient/pb"}},
        {"request": {"method": "DELETE", "url": "Observation/b-lab"}},
        {"request": {"method": "GET", "url": "Observation/b-vital/_history"}},
    ]}
    with env.client("patient/Observation.cruds patient/Encounter.rs", patient="pa") as c:
        r = c.post("/", json=bundle)
        assert r.status_code == 200, r.text
        entries = r.json()["entry"]
        statuses = [e["response"]["status"].split()[0] for e in entries]
        assert statuses == ["200", "404", "200", "403", "404"]
        assert ids(entries[2]["resource"]) == set()
        assert entries[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"


# -- user/ and system/ scopes ----------------------------------------------------------------------


def test_system_read_scope_reads_everything_and_writes_nothing(env):
    with env.client("system/*.rs") as c:
        assert c.get("/Observation/b-lab").status_code == 200
        assert ids(c.get("/Observation").json()) >= {"a-lab", "a-vital", "b-lab", "b-vital"}
        assert c.get("/Binary/bin-b").status_code == 200
        assert_outcome(c.post("/Observation", json=obs("x", "pa", "laboratory")), 403)
        assert_outcome(c.delete("/Observation/a-lab"), 403)
        assert_outcome(c.put("/Observation/a-lab", json=obs("a-lab", "pa", "laboratory")), 403)


def test_user_cruds_scope_works(env):
    with env.client("user/*.cruds") as c:
        r = c.post("/Observation", json=obs("x", "pb", "laboratory"))
        assert r.status_code == 201
        new = r.json()["id"]
        assert c.get(f"/Observation/{new}").status_code == 200
        assert c.delete(f"/Observation/{new}").status_code == 204
        assert ids(c.get("/Patient").json()) >= {"pa", "pb"}
