"""Helpers the e-prescribing end-to-end tests share: reading a prescription's transmission Tasks
over FHIR REST and waiting for the outbox worker to get somewhere."""

from __future__ import annotations

import time

import httpx

from mappers.ncpdp.reflect import transmitted_message_type


def transmissions(client: httpx.Client, mr_id: str) -> list[dict]:
    """The transmission Tasks of a MedicationRequest, oldest first."""
    bundle = client.get("/Task", params={"focus": f"MedicationRequest/{mr_id}"}).json()
    tasks = [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]
    return sorted((t for t in tasks if transmitted_message_type(t)), key=lambda t: t["authoredOn"])


def wait_for(predicate, timeout: float = 30.0):
    """predicate()'s first truthy value, polled every 0.1 s (AssertionError after `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")
