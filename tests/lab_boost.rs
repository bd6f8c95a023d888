//! A timed boost in the veth lab, end to end with the real binary: `shaper run` in the gateway
//! namespace provisions a modem at its base plan (10 Mbit/s down); a CSR posts a boost to
//! 40 Mbit/s with a start and a stop time while an iperf3 UDP flow (80 Mbit/s offered) runs
//! from the net side to the subscriber. The per-second receive rates follow the plan: 10 Mbit/s
//! before the start, 40 Mbit/s between start and stop, 10 Mbit/s again after the stop; the
//! event ends up "completed".
//! Needs root, iproute2 and iperf3. Namespaces, pins and files are removed on exit, also on
//! panic.
//!
//! Run: `cargo test -p shaper-user --test lab_boost -- --nocapture`.

mod common;

use common::shaper_run::{self, Guard, start};
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::Child,
    thread::sleep,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use shaper::lab::{IperfClient, IperfOpts, IperfServer, Topology, next_port};

const SUB: &str = "198.18.0.10";
const PORT: u16 = 18081;
const TOKEN: &str = "csr-boost-token";
const BASE_DOWN: u64 = 10_000_000;
const BOOST_DOWN: u64 = 40_000_000;
const OFFERED: u64 = 80_000_000;
const FLOW_SECS: u32 = 14;
/// Boost start and stop, in ms after the POST.
const START_AFTER_MS: u64 = 4_000;
const STOP_AFTER_MS: u64 = 9_000;

/// One HTTP/1.1 exchange with the API (see `common::shaper_run::http`).
fn http(ns: &str, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    shaper_run::http(ns, PORT, TOKEN, method, path, body)
}

fn get_json(ns: &str, path: &str) -> Value {
    let (status, body) = http(ns, "GET", path, None).unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits until the API answers GET /v1/modems/cm1.
fn wait_ready(child: &mut Child, ns: &str, log: &Path) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("shaper run exited with {status}: {}", log_text(log));
        }
        if let Ok((200, _)) = http(ns, "GET", "/v1/modems/cm1", None) {
            return;
        }
        sleep(Duration::from_millis(100));
    }
    panic!("the API did not answer within 30 s: {}", log_text(log));
}

fn effective_down(v: &Value) -> Option<u64> {
    v["effective"]["max_down_bps"].as_u64()
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn mbps(r: f64) -> f64 {
    (r / 1e5).round() / 10.0
}

/// Asserts every second in `secs` is within ±10 % of `want` bit/s.
fn assert_near(rates: &[f64], secs: &[usize], want: u64, phase: &str) {
    assert!(!secs.is_empty(), "no whole second {phase}");
    for &i in secs {
        let dev = rates[i] / want as f64 - 1.0;
        assert!(
            dev.abs() <= 0.10,
            "second {i} ({phase}): {:.2} Mbit/s is {:+.0} % off {} Mbit/s; all: {:?}",
            rates[i] / 1e6,
            dev * 100.0,
            want / 1_000_000,
            rates.iter().map(|r| mbps(*r)).collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_timed_boost_changes_the_rate_at_start_and_restores_it_at_stop() {
    let topo = Topology::sub_gw_net("bst").expect("topology (needs root)");
    let sub: IpAddr = SUB.parse().unwrap();
    topo.add_sub_addr(sub).unwrap();
    topo.gw.run(["ip", "link", "set", "lo", "up"]).unwrap();
    let gw = topo.gw.name().to_string();

    let id = std::process::id();
    let mut guard = Guard {
        child: None,
        pins: PathBuf::from(format!("/sys/fs/bpf/shaper-bst-{id}")),
        dir: std::env::temp_dir().join(format!("shaper-bst-{id}")),
    };
    let _ = std::fs::remove_dir_all(&guard.pins);
    let _ = std::fs::remove_dir_all(&guard.dir);
    std::fs::create_dir_all(&guard.dir).unwrap();
    let tokens = guard.dir.join("tokens.toml");
    shaper_run::write_tokens(&tokens, &[(TOKEN, "csr", "alice")]);
    let config = guard.dir.join("shaper.toml");
    std::fs::write(
        &config,
        format!(
            r#"
{dataplane}[controller]
store = "{store}"
listen = "127.0.0.1:{PORT}"
tokens_file = "{tokens}"
class_first = 16
class_last = 255
[[modem]]
id = "cm1"
addrs = ["{SUB}"]
max_down = "10M"
"#,
            dataplane = shaper_run::dataplane_toml(&guard.pins, "sub0", "up0", None),
            store = guard.dir.join("db/shaper.db").display(),
            tokens = tokens.display(),
        ),
    )
    .unwrap();
    let log = guard.dir.join("shaper.log");

    let child = guard.child.insert(start(&gw, &config, &log));
    wait_ready(child, &gw, &log);
    let modem = get_json(&gw, "/v1/modems/cm1");
    assert_eq!(modem["bound"], Value::Bool(true), "{modem}");
    assert_eq!(effective_down(&modem), Some(BASE_DOWN), "{modem}");

    // UDP at 8x the base rate from net to the subscriber; per-second receive rates.
    let port = next_port();
    let srv = IperfServer::start(&topo.sub, sub, port).unwrap();
    let mut opts = IperfOpts::udp(sub, port, FLOW_SECS, OFFERED);
    opts.len = Some(1400);
    let t_client = Instant::now();
    let client = IperfClient::spawn(&topo.net, &opts).unwrap();

    // The boost, timed on the system clock (the controller's clock).
    let posted = now_ms();
    let t_posted = t_client.elapsed();
    let (start_ms, stop_ms) = (posted + START_AFTER_MS, posted + STOP_AFTER_MS);
    let (status, body) = http(
        &gw,
        "POST",
        "/v1/events",
        Some(&format!(
            r#"{{"modem":"cm1","qos":{{"max_down_bps":{BOOST_DOWN}}},"start_ms":{start_ms},"stop_ms":{stop_ms}}}"#
        )),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let event: Value = serde_json::from_str(&body).unwrap();
    let event_id = event["id"].as_u64().expect("event id");
    let ev = get_json(&gw, &format!("/v1/events/{event_id}"));
    assert_eq!(ev["state"], Value::String("pending".into()), "{ev}");

    // Watch the effective level while the flow runs (informational: when the edges happened).
    let mut seen: Vec<(f64, u64)> = Vec::new();
    let mut last = Some(BASE_DOWN);
    while t_client.elapsed() < Duration::from_secs(u64::from(FLOW_SECS)) {
        let eff = effective_down(&get_json(&gw, "/v1/modems/cm1"));
        if eff != last {
            let at = t_client.elapsed().as_secs_f64();
            seen.push((at, eff.unwrap_or(0)));
            last = eff;
        }
        sleep(Duration::from_millis(50));
    }

    let report = client.wait().unwrap();
    let _ = srv.finish(Duration::from_secs(10));
    // UDP -l 1400: 1428 L3 bytes per 1400 of payload.
    let rates: Vec<f64> = report
        .intervals
        .iter()
        .map(|(bps, _)| bps * 1428.0 / 1400.0)
        .collect();
    let start_s = t_posted.as_secs_f64() + START_AFTER_MS as f64 / 1e3;
    let stop_s = t_posted.as_secs_f64() + STOP_AFTER_MS as f64 / 1e3;
    eprintln!(
        "boost due at {start_s:.2} s .. {stop_s:.2} s after the client's spawn; \
         effective level changes seen (s, bit/s): {seen:?}"
    );
    eprintln!(
        "per-second L3 rates (Mbit/s): {:?}",
        rates.iter().map(|r| mbps(*r)).collect::<Vec<_>>()
    );
    assert!(
        rates.len() >= FLOW_SECS as usize - 1,
        "iperf3 reported {} intervals",
        rates.len()
    );
    assert_eq!(
        seen.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
        [BOOST_DOWN, BASE_DOWN],
        "the effective level must go up once and back down once"
    );

    // Interval i covers [d + i, d + i + 1) s after the spawn, d in [0, 1) (connect time); a
    // change due at t is in force by t + 1 s (tick latency; the bucket settles within it).
    // A partial interval (the server's last one, if any) does not count.
    let fi = |i: usize| i as f64;
    let whole = |i: &usize| report.intervals[*i].1 >= 0.9;
    let before: Vec<usize> = (1..rates.len())
        .filter(whole)
        .filter(|&i| fi(i) + 2.0 <= start_s)
        .collect();
    let inside: Vec<usize> = (1..rates.len())
        .filter(whole)
        .filter(|&i| fi(i) >= start_s + 1.0 && fi(i) + 2.0 <= stop_s)
        .collect();
    let after: Vec<usize> = (1..rates.len())
        .filter(whole)
        .filter(|&i| fi(i) >= stop_s + 1.0)
        .collect();
    eprintln!("seconds before: {before:?}, inside: {inside:?}, after: {after:?}");
    assert_near(&rates, &before, BASE_DOWN, "before the start");
    assert_near(&rates, &inside, BOOST_DOWN, "during the boost");
    assert_near(&rates, &after, BASE_DOWN, "after the stop");

    let ev = get_json(&gw, &format!("/v1/events/{event_id}"));
    assert_eq!(ev["state"], Value::String("completed".into()), "{ev}");
    assert_eq!(
        effective_down(&get_json(&gw, "/v1/modems/cm1")),
        Some(BASE_DOWN)
    );
}
