//! Unit tests of the controller protocol with a recording enforcer and pipeline (test doubles
//! of the two narrow traits) and the real SQLite store. The real data plane is exercised in
//! `tests/controller_dataplane.rs`.

use std::sync::{Arc, Mutex};

use super::*;
use crate::policy::SubscriberKey;
use crate::provision::{BaseSource, ModemAuditEntry, Snapshot, Source};
use crate::store::{Durability, SqliteStore, TempDir};

const T0: u64 = 1_700_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Store(&'static str, String),
    Apply(Target, String, QosLevel),
    Remove(Target, String),
}

type Log = Arc<Mutex<Vec<Call>>>;

fn take(log: &Log) -> Vec<Call> {
    std::mem::take(&mut *log.lock().unwrap())
}

/// Records every call into the shared log; fails while `fail` is set.
struct Recorder {
    target: Target,
    log: Log,
    fail: Arc<Mutex<bool>>,
}

impl Recorder {
    fn call(&self, call: Call, modem: &ModemBinding) -> Result<(), EnforceError> {
        self.log.lock().unwrap().push(call);
        if *self.fail.lock().unwrap() {
            return Err(EnforceError::Binding {
                modem: modem.modem.clone(),
                reason: "injected failure".into(),
            });
        }
        Ok(())
    }
}

impl Enforcer for Recorder {
    fn apply(&mut self, m: &ModemBinding, q: &QosLevel) -> Result<(), EnforceError> {
        self.call(Call::Apply(self.target, m.modem.clone(), *q), m)
    }
    fn remove(&mut self, m: &ModemBinding) -> Result<(), EnforceError> {
        self.call(Call::Remove(self.target, m.modem.clone()), m)
    }
}

impl ModemPipeline for Recorder {
    fn apply(&mut self, m: &ModemBinding, q: &QosLevel) -> Result<(), EnforceError> {
        self.call(Call::Apply(self.target, m.modem.clone(), *q), m)
    }
    fn remove(&mut self, m: &ModemBinding) -> Result<(), EnforceError> {
        self.call(Call::Remove(self.target, m.modem.clone()), m)
    }
}

/// The SQLite store, recording its writes into the same log; a write fails while `fail` names
/// its operation.
struct LoggedStore {
    inner: SqliteStore,
    log: Log,
    fail: Arc<Mutex<Option<&'static str>>>,
    /// With `fail`: only the write whose logged argument is this fails.
    fail_what: Arc<Mutex<Option<String>>>,
}

impl LoggedStore {
    fn write(&self, op: &'static str, what: String) -> Result<(), StoreError> {
        let only = self.fail_what.lock().unwrap().clone();
        let hit = only.is_none_or(|w| w == what);
        self.log.lock().unwrap().push(Call::Store(op, what));
        if *self.fail.lock().unwrap() == Some(op) && hit {
            return Err(StoreError::Sqlite {
                op,
                source: rusqlite::Error::InvalidQuery,
            });
        }
        Ok(())
    }
}

impl Store for LoggedStore {
    fn begin_batch(&mut self, durability: Durability) -> Result<(), StoreError> {
        self.inner.begin_batch(durability)
    }
    /// Not logged (the log records what is written, not how it is grouped); fails, storing
    /// nothing of the batch, while `fail` is `"commit_batch"`.
    fn commit_batch(&mut self) -> Result<(), StoreError> {
        if *self.fail.lock().unwrap() == Some("commit_batch") {
            self.inner.rollback_batch();
            return Err(StoreError::Sqlite {
                op: "commit_batch",
                source: rusqlite::Error::InvalidQuery,
            });
        }
        self.inner.commit_batch()
    }
    fn rollback_batch(&mut self) {
        self.inner.rollback_batch();
    }
    fn put_modem(&mut self, id: &str, base: &QosLevel) -> Result<(), StoreError> {
        self.write("put_modem", id.into())?;
        self.inner.put_modem(id, base)
    }
    fn modem(&self, id: &str) -> Result<Option<QosLevel>, StoreError> {
        self.inner.modem(id)
    }
    fn set_config_base(&mut self, id: &str, plan: &QosLevel) -> Result<(), StoreError> {
        self.write("set_config_base", id.into())?;
        self.inner.set_config_base(id, plan)
    }
    fn config_base(&self, id: &str) -> Result<Option<QosLevel>, StoreError> {
        self.inner.config_base(id)
    }
    fn append_modem_audit(&mut self, entry: &ModemAuditEntry) -> Result<(), StoreError> {
        self.write("append_modem_audit", entry.modem.clone())?;
        self.inner.append_modem_audit(entry)
    }
    fn modem_audit(&self, id: &str) -> Result<Vec<ModemAuditEntry>, StoreError> {
        self.inner.modem_audit(id)
    }
    fn burn_event_ids(&mut self, last: u64) -> Result<(), StoreError> {
        self.inner.burn_event_ids(last)
    }
    fn append_event(&mut self, event: &crate::provision::Event) -> Result<(), StoreError> {
        self.write("append_event", event.id.to_string())?;
        self.inner.append_event(event)
    }
    fn set_event_state(&mut self, id: u64, state: EventState) -> Result<(), StoreError> {
        self.write("set_event_state", format!("{id} {state:?}"))?;
        self.inner.set_event_state(id, state)
    }
    fn amend_event(&mut self, event: &crate::provision::Event) -> Result<(), StoreError> {
        self.write("amend_event", event.id.to_string())?;
        self.inner.amend_event(event)
    }
    fn append_audit(&mut self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        self.write("append_audit", entries.len().to_string())?;
        self.inner.append_audit(entries)
    }
    fn audit(&self, event: u64) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit(event)
    }
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }
}

struct Rig {
    dir: TempDir,
    log: Log,
    fail_dp: Arc<Mutex<bool>>,
    fail_store: Arc<Mutex<Option<&'static str>>>,
    fail_what: Arc<Mutex<Option<String>>>,
}

impl Rig {
    fn new(name: &str) -> Rig {
        Rig {
            dir: TempDir::new(name),
            log: Log::default(),
            fail_dp: Arc::default(),
            fail_store: Arc::default(),
            fail_what: Arc::default(),
        }
    }

    fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("shaper.db")
    }

    fn open(&self, bindings: Vec<ModemBinding>, now: u64) -> (Controller, Vec<Change>) {
        let store = LoggedStore {
            inner: SqliteStore::open(self.db()).unwrap(),
            log: self.log.clone(),
            fail: self.fail_store.clone(),
            fail_what: self.fail_what.clone(),
        };
        let dp = Recorder {
            target: Target::Dataplane,
            log: self.log.clone(),
            fail: self.fail_dp.clone(),
        };
        let pipe = Recorder {
            target: Target::Pipeline,
            log: self.log.clone(),
            fail: Arc::default(),
        };
        Controller::open(
            config(),
            Box::new(store),
            Box::new(dp),
            Box::new(pipe),
            bindings,
            now,
        )
        .unwrap()
    }
}

fn config() -> ControllerConfig {
    ControllerConfig {
        classes: 10..=99,
        htb_minors_down: Some(0x10..=0x1f),
        htb_minors_up: None,
    }
}

fn key(addr: &str) -> SubscriberKey {
    SubscriberKey {
        addr: addr.parse().unwrap(),
        len: 32,
    }
}

fn base() -> QosLevel {
    QosLevel {
        max_up_bps: Some(2_000_000),
        max_down_bps: Some(10_000_000),
        priority: Some(1),
        ..QosLevel::default()
    }
}

fn down(bps: u64) -> QosLevel {
    QosLevel {
        max_down_bps: Some(bps),
        ..QosLevel::default()
    }
}

fn req(modem: &str, qos: QosLevel, start: Option<u64>, stop: Option<u64>) -> EventRequest {
    EventRequest {
        modem: modem.into(),
        source: Source::Csr {
            user: "alice".into(),
        },
        qos,
        start_ms: start,
        stop_ms: stop,
        idempotency_key: None,
        level: None,
    }
}

fn add(ctl: &mut Controller, modem: &str, addr: &str) -> ModemBinding {
    let b = ctl.propose_binding(modem, vec![key(addr)]).unwrap();
    ctl.add_modem(b.clone(), base(), T0).unwrap();
    b
}

fn applied(modem: &str, qos: QosLevel) -> [Call; 2] {
    [
        Call::Apply(Target::Dataplane, modem.into(), qos.normalized()),
        Call::Apply(Target::Pipeline, modem.into(), qos.normalized()),
    ]
}

fn store(op: &'static str, what: &str) -> Call {
    Call::Store(op, what.into())
}

#[test]
fn calls_follow_the_store_protocol() {
    let rig = Rig::new("ctl-order");
    let (mut ctl, fired) = rig.open(vec![], T0);
    assert!(fired.is_empty());
    assert!(take(&rig.log).is_empty(), "an empty store enforces nothing");

    let b = add(&mut ctl, "cm1", "198.18.0.10");
    assert_eq!(
        (b.up_class, b.down_class, b.htb_minor_down),
        (10, 11, Some(0x10))
    );
    let mut expected = vec![store("put_modem", "cm1")];
    expected.extend(applied("cm1", base()));
    assert_eq!(
        take(&rig.log),
        expected,
        "stored, then the base plan enforced"
    );

    // Submission: stored before it returns; nothing enforced until the tick.
    let s = ctl
        .submit(req("cm1", down(50_000_000), None, Some(T0 + 5000)), T0)
        .unwrap();
    assert_eq!(
        take(&rig.log),
        [store("append_event", "1"), store("append_audit", "1")]
    );
    assert_eq!(s.id, 1);

    // The tick: state, audit, then the data plane, then the modem pipeline.
    let changes = ctl.tick(T0).unwrap();
    assert_eq!(changes.len(), 1);
    let boosted = down(50_000_000).overlay(&base());
    let mut expected = vec![
        store("set_event_state", "1 Active"),
        store("append_audit", "1"),
    ];
    expected.extend(applied("cm1", boosted));
    assert_eq!(take(&rig.log), expected);

    // Modification of a pending event: amended in the store, nothing enforced.
    let p = ctl
        .submit(req("cm1", down(20_000_000), Some(T0 + 3000), None), T0)
        .unwrap();
    take(&rig.log);
    ctl.modify(
        p.id,
        Amendment {
            start_ms: Some(T0 + 4000),
            stop_ms: None,
            qos: down(30_000_000),
        },
        T0 + 1,
    )
    .unwrap();
    assert_eq!(
        take(&rig.log),
        [store("amend_event", "2"), store("append_audit", "1")]
    );

    // Nothing due: a tick writes and enforces nothing.
    assert!(ctl.tick(T0 + 100).unwrap().is_empty());
    assert!(take(&rig.log).is_empty());
    assert_eq!(ctl.next_due(), Some(T0 + 4000));
    assert_eq!(ctl.stats().enforced, 2);
    assert!(ctl.unenforced().is_empty());
}

#[test]
fn a_batch_is_one_commit_and_fires_what_is_due_with_it() {
    let rig = Rig::new("ctl-batch");
    let (mut ctl, _) = rig.open(vec![], T0);
    add(&mut ctl, "cm1", "198.18.0.10");
    add(&mut ctl, "cm2", "198.18.0.11");
    take(&rig.log);
    let (results, changes) = ctl.submit_batch_and_fire(
        vec![
            req("cm1", down(50_000_000), None, None),
            req("cm9", down(1_000_000), None, None), // unknown modem: refused, the others go on
            req("cm2", down(70_000_000), Some(T0 + 5000), None),
        ],
        T0,
    );
    assert_eq!(results[0].as_ref().unwrap().id, 1);
    assert!(
        matches!(
            results[1],
            Err(ControllerError::Provision(ProvisionError::UnknownModem(_)))
        ),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2].as_ref().unwrap().id, 2);
    // The immediate one fired in the same commit; nothing is enforced yet.
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].cause, changes[0].kind),
        (1, ChangeKind::Applied)
    );
    assert_eq!(
        take(&rig.log),
        [
            // Stored after the poll, each in its state then: event 1 is inserted active,
            // with no update of its state in the same commit.
            store("append_event", "1"),
            store("append_event", "2"),
            store("append_audit", "3"),
        ]
    );
    // Durable as one: a second connection sees both events and the activation.
    let snap = SqliteStore::open(rig.db()).unwrap().load().unwrap();
    let states: Vec<(u64, EventState)> = snap
        .events
        .iter()
        .map(|s| (s.event.id, s.event.state))
        .collect();
    assert_eq!(states, [(1, EventState::Active), (2, EventState::Pending)]);
    ctl.enforce_changes(&changes, T0).unwrap();
    assert_eq!(
        take(&rig.log),
        applied("cm1", down(50_000_000).overlay(&base()))
    );
    // A failed commit acknowledges nothing of the batch; the controller resyncs from the
    // store at once, so nothing of the batch is in memory or enforced, and it goes on.
    *rig.fail_store.lock().unwrap() = Some("commit_batch");
    let (results, fired) = ctl.submit_batch_and_fire(
        vec![
            req("cm1", down(60_000_000), None, None),
            req("cm2", down(80_000_000), None, None),
        ],
        T0 + 1,
    );
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(ControllerError::NotCommitted(_)))),
        "{results:?}"
    );
    assert!(fired.is_empty(), "a lost batch has nothing to enforce");
    assert!(ctl.poisoned().is_none());
    assert_eq!(ctl.resyncs(), 1);
    assert_eq!(ctl.engine().events().count(), 2);
    assert_eq!(
        ctl.effective("cm1").unwrap().max_down_bps,
        Some(50_000_000),
        "the refused 60 Mbit/s grant is not in force"
    );
    // The two modems the lost batch touched are enforced at their stored levels again.
    let enforced: Vec<Call> = take(&rig.log)
        .into_iter()
        .filter(|c| matches!(c, Call::Apply(..)))
        .collect();
    let mut want = Vec::from(applied("cm1", down(50_000_000).overlay(&base())));
    want.extend(applied("cm2", base()));
    assert_eq!(enforced, want);
    *rig.fail_store.lock().unwrap() = None;
    // Writes work again, and the ids of the lost batch are not handed out again.
    let s = ctl
        .submit(req("cm1", down(70_000_000), None, None), T0 + 2)
        .unwrap();
    assert_eq!(s.id, 5, "ids 3 and 4 went to the lost batch");
    drop(ctl);
    let snap = SqliteStore::open(rig.db()).unwrap().load().unwrap();
    assert_eq!(snap.events.len(), 3, "the failed batch left nothing");
}

#[test]
fn a_changed_base_plan_is_stored_and_enforced_under_the_active_grants() {
    let rig = Rig::new("ctl-base");
    let (mut ctl, _) = rig.open(vec![], T0);
    let b = add(&mut ctl, "cm1", "198.18.0.10");
    ctl.submit(req("cm1", down(50_000_000), None, None), T0)
        .unwrap();
    ctl.tick(T0).unwrap();
    take(&rig.log);
    let slower = QosLevel {
        max_up_bps: Some(1_000_000),
        max_down_bps: Some(5_000_000),
        ..QosLevel::default()
    };
    let billing = BaseSource::Api {
        role: "automation".into(),
        subject: "billing".into(),
    };
    assert!(
        ctl.set_base("cm1", slower, billing.clone(), T0 + 1)
            .unwrap()
    );
    // The grant still sets the downstream rate; the upstream one comes from the new base.
    let want = down(50_000_000).overlay(&slower);
    let mut expected = vec![
        store("put_modem", "cm1"),
        store("append_modem_audit", "cm1"),
    ];
    expected.extend(applied("cm1", want));
    assert_eq!(take(&rig.log), expected);
    assert_eq!(ctl.engine().base("cm1"), Some(&slower));
    assert_eq!(ctl.effective("cm1"), Some(want.normalized()));
    let line = ModemAuditEntry {
        at_ms: T0 + 1,
        modem: "cm1".into(),
        by: billing.clone(),
        old: base(),
        new: slower,
    };
    assert_eq!(ctl.modem_audit("cm1").unwrap(), std::slice::from_ref(&line));
    // The same plan again: nothing stored or audited (enforced again, a no-op for targets).
    assert!(
        !ctl.set_base("cm1", slower, billing.clone(), T0 + 2)
            .unwrap()
    );
    assert_eq!(take(&rig.log), applied("cm1", want));
    assert_eq!(ctl.modem_audit("cm1").unwrap().len(), 1);
    // Refusals change nothing.
    assert!(matches!(
        ctl.set_base("cm9", slower, billing.clone(), T0 + 2),
        Err(ControllerError::UnknownModem(_))
    ));
    assert!(matches!(
        ctl.modem_audit("cm9"),
        Err(ControllerError::UnknownModem(_))
    ));
    let invalid = QosLevel {
        max_down_bps: Some(0),
        ..QosLevel::default()
    };
    assert!(matches!(
        ctl.set_base("cm1", invalid, billing.clone(), T0 + 2),
        Err(ControllerError::Provision(
            ProvisionError::InvalidBase { .. }
        ))
    ));
    assert!(take(&rig.log).is_empty());
    // A failed store write or commit changes nothing either, and does not poison.
    for op in ["append_modem_audit", "commit_batch"] {
        *rig.fail_store.lock().unwrap() = Some(op);
        assert!(matches!(
            ctl.set_base("cm1", base(), billing.clone(), T0 + 2),
            Err(ControllerError::NotStored(_))
        ));
        *rig.fail_store.lock().unwrap() = None;
        assert!(
            !take(&rig.log).iter().any(|c| matches!(c, Call::Apply(..))),
            "{op}: nothing enforced"
        );
        assert_eq!(ctl.engine().base("cm1"), Some(&slower), "{op}");
        assert_eq!(ctl.poisoned(), None);
        let reread = SqliteStore::open(rig.db()).unwrap();
        assert_eq!(reread.modem("cm1").unwrap(), Some(slower), "{op}");
        assert_eq!(
            reread.modem_audit("cm1").unwrap(),
            std::slice::from_ref(&line),
            "{op}"
        );
    }
    // Durable: a restart has the new base.
    drop(ctl);
    let (ctl, _) = rig.open(vec![b], T0 + 3);
    assert_eq!(ctl.engine().base("cm1"), Some(&slower));
    assert_eq!(ctl.effective("cm1"), Some(want.normalized()));
    assert_eq!(ctl.modem_audit("cm1").unwrap(), [line]);
}

/// `shaper run` start: the configuration's plan replaces the stored base plan only when it
/// changed since it was last applied; an API (or dropped-file) change survives restarts with
/// an unchanged configuration.
#[test]
fn a_configured_plan_wins_only_when_the_configuration_changed() {
    let rig = Rig::new("ctl-config-base");
    let (mut ctl, _) = rig.open(vec![], T0);
    let b = add(&mut ctl, "cm1", "198.18.0.10");
    take(&rig.log);
    // First run: the plan the modem was added with is recorded as applied; nothing changes.
    assert_eq!(
        ctl.apply_configured_base("cm1", base(), T0).unwrap(),
        ConfiguredBase::InForce
    );
    assert_eq!(take(&rig.log), [store("set_config_base", "cm1")]);
    assert_eq!(ctl.modem_audit("cm1").unwrap(), []);
    // The API changes the plan.
    let api_plan = QosLevel {
        max_down_bps: Some(40_000_000),
        ..base()
    };
    let csr = BaseSource::Api {
        role: "csr".into(),
        subject: "alice".into(),
    };
    ctl.set_base("cm1", api_plan, csr.clone(), T0 + 1).unwrap();
    take(&rig.log);

    // Restart, same configuration: the API's plan stays; nothing is written or enforced
    // beyond what opening does.
    drop(ctl);
    let (mut ctl, _) = rig.open(vec![b.clone()], T0 + 2);
    take(&rig.log);
    assert_eq!(
        ctl.apply_configured_base("cm1", base(), T0 + 2).unwrap(),
        ConfiguredBase::StoredKept { stored: api_plan }
    );
    assert!(take(&rig.log).is_empty());
    assert_eq!(ctl.engine().base("cm1"), Some(&api_plan));

    // Restart with the configuration edited: its plan wins, audited as the configuration's,
    // recorded as applied, enforced.
    drop(ctl);
    let (mut ctl, _) = rig.open(vec![b.clone()], T0 + 3);
    take(&rig.log);
    let edited = QosLevel {
        max_down_bps: Some(20_000_000),
        ..base()
    };
    assert_eq!(
        ctl.apply_configured_base("cm1", edited, T0 + 3).unwrap(),
        ConfiguredBase::Applied { previous: api_plan }
    );
    let mut expected = vec![
        store("set_config_base", "cm1"),
        store("put_modem", "cm1"),
        store("append_modem_audit", "cm1"),
    ];
    expected.extend(applied("cm1", edited));
    assert_eq!(take(&rig.log), expected);
    assert_eq!(ctl.engine().base("cm1"), Some(&edited));
    let trail = ctl.modem_audit("cm1").unwrap();
    assert_eq!(
        trail
            .iter()
            .map(|l| (l.at_ms, l.by.clone(), l.old, l.new))
            .collect::<Vec<_>>(),
        [
            (T0 + 1, csr.clone(), base(), api_plan),
            (T0 + 3, BaseSource::Config, api_plan, edited)
        ]
    );
    // Once more with the same edited configuration: in force, nothing written.
    assert_eq!(
        ctl.apply_configured_base("cm1", edited, T0 + 4).unwrap(),
        ConfiguredBase::InForce
    );
    assert!(take(&rig.log).is_empty());

    // The configuration edited to the plan already stored: recorded, no base change or audit.
    ctl.set_base("cm1", api_plan, csr, T0 + 5).unwrap();
    take(&rig.log);
    assert_eq!(
        ctl.apply_configured_base("cm1", api_plan, T0 + 6).unwrap(),
        ConfiguredBase::InForce
    );
    assert_eq!(take(&rig.log), [store("set_config_base", "cm1")]);
    assert_eq!(ctl.modem_audit("cm1").unwrap().len(), 3);

    // A failed commit changes nothing: the old configured plan stays recorded.
    *rig.fail_store.lock().unwrap() = Some("commit_batch");
    assert!(ctl.apply_configured_base("cm1", base(), T0 + 7).is_err());
    *rig.fail_store.lock().unwrap() = None;
    assert_eq!(ctl.engine().base("cm1"), Some(&api_plan));
    assert_eq!(
        SqliteStore::open(rig.db())
            .unwrap()
            .config_base("cm1")
            .unwrap(),
        Some(api_plan)
    );
    assert!(matches!(
        ctl.apply_configured_base("cm9", base(), T0 + 7),
        Err(ControllerError::UnknownModem(_))
    ));
}

#[test]
fn an_acknowledged_submission_is_durable() {
    let rig = Rig::new("ctl-durable");
    let (mut ctl, _) = rig.open(vec![], T0);
    let b = add(&mut ctl, "cm1", "198.18.0.10");
    let s = ctl
        .submit(req("cm1", down(50_000_000), Some(T0 + 1000), None), T0)
        .unwrap();
    // Acknowledged: a second connection sees it while the controller still runs.
    let other = SqliteStore::open(rig.db()).unwrap();
    let snap = other.load().unwrap();
    assert_eq!(snap.events.len(), 1);
    assert_eq!(snap.events[0].event.id, s.id);
    assert_eq!(snap.events[0].event.state, EventState::Pending);
    drop(other);

    // A submission whose store write fails is not acknowledged and leaves nothing behind in
    // memory: the controller goes on.
    *rig.fail_store.lock().unwrap() = Some("append_event");
    let err = ctl
        .submit(req("cm1", down(60_000_000), None, None), T0 + 1)
        .unwrap_err();
    assert!(matches!(err, ControllerError::NotStored(_)), "{err}");
    assert!(ctl.poisoned().is_none());
    assert_eq!(
        ctl.engine().events().count(),
        1,
        "the refused event is forgotten"
    );
    assert!(ctl.engine().event(2).is_none());
    *rig.fail_store.lock().unwrap() = None;
    let fired = ctl.tick(T0 + 2000).unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].cause, s.id);

    // Crash and restart: the acknowledged event survived; the refused one is gone.
    drop(ctl);
    let (ctl, fired) = rig.open(vec![b], T0 + 2000);
    assert!(fired.is_empty());
    assert_eq!(ctl.engine().events().count(), 1);
    assert_eq!(ctl.effective("cm1").unwrap().max_down_bps, Some(50_000_000));
    assert!(ctl.poisoned().is_none());
}

#[test]
fn cancelling_an_active_grant_reenforces_the_level_beneath() {
    let rig = Rig::new("ctl-cancel");
    let (mut ctl, _) = rig.open(vec![], T0);
    add(&mut ctl, "cm1", "198.18.0.10");
    let prio = QosLevel {
        priority: Some(6),
        ..QosLevel::default()
    };
    let speed = ctl
        .submit(req("cm1", down(50_000_000), None, None), T0)
        .unwrap();
    ctl.submit(req("cm1", prio, None, None), T0).unwrap();
    ctl.tick(T0).unwrap();
    take(&rig.log);

    let change = ctl.cancel(speed.id, T0 + 10).unwrap().expect("was active");
    assert_eq!(change.kind, ChangeKind::Reverted);
    let beneath = prio.overlay(&base());
    let mut expected = vec![
        store("set_event_state", "1 Cancelled"),
        store("append_audit", "1"),
    ];
    expected.extend(applied("cm1", beneath));
    assert_eq!(take(&rig.log), expected);
    assert_eq!(ctl.effective("cm1"), Some(beneath.normalized()));

    // A pending event's cancellation changes no level: nothing enforced.
    let later = ctl
        .submit(req("cm1", down(1_000_000), Some(T0 + 9000), None), T0 + 20)
        .unwrap();
    take(&rig.log);
    assert_eq!(ctl.cancel(later.id, T0 + 30).unwrap(), None);
    assert_eq!(
        take(&rig.log),
        [
            store("set_event_state", "3 Cancelled"),
            store("append_audit", "1")
        ]
    );
}

#[test]
fn a_late_tick_enforces_each_modem_once_at_its_current_level() {
    let rig = Rig::new("ctl-late");
    let (mut ctl, _) = rig.open(vec![], T0);
    add(&mut ctl, "cm1", "198.18.0.10");
    add(&mut ctl, "cm2", "198.18.0.11");
    ctl.submit(
        req("cm1", down(50_000_000), Some(T0 + 1000), Some(T0 + 2000)),
        T0,
    )
    .unwrap();
    ctl.submit(req("cm2", down(70_000_000), Some(T0 + 1500), None), T0)
        .unwrap();
    take(&rig.log);
    let changes = ctl.tick(T0 + 10_000).unwrap();
    assert_eq!(changes.len(), 3, "apply cm1, apply cm2, revert cm1");
    let mut expected = vec![
        store("set_event_state", "1 Active"),
        store("set_event_state", "2 Active"),
        store("set_event_state", "1 Completed"),
        store("append_audit", "3"),
    ];
    expected.extend(applied("cm1", base()));
    expected.extend(applied("cm2", down(70_000_000).overlay(&base())));
    assert_eq!(take(&rig.log), expected);
    // Lag is measured from the earliest due change of each modem.
    assert_eq!(ctl.stats().max_lag_ms, 9000);
}

#[test]
fn open_reconciles_every_bound_modem_to_the_store() {
    let rig = Rig::new("ctl-reconcile");
    let (mut ctl, _) = rig.open(vec![], T0);
    let b1 = add(&mut ctl, "cm1", "198.18.0.10");
    let b2 = add(&mut ctl, "cm2", "198.18.0.11");
    add(&mut ctl, "cm3", "198.18.0.12");
    ctl.submit(
        req("cm1", down(50_000_000), Some(T0 + 1000), Some(T0 + 5000)),
        T0,
    )
    .unwrap();
    ctl.submit(req("cm2", down(80_000_000), None, None), T0)
        .unwrap();
    ctl.tick(T0 + 1000).unwrap();
    let bindings: Vec<ModemBinding> = ctl.bindings().cloned().collect();
    assert_eq!(bindings.len(), 3);
    drop(ctl);
    take(&rig.log);

    // Restart past cm1's stop, without cm3's binding in the inventory.
    let (ctl, fired) = rig.open(vec![b1.clone(), b2.clone()], T0 + 6000);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].kind, ChangeKind::Reverted);
    let mut expected = vec![
        store("set_event_state", "1 Completed"),
        store("append_audit", "1"),
    ];
    // Every bound modem is enforced, changed or not, in modem order.
    expected.extend(applied("cm1", base()));
    expected.extend(applied("cm2", down(80_000_000).overlay(&base())));
    assert_eq!(take(&rig.log), expected);
    assert_eq!(ctl.unbound(), ["cm3"]);
    assert_eq!(ctl.binding("cm1"), Some(&b1));
    // The ids of the bound modems stay reserved: a new modem gets fresh ones.
    let next = ctl.propose_binding("cm4", vec![]).unwrap();
    assert_eq!((next.up_class, next.down_class), (14, 15));
    assert_eq!(next.htb_minor_down, Some(0x12));
    drop(ctl);

    // A binding for a modem the store does not know is refused.
    let ghost = ModemBinding {
        modem: "cm9".into(),
        ..b1
    };
    let store = SqliteStore::open(rig.db()).unwrap();
    let err = Controller::open(
        config(),
        Box::new(store),
        Box::new(Disabled),
        Box::new(Disabled),
        vec![ghost],
        T0 + 7000,
    )
    .unwrap_err();
    assert!(matches!(err, ControllerError::UnknownModem(m) if m == "cm9"));
}

#[test]
fn failed_enforcement_is_listed_and_retried_on_each_tick() {
    let rig = Rig::new("ctl-retry");
    let (mut ctl, _) = rig.open(vec![], T0);
    add(&mut ctl, "cm1", "198.18.0.10");
    ctl.submit(req("cm1", down(50_000_000), None, None), T0)
        .unwrap();
    *rig.fail_dp.lock().unwrap() = true;
    take(&rig.log);
    let changes = ctl.tick(T0).unwrap();
    assert_eq!(changes.len(), 1, "the decision stands");
    let un = ctl.unenforced();
    assert_eq!(un.len(), 1);
    assert_eq!((un[0].0, un[0].1), ("cm1", Target::Dataplane));
    assert!(un[0].2.contains("injected failure"));
    assert_eq!(ctl.stats().failed, 1);

    // Still failing: retried, still listed.
    take(&rig.log);
    ctl.tick(T0 + 100).unwrap();
    assert_eq!(take(&rig.log).len(), 2, "retried on both targets");
    assert_eq!(ctl.unenforced().len(), 1);

    // Fixed: the next tick enforces the current level and clears the entry.
    *rig.fail_dp.lock().unwrap() = false;
    assert!(ctl.tick(T0 + 200).unwrap().is_empty());
    assert_eq!(
        take(&rig.log).to_vec(),
        applied("cm1", down(50_000_000).overlay(&base()))
    );
    assert!(ctl.unenforced().is_empty());
}

#[test]
fn bindings_are_checked_and_unbind_removes_from_both_targets() {
    let rig = Rig::new("ctl-bind");
    let (mut ctl, _) = rig.open(vec![], T0);
    let b1 = add(&mut ctl, "cm1", "198.18.0.10");
    let mut b2 = ctl
        .propose_binding("cm2", vec![key("198.18.0.11")])
        .unwrap();
    // Taken class, address of another modem, out-of-range class, minor on a direction
    // without HTB.
    for bad in [
        ModemBinding {
            up_class: b1.down_class,
            ..b2.clone()
        },
        ModemBinding {
            addrs: b1.addrs.clone(),
            ..b2.clone()
        },
        ModemBinding {
            down_class: 100,
            ..b2.clone()
        },
        ModemBinding {
            htb_minor_up: Some(0x20),
            ..b2.clone()
        },
    ] {
        let err = ctl.add_modem(bad, base(), T0).unwrap_err();
        assert!(matches!(err, ControllerError::Binding { .. }), "{err}");
    }
    assert_eq!(
        ctl.engine().base("cm2"),
        None,
        "a refused add changes nothing"
    );
    b2.htb_minor_down = None;
    ctl.add_modem(b2, base(), T0).unwrap();
    assert!(matches!(
        ctl.add_modem(ctl.propose_binding("cm2", vec![]).unwrap(), base(), T0),
        Err(ControllerError::Provision(ProvisionError::ModemExists(_)))
    ));

    take(&rig.log);
    let removed = ctl.unbind("cm1").unwrap();
    assert_eq!(removed, b1);
    assert_eq!(
        take(&rig.log),
        [
            Call::Remove(Target::Dataplane, "cm1".into()),
            Call::Remove(Target::Pipeline, "cm1".into())
        ]
    );
    assert_eq!(ctl.unbound(), ["cm1"]);
    // Its ids are free again, and binding it anew enforces its level.
    let again = ctl
        .propose_binding("cm1", vec![key("198.18.0.10")])
        .unwrap();
    assert_eq!((again.up_class, again.htb_minor_down), (10, Some(0x10)));
    ctl.bind(again, T0 + 1).unwrap();
    assert_eq!(take(&rig.log).to_vec(), applied("cm1", base()));
}

#[test]
fn the_pipeline_needs_its_section_and_is_disabled_when_off() {
    type Open = fn() -> Result<
        crate::modem::pipeline::DocsisPipeline,
        crate::modem::pipeline::PipelineError,
    >;
    let on = EnforcementConfig {
        dataplane: false,
        modem_pipeline: true,
    };
    assert!(matches!(
        on.pipeline(None::<Open>),
        Err(ControllerError::PipelineUnconfigured)
    ));
    let never: Open = || unreachable!("the pipeline is switched off");
    assert!(EnforcementConfig::default().pipeline(Some(never)).is_ok());
    let cfg: EnforcementConfig = toml::from_str("dataplane = false").unwrap();
    assert_eq!(
        cfg,
        EnforcementConfig {
            dataplane: false,
            modem_pipeline: false
        }
    );
    let mut off = cfg.enforcer(|| unreachable!("the data plane is switched off"));
    let b = ModemBinding {
        modem: "cm1".into(),
        addrs: vec![],
        up_class: 1,
        down_class: 2,
        htb_minor_down: None,
        htb_minor_up: None,
    };
    assert!(off.apply(&b, &base()).is_ok());
    assert!(off.remove(&b).is_ok());
}

#[test]
fn a_failed_store_write_refuses_only_its_own_request() {
    let rig = Rig::new("ctl-one-lost");
    let (mut ctl, _) = rig.open(vec![], T0);
    for (m, a) in [
        ("cm1", "198.18.0.11"),
        ("cm2", "198.18.0.12"),
        ("cm3", "198.18.0.13"),
    ] {
        add(&mut ctl, m, a);
    }
    take(&rig.log);
    // Event 2's write fails (as a value SQLite cannot hold did); events 1 and 3 share its
    // group commit and must not notice.
    *rig.fail_store.lock().unwrap() = Some("append_event");
    *rig.fail_what.lock().unwrap() = Some("2".into());
    let (results, changes) = ctl.submit_batch_and_fire(
        vec![
            req("cm1", down(50_000_000), None, None),
            req("cm2", down(60_000_000), None, None),
            req("cm3", down(70_000_000), None, None),
        ],
        T0,
    );
    *rig.fail_store.lock().unwrap() = None;
    assert_eq!(results[0].as_ref().unwrap().id, 1);
    assert!(
        matches!(results[1], Err(ControllerError::NotStored(_))),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2].as_ref().unwrap().id, 3);
    assert!(ctl.poisoned().is_none());
    assert_eq!(ctl.resyncs(), 0, "one lost request needs no resync");
    // The refused grant is neither in memory nor among the changes to enforce.
    let causes: Vec<u64> = changes.iter().map(|c| c.cause).collect();
    assert_eq!(causes, [1, 3]);
    assert!(ctl.engine().event(2).is_none());
    assert_eq!(ctl.effective("cm2"), Some(base().normalized()));
    ctl.enforce_changes(&changes, T0).unwrap();
    let enforced: Vec<Call> = take(&rig.log)
        .into_iter()
        .filter(|c| matches!(c, Call::Apply(..)))
        .collect();
    let mut want = Vec::from(applied("cm1", down(50_000_000).overlay(&base())));
    want.extend(applied("cm3", down(70_000_000).overlay(&base())));
    assert_eq!(enforced, want, "cm2 is never enforced at the refused level");
    // Its id is not handed out again, and the store holds exactly what was acknowledged.
    let s = ctl
        .submit(req("cm2", down(60_000_000), None, None), T0 + 1)
        .unwrap();
    assert_eq!(s.id, 4);
    // The newest id lost too (5): a restart does not hand it out again either.
    *rig.fail_store.lock().unwrap() = Some("append_event");
    *rig.fail_what.lock().unwrap() = Some("5".into());
    assert!(
        ctl.submit(req("cm2", down(60_000_000), None, None), T0 + 2)
            .is_err()
    );
    *rig.fail_store.lock().unwrap() = None;
    drop(ctl);
    let snap = SqliteStore::open(rig.db()).unwrap().load().unwrap();
    let ids: Vec<u64> = snap.events.iter().map(|e| e.event.id).collect();
    assert_eq!(ids, [1, 3, 4]);
    assert_eq!(snap.last_event_id, 5);
    let (mut ctl, _) = rig.open(vec![], T0 + 3);
    let s = ctl
        .submit(req("cm2", down(60_000_000), None, None), T0 + 3)
        .unwrap();
    assert_eq!(s.id, 6);
}

#[test]
fn a_lost_cancellation_or_tick_resyncs_and_writes_work_again() {
    let rig = Rig::new("ctl-resync");
    let (mut ctl, _) = rig.open(vec![], T0);
    add(&mut ctl, "cm1", "198.18.0.10");
    let g = ctl
        .submit(req("cm1", down(50_000_000), None, Some(T0 + 10_000)), T0)
        .unwrap();
    ctl.tick(T0).unwrap();
    take(&rig.log);

    // The cancellation's state write fails: refused, and the grant stays (memory resynced
    // to the store, the data plane enforced at the stored level).
    *rig.fail_store.lock().unwrap() = Some("set_event_state");
    let err = ctl.cancel(g.id, T0 + 1).unwrap_err();
    assert!(matches!(err, ControllerError::NotCommitted(_)), "{err}");
    assert!(ctl.poisoned().is_none());
    assert_eq!(ctl.resyncs(), 1);
    assert_eq!(ctl.engine().event(g.id).unwrap().state, EventState::Active);
    let boosted = down(50_000_000).overlay(&base());
    assert_eq!(ctl.effective("cm1"), Some(boosted.normalized()));
    let enforced: Vec<Call> = take(&rig.log)
        .into_iter()
        .filter(|c| matches!(c, Call::Apply(..)))
        .collect();
    assert_eq!(enforced, applied("cm1", boosted));

    // The stop's state write fails at the tick: the data plane follows (the stop is due),
    // the resync fires the stop again from the store and stores it this time... once the
    // store works again. While it fails, the tick reports the loss.
    let err = ctl.tick(T0 + 10_000).unwrap_err();
    assert!(matches!(err, ControllerError::NotCommitted(_)), "{err}");
    *rig.fail_store.lock().unwrap() = None;
    assert_eq!(ctl.effective("cm1"), Some(base().normalized()));
    // Writes work again without a restart.
    let s = ctl
        .submit(req("cm1", down(20_000_000), None, None), T0 + 10_001)
        .unwrap();
    assert!(!s.duplicate);
    ctl.tick(T0 + 10_001).unwrap();
    assert_eq!(ctl.effective("cm1").unwrap().max_down_bps, Some(20_000_000));
    drop(ctl);
    let snap = SqliteStore::open(rig.db()).unwrap().load().unwrap();
    let states: Vec<(u64, EventState)> = snap
        .events
        .iter()
        .map(|s| (s.event.id, s.event.state))
        .collect();
    assert_eq!(
        states,
        [(1, EventState::Completed), (2, EventState::Active)],
        "the stop was stored by the retry"
    );
}

#[test]
fn a_panic_under_the_lock_resyncs_instead_of_stopping_every_later_call() {
    let rig = Rig::new("ctl-panic");
    let (mut ctl, _) = rig.open(vec![], T0);
    add(&mut ctl, "cm1", "198.18.0.10");
    ctl.submit(req("cm1", down(50_000_000), None, None), T0)
        .unwrap();
    let m = std::sync::Arc::new(std::sync::Mutex::new(ctl));
    let m2 = m.clone();
    // A call that panics half-way: the engine fired the start, nothing was stored.
    let _ = std::thread::spawn(move || {
        let mut c = m2.lock().unwrap();
        let _ = c.engine.poll(T0 + 1);
        panic!("a bug under the controller's lock");
    })
    .join();
    assert!(m.is_poisoned());
    take(&rig.log);
    let mut c = super::lock(&m, || T0 + 2);
    assert_eq!(c.resyncs(), 1);
    // Memory is the store's again, restored at now: the start that was never stored fired
    // again, was stored this time, and the modem was enforced.
    assert_eq!(c.engine().event(1).unwrap().state, EventState::Active);
    assert_eq!(c.effective("cm1").unwrap().max_down_bps, Some(50_000_000));
    let enforced: Vec<Call> = take(&rig.log)
        .into_iter()
        .filter(|c| matches!(c, Call::Apply(..)))
        .collect();
    assert_eq!(enforced, applied("cm1", down(50_000_000).overlay(&base())));
    assert!(c.tick(T0 + 3).unwrap().is_empty());
    drop(c);
    let snap = SqliteStore::open(rig.db()).unwrap().load().unwrap();
    assert_eq!(snap.events[0].event.state, EventState::Active);
    assert!(!m.is_poisoned());
}
