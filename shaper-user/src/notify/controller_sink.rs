//! [`CoaSink`] for the controller: a CoA becomes a provisioning event (docs/ARCHITECTURE.md §1.1:
//! an automated source asks for a QoS level).
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
//! Which CoA grants belong to which modem is rebuilt from the controller's events when the sink
//! is made (every pending or active event of this sink's trigger, [`TRIGGER`]), so after a
//! restart a CoA still replaces the grant made before it, and a Disconnect still reverts it.
//! (Before, the table started empty: a Disconnect after a restart left the modem boosted.)

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::coa_server::{CoaRefusal, CoaSink};
use crate::clock::Clock;
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
    /// modem → event ids of its CoA grants not yet ended (one, except right after a restart
    /// of a release that layered them; all are cancelled together).
    grants: Mutex<HashMap<String, Vec<u64>>>,
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
        let grants = Mutex::new(Self::grants_of(&controller));
        ControllerSink {
            controller,
            sessions,
            clock,
            grants,
        }
    }

    /// The CoA grants the controller holds (restored from its store): every pending or active
    /// event of [`TRIGGER`], by modem, oldest first.
    fn grants_of(controller: &Mutex<Controller>) -> HashMap<String, Vec<u64>> {
        let c = controller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut grants: HashMap<String, Vec<u64>> = HashMap::new();
        let ours = c.engine().open_events_from(
            |source| matches!(source, Source::Automation { trigger } if trigger == TRIGGER),
        );
        for e in ours {
            grants.entry(e.modem).or_default().push(e.id);
        }
        grants
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

    /// Cancels the modem's CoA grants, if any. An event that already ended is not an error.
    /// If one cancellation fails, the grants not yet cancelled stay recorded for the next try.
    fn cancel_grant(&self, c: &mut Controller, modem: &str, now: u64) -> Result<(), CoaRefusal> {
        let prev = self
            .grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(modem)
            .unwrap_or_default();
        for (i, id) in prev.iter().enumerate() {
            match c.cancel(*id, now) {
                Ok(_)
                | Err(ControllerError::Provision(
                    ProvisionError::Finished { .. } | ProvisionError::UnknownEvent(_),
                )) => {}
                Err(e) => {
                    self.grants
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(modem.to_string(), prev[i..].to_vec());
                    return Err(refusal(&e));
                }
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
                level: None,
            };
            let submitted = c.submit(req, now).map_err(|e| refusal(&e))?;
            self.grants
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(modem, vec![submitted.id]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{ControllerConfig, Disabled};
    use crate::provision::EventState;
    use crate::sessions::{Session, SessionTable};
    use crate::store::{SqliteStore, TempDir};

    const T0: u64 = 1_764_000_000_000;

    fn session(id: &str, user: &str) -> Session {
        Session {
            acct_session_id: id.into(),
            subscriber: Some(user.into()),
            framed_ipv4: Some("198.18.0.10".parse().unwrap()),
            framed_ipv6_prefix: None,
            delegated_ipv6_prefix: None,
            calling_station_id: None,
            nas_ip: None,
            nas_identifier: Some("bras1".into()),
            gateway: None,
            since_ms: T0,
            updated_ms: T0,
        }
    }

    fn rate(down: u64, up: u64) -> QosLevel {
        QosLevel {
            max_down_bps: Some(down),
            max_up_bps: Some(up),
            ..QosLevel::default()
        }
    }

    #[test]
    fn coa_grants_replace_each_other_and_disconnect_reverts() {
        let dir = TempDir::new("coa-sink");
        let store = SqliteStore::open(dir.path().join("shaper.db")).unwrap();
        let (mut c, _) = Controller::open(
            ControllerConfig::default(),
            Box::new(store),
            Box::new(Disabled),
            Box::new(Disabled),
            Vec::new(),
            T0,
        )
        .unwrap();
        let b = c.propose_binding("cm1", Vec::new()).unwrap();
        c.add_modem(b, rate(10_000_000, 2_000_000), T0).unwrap();
        let ctl = Arc::new(Mutex::new(c));
        let table = Arc::new(SessionTable::new());
        table.start(session("s1", "cm1")).unwrap();
        let mut ghost = session("s9", "ghost");
        ghost.framed_ipv4 = Some("198.18.0.99".parse().unwrap());
        table.start(ghost).unwrap();
        let sink = ControllerSink::new(ctl.clone(), table.clone(), Arc::new(|| T0 + 10));

        let by_ip = SessionSelector {
            framed_ipv4: Some("198.18.0.99".parse().unwrap()),
            ..SessionSelector::default()
        };
        sink.coa(
            SessionSelector::by_session_id("s1"),
            rate(50_000_000, 5_000_000),
        )
        .unwrap();
        assert_eq!(
            ctl.lock().unwrap().effective("cm1").unwrap().max_down_bps,
            Some(50_000_000)
        );
        sink.coa(
            SessionSelector::by_session_id("s1"),
            rate(80_000_000, 8_000_000),
        )
        .unwrap();
        {
            let c = ctl.lock().unwrap();
            assert_eq!(c.effective("cm1").unwrap().max_down_bps, Some(80_000_000));
            let states: Vec<EventState> = c.engine().events().map(|e| e.state).collect();
            assert_eq!(states, vec![EventState::Cancelled, EventState::Active]);
        }
        // A session whose User-Name is no modem, and no session at all: 503.
        assert_eq!(
            sink.coa(by_ip, rate(1_000_000, 1_000_000)),
            Err(CoaRefusal::SessionNotFound)
        );
        assert_eq!(
            sink.coa(
                SessionSelector::by_session_id("nope"),
                rate(1_000_000, 1_000_000)
            ),
            Err(CoaRefusal::SessionNotFound)
        );
        sink.disconnect(SessionSelector::by_session_id("s1"))
            .unwrap();
        assert_eq!(
            ctl.lock().unwrap().effective("cm1").unwrap().max_down_bps,
            Some(10_000_000)
        );
        assert_eq!(table.all().unwrap().len(), 1);
        assert_eq!(
            sink.disconnect(SessionSelector::by_session_id("s1")),
            Err(CoaRefusal::SessionNotFound)
        );
    }

    /// After a restart (a new controller over the same store, a new sink), the CoA grant made
    /// before it is still this sink's: a Disconnect reverts it, and a CoA replaces it rather
    /// than layering over it. Grants layered by a release that forgot them at restart are all
    /// cancelled by the next CoA.
    #[test]
    fn coa_grants_survive_a_restart() {
        let dir = TempDir::new("coa-sink-restart");
        let db = dir.path().join("shaper.db");
        let open = |bindings: Vec<crate::controller::ModemBinding>, now: u64| {
            let (c, _) = Controller::open(
                ControllerConfig::default(),
                Box::new(SqliteStore::open(&db).unwrap()),
                Box::new(Disabled),
                Box::new(Disabled),
                bindings,
                now,
            )
            .unwrap();
            Arc::new(Mutex::new(c))
        };
        let ctl = open(Vec::new(), T0);
        let b = ctl
            .lock()
            .unwrap()
            .propose_binding("cm1", Vec::new())
            .unwrap();
        ctl.lock()
            .unwrap()
            .add_modem(b.clone(), rate(10_000_000, 2_000_000), T0)
            .unwrap();
        let table = Arc::new(SessionTable::new());
        table.start(session("s1", "cm1")).unwrap();
        let s1 = || SessionSelector::by_session_id("s1");
        let sink = ControllerSink::new(ctl.clone(), table.clone(), Arc::new(|| T0 + 10));
        sink.coa(s1(), rate(50_000_000, 5_000_000)).unwrap();
        drop((sink, ctl));

        // Restart: Disconnect reverts the grant made before it.
        let ctl = open(vec![b.clone()], T0 + 20);
        assert_eq!(
            ctl.lock().unwrap().effective("cm1").unwrap().max_down_bps,
            Some(50_000_000)
        );
        let sink = ControllerSink::new(ctl.clone(), table.clone(), Arc::new(|| T0 + 30));
        sink.disconnect(s1()).unwrap();
        assert_eq!(
            ctl.lock().unwrap().effective("cm1").unwrap().max_down_bps,
            Some(10_000_000)
        );

        // Two CoA grants layered (as an earlier release did across restarts), then a restart:
        // the next CoA cancels both and leaves one.
        table.start(session("s1", "cm1")).unwrap();
        for down in [60_000_000, 70_000_000] {
            let req = EventRequest {
                modem: "cm1".into(),
                source: Source::Automation {
                    trigger: TRIGGER.into(),
                },
                qos: rate(down, 1_000_000),
                start_ms: None,
                stop_ms: None,
                idempotency_key: None,
                level: None,
            };
            let mut c = ctl.lock().unwrap();
            c.submit(req, T0 + 40).unwrap();
            c.tick(T0 + 40).unwrap();
        }
        drop((sink, ctl));
        let ctl = open(vec![b], T0 + 50);
        let sink = ControllerSink::new(ctl.clone(), table.clone(), Arc::new(|| T0 + 60));
        sink.coa(s1(), rate(20_000_000, 3_000_000)).unwrap();
        let c = ctl.lock().unwrap();
        assert_eq!(c.effective("cm1").unwrap().max_down_bps, Some(20_000_000));
        let active: Vec<u64> = c
            .engine()
            .events()
            .filter(|e| e.state == EventState::Active)
            .map(|e| e.id)
            .collect();
        assert_eq!(active.len(), 1, "one CoA grant left: {active:?}");
        drop(c);
        sink.disconnect(s1()).unwrap();
        assert_eq!(
            ctl.lock().unwrap().effective("cm1").unwrap().max_down_bps,
            Some(10_000_000)
        );
    }
}
