"""E-prescribing settings (serve flags --erx-gateway, --erx-sender-id, --erx-inbound-token ...)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErxSettings:
    gateway_url: str | None  # None: e-prescribing is off (MedicationRequests are only stored)
    sender_id: str = "TELEHEALTH"  # this system's account id at the gateway (Header/From)
    timeout_s: float = 10.0
    max_attempts: int = 8  # then the transmission is dead-lettered
    inbound_token: str | None = None  # the bearer secret the gateway presents on /erx/inbound

    @property
    def enabled(self) -> bool:
        return bool(self.gateway_url)
