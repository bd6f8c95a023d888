//! The receiving end of a reboot, for the lab: a modem emulator that accepts an authenticated
//! FORCERENEW on UDP 68 and an SNMP `SET docsDevResetNow.0 = 1` on UDP 161, and reports each
//! accepted trigger as a [`RebootTrigger`] on a channel (docs/ARCHITECTURE.md §1.4,
//! docs/PROTOCOLS.md §3).
//!
//! - DHCP client side: [`dhcp::verify_forcerenew`] with the configured RFC 6704 reconfigure
//!   key (and/or RFC 3118 secret); unauthenticated, wrongly keyed, replayed or misaddressed
//!   messages are logged with the reason and counted, never obeyed (stricter than dhcpcd's
//!   default, which obeys unauthenticated ones unless `authprotocol … require`).
//! - SNMP agent side ([`Agent`], sans-IO): the write community may SET docsDevResetNow to
//!   `true(1)` (noError); another value is wrongValue, a non-INTEGER wrongType, any other
//!   object noCreation; the read-only community gets noAccess (as snmpd answers) and an
//!   unknown community authorizationError (snmpd stays silent instead; an emulator that says
//!   why makes test failures readable). GET returns `false(2)` (TruthValue, RFC 4639).
//! - Configuration fetch (what a cable modem does after the reset): the boot file is read by
//!   TFTP ([`crate::tftp::client::fetch`]) and checked by [`check_config`] as a CM checks
//!   it: the CM MIC always, the CMTS MIC when the emulator is given the shared secret, and the
//!   Ed25519 signature when trusted keys are given. [`ModemState`] keeps the applied
//!   configuration; a file that fails leaves the previous one applied.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::configfile::{ConfigFileError, ModemConfig, modem_config};
use crate::proto::auth::DIGEST_LEN;
use crate::proto::dhcp::{self, ClientKeys, ForceRenewReject, ReplayWindow};
use crate::proto::docsis::{self, CmtsKey, ConfigFile, TrustedKeys, VerifyError};
use crate::proto::snmp::{self, ErrorStatus, Message, Oid, PduKind, SnmpError, Value, VarBind};
use crate::tftp::client::{ClientConfig, FetchError, fetch};

/// How a reboot was triggered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerMethod {
    ForceRenew,
    Snmp,
}

/// An accepted reboot request. The consumer (the emulated modem) restarts and re-fetches
/// its configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebootTrigger {
    pub method: TriggerMethod,
    pub at: SystemTime,
    /// Who sent it.
    pub peer: SocketAddr,
}

impl RebootTrigger {
    /// One JSON line: `{"event":"reboot","method":"forcerenew"|"snmp","at_ms":…,"peer":"…"}`.
    #[must_use]
    pub fn to_json(&self) -> String {
        let at_ms = self
            .at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        serde_json::json!({
            "event": "reboot",
            "method": self.method,
            "at_ms": at_ms,
            "peer": self.peer.to_string(),
        })
        .to_string()
    }
}

/// Why the emulator refused something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// A FORCERENEW that did not verify.
    ForceRenew(ForceRenewReject),
    /// An SNMP request answered with this error-status.
    Snmp(ErrorStatus),
    /// A datagram on the SNMP port that is not an SNMPv2c message we handle.
    SnmpUndecodable(SnmpError),
}

/// Counters and the reasons for every rejection, for logs and tests.
#[derive(Debug, Default)]
pub struct EmulatorStats {
    pub forcerenew_accepted: AtomicU64,
    pub forcerenew_rejected: AtomicU64,
    pub snmp_resets: AtomicU64,
    pub snmp_gets: AtomicU64,
    pub snmp_rejected: AtomicU64,
    rejections: Mutex<Vec<Rejection>>,
}

impl EmulatorStats {
    /// Every rejection so far, oldest first.
    pub fn rejections(&self) -> Vec<Rejection> {
        self.rejections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn reject(&self, r: Rejection) {
        self.rejections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(r);
    }
}

/// What the SNMP agent core decided for one datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentReply {
    /// The Response to send back, if any.
    pub response: Option<Vec<u8>>,
    /// The request was a valid SET docsDevResetNow = 1: reset the modem.
    pub reset: bool,
    /// The error-status sent, when not noError.
    pub refused: Option<ErrorStatus>,
}

/// The SNMP agent of the emulator, without sockets: bytes in, response bytes out.
#[derive(Clone, Debug)]
pub struct Agent {
    /// The community allowed to SET (snmpd `rwcommunity`).
    pub rw_community: Vec<u8>,
    /// A community allowed only to read (snmpd `rocommunity`).
    pub ro_community: Option<Vec<u8>>,
}

impl Agent {
    /// Handle one request datagram (RFC 3416 §4.2). `Err` for what does not decode or is
    /// not a request: no response is sent then (RFC 3417 §8 agents drop malformed messages).
    pub fn handle(&self, datagram: &[u8]) -> Result<AgentReply, SnmpError> {
        let req = Message::decode(datagram)?;
        let reset_now = Oid::from(snmp::DOCS_DEV_RESET_NOW);
        let rw = req.community == self.rw_community;
        let ro = self.ro_community.as_deref() == Some(&req.community[..]);
        let refuse = |status: ErrorStatus, index: usize| {
            let index = i32::try_from(index).unwrap_or(i32::MAX);
            let resp = req.response(status, index, req.pdu.varbinds.clone());
            Ok(AgentReply {
                response: Some(resp.encode()?),
                reset: false,
                refused: Some(status),
            })
        };
        if !rw && !ro {
            return refuse(ErrorStatus::AuthorizationError, 0);
        }
        match req.pdu.kind {
            PduKind::SetRequest => {
                if !rw {
                    return refuse(ErrorStatus::NoAccess, 1);
                }
                // RFC 3416 §4.2.5: check every varbind first; the SET happens for all or
                // none, and error-index names the first bad one (1-based).
                for (i, vb) in req.pdu.varbinds.iter().enumerate() {
                    let status = if vb.oid != reset_now {
                        Some(ErrorStatus::NoCreation)
                    } else {
                        match vb.value {
                            Value::Integer(1) => None,
                            Value::Integer(_) => Some(ErrorStatus::WrongValue),
                            _ => Some(ErrorStatus::WrongType),
                        }
                    };
                    if let Some(s) = status {
                        return refuse(s, i + 1);
                    }
                }
                let resp = req.response(ErrorStatus::NoError, 0, req.pdu.varbinds.clone());
                Ok(AgentReply {
                    response: Some(resp.encode()?),
                    reset: !req.pdu.varbinds.is_empty(),
                    refused: None,
                })
            }
            PduKind::GetRequest | PduKind::GetNextRequest => {
                let next = req.pdu.kind == PduKind::GetNextRequest;
                let vbs = req
                    .pdu
                    .varbinds
                    .iter()
                    .map(|vb| {
                        let (oid, value) = if next {
                            if vb.oid < reset_now {
                                (reset_now.clone(), Value::Integer(2))
                            } else {
                                (vb.oid.clone(), Value::EndOfMibView)
                            }
                        } else if vb.oid == reset_now {
                            (vb.oid.clone(), Value::Integer(2))
                        } else {
                            (vb.oid.clone(), Value::NoSuchObject)
                        };
                        VarBind { oid, value }
                    })
                    .collect();
                let resp = req.response(ErrorStatus::NoError, 0, vbs);
                Ok(AgentReply {
                    response: Some(resp.encode()?),
                    reset: false,
                    refused: None,
                })
            }
            PduKind::Response => Err(SnmpError::UnsupportedPdu(0xa2)),
        }
    }
}

/// The emulator's settings.
#[derive(Clone)]
pub struct EmulatorConfig {
    /// This modem's MAC: a FORCERENEW must carry it in `chaddr`.
    pub mac: [u8; 6],
    /// Where the DHCP client listens (port 68); `None` to run without it.
    pub dhcp_listen: Option<SocketAddr>,
    /// Where the SNMP agent listens (port 161); `None` to run without it.
    pub snmp_listen: Option<SocketAddr>,
    /// RFC 6704 reconfigure key the emulated client got in its DHCPACK.
    pub reconfigure_key: Option<[u8; DIGEST_LEN]>,
    /// RFC 3118 delayed-authentication secret ID and key.
    pub delayed: Option<(u32, Vec<u8>)>,
    /// Replay counter of the DHCPACK that carried the key: FORCERENEWs must exceed it.
    pub initial_replay: Option<u64>,
    pub agent: Agent,
}

impl std::fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("mac", &self.mac)
            .field("dhcp_listen", &self.dhcp_listen)
            .field("snmp_listen", &self.snmp_listen)
            .field(
                "reconfigure_key",
                &self.reconfigure_key.map(|_| "<redacted>"),
            )
            .field("delayed", &self.delayed.as_ref().map(|(id, _)| id))
            .field("initial_replay", &self.initial_replay)
            .finish_non_exhaustive()
    }
}

/// A running emulator: its tasks stop when it is dropped.
pub struct Emulator {
    /// The bound DHCP client address, if enabled.
    pub dhcp_addr: Option<SocketAddr>,
    /// The bound SNMP agent address, if enabled.
    pub snmp_addr: Option<SocketAddr>,
    pub stats: Arc<EmulatorStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Emulator {
    /// Bind the sockets (so errors such as a port in use come back here), then spawn one task
    /// per socket. Accepted triggers go to `triggers`.
    pub async fn start(
        cfg: EmulatorConfig,
        triggers: mpsc::UnboundedSender<RebootTrigger>,
    ) -> io::Result<Emulator> {
        let stats = Arc::new(EmulatorStats::default());
        let mut tasks = Vec::new();
        let mut dhcp_addr = None;
        let mut snmp_addr = None;
        if let Some(addr) = cfg.dhcp_listen {
            let sock = UdpSocket::bind(addr).await?;
            dhcp_addr = Some(sock.local_addr()?);
            tasks.push(tokio::spawn(dhcp_task(
                sock,
                cfg.clone(),
                stats.clone(),
                triggers.clone(),
            )));
        }
        if let Some(addr) = cfg.snmp_listen {
            let sock = UdpSocket::bind(addr).await?;
            snmp_addr = Some(sock.local_addr()?);
            tasks.push(tokio::spawn(snmp_task(
                sock,
                cfg.agent.clone(),
                stats.clone(),
                triggers,
            )));
        }
        Ok(Emulator {
            dhcp_addr,
            snmp_addr,
            stats,
            tasks,
        })
    }
}

async fn dhcp_task(
    sock: UdpSocket,
    cfg: EmulatorConfig,
    stats: Arc<EmulatorStats>,
    triggers: mpsc::UnboundedSender<RebootTrigger>,
) {
    let mut window = cfg
        .initial_replay
        .map_or_else(ReplayWindow::default, ReplayWindow::starting_at);
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "emulator: DHCP socket receive failed");
                return;
            }
        };
        let keys = ClientKeys {
            reconfigure_key: cfg.reconfigure_key.as_ref(),
            delayed: cfg.delayed.as_ref().map(|(id, k)| (*id, &k[..])),
        };
        match dhcp::verify_forcerenew(&buf[..n], &cfg.mac, keys, &mut window) {
            Ok(ok) => {
                stats.forcerenew_accepted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, server_id = %ok.server_id, replay = ok.replay, "emulator: FORCERENEW accepted");
                let _ = triggers.send(RebootTrigger {
                    method: TriggerMethod::ForceRenew,
                    at: SystemTime::now(),
                    peer,
                });
            }
            Err(reason) => {
                stats.forcerenew_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, %reason, "emulator: FORCERENEW rejected");
                stats.reject(Rejection::ForceRenew(reason));
            }
        }
    }
}

async fn snmp_task(
    sock: UdpSocket,
    agent: Agent,
    stats: Arc<EmulatorStats>,
    triggers: mpsc::UnboundedSender<RebootTrigger>,
) {
    let mut buf = vec![0u8; snmp::MAX_MESSAGE];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "emulator: SNMP socket receive failed");
                return;
            }
        };
        let reply = match agent.handle(&buf[..n]) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "emulator: SNMP datagram dropped");
                stats.snmp_rejected.fetch_add(1, Ordering::Relaxed);
                stats.reject(Rejection::SnmpUndecodable(e));
                continue;
            }
        };
        if let Some(status) = reply.refused {
            tracing::warn!(%peer, %status, "emulator: SNMP request refused");
            stats.snmp_rejected.fetch_add(1, Ordering::Relaxed);
            stats.reject(Rejection::Snmp(status));
        } else if reply.reset {
            stats.snmp_resets.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.snmp_gets.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(resp) = &reply.response {
            if let Err(e) = sock.send_to(resp, peer).await {
                tracing::warn!(%peer, error = %e, "emulator: SNMP response not sent");
            }
        }
        if reply.reset {
            tracing::info!(%peer, "emulator: docsDevResetNow set");
            let _ = triggers.send(RebootTrigger {
                method: TriggerMethod::Snmp,
                at: SystemTime::now(),
                peer,
            });
        }
    }
}

/// Why the emulated modem fetched its configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FetchReason {
    /// Power-on (`--fetch-at-start`).
    Start,
    /// After an accepted FORCERENEW.
    ForceRenew,
    /// After an SNMP `SET docsDevResetNow.0 = 1`.
    Snmp,
}

impl From<TriggerMethod> for FetchReason {
    fn from(m: TriggerMethod) -> FetchReason {
        match m {
            TriggerMethod::ForceRenew => FetchReason::ForceRenew,
            TriggerMethod::Snmp => FetchReason::Snmp,
        }
    }
}

/// The keys a modem checks its configuration file with.
#[derive(Clone, Debug, Default)]
pub struct ModemKeys {
    /// The CMTS shared secret: when given, the CMTS MIC is checked too (a real CM cannot;
    /// the emulator can, to catch a controller that seals with the wrong secret).
    pub cmts_key: Option<CmtsKey>,
    /// When not empty, a valid signature by one of these keys is required.
    pub trusted: TrustedKeys,
}

/// Why a fetched configuration file was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigRejected {
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("{file}: {source}")]
    Invalid {
        file: String,
        #[source]
        source: ConfigFileError,
    },
}

/// Checks a configuration file's bytes as the emulated modem does: CM MIC (always), CMTS
/// MIC (with [`ModemKeys::cmts_key`]), signature (when [`ModemKeys::trusted`] is not empty),
/// then the settings ([`modem_config`]).
///
/// # Errors
/// The first check that fails: [`ConfigFileError::Mic`] names the MIC and offset,
/// [`ConfigFileError::Signature`] the key or the reason, other variants the setting.
pub fn check_config(bytes: &[u8], keys: &ModemKeys) -> Result<ModemConfig, ConfigFileError> {
    match &keys.cmts_key {
        Some(k) => docsis::verify_mics(bytes, k)?,
        None => docsis::verify_cm_mic(bytes)?,
    };
    let signed_by = if keys.trusted.is_empty() {
        None
    } else {
        Some(docsis::verify_signature(bytes, &keys.trusted)?)
    };
    let file = ConfigFile::decode(bytes).map_err(VerifyError::from)?;
    Ok(ModemConfig {
        signed_by,
        ..modem_config(&file)?
    })
}

/// The outcome of one fetch, printed as one JSON line.
#[derive(Debug)]
pub enum ConfigEvent {
    /// The file verified and is now applied.
    Applied {
        reason: FetchReason,
        file: String,
        bytes: usize,
        config: ModemConfig,
    },
    /// The fetch or a check failed; the previous configuration stays applied.
    Rejected {
        reason: FetchReason,
        file: String,
        error: ConfigRejected,
    },
}

impl ConfigEvent {
    /// `{"event":"config","method":…,"file":…,"bytes":N,"modem":…,"qos":{…},"signed_by":…}`
    /// or `{"event":"config_error","method":…,"file":…,"error":…}` (`signed_by` and `modem`
    /// are null when absent).
    #[must_use]
    pub fn to_json(&self) -> String {
        match self {
            ConfigEvent::Applied {
                reason,
                file,
                bytes,
                config,
            } => serde_json::json!({
                "event": "config",
                "method": reason,
                "file": file,
                "bytes": bytes,
                "modem": config.modem,
                "qos": config.qos,
                "signed_by": config.signed_by.map(|k| k.to_string()),
            }),
            ConfigEvent::Rejected {
                reason,
                file,
                error,
            } => serde_json::json!({
                "event": "config_error",
                "method": reason,
                "file": file,
                "error": error.to_string(),
            }),
        }
        .to_string()
    }
}

/// The emulated modem's configuration: what it applied last, and how it checks new files.
#[derive(Debug, Default)]
pub struct ModemState {
    pub keys: ModemKeys,
    /// The configuration in force; `None` until a file was accepted.
    pub applied: Option<ModemConfig>,
}

impl ModemState {
    /// A modem with nothing applied yet.
    #[must_use]
    pub fn new(keys: ModemKeys) -> ModemState {
        ModemState {
            keys,
            applied: None,
        }
    }

    /// Applies the result of a fetch of `file`: a file that passes [`check_config`] replaces
    /// the applied configuration; a failed fetch or check leaves it as it was.
    pub fn apply(
        &mut self,
        reason: FetchReason,
        file: &str,
        fetched: Result<Vec<u8>, FetchError>,
    ) -> ConfigEvent {
        let checked = fetched.map_err(ConfigRejected::from).and_then(|bytes| {
            check_config(&bytes, &self.keys)
                .map(|c| (bytes.len(), c))
                .map_err(|source| ConfigRejected::Invalid {
                    file: file.to_string(),
                    source,
                })
        });
        match checked {
            Ok((bytes, config)) => {
                self.applied = Some(config.clone());
                ConfigEvent::Applied {
                    reason,
                    file: file.to_string(),
                    bytes,
                    config,
                }
            }
            Err(error) => ConfigEvent::Rejected {
                reason,
                file: file.to_string(),
                error,
            },
        }
    }
}

/// Where and how the emulated modem fetches its configuration file.
#[derive(Clone, Debug)]
pub struct FetchSetup {
    /// The TFTP server (DHCP `siaddr`/option 66 on a real network).
    pub server: SocketAddr,
    /// The boot file name (DHCP `file`/option 67).
    pub file: String,
    pub keys: ModemKeys,
    pub client: ClientConfig,
    /// Fetch once before waiting for triggers, as a modem does at power-on.
    pub at_start: bool,
}

/// Fetches `setup.file` and applies it to `state`.
pub async fn fetch_and_apply(
    setup: &FetchSetup,
    state: &mut ModemState,
    reason: FetchReason,
) -> ConfigEvent {
    let fetched = fetch(setup.server, &setup.file, setup.client).await;
    state.apply(reason, &setup.file, fetched)
}

fn print_line(line: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("writing to stdout")?;
    out.flush().context("flushing stdout")
}

/// `shaper modem-emulator`: run until SIGINT/SIGTERM, printing one JSON line per accepted
/// trigger on stdout and, with `fetch`, one per configuration fetch that follows it (and one
/// at start with [`FetchSetup::at_start`]).
pub async fn run_printing(cfg: EmulatorConfig, fetch: Option<FetchSetup>) -> anyhow::Result<()> {
    use anyhow::Context;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let emu = Emulator::start(cfg.clone(), tx)
        .await
        .with_context(|| format!("binding {:?} / {:?}", cfg.dhcp_listen, cfg.snmp_listen))?;
    tracing::info!(dhcp = ?emu.dhcp_addr, snmp = ?emu.snmp_addr, "modem emulator listening");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut state = ModemState::new(fetch.as_ref().map(|f| f.keys.clone()).unwrap_or_default());
    if let Some(setup) = fetch.as_ref().filter(|f| f.at_start) {
        let ev = fetch_and_apply(setup, &mut state, FetchReason::Start).await;
        print_line(&ev.to_json())?;
    }
    loop {
        tokio::select! {
            t = rx.recv() => {
                let Some(t) = t else { break };
                print_line(&t.to_json())?;
                if let Some(setup) = &fetch {
                    let ev = fetch_and_apply(setup, &mut state, t.method.into()).await;
                    if let ConfigEvent::Rejected { error, .. } = &ev {
                        tracing::warn!(%error, "emulator: configuration refused; the previous one stays applied");
                    }
                    print_line(&ev.to_json())?;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    drop(emu);
    Ok(())
}

/// Flags of `shaper modem-emulator`.
#[derive(clap::Args, Clone, Debug)]
pub struct EmulatorArgs {
    /// The emulated modem's MAC (a FORCERENEW must carry it in chaddr).
    #[arg(long, value_parser = parse_mac_arg)]
    pub mac: [u8; 6],
    /// DHCP client address to listen on for FORCERENEW.
    #[arg(long, default_value = "0.0.0.0:68")]
    pub dhcp_listen: SocketAddr,
    /// SNMP agent address to listen on.
    #[arg(long, default_value = "0.0.0.0:161")]
    pub snmp_listen: SocketAddr,
    /// RFC 6704 reconfigure key, 32 hex digits (without it every FORCERENEW is refused).
    #[arg(long, value_name = "HEX", value_parser = parse_key_hex)]
    pub forcerenew_key: Option<[u8; DIGEST_LEN]>,
    /// Only accept FORCERENEWs with a replay counter above this (that of the DHCPACK).
    #[arg(long, value_name = "N")]
    pub initial_replay: Option<u64>,
    /// SNMP community allowed to SET docsDevResetNow.
    #[arg(long, default_value = "private")]
    pub community: String,
    /// SNMP community allowed only to read (a SET with it gets noAccess).
    #[arg(long)]
    pub ro_community: Option<String>,
    /// TFTP server to fetch the configuration file from after each accepted reboot trigger.
    #[arg(long, value_name = "ADDR:PORT", requires = "config_file")]
    pub tftp_server: Option<SocketAddr>,
    /// The modem's boot file name (a DHCP server would hand it out).
    #[arg(long, value_name = "NAME", requires = "tftp_server")]
    pub config_file: Option<String>,
    /// Check the CMTS MIC too, with the shared secret in this file (a real CM checks only the
    /// CM MIC).
    #[arg(long, value_name = "PATH", requires = "tftp_server")]
    pub cmts_key_file: Option<PathBuf>,
    /// A trusted Ed25519 public key file (`shaper modem-config keygen`); repeatable. When
    /// given, the file must be signed by one of them.
    #[arg(long, value_name = "PATH", requires = "tftp_server")]
    pub trusted_key: Vec<PathBuf>,
    /// Fetch the configuration file once at start, before any trigger.
    #[arg(long, requires = "tftp_server")]
    pub fetch_at_start: bool,
}

fn parse_mac_arg(s: &str) -> Result<[u8; 6], String> {
    super::reboot::parse_mac(s).map_err(|e| e.to_string())
}

/// 32 hex digits to a 16-byte key.
pub fn parse_key_hex(s: &str) -> Result<[u8; DIGEST_LEN], String> {
    let s = s.trim();
    if s.len() != 2 * DIGEST_LEN || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("expected {} hex digits", 2 * DIGEST_LEN));
    }
    let mut k = [0u8; DIGEST_LEN];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(k)
}

impl EmulatorArgs {
    /// The emulator configuration these flags describe.
    #[must_use]
    pub fn config(&self) -> EmulatorConfig {
        let EmulatorArgs {
            mac,
            dhcp_listen,
            snmp_listen,
            forcerenew_key,
            initial_replay,
            community,
            ro_community,
            ..
        } = self;
        EmulatorConfig {
            mac: *mac,
            dhcp_listen: Some(*dhcp_listen),
            snmp_listen: Some(*snmp_listen),
            reconfigure_key: *forcerenew_key,
            delayed: None,
            initial_replay: *initial_replay,
            agent: Agent {
                rw_community: community.as_bytes().to_vec(),
                ro_community: ro_community.as_ref().map(|c| c.as_bytes().to_vec()),
            },
        }
    }

    /// The fetch setup these flags describe (`None` without `--tftp-server`); reads the key
    /// files.
    ///
    /// # Errors
    /// A key file that cannot be read or holds no valid key, naming the file.
    pub fn fetch_setup(&self) -> anyhow::Result<Option<FetchSetup>> {
        let (Some(server), Some(file)) = (self.tftp_server, self.config_file.as_ref()) else {
            return Ok(None);
        };
        let cmts_key = self
            .cmts_key_file
            .as_deref()
            .map(super::keys::cmts_key)
            .transpose()?;
        let mut trusted = TrustedKeys::new();
        for p in &self.trusted_key {
            trusted.add(super::keys::public(p)?);
        }
        Ok(Some(FetchSetup {
            server,
            file: file.clone(),
            keys: ModemKeys { cmts_key, trusted },
            client: ClientConfig::default(),
            at_start: self.fetch_at_start,
        }))
    }
}

/// Entry point of `shaper modem-emulator`: a current-thread runtime running
/// [`run_printing`].
pub fn run_cli(args: &EmulatorArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let fetch = args.fetch_setup()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?
        .block_on(run_printing(args.config(), fetch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Agent {
        Agent {
            rw_community: b"private".to_vec(),
            ro_community: Some(b"public".to_vec()),
        }
    }

    fn reset_vb(v: Value) -> VarBind {
        VarBind {
            oid: Oid::from(snmp::DOCS_DEV_RESET_NOW),
            value: v,
        }
    }

    fn ask(req: &Message) -> (Message, AgentReply) {
        let r = agent().handle(&req.encode().unwrap()).unwrap();
        (Message::decode(r.response.as_ref().unwrap()).unwrap(), r)
    }

    #[test]
    fn agent_set_rules() {
        let (resp, r) = ask(&Message::set_request(
            b"private",
            9,
            vec![reset_vb(Value::Integer(1))],
        ));
        assert!(r.reset);
        assert_eq!(
            resp.check_response(9).unwrap(),
            &[reset_vb(Value::Integer(1))]
        );

        for (community, value, status, index) in [
            (
                &b"private"[..],
                Value::Integer(2),
                ErrorStatus::WrongValue,
                1,
            ),
            (
                b"private",
                Value::OctetString(b"1".to_vec()),
                ErrorStatus::WrongType,
                1,
            ),
            (b"public", Value::Integer(1), ErrorStatus::NoAccess, 1),
            (
                b"guess",
                Value::Integer(1),
                ErrorStatus::AuthorizationError,
                0,
            ),
        ] {
            let (resp, r) = ask(&Message::set_request(community, 3, vec![reset_vb(value)]));
            assert!(!r.reset);
            assert_eq!(r.refused, Some(status));
            assert_eq!(resp.pdu.error_status, status);
            assert_eq!(resp.pdu.error_index, index);
            assert_eq!(resp.pdu.request_id, 3);
        }

        // All or nothing: a bad second varbind cancels the reset and is named by index 2.
        let other = VarBind {
            oid: Oid(vec![1, 3, 6, 1, 2, 1, 1, 5, 0]),
            value: Value::OctetString(b"x".to_vec()),
        };
        let (resp, r) = ask(&Message::set_request(
            b"private",
            4,
            vec![reset_vb(Value::Integer(1)), other],
        ));
        assert!(!r.reset);
        assert_eq!(resp.pdu.error_status, ErrorStatus::NoCreation);
        assert_eq!(resp.pdu.error_index, 2);
    }

    #[test]
    fn agent_get_returns_false() {
        let oid = Oid::from(snmp::DOCS_DEV_RESET_NOW);
        let sys = Oid(vec![1, 3, 6, 1, 2, 1, 1, 1, 0]);
        let (resp, r) = ask(&Message::get_request(
            b"public",
            5,
            &[oid.clone(), sys.clone()],
        ));
        assert!(!r.reset && r.refused.is_none());
        assert_eq!(
            resp.check_response(5).unwrap(),
            &[
                reset_vb(Value::Integer(2)),
                VarBind {
                    oid: sys.clone(),
                    value: Value::NoSuchObject
                }
            ]
        );
        let mut next = Message::get_request(b"public", 6, &[sys, oid]);
        next.pdu.kind = PduKind::GetNextRequest;
        let (resp, _) = ask(&next);
        assert_eq!(resp.pdu.varbinds[0], reset_vb(Value::Integer(2)));
        assert_eq!(resp.pdu.varbinds[1].value, Value::EndOfMibView);
    }

    #[test]
    fn agent_drops_garbage_and_responses() {
        assert!(agent().handle(b"\x30\x03\x02\x01").is_err());
        let resp =
            Message::set_request(b"private", 1, vec![]).response(ErrorStatus::NoError, 0, vec![]);
        assert_eq!(
            agent().handle(&resp.encode().unwrap()),
            Err(SnmpError::UnsupportedPdu(0xa2))
        );
    }

    #[test]
    fn key_hex() {
        assert_eq!(
            parse_key_hex("000102030405060708090a0b0c0d0e0F").unwrap(),
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
        );
        assert!(parse_key_hex("0001").is_err());
        assert!(parse_key_hex("zz0102030405060708090a0b0c0d0e0f").is_err());
    }

    mod config {
        use super::super::*;
        use crate::modem::configfile::{BuildOptions, build};
        use crate::proto::docsis::Signer;
        use crate::provision::QosLevel;

        fn cmts() -> CmtsKey {
            CmtsKey::new(b"lab-cmts-secret")
        }

        fn signer(n: u8) -> Signer {
            Signer::from_seed(&[n; 32])
        }

        fn qos(down: u64) -> QosLevel {
            QosLevel {
                max_down_bps: Some(down),
                max_up_bps: Some(10_000_000),
                ..QosLevel::default()
            }
        }

        fn file(down: u64, s: Option<&Signer>) -> Vec<u8> {
            build(
                "cm1",
                &qos(down),
                &BuildOptions {
                    cmts_key: &cmts(),
                    signer: s,
                    max_cpe: 4,
                },
            )
            .unwrap()
        }

        fn keys(cmts_key: Option<CmtsKey>, trusted: &[&Signer]) -> ModemKeys {
            let mut t = TrustedKeys::new();
            for s in trusted {
                t.add(s.verifying_key());
            }
            ModemKeys {
                cmts_key,
                trusted: t,
            }
        }

        fn json(ev: &ConfigEvent) -> serde_json::Value {
            serde_json::from_str(&ev.to_json()).unwrap()
        }

        #[test]
        fn valid_file_is_applied_and_printed_with_its_qos() {
            let s = signer(1);
            let bytes = file(40_000_000, Some(&s));
            let len = bytes.len();
            let mut m = ModemState::new(keys(Some(cmts()), &[&s]));
            let ev = m.apply(FetchReason::ForceRenew, "abc.cfg", Ok(bytes));
            let v = json(&ev);
            assert_eq!(v["event"], "config", "{v}");
            assert_eq!(v["method"], "forcerenew");
            assert_eq!(v["file"], "abc.cfg");
            assert_eq!(v["bytes"], len);
            assert_eq!(v["modem"], "cm1");
            assert_eq!(v["signed_by"], s.key_id().to_string());
            let q: QosLevel = serde_json::from_value(v["qos"].clone()).unwrap();
            assert_eq!(q, qos(40_000_000));
            assert_eq!(m.applied.as_ref().unwrap().qos, qos(40_000_000));
            assert_eq!(m.applied.as_ref().unwrap().max_cpe, Some(4));

            // Unsigned file, no keys at all: the CM MIC alone is checked; signed_by is null.
            let mut m = ModemState::new(ModemKeys::default());
            let v = json(&m.apply(FetchReason::Start, "x.cfg", Ok(file(10_000_000, None))));
            assert_eq!(v["event"], "config", "{v}");
            assert_eq!(v["method"], "start");
            assert_eq!(v["signed_by"], serde_json::Value::Null);
            assert_eq!(v["qos"]["max_down_bps"], 10_000_000);
        }

        #[test]
        fn corrupted_byte_is_refused_naming_the_cm_mic_and_the_previous_config_stays() {
            let mut m = ModemState::new(ModemKeys::default());
            m.apply(FetchReason::Start, "a.cfg", Ok(file(10_000_000, None)));
            let mut bad = file(40_000_000, None);
            // Flip a bit inside the downstream service flow's max sustained rate.
            let pos = bad
                .windows(4)
                .position(|w| w == 40_000_000u32.to_be_bytes())
                .unwrap();
            bad[pos + 3] ^= 1;
            let ev = m.apply(FetchReason::Snmp, "a.cfg", Ok(bad));
            let v = json(&ev);
            assert_eq!(v["event"], "config_error", "{v}");
            assert_eq!(v["method"], "snmp");
            assert_eq!(v["file"], "a.cfg");
            let err = v["error"].as_str().unwrap();
            assert!(err.contains("CM MIC") && err.contains("mismatch"), "{err}");
            assert!(matches!(
                ev,
                ConfigEvent::Rejected {
                    error: ConfigRejected::Invalid {
                        source: ConfigFileError::Mic(VerifyError::Mismatch {
                            mic: docsis::Mic::Cm,
                            ..
                        }),
                        ..
                    },
                    ..
                }
            ));
            assert_eq!(
                m.applied.as_ref().unwrap().qos.max_down_bps,
                Some(10_000_000)
            );
        }

        #[test]
        fn cmts_mic_is_checked_only_with_the_shared_secret() {
            let bytes = file(40_000_000, None);
            // A CM without the secret accepts it.
            assert!(check_config(&bytes, &keys(None, &[])).is_ok());
            // With the wrong secret the CMTS MIC fails.
            let e = check_config(&bytes, &keys(Some(CmtsKey::new(b"other")), &[])).unwrap_err();
            assert!(
                matches!(
                    e,
                    ConfigFileError::Mic(VerifyError::Mismatch {
                        mic: docsis::Mic::Cmts,
                        ..
                    })
                ),
                "{e}"
            );
            assert!(e.to_string().contains("CMTS MIC"), "{e}");
        }

        #[test]
        fn wrong_or_missing_signature_is_refused() {
            let (good, other) = (signer(1), signer(2));
            let mut m = ModemState::new(keys(Some(cmts()), &[&good]));

            let ev = m.apply(
                FetchReason::ForceRenew,
                "b.cfg",
                Ok(file(40_000_000, Some(&other))),
            );
            let v = json(&ev);
            assert_eq!(v["event"], "config_error", "{v}");
            let err = v["error"].as_str().unwrap();
            assert!(
                err.contains("signature") && err.contains(&other.key_id().to_string()),
                "{err}"
            );

            let v = json(&m.apply(FetchReason::ForceRenew, "b.cfg", Ok(file(40_000_000, None))));
            assert_eq!(v["event"], "config_error", "{v}");
            assert!(
                v["error"].as_str().unwrap().contains("unsigned file"),
                "{v}"
            );
            assert!(m.applied.is_none());
        }

        #[test]
        fn failed_fetch_is_a_config_error() {
            let mut m = ModemState::new(ModemKeys::default());
            let err = FetchError::Io(std::io::Error::from(std::io::ErrorKind::AddrNotAvailable));
            let v = json(&m.apply(FetchReason::Snmp, "c.cfg", Err(err)));
            assert_eq!(v["event"], "config_error", "{v}");
            assert!(v["error"].as_str().unwrap().contains("TFTP socket"), "{v}");
            assert!(m.applied.is_none());
        }
    }

    #[test]
    fn trigger_json_line() {
        let t = RebootTrigger {
            method: TriggerMethod::ForceRenew,
            at: UNIX_EPOCH + std::time::Duration::from_millis(1234),
            peer: "127.0.0.1:67".parse().unwrap(),
        };
        let v: serde_json::Value = serde_json::from_str(&t.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event":"reboot","method":"forcerenew","at_ms":1234,"peer":"127.0.0.1:67"})
        );
    }
}
