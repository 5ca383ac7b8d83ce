"""What a user is asked to approve, and what their answer grants.

The offer is the requested scopes that the client's registration allows and that fit the user:
a patient user gets patient/ scopes (user/ ones are dropped: their own record is all they may
share), nobody gets system/ scopes through a browser. The user may untick any resource scope and
may replace a whole Observation or Condition scope by some of its categories (ONC's "granular
scope selection"); launch, openid and fhirUser come with the approval itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from .pages import ScopeChoice, describe_scope
from .scopes import (FHIR_USER, LAUNCH, LAUNCH_ENCOUNTER, LAUNCH_PATIENT, OFFLINE_ACCESS, ONLINE_ACCESS, OPENID,
                     PROFILE, InvalidScope, ResourceScope, ScopeSet, parse_resource_scope)
from .store.records import User

# Categories offered as narrower alternatives of a whole-resource scope (v2 query restrictions).
CATEGORY_NARROWINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "Observation": tuple(
        (f"http://terminology.hl7.org/CodeSystem/observation-category|{code}", label)
        for code, label in (("laboratory", "Laboratory results"), ("vital-signs", "Vital signs"),
                            ("social-history", "Social history"), ("survey", "Questionnaires and surveys"),
                            ("exam", "Examination findings"), ("imaging", "Imaging"))
    ),
    "Condition": (
        ("http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item", "Problem list"),
        ("http://terminology.hl7.org/CodeSystem/condition-category|encounter-diagnosis", "Visit diagnoses"),
        ("http://hl7.org/fhir/us/core/CodeSystem/condition-category|health-concern", "Health concerns"),
    ),
}
# Scopes the approval itself carries (not shown as boxes to untick).
REQUIRED_OTHER = {LAUNCH, LAUNCH_PATIENT, LAUNCH_ENCOUNTER, OPENID, FHIR_USER, PROFILE}


def is_clinician(user: User) -> bool:
    return user.fhir_user.startswith("Practitioner/")


@dataclass(frozen=True)
class Offer:
    scopes: ScopeSet
    for_clinician: bool = False

    @classmethod
    def build(cls, allowed_by_client: str, user: User) -> "Offer":
        scopes = ScopeSet.parse(allowed_by_client)
        keep = [s for s in scopes.resource
                if s.context == "patient" or (s.context == "user" and is_clinician(user))]
        return cls(ScopeSet(tuple(keep), scopes.other), for_clinician=is_clinician(user))

    @property
    def needs_patient(self) -> bool:
        return LAUNCH_PATIENT in self.scopes or self.scopes.has_context("patient")

    def choices(self) -> list[ScopeChoice]:
        items: list[ScopeChoice] = []
        other = list(self.scopes.other)
        if OPENID in other and FHIR_USER in other:  # one thing to the user: "know who you are"
            other.remove(FHIR_USER)
            other[other.index(OPENID)] = f"{OPENID} {FHIR_USER}"
        for word in other:
            items.append(ScopeChoice(word, describe_scope(word),
                                     required=all(w in REQUIRED_OTHER for w in word.split())))
        for scope in self.scopes.resource:
            narrowings: tuple[tuple[str, str], ...] = ()
            if not scope.query and scope.resource_type in CATEGORY_NARROWINGS and "s" in scope.permissions:
                narrowings = tuple((_narrowed(scope, value).text, label)
                                   for value, label in CATEGORY_NARROWINGS[scope.resource_type])
            whose = "the patient's" if self.for_clinician else "your"
            items.append(ScopeChoice(scope.text, describe_scope(scope.text, whose=whose), narrowings=narrowings))
        return items

    def decide(self, posted: list[str]) -> ScopeSet:
        """The scopes the user approved: required ones, ticked ones, and ticked narrowings of an
        offered resource scope (only narrower than what was offered, never wider)."""
        other = [w for w in self.scopes.other if w in REQUIRED_OTHER or w in posted]
        resource: list[ResourceScope] = []
        for word in posted:
            try:
                scope = parse_resource_scope(word) if "/" in word else None
            except InvalidScope:  # a tampered form: not something we offered, so not granted
                continue
            if scope is None or scope in resource:
                continue
            if any(offered.covers(scope) and _same_shape(offered, scope) for offered in self.scopes.resource):
                resource.append(scope)
        # a ticked whole-resource scope makes its narrowings redundant
        resource = [s for s in resource if not any(o is not s and o.covers(s) for o in resource)]
        return ScopeSet(tuple(resource), tuple(other))


def _narrowed(scope: ResourceScope, category: str) -> ResourceScope:
    return ResourceScope(scope.context, scope.resource_type, scope.permissions, (("category", category),))


def _same_shape(offered: ResourceScope, posted: ResourceScope) -> bool:
    """A posted scope is the offered one itself or one of the category narrowings we offered."""
    if posted == offered:
        return True
    if posted.query and not offered.query and posted.permissions == offered.permissions:
        values = {v for v, _ in CATEGORY_NARROWINGS.get(posted.resource_type, ())}
        return len(posted.query) == 1 and posted.query[0][0] == "category" and posted.query[0][1] in values
    return False


def refresh_scopes(granted: ScopeSet) -> bool:
    return OFFLINE_ACCESS in granted or ONLINE_ACCESS in granted
