"""Server-managed state kept on the Subscription resource itself (extensions of ours), so it is
read and written in the same unit of work as the change that fires an event:

- `subscription-events-since-start` (valueInteger): events numbered so far; never reset.
- `subscription-delivered-through` (valueInteger): the highest event number the receiver accepted.
- `subscription-owner` (complex: client, patient, scopes, unrestricted): who created it, so
  payloads are filtered by what that client's token could read.

Clients cannot set these: `accept.prepare` replaces them with the server's values on every write.
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


def _int(sub: dict, url: str) -> int:
    found = _ext(sub, url)
    return int(found.get("valueInteger", 0)) if found else 0


def events_since_start(sub: dict) -> int:
    return _int(sub, EVENTS_EXT)


def delivered_through(sub: dict) -> int:
    return _int(sub, DELIVERED_EXT)


def with_state(sub: dict, *, events: int | None = None, delivered: int | None = None,
               owner: dict | None = None) -> dict:
    """A copy of `sub` with our extensions set (those given; the others kept as they are)."""
    current = {e["url"]: e for e in sub.get("extension") or [] if isinstance(e, dict) and e.get("url") in OURS}
    if events is not None:
        current[EVENTS_EXT] = {"url": EVENTS_EXT, "valueInteger": events}
    if delivered is not None:
        current[DELIVERED_EXT] = {"url": DELIVERED_EXT, "valueInteger": delivered}
    if owner is not None:
        current[OWNER_EXT] = owner
    others = [e for e in sub.get("extension") or [] if not (isinstance(e, dict) and e.get("url") in OURS)]
    out = {**sub, "extension": others + [current[u] for u in OURS if u in current]}
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
