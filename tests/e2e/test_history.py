"""History at instance, type and system level: order, _since, _count and paging links."""

from __future__ import annotations

import time
import uuid

from tests.support import FHIR_JSON


def _put(client, resource_type: str, id: str, **fields) -> dict:
    r = client.put(f"/{resource_type}/{id}", json={"resourceType": resource_type, "id": id, **fields}, headers=FHIR_JSON)
    assert r.status_code in (200, 201), r.text
    return r.json()


def test_instance_history_lists_versions_newest_first(client, server):
    id = f"h-{uuid.uuid4().hex[:8]}"
    for active in (True, False, True):
        _put(client, "Patient", id, active=active)
    bundle = client.get(f"/Patient/{id}/_history").json()
    assert bundle["type"] == "history"
    assert bundle["total"] == 3
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["3", "2", "1"]
    assert bundle["entry"][0]["fullUrl"] == f"{server.base}/Patient/{id}"
    assert [e["response"]["status"] for e in bundle["entry"]] == ["200 OK", "200 OK", "201 Created"]


def test_history_paging_follows_next_links_until_done(client):
    id = f"h-{uuid.uuid4().hex[:8]}"
    for n in range(7):
        _put(client, "Patient", id, birthDate=f"200{n}-01-01")
    seen: list[str] = []
    url = f"/Patient/{id}/_history?_count=3"
    pages = 0
    while url:
        bundle = client.get(url).json()
        pages += 1
        seen += [e["resource"]["meta"]["versionId"] for e in bundle["entry"]]
        url = next((l["url"] for l in bundle["link"] if l["relation"] == "next"), None)
    assert pages == 3
    assert seen == ["7", "6", "5", "4", "3", "2", "1"]


def test_history_paging_is_stable_while_data_changes(client):
    id = f"h-{uuid.uuid4().hex[:8]}"
    for n in range(4):
        _put(client, "Patient", id, birthDate=f"200{n}-01-01")
    first = client.get(f"/Patient/{id}/_history?_count=2").json()
    next_url = next(l["url"] for l in first["link"] if l["relation"] == "next")
    _put(client, "Patient", id, birthDate="2010-01-01")  # a new version arrives between pages
    second = client.get(next_url).json()
    assert [e["resource"]["meta"]["versionId"] for e in second["entry"]] == ["2", "1"]


def test_type_history_has_only_that_type(client):
    tag = uuid.uuid4().hex[:8]
    _put(client, "Practitioner", f"pr-{tag}", active=True)
    _put(client, "Organization", f"org-{tag}", active=True, name="Clinic")  # org-1: a name or an identifier
    bundle = client.get("/Practitioner/_history?_count=1000").json()
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"Practitioner"}


def test_history_since_excludes_older_versions(client):
    id = f"h-{uuid.uuid4().hex[:8]}"
    _put(client, "Patient", id, active=True)
    time.sleep(0.05)
    second = _put(client, "Patient", id, active=False)
    since = second["meta"]["lastUpdated"]
    bundle = client.get(f"/Patient/{id}/_history", params={"_since": since}).json()
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["2"]


def test_system_history_spans_types(client):
    tag = uuid.uuid4().hex[:8]
    _put(client, "Location", f"loc-{tag}", name="Room")
    _put(client, "Device", f"dev-{tag}", status="active")
    bundle = client.get("/_history?_count=2").json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == [f"dev-{tag}", f"loc-{tag}"]


def test_history_with_malformed_since_is_400(client):
    r = client.get("/Patient/_history", params={"_since": "yesterday"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["_since"]
