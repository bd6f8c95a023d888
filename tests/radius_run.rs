//! RADIUS inside the real `shaper run` (issue 5: CoA in, accounting in, CoA out), with
//! `[radius]` and `[nsm]` in its configuration, in a fresh network namespace (peers on its
//! loopback):
//!
//! - radclient accounting Start for subscriber cm1 → the session is in the network service
//!   manager (`GET /v1/sessions`), and still there after shaper restarts (durable store).
//! - radclient CoA with Mikrotik-Rate-Limit for cm1 → CoA-ACK, and cm1's effective level in
//!   the API is the new one; a CoA for an unknown user → CoA-NAK, Error-Cause 503.
//! - A provider allocation for cm1 → shaper sends a CoA-Request to the session's BRAS
//!   (FreeRADIUS as a CoA receiver): the ACK is in the delivery log, and FreeRADIUS saw the
//!   subscriber's plan plus the allocation. With the BRAS down, the release's CoA is logged as
//!   failed after its retries.
//! - Accounting Stop → the session is gone and the allocation on it released.
//!
//! - Issue 11 (replay, a new session on a held address, expiry, a rate above 32 bits): see
//!   [`radius_replay_supersede_expiry_and_rate_bound_in_shaper_run`].
//!
//! Needs root, iproute2, freeradius-utils and freeradius (`cargo xtask deps`).
//! Run: `cargo test -p shaper-user --test radius_run -- --nocapture`.

mod common;

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::radius::{freeradius_conf, radclient, require_tools};
use common::shaper_run::{self, Guard, start};
use serde_json::{Value, json};
use shaper::lab::{NetNs, in_netns};
use shaper::proto::radius::{Code, Packet, dict, encode_request};

const API: u16 = 18095;
const COA_PORT: u16 = 13799;
const ACCT_PORT: u16 = 11813;
const BRAS_PORT: u16 = 23799;
const ADMIN: &str = "admin-radius-run-token";
const PROVIDER: &str = "provider-p1-radius-run-token";
const CLIENT_SECRET: &str = "client-s3cret";
const BRAS_SECRET: &str = "bras-s3cret";
/// `radius.session_timeout_s` of the issue-11 test.
const TIMEOUT_S: u64 = 8;

const START: &str = "Acct-Status-Type = Start\nAcct-Session-Id = \"sess-cm1\"\nUser-Name = \"cm1\"\nFramed-IP-Address = 198.18.0.10\nNAS-IP-Address = 127.0.0.1\nNAS-Identifier = \"bras1\"\n";

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
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

fn ok(ns: &str, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let (s, v) = call(ns, token, method, path, body);
    assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
    v
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

/// SIGTERM, then a clean exit.
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
            t0.elapsed() < Duration::from_secs(15),
            "no exit 15 s after SIGTERM: {}",
            log_text(log)
        );
        sleep(Duration::from_millis(50));
    }
}

/// The BRAS deliveries of allocation `id` and `event`, once none is pending (the
/// notification runs after the API answer).
fn bras_deliveries(ns: &str, id: u64, event: &str, log: &Path) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let v = ok(ns, ADMIN, "GET", "/v1/providers/p1/deliveries", None);
        let mine: Vec<Value> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["allocation"] == id
                    && d["event"] == event
                    && d["url"].as_str().unwrap_or("").starts_with("radius-coa://")
            })
            .cloned()
            .collect();
        if !mine.is_empty() && mine.iter().all(|d| d["status"] != "pending") {
            return mine;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no finished BRAS delivery for allocation {id} {event}: {v}\n{}",
            log_text(log)
        );
        sleep(Duration::from_millis(100));
    }
}

fn sessions_of_cm1(ns: &str) -> Value {
    ok(ns, ADMIN, "GET", "/v1/sessions?subscriber=cm1", None)
}

#[test]
fn radius_in_shaper_run_accounting_coa_in_and_coa_to_the_bras() {
    require_tools();
    let ns = NetNs::unique("radrun").expect("netns (needs root and iproute2)");
    ns.run([
        "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ])
    .unwrap();
    for dev in ["d0", "d1"] {
        ns.run(["ip", "link", "set", dev, "up"]).unwrap();
    }
    let name = ns.name().to_string();
    let id = std::process::id();
    let mut guard = Guard {
        child: None,
        pins: PathBuf::from(format!("/sys/fs/bpf/shaper-radrun-{id}")),
        dir: std::env::temp_dir().join(format!("shaper-radrun-{id}")),
    };
    let _ = std::fs::remove_dir_all(&guard.pins);
    let _ = std::fs::remove_dir_all(&guard.dir);
    let dir = guard.dir.clone();
    std::fs::create_dir_all(dir.join("radius")).unwrap();
    std::fs::create_dir_all(dir.join("freeradius")).unwrap();
    std::fs::write(
        dir.join("radius/clients.secret"),
        format!("{CLIENT_SECRET}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("radius/bras1.secret"), format!("{BRAS_SECRET}\n")).unwrap();
    let tokens = dir.join("tokens.toml");
    shaper_run::write_tokens(
        &tokens,
        &[(ADMIN, "admin", "root"), (PROVIDER, "provider", "p1")],
    );
    let config = dir.join("shaper.toml");
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
[[modem]]
id = "cm1"
addrs = ["198.18.0.10"]
max_down = "10M"
max_up = "2M"
[nsm]
class_first = 16
class_last = 127
local_gateway = "gw1"
bras = true
[[nsm.link]]
id = "gw1"
kind = "gateway"
capacity_up = "1G"
capacity_down = "1G"
[radius]
coa_listen = "127.0.0.1:{COA_PORT}"
accounting_listen = "127.0.0.1:{ACCT_PORT}"
[[radius.client]]
address = "127.0.0.1"
secret_file = "radius/clients.secret"
name = "radclient"
[[radius.bras]]
name = "bras1"
address = "127.0.0.1:{BRAS_PORT}"
secret_file = "radius/bras1.secret"
profile = "mikrotik"
timeout_ms = 300
retries = 2
"#,
            dataplane = shaper_run::dataplane_toml(&guard.pins, "d0", "d1", None),
            store = dir.join("db/shaper.db").display(),
            tokens = tokens.display(),
        ),
    )
    .unwrap();

    // `shaper check` reads the secrets relative to the configuration's directory.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_shaper"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "shaper check: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    let log = dir.join("shaper.log");
    let child = guard.child.insert(start(&name, &config, &log));
    wait_ready(child, &name, &log);
    let acct = format!("127.0.0.1:{ACCT_PORT}");
    let coa = format!("127.0.0.1:{COA_PORT}");

    // (a) Accounting Start → the session is in the network service manager.
    let out = radclient(&ns, &dir, &acct, "acct", CLIENT_SECRET, START);
    assert!(out.contains("Received Accounting-Response"), "{out}");
    let s = sessions_of_cm1(&name);
    assert_eq!(s.as_array().unwrap().len(), 1, "{s}");
    assert_eq!(
        (
            &s[0]["id"],
            &s[0]["prefix"],
            &s[0]["bras"],
            &s[0]["gateway"]
        ),
        (
            &json!("sess-cm1"),
            &json!("198.18.0.10"),
            &json!("bras1"),
            &json!("gw1")
        ),
        "{s}"
    );

    // ... and survives a restart of shaper.
    terminate(guard.child.as_mut().unwrap(), &log);
    let log2 = dir.join("shaper-2.log");
    let child = guard.child.insert(start(&name, &config, &log2));
    wait_ready(child, &name, &log2);
    let s = sessions_of_cm1(&name);
    assert_eq!(s.as_array().unwrap().len(), 1, "after the restart: {s}");
    assert_eq!(s[0]["id"], "sess-cm1", "{s}");

    // (b) CoA in: Mikrotik-Rate-Limit "rx/tx ... min-rx/min-tx" = up/down for cm1's session
    // → ACK, and the modem's effective level is the new one.
    let out = radclient(
        &ns,
        &dir,
        &coa,
        "coa",
        CLIENT_SECRET,
        "User-Name = \"cm1\"\nMikrotik-Rate-Limit = \"5M/40M 0/0 0/0 0/0 8 1M/10M\"\nMessage-Authenticator = 0x00\n",
    );
    assert!(out.contains("Received CoA-ACK"), "{out}");
    let m = ok(&name, ADMIN, "GET", "/v1/modems/cm1", None);
    assert_eq!(
        (
            m["effective"]["max_down_bps"].as_u64(),
            m["effective"]["max_up_bps"].as_u64(),
            m["effective"]["committed_down_bps"].as_u64(),
        ),
        (Some(40_000_000), Some(5_000_000), Some(10_000_000)),
        "{m}"
    );
    // The grant's committed rate holds capacity on cm1's gateway in the manager.
    let links = ok(&name, ADMIN, "GET", "/v1/links", None);
    assert_eq!(links[0]["committed_down_bps"], 10_000_000, "{links}");
    // Unknown session → NAK 503.
    let out = radclient(
        &ns,
        &dir,
        &coa,
        "coa",
        CLIENT_SECRET,
        "User-Name = \"nobody\"\nMikrotik-Rate-Limit = \"1M/1M\"\nMessage-Authenticator = 0x00\n",
    );
    assert!(out.contains("Received CoA-NAK"), "{out}");
    assert!(
        out.contains("Error-Cause = Session-Context-Not-Found"),
        "{out}"
    );

    // (c) CoA out: FreeRADIUS plays bras1's CoA port.
    freeradius_conf(&dir.join("freeradius"), BRAS_PORT, BRAS_SECRET);
    let fr = ns
        .spawn([
            "freeradius",
            "-X",
            "-d",
            dir.join("freeradius").to_str().unwrap(),
            "-l",
            "stdout",
        ])
        .unwrap();
    let bras = format!("127.0.0.1:{BRAS_PORT}");
    let t0 = Instant::now();
    loop {
        let out = radclient(
            &ns,
            &dir,
            &bras,
            "coa",
            BRAS_SECRET,
            "User-Name = \"probe\"\nMikrotik-Rate-Limit = \"1M/1M\"\nMessage-Authenticator = 0x00\n",
        );
        if out.contains("Received CoA-ACK") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "FreeRADIUS does not answer: {out}"
        );
    }

    ok(
        &name,
        ADMIN,
        "PUT",
        "/v1/providers/p1",
        Some(json!({ "kind": "asp", "name": "Video One", "prefixes": ["198.19.0.0/24"] })),
    );
    ok(
        &name,
        ADMIN,
        "PUT",
        "/v1/providers/p1/applications/video",
        Some(json!({ "name": "video", "classifiers": [
            { "direction": "down", "proto": 17, "provider_prefix": "198.19.0.0/24",
              "provider_ports": "5000" }
        ] })),
    );
    let (s, alloc) = call(
        &name,
        PROVIDER,
        "POST",
        "/v1/providers/p1/allocations",
        Some(
            json!({ "application": "video", "scope": { "subscriber": "cm1" },
                     "down_bps": 20_000_000, "priority": 6 }),
        ),
    );
    assert_eq!(s, 201, "{alloc}");
    let a1 = alloc["id"].as_u64().unwrap();
    let d = bras_deliveries(&name, a1, "allocated", &log2);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (&d[0]["status"], &d[0]["last_code"], &d[0]["attempts"]),
        (&json!("delivered"), &json!(44), &json!(1)),
        "CoA-ACK (code 44) logged: {d:?}"
    );
    assert!(
        d[0]["url"].as_str().unwrap() == "radius-coa://bras1?session=sess-cm1",
        "{d:?}"
    );

    // The BRAS goes down; the release's CoA fails after 1 + 2 retries, and that is logged.
    let fr_log = fr.kill();
    let fr_log = String::from_utf8_lossy(&fr_log.stdout).into_owned();
    // FreeRADIUS saw the session named as accounting reported it, with cm1's plan (after the
    // CoA: 5M up / 40M down) plus the allocation's 20M down.
    assert!(
        fr_log.contains("Mikrotik-Rate-Limit = \"5M/60M\""),
        "{fr_log}"
    );
    assert!(
        fr_log.contains("Acct-Session-Id = \"sess-cm1\""),
        "{fr_log}"
    );
    let (s, r) = call(
        &name,
        PROVIDER,
        "DELETE",
        &format!("/v1/providers/p1/allocations/{a1}"),
        None,
    );
    assert_eq!((s, r["state"].as_str()), (200, Some("released")), "{r}");
    let d = bras_deliveries(&name, a1, "released", &log2);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (&d[0]["status"], &d[0]["attempts"], &d[0]["last_code"]),
        (&json!("failed"), &json!(3), &Value::Null),
        "{d:?}"
    );
    assert!(
        d[0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("no valid response after 3 attempts"),
        "{d:?}"
    );

    // (a) Stop → the session is gone, and an allocation on it is released with it.
    let (s, alloc) = call(
        &name,
        PROVIDER,
        "POST",
        "/v1/providers/p1/allocations",
        Some(
            json!({ "application": "video", "scope": { "subscriber": "cm1" },
                     "down_bps": 10_000_000 }),
        ),
    );
    assert_eq!(s, 201, "{alloc}");
    let a2 = alloc["id"].as_u64().unwrap();
    let out = radclient(
        &ns,
        &dir,
        &acct,
        "acct",
        CLIENT_SECRET,
        &START.replace("Start", "Stop"),
    );
    assert!(out.contains("Received Accounting-Response"), "{out}");
    let s = sessions_of_cm1(&name);
    assert_eq!(s, json!([]), "{s}");
    let a = ok(
        &name,
        PROVIDER,
        "GET",
        &format!("/v1/providers/p1/allocations/{a2}"),
        None,
    );
    assert_eq!(a["state"], "released", "{a}");
    assert_eq!(a["release_reason"], "session sess-cm1 ended", "{a}");
}

/// Sends `bytes` from `sock` to `to` and waits up to `wait` for an answer.
fn exchange(sock: &UdpSocket, to: &str, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(wait)).unwrap();
    sock.send_to(bytes, to).unwrap();
    let mut buf = [0u8; 4096];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("recv: {e}"),
    }
}

/// A signed CoA-Request for User-Name cm1 with `rate` (Mikrotik-Rate-Limit), a
/// Message-Authenticator and, if given, an Event-Timestamp.
fn coa_bytes(id: u8, rate: &str, stamp: Option<u64>) -> Vec<u8> {
    let mut p = Packet::new(Code::CoaRequest, id);
    p.push(dict::USER_NAME, "cm1");
    p.push_vendor(dict::MIKROTIK_RATE_LIMIT, rate.as_bytes());
    if let Some(s) = stamp {
        p.push_integer(dict::EVENT_TIMESTAMP, u32::try_from(s).unwrap());
    }
    p.add_message_authenticator();
    encode_request(&p, CLIENT_SECRET.as_bytes()).unwrap()
}

fn max_down(ns: &str) -> Option<u64> {
    ok(ns, ADMIN, "GET", "/v1/modems/cm1", None)["effective"]["max_down_bps"].as_u64()
}

/// Issue 11, in the real `shaper run` with `[nsm]`:
///
/// - Accounting-Start of a new session on an address an active session holds (its Stop was
///   lost) → Accounting-Response; the older session is ended (the allocation on it released)
///   and the new one recorded; a CoA naming the new session → ACK.
/// - A CoA-Request (bytes built here) ACKed from one UDP socket and sent again from another
///   (another source port) → no answer, not applied again; sent again from the first socket
///   (an RFC 5080 retransmission) → the same ACK. Without Event-Timestamp → no answer.
/// - A CoA for 5G/5G (above 4,294,967,295 bit/s) → CoA-NAK, Invalid-Attribute-Value.
/// - With no Interim-Update for `session_timeout_s`, the session is ended.
#[test]
fn radius_replay_supersede_expiry_and_rate_bound_in_shaper_run() {
    require_tools();
    let ns = NetNs::unique("radrep").expect("netns (needs root and iproute2)");
    ns.run([
        "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ])
    .unwrap();
    for dev in ["d0", "d1"] {
        ns.run(["ip", "link", "set", dev, "up"]).unwrap();
    }
    let name = ns.name().to_string();
    let id = std::process::id();
    let mut guard = Guard {
        child: None,
        pins: PathBuf::from(format!("/sys/fs/bpf/shaper-radrep-{id}")),
        dir: std::env::temp_dir().join(format!("shaper-radrep-{id}")),
    };
    let _ = std::fs::remove_dir_all(&guard.pins);
    let _ = std::fs::remove_dir_all(&guard.dir);
    let dir = guard.dir.clone();
    std::fs::create_dir_all(dir.join("radius")).unwrap();
    std::fs::write(
        dir.join("radius/clients.secret"),
        format!("{CLIENT_SECRET}\n"),
    )
    .unwrap();
    let tokens = dir.join("tokens.toml");
    shaper_run::write_tokens(
        &tokens,
        &[(ADMIN, "admin", "root"), (PROVIDER, "provider", "p1")],
    );
    let config = dir.join("shaper.toml");
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
[[modem]]
id = "cm1"
addrs = ["198.18.0.10"]
max_down = "10M"
max_up = "2M"
[nsm]
class_first = 16
class_last = 127
local_gateway = "gw1"
[[nsm.link]]
id = "gw1"
kind = "gateway"
capacity_up = "1G"
capacity_down = "1G"
[radius]
coa_listen = "127.0.0.1:{COA_PORT}"
accounting_listen = "127.0.0.1:{ACCT_PORT}"
session_timeout_s = {TIMEOUT_S}
[[radius.client]]
address = "127.0.0.1"
secret_file = "radius/clients.secret"
name = "radclient"
"#,
            dataplane = shaper_run::dataplane_toml(&guard.pins, "d0", "d1", None),
            store = dir.join("db/shaper.db").display(),
            tokens = tokens.display(),
        ),
    )
    .unwrap();
    let log = dir.join("shaper.log");
    let child = guard.child.insert(start(&name, &config, &log));
    wait_ready(child, &name, &log);
    let acct = format!("127.0.0.1:{ACCT_PORT}");
    let coa = format!("127.0.0.1:{COA_PORT}");

    // (1) Session A on 198.18.0.10 with an allocation on it.
    let out = radclient(&ns, &dir, &acct, "acct", CLIENT_SECRET, START);
    assert!(out.contains("Received Accounting-Response"), "{out}");
    ok(
        &name,
        ADMIN,
        "PUT",
        "/v1/providers/p1",
        Some(json!({ "kind": "asp", "name": "Video One", "prefixes": ["198.19.0.0/24"] })),
    );
    ok(
        &name,
        ADMIN,
        "PUT",
        "/v1/providers/p1/applications/video",
        Some(json!({ "name": "video", "classifiers": [
            { "direction": "down", "proto": 17, "provider_prefix": "198.19.0.0/24",
              "provider_ports": "5000" }
        ] })),
    );
    let (s, alloc) = call(
        &name,
        PROVIDER,
        "POST",
        "/v1/providers/p1/allocations",
        Some(
            json!({ "application": "video", "scope": { "subscriber": "cm1" },
                     "down_bps": 5_000_000 }),
        ),
    );
    assert_eq!(s, 201, "{alloc}");
    let a1 = alloc["id"].as_u64().unwrap();

    // Its Stop is lost; the BRAS gives the address to session B: answered, A ended (the
    // allocation released), B recorded.
    let start_b = START.replace("sess-cm1", "sess-cm1-b");
    let out = radclient(&ns, &dir, &acct, "acct", CLIENT_SECRET, &start_b);
    assert!(
        out.contains("Received Accounting-Response"),
        "a new session on a held address must be answered: {out}\n{}",
        log_text(&log)
    );
    let s = sessions_of_cm1(&name);
    assert_eq!(s.as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s[0]["id"], "sess-cm1-b", "{s}");
    let a = ok(
        &name,
        PROVIDER,
        "GET",
        &format!("/v1/providers/p1/allocations/{a1}"),
        None,
    );
    assert_eq!(
        (a["state"].as_str(), a["release_reason"].as_str()),
        (Some("released"), Some("session sess-cm1 ended")),
        "{a}"
    );
    assert!(
        log_text(&log).contains("superseded by session sess-cm1-b"),
        "{}",
        log_text(&log)
    );
    // A CoA naming the new session is applied (it was NAK 503 while B was not recorded).
    let out = radclient(
        &ns,
        &dir,
        &coa,
        "coa",
        CLIENT_SECRET,
        "Acct-Session-Id = \"sess-cm1-b\"\nMikrotik-Rate-Limit = \"4M/20M\"\nMessage-Authenticator = 0x00\n",
    );
    assert!(out.contains("Received CoA-ACK"), "{out}");
    assert_eq!(max_down(&name), Some(20_000_000));

    // (2) Replay. Keep B alive first (its timeout runs from its last accounting).
    let interim_b = start_b.replace("Start", "Interim-Update");
    let out = radclient(&ns, &dir, &acct, "acct", CLIENT_SECRET, &interim_b);
    assert!(out.contains("Received Accounting-Response"), "{out}");
    let now_s = common::radius::unix_now_s();
    let target = coa.clone();
    let (first, replayed, retransmitted, unstamped) = in_netns(&name, move || {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let req = coa_bytes(77, "6M/30M", Some(now_s));
        let first = exchange(&a, &target, &req, Duration::from_secs(3));
        let replayed = exchange(&b, &target, &req, Duration::from_millis(1500));
        let retransmitted = exchange(&a, &target, &req, Duration::from_secs(3));
        let unstamped = exchange(
            &b,
            &target,
            &coa_bytes(78, "7M/35M", None),
            Duration::from_millis(1500),
        );
        (first, replayed, retransmitted, unstamped)
    })
    .unwrap();
    let first = first.expect("the CoA is answered");
    assert_eq!(Packet::decode(&first).unwrap().code, Code::CoaAck);
    assert!(
        replayed.is_none(),
        "a replay from another port must get no answer: {replayed:?}"
    );
    assert_eq!(
        retransmitted.as_deref(),
        Some(first.as_slice()),
        "a retransmission gets the cached ACK"
    );
    assert!(unstamped.is_none(), "no Event-Timestamp: dropped");
    assert_eq!(max_down(&name), Some(30_000_000));

    // (3) 5G/5G does not fit the DOCSIS file: NAK 407, the level unchanged.
    let out = radclient(
        &ns,
        &dir,
        &coa,
        "coa",
        CLIENT_SECRET,
        "User-Name = \"cm1\"\nMikrotik-Rate-Limit = \"5G/5G\"\nMessage-Authenticator = 0x00\n",
    );
    assert!(out.contains("Received CoA-NAK"), "{out}");
    assert!(
        out.contains("Error-Cause = Invalid-Attribute-Value"),
        "{out}"
    );
    assert_eq!(max_down(&name), Some(30_000_000));

    // (4) No Interim-Update for session_timeout_s: B is ended.
    assert_eq!(sessions_of_cm1(&name).as_array().unwrap().len(), 1);
    let t0 = Instant::now();
    while !sessions_of_cm1(&name).as_array().unwrap().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(TIMEOUT_S + 10),
            "session not expired: {}",
            log_text(&log)
        );
        sleep(Duration::from_millis(200));
    }
    assert!(
        log_text(&log).contains("expired: no accounting for"),
        "{}",
        log_text(&log)
    );
    terminate(guard.child.as_mut().unwrap(), &log);
}
