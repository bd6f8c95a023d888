//! The modem pipeline (issue 4 items 3 and 6; docs/ARCHITECTURE.md §1.3–1.4): a modem's effective
//! QoS becomes its DOCSIS configuration file, written atomically under an unguessable versioned
//! name and under its stable name, and the modem is rebooted to fetch it.
//!
//! [`DocsisPipeline`] implements the controller's [`ModemPipeline`]. On `apply`:
//!
//! 1. If the modem's newest file already grants this level (and the stable file exists),
//!    nothing happens: the controller calls `apply` again on every restart and on every retry
//!    of a failed data-plane write, and none of those may reboot a modem.
//! 2. Otherwise the next version `v` is built ([`build`]: CMTS MIC, signature when a signing
//!    key is configured), checked (it must verify and grant exactly the level), written as
//!    version `v` ([`ConfigStore::write`], which keeps the last `keep_versions`) and as the
//!    stable name (version 0), and `config_dir/index.json` records `v` (atomically), so
//!    versions survive restarts.
//! 3. The modem is rebooted by its method ([`ModemReboot`]) on the runtime captured at
//!    construction: `apply` is called under the controller's lock and never waits for it.
//!    Every outcome is logged and kept ([`PipelineShared`]) for the API. A failed reboot is
//!    retried by its task with backoff ([`retry`]). A modem's first file
//!    (version 1, written when the pipeline first sees the modem, typically as the controller
//!    opens) reboots nothing: switching the pipeline on must not restart every modem at once;
//!    the modem takes that file at its next restart.
//!
//! A failing stage (build, deliver, reboot) is shown in the modem's [`PipelineStatus`] and the
//! metrics, retried with exponential backoff (1 s doubling to 5 min) and logged once per
//! change of its error: see [`retry`].
//!
//! `remove` keeps the files: they are the modem's history; it drops the modem's failures and
//! stops its reboot retries.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::configfile::{BuildOptions, ConfigFileError, ConfigStore, build, verify, write_atomic};
use super::keys::{self, KeyFileError};
use super::reboot::{
    CommandHook, ForceRenewSender, RebootMethod, RebootOutcome, Rebooter, RetryPolicy, SnmpReset,
};
use crate::clock::Clock;
use crate::controller::{EnforceError, ModemBinding, ModemPipeline};
use crate::proto::docsis::{CmtsKey, Signer, TrustedKeys};
use crate::provision::QosLevel;
use crate::tftp::{FsHandler, Handler, HandlerError};

mod rebooting;
pub mod retry;

use retry::{Attempt, FileRetry, Slot};
pub use retry::{Backoff, PipelineFailure, RETRY_FIRST, RETRY_MAX, Stage};

/// The index of versions, in `config_dir`.
pub const INDEX_FILE: &str = "index.json";
/// How many modem-file records [`PipelineShared`] keeps (oldest dropped first).
pub const MAX_FILE_RECORDS: usize = 256;
/// How long one SNMP SET waits for its Response.
pub const SNMP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an operator hook may run.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest backoff between two reboot attempts.
pub const MAX_REBOOT_BACKOFF: Duration = Duration::from_secs(30);

/// `[controller.modem_pipeline]`, checked, with paths resolved against the configuration
/// file's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineOptions {
    pub config_dir: PathBuf,
    pub incoming_dir: Option<PathBuf>,
    pub cmts_key_file: PathBuf,
    pub signing_key_file: Option<PathBuf>,
    pub trusted_keys: Vec<PathBuf>,
    pub name_key_file: PathBuf,
    pub keep_versions: u64,
    pub max_cpe: u8,
    pub tftp_listen: Option<SocketAddr>,
    pub reboot_attempts: u32,
    pub reboot_backoff_ms: u64,
    pub snmp_port: u16,
    pub forcerenew_source_port: u16,
    /// The DHCP client port FORCERENEWs go to: 68 (RFC 2131 §4.1); not a configuration key,
    /// tests change it.
    pub forcerenew_client_port: u16,
    /// Program and arguments of the command hook.
    pub hook: Option<Vec<String>>,
}

impl PipelineOptions {
    /// Options with the documented defaults for everything optional.
    #[must_use]
    pub fn new(config_dir: PathBuf, cmts_key_file: PathBuf, name_key_file: PathBuf) -> Self {
        PipelineOptions {
            config_dir,
            incoming_dir: None,
            cmts_key_file,
            signing_key_file: None,
            trusted_keys: Vec::new(),
            name_key_file,
            keep_versions: 4,
            max_cpe: 4,
            tftp_listen: None,
            reboot_attempts: 3,
            reboot_backoff_ms: 500,
            snmp_port: 161,
            forcerenew_source_port: 67,
            forcerenew_client_port: 68,
            hook: None,
        }
    }

    /// Reads every key file. The error names the configuration key.
    ///
    /// # Errors
    /// The first key file that cannot be read or parsed.
    pub fn load_keys(&self) -> Result<PipelineKeys, PipelineError> {
        let key = |field: String| move |source: KeyFileError| PipelineError::Key { field, source };
        let cmts = keys::cmts_key(&self.cmts_key_file).map_err(key("cmts_key_file".into()))?;
        let signer = self
            .signing_key_file
            .as_deref()
            .map(keys::signer)
            .transpose()
            .map_err(key("signing_key_file".into()))?;
        let mut trusted = TrustedKeys::new();
        for (i, p) in self.trusted_keys.iter().enumerate() {
            trusted.add(keys::public(p).map_err(key(format!("trusted_keys[{i}]")))?);
        }
        let name_key = keys::key32(&self.name_key_file).map_err(key("name_key_file".into()))?;
        Ok(PipelineKeys {
            cmts,
            signer,
            trusted,
            name_key,
        })
    }

    /// The rebooter these options describe (FORCERENEW's server identifier is filled in per
    /// modem, see [`server_id_for`]).
    #[must_use]
    pub fn rebooter(&self) -> Rebooter {
        Rebooter {
            snmp: SnmpReset {
                port: self.snmp_port,
                timeout: SNMP_TIMEOUT,
            },
            forcerenew: Some(ForceRenewSender {
                source: SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    self.forcerenew_source_port,
                ),
                server_id: Ipv4Addr::UNSPECIFIED,
                client_port: self.forcerenew_client_port,
            }),
            hook: self.hook.as_ref().and_then(|h| {
                let (program, args) = h.split_first()?;
                Some(CommandHook {
                    program: program.into(),
                    args: args.to_vec(),
                    timeout: HOOK_TIMEOUT,
                })
            }),
            retry: RetryPolicy {
                attempts: self.reboot_attempts.max(1),
                base_delay: Duration::from_millis(self.reboot_backoff_ms),
                max_delay: MAX_REBOOT_BACKOFF.max(Duration::from_millis(self.reboot_backoff_ms)),
            },
        }
    }
}

/// The keys the pipeline works with.
#[derive(Clone)]
pub struct PipelineKeys {
    pub cmts: CmtsKey,
    pub signer: Option<Signer>,
    /// Keys accepted on operator-dropped files (empty: signatures not checked).
    pub trusted: TrustedKeys,
    pub name_key: [u8; 32],
}

impl std::fmt::Debug for PipelineKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineKeys")
            .field("signed", &self.signer.is_some())
            .field("trusted", &self.trusted.ids().count())
            .finish_non_exhaustive()
    }
}

/// How one modem is rebooted after a new file (`[[modem]] reboot`, `mac`, …). A modem without
/// one (`reboot = "none"`) gets its file and no reboot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModemReboot {
    pub mac: [u8; 6],
    pub method: RebootMethod,
}

/// Why the pipeline could not start or generate a modem's file.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("controller.modem_pipeline.{field}: {source}")]
    Key {
        field: String,
        #[source]
        source: KeyFileError,
    },
    #[error("creating {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Index { path: PathBuf, reason: String },
    #[error("generating the configuration file: {0}")]
    Build(#[source] ConfigFileError),
    #[error("the generated file does not verify: {0}")]
    SelfCheck(#[source] ConfigFileError),
    #[error("the generated file grants {granted:?}, not the level asked for ({wanted:?})")]
    Mismatch {
        granted: Box<QosLevel>,
        wanted: Box<QosLevel>,
    },
    #[error("writing the configuration file: {0}")]
    Write(#[source] ConfigFileError),
    /// A failure being retried with backoff ([`retry`]): the same error again, same text.
    #[error(transparent)]
    Failing(Arc<PipelineError>),
}

/// One reboot as recorded for the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RebootRecord {
    /// "snmp", "forcerenew", "command" or "none".
    pub method: &'static str,
    pub ok: bool,
    /// True when the modem has no reboot method (`reboot = "none"`): nothing was sent.
    pub skipped: bool,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When it finished, ms since the Unix epoch.
    pub at_ms: u64,
    /// The file version it delivered.
    pub version: u64,
}

fn method_name(m: &RebootMethod) -> &'static str {
    match m {
        RebootMethod::Snmp { .. } => "snmp",
        RebootMethod::ForceRenew { .. } => "forcerenew",
        RebootMethod::Command => "command",
    }
}

impl RebootRecord {
    fn from_outcome(o: &RebootOutcome, method: &'static str, version: u64, at_ms: u64) -> Self {
        RebootRecord {
            method,
            ok: o.ok,
            skipped: false,
            attempts: o.attempts,
            last_error: o.last_error.clone(),
            at_ms,
            version,
        }
    }
}

/// A modem's pipeline state, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PipelineStatus {
    /// The newest version written (0: none yet).
    pub version: u64,
    /// The stable name (version 0): what DHCP hands the modem; always the newest bytes.
    pub file: String,
    /// The name of the newest version.
    pub version_file: Option<String>,
    /// The last reboot, if any finished (or was skipped) since the process started.
    pub last_reboot: Option<RebootRecord>,
    /// Whether a stage is failing now (`file_failure` or `reboot_failure` is set).
    pub failing: bool,
    /// Building or writing the file of the modem's current level fails (stage build or
    /// deliver): the modem keeps its previous file.
    pub file_failure: Option<PipelineFailure>,
    /// Rebooting the modem onto its newest file fails (stage reboot).
    pub reboot_failure: Option<PipelineFailure>,
}

impl PipelineStatus {
    fn new(file: String) -> PipelineStatus {
        PipelineStatus {
            version: 0,
            file,
            version_file: None,
            last_reboot: None,
            failing: false,
            file_failure: None,
            reboot_failure: None,
        }
    }

    fn is_failing(&self) -> bool {
        self.file_failure.is_some() || self.reboot_failure.is_some()
    }
}

/// One operator-dropped file the watcher handled ([`super::watch`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileRecord {
    pub name: String,
    pub ok: bool,
    /// The modem it applied to (when known).
    pub modem: Option<String>,
    /// Why it was refused (or what happened).
    pub reason: String,
    pub at_ms: u64,
    /// Where it went, relative to the incoming directory (`rejected/x.cfg`,
    /// `rejected/x.cfg.<ms>` when that name was taken); `null`: it could not be moved.
    pub moved_to: Option<String>,
}

/// State the pipeline and the watcher share with the API.
#[derive(Debug)]
pub struct PipelineShared {
    status: Mutex<BTreeMap<String, PipelineStatus>>,
    files: Mutex<VecDeque<FileRecord>>,
    /// Reboot records made since start (skipped ones included).
    reboots: tokio::sync::watch::Sender<u64>,
    /// Failed attempts since start, by [`Stage`].
    failures: [AtomicU64; 3],
}

impl Default for PipelineShared {
    fn default() -> Self {
        PipelineShared {
            status: Mutex::default(),
            files: Mutex::default(),
            reboots: tokio::sync::watch::Sender::new(0),
            failures: Default::default(),
        }
    }
}

impl PipelineShared {
    fn lock_status(&self) -> MutexGuard<'_, BTreeMap<String, PipelineStatus>> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A modem's state, if the pipeline made a file for it or failed to.
    pub fn status(&self, modem: &str) -> Option<PipelineStatus> {
        self.lock_status().get(modem).map(|s| PipelineStatus {
            failing: s.is_failing(),
            ..s.clone()
        })
    }

    /// Operator-dropped files handled, oldest first (at most [`MAX_FILE_RECORDS`]).
    pub fn files(&self) -> Vec<FileRecord> {
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Records a handled file.
    pub fn record_file(&self, r: FileRecord) {
        let mut f = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if f.len() >= MAX_FILE_RECORDS {
            f.pop_front();
        }
        f.push_back(r);
    }

    /// How many reboot records were made since start.
    pub fn reboots_recorded(&self) -> u64 {
        *self.reboots.borrow()
    }

    /// Waits until at least `n` reboot records were made since start.
    pub async fn wait_reboots(&self, n: u64) {
        let mut rx = self.reboots.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    fn set_file(&self, modem: &str, version: u64, file: String, version_file: String) {
        let mut s = self.lock_status();
        let e = s
            .entry(modem.to_owned())
            .or_insert_with(|| PipelineStatus::new(file.clone()));
        e.version = version;
        e.file = file;
        e.version_file = Some(version_file);
    }

    /// Keeps `r` as the modem's last reboot unless one for a newer file is already there (two
    /// reboots in flight for consecutive files may finish out of order).
    fn record_reboot(&self, modem: &str, r: RebootRecord) {
        if let Some(e) = self.lock_status().get_mut(modem)
            && e.last_reboot
                .as_ref()
                .is_none_or(|l| l.version <= r.version)
        {
            e.last_reboot = Some(r);
        }
        self.reboots.send_modify(|c| *c += 1);
    }
}

/// `config_dir/index.json`: each modem's newest version and what it grants.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Index {
    modems: BTreeMap<String, IndexEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct IndexEntry {
    version: u64,
    qos: QosLevel,
    /// The next FORCERENEW replay counter to use (RFC 3118: it only grows).
    #[serde(default)]
    replay_next: u64,
}

fn read_index(path: &Path) -> Result<Index, PipelineError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| PipelineError::Index {
            path: path.to_path_buf(),
            reason: format!("not a version index: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
        Err(e) => Err(PipelineError::Index {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// The local IPv4 address this host reaches `ip` from (a FORCERENEW's server identifier,
/// option 54: the address the modem's DHCP server answered from is the gateway's address on
/// the modem's segment). Connecting a UDP socket sends nothing.
#[must_use]
pub fn server_id_for(ip: Ipv4Addr) -> Option<Ipv4Addr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((ip, 68)).ok()?;
    match s.local_addr().ok()?.ip() {
        IpAddr::V4(a) if !a.is_unspecified() => Some(a),
        _ => None,
    }
}

fn system_now_ms() -> u64 {
    crate::clock::system_now_ms()
}

/// See the module documentation.
pub struct DocsisPipeline {
    store: ConfigStore,
    index_path: PathBuf,
    index: Index,
    keys: PipelineKeys,
    /// The signer's own key, to check what was built.
    own: TrustedKeys,
    max_cpe: u8,
    reboots: BTreeMap<String, ModemReboot>,
    rebooter: Rebooter,
    runtime: tokio::runtime::Handle,
    shared: Arc<PipelineShared>,
    /// Milliseconds since the Unix epoch (failure times, retry times).
    clock: Clock,
    backoff: Backoff,
    /// Levels whose file failed, by modem: retried once their time comes.
    file_retry: BTreeMap<String, FileRetry>,
    /// By modem, the generation of its newest reboot: a reboot task retries only while its
    /// generation is current and stops when the sender is dropped (modem removed, pipeline
    /// dropped).
    reboot_gen: BTreeMap<String, tokio::sync::watch::Sender<u64>>,
}

impl std::fmt::Debug for DocsisPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocsisPipeline")
            .field("store", &self.store)
            .field("modems", &self.index.modems.len())
            .finish_non_exhaustive()
    }
}

impl DocsisPipeline {
    /// Opens the pipeline on `opts.config_dir` (created if absent), with its version index.
    /// `reboots` says how each modem is rebooted (modems not in it are not); reboots run on
    /// `runtime`.
    ///
    /// # Errors
    /// The directory cannot be created, or the index is unreadable.
    pub fn open(
        opts: &PipelineOptions,
        keys: PipelineKeys,
        reboots: BTreeMap<String, ModemReboot>,
        runtime: tokio::runtime::Handle,
    ) -> Result<DocsisPipeline, PipelineError> {
        std::fs::create_dir_all(&opts.config_dir).map_err(|source| PipelineError::Dir {
            path: opts.config_dir.clone(),
            source,
        })?;
        let index_path = opts.config_dir.join(INDEX_FILE);
        let index = read_index(&index_path)?;
        let store = ConfigStore::new(&opts.config_dir, keys.name_key, opts.keep_versions);
        let shared = Arc::new(PipelineShared::default());
        for (modem, e) in &index.modems {
            shared.set_file(
                modem,
                e.version,
                store.file_name(modem, 0),
                store.file_name(modem, e.version),
            );
        }
        let mut own = TrustedKeys::new();
        if let Some(s) = &keys.signer {
            own.add(s.verifying_key());
        }
        Ok(DocsisPipeline {
            store,
            index_path,
            index,
            keys,
            own,
            max_cpe: opts.max_cpe,
            reboots,
            rebooter: opts.rebooter(),
            runtime,
            shared,
            clock: Arc::new(system_now_ms),
            backoff: Backoff::default(),
            file_retry: BTreeMap::new(),
            reboot_gen: BTreeMap::new(),
        })
    }

    /// The same pipeline on another clock (ms since the Unix epoch) for failure and retry
    /// times.
    #[must_use]
    pub fn with_clock(self, clock: Clock) -> DocsisPipeline {
        DocsisPipeline { clock, ..self }
    }

    /// The same pipeline with another retry backoff (default: 1 s doubling to 5 min).
    #[must_use]
    pub fn with_backoff(self, backoff: Backoff) -> DocsisPipeline {
        DocsisPipeline { backoff, ..self }
    }

    /// What the API and the watcher share with the pipeline.
    #[must_use]
    pub fn shared(&self) -> Arc<PipelineShared> {
        self.shared.clone()
    }

    /// The file store (names and paths).
    #[must_use]
    pub fn store(&self) -> &ConfigStore {
        &self.store
    }

    /// The newest version written for `modem` (0: none).
    #[must_use]
    pub fn version(&self, modem: &str) -> u64 {
        self.index.modems.get(modem).map_or(0, |e| e.version)
    }

    /// Builds, checks and writes the next version; returns it and the FORCERENEW replay base.
    fn generate(&mut self, modem: &str, qos: &QosLevel) -> Result<(u64, u64), PipelineError> {
        let opts = BuildOptions {
            cmts_key: &self.keys.cmts,
            signer: self.keys.signer.as_ref(),
            max_cpe: self.max_cpe,
        };
        let bytes = build(modem, qos, &opts).map_err(PipelineError::Build)?;
        let check = verify(&bytes, &self.keys.cmts, &self.own).map_err(PipelineError::SelfCheck)?;
        if check.qos != *qos {
            return Err(PipelineError::Mismatch {
                granted: Box::new(check.qos),
                wanted: Box::new(*qos),
            });
        }
        let prev = self.index.modems.get(modem);
        let version = prev.map_or(1, |e| e.version + 1);
        let replay_next = prev.map_or(0, |e| e.replay_next);
        self.store
            .write(modem, version, &bytes)
            .map_err(PipelineError::Write)?;
        write_atomic(&self.store.path(modem, 0), &bytes).map_err(PipelineError::Write)?;
        let replay_base = system_now_ms().max(replay_next);
        let attempts = u64::from(self.rebooter.retry.attempts.max(1));
        let mut index = self.index.clone();
        index.modems.insert(
            modem.to_owned(),
            IndexEntry {
                version,
                qos: *qos,
                replay_next: replay_base.saturating_add(attempts),
            },
        );
        let text = serde_json::to_vec_pretty(&index).map_err(|e| PipelineError::Index {
            path: self.index_path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.index_path, &text).map_err(PipelineError::Write)?;
        self.index = index;
        Ok((version, replay_base))
    }
}

impl ModemPipeline for DocsisPipeline {
    /// See the module documentation; a failure is kept, retried with backoff and returned
    /// unchanged (without a new attempt) until its retry time ([`retry`]).
    fn apply(&mut self, binding: &ModemBinding, qos: &QosLevel) -> Result<(), EnforceError> {
        let modem = binding.modem.as_str();
        let now_ms = (self.clock)();
        if self.index.modems.get(modem).is_some_and(|e| e.qos == *qos)
            && self.store.path(modem, 0).is_file()
        {
            if self.file_retry.remove(modem).is_some() {
                self.shared.recover(modem, Slot::File, now_ms);
            }
            return Ok(());
        }
        let failing = |error: Arc<PipelineError>| EnforceError::Pipeline {
            modem: modem.to_owned(),
            source: PipelineError::Failing(error),
        };
        let prev = self.file_retry.get(modem).filter(|r| r.qos == *qos);
        if let Some(r) = prev
            && now_ms < r.next_retry_ms
        {
            return Err(failing(r.error.clone()));
        }
        let failures = prev.map_or(0, |r| r.failures);
        let (version, replay_base) = match self.generate(modem, qos) {
            Ok(v) => v,
            Err(e) => {
                let error = Arc::new(e);
                let failures = failures.saturating_add(1);
                let delay =
                    u64::try_from(self.backoff.after(failures).as_millis()).unwrap_or(u64::MAX);
                let next_retry_ms = now_ms.saturating_add(delay);
                let text = error.to_string();
                let store = &self.store;
                self.shared.fail(
                    modem,
                    || store.file_name(modem, 0),
                    &Attempt {
                        stage: error.stage(),
                        error: &text,
                        now_ms,
                        next_retry_ms: Some(next_retry_ms),
                    },
                );
                self.file_retry.insert(
                    modem.to_owned(),
                    FileRetry {
                        qos: *qos,
                        error: error.clone(),
                        failures,
                        next_retry_ms,
                    },
                );
                return Err(failing(error));
            }
        };
        if self.file_retry.remove(modem).is_some() {
            self.shared.recover(modem, Slot::File, now_ms);
        }
        self.shared.set_file(
            modem,
            version,
            self.store.file_name(modem, 0),
            self.store.file_name(modem, version),
        );
        tracing::info!(
            modem,
            version,
            file = self.store.file_name(modem, 0),
            "modem configuration file written"
        );
        self.reboot(binding, version, replay_base);
        Ok(())
    }

    /// Keeps the files (the modem's history); drops the modem's failures and stops its reboot
    /// retries.
    fn remove(&mut self, binding: &ModemBinding) -> Result<(), EnforceError> {
        let modem = binding.modem.as_str();
        self.file_retry.remove(modem);
        self.reboot_gen.remove(modem);
        self.shared.forget(modem, Slot::File);
        self.shared.forget(modem, Slot::Reboot);
        Ok(())
    }
}

/// Serves the pipeline's files by TFTP and HTTP: only `<name>.cfg` directly in `config_dir`
/// (no subdirectory such as the incoming directory, no hidden temporary file, not the index);
/// anything else is "not found", like a missing file.
#[derive(Debug, Clone)]
pub struct ConfigDirHandler(FsHandler);

impl ConfigDirHandler {
    /// Serves `dir`, which must exist.
    ///
    /// # Errors
    /// `dir` is not a usable directory.
    pub fn new(dir: &Path) -> Result<ConfigDirHandler, HandlerError> {
        Ok(ConfigDirHandler(
            FsHandler::new(dir)?.with_max_len(super::configfile::MAX_FILE_LEN),
        ))
    }
}

impl Handler for ConfigDirHandler {
    fn open(&self, path: &str) -> Result<Arc<[u8]>, HandlerError> {
        let plain = !path.contains('/') && !path.starts_with('.') && path.ends_with(".cfg");
        if !plain {
            return Err(HandlerError::NotFound { path: path.into() });
        }
        self.0.open(path)
    }
}

#[cfg(test)]
mod tests;
