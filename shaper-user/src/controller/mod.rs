//! The controller core (issue 3 item 3): provisioning engine + durable store + enforcement.
//!
//! [`Controller`] is synchronous and reads no clock: every call takes `now_ms` (milliseconds
//! since the Unix epoch), like the [`Engine`] it wraps. The async shell (HTTP API, timer armed
//! for [`Controller::next_due`]) lives outside and calls in.
//!
//! # Protocol
//!
//! It follows the order documented in [`crate::store`]:
//!
//! - **submit**: `Engine::submit` → `Store::append_event` → only then return the id (durable
//!   before acknowledged) → audit. An immediate event is applied by the next
//!   [`Controller::tick`], like every other start.
//! - **modify**: `Engine::modify` → `Store::amend_event` → audit.
//! - **cancel**: `Engine::cancel` → `Store::set_event_state(Cancelled)` → audit → enforce the
//!   modem if an active grant was removed.
//! - **set base**: `Store::put_modem` + `Store::append_modem_audit` (one synced commit) →
//!   `Engine::set_base` → enforce. At start the configuration's plan goes the same way, but
//!   only if it changed since it was last applied (`Store::config_base`): see
//!   [`Controller::apply_configured_base`].
//! - **tick**: `Engine::poll` → `Store::set_event_state` for every change, in order → audit →
//!   enforce each modem that changed, once, with its effective level *now*. Coalescing matters
//!   after a restart or a stall, when a late poll both applies and reverts a grant: the data
//!   plane and the modem (whose pipeline reboots it) see only the level in force, not the
//!   intermediate ones that are already history.
//! - **open**: `Store::load` → `Engine::restore` (overdue starts and stops fire at once, in
//!   order) → persist those changes → enforce *every* bound modem's effective level: the data
//!   plane is reconciled to the store, whatever it held before.
//!
//! A crash between a store write and the enforcement that follows loses nothing: `open`
//! enforces every modem again. A crash between an engine call and its store write loses nothing
//! acknowledged (see [`crate::store`]).
//!
//! # Failures
//!
//! - A refused request (invalid, unknown modem or event, idempotency conflict) changes nothing.
//! - A request whose store write fails is refused ([`ControllerError::NotStored`]) and
//!   nothing of it is applied: the engine forgets it ([`Engine::retract`]), its id is never
//!   handed out again, and the other requests of the same group commit are unaffected.
//! - A failed commit, or any other failure that leaves the engine ahead of the durable state
//!   (a whole batch lost, a state write refused), is a **divergence**: every request of that
//!   batch is refused ([`ControllerError::NotCommitted`]) and the controller **resyncs** at
//!   once ([`Controller::resync`]): it rebuilds the engine from the store (as a restart
//!   would, without one), keeps its id counter, and enforces every modem whose effective level
//!   the rebuild changed, so nothing refused stays enforced. Only if the store cannot even be
//!   read is the controller left **poisoned** ([`ControllerError::Poisoned`]); every later
//!   call retries the resync first.
//! - A failed audit write is kept and retried with the next audit write (audit lines are a
//!   record, not state).
//! - A failed enforcement does not undo the decision (it is durable): the modem is listed in
//!   [`Controller::unenforced`] with the error and retried on every tick until it succeeds.
//!
//! # Enforcement targets
//!
//! Two, behind narrow traits, each switchable off in configuration ([`EnforcementConfig`]):
//! the data plane ([`Enforcer`], real implementation [`DataplaneEnforcer`]) and the modem
//! pipeline ([`ModemPipeline`]: configuration file, delivery, reboot — issue 4; the real one is
//! [`crate::modem::pipeline::DocsisPipeline`]).

mod accept;
mod base;
mod bindings;
mod enforce;
mod grants;
mod lifecycle;
mod pool;
mod recovery;
pub mod submit;
#[cfg(test)]
mod tests;
pub mod ticker;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::provision::{
    Amendment, AuditEntry, BaseSource, Change, ChangeKind, Engine, EventRequest, EventState,
    GrantCatalogue, ModemAuditEntry, PolicyRefusal, ProvisionError, QosLevel, RestoreError,
    Submitted,
};
use crate::store::{Durability, Store, StoreError};

pub use enforce::{
    DataplaneEnforcer, EnforceError, MIN_POLICER_BURST, ModemBinding, POLICER_BURST_MS,
    class_config, htb_class, htb_prio, policer_burst,
};
pub use grants::GrantAdmission;
pub use pool::IdPool;
pub use recovery::lock;

/// Called with the controller (still locked) and the modems whose effective QoS may have
/// changed, after every batch of changes the daemon enforced: from the tick loop, the commit
/// thread, a base-plan change and a cancellation. E.g. the network service manager learns the
/// committed rates the modems now hold.
pub type ChangeHook = std::sync::Arc<dyn Fn(&Controller, &[String]) + Send + Sync>;

/// The modems `changes` touch, each once, in order of first appearance.
pub fn changed_modems(changes: &[Change]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    changes
        .iter()
        .filter(|c| seen.insert(c.modem.as_str()))
        .map(|c| c.modem.clone())
        .collect()
}

/// A direction of a modem's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Modem → network.
    Up,
    /// Network → modem.
    Down,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Up, Direction::Down];
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Up => "up",
            Direction::Down => "down",
        })
    }
}

/// Puts a modem's effective QoS into the data plane. Implementations must be idempotent
/// (applying the same level twice is harmless) and all-or-nothing per call.
pub trait Enforcer: Send {
    /// Makes `qos` the modem's level.
    fn apply(&mut self, modem: &ModemBinding, qos: &QosLevel) -> Result<(), EnforceError>;
    /// Removes everything of the modem. Removing what is not there is not an error.
    fn remove(&mut self, modem: &ModemBinding) -> Result<(), EnforceError>;
}

/// Carries a modem's effective QoS to the modem itself (configuration file, delivery, reboot:
/// issue 4). Same shape and contract as [`Enforcer`].
pub trait ModemPipeline: Send {
    fn apply(&mut self, modem: &ModemBinding, qos: &QosLevel) -> Result<(), EnforceError>;
    fn remove(&mut self, modem: &ModemBinding) -> Result<(), EnforceError>;
}

/// An enforcement target switched off in configuration: every call succeeds and does nothing.
/// This is a real configuration state, not a placeholder: an operator may run shaper for the
/// data plane only (modems configured by another system), or for the modem pipeline only (no
/// data-plane shaping), and the controller's protocol stays the same either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Disabled;

impl Enforcer for Disabled {
    fn apply(&mut self, _: &ModemBinding, _: &QosLevel) -> Result<(), EnforceError> {
        Ok(())
    }
    fn remove(&mut self, _: &ModemBinding) -> Result<(), EnforceError> {
        Ok(())
    }
}

impl ModemPipeline for Disabled {
    fn apply(&mut self, _: &ModemBinding, _: &QosLevel) -> Result<(), EnforceError> {
        Ok(())
    }
    fn remove(&mut self, _: &ModemBinding) -> Result<(), EnforceError> {
        Ok(())
    }
}

/// Which enforcement targets are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnforcementConfig {
    /// Write each modem's level into the data plane.
    pub dataplane: bool,
    /// Deliver each modem's level to the modem (configuration file + reboot, issue 4).
    pub modem_pipeline: bool,
}

impl Default for EnforcementConfig {
    fn default() -> Self {
        Self {
            dataplane: true,
            modem_pipeline: false,
        }
    }
}

impl EnforcementConfig {
    /// The data-plane enforcer this configuration selects; `real` is only called when it is on.
    pub fn enforcer(&self, real: impl FnOnce() -> DataplaneEnforcer) -> Box<dyn Enforcer> {
        if self.dataplane {
            Box::new(real())
        } else {
            Box::new(Disabled)
        }
    }

    /// The modem pipeline this configuration selects: the DOCSIS pipeline `docsis` opens
    /// (`[controller.modem_pipeline]`; `None` when that section is absent) when it is on,
    /// [`Disabled`] when it is off (`docsis` is then not called).
    ///
    /// # Errors
    /// The pipeline is on without its section, or opening it failed.
    pub fn pipeline<F>(&self, docsis: Option<F>) -> Result<Box<dyn ModemPipeline>, ControllerError>
    where
        F: FnOnce() -> Result<
            crate::modem::pipeline::DocsisPipeline,
            crate::modem::pipeline::PipelineError,
        >,
    {
        match (self.modem_pipeline, docsis) {
            (false, _) => Ok(Box::new(Disabled)),
            (true, None) => Err(ControllerError::PipelineUnconfigured),
            (true, Some(open)) => Ok(Box::new(open()?)),
        }
    }
}

/// Where per-modem identifiers come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Data-plane class ids for modems (two per modem). Must lie within the data plane's
    /// `limits.max_classes`; ids outside are left to provider/application rule classes.
    pub classes: RangeInclusive<u32>,
    /// HTB minors on the downstream tree (one per modem), if modems get HTB classes there.
    pub htb_minors_down: Option<RangeInclusive<u16>>,
    /// HTB minors on the upstream tree.
    pub htb_minors_up: Option<RangeInclusive<u16>>,
}

impl Default for ControllerConfig {
    /// Classes 1024..=65535 (the default data plane holds 65536; the lower 1024 are left to
    /// rule classes), no HTB.
    fn default() -> Self {
        Self {
            classes: 1024..=65_535,
            htb_minors_down: None,
            htb_minors_up: None,
        }
    }
}

/// Why a controller call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("restore: {0}")]
    Restore(#[from] RestoreError),
    #[error("modem {modem}: binding: {reason}")]
    Binding { modem: String, reason: String },
    #[error("unknown modem {0}")]
    UnknownModem(String),
    #[error("modem {0} has no binding")]
    NotBound(String),
    #[error("modem {0} is already bound")]
    AlreadyBound(String),
    #[error("{0}")]
    Enforce(#[from] EnforceError),
    #[error(
        "the controller cannot read its store to resync ({0}); every call retries, nothing is applied meanwhile"
    )]
    Poisoned(String),
    /// This request's store write failed; nothing of it was applied (the other requests of
    /// its batch are unaffected).
    #[error("not stored, nothing was applied: {0}")]
    NotStored(#[source] StoreError),
    /// The batch holding this request was not committed; nothing of it was applied and the
    /// controller resynced from the store.
    #[error("the store did not commit this request ({0}); nothing was applied, retry")]
    NotCommitted(String),
    /// The store could not open a write batch; nothing was changed.
    #[error("store: cannot open a write batch: {0}")]
    BatchNotOpened(String),
    #[error(
        "controller.modem_pipeline: the section is required when controller.enforcement.modem_pipeline = true"
    )]
    PipelineUnconfigured,
    #[error("modem pipeline: {0}")]
    Pipeline(#[from] crate::modem::pipeline::PipelineError),
    /// The grant catalogue refused the request.
    #[error("{0}")]
    Policy(#[from] PolicyRefusal),
    /// A catalogue grant's QoS is the level's: it cannot be changed, nor given beside one.
    #[error("qos: {0}")]
    LevelQos(String),
    /// Not enough committed capacity is left for the grant.
    #[error("committed rate not admitted: {0}")]
    Admission(String),
}

/// One enforcement target that failed for a modem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Dataplane,
    Pipeline,
}

/// What [`Controller::apply_configured_base`] did with a modem's configured base plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfiguredBase {
    /// The stored base plan is the configured one (the configuration's is now recorded as
    /// applied if it was not).
    InForce,
    /// The configured plan changed since it was last applied (or never was): it replaced the
    /// stored base plan `previous`.
    Applied { previous: QosLevel },
    /// The configured plan is the one applied last time; the stored base plan `stored`, set
    /// since through the API or a dropped file, differs and stays.
    StoredKept { stored: QosLevel },
}

/// Enforcement timing. `lag` is from the time a change was due to the tick that enforced it
/// (controller clock, so virtual under a virtual clock); `apply` is the wall time the enforcer
/// and pipeline calls took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnforceStats {
    /// Modem enforcements that succeeded on every target.
    pub enforced: u64,
    /// Enforcement attempts with at least one failed target.
    pub failed: u64,
    pub last_lag_ms: u64,
    pub max_lag_ms: u64,
    pub total_lag_ms: u64,
    pub last_apply: Duration,
    pub max_apply: Duration,
    pub total_apply: Duration,
    /// Apply times by [`APPLY_BUCKETS_US`]: `apply_buckets[i]` counts the attempts that took
    /// at most `APPLY_BUCKETS_US[i]` µs and more than the bound before it (not cumulative);
    /// slower ones are in no bucket. Attempts in all: `enforced + failed`.
    pub apply_buckets: [u64; APPLY_BUCKETS_US.len()],
}

/// Upper bounds (µs) of the enforcement apply-time histogram ([`EnforceStats::apply_buckets`]).
pub const APPLY_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// See the module documentation.
pub struct Controller {
    engine: Engine,
    store: Box<dyn Store>,
    enforcer: Box<dyn Enforcer>,
    pipeline: Box<dyn ModemPipeline>,
    config: ControllerConfig,
    /// Every modem the engine knows (the engine does not list them).
    modems: BTreeSet<String>,
    bindings: BTreeMap<String, ModemBinding>,
    classes: IdPool,
    minors_down: Option<IdPool>,
    minors_up: Option<IdPool>,
    /// Failed enforcements: (modem, target) → error text. Retried on every tick.
    unenforced: BTreeMap<(String, Target), String>,
    /// Audit lines whose write failed, written before the next ones.
    audit_backlog: Vec<AuditEntry>,
    stats: EnforceStats,
    /// Set when memory may be ahead of the store; cleared by [`Controller::resync`].
    poisoned: Option<String>,
    /// Resyncs done since open.
    resyncs: u64,
    /// What subscribers (and CSRs, if configured) may ask for.
    catalogue: GrantCatalogue,
    /// Catalogue grants by modem: (level, created_ms), for monthly quotas.
    level_grants: HashMap<String, Vec<(String, u64)>>,
    admission: Option<Box<dyn GrantAdmission>>,
    /// `catalogue.csr_from_catalogue`, readable without the controller's lock
    /// ([`Controller::csr_from_catalogue_flag`]): the API checks it on every CSR request.
    csr_from_catalogue: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ControllerError {
    /// The error the other requests of a batch get when one failure poisons the controller
    /// (errors are not `Clone`: they carry sources).
    fn clone_poison(&self) -> ControllerError {
        match self {
            ControllerError::Poisoned(reason) => ControllerError::Poisoned(reason.clone()),
            ControllerError::NotCommitted(reason) => ControllerError::NotCommitted(reason.clone()),
            other => ControllerError::NotCommitted(other.to_string()),
        }
    }
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("modems", &self.modems.len())
            .field("bound", &self.bindings.len())
            .field("unenforced", &self.unenforced.len())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

fn minor_pool(range: &Option<RangeInclusive<u16>>) -> Option<IdPool> {
    range
        .as_ref()
        .map(|r| IdPool::new(u32::from(*r.start())..=u32::from(*r.end())))
}

impl Controller {
    /// Opens the controller on `store` (empty or not): restores the engine at `now_ms` (firing
    /// every start and stop that fell due while no controller ran), persists what fired, and
    /// enforces every bound modem's effective level.
    ///
    /// `bindings` say where each modem lives in the data plane. They come from the caller's
    /// inventory (addresses are not provisioning state, and the store is deliberately narrow);
    /// [`Controller::bindings`] hands the current ones out for it to keep. Every binding must
    /// name a stored modem; a stored modem without one is known to the engine but not enforced
    /// until [`Controller::bind`] (see [`Controller::unbound`]).
    ///
    /// Returns the changes the restore fired.
    pub fn open(
        config: ControllerConfig,
        store: Box<dyn Store>,
        enforcer: Box<dyn Enforcer>,
        pipeline: Box<dyn ModemPipeline>,
        bindings: Vec<ModemBinding>,
        now_ms: u64,
    ) -> Result<(Controller, Vec<Change>), ControllerError> {
        let snapshot = store.load()?;
        let modems: BTreeSet<String> = snapshot.modems.iter().map(|m| m.id.clone()).collect();
        let (engine, changes) = Engine::restore(snapshot, now_ms)?;
        let mut ctl = Controller {
            engine,
            store,
            enforcer,
            pipeline,
            classes: IdPool::new(config.classes.clone()),
            minors_down: minor_pool(&config.htb_minors_down),
            minors_up: minor_pool(&config.htb_minors_up),
            config,
            modems,
            bindings: BTreeMap::new(),
            unenforced: BTreeMap::new(),
            audit_backlog: Vec::new(),
            stats: EnforceStats::default(),
            poisoned: None,
            resyncs: 0,
            catalogue: GrantCatalogue::default(),
            level_grants: HashMap::new(),
            admission: None,
            csr_from_catalogue: std::sync::Arc::default(),
        };
        ctl.level_grants = ctl.engine.level_grants();
        for binding in bindings {
            if !ctl.modems.contains(&binding.modem) {
                return Err(ControllerError::UnknownModem(binding.modem));
            }
            ctl.reserve(binding)?;
        }
        if !changes.is_empty() {
            ctl.store.begin_batch(Durability::Deferred)?;
            ctl.persist_changes(&changes);
            ctl.flush_audit();
            if ctl.end_batch("restore").is_err() || ctl.poisoned.is_some() {
                let reason = ctl.poisoned.take().unwrap_or_default();
                return Err(ControllerError::Poisoned(reason));
            }
        }
        let due: BTreeMap<&str, u64> = changes.iter().fold(BTreeMap::new(), |mut m, c| {
            let e = m.entry(c.modem.as_str()).or_insert(c.due_ms);
            *e = (*e).min(c.due_ms);
            m
        });
        let bound: Vec<String> = ctl.bindings.keys().cloned().collect();
        for modem in bound {
            let due_ms = due.get(modem.as_str()).copied().unwrap_or(now_ms);
            ctl.enforce(&modem, due_ms, now_ms);
        }
        Ok((ctl, changes))
    }

    /// The engine (read-only: every change goes through the controller).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// When the next start or stop is due: the caller's timer calls [`Controller::tick`] then.
    pub fn next_due(&self) -> Option<u64> {
        self.engine.next_due()
    }

    /// The modem's effective QoS now.
    pub fn effective(&self, modem: &str) -> Option<QosLevel> {
        self.engine.effective(modem)
    }

    pub fn binding(&self, modem: &str) -> Option<&ModemBinding> {
        self.bindings.get(modem)
    }

    /// All bindings, by modem (for the caller's inventory, and for the next `open`).
    pub fn bindings(&self) -> impl Iterator<Item = &ModemBinding> {
        self.bindings.values()
    }

    /// Stored modems without a binding: known, not enforced.
    pub fn unbound(&self) -> Vec<&str> {
        self.modems
            .iter()
            .filter(|m| !self.bindings.contains_key(*m))
            .map(String::as_str)
            .collect()
    }

    /// Enforcements that failed and are retried on every tick: (modem, target, error).
    pub fn unenforced(&self) -> Vec<(&str, Target, &str)> {
        self.unenforced
            .iter()
            .map(|((m, t), e)| (m.as_str(), *t, e.as_str()))
            .collect()
    }

    pub fn stats(&self) -> &EnforceStats {
        &self.stats
    }

    /// Why the controller refuses to work, if it does.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Registers a modem with its base plan and binding: stored, added to the engine, then its
    /// base plan enforced. The binding's ids must lie in the configured ranges and be free.
    pub fn add_modem(
        &mut self,
        binding: ModemBinding,
        base: QosLevel,
        now_ms: u64,
    ) -> Result<(), ControllerError> {
        self.check_poison(now_ms)?;
        let modem = binding.modem.clone();
        if self.modems.contains(&modem) {
            return Err(ProvisionError::ModemExists(modem).into());
        }
        base.validate()
            .map_err(|error| ProvisionError::InvalidBase {
                modem: modem.clone(),
                error,
            })?;
        self.check_binding(&binding)?;
        self.store.put_modem(&modem, &base)?;
        if let Err(e) = self.engine.add_modem(&modem, base) {
            self.poison(format!(
                "modem {modem} stored but refused by the engine: {e}"
            ));
            self.recover(now_ms, &[]);
            return Err(e.into());
        }
        self.modems.insert(modem.clone());
        self.reserve(binding)?;
        self.enforce(&modem, now_ms, now_ms);
        Ok(())
    }

    // ---- internals ----------------------------------------------------------------------

    fn persist_changes(&mut self, changes: &[Change]) {
        for change in changes {
            let state = match change.kind {
                ChangeKind::Applied => EventState::Active,
                ChangeKind::Reverted => EventState::Completed,
            };
            if let Err(e) = self.store.set_event_state(change.cause, state) {
                self.poison(format!(
                    "state {state:?} of event {} not stored: {e}",
                    change.cause
                ));
            }
        }
    }

    fn flush_audit(&mut self) {
        self.audit_backlog.extend(self.engine.take_audit());
        if self.audit_backlog.is_empty() {
            return;
        }
        match self.store.append_audit(&self.audit_backlog) {
            Ok(()) => self.audit_backlog.clear(),
            Err(e) => tracing::warn!(
                error = %e,
                lines = self.audit_backlog.len(),
                "audit write failed; retried with the next one"
            ),
        }
    }

    /// Enforces the modem's effective level on both targets (if it is bound) and records the
    /// outcome.
    fn enforce(&mut self, modem: &str, due_ms: u64, now_ms: u64) {
        let (Some(binding), Some(qos)) = (self.bindings.get(modem), self.engine.effective(modem))
        else {
            return;
        };
        let started = Instant::now();
        let results = [
            (Target::Dataplane, self.enforcer.apply(binding, &qos)),
            (Target::Pipeline, self.pipeline.apply(binding, &qos)),
        ];
        let took = started.elapsed();
        let lag = now_ms.saturating_sub(due_ms);
        let mut ok = true;
        for (target, result) in results {
            let key = (modem.to_owned(), target);
            match result {
                Ok(()) => {
                    self.unenforced.remove(&key);
                }
                Err(e) => {
                    ok = false;
                    let error = e.to_string();
                    // Logged once per change of the error, not on every retry.
                    if self.unenforced.get(&key) == Some(&error) {
                        tracing::debug!(modem, ?target, error, "enforcement still failing");
                    } else {
                        tracing::warn!(
                            modem,
                            ?target,
                            error,
                            "enforcement failed; retried on the next tick"
                        );
                    }
                    self.unenforced.insert(key, error);
                }
            }
        }
        let s = &mut self.stats;
        if ok {
            s.enforced += 1;
            tracing::debug!(
                modem,
                lag_ms = lag,
                apply_us = took.as_micros() as u64,
                "enforced"
            );
        } else {
            s.failed += 1;
        }
        s.last_lag_ms = lag;
        s.max_lag_ms = s.max_lag_ms.max(lag);
        s.total_lag_ms = s.total_lag_ms.saturating_add(lag);
        s.last_apply = took;
        s.max_apply = s.max_apply.max(took);
        s.total_apply += took;
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = APPLY_BUCKETS_US.iter().position(|b| us <= *b) {
            s.apply_buckets[i] += 1;
        }
    }
}
