//! Differential test: the kernel programs (test build, BPF_PROG_TEST_RUN) against the Rust
//! reference model (`shaper::model`), which re-implements docs/DATAPLANE.md independently
//! (linear rule scan instead of tuple-space search, from-scratch parsing). Random policies,
//! random and mutated frames, a virtual clock that jumps by 0 ns to seconds; every verdict,
//! output byte, parse result, class, rule and drop reason must agree, and so must TC's
//! skb->priority.
//!
//! `SHAPER_DIFF_PACKETS` (default 100000) and `SHAPER_DIFF_SEED` (default fixed, so CI is
//! reproducible; set it to explore) tune the run. Needs root.

use std::fmt::Write as _;

use shaper::{
    abi,
    dataplane::{Build, Dataplane, Limits, LoadOptions, Role},
    model::{Dir, GenConfig, Generator, Model, Policy},
    policy::SubscriberKey,
};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The loader refuses references to classes that do not exist (the kernel would treat them
/// as none): point them at "none" in both the model and the kernel.
fn loadable(mut p: Policy) -> Policy {
    let known = |c: u32| c == 0 || p.classes.contains_key(&c);
    let fix = |v: &mut [u32; 2]| {
        for c in v.iter_mut() {
            if !known(*c) {
                *c = 0;
            }
        }
    };
    let mut subs_v4 = p.subs_v4.clone();
    subs_v4.values_mut().for_each(fix);
    let mut subs_v6 = p.subs_v6.clone();
    subs_v6.values_mut().for_each(fix);
    let mut subs_v6_64 = p.subs_v6_64.clone();
    subs_v6_64.values_mut().for_each(fix);
    p.rules.retain(|r| p.classes.contains_key(&r.class));
    Policy {
        subs_v4,
        subs_v6,
        subs_v6_64,
        ..p
    }
}

fn sub_keys(p: &Policy) -> Vec<(SubscriberKey, [u32; 2])> {
    let mut v: Vec<(SubscriberKey, [u32; 2])> = Vec::new();
    v.extend(p.subs_v4.iter().map(|(a, c)| {
        (
            SubscriberKey {
                addr: (*a).into(),
                len: 32,
            },
            *c,
        )
    }));
    v.extend(p.subs_v6.iter().map(|(a, c)| {
        (
            SubscriberKey {
                addr: (*a).into(),
                len: 128,
            },
            *c,
        )
    }));
    v.extend(p.subs_v6_64.iter().map(|(k, c)| {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(k);
        (
            SubscriberKey {
                addr: std::net::Ipv6Addr::from(a).into(),
                len: 64,
            },
            *c,
        )
    }));
    v
}

/// Replaces everything in `dp` by `p`, with fresh policer state.
fn install(dp: &mut Dataplane, old: &Policy, p: &Policy) {
    dp.set_rules(&[]).unwrap();
    for (k, _) in sub_keys(old) {
        dp.delete_subscriber(&k).unwrap();
    }
    for id in old.classes.keys() {
        dp.delete_class(*id).unwrap();
    }
    for (id, cfg) in &p.classes {
        dp.upsert_class(*id, cfg).unwrap();
    }
    dp.upsert_subscribers(&sub_keys(p)).unwrap();
    dp.set_rules(&p.rules).unwrap();
}

fn prefix(s: &str) -> shaper::policy::Prefix {
    let (a, l) = s.split_once('/').unwrap();
    shaper::policy::Prefix {
        addr: a.parse().unwrap(),
        len: l.parse().unwrap(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

#[test]
fn kernel_matches_the_reference_model() {
    let total = env_u64("SHAPER_DIFF_PACKETS", 100_000);
    let seed = env_u64("SHAPER_DIFF_SEED", 0x5a17_2026);
    let per_policy = 500u64;
    println!("differential test: seed {seed}, {total} packets, {per_policy} per policy");
    let mut g = Generator::new(seed, GenConfig::default());
    let limits = Limits {
        max_subscribers: 4096,
        max_classes: 64,
        max_rule_keys: 1024,
        max_rule_entries: 1024,
        max_flows: 1024,
    };
    // One loaded data plane per load-time switch combination.
    let mut planes: Vec<(bool, bool, Dataplane, Policy)> = Vec::new();
    for fc in [false, true] {
        for md in [false, true] {
            let dp = Dataplane::load(LoadOptions {
                build: Build::Test,
                limits,
                fail_closed: fc,
                malformed_drop: md,
                // Part of the generator's addresses are in pools (slot by arithmetic), the
                // rest are hash entries: the model knows neither, so both must agree with it.
                pools: vec![
                    prefix("198.18.0.0/24"),
                    prefix("198.19.2.0/23"),
                    prefix("2001:db8::/61"),
                ],
                ..Default::default()
            })
            .expect("load test build (needs root)");
            planes.push((fc, md, dp, Policy::default()));
        }
    }
    let mut mismatches = Vec::new();
    let mut seen = std::collections::BTreeMap::<String, u64>::new();
    let mut done = 0u64;
    let mut tc_skipped = 0u64;
    let mut tc_rewritten = 0u64;
    let mut policy_no = 0u64;
    while done < total && mismatches.len() < 5 {
        let policy = loadable(g.random_policy());
        let which = g.rng_index(planes.len());
        let (fc, md, dp, installed) = &mut planes[which];
        install(dp, installed, &policy);
        *installed = policy.clone();
        let mut model = Model::from_policy(&policy, *fc, *md);
        let mut now = 1_000_000_000u64;
        for i in 0..per_policy.min(total - done) {
            let frame = g.frame(0.3);
            let (role, dir) = if g.rng_index(2) == 0 {
                (Role::Subscriber, Dir::Up)
            } else {
                (Role::Upstream, Dir::Down)
            };
            now = g.next_clock(now);
            dp.set_test_clock(now).unwrap();
            let k = dp.run_xdp(role, &frame, 1).unwrap();
            let rec = dp.last_record().unwrap();
            let m = model.run_xdp(dir, now, &frame);
            // The skb test harness refuses some truncated frames (EINVAL) that the stack would
            // never hand to TC egress anyway; those are compared on XDP only.
            let kt = dp.run_tc(role, &frame).ok().map(|r| (r.priority, r.output));
            // TC egress on an interface handles the opposite direction of its XDP ingress:
            // egress on the subscriber side carries traffic *to* subscribers.
            let tc_dir = if dir == Dir::Up { Dir::Down } else { Dir::Up };
            let mt = kt.as_ref().map(|_| {
                let t = model.tc(tc_dir, &frame);
                (t.priority.unwrap_or(0), t.output)
            });
            match &kt {
                None => tc_skipped += 1,
                Some((_, out)) if *out != frame => tc_rewritten += 1,
                Some(_) => {}
            }
            let kern = (
                k.action,
                &k.output,
                rec.parse,
                rec.parse_err,
                rec.sub_class,
                rec.rule_class,
                rec.rule_id,
                rec.drop_reason,
                kt,
            );
            let modl = (
                m.verdict.xdp_action(),
                &m.output,
                m.parse as u32,
                m.parse_err,
                m.sub_class,
                m.rule_class,
                m.rule_id,
                m.drop_reason,
                mt,
            );
            *seen
                .entry(format!(
                    "action {} parse {} drop {}",
                    k.action, rec.parse, rec.drop_reason
                ))
                .or_default() += 1;
            if kern != modl {
                mismatches.push(format!(
                    "policy {policy_no} packet {i} ({role:?}, fail_closed {fc}, malformed_drop {md}, now {now}):\n  frame  {}\n  kernel (action, parse, pe, sub, rule_class, rule, drop, (tc priority, tc output)) = {:?}\n  model  = {:?}\n  kernel out {}\n  model  out {}\n  policy {:?}",
                    hex(&frame),
                    (kern.0, kern.2, kern.3, kern.4, kern.5, kern.6, kern.7, kern.8.as_ref().map(|t| (t.0, hex(&t.1)))),
                    (modl.0, modl.2, modl.3, modl.4, modl.5, modl.6, modl.7, modl.8.as_ref().map(|t| (t.0, hex(&t.1)))),
                    hex(kern.1),
                    hex(modl.1),
                    policy,
                ));
                if mismatches.len() >= 5 {
                    break;
                }
            }
            done += 1;
        }
        policy_no += 1;
    }
    for (what, n) in &seen {
        println!("  {what}: {n}");
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches (seed {seed}); first:\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );
    assert!(done >= total, "ran {done} of {total} packets");
    // The run must have exercised the interesting paths, not just passed everything.
    let count = |f: &dyn Fn(&str) -> bool| {
        seen.iter()
            .filter(|(k, _)| f(k))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    for (what, pred) in [
        (
            "policer drops",
            Box::new(|k: &str| k.ends_with(&format!("drop {}", abi::DROP_POLICE_SUB)))
                as Box<dyn Fn(&str) -> bool>,
        ),
        (
            "ICMP answers",
            Box::new(|k: &str| k.starts_with("action 3")),
        ),
        (
            "malformed",
            Box::new(|k: &str| k.contains(&format!("parse {}", abi::PARSE_MALFORMED))),
        ),
        ("passes", Box::new(|k: &str| k.starts_with("action 2"))),
    ] {
        assert!(count(&*pred) > 0, "the random run never produced {what}");
    }
    assert!(
        tc_rewritten > 0,
        "the random run never produced an MSS clamp at TC"
    );
    println!("{tc_rewritten} SYNs had their MSS clamped at TC egress");
    println!(
        "{done} packets over {policy_no} policies: 0 mismatches ({tc_skipped} truncated frames the skb harness refuses were compared on XDP only)"
    );
}

trait RngIndex {
    fn rng_index(&mut self, n: usize) -> usize;
}

impl RngIndex for Generator {
    fn rng_index(&mut self, n: usize) -> usize {
        use rand::Rng as _;
        self.rng.gen_range(0..n)
    }
}
