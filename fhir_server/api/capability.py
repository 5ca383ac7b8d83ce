"""GET /metadata: the CapabilityStatement, generated from the routes the app really registered
(each names its FHIR interaction), the resource types the validator knows, and the formats the
negotiation module accepts. Built once per base URL and cached as bytes.
"""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute

from .. import __version__
from ..storage.serialization import format_instant
from ..validation.resource_types import resource_types
from .negotiation import PATCH_FORMATS, RESPONSE_FORMATS

# CapabilityStatement.rest.resource.interaction codes (R4 valueset-type-restful-interaction)
_TYPE_LEVEL = ("read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type")
# CapabilityStatement.rest.interaction codes
_SYSTEM_LEVEL = ("transaction", "batch", "search-system", "history-system")

FHIR_INTERACTION = "x-fhir-interaction"  # the openapi_extra key each route names its interactions under

_STARTED = format_instant(datetime.now(timezone.utc))


def implemented_interactions(app: FastAPI) -> set[str]:
    codes: set[str] = set()
    for route in app.routes:
        if isinstance(route, APIRoute) and route.openapi_extra:
            codes.update(route.openapi_extra.get(FHIR_INTERACTION, ()))
    return codes


def build_capability_statement(app: FastAPI, base: str) -> dict:
    codes = implemented_interactions(app)
    type_level = [{"code": c} for c in _TYPE_LEVEL if c in codes]
    resources = [
        {
            "type": name,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{name}",
            "interaction": type_level,
            "versioning": "versioned-update",
            "readHistory": "vread" in codes,
            "updateCreate": "update" in codes,
            "conditionalCreate": False,
            "conditionalRead": "not-supported",
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
        }
        for name in sorted(resource_types())
    ]
    rest: dict = {
        "mode": "server",
        "resource": resources,
        "interaction": [{"code": c} for c in _SYSTEM_LEVEL if c in codes],
    }
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": _STARTED,
        "publisher": "fhir-async-telehealth",
        "kind": "instance",
        "software": {"name": "fhir-async-telehealth", "version": __version__},
        "implementation": {"description": "FHIR R4 server for asynchronous telehealth", "url": base},
        "fhirVersion": "4.0.1",
        "format": list(RESPONSE_FORMATS),
        "patchFormat": list(PATCH_FORMATS),
        "rest": [rest],
    }


def capability_statement(app: FastAPI, base: str) -> bytes:
    cache: dict[str, bytes] = app.state.capability_cache
    if base not in cache:
        cache[base] = orjson.dumps(build_capability_statement(app, base))
    return cache[base]
