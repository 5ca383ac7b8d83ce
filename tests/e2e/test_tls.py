"""Transport security end to end: HTTPS with a certificate made in the test (one worker and two),
HSTS, the refusal to serve plain HTTP on a public address, and outbound calls that verify
certificates (a backend client's JWKS URL on a self-signed HTTPS server is refused unless
FHIR_OUTBOUND_CA_FILE names its CA)."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smart_auth.service import AuthService
from tests.e2e.smart_support import SmartServer, client_assertion, new_key
from tests.support import ROOT, ServerProcess, free_port

HSTS = "max-age=63072000; includeSubDomains"


# -- certificates -----------------------------------------------------------------------------------

def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate it signs for 127.0.0.1 and localhost, as PEM files."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("test CA")).issuer_name(_name("test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server-key.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def trusting(pki: dict[str, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki["ca"]))


# -- a server on HTTPS ------------------------------------------------------------------------------

class TlsServer(ServerProcess):
    """ServerProcess started with --tls-cert/--tls-key, waited for over HTTPS."""

    def __init__(self, database: Path, pki: dict[str, Path], *, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, auth: bool = False):
        super().__init__(database, auth=auth, extra_args=["--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]),
                                                          *(extra_args or [])])
        self.base = f"https://127.0.0.1:{self.port}"
        self.verify = trusting(pki)
        self.env = env or {}

    def start(self, timeout: float = 60.0) -> "TlsServer":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fhir_server", "serve", *([] if self.auth else ["--no-auth"]), "--host", "127.0.0.1",
             "--port", str(self.port), "--database", f"sqlite:///{self.database}", *self.extra_args],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base}/metadata", timeout=1.0, verify=self.verify).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer within {timeout}s; see {self.log_path}")


@pytest.fixture(scope="module")
def https_server(tmp_path_factory, pki):
    server = TlsServer(tmp_path_factory.mktemp("tls") / "fhir.db", pki).start()
    yield server
    server.stop()


def test_https_with_the_test_certificate_serves_fhir_and_sends_hsts(https_server):
    with httpx.Client(base_url=https_server.base, verify=https_server.verify, timeout=30.0) as client:
        created = client.post("/Patient", json={"resourceType": "Patient", "active": True},
                              headers={"Content-Type": "application/fhir+json"})
        assert created.status_code == 201, created.text
        read = client.get(f"/Patient/{created.json()['id']}")
        assert read.status_code == 200
        assert read.headers["strict-transport-security"] == HSTS
        assert read.headers["cache-control"] == "no-store"
        assert client.get("/metadata").headers["strict-transport-security"] == HSTS
        # the TLS version is what Python's server context allows: 1.2 or later
        assert client.get("/metadata").extensions["network_stream"].get_extra_info("ssl_object").version() in (
            "TLSv1.2", "TLSv1.3")


def test_a_client_that_does_not_trust_the_certificate_is_refused(https_server):
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https_server.base}/metadata", timeout=10.0)  # certifi's public roots only


def test_plain_http_on_the_tls_port_gets_no_fhir(https_server):
    # uvicorn answers a cleartext request on the TLS port with nothing usable
    try:
        r = httpx.get(f"http://127.0.0.1:{https_server.port}/metadata", timeout=5.0)
    except httpx.TransportError:
        return  # the connection was dropped
    assert r.status_code >= 400 and "CapabilityStatement" not in r.text


def test_https_with_two_workers(tmp_path, pki):
    server = TlsServer(tmp_path / "fhir.db", pki, extra_args=["--workers", "2"]).start()
    try:
        with httpx.Client(base_url=server.base, verify=server.verify, timeout=30.0) as client:
            for _ in range(6):  # connections land on either worker
                with httpx.Client(base_url=server.base, verify=server.verify, timeout=30.0) as fresh:
                    r = fresh.get("/metadata")
                    assert r.status_code == 200 and r.headers["strict-transport-security"] == HSTS
            assert client.get("/Patient").status_code == 200
    finally:
        server.stop()


# -- refusing plain HTTP on a public address ----------------------------------------------------------

def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--no-auth", "--port", str(free_port()),
         "--database", f"sqlite:///{tmp_path / 'fhir.db'}", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def _finished(process: subprocess.Popen, timeout: float = 60.0) -> tuple[int, str]:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        pytest.fail(f"the server started instead of refusing: {out}")
    return process.returncode, out


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "fhir.example.org"])
def test_plain_http_on_a_public_address_is_refused(tmp_path, host):
    status, out = _finished(_serve(tmp_path, "--host", host))
    assert status != 0
    assert "refusing to serve plain HTTP" in out and "--insecure-http" in out and "--tls-cert" in out
    assert not (tmp_path / "fhir.db").exists()  # refused before anything was opened


def test_a_tls_key_without_its_certificate_is_refused(tmp_path, pki):
    status, out = _finished(_serve(tmp_path, "--host", "127.0.0.1", "--tls-key", str(pki["key"])))
    assert status != 0 and "--tls-cert and --tls-key go together" in out


def test_a_certificate_that_does_not_match_its_key_is_refused(tmp_path, pki):
    other = make_pki(tmp_path)
    status, out = _finished(_serve(tmp_path, "--host", "127.0.0.1", "--tls-cert", str(pki["cert"]),
                                   "--tls-key", str(other["key"])))
    assert status != 0 and "cannot be used" in out


def test_insecure_http_on_a_public_address_starts_with_a_warning(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fhir_server", "serve", "--no-auth", "--port", str(port),
         "--database", f"sqlite:///{tmp_path / 'fhir.db'}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "FHIR_HOST": "0.0.0.0", "FHIR_INSECURE_HTTP": "1"})
    try:
        deadline = time.monotonic() + 60
        answered = None
        while time.monotonic() < deadline and answered is None and process.poll() is None:
            try:
                answered = httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=1.0)
            except httpx.TransportError:
                time.sleep(0.1)
        assert answered is not None and answered.status_code == 200
        assert "strict-transport-security" not in answered.headers  # plain HTTP: HSTS means nothing
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=20)
    warning = [line for line in out.splitlines() if "PLAIN HTTP on 0.0.0.0 (--insecure-http)" in line]
    assert warning and " WARNING " in warning[0]


def test_an_access_token_lifetime_over_an_hour_is_refused(tmp_path):
    status, out = _finished(_serve(tmp_path, "--host", "127.0.0.1", env={"FHIR_ACCESS_TOKEN_SECONDS": "3601"}))
    assert status != 0 and "FHIR_ACCESS_TOKEN_SECONDS must be between 1 and 3600" in out


def test_an_unreadable_outbound_ca_file_is_refused(tmp_path):
    status, out = _finished(_serve(tmp_path, "--host", "127.0.0.1",
                                   env={"FHIR_OUTBOUND_CA_FILE": str(tmp_path / "missing.pem")}))
    assert status != 0 and "FHIR_OUTBOUND_CA_FILE" in out


# -- outbound: a JWKS URL on HTTPS with a private CA --------------------------------------------------

@pytest.fixture(scope="module")
def private_jwks(pki):
    """An HTTPS server with the test CA's certificate, serving a backend client's public JWK Set."""
    key = new_key("ES384")
    body = json.dumps({"keys": [key.as_dict(private=False)]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki["cert"], pki["key"])
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield key, f"https://127.0.0.1:{httpd.server_address[1]}/jwks.json"
    httpd.shutdown()
    httpd.server_close()


def _backend_token_status(tmp_path: Path, jwks: tuple, env: dict[str, str]) -> tuple[int, dict]:
    key, url = jwks
    database = tmp_path / "fhir.db"
    process = ServerProcess(database, auth=True, env=env).start()
    try:
        auth = AuthService.from_url(f"sqlite:///{database}")
        auth.open_sync()
        smart = SmartServer(process, auth)
        smart.add_client("ehr-backend", "asymmetric", "system/*.rs", jwks_url=url, redirect_uris=[])
        assertion = client_assertion(key, client_id="ehr-backend", token_url=smart.token_url, alg="ES384",
                                     jti=uuid.uuid4().hex)
        r = httpx.post(smart.token_url, data={
            "grant_type": "client_credentials", "scope": "system/*.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion})
        return r.status_code, r.json()
    finally:
        process.stop()


def test_outbound_refuses_a_server_whose_ca_is_not_trusted(tmp_path, private_jwks):
    status, body = _backend_token_status(tmp_path, private_jwks, {})
    assert status in (400, 401) and body["error"] == "invalid_client", body
    assert "JWKS URL could not be read" in body["error_description"]  # the TLS handshake failed verification


def test_outbound_trusts_a_private_ca_named_by_fhir_outbound_ca_file(tmp_path, private_jwks, pki):
    status, body = _backend_token_status(tmp_path, private_jwks, {"FHIR_OUTBOUND_CA_FILE": str(pki["ca"])})
    assert status == 200 and body["access_token"], body
