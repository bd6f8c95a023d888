//! The reference model of `tests/controller_model.rs`: what the controller and its HTTP API
//! should answer and hold, written independently of `provision/`, `controller/` and `api/`
//! (plain maps; only the QoS algebra `QosLevel::overlay`/`normalized` is borrowed).
//!
//! It knows every request's status (the exact code), the event lifecycle (pending → active →
//! completed, pending/active → cancelled, fired only by ticks, restarts and resyncs), layering
//! by start order, the grant catalogue (durations and calendar-month quotas, with a calendar of
//! its own), idempotency keys, and what an injected store failure does to each request.

use std::collections::{BTreeMap, BTreeSet};

use shaper::provision::{EventState, QosLevel, Source};

/// 9999-12-31T23:59:59.999Z in ms: the latest time a request may name.
pub const MAX_TIME_MS: u64 = 253_402_300_799_999;

/// A caller of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Who {
    Admin,
    Csr,
    /// Subscriber of cm1 / cm2.
    Sub1,
    Sub2,
    Auto,
    Provider,
    NoToken,
    BadToken,
}

impl Who {
    pub fn token(self) -> Option<&'static str> {
        Some(match self {
            Who::Admin => "t-admin",
            Who::Csr => "t-csr",
            Who::Sub1 => "t-sub1",
            Who::Sub2 => "t-sub2",
            Who::Auto => "t-auto",
            Who::Provider => "t-prov",
            Who::NoToken => return None,
            Who::BadToken => "t-nobody",
        })
    }
    pub fn subscriber_of(self) -> Option<&'static str> {
        match self {
            Who::Sub1 => Some("cm1"),
            Who::Sub2 => Some("cm2"),
            _ => None,
        }
    }
    fn source(self) -> Source {
        match self {
            Who::Admin => Source::Csr {
                user: "root".into(),
            },
            Who::Csr => Source::Csr {
                user: "alice".into(),
            },
            Who::Auto => Source::Automation {
                trigger: "billing".into(),
            },
            _ => Source::Subscriber,
        }
    }
    /// The status every modem/event route gives before looking at the request, if any.
    fn gate(self) -> Option<u16> {
        match self {
            Who::NoToken | Who::BadToken => Some(401),
            Who::Provider => Some(403),
            _ => None,
        }
    }
}

/// A grant catalogue level.
#[derive(Clone, Debug)]
pub struct MLevel {
    pub qos: QosLevel,
    pub max_duration_ms: u64,
    pub per_month: Option<u32>,
}

/// An event as the model holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MEvent {
    pub id: u64,
    pub modem: String,
    pub source: Source,
    pub qos: QosLevel,
    pub start_ms: Option<u64>,
    pub stop_ms: Option<u64>,
    /// The client's key and who sent it.
    pub key: Option<(Who, String)>,
    pub level: Option<String>,
    pub created_ms: u64,
    pub start_due_ms: u64,
    pub state: EventState,
}

/// `POST /v1/events` as the generator builds it (well-formed JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Post {
    pub who: Who,
    pub key: Option<String>,
    pub modem: String,
    /// The grant and whether it is valid by construction.
    pub qos: Option<(QosLevel, bool)>,
    pub level: Option<String>,
    pub start_ms: Option<u64>,
    pub stop_ms: Option<u64>,
}

/// `PATCH /v1/events/{id}` (well-formed JSON): `None` = field absent, `Some(None)` = null.
#[derive(Clone, Debug)]
pub struct Patch {
    pub who: Who,
    pub id: u64,
    pub start_ms: Option<Option<u64>>,
    pub stop_ms: Option<Option<u64>>,
    pub qos: Option<(QosLevel, bool)>,
}

/// A store write made to fail once during one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `append_event` fails, the batch stays intact.
    AppendEvent,
    /// `append_event` fails and the database abandons the whole batch.
    AppendEventLost,
    AmendEvent,
    SetEventState,
    CommitBatch,
    PutModem,
    AppendModemAudit,
    AppendAudit,
}

/// What the controller should have done with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Created(u64),
    Duplicate(u64),
    Status(u16),
}

impl Answer {
    pub fn status(&self) -> u16 {
        match self {
            Answer::Created(_) => 201,
            Answer::Duplicate(_) => 200,
            Answer::Status(s) => *s,
        }
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// Start of the UTC calendar month holding `now_ms`.
pub fn month_start(now_ms: u64) -> u64 {
    let days = i64::try_from(now_ms / 86_400_000).unwrap();
    let (y, m) = civil_from_days(days);
    u64::try_from(days_from_civil(y, m, 1)).unwrap() * 86_400_000
}

fn start_due(start: Option<u64>, now: u64) -> u64 {
    start.map_or(now, |s| s.max(now))
}

/// The timing rules (422 when broken).
fn timing_ok(start: Option<u64>, stop: Option<u64>, now: u64) -> bool {
    if start.is_some_and(|t| t > MAX_TIME_MS) || stop.is_some_and(|t| t > MAX_TIME_MS) {
        return false;
    }
    match stop {
        Some(stop) => start.is_none_or(|s| stop > s) && stop > now,
        None => true,
    }
}

fn modem_id_ok(m: &str) -> bool {
    !m.is_empty() && m.len() <= 128 && !m.chars().any(char::is_control)
}

pub struct Model {
    pub bases: BTreeMap<String, QosLevel>,
    pub events: BTreeMap<u64, MEvent>,
    /// (who, client key) → (the request as first sent, its event id).
    keys: BTreeMap<(Who, String), (Post, u64)>,
    pub last_id: u64,
    /// Ids handed out by the engine for requests the store did not keep: never seen again.
    pub burned: BTreeSet<u64>,
    pub levels: BTreeMap<String, MLevel>,
    pub max_per_month: Option<u32>,
    pub csr_from_catalogue: bool,
    /// `AppState::tick_after_commit`: every submission the controller handles also fires
    /// what is due (in the same commit).
    pub fire_on_submit: bool,
}

impl Model {
    pub fn new(
        bases: BTreeMap<String, QosLevel>,
        levels: BTreeMap<String, MLevel>,
        max_per_month: Option<u32>,
        csr_from_catalogue: bool,
    ) -> Model {
        Model {
            bases,
            events: BTreeMap::new(),
            keys: BTreeMap::new(),
            last_id: 0,
            burned: BTreeSet::new(),
            levels,
            max_per_month,
            csr_from_catalogue,
            fire_on_submit: false,
        }
    }

    fn restricted(&self, who: Who) -> bool {
        who.subscriber_of().is_some() || (who == Who::Csr && self.csr_from_catalogue)
    }

    /// The modem's effective level: base, active grants layered by (start due, id).
    pub fn effective(&self, modem: &str) -> Option<QosLevel> {
        let base = *self.bases.get(modem)?;
        let mut layers: Vec<&MEvent> = self
            .events
            .values()
            .filter(|e| e.modem == modem && e.state == EventState::Active)
            .collect();
        layers.sort_by_key(|e| (e.start_due_ms, e.id));
        Some(
            layers
                .iter()
                .fold(base, |acc, e| e.qos.overlay(&acc))
                .normalized(),
        )
    }

    /// Fires every start and stop due at `now` (a tick, a restart, a resync).
    pub fn tick(&mut self, now: u64) {
        for e in self.events.values_mut() {
            if e.state == EventState::Pending && e.start_due_ms <= now {
                e.state = EventState::Active;
            }
            if e.state == EventState::Active && e.stop_ms.is_some_and(|s| s <= now) {
                e.state = EventState::Completed;
            }
        }
    }

    /// The controller was dropped and opened again from its store at `now`.
    pub fn restart(&mut self, now: u64) {
        // Burned ids stay burned: the store keeps the highest id ever handed out.
        self.tick(now);
    }

    /// A new id the engine hands out for a request the store then loses.
    fn burn(&mut self) {
        self.last_id += 1;
        self.burned.insert(self.last_id);
    }

    /// Catalogue grants of `modem` this month: (this level, all levels).
    fn quota_used(&self, modem: &str, level: &str, now: u64) -> (u32, u32) {
        let month = month_start(now);
        let mine = self
            .events
            .values()
            .filter(|e| e.modem == modem && e.created_ms >= month && e.level.is_some());
        let all = mine.clone().count();
        let this = mine.filter(|e| e.level.as_deref() == Some(level)).count();
        (this as u32, all as u32)
    }

    /// Catalogue rules for a request naming `level` (the level exists): `None` if granted.
    fn catalogue_refusal(
        &self,
        level: &MLevel,
        start: Option<u64>,
        stop: Option<u64>,
        now: u64,
    ) -> Option<u16> {
        let Some(stop) = stop else {
            return Some(422);
        };
        if stop.saturating_sub(start_due(start, now)) > level.max_duration_ms {
            return Some(422);
        }
        None
    }

    pub fn post(&mut self, p: &Post, now: u64, fault: Option<Fault>) -> Answer {
        if let Some(s) = p.who.gate() {
            return Answer::Status(s);
        }
        if p.who.subscriber_of().is_some_and(|m| m != p.modem) {
            return Answer::Status(403);
        }
        if p.level.is_none() && self.restricted(p.who) {
            return Answer::Status(403);
        }
        if p.level
            .as_ref()
            .is_some_and(|l| l.is_empty() || l.len() > 64)
        {
            return Answer::Status(422);
        }
        if p.qos.is_some() == p.level.is_some() {
            return Answer::Status(422);
        }
        // The controller's part: every outcome below goes through a store batch.
        let answer = self.post_in_controller(p, now);
        let answer = self.post_effects(p, answer, now, fault);
        if self.fire_on_submit {
            self.tick(now);
        }
        answer
    }

    fn post_effects(&mut self, p: &Post, answer: Answer, now: u64, fault: Option<Fault>) -> Answer {
        match (fault, &answer) {
            (Some(Fault::AppendEvent), Answer::Created(_)) => {
                self.burn();
                Answer::Status(503)
            }
            (Some(Fault::AppendEventLost), Answer::Created(_)) => {
                self.burn();
                self.tick(now);
                Answer::Status(503)
            }
            (Some(Fault::CommitBatch), a) => {
                let a = match a {
                    Answer::Created(_) => {
                        self.burn();
                        Answer::Status(503)
                    }
                    Answer::Duplicate(_) => Answer::Status(503),
                    refused => refused.clone(),
                };
                self.tick(now);
                a
            }
            (_, Answer::Created(id)) => {
                let id = *id;
                self.last_id = id;
                let level = p.level.as_ref().map(|l| self.levels[l].qos);
                let e = MEvent {
                    id,
                    modem: p.modem.clone(),
                    source: p.who.source(),
                    qos: level.unwrap_or_else(|| p.qos.unwrap().0),
                    start_ms: p.start_ms,
                    stop_ms: p.stop_ms,
                    key: p.key.clone().map(|k| (p.who, k)),
                    level: p.level.clone(),
                    created_ms: now,
                    start_due_ms: start_due(p.start_ms, now),
                    state: EventState::Pending,
                };
                if let Some(k) = &p.key {
                    self.keys.insert((p.who, k.clone()), (p.clone(), id));
                }
                self.events.insert(id, e);
                answer
            }
            _ => answer,
        }
    }

    /// The controller's answer to a well-formed submission, without its effects.
    fn post_in_controller(&self, p: &Post, now: u64) -> Answer {
        if let Some(k) = &p.key {
            if let Some((orig, id)) = self.keys.get(&(p.who, k.clone())) {
                return if orig == p {
                    Answer::Duplicate(*id)
                } else {
                    Answer::Status(409)
                };
            }
        }
        if !timing_ok(p.start_ms, p.stop_ms, now) {
            return Answer::Status(422);
        }
        if let Some(name) = &p.level {
            let Some(level) = self.levels.get(name) else {
                return Answer::Status(422);
            };
            if let Some(s) = self.catalogue_refusal(level, p.start_ms, p.stop_ms, now) {
                return Answer::Status(s);
            }
            let (this, all) = self.quota_used(&p.modem, name, now);
            if level.per_month.is_some_and(|l| this >= l)
                || self.max_per_month.is_some_and(|l| all >= l)
            {
                return Answer::Status(403);
            }
        }
        if !modem_id_ok(&p.modem) {
            return Answer::Status(422);
        }
        if let Some((q, valid)) = p.qos {
            if q.is_empty() || !valid {
                return Answer::Status(422);
            }
        }
        if !self.bases.contains_key(&p.modem) {
            return Answer::Status(404);
        }
        Answer::Created(self.last_id + 1)
    }

    /// The owner check of PATCH and DELETE: `None` if `who` may change event `id`.
    fn change_refusal(&self, who: Who, id: u64) -> Option<u16> {
        let Some(e) = self.events.get(&id) else {
            return Some(404);
        };
        if let Some(m) = who.subscriber_of() {
            if e.modem != m || e.source != Source::Subscriber {
                return Some(403);
            }
        }
        None
    }

    pub fn patch(&mut self, p: &Patch, now: u64, fault: Option<Fault>) -> u16 {
        if let Some(s) = p.who.gate() {
            return s;
        }
        if p.qos.is_some() && self.restricted(p.who) {
            return 403;
        }
        if p.start_ms.is_none() && p.stop_ms.is_none() && p.qos.is_none() {
            return 422;
        }
        if let Some(s) = self.change_refusal(p.who, p.id) {
            return s;
        }
        let e = &self.events[&p.id];
        let start = p.start_ms.unwrap_or(e.start_ms);
        let stop = p.stop_ms.unwrap_or(e.stop_ms);
        let (qos, valid) = p.qos.unwrap_or((e.qos, true));
        let status = (|| {
            if let Some(level) = e.level.as_ref().map(|l| &self.levels[l]) {
                if qos != level.qos {
                    return 422;
                }
                if let Some(s) = self.catalogue_refusal(level, start, stop, now) {
                    return s;
                }
            }
            if e.state != EventState::Pending {
                return 409;
            }
            if qos.is_empty() || !valid || !timing_ok(start, stop, now) {
                return 422;
            }
            200
        })();
        match fault {
            Some(Fault::CommitBatch) => {
                self.tick(now);
                return 503;
            }
            Some(Fault::AmendEvent) if status == 200 => {
                self.tick(now);
                return 503;
            }
            _ => {}
        }
        if status == 200 {
            let e = self.events.get_mut(&p.id).unwrap();
            e.start_ms = start;
            e.stop_ms = stop;
            e.qos = qos;
            e.start_due_ms = start_due(start, now);
        }
        status
    }

    pub fn delete(&mut self, who: Who, id: u64, now: u64, fault: Option<Fault>) -> u16 {
        if let Some(s) = who.gate() {
            return s;
        }
        if let Some(s) = self.change_refusal(who, id) {
            return s;
        }
        let e = self.events.get_mut(&id).unwrap();
        let status = match e.state {
            EventState::Completed | EventState::Cancelled => 409,
            _ => 200,
        };
        match fault {
            Some(Fault::CommitBatch) => {
                self.tick(now);
                return 503;
            }
            Some(Fault::SetEventState) if status == 200 => {
                self.tick(now);
                return 503;
            }
            _ => {}
        }
        if status == 200 {
            e.state = EventState::Cancelled;
        }
        status
    }

    pub fn put_base(
        &mut self,
        who: Who,
        modem: &str,
        plan: QosLevel,
        valid: bool,
        fault: Option<Fault>,
    ) -> u16 {
        if let Some(s) = who.gate() {
            return s;
        }
        if who.subscriber_of().is_some() {
            return 403;
        }
        if !valid {
            return 422;
        }
        let Some(old) = self.bases.get(modem) else {
            return 404;
        };
        if *old != plan {
            if matches!(
                fault,
                Some(Fault::PutModem | Fault::AppendModemAudit | Fault::CommitBatch)
            ) {
                // The store refused the plan: nothing changed, and nothing needs a resync.
                return 503;
            }
            self.bases.insert(modem.to_owned(), plan);
        }
        200
    }

    /// `GET /v1/modems/{id}`: the status and, for 200, (base, effective).
    pub fn get_modem(&self, who: Who, modem: &str) -> (u16, Option<(QosLevel, QosLevel)>) {
        if let Some(s) = who.gate() {
            return (s, None);
        }
        if who.subscriber_of().is_some_and(|m| m != modem) {
            return (403, None);
        }
        match self.bases.get(modem) {
            None => (404, None),
            Some(b) => (200, Some((*b, self.effective(modem).unwrap()))),
        }
    }

    /// `GET /v1/events/{id}`.
    pub fn get_event(&self, who: Who, id: u64) -> (u16, Option<&MEvent>) {
        if let Some(s) = who.gate() {
            return (s, None);
        }
        let Some(e) = self.events.get(&id) else {
            return (404, None);
        };
        if who.subscriber_of().is_some_and(|m| m != e.modem) {
            return (403, None);
        }
        (200, Some(e))
    }

    /// `GET /v1/events?modem=&state=`: the status and, for 200, the ids in order.
    pub fn list(
        &self,
        who: Who,
        modem: Option<&str>,
        state: Option<EventState>,
    ) -> (u16, Vec<u64>) {
        if let Some(s) = who.gate() {
            return (s, Vec::new());
        }
        let own = who.subscriber_of();
        if let (Some(m), Some(o)) = (modem, own) {
            if m != o {
                return (403, Vec::new());
            }
        }
        let ids = self
            .events
            .values()
            .filter(|e| modem.is_none_or(|m| m == e.modem))
            .filter(|e| own.is_none_or(|m| m == e.modem))
            .filter(|e| state.is_none_or(|s| s == e.state))
            .map(|e| e.id)
            .collect();
        (200, ids)
    }
}

#[cfg(test)]
mod calendar {
    #[test]
    fn month_starts() {
        // 2023-11-30T23:00:00Z → 2023-11-01; 2024-03-01T00:00:00Z → itself; leap day.
        assert_eq!(super::month_start(1_701_385_200_000), 1_698_796_800_000);
        assert_eq!(super::month_start(1_709_251_200_000), 1_709_251_200_000);
        assert_eq!(super::month_start(1_709_164_800_000), 1_706_745_600_000);
    }
}
