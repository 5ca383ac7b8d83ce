"""Shared pieces of the SMART end-to-end tests: a real server with authorization on, registered
clients and users, PKCE, client assertions, and the browser-less walk through sign-in and consent.

Clients and users are registered straight into the server's database through the same record
store the CLI uses (the CLI itself has its own tests); FHIR data is loaded with a token minted for
a system/*.cruds grant, as an EHR backend would hold.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from smart_auth.passwords import hash_secret
from smart_auth.service import AuthService
from smart_auth.store import Client, User
from tests.support import FHIR_JSON, ServerProcess

REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: the tests read the Location header
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PASSWORD = "correct horse battery staple"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def new_key(alg: str, kid: str | None = None):
    kid = kid or uuid.uuid4().hex
    if alg.startswith("RS"):
        return RSAKey.generate_key(2048, parameters={"kid": kid, "alg": alg})
    return ECKey.generate_key("P-384", parameters={"kid": kid, "alg": alg})


def client_assertion(key, *, client_id: str, token_url: str, alg: str, lifetime: int = 240,
                     jti: str | None = None, header_extra: dict | None = None, claims_extra: dict | None = None) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + lifetime,
              "jti": jti or uuid.uuid4().hex, **(claims_extra or {})}
    header = {"alg": alg, "kid": key.kid, "typ": "JWT", **(header_extra or {})}
    return jwt.encode(header, claims, key, algorithms=[alg])


ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def backend_services_token(server: "SmartServer", client_id: str, scope: str, *, alg: str = "ES384") -> dict:
    """Register a backend-services client (its public key) and get a token by the client_credentials
    grant, as an EHR does (SMART Backend Services): the token response."""
    key = new_key(alg)
    server.add_client(client_id, "asymmetric", scope, jwks={"keys": [key.as_dict(private=False)]}, redirect_uris=[])
    assertion = client_assertion(key, client_id=client_id, token_url=server.token_url, alg=alg)
    answer = httpx.post(server.token_url, data={"grant_type": "client_credentials", "scope": scope,
                                                "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
    assert answer.status_code == 200, answer.text
    return answer.json()


@dataclass
class SmartServer:
    """A running server with authorization on, and a handle on its record store."""

    process: ServerProcess
    auth: AuthService
    data: dict = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.process.base

    @property
    def token_url(self) -> str:
        return f"{self.base}/auth/token"

    def add_client(self, client_id: str, kind: str, scope: str, *, secret: str | None = None, jwks: dict | None = None,
                   jwks_url: str | None = None, redirect_uris: list[str] | None = None,
                   launch_url: str | None = None) -> Client:
        client = Client(client_id=client_id, kind=kind, scope=scope,
                        redirect_uris=redirect_uris if redirect_uris is not None else [REDIRECT],
                        launch_url=launch_url, secret_hash=hash_secret(secret) if secret else None,
                        jwks=jwks, jwks_url=jwks_url)
        self.auth.records.put_client(client)
        return client

    def add_user(self, username: str, fhir_user: str, password: str = PASSWORD) -> User:
        user = User(username=username, password_hash=hash_secret(password), fhir_user=fhir_user)
        self.auth.records.put_user(user)
        return user

    def system_token(self, scope: str = "system/*.cruds") -> str:
        token, _ = self.auth.tokens.access_token(issuer=self.base, audience=self.base, client_id="test-loader",
                                                 subject="test-loader", scope=scope, grant_id=uuid.uuid4().hex)
        return token

    def put(self, resource: dict) -> dict:
        headers = {**FHIR_JSON, "Authorization": f"Bearer {self.system_token()}"}
        r = httpx.put(f"{self.base}/{resource['resourceType']}/{resource['id']}", json=resource, headers=headers)
        assert r.status_code in (200, 201), r.text
        return r.json()


def start_smart_server(tmp: Path, env: dict[str, str] | None = None) -> SmartServer:
    """A server with authorization on (`env`: FHIR_* settings it reads at start-up)."""
    database = tmp / "fhir.db"
    process = ServerProcess(database, auth=True, env=env).start()
    auth = AuthService.from_url(f"sqlite:///{database}")
    auth.open_sync()  # the server created its signing key at start-up; this handle shares it
    return SmartServer(process, auth)


def seed_two_patients(server: SmartServer) -> dict:
    """Patients A and B with an Encounter and Observations each, and a Practitioner."""
    def patient(id: str, family: str) -> dict:
        return {"resourceType": "Patient", "id": id, "name": [{"family": family, "given": ["Test"]}],
                "gender": "female", "birthDate": "1980-01-01"}

    def observation(id: str, patient_id: str, category: str) -> dict:
        return {"resourceType": "Observation", "id": id, "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                          "code": category}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": f"Patient/{patient_id}"}}

    resources = [
        patient("pat-a", "Alpha"), patient("pat-b", "Bravo"),
        {"resourceType": "Practitioner", "id": "doc-1", "name": [{"family": "Carter", "given": ["Dana"]}]},
        {"resourceType": "Encounter", "id": "enc-a", "status": "in-progress",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
         "subject": {"reference": "Patient/pat-a"}},
        observation("obs-a-lab", "pat-a", "laboratory"), observation("obs-a-vital", "pat-a", "vital-signs"),
        observation("obs-b-lab", "pat-b", "laboratory"),
    ]
    for resource in resources:
        server.put(resource)
    return {r["id"]: r for r in resources}


class Browserless:
    """Walks the sign-in and consent pages with plain HTTP, as a user's browser would."""

    def __init__(self, base: str):
        self.http = httpx.Client(base_url=base, timeout=30.0)

    def close(self) -> None:
        self.http.close()

    def authorize(self, **params: str) -> httpx.Response:
        return self.http.get("/auth/authorize", params=params)

    def sign_in(self, location: str, username: str, password: str = PASSWORD) -> httpx.Response:
        request_id = query_of(location)["request"]
        return self.http.post("/auth/login", data={"username": username, "password": password, "request": request_id})

    def consent_page(self, location: str) -> httpx.Response:
        return self.http.get(location)

    @staticmethod
    def offered_scopes(page: str) -> list[str]:
        return re.findall(r'name="scope" value="([^"]*)"', page)

    def approve(self, location: str, scopes: list[str] | None = None, decision: str = "allow") -> httpx.Response:
        page = self.http.get(location)
        request_id = query_of(location)["request"]
        chosen = self.offered_scopes(page.text) if scopes is None else scopes
        body = urlencode([("request", request_id), ("decision", decision), *[("scope", s) for s in chosen]])
        return self.http.post("/auth/consent", content=body, headers=FORM)

    def pick_patient(self, location: str, patient_id: str) -> httpx.Response:
        request_id = query_of(location)["request"]
        return self.http.post("/auth/patient", data={"request": request_id, "patient": patient_id})

    def code_for(self, *, client_id: str, username: str, scope: str, aud: str, challenge: str,
                 state: str = "s-123", redirect_uri: str = REDIRECT, scopes: list[str] | None = None,
                 patient: str | None = None, **extra: str) -> str:
        """authorize -> sign in -> (pick patient) -> approve; returns the code."""
        r = self.authorize(response_type="code", client_id=client_id, redirect_uri=redirect_uri, scope=scope,
                           state=state, aud=aud, code_challenge=challenge, code_challenge_method="S256", **extra)
        assert r.status_code == 303, r.text
        location = r.headers["location"]
        if "/auth/login" in location:
            r = self.sign_in(location, username)
            assert r.status_code == 303, r.text
            location = r.headers["location"]
        page = self.http.get(location)
        if 'name="patient"' in page.text:
            assert patient is not None, "the server asked for a patient"
            r = self.pick_patient(location, patient)
            assert r.status_code == 303, r.text
        r = self.approve(location, scopes)
        assert r.status_code == 302, r.text
        answer = query_of(r.headers["location"])
        assert answer.get("state") == state
        assert "code" in answer, answer
        return answer["code"]
