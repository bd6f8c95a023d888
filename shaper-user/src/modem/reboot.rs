//! Making a modem re-fetch its configuration (docs/ARCHITECTURE.md §1.4): the IO shells around
//! [`crate::proto::snmp`] and [`crate::proto::dhcp`], an operator command hook, and a
//! [`Rebooter`] that picks the method per modem and retries with exponential backoff.
//!
//! - [`SnmpReset`]: `SET docsDevResetNow.0 = INTEGER 1` (RFC 4639), SNMPv2c over UDP, and a
//!   check of the Response's request-id and error-status (RFC 3416 §4.2.5). Some libraries
//!   ignore error-status (docs/PROTOCOLS.md §3: csnmp returned Ok on noAccess); we never do.
//! - [`ForceRenewSender`]: an authenticated FORCERENEW (RFC 3203, RFC 3118 / RFC 6704) unicast
//!   from port 67 to the client on port 68.
//! - [`CommandHook`]: an operator's program (a CMTS CLI wrapper, a TR-069 ACS call) with the
//!   modem's id, MAC and IP in its environment.
//!
//! Time comes from tokio (`tokio::time`), so tests can pause and advance it.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::controller::ModemBinding;
use crate::proto::auth::DIGEST_LEN;
use crate::proto::dhcp::{self, ForceRenew, ForceRenewAuth};
use crate::proto::snmp::{self, Message, Oid, ReplyError, SnmpError, Value, VarBind};

/// A MAC address in the usual `aa:bb:cc:dd:ee:ff` form.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parse `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Result<[u8; 6], MacParseError> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(MacParseError(s.to_string()));
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(MacParseError(s.to_string()));
        }
        *m = u8::from_str_radix(p, 16).map_err(|_| MacParseError(s.to_string()))?;
    }
    Ok(mac)
}

/// A string that is not a MAC address.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")]
pub struct MacParseError(pub String);

/// The key a modem's FORCERENEWs are signed with.
#[derive(Clone, PartialEq, Eq)]
pub enum ForceRenewKey {
    /// RFC 6704 reconfigure key, as handed to the modem in its DHCPACK.
    Reconfigure([u8; DIGEST_LEN]),
    /// RFC 3118 delayed-authentication secret and its ID.
    Delayed { secret_id: u32, key: Vec<u8> },
}

impl ForceRenewKey {
    fn auth(&self) -> ForceRenewAuth<'_> {
        match self {
            ForceRenewKey::Reconfigure(k) => ForceRenewAuth::ReconfigureKey(k),
            ForceRenewKey::Delayed { secret_id, key } => ForceRenewAuth::Delayed {
                secret_id: *secret_id,
                key,
            },
        }
    }
}

impl fmt::Debug for ForceRenewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForceRenewKey::Reconfigure(_) => f.write_str("Reconfigure(<redacted>)"),
            ForceRenewKey::Delayed { secret_id, .. } => {
                write!(f, "Delayed {{ secret_id: {secret_id}, key: <redacted> }}")
            }
        }
    }
}

/// How one modem is made to reboot (docs/ARCHITECTURE.md §1.4). DOCSIS modems need a reset to
/// re-register
/// with a new configuration file (docs/PROTOCOLS.md §3), so SNMP is the usual choice for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebootMethod {
    /// SNMPv2c SET of docsDevResetNow with this write community.
    Snmp { community: String },
    /// Authenticated FORCERENEW. `xid` is what the client expects (dhcpcd matches it against
    /// its current xid; docs/PROTOCOLS.md §3).
    ForceRenew { key: ForceRenewKey, xid: u32 },
    /// The operator's [`CommandHook`].
    Command,
}

/// The name a method is recorded under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodName {
    Snmp,
    ForceRenew,
    Command,
}

impl RebootMethod {
    /// The recorded name.
    #[must_use]
    pub fn name(&self) -> MethodName {
        match self {
            RebootMethod::Snmp { .. } => MethodName::Snmp,
            RebootMethod::ForceRenew { .. } => MethodName::ForceRenew,
            RebootMethod::Command => MethodName::Command,
        }
    }
}

/// A modem to reboot: the controller's [`ModemBinding`] does not carry a MAC or a reboot
/// method, so those come from the provisioning data alongside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebootTarget {
    pub modem: String,
    pub mac: [u8; 6],
    /// The modem's management address (its DHCP lease).
    pub ip: Ipv4Addr,
    pub method: RebootMethod,
}

/// A binding without an IPv4 address cannot be reached by SNMP or FORCERENEW.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("modem {0} has no IPv4 address to reboot it at")]
pub struct NoIpv4(pub String);

impl RebootTarget {
    /// The target for `binding`: its first IPv4 /32 is the management address.
    pub fn from_binding(
        binding: &ModemBinding,
        mac: [u8; 6],
        method: RebootMethod,
    ) -> Result<RebootTarget, NoIpv4> {
        let ip = binding
            .addrs
            .iter()
            .find_map(|k| match k.addr {
                IpAddr::V4(a) if k.len == 32 => Some(a),
                _ => None,
            })
            .ok_or_else(|| NoIpv4(binding.modem.clone()))?;
        Ok(RebootTarget {
            modem: binding.modem.clone(),
            mac,
            ip,
            method,
        })
    }
}

/// Why an SNMP reset failed.
#[derive(Debug, Error)]
pub enum SnmpResetError {
    #[error("SNMP socket {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no response from SNMP agent {agent} within {after:?}{}", if *.mismatched > 0 { format!(" ({} datagrams with another request-id or undecodable ignored)", .mismatched) } else { String::new() })]
    Timeout {
        agent: SocketAddr,
        after: Duration,
        mismatched: u32,
    },
    #[error("SNMP agent {agent} unreachable: nothing listens there (ICMP port unreachable)")]
    Unreachable { agent: SocketAddr },
    #[error("encoding the SetRequest: {0}")]
    Encode(#[source] SnmpError),
    #[error("SNMP agent {agent} refused docsDevResetNow: {source}")]
    Refused {
        agent: SocketAddr,
        #[source]
        source: ReplyError,
    },
}

impl SnmpResetError {
    /// The agent's error-status, when it answered one.
    #[must_use]
    pub fn status(&self) -> Option<snmp::ErrorStatus> {
        match self {
            SnmpResetError::Refused {
                source: ReplyError::Status { status, .. },
                ..
            } => Some(*status),
            _ => None,
        }
    }
}

/// SNMPv2c `SET docsDevResetNow.0 = INTEGER 1` (RFC 4639, RFC 3416 §4.2.5).
#[derive(Clone, Debug)]
pub struct SnmpReset {
    /// Agent UDP port (161, RFC 3417 §3.1).
    pub port: u16,
    /// How long to wait for the Response to one SetRequest.
    pub timeout: Duration,
}

impl Default for SnmpReset {
    fn default() -> SnmpReset {
        SnmpReset {
            port: 161,
            timeout: Duration::from_secs(2),
        }
    }
}

impl SnmpReset {
    /// Send one SetRequest to `ip` and wait for its Response. Datagrams that do not decode or
    /// carry another request-id (a late answer to an earlier try) are skipped; a Response
    /// with an error-status other than noError is a failure naming it.
    pub async fn reset(
        &self,
        ip: IpAddr,
        community: &[u8],
        request_id: i32,
    ) -> Result<(), SnmpResetError> {
        let agent = SocketAddr::new(ip, self.port);
        let req = Message::set_request(
            community,
            request_id,
            vec![VarBind {
                oid: Oid::from(snmp::DOCS_DEV_RESET_NOW),
                value: Value::Integer(1),
            }],
        )
        .encode()
        .map_err(SnmpResetError::Encode)?;
        let bind: SocketAddr = match ip {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let io = |op| move |source| SnmpResetError::Io { op, source };
        let sock = UdpSocket::bind(bind).await.map_err(io("bind"))?;
        sock.connect(agent).await.map_err(io("connect"))?;
        sock.send(&req).await.map_err(io("send"))?;
        let mut mismatched = 0;
        let mut buf = vec![0u8; snmp::MAX_MESSAGE];
        let deadline = Instant::now() + self.timeout;
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => {
                    return Err(SnmpResetError::Timeout {
                        agent,
                        after: self.timeout,
                        mismatched,
                    });
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(SnmpResetError::Unreachable { agent });
                }
                Ok(r) => r.map_err(io("recv"))?,
            };
            let Ok(resp) = Message::decode(&buf[..n]) else {
                mismatched += 1;
                continue;
            };
            match resp.check_response(request_id) {
                Ok(_) => return Ok(()),
                Err(ReplyError::RequestIdMismatch { .. }) => mismatched += 1,
                Err(source) => return Err(SnmpResetError::Refused { agent, source }),
            }
        }
    }
}

/// Why a FORCERENEW could not be sent.
#[derive(Debug, Error)]
pub enum ForceRenewError {
    #[error("binding the DHCP server socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("sending FORCERENEW to {to}: {source}")]
    Send {
        to: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no FORCERENEW sender is configured")]
    NotConfigured,
}

/// Sends authenticated FORCERENEWs (RFC 3203 §4): unicast, source port 67 by default.
#[derive(Clone, Debug)]
pub struct ForceRenewSender {
    /// Local address to send from; port 67 in production (needs privilege), any in tests.
    pub source: SocketAddr,
    /// Option 54 (the server identifier the client got its lease from).
    pub server_id: Ipv4Addr,
    /// The client's port (68, RFC 2131 §4.1).
    pub client_port: u16,
}

impl ForceRenewSender {
    /// The production sender: from `0.0.0.0:67` (RFC 2131 §4.1; needs `CAP_NET_BIND_SERVICE`)
    /// to the client's port 68, with `server_id` as option 54 — it must be the address the
    /// modem got its lease from.
    #[must_use]
    pub fn standard(server_id: Ipv4Addr) -> ForceRenewSender {
        ForceRenewSender {
            source: (Ipv4Addr::UNSPECIFIED, dhcp::SERVER_PORT).into(),
            server_id,
            client_port: dhcp::CLIENT_PORT,
        }
    }

    /// Sign and send one FORCERENEW to `ip` for `mac`. `replay` must be greater than every
    /// counter this modem has seen (RFC 3118 §2, RDM 0); the caller persists it.
    pub async fn send(
        &self,
        mac: [u8; 6],
        ip: Ipv4Addr,
        key: &ForceRenewKey,
        xid: u32,
        replay: u64,
    ) -> Result<(), ForceRenewError> {
        let bytes = dhcp::encode_forcerenew(
            &ForceRenew {
                client_mac: mac,
                client_ip: ip,
                server_id: self.server_id,
                xid,
            },
            key.auth(),
            replay,
        );
        let sock = bind_reusable(self.source).map_err(|source| ForceRenewError::Bind {
            addr: self.source,
            source,
        })?;
        let to = SocketAddr::new(IpAddr::V4(ip), self.client_port);
        sock.send_to(&bytes, to)
            .await
            .map_err(|source| ForceRenewError::Send { to, source })?;
        Ok(())
    }
}

/// A non-blocking UDP socket bound to `addr` with `SO_REUSEADDR`; it only sends.
///
/// Without it, binding port 67 fails with EADDRINUSE while an earlier sender's socket is still
/// alive: closing it does not free the port when a `fork` elsewhere in the process (any child
/// being spawned) holds a copy of the descriptor until its `exec` (seen in the modem_reboot
/// tests). It also lets the sender share port 67 with a DHCP server socket that set it too.
fn bind_reusable(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// Why an operator hook failed.
#[derive(Debug, Error)]
pub enum HookError {
    #[error("no reboot command hook is configured")]
    NotConfigured,
    #[error("starting {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not finish within {after:?} (killed)")]
    Timeout { program: PathBuf, after: Duration },
    #[error("{program} exited with {status}: {stderr}")]
    Failed {
        program: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// An operator command run to reboot a modem. It gets `SHAPER_MODEM_ID`, `SHAPER_MODEM_MAC`
/// (`aa:bb:cc:dd:ee:ff`) and `SHAPER_MODEM_IP` in its environment; exit 0 is success.
#[derive(Clone, Debug)]
pub struct CommandHook {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The command is killed after this long.
    pub timeout: Duration,
}

impl CommandHook {
    /// Run the hook for `target` and return its exit code.
    pub async fn run(&self, target: &RebootTarget) -> Result<i32, HookError> {
        let child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .env("SHAPER_MODEM_ID", &target.modem)
            .env("SHAPER_MODEM_MAC", format_mac(&target.mac))
            .env("SHAPER_MODEM_IP", target.ip.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| HookError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Err(_) => {
                // Dropping the future drops the child: kill_on_drop kills it.
                return Err(HookError::Timeout {
                    program: self.program.clone(),
                    after: self.timeout,
                });
            }
            Ok(r) => r.map_err(|source| HookError::Spawn {
                program: self.program.clone(),
                source,
            })?,
        };
        if out.status.success() {
            Ok(0)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stderr = stderr.trim();
            let stderr: String = stderr.chars().take(500).collect();
            Err(HookError::Failed {
                program: self.program.clone(),
                status: out.status,
                stderr,
            })
        }
    }
}

/// One failed reboot attempt.
#[derive(Debug, Error)]
pub enum RebootError {
    #[error(transparent)]
    Snmp(#[from] SnmpResetError),
    #[error(transparent)]
    ForceRenew(#[from] ForceRenewError),
    #[error(transparent)]
    Hook(#[from] HookError),
}

impl RebootError {
    /// Whether trying again cannot help: missing configuration, or an SNMP agent's definite
    /// answer about the request itself (noAccess, wrongValue, authorizationError, …). genErr,
    /// resourceUnavailable, commitFailed and undoFailed (RFC 3416 §4.2.5) may pass, as may
    /// timeouts, socket errors and a failed or hung hook.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        use snmp::ErrorStatus as S;
        match self {
            RebootError::Snmp(e) => match e.status() {
                Some(S::GenErr | S::ResourceUnavailable | S::CommitFailed | S::UndoFailed) => false,
                Some(_) => true,
                None => matches!(e, SnmpResetError::Encode(_)),
            },
            RebootError::ForceRenew(e) => matches!(e, ForceRenewError::NotConfigured),
            RebootError::Hook(e) => matches!(e, HookError::NotConfigured),
        }
    }
}

/// Attempts and exponential backoff: the delay after attempt `n` (1-based) is
/// `base_delay * 2^(n-1)`, capped at `max_delay` (RFC 3203 §4 asks for backoff on retries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, at least 1.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based).
    #[must_use]
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .map_or(self.max_delay, |d| d.min(self.max_delay))
    }

    /// Run `f(attempt)` until it succeeds, fails [permanently](RebootError::is_permanent) or
    /// the attempts are used up, sleeping (tokio time) between tries. Returns the last result,
    /// the number of attempts and every error text.
    pub async fn run<F, Fut, T>(&self, mut f: F) -> (Result<T, RebootError>, u32, Vec<String>)
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, RebootError>>,
    {
        let attempts = self.attempts.max(1);
        let mut errors = Vec::new();
        let mut attempt = 1;
        loop {
            match f(attempt).await {
                Ok(v) => return (Ok(v), attempt, errors),
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "reboot attempt failed");
                    errors.push(e.to_string());
                    if attempt >= attempts || e.is_permanent() {
                        return (Err(e), attempt, errors);
                    }
                }
            }
            tokio::time::sleep(self.delay_after(attempt)).await;
            attempt += 1;
        }
    }
}

/// What happened when rebooting one modem: the record for the audit trail (JSON via serde).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootOutcome {
    pub modem: String,
    pub method: MethodName,
    pub ok: bool,
    pub attempts: u32,
    /// The error of the last attempt, if it failed.
    pub last_error: Option<String>,
    /// Every failed attempt's error, in order.
    pub errors: Vec<String>,
    /// From the first attempt's start to the last one's end (tokio time).
    pub duration_ms: u64,
    /// FORCERENEW: the highest replay counter sent; the caller persists it and passes a
    /// larger one next time.
    pub replay_counter: Option<u64>,
    /// Command hook: the exit code of the successful run.
    pub exit_code: Option<i32>,
}

/// Reboots modems by their configured method, with retries.
#[derive(Clone, Debug)]
pub struct Rebooter {
    pub snmp: SnmpReset,
    /// Needed for modems whose method is FORCERENEW.
    pub forcerenew: Option<ForceRenewSender>,
    /// Needed for modems whose method is the command hook.
    pub hook: Option<CommandHook>,
    pub retry: RetryPolicy,
}

impl Rebooter {
    /// Reboot `target`. For FORCERENEW, attempt `n` uses replay counter `replay_base + n - 1`
    /// so each retry is fresh (RFC 3118 §2): pass a `replay_base` above the last recorded
    /// [`RebootOutcome::replay_counter`] (a timestamp in ms does, if the clock never steps
    /// back). Never fails: failures are in the outcome.
    pub async fn reboot(&self, target: &RebootTarget, replay_base: u64) -> RebootOutcome {
        let start = Instant::now();
        let mut replay_counter = None;
        let mut exit_code = None;
        let (res, attempts, errors) = match &target.method {
            RebootMethod::Snmp { community } => {
                let (r, n, e) = self
                    .retry
                    .run(|_| async {
                        let id = rand::random::<i32>() & 0x7fff_ffff;
                        self.snmp
                            .reset(IpAddr::V4(target.ip), community.as_bytes(), id)
                            .await
                            .map_err(RebootError::from)
                    })
                    .await;
                (r, n, e)
            }
            RebootMethod::ForceRenew { key, xid } => {
                let (r, n, e) = self
                    .retry
                    .run(|attempt| {
                        let replay = replay_base.saturating_add(u64::from(attempt - 1));
                        replay_counter = Some(replay);
                        async move {
                            let sender = self
                                .forcerenew
                                .as_ref()
                                .ok_or(ForceRenewError::NotConfigured)?;
                            sender
                                .send(target.mac, target.ip, key, *xid, replay)
                                .await
                                .map_err(RebootError::from)
                        }
                    })
                    .await;
                (r, n, e)
            }
            RebootMethod::Command => {
                let (r, n, e) = self
                    .retry
                    .run(|_| async {
                        let hook = self.hook.as_ref().ok_or(HookError::NotConfigured)?;
                        hook.run(target).await.map_err(RebootError::from)
                    })
                    .await;
                if let Ok(code) = &r {
                    exit_code = Some(*code);
                }
                (r.map(|_| ()), n, e)
            }
        };
        let duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let outcome = RebootOutcome {
            modem: target.modem.clone(),
            method: target.method.name(),
            ok: res.is_ok(),
            attempts,
            last_error: res.err().map(|e| e.to_string()),
            errors,
            duration_ms,
            replay_counter,
            exit_code,
        };
        tracing::info!(
            modem = %outcome.modem,
            method = ?outcome.method,
            ok = outcome.ok,
            attempts = outcome.attempts,
            "modem reboot"
        );
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::proto::snmp::{ErrorStatus, PduKind};

    fn target(method: RebootMethod) -> RebootTarget {
        RebootTarget {
            modem: "cm-1".into(),
            mac: [0x02, 0, 0, 0, 0, 0x01],
            ip: Ipv4Addr::LOCALHOST,
            method,
        }
    }

    #[test]
    fn mac_text() {
        let m = parse_mac("02:00:0A:ff:00:01").unwrap();
        assert_eq!(m, [2, 0, 10, 255, 0, 1]);
        assert_eq!(format_mac(&m), "02:00:0a:ff:00:01");
        assert_eq!(parse_mac("02-00-0a-ff-00-01").unwrap(), m);
        assert!(parse_mac("02:00:0a:ff:00").is_err());
        assert!(parse_mac("02:00:0a:ff:00:1").is_err());
        assert!(parse_mac("02:00:0a:ff:00:zz").is_err());
    }

    #[test]
    fn target_from_binding_takes_first_ipv4() {
        use crate::policy::SubscriberKey;
        let mut b = ModemBinding {
            modem: "cm-7".into(),
            addrs: vec![SubscriberKey {
                addr: "2001:db8::1".parse().unwrap(),
                len: 128,
            }],
            up_class: 1,
            down_class: 2,
            htb_minor_down: None,
            htb_minor_up: None,
        };
        assert_eq!(
            RebootTarget::from_binding(&b, [0; 6], RebootMethod::Command),
            Err(NoIpv4("cm-7".into()))
        );
        b.addrs.push(SubscriberKey {
            addr: "198.18.0.7".parse().unwrap(),
            len: 32,
        });
        let t = RebootTarget::from_binding(&b, [0; 6], RebootMethod::Command).unwrap();
        assert_eq!(t.ip, Ipv4Addr::new(198, 18, 0, 7));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let d: Vec<u64> = (1..=6)
            .map(|a| u64::try_from(p.delay_after(a).as_millis()).unwrap())
            .collect();
        assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.delay_after(200), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_sleeps_between_attempts_in_tokio_time() {
        let p = RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        };
        let start = Instant::now();
        let calls = Arc::new(AtomicU32::new(0));
        let (r, n, errors) = p
            .run(|attempt| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    if attempt < 3 {
                        Err(hung())
                    } else {
                        Ok(attempt)
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(n, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(errors.len(), 2);
        // 1 s after attempt 1, 2 s after attempt 2.
        assert_eq!(start.elapsed(), Duration::from_secs(3));

        let start = Instant::now();
        let (r, n, errors) = p.run(|_| async { Err::<(), _>(hung()) }).await;
        assert!(matches!(
            r,
            Err(RebootError::Hook(HookError::Timeout { .. }))
        ));
        assert_eq!(n, 4);
        assert_eq!(
            errors,
            vec!["/usr/bin/true did not finish within 1s (killed)"; 4]
        );
        assert_eq!(start.elapsed(), Duration::from_secs(1 + 2 + 4));

        // A permanent error is not retried.
        let start = Instant::now();
        let (r, n, _) = p
            .run(|_| async { Err::<(), _>(RebootError::Hook(HookError::NotConfigured)) })
            .await;
        assert!(r.is_err());
        assert_eq!(n, 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    fn hung() -> RebootError {
        RebootError::Hook(HookError::Timeout {
            program: "/usr/bin/true".into(),
            after: Duration::from_secs(1),
        })
    }

    #[test]
    fn permanent_errors() {
        let refused = |status| {
            RebootError::Snmp(SnmpResetError::Refused {
                agent: "127.0.0.1:161".parse().unwrap(),
                source: ReplyError::Status {
                    status,
                    index: 1,
                    oid: None,
                },
            })
        };
        assert!(refused(ErrorStatus::NoAccess).is_permanent());
        assert!(refused(ErrorStatus::WrongValue).is_permanent());
        assert!(refused(ErrorStatus::AuthorizationError).is_permanent());
        assert!(!refused(ErrorStatus::GenErr).is_permanent());
        assert!(!refused(ErrorStatus::ResourceUnavailable).is_permanent());
        let timeout = RebootError::Snmp(SnmpResetError::Timeout {
            agent: "127.0.0.1:161".parse().unwrap(),
            after: Duration::from_secs(1),
            mismatched: 0,
        });
        assert!(!timeout.is_permanent());
        let unreachable = RebootError::Snmp(SnmpResetError::Unreachable {
            agent: "127.0.0.1:161".parse().unwrap(),
        });
        assert!(!unreachable.is_permanent());
        assert!(RebootError::ForceRenew(ForceRenewError::NotConfigured).is_permanent());
        assert!(!hung().is_permanent());
    }

    /// A one-shot agent on loopback answering with `status`, after first sending a stale
    /// response with another request-id.
    async fn fake_agent(status: ErrorStatus) -> (u16, tokio::task::JoinHandle<Message>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = sock.local_addr().unwrap().port();
        let h = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let (n, peer) = sock.recv_from(&mut buf).await.unwrap();
            let req = Message::decode(&buf[..n]).unwrap();
            let mut stale = req.response(ErrorStatus::NoError, 0, vec![]);
            stale.pdu.request_id = req.pdu.request_id.wrapping_add(1);
            sock.send_to(&stale.encode().unwrap(), peer).await.unwrap();
            sock.send_to(b"junk", peer).await.unwrap();
            let idx = i32::from(status != ErrorStatus::NoError);
            let resp = req.response(status, idx, req.pdu.varbinds.clone());
            sock.send_to(&resp.encode().unwrap(), peer).await.unwrap();
            req
        });
        (port, h)
    }

    #[tokio::test]
    async fn snmp_reset_checks_request_id_and_status() {
        let (port, agent) = fake_agent(ErrorStatus::NoError).await;
        let r = SnmpReset {
            port,
            timeout: Duration::from_secs(5),
        };
        r.reset(IpAddr::V4(Ipv4Addr::LOCALHOST), b"private", 77)
            .await
            .unwrap();
        let req = agent.await.unwrap();
        assert_eq!(req.pdu.kind, PduKind::SetRequest);
        assert_eq!(req.pdu.request_id, 77);
        assert_eq!(req.community, b"private");
        assert_eq!(
            req.pdu.varbinds,
            vec![VarBind {
                oid: Oid::from(snmp::DOCS_DEV_RESET_NOW),
                value: Value::Integer(1)
            }]
        );

        let (port, _agent) = fake_agent(ErrorStatus::NoAccess).await;
        let r = SnmpReset {
            port,
            timeout: Duration::from_secs(5),
        };
        let e = r
            .reset(IpAddr::V4(Ipv4Addr::LOCALHOST), b"public", 78)
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(ErrorStatus::NoAccess));
        assert!(e.to_string().contains("noAccess(6)"), "{e}");
        assert!(e.to_string().contains("1.3.6.1.2.1.69.1.1.3.0"), "{e}");
    }

    #[tokio::test]
    async fn snmp_reset_times_out_naming_the_agent() {
        // A bound socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let r = SnmpReset {
            port: silent.local_addr().unwrap().port(),
            timeout: Duration::from_millis(100),
        };
        let e = r
            .reset(IpAddr::V4(Ipv4Addr::LOCALHOST), b"private", 1)
            .await
            .unwrap_err();
        assert!(
            matches!(e, SnmpResetError::Timeout { mismatched: 0, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("127.0.0.1"), "{e}");
    }

    #[tokio::test]
    async fn rebooter_forcerenew_uses_fresh_counter_and_records_it() {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let key = [7u8; 16];
        let rb = Rebooter {
            snmp: SnmpReset::default(),
            forcerenew: Some(ForceRenewSender {
                source: "127.0.0.1:0".parse().unwrap(),
                server_id: Ipv4Addr::new(198, 18, 0, 1),
                client_port: client.local_addr().unwrap().port(),
            }),
            hook: None,
            retry: RetryPolicy::default(),
        };
        let t = target(RebootMethod::ForceRenew {
            key: ForceRenewKey::Reconfigure(key),
            xid: 5,
        });
        let out = rb.reboot(&t, 1000).await;
        assert!(out.ok, "{out:?}");
        assert_eq!(out.attempts, 1);
        assert_eq!(out.replay_counter, Some(1000));
        assert_eq!(out.method, MethodName::ForceRenew);
        let mut buf = [0u8; 1500];
        let n = client.recv(&mut buf).await.unwrap();
        let mut w = dhcp::ReplayWindow::default();
        let ok = dhcp::verify_forcerenew(
            &buf[..n],
            &t.mac,
            dhcp::ClientKeys {
                reconfigure_key: Some(&key),
                delayed: None,
            },
            &mut w,
        )
        .unwrap();
        assert_eq!((ok.replay, ok.xid), (1000, 5));
        let json = serde_json::to_value(&out).unwrap();
        assert_eq!(json["method"], "forcerenew");
        assert_eq!(json["replay_counter"], 1000);
        let back: RebootOutcome = serde_json::from_value(json).unwrap();
        assert_eq!(back, out);
        let std = ForceRenewSender::standard(Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(std.source, "0.0.0.0:67".parse::<SocketAddr>().unwrap());
        assert_eq!(std.client_port, 68);
    }

    #[tokio::test]
    async fn rebooter_without_sender_or_hook_reports_it() {
        let rb = Rebooter {
            snmp: SnmpReset::default(),
            forcerenew: None,
            hook: None,
            retry: RetryPolicy {
                attempts: 2,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
            },
        };
        let out = rb
            .reboot(
                &target(RebootMethod::ForceRenew {
                    key: ForceRenewKey::Delayed {
                        secret_id: 1,
                        key: b"k".to_vec(),
                    },
                    xid: 0,
                }),
                50,
            )
            .await;
        assert!(!out.ok);
        // Missing configuration is permanent: no retry.
        assert_eq!(out.attempts, 1);
        assert_eq!(out.replay_counter, Some(50));
        assert_eq!(
            out.last_error.as_deref(),
            Some("no FORCERENEW sender is configured")
        );
        let out = rb.reboot(&target(RebootMethod::Command), 0).await;
        assert_eq!(
            out.last_error.as_deref(),
            Some("no reboot command hook is configured")
        );
        assert!(format!("{:?}", ForceRenewKey::Reconfigure([1; 16])).contains("redacted"));
    }

    #[tokio::test]
    async fn command_hook_gets_modem_env_and_exit_status() {
        let dir = std::env::temp_dir().join(format!("shaper-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out_file = dir.join("env.txt");
        let hook = CommandHook {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                format!(
                    "echo \"$SHAPER_MODEM_ID $SHAPER_MODEM_MAC $SHAPER_MODEM_IP\" > {}",
                    out_file.display()
                ),
            ],
            timeout: Duration::from_secs(10),
        };
        let mut rb = Rebooter {
            snmp: SnmpReset::default(),
            forcerenew: None,
            hook: Some(hook),
            retry: RetryPolicy {
                attempts: 2,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
            },
        };
        let t = target(RebootMethod::Command);
        let out = rb.reboot(&t, 0).await;
        assert!(out.ok, "{out:?}");
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(
            std::fs::read_to_string(&out_file).unwrap(),
            "cm-1 02:00:00:00:00:01 127.0.0.1\n"
        );

        rb.hook = Some(CommandHook {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo cmts says no >&2; exit 3".into()],
            timeout: Duration::from_secs(10),
        });
        let out = rb.reboot(&t, 0).await;
        assert!(!out.ok);
        assert_eq!(out.attempts, 2);
        let e = out.last_error.unwrap();
        assert!(
            e.contains("exit status: 3") && e.contains("cmts says no"),
            "{e}"
        );

        rb.hook = Some(CommandHook {
            program: "/bin/sleep".into(),
            args: vec!["5".into()],
            timeout: Duration::from_millis(100),
        });
        let out = rb.reboot(&t, 0).await;
        assert!(out.last_error.unwrap().contains("did not finish within"));

        rb.hook = Some(CommandHook {
            program: dir.join("missing"),
            args: vec![],
            timeout: Duration::from_secs(1),
        });
        let out = rb.reboot(&t, 0).await;
        assert!(out.last_error.unwrap().starts_with("starting "));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
