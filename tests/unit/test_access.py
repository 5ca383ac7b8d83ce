"""The access decision (smart_auth/access.py): principals x interactions x outcomes, the body-level
evaluator against the store's own search results, and the securityContext gate of Binary."""

from __future__ import annotations

import orjson
import pytest

from fhir_server.errors import Forbidden, NotFound
from fhir_server.interactions import crud, guard
from fhir_server.interactions.search import search
from fhir_server.interactions.validation import check
from fhir_server.search.extract import extract_index
from fhir_server.search.parse import parse_search
from fhir_server.search.query import AllFilter, AnyFilter, ChainFilter, HasFilter, TypeFilter
from fhir_server.storage import open_store
from smart_auth.access import (
    NOTHING,
    PERMISSION_OF,
    UnenforceableScope,
    allowed,
    check_scope,
    decide,
    matches,
    narrow_criteria,
    narrow_search,
    restriction_filter,
    searchable_types,
    set_user_policy,
)
from smart_auth.principal import Principal
from smart_auth.scopes import ScopeSet, parse_resource_scope

CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
LAB = f"category={CAT}|laboratory"
VITALS = f"category={CAT}|vital-signs"


def who(scope: str, patient: str | None = "A", **kw) -> Principal:
    return Principal(client_id="app", subject="u", scopes=ScopeSet.parse(scope), patient=patient, **kw)


def obs(id: str, patient: str, category: str = "laboratory", **extra) -> dict:
    return {"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "t"},
            "category": [{"coding": [{"system": CAT, "code": category}]}],
            "subject": {"reference": f"Patient/{patient}"}, **extra}


def patient(id: str) -> dict:
    return {"resourceType": "Patient", "id": id}


PRACTITIONER = {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Who"}]}
OBS_A_LAB, OBS_A_VITAL, OBS_B_LAB = obs("a1", "A"), obs("a2", "A", "vital-signs"), obs("b1", "B")
ENC_A = {"resourceType": "Encounter", "id": "e", "status": "finished", "class": {"code": "VR"},
         "subject": {"reference": "Patient/A"}}
TASK_B = {"resourceType": "Task", "id": "t", "status": "draft", "intent": "order", "for": {"reference": "Patient/B"}}


def outcome(principal: Principal, interaction: str, resource: dict | None) -> str:
    """allow | 403 | 404, as the interaction layer answers (reads hide, writes refuse)."""
    permission = PERMISSION_OF[interaction]
    rule = allowed(principal, resource["resourceType"] if resource else "Observation", permission)
    if rule is None:
        return "403"
    if resource is None or rule.admits(resource):
        return "allow"
    return "404" if permission in "rs" else "403"


TABLE = [
    # principal, interaction, resource, expected
    ("patient/Observation.rs", "read", OBS_A_LAB, "allow"),
    ("patient/Observation.rs", "read", OBS_B_LAB, "404"),  # another patient's: hidden
    ("patient/Observation.rs", "search-type", None, "allow"),
    ("patient/Observation.rs", "create", OBS_A_LAB, "403"),  # no c
    ("patient/Observation.read", "read", OBS_A_LAB, "allow"),  # v1 read = rs
    ("patient/Observation.read", "search-type", None, "allow"),
    ("patient/Observation.read", "update", OBS_A_LAB, "403"),
    ("patient/Observation.write", "create", OBS_A_LAB, "allow"),  # v1 write = cud
    ("patient/Observation.write", "create", OBS_B_LAB, "403"),
    ("patient/Observation.write", "read", OBS_A_LAB, "403"),  # write does not imply read
    ("patient/Observation.*", "delete", OBS_A_LAB, "allow"),
    ("patient/Observation.*", "delete", OBS_B_LAB, "403"),
    ("patient/*.rs", "read", ENC_A, "allow"),
    ("patient/*.rs", "read", patient("A"), "allow"),
    ("patient/*.rs", "read", patient("B"), "404"),  # Patient: only the token's own
    ("patient/*.cruds", "update", patient("A"), "allow"),
    ("patient/*.cruds", "update", patient("B"), "403"),
    ("patient/Observation.r", "read", OBS_A_LAB, "allow"),
    ("patient/Observation.r", "search-type", None, "403"),  # r without s: no search
    ("patient/Observation.s", "search-type", None, "allow"),
    ("patient/Observation.s", "read", OBS_A_LAB, "403"),  # s without r: no direct read
    ("patient/Observation.c", "create", OBS_A_LAB, "allow"),
    ("patient/Observation.c", "create", obs("x", "A", performer=[{"reference": "Patient/B"}]), "403"),  # into B's
    ("patient/Observation.c", "create", obs("x", "A", performer=[{"reference": "Practitioner/dr"}]), "allow"),
    ("patient/*.cruds", "create", {"resourceType": "Communication", "status": "completed",
                                   "subject": {"reference": "Patient/A"}, "recipient": [{"reference": "Patient/B"}]},
     "403"),
    ("patient/Observation.c", "read", OBS_A_LAB, "403"),
    ("patient/Observation.c", "update", OBS_A_LAB, "403"),
    ("patient/Encounter.rs", "read", OBS_A_LAB, "403"),  # type not granted
    # v2 query restrictions: one category, and two unioned
    (f"patient/Observation.rs?{LAB}", "read", OBS_A_LAB, "allow"),
    (f"patient/Observation.rs?{LAB}", "read", OBS_A_VITAL, "404"),
    (f"patient/Observation.rs?{LAB}", "read", OBS_B_LAB, "404"),  # restriction AND compartment
    (f"patient/Observation.rs?{LAB} patient/Observation.rs?{VITALS}", "read", OBS_A_VITAL, "allow"),
    (f"patient/Observation.rs?{LAB} patient/Observation.rs", "read", OBS_A_VITAL, "allow"),  # unrestricted wins
    (f"patient/Observation.cruds?{LAB}", "create", OBS_A_VITAL, "403"),
    (f"patient/Observation.cruds?{LAB}", "create", OBS_A_LAB, "allow"),
    # types outside the compartment
    ("patient/Practitioner.rs", "read", PRACTITIONER, "allow"),  # not patient data: readable in full
    ("patient/Practitioner.cruds", "create", PRACTITIONER, "403"),  # ... never writable
    ("patient/*.rs", "read", TASK_B, "404"),  # Task: confined through Task.patient
    ("patient/*.rs", "read", {"resourceType": "Bundle", "id": "x", "type": "collection"}, "403"),
    # user/ and system/ scopes: as written, no compartment
    ("user/*.cruds", "read", OBS_B_LAB, "allow"),
    ("user/*.cruds", "delete", OBS_B_LAB, "allow"),
    ("user/Observation.rs", "create", OBS_A_LAB, "403"),
    (f"user/Observation.rs?{LAB}", "read", OBS_B_LAB, "allow"),
    (f"user/Observation.rs?{LAB}", "read", OBS_A_VITAL, "404"),
    ("system/*.rs", "read", OBS_B_LAB, "allow"),
    ("system/*.rs", "search-system", None, "allow"),
    ("system/*.rs", "create", OBS_A_LAB, "403"),
    ("system/*.rs", "delete", OBS_A_LAB, "403"),
    # mixed: a user scope widens a patient scope's type
    ("patient/Observation.rs user/Observation.rs", "read", OBS_B_LAB, "allow"),
    ("openid fhirUser", "read", OBS_A_LAB, "403"),
]


@pytest.mark.parametrize("scope, interaction, resource, expected", TABLE)
def test_decision_table(scope, interaction, resource, expected):
    assert outcome(who(scope), interaction, resource) == expected


def test_patient_scope_without_patient_context_is_refused_everything():
    principal = who("patient/*.cruds user/*.cruds", patient=None)
    with pytest.raises(Forbidden, match="no patient context"):
        decide(principal, "Observation", "r")
    with pytest.raises(Forbidden):
        decide(principal, "Practitioner", "s")


def test_unrestricted_principal_allows_everything_without_narrowing():
    su = Principal.anonymous_superuser()
    for permission in "cruds":
        assert decide(su, "Observation", permission).everything
    query = parse_search(["Observation"], [("code", "x")])
    assert narrow_search(su, query) is query


def test_user_and_system_scopes_without_restrictions_need_no_body():
    rule = decide(who("user/Observation.rs"), "Observation", "r")
    assert rule.everything and rule.filter is None


def test_compartment_filter_uses_every_compartment_param():
    rule = decide(who("patient/Observation.rs"), "Observation", "s")
    assert isinstance(rule.filter, AnyFilter)
    assert sorted(f.code for f in rule.filter.filters) == ["performer", "subject"]
    performer_a = obs("x", "Z", performer=[{"reference": "Patient/A"}])
    assert rule.admits(performer_a)


def test_search_is_narrowed_to_compartment_and_union_of_restrictions():
    principal = who(f"patient/Observation.rs?{LAB} patient/Observation.rs?{VITALS}")
    query = narrow_search(principal, parse_search(["Observation"], [("status", "final")]))
    compartment, restrictions = query.filters[1:]
    assert isinstance(restrictions, AnyFilter) and len(restrictions.filters) == 2
    for resource, expected in ((OBS_A_LAB, True), (OBS_A_VITAL, True), (OBS_B_LAB, False),
                               (obs("a3", "A", "imaging"), False)):
        assert all(matches(f, resource) for f in query.filters) is expected


def test_system_search_types_and_per_type_narrowing():
    principal = who("patient/Observation.rs patient/Practitioner.rs patient/Binary.r")
    types = searchable_types(principal, ["Binary", "Encounter", "Observation", "Practitioner"])
    assert types == ["Observation", "Practitioner"]  # Binary: read only through securityContext
    query = narrow_search(principal, parse_search(types, []))
    [narrowing] = query.filters
    assert isinstance(narrowing, AnyFilter)
    assert TypeFilter(("Practitioner",)) in narrowing.filters
    assert matches(narrowing, PRACTITIONER) and matches(narrowing, OBS_A_LAB) and not matches(narrowing, OBS_B_LAB)
    with pytest.raises(Forbidden):
        narrow_search(principal, parse_search(["Observation", "Encounter"], []))


def test_chains_and_has_are_checked_and_narrowed():
    principal = who("patient/Observation.rs patient/Patient.rs")
    chained = narrow_search(principal, parse_search(["Observation"], [("subject:Patient.name", "x")]))
    chain = chained.filters[0]
    assert isinstance(chain, ChainFilter) and isinstance(chain.inner, AllFilter)
    assert any(getattr(f, "code", None) == "_id" for f in chain.inner.filters)  # inner: Patient A only
    has = narrow_search(principal, parse_search(["Patient"], [("_has:Observation:subject:code", "x")])).filters[0]
    assert isinstance(has, HasFilter) and isinstance(has.inner, AllFilter)
    with pytest.raises(Forbidden):  # Encounter may not be searched: no chain through it
        narrow_search(principal, parse_search(["Observation"], [("encounter.status", "finished")]))
    with pytest.raises(Forbidden):
        narrow_search(principal, parse_search(["Patient"], [("_has:Encounter:subject:status", "finished")]))


def test_conditional_criteria_are_narrowed_by_the_write_permission():
    principal = who("patient/Observation.rs patient/Observation.d")
    query = narrow_criteria(principal, parse_search(["Observation"], [("code", "x")]), "d")
    assert not all(matches(f, obs("b", "B")) for f in query.filters[1:])
    with pytest.raises(Forbidden):
        narrow_criteria(principal, parse_search(["Observation"], [("code", "x")]), "u")


@pytest.mark.parametrize("query", [
    "date=ge2020", "value-quantity=5", "_lastUpdated=gt2020", "subject.name=x", "_has:Observation:subject:code=x",
    "_count=5", "nonsense=1", "code:below=x",
])
def test_unenforceable_restrictions_are_refused(query):
    scope = parse_resource_scope(f"patient/Observation.rs?{query}")
    with pytest.raises(UnenforceableScope):
        check_scope(scope)
    with pytest.raises(Forbidden, match="cannot be enforced"):
        decide(who(scope.text), "Observation", "r")


def test_an_unenforceable_scope_leaves_the_others_working():
    principal = who(f"patient/Observation.rs?date=ge2020 patient/Observation.rs?{LAB}")
    rule = decide(principal, "Observation", "r")
    assert rule.admits(OBS_A_LAB) and not rule.admits(OBS_A_VITAL)


def test_user_policy_extension_point():
    def only_lab(principal, resource_type, permission):
        return restriction_filter("Observation", ((LAB.split("=")[0], LAB.split("=", 1)[1]),)) \
            if resource_type == "Observation" else None

    set_user_policy(only_lab)
    try:
        rule = decide(who("user/Observation.rs", patient=None), "Observation", "r")
        assert rule.admits(OBS_B_LAB) and not rule.admits(OBS_A_VITAL)
        assert decide(who("system/Observation.rs", patient=None), "Observation", "r").everything
    finally:
        set_user_policy(None)
    assert decide(who("user/Observation.rs", patient=None), "Observation", "r").everything


def test_create_checks_the_id_the_server_assigns():
    rule = decide(who("patient/Patient.cruds"), "Patient", "c")
    assert not rule.admits({"resourceType": "Patient"}, id="new")
    assert rule.admits({"resourceType": "Patient"}, id="A")


# -- the evaluator against the store's own search ------------------------------------------------

RESOURCES = [
    obs("o1", "A", meta={"tag": [{"system": "urn:t", "code": "x"}]}),
    obs("o2", "B", "vital-signs", identifier=[{"system": "urn:id", "value": "V1"}]),
    obs("o3", "A", "imaging", performer=[{"reference": "http://other.example/fhir/Patient/B"}]),
    {"resourceType": "Observation", "id": "o4", "status": "final", "code": {"text": "Blood Pressure"}},
    {"resourceType": "Patient", "id": "A", "name": [{"family": "Zoë", "given": ["Ann"]}]},
    {"resourceType": "Patient", "id": "B", "name": [{"family": "Brown"}]},
    {"resourceType": "Questionnaire", "id": "q", "status": "active", "url": "http://q.example/forms/intake/v2"},
]
EVALUATOR_QUERIES = [
    ("Observation", f"category={CAT}|laboratory"), ("Observation", "category=laboratory"),
    ("Observation", "category=|laboratory"), ("Observation", f"category={CAT}|"),
    ("Observation", "category:not=laboratory"), ("Observation", "category:missing=true"),
    ("Observation", "category:missing=false"), ("Observation", "code:text=blood"),
    ("Observation", "subject=Patient/A"), ("Observation", "subject=A"), ("Observation", "subject:Patient=B"),
    ("Observation", "performer=http://other.example/fhir/Patient/B"), ("Observation", "patient=Patient/B"),
    ("Observation", "identifier=urn:id|V1"), ("Observation", "_tag=urn:t|x"), ("Observation", "_id=o2,o3"),
    ("Observation", "_id:not=o2"),
    ("Patient", "name=zoe"), ("Patient", "family:exact=Zoë"), ("Patient", "family:exact=zoe"),
    ("Patient", "name:contains=row"), ("Patient", "given=an"),
    ("Questionnaire", "url=http://q.example/forms/intake/v2"), ("Questionnaire", "url:below=http://q.example/forms"),
    ("Questionnaire", "url:above=http://q.example/forms/intake/v2/extra"), ("Questionnaire", "url=http://q.example"),
]


@pytest.fixture(params=["sqlite", "mongo-fake"])
async def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'a.db'}", indexer=extract_index)
    else:
        pytest.importorskip("mongomock")
        from fhir_server.storage.mongo import MongoStore
        from fhir_server.storage.mongo.fake import FakeAsyncMongoClient

        s = MongoStore("mongodb://fake/fhir", client=FakeAsyncMongoClient(), indexer=extract_index)
    await s.open()
    async with s.unit_of_work() as uow:
        for r in RESOURCES:
            await uow.write(r["resourceType"], r["id"], r, method="PUT")
    yield s
    await s.close()


@pytest.mark.parametrize("resource_type, text", EVALUATOR_QUERIES)
async def test_evaluator_agrees_with_the_store(store, resource_type, text):
    name, value = text.split("=", 1)
    query = parse_search([resource_type], [(name, value)], strict=True)
    found = {v.id for v in (await store.search(query)).matches}
    evaluated = {r["id"] for r in RESOURCES if r["resourceType"] == resource_type
                 and all(matches(f, r) for f in query.filters)}
    assert evaluated == found


async def test_all_filter_and_type_filter_in_sql(store):
    p = AllFilter((TypeFilter(("Observation",)), restriction_filter("Observation", (("subject", "Patient/A"),))))
    query = parse_search(["Observation", "Patient"], [])
    from dataclasses import replace

    got = {v.id for v in (await store.search(replace(query, filters=(AnyFilter((p, TypeFilter(("Patient",)))),))))
           .matches}
    assert got == {"o1", "o3", "A", "B"}
    none = {v.id for v in (await store.search(replace(query, filters=(NOTHING,)))).matches}
    assert none == set()


# -- the interaction layer: reads hide, writes refuse, Binary through securityContext ------------


async def test_reads_and_writes_through_the_interactions(store):
    a = who("patient/Observation.cruds patient/Patient.rs")
    assert (await crud.read(store, "Observation", "o1", a)).id == "o1"
    with pytest.raises(NotFound):
        await crud.read(store, "Observation", "o2", a)
    with pytest.raises(NotFound):
        await crud.vread(store, "Observation", "o2", "1", a)
    with pytest.raises(Forbidden):
        await crud.read(store, "Encounter", "nothing", a)
    async with store.unit_of_work() as uow:
        with pytest.raises(Forbidden):
            await crud.create(uow, check(obs("n", "B"), "Observation"), principal=a)
        with pytest.raises(Forbidden):  # moving own data to another patient
            await crud.update(uow, check(obs("o1", "B"), "Observation"), principal=a)
        with pytest.raises(Forbidden):
            await crud.delete(uow, "Observation", "o2", principal=a)
        await crud.create(uow, check(obs("n", "A"), "Observation"), principal=a)


async def test_search_post_filters_included_resources(store):
    a = who("patient/Observation.rs patient/Patient.rs")
    query = parse_search(["Observation"], [("_include", "Observation:performer")])
    page = await search(store, query, a)
    assert {v.id for v in page.matches} == {"o1", "o3"}
    assert page.included == []  # o3's performer is Patient/B: never included
    everyone = await search(store, query, Principal.anonymous_superuser())
    assert {v.id for v in everyone.included} == {"B"}


async def test_binary_is_read_through_its_security_context(store):
    async with store.unit_of_work() as uow:
        for id, context in (("mine", "Patient/A"), ("theirs", "Patient/B"), ("none", None), ("obs", "Observation/o2")):
            body = {"resourceType": "Binary", "id": id, "contentType": "image/png", "data": "AA=="}
            if context:
                body["securityContext"] = {"reference": context}
            await uow.write("Binary", id, body, method="PUT")
    a = who("patient/Binary.r patient/Patient.r patient/Observation.r")
    assert (await crud.read(store, "Binary", "mine", a)).id == "mine"
    for hidden in ("theirs", "none", "obs"):
        with pytest.raises(NotFound):
            await crud.read(store, "Binary", hidden, a)
    with pytest.raises(NotFound):  # a restriction on Binary applies on top of the gate
        await crud.read(store, "Binary", "mine", who("patient/Binary.r?_tag=urn:t|x patient/Patient.r"))
    # the referenced resource must itself be readable: without Patient scopes, even one's own is not
    with pytest.raises(NotFound):
        await crud.read(store, "Binary", "mine", who("patient/Binary.r"))
    # writes: a new Binary must point into what the patient may see
    async with store.unit_of_work() as uow:
        upload = {"resourceType": "Binary", "contentType": "image/png", "data": "AA==",
                  "securityContext": {"reference": "Patient/B"}}
        with pytest.raises(Forbidden):
            await crud.create(uow, check(upload, "Binary"), principal=who("patient/Binary.c patient/Patient.r"))
        upload["securityContext"] = {"reference": "Patient/A"}
        await crud.create(uow, check(upload, "Binary"), principal=who("patient/Binary.c patient/Patient.r"))
    assert await guard.sees(store, a, await store.read("Binary", "mine"))


async def test_history_drops_versions_outside_the_compartment(store):
    from fhir_server.interactions.history import history, history_request

    async with store.unit_of_work() as uow:  # o1 moves from A to B: its first version stays A's
        await uow.write("Observation", "o1", obs("o1", "B"), method="PUT")
    a = who("patient/Observation.rs")
    page = await history(store, history_request({}, resource_type="Observation"), a)
    assert sorted((v.id, v.version) for v in page.versions) == [("o1", 1), ("o3", 1)]
    assert page.total == 2
    instance = await history(store, history_request({}, resource_type="Observation", id="o1"), a)
    assert [v.version for v in instance.versions] == [1]
    with pytest.raises(NotFound):
        await history(store, history_request({}, resource_type="Observation", id="o2"), a)
    body = orjson.loads((await crud.vread(store, "Observation", "o1", "1", a)).body)
    assert body["subject"]["reference"] == "Patient/A"
    with pytest.raises(NotFound):
        await crud.read(store, "Observation", "o1", a)
