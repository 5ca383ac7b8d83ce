"""Running the simulator as a child process (`python -m mappers.gateway_sim`) on a free loopback
port, for end-to-end tests: `with GatewaySimProcess() as sim: httpx.post(sim.url + "/script", ...)`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewaySimProcess:
    def __init__(self, port: int | None = None, *, log_path: Path | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "GatewaySimProcess":
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mappers.gateway_sim", "--port", str(self.port)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway simulator exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway simulator did not answer within {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def control(self, **settings) -> dict:
        response = httpx.post(f"{self.url}/control", json=settings, timeout=5.0)
        response.raise_for_status()
        return response.json()

    def messages(self) -> list[dict]:
        return httpx.get(f"{self.url}/messages", timeout=5.0).json()

    def deliveries(self) -> list[dict]:
        return httpx.get(f"{self.url}/deliveries", timeout=5.0).json()

    def __enter__(self) -> "GatewaySimProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
