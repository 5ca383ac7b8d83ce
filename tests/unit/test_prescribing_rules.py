"""The prescribing rules of an asynchronous visit (fhir_server/visit/prescribing): each rule allowed
and refused, on the profiles' coherent example visit (deep-copied and changed), the shipped intakes
(tests/fixtures/questionnaire/*-complete.json) and the controlled-substance list; plus the
configuration (a rule turned off is skipped, an unknown rule id is an error)."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import pytest

from fhir_server.visit.prescribing import (RULES, PrescribingContext, RuleConfigError, build_rule_set,
                                           load_rule_data, load_rule_set)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "profiles" / "examples"
INTAKES = ROOT / "tests" / "fixtures" / "questionnaire"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NOW = datetime(2026, 11, 29, 17, 30, tzinfo=timezone.utc)


@lru_cache(maxsize=None)
def _read(path: Path) -> str:
    return path.read_text()


def example(name: str) -> dict:
    return json.loads(_read(EXAMPLES / f"{name}.json"))


def intake(kind: str) -> dict:
    """A completed intake of the example visit: the general one, or a complete uti/ed response."""
    if kind == "general":
        return example("intake-questionnaireresponse-valid")
    qr = json.loads(_read(INTAKES / f"{kind}-intake-complete.json"))
    qr["encounter"] = {"reference": "Encounter/example-visit"}
    qr["subject"] = {"reference": "Patient/example-patient"}
    return qr


def set_answer(qr: dict, link_id: str, answer: dict, parent: str | None = None) -> dict:
    """Set the answer of every item with this linkId; add the item under `parent` when it is absent."""
    found = False

    def walk(items):
        nonlocal found
        for item in items or []:
            if item.get("linkId") == link_id:
                item["answer"] = [answer]
                found = True
            walk(item.get("item"))

    walk(qr["item"])
    if not found:
        def add(items):
            for item in items or []:
                if item.get("linkId") == parent:
                    item.setdefault("item", []).append({"linkId": link_id, "answer": [answer]})
                    return True
                if add(item.get("item")):
                    return True
            return False
        assert parent and add(qr["item"]), f"no item {link_id} and no parent {parent}"
    return qr


def medication(rxcui: str | None, display: str | None = None, text: str | None = None) -> dict:
    concept: dict = {}
    if rxcui:
        concept["coding"] = [{"system": RXNORM, "code": rxcui, **({"display": display} if display else {})}]
    if text:
        concept["text"] = text
    return concept


def context(*, medication_concept: dict | None = None, intakes: list[dict] | None = None, **changes) -> PrescribingContext:
    """The examples' coherent visit: Dr. Chen (licensed in CA, OR) prescribing triamcinolone cream in
    the in-progress rash visit of a patient in CA, with its completed general intake."""
    mr = example("async-prescription-valid")
    if medication_concept is not None:
        mr["medicationCodeableConcept"] = medication_concept
    fields = dict(medication_request=mr, encounter=example("async-visit-encounter-valid"),
                  location=example("patient-location-valid"), practitioner=example("licensed-practitioner-valid"),
                  task=example("visit-review-task-valid"),
                  intake_responses=intakes if intakes is not None else [intake("general")], now=NOW)
    fields.update(changes)
    return PrescribingContext(**fields)


@pytest.fixture(scope="module")
def rules():
    return load_rule_set()


@pytest.fixture(scope="module")
def data():
    return load_rule_data()


def run(rule_id: str, ctx: PrescribingContext, data, **params):
    rule = RULES[rule_id]
    return rule.run(ctx, data, {**copy.deepcopy(dict(rule.defaults)), **params})


def rule_ids(refusals) -> list[str]:
    return [r.rule_id for r in refusals]


NITROFURANTOIN = medication("7454", "nitrofurantoin")
TMP_SMX = medication("10831", "sulfamethoxazole / trimethoprim", "Bactrim DS")
SILDENAFIL = medication("136411", "sildenafil", "Sildenafil 50 mg tablet")


# --- the whole rule set ---------------------------------------------------------------------------------

def test_the_examples_coherent_visit_is_allowed(rules):
    assert rules.check(context()) == []


def test_a_protocol_medication_with_its_intake_is_allowed(rules):
    assert rules.check(context(medication_concept=NITROFURANTOIN, intakes=[intake("general"), intake("uti")])) == []


def test_every_refusal_names_its_rule_and_an_expression_in_the_medication_request(rules):
    ctx = context(medication_concept=medication("7804", "oxycodone"), encounter=None, intakes=[])
    refusals = rules.check(ctx)
    assert {"encounter-is-async-visit", "no-controlled-substance"} <= set(rule_ids(refusals))
    assert all(r.expression.startswith("MedicationRequest.") and r.message for r in refusals)


def test_a_rule_that_fails_on_malformed_input_refuses_instead_of_raising(rules):
    ctx = context()
    ctx.encounter["class"] = "VR"  # a string where a Coding belongs
    refusals = rules.check(ctx)
    assert [(r.rule_id, r.expression) for r in refusals] == [("encounter-is-async-visit", "MedicationRequest")]


# --- licence-in-patient-state -------------------------------------------------------------------------

def test_licence_in_the_patients_state_is_allowed(data):
    assert run("licence-in-patient-state", context(), data) == []


def test_licence_in_another_state_only_is_refused(data):
    location = example("patient-location-valid")
    location["address"]["state"] = "WA"
    refusals = run("licence-in-patient-state", context(location=location), data)
    assert rule_ids(refusals) == ["licence-in-patient-state"]
    assert refusals[0].expression == "MedicationRequest.requester"
    assert "WA" not in refusals[0].message  # no patient data


def test_licence_expired_on_authored_on_is_refused(data):
    ctx = context()
    ctx.medication_request["authoredOn"] = "2027-07-01T09:00:00-07:00"  # CA licence ends 2027-06-30
    assert rule_ids(run("licence-in-patient-state", ctx, data)) == ["licence-in-patient-state"]


def test_licence_period_end_day_is_covered_and_now_is_used_without_authored_on(data):
    ctx = context(now=datetime(2027, 6, 30, 23, 0, tzinfo=timezone.utc))
    del ctx.medication_request["authoredOn"]
    assert run("licence-in-patient-state", ctx, data) == []
    late = context(now=datetime(2027, 7, 2, tzinfo=timezone.utc))
    del late.medication_request["authoredOn"]
    assert rule_ids(run("licence-in-patient-state", late, data)) == ["licence-in-patient-state"]


def test_licence_with_inactive_status_is_refused(data):
    practitioner = example("licensed-practitioner-valid")
    for q in practitioner["qualification"][:2]:
        q["extension"][0]["extension"][0]["valueCode"] = "inactive"
    assert rule_ids(run("licence-in-patient-state", context(practitioner=practitioner), data)) == [
        "licence-in-patient-state"]


def test_licence_of_a_practitioner_other_than_the_requester_is_refused(data):
    practitioner = example("licensed-practitioner-valid")
    practitioner["id"] = "someone-else"
    assert rule_ids(run("licence-in-patient-state", context(practitioner=practitioner), data)) == [
        "licence-in-patient-state"]


def test_licence_without_the_patients_state_is_refused(data):
    location = example("patient-location-valid")
    del location["address"]["state"]
    refusals = run("licence-in-patient-state", context(location=location), data)
    assert [r.expression for r in refusals] == ["MedicationRequest.encounter"]


# --- encounter-is-async-visit -------------------------------------------------------------------------

def test_encounter_of_an_async_visit_under_review_by_the_requester_is_allowed(data):
    assert run("encounter-is-async-visit", context(), data) == []


def test_encounter_arrived_is_allowed(data):
    encounter = example("async-visit-encounter-valid")
    encounter["status"] = "arrived"
    assert run("encounter-is-async-visit", context(encounter=encounter), data) == []


def test_encounter_missing_is_refused(data):
    ctx = context(encounter=None)
    del ctx.medication_request["encounter"]
    refusals = run("encounter-is-async-visit", ctx, data)
    assert [(r.rule_id, r.expression) for r in refusals] == [("encounter-is-async-visit", "MedicationRequest.encounter")]


@pytest.mark.parametrize("status", ["planned", "finished", "cancelled"])
def test_encounter_not_submitted_or_already_finished_is_refused(data, status):
    encounter = example("async-visit-encounter-valid")
    encounter["status"] = status
    assert rule_ids(run("encounter-is-async-visit", context(encounter=encounter), data)) == ["encounter-is-async-visit"]


def test_encounter_of_another_patient_is_refused(data):
    encounter = example("async-visit-encounter-valid")
    encounter["subject"] = {"reference": "Patient/someone-else"}
    refusals = run("encounter-is-async-visit", context(encounter=encounter), data)
    assert [r.expression for r in refusals] == ["MedicationRequest.subject"]


def test_encounter_not_virtual_is_refused(data):
    encounter = example("async-visit-encounter-valid")
    encounter["class"]["code"] = "AMB"
    assert rule_ids(run("encounter-is-async-visit", context(encounter=encounter), data)) == ["encounter-is-async-visit"]


def test_review_task_owned_by_another_clinician_is_refused(data):
    task = example("visit-review-task-valid")
    task["owner"] = {"reference": "Practitioner/someone-else"}
    refusals = run("encounter-is-async-visit", context(task=task), data)
    assert [r.expression for r in refusals] == ["MedicationRequest.requester"]


@pytest.mark.parametrize("status", ["requested", "completed"])
def test_review_task_not_in_progress_is_refused(data, status):
    task = example("visit-review-task-valid")
    task["status"] = status
    assert rule_ids(run("encounter-is-async-visit", context(task=task), data)) == ["encounter-is-async-visit"]


def test_review_task_missing_is_refused(data):
    assert rule_ids(run("encounter-is-async-visit", context(task=None), data)) == ["encounter-is-async-visit"]


# --- evaluation-fits-medication -----------------------------------------------------------------------

def test_evaluation_uti_intake_for_nitrofurantoin_is_allowed(data):
    ctx = context(medication_concept=NITROFURANTOIN, intakes=[intake("uti")])
    assert run("evaluation-fits-medication", ctx, data) == []


def test_evaluation_ed_intake_for_a_pde5_inhibitor_by_name_only_is_allowed(data):
    ctx = context(medication_concept=medication(None, text="Tadalafil 5 mg tablet"), intakes=[intake("ed")])
    assert run("evaluation-fits-medication", ctx, data) == []


def test_evaluation_general_intake_only_for_sildenafil_is_refused(data):
    refusals = run("evaluation-fits-medication", context(medication_concept=SILDENAFIL), data)
    assert [(r.rule_id, r.expression) for r in refusals] == [
        ("evaluation-fits-medication", "MedicationRequest.medicationCodeableConcept")]


def test_evaluation_of_another_protocol_is_refused(data):
    ctx = context(medication_concept=SILDENAFIL, intakes=[intake("uti")])
    assert rule_ids(run("evaluation-fits-medication", ctx, data)) == ["evaluation-fits-medication"]


def test_evaluation_intake_not_completed_is_refused(data):
    qr = intake("ed")
    qr["status"] = "in-progress"
    ctx = context(medication_concept=SILDENAFIL, intakes=[qr])
    assert rule_ids(run("evaluation-fits-medication", ctx, data)) == ["evaluation-fits-medication"]


def test_evaluation_intake_of_another_visit_is_refused(data):
    qr = intake("ed")
    qr["encounter"] = {"reference": "Encounter/another-visit"}
    ctx = context(medication_concept=SILDENAFIL, intakes=[qr])
    assert rule_ids(run("evaluation-fits-medication", ctx, data)) == ["evaluation-fits-medication"]


def test_evaluation_questionnaire_version_is_ignored(data):
    qr = intake("ed")
    qr["questionnaire"] = "http://fhir-async-telehealth.example/Questionnaire/ed-intake|2.0.0"
    assert run("evaluation-fits-medication", context(medication_concept=SILDENAFIL, intakes=[qr]), data) == []


def test_evaluation_unlisted_medication_without_any_intake_is_refused(data):
    assert rule_ids(run("evaluation-fits-medication", context(intakes=[]), data)) == ["evaluation-fits-medication"]


# --- no-contraindication ------------------------------------------------------------------------------

def test_contraindication_none_for_sildenafil_is_allowed(data):
    assert run("no-contraindication", context(medication_concept=SILDENAFIL, intakes=[intake("ed")]), data) == []


@pytest.mark.parametrize("link_id", ["nitrates", "riociguat", "recent-mi-stroke"])
def test_contraindication_ed_answer_blocks_every_pde5_inhibitor(data, link_id):
    qr = set_answer(intake("ed"), link_id, {"valueBoolean": True})
    for concept in (SILDENAFIL, medication(None, text="Cialis 20 mg"), medication("999999", "vardenafil 10 MG Oral Tablet"),
                    medication(None, text="avanafil 100 mg")):
        refusals = run("no-contraindication", context(medication_concept=concept, intakes=[qr]), data)
        assert rule_ids(refusals) == ["no-contraindication"], concept
        assert refusals[0].detail == f"ed-{link_id}" and link_id not in refusals[0].message


def test_contraindication_by_blood_pressure_reading(data):
    qr = set_answer(intake("ed"), "bp-systolic", {"valueInteger": 85})
    refusals = run("no-contraindication", context(medication_concept=SILDENAFIL, intakes=[qr]), data)
    assert [r.detail for r in refusals] == ["ed-low-blood-pressure"]


def test_contraindication_sulfa_allergy_blocks_tmp_smx_not_nitrofurantoin(data):
    qr = intake("uti")  # the complete UTI response reports a sulfa allergy
    assert [r.detail for r in run("no-contraindication", context(medication_concept=TMP_SMX, intakes=[qr]), data)] == [
        "uti-allergy-sulfa"]
    assert run("no-contraindication", context(medication_concept=NITROFURANTOIN, intakes=[qr]), data) == []


def test_contraindication_pregnancy_blocks_tmp_smx_and_nitrofurantoin_not_fosfomycin(data):
    qr = set_answer(intake("uti"), "pregnant", {"valueBoolean": True})
    for concept in (TMP_SMX, NITROFURANTOIN):
        details = [r.detail for r in run("no-contraindication", context(medication_concept=concept, intakes=[qr]), data)]
        assert "uti-pregnant" in details
    fosfomycin = medication(None, text="Fosfomycin 3 g granules")
    assert run("no-contraindication", context(medication_concept=fosfomycin, intakes=[qr]), data) == []


def test_contraindication_pregnancy_in_the_general_intake_counts(data):
    general = set_answer(intake("general"), "pregnancy-status",
                         {"valueCoding": {"system": "http://loinc.org", "code": "LA15173-0", "display": "Pregnant"}})
    ctx = context(medication_concept=NITROFURANTOIN, intakes=[general, intake("uti")])
    assert [r.detail for r in run("no-contraindication", ctx, data)] == ["uti-pregnancy-status"]


def test_contraindication_nitrofurantoin_allergy_and_kidney_disease(data):
    allergic = set_answer(intake("uti"), "allergy-nitrofurantoin", {"valueBoolean": True}, parent="antibiotic-allergy-list")
    kidney = set_answer(intake("uti"), "kidney-disease", {"valueBoolean": True})
    assert [r.detail for r in run("no-contraindication", context(medication_concept=NITROFURANTOIN, intakes=[allergic]),
                                  data)] == ["uti-allergy-nitrofurantoin"]
    assert [r.detail for r in run("no-contraindication", context(medication_concept=NITROFURANTOIN, intakes=[kidney]),
                                  data)] == ["uti-kidney-disease"]


# --- no-controlled-substance --------------------------------------------------------------------------

def test_controlled_oxycodone_by_rxcui_is_refused(data):
    refusals = run("no-controlled-substance", context(medication_concept=medication("7804")), data)
    assert rule_ids(refusals) == ["no-controlled-substance"]
    assert "synchronous" in refusals[0].message and "II" in refusals[0].message
    assert refusals[0].expression == "MedicationRequest.medicationCodeableConcept"


def test_controlled_listed_product_whose_ingredient_is_controlled_is_refused(data):
    concept = medication("1049221")  # acetaminophen 325 MG / oxycodone hydrochloride 5 MG Oral Tablet, no display
    assert rule_ids(run("no-controlled-substance", context(medication_concept=concept), data)) == ["no-controlled-substance"]


def test_controlled_product_with_a_controlled_ingredient_in_a_contained_medication_is_refused(data):
    ctx = context()
    mr = ctx.medication_request
    del mr["medicationCodeableConcept"]
    mr["medicationReference"] = {"reference": "#med"}
    mr["contained"] = [{"resourceType": "Medication", "id": "med", "code": {"coding": [{"system": RXNORM, "code": "999999"}]},
                        "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RXNORM, "code": "7804"}]}}]}]
    refusals = run("no-controlled-substance", ctx, data)
    assert [(r.rule_id, r.expression) for r in refusals] == [
        ("no-controlled-substance", "MedicationRequest.medicationReference")]


def test_controlled_by_name_in_text_only_is_refused(data):
    concept = medication(None, text="Oxycodone 5 mg tablet")
    assert rule_ids(run("no-controlled-substance", context(medication_concept=concept), data)) == ["no-controlled-substance"]


def test_controlled_by_name_in_display_of_an_unlisted_code_is_refused(data):
    concept = medication("1234567", "alprazolam 0.5 MG Oral Tablet")
    assert rule_ids(run("no-controlled-substance", context(medication_concept=concept), data)) == ["no-controlled-substance"]


def test_controlled_by_brand_name_is_refused(data):
    concept = medication(None, text="Xanax 0.25 mg")
    assert rule_ids(run("no-controlled-substance", context(medication_concept=concept), data)) == ["no-controlled-substance"]


@pytest.mark.parametrize("concept", [
    medication("106258", "triamcinolone acetonide 1 MG/ML Topical Cream"),
    medication("161", "acetaminophen", "Acetaminophen 500 mg tablet"),  # an ingredient of listed products, not itself controlled
    medication("7242", "naloxone"),
    NITROFURANTOIN,
])
def test_controlled_list_does_not_refuse_a_non_controlled_drug(data, concept):
    assert run("no-controlled-substance", context(medication_concept=concept), data) == []


def test_controlled_unreadable_medication_reference_is_refused(data):
    ctx = context()
    del ctx.medication_request["medicationCodeableConcept"]
    ctx.medication_request["medicationReference"] = {"reference": "Medication/unknown"}
    assert rule_ids(run("no-controlled-substance", ctx, data)) == ["no-controlled-substance"]


# --- red-flags-absent ---------------------------------------------------------------------------------

def test_red_flags_absent_is_allowed(data):
    assert run("red-flags-absent", context(intakes=[intake("general"), intake("uti"), intake("ed")]), data) == []


@pytest.mark.parametrize("kind,link_id", [("general", "rf-chest-pain"), ("uti", "rf-flank-pain"), ("ed", "rf-priapism")])
def test_red_flag_answered_true_is_refused(data, kind, link_id):
    qr = set_answer(intake(kind), link_id, {"valueBoolean": True})
    refusals = run("red-flags-absent", context(intakes=[qr]), data)
    assert [(r.rule_id, r.expression) for r in refusals] == [("red-flags-absent", "MedicationRequest.encounter")]


def test_red_flags_of_an_unknown_questionnaire_are_refused(data):
    qr = intake("general")
    qr["questionnaire"] = "http://example.org/Questionnaire/unknown"
    assert rule_ids(run("red-flags-absent", context(intakes=[qr]), data)) == ["red-flags-absent"]


# --- configuration ------------------------------------------------------------------------------------

def shipped_config() -> dict:
    return json.loads((ROOT / "profiles" / "prescribing-rules.json").read_text())


def test_config_ships_every_registered_rule_enabled(rules):
    assert set(rules.enabled) == set(RULES)
    assert set(shipped_config()["rules"]) == set(RULES)


def test_config_rule_disabled_is_skipped(data):
    config = shipped_config()
    config["rules"]["no-controlled-substance"]["enabled"] = False
    rule_set = build_rule_set(config, data)
    assert "no-controlled-substance" not in rule_set.enabled
    oxycodone = context(medication_concept=medication("7804", "oxycodone"))
    assert "no-controlled-substance" in rule_ids(build_rule_set(shipped_config(), data).check(oxycodone))
    assert "no-controlled-substance" not in rule_ids(rule_set.check(oxycodone))


def test_config_parameter_changes_a_rule(data):
    config = shipped_config()
    config["rules"]["encounter-is-async-visit"]["params"]["encounterStatuses"] = ["in-progress"]
    encounter = example("async-visit-encounter-valid")
    encounter["status"] = "arrived"
    assert rule_ids(build_rule_set(config, data).check(context(encounter=encounter))) == ["encounter-is-async-visit"]


def test_config_unknown_rule_id_is_an_error(data):
    config = shipped_config()
    config["rules"]["no-weekend-prescribing"] = {"enabled": True}
    with pytest.raises(RuleConfigError, match="no-weekend-prescribing"):
        build_rule_set(config, data)


def test_config_unknown_parameter_is_an_error(data):
    config = shipped_config()
    config["rules"]["licence-in-patient-state"]["params"]["licenseStatus"] = ["active"]
    with pytest.raises(RuleConfigError, match="licenseStatus"):
        build_rule_set(config, data)


def test_config_file_with_an_unknown_rule_id_fails_at_load(tmp_path):
    config = shipped_config()
    config["rules"]["typo-rule"] = {"enabled": False}
    path = tmp_path / "prescribing-rules.json"
    path.write_text(json.dumps(config))
    with pytest.raises(RuleConfigError, match="typo-rule"):
        load_rule_set(path)


def test_protocol_naming_a_linkid_the_intake_does_not_have_fails_at_load(tmp_path):
    profiles = tmp_path / "profiles"
    (profiles / "questionnaires").mkdir(parents=True)
    for q in (ROOT / "profiles" / "questionnaires").glob("*.json"):
        (profiles / "questionnaires" / q.name).write_text(q.read_text())
    (profiles / "controlled-substances.json").write_text((ROOT / "profiles" / "controlled-substances.json").read_text())
    protocols = json.loads((ROOT / "profiles" / "prescribing-protocols.json").read_text())
    protocols["protocols"][1]["contraindications"][0]["when"][0]["linkId"] = "nitrate"
    (profiles / "prescribing-protocols.json").write_text(json.dumps(protocols))
    with pytest.raises(RuleConfigError, match="'nitrate'"):
        load_rule_set(shipped_config(), profiles_dir=profiles)
