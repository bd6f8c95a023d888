//! When each session was last heard of, for ending sessions whose BRAS stopped reporting them
//! (a lost Stop, a NAS that went away without Accounting-Off).
//!
//! Only sessions whose Start or Interim-Update this server recorded are tracked: sessions
//! restored from a durable store after a restart are tracked from their next Interim-Update
//! (until then a lost Stop is cleared when the address is reused, or by Accounting-On/Off),
//! and sessions entered by other means (the HTTP API) are never expired here. Times are passed
//! in; the server reads no clock.

use std::collections::HashMap;

/// The shortest timeout derived from Acct-Interim-Interval.
const MIN_INTERIM_TIMEOUT_MS: u64 = 60_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    last_ms: u64,
    timeout_ms: u64,
}

/// See the module documentation.
#[derive(Default, Debug)]
pub(super) struct Liveness {
    seen: HashMap<String, Seen>,
}

/// The timeout of a session: three Acct-Interim-Intervals (at least a minute) when its
/// accounting announces one, else the configured timeout.
pub(super) fn timeout_ms(configured_s: u64, interim_interval_s: Option<u32>) -> u64 {
    match interim_interval_s.filter(|&i| i > 0) {
        Some(i) => (u64::from(i) * 3000).max(MIN_INTERIM_TIMEOUT_MS),
        None => configured_s.saturating_mul(1000),
    }
}

impl Liveness {
    /// A Start or Interim-Update for `id` was recorded at `now_ms`.
    pub(super) fn heard(&mut self, id: &str, now_ms: u64, timeout_ms: u64) {
        self.seen.insert(
            id.to_owned(),
            Seen {
                last_ms: now_ms,
                timeout_ms,
            },
        );
    }

    /// The session ended (Stop, superseded, expired).
    pub(super) fn forget(&mut self, id: &str) {
        self.seen.remove(id);
    }

    /// The sessions silent for their timeout at `now_ms`, with how long they were silent (ms).
    /// They stay tracked until [`Self::forget`].
    pub(super) fn silent(&self, now_ms: u64) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .seen
            .iter()
            .filter(|(_, s)| now_ms.saturating_sub(s.last_ms) >= s.timeout_ms)
            .map(|(id, s)| (id.clone(), now_ms.saturating_sub(s.last_ms)))
            .collect();
        v.sort();
        v
    }

    pub(super) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_sessions_are_those_past_their_timeout() {
        assert_eq!(timeout_ms(3600, None), 3_600_000);
        assert_eq!(timeout_ms(3600, Some(300)), 900_000);
        assert_eq!(timeout_ms(3600, Some(5)), 60_000);
        assert_eq!(timeout_ms(3600, Some(0)), 3_600_000);
        let mut l = Liveness::default();
        l.heard("a", 0, 1000);
        l.heard("b", 500, 1000);
        assert!(l.silent(999).is_empty());
        assert_eq!(l.silent(1000), [("a".to_owned(), 1000)]);
        l.heard("a", 1000, 1000);
        assert_eq!(l.silent(1500), [("b".to_owned(), 1000)]);
        l.forget("b");
        assert!(l.silent(1500).is_empty());
        assert_eq!(l.len(), 1);
    }
}
