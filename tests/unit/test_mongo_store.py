"""The MongoDB store's own behaviour, beyond the shared contract suites, on the in-process fake
(fhir_server/storage/mongo/fake.py; needs mongomock from the test extra): URL handling, the
start-up check for transactions, the stored document layout, indexes, re-indexing, the
cross-process write lock, running without transactions, and result-for-result parity with SQLite."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import orjson
import pytest

from fhir_server.search.extract import extract_index
from fhir_server.search.parse import parse_search
from fhir_server.storage import HistoryQuery, VersionConflict, open_store
from fhir_server.storage.mongo import MongoStore, TransactionsUnavailable
from fhir_server.storage.mongo import store as store_module
from fhir_server.storage.mongo.documents import INDEX_ARRAYS, RESOURCES, VERSIONS
from fhir_server.storage.mongo.indexes import INDEXES
from fhir_server.storage.mongo.store import parse_url
from tests.contract.search_fixtures import RESOURCES as SEARCH_RESOURCES

pytest.importorskip("mongomock", reason="these tests run the MongoDB backend on mongomock (pip install -e '.[test]')")

from fhir_server.storage.mongo.fake import FakeAsyncMongoClient  # noqa: E402


async def _open(client=None, **options) -> MongoStore:
    store = MongoStore("mongodb://fake/fhir", client=client or FakeAsyncMongoClient(), indexer=extract_index, **options)
    await store.open()
    return store


async def _put(store, resource_type: str, id: str, **fields):
    async with store.unit_of_work() as uow:
        return await uow.write(resource_type, id, {"resourceType": resource_type, **fields}, method="PUT")


# -- URLs and start-up -----------------------------------------------------------------------------


def test_url_gives_the_database_and_our_option_never_reaches_pymongo():
    url, database, transactions = parse_url(
        "mongodb://u:p%40ss@h1:27017,h2:27017/fhirdb?replicaSet=rs0&fhirTransactions=off&w=majority")
    assert url == "mongodb://u:p%40ss@h1:27017,h2:27017/fhirdb?replicaSet=rs0&w=majority"
    assert (database, transactions) == ("fhirdb", False)
    assert parse_url("mongodb://h/?replicaSet=rs0")[1:] == (None, None)
    with pytest.raises(ValueError):
        parse_url("mongodb://h/fhir?fhirTransactions=maybe")


def test_open_store_picks_the_mongodb_backend():
    store = open_store("mongodb://db.example:27017/telehealth?replicaSet=rs0", synchronous="FULL")
    assert isinstance(store, MongoStore)
    assert (store.database_name, store.transactions) == ("telehealth", True)
    assert open_store("mongodb+srv://cluster.example/x?fhirTransactions=off").transactions is False
    assert open_store("mongodb://h/x", database="other").database_name == "other"
    assert open_store("mongodb://h").database_name == "fhir"


async def test_a_standalone_server_is_refused_with_a_clear_message():
    with pytest.raises(TransactionsUnavailable) as err:
        await _open(FakeAsyncMongoClient(replica_set=False))
    message = str(err.value)
    assert "standalone" in message and "--replSet" in message and "fhirTransactions=off" in message


async def test_indexes_are_created_at_start_up_and_again_without_error():
    client = FakeAsyncMongoClient()
    first = await _open(client)
    await first.close()
    store = await _open(client)
    for collection in (RESOURCES, VERSIONS):
        names = set(await store._db[collection].index_information())
        assert {name for coll, name, _, _ in INDEXES if coll == collection} <= names
    assert any(("i_date.lo", 1) in keys for _, _, keys, _ in INDEXES)


# -- what is stored ------------------------------------------------------------------------------


async def test_documents_keep_the_exact_bytes_and_embed_the_index():
    store = await _open()
    v = await _put(store, "Patient", "p1", gender="female", birthDate="1980-05-03", name=[{"family": "Müller"}])
    current = await store.resources.find_one({"_id": "Patient/p1"})
    version = await store.versions.find_one({"_id": v.seq})
    assert current["body"] == version["body"] == v.body == orjson.dumps(orjson.loads(v.body))
    assert {"p": "gender", "c": "female", "s": "http://hl7.org/fhir/administrative-gender"} in current["i_tok"]
    assert {"p": "family", "n": "muller", "x": "Müller"} in current["i_str"]
    assert any(e["p"] == "birthdate" for e in current["i_date"])
    assert (current["rid"], current["seq"], current["deleted"]) == (v.seq, v.seq, False)
    assert (await store.read("Patient", "p1")).body == v.body


async def test_an_update_replaces_the_index_and_a_delete_clears_it():
    store = await _open()
    first = await _put(store, "Patient", "p1", gender="female")
    await _put(store, "Patient", "p1", active=True)
    current = await store.resources.find_one({"_id": "Patient/p1"})
    assert not any(e["p"] == "gender" for e in current["i_tok"]) and current["rid"] == first.seq
    async with store.unit_of_work() as uow:
        await uow.delete("Patient", "p1")
    current = await store.resources.find_one({"_id": "Patient/p1"})
    assert current["deleted"] and current["body"] is None and not set(INDEX_ARRAYS) & set(current)


async def test_the_change_counter_follows_the_commits():
    store = await _open()
    async with store.unit_of_work() as uow:
        a = await uow.write("Patient", "a", {"resourceType": "Patient"}, method="PUT")
        b = await uow.write("Patient", "b", {"resourceType": "Patient"}, method="PUT")
    counter = await store.counters.find_one({"_id": "changes"})
    assert (a.seq, b.seq) == (1, 2) and counter["seq"] == 2
    with pytest.raises(RuntimeError):
        async with store.unit_of_work() as uow:
            await uow.write("Patient", "c", {"resourceType": "Patient"}, method="PUT")
            raise RuntimeError("rolled back")
    assert (await store.counters.find_one({"_id": "changes"}))["seq"] == 2
    assert (await _put(store, "Patient", "d")).seq == 3


async def test_last_updated_never_goes_back_when_the_clock_does(monkeypatch):
    store = await _open()
    first = await _put(store, "Patient", "a")
    earlier = first.last_updated - timedelta(minutes=5)
    monkeypatch.setattr(store_module, "utc_now_ms", lambda: earlier)
    second = await _put(store, "Patient", "b")
    assert second.last_updated == first.last_updated


async def test_reindex_rebuilds_a_lost_index():
    store = await _open()
    async with store.unit_of_work() as uow:
        for resource in SEARCH_RESOURCES:
            await uow.write(resource["resourceType"], resource["id"], resource, method="PUT")
    gender = parse_search(["Patient"], [("gender", "male")])
    for doc in await store.resources.find({}, {"_id": 1}).to_list():
        await store.resources.update_one({"_id": doc["_id"]}, {"$unset": {name: "" for name in INDEX_ARRAYS}})
    assert (await store.search(gender)).matches == []
    assert await store.reindex(batch_size=4) == len(SEARCH_RESOURCES)
    assert sorted(v.id for v in (await store.search(gender)).matches) == ["p2", "p3"]


# -- concurrency -------------------------------------------------------------------------------


async def test_a_second_process_waits_for_the_first_ones_transaction():
    """Two stores on one database stand for two server processes: the second one's unit of work
    meets a WriteConflict on the change counter, retries, and goes after the first commits."""
    client = FakeAsyncMongoClient()
    one, two = await _open(client), await _open(client)
    await _put(one, "Patient", "a")
    order: list[str] = []

    async def slow_first():
        async with one.unit_of_work() as uow:
            await uow.write("Patient", "a", {"resourceType": "Patient", "active": True}, method="PUT",
                            expected_version=1)
            order.append("one wrote")
            await asyncio.sleep(0.05)
            order.append("one commits")

    async def second():
        await asyncio.sleep(0.01)
        async with two.unit_of_work() as uow:
            await uow.write("Patient", "a", {"resourceType": "Patient"}, method="PUT")
            order.append("two wrote")

    async def third():  # same versions expected as the first: must lose
        await asyncio.sleep(0.02)
        async with two.unit_of_work() as uow:
            await uow.write("Patient", "a", {"resourceType": "Patient"}, method="PUT", expected_version=1)

    results = await asyncio.gather(slow_first(), second(), third(), return_exceptions=True)
    assert order == ["one wrote", "one commits", "two wrote"]
    assert client.conflicts > 0  # the second store did meet the first one's transaction, and retried
    assert results[:2] == [None, None] and isinstance(results[2], VersionConflict)
    history = await one.history(HistoryQuery("Patient", "a"))
    assert [v.version for v in history.versions] == [3, 2, 1]
    assert [v.seq for v in history.versions] == [3, 2, 1]


# -- without transactions (a standalone mongod, fhirTransactions=off) ------------------------------


async def test_without_transactions_a_failed_unit_of_work_is_undone():
    store = await _open(FakeAsyncMongoClient(replica_set=False), transactions=False)
    await _put(store, "Patient", "a", active=True)
    before = await store.read("Patient", "a")
    with pytest.raises(RuntimeError):
        async with store.unit_of_work() as uow:
            await uow.write("Patient", "a", {"resourceType": "Patient", "active": False}, method="PUT")
            await uow.write("Patient", "new", {"resourceType": "Patient"}, method="PUT")
            async with asyncio.timeout(1):
                assert (await store.read("Patient", "new")) is not None  # no isolation without transactions
            raise RuntimeError("a later entry failed")
    assert await store.read("Patient", "new") is None
    assert (await store.read("Patient", "a")).body == before.body
    assert (await store.history(HistoryQuery("Patient", "a"))).total == 1
    assert [v.id for v in (await store.search(parse_search(["Patient"], [("active", "true")]))).matches] == ["a"]


async def test_without_transactions_versions_are_still_conditional():
    store = MongoStore("mongodb://fake/fhir?fhirTransactions=off", client=FakeAsyncMongoClient(replica_set=False),
                       indexer=extract_index)
    await store.open()  # a standalone server is fine when the URL says so
    await _put(store, "Patient", "a")
    with pytest.raises(VersionConflict):
        async with store.unit_of_work() as uow:
            await uow.write("Patient", "a", {"resourceType": "Patient"}, method="PUT", expected_version=2)
    assert (await store.read("Patient", "a")).version == 1


# -- parity with the SQLite store ---------------------------------------------------------------------

PARITY_QUERIES = [
    ("Patient", ""), ("Patient", "_sort=birthdate"), ("Patient", "_sort=-birthdate"), ("Patient", "_sort=gender,-birthdate"),
    ("Patient", "_sort=family"), ("Patient", "_sort=-family"), ("Patient", "_sort=_id"), ("Patient", "_sort=-_lastUpdated"),
    ("Patient", "family=mu"), ("Patient", "gender:not=male"), ("Patient", "identifier=urn:example:mrn|"),
    ("Patient", "birthdate=ge1990"), ("Patient", "birthdate=ne1990"), ("Patient", "active:missing=true"),
    ("Observation", "_sort=-date"), ("Observation", "_sort=value-quantity"), ("Observation", "_sort=-value-quantity"),
    ("Observation", "_sort=code"), ("Observation", "_sort=subject"), ("Observation", "subject=p1"),
    ("Observation", "code:text=systolic"), ("Observation", "value-quantity=gt100"),
    ("Observation", "component-code-value-quantity=http://loinc.org|8480-6$gt140"),
    ("Observation", "encounter.subject:Patient.name=anna"), ("Encounter", "date=ge2024-01-01&date=lt2024-01-02"),
    ("Encounter", "_sort=date"), ("Encounter", "_sort=-date"), ("Encounter", "status=finished,cancelled"),
    ("Patient", "_has:Observation:patient:code=8480-6"), ("RiskAssessment", "_sort=-probability"),
    ("ValueSet", "url:above=http://example.org/fhir/ValueSet/intake-reasons/v2"), ("ValueSet", "_sort=url"),
    ("MedicationRequest", "_include=*"), ("Encounter", "_include=Encounter:patient&_revinclude=Observation:encounter"),
    ("Patient", "_revinclude=Observation:subject&_revinclude=Encounter:subject&_sort=_id"),
    ("MedicationRequest", "_include=MedicationRequest:encounter&_include:iterate=Encounter:participant"),
]


@pytest.fixture
async def both(tmp_path):
    sqlite = open_store(f"sqlite:///{tmp_path / 'parity.db'}", indexer=extract_index)
    await sqlite.open()
    mongo = await _open()
    for store in (sqlite, mongo):
        async with store.unit_of_work() as uow:
            for resource in SEARCH_RESOURCES:
                await uow.write(resource["resourceType"], resource["id"], resource, method="PUT")
    yield sqlite, mongo
    await sqlite.close()
    await mongo.close()


def _outcome(page):
    return ([f"{v.resource_type}/{v.id}/{v.version}" for v in page.matches],
            sorted(f"{v.resource_type}/{v.id}" for v in page.included), page.total,
            page.next_cursor is not None, page.previous_cursor is not None)


async def test_both_backends_find_the_same_resources_in_the_same_order(both):
    sqlite, mongo = both
    for resource_type, query in PARITY_QUERIES:
        pairs = [tuple(p.split("=", 1)) for p in query.split("&") if p]
        q = parse_search([resource_type], pairs)
        assert _outcome(await mongo.search(q)) == _outcome(await sqlite.search(q)), query


async def test_both_backends_page_alike(both):
    sqlite, mongo = both
    for query in ("_sort=-date&_count=1", "_sort=code&_count=2", "_count=3&_total=accurate"):
        pages = {}
        for name, store in (("sqlite", sqlite), ("mongo", mongo)):
            q = parse_search(["Observation"], [tuple(p.split("=", 1)) for p in query.split("&")])
            seen, back = [], []
            while True:
                page = await store.search(q)
                seen.append([v.id for v in page.matches])
                if page.next_cursor is None:
                    break
                q = type(q)(**{**q.__dict__, "cursor": page.next_cursor})
            while page.previous_cursor is not None:
                page = await store.search(type(q)(**{**q.__dict__, "cursor": page.previous_cursor}))
                back.append([v.id for v in page.matches])
            pages[name] = (seen, back)
        assert pages["mongo"] == pages["sqlite"], query


async def test_history_matches_sqlite(both):
    sqlite, mongo = both
    for store in (sqlite, mongo):
        await _put(store, "Patient", "p1", active=False)
        async with store.unit_of_work() as uow:
            await uow.delete("Patient", "p2")

    def shape(page):
        return [(v.resource_type, v.id, v.version, v.method, v.deleted) for v in page.versions], page.total

    for query in (HistoryQuery(count=5), HistoryQuery("Patient", count=2), HistoryQuery("Patient", "p1")):
        assert shape(await mongo.history(query)) == shape(await sqlite.history(query))
