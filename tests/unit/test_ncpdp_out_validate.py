"""The project's own schema for the messages it sends (mappers/ncpdp/validate.py and schema/):
structural XSD plus Schematron cross-field rules, each shown to catch what it is for."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from lxml import etree

from mappers.ncpdp.cancelrx import build_cancelrx
from mappers.ncpdp.newrx import build_newrx
from mappers.ncpdp.validate import MessageSchemaError, validate_message
from tests.fixtures.erx import context, medication_request

SENT = datetime(2026, 11, 20, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def newrx() -> bytes:
    return build_newrx(context("triamcinolone-cream"), sender_id="TELEHEALTH01", message_id="m1", sent_time=SENT)


def edited(xml: bytes, edit) -> bytes:
    root = etree.fromstring(xml)
    edit(root)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def errors(xml: bytes) -> list[str]:
    with pytest.raises(MessageSchemaError) as caught:
        validate_message(xml)
    return caught.value.errors


def test_a_built_message_is_valid(newrx):
    validate_message(newrx)


def set_text(xpath, value):
    def edit(root):
        root.xpath(xpath)[0].text = value
    return edit


def remove(xpath):
    def edit(root):
        element = root.xpath(xpath)[0]
        element.getparent().remove(element)
    return edit


@pytest.mark.parametrize("edit, fragment", [
    (remove("//Sig"), "Sig"),
    (remove("//Pharmacy/Identification/NCPDPID"), "NCPDPID"),
    (remove("//Header/MessageID"), "MessageID"),
    (set_text("//Header/MessageID", "x" * 36), "MessageID"),
    (set_text("//Pharmacy/Identification/NCPDPID", "099901"), "NCPDPID"),
    (set_text("//Prescriber//NPI", "12345"), "NPI"),
    (set_text("//QuantityUnitOfMeasure/Code", "tablet"), "Code"),
    (set_text("//Substitutions", "2"), "Substitutions"),
    (set_text("//NumberOfRefills", "-1"), "NumberOfRefills"),
    (set_text("//DaysSupply", "1.5"), "DaysSupply"),
    (set_text("//Diagnosis/Primary/Code", "L30.9"), "Code"),
    (set_text("//Diagnosis/Primary/Qualifier", "ABX"), "Qualifier"),
    (set_text("//SigText", "x" * 1001), "SigText"),
    (set_text("//DrugDescription", "x" * 106), "DrugDescription"),
    (set_text("//DrugDescription", "   "), "DrugDescription"),
    (set_text("//WrittenDate/Date", "11/23/2026"), "Date"),
    (set_text("//HumanPatient/Gender", "X"), "Gender"),
    (set_text("//Quantity/CodeListQualifier", "87"), "CodeListQualifier"),
])
def test_schema_catches(newrx, edit, fragment):
    found = errors(edited(newrx, edit))
    assert any(fragment in e for e in found), found


def test_schema_enforces_sample_element_order(newrx):
    def swap(root):
        med = root.find(".//MedicationPrescribed")
        med.insert(0, med.find("Quantity"))
    assert any("Quantity" in e or "DrugDescription" in e for e in errors(edited(newrx, swap)))


def test_schema_refuses_a_namespace(newrx):
    text = newrx.replace(b"<Message ", b'<Message xmlns="http://www.ncpdp.org/schema/SCRIPT" ')
    assert errors(text)


def test_schematron_header_to_must_be_the_pharmacy(newrx):
    found = errors(edited(newrx, set_text("//Header/To", "1234567")))
    assert any("Header/To must be the pharmacy's NCPDPID" in e for e in found)


def test_schematron_schedule_ii_without_refills_and_with_dea():
    mr = medication_request("oxycodone-schedule-ii")
    mr["dispenseRequest"]["numberOfRepeatsAllowed"] = 0
    xml = build_newrx(context(mr), sender_id="S", message_id="m1", sent_time=SENT)
    found = errors(edited(xml, set_text("//NumberOfRefills", "2")))
    assert any("Schedule II allows no refills" in e for e in found)
    found = errors(edited(xml, remove("//DEANumber")))
    assert any("DEANumber" in e for e in found)


def test_schematron_restricted_quantity_units(newrx):
    assert any("C64933" in e for e in errors(edited(newrx, set_text("//QuantityUnitOfMeasure/Code", "C64933"))))


def test_schematron_cancel_needs_relates_to():
    mr = medication_request("amlodipine-tablet")
    mr["status"] = "cancelled"
    xml = build_cancelrx(context(mr), original_message_id="n1", sender_id="S", message_id="c1", sent_time=SENT)
    assert any("relates to" in e for e in errors(edited(xml, remove("//RelatesToMessageID"))))


def test_not_well_formed_is_reported():
    assert "not well-formed" in errors(b"<Message><Header></Message>")[0]


def test_unknown_version():
    with pytest.raises(ValueError, match="no schema"):
        validate_message(b"<Message/>", version="2023011")


def test_concurrent_validation_keeps_each_threads_errors_apart(newrx):
    """Compiled schemas are per thread: their error logs and reports must not mix."""
    from concurrent.futures import ThreadPoolExecutor

    bad = edited(newrx, set_text("//Header/To", "1234567"))

    def check(i):
        if i % 2:
            validate_message(newrx)
            return None
        return errors(bad)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(check, range(40)))
    assert all(r is None for r in results[1::2])
    assert all(any("Header/To" in e for e in r) for r in results[0::2])
