use std::collections::HashMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use etherparse::PacketBuilder;

use super::*;
use crate::controller::{ControllerConfig, Disabled};
use crate::dataplane::{Build, LoadOptions, Role};
use crate::policy::{ClassConfig, SubscriberKey};
use crate::provision::{EventRequest, QosLevel};
use crate::store::{SqliteStore, TempDir};

const T0: u64 = 1_700_000_000_000;

fn udp4(src: [u8; 4], dst: [u8; 4], payload: usize) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .udp(5000, 53)
        .write(&mut v, &vec![7; payload])
        .unwrap();
    v
}

/// `name{labels}` → value, for every sample line of an exposition.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

struct Rig {
    _dir: TempDir,
    metrics: Metrics,
    up_class: u32,
}

/// A Test-build data plane with a modem's policed up class, a plain class nobody owns, a
/// controller (enforcing nowhere) that knows the modem and holds one pending event, and
/// traffic through the up class.
fn rig() -> Rig {
    let dir = TempDir::new("metrics");
    let store = SqliteStore::open(dir.path().join("shaper.db")).unwrap();
    let (mut ctl, _) = Controller::open(
        ControllerConfig::default(),
        Box::new(store),
        Box::new(Disabled),
        Box::new(Disabled),
        Vec::new(),
        T0,
    )
    .unwrap();
    let key = SubscriberKey {
        addr: "198.18.0.1".parse().unwrap(),
        len: 32,
    };
    let binding = ctl.propose_binding("cm1", vec![key]).unwrap();
    let (up_class, down_class) = (binding.up_class, binding.down_class);
    // The base plan carries service targets.
    let base = QosLevel {
        targets: crate::provision::ServiceTargets {
            loss_ppm: Some(1_000),
            availability_ppm: Some(999_900),
            ..Default::default()
        },
        ..QosLevel::default()
    };
    ctl.add_modem(binding, base, T0).unwrap();
    ctl.submit(
        EventRequest {
            modem: "cm1".into(),
            source: Source::Csr { user: "bob".into() },
            qos: QosLevel {
                max_down_bps: Some(50_000_000),
                ..QosLevel::default()
            },
            start_ms: None,
            stop_ms: None,
            idempotency_key: None,
            level: None,
        },
        T0,
    )
    .unwrap();

    let mut dp = Dataplane::load(LoadOptions {
        build: Build::Test,
        flow_sample_shift: 0,
        ..Default::default()
    })
    .expect("load test build (needs root)");
    // 8 Mbit/s = 1 byte/µs, bucket 3000 bytes.
    let policed = ClassConfig {
        rate_bps: Some(8_000_000),
        burst_bytes: 3000,
        ..ClassConfig::default()
    };
    dp.upsert_class(up_class, &policed).unwrap();
    dp.upsert_class(down_class, &ClassConfig::default())
        .unwrap();
    dp.upsert_class(7, &ClassConfig::default()).unwrap();
    dp.upsert_subscriber(key, [up_class, down_class]).unwrap();
    dp.set_test_clock(1_000_000_000).unwrap();
    // 1000-byte IP packets at one instant: three fit the bucket, the rest are policed.
    let frame = udp4([198, 18, 0, 1], [192, 0, 2, 9], 972);
    for _ in 0..5 {
        dp.run_xdp(Role::Subscriber, &frame, 1).unwrap();
    }
    let now = Arc::new(AtomicU64::new(T0 + 1_500));
    let metrics = Metrics::new(
        Some(Arc::new(Mutex::new(dp))),
        Some(Arc::new(Mutex::new(ctl))),
        Arc::new(move || now.load(Ordering::SeqCst)),
    )
    .unwrap();
    Rig {
        _dir: dir,
        metrics,
        up_class,
    }
}

#[test]
fn exposition_from_a_test_build_dataplane() {
    let rig = rig();
    let text = rig.metrics.render().unwrap();
    let s = samples(&text);
    let up = |name: &str, extra: &str| {
        let key = format!(
            "{name}{{class=\"{}\",owner=\"modem:cm1\"{extra}}}",
            rig.up_class
        );
        *s.get(&key)
            .unwrap_or_else(|| panic!("{key} missing from\n{text}"))
    };
    assert_eq!(up("shaper_class_packets_total", ""), 5.0, "{text}");
    assert_eq!(up("shaper_class_bytes_total", ""), 5000.0);
    let police = up("shaper_class_drops_total", ",reason=\"police\"");
    assert!((1.0..=3.0).contains(&police), "police drops {police}");
    assert_eq!(up("shaper_class_drops_total", ",reason=\"mtu\""), 0.0);
    assert_eq!(up("shaper_class_drops_total", ",reason=\"block\""), 0.0);
    assert_eq!(up("shaper_class_rate_bytes_per_second", ""), 1_000_000.0);
    let avail = up("shaper_class_bucket_available_bytes", "");
    assert!(avail < 3000.0, "bucket after a burst: {avail}");
    // Service targets of the effective QoS, beside what the classes measure.
    assert_eq!(
        s["shaper_modem_service_target{modem=\"cm1\",target=\"loss_ppm\"}"],
        1000.0
    );
    assert_eq!(
        s["shaper_modem_service_target{modem=\"cm1\",target=\"availability_ppm\"}"],
        999_900.0
    );
    assert!(!s.contains_key("shaper_modem_service_target{modem=\"cm1\",target=\"setup_time_ms\"}"));
    // A class nobody owns, with no policer: counters but no bucket.
    assert_eq!(
        s["shaper_class_packets_total{class=\"7\",owner=\"class:7\"}"],
        0.0
    );
    assert!(!text.contains("shaper_class_rate_bytes_per_second{class=\"7\""));
    assert_eq!(
        s["shaper_dataplane_packets_total{counter=\"rx_packets\"}"],
        5.0
    );
    for name in abi::gs::NAMES {
        assert!(
            s.contains_key(&format!(
                "shaper_dataplane_packets_total{{counter=\"{name}\"}}"
            )),
            "{name}"
        );
    }
    let flow = "shaper_top_flow_bytes{rank=\"1\",src=\"198.18.0.1\",dst=\"192.0.2.9\",\
                proto=\"17\",sport=\"5000\",dport=\"53\"}";
    assert!(s[flow] > 0.0, "{text}");
    assert!(!text.contains("rank=\"2\""));
    assert_eq!(s["shaper_events{source=\"csr\",state=\"pending\"}"], 1.0);
    assert_eq!(
        s["shaper_events{source=\"automation\",state=\"active\"}"],
        0.0
    );
    assert_eq!(s["shaper_scheduler_lag_seconds"], 1.5);
    assert_eq!(s["shaper_enforcements_total{result=\"ok\"}"], 1.0);
    assert_eq!(s["shaper_controller_resyncs_total"], 0.0);
    assert_eq!(s["shaper_enforcement_latency_seconds_count"], 1.0);
    assert_eq!(
        s["shaper_enforcement_latency_seconds_bucket{le=\"+Inf\"}"],
        1.0
    );
    assert_eq!(s["shaper_metrics_read_errors"], 0.0);
    assert!(text.contains("# TYPE shaper_class_bytes_total counter"));
    assert!(text.contains("# TYPE shaper_enforcement_latency_seconds histogram"));
}

#[test]
fn with_neither_source_nothing() {
    let metrics = Metrics::new(None, None, Arc::new(|| T0)).unwrap();
    assert_eq!(metrics.render().unwrap(), "");
}

/// `promtool check metrics` (Debian package `prometheus`, installed by xtask) accepts the
/// exposition, lints included.
#[test]
fn promtool_accepts_the_exposition() {
    let rig = rig();
    let text = rig.metrics.render().unwrap();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; `cargo xtask` installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
