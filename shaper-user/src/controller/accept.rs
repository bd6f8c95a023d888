//! Accepting requests: one store commit for many (group commit), each refused alone.

#[allow(
    clippy::wildcard_imports,
    reason = "the controller's own module: one impl split over files"
)]
use super::*;

impl Controller {
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

    pub(super) fn submit_batch_inner(
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
}
