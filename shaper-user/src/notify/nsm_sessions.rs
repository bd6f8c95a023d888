//! RADIUS accounting into the network service manager's durable session store
//! ([`NsmSessions`], used by [`super::run`] when `[nsm]` is configured).
//!
//! Start/Interim → upsert, Stop and Accounting-On/Off → end, which releases the allocations on
//! them. A session reported on an address another session holds supersedes it: the older one
//! is ended first (its allocations released, as a Stop would), so the new one is recorded and
//! answered. A session older than the holder is answered but not recorded.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::clock::Clock;
use crate::nsm::NsmState;
use crate::nsm::model::Session as NsmSession;
use crate::nsm::{CatalogError, NsmService};
use crate::sessions::{Recorded, Session, SessionSelector, SessionStore, SessionStoreError};
use crate::store::SessionStoreError as NsmStoreError;
/// Why an accounting session could not enter the network service manager.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("accounting session {0}: no User-Name (the subscriber)")]
    NoSubscriber(String),
    #[error(
        "accounting session {0}: no Framed-IP-Address, Framed-IPv6-Prefix or Delegated-IPv6-Prefix"
    )]
    NoAddress(String),
    #[error("accounting session {0}: no NAS-Identifier or NAS-IP-Address (its BRAS)")]
    NoBras(String),
    #[error("accounting session {0}: no gateway (set radius.gateway or nsm.local_gateway)")]
    NoGateway(String),
    #[error("network service manager: {0}")]
    Nsm(#[from] crate::store::SessionStoreError),
}

impl From<IntakeError> for SessionStoreError {
    fn from(e: IntakeError) -> Self {
        SessionStoreError::Backend(Box::new(e))
    }
}

fn prefix_text(a: Ipv6Addr, len: u8) -> String {
    if len == 128 {
        a.to_string()
    } else {
        format!("{a}/{len}")
    }
}

/// The network service manager's session for an accounting session.
pub fn to_nsm(s: &Session, default_gateway: Option<&str>) -> Result<NsmSession, IntakeError> {
    let id = &s.acct_session_id;
    let subscriber = s
        .subscriber
        .clone()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| IntakeError::NoSubscriber(id.clone()))?;
    let prefix = match (s.framed_ipv4, s.framed_ipv6_prefix, s.delegated_ipv6_prefix) {
        (Some(v4), _, _) => v4.to_string(),
        (None, Some((a, l)), _) | (None, None, Some((a, l))) => prefix_text(a, l),
        (None, None, None) => return Err(IntakeError::NoAddress(id.clone())),
    };
    let bras = s
        .nas_identifier
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| s.nas_ip.map(|ip| ip.to_string()))
        .ok_or_else(|| IntakeError::NoBras(id.clone()))?;
    let gateway = s
        .gateway
        .clone()
        .or_else(|| default_gateway.map(str::to_owned))
        .ok_or_else(|| IntakeError::NoGateway(id.clone()))?;
    Ok(NsmSession {
        id: id.clone(),
        subscriber,
        prefix,
        bras,
        gateway,
        since_ms: s.since_ms,
        ended_ms: None,
    })
}

/// An accounting session for a session of the network service manager: the address goes
/// back to Framed-IP-Address / Framed-IPv6-Prefix, the BRAS to NAS-IP-Address when it is an
/// IPv4 address, else NAS-Identifier.
#[must_use]
pub fn from_nsm(n: &NsmSession) -> Session {
    let (mut framed_ipv4, mut framed_ipv6_prefix) = (None, None);
    let (addr, len) = match n.prefix.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().ok()),
        None => (n.prefix.as_str(), None),
    };
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => framed_ipv4 = Some(v4),
        Ok(IpAddr::V6(v6)) => framed_ipv6_prefix = Some((v6, len.unwrap_or(128))),
        Err(_) => {}
    }
    let (nas_ip, nas_identifier) = match n.bras.parse::<Ipv4Addr>() {
        Ok(ip) => (Some(ip), None),
        Err(_) => (None, Some(n.bras.clone())),
    };
    Session {
        acct_session_id: n.id.clone(),
        subscriber: Some(n.subscriber.clone()),
        framed_ipv4,
        framed_ipv6_prefix,
        delegated_ipv6_prefix: None,
        calling_station_id: None,
        nas_ip,
        nas_identifier,
        gateway: Some(n.gateway.clone()),
        since_ms: n.since_ms,
        updated_ms: n.since_ms,
    }
}

/// [`SessionStore`] over the network service manager (see the module documentation). Writes
/// go through [`NsmState::session_intake`], so the allocations a session change or end
/// releases are released and notified; reads use its in-memory indexes.
pub struct NsmSessions {
    nsm: NsmState,
    default_gateway: Option<String>,
    clock: Clock,
}

impl std::fmt::Debug for NsmSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NsmSessions")
            .field("default_gateway", &self.default_gateway)
            .finish_non_exhaustive()
    }
}

impl NsmSessions {
    /// `default_gateway` is the gateway of sessions whose accounting names none (the server's
    /// `radius.gateway` is recorded in each session already; this is `nsm.local_gateway`).
    #[must_use]
    pub fn new(nsm: NsmState, default_gateway: Option<String>, clock: Clock) -> NsmSessions {
        NsmSessions {
            nsm,
            default_gateway,
            clock,
        }
    }

    fn service(&self) -> std::sync::MutexGuard<'_, NsmService> {
        self.nsm
            .service
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts or refreshes a session. A session holding its address that started no later
    /// is ended first, as its Stop would end it (its allocations released), and returned: the
    /// newer session supersedes it. A newer holder keeps the address and `s` is not recorded
    /// (see [`crate::sessions`]).
    fn upsert(&self, s: &Session, keep_since: bool) -> Result<Recorded, SessionStoreError> {
        let mut n = to_nsm(s, self.default_gateway.as_deref())?;
        let now = (self.clock)();
        let (superseded, outdated_by) = self
            .nsm
            .session_intake(|st| {
                if keep_since {
                    if let Some(old) = st.session(&n.id)? {
                        n.since_ms = old.since_ms;
                    }
                }
                let mut superseded = Vec::new();
                loop {
                    let (other, prefix) = match st.upsert_session(&n) {
                        Err(NsmStoreError::Refused(CatalogError::AddressTaken {
                            other,
                            prefix,
                        })) if other != n.id && superseded.len() < 2 => (other, prefix),
                        r => return r.map(|()| (superseded, None)),
                    };
                    let taken = || {
                        NsmStoreError::Refused(CatalogError::AddressTaken {
                            other: other.clone(),
                            prefix: prefix.clone(),
                        })
                    };
                    let holder = st.session(&other)?.ok_or_else(taken)?;
                    if holder.since_ms > n.since_ms {
                        return Ok((superseded, Some(other)));
                    }
                    superseded.push(st.end_session(&other, now)?.ok_or_else(taken)?);
                }
            })
            .map_err(IntakeError::from)?;
        Ok(Recorded {
            superseded: superseded.iter().map(from_nsm).collect(),
            outdated_by,
        })
    }
}

impl SessionStore for NsmSessions {
    fn start(&self, s: Session) -> Result<Recorded, SessionStoreError> {
        self.upsert(&s, false)
    }

    fn update(&self, s: Session) -> Result<Recorded, SessionStoreError> {
        self.upsert(&s, true)
    }

    fn stop(&self, acct_session_id: &str) -> Result<Option<Session>, SessionStoreError> {
        let now = (self.clock)();
        let ended = self
            .nsm
            .session_intake(|st| st.end_session(acct_session_id, now))
            .map_err(IntakeError::from)?;
        Ok(ended.as_ref().map(from_nsm))
    }

    fn clear_nas(
        &self,
        nas_ip: Option<Ipv4Addr>,
        nas_identifier: Option<&str>,
    ) -> Result<usize, SessionStoreError> {
        let names: BTreeSet<String> = nas_ip
            .map(|ip| ip.to_string())
            .into_iter()
            .chain(nas_identifier.map(str::to_owned))
            .collect();
        if names.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = self
            .service()
            .core()
            .sessions()
            .filter(|s| names.contains(&s.bras))
            .map(|s| s.id.clone())
            .collect();
        let now = (self.clock)();
        let n = self
            .nsm
            .session_intake(|st| {
                let mut n = 0;
                for id in &ids {
                    if st.end_session(id, now)?.is_some() {
                        n += 1;
                    }
                }
                Ok::<_, crate::store::SessionStoreError>(n)
            })
            .map_err(IntakeError::from)?;
        Ok(n)
    }

    fn find(&self, sel: &SessionSelector) -> Result<Vec<Session>, SessionStoreError> {
        let svc = self.service();
        let core = svc.core();
        let candidates: Vec<&NsmSession> = if let Some(id) = &sel.acct_session_id {
            core.session(id).into_iter().collect()
        } else if let Some(u) = &sel.user_name {
            core.sessions_of(u)
        } else if let Some(ip) = sel.framed_ipv4 {
            core.session_by_ip(IpAddr::V4(ip)).into_iter().collect()
        } else if let Some((ip, _)) = sel.framed_ipv6_prefix {
            core.session_by_ip(IpAddr::V6(ip)).into_iter().collect()
        } else {
            core.sessions().collect()
        };
        let mut out: Vec<Session> = candidates
            .into_iter()
            .map(from_nsm)
            .filter(|s| sel.matches(s))
            .collect();
        out.sort_by(|a, b| a.acct_session_id.cmp(&b.acct_session_id));
        Ok(out)
    }

    fn all(&self) -> Result<Vec<Session>, SessionStoreError> {
        let svc = self.service();
        let mut out: Vec<Session> = svc.core().sessions().map(from_nsm).collect();
        out.sort_by(|a, b| a.acct_session_id.cmp(&b.acct_session_id));
        Ok(out)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use crate::nsm::{NoDataplane, Notifiers, NsmConfig};
    use crate::store::SqliteNsmStore;
    use crate::store::TempDir;

    const T0: u64 = 1_764_000_000_000;

    fn acct(id: &str, user: &str, ip: &str, nas: &str, at: u64) -> Session {
        Session {
            acct_session_id: id.into(),
            subscriber: Some(user.into()),
            framed_ipv4: Some(ip.parse().unwrap()),
            framed_ipv6_prefix: None,
            delegated_ipv6_prefix: None,
            calling_station_id: None,
            nas_ip: None,
            nas_identifier: Some(nas.into()),
            gateway: None,
            since_ms: at,
            updated_ms: at,
        }
    }

    #[test]
    fn accounting_goes_durably_into_the_network_service_manager() {
        let dir = TempDir::new("nsm-sessions");
        let db = dir.path().join("shaper.db");
        let open = || {
            let svc = NsmService::open(
                NsmConfig::default(),
                Box::new(SqliteNsmStore::open(&db).unwrap()),
                Box::new(NoDataplane),
                T0,
            )
            .unwrap();
            let state = NsmState {
                service: Arc::new(Mutex::new(svc)),
                notifiers: Notifiers::default(),
            };
            NsmSessions::new(state, Some("gw1".into()), Arc::new(|| T0 + 100))
        };
        let st = open();
        st.start(acct("s1", "cm1", "198.18.0.10", "bras1", T0))
            .unwrap();
        st.start(acct("s2", "cm2", "198.18.0.11", "bras1", T0))
            .unwrap();
        st.start(acct("s3", "cm3", "198.18.0.12", "bras2", T0))
            .unwrap();
        // Interim-Update keeps the Start's time.
        st.update(acct("s1", "cm1", "198.18.0.10", "bras1", T0 + 50))
            .unwrap();
        let by_ip = SessionSelector {
            framed_ipv4: Some("198.18.0.10".parse().unwrap()),
            ..SessionSelector::default()
        };
        let found = st.find(&by_ip).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].since_ms, T0);
        assert_eq!(found[0].gateway.as_deref(), Some("gw1"));
        let by_user_on_other_nas = SessionSelector {
            user_name: Some("cm1".into()),
            nas_identifier: Some("bras2".into()),
            ..SessionSelector::default()
        };
        assert!(st.find(&by_user_on_other_nas).unwrap().is_empty());
        // A new session on s1's address (s1's Stop was lost) supersedes s1: s1 is ended and
        // returned, s4 recorded.
        let r = st
            .start(acct("s4", "cm4", "198.18.0.10", "bras1", T0 + 60))
            .unwrap();
        assert_eq!(r.superseded.len(), 1);
        assert_eq!(r.superseded[0].acct_session_id, "s1");
        assert_eq!(r.outdated_by, None);
        let found = st.find(&by_ip).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].acct_session_id, "s4");
        // A late Interim-Update of s1 (it started before s4) takes nothing back.
        let r = st
            .update(acct("s1", "cm1", "198.18.0.10", "bras1", T0))
            .unwrap();
        assert_eq!(r.outdated_by.as_deref(), Some("s4"));
        assert!(r.superseded.is_empty());
        assert_eq!(st.find(&by_ip).unwrap()[0].acct_session_id, "s4");
        assert_eq!(
            st.start(acct("s5", "cm5", "198.18.0.99", "bras1", T0))
                .unwrap(),
            Recorded::default()
        );
        assert!(st.stop("s5").unwrap().is_some());
        drop(st);

        // Durable: a new manager on the same file has them (s1 stays ended).
        let st = open();
        let ids = |st: &NsmSessions| -> Vec<String> {
            st.all()
                .unwrap()
                .into_iter()
                .map(|s| s.acct_session_id)
                .collect()
        };
        assert_eq!(ids(&st), ["s2", "s3", "s4"]);
        // Accounting-On from bras1: its sessions end.
        assert_eq!(st.clear_nas(None, Some("bras1")).unwrap(), 2);
        assert_eq!(ids(&st), ["s3"]);
        // Stop.
        let stopped = st.stop("s3").unwrap().unwrap();
        assert_eq!(stopped.subscriber.as_deref(), Some("cm3"));
        assert!(st.stop("s3").unwrap().is_none());
        assert!(st.all().unwrap().is_empty());
    }

    #[test]
    fn sessions_convert_both_ways() {
        let s = Session {
            acct_session_id: "a1".into(),
            subscriber: Some("cm1".into()),
            framed_ipv4: Some("198.18.0.10".parse().unwrap()),
            framed_ipv6_prefix: None,
            delegated_ipv6_prefix: None,
            calling_station_id: None,
            nas_ip: Some("198.18.1.1".parse().unwrap()),
            nas_identifier: Some("bras1".into()),
            gateway: None,
            since_ms: 5,
            updated_ms: 5,
        };
        let n = to_nsm(&s, Some("gw1")).unwrap();
        assert_eq!(
            (n.prefix.as_str(), n.bras.as_str(), n.gateway.as_str()),
            ("198.18.0.10", "bras1", "gw1")
        );
        let back = from_nsm(&n);
        assert_eq!(back.framed_ipv4, s.framed_ipv4);
        assert_eq!(back.nas_identifier.as_deref(), Some("bras1"));
        let v6 = Session {
            framed_ipv4: None,
            framed_ipv6_prefix: Some(("2001:db8:0:10::".parse().unwrap(), 64)),
            nas_identifier: None,
            ..s.clone()
        };
        let n = to_nsm(&v6, Some("gw1")).unwrap();
        assert_eq!(
            (n.prefix.as_str(), n.bras.as_str()),
            ("2001:db8:0:10::/64", "198.18.1.1")
        );
        let back = from_nsm(&n);
        assert_eq!(back.framed_ipv6_prefix, v6.framed_ipv6_prefix);
        assert_eq!(back.nas_ip, v6.nas_ip);
        assert!(matches!(to_nsm(&s, None), Err(IntakeError::NoGateway(_))));
        let anon = Session {
            subscriber: None,
            ..s.clone()
        };
        assert!(matches!(
            to_nsm(&anon, Some("gw1")),
            Err(IntakeError::NoSubscriber(_))
        ));
    }
}
