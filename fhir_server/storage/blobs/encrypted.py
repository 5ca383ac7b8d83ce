"""A BlobStore that encrypts every blob it writes (cipher.py's format) over any other BlobStore.

One wrapper for the files beside SQLite and for GridFS alike: the inner store keeps ciphertext and
never sees a plaintext byte. BlobInfo.size and sha1 remain the plaintext's (they become the
Attachment's size and hash). Blobs written before a key was configured have no header and are
read as they are; `keys rotate` encrypts them (reencrypt()). Without a key ring new blobs are
written in the clear and an encrypted blob refuses to be read.

Blobs never change once written, so what a blob's header says and its stored size are cached per
key: a range read of a cached blob costs one read of the chunks it needs.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections import OrderedDict
from datetime import datetime
from typing import Any, AsyncIterable, AsyncIterator, Callable

from ...security.keyring import KeyRing, KeyRingError
from .base import READ_CHUNK, BlobInfo, BlobStore
from .cipher import MAX_HEADER, PREFIX, TAG, BlobIntegrityError, ChunkCipher, Header

_CACHE_SIZE = 4096


class _Meta:
    __slots__ = ("header", "stored_size")

    def __init__(self, header: Header | None, stored_size: int):
        self.header = header
        self.stored_size = stored_size


class EncryptedBlobStore:
    def __init__(self, inner: BlobStore, key_ring: Callable[[], KeyRing | None]):
        self.inner = inner
        self._key_ring = key_ring  # called per write: the ring the process has now
        self._meta: OrderedDict[str, _Meta] = OrderedDict()

    def __getattr__(self, name: str) -> Any:  # the inner store's extras: root, path_of, stale_uploads
        return getattr(self.inner, name)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    # writing --------------------------------------------------------------------------------

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> BlobInfo:
        ring = self._key_ring()
        if ring is None:
            return await self.inner.put(key, chunks)  # no key: stored as is (the server warned at start)
        header = Header.new(ring.primary, secrets.token_bytes(PREFIX))
        cipher = ChunkCipher(header, ring.primary_key, key)
        digest = hashlib.sha1()
        size = 0

        async def sealed() -> AsyncIterator[bytes]:
            nonlocal size
            out = bytearray(header.raw)
            buf = bytearray()
            index = 0
            async for piece in chunks:
                digest.update(piece)
                size += len(piece)
                buf += piece
                if len(buf) > header.chunk:  # a chunk is sealed only once more follows: the last is marked final
                    view = memoryview(buf)
                    done = 0
                    while len(buf) - done > header.chunk:
                        out += cipher.seal(index, view[done:done + header.chunk], False)
                        done += header.chunk
                        index += 1
                    view.release()
                    del buf[:done]
                if len(out) >= READ_CHUNK:  # hand the inner store a few large writes, not many small ones
                    yield bytes(out)
                    out.clear()
            out += cipher.seal(index, bytes(buf), True)
            yield bytes(out)

        self._meta.pop(key, None)
        await self.inner.put(key, sealed())
        return BlobInfo(key, size, base64.b64encode(digest.digest()).decode("ascii"))

    async def reencrypt(self, key: str) -> bool:
        """Rewrite one blob under the primary key (an unencrypted one too); False if it already was.
        The inner store must replace a key atomically (the file store does; GridFS does not)."""
        ring = self._key_ring()
        if ring is None:
            raise KeyRingError("re-encryption needs a key ring")
        meta = await self._metadata(key)
        if meta is None or (meta.header is not None and meta.header.kid == ring.primary):
            return False
        await self.put(key, self.read(key))
        self._meta.pop(key, None)
        return True

    # reading --------------------------------------------------------------------------------

    async def _metadata(self, key: str) -> _Meta | None:
        meta = self._meta.get(key)
        if meta is not None:
            self._meta.move_to_end(key)
            return meta
        stored = await self.inner.size(key)
        if stored is None:
            return None
        head = bytearray()
        async for piece in self.inner.read(key, 0, min(stored, MAX_HEADER)):
            head += piece
        meta = _Meta(Header.parse(bytes(head)), stored)
        self._meta[key] = meta
        if len(self._meta) > _CACHE_SIZE:
            self._meta.popitem(last=False)
        return meta

    async def size(self, key: str) -> int | None:
        meta = await self._metadata(key)
        if meta is None:
            return None
        return meta.stored_size if meta.header is None else meta.header.plain_size(meta.stored_size)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        meta = await self._metadata(key)
        if meta is None or meta.header is None:  # no such blob (the inner store says so), or written in the clear
            async for piece in self.inner.read(key, start, end):
                yield piece
            return
        header, stored = meta.header, meta.stored_size
        ring = self._key_ring()
        if ring is None:
            raise KeyRingError(f"blob {key} is encrypted (key {header.kid}) and no key ring is configured")
        cipher = ChunkCipher(header, ring.key(header.kid), key)
        plain_size = header.plain_size(stored)
        count = header.chunk_count(stored)
        end = plain_size if end is None else min(end, plain_size)
        if start >= end and plain_size > 0:
            return
        first = start // header.chunk
        last = max(first, (end - 1) // header.chunk)
        sealed_len = header.chunk + TAG
        buf = bytearray()
        index = first

        def opened(sealed) -> bytes:
            plain = cipher.open(index, sealed, index == count - 1)
            base = index * header.chunk
            return plain[max(0, start - base):max(0, end - base)]

        out = bytearray()  # handed on in pieces of READ_CHUNK, as the inner stores do: fewer, larger sends
        async for piece in self.inner.read(key, header.stored_offset(first),
                                           min(stored, header.stored_offset(last + 1))):
            buf += piece
            if len(buf) >= sealed_len:
                view = memoryview(buf)
                done = 0
                while len(buf) - done >= sealed_len and index <= last:
                    out += opened(view[done:done + sealed_len])
                    done += sealed_len
                    index += 1
                view.release()
                del buf[:done]
                if len(out) >= READ_CHUNK:
                    yield bytes(out)
                    out.clear()
        if index == last and buf:
            out += opened(bytes(buf))
            index += 1
        if out:
            yield bytes(out)
        if index <= last:
            raise BlobIntegrityError(f"blob {key} ends before chunk {index}: truncated")

    async def delete(self, key: str) -> None:
        self._meta.pop(key, None)
        await self.inner.delete(key)

    def listing(self) -> AsyncIterator[tuple[str, datetime]]:
        return self.inner.listing()
