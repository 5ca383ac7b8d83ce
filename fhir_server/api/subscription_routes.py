"""Routes of the Subscriptions backport operations: `GET|POST Subscription/{id}/$status` and
`GET|POST Subscription/{id}/$events` (fhir_server/exchange/subscriptions/operations.py).
Parameters come from the query string (POST: also a Parameters body)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..exchange.subscriptions.operations import events_bundle, status_bundle
from .authorization import request_principal
from .capability import FhirRoute
from .negotiation import read_json, response_media_type
from .responses import fhir_response

__all__ = ["ROUTES"]

ROUTES: list[FhirRoute] = []


def _base(request: Request) -> str:
    configured = request.app.state.settings.base_url
    return (configured or str(request.base_url)).rstrip("/")


async def _params(request: Request) -> dict[str, str]:
    params = dict(request.query_params)
    if request.method == "POST" and request.headers.get("content-length") not in (None, "0"):
        body = await read_json(request, request.app.state.settings.max_body_bytes)
        if isinstance(body, dict) and body.get("resourceType") == "Parameters":
            for p in body.get("parameter") or []:
                if isinstance(p, dict) and p.get("name"):
                    value = next((v for k, v in p.items() if k.startswith("value")), None)
                    if value is not None:
                        params[p["name"]] = str(value)
    return params


async def _status(request: Request) -> Response:
    principal = await request_principal(request)
    bundle = await status_bundle(request.app.state.store, request.path_params["id"], principal, _base(request))
    return fhir_response(orjson.dumps(bundle), request, media_type=response_media_type(request))


async def _events(request: Request) -> Response:
    principal = await request_principal(request)
    params = await _params(request)
    limit = getattr(request.app.state, "subscription_events_scan", 1000)  # SubscriptionSettings.events_max
    bundle = await events_bundle(request.app.state.store, request.path_params["id"], principal, _base(request),
                                 params.get("eventsSinceNumber"), params.get("eventsUntilNumber"), limit)
    return fhir_response(orjson.dumps(bundle), request, media_type=response_media_type(request))


for _method in ("GET", "POST"):
    ROUTES.append(FhirRoute("/Subscription/{id}/$status", _status, methods=[_method],
                            name=f"operation-status-{_method.lower()}", interactions=("operation-status",)))
    ROUTES.append(FhirRoute("/Subscription/{id}/$events", _events, methods=[_method],
                            name=f"operation-events-{_method.lower()}", interactions=("operation-events",)))
