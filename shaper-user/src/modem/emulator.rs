//! The receiving end of a reboot, for the lab: a modem emulator that accepts an authenticated
//! FORCERENEW on UDP 68 and an SNMP `SET docsDevResetNow.0 = 1` on UDP 161, and reports each
//! accepted trigger as a [`RebootTrigger`] on a channel (DESIGN §1.4, PROTOCOLS.md §3).
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

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::proto::auth::DIGEST_LEN;
use crate::proto::dhcp::{self, ClientKeys, ForceRenewReject, ReplayWindow};
use crate::proto::snmp::{self, ErrorStatus, Message, Oid, PduKind, SnmpError, Value, VarBind};

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

/// `shaper modem-emulator`: run until SIGINT/SIGTERM, printing one JSON line per accepted
/// trigger on stdout (the TFTP re-fetch is to follow the trigger).
pub async fn run_printing(cfg: EmulatorConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let emu = Emulator::start(cfg.clone(), tx)
        .await
        .with_context(|| format!("binding {:?} / {:?}", cfg.dhcp_listen, cfg.snmp_listen))?;
    tracing::info!(dhcp = ?emu.dhcp_addr, snmp = ?emu.snmp_addr, "modem emulator listening");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            t = rx.recv() => {
                let Some(t) = t else { break };
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", t.to_json()).context("writing to stdout")?;
                out.flush().context("flushing stdout")?;
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
}

/// Entry point of `shaper modem-emulator`: a current-thread runtime running
/// [`run_printing`].
pub fn run_cli(args: &EmulatorArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?
        .block_on(run_printing(args.config()))
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
