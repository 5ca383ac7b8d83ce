"""A FHIR R4 server for asynchronous (store-and-forward) telehealth."""

__version__ = "0.1.0"
