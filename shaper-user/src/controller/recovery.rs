//! What the controller does when its memory may be ahead of its store: refuse the lost
//! request or batch, rebuild the engine from the store (as a restart would, without one), and
//! enforce what that changed. See the module documentation of [`super`], "Failures".

#[allow(
    clippy::wildcard_imports,
    reason = "the controller's own module: one impl split over files"
)]
use super::*;

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

impl Controller {
    /// Fails if the controller is poisoned, after trying to resync it first.
    pub(super) fn check_poison(&mut self, now_ms: u64) -> Result<(), ControllerError> {
        self.recover(now_ms, &[]);
        self.poison_error()
    }

    pub(super) fn poison_error(&self) -> Result<(), ControllerError> {
        match &self.poisoned {
            Some(reason) => Err(ControllerError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Ends the batch of a one-request call: commits it, or (when a write of it already
    /// failed, or the commit fails) drops it and resyncs. `touched`: modems whose level the
    /// call changed in the engine, enforced again at their stored level by the resync.
    pub(super) fn finish_batch(
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
    pub(super) fn recover(&mut self, now_ms: u64, touched: &[String]) {
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
    pub(super) fn end_batch(&mut self, what: &str) -> Result<(), ControllerError> {
        match self.store.commit_batch() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.poison(format!("{what} not committed: {e}"));
                Err(e.into())
            }
        }
    }

    pub(super) fn poison(&mut self, reason: String) {
        tracing::error!(%reason, "controller poisoned");
        self.poisoned.get_or_insert(reason);
    }
}
