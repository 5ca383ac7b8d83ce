"""Subscription settings, from environment variables (no CLI flags yet):

    FHIR_SUBSCRIPTION_MAX_ATTEMPTS        delivery attempts of one notification before the
                                          Subscription goes to `error` (default 6)
    FHIR_SUBSCRIPTION_BACKOFF_BASE        seconds: ceiling of the first retry's jittered wait,
                                          doubling per attempt (default 2.0)
    FHIR_SUBSCRIPTION_BACKOFF_CAP         seconds: the wait never grows beyond (default 300)
    FHIR_SUBSCRIPTION_POLL_SECONDS        how often the worker looks for new events (default 0.5)
    FHIR_SUBSCRIPTION_ALLOW_HTTP_LOOPBACK 1: accept http:// endpoints on loopback hosts (tests,
                                          local development); production requires https (default 0)
    FHIR_SUBSCRIPTION_TIMEOUT             seconds per delivery attempt when the Subscription sets no
                                          backport-timeout (default 10; a requested one is capped at 60)
    FHIR_SUBSCRIPTION_EVENTS_MAX          the most events one $events answer holds (default 1000;
                                          ask again from the last number for more)
    FHIR_SUBSCRIPTION_CONCURRENCY         notifications in flight at once, over all subscriptions;
                                          one subscription has at most one (default 8)
    FHIR_SUBSCRIPTION_EVENT_RETENTION_DAYS  delivered (or given-up) events are purged after this
                                          many days (default 30; a fraction is allowed); each
                                          subscription's newest event is kept (it holds the count)
    FHIR_SUBSCRIPTION_PURGE_SECONDS       how often the purge runs (default 3600)
    FHIR_SUBSCRIPTION_CLASSIC_TYPES       resource types classic (criteria = search) Subscriptions
                                          may watch, space-separated (default below)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_CLASSIC_TYPES = ("Encounter", "Task", "MedicationRequest", "Communication", "CarePlan", "Condition",
                         "Observation", "ServiceRequest", "DocumentReference", "QuestionnaireResponse",
                         "DiagnosticReport", "Appointment")


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class SubscriptionSettings:
    max_attempts: int = 6
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    poll_seconds: float = 0.5
    allow_http_loopback: bool = False
    timeout: float = 10.0
    events_max: int = 1000
    concurrency: int = 8
    event_retention_days: float = 30.0
    purge_seconds: float = 3600.0
    classic_types: tuple[str, ...] = field(default=DEFAULT_CLASSIC_TYPES)
    base_url: str = "http://127.0.0.1:8080"  # this server's FHIR base, for fullUrls in notifications

    @classmethod
    def from_env(cls, base_url: str | None = None) -> "SubscriptionSettings":
        env = os.environ
        types = tuple(env.get("FHIR_SUBSCRIPTION_CLASSIC_TYPES", "").split()) or DEFAULT_CLASSIC_TYPES
        return cls(
            max_attempts=int(env.get("FHIR_SUBSCRIPTION_MAX_ATTEMPTS", cls.max_attempts)),
            backoff_base=float(env.get("FHIR_SUBSCRIPTION_BACKOFF_BASE", cls.backoff_base)),
            backoff_cap=float(env.get("FHIR_SUBSCRIPTION_BACKOFF_CAP", cls.backoff_cap)),
            poll_seconds=float(env.get("FHIR_SUBSCRIPTION_POLL_SECONDS", cls.poll_seconds)),
            allow_http_loopback=_bool(env.get("FHIR_SUBSCRIPTION_ALLOW_HTTP_LOOPBACK")),
            timeout=float(env.get("FHIR_SUBSCRIPTION_TIMEOUT", cls.timeout)),
            events_max=int(env.get("FHIR_SUBSCRIPTION_EVENTS_MAX", cls.events_max)),
            concurrency=max(1, int(env.get("FHIR_SUBSCRIPTION_CONCURRENCY", cls.concurrency))),
            event_retention_days=float(env.get("FHIR_SUBSCRIPTION_EVENT_RETENTION_DAYS", cls.event_retention_days)),
            purge_seconds=float(env.get("FHIR_SUBSCRIPTION_PURGE_SECONDS", cls.purge_seconds)),
            classic_types=types,
            base_url=(base_url or cls.base_url).rstrip("/"),
        )

    @property
    def events_scan(self) -> int:
        """The name api/app.py reads (app.state.subscription_events_scan): the $events cap."""
        return self.events_max
