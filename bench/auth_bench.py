"""Latency of the authorization server's own endpoints (token, sign-in and consent, refresh,
introspection) and of the resource server's token check, on the real server with authorization on.

Starts `python -m fhir_server serve` (no --no-auth) on a free 127.0.0.1 port with a fresh SQLite
file, registers straight into its record store (as tests/e2e/smart_support.py does) a public app, a
confidential symmetric client (a client secret), an asymmetric backend client (an RS384 and an
ES384 key in an inline JWKS) and a patient user, then times, at each --concurrency:

- GET /auth/smart-style.json: a static JSON answer, i.e. what httpx + uvicorn cost per request;
- client_credentials token requests with RS384 and ES384 assertions (built before the clock);
- the authorization-code flow: authorize -> sign in -> consent page -> consent -> token, per flow
  (and per step); the sign-in verifies an argon2id password hash, timed once more in-process;
- refresh_token with rotation (each thread follows its own chain of refresh tokens);
- introspection of an access token with HTTP Basic (the symmetric client: another argon2 verify),
  and with a bearer token instead (no password hash) for comparison;
- a FHIR read with a token the server has never seen vs the same token again (the resource server
  keeps a verified token's Principal), and the verification alone in-process.

These endpoints are not hot paths; the point is that none of them is slow. The client is httpx
(one httpx.Client per thread, in threads of this process), which costs ~1 ms of CPU per request:
fine here, where the endpoints take milliseconds, and the "client CPU" column shows it.

Run from the project root:
    .venv/bin/python bench/auth_bench.py [--reps 200] [--slow-reps 30] [--concurrency 1,8] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from bench_support import Server, free_port  # bench/bench_support.py

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from smart_auth.passwords import hash_secret, verify_secret  # noqa: E402
from smart_auth.service import AuthService  # noqa: E402
from smart_auth.store import Client, User  # noqa: E402

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: the Location header is read instead
PASSWORD = "correct horse battery staple"
APP, CONFIDENTIAL, BACKEND, USER = "bench-app", "bench-rs", "bench-backend", "bench-patient"
SECRET = "bench-client-secret-" + "x" * 24
APP_SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"
BACKEND_SCOPE = "system/*.rs"
PATIENT_ID = "bench-pat"
FHIR_JSON = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}


# -- the client side of the protocol -----------------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def new_key(alg: str):
    kid = uuid.uuid4().hex
    if alg.startswith("RS"):
        return RSAKey.generate_key(2048, parameters={"kid": kid, "alg": alg})
    return ECKey.generate_key("P-384", parameters={"kid": kid, "alg": alg})


def client_assertion(key, *, client_id: str, token_url: str, alg: str, lifetime: int = 240) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + lifetime, "jti": uuid.uuid4().hex}
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


class Failed(Exception):
    """A request that did not answer as expected (counted as an error of its kind)."""


def expect(r: httpx.Response, status: int, what: str) -> httpx.Response:
    if r.status_code != status:
        raise Failed(f"{what}: HTTP {r.status_code}")
    return r


# -- measuring ----------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return float("nan")


@dataclass
class Row:
    name: str
    concurrency: int
    requests: int = 0  # HTTP requests per item (a flow makes 5)
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    note: str = ""

    def pct(self, q: float) -> float:
        lat = sorted(self.latencies_ms)
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    def summary(self) -> dict[str, Any]:
        n = len(self.latencies_ms)
        done = n * self.requests or 1
        return {
            "name": self.name, "concurrency": self.concurrency, "n": n, "errors": sum(self.errors.values()),
            "error_kinds": self.errors, "per_s": round(n / self.wall_s, 1) if self.wall_s else 0.0,
            "p50_ms": round(self.pct(0.50), 2), "p95_ms": round(self.pct(0.95), 2), "max_ms": round(self.pct(1.0), 2),
            "server_cpu_ms_per_request": round(1000 * self.server_cpu_s / done, 2),
            "client_cpu_ms_per_request": round(1000 * self.client_cpu_s / done, 2),
            "server_cpu_pct": round(100 * self.server_cpu_s / self.wall_s, 1) if self.wall_s else 0.0,
            "requests_per_item": self.requests, "note": self.note,
        }


def measure(name: str, items: list[Any], concurrency: int, fn: Callable[[httpx.Client, Any], Any], *,
            base: str, server_pid: int, requests: int = 1, note: str = "",
            results: list[Any] | None = None) -> Row:
    """Run fn(client, item) for every item in `concurrency` threads, each with its own keep-alive
    httpx.Client; item i goes to thread i % concurrency, in order (so a thread can follow a chain).
    Each call is timed; an exception counts as an error of its kind."""
    row = Row(name, concurrency, requests, note=note)
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)
    clients = [httpx.Client(base_url=base, timeout=60.0) for _ in range(concurrency)]
    for c in clients:  # open the connection before the clock starts
        c.get("/auth/smart-style.json")

    def work(t: int) -> None:
        client, mine = clients[t], items[t::concurrency]
        barrier.wait()
        for item in mine:
            started = time.perf_counter()
            try:
                out = fn(client, item)
            except Exception as err:  # noqa: BLE001 - counted and shown, never hidden
                kind = f"{type(err).__name__}: {err}"[:120]
                with lock:
                    row.errors[kind] = row.errors.get(kind, 0) + 1
                continue
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                row.latencies_ms.append(elapsed)
                if results is not None:
                    results.append(out)

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(concurrency)]
    for th in threads:
        th.start()
    server0, client0 = _cpu_seconds(server_pid), time.process_time()
    barrier.wait()
    start = time.perf_counter()
    for th in threads:
        th.join()
    row.wall_s = time.perf_counter() - start
    row.client_cpu_s, row.server_cpu_s = time.process_time() - client0, _cpu_seconds(server_pid) - server0
    for c in clients:
        c.close()
    return row


def in_process(fn: Callable[[], Any], reps: int) -> dict[str, float]:
    """Median and p95 of one call, in ms."""
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"reps": reps, "p50_ms": round(statistics.median(times), 3),
            "p95_ms": round(times[min(reps - 1, int(0.95 * reps))], 3)}


# -- the benchmark ------------------------------------------------------------------------------


class Bench:
    def __init__(self, base: str, svc: AuthService, server_pid: int, reps: int, slow_reps: int):
        self.base, self.svc, self.pid = base, svc, server_pid
        self.reps, self.slow_reps = reps, slow_reps
        self.token_url = f"{base}/auth/token"
        self.keys = {"RS384": new_key("RS384"), "ES384": new_key("ES384")}
        self.rows: list[Row] = []
        self.steps: dict[int, dict[str, list[float]]] = {}  # concurrency -> step -> latencies
        self.refresh_tokens: list[str] = []
        self.app_access_token = ""
        self.backend_access_token = ""

    def run(self, name: str, items: list[Any], concurrency: int, fn, **kw) -> Row:
        row = measure(name, items, concurrency, fn, base=self.base, server_pid=self.pid, **kw)
        self.rows.append(row)
        s = row.summary()
        print(f"  {name:<34} c={concurrency}  n={s['n']:<4} p50 {s['p50_ms']:>7.2f} ms  "
              f"p95 {s['p95_ms']:>7.2f} ms  {s['per_s']:>7.1f}/s  errors {s['errors']}", flush=True)
        return row

    # setup

    def register(self) -> None:
        records = self.svc.records
        records.put_client(Client(client_id=APP, kind="public", scope=APP_SCOPE, redirect_uris=[REDIRECT]))
        records.put_client(Client(client_id=CONFIDENTIAL, kind="symmetric", scope="system/*.rs",
                                  redirect_uris=[REDIRECT], secret_hash=hash_secret(SECRET)))
        jwks = {"keys": [k.as_dict(private=False) for k in self.keys.values()]}
        records.put_client(Client(client_id=BACKEND, kind="asymmetric", scope=BACKEND_SCOPE, redirect_uris=[],
                                  jwks=jwks))
        records.put_user(User(username=USER, password_hash=hash_secret(PASSWORD), fhir_user=f"Patient/{PATIENT_ID}"))
        patient = {"resourceType": "Patient", "id": PATIENT_ID, "name": [{"family": "Bench", "given": ["Pat"]}],
                   "gender": "female", "birthDate": "1980-01-01"}
        r = httpx.put(f"{self.base}/Patient/{PATIENT_ID}", json=patient,
                      headers={**FHIR_JSON, "Authorization": f"Bearer {self.mint('system/*.cruds')}"})
        if r.status_code not in (200, 201):
            raise RuntimeError(f"could not store the bench Patient: HTTP {r.status_code} {r.text[:300]}")

    def mint(self, scope: str) -> str:
        token, _ = self.svc.tokens.access_token(issuer=self.base, audience=self.base, client_id=BACKEND,
                                                subject=BACKEND, scope=scope, grant_id=uuid.uuid4().hex)
        return token

    # (0) the floor: httpx + uvicorn + Starlette on a static answer

    def floor(self, c: int) -> None:
        def get(client: httpx.Client, _: Any) -> None:
            expect(client.get("/auth/smart-style.json"), 200, "smart-style")

        self.run("GET /auth/smart-style.json (floor)", list(range(self.reps)), c, get,
                 note="static JSON: the cost of httpx, uvicorn and routing alone")

    # (a) client_credentials

    def client_credentials(self, c: int) -> None:
        for alg, key in self.keys.items():
            # Assertions are signed before the clock starts (each jti may be used once).
            forms = [{"grant_type": "client_credentials", "scope": BACKEND_SCOPE,
                      "client_assertion_type": ASSERTION_TYPE,
                      "client_assertion": client_assertion(key, client_id=BACKEND, token_url=self.token_url, alg=alg)}
                     for _ in range(self.reps)]
            out: list[str] = []

            def token(client: httpx.Client, form: dict) -> str:
                return expect(client.post("/auth/token", data=form), 200, "token").json()["access_token"]

            self.run(f"client_credentials ({alg} assertion)", forms, c, token, results=out,
                     note="assertion verified, jti stored, RS256 access token signed")
            if out:
                self.backend_access_token = out[-1]

    # (b) the authorization-code flow

    def code_flow(self, c: int) -> None:
        steps: dict[str, list[float]] = self.steps.setdefault(c, {})
        lock = threading.Lock()

        def timed(step: str, call: Callable[[], httpx.Response]) -> httpx.Response:
            started = time.perf_counter()
            r = call()
            with lock:
                steps.setdefault(step, []).append((time.perf_counter() - started) * 1000)
            return r

        def flow(client: httpx.Client, _: Any) -> dict:
            client.cookies.clear()  # a new browser each time: the flow includes the sign-in
            verifier, challenge = pkce_pair()
            state = secrets.token_urlsafe(8)
            r = expect(timed("authorize", lambda: client.get("/auth/authorize", params={
                "response_type": "code", "client_id": APP, "redirect_uri": REDIRECT, "scope": APP_SCOPE,
                "state": state, "aud": self.base, "code_challenge": challenge, "code_challenge_method": "S256"})),
                303, "authorize")
            request_id = query_of(r.headers["location"])["request"]
            r = expect(timed("sign-in", lambda: client.post("/auth/login", data={
                "username": USER, "password": PASSWORD, "request": request_id})), 303, "sign-in")
            page = expect(timed("consent page", lambda: client.get(r.headers["location"])), 200, "consent page")
            offered = re.findall(r'name="scope" value="([^"]*)"', page.text)
            body = urlencode([("request", request_id), ("decision", "allow"), *[("scope", s) for s in offered]])
            r = expect(timed("consent", lambda: client.post("/auth/consent", content=body, headers={
                "Content-Type": "application/x-www-form-urlencoded"})), 302, "consent")
            answer = query_of(r.headers["location"])
            if answer.get("state") != state or "code" not in answer:
                raise Failed(f"consent answered {answer}")
            r = expect(timed("token", lambda: client.post("/auth/token", data={
                "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT,
                "code_verifier": verifier, "client_id": APP})), 200, "token")
            return r.json()

        out: list[dict] = []
        self.run("authorization-code flow (5 requests)", list(range(self.slow_reps)), c, flow, requests=5,
                 results=out, note="authorize, sign-in (argon2id), consent page, consent, token")
        self.refresh_tokens += [t["refresh_token"] for t in out if "refresh_token" in t]
        if out:
            self.app_access_token = out[-1]["access_token"]

    # (c) refresh_token with rotation

    def refresh(self, c: int) -> None:
        if len(self.refresh_tokens) < c:
            print(f"  refresh: only {len(self.refresh_tokens)} refresh tokens for {c} chains: skipped")
            return
        chains = [[self.refresh_tokens.pop()] for _ in range(c)]  # each thread keeps one chain
        items = [chains[i % c] for i in range(self.reps)]

        def rotate(client: httpx.Client, chain: list[str]) -> None:
            r = expect(client.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": chain[0],
                                                        "client_id": APP}), 200, "refresh")
            chain[0] = r.json()["refresh_token"]  # the old one is spent: reuse would end the grant

        self.run("refresh_token (rotation)", items, c, rotate,
                 note="refresh token taken and replaced, new access token signed")

    # (d) introspection

    def introspection(self, c: int) -> None:
        token = self.app_access_token

        def basic(client: httpx.Client, _: Any) -> None:
            r = expect(client.post("/auth/introspect", data={"token": token}, auth=(CONFIDENTIAL, SECRET)), 200,
                       "introspect")
            if r.json().get("active") is not True:
                raise Failed("token not active")

        self.run("introspect (Basic, client secret)", list(range(self.slow_reps)), c, basic,
                 note="client secret verified with argon2id on every call")
        caller = self.backend_access_token

        def bearer(client: httpx.Client, _: Any) -> None:
            r = expect(client.post("/auth/introspect", data={"token": token},
                                   headers={"Authorization": f"Bearer {caller}"}), 200, "introspect")
            if r.json().get("active") is not True:
                raise Failed("token not active")

        self.run("introspect (Bearer, backend token)", list(range(self.reps)), c, bearer,
                 note="the caller's access token verified instead of a secret: no password hash")

    # (e) the resource server: a token's first use vs the same token again

    def fhir_read(self, c: int) -> None:
        path = f"/Patient/{PATIENT_ID}"

        def read(client: httpx.Client, token: str) -> None:
            expect(client.get(path, headers={"Accept": "application/fhir+json", "Authorization": f"Bearer {token}"}),
                   200, "read")

        fresh = [self.mint(BACKEND_SCOPE) for _ in range(self.reps)]  # minted before the clock
        self.run("FHIR read, token's first use", fresh, c, read,
                 note="RS256 signature verified, scope parsed, Principal kept")
        same = self.mint(BACKEND_SCOPE)
        with httpx.Client(base_url=self.base) as client:
            read(client, same)  # its first use, untimed
        self.run("FHIR read, same token again", [same] * self.reps, c, read,
                 note="Principal from the cache: expiry and revocation checks only")


def _print_table(rows: list[dict[str, Any]]) -> None:
    cols = [("name", "measure", "<36"), ("concurrency", "conc", ">4"), ("n", "n", ">4"), ("errors", "err", ">3"),
            ("per_s", "per s", ">7"), ("p50_ms", "p50 ms", ">7"), ("p95_ms", "p95 ms", ">7"),
            ("max_ms", "max ms", ">7"),
            ("server_cpu_ms_per_request", "srv CPU ms/req", ">14"), ("server_cpu_pct", "srv CPU%", ">8"),
            ("client_cpu_ms_per_request", "cli CPU ms/req", ">14")]
    print("  ".join(f"{title:{fmt}}" for _, title, fmt in cols))
    for r in rows:
        print("  ".join(f"{r[key]:{fmt}}" for key, _, fmt in cols))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="repetitions of the cheap measures")
    parser.add_argument("--slow-reps", type=int, default=30,
                        help="repetitions of the measures that verify an argon2 hash (flow, Basic introspection)")
    parser.add_argument("--concurrency", default="1,8", help="comma list of client thread counts")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]

    for sig in (signal.SIGTERM, signal.SIGHUP):  # end like Ctrl-C, so the finally stops the server
        signal.signal(sig, lambda *_: sys.exit(130))
    machine = {"nproc": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
               "httpx": httpx.__version__}
    settings = {"reps": args.reps, "slow_reps": args.slow_reps, "concurrency": levels}
    print(f"machine: {machine}\nsettings: {settings}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="fhir-auth-bench-"))
    server: Server | None = None
    svc: AuthService | None = None
    in_proc: dict[str, Any] = {}
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"  # the server derives its base URL from the Host header httpx sends
        database = tmp / "fhir.db"
        server = Server([sys.executable, "-m", "fhir_server", "serve", "--host", "127.0.0.1", "--port", str(port),
                         "--database", f"sqlite:///{database}", "--log-level", "warning"], port, tmp / "server.log")
        server.wait_ready()
        svc = AuthService.from_url(f"sqlite:///{database}")
        svc.open_sync()  # the server created its signing key at start-up; this handle shares it
        bench = Bench(base, svc, server.proc.pid, args.reps, args.slow_reps)
        bench.register()

        # In-process: what one argon2id verification and one token verification cost on this machine.
        stored = hash_secret(PASSWORD)
        in_proc["argon2id verify_secret"] = in_process(lambda: verify_secret(stored, PASSWORD), 10)
        tokens = iter([bench.mint(BACKEND_SCOPE) for _ in range(args.reps)])
        in_proc["access token -> Principal (RS256 verify, scope parse)"] = in_process(
            lambda: svc.tokens.principal(next(tokens), issuer=base, audience=base), args.reps)
        # The pieces of a token request: signing an access token, verifying an assertion (the
        # registered public key imported from its JWK, as the server does per request), one write
        # to the record store (a jti, as each client_credentials request makes; synchronous=FULL).
        in_proc["RS256 access token signed"] = in_process(lambda: bench.mint(BACKEND_SCOPE), args.reps)
        for alg, key in bench.keys.items():
            assertion = client_assertion(key, client_id=BACKEND, token_url=bench.token_url, alg=alg)
            public = {"keys": [key.as_dict(private=False)]}
            in_proc[f"{alg} assertion verified"] = in_process(
                lambda: jwt.decode(assertion, KeySet.import_key_set(public), algorithms=[alg]), args.reps)
        in_proc["record store write (a jti)"] = in_process(
            lambda: svc.records.remember_jti("bench-in-process", uuid.uuid4().hex, time.time() + 60), args.reps)
        # A new Principal also misses the access decision's cache (smart_auth/access.py `_decide`).
        from smart_auth.access import decide

        principals = iter([svc.tokens.principal(bench.mint(BACKEND_SCOPE), issuer=base, audience=base)
                           for _ in range(args.reps)])
        in_proc["access decision for a new Principal (Patient read)"] = in_process(
            lambda: decide(next(principals), "Patient", "r"), args.reps)

        # Warm-up (imports, caches, first connections): one of each, untimed.
        bench.run("warm-up", [0], 1, lambda c, _: c.get("/metadata"))
        for c in levels:
            print(f"concurrency {c}:", flush=True)
            bench.floor(c)
            bench.client_credentials(c)
            bench.code_flow(c)
            bench.refresh(c)
            bench.introspection(c)
            bench.fhir_read(c)
        bench.rows = [r for r in bench.rows if r.name != "warm-up"]
        server.stop()
        log = server.log_path.read_text(errors="replace")
        if "Traceback" in log or "ERROR" in log:
            print(f"server log has errors:\n{server.log_tail()}", file=sys.stderr)
        server = None
    finally:
        if svc is not None:
            svc.store.close()
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [r.summary() for r in bench.rows]
    print()
    _print_table(rows)
    print("\nflow steps, p50 ms (p95): " if bench.steps else "", end="")
    steps_out = {}
    for c, steps in bench.steps.items():
        parts = []
        for step, lat in steps.items():
            lat.sort()
            parts.append(f"{step} {statistics.median(lat):.1f} ({lat[min(len(lat) - 1, int(0.95 * len(lat)))]:.1f})")
        steps_out[c] = {step: round(statistics.median(lat), 2) for step, lat in steps.items()}
        print(f"\n  c={c}: " + ", ".join(parts), end="")
    print("\n\nin-process, p50 ms (p95):")
    for name, t in in_proc.items():
        print(f"  {name}: {t['p50_ms']:.3f} ({t['p95_ms']:.3f}) over {t['reps']} calls")
    for r in rows:
        if r["error_kinds"]:
            print(f"errors in {r['name']} c={r['concurrency']}: {r['error_kinds']}")
    print("\nn: timed items (a flow is 5 requests; its latency is the whole flow, its CPU columns per request).\n"
          "per s: items completed per second. srv/cli CPU ms/req: CPU time of the server process (all its\n"
          "threads) and of this client process, per HTTP request; the server's is counted in 10 ms ticks\n"
          "(/proc), so it is rough where a phase is short. The client is httpx in threads: about 0.5-1 ms\n"
          "of CPU per request (see the floor row), taken from the same 2 cores; fine for endpoints that take\n"
          "milliseconds, not for the FHIR hot paths (bench/rest_throughput.py has its own client for those).")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"machine": machine, "settings": settings, "rows": rows,
                                                    "flow_steps_p50_ms": steps_out, "in_process": in_proc}, indent=2))
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the finally has stopped the server by now
        print("interrupted", file=sys.stderr)
        sys.exit(130)
