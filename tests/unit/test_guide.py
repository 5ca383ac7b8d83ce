"""The implementation guide in profiles/: it loads, every StructureDefinition gets a generated
snapshot, every resource is valid FHIR R4, and every example in profiles/examples/ validates as
its manifest says (valid ones clean, each invalid one with the issue it was written for)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest

from fhir_server.validation.issues import has_errors
from fhir_server.validation.service import Validation
from fhir_server.validation.structure import validate_resource
from profiles.canonical import CANONICAL_BASE
from profiles.guide import IG_URL, load_guide

EXAMPLES = Path(__file__).resolve().parents[2] / "profiles" / "examples"
MANIFEST = json.loads((EXAMPLES / "manifest.json").read_text())
# Definitions of Da Vinci Plan-Net 1.1.0 we ship copies of (under their own urls), so the licence
# extension on Practitioner.qualification can be checked.
PLAN_NET = "http://hl7.org/fhir/us/davinci-pdex-plan-net"
FOREIGN = {f"{PLAN_NET}/StructureDefinition/practitioner-qualification", f"{PLAN_NET}/CodeSystem/QualificationStatusCS",
           f"{PLAN_NET}/ValueSet/QualificationStatusVS"}


@lru_cache(maxsize=1)
def validation() -> Validation:
    return Validation(load_guide())


def test_every_guide_resource_is_structurally_valid_r4():
    for resource in load_guide().resources:
        validate_resource(resource, resource["resourceType"])


def test_every_canonical_is_under_the_project_base_except_the_shipped_plan_net_extension():
    for resource in load_guide().resources:
        if resource["url"] in FOREIGN:
            continue
        assert resource["url"].startswith(CANONICAL_BASE + "/"), resource["url"]
        assert resource["url"].rsplit("/", 1)[1] == resource["id"]


def test_every_structure_definition_has_its_differential_and_a_generated_snapshot():
    sds = load_guide().of_type("StructureDefinition")
    assert len(sds) >= 12
    for sd in sds:
        assert sd["differential"]["element"], sd["id"]
        snapshot = sd["snapshot"]["element"]
        assert snapshot[0]["path"] == sd["type"]
        ids = [e["id"] for e in snapshot]
        assert len(ids) == len(set(ids)), sd["id"]
        for element in sd["differential"]["element"]:
            assert element["id"] in ids, (sd["id"], element["id"])


def test_the_implementation_guide_lists_every_resource_of_the_guide():
    guide = load_guide()
    ig = guide.by_url[IG_URL]
    listed = {r["reference"]["reference"] for r in ig["definition"]["resource"]}
    assert listed == {f"{r['resourceType']}/{r['id']}" for r in guide.resources if r is not ig}


def test_us_core_is_the_base_of_the_patient_and_prescription_profiles():
    guide = load_guide()
    assert guide.structure_definition(f"{CANONICAL_BASE}/StructureDefinition/async-visit-patient")["baseDefinition"] == \
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
    assert guide.structure_definition(f"{CANONICAL_BASE}/StructureDefinition/async-prescription")["baseDefinition"] == \
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-medicationrequest"


def test_every_profile_has_a_valid_and_an_invalid_example():
    profiles = {sd["url"] for sd in load_guide().of_type("StructureDefinition") if sd["kind"] == "resource"}
    valid = {e["profile"] for e in MANIFEST if e["valid"]}
    invalid = {e["profile"] for e in MANIFEST if not e["valid"]}
    assert profiles <= valid and profiles <= invalid


@pytest.mark.parametrize("entry", [e for e in MANIFEST if e["valid"]], ids=lambda e: e["file"])
def test_valid_example_validates_clean(entry):
    resource = json.loads((EXAMPLES / entry["file"]).read_text())
    validate_resource(resource, resource["resourceType"])
    issues = validation().validate(resource, profiles=(entry["profile"],))
    assert not has_errors(issues), [i for i in issues if i.severity == "error"]


@pytest.mark.parametrize("entry", [e for e in MANIFEST if not e["valid"]], ids=lambda e: e["file"])
def test_invalid_example_fails_with_the_expected_issue(entry):
    resource = json.loads((EXAMPLES / entry["file"]).read_text())
    validate_resource(resource, resource["resourceType"])  # broken against the profile only
    issues = validation().validate(resource, profiles=(entry["profile"],))
    errors = [i for i in issues if i.severity in ("error", "fatal")]
    for expected in entry["expect"]:
        assert any(i.rule == expected["rule"] and i.expression.startswith(expected["expression"]) for i in errors), \
            (expected, [(i.rule, i.expression) for i in errors])


def test_every_invariant_of_the_guide_can_be_evaluated():
    from fhir_server.validation.profile import unevaluable_invariants

    assert unevaluable_invariants(load_guide().of_type("StructureDefinition"), validation().definitions) == []


def test_the_controlled_substance_list_names_its_sources_and_schedules():
    data = json.loads((Path(__file__).resolve().parents[2] / "profiles" / "controlled-substances.json").read_text())
    assert data["source"]
    schedules = {e["schedule"] for e in data["entries"]}
    assert schedules <= {"CI", "CII", "CIII", "CIV", "CV"} and {"CII", "CIV"} <= schedules
    by_name = {e["name"]: e for e in data["entries"]}
    assert by_name["oxycodone"]["schedule"] == "CII"
