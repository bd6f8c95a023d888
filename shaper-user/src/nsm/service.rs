//! The network service manager's shell around the decision core: every change is checked by
//! the core, made durable in the store, enforced in the local data plane, and only then made
//! current in the core; notifications for it are queued as [`Job`]s for the caller to
//! dispatch ([`NsmService::take_jobs`], [`super::Notifiers::dispatch`]).
//!
//! Allocation order: `decide` → enforce (all-or-nothing) → store (durable) → `commit` →
//! jobs. A store failure after enforcing removes the enforcement again, so an acknowledged
//! allocation is always both stored and enforced, and a refused one neither. Release order:
//! store → core (capacity given back) → data plane; a data-plane removal that fails is kept
//! in [`NsmService::unenforced`] and logged (the allocation is released in the books; the
//! leftover class can only restrict traffic, never admit more).
//!
//! The service is synchronous (callers hold it under a mutex on the blocking pool, like the
//! provisioning [`crate::controller::Controller`]) and reads no clock: calls take `now_ms`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::core::{CatalogError, NsmCore, Refusal};
use super::enforce::{AllocEnforceError, AllocationTarget, EnforcePlan};
use super::model::{
    Allocation, AllocationRequest, AllocationState, Application, Dir, Link, Provider, Session,
};
use super::notify::{AllocationNotice, GatewayState, Job, NoticeEvent, Secret, Target};
use crate::store::{Delivery, NsmStore, SessionStore, SessionStoreError, StoreError};

/// Configuration of the manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsmConfig {
    /// Committed rates may reach capacity × this / 1000 on every link direction.
    pub overbooking_permille: u32,
    /// The gateways a session may be behind (`nsm.local_gateway` and the `[[nsm.gateway]]`
    /// ids): a session naming another is refused. `None`: not checked (embedding, tests).
    pub gateways: Option<BTreeSet<String>>,
}

impl Default for NsmConfig {
    fn default() -> Self {
        Self {
            overbooking_permille: 1000,
            gateways: None,
        }
    }
}

/// Why a manager call failed. Nothing changed unless the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum NsmError {
    /// The allocation request was refused (which constraint, what is asked, what is left).
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("data plane: {0}")]
    Enforce(#[from] AllocEnforceError),
    #[error("provider {provider} has no allocation {id}")]
    UnknownAllocation { provider: String, id: u64 },
    #[error("allocation {id} is already released")]
    AlreadyReleased { id: u64 },
}

/// A link with what is committed on it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LinkUsage {
    #[serde(flatten)]
    pub link: Link,
    pub committed_up_bps: u64,
    pub committed_down_bps: u64,
    pub limit_up_bps: u64,
    pub limit_down_bps: u64,
}

/// See the module documentation.
pub struct NsmService {
    core: NsmCore,
    store: Box<dyn NsmStore>,
    target: Box<dyn AllocationTarget>,
    gateways: Option<BTreeSet<String>>,
    next_id: u64,
    jobs: Vec<Job>,
    unenforced: BTreeMap<u64, String>,
}

impl std::fmt::Debug for NsmService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NsmService")
            .field("sessions", &self.core.session_count())
            .field("next_id", &self.next_id)
            .field("unenforced", &self.unenforced)
            .finish_non_exhaustive()
    }
}

fn plan_of(
    a: &Allocation,
    scopes: Vec<(crate::policy::Prefix, Vec<super::model::CompiledClassifier>)>,
) -> EnforcePlan {
    let r = &a.request;
    EnforcePlan {
        id: a.id,
        scopes,
        rate_up: r.rate(Dir::Up),
        rate_down: r.rate(Dir::Down),
        ceil_up: r.ceil(Dir::Up),
        ceil_down: r.ceil(Dir::Down),
        burst_bytes: r.burst_bytes,
        dscp: a.dscp,
        priority: r.priority,
        mtu: r.mtu,
    }
}

impl NsmService {
    /// Opens the manager on `store`: loads the catalogue and the active sessions, and restores
    /// every active allocation (charged again and enforced in `target`). An allocation whose
    /// session ended while no manager ran is released (durably) with that reason.
    pub fn open(
        config: NsmConfig,
        store: Box<dyn NsmStore>,
        target: Box<dyn AllocationTarget>,
        now_ms: u64,
    ) -> Result<Self, NsmError> {
        let snap = store.load_nsm()?;
        let mut core = NsmCore::new(config.overbooking_permille);
        for p in snap.providers {
            core.put_provider(p)?;
        }
        for a in snap.applications {
            core.put_application(a)?;
        }
        for l in snap.links {
            core.put_link(l)?;
        }
        for s in snap.sessions {
            let (prefix, _) = core.session_effects(&s)?;
            core.put_session(s, prefix);
        }
        let mut svc = Self {
            core,
            store,
            target,
            gateways: config.gateways,
            next_id: snap.max_allocation_id + 1,
            jobs: Vec::new(),
            unenforced: BTreeMap::new(),
        };
        for a in snap.allocations {
            match svc.core.scopes_for(&a) {
                Some(scopes) => {
                    let plan = plan_of(&a, scopes);
                    if let Err(e) = svc.target.apply(&plan) {
                        tracing::error!(allocation = a.id, "restoring enforcement: {e}");
                        svc.unenforced.insert(a.id, e.to_string());
                    }
                    svc.core.commit(a);
                }
                None => {
                    let mut a = a;
                    a.state = AllocationState::Released;
                    a.released_ms = Some(now_ms);
                    a.release_reason =
                        Some("its session or application ended while no manager ran".into());
                    svc.store.put_allocations(&[&a])?;
                }
            }
        }
        Ok(svc)
    }

    /// The decision core (read-only: lookups, capacity).
    #[must_use]
    pub fn core(&self) -> &NsmCore {
        &self.core
    }

    /// Notifications queued by the calls so far, to dispatch.
    pub fn take_jobs(&mut self) -> Vec<Job> {
        std::mem::take(&mut self.jobs)
    }

    /// Allocations whose enforcement (restore) or removal failed, with the error.
    #[must_use]
    pub fn unenforced(&self) -> &BTreeMap<u64, String> {
        &self.unenforced
    }

    // ---- catalogue -----------------------------------------------------------------------

    pub fn put_provider(&mut self, p: Provider) -> Result<(), NsmError> {
        self.core.check_put_provider(&p)?;
        self.store.put_provider(&p)?;
        self.core.put_provider(p)?;
        Ok(())
    }

    pub fn delete_provider(&mut self, id: &str) -> Result<(), NsmError> {
        self.core.check_delete_provider(id)?;
        self.store.delete_provider(id)?;
        self.core.delete_provider(id);
        Ok(())
    }

    pub fn put_application(&mut self, a: Application) -> Result<(), NsmError> {
        self.core.check_application(&a)?;
        if self
            .core
            .allocations()
            .any(|x| x.provider == a.provider && x.request.application == a.id)
        {
            return Err(CatalogError::InUse {
                what: "application",
                id: a.id.clone(),
                users: "active allocations (release them before changing its classifiers)".into(),
            }
            .into());
        }
        self.store.put_application(&a)?;
        self.core.put_application(a)?;
        Ok(())
    }

    pub fn delete_application(&mut self, provider: &str, id: &str) -> Result<(), NsmError> {
        self.core.check_delete_application(provider, id)?;
        self.store.delete_application(provider, id)?;
        self.core.delete_application(provider, id);
        Ok(())
    }

    /// Registers a link or changes its capacity; a capacity that would hold less than is
    /// committed on the link is refused ([`CatalogError::BelowCommitted`]).
    pub fn put_link(&mut self, l: Link) -> Result<(), NsmError> {
        self.core.check_put_link(&l)?;
        self.store.put_link(&l)?;
        self.core.put_link(l)?;
        Ok(())
    }

    /// Registers a link of the configuration (`[[nsm.link]]`, at start): the configuration
    /// is applied even below what is committed (nothing is evicted; new allocations are
    /// refused until enough is released), and that shortfall is returned for a warning.
    pub fn put_configured_link(&mut self, l: Link) -> Result<Option<CatalogError>, NsmError> {
        NsmCore::check_link(&l)?;
        let shortfall = self.core.check_put_link(&l).err();
        self.store.put_link(&l)?;
        self.core.put_link(l)?;
        Ok(shortfall)
    }

    /// Checks a session's bounds, its gateway against the configured ones, and that a new
    /// session keeps its subscriber within [`super::validate::MAX_SESSIONS_PER_SUBSCRIBER`].
    fn check_session_intake(&self, s: &Session) -> Result<(), CatalogError> {
        super::validate::session(s)?;
        if let Some(known) = self.gateways.as_ref().filter(|k| !k.contains(&s.gateway)) {
            let detail = if known.is_empty() {
                format!(
                    "gateway {} is unknown: no gateway is configured (nsm.local_gateway, \
                     [[nsm.gateway]])",
                    s.gateway
                )
            } else {
                format!(
                    "gateway {} is unknown; the known gateways are {}",
                    s.gateway,
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            return Err(super::error::invalid("gateway", detail));
        }
        let max = super::validate::MAX_SESSIONS_PER_SUBSCRIBER;
        let held = self.core.sessions_of(&s.subscriber);
        if held.len() >= max && !held.iter().any(|x| x.id == s.id) {
            return Err(CatalogError::Limit {
                field: "subscriber".into(),
                detail: format!(
                    "subscriber {} already holds {} active sessions; the limit is {max}",
                    s.subscriber,
                    held.len()
                ),
            });
        }
        Ok(())
    }

    /// Every link with its committed rates and limits, by id.
    #[must_use]
    pub fn links(&self) -> Vec<LinkUsage> {
        self.core
            .links()
            .map(|l| LinkUsage {
                link: l.clone(),
                committed_up_bps: self.core.committed(&l.id, Dir::Up),
                committed_down_bps: self.core.committed(&l.id, Dir::Down),
                limit_up_bps: self.core.limit(l, Dir::Up),
                limit_down_bps: self.core.limit(l, Dir::Down),
            })
            .collect()
    }

    /// The committed rates of a provisioning grant on `subscriber` (see
    /// [`NsmCore::set_provisioned`]); the controller feeds its effective QoS here.
    pub fn set_provisioned(&mut self, subscriber: &str, up_bps: u64, down_bps: u64) {
        self.core.set_provisioned(subscriber, up_bps, down_bps);
    }

    // ---- allocations ---------------------------------------------------------------------

    /// Admits, enforces and stores an allocation for `provider`, or refuses it.
    pub fn allocate(
        &mut self,
        provider: &str,
        request: AllocationRequest,
        now_ms: u64,
    ) -> Result<Allocation, NsmError> {
        let decision = self.core.decide(provider, &request)?;
        let alloc = Allocation {
            id: self.next_id,
            provider: provider.to_owned(),
            request,
            sessions: decision.sessions,
            charges: decision.charges,
            dscp: decision.dscp,
            state: AllocationState::Active,
            created_ms: now_ms,
            released_ms: None,
            release_reason: None,
        };
        let plan = plan_of(&alloc, decision.scopes);
        self.target.apply(&plan)?;
        if let Err(e) = self.store.put_allocations(&[&alloc]) {
            if let Err(undo) = self.target.remove(alloc.id) {
                self.unenforced.insert(alloc.id, undo.to_string());
            }
            return Err(e.into());
        }
        self.next_id += 1;
        self.core.commit(alloc.clone());
        self.queue(NoticeEvent::Allocated, &alloc, now_ms);
        Ok(alloc)
    }

    /// Releases an active allocation of `provider`.
    pub fn release(
        &mut self,
        provider: &str,
        id: u64,
        reason: &str,
        now_ms: u64,
    ) -> Result<Allocation, NsmError> {
        match self.core.allocation(id) {
            Some(a) if a.provider == provider => {}
            _ => {
                return match self.store.allocation(id)? {
                    Some(a) if a.provider == provider => Err(NsmError::AlreadyReleased { id }),
                    _ => Err(NsmError::UnknownAllocation {
                        provider: provider.to_owned(),
                        id,
                    }),
                };
            }
        }
        let released = self.release_many(&[id], reason, now_ms)?;
        Ok(released.into_iter().next().expect("one active allocation"))
    }

    /// Releases active allocations: store (one transaction) → core → data plane → jobs.
    fn release_many(
        &mut self,
        ids: &[u64],
        reason: &str,
        now_ms: u64,
    ) -> Result<Vec<Allocation>, StoreError> {
        let mut out: Vec<Allocation> = Vec::new();
        for id in ids {
            if let Some(a) = self.core.allocation(*id) {
                let mut a = a.clone();
                a.state = AllocationState::Released;
                a.released_ms = Some(now_ms);
                a.release_reason = Some(reason.to_owned());
                out.push(a);
            }
        }
        self.store
            .put_allocations(&out.iter().collect::<Vec<_>>())?;
        for a in &out {
            // Sessions as they are now, for the notices, before the core forgets them.
            self.queue(NoticeEvent::Released, a, now_ms);
            self.core.release(a.id, reason, now_ms);
            if let Err(e) = self.target.remove(a.id) {
                tracing::error!(allocation = a.id, "removing from the data plane: {e}");
                self.unenforced.insert(a.id, e.to_string());
            }
        }
        // Gateway states computed while releasing still listed the later ones: recompute.
        self.refresh_gateway_states(now_ms);
        Ok(out)
    }

    /// An allocation of `provider` (active or released).
    pub fn allocation(&self, provider: &str, id: u64) -> Result<Allocation, NsmError> {
        match self.store.allocation(id)? {
            Some(a) if a.provider == provider => Ok(a),
            _ => Err(NsmError::UnknownAllocation {
                provider: provider.to_owned(),
                id,
            }),
        }
    }

    /// A provider's allocations (active and released), by id.
    pub fn allocations_of(&self, provider: &str) -> Result<Vec<Allocation>, NsmError> {
        Ok(self.store.allocations_of(provider)?)
    }

    /// A provider's webhook deliveries.
    pub fn deliveries(&self, provider: &str) -> Result<Vec<Delivery>, NsmError> {
        Ok(self.store.deliveries(provider)?)
    }

    // ---- notifications -------------------------------------------------------------------

    fn queue(&mut self, event: NoticeEvent, a: &Allocation, now_ms: u64) {
        let sessions: Vec<Session> = a
            .sessions
            .iter()
            .filter_map(|id| self.core.session(id).cloned())
            .collect();
        let notice = AllocationNotice {
            event,
            allocation: a.clone(),
            sessions: sessions.clone(),
            at_ms: now_ms,
        };
        let bras: BTreeSet<&str> = sessions.iter().map(|s| s.bras.as_str()).collect();
        let gateways: BTreeSet<&str> = sessions.iter().map(|s| s.gateway.as_str()).collect();
        for b in bras {
            self.jobs.push(Job {
                target: Target::Bras(b.to_owned()),
                notice: notice.clone(),
                desired: None,
            });
        }
        for g in gateways {
            let desired = self.gateway_state(g, &notice, now_ms, event == NoticeEvent::Allocated);
            self.jobs.push(Job {
                target: Target::Gateway(g.to_owned()),
                notice: notice.clone(),
                desired: Some(desired),
            });
        }
        if let Some(p) = self.core.provider(&a.provider) {
            if let (Some(url), Some(secret)) = (&p.webhook_url, &p.webhook_secret) {
                self.jobs.push(Job {
                    target: Target::Provider {
                        id: p.id.clone(),
                        url: url.clone(),
                        secret: Secret(secret.clone()),
                    },
                    notice,
                    desired: None,
                });
            }
        }
    }

    /// The desired state of gateway `g`: every active allocation with a session it routes;
    /// `include` adds the notice's allocation (not yet committed when queued).
    fn gateway_state(
        &self,
        g: &str,
        change: &AllocationNotice,
        now_ms: u64,
        include: bool,
    ) -> GatewayState {
        let mut allocations: Vec<Allocation> = self
            .core
            .allocations()
            .filter(|a| a.id != change.allocation.id)
            .filter(|a| {
                a.sessions
                    .iter()
                    .any(|s| self.core.session(s).is_some_and(|s| s.gateway == g))
            })
            .cloned()
            .collect();
        if include {
            allocations.push(change.allocation.clone());
        }
        allocations.sort_by_key(|a| a.id);
        GatewayState {
            gateway: g.to_owned(),
            at_ms: now_ms,
            change: change.clone(),
            allocations,
        }
    }

    fn refresh_gateway_states(&mut self, now_ms: u64) {
        let mut jobs = std::mem::take(&mut self.jobs);
        for job in &mut jobs {
            if let (Target::Gateway(g), Some(_)) = (&job.target, &job.desired) {
                let include = job.notice.event == NoticeEvent::Allocated
                    && self.core.allocation(job.notice.allocation.id).is_some();
                job.desired = Some(self.gateway_state(g, &job.notice, now_ms, include));
            }
        }
        self.jobs = jobs;
    }

    /// Ends a session at `at_ms`, releasing the allocations that cover it.
    pub fn end_session_at(
        &mut self,
        id: &str,
        at_ms: u64,
    ) -> Result<Option<Session>, SessionStoreError> {
        if self.core.session(id).is_none() {
            return Ok(None);
        }
        let ids = self.core.allocations_of_session(id);
        self.release_many(&ids, &format!("session {id} ended"), at_ms)?;
        let ended = self.store.end_session(id, at_ms)?;
        self.core.end_session(id);
        Ok(ended)
    }
}

/// Session intake through the manager: writes through to the store and releases the
/// allocations a session change or end invalidates (their notices are queued; drain them with
/// [`NsmService::take_jobs`]). Lookups read the in-memory indexes.
impl SessionStore for NsmService {
    fn upsert_session(&mut self, session: &Session) -> Result<(), SessionStoreError> {
        self.check_session_intake(session)?;
        let (prefix, ends) = self.core.session_effects(session)?;
        if !ends.is_empty() {
            self.release_many(
                &ends,
                &format!("session {} changed", session.id),
                session.since_ms,
            )?;
        }
        self.store.upsert_session(session)?;
        self.core.put_session(session.clone(), prefix);
        Ok(())
    }

    fn end_session(&mut self, id: &str, at_ms: u64) -> Result<Option<Session>, SessionStoreError> {
        self.end_session_at(id, at_ms)
    }

    fn session(&self, id: &str) -> Result<Option<Session>, SessionStoreError> {
        Ok(self.core.session(id).cloned())
    }

    fn session_by_ip(&self, ip: IpAddr) -> Result<Option<Session>, SessionStoreError> {
        Ok(self.core.session_by_ip(ip).cloned())
    }

    fn sessions_of_subscriber(&self, subscriber: &str) -> Result<Vec<Session>, SessionStoreError> {
        let mut v: Vec<Session> = self
            .core
            .sessions_of(subscriber)
            .into_iter()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }
}
