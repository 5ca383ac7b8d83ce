"""Validation against constraint profiles (fhir_server.validation.profile, research/validation.md §A3).

Each case is one rule: the instance is validated against one profile and the errors and warnings
found — (severity, rule, expression) — must be exactly the expected ones. The core vital-signs
profiles (bodyweight, bp), US Core 5.0.1 and a few small profiles derived here for rules no
published profile exercises (tests/fixtures/validation) are the subjects.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhir_server.validation.definitions import DefinitionIndex
from fhir_server.validation.issues import Issue
from fhir_server.validation.profile import ProfileValidator
from fhir_server.validation.terminology import LocalTerminology
from tests.fixtures.validation import CORE, base_example, derive

EX = "http://example.org/fhir/StructureDefinition/"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"


# -- profiles derived for these tests -------------------------------------------------------------


def _system_slice(name: str, system: str, maximum: str = "1", minimum: int = 0) -> list[dict]:
    return [
        {"id": f"Patient.identifier:{name}", "sliceName": name, "min": minimum, "max": maximum},
        {
            "id": f"Patient.identifier:{name}.system",
            "min": 1,
            "max": "1",
            "base": {"path": "Identifier.system", "min": 0, "max": "1"},
            "type": [{"code": "uri"}],
            "fixedUri": system,
        },
    ]


def identifier_profile(name: str, rules: str, ordered: bool = False) -> dict:
    """Patient.identifier sliced by system: mrn (1..1) then ssn (0..1)."""
    return derive(
        "Patient",
        EX + f"patient-ids-{name}",
        changes={
            "Patient.identifier": {
                "slicing": {"discriminator": [{"type": "value", "path": "system"}], "rules": rules, "ordered": ordered}
            }
        },
        inserts={
            "Patient.identifier": _system_slice("mrn", "urn:example:mrn", minimum=1)
            + _system_slice("ssn", "urn:example:ssn")
        },
    )


CONTACT_EXISTS = derive(
    "Patient",
    EX + "patient-contact-exists",
    changes={
        "Patient.contact": {
            "slicing": {"discriminator": [{"type": "exists", "path": "organization"}], "rules": "closed"}
        }
    },
    inserts={
        "Patient.contact.period": [
            {"id": "Patient.contact:org", "sliceName": "org", "min": 0, "max": "1"},
            {"id": "Patient.contact:org.organization", "min": 1, "max": "1"},
            {"id": "Patient.contact:person", "sliceName": "person", "min": 0, "max": "*"},
            {"id": "Patient.contact:person.organization", "min": 0, "max": "0"},
        ]
    },
)

BIRTHPLACE_BY_PROFILE = derive(
    "Patient",
    EX + "patient-birthplace-by-profile",
    changes={
        "Patient.extension": {"slicing": {"discriminator": [{"type": "profile", "path": "$this"}], "rules": "open"}}
    },
    inserts={
        "Patient.extension": [
            {
                "id": "Patient.extension:birthPlace",
                "sliceName": "birthPlace",
                "min": 1,
                "max": "1",
                "type": [{"code": "Extension", "profile": [CORE + "patient-birthPlace"]}],
            }
        ]
    },
)

PROBLEM_CATEGORY = derive(
    "Condition",
    EX + "condition-problem",
    changes={
        "Condition.category": {"slicing": {"discriminator": [{"type": "pattern", "path": "$this"}], "rules": "open"}}
    },
    inserts={
        "Condition.category": [
            {
                "id": "Condition.category:problem",
                "sliceName": "problem",
                "min": 1,
                "max": "1",
                "patternCodeableConcept": {"coding": [{"system": CONDITION_CATEGORY, "code": "problem-list-item"}]},
            }
        ]
    },
)

KIND = "http://example.org/fhir/StructureDefinition/component-kind"
COMPONENT_KIND = derive(
    "Observation",
    EX + "component-kind",
    changes={
        "Observation.component": {
            "slicing": {"discriminator": [{"type": "value", "path": f"extension('{KIND}').value"}], "rules": "closed"}
        }
    },
    inserts={
        "Observation.component": [
            {"id": "Observation.component:a", "sliceName": "a", "min": 1, "max": "1"},
            {"id": "Observation.component:a.extension"},  # no slicing entry: extensions are sliced by url
            {"id": "Observation.component:a.extension:kind", "path": "Observation.component.extension", "sliceName": "kind",
             "min": 1, "max": "1"},
            {"id": "Observation.component:a.extension:kind.url", "path": "Observation.component.extension.url",
             "min": 1, "max": "1", "base": {"path": "Extension.url", "min": 1, "max": "1"}, "type": [{"code": "uri"}],
             "fixedUri": KIND},
            {"id": "Observation.component:a.extension:kind.value[x]", "path": "Observation.component.extension.value[x]",
             "min": 1, "max": "1", "base": {"path": "Extension.value[x]", "min": 0, "max": "1"}, "type": [{"code": "code"}],
             "fixedCode": "a"},
        ]
    },
)

WEIGHT_CODE = {"coding": [{"system": LOINC, "code": "29463-7"}]}
CODE_PATTERN = derive("Observation", EX + "weight-code-pattern", changes={"Observation.code": {"patternCodeableConcept": WEIGHT_CODE}})
CODE_FIXED = derive("Observation", EX + "weight-code-fixed", changes={"Observation.code": {"fixedCodeableConcept": WEIGHT_CODE}})
STATUS_FIXED = derive("Observation", EX + "status-fixed", changes={"Observation.status": {"fixedCode": "final"}})
CLASS_REQUIRED = derive(
    "Encounter",
    EX + "encounter-class-required",
    changes={
        "Encounter.class": {
            "binding": {"strength": "required", "valueSet": "http://terminology.hl7.org/ValueSet/v3-ActEncounterCode"}
        }
    },
)

EXTRA = [
    identifier_profile("closed", "closed"),
    identifier_profile("open", "open"),
    identifier_profile("at-end", "openAtEnd"),
    identifier_profile("ordered", "open", ordered=True),
    CONTACT_EXISTS,
    BIRTHPLACE_BY_PROFILE,
    COMPONENT_KIND,
    PROBLEM_CATEGORY,
    CODE_PATTERN,
    CODE_FIXED,
    STATUS_FIXED,
    CLASS_REQUIRED,
]


@pytest.fixture(scope="module")
def validator() -> ProfileValidator:
    return ProfileValidator(DefinitionIndex(extra=EXTRA), LocalTerminology(), best_practice="ignore")


def findings(issues: list[Issue], *, information: bool = False) -> set[tuple[str, str | None, str]]:
    return {(i.severity, i.rule, i.expression) for i in issues if information or i.severity != "information"}


# -- instances --------------------------------------------------------------------------------------


def body_weight(**changes: Any) -> dict:
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body Weight"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-11-24T10:00:00Z",
        "valueQuantity": {"value": 70.5, "unit": "kg", "system": UCUM, "code": "kg"},
    }
    resource.update(changes)
    return {k: v for k, v in resource.items() if v is not None}


def _bp_component(code: str, value: int) -> dict:
    return {
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "valueQuantity": {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
    }


def blood_pressure(systolic: str = "8480-6", diastolic: str = "8462-4", **changes: Any) -> dict:
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-11-24T10:00:00Z",
        "component": [_bp_component(systolic, 120), _bp_component(diastolic, 80)],
    }
    resource.update(changes)
    return resource


def patient_with_identifiers(*systems: str) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": s, "value": "1"} for s in systems]}


def condition(*categories: dict) -> dict:
    return {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p1"},
        "code": {"text": "urinary tract infection"},
        "category": list(categories),
    }


def us_core_patient(**changes: Any) -> dict:
    resource = base_example("Patient")
    resource.update(copy.deepcopy(changes))
    return {k: v for k, v in resource.items() if v is not None}


MRN, SSN, OTHER = "urn:example:mrn", "urn:example:ssn", "urn:example:other"
BIRTH_PLACE = CORE + "patient-birthPlace"
PROBLEM = {"coding": [{"system": CONDITION_CATEGORY, "code": "problem-list-item"}]}
DIAGNOSIS = {"coding": [{"system": CONDITION_CATEGORY, "code": "encounter-diagnosis"}]}
WEIGHT_WITH_MORE = {
    "coding": [
        {"system": LOINC, "code": "29463-7", "display": "Body weight"},
        {"system": "http://snomed.info/sct", "code": "27113001"},
    ],
    "text": "Weight",
}

CASES: list[tuple[str, dict, str, set]] = [
    # cardinality (VAL-10)
    ("min: vital signs need a category", body_weight(category=None), CORE + "bodyweight",
     {("error", "cardinality-min", "Observation.category")}),
    ("max: US Core allows one race extension", us_core_patient(extension=[base_example("Patient")["extension"][0]] * 2),
     US_CORE + "us-core-patient", {("error", "cardinality-max", "Patient.extension")}),
    ("max 0: bp has no top-level value", blood_pressure(valueQuantity={"value": 1, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}),
     CORE + "bp", {("error", "cardinality-max", "Observation.value.ofType(Quantity)")}),
    # types and choice types (VAL-12)
    ("type: bodyweight only allows valueQuantity", body_weight(valueQuantity=None, valueCodeableConcept={"text": "heavy"}),
     CORE + "bodyweight", {("error", "type", "Observation.value.ofType(CodeableConcept)")}),
    ("type slice: valueQuantity must carry a unit code", body_weight(valueQuantity={"value": 70.5, "unit": "kg", "system": UCUM}),
     CORE + "bodyweight", {("error", "cardinality-min", "Observation.value.ofType(Quantity).code")}),
    # fixed[x] / pattern[x] (VAL-15, VAL-16)
    ("fixed: the unit system is UCUM", body_weight(valueQuantity={"value": 70.5, "unit": "kg", "system": "urn:example:units", "code": "kg"}),
     CORE + "bodyweight", {("error", "fixed", "Observation.value.ofType(Quantity).system")}),
    ("pattern: a CodeableConcept with more codings and text matches", body_weight(code=WEIGHT_WITH_MORE),
     EX + "weight-code-pattern", set()),
    ("fixed: the same CodeableConcept fails as fixed", body_weight(code=WEIGHT_WITH_MORE),
     EX + "weight-code-fixed", {("error", "fixed", "Observation.code")}),
    ("fixed: exactly the fixed CodeableConcept passes", body_weight(code=copy.deepcopy(WEIGHT_CODE)),
     EX + "weight-code-fixed", set()),
    ("fixed: a fixed primitive may not carry extensions",
     body_weight(_status={"extension": [{"url": "http://example.org/ext", "valueString": "x"}]}),
     EX + "status-fixed", {("error", "fixed", "Observation.status")}),
    ("pattern: a different code fails the pattern", body_weight(code={"coding": [{"system": LOINC, "code": "8302-2"}]}),
     EX + "weight-code-pattern", {("error", "pattern", "Observation.code")}),
    # bindings in profiles (§A3.5)
    ("binding: required on a Quantity's code (ucum-bodyweight)",
     body_weight(valueQuantity={"value": 150, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}),
     CORE + "bodyweight", {("error", "binding-required", "Observation.value.ofType(Quantity).code")}),
    ("binding: required on a Coding", {"resourceType": "Encounter", "status": "finished",
                                        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "ZZZNOPE"}},
     EX + "encounter-class-required", {("error", "binding-required", "Encounter.class")}),
    ("binding: a Coding in the required value set passes", {"resourceType": "Encounter", "status": "finished",
                                                            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}},
     EX + "encounter-class-required", set()),
    # slicing: value discriminator (VSCat), pattern on a parent (bp components), closed / open / order
    ("value discriminator: vital signs need the vital-signs category",
     body_weight(category=[{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}]),
     CORE + "bodyweight", {("error", "cardinality-min", "Observation.category")}),
    ("bp: systolic and diastolic components match their slices", blood_pressure(), CORE + "bp", set()),
    ("bp: a missing diastolic slice (value discriminator on code.coding.code)", blood_pressure(diastolic="9999-9"), CORE + "bp",
     {("error", "cardinality-min", "Observation.component"),
      ("warning", "binding-extensible", "Observation.component[1].code")}),
    ("bp: components match US Core's pattern slices", blood_pressure(), US_CORE + "us-core-blood-pressure", set()),
    ("bp: US Core's diastolic pattern slice missing", blood_pressure(diastolic="9999-9"), US_CORE + "us-core-blood-pressure",
     {("error", "cardinality-min", "Observation.component")}),
    ("bp: a component's unit is fixed to mm[Hg]",
     blood_pressure(component=[_bp_component("8480-6", 120), {**_bp_component("8462-4", 80),
                                                             "valueQuantity": {"value": 80, "unit": "kPa", "system": UCUM, "code": "kPa"}}]),
     CORE + "bp", {("error", "fixed", "Observation.component[1].value.ofType(Quantity).code"),
                   ("error", "binding-required", "Observation.component[1].value.ofType(Quantity)")}),
    ("closed slicing: an identifier matching no slice", patient_with_identifiers(MRN, OTHER), EX + "patient-ids-closed",
     {("error", "slice-closed", "Patient.identifier[1]")}),
    ("open slicing: an identifier matching no slice is fine", patient_with_identifiers(MRN, OTHER), EX + "patient-ids-open", set()),
    ("openAtEnd: unmatched identifiers only after the slices", patient_with_identifiers(OTHER, MRN), EX + "patient-ids-at-end",
     {("error", "slice-order", "Patient.identifier[1]")}),
    ("openAtEnd: unmatched at the end is fine", patient_with_identifiers(MRN, OTHER), EX + "patient-ids-at-end", set()),
    ("ordered: slices in definition order", patient_with_identifiers(SSN, MRN), EX + "patient-ids-ordered",
     {("error", "slice-order", "Patient.identifier[1]")}),
    ("slice min: the mrn slice is required", patient_with_identifiers(SSN), EX + "patient-ids-open",
     {("error", "cardinality-min", "Patient.identifier")}),
    ("slice max: one mrn only", patient_with_identifiers(MRN, MRN), EX + "patient-ids-open",
     {("error", "cardinality-max", "Patient.identifier")}),
    ("exists discriminator: one contact with an organization at most",
     {"resourceType": "Patient", "contact": [{"organization": {"reference": "Organization/o1"}},
                                             {"organization": {"reference": "Organization/o2"}}]},
     EX + "patient-contact-exists", {("error", "cardinality-max", "Patient.contact")}),
    ("exists discriminator: one of each is fine",
     {"resourceType": "Patient", "contact": [{"organization": {"reference": "Organization/o1"}}, {"name": {"family": "Doe"}}]},
     EX + "patient-contact-exists", set()),
    ("pattern discriminator on $this: a problem-list category is required", condition(DIAGNOSIS), EX + "condition-problem",
     {("error", "cardinality-min", "Condition.category")}),
    ("pattern discriminator on $this: extra codings and text still match",
     condition(DIAGNOSIS, {**PROBLEM, "coding": PROBLEM["coding"] + [{"system": "http://snomed.info/sct", "code": "55607006"}],
                           "text": "Problem"}),
     EX + "condition-problem", set()),
    ("profile discriminator: a conforming birthPlace extension matches",
     {"resourceType": "Patient", "extension": [{"url": BIRTH_PLACE, "valueAddress": {"city": "Springfield"}}]},
     EX + "patient-birthplace-by-profile", set()),
    ("profile discriminator: a non-conforming one does not",
     {"resourceType": "Patient", "extension": [{"url": BIRTH_PLACE, "valueString": "Springfield"}]},
     EX + "patient-birthplace-by-profile", {("error", "cardinality-min", "Patient.extension")}),
    ("extension('url') discriminator: a component of kind a matches its slice",
     body_weight(component=[{"code": {"text": "x"}, "valueString": "y", "extension": [{"url": KIND, "valueCode": "a"}]}]),
     EX + "component-kind", set()),
    ("extension('url') discriminator: kind b matches no slice of a closed slicing",
     body_weight(component=[{"code": {"text": "x"}, "valueString": "y", "extension": [{"url": KIND, "valueCode": "a"}]},
                            {"code": {"text": "x"}, "valueString": "z", "extension": [{"url": KIND, "valueCode": "b"}]}]),
     EX + "component-kind", {("error", "slice-closed", "Observation.component[1]")}),
    # references (VAL-30)
    ("reference: the profile narrows the subject to Patient", body_weight(subject={"reference": "Group/g1"}), CORE + "bodyweight",
     {("error", "reference-type", "Observation.subject")}),
    # invariants added by a profile (VAL-60)
    ("profile invariant vs-2: a value or a data-absent reason", body_weight(valueQuantity=None), CORE + "bodyweight",
     {("error", "vs-2", "Observation")}),
    ("profile invariant us-core-6: a name or a data-absent reason", us_core_patient(name=None), US_CORE + "us-core-patient",
     {("error", "us-core-6", "Patient"), ("error", "cardinality-min", "Patient.name")}),
    # the valid instances
    ("valid body weight", body_weight(), CORE + "bodyweight", set()),
    ("valid vital signs", body_weight(), CORE + "vitalsigns", set()),
    ("valid US Core patient (Synthea)", us_core_patient(), US_CORE + "us-core-patient", set()),
]


@pytest.mark.parametrize(("resource", "profile", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_profile_rule(validator: ProfileValidator, resource: dict, profile: str, expected: set) -> None:
    issues = validator.validate(resource, profile)
    assert findings(issues) == expected, issues
    for issue in issues:
        assert issue.rule and issue.diagnostics and issue.code, issue


def test_issues_name_the_profile_and_element(validator: ProfileValidator) -> None:
    (issue,) = validator.validate(body_weight(category=None), CORE + "bodyweight")
    assert CORE + "bodyweight" in issue.diagnostics
    assert "Observation.category" in issue.diagnostics
    assert issue.code == "required"


def test_diagnostics_never_echo_the_offending_value(validator: ProfileValidator) -> None:
    secret = "SECRET-VALUE-42"
    cases = [
        (body_weight(valueQuantity={"value": 1, "unit": secret, "system": secret, "code": secret}), CORE + "bodyweight"),
        ({"resourceType": "Encounter", "status": "finished", "class": {"system": secret, "code": secret}},
         EX + "encounter-class-required"),
        (body_weight(code={"coding": [{"system": secret, "code": secret}], "text": secret}), EX + "weight-code-fixed"),
        (patient_with_identifiers(MRN, secret), EX + "patient-ids-closed"),
        (body_weight(subject={"reference": f"Group/{secret}"}), CORE + "bodyweight"),
    ]
    for resource, profile in cases:
        issues = validator.validate(resource, profile)
        assert issues, profile
        assert all(secret not in issue.diagnostics for issue in issues), issues


def test_extension_slices_are_matched_by_url(validator: ProfileValidator) -> None:
    issues = validator.validate(us_core_patient(), US_CORE + "us-core-patient")
    assert findings(issues) == set()
    structure = validator.registry.structure(US_CORE + "us-core-patient")
    slicing = structure.by_id["Patient.extension"].slicing
    assert slicing.by_url is not None and US_CORE + "us-core-race" in slicing.by_url


# -- target profiles with a resolver (VAL-30) ----------------------------------------------------


def test_target_profile_is_checked_when_the_reference_resolves(validator: ProfileValidator) -> None:
    nameless = {"resourceType": "Patient", "id": "p1", "gender": "female"}
    issues = validator.validate(blood_pressure(), US_CORE + "us-core-blood-pressure", resolve={"Patient/p1": nameless}.get)
    assert findings(issues) == {("error", "reference-profile", "Observation.subject")}
    assert US_CORE + "us-core-patient" in next(i.diagnostics for i in issues if i.rule == "reference-profile")


def test_conforming_target_passes(validator: ProfileValidator) -> None:
    issues = validator.validate(blood_pressure(), US_CORE + "us-core-blood-pressure", resolve={"Patient/p1": us_core_patient()}.get)
    assert findings(issues) == set()


def test_unresolvable_target_is_reported_as_information(validator: ProfileValidator) -> None:
    issues = validator.validate(blood_pressure(), US_CORE + "us-core-blood-pressure", resolve=lambda reference: None)
    assert ("information", "reference-profile", "Observation.subject") in findings(issues, information=True)
    assert not [i for i in issues if i.severity == "error"]


def test_target_type_outside_the_profile_is_an_error(validator: ProfileValidator) -> None:
    issues = validator.validate(blood_pressure(subject={"reference": "Group/g1"}), US_CORE + "us-core-blood-pressure")
    assert ("error", "reference-type", "Observation.subject") in findings(issues)


# -- which profile, and claims (VAL-70..72) --------------------------------------------------------


def test_unknown_profile_is_a_warning(validator: ProfileValidator) -> None:
    (issue,) = validator.validate(us_core_patient(), EX + "nowhere")
    assert (issue.severity, issue.rule, issue.expression) == ("warning", "profile-unknown", "Patient.meta.profile")
    assert EX + "nowhere" in issue.diagnostics


def test_profile_for_another_type_is_an_error(validator: ProfileValidator) -> None:
    (issue,) = validator.validate(us_core_patient(), CORE + "bodyweight")
    assert (issue.severity, issue.rule, issue.code) == ("error", "profile-type", "invalid")


def test_base_definition_url_validates_like_validate_base(validator: ProfileValidator) -> None:
    resource = {"resourceType": "Patient", "contact": [{"gender": "male"}]}
    assert validator.validate(resource, CORE + "Patient") == validator.validate_base(resource)


def test_claimed_profiles_are_all_checked(validator: ProfileValidator) -> None:
    resource = body_weight(meta={"profile": [CORE + "bodyweight", EX + "nowhere", CORE + "Observation"]}, category=None)
    found = findings(validator.validate_claimed(resource))
    assert found == {
        ("error", "cardinality-min", "Observation.category"),
        ("warning", "profile-unknown", "Observation.meta.profile[1]"),
    }


def test_claiming_a_profile_of_another_type_is_an_error(validator: ProfileValidator) -> None:
    resource = us_core_patient(meta={"profile": [CORE + "bodyweight"]})
    assert ("error", "profile-type", "Patient.meta.profile[0]") in findings(validator.validate_claimed(resource))


def test_claimed_profile_adds_its_findings_to_the_base_pass(validator: ProfileValidator) -> None:
    resource = us_core_patient(name=None, meta={"profile": [US_CORE + "us-core-patient"]})
    rules = {i.rule for i in validator.validate_claimed(resource) if i.severity == "error"}
    assert rules == {"us-core-6", "cardinality-min"}


# -- definitions -----------------------------------------------------------------------------------


def test_definition_index_accepts_url_and_version() -> None:
    index = DefinitionIndex(extra=[CODE_PATTERN])
    assert index.structure_definition(CORE + "Patient|4.0.1")["type"] == "Patient"
    assert index.structure_definition(CORE + "Patient|3.0.2") is None
    assert index.structure_definition(EX + "weight-code-pattern|1.0.0") is CODE_PATTERN
    assert index.structure_definition(EX + "weight-code-pattern") is CODE_PATTERN
    assert index.structure_definition(EX + "nowhere") is None


def test_extra_definitions_take_precedence_over_core_ones() -> None:
    replacement = dict(derive("Patient", CORE + "bodyweight"), type="Patient")
    assert DefinitionIndex(extra=[replacement]).structure_definition(CORE + "bodyweight") is replacement


def test_profile_without_snapshot_is_reported_not_used() -> None:
    no_snapshot = dict(CODE_PATTERN, url=EX + "no-snapshot", snapshot=None)
    validator = ProfileValidator(DefinitionIndex(extra=[no_snapshot]), LocalTerminology())
    (issue,) = validator.validate(body_weight(), EX + "no-snapshot")
    assert issue.rule == "profile-unknown" and "snapshot" in issue.diagnostics


def test_profiles_are_compiled_once(validator: ProfileValidator) -> None:
    first = validator.registry.structure(CORE + "bodyweight")
    validator.validate(body_weight(), CORE + "bodyweight")
    assert validator.registry.structure(CORE + "bodyweight") is first


def test_an_invariant_inherited_through_two_claimed_profiles_is_reported_once(validator: ProfileValidator) -> None:
    resource = body_weight(valueQuantity=None, meta={"profile": [CORE + "vitalsigns", CORE + "bodyweight"]})
    assert [i.rule for i in validator.validate_claimed(resource)] == ["vs-2"]
