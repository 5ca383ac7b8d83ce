"""The administration CLI end to end: `python -m fhir_server clients|users|keys ...` as a child
process against a temporary SQLite database, as an operator runs it. Refusals exit 2 with one
line on stderr; secrets and their hashes never reach the output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from joserfc.jwk import ECKey, RSAKey

from smart_auth.passwords import verify_secret
from smart_auth.store import AuthRecords, open_record_store
from tests.support import ROOT

SECRET = "s3cr3t-Client-Secret-value"
PASSWORD = "Tr0ub4dor&3-password"
PATIENT_SCOPES = "launch/patient openid fhirUser offline_access patient/*.rs"


@pytest.fixture()
def db(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'fhir.db'}"


def run(*args: str, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_")}
    return subprocess.run([sys.executable, "-m", "fhir_server", *args], cwd=ROOT, input=input, capture_output=True,
                          text=True, timeout=120, env={**environment, **(env or {})})


def ok(*args: str, **kwargs) -> list[str]:
    result = run(*args, **kwargs)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def refused(*args: str, **kwargs) -> str:
    result = run(*args, **kwargs)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    return result.stderr


def records(db: str) -> AuthRecords:
    store = open_record_store(db)
    store.open()
    return AuthRecords(store)


def public_jwks(tmp_path: Path) -> Path:
    rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    ec = ECKey.generate_key("P-384", parameters={"kid": "ec-1"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa.as_dict(private=False), ec.as_dict(private=False)]}))
    return path


# -- clients -----------------------------------------------------------------------------------------

def test_public_client_add_list_remove(db):
    assert ok("clients", "add", "--database", db, "--client-id", "patient-app", "--public",
              "--redirect-uri", "https://app.example/cb", "--redirect-uri", "http://localhost:9000/cb",
              "--launch-url", "https://app.example/launch", "--scope", PATIENT_SCOPES, "--name", "Patient app") \
        == ["added public client patient-app"]
    assert ok("clients", "list", "--database", db) == [
        f"patient-app\tpublic\t{PATIENT_SCOPES}\thttps://app.example/cb http://localhost:9000/cb"]
    client = records(db).client("patient-app")
    assert (client.kind, client.launch_url, client.name, client.secret_hash) == (
        "public", "https://app.example/launch", "Patient app", None)
    assert ok("clients", "remove", "--database", db, "--client-id", "patient-app") == ["removed client patient-app"]
    assert ok("clients", "list", "--database", db) == []
    assert "no client 'patient-app'" in refused("clients", "remove", "--database", db, "--client-id", "patient-app")


def test_symmetric_client_secret_is_hashed_and_never_printed(db):
    added = run("clients", "add", "--database", db, "--client-id", "clinic", "--secret", SECRET,
                "--redirect-uri", "https://clinic.example/cb", "--scope", "launch openid fhirUser user/*.cruds")
    listed = run("clients", "list", "--database", db)
    for result in (added, listed):
        assert result.returncode == 0, result.stderr
        assert SECRET not in result.stdout + result.stderr and "$argon2" not in result.stdout + result.stderr
    assert listed.stdout.split("\t")[:2] == ["clinic", "symmetric"]
    client = records(db).client("clinic")
    assert client.secret_hash.startswith("$argon2id$") and verify_secret(client.secret_hash, SECRET)
    assert client.auth_method == "client_secret_basic"


def test_secret_and_password_from_stdin(db):
    ok("clients", "add", "--database", db, "--client-id", "c", "--secret", "-", "--redirect-uri", "https://c.example/cb",
       "--scope", "user/*.rs", input=SECRET + "\n")
    ok("users", "add", "--database", db, "--username", "dr", "--password", "-", "--fhir-user", "Practitioner/p1",
       input=PASSWORD + "\n")
    store = records(db)
    assert verify_secret(store.client("c").secret_hash, SECRET)
    assert verify_secret(store.user("dr").password_hash, PASSWORD)
    assert "nothing on standard input" in refused("users", "add", "--database", db, "--username", "x", "--password", "-",
                                                  "--fhir-user", "Patient/1", input="")


def test_asymmetric_clients(db, tmp_path):
    assert ok("clients", "add", "--database", db, "--client-id", "ehr", "--jwks", str(public_jwks(tmp_path)),
              "--scope", "system/*.rs") == ["added asymmetric client ehr (backend services)"]
    assert ok("clients", "add", "--database", db, "--client-id", "app", "--jwks-url", "https://app.example/jwks.json",
              "--redirect-uri", "https://app.example/cb", "--scope", "openid fhirUser user/*.rs") \
        == ["added asymmetric client app"]
    assert ok("clients", "list", "--database", db) == [
        "app\tasymmetric\topenid fhirUser user/*.rs\thttps://app.example/cb",
        "ehr\tasymmetric\tsystem/*.rs\t-",
    ]
    store = records(db)
    assert [k["kid"] for k in store.client("ehr").jwks["keys"]] == ["rsa-1", "ec-1"]
    assert store.client("app").jwks_url == "https://app.example/jwks.json"
    assert store.client("ehr").auth_method == "private_key_jwt"


def _jwks_file(tmp_path: Path, content: object) -> str:
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_jwks_validation(db, tmp_path):
    private = RSAKey.generate_key(2048, parameters={"kid": "k"}).as_dict(private=True)
    public = {k: v for k, v in private.items() if k in ("kty", "kid", "n", "e")}
    cases = {
        "private or secret parts": {"keys": [private]},
        '"keys" array': {"keys": []},
        "not JSON": "{nope",
        'needs string "kty" and "kid"': {"keys": [{k: v for k, v in public.items() if k != "kid"}]},
        "appears twice": {"keys": [public, public]},
        "only EC, OKP, RSA public keys": {"keys": [{"kty": "oct", "kid": "s"}]},
        "is not a valid RSA public key": {"keys": [{"kty": "RSA", "kid": "r", "n": "abc"}]},
    }
    for message, content in cases.items():
        stderr = refused("clients", "add", "--database", db, "--client-id", "ehr", "--jwks", _jwks_file(tmp_path, content),
                         "--scope", "system/*.rs")
        assert message in stderr and stderr.count("\n") == 1, (message, stderr)
        assert private["d"] not in stderr
    assert "cannot read the JWK Set file" in refused("clients", "add", "--database", db, "--client-id", "ehr",
                                                    "--jwks", str(tmp_path / "missing.json"), "--scope", "system/*.rs")
    assert ok("clients", "list", "--database", db) == []


@pytest.mark.parametrize("args, message", [
    (["--public", "--scope", "patient/*.rs"], "a public client needs at least one --redirect-uri"),
    (["--secret", SECRET, "--scope", "patient/*.rs"], "a symmetric client needs at least one --redirect-uri"),
    (["--public", "--redirect-uri", "/cb", "--scope", "patient/*.rs"], "--redirect-uri must be an absolute http(s) URL"),
    (["--public", "--redirect-uri", "https://a.example/cb#x", "--scope", "patient/*.rs"], "without a fragment"),
    (["--public", "--redirect-uri", "myapp://cb", "--scope", "patient/*.rs"], "absolute http(s) URL"),
    (["--public", "--redirect-uri", "https://a.example/cb", "--scope", "patient/*.rx"], "invalid scope"),
    (["--public", "--redirect-uri", "https://a.example/cb", "--scope", "patient/Patient.read?x=1"], "invalid scope"),
    (["--public", "--redirect-uri", "https://a.example/cb", "--scope", "offline-access patient/*.rs"],
     "unknown scope 'offline-access'"),
    (["--public", "--redirect-uri", "https://a.example/cb", "--scope", " "], "at least one scope"),
    (["--public", "--redirect-uri", "https://a.example/cb", "--launch-url", "launch.html", "--scope", "launch"],
     "--launch-url must be an absolute"),
    (["--jwks-url", "http://keys.example/jwks", "--scope", "system/*.rs"], "--jwks-url must use https"),
    (["--secret", "", "--redirect-uri", "https://a.example/cb", "--scope", "user/*.rs"], "--secret must not be empty"),
])
def test_client_validation(db, args, message):
    stderr = refused("clients", "add", "--database", db, "--client-id", "app", *args)
    assert message in stderr and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert SECRET not in stderr


def test_client_argument_errors(db):
    both = refused("clients", "add", "--database", db, "--client-id", "a", "--public", "--secret", SECRET,
                   "--redirect-uri", "https://a.example/cb", "--scope", "user/*.rs")
    assert "not allowed with argument" in both
    assert "one of the arguments --public --secret --jwks --jwks-url is required" in refused(
        "clients", "add", "--database", db, "--client-id", "a", "--scope", "user/*.rs")
    assert "--client-id must be" in refused("clients", "add", "--database", db, "--client-id", "a b", "--public",
                                            "--redirect-uri", "https://a.example/cb", "--scope", "user/*.rs")


def test_duplicate_client_is_refused(db):
    add = ["clients", "add", "--database", db, "--client-id", "app", "--public", "--redirect-uri", "https://a.example/cb"]
    ok(*add, "--scope", "patient/*.rs")
    assert "client 'app' already exists" in refused(*add, "--scope", "patient/*.cruds")
    assert records(db).client("app").scope == "patient/*.rs"


# -- users -------------------------------------------------------------------------------------------

def test_users_add_list_remove(db):
    added = run("users", "add", "--database", db, "--username", "alice", "--password", PASSWORD, "--fhir-user", "Patient/p-1")
    assert added.returncode == 0 and added.stdout == "added user alice (Patient/p-1)\n"
    ok("users", "add", "--database", db, "--username", "dr.bob", "--password", PASSWORD, "--fhir-user", "Practitioner/42")
    listed = run("users", "list", "--database", db)
    assert listed.stdout.splitlines() == ["alice\tPatient/p-1", "dr.bob\tPractitioner/42"]
    for result in (added, listed):
        assert PASSWORD not in result.stdout + result.stderr and "$argon2" not in result.stdout + result.stderr
    user = records(db).user("alice")
    assert verify_secret(user.password_hash, PASSWORD) and user.patient_id == "p-1"
    assert "user 'alice' already exists" in refused("users", "add", "--database", db, "--username", "alice",
                                                   "--password", "x", "--fhir-user", "Patient/p-1")
    assert ok("users", "remove", "--database", db, "--username", "alice") == ["removed user alice"]
    assert ok("users", "list", "--database", db) == ["dr.bob\tPractitioner/42"]
    assert "no user 'alice'" in refused("users", "remove", "--database", db, "--username", "alice")


@pytest.mark.parametrize("fhir_user", ["Organization/1", "Patient/", "Patient", "patient/1", "Patient/a b",
                                       "https://x/Patient/1", "Patient/1/_history/2"])
def test_user_fhir_user_validation(db, fhir_user):
    stderr = refused("users", "add", "--database", db, "--username", "u", "--password", PASSWORD, "--fhir-user", fhir_user)
    assert "--fhir-user must be Patient/<id> or Practitioner/<id>" in stderr and PASSWORD not in stderr


def test_user_password_must_not_be_empty(db):
    assert "--password must not be empty" in refused("users", "add", "--database", db, "--username", "u", "--password", "",
                                                     "--fhir-user", "Patient/1")


# -- signing-keys ----------------------------------------------------------------------------------------

def test_signing_keys_rotate_and_list(db):
    assert ok("signing-keys", "list", "--database", db) == []
    first = ok("signing-keys", "rotate", "--database", db)[0].split()[3]
    second = ok("signing-keys", "rotate", "--database", db)[0].split()[3]
    lines = [line.split("\t") for line in ok("signing-keys", "list", "--database", db)]
    assert [kid for kid, _, _ in lines] == [first, second]
    assert lines[0][2] != "-" and lines[1][2] == "-"  # the old key retired, the new one signs
    listed = "\n".join("\t".join(line) for line in lines)
    assert '"d"' not in listed and "private" not in listed
    stored = records(db).signing_keys()
    assert {k.kid for k in stored} == {first, second}


# -- the database ------------------------------------------------------------------------------------

def test_database_defaults_to_fhir_database(tmp_path):
    env = {"FHIR_DATABASE": f"sqlite:///{tmp_path / 'env.db'}"}
    ok("users", "add", "--username", "u", "--password", PASSWORD, "--fhir-user", "Patient/1", env=env)
    assert ok("users", "list", env=env) == ["u\tPatient/1"]
    assert (tmp_path / "env.db").exists()


def test_unsupported_database_url():
    stderr = refused("clients", "list", "--database", "postgres://db/fhir")
    assert stderr == "error: --database: unsupported database URL scheme: postgres\n"
