//! The embedded default store: one SQLite file in write-ahead-log mode.
//!
//! Durability settings, and why:
//!
//! - `journal_mode=WAL`: a commit appends to the log instead of rewriting pages in place, so a
//!   kill at any instant leaves either the whole transaction or none of it, and readers (a CLI,
//!   a status page) never block the writer. The mode is stored in the file; it is checked on
//!   every open.
//! - `synchronous=FULL`: in WAL mode, `NORMAL` syncs the log only at checkpoints, so a commit
//!   survives a process crash but not a power cut or kernel panic of the gateway — the last
//!   acknowledged events would be lost. `FULL` fsyncs the log on every commit, which is the
//!   promise "durable before acknowledged". The cost is one fsync per operation; provisioning
//!   is a low-rate, human- or billing-driven stream.
//! - `foreign_keys=ON` (per connection; SQLite defaults it off): events refer to modems and
//!   audit lines to events.
//! - Every write runs in one `BEGIN IMMEDIATE` transaction, which takes the write lock up
//!   front so a concurrent writer waits (up to [`BUSY_TIMEOUT`]) instead of failing mid-way.
//!
//! The schema version lives in `PRAGMA user_version`; [`migrate`] applies the missing steps of
//! [`MIGRATIONS`], each in its own transaction with its version bump, and refuses a database
//! from a newer release. Grants, sources and requests are stored as JSON (serde), so adding an
//! optional QoS field needs no migration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Row, Savepoint, Transaction, TransactionBehavior,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::schema::MIGRATIONS;
use super::{Durability, Store, StoreError};
use crate::provision::{
    AuditEntry, AuditWhat, Event, EventRequest, EventState, ModemAuditEntry, ModemRecord, QosLevel,
    Snapshot, StoredEvent,
};

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 5;

/// How long a write waits for another connection's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite [`Store`]. One connection, used by one task at a time (`&mut self` for writes).
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Inside [`Store::begin_batch`] … [`Store::commit_batch`]: one open `BEGIN IMMEDIATE`
    /// transaction, each write a savepoint in it.
    in_batch: bool,
    /// The connection's `PRAGMA synchronous`: `FULL`, except while a
    /// [`Durability::Deferred`] batch is open.
    synchronous: &'static str,
    _checkpointer: Checkpointer,
}

/// How often the checkpointer copies the write-ahead log into the database file.
///
/// Often, so that each checkpoint's sync of the database file is small: the commits' syncs
/// of the log share the disk's flushes with it, and a checkpoint of 200 ms of writes (about
/// a megabyte at 10k events/s) held the commits right after it for 4–5 ms, 2–3 commits per
/// checkpoint. At 20 ms the API's p99 at 10k events/s went from 2.0–2.8 ms to 1.3–1.5 ms
/// (docs/PERFORMANCE.md, controller). A passive checkpoint with nothing to copy costs a few
/// microseconds.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// The store's checkpointer: a thread with its own connection that runs
/// `PRAGMA wal_checkpoint(PASSIVE)` every [`CHECKPOINT_EVERY`] (automatic checkpoints are off
/// on the store's connection). A passive checkpoint never blocks the writer. The thread ends
/// when the store is dropped.
struct Checkpointer {
    _stop: std::sync::mpsc::Sender<()>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path).map_err(sqlite("checkpointer: open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sqlite("checkpointer: set busy timeout"))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("shaper-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(e) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed; retried");
                    }
                }
            })
            .map_err(|e| StoreError::Checkpointer(e.to_string()))?;
        Ok(Checkpointer { _stop: stop })
    }
}

/// One write: its own `BEGIN IMMEDIATE` transaction, or a savepoint inside a batch. Either way
/// a write that fails part-way changes nothing (dropping it rolls it back). A write of one
/// statement inside a batch needs no savepoint ([`SqliteStore::write_one`]): SQLite backs out
/// a failed statement by itself and keeps the transaction's earlier statements.
enum Tx<'c> {
    Own(Transaction<'c>),
    InBatch(Savepoint<'c>),
    OneStatement(&'c Connection),
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            Tx::Own(t) => t,
            Tx::InBatch(s) => s,
            Tx::OneStatement(c) => c,
        }
    }
}

impl Tx<'_> {
    /// Commits an own transaction (durable on return); releases a savepoint (durable with
    /// its batch).
    fn commit(self) -> rusqlite::Result<()> {
        match self {
            Tx::Own(t) => t.commit(),
            Tx::InBatch(s) => s.commit(),
            Tx::OneStatement(_) => Ok(()),
        }
    }
}

fn sqlite(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { op, source }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

fn to_json<T: Serialize>(what: &'static str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode { what, source })
}

fn from_json<T: DeserializeOwned>(
    table: &'static str,
    key: &dyn ToString,
    column: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        table,
        key: key.to_string(),
        column,
        detail: e.to_string(),
    })
}

fn state_name(state: EventState) -> &'static str {
    state.as_str()
}

fn parse_state(id: u64, name: &str) -> Result<EventState, StoreError> {
    Ok(match name {
        "pending" => EventState::Pending,
        "active" => EventState::Active,
        "completed" => EventState::Completed,
        "cancelled" => EventState::Cancelled,
        other => {
            return Err(StoreError::Corrupt {
                table: "events",
                key: id.to_string(),
                column: "state",
                detail: format!("unknown state {other:?}"),
            });
        }
    })
}

/// Forward moves only; staying put is allowed (idempotent rewrites after a restore).
fn may_move(from: EventState, to: EventState) -> bool {
    use EventState::{Active, Cancelled, Completed, Pending};
    from == to
        || matches!(
            (from, to),
            (Pending, Active | Completed | Cancelled) | (Active, Completed | Cancelled)
        )
}

fn audit_columns(what: &AuditWhat) -> (&'static str, Option<u64>) {
    match *what {
        AuditWhat::Submitted => ("submitted", None),
        AuditWhat::DuplicateSubmit => ("duplicate_submit", None),
        AuditWhat::Modified => ("modified", None),
        AuditWhat::Cancelled => ("cancelled", None),
        AuditWhat::Applied { due_ms } => ("applied", Some(due_ms)),
        AuditWhat::Reverted { due_ms } => ("reverted", Some(due_ms)),
    }
}

fn parse_audit(seq: i64, what: &str, due_ms: Option<u64>) -> Result<AuditWhat, StoreError> {
    Ok(match (what, due_ms) {
        ("submitted", None) => AuditWhat::Submitted,
        ("duplicate_submit", None) => AuditWhat::DuplicateSubmit,
        ("modified", None) => AuditWhat::Modified,
        ("cancelled", None) => AuditWhat::Cancelled,
        ("applied", Some(due_ms)) => AuditWhat::Applied { due_ms },
        ("reverted", Some(due_ms)) => AuditWhat::Reverted { due_ms },
        _ => {
            return Err(StoreError::Corrupt {
                table: "audit",
                key: seq.to_string(),
                column: "what",
                detail: format!("{what:?} with due_ms {due_ms:?}"),
            });
        }
    })
}

/// Brings the schema to [`SCHEMA_VERSION`], one transaction per step.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite("migrate: begin"))?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sqlite("migrate: read user_version"))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        let step = usize::try_from(version).map_err(|_| StoreError::Corrupt {
            table: "pragma",
            key: "user_version".into(),
            column: "user_version",
            detail: format!("negative version {version}"),
        })?;
        tx.execute_batch(MIGRATIONS[step])
            .map_err(sqlite("migrate: apply step"))?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(sqlite("migrate: write user_version"))?;
        tx.commit().map_err(sqlite("migrate: commit"))?;
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, switches it to WAL with full
    /// synchronous commits and foreign keys, and migrates the schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut conn = Connection::open(&path).map_err(sqlite("open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sqlite("set busy timeout"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sqlite("set journal_mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal { found: mode });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite("set synchronous"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sqlite("set foreign_keys"))?;
        migrate(&mut conn)?;
        // Checkpoints (copying the log into the database file, with its own syncs) run on a
        // thread of their own, not inside a commit that an API answer or a tick waits for.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(sqlite("set wal_autocheckpoint"))?;
        let checkpointer = Checkpointer::start(&path)?;
        Ok(SqliteStore {
            conn,
            path,
            in_batch: false,
            synchronous: "FULL",
            _checkpointer: checkpointer,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `PRAGMA integrity_check`: `["ok"]` for a sound database, else SQLite's findings.
    pub fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA integrity_check")
            .map_err(sqlite("integrity_check"))?;
        stmt.query_map([], |r| r.get(0))
            .and_then(Iterator::collect)
            .map_err(sqlite("integrity_check"))
    }

    fn write(&mut self, op: &'static str) -> Result<Tx<'_>, StoreError> {
        if self.in_batch {
            self.conn.savepoint().map(Tx::InBatch).map_err(sqlite(op))
        } else {
            self.conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map(Tx::Own)
                .map_err(sqlite(op))
        }
    }

    /// A write of at most one modifying statement (reads before it are fine): inside a batch
    /// it runs without a savepoint of its own (each costs two more statements, ~15% of a
    /// group commit's SQLite time), since a failed statement is backed out by SQLite.
    fn write_one(&mut self, op: &'static str) -> Result<Tx<'_>, StoreError> {
        if self.in_batch {
            Ok(Tx::OneStatement(&self.conn))
        } else {
            self.write(op)
        }
    }

    /// Back to `synchronous=FULL` after a [`Durability::Deferred`] batch: every write outside
    /// a batch is synced.
    fn restore_full_sync(&mut self) -> Result<(), StoreError> {
        if self.synchronous != "FULL" && self.conn.is_autocommit() {
            self.conn
                .pragma_update(None, "synchronous", "FULL")
                .map_err(sqlite("set synchronous"))?;
            self.synchronous = "FULL";
        }
        Ok(())
    }

    /// A read transaction, so multi-statement reads see one consistent state.
    fn read(&self, op: &'static str) -> Result<Transaction<'_>, StoreError> {
        self.conn.unchecked_transaction().map_err(sqlite(op))
    }
}

fn event_state(tx: &Connection, id: u64) -> Result<Option<EventState>, StoreError> {
    let name: Option<String> = tx
        .prepare_cached("SELECT state FROM events WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([id], |r| r.get(0)).optional())
        .map_err(sqlite("read event state"))?;
    name.map(|n| parse_state(id, &n)).transpose()
}

/// Names the constraint an event insert violated, from inside its (still open) transaction.
fn explain_event_conflict(
    tx: &Connection,
    event: &Event,
    source: rusqlite::Error,
) -> Result<StoreError, StoreError> {
    let op = "explain append_event conflict";
    if let Some(key) = &event.idempotency_key {
        let existing: Option<u64> = tx
            .query_row(
                "SELECT id FROM events WHERE idempotency_key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite(op))?;
        if let Some(existing) = existing {
            return Ok(StoreError::IdempotencyKeyTaken {
                key: key.clone(),
                existing,
            });
        }
    }
    if event_state(tx, event.id)?.is_some() {
        return Ok(StoreError::DuplicateEvent(event.id));
    }
    let modem: Option<i64> = tx
        .query_row("SELECT 1 FROM modems WHERE id = ?1", [&event.modem], |r| {
            r.get(0)
        })
        .optional()
        .map_err(sqlite(op))?;
    if modem.is_none() {
        return Ok(StoreError::UnknownModem(event.modem.clone()));
    }
    Ok(StoreError::Sqlite {
        op: "append_event",
        source,
    })
}

fn event_from_row(row: &Row<'_>) -> Result<StoredEvent, StoreError> {
    let op = "load: read event";
    let id: u64 = row.get("id").map_err(sqlite(op))?;
    let text = |column: &'static str| -> Result<String, StoreError> {
        row.get::<_, String>(column).map_err(sqlite(op))
    };
    let time = |column: &'static str| -> Result<Option<u64>, StoreError> {
        row.get::<_, Option<u64>>(column).map_err(sqlite(op))
    };
    let request: EventRequest = from_json("events", &id, "request", &text("request")?)?;
    let event = Event {
        id,
        level: request.level.clone(),
        modem: text("modem")?,
        source: from_json("events", &id, "source", &text("source")?)?,
        qos: from_json("events", &id, "qos", &text("qos")?)?,
        start_ms: time("start_ms")?,
        stop_ms: time("stop_ms")?,
        idempotency_key: row
            .get::<_, Option<String>>("idempotency_key")
            .map_err(sqlite(op))?,
        created_ms: row.get("created_ms").map_err(sqlite(op))?,
        start_due_ms: row.get("start_due_ms").map_err(sqlite(op))?,
        state: parse_state(id, &text("state")?)?,
    };
    Ok(StoredEvent { event, request })
}

impl Store for SqliteStore {
    fn begin_batch(&mut self, durability: Durability) -> Result<(), StoreError> {
        if self.in_batch {
            return Err(StoreError::BatchOpen);
        }
        // In WAL mode NORMAL writes the commit to the log without syncing it; the next FULL
        // commit's sync covers it (the log is one sequential file).
        let sync = match durability {
            Durability::Synced => "FULL",
            Durability::Deferred => "NORMAL",
        };
        if sync != self.synchronous {
            self.conn
                .pragma_update(None, "synchronous", sync)
                .map_err(sqlite("begin_batch: set synchronous"))?;
            self.synchronous = sync;
        }
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(sqlite("begin_batch"))?;
        self.in_batch = true;
        Ok(())
    }

    fn commit_batch(&mut self) -> Result<(), StoreError> {
        if !self.in_batch {
            return Err(StoreError::NoBatch);
        }
        self.in_batch = false;
        let committed = self.conn.execute_batch("COMMIT");
        self.restore_full_sync()?;
        match committed {
            Ok(()) => Ok(()),
            Err(source) => {
                // A failed COMMIT may leave the transaction open: end it, so that nothing of
                // the batch is applied later by accident.
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                Err(StoreError::Sqlite {
                    op: "commit_batch",
                    source,
                })
            }
        }
    }

    fn burn_event_ids(&mut self, last: u64) -> Result<(), StoreError> {
        let last = i64::try_from(last).map_err(|_| StoreError::Corrupt {
            table: "event_ids",
            key: last.to_string(),
            column: "last",
            detail: "above the largest id SQLite holds".into(),
        })?;
        let tx = self.write_one("burn_event_ids")?;
        tx.prepare_cached("UPDATE event_ids SET last = MAX(last, ?1) WHERE one = 1")
            .and_then(|mut stmt| stmt.execute([last]))
            .map_err(sqlite("burn_event_ids"))?;
        tx.commit().map_err(sqlite("burn_event_ids: commit"))
    }

    fn batch_intact(&self) -> bool {
        self.in_batch && !self.conn.is_autocommit()
    }

    fn rollback_batch(&mut self) {
        if std::mem::take(&mut self.in_batch) && !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "rolling back a store batch");
            }
        }
        if let Err(e) = self.restore_full_sync() {
            tracing::error!(error = %e, "after rolling back a store batch");
        }
    }

    fn put_modem(&mut self, id: &str, base: &QosLevel) -> Result<(), StoreError> {
        if id.is_empty() {
            return Err(StoreError::EmptyModem);
        }
        let base = to_json("base plan", base)?;
        let tx = self.write("put_modem")?;
        tx.execute(
            "INSERT INTO modems (id, base) VALUES (?1, ?2)
             ON CONFLICT (id) DO UPDATE SET base = excluded.base",
            (id, &base),
        )
        .map_err(sqlite("put_modem"))?;
        tx.commit().map_err(sqlite("put_modem: commit"))
    }

    fn modem(&self, id: &str) -> Result<Option<QosLevel>, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT base FROM modems WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(sqlite("modem"))?;
        text.map(|t| from_json("modems", &id, "base", &t))
            .transpose()
    }

    fn set_config_base(&mut self, id: &str, plan: &QosLevel) -> Result<(), StoreError> {
        let plan = to_json("configured base plan", plan)?;
        let tx = self.write("set_config_base")?;
        let updated = tx
            .execute(
                "UPDATE modems SET config_base = ?2 WHERE id = ?1",
                (id, &plan),
            )
            .map_err(sqlite("set_config_base"))?;
        if updated == 0 {
            return Err(StoreError::UnknownModem(id.to_owned()));
        }
        tx.commit().map_err(sqlite("set_config_base: commit"))
    }

    fn config_base(&self, id: &str) -> Result<Option<QosLevel>, StoreError> {
        let text: Option<Option<String>> = self
            .conn
            .query_row("SELECT config_base FROM modems WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sqlite("config_base"))?;
        text.flatten()
            .map(|t| from_json("modems", &id, "config_base", &t))
            .transpose()
    }

    fn append_modem_audit(&mut self, entry: &ModemAuditEntry) -> Result<(), StoreError> {
        let source = to_json("base-plan change source", &entry.by)?;
        let old = to_json("old base plan", &entry.old)?;
        let new = to_json("new base plan", &entry.new)?;
        let tx = self.write("append_modem_audit")?;
        let inserted = tx.execute(
            "INSERT INTO modem_audit (at_ms, modem, source, old_base, new_base)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![entry.at_ms, entry.modem, source, old, new],
        );
        match inserted {
            Ok(_) => tx.commit().map_err(sqlite("append_modem_audit: commit")),
            Err(e) if is_constraint(&e) => Err(StoreError::UnknownModem(entry.modem.clone())),
            Err(e) => Err(StoreError::Sqlite {
                op: "append_modem_audit",
                source: e,
            }),
        }
    }

    fn modem_audit(&self, id: &str) -> Result<Vec<ModemAuditEntry>, StoreError> {
        let op = "modem_audit";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, at_ms, source, old_base, new_base FROM modem_audit
                 WHERE modem = ?1 ORDER BY seq",
            )
            .map_err(sqlite(op))?;
        let rows = stmt
            .query_map([id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, u64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(sqlite(op))?;
        rows.into_iter()
            .map(|(seq, at_ms, source, old, new)| {
                Ok(ModemAuditEntry {
                    at_ms,
                    modem: id.to_owned(),
                    by: from_json("modem_audit", &seq, "source", &source)?,
                    old: from_json("modem_audit", &seq, "old_base", &old)?,
                    new: from_json("modem_audit", &seq, "new_base", &new)?,
                })
            })
            .collect()
    }

    fn append_event(&mut self, event: &Event) -> Result<(), StoreError> {
        let stored = StoredEvent::accepted(event.clone());
        let source = to_json("event source", &event.source)?;
        let qos = to_json("event grant", &event.qos)?;
        let request = to_json("event request", &stored.request)?;
        let tx = self.write_one("append_event")?;
        let inserted = tx
            .prepare_cached(
                "INSERT INTO events (id, modem, source, qos, start_ms, stop_ms, idempotency_key,
                                 created_ms, start_due_ms, state, request, revision)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
                     (SELECT COALESCE(MAX(revision), 0) + 1 FROM events))",
            )
            .and_then(|mut stmt| {
                stmt.execute(rusqlite::params![
                    event.id,
                    event.modem,
                    source,
                    qos,
                    event.start_ms,
                    event.stop_ms,
                    event.idempotency_key,
                    event.created_ms,
                    event.start_due_ms,
                    state_name(event.state),
                    request,
                ])
            });
        match inserted {
            Ok(_) => tx.commit().map_err(sqlite("append_event: commit")),
            Err(e) if is_constraint(&e) => Err(explain_event_conflict(&tx, event, e)?),
            Err(e) => Err(StoreError::Sqlite {
                op: "append_event",
                source: e,
            }),
        }
    }

    fn set_event_state(&mut self, id: u64, state: EventState) -> Result<(), StoreError> {
        let tx = self.write_one("set_event_state")?;
        let from = event_state(&tx, id)?.ok_or(StoreError::UnknownEvent(id))?;
        if !may_move(from, state) {
            return Err(StoreError::StateRegression {
                id,
                from,
                to: state,
            });
        }
        if from != state {
            tx.prepare_cached("UPDATE events SET state = ?1 WHERE id = ?2")
                .and_then(|mut stmt| stmt.execute((state_name(state), id)))
                .map_err(sqlite("set_event_state"))?;
        }
        tx.commit().map_err(sqlite("set_event_state: commit"))
    }

    fn amend_event(&mut self, event: &Event) -> Result<(), StoreError> {
        let qos = to_json("event grant", &event.qos)?;
        let id = event.id;
        let tx = self.write_one("amend_event")?;
        let state = event_state(&tx, id)?.ok_or(StoreError::UnknownEvent(id))?;
        if state != EventState::Pending {
            return Err(StoreError::NotPending { id, state });
        }
        tx.execute(
            "UPDATE events
             SET qos = ?1, start_ms = ?2, stop_ms = ?3, start_due_ms = ?4,
                 revision = (SELECT MAX(revision) + 1 FROM events)
             WHERE id = ?5",
            rusqlite::params![qos, event.start_ms, event.stop_ms, event.start_due_ms, id],
        )
        .map_err(sqlite("amend_event"))?;
        tx.commit().map_err(sqlite("amend_event: commit"))
    }

    fn append_audit(&mut self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let tx = self.write("append_audit")?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO audit (at_ms, event, what, due_ms) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sqlite("append_audit: prepare"))?;
            for AuditEntry { at_ms, event, what } in entries {
                let (what, due_ms) = audit_columns(what);
                match stmt.execute(rusqlite::params![at_ms, event, what, due_ms]) {
                    Ok(_) => {}
                    Err(e) if is_constraint(&e) && event_state(&tx, *event)?.is_none() => {
                        return Err(StoreError::UnknownEvent(*event));
                    }
                    Err(e) => {
                        return Err(StoreError::Sqlite {
                            op: "append_audit",
                            source: e,
                        });
                    }
                }
            }
        }
        tx.commit().map_err(sqlite("append_audit: commit"))
    }

    fn audit(&self, event: u64) -> Result<Vec<AuditEntry>, StoreError> {
        let op = "audit";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, at_ms, what, due_ms FROM audit WHERE event = ?1 ORDER BY seq",
            )
            .map_err(sqlite(op))?;
        let rows = stmt
            .query_map([event], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, u64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<u64>>(3)?,
                ))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(sqlite(op))?;
        rows.into_iter()
            .map(|(seq, at_ms, what, due_ms)| {
                Ok(AuditEntry {
                    at_ms,
                    event,
                    what: parse_audit(seq, &what, due_ms)?,
                })
            })
            .collect()
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let tx = self.read("load: begin")?;
        let modems = {
            let mut stmt = tx
                .prepare("SELECT id, base FROM modems ORDER BY id")
                .map_err(sqlite("load: modems"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(sqlite("load: modems"))?;
            rows.into_iter()
                .map(|(id, base)| {
                    let base = from_json("modems", &id, "base", &base)?;
                    Ok(ModemRecord { id, base })
                })
                .collect::<Result<Vec<_>, StoreError>>()?
        };
        let events = {
            let mut stmt = tx
                .prepare("SELECT * FROM events ORDER BY revision")
                .map_err(sqlite("load: events"))?;
            let mut rows = stmt.query([]).map_err(sqlite("load: events"))?;
            let mut events = Vec::new();
            while let Some(row) = rows.next().map_err(sqlite("load: events"))? {
                events.push(event_from_row(row)?);
            }
            events
        };
        let burned: i64 = tx
            .query_row("SELECT last FROM event_ids WHERE one = 1", [], |r| r.get(0))
            .map_err(sqlite("load: event ids"))?;
        tx.finish().map_err(sqlite("load: end"))?;
        let stored = events.iter().map(|e| e.event.id).max().unwrap_or(0);
        let last_event_id = u64::try_from(burned).unwrap_or(0).max(stored);
        Ok(Snapshot {
            modems,
            events,
            last_event_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use super::*;
    use crate::provision::{BaseSource, ServiceTargets, Source};
    use crate::store::TempDir;

    const T0: u64 = 1_700_000_000_000;

    fn base() -> QosLevel {
        QosLevel {
            max_up_bps: Some(10_000_000),
            max_down_bps: Some(100_000_000),
            committed_up_bps: Some(1_000_000),
            committed_down_bps: Some(5_000_000),
            burst_bytes: Some(30_000),
            priority: Some(2),
            mtu: Some(1500),
            targets: ServiceTargets {
                availability_ppm: Some(999_900),
                error_rate_ppm: Some(10),
                loss_ppm: Some(1000),
                setup_time_ms: Some(2000),
                repair_time_ms: Some(3_600_000),
            },
        }
    }

    fn event(id: u64, key: Option<&str>) -> Event {
        Event {
            id,
            modem: "cm1".into(),
            source: Source::Csr { user: "ann".into() },
            qos: QosLevel {
                max_down_bps: Some(200_000_000),
                priority: Some(5),
                ..QosLevel::default()
            },
            start_ms: Some(T0 + 1000),
            stop_ms: Some(T0 + 5000),
            idempotency_key: key.map(Into::into),
            level: None,
            created_ms: T0,
            start_due_ms: T0 + 1000,
            state: EventState::Pending,
        }
    }

    fn open(dir: &TempDir) -> SqliteStore {
        SqliteStore::open(dir.path().join("shaper.db")).unwrap()
    }

    fn with_modem(dir: &TempDir) -> SqliteStore {
        let mut store = open(dir);
        store.put_modem("cm1", &base()).unwrap();
        store
    }

    /// The one integer `sql` (a `count(*)`) returns.
    fn count(store: &SqliteStore, sql: &str) -> i64 {
        store.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// The first column of every row `sql` returns.
    fn column<T: rusqlite::types::FromSql>(store: &SqliteStore, sql: &str) -> Vec<T> {
        store
            .conn
            .prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn pragma(store: &SqliteStore, name: &str) -> String {
        store
            .conn
            .pragma_query_value(None, name, |r| r.get::<_, rusqlite::types::Value>(0))
            .map(|v| match v {
                rusqlite::types::Value::Text(t) => t,
                rusqlite::types::Value::Integer(i) => i.to_string(),
                other => format!("{other:?}"),
            })
            .unwrap()
    }

    #[test]
    fn pragmas_wal_full_foreign_keys_and_schema_version() {
        let dir = TempDir::new("pragmas");
        let store = open(&dir);
        assert_eq!(pragma(&store, "journal_mode"), "wal");
        assert_eq!(pragma(&store, "synchronous"), "2", "FULL");
        assert_eq!(pragma(&store, "foreign_keys"), "1");
        assert_eq!(pragma(&store, "user_version"), SCHEMA_VERSION.to_string());
        assert_eq!(store.integrity_check().unwrap(), ["ok"]);
        drop(store);
        // WAL is a property of the file: a plain connection sees it too.
        let plain = Connection::open(dir.path().join("shaper.db")).unwrap();
        let mode: String = plain
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn modems_round_trip_and_upsert() {
        let dir = TempDir::new("modems");
        let mut store = open(&dir);
        assert_eq!(store.modem("cm1").unwrap(), None);
        store.put_modem("cm1", &base()).unwrap();
        store.put_modem("cm2", &QosLevel::default()).unwrap();
        assert_eq!(store.modem("cm1").unwrap(), Some(base()));
        assert_eq!(store.modem("cm2").unwrap(), Some(QosLevel::default()));
        let slower = QosLevel {
            max_down_bps: Some(50_000_000),
            ..base()
        };
        store.put_modem("cm1", &slower).unwrap();
        assert_eq!(store.modem("cm1").unwrap(), Some(slower));
        assert!(matches!(
            store.put_modem("", &base()),
            Err(StoreError::EmptyModem)
        ));
        let snapshot = store.load().unwrap();
        assert_eq!(
            snapshot.modems,
            [
                ModemRecord {
                    id: "cm1".into(),
                    base: slower
                },
                ModemRecord {
                    id: "cm2".into(),
                    base: QosLevel::default()
                }
            ]
        );
    }

    #[test]
    fn events_round_trip_with_states_and_amendments() {
        let dir = TempDir::new("events");
        let mut store = with_modem(&dir);
        let sources = [
            Source::Csr { user: "ann".into() },
            Source::Subscriber,
            Source::Automation {
                trigger: "billing".into(),
            },
        ];
        let mut expected = Vec::new();
        for (i, source) in sources.into_iter().enumerate() {
            let id = u64::try_from(i).unwrap() + 1;
            let mut e = event(id, None);
            e.source = source;
            if id == 2 {
                (e.start_ms, e.stop_ms, e.idempotency_key) = (None, None, Some("k2".into()));
                e.qos = base();
            }
            store.append_event(&e).unwrap();
            expected.push(StoredEvent::accepted(e));
        }
        let loaded = store.load().unwrap();
        assert_eq!(loaded.events, expected);

        // Amend event 1: new timing and grant, same original request; it moves to the end
        // of the scheduling order.
        let mut amended = expected[0].event.clone();
        amended.start_ms = Some(T0 + 2000);
        amended.stop_ms = None;
        amended.start_due_ms = T0 + 2000;
        amended.qos = QosLevel {
            priority: Some(7),
            ..QosLevel::default()
        };
        store.amend_event(&amended).unwrap();
        let loaded = store.load().unwrap();
        let order: Vec<u64> = loaded.events.iter().map(|s| s.event.id).collect();
        assert_eq!(order, [2, 3, 1]);
        assert_eq!(loaded.events[2].event, amended);
        assert_eq!(loaded.events[2].request, expected[0].request);

        // States move forward only.
        store.set_event_state(1, EventState::Active).unwrap();
        store.set_event_state(1, EventState::Active).unwrap();
        store.set_event_state(1, EventState::Completed).unwrap();
        store.set_event_state(2, EventState::Cancelled).unwrap();
        let states: Vec<EventState> = store
            .load()
            .unwrap()
            .events
            .iter()
            .map(|s| s.event.state)
            .collect();
        use EventState::{Cancelled, Completed, Pending};
        assert_eq!(states, [Cancelled, Pending, Completed]);
        assert!(matches!(
            store.set_event_state(1, EventState::Active),
            Err(StoreError::StateRegression {
                id: 1,
                from: Completed,
                to: EventState::Active
            })
        ));
        assert!(matches!(
            store.amend_event(&amended),
            Err(StoreError::NotPending {
                id: 1,
                state: Completed
            })
        ));
        assert!(matches!(
            store.set_event_state(9, EventState::Active),
            Err(StoreError::UnknownEvent(9))
        ));
        assert!(matches!(
            store.amend_event(&event(9, None)),
            Err(StoreError::UnknownEvent(9))
        ));
        assert!(matches!(
            store.append_event(&event(1, None)),
            Err(StoreError::DuplicateEvent(1))
        ));
        let mut stray = event(4, None);
        stray.modem = "cm9".into();
        assert!(matches!(
            store.append_event(&stray),
            Err(StoreError::UnknownModem(m)) if m == "cm9"
        ));
    }

    #[test]
    fn audit_round_trip() {
        let dir = TempDir::new("audit");
        let mut store = with_modem(&dir);
        store.append_event(&event(1, None)).unwrap();
        store.append_event(&event(2, None)).unwrap();
        let whats = [
            AuditWhat::Submitted,
            AuditWhat::DuplicateSubmit,
            AuditWhat::Modified,
            AuditWhat::Applied { due_ms: T0 + 1000 },
            AuditWhat::Reverted { due_ms: T0 + 5000 },
            AuditWhat::Cancelled,
        ];
        let entries: Vec<AuditEntry> = whats
            .iter()
            .zip(0..)
            .map(|(what, i)| AuditEntry {
                at_ms: T0 + i,
                event: 1,
                what: what.clone(),
            })
            .collect();
        store.append_audit(&entries[..3]).unwrap();
        store
            .append_audit(&[AuditEntry {
                at_ms: T0,
                event: 2,
                what: AuditWhat::Submitted,
            }])
            .unwrap();
        store.append_audit(&entries[3..]).unwrap();
        store.append_audit(&[]).unwrap();
        assert_eq!(store.audit(1).unwrap(), entries);
        assert_eq!(store.audit(2).unwrap().len(), 1);
        assert_eq!(store.audit(3).unwrap(), []);
        // One transaction: a batch with an unknown event leaves nothing behind.
        let bad = [
            AuditEntry {
                at_ms: T0,
                event: 2,
                what: AuditWhat::Modified,
            },
            AuditEntry {
                at_ms: T0,
                event: 7,
                what: AuditWhat::Submitted,
            },
        ];
        assert!(matches!(
            store.append_audit(&bad),
            Err(StoreError::UnknownEvent(7))
        ));
        assert_eq!(store.audit(2).unwrap().len(), 1);
    }

    #[test]
    fn idempotency_keys_are_unique_in_the_schema() {
        let dir = TempDir::new("keys");
        let mut store = with_modem(&dir);
        store.append_event(&event(1, Some("order-1"))).unwrap();
        store.append_event(&event(2, None)).unwrap();
        store.append_event(&event(3, None)).unwrap(); // many events without a key
        assert!(matches!(
            store.append_event(&event(4, Some("order-1"))),
            Err(StoreError::IdempotencyKeyTaken { key, existing: 1 }) if key == "order-1"
        ));
        // The rule is the schema's, not just the Rust code's: raw SQL hits it too.
        let raw = store.conn.execute(
            "UPDATE events SET idempotency_key = 'order-1' WHERE id = 2",
            [],
        );
        assert_eq!(
            raw.unwrap_err().sqlite_error_code(),
            Some(ErrorCode::ConstraintViolation)
        );
        let empty = store
            .conn
            .execute("UPDATE events SET idempotency_key = '' WHERE id = 2", []);
        assert!(empty.is_err(), "an empty key is refused");
        let ids: Vec<u64> = store
            .load()
            .unwrap()
            .events
            .iter()
            .map(|s| s.event.id)
            .collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn reopen_after_drop_keeps_everything() {
        let dir = TempDir::new("reopen");
        let mut store = with_modem(&dir);
        store.put_modem("cm2", &QosLevel::default()).unwrap();
        store.append_event(&event(1, Some("k"))).unwrap();
        store.append_event(&event(2, None)).unwrap();
        store.set_event_state(2, EventState::Active).unwrap();
        let audit = [AuditEntry {
            at_ms: T0,
            event: 1,
            what: AuditWhat::Applied { due_ms: T0 },
        }];
        store.append_audit(&audit).unwrap();
        let before = store.load().unwrap();
        assert_eq!(store.path(), dir.path().join("shaper.db"));
        drop(store);
        let store = open(&dir);
        assert_eq!(store.load().unwrap(), before);
        assert_eq!(store.audit(1).unwrap(), audit);
        assert_eq!(pragma(&store, "user_version"), SCHEMA_VERSION.to_string());
    }

    /// A database at schema 1 (the first release) upgrades in place: its rows stay and the
    /// `events_modem` index goes.
    #[test]
    fn schema_1_upgrades_and_drops_the_modem_index() {
        let dir = TempDir::new("schema1");
        let path = dir.path().join("shaper.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            let base = serde_json::to_string(&QosLevel::default()).unwrap();
            conn.execute("INSERT INTO modems (id, base) VALUES ('cm1', ?1)", [base])
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(pragma(&store, "user_version"), SCHEMA_VERSION.to_string());
        let indexes = count(
            &store,
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name = 'events_modem'",
        );
        assert_eq!(indexes, 0);
        assert_eq!(store.modem("cm1").unwrap(), Some(QosLevel::default()));
    }

    /// Schema 3 to 4: the audit tables lose AUTOINCREMENT and keep their rows, numbers and
    /// order; new lines continue after the highest number; a commit no longer writes
    /// `sqlite_sequence`.
    #[test]
    fn schema_3_audit_tables_upgrade_without_autoincrement() {
        let dir = TempDir::new("schema3");
        let path = dir.path().join("shaper.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "foreign_keys", true).unwrap();
            let tx = conn.transaction().unwrap();
            for step in &MIGRATIONS[..3] {
                tx.execute_batch(step).unwrap();
            }
            tx.pragma_update(None, "user_version", 3).unwrap();
            let base = serde_json::to_string(&QosLevel::default()).unwrap();
            tx.execute("INSERT INTO modems (id, base) VALUES ('cm1', ?1)", [&base])
                .unwrap();
            tx.execute(
                "INSERT INTO events (id, modem, source, qos, created_ms, start_due_ms, state,
                                     request, revision)
                 VALUES (1, 'cm1', '\"csr\"', '{}', 1, 1, 'active', '{}', 1)",
                [],
            )
            .unwrap();
            // Numbers with a gap, as a rolled-back insert can leave.
            tx.execute_batch(
                "INSERT INTO audit (seq, at_ms, event, what, due_ms) VALUES
                     (1, 10, 1, 'submitted', NULL), (5, 11, 1, 'applied', 11);
                 INSERT INTO modem_audit (seq, at_ms, modem, source, old_base, new_base)
                     VALUES (3, 12, 'cm1', '\"csr\"', '{}', '{}');",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let mut store = SqliteStore::open(&path).unwrap();
        assert_eq!(pragma(&store, "user_version"), SCHEMA_VERSION.to_string());
        let autoincrement = count(
            &store,
            "SELECT count(*) FROM sqlite_schema WHERE sql LIKE '%AUTOINCREMENT%'",
        );
        assert_eq!(autoincrement, 0);
        let indexes: Vec<String> = column(
            &store,
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND name LIKE '%audit%' \
             ORDER BY name",
        );
        assert_eq!(indexes, ["audit_event", "modem_audit_modem"]);
        assert_eq!(
            store.audit(1).unwrap(),
            [
                AuditEntry {
                    at_ms: 10,
                    event: 1,
                    what: AuditWhat::Submitted
                },
                AuditEntry {
                    at_ms: 11,
                    event: 1,
                    what: AuditWhat::Applied { due_ms: 11 }
                },
            ]
        );
        let modem_audit: (i64, String) = store
            .conn
            .query_row("SELECT seq, modem FROM modem_audit", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(modem_audit, (3, "cm1".to_string()));
        store
            .append_audit(&[AuditEntry {
                at_ms: 20,
                event: 1,
                what: AuditWhat::Submitted,
            }])
            .unwrap();
        let seqs: Vec<i64> = column(&store, "SELECT seq FROM audit ORDER BY seq");
        assert_eq!(seqs, [1, 5, 6]);
        let sequences = count(
            &store,
            "SELECT count(*) FROM sqlite_sequence WHERE name IN ('audit', 'modem_audit')",
        );
        assert_eq!(sequences, 0);
        assert_eq!(store.integrity_check().unwrap(), ["ok"]);
        let violations = count(&store, "SELECT count(*) FROM pragma_foreign_key_check");
        assert_eq!(violations, 0);
    }

    #[test]
    fn newer_schema_is_refused_and_bad_rows_are_named() {
        let dir = TempDir::new("schema");
        let store = with_modem(&dir);
        store
            .conn
            .execute("UPDATE modems SET base = '{\"max_up_bps\": -1}'", [])
            .unwrap();
        let corrupt = store.load().unwrap_err();
        assert!(
            matches!(
                corrupt,
                StoreError::Corrupt {
                    table: "modems",
                    column: "base",
                    ref key,
                    ..
                } if key == "cm1"
            ),
            "{corrupt}"
        );
        store
            .conn
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(store);
        assert!(matches!(
            SqliteStore::open(dir.path().join("shaper.db")),
            Err(StoreError::SchemaTooNew { found, supported: SCHEMA_VERSION })
                if found == SCHEMA_VERSION + 1
        ));
    }

    #[test]
    fn store_is_object_safe_and_send() {
        fn assert_send<T: Send>(_: &T) {}
        let dir = TempDir::new("dyn");
        let mut store: Box<dyn Store> = Box::new(open(&dir));
        store.put_modem("cm1", &base()).unwrap();
        assert_send(&store);
        assert_eq!(store.modem("cm1").unwrap(), Some(base()));
    }

    #[test]
    fn config_base_and_modem_audit_round_trip() {
        let dir = TempDir::new("modem-audit");
        let mut store = with_modem(&dir);
        store.put_modem("cm2", &QosLevel::default()).unwrap();
        assert_eq!(store.config_base("cm1").unwrap(), None, "never recorded");
        assert_eq!(store.config_base("nope").unwrap(), None);
        store.set_config_base("cm1", &base()).unwrap();
        assert_eq!(store.config_base("cm1").unwrap(), Some(base()));
        // A new base plan leaves the configuration's record alone, and the reverse.
        let slower = QosLevel {
            max_down_bps: Some(50_000_000),
            ..base()
        };
        store.put_modem("cm1", &slower).unwrap();
        assert_eq!(store.config_base("cm1").unwrap(), Some(base()));
        store.set_config_base("cm1", &QosLevel::default()).unwrap();
        assert_eq!(store.modem("cm1").unwrap(), Some(slower));
        assert_eq!(store.config_base("cm1").unwrap(), Some(QosLevel::default()));
        assert!(matches!(
            store.set_config_base("nope", &base()),
            Err(StoreError::UnknownModem(m)) if m == "nope"
        ));

        let line = |at_ms, by: BaseSource, old, new| ModemAuditEntry {
            at_ms,
            modem: "cm1".into(),
            by,
            old,
            new,
        };
        let first = line(
            T0,
            BaseSource::Api {
                role: "csr".into(),
                subject: "alice".into(),
            },
            base(),
            slower,
        );
        let second = line(T0 + 1, BaseSource::Config, slower, base());
        store.append_modem_audit(&first).unwrap();
        store
            .append_modem_audit(&ModemAuditEntry {
                modem: "cm2".into(),
                ..line(
                    T0,
                    BaseSource::File {
                        name: "cm2.cfg".into(),
                    },
                    QosLevel::default(),
                    base(),
                )
            })
            .unwrap();
        store.append_modem_audit(&second).unwrap();
        assert_eq!(store.modem_audit("cm1").unwrap(), [first.clone(), second]);
        assert_eq!(store.modem_audit("cm2").unwrap().len(), 1);
        assert_eq!(store.modem_audit("nope").unwrap(), []);
        assert!(matches!(
            store.append_modem_audit(&ModemAuditEntry {
                modem: "nope".into(),
                ..first.clone()
            }),
            Err(StoreError::UnknownModem(m)) if m == "nope"
        ));
        // In a batch: nothing of it is stored until the commit, nothing at all on rollback.
        store.begin_batch(Durability::Synced).unwrap();
        store.put_modem("cm1", &QosLevel::default()).unwrap();
        store.append_modem_audit(&first).unwrap();
        store.rollback_batch();
        assert_eq!(store.modem("cm1").unwrap(), Some(slower));
        assert_eq!(store.modem_audit("cm1").unwrap().len(), 2);
        // Survives a reopen.
        drop(store);
        let store = open(&dir);
        assert_eq!(store.modem_audit("cm1").unwrap().len(), 2);
        assert_eq!(store.config_base("cm1").unwrap(), Some(QosLevel::default()));
    }

    /// A database written by the version-1 schema (`MIGRATIONS[0]`, which is frozen: the
    /// schema of every release before version 2) opens upgraded: its modems, events and audit
    /// lines intact, each modem's configured plan recorded as its stored base, the base-plan
    /// audit trail empty and usable.
    #[test]
    fn a_version_1_database_is_upgraded_in_place() {
        let dir = TempDir::new("upgrade");
        let db = dir.path().join("shaper.db");
        let e = event(1, Some("k1"));
        let file_plan = QosLevel {
            max_down_bps: Some(30_000_000),
            ..QosLevel::default()
        };
        {
            let conn = Connection::open(&db).unwrap();
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            let json = |q: &QosLevel| serde_json::to_string(q).unwrap();
            conn.execute(
                "INSERT INTO modems (id, base) VALUES ('cm1', ?1), ('cm2', ?2)",
                (json(&base()), json(&file_plan)),
            )
            .unwrap();
            let stored = StoredEvent::accepted(e.clone());
            conn.execute(
                "INSERT INTO events (id, modem, source, qos, start_ms, stop_ms, idempotency_key,
                                     created_ms, start_due_ms, state, request, revision)
                 VALUES (1, 'cm1', ?1, ?2, ?3, ?4, 'k1', ?5, ?6, 'pending', ?7, 1)",
                rusqlite::params![
                    serde_json::to_string(&e.source).unwrap(),
                    json(&e.qos),
                    e.start_ms,
                    e.stop_ms,
                    e.created_ms,
                    e.start_due_ms,
                    serde_json::to_string(&stored.request).unwrap(),
                ],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO audit (at_ms, event, what) VALUES (?1, 1, 'submitted')",
                [T0],
            )
            .unwrap();
        }
        let mut store = SqliteStore::open(&db).unwrap();
        assert_eq!(pragma(&store, "user_version"), SCHEMA_VERSION.to_string());
        assert_eq!(store.integrity_check().unwrap(), ["ok"]);
        let snapshot = store.load().unwrap();
        assert_eq!(
            snapshot.modems,
            [
                ModemRecord {
                    id: "cm1".into(),
                    base: base()
                },
                ModemRecord {
                    id: "cm2".into(),
                    base: file_plan
                }
            ]
        );
        assert_eq!(snapshot.events, [StoredEvent::accepted(e)]);
        assert_eq!(
            store.audit(1).unwrap(),
            [AuditEntry {
                at_ms: T0,
                event: 1,
                what: AuditWhat::Submitted
            }]
        );
        assert_eq!(store.config_base("cm1").unwrap(), Some(base()));
        assert_eq!(store.config_base("cm2").unwrap(), Some(file_plan));
        assert_eq!(store.modem_audit("cm1").unwrap(), []);
        let entry = ModemAuditEntry {
            at_ms: T0,
            modem: "cm1".into(),
            by: BaseSource::Config,
            old: base(),
            new: file_plan,
        };
        store.append_modem_audit(&entry).unwrap();
        // Opening again migrates nothing more.
        drop(store);
        let store = SqliteStore::open(&db).unwrap();
        assert_eq!(pragma(&store, "user_version"), SCHEMA_VERSION.to_string());
        assert_eq!(store.modem_audit("cm1").unwrap(), [entry]);
        assert_eq!(store.load().unwrap(), snapshot);
    }

    const CHILD_ENV: &str = "SHAPER_STORE_CHILD";

    /// Kills the child if the test fails before it does (the writer never stops by itself).
    struct KillOnDrop(std::process::Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// The writer half of [`kill_9_loses_no_acknowledged_write`]: it runs only in the child
    /// process that test starts (with `SHAPER_STORE_CHILD` set to the database path), and
    /// passes at once in an ordinary test run. For each event it appends and commits, then
    /// acknowledges on stdout — the order an API follows — and after that marks it active.
    #[test]
    fn crash_child_writer() {
        let Some(path) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let mut store = SqliteStore::open(&path).unwrap();
        store.put_modem("cm1", &base()).unwrap();
        let mut out = std::io::stdout().lock();
        for id in 1.. {
            let key = format!("key-{id}");
            store.append_event(&event(id, Some(&key))).unwrap();
            writeln!(out, "ACK {id}").unwrap();
            out.flush().unwrap();
            store.set_event_state(id, EventState::Active).unwrap();
            writeln!(out, "ACTIVE {id}").unwrap();
            out.flush().unwrap();
        }
    }

    /// Crash consistency: a child process appends events as fast as it can, acknowledging each
    /// after its commit returns; it is killed with SIGKILL mid-stream. Every acknowledged write
    /// must be in the reopened database, which must pass `PRAGMA integrity_check`.
    #[test]
    fn kill_9_loses_no_acknowledged_write() {
        let dir = TempDir::new("kill9");
        let db = dir.path().join("shaper.db");
        let mut child = KillOnDrop(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "store::sqlite::tests::crash_child_writer",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, &db)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the first acknowledgement (so the kill lands mid-stream, not during
        // start-up), then let it run ~200 ms more and kill it (std sends SIGKILL).
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child acknowledges within a minute");
        let deadline = Instant::now() + Duration::from_millis(200);
        let mut lines = vec![first];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        child.0.kill().unwrap();
        let status = child.0.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "killed mid-stream, not exited: {status:?}"
        );
        reader.join().unwrap();
        lines.extend(rx.try_iter());

        let acked = |prefix: &str| -> Vec<u64> {
            lines
                .iter()
                .filter_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
                .collect()
        };
        let (acked_events, acked_active) = (acked("ACK "), acked("ACTIVE "));
        assert!(!acked_events.is_empty(), "output: {lines:?}");

        let store = SqliteStore::open(&db).unwrap();
        assert_eq!(store.integrity_check().unwrap(), ["ok"]);
        let events = store.load().unwrap().events;
        let by_id: std::collections::BTreeMap<u64, &Event> =
            events.iter().map(|s| (s.event.id, &s.event)).collect();
        for id in &acked_events {
            let key = format!("key-{id}");
            let stored = by_id
                .get(id)
                .unwrap_or_else(|| panic!("acknowledged event {id} lost"));
            let mut expected = event(*id, Some(&key));
            expected.state = stored.state;
            assert_eq!(**stored, expected);
        }
        for id in &acked_active {
            assert_eq!(by_id[id].state, EventState::Active, "event {id}");
        }
        // Nothing torn: the stored ids are 1..=n, at most one past the last acknowledgement
        // (committed, killed before it printed).
        let max_acked = *acked_events.iter().max().unwrap();
        let ids: Vec<u64> = by_id.keys().copied().collect();
        let stored = *ids.last().unwrap();
        assert_eq!(ids, (1..=stored).collect::<Vec<_>>());
        assert!(
            stored <= max_acked + 1,
            "{stored} stored, {max_acked} acked"
        );
    }
}
