"""Starting the real server (uvicorn in a child process, on a free loopback port) for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
# A real 1x1 PNG, base64: a Binary declared image/png must hold PNG bytes (fhir_server/media/sniff.py)
ONE_PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, database: Path, *, port: int | None = None, extra_args: list[str] | None = None,
                 log_path: Path | None = None, auth: bool = False, env: dict[str, str] | None = None):
        self.database = database
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args or []
        self.log_path = log_path or database.with_suffix(".log")
        self.auth = auth  # False: --no-auth, as every test that is not about authorization runs
        self.env = env or {}  # FHIR_* settings read at start-up, for this server only (and its restarts)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fhir_server", "serve", *([] if self.auth else ["--no-auth"]), "--host", "127.0.0.1",
             "--port", str(self.port), "--database", f"sqlite:///{self.database}", *self.extra_args],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.base}/metadata", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer within {timeout}s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushes, as a crash or OOM kill would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def module_server(name: str, *extra_args: str):
    """Fixtures for a test module with its own server: `server` (a real server on a fresh database,
    for the whole module) and `client` (an httpx client speaking FHIR JSON to it).
    Use: `server, client = module_server("visit", "--visit-fee", "42.50 USD")`."""
    import pytest

    @pytest.fixture(scope="module")
    def server(tmp_path_factory):
        proc = ServerProcess(tmp_path_factory.mktemp(name) / "fhir.db", extra_args=list(extra_args)).start()
        yield proc
        proc.stop()

    @pytest.fixture()
    def client(server):
        with httpx.Client(base_url=server.base, timeout=30.0, headers=FHIR_JSON) as c:
            yield c

    return server, client
