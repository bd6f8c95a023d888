//! Provisioning events: who asked for which QoS level on which modem, and when.
//!
//! A request ([`EventRequest`]) is what a client sends; the engine turns an accepted request
//! into an [`Event`] with an id, a creation time and a state. The two are kept apart so that an
//! idempotent retry can be compared with the original request field by field, without the
//! fields the engine fills in.

use serde::{Deserialize, Serialize};

use super::qos::{QosError, QosLevel};

/// Who asked. Kept for the audit trail and for authorisation upstream of the engine.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    /// A customer service representative, by user name.
    Csr { user: String },
    /// The subscriber, self-service (for their own modem only; checked by the API).
    Subscriber,
    /// An automated trigger: billing, a monitoring alarm, a timer.
    Automation { trigger: String },
}

/// A request for a QoS grant on one modem.
///
/// Timing: `start_ms = None` means immediate; `stop_ms = None` means the grant stays until it
/// is cancelled. A start in the past is treated as "now" (clients' clocks drift; a grant never
/// takes effect retroactively).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventRequest {
    pub modem: String,
    pub source: Source,
    /// The grant: the fields it sets replace those beneath it while it is active.
    pub qos: QosLevel,
    pub start_ms: Option<u64>,
    pub stop_ms: Option<u64>,
    /// Client-chosen key; resubmitting the same request with the same key is a no-op that
    /// returns the original event id.
    pub idempotency_key: Option<String>,
    /// The grant catalogue level the request names (`provision::catalogue`): its grant is
    /// the level's, and the level's duration and monthly quota apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

impl EventState {
    /// The state's name in the API, the store and the metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Active => "active",
            EventState::Completed => "completed",
            EventState::Cancelled => "cancelled",
        }
    }
}

impl From<&Event> for EventRequest {
    /// The request an event stands for now (its current timing and grant).
    fn from(e: &Event) -> EventRequest {
        EventRequest {
            modem: e.modem.clone(),
            source: e.source.clone(),
            qos: e.qos,
            start_ms: e.start_ms,
            stop_ms: e.stop_ms,
            idempotency_key: e.idempotency_key.clone(),
            level: e.level.clone(),
        }
    }
}

/// Lifecycle of an event. Only forward moves: Pending → Active → Completed, and
/// Pending/Active → Cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventState {
    /// Accepted, start not yet fired (immediate events too, until the next `poll`).
    Pending,
    /// The grant is one of the modem's layers.
    Active,
    /// The stop fired and the grant was removed.
    Completed,
    /// Cancelled before its stop; if it was active, its layer was removed at cancel time.
    Cancelled,
}

/// An accepted event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub modem: String,
    pub source: Source,
    pub qos: QosLevel,
    /// As requested (`None` = immediate).
    pub start_ms: Option<u64>,
    pub stop_ms: Option<u64>,
    pub idempotency_key: Option<String>,
    /// The grant catalogue level it was requested as, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// When the engine accepted it.
    pub created_ms: u64,
    /// When the grant takes (or took) effect: the requested start, but never before the time
    /// the event was accepted or last modified. It is also the grant's place in the layer
    /// order, so a late `poll` after a crash layers grants as if it had fired on time.
    pub start_due_ms: u64,
    pub state: EventState,
}

/// Latest time an event may name, in milliseconds since the Unix epoch:
/// 9999-12-31T23:59:59.999Z. Every sink holds it (SQLite's signed 64-bit integers, RFC 3339
/// dates, JavaScript's exact integers up to 2^53); a later time is refused at the edge.
pub const MAX_TIME_MS: u64 = 253_402_300_799_999;
/// Longest modem id, in characters (the configuration's `[[modem]] id` has the same bound).
pub const MAX_MODEM_ID: usize = 128;
/// Longest idempotency key, in bytes (after the API scopes it to the caller).
pub const MAX_IDEMPOTENCY_KEY: usize = 400;

/// The time a start fires: `start_ms`, or `now_ms` if that is earlier or absent.
pub fn start_due(start_ms: Option<u64>, now_ms: u64) -> u64 {
    start_ms.map_or(now_ms, |s| s.max(now_ms))
}

/// A request that cannot be accepted as it stands.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum EventError {
    #[error("modem id is empty")]
    EmptyModem,
    #[error("modem: the id is {len} characters long; at most {MAX_MODEM_ID} are allowed")]
    ModemTooLong { len: usize },
    #[error("modem: the id contains a control character")]
    ModemControlChar,
    #[error("idempotency key: {len} bytes is above the limit of {MAX_IDEMPOTENCY_KEY}")]
    IdempotencyKeyTooLong { len: usize },
    #[error("{field}: {value} is after {MAX_TIME_MS} (9999-12-31T23:59:59.999Z)")]
    TimeOutOfRange { field: &'static str, value: u64 },
    #[error("idempotency key is empty")]
    EmptyIdempotencyKey,
    #[error("qos: the grant sets no field, so it would change nothing")]
    EmptyGrant,
    #[error("qos.{0}")]
    Qos(#[from] QosError),
    #[error("stop_ms {stop} is not after start_ms {start}")]
    StopNotAfterStart { start: u64, stop: u64 },
    #[error("stop_ms {stop} is not after the current time {now}")]
    StopInPast { stop: u64, now: u64 },
}

/// The timing rules, shared by submission and modification: a stop must lie after the start
/// and after `now` (a new or changed event that would already be over is a client error, not
/// something to apply and revert in the same instant).
pub fn validate_timing(
    start_ms: Option<u64>,
    stop_ms: Option<u64>,
    now_ms: u64,
) -> Result<(), EventError> {
    for (field, t) in [("start_ms", start_ms), ("stop_ms", stop_ms)] {
        if let Some(value) = t.filter(|&t| t > MAX_TIME_MS) {
            return Err(EventError::TimeOutOfRange { field, value });
        }
    }
    if let Some(stop) = stop_ms {
        if let Some(start) = start_ms {
            if stop <= start {
                return Err(EventError::StopNotAfterStart { start, stop });
            }
        }
        if stop <= now_ms {
            return Err(EventError::StopInPast { stop, now: now_ms });
        }
    }
    Ok(())
}

/// A modem id: 1..=[`MAX_MODEM_ID`] characters, no control characters.
pub fn validate_modem_id(id: &str) -> Result<(), EventError> {
    if id.is_empty() {
        return Err(EventError::EmptyModem);
    }
    let len = id.chars().count();
    if len > MAX_MODEM_ID {
        return Err(EventError::ModemTooLong { len });
    }
    if id.chars().any(char::is_control) {
        return Err(EventError::ModemControlChar);
    }
    Ok(())
}

/// The QoS rules for a grant: well-formed, and not empty.
pub fn validate_grant(qos: &QosLevel) -> Result<(), EventError> {
    if qos.is_empty() {
        return Err(EventError::EmptyGrant);
    }
    qos.validate()?;
    Ok(())
}

impl EventRequest {
    /// Everything that can be checked without the engine's state (the modem's existence and
    /// idempotency are the engine's).
    pub fn validate(&self, now_ms: u64) -> Result<(), EventError> {
        validate_modem_id(&self.modem)?;
        match self.idempotency_key.as_deref() {
            Some("") => return Err(EventError::EmptyIdempotencyKey),
            Some(k) if k.len() > MAX_IDEMPOTENCY_KEY => {
                return Err(EventError::IdempotencyKeyTooLong { len: k.len() });
            }
            _ => {}
        }
        validate_grant(&self.qos)?;
        validate_timing(self.start_ms, self.stop_ms, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(start: Option<u64>, stop: Option<u64>) -> EventRequest {
        EventRequest {
            modem: "cm1".into(),
            source: Source::Subscriber,
            qos: QosLevel {
                priority: Some(5),
                ..QosLevel::default()
            },
            start_ms: start,
            stop_ms: stop,
            idempotency_key: None,
            level: None,
        }
    }

    #[test]
    fn timing_rules() {
        assert_eq!(req(None, None).validate(10), Ok(()));
        assert_eq!(req(Some(20), Some(30)).validate(10), Ok(()));
        assert_eq!(req(Some(5), Some(30)).validate(10), Ok(()));
        assert_eq!(
            req(Some(30), Some(30)).validate(10),
            Err(EventError::StopNotAfterStart {
                start: 30,
                stop: 30
            })
        );
        assert_eq!(
            req(None, Some(10)).validate(10),
            Err(EventError::StopInPast { stop: 10, now: 10 })
        );
    }

    #[test]
    fn grant_rules() {
        let mut r = req(None, None);
        r.qos = QosLevel::default();
        assert_eq!(r.validate(0), Err(EventError::EmptyGrant));
        r.qos.priority = Some(9);
        assert_eq!(
            r.validate(0),
            Err(EventError::Qos(QosError::PriorityOutOfRange(9)))
        );
        let mut r = req(None, None);
        r.modem.clear();
        assert_eq!(r.validate(0), Err(EventError::EmptyModem));
        let mut r = req(None, None);
        r.idempotency_key = Some(String::new());
        assert_eq!(r.validate(0), Err(EventError::EmptyIdempotencyKey));
    }

    #[test]
    fn times_and_ids_within_what_every_sink_holds() {
        assert_eq!(req(Some(MAX_TIME_MS), None).validate(0), Ok(()));
        assert_eq!(
            req(Some(u64::MAX), None).validate(0),
            Err(EventError::TimeOutOfRange {
                field: "start_ms",
                value: u64::MAX
            })
        );
        assert_eq!(
            req(None, Some(1 << 63)).validate(0),
            Err(EventError::TimeOutOfRange {
                field: "stop_ms",
                value: 1 << 63
            })
        );
        let mut r = req(None, None);
        r.modem = "m".repeat(MAX_MODEM_ID);
        assert_eq!(r.validate(0), Ok(()));
        r.modem.push('m');
        assert_eq!(
            r.validate(0),
            Err(EventError::ModemTooLong {
                len: MAX_MODEM_ID + 1
            })
        );
        r.modem = "cm\n1".into();
        assert_eq!(r.validate(0), Err(EventError::ModemControlChar));
        let mut r = req(None, None);
        r.idempotency_key = Some("k".repeat(MAX_IDEMPOTENCY_KEY + 1));
        assert!(matches!(
            r.validate(0),
            Err(EventError::IdempotencyKeyTooLong { .. })
        ));
    }

    #[test]
    fn start_never_before_acceptance() {
        assert_eq!(start_due(None, 100), 100);
        assert_eq!(start_due(Some(50), 100), 100);
        assert_eq!(start_due(Some(150), 100), 150);
    }
}
