"""Every FHIR request leaves an AuditEvent: one ASGI middleware, no code in the handlers.

The middleware opens the request's RequestAudit (audit/context.py), lets the request run, and
then knows everything the event needs: the route (its FHIR interaction code, FhirRoute records it
in the scope), the status, the Principal (noted by the authorization step), the resources the
response carries (noted by the response builders) and whether the request's writes were already
audited in their own unit of work (audit/store.py). Those that were need no second event; every
other request (reads, searches, history, operations, refusals, failures) is recorded into the
trail's batch.

Each request gets an id (the client's `X-Request-Id` when it is a plain token, else a new UUID),
echoed in the response and kept in the AuditEvent, so a log line and an audit record meet.
"""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from profiles.canonical import CANONICAL_BASE

from ..storage.serialization import now_instant
from . import context
from .events import (AuditRecord, REST, action_of, outcome_of, rest_subtype, unique)
from .patients import patients_of_all
from .trail import AuditTrail

_REQUEST_ID = re.compile(r"^[A-Za-z0-9\-_.]{8,64}$")

# Route interaction codes (api/routes.py and friends) -> R4 restful-interaction codes
_INTERACTION = {
    "search-compartment": "search", "conditional-create": "create", "conditional-update": "update",
    "conditional-delete": "delete",
}
_WRITES = {"create", "update", "patch", "delete"}
_OPERATIONS = {
    "operation-everything": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    "operation-validate": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    "operation-submit": f"{CANONICAL_BASE}/OperationDefinition/submit",
    "operation-document": "http://hl7.org/fhir/OperationDefinition/Composition-document",
    "operation-export": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
    "operation-export-status": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
    "operation-export-cancel": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
    "operation-export-file": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
    "operation-status": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status",
    "operation-events": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events",
}
_QUIET = {"capabilities"}  # the CapabilityStatement is public and carries no patient data


class AuditMiddleware:
    def __init__(self, app: ASGIApp, trail: AuditTrail):
        self.app = app
        self.trail = trail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        client = scope.get("client")
        audit = context.RequestAudit(request_id=request_id, method=scope["method"],
                                     address=client[0] if client else None)
        scope["fhir.request_id"] = request_id  # for the access log (api/access_log.py)
        token = context.current.set(audit)
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("ascii"))]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            context.current.reset(token)
            route = scope.get("route")
            interactions = getattr(route, "interactions", None)
            if interactions:
                self._record(audit, interactions[0], scope, status)

    def _record(self, audit: context.RequestAudit, code: str, scope: Scope, status: int) -> None:
        if code in _QUIET:
            return
        if code == "transaction" and audit.interaction:
            code = audit.interaction  # the Bundle said batch
        interaction = _INTERACTION.get(code, code)
        operation_url = _OPERATIONS.get(code)
        if operation_url is not None:
            interaction = "operation"
        if interaction in _WRITES and audit.committed_events and status < 400:
            return  # recorded with the write, in its unit of work
        params = scope.get("path_params") or {}
        resources = [f"{v.resource_type}/{v.id}/_history/{v.version}" for v in audit.returned]
        if not resources and params.get("id") and params.get("resource_type"):
            resources = [f"{params['resource_type']}/{params['id']}"]  # what was asked for (a refusal, a 404)
        query = None
        if interaction.startswith("search") or audit.query is not None:
            query = audit.query if audit.query is not None else _query_of(scope)
        principal = audit.principal
        self.trail.record(AuditRecord(
            type=REST,
            subtype=rest_subtype(interaction, operation_url),
            action=action_of(interaction),
            outcome=outcome_of(status),
            recorded=now_instant(),
            status=status,
            user=principal.fhir_user if principal is not None else None,
            subject=principal.subject if principal is not None else None,
            client_id=principal.client_id if principal is not None else None,
            address=audit.address,
            grant_id=principal.grant_id if principal is not None else None,
            resources=unique(resources),
            patients=patients_of_all(audit.returned),
            query=query,
            result_count=len(audit.returned) if query is not None else None,
            total=audit.total,
            request_id=audit.request_id,
        ))


def _query_of(scope: Scope) -> str:
    path = scope.get("path", "")
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{scope['method']} {path}" + (f"?{query}" if query else "")


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.match(text):
                return text
            break
    return str(uuid.uuid4())
