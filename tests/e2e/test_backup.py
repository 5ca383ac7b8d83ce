"""`backup` while the server runs and `restore` into a fresh place, with and without encryption:
resources and a photo read back over HTTP from a server started on the restored database."""

from __future__ import annotations

import tarfile

import httpx
import pytest

pytest.importorskip("PIL", reason="the photo is made with Pillow (the test extra)")

from tests.e2e.at_rest_support import MARKER, cli, files_holding, serve_refused, write_marked_data  # noqa: E402
from tests.fixtures.media import jpeg  # noqa: E402
from tests.support import FHIR_JSON, ServerProcess  # noqa: E402


@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "encrypted"])
def test_backup_while_running_then_restore_and_serve(tmp_path, encrypted):
    key_args: list[str] = []
    if encrypted:
        key_file = tmp_path / "keys.json"
        assert cli("keys", "generate", str(key_file)).returncode == 0
        key_args = ["--encryption-key-file", str(key_file)]
    source, restored = tmp_path / "live", tmp_path / "restored"
    source.mkdir()
    backup_file = tmp_path / "backups" / "fhir-backup.tar"
    server = ServerProcess(source / "fhir.db", log_path=tmp_path / "live.log", extra_args=key_args).start()
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            ids = write_marked_data(client)
            r = client.post("/Binary", content=jpeg(), headers={"Content-Type": "image/jpeg",
                                                                 "X-Security-Context": f"Patient/{ids['patient']}"})
            assert r.status_code == 201, r.text
            photo_id = r.json()["id"]
            photo = client.get(f"/Binary/{photo_id}").content
            made = cli("backup", "--database", f"sqlite:///{source / 'fhir.db'}", "--to", str(backup_file), *key_args)
            assert made.returncode == 0, made.stderr  # online: the server keeps running and writing
            later = client.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
            assert later.status_code == 201
    finally:
        server.stop()
    assert oct(backup_file.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(backup_file) as tar:
        names = tar.getnames()
    assert "fhir.db" in names and "manifest.json" in names and len([n for n in names if n.startswith("blobs/")]) == 2
    again = cli("backup", "--database", f"sqlite:///{source / 'fhir.db'}", "--to", str(backup_file), *key_args)
    assert again.returncode == 2 and "exists" in again.stderr
    if encrypted:
        assert MARKER.encode() not in backup_file.read_bytes()
        assert "encrypted under key" in made.stdout
        # without the key, the backup does not restore (and nothing is put in place)
        refused = cli("restore", "--from", str(backup_file), "--database", f"sqlite:///{restored / 'fhir.db'}")
        assert refused.returncode == 2 and "does not open" in refused.stderr and "Traceback" not in refused.stderr
        assert not (restored / "fhir.db").exists()
    else:
        assert MARKER.encode() in backup_file.read_bytes()  # the control: a clear backup holds the data as is

    url = f"sqlite:///{restored / 'fhir.db'}"
    done = cli("restore", "--from", str(backup_file), "--database", url, *key_args)
    assert done.returncode == 0, done.stderr
    overwrite = cli("restore", "--from", str(backup_file), "--database", url, *key_args)
    assert overwrite.returncode == 2 and "--force" in overwrite.stderr
    forced = cli("restore", "--from", str(backup_file), "--database", url, "--force", *key_args)
    assert forced.returncode == 0, forced.stderr
    if encrypted:
        assert files_holding(restored) == []
        assert serve_refused(restored / "fhir.db").returncode == 2  # no key: the restored store stays closed

    server = ServerProcess(restored / "fhir.db", log_path=tmp_path / "restored.log", extra_args=key_args).start()
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            assert client.get(f"/Patient/{ids['patient']}").json()["name"][0]["family"] == MARKER
            assert client.get("/Patient", params={"family": MARKER}).json()["total"] == 1
            assert client.get(f"/Patient/{later.json()['id']}").status_code == 404  # written after the snapshot
            assert client.get(f"/Binary/{photo_id}").content == photo
            assert client.get(f"/Binary/{ids['video']}").content == ids["video_bytes"]
            # restore over a running server's database is refused even with --force
            busy = cli("restore", "--from", str(backup_file), "--database", url, "--force", *key_args)
            assert busy.returncode == 2 and "stop it" in busy.stderr
    finally:
        server.stop()


def test_restore_refuses_what_is_not_a_backup(tmp_path):
    bogus = tmp_path / "bogus.tar"
    with tarfile.open(bogus, "w") as tar:
        evil = tmp_path / "evil"
        evil.write_text("x")
        tar.add(evil, "../evil")
    r = cli("restore", "--from", str(bogus), "--database", f"sqlite:///{tmp_path / 'db' / 'fhir.db'}")
    assert r.returncode == 2 and "unexpected member" in r.stderr
    assert not (tmp_path / "db" / "fhir.db").exists()
    r = cli("backup", "--database", "mongodb://localhost/fhir", "--to", str(tmp_path / "m.tar"))
    assert r.returncode == 2 and "mongodump" in r.stderr
