"""SMART scope grammar and arithmetic (smart_auth/scopes.py) and what a consent answer grants
(smart_auth/consent.py): research/smart.md SC-01..SC-05, AL-07, AUTHZ-07."""

from __future__ import annotations

import pytest

from smart_auth.consent import Offer
from smart_auth.scopes import InvalidScope, ResourceScope, ScopeSet, parse_resource_scope
from smart_auth.store.records import User

LAB = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
VITALS = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"


def scope(text: str) -> ResourceScope:
    parsed = parse_resource_scope(text)
    assert parsed is not None
    return parsed


def words(scopes: ScopeSet) -> set[str]:
    return set(scopes.text.split())


# -- parsing --------------------------------------------------------------------------------------------

def test_v2_scope_parses_context_type_and_permissions():
    assert scope("patient/Observation.rs") == ResourceScope("patient", "Observation", "rs")


@pytest.mark.parametrize("context", ["patient", "user", "system"])
def test_every_context_parses(context):
    assert scope(f"{context}/Patient.r").context == context


def test_wildcard_type_parses():
    assert scope("user/*.cruds").resource_type == "*"


@pytest.mark.parametrize("v1,v2", [("read", "rs"), ("write", "cud"), ("*", "cruds")])
def test_v1_permissions_mean_their_v2_equivalent(v1, v2):
    parsed = scope(f"patient/Observation.{v1}")
    assert (parsed.permissions, parsed.v1) == (v2, v1)


def test_v1_scope_is_written_back_in_v1_form():
    assert scope("patient/*.read").text == "patient/*.read"


def test_query_restriction_parses_into_pairs():
    assert scope(LAB).query == (("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"),)


def test_query_restriction_is_written_back_unchanged():
    assert scope(LAB).text == LAB


def test_several_query_parameters_parse():
    assert len(scope("patient/Observation.rs?category=a|b&code=c|d").query) == 2


@pytest.mark.parametrize("text", ["openid", "fhirUser", "launch", "launch/patient", "offline_access",
                                  "online_access", "profile", "__custom", "https://example.org/scope"])
def test_non_resource_scope_is_not_a_resource_scope(text):
    assert parse_resource_scope(text) is None


@pytest.mark.parametrize("text", [
    "patient/Observation.rsd",  # out of c r u d s order
    "patient/Observation.sr",
    "patient/Observation.x",  # unknown permission
    "patient/Observation.rr",
    "patient/Observation.",
    "patient/Observation",
    "patient/observation.rs",  # types start upper case
    "patient/Observation.read?category=a|b",  # v1 cannot carry a query
    "patient/*.rs?category=a|b",  # a query needs a type
    "patient/Observation.rs?category",  # no value
    "patient/Observation.rs?=x",
])
def test_malformed_resource_scope_is_invalid(text):
    with pytest.raises(InvalidScope):
        parse_resource_scope(text)


def test_unknown_context_is_not_a_resource_scope():
    assert parse_resource_scope("group/Patient.rs") is None


def test_scope_set_separates_resource_and_other_scopes():
    parsed = ScopeSet.parse("openid patient/Patient.rs launch/patient")
    assert parsed.other == ("openid", "launch/patient")
    assert parsed.resource == (scope("patient/Patient.rs"),)


def test_scope_set_drops_duplicates():
    assert ScopeSet.parse("openid openid patient/Patient.rs patient/Patient.rs").text == "openid patient/Patient.rs"


def test_scope_set_parse_of_a_malformed_scope_raises():
    with pytest.raises(InvalidScope):
        ScopeSet.parse("openid patient/Patient.sr")


def test_scope_set_contains_checks_other_scopes():
    assert "offline_access" in ScopeSet.parse("offline_access patient/*.rs")


def test_granting_finds_the_scopes_for_a_type_and_permission():
    scopes = ScopeSet.parse("patient/Observation.r patient/*.s user/Patient.rs")
    assert scopes.granting("Observation", "s") == [scope("patient/*.s")]


def test_v1_and_v2_forms_grant_alike():
    assert ScopeSet.parse("user/Observation.read").granting("Observation", "s")


# -- grant: intersection with a client's registration -------------------------------------------------

def test_grant_keeps_what_the_registration_allows():
    granted = ScopeSet.parse("patient/Observation.rs patient/Condition.rs").grant(ScopeSet.parse("patient/*.rs"))
    assert words(granted) == {"patient/Observation.rs", "patient/Condition.rs"}


def test_grant_narrows_permissions_to_the_registration():
    assert ScopeSet.parse("patient/Observation.cruds").grant(ScopeSet.parse("patient/*.rs")).text == \
        "patient/Observation.rs"


def test_grant_narrows_a_wildcard_to_the_registered_type():
    assert ScopeSet.parse("patient/*.rs").grant(ScopeSet.parse("patient/Observation.rs")).text == \
        "patient/Observation.rs"


def test_grant_drops_another_context():
    assert ScopeSet.parse("user/*.rs").grant(ScopeSet.parse("patient/*.rs")).text == ""


def test_grant_drops_other_scopes_not_registered():
    assert ScopeSet.parse("openid offline_access patient/*.rs").grant(ScopeSet.parse("openid patient/*.rs")).text == \
        "openid patient/*.rs"


def test_grant_keeps_a_v1_scope_granted_whole_in_v1_form():
    assert ScopeSet.parse("patient/Observation.read").grant(ScopeSet.parse("patient/*.cruds")).text == \
        "patient/Observation.read"


def test_grant_writes_a_narrowed_v1_scope_in_v2_form():
    assert ScopeSet.parse("patient/Observation.*").grant(ScopeSet.parse("patient/*.rs")).text == \
        "patient/Observation.rs"


def test_grant_keeps_a_requested_query_restriction():
    assert ScopeSet.parse(LAB).grant(ScopeSet.parse("patient/*.rs")).text == LAB


def test_grant_applies_the_registered_query_restriction():
    assert ScopeSet.parse("patient/Observation.rs").grant(ScopeSet.parse(LAB)).text == LAB


def test_grant_of_conflicting_query_restrictions_is_nothing():
    assert ScopeSet.parse(VITALS).grant(ScopeSet.parse(LAB)).text == ""


def test_grant_does_not_repeat_a_scope_another_covers():
    granted = ScopeSet.parse("patient/Observation.rs patient/Observation.r").grant(ScopeSet.parse("patient/*.rs"))
    assert granted.text == "patient/Observation.rs"


# -- covers: a refresh may narrow, never widen -----------------------------------------------------------

@pytest.mark.parametrize("asked", [
    "patient/*.rs openid",  # identical members
    "patient/Observation.rs",  # one type of a wildcard
    "patient/Observation.r",  # fewer permissions
    "patient/Observation.read",  # the same in v1 form
    LAB,  # a query restriction is narrower
    "openid",
    "",
])
def test_granted_scope_covers_a_subset(asked):
    assert ScopeSet.parse("openid patient/*.rs").covers(ScopeSet.parse(asked))


@pytest.mark.parametrize("asked", [
    "patient/*.cruds",  # more permissions
    "user/*.rs",  # another context
    "offline_access",  # a scope not granted
    "patient/*.rs patient/Observation.c",
])
def test_granted_scope_does_not_cover_more(asked):
    assert not ScopeSet.parse("openid patient/*.rs").covers(ScopeSet.parse(asked))


def test_query_restricted_grant_does_not_cover_the_whole_type():
    assert not ScopeSet.parse(LAB).covers(ScopeSet.parse("patient/Observation.rs"))


def test_query_restricted_grant_does_not_cover_another_restriction():
    assert not ScopeSet.parse(LAB).covers(ScopeSet.parse(VITALS))


def test_type_grant_does_not_cover_the_wildcard():
    assert not ScopeSet.parse("patient/Observation.rs").covers(ScopeSet.parse("patient/*.rs"))


# -- Offer: what the consent page offers and what the answer grants -----------------------------------

PATIENT = User(username="alice", password_hash="x", fhir_user="Patient/pat-a")
CLINICIAN = User(username="dana", password_hash="x", fhir_user="Practitioner/doc-1")


def test_offer_to_a_patient_drops_user_scopes():
    offer = Offer.build("launch/patient user/*.rs patient/*.rs", PATIENT)
    assert words(offer.scopes) == {"launch/patient", "patient/*.rs"}


def test_offer_to_a_clinician_keeps_user_scopes():
    assert "user/*.rs" in words(Offer.build("openid user/*.rs", CLINICIAN).scopes)


def test_offer_never_includes_system_scopes():
    assert words(Offer.build("system/*.rs patient/*.rs", CLINICIAN).scopes) == {"patient/*.rs"}


def test_offer_with_patient_scopes_needs_a_patient():
    assert Offer.build("patient/Observation.rs", CLINICIAN).needs_patient


def test_offer_with_only_user_scopes_needs_no_patient():
    assert not Offer.build("openid user/*.rs", CLINICIAN).needs_patient


def test_offer_lists_category_narrowings_of_observation():
    choice = next(c for c in Offer.build("patient/Observation.rs", PATIENT).choices()
                  if c.scope == "patient/Observation.rs")
    assert LAB in [value for value, _ in choice.narrowings]


def test_decide_grants_the_ticked_scopes():
    offer = Offer.build("patient/Observation.rs patient/Condition.rs", PATIENT)
    assert offer.decide(["patient/Observation.rs"]).text == "patient/Observation.rs"


def test_decide_keeps_required_scopes_even_when_not_posted():
    offer = Offer.build("launch/patient openid fhirUser patient/Observation.rs", PATIENT)
    assert words(offer.decide([])) == {"launch/patient", "openid", "fhirUser"}


def test_decide_drops_an_unticked_offline_access():
    offer = Offer.build("offline_access patient/Observation.rs", PATIENT)
    assert "offline_access" not in offer.decide(["patient/Observation.rs"])


def test_decide_keeps_a_ticked_offline_access():
    offer = Offer.build("offline_access patient/Observation.rs", PATIENT)
    assert "offline_access" in offer.decide(["offline_access", "patient/Observation.rs"])


def test_decide_grants_a_ticked_category_narrowing():
    offer = Offer.build("patient/Observation.rs", PATIENT)
    assert offer.decide([LAB]).text == LAB


def test_decide_grants_several_category_narrowings():
    offer = Offer.build("patient/Observation.rs", PATIENT)
    assert words(offer.decide([LAB, VITALS])) == {LAB, VITALS}


def test_decide_drops_narrowings_made_redundant_by_the_whole_scope():
    offer = Offer.build("patient/Observation.rs", PATIENT)
    assert offer.decide(["patient/Observation.rs", LAB]).text == "patient/Observation.rs"


def test_decide_ignores_a_scope_that_was_not_offered():
    offer = Offer.build("patient/Observation.rs", PATIENT)
    assert offer.decide(["patient/Observation.rs", "patient/Condition.rs", "user/*.cruds"]).text == \
        "patient/Observation.rs"


def test_decide_ignores_wider_permissions_than_offered():
    offer = Offer.build("patient/Observation.rs", PATIENT)
    assert offer.decide(["patient/Observation.cruds"]).text == ""


def test_decide_ignores_a_narrowing_the_page_did_not_offer():
    offer = Offer.build("patient/Observation.rs", PATIENT)
    assert offer.decide(["patient/Observation.rs?code=http://loinc.org|8867-4"]).text == ""


def test_decide_ignores_a_narrowing_with_other_permissions():
    offer = Offer.build("patient/Observation.rs", PATIENT)
    assert offer.decide([LAB.replace(".rs?", ".r?")]).text == ""


def test_decide_ignores_malformed_posted_scopes():
    offer = Offer.build("patient/Observation.rs", PATIENT)
    assert offer.decide(["patient/Observation.sr", "patient/Observation.rs"]).text == "patient/Observation.rs"


def test_decide_ignores_a_narrowing_of_a_query_restricted_offer():
    offer = Offer.build(LAB, PATIENT)
    assert offer.decide([VITALS]).text == ""
