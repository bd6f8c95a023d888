//! An event's life after acceptance: amendment, cancellation, and the tick that fires starts
//! and stops and enforces what changed.

#[allow(
    clippy::wildcard_imports,
    reason = "the controller's own module: one impl split over files"
)]
use super::*;

impl Controller {
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

    pub(super) fn modify_in_batch(
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

    pub(super) fn cancel_in_batch(
        &mut self,
        id: u64,
        now_ms: u64,
    ) -> Result<Option<Change>, ControllerError> {
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
}
