"""Server settings: command-line flags, each mirrored by an environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_DATABASE = "sqlite:///data/fhir.db"
DEFAULT_MAX_BODY = 32 * 1024 * 1024


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
    sqlite_synchronous: str = "FULL"
    workers: int = 1  # uvicorn worker processes (each validates on its own core; SQLite serialises writes)

    def to_env(self) -> dict[str, str]:
        """The environment from_env() reads back: how worker processes receive the settings."""
        env = {
            "FHIR_HOST": self.host,
            "FHIR_PORT": str(self.port),
            "FHIR_DATABASE": self.database_url,
            "FHIR_NO_AUTH": "0" if self.auth_enabled else "1",
            "FHIR_MAX_BODY_BYTES": str(self.max_body_bytes),
            "FHIR_SQLITE_SYNCHRONOUS": self.sqlite_synchronous,
            "FHIR_WORKERS": str(self.workers),
        }
        if self.base_url:
            env["FHIR_BASE_URL"] = self.base_url
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
            sqlite_synchronous=env.get("FHIR_SQLITE_SYNCHRONOUS", cls.sqlite_synchronous),
            workers=int(env.get("FHIR_WORKERS", cls.workers)),
        )
