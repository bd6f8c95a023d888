//! A provider allocation in the veth lab, end to end with the real binary: `shaper run` in the
//! gateway namespace runs the network service manager on its data plane. An admin registers a
//! provider (server prefix 198.19.0.0/24), its application (UDP from the provider's port
//! `APP_PORT` down to the subscriber), the subscriber's session behind gateway `gw1` (30 Mbit/s
//! down) through the API; the provider asks for 20 Mbit/s at priority 6 for the subscriber. The
//! allocation gets its own policer class (DSCP EF) and, on the subscriber side's HTB tree, its
//! own HTB class (rate = ceil = 20 Mbit/s, prio 1).
//!
//! Then, with two UDP flows from `net` to the subscriber at the same time — the application's
//! (source port `APP_PORT`) and another (source port `OTHER_PORT`), 40 Mbit/s offered each —
//! the application's receive rate is near 20 Mbit/s while the other flow gets what it offers.
//! A second provider request that would take gw1 over its capacity is refused with 409 naming
//! the link and what is left. After the release, the application's flow is no longer capped.
//! The provider's webhook (a receiver in the gateway namespace) gets both changes, signed, and
//! the delivery log shows them.
//!
//! Needs root, iproute2 and iperf3. Namespaces, pins and files are removed on exit, also on
//! panic.
//!
//! Run: `cargo test -p shaper-user --test lab_provider -- --nocapture`.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::shaper_run::{self, Guard, start};
use serde_json::{Value, json};
use shaper::lab::{IperfClient, IperfOpts, IperfServer, Topology, next_port};

const SUB: &str = "198.18.0.10";
const NET: &str = "198.19.0.2";
const API: u16 = 18091;
const ADMIN: &str = "admin-provider-lab-token";
const PROVIDER: &str = "provider-p1-lab-token";
const APP_PORT: u16 = 45201;
const OTHER_PORT: u16 = 45202;
const ALLOCATED: u64 = 20_000_000;
const OFFERED: u64 = 40_000_000;
const CAPACITY_DOWN: u64 = 30_000_000;
const SECS: u32 = 6;
const WEBHOOK_SECRET: &str = "lab-provider-webhook-secret";

/// What the provider's webhook received: (signature valid, event, allocation id).
type Seen = Arc<Mutex<Vec<(bool, String, u64)>>>;

async fn webhook(
    axum::extract::State(seen): axum::extract::State<Seen>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let sig = headers
        .get("x-shaper-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ok = shaper::nsm::notify::verify_signature(WEBHOOK_SECRET.as_bytes(), &body, sig);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.lock().unwrap().push((
        ok,
        v["event"].as_str().unwrap_or("").to_owned(),
        v["allocation"]["id"].as_u64().unwrap_or(0),
    ));
    axum::http::StatusCode::NO_CONTENT
}

/// The provider's webhook receiver, listening on the gateway namespace's loopback (where
/// `shaper run` posts from); stops when the sender is dropped.
fn start_webhook(ns: &str) -> (u16, Seen, tokio::sync::oneshot::Sender<()>) {
    let listener = shaper::lab::in_netns(ns, || std::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let state = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new()
                .route("/hook", axum::routing::post(webhook))
                .with_state(state);
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
    });
    (port, seen, stop_tx)
}

/// Waits until the webhook has received `n` notices (the delivery runs after the answer).
fn wait_webhook(seen: &Seen, n: usize) -> Vec<(bool, String, u64)> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(15) {
        let v = seen.lock().unwrap().clone();
        if v.len() >= n {
            return v;
        }
        sleep(Duration::from_millis(50));
    }
    panic!(
        "the webhook received {:?}, expected {n} notices",
        seen.lock().unwrap()
    );
}

fn call(ns: &str, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (status, text) = shaper_run::http(ns, API, token, method, path, body.as_deref()).unwrap();
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    };
    (status, v)
}

fn ok(ns: &str, token: &str, method: &str, path: &str, body: Value) -> Value {
    let (s, v) = call(ns, token, method, path, Some(body));
    assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
    v
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

fn wait_ready(child: &mut Child, ns: &str, log: &Path) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("shaper run exited with {status}: {}", log_text(log));
        }
        if let Ok((200, _)) = shaper_run::http(ns, API, ADMIN, "GET", "/v1/links", None) {
            return;
        }
        sleep(Duration::from_millis(100));
    }
    panic!("the API did not answer within 30 s: {}", log_text(log));
}

/// One UDP flow from `net` (source port `cport`) to a server on the subscriber.
fn flow(topo: &Topology, sub: IpAddr, cport: u16) -> (IperfServer, IperfClient) {
    let port = next_port();
    let srv = IperfServer::start(&topo.sub, sub, port).unwrap();
    let mut opts = IperfOpts::udp(sub, port, SECS, OFFERED);
    opts.len = Some(1400);
    opts.bind = Some(NET.parse().unwrap());
    opts.extra = vec!["--cport".into(), cport.to_string()];
    let client = IperfClient::spawn(&topo.net, &opts).unwrap();
    (srv, client)
}

/// Mean L3 receive rate over the whole intervals after the first (the first one holds the
/// policer's initial burst), bit/s.
fn steady_rate(srv: IperfServer, client: IperfClient, what: &str) -> f64 {
    let report = client.wait().unwrap();
    let _ = srv.finish(Duration::from_secs(10));
    // UDP -l 1400: 1428 L3 bytes per 1400 of payload.
    let rates: Vec<f64> = report
        .intervals
        .iter()
        .skip(1)
        .filter(|(_, len)| *len >= 0.9)
        .map(|(bps, _)| bps * 1428.0 / 1400.0)
        .collect();
    assert!(
        rates.len() >= SECS as usize - 2,
        "{what}: iperf3 reported {} whole intervals",
        rates.len()
    );
    eprintln!(
        "{what}: per-second L3 rates (Mbit/s): {:?}",
        rates
            .iter()
            .map(|r| (r / 1e5).round() / 10.0)
            .collect::<Vec<_>>()
    );
    rates.iter().sum::<f64>() / rates.len() as f64
}

#[test]
fn an_allocation_caps_its_application_and_leaves_other_traffic_alone() {
    let topo = Topology::sub_gw_net("prv").expect("topology (needs root)");
    let sub: IpAddr = SUB.parse().unwrap();
    topo.add_sub_addr(sub).unwrap();
    topo.gw.run(["ip", "link", "set", "lo", "up"]).unwrap();
    let gw = topo.gw.name().to_string();

    let id = std::process::id();
    let mut guard = Guard {
        child: None,
        pins: PathBuf::from(format!("/sys/fs/bpf/shaper-prv-{id}")),
        dir: std::env::temp_dir().join(format!("shaper-prv-{id}")),
    };
    let _ = std::fs::remove_dir_all(&guard.pins);
    let _ = std::fs::remove_dir_all(&guard.dir);
    std::fs::create_dir_all(&guard.dir).unwrap();
    let tokens = guard.dir.join("tokens.toml");
    shaper_run::write_tokens(
        &tokens,
        &[(ADMIN, "admin", "root"), (PROVIDER, "provider", "p1")],
    );
    let config = guard.dir.join("shaper.toml");
    std::fs::write(
        &config,
        format!(
            r#"
{dataplane}[controller]
store = "{store}"
listen = "127.0.0.1:{API}"
tokens_file = "{tokens}"
class_first = 128
class_last = 255
[nsm]
class_first = 16
class_last = 127
htb_minor_first = 0x10
htb_minor_last = 0x1f
local_gateway = "gw1"
[[nsm.link]]
id = "gw1"
kind = "gateway"
capacity_up = "10M"
capacity_down = {CAPACITY_DOWN}
"#,
            dataplane = shaper_run::dataplane_toml(&guard.pins, "sub0", "up0", Some("100M")),
            store = guard.dir.join("db/shaper.db").display(),
            tokens = tokens.display(),
        ),
    )
    .unwrap();
    let log = guard.dir.join("shaper.log");
    let child = guard.child.insert(start(&gw, &config, &log));
    wait_ready(child, &gw, &log);

    // Catalogue and session, as an admin (the session would come from RADIUS accounting).
    let (hook_port, seen, _stop_hook) = start_webhook(&gw);
    ok(
        &gw,
        ADMIN,
        "PUT",
        "/v1/providers/p1",
        json!({ "kind": "asp", "name": "Video One", "prefixes": ["198.19.0.0/24"],
                "webhook_url": format!("http://127.0.0.1:{hook_port}/hook"),
                "webhook_secret": WEBHOOK_SECRET }),
    );
    ok(
        &gw,
        ADMIN,
        "PUT",
        "/v1/providers/p1/applications/video",
        json!({ "name": "video", "classifiers": [
            { "direction": "down", "proto": 17, "provider_prefix": "198.19.0.0/24",
              "provider_ports": APP_PORT.to_string() }
        ] }),
    );
    ok(
        &gw,
        ADMIN,
        "PUT",
        "/v1/sessions/s1",
        json!({ "subscriber": "cm1", "prefix": SUB, "bras": "bras1", "gateway": "gw1" }),
    );

    // The provider's allocation.
    let (s, alloc) = call(
        &gw,
        PROVIDER,
        "POST",
        "/v1/providers/p1/allocations",
        Some(
            json!({ "application": "video", "scope": { "subscriber": "cm1" },
                     "down_bps": ALLOCATED, "priority": 6 }),
        ),
    );
    assert_eq!(s, 201, "{alloc}");
    assert_eq!(alloc["dscp"], 46, "{alloc}");
    let alloc_id = alloc["id"].as_u64().unwrap();
    // The provider is told, with a valid signature, and the delivery is logged.
    let got = wait_webhook(&seen, 1);
    assert_eq!(got[0], (true, "allocated".to_owned(), alloc_id));
    let (s, log) = call(&gw, PROVIDER, "GET", "/v1/providers/p1/deliveries", None);
    assert_eq!(s, 200, "{log}");
    assert_eq!(
        (&log[0]["status"], &log[0]["attempts"], &log[0]["last_code"]),
        (&json!("delivered"), &json!(1), &json!(204)),
        "{log}"
    );
    // Downstream, it has an HTB class on the subscriber side: rate = ceil = 20 Mbit/s,
    // prio 7 − 6 = 1.
    let classes = topo.gw.run(["tc", "class", "show", "dev", "sub0"]).unwrap();
    let line = classes
        .lines()
        .find(|l| l.starts_with("class htb 1:10 "))
        .unwrap_or_else(|| panic!("no HTB class 1:10 for the allocation: {classes}"));
    assert!(
        line.contains("prio 1 ") && line.contains("rate 20Mbit ceil 20Mbit"),
        "{line}"
    );

    // A second request beyond what gw1 has left: 409 naming the link and what is left.
    let (s, p) = call(
        &gw,
        PROVIDER,
        "POST",
        "/v1/providers/p1/allocations",
        Some(json!({ "application": "video", "scope": { "ip": SUB }, "down_bps": 15_000_000 })),
    );
    assert_eq!(s, 409, "{p}");
    assert_eq!(p["reason"], "capacity_exceeded", "{p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("link gw1 down")
            && detail.contains("requested 15000000")
            && detail.contains("only 10000000 bit/s"),
        "{detail}"
    );

    // Both flows at once: the application's is capped, the other is not.
    let (app_srv, app_cli) = flow(&topo, sub, APP_PORT);
    let (other_srv, other_cli) = flow(&topo, sub, OTHER_PORT);
    let app_rate = steady_rate(app_srv, app_cli, "application flow (allocated 20 Mbit/s)");
    let other_rate = steady_rate(other_srv, other_cli, "other flow (no allocation)");
    let dev = app_rate / ALLOCATED as f64 - 1.0;
    assert!(
        dev.abs() <= 0.10,
        "application flow: {:.2} Mbit/s is {:+.0} % off the allocated 20 Mbit/s",
        app_rate / 1e6,
        dev * 100.0
    );
    assert!(
        other_rate >= 0.9 * OFFERED as f64,
        "other flow: {:.2} Mbit/s of {} offered; it must not be shaped",
        other_rate / 1e6,
        OFFERED / 1_000_000
    );
    let (_, links) = call(&gw, ADMIN, "GET", "/v1/links", None);
    assert_eq!(links[0]["committed_down_bps"], ALLOCATED, "{links}");

    // Release: capacity back, the application's flow no longer capped.
    let (s, r) = call(
        &gw,
        PROVIDER,
        "DELETE",
        &format!("/v1/providers/p1/allocations/{alloc_id}"),
        None,
    );
    assert_eq!((s, r["state"].as_str()), (200, Some("released")), "{r}");
    let got = wait_webhook(&seen, 2);
    assert_eq!(got[1], (true, "released".to_owned(), alloc_id));
    let (_, links) = call(&gw, ADMIN, "GET", "/v1/links", None);
    assert_eq!(links[0]["committed_down_bps"], 0, "{links}");
    let classes = topo.gw.run(["tc", "class", "show", "dev", "sub0"]).unwrap();
    assert!(
        !classes.contains("class htb 1:10 "),
        "the HTB class outlived the release: {classes}"
    );
    let (app_srv, app_cli) = flow(&topo, sub, APP_PORT);
    let released = steady_rate(app_srv, app_cli, "application flow after the release");
    assert!(
        released >= 0.9 * OFFERED as f64,
        "after the release: {:.2} Mbit/s of {} offered",
        released / 1e6,
        OFFERED / 1_000_000
    );
}
