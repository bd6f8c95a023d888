//! The incoming directory (issue 4 item 4; DESIGN.md §1.5): operators drop DOCSIS
//! configuration files there, the controller checks them and enforces what they grant.
//!
//! Every second ([`POLL`]) the directory is listed; a `*.cfg` file (not hidden, regular) is
//! handled once its name, size and modification time are the same on two consecutive scans (a
//! file still being written is left alone; write elsewhere and `mv` in to avoid the wait), and
//! again whenever they change.
//!
//! - **Valid** (both MICs with the CMTS key; a signature by a trusted key when trusted keys are
//!   configured; settings that make a valid QoS level) **and naming a known modem** (its
//!   targets block's modem id, else the file name `<modem id>.cfg`): the QoS becomes that
//!   modem's base plan through [`Controller::set_base`] (stored with an audit line naming the
//!   file, enforced in the data plane, and carried to the modem by the pipeline), then the
//!   file moves to `applied/`.
//! - **Invalid** (bad MIC, bad signature, malformed, unknown modem, or the controller refusing
//!   it): `tracing::error!` with the file and the reason, a record for `GET /v1/modem-files`,
//!   and the file moves to `rejected/`. Nothing else changes: the previous configuration stays
//!   in force.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::controller::Controller;
use crate::proto::docsis::{CmtsKey, TrustedKeys};
use crate::provision::BaseSource;

use super::configfile::load_and_verify;
use super::pipeline::{FileRecord, PipelineShared};

/// How often the directory is listed.
pub const POLL: Duration = Duration::from_secs(1);
/// Where handled valid files go, under the incoming directory.
pub const APPLIED: &str = "applied";
/// Where refused files go, under the incoming directory.
pub const REJECTED: &str = "rejected";

/// What one file looked like on a scan.
type Stamp = (u64, Option<SystemTime>);

/// Watches one incoming directory. [`Watcher::scan`] is one pass (synchronous, for tests and
/// for the blocking pool); [`Watcher::run`] loops.
pub struct Watcher {
    dir: PathBuf,
    cmts: CmtsKey,
    trusted: TrustedKeys,
    shared: Arc<PipelineShared>,
    /// Stamps seen on the previous scan, not yet handled.
    pending: HashMap<String, Stamp>,
    /// Stamps of files handled but still there (moving them failed): not handled again
    /// unless they change.
    done: HashMap<String, Stamp>,
    /// Told about each modem whose base plan a file changed ([`crate::api::ChangeHook`]).
    on_changes: Option<crate::api::ChangeHook>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Why the watcher cannot start.
#[derive(Debug, thiserror::Error)]
#[error("controller.modem_pipeline.incoming_dir: creating {path}: {source}")]
pub struct WatchError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Watcher {
    /// A watcher of `dir` (created, with `applied/` and `rejected/`, if absent).
    ///
    /// # Errors
    /// A directory cannot be created.
    pub fn new(
        dir: &Path,
        cmts: CmtsKey,
        trusted: TrustedKeys,
        shared: Arc<PipelineShared>,
    ) -> Result<Watcher, WatchError> {
        for d in [dir.to_path_buf(), dir.join(APPLIED), dir.join(REJECTED)] {
            std::fs::create_dir_all(&d).map_err(|source| WatchError { path: d, source })?;
        }
        Ok(Watcher {
            dir: dir.to_path_buf(),
            cmts,
            trusted,
            shared,
            pending: HashMap::new(),
            done: HashMap::new(),
            on_changes: None,
        })
    }

    /// The same watcher, calling `hook` with each modem whose base plan a file changed.
    #[must_use]
    pub fn with_change_hook(self, hook: Option<crate::api::ChangeHook>) -> Watcher {
        Watcher {
            on_changes: hook,
            ..self
        }
    }

    /// The `*.cfg` files in the directory now, with their stamps.
    fn list(&self) -> Vec<(String, Stamp)> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "incoming directory unreadable");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || !name.ends_with(".cfg") {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            out.push((name, (meta.len(), meta.modified().ok())));
        }
        out.sort();
        out
    }

    /// One pass: handles every file that is stable since the previous pass. Returns the
    /// records made (also kept in the shared state).
    pub fn scan(&mut self, ctl: &Mutex<Controller>, now_ms: u64) -> Vec<FileRecord> {
        let listed = self.list();
        let mut records = Vec::new();
        let mut pending = HashMap::new();
        self.done
            .retain(|name, stamp| listed.iter().any(|(n, s)| n == name && s == stamp));
        for (name, stamp) in listed {
            if self.done.get(&name) == Some(&stamp) {
                continue;
            }
            if self.pending.get(&name) != Some(&stamp) {
                pending.insert(name, stamp);
                continue;
            }
            let record = self.handle(&name, ctl, now_ms);
            let to = if record.ok { APPLIED } else { REJECTED };
            let dest = self.dir.join(to).join(&name);
            if let Err(e) = std::fs::rename(self.dir.join(&name), &dest) {
                tracing::error!(file = name, to = %dest.display(), error = %e, "moving a handled file failed");
                self.done.insert(name.clone(), stamp);
            }
            self.shared.record_file(record.clone());
            records.push(record);
        }
        self.pending = pending;
        records
    }

    /// Checks one file and applies it.
    fn handle(&self, name: &str, ctl: &Mutex<Controller>, now_ms: u64) -> FileRecord {
        let path = self.dir.join(name);
        let refuse = |modem: Option<String>, reason: String| {
            tracing::error!(
                file = name,
                reason,
                "modem configuration file refused; the previous configuration stays in force"
            );
            FileRecord {
                name: name.to_owned(),
                ok: false,
                modem,
                reason,
                at_ms: now_ms,
            }
        };
        let cfg = match load_and_verify(&path, &self.cmts, &self.trusted) {
            Ok(c) => c,
            Err(e) => return refuse(None, e.to_string()),
        };
        let stem = name.strip_suffix(".cfg").unwrap_or(name);
        let Ok(mut ctl) = ctl.lock() else {
            return refuse(cfg.modem, "the controller lock is poisoned".into());
        };
        let known = |m: &str| ctl.engine().base(m).is_some();
        let modem = match &cfg.modem {
            Some(m) if known(m) => m.clone(),
            Some(m) => {
                return refuse(
                    Some(m.clone()),
                    format!("unknown modem {m:?} (named in the file)"),
                );
            }
            None if known(stem) => stem.to_owned(),
            None => {
                return refuse(
                    None,
                    format!(
                        "the file names no modem and {stem:?} is no known modem id (name it <modem id>.cfg)"
                    ),
                );
            }
        };
        let by = BaseSource::File {
            name: name.to_owned(),
        };
        match ctl.set_base(&modem, cfg.qos, by, now_ms) {
            Ok(true) => {
                if let Some(hook) = &self.on_changes {
                    hook(&ctl, std::slice::from_ref(&modem));
                }
            }
            Ok(false) => {}
            Err(e) => return refuse(Some(modem), format!("not applied: {e}")),
        }
        tracing::info!(
            file = name,
            modem,
            "modem configuration file applied as the base plan"
        );
        FileRecord {
            name: name.to_owned(),
            ok: true,
            modem: Some(modem),
            reason: "applied as the modem's base plan".into(),
            at_ms: now_ms,
        }
    }

    /// Scans every [`POLL`] until `stop` turns true. Each scan runs on the blocking pool (it
    /// reads files and takes the controller's lock).
    pub async fn run(
        mut self,
        ctl: Arc<Mutex<Controller>>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        tracing::info!(dir = %self.dir.display(), "watching for modem configuration files");
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let c = ctl.clone();
            let res = tokio::task::spawn_blocking(move || {
                self.scan(&c, crate::api::system_now_ms());
                self
            })
            .await;
            match res {
                Ok(w) => self = w,
                Err(e) => {
                    tracing::error!(error = %e, "incoming-directory scan panicked; watching stops");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
