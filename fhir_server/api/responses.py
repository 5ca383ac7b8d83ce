"""FHIR HTTP responses: stored bytes with ETag, Last-Modified and Location; outcomes for errors."""

from __future__ import annotations

from email.utils import format_datetime

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..errors import FhirError, OutcomeIssue, operation_outcome
from ..interactions.prefer import RETURN_MINIMAL, RETURN_OUTCOME, Prefer
from ..interactions.rendering import version_location
from ..storage import StoredVersion
from .negotiation import FHIR_JSON, render

_CHARSET = "; charset=utf-8"


def fhir_response(
    body: bytes | None, request: Request, *, status: int = 200, media_type: str = FHIR_JSON, headers: dict | None = None
) -> Response:
    if body is None:
        return Response(status_code=status, headers=headers)
    return Response(render(body, request), status_code=status, headers=headers, media_type=media_type + _CHARSET)


def version_headers(version: StoredVersion, base: str, *, location: bool) -> dict[str, str]:
    headers = {"ETag": version.etag, "Last-Modified": format_datetime(version.last_updated, usegmt=True)}
    if location:
        headers["Location"] = f"{base}/{version_location(version)}"
    return headers


def resource_response(version: StoredVersion, request: Request, media_type: str, *, status: int = 200) -> Response:
    assert version.body is not None
    return fhir_response(
        version.body, request, status=status, media_type=media_type, headers=version_headers(version, "", location=False)
    )


def write_response(
    version: StoredVersion, request: Request, media_type: str, prefer: Prefer, base: str, *, status: int,
    warnings: list[OutcomeIssue] | None = None,
) -> Response:
    """The answer to create, update and patch, shaped by `Prefer: return=` (R4 http.html#ops);
    an OperationOutcome answer also carries the validation warnings of the write."""
    headers = version_headers(version, base, location=True)
    if prefer.return_ == RETURN_MINIMAL:
        return fhir_response(None, request, status=status, headers=headers)
    if prefer.return_ == RETURN_OUTCOME:
        verb = "created" if status == 201 else "updated"
        outcome = operation_outcome(
            [OutcomeIssue("information", "informational", f"{version.resource_type}/{version.id} {verb} "
                          f"(version {version.version})"), *(warnings or [])]
        )
        return fhir_response(orjson.dumps(outcome), request, status=status, media_type=media_type, headers=headers)
    return fhir_response(version.body, request, status=status, media_type=media_type, headers=headers)


def error_response(error: FhirError, request: Request) -> Response:
    """Errors are always JSON OperationOutcomes, even when the client asked for a format we lack."""
    headers = getattr(error, "headers", None)
    return fhir_response(orjson.dumps(error.outcome()), request, status=error.status, headers=headers)
