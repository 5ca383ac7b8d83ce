"""The RecordStore contract (smart_auth/store/base.py), run against every backend:

- "sqlite": the reference backend, on a temporary file.
- "mongo-fake": MongoRecordStore over mongomock.MongoClient(). mongomock applies a TTL index at once
  (a real server deletes expired documents only about once a minute), which would hide whether the
  store itself treats expired records as absent, so the fixture drops the TTL index there.
- "mongo": a real MongoDB when MONGODB_URL names one (a database of its own, dropped afterwards);
  skipped otherwise.

Then the typed AuthRecords round trips over each backend, and MongoRecordStore's own details.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from smart_auth.store import (AuthorizationCode, AuthRecords, Client, Grant, RecordStore, RefreshToken, SigningKey,
                              User, open_record_store, token_hash)

MONGO_SKIP = (
    "real-MongoDB record store run skipped: MONGODB_URL is not set. Set it to a MongoDB server to run it, "
    "e.g. `docker compose up -d mongo` then MONGODB_URL='mongodb://127.0.0.1:27017/?replicaSet=rs0&directConnection=true'"
)

PAST, FUTURE = -60.0, 3600.0  # offsets from now for expired and live records


def _fake_mongo_store(database: str = "fhir"):
    mongomock = pytest.importorskip("mongomock", reason="the mongo-fake run needs mongomock (pip install -e '.[test]')")
    from smart_auth.store.mongo import MongoRecordStore

    return MongoRecordStore(f"mongodb://fake/{database}", client=mongomock.MongoClient())


@pytest.fixture(params=["sqlite", "mongo-fake", "mongo"])
def store(request, tmp_path) -> RecordStore:
    if request.param == "sqlite":
        s = open_record_store(f"sqlite:///{tmp_path / 'auth.db'}")
        s.open()
        yield s
        s.close()
    elif request.param == "mongo-fake":
        s = _fake_mongo_store()
        s.open()
        s.records.drop_index("expires_at_ttl")  # behave like a real server between TTL passes
        yield s
        s.close()
    else:
        url = os.environ.get("MONGODB_URL")
        if not url:
            pytest.skip(MONGO_SKIP)
        from smart_auth.store.mongo import MongoRecordStore

        s = MongoRecordStore(url, database=f"auth_test_{uuid.uuid4().hex[:12]}")
        s.open()
        try:
            yield s
        finally:
            s._client.drop_database(s.database_name)
            s.close()


def test_open_is_idempotent(store):
    store.open()  # a second open must neither fail nor lose records
    store.put("k", "a", {"v": 1})
    store.open()
    assert store.get("k", "a") == {"v": 1}


# -- put / get / list / remove ---------------------------------------------------------------------

def test_put_get_list_remove(store):
    doc = {"s": "x", "n": 1, "f": 1.5, "b": True, "none": None, "list": [1, {"nested": ["a"]}], "obj": {"k": "v"}}
    store.put("client", "b", doc)
    store.put("client", "a", {"v": "a"})
    store.put("user", "a", {"v": "user"})
    assert store.get("client", "b") == doc
    assert store.get("client", "zzz") is None
    assert store.get("other", "a") is None
    assert store.list("client") == [{"v": "a"}, doc]  # key order
    assert store.list("nothing") == []
    store.put("client", "a", {"v": "replaced"})
    assert store.get("client", "a") == {"v": "replaced"}
    assert store.remove("client", "a") is True
    assert store.remove("client", "a") is False
    assert store.get("client", "a") is None
    assert store.get("user", "a") == {"v": "user"}  # kinds are separate


def test_list_is_in_key_order(store):
    keys = ["b", "a", "B", "a1", "10", "9", "é"]
    for key in keys:
        store.put("k", key, {"key": key})
    assert [d["key"] for d in store.list("k")] == sorted(keys, key=lambda k: k.encode())


# -- expiry ----------------------------------------------------------------------------------------

def test_expired_records_are_absent(store):
    now = time.time()
    store.put("code", "old", {"v": "old"}, expires_at=now + PAST)
    store.put("code", "live", {"v": "live"}, expires_at=now + FUTURE)
    store.put("code", "forever", {"v": "forever"})
    assert store.get("code", "old") is None
    assert store.get("code", "live") == {"v": "live"}
    assert store.list("code") == [{"v": "forever"}, {"v": "live"}]
    assert store.take("code", "old") == (None, False)


def test_record_expires_at_its_time(store):
    store.put("code", "soon", {"v": 1}, expires_at=time.time() + 0.3)
    assert store.get("code", "soon") == {"v": 1}
    time.sleep(0.4)
    assert store.get("code", "soon") is None
    assert store.take("code", "soon") == (None, False)


def test_add_replaces_an_expired_record(store):
    store.put("jti", "k", {"v": "old"}, expires_at=time.time() + PAST)
    assert store.add("jti", "k", {"v": "new"}, expires_at=time.time() + FUTURE) is True
    assert store.get("jti", "k") == {"v": "new"}
    assert store.add("jti", "k", {"v": "third"}) is False
    assert store.get("jti", "k") == {"v": "new"}


def test_purge_expired(store):
    now = time.time()
    store.put("a", "old1", {}, expires_at=now + PAST)
    store.put("b", "old2", {}, expires_at=now + PAST)
    store.put("a", "live", {"v": 1}, expires_at=now + FUTURE)
    store.put("a", "forever", {"v": 2})
    assert store.purge_expired() == 2
    assert store.purge_expired() == 0
    assert store.list("a") == [{"v": 2}, {"v": 1}]
    assert store.purge_expired(now + 2 * FUTURE) == 1  # `now` given: the live one has expired by then
    assert store.list("a") == [{"v": 2}]


# -- add and take: atomic --------------------------------------------------------------------------

def test_add_inserts_only_once(store):
    assert store.add("jti", "k", {"v": 1}, expires_at=time.time() + FUTURE) is True
    assert store.add("jti", "k", {"v": 2}, expires_at=time.time() + FUTURE) is False
    assert store.get("jti", "k") == {"v": 1}
    assert store.add("jti", "other", {"v": 3}) is True
    assert store.add("other-kind", "k", {"v": 4}) is True
    store.remove("jti", "k")
    assert store.add("jti", "k", {"v": 5}) is True


def test_concurrent_adds_one_wins(store):
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def add(i: int) -> None:
        barrier.wait()
        results.append(store.add("jti", "same", {"i": i}, expires_at=time.time() + FUTURE))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1 and len(results) == 8


def test_take(store):
    store.put("code", "c", {"v": 1}, expires_at=time.time() + FUTURE)
    assert store.take("code", "c") == ({"v": 1}, True)
    assert store.take("code", "c") == ({"v": 1}, False)  # a replay: the doc, flagged as not first
    assert store.take("code", "c") == ({"v": 1}, False)
    assert store.get("code", "c") == {"v": 1}  # taking does not delete
    assert store.take("code", "absent") == (None, False)
    store.put("code", "c", {"v": 2})  # put clears the used flag
    assert store.take("code", "c") == ({"v": 2}, True)


def test_concurrent_takes_one_first(store):
    store.put("refresh", "t", {"v": 1}, expires_at=time.time() + FUTURE)
    firsts: list[bool] = []
    barrier = threading.Barrier(8)

    def take() -> None:
        barrier.wait()
        doc, first = store.take("refresh", "t")
        assert doc == {"v": 1}
        firsts.append(first)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert firsts.count(True) == 1 and len(firsts) == 8


# -- feeds -----------------------------------------------------------------------------------------

def test_feed_order_and_after(store):
    s1 = store.append("revocation", {"grant_id": "g1"})
    s2 = store.append("other", {"x": 1})
    s3 = store.append("revocation", {"grant_id": "g2"})
    assert s1 < s2 < s3
    assert store.feed("revocation", 0) == [(s1, {"grant_id": "g1"}), (s3, {"grant_id": "g2"})]
    assert store.feed("revocation", s1) == [(s3, {"grant_id": "g2"})]
    assert store.feed("revocation", s3) == []
    assert store.feed("other", 0) == [(s2, {"x": 1})]
    assert store.feed("nothing", 0) == []


def test_concurrent_appends_get_distinct_increasing_seqs(store):
    seqs: list[int] = []
    barrier = threading.Barrier(8)

    def append(i: int) -> None:
        barrier.wait()
        seqs.append(store.append("revocation", {"i": i}))

    threads = [threading.Thread(target=append, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seqs)) == 8
    assert [seq for seq, _ in store.feed("revocation", 0)] == sorted(seqs)


# -- AuthRecords over each backend -----------------------------------------------------------------

@pytest.fixture()
def records(store) -> AuthRecords:
    return AuthRecords(store)


def test_client_round_trip(records):
    client = Client(client_id="app", kind="asymmetric", scope="system/*.rs", jwks={"keys": [{"kty": "RSA", "kid": "k"}]},
                    name="App")
    records.put_client(client)
    assert records.client("app") == client
    assert records.client("app").auth_method == "private_key_jwt"
    assert records.clients() == [client]
    assert records.remove_client("app") is True
    assert records.client("app") is None


def test_user_round_trip(records):
    user = User(username="alice", password_hash="$argon2id$...", fhir_user="Patient/123")
    records.put_user(user)
    assert records.user("alice") == user
    assert records.user("alice").patient_id == "123"
    assert records.users() == [user]
    assert records.remove_user("alice") is True
    assert records.user("alice") is None


def test_signing_keys(records):
    key = SigningKey(kid="k1", private_jwk={"kty": "RSA", "kid": "k1"})
    assert records.add_signing_key(key) is True
    assert records.add_signing_key(key) is False
    key.retired_at = time.time()
    records.put_signing_key(key)
    assert records.signing_keys() == [key]


def test_grant_revoke_feeds_revocations(records):
    grant = Grant(id="g1", client_id="app", scope="patient/*.rs", patient="123", fhir_context=[{"reference": "Encounter/9"}])
    records.put_grant(grant)
    assert records.grant("g1") == grant
    assert records.grants() == [grant]
    start = records.revocations(0)[-1][0] if records.revocations(0) else 0
    records.revoke_grant("g1")
    assert records.grant("g1") is None
    revoked = records.revocations(start)
    assert [grant_id for _, grant_id in revoked] == ["g1"]
    assert records.revocations(revoked[-1][0]) == []


def test_expired_grant_is_gone(records):
    records.put_grant(Grant(id="g", client_id="app", scope="openid", expires_at=time.time() + PAST))
    assert records.grant("g") is None


def test_take_code_once(records):
    code = AuthorizationCode(code_hash=token_hash("the-code"), grant_id="g", client_id="app",
                             redirect_uri="https://app/cb", scope="openid", code_challenge="abc",
                             expires_at=time.time() + FUTURE)
    records.put_code(code)
    assert records.take_code("the-code") == (code, True)
    assert records.take_code("the-code") == (code, False)  # replay: the caller revokes the grant
    assert records.take_code("another") == (None, False)


def test_expired_code_cannot_be_taken(records):
    records.put_code(AuthorizationCode(code_hash=token_hash("c"), grant_id="g", client_id="app", redirect_uri="https://a/",
                                       scope="openid", code_challenge="x", expires_at=time.time() + PAST))
    assert records.take_code("c") == (None, False)


def test_take_refresh_token_once(records):
    token = RefreshToken(token_hash=token_hash("rt"), grant_id="g", client_id="app", scope="offline_access",
                         expires_at=time.time() + FUTURE)
    records.put_refresh_token(token)
    assert records.take_refresh_token("rt") == (token, True)
    assert records.take_refresh_token("rt") == (token, False)
    assert records.take_refresh_token("unknown") == (None, False)


def test_remember_jti_detects_replay(records):
    exp = time.time() + FUTURE
    assert records.remember_jti("app", "j1", exp) is True
    assert records.remember_jti("app", "j1", exp) is False
    assert records.remember_jti("other-app", "j1", exp) is True  # per issuer
    assert records.remember_jti("app", "j2", exp) is True
    assert records.remember_jti("app", "old", time.time() + PAST) is True
    assert records.remember_jti("app", "old", exp) is True  # the expired one no longer counts


def test_login_failures(records):
    assert records.login_failures("alice") == []
    assert len(records.record_login_failure("alice", 60)) == 1
    assert len(records.record_login_failure("alice", 60)) == 2
    records.clear_login_failures("alice")
    assert records.login_failures("alice") == []


# -- MongoRecordStore's own details (on mongomock) -------------------------------------------------

def test_mongo_url_database_and_options():
    from smart_auth.store.mongo import MongoRecordStore

    s = MongoRecordStore.from_url("mongodb://h1,h2/clinic?replicaSet=rs0&fhirTransactions=off")
    assert (s.url, s.database_name) == ("mongodb://h1,h2/clinic?replicaSet=rs0", "clinic")
    assert MongoRecordStore.from_url("mongodb://h/?fhirTransactions=required").database_name == "fhir"
    assert MongoRecordStore.from_url("mongodb://h/clinic", database="other").database_name == "other"
    assert type(open_record_store("mongodb://h/fhir")).__name__ == "MongoRecordStore"


def test_mongo_layout_and_indexes():
    s = _fake_mongo_store("clinic")
    s.open()
    info = s.records.index_information()
    assert info["kind_key"]["key"] == [("kind", 1), ("key", 1)] and info["kind_key"]["unique"] is True
    assert info["expires_at_ttl"]["expireAfterSeconds"] == 0
    s.put("client", "app", {"scope": "openid", "redirect_uris": ["https://a/"]}, expires_at=time.time() + FUTURE)
    raw = s._client["clinic"]["auth_records"].find_one({"kind": "client", "key": "app"})
    assert raw["doc"] == {"scope": "openid", "redirect_uris": ["https://a/"]}  # a BSON subdocument, not bytes
    assert raw["used"] is False and raw["expires_at"] is not None
    seq = s.append("revocation", {"grant_id": "g"})
    assert s._client["clinic"]["auth_feed"].find_one({"_id": seq})["doc"] == {"grant_id": "g"}
    s.close()
    with pytest.raises(RuntimeError):
        s.get("client", "app")


def test_mongo_add_over_a_record_removed_meanwhile(monkeypatch):
    """add's retry: the key collided on insert, but the record vanished before the conditional update."""
    s = _fake_mongo_store()
    s.open()
    s.put("jti", "k", {"v": "live"}, expires_at=time.time() + FUTURE)
    real_update = s.records.update_one

    def update_after_removal(*args, **kwargs):
        s.records.delete_one({"kind": "jti", "key": "k"})  # TTL or remove() got there first
        monkeypatch.setattr(s.records, "update_one", real_update)
        return real_update(*args, **kwargs)

    monkeypatch.setattr(s.records, "update_one", update_after_removal)
    assert s.add("jti", "k", {"v": "new"}) is True
    assert s.get("jti", "k") == {"v": "new"}
