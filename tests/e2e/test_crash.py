"""Durability: kill -9 the server while writes are in flight; every acknowledged write survives."""

from __future__ import annotations

import threading
import time

import httpx

from tests.support import FHIR_JSON, ServerProcess

WRITERS = 8


def _writer(base: str, n: int, stop: threading.Event, acked: list[dict]) -> None:
    """Create a patient, then keep updating it; record each 2xx body (an acknowledged write)."""
    with httpx.Client(base_url=base, timeout=10.0) as client:
        current: dict | None = None
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if current is None:
                    r = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": f"W{n}"}]},
                                    headers=FHIR_JSON)
                else:
                    r = client.put(f"/Patient/{current['id']}",
                                   json={**current, "birthDate": f"19{i % 100:02d}-01-01"}, headers=FHIR_JSON)
            except httpx.TransportError:
                return  # the server died mid-request: this write was never acknowledged
            if r.status_code in (200, 201):
                current = r.json()
                acked.append(current)


def test_acknowledged_writes_survive_sigkill(tmp_path):
    db = tmp_path / "crash.db"
    server = ServerProcess(db).start()
    acked: list[dict] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_writer, args=(server.base, n, stop, acked)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    server.kill()  # while the writers are still sending
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) > 50, "too few writes were acknowledged to test anything"

    restarted = ServerProcess(db).start()
    try:
        with httpx.Client(base_url=restarted.base, timeout=30.0) as client:
            latest: dict[str, dict] = {}
            for body in acked:
                if int(body["meta"]["versionId"]) >= int(latest.get(body["id"], {"meta": {"versionId": "0"}})["meta"]["versionId"]):
                    latest[body["id"]] = body
                # every acknowledged version is still readable, byte for byte the same resource
                r = client.get(f"/Patient/{body['id']}/_history/{body['meta']['versionId']}")
                assert r.status_code == 200 and r.json() == body
            for id, body in latest.items():
                current = client.get(f"/Patient/{id}").json()
                assert int(current["meta"]["versionId"]) >= int(body["meta"]["versionId"])
            # no torn rows: every stored version parses and is whole
            url = "/Patient/_history?_count=1000"  # (the system history also holds the seeded guide)
            while url:
                page = client.get(url)
                assert page.status_code == 200
                bundle = page.json()
                for entry in bundle.get("entry", []):
                    assert entry["resource"]["resourceType"] == "Patient"
                url = next((l["url"] for l in bundle["link"] if l["relation"] == "next"), None)
    finally:
        restarted.stop()
