"""Profile validation on the single commit path: every resource written through a unit of work of
the app's store (create, update, patch, conditional writes, each transaction or batch entry) is
checked against its base definition, the profiles it claims, the profiles required for its type,
and (a QuestionnaireResponse) its Questionnaire, before it is written. An error aborts the write
with 400 and the OperationOutcome; the unit of work then rolls back, so nothing is stored.

The structure pass (validation.py: check) has already run before the unit of work opened; this
is the part that needs the store: the targets of references (for targetProfile) and the
Questionnaire, read inside the unit of work, so a transaction sees its own earlier entries.

Before that, per-type preparation (`prepare`): a Binary's inline photo goes to the blob store, a
Media gets the size and hash the server measured (fhir_server/media/ingest.py).

The implementation guide's own resources live in the store too (seeded at start) and are
read-only: writing or deleting one is refused with 405.
"""

from __future__ import annotations

from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import orjson

from ..errors import InvalidResource, MethodNotAllowed, OutcomeIssue
from ..search.parse import parse_search
from ..storage import ResourceReader, Store, StoredVersion, UnitOfWork
from ..validation.issues import Issue, has_errors
from ..validation.service import Validation, literal_references, questionnaire_canonical

__all__ = ["ValidatingStore", "validate_with_store", "outcome_issues", "find_questionnaire", "seed_guide",
           "collected_warnings"]

# Warnings of the writes a request made (an unknown claimed profile, an extensible binding not met):
# not reasons to refuse, but a client asking `Prefer: return=OperationOutcome` gets them.
_warnings: ContextVar[list[Issue] | None] = ContextVar("validation_warnings", default=None)


@contextmanager
def collected_warnings() -> Iterator[list[Issue]]:
    """Collect the validation warnings of the writes made inside the block (by this task)."""
    found: list[Issue] = []
    token = _warnings.set(found)
    try:
        yield found
    finally:
        _warnings.reset(token)


def outcome_issues(issues: list[Issue]) -> list[OutcomeIssue]:
    return [OutcomeIssue(i.severity, i.code, i.diagnostics, i.expression, i.rule) for i in issues]


async def find_questionnaire(reader: ResourceReader, validation: Validation, canonical: str) -> dict | None:
    """The Questionnaire a response names: the guide's, else the newest stored one with that url (and version)."""
    found = validation.guide.questionnaire(canonical)
    if found is not None:
        return found
    url, _, version = canonical.partition("|")
    params = [("url", url), ("_sort", "-_lastUpdated"), ("_count", "1")]
    if version:
        params.append(("version", version))
    page = await reader.search(parse_search(["Questionnaire"], params))
    return orjson.loads(page.matches[0].body) if page.matches else None


async def validate_with_store(
    reader: ResourceReader, validation: Validation, resource: dict, *, profiles: tuple[str, ...] = ()
) -> list[Issue]:
    """validation.validate with what it needs read from `reader` (a store or a unit of work)."""
    targets: dict[str, dict] = {}
    if validation.needs_references(resource) or profiles:
        for ref in literal_references(resource):
            resource_type, _, id = ref.partition("/")
            try:
                found = await reader.read(resource_type, id)
            except Exception:  # an unknown type in a reference is the validator's to report
                continue
            if found is not None and not found.deleted:
                targets[ref] = orjson.loads(found.body)
    canonical = questionnaire_canonical(resource)
    questionnaire = await find_questionnaire(reader, validation, canonical) if canonical else None
    return validation.validate(resource, profiles=profiles, resolve=targets.get, questionnaire=questionnaire)


# Work on a resource before it is validated and written, per type: (reader, id, resource) -> the
# resource to write (photos' bytes moved to the blob store, Media size and hash measured).
Prepare = Callable[[ResourceReader, str, dict], Awaitable[dict]]


class _ValidatingUnitOfWork:
    def __init__(self, inner: UnitOfWork, validation: Validation, read_only: set[tuple[str, str]],
                 prepare: dict[str, Prepare]):
        self._inner = inner
        self._validation = validation
        self._read_only = read_only
        self._prepare = prepare

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _refuse_guide(self, resource_type: str, id: str) -> None:
        if (resource_type, id) in self._read_only:
            raise MethodNotAllowed(
                f"{resource_type}/{id} is part of this server's implementation guide and is read-only"
            )

    async def write(self, resource_type: str, id: str, resource: dict, **options: Any) -> StoredVersion:
        self._refuse_guide(resource_type, id)
        prepare = self._prepare.get(resource_type)
        if prepare is not None:
            resource = await prepare(self._inner, id, resource)
        issues = await validate_with_store(self._inner, self._validation, resource)
        if has_errors(issues):
            raise InvalidResource(
                f"The {resource_type} does not conform to its definition or profiles",
                # errors only: warnings (narrative best practice, extensible bindings) are $validate's to report
                issues=outcome_issues([i for i in issues if i.severity in ("fatal", "error")]),
            )
        sink = _warnings.get()
        if sink is not None:
            sink.extend(i for i in issues if i.severity == "warning")
        return await self._inner.write(resource_type, id, resource, **options)

    async def delete(self, resource_type: str, id: str, **options: Any) -> StoredVersion | None:
        self._refuse_guide(resource_type, id)
        return await self._inner.delete(resource_type, id, **options)


class ValidatingStore:
    """The app's store: units of work validate every resource before writing it."""

    def __init__(self, inner: Store, validation: Validation, prepare: dict[str, Prepare] | None = None):
        self._inner = inner
        self.validation = validation
        self._read_only = validation.guide.keys()
        self._prepare = prepare or {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        async with self._inner.unit_of_work() as uow:
            yield _ValidatingUnitOfWork(uow, self.validation, self._read_only, self._prepare)  # type: ignore[misc]

    async def seed_guide(self) -> int:
        """Store the guide's resources (on the inner store: they are read-only through this one),
        writing only those that are new or changed; returns how many were written."""
        return await seed_guide(self._inner, self.validation.guide.resources)


def _content(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k != "meta"}


async def seed_guide(store: Store, resources: tuple[dict, ...]) -> int:
    written = 0
    for resource in resources:
        async with store.unit_of_work() as uow:
            current = await uow.read(resource["resourceType"], resource["id"])
            if current is not None and not current.deleted and _content(orjson.loads(current.body)) == _content(resource):
                continue
            await uow.write(resource["resourceType"], resource["id"], resource, method="PUT")
            written += 1
    return written
