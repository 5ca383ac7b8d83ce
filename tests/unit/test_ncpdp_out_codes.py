"""The code tables the mappers need (mappers/ncpdp/codes.py, research/ncpdp.md section 7)."""

from __future__ import annotations

import pytest

from mappers.ncpdp import codes


@pytest.mark.parametrize("quantity, code", [
    ({"system": codes.UCUM, "code": "{tbl}", "unit": "tablet"}, "C48542"),
    ({"unit": " Tablets "}, "C48542"),
    ({"system": codes.UCUM, "code": "{cap}"}, "C48480"),
    ({"system": codes.UCUM, "code": "mL"}, "C28254"),
    ({"unit": "ML"}, "C28254"),
    ({"system": codes.UCUM, "code": "g"}, "C48155"),
    ({"unit": "grams"}, "C48155"),
    ({"unit": "orally  disintegrating tablet"}, "C69071"),
    ({"system": codes.NCI_THESAURUS, "code": "C48524"}, "C48524"),
    ({"system": codes.UCUM, "code": "{each}"}, None),
    ({"system": codes.UCUM, "code": "1"}, None),
    ({"system": codes.UCUM, "code": "mg"}, None),
    ({"system": codes.UCUM, "code": "L"}, None),
    ({"system": codes.NCI_THESAURUS, "code": "C38046"}, None),
    ({"system": codes.NCI_THESAURUS, "code": "C64933"}, None),
    ({"system": codes.NCI_THESAURUS, "code": "C48473"}, None),
    ({"system": codes.NCI_THESAURUS, "unit": "tablet"}, None),  # an NCI quantity is taken by its code only
    ({}, None),
])
def test_quantity_unit_code(quantity, code):
    assert codes.quantity_unit_code(quantity) == code


def test_no_mapping_leads_to_a_restricted_or_sunset_code():
    produced = set(codes.QUANTITY_UNIT_BY_FHIR_UNIT.values())
    assert produced <= set(codes.QUANTITY_UNIT_OF_MEASURE)
    assert not produced & (codes.RESTRICTED_QUANTITY_UNITS | codes.SUNSET_QUANTITY_UNITS)
    assert all(code.startswith("C") and code[1:].isdigit() for code in codes.QUANTITY_UNIT_OF_MEASURE)


@pytest.mark.parametrize("rxcui, name, tty", [
    ("197361", None, "SCD"),
    ("999999", "amlodipine 5 MG Oral Tablet", "SCD"),
    ("999999", "amlodipine 5 MG Oral Tablet [Norvasc]", "SBD"),
    ("999999", "{28 (norethindrone 0.35 MG Oral Tablet) } Pack", "GPCK"),
    ("999999", "{28 (norethindrone 0.35 MG Oral Tablet) } Pack [Camila]", "BPCK"),
    ("999999", "amlodipine", None),
    ("999999", "Norvasc", None),
    ("999999", None, None),
])
def test_rxnorm_term_type(rxcui, name, tty):
    assert codes.rxnorm_tty(rxcui, name) == tty


def test_pack_term_types_use_the_script_spelling():
    assert codes.DRUG_DB_QUALIFIER_BY_TTY == {"SCD": "SCD", "SBD": "SBD", "GPCK": "GPK", "BPCK": "BPK"}


@pytest.mark.parametrize("value, code", [
    ("II", "C48675"), ("CII", "C48675"), ("C-II", "C48675"), ("2", "C48675"), ("Schedule IV", "C48677"),
    ("schedule v", "C48679"), ("C48676", "C48676"), ("C38046", "C38046"),
    ({"system": codes.NCI_THESAURUS, "code": "C48677"}, "C48677"),
    ({"system": codes.V2_CONTROLLED_SCHEDULE, "code": "III"}, "C48676"),
    ({"system": "urn:other", "code": "II"}, None),
    ({"system": codes.NCI_THESAURUS, "code": "C48542"}, None),
    ("VI", None), ("", None), (None, None), (2, None),
])
def test_dea_schedule_code(value, code):
    assert codes.dea_schedule_code(value) == code


def test_schedule_tables_agree():
    assert set(codes.MAX_REFILLS_BY_SCHEDULE) <= set(codes.DEA_SCHEDULE_CODES)
    assert codes.MAX_REFILLS_BY_SCHEDULE[codes.SCHEDULE_II] == 0
    assert set(codes.DEA_SCHEDULE_BY_RXCUI.values()) <= set(codes.DEA_SCHEDULE_CODES)
