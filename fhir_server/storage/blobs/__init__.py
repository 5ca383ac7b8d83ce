"""Binary content apart from resource JSON: files beside the SQLite database, GridFS in MongoDB."""

from __future__ import annotations

from typing import Any

from .base import BlobInfo, BlobStore, binary_id_of, valid_key
from .files import FileBlobStore
from .gridfs import GridFSBlobStore


def blob_store_for(store: Any) -> BlobStore:
    """The blob store that goes with a (not yet wrapped) record store: `<db file>.blobs/` for the
    embedded SQLite store, GridFS in the same database for MongoDB."""
    path = getattr(store, "path", None)
    if isinstance(path, str):
        return FileBlobStore.beside(path)
    if type(store).__name__ == "MongoStore":
        return GridFSBlobStore(lambda: store._db)
    raise ValueError(f"no blob store is known for {type(store).__name__}")


__all__ = ["BlobInfo", "BlobStore", "FileBlobStore", "GridFSBlobStore", "binary_id_of", "blob_store_for",
           "valid_key"]
