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
//! 5. CoA/Disconnect only — replay protection (RFC 5176 §3.6): without an Event-Timestamp,
//!    dropped when `require_event_timestamp` (the default); with one further than
//!    `event_timestamp_window_s` from now, dropped. Then the replay cache: a Request
//!    Authenticator this client (by address, whatever the source port) sent before within the
//!    window is a replay and dropped; a client whose cache holds `replay_cache_per_client`
//!    unexpired entries has its new requests dropped (see `coa_server/replay.rs`).
//!    Retransmissions from the same port within `duplicate_window_ms` were answered at step 4
//!    and never get here.
//! 6. CoA/Disconnect → [`CoaSink`] → ACK, or NAK with Error-Cause (RFC 5176 §3.5); a rate
//!    above 4,294,967,295 bit/s (what a DOCSIS configuration file carries) is NAKed with
//!    Invalid-Attribute-Value (407).
//!    Accounting → [`SessionStore`] → Accounting-Response only once recorded (RFC 2866 §4.1).
//!    A Start or Interim-Update of a session on an address another session holds ends that
//!    older session (superseded: logged, counted) and is recorded and answered; if the holder
//!    started later (by Event-Timestamp, less Acct-Session-Time for an Interim-Update), the
//!    report is answered but not recorded (outdated: logged, counted).
//!
//! Sessions not heard of (Start, Interim-Update) for `session_timeout_s` — or three times
//! their Acct-Interim-Interval — are ended by [`RadiusServer::expire_sessions`], which the
//! shell calls periodically with the time (see `coa_server/liveness.rs`).
//!
//! Proxy-State attributes are copied into the response in order (RFC 2865 §5.33). A response
//! carries a Message-Authenticator when the request did.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{debug, warn};

use crate::notify::rate::{self, RateKind};
use crate::proto::radius::dict::{self, acct_status};
use crate::proto::radius::{
    Attribute, AuthError, Code, DecodeError, EncodeError, ErrorCause, Packet, ValueError,
    encode_response, verify_request,
};
use crate::provision::QosLevel;
use crate::sessions::{Session, SessionSelector, SessionStore, SessionStoreError};

mod liveness;
mod replay;
mod server_config;
mod shell;

use liveness::Liveness;
use replay::{Duplicate, DuplicateCache, ReplayCache, ReplayRefusal};
pub use server_config::{
    ClientConfig, ConfigError, DEFAULT_REPLAY_CACHE_PER_CLIENT, DEFAULT_REPLAY_WINDOW_S,
    DEFAULT_SESSION_TIMEOUT_S, NasIdentity, RadiusServerConfig,
};
pub use shell::RadiusServerHandle;

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
    #[error("no Event-Timestamp (required for replay protection, RFC 5176 §3.6)")]
    MissingEventTimestamp,
    #[error("replay: client {client} sent this Request Authenticator before, within the window")]
    Replay { client: IpAddr },
    #[error(
        "replay cache of client {client} is full ({cap} unexpired Request Authenticators): \
         request dropped"
    )]
    ReplayCacheFull { client: IpAddr, cap: usize },
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
    /// Every drop, whatever the reason (the ones below included).
    pub dropped: AtomicU64,
    /// CoA/Disconnect requests dropped as replays ([`DropReason::Replay`]).
    pub replays: AtomicU64,
    /// CoA/Disconnect requests dropped because the client's replay cache was full
    /// ([`DropReason::ReplayCacheFull`]).
    pub replay_cache_full: AtomicU64,
    /// CoA/Disconnect requests dropped for a missing or stale Event-Timestamp.
    pub bad_event_timestamp: AtomicU64,
    /// Sessions ended because a newer session took their address.
    pub superseded: AtomicU64,
    /// Sessions ended because nothing was heard of them for their timeout.
    pub expired: AtomicU64,
    /// Accounting answered but not recorded: the session started before the one that holds
    /// its address (a late report of a superseded session, or an old packet replayed).
    pub outdated: AtomicU64,
}

/// Why a session was ended other than by its Stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndCause {
    /// Session `by` reported an address this session held.
    Superseded { by: String },
    /// No Start or Interim-Update for `silent_ms`.
    Expired { silent_ms: u64 },
}

impl std::fmt::Display for EndCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndCause::Superseded { by } => write!(f, "superseded by session {by} on its address"),
            EndCause::Expired { silent_ms } => {
                write!(f, "expired: no accounting for {} s", silent_ms / 1000)
            }
        }
    }
}

/// See the module documentation.
pub struct RadiusServer {
    config: RadiusServerConfig,
    clients: HashMap<IpAddr, ClientConfig>,
    sink: Arc<dyn CoaSink>,
    sessions: Arc<dyn SessionStore>,
    duplicates: Mutex<DuplicateCache>,
    replays: Mutex<ReplayCache>,
    /// Held across a session write and its liveness update, so expiry never ends a session
    /// an Interim-Update is refreshing.
    liveness: Mutex<Liveness>,
    stats: ServerStats,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let replays = Mutex::new(ReplayCache::new(config.replay_cache_per_client));
        Ok(RadiusServer {
            config,
            clients,
            sink,
            sessions,
            duplicates: Mutex::new(DuplicateCache::default()),
            replays,
            liveness: Mutex::new(Liveness::default()),
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
        let detail = match &h {
            Handled::Drop(DropReason::Replay { .. }) => Some(&self.stats.replays),
            Handled::Drop(DropReason::ReplayCacheFull { .. }) => {
                Some(&self.stats.replay_cache_full)
            }
            Handled::Drop(
                DropReason::MissingEventTimestamp | DropReason::StaleEventTimestamp { .. },
            ) => Some(&self.stats.bad_event_timestamp),
            _ => None,
        };
        if let Some(c) = detail {
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
        match lock(&self.duplicates).check(
            now_ms,
            self.config.duplicate_window_ms,
            src,
            packet.identifier,
            packet.authenticator,
        ) {
            Duplicate::New => {}
            Duplicate::Answered(r) => return Handled::Resend(r),
            Duplicate::InProgress => return Handled::Drop(DropReason::DuplicateInProgress),
        }
        let mut admitted = false;
        let result = match listener {
            Listener::Coa => self.admit(now_ms, src.ip(), &packet).and_then(|()| {
                admitted = true;
                self.process(listener, now_ms, client, &packet)
            }),
            Listener::Accounting => self.process(listener, now_ms, client, &packet),
        };
        match result {
            Ok(bytes) => {
                lock(&self.duplicates).answered(src, packet.identifier, &bytes);
                Handled::Reply(bytes)
            }
            Err(reason) => {
                // Nothing was sent: a retransmission must be processed afresh.
                lock(&self.duplicates).forget(src, packet.identifier);
                if admitted {
                    lock(&self.replays).forget(src.ip(), &packet.authenticator);
                }
                Handled::Drop(reason)
            }
        }
    }

    /// Replay protection of a CoA/Disconnect (module documentation, step 5).
    fn admit(&self, now_ms: u64, client: IpAddr, p: &Packet) -> Result<(), DropReason> {
        let stamp = p.integer(dict::EVENT_TIMESTAMP)?;
        let window_s = self.config.replay_window_s();
        let expires_ms = match stamp {
            None if self.config.require_event_timestamp => {
                return Err(DropReason::MissingEventTimestamp);
            }
            // Remembered for the window from its arrival: a replay after that is taken.
            None => now_ms.saturating_add(window_s.saturating_mul(1000)),
            Some(stamp) => {
                let now_s = now_ms / 1000;
                if let Some(w) = self.config.event_timestamp_window_s {
                    if now_s.abs_diff(u64::from(stamp)) > w {
                        return Err(DropReason::StaleEventTimestamp {
                            stamp,
                            now_s,
                            window_s: w,
                        });
                    }
                }
                // Until the timestamp leaves the window (then the check above refuses it),
                // and at least the window from now when the window is not checked.
                let until_s = u64::from(stamp).saturating_add(window_s).saturating_add(1);
                let until_ms = until_s.saturating_mul(1000);
                if self.config.event_timestamp_window_s.is_some() {
                    until_ms
                } else {
                    until_ms.max(now_ms.saturating_add(window_s.saturating_mul(1000)))
                }
            }
        };
        lock(&self.replays)
            .admit(now_ms, client, p.authenticator, expires_ms)
            .map_err(|r| match r {
                ReplayRefusal::Replay => DropReason::Replay { client },
                ReplayRefusal::Full => DropReason::ReplayCacheFull {
                    client,
                    cap: self.config.replay_cache_per_client,
                },
            })
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
            let mut live = lock(&self.liveness);
            self.sessions.stop(&id)?;
            live.forget(&id);
            return Ok(());
        }
        // When the event happened: Event-Timestamp, else now minus Acct-Delay-Time (RFC 2866
        // §5.2).
        let event_ms = match p.integer(dict::EVENT_TIMESTAMP)? {
            Some(s) => u64::from(s) * 1000,
            None => now_ms
                .saturating_sub(u64::from(p.integer(dict::ACCT_DELAY_TIME)?.unwrap_or(0)) * 1000),
        };
        let interim_s = p.integer(dict::ACCT_INTERIM_INTERVAL)?;
        // When the session started: the event, less Acct-Session-Time on an Interim-Update
        // (RFC 2866 §5.7); it decides which of two sessions on one address is the newer.
        let since_ms = match (status, p.integer(dict::ACCT_SESSION_TIME)?) {
            (acct_status::INTERIM_UPDATE, Some(t)) => event_ms.saturating_sub(u64::from(t) * 1000),
            _ => event_ms,
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
            since_ms,
            updated_ms: event_ms,
        };
        let id = s.acct_session_id.clone();
        let mut live = lock(&self.liveness);
        let recorded = if status == acct_status::START {
            self.sessions.start(s)?
        } else {
            self.sessions.update(s)?
        };
        if let Some(newer) = &recorded.outdated_by {
            // Answered all the same: there is nothing to record for it, and a retransmission
            // would find the same.
            self.stats.outdated.fetch_add(1, Ordering::Relaxed);
            warn!(
                session = id,
                holder = newer,
                "RADIUS accounting of a session older than the one holding its address: not \
                 recorded"
            );
            return Ok(());
        }
        if let Some(t) = self.config.session_timeout_s {
            live.heard(&id, now_ms, liveness::timeout_ms(t, interim_s));
        }
        for old in &recorded.superseded {
            live.forget(&old.acct_session_id);
            self.ended(old, &EndCause::Superseded { by: id.clone() });
        }
        Ok(())
    }

    /// Logs and counts a session ended other than by its Stop.
    fn ended(&self, s: &Session, cause: &EndCause) {
        let counter = match cause {
            EndCause::Superseded { .. } => &self.stats.superseded,
            EndCause::Expired { .. } => &self.stats.expired,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        warn!(
            session = s.acct_session_id,
            subscriber = ?s.subscriber,
            ipv4 = ?s.framed_ipv4,
            ipv6 = ?s.framed_ipv6_prefix,
            nas_identifier = ?s.nas_identifier,
            nas_ip = ?s.nas_ip,
            %cause,
            "RADIUS session ended"
        );
    }

    /// Ends the sessions nothing was heard of for their timeout at `now_ms` (see
    /// `coa_server/liveness.rs`), as their Stop would, and returns them with the cause. A store
    /// failure leaves the session to the next call.
    pub fn expire_sessions(&self, now_ms: u64) -> Vec<(Session, EndCause)> {
        let mut live = lock(&self.liveness);
        let mut out = Vec::new();
        for (id, silent_ms) in live.silent(now_ms) {
            match self.sessions.stop(&id) {
                Ok(Some(s)) => {
                    live.forget(&id);
                    let cause = EndCause::Expired { silent_ms };
                    self.ended(&s, &cause);
                    out.push((s, cause));
                }
                // Ended some other way (Disconnect, Accounting-On/Off, the API).
                Ok(None) => live.forget(&id),
                Err(e) => warn!(session = id, error = %e, "expiring a silent session"),
            }
        }
        out
    }

    /// Sessions whose liveness is tracked (tests, metrics).
    #[must_use]
    pub fn tracked_sessions(&self) -> usize {
        lock(&self.liveness).len()
    }

    /// Request Authenticators remembered for `client` (tests, metrics).
    #[must_use]
    pub fn replay_cache_len(&self, client: IpAddr) -> usize {
        lock(&self.replays).len(client)
    }
}

#[cfg(test)]
mod robust_tests;
#[cfg(test)]
mod tests;
