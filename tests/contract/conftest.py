"""The storage contract suites run against every backend: the embedded SQLite store always, and
MongoDB when it lands (parametrized here, skipped with a reason when no server is configured)."""

from __future__ import annotations

import pytest

from fhir_server.search.extract import extract_index
from fhir_server.storage import open_store

BACKENDS = ["sqlite"]


@pytest.fixture(params=BACKENDS)
async def store(request, tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'contract.db'}", indexer=extract_index)
    await s.open()
    yield s
    await s.close()
