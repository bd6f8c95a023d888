//! The decision core of the network service manager (3GPP: the PCRF's policy decision): pure,
//! in-memory, no IO, no clock (callers pass `now_ms`).
//!
//! It keeps indexes of everything a decision reads — providers with their declared prefixes,
//! compiled applications, links, the sessions online (by id, by address, by subscriber) —
//! and the committed rate on every link direction. Writes follow the service's order: the
//! caller asks first (`decide`, `session_effects`), makes its change durable, then tells the
//! core (`commit`, `put_session`, ...), so the core never runs ahead of the store.
//!
//! # Capacity
//!
//! Each link direction may carry committed rates up to `capacity × overbooking`, where the
//! committed rates are those of the active allocations plus those of provisioning grants
//! ([`NsmCore::set_provisioned`], fed from the controller's effective QoS). An allocation
//! charges its committed rate once per direction on each distinct link its sessions sit
//! behind: the session's gateway (which must be registered, else nothing could bound it) and
//! its BRAS when the BRAS is registered as a link. Admission refuses a request whose charge
//! would take any of them over its limit; release gives the charge back exactly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use super::error::invalid;
pub use super::error::{CatalogError, Refusal};
use super::model::{
    Allocation, AllocationRequest, AllocationState, Application, Charge, CompiledClassifier, Dir,
    Link, Provider, Session, dscp_for_priority,
};
use super::sessions::{SessionIndex, host};
use crate::policy::{MAX_RATE_BPS, MIN_MTU, Prefix};

pub use super::sessions::session_prefix;

/// What an admitted request will hold and where it is enforced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The sessions it covers, by id.
    pub sessions: Vec<String>,
    /// Subscriber-side prefixes the rules are scoped to, with the classifiers of their family.
    pub scopes: Vec<(Prefix, Vec<CompiledClassifier>)>,
    pub charges: Vec<Charge>,
    pub dscp: u8,
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct NsmCore {
    overbooking_permille: u64,
    providers: HashMap<String, (Provider, Vec<Prefix>)>,
    apps: HashMap<(String, String), (Application, Vec<CompiledClassifier>)>,
    links: BTreeMap<String, Link>,
    sessions: SessionIndex,
    allocations: BTreeMap<u64, Allocation>,
    by_session: HashMap<String, BTreeSet<u64>>,
    usage: HashMap<(String, Dir), u64>,
    /// Committed rates of provisioning grants per subscriber (up, down), and what they are
    /// charged on now (recomputed when the subscriber's sessions or the links change).
    provisioned: HashMap<String, (u64, u64, Vec<Charge>)>,
}

/// Is `inner` inside `outer`?
fn within(inner: &Prefix, outer: &Prefix) -> bool {
    inner.is_v4() == outer.is_v4() && outer.len <= inner.len && outer.contains(inner.addr)
}

impl NsmCore {
    /// An empty core; committed rates may reach `capacity × overbooking_permille / 1000`.
    #[must_use]
    pub fn new(overbooking_permille: u32) -> Self {
        Self {
            overbooking_permille: u64::from(overbooking_permille),
            providers: HashMap::new(),
            apps: HashMap::new(),
            links: BTreeMap::new(),
            sessions: SessionIndex::default(),
            allocations: BTreeMap::new(),
            by_session: HashMap::new(),
            usage: HashMap::new(),
            provisioned: HashMap::new(),
        }
    }

    // ---- catalogue -----------------------------------------------------------------------

    /// Checks a provider on its own: id, name, prefixes, webhook URL with its secret, each
    /// within its bounds ([`super::validate`]).
    pub fn check_provider(p: &Provider) -> Result<Vec<Prefix>, CatalogError> {
        super::validate::provider(p)
    }

    /// Creates or replaces a provider. Its applications must stay within its new prefixes.
    pub fn put_provider(&mut self, p: Provider) -> Result<(), CatalogError> {
        let prefixes = self.check_put_provider(&p)?;
        self.providers.insert(p.id.clone(), (p, prefixes));
        Ok(())
    }

    /// Checks [`Self::put_provider`] without changing anything.
    pub fn check_put_provider(&self, p: &Provider) -> Result<Vec<Prefix>, CatalogError> {
        let prefixes = Self::check_provider(p)?;
        for ((prov, app), (_, compiled)) in &self.apps {
            if *prov != p.id {
                continue;
            }
            if let Some(i) = compiled
                .iter()
                .position(|c| !prefixes.iter().any(|d| within(&c.provider_prefix, d)))
            {
                return Err(invalid(
                    "prefixes",
                    format!("application {app} classifier {i} would fall outside them"),
                ));
            }
        }
        Ok(prefixes)
    }

    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.get(id).map(|(p, _)| p)
    }

    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.providers.values().map(|(p, _)| p)
    }

    /// Removes a provider without applications (and so without allocations).
    pub fn check_delete_provider(&self, id: &str) -> Result<(), CatalogError> {
        if !self.providers.contains_key(id) {
            return Err(CatalogError::Unknown {
                what: "provider",
                id: id.into(),
            });
        }
        let apps: Vec<&str> = self
            .apps
            .keys()
            .filter(|(p, _)| p == id)
            .map(|(_, a)| a.as_str())
            .collect();
        if !apps.is_empty() {
            return Err(CatalogError::InUse {
                what: "provider",
                id: id.into(),
                users: format!("applications {}", apps.join(", ")),
            });
        }
        Ok(())
    }

    pub fn delete_provider(&mut self, id: &str) {
        self.providers.remove(id);
    }

    /// Checks an application: its provider exists, every classifier parses and reaches only
    /// the provider's declared prefixes.
    pub fn check_application(
        &self,
        app: &Application,
    ) -> Result<Vec<CompiledClassifier>, CatalogError> {
        super::validate::application(app)?;
        let (_, declared) =
            self.providers
                .get(&app.provider)
                .ok_or_else(|| CatalogError::Unknown {
                    what: "provider",
                    id: app.provider.clone(),
                })?;
        if app.classifiers.is_empty() {
            return Err(invalid("classifiers", "an application needs a classifier"));
        }
        let mut out = Vec::with_capacity(app.classifiers.len());
        for (i, c) in app.classifiers.iter().enumerate() {
            let cc = c
                .compile()
                .map_err(|e| invalid(format!("classifiers[{i}].{}", e.field), e.detail))?;
            if !declared.iter().any(|d| within(&cc.provider_prefix, d)) {
                return Err(invalid(
                    format!("classifiers[{i}].provider_prefix"),
                    format!(
                        "{} is outside provider {}'s declared prefixes",
                        c.provider_prefix, app.provider
                    ),
                ));
            }
            out.push(cc);
        }
        Ok(out)
    }

    pub fn put_application(&mut self, app: Application) -> Result<(), CatalogError> {
        let compiled = self.check_application(&app)?;
        self.apps
            .insert((app.provider.clone(), app.id.clone()), (app, compiled));
        Ok(())
    }

    pub fn application(&self, provider: &str, id: &str) -> Option<&Application> {
        self.apps
            .get(&(provider.to_owned(), id.to_owned()))
            .map(|(a, _)| a)
    }

    pub fn applications(&self, provider: &str) -> Vec<&Application> {
        let mut v: Vec<&Application> = self
            .apps
            .values()
            .map(|(a, _)| a)
            .filter(|a| a.provider == provider)
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// An application may go once no active allocation uses it.
    pub fn check_delete_application(&self, provider: &str, id: &str) -> Result<(), CatalogError> {
        if self.application(provider, id).is_none() {
            return Err(CatalogError::Unknown {
                what: "application",
                id: id.into(),
            });
        }
        let users: Vec<String> = self
            .allocations
            .values()
            .filter(|a| a.provider == provider && a.request.application == id)
            .map(|a| a.id.to_string())
            .collect();
        if !users.is_empty() {
            return Err(CatalogError::InUse {
                what: "application",
                id: id.into(),
                users: format!("allocations {}", users.join(", ")),
            });
        }
        Ok(())
    }

    pub fn delete_application(&mut self, provider: &str, id: &str) {
        self.apps.remove(&(provider.to_owned(), id.to_owned()));
    }

    /// Checks a link: an id, and capacity in both directions.
    pub fn check_link(link: &Link) -> Result<(), CatalogError> {
        super::validate::link(link)
    }

    /// Checks [`Self::put_link`] without changing anything: the link on its own, and a new
    /// capacity of a registered link leaves room for what is committed on it (capacity ×
    /// overbooking ≥ committed, in both directions).
    pub fn check_put_link(&self, link: &Link) -> Result<(), CatalogError> {
        Self::check_link(link)?;
        if let Some((dir, committed)) = self.overcommitted(link) {
            return Err(CatalogError::BelowCommitted {
                link: link.id.clone(),
                dir,
                capacity_bps: link.capacity(dir),
                limit_bps: self.limit(link, dir),
                committed_bps: committed,
            });
        }
        Ok(())
    }

    /// The first direction in which `link` (a new capacity of it) would hold less than is
    /// committed on it now, with that committed rate.
    #[must_use]
    pub fn overcommitted(&self, link: &Link) -> Option<(Dir, u64)> {
        Dir::BOTH
            .into_iter()
            .map(|dir| (dir, self.committed(&link.id, dir)))
            .find(|(dir, committed)| *committed > self.limit(link, *dir))
    }

    /// Creates a link or changes its capacity, unchecked against what is committed (restore,
    /// configuration): a lower capacity never evicts what is committed; it only refuses new
    /// allocations until enough is released. [`Self::check_put_link`] refuses it instead.
    pub fn put_link(&mut self, link: Link) -> Result<(), CatalogError> {
        Self::check_link(&link)?;
        let new = self.links.insert(link.id.clone(), link).is_none();
        if new {
            // Provisioning grants behind a newly registered link now count on it.
            let subs: Vec<String> = self.provisioned.keys().cloned().collect();
            for sub in subs {
                self.recharge_provisioned(&sub);
            }
        }
        Ok(())
    }

    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.links.values()
    }

    /// Committed rate on a link direction.
    #[must_use]
    pub fn committed(&self, link: &str, dir: Dir) -> u64 {
        self.usage
            .get(&(link.to_owned(), dir))
            .copied()
            .unwrap_or(0)
    }

    /// The committed rates (up, down) provisioning grants hold for `subscriber`, as fed.
    #[must_use]
    pub fn provisioned(&self, subscriber: &str) -> (u64, u64) {
        self.provisioned
            .get(subscriber)
            .map_or((0, 0), |(up, down, _)| (*up, *down))
    }

    /// The most a link direction may carry committed: capacity × overbooking.
    #[must_use]
    pub fn limit(&self, link: &Link, dir: Dir) -> u64 {
        let l = u128::from(link.capacity(dir)) * u128::from(self.overbooking_permille) / 1000;
        u64::try_from(l).unwrap_or(u64::MAX)
    }

    // ---- sessions ------------------------------------------------------------------------

    /// The active session holding `addr` (exact IPv4, IPv6 /128, else its /64).
    #[must_use]
    pub fn session_by_ip(&self, addr: IpAddr) -> Option<&Session> {
        self.sessions.by_ip(addr).map(|e| &e.session)
    }

    #[must_use]
    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id).map(|e| &e.session)
    }

    /// The active sessions of a subscriber, by id.
    #[must_use]
    pub fn sessions_of(&self, subscriber: &str) -> Vec<&Session> {
        self.sessions
            .of_subscriber(subscriber)
            .map(|e| &e.session)
            .collect()
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.iter().map(|e| &e.session)
    }

    #[must_use]
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Checks a session start or change, and returns the active allocations it ends: a
    /// session that changes address, subscriber, BRAS or gateway no longer is what they were
    /// admitted on (3GPP: the IP-CAN session's rules are removed).
    pub fn session_effects(&self, s: &Session) -> Result<(Prefix, Vec<u64>), CatalogError> {
        for (field, v) in [
            ("id", &s.id),
            ("subscriber", &s.subscriber),
            ("bras", &s.bras),
            ("gateway", &s.gateway),
        ] {
            if v.is_empty() {
                return Err(invalid(field, "is empty"));
            }
        }
        if s.ended_ms.is_some() {
            return Err(invalid(
                "ended_ms",
                "a session is ended with DELETE, not PUT",
            ));
        }
        let prefix = session_prefix(&s.prefix)?;
        if let Some(other) = self.sessions.holder(&prefix).filter(|o| **o != s.id) {
            return Err(CatalogError::AddressTaken {
                prefix: s.prefix.clone(),
                other: other.clone(),
            });
        }
        let ends = match self.sessions.get(&s.id) {
            Some(old)
                if old.prefix != prefix
                    || old.session.subscriber != s.subscriber
                    || old.session.bras != s.bras
                    || old.session.gateway != s.gateway =>
            {
                self.allocations_of_session(&s.id)
            }
            _ => Vec::new(),
        };
        Ok((prefix, ends))
    }

    /// Active allocations covering a session.
    #[must_use]
    pub fn allocations_of_session(&self, id: &str) -> Vec<u64> {
        self.by_session
            .get(id)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Makes a checked session current (after [`Self::session_effects`] and the release of
    /// what it ended).
    pub fn put_session(&mut self, s: Session, prefix: Prefix) {
        let old = self
            .sessions
            .get(&s.id)
            .map(|e| e.session.subscriber.clone());
        let sub = s.subscriber.clone();
        self.sessions.insert(s, prefix);
        if let Some(old) = old.filter(|o| *o != sub) {
            self.recharge_provisioned(&old);
        }
        self.recharge_provisioned(&sub);
    }

    /// Forgets an ended session (after its allocations were released).
    pub fn end_session(&mut self, id: &str) -> Option<Session> {
        let ended = self.sessions.remove(id).map(|e| e.session)?;
        self.recharge_provisioned(&ended.subscriber);
        Some(ended)
    }

    // ---- provisioning feed ---------------------------------------------------------------

    /// The committed rates a provisioning grant holds for `subscriber` (from the controller's
    /// effective QoS), charged on the registered links of the subscriber's sessions — now, and
    /// again whenever its sessions or the links change. Replaces what was fed before for the
    /// subscriber; zero rates remove it. These charges are not refused (the grant is already in
    /// force): they only leave less for allocations.
    pub fn set_provisioned(&mut self, subscriber: &str, up_bps: u64, down_bps: u64) {
        if let Some((_, _, old)) = self.provisioned.remove(subscriber) {
            self.uncharge(&old);
        }
        if up_bps > 0 || down_bps > 0 {
            self.provisioned
                .insert(subscriber.to_owned(), (up_bps, down_bps, Vec::new()));
            self.recharge_provisioned(subscriber);
        }
    }

    /// Charges a subscriber's provisioned rates on the links of its sessions as they are now.
    fn recharge_provisioned(&mut self, subscriber: &str) {
        let Some((up_bps, down_bps, old)) = self.provisioned.get(subscriber).cloned() else {
            return;
        };
        self.uncharge(&old);
        let mut links = BTreeSet::new();
        for s in self.sessions.of_subscriber(subscriber) {
            for l in [&s.session.gateway, &s.session.bras] {
                if self.links.contains_key(l) {
                    links.insert(l.clone());
                }
            }
        }
        let charges: Vec<Charge> = links
            .into_iter()
            .flat_map(|link| {
                [(Dir::Up, up_bps), (Dir::Down, down_bps)]
                    .into_iter()
                    .filter(|(_, bps)| *bps > 0)
                    .map(move |(dir, bps)| Charge {
                        link: link.clone(),
                        dir,
                        bps,
                    })
            })
            .collect();
        self.charge(&charges);
        self.provisioned
            .insert(subscriber.to_owned(), (up_bps, down_bps, charges));
    }

    // ---- admission -----------------------------------------------------------------------

    fn check_request(req: &AllocationRequest) -> Result<(), Refusal> {
        let bad = |field: &str, detail: String| Refusal::Invalid {
            field: field.to_owned(),
            detail,
        };
        if req.priority > 7 {
            return Err(bad(
                "priority",
                format!("{} is outside 0..=7", req.priority),
            ));
        }
        if let Some(d) = req.dscp.filter(|d| *d > 63) {
            return Err(bad("dscp", format!("{d} is outside 0..=63")));
        }
        if let Some(m) = req.mtu.filter(|m| *m < MIN_MTU) {
            return Err(bad("mtu", format!("{m} is below {MIN_MTU}")));
        }
        if req.rate(Dir::Up) == 0 && req.rate(Dir::Down) == 0 {
            return Err(bad(
                "down_bps",
                "an allocation needs a committed rate in at least one direction \
                 (down_bps, up_bps)"
                    .into(),
            ));
        }
        for dir in Dir::BOTH {
            let (rf, cf) = match dir {
                Dir::Up => ("up_bps", "ceil_up_bps"),
                Dir::Down => ("down_bps", "ceil_down_bps"),
            };
            let given = match dir {
                Dir::Up => req.up_bps,
                Dir::Down => req.down_bps,
            };
            if let Some(r) = given.filter(|r| *r < 8 || *r > MAX_RATE_BPS) {
                return Err(bad(rf, format!("{r} is outside 8..={MAX_RATE_BPS}")));
            }
            let rate = req.rate(dir);
            let ceil = req.ceil(dir);
            if rate == 0 && ceil != 0 {
                return Err(bad(cf, format!("a ceiling needs a rate ({rf})")));
            }
            if ceil < rate || ceil > MAX_RATE_BPS {
                return Err(bad(
                    cf,
                    format!("{ceil} must lie between the rate {rate} and {MAX_RATE_BPS}"),
                ));
            }
        }
        if let Some(b) = req.burst_bytes {
            let frame = u32::from(req.mtu.unwrap_or(1500).max(1500));
            if b < frame {
                return Err(bad(
                    "burst_bytes",
                    format!("{b} is smaller than one frame ({frame} bytes)"),
                ));
            }
        }
        Ok(())
    }

    /// The distinct links the sessions sit behind: gateways (must be registered) and BRASes
    /// that are registered.
    fn links_of(&self, sessions: &[&Session]) -> Result<BTreeSet<String>, Refusal> {
        let mut out = BTreeSet::new();
        for s in sessions {
            if !self.links.contains_key(&s.gateway) {
                return Err(Refusal::NoLink {
                    session: s.id.clone(),
                    role: "gateway",
                    link: s.gateway.clone(),
                });
            }
            out.insert(s.gateway.clone());
            if self.links.contains_key(&s.bras) {
                out.insert(s.bras.clone());
            }
        }
        Ok(out)
    }

    /// Decides on a request of `provider`, changing nothing.
    pub fn decide(&self, provider: &str, req: &AllocationRequest) -> Result<Decision, Refusal> {
        let (_, declared) = self
            .providers
            .get(provider)
            .ok_or_else(|| Refusal::UnknownProvider(provider.to_owned()))?;
        super::validate::request(req)?;
        let (_, classifiers) = self
            .apps
            .get(&(provider.to_owned(), req.application.clone()))
            .ok_or_else(|| Refusal::UnknownApplication {
                provider: provider.to_owned(),
                application: req.application.clone(),
            })?;
        Self::check_request(req)?;
        // Entitlement again: the provider's prefixes may have changed since registration.
        if let Some(index) = classifiers
            .iter()
            .position(|c| !declared.iter().any(|d| within(&c.provider_prefix, d)))
        {
            return Err(Refusal::NotEntitled {
                provider: provider.to_owned(),
                application: req.application.clone(),
                index,
                prefix: format!(
                    "{}/{}",
                    classifiers[index].provider_prefix.addr, classifiers[index].provider_prefix.len
                ),
                declared: declared
                    .iter()
                    .map(|d| format!("{}/{}", d.addr, d.len))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        for dir in Dir::BOTH {
            if req.rate(dir) > 0 && !classifiers.iter().any(|c| c.direction == dir) {
                return Err(Refusal::Invalid {
                    field: if dir == Dir::Up { "up_bps" } else { "down_bps" }.into(),
                    detail: format!(
                        "application {} has no {dir} classifier for this rate",
                        req.application
                    ),
                });
            }
        }
        // Sessions (3GPP: bind the UE IP to an IP-CAN session).
        let sessions: Vec<(&Session, Prefix)> = match (&req.scope.subscriber, req.scope.ip) {
            (None, None) => {
                return Err(Refusal::Invalid {
                    field: "scope".into(),
                    detail: "name a subscriber, an IP address, or both".into(),
                });
            }
            (sub, Some(ip)) => {
                let s = self
                    .session_by_ip(ip)
                    .filter(|s| sub.as_ref().is_none_or(|sub| *sub == s.subscriber))
                    .ok_or_else(|| Refusal::SessionNotAvailable {
                        field: "scope.ip",
                        detail: match sub {
                            Some(sub) => {
                                format!("no active session of subscriber {sub} holds {ip}")
                            }
                            None => format!("no active session holds {ip}"),
                        },
                    })?;
                vec![(s, host(ip))]
            }
            (Some(sub), None) => {
                let v: Vec<(&Session, Prefix)> = self
                    .sessions
                    .of_subscriber(sub)
                    .map(|e| (&e.session, e.prefix))
                    .collect();
                if v.is_empty() {
                    return Err(Refusal::SessionNotAvailable {
                        field: "scope.subscriber",
                        detail: format!("subscriber {sub} has no active session"),
                    });
                }
                v
            }
        };
        let wanted = |c: &CompiledClassifier| req.rate(c.direction) > 0;
        let mut scopes = Vec::new();
        let mut covered = Vec::new();
        for (s, prefix) in &sessions {
            let cs: Vec<CompiledClassifier> = classifiers
                .iter()
                .filter(|c| c.provider_prefix.is_v4() == prefix.is_v4() && wanted(c))
                .copied()
                .collect();
            if !cs.is_empty() {
                scopes.push((*prefix, cs));
                covered.push(*s);
            }
        }
        if covered.is_empty() {
            return Err(Refusal::Invalid {
                field: "application".into(),
                detail: format!(
                    "application {}'s classifiers are of another address family than the \
                     session addresses in scope",
                    req.application
                ),
            });
        }
        // Capacity.
        let links = self.links_of(&covered)?;
        let mut charges = Vec::new();
        for link_id in &links {
            let link = &self.links[link_id];
            for dir in [Dir::Down, Dir::Up] {
                let requested = req.rate(dir);
                if requested == 0 {
                    continue;
                }
                let limit = self.limit(link, dir);
                let committed = self.committed(link_id, dir);
                let available = limit.saturating_sub(committed);
                if requested > available {
                    return Err(Refusal::CapacityExceeded {
                        link: link_id.clone(),
                        dir,
                        requested_bps: requested,
                        available_bps: available,
                        committed_bps: committed,
                        limit_bps: limit,
                        capacity_bps: link.capacity(dir),
                    });
                }
                charges.push(Charge {
                    link: link_id.clone(),
                    dir,
                    bps: requested,
                });
            }
        }
        let mut session_ids: Vec<String> = covered.iter().map(|s| s.id.clone()).collect();
        session_ids.sort();
        session_ids.dedup();
        Ok(Decision {
            sessions: session_ids,
            scopes,
            charges,
            dscp: req.dscp.unwrap_or_else(|| dscp_for_priority(req.priority)),
        })
    }

    fn charge(&mut self, charges: &[Charge]) {
        for c in charges {
            *self.usage.entry((c.link.clone(), c.dir)).or_default() += c.bps;
        }
    }

    fn uncharge(&mut self, charges: &[Charge]) {
        for c in charges {
            if let Some(u) = self.usage.get_mut(&(c.link.clone(), c.dir)) {
                *u = u.saturating_sub(c.bps);
            }
        }
    }

    /// Makes an admitted (or restored) allocation current: its charges are held.
    pub fn commit(&mut self, alloc: Allocation) {
        debug_assert_eq!(alloc.state, AllocationState::Active);
        self.charge(&alloc.charges);
        for s in &alloc.sessions {
            self.by_session
                .entry(s.clone())
                .or_default()
                .insert(alloc.id);
        }
        self.allocations.insert(alloc.id, alloc);
    }

    /// Releases an active allocation: its charges are given back. `None` if not active.
    pub fn release(&mut self, id: u64, reason: &str, now_ms: u64) -> Option<Allocation> {
        let mut alloc = self.allocations.remove(&id)?;
        self.uncharge(&alloc.charges);
        for s in &alloc.sessions {
            if let Some(set) = self.by_session.get_mut(s) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_session.remove(s);
                }
            }
        }
        alloc.state = AllocationState::Released;
        alloc.released_ms = Some(now_ms);
        alloc.release_reason = Some(reason.to_owned());
        Some(alloc)
    }

    /// An active allocation.
    #[must_use]
    pub fn allocation(&self, id: u64) -> Option<&Allocation> {
        self.allocations.get(&id)
    }

    /// Active allocations, by id.
    pub fn allocations(&self) -> impl Iterator<Item = &Allocation> {
        self.allocations.values()
    }

    /// The address (prefix) of an active session.
    #[must_use]
    pub fn session_prefix_of(&self, id: &str) -> Option<Prefix> {
        self.sessions.get(id).map(|e| e.prefix)
    }

    /// The rule scopes of an allocation from the current sessions and application (for
    /// restoring it); `None` if a session or the application is gone.
    #[must_use]
    pub fn scopes_for(&self, a: &Allocation) -> Option<Vec<(Prefix, Vec<CompiledClassifier>)>> {
        let classifiers = self.classifiers(&a.provider, &a.request.application)?;
        let mut out = Vec::new();
        for id in &a.sessions {
            let session_prefix = self.session_prefix_of(id)?;
            let prefix = a.request.scope.ip.map_or(session_prefix, host);
            let cs: Vec<CompiledClassifier> = classifiers
                .iter()
                .filter(|c| c.provider_prefix.is_v4() == prefix.is_v4())
                .filter(|c| a.request.rate(c.direction) > 0)
                .copied()
                .collect();
            out.push((prefix, cs));
        }
        Some(out)
    }

    /// The classifiers of an application, compiled.
    #[must_use]
    pub fn classifiers(&self, provider: &str, app: &str) -> Option<&[CompiledClassifier]> {
        self.apps
            .get(&(provider.to_owned(), app.to_owned()))
            .map(|(_, c)| c.as_slice())
    }
}
