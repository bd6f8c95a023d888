//! Durable store of the provisioning state (docs/ARCHITECTURE.md §5–§6, issue 3).
//!
//! The controller keeps its working state in the [`Engine`](crate::provision::Engine) and
//! writes every decision through a [`Store`] before it tells anyone: an event is durable before
//! the API acknowledges it. After a crash the controller loads a
//! [`Snapshot`], rebuilds the engine with
//! [`Engine::restore`](crate::provision::Engine::restore) (which fires overdue starts and
//! stops at once, in order) and reconciles the data plane to the engine's effective levels.
//!
//! The trait is deliberately narrow — modems (with the configuration's plan as last applied),
//! events, event state, audit lines of events and of base plans, one load at start-up — and speaks in provisioning types, not SQL, so that a distributed store (etcd with
//! a leader-elected scheduler, docs/ARCHITECTURE.md §6) is another implementation rather than a
//! rewrite. [`SqliteStore`] is the embedded default.
//!
//! Controller protocol, in the order a restart replays it:
//!
//! 1. `Engine::submit` → if not a duplicate, [`Store::append_event`] → acknowledge the id;
//! 2. `Engine::modify` → [`Store::amend_event`];
//! 3. `Engine::cancel` / each `Change` of `Engine::poll` → [`Store::set_event_state`]
//!    (`Cancelled`, `Active` for an applied change, `Completed` for a reverted one), then
//!    enforce;
//! 4. after each call, `Engine::take_audit` → [`Store::append_audit`].
//!
//! A crash between an engine call and its store write loses nothing acknowledged: an event
//! that never reached the store was never acknowledged, and a start or stop whose new state
//! never reached the store is still pending there and fires again on restore.

pub mod nsm;
mod schema;
mod sqlite;

use crate::provision::{AuditEntry, Event, EventState, ModemAuditEntry, QosLevel, Snapshot};

pub use nsm::{
    Delivery, NSM_SCHEMA_VERSION, NsmSnapshot, NsmStore, SessionStore, SessionStoreError,
    SqliteNsmStore,
};
pub use sqlite::{SCHEMA_VERSION, SqliteStore};

/// Why a store operation failed. The operation changed nothing (each one is a single
/// transaction).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite library reported an error; `op` names the store operation.
    #[error("sqlite: {op}: {source}")]
    Sqlite {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer version of shaper.
    #[error("database schema version {found} is newer than the supported {supported}")]
    SchemaTooNew { found: i64, supported: i64 },
    /// SQLite refused write-ahead logging (for example on a file system without shared
    /// memory), so commits would not have the durability the store promises.
    #[error("journal mode is {found:?}, not \"wal\"")]
    NotWal { found: String },
    /// A stored value did not decode: the database was damaged or edited by hand.
    #[error("{table} row {key}: cannot decode {column}: {detail}")]
    Corrupt {
        table: &'static str,
        key: String,
        column: &'static str,
        detail: String,
    },
    /// A value could not be encoded as JSON.
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// An integer beyond SQLite's (i64) range: `what` names the value.
    #[error("{what} {value} is beyond the store's integer range (at most 9223372036854775807)")]
    OutOfRange { what: &'static str, value: u64 },
    #[error("modem id is empty")]
    EmptyModem,
    #[error("unknown modem {0}")]
    UnknownModem(String),
    #[error("unknown event {0}")]
    UnknownEvent(u64),
    #[error("event {0} is already stored")]
    DuplicateEvent(u64),
    /// The schema keeps idempotency keys unique: one key, one event.
    #[error("idempotency key {key:?} already belongs to event {existing}")]
    IdempotencyKeyTaken { key: String, existing: u64 },
    /// States only move forward (Pending → Active → Completed, Pending/Active → Cancelled); a
    /// backward write is a stale or reordered update.
    #[error("event {id}: state cannot go from {from:?} to {to:?}")]
    StateRegression {
        id: u64,
        from: EventState,
        to: EventState,
    },
    #[error("event {id} is {state:?}; only pending events can be amended")]
    NotPending { id: u64, state: EventState },
    /// `begin_batch` while a batch is open (batches do not nest).
    #[error("a write batch is already open")]
    BatchOpen,
    /// `commit_batch` without `begin_batch`.
    #[error("no write batch is open")]
    NoBatch,
    /// The checkpointer thread could not be started.
    #[error("cannot start the WAL checkpointer thread: {0}")]
    Checkpointer(String),
}

/// How durable a batch must be when [`Store::commit_batch`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// On stable storage (fsync'd): survives a process kill and a power cut. For everything
    /// an API answer acknowledges: accepted, amended and cancelled events, modems.
    Synced,
    /// Survives a process kill (the write is in the operating system's hands), and is made
    /// durable by the next `Synced` commit; a power cut or kernel crash before that may roll
    /// it back. Only for state a restore recomputes from `Synced` state and the clock: the
    /// start and stop state changes of a tick (and their audit lines). Losing them means the
    /// restore fires those starts and stops again, exactly once, as after a crash just before
    /// the tick — the store stays consistent (a commit is all or nothing either way).
    Deferred,
}

/// What the controller needs from durable storage. Every write is one transaction and is
/// durable when the call returns `Ok`: the caller may acknowledge it then, and not before.
///
/// **Batches** (group commit). Between [`Store::begin_batch`] and [`Store::commit_batch`] the
/// writes form one transaction: each write still changes nothing when it fails, but none is
/// durable until `commit_batch` returns `Ok`, and a crash or a failed commit loses all of
/// them together. The controller uses a batch for every call (an event and its audit line, a
/// tick's state changes and theirs are one commit) and for many submissions at once, so that
/// requests arriving while a commit is being synced share the next one: one fsync for many
/// events, each acknowledged only after its batch is durable.
pub trait Store: Send {
    /// Opens a batch. Batches do not nest ([`StoreError::BatchOpen`]).
    fn begin_batch(&mut self, durability: Durability) -> Result<(), StoreError>;

    /// Commits the open batch: with [`Durability::Synced`] durable when this returns `Ok`
    /// (see [`Durability`] for the other). On `Err` nothing of the batch is stored.
    fn commit_batch(&mut self) -> Result<(), StoreError>;

    /// Abandons the open batch (if any): nothing of it is stored.
    fn rollback_batch(&mut self);
    /// Whether the open batch still holds every write that succeeded in it. A failed write
    /// normally changes nothing and leaves the batch open; some failures (an I/O error, a full
    /// disk) make the database abandon the whole transaction, and then the batch's earlier
    /// writes are gone too. The controller asks after a failed write to know whether only that
    /// request is lost or the whole batch is.
    fn batch_intact(&self) -> bool {
        true
    }
    /// Records that event ids up to `last` were handed out (some never stored: their write
    /// failed), so that [`Store::load`] reports at least it as [`Snapshot::last_event_id`] and
    /// a restarted controller never hands them out again. Inside a batch, part of it.
    fn burn_event_ids(&mut self, last: u64) -> Result<(), StoreError>;

    /// Creates a modem or replaces its base plan.
    fn put_modem(&mut self, id: &str, base: &QosLevel) -> Result<(), StoreError>;

    /// A modem's base plan, `None` if the modem is unknown.
    fn modem(&self, id: &str) -> Result<Option<QosLevel>, StoreError>;

    /// Records `plan` as the base plan the configuration file gave a known modem when it was
    /// last applied ([`StoreError::UnknownModem`] otherwise). At start the controller compares
    /// the configuration with it: only a plan changed since then replaces the stored base
    /// plan, which the API or a dropped file may have set meanwhile.
    fn set_config_base(&mut self, id: &str, plan: &QosLevel) -> Result<(), StoreError>;

    /// The plan [`Store::set_config_base`] recorded, `None` if none was (or the modem is
    /// unknown).
    fn config_base(&self, id: &str) -> Result<Option<QosLevel>, StoreError>;

    /// Appends one line to a known modem's base-plan audit trail
    /// ([`StoreError::UnknownModem`] otherwise).
    fn append_modem_audit(&mut self, entry: &ModemAuditEntry) -> Result<(), StoreError>;

    /// A modem's base-plan audit trail, oldest first (empty for an unknown modem).
    fn modem_audit(&self, id: &str) -> Result<Vec<ModemAuditEntry>, StoreError>;

    /// Stores a newly accepted event (as `Engine::submit` created it, before any
    /// modification: its timing, grant and key are kept as the original request that
    /// idempotent retries are compared with). Fails with
    /// [`StoreError::IdempotencyKeyTaken`] if another event holds its key.
    fn append_event(&mut self, event: &Event) -> Result<(), StoreError>;

    /// Moves an event to `state`. Writing the state it already has is a no-op (a retried
    /// write after a restore); moving backwards is [`StoreError::StateRegression`].
    fn set_event_state(&mut self, id: u64, state: EventState) -> Result<(), StoreError>;

    /// Stores an amendment of a pending event (`Engine::modify`): its timing, grant and start
    /// due time. The event moves to the end of the scheduling order, as it does in the engine.
    fn amend_event(&mut self, event: &Event) -> Result<(), StoreError>;

    /// Appends audit lines, in order, in one transaction.
    fn append_audit(&mut self, entries: &[AuditEntry]) -> Result<(), StoreError>;

    /// The audit trail of one event, oldest first.
    fn audit(&self, event: u64) -> Result<Vec<AuditEntry>, StoreError>;

    /// Everything needed to restore the engine: modems, and all events in scheduling order
    /// (the order they were appended or last amended).
    fn load(&self) -> Result<Snapshot, StoreError>;
}

/// A fresh directory under the system temporary directory, removed on drop (tests only; the
/// crate has no `tempfile` dependency).
#[cfg(test)]
pub(crate) struct TempDir(std::path::PathBuf);

#[cfg(test)]
impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "shaper-store-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }
}

#[cfg(test)]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
