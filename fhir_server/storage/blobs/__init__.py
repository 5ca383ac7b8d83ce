"""Binary content apart from resource JSON: files beside the SQLite database, GridFS in MongoDB."""

from __future__ import annotations

from typing import Any

from ...security import keyring
from .base import BlobInfo, BlobStore, binary_id_of, valid_key
from .cipher import BlobIntegrityError
from .encrypted import EncryptedBlobStore
from .files import FileBlobStore
from .gridfs import GridFSBlobStore


def blob_store_for(store: Any) -> EncryptedBlobStore:
    """The blob store that goes with a (not yet wrapped) record store: `<db file>.blobs/` for the
    embedded SQLite store, GridFS in the same database for MongoDB; either way behind the
    encrypting wrapper, which uses the process's key ring (and reads blobs written without one)."""
    path = getattr(store, "path", None)
    if isinstance(path, str):
        inner: BlobStore = FileBlobStore.beside(path)
    elif type(store).__name__ == "MongoStore":
        inner = GridFSBlobStore(lambda: store._db)
    else:
        raise ValueError(f"no blob store is known for {type(store).__name__}")
    return EncryptedBlobStore(inner, keyring.current)


__all__ = ["BlobInfo", "BlobIntegrityError", "BlobStore", "EncryptedBlobStore", "FileBlobStore", "GridFSBlobStore",
           "binary_id_of", "blob_store_for", "valid_key"]
