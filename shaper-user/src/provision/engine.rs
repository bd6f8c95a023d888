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

use std::collections::{BTreeMap, HashMap};

use super::Event;
use super::events::{
    EventError, EventRequest, EventState, Source, start_due, validate_grant, validate_timing,
};
use super::packed::{PackedQos, pack_time, unpack_time};
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

/// `None` of a packed level ([`Record::level`]).
const NO_LEVEL: u32 = u32::MAX;

/// An event as the engine keeps it: an [`Event`] packed (modem and source as handles into
/// the engine's tables, times with a sentinel, the grant as [`PackedQos`]), about 110 bytes
/// instead of 250 plus two heap strings, since a gateway holds up to millions of pending
/// events. [`Engine::event`] unpacks it.
struct Record {
    modem: u32,
    source: u32,
    qos: PackedQos,
    start_ms: u64,
    stop_ms: u64,
    created_ms: u64,
    start_due_ms: u64,
    key: Option<Box<str>>,
    /// Catalogue level handle ([`Engine::levels`]), [`NO_LEVEL`] for none.
    level: u32,
    state: EventState,
    /// Scheduler sequence numbers of the scheduled start and stop, 0 when not scheduled: the
    /// schedule keys are `(start_due_ms, start_seq)` and `(stop_ms, stop_seq)`.
    start_seq: u64,
    stop_seq: u64,
}

/// See the module documentation.
#[derive(Default)]
pub struct Engine {
    modems: BTreeMap<String, ModemState>,
    /// Modem ids by handle ([`Record::modem`]) and handles by id.
    modem_names: Vec<String>,
    modem_handles: HashMap<String, u32>,
    /// Sources by handle ([`Record::source`]) and handles by source.
    sources: Vec<Source>,
    source_handles: HashMap<Source, u32>,
    /// Catalogue level names by handle ([`Record::level`]) and handles by name.
    levels: Vec<String>,
    level_handles: HashMap<String, u32>,
    /// Events by id: `events[id - 1]`. Ids are dense from 1; a restored snapshot may leave
    /// holes (`None`).
    events: Vec<Option<Record>>,
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
        let Snapshot {
            modems,
            events,
            last_event_id,
        } = snapshot;
        let mut engine = Engine::new();
        engine.next_id = last_event_id;
        for ModemRecord { id, base } in modems {
            engine.insert_modem(id, base);
        }
        for StoredEvent { event, request } in events {
            let id = event.id;
            engine.next_id = engine.next_id.max(id);
            if let Some(key) = &event.idempotency_key {
                engine.keys.insert(key.clone(), (request, id));
            }
            let mut record = engine.pack(&event);
            match record.state {
                EventState::Pending => engine.schedule_record(id, &mut record),
                EventState::Active => {
                    engine
                        .modems
                        .get_mut(&event.modem)
                        .expect("Snapshot::check: events refer to stored modems")
                        .layers
                        .insert((event.start_due_ms, id), event.qos);
                    if let Some(stop) = event.stop_ms {
                        let kind = ActionKind::Stop;
                        record.stop_seq = engine.push_action(stop, Action { event: id, kind }).1;
                    }
                }
                EventState::Completed | EventState::Cancelled => {}
            }
            engine.put_record(id, record);
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
        self.insert_modem(id.to_owned(), base);
        Ok(())
    }

    /// Replaces a known modem's base plan. Its active grants stay layered over the new one.
    pub fn set_base(&mut self, modem: &str, base: QosLevel) -> Result<(), ProvisionError> {
        base.validate()
            .map_err(|error| ProvisionError::InvalidBase {
                modem: modem.to_owned(),
                error,
            })?;
        let state = self
            .modems
            .get_mut(modem)
            .ok_or_else(|| ProvisionError::UnknownModem(modem.to_owned()))?;
        state.base = base;
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
        let Some(&modem) = self.modem_handles.get(&req.modem) else {
            return Err(ProvisionError::UnknownModem(req.modem));
        };
        self.next_id += 1;
        let id = self.next_id;
        let source = self.source_handle(&req.source);
        let mut record = Record {
            modem,
            source,
            qos: PackedQos::pack(&req.qos),
            start_ms: pack_time(req.start_ms),
            stop_ms: pack_time(req.stop_ms),
            created_ms: now_ms,
            start_due_ms: start_due(req.start_ms, now_ms),
            key: req.idempotency_key.as_deref().map(Box::from),
            level: self.level_handle(req.level.as_deref()),
            state: EventState::Pending,
            start_seq: 0,
            stop_seq: 0,
        };
        if let Some(key) = &req.idempotency_key {
            self.keys.insert(key.clone(), (req, id));
        }
        self.schedule_record(id, &mut record);
        self.put_record(id, record);
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
            .record(id)
            .ok_or(ProvisionError::UnknownEvent(id))?
            .state;
        if state != EventState::Pending {
            return Err(ProvisionError::NotPending { id, state });
        }
        validate_grant(&amendment.qos)?;
        validate_timing(amendment.start_ms, amendment.stop_ms, now_ms)?;
        let mut record = self
            .take_record(id)
            .ok_or(ProvisionError::UnknownEvent(id))?;
        self.unschedule_record(&mut record);
        record.start_ms = pack_time(amendment.start_ms);
        record.stop_ms = pack_time(amendment.stop_ms);
        record.qos = PackedQos::pack(&amendment.qos);
        record.start_due_ms = start_due(amendment.start_ms, now_ms);
        self.schedule_record(id, &mut record);
        self.put_record(id, record);
        self.log(now_ms, id, AuditWhat::Modified);
        Ok(())
    }

    /// Cancels a pending or active event. A pending one never fires; an active one is reverted
    /// at once and the change is returned (so the caller enforces it as it would a poll's).
    pub fn cancel(&mut self, id: u64, now_ms: u64) -> Result<Option<Change>, ProvisionError> {
        let state = self
            .record(id)
            .ok_or(ProvisionError::UnknownEvent(id))?
            .state;
        if matches!(state, EventState::Completed | EventState::Cancelled) {
            return Err(ProvisionError::Finished { id, state });
        }
        let mut record = self
            .take_record(id)
            .ok_or(ProvisionError::UnknownEvent(id))?;
        self.unschedule_record(&mut record);
        let change = if state == EventState::Active {
            Some(self.remove_layer(id, &record, now_ms))
        } else {
            None
        };
        record.state = EventState::Cancelled;
        self.put_record(id, record);
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

    /// Forgets an event the engine accepted but the store did not keep (its write failed), as
    /// if it had never been submitted: its scheduled actions, its layer if it already fired,
    /// its idempotency key and its audit lines go. Its id stays used: the next submission gets
    /// a new one ([`Engine::last_id`]). Returns the modem whose effective level changed, if
    /// the event had fired, so the caller can enforce it again. Unknown ids: `None`.
    pub fn retract(&mut self, id: u64) -> Option<String> {
        let mut record = self.take_record(id)?;
        self.unschedule_record(&mut record);
        if let Some(key) = &record.key {
            if self.keys.get(key.as_ref()).is_some_and(|(_, k)| *k == id) {
                self.keys.remove(key.as_ref());
            }
        }
        self.audit.retain(|a| a.event != id);
        (record.state == EventState::Active).then(|| {
            let (name, modem) = self.modem_mut(&record);
            modem.layers.remove(&(record.start_due_ms, id));
            name.to_owned()
        })
    }

    /// Whether `key` is an idempotency key the engine has seen (a submission with it is a
    /// duplicate or a conflict, never a new event).
    pub fn has_key(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// The highest event id handed out so far (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.next_id
    }

    /// Makes the next event id at least `floor + 1`: a controller that rebuilds its engine
    /// from the store keeps the ids of events the store never kept from being handed out
    /// again.
    pub fn reserve_ids(&mut self, floor: u64) {
        self.next_id = self.next_id.max(floor);
    }

    /// When the next action is due, for the caller's timer. May be in the past (poll at once).
    pub fn next_due(&self) -> Option<u64> {
        self.schedule.keys().next().map(|&(due, _)| due)
    }

    /// One event by id.
    pub fn event(&self, id: u64) -> Option<Event> {
        self.record(id).map(|r| self.unpack(id, r))
    }

    /// All events, by id.
    pub fn events(&self) -> impl Iterator<Item = Event> + '_ {
        self.records().map(|(id, r)| self.unpack(id, r))
    }

    /// Every event's source and state, by id, without unpacking the events (for counters).
    pub fn sources_and_states(&self) -> impl Iterator<Item = (&Source, EventState)> + '_ {
        self.records()
            .map(|(_, r)| (&self.sources[r.source as usize], r.state))
    }

    /// Pending and active events whose source `wanted` accepts, by id: only those are
    /// unpacked (e.g. a CoA sink finding its grants among a million events at start).
    pub fn open_events_from(&self, wanted: impl Fn(&Source) -> bool) -> Vec<Event> {
        self.records()
            .filter(|(_, r)| {
                matches!(r.state, EventState::Pending | EventState::Active)
                    && wanted(&self.sources[r.source as usize])
            })
            .map(|(id, r)| self.unpack(id, r))
            .collect()
    }

    /// Events that have not started yet, by id.
    pub fn list_pending(&self) -> Vec<Event> {
        self.records()
            .filter(|(_, r)| r.state == EventState::Pending)
            .map(|(id, r)| self.unpack(id, r))
            .collect()
    }

    /// How many events have not started yet.
    pub fn pending_count(&self) -> usize {
        self.records()
            .filter(|(_, r)| r.state == EventState::Pending)
            .count()
    }

    /// The audit trail since the last [`Engine::take_audit`].
    pub fn audit(&self) -> &[AuditEntry] {
        &self.audit
    }

    /// Hands the audit trail to the caller (to persist) and starts a new one.
    pub fn take_audit(&mut self) -> Vec<AuditEntry> {
        std::mem::take(&mut self.audit)
    }

    // ---- records ------------------------------------------------------------------------

    fn insert_modem(&mut self, id: String, base: QosLevel) {
        let handle = u32::try_from(self.modem_names.len()).expect("fewer than 2^32 modems");
        self.modem_handles.insert(id.clone(), handle);
        self.modem_names.push(id.clone());
        self.modems.insert(
            id,
            ModemState {
                base,
                layers: BTreeMap::new(),
            },
        );
    }

    fn source_handle(&mut self, source: &Source) -> u32 {
        if let Some(&h) = self.source_handles.get(source) {
            return h;
        }
        let handle = u32::try_from(self.sources.len()).expect("fewer than 2^32 sources");
        self.sources.push(source.clone());
        self.source_handles.insert(source.clone(), handle);
        handle
    }

    fn level_handle(&mut self, level: Option<&str>) -> u32 {
        let Some(level) = level else {
            return NO_LEVEL;
        };
        if let Some(&h) = self.level_handles.get(level) {
            return h;
        }
        let handle = u32::try_from(self.levels.len())
            .ok()
            .filter(|h| *h != NO_LEVEL)
            .expect("fewer than 2^32 - 1 levels");
        self.levels.push(level.to_owned());
        self.level_handles.insert(level.to_owned(), handle);
        handle
    }

    /// Catalogue grants `(level, created_ms)` by modem, for every event that named a level
    /// (the controller counts monthly quotas with them).
    pub fn level_grants(&self) -> HashMap<String, Vec<(String, u64)>> {
        let mut out: HashMap<String, Vec<(String, u64)>> = HashMap::new();
        for (_, r) in self.records().filter(|(_, r)| r.level != NO_LEVEL) {
            out.entry(self.modem_names[r.modem as usize].clone())
                .or_default()
                .push((self.levels[r.level as usize].clone(), r.created_ms));
        }
        out
    }

    /// Packs a stored event (its modem is registered: [`Snapshot::check`]).
    fn pack(&mut self, e: &Event) -> Record {
        Record {
            modem: self.modem_handles[&e.modem],
            source: self.source_handle(&e.source),
            qos: PackedQos::pack(&e.qos),
            start_ms: pack_time(e.start_ms),
            stop_ms: pack_time(e.stop_ms),
            created_ms: e.created_ms,
            start_due_ms: e.start_due_ms,
            key: e.idempotency_key.as_deref().map(Box::from),
            level: self.level_handle(e.level.as_deref()),
            state: e.state,
            start_seq: 0,
            stop_seq: 0,
        }
    }

    fn unpack(&self, id: u64, r: &Record) -> Event {
        Event {
            id,
            modem: self.modem_names[r.modem as usize].clone(),
            source: self.sources[r.source as usize].clone(),
            qos: r.qos.unpack(),
            start_ms: unpack_time(r.start_ms),
            stop_ms: unpack_time(r.stop_ms),
            idempotency_key: r.key.as_deref().map(String::from),
            level: (r.level != NO_LEVEL).then(|| self.levels[r.level as usize].clone()),
            created_ms: r.created_ms,
            start_due_ms: r.start_due_ms,
            state: r.state,
        }
    }

    fn slot(id: u64) -> Option<usize> {
        usize::try_from(id.checked_sub(1)?).ok()
    }

    fn record(&self, id: u64) -> Option<&Record> {
        self.events.get(Self::slot(id)?)?.as_ref()
    }

    fn records(&self) -> impl Iterator<Item = (u64, &Record)> + '_ {
        self.events
            .iter()
            .zip(1u64..)
            .filter_map(|(r, id)| Some((id, r.as_ref()?)))
    }

    fn take_record(&mut self, id: u64) -> Option<Record> {
        self.events.get_mut(Self::slot(id)?)?.take()
    }

    fn put_record(&mut self, id: u64, record: Record) {
        let slot = Self::slot(id).expect("event ids start at 1");
        if self.events.len() <= slot {
            self.events.resize_with(slot + 1, || None);
        }
        self.events[slot] = Some(record);
    }

    fn modem_mut(&mut self, record: &Record) -> (&str, &mut ModemState) {
        let name = self.modem_names[record.modem as usize].as_str();
        let state = self
            .modems
            .get_mut(name)
            .expect("events refer to registered modems");
        (name, state)
    }

    // ---- scheduling ---------------------------------------------------------------------

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
    fn schedule_record(&mut self, id: u64, record: &mut Record) {
        let start = Action {
            event: id,
            kind: ActionKind::Start,
        };
        record.start_seq = self.push_action(record.start_due_ms, start).1;
        record.stop_seq = match unpack_time(record.stop_ms) {
            Some(stop) => {
                let action = Action {
                    event: id,
                    kind: ActionKind::Stop,
                };
                self.push_action(stop, action).1
            }
            None => 0,
        };
    }

    fn unschedule_record(&mut self, record: &mut Record) {
        if record.start_seq != 0 {
            self.schedule
                .remove(&(record.start_due_ms, record.start_seq));
            record.start_seq = 0;
        }
        if record.stop_seq != 0 {
            self.schedule.remove(&(record.stop_ms, record.stop_seq));
            record.stop_seq = 0;
        }
    }

    fn fire(&mut self, action: Action, due: u64, now_ms: u64) -> Change {
        let id = action.event;
        let mut record = self
            .take_record(id)
            .expect("scheduled actions belong to stored events");
        let change = match action.kind {
            ActionKind::Start => {
                record.start_seq = 0;
                record.state = EventState::Active;
                let qos = record.qos.unpack();
                let key = (record.start_due_ms, id);
                let (name, modem) = self.modem_mut(&record);
                let before = modem.effective();
                modem.layers.insert(key, qos);
                let after = modem.effective();
                let modem = name.to_owned();
                self.log(now_ms, id, AuditWhat::Applied { due_ms: due });
                Change {
                    modem,
                    before,
                    after,
                    cause: id,
                    kind: ChangeKind::Applied,
                    due_ms: due,
                }
            }
            ActionKind::Stop => {
                record.stop_seq = 0;
                record.state = EventState::Completed;
                let change = self.remove_layer(id, &record, due);
                self.log(now_ms, id, AuditWhat::Reverted { due_ms: due });
                change
            }
        };
        self.put_record(id, record);
        change
    }

    fn remove_layer(&mut self, id: u64, record: &Record, due: u64) -> Change {
        let key = (record.start_due_ms, id);
        let (name, modem) = self.modem_mut(record);
        let before = modem.effective();
        modem.layers.remove(&key);
        let after = modem.effective();
        Change {
            modem: name.to_owned(),
            before,
            after,
            cause: id,
            kind: ChangeKind::Reverted,
            due_ms: due,
        }
    }
}
