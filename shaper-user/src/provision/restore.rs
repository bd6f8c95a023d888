//! Restoring the engine after a restart (docs/ARCHITECTURE.md §5: after a crash,
//! overdue starts and stops fire at once, in due order).
//!
//! The store hands back a [`Snapshot`]: every modem with its base plan and every event with its
//! current state. [`Engine::restore`](super::Engine::restore) rebuilds the layers of the active
//! events, schedules what is still to come, and polls once at the restart time, so overdue
//! starts and stops fire through the same path as in normal operation and in `(due, seq)`
//! order. Layering depends only on each grant's `(start_due_ms, id)`, so the effective QoS
//! after the restore equals that of an engine that never stopped and was polled to the same
//! time.
//!
//! What makes that exact:
//!
//! - **Order.** Among actions due at the same millisecond the engine fires in the order they
//!   were scheduled (at submission, or at the last modification). The store returns events in
//!   that order ([`Snapshot::events`]), so rescheduling them one by one reproduces it.
//! - **Idempotency.** A retry is compared with the request *as first submitted*, not with the
//!   event after later modifications, so the store keeps that request ([`StoredEvent`]).
//! - **In-flight actions.** An action that fired but whose new state did not reach the store
//!   before the crash is still pending there; it fires again. Applying a grant is a pure
//!   function of the layers, so firing twice yields the same effective QoS, and the caller
//!   reconciles the data plane to [`Engine::effective`](super::Engine::effective) anyway.

use std::collections::{BTreeMap, BTreeSet};

use super::events::{Event, EventRequest, EventState};
use super::qos::{QosError, QosLevel};

/// A modem as stored: its id and base plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModemRecord {
    pub id: String,
    pub base: QosLevel,
}

/// An event as stored: its current form and the request it was accepted from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub event: Event,
    /// The request as first submitted (before any modification), which an idempotent retry
    /// is compared with.
    pub request: EventRequest,
}

impl StoredEvent {
    /// The stored form of a freshly submitted event: its request is its own timing, grant and
    /// key. Valid only before the event is first modified.
    pub fn accepted(event: Event) -> Self {
        let request = EventRequest {
            modem: event.modem.clone(),
            source: event.source.clone(),
            qos: event.qos,
            start_ms: event.start_ms,
            stop_ms: event.stop_ms,
            idempotency_key: event.idempotency_key.clone(),
            level: event.level.clone(),
        };
        StoredEvent { event, request }
    }
}

/// Everything the engine needs after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub modems: Vec<ModemRecord>,
    /// In scheduling order: the order in which the events were submitted or last modified.
    /// Restoring in this order makes actions due at the same millisecond fire in the same
    /// order as they would have without the restart.
    pub events: Vec<StoredEvent>,
    /// The highest event id ever handed out, stored or not ([`crate::store::Store::burn_event_ids`]):
    /// a restored engine never hands out an id up to it again.
    pub last_event_id: u64,
}

/// A snapshot the engine cannot be rebuilt from. Each variant names the record at fault; none
/// arises from a snapshot the engine and the store produced together.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum RestoreError {
    #[error("modem {0} appears twice")]
    DuplicateModem(String),
    #[error("modem {modem}: invalid base plan: {error}")]
    InvalidBase { modem: String, error: QosError },
    #[error("event {0} appears twice")]
    DuplicateEvent(u64),
    #[error("event {event} refers to unknown modem {modem}")]
    UnknownModem { event: u64, modem: String },
    #[error("idempotency key {key:?} is used by events {first} and {second}")]
    DuplicateKey {
        key: String,
        first: u64,
        second: u64,
    },
    #[error("event {event}: its stored request differs in {field} from the event")]
    RequestMismatch { event: u64, field: &'static str },
    #[error("event {event} is {state:?} but has no stop time")]
    CompletedWithoutStop { event: u64, state: EventState },
}

impl Snapshot {
    /// Checks the invariants the engine relies on (every event's modem exists, ids and
    /// idempotency keys are unique, base plans are valid), so that a damaged or hand-edited
    /// store is reported instead of breaking the engine later.
    pub fn check(&self) -> Result<(), RestoreError> {
        let mut modems = BTreeSet::new();
        for ModemRecord { id, base } in &self.modems {
            if !modems.insert(id.as_str()) {
                return Err(RestoreError::DuplicateModem(id.clone()));
            }
            base.validate().map_err(|error| RestoreError::InvalidBase {
                modem: id.clone(),
                error,
            })?;
        }
        let mut ids = BTreeSet::new();
        let mut keys: BTreeMap<&str, u64> = BTreeMap::new();
        for StoredEvent { event, request } in &self.events {
            let id = event.id;
            if !ids.insert(id) {
                return Err(RestoreError::DuplicateEvent(id));
            }
            if !modems.contains(event.modem.as_str()) {
                return Err(RestoreError::UnknownModem {
                    event: id,
                    modem: event.modem.clone(),
                });
            }
            // The fields no modification can change must agree with the request.
            for (field, same) in [
                ("modem", request.modem == event.modem),
                ("source", request.source == event.source),
                (
                    "idempotency_key",
                    request.idempotency_key == event.idempotency_key,
                ),
            ] {
                if !same {
                    return Err(RestoreError::RequestMismatch { event: id, field });
                }
            }
            if event.state == EventState::Completed && event.stop_ms.is_none() {
                return Err(RestoreError::CompletedWithoutStop {
                    event: id,
                    state: event.state,
                });
            }
            if let Some(key) = &event.idempotency_key {
                if let Some(&first) = keys.get(key.as_str()) {
                    return Err(RestoreError::DuplicateKey {
                        key: key.clone(),
                        first,
                        second: id,
                    });
                }
                keys.insert(key, id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::{
        Amendment, AuditWhat, Change, ChangeKind, Engine, EventRequest, ProvisionError, Source,
    };
    use crate::store::{SqliteStore, Store, TempDir};

    const T0: u64 = 1_700_000_000_000;
    const MIN: u64 = 60_000;

    fn base() -> QosLevel {
        QosLevel {
            max_up_bps: Some(10_000_000),
            max_down_bps: Some(100_000_000),
            committed_down_bps: Some(1_000_000),
            burst_bytes: Some(30_000),
            priority: Some(0),
            ..QosLevel::default()
        }
    }

    fn down(bps: u64) -> QosLevel {
        QosLevel {
            max_down_bps: Some(bps),
            ..QosLevel::default()
        }
    }

    fn prio(p: u8) -> QosLevel {
        QosLevel {
            priority: Some(p),
            ..QosLevel::default()
        }
    }

    fn req(modem: &str, qos: QosLevel, start: Option<u64>, stop: Option<u64>) -> EventRequest {
        EventRequest {
            modem: modem.into(),
            source: Source::Automation {
                trigger: "billing".into(),
            },
            qos,
            start_ms: start,
            stop_ms: stop,
            idempotency_key: None,
            level: None,
        }
    }

    /// What the controller does with every engine call: persist what changed, then the audit
    /// trail. Events are appended as they are accepted and their states follow the changes.
    struct Controller {
        engine: Engine,
        store: SqliteStore,
    }

    impl Controller {
        fn submit(&mut self, req: EventRequest, now: u64) -> u64 {
            let submitted = self.engine.submit(req, now).unwrap();
            if !submitted.duplicate {
                let event = self.engine.event(submitted.id).unwrap();
                self.store.append_event(&event).unwrap();
            }
            self.flush_audit();
            submitted.id
        }

        fn modify(&mut self, id: u64, amendment: Amendment, now: u64) {
            self.engine.modify(id, amendment, now).unwrap();
            self.store
                .amend_event(&self.engine.event(id).unwrap())
                .unwrap();
            self.flush_audit();
        }

        fn cancel(&mut self, id: u64, now: u64) {
            self.engine.cancel(id, now).unwrap();
            self.store
                .set_event_state(id, EventState::Cancelled)
                .unwrap();
            self.flush_audit();
        }

        fn poll(&mut self, now: u64) -> Vec<Change> {
            let changes = self.engine.poll(now);
            self.persist(&changes);
            changes
        }

        fn persist(&mut self, changes: &[Change]) {
            for change in changes {
                let state = match change.kind {
                    ChangeKind::Applied => EventState::Active,
                    ChangeKind::Reverted => EventState::Completed,
                };
                self.store.set_event_state(change.cause, state).unwrap();
            }
            self.flush_audit();
        }

        fn flush_audit(&mut self) {
            let audit = self.engine.take_audit();
            self.store.append_audit(&audit).unwrap();
        }
    }

    /// Submissions (immediate, scheduled, open-ended, modified, cancelled, keyed) on two
    /// modems at T0 and a little after, driven through the store.
    fn scenario(ctl: &mut Controller) {
        let mut keyed = req("cm1", prio(3), Some(T0 + 20 * MIN), None);
        keyed.idempotency_key = Some("order-17".into());
        ctl.submit(req("cm1", down(200_000_000), None, Some(T0 + 30 * MIN)), T0);
        ctl.submit(keyed, T0);
        ctl.submit(
            req("cm1", prio(5), Some(T0 + 10 * MIN), Some(T0 + 40 * MIN)),
            T0,
        );
        ctl.submit(
            req(
                "cm2",
                down(50_000_000),
                Some(T0 + 5 * MIN),
                Some(T0 + 25 * MIN),
            ),
            T0,
        );
        let modified = ctl.submit(req("cm2", prio(1), Some(T0 + 15 * MIN), None), T0);
        let cancelled = ctl.submit(req("cm2", prio(7), Some(T0 + 15 * MIN), None), T0);
        // Same due time as the stop of an earlier event: order among equals must survive.
        ctl.submit(req("cm1", down(300_000_000), Some(T0 + 30 * MIN), None), T0);
        // Moved by a modification to that same millisecond: the engine fires it after the
        // actions scheduled before the modification, although its id is lower.
        ctl.poll(T0);
        ctl.poll(T0 + 6 * MIN);
        ctl.modify(
            modified,
            Amendment {
                start_ms: Some(T0 + 30 * MIN),
                stop_ms: Some(T0 + 50 * MIN),
                qos: prio(2),
            },
            T0 + 7 * MIN,
        );
        ctl.cancel(cancelled, T0 + 8 * MIN);
    }

    fn controller(dir: &TempDir) -> Controller {
        let mut ctl = Controller {
            engine: Engine::new(),
            store: SqliteStore::open(dir.path().join("shaper.db")).unwrap(),
        };
        for (id, base) in [("cm1", base()), ("cm2", base())] {
            ctl.store.put_modem(id, &base).unwrap();
            ctl.engine.add_modem(id, base).unwrap();
        }
        ctl
    }

    #[test]
    fn restore_fires_late_actions_in_order_and_matches_an_uncrashed_engine() {
        let dir = TempDir::new("restore");
        let mut crashed = controller(&dir);
        scenario(&mut crashed);
        // Crash: the engine's memory is gone; only the store remains.
        drop(crashed);

        // The same history on an engine that never stops.
        let twin_dir = TempDir::new("restore-twin");
        let mut never_crashed = controller(&twin_dir);
        scenario(&mut never_crashed);

        // Restart several times, later each time; each restart persists what it fired.
        for t in [T0 + 12 * MIN, T0 + 30 * MIN, T0 + 60 * MIN] {
            let expected = never_crashed.poll(t);
            assert!(!expected.is_empty(), "the scenario has actions before {t}");

            let store = SqliteStore::open(dir.path().join("shaper.db")).unwrap();
            let (engine, changes) = Engine::restore(store.load().unwrap(), t).unwrap();
            let mut restored = Controller { engine, store };
            restored.persist(&changes);

            assert_eq!(changes, expected, "late actions at {t}");
            assert!(changes.iter().all(|c| c.due_ms <= t));
            assert!(
                changes.windows(2).all(|w| w[0].due_ms <= w[1].due_ms),
                "in due order"
            );
            for modem in ["cm1", "cm2"] {
                assert_eq!(
                    restored.engine.effective(modem),
                    never_crashed.engine.effective(modem),
                    "{modem} at {t}"
                );
            }
            assert_eq!(
                restored.engine.events().collect::<Vec<_>>(),
                never_crashed.engine.events().collect::<Vec<_>>()
            );
            assert_eq!(restored.engine.next_due(), never_crashed.engine.next_due());

            // What fired was persisted: a second restart at the same time fires nothing and
            // ends in the same state.
            drop(restored);
            let store = SqliteStore::open(dir.path().join("shaper.db")).unwrap();
            let (again, none) = Engine::restore(store.load().unwrap(), t).unwrap();
            assert!(none.is_empty(), "second restore at {t} fired {none:?}");
            for modem in ["cm1", "cm2"] {
                assert_eq!(
                    again.effective(modem),
                    never_crashed.engine.effective(modem)
                );
            }
        }
        // The last restart ran past every stop but the open-ended grants'.
        assert_eq!(
            never_crashed.engine.effective("cm1").unwrap().max_down_bps,
            Some(300_000_000)
        );
    }

    /// A crash after an action fired but before its new state reached the store: the action
    /// is still pending in the store and fires again on restore, with the same result.
    #[test]
    fn restore_refires_actions_whose_state_was_not_persisted() {
        let dir = TempDir::new("restore-inflight");
        let mut ctl = controller(&dir);
        let id = ctl.submit(req("cm1", down(200_000_000), None, None), T0);
        let fired = ctl.engine.poll(T0); // applied, then "kill -9" before persisting
        assert_eq!(fired.len(), 1);
        let effective = ctl.engine.effective("cm1");
        drop(ctl.engine);
        let (engine, changes) = Engine::restore(ctl.store.load().unwrap(), T0 + MIN).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].cause, id);
        assert_eq!(changes[0].due_ms, T0);
        assert_eq!(changes[0].after, fired[0].after);
        assert_eq!(engine.effective("cm1"), effective);
        assert_eq!(engine.event(id).unwrap().state, EventState::Active);
    }

    #[test]
    fn restore_keeps_idempotency_against_the_original_request() {
        let dir = TempDir::new("restore-keys");
        let mut ctl = controller(&dir);
        let mut keyed = req("cm1", prio(3), Some(T0 + 20 * MIN), None);
        keyed.idempotency_key = Some("order-17".into());
        let id = ctl.submit(keyed.clone(), T0);
        ctl.modify(
            id,
            Amendment {
                start_ms: Some(T0 + 30 * MIN),
                stop_ms: None,
                qos: prio(4),
            },
            T0 + MIN,
        );
        drop(ctl.engine);
        let (mut engine, _) = Engine::restore(ctl.store.load().unwrap(), T0 + 2 * MIN).unwrap();
        let again = engine.submit(keyed.clone(), T0 + 2 * MIN).unwrap();
        assert!(again.duplicate);
        assert_eq!(again.id, id);
        assert_eq!(
            engine.audit().last().unwrap().what,
            AuditWhat::DuplicateSubmit
        );
        let mut other = keyed;
        other.qos = prio(6);
        assert_eq!(
            engine.submit(other, T0 + 2 * MIN),
            Err(ProvisionError::Conflict {
                key: "order-17".into(),
                id
            })
        );
        // New events continue the id sequence.
        let next = engine
            .submit(req("cm2", prio(1), None, None), T0 + 2 * MIN)
            .unwrap();
        assert_eq!(next.id, id + 1);
    }

    #[test]
    fn check_rejects_inconsistent_snapshots() {
        let event = |id: u64, modem: &str, key: Option<&str>| {
            StoredEvent::accepted(Event {
                id,
                modem: modem.into(),
                source: Source::Subscriber,
                qos: prio(1),
                start_ms: None,
                stop_ms: None,
                idempotency_key: key.map(Into::into),
                level: None,
                created_ms: T0,
                start_due_ms: T0,
                state: EventState::Pending,
            })
        };
        let modem = |id: &str| ModemRecord {
            id: id.into(),
            base: base(),
        };
        let ok = Snapshot {
            modems: vec![modem("cm1")],
            events: vec![event(1, "cm1", Some("a")), event(2, "cm1", None)],
            last_event_id: 0,
        };
        assert_eq!(ok.check(), Ok(()));

        let mut s = ok.clone();
        s.modems.push(modem("cm1"));
        assert_eq!(s.check(), Err(RestoreError::DuplicateModem("cm1".into())));
        let mut s = ok.clone();
        s.modems[0].base.priority = Some(9);
        assert!(matches!(s.check(), Err(RestoreError::InvalidBase { .. })));
        let mut s = ok.clone();
        s.events.push(event(2, "cm1", None));
        assert_eq!(s.check(), Err(RestoreError::DuplicateEvent(2)));
        let mut s = ok.clone();
        s.events.push(event(3, "cm9", None));
        assert_eq!(
            s.check(),
            Err(RestoreError::UnknownModem {
                event: 3,
                modem: "cm9".into()
            })
        );
        let mut s = ok.clone();
        s.events.push(event(3, "cm1", Some("a")));
        assert_eq!(
            s.check(),
            Err(RestoreError::DuplicateKey {
                key: "a".into(),
                first: 1,
                second: 3
            })
        );
        let mut s = ok.clone();
        s.events[1].request.modem = "cm2".into();
        assert_eq!(
            s.check(),
            Err(RestoreError::RequestMismatch {
                event: 2,
                field: "modem"
            })
        );
        let mut s = ok.clone();
        s.events[1].event.state = EventState::Completed;
        assert!(matches!(
            s.check(),
            Err(RestoreError::CompletedWithoutStop { event: 2, .. })
        ));
        assert!(matches!(
            Engine::restore(s, T0),
            Err(RestoreError::CompletedWithoutStop { event: 2, .. })
        ));
    }
}
