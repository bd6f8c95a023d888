//! Wiring RADIUS into `shaper run` (issue 5: CoA in, accounting in, CoA out).
//!
//! - **CoA/Disconnect in** ([`start`]): the [`RadiusServer`] over the controller through
//!   [`ControllerSink`] — a CoA becomes a provisioning event, a Disconnect cancels it and ends
//!   the session. With `[nsm]`, the modems' new committed rates are then fed to the network
//!   service manager (as the tick loop does for timed changes), so a CoA grant's committed
//!   rate holds link capacity there.
//! - **Accounting in**: sessions go into the network service manager's durable session store
//!   through [`NsmSessions`] (Start/Interim → upsert, Stop and Accounting-On/Off → end, which
//!   releases the allocations on them) when `[nsm]` is configured, else into the in-memory
//!   [`SessionTable`]. The server answers only once the store has recorded the packet. A
//!   session reported on an address another session holds supersedes it: the older one is
//!   ended first (its allocations released, as a Stop would), so the new one is recorded and
//!   answered. Sessions silent past `radius.session_timeout_s` are ended the same way.
//! - **CoA out** ([`attach_bras`]): [`BrasCoaNotifier`] is the network service manager's
//!   [`Notifier`] for BRAS targets. For each session of the allocation behind that BRAS it sends
//!   a CoA-Request with the subscriber's rate (below) through a [`BrasNotifier`] for the
//!   configured BRAS, and logs the result in the delivery log of the allocation's provider
//!   (`GET /v1/providers/{id}/deliveries`): `url` is `radius-coa://<bras>?session=<id>` (the
//!   BRAS's address is not shown to the provider),
//!   `attempts` the transmissions, `last_code` the RADIUS response code (44 CoA-ACK, 45
//!   CoA-NAK), `last_error` the NAK's Error-Cause or why no answer came.
//!
//! # The rate sent to the BRAS
//!
//! An allocation is on top of the subscriber's plan: the BRAS must let the allocated traffic
//! through without squeezing the rest. The CoA carries, per direction, the subscriber's
//! effective maximum from the controller (its modem id is the subscriber id) plus the ceilings
//! of the subscriber's active allocations; a direction the plan leaves unlimited stays so.
//! The rate is computed when the notification runs, from the current state, so a late or
//! repeated CoA carries the current total (like the gateways' desired-state pushes). After the
//! last allocation is released it is the plan again. A release caused by the session's end
//! sends nothing for that session: the BRAS has already ended it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tracing::{debug, info, warn};

use super::bras::{BrasDirectory, BrasEntry, BrasNotifier, NotifyError as BrasError};
use super::coa::{CoaClient, CoaError};
use super::coa_server::{CoaRefusal, CoaSink, RadiusServer, RadiusServerHandle};
use super::config::{BrasPlan, RadiusPlan};
use super::controller_sink::ControllerSink;
use crate::clock::Clock;
use crate::controller::Controller;
use crate::nsm::NsmService;
use crate::nsm::NsmState;
use crate::nsm::model::{Dir, Session as NsmSession};
use crate::nsm::notify::{BoxFuture, DeliveryLog, Job, NoticeEvent, Notifier, NotifyError, Target};
use crate::provision::QosLevel;
use crate::sessions::{SessionSelector, SessionStore, SessionTable};
use crate::store::{Delivery, NsmStore, SqliteNsmStore, StoreError};

pub use super::nsm_sessions::{IntakeError, NsmSessions, from_nsm, to_nsm};

/// One configured BRAS and its CoA sender.
struct Bras {
    name: String,
    nas_ip: Option<Ipv4Addr>,
    addr: SocketAddr,
    notifier: BrasNotifier,
}

impl Bras {
    fn is(&self, id: &str) -> bool {
        self.name == id || self.nas_ip.is_some_and(|ip| ip.to_string() == id)
    }
}

/// The network service manager's [`Notifier`] for BRAS targets (see the module
/// documentation).
pub struct BrasCoaNotifier {
    bras: Vec<Bras>,
    service: Arc<Mutex<NsmService>>,
    controller: Arc<Mutex<Controller>>,
    log: DeliveryLog,
    clock: Clock,
}

impl std::fmt::Debug for BrasCoaNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.bras.iter().map(|b| b.name.as_str()).collect();
        f.debug_struct("BrasCoaNotifier")
            .field("bras", &names)
            .finish_non_exhaustive()
    }
}

/// The directory of one BRAS: sessions name it by NAS-Identifier `name`, or by its
/// NAS-IP-Address when configured.
fn directory_of(p: &BrasPlan) -> BrasDirectory {
    let mut entries = vec![BrasEntry {
        nas_ip: None,
        nas_identifier: Some(p.name.clone()),
        target: p.target.clone(),
    }];
    if let Some(ip) = p.nas_ip {
        entries.push(BrasEntry {
            nas_ip: Some(ip),
            nas_identifier: None,
            target: p.target.clone(),
        });
    }
    BrasDirectory(entries)
}

impl BrasCoaNotifier {
    /// One CoA client per BRAS (each with the BRAS's timeout and retries). `sessions` is what
    /// each [`BrasNotifier`] looks subscribers up in (this notifier names the sessions itself).
    pub async fn new(
        bras: &[BrasPlan],
        sessions: Arc<dyn SessionStore>,
        service: Arc<Mutex<NsmService>>,
        controller: Arc<Mutex<Controller>>,
        log: DeliveryLog,
        clock: Clock,
    ) -> std::io::Result<BrasCoaNotifier> {
        let mut out = Vec::with_capacity(bras.len());
        for p in bras {
            let local = match p.target.addr {
                SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
                SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
            };
            let client = CoaClient::bind(local, p.retry).await?;
            out.push(Bras {
                name: p.name.clone(),
                nas_ip: p.nas_ip,
                addr: p.target.addr,
                notifier: BrasNotifier::new(Arc::new(client), sessions.clone(), directory_of(p)),
            });
        }
        Ok(BrasCoaNotifier {
            bras: out,
            service,
            controller,
            log,
            clock,
        })
    }

    /// The subscriber's rate for the BRAS: its plan plus its active allocations' ceilings.
    fn subscriber_qos(&self, subscriber: &str) -> QosLevel {
        let base = self
            .controller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .effective(subscriber);
        let (mut up, mut down) = (0u64, 0u64);
        {
            let svc = self
                .service
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let core = svc.core();
            for a in core.allocations() {
                let mine = a.sessions.iter().any(|sid| {
                    core.session(sid)
                        .is_some_and(|s| s.subscriber == subscriber)
                });
                if mine {
                    up = up.saturating_add(a.request.ceil(Dir::Up));
                    down = down.saturating_add(a.request.ceil(Dir::Down));
                }
            }
        }
        let add = |plan: Option<u64>, extra: u64| match (plan, base.is_some()) {
            (Some(p), _) => Some(p.saturating_add(extra)),
            // A plan without a limit in this direction stays unlimited.
            (None, true) => None,
            // No plan known: the allocations alone.
            (None, false) => (extra > 0).then_some(extra),
        };
        let plan = base.unwrap_or_default();
        QosLevel {
            max_up_bps: add(plan.max_up_bps, up),
            max_down_bps: add(plan.max_down_bps, down),
            ..QosLevel::default()
        }
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

    /// Sends one session's CoA and logs it; the failure text if it failed.
    async fn deliver(
        &self,
        bras: &Bras,
        job: &Job,
        session: &NsmSession,
    ) -> Result<Option<String>, NotifyError> {
        let a = &job.notice.allocation;
        let now = (self.clock)();
        let delivery = Delivery {
            id: 0,
            provider: a.provider.clone(),
            allocation: a.id,
            event: job.notice.event.as_str().to_owned(),
            url: format!("radius-coa://{}?session={}", bras.name, session.id),
            attempts: 0,
            status: "pending".into(),
            last_code: None,
            last_error: None,
            created_ms: now,
            updated_ms: now,
        };
        let id = self.logged(move |s| s.start_delivery(&delivery)).await?;
        let qos = self.subscriber_qos(&session.subscriber);
        let notice = bras.notifier.session_qos(&from_nsm(session), &qos).await;
        let (attempts, code, error) = match &notice.result {
            Ok(o) => (o.attempts, o.code.map(|c| u16::from(c.to_u8())), None),
            Err(e) => {
                let outcome = match e {
                    BrasError::Coa { source, .. } => source.outcome().copied(),
                    _ => None,
                };
                let code = match e {
                    BrasError::Coa {
                        source: CoaError::Nak { code, .. } | CoaError::UnexpectedCode { code, .. },
                        ..
                    } => Some(u16::from(code.to_u8())),
                    _ => None,
                };
                (outcome.map_or(0, |o| o.attempts), code, Some(e.to_string()))
            }
        };
        let status = if error.is_none() {
            "delivered"
        } else {
            "failed"
        };
        match &error {
            None => info!(
                bras = bras.name,
                nas = %bras.addr,
                session = session.id,
                allocation = a.id,
                event = job.notice.event.as_str(),
                up = ?qos.max_up_bps,
                down = ?qos.max_down_bps,
                attempts,
                "CoA to the BRAS acknowledged"
            ),
            Some(e) => warn!(
                bras = bras.name,
                nas = %bras.addr,
                session = session.id,
                allocation = a.id,
                event = job.notice.event.as_str(),
                attempts,
                "CoA to the BRAS failed: {e}"
            ),
        }
        let now = (self.clock)();
        let text = error.clone();
        self.logged(move |s| s.record_attempt(id, attempts, status, code, text.as_deref(), now))
            .await?;
        Ok(error)
    }
}

impl Notifier for BrasCoaNotifier {
    fn notify<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let Target::Bras(id) = &job.target else {
                return Err(NotifyError::Other {
                    target: format!("{:?}", job.target),
                    detail: "the BRAS notifier only serves BRAS targets".into(),
                });
            };
            let target = format!("bras {id}");
            let Some(bras) = self.bras.iter().find(|b| b.is(id)) else {
                let detail = "not configured in [[radius.bras]] (by name or nas_ip)".to_owned();
                // Logged, so the provider and the operator see why the BRAS was not told.
                let now = (self.clock)();
                let a = &job.notice.allocation;
                let delivery = Delivery {
                    id: 0,
                    provider: a.provider.clone(),
                    allocation: a.id,
                    event: job.notice.event.as_str().to_owned(),
                    url: format!("radius-coa://{id}"),
                    attempts: 0,
                    status: "failed".into(),
                    last_code: None,
                    last_error: Some(format!("bras {id}: {detail}")),
                    created_ms: now,
                    updated_ms: now,
                };
                self.logged(move |s| s.start_delivery(&delivery)).await?;
                return Err(NotifyError::Other { target, detail });
            };
            let mut failed = Vec::new();
            for s in job.notice.sessions.iter().filter(|s| s.bras == *id) {
                let active = self
                    .service
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .core()
                    .session(&s.id)
                    .is_some();
                if job.notice.event == NoticeEvent::Released && !active {
                    debug!(session = s.id, bras = bras.name, "session ended: no CoA");
                    continue;
                }
                if let Some(e) = self.deliver(bras, job, s).await? {
                    failed.push(format!("session {}: {e}", s.id));
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(NotifyError::Other {
                    target,
                    detail: failed.join("; "),
                })
            }
        })
    }
}

/// Puts the BRAS notifier into `nsm`'s notifiers (`nsm.bras = true`). `store` is the network
/// service manager's SQLite file (its delivery log gets a connection of its own).
pub async fn attach_bras(
    nsm: &mut NsmState,
    plan: &RadiusPlan,
    controller: Arc<Mutex<Controller>>,
    store: &Path,
    clock: Clock,
) -> anyhow::Result<()> {
    let log = SqliteNsmStore::open(store).with_context(|| {
        format!(
            "nsm.store: opening {} for the BRAS delivery log",
            store.display()
        )
    })?;
    let log: DeliveryLog = Arc::new(Mutex::new(Box::new(log)));
    // The BrasNotifiers' own session lookup (by subscriber) is not used on this path: the
    // jobs name their sessions. It reads the manager's sessions all the same.
    let lookups: Arc<dyn SessionStore> =
        Arc::new(NsmSessions::new(nsm.clone(), None, clock.clone()));
    let notifier = BrasCoaNotifier::new(
        &plan.bras,
        lookups,
        nsm.service.clone(),
        controller,
        log,
        clock,
    )
    .await
    .context("radius.bras: binding the CoA client sockets")?;
    info!(bras = ?notifier, "BRAS notification (RADIUS CoA) on");
    nsm.notifiers.bras = Some(Arc::new(notifier));
    Ok(())
}

/// The controller sink, followed by feeding the modems' new committed rates to the network
/// service manager (what the tick loop does for its own changes: a CoA grant's committed rate
/// holds link capacity the manager must not hand out again).
struct FeedingSink {
    inner: ControllerSink,
    controller: Arc<Mutex<Controller>>,
    nsm: NsmState,
}

impl FeedingSink {
    /// The modems (subscribers) of the sessions `target` names.
    fn modems(&self, target: &SessionSelector) -> Vec<String> {
        self.nsm
            .service
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .core()
            .sessions()
            .map(from_nsm)
            .filter(|s| target.matches(s))
            .filter_map(|s| s.subscriber)
            .collect()
    }

    fn feed(&self, modems: &[String]) {
        // Lock order as in the tick loop: controller, then manager.
        let c = self
            .controller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut svc = self
            .nsm
            .service
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        crate::nsm::run::feed_provisioned(&c, &mut svc, Some(modems));
    }
}

impl CoaSink for FeedingSink {
    fn coa(&self, target: SessionSelector, qos: QosLevel) -> Result<(), CoaRefusal> {
        let modems = self.modems(&target);
        self.inner.coa(target, qos)?;
        self.feed(&modems);
        Ok(())
    }

    fn disconnect(&self, target: SessionSelector) -> Result<(), CoaRefusal> {
        // The sessions are gone afterwards: their modems first.
        let modems = self.modems(&target);
        self.inner.disconnect(target)?;
        self.feed(&modems);
        Ok(())
    }
}

/// Starts the CoA/Disconnect and accounting servers of `plan` (none when neither listener is
/// configured): CoA through the controller, accounting into `nsm`'s sessions when given, else
/// an in-memory table.
pub async fn start(
    plan: &RadiusPlan,
    controller: Arc<Mutex<Controller>>,
    nsm: Option<&NsmState>,
    local_gateway: Option<String>,
    clock: Clock,
) -> anyhow::Result<Option<RadiusServerHandle>> {
    let Some(mut config) = plan.server_config() else {
        return Ok(None);
    };
    if config.gateway.is_none() {
        config.gateway = local_gateway.clone();
    }
    let sessions: Arc<dyn SessionStore> = match nsm {
        Some(n) => Arc::new(NsmSessions::new(n.clone(), local_gateway, clock.clone())),
        None => Arc::new(SessionTable::new()),
    };
    let inner = ControllerSink::new(controller.clone(), sessions.clone(), clock.clone());
    let sink: Arc<dyn CoaSink> = match nsm {
        Some(n) => Arc::new(FeedingSink {
            inner,
            controller,
            nsm: n.clone(),
        }),
        None => Arc::new(inner),
    };
    let server = Arc::new(
        RadiusServer::new(config, sink, sessions).context("radius: server configuration")?,
    );
    let handle = server.spawn(clock).await.with_context(|| {
        format!(
            "radius: binding coa_listen {:?} / accounting_listen {:?}",
            plan.coa_listen, plan.accounting_listen
        )
    })?;
    info!(
        coa = ?plan.coa_listen.map(|_| handle.coa_addr),
        accounting = ?handle.acct_addr,
        clients = plan.clients.len(),
        sessions = if nsm.is_some() { "network service manager (durable)" } else { "in memory" },
        "RADIUS serving"
    );
    Ok(Some(handle))
}
