"""Typed records over the RecordStore: what the authorization server keeps, and for how long.

Secrets never sit in the store in the clear: authorization codes and refresh tokens are kept under
their SHA-256 (they are long random strings, so a fast hash suffices), client secrets and user
passwords as argon2 hashes (passwords.py).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TypeVar

from .base import RecordStore

CLIENT, USER, KEY, LAUNCH, CODE, GRANT, REFRESH, JTI, LOGIN_FAILURE, SESSION, PENDING = (
    "client", "user", "signing_key", "launch", "code", "grant", "refresh", "jti", "login_failure", "session",
    "pending")
REVOCATIONS = "revocation"  # append-only feed of revoked grant ids (the resource server follows it)

T = TypeVar("T")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _load(cls: type[T], doc: dict | None) -> T | None:
    if doc is None:
        return None
    names = {f.name for f in fields(cls)}  # tolerate fields a newer version added
    return cls(**{k: v for k, v in doc.items() if k in names})


@dataclass
class Client:
    client_id: str
    kind: str  # public | symmetric | asymmetric
    scope: str  # the scopes this client may be granted (a SMART scope string)
    redirect_uris: list[str] = field(default_factory=list)
    launch_url: str | None = None
    secret_hash: str | None = None  # symmetric: argon2 hash of the client secret
    jwks: dict | None = None  # asymmetric: an inline JWK Set of public keys
    jwks_url: str | None = None  # asymmetric: where the client publishes its JWK Set
    name: str | None = None
    created_at: float = field(default_factory=time.time)

    @property
    def auth_method(self) -> str:
        return {"public": "none", "symmetric": "client_secret_basic", "asymmetric": "private_key_jwt"}[self.kind]


@dataclass
class User:
    username: str
    password_hash: str
    fhir_user: str  # "Patient/123" or "Practitioner/456"
    created_at: float = field(default_factory=time.time)

    @property
    def patient_id(self) -> str | None:
        kind, _, id = self.fhir_user.partition("/")
        return id if kind == "Patient" else None


@dataclass
class SigningKey:
    kid: str
    private_jwk: dict  # an RSA private JWK (RS256): signs access tokens and id_tokens
    created_at: float = field(default_factory=time.time)
    retired_at: float | None = None  # retired keys still verify (published in the JWKS), never sign


@dataclass
class Launch:
    """An EHR launch: a clinician opened an app for a patient (and encounter)."""

    id: str
    patient: str | None
    encounter: str | None = None
    fhir_user: str | None = None  # who launched (Practitioner/...)
    username: str | None = None
    client_id: str | None = None  # the app launched, when known
    need_patient_banner: bool = True
    smart_style_url: str | None = None
    intent: str | None = None
    fhir_context: list[dict] = field(default_factory=list)
    expires_at: float = 0.0


@dataclass
class Grant:
    """What a user (or a backend client) authorised a client to do: every token issued from one
    authorization carries the grant's id, so revoking the grant stops all of them."""

    id: str
    client_id: str
    scope: str
    username: str | None = None
    fhir_user: str | None = None
    patient: str | None = None
    encounter: str | None = None
    need_patient_banner: bool | None = None
    smart_style_url: str | None = None
    intent: str | None = None
    fhir_context: list[dict] = field(default_factory=list)
    nonce: str | None = None
    auth_time: float = field(default_factory=time.time)
    created_at: float = field(default_factory=time.time)
    expires_at: float | None = None  # end of the refresh period (offline_access), None: no refresh


@dataclass
class AuthorizationCode:
    code_hash: str
    grant_id: str
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    code_challenge_method: str = "S256"
    expires_at: float = 0.0


@dataclass
class RefreshToken:
    token_hash: str
    grant_id: str
    client_id: str
    scope: str
    expires_at: float = 0.0


@dataclass
class BrowserSession:
    """A signed-in user at the login/consent pages (the cookie holds only the random id)."""

    id: str
    username: str
    created_at: float = field(default_factory=time.time)
    expires_at: float = 0.0


@dataclass
class PendingAuthorization:
    """A validated authorization request waiting for the user to sign in, pick a patient and consent."""

    id: str
    client_id: str
    params: list[list[str]]  # the authorize request's parameters, as sent
    session_id: str | None = None  # bound at sign-in: only that browser session may consent
    patient: str | None = None  # chosen in the patient picker (clinician, standalone launch/patient)
    expires_at: float = 0.0


class AuthRecords:
    """The authorization server's typed view of its RecordStore."""

    def __init__(self, store: RecordStore):
        self.store = store

    # clients and users (administration) --------------------------------------------------
    def put_client(self, client: Client) -> None:
        self.store.put(CLIENT, client.client_id, asdict(client))

    def client(self, client_id: str) -> Client | None:
        return _load(Client, self.store.get(CLIENT, client_id))

    def clients(self) -> list[Client]:
        return [_load(Client, d) for d in self.store.list(CLIENT)]

    def remove_client(self, client_id: str) -> bool:
        return self.store.remove(CLIENT, client_id)

    def put_user(self, user: User) -> None:
        self.store.put(USER, user.username, asdict(user))

    def user(self, username: str) -> User | None:
        return _load(User, self.store.get(USER, username))

    def users(self) -> list[User]:
        return [_load(User, d) for d in self.store.list(USER)]

    def remove_user(self, username: str) -> bool:
        return self.store.remove(USER, username)

    # signing keys ------------------------------------------------------------------------
    def signing_keys(self) -> list[SigningKey]:
        return [_load(SigningKey, d) for d in self.store.list(KEY)]

    def add_signing_key(self, key: SigningKey) -> bool:
        return self.store.add(KEY, key.kid, asdict(key))

    def put_signing_key(self, key: SigningKey) -> None:
        self.store.put(KEY, key.kid, asdict(key))

    # launches, codes, grants, refresh tokens ---------------------------------------------
    def put_launch(self, launch: Launch) -> None:
        self.store.put(LAUNCH, launch.id, asdict(launch), expires_at=launch.expires_at)

    def launch(self, launch_id: str) -> Launch | None:
        return _load(Launch, self.store.get(LAUNCH, launch_id))

    def put_code(self, code: AuthorizationCode) -> None:
        self.store.put(CODE, code.code_hash, asdict(code), expires_at=code.expires_at)

    def take_code(self, code: str) -> tuple[AuthorizationCode | None, bool]:
        doc, first = self.store.take(CODE, token_hash(code))
        return _load(AuthorizationCode, doc), first

    def put_grant(self, grant: Grant) -> None:
        self.store.put(GRANT, grant.id, asdict(grant), expires_at=grant.expires_at)

    def grant(self, grant_id: str) -> Grant | None:
        return _load(Grant, self.store.get(GRANT, grant_id))

    def grants(self) -> list[Grant]:
        return [_load(Grant, d) for d in self.store.list(GRANT)]

    def revoke_grant(self, grant_id: str) -> None:
        """Revoke every token of a grant: the grant goes, and the resource server hears of it."""
        self.store.remove(GRANT, grant_id)
        self.store.append(REVOCATIONS, {"grant_id": grant_id, "at": time.time()})

    def revocations(self, after: int) -> list[tuple[int, str]]:
        return [(seq, doc["grant_id"]) for seq, doc in self.store.feed(REVOCATIONS, after)]

    def put_refresh_token(self, token: RefreshToken) -> None:
        self.store.put(REFRESH, token.token_hash, asdict(token), expires_at=token.expires_at)

    def take_refresh_token(self, token: str) -> tuple[RefreshToken | None, bool]:
        doc, first = self.store.take(REFRESH, token_hash(token))
        return _load(RefreshToken, doc), first

    def take_launch(self, launch_id: str) -> tuple[Launch | None, bool]:
        doc, first = self.store.take(LAUNCH, launch_id)
        return _load(Launch, doc), first

    # browser sessions and authorization requests waiting for login and consent ------------
    def put_session(self, session: "BrowserSession") -> None:
        self.store.put(SESSION, session.id, asdict(session), expires_at=session.expires_at)

    def session(self, session_id: str) -> "BrowserSession | None":
        return _load(BrowserSession, self.store.get(SESSION, session_id))

    def remove_session(self, session_id: str) -> None:
        self.store.remove(SESSION, session_id)

    def put_pending(self, pending: "PendingAuthorization") -> None:
        self.store.put(PENDING, pending.id, asdict(pending), expires_at=pending.expires_at)

    def pending(self, pending_id: str) -> "PendingAuthorization | None":
        return _load(PendingAuthorization, self.store.get(PENDING, pending_id))

    def remove_pending(self, pending_id: str) -> None:
        self.store.remove(PENDING, pending_id)

    # replay and rate limiting ------------------------------------------------------------
    def remember_jti(self, issuer: str, jti: str, expires_at: float) -> bool:
        """False when this client already used this assertion id (a replay)."""
        return self.store.add(JTI, f"{issuer}\n{jti}", {"iss": issuer}, expires_at=expires_at)

    def login_failures(self, key: str) -> list[float]:
        doc = self.store.get(LOGIN_FAILURE, key)
        return list(doc["at"]) if doc else []

    def record_login_failure(self, key: str, window: float) -> list[float]:
        now = time.time()
        recent = [t for t in self.login_failures(key) if t > now - window] + [now]
        self.store.put(LOGIN_FAILURE, key, {"at": recent}, expires_at=now + window)
        return recent

    def clear_login_failures(self, key: str) -> None:
        self.store.remove(LOGIN_FAILURE, key)
