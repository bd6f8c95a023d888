//! The provisioning store's SQLite schema, as the steps that build it: a new database runs
//! them all, an older one the missing ones (`sqlite::migrate`).

/// Schema steps: `MIGRATIONS[v]` takes the schema from version `v` to `v + 1`.
///
/// `STRICT` tables make SQLite check column types. `revision` is the scheduling order (bumped
/// when an event is appended or amended; [`Snapshot::events`] is sorted by it). `request`
/// keeps the request as first submitted, for idempotent retries after modifications.
pub(super) const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE modems (
        id   TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
        base TEXT NOT NULL
    ) STRICT;
    CREATE TABLE events (
        id              INTEGER PRIMARY KEY CHECK (id > 0),
        modem           TEXT NOT NULL REFERENCES modems (id),
        source          TEXT NOT NULL,
        qos             TEXT NOT NULL,
        start_ms        INTEGER,
        stop_ms         INTEGER,
        idempotency_key TEXT UNIQUE CHECK (idempotency_key <> ''),
        created_ms      INTEGER NOT NULL,
        start_due_ms    INTEGER NOT NULL,
        state           TEXT NOT NULL
                        CHECK (state IN ('pending', 'active', 'completed', 'cancelled')),
        request         TEXT NOT NULL,
        revision        INTEGER NOT NULL UNIQUE
    ) STRICT;
    CREATE INDEX events_modem ON events (modem);
    CREATE TABLE audit (
        seq    INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms  INTEGER NOT NULL,
        event  INTEGER NOT NULL REFERENCES events (id),
        what   TEXT NOT NULL CHECK (what IN ('submitted', 'duplicate_submit', 'modified',
                                             'cancelled', 'applied', 'reverted')),
        due_ms INTEGER,
        CHECK ((what IN ('applied', 'reverted')) = (due_ms IS NOT NULL))
    ) STRICT;
    CREATE INDEX audit_event ON audit (event, seq);
",
    "
    -- Version 2. `config_base`: the configuration file's plan for the modem as last applied
    -- (NULL: never). Up to version 1 every start replaced the stored base with the configured
    -- one, so the stored base is the best record of it: the upgrade changes no outcome.
    ALTER TABLE modems ADD COLUMN config_base TEXT;
    UPDATE modems SET config_base = base;
    -- Who replaced a modem's base plan, when, from what to what (JSON).
    CREATE TABLE modem_audit (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms    INTEGER NOT NULL,
        modem    TEXT NOT NULL REFERENCES modems (id),
        source   TEXT NOT NULL,
        old_base TEXT NOT NULL,
        new_base TEXT NOT NULL
    ) STRICT;
    CREATE INDEX modem_audit_modem ON modem_audit (modem, seq);
",
    "
    -- Version 3.
    -- No query looks events up by modem (the engine holds them in memory, loaded in full at
    -- start), and with modems interleaved in the insert order every commit wrote a random
    -- leaf of this index: more log per commit and a larger, random write at every
    -- checkpoint, which set the API's latency tail (docs/PERFORMANCE.md, controller).
    DROP INDEX events_modem;
",
    "
    -- Version 4. The audit tables lose AUTOINCREMENT. It kept a row per table in
    -- `sqlite_sequence` and rewrote it on every insert: one more page in the log of every
    -- group commit, for a promise nothing needs. Audit rows are never deleted, so a plain
    -- `INTEGER PRIMARY KEY` (max + 1) gives the same ever-growing `seq`; the rows keep theirs.
    -- (Dropping a table removes its `sqlite_sequence` row; the NSM tables keep theirs.)
    CREATE TABLE audit_v4 (
        seq    INTEGER PRIMARY KEY,
        at_ms  INTEGER NOT NULL,
        event  INTEGER NOT NULL REFERENCES events (id),
        what   TEXT NOT NULL CHECK (what IN ('submitted', 'duplicate_submit', 'modified',
                                             'cancelled', 'applied', 'reverted')),
        due_ms INTEGER,
        CHECK ((what IN ('applied', 'reverted')) = (due_ms IS NOT NULL))
    ) STRICT;
    INSERT INTO audit_v4 (seq, at_ms, event, what, due_ms)
        SELECT seq, at_ms, event, what, due_ms FROM audit ORDER BY seq;
    DROP TABLE audit;
    ALTER TABLE audit_v4 RENAME TO audit;
    CREATE INDEX audit_event ON audit (event, seq);
    CREATE TABLE modem_audit_v4 (
        seq      INTEGER PRIMARY KEY,
        at_ms    INTEGER NOT NULL,
        modem    TEXT NOT NULL REFERENCES modems (id),
        source   TEXT NOT NULL,
        old_base TEXT NOT NULL,
        new_base TEXT NOT NULL
    ) STRICT;
    INSERT INTO modem_audit_v4 (seq, at_ms, modem, source, old_base, new_base)
        SELECT seq, at_ms, modem, source, old_base, new_base FROM modem_audit ORDER BY seq;
    DROP TABLE modem_audit;
    ALTER TABLE modem_audit_v4 RENAME TO modem_audit;
    CREATE INDEX modem_audit_modem ON modem_audit (modem, seq);
",
    "
    -- Version 5. The highest event id ever handed out: an event whose write failed burned
    -- its id, and a restart must not hand it out again (events holds only the stored ones).
    CREATE TABLE event_ids (
        one  INTEGER PRIMARY KEY CHECK (one = 1),
        last INTEGER NOT NULL CHECK (last >= 0)
    ) STRICT;
    INSERT INTO event_ids (one, last) VALUES (1, COALESCE((SELECT MAX(id) FROM events), 0));
",
];
