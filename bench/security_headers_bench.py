"""What the security-headers middleware (fhir_server/api/security_headers.py) costs on reads.

In process, no HTTP or client in the way: the app (no auth, a fresh SQLite file with --patients
Patients) answers GET /Patient/{id} called straight through ASGI, in alternating rounds with and
without the middleware in its stack (the same app, its middleware stack rebuilt), so drift on a
shared machine hits both sides alike. Prints reads/s and microseconds per read for each, and the
per-call cost of the header rewrite alone.

    .venv/bin/python bench/security_headers_bench.py [--patients 2000] [--reads 20000] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_server.api.app import create_app  # noqa: E402
from fhir_server.api.security_headers import SecurityHeaders, secured  # noqa: E402
from fhir_server.config import Settings  # noqa: E402


async def call(app, method: str, path: str, body: bytes = b"") -> tuple[int, list]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"bench"), (b"accept", b"application/fhir+json"),
                         (b"content-type", b"application/fhir+json")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent = False
    out: dict = {}

    async def receive():
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"], out["headers"] = message["status"], message["headers"]

    await app(scope, receive, send)
    return out["status"], out["headers"]


async def around_trivial_app(n: int = 100_000) -> float:
    """Microseconds the middleware adds to one request (its wrapper, closure and header rewrite),
    as the best of 5 runs of n calls each, with and without it, around an app that does nothing."""
    start = {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"application/fhir+json"), (b"content-length", b"2")]}
    body = {"type": "http.response.body", "body": b"{}"}

    async def trivial(scope, receive, send):
        await send(dict(start))
        await send(body)

    async def sink(message):
        pass

    scope = {"type": "http", "path": "/Patient/1", "scheme": "http"}
    best = {}
    for name, app in (("bare", trivial), ("wrapped", SecurityHeaders(trivial))):
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                await app(scope, None, sink)
            runs.append((time.perf_counter() - t0) / n * 1e6)
        best[name] = min(runs)
    return best["wrapped"] - best["bare"]


def with_middleware(app, on: bool) -> None:
    app.user_middleware = [m for m in app.user_middleware if m.cls is not SecurityHeaders]
    if on:
        app.user_middleware.insert(0, app.state.security_headers_entry)
    app.middleware_stack = None  # rebuilt on the next call


async def main(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(database_url=f"sqlite:///{tmp}/fhir.db", auth_enabled=False))
        app.state.security_headers_entry = next(m for m in app.user_middleware if m.cls is SecurityHeaders)
        async with app.router.lifespan_context(app):
            ids = []
            for i in range(args.patients):
                status, headers = await call(app, "POST", "/Patient",
                                             b'{"resourceType":"Patient","name":[{"family":"Bench%d"}]}' % i)
                assert status == 201, status
                location = dict(headers)[b"location"].decode()
                ids.append(location.split("/Patient/")[1].split("/")[0])
            rates: dict[bool, list[float]] = {True: [], False: []}
            for round_ in range(args.rounds):
                for on in ((True, False) if round_ % 2 == 0 else (False, True)):
                    with_middleware(app, on)
                    status, headers = await call(app, "GET", f"/Patient/{ids[0]}")
                    assert status == 200 and (b"cache-control", b"no-store") in headers or not on
                    started = time.perf_counter()
                    for n in range(args.reads):
                        await call(app, "GET", f"/Patient/{ids[n % len(ids)]}")
                    rates[on].append(args.reads / (time.perf_counter() - started))
    headers = [(b"content-type", b"application/fhir+json"), (b"etag", b'W/"1"'), (b"last-modified", b"x"),
               (b"content-length", b"500")]
    rewrite_us = min(timeit.repeat(lambda: secured(headers, "/Patient/1", False), number=100_000, repeat=5)) * 10
    wrapped_us = await around_trivial_app()
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"reads in process, median of {args.rounds} rounds of {args.reads}:")
    print(f"  without middleware: {off:,.0f} reads/s ({1e6 / off:.1f} us/read)")
    print(f"  with middleware:    {on:,.0f} reads/s ({1e6 / on:.1f} us/read)")
    print(f"  cost: {1e6 / on - 1e6 / off:+.1f} us/read ({(off - on) / off:+.1%} throughput)")
    print(f"  header rewrite alone: {rewrite_us:.2f} us/call")
    print(f"  the whole middleware around a trivial ASGI app: {wrapped_us:+.2f} us/request")
    print("  rounds (reads/s): with " + ", ".join(f"{r:,.0f}" for r in rates[True]) +
          "; without " + ", ".join(f"{r:,.0f}" for r in rates[False]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--reads", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=6)
    asyncio.run(main(parser.parse_args()))
