"""Export files encrypted at rest, in the blob store's format (storage/blobs/cipher.py).

With a key ring configured (`--encryption-key-file`), the NDJSON files a job writes hold patient
data like the database does, so they are sealed the same way: AES-256-GCM in 64 KiB chunks under
the primary key, bound to the file's name. Readers (the file endpoint, a resumed job looking for
the ids it already wrote) open them by their header; a file without one (written before a key was
configured) is read as it is.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import BinaryIO, Iterator

from ...security import keyring
from ...storage.blobs.cipher import CHUNK, MAGIC, MAX_HEADER, PREFIX, TAG, ChunkCipher, Header


class SealingFile:
    """A write-only file that encrypts what is written to it; close() seals the final chunk."""

    def __init__(self, raw: BinaryIO, ring: keyring.KeyRing, name: str):
        self._raw = raw
        self._header = Header.new(ring.primary, secrets.token_bytes(PREFIX))
        self._cipher = ChunkCipher(self._header, ring.primary_key, name)
        self._buffer = bytearray()
        self._index = 0
        raw.write(self._header.raw)

    def write(self, data: bytes) -> None:
        self._buffer += data
        # keep at least one byte back: the last chunk must be sealed as the final one
        while len(self._buffer) > CHUNK:
            self._raw.write(self._cipher.seal(self._index, bytes(self._buffer[:CHUNK]), False))
            del self._buffer[:CHUNK]
            self._index += 1

    def flush(self) -> None:
        self._raw.flush()

    def fileno(self) -> int:
        return self._raw.fileno()

    def finish(self) -> None:
        """Seal what is left as the final chunk (an empty file is one empty final chunk)."""
        if self._buffer is not None:
            self._raw.write(self._cipher.seal(self._index, bytes(self._buffer), True))
            self._buffer = None  # type: ignore[assignment]
        self._raw.flush()

    def close(self) -> None:
        self._raw.close()


def open_for_writing(path: Path, final_name: str) -> BinaryIO | SealingFile:
    """A new export file at `path` (renamed to `final_name` when complete): sealed when there is a key."""
    raw = open(path, "wb", buffering=1 << 20)
    ring = keyring.current()
    return SealingFile(raw, ring, final_name) if ring is not None else raw


def finish(f: BinaryIO | SealingFile) -> None:
    if isinstance(f, SealingFile):
        f.finish()
    else:
        f.flush()


def _header_of(path: Path) -> Header | None:
    with open(path, "rb") as f:
        start = f.read(MAX_HEADER)
    return Header.parse(start) if start.startswith(MAGIC) else None


def plain_size(path: Path) -> int:
    header = _header_of(path)
    stored = path.stat().st_size
    return stored if header is None else header.plain_size(stored)


def chunks(path: Path) -> Iterator[bytes]:
    """The plaintext of an export file, chunk by chunk (a file without a header, as it is)."""
    header = _header_of(path)
    with open(path, "rb") as f:
        if header is None:
            while block := f.read(CHUNK):
                yield block
            return
        ring = keyring.current()
        if ring is None:
            raise keyring.KeyRingError("an encrypted export file, and no key configured")
        cipher = ChunkCipher(header, ring.key(header.kid), path.name)
        count = header.chunk_count(path.stat().st_size)
        f.seek(header.size)
        for index in range(count):
            final = index == count - 1
            yield cipher.open(index, f.read(header.chunk + TAG), final)


def lines(path: Path) -> Iterator[bytes]:
    """The NDJSON lines of an export file."""
    rest = b""
    for block in chunks(path):
        rest += block
        *complete, rest = rest.split(b"\n")
        yield from complete
    if rest:
        yield rest
