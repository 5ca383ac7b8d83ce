"""The project's canonical base: every CodeSystem, NamingSystem, StructureDefinition (profiles and
extensions), ValueSet and OperationDefinition of ours is named under it. One constant, used by
every module that mints such a URL (mappers/ncpdp, later the implementation guide in profiles/)."""

CANONICAL_BASE = "http://fhir-async-telehealth.example"
