//! The controller against the real data plane (needs root / CAP_BPF; CI runs it as root): the
//! test build of the programs is loaded, nothing is attached, and packets go through
//! BPF_PROG_TEST_RUN with the programs' virtual clock. The provisioning clock is virtual too:
//! every controller call takes its time as an argument.
//!
//! Scenario: modem cm1 at 198.18.0.10 with a base plan of 10 Mbit/s down; a boost to
//! 50 Mbit/s from t0+1000 ms to t0+5000 ms. The kernel's class for the modem's downstream
//! direction must carry the boost exactly in between, police packets at the boosted rate, and
//! come back to the base plan; a controller reopened from the same SQLite file after the stop
//! must reconcile the same data plane to the base plan.
//!
//! Run: `cargo test -p shaper-user --test controller_dataplane`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::pkt;
use shaper::controller::{
    Controller, ControllerConfig, DataplaneEnforcer, Direction, Disabled, ModemBinding,
    POLICER_BURST_MS,
};
use shaper::dataplane::htb::{self, HtbTree};
use shaper::dataplane::testrun::{XDP_DROP, XDP_PASS};
use shaper::dataplane::{Build, Dataplane, Limits, LoadOptions, Role};
use shaper::lab::NetNs;
use shaper::policy::SubscriberKey;
use shaper::provision::{EventRequest, QosLevel, Source};
use shaper::store::SqliteStore;

const SUB4: &str = "198.18.0.10";
const NET4: &str = "198.19.0.2";
const T0: u64 = 1_700_000_000_000;
const BASE_DOWN: u64 = 10_000_000;
const BOOST_DOWN: u64 = 50_000_000;
/// L3 length of the test packets.
const PKT: u64 = 1000;

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("shaper-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load() -> Arc<Mutex<Dataplane>> {
    let dp = Dataplane::load(LoadOptions {
        build: Build::Test,
        limits: Limits {
            max_subscribers: 64,
            max_classes: 256,
            max_rule_keys: 64,
            max_rule_entries: 64,
            max_flows: 64,
        },
        ..Default::default()
    })
    .expect("load the test build (needs root)");
    Arc::new(Mutex::new(dp))
}

fn config() -> ControllerConfig {
    ControllerConfig {
        classes: 16..=255,
        htb_minors_down: None,
        htb_minors_up: None,
    }
}

fn base() -> QosLevel {
    QosLevel {
        max_up_bps: Some(2_000_000),
        max_down_bps: Some(BASE_DOWN),
        burst_bytes: Some(15_000),
        ..QosLevel::default()
    }
}

fn boost() -> EventRequest {
    EventRequest {
        modem: "cm1".into(),
        source: Source::Csr {
            user: "alice".into(),
        },
        qos: QosLevel {
            max_down_bps: Some(BOOST_DOWN),
            ..QosLevel::default()
        },
        start_ms: Some(T0 + 1000),
        stop_ms: Some(T0 + 5000),
        idempotency_key: Some("boost-1".into()),
        level: None,
    }
}

fn open(
    db: &Path,
    enforcer: DataplaneEnforcer,
    bindings: Vec<ModemBinding>,
    now: u64,
) -> Controller {
    let store = SqliteStore::open(db).unwrap();
    let (ctl, _) = Controller::open(
        config(),
        Box::new(store),
        Box::new(enforcer),
        Box::new(Disabled),
        bindings,
        now,
    )
    .unwrap();
    ctl
}

fn sub_key() -> SubscriberKey {
    SubscriberKey {
        addr: SUB4.parse().unwrap(),
        len: 32,
    }
}

/// Packets from a full bucket at the virtual time `at_ns`, at a fixed clock: how many of
/// `n` 1000-byte downstream packets conform (counted by the class's police drops), and the
/// verdict of the last one.
fn burst_passes(dp: &Arc<Mutex<Dataplane>>, class: u32, at_ns: u64, n: u32) -> (u64, u32) {
    let mut dp = dp.lock().unwrap();
    dp.set_test_clock(at_ns).unwrap();
    let before = dp.class_stats(class).unwrap();
    let frame = pkt::udp4(NET4, SUB4, 53, 1000, (PKT - 28) as usize);
    let last = dp.run_xdp(Role::Upstream, &frame, n).unwrap().action;
    let after = dp.class_stats(class).unwrap();
    assert_eq!(after.pkts - before.pkts, u64::from(n));
    let dropped = after.drop_police - before.drop_police;
    (u64::from(n) - dropped, last)
}

/// How many packets a GCRA bucket of `rate` with the controller's burst lets through at once.
fn expected_burst(rate: u64) -> u64 {
    let burst_bytes = rate * POLICER_BURST_MS / 1000 / 8;
    // burst_ns / cost_ns, both exact for these round rates.
    burst_bytes / PKT
}

/// After draining the bucket at `at_ns`, how many packets conform 1 ms later, one at a time.
fn refill_passes(dp: &Arc<Mutex<Dataplane>>, at_ns: u64) -> usize {
    let mut dp = dp.lock().unwrap();
    dp.set_test_clock(at_ns + 1_000_000).unwrap();
    let frame = pkt::udp4(NET4, SUB4, 53, 1000, (PKT - 28) as usize);
    (0..50)
        .map(|_| dp.run_xdp(Role::Upstream, &frame, 1).unwrap().action)
        .take_while(|&a| a == XDP_PASS)
        .count()
}

fn down_rate(dp: &Arc<Mutex<Dataplane>>, class: u32) -> Option<u64> {
    dp.lock().unwrap().class(class).and_then(|c| c.rate_bps)
}

#[test]
fn a_boost_reaches_the_kernel_class_and_reverts_also_across_a_restart() {
    let dir = TempDir::new("ctl-dp");
    let db = dir.path().join("shaper.db");
    let dp = load();

    let mut ctl = open(&db, DataplaneEnforcer::new(dp.clone()), vec![], T0);
    let binding = ctl.propose_binding("cm1", vec![sub_key()]).unwrap();
    let down = binding.down_class;
    ctl.add_modem(binding.clone(), base(), T0).unwrap();

    // The base plan is in the kernel: the subscriber points at the modem's classes.
    {
        let d = dp.lock().unwrap();
        assert_eq!(d.subscribers(), vec![(sub_key(), [binding.up_class, down])]);
        let c = d.class(down).unwrap();
        assert_eq!(c.rate_bps, Some(BASE_DOWN));
        assert_eq!(c.burst_bytes, 312_500, "250 ms at 10 Mbit/s");
        assert_eq!(d.class(binding.up_class).unwrap().rate_bps, Some(2_000_000));
    }
    // Packets are policed at the base rate: 312 of 1000 bytes fit the 250 ms bucket, and
    // 1 ms at 10 Mbit/s refills 1250 bytes, one packet.
    let mut clock_ns = 10_000_000_000u64;
    let (passed, last) = burst_passes(&dp, down, clock_ns, 400);
    assert_eq!((passed, last), (expected_burst(BASE_DOWN), XDP_DROP));
    assert_eq!(refill_passes(&dp, clock_ns), 1);

    let s = ctl.submit(boost(), T0).unwrap();
    assert!(!s.duplicate);
    // Not due yet.
    assert!(ctl.tick(T0 + 999).unwrap().is_empty());
    assert_eq!(down_rate(&dp, down), Some(BASE_DOWN));

    // The start: the kernel class carries 50 Mbit/s.
    let changes = ctl.tick(T0 + 1000).unwrap();
    assert_eq!(changes.len(), 1);
    {
        let d = dp.lock().unwrap();
        let c = d.class(down).unwrap();
        assert_eq!(c.rate_bps, Some(BOOST_DOWN));
        assert_eq!(c.burst_bytes, 1_562_500, "250 ms at 50 Mbit/s");
        // The upstream class is untouched by a downstream grant.
        assert_eq!(d.class(binding.up_class).unwrap().rate_bps, Some(2_000_000));
    }
    clock_ns += 10_000_000_000;
    let (passed, last) = burst_passes(&dp, down, clock_ns, 2000);
    assert_eq!((passed, last), (expected_burst(BOOST_DOWN), XDP_DROP));
    assert_eq!(passed, 1562);
    // 1 ms at 50 Mbit/s refills 6250 bytes: six packets, where the base plan allowed one.
    assert_eq!(refill_passes(&dp, clock_ns), 6);
    assert_eq!(ctl.stats().last_lag_ms, 0);

    // The stop: back to the base plan.
    let changes = ctl.tick(T0 + 5000).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(down_rate(&dp, down), Some(BASE_DOWN));
    clock_ns += 10_000_000_000;
    assert_eq!(
        burst_passes(&dp, down, clock_ns, 400),
        (expected_burst(BASE_DOWN), XDP_DROP)
    );
    assert_eq!(refill_passes(&dp, clock_ns), 1);

    // A second boost, then a crash while it is active; the data plane keeps enforcing it.
    let mut again = boost();
    again.idempotency_key = Some("boost-2".into());
    again.start_ms = Some(T0 + 6000);
    again.stop_ms = Some(T0 + 8000);
    ctl.submit(again, T0 + 5500).unwrap();
    ctl.tick(T0 + 6000).unwrap();
    assert_eq!(down_rate(&dp, down), Some(BOOST_DOWN));
    let bindings: Vec<ModemBinding> = ctl.bindings().cloned().collect();
    drop(ctl);
    assert_eq!(
        down_rate(&dp, down),
        Some(BOOST_DOWN),
        "no controller, still boosted"
    );

    // Restart past the stop, from the same SQLite file, on the same data plane: the stop fires
    // at once and the data plane is reconciled to the base plan.
    let ctl = open(&db, DataplaneEnforcer::new(dp.clone()), bindings, T0 + 9000);
    assert_eq!(down_rate(&dp, down), Some(BASE_DOWN));
    assert_eq!(ctl.effective("cm1").unwrap().max_down_bps, Some(BASE_DOWN));
    assert!(ctl.unenforced().is_empty());
    clock_ns += 10_000_000_000;
    assert_eq!(
        burst_passes(&dp, down, clock_ns, 400),
        (expected_burst(BASE_DOWN), XDP_DROP)
    );
    assert_eq!(
        dp.lock().unwrap().subscribers(),
        vec![(sub_key(), [binding.up_class, down])]
    );
}

#[test]
fn a_restart_reconciles_a_data_plane_that_drifted() {
    let dir = TempDir::new("ctl-drift");
    let db = dir.path().join("shaper.db");
    let dp = load();
    let mut ctl = open(&db, DataplaneEnforcer::new(dp.clone()), vec![], T0);
    let binding = ctl.propose_binding("cm1", vec![sub_key()]).unwrap();
    ctl.add_modem(binding.clone(), base(), T0).unwrap();
    drop(ctl);
    // Someone (an older controller, an operator) changed the class and dropped the entry.
    {
        let mut d = dp.lock().unwrap();
        let mut wrong = *d.class(binding.down_class).unwrap();
        wrong.rate_bps = Some(1_000_000);
        wrong.burst_bytes = 20_000;
        d.upsert_class(binding.down_class, &wrong).unwrap();
        d.delete_subscriber(&sub_key()).unwrap();
    }
    let _ctl = open(
        &db,
        DataplaneEnforcer::new(dp.clone()),
        vec![binding.clone()],
        T0 + 1,
    );
    let d = dp.lock().unwrap();
    assert_eq!(
        d.class(binding.down_class).unwrap().rate_bps,
        Some(BASE_DOWN)
    );
    assert_eq!(
        d.subscribers(),
        vec![(sub_key(), [binding.up_class, binding.down_class])]
    );
}

/// With an HTB tree on the downstream interface (a veth in its own namespace), the
/// modem's downstream class steers packets into its HTB class, whose rate and ceil follow the
/// grants.
#[test]
fn htb_follows_the_grants_and_tc_egress_steers_into_it() {
    let ns = NetNs::unique("ctl-htb").expect("netns (needs root and iproute2)");
    ns.run([
        "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ])
    .unwrap();
    for dev in ["d0", "d1"] {
        ns.run(["ip", "link", "set", dev, "up"]).unwrap();
    }
    let tree = HtbTree::new("d0", Some(ns.name().to_string()), 1_000_000_000, 0xfffe).unwrap();

    let dir = TempDir::new("ctl-htb");
    let db = dir.path().join("shaper.db");
    let dp = load();
    let enforcer = DataplaneEnforcer::new(dp.clone()).with_htb(Direction::Down, tree);
    let store = SqliteStore::open(&db).unwrap();
    let cfg = ControllerConfig {
        htb_minors_down: Some(0x10..=0x1ff),
        ..config()
    };
    let (mut ctl, _) = Controller::open(
        cfg,
        Box::new(store),
        Box::new(enforcer),
        Box::new(Disabled),
        vec![],
        T0,
    )
    .unwrap();
    let binding = ctl.propose_binding("cm1", vec![sub_key()]).unwrap();
    let minor = binding.htb_minor_down.unwrap();
    assert_eq!(minor, 0x10);
    let plan = QosLevel {
        committed_down_bps: Some(2_000_000),
        priority: Some(2),
        ..base()
    };
    ctl.add_modem(binding.clone(), plan, T0).unwrap();

    let show = || ns.run(["tc", "-d", "class", "show", "dev", "d0"]).unwrap();
    let params = |text: &str| {
        htb::parse_class_params(text)
            .into_iter()
            .find(|(m, _)| *m == minor)
            .map(|(_, c)| (c.rate_bps, c.ceil_bps, c.prio))
    };
    assert_eq!(
        params(&show()),
        Some((2_000_000, BASE_DOWN, 5)),
        "prio 7 − 2"
    );
    let skb = dp
        .lock()
        .unwrap()
        .class(binding.down_class)
        .unwrap()
        .skb_priority;
    assert_eq!(skb, htb::skb_priority(minor));
    // The TC egress program toward the subscriber writes that priority.
    let frame = pkt::udp4(NET4, SUB4, 53, 1000, 100);
    let run = dp.lock().unwrap().run_tc(Role::Subscriber, &frame).unwrap();
    assert_eq!(run.priority, htb::skb_priority(minor));

    ctl.submit(boost(), T0).unwrap();
    ctl.tick(T0 + 1000).unwrap();
    assert_eq!(params(&show()), Some((2_000_000, BOOST_DOWN, 5)));
    ctl.tick(T0 + 5000).unwrap();
    assert_eq!(params(&show()), Some((2_000_000, BASE_DOWN, 5)));

    // Unbinding removes the HTB class, the policer classes and the subscriber entry.
    ctl.unbind("cm1").unwrap();
    assert_eq!(params(&show()), None);
    let d = dp.lock().unwrap();
    assert!(d.subscribers().is_empty());
    assert_eq!(d.class(binding.down_class), None);
    assert_eq!(d.class(binding.up_class), None);
}
