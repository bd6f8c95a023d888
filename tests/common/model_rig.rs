//! The rig of `tests/controller_model.rs`: the real SQLite store behind a wrapper that fails
//! chosen writes, a controller over the real data plane with the API router in front, tokens
//! of every role, the grant catalogue (for the controller and for the model), and the JSON the
//! requests carry.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use shaper::api::{AppState, Clock, Role, TokenEntry, TokenTable, hash_token, router};
use shaper::controller::{Controller, ControllerConfig, DataplaneEnforcer, Disabled, ModemBinding};
use shaper::dataplane::Dataplane;
use shaper::policy::SubscriberKey;
use shaper::provision::{
    AuditEntry, Event, EventState, GrantCatalogue, ModemAuditEntry, QosLevel, Snapshot,
};
use shaper::store::{Durability, SqliteStore, Store, StoreError};

use super::model_gen::MODEMS;
use super::model_ref::{Fault, MLevel, Post, Who};

/// 2023-11-29T12:00:00Z: runs cross the end of November (quotas renew).
pub const T0: u64 = 1_701_259_200_000;

// ---- the store, with failures injected into single writes -------------------------------

/// The real SQLite store; the write `fault` names fails once (then the fault is spent).
pub struct FaultyStore {
    inner: SqliteStore,
    fault: Arc<Mutex<Option<Fault>>>,
}

pub fn injected(op: &'static str) -> StoreError {
    StoreError::Sqlite {
        op,
        source: rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            Some(format!("injected failure of {op}")),
        ),
    }
}

impl FaultyStore {
    /// Whether the armed fault is one of `faults`; if so it is spent.
    fn hit(&self, faults: &[Fault]) -> Option<Fault> {
        let mut armed = self.fault.lock().unwrap();
        let f = (*armed).filter(|f| faults.contains(f))?;
        *armed = None;
        Some(f)
    }
}

impl Store for FaultyStore {
    fn begin_batch(&mut self, d: Durability) -> Result<(), StoreError> {
        self.inner.begin_batch(d)
    }
    fn commit_batch(&mut self) -> Result<(), StoreError> {
        if self.hit(&[Fault::CommitBatch]).is_some() {
            self.inner.rollback_batch();
            return Err(injected("commit_batch"));
        }
        self.inner.commit_batch()
    }
    fn rollback_batch(&mut self) {
        self.inner.rollback_batch();
    }
    fn batch_intact(&self) -> bool {
        self.inner.batch_intact()
    }
    fn burn_event_ids(&mut self, last: u64) -> Result<(), StoreError> {
        self.inner.burn_event_ids(last)
    }
    fn put_modem(&mut self, id: &str, base: &QosLevel) -> Result<(), StoreError> {
        if self.hit(&[Fault::PutModem]).is_some() {
            return Err(injected("put_modem"));
        }
        self.inner.put_modem(id, base)
    }
    fn modem(&self, id: &str) -> Result<Option<QosLevel>, StoreError> {
        self.inner.modem(id)
    }
    fn set_config_base(&mut self, id: &str, plan: &QosLevel) -> Result<(), StoreError> {
        self.inner.set_config_base(id, plan)
    }
    fn config_base(&self, id: &str) -> Result<Option<QosLevel>, StoreError> {
        self.inner.config_base(id)
    }
    fn append_modem_audit(&mut self, e: &ModemAuditEntry) -> Result<(), StoreError> {
        if self.hit(&[Fault::AppendModemAudit]).is_some() {
            return Err(injected("append_modem_audit"));
        }
        self.inner.append_modem_audit(e)
    }
    fn modem_audit(&self, id: &str) -> Result<Vec<ModemAuditEntry>, StoreError> {
        self.inner.modem_audit(id)
    }
    fn append_event(&mut self, event: &Event) -> Result<(), StoreError> {
        match self.hit(&[Fault::AppendEvent, Fault::AppendEventLost]) {
            Some(Fault::AppendEventLost) => {
                // An I/O error: SQLite abandons the whole transaction.
                self.inner.rollback_batch();
                Err(injected("append_event"))
            }
            Some(_) => Err(injected("append_event")),
            None => self.inner.append_event(event),
        }
    }
    fn set_event_state(&mut self, id: u64, state: EventState) -> Result<(), StoreError> {
        if self.hit(&[Fault::SetEventState]).is_some() {
            return Err(injected("set_event_state"));
        }
        self.inner.set_event_state(id, state)
    }
    fn amend_event(&mut self, event: &Event) -> Result<(), StoreError> {
        if self.hit(&[Fault::AmendEvent]).is_some() {
            return Err(injected("amend_event"));
        }
        self.inner.amend_event(event)
    }
    fn append_audit(&mut self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        if self.hit(&[Fault::AppendAudit]).is_some() {
            return Err(injected("append_audit"));
        }
        self.inner.append_audit(entries)
    }
    fn audit(&self, event: u64) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit(event)
    }
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }
}

// ---- the rig ----------------------------------------------------------------------------

pub const TOKENS: [(&str, Role, &str); 6] = [
    ("t-admin", Role::Admin, "root"),
    ("t-csr", Role::Csr, "alice"),
    ("t-sub1", Role::Subscriber, "cm1"),
    ("t-sub2", Role::Subscriber, "cm2"),
    ("t-prov", Role::Provider, "isp1"),
    ("t-auto", Role::Automation, "billing"),
];

pub fn role_subject(who: Who) -> (&'static str, &'static str) {
    let t = who.token().unwrap();
    let (_, role, subject) = TOKENS.iter().find(|(tok, _, _)| *tok == t).unwrap();
    (role.as_str(), subject)
}

pub fn catalogue(csr_from_catalogue: bool) -> (GrantCatalogue, BTreeMap<String, MLevel>) {
    let text = format!(
        r#"
        csr_from_catalogue = {csr_from_catalogue}
        max_per_month = 6
        [[level]]
        name = "boost-50"
        max_down_bps = 50_000_000
        max_duration_s = 3600
        per_month = 4
        [[level]]
        name = "prio"
        priority = 6
        committed_down_bps = 1_000_000
        max_duration_s = 600
        "#
    );
    let cat = GrantCatalogue::from_section(&toml::from_str(&text).unwrap()).unwrap();
    let mut levels = BTreeMap::new();
    levels.insert(
        "boost-50".to_owned(),
        MLevel {
            qos: QosLevel {
                max_down_bps: Some(50_000_000),
                ..QosLevel::default()
            },
            max_duration_ms: 3_600_000,
            per_month: Some(4),
        },
    );
    levels.insert(
        "prio".to_owned(),
        MLevel {
            qos: QosLevel {
                priority: Some(6),
                committed_down_bps: Some(1_000_000),
                ..QosLevel::default()
            },
            max_duration_ms: 600_000,
            per_month: None,
        },
    );
    (cat, levels)
}

pub fn base_plan() -> QosLevel {
    QosLevel {
        max_up_bps: Some(2_000_000),
        max_down_bps: Some(10_000_000),
        priority: Some(1),
        ..QosLevel::default()
    }
}

pub fn addrs(modem: &str) -> Vec<SubscriberKey> {
    let i = MODEMS.iter().position(|m| *m == modem).unwrap() + 11;
    let mut keys = vec![SubscriberKey {
        addr: format!("198.18.0.{i}").parse().unwrap(),
        len: 32,
    }];
    if modem == "cm3" {
        keys.push(SubscriberKey {
            addr: "2001:db8::3".parse().unwrap(),
            len: 128,
        });
    }
    keys
}

pub struct Rig {
    pub dir: PathBuf,
    pub db: PathBuf,
    pub dp: Arc<Mutex<Dataplane>>,
    pub bindings: Vec<ModemBinding>,
    pub state: Option<AppState>,
    pub now: Arc<AtomicU64>,
    pub fault: Arc<Mutex<Option<Fault>>>,
    pub reader: SqliteStore,
    pub rt: tokio::runtime::Runtime,
    pub csr_from_catalogue: bool,
    pub fire_on_submit: bool,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rig {
    pub fn new(tag: &str, dp: Arc<Mutex<Dataplane>>, csr_from_catalogue: bool, fire: bool) -> Rig {
        // tmpfs: synced commits cost no disk flush, so 10,000 steps fit the time budget.
        let root = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = root.join(format!("shaper-model-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("shaper.db");
        let reader = SqliteStore::open(&db).unwrap();
        let mut rig = Rig {
            dir,
            db,
            dp,
            bindings: Vec::new(),
            state: None,
            now: Arc::new(AtomicU64::new(T0)),
            fault: Arc::default(),
            reader,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            csr_from_catalogue,
            fire_on_submit: fire,
        };
        let mut ctl = rig.open_controller();
        for m in MODEMS {
            let b = ctl.propose_binding(m, addrs(m)).unwrap();
            ctl.add_modem(b.clone(), base_plan(), T0).unwrap();
            rig.bindings.push(b);
        }
        rig.install(ctl);
        rig
    }

    pub fn now(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    fn open_controller(&self) -> Controller {
        let store = FaultyStore {
            inner: SqliteStore::open(&self.db).unwrap(),
            fault: self.fault.clone(),
        };
        let (mut ctl, _) = Controller::open(
            ControllerConfig {
                classes: 16..=255,
                htb_minors_down: None,
                htb_minors_up: None,
            },
            Box::new(store),
            Box::new(DataplaneEnforcer::new(self.dp.clone())),
            Box::new(Disabled),
            self.bindings.clone(),
            self.now(),
        )
        .unwrap();
        ctl.set_catalogue(catalogue(self.csr_from_catalogue).0);
        ctl
    }

    fn install(&mut self, ctl: Controller) {
        let tokens = TokenTable::new(TOKENS.iter().map(|(t, role, subject)| TokenEntry {
            sha256_hex: hash_token(t),
            role: *role,
            subject: (*subject).into(),
        }))
        .unwrap();
        let now = self.now.clone();
        let clock: Clock = Arc::new(move || now.load(Ordering::SeqCst));
        let mut state = AppState::new(Arc::new(Mutex::new(ctl)), Arc::new(tokens));
        state.clock = clock;
        if self.fire_on_submit {
            state = state.ticking_after_commit();
        }
        self.state = Some(state);
    }

    pub fn ctl(&self) -> std::sync::MutexGuard<'_, Controller> {
        self.state.as_ref().unwrap().controller.lock().unwrap()
    }

    /// Drops the controller (waiting for its commit thread to let go of it) and opens a new
    /// one on the same file, bindings, catalogue and data plane.
    pub fn restart(&mut self) {
        let state = self.state.take().unwrap();
        let ctl = state.controller.clone();
        self.bindings = ctl.lock().unwrap().bindings().cloned().collect();
        drop(state);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&ctl) > 1 {
            assert!(
                Instant::now() < deadline,
                "the commit thread kept the controller"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(ctl);
        let fresh = self.open_controller();
        self.install(fresh);
    }

    /// One request through the router: (status, JSON body or Null).
    pub fn call(
        &self,
        method: &str,
        uri: &str,
        who: Who,
        body: Option<(&str, String)>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = who.token() {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let req = match body {
            Some((ct, b)) => req.header("content-type", ct).body(Body::from(b)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let app = router(self.state.clone().unwrap());
        self.rt.block_on(async move {
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, v)
        })
    }
}

// ---- JSON of requests and views -----------------------------------------------------------

pub fn qos_json(q: &QosLevel) -> Value {
    let mut v = serde_json::to_value(q).unwrap();
    let obj = v.as_object_mut().unwrap();
    obj.retain(|_, x| !x.is_null());
    if let Some(t) = obj.get_mut("targets").and_then(Value::as_object_mut) {
        t.retain(|_, x| !x.is_null());
    }
    if obj["targets"].as_object().is_some_and(|t| t.is_empty()) {
        obj.remove("targets");
    }
    v
}

pub fn post_json(p: &Post) -> String {
    let mut v = json!({ "modem": p.modem });
    if let Some((q, _)) = &p.qos {
        v["qos"] = qos_json(q);
    }
    if let Some(l) = &p.level {
        v["level"] = json!(l);
    }
    if let Some(s) = p.start_ms {
        v["start_ms"] = json!(s);
    }
    if let Some(s) = p.stop_ms {
        v["stop_ms"] = json!(s);
    }
    v.to_string()
}

pub fn state_name(s: EventState) -> &'static str {
    match s {
        EventState::Pending => "pending",
        EventState::Active => "active",
        EventState::Completed => "completed",
        EventState::Cancelled => "cancelled",
    }
}

pub fn qos_of(v: &Value) -> QosLevel {
    serde_json::from_value(v.clone()).unwrap()
}
