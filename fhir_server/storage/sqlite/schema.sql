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


-- Search index: one row per searchable value of the current version of each resource, written in
-- the same transaction as the version (fhir_server/search/extract.py computes them). Rows of a
-- composite parameter's components share a `grp` number within their resource and carry the
-- parameter code as "<composite>$<component index>".
CREATE TABLE IF NOT EXISTS idx_string (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    normalized TEXT NOT NULL, exact TEXT NOT NULL, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_string_find ON idx_string (type, param, normalized);
CREATE INDEX IF NOT EXISTS idx_string_rid ON idx_string (rid);

CREATE TABLE IF NOT EXISTS idx_token (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    system TEXT, code TEXT, text TEXT, type_system TEXT, type_code TEXT, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_token_find ON idx_token (type, param, code, system);
CREATE INDEX IF NOT EXISTS idx_token_text ON idx_token (type, param, text);
CREATE INDEX IF NOT EXISTS idx_token_rid ON idx_token (rid);

CREATE TABLE IF NOT EXISTS idx_reference (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    target_type TEXT, target_id TEXT, url TEXT, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_reference_find ON idx_reference (type, param, target_id, target_type);
CREATE INDEX IF NOT EXISTS idx_reference_url ON idx_reference (type, param, url);
CREATE INDEX IF NOT EXISTS idx_reference_rid ON idx_reference (rid);

CREATE TABLE IF NOT EXISTS idx_date (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    low INTEGER NOT NULL, high INTEGER NOT NULL, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_date_find ON idx_date (type, param, low, high);
CREATE INDEX IF NOT EXISTS idx_date_rid ON idx_date (rid);

CREATE TABLE IF NOT EXISTS idx_number (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    value REAL, low REAL NOT NULL, high REAL NOT NULL, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_number_find ON idx_number (type, param, low, high);
CREATE INDEX IF NOT EXISTS idx_number_rid ON idx_number (rid);

CREATE TABLE IF NOT EXISTS idx_quantity (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    system TEXT, code TEXT, unit TEXT, value REAL, low REAL NOT NULL, high REAL NOT NULL, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_quantity_find ON idx_quantity (type, param, code, low, high);
CREATE INDEX IF NOT EXISTS idx_quantity_rid ON idx_quantity (rid);

CREATE TABLE IF NOT EXISTS idx_uri (
    rid INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL, grp INTEGER
);
CREATE INDEX IF NOT EXISTS idx_uri_find ON idx_uri (type, param, value);
CREATE INDEX IF NOT EXISTS idx_uri_rid ON idx_uri (rid);

PRAGMA user_version = 1;
