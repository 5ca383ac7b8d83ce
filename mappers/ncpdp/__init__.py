"""NCPDP SCRIPT (2017071, with 2023011 in view) to and from FHIR R4, one module per message type.
envelope.py is the Message/Header every message shares and the safe parser every inbound one
goes through."""
