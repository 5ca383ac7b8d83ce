"""A request log without patient data: request id, method, route template (not the URL), status, duration.

Uvicorn's own access log prints full URLs, whose ids and query strings can identify patients, so
the CLI turns it off and this middleware logs instead.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("fhir_server.access")


class AccessLog:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = scope.get("route")
            # the request id (audit/middleware.py) is the one the request's AuditEvent carries
            log.info("%s %s %s %d %.1fms", scope.get("fhir.request_id", "-"), scope["method"],
                     getattr(route, "path", "-"), status, (time.perf_counter() - started) * 1000)
