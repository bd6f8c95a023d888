//! Tests of the decision core (unit and property), the service shell with a recording data
//! plane, and webhook delivery against an in-test HTTP server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;

use super::core::{CatalogError, NsmCore, Refusal};
use super::enforce::{AllocEnforceError, AllocationTarget, EnforcePlan};
use super::model::{
    AllocationRequest, Application, Classifier, Dir, Link, LinkKind, Provider, ProviderKind, Scope,
    Session,
};
use super::notify::{
    Job, Notifier, Notifiers, RetryPolicy, Target, WebhookNotifier, verify_signature,
};
use super::service::{NsmConfig, NsmError, NsmService};
use crate::store::{NsmStore, SessionStore, SqliteNsmStore, TempDir};

pub(crate) fn provider(id: &str, prefix: &str) -> Provider {
    Provider {
        id: id.into(),
        kind: ProviderKind::Asp,
        name: format!("provider {id}"),
        prefixes: vec![prefix.into()],
        webhook_url: None,
        webhook_secret: None,
    }
}

pub(crate) fn app(provider: &str, id: &str, prefix: &str, port: &str) -> Application {
    Application {
        provider: provider.into(),
        id: id.into(),
        name: format!("app {id}"),
        classifiers: vec![
            Classifier {
                direction: Dir::Down,
                proto: Some(17),
                provider_prefix: prefix.into(),
                provider_ports: Some(port.into()),
                subscriber_ports: None,
            },
            Classifier {
                direction: Dir::Up,
                proto: Some(17),
                provider_prefix: prefix.into(),
                provider_ports: Some(port.into()),
                subscriber_ports: None,
            },
        ],
    }
}

pub(crate) fn session(id: &str, sub: &str, prefix: &str, gw: &str) -> Session {
    Session {
        id: id.into(),
        subscriber: sub.into(),
        prefix: prefix.into(),
        bras: "bras1".into(),
        gateway: gw.into(),
        since_ms: 1,
        ended_ms: None,
    }
}

pub(crate) fn link(id: &str, up: u64, down: u64) -> Link {
    Link {
        id: id.into(),
        kind: LinkKind::Gateway,
        capacity_up_bps: up,
        capacity_down_bps: down,
    }
}

pub(crate) fn request(app: &str, sub: &str, down: u64) -> AllocationRequest {
    AllocationRequest {
        application: app.into(),
        scope: Scope {
            subscriber: Some(sub.into()),
            ip: None,
        },
        down_bps: Some(down),
        up_bps: None,
        ceil_down_bps: None,
        ceil_up_bps: None,
        burst_bytes: None,
        priority: 5,
        dscp: None,
        max_delay_ms: None,
        max_loss_ppm: None,
        mtu: None,
    }
}

fn core_with(sessions: &[Session], links: &[Link]) -> NsmCore {
    let mut c = NsmCore::new(1000);
    c.put_provider(provider("p1", "198.19.0.0/24")).unwrap();
    c.put_provider(provider("p2", "198.19.1.0/24")).unwrap();
    c.put_application(app("p1", "tv", "198.19.0.0/24", "5000"))
        .unwrap();
    c.put_application(app("p2", "game", "198.19.1.0/24", "6000"))
        .unwrap();
    for l in links {
        c.put_link(l.clone()).unwrap();
    }
    for s in sessions {
        let (p, ends) = c.session_effects(s).unwrap();
        assert!(ends.is_empty());
        c.put_session(s.clone(), p);
    }
    c
}

fn commit(c: &mut NsmCore, id: u64, provider: &str, req: AllocationRequest) -> Result<(), Refusal> {
    let d = c.decide(provider, &req)?;
    c.commit(super::model::Allocation {
        id,
        provider: provider.into(),
        request: req,
        sessions: d.sessions,
        charges: d.charges,
        dscp: d.dscp,
        state: super::model::AllocationState::Active,
        created_ms: 0,
        released_ms: None,
        release_reason: None,
    });
    Ok(())
}

#[test]
fn capacity_refusal_names_link_request_and_what_is_left() {
    let mut c = core_with(
        &[session("s1", "cm1", "198.18.0.10", "gw1")],
        &[link("gw1", 100_000_000, 50_000_000)],
    );
    commit(&mut c, 1, "p1", request("tv", "cm1", 30_000_000)).unwrap();
    assert_eq!(c.committed("gw1", Dir::Down), 30_000_000);
    let err = c
        .decide("p2", &request("game", "cm1", 25_000_000))
        .unwrap_err();
    assert_eq!(
        err,
        Refusal::CapacityExceeded {
            link: "gw1".into(),
            dir: Dir::Down,
            requested_bps: 25_000_000,
            available_bps: 20_000_000,
            committed_bps: 30_000_000,
            limit_bps: 50_000_000,
            capacity_bps: 50_000_000,
        }
    );
    assert_eq!(err.result_code(), 5006);
    assert!(err.to_string().contains("link gw1 down"), "{err}");
    // Provisioning grants take capacity too.
    c.set_provisioned("cm1", 0, 15_000_000);
    assert_eq!(c.committed("gw1", Dir::Down), 45_000_000);
    assert!(c.decide("p2", &request("game", "cm1", 10_000_000)).is_err());
    c.set_provisioned("cm1", 0, 0);
    // Release gives the charge back exactly.
    let released = c.release(1, "test", 9).unwrap();
    assert_eq!(released.released_ms, Some(9));
    assert_eq!(c.committed("gw1", Dir::Down), 0);
    assert!(c.decide("p2", &request("game", "cm1", 25_000_000)).is_ok());
}

#[test]
fn provisioning_charges_follow_sessions_and_links() {
    let mut c = core_with(&[], &[link("gw1", 100_000_000, 100_000_000)]);
    // Fed before the subscriber is online: nothing to charge yet.
    c.set_provisioned("cm1", 1_000_000, 10_000_000);
    assert_eq!(c.committed("gw1", Dir::Down), 0);
    let s = session("s1", "cm1", "198.18.0.10", "gw1");
    let (p, _) = c.session_effects(&s).unwrap();
    c.put_session(s, p);
    assert_eq!(c.committed("gw1", Dir::Down), 10_000_000);
    assert_eq!(c.committed("gw1", Dir::Up), 1_000_000);
    // Moving behind another gateway moves the charge; registering that gateway later counts.
    let s = session("s1", "cm1", "198.18.0.10", "gw2");
    let (p, _) = c.session_effects(&s).unwrap();
    c.put_session(s, p);
    assert_eq!(c.committed("gw1", Dir::Down), 0);
    c.put_link(link("gw2", 100_000_000, 100_000_000)).unwrap();
    assert_eq!(c.committed("gw2", Dir::Down), 10_000_000);
    // Offline: no charge; a zero grant is forgotten.
    c.end_session("s1");
    assert_eq!(c.committed("gw2", Dir::Down), 0);
    c.set_provisioned("cm1", 0, 0);
    let s = session("s1", "cm1", "198.18.0.10", "gw2");
    let (p, _) = c.session_effects(&s).unwrap();
    c.put_session(s, p);
    assert_eq!(c.committed("gw2", Dir::Down), 0);
}

#[test]
fn overbooking_scales_the_limit() {
    let mut c = NsmCore::new(1500);
    c.put_link(link("gw1", 10, 100)).unwrap();
    let l = c.links().next().unwrap().clone();
    assert_eq!(c.limit(&l, Dir::Down), 150);
    assert_eq!(c.limit(&l, Dir::Up), 15);
}

#[test]
fn sessions_bind_requests_and_refusals_map_to_3gpp_codes() {
    let c = core_with(
        &[
            session("s1", "cm1", "198.18.0.10", "gw1"),
            session("s2", "cm1", "2001:db8:0:10::/64", "gw1"),
            session("s3", "cm2", "198.18.0.11", "gw-unregistered"),
        ],
        &[link("gw1", 1_000_000_000, 1_000_000_000)],
    );
    // Unknown subscriber: IP-CAN session not available.
    let e = c.decide("p1", &request("tv", "cm9", 1000)).unwrap_err();
    assert!(matches!(
        e,
        Refusal::SessionNotAvailable {
            field: "scope.subscriber",
            ..
        }
    ));
    assert_eq!(e.result_code(), 5065);
    // An address lookup.
    let mut r = request("tv", "cm1", 1000);
    r.scope = Scope {
        subscriber: None,
        ip: Some("198.18.0.10".parse().unwrap()),
    };
    let d = c.decide("p1", &r).unwrap();
    assert_eq!(d.sessions, ["s1"]);
    assert_eq!(d.scopes[0].0.len, 32);
    // The address belongs to cm1, not cm2.
    r.scope.subscriber = Some("cm2".into());
    assert!(matches!(
        c.decide("p1", &r),
        Err(Refusal::SessionNotAvailable {
            field: "scope.ip",
            ..
        })
    ));
    // Subscriber scope: only the IPv4 session matches the IPv4 application.
    let d = c.decide("p1", &request("tv", "cm1", 1000)).unwrap();
    assert_eq!(d.sessions, ["s1"]);
    assert_eq!(d.dscp, 40);
    // Another provider's application is unknown to this one.
    let e = c.decide("p1", &request("game", "cm1", 1000)).unwrap_err();
    assert!(matches!(e, Refusal::UnknownApplication { .. }));
    assert_eq!(e.result_code(), 5061);
    // A gateway without registered capacity cannot be admitted on.
    let e = c.decide("p1", &request("tv", "cm2", 1000)).unwrap_err();
    assert_eq!(
        e,
        Refusal::NoLink {
            session: "s3".into(),
            role: "gateway",
            link: "gw-unregistered".into()
        }
    );
    // Invalid service information names the field.
    let mut r = request("tv", "cm1", 1000);
    r.priority = 9;
    assert!(
        matches!(c.decide("p1", &r), Err(Refusal::Invalid { field, .. }) if field == "priority")
    );
    let mut r = request("tv", "cm1", 1000);
    r.ceil_down_bps = Some(10);
    assert!(
        matches!(c.decide("p1", &r), Err(Refusal::Invalid { field, .. }) if field == "ceil_down_bps")
    );
    let mut r = request("tv", "cm1", 1000);
    r.down_bps = None;
    assert!(
        matches!(c.decide("p1", &r), Err(Refusal::Invalid { field, .. }) if field == "down_bps")
    );
}

#[test]
fn entitlement_is_checked_on_registration_and_on_admission() {
    let mut c = core_with(&[], &[]);
    // An application reaching outside the provider's prefixes is refused at registration.
    let e = c
        .put_application(app("p1", "rogue", "198.19.1.0/24", "1"))
        .unwrap_err();
    assert!(
        matches!(e, CatalogError::Invalid { ref field, .. } if field == "classifiers[0].provider_prefix"),
        "{e}"
    );
    // Narrowing the provider's prefixes under an application is refused too.
    let e = c
        .put_provider(provider("p1", "198.19.0.0/25"))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e, CatalogError::Invalid { ref field, .. } if field == "prefixes"));
    // Ports without a protocol that has them.
    let mut bad = app("p1", "x", "198.19.0.0/24", "1");
    bad.classifiers[0].proto = Some(1);
    assert!(c.put_application(bad).is_err());
    // A provider with applications cannot be deleted.
    assert!(matches!(
        c.check_delete_provider("p1"),
        Err(CatalogError::InUse { .. })
    ));
}

#[test]
fn session_changes_end_their_allocations() {
    let mut c = core_with(
        &[session("s1", "cm1", "198.18.0.10", "gw1")],
        &[link("gw1", 1_000_000, 1_000_000)],
    );
    commit(&mut c, 1, "p1", request("tv", "cm1", 1000)).unwrap();
    // Same session, same address: nothing ends.
    assert_eq!(
        c.session_effects(&session("s1", "cm1", "198.18.0.10", "gw1"))
            .unwrap()
            .1,
        Vec::<u64>::new()
    );
    // New address: the allocation ends.
    assert_eq!(
        c.session_effects(&session("s1", "cm1", "198.18.0.12", "gw1"))
            .unwrap()
            .1,
        vec![1]
    );
    // Another session may not take the address.
    assert!(matches!(
        c.session_effects(&session("s2", "cm2", "198.18.0.10", "gw1")),
        Err(CatalogError::AddressTaken { .. })
    ));
    assert!(matches!(
        c.session_effects(&session("s2", "cm2", "198.18.0.0/24", "gw1")),
        Err(CatalogError::Invalid { ref field, .. }) if field == "prefix"
    ));
}

// ---- property: admission never over-commits ---------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Request {
        provider: usize,
        sub: usize,
        down: u64,
        up: u64,
    },
    Release(usize),
    Provision {
        sub: usize,
        down: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..2usize, 0..6usize, 0..40u64, 0..20u64).prop_map(|(provider, sub, down, up)| Op::Request {
            provider,
            sub,
            down: down * 1_000_000,
            up: up * 1_000_000,
        }),
        3 => (0..64usize).prop_map(Op::Release),
        1 => (0..6usize, 0..30u64).prop_map(|(sub, down)| Op::Provision { sub, down: down * 1_000_000 }),
    ]
}

/// The simple model: per link direction, the sum of the charges held; a request fits when
/// its rate fits on every link its sessions sit behind.
#[derive(Default)]
struct Model {
    held: HashMap<(String, Dir), u64>,
    allocs: Vec<(u64, Vec<Held>)>,
    provisioned: HashMap<usize, Vec<Held>>,
}

/// One charge in the model: link, direction, bit/s.
type Held = (String, Dir, u64);

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn admission_never_over_commits(ops in proptest::collection::vec(op(), 1..120), ob in 800u32..1500) {
        // Six subscribers over two gateways and one shared BRAS link; cm5 has two sessions.
        let mut sessions = Vec::new();
        for i in 0..5 {
            let gw = if i % 2 == 0 { "gw1" } else { "gw2" };
            sessions.push(Session { bras: "bras1".into(), ..session(&format!("s{i}"), &format!("cm{i}"), &format!("198.18.0.{}", 10 + i), gw) });
        }
        sessions.push(Session { bras: "bras1".into(), ..session("s5", "cm5", "198.18.0.20", "gw1") });
        sessions.push(Session { bras: "bras1".into(), ..session("s6", "cm5", "198.18.0.21", "gw2") });
        let links = [
            link("gw1", 30_000_000, 100_000_000),
            link("gw2", 20_000_000, 60_000_000),
            Link { kind: LinkKind::Bras, ..link("bras1", 40_000_000, 120_000_000) },
        ];
        let mut c = NsmCore::new(ob);
        c.put_provider(provider("p1", "198.19.0.0/24")).unwrap();
        c.put_provider(provider("p2", "198.19.1.0/24")).unwrap();
        c.put_application(app("p1", "tv", "198.19.0.0/24", "5000")).unwrap();
        c.put_application(app("p2", "game", "198.19.1.0/24", "6000")).unwrap();
        for l in &links { c.put_link(l.clone()).unwrap(); }
        for s in &sessions { let (p, _) = c.session_effects(s).unwrap(); c.put_session(s.clone(), p); }
        let limit = |id: &str, dir: Dir| {
            let l = links.iter().find(|l| l.id == id).unwrap();
            u128::from(l.capacity(dir)) * u128::from(ob) / 1000
        };
        let links_of = |sub: usize| -> Vec<String> {
            let mut v: Vec<String> = sessions.iter().filter(|s| s.subscriber == format!("cm{sub}")).map(|s| s.gateway.clone()).collect();
            v.push("bras1".into());
            v.sort();
            v.dedup();
            v
        };
        let mut m = Model::default();
        let mut next = 1u64;
        for op in ops {
            match op {
                Op::Request { provider, sub, down, up } => {
                    let (p, a) = if provider == 0 { ("p1", "tv") } else { ("p2", "game") };
                    let mut req = request(a, &format!("cm{sub}"), down);
                    req.down_bps = (down > 0).then_some(down);
                    req.up_bps = (up > 0).then_some(up);
                    let mut want = Vec::new();
                    for l in links_of(sub) {
                        for (dir, bps) in [(Dir::Down, down), (Dir::Up, up)] {
                            if bps > 0 { want.push((l.clone(), dir, bps)); }
                        }
                    }
                    let fits = (down > 0 || up > 0) && want.iter().all(|(l, d, b)| {
                        u128::from(*m.held.get(&(l.clone(), *d)).unwrap_or(&0)) + u128::from(*b) <= limit(l, *d)
                    });
                    let got = commit(&mut c, next, p, req);
                    prop_assert_eq!(got.is_ok(), fits, "op {:?}: core {:?}", (sub, down, up), got);
                    if fits {
                        for (l, d, b) in &want { *m.held.entry((l.clone(), *d)).or_default() += b; }
                        m.allocs.push((next, want));
                    }
                    next += 1;
                }
                Op::Release(i) => {
                    if m.allocs.is_empty() { continue; }
                    let (id, held) = m.allocs.remove(i % m.allocs.len());
                    prop_assert!(c.release(id, "test", 0).is_some());
                    for (l, d, b) in held { *m.held.get_mut(&(l, d)).unwrap() -= b; }
                }
                Op::Provision { sub, down } => {
                    if let Some(old) = m.provisioned.remove(&sub) {
                        for (l, d, b) in old { *m.held.get_mut(&(l, d)).unwrap() -= b; }
                    }
                    c.set_provisioned(&format!("cm{sub}"), 0, down);
                    if down > 0 {
                        let held: Vec<_> = links_of(sub).into_iter().map(|l| (l, Dir::Down, down)).collect();
                        for (l, d, b) in &held { *m.held.entry((l.clone(), *d)).or_default() += b; }
                        m.provisioned.insert(sub, held);
                    }
                }
            }
            // The core's books equal the model's.
            for l in &links {
                for dir in Dir::BOTH {
                    prop_assert_eq!(c.committed(&l.id, dir), *m.held.get(&(l.id.clone(), dir)).unwrap_or(&0));
                }
            }
            // Allocations alone never exceed any limit (provisioning may: it is not refusable).
            let mut alloc_only: HashMap<(String, Dir), u64> = HashMap::new();
            for a in c.allocations() {
                for ch in &a.charges { *alloc_only.entry((ch.link.clone(), ch.dir)).or_default() += ch.bps; }
            }
            for ((l, d), v) in alloc_only {
                prop_assert!(u128::from(v) <= limit(&l, d), "{l} {d}: {v} over the limit");
            }
        }
    }
}

// ---- service shell ------------------------------------------------------------------------

/// A data plane that records what it holds, and can be told to fail.
#[derive(Clone, Default)]
pub(crate) struct Recorder {
    pub(crate) applied: Arc<Mutex<HashMap<u64, EnforcePlan>>>,
    pub(crate) fail_next: Arc<Mutex<bool>>,
}

impl AllocationTarget for Recorder {
    fn apply(&mut self, plan: &EnforcePlan) -> Result<(), AllocEnforceError> {
        if std::mem::take(&mut *self.fail_next.lock().unwrap()) {
            return Err(AllocEnforceError::Exhausted {
                id: plan.id,
                what: "data-plane class",
                range: "1..=1".into(),
            });
        }
        self.applied.lock().unwrap().insert(plan.id, plan.clone());
        Ok(())
    }
    fn remove(&mut self, id: u64) -> Result<(), AllocEnforceError> {
        self.applied.lock().unwrap().remove(&id);
        Ok(())
    }
}

pub(crate) fn seeded_service(path: &std::path::Path, rec: Recorder) -> NsmService {
    let store = SqliteNsmStore::open(path).unwrap();
    let mut svc =
        NsmService::open(NsmConfig::default(), Box::new(store), Box::new(rec), 0).unwrap();
    svc.put_provider(provider("p1", "198.19.0.0/24")).unwrap();
    svc.put_application(app("p1", "tv", "198.19.0.0/24", "5000"))
        .unwrap();
    svc.put_link(link("gw1", 100_000_000, 100_000_000)).unwrap();
    svc.upsert_session(&session("s1", "cm1", "198.18.0.10", "gw1"))
        .unwrap();
    svc
}

#[test]
fn service_allocates_enforces_persists_and_restores() {
    let dir = TempDir::new("nsm-service");
    let path = dir.path().join("nsm.db");
    let rec = Recorder::default();
    let mut svc = seeded_service(&path, rec.clone());
    let a = svc
        .allocate("p1", request("tv", "cm1", 20_000_000), 10)
        .unwrap();
    assert_eq!(a.id, 1);
    let plan = rec.applied.lock().unwrap()[&1].clone();
    assert_eq!(
        (plan.rate_down, plan.ceil_down, plan.dscp),
        (20_000_000, 20_000_000, 40)
    );
    assert_eq!(plan.scopes.len(), 1);
    // Jobs: the BRAS, the gateway (with its desired state) and no webhook (none configured).
    let jobs = svc.take_jobs();
    let kinds: Vec<String> = jobs.iter().map(|j| format!("{:?}", j.target)).collect();
    assert_eq!(kinds, ["Bras(\"bras1\")", "Gateway(\"gw1\")"]);
    assert_eq!(jobs[1].desired.as_ref().unwrap().allocations.len(), 1);
    // A failing data plane refuses the allocation and nothing is stored or charged.
    *rec.fail_next.lock().unwrap() = true;
    assert!(matches!(
        svc.allocate("p1", request("tv", "cm1", 1_000_000), 11),
        Err(NsmError::Enforce(_))
    ));
    assert_eq!(svc.core().committed("gw1", Dir::Down), 20_000_000);
    assert_eq!(svc.allocations_of("p1").unwrap().len(), 1);
    drop(svc);
    // Reopen: the allocation is charged and enforced again.
    let rec2 = Recorder::default();
    let store = SqliteNsmStore::open(&path).unwrap();
    let mut svc = NsmService::open(
        NsmConfig::default(),
        Box::new(store),
        Box::new(rec2.clone()),
        20,
    )
    .unwrap();
    assert_eq!(svc.core().committed("gw1", Dir::Down), 20_000_000);
    assert!(rec2.applied.lock().unwrap().contains_key(&1));
    // Another provider cannot release it; the owner can, once.
    assert!(matches!(
        svc.release("p2", 1, "x", 21),
        Err(NsmError::UnknownAllocation { .. })
    ));
    let r = svc.release("p1", 1, "provider request", 22).unwrap();
    assert_eq!(r.release_reason.as_deref(), Some("provider request"));
    assert!(matches!(
        svc.release("p1", 1, "x", 23),
        Err(NsmError::AlreadyReleased { id: 1 })
    ));
    assert!(rec2.applied.lock().unwrap().is_empty());
    assert_eq!(svc.core().committed("gw1", Dir::Down), 0);
}

#[test]
fn ending_a_session_releases_its_allocations() {
    let dir = TempDir::new("nsm-session-end");
    let rec = Recorder::default();
    let mut svc = seeded_service(&dir.path().join("nsm.db"), rec.clone());
    svc.allocate("p1", request("tv", "cm1", 5_000_000), 10)
        .unwrap();
    svc.take_jobs();
    let ended = SessionStore::end_session(&mut svc, "s1", 30)
        .unwrap()
        .unwrap();
    assert_eq!(ended.ended_ms, Some(30));
    let a = svc.allocation("p1", 1).unwrap();
    assert_eq!(a.release_reason.as_deref(), Some("session s1 ended"));
    assert!(rec.applied.lock().unwrap().is_empty());
    assert_eq!(svc.core().committed("gw1", Dir::Down), 0);
    let jobs = svc.take_jobs();
    assert!(
        jobs.iter()
            .all(|j| j.notice.event == super::notify::NoticeEvent::Released)
    );
    // The desired state of the gateway no longer lists the allocation.
    let gw = jobs
        .iter()
        .find(|j| matches!(j.target, Target::Gateway(_)))
        .unwrap();
    assert!(gw.desired.as_ref().unwrap().allocations.is_empty());
    assert!(
        svc.session_by_ip("198.18.0.10".parse().unwrap())
            .unwrap()
            .is_none()
    );
}

// ---- webhook delivery ---------------------------------------------------------------------

#[derive(Clone, Default)]
struct Hook {
    /// Answers to give, in order (then 204).
    script: Arc<Mutex<Vec<u16>>>,
    /// (signature valid, timestamp header, body) per request.
    seen: Arc<Mutex<Vec<(bool, String, serde_json::Value)>>>,
}

const SECRET: &str = "provider-one-webhook-secret";

async fn hook(
    axum::extract::State(h): axum::extract::State<Hook>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let sig = headers
        .get("x-shaper-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ts = headers
        .get("x-shaper-timestamp")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let ok = verify_signature(SECRET.as_bytes(), &body, sig);
    h.seen
        .lock()
        .unwrap()
        .push((ok, ts, serde_json::from_slice(&body).unwrap()));
    let mut script = h.script.lock().unwrap();
    let code = if script.is_empty() {
        204
    } else {
        script.remove(0)
    };
    axum::http::StatusCode::from_u16(code).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_logged() {
    let h = Hook::default();
    *h.script.lock().unwrap() = vec![503, 500];
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(h.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = TempDir::new("nsm-webhook");
    let path = dir.path().join("nsm.db");
    let mut svc = seeded_service(&path, Recorder::default());
    let mut p = provider("p1", "198.19.0.0/24");
    p.webhook_url = Some(format!("http://{addr}/hook"));
    p.webhook_secret = Some(SECRET.into());
    svc.put_provider(p).unwrap();
    svc.allocate("p1", request("tv", "cm1", 1_000_000), 1_700_000_000_000)
        .unwrap();
    let jobs: Vec<Job> = svc.take_jobs();
    let log: super::notify::DeliveryLog = Arc::new(Mutex::new(Box::new(
        SqliteNsmStore::open(&path).unwrap(),
    ) as Box<dyn NsmStore>));
    let retry = RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(10),
        max: Duration::from_millis(40),
        timeout: Duration::from_secs(5),
    };
    let webhook: Arc<dyn Notifier> = Arc::new(WebhookNotifier::new(log, retry, Arc::new(|| 42)));
    let notifiers = Notifiers {
        bras: None,
        gateways: None,
        provider: Some(webhook),
    };
    for handle in notifiers.dispatch(jobs) {
        handle.await.unwrap();
    }
    let seen = h.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "two failures, then delivered");
    for (ok, ts, body) in &seen {
        assert!(ok, "signature must verify");
        assert_eq!(ts, "1700000000000");
        assert_eq!(body["event"], "allocated");
        assert_eq!(body["allocation"]["id"], 1);
        assert_eq!(body["sessions"][0]["id"], "s1");
    }
    let d = svc.deliveries("p1").unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].attempts, d[0].status.as_str(), d[0].last_code),
        (3, "delivered", Some(204))
    );

    // A final 4xx is not retried and is logged as failed.
    *h.script.lock().unwrap() = vec![410];
    svc.release("p1", 1, "done", 1_700_000_000_500).unwrap();
    let jobs: Vec<Job> = svc
        .take_jobs()
        .into_iter()
        .filter(|j| matches!(j.target, Target::Provider { .. }))
        .collect();
    for handle in notifiers.dispatch(jobs) {
        handle.await.unwrap();
    }
    let d = svc.deliveries("p1").unwrap();
    assert_eq!(
        (
            d[1].attempts,
            d[1].status.as_str(),
            d[1].last_code,
            d[1].last_error.as_deref()
        ),
        (1, "failed", Some(410), Some("HTTP 410"))
    );
    assert_eq!(h.seen.lock().unwrap().len(), 4);
    server.abort();
}

// ---- remote gateways ----------------------------------------------------------------------

async fn gateway_sink(
    axum::extract::State(seen): axum::extract::State<Arc<Mutex<Vec<serde_json::Value>>>>,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    seen.lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap());
    axum::http::StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_gateways_get_their_desired_state_and_the_local_one_nothing() {
    use super::http::HttpUrl;
    use super::notify::{GatewayNotifier, HttpGateway, RemoteGateway};

    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let app = axum::Router::new()
        .route("/v1/allocations", axum::routing::post(gateway_sink))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = TempDir::new("nsm-gateways");
    let mut svc = seeded_service(&dir.path().join("nsm.db"), Recorder::default());
    svc.put_link(link("gw2", 100_000_000, 100_000_000)).unwrap();
    svc.upsert_session(&session("s2", "cm2", "198.18.0.11", "gw2"))
        .unwrap();
    svc.upsert_session(&session("s3", "cm3", "198.18.0.12", "gw3"))
        .unwrap();
    svc.put_link(link("gw3", 100_000_000, 100_000_000)).unwrap();
    svc.allocate("p1", request("tv", "cm2", 1_000_000), 5)
        .unwrap();
    svc.allocate("p1", request("tv", "cm2", 2_000_000), 6)
        .unwrap();
    svc.allocate("p1", request("tv", "cm1", 3_000_000), 7)
        .unwrap();
    svc.allocate("p1", request("tv", "cm3", 4_000_000), 8)
        .unwrap();
    let retry = RetryPolicy {
        attempts: 2,
        base: Duration::from_millis(10),
        max: Duration::from_millis(10),
        timeout: Duration::from_secs(5),
    };
    let remote: Arc<dyn RemoteGateway> = Arc::new(HttpGateway {
        id: "gw2".into(),
        url: HttpUrl::parse(&format!("http://{addr}/v1/allocations")).unwrap(),
        retry,
    });
    let notifier = GatewayNotifier {
        local: Some("gw1".into()),
        remote: [("gw2".to_owned(), remote)].into_iter().collect(),
    };
    let jobs: Vec<Job> = svc
        .take_jobs()
        .into_iter()
        .filter(|j| matches!(j.target, Target::Gateway(_)))
        .collect();
    assert_eq!(jobs.len(), 4);
    let mut results = Vec::new();
    for job in &jobs {
        results.push((job.target.clone(), notifier.notify(job).await));
    }
    for (target, r) in &results {
        match target {
            // Local: enforced already; remote: pushed; gw3: configured nowhere.
            Target::Gateway(g) if g == "gw3" => assert!(
                matches!(r, Err(super::notify::NotifyError::UnknownGateway(x)) if x == "gw3"),
                "{r:?}"
            ),
            _ => assert!(r.is_ok(), "{target:?}: {r:?}"),
        }
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "two changes on gw2, one push each");
    // Each push is the gateway's whole desired state at that change.
    let ids = |v: &serde_json::Value| -> Vec<u64> {
        v["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(seen[0]["gateway"], "gw2");
    assert_eq!(ids(&seen[0]), [1]);
    assert_eq!(ids(&seen[1]), [1, 2]);
    assert_eq!(seen[1]["change"]["event"], "allocated");
    server.abort();
}
