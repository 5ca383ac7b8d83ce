"""REST throughput of the FHIR server (Patient create and read) against a bare-ASGI ceiling.

Starts the real server (`python -m fhir_server serve`) on a free 127.0.0.1 port with a fresh SQLite
file, creates ~10,000 distinct Patients over HTTP with N concurrent keep-alive connections, reads them
back in random order, then runs the same load against bench/bare_asgi.py (same uvicorn config, no
framework, fixed body of the same size) and prints requests/s, latency percentiles, errors and CPU.

Client: a minimal asyncio HTTP/1.1 keep-alive client (asyncio.Protocol on uvloop, requests prebuilt
as bytes, only status + Content-Length parsed), in --client-procs processes (default 1) whose
latencies are merged. Why: the machine has 2 cores and the client competes with the server for
them, so client CPU per request lowers the measured ceiling. Measured here against the bare endpoint
(GET, 32 connections, one client process): httpx.AsyncClient 0.28 ~300-600 req/s at 100% client CPU
(1 connection: ~600 req/s, ~1,200 with sniffio installed, which this venv lacks, so httpcore retries a
failed `import sniffio` several times per request); aiohttp 3.14 ~10,500 req/s at 100% client CPU; this client
~21,000-34,000 req/s at ~60% client CPU while the bare server sits at 100% of its one core, so here
the server, not the client, sets the ceiling. Two client processes measured slower (three busy
processes on two cores), hence the default of one. `--client httpx` is kept to show the difference.
The table's "client CPU" column is the check on every run: client CPU time over wall time; near 100%
per client process means the client is the bottleneck.

With --auth the server runs with authorization on (no --no-auth): every request carries one
access token minted before the clock starts (straight from the server's record store, as the
SMART tests do), so the numbers include the resource server's token check (a verified token's
Principal is cached, so after the first request that is a dictionary lookup plus the expiry and
revocation checks) and the access decision for --token-scope. Two more phases then read one
Patient N times: with that token, and with a patient/*.rs token for that Patient (the
patient-compartment check on the read path).

Run from the project root:
    .venv/bin/python bench/rest_throughput.py [--patients 10000] [--concurrency 32] [--json out.json]
    .venv/bin/python bench/rest_throughput.py --auth [--token-scope "system/*.cruds"]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench_support import Server, free_port, reshape  # bench/bench_support.py

ROOT = Path(__file__).resolve().parent.parent
SYNTHEA = ROOT.parent / "shared" / "data" / "synthea-10-patients" / "Patient.000.ndjson"
PHASE_TIMEOUT_S = 120.0  # any phase still running after this is cut short and its rest counted as errors


# -- test data -------------------------------------------------------------------------------


def _shift(value: str, days: int) -> str:
    """Shift a FHIR date or dateTime by whole days, keeping its precision and offset."""
    if len(value) == 10:
        return (dt.date.fromisoformat(value) + dt.timedelta(days=days)).isoformat()
    return (dt.datetime.fromisoformat(value) + dt.timedelta(days=days)).isoformat()


def _vary(
    template: dict[str, Any], i: int, rnd: random.Random, givens: list[str], families: list[str]
) -> dict[str, Any]:
    p = {k: v for k, v in template.items() if k not in ("id", "meta")}  # the server assigns both
    p = dict(orjson.loads(orjson.dumps(p)))  # deep copy
    family = f"{rnd.choice(families)}{i}"
    for name in p.get("name", []):
        name["family"] = family
        name["given"] = [rnd.choice(givens) for _ in name.get("given", [])] or [rnd.choice(givens)]
    for ident in p.get("identifier", []):
        if "value" in ident:
            ident["value"] = str(uuid.UUID(int=rnd.getrandbits(128), version=4)) if len(ident["value"]) == 36 \
                else reshape(ident["value"], rnd)
    for telecom in p.get("telecom", []):
        if "value" in telecom:
            telecom["value"] = reshape(telecom["value"], rnd)
    days = rnd.randint(-20 * 365, 20 * 365)  # same shift for birth and death keeps them in order
    if "birthDate" in p:
        p["birthDate"] = _shift(p["birthDate"], days)
    if "deceasedDateTime" in p:
        p["deceasedDateTime"] = _shift(p["deceasedDateTime"], days)
    for address in p.get("address", []):
        address["line"] = [reshape(line, rnd) for line in address.get("line", [])]
    return p


def _synthetic_template(rnd: random.Random) -> dict[str, Any]:
    """Used only where /work/shared is absent: a US-Core-like Patient (~1.2 KB; Synthea's are ~3.2 KB)."""
    return {
        "resourceType": "Patient",
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Synthetic patient</div>'},
        "extension": [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex", "valueCode": "F"}],
        "identifier": [
            {"system": "https://github.com/synthetichealth/synthea", "value": str(uuid.uuid4())},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS"}]},
             "system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-12-3456"},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "DL"}]},
             "system": "urn:oid:2.16.840.1.113883.4.3.25", "value": "S99912345"},
        ],
        "name": [{"use": "official", "family": "Doe", "given": ["Jane", "Ann"], "prefix": ["Mrs."]}],
        "telecom": [{"system": "phone", "value": "555-123-4567", "use": "home"}],
        "gender": rnd.choice(["female", "male"]),
        "birthDate": "1970-01-01",
        "address": [{"line": ["123 Main St"], "city": "Springfield", "state": "MA", "postalCode": "01101",
                     "country": "US"}],
        "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                                      "code": "M", "display": "Married"}]},
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US"}]}}],
    }


def make_patients(n: int, seed: int) -> tuple[list[bytes], str]:
    """n distinct Patient JSON bodies and where their templates came from."""
    rnd = random.Random(seed)
    if SYNTHEA.exists():
        templates = [orjson.loads(line) for line in SYNTHEA.read_bytes().splitlines() if line.strip()]
        source = str(SYNTHEA)
    else:
        templates = [_synthetic_template(rnd)]
        source = "synthetic generator (no /work/shared)"
    # Synthea appends digits to names ("Harold594"): pool the bare names, then number the families.
    names = [nm for t in templates for nm in t.get("name", [])]
    givens = sorted({g.rstrip("0123456789") for nm in names for g in nm.get("given", [])}) or ["Jane"]
    families = sorted({nm.get("family", "X").rstrip("0123456789") for nm in names}) or ["Doe"]
    return [orjson.dumps(_vary(templates[i % len(templates)], i, rnd, givens, families)) for i in range(n)], source


def stored_form(body: bytes) -> bytes:
    """What the server stores for a body (resourceType, id, meta first): the bare endpoint's answer."""
    resource = orjson.loads(body)
    out = {"resourceType": resource["resourceType"], "id": str(uuid.uuid4()),
           "meta": {"versionId": "1", "lastUpdated": "2025-11-25T14:54:00.000Z"}}
    out.update({k: v for k, v in resource.items() if k not in out})
    return orjson.dumps(out)


# -- the client ------------------------------------------------------------------------------


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time (no pipelining).

    Parses only what the benchmark needs: the status code and a Content-Length body. Anything else
    (chunked encoding, a closed connection) raises, and the caller counts an error and reconnects.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.need = -1  # bytes of buffer that hold the whole response, once the head is parsed
        self.head_end = 0
        self.status = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed by server"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            try:
                self.status = int(head[9:12])
                i = head.find(b"\r\ncontent-length:")
                if i < 0 and self.status not in (204, 304):
                    raise ValueError("response without Content-Length")
                j = head.find(b"\r\n", i + 2)
                length = 0 if i < 0 else int(head[i + 17: j if j >= 0 else len(head)])
            except ValueError as err:
                return self._fail(err)
            self.head_end = end + 4
            self.need = self.head_end + length
        if len(self.buf) >= self.need:
            body = bytes(self.buf[self.head_end:self.need])
            del self.buf[:self.need]
            self.need = -1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result((self.status, body))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        assert self.transport is not None
        self.transport.close()

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(raw)
        return await self.waiter


@dataclass
class Phase:
    name: str
    port: int
    kind: str  # "create" (POST /Patient, items are bodies) or "read" (GET /Patient/id, items are ids)
    client: str  # "raw" or "httpx"
    connections: int
    check_ids: bool = False  # for reads of the real server: the body must carry the id asked for
    token: str | None = None  # with --auth: sent as `Authorization: Bearer <token>` on every request


@dataclass
class WorkerResult:
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    errors: Counter[str] = field(default_factory=Counter)
    ids: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    start: float = 0.0
    end: float = 0.0


def _raw_requests(phase: Phase, items: list[Any]) -> list[bytes]:
    host = f"Host: 127.0.0.1:{phase.port}\r\nAccept: application/fhir+json\r\n"
    if phase.token:
        host += f"Authorization: Bearer {phase.token}\r\n"
    if phase.kind == "create":
        return [(f"POST /Patient HTTP/1.1\r\n{host}Content-Type: application/fhir+json\r\n"
                 f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in items]
    return [f"GET /Patient/{i} HTTP/1.1\r\n{host}\r\n".encode() for i in items]


def _record(phase: Phase, res: WorkerResult, item: Any, status: int, body: bytes, started: int) -> None:
    res.latencies_ns.append(time.perf_counter_ns() - started)
    ok = status == (201 if phase.kind == "create" else 200)
    if ok and phase.kind == "create":
        try:
            res.ids.append(orjson.loads(body)["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            ok = False
    elif ok and phase.check_ids:
        ok = f'"id":"{item}"'.encode() in body
        status = status if ok else -1
    if not ok:
        res.errors[f"HTTP {status}" if status >= 0 else "wrong body"] += 1


async def _run_raw(phase: Phase, items: list[Any], barrier: Any, res: WorkerResult) -> None:
    loop = asyncio.get_running_loop()
    raws = _raw_requests(phase, items)  # built before the clock starts: not part of the client cost

    async def connect() -> _Conn:
        _, proto = await loop.create_connection(_Conn, "127.0.0.1", phase.port)
        return proto

    conns = [await connect() for _ in range(phase.connections)]
    next_item = 0

    async def worker(conn: _Conn) -> None:
        nonlocal next_item
        while next_item < len(items):
            k = next_item
            next_item += 1  # one event loop thread: no lock needed
            started = time.perf_counter_ns()
            try:
                if conn.closed:
                    conn = await connect()
                status, body = await conn.request(raws[k])
            except (OSError, ValueError) as err:
                res.errors[type(err).__name__] += 1
                conn.closed = True
                continue
            _record(phase, res, items[k], status, body, started)

    await _timed(barrier, res, [worker(c) for c in conns], lambda: len(items) - next_item)
    for c in conns:
        if c.transport is not None:
            c.transport.close()


async def _run_httpx(phase: Phase, items: list[Any], barrier: Any, res: WorkerResult) -> None:
    import httpx

    limits = httpx.Limits(max_connections=phase.connections, max_keepalive_connections=phase.connections)
    headers = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
    if phase.token:
        headers["Authorization"] = f"Bearer {phase.token}"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{phase.port}", limits=limits, headers=headers,
                                 timeout=PHASE_TIMEOUT_S) as client:
        # Open the pool's connections before the clock starts, as the raw client does.
        await asyncio.gather(*(client.get("/metadata") for _ in range(phase.connections)))
        next_item = 0

        async def worker() -> None:
            nonlocal next_item
            while next_item < len(items):
                item = items[next_item]
                next_item += 1
                started = time.perf_counter_ns()
                try:
                    r = await (client.post("/Patient", content=item) if phase.kind == "create"
                               else client.get(f"/Patient/{item}"))
                except httpx.HTTPError as err:
                    res.errors[type(err).__name__] += 1
                    continue
                _record(phase, res, item, r.status_code, r.content, started)

        await _timed(barrier, res, [worker() for _ in range(phase.connections)], lambda: len(items) - next_item)


async def _timed(barrier: Any, res: WorkerResult, workers: list[Any], left: Any) -> None:
    """Start with the other client processes, run the workers, record CPU and wall time."""
    barrier.wait(timeout=60)  # blocks the loop, but nothing is in flight yet
    res.start, cpu = time.monotonic(), time.process_time()
    try:
        await asyncio.wait_for(asyncio.gather(*workers), PHASE_TIMEOUT_S)
    except asyncio.TimeoutError:
        res.errors["phase timeout"] += left()
    res.end, res.cpu_s = time.monotonic(), time.process_time() - cpu


def _client_process(phase: Phase, items: list[Any], barrier: Any, out: Any) -> None:
    try:
        import uvloop  # the same loop the server runs on; cheaper per request than asyncio's own

        uvloop.install()
    except ImportError:
        pass
    res = WorkerResult()
    run = _run_raw if phase.client == "raw" else _run_httpx
    # Ctrl-C reaches the whole process group; the parent handles it and terminates us (SIGTERM).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        asyncio.run(run(phase, items, barrier, res))
    except Exception as err:  # report, don't hang the parent
        res.errors[f"client crashed: {type(err).__name__}: {err}"] += 1
        barrier.abort()
    out.put(res)


def run_phase(phase: Phase, items: list[Any], procs: int, server_pid: int) -> dict[str, Any]:
    """Run one phase in `procs` client processes; merge their latencies."""
    ctx = mp.get_context("fork")  # children inherit the items instead of pickling 35 MB
    procs = max(1, min(procs, phase.connections))
    barrier, out = ctx.Barrier(procs + 1), ctx.Queue()
    children = []
    for p in range(procs):
        share = Phase(**{**asdict(phase), "connections": phase.connections // procs + (p < phase.connections % procs)})
        children.append(ctx.Process(target=_client_process, args=(share, items[p::procs], barrier, out), daemon=True))
    for c in children:
        c.start()
    done = False
    try:
        barrier.wait(timeout=60)
        server_cpu0, machine_cpu0 = _cpu_seconds(server_pid), _machine_busy_seconds()
        results: list[WorkerResult] = [out.get(timeout=PHASE_TIMEOUT_S + 60) for _ in children]
        server_cpu = _cpu_seconds(server_pid) - server_cpu0
        machine_cpu = _machine_busy_seconds() - machine_cpu0
        done = True
    finally:
        for c in children:
            c.join(timeout=5 if done else 0)
            if c.is_alive():
                c.terminate()
    wall = max(r.end for r in results) - min(r.start for r in results)
    lat = sorted(x for r in results for x in r.latencies_ns)
    errors = sum((r.errors for r in results), Counter())
    n = len(lat)

    def pct(q: float) -> float:
        return round(lat[min(n - 1, int(q * n))] / 1e6, 2) if n else float("nan")

    return {
        "phase": phase.name, "requests": n, "errors": sum(errors.values()), "error_kinds": dict(errors),
        "wall_s": round(wall, 3), "rps": round(n / wall, 1) if wall > 0 else 0.0,
        "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0),
        "client_cpu_pct": round(100 * sum(r.cpu_s for r in results) / wall, 1) if wall > 0 else 0.0,
        "client_procs": procs, "server_cpu_pct": round(100 * server_cpu / wall, 1) if wall > 0 else 0.0,
        # Busy CPU of the whole machine minus client and server: other work competing for the 2 cores.
        "other_cpu_pct": round(100 * (machine_cpu - server_cpu - sum(r.cpu_s for r in results)) / wall, 1)
        if wall > 0 else 0.0,
        "ids": [i for r in results for i in r.ids],
    }


# -- servers ---------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return float("nan")


def _machine_busy_seconds() -> float:
    """CPU time all cores spent not idle, from the first line of /proc/stat."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    except (OSError, ValueError, IndexError):
        return float("nan")


# -- access tokens (--auth) ------------------------------------------------------------------


def mint_token(database: Path, base: str, scope: str, patient: str | None = None) -> str:
    """An access token from the running server's own record store (same SQLite file, same signing
    key), as an EHR backend or the SMART tests hold one: issuer and audience are the FHIR base."""
    from smart_auth.service import AuthService

    svc = AuthService.from_url(f"sqlite:///{database}")
    svc.open_sync()  # the server created its signing key at start-up; this handle reads it
    try:
        token, _ = svc.tokens.access_token(issuer=base, audience=base, client_id="bench", subject="bench",
                                           scope=scope, grant_id=uuid.uuid4().hex, patient=patient)
    finally:
        svc.store.close()
    return token


def check_token(port: int, token: str, what: str) -> None:
    """One read with the token before anything is timed: the server derives its base URL from the
    Host header (127.0.0.1:<port>, as the raw client sends it), so the token's iss/aud must match."""
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # sends Host: 127.0.0.1:<port>
    try:
        c.request("GET", f"/Patient/{uuid.uuid4()}", headers={"Accept": "application/fhir+json",
                                                             "Authorization": f"Bearer {token}"})
        r = c.getresponse()
        body = r.read()
    finally:
        c.close()
    if r.status != 404:  # 404: the token was accepted and the read allowed; the id does not exist
        raise RuntimeError(f"the {what} token is refused: HTTP {r.status} "
                           f"{r.getheader('WWW-Authenticate') or ''} {body[:300]!r}")


# -- main ------------------------------------------------------------------------------------


def _print_table(rows: list[dict[str, Any]]) -> None:
    cols = [("phase", "phase", "<18"), ("requests", "requests", ">8"), ("errors", "errors", ">6"),
            ("rps", "req/s", ">8"), ("p50_ms", "p50 ms", ">7"), ("p90_ms", "p90 ms", ">7"),
            ("p99_ms", "p99 ms", ">7"), ("max_ms", "max ms", ">7"), ("client_cpu_pct", "client CPU%", ">11"),
            ("server_cpu_pct", "server CPU%", ">11"), ("other_cpu_pct", "other CPU%", ">10")]
    print("  ".join(f"{title:{fmt}}" for _, title, fmt in cols))
    for r in rows:
        print("  ".join(f"{r[key]:{fmt}}" for key, _, fmt in cols))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent keep-alive connections in all")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument("--client-procs", type=int, default=1, help="client processes sharing the connections")
    parser.add_argument("--targets", default="server,bare", help="comma list of: server, bare")
    parser.add_argument("--bare-runs", type=int, default=3, help="repeat each bare phase, keep the median")
    parser.add_argument("--db-dir", default=None, help="where the SQLite file goes (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    parser.add_argument("--auth", action="store_true",
                        help="run the server with authorization on; every request carries a bearer token")
    parser.add_argument("--token-scope", default="system/*.cruds", help="with --auth: the token's scope")
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]

    # SIGTERM/SIGHUP end us like Ctrl-C does, so the finally below stops the servers.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))
    warm = min(500, max(50, args.patients // 20))  # first requests pay imports and caches: not measured
    bodies, source = make_patients(args.patients + warm, args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="fhir-bench-", dir=args.db_dir))
    settings = {
        "patients": args.patients, "warmup_requests": warm, "concurrency": args.concurrency, "client": args.client,
        "client_procs": args.client_procs, "bare_runs": args.bare_runs, "patient_source": source,
        "mean_body_bytes": round(sum(map(len, bodies)) / len(bodies)), "database": str(tmp / "fhir.db"),
        "sqlite_synchronous": os.environ.get("FHIR_SQLITE_SYNCHRONOUS", "FULL (server default)"),
        "auth": args.auth, "token_scope": args.token_scope if args.auth else None,
    }
    machine = {"nproc": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    print(f"machine: {machine}\nsettings: {settings}", flush=True)

    def phase(name: str, port: int, kind: str, check: bool = False, token: str | None = None) -> Phase:
        return Phase(name, port, kind, args.client, args.concurrency, check, token)

    rows: list[dict[str, Any]] = []
    ids: list[str] = []
    server: Server | None = None
    try:
        if "server" in targets:
            port = free_port()
            database = tmp / "fhir.db"
            server = Server([sys.executable, "-m", "fhir_server", "serve", *([] if args.auth else ["--no-auth"]),
                             "--host", "127.0.0.1", "--port", str(port), "--database", f"sqlite:///{database}",
                             "--log-level", "warning"], port, tmp / "server.log")
            server.wait_ready()
            pid = server.proc.pid
            base = f"http://127.0.0.1:{port}"  # what the server derives from the Host header we send
            token = None
            if args.auth:
                token = mint_token(database, base, args.token_scope)
                check_token(port, token, args.token_scope)
            warm_ids = run_phase(phase("warm-up create", port, "create", token=token), bodies[:warm], 1, pid)["ids"]
            run_phase(phase("warm-up read", port, "read", token=token), warm_ids, 1, pid)
            created = run_phase(phase("server create", port, "create", token=token), bodies[warm:],
                                args.client_procs, pid)
            ids = created.pop("ids")
            random.Random(args.seed).shuffle(ids)
            read = run_phase(phase("server read", port, "read", check=True, token=token), ids, args.client_procs, pid)
            read.pop("ids")
            rows += [created, read]
            if args.auth and ids:
                # The same Patient read N times: first with the --token-scope token (the control),
                # then with a patient/*.rs token for that Patient, which makes every read parse the
                # stored body and check it is in the patient's compartment (smart_auth/access.py).
                one = ids[0]
                patient_token = mint_token(database, base, "patient/*.rs", patient=one)
                check_token(port, patient_token, "patient/*.rs")
                for name, tok in (("one-patient read", token), ("patient-token read", patient_token)):
                    row = run_phase(phase(name, port, "read", check=True, token=tok), [one] * len(ids),
                                    args.client_procs, pid)
                    row.pop("ids")
                    rows.append(row)
            server.stop()
            log = server.log_path.read_text(errors="replace")
            if "ERROR" in log or "Traceback" in log:
                print(f"server log has errors:\n{server.log_tail()}", file=sys.stderr)
            server = None
        if "bare" in targets:
            body_file = tmp / "stored-patient.json"
            body_file.write_bytes(stored_form(sorted(bodies, key=len)[len(bodies) // 2]))  # the median size
            port = free_port()
            server = Server([sys.executable, str(ROOT / "bench" / "bare_asgi.py"), "--port", str(port),
                             "--body-file", str(body_file)], port, tmp / "bare.log")
            server.wait_ready()
            pid = server.proc.pid
            # No server run: read paths of the same length (uuids), which the bare app ignores anyway.
            ids = ids or [str(uuid.UUID(int=random.Random(args.seed + i).getrandbits(128), version=4))
                          for i in range(args.patients)]
            run_phase(phase("warm-up", port, "read"), ids[:warm], 1, pid)
            for name, kind, items in (("bare POST", "create", bodies[warm:]), ("bare GET", "read", ids)):
                # A bare phase lasts well under a second, so one hiccup of this shared 2-core machine
                # skews it: run it --bare-runs times and keep the median run (all rates go to the JSON).
                runs = sorted((run_phase(phase(name, port, kind), items, args.client_procs, pid)
                               for _ in range(args.bare_runs)), key=lambda r: float(r["rps"]))
                median = runs[len(runs) // 2]
                median.pop("ids")
                median["all_rps"] = [r["rps"] for r in runs]
                rows.append(median)
            server.stop()
            server = None
    finally:
        if server is not None:
            server.stop()
        if args.db_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    _print_table(rows)
    by = {r["phase"]: r for r in rows}
    ratios = {}
    for ours, bare, label in (("server create", "bare POST", "create"), ("server read", "bare GET", "read")):
        if ours in by and bare in by and by[bare]["rps"]:
            ratios[label] = round(by[ours]["rps"] / by[bare]["rps"], 3)
    if ratios:
        print("\nserver/bare req/s: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    if "one-patient read" in by and "patient-token read" in by and by["one-patient read"]["rps"]:
        ratios["patient_token"] = round(by["patient-token read"]["rps"] / by["one-patient read"]["rps"], 3)
        print(f"patient-token/one-patient read req/s: {ratios['patient_token']:.3f} "
              f"(the patient-compartment check on each read, with the same Patient and connections)")
    for r in rows:
        if r["error_kinds"]:
            print(f"errors in {r['phase']}: {r['error_kinds']}")
    print(f"CPU% is of one core (this machine has {machine['nproc']}); a client near 100% per process is "
          "the bottleneck; 'other' is the rest of the machine (other programs, or numbers to distrust).")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"machine": machine, "settings": settings, "phases": rows,
                                                    "ratios": ratios}, indent=2))
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the finally blocks have stopped the servers by now
        print("interrupted", file=sys.stderr)
        sys.exit(130)
