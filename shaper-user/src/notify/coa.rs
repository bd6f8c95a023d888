//! CoA client: tells a BRAS a session's new rate (RFC 5176 CoA-Request) or ends it
//! (Disconnect-Request).
//!
//! One UDP socket per [`CoaClient`]; its 256 identifiers are shared by every destination, so
//! at most 256 requests are in flight (a semaphore holds the rest). A response is matched by
//! identifier *and* source address (RFC 5176 §2.3 / RFC 2865 §3), then verified: Response
//! Authenticator, and Message-Authenticator when present or required. A response that fails
//! is discarded and the wait goes on (RFC 2865 §3: silently discarded). Retransmissions reuse
//! the identifier and authenticator (RFC 5080 §2.2.1), with a timeout that doubles up to
//! [`RetryPolicy::max_timeout`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::debug;

use super::rate::{RateError, RateProfile};
use crate::proto::radius::dict;
use crate::proto::radius::{
    AuthError, Code, EncodeError, ErrorCause, Packet, encode_request, verify_response,
};
use crate::provision::QosLevel;
use crate::sessions::SessionSelector;

/// A BRAS to send CoA to.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NasTarget {
    /// Its CoA port (RFC 5176 §3: 3799; MikroTik: `/radius incoming set port=`).
    pub addr: SocketAddr,
    pub secret: String,
    /// How it reads rates.
    pub profile: RateProfile,
    /// Add a Message-Authenticator to requests (RFC 5176 §3.1; radclient/FreeRADIUS with
    /// `require_message_authenticator = yes` insist on it).
    #[serde(default = "yes")]
    pub message_authenticator: bool,
    /// Refuse responses without a Message-Authenticator.
    #[serde(default)]
    pub require_response_message_authenticator: bool,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for NasTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NasTarget")
            .field("addr", &self.addr)
            .field("secret", &"<redacted>")
            .field("profile", &self.profile)
            .field("message_authenticator", &self.message_authenticator)
            .finish_non_exhaustive()
    }
}

/// Timeouts and retries (RFC 5080 §2.2.1 retransmission behaviour).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait for the first attempt.
    pub initial_timeout: Duration,
    /// Cap of the doubling wait.
    pub max_timeout: Duration,
    /// Attempts in all (1 = no retransmission).
    pub attempts: u32,
}

impl Default for RetryPolicy {
    /// 1 s, doubling up to 8 s, 4 attempts (radclient's default is 3 tries of 5 s).
    fn default() -> Self {
        Self {
            initial_timeout: Duration::from_secs(1),
            max_timeout: Duration::from_secs(8),
            attempts: 4,
        }
    }
}

/// What happened to one request, whatever the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoaOutcome {
    pub identifier: u8,
    /// Transmissions (first + retransmissions).
    pub attempts: u32,
    /// Code of the accepted response, if any.
    pub code: Option<Code>,
    /// Error-Cause of the response (RFC 5176 §3.5), if it carried one.
    pub error_cause: Option<ErrorCause>,
    /// Responses discarded because they failed verification.
    pub invalid_responses: u32,
    /// From the first transmission to the accepted response (or to giving up).
    pub latency: Duration,
}

/// Why a CoA/Disconnect did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum CoaError {
    #[error("NAS refused with {code:?}, Error-Cause {}", fmt_cause(.outcome.error_cause))]
    Nak { code: Code, outcome: CoaOutcome },
    #[error("no valid response after {} attempts ({} invalid responses discarded)", .outcome.attempts, .outcome.invalid_responses)]
    Timeout { outcome: CoaOutcome },
    #[error("NAS answered with unexpected code {code:?}")]
    UnexpectedCode { code: Code, outcome: CoaOutcome },
    #[error("rate attributes: {0}")]
    Rate(#[from] RateError),
    #[error("encoding the request: {0}")]
    Encode(#[from] EncodeError),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the client's receive task has stopped")]
    Closed,
}

fn fmt_cause(c: Option<ErrorCause>) -> String {
    c.map_or_else(|| "absent".to_owned(), |c| c.to_string())
}

impl CoaError {
    /// The outcome, for errors that got as far as sending.
    #[must_use]
    pub fn outcome(&self) -> Option<&CoaOutcome> {
        match self {
            CoaError::Nak { outcome, .. }
            | CoaError::Timeout { outcome }
            | CoaError::UnexpectedCode { outcome, .. } => Some(outcome),
            _ => None,
        }
    }
}

struct Waiter {
    nas: SocketAddr,
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

type Pending = Arc<Mutex<HashMap<u8, Waiter>>>;

/// See the module documentation.
#[derive(Debug)]
pub struct CoaClient {
    socket: Arc<UdpSocket>,
    pending: Pending,
    slots: Semaphore,
    next_id: Mutex<u8>,
    retry: RetryPolicy,
    recv_task: JoinHandle<()>,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").field("nas", &self.nas).finish()
    }
}

impl Drop for CoaClient {
    fn drop(&mut self) {
        self.recv_task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CoaClient {
    /// Binds `local` (port 0 for any) and starts the receive task.
    pub async fn bind(local: SocketAddr, retry: RetryPolicy) -> std::io::Result<CoaClient> {
        let socket = Arc::new(UdpSocket::bind(local).await?);
        let pending: Pending = Arc::default();
        let recv_task = tokio::spawn(receive(socket.clone(), pending.clone()));
        Ok(CoaClient {
            socket,
            pending,
            slots: Semaphore::new(256),
            next_id: Mutex::new(0),
            retry,
            recv_task,
        })
    }

    /// The local address requests leave from.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends a CoA-Request giving `session` the rate of `qos` in the NAS's profile.
    pub async fn coa(
        &self,
        nas: &NasTarget,
        session: &SessionSelector,
        qos: &QosLevel,
    ) -> Result<CoaOutcome, CoaError> {
        let mut p = Packet::new(Code::CoaRequest, 0);
        session.write_to(&mut p);
        p.attributes.extend(nas.profile.encode(qos)?);
        self.request(nas, p).await
    }

    /// Sends a Disconnect-Request for `session`.
    pub async fn disconnect(
        &self,
        nas: &NasTarget,
        session: &SessionSelector,
    ) -> Result<CoaOutcome, CoaError> {
        let mut p = Packet::new(Code::DisconnectRequest, 0);
        session.write_to(&mut p);
        self.request(nas, p).await
    }

    /// Sends any CoA/Disconnect request (its identifier is assigned here), adding
    /// Event-Timestamp (RFC 5176 §3.6) and Message-Authenticator as configured. `Ok` on an ACK.
    pub async fn request(&self, nas: &NasTarget, mut p: Packet) -> Result<CoaOutcome, CoaError> {
        let _slot = self.slots.acquire().await.map_err(|_| CoaError::Closed)?;
        if p.get(dict::EVENT_TIMESTAMP).is_none() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            p.push_integer(
                dict::EVENT_TIMESTAMP,
                u32::try_from(now).unwrap_or(u32::MAX),
            );
        }
        if nas.message_authenticator {
            p.add_message_authenticator();
        }
        let (id, mut rx) = self.register(nas.addr);
        p.identifier = id;
        let result = self.exchange(nas, &p, &mut rx).await;
        lock(&self.pending).remove(&id);
        result
    }

    /// Takes a free identifier (one is free: the semaphore holds at most 256 requests).
    fn register(&self, nas: SocketAddr) -> (u8, mpsc::UnboundedReceiver<Vec<u8>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut pending = lock(&self.pending);
        let mut next = lock(&self.next_id);
        let id = loop {
            let id = *next;
            *next = next.wrapping_add(1);
            if !pending.contains_key(&id) {
                break id;
            }
        };
        pending.insert(id, Waiter { nas, tx });
        (id, rx)
    }

    async fn exchange(
        &self,
        nas: &NasTarget,
        p: &Packet,
        rx: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    ) -> Result<CoaOutcome, CoaError> {
        let bytes = encode_request(p, nas.secret.as_bytes())?;
        let req_auth: [u8; 16] = bytes[4..20].try_into().expect("20-byte header");
        let t0 = Instant::now();
        let mut outcome = CoaOutcome {
            identifier: p.identifier,
            attempts: 0,
            code: None,
            error_cause: None,
            invalid_responses: 0,
            latency: Duration::ZERO,
        };
        let mut wait = self.retry.initial_timeout;
        while outcome.attempts < self.retry.attempts.max(1) {
            self.socket.send_to(&bytes, nas.addr).await?;
            outcome.attempts += 1;
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let resp = match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(r)) => r,
                    Ok(None) => return Err(CoaError::Closed),
                    Err(_) => break,
                };
                match check(
                    &resp,
                    &req_auth,
                    nas.secret.as_bytes(),
                    nas.require_response_message_authenticator,
                ) {
                    Ok(r) => {
                        outcome.latency = t0.elapsed();
                        outcome.code = Some(r.code);
                        outcome.error_cause = r
                            .integer(dict::ERROR_CAUSE)
                            .ok()
                            .flatten()
                            .map(ErrorCause::from_code);
                        return classify(p.code, r.code, outcome);
                    }
                    Err(e) => {
                        debug!(nas = %nas.addr, id = p.identifier, error = %e, "discarding response");
                        outcome.invalid_responses += 1;
                    }
                }
            }
            wait = (wait * 2).min(self.retry.max_timeout);
        }
        outcome.latency = t0.elapsed();
        Err(CoaError::Timeout { outcome })
    }
}

fn check(
    resp: &[u8],
    req_auth: &[u8; 16],
    secret: &[u8],
    require_ma: bool,
) -> Result<Packet, AuthError> {
    let p = Packet::decode(resp)?;
    verify_response(resp, req_auth, secret, require_ma)?;
    Ok(p)
}

fn classify(request: Code, response: Code, outcome: CoaOutcome) -> Result<CoaOutcome, CoaError> {
    match (request, response) {
        (Code::CoaRequest, Code::CoaAck) | (Code::DisconnectRequest, Code::DisconnectAck) => {
            Ok(outcome)
        }
        (Code::CoaRequest, Code::CoaNak) | (Code::DisconnectRequest, Code::DisconnectNak) => {
            Err(CoaError::Nak {
                code: response,
                outcome,
            })
        }
        (_, code) => Err(CoaError::UnexpectedCode { code, outcome }),
    }
}

/// Routes each datagram to the request waiting on its identifier, if it came from that
/// request's NAS.
async fn receive(socket: Arc<UdpSocket>, pending: Pending) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                debug!(error = %e, "coa client recv");
                // Do not spin on a persistent socket error.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if n < 2 {
            continue;
        }
        let id = buf[1];
        let g = lock(&pending);
        match g.get(&id) {
            Some(w) if w.nas == src => {
                let _ = w.tx.send(buf[..n].to_vec());
            }
            Some(w) => debug!(%src, expected = %w.nas, id, "response from the wrong address"),
            None => debug!(%src, id, "response to no pending request"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "nas-secret";

    fn nas(addr: SocketAddr) -> NasTarget {
        NasTarget {
            addr,
            secret: SECRET.into(),
            profile: RateProfile::Plain,
            message_authenticator: true,
            require_response_message_authenticator: true,
        }
    }

    fn answer(req: &[u8], code: Code, cause: Option<ErrorCause>, secret: &str) -> Vec<u8> {
        let p = Packet::decode(req).unwrap();
        let mut r = Packet::new(code, p.identifier);
        r.add_message_authenticator();
        if let Some(c) = cause {
            r.push_integer(dict::ERROR_CAUSE, c.code());
        }
        encode_response(&r, &p.authenticator, secret.as_bytes()).unwrap()
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            initial_timeout: Duration::from_millis(150),
            max_timeout: Duration::from_millis(300),
            attempts: 3,
        }
    }

    use crate::proto::radius::{encode_response, verify_request};

    /// A fake NAS that drops the first transmission, answers the retransmission first from
    /// another socket (wrong source), then with a wrong secret, then correctly with a NAK.
    #[tokio::test]
    async fn retransmits_and_accepts_only_a_verified_answer_from_the_nas() {
        let nas_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = nas(nas_sock.local_addr().unwrap());
        let fake = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let (n1, _) = nas_sock.recv_from(&mut buf).await.unwrap();
            let first = buf[..n1].to_vec();
            verify_request(&first, SECRET.as_bytes(), true).unwrap();
            let (n2, from) = nas_sock.recv_from(&mut buf).await.unwrap();
            assert_eq!(
                &buf[..n2],
                first.as_slice(),
                "a retransmission is the same datagram"
            );
            let good = answer(
                &first,
                Code::CoaNak,
                Some(ErrorCause::ResourcesUnavailable),
                SECRET,
            );
            other.send_to(&good, from).await.unwrap();
            let forged = answer(&first, Code::CoaAck, None, "not-the-secret");
            nas_sock.send_to(&forged, from).await.unwrap();
            nas_sock.send_to(&good, from).await.unwrap();
            first
        });
        let client = CoaClient::bind("127.0.0.1:0".parse().unwrap(), quick())
            .await
            .unwrap();
        let qos = QosLevel {
            max_down_bps: Some(20_000_000),
            max_up_bps: Some(2_000_000),
            ..QosLevel::default()
        };
        let err = client
            .coa(&target, &SessionSelector::by_session_id("s1"), &qos)
            .await
            .unwrap_err();
        let sent = fake.await.unwrap();
        match err {
            CoaError::Nak { code, outcome } => {
                assert_eq!(code, Code::CoaNak);
                assert_eq!(outcome.attempts, 2);
                assert_eq!(outcome.error_cause, Some(ErrorCause::ResourcesUnavailable));
                assert_eq!(outcome.invalid_responses, 1, "the forged ACK was discarded");
            }
            other => panic!("expected a NAK, got {other}"),
        }
        let p = Packet::decode(&sent).unwrap();
        assert_eq!(p.text(dict::FILTER_ID).unwrap(), Some("20000/2000"));
        assert_eq!(p.text(dict::ACCT_SESSION_ID).unwrap(), Some("s1"));
        assert!(p.integer(dict::EVENT_TIMESTAMP).unwrap().is_some());
        assert!(client.pending.lock().unwrap().is_empty());
    }

    /// Concurrent requests get distinct identifiers; each is answered in reverse order and
    /// matched to its own request.
    #[tokio::test]
    async fn concurrent_requests_get_distinct_identifiers() {
        let nas_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = nas(nas_sock.local_addr().unwrap());
        let fake = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            for _ in 0..8 {
                let (n, from) = nas_sock.recv_from(&mut buf).await.unwrap();
                got.push((buf[..n].to_vec(), from));
            }
            let ids: std::collections::BTreeSet<u8> = got.iter().map(|(b, _)| b[1]).collect();
            assert_eq!(ids.len(), 8);
            for (req, from) in got.iter().rev() {
                nas_sock
                    .send_to(&answer(req, Code::DisconnectAck, None, SECRET), from)
                    .await
                    .unwrap();
            }
        });
        let client = Arc::new(
            CoaClient::bind("127.0.0.1:0".parse().unwrap(), quick())
                .await
                .unwrap(),
        );
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (c, t) = (client.clone(), target.clone());
            tasks.push(tokio::spawn(async move {
                c.disconnect(&t, &SessionSelector::by_session_id(format!("s{i}")))
                    .await
            }));
        }
        for t in tasks {
            let o = t.await.unwrap().unwrap();
            assert_eq!((o.code, o.attempts), (Some(Code::DisconnectAck), 1));
        }
        fake.await.unwrap();
    }

    #[tokio::test]
    async fn silence_is_a_timeout_after_every_attempt() {
        let nas_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = CoaClient::bind("127.0.0.1:0".parse().unwrap(), quick())
            .await
            .unwrap();
        let qos = QosLevel {
            max_down_bps: Some(1_000_000),
            ..QosLevel::default()
        };
        let err = client
            .coa(
                &nas(nas_sock.local_addr().unwrap()),
                &SessionSelector::by_session_id("s"),
                &qos,
            )
            .await
            .unwrap_err();
        let outcome = *err.outcome().unwrap();
        assert!(matches!(err, CoaError::Timeout { .. }));
        assert_eq!((outcome.attempts, outcome.code), (3, None));
        // 150 + 300 + 300 ms of waiting.
        assert!(outcome.latency >= Duration::from_millis(700), "{outcome:?}");
        assert!(matches!(
            client
                .coa(
                    &nas(nas_sock.local_addr().unwrap()),
                    &SessionSelector::by_session_id("s"),
                    &QosLevel::default()
                )
                .await,
            Err(CoaError::Rate(RateError::NoRate))
        ));
    }
}
