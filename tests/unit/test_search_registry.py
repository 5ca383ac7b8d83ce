"""The generated R4 search-parameter registry (fhir_server/search/registry_r4.json)."""

from __future__ import annotations

import json

import pytest

from fhir_server.search import build_registry
from fhir_server.search.extract import plan_summary
from fhir_server.search.registry import (
    ARTEFACT,
    param_by_url,
    patient_compartment_params,
    resource_types,
    search_param,
    search_params,
    type_table,
)

SP = "http://hl7.org/fhir/SearchParameter/"


def test_artefact_says_it_is_generated_and_by_what():
    header = json.loads(ARTEFACT.read_text(encoding="utf-8"))["generatedBy"]
    assert "fhir_server.search.build_registry" in header and "do not edit" in header


def test_every_published_definition_is_kept():
    # search-parameters.json of R4 4.0.1 holds 1378 SearchParameters.
    assert param_by_url(SP + "Observation-code-value-quantity") is not None
    assert len(json.loads(ARTEFACT.read_text(encoding="utf-8"))["definitions"]) == 1378


def test_every_r4_resource_type_is_listed():
    types = resource_types()
    assert len(types) == 146
    assert {"Patient", "Observation", "Bundle", "Binary", "Parameters", "QuestionnaireResponse"} <= types
    assert "SubscriptionStatus" not in types  # R4B, added by the redistribution


def test_token_parameter_with_its_url_and_expression():
    code = search_param("Observation", "code")
    assert (code.type, code.url, code.expression) == ("token", SP + "clinical-code", "Observation.code")
    assert code.base == "Observation"


def test_multi_base_expression_is_restricted_to_the_type():
    assert search_param("Observation", "patient").expression == "Observation.subject.where(resolve() is Patient)"
    assert search_param("AllergyIntolerance", "patient").expression == "AllergyIntolerance.patient"
    assert search_param("Practitioner", "given").expression == "Practitioner.name.given"


def test_union_branches_of_one_type_are_all_kept():
    assert search_param("Observation", "value-string").expression == (
        "(Observation.value as string) | (Observation.value as CodeableConcept).text"
    )


def test_param_by_url_returns_the_published_definition_for_all_bases():
    patient = param_by_url(SP + "clinical-patient")
    assert patient.base.startswith("AllergyIntolerance|") and "Observation" in patient.base.split("|")
    assert "Encounter.subject.where(resolve() is Patient)" in patient.expression


def test_unknown_url_and_type_have_nothing():
    assert param_by_url(SP + "does-not-exist") is None
    assert search_params("NotAType") == {}
    assert search_param("Patient", "no-such-code") is None


@pytest.mark.parametrize("resource_type", ["Patient", "Observation", "Bundle", "Binary"])
def test_resource_level_parameters_apply_to_every_type(resource_type):
    params = search_params(resource_type)
    assert {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"} <= params.keys()
    assert params["_lastUpdated"].expression == f"{resource_type}.meta.lastUpdated"
    assert params["_id"].type == "token" and params["_profile"].type == "uri"


def test_text_search_exists_only_on_domain_resources_and_is_unsupported():
    assert "_text" not in search_params("Bundle")
    assert search_param("Patient", "_text").supported is False
    assert search_param("Patient", "_content").supported is False


def test_special_parameters_are_unsupported():
    near = search_param("Location", "near")
    assert near.type == "special" and near.supported is False


def test_reference_targets_are_narrowed_to_what_the_element_allows():
    # clinical-encounter lists Encounter and EpisodeOfCare; Procedure.encounter allows Encounter only.
    assert set(param_by_url(SP + "clinical-encounter").targets) >= {"Encounter", "EpisodeOfCare"}
    assert search_param("Procedure", "encounter").targets == ("Encounter",)
    assert search_param("Observation", "subject").targets == ("Device", "Group", "Location", "Patient")


def test_where_resolve_narrows_targets_to_the_type_named():
    assert search_param("Observation", "patient").targets == ("Patient",)


def test_composite_components_name_their_parameter_and_expression():
    composite = search_param("Observation", "code-value-quantity")
    assert composite.type == "composite" and composite.expression == "Observation"
    assert composite.components == (
        (SP + "clinical-code", "code"),
        (SP + "Observation-value-quantity", "value.as(Quantity)"),
    )
    assert [param_by_url(url).type for url, _ in composite.components] == ["token", "quantity"]


def test_component_focus_of_combo_parameters_includes_components():
    assert search_param("Observation", "combo-code-value-quantity").expression == "Observation | Observation.component"


def test_swapped_document_reference_relationship_components_are_repaired():
    relationship = search_param("DocumentReference", "relationship")
    assert relationship.components == (
        (SP + "DocumentReference-relatesto", "target"),
        (SP + "DocumentReference-relation", "code"),
    )


def test_date_parameters_list_their_comparators():
    assert search_param("Observation", "date").comparators == ("eq", "ne", "gt", "ge", "lt", "le", "sa", "eb", "ap")
    assert search_param("Observation", "code").comparators == ()


def test_xpath_usage_marks_phonetic_parameters():
    assert search_param("Patient", "phonetic").xpath_usage == "phonetic"
    assert search_param("Patient", "name").xpath_usage == "normal"


@pytest.mark.parametrize("resource_type,expected", [
    ("Observation", ("subject", "performer")),
    ("AllergyIntolerance", ("patient", "recorder", "asserter")),
    ("Encounter", ("patient",)),  # R4 4.0.1; the redistribution says "subject"
    ("Patient", ("{def}", "link")),
    ("Organization", ()),
    ("Task", ()),  # not in R4's patient compartment; the redistribution adds it
])
def test_patient_compartment_params(resource_type, expected):
    assert patient_compartment_params(resource_type) == expected


def test_patient_compartment_params_are_reference_parameters_of_the_type():
    for resource_type in resource_types():
        for code in patient_compartment_params(resource_type):
            if code != "{def}":
                assert search_param(resource_type, code).type == "reference", (resource_type, code)


def test_type_table_knows_choice_elements_and_their_types():
    value = type_table().element("Observation", "value")
    assert value.choice and value.types[:2] == ("Quantity", "CodeableConcept")


def test_type_table_records_single_system_required_bindings():
    assert type_table().element("Observation", "status").code_system == "http://hl7.org/fhir/observation-status"
    assert type_table().element("Attachment", "language").code_system is None  # preferred binding


def test_type_table_knows_specialisations():
    table = type_table()
    assert table.is_a("canonical", "uri") and table.is_a("Age", "Quantity") and table.is_a("code", "string")
    assert not table.is_a("uri", "canonical")


def test_every_supported_r4_expression_compiles():
    compiled = fallback = 0
    for resource_type in resource_types():
        summary = plan_summary(resource_type)
        compiled += len(summary.compiled)
        fallback += len(summary.fallback)
        assert summary.not_indexed == (), resource_type
    assert (compiled, fallback) == (2575, 0)


def test_split_union_respects_parentheses_and_literals():
    assert build_registry._split_union("(A.b as C) | A.d.where(x='1|2') | B.e") == [
        "(A.b as C)", "A.d.where(x='1|2')", "B.e",
    ]


def test_restrict_keeps_the_branches_of_one_base():
    expression = "AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | (CarePlan.x as y)"
    assert build_registry._restrict(expression, "CarePlan", ["AllergyIntolerance", "CarePlan"]) == (
        "CarePlan.subject.where(resolve() is Patient) | (CarePlan.x as y)"
    )


def test_restrict_rewrites_resource_roots_to_the_type():
    assert build_registry._restrict("Resource.meta.tag", "Patient", ["Resource"]) == "Patient.meta.tag"
