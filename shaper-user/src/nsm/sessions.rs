//! The in-memory index of active sessions: by id, by address (IPv4 exactly, IPv6 as /128 or
//! its /64, the keys the data plane uses too) and by subscriber. Every lookup a decision makes
//! is one or two hash lookups.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::core::CatalogError;
use super::model::{Session, parse_prefix};
use crate::policy::Prefix;

/// An active session with its parsed address.
#[derive(Clone, Debug)]
pub struct SessionEntry {
    pub session: Session,
    pub prefix: Prefix,
}

/// See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct SessionIndex {
    by_id: HashMap<String, SessionEntry>,
    by_v4: HashMap<Ipv4Addr, String>,
    by_v6: HashMap<Ipv6Addr, String>,
    by_v6_64: HashMap<u64, String>,
    by_subscriber: HashMap<String, BTreeSet<String>>,
}

fn v6_64(a: Ipv6Addr) -> u64 {
    (u128::from(a) >> 64) as u64
}

/// Checks a session's address: IPv4 /32, IPv6 /128 or /64 (what the data plane keys on).
pub fn session_prefix(text: &str) -> Result<Prefix, CatalogError> {
    let invalid = |detail: String| CatalogError::Invalid {
        field: "prefix".into(),
        detail,
    };
    let p = parse_prefix(text).map_err(invalid)?;
    match (p.addr, p.len) {
        (IpAddr::V4(_), 32) | (IpAddr::V6(_), 128 | 64) => Ok(Prefix {
            addr: p.masked_addr(),
            len: p.len,
        }),
        _ => Err(invalid(format!(
            "{text}: a session holds an IPv4 /32, an IPv6 /128 or an IPv6 /64"
        ))),
    }
}

/// The host prefix of an address (/32 or /128).
#[must_use]
pub fn host(addr: IpAddr) -> Prefix {
    Prefix {
        addr,
        len: if addr.is_ipv4() { 32 } else { 128 },
    }
}

impl SessionIndex {
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&SessionEntry> {
        self.by_id.get(id)
    }

    /// The session holding `addr` (exact IPv4, IPv6 /128, else its /64).
    #[must_use]
    pub fn by_ip(&self, addr: IpAddr) -> Option<&SessionEntry> {
        let id = match addr {
            IpAddr::V4(a) => self.by_v4.get(&a),
            IpAddr::V6(a) => self.by_v6.get(&a).or_else(|| self.by_v6_64.get(&v6_64(a))),
        }?;
        self.by_id.get(id)
    }

    /// The sessions of a subscriber, by id.
    pub fn of_subscriber(&self, subscriber: &str) -> impl Iterator<Item = &SessionEntry> {
        self.by_subscriber
            .get(subscriber)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }

    /// The session holding exactly this session prefix.
    #[must_use]
    pub fn holder(&self, p: &Prefix) -> Option<&String> {
        match (p.addr, p.len) {
            (IpAddr::V4(a), _) => self.by_v4.get(&a),
            (IpAddr::V6(a), 128) => self.by_v6.get(&a),
            (IpAddr::V6(a), _) => self.by_v6_64.get(&v6_64(a)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &SessionEntry> {
        self.by_id.values()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Inserts or replaces a session (its old address and subscriber entries go).
    pub fn insert(&mut self, s: Session, prefix: Prefix) {
        self.remove(&s.id);
        match (prefix.addr, prefix.len) {
            (IpAddr::V4(a), _) => self.by_v4.insert(a, s.id.clone()),
            (IpAddr::V6(a), 128) => self.by_v6.insert(a, s.id.clone()),
            (IpAddr::V6(a), _) => self.by_v6_64.insert(v6_64(a), s.id.clone()),
        };
        self.by_subscriber
            .entry(s.subscriber.clone())
            .or_default()
            .insert(s.id.clone());
        self.by_id
            .insert(s.id.clone(), SessionEntry { session: s, prefix });
    }

    /// Removes a session from every index.
    pub fn remove(&mut self, id: &str) -> Option<SessionEntry> {
        let old = self.by_id.remove(id)?;
        match (old.prefix.addr, old.prefix.len) {
            (IpAddr::V4(a), _) => self.by_v4.remove(&a),
            (IpAddr::V6(a), 128) => self.by_v6.remove(&a),
            (IpAddr::V6(a), _) => self.by_v6_64.remove(&v6_64(a)),
        };
        if let Some(set) = self.by_subscriber.get_mut(&old.session.subscriber) {
            set.remove(id);
            if set.is_empty() {
                self.by_subscriber.remove(&old.session.subscriber);
            }
        }
        Some(old)
    }
}
