"""How long a sign-in and its tokens last (HIPAA automatic logoff, 45 CFR 164.312(a)(2)(iii)).

- A browser session at the login and consent pages ends after `session_idle` seconds without a
  request (sliding: each page viewed restarts the clock), and after SESSION_MAX_SECONDS whatever.
- Access tokens live `access_token` seconds, at most an hour (SMART app-launch.html: "an access
  token SHOULD have a lifetime no greater than one hour"); backend-services tokens five minutes.
- Refresh tokens are rotated on every use and renewed for their period (offline_access 90 days,
  online_access 12 hours, issuance.py), but never past `refresh_token_max` seconds after the user
  approved the app: rotation does not extend that, and the user signs in again after it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

SESSION_MAX_SECONDS = 12 * 3600  # an active browser session still ends after a working day
MAX_ACCESS_TOKEN_SECONDS = 3600


@dataclass(frozen=True)
class Lifetimes:
    session_idle: int = 15 * 60
    access_token: int = 3600
    refresh_token_max: int = 90 * 24 * 3600

    def __post_init__(self) -> None:
        if not 0 < self.access_token <= MAX_ACCESS_TOKEN_SECONDS:
            raise ValueError(f"FHIR_ACCESS_TOKEN_SECONDS must be between 1 and {MAX_ACCESS_TOKEN_SECONDS} "
                             f"(SMART: access tokens live at most an hour), not {self.access_token}")
        if self.session_idle <= 0:
            raise ValueError(f"FHIR_SESSION_IDLE_SECONDS must be positive, not {self.session_idle}")
        if self.refresh_token_max <= 0:
            raise ValueError(f"FHIR_REFRESH_TOKEN_MAX_SECONDS must be positive, not {self.refresh_token_max}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Lifetimes":
        return cls(session_idle=int(env.get("FHIR_SESSION_IDLE_SECONDS", cls.session_idle)),
                   access_token=int(env.get("FHIR_ACCESS_TOKEN_SECONDS", cls.access_token)),
                   refresh_token_max=int(env.get("FHIR_REFRESH_TOKEN_MAX_SECONDS", cls.refresh_token_max)))

    def to_env(self) -> dict[str, str]:
        return {"FHIR_SESSION_IDLE_SECONDS": str(self.session_idle),
                "FHIR_ACCESS_TOKEN_SECONDS": str(self.access_token),
                "FHIR_REFRESH_TOKEN_MAX_SECONDS": str(self.refresh_token_max)}
