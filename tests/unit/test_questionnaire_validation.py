"""QuestionnaireResponse-against-Questionnaire validation (fhir_server.validation.questionnaire) and
the shipped intake Questionnaires (profiles/questionnaires/).

Each test is one behaviour, against the shipped intakes: a complete response (tests/fixtures/
questionnaire/) passes; a response changed in one way breaks exactly the rule that change is about,
with the element path, the rule id and the severity research/validation.md Part B (B4, B8) asks for.
Terminology is the real LocalTerminology with the guide's usps-state ValueSet.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from fhir_server.validation.issues import Issue
from fhir_server.validation.ports import Membership
from fhir_server.validation.questionnaire import (
    check_questionnaire,
    clear_index_cache,
    questionnaire_index,
    validate_response,
)
from fhir_server.validation.questionnaire.enable_when import evaluate
from fhir_server.validation.structure import validate_resource
from fhir_server.validation.terminology import LocalTerminology
from profiles.canonical import CANONICAL_BASE

ROOT = Path(__file__).resolve().parents[2]
QUESTIONNAIRES = ROOT / "profiles" / "questionnaires"
FIXTURES = ROOT / "tests" / "fixtures" / "questionnaire"
INTAKES = ("async-visit-intake", "uti-intake", "ed-intake")
INTAKE_CONCEPT = f"{CANONICAL_BASE}/CodeSystem/intake-concept"
USPS = "https://www.usps.com/"
V3_GENDER = "http://terminology.hl7.org/CodeSystem/v3-AdministrativeGender"
V3_NULL = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
SECRET = "PATIENT-SECRET-4711"  # an answer value that must never reach a diagnostic


# -- helpers -----------------------------------------------------------------------------------------


@cache
def _read(path: Path) -> str:
    return path.read_text()


def intake(qid: str) -> dict:
    return json.loads(_read(QUESTIONNAIRES / f"{qid}.json"))


def complete(qid: str) -> dict:
    return json.loads(_read(FIXTURES / f"{qid}-complete.json"))


@pytest.fixture(scope="module")
def terminology() -> LocalTerminology:
    return LocalTerminology(extra=[json.loads(_read(ROOT / "profiles" / "valuesets" / "usps-state.json"))])


def validate(response: dict, terminology: Any, qid: str | None = None) -> list[Issue]:
    qid = qid or response["questionnaire"].split("/")[-1].split("|")[0]
    return validate_response(response, intake(qid), terminology)


def errors(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity in ("error", "fatal")]


def only_error(issues: list[Issue]) -> Issue:
    found = errors(issues)
    assert len(found) == 1, found
    return found[0]


def qr_items(node: dict) -> list[dict]:
    """Every QR item below `node`, depth first, through item and answer.item."""
    out = []
    for item in node.get("item", []):
        out.append(item)
        out.extend(qr_items(item))
        for answer in item.get("answer", []):
            out.extend(qr_items(answer))
    return out


def qr_item(response: dict, link_id: str) -> dict:
    return next(i for i in qr_items(response) if i["linkId"] == link_id)


def parent_list(node: dict, link_id: str) -> list[dict] | None:
    """The `item` list that holds the QR item `link_id`."""
    for container in [node] + qr_items(node) + [a for i in qr_items(node) for a in i.get("answer", [])]:
        if any(i["linkId"] == link_id for i in container.get("item", [])):
            return container["item"]
    return None


def answer(response: dict, link_id: str, *answers: dict) -> dict:
    """Set the answers of an existing QR item, or add the item at the end of its Questionnaire
    parent's QR item (the tests add only items whose parent is present)."""
    try:
        qr_item(response, link_id)["answer"] = list(answers)
    except StopIteration:
        raise AssertionError(f"{link_id} is not in the response; add it explicitly") from None
    return response


def insert_after(response: dict, sibling: str, new_item: dict) -> dict:
    siblings = parent_list(response, sibling)
    siblings.insert(siblings.index(qr_item(response, sibling)) + 1, new_item)
    return response


def remove(response: dict, link_id: str) -> dict:
    siblings = parent_list(response, link_id)
    siblings.remove(qr_item(response, link_id))
    return response


def path_of(response: dict, link_id: str) -> str:
    """The FHIRPath of a QR item, e.g. QuestionnaireResponse.item[2].item[1]."""

    def walk(node: dict, path: str) -> str | None:
        for i, item in enumerate(node.get("item", [])):
            here = f"{path}.item[{i}]"
            if item["linkId"] == link_id:
                return here
            found = walk(item, here)
            for j, ans in enumerate(item.get("answer", [])):
                found = found or walk(ans, f"{here}.answer[{j}]")
            if found:
                return found
        return None

    found = walk(response, "QuestionnaireResponse")
    assert found, link_id
    return found


def boolean(value: bool) -> dict:
    return {"valueBoolean": value}


def coding(system: str, code: str) -> dict:
    return {"valueCoding": {"system": system, "code": code}}


def male(response: dict) -> dict:
    return answer(response, "sex-at-birth", coding(V3_GENDER, "M"))


def in_progress(response: dict) -> dict:
    response["status"] = "in-progress"
    return response


class UnknownTerminology:
    """A terminology that cannot tell membership (as for an intensional SNOMED value set)."""

    def check(self, value_set: str, system: str | None, code: str) -> Membership:
        return Membership("unknown", "value set not expandable here")

    def display(self, system: str, code: str) -> str | None:
        return None

    def code_in_system(self, system: str, code: str) -> bool | None:
        return None


# -- the shipped Questionnaires ------------------------------------------------------------------------


@pytest.mark.parametrize("qid", INTAKES)
def test_shipped_questionnaire_is_structurally_valid_r4(qid: str) -> None:
    validate_resource(intake(qid), "Questionnaire")


@pytest.mark.parametrize("qid", INTAKES)
def test_shipped_questionnaire_respects_que_invariants(qid: str) -> None:
    assert check_questionnaire(intake(qid)) == []


@pytest.mark.parametrize("qid", INTAKES)
def test_shipped_questionnaire_identity(qid: str) -> None:
    q = intake(qid)
    assert (q["id"], q["url"], q["version"], q["status"]) == (qid, f"{CANONICAL_BASE}/Questionnaire/{qid}", "1.0.0", "active")


def _coded(q: dict, code: str) -> list[dict]:
    def walk(items: list[dict]):
        for item in items:
            yield item
            yield from walk(item.get("item", []))

    return [i for i in walk(q["item"]) if any(c.get("system") == INTAKE_CONCEPT and c["code"] == code for c in i.get("code", []))]


@pytest.mark.parametrize("qid", INTAKES)
def test_intake_concept_markers_sit_on_items_of_the_right_type(qid: str) -> None:
    q = intake(qid)
    assert all(i["type"] == "boolean" for i in _coded(q, "red-flag") + _coded(q, "contraindication") + _coded(q, "consent-async"))
    [state] = _coded(q, "patient-state")
    assert (state["type"], state["answerValueSet"], state["required"]) == ("choice", f"{CANONICAL_BASE}/ValueSet/usps-state", True)
    [consent] = _coded(q, "consent-async")
    assert consent["required"] is True
    assert len(_coded(q, "red-flag")) >= 3
    assert all(i["type"] == "attachment" and i["repeats"] for i in _coded(q, "visit-photo"))


def test_general_intake_has_the_photo_question_and_ed_intake_marks_nitrates_as_contraindication() -> None:
    assert [i["linkId"] for i in _coded(intake("async-visit-intake"), "visit-photo")] == ["photo"]
    assert {"nitrates", "riociguat"} <= {i["linkId"] for i in _coded(intake("ed-intake"), "contraindication")}


def test_only_the_five_intake_concept_codes_are_used() -> None:
    def codings(items: list[dict]):
        for item in items:
            yield from item.get("code", [])
            yield from codings(item.get("item", []))

    used = {c["code"] for qid in INTAKES for c in codings(intake(qid)["item"]) if c["system"] == INTAKE_CONCEPT}
    assert used == {"red-flag", "patient-state", "consent-async", "visit-photo", "contraindication"}


# -- complete responses --------------------------------------------------------------------------------


@pytest.mark.parametrize("qid", INTAKES)
def test_complete_response_passes_without_any_issue(qid: str, terminology: LocalTerminology) -> None:
    assert validate(complete(qid), terminology) == []


@pytest.mark.parametrize("qid", INTAKES)
def test_complete_response_fixture_is_structurally_valid_r4(qid: str) -> None:
    validate_resource(complete(qid), "QuestionnaireResponse")


def test_an_empty_in_progress_response_has_warnings_but_no_errors(terminology: LocalTerminology) -> None:
    response = in_progress(complete("async-visit-intake"))
    response["item"] = []
    issues = validate(response, terminology)
    assert errors(issues) == []
    assert {i.rule for i in issues} == {"qr-required"}


# -- linkIds, order, repeats ---------------------------------------------------------------------------


def test_unknown_link_id_is_not_found(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    response["item"].append({"linkId": "favourite-colour", "answer": [{"valueString": "blue"}]})
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.code, issue.expression) == ("qr-linkid-unknown", "not-found", f"QuestionnaireResponse.item[{len(response['item']) - 1}]")
    assert "'favourite-colour'" in issue.diagnostics and "async-visit-intake|1.0.0" in issue.diagnostics


def test_link_id_at_the_wrong_nesting_level_is_misplaced(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    moved = qr_item(response, "history")
    remove(response, "history")
    response["item"].append(moved)
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.code) == ("qr-linkid-misplaced", "structure")


def test_items_out_of_questionnaire_order(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    response["item"][0], response["item"][1] = response["item"][1], response["item"][0]
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.code, issue.expression) == ("qr-order", "structure", "QuestionnaireResponse.item[1]")


def test_second_answer_to_a_non_repeating_question(terminology: LocalTerminology) -> None:
    response = answer(complete("async-visit-intake"), "getting-worse", boolean(True), boolean(False))
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.expression) == ("qr-repeats", f"{path_of(response, 'getting-worse')}.answer[1]")


def test_non_repeating_item_twice(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    insert_after(response, "getting-worse", copy.deepcopy(qr_item(response, "getting-worse")))
    issue = only_error(validate(response, terminology))
    assert issue.rule == "qr-repeats"


def test_repeating_question_split_over_two_items(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    insert_after(response, "photo", copy.deepcopy(qr_item(response, "photo")))
    issue = only_error(validate(response, terminology))
    assert issue.rule == "qrs-2"


def test_repeating_question_with_several_answers_is_fine(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    photo = qr_item(response, "photo")
    photo["answer"].append(copy.deepcopy(photo["answer"][0]))
    assert validate(response, terminology) == []


def test_repeating_group_instances_are_each_checked(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    second = [i for i in qr_items(response) if i["linkId"] == "medication"][1]
    second["item"] = [i for i in second["item"] if i["linkId"] != "medication-name"]
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.code) == ("qr-required", "required")
    medications = path_of(response, "takes-medications").rsplit(".", 1)[0]
    assert issue.expression == f"{medications}.item[2]" and "'medication-name'" in issue.diagnostics


# -- answer types, options, value sets -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("qid", "link_id", "wrong"),
    [
        ("async-visit-intake", "getting-worse", {"valueString": "yes"}),  # boolean
        ("async-visit-intake", "severity", {"valueDecimal": 7.5}),  # integer
        ("async-visit-intake", "onset-date", {"valueDateTime": "2026-11-24T08:00:00Z"}),  # date
        ("async-visit-intake", "reason", {"valueInteger": 3}),  # text
        ("async-visit-intake", "pregnancy-status", {"valueString": "Not pregnant"}),  # choice
        ("async-visit-intake", "body-weight", {"valueDecimal": 64.5}),  # quantity
        ("async-visit-intake", "photo", {"valueReference": {"reference": "Media/1"}}),  # attachment
        ("uti-intake", "temperature", {"valueInteger": 101}),  # decimal
    ],
)
def test_answer_of_the_wrong_type(qid: str, link_id: str, wrong: dict, terminology: LocalTerminology) -> None:
    response = complete(qid)
    if qid == "uti-intake":  # temperature is asked only after a fever
        answer(response, "rf-fever", boolean(True))
        insert_after(response, "rf-fever", {"linkId": "temperature", "answer": [wrong]})
    else:
        answer(response, link_id, wrong)
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.code, issue.expression) == ("qr-answer-type", "value", f"{path_of(response, link_id)}.answer[0]")
    assert f"'{link_id}'" in issue.diagnostics


def test_answer_not_among_the_coding_options(terminology: LocalTerminology) -> None:
    response = answer(complete("async-visit-intake"), "pregnancy-status", coding("http://loinc.org", "LA33-6"))
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.code, issue.expression) == ("qr-answer-option", "code-invalid", f"{path_of(response, 'pregnancy-status')}.answer[0]")


def test_an_invalid_answer_to_a_source_question_disables_what_depends_on_it(terminology: LocalTerminology) -> None:
    response = answer(complete("async-visit-intake"), "sex-at-birth", coding(V3_GENDER, "UN"))
    assert [i.rule for i in errors(validate(response, terminology))] == ["qr-answer-option", "qr-disabled-answered", "qr-disabled-answered"]


def test_option_coding_matches_on_system_and_code_not_display(terminology: LocalTerminology) -> None:
    response = answer(complete("async-visit-intake"), "sex-at-birth", {"valueCoding": {"system": V3_GENDER, "code": "F", "display": "Woman"}})
    assert validate(response, terminology) == []


def test_option_coding_without_its_system_does_not_match(terminology: LocalTerminology) -> None:
    response = answer(complete("async-visit-intake"), "pregnancy-status", {"valueCoding": {"code": "LA26683-5"}})
    assert only_error(validate(response, terminology)).rule == "qr-answer-option"


def test_answer_not_among_the_string_options(terminology: LocalTerminology) -> None:
    response = answer(complete("ed-intake"), "pde5-drug", {"valueString": "something from the internet"})
    issue = only_error(validate(response, terminology))
    assert issue.rule == "qr-answer-option"
    assert "internet" not in issue.diagnostics


def test_state_not_in_the_answer_value_set(terminology: LocalTerminology) -> None:
    response = answer(complete("async-visit-intake"), "patient-state", coding(USPS, "ZZ"))
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.code, issue.expression) == ("qr-answer-valueset", "code-invalid", f"{path_of(response, 'patient-state')}.answer[0]")
    assert "ZZ" not in issue.diagnostics and "ValueSet/usps-state" in issue.diagnostics


def test_state_from_another_system_is_not_in_the_value_set(terminology: LocalTerminology) -> None:
    response = answer(complete("async-visit-intake"), "patient-state", coding("urn:iso:std:iso:3166:-2", "CA"))
    assert only_error(validate(response, terminology)).rule == "qr-answer-valueset"


def test_value_set_membership_unknown_is_information_never_silent() -> None:
    issues = validate(complete("async-visit-intake"), UnknownTerminology())
    assert [(i.severity, i.rule, i.expression) for i in issues] == [
        ("information", "qr-answer-valueset", f"{path_of(complete('async-visit-intake'), 'patient-state')}.answer[0]")
    ]


# -- required --------------------------------------------------------------------------------------------


def test_required_item_missing_in_a_completed_response(terminology: LocalTerminology) -> None:
    response = remove(complete("async-visit-intake"), "consent-async")
    response["item"][-1]["item"] = []  # the consent group keeps no other answer
    issues = validate(response, terminology)
    assert {(i.rule, i.severity) for i in issues} == {("qr-required", "error")}
    assert any("'consent-async'" in i.diagnostics for i in issues)


def test_required_item_missing_reported_on_its_parent(terminology: LocalTerminology) -> None:
    response = remove(complete("async-visit-intake"), "rf-self-harm")
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.code, issue.expression) == ("qr-required", "required", path_of(response, "rf-chest-pain").rsplit(".", 1)[0])
    assert "'rf-self-harm'" in issue.diagnostics


def test_required_item_missing_is_only_a_warning_in_progress(terminology: LocalTerminology) -> None:
    response = in_progress(remove(complete("async-visit-intake"), "rf-self-harm"))
    issues = validate(response, terminology)
    assert [(i.severity, i.rule) for i in issues] == [("warning", "qr-required")]


def test_required_item_missing_in_an_amended_response_is_an_error(terminology: LocalTerminology) -> None:
    response = remove(complete("async-visit-intake"), "rf-self-harm")
    response["status"] = "amended"
    assert only_error(validate(response, terminology)).rule == "qr-required"


def test_required_group_left_out_entirely(terminology: LocalTerminology) -> None:
    response = remove(complete("async-visit-intake"), "consent")
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.expression) == ("qr-required", "QuestionnaireResponse")
    assert "'consent'" in issue.diagnostics


def test_required_nested_question_missing_under_its_answer(terminology: LocalTerminology) -> None:
    response = complete("ed-intake")
    qr_item(response, "alpha-blocker")["answer"][0].pop("item")
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.expression) == ("qr-required", f"{path_of(response, 'alpha-blocker')}.answer[0]")


# -- nesting: groups, displays, questions with children ----------------------------------------------------


def test_group_with_answers(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    qr_item(response, "visit")["answer"] = [{"valueString": SECRET}]
    issues = validate(response, terminology)
    issue = next(i for i in errors(issues) if i.rule == "qr-group-answer")
    assert (issue.code, issue.expression) == ("structure", f"{path_of(response, 'visit')}.answer[0]")


def test_display_item_with_an_answer(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    consent_group = qr_item(response, "consent")
    consent_group["item"].insert(0, {"linkId": "consent-note", "answer": [boolean(True)]})
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.expression) == ("qr-display-answered", f"{path_of(response, 'consent')}.item[0]")


def test_display_item_without_answers_may_be_kept(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    qr_item(response, "consent")["item"].insert(0, {"linkId": "consent-note"})
    assert validate(response, terminology) == []


def test_nested_question_under_answer_item_is_fine(terminology: LocalTerminology) -> None:
    response = complete("ed-intake")
    assert qr_item(response, "alpha-blocker")["answer"][0]["item"][0]["linkId"] == "alpha-blocker-name"
    assert validate(response, terminology) == []


def test_nested_question_under_item_instead_of_answer_item(terminology: LocalTerminology) -> None:
    response = complete("ed-intake")
    blocker = qr_item(response, "alpha-blocker")
    blocker["item"] = blocker.pop("answer")[0]["item"]  # the answer is gone, its child moved up
    issues = errors(validate(response, terminology))
    nested = next(i for i in issues if i.rule == "qr-nested-item")
    assert (nested.code, nested.expression) == ("structure", f"{path_of(response, 'alpha-blocker')}.item[0]")
    assert {i.rule for i in issues} == {"qr-nested-item", "qr-required"}  # and the question itself is unanswered


def test_question_with_both_answer_and_item_breaks_qrs_1(terminology: LocalTerminology) -> None:
    response = complete("ed-intake")
    blocker = qr_item(response, "alpha-blocker")
    blocker["item"] = blocker["answer"][0].pop("item")
    issues = errors(validate(response, terminology))
    assert "qrs-1" in {i.rule for i in issues}


def test_nested_question_answered_as_a_sibling_is_misplaced(terminology: LocalTerminology) -> None:
    response = complete("ed-intake")
    name = qr_item(response, "alpha-blocker")["answer"][0]["item"][0]
    insert_after(response, "alpha-blocker", name)
    issues = errors(validate(response, terminology))
    assert [i.rule for i in issues] == ["qr-linkid-misplaced"]


# -- enableWhen --------------------------------------------------------------------------------------------


def test_pregnancy_answered_for_a_male_patient_is_disabled_but_answered(terminology: LocalTerminology) -> None:
    response = male(complete("async-visit-intake"))
    remove(response, "breastfeeding")
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.code, issue.expression) == ("qr-disabled-answered", "invalid", path_of(response, "pregnancy-status"))


def test_disabled_answered_is_a_warning_in_progress(terminology: LocalTerminology) -> None:
    response = in_progress(remove(male(complete("async-visit-intake")), "breastfeeding"))
    assert [(i.severity, i.rule) for i in validate(response, terminology)] == [("warning", "qr-disabled-answered")]


def test_required_question_disabled_by_enable_when_may_be_left_out(terminology: LocalTerminology) -> None:
    response = male(complete("async-visit-intake"))
    remove(response, "pregnancy-status")
    remove(response, "breastfeeding")
    assert validate(response, terminology) == []


def test_enable_behavior_any_enables_pregnancy_for_unknown_sex(terminology: LocalTerminology) -> None:
    response = answer(complete("async-visit-intake"), "sex-at-birth", coding(V3_NULL, "UNK"))
    assert validate(response, terminology) == []
    remove(response, "pregnancy-status")
    assert only_error(validate(response, terminology)).rule == "qr-required"


def test_not_equal_operator_disables_the_allergy_list_when_none_are_known(terminology: LocalTerminology) -> None:
    response = answer(complete("async-visit-intake"), "no-known-allergies", boolean(True))
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.expression) == ("qr-disabled-answered", path_of(response, "allergy"))


def test_not_equal_operator_is_true_when_the_source_is_unanswered(terminology: LocalTerminology) -> None:
    response = in_progress(remove(complete("async-visit-intake"), "no-known-allergies"))
    assert "qr-disabled-answered" not in {i.rule for i in validate(response, terminology)}


def test_greater_or_equal_operator(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")  # severity 7 >= 7: the impact question is enabled and answered
    assert validate(response, terminology) == []
    answer(response, "severity", {"valueInteger": 6})
    assert only_error(validate(response, terminology)).rule == "qr-disabled-answered"


def test_exists_operator(terminology: LocalTerminology) -> None:
    response = remove(complete("async-visit-intake"), "photo")
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.expression) == ("qr-disabled-answered", path_of(response, "photo-description"))


def test_greater_than_operator(terminology: LocalTerminology) -> None:
    response = complete("uti-intake")
    insert_after(response, "symptom-days", {"linkId": "treated-already", "answer": [boolean(False)]})
    assert only_error(validate(response, terminology)).rule == "qr-disabled-answered"  # 2 days: not > 7
    answer(response, "symptom-days", {"valueInteger": 8})
    assert validate(response, terminology) == []


def test_less_than_operator(terminology: LocalTerminology) -> None:
    response = answer(complete("ed-intake"), "bp-systolic", {"valueInteger": 85})
    issue = only_error(validate(response, terminology))
    assert issue.rule == "qr-required" and "'bp-dizziness'" in issue.diagnostics


def test_less_or_equal_operator(terminology: LocalTerminology) -> None:
    response = complete("ed-intake")
    insert_after(response, "ed-duration-months", {"linkId": "ed-new-medicine", "answer": [boolean(True)]})
    assert only_error(validate(response, terminology)).rule == "qr-disabled-answered"  # 14 months: not <= 6
    answer(response, "ed-duration-months", {"valueInteger": 6})
    assert validate(response, terminology) == []


def test_enable_behavior_all_needs_every_condition(terminology: LocalTerminology) -> None:
    response = answer(complete("ed-intake"), "bp-systolic", {"valueInteger": 190})
    issue = only_error(validate(response, terminology))
    assert issue.rule == "qr-required" and "'bp-crisis-symptoms'" in issue.diagnostics
    answer(response, "bp-known", boolean(False))  # now one condition fails: disabled, and so are the readings
    rules = [i.rule for i in errors(validate(response, terminology))]
    assert rules == ["qr-disabled-answered", "qr-disabled-answered"]  # bp-systolic, bp-diastolic


def test_answers_of_a_disabled_source_do_not_enable_others(terminology: LocalTerminology) -> None:
    response = answer(complete("ed-intake"), "pde5-previous", boolean(False))
    remove(response, "pde5-side-effects")
    flagged = [i.expression for i in errors(validate(response, terminology))]
    assert flagged == [path_of(response, "pde5-drug"), path_of(response, "pde5-response")]


def test_nested_question_disabled_by_its_parent_answer(terminology: LocalTerminology) -> None:
    response = complete("uti-intake")
    answer_with_children = qr_item(response, "recurrent")["answer"][0]
    answer_with_children["valueBoolean"] = False
    issues = errors(validate(response, terminology))
    assert [i.rule for i in issues] == ["qr-disabled-answered", "qr-disabled-answered"]


@pytest.mark.parametrize(
    ("operator", "expected_key", "expected", "answers", "result"),
    [
        ("exists", "answerBoolean", True, [{"valueInteger": 1}], True),
        ("exists", "answerBoolean", True, [], False),
        ("exists", "answerBoolean", False, [], True),
        ("=", "answerBoolean", True, [{"valueBoolean": True}], True),
        ("=", "answerInteger", 5, [{"valueDecimal": 5.0}], True),
        ("=", "answerCoding", {"system": "s", "code": "c"}, [{"valueCoding": {"system": "s", "code": "c", "display": "x"}}], True),
        ("=", "answerCoding", {"system": "s", "code": "c"}, [{"valueCoding": {"code": "c"}}], False),
        ("=", "answerCoding", {"code": "c"}, [{"valueCoding": {"system": "s", "code": "c"}}], True),
        ("=", "answerString", "a", [{"valueString": "A"}], False),
        ("!=", "answerBoolean", True, [], True),
        ("!=", "answerInteger", 3, [{"valueInteger": 3}, {"valueInteger": 4}], False),
        ("!=", "answerCoding", {"system": "s", "code": "c"}, [{"valueCoding": {"system": "s", "code": "d"}}], True),
        (">", "answerDecimal", 38.0, [{"valueDecimal": 38.5}], True),
        (">", "answerDate", "2026-01-01", [{"valueDate": "2026-01-02"}], True),
        (">", "answerDate", "2026-01-15", [{"valueDate": "2026-01"}], False),  # indeterminate at month precision
        ("<", "answerDateTime", "2026-01-01T10:00:00+01:00", [{"valueDateTime": "2026-01-01T09:30:00Z"}], False),
        ("<", "answerTime", "12:00:00", [{"valueTime": "08:15:00"}], True),
        (">=", "answerQuantity", {"value": 80, "system": "http://unitsofmeasure.org", "code": "kg"},
         [{"valueQuantity": {"value": 80, "system": "http://unitsofmeasure.org", "code": "kg"}}], True),
        (">=", "answerQuantity", {"value": 80, "system": "http://unitsofmeasure.org", "code": "kg"},
         [{"valueQuantity": {"value": 200, "system": "http://unitsofmeasure.org", "code": "[lb_av]"}}], False),  # units differ
        ("<=", "answerString", "m", [{"valueString": "b"}], True),
        (">", "answerCoding", {"system": "s", "code": "c"}, [{"valueCoding": {"system": "s", "code": "d"}}], False),  # no order
    ],
)
def test_enable_when_operator_semantics(operator: str, expected_key: str, expected: Any, answers: list, result: bool) -> None:
    assert evaluate(operator, expected_key, expected, answers) is result


# -- values: length, range, units, attachments, text ---------------------------------------------------------


def test_answer_longer_than_max_length(terminology: LocalTerminology) -> None:
    response = answer(complete("async-visit-intake"), "prior-episodes-detail", {"valueString": SECRET + "x" * 500})
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.code, issue.expression) == ("qr-max-length", "value", f"{path_of(response, 'prior-episodes-detail')}.answer[0]")
    assert "500" in issue.diagnostics and SECRET not in issue.diagnostics


def test_answer_of_exactly_max_length_is_fine(terminology: LocalTerminology) -> None:
    response = answer(complete("async-visit-intake"), "prior-episodes-detail", {"valueString": "x" * 500})
    assert validate(response, terminology) == []


def test_integer_above_max_value(terminology: LocalTerminology) -> None:
    response = answer(complete("async-visit-intake"), "severity", {"valueInteger": 11})
    assert only_error(validate(response, terminology)).rule == "qr-answer-range"


def test_quantity_in_a_unit_not_offered(terminology: LocalTerminology) -> None:
    response = answer(complete("async-visit-intake"), "body-weight", {"valueQuantity": {"value": 9, "system": "http://unitsofmeasure.org", "code": "[stone_av]"}})
    assert only_error(validate(response, terminology)).rule == "qr-answer-unit"


def _photo(response: dict) -> dict:
    return qr_item(response, "photo")["answer"][0]["valueAttachment"]


def test_attachment_without_content_type(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    _photo(response).pop("contentType")
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.code) == ("qr-attachment", "required")


def test_attachment_of_a_type_the_item_does_not_allow(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    _photo(response)["contentType"] = "application/pdf"
    assert only_error(validate(response, terminology)).rule == "qr-attachment"


def test_attachment_larger_than_max_size(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    _photo(response)["size"] = 10485761
    assert only_error(validate(response, terminology)).rule == "qr-attachment"


def test_inline_attachment_data_consistent_with_size_and_hash(terminology: LocalTerminology) -> None:
    import base64
    import hashlib

    data = b"\xff\xd8\xff\xe0 not really a jpeg"
    response = complete("async-visit-intake")
    _photo(response).update(
        data=base64.b64encode(data).decode(), size=len(data), hash=base64.b64encode(hashlib.sha1(data).digest()).decode()
    )
    assert validate(response, terminology) == []
    _photo(response)["size"] = len(data) + 1
    _photo(response)["hash"] = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    assert [i.rule for i in errors(validate(response, terminology))] == ["qr-attachment", "qr-attachment"]


def test_item_text_differing_from_the_questionnaire(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    qr_item(response, "reason")["text"] = "Why are you here?"
    issue = only_error(validate(response, terminology))
    assert (issue.rule, issue.expression) == ("qr-text-mismatch", f"{path_of(response, 'reason')}.text")


# -- the Questionnaire claimed ---------------------------------------------------------------------------


def test_response_claiming_another_questionnaire(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    issues = validate_response(response, intake("uti-intake"), terminology)
    assert [(i.severity, i.rule, i.expression) for i in issues] == [("error", "qr-questionnaire-mismatch", "QuestionnaireResponse.questionnaire")]


def test_response_claiming_another_version(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    response["questionnaire"] = f"{CANONICAL_BASE}/Questionnaire/async-visit-intake|2.0.0"
    assert only_error(validate(response, terminology, "async-visit-intake")).rule == "qr-questionnaire-mismatch"


def test_response_claiming_the_questionnaire_without_a_version(terminology: LocalTerminology) -> None:
    response = complete("async-visit-intake")
    response["questionnaire"] = f"{CANONICAL_BASE}/Questionnaire/async-visit-intake"
    assert validate(response, terminology) == []


def test_not_a_questionnaire_response(terminology: LocalTerminology) -> None:
    issues = validate_response({"resourceType": "Patient"}, intake("uti-intake"), terminology)
    assert [i.rule for i in issues] == ["qr-resource-type"]


# -- diagnostics, Questionnaire checks, the index -------------------------------------------------------------


def test_diagnostics_never_echo_answer_values(terminology: LocalTerminology) -> None:
    response = male(complete("async-visit-intake"))
    answer(response, "reason", {"valueString": SECRET * 200})
    answer(response, "severity", {"valueString": SECRET})
    answer(response, "pregnancy-status", {"valueCoding": {"system": SECRET, "code": SECRET}})
    answer(response, "patient-state", coding(USPS, SECRET))
    response["item"].append({"linkId": f"{SECRET} my answer has spaces", "answer": [{"valueString": SECRET}]})
    issues = validate(response, terminology)
    assert len(errors(issues)) >= 5
    assert all(SECRET not in i.diagnostics for i in issues)


def test_questionnaire_with_duplicate_link_ids_cannot_be_used(terminology: LocalTerminology) -> None:
    q = intake("uti-intake")
    q["version"] = "0.0.1-duplicate"
    q["item"][1]["item"][0]["linkId"] = "frequency"
    assert [i.rule for i in check_questionnaire(q)] == ["que-2"]
    response = complete("uti-intake")
    response["questionnaire"] = f"{q['url']}|{q['version']}"
    assert [i.rule for i in validate_response(response, q, terminology)] == ["que-2"]


def _uti_treated_already(q: dict) -> dict:
    """uti-intake's `treated-already`: enabled when symptom-days > 7."""
    return q["item"][1]["item"][7]


def _group_without_items(q: dict) -> None:
    q["item"][0].pop("item")


def _exists_without_boolean(q: dict) -> None:
    _uti_treated_already(q)["enableWhen"] = [{"question": "symptom-days", "operator": "exists", "answerInteger": 1}]


def _two_conditions_without_behavior(q: dict) -> None:
    _uti_treated_already(q)["enableWhen"].append({"question": "dysuria", "operator": "=", "answerBoolean": True})


def _condition_on_an_undefined_item(q: dict) -> None:
    _uti_treated_already(q)["enableWhen"][0]["question"] = "no-such-item"


def _condition_that_can_never_match(q: dict) -> None:
    _uti_treated_already(q)["enableWhen"] = [{"question": "symptom-days", "operator": ">", "answerString": "7"}]


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (_group_without_items, "que-1"),
        (_exists_without_boolean, "que-7"),
        (_two_conditions_without_behavior, "que-12"),
        (_condition_on_an_undefined_item, "que-enablewhen-target"),
        (_condition_that_can_never_match, "que-enablewhen-type"),
    ],
)
def test_questionnaire_rule_broken(change, rule: str) -> None:
    q = intake("uti-intake")
    assert _uti_treated_already(q)["linkId"] == "treated-already"
    change(q)
    assert [i.rule for i in check_questionnaire(q)] == [rule]


def test_questionnaire_index_is_cached_by_url_version_and_stored_version() -> None:
    clear_index_cache()
    q = intake("ed-intake")
    first = questionnaire_index(q)
    assert questionnaire_index(intake("ed-intake")) is first
    q["meta"] = {"versionId": "2"}
    assert questionnaire_index(q) is not first
