"""What the audit trail costs, and how long a read's AuditEvent takes to become durable.

1. Throughput, side by side in one run: bench/rest_throughput.py's server phases (Patient creates,
   then reads by id, over HTTP with keep-alive connections) with the audit trail on (the default)
   and off (FHIR_AUDIT=off, a switch that exists for this measurement), each on a fresh database.
   With --encryption-key-file the same pair runs again with the store and blobs encrypted.
2. The durability window of reads: one read at a time, the time from its response to the moment
   its AuditEvent is committed, seen by another connection to the database (the trail commits
   reads' events in batches every FHIR_AUDIT_FLUSH_SECONDS, 0.25 s by default). A crash loses at
   most the events of that window.

Run from the project root:
    .venv/bin/python bench/audit_bench.py [--patients 3000] [--reads 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def throughput(patients: int, concurrency: int, env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "result.json"
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "rest_throughput.py"), "--targets", "server", "--patients",
             str(patients), "--concurrency", str(concurrency), "--json", str(out), "--db-dir", scratch],
            cwd=ROOT, env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def _phase(result: dict, name: str) -> dict:
    for phase in result.get("phases", result.get("results", [])):
        if phase.get("phase") == name or phase.get("name") == name:
            return phase
    raise KeyError(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def durability_window(reads: int) -> list[float]:
    """Seconds from each read's response to its AuditEvent being committed."""
    with tempfile.TemporaryDirectory() as scratch:
        database = Path(scratch) / "fhir.db"
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "fhir_server", "serve", "--no-auth", "--port", str(port),
             "--database", f"sqlite:///{database}", "--log-level", "warning"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=10) as client:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        client.get("/metadata")
                        break
                    except httpx.HTTPError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
                patient = client.post("/Patient", json={"resourceType": "Patient", "active": True}).json()["id"]
                watcher = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
                delays = []
                for _ in range(reads):
                    request_id = f"bench-{uuid.uuid4()}"
                    client.get(f"/Patient/{patient}", headers={"X-Request-Id": request_id})
                    answered = time.monotonic()
                    needle = f'%"value":"{request_id}"%'
                    while not watcher.execute(
                            "SELECT 1 FROM resource_versions WHERE type = 'AuditEvent' AND seq > "
                            "(SELECT coalesce(max(seq), 0) - 50 FROM resource_versions) AND CAST(body AS TEXT) LIKE ?",
                            (needle,)).fetchone():
                        time.sleep(0.002)
                    delays.append(time.monotonic() - answered)
                watcher.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    return delays


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--reads", type=int, default=200, help="reads for the durability window")
    parser.add_argument("--encryption-key-file", default=None, help="also measure with data at rest encrypted")
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()

    configurations = [("audit on", {"FHIR_AUDIT": "on"}), ("audit off", {"FHIR_AUDIT": "off"})]
    if args.encryption_key_file:
        key = {"FHIR_ENCRYPTION_KEY_FILE": args.encryption_key_file}
        configurations += [("audit on, encrypted", {"FHIR_AUDIT": "on", **key}),
                           ("audit off, encrypted", {"FHIR_AUDIT": "off", **key})]
    rows = []
    for name, env in configurations:
        result = throughput(args.patients, args.concurrency, env)
        create, read = _phase(result, "server create"), _phase(result, "server read")
        rows.append({"configuration": name, "creates_per_s": create["rps"], "reads_per_s": read["rps"],
                     "create_p50_ms": create.get("p50_ms"), "read_p50_ms": read.get("p50_ms")})
    baseline = rows[1]
    print(f"{'configuration':<24}{'creates/s':>11}{'vs off':>8}{'reads/s':>10}{'vs off':>8}")
    for row in rows:
        print(f"{row['configuration']:<24}{row['creates_per_s']:>11.1f}{row['creates_per_s'] / baseline['creates_per_s']:>8.2f}"
              f"{row['reads_per_s']:>10.1f}{row['reads_per_s'] / baseline['reads_per_s']:>8.2f}")
    delays = durability_window(args.reads)
    q = statistics.quantiles(delays, n=100)
    window = {"p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "max_ms": max(delays) * 1000}
    print(f"read -> AuditEvent committed ({args.reads} reads): p50 {window['p50_ms']:.0f} ms, "
          f"p99 {window['p99_ms']:.0f} ms, max {window['max_ms']:.0f} ms")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"throughput": rows, "durability_window": window}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
