//! `shaper run` with a `[controller]` section, the real binary: in a fresh network namespace
//! (a veth pair, no traffic), it applies the data plane, opens the controller on a SQLite file,
//! serves the HTTP API on the namespace's loopback and fires timed events. A CSR's immediate
//! boost submitted with POST /v1/events becomes the modem's effective level within the tick
//! period; after SIGTERM (clean exit) a second process restores it from the store.
//! Needs root and iproute2. The namespace, pins and files are removed on exit, also on panic.
//!
//! A second test restarts it around base-plan changes: a plan set through
//! `PUT /v1/modems/{id}/base` survives restarts with the same configuration, and an edited
//! `[[modem]]` plan replaces it at the next start.
//!
//! Run: `cargo test -p shaper-user --test api_run`.

mod common;

use common::shaper_run::{self, Guard, start};
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Child,
    thread::sleep,
    time::{Duration, Instant},
};

use serde_json::Value;
use shaper::lab::{NetNs, in_netns};

const PORT: u16 = 18080;
const TOKEN: &str = "csr-secret-token";
const BASE_DOWN: u64 = 10_000_000;
const BOOST_DOWN: u64 = 50_000_000;

/// One HTTP/1.1 exchange with the API (see `common::shaper_run::http`).
fn http(ns: &str, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    shaper_run::http(ns, PORT, TOKEN, method, path, body)
}

fn get_modem(ns: &str) -> Value {
    let (status, body) = http(ns, "GET", "/v1/modems/cm1", None).unwrap();
    assert_eq!(status, 200, "{body}");
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

/// SIGTERM, then a clean exit within 10 s.
fn terminate(child: &mut Child, log: &Path) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit {status}: {}", log_text(log));
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no exit 10 s after SIGTERM: {}",
            log_text(log)
        );
        sleep(Duration::from_millis(50));
    }
}

/// A namespace with a veth pair `d0`/`d1` (up), a clean directory and pin root named after
/// `name`, and a tokens file with the test's CSR token.
fn setup(name: &str) -> (NetNs, Guard, PathBuf) {
    let ns = NetNs::unique(name).expect("netns (needs root and iproute2)");
    ns.run([
        "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ])
    .unwrap();
    for dev in ["d0", "d1"] {
        ns.run(["ip", "link", "set", dev, "up"]).unwrap();
    }
    let id = std::process::id();
    let guard = Guard {
        child: None,
        pins: PathBuf::from(format!("/sys/fs/bpf/shaper-{name}-{id}")),
        dir: std::env::temp_dir().join(format!("shaper-{name}-{id}")),
    };
    let _ = std::fs::remove_dir_all(&guard.dir);
    std::fs::create_dir_all(&guard.dir).unwrap();
    let tokens = guard.dir.join("tokens.toml");
    shaper_run::write_tokens(&tokens, &[(TOKEN, "csr", "alice")]);
    (ns, guard, tokens)
}

#[test]
fn run_serves_the_api_and_fires_an_immediate_boost() {
    let (ns, mut guard, tokens) = setup("apirun");
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
addrs = ["198.18.0.10", "2001:db8:0:10::/64"]
max_down = {BASE_DOWN}
max_up = "2M"
burst = 15000
"#,
            dataplane = shaper_run::dataplane_toml(&guard.pins, "d0", "d1", None),
            store = guard.dir.join("db/shaper.db").display(),
            tokens = tokens.display(),
        ),
    )
    .unwrap();
    let log = guard.dir.join("shaper.log");
    let ns_name = ns.name().to_string();

    let child = guard.child.insert(start(&ns_name, &config, &log));
    wait_ready(child, &ns_name, &log);
    let modem = get_modem(&ns_name);
    assert_eq!(modem["bound"], Value::Bool(true), "{modem}");
    assert_eq!(modem["base"]["max_down_bps"].as_u64(), Some(BASE_DOWN));
    assert_eq!(effective_down(&modem), Some(BASE_DOWN));

    // Authentication is in force.
    let mut s = in_netns(&ns_name, || TcpStream::connect(("127.0.0.1", PORT)))
        .unwrap()
        .unwrap();
    s.write_all(b"GET /v1/modems/cm1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");

    // An immediate boost: pending in the answer, in force after the next tick (≤ 1 s).
    let (status, body) = http(
        &ns_name,
        "POST",
        "/v1/events",
        Some(&format!(
            r#"{{"modem":"cm1","qos":{{"max_down_bps":{BOOST_DOWN}}}}}"#
        )),
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let event: Value = serde_json::from_str(&body).unwrap();
    let event_id = event["id"].as_u64().unwrap();
    let t0 = Instant::now();
    loop {
        let modem = get_modem(&ns_name);
        if effective_down(&modem) == Some(BOOST_DOWN) {
            assert_eq!(modem["effective"]["max_up_bps"].as_u64(), Some(2_000_000));
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the boost is not in force after 5 s: {modem}\n{}",
            log_text(&log)
        );
        sleep(Duration::from_millis(100));
    }
    let (status, body) = http(&ns_name, "GET", &format!("/v1/events/{event_id}"), None).unwrap();
    assert_eq!(status, 200, "{body}");
    let ev: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ev["state"], Value::String("active".into()), "{ev}");

    // A clean stop, then a restart from the same store: the boost is still the modem's level.
    terminate(guard.child.as_mut().unwrap(), &log);
    guard.child = None;
    let first_log = log_text(&log);
    assert!(first_log.contains("controller stopped"), "{first_log}");
    let child = guard.child.insert(start(&ns_name, &config, &log));
    wait_ready(child, &ns_name, &log);
    assert_eq!(effective_down(&get_modem(&ns_name)), Some(BOOST_DOWN));
    terminate(guard.child.as_mut().unwrap(), &log);
    guard.child = None;
}

/// The configuration of [`base_plan_from_the_api_survives_restarts_until_the_config_changes`]:
/// modem cm1 with the base plan `max_down`, 2 Mbit/s up.
fn base_config(dir: &Path, pins: &Path, tokens: &Path, max_down: u64) -> String {
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
addrs = ["198.18.0.10"]
max_down = {max_down}
max_up = "2M"
"#,
        dataplane = shaper_run::dataplane_toml(pins, "d0", "d1", None),
        store = dir.join("db/shaper.db").display(),
        tokens = tokens.display(),
    )
}

fn base_down(v: &Value) -> Option<u64> {
    v["base"]["max_down_bps"].as_u64()
}

fn audit(ns: &str) -> Vec<Value> {
    let (status, body) = http(ns, "GET", "/v1/modems/cm1/audit", None).unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn put_base(ns: &str, max_down: u64) -> Value {
    let (status, body) = http(
        ns,
        "PUT",
        "/v1/modems/cm1/base",
        Some(&format!(
            r#"{{"max_down_bps":{max_down},"max_up_bps":3000000}}"#
        )),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn base_plan_from_the_api_survives_restarts_until_the_config_changes() {
    let (ns, mut guard, tokens) = setup("apibase");
    let config = guard.dir.join("shaper.toml");
    let (dir, pins) = (guard.dir.clone(), guard.pins.clone());
    let write_config = |max_down: u64| {
        std::fs::write(&config, base_config(&dir, &pins, &tokens, max_down)).unwrap();
    };
    let log = guard.dir.join("shaper.log");
    let ns_name = ns.name().to_string();
    let restart = |guard: &mut Guard| {
        if let Some(child) = guard.child.as_mut() {
            terminate(child, &log);
            guard.child = None;
        }
        let child = guard.child.insert(start(&ns_name, &config, &log));
        wait_ready(child, &ns_name, &log);
    };

    // First start: the configured plan.
    write_config(BASE_DOWN);
    restart(&mut guard);
    let modem = get_modem(&ns_name);
    assert_eq!(base_down(&modem), Some(BASE_DOWN), "{modem}");
    assert!(audit(&ns_name).is_empty());

    // The API sets another plan: in force at once, GET shows it.
    let api_down = 30_000_000;
    let put = put_base(&ns_name, api_down);
    assert_eq!(base_down(&put), Some(api_down), "{put}");
    assert_eq!(effective_down(&put), Some(api_down), "{put}");
    let modem = get_modem(&ns_name);
    assert_eq!(base_down(&modem), Some(api_down), "{modem}");
    assert_eq!(modem["effective"]["max_up_bps"].as_u64(), Some(3_000_000));

    // Restart with the same configuration: the API's plan stays, and the log says why.
    restart(&mut guard);
    let modem = get_modem(&ns_name);
    assert_eq!(base_down(&modem), Some(api_down), "{modem}");
    assert_eq!(effective_down(&modem), Some(api_down), "{modem}");
    let text = log_text(&log);
    assert!(
        text.contains("the stored plan (set through the API or a dropped file) wins"),
        "{text}"
    );
    let trail = audit(&ns_name);
    assert_eq!(trail.len(), 1, "{trail:?}");
    assert_eq!(
        trail[0]["by"],
        serde_json::json!({ "kind": "api", "role": "csr", "subject": "alice" })
    );
    assert_eq!(trail[0]["old"]["max_down_bps"].as_u64(), Some(BASE_DOWN));
    assert_eq!(trail[0]["new"]["max_down_bps"].as_u64(), Some(api_down));

    // The configuration's plan is edited: at the next start it wins.
    let edited_down = 15_000_000;
    write_config(edited_down);
    restart(&mut guard);
    let modem = get_modem(&ns_name);
    assert_eq!(base_down(&modem), Some(edited_down), "{modem}");
    assert_eq!(effective_down(&modem), Some(edited_down), "{modem}");
    assert_eq!(modem["base"]["max_up_bps"].as_u64(), Some(2_000_000));
    let text = log_text(&log);
    assert!(text.contains("the configured plan wins"), "{text}");
    let trail = audit(&ns_name);
    assert_eq!(trail.len(), 2, "{trail:?}");
    assert_eq!(trail[1]["by"], serde_json::json!({ "kind": "config" }));
    assert_eq!(trail[1]["old"]["max_down_bps"].as_u64(), Some(api_down));
    assert_eq!(trail[1]["new"]["max_down_bps"].as_u64(), Some(edited_down));

    // The edit counts once: an API change after it again survives a restart.
    put_base(&ns_name, 40_000_000);
    restart(&mut guard);
    assert_eq!(base_down(&get_modem(&ns_name)), Some(40_000_000));
    assert_eq!(audit(&ns_name).len(), 3);
    terminate(guard.child.as_mut().unwrap(), &log);
    guard.child = None;
}
