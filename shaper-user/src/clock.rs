//! Time, on the ground floor: every layer above takes a [`Clock`] (milliseconds since the
//! Unix epoch) instead of reading the system clock, so the same code runs live, under a
//! virtual clock in tests, and when replaying after a crash. Only the composition root
//! hands out [`system`].

use std::sync::Arc;

/// Milliseconds since the Unix epoch; a virtual clock in tests.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock in milliseconds since the Unix epoch (0 before it).
#[must_use]
pub fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The wall clock as a [`Clock`].
#[must_use]
pub fn system() -> Clock {
    Arc::new(system_now_ms)
}
