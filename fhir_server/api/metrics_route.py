"""GET /metrics: Prometheus exposition of the visit turnaround (fhir_server/visit/metrics.py).

Served without an access token, as Prometheus scrapes: it carries counts and durations only, no
patient data; restrict it at the network (or the proxy) like any operations endpoint."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def metrics(request: Request) -> Response:
    body = await request.app.state.metrics.render(request.app.state.store)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


ROUTES = [Route("/metrics", metrics, methods=["GET"])]
