"""Search semantics (R4 search.html) against every storage backend: each parameter type,
modifier and prefix, chains, _has, includes, sorting, paging and totals."""

from __future__ import annotations

import pytest

from fhir_server.errors import InvalidRequest
from fhir_server.search.parse import compartment_filter, parse_search
from fhir_server.search.query import SearchQuery

from .search_fixtures import RESOURCES


@pytest.fixture
async def loaded(store):
    async with store.unit_of_work() as uow:
        for resource in RESOURCES:
            await uow.write(resource["resourceType"], resource["id"], resource, method="PUT")
    return store


async def ids(store, resource_type: str, query: str, **options) -> list[str]:
    q = parse_search([resource_type], _pairs(query), **options)
    page = await store.search(q)
    return [v.id for v in page.matches]


def _pairs(query: str) -> list[tuple[str, str]]:
    return [tuple(p.split("=", 1)) for p in query.split("&") if p]  # type: ignore[misc]


# -- string ----------------------------------------------------------------------------------


async def test_string_matches_prefix_ignoring_case_and_accents(loaded):
    assert await ids(loaded, "Patient", "family=MÜL") == ["p1"]
    assert sorted(await ids(loaded, "Patient", "family=mu")) == ["p1", "p2"]


async def test_string_exact_is_case_and_accent_sensitive(loaded):
    assert await ids(loaded, "Patient", "family:exact=Müller") == ["p1"]
    assert await ids(loaded, "Patient", "family:exact=müller") == []


async def test_string_contains(loaded):
    assert await ids(loaded, "Patient", "family:contains=ell") == ["p2"]


async def test_name_searches_every_part_of_human_name(loaded):
    assert await ids(loaded, "Patient", "name=maria") == ["p1"]
    assert await ids(loaded, "Patient", "address-city=zur") == ["p1"]


# -- token -----------------------------------------------------------------------------------


async def test_token_code_only_matches_any_system(loaded):
    assert sorted(await ids(loaded, "Patient", "gender=male")) == ["p2", "p3"]


async def test_token_system_and_code(loaded):
    assert await ids(loaded, "Patient", "identifier=urn:example:mrn|111") == ["p1"]
    assert await ids(loaded, "Patient", "identifier=urn:other|111") == []


async def test_token_empty_system_means_no_system(loaded):
    assert await ids(loaded, "Patient", "identifier=|333") == ["p3"]
    assert await ids(loaded, "Patient", "identifier=|111") == []


async def test_token_system_only(loaded):
    assert sorted(await ids(loaded, "Patient", "identifier=urn:example:mrn|")) == ["p1", "p2"]


async def test_token_not_includes_resources_without_the_value(loaded):
    assert await ids(loaded, "Patient", "gender:not=male") == ["p1"]
    assert sorted(await ids(loaded, "Observation", "status:not=final")) == ["o2"]


async def test_token_text_searches_display_and_text(loaded):
    assert sorted(await ids(loaded, "Observation", "code:text=systolic")) == ["o1", "o2"]


async def test_token_of_type_on_identifier(loaded):
    q = "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|111"
    assert await ids(loaded, "Patient", q) == ["p1"]


async def test_token_boolean(loaded):
    assert await ids(loaded, "Patient", "active=true") == ["p1"]


# -- reference -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["Patient/p1", "p1", "http://example.org/fhir/Patient/p1"])
async def test_reference_forms(loaded, value):
    assert sorted(await ids(loaded, "Observation", f"subject={value}")) == ["o1", "o4"]


async def test_reference_type_modifier(loaded):
    assert sorted(await ids(loaded, "Observation", "subject:Patient=p1")) == ["o1", "o4"]
    assert await ids(loaded, "Observation", "subject:Group=p1") == []


async def test_canonical_reference_ignores_version(loaded):
    assert await ids(loaded, "QuestionnaireResponse", "questionnaire=http://example.org/fhir/Questionnaire/intake") == ["qr1"]


# -- date ------------------------------------------------------------------------------------


@pytest.mark.parametrize("query,expected", [
    ("birthdate=1980", ["p1"]),
    ("birthdate=1980-05", ["p1"]),
    ("birthdate=1980-05-03", ["p1"]),
    ("birthdate=eq1990-06-01", []),  # 1990 is wider than that day: not contained
    ("birthdate=gt1990-06-01", ["p2", "p3"]),  # the year 1990 reaches past June
    ("birthdate=lt1990", ["p1"]),
    ("birthdate=ge1990", ["p2", "p3"]),
    ("birthdate=le1990", ["p1", "p2"]),
    ("birthdate=ne1990", ["p1", "p3"]),
    ("birthdate=sa1990", ["p3"]),
    ("birthdate=eb1990", ["p1"]),
])
async def test_date_prefixes(loaded, query, expected):
    assert sorted(await ids(loaded, "Patient", query)) == expected


async def test_period_with_open_end_matches_later_dates(loaded):
    assert sorted(await ids(loaded, "Encounter", "date=ge2024-03-01")) == ["e2"]


async def test_date_and_is_a_range(loaded):
    assert await ids(loaded, "Encounter", "date=ge2024-01-01&date=lt2024-01-02") == ["e1"]


async def test_datetime_with_offset(loaded):
    assert await ids(loaded, "Observation", "date=2024-01-01T11:30:00+01:00") == ["o1"]


# -- number and quantity -----------------------------------------------------------------------


async def test_number_uses_implied_precision_for_eq(loaded):
    assert await ids(loaded, "RiskAssessment", "probability=0.5") == ["r1"]
    assert await ids(loaded, "RiskAssessment", "probability=0.50") == []


async def test_number_prefixes(loaded):
    assert await ids(loaded, "RiskAssessment", "probability=gt0.4") == ["r1"]
    assert await ids(loaded, "RiskAssessment", "probability=lt0.4") == ["r2"]


async def test_quantity_value_system_and_code(loaded):
    assert await ids(loaded, "Observation", "value-quantity=120") == ["o1"]
    assert await ids(loaded, "Observation", "value-quantity=gt130|http://unitsofmeasure.org|mm[Hg]") == ["o2"]
    assert await ids(loaded, "Observation", "value-quantity=120||mmHg") == ["o1"]
    assert await ids(loaded, "Observation", "value-quantity=120|http://unitsofmeasure.org|kg") == []


# -- uri -------------------------------------------------------------------------------------


async def test_uri_exact_below_above(loaded):
    assert await ids(loaded, "ValueSet", "url=http://example.org/fhir/ValueSet/intake-reasons") == ["vs1"]
    assert await ids(loaded, "ValueSet", "url:below=http://example.org/fhir") == ["vs1"]
    assert await ids(loaded, "ValueSet", "url:above=http://example.org/fhir/ValueSet/intake-reasons/v2") == ["vs1"]


# -- composite, missing, OR / AND --------------------------------------------------------------


async def test_composite_pairs_values_of_the_same_component(loaded):
    assert await ids(loaded, "Observation", "component-code-value-quantity=http://loinc.org|8480-6$gt140") == ["o3"]
    # 95 belongs to the diastolic component, not the systolic one
    assert await ids(loaded, "Observation", "component-code-value-quantity=http://loinc.org|8480-6$lt100") == []


async def test_missing(loaded):
    assert sorted(await ids(loaded, "Observation", "value-quantity:missing=true")) == ["o3", "o4"]
    assert sorted(await ids(loaded, "Patient", "active:missing=false")) == ["p1", "p2"]


async def test_comma_is_or_and_repeat_is_and(loaded):
    assert sorted(await ids(loaded, "Encounter", "status=finished,cancelled")) == ["e1", "e3"]
    assert await ids(loaded, "Encounter", "status=finished,cancelled&class=AMB") == ["e3"]


async def test_id_and_last_updated(loaded):
    assert sorted(await ids(loaded, "Patient", "_id=p1,p3")) == ["p1", "p3"]
    assert len(await ids(loaded, "Patient", "_lastUpdated=gt2000-01-01")) == 3
    assert await ids(loaded, "Patient", "_lastUpdated=lt2000-01-01") == []


# -- chains and _has -------------------------------------------------------------------------


async def test_chain(loaded):
    assert await ids(loaded, "Encounter", "subject:Patient.family=smith") == ["e3"]
    assert await ids(loaded, "Encounter", "patient.gender=female") == ["e1"]


async def test_two_level_chain(loaded):
    assert await ids(loaded, "Observation", "encounter.subject:Patient.name=anna") == ["o1"]


async def test_reverse_chain(loaded):
    assert sorted(await ids(loaded, "Patient", "_has:Observation:patient:code=8480-6")) == ["p1", "p2"]


async def test_nested_reverse_chain(loaded):
    # patients with an encounter that a medication request was written in
    assert await ids(loaded, "Patient", "_has:Encounter:patient:_has:MedicationRequest:encounter:status=active") == ["p1"]


# -- includes ----------------------------------------------------------------------------------


async def test_include_and_revinclude(loaded):
    page = await loaded.search(parse_search(["Encounter"], _pairs("_id=e1&_include=Encounter:patient&_revinclude=Observation:encounter")))
    assert [v.id for v in page.matches] == ["e1"]
    assert sorted(f"{v.resource_type}/{v.id}" for v in page.included) == ["Observation/o1", "Patient/p1"]


async def test_include_iterate_follows_included_resources(loaded):
    page = await loaded.search(parse_search(
        ["MedicationRequest"], _pairs("_include=MedicationRequest:encounter&_include:iterate=Encounter:participant")))
    assert sorted(f"{v.resource_type}/{v.id}" for v in page.included) == ["Encounter/e1", "Practitioner/pr1"]


async def test_include_wildcard(loaded):
    page = await loaded.search(parse_search(["MedicationRequest"], _pairs("_include=*")))
    assert sorted(f"{v.resource_type}/{v.id}" for v in page.included) == ["Encounter/e1", "Patient/p1", "Practitioner/pr1"]


# -- sort, paging, totals ----------------------------------------------------------------------


async def test_sort_ascending_and_descending(loaded):
    assert await ids(loaded, "Patient", "_sort=birthdate") == ["p1", "p2", "p3"]
    assert await ids(loaded, "Patient", "_sort=-birthdate") == ["p3", "p2", "p1"]


async def test_sort_on_several_keys(loaded):
    assert await ids(loaded, "Patient", "_sort=gender,-birthdate") == ["p1", "p3", "p2"]


async def test_paging_walks_every_match_once_in_order(loaded):
    q = parse_search(["Observation"], _pairs("_sort=-date&_count=1"))
    seen = []
    while True:
        page = await loaded.search(q)
        seen += [v.id for v in page.matches]
        if page.next_cursor is None:
            break
        q = SearchQuery(**{**q.__dict__, "cursor": page.next_cursor})
    assert seen == ["o2", "o1", "o3", "o4"]


async def test_paging_is_stable_when_data_changes_between_pages(loaded):
    q = parse_search(["Patient"], _pairs("_sort=birthdate&_count=2"))
    first = await loaded.search(q)
    async with loaded.unit_of_work() as uow:  # a new patient that sorts first arrives
        await uow.write("Patient", "p0", {"resourceType": "Patient", "birthDate": "1900"}, method="PUT")
    second = await loaded.search(SearchQuery(**{**q.__dict__, "cursor": first.next_cursor}))
    assert [v.id for v in first.matches] == ["p1", "p2"]
    assert [v.id for v in second.matches] == ["p3"]


async def test_previous_cursor_returns_the_previous_page(loaded):
    q = parse_search(["Patient"], _pairs("_sort=birthdate&_count=1"))
    first = await loaded.search(q)
    second = await loaded.search(SearchQuery(**{**q.__dict__, "cursor": first.next_cursor}))
    back = await loaded.search(SearchQuery(**{**q.__dict__, "cursor": second.previous_cursor}))
    assert [v.id for v in back.matches] == [v.id for v in first.matches]


async def test_total_accurate_counts_all_pages(loaded):
    page = await loaded.search(parse_search(["Observation"], _pairs("_count=1&_total=accurate")))
    assert page.total == 4 and len(page.matches) == 1


async def test_deleted_resources_are_not_found(loaded):
    async with loaded.unit_of_work() as uow:
        await uow.delete("Patient", "p3")
    assert sorted(await ids(loaded, "Patient", "gender=male")) == ["p2"]


async def test_updated_resources_are_found_by_their_new_values_only(loaded):
    async with loaded.unit_of_work() as uow:
        await uow.write("Patient", "p3", {"resourceType": "Patient", "gender": "female"}, method="PUT")
    assert await ids(loaded, "Patient", "gender=male") == ["p2"]
    assert sorted(await ids(loaded, "Patient", "gender=female")) == ["p1", "p3"]


async def test_compartment_search(loaded):
    q = parse_search(["Observation"], [], extra_filters=[compartment_filter("Patient", "p1", "Observation")])
    assert sorted(v.id for v in (await loaded.search(q)).matches) == ["o1", "o4"]


async def test_system_search_with_several_types(loaded):
    q = parse_search(["Patient", "Practitioner"], _pairs("name=house"))
    assert [v.id for v in (await loaded.search(q)).matches] == ["pr1"]


# -- errors ----------------------------------------------------------------------------------


async def test_unknown_parameter_is_reported_or_refused(loaded):
    q = parse_search(["Patient"], _pairs("shoe-size=42"))
    assert q.unknown == ("shoe-size",)
    with pytest.raises(InvalidRequest):
        parse_search(["Patient"], _pairs("shoe-size=42"), strict=True)


@pytest.mark.parametrize("query", ["birthdate=yesterday", "birthdate=xx2020", "probability=gtabc",
                                   "gender:exact=male", "_count=-1", "_sort=shoe-size"])
def test_malformed_values_are_400_naming_the_parameter(query):
    resource_type = "RiskAssessment" if "probability" in query else "Patient"
    with pytest.raises(InvalidRequest) as err:
        parse_search([resource_type], _pairs(query))
    assert err.value.issues[0].expression


async def test_reindex_rebuilds_a_lost_index(loaded):
    from fhir_server.storage.sqlite.index_tables import TABLES

    def wipe():
        for table in TABLES:
            loaded._threads.writer.execute(f"DELETE FROM {table}")

    await loaded._threads.in_writer(wipe)
    assert await ids(loaded, "Patient", "gender=male") == []
    assert await loaded.reindex(batch_size=4) == len(RESOURCES)
    assert sorted(await ids(loaded, "Patient", "gender=male")) == ["p2", "p3"]


async def test_meta_parameters(store):
    meta = {"tag": [{"system": "urn:tags", "code": "async-visit"}], "security": [{"system": "urn:sec", "code": "R"}],
            "profile": ["http://example.org/fhir/StructureDefinition/intake"], "source": "urn:app:intake"}
    async with store.unit_of_work() as uow:
        await uow.write("Patient", "tagged", {"resourceType": "Patient", "meta": meta}, method="PUT")
        await uow.write("Patient", "plain", {"resourceType": "Patient"}, method="PUT")
    assert await ids(store, "Patient", "_tag=urn:tags|async-visit") == ["tagged"]
    assert await ids(store, "Patient", "_security=R") == ["tagged"]
    assert await ids(store, "Patient", "_profile=http://example.org/fhir/StructureDefinition/intake") == ["tagged"]
    assert await ids(store, "Patient", "_source=urn:app:intake") == ["tagged"]


async def test_total_of_one_filter_counts_live_current_versions_only(loaded):
    async with loaded.unit_of_work() as uow:
        await uow.delete("Observation", "o1")  # final, deleted
        await uow.write("Observation", "o3", {"resourceType": "Observation", "status": "amended",
                                              "code": {"text": "x"}}, method="PUT")  # final -> amended
        await uow.write("Observation", "o5", {"resourceType": "Observation", "status": "final",
                                              "code": {"text": "x"}}, method="PUT")
    page = await loaded.search(parse_search(["Observation"], _pairs("status=final&_count=1&_total=accurate")))
    assert page.total == 2  # o4 and o5
    page = await loaded.search(parse_search(["Observation"], _pairs("status=final,amended&_count=1&_total=accurate")))
    assert page.total == 3
