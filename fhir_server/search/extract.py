"""Index extraction: the entries one resource version contributes to the search index.

Run once per write (create, update, each transaction entry); storage keeps the entries beside the
version so that a search never parses resource bodies (DESIGN.md, "Storage"). For every supported
search parameter of the resource's type (search.html#standard; registry.py), its expression is
evaluated and each value converted by converters.py. Expressions are compiled once per resource
type into typed JSON walkers (fhirpath/compiler.py); the few the compiler does not handle run on
fhirpathpy (fhirpath/fallback.py). Composite parameters (search.html#composite) yield one entry
per focus element and combination of its component values; a focus element lacking a component
value yields none.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir_server.search.converters import Converter, converter_for
from fhir_server.search.entries import CompositeEntry, IndexEntry, TokenEntry
from fhir_server.search.fhirpath.compiler import CompiledPath, TypedPath, Unsupported, compile_expression
from fhir_server.search.fhirpath.fallback import compile_fallback, infer_fhir_type
from fhir_server.search.registry import SearchParam, param_by_url, resource_types, search_params, type_table

__all__ = ["PlanSummary", "extract_index", "plan_summary"]


@dataclass(frozen=True, slots=True)
class _Branch:
    path: CompiledPath
    convert: Converter


@dataclass(frozen=True, slots=True)
class _CompiledParam:
    code: str
    branches: tuple[_Branch, ...]

    def extract(self, resource: dict, out: list[IndexEntry]) -> None:
        code = self.code
        for branch in self.branches:
            convert, system = branch.convert, branch.path.code_system
            for value in branch.path.evaluate(resource, resource):
                convert(out, code, value, system)


@dataclass(frozen=True, slots=True)
class _FallbackParam:
    code: str
    type: str
    evaluate: Callable[[dict], list]

    def extract(self, resource: dict, out: list[IndexEntry]) -> None:
        for value in self.evaluate(resource):
            fhir_type = infer_fhir_type(value, self.type)
            convert = converter_for(self.type, fhir_type) if fhir_type else None
            if convert is not None:
                convert(out, self.code, value, None)


@dataclass(frozen=True, slots=True)
class _Component:
    code: str
    branches: tuple[_Branch, ...]


@dataclass(frozen=True, slots=True)
class _CompositeParam:
    code: str
    focus: tuple[tuple[CompiledPath, tuple[_Component, ...]], ...]

    def extract(self, resource: dict, out: list[IndexEntry]) -> None:
        for focus_path, components in self.focus:
            for node in focus_path.evaluate(resource, resource):
                # Walk every component first (cheap) and convert only when none is empty.
                found = []
                for component in components:
                    values = [(b, v) for b in component.branches for v in b.path.evaluate(node, resource)]
                    if not values:
                        break
                    found.append(values)
                else:
                    self._combine(components, found, out)

    def _combine(self, components: tuple[_Component, ...], found: list, out: list[IndexEntry]) -> None:
        per_component: list[list[IndexEntry]] = []
        for component, values in zip(components, found):
            converted: list[IndexEntry] = []
            for branch, value in values:
                branch.convert(converted, component.code, value, branch.path.code_system)
            # A text-only token (CodeableConcept.text) cannot be matched by a composite search,
            # whose components take no modifiers (search.html#composite).
            entries = [e for e in dict.fromkeys(converted) if not _text_only(e)]
            if not entries:
                return
            per_component.append(entries)
        out.extend(CompositeEntry(self.code, combo) for combo in itertools.product(*per_component))


_Plan = _CompiledParam | _FallbackParam | _CompositeParam


def _text_only(entry: IndexEntry) -> bool:
    return isinstance(entry, TokenEntry) and entry.code is None and entry.system is None


@dataclass(frozen=True, slots=True)
class PlanSummary:
    """How each supported parameter of a type is evaluated, and what cannot be indexed."""

    compiled: tuple[str, ...]
    fallback: tuple[str, ...]
    not_indexed: tuple[str, ...]  # supported parameters for which nothing can be extracted
    unindexed_branches: tuple[tuple[str, str], ...]  # (code, FHIR type) reached but not convertible


@dataclass(frozen=True, slots=True)
class _TypePlan:
    # Branches that start by reading one top-level element, grouped by its JSON key: extraction
    # visits only the keys a resource has, so absent elements cost nothing.
    by_key: dict[str, tuple[tuple[str, _Branch], ...]]
    others: tuple[_Plan, ...]  # composites, predicates, fallbacks
    summary: PlanSummary


def _branches(paths: tuple[CompiledPath, ...], param_type: str, skipped: list[tuple[str, str]], code: str) -> tuple[_Branch, ...]:
    branches = []
    for path in paths:
        convert = converter_for(param_type, path.fhir_type)
        if convert is None:
            skipped.append((code, path.fhir_type))
        else:
            branches.append(_Branch(path, convert))
    return tuple(branches)


def _composite(param: SearchParam, resource_type: str, skipped: list[tuple[str, str]]) -> _CompositeParam:
    table = type_table()
    focus = []
    for focus_path in compile_expression(param.expression or "", resource_type, resource_type, table):
        components = []
        for url, expression in param.components:
            definition = param_by_url(url)
            if definition is None:
                raise Unsupported(f"unknown component {url}")
            paths = compile_expression(expression, focus_path.fhir_type, resource_type, table)
            components.append(_Component(definition.code, _branches(paths, definition.type, skipped, param.code)))
        focus.append((focus_path, tuple(components)))
    return _CompositeParam(param.code, tuple(focus))


@cache
def _plan(resource_type: str) -> _TypePlan:
    table = type_table()
    params: list[_Plan] = []
    compiled, fallback, not_indexed, skipped = [], [], [], []
    for code, param in search_params(resource_type).items():
        if not param.supported or param.expression is None:
            continue
        try:
            if param.type == "composite":
                plan: _Plan = _composite(param, resource_type, skipped)
            else:
                plan = _CompiledParam(code, _branches(
                    compile_expression(param.expression, resource_type, resource_type, table), param.type, skipped, code))
            compiled.append(code)
        except Unsupported:
            if param.type == "composite":
                not_indexed.append(code)
                continue
            plan = _FallbackParam(code, param.type, compile_fallback(param.expression))
            fallback.append(code)
        if isinstance(plan, _CompiledParam) and not plan.branches:
            not_indexed.append(code)
            continue
        if isinstance(plan, _CompositeParam) and not any(all(c.branches for c in comps) for _, comps in plan.focus):
            not_indexed.append(code)
            continue
        params.append(plan)
    summary = PlanSummary(tuple(compiled), tuple(fallback), tuple(not_indexed), tuple(dict.fromkeys(skipped)))
    by_key: dict[str, list[tuple[str, _Branch]]] = {}
    others: list[_Plan] = []
    for plan in params:
        keyed = isinstance(plan, _CompiledParam) and all(
            isinstance(b.path, TypedPath) and b.path.first_key for b in plan.branches)
        if not keyed:
            others.append(plan)
            continue
        for branch in plan.branches:
            by_key.setdefault(branch.path.first_key, []).append((plan.code, branch))  # type: ignore[union-attr, arg-type]
    return _TypePlan({k: tuple(v) for k, v in by_key.items()}, tuple(others), summary)


def plan_summary(resource_type: str) -> PlanSummary:
    return _plan(resource_type).summary


def extract_index(resource: dict[str, Any], codes: "frozenset[str] | None" = None) -> list[IndexEntry]:
    """Every index entry of `resource`, duplicates removed; only those of the parameters in `codes`
    when given (an access check needs two or three). Unknown resource types have none."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise ValueError("not a resource: no resourceType")
    if resource_type not in resource_types():
        return []  # validation rejects unknown types; never cache a plan for one
    plan = _plan(resource_type)
    out: list[IndexEntry] = []
    by_key = plan.by_key
    for key in resource:
        group = by_key.get(key)
        if group is None:
            continue
        for code, branch in group:
            if codes is not None and code not in codes:
                continue
            convert, path = branch.convert, branch.path
            for value in path.evaluate(resource, resource):
                convert(out, code, value, path.code_system)
    for param in plan.others:
        if codes is None or param.code in codes:
            param.extract(resource, out)
    return list(dict.fromkeys(out))
