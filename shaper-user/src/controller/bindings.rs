//! Where modems live in the data plane: class ids, HTB minors and addresses, reserved and freed.

#[allow(
    clippy::wildcard_imports,
    reason = "the controller's own module: one impl split over files"
)]
use super::*;

impl Controller {
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

    pub(super) fn unbind_inner(&mut self, modem: &str) -> Result<ModemBinding, ControllerError> {
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

    /// A binding's ids are in range and free, and the modem has none yet.
    pub(super) fn check_binding(&self, b: &ModemBinding) -> Result<(), ControllerError> {
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

    pub(super) fn reserve(&mut self, b: ModemBinding) -> Result<(), ControllerError> {
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
}
