"""FHIRPath invariants: the engine and its gaps (research/validation.md §A3.9, VAL-60..64).

Every invariant of the resources the server serves must be evaluable (natively or by fhirpathpy
with the published-expression fixups); an invariant that is not is reported at run time as a
warning, never skipped; the Java fixups (que-7, que-12, con-3) give the intended results.
"""

from __future__ import annotations

import pytest

from fhir_server.validation.definitions import DefinitionIndex
from fhir_server.validation.issues import Issue
from fhir_server.validation.profile import ProfileValidator, unevaluable_invariants
from fhir_server.validation.profile.invariants import FIXUPS, compile_invariant
from fhir_server.validation.profile.native import NATIVE
from fhir_server.validation.profile.slicing import parse_path
from fhir_server.validation.profile.xhtml import narrative_has_content, narrative_ok
from fhir_server.validation.terminology import LocalTerminology
from profiles.definitions import structure_definitions
from tests.fixtures.validation import CORE, derive

SERVED = [
    "Encounter", "QuestionnaireResponse", "Questionnaire", "Media", "Communication", "Task", "Condition", "CarePlan",
    "MedicationRequest", "Practitioner", "Organization", "Patient", "Location", "Binary", "ChargeItem",
]
EX = "http://example.org/fhir/StructureDefinition/"


def _with_constraint(url: str, key: str, expression: str) -> dict:
    return derive(
        "Patient",
        EX + url,
        changes={
            "Patient": {
                "constraint": [
                    {"key": key, "severity": "error", "human": "test constraint", "expression": expression}
                ]
            }
        },
    )


LOW_BOUNDARY = _with_constraint("uses-lowboundary", "ex-1", "birthDate.lowBoundary().exists()")
QUANTITY_COMPARE = derive(
    "Range",
    EX + "range-compare",
    changes={"Range": {"constraint": [{"key": "ex-2", "severity": "error", "human": "low below high", "expression": "low < high"}]}},
)


@pytest.fixture(scope="module")
def validator() -> ProfileValidator:
    return ProfileValidator(DefinitionIndex(extra=[LOW_BOUNDARY]), LocalTerminology(), best_practice="ignore")


def findings(issues: list[Issue]) -> set[tuple[str, str | None, str]]:
    return {(i.severity, i.rule, i.expression) for i in issues if i.severity != "information"}


def test_every_invariant_of_the_served_resources_and_their_datatypes_can_be_evaluated() -> None:
    assert unevaluable_invariants([CORE + name for name in SERVED], DefinitionIndex()) == []


def test_core_profiles_and_us_core_invariants_can_be_evaluated() -> None:
    profiles = [url for url, sd in structure_definitions().items() if sd.get("derivation") == "constraint" and sd["kind"] == "resource"]
    assert unevaluable_invariants(profiles, DefinitionIndex()) == []


def test_unevaluable_invariants_are_listed() -> None:
    # given as StructureDefinitions the index does not hold, or as urls it resolves
    assert unevaluable_invariants([LOW_BOUNDARY, QUANTITY_COMPARE]) == ["ex-1", "ex-2"]
    index = DefinitionIndex(extra=[LOW_BOUNDARY, QUANTITY_COMPARE])
    assert unevaluable_invariants([EX + "uses-lowboundary", EX + "range-compare"], index) == ["ex-1", "ex-2"]


def test_an_invariant_the_engine_cannot_evaluate_is_a_warning_not_a_pass(validator: ProfileValidator) -> None:
    (issue,) = validator.validate({"resourceType": "Patient", "birthDate": "2000"}, EX + "uses-lowboundary")
    assert (issue.severity, issue.code, issue.rule, issue.expression) == ("warning", "exception", "invariant-engine", "Patient")
    assert "ex-1" in issue.diagnostics


def test_native_invariants_match_the_published_expressions() -> None:
    published = {
        (c["key"], " ".join(c["expression"].split()))
        for sd in structure_definitions().values()
        for element in sd["snapshot"]["element"]
        for c in element.get("constraint", [])
        if "expression" in c
    }
    assert set(NATIVE) <= published


def test_fixups_replace_published_expressions() -> None:
    published = {c["expression"] for sd in structure_definitions().values() for e in sd["snapshot"]["element"] for c in e.get("constraint", [])}
    assert set(FIXUPS) <= published


def test_guards_skip_invariants_on_absent_elements() -> None:
    def guard(key: str, expression: str) -> str | None:
        invariant = compile_invariant({"key": key, "severity": "error", "expression": expression}, "Timing.repeat")
        return invariant.guard

    assert guard("tim-1", "duration.empty() or durationUnit.exists()") == "duration"
    assert guard("inv-1", "lastModified.exists().not() or authoredOn.exists().not() or lastModified >= authoredOn") == "lastModified"
    assert guard("x", "a.exists() implies b.exists()") == "a"
    assert guard("x", "a.empty() xor b.empty()") is None
    assert guard("x", "a.empty() or b.exists() implies c.exists()") is None  # (a or b) implies c


QUESTIONNAIRE = {"resourceType": "Questionnaire", "status": "draft"}


def test_que7_uses_the_fixed_expression(validator: ProfileValidator) -> None:
    valid = dict(QUESTIONNAIRE, item=[
        {"linkId": "a", "type": "boolean"},
        {"linkId": "b", "type": "string", "enableWhen": [{"question": "a", "operator": "exists", "answerBoolean": True}]},
    ])
    assert findings(validator.validate_base(valid)) == set()  # published `answer is Boolean` would reject it
    invalid = dict(QUESTIONNAIRE, item=[
        {"linkId": "a", "type": "boolean"},
        {"linkId": "b", "type": "string", "enableWhen": [{"question": "a", "operator": "exists", "answerString": "x"}]},
    ])
    assert findings(validator.validate_base(invalid)) == {("error", "que-7", "Questionnaire.item[1].enableWhen[0]")}


def test_que12_uses_the_fixed_expression(validator: ProfileValidator) -> None:
    two_conditions = dict(QUESTIONNAIRE, item=[
        {"linkId": "a", "type": "boolean"},
        {"linkId": "b", "type": "string", "enableWhen": [
            {"question": "a", "operator": "=", "answerBoolean": True},
            {"question": "a", "operator": "exists", "answerBoolean": True},
        ]},
    ])
    assert findings(validator.validate_base(two_conditions)) == {("error", "que-12", "Questionnaire.item[1]")}


def test_que0_name_regex_is_anchored(validator: ProfileValidator) -> None:
    strict = ProfileValidator(DefinitionIndex(), LocalTerminology(), best_practice="warning")
    assert findings(strict.validate_base(dict(QUESTIONNAIRE, name="Intake form"))) == {
        ("warning", "que-0", "Questionnaire"),
        ("warning", "dom-6", "Questionnaire"),
    }
    assert findings(strict.validate_base(dict(QUESTIONNAIRE, name="IntakeForm"))) == {("warning", "dom-6", "Questionnaire")}


def test_con3_uses_the_intended_rule() -> None:
    strict = ProfileValidator(DefinitionIndex(), LocalTerminology(), best_practice="warning")
    text = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Condition</div>'}
    category = "http://terminology.hl7.org/CodeSystem/condition-category"

    def condition(code: str) -> dict:
        return {"resourceType": "Condition", "text": text, "subject": {"reference": "Patient/p1"},
                "category": [{"coding": [{"system": category, "code": code}]}]}

    assert findings(strict.validate_base(condition("problem-list-item"))) == {("warning", "con-3", "Condition")}
    # the published expression compares a CodeableConcept with a string and flags this one too
    assert findings(strict.validate_base(condition("encounter-diagnosis"))) == set()


def test_percent_resource_is_the_containing_resource(validator: ProfileValidator) -> None:
    # obs-7 reads %resource.code: a component may not repeat the observation's own code when it has a value
    code = {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}
    observation = {
        "resourceType": "Observation", "status": "final", "code": code, "valueString": "x",
        "component": [{"code": code, "valueString": "y"}],
    }
    assert findings(validator.validate_base(observation)) == {("error", "obs-7", "Observation")}


def test_per1_compares_instants_in_utc_and_tolerates_mixed_precision(validator: ProfileValidator) -> None:
    def encounter(start: str, end: str) -> dict:
        return {"resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "period": {"start": start, "end": end}}

    assert findings(validator.validate_base(encounter("2026-01-01T10:00:00+02:00", "2026-01-01T09:30:00Z"))) == set()
    assert findings(validator.validate_base(encounter("2026-01-01T10:00:00Z", "2026-01-01T09:30:00+02:00"))) == {
        ("error", "per-1", "Encounter.period")
    }
    assert findings(validator.validate_base(encounter("2026-01", "2026-01-15"))) == set()


def test_narrative_checks() -> None:
    xhtml = 'xmlns="http://www.w3.org/1999/xhtml"'
    assert narrative_ok(f'<div {xhtml}><p>Visit on <b>Monday</b></p><a href="#x">x</a></div>')
    assert not narrative_ok(f'<div {xhtml}><script>alert(1)</script></div>')
    assert not narrative_ok(f'<div {xhtml}><p onclick="alert(1)">x</p></div>')
    assert not narrative_ok(f'<div {xhtml}><a href="javascript:alert(1)">x</a></div>')
    assert not narrative_ok('<div><p>no namespace</p></div>')
    assert not narrative_ok(f'<p {xhtml}>not a div</p>')
    assert not narrative_ok(f'<!DOCTYPE x [<!ENTITY a "b">]><div {xhtml}>&a;</div>')
    assert not narrative_ok("<div unclosed")
    assert narrative_has_content(f'<div {xhtml}><img src="#a"/></div>')
    assert not narrative_has_content(f'<div {xhtml}><p> </p></div>')


def test_discriminator_paths() -> None:
    assert parse_path("code.coding.code") == (("name", "code"), ("name", "coding"), ("name", "code"))
    assert parse_path("$this") == (("this", ""),)
    assert parse_path("extension('http://example.org/a.b').value") == (("ext", "http://example.org/a.b"), ("name", "value"))
    assert parse_path("subject.resolve().ofType(Patient)") == (("name", "subject"), ("resolve", ""), ("type", "Patient"))


@pytest.mark.parametrize("resource, rule, expression", [
    ({"resourceType": "QuestionnaireResponse", "status": "completed",
      "item": [{"linkId": "a", "answer": [{"valueBoolean": True}], "item": [{"linkId": "b"}]}]},
     "qrs-1", "QuestionnaireResponse.item[0]"),
    ({"resourceType": "Patient", "telecom": [{"value": "555-0100"}]}, "cpt-2", "Patient.telecom[0]"),
])
def test_native_invariants_fail_where_the_published_expression_fails(validator, resource, rule, expression):
    import fhirpathpy
    from fhirpathpy.models import models

    assert (("error", rule, expression)) in findings(validator.validate_base(resource))
    # the same verdict as fhirpathpy on the published expression
    key_expr = next(k for k in NATIVE if k[0] == rule)
    focus = resource["item"][0] if rule == "qrs-1" else resource["telecom"][0]
    assert fhirpathpy.evaluate(focus, key_expr[1], model=models["r4"]) == [False]
