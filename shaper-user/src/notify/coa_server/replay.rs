//! The two request caches of the server core (no clock: times are passed in).
//!
//! - [`DuplicateCache`] (RFC 5080 §2.2.2): keyed by source address and port and identifier;
//!   a retransmission (same key and Request Authenticator within the duplicate window) gets
//!   the cached response again.
//! - [`ReplayCache`] (RFC 5176 §3.6, replay protection): the Request Authenticators of
//!   CoA/Disconnect requests per client *address* (any source port), each kept until its
//!   Event-Timestamp leaves the acceptance window — after that the timestamp check refuses the
//!   packet anyway. A request whose authenticator is there is a replay. Bounded: at most
//!   `cap` entries per client; when a client's cache is full of unexpired entries, the new
//!   request is refused ([`ReplayRefusal::Full`]) rather than an old entry forgotten (which
//!   would reopen a replay).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Past this many entries the duplicate cache drops its expired ones.
const DUPLICATE_PRUNE_AT: usize = 4096;

struct DupEntry {
    authenticator: [u8; 16],
    at_ms: u64,
    response: Option<Vec<u8>>,
}

/// What the duplicate cache says about a request.
pub(super) enum Duplicate {
    /// Not seen: recorded as in progress.
    New,
    /// A retransmission of an answered request: its response.
    Answered(Vec<u8>),
    /// A retransmission of a request still being processed.
    InProgress,
}

/// See the module documentation.
#[derive(Default)]
pub(super) struct DuplicateCache {
    entries: HashMap<(SocketAddr, u8), DupEntry>,
}

impl DuplicateCache {
    pub(super) fn check(
        &mut self,
        now_ms: u64,
        window_ms: u64,
        src: SocketAddr,
        identifier: u8,
        authenticator: [u8; 16],
    ) -> Duplicate {
        if self.entries.len() >= DUPLICATE_PRUNE_AT {
            self.entries
                .retain(|_, e| now_ms.saturating_sub(e.at_ms) < window_ms);
        }
        let key = (src, identifier);
        if let Some(e) = self.entries.get(&key) {
            if e.authenticator == authenticator && now_ms.saturating_sub(e.at_ms) < window_ms {
                return match &e.response {
                    Some(r) => Duplicate::Answered(r.clone()),
                    None => Duplicate::InProgress,
                };
            }
        }
        self.entries.insert(
            key,
            DupEntry {
                authenticator,
                at_ms: now_ms,
                response: None,
            },
        );
        Duplicate::New
    }

    /// The request was answered with `response`.
    pub(super) fn answered(&mut self, src: SocketAddr, identifier: u8, response: &[u8]) {
        if let Some(e) = self.entries.get_mut(&(src, identifier)) {
            e.response = Some(response.to_vec());
        }
    }

    /// The request got no answer: a retransmission must be processed afresh.
    pub(super) fn forget(&mut self, src: SocketAddr, identifier: u8) {
        self.entries.remove(&(src, identifier));
    }
}

/// Why the replay cache refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplayRefusal {
    /// The client sent this Request Authenticator before, within the window.
    Replay,
    /// The client's cache is full of unexpired entries.
    Full,
}

#[derive(Default)]
struct ClientReplays {
    /// Request Authenticator → when it may be forgotten (ms).
    expires: HashMap<[u8; 16], u64>,
    /// The earliest expiry in `expires` (a prune before it would free nothing).
    next_expiry_ms: u64,
}

/// See the module documentation.
pub(super) struct ReplayCache {
    cap: usize,
    clients: HashMap<IpAddr, ClientReplays>,
}

impl ReplayCache {
    pub(super) fn new(cap: usize) -> ReplayCache {
        ReplayCache {
            cap,
            clients: HashMap::new(),
        }
    }

    /// Refuses a replay of `authenticator` from `client`, else remembers it until
    /// `expires_ms`.
    pub(super) fn admit(
        &mut self,
        now_ms: u64,
        client: IpAddr,
        authenticator: [u8; 16],
        expires_ms: u64,
    ) -> Result<(), ReplayRefusal> {
        let c = self.clients.entry(client).or_default();
        if c.expires.get(&authenticator).is_some_and(|&e| e > now_ms) {
            return Err(ReplayRefusal::Replay);
        }
        if c.expires.len() >= self.cap && now_ms >= c.next_expiry_ms {
            c.expires.retain(|_, e| *e > now_ms);
            c.next_expiry_ms = c.expires.values().copied().min().unwrap_or(u64::MAX);
        }
        if c.expires.len() >= self.cap && !c.expires.contains_key(&authenticator) {
            return Err(ReplayRefusal::Full);
        }
        if c.expires.is_empty() {
            c.next_expiry_ms = expires_ms;
        }
        c.next_expiry_ms = c.next_expiry_ms.min(expires_ms);
        c.expires.insert(authenticator, expires_ms);
        Ok(())
    }

    /// Forgets an admitted authenticator (its request got no answer, so a retransmission
    /// must be taken).
    pub(super) fn forget(&mut self, client: IpAddr, authenticator: &[u8; 16]) {
        if let Some(c) = self.clients.get_mut(&client) {
            c.expires.remove(authenticator);
        }
    }

    /// Entries held for `client` (tests, metrics).
    pub(super) fn len(&self, client: IpAddr) -> usize {
        self.clients.get(&client).map_or(0, |c| c.expires.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));

    #[test]
    fn replay_cache_refuses_replays_until_expiry_and_is_bounded() {
        let mut r = ReplayCache::new(2);
        assert_eq!(r.admit(0, C, [1; 16], 100), Ok(()));
        assert_eq!(r.admit(50, C, [1; 16], 150), Err(ReplayRefusal::Replay));
        // Another client's identical authenticator is not a replay.
        let other = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(r.admit(50, other, [1; 16], 150), Ok(()));
        assert_eq!(r.admit(60, C, [2; 16], 300), Ok(()));
        // Full of unexpired entries: refused, nothing forgotten.
        assert_eq!(r.admit(70, C, [3; 16], 300), Err(ReplayRefusal::Full));
        assert_eq!(r.admit(70, C, [1; 16], 300), Err(ReplayRefusal::Replay));
        assert_eq!(r.len(C), 2);
        // [1] expired at 100: room again, and [1] is no replay any more (its timestamp is
        // outside the window by then).
        assert_eq!(r.admit(100, C, [3; 16], 400), Ok(()));
        assert_eq!(r.len(C), 2);
        assert_eq!(r.admit(100, C, [2; 16], 400), Err(ReplayRefusal::Replay));
        r.forget(C, &[2; 16]);
        assert_eq!(r.admit(100, C, [2; 16], 400), Ok(()));
    }
}
