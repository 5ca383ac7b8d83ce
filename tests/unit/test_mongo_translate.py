"""The MongoDB filter the backend builds for each search parameter type, modifier and prefix
(fhir_server/storage/mongo/translate.py). Pure translation: no server, no fake."""

from __future__ import annotations

import pytest

from fhir_server.search.parse import compartment_filter, parse_search
from fhir_server.search.query import RangeValue, SortKey
from fhir_server.storage.mongo import translate
from fhir_server.storage.mongo.translate import (
    MISSING_NUMBER,
    TOP,
    keyset_condition,
    match_filter,
    merge,
    page_pipeline,
    range_condition,
    sort_stages,
)

D_1990 = (631152000000, 662687999999)  # 1990-01-01T00:00:00.000Z .. 1990-12-31T23:59:59.999Z


class RecordingResolver:
    """Answers chain / _has sub-queries with fixed ids and records what was asked."""

    def __init__(self, ids=("t1", "t2"), referenced=("p1",)):
        self.asked: list[tuple] = []
        self._ids, self._referenced = list(ids), list(referenced)

    async def ids(self, match):
        self.asked.append(("ids", match))
        return self._ids

    async def referenced_ids(self, match, code, target_type):
        self.asked.append(("referenced", match, code, target_type))
        return self._referenced


async def where(resource_type: str, query: str, resolver=None) -> dict:
    """The filter part of the $match for `query` (without the type / deleted base)."""
    pairs = [tuple(p.split("=", 1)) for p in query.split("&") if p]
    q = parse_search([resource_type], pairs)
    match = await match_filter(q.resource_types, q.filters, resolver or RecordingResolver())
    base = {"type": resource_type, "deleted": False}
    if "$and" in match:
        first, *rest = match["$and"]
        return {"$and": [{k: v for k, v in first.items() if base.get(k) != v}, *rest]}
    return {k: v for k, v in match.items() if base.get(k) != v}


def elem(array: str, **cond) -> dict:
    return {array: {"$elemMatch": cond}}


# -- string ----------------------------------------------------------------------------------


async def test_string_default_is_a_prefix_range_on_the_normalised_value():
    assert await where("Patient", "family=MÜL") == elem("i_str", p="family", n={"$gte": "mul", "$lt": "mul" + TOP})


async def test_string_exact_compares_the_value_as_written():
    assert await where("Patient", "family:exact=Müller") == elem("i_str", p="family", x="Müller")


async def test_string_contains_is_an_escaped_regex():
    assert await where("Patient", "family:contains=a.b") == elem("i_str", p="family", n={"$regex": r"a\.b"})


# -- token -----------------------------------------------------------------------------------


async def test_token_code_only():
    assert await where("Patient", "gender=male") == elem("i_tok", p="gender", c="male")


async def test_token_system_and_code():
    assert await where("Patient", "identifier=urn:mrn|111") == elem("i_tok", p="identifier", c="111", s="urn:mrn")


async def test_token_empty_system_matches_an_absent_system():
    assert await where("Patient", "identifier=|333") == elem("i_tok", p="identifier", c="333", s=None)


async def test_token_system_only():
    assert await where("Patient", "identifier=urn:mrn|") == elem("i_tok", p="identifier", s="urn:mrn")


async def test_token_not_excludes_resources_with_the_code_of_this_type():
    assert await where("Patient", "gender:not=male") == {
        "$nor": [{"type": "Patient", **elem("i_tok", p="gender", c="male")}]}


async def test_token_text_is_a_prefix_range_on_the_text():
    assert await where("Observation", "code:text=Systolic") == elem(
        "i_tok", p="code", t={"$gte": "systolic", "$lt": "systolic" + TOP})


async def test_token_of_type():
    assert await where("Patient", "identifier:of-type=http://sys|MR|111") == elem(
        "i_tok", p="identifier", ts="http://sys", tc="MR", c="111")


async def test_comma_separated_values_are_one_elem_match_each():
    assert await where("Encounter", "status=finished,cancelled") == {"$or": [
        elem("i_tok", p="status", c="finished"), elem("i_tok", p="status", c="cancelled")]}


# -- reference -------------------------------------------------------------------------------


async def test_reference_by_type_and_id():
    assert await where("Observation", "subject=Patient/p1") == elem("i_ref", p="subject", ti="p1", tt="Patient")


async def test_reference_by_id_only():
    assert await where("Observation", "subject=p1") == elem("i_ref", p="subject", ti="p1")


async def test_reference_type_modifier():
    assert await where("Observation", "subject:Group=g1") == elem("i_ref", p="subject", ti="g1", tt="Group")


async def test_absolute_reference_matches_by_id_or_url():
    url = "http://example.org/fhir/Patient/p1"
    assert await where("Observation", f"subject={url}") == elem(
        "i_ref", p="subject", **{"$or": [{"ti": "p1", "tt": "Patient"}, {"u": url}]})


async def test_url_that_is_no_rest_reference_matches_by_url_only():
    url = "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"
    assert await where("QuestionnaireResponse", f"questionnaire={url}") == elem("i_ref", p="questionnaire", u=url)


# -- date ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix,expected", [
    ("eq", {"lo": {"$gte": D_1990[0]}, "hi": {"$lte": D_1990[1]}}),
    ("ne", {"$or": [{"lo": {"$lt": D_1990[0]}}, {"hi": {"$gt": D_1990[1]}}]}),
    ("gt", {"hi": {"$gt": D_1990[1]}}),
    ("lt", {"lo": {"$lt": D_1990[0]}}),
    ("ge", {"$or": [{"hi": {"$gt": D_1990[1]}}, {"lo": {"$gte": D_1990[0]}, "hi": {"$lte": D_1990[1]}}]}),
    ("le", {"$or": [{"lo": {"$lt": D_1990[0]}}, {"lo": {"$gte": D_1990[0]}, "hi": {"$lte": D_1990[1]}}]}),
    ("sa", {"lo": {"$gt": D_1990[1]}}),
    ("eb", {"hi": {"$lt": D_1990[0]}}),
])
async def test_date_prefixes(prefix, expected):
    assert await where("Patient", f"birthdate={prefix}1990") == elem("i_date", p="birthdate", **expected)


async def test_date_ap_is_within_ten_percent_of_the_distance_to_now(monkeypatch):
    now_ms = D_1990[0] + 10_000_000
    monkeypatch.setattr(translate.time, "time", lambda: now_ms / 1000)
    gap = abs(now_ms - D_1990[0]) * 0.1
    assert await where("Patient", "birthdate=ap1990") == elem(
        "i_date", p="birthdate", lo={"$lte": D_1990[1] + gap}, hi={"$gte": D_1990[0] - gap})


async def test_last_updated_is_a_range_on_the_document_itself():
    assert await where("Patient", "_lastUpdated=gt1990") == {"lu": {"$gt": D_1990[1]}}
    assert await where("Patient", "_lastUpdated=1990") == {"lu": {"$gte": D_1990[0], "$lte": D_1990[1]}}


# -- number and quantity -----------------------------------------------------------------------


async def test_number_eq_uses_the_implied_precision():
    assert await where("RiskAssessment", "probability=0.5") == elem(
        "i_num", p="probability", lo={"$gte": 0.45}, hi={"$lte": 0.55})


async def test_number_comparisons_use_the_value():
    assert await where("RiskAssessment", "probability=gt0.4") == elem("i_num", p="probability", hi={"$gt": 0.4})


async def test_quantity_with_system_and_code_or_unit():
    got = await where("Observation", "value-quantity=gt130|http://unitsofmeasure.org|mm[Hg]")
    assert got == elem("i_qty", p="value-quantity", hi={"$gt": 130.0}, s="http://unitsofmeasure.org",
                       **{"$or": [{"c": "mm[Hg]"}, {"un": "mm[Hg]"}]})


async def test_quantity_value_only():
    assert await where("Observation", "value-quantity=120") == elem(
        "i_qty", p="value-quantity", lo={"$gte": 119.5}, hi={"$lte": 120.5})


# -- uri -------------------------------------------------------------------------------------


async def test_uri_exact_below_above():
    url = "http://a.org/vs"
    assert await where("ValueSet", f"url={url}") == elem("i_uri", p="url", v=url)
    assert await where("ValueSet", f"url:below={url}") == elem("i_uri", p="url", v={"$gte": url, "$lt": url + TOP})
    above = await where("ValueSet", f"url:above={url}")
    prefixes = above["i_uri"]["$elemMatch"]["v"]["$in"]
    assert prefixes[0] == "" and prefixes[-1] == url and len(prefixes) == len(url) + 1


# -- composite, missing, _id -------------------------------------------------------------------


async def test_composite_components_are_one_array_element():
    got = await where("Observation", "component-code-value-quantity=http://loinc.org|8480-6$gt140")
    assert got == elem(  # (plus type: Observation, which `where` leaves out)
        "i_comp", p="component-code-value-quantity", **{"k0.c": "8480-6", "k0.s": "http://loinc.org",
                                                        "k1.hi": {"$gt": 140.0}})


async def test_missing():
    assert await where("Observation", "value-quantity:missing=false") == {"i_qty.p": "value-quantity"}
    assert await where("Observation", "value-quantity:missing=true") == {
        "$nor": [{"type": "Observation", "i_qty.p": "value-quantity"}]}
    assert await where("Observation", "component-code-value-quantity:missing=true") == {
        "$nor": [{"type": "Observation", "i_comp.p": "component-code-value-quantity"}]}


async def test_id():
    assert await where("Patient", "_id=p1,p3") == {"id": {"$in": ["p1", "p3"]}}


async def test_several_parameters_are_anded():
    got = await where("Encounter", "status=finished&class=AMB")
    assert got == {"$and": [{**elem("i_tok", p="status", c="finished")},
                            {"i_tok": {"$elemMatch": {"p": "class", "c": "AMB"}}}]}


# -- chains, _has, compartments -------------------------------------------------------------------


async def test_chain_resolves_the_targets_then_matches_their_ids():
    resolver = RecordingResolver(ids=["p3"])
    got = await where("Encounter", "subject:Patient.family=smith", resolver)
    assert resolver.asked == [("ids", {"type": "Patient", "deleted": False,
                                       **elem("i_str", p="family", n={"$gte": "smith", "$lt": "smith" + TOP})})]
    assert got == elem("i_ref", p="subject", tt="Patient", ti={"$in": ["p3"]})


async def test_two_level_chain_resolves_inside_out():
    resolver = RecordingResolver(ids=["x"])
    await where("Observation", "encounter.subject:Patient.name=anna", resolver)
    assert [a[1]["type"] for a in resolver.asked] == ["Patient", "Encounter"]


async def test_reverse_chain_collects_referenced_ids():
    resolver = RecordingResolver(referenced=["p1", "p2"])
    got = await where("Patient", "_has:Observation:patient:code=8480-6", resolver)
    assert resolver.asked == [("referenced", {"type": "Observation", "deleted": False,
                                              **elem("i_tok", p="code", c="8480-6")}, "patient", "Patient")]
    assert got == {"id": {"$in": ["p1", "p2"]}}


async def test_compartment_is_an_or_of_references():
    q = parse_search(["Observation"], [], extra_filters=[compartment_filter("Patient", "p1", "Observation")])
    match = await match_filter(q.resource_types, q.filters, RecordingResolver())
    assert "$or" in match
    assert elem("i_ref", p="subject", ti="p1", tt="Patient") in [
        {k: v for k, v in alt.items() if k != "type"} for alt in match["$or"]]


async def test_system_search_scopes_each_alternative_to_its_type():
    q = parse_search(["Patient", "Practitioner"], [("name", "house")])
    match = await match_filter(q.resource_types, q.filters, RecordingResolver())
    assert (match["type"], match["deleted"]) == ({"$in": ["Patient", "Practitioner"]}, False)
    assert [alt["type"] for alt in match["$or"]] == ["Patient", "Practitioner"]


# -- helpers, sort and paging -----------------------------------------------------------------


def test_merge_flattens_when_it_can_and_ands_when_it_cannot():
    assert merge({"a": 1}, {"b": {"$gt": 1}}, {"b": {"$lt": 5}}) == {"a": 1, "b": {"$gt": 1, "$lt": 5}}
    assert merge({"$or": [{"a": 1}]}, {"$or": [{"b": 1}]}) == {"$and": [{"$or": [{"a": 1}]}, {"$or": [{"b": 1}]}]}
    assert merge({"a": 1}, {"a": 1}) == {"a": 1}


def test_range_on_one_field_merges_its_bounds():
    v = RangeValue("eq", 1, 2)
    assert range_condition(v, "lu", "lu") == {"lu": {"$gte": 1, "$lte": 2}}


def test_sort_stages_compute_min_ascending_and_max_descending():
    stages, fields = sort_stages([SortKey("birthdate", "date"), SortKey("family", "string", descending=True)])
    assert fields == ["_k0", "_k1"]
    assert stages[0]["$addFields"]["_f0"]["$filter"]["cond"] == {"$and": [
        {"$eq": ["$$e.p", "birthdate"]}, {"$ne": [{"$ifNull": ["$$e.lo", None]}, None]}]}
    assert stages[1]["$addFields"] == {"_k0": {"$ifNull": [{"$min": "$_f0.lo"}, MISSING_NUMBER]},
                                       "_k1": {"$ifNull": [{"$max": "$_f1.n"}, ""]}}


def test_sort_on_id_and_last_updated_uses_the_document_fields():
    stages, fields = sort_stages([SortKey("_id", "token"), SortKey("_lastUpdated", "date")])
    assert stages == [] and fields == ["id", "lu"]


def test_keyset_after_and_before():
    after = keyset_condition(["_k0"], [False], [5, 12], backwards=False)
    assert after == {"$or": [{"_k0": {"$gt": 5}}, {"_k0": 5, "rid": {"$gt": 12}}]}
    before_desc = keyset_condition(["_k0"], [True], [5, 12], backwards=True)
    assert before_desc == {"$or": [{"_k0": {"$gt": 5}}, {"_k0": 5, "rid": {"$lt": 12}}]}


def test_page_pipeline_without_computed_keys_puts_the_keyset_in_the_first_match():
    pipeline, fields = page_pipeline({"type": "Patient", "deleted": False}, [], 10, ("after", [7]))
    assert pipeline[0] == {"$match": {"type": "Patient", "deleted": False, "rid": {"$gt": 7}}}
    assert pipeline[1:3] == [{"$sort": {"rid": 1}}, {"$limit": 11}]
    assert "i_ref" not in pipeline[-1]["$project"] and fields == []


def test_page_pipeline_backwards_reverses_the_order():
    pipeline, _ = page_pipeline({"type": "Patient"}, [SortKey("birthdate", "date")], 2, ("before", [100, 3]),
                                with_references=True)
    assert [list(s)[0] for s in pipeline] == ["$match", "$addFields", "$addFields", "$match", "$sort", "$limit",
                                              "$project"]
    assert pipeline[4]["$sort"] == {"_k0": -1, "rid": -1}
    assert pipeline[-1]["$project"]["i_ref"] == 1 and pipeline[-1]["$project"]["_k0"] == 1
