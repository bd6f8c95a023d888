//! The grant catalogue and capacity admission, checked before the engine sees a request.

#[allow(
    clippy::wildcard_imports,
    reason = "the controller's own module: one impl split over files"
)]
use super::*;

/// Admits committed rates granted through provisioning against the capacity of the links a
/// modem's traffic crosses, as providers' allocations are (the network service manager
/// implements it). Asked before a grant with a committed rate is accepted.
pub trait GrantAdmission: Send {
    /// Whether `modem` may hold the committed rates `up_bps`/`down_bps` (0: none asked in
    /// that direction) instead of what it holds now. `Err` names the constraint: the link,
    /// what was asked and what is left.
    fn admit(&self, modem: &str, up_bps: u64, down_bps: u64) -> Result<(), String>;
}

impl Controller {
    /// The grant catalogue requests naming a level are checked against.
    pub fn catalogue(&self) -> &GrantCatalogue {
        &self.catalogue
    }

    /// Replaces the grant catalogue (at start, and on a configuration reload).
    pub fn set_catalogue(&mut self, catalogue: GrantCatalogue) {
        self.csr_from_catalogue.store(
            catalogue.csr_from_catalogue,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.catalogue = catalogue;
    }

    /// Whether CSR tokens must choose from the catalogue, as a flag the caller may read without
    /// the controller's lock (it follows [`Controller::set_catalogue`]).
    pub fn csr_from_catalogue_flag(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.csr_from_catalogue.clone()
    }

    /// Admits committed rates of new grants against link capacity from now on.
    pub fn set_admission(&mut self, admission: Box<dyn GrantAdmission>) {
        self.admission = Some(admission);
    }

    /// The modem's catalogue grants: (level, created_ms).
    pub fn level_grants(&self, modem: &str) -> &[(String, u64)] {
        self.level_grants.get(modem).map_or(&[], Vec::as_slice)
    }

    /// The grant catalogue and capacity admission, before the engine sees a request: a
    /// request naming a level gets the level's grant and must keep its duration and quota;
    /// a grant with a committed rate must fit the links' free capacity. Retries of a
    /// request already accepted (its idempotency key is known) pass: the engine answers them.
    pub(super) fn admit(
        &mut self,
        req: &mut EventRequest,
        now_ms: u64,
    ) -> Result<(), ControllerError> {
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
}
