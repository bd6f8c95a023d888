//! Subscriber sessions as the BRAS reports them in RADIUS accounting (RFC 2866), and how a
//! CoA or Disconnect request names one (RFC 5176 §3 "session identification").
//!
//! The table is behind [`SessionStore`] so a durable store can back it; [`SessionTable`] is the
//! in-memory implementation: keyed by Acct-Session-Id, indexed by Framed-IP-Address,
//! Framed-IPv6-Prefix and User-Name.
//!
//! An address (Framed-IP-Address, Framed-IPv6-Prefix) belongs to one session: a Start or
//! Interim-Update of a session on an address another session holds *supersedes* that older
//! session (its Stop was lost; the BRAS has handed the address on). The older session is
//! ended as its Stop would end it, and returned so the caller can log and count it. "Older"
//! is by `since_ms`: a report of a session that started before the holder did (a late
//! Interim-Update of the superseded session, an old packet replayed) supersedes nothing and
//! is not recorded ([`Recorded::outdated_by`]).

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::proto::radius::{Packet, ValueError, dict};

/// One session (RFC 2866 accounting: Start creates it, Interim-Update refreshes it, Stop ends
/// it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Acct-Session-Id (RFC 2866 §5.5), unique per NAS.
    pub acct_session_id: String,
    /// User-Name: the subscriber; for shaper it names the modem/subscriber of provisioning.
    pub subscriber: Option<String>,
    pub framed_ipv4: Option<Ipv4Addr>,
    /// Framed-IPv6-Prefix (RFC 3162 §2.3).
    pub framed_ipv6_prefix: Option<(Ipv6Addr, u8)>,
    /// Delegated-IPv6-Prefix (RFC 4818).
    pub delegated_ipv6_prefix: Option<(Ipv6Addr, u8)>,
    pub calling_station_id: Option<String>,
    /// The BRAS: NAS-IP-Address.
    pub nas_ip: Option<Ipv4Addr>,
    /// The BRAS: NAS-Identifier.
    pub nas_identifier: Option<String>,
    /// The routing gateway that received this session's accounting (server configuration).
    pub gateway: Option<String>,
    /// When the Start was recorded (ms since the Unix epoch), or the first update seen.
    pub since_ms: u64,
    /// Last Start/Interim-Update recorded.
    pub updated_ms: u64,
}

/// How a CoA/Disconnect request names sessions (RFC 5176 §3): every attribute present must
/// match. NAS identification attributes (NAS-IP-Address, NAS-Identifier) narrow the match to
/// one BRAS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionSelector {
    pub acct_session_id: Option<String>,
    pub user_name: Option<String>,
    pub framed_ipv4: Option<Ipv4Addr>,
    pub framed_ipv6_prefix: Option<(Ipv6Addr, u8)>,
    pub calling_station_id: Option<String>,
    pub nas_ip: Option<Ipv4Addr>,
    pub nas_identifier: Option<String>,
}

impl SessionSelector {
    /// The selector for one session by its Acct-Session-Id.
    #[must_use]
    pub fn by_session_id(id: impl Into<String>) -> SessionSelector {
        SessionSelector {
            acct_session_id: Some(id.into()),
            ..SessionSelector::default()
        }
    }

    /// True when no *session* identification attribute is present (NAS identification alone
    /// names no session: RFC 5176 §3 → Missing-Attribute).
    #[must_use]
    pub fn names_no_session(&self) -> bool {
        self.acct_session_id.is_none()
            && self.user_name.is_none()
            && self.framed_ipv4.is_none()
            && self.framed_ipv6_prefix.is_none()
            && self.calling_station_id.is_none()
    }

    /// Reads the identification attributes of a request.
    pub fn from_packet(p: &Packet) -> Result<SessionSelector, ValueError> {
        Ok(SessionSelector {
            acct_session_id: p.text(dict::ACCT_SESSION_ID)?.map(str::to_owned),
            user_name: p.text(dict::USER_NAME)?.map(str::to_owned),
            framed_ipv4: p.ipv4(dict::FRAMED_IP_ADDRESS)?,
            framed_ipv6_prefix: p.ipv6_prefix(dict::FRAMED_IPV6_PREFIX)?,
            calling_station_id: p.text(dict::CALLING_STATION_ID)?.map(str::to_owned),
            nas_ip: p.ipv4(dict::NAS_IP_ADDRESS)?,
            nas_identifier: p.text(dict::NAS_IDENTIFIER)?.map(str::to_owned),
        })
    }

    /// Appends the identification attributes to a request.
    pub fn write_to(&self, p: &mut Packet) {
        let SessionSelector {
            acct_session_id,
            user_name,
            framed_ipv4,
            framed_ipv6_prefix,
            calling_station_id,
            nas_ip,
            nas_identifier,
        } = self;
        if let Some(v) = nas_ip {
            p.push(dict::NAS_IP_ADDRESS, v.octets());
        }
        if let Some(v) = nas_identifier {
            p.push(dict::NAS_IDENTIFIER, v.as_bytes());
        }
        if let Some(v) = user_name {
            p.push(dict::USER_NAME, v.as_bytes());
        }
        if let Some(v) = acct_session_id {
            p.push(dict::ACCT_SESSION_ID, v.as_bytes());
        }
        if let Some(v) = framed_ipv4 {
            p.push(dict::FRAMED_IP_ADDRESS, v.octets());
        }
        if let Some((a, l)) = framed_ipv6_prefix {
            p.push_ipv6_prefix(dict::FRAMED_IPV6_PREFIX, *a, *l);
        }
        if let Some(v) = calling_station_id {
            p.push(dict::CALLING_STATION_ID, v.as_bytes());
        }
    }

    /// The selector that names `s` the way a BRAS expects (session id + user + address).
    #[must_use]
    pub fn for_session(s: &Session) -> SessionSelector {
        SessionSelector {
            acct_session_id: Some(s.acct_session_id.clone()),
            user_name: s.subscriber.clone(),
            framed_ipv4: s.framed_ipv4,
            nas_ip: s.nas_ip,
            nas_identifier: s.nas_identifier.clone(),
            ..SessionSelector::default()
        }
    }

    /// Whether `s` matches every attribute present.
    #[must_use]
    pub fn matches(&self, s: &Session) -> bool {
        fn eq<T: PartialEq>(want: Option<&T>, have: Option<&T>) -> bool {
            want.is_none_or(|w| have == Some(w))
        }
        (self.acct_session_id.is_none()
            || self.acct_session_id.as_deref() == Some(s.acct_session_id.as_str()))
            && eq(self.user_name.as_ref(), s.subscriber.as_ref())
            && eq(self.framed_ipv4.as_ref(), s.framed_ipv4.as_ref())
            && eq(
                self.framed_ipv6_prefix.as_ref(),
                s.framed_ipv6_prefix.as_ref(),
            )
            && eq(
                self.calling_station_id.as_ref(),
                s.calling_station_id.as_ref(),
            )
            && eq(self.nas_ip.as_ref(), s.nas_ip.as_ref())
            && eq(self.nas_identifier.as_ref(), s.nas_identifier.as_ref())
    }
}

/// What a Start or Interim-Update did (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Sessions ended because this one took their address.
    pub superseded: Vec<Session>,
    /// Not recorded: this newer session holds the address.
    pub outdated_by: Option<String>,
}

/// A session store failure (a durable backend's I/O; the in-memory table never fails).
#[derive(Debug, thiserror::Error)]
pub enum SessionStoreError {
    #[error("session store backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The session table's interface. Every write must be recorded when it returns `Ok`: the
/// accounting server answers the BRAS only after that (RFC 2866 §4.1: "upon successfully
/// recording the accounting packet").
pub trait SessionStore: Send + Sync {
    /// Accounting Start: records `s`, replacing any session with the same id. Says which
    /// sessions it superseded (they held its address), or that a newer session holds it (see
    /// the module documentation).
    fn start(&self, s: Session) -> Result<Recorded, SessionStoreError>;
    /// Interim-Update: refreshes `s`; keeps `since_ms` of a known session, creates an unknown
    /// one (the Start may have been lost or the table restarted). As [`Self::start`] for the
    /// address.
    fn update(&self, s: Session) -> Result<Recorded, SessionStoreError>;
    /// Stop: removes the session; returns it if it was known.
    fn stop(&self, acct_session_id: &str) -> Result<Option<Session>, SessionStoreError>;
    /// Accounting-On/Off (RFC 2866 §5.1): the NAS rebooted or stopped; every session it
    /// reported is gone. Returns how many were removed.
    fn clear_nas(
        &self,
        nas_ip: Option<Ipv4Addr>,
        nas_identifier: Option<&str>,
    ) -> Result<usize, SessionStoreError>;
    /// Every session the selector matches.
    fn find(&self, sel: &SessionSelector) -> Result<Vec<Session>, SessionStoreError>;
    /// Every session.
    fn all(&self) -> Result<Vec<Session>, SessionStoreError>;
}

#[derive(Default, Debug)]
struct Inner {
    by_id: HashMap<String, Session>,
    by_ipv4: HashMap<Ipv4Addr, String>,
    by_ipv6: HashMap<(Ipv6Addr, u8), String>,
    by_user: HashMap<String, BTreeSet<String>>,
}

impl Inner {
    fn unindex(&mut self, s: &Session) {
        if let Some(ip) = s.framed_ipv4 {
            if self.by_ipv4.get(&ip) == Some(&s.acct_session_id) {
                self.by_ipv4.remove(&ip);
            }
        }
        if let Some(p) = s.framed_ipv6_prefix {
            if self.by_ipv6.get(&p) == Some(&s.acct_session_id) {
                self.by_ipv6.remove(&p);
            }
        }
        if let Some(u) = &s.subscriber {
            if let Some(set) = self.by_user.get_mut(u) {
                set.remove(&s.acct_session_id);
                if set.is_empty() {
                    self.by_user.remove(u);
                }
            }
        }
    }

    /// Records `s` unless a newer session holds one of its addresses; the other sessions that
    /// held them are removed.
    fn insert(&mut self, s: Session) -> Recorded {
        // An address belongs to the latest session that reported it: older holders go.
        let holders: Vec<String> = [
            s.framed_ipv4.and_then(|ip| self.by_ipv4.get(&ip)),
            s.framed_ipv6_prefix.and_then(|p| self.by_ipv6.get(&p)),
        ]
        .into_iter()
        .flatten()
        .filter(|id| **id != s.acct_session_id)
        .cloned()
        .collect();
        if let Some(newer) = holders
            .iter()
            .find(|id| self.by_id.get(*id).is_some_and(|h| h.since_ms > s.since_ms))
        {
            return Recorded {
                superseded: Vec::new(),
                outdated_by: Some(newer.clone()),
            };
        }
        if let Some(old) = self.by_id.remove(&s.acct_session_id) {
            self.unindex(&old);
        }
        let superseded: Vec<Session> = holders.iter().filter_map(|id| self.remove(id)).collect();
        if let Some(ip) = s.framed_ipv4 {
            self.by_ipv4.insert(ip, s.acct_session_id.clone());
        }
        if let Some(p) = s.framed_ipv6_prefix {
            self.by_ipv6.insert(p, s.acct_session_id.clone());
        }
        if let Some(u) = &s.subscriber {
            self.by_user
                .entry(u.clone())
                .or_default()
                .insert(s.acct_session_id.clone());
        }
        self.by_id.insert(s.acct_session_id.clone(), s);
        Recorded {
            superseded,
            outdated_by: None,
        }
    }

    fn remove(&mut self, id: &str) -> Option<Session> {
        let s = self.by_id.remove(id)?;
        self.unindex(&s);
        Some(s)
    }
}

/// The in-memory session table.
#[derive(Default, Debug)]
pub struct SessionTable {
    inner: Mutex<Inner>,
}

impl SessionTable {
    #[must_use]
    pub fn new() -> SessionTable {
        SessionTable::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the table; keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl SessionStore for SessionTable {
    fn start(&self, s: Session) -> Result<Recorded, SessionStoreError> {
        Ok(self.lock().insert(s))
    }

    fn update(&self, mut s: Session) -> Result<Recorded, SessionStoreError> {
        let mut g = self.lock();
        if let Some(old) = g.by_id.get(&s.acct_session_id) {
            s.since_ms = old.since_ms;
        }
        Ok(g.insert(s))
    }

    fn stop(&self, acct_session_id: &str) -> Result<Option<Session>, SessionStoreError> {
        Ok(self.lock().remove(acct_session_id))
    }

    fn clear_nas(
        &self,
        nas_ip: Option<Ipv4Addr>,
        nas_identifier: Option<&str>,
    ) -> Result<usize, SessionStoreError> {
        if nas_ip.is_none() && nas_identifier.is_none() {
            return Ok(0);
        }
        let mut g = self.lock();
        let ids: Vec<String> = g
            .by_id
            .values()
            .filter(|s| {
                nas_ip.is_none_or(|ip| s.nas_ip == Some(ip))
                    && nas_identifier.is_none_or(|n| s.nas_identifier.as_deref() == Some(n))
            })
            .map(|s| s.acct_session_id.clone())
            .collect();
        for id in &ids {
            g.remove(id);
        }
        Ok(ids.len())
    }

    fn find(&self, sel: &SessionSelector) -> Result<Vec<Session>, SessionStoreError> {
        let g = self.lock();
        let candidates: Vec<&Session> = if let Some(id) = &sel.acct_session_id {
            g.by_id.get(id).into_iter().collect()
        } else if let Some(ip) = sel.framed_ipv4 {
            g.by_ipv4
                .get(&ip)
                .and_then(|id| g.by_id.get(id))
                .into_iter()
                .collect()
        } else if let Some(p) = sel.framed_ipv6_prefix {
            g.by_ipv6
                .get(&p)
                .and_then(|id| g.by_id.get(id))
                .into_iter()
                .collect()
        } else if let Some(u) = &sel.user_name {
            g.by_user
                .get(u)
                .into_iter()
                .flatten()
                .filter_map(|id| g.by_id.get(id))
                .collect()
        } else if sel.names_no_session() {
            Vec::new()
        } else {
            g.by_id.values().collect()
        };
        Ok(candidates
            .into_iter()
            .filter(|s| sel.matches(s))
            .cloned()
            .collect())
    }

    fn all(&self) -> Result<Vec<Session>, SessionStoreError> {
        let mut v: Vec<Session> = self.lock().by_id.values().cloned().collect();
        v.sort_by(|a, b| a.acct_session_id.cmp(&b.acct_session_id));
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sess(id: &str, user: &str, ip: [u8; 4], nas: &str) -> Session {
        Session {
            acct_session_id: id.into(),
            subscriber: Some(user.into()),
            framed_ipv4: Some(Ipv4Addr::from(ip)),
            // An IPv6 prefix per IPv4 address.
            framed_ipv6_prefix: Some((
                Ipv6Addr::new(0x2001, 0xdb8, 1, u16::from(ip[3]), 0, 0, 0, 0),
                64,
            )),
            delegated_ipv6_prefix: None,
            calling_station_id: Some("02:00:00:00:00:01".into()),
            nas_ip: None,
            nas_identifier: Some(nas.into()),
            gateway: None,
            since_ms: 1,
            updated_ms: 1,
        }
    }

    #[test]
    fn indexes_follow_start_update_and_stop() {
        let t = SessionTable::new();
        t.start(sess("a", "alice", [198, 18, 0, 10], "bras1"))
            .unwrap();
        t.start(sess("b", "alice", [198, 18, 0, 11], "bras2"))
            .unwrap();
        let by_ip = SessionSelector {
            framed_ipv4: Some(Ipv4Addr::new(198, 18, 0, 10)),
            ..SessionSelector::default()
        };
        assert_eq!(t.find(&by_ip).unwrap()[0].acct_session_id, "a");
        let by_user = SessionSelector {
            user_name: Some("alice".into()),
            ..SessionSelector::default()
        };
        assert_eq!(t.find(&by_user).unwrap().len(), 2);
        let narrowed = SessionSelector {
            nas_identifier: Some("bras2".into()),
            ..by_user.clone()
        };
        assert_eq!(t.find(&narrowed).unwrap()[0].acct_session_id, "b");
        // Interim with a new address moves the index and keeps `since`.
        let mut moved = sess("a", "alice", [198, 18, 0, 12], "bras1");
        moved.since_ms = 50;
        moved.updated_ms = 50;
        t.update(moved).unwrap();
        assert!(t.find(&by_ip).unwrap().is_empty());
        let s = &t.find(&SessionSelector::by_session_id("a")).unwrap()[0];
        assert_eq!((s.since_ms, s.updated_ms), (1, 50));
        assert_eq!(t.stop("a").unwrap().unwrap().acct_session_id, "a");
        assert_eq!(t.stop("a").unwrap(), None);
        assert_eq!(t.find(&by_user).unwrap().len(), 1);
        assert!(t.find(&SessionSelector::default()).unwrap().is_empty());
        assert_eq!(t.clear_nas(None, Some("bras2")).unwrap(), 1);
        assert!(t.all().unwrap().is_empty());
    }

    #[test]
    fn a_session_on_a_held_address_supersedes_the_holder() {
        let t = SessionTable::new();
        // "a" holds 198.18.0.10 and the IPv6 prefix; "b" another IPv4 address, same prefix.
        assert_eq!(
            t.start(sess("a", "alice", [198, 18, 0, 10], "bras1"))
                .unwrap(),
            Recorded::default()
        );
        let mut b = sess("b", "bob", [198, 18, 0, 20], "bras1");
        b.framed_ipv6_prefix = Some(("2001:db8:2::".parse().unwrap(), 64));
        t.start(b).unwrap();
        // A new session on a's addresses (a's Stop was lost): a is ended and returned.
        let mut c = sess("c", "carol", [198, 18, 0, 10], "bras1");
        c.since_ms = 5;
        let gone = t.start(c).unwrap().superseded;
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].acct_session_id, "a");
        let ids: Vec<String> = t
            .all()
            .unwrap()
            .into_iter()
            .map(|s| s.acct_session_id)
            .collect();
        assert_eq!(ids, ["b", "c"]);
        let alice = SessionSelector {
            user_name: Some("alice".into()),
            ..SessionSelector::default()
        };
        assert!(t.find(&alice).unwrap().is_empty());
        // b started (since 1) before c (since 5): its Interim-Update onto c's IPv4 address is
        // outdated, not recorded.
        let mut b2 = sess("b", "bob", [198, 18, 0, 10], "bras1");
        b2.framed_ipv6_prefix = Some(("2001:db8:2::".parse().unwrap(), 64));
        b2.updated_ms = 9;
        let r = t.update(b2).unwrap();
        assert_eq!(
            r,
            Recorded {
                superseded: Vec::new(),
                outdated_by: Some("c".into())
            }
        );
        assert_eq!(t.all().unwrap().len(), 2);
        let b = &t.find(&SessionSelector::by_session_id("b")).unwrap()[0];
        assert_eq!(b.framed_ipv4, Some(Ipv4Addr::new(198, 18, 0, 20)));
        // A late report of a, superseded, does not take the address back either.
        let r = t
            .update(sess("a", "alice", [198, 18, 0, 10], "bras1"))
            .unwrap();
        assert_eq!(r.outdated_by.as_deref(), Some("c"));
        // A session newer than c on it (since 7) supersedes c.
        let mut d = sess("d", "dan", [198, 18, 0, 10], "bras1");
        d.since_ms = 7;
        let r = t.start(d).unwrap();
        assert_eq!(r.superseded[0].acct_session_id, "c");
        assert_eq!(r.outdated_by, None);
        // The same session again supersedes nothing.
        let mut d2 = sess("d", "dan", [198, 18, 0, 10], "bras1");
        d2.since_ms = 8;
        assert_eq!(t.update(d2).unwrap(), Recorded::default());
        assert_eq!(t.all().unwrap().len(), 2);
    }

    #[test]
    fn selector_round_trips_through_a_packet() {
        use crate::proto::radius::{Code, Packet};
        let sel = SessionSelector {
            acct_session_id: Some("s1".into()),
            user_name: Some("bob".into()),
            framed_ipv4: Some(Ipv4Addr::new(198, 18, 0, 1)),
            framed_ipv6_prefix: Some(("2001:db8:2::".parse().unwrap(), 48)),
            calling_station_id: Some("cs".into()),
            nas_ip: Some(Ipv4Addr::new(198, 18, 1, 1)),
            nas_identifier: Some("bras".into()),
        };
        let mut p = Packet::new(Code::CoaRequest, 1);
        sel.write_to(&mut p);
        let back = Packet::decode(&p.encode().unwrap()).unwrap();
        assert_eq!(SessionSelector::from_packet(&back).unwrap(), sel);
        assert!(!sel.names_no_session());
        assert!(
            SessionSelector {
                nas_ip: sel.nas_ip,
                ..SessionSelector::default()
            }
            .names_no_session()
        );
    }
}
