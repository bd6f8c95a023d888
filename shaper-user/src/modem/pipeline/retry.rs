//! Failures of the modem pipeline (issue 11 item 5): what failed for a modem, kept for the API
//! (`pipeline.file_failure` / `pipeline.reboot_failure` in `GET /v1/modems/{id}`) and the
//! metrics, retried with exponential backoff and logged once per change.
//!
//! Stages ([`Stage`]): **build** (generating or self-checking the file: e.g. a rate the
//! DOCSIS TLVs cannot carry), **deliver** (writing it, its stable name or the version index
//! into the served directory) and **reboot** (telling the modem to fetch it).
//!
//! Backoff ([`Backoff`]): after the `n`-th failed attempt the next one waits
//! `first · 2^(n-1)`, at most `max` (defaults [`RETRY_FIRST`] = 1 s doubling to [`RETRY_MAX`] =
//! 5 min). A build or deliver failure is retried when the controller next calls `apply` after
//! that time (it calls it on every tick while the modem is unenforced); until then `apply`
//! returns the same error without trying or logging. A new level is tried at once (its
//! backoff starts again at `first`). A failed reboot is retried by its own task on the same
//! schedule until it succeeds, a newer file's reboot replaces it, the modem is removed or the
//! pipeline is dropped.
//!
//! Logging: a failure is logged at WARN when its stage or error text differs from the
//! previous one (else at DEBUG); the recovery is logged once at INFO.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use super::{PipelineError, PipelineShared, PipelineStatus};
use crate::provision::QosLevel;

/// The first retry delay.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// Where the pipeline failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Build,
    Deliver,
    Reboot,
}

impl Stage {
    /// Every stage, in the order of [`PipelineShared::failures_total`].
    pub const ALL: [Stage; 3] = [Stage::Build, Stage::Deliver, Stage::Reboot];

    /// Its name in the API and the metrics.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Stage::Build => "build",
            Stage::Deliver => "deliver",
            Stage::Reboot => "reboot",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl PipelineError {
    /// The stage this error belongs to.
    #[must_use]
    pub fn stage(&self) -> Stage {
        match self {
            PipelineError::Key { .. }
            | PipelineError::Build(_)
            | PipelineError::SelfCheck(_)
            | PipelineError::Mismatch { .. } => Stage::Build,
            PipelineError::Dir { .. } | PipelineError::Index { .. } | PipelineError::Write(_) => {
                Stage::Deliver
            }
            PipelineError::Failing(e) => e.stage(),
        }
    }
}

/// Exponential backoff between retries: see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            first: RETRY_FIRST,
            max: RETRY_MAX,
        }
    }
}

impl Backoff {
    /// The wait after the `failures`-th failed attempt in a row (1-based).
    #[must_use]
    pub fn after(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// A stage that is failing for a modem, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PipelineFailure {
    pub stage: Stage,
    /// The newest attempt's error.
    pub last_error: String,
    /// When the first failed attempt of this run of failures ended, ms since the Unix epoch.
    pub failing_since_ms: u64,
    /// Failed attempts since then.
    pub attempts: u32,
    /// When the next attempt is due, ms since the Unix epoch; `null`: not retried until the
    /// modem's level or the configuration changes (a reboot the modem's binding makes
    /// impossible).
    pub next_retry_ms: Option<u64>,
}

/// Which of a modem's two failure slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// Building and writing the newest level's file (stages build and deliver).
    File,
    /// Rebooting the modem onto its newest file.
    Reboot,
}

impl Slot {
    fn of(stage: Stage) -> Slot {
        match stage {
            Stage::Build | Stage::Deliver => Slot::File,
            Stage::Reboot => Slot::Reboot,
        }
    }

    fn get(self, s: &mut PipelineStatus) -> &mut Option<PipelineFailure> {
        match self {
            Slot::File => &mut s.file_failure,
            Slot::Reboot => &mut s.reboot_failure,
        }
    }
}

/// One failed attempt, to record.
pub(super) struct Attempt<'a> {
    pub stage: Stage,
    pub error: &'a str,
    pub now_ms: u64,
    pub next_retry_ms: Option<u64>,
}

impl PipelineShared {
    /// Records a failed attempt for `modem` (its entry is made, named `file`, if the pipeline
    /// has none yet) and logs it: at WARN when the stage or the error text changed, else at
    /// DEBUG. Returns the failure as now recorded.
    pub(super) fn fail(
        &self,
        modem: &str,
        file: impl FnOnce() -> String,
        a: &Attempt<'_>,
    ) -> PipelineFailure {
        self.failures[a.stage.index()].fetch_add(1, Ordering::Relaxed);
        let mut status = self.lock_status();
        let e = status
            .entry(modem.to_owned())
            .or_insert_with(|| PipelineStatus::new(file()));
        let slot = Slot::of(a.stage).get(e);
        let prev = slot.take();
        let changed = prev
            .as_ref()
            .is_none_or(|p| p.stage != a.stage || p.last_error != a.error);
        let f = PipelineFailure {
            stage: a.stage,
            last_error: a.error.to_owned(),
            failing_since_ms: prev.as_ref().map_or(a.now_ms, |p| p.failing_since_ms),
            attempts: prev.as_ref().map_or(1, |p| p.attempts.saturating_add(1)),
            next_retry_ms: a.next_retry_ms,
        };
        *slot = Some(f.clone());
        drop(status);
        let retry_in_ms = a.next_retry_ms.map(|t| t.saturating_sub(a.now_ms));
        if changed {
            tracing::warn!(
                modem,
                stage = a.stage.name(),
                attempts = f.attempts,
                retry_in_ms,
                error = a.error,
                "modem pipeline failing; retried with backoff, logged again when the error changes"
            );
        } else {
            tracing::debug!(
                modem,
                stage = a.stage.name(),
                attempts = f.attempts,
                retry_in_ms,
                "modem pipeline still failing"
            );
        }
        f
    }

    /// Clears `modem`'s failure in `slot`, logging the recovery once (INFO) if there was one.
    pub(super) fn recover(&self, modem: &str, slot: Slot, now_ms: u64) {
        let prev = self
            .lock_status()
            .get_mut(modem)
            .and_then(|e| slot.get(e).take());
        if let Some(p) = prev {
            tracing::info!(
                modem,
                stage = p.stage.name(),
                attempts = p.attempts,
                failing_for_ms = now_ms.saturating_sub(p.failing_since_ms),
                "modem pipeline recovered"
            );
        }
    }

    /// Drops `modem`'s failures in `slot` without logging a recovery (a newer file superseded
    /// them, or the modem was removed).
    pub(super) fn forget(&self, modem: &str, slot: Slot) {
        if let Some(e) = self.lock_status().get_mut(modem) {
            *slot.get(e) = None;
        }
    }

    /// How many modems have a failing stage now.
    #[must_use]
    pub fn failing_modems(&self) -> u64 {
        self.lock_status()
            .values()
            .filter(|s| s.is_failing())
            .count() as u64
    }

    /// Failed attempts since start, by stage ([`Stage::ALL`] order).
    #[must_use]
    pub fn failures_total(&self) -> [(Stage, u64); 3] {
        Stage::ALL.map(|s| (s, self.failures[s.index()].load(Ordering::Relaxed)))
    }
}

/// A level whose file failed: retried once its time comes.
#[derive(Debug)]
pub(super) struct FileRetry {
    pub qos: QosLevel,
    /// Returned as is (same text) while waiting, so the controller logs nothing new.
    pub error: Arc<PipelineError>,
    /// Failed attempts at this level.
    pub failures: u32,
    pub next_retry_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        let b = Backoff::default();
        let s: Vec<u64> = (1..=12).map(|n| b.after(n).as_secs()).collect();
        assert_eq!(s, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(b.after(0), RETRY_FIRST);
        assert_eq!(b.after(u32::MAX), RETRY_MAX);
    }

    #[test]
    fn failures_count_by_stage_and_keep_their_start() {
        let s = PipelineShared::default();
        let at = |stage, error, now_ms| Attempt {
            stage,
            error,
            now_ms,
            next_retry_ms: Some(now_ms + 1000),
        };
        s.fail("cm1", || "a.cfg".into(), &at(Stage::Build, "too fast", 10));
        let f = s.fail("cm1", || "a.cfg".into(), &at(Stage::Build, "too fast", 20));
        assert_eq!(
            (f.failing_since_ms, f.attempts, f.next_retry_ms),
            (10, 2, Some(1020))
        );
        s.fail(
            "cm1",
            || "a.cfg".into(),
            &at(Stage::Reboot, "no answer", 30),
        );
        s.fail(
            "cm2",
            || "b.cfg".into(),
            &at(Stage::Deliver, "disk full", 40),
        );
        assert_eq!(s.failing_modems(), 2);
        let st = s.status("cm1").unwrap();
        assert!(st.failing);
        assert_eq!(st.version, 0);
        assert_eq!(st.file, "a.cfg");
        assert_eq!(st.reboot_failure.unwrap().attempts, 1);
        assert_eq!(
            s.failures_total(),
            [(Stage::Build, 2), (Stage::Deliver, 1), (Stage::Reboot, 1)]
        );
        s.recover("cm1", Slot::File, 50);
        assert_eq!(s.failing_modems(), 2, "cm1 still fails to reboot");
        s.forget("cm1", Slot::Reboot);
        s.recover("cm2", Slot::File, 60);
        assert_eq!(s.failing_modems(), 0);
        assert!(!s.status("cm1").unwrap().failing);
        // The counters are totals: recoveries do not lower them.
        assert_eq!(s.failures_total()[0], (Stage::Build, 2));
    }
}
