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

PRAGMA user_version = 1;
