//! Provisioning: QoS grants for one modem at a time, with start/stop times and layered revert.
//!
//! A customer service representative, the subscriber, or an automated trigger (billing, an
//! alarm, a timer) asks for a QoS level on one modem — maximum and committed rates, burst,
//! priority, MTU, service targets — now, from a start time, until a stop time, or both
//! (docs/ARCHITECTURE.md §1.1–1.2). This module is the pure core of that: validation, the event
//! lifecycle and a clock-free scheduler. Time comes in as milliseconds since the Unix epoch,
//! so the same code runs live, under a virtual clock in tests, and when replaying after a
//! crash. Persistence (SQLite), the HTTP API and enforcement wrap it from outside.

pub mod catalogue;
mod engine;
mod events;
mod modem_audit;
mod packed;
mod qos;
mod restore;
#[cfg(test)]
mod tests;

pub use catalogue::{GrantCatalogue, Level, PolicyRefusal};
pub use engine::{
    Amendment, AuditEntry, AuditWhat, Change, ChangeKind, Engine, ProvisionError, Submitted,
};
pub use events::{
    Event, EventError, EventRequest, EventState, MAX_IDEMPOTENCY_KEY, MAX_MODEM_ID, MAX_TIME_MS,
    Source, start_due, validate_grant, validate_modem_id, validate_timing,
};
pub use modem_audit::{BaseSource, ModemAuditEntry};
pub use qos::{
    MAX_PRIORITY, MAX_RATE_BPS, MIN_BURST_BYTES, MIN_RATE_BPS, PPM, QosError, QosLevel,
    ServiceTargets,
};
pub use restore::{ModemRecord, RestoreError, Snapshot, StoredEvent};
