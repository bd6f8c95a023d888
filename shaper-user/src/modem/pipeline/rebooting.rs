//! Rebooting a modem onto its new file: one task per file, retried with backoff until it
//! works, a newer file's reboot replaces it, the modem is removed or the pipeline is dropped
//! ([`super::retry`]).

use std::net::Ipv4Addr;

use super::retry::{Attempt, Slot, Stage};
use super::{DocsisPipeline, RebootRecord, method_name, server_id_for, system_now_ms};
use crate::controller::ModemBinding;
use crate::modem::reboot::RebootTarget;

impl DocsisPipeline {
    /// Reboots the modem onto `version` (see the module documentation of [`super`]).
    pub(super) fn reboot(&mut self, binding: &ModemBinding, version: u64, replay_base: u64) {
        let modem = binding.modem.clone();
        // A newer file's reboot replaces an older one still retrying.
        let generation = self
            .reboot_gen
            .entry(modem.clone())
            .or_insert_with(|| tokio::sync::watch::Sender::new(0));
        generation.send_modify(|g| *g += 1);
        let mut current = generation.subscribe();
        current.borrow_and_update();
        let skipped = |method: &'static str| {
            self.shared.forget(&modem, Slot::Reboot);
            self.shared.record_reboot(
                &modem,
                RebootRecord {
                    method,
                    ok: true,
                    skipped: true,
                    attempts: 0,
                    last_error: None,
                    at_ms: system_now_ms(),
                    version,
                },
            );
        };
        if version == 1 {
            // The modem's first file is written when the pipeline first sees the modem (the
            // controller opening, a modem added): rebooting then would restart every modem at
            // once when the pipeline is switched on. The file waits for the modem's next
            // restart; every later change reboots.
            tracing::info!(modem, "first modem file written; no reboot for it");
            skipped(
                self.reboots
                    .get(&modem)
                    .map_or("none", |r| method_name(&r.method)),
            );
            return;
        }
        let Some(spec) = self.reboots.get(&modem) else {
            tracing::info!(
                modem,
                version,
                "modem file written; reboot method none: skipped"
            );
            skipped("none");
            return;
        };
        let method = method_name(&spec.method);
        let target = match RebootTarget::from_binding(binding, spec.mac, spec.method.clone()) {
            Ok(t) => t,
            Err(e) => {
                // Nothing to retry: the binding makes it impossible until it changes.
                let text = e.to_string();
                let now_ms = (self.clock)();
                let store = &self.store;
                self.shared.fail(
                    &modem,
                    || store.file_name(&modem, 0),
                    &Attempt {
                        stage: Stage::Reboot,
                        error: &text,
                        now_ms,
                        next_retry_ms: None,
                    },
                );
                self.shared.record_reboot(
                    &modem,
                    RebootRecord {
                        method,
                        ok: false,
                        skipped: false,
                        attempts: 0,
                        last_error: Some(text),
                        at_ms: system_now_ms(),
                        version,
                    },
                );
                return;
            }
        };
        let mut rebooter = self.rebooter.clone();
        let shared = self.shared.clone();
        let (clock, backoff, file) = (
            self.clock.clone(),
            self.backoff,
            self.store.file_name(&modem, 0),
        );
        self.runtime.spawn(async move {
            if let Some(fr) = &mut rebooter.forcerenew {
                fr.server_id = server_id_for(target.ip).unwrap_or(Ipv4Addr::UNSPECIFIED);
            }
            let mut replay_base = replay_base;
            let mut failures = 0u32;
            loop {
                let out = rebooter.reboot(&target, replay_base).await;
                let now_ms = clock();
                shared.record_reboot(
                    &modem,
                    RebootRecord::from_outcome(&out, method, version, system_now_ms()),
                );
                // Replaced by a newer file's reboot, or the modem or the pipeline is gone.
                if current.has_changed().unwrap_or(true) {
                    return;
                }
                if out.ok {
                    tracing::info!(
                        modem,
                        version,
                        method,
                        attempts = out.attempts,
                        "modem rebooted to fetch its new file"
                    );
                    shared.recover(&modem, Slot::Reboot, now_ms);
                    return;
                }
                failures = failures.saturating_add(1);
                let delay = backoff.after(failures);
                let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                let text = out.last_error.clone().unwrap_or_else(|| "failed".into());
                shared.fail(
                    &modem,
                    || file.clone(),
                    &Attempt {
                        stage: Stage::Reboot,
                        error: &format!("rebooting onto version {version} by {method}: {text}"),
                        now_ms,
                        next_retry_ms: Some(now_ms.saturating_add(delay_ms)),
                    },
                );
                // FORCERENEW replay counters only grow (RFC 3118): the next round starts
                // above every counter this one sent.
                let sent = out
                    .replay_counter
                    .unwrap_or(replay_base.saturating_add(u64::from(out.attempts)));
                replay_base = system_now_ms().max(sent.saturating_add(1));
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = current.changed() => return,
                }
            }
        });
    }
}
