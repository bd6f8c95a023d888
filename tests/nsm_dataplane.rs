//! Allocation enforcement against the real data plane (needs root / CAP_BPF): the test build
//! of the programs is loaded, nothing is attached, packets go through BPF_PROG_TEST_RUN.
//!
//! - An allocation becomes one class per direction (policer at the ceiling, DSCP, MTU) and
//!   rules scoped to the subscriber's address; the kernel classifies the application's packets
//!   into the allocation's class and other traffic into none.
//! - Two allocations of different providers on different addresses hold different classes.
//! - A refused plan (no class left; a rule set the kernel tables cannot hold) leaves classes
//!   and rules exactly as they were. Removal takes back classes and rules.
//!
//! Run: `cargo test -p shaper-user --test nsm_dataplane`.

mod common;

use std::sync::{Arc, Mutex};

use common::pkt;
use shaper::dataplane::{Build, Dataplane, Limits, LoadOptions, Role};
use shaper::nsm::model::{Classifier, Dir};
use shaper::nsm::{AllocEnforceError, AllocationEnforcer, AllocationTarget, EnforcePlan};
use shaper::policy::{ClassConfig, PortRange, Prefix, Rule};

const SUB_A: &str = "198.18.0.10";
const SUB_B: &str = "198.18.0.11";
const SERVER: &str = "198.19.0.2";

fn load() -> Arc<Mutex<Dataplane>> {
    let dp = Dataplane::load(LoadOptions {
        build: Build::Test,
        limits: Limits {
            max_subscribers: 64,
            max_classes: 64,
            max_rule_keys: 64,
            max_rule_entries: 64,
            max_flows: 64,
        },
        ..Default::default()
    })
    .expect("load the test build (needs root)");
    Arc::new(Mutex::new(dp))
}

fn host(s: &str) -> Prefix {
    Prefix {
        addr: s.parse().unwrap(),
        len: 32,
    }
}

fn classifier(dir: Dir, port: &str) -> shaper::nsm::model::CompiledClassifier {
    Classifier {
        direction: dir,
        proto: Some(17),
        provider_prefix: "198.19.0.0/24".into(),
        provider_ports: Some(port.into()),
        subscriber_ports: None,
    }
    .compile()
    .unwrap()
}

fn plan(
    id: u64,
    sub: &str,
    classifiers: Vec<shaper::nsm::model::CompiledClassifier>,
) -> EnforcePlan {
    EnforcePlan {
        id,
        scopes: vec![(host(sub), classifiers)],
        rate_up: 1_000_000,
        rate_down: 20_000_000,
        ceil_up: 1_000_000,
        ceil_down: 25_000_000,
        burst_bytes: None,
        dscp: 46,
        priority: 6,
        mtu: Some(1400),
    }
}

/// The rule class the kernel picks for a UDP packet from the server to `sub`.
fn down_class(dp: &Arc<Mutex<Dataplane>>, sub: &str, sport: u16) -> u32 {
    let dp = dp.lock().unwrap();
    let frame = pkt::udp4(SERVER, sub, sport, 40000, 100);
    dp.run_xdp(Role::Upstream, &frame, 1).unwrap();
    dp.last_record().unwrap().rule_class
}

fn snapshot(dp: &Arc<Mutex<Dataplane>>) -> (Vec<u32>, Vec<Rule>) {
    let dp = dp.lock().unwrap();
    (dp.class_ids(), dp.rules().to_vec())
}

#[test]
fn allocations_become_classes_and_scoped_rules_all_or_nothing() {
    let dp = load();
    // A configuration rule the allocations' rule sets keep.
    {
        let mut d = dp.lock().unwrap();
        d.upsert_class(1, &ClassConfig::default()).unwrap();
        d.set_rules(&[Rule {
            id: 5,
            proto: Some(6),
            src: Prefix::any_v4(),
            dst: Prefix::any_v4(),
            sport: PortRange::ANY,
            dport: PortRange { lo: 22, hi: 22 },
            precedence: 10,
            class: 1,
        }])
        .unwrap();
    }
    let mut e = AllocationEnforcer::new(dp.clone(), 10..=13, 1000..=1999);

    e.apply(&plan(
        1,
        SUB_A,
        vec![classifier(Dir::Down, "5000"), classifier(Dir::Up, "5000")],
    ))
    .unwrap();
    let classes = e.classes_of(1).unwrap();
    assert_eq!(classes, [(Dir::Up, 10), (Dir::Down, 11)]);
    {
        let d = dp.lock().unwrap();
        let down = d.class(11).unwrap();
        assert_eq!(
            (down.rate_bps, down.dscp, down.mtu),
            (Some(25_000_000), Some(46), Some(1400)),
            "the policer runs at the ceiling"
        );
        assert_eq!(
            down.burst_bytes,
            25_000_000 / 4 / 8,
            "250 ms of the ceiling"
        );
        let rules = d.rules();
        assert_eq!(rules.len(), 3, "{rules:?}");
        assert_eq!(rules[0].id, 5, "the configuration's rule stays");
        let r = rules.iter().find(|r| r.class == 11).unwrap();
        assert_eq!(
            (r.dst, r.sport, r.precedence),
            (host(SUB_A), PortRange { lo: 5000, hi: 5000 }, r.id)
        );
    }
    // The kernel: the application's packets to A are the allocation's, others are not.
    assert_eq!(down_class(&dp, SUB_A, 5000), 11);
    assert_eq!(down_class(&dp, SUB_A, 5001), 0);
    assert_eq!(down_class(&dp, SUB_B, 5000), 0);

    // Another provider's allocation for B: its own class.
    e.apply(&plan(2, SUB_B, vec![classifier(Dir::Down, "6000")]))
        .unwrap();
    assert_eq!(e.classes_of(2).unwrap(), [(Dir::Up, 12), (Dir::Down, 13)]);
    assert_eq!(down_class(&dp, SUB_B, 6000), 13);
    assert_eq!(down_class(&dp, SUB_A, 6000), 0);

    // No class left: refused, nothing changed.
    let before = snapshot(&dp);
    let err = e
        .apply(&plan(3, SUB_A, vec![classifier(Dir::Down, "7000")]))
        .unwrap_err();
    assert!(
        matches!(err, AllocEnforceError::Exhausted { id: 3, .. }),
        "{err}"
    );
    assert_eq!(snapshot(&dp), before);

    // Free classes, then a plan whose rules the kernel tables cannot hold (more than 8 rules
    // share one (protocol, source, destination) key): refused after its classes were
    // written, which are taken back.
    e.remove(2).unwrap();
    let before = snapshot(&dp);
    assert_eq!(before.0, [1, 10, 11]);
    let many = (0..9)
        .map(|i| classifier(Dir::Down, &(7000 + i).to_string()))
        .collect();
    let err = e.apply(&plan(4, SUB_B, many)).unwrap_err();
    assert!(
        matches!(err, AllocEnforceError::Rules { id: 4, .. }),
        "{err}"
    );
    assert_eq!(snapshot(&dp), before, "nothing of the refused plan stays");
    assert_eq!(down_class(&dp, SUB_B, 7000), 0);

    // Removal takes everything back; removing again is no error.
    e.remove(1).unwrap();
    e.remove(1).unwrap();
    let (classes, rules) = snapshot(&dp);
    assert_eq!(classes, [1]);
    assert_eq!(rules.iter().map(|r| r.id).collect::<Vec<_>>(), [5]);
    assert_eq!(down_class(&dp, SUB_A, 5000), 0);
}
