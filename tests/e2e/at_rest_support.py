"""Helpers of the data-at-rest tests (encryption, backup): CLI runs, markers, files on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import FHIR_JSON, ROOT

# lower case letters and digits only, so the search index's normalised copy is the same string
MARKER = "zqxmarker7e4b"


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "fhir_server", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def serve_refused(database: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run `serve` where it must refuse to start: it has to exit by itself."""
    return cli("serve", "--no-auth", "--port", "1", "--database", f"sqlite:///{database}", *extra)


def video_with(marker: str, size: int = 300_000) -> bytes:
    """An MP4 (stored as is, not re-encoded) whose media data repeats the marker."""
    ftyp = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    filler = (marker.encode() + b"-video-frame-") * (size // 20)
    payload = filler[:size - len(ftyp) - 8]
    return ftyp + (len(payload) + 8).to_bytes(4, "big") + b"mdat" + payload


def write_marked_data(client: httpx.Client, marker: str = MARKER) -> dict:
    """A Patient named with the marker, and a video of the patient holding it; their ids."""
    r = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": marker, "given": [marker]}]},
                    headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    patient = r.json()["id"]
    video = video_with(marker)
    r = client.post("/Binary", content=video, headers={"Content-Type": "video/mp4",
                                                       "X-Security-Context": f"Patient/{patient}"})
    assert r.status_code == 201, r.text
    return {"patient": patient, "video": r.json()["id"], "video_bytes": video}


def files_holding(directory: Path, marker: str = MARKER) -> list[str]:
    """The files under `directory` whose bytes contain the marker."""
    needle = marker.encode()
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                  if p.is_file() and needle in p.read_bytes())
