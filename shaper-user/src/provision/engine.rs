//! The provisioning engine: a deterministic, clock-free state machine.
//!
//! The engine never reads a clock and never sleeps. Every call takes `now_ms` (milliseconds
//! since the Unix epoch) and the caller drives time: it arms a timer for [`Engine::next_due`]
//! and calls [`Engine::poll`] when it expires (or at once after a restart). That keeps the
//! scheduler testable with a virtual clock and makes crash recovery the ordinary path: a poll
//! far in the future fires every overdue action at once, in `(due, seq)` order.
//!
//! **Layering.** A modem's effective QoS is its base plan with the grants of its *active*
//! events layered on top in activation order (the grant's start due time, then event id); a
//! later layer wins per field. Activating adds a layer, reverting removes one, and the
//! effective level is recomputed from the layers that remain — so reverting one grant never
//! undoes another that is still active, whatever order they started and stop in.
//!
//! **Immediate events** are not applied inside [`Engine::submit`]: they are scheduled at
//! `now_ms`, and the caller's next `poll(now_ms)` applies them. There is one path by which QoS
//! changes (`poll`, plus [`Engine::cancel`] of an active event), so the caller persists and
//! enforces changes in one place, in the same order a restart would replay them.

use std::collections::BTreeMap;

use super::Event;
use super::events::{
    EventError, EventRequest, EventState, start_due, validate_grant, validate_timing,
};
use super::qos::{QosError, QosLevel};
use super::restore::{ModemRecord, RestoreError, Snapshot, StoredEvent};

/// Whether a change added or removed a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Applied,
    Reverted,
}

/// A change of one modem's effective QoS, caused by one event. `before` may equal `after` (a
/// grant hidden under a later one); it is still reported so the caller can record it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub modem: String,
    pub before: QosLevel,
    pub after: QosLevel,
    /// The event whose start or stop (or cancellation) this is.
    pub cause: u64,
    pub kind: ChangeKind,
    /// When the action was due (for a late poll, earlier than the poll's `now_ms`).
    pub due_ms: u64,
}

/// The answer to a submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub id: u64,
    /// True when the idempotency key matched an earlier identical request: nothing new was
    /// created and `id` is the earlier event.
    pub duplicate: bool,
}

/// New timing and grant for a pending event. It replaces all three (PUT semantics): an API
/// offering partial updates merges them with the current event first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Amendment {
    pub start_ms: Option<u64>,
    pub stop_ms: Option<u64>,
    pub qos: QosLevel,
}

/// What happened to an event, for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditWhat {
    Submitted,
    /// A retry matched by idempotency key; nothing changed.
    DuplicateSubmit,
    Modified,
    Cancelled,
    Applied {
        due_ms: u64,
    },
    Reverted {
        due_ms: u64,
    },
}

/// One line of the audit trail. `at_ms` is the time of the call that did it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub at_ms: u64,
    pub event: u64,
    pub what: AuditWhat,
}

/// Why the engine refused a call. Nothing changes when a call fails.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum ProvisionError {
    #[error("invalid event: {0}")]
    Invalid(#[from] EventError),
    #[error("modem {modem}: invalid base plan: {error}")]
    InvalidBase { modem: String, error: QosError },
    #[error("unknown modem {0}")]
    UnknownModem(String),
    #[error("modem {0} already exists")]
    ModemExists(String),
    #[error("unknown event {0}")]
    UnknownEvent(u64),
    #[error("event {id} is {state:?}; only pending events can be modified")]
    NotPending { id: u64, state: EventState },
    #[error("event {id} is already {state:?}")]
    Finished { id: u64, state: EventState },
    #[error("idempotency key {key:?} was used by event {id} for a different request")]
    Conflict { key: String, id: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ActionKind {
    Start,
    Stop,
}

#[derive(Clone, Copy, Debug)]
struct Action {
    event: u64,
    kind: ActionKind,
}

/// Scheduler key: due time, then insertion sequence (FIFO among equal due times).
type Key = (u64, u64);

struct ModemState {
    base: QosLevel,
    /// Active grants by (start due time, event id): iteration order is layering order.
    layers: BTreeMap<(u64, u64), QosLevel>,
}

impl ModemState {
    fn effective(&self) -> QosLevel {
        self.layers
            .values()
            .fold(self.base, |acc, grant| grant.overlay(&acc))
            .normalized()
    }
}

struct Record {
    event: Event,
    start_key: Option<Key>,
    stop_key: Option<Key>,
}

/// See the module documentation.
#[derive(Default)]
pub struct Engine {
    modems: BTreeMap<String, ModemState>,
    events: BTreeMap<u64, Record>,
    schedule: BTreeMap<Key, Action>,
    /// Idempotency key → (the request as first submitted, its event id).
    keys: BTreeMap<String, (EventRequest, u64)>,
    next_id: u64,
    next_seq: u64,
    audit: Vec<AuditEntry>,
}

impl Engine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the engine after a restart from what the store kept, then polls `now_ms`
    /// and returns the changes that fired: every start and stop that fell due while the
    /// process was down, at once and in `(due, seq)` order, exactly as a late
    /// [`Engine::poll`] would. Active events get their layers back without firing again;
    /// pending ones are rescheduled in the snapshot's order, which keeps the FIFO order of
    /// actions due at the same millisecond. The audit trail starts empty, then holds what the
    /// poll fired. `provision/restore.rs` explains why the result equals an engine that never
    /// stopped.
    ///
    /// Fails, changing nothing, if the snapshot breaks an invariant the engine relies on
    /// ([`Snapshot::check`]).
    pub fn restore(snapshot: Snapshot, now_ms: u64) -> Result<(Engine, Vec<Change>), RestoreError> {
        snapshot.check()?;
        let Snapshot { modems, events } = snapshot;
        let mut engine = Engine::new();
        for ModemRecord { id, base } in modems {
            let layers = BTreeMap::new();
            engine.modems.insert(id, ModemState { base, layers });
        }
        for StoredEvent { event, request } in events {
            let id = event.id;
            engine.next_id = engine.next_id.max(id);
            if let Some(key) = &event.idempotency_key {
                engine.keys.insert(key.clone(), (request, id));
            }
            let mut record = Record {
                event,
                start_key: None,
                stop_key: None,
            };
            match record.event.state {
                EventState::Pending => engine.schedule_record(&mut record),
                EventState::Active => {
                    let Event {
                        ref modem,
                        qos,
                        start_due_ms,
                        stop_ms,
                        ..
                    } = record.event;
                    engine
                        .modems
                        .get_mut(modem)
                        .expect("Snapshot::check: events refer to stored modems")
                        .layers
                        .insert((start_due_ms, id), qos);
                    record.stop_key = stop_ms.map(|stop| {
                        let kind = ActionKind::Stop;
                        engine.push_action(stop, Action { event: id, kind })
                    });
                }
                EventState::Completed | EventState::Cancelled => {}
            }
            engine.events.insert(id, record);
        }
        let changes = engine.poll(now_ms);
        Ok((engine, changes))
    }

    /// Registers a modem with its base plan (the QoS it has when no grant is active).
    pub fn add_modem(&mut self, id: &str, base: QosLevel) -> Result<(), ProvisionError> {
        if id.is_empty() {
            return Err(EventError::EmptyModem.into());
        }
        if self.modems.contains_key(id) {
            return Err(ProvisionError::ModemExists(id.to_owned()));
        }
        base.validate()
            .map_err(|error| ProvisionError::InvalidBase {
                modem: id.to_owned(),
                error,
            })?;
        self.modems.insert(
            id.to_owned(),
            ModemState {
                base,
                layers: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// Replaces a known modem's base plan (the layers of its active grants stay on top).
    pub fn set_base(&mut self, id: &str, base: QosLevel) -> Result<(), ProvisionError> {
        base.validate()
            .map_err(|error| ProvisionError::InvalidBase {
                modem: id.to_owned(),
                error,
            })?;
        let m = self
            .modems
            .get_mut(id)
            .ok_or_else(|| ProvisionError::UnknownModem(id.to_owned()))?;
        m.base = base;
        Ok(())
    }

    /// The base plan of a modem.
    pub fn base(&self, modem: &str) -> Option<&QosLevel> {
        self.modems.get(modem).map(|m| &m.base)
    }

    /// The modem's effective QoS now: base plan, active grants layered in activation order,
    /// then [`QosLevel::normalized`]. `None` for an unknown modem.
    pub fn effective(&self, modem: &str) -> Option<QosLevel> {
        self.modems.get(modem).map(ModemState::effective)
    }

    /// Accepts a request. With an idempotency key already seen: the identical request gets the
    /// earlier event's id back (`duplicate: true`, even if that event has since run or been
    /// modified); a different request is a [`ProvisionError::Conflict`]. The key is checked
    /// before the timing, so a retry arriving after the original's stop time is still a
    /// duplicate rather than an error.
    pub fn submit(&mut self, req: EventRequest, now_ms: u64) -> Result<Submitted, ProvisionError> {
        if let Some(key) = &req.idempotency_key {
            if let Some((orig, id)) = self.keys.get(key) {
                if *orig != req {
                    return Err(ProvisionError::Conflict {
                        key: key.clone(),
                        id: *id,
                    });
                }
                let id = *id;
                self.log(now_ms, id, AuditWhat::DuplicateSubmit);
                return Ok(Submitted {
                    id,
                    duplicate: true,
                });
            }
        }
        req.validate(now_ms)?;
        if !self.modems.contains_key(&req.modem) {
            return Err(ProvisionError::UnknownModem(req.modem));
        }
        self.next_id += 1;
        let id = self.next_id;
        if let Some(key) = &req.idempotency_key {
            self.keys.insert(key.clone(), (req.clone(), id));
        }
        let event = Event {
            id,
            modem: req.modem,
            source: req.source,
            qos: req.qos,
            start_ms: req.start_ms,
            stop_ms: req.stop_ms,
            idempotency_key: req.idempotency_key,
            created_ms: now_ms,
            start_due_ms: start_due(req.start_ms, now_ms),
            state: EventState::Pending,
        };
        let mut record = Record {
            event,
            start_key: None,
            stop_key: None,
        };
        self.schedule_record(&mut record);
        self.events.insert(id, record);
        self.log(now_ms, id, AuditWhat::Submitted);
        Ok(Submitted {
            id,
            duplicate: false,
        })
    }

    /// Changes a pending event's timing and grant. Events that have started (or ended) cannot
    /// be modified: cancel them and submit a new one, so the audit trail shows both.
    pub fn modify(
        &mut self,
        id: u64,
        amendment: Amendment,
        now_ms: u64,
    ) -> Result<(), ProvisionError> {
        let state = self
            .event(id)
            .ok_or(ProvisionError::UnknownEvent(id))?
            .state;
        if state != EventState::Pending {
            return Err(ProvisionError::NotPending { id, state });
        }
        validate_grant(&amendment.qos)?;
        validate_timing(amendment.start_ms, amendment.stop_ms, now_ms)?;
        let mut record = self
            .events
            .remove(&id)
            .ok_or(ProvisionError::UnknownEvent(id))?;
        self.unschedule_record(&mut record);
        record.event.start_ms = amendment.start_ms;
        record.event.stop_ms = amendment.stop_ms;
        record.event.qos = amendment.qos;
        record.event.start_due_ms = start_due(amendment.start_ms, now_ms);
        self.schedule_record(&mut record);
        self.events.insert(id, record);
        self.log(now_ms, id, AuditWhat::Modified);
        Ok(())
    }

    /// Cancels a pending or active event. A pending one never fires; an active one is reverted
    /// at once and the change is returned (so the caller enforces it as it would a poll's).
    pub fn cancel(&mut self, id: u64, now_ms: u64) -> Result<Option<Change>, ProvisionError> {
        let state = self
            .event(id)
            .ok_or(ProvisionError::UnknownEvent(id))?
            .state;
        if matches!(state, EventState::Completed | EventState::Cancelled) {
            return Err(ProvisionError::Finished { id, state });
        }
        let mut record = self
            .events
            .remove(&id)
            .ok_or(ProvisionError::UnknownEvent(id))?;
        self.unschedule_record(&mut record);
        let change = if state == EventState::Active {
            Some(self.remove_layer(&record.event, now_ms))
        } else {
            None
        };
        record.event.state = EventState::Cancelled;
        self.events.insert(id, record);
        self.log(now_ms, id, AuditWhat::Cancelled);
        Ok(change)
    }

    /// Fires every action due at or before `now_ms`, in (due, seq) order, and returns the
    /// resulting changes in that order. Late actions (after a clock jump or a restart) fire
    /// at once; an event whose stop also passed is applied and then reverted, both reported.
    pub fn poll(&mut self, now_ms: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        while let Some(entry) = self.schedule.first_entry() {
            let (due, _) = *entry.key();
            if due > now_ms {
                break;
            }
            let action = entry.remove();
            changes.push(self.fire(action, due, now_ms));
        }
        changes
    }

    /// When the next action is due, for the caller's timer. May be in the past (poll at once).
    pub fn next_due(&self) -> Option<u64> {
        self.schedule.keys().next().map(|&(due, _)| due)
    }

    /// One event by id.
    pub fn event(&self, id: u64) -> Option<&Event> {
        self.events.get(&id).map(|r| &r.event)
    }

    /// All events, by id.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.values().map(|r| &r.event)
    }

    /// Events that have not started yet, by id.
    pub fn list_pending(&self) -> Vec<&Event> {
        self.events()
            .filter(|e| e.state == EventState::Pending)
            .collect()
    }

    /// The audit trail since the last [`Engine::take_audit`].
    pub fn audit(&self) -> &[AuditEntry] {
        &self.audit
    }

    /// Hands the audit trail to the caller (to persist) and starts a new one.
    pub fn take_audit(&mut self) -> Vec<AuditEntry> {
        std::mem::take(&mut self.audit)
    }

    fn log(&mut self, at_ms: u64, event: u64, what: AuditWhat) {
        self.audit.push(AuditEntry { at_ms, event, what });
    }

    fn push_action(&mut self, due: u64, action: Action) -> Key {
        self.next_seq += 1;
        let key = (due, self.next_seq);
        self.schedule.insert(key, action);
        key
    }

    /// Schedules a pending record's start and (if any) stop. Both go in at once so that
    /// `next_due` covers them and a late poll fires them in order.
    fn schedule_record(&mut self, record: &mut Record) {
        let id = record.event.id;
        let start = Action {
            event: id,
            kind: ActionKind::Start,
        };
        record.start_key = Some(self.push_action(record.event.start_due_ms, start));
        record.stop_key = record.event.stop_ms.map(|stop| {
            let action = Action {
                event: id,
                kind: ActionKind::Stop,
            };
            self.push_action(stop, action)
        });
    }

    fn unschedule_record(&mut self, record: &mut Record) {
        for key in [record.start_key.take(), record.stop_key.take()]
            .into_iter()
            .flatten()
        {
            self.schedule.remove(&key);
        }
    }

    fn fire(&mut self, action: Action, due: u64, now_ms: u64) -> Change {
        let id = action.event;
        let mut record = self
            .events
            .remove(&id)
            .expect("scheduled actions belong to stored events");
        let change = match action.kind {
            ActionKind::Start => {
                record.start_key = None;
                record.event.state = EventState::Active;
                let modem = self
                    .modems
                    .get_mut(&record.event.modem)
                    .expect("events refer to registered modems");
                let before = modem.effective();
                modem
                    .layers
                    .insert((record.event.start_due_ms, id), record.event.qos);
                let after = modem.effective();
                self.log(now_ms, id, AuditWhat::Applied { due_ms: due });
                Change {
                    modem: record.event.modem.clone(),
                    before,
                    after,
                    cause: id,
                    kind: ChangeKind::Applied,
                    due_ms: due,
                }
            }
            ActionKind::Stop => {
                record.stop_key = None;
                record.event.state = EventState::Completed;
                let change = self.remove_layer(&record.event, due);
                self.log(now_ms, id, AuditWhat::Reverted { due_ms: due });
                change
            }
        };
        self.events.insert(id, record);
        change
    }

    fn remove_layer(&mut self, event: &Event, due: u64) -> Change {
        let modem = self
            .modems
            .get_mut(&event.modem)
            .expect("events refer to registered modems");
        let before = modem.effective();
        modem.layers.remove(&(event.start_due_ms, event.id));
        let after = modem.effective();
        Change {
            modem: event.modem.clone(),
            before,
            after,
            cause: event.id,
            kind: ChangeKind::Reverted,
            due_ms: due,
        }
    }
}
