"""SMART scopes (App Launch 2.2, scopes-and-launch-context.html): parse, compare, grant.

One grammar for both sides of the server: the authorization server uses it to grant what a client
may have (the subset of what it asked for that its registration allows) and to check a refresh
request asks for no more than was granted; the resource server uses it to decide what a token may do.

    resource scope  = ("patient" | "user" | "system") "/" (ResourceType | "*") "." permissions ["?" query]
    permissions     = v2: one or more of c r u d s, in that order | v1: "read" | "write" | "*"

v1 scopes mean their v2 equivalents (read = rs, write = cud, * = cruds) and are returned as
written when granted whole, so a v1 app sees the v1 strings it asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Iterable
from urllib.parse import parse_qsl

CONTEXTS = ("patient", "user", "system")
PERMISSIONS = "cruds"
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}

# The non-resource scopes this server knows (launch context, identity, refresh).
LAUNCH = "launch"
LAUNCH_PATIENT = "launch/patient"
LAUNCH_ENCOUNTER = "launch/encounter"
OPENID = "openid"
FHIR_USER = "fhirUser"
PROFILE = "profile"
OFFLINE_ACCESS = "offline_access"
ONLINE_ACCESS = "online_access"
KNOWN_OTHER = {LAUNCH, LAUNCH_PATIENT, LAUNCH_ENCOUNTER, OPENID, FHIR_USER, PROFILE, OFFLINE_ACCESS, ONLINE_ACCESS}

_RESOURCE = re.compile(r"^(patient|user|system)/([A-Z][A-Za-z]*|\*)\.([a-z*]+)(?:\?(.+))?$")
_V2 = re.compile(r"^c?r?u?d?s?$")


class InvalidScope(ValueError):
    """A scope string that looks like a resource scope but breaks the grammar."""


@dataclass(frozen=True, slots=True)
class ResourceScope:
    context: str  # patient | user | system
    resource_type: str  # a resource type or "*"
    permissions: str  # a non-empty subsequence of "cruds"
    query: tuple[tuple[str, str], ...] = ()  # v2 restriction: search parameters every resource must match
    v1: str | None = None  # "read" | "write" | "*" when written in v1 form

    @property
    def text(self) -> str:
        """The scope as the server writes it (v1 form kept when granted whole)."""
        perms = self.v1 if self.v1 is not None else self.permissions
        query = "?" + "&".join(f"{k}={v}" for k, v in self.query) if self.query else ""
        return f"{self.context}/{self.resource_type}.{perms}{query}"

    def applies_to(self, resource_type: str) -> bool:
        return self.resource_type in ("*", resource_type)

    def allows(self, permission: str) -> bool:
        return permission in self.permissions

    def covers(self, other: "ResourceScope") -> bool:
        """Whether this scope grants everything `other` grants (refresh: asked <= granted)."""
        return (
            self.context == other.context
            and (self.resource_type == "*" or self.resource_type == other.resource_type)
            and set(other.permissions) <= set(self.permissions)
            and (not self.query or self.query == other.query)
        )

    def intersect(self, allowed: "ResourceScope") -> "ResourceScope | None":
        """The part of this (requested) scope that `allowed` (a client's registration) permits."""
        if self.context != allowed.context:
            return None
        if allowed.resource_type != "*" and self.resource_type not in ("*", allowed.resource_type):
            return None
        if self.query and allowed.query and self.query != allowed.query:
            return None
        perms = "".join(p for p in PERMISSIONS if p in self.permissions and p in allowed.permissions)
        if not perms:
            return None
        resource_type = self.resource_type if self.resource_type != "*" else allowed.resource_type
        granted = ResourceScope(self.context, resource_type, perms, self.query or allowed.query)
        if self.v1 is not None and perms == self.permissions and granted.resource_type == self.resource_type \
                and granted.query == self.query:
            granted = replace(granted, v1=self.v1)
        return granted


def parse_resource_scope(text: str) -> ResourceScope | None:
    """A resource scope, or None for any other scope (launch, openid, ...). InvalidScope if malformed."""
    match = _RESOURCE.match(text)
    if match is None:
        if re.match(r"^(patient|user|system)/", text):
            raise InvalidScope(f"'{text}' is not a SMART resource scope")
        return None
    context, resource_type, perms, query = match.groups()
    v1 = None
    if perms in V1_PERMISSIONS:
        if query:
            raise InvalidScope(f"'{text}': query restrictions need v2 permissions (cruds)")
        v1, perms = perms, V1_PERMISSIONS[perms]
    elif not _V2.match(perms) or not perms:
        raise InvalidScope(f"'{text}': permissions must be c, r, u, d, s in that order, or read/write/*")
    pairs: tuple[tuple[str, str], ...] = ()
    if query:
        pairs = tuple(parse_qsl(query, keep_blank_values=False, strict_parsing=False))
        if not pairs or any(not k or not v for k, v in pairs):
            raise InvalidScope(f"'{text}': malformed query restriction")
        if resource_type == "*":
            raise InvalidScope(f"'{text}': a query restriction needs a resource type, not *")
    return ResourceScope(context, resource_type, perms, pairs, v1)


@dataclass(frozen=True)
class ScopeSet:
    """A parsed scope string: resource scopes plus the other scopes (launch, openid, ...)."""

    resource: tuple[ResourceScope, ...] = ()
    other: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | Iterable[str] | None) -> "ScopeSet":
        words = text.split() if isinstance(text, str) else list(text or ())
        resource: list[ResourceScope] = []
        other: list[str] = []
        for word in words:
            scope = parse_resource_scope(word)
            if scope is None:
                if word not in other:
                    other.append(word)
            elif scope not in resource:
                resource.append(scope)
        return cls(tuple(resource), tuple(other))

    @property
    def text(self) -> str:
        return " ".join([*self.other, *(s.text for s in self.resource)])

    def __contains__(self, word: str) -> bool:
        return word in self.other

    def has_context(self, context: str) -> bool:
        return any(s.context == context for s in self.resource)

    def granting(self, resource_type: str, permission: str) -> list[ResourceScope]:
        """The scopes that grant `permission` (one of c r u d s) on `resource_type`."""
        return [s for s in self.resource if s.applies_to(resource_type) and s.allows(permission)]

    def covers(self, other: "ScopeSet") -> bool:
        """Every scope of `other` is granted by this set (a refresh may narrow, never widen)."""
        return all(w in self.other for w in other.other) and all(
            any(mine.covers(theirs) for mine in self.resource) for theirs in other.resource
        )

    def grant(self, allowed: "ScopeSet") -> "ScopeSet":
        """What of this (requested) set a client registered for `allowed` may have."""
        granted: list[ResourceScope] = []
        for asked in self.resource:
            for permitted in allowed.resource:
                part = asked.intersect(permitted)
                if part is not None and not any(g.covers(part) for g in granted):
                    granted = [g for g in granted if not part.covers(g)] + [part]
        other = tuple(w for w in self.other if w in allowed.other)
        return ScopeSet(tuple(granted), other)

    def without(self, removed: Iterable[str]) -> "ScopeSet":
        drop = set(removed)
        return ScopeSet(tuple(s for s in self.resource if s.text not in drop),
                        tuple(w for w in self.other if w not in drop))
