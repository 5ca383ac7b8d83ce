"""Data at rest encrypted, against the real server: SQLCipher for the store, AES-GCM for blobs.

A marker written in a resource and in a video appears in no file of the data directory while the
server runs (WAL present) or after it stopped; the store does not open without its key or with a
wrong one (a clear error, exit status 2); HTTP Range reads cross chunk boundaries; `keys rotate`
re-keys the database, re-encrypts blobs and leaves old data readable; an unencrypted store is
refused under a key until `keys rotate` encrypts it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from fhir_server.storage.blobs.cipher import CHUNK, MAGIC
from tests.e2e.at_rest_support import MARKER, cli, files_holding, serve_refused, write_marked_data
from tests.support import FHIR_JSON, ServerProcess


def started(data: Path, logs: Path, *extra: str) -> ServerProcess:
    return ServerProcess(data / "fhir.db", log_path=logs / "server.log", extra_args=list(extra)).start()


def blob_files(data: Path) -> list[Path]:
    return [p for p in (data / "fhir.db.blobs").rglob("*") if p.is_file() and p.parent.name != "tmp"]


@pytest.fixture()
def dirs(tmp_path):
    data, logs = tmp_path / "data", tmp_path / "logs"
    data.mkdir()
    logs.mkdir()
    return data, logs


@pytest.fixture()
def key_file(tmp_path) -> Path:
    path = tmp_path / "keys" / "fhir-keys.json"
    path.parent.mkdir()
    r = cli("keys", "generate", str(path))
    assert r.returncode == 0, r.stderr
    return path


def test_without_a_key_the_marker_is_on_disk_and_the_server_warns(dirs):
    """The control: the scan finds the marker when nothing is encrypted."""
    data, logs = dirs
    server = started(data, logs)
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            write_marked_data(client)
        found = files_holding(data)
    finally:
        server.stop()
    assert "fhir.db-wal" in found or "fhir.db" in found
    assert any(name.startswith("fhir.db.blobs/") for name in found)
    assert "data at rest is not encrypted" in (logs / "server.log").read_text()


def test_with_a_key_the_marker_is_nowhere_on_disk_and_the_key_is_required(dirs, key_file, tmp_path):
    data, logs = dirs
    server = started(data, logs, "--encryption-key-file", str(key_file))
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            ids = write_marked_data(client)
            assert client.get(f"/Patient/{ids['patient']}").json()["name"][0]["family"] == MARKER
            assert client.get("/Patient", params={"family": MARKER}).json()["total"] == 1
            assert (data / "fhir.db-wal").exists()  # the server is running: its WAL holds recent pages
            # a Bulk export's files hold patient data too: sealed on disk, plaintext when downloaded
            kick = client.get("/$export", params={"_type": "Patient"}, headers={"Prefer": "respond-async"})
            assert kick.status_code == 202, kick.text
            deadline = time.monotonic() + 60
            while (status := client.get(kick.headers["Content-Location"])).status_code != 200:
                assert status.status_code in (202, 429) and time.monotonic() < deadline, status.text
                time.sleep(1.0)
            [output] = status.json()["output"]
            download = client.get(output["url"])
            assert download.status_code == 200 and MARKER in download.text
            assert int(download.headers["content-length"]) == len(download.content)
            assert list((data / "fhir.db.exports").rglob("*.ndjson"))  # the file is there, sealed
            assert files_holding(data) == []
            # HTTP Range across the boundary between the first and second 64 KiB chunks
            video = ids["video_bytes"]
            start, end = CHUNK - 100, CHUNK + 100
            r = client.get(f"/Binary/{ids['video']}", headers={"Range": f"bytes={start}-{end - 1}"})
            assert r.status_code == 206 and r.content == video[start:end]
            assert client.get(f"/Binary/{ids['video']}").content == video
            assert client.get(f"/Binary/{ids['video']}").headers["x-binary-size"] == str(len(video))
    finally:
        server.stop()
    assert files_holding(data) == []
    assert (data / "fhir.db").read_bytes()[:16] != b"SQLite format 3\x00"
    assert all(p.read_bytes().startswith(MAGIC) for p in blob_files(data))
    log = (logs / "server.log").read_text()
    assert "data at rest is encrypted" in log and MARKER not in log

    # no key, a wrong key, a malformed key file: a clear refusal, no traceback
    no_key = serve_refused(data / "fhir.db")
    assert no_key.returncode == 2
    assert "is encrypted" in no_key.stderr and "--encryption-key-file" in no_key.stderr
    other = tmp_path / "other.json"
    assert cli("keys", "generate", str(other)).returncode == 0
    wrong = serve_refused(data / "fhir.db", "--encryption-key-file", str(other))
    assert wrong.returncode == 2 and "none of the 1 keys" in wrong.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    bad = serve_refused(data / "fhir.db", "--encryption-key-file", str(broken))
    assert bad.returncode == 2 and "not a key ring" in bad.stderr
    for r in (no_key, wrong, bad):
        assert "Traceback" not in r.stderr + r.stdout
    # the administration commands honour FHIR_ENCRYPTION_KEY_FILE (and refuse cleanly without it)
    assert cli("clients", "list", "--database", f"sqlite:///{data / 'fhir.db'}").returncode == 2
    listed = cli("clients", "list", "--database", f"sqlite:///{data / 'fhir.db'}",
                 env={"FHIR_ENCRYPTION_KEY_FILE": str(key_file)})
    assert listed.returncode == 0, listed.stderr
    # FHIR_ENCRYPTION_KEY carries the ring itself (containers)
    env = {"FHIR_ENCRYPTION_KEY": key_file.read_text()}
    assert cli("clients", "list", "--database", f"sqlite:///{data / 'fhir.db'}", env=env).returncode == 0


def test_rotation_rekeys_the_database_reencrypts_blobs_and_keeps_old_data_readable(dirs, key_file, tmp_path):
    data, logs = dirs
    url = f"sqlite:///{data / 'fhir.db'}"
    server = started(data, logs, "--encryption-key-file", str(key_file))
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            ids = write_marked_data(client)
        running = cli("keys", "rotate", "--encryption-key-file", str(key_file), "--database", url)
        assert running.returncode == 2 and "stop it" in running.stderr  # refused while the server runs
    finally:
        server.stop()
    old_ring = json.loads(key_file.read_text())
    old_only = tmp_path / "old-only.json"
    old_only.write_text(key_file.read_text())

    done = cli("keys", "rotate", "--encryption-key-file", str(key_file), "--database", url)
    assert done.returncode == 0, done.stderr
    assert "re-keyed" in done.stdout and "1 re-encrypted" in done.stdout
    new_ring = json.loads(key_file.read_text())
    assert new_ring["primary"] != old_ring["primary"]
    assert set(new_ring["keys"]) == {old_ring["primary"], new_ring["primary"]}  # the old key stays until removed
    for blob in blob_files(data):
        assert new_ring["primary"].encode() in blob.read_bytes()[:100]
    assert serve_refused(data / "fhir.db", "--encryption-key-file", str(old_only)).returncode == 2
    listed = cli("keys", "list", "--encryption-key-file", str(key_file))
    assert f"{new_ring['primary']}\tprimary" in listed.stdout and new_ring["keys"][new_ring["primary"]] not in listed.stdout

    # only the new key, and everything reads back
    only_new = tmp_path / "new-only.json"
    only_new.write_text(json.dumps({"primary": new_ring["primary"],
                                    "keys": {new_ring["primary"]: new_ring["keys"][new_ring["primary"]]}}))
    server = started(data, logs, "--encryption-key-file", str(only_new))
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            assert client.get(f"/Patient/{ids['patient']}").json()["name"][0]["family"] == MARKER
            assert client.get(f"/Binary/{ids['video']}").content == ids["video_bytes"]
            assert client.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON).status_code == 201
    finally:
        server.stop()
    assert files_holding(data) == []


def test_an_unencrypted_store_is_refused_under_a_key_until_rotate_encrypts_it(dirs, key_file):
    data, logs = dirs
    server = started(data, logs)
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            ids = write_marked_data(client)
    finally:
        server.stop()
    refused = serve_refused(data / "fhir.db", "--encryption-key-file", str(key_file))
    assert refused.returncode == 2 and "is not encrypted" in refused.stderr and "keys rotate" in refused.stderr
    done = cli("keys", "rotate", "--encryption-key-file", str(key_file), "--database", f"sqlite:///{data / 'fhir.db'}")
    assert done.returncode == 0, done.stderr
    assert "encrypted (it was not)" in done.stdout
    assert files_holding(data) == []
    server = started(data, logs, "--encryption-key-file", str(key_file))
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            assert client.get(f"/Patient/{ids['patient']}").json()["name"][0]["family"] == MARKER
            assert client.get("/Patient", params={"family": MARKER}).json()["total"] == 1
            assert client.get(f"/Binary/{ids['video']}").content == ids["video_bytes"]
    finally:
        server.stop()


def test_key_files_are_never_overwritten(key_file):
    before = key_file.read_text()
    again = cli("keys", "generate", str(key_file))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    assert key_file.read_text() == before
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
