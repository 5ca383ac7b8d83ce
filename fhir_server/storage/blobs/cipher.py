"""The encrypted blob format: AES-256-GCM in fixed-size chunks, each sealed on its own.

    header = MAGIC (8) | version (1) | chunk size (4, big-endian) | kid length (1) | kid | nonce prefix (8)
    chunk i = AES-GCM(key[kid], nonce = prefix | i (4, big-endian),
                      associated data = header | i (4) | final flag (1) | blob key)

Chunks let a 200 MB video stream through in constant memory and let a range read decrypt only the
chunks it touches. Each chunk's associated data names its index and whether it is the last, so
chunks cannot be reordered and a blob cut at a chunk boundary fails on what is now its last chunk;
the header (and so the key id) and the blob's own key are bound in too, so neither a header nor
a whole blob can be swapped for another's. The prefix is random per blob (64 bits) and the index
counts within it, so no nonce repeats under a key within any realistic number of blobs.

The plaintext size follows from the ciphertext size alone (every chunk but the last is full; each
carries a 16-byte tag), so size() needs no decryption.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"\x89FHB\r\n\x1a\n"  # PNG-style: a high bit and line endings that text-mode mangling would break
VERSION = 1
CHUNK = 64 * 1024
TAG = 16
_FIXED = len(MAGIC) + 1 + 4 + 1
PREFIX = 8
MAX_HEADER = _FIXED + 255 + PREFIX


class BlobIntegrityError(Exception):
    """A blob whose ciphertext does not authenticate (tampered, truncated, or the wrong key)."""


@dataclass(frozen=True, slots=True)
class Header:
    kid: str
    chunk: int
    prefix: bytes
    raw: bytes  # the header's bytes, bound into every chunk's associated data

    @classmethod
    def new(cls, kid: str, prefix: bytes, chunk: int = CHUNK) -> "Header":
        kid_bytes = kid.encode("ascii")
        raw = MAGIC + struct.pack(">BIB", VERSION, chunk, len(kid_bytes)) + kid_bytes + prefix
        return cls(kid, chunk, prefix, raw)

    @classmethod
    def parse(cls, data: bytes) -> "Header | None":
        """The header at the start of `data`, or None when the blob is not encrypted (no magic)."""
        if not data.startswith(MAGIC):
            return None
        if len(data) < _FIXED:
            raise BlobIntegrityError("truncated blob header")
        version, chunk, kid_len = struct.unpack_from(">BIB", data, len(MAGIC))
        if version != VERSION:
            raise BlobIntegrityError(f"unknown blob format version {version}")
        end = _FIXED + kid_len + PREFIX
        if len(data) < end or chunk <= 0:
            raise BlobIntegrityError("truncated blob header")
        kid = data[_FIXED:_FIXED + kid_len].decode("ascii", "replace")
        return cls(kid, chunk, bytes(data[end - PREFIX:end]), bytes(data[:end]))

    @property
    def size(self) -> int:
        return len(self.raw)

    def chunk_count(self, stored_size: int) -> int:
        body = stored_size - self.size
        count = -(-body // (self.chunk + TAG))
        if body < TAG or body - count * TAG < 0:
            raise BlobIntegrityError("truncated blob")
        return count

    def plain_size(self, stored_size: int) -> int:
        return stored_size - self.size - self.chunk_count(stored_size) * TAG

    def stored_offset(self, index: int) -> int:
        return self.size + index * (self.chunk + TAG)


class ChunkCipher:
    """Seals and opens the chunks of one blob."""

    def __init__(self, header: Header, key: bytes, blob_key: str):
        self._aes = AESGCM(key)
        self._header = header
        self._blob_key = blob_key.encode("ascii")

    def _nonce_and_aad(self, index: int, final: bool) -> tuple[bytes, bytes]:
        position = struct.pack(">I", index)
        return (self._header.prefix + position,
                self._header.raw + position + (b"\x01" if final else b"\x00") + self._blob_key)

    def seal(self, index: int, plain, final: bool) -> bytes:
        nonce, aad = self._nonce_and_aad(index, final)
        return self._aes.encrypt(nonce, plain, aad)

    def open(self, index: int, sealed, final: bool) -> bytes:
        nonce, aad = self._nonce_and_aad(index, final)
        try:
            return self._aes.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise BlobIntegrityError(f"chunk {index} does not authenticate: the blob was altered or "
                                     "truncated, or the key is wrong") from None
