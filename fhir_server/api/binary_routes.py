"""Raw Binary content over REST (R4 binary.html "Serving Binary Resources using the RESTful API"):
photos and videos go in as their own bytes (or as a FHIR Binary with base64 `data`) and come
out as their own bytes or as FHIR JSON, as the client asks. Mounted before the generic routes.

- `POST /Binary` with `Content-Type: image/jpeg|png|heic|webp` or `video/mp4|quicktime` and the
  bytes as the body; `X-Security-Context: Patient/123` (HAPI's header, binary.html) becomes
  `securityContext`. Or a FHIR Binary (`application/fhir+json`) with one of those contentTypes
  and base64 `data`. Other contentTypes are stored as before, inline in the resource JSON.
  The client's authorization is checked first, then the bytes are streamed in: refused past the
  limit for their kind (413, nothing kept), refused unless their magic bytes are the declared type
  (415), and JPEG, PNG and WebP are cleaned of identifying metadata (fhir_server/media/scrub.py;
  images are small enough, at most --max-image-bytes, to be cleaned in memory; videos never
  are). The bytes go to the blob store first; the Binary, recording where they are
  (fhir_server/media/binary_resource.py), is then written in its own unit of work; if that fails
  the blob is deleted (and a crash in between is cleaned up by fhir_server/media/sweep.py).
- `GET /Binary/{id}`: FHIR JSON (base64 `data`, streamed) when `_format` is given or Accept names
  a FHIR/JSON type; otherwise (no Accept, `*/*`, `image/*`, the content's own type) the raw bytes
  with their Content-Type, `Range` supported (206, 416). Access is the read interaction's own:
  smart_auth's Binary securityContext gate.

Size and SHA-1 (base64, R4 Attachment.hash) of the stored bytes come back as `X-Binary-Size`,
`X-Binary-Hash` and `Digest: sha=...` (RFC 3230), and in the Binary's meta extension.
"""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from typing import AsyncIterable, AsyncIterator

import orjson
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from smart_auth.access import CREATE

from ..errors import FhirError, InvalidRequest, NotAcceptable, UnsupportedMediaType
from ..interactions import crud
from ..interactions.guard import check_write
from ..interactions.prefer import parse_prefer
from ..interactions.profile_check import collected_warnings, outcome_issues
from ..interactions.validation import Checked, check
from ..media.binary_resource import BlobRef, blob_ref, with_blob_ref, without_blob_ref
from ..media.ingest import cleaned, media_type, require_match, too_large
from ..media.sniff import HEAD_BYTES, MEDIA_TYPES, SCRUBBED_TYPES
from ..storage import StoredVersion
from ..storage.blobs import BlobStore
from .authorization import request_principal
from .capability import FhirRoute, route_table
from .negotiation import FHIR_JSON, JSON, read_json, response_media_type
from .responses import resource_response, version_headers, write_response
from .routes import base_url

log = logging.getLogger("fhir_server.media")

BINARY_ROUTES: list[FhirRoute] = []

_FHIR_TYPES = (FHIR_JSON, "application/json+fhir", JSON)
_RAW_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox; default-src 'none'",
                "Accept-Ranges": "bytes"}


class _FhirId(Convertor):
    """Only FHIR ids: /Binary/_history, /Binary/$validate stay with the generic routes."""

    regex = "[A-Za-z0-9.-]{1,64}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("fhirid", _FhirId())


class RangeNotSatisfiable(FhirError):
    status = 416
    issue_code = "not-supported"

    def __init__(self, size: int):
        super().__init__(f"The range asked for is outside the content ({size} bytes)")
        self.headers = {"Content-Range": f"bytes */{size}"}


_route = route_table(BINARY_ROUTES)


def _blobs(request: Request) -> BlobStore:
    return request.app.state.blobs





# -- upload ---------------------------------------------------------------------------------------


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _read_limited(source: AsyncIterable[bytes], media_type: str, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in source:
        size += len(chunk)
        if size > limit:
            raise too_large(media_type, limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _streamed(source: AsyncIterable[bytes], media_type: str, limit: int) -> AsyncIterator[bytes]:
    """The upload passed through, checked: magic bytes first, size all along."""
    head, size, checked = b"", 0, False
    async for chunk in source:
        size += len(chunk)
        if size > limit:
            raise too_large(media_type, limit)
        if checked:
            yield chunk
            continue
        head += chunk
        if len(head) >= HEAD_BYTES:
            require_match(media_type, head)
            checked = True
            yield head
    if not checked:
        require_match(media_type, head)
        yield head




@_route("POST", "/Binary", "create")
async def create_binary(request: Request) -> Response:
    principal = await request_principal(request)
    media = response_media_type(request)
    settings = request.app.state.settings
    store = request.app.state.store
    content_type = media_type(request.headers.get("content-type"))
    id = crud.new_id()
    if content_type in _FHIR_TYPES:
        resource = without_blob_ref(check(await read_json(request, settings.max_body_bytes), "Binary").body)
        declared = media_type(resource.get("contentType"))
        if declared not in MEDIA_TYPES or not isinstance(resource.get("data"), str):
            return await _create_inline(request, media, Checked("Binary", resource), id, principal)
        await check_write(store, principal, CREATE, "Binary", resource, id=id)
        try:
            data = base64.b64decode(resource["data"], validate=True)
        except binascii.Error:
            raise InvalidRequest("Binary.data is not valid base64", expression="Binary.data") from None
        limit = request.app.state.media_ingest.limit_for(declared)
        if len(data) > limit:
            raise too_large(declared, limit)
        chunks: AsyncIterable[bytes] = _one(cleaned(declared, data))
    elif content_type in MEDIA_TYPES:
        declared = content_type
        resource = {"resourceType": "Binary", "contentType": declared}
        context = request.headers.get("x-security-context")
        if context:
            resource["securityContext"] = {"reference": context.strip()}
        resource = check(resource, "Binary").body
        await check_write(store, principal, CREATE, "Binary", resource, id=id)  # before taking the bytes
        limit = request.app.state.media_ingest.limit_for(declared)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_large(declared, limit)
        if declared in SCRUBBED_TYPES:
            chunks = _one(cleaned(declared, await _read_limited(request.stream(), declared, limit)))
        else:
            chunks = _streamed(request.stream(), declared, limit)
    else:
        raise UnsupportedMediaType(
            f"POST /Binary takes {FHIR_JSON}, or the raw bytes of one of: {', '.join(sorted(MEDIA_TYPES))}")

    key = f"{id}.{uuid.uuid4().hex}"
    blobs = _blobs(request)
    info = await blobs.put(key, chunks)
    try:
        with collected_warnings() as warnings:
            async with store.unit_of_work() as uow:
                version = await crud.create(uow, Checked("Binary", with_blob_ref(resource, info)), id=id,
                                            principal=principal)
    except BaseException:
        await blobs.delete(key)  # delete-on-rollback: the Binary was not stored, neither are its bytes
        raise
    prefer = parse_prefer(request.headers.get("prefer"))
    response = write_response(version, request, media, prefer, base_url(request), status=201,
                              warnings=outcome_issues(warnings))
    response.headers.update(_content_headers(info.size, info.sha1))
    return response


async def _create_inline(request: Request, media: str, checked: Checked, id: str, principal) -> Response:
    """A Binary of another content type: stored as before, `data` inside the resource JSON."""
    with collected_warnings() as warnings:
        async with request.app.state.store.unit_of_work() as uow:
            version = await crud.create(uow, checked, id=id, principal=principal)
    prefer = parse_prefer(request.headers.get("prefer"))
    return write_response(version, request, media, prefer, base_url(request), status=201,
                          warnings=outcome_issues(warnings))


def _content_headers(size: int | None, sha1: str | None) -> dict[str, str]:
    headers = {}
    if size is not None:
        headers["X-Binary-Size"] = str(size)
    if sha1:
        headers["X-Binary-Hash"] = sha1
        headers["Digest"] = f"sha={sha1}"
    return headers


# -- read -----------------------------------------------------------------------------------------


def _accept_ranges(accept: str) -> list[tuple[str, float]]:
    out = []
    for part in accept.split(","):
        media, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media:
            out.append((media.lower(), q))
    return out


def wants_fhir(request: Request) -> bool:
    """binary.html: the Binary resource when FHIR is asked for (`_format`, or a FHIR or JSON type in
    Accept); otherwise (no Accept, `*/*`, `image/*`, the content's own type) the content itself."""
    if request.query_params.get("_format") is not None:
        return True
    accept = request.headers.get("accept")
    return bool(accept) and any(m in _FHIR_TYPES and q > 0 for m, q in _accept_ranges(accept))


def _acceptable(accept: str | None, content_type: str) -> bool:
    if not accept:
        return True
    major = content_type.split("/", 1)[0]
    return any(q > 0 and m in ("*/*", f"{major}/*", content_type) for m, q in _accept_ranges(accept))


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single `bytes=` range as [start, end), None to send everything (no Range, several ranges or
    one this server does not read: RFC 9110 lets it ignore those); RangeNotSatisfiable when it
    lies outside the content."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first:
            suffix = int(last)
            if suffix <= 0 or size == 0:
                raise RangeNotSatisfiable(size)
            return max(0, size - suffix), size
        start = int(first)
        end = size if not last else int(last) + 1
    except ValueError:
        return None
    if start < 0 or end <= start and last:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, min(end, size)


@_route("GET", "/Binary/{id:fhirid}", "read")
async def read_binary(request: Request, id: str) -> Response:
    principal = await request_principal(request)
    fhir = wants_fhir(request)
    media = response_media_type(request) if fhir else None
    version = await crud.read(request.app.state.store, "Binary", id, principal)
    assert version.body is not None
    body = orjson.loads(version.body)
    ref = blob_ref(body, id)
    blobs = _blobs(request)
    size = await blobs.size(ref.key) if ref is not None else None
    if ref is not None and size is None:
        log.error("the content blob of a Binary is missing")  # no id: the log holds no patient data
        raise FhirError("The content of this Binary is missing from the blob store")
    if fhir:
        return _fhir_json(request, version, body, media, ref, size, blobs)
    content_type = media_type(body.get("contentType")) or "application/octet-stream"
    if not _acceptable(request.headers.get("accept"), content_type):
        raise NotAcceptable(f"The content is {content_type}; ask for it, or for {FHIR_JSON}")
    headers = {**version_headers(version, "", location=False), **_RAW_HEADERS}
    if ref is not None:
        assert size is not None
        headers.update(_content_headers(size, ref.sha1))

        def source(start: int, end: int) -> AsyncIterator[bytes]:
            return blobs.read(ref.key, start, end)
    else:
        try:
            data = base64.b64decode(body.get("data") or "")
        except binascii.Error:
            data = b""
        size = len(data)
        headers.update(_content_headers(size, None))

        def source(start: int, end: int) -> AsyncIterator[bytes]:
            return _one(data[start:end])
    wanted = parse_range(request.headers.get("range"), size)
    if wanted is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(source(0, size), status_code=200, media_type=content_type, headers=headers)
    start, end = wanted
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    headers.pop("Digest", None)  # the digest is of the whole content
    return StreamingResponse(source(start, end), status_code=206, media_type=content_type, headers=headers)


def _fhir_json(request: Request, version: StoredVersion, body: dict, media: str | None, ref: BlobRef | None,
               size: int | None, blobs: BlobStore) -> Response:
    """The Binary as FHIR JSON; content from the blob store goes into `data`, base64-encoded as it
    is streamed (never the whole content in memory)."""
    assert media is not None
    if ref is None:
        return resource_response(version, request, media)
    assert size is not None
    key = ref.key
    body = {k: v for k, v in body.items() if k != "data"}
    prefix = orjson.dumps(body)[:-1] + b',"data":"'
    suffix = b'"}'

    async def stream() -> AsyncIterator[bytes]:
        yield prefix
        carry = b""
        async for chunk in blobs.read(key):
            chunk = carry + chunk
            cut = len(chunk) - len(chunk) % 3
            carry = chunk[cut:]
            if cut:
                yield base64.b64encode(chunk[:cut])
        if carry:
            yield base64.b64encode(carry)
        yield suffix

    headers = version_headers(version, "", location=False)
    headers["Content-Length"] = str(len(prefix) + 4 * ((size + 2) // 3) + len(suffix))
    headers.update(_content_headers(size, ref.sha1))
    return StreamingResponse(stream(), media_type=f"{media}; charset=utf-8", headers=headers)


__all__ = ["BINARY_ROUTES", "parse_range", "wants_fhir"]
