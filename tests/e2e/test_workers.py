"""Several worker processes on one embedded store: versions stay consistent across processes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support import FHIR_JSON, ServerProcess


def test_concurrent_if_match_updates_across_workers_have_one_winner(tmp_path):
    server = ServerProcess(tmp_path / "workers.db", extra_args=["--workers", "2"]).start()
    try:
        with httpx.Client(base_url=server.base, timeout=30.0) as client:
            client.put("/Patient/shared", json={"resourceType": "Patient", "id": "shared"}, headers=FHIR_JSON)

            def attempt(n: int) -> int:
                with httpx.Client(base_url=server.base, timeout=30.0) as c:  # own connection: any worker
                    body = {"resourceType": "Patient", "id": "shared", "birthDate": f"19{n:02d}-01-01"}
                    return c.put("/Patient/shared", json=body, headers={**FHIR_JSON, "If-Match": 'W/"1"'}).status_code

            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(attempt, range(24)))
            assert statuses.count(200) == 1
            assert statuses.count(412) == 23
            history = client.get("/Patient/shared/_history").json()
            assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    finally:
        server.stop()
