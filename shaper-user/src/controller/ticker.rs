//! The daemon's timer: calls [`Controller::tick`] when the next start or stop is due, when the
//! API has accepted events (so immediate ones are enforced at once), and at least every
//! [`MAX_TICK_WAIT_MS`] (retries of failed enforcements).
//!
//! A tick commits the state changes of everything due in one store transaction, so events
//! accepted while the previous tick was being synced share the next one (the same group
//! commit as [`super::submit::SubmitQueue`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::{error, info};

use super::{ChangeHook, Controller};
use crate::clock::Clock;
use crate::provision::Change;

/// The longest the tick task sleeps without being woken.
pub const MAX_TICK_WAIT_MS: u64 = 1000;

/// Logs the changes a tick made, with their lag behind their due time at `now`.
pub fn log_changes(changes: &[Change], now: u64) {
    for ch in changes {
        info!(
            modem = ch.modem,
            event = ch.cause,
            kind = ?ch.kind,
            lag_ms = now.saturating_sub(ch.due_ms),
            "QoS change"
        );
    }
}

/// Runs until `stop` turns true. `wake` is notified after accepted submissions
/// ([`super::submit::SubmitQueue`]).
pub async fn tick_loop(
    ctl: Arc<Mutex<Controller>>,
    clock: Clock,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    on_changes: Option<ChangeHook>,
) {
    let mut last_error: Option<String> = None;
    loop {
        let next = crate::controller::lock(&ctl, || clock()).next_due();
        let now = clock();
        let wait = next.map_or(MAX_TICK_WAIT_MS, |due| {
            due.saturating_sub(now).min(MAX_TICK_WAIT_MS)
        });
        if wait > 0 {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait)) => {}
                () = wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        if *stop.borrow() {
            return;
        }
        let (c, clk, hook) = (ctl.clone(), clock.clone(), on_changes.clone());
        let res = tokio::task::spawn_blocking(move || {
            let mut c = crate::controller::lock(&c, || clk());
            let changes = c.tick(clk()).map_err(|e| e.to_string())?;
            if let Some(hook) = hook.filter(|_| !changes.is_empty()) {
                hook(&c, &super::changed_modems(&changes));
            }
            Ok::<_, String>(changes)
        })
        .await;
        match res {
            Ok(Ok(changes)) => {
                last_error = None;
                log_changes(&changes, clock());
            }
            Ok(Err(e)) => {
                if last_error.as_deref() != Some(e.as_str()) {
                    error!("controller tick: {e}");
                    last_error = Some(e);
                }
            }
            Err(e) => {
                error!("controller tick panicked: {e}; timed events stop");
                return;
            }
        }
    }
}
