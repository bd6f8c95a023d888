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

mod enforce;
mod pool;
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
pub use pool::IdPool;

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

/// Locks the controller. A panic under the lock (a bug) leaves the mutex poisoned and the
/// controller possibly half-way through a call: instead of refusing every later call until a
/// restart, the lock is taken back, the controller resyncs from its store (as a restart
/// would) and every bound modem is enforced again.
pub fn lock(
    m: &std::sync::Mutex<Controller>,
    now_ms: impl FnOnce() -> u64,
) -> std::sync::MutexGuard<'_, Controller> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => {
            m.clear_poison();
            let mut g = poisoned.into_inner();
            g.after_panic(now_ms());
            g
        }
    }
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

/// Admits committed rates granted through provisioning against the capacity of the links a
/// modem's traffic crosses, as providers' allocations are (the network service manager
/// implements it). Asked before a grant with a committed rate is accepted.
pub trait GrantAdmission: Send {
    /// Whether `modem` may hold the committed rates `up_bps`/`down_bps` (0: none asked in
    /// that direction) instead of what it holds now. `Err` names the constraint: the link,
    /// what was asked and what is left.
    fn admit(&self, modem: &str, up_bps: u64, down_bps: u64) -> Result<(), String>;
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

    /// The grant catalogue requests naming a level are checked against.
    pub fn catalogue(&self) -> &GrantCatalogue {
        &self.catalogue
    }

    /// Replaces the grant catalogue (at start, and on a configuration reload).
    pub fn set_catalogue(&mut self, catalogue: GrantCatalogue) {
        self.catalogue = catalogue;
    }

    /// Admits committed rates of new grants against link capacity from now on.
    pub fn set_admission(&mut self, admission: Box<dyn GrantAdmission>) {
        self.admission = Some(admission);
    }

    /// The modem's catalogue grants: (level, created_ms).
    pub fn level_grants(&self, modem: &str) -> &[(String, u64)] {
        self.level_grants.get(modem).map_or(&[], Vec::as_slice)
    }

    /// Why the controller refuses to work, if it does.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// A binding for a new modem with the lowest free class ids (and HTB minors, where
    /// configured). Nothing is taken until [`Controller::add_modem`] or [`Controller::bind`].
    pub fn propose_binding(
        &self,
        modem: &str,
        addrs: Vec<crate::policy::SubscriberKey>,
    ) -> Result<ModemBinding, ControllerError> {
        let exhausted = |what: &str| ControllerError::Binding {
            modem: modem.to_owned(),
            reason: format!("no free {what} left"),
        };
        let classes = self
            .classes
            .lowest_free(2)
            .ok_or_else(|| exhausted("class ids"))?;
        let minor = |pool: &Option<IdPool>, what: &str| -> Result<Option<u16>, ControllerError> {
            match pool {
                None => Ok(None),
                Some(p) => {
                    let id = p.lowest_free(1).ok_or_else(|| exhausted(what))?[0];
                    Ok(Some(u16::try_from(id).expect("minor pools hold u16 ids")))
                }
            }
        };
        Ok(ModemBinding {
            modem: modem.to_owned(),
            addrs,
            up_class: classes[0],
            down_class: classes[1],
            htb_minor_down: minor(&self.minors_down, "downstream HTB minors")?,
            htb_minor_up: minor(&self.minors_up, "upstream HTB minors")?,
        })
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

    /// Replaces a known modem's base plan on behalf of `by` (an API caller, a dropped file):
    /// the new plan and its audit line ([`Store::append_modem_audit`]: who, when, old and new
    /// plan) are stored in one synced commit first, then the engine takes the plan, then the
    /// modem's effective level (its active grants layered over the new base) is enforced.
    /// Returns whether the plan changed: the same plan again stores and audits nothing (and
    /// is enforced again, which the targets take as a no-op). A refused or failed call
    /// changes nothing.
    pub fn set_base(
        &mut self,
        modem: &str,
        base: QosLevel,
        by: BaseSource,
        now_ms: u64,
    ) -> Result<bool, ControllerError> {
        self.check_poison(now_ms)?;
        let old = *self
            .engine
            .base(modem)
            .ok_or_else(|| ControllerError::UnknownModem(modem.to_owned()))?;
        base.validate()
            .map_err(|error| ProvisionError::InvalidBase {
                modem: modem.to_owned(),
                error,
            })?;
        let changed = old != base;
        if changed {
            // A store failure refuses the change whole (503): nothing is in the store, and the
            // engine was not touched yet.
            self.store
                .begin_batch(Durability::Synced)
                .map_err(ControllerError::NotStored)?;
            if let Err(e) = self.write_base(modem, old, base, by.clone(), now_ms) {
                self.store.rollback_batch();
                return Err(ControllerError::NotStored(e));
            }
            // On failure the store keeps nothing of the batch, and the engine is unchanged.
            self.store
                .commit_batch()
                .map_err(ControllerError::NotStored)?;
            if let Err(e) = self.engine_base(modem, base, &by) {
                self.recover(now_ms, &[modem.to_owned()]);
                return Err(e);
            }
        }
        self.enforce(modem, now_ms, now_ms);
        Ok(changed)
    }

    /// At start (`shaper run`), after [`Controller::open`]: reconciles a known modem's base
    /// plan with the plan the configuration file gives it. The configuration wins only if its
    /// plan changed since it was last applied ([`Store::config_base`]; never applied counts as
    /// changed): then it replaces the stored base plan (audited as [`BaseSource::Config`]) and
    /// is recorded as applied, in one commit. Otherwise the stored base plan stays, whoever set
    /// it since (the API, a dropped file): a restart does not undo their change.
    pub fn apply_configured_base(
        &mut self,
        modem: &str,
        configured: QosLevel,
        now_ms: u64,
    ) -> Result<ConfiguredBase, ControllerError> {
        self.check_poison(now_ms)?;
        let stored = *self
            .engine
            .base(modem)
            .ok_or_else(|| ControllerError::UnknownModem(modem.to_owned()))?;
        if self.store.config_base(modem)? == Some(configured) {
            return Ok(if stored == configured {
                ConfiguredBase::InForce
            } else {
                ConfiguredBase::StoredKept { stored }
            });
        }
        configured
            .validate()
            .map_err(|error| ProvisionError::InvalidBase {
                modem: modem.to_owned(),
                error,
            })?;
        let changed = stored != configured;
        self.store.begin_batch(Durability::Synced)?;
        let written = self
            .store
            .set_config_base(modem, &configured)
            .and_then(|()| {
                if changed {
                    self.write_base(modem, stored, configured, BaseSource::Config, now_ms)
                } else {
                    Ok(())
                }
            });
        if let Err(e) = written {
            self.store.rollback_batch();
            return Err(e.into());
        }
        // On failure the store keeps nothing of the batch, and the engine is unchanged.
        self.store.commit_batch()?;
        if !changed {
            return Ok(ConfiguredBase::InForce);
        }
        if let Err(e) = self.engine_base(modem, configured, &BaseSource::Config) {
            self.recover(now_ms, &[modem.to_owned()]);
            return Err(e);
        }
        self.enforce(modem, now_ms, now_ms);
        Ok(ConfiguredBase::Applied { previous: stored })
    }

    /// A known modem's base-plan audit trail, oldest first.
    pub fn modem_audit(&self, modem: &str) -> Result<Vec<ModemAuditEntry>, ControllerError> {
        if self.engine.base(modem).is_none() {
            return Err(ControllerError::UnknownModem(modem.to_owned()));
        }
        Ok(self.store.modem_audit(modem)?)
    }

    /// Binds a stored modem that has no binding yet, and enforces its effective level.
    pub fn bind(&mut self, binding: ModemBinding, now_ms: u64) -> Result<(), ControllerError> {
        self.check_poison(now_ms)?;
        if !self.modems.contains(&binding.modem) {
            return Err(ControllerError::UnknownModem(binding.modem));
        }
        let modem = binding.modem.clone();
        self.reserve(binding)?;
        self.enforce(&modem, now_ms, now_ms);
        Ok(())
    }

    /// Removes a modem from the data plane and the modem pipeline and frees its ids. The
    /// modem stays in the store and the engine (its grants keep running) until bound again.
    pub fn unbind(&mut self, modem: &str) -> Result<ModemBinding, ControllerError> {
        self.poison_error()?;
        self.unbind_inner(modem)
    }

    fn unbind_inner(&mut self, modem: &str) -> Result<ModemBinding, ControllerError> {
        let binding = self
            .bindings
            .get(modem)
            .cloned()
            .ok_or_else(|| ControllerError::NotBound(modem.to_owned()))?;
        self.enforcer.remove(&binding)?;
        self.pipeline.remove(&binding)?;
        self.bindings.remove(modem);
        self.unenforced.retain(|(m, _), _| m != modem);
        self.classes.release(binding.up_class);
        self.classes.release(binding.down_class);
        for (pool, minor) in [
            (&mut self.minors_down, binding.htb_minor_down),
            (&mut self.minors_up, binding.htb_minor_up),
        ] {
            if let (Some(pool), Some(minor)) = (pool.as_mut(), minor) {
                pool.release(u32::from(minor));
            }
        }
        Ok(binding)
    }

    /// Accepts a request. The event is in the store when this returns `Ok`: the caller may
    /// acknowledge it then. It takes effect at the [`Controller::tick`] at or after its start
    /// (an immediate event: the next tick). The event and its audit line are one commit.
    pub fn submit(&mut self, req: EventRequest, now_ms: u64) -> Result<Submitted, ControllerError> {
        self.submit_batch(vec![req], now_ms)
            .pop()
            .expect("one result per request")
    }

    /// Accepts many requests in one store commit (group commit: one fsync for all of them).
    /// Returns one result per request, in order, each as [`Controller::submit`] would: a
    /// refused request changes nothing and does not affect the others; an `Ok` event is in the
    /// store when this returns. If the commit fails, no request of the batch is acknowledged
    /// (all `Err`) and the controller is poisoned.
    pub fn submit_batch(
        &mut self,
        reqs: Vec<EventRequest>,
        now_ms: u64,
    ) -> Vec<Result<Submitted, ControllerError>> {
        self.submit_batch_inner(reqs, now_ms, false).0
    }

    /// [`Controller::submit_batch`], and in the same commit fires every start and stop due at
    /// `now_ms` (the accepted immediate events among them) as [`Controller::tick`] would: one
    /// fsync for the acceptance and the activation. Returns the results and the changes that
    /// fired; the caller answers the requests, then passes the changes to
    /// [`Controller::enforce_changes`].
    pub fn submit_batch_and_fire(
        &mut self,
        reqs: Vec<EventRequest>,
        now_ms: u64,
    ) -> (Vec<Result<Submitted, ControllerError>>, Vec<Change>) {
        self.submit_batch_inner(reqs, now_ms, true)
    }

    fn submit_batch_inner(
        &mut self,
        reqs: Vec<EventRequest>,
        now_ms: u64,
        fire: bool,
    ) -> (Vec<Result<Submitted, ControllerError>>, Vec<Change>) {
        if let Err(e) = self.check_poison(now_ms) {
            return (
                reqs.iter().map(|_| Err(e.clone_poison())).collect(),
                Vec::new(),
            );
        }
        if let Err(e) = self.store.begin_batch(Durability::Synced) {
            let reason = e.to_string();
            return (
                reqs.iter()
                    .map(|_| Err(ControllerError::BatchNotOpened(reason.clone())))
                    .collect(),
                Vec::new(),
            );
        }
        let mut results: Vec<Result<Submitted, ControllerError>> = reqs
            .into_iter()
            .map(|mut req| {
                self.admit(&mut req, now_ms)?;
                let level = req.level.clone().map(|l| (req.modem.clone(), l));
                let s = self.engine.submit(req, now_ms)?;
                if let (Some((modem, level)), false) = (level, s.duplicate) {
                    // Counted at once: the next request of the same batch sees it.
                    self.level_grants
                        .entry(modem)
                        .or_default()
                        .push((level, now_ms));
                }
                Ok(s)
            })
            .collect();
        let mut changes = if fire {
            self.engine.poll(now_ms)
        } else {
            Vec::new()
        };
        // The new events are stored after the poll, each in the state it has now: an
        // immediate event that fired is inserted active, instead of inserted pending and
        // updated in the same commit (a third of a group commit's SQLite work).
        let mut fresh = std::collections::HashSet::new();
        let mut retracted = std::collections::HashSet::new();
        for r in &mut results {
            let Ok(s) = r else { continue };
            if s.duplicate {
                continue;
            }
            let id = s.id;
            if self.poisoned.is_some() {
                // The batch is lost already: this request goes with it (answered below).
                fresh.insert(id);
                continue;
            }
            let event = self.engine.event(id).expect("the engine just accepted it");
            match self.store.append_event(&event) {
                Ok(()) => {
                    fresh.insert(id);
                }
                Err(e) if self.store.batch_intact() => {
                    // Only this request is lost: the engine forgets it, the batch goes on.
                    tracing::warn!(event = id, modem = %event.modem, error = %e, "event not stored; refused");
                    self.engine.retract(id);
                    if let Err(e) = self.store.burn_event_ids(id) {
                        tracing::warn!(event = id, error = %e, "recording a burned event id");
                    }
                    if let (Some(_), Some(uses)) =
                        (&event.level, self.level_grants.get_mut(&event.modem))
                    {
                        uses.pop();
                    }
                    retracted.insert(id);
                    *r = Err(ControllerError::NotStored(e));
                }
                Err(e) => {
                    self.poison(format!("event {id} not stored and the batch was lost: {e}"));
                    fresh.insert(id);
                }
            }
        }
        if !retracted.is_empty() {
            changes.retain(|c| !retracted.contains(&c.cause));
        }
        if self.poisoned.is_none() {
            let older: Vec<Change> = changes
                .iter()
                .filter(|c| !fresh.contains(&c.cause))
                .cloned()
                .collect();
            self.persist_changes(&older);
        }
        self.flush_audit();
        if self.poisoned.is_some() {
            self.store.rollback_batch();
        }
        let committed = if self.poisoned.is_none() {
            self.end_batch("submission")
        } else {
            Err(ControllerError::NotCommitted(
                self.poisoned.clone().unwrap_or_default(),
            ))
        };
        if let Err(e) = committed {
            for r in &mut results {
                if r.is_ok() {
                    *r = Err(e.clone_poison());
                }
            }
            // Nothing of the batch is stored: the engine goes back to the store, and every
            // modem the batch touched is enforced at its stored level (nothing refused stays
            // enforced). The changes of the lost batch are not the caller's to enforce.
            let touched = changed_modems(&changes);
            self.recover(now_ms, &touched);
            return (results, Vec::new());
        }
        (results, changes)
    }

    /// Changes a pending event (see `Engine::modify`). The amendment and its audit line are
    /// one commit.
    pub fn modify(
        &mut self,
        id: u64,
        amendment: Amendment,
        now_ms: u64,
    ) -> Result<(), ControllerError> {
        self.check_poison(now_ms)?;
        self.store.begin_batch(Durability::Synced)?;
        let result = self.modify_in_batch(id, amendment, now_ms);
        self.flush_audit();
        self.finish_batch("amendment", now_ms, &[])?;
        result
    }

    fn modify_in_batch(
        &mut self,
        id: u64,
        amendment: Amendment,
        now_ms: u64,
    ) -> Result<(), ControllerError> {
        if let Some(e) = self.engine.event(id) {
            if let Some(name) = &e.level {
                let level = self.catalogue.lookup(name)?;
                if amendment.qos != level.qos {
                    return Err(ControllerError::LevelQos(format!(
                        "event {id} is a grant of level {name}: its QoS is the level's; cancel it and ask for another level"
                    )));
                }
                let req = EventRequest {
                    start_ms: amendment.start_ms,
                    stop_ms: amendment.stop_ms,
                    ..EventRequest::from(&e)
                };
                // Duration only: the quota was spent when the grant was made.
                self.catalogue.check(&req, level, now_ms, &[])?;
            }
        }
        self.engine.modify(id, amendment, now_ms)?;
        let event = self.engine.event(id).expect("the engine just modified it");
        if let Err(e) = self.store.amend_event(&event) {
            // The engine changed, the store did not: the resync that follows undoes it.
            self.poison(format!("amendment of event {id} not stored: {e}"));
            return Err(ControllerError::NotStored(e));
        }
        Ok(())
    }

    /// Cancels a pending or active event; an active one is reverted and enforced at once.
    /// The new state and its audit line are one commit, before the enforcement.
    pub fn cancel(&mut self, id: u64, now_ms: u64) -> Result<Option<Change>, ControllerError> {
        self.check_poison(now_ms)?;
        self.store.begin_batch(Durability::Synced)?;
        let result = self.cancel_in_batch(id, now_ms);
        self.flush_audit();
        let touched: Vec<String> = match &result {
            Ok(Some(c)) => vec![c.modem.clone()],
            _ => Vec::new(),
        };
        self.finish_batch("cancellation", now_ms, &touched)?;
        let change = result?;
        if let Some(change) = &change {
            self.enforce(&change.modem, now_ms, now_ms);
        }
        Ok(change)
    }

    fn cancel_in_batch(&mut self, id: u64, now_ms: u64) -> Result<Option<Change>, ControllerError> {
        let change = self.engine.cancel(id, now_ms)?;
        if let Err(e) = self.store.set_event_state(id, EventState::Cancelled) {
            // The engine changed, the store did not: the resync that follows undoes it.
            self.poison(format!("cancellation of event {id} not stored: {e}"));
            return Err(ControllerError::NotStored(e));
        }
        Ok(change)
    }

    /// Fires every start and stop due at or before `now_ms`, persists the new event states
    /// and their audit lines (one commit), enforces each modem that changed (once, at its
    /// level now), then retries earlier failed enforcements. Returns the changes in the order
    /// they fired.
    ///
    /// If a state write or the commit fails, the changes are still enforced (the data plane
    /// follows the engine), then the controller resyncs from the store (whose restore fires
    /// the same starts and stops again and stores them) and the call returns
    /// [`ControllerError::NotCommitted`].
    pub fn tick(&mut self, now_ms: u64) -> Result<Vec<Change>, ControllerError> {
        self.check_poison(now_ms)?;
        if self.engine.next_due().is_none_or(|due| due > now_ms)
            && self.unenforced.is_empty()
            && self.audit_backlog.is_empty()
        {
            return Ok(Vec::new());
        }
        self.store.begin_batch(Durability::Deferred)?;
        let changes = self.engine.poll(now_ms);
        self.persist_changes(&changes);
        self.flush_audit();
        // A failed commit poisons; the data plane still follows the engine below.
        if self.poisoned.is_some() {
            self.store.rollback_batch();
        } else {
            let _ = self.end_batch("tick");
        }
        let lost = self.poisoned.clone();
        self.enforce_changes(&changes, now_ms)?;
        if let Some(reason) = lost {
            self.recover(now_ms, &changed_modems(&changes));
            return Err(ControllerError::NotCommitted(reason));
        }
        Ok(changes)
    }

    /// Enforces each modem that `changes` (from [`Controller::submit_batch_and_fire`]) touched,
    /// once, at its level now, then retries earlier failed enforcements: the second half of
    /// [`Controller::tick`]. Fails with [`ControllerError::Poisoned`] if the controller is
    /// (after enforcing: the data plane follows the engine).
    pub fn enforce_changes(
        &mut self,
        changes: &[Change],
        now_ms: u64,
    ) -> Result<(), ControllerError> {
        let mut order: Vec<(String, u64)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for c in changes {
            match index.get(c.modem.as_str()) {
                Some(&i) => order[i].1 = order[i].1.min(c.due_ms),
                None => {
                    index.insert(&c.modem, order.len());
                    order.push((c.modem.clone(), c.due_ms));
                }
            }
        }
        let retry: Vec<String> = self
            .unenforced
            .keys()
            .map(|(m, _)| m.clone())
            .filter(|m| !index.contains_key(m.as_str()))
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        drop(index);
        for (modem, due_ms) in &order {
            self.enforce(modem, *due_ms, now_ms);
        }
        for modem in retry {
            self.enforce(&modem, now_ms, now_ms);
        }
        Ok(())
    }

    // ---- internals ----------------------------------------------------------------------

    /// The grant catalogue and capacity admission, before the engine sees a request: a
    /// request naming a level gets the level's grant and must keep its duration and quota;
    /// a grant with a committed rate must fit the links' free capacity. Retries of a
    /// request already accepted (its idempotency key is known) pass: the engine answers them.
    fn admit(&mut self, req: &mut EventRequest, now_ms: u64) -> Result<(), ControllerError> {
        if req
            .idempotency_key
            .as_deref()
            .is_some_and(|k| self.engine.has_key(k))
        {
            // A retry: the engine compares it with the original, whose grant the level set.
            if let Some(level) = req.level.as_deref().and_then(|l| self.catalogue.level(l)) {
                if req.qos.is_empty() {
                    req.qos = level.qos;
                }
            }
            return Ok(());
        }
        // Times out of every sink's range are named first, before any catalogue rule.
        crate::provision::validate_timing(req.start_ms, req.stop_ms, now_ms)
            .map_err(ProvisionError::from)?;
        if let Some(name) = &req.level {
            let level = self.catalogue.lookup(name)?;
            if !req.qos.is_empty() && req.qos != level.qos {
                return Err(ControllerError::LevelQos(format!(
                    "give a level or a qos, not both (level {name} is its own grant)"
                )));
            }
            req.qos = level.qos;
            self.catalogue
                .check(req, level, now_ms, self.level_grants(&req.modem))?;
        }
        let (up, down) = (
            req.qos.committed_up_bps.unwrap_or(0),
            req.qos.committed_down_bps.unwrap_or(0),
        );
        if let Some(a) = self.admission.as_ref().filter(|_| up > 0 || down > 0) {
            if self.engine.base(&req.modem).is_some() {
                a.admit(&req.modem, up, down)
                    .map_err(ControllerError::Admission)?;
            }
        }
        Ok(())
    }

    /// Fails if the controller is poisoned, after trying to resync it first.
    fn check_poison(&mut self, now_ms: u64) -> Result<(), ControllerError> {
        self.recover(now_ms, &[]);
        self.poison_error()
    }

    fn poison_error(&self) -> Result<(), ControllerError> {
        match &self.poisoned {
            Some(reason) => Err(ControllerError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Ends the batch of a one-request call: commits it, or (when a write of it already
    /// failed, or the commit fails) drops it and resyncs. `touched`: modems whose level the
    /// call changed in the engine, enforced again at their stored level by the resync.
    fn finish_batch(
        &mut self,
        what: &str,
        now_ms: u64,
        touched: &[String],
    ) -> Result<(), ControllerError> {
        if self.poisoned.is_none() && self.end_batch(what).is_ok() {
            return Ok(());
        }
        self.store.rollback_batch();
        let reason = self.poisoned.clone().unwrap_or_default();
        self.recover(now_ms, touched);
        Err(ControllerError::NotCommitted(reason))
    }

    /// If memory may be ahead of the store, resyncs (see [`Controller::resync`]); on failure
    /// the controller stays poisoned and the next call tries again.
    fn recover(&mut self, now_ms: u64, touched: &[String]) {
        if self.poisoned.is_none() {
            return;
        }
        if let Err(e) = self.resync(now_ms, touched) {
            tracing::error!(error = %e, "resync from the store failed; retried with the next call");
        }
    }

    /// Rebuilds the engine from the store, as a restart would, without one: loads the
    /// snapshot, restores it at `now_ms` (firing what fell due), stores what fired, keeps the
    /// id counter (an id handed out once is never handed out again), drops the bindings of
    /// modems the store does not hold, and enforces every bound modem whose effective level
    /// the rebuild changed, plus `touched` (modems a lost write changed in memory, or whose
    /// changes were enforced before the loss was known). Clears the poison on success.
    /// Returns what the restore fired.
    pub fn resync(
        &mut self,
        now_ms: u64,
        touched: &[String],
    ) -> Result<Vec<Change>, ControllerError> {
        let snapshot = self.store.load()?;
        let modems: BTreeSet<String> = snapshot.modems.iter().map(|m| m.id.clone()).collect();
        let (mut engine, changes) = Engine::restore(snapshot, now_ms)?;
        engine.reserve_ids(self.engine.last_id());
        // The ids of the lost writes stay burned across a restart too.
        if engine.last_id() > 0 {
            self.store.burn_event_ids(engine.last_id())?;
        }
        let before: HashMap<String, Option<QosLevel>> = self
            .bindings
            .keys()
            .map(|m| (m.clone(), self.engine.effective(m)))
            .collect();
        self.engine = engine;
        self.modems = modems;
        self.level_grants = self.engine.level_grants();
        if !changes.is_empty() {
            self.store.begin_batch(Durability::Deferred)?;
            let was = self.poisoned.take();
            self.persist_changes(&changes);
            self.flush_audit();
            let failed = self.poisoned.take();
            if failed.is_some() {
                self.store.rollback_batch();
            } else if let Err(e) = self.store.commit_batch() {
                self.poisoned = was;
                return Err(e.into());
            }
            if let Some(reason) = failed {
                self.poisoned = was;
                return Err(ControllerError::NotCommitted(reason));
            }
            self.poisoned = was;
        } else {
            // The lost batch's audit lines describe nothing the store holds.
            let _ = self.engine.take_audit();
        }
        let gone: Vec<String> = self
            .bindings
            .keys()
            .filter(|m| !self.modems.contains(*m))
            .cloned()
            .collect();
        for m in gone {
            if let Err(e) = self.unbind_inner(&m) {
                tracing::warn!(modem = %m, error = %e, "removing a modem the store does not hold");
            }
        }
        let reason = self.poisoned.take().unwrap_or_default();
        self.resyncs += 1;
        tracing::warn!(%reason, "controller resynced from its store");
        let touched: BTreeSet<&str> = touched
            .iter()
            .map(String::as_str)
            .chain(changes.iter().map(|c| c.modem.as_str()))
            .collect();
        let bound: Vec<String> = self.bindings.keys().cloned().collect();
        for m in bound {
            let differs = before
                .get(&m)
                .is_none_or(|b| *b != self.engine.effective(&m));
            if differs || touched.contains(m.as_str()) {
                self.enforce(&m, now_ms, now_ms);
            }
        }
        Ok(changes)
    }

    /// Recovers from a panic in the middle of a call (see [`lock`]): resyncs from the store
    /// and enforces every bound modem again.
    pub fn after_panic(&mut self, now_ms: u64) {
        tracing::error!("a call panicked under the controller's lock; resyncing from the store");
        // A failed store batch the panic left open is dropped: it was never acknowledged.
        self.store.rollback_batch();
        self.poisoned
            .get_or_insert_with(|| "a call panicked under the controller's lock".into());
        let all: Vec<String> = self.bindings.keys().cloned().collect();
        self.recover(now_ms, &all);
    }

    /// How often the controller resynced from its store since it was opened.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Commits the batch the current call opened. A failed commit poisons the controller: the
    /// engine holds what the store lost.
    fn end_batch(&mut self, what: &str) -> Result<(), ControllerError> {
        match self.store.commit_batch() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.poison(format!("{what} not committed: {e}"));
                Err(e.into())
            }
        }
    }

    fn poison(&mut self, reason: String) {
        tracing::error!(%reason, "controller poisoned");
        self.poisoned.get_or_insert(reason);
    }

    /// Stores a new base plan and its audit line (inside the caller's batch).
    fn write_base(
        &mut self,
        modem: &str,
        old: QosLevel,
        new: QosLevel,
        by: BaseSource,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.store.put_modem(modem, &new)?;
        self.store.append_modem_audit(&ModemAuditEntry {
            at_ms: now_ms,
            modem: modem.to_owned(),
            by,
            old,
            new,
        })
    }

    /// Gives the engine a base plan the store already holds.
    fn engine_base(
        &mut self,
        modem: &str,
        base: QosLevel,
        by: &BaseSource,
    ) -> Result<(), ControllerError> {
        if let Err(e) = self.engine.set_base(modem, base) {
            self.poison(format!(
                "base plan of modem {modem} stored but refused by the engine: {e}"
            ));
            return Err(e.into());
        }
        tracing::info!(modem, by = %by, "base plan replaced");
        Ok(())
    }

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

    /// A binding's ids are in range and free, and the modem has none yet.
    fn check_binding(&self, b: &ModemBinding) -> Result<(), ControllerError> {
        b.validate().map_err(|e| match e {
            EnforceError::Binding { modem, reason } => ControllerError::Binding { modem, reason },
            other => other.into(),
        })?;
        if self.bindings.contains_key(&b.modem) {
            return Err(ControllerError::AlreadyBound(b.modem.clone()));
        }
        let bad = |reason: String| ControllerError::Binding {
            modem: b.modem.clone(),
            reason,
        };
        for id in [b.up_class, b.down_class] {
            if !self.classes.contains(id) {
                return Err(bad(format!(
                    "class {id} is outside the configured range {:?}",
                    self.classes.range()
                )));
            }
            if self.classes.is_used(id) {
                return Err(bad(format!("class {id} is taken")));
            }
        }
        for (dir, pool, minor) in [
            (Direction::Down, &self.minors_down, b.htb_minor_down),
            (Direction::Up, &self.minors_up, b.htb_minor_up),
        ] {
            let Some(minor) = minor else { continue };
            let Some(pool) = pool else {
                return Err(bad(format!("{dir} HTB minor given, but {dir} has no HTB")));
            };
            let id = u32::from(minor);
            if !pool.contains(id) {
                return Err(bad(format!(
                    "{dir} HTB minor {minor:#x} is outside the configured range"
                )));
            }
            if pool.is_used(id) {
                return Err(bad(format!("{dir} HTB minor {minor:#x} is taken")));
            }
        }
        for key in &b.addrs {
            if let Some(other) = self
                .bindings
                .values()
                .find(|o| o.modem != b.modem && o.addrs.contains(key))
            {
                return Err(bad(format!(
                    "address {}/{} belongs to modem {}",
                    key.addr, key.len, other.modem
                )));
            }
        }
        Ok(())
    }

    fn reserve(&mut self, b: ModemBinding) -> Result<(), ControllerError> {
        self.check_binding(&b)?;
        self.classes.take(b.up_class);
        self.classes.take(b.down_class);
        for (pool, minor) in [
            (&mut self.minors_down, b.htb_minor_down),
            (&mut self.minors_up, b.htb_minor_up),
        ] {
            if let (Some(pool), Some(minor)) = (pool.as_mut(), minor) {
                pool.take(u32::from(minor));
            }
        }
        self.bindings.insert(b.modem.clone(), b);
        Ok(())
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
