"""The blob store: where a Binary's bytes live, apart from the resource JSON (DESIGN.md).

A blob is written once under a key the caller chooses (`<Binary id>.<random hex>`), streamed in
and hashed as it goes, and becomes visible under that key only when complete (a file renamed
into place, a GridFS file whose metadata document is written after its chunks). It is never
changed afterwards: a new upload gets a new key, so older versions of a Binary keep their bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import AsyncIterable, AsyncIterator, Protocol

READ_CHUNK = 256 * 1024

_KEY = re.compile(r"^[A-Za-z0-9\-.]{1,64}\.[0-9a-f]{32}$")


def valid_key(key: str) -> bool:
    return bool(_KEY.match(key))


def binary_id_of(key: str) -> str:
    """The id of the Binary a blob was written for (keys are `<id>.<32 hex>`)."""
    return key.rsplit(".", 1)[0]


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int  # bytes stored
    sha1: str  # SHA-1 of the stored bytes, base64 (R4 Attachment.hash)


class BlobStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> BlobInfo:
        """Store the chunks under `key`. If the iterable raises (a limit passed, a client gone),
        nothing is kept and the exception propagates."""

    async def size(self, key: str) -> int | None:
        """The blob's size, or None when there is no such blob."""

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes [start, end) (end None: to the end), in chunks."""

    async def delete(self, key: str) -> None:
        """Remove the blob; no error when it does not exist."""

    async def listing(self) -> AsyncIterator[tuple[str, datetime]]:
        """Every stored key with the time it was written (for the orphan sweep)."""
