"""Pieces the benchmark scripts share: a server in a subprocess, a free port, reshaped values.

Imported by the scripts in this folder (run as `python bench/<script>.py`, which puts bench/ on sys.path).
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reshape(value: str, rnd: random.Random) -> str:
    """A new value with the old one's shape (digit for digit, letter for letter): identifiers, phones."""
    out = []
    for ch in value:
        if ch.isdigit():
            out.append(rnd.choice("0123456789"))
        elif ch.isupper():
            out.append(rnd.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        elif ch.islower():
            out.append(rnd.choice("abcdefghijklmnopqrstuvwxyz"))
        else:
            out.append(ch)
    return "".join(out)


class Server:
    """A server subprocess in its own process group, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, argv: list[str], port: int, log_path: Path):
        self.port, self.log_path = port, log_path
        self.log = open(log_path, "wb")
        # Own session: a Ctrl-C in the terminal reaches only us, and we stop the server in order.
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until GET /metadata answers 200 (or the process dies, or `timeout` seconds pass)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/metadata", headers={"Accept": "application/fhir+json"})
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not answering /metadata after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        if not self.log.closed:
            self.log.close()
