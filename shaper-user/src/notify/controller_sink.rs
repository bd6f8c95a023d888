//! [`CoaSink`] for the controller: a CoA becomes a provisioning event (DESIGN §1.1, "an
//! automated trigger asks for a QoS level").
//!
//! - The request's identification attributes are resolved to sessions through the
//!   [`SessionStore`] (filled by accounting); each session's User-Name is the modem id the
//!   controller provisions. No session, or sessions without a User-Name: Session-Context-Not-
//!   Found (503).
//! - CoA: the previous CoA grant of that modem (if this sink made one) is cancelled and an
//!   immediate grant with the new level is submitted, then the controller ticks so the level is
//!   enforced before the ACK (RFC 5176 §3: an ACK means the change was made). CoA grants thus
//!   replace each other instead of piling up layers; grants from other sources are untouched.
//! - Disconnect: the modem's CoA grant is cancelled (back to its plan) and the sessions are
//!   removed from the table.
//!
//! Error mapping: unknown modem → 503; a grant the engine refuses → 407
//! Invalid-Attribute-Value; store or poisoned controller → 506 Resources-Unavailable.
//!
//! Which CoA grant belongs to which modem is kept in memory: after a restart the next CoA for a
//! modem layers over the old grant rather than replacing it (the effective level is the same).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::coa_server::{CoaRefusal, CoaSink};
use crate::api::Clock;
use crate::controller::{Controller, ControllerError};
use crate::provision::{EventRequest, ProvisionError, QosLevel, Source};
use crate::sessions::{SessionSelector, SessionStore};

/// The `Source::Automation` trigger of events this sink submits.
pub const TRIGGER: &str = "radius-coa";

/// See the module documentation.
pub struct ControllerSink {
    controller: Arc<Mutex<Controller>>,
    sessions: Arc<dyn SessionStore>,
    clock: Clock,
    /// modem → event id of its current CoA grant.
    grants: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for ControllerSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerSink").finish_non_exhaustive()
    }
}

fn refusal(e: &ControllerError) -> CoaRefusal {
    match e {
        ControllerError::Provision(ProvisionError::UnknownModem(_))
        | ControllerError::UnknownModem(_) => CoaRefusal::SessionNotFound,
        ControllerError::Provision(ProvisionError::Invalid(e)) => {
            CoaRefusal::InvalidAttributeValue(e.to_string())
        }
        other => CoaRefusal::ResourcesUnavailable(other.to_string()),
    }
}

impl ControllerSink {
    #[must_use]
    pub fn new(
        controller: Arc<Mutex<Controller>>,
        sessions: Arc<dyn SessionStore>,
        clock: Clock,
    ) -> ControllerSink {
        ControllerSink {
            controller,
            sessions,
            clock,
            grants: Mutex::new(HashMap::new()),
        }
    }

    fn modems(&self, target: &SessionSelector) -> Result<BTreeSet<String>, CoaRefusal> {
        let found = self
            .sessions
            .find(target)
            .map_err(|e| CoaRefusal::ResourcesUnavailable(e.to_string()))?;
        let modems: BTreeSet<String> = found.into_iter().filter_map(|s| s.subscriber).collect();
        if modems.is_empty() {
            return Err(CoaRefusal::SessionNotFound);
        }
        Ok(modems)
    }

    fn controller(&self) -> Result<std::sync::MutexGuard<'_, Controller>, CoaRefusal> {
        self.controller
            .lock()
            .map_err(|_| CoaRefusal::ResourcesUnavailable("controller lock poisoned".into()))
    }

    /// Cancels the modem's CoA grant, if any. An event that already ended is not an error.
    fn cancel_grant(&self, c: &mut Controller, modem: &str, now: u64) -> Result<(), CoaRefusal> {
        let prev = self
            .grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(modem);
        if let Some(id) = prev {
            match c.cancel(id, now) {
                Ok(_)
                | Err(ControllerError::Provision(
                    ProvisionError::Finished { .. } | ProvisionError::UnknownEvent(_),
                )) => {}
                Err(e) => return Err(refusal(&e)),
            }
        }
        Ok(())
    }
}

impl CoaSink for ControllerSink {
    fn coa(&self, target: SessionSelector, qos: QosLevel) -> Result<(), CoaRefusal> {
        let modems = self.modems(&target)?;
        let now = (self.clock)();
        let mut c = self.controller()?;
        for modem in modems {
            if c.effective(&modem).is_none() {
                return Err(CoaRefusal::SessionNotFound);
            }
            self.cancel_grant(&mut c, &modem, now)?;
            let req = EventRequest {
                modem: modem.clone(),
                source: Source::Automation {
                    trigger: TRIGGER.into(),
                },
                qos,
                start_ms: None,
                stop_ms: None,
                idempotency_key: None,
            };
            let submitted = c.submit(req, now).map_err(|e| refusal(&e))?;
            self.grants
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(modem, submitted.id);
        }
        c.tick(now).map_err(|e| refusal(&e))?;
        Ok(())
    }

    fn disconnect(&self, target: SessionSelector) -> Result<(), CoaRefusal> {
        let sessions = self
            .sessions
            .find(&target)
            .map_err(|e| CoaRefusal::ResourcesUnavailable(e.to_string()))?;
        if sessions.is_empty() {
            return Err(CoaRefusal::SessionNotFound);
        }
        let now = (self.clock)();
        let mut c = self.controller()?;
        for s in &sessions {
            if let Some(m) = &s.subscriber {
                self.cancel_grant(&mut c, m, now)?;
            }
            self.sessions
                .stop(&s.acct_session_id)
                .map_err(|e| CoaRefusal::ResourcesUnavailable(e.to_string()))?;
        }
        Ok(())
    }
}
