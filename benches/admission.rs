//! Admission decisions per second of the network service manager's decision core (issue 5),
//! with 100k active sessions and 10k active allocations in its in-memory indexes.
//!
//! Each decision is what `POST /v1/providers/{id}/allocations` computes before it touches the
//! store or the data plane: provider and application lookup, request checks, entitlement,
//! session binding (by subscriber or by address), link capacity on the gateway and BRAS.
//! A second loop measures decide + commit + release (the in-memory part of an admission and
//! its release). The baseline is a bare `HashMap<String, _>` lookup per iteration over the
//! same subscriber keys, measured in the same run; every figure is printed with its ratio.
//!
//! Run: `cargo bench -p shaper-user --bench admission` (no privileges needed).
//! Options: `--sessions N --allocations N --decisions N --rounds N`.

#[path = "common/targets.rs"]
mod targets;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use shaper::nsm::NsmCore;
use shaper::nsm::model::{
    Allocation, AllocationRequest, AllocationState, Application, Classifier, Dir, Link, LinkKind,
    Provider, ProviderKind, Scope, Session,
};

struct Opts {
    sessions: usize,
    allocations: usize,
    decisions: usize,
    rounds: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        sessions: 100_000,
        allocations: 10_000,
        decisions: 200_000,
        rounds: 5,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = || -> usize {
            args.get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a number", args[i]))
        };
        match args[i].as_str() {
            "--sessions" => o.sessions = value(),
            "--allocations" => o.allocations = value(),
            "--decisions" => o.decisions = value(),
            "--rounds" => o.rounds = value(),
            // cargo bench passes --bench; ignore what is not ours.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

const PROVIDERS: usize = 10;
const GATEWAYS: usize = 100;

fn v4(i: usize) -> String {
    // 198.18.0.0/15 holds 131072 addresses.
    let n = u32::try_from(i).expect("fits") + (198 << 24 | 18 << 16);
    std::net::Ipv4Addr::from(n).to_string()
}

fn request(app: &str, sub: &str, rate: u64, by_ip: Option<&str>) -> AllocationRequest {
    AllocationRequest {
        application: app.into(),
        scope: Scope {
            subscriber: by_ip.is_none().then(|| sub.to_owned()),
            ip: by_ip.map(|ip| ip.parse().expect("address")),
        },
        down_bps: Some(rate),
        up_bps: Some(rate / 10),
        ceil_down_bps: None,
        ceil_up_bps: None,
        burst_bytes: None,
        priority: 5,
        dscp: None,
        max_delay_ms: Some(50),
        max_loss_ppm: None,
        mtu: None,
    }
}

fn build(o: &Opts) -> NsmCore {
    let mut c = NsmCore::new(1200);
    for p in 0..PROVIDERS {
        let prefix = format!("198.19.{p}.0/24");
        c.put_provider(Provider {
            id: format!("p{p}"),
            kind: ProviderKind::Asp,
            name: format!("provider {p}"),
            prefixes: vec![prefix.clone()],
            webhook_url: None,
            webhook_secret: None,
        })
        .expect("provider");
        c.put_application(Application {
            provider: format!("p{p}"),
            id: "app".into(),
            name: "app".into(),
            classifiers: [Dir::Down, Dir::Up]
                .into_iter()
                .map(|direction| Classifier {
                    direction,
                    proto: Some(17),
                    provider_prefix: prefix.clone(),
                    provider_ports: Some("5000-5100".into()),
                    subscriber_ports: None,
                })
                .collect(),
        })
        .expect("application");
    }
    for g in 0..GATEWAYS {
        c.put_link(Link {
            id: format!("gw{g}"),
            kind: LinkKind::Gateway,
            capacity_up_bps: 100_000_000_000,
            capacity_down_bps: 400_000_000_000,
        })
        .expect("link");
    }
    for i in 0..o.sessions {
        let s = Session {
            id: format!("s{i}"),
            subscriber: format!("cm{i}"),
            prefix: v4(i),
            bras: format!("bras{}", i % 10),
            gateway: format!("gw{}", i % GATEWAYS),
            since_ms: 0,
            ended_ms: None,
        };
        let (p, _) = c.session_effects(&s).expect("session");
        c.put_session(s, p);
    }
    let mut rng = SmallRng::seed_from_u64(5);
    for id in 1..=o.allocations {
        let sub = rng.gen_range(0..o.sessions);
        let p = rng.gen_range(0..PROVIDERS);
        let req = request("app", &format!("cm{sub}"), 2_000_000, None);
        let d = c.decide(&format!("p{p}"), &req).expect("admitted");
        c.commit(Allocation {
            id: id as u64,
            provider: format!("p{p}"),
            request: req,
            sessions: d.sessions,
            charges: d.charges,
            dscp: d.dscp,
            state: AllocationState::Active,
            created_ms: 0,
            released_ms: None,
            release_reason: None,
        });
    }
    c
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let o = opts();
    let t = Instant::now();
    let mut core = build(&o);
    println!(
        "admission: {} sessions, {} allocations, {} providers, {GATEWAYS} gateways (built in {:.2} s)",
        core.session_count(),
        core.allocations().count(),
        PROVIDERS,
        t.elapsed().as_secs_f64()
    );
    let mut rng = SmallRng::seed_from_u64(7);
    // Pre-built requests: half by subscriber, half by address; every tenth too large (refused).
    let reqs: Vec<(String, AllocationRequest)> = (0..o.decisions)
        .map(|k| {
            let sub = rng.gen_range(0..o.sessions);
            let p = rng.gen_range(0..PROVIDERS);
            let rate = if k % 10 == 9 {
                500_000_000_000
            } else {
                5_000_000
            };
            let ip = v4(sub);
            let by_ip = (k % 2 == 0).then_some(ip.as_str());
            (
                format!("p{p}"),
                request("app", &format!("cm{sub}"), rate, by_ip),
            )
        })
        .collect();
    let baseline_map: HashMap<String, usize> =
        (0..o.sessions).map(|i| (format!("cm{i}"), i)).collect();
    let keys: Vec<&str> = reqs
        .iter()
        .map(|(_, r)| r.scope.subscriber.as_deref().unwrap_or("cm0"))
        .collect();

    let mut base = Vec::new();
    let mut decide = Vec::new();
    let mut cycle = Vec::new();
    let mut admitted = 0usize;
    for _ in 0..o.rounds {
        let t = Instant::now();
        let mut sum = 0usize;
        for k in &keys {
            sum = sum.wrapping_add(*baseline_map.get(*k).unwrap_or(&0));
        }
        black_box(sum);
        base.push(keys.len() as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        admitted = 0;
        for (p, r) in &reqs {
            if black_box(core.decide(p, r)).is_ok() {
                admitted += 1;
            }
        }
        decide.push(reqs.len() as f64 / t.elapsed().as_secs_f64());

        // decide + commit + release: the in-memory work of an admission and its release.
        let n = reqs.len() / 4;
        let t = Instant::now();
        let mut id = 1_000_000_000u64;
        for (p, r) in reqs.iter().take(n) {
            if let Ok(d) = core.decide(p, r) {
                id += 1;
                core.commit(Allocation {
                    id,
                    provider: p.clone(),
                    request: r.clone(),
                    sessions: d.sessions,
                    charges: d.charges,
                    dscp: d.dscp,
                    state: AllocationState::Active,
                    created_ms: 0,
                    released_ms: None,
                    release_reason: None,
                });
                black_box(core.release(id, "bench", 1));
            }
        }
        cycle.push(n as f64 / t.elapsed().as_secs_f64());
    }
    let (b, d, c) = (median(base), median(decide), median(cycle));
    println!("baseline HashMap<String> lookup: {:>12.0} /s", b);
    println!(
        "decide (admission decision):     {:>12.0} /s   baseline/decide = {:.1}×   ({} of {} admitted)",
        d,
        b / d,
        admitted,
        reqs.len()
    );
    println!(
        "decide + commit + release:       {:>12.0} /s   baseline/cycle  = {:.1}×",
        c,
        b / c
    );
    targets::target("admission decisions", d, 20_000.0, "/s", true);
    targets::exit_if_missed();
}
