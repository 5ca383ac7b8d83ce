"""Blobs in MongoDB's GridFS (bucket `binaries`), through PyMongo's async API.

GridFS writes the chunks first and the `binaries.files` document last, on close, so a blob is
visible only once complete; an upload that fails is aborted (its chunks deleted). GridFS cannot
take part in a multi-document transaction, which suits the write order used here: blob first,
then the Binary resource in its own unit of work (see fhir_server/api/binary_routes.py).

Not run by the test suite: GridFS needs a real AsyncDatabase, and the in-process fake is not one
(tests run the MongoDB backend with the file blob store instead).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone
from typing import Any, AsyncIterable, AsyncIterator, Callable

from .base import READ_CHUNK, BlobInfo, valid_key

BUCKET = "binaries"


class GridFSBlobStore:
    def __init__(self, database: Callable[[], Any], *, bucket: str = BUCKET):
        self._database = database  # the store's AsyncDatabase, once the store is open
        self._bucket_name = bucket
        self._bucket: Any = None

    def _gridfs(self) -> Any:
        if self._bucket is None:
            from gridfs import AsyncGridFSBucket

            self._bucket = AsyncGridFSBucket(self._database(), bucket_name=self._bucket_name)
        return self._bucket

    def _files(self) -> Any:
        return self._database()[f"{self._bucket_name}.files"]

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._bucket = None

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> BlobInfo:
        if not valid_key(key):
            raise ValueError("invalid blob key")
        upload = self._gridfs().open_upload_stream_with_id(key, key)
        digest = hashlib.sha1()
        size = 0
        try:
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                await upload.write(chunk)
        except BaseException:
            await upload.abort()
            raise
        await upload.close()
        return BlobInfo(key, size, base64.b64encode(digest.digest()).decode("ascii"))

    async def size(self, key: str) -> int | None:
        found = await self._files().find_one({"_id": key}, {"length": 1})
        return None if found is None else int(found["length"])

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        stream = await self._gridfs().open_download_stream(key)
        try:
            if start:
                await stream.seek(start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                chunk = await stream.read(READ_CHUNK if remaining is None else min(READ_CHUNK, remaining))
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            await stream.close()

    async def delete(self, key: str) -> None:
        from gridfs.errors import NoFile

        try:
            await self._gridfs().delete(key)
        except NoFile:
            pass

    async def listing(self) -> AsyncIterator[tuple[str, datetime]]:
        async for doc in self._files().find({}, {"uploadDate": 1}):
            when = doc.get("uploadDate") or datetime.now(timezone.utc)
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            yield str(doc["_id"]), when
