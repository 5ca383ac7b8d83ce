-- Embedded store schema (SQLite, WAL). Applied idempotently at start-up; PRAGMA user_version
-- records the schema version for future migrations.

-- Every version of every resource, in the global order the changes were committed.
-- seq is that order: history pages and (later) export cursors use it.
CREATE TABLE IF NOT EXISTS resource_versions (
    seq          INTEGER PRIMARY KEY,
    type         TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,   -- epoch milliseconds, UTC
    method       TEXT    NOT NULL,   -- POST, PUT, PATCH or DELETE
    body         BLOB,               -- stored JSON bytes; NULL marks a deletion
    UNIQUE (type, id, version)
);
CREATE INDEX IF NOT EXISTS resource_versions_type_seq ON resource_versions (type, seq);
CREATE INDEX IF NOT EXISTS resource_versions_updated ON resource_versions (last_updated);
CREATE INDEX IF NOT EXISTS resource_versions_type_updated ON resource_versions (type, last_updated);

-- The current version of each resource: a pointer into resource_versions.
-- rid is a compact surrogate key: the search index tables refer to resources by it.
CREATE TABLE IF NOT EXISTS resources (
    rid          INTEGER PRIMARY KEY,
    type         TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    seq          INTEGER NOT NULL REFERENCES resource_versions (seq),
    last_updated INTEGER NOT NULL,   -- of the current version (search on _lastUpdated, sort)
    deleted      INTEGER NOT NULL,
    UNIQUE (type, id)
);
-- A search without filters walks a type's resources in rid order (its paging order).
CREATE INDEX IF NOT EXISTS resources_by_type ON resources (type, rid);
CREATE INDEX IF NOT EXISTS resources_by_updated ON resources (type, last_updated, rid);


-- Search index: one row per searchable value of the current version of each resource, written in
-- the same transaction as the version (fhir_server/search/extract.py computes them). Rows of a
-- composite parameter's components share a `grp` number within their resource and carry the
-- parameter code as "<composite>$<component index>".
-- The lookup indexes end in rid, so a parameter's matching resources come from the index alone;
-- dates and numbers have one index led by each bound, so every prefix gets a range scan.
-- Indexes of schema version 1, replaced by those (idempotent on any database):
DROP INDEX IF EXISTS idx_string_find;
DROP INDEX IF EXISTS idx_token_find;
DROP INDEX IF EXISTS idx_token_text;
DROP INDEX IF EXISTS idx_reference_find;
DROP INDEX IF EXISTS idx_reference_url;
DROP INDEX IF EXISTS idx_date_find;
DROP INDEX IF EXISTS idx_number_find;
DROP INDEX IF EXISTS idx_quantity_find;
DROP INDEX IF EXISTS idx_uri_find;

CREATE TABLE IF NOT EXISTS idx_string (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    normalized TEXT NOT NULL, exact TEXT NOT NULL, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_string_by_value ON idx_string (type, param, normalized, rid);
CREATE INDEX IF NOT EXISTS idx_string_by_exact ON idx_string (type, param, exact, rid);
CREATE INDEX IF NOT EXISTS idx_string_rid ON idx_string (rid);

CREATE TABLE IF NOT EXISTS idx_token (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    system TEXT, code TEXT, text TEXT, type_system TEXT, type_code TEXT, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_token_by_code ON idx_token (type, param, code, system, rid);
CREATE INDEX IF NOT EXISTS idx_token_by_text ON idx_token (type, param, text, rid);
CREATE INDEX IF NOT EXISTS idx_token_rid ON idx_token (rid);

CREATE TABLE IF NOT EXISTS idx_reference (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    target_type TEXT, target_id TEXT, url TEXT, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_reference_by_target ON idx_reference (type, param, target_id, target_type, rid);
CREATE INDEX IF NOT EXISTS idx_reference_by_url ON idx_reference (type, param, url, rid);
CREATE INDEX IF NOT EXISTS idx_reference_rid ON idx_reference (rid);

CREATE TABLE IF NOT EXISTS idx_date (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    low INTEGER NOT NULL, high INTEGER NOT NULL, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_date_by_low ON idx_date (type, param, low, high, rid);
CREATE INDEX IF NOT EXISTS idx_date_by_high ON idx_date (type, param, high, low, rid);
CREATE INDEX IF NOT EXISTS idx_date_rid ON idx_date (rid);

CREATE TABLE IF NOT EXISTS idx_number (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    value REAL, low REAL NOT NULL, high REAL NOT NULL, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_number_by_low ON idx_number (type, param, low, high, rid);
CREATE INDEX IF NOT EXISTS idx_number_by_high ON idx_number (type, param, high, low, rid);
CREATE INDEX IF NOT EXISTS idx_number_rid ON idx_number (rid);

CREATE TABLE IF NOT EXISTS idx_quantity (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    system TEXT, code TEXT, unit TEXT, value REAL, low REAL NOT NULL, high REAL NOT NULL, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_quantity_by_low ON idx_quantity (type, param, low, high, rid);
CREATE INDEX IF NOT EXISTS idx_quantity_by_high ON idx_quantity (type, param, high, low, rid);
CREATE INDEX IF NOT EXISTS idx_quantity_rid ON idx_quantity (rid);

CREATE TABLE IF NOT EXISTS idx_uri (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_uri_by_value ON idx_uri (type, param, value, rid);
CREATE INDEX IF NOT EXISTS idx_uri_rid ON idx_uri (rid);

-- The transactional outbox (fhir_server/outbox, sqlite/outbox.py): jobs inserted by a unit of work in
-- the same transaction as its resource versions, then leased to the worker. seq is the order of
-- creation (claims take the oldest due job first); id is the job's public id (backend-neutral).
-- Times are epoch milliseconds, UTC. A (kind, key) is taken for good: done jobs are kept.
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY,
    id           TEXT    NOT NULL UNIQUE,
    kind         TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    payload      BLOB    NOT NULL,   -- JSON bytes
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'leased', 'done', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    available_at INTEGER NOT NULL,
    leased_until INTEGER,            -- set while leased
    lease_token  TEXT,               -- set while leased: the holder's proof
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (kind, key)
);
-- Claiming walks due pending jobs in available_at order (outbox_due), and the few leased ones by
-- kind and state (outbox_by_kind, which also serves listings of a kind).
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, available_at, seq);
CREATE INDEX IF NOT EXISTS outbox_by_kind ON outbox (kind, state, seq);

PRAGMA user_version = 3;
