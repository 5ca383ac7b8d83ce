"""Check an outbound SCRIPT message against this project's own schema (research/ncpdp.md section 9).

Two layers, both over the messages we send (NewRx, CancelRx, RxRenewalResponse):
- schema/script_<version>.xsd, a structural XSD written from ncpdp.md (the NCPDP XSDs are licensed
  and not in this repository), checked with lxml.etree.XMLSchema;
- schema/script_<version>.sch, ISO Schematron for the cross-field rules an XSD cannot express
  (Header/To = the pharmacy's NCPDPID, Schedule II has no refills, a controlled substance
  carries a DEA number ...), checked with lxml.isoschematron.

If the licensed NCPDP XSD is ever obtained, keep it outside the repository (ncpdp.md 9 item 5).
"""

from __future__ import annotations

import threading
from pathlib import Path

from lxml import etree, isoschematron

SCHEMA_DIR = Path(__file__).with_name("schema")


class MessageSchemaError(ValueError):
    """A message that does not conform to the project's schema; `errors` lists each violation."""

    def __init__(self, errors: list[str]):
        super().__init__("SCRIPT message fails the project schema: " + "; ".join(errors))
        self.errors = errors


# Compiled once per thread: an XMLSchema's error_log and a Schematron's validation_report belong
# to the object, so concurrent validations (a worker's thread pool) must not share one.
_compiled = threading.local()


def _xsd(version: str) -> etree.XMLSchema:
    cache = _compiled.__dict__.setdefault("xsd", {})
    if version not in cache:
        path = SCHEMA_DIR / f"script_{version}.xsd"
        if not path.exists():
            raise ValueError(f"no schema for SCRIPT version {version}")
        cache[version] = etree.XMLSchema(etree.parse(str(path)))
    return cache[version]


def _schematron(version: str) -> isoschematron.Schematron:
    cache = _compiled.__dict__.setdefault("schematron", {})
    if version not in cache:
        path = SCHEMA_DIR / f"script_{version}.sch"
        cache[version] = isoschematron.Schematron(etree.parse(str(path)), store_report=True)
    return cache[version]


def _parse(xml: bytes) -> etree._ElementTree:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        return etree.fromstring(xml, parser).getroottree()
    except etree.XMLSyntaxError as err:
        raise MessageSchemaError([f"line {err.lineno}: not well-formed XML: {err.msg}"]) from None


def validate_message(xml: bytes, *, version: str = "2017071") -> None:
    """Raise MessageSchemaError with every schema (then Schematron) error; return None if valid."""
    tree = _parse(xml)
    schema = _xsd(version)
    if not schema.validate(tree):
        raise MessageSchemaError([f"line {e.line}: {e.message}" for e in schema.error_log])
    schematron = _schematron(version)
    if not schematron.validate(tree):
        report = schematron.validation_report
        svrl = "{http://purl.oclc.org/dsdl/svrl}"
        errors = [f"{failed.get('location')}: {' '.join(failed.findtext(f'{svrl}text', '').split())}"
                  for failed in report.iter(f"{svrl}failed-assert")]
        raise MessageSchemaError(errors or ["Schematron rules failed"])
