"""Several worker processes on one embedded store: versions stay consistent across processes."""

from __future__ import annotations

import subprocess
import sys
import time
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


def test_two_worker_processes_write_one_unbroken_audit_chain(tmp_path):
    """Both processes append AuditEvents (writes in their units of work, reads in batches): each
    append reads the chain's head under the database's write lock, so the trail stays one chain."""
    database = tmp_path / "audited.db"
    server = ServerProcess(database, extra_args=["--workers", "2"]).start()
    try:
        def traffic(n: int) -> None:
            with httpx.Client(base_url=server.base, timeout=30.0) as c:  # own connection: any worker
                created = c.post("/Patient", json={"resourceType": "Patient", "gender": "female"}, headers=FHIR_JSON)
                assert created.status_code == 201
                for _ in range(5):
                    assert c.get(f"/Patient/{created.json()['id']}").status_code == 200

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(traffic, range(40)))
        time.sleep(1.0)  # the reads' batches are committed every 0.25 s
    finally:
        server.stop()  # each worker commits what it still holds
    verified = subprocess.run([sys.executable, "-m", "fhir_server", "audit", "verify", "--database",
                               f"sqlite:///{database}"], capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    events = int(verified.stdout.split("audit trail: ")[1].split(" events")[0])
    assert events >= 40 * 6  # a create and five reads each, from both processes
