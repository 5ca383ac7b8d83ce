"""FHIRPath invariants (ElementDefinition.constraint): compiled once, evaluated per element.

validation.md §A3.9 and VAL-60..64:

- every expression is parsed and compiled once, with the R4 model (`fhirpathpy.compile(expr,
  models["r4"])`), when its profile is compiled (PERF-01);
- published expressions known to be wrong are replaced first, as the reference validator does
  (`FIXUPS`: que-7, que-12, con-3, the unanchored regexes of inv-0/que-0/eld-19/eld-20);
- the universal invariants run natively (native.py), ele-1/ext-1 in the walk itself;
- functions fhirpathpy lacks are supplied through its `userInvocationTable`: `hasValue()`,
  `htmlChecks()`, `resolve()`, `memberOf()`, `conformsTo()` (the last three read the validation in
  progress from a context variable: the resolver, the terminology, the validator);
- at compile time each expression is checked for functions nobody implements and smoke-tested on
  an empty focus; an invariant that cannot be evaluated keeps its `problem` and is reported as a
  warning wherever it applies, never skipped silently (VAL-63);
- `guard`: for the common shapes `x.empty() or ...`, `x.exists().not() or ...` and
  `x.exists() implies ...`, the invariant holds trivially when `x` is absent, which the walk tests
  with a dict lookup instead of a FHIRPath evaluation.

Evaluation: the element is the focus (`$this`), `%resource` its resource, `%rootResource` the
containing resource for contained ones. An empty result is not a failure (FHIRPath comparisons of
values of different precision are empty, and no data should be rejected for that); `false` is.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import fhirpathpy
from fhirpathpy.engine.invocations import invocation_registry
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser import parse

from fhir_server.validation.profile.model import Scope
from fhir_server.validation.profile.native import NativeCheck, native_for
from fhir_server.validation.profile.xhtml import narrative_ok

__all__ = [
    "Invariant",
    "EvaluationHooks",
    "compile_invariant",
    "evaluate",
    "WALK_CHECKED",
    "BEST_PRACTICE_EXTENSION",
    "hooks",
]

MODEL = models["r4"]
BEST_PRACTICE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/elementdefinition-bestpractice"

# Checked by the walk on every element / extension (validation.md VAL-03, VAL-50), never here.
WALK_CHECKED = frozenset({"ele-1", "ext-1"})

# Published R4 expressions that are wrong, and what is evaluated instead (JV FHIRPathExpressionFixer
# and validation.md §A3.9's table; con-3 is rewritten to the rule its text states).
FIXUPS: dict[str, str] = {
    "enableWhen.count() > 2 implies enableBehavior.exists()": "enableWhen.count() >= 2 implies enableBehavior.exists()",
    "operator = 'exists' implies (answer is Boolean)": "operator = 'exists' implies (answer is boolean)",
    "name.matches('[A-Z]([A-Za-z0-9_]){0,254}')": "name.exists() implies name.matches('^[A-Z]([A-Za-z0-9_]){0,254}$')",
    "clinicalStatus.exists() or verificationStatus.coding.where(system='http://terminology.hl7.org/CodeSystem/"
    "condition-ver-status' and code = 'entered-in-error').exists() or category.select($this='problem-list-item')"
    ".empty()": "clinicalStatus.exists() or verificationStatus.coding.where(system='http://terminology.hl7.org/"
    "CodeSystem/condition-ver-status' and code = 'entered-in-error').exists() or category.coding.where(system="
    "'http://terminology.hl7.org/CodeSystem/condition-category' and code = 'problem-list-item').empty()",
    "path.matches('[A-Za-z][A-Za-z0-9]*(\\\\.[a-z][A-Za-z0-9]*(\\\\[x])?)*')": (
        "path.matches('^[A-Za-z][A-Za-z0-9]*(\\\\.[a-z][A-Za-z0-9]*(\\\\[x])?)*$')"
    ),
    "path.matches('[^\\\\s\\\\.,:;\\\\\\'\"\\\\/|?!@#$%&*()\\\\[\\\\]{}]{1,64}(\\\\.[^\\\\s\\\\.,:;\\\\\\'\"\\\\/|?!@#$%&*()"
    "\\\\[\\\\]{}]{1,64}(\\\\[x\\\\])?(\\\\:[^\\\\s\\\\.]+)?)*')": (
        "path.matches('^[^\\\\s\\\\.,:;\\\\\\'\"\\\\/|?!@#$%&*()\\\\[\\\\]{}]{1,64}(\\\\.[^\\\\s\\\\.,:;\\\\\\'\"\\\\/|?!@#$%&*()"
        "\\\\[\\\\]{}]{1,64}(\\\\[x\\\\])?(\\\\:[^\\\\s\\\\.]+)?)*$')"
    ),
}


@dataclass(slots=True)
class EvaluationHooks:
    """What the user functions need from the validation in progress (set by walk.py)."""

    scope: Scope | None = None
    resolve: Callable[[str], dict | None] | None = None
    member_of: Callable[[Any, str], bool | None] | None = None
    conforms_to: Callable[[Any, str], bool | None] | None = None


hooks: ContextVar[EvaluationHooks | None] = ContextVar("fhirpath_hooks", default=None)


def _has_value(inputs: list) -> list:
    # FHIRPath hasValue(): a single primitive with a value (a `_x`-only primitive is a dict here)
    return [len(inputs) == 1 and inputs[0] is not None and not isinstance(inputs[0], (dict, list))]


def _html_checks(inputs: list) -> list:
    return [all(narrative_ok(value) for value in inputs)]


def _resolve(inputs: list) -> list:
    current = hooks.get()
    out: list = []
    for item in inputs:
        reference = item.get("reference") if isinstance(item, dict) else item
        if not isinstance(reference, str):
            continue
        if reference[:1] == "#" and current is not None and current.scope is not None:
            for contained in current.scope.root.get("contained") or ():
                if isinstance(contained, dict) and contained.get("id") == reference[1:]:
                    out.append(contained)
        elif current is not None and current.resolve is not None:
            target = current.resolve(reference)
            if target is not None:
                out.append(target)
    return out


def _member_of(inputs: list, value_set: Any) -> list:
    current = hooks.get()
    if current is None or current.member_of is None or not inputs or not isinstance(value_set, str):
        return []
    answers = [current.member_of(item, value_set) for item in inputs]
    if any(answer is None for answer in answers):
        return []  # cannot tell: empty, which the invariant treats as "not failed"
    return [all(answers)]


def _conforms_to(inputs: list, url: Any) -> list:
    current = hooks.get()
    if current is None or current.conforms_to is None or not inputs or not isinstance(url, str):
        return []
    answers = [current.conforms_to(item, url) for item in inputs]
    if any(answer is None for answer in answers):
        return []
    return [all(answers)]


USER_FUNCTIONS: dict[str, dict] = {
    "hasValue": {"fn": _has_value, "arity": {0: []}},
    "htmlChecks": {"fn": _html_checks, "arity": {0: []}},
    "htmlChecks2": {"fn": _html_checks, "arity": {0: []}},
    "resolve": {"fn": _resolve, "arity": {0: []}},
    "memberOf": {"fn": _member_of, "arity": {1: ["String"]}},
    "conformsTo": {"fn": _conforms_to, "arity": {1: ["String"]}},
}
_OPTIONS = {"userInvocationTable": USER_FUNCTIONS, "traceFn": lambda *args: None}
_KNOWN_FUNCTIONS = frozenset(invocation_registry) | frozenset(USER_FUNCTIONS)


@dataclass(slots=True, eq=False)
class Invariant:
    key: str
    severity: str  # error | warning
    human: str
    expression: str  # what is evaluated (after FIXUPS)
    source: str | None
    best_practice: bool
    native: NativeCheck | None = None
    compiled: Callable[..., list] | None = None
    guard: str | None = None  # child element name whose absence makes the invariant hold
    guard_keys: frozenset[str] = frozenset()  # its JSON keys, filled in by compile.py
    problem: str | None = None  # why it cannot be evaluated

    def describe(self) -> str:
        text = f"Constraint failed: {self.key}: '{self.human}'"
        if self.source:
            text += f" (defined in {self.source})"
        if self.best_practice:
            text += " (Best Practice Recommendation)"
        return text


def _function_names(node: dict, out: set[str]) -> None:
    if node.get("type") == "Functn":
        for child in node.get("children") or ():
            if child.get("type") == "Identifier":
                out.add(str(child.get("text", "")).strip("`"))
                break
    for child in node.get("children") or ():
        _function_names(child, out)


def _member_name(node: dict) -> str | None:
    """`x` when node is the plain member invocation `x` (a TermExpression)."""
    while node.get("type") in ("TermExpression", "InvocationTerm", "MemberInvocation") and node.get("children"):
        if node["type"] == "MemberInvocation":
            ident = node["children"][0]
            return str(ident.get("text", "")).strip("`") if ident.get("type") == "Identifier" else None
        node = node["children"][0]
    return None


def _call(node: dict) -> tuple[dict, str] | None:
    """(receiver, function name) when node is `receiver.fn()` with no arguments."""
    if node.get("type") != "InvocationExpression" or len(node.get("children") or ()) != 2:
        return None
    receiver, invocation = node["children"]
    if invocation.get("type") != "FunctionInvocation":
        return None
    functn = (invocation.get("children") or [{}])[0]
    parts = functn.get("children") or []
    if len(parts) != 1 or parts[0].get("type") != "Identifier":
        return None  # has parameters
    return receiver, str(parts[0].get("text", ""))


def _guard(tree: dict) -> str | None:
    """The child name x of `x.empty() or ...`, `x.exists().not() or ...`, `x.exists() implies ...`."""
    top = (tree.get("children") or [None])[0]
    if not isinstance(top, dict) or len(top.get("children") or ()) != 2:
        return None
    first = top["children"][0]
    operator = top.get("terminalNodeText") or []
    # `a or b or c` is `(a or b) or c`: the leftmost operand of a chain of `or`s decides alone
    while (
        top.get("type") == "OrExpression" and operator == ["or"] and first.get("type") == "OrExpression"
        and (first.get("terminalNodeText") or []) == ["or"] and len(first.get("children") or ()) == 2
    ):
        first = first["children"][0]
    call = _call(first)
    if call is None:
        return None
    receiver, name = call
    if top.get("type") == "ImpliesExpression" and name == "exists":
        return _member_name(receiver)
    if top.get("type") == "OrExpression" and operator == ["or"]:
        if name == "empty":
            return _member_name(receiver)
        if name == "not":
            inner = _call(receiver)
            if inner is not None and inner[1] == "exists":
                return _member_name(inner[0])
    return None


def compile_invariant(constraint: dict, focus_path: str, on_resource: bool = False) -> Invariant | None:
    """Compile one ElementDefinition.constraint; None for ele-1/ext-1 (checked by the walk) and for
    constraints without an expression (R4 constraints always have one; eld-21 only warns)."""
    key = str(constraint.get("key", ""))
    published = constraint.get("expression")
    if key in WALK_CHECKED or not isinstance(published, str):
        return None
    best_practice = any(
        ext.get("url") == BEST_PRACTICE_EXTENSION and ext.get("valueBoolean") is True
        for ext in constraint.get("extension") or ()
    )
    invariant = Invariant(
        key=key,
        severity="warning" if constraint.get("severity") == "warning" else "error",
        human=str(constraint.get("human", "")),
        expression=FIXUPS.get(published, published),
        source=constraint.get("source"),
        best_practice=best_practice,
        native=native_for(key, published),
    )
    if invariant.native is not None:
        return invariant
    try:
        tree = parse(invariant.expression)
    except Exception as exc:  # the parser raises plain Exceptions
        invariant.problem = f"the expression does not parse ({type(exc).__name__})"
        return invariant
    names: set[str] = set()
    _function_names(tree, names)
    missing = sorted(names - _KNOWN_FUNCTIONS)
    if missing:
        invariant.problem = f"uses functions the FHIRPath engine lacks: {', '.join(missing)}"
        return invariant
    invariant.guard = _guard(tree)
    try:
        invariant.compiled = fhirpathpy.compile(invariant.expression, MODEL, _OPTIONS)
        smoke = {"resourceType": focus_path} if on_resource else {}
        evaluate(invariant, smoke, focus_path, Scope(smoke, smoke, focus_path))
    except Exception as exc:
        invariant.compiled = None
        invariant.problem = f"the FHIRPath engine failed on it ({type(exc).__name__})"
    return invariant


def evaluate(invariant: Invariant, focus: Any, focus_path: str, scope: Scope) -> bool:
    """Whether the invariant holds on `focus`; raises when the engine fails (the walk turns that
    into an `invariant-engine` warning)."""
    if invariant.native is not None:
        return invariant.native(focus, scope)
    compiled = invariant.compiled
    if compiled is None:
        raise RuntimeError(invariant.problem or "not compiled")
    node = focus if isinstance(focus, dict) and "resourceType" in focus else ResourceNode.create_node(focus, focus_path)
    result = compiled(node, {"resource": scope.resource, "rootResource": scope.root})
    if not result:
        return True
    if len(result) != 1:
        raise ValueError("the invariant evaluated to more than one value")
    return result[0] is not False
