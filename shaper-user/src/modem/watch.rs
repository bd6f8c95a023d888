//! The incoming directory (issue 4 item 4; docs/ARCHITECTURE.md §1.5): operators drop DOCSIS
//! configuration files there, the controller checks them and enforces what they grant.
//!
//! Every second ([`POLL`]) the directory is listed; a `*.cfg` entry (not hidden; other names
//! are left alone) is handled once its name, size and modification time are the same on two
//! consecutive scans (a file still being written is left alone; write elsewhere and `mv` in to
//! avoid the wait), and again whenever they change.
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
//! - **Not a regular file** (symbolic link, FIFO, socket, directory, device): refused the same
//!   way without being opened or followed (files are opened with `O_NOFOLLOW | O_NONBLOCK`
//!   and checked with `fstat`, so one swapped in after the listing is refused too), and moved
//!   to `rejected/`.
//! - A file over 1 MiB is refused with its real size, unread.
//!
//! A handled entry never replaces one already in `applied/` or `rejected/`: the second
//! `x.cfg` goes to `x.cfg.<ms since the epoch>` (`-2`, `-3`, … if that is taken too), and the
//! record (`moved_to`) says where. An entry that cannot be moved is recorded once (the reason
//! says why it stayed) and not handled again until its size or modification time changes.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::controller::Controller;
use crate::proto::docsis::{CmtsKey, TrustedKeys};
use crate::provision::BaseSource;

use super::configfile::{ConfigFileError, ModemConfig, file_kind, read_opened, verify};
use super::pipeline::{FileRecord, PipelineShared};

/// How often the directory is listed.
pub const POLL: Duration = Duration::from_secs(1);
/// Where handled valid files go, under the incoming directory.
pub const APPLIED: &str = "applied";
/// Where refused files go, under the incoming directory.
pub const REJECTED: &str = "rejected";

/// What one entry looked like on a scan.
type Stamp = (u64, Option<SystemTime>);

/// One `*.cfg` entry of a scan: its name, stamp, and what it is when not a regular file.
type Listed = (String, Stamp, Option<&'static str>);

/// How many names [`move_unique`] tries for one entry.
const MAX_NAME_TRIES: u32 = 1000;

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
    /// Told about each modem whose base plan a file changed ([`crate::controller::ChangeHook`]).
    on_changes: Option<crate::controller::ChangeHook>,
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
    pub fn with_change_hook(self, hook: Option<crate::controller::ChangeHook>) -> Watcher {
        Watcher {
            on_changes: hook,
            ..self
        }
    }

    /// The `*.cfg` entries in the directory now, with their stamps (not following symbolic
    /// links).
    fn list(&self) -> Vec<Listed> {
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
            // `DirEntry::metadata` does not follow symbolic links.
            let Ok(meta) = entry.metadata() else { continue };
            let kind = (!meta.is_file()).then(|| file_kind(meta.file_type()));
            out.push((name, (meta.len(), meta.modified().ok()), kind));
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
            .retain(|name, stamp| listed.iter().any(|(n, s, _)| n == name && s == stamp));
        for (name, stamp, kind) in listed {
            if self.done.get(&name) == Some(&stamp) {
                continue;
            }
            if self.pending.get(&name) != Some(&stamp) {
                pending.insert(name, stamp);
                continue;
            }
            let mut record = match kind {
                None => self.handle(&name, ctl, now_ms),
                Some(kind) => refusal(
                    &name,
                    None,
                    format!(
                        "{kind}, not a regular file: refused without opening or following it (drop regular files)"
                    ),
                    now_ms,
                ),
            };
            let to = if record.ok { APPLIED } else { REJECTED };
            match move_unique(&self.dir, &name, to, now_ms) {
                Ok(dest) => record.moved_to = Some(dest),
                Err(e) => {
                    tracing::error!(file = name, to, error = %e, "moving a handled file failed; it stays, and is not handled again until it changes");
                    record.reason = format!(
                        "{}; left in place: moving it to {to}/ failed: {e}",
                        record.reason
                    );
                    self.done.insert(name.clone(), stamp);
                }
            }
            self.shared.record_file(record.clone());
            records.push(record);
        }
        self.pending = pending;
        records
    }

    /// Reads one dropped file (never blocking on a FIFO nor following a symbolic link) and
    /// verifies it.
    fn load(&self, path: &Path) -> Result<ModemConfig, ConfigFileError> {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path);
        let f = match opened {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(ConfigFileError::NotRegular {
                    path: path.to_path_buf(),
                    kind: "a symbolic link",
                });
            }
            Err(source) => {
                return Err(ConfigFileError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        verify(&read_opened(f, path)?, &self.cmts, &self.trusted)
    }

    /// Checks one file and applies it.
    fn handle(&self, name: &str, ctl: &Mutex<Controller>, now_ms: u64) -> FileRecord {
        let path = self.dir.join(name);
        let refuse = |modem: Option<String>, reason: String| refusal(name, modem, reason, now_ms);
        let cfg = match self.load(&path) {
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
            moved_to: None,
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
                self.scan(&c, crate::clock::system_now_ms());
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

/// A refused entry's record, logged.
fn refusal(name: &str, modem: Option<String>, reason: String, now_ms: u64) -> FileRecord {
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
        moved_to: None,
    }
}

/// Moves `dir/name` into `dir/to/` without replacing anything there: as `name`, else
/// `name.<now_ms>`, else `name.<now_ms>-2`, …. Returns where it went, relative to `dir`.
fn move_unique(dir: &Path, name: &str, to: &str, now_ms: u64) -> std::io::Result<String> {
    let from = dir.join(name);
    for k in 0..MAX_NAME_TRIES {
        let candidate = match k {
            0 => name.to_owned(),
            1 => format!("{name}.{now_ms}"),
            k => format!("{name}.{now_ms}-{k}"),
        };
        match rename_noreplace(&from, &dir.join(to).join(&candidate)) {
            Ok(()) => return Ok(format!("{to}/{candidate}")),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("{MAX_NAME_TRIES} names for {name} are taken in {to}/"),
    ))
}

/// `rename(from, to)` that fails with `AlreadyExists` instead of replacing `to`
/// (`renameat2(RENAME_NOREPLACE)`; on a filesystem without it, a check then a rename: only
/// the watcher writes into `applied/` and `rejected/`).
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (cf, ct) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths that outlive the call; renameat2 reads them
    // and touches no memory of ours.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cf.as_ptr(),
            libc::AT_FDCWD,
            ct.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) {
        return Err(e);
    }
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
    }
    std::fs::rename(from, to)
}

#[cfg(test)]
mod tests;
