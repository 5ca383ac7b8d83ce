"""The storage contract suites run against every backend:

- "sqlite": the embedded store, always.
- "mongo": a real MongoDB server, whenever MONGODB_URL names one (a replica set, so transactions
  run; e.g. `docker compose up -d mongo` and MONGODB_URL=mongodb://127.0.0.1:27017/?replicaSet=rs0
  &directConnection=true). Each test gets a database of its own, dropped afterwards.
  Skipped with a reason otherwise.
- "mongo-fake": the MongoDB backend's own code over an in-process fake (mongomock behind an async
  adapter, fhir_server/storage/mongo/fake.py), so its queries run here and in CI without a
  server. Transactions are emulated there (snapshot and restore), not MongoDB's: see fake.py.
"""

from __future__ import annotations

import os
import uuid

import pytest

from fhir_server.search.extract import extract_index
from fhir_server.storage import open_store

BACKENDS = ["sqlite", "mongo", "mongo-fake"]

MONGO_SKIP = (
    "MongoDB contract run skipped: MONGODB_URL is not set. Set it to a MongoDB replica set to run the "
    "storage and search suites against a real server, e.g. `docker compose up -d mongo` then "
    "MONGODB_URL='mongodb://127.0.0.1:27017/?replicaSet=rs0&directConnection=true'"
)

# Tests that reach into one backend's internals; each backend has its own test of the same behaviour.
SQLITE_ONLY = {
    "test_reindex_rebuilds_a_lost_index": "wipes SQLite's index tables through store._threads "
                                          "(MongoDB: tests/unit/test_mongo_store.py::test_reindex_rebuilds_a_lost_index)",
}


@pytest.fixture(params=BACKENDS)
async def store(request, tmp_path):
    backend = request.param
    if backend != "sqlite" and request.node.originalname in SQLITE_ONLY:
        pytest.skip(f"SQLite-specific test: {SQLITE_ONLY[request.node.originalname]}")
    if backend == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'contract.db'}", indexer=extract_index)
        await s.open()
        yield s
        await s.close()
    elif backend == "mongo":
        url = os.environ.get("MONGODB_URL")
        if not url:
            pytest.skip(MONGO_SKIP)
        s = open_store(url, database=f"fhir_test_{uuid.uuid4().hex[:12]}", indexer=extract_index)
        await s.open()
        try:
            yield s
        finally:
            if s._client is None:  # a test closed it
                await s.open()
            await s._client.drop_database(s.database_name)
            await s.close()
    else:
        pytest.importorskip("mongomock", reason="the mongo-fake run needs mongomock (pip install -e '.[test]')")
        from fhir_server.storage.mongo import MongoStore
        from fhir_server.storage.mongo.fake import FakeAsyncMongoClient

        s = MongoStore("mongodb://fake/fhir", client=FakeAsyncMongoClient(), indexer=extract_index)
        await s.open()
        yield s
        await s.close()
