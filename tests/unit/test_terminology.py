"""Local terminology (fhir_server/validation/terminology): value set membership from the core,
v2, v3 and guide definitions, without a terminology server (research/validation.md §A3.5)."""

from __future__ import annotations

import pytest

from fhir_server.validation.terminology import LocalTerminology

GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
GENDER = "http://hl7.org/fhir/administrative-gender"
ENCOUNTER_STATUS_VS = "http://hl7.org/fhir/ValueSet/encounter-status"
ENCOUNTER_STATUS = "http://hl7.org/fhir/encounter-status"
ACT_ENCOUNTER_VS = "http://terminology.hl7.org/ValueSet/v3-ActEncounterCode"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SNOMED = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
UCUM = "http://unitsofmeasure.org"
MIME_VS = "http://hl7.org/fhir/ValueSet/mimetypes"
UCUM_VS = "http://hl7.org/fhir/ValueSet/ucum-units"

CS = "http://example.org/fhir/CodeSystem/shapes"
VS = "http://example.org/fhir/ValueSet/"

# a small hierarchical code system: shape > polygon > (triangle, square), shape > circle;
# "shape" is an abstract grouper
SHAPES = {
    "resourceType": "CodeSystem",
    "url": CS,
    "content": "complete",
    "property": [{"code": "notSelectable", "type": "boolean"}, {"code": "sides", "type": "integer"}],
    "concept": [
        {
            "code": "shape",
            "display": "Shape",
            "property": [{"code": "notSelectable", "valueBoolean": True}],
            "concept": [
                {
                    "code": "polygon",
                    "display": "Polygon",
                    "concept": [
                        {"code": "triangle", "display": "Triangle", "property": [{"code": "sides", "valueInteger": 3}]},
                        {"code": "square", "display": "Square", "property": [{"code": "sides", "valueInteger": 4}]},
                    ],
                },
                {"code": "circle", "display": "Circle", "designation": [{"value": "Round thing"}]},
            ],
        }
    ],
}


def _is_a(system: str, code: str) -> dict:
    return {"system": system, "filter": [{"property": "concept", "op": "is-a", "value": code}]}


def _value_set(name: str, include: list[dict], exclude: list[dict] | None = None) -> dict:
    compose: dict = {"include": include}
    if exclude:
        compose["exclude"] = exclude
    return {"resourceType": "ValueSet", "url": VS + name, "status": "active", "compose": compose}


# the guide ships one like it: telehealth E/M codes, listed over CPT and HCPCS
TELEHEALTH_VS = _value_set(
    "telehealth-visit-codes",
    [
        {"system": CPT, "concept": [{"code": "99421"}, {"code": "99422"}, {"code": "99423"}]},
        {"system": HCPCS, "concept": [{"code": "G2061"}, {"code": "G2062"}, {"code": "G2063"}]},
    ],
)


@pytest.fixture(scope="module")
def core() -> LocalTerminology:
    return LocalTerminology()


@pytest.fixture()
def guide() -> LocalTerminology:
    return LocalTerminology(
        extra=[
            SHAPES,
            TELEHEALTH_VS,
            _value_set("polygons", [_is_a(CS, "polygon")]),
            _value_set("all-shapes", [{"system": CS}]),
            _value_set("round-or-square", [{"system": CS}], [{"system": CS, "concept": [{"code": "triangle"}]}]),
            _value_set("polygons-listed", [{"valueSet": [VS + "polygons", VS + "round-or-square"]}]),
            _value_set("four-sided", [{"system": CS, "filter": [{"property": "sides", "op": "=", "value": "4"}]}]),
            _value_set("findings", [_is_a(SNOMED, "404684003")]),
            _value_set(
                "mi-or-findings",
                [
                    {"system": SNOMED, "concept": [{"code": "22298006"}]},
                    _is_a(SNOMED, "404684003"),
                ],
            ),
            _value_set("local-codes", [{"system": "http://example.org/fhir/CodeSystem/not-shipped"}]),
        ]
    )


# -- core value sets ------------------------------------------------------------------------------------


def test_required_core_value_set_accepts_its_code(core: LocalTerminology) -> None:
    assert core.check(GENDER_VS, GENDER, "female").status == "member"


def test_required_core_value_set_rejects_other_code(core: LocalTerminology) -> None:
    answer = core.check(GENDER_VS, GENDER, "femme")
    assert answer.status == "not-member"
    assert "femme" in answer.reason and GENDER_VS in answer.reason


def test_code_from_another_system_is_not_member(core: LocalTerminology) -> None:
    assert core.check(GENDER_VS, SNOMED, "female").status == "not-member"


def test_encounter_status_member_and_not_member(core: LocalTerminology) -> None:
    assert core.check(ENCOUNTER_STATUS_VS, ENCOUNTER_STATUS, "finished").status == "member"
    assert core.check(ENCOUNTER_STATUS_VS, ENCOUNTER_STATUS, "done").status == "not-member"


def test_version_suffix_4_0_1_resolves(core: LocalTerminology) -> None:
    assert core.check(GENDER_VS + "|4.0.1", GENDER, "male").status == "member"
    # v3 value sets carry their own version, but R4 binds them with |4.0.1 too
    assert core.check(ACT_ENCOUNTER_VS + "|4.0.1", ACT_CODE, "VR").status == "member"


def test_unheld_version_is_unknown(core: LocalTerminology) -> None:
    answer = core.check(GENDER_VS + "|9.9.9", GENDER, "male")
    assert answer.status == "unknown"
    assert "version 9.9.9" in answer.reason


def test_v3_code_in_act_encounter_code_value_set(core: LocalTerminology) -> None:
    assert core.check(ACT_ENCOUNTER_VS, ACT_CODE, "VR").status == "member"
    assert core.check(ACT_ENCOUNTER_VS, ACT_CODE, "AMB").status == "member"


def test_v3_abstract_parent_is_not_in_act_encounter_code(core: LocalTerminology) -> None:
    assert core.check(ACT_ENCOUNTER_VS, ACT_CODE, "_ActEncounterCode").status == "not-member"


def test_v3_code_outside_the_is_a_branch_is_not_member(core: LocalTerminology) -> None:
    # IMP (inpatient encounter) is an encounter code; CPINV (clinical product invoice) is an ActCode but not one
    assert core.check(ACT_ENCOUNTER_VS, ACT_CODE, "IMP").status == "member"
    assert core.check(ACT_ENCOUNTER_VS, ACT_CODE, "CPINV").status == "not-member"


def test_v2_table(core: LocalTerminology) -> None:
    vs, system = "http://terminology.hl7.org/ValueSet/v2-0203", "http://terminology.hl7.org/CodeSystem/v2-0203"
    assert core.check(vs, system, "MR").status == "member"
    assert core.check(vs, system, "NOPE").status == "not-member"


def test_core_is_not_a_filter(core: LocalTerminology) -> None:
    vs = "http://hl7.org/fhir/ValueSet/patient-contactrelationship"
    system = "http://terminology.hl7.org/CodeSystem/v2-0131"
    assert core.check(vs, system, "C").status == "member"
    assert core.check(vs, system, "O").status == "not-member"


def test_not_selectable_concept_is_not_a_valid_code(core: LocalTerminology) -> None:
    answer = core.check("http://hl7.org/fhir/ValueSet/item-type", "http://hl7.org/fhir/item-type", "question")
    assert answer.status == "not-member"
    assert "notSelectable" in answer.reason


# -- compose semantics on the guide's own resources ---------------------------------------------------------


def test_is_a_filter_includes_the_concept_and_its_descendants(guide: LocalTerminology) -> None:
    assert guide.expansion(VS + "polygons") == {(CS, "polygon"), (CS, "triangle"), (CS, "square")}


def test_whole_system_include_leaves_out_abstract_concepts(guide: LocalTerminology) -> None:
    assert (CS, "shape") not in guide.expansion(VS + "all-shapes")
    assert (CS, "circle") in guide.expansion(VS + "all-shapes")


def test_property_equals_filter(guide: LocalTerminology) -> None:
    assert guide.expansion(VS + "four-sided") == {(CS, "square")}


def test_exclude_removes_codes(guide: LocalTerminology) -> None:
    assert guide.check(VS + "round-or-square", CS, "triangle").status == "not-member"
    assert guide.check(VS + "round-or-square", CS, "circle").status == "member"


def test_value_set_includes_are_intersected(guide: LocalTerminology) -> None:
    assert guide.expansion(VS + "polygons-listed") == {(CS, "polygon"), (CS, "square")}


def test_extensional_value_set_over_cpt_and_hcpcs_is_checked_locally(guide: LocalTerminology) -> None:
    vs = VS + "telehealth-visit-codes"
    assert guide.check(vs, CPT, "99422").status == "member"
    assert guide.check(vs, HCPCS, "G2063").status == "member"
    assert guide.check(vs, CPT, "99213").status == "not-member"
    assert guide.check(vs, HCPCS, "99421").status == "not-member"


def test_intensional_value_set_over_snomed_is_unknown_with_reason(guide: LocalTerminology) -> None:
    answer = guide.check(VS + "findings", SNOMED, "22298006")
    assert answer.status == "unknown"
    assert "SNOMED CT" in answer.reason and VS + "findings" in answer.reason and "404684003" in answer.reason


def test_malformed_snomed_code_is_rejected_even_without_a_terminology_server(guide: LocalTerminology) -> None:
    # 22298007: the Verhoeff check digit is wrong, so this is no SCTID at all
    assert guide.check(VS + "findings", SNOMED, "22298007").status == "not-member"


def test_listed_code_is_member_even_beside_an_intensional_part(guide: LocalTerminology) -> None:
    assert guide.check(VS + "mi-or-findings", SNOMED, "22298006").status == "member"
    assert guide.check(VS + "mi-or-findings", SNOMED, "73211009").status == "unknown"
    assert guide.expansion(VS + "mi-or-findings") is None


def test_code_system_not_known_at_all_is_unknown(guide: LocalTerminology) -> None:
    answer = guide.check(VS + "local-codes", "http://example.org/fhir/CodeSystem/not-shipped", "x")
    assert answer.status == "unknown"
    assert "http://example.org/fhir/CodeSystem/not-shipped is not known" in answer.reason


def test_unknown_value_set_is_unknown(core: LocalTerminology) -> None:
    answer = core.check("http://example.org/fhir/ValueSet/nowhere", SNOMED, "22298006")
    assert answer.status == "unknown"
    assert answer.reason == "value set http://example.org/fhir/ValueSet/nowhere is not known to this server"


def test_fragment_code_system_listed_code_is_member_unlisted_unknown(core: LocalTerminology) -> None:
    # insurance-plan-type is published as a fragment in R4
    vs = "http://hl7.org/fhir/ValueSet/insuranceplan-type"
    system = "http://terminology.hl7.org/CodeSystem/insurance-plan-type"
    assert core.check(vs, system, "dental").status == "member"
    unlisted = core.check(vs, system, "veterinary")
    assert unlisted.status == "unknown"
    assert "fragment" in unlisted.reason
    assert core.code_in_system(system, "veterinary") is None


def test_bare_code_is_checked_by_code_alone(core: LocalTerminology) -> None:
    assert core.check(GENDER_VS, None, "other").status == "member"
    assert core.check(GENDER_VS, None, "x").status == "not-member"


def test_display_from_the_code_system(core: LocalTerminology, guide: LocalTerminology) -> None:
    assert core.display(ACT_CODE, "VR") == "virtual"
    assert core.display(GENDER, "unknown") == "Unknown"
    assert core.display(SNOMED, "22298006") is None
    assert guide.display(CS, "circle") == "Circle"


def test_displays_include_designations(guide: LocalTerminology) -> None:
    assert guide.displays(CS, "circle") == ("Circle", "Round thing")
    assert guide.displays(CS, "hexagon") == ()


def test_contained_value_set_is_checked_from_the_resource(core: LocalTerminology) -> None:
    contained = {
        "resourceType": "ValueSet",
        "id": "yes-no",
        "compose": {"include": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0136"}]},
    }
    assert core.check_resource(contained, "http://terminology.hl7.org/CodeSystem/v2-0136", "Y").status == "member"
    answer = core.check_resource(contained, "http://terminology.hl7.org/CodeSystem/v2-0136", "maybe")
    assert answer.status == "not-member"
    assert "#yes-no" in answer.reason


def test_code_in_system(core: LocalTerminology) -> None:
    assert core.code_in_system(GENDER, "male") is True
    assert core.code_in_system(GENDER, "m") is False
    assert core.code_in_system(SNOMED, "22298006") is None
    assert core.code_in_system(UCUM, "mg/dL") is True


def test_extra_resources_override_core_ones(core: LocalTerminology) -> None:
    narrowed = {
        "resourceType": "ValueSet",
        "url": GENDER_VS,
        "compose": {"include": [{"system": GENDER, "concept": [{"code": "female"}]}]},
    }
    guide = LocalTerminology(extra=[narrowed])
    assert guide.check(GENDER_VS, GENDER, "male").status == "not-member"
    assert guide.value_set(GENDER_VS) is narrowed
    assert core.check(GENDER_VS, GENDER, "male").status == "member"


# -- systems checked by syntax -----------------------------------------------------------------------------------


def test_mime_type_value_set_accepts_a_media_type(core: LocalTerminology) -> None:
    assert core.check(MIME_VS, "urn:ietf:bcp:13", "image/jpeg").status == "member"
    assert core.check(MIME_VS, None, "application/fhir+json; fhirVersion=4.0").status == "member"


def test_mime_type_value_set_rejects_garbage(core: LocalTerminology) -> None:
    assert core.check(MIME_VS, "urn:ietf:bcp:13", "jpeg picture").status == "not-member"
    assert core.check(MIME_VS, None, "nonsense/jpeg").status == "not-member"


@pytest.mark.parametrize("unit", ["mg", "mL", "d", "mm[Hg]", "kg/m2", "/min", "10*3/uL", "mL/min/{1.73_m2}", "[lb_av]"])
def test_ucum_value_set_accepts_valid_units(core: LocalTerminology, unit: str) -> None:
    assert core.check(UCUM_VS, UCUM, unit).status == "member"


@pytest.mark.parametrize("unit", ["banana", "mg/", "m g", "k[ft_i]", "(mg"])
def test_ucum_value_set_rejects_invalid_units(core: LocalTerminology, unit: str) -> None:
    answer = core.check(UCUM_VS, UCUM, unit)
    assert answer.status == "not-member"
    assert "UCUM" in answer.reason


def test_currency_value_set_uses_the_iso_4217_list(core: LocalTerminology) -> None:
    vs, system = "http://hl7.org/fhir/ValueSet/currencies", "urn:iso:std:iso:4217"
    assert core.check(vs, system, "USD").status == "member"
    assert core.check(vs, system, "usd").status == "not-member"
    assert core.check(vs, system, "QQQ").status == "unknown"


def test_language_tags_are_checked_for_well_formedness(core: LocalTerminology) -> None:
    vs, system = "http://hl7.org/fhir/ValueSet/all-languages", "urn:ietf:bcp:47"
    assert core.check(vs, system, "en-US").status == "member"
    assert core.check(vs, system, "en_US").status == "not-member"


# -- caching ---------------------------------------------------------------------------------------------------------


def test_expansion_is_computed_once_and_then_cached() -> None:
    terminology = LocalTerminology()
    terminology.check(ACT_ENCOUNTER_VS, ACT_CODE, "VR")
    computed = terminology.expansions_computed
    assert computed == 1
    terminology.check(ACT_ENCOUNTER_VS, ACT_CODE, "AMB")
    terminology.check(ACT_ENCOUNTER_VS + "|2014-03-26", ACT_CODE, "EMER")
    assert terminology.expansions_computed == computed


def test_nested_value_sets_are_cached_too(guide: LocalTerminology) -> None:
    guide.expansion(VS + "polygons-listed")  # expands polygons-listed, polygons, round-or-square
    before = guide.expansions_computed
    guide.check(VS + "polygons", CS, "square")
    assert guide.expansions_computed == before == 3
