//! Base plans: replaced over the API, by a dropped file, or by the configuration at start;
//! stored with an audit line before the engine takes them.

#[allow(
    clippy::wildcard_imports,
    reason = "the controller's own module: one impl split over files"
)]
use super::*;

impl Controller {
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

    /// Stores a new base plan and its audit line (inside the caller's batch).
    pub(super) fn write_base(
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
    pub(super) fn engine_base(
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
}
