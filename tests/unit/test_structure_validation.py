"""Structural validation of FHIR R4 JSON (fhir_server.validation.structure).

Each test is one behaviour: what R4 json.html / the R4 definitions forbid is rejected with the
expected FHIRPath expression and OperationOutcome issue code, and valid R4 (Synthea samples,
copied into tests/fixtures/synthea) is accepted.
"""

from __future__ import annotations

import copy
import gzip
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fhir_server.validation.structure import Issue, StructureError, validate_resource
from fhir_server.validation.structure_table import TABLE_PATH, load_table
from fhir_server.validation.valueset_enumeration import NotEnumerable, ValueSetEnumerator

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "synthea"
SYNTHEA_FILES = sorted(FIXTURES.glob("*.json"))


def synthea(resource_type: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{resource_type}.json").read_text())


def issues_of(resource: object, expected_type: str | None = None) -> list[Issue]:
    try:
        validate_resource(resource, expected_type)
    except StructureError as exc:
        return exc.issues
    return []


def only_issue(resource: object, expected_type: str | None = None) -> Issue:
    issues = issues_of(resource, expected_type)
    assert len(issues) == 1, issues
    return issues[0]


def assert_rejected(resource: object, expression: str, code: str) -> Issue:
    issue = only_issue(resource)
    assert (issue.expression, issue.code, issue.severity) == (expression, code, "error"), issue
    return issue


QUANTITY_VALUE = "Observation.value.ofType(Quantity).value"


def observation(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}, **extra}


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **extra}


# -- valid R4 is accepted ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", SYNTHEA_FILES, ids=[p.stem for p in SYNTHEA_FILES])
def test_synthea_sample_is_valid(path: Path) -> None:
    resource = json.loads(path.read_text())
    validate_resource(resource, resource["resourceType"])


def test_fixtures_cover_the_synthea_resource_types() -> None:
    assert len(SYNTHEA_FILES) == 13


def test_transaction_bundle_of_synthea_resources_is_valid() -> None:
    entries = [
        {"fullUrl": f"urn:uuid:{json.loads(p.read_text())['id']}", "resource": json.loads(p.read_text()),
         "request": {"method": "POST", "url": p.stem}}
        for p in SYNTHEA_FILES
    ]
    validate_resource({"resourceType": "Bundle", "type": "transaction", "entry": entries}, "Bundle")


def test_primitive_given_only_as_extension_counts_as_present() -> None:
    resource = observation()
    del resource["status"]
    resource["_status"] = {"extension": [{"url": "http://example.org/why-missing", "valueCode": "unknown"}]}
    validate_resource(resource)


def test_repeating_primitive_with_aligned_extension_array_is_valid() -> None:
    ext = {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    validate_resource(patient(name=[{"given": ["Ann", None], "_given": [None, ext]}]))


def test_primitive_value_with_id_only_partner_is_valid() -> None:
    validate_resource(patient(birthDate="1970-03-30", _birthDate={"id": "314159"}))


def test_decimal_accepts_json_integer_float_and_decimal() -> None:
    for value in (70, 70.5, Decimal("70.50")):
        validate_resource(observation(valueQuantity={"value": value, "unit": "kg"}))


def test_recursive_content_reference_element_is_valid() -> None:
    questionnaire = {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "boolean"}]}],
    }
    validate_resource(questionnaire)


def test_code_bound_to_a_value_set_that_cannot_be_enumerated_is_not_checked() -> None:
    # Attachment.contentType: required binding to mime types (urn:ietf:bcp:13), external to the core
    validate_resource(patient(photo=[{"contentType": "image/x-anything", "url": "http://example.org/p.png"}]))


# -- the resource itself ------------------------------------------------------------------------------


def test_non_object_resource_is_rejected() -> None:
    assert_rejected([{"resourceType": "Patient"}], "Resource", "structure")


def test_missing_resource_type_is_rejected() -> None:
    assert_rejected({"id": "x"}, "resourceType", "required")


def test_non_string_resource_type_is_rejected() -> None:
    assert_rejected({"resourceType": ["Patient"]}, "resourceType", "structure")


def test_unknown_resource_type_is_rejected() -> None:
    assert_rejected({"resourceType": "Patientt"}, "resourceType", "structure")


def test_r4b_only_resource_type_is_not_supported() -> None:
    assert_rejected({"resourceType": "Citation", "status": "active"}, "resourceType", "not-supported")


def test_resource_type_must_match_expected_type() -> None:
    issue = only_issue(patient(), expected_type="Observation")
    assert (issue.expression, issue.code) == ("resourceType", "invalid")


def test_abstract_resource_type_is_rejected() -> None:
    assert_rejected({"resourceType": "DomainResource"}, "resourceType", "structure")


# -- unknown properties ---------------------------------------------------------------------------


def test_unknown_property_is_rejected() -> None:
    assert_rejected(patient(foo=1), "Patient.foo", "structure")


def test_unknown_nested_property_is_rejected() -> None:
    assert_rejected(patient(name=[{"family": "Doe", "surname": "Doe"}]), "Patient.name[0].surname", "structure")


def test_non_r4_meta_element_of_the_definitions_copy_is_rejected() -> None:
    assert_rejected(patient(meta={"project": "p1"}), "Patient.meta.project", "structure")


def test_unknown_choice_variant_is_rejected() -> None:
    assert_rejected(patient(deceasedString="yes"), "Patient.deceasedString", "structure")


def test_extension_partner_of_an_xml_attribute_is_rejected() -> None:
    # Element.id is an attribute in XML (a FHIRPath System.String): it has no `_id`
    resource = patient(name=[{"id": "n1", "_id": {"id": "x"}, "family": "Doe"}])
    assert_rejected(resource, "Patient.name[0]._id", "structure")


def test_resource_id_has_no_extension_partner() -> None:
    assert_rejected(patient(id="p1", _id={"extension": [{"url": "http://e.org", "valueString": "x"}]}), "Patient._id",
                    "structure")


def test_odd_unknown_property_name_is_not_echoed() -> None:
    issue = only_issue(patient(**{"John Smith 1970-01-01": 1}))
    assert "John" not in issue.expression
    assert issue.code == "structure"


# -- JSON kinds of primitives -------------------------------------------------------------------------


def test_string_for_boolean_is_rejected() -> None:
    assert_rejected(patient(active="true"), "Patient.active", "structure")


def test_number_for_boolean_is_rejected() -> None:
    assert_rejected(patient(active=1), "Patient.active", "structure")


def test_string_for_integer_is_rejected() -> None:
    assert_rejected(patient(multipleBirthInteger="2"), "Patient.multipleBirth.ofType(integer)", "structure")


def test_boolean_for_integer_is_rejected() -> None:
    assert_rejected(patient(multipleBirthInteger=True), "Patient.multipleBirth.ofType(integer)", "structure")


def test_float_for_integer_is_rejected() -> None:
    assert_rejected(patient(multipleBirthInteger=2.0), "Patient.multipleBirth.ofType(integer)", "structure")


def test_integer_above_32_bits_is_rejected() -> None:
    assert_rejected(patient(multipleBirthInteger=2**31), "Patient.multipleBirth.ofType(integer)", "value")


def test_zero_positive_int_is_rejected() -> None:
    immunization = json.loads((FIXTURES / "Immunization.json").read_text())
    immunization["protocolApplied"] = [{"doseNumberPositiveInt": 0}]
    assert_rejected(immunization, "Immunization.protocolApplied[0].doseNumber.ofType(positiveInt)", "value")


def test_negative_unsigned_int_is_rejected() -> None:
    assert_rejected(patient(photo=[{"size": -1}]), "Patient.photo[0].size", "value")


def test_string_for_decimal_is_rejected() -> None:
    assert_rejected(observation(valueQuantity={"value": "70.5"}), QUANTITY_VALUE, "structure")


def test_boolean_for_decimal_is_rejected() -> None:
    assert_rejected(observation(valueQuantity={"value": False}), QUANTITY_VALUE, "structure")


def test_non_finite_decimal_is_rejected() -> None:
    assert_rejected(observation(valueQuantity={"value": float("inf")}), QUANTITY_VALUE, "value")


def test_number_for_string_is_rejected() -> None:
    assert_rejected(patient(name=[{"family": 42}]), "Patient.name[0].family", "structure")


def test_number_for_date_is_rejected() -> None:
    assert_rejected(patient(birthDate=19700330), "Patient.birthDate", "structure")


# -- arrays, single values, null --------------------------------------------------------------------


def test_array_for_single_primitive_is_rejected() -> None:
    assert_rejected(patient(gender=["male"]), "Patient.gender", "structure")


def test_array_for_single_object_is_rejected() -> None:
    assert_rejected(patient(maritalStatus=[{"text": "married"}]), "Patient.maritalStatus", "structure")


def test_object_for_repeating_element_is_rejected() -> None:
    assert_rejected(patient(name={"family": "Doe"}), "Patient.name", "structure")


def test_single_value_for_repeating_primitive_is_rejected() -> None:
    assert_rejected(patient(name=[{"given": "Ann"}]), "Patient.name[0].given", "structure")


def test_null_property_is_rejected() -> None:
    assert_rejected(patient(gender=None), "Patient.gender", "structure")


def test_null_with_extension_partner_on_single_primitive_is_rejected() -> None:
    ext = {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    assert_rejected(patient(gender=None, _gender=ext), "Patient.gender", "structure")


def test_null_in_array_of_objects_is_rejected() -> None:
    assert_rejected(patient(name=[None]), "Patient.name[0]", "structure")


def test_null_in_primitive_array_without_extension_is_rejected() -> None:
    assert_rejected(patient(name=[{"given": ["Ann", None]}]), "Patient.name[0].given[1]", "structure")


def test_null_in_both_aligned_arrays_is_rejected() -> None:
    resource = patient(name=[{"given": ["Ann", None], "_given": [None, None]}])
    assert_rejected(resource, "Patient.name[0].given[1]", "structure")


def test_misaligned_extension_array_is_rejected() -> None:
    ext = {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    assert_rejected(patient(name=[{"given": ["Ann", "Bo"], "_given": [ext]}]), "Patient.name[0].given", "structure")


# -- empty content ----------------------------------------------------------------------------------


def test_empty_object_is_rejected() -> None:
    assert_rejected(patient(name=[{}]), "Patient.name[0]", "structure")


def test_empty_array_is_rejected() -> None:
    assert_rejected(patient(telecom=[]), "Patient.telecom", "structure")


def test_empty_string_is_rejected() -> None:
    assert_rejected(patient(name=[{"family": ""}]), "Patient.name[0].family", "value")


def test_whitespace_only_string_is_rejected() -> None:
    assert_rejected(patient(name=[{"family": " \t"}]), "Patient.name[0].family", "value")


def test_string_with_surrounding_whitespace_is_accepted() -> None:
    validate_resource(patient(name=[{"family": " Doe "}]))


def test_code_with_surrounding_whitespace_is_rejected() -> None:
    assert_rejected(patient(gender=" male"), "Patient.gender", "value")


def test_uri_with_whitespace_is_rejected() -> None:
    assert_rejected(patient(identifier=[{"system": "http://example.org/a b", "value": "1"}]),
                    "Patient.identifier[0].system", "value")


def test_element_with_only_an_id_is_rejected() -> None:
    assert_rejected(patient(identifier=[{"id": "i1"}]), "Patient.identifier[0]", "structure")


def test_empty_extension_partner_is_rejected() -> None:
    assert_rejected(patient(birthDate="1970-03-30", _birthDate={}), "Patient.birthDate", "structure")


def test_extension_partner_must_be_an_object() -> None:
    assert_rejected(patient(birthDate="1970-03-30", _birthDate="x"), "Patient.birthDate", "structure")


def test_value_less_primitive_needs_an_extension() -> None:
    assert_rejected(patient(_birthDate={"id": "b1"}), "Patient.birthDate", "structure")


def test_unknown_property_inside_extension_partner_is_rejected() -> None:
    assert_rejected(patient(birthDate="1970-03-30", _birthDate={"id": "b1", "value": "x"}), "Patient.birthDate.value",
                    "structure")


# -- lexical forms (R4 regexes) and the model pass ------------------------------------------------


def test_malformed_date_is_rejected() -> None:
    assert_rejected(patient(birthDate="1970-13-01"), "Patient.birthDate", "value")


def test_date_time_with_time_but_no_timezone_is_rejected() -> None:
    assert_rejected(patient(deceasedDateTime="2020-01-01T10:00:00"), "Patient.deceased.ofType(dateTime)", "value")


def test_id_longer_than_64_characters_is_rejected() -> None:
    assert_rejected(patient(id="a" * 65), "Patient.id", "value")


def test_calendar_invalid_date_is_rejected_by_the_model_pass() -> None:
    assert_rejected(patient(birthDate="2023-02-30"), "Patient.birthDate", "value")


def test_undecodable_base64_is_rejected_by_the_model_pass() -> None:
    assert_rejected(patient(photo=[{"contentType": "image/png", "data": "abc"}]), "Patient.photo[0].data", "value")


def test_model_pass_locates_errors_inside_contained_resources() -> None:
    resource = patient(contained=[{"resourceType": "Patient", "id": "p2", "birthDate": "2023-02-30"}])
    assert_rejected(resource, "Patient.contained[0].birthDate", "value")


# -- required bindings ------------------------------------------------------------------------------


def test_code_outside_required_value_set_is_rejected() -> None:
    issue = assert_rejected(patient(gender="xx"), "Patient.gender", "code-invalid")
    assert "http://hl7.org/fhir/ValueSet/administrative-gender" in issue.diagnostics


def test_resource_status_outside_required_value_set_is_rejected() -> None:
    assert_rejected(observation(status="done"), "Observation.status", "code-invalid")


def test_required_code_in_a_datatype_is_checked() -> None:
    assert_rejected(patient(name=[{"use": "nickname", "family": "Doe"}, {"use": "alias", "family": "D"}]),
                    "Patient.name[1].use", "code-invalid")


def test_code_from_a_nested_code_system_concept_is_accepted() -> None:
    # item-type: "boolean" sits under the abstract "question" concept
    item = {"linkId": "1", "type": "boolean"}
    validate_resource({"resourceType": "Questionnaire", "status": "draft", "item": [item]})


def test_abstract_code_is_rejected() -> None:
    questionnaire = {"resourceType": "Questionnaire", "status": "draft", "item": [{"linkId": "1", "type": "question"}]}
    assert_rejected(questionnaire, "Questionnaire.item[0].type", "code-invalid")


def test_codes_are_case_sensitive() -> None:
    assert_rejected(patient(gender="Male"), "Patient.gender", "code-invalid")


def test_coding_code_is_not_bound() -> None:
    validate_resource(patient(maritalStatus={"coding": [{"system": "http://example.org", "code": "anything"}]}))


# -- choice types -----------------------------------------------------------------------------------


def test_two_variants_of_a_choice_are_rejected() -> None:
    assert_rejected(patient(deceasedBoolean=True, deceasedDateTime="2020-01-01"), "Patient.deceased", "structure")


def test_variant_given_only_as_extension_counts_for_choice_exclusivity() -> None:
    ext = {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    assert_rejected(patient(deceasedBoolean=True, _deceasedDateTime=ext), "Patient.deceased", "structure")


# -- min cardinality ---------------------------------------------------------------------------------


def test_missing_required_element_is_rejected() -> None:
    assert_rejected({"resourceType": "Observation", "status": "final"}, "Observation.code", "required")


def test_missing_required_choice_element_is_rejected() -> None:
    request = synthea("MedicationRequest")
    del request["medicationCodeableConcept"]
    assert_rejected(request, "MedicationRequest.medication", "required")


def test_missing_required_element_in_backbone_is_rejected() -> None:
    assert_rejected(patient(link=[{"type": "seealso"}]), "Patient.link[0].other", "required")


def test_extension_without_url_is_rejected() -> None:
    assert_rejected(patient(extension=[{"valueString": "x"}]), "Patient.extension[0].url", "required")


def test_extension_partner_without_value_does_not_count_as_present() -> None:
    resource = observation()
    del resource["status"]
    resource["_status"] = {"id": "s1"}
    issues = issues_of(resource)
    assert {(i.expression, i.code) for i in issues} == {
        ("Observation.status", "structure"),
        ("Observation.status", "required"),
    }


# -- nested resources and recursion ----------------------------------------------------------------


def test_contained_resource_is_validated_by_its_own_type() -> None:
    assert_rejected(patient(contained=[observation(status="done")]), "Patient.contained[0].status", "code-invalid")


def test_contained_resource_needs_a_resource_type() -> None:
    assert_rejected(patient(contained=[{"id": "x"}]), "Patient.contained[0].resourceType", "required")


def test_bundle_entry_resource_is_validated_by_its_own_type() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": synthea("Patient")},
            {"resource": synthea("Encounter")},
            {"resource": observation(status="done")},
        ],
    }
    assert_rejected(bundle, "Bundle.entry[2].resource.status", "code-invalid")


def test_parameters_resource_is_validated_by_its_own_type() -> None:
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "p", "resource": patient(active="yes")}]}
    assert_rejected(parameters, "Parameters.parameter[0].resource.active", "structure")


def test_unknown_type_in_bundle_entry_is_rejected() -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Nope"}}]}
    assert_rejected(bundle, "Bundle.entry[0].resource.resourceType", "structure")


def test_recursive_content_reference_is_walked() -> None:
    questionnaire = {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "boolean", "colour": "red"}]}],
    }
    assert_rejected(questionnaire, "Questionnaire.item[0].item[0].colour", "structure")


def test_answer_items_of_a_questionnaire_response_are_walked() -> None:
    response = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "item": [{"linkId": "1", "answer": [{"valueBoolean": "true", "item": [{"linkId": "1.1"}]}]}],
    }
    assert_rejected(response, "QuestionnaireResponse.item[0].answer[0].value.ofType(boolean)", "structure")


def test_nested_extension_value_is_checked() -> None:
    ext = [{"url": "http://example.org/a", "extension": [{"url": "b", "valueInteger": "3"}]}]
    assert_rejected(patient(extension=ext), "Patient.extension[0].extension[0].value.ofType(integer)", "structure")


# -- reporting --------------------------------------------------------------------------------------


def test_all_issues_are_reported_at_once() -> None:
    resource = patient(active="true", gender="xx", name=[{}], telecom=[], foo=1)
    issues = issues_of(resource)
    assert {(i.expression, i.code) for i in issues} == {
        ("Patient.active", "structure"),
        ("Patient.gender", "code-invalid"),
        ("Patient.name[0]", "structure"),
        ("Patient.telecom", "structure"),
        ("Patient.foo", "structure"),
    }


def test_issues_from_many_levels_are_reported_together() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(gender="xx")},
            {"resource": observation(status="done", valueQuantity={"value": "1"})},
        ],
    }
    assert {i.expression for i in issues_of(bundle)} == {
        "Bundle.entry[0].resource.gender",
        "Bundle.entry[1].resource.status",
        "Bundle.entry[1].resource.value.ofType(Quantity).value",
    }


def test_diagnostics_never_echo_input_values() -> None:
    secret = "Zyxwv1970"
    resource = patient(
        active=secret,
        gender=secret,
        birthDate=secret,
        multipleBirthInteger=secret,
        name=[{"family": 7, "given": [secret, None]}],
        identifier=[{"system": f"http://x/{secret} y", "value": secret}],
        telecom=[{"system": secret, "value": secret}],
        extension=[{"url": secret, "valueDecimal": secret}],
    )
    issues = issues_of(resource)
    assert len(issues) >= 8
    for issue in issues:
        assert secret not in issue.diagnostics and secret not in issue.expression


def test_model_pass_diagnostics_do_not_echo_the_value() -> None:
    issue = only_issue(patient(birthDate="2023-02-30"))
    assert "2023" not in issue.diagnostics


def test_structure_error_carries_frozen_issues() -> None:
    with pytest.raises(StructureError) as raised:
        validate_resource(patient(active="true"))
    issue = raised.value.issues[0]
    assert isinstance(issue, Issue)
    with pytest.raises(AttributeError):
        issue.code = "other"  # type: ignore[misc]


def test_validation_does_not_modify_the_resource() -> None:
    resource = synthea("Patient")
    before = copy.deepcopy(resource)
    validate_resource(resource)
    assert resource == before


# -- the generated table -----------------------------------------------------------------------------


def test_table_is_marked_generated_and_small() -> None:
    assert TABLE_PATH.stat().st_size < 2_000_000
    with gzip.open(TABLE_PATH, "rb") as fh:
        raw = json.loads(fh.read())
    assert raw["generated"].startswith("GENERATED")
    assert raw["fhirVersion"] == "4.0.1"


def test_table_resolves_content_references_to_the_referenced_backbone() -> None:
    table = load_table()
    item = table.structures["Questionnaire.item"]
    assert item.props["item"].structure is item


def test_table_expands_choice_elements_per_type() -> None:
    props = load_table().structures["Observation"].props
    assert props["valueQuantity"].segment == "value.ofType(Quantity)"
    assert props["valueString"].extensible and not props["valueQuantity"].extensible


# -- value set enumeration used by the generator -------------------------------------------------------


CS = "http://example.org/cs"


def _value_set(name: str, include: list[dict], exclude: list[dict] | None = None) -> dict:
    compose: dict[str, Any] = {"include": include}
    if exclude:
        compose["exclude"] = exclude
    return {"resourceType": "ValueSet", "url": f"http://example.org/vs/{name}", "compose": compose}


def _terminology() -> ValueSetEnumerator:
    abstract = [{"code": "notSelectable", "valueBoolean": True}]
    code_system = {
        "resourceType": "CodeSystem",
        "url": CS,
        "content": "complete",
        "concept": [
            {
                "code": "group",
                "property": abstract,
                "concept": [{"code": "a", "concept": [{"code": "a1"}]}, {"code": "b"}],
            },
            {"code": "c"},
        ],
    }
    is_a = {"property": "concept", "op": "is-a", "value": "a"}
    value_sets = [
        _value_set("all", [{"system": CS}]),
        _value_set("is-a", [{"system": CS, "filter": [is_a]}]),
        _value_set(
            "listed",
            [{"system": "urn:ietf:bcp:13", "concept": [{"code": "text/plain"}, {"code": "text/html"}]}],
            [{"system": "urn:ietf:bcp:13", "concept": [{"code": "text/html"}]}],
        ),
        _value_set("external", [{"system": "urn:ietf:bcp:47"}]),
        _value_set(
            "nested",
            [{"valueSet": ["http://example.org/vs/all"]}],
            [{"system": CS, "concept": [{"code": "c"}]}],
        ),
    ]
    return ValueSetEnumerator([code_system, *value_sets])


def test_enumeration_includes_nested_concepts_but_not_abstract_ones() -> None:
    assert _terminology().enumerate("http://example.org/vs/all|1.0") == {"a", "a1", "b", "c"}


def test_enumeration_evaluates_is_a_filters_on_the_hierarchy() -> None:
    assert _terminology().enumerate("http://example.org/vs/is-a") == {"a", "a1"}


def test_enumeration_uses_explicit_concept_lists_even_for_external_systems() -> None:
    assert _terminology().enumerate("http://example.org/vs/listed") == {"text/plain"}


def test_enumeration_follows_included_value_sets_and_excludes() -> None:
    assert _terminology().enumerate("http://example.org/vs/nested") == {"a", "a1", "b"}


def test_value_set_over_an_external_system_is_not_enumerable() -> None:
    with pytest.raises(NotEnumerable):
        _terminology().enumerate("http://example.org/vs/external")
