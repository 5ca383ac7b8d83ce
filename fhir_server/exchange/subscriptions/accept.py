"""Accepting a Subscription (backport profile, exchange.md A.3-A.5, or classic R4 A.13).

`SubscriptionAccept.prepare` runs before every client write of a Subscription (ValidatingStore's
per-type preparation, inside the unit of work): it validates, checks authorization and sets the
server's part:

- `criteria` a topic canonical (TOPICS) => topic-based: `_criteria.extension` may hold only
  `backport-filter-criteria` (ANDed; shapes `p=v`, `Type.p=v`, `Type?p=v&p2=v2`; only the topic's
  filter parameters); payload content `empty|id-only|full-resource` (required);
- `criteria` a search `Type?params` on a type of settings.classic_types => classic R4; the
  criteria must parse as a strict search;
- channel: `rest-hook` only (no custom channel); endpoint https (http only on a loopback host when
  FHIR_SUBSCRIPTION_ALLOW_HTTP_LOOPBACK is on); payload `application/fhir+json` (or `application/json`;
  fhirVersion 4.0 only), required for topic-based; header entries `Name: value`;
  heartbeat/timeout/max-count extensions as unsigned/positive integers (a heartbeat period on
  topic-based Subscriptions only: heartbeat.py sends them);
- authorization: the client's token must allow searching the focus type (`s`); the client is
  recorded (state.owner_extension) and payloads are filtered by what it may read;
- status: the client may send requested, active (re-activation) or off; a topic-based rest-hook
  Subscription is stored `requested` and the handshake (hook `on_subscription`) activates it;
  a classic one is stored `active`; `off` stays off. An unchanged active Subscription stays active.
  The event count is not on the resource (eventlog.py); events recorded while a Subscription was
  not active are never sent (they are for `$events`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import orjson

from smart_auth.access import SUBSCRIPTION_OWNER, allowed
from smart_auth.principal import Principal, acting

from ...errors import Forbidden, OutcomeIssue, UnprocessableEntity
from ...search.parse import parse_search
from ...storage import ResourceReader, StoredVersion, UnitOfWork
from .config import SubscriptionSettings
from .state import owner_extension, owner_of, strip_state, with_state
from .topics import BACKPORT, TOPICS

FILTER_EXT = f"{BACKPORT}/backport-filter-criteria"
CONTENT_EXT = f"{BACKPORT}/backport-payload-content"
HEARTBEAT_EXT = f"{BACKPORT}/backport-heartbeat-period"
TIMEOUT_EXT = f"{BACKPORT}/backport-timeout"
MAX_COUNT_EXT = f"{BACKPORT}/backport-max-count"
CHANNEL_TYPE_EXT = f"{BACKPORT}/backport-channel-type"
CONTENTS = ("empty", "id-only", "full-resource")
PAYLOAD_TYPES = ("application/fhir+json", "application/json")
CLIENT_STATUSES = ("requested", "active", "off")
NOTIFY_KIND = "subscription.notify"
_TYPE = re.compile(r"^[A-Z][A-Za-z]+$")


@dataclass(frozen=True)
class Spec:
    """A Subscription as this server understands it."""

    kind: str  # "topic" or "classic"
    resource_type: str  # the focus type (topic) or the criteria's type (classic)
    topic: str | None
    filters: tuple[tuple[str, str], ...]  # search pairs on resource_type (topic filters, classic criteria)
    endpoint: str
    headers: tuple[tuple[str, str], ...]
    payload: str | None  # MIME type; None: no body (classic only)
    content: str  # empty | id-only | full-resource (classic: full-resource when payload, else empty)
    heartbeat: int | None
    timeout: int | None
    max_count: int | None


def _refuse(message: str, expression: str) -> UnprocessableEntity:
    return UnprocessableEntity(message, issues=[OutcomeIssue("error", "business-rule", message, expression,
                                                             "subscription-accept")])


def _exts(element: object) -> list[dict]:
    return [e for e in (element or {}).get("extension") or [] if isinstance(e, dict)] if isinstance(element, dict) else []


def _one(exts: list[dict], url: str, value: str, expression: str, positive: bool = False) -> int | None:
    found = [e for e in exts if e.get("url") == url]
    if not found:
        return None
    raw = found[0].get(value)
    if len(found) > 1 or not isinstance(raw, int) or isinstance(raw, bool) or raw < (1 if positive else 0):
        raise _refuse(f"{url.rsplit('/', 1)[1]} must be one {'positive' if positive else 'unsigned'} integer", expression)
    return raw


def _endpoint_ok(url: object, settings: SubscriptionSettings) -> str:
    if not isinstance(url, str) or not url:
        raise _refuse("A rest-hook Subscription needs channel.endpoint", "Subscription.channel.endpoint")
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and settings.allow_http_loopback:
        host = parts.hostname
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return url
    raise _refuse("channel.endpoint must be an https URL", "Subscription.channel.endpoint")


def _filter_pairs(value: object, topic_type: str, allowed_names: frozenset[str]) -> list[tuple[str, str]]:
    if not isinstance(value, str) or not value.strip():
        raise _refuse("backport-filter-criteria must be a non-empty string", "Subscription.criteria")
    text = value.strip()
    if "?" in text:
        prefix, _, text = text.partition("?")
        if prefix != topic_type:
            raise _refuse(f"Filters of this topic apply to {topic_type}", "Subscription.criteria")
        pairs = parse_qsl(text, keep_blank_values=True)
    else:
        name, sep, v = text.partition("=")
        if not sep:
            raise _refuse("backport-filter-criteria must read param=value", "Subscription.criteria")
        if "." in name.split(":")[0]:
            prefix, _, name = name.partition(".")
            if prefix != topic_type:
                raise _refuse(f"Filters of this topic apply to {topic_type}", "Subscription.criteria")
        pairs = [(name, v)]
    for name, _ in pairs:
        if name.split(":")[0] not in allowed_names:
            raise _refuse(f"This topic cannot be filtered by '{name}'", "Subscription.criteria")
    return pairs


def parse_spec(sub: dict, settings: SubscriptionSettings) -> Spec:
    """The Subscription's meaning; UnprocessableEntity naming what this server will not honour."""
    criteria = sub.get("criteria")
    if not isinstance(criteria, str) or not criteria.strip():
        raise _refuse("Subscription.criteria is required", "Subscription.criteria")
    channel = sub.get("channel") if isinstance(sub.get("channel"), dict) else {}
    if channel.get("type") != "rest-hook":
        raise _refuse("Only the rest-hook channel is supported", "Subscription.channel.type")
    if _exts(channel.get("_type")):
        raise _refuse("Custom channel types are not supported", "Subscription.channel.type")
    endpoint = _endpoint_ok(channel.get("endpoint"), settings)
    headers = []
    for h in channel.get("header") or []:
        name, sep, value = str(h).partition(":")
        if not sep or not name.strip() or "\n" in str(h) or "\r" in str(h):
            raise _refuse("channel.header entries read 'Name: value'", "Subscription.channel.header")
        headers.append((name.strip(), value.strip()))
    payload = channel.get("payload")
    if payload is not None:
        mime, *params = [p.strip() for p in str(payload).split(";")]
        if mime not in PAYLOAD_TYPES:
            raise _refuse("channel.payload must be application/fhir+json", "Subscription.channel.payload")
        for p in params:
            k, _, v = p.partition("=")
            if k.strip() == "fhirVersion" and v.strip() not in ("4.0", "4.0.1"):
                raise _refuse("Notifications are sent in FHIR 4.0 only", "Subscription.channel.payload")
    channel_exts = _exts(channel)
    heartbeat = _one(channel_exts, HEARTBEAT_EXT, "valueUnsignedInt", "Subscription.channel")
    timeout = _one(channel_exts, TIMEOUT_EXT, "valueUnsignedInt", "Subscription.channel")
    max_count = _one(channel_exts, MAX_COUNT_EXT, "valuePositiveInt", "Subscription.channel", positive=True)
    content_exts = [e for e in _exts(channel.get("_payload"))]
    topic = TOPICS.get(criteria.strip())
    if topic is not None:
        if payload is None:
            raise _refuse("channel.payload is required", "Subscription.channel.payload")
        contents = [e for e in content_exts if e.get("url") == CONTENT_EXT]
        if len(contents) != 1 or len(content_exts) != 1 or contents[0].get("valueCode") not in CONTENTS:
            raise _refuse("channel.payload needs one backport-payload-content: empty, id-only or full-resource",
                          "Subscription.channel.payload")
        filters: list[tuple[str, str]] = []
        for e in _exts(sub.get("_criteria")):
            if e.get("url") != FILTER_EXT:
                raise _refuse("Unsupported extension on Subscription.criteria", "Subscription.criteria")
            filters.extend(_filter_pairs(e.get("valueString"), topic.resource_type, topic.filters))
        _strict_search(topic.resource_type, filters)
        return Spec("topic", topic.resource_type, topic.url, tuple(filters), endpoint, tuple(headers),
                    str(payload), contents[0]["valueCode"], heartbeat, timeout, max_count)
    if criteria.startswith(("http:", "https:", "urn:")):
        raise _refuse("This server does not implement that SubscriptionTopic", "Subscription.criteria")
    resource_type, _, query = criteria.strip().partition("?")
    if not _TYPE.match(resource_type) or resource_type not in settings.classic_types:
        raise _refuse(f"Classic Subscriptions may watch {', '.join(settings.classic_types)}", "Subscription.criteria")
    if content_exts or _exts(sub.get("_criteria")):
        raise _refuse("Backport extensions need a topic canonical as criteria", "Subscription.criteria")
    if heartbeat:  # heartbeats are backport notification Bundles, which a classic receiver does not take
        raise _refuse("backport-heartbeat-period needs a topic canonical as criteria", "Subscription.channel")
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(n.startswith("_") and n != "_id" for n, _ in pairs):
        raise _refuse("Classic criteria take search parameters only (no _ result parameters)", "Subscription.criteria")
    _strict_search(resource_type, pairs)
    return Spec("classic", resource_type, None, tuple(pairs), endpoint, tuple(headers),
                None if payload is None else str(payload), "empty" if payload is None else "full-resource",
                heartbeat, timeout, max_count)


def _strict_search(resource_type: str, pairs: list[tuple[str, str]]) -> None:
    try:
        parse_search([resource_type], pairs, strict=True)
    except Exception as exc:  # noqa: BLE001 - whatever the parser refuses, the Subscription cannot honour
        raise _refuse(f"Filter not supported: {getattr(exc, 'diagnostics', None) or type(exc).__name__}",
                      "Subscription.criteria") from None


def _channel_key(sub: dict) -> bytes:
    s = strip_state(sub)
    return orjson.dumps({k: s.get(k) for k in ("criteria", "_criteria", "channel")}, option=orjson.OPT_SORT_KEYS)


class SubscriptionAccept:
    def __init__(self, settings: SubscriptionSettings):
        self.settings = settings

    async def prepare(self, reader: ResourceReader, id: str, sub: dict) -> dict:
        principal: Principal = acting.get() or Principal.anonymous_superuser()
        spec = parse_spec(sub, self.settings)
        if not principal.unrestricted and allowed(principal, spec.resource_type, "s") is None:
            raise Forbidden(f"This client may not read {spec.resource_type}: it cannot subscribe to it")
        requested = sub.get("status")
        if requested not in CLIENT_STATUSES:
            raise _refuse("A client sets a Subscription's status to requested, active or off", "Subscription.status")
        found = await reader.read("Subscription", id)
        old = orjson.loads(found.body) if found is not None and found.body is not None else None
        if old is not None and not principal.unrestricted:
            owner = owner_of(old)
            if owner is None or owner.client_id != principal.client_id:
                raise Forbidden("This Subscription belongs to another client")
        if requested == "off":
            status = "off"
        elif old is not None and old.get("status") == "active" and _channel_key(old) == _channel_key(sub):
            status = "active"  # nothing about delivery changed: no new handshake
        else:
            status = "requested" if spec.kind == "topic" else "active"
        out = with_state(strip_state(sub), owner=owner_extension(principal))
        out["status"] = status
        # the owner tag the access decision reads (smart_auth/access.py: a client sees its own only)
        meta = dict(out.get("meta") or {})
        tags = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("system") == SUBSCRIPTION_OWNER)]
        meta["tag"] = [*tags, {"system": SUBSCRIPTION_OWNER, "code": principal.client_id}]
        out["meta"] = meta
        if status != "error":
            out.pop("error", None)
        return out

    async def on_subscription(self, uow: UnitOfWork, previous: StoredVersion | None, stored: StoredVersion) -> None:
        """After a write: a topic-based Subscription stored `requested` gets its handshake."""
        if stored.body is None:
            return
        sub = orjson.loads(stored.body)
        if sub.get("status") != "requested" or sub.get("criteria") not in TOPICS:
            return
        await uow.enqueue(NOTIFY_KIND, f"{stored.id}/handshake/{stored.version}",
                          {"subscription": stored.id, "type": "handshake", "version": stored.version})
