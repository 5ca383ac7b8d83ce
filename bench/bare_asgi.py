"""The ceiling for bench/rest_throughput.py: a framework-free ASGI app under the server's own uvicorn config.

POST answers 201 and GET answers 200, both with one fixed stored-Patient body (read from a file so it
has the same size as the FHIR server's answers) and the headers the FHIR server sends with a
resource (Content-Type, ETag, Last-Modified, Location). Nothing is parsed, validated or stored, so
whatever the FHIR server is slower by is the cost of FastAPI, validation, SQLite and rendering.

Run: python bench/bare_asgi.py --port PORT --body-file stored-patient.json
"""

from __future__ import annotations

import argparse
from typing import Any, Awaitable, Callable

import uvicorn

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def make_app(body: bytes, port: int) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    common = [
        (b"content-type", b"application/fhir+json; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"etag", b'W/"1"'),
        (b"last-modified", b"Tue, 25 Nov 2025 14:54:00 GMT"),
    ]
    # Same length as the FHIR server's Location (a uuid id), so the response sizes match too.
    location = f"http://127.0.0.1:{port}/Patient/00000000-0000-4000-8000-000000000000/_history/1".encode()
    created = common + [(b"location", location)]

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] == "POST":
            # Drain the request body, as any real handler must, but keep nothing.
            more = True
            while more:
                more = (await receive()).get("more_body", False)
            await send({"type": "http.response.start", "status": 201, "headers": created})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": common})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", required=True)
    args = parser.parse_args()
    with open(args.body_file, "rb") as f:
        body = f.read()
    # The same uvicorn.run arguments as fhir_server.cli.serve (loop/http "auto": uvloop + httptools).
    uvicorn.run(make_app(body, args.port), host=args.host, port=args.port, log_level="warning",
                access_log=False, server_header=False)


if __name__ == "__main__":
    main()
