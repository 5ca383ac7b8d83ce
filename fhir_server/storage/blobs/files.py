"""Blobs as files beside the SQLite database: `<db>.blobs/<first two characters>/<key>`.

Each upload goes to a temporary file under `<db>.blobs/tmp/`, is fsynced, renamed into place
and its directory fsynced, so a blob that exists is complete and durable. File I/O runs in
threads: the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterable, AsyncIterator

from .base import READ_CHUNK, BlobInfo, valid_key


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._tmp = self.root / "tmp"

    @classmethod
    def beside(cls, database_path: str | Path) -> "FileBlobStore":
        return cls(f"{database_path}.blobs")

    async def open(self) -> None:
        await asyncio.to_thread(self._tmp.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    def path_of(self, key: str) -> Path:
        if not valid_key(key):
            raise ValueError("invalid blob key")
        return self.root / key[:2] / key

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> BlobInfo:
        final = self.path_of(key)
        fd, tmp_name = await asyncio.to_thread(tempfile.mkstemp, dir=self._tmp, prefix=".upload-")
        digest = hashlib.sha1()
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    if not chunk:
                        continue
                    digest.update(chunk)
                    size += len(chunk)
                    await asyncio.to_thread(f.write, chunk)
                await asyncio.to_thread(_flush_and_sync, f)
            await asyncio.to_thread(_place, Path(tmp_name), final)
        except BaseException:
            await asyncio.to_thread(_unlink, Path(tmp_name))
            raise
        return BlobInfo(key, size, base64.b64encode(digest.digest()).decode("ascii"))

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(os.stat, self.path_of(key))).st_size
        except (FileNotFoundError, ValueError):
            return None

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(open, self.path_of(key), "rb")
        try:
            await asyncio.to_thread(f.seek, start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                want = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                chunk = await asyncio.to_thread(f.read, want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(f.close)

    async def delete(self, key: str) -> None:
        try:
            path = self.path_of(key)
        except ValueError:
            return
        await asyncio.to_thread(_unlink, path)

    async def listing(self) -> AsyncIterator[tuple[str, datetime]]:
        entries = await asyncio.to_thread(self._scan)
        for entry in entries:
            yield entry

    def _scan(self) -> list[tuple[str, datetime]]:
        found = []
        if not self.root.is_dir():
            return found
        for shard in self.root.iterdir():
            if shard.name == "tmp" or not shard.is_dir():
                continue
            for path in shard.iterdir():
                if valid_key(path.name):
                    found.append((path.name, datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)))
        return found

    def stale_uploads(self, older_than: datetime) -> list[Path]:
        """Temporary files left by a crash in the middle of an upload."""
        if not self._tmp.is_dir():
            return []
        return [p for p in self._tmp.iterdir()
                if datetime.fromtimestamp(p.stat().st_mtime, timezone.utc) < older_than]


def _flush_and_sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def _place(tmp: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
