"""Index extraction (fhir_server/search/extract.py): what each kind of value contributes to the index,
and the proof that the compiled expressions agree with fhirpathpy on every R4 search parameter."""

from __future__ import annotations

import copy
import json
import random
from decimal import Decimal
from functools import cache
from pathlib import Path

import pytest

from fhir_server.search import (
    DATE_MAX,
    DATE_MIN,
    CompositeEntry,
    DateEntry,
    NumberEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
    extract_index,
)
from fhir_server.search.fhirpath.compiler import compile_expression
from fhir_server.search.fhirpath.fallback import OPTIONS, compile_fallback, infer_fhir_type
from fhir_server.search.fhirpath.fixups import fix_r4_expression
from fhir_server.search.fhirpath.syntax import And, Member, OfType, Union, Unsupported, WhereEquals, WhereResolveIs, parse
from fhir_server.search.registry import resource_types, search_params, type_table
from fhir_server.search.values.dates import date_range
from fhir_server.search.values.text import normalize

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "search"
UTC_2020 = 1577836800000  # 2020-01-01T00:00:00Z in epoch milliseconds


@cache
def _synthea() -> tuple[dict, ...]:
    lines = (FIXTURES / "synthea-sample.ndjson").read_text(encoding="utf-8").splitlines()
    return tuple(json.loads(line) for line in lines)


@cache
def _observations() -> dict[str, dict]:
    return {o["id"]: o for o in json.loads((FIXTURES / "observations.json").read_text(encoding="utf-8"))}


def synthea(resource_type: str, index: int = 0) -> dict:
    return copy.deepcopy([r for r in _synthea() if r["resourceType"] == resource_type][index])


def observation(id_: str) -> dict:
    return copy.deepcopy(_observations()[id_])


def entries(resource: dict, param: str) -> list:
    return [e for e in extract_index(resource) if e.param == param]


# --- strings: R4 search.html#string ------------------------------------------------------------------

def test_string_is_lowercased_and_accent_stripped_with_the_original_kept_for_exact():
    patient = {"resourceType": "Patient", "name": [{"family": "Ågård-Müller"}]}
    assert entries(patient, "family") == [StringEntry("family", "agard-muller", "Ågård-Müller")]


def test_string_whitespace_is_collapsed():
    assert normalize("  Positive \t for\ninfluenza  ") == "positive for influenza"


def test_string_casefolds_beyond_ascii():
    assert normalize("STRASSE Straße") == "strasse strasse"


def test_human_name_indexes_each_part():
    patient = {"resourceType": "Patient", "name": [
        {"family": "Medhurst", "given": ["Sumiko", "Larue"], "prefix": ["Mrs."], "suffix": ["PhD"], "text": "Sumiko Medhurst"}]}
    assert [e.exact for e in entries(patient, "name")] == ["Medhurst", "Sumiko", "Larue", "Mrs.", "PhD", "Sumiko Medhurst"]


def test_address_indexes_each_part():
    patient = synthea("Patient")
    assert {e.normalized for e in entries(patient, "address")} == {"633 abernathy landing", "emporia", "ks", "66801", "us"}
    assert [e.normalized for e in entries(patient, "address-city")] == ["emporia"]


def test_value_string_takes_string_values_and_concept_text():
    assert entries(observation("note-1"), "value-string") == [
        StringEntry("value-string", "positive for influenza a", "Positive  for influenza A")]
    assert [e.exact for e in entries(observation("smoking-1"), "value-string")] == ["Ex-smoker"]


def test_primitive_padded_for_extensions_skips_the_null():
    patient = {"resourceType": "Patient", "name": [{"given": [None, "Larue"], "_given": [{"extension": []}, None]}]}
    assert [e.exact for e in entries(patient, "given")] == ["Larue"]


# --- tokens: R4 search.html#token ----------------------------------------------------------------------

def test_codeable_concept_gives_each_coding_with_display_as_text_and_its_text_alone():
    assert entries(observation("bp-1"), "code") == [
        TokenEntry("code", "http://loinc.org", "85354-9", "blood pressure panel with all children optional"),
        TokenEntry("code", None, None, "blood pressure"),
    ]


def test_coding_token():
    encounter = synthea("Encounter")
    assert entries(encounter, "class") == [TokenEntry("class", "http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB", None)]


def test_identifier_records_its_type_for_of_type():
    mrn = [e for e in entries(synthea("Patient"), "identifier") if e.type_code == "MR"]
    assert mrn == [TokenEntry("identifier", "http://hospital.smarthealthit.org", "129c6ac7-8d06-89de-ad63-0204a93e76c3",
                              "medical record number", "http://terminology.hl7.org/CodeSystem/v2-0203", "MR")]


def test_identifier_without_type_has_no_type_fields():
    first = entries(synthea("Patient"), "identifier")[0]
    assert (first.system, first.type_system, first.type_code, first.text) == (
        "https://github.com/synthetichealth/synthea", None, None, None)


def test_contact_point_is_matched_by_value_without_system():
    assert entries(synthea("Patient"), "telecom") == [TokenEntry("telecom", None, "555-810-7203", None)]


def test_phone_and_email_filter_on_contact_point_system():
    patient = {"resourceType": "Patient", "telecom": [{"system": "phone", "value": "555-1"}, {"system": "email", "value": "a@b.c"}]}
    assert [e.code for e in entries(patient, "phone")] == ["555-1"]
    assert [e.code for e in entries(patient, "email")] == ["a@b.c"]


def test_code_bound_to_one_code_system_gets_that_system():
    assert entries(synthea("Patient"), "gender") == [TokenEntry("gender", "http://hl7.org/fhir/administrative-gender", "female", None)]


def test_code_without_a_required_single_system_binding_has_no_system():
    document = {"resourceType": "DocumentReference", "content": [{"attachment": {"language": "en-US"}}]}
    assert entries(document, "language") == [TokenEntry("language", None, "en-US", None)]


def test_boolean_token():
    assert entries({"resourceType": "Patient", "active": False}, "active") == [TokenEntry("active", None, "false", None)]


@pytest.mark.parametrize("deceased,expected", [
    ({"deceasedDateTime": "1989-05-09T20:35:22-04:00"}, "true"),
    ({"deceasedBoolean": True}, "true"),
    ({"deceasedBoolean": False}, "false"),
    ({}, "false"),
])
def test_patient_deceased_is_the_published_predicate(deceased, expected):
    assert [e.code for e in entries({"resourceType": "Patient", **deceased}, "deceased")] == [expected]


def test_resource_id_is_a_token():
    assert entries(observation("bp-1"), "_id") == [TokenEntry("_id", None, "bp-1", None)]


def test_meta_tag_and_security_are_codings():
    patient = {"resourceType": "Patient", "meta": {"tag": [{"system": "http://x", "code": "t", "display": "Tag"}],
                                                  "security": [{"system": "http://y", "code": "R"}]}}
    assert entries(patient, "_tag") == [TokenEntry("_tag", "http://x", "t", "tag")]
    assert entries(patient, "_security") == [TokenEntry("_security", "http://y", "R", None)]


# --- references: R4 search.html#reference ----------------------------------------------------------------

def test_relative_reference():
    assert entries(observation("bp-1"), "encounter") == [
        ReferenceEntry("encounter", "Encounter", "00c7f717-4030-5582-2ed8-888ad2bc878e", None)]


def test_versioned_relative_reference_drops_the_version():
    resource = {"resourceType": "Observation", "subject": {"reference": "Patient/p1/_history/7"}}
    assert entries(resource, "subject") == [ReferenceEntry("subject", "Patient", "p1", None)]


def test_absolute_reference_keeps_url_and_fills_type_and_id():
    assert entries(observation("hba1c-1"), "subject") == [ReferenceEntry(
        "subject", "Patient", "129c6ac7-8d06-89de-ad63-0204a93e76c3",
        "http://example.org/fhir/Patient/129c6ac7-8d06-89de-ad63-0204a93e76c3")]


def test_absolute_reference_to_an_unknown_type_keeps_only_the_url():
    resource = {"resourceType": "Observation", "subject": {"reference": "http://example.org/things/42"}}
    assert entries(resource, "subject") == [ReferenceEntry("subject", None, None, "http://example.org/things/42")]


def test_urn_uuid_reference_keeps_only_the_url():
    assert entries(observation("note-1"), "has-member") == [
        ReferenceEntry("has-member", None, None, "urn:uuid:8e2e2a7f-7a3a-4bd0-93a0-2a9f1d3c4b5e")]


def test_contained_reference_is_not_indexed():
    assert entries(observation("note-1"), "subject") == []


def test_identifier_only_reference_is_not_indexed():
    assert entries(observation("note-1"), "based-on") == []


def test_conditional_reference_keeps_its_type_and_literal():
    participant = entries(synthea("Encounter"), "practitioner")
    assert participant == [ReferenceEntry("practitioner", "Practitioner", None,
                                          "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999974493")]


def test_where_resolve_is_patient_keeps_only_patient_references():
    smoking = observation("smoking-1")  # subject is a Group
    assert entries(smoking, "subject") == [ReferenceEntry("subject", "Group", "g1", None)]
    assert entries(smoking, "patient") == []
    assert [e.target_type for e in entries(observation("bp-1"), "patient")] == ["Patient"]


def test_reference_type_element_fills_the_type_of_an_untyped_url():
    resource = {"resourceType": "Observation", "subject": {"reference": "urn:uuid:1", "type": "Patient"}}
    assert entries(resource, "subject") == [ReferenceEntry("subject", "Patient", None, "urn:uuid:1")]


def test_canonical_reference_drops_its_version():
    response = {"resourceType": "QuestionnaireResponse", "questionnaire": "http://example.org/Questionnaire/intake|2.0"}
    assert entries(response, "questionnaire") == [
        ReferenceEntry("questionnaire", None, None, "http://example.org/Questionnaire/intake")]


def test_bundle_composition_references_the_first_entry_resource():
    bundle = {"resourceType": "Bundle", "type": "document",
              "entry": [{"resource": {"resourceType": "Composition", "id": "c1"}}, {"resource": {"resourceType": "Patient", "id": "p"}}]}
    assert entries(bundle, "composition") == [ReferenceEntry("composition", "Composition", "c1", None)]


# --- dates: R4 search.html#date -------------------------------------------------------------------------

@pytest.mark.parametrize("value,low,high", [
    ("2020", "2020-01-01T00:00:00.000", "2020-12-31T23:59:59.999"),
    ("2020-02", "2020-02-01T00:00:00.000", "2020-02-29T23:59:59.999"),
    ("2021-02", "2021-02-01T00:00:00.000", "2021-02-28T23:59:59.999"),
    ("2020-03-04", "2020-03-04T00:00:00.000", "2020-03-04T23:59:59.999"),
    ("2020-03-04T09:30:00Z", "2020-03-04T09:30:00.000", "2020-03-04T09:30:00.999"),
    ("2020-03-04T09:30:00.5Z", "2020-03-04T09:30:00.500", "2020-03-04T09:30:00.599"),
    ("2020-03-04T09:30:00.1234Z", "2020-03-04T09:30:00.123", "2020-03-04T09:30:00.123"),
    ("2020-03-04T09:30:00+01:00", "2020-03-04T08:30:00.000", "2020-03-04T08:30:00.999"),
    ("2020-03-04T23:30:00-05:00", "2020-03-05T04:30:00.000", "2020-03-05T04:30:00.999"),
    ("2020-03-04T09:30:00", "2020-03-04T09:30:00.000", "2020-03-04T09:30:00.999"),  # no zone: UTC
])
def test_date_covers_the_range_of_its_precision_in_utc(value, low, high):
    assert date_range(value) == (_ms(low), _ms(high))


def _ms(iso: str) -> int:
    from datetime import datetime, timezone

    return round(datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp() * 1000)


def test_dates_before_1970_are_negative():
    assert date_range("1927-05-21") == (-1344902400000, -1344816000001)


@pytest.mark.parametrize("value", ["2021-02-29", "2020-13", "2020-01-01T24:00:00Z", "20200101", "2020-01-01T10:00:00+15:00", "soon"])
def test_invalid_dates_are_not_indexed(value):
    assert date_range(value) is None


def test_birthdate_is_a_day():
    assert entries(synthea("Patient"), "birthdate") == [DateEntry("birthdate", -1344902400000, -1344816000001)]


def test_period_covers_start_to_end():
    encounter = {"resourceType": "Encounter", "period": {"start": "2020-01-01", "end": "2020-01-02T10:00:00Z"}}
    assert entries(encounter, "date") == [DateEntry("date", UTC_2020, _ms("2020-01-02T10:00:00.999"))]


def test_period_without_end_is_open_to_the_future():
    assert entries(observation("hba1c-1"), "date") == [DateEntry("date", _ms("2020-11-02T13:00:00.000"), DATE_MAX)]


def test_period_without_start_is_open_to_the_past():
    encounter = {"resourceType": "Encounter", "period": {"end": "2020"}}
    assert entries(encounter, "date") == [DateEntry("date", DATE_MIN, _ms("2020-12-31T23:59:59.999"))]


def test_timing_covers_its_events():
    assert entries(observation("note-1"), "date") == [DateEntry("date", _ms("2021-01-05T10:00:00.000"), _ms("2021-01-07T23:59:59.999"))]


def test_timing_includes_its_bounds_period():
    request = {"resourceType": "CarePlan", "activity": [{"detail": {"scheduledTiming": {
        "event": ["2021-05-01"], "repeat": {"boundsPeriod": {"start": "2021-01-01", "end": "2021-12-31"}}}}}]}
    assert entries(request, "activity-date") == [
        DateEntry("activity-date", _ms("2021-01-01T00:00:00.000"), _ms("2021-12-31T23:59:59.999"))]


def test_instant_last_updated_is_one_millisecond():
    assert entries(observation("bp-1"), "_lastUpdated") == [DateEntry("_lastUpdated", 1614846662120, 1614846662120)]


def test_procedure_performed_string_is_not_a_date():
    procedure = {"resourceType": "Procedure", "performedString": "last spring"}
    assert entries(procedure, "date") == []


# --- numbers and quantities: R4 search.html#number, #quantity ---------------------------------------------

def test_decimal_has_implied_precision():
    assessment = {"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.25}]}
    assert entries(assessment, "probability") == [NumberEntry("probability", 0.25, 0.245, 0.255)]


def test_decimal_parsed_as_decimal_keeps_written_precision():
    assessment = {"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": Decimal("100")}]}
    assert entries(assessment, "probability") == [NumberEntry("probability", 100.0, 99.5, 100.5)]


def test_integer_is_exact():
    sequence = {"resourceType": "MolecularSequence", "variant": [{"start": 100, "end": 101}]}
    assert entries(sequence, "variant-start") == [NumberEntry("variant-start", 100.0, 100.0, 100.0)]


def test_range_number_keeps_its_bounds():
    assessment = {"resourceType": "RiskAssessment", "prediction": [{"probabilityRange": {"low": {"value": 0.1}}}]}
    assert entries(assessment, "probability") == [NumberEntry("probability", None, 0.1, float("inf"))]


def test_quantity_has_unit_system_and_implied_precision():
    assert entries(observation("glucose-1"), "value-quantity") == [
        QuantityEntry("value-quantity", "http://unitsofmeasure.org", "mmol/L", "mmol/l", 5.4, 5.35, 5.45)]


def test_quantity_comparator_opens_the_range():
    assert entries(observation("hba1c-1"), "value-quantity") == [
        QuantityEntry("value-quantity", "http://unitsofmeasure.org", "%", "%", 4.0, float("-inf"), 4.0)]


def test_money_is_a_quantity_in_iso_4217():
    invoice = {"resourceType": "Invoice", "totalNet": {"value": 40, "currency": "EUR"}}
    assert entries(invoice, "totalnet") == [QuantityEntry("totalnet", "urn:iso:std:iso:4217", "EUR", None, 40.0, 39.5, 40.5)]


def test_age_and_range_onsets_are_quantities():
    age = {"resourceType": "Condition", "onsetAge": {"value": 30, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}}
    assert entries(age, "onset-age") == [QuantityEntry("onset-age", "http://unitsofmeasure.org", "a", "a", 30.0, 29.5, 30.5)]
    ranged = {"resourceType": "Condition", "onsetRange": {"low": {"value": 20, "code": "a"}, "high": {"value": 30, "code": "a"}}}
    assert entries(ranged, "onset-age") == [QuantityEntry("onset-age", None, "a", None, None, 20.0, 30.0)]


def test_sampled_data_is_not_a_quantity():
    resource = {"resourceType": "Observation", "valueSampledData": {"origin": {"value": 1}, "dimensions": 1, "data": "1 2"}}
    assert entries(resource, "value-quantity") == []


# --- uri: R4 search.html#uri ------------------------------------------------------------------------------

def test_uri_entry():
    value_set = {"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/vs"}
    assert entries(value_set, "url") == [UriEntry("url", "http://example.org/fhir/ValueSet/vs")]


def test_canonical_uri_drops_its_version():
    assert entries(observation("bp-1"), "_profile") == [UriEntry("_profile", "http://hl7.org/fhir/StructureDefinition/bp")]


# --- composites: R4 search.html#composite -------------------------------------------------------------

def test_code_value_quantity_pairs_each_coding_with_the_value():
    pairs = [(e.components[0].code, e.components[1].value) for e in entries(observation("weight-1"), "code-value-quantity")]
    assert pairs == [("29463-7", 72.5), ("27113001", 72.5)]


def test_component_code_value_quantity_keeps_each_component_apart():
    pairs = [(e.components[0].code, e.components[1].value) for e in entries(observation("bp-1"), "component-code-value-quantity")]
    assert pairs == [("8480-6", 120.0), ("8462-4", 80.0)]


def test_combo_composite_covers_the_observation_and_its_components():
    weight = [e.components[0].code for e in entries(observation("weight-1"), "combo-code-value-quantity")]
    bp = [e.components[0].code for e in entries(observation("bp-1"), "combo-code-value-quantity")]
    assert weight == ["29463-7", "27113001"] and bp == ["8480-6", "8462-4"]


def test_composite_components_carry_their_parameter_codes():
    entry = entries(observation("glucose-1"), "code-value-quantity")[0]
    assert isinstance(entry, CompositeEntry) and [c.param for c in entry.components] == ["code", "value-quantity"]


def test_composite_without_every_component_yields_nothing():
    assert entries(observation("bp-1"), "code-value-quantity") == []  # the panel itself has no value


def test_composite_skips_text_only_tokens():
    codes = [e.components[1].code for e in entries(observation("smoking-1"), "code-value-concept")]
    assert codes == ["8517006"]


def test_composite_reads_the_resource_through_percent_resource():
    sequence = {"resourceType": "MolecularSequence", "referenceSeq": {"chromosome": {"coding": [{"code": "1"}]}},
                "variant": [{"start": 10, "end": 20}]}
    [entry] = entries(sequence, "chromosome-variant-coordinate")
    assert [c.param for c in entry.components] == ["chromosome", "variant-start", "variant-end"]
    assert (entry.components[0].code, entry.components[1].value, entry.components[2].value) == ("1", 10.0, 20.0)


def test_document_relationship_pairs_target_with_relation_code():
    document = {"resourceType": "DocumentReference", "relatesTo": [{"code": "replaces", "target": {"reference": "DocumentReference/d0"}}]}
    [entry] = entries(document, "relationship")
    assert entry.components == (ReferenceEntry("relatesto", "DocumentReference", "d0", None),
                                TokenEntry("relation", "http://hl7.org/fhir/document-relationship-type", "replaces", None))


# --- extraction as a whole --------------------------------------------------------------------------------

def test_entries_are_deduplicated():
    patient = {"resourceType": "Patient", "name": [{"family": "Smith"}, {"family": "Smith"}]}
    assert entries(patient, "family") == [StringEntry("family", "smith", "Smith")]


def test_extraction_leaves_the_resource_unchanged():
    resource = observation("bp-1")
    before = copy.deepcopy(resource)
    extract_index(resource)
    assert resource == before


def test_unknown_resource_type_has_no_entries():
    assert extract_index({"resourceType": "NoSuchType", "id": "x"}) == []


def test_a_resource_needs_a_resource_type():
    with pytest.raises(ValueError):
        extract_index({"id": "x"})


def test_malformed_values_are_skipped_not_fatal():
    resource = {"resourceType": "Observation", "subject": "Patient/1", "code": ["x"], "status": 7,
                "valueQuantity": {"value": "5"}, "effectiveDateTime": "yesterday", "identifier": [None, {"use": "usual"}]}
    assert [e.param for e in extract_index(resource)] == []


def test_every_synthea_sample_resource_extracts():
    for resource in _synthea():
        found = extract_index(resource)
        assert any(e.param == "_id" for e in found), resource["resourceType"]


# --- the FHIRPath subset -------------------------------------------------------------------------------

@pytest.mark.parametrize("expression", ["Patient.name.exists().not()", "Observation.value.count()", "a + b", "%context.id",
                                        "Patient.name.where(use = 'official' and family.exists())"])
def test_expressions_outside_the_subset_are_unsupported(expression):
    with pytest.raises(Unsupported):
        parse(expression)


def test_indexing_a_union_is_unsupported():
    with pytest.raises(Unsupported):
        parse("(Observation.code | Observation.component.code)[0]")


@pytest.mark.parametrize("value,param_type,expected", [
    (True, "token", "boolean"), ("2020", "date", "dateTime"), ({"coding": []}, "token", "CodeableConcept"),
    ({"reference": "Patient/1"}, "reference", "Reference"), ({"value": 1, "code": "mg"}, "quantity", "Quantity"),
    ({"value": 1, "currency": "EUR"}, "quantity", "Money"), ({"start": "2020"}, "date", "Period"),
])
def test_fallback_values_are_typed_by_their_shape(value, param_type, expected):
    assert infer_fhir_type(value, param_type) == expected


def test_unsupported_expression_falls_back_to_fhirpathpy():
    evaluate = compile_fallback("Patient.name.given.count()")
    assert evaluate({"resourceType": "Patient", "name": [{"given": ["a", "b"]}]}) == [2]


def test_fixups_turn_as_into_of_type_and_system_types_into_fhir_types():
    assert fix_r4_expression("(Observation.component.value as Quantity) | value.as(DateTime)") == (
        "Observation.component.value.ofType(Quantity) | value.ofType(dateTime)")


def test_of_type_accepts_specialisations():
    [canonical] = compile_expression("(ConceptMap.source as uri)", "ConceptMap", "ConceptMap", type_table())[1:]
    assert canonical.fhir_type == "canonical"


# --- the compiled expressions agree with fhirpathpy ------------------------------------------------------
#
# For every R4 search parameter of every type (and every component of every composite), the
# compiled evaluator and fhirpathpy must return the same values on a corpus: the Synthea sample,
# the Observation fixtures, and synthetic instances built so that each expression, and each of its
# compiled branches, yields values (InstanceBuilder below). fhirpathpy runs with the same fixups
# and `resolve()` rule (fhirpath/fallback.py); it is the independent oracle.

_ITEMS = 3  # items per repeating element
_VARIANTS = 12  # > the largest choice (Observation.value[x], 11 types): each instance picks one type per choice
_REFERENCES = ("{t}/a{i}", "http://example.org/fhir/{t}/b{i}/_history/3", "{t}?identifier=x|{i}",
               "urn:uuid:0b3f2c1e-1111-4c4c-8a8a-00000000000{i}")


def _primitive(type_name: str, n: int) -> object:
    return {
        "boolean": (n // 2) % 2 == 1, "integer": 3 + n, "positiveInt": 4 + n, "unsignedInt": n, "decimal": 1.25 + n,
        "date": ("2020", "2020-02", "2020-02-29", "1969-12-31")[n % 4],
        "dateTime": ("2021-03-04T09:30:00+01:00", "2021", "2021-03-04", "2021-03-04T09:30:00.25Z")[n % 4],
        "instant": "2021-03-04T09:30:00.123Z", "time": "10:00:00", "code": f"code-{n}", "string": f"Zoë Ågård {n}",
        "markdown": f"Some *markdown* {n}", "id": f"id-{n}", "uri": f"http://example.org/uri/{n}",
        "url": f"http://example.org/url/{n}", "canonical": f"http://example.org/fhir/ValueSet/vs{n}|1.{n}",
        "oid": f"urn:oid:1.2.3.{n}", "uuid": f"urn:uuid:0b3f2c1e-1111-4c4c-8a8a-00000000000{n % 10}", "base64Binary": "AAAA",
    }.get(type_name)


def _complex(type_name: str, n: int) -> dict:
    ucum = "http://unitsofmeasure.org"
    values = {
        "Quantity": {"value": 5.5 + n, "unit": "mg", "system": ucum, "code": "mg"} | ({"comparator": "<"} if n % 3 == 1 else {}),
        "SimpleQuantity": {"value": 1 + n, "unit": "mL"}, "MoneyQuantity": {"value": 9 + n, "code": "USD"},
        "Age": {"value": 30 + n, "unit": "a", "system": ucum, "code": "a"}, "Duration": {"value": 2 + n, "system": ucum, "code": "h"},
        "Distance": {"value": 7 + n, "unit": "km"}, "Count": {"value": 2 + n}, "Money": {"value": 10.5 + n, "currency": "EUR"},
        "Range": ({"low": {"value": 1 + n, "unit": "mg"}, "high": {"value": 3 + n, "unit": "mg"}}, {"high": {"value": 4}})[n % 2],
        "Period": ({"start": "2020-01-01", "end": "2020-06-30T12:00:00Z"}, {"start": "2021-05"}, {"end": "2019"})[n % 3],
        "Timing": {"event": ["2020-01-01T08:00:00Z", f"2020-0{n % 9 + 1}-01"], "repeat": {"boundsPeriod": {"start": "2019-12-01"}}},
        "CodeableConcept": {"coding": [{"system": "http://loinc.org", "code": f"123-{n}", "display": "Café Test"},
                                       {"system": "http://snomed.info/sct", "code": f"9{n}"}], "text": f"Text {n}"},
        "Coding": {"system": "http://example.org/cs", "code": f"c{n}", "display": f"Display {n}"},
        "Identifier": {"system": "http://example.org/ids", "value": f"ID-{n}",
                       "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}], "text": "MRN"}},
        "ContactPoint": {"system": ("email", "phone", "fax")[n % 3], "value": f"contact-{n}@example.org"},
        "HumanName": {"family": f"Ågård{n}", "given": ["Zoë", f"G{n}"], "prefix": ["Dr."], "suffix": ["Jr"], "text": f"Zoë Ågård {n}"},
        "Address": {"line": ["1 Rue Été", "Apt 2"], "city": "Montréal", "state": "QC", "postalCode": "H2X", "country": "CA"},
        "Reference": {"reference": _REFERENCES[n % 4].format(t="Organization", i=n % 10), "display": "x"},
        "Attachment": {"url": f"http://example.org/a/{n}", "contentType": "text/plain", "language": "en"},
        "SampledData": {"origin": {"value": 1}, "dimensions": 1, "data": "1 2 3"},
        "Resource": {"resourceType": ("Composition", "MessageHeader", "Patient")[n % 3], "id": f"r{n}"},
    }
    return copy.deepcopy(values.get(type_name, {}))


class InstanceBuilder:
    """Builds one (deliberately over-full) instance of a type by walking the parsed search
    expressions through the type table: every element they name is populated, one choice type per
    instance (variant-dependent), and `where()` filters get items that pass and items that don't."""

    def __init__(self, resource_type: str, variant: int) -> None:
        self.table, self.resource_type, self.variant = type_table(), resource_type, variant
        self.resource: dict = {"resourceType": resource_type, "id": f"x{variant}"}
        self.claimed: set[int] = set()
        self.counter = variant

    def add(self, expression: str, nodes: list | None = None, type_name: str | None = None) -> list[tuple[dict, str]]:
        return self._tree(parse(fix_r4_expression(expression)), nodes or [self.resource], type_name or self.resource_type)

    def _sample(self, type_name: str) -> object:
        self.counter += 1
        value = _primitive(type_name, self.counter)
        return value if value is not None else _complex(type_name, self.counter)

    def _tree(self, tree, nodes, type_name):
        if isinstance(tree, Union):
            return [pair for chain in tree.chains for pair in self._chain(chain, nodes, type_name)]
        if isinstance(tree, And):
            return self._tree(tree.left, nodes, type_name) + self._tree(tree.right, nodes, type_name)
        return self._tree(tree.operand, nodes, type_name)

    def _chain(self, chain, nodes, type_name):
        steps = list(chain.steps)
        if chain.root == "%resource":
            nodes, type_name = [self.resource], self.resource_type
        elif chain.root in self.table.resource_types or chain.root in ("Resource", "DomainResource"):
            if chain.root not in (type_name, "Resource", "DomainResource"):
                return []
        elif chain.root is not None and chain.root != type_name:
            steps.insert(0, Member(chain.root))
        states = [(nodes, type_name)]
        for step in steps:
            states = [state for nodes, t in states for state in self._step(step, nodes, t)]
        return [(node, t) for nodes, t in states for node in nodes]

    def _step(self, step, nodes, type_name):
        if isinstance(step, Member):
            info = self.table.element(type_name, step.name)
            chosen = info.types[self.variant % len(info.types)] if info.choice else info.types[0]
            key = step.name + (chosen[0].upper() + chosen[1:] if info.choice else "")
            children = []
            for node in nodes:
                if isinstance(node, dict):
                    if key not in node:
                        node[key] = [self._sample(chosen) for _ in range(_ITEMS)] if info.repeats else self._sample(chosen)
                    children += node[key] if isinstance(node[key], list) else [node[key]]
            return [(children, chosen)]
        if isinstance(step, OfType):
            return [(nodes, type_name)] if self.table.is_a(type_name, step.type_name) else []
        if isinstance(step, WhereResolveIs):
            self._claim(nodes, "reference", lambda i: _REFERENCES[(self.variant + i) % 4].format(t=step.type_name, i=i),
                        lambda value: isinstance(value, str) and step.type_name in value)
        elif isinstance(step, WhereEquals):
            self._claim(nodes, step.field, lambda i: step.literal, lambda value: value == step.literal)
        return [(nodes, type_name)]

    def _claim(self, nodes, field, make, satisfied):
        """Make one unclaimed node pass the filter; the others keep sample values that fail it."""
        if any(id(n) in self.claimed and satisfied(n.get(field)) for n in nodes):
            return
        for i, node in enumerate(nodes):
            if id(node) not in self.claimed:
                node[field] = make(i)
                self.claimed.add(id(node))
                return


@cache
def _generated(resource_type: str) -> tuple[dict, ...]:
    params = [p for p in search_params(resource_type).values() if p.supported]
    instances = []
    for variant in range(_VARIANTS):
        builder = InstanceBuilder(resource_type, variant)
        order = list(params)
        random.Random(variant).shuffle(order)  # singletons filtered by several params: each gets its turn
        for param in order:
            focus = builder.add(param.expression)
            if param.type == "composite":
                for node, focus_type in focus:
                    for _, component in param.components:
                        builder.add(component, [node], focus_type)
        instances.append(builder.resource)
    return tuple(instances)


def _corpus(resource_type: str) -> list[dict]:
    found = [r for r in _synthea() if r["resourceType"] == resource_type]
    found += [o for o in _observations().values() if o["resourceType"] == resource_type]
    return found + list(_generated(resource_type))


def _canonical(values: list) -> list[str]:
    def plain(value):
        if isinstance(value, Decimal):  # fhirpathpy returns decimals, the JSON walker floats
            return float(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return [json.dumps(plain(v), sort_keys=True, default=str) for v in values]


def _same(expression: str, compiled: list, oracle: list) -> bool:
    # A FHIRPath union removes duplicates; plain navigation keeps them.
    if "|" in expression:
        return set(_canonical(compiled)) == set(_canonical(oracle))
    return sorted(_canonical(compiled)) == sorted(_canonical(oracle))


def _oracle_relative(node: dict, focus_type: str, expression: str, resource: dict) -> list:
    import fhirpathpy
    from fhirpathpy.models import models

    found = fhirpathpy.evaluate(node, {"base": focus_type, "expression": fix_r4_expression(expression)},
                                {"resource": resource}, models["r4"], OPTIONS)
    return [v for v in found if v is not None]


@pytest.mark.parametrize("resource_type", sorted(resource_types()))
def test_compiled_expressions_agree_with_fhirpathpy(resource_type):
    table, corpus, mismatches = type_table(), _corpus(resource_type), []
    for code, param in search_params(resource_type).items():
        if not param.supported:
            continue
        paths = compile_expression(param.expression, resource_type, resource_type, table)
        oracle = compile_fallback(param.expression)
        for resource in corpus:
            compiled = [v for path in paths for v in path.evaluate(resource, resource)]
            if not _same(param.expression, compiled, oracle(resource)):
                mismatches.append((code, resource.get("id")))
            if param.type != "composite":
                continue
            for focus in paths:
                for node in focus.evaluate(resource, resource):
                    for _, component in param.components:
                        component_paths = compile_expression(component, focus.fhir_type, resource_type, table)
                        compiled = [v for path in component_paths for v in path.evaluate(node, resource)]
                        if not _same(component, compiled, _oracle_relative(node, focus.fhir_type, component, resource)):
                            mismatches.append((code, component, resource.get("id")))
    assert mismatches == []


@pytest.mark.parametrize("resource_type", sorted(resource_types()))
def test_generated_instances_exercise_every_compiled_branch(resource_type):
    # Guards the test above: an expression branch that never yields a value proves nothing.
    table, instances, idle = type_table(), _generated(resource_type), []
    for code, param in search_params(resource_type).items():
        if not param.supported:
            continue
        for path in compile_expression(param.expression, resource_type, resource_type, table):
            if not any(path.evaluate(r, r) for r in instances):
                idle.append((code, path.fhir_type))
            if param.type == "composite":
                for _, component in param.components:
                    for component_path in compile_expression(component, path.fhir_type, resource_type, table):
                        if not any(component_path.evaluate(n, r) for r in instances for n in path.evaluate(r, r)):
                            idle.append((code, component, component_path.fhir_type))
    assert idle == []
