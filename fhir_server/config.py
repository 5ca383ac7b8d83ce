"""Server settings: command-line flags, each mirrored by an environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass

from smart_auth.lifetimes import Lifetimes

from .erx.config import ErxSettings

DEFAULT_DATABASE = "sqlite:///data/fhir.db"
DEFAULT_MAX_BODY = 32 * 1024 * 1024
DEFAULT_MAX_IMAGE = 20 * 1024 * 1024  # a photo uploaded to POST /Binary
DEFAULT_MAX_VIDEO = 200 * 1024 * 1024  # a video uploaded to POST /Binary


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = DEFAULT_DATABASE
    auth_enabled: bool = True
    base_url: str | None = None  # the public FHIR base; derived from each request when unset
    max_body_bytes: int = DEFAULT_MAX_BODY
    max_image_bytes: int = DEFAULT_MAX_IMAGE
    max_video_bytes: int = DEFAULT_MAX_VIDEO
    sqlite_synchronous: str = "FULL"
    workers: int = 1  # uvicorn worker processes (each validates on its own core; SQLite serialises writes)
    erx_gateway: str | None = None  # e-prescribing gateway URL (SCRIPT over HTTPS); None: e-Rx off
    erx_sender_id: str = "TELEHEALTH"  # this system's account id at the gateway
    erx_inbound_token: str | None = None  # bearer secret the gateway presents on /erx/inbound
    erx_max_attempts: int = 8
    # profiles every write of a type must meet, besides the base definition and meta.profile claims
    # (empty by default: the server also stores EHR data that is not part of an async visit)
    required_profiles: tuple[tuple[str, str], ...] = ()  # (resource type, profile url) pairs
    visit_fee: str = "39.99 USD"  # the flat fee of an asynchronous visit (a ChargeItem per submitted visit)
    prescribing_rules: str | None = None  # the deployment's rule file; None: profiles/prescribing-rules.json
    encryption_key_file: str | None = None  # key ring of data at rest (fhir_server/security/keyring.py); None: clear
    # transport security (fhir_server/tls.py): HTTPS, or plain HTTP only on loopback unless insecure_http
    tls_cert: str | None = None  # PEM certificate chain
    tls_key: str | None = None  # PEM private key
    insecure_http: bool = False  # plain HTTP on a public address: a TLS-terminating proxy is in front
    # automatic logoff (smart_auth/lifetimes.py); checked at start-up, so an hour-plus token never starts
    session_idle_seconds: int = Lifetimes.session_idle
    access_token_seconds: int = Lifetimes.access_token
    refresh_token_max_seconds: int = Lifetimes.refresh_token_max
    # the audit trail (fhir_server/audit/): always on, except to measure its cost (FHIR_AUDIT=off)
    audit_enabled: bool = True
    audit_flush_seconds: float = 0.25  # reads' AuditEvents are committed in batches this often
    security_officers: tuple[str, ...] = ()  # usernames whose user/ scopes may read the audit trail

    def required_profiles_by_type(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for resource_type, url in self.required_profiles:
            out.setdefault(resource_type, []).append(url)
        return out

    @property
    def auth_lifetimes(self) -> Lifetimes:
        """The sign-in and token lifetimes (ValueError when out of bounds)."""
        return Lifetimes(session_idle=self.session_idle_seconds, access_token=self.access_token_seconds,
                         refresh_token_max=self.refresh_token_max_seconds)

    @property
    def erx(self) -> ErxSettings:
        return ErxSettings(gateway_url=self.erx_gateway, sender_id=self.erx_sender_id,
                           inbound_token=self.erx_inbound_token, max_attempts=self.erx_max_attempts)

    def to_env(self) -> dict[str, str]:
        """The environment from_env() reads back: how worker processes receive the settings."""
        env = {
            "FHIR_HOST": self.host,
            "FHIR_PORT": str(self.port),
            "FHIR_DATABASE": self.database_url,
            "FHIR_NO_AUTH": "0" if self.auth_enabled else "1",
            "FHIR_MAX_BODY_BYTES": str(self.max_body_bytes),
            "FHIR_MAX_IMAGE_BYTES": str(self.max_image_bytes),
            "FHIR_MAX_VIDEO_BYTES": str(self.max_video_bytes),
            "FHIR_SQLITE_SYNCHRONOUS": self.sqlite_synchronous,
            "FHIR_WORKERS": str(self.workers),
        }
        if self.base_url:
            env["FHIR_BASE_URL"] = self.base_url
        env["FHIR_ERX_SENDER_ID"] = self.erx_sender_id
        env["FHIR_ERX_MAX_ATTEMPTS"] = str(self.erx_max_attempts)
        if self.erx_gateway:
            env["FHIR_ERX_GATEWAY"] = self.erx_gateway
        if self.erx_inbound_token:
            env["FHIR_ERX_INBOUND_TOKEN"] = self.erx_inbound_token
        env["FHIR_VISIT_FEE"] = self.visit_fee
        if self.prescribing_rules:
            env["FHIR_PRESCRIBING_RULES"] = self.prescribing_rules
        if self.encryption_key_file:
            env["FHIR_ENCRYPTION_KEY_FILE"] = self.encryption_key_file
        if self.tls_cert:
            env["FHIR_TLS_CERT"] = self.tls_cert
        if self.tls_key:
            env["FHIR_TLS_KEY"] = self.tls_key
        env["FHIR_INSECURE_HTTP"] = "1" if self.insecure_http else "0"
        env["FHIR_SESSION_IDLE_SECONDS"] = str(self.session_idle_seconds)
        env["FHIR_ACCESS_TOKEN_SECONDS"] = str(self.access_token_seconds)
        env["FHIR_REFRESH_TOKEN_MAX_SECONDS"] = str(self.refresh_token_max_seconds)
        env["FHIR_AUDIT"] = "on" if self.audit_enabled else "off"
        env["FHIR_AUDIT_FLUSH_SECONDS"] = str(self.audit_flush_seconds)
        env["FHIR_SECURITY_OFFICERS"] = ",".join(self.security_officers)
        if self.required_profiles:
            env["FHIR_REQUIRED_PROFILES"] = " ".join(f"{t}={url}" for t, url in self.required_profiles)
        return env

    @classmethod
    def from_env(cls) -> "Settings":
        """Defaults overridden by FHIR_* environment variables (the CLI's flags override these)."""
        env = os.environ
        return cls(
            host=env.get("FHIR_HOST", cls.host),
            port=int(env.get("FHIR_PORT", cls.port)),
            database_url=env.get("FHIR_DATABASE", cls.database_url),
            auth_enabled=not _env_bool("FHIR_NO_AUTH"),
            base_url=env.get("FHIR_BASE_URL") or None,
            max_body_bytes=int(env.get("FHIR_MAX_BODY_BYTES", cls.max_body_bytes)),
            max_image_bytes=int(env.get("FHIR_MAX_IMAGE_BYTES", cls.max_image_bytes)),
            max_video_bytes=int(env.get("FHIR_MAX_VIDEO_BYTES", cls.max_video_bytes)),
            sqlite_synchronous=env.get("FHIR_SQLITE_SYNCHRONOUS", cls.sqlite_synchronous),
            workers=int(env.get("FHIR_WORKERS", cls.workers)),
            erx_gateway=env.get("FHIR_ERX_GATEWAY") or None,
            erx_sender_id=env.get("FHIR_ERX_SENDER_ID", cls.erx_sender_id),
            erx_inbound_token=env.get("FHIR_ERX_INBOUND_TOKEN") or None,
            erx_max_attempts=int(env.get("FHIR_ERX_MAX_ATTEMPTS", cls.erx_max_attempts)),
            required_profiles=parse_required_profiles(env.get("FHIR_REQUIRED_PROFILES", "").split()),
            visit_fee=env.get("FHIR_VISIT_FEE", cls.visit_fee),
            prescribing_rules=env.get("FHIR_PRESCRIBING_RULES") or None,
            encryption_key_file=env.get("FHIR_ENCRYPTION_KEY_FILE") or None,
            tls_cert=env.get("FHIR_TLS_CERT") or None,
            tls_key=env.get("FHIR_TLS_KEY") or None,
            insecure_http=_env_bool("FHIR_INSECURE_HTTP"),
            session_idle_seconds=int(env.get("FHIR_SESSION_IDLE_SECONDS", cls.session_idle_seconds)),
            access_token_seconds=int(env.get("FHIR_ACCESS_TOKEN_SECONDS", cls.access_token_seconds)),
            refresh_token_max_seconds=int(env.get("FHIR_REFRESH_TOKEN_MAX_SECONDS", cls.refresh_token_max_seconds)),
            audit_enabled=env.get("FHIR_AUDIT", "on").strip().lower() not in {"off", "0", "false", "no"},
            audit_flush_seconds=float(env.get("FHIR_AUDIT_FLUSH_SECONDS", cls.audit_flush_seconds)),
            security_officers=tuple(n for n in env.get("FHIR_SECURITY_OFFICERS", "").replace(",", " ").split()),
        )


def parse_required_profiles(values: list[str]) -> tuple[tuple[str, str], ...]:
    """`Type=profile-url` items (the --require-profile flag, FHIR_REQUIRED_PROFILES space-separated)."""
    out = []
    for value in values:
        resource_type, sep, url = value.partition("=")
        if not sep or not resource_type or not url:
            raise ValueError(f"expected Type=profile-url, got {value!r}")
        out.append((resource_type, url))
    return tuple(out)
