//! Notifications of allocation changes (docs/ARCHITECTURE.md §1.6): the BRAS (RADIUS CoA, RFC
//! 5176), the routing gateways that carry the traffic, and the provider itself.
//!
//! The allocation path produces one [`Job`] per target after the change is durable and the
//! local data plane enforces it; [`Notifiers::dispatch`] hands each job to the [`Notifier`]
//! of its target kind on its own task, so a slow or dead peer delays nobody else. A target
//! kind without a notifier (switched off in configuration) gets nothing.
//!
//! - **BRAS**: whatever implements [`Notifier`] for [`Target::Bras`] (the RADIUS CoA client).
//! - **Gateways**: [`GatewayNotifier`]. The local gateway (this process's data plane) has
//!   already enforced the change; a remote one gets the *desired state* — every active
//!   allocation whose sessions it routes — through a [`RemoteGateway`], e.g. [`HttpGateway`]
//!   (POST of a JSON [`GatewayState`]). Pushing the whole state, not the delta, makes a push
//!   idempotent and lets a gateway that missed one catch up with the next.
//! - **Provider**: [`WebhookNotifier`]: POST of the JSON [`AllocationNotice`], signed with
//!   `X-Shaper-Signature: sha256=<hex HMAC-SHA256(secret, body)>` and timestamped with
//!   `X-Shaper-Timestamp` (ms since the Unix epoch; the body's `at_ms` is the same, so the
//!   signature covers it); retried with exponential backoff; every delivery logged in SQLite
//!   (attempts, status, last HTTP status, last error).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tracing::{debug, warn};

use super::http::{HttpError, HttpUrl, post_json};
use super::model::{Allocation, Session};
use crate::store::{Delivery, NsmStore, StoreError};

/// A boxed future, so the notifier traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What happened to an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeEvent {
    Allocated,
    Released,
}

impl NoticeEvent {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeEvent::Allocated => "allocated",
            NoticeEvent::Released => "released",
        }
    }
}

/// One allocation change, as sent to the BRAS and the provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AllocationNotice {
    pub event: NoticeEvent,
    pub allocation: Allocation,
    /// The sessions the allocation covers (address, BRAS, gateway).
    pub sessions: Vec<Session>,
    pub at_ms: u64,
}

/// A webhook secret; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Whom a job notifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A BRAS by id (the sessions' `bras`).
    Bras(String),
    /// A routing gateway by id (the sessions' `gateway`).
    Gateway(String),
    /// A provider's webhook.
    Provider {
        id: String,
        url: String,
        secret: Secret,
    },
}

/// The desired allocation state of one gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatewayState {
    pub gateway: String,
    pub at_ms: u64,
    /// The change that prompted this push.
    pub change: AllocationNotice,
    /// Every active allocation whose sessions this gateway routes, by id.
    pub allocations: Vec<Allocation>,
}

/// One notification to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub target: Target,
    pub notice: AllocationNotice,
    /// For [`Target::Gateway`]: the gateway's desired state.
    pub desired: Option<GatewayState>,
}

/// Why a notification failed (after its retries).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{target}: {source}")]
    Http {
        target: String,
        #[source]
        source: HttpError,
    },
    #[error("{target}: answered HTTP {status}")]
    Status { target: String, status: u16 },
    #[error("gateway {0}: neither local nor configured as remote")]
    UnknownGateway(String),
    #[error("{0}: a gateway job without its desired state")]
    NoDesiredState(String),
    #[error("delivery log: {0}")]
    Log(#[from] StoreError),
    #[error("encoding the notice: {0}")]
    Encode(#[from] serde_json::Error),
    /// Any other failure of a notifier implemented elsewhere (the RADIUS CoA client).
    #[error("{target}: {detail}")]
    Other { target: String, detail: String },
}

/// Carries jobs of one target kind to their peers.
pub trait Notifier: Send + Sync {
    fn notify<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), NotifyError>>;
}

/// The notifier per target kind; `None` = switched off.
#[derive(Clone, Default)]
pub struct Notifiers {
    pub bras: Option<Arc<dyn Notifier>>,
    pub gateways: Option<Arc<dyn Notifier>>,
    pub provider: Option<Arc<dyn Notifier>>,
}

impl std::fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifiers")
            .field("bras", &self.bras.is_some())
            .field("gateways", &self.gateways.is_some())
            .field("provider", &self.provider.is_some())
            .finish()
    }
}

impl Notifiers {
    /// The notifier a job goes to.
    #[must_use]
    pub fn for_target(&self, t: &Target) -> Option<&Arc<dyn Notifier>> {
        match t {
            Target::Bras(_) => self.bras.as_ref(),
            Target::Gateway(_) => self.gateways.as_ref(),
            Target::Provider { .. } => self.provider.as_ref(),
        }
    }

    /// Runs every job on its own task (needs a tokio runtime); failures are logged.
    pub fn dispatch(&self, jobs: Vec<Job>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut handles = Vec::new();
        for job in jobs {
            let Some(n) = self.for_target(&job.target).cloned() else {
                debug!(target = ?job.target, "notifications of this kind are off");
                continue;
            };
            handles.push(tokio::spawn(async move {
                if let Err(e) = n.notify(&job).await {
                    warn!(
                        allocation = job.notice.allocation.id,
                        event = job.notice.event.as_str(),
                        "notification failed: {e}"
                    );
                }
            }));
        }
        handles
    }
}

/// Retries: `attempts` in all, waiting `base`, `2 × base`, ... (at most `max`) in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
    /// Bound of one HTTP exchange.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `n` (1-based).
    #[must_use]
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// Is an HTTP status worth retrying? 408, 425, 429 and 5xx are; other 4xx are final.
fn retryable(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || status >= 500
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
#[must_use]
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(71);
    out.push_str("sha256=");
    for b in tag {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Checks a signature header in constant time (for receivers, and the tests).
#[must_use]
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    if hex.len() != 64 {
        return false;
    }
    let mut tag = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
        let Ok(s) = std::str::from_utf8(pair) else {
            return false;
        };
        let Ok(b) = u8::from_str_radix(s, 16) else {
            return false;
        };
        tag[i] = b;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

/// The delivery log the webhook writes to (its own connection to the store file).
pub type DeliveryLog = Arc<Mutex<Box<dyn NsmStore>>>;

/// Provider webhooks (see the module documentation).
pub struct WebhookNotifier {
    log: DeliveryLog,
    retry: RetryPolicy,
    clock: crate::clock::Clock,
}

impl WebhookNotifier {
    #[must_use]
    pub fn new(log: DeliveryLog, retry: RetryPolicy, clock: crate::clock::Clock) -> Self {
        Self { log, retry, clock }
    }

    async fn logged<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn NsmStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, NotifyError> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            let mut g = log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(g.as_mut())
        })
        .await
        .map_err(|e| NotifyError::Other {
            target: "delivery log".into(),
            detail: e.to_string(),
        })?
        .map_err(NotifyError::Log)
    }

    async fn deliver(
        &self,
        provider: &str,
        url: &str,
        secret: &Secret,
        notice: &AllocationNotice,
    ) -> Result<(), NotifyError> {
        let target = format!("provider {provider} webhook");
        let body = serde_json::to_vec(notice)?;
        let sig = signature(secret.0.as_bytes(), &body);
        let now = (self.clock)();
        let delivery = Delivery {
            id: 0,
            provider: provider.to_owned(),
            allocation: notice.allocation.id,
            event: notice.event.as_str().to_owned(),
            url: url.to_owned(),
            attempts: 0,
            status: "pending".into(),
            last_code: None,
            last_error: None,
            created_ms: now,
            updated_ms: now,
        };
        let id = self.logged(move |s| s.start_delivery(&delivery)).await?;
        let parsed = match HttpUrl::parse(url) {
            Ok(u) => u,
            Err(source) => {
                let msg = source.to_string();
                self.logged(move |s| s.record_attempt(id, 0, "failed", None, Some(&msg), now))
                    .await?;
                return Err(NotifyError::Http { target, source });
            }
        };
        let headers = [
            ("x-shaper-signature", sig),
            ("x-shaper-timestamp", notice.at_ms.to_string()),
            ("x-shaper-event", notice.event.as_str().to_owned()),
            ("x-shaper-delivery", id.to_string()),
        ];
        let mut attempt = 0;
        loop {
            attempt += 1;
            let res = post_json(&parsed, &headers, body.clone(), self.retry.timeout).await;
            let (code, error, done) = match &res {
                Ok(s) if (200..300).contains(s) => (Some(*s), None, Some(true)),
                Ok(s) if !retryable(*s) => (Some(*s), Some(format!("HTTP {s}")), Some(false)),
                Ok(s) => (Some(*s), Some(format!("HTTP {s}")), None),
                Err(e) => (None, Some(e.to_string()), None),
            };
            let last = attempt >= self.retry.attempts;
            let status = match (done, last) {
                (Some(true), _) => "delivered",
                (Some(false), _) | (None, true) => "failed",
                (None, false) => "pending",
            };
            let now = (self.clock)();
            let err_text = error.clone();
            self.logged(move |s| {
                s.record_attempt(id, attempt, status, code, err_text.as_deref(), now)
            })
            .await?;
            match status {
                "delivered" => return Ok(()),
                "failed" => {
                    return Err(match res {
                        Ok(status) => NotifyError::Status { target, status },
                        Err(source) => NotifyError::Http { target, source },
                    });
                }
                _ => tokio::time::sleep(self.retry.backoff(attempt)).await,
            }
        }
    }
}

impl Notifier for WebhookNotifier {
    fn notify<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            match &job.target {
                Target::Provider { id, url, secret } => {
                    self.deliver(id, url, secret, &job.notice).await
                }
                other => Err(NotifyError::Other {
                    target: format!("{other:?}"),
                    detail: "the webhook notifier only serves provider targets".into(),
                }),
            }
        })
    }
}

/// A gateway this process does not enforce itself: it is told its desired state.
pub trait RemoteGateway: Send + Sync {
    fn push<'a>(&'a self, state: &'a GatewayState) -> BoxFuture<'a, Result<(), NotifyError>>;
}

/// A remote gateway reached over HTTP: each push is a `POST` of the JSON [`GatewayState`] to
/// the configured URL (`nsm.gateway[].url`), retried like a webhook; any 2xx acknowledges.
/// The gateway agent applies `allocations` as its complete allocation set (what is not listed
/// is removed).
pub struct HttpGateway {
    pub id: String,
    pub url: HttpUrl,
    pub retry: RetryPolicy,
}

impl RemoteGateway for HttpGateway {
    fn push<'a>(&'a self, state: &'a GatewayState) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let target = format!("gateway {}", self.id);
            let body = serde_json::to_vec(state)?;
            let mut attempt = 0;
            loop {
                attempt += 1;
                let res = post_json(&self.url, &[], body.clone(), self.retry.timeout).await;
                let err = match res {
                    Ok(s) if (200..300).contains(&s) => return Ok(()),
                    Ok(status) if !retryable(status) => {
                        return Err(NotifyError::Status { target, status });
                    }
                    Ok(status) => NotifyError::Status {
                        target: target.clone(),
                        status,
                    },
                    Err(source) => NotifyError::Http {
                        target: target.clone(),
                        source,
                    },
                };
                if attempt >= self.retry.attempts {
                    return Err(err);
                }
                tokio::time::sleep(self.retry.backoff(attempt)).await;
            }
        })
    }
}

/// The gateways: the local one (already enforced) and the remote ones by id.
pub struct GatewayNotifier {
    pub local: Option<String>,
    pub remote: HashMap<String, Arc<dyn RemoteGateway>>,
}

impl Notifier for GatewayNotifier {
    fn notify<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let Target::Gateway(id) = &job.target else {
                return Err(NotifyError::Other {
                    target: format!("{:?}", job.target),
                    detail: "the gateway notifier only serves gateway targets".into(),
                });
            };
            if self.local.as_deref() == Some(id.as_str()) {
                return Ok(());
            }
            let gw = self
                .remote
                .get(id)
                .ok_or_else(|| NotifyError::UnknownGateway(id.clone()))?;
            let state = job
                .desired
                .as_ref()
                .ok_or_else(|| NotifyError::NoDesiredState(id.clone()))?;
            gw.push(state).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let s = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify_signature(
            b"Jefe",
            b"what do ya want for nothing?",
            &s
        ));
        assert!(!verify_signature(
            b"Jeff",
            b"what do ya want for nothing?",
            &s
        ));
        assert!(!verify_signature(
            b"Jefe",
            b"what do ya want for nothing!",
            &s
        ));
        assert!(!verify_signature(b"Jefe", b"x", "sha1=00"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            timeout: Duration::from_secs(1),
        };
        let waits: Vec<u128> = (1..=6).map(|n| r.backoff(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert!(retryable(503) && retryable(429) && !retryable(400) && !retryable(404));
    }
}
