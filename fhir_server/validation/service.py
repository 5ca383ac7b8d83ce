"""Everything the server checks about a resource beyond its structure, in one object per server
configuration: the base definition's rules (invariants, bindings, references, extensions), every
profile the resource claims in meta.profile, the profiles the operator requires per resource
type, and a QuestionnaireResponse against its Questionnaire.

Pure and synchronous: callers fetch what the checks need from the store first (the targets of
references, the Questionnaire) and pass it in. The write path (interactions/profile_check.py) and
`$validate` (interactions/validate_operation.py) are its two callers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from profiles.guide import Guide

from .definitions import DefinitionIndex
from .issues import Issue
from .ports import ReferenceResolver
from .profile import ProfileValidator
from .questionnaire import check_questionnaire, validate_response
from .terminology import LocalTerminology

__all__ = ["Validation", "ConfigurationError", "literal_references", "questionnaire_canonical"]


class ConfigurationError(Exception):
    """A required profile the server does not know (a start-up error, not a request error)."""


class Validation:
    def __init__(self, guide: Guide, required_profiles: Mapping[str, Sequence[str]] | None = None):
        self.guide = guide
        self.definitions = DefinitionIndex(extra=guide.of_type("StructureDefinition"))
        self.terminology = LocalTerminology(extra=guide.of_type("ValueSet") + guide.of_type("CodeSystem"))
        self.profiles = ProfileValidator(self.definitions, self.terminology)
        self.required: dict[str, tuple[str, ...]] = {t: tuple(urls) for t, urls in (required_profiles or {}).items()}
        for resource_type, urls in self.required.items():
            for url in urls:
                sd = self.definitions.structure_definition(url)
                if sd is None:
                    raise ConfigurationError(f"required profile {url} for {resource_type} is not known to this server")
                if sd.get("type") != resource_type:
                    raise ConfigurationError(f"required profile {url} is a profile on {sd.get('type')}, not {resource_type}")

    def knows_profile(self, url: str) -> bool:
        return self.definitions.structure_definition(url) is not None

    def profiles_for(self, resource: dict, extra: Iterable[str] = ()) -> list[str]:
        """The profiles a write of `resource` is checked against besides its base definition: the
        required ones for its type and `extra` (meta.profile is validate_claimed's own)."""
        claimed = set(_meta_profiles(resource))
        out: list[str] = []
        for url in (*self.required.get(resource.get("resourceType", ""), ()), *extra):
            if url not in claimed and url not in out:
                out.append(url)
        return out

    def needs_references(self, resource: dict) -> bool:
        """Whether a check may look at the targets of references: only profiles constrain them
        (targetProfile), so a resource with no profile to meet needs no reads."""
        return bool(_meta_profiles(resource)) or bool(self.required.get(resource.get("resourceType", "")))

    def validate(
        self,
        resource: dict,
        *,
        profiles: Sequence[str] = (),
        resolve: ReferenceResolver | None = None,
        questionnaire: dict | None = None,
    ) -> list[Issue]:
        """Every issue found; the caller decides what errors mean (400 on write, 200 on $validate)."""
        issues = list(self.profiles.validate_claimed(resource, resolve=resolve))
        for url in self.profiles_for(resource, profiles):
            issues.extend(self.profiles.validate(resource, url, resolve=resolve))
        if resource.get("resourceType") == "Questionnaire":
            # what the que-* invariants (checked above) cannot say: enableWhen names a real, earlier
            # question whose type its answer fits; answerOptions fit the item type
            issues.extend(i for i in check_questionnaire(resource) if i.rule in _QUESTIONNAIRE_RULES)
        if resource.get("resourceType") == "QuestionnaireResponse" and resource.get("questionnaire"):
            if questionnaire is not None:
                issues.extend(validate_response(resource, questionnaire, self.terminology))
            else:
                issues.append(Issue(
                    "warning", "not-found", "QuestionnaireResponse.questionnaire",
                    "The Questionnaire this response answers is not known to this server (neither in the "
                    "implementation guide nor stored), so its answers were not checked against it",
                    "qr-questionnaire-unknown",
                ))
        return issues


_QUESTIONNAIRE_RULES = frozenset({"que-enablewhen-target", "que-enablewhen-type", "que-option-type"})


def _meta_profiles(resource: dict) -> list[str]:
    meta = resource.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    return [p for p in profiles if isinstance(p, str)] if isinstance(profiles, list) else []


def questionnaire_canonical(resource: dict) -> str | None:
    value = resource.get("questionnaire") if resource.get("resourceType") == "QuestionnaireResponse" else None
    return value if isinstance(value, str) and value else None


def literal_references(resource: object, limit: int = 64) -> list[str]:
    """The relative literal references (`Type/id`) in a resource, each once, at most `limit`: what
    a profile's targetProfile may need to read. Contained (`#id`) and absolute ones are skipped."""
    found: dict[str, None] = {}
    stack = [resource]
    while stack and len(found) < limit:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and ref.count("/") == 1 and not ref.startswith("#") and ":" not in ref:
                found.setdefault(ref, None)
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return list(found)
