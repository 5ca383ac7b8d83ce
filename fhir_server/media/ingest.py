"""Photos and videos on the write path, whichever interaction brings them: a Binary whose `data`
holds a photo or video (a transaction entry, a PUT, a FHIR-JSON POST) is checked and cleaned
exactly as a raw upload is (fhir_server/api/binary_routes.py), its bytes moved to the blob store,
and a Media pointing at a stored Binary gets the server's `content.size` and `content.hash`.

Both run inside the write's unit of work, before validation (interactions/profile_check.py), so
the visit-media profile, which requires size and hash, is met by what the server measured. A blob
written by a unit of work that then rolls back is an orphan the start-up sweep removes (sweep.py).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import AsyncIterator

import orjson

from ..errors import InvalidRequest, OutcomeIssue, PayloadTooLarge, UnprocessableEntity, UnsupportedMediaType
from ..storage import ResourceReader
from ..storage.blobs import BlobStore
from .binary_resource import blob_ref, with_blob_ref
from .scrub import MalformedMedia, scrub
from .sniff import HEAD_BYTES, IMAGE_TYPES, MEDIA_TYPES, SCRUBBED_TYPES, matches

__all__ = ["MediaIngest", "too_large", "require_match", "cleaned"]


def media_type(value: object) -> str:
    return value.split(";", 1)[0].strip().lower() if isinstance(value, str) else ""


def too_large(declared: str, limit: int) -> PayloadTooLarge:
    kind = "an image" if declared in IMAGE_TYPES else "a video"
    return PayloadTooLarge(f"The content is larger than this server accepts for {kind} ({limit} bytes)")


def require_match(declared: str, head: bytes) -> None:
    if not matches(declared, head):
        raise UnsupportedMediaType(f"The content is not {declared}: its leading bytes are not that format's")


def cleaned(declared: str, data: bytes) -> bytes:
    """The bytes, once they are shown to be `declared`, without identifying metadata (scrub.py)."""
    require_match(declared, data[:HEAD_BYTES])
    if declared not in SCRUBBED_TYPES:
        return data
    try:
        return scrub(declared, data)
    except MalformedMedia as err:
        raise InvalidRequest(f"The content is not a well-formed {declared} file: {err}") from None


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class MediaIngest:
    def __init__(self, blobs: BlobStore, max_image_bytes: int, max_video_bytes: int):
        self.blobs = blobs
        self.max_image_bytes = max_image_bytes
        self.max_video_bytes = max_video_bytes

    def limit_for(self, declared: str) -> int:
        return self.max_image_bytes if declared in IMAGE_TYPES else self.max_video_bytes

    async def binary(self, reader: ResourceReader, id: str, resource: dict) -> dict:
        """A Binary about to be written: inline photo or video bytes go to the blob store."""
        declared = media_type(resource.get("contentType"))
        data = resource.get("data")
        if declared not in MEDIA_TYPES or not isinstance(data, str):
            return resource
        try:
            raw = base64.b64decode(data, validate=True)
        except binascii.Error:
            raise InvalidRequest("Binary.data is not valid base64", expression="Binary.data") from None
        limit = self.limit_for(declared)
        if len(raw) > limit:
            raise too_large(declared, limit)
        info = await self.blobs.put(f"{id}.{uuid.uuid4().hex}", _one(cleaned(declared, raw)))
        return with_blob_ref(resource, info)

    async def media(self, reader: ResourceReader, id: str, resource: dict) -> dict:
        """A Media whose content.url is a stored Binary: size and hash are the server's
        measurement; a client's different claim is refused (422 media-content-mismatch)."""
        content = resource.get("content")
        url = content.get("url") if isinstance(content, dict) else None
        if not isinstance(url, str) or not url.startswith("Binary/") or url.count("/") != 1:
            return resource
        binary_id = url.split("/", 1)[1]
        found = await reader.read("Binary", binary_id)
        if found is None or found.body is None:
            return resource
        ref = blob_ref(orjson.loads(found.body), binary_id)
        if ref is None or ref.size is None or ref.sha1 is None:
            return resource
        for field, measured in (("size", ref.size), ("hash", ref.sha1)):
            claimed = content.get(field)
            if claimed is not None and claimed != measured:
                message = f"Media.content.{field} differs from the stored Binary's"
                raise UnprocessableEntity(message, issues=[OutcomeIssue(
                    "error", "business-rule", message, f"Media.content.{field}", "media-content-mismatch")])
        return {**resource, "content": {**content, "size": ref.size, "hash": ref.sha1}}
