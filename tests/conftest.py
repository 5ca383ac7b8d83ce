from __future__ import annotations

import httpx
import pytest

from tests.support import ServerProcess


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> ServerProcess:
    """One real server for the end-to-end tests of a session, on a fresh embedded database."""
    proc = ServerProcess(tmp_path_factory.mktemp("server") / "fhir.db").start()
    yield proc
    proc.stop()


@pytest.fixture()
def client(server: ServerProcess) -> httpx.Client:
    with httpx.Client(base_url=server.base, timeout=30.0) as c:
        yield c
