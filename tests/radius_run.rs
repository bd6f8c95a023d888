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
//! Needs root, iproute2, freeradius-utils and freeradius (`cargo xtask deps`).
//! Run: `cargo test -p shaper-user --test radius_run -- --nocapture`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::radius::{freeradius_conf, radclient, require_tools};
use common::shaper_run::{self, Guard, start};
use serde_json::{Value, json};
use shaper::lab::NetNs;

const API: u16 = 18095;
const COA_PORT: u16 = 13799;
const ACCT_PORT: u16 = 11813;
const BRAS_PORT: u16 = 23799;
const ADMIN: &str = "admin-radius-run-token";
const PROVIDER: &str = "provider-p1-radius-run-token";
const CLIENT_SECRET: &str = "client-s3cret";
const BRAS_SECRET: &str = "bras-s3cret";

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
