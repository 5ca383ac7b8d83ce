"""Server settings: command-line flags, each mirrored by an environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass

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

    def required_profiles_by_type(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for resource_type, url in self.required_profiles:
            out.setdefault(resource_type, []).append(url)
        return out

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
