"""Server-managed state kept on the Subscription resource itself (an extension of ours):

- `subscription-owner` (complex: client, patient, scopes, unrestricted): who created it, so
  payloads are filtered by what that client's token could read.

Clients cannot set it: `accept.prepare` replaces it with the server's value on every write.
The event count and delivery progress are not on the resource (which would gain a version per
event): they are the subscription's event log in the outbox (eventlog.py). The two extensions that
once held them (`subscription-events-since-start`, `subscription-delivered-through`) are still
stripped from what clients send and from older stored versions.
"""

from __future__ import annotations

from smart_auth.principal import Principal
from smart_auth.scopes import ScopeSet

EXT = "http://fhir-async-telehealth.example/StructureDefinition"
EVENTS_EXT = f"{EXT}/subscription-events-since-start"
DELIVERED_EXT = f"{EXT}/subscription-delivered-through"
OWNER_EXT = f"{EXT}/subscription-owner"
OURS = (EVENTS_EXT, DELIVERED_EXT, OWNER_EXT)


def _ext(sub: dict, url: str) -> dict | None:
    return next((e for e in sub.get("extension") or [] if isinstance(e, dict) and e.get("url") == url), None)


def with_state(sub: dict, *, owner: dict | None = None) -> dict:
    """A copy of `sub` without our extensions, but for `owner` when given."""
    others = [e for e in sub.get("extension") or [] if not (isinstance(e, dict) and e.get("url") in OURS)]
    out = {**sub, "extension": others + ([owner] if owner is not None else [])}
    if not out["extension"]:
        out.pop("extension")
    return out


def strip_state(sub: dict) -> dict:
    others = [e for e in sub.get("extension") or [] if not (isinstance(e, dict) and e.get("url") in OURS)]
    out = {k: v for k, v in sub.items() if k != "extension"}
    if others:
        out["extension"] = others
    return out


def owner_extension(principal: Principal) -> dict:
    parts = [{"url": "client", "valueString": principal.client_id},
             {"url": "subject", "valueString": principal.subject}]
    if principal.patient:
        parts.append({"url": "patient", "valueString": principal.patient})
    if principal.fhir_user:
        parts.append({"url": "fhirUser", "valueString": principal.fhir_user})
    parts.append({"url": "scopes", "valueString": principal.scopes.text or "-"})
    parts.append({"url": "unrestricted", "valueBoolean": bool(principal.unrestricted)})
    return {"url": OWNER_EXT, "extension": parts}


def owner_of(sub: dict) -> Principal | None:
    """The creating client as a Principal (None: no owner recorded: deliver nothing restricted)."""
    found = _ext(sub, OWNER_EXT)
    if not found:
        return None
    parts = {p.get("url"): next((v for k, v in p.items() if k.startswith("value")), None)
             for p in found.get("extension") or [] if isinstance(p, dict)}
    scopes = parts.get("scopes")
    return Principal(client_id=str(parts.get("client") or "?"), subject=str(parts.get("subject") or "?"),
                     scopes=ScopeSet.parse("" if scopes in (None, "-") else scopes),
                     patient=parts.get("patient"), fhir_user=parts.get("fhirUser"),
                     unrestricted=bool(parts.get("unrestricted")))
