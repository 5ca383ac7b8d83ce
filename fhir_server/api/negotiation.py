"""Content negotiation (R4 http.html#mime-type): JSON in, JSON out; `_format` and `_pretty`."""

from __future__ import annotations

import orjson
from starlette.requests import Request

from ..errors import InvalidRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType

FHIR_JSON = "application/fhir+json"
JSON = "application/json"
JSON_PATCH = "application/json-patch+json"

# What `_format` may say for JSON (http.html#mime-type: "json", or a full mime type).
_FORMAT_JSON = {"json", FHIR_JSON, JSON, "application/json+fhir"}
_JSON_TYPES = (FHIR_JSON, JSON, "application/json+fhir")

RESPONSE_FORMATS = ("json", FHIR_JSON, JSON)  # what the CapabilityStatement advertises
PATCH_FORMATS = (JSON_PATCH,)


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def response_media_type(request: Request) -> str:
    """The JSON media type to answer with, or 406 when the client accepts no JSON at all."""
    fmt = request.query_params.get("_format")
    if fmt is not None:
        fmt = fmt.strip().replace(" ", "+")  # a '+' in a query string arrives as a space
        if _media_type(fmt) in _FORMAT_JSON:
            return JSON if _media_type(fmt) == JSON else FHIR_JSON
        raise NotAcceptable(f"_format '{fmt}' is not supported; this server speaks JSON ({FHIR_JSON})")
    accept = request.headers.get("accept")
    if not accept:
        return FHIR_JSON
    ranges = [_media_type(r) for r in accept.split(",")]
    for r in ranges:
        if r in (FHIR_JSON, "application/json+fhir", "*/*", "application/*"):
            return FHIR_JSON
        if r == JSON:
            return JSON
    raise NotAcceptable(f"None of the accepted media types is served; this server speaks JSON ({FHIR_JSON})")


def is_pretty(request: Request) -> bool:
    return request.query_params.get("_pretty", "").lower() == "true"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is larger than this server accepts ({limit} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is larger than this server accepts ({limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int, *, accepted: tuple[str, ...] = _JSON_TYPES) -> object:
    """Parse a JSON body after checking its Content-Type; 415 or 400 with a clear outcome otherwise."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        raise UnsupportedMediaType(f"A body needs a Content-Type; send {accepted[0]}")
    if _media_type(content_type) not in accepted:
        raise UnsupportedMediaType(
            f"Content-Type '{_media_type(content_type)}' is not supported here; send {' or '.join(accepted)}"
        )
    body = await read_body(request, limit)
    if not body.strip():
        raise InvalidRequest("The request body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        # The position helps the client; the text around it may hold patient data, so no excerpt.
        raise InvalidRequest(f"The body is not valid JSON (error at character {err.pos})") from None


def render(body: bytes, request: Request) -> bytes:
    """Indent a JSON body when the client asked for `_pretty=true`."""
    if is_pretty(request):
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2)
    return body
