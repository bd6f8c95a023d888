//! The RADIUS server side: CoA/Disconnect (RFC 5176, UDP 3799) and accounting (RFC 2866,
//! UDP 1813).
//!
//! [`RadiusServer`] is the synchronous core: it reads no clock and owns no socket;
//! [`RadiusServer::handle`] takes `(listener, now_ms, source, bytes)` and returns what to send.
//! [`RadiusServer::spawn`] is the tokio shell that binds the two ports and feeds it.
//!
//! Per request, in order (a failure stops the list):
//! 1. The source IP must be a configured client; its secret is looked up by address
//!    (RFC 5176 §2.3, RFC 2865 §3). Otherwise the packet is dropped.
//! 2. The packet must decode and carry a code this listener takes (CoA: 40/43; accounting: 4).
//! 3. Request Authenticator, then Message-Authenticator if present — or required by the client's
//!    `require_message_authenticator` (CoA listener). Failures are silently dropped (RFC 5176
//!    §3, RFC 2866 §3).
//! 4. Duplicate detection (RFC 5080 §2.2.2): the same source, identifier and authenticator
//!    within `duplicate_window_ms` get the cached response again; a duplicate of a request
//!    still being processed is dropped.
//! 5. Event-Timestamp outside `event_timestamp_window_s` of now: dropped (RFC 5176 §3.6).
//! 6. CoA/Disconnect → [`CoaSink`] → ACK, or NAK with Error-Cause (RFC 5176 §3.5).
//!    Accounting → [`SessionStore`] → Accounting-Response only once recorded (RFC 2866 §4.1).
//!
//! Proxy-State attributes are copied into the response in order (RFC 2865 §5.33). A response
//! carries a Message-Authenticator when the request did.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::api::Clock;
use crate::proto::radius::dict::{self, acct_status};
use crate::proto::radius::rate::{self, RateKind};
use crate::proto::radius::{
    Attribute, AuthError, Code, DecodeError, EncodeError, ErrorCause, Packet, ValueError,
    encode_response, verify_request,
};
use crate::provision::QosLevel;
use crate::sessions::{Session, SessionSelector, SessionStore, SessionStoreError};

/// Why a CoA or Disconnect was refused; becomes the NAK's Error-Cause (RFC 5176 §3.5).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CoaRefusal {
    #[error("no session matches the identification attributes")]
    SessionNotFound,
    #[error("the request names several sessions and this NAS changes one at a time")]
    MultipleSessions,
    #[error("unsupported attribute {0}")]
    UnsupportedAttribute(String),
    #[error("missing attribute: {0}")]
    MissingAttribute(&'static str),
    #[error("NAS identification names another NAS: {0}")]
    NasMismatch(String),
    #[error("invalid attribute value: {0}")]
    InvalidAttributeValue(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("resources unavailable: {0}")]
    ResourcesUnavailable(String),
    #[error("administratively prohibited: {0}")]
    Prohibited(String),
}

impl CoaRefusal {
    /// The Error-Cause this refusal is reported with.
    #[must_use]
    pub fn error_cause(&self) -> ErrorCause {
        match self {
            CoaRefusal::SessionNotFound => ErrorCause::SessionContextNotFound,
            CoaRefusal::MultipleSessions => ErrorCause::MultipleSessionSelectionUnsupported,
            CoaRefusal::UnsupportedAttribute(_) => ErrorCause::UnsupportedAttribute,
            CoaRefusal::MissingAttribute(_) => ErrorCause::MissingAttribute,
            CoaRefusal::NasMismatch(_) => ErrorCause::NasIdentificationMismatch,
            CoaRefusal::InvalidAttributeValue(_) => ErrorCause::InvalidAttributeValue,
            CoaRefusal::InvalidRequest(_) => ErrorCause::InvalidRequest,
            CoaRefusal::ResourcesUnavailable(_) => ErrorCause::ResourcesUnavailable,
            CoaRefusal::Prohibited(_) => ErrorCause::AdministrativelyProhibited,
        }
    }
}

/// Where accepted CoA and Disconnect requests go. Calls are synchronous and made on a blocking
/// thread of the shell; `Ok` means the change is made (the ACK says so).
pub trait CoaSink: Send + Sync {
    /// Give the sessions `target` names the QoS level `qos`.
    fn coa(&self, target: SessionSelector, qos: QosLevel) -> Result<(), CoaRefusal>;
    /// End the sessions `target` names.
    fn disconnect(&self, target: SessionSelector) -> Result<(), CoaRefusal>;
}

/// A RADIUS client (a BRAS or policy server) allowed to talk to us.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Source address of its packets.
    pub addr: IpAddr,
    /// Shared secret (RFC 2865 §3).
    pub secret: String,
    /// Drop CoA/Disconnect requests without a Message-Authenticator (RFC 5176 §3.1 allows it to
    /// be optional; BlastRADIUS hardening says require it).
    #[serde(default)]
    pub require_message_authenticator: bool,
    /// For logs.
    #[serde(default)]
    pub name: Option<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("addr", &self.addr)
            .field("secret", &"<redacted>")
            .field(
                "require_message_authenticator",
                &self.require_message_authenticator,
            )
            .field("name", &self.name)
            .finish()
    }
}

/// Who this NAS is, for the NAS-Identification-Mismatch check (RFC 5176 §3.5, 403).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NasIdentity {
    pub ip: Option<Ipv4Addr>,
    pub identifier: Option<String>,
}

/// Server configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RadiusServerConfig {
    /// CoA/Disconnect listener (RFC 5176 §3: UDP 3799).
    pub coa_listen: SocketAddr,
    /// Accounting listener (RFC 2866: UDP 1813); `None` = no accounting intake.
    pub acct_listen: Option<SocketAddr>,
    pub clients: Vec<ClientConfig>,
    /// How long a response is kept for retransmissions (RFC 5080 §2.2.2).
    pub duplicate_window_ms: u64,
    /// Drop requests whose Event-Timestamp is further than this from now (RFC 5176 §3.6
    /// suggests 300 s); `None` = do not check.
    pub event_timestamp_window_s: Option<u64>,
    /// If set, NAS-IP-Address / NAS-Identifier in a CoA must name us (else 403). If unset, they
    /// narrow the session match to the BRAS that reported the session.
    pub nas_identity: Option<NasIdentity>,
    /// Recorded in each session as the gateway that received its accounting.
    pub gateway: Option<String>,
}

impl Default for RadiusServerConfig {
    fn default() -> Self {
        Self {
            coa_listen: SocketAddr::from(([0, 0, 0, 0], 3799)),
            acct_listen: Some(SocketAddr::from(([0, 0, 0, 0], 1813))),
            clients: Vec::new(),
            duplicate_window_ms: 30_000,
            event_timestamp_window_s: Some(300),
            nas_identity: None,
            gateway: None,
        }
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("radius client {0}: empty shared secret")]
    EmptySecret(IpAddr),
    #[error("radius client {0} is configured twice")]
    DuplicateClient(IpAddr),
    #[error("coa_listen and acct_listen are the same address {0}")]
    SamePort(SocketAddr),
}

impl RadiusServerConfig {
    /// Checks what can be checked before binding.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, c) in self.clients.iter().enumerate() {
            if c.secret.is_empty() {
                return Err(ConfigError::EmptySecret(c.addr));
            }
            if self.clients[..i].iter().any(|o| o.addr == c.addr) {
                return Err(ConfigError::DuplicateClient(c.addr));
            }
        }
        if self.acct_listen == Some(self.coa_listen) && self.coa_listen.port() != 0 {
            return Err(ConfigError::SamePort(self.coa_listen));
        }
        Ok(())
    }
}

/// Which port a packet arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Listener {
    Coa,
    Accounting,
}

/// Why a packet got no response. Each is a silent discard on the wire (RFC 2865 §3,
/// RFC 5176 §3, RFC 2866 §4.1); the reason is for logs and counters.
#[derive(Debug, thiserror::Error)]
pub enum DropReason {
    #[error("source {0} is not a configured client")]
    UnknownClient(IpAddr),
    #[error("malformed: {0}")]
    Decode(#[from] DecodeError),
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
    #[error("code {code:?} is not taken on the {listener:?} port")]
    UnexpectedCode { code: Code, listener: Listener },
    #[error("duplicate of a request still being processed")]
    DuplicateInProgress,
    #[error("Event-Timestamp {stamp} is more than {window_s} s from now ({now_s})")]
    StaleEventTimestamp {
        stamp: u32,
        now_s: u64,
        window_s: u64,
    },
    #[error("accounting: Acct-Status-Type missing")]
    MissingStatusType,
    #[error("accounting: Acct-Session-Id missing")]
    MissingSessionId,
    #[error("accounting: {0}")]
    Value(#[from] ValueError),
    #[error("accounting not recorded: {0}")]
    Store(#[from] SessionStoreError),
    #[error("response: {0}")]
    Encode(#[from] EncodeError),
}

/// What to do with a packet.
#[derive(Debug)]
pub enum Handled {
    /// Send this response.
    Reply(Vec<u8>),
    /// A retransmission: send the cached response again.
    Resend(Vec<u8>),
    /// Send nothing.
    Drop(DropReason),
}

/// Counters, for metrics and tests.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub received: AtomicU64,
    pub acks: AtomicU64,
    pub naks: AtomicU64,
    pub accounting: AtomicU64,
    pub resent: AtomicU64,
    pub dropped: AtomicU64,
}

struct CacheEntry {
    authenticator: [u8; 16],
    at_ms: u64,
    response: Option<Vec<u8>>,
}

/// See the module documentation.
pub struct RadiusServer {
    config: RadiusServerConfig,
    clients: HashMap<IpAddr, ClientConfig>,
    sink: Arc<dyn CoaSink>,
    sessions: Arc<dyn SessionStore>,
    cache: Mutex<HashMap<(SocketAddr, u8), CacheEntry>>,
    stats: ServerStats,
}

impl std::fmt::Debug for RadiusServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RadiusServer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Attributes a CoA-Request may carry besides the rate (RFC 5176 §3 identification, §3.6
/// Event-Timestamp, RFC 3579 Message-Authenticator, RFC 2865 Proxy-State/Class).
const COA_ALLOWED: &[u8] = &[
    dict::USER_NAME,
    dict::NAS_IP_ADDRESS,
    dict::NAS_PORT,
    dict::FRAMED_IP_ADDRESS,
    dict::CLASS,
    dict::CALLED_STATION_ID,
    dict::CALLING_STATION_ID,
    dict::NAS_IDENTIFIER,
    dict::PROXY_STATE,
    dict::ACCT_SESSION_ID,
    dict::ACCT_MULTI_SESSION_ID,
    dict::EVENT_TIMESTAMP,
    dict::NAS_PORT_ID,
    dict::MESSAGE_AUTHENTICATOR,
    dict::FRAMED_IPV6_PREFIX,
];

fn attr_name(a: &Attribute) -> String {
    match a {
        Attribute::Raw { typ, .. } => {
            dict::standard(*typ).map_or_else(|| format!("Attr-{typ}"), |(n, _)| n.to_owned())
        }
        Attribute::Vendor { vendor, subs } => {
            let t = subs.first().map_or(0, |s| s.typ);
            dict::vendor(*vendor, t).map_or_else(
                || format!("Vendor-{vendor}-Attr-{t}"),
                |(n, _)| n.to_owned(),
            )
        }
    }
}

fn is_rate_attribute(a: &Attribute) -> bool {
    match a {
        Attribute::Raw { typ, .. } => *typ == dict::FILTER_ID,
        Attribute::Vendor { vendor, subs } => subs.iter().all(|s| {
            [
                dict::MIKROTIK_RATE_LIMIT,
                dict::CISCO_AVPAIR,
                dict::ERX_SERVICE_ACTIVATE,
            ]
            .contains(&(*vendor, s.typ))
        }),
    }
}

impl RadiusServer {
    /// A server over `sink` and `sessions`. Validates the configuration.
    pub fn new(
        config: RadiusServerConfig,
        sink: Arc<dyn CoaSink>,
        sessions: Arc<dyn SessionStore>,
    ) -> Result<RadiusServer, ConfigError> {
        config.validate()?;
        let clients = config.clients.iter().map(|c| (c.addr, c.clone())).collect();
        Ok(RadiusServer {
            config,
            clients,
            sink,
            sessions,
            cache: Mutex::new(HashMap::new()),
            stats: ServerStats::default(),
        })
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &RadiusServerConfig {
        &self.config
    }

    /// Handles one datagram (see the module documentation for the order of checks).
    pub fn handle(&self, listener: Listener, now_ms: u64, src: SocketAddr, buf: &[u8]) -> Handled {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let h = self.handle_inner(listener, now_ms, src, buf);
        let counter = match &h {
            Handled::Reply(_) => None,
            Handled::Resend(_) => Some(&self.stats.resent),
            Handled::Drop(_) => Some(&self.stats.dropped),
        };
        if let Some(c) = counter {
            c.fetch_add(1, Ordering::Relaxed);
        }
        h
    }

    fn handle_inner(
        &self,
        listener: Listener,
        now_ms: u64,
        src: SocketAddr,
        buf: &[u8],
    ) -> Handled {
        let Some(client) = self.clients.get(&src.ip()) else {
            return Handled::Drop(DropReason::UnknownClient(src.ip()));
        };
        let packet = match Packet::decode(buf) {
            Ok(p) => p,
            Err(e) => return Handled::Drop(e.into()),
        };
        let taken = match listener {
            Listener::Coa => matches!(packet.code, Code::CoaRequest | Code::DisconnectRequest),
            Listener::Accounting => packet.code == Code::AccountingRequest,
        };
        if !taken {
            return Handled::Drop(DropReason::UnexpectedCode {
                code: packet.code,
                listener,
            });
        }
        let require_ma = listener == Listener::Coa && client.require_message_authenticator;
        if let Err(e) = verify_request(buf, client.secret.as_bytes(), require_ma) {
            return Handled::Drop(e.into());
        }
        if let Some(h) = self.check_duplicate(now_ms, src, &packet) {
            return h;
        }
        let result = self.process(listener, now_ms, client, &packet);
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(bytes) => {
                if let Some(e) = cache.get_mut(&(src, packet.identifier)) {
                    e.response = Some(bytes.clone());
                }
                Handled::Reply(bytes)
            }
            Err(reason) => {
                // Nothing was sent: a retransmission must be processed afresh.
                cache.remove(&(src, packet.identifier));
                Handled::Drop(reason)
            }
        }
    }

    fn check_duplicate(&self, now_ms: u64, src: SocketAddr, p: &Packet) -> Option<Handled> {
        let window = self.config.duplicate_window_ms;
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= 4096 {
            cache.retain(|_, e| now_ms.saturating_sub(e.at_ms) < window);
        }
        let key = (src, p.identifier);
        if let Some(e) = cache.get(&key) {
            if e.authenticator == p.authenticator && now_ms.saturating_sub(e.at_ms) < window {
                return Some(match &e.response {
                    Some(r) => Handled::Resend(r.clone()),
                    None => Handled::Drop(DropReason::DuplicateInProgress),
                });
            }
        }
        cache.insert(
            key,
            CacheEntry {
                authenticator: p.authenticator,
                at_ms: now_ms,
                response: None,
            },
        );
        None
    }

    fn check_timestamp(&self, now_ms: u64, p: &Packet) -> Result<(), DropReason> {
        let Some(window_s) = self.config.event_timestamp_window_s else {
            return Ok(());
        };
        if let Some(stamp) = p.integer(dict::EVENT_TIMESTAMP)? {
            let now_s = now_ms / 1000;
            if now_s.abs_diff(u64::from(stamp)) > window_s {
                return Err(DropReason::StaleEventTimestamp {
                    stamp,
                    now_s,
                    window_s,
                });
            }
        }
        Ok(())
    }

    fn process(
        &self,
        listener: Listener,
        now_ms: u64,
        client: &ClientConfig,
        p: &Packet,
    ) -> Result<Vec<u8>, DropReason> {
        let (code, cause) = match listener {
            Listener::Coa => {
                self.check_timestamp(now_ms, p)?;
                let result = if p.code == Code::CoaRequest {
                    self.coa(p)
                } else {
                    self.disconnect(p)
                };
                match result {
                    Ok(()) => {
                        self.stats.acks.fetch_add(1, Ordering::Relaxed);
                        let ack = if p.code == Code::CoaRequest {
                            Code::CoaAck
                        } else {
                            Code::DisconnectAck
                        };
                        (ack, None)
                    }
                    Err(refusal) => {
                        debug!(client = ?client.name, id = p.identifier, %refusal, "NAK");
                        self.stats.naks.fetch_add(1, Ordering::Relaxed);
                        let nak = if p.code == Code::CoaRequest {
                            Code::CoaNak
                        } else {
                            Code::DisconnectNak
                        };
                        (nak, Some(refusal.error_cause()))
                    }
                }
            }
            Listener::Accounting => {
                self.accounting(now_ms, p)?;
                self.stats.accounting.fetch_add(1, Ordering::Relaxed);
                (Code::AccountingResponse, None)
            }
        };
        let mut resp = Packet::new(code, p.identifier);
        if p.get(dict::MESSAGE_AUTHENTICATOR).is_some() {
            resp.add_message_authenticator();
        }
        if let Some(c) = cause {
            resp.push_integer(dict::ERROR_CAUSE, c.code());
        }
        for ps in p.get_all(dict::PROXY_STATE) {
            resp.push(dict::PROXY_STATE, ps);
        }
        Ok(encode_response(
            &resp,
            &p.authenticator,
            client.secret.as_bytes(),
        )?)
    }

    /// The selector of a CoA/Disconnect, with the NAS identification checked against our own
    /// identity when one is configured.
    fn selector(&self, p: &Packet) -> Result<SessionSelector, CoaRefusal> {
        let mut sel = SessionSelector::from_packet(p)
            .map_err(|e| CoaRefusal::InvalidAttributeValue(e.to_string()))?;
        if let Some(me) = &self.config.nas_identity {
            if let (Some(want), Some(mine)) = (sel.nas_ip, me.ip) {
                if want != mine {
                    return Err(CoaRefusal::NasMismatch(format!("NAS-IP-Address {want}")));
                }
            }
            if let (Some(want), Some(mine)) = (&sel.nas_identifier, &me.identifier) {
                if want != mine {
                    return Err(CoaRefusal::NasMismatch(format!("NAS-Identifier {want}")));
                }
            }
            // They named us; they do not narrow the session match.
            sel.nas_ip = None;
            sel.nas_identifier = None;
        }
        if sel.names_no_session() {
            return Err(CoaRefusal::MissingAttribute(
                "session identification (Acct-Session-Id, User-Name, Framed-IP-Address, Framed-IPv6-Prefix or Calling-Station-Id)",
            ));
        }
        Ok(sel)
    }

    fn coa(&self, p: &Packet) -> Result<(), CoaRefusal> {
        if let Some(a) = p
            .attributes
            .iter()
            .find(|a| !COA_ALLOWED.contains(&a.typ()) && !is_rate_attribute(a))
        {
            return Err(CoaRefusal::UnsupportedAttribute(attr_name(a)));
        }
        let sel = self.selector(p)?;
        let (kind, qos) = match rate::decode_rate(p) {
            Ok(Some(r)) => r,
            Ok(None) => {
                // A Cisco AVPair that is not a rate-limit is something we do not do.
                if let Some(a) = p.attributes.iter().find(|a| is_rate_attribute(a)) {
                    return Err(CoaRefusal::UnsupportedAttribute(attr_name(a)));
                }
                return Err(CoaRefusal::MissingAttribute(
                    "a rate (Mikrotik-Rate-Limit, Filter-Id, Cisco-AVPair rate-limit or ERX-Service-Activate)",
                ));
            }
            Err(e) => return Err(CoaRefusal::InvalidAttributeValue(e.to_string())),
        };
        if qos.is_empty() {
            return Err(CoaRefusal::InvalidAttributeValue(format!(
                "{kind:?} rate sets no limit"
            )));
        }
        qos.validate()
            .map_err(|e| CoaRefusal::InvalidAttributeValue(e.to_string()))?;
        if kind != RateKind::Mikrotik && kind != RateKind::Plain {
            debug!(
                ?kind,
                "CoA rate in a vendor profile other than MikroTik/plain"
            );
        }
        self.sink.coa(sel, qos)
    }

    fn disconnect(&self, p: &Packet) -> Result<(), CoaRefusal> {
        if let Some(a) = p
            .attributes
            .iter()
            .find(|a| !COA_ALLOWED.contains(&a.typ()))
        {
            return Err(CoaRefusal::UnsupportedAttribute(attr_name(a)));
        }
        let sel = self.selector(p)?;
        self.sink.disconnect(sel)
    }

    fn accounting(&self, now_ms: u64, p: &Packet) -> Result<(), DropReason> {
        let status = p
            .integer(dict::ACCT_STATUS_TYPE)?
            .ok_or(DropReason::MissingStatusType)?;
        let nas_ip = p.ipv4(dict::NAS_IP_ADDRESS)?;
        let nas_identifier = p.text(dict::NAS_IDENTIFIER)?;
        match status {
            acct_status::ACCOUNTING_ON | acct_status::ACCOUNTING_OFF => {
                let n = self.sessions.clear_nas(nas_ip, nas_identifier)?;
                debug!(status, n, "NAS accounting on/off: its sessions are gone");
                return Ok(());
            }
            acct_status::START | acct_status::STOP | acct_status::INTERIM_UPDATE => {}
            other => {
                debug!(other, "accounting status not tracked; acknowledged");
                return Ok(());
            }
        }
        let id = p
            .text(dict::ACCT_SESSION_ID)?
            .ok_or(DropReason::MissingSessionId)?
            .to_owned();
        if status == acct_status::STOP {
            self.sessions.stop(&id)?;
            return Ok(());
        }
        // When the event happened: Event-Timestamp, else now minus Acct-Delay-Time (RFC 2866
        // §5.2).
        let event_ms = match p.integer(dict::EVENT_TIMESTAMP)? {
            Some(s) => u64::from(s) * 1000,
            None => now_ms
                .saturating_sub(u64::from(p.integer(dict::ACCT_DELAY_TIME)?.unwrap_or(0)) * 1000),
        };
        let s = Session {
            acct_session_id: id,
            subscriber: p.text(dict::USER_NAME)?.map(str::to_owned),
            framed_ipv4: p.ipv4(dict::FRAMED_IP_ADDRESS)?,
            framed_ipv6_prefix: p.ipv6_prefix(dict::FRAMED_IPV6_PREFIX)?,
            delegated_ipv6_prefix: p.ipv6_prefix(dict::DELEGATED_IPV6_PREFIX)?,
            calling_station_id: p.text(dict::CALLING_STATION_ID)?.map(str::to_owned),
            nas_ip,
            nas_identifier: nas_identifier.map(str::to_owned),
            gateway: self.config.gateway.clone(),
            since_ms: event_ms,
            updated_ms: event_ms,
        };
        if status == acct_status::START {
            self.sessions.start(s)?;
        } else {
            self.sessions.update(s)?;
        }
        Ok(())
    }
}

// ---- tokio shell ----------------------------------------------------------------------------

/// The running server: its bound addresses and tasks. Dropping it stops the listeners too.
#[derive(Debug)]
pub struct RadiusServerHandle {
    pub coa_addr: SocketAddr,
    pub acct_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RadiusServerHandle {
    /// Stops the listeners and waits for them.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

impl RadiusServer {
    /// Binds the configured ports and serves until [`RadiusServerHandle::shutdown`]. Each
    /// request is handled on a blocking thread (the sink may write to a store).
    pub async fn spawn(self: Arc<Self>, clock: Clock) -> std::io::Result<RadiusServerHandle> {
        let coa = Arc::new(UdpSocket::bind(self.config.coa_listen).await?);
        let acct = match self.config.acct_listen {
            Some(a) => Some(Arc::new(UdpSocket::bind(a).await?)),
            None => None,
        };
        let (stop, rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(serve(
            self.clone(),
            Listener::Coa,
            coa.clone(),
            clock.clone(),
            rx.clone(),
        ))];
        let acct_addr = match &acct {
            Some(s) => {
                tasks.push(tokio::spawn(serve(
                    self.clone(),
                    Listener::Accounting,
                    s.clone(),
                    clock,
                    rx,
                )));
                Some(s.local_addr()?)
            }
            None => None,
        };
        Ok(RadiusServerHandle {
            coa_addr: coa.local_addr()?,
            acct_addr,
            stop,
            tasks,
        })
    }
}

async fn serve(
    core: Arc<RadiusServer>,
    listener: Listener,
    sock: Arc<UdpSocket>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let received = tokio::select! {
            r = sock.recv_from(&mut buf) => r,
            r = stop.changed() => {
                // Shutdown, or the handle was dropped.
                if r.is_err() || *stop.borrow() {
                    return;
                }
                continue;
            }
        };
        let (n, src) = match received {
            Ok(x) => x,
            Err(e) => {
                warn!(?listener, error = %e, "radius recv");
                // Do not spin on a persistent socket error.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let datagram = buf[..n].to_vec();
        let (core, sock, clock) = (core.clone(), sock.clone(), clock.clone());
        tokio::spawn(async move {
            let handled =
                tokio::task::spawn_blocking(move || core.handle(listener, clock(), src, &datagram))
                    .await;
            match handled {
                Ok(Handled::Reply(r) | Handled::Resend(r)) => {
                    if let Err(e) = sock.send_to(&r, src).await {
                        warn!(%src, error = %e, "radius send");
                    }
                }
                // Not recorded: the NAS retransmits, and the operator should see why.
                Ok(Handled::Drop(reason @ DropReason::Store(_))) => {
                    warn!(%src, ?listener, %reason, "radius drop");
                }
                Ok(Handled::Drop(reason)) => debug!(%src, ?listener, %reason, "radius drop"),
                Err(e) => warn!(%src, error = %e, "radius handler panicked"),
            }
        });
    }
}

#[cfg(test)]
mod tests;
