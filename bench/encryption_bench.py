"""Cost of encryption at rest: the real server with and without --encryption-key-file, side by side.

For each configuration (alternated, --rounds times, on fresh databases): Patient creates and reads
by id over HTTP with rest_throughput.py's client (32 keep-alive connections), then video uploads
(POST /Binary, raw video/mp4, stored as is) and downloads (GET /Binary/{id}) over one connection,
in MB/s. Prints each run, the median per configuration, and on/off ratios.

Run from the project root:
    .venv/bin/python bench/encryption_bench.py [--patients 3000] [--videos 8] [--video-mb 20] [--rounds 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rest_throughput as rt  # noqa: E402  (bench/rest_throughput.py: its client and patient generator)
from bench_support import Server, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def video(size: int) -> bytes:
    ftyp = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    payload = os.urandom(size - len(ftyp) - 8)
    return ftyp + (len(payload) + 8).to_bytes(4, "big") + b"mdat" + payload


def blob_phase(port: int, data: bytes, count: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    ids = []
    started = time.perf_counter()
    for _ in range(count):
        conn.request("POST", "/Binary", body=data, headers={"Content-Type": "video/mp4"})
        r = conn.getresponse()
        body = r.read()
        assert r.status == 201, body[:300]
        ids.append(json.loads(body)["id"])
    upload = time.perf_counter() - started
    started = time.perf_counter()
    for id in ids:
        conn.request("GET", f"/Binary/{id}", headers={"Accept": "video/mp4"})
        r = conn.getresponse()
        got = r.read()
        assert r.status == 200 and len(got) == len(data)
    download = time.perf_counter() - started
    conn.close()
    mb = len(data) * count / 1e6
    return {"upload_MBps": round(mb / upload, 1), "download_MBps": round(mb / download, 1)}


def one_run(encrypted: bool, args: argparse.Namespace, bodies: list[bytes], blob: bytes, tmp: Path) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="enc-" if encrypted else "clear-", dir=tmp))
    extra: list[str] = []
    if encrypted:
        key_file = folder / "keys.json"
        subprocess.run([sys.executable, "-m", "fhir_server", "keys", "generate", str(key_file)], cwd=ROOT, check=True,
                       capture_output=True)
        extra = ["--encryption-key-file", str(key_file)]
    port = free_port()
    server = Server([sys.executable, "-m", "fhir_server", "serve", "--no-auth", "--host", "127.0.0.1", "--port",
                     str(port), "--database", f"sqlite:///{folder / 'fhir.db'}", "--log-level", "warning", *extra],
                    port, folder / "server.log")
    try:
        server.wait_ready()
        pid = server.proc.pid
        warm = 200

        def phase(name: str, kind: str, check: bool = False) -> rt.Phase:
            return rt.Phase(name, port, kind, "raw", args.concurrency, check)

        warm_ids = rt.run_phase(phase("warm-up create", "create"), bodies[:warm], 1, pid)["ids"]
        rt.run_phase(phase("warm-up read", "read"), warm_ids, 1, pid)
        created = rt.run_phase(phase("create", "create"), bodies[warm:], 1, pid)
        ids = created.pop("ids")
        random.Random(1).shuffle(ids)
        read = rt.run_phase(phase("read", "read", check=True), ids * args.read_repeat, 1, pid)
        read.pop("ids")
        blobs = blob_phase(port, blob, args.videos)
        return {"encrypted": encrypted, "creates_per_s": created["rps"], "reads_per_s": read["rps"],
                # the server's CPU time per request: less swayed than req/s by other load on the machine
                "create_cpu_ms": round(10 * created["server_cpu_pct"] / created["rps"], 3),
                "read_cpu_ms": round(10 * read["server_cpu_pct"] / read["rps"], 3),
                "create_p50_ms": created["p50_ms"], "read_p50_ms": read["p50_ms"],
                "errors": created["errors"] + read["errors"], **blobs}
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--read-repeat", type=int, default=3, help="each created Patient is read this many times")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--video-mb", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=4, help="off/on pairs (the order alternates)")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    bodies, _ = rt.make_patients(args.patients + 200, 1)
    blob = video(int(args.video_mb * 1e6))
    tmp = Path(tempfile.mkdtemp(prefix="fhir-encbench-"))
    runs = []
    try:
        for round_ in range(args.rounds):
            # off-on, then on-off: what running second costs (the last run's files just deleted,
            # the disk's write-back) falls on both configurations alike
            for encrypted in ((False, True) if round_ % 2 == 0 else (True, False)):
                run = one_run(encrypted, args, bodies, blob, tmp)
                print(run, flush=True)
                runs.append(run)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    keys = ["creates_per_s", "reads_per_s", "create_cpu_ms", "read_cpu_ms", "upload_MBps", "download_MBps"]
    median = {state: {k: statistics.median(r[k] for r in runs if r["encrypted"] == state) for k in keys}
              for state in (False, True)}
    ratios = {k: round(median[True][k] / median[False][k], 3) for k in keys}
    print(f"\n{'':16}{'off':>12}{'on':>12}{'on/off':>9}")
    for k in keys:
        print(f"{k:16}{median[False][k]:>12.3f}{median[True][k]:>12.3f}{ratios[k]:>9.3f}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"runs": runs, "median": {"off": median[False], "on": median[True]},
                                                    "ratios": ratios, "settings": vars(args)}, indent=2))
    return 1 if any(r["errors"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
