"""Bulk Data export speed: resources/s and kick-off-to-manifest time of a system-level `$export`.

1. generates (bench/generate.py, seeded) N Synthea-like resources as NDJSON under --data-dir
   (reused when present), loads them into a fresh SQLite store through the Store API
   (bench/search_bench.py's loader: real indexer, synchronous=FULL); --reuse keeps a loaded db;
2. starts the real server (`python -m fhir_server serve --no-auth`) on 127.0.0.1;
3. kicks off `GET /$export` (Prefer: respond-async), polls the status URL every 0.2 s (the
   server's Retry-After is set to 0 for the run) until the manifest, and checks the manifest's
   counts add up to N plus the implementation guide's resources; then downloads every file and
   counts lines;
4. prints resources/s (exported resources / kick-off-to-manifest seconds) and the download rate.

    .venv/bin/python bench/export_bench.py --resources 100000 [--reuse] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import generate  # noqa: E402
from bench_support import Server, free_port  # noqa: E402
from search_bench import _load  # noqa: E402

DEFAULT_DIR = Path("/tmp/fhir-export-bench")


def _get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resources", type=int, default=1_000_000)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--reuse", action="store_true", help="reuse the loaded database when it exists")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    args.data_dir.mkdir(parents=True, exist_ok=True)
    data = args.data_dir / f"data-{args.resources}.ndjson"
    db = args.data_dir / f"export-{args.resources}.db"
    if not (data.with_name(data.name + ".summary.json")).exists():
        print(f"generating {args.resources:,} resources ...", file=sys.stderr)
        generate.write_dataset(args.resources, data)
    load = None
    if not (args.reuse and db.exists()):
        for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            p.unlink(missing_ok=True)
        print(f"loading into {db} ...", file=sys.stderr)
        load = asyncio.run(_load(data, db, args.batch, args.resources))
        print(f"  loaded {load['resources']:,} in {load['seconds']} s", file=sys.stderr)
    exports = Path(str(db) + ".exports")
    port = free_port()
    env_prefix = {"FHIR_EXPORT_RETRY_AFTER": "0", "FHIR_EXPORT_LEASE_SECONDS": "3600"}
    os.environ.update(env_prefix)
    server = Server([sys.executable, "-m", "fhir_server", "serve", "--no-auth", "--host", "127.0.0.1",
                     "--port", str(port), "--database", f"sqlite:///{db}"], port, args.data_dir / "server.log")
    try:
        server.wait_ready(120)
        t0 = time.perf_counter()
        status, headers, body = _get(port, "/$export", {"Prefer": "respond-async", "Accept": "application/fhir+json"})
        assert status == 202, body
        status_path = urlsplit(headers["content-location"]).path
        polls = 0
        while True:
            status, headers, body = _get(port, status_path, {"Accept": "application/json"})
            polls += 1
            if status == 200:
                break
            assert status in (202, 429), (status, body)
            time.sleep(0.2)
        elapsed = time.perf_counter() - t0
        manifest = json.loads(body)
        exported = sum(o["count"] for o in manifest["output"])
        t1 = time.perf_counter()
        downloaded = nbytes = 0
        for o in manifest["output"]:
            s, _, content = _get(port, urlsplit(o["url"]).path, {"Accept": "application/fhir+ndjson"})
            assert s == 200
            lines = content.count(b"\n")
            assert lines == o["count"], (o, lines)
            downloaded += lines
            nbytes += len(content)
        download_s = time.perf_counter() - t1
    finally:
        server.stop()
    result = {
        "resources_in_store": args.resources, "exported": exported, "files": len(manifest["output"]),
        "kickoff_to_manifest_s": round(elapsed, 2), "resources_per_s": round(exported / elapsed),
        "download_s": round(download_s, 2), "download_mb": round(nbytes / 1e6, 1), "polls": polls,
        "load": load, "exports_dir": str(exports),
    }
    print(json.dumps(result, indent=2))
    assert exported >= args.resources, "some resources were not exported"
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
