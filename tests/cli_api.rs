//! The API client commands of the real binary (`shaper provision`, `events`, `status`,
//! `modems`) against
//! the HTTP API served in this test process: the router over a controller with a SQLite store
//! in a temp dir and enforcement disabled, on 127.0.0.1 with an ephemeral port.
//!
//! Run: `cargo test -p shaper-user --test cli_api`.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use shaper::api::{self, AppState, Role, TokenEntry, TokenTable, hash_token};
use shaper::controller::{Controller, ControllerConfig, Disabled};
use shaper::policy::SubscriberKey;
use shaper::provision::QosLevel;
use shaper::store::SqliteStore;

const TOKEN: &str = "cli-csr-token";

struct Server {
    url: String,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves the API on a thread for the rest of the test process.
fn serve(name: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("shaper-cli-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(dir.join("shaper.db")).unwrap();
    let now = api::system_now_ms();
    let (mut ctl, _) = Controller::open(
        ControllerConfig::default(),
        Box::new(store),
        Box::new(Disabled),
        Box::new(Disabled),
        Vec::new(),
        now,
    )
    .unwrap();
    let key = SubscriberKey {
        addr: "10.0.0.1".parse().unwrap(),
        len: 32,
    };
    let binding = ctl.propose_binding("cm1", vec![key]).unwrap();
    let base = QosLevel {
        max_up_bps: Some(2_000_000),
        max_down_bps: Some(10_000_000),
        ..QosLevel::default()
    };
    ctl.add_modem(binding, base, now).unwrap();
    let tokens = TokenTable::new([TokenEntry {
        sha256_hex: hash_token(TOKEN),
        role: Role::Csr,
        subject: "alice".into(),
    }])
    .unwrap();
    let state = AppState::new(Arc::new(Mutex::new(ctl)), Arc::new(tokens));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, api::router(state)).await.unwrap();
        });
    });
    Server { url, dir }
}

fn shaper(server: &Server, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shaper"))
        .args(args)
        .args(["--api", &server.url])
        .env("SHAPER_TOKEN", token)
        .env_remove("SHAPER_API")
        .output()
        .expect("run shaper")
}

/// Runs a command that must succeed; its stdout.
fn ok(server: &Server, args: &[&str]) -> String {
    let out = shaper(server, TOKEN, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "shaper {args:?}: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(server: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&ok(server, &all)).expect("--json prints JSON")
}

#[test]
fn provision_list_show_modify_cancel_status() {
    let server = serve("flow");
    let out = ok(
        &server,
        &[
            "provision",
            "--modem",
            "cm1",
            "--max-down",
            "50M",
            "--start",
            "+1h",
            "--for",
            "2h",
            "--idempotency-key",
            "boost-1",
        ],
    );
    let id: u64 = out
        .strip_prefix("event ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event id in {out:?}"));
    assert!(out.contains("created"), "{out}");
    let list = ok(&server, &["events", "list", "--modem", "cm1"]);
    assert!(list.contains("pending") && list.contains("50M"), "{list}");
    let list = json(&server, &["events", "list", "--state", "pending"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], id);

    let show = ok(&server, &["events", "show", &id.to_string()]);
    assert!(show.contains("state      pending"), "{show}");
    assert!(show.contains("modem      cm1"), "{show}");
    let ev = json(&server, &["events", "show", &id.to_string()]);
    let start = ev["start_ms"].as_u64().unwrap();
    let stop = ev["stop_ms"].as_u64().unwrap();
    assert_eq!(stop - start, 2 * 3_600_000);

    let modified = json(
        &server,
        &["events", "modify", &id.to_string(), "--stop", "+4h"],
    );
    let new_stop = modified["stop_ms"].as_u64().unwrap();
    assert!(new_stop > stop, "{modified}");
    assert_eq!(modified["start_ms"].as_u64(), Some(start));

    let cancelled = ok(&server, &["events", "cancel", &id.to_string()]);
    assert!(cancelled.contains("state      cancelled"), "{cancelled}");
    let ev = json(&server, &["events", "show", &id.to_string()]);
    assert_eq!(ev["state"], "cancelled");

    let status = ok(&server, &["status", "--modem", "cm1"]);
    assert!(status.contains("base       down 10M, up 2M"), "{status}");
    assert!(status.contains("effective  down 10M, up 2M"), "{status}");
    let status = json(&server, &["status", "--modem", "cm1"]);
    assert_eq!(status["effective"]["max_down_bps"], 10_000_000);

    // A retry with the same key and the same (absolute) request: the same event, a duplicate.
    let retry = [
        "provision",
        "--modem",
        "cm1",
        "--priority",
        "5",
        "--target-setup-time",
        "200",
        "--start",
        "2099-01-01T00:00:00Z",
        "--stop",
        "2099-01-01T01:30:00+01:00",
        "--idempotency-key",
        "boost-2",
    ];
    let first = ok(&server, &retry);
    assert!(first.contains("created"), "{first}");
    let again = ok(&server, &retry);
    let id2 = first.split_whitespace().nth(1).unwrap();
    assert!(
        again.contains(&format!("event {id2} (duplicate")),
        "{again}"
    );
    let ev = json(&server, &["events", "show", id2]);
    assert_eq!(ev["start_ms"], 4_070_908_800_000_u64);
    assert_eq!(ev["stop_ms"], 4_070_908_800_000_u64 + 1_800_000);
    assert_eq!(ev["qos"]["targets"]["setup_time_ms"], 200, "{ev}");
}

#[test]
fn errors_exit_1_with_the_status() {
    let server = serve("errors");
    let out = shaper(&server, "wrong-token", &["status", "--modem", "cm1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");

    let out = shaper(&server, TOKEN, &["status", "--modem", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("404 Not Found: unknown modem nosuch"),
        "{stderr}"
    );

    let out = shaper(
        &server,
        TOKEN,
        &["provision", "--modem", "cm1", "--priority", "9"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("422") && stderr.contains("field:"),
        "{stderr}"
    );

    let out = shaper(&server, TOKEN, &["events", "show", "999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}

#[test]
fn modems_set_base_and_audit() {
    let server = serve("base");
    let out = ok(
        &server,
        &[
            "modems",
            "set-base",
            "cm1",
            "--max-down",
            "20M",
            "--max-up",
            "4M",
            "--committed-down",
            "5M",
            "--priority",
            "3",
        ],
    );
    assert!(out.contains("modem      cm1"), "{out}");
    assert!(
        out.contains("base       down 20M, up 4M, committed-down 5M, priority 3"),
        "{out}"
    );
    assert!(out.contains("effective  down 20M, up 4M"), "{out}");
    let status = json(&server, &["status", "--modem", "cm1"]);
    assert_eq!(status["base"]["max_down_bps"], 20_000_000);
    assert_eq!(status["base"]["committed_down_bps"], 5_000_000);
    assert_eq!(status["effective"]["max_up_bps"], 4_000_000);
    // A whole plan: what is left out is unset.
    let v = json(
        &server,
        &[
            "modems",
            "set-base",
            "cm1",
            "--max-down",
            "30M",
            "--max-up",
            "3M",
        ],
    );
    assert_eq!(v["base"]["max_down_bps"], 30_000_000);
    assert!(v["base"]["priority"].is_null(), "{v}");
    let audit = ok(&server, &["modems", "audit", "cm1"]);
    let lines: Vec<&str> = audit.lines().collect();
    assert_eq!(lines.len(), 6, "{audit}");
    assert!(lines[0].ends_with("  api:csr:alice"), "{audit}");
    assert_eq!(lines[1], "  old  down 10M, up 2M");
    assert_eq!(
        lines[2],
        "  new  down 20M, up 4M, committed-down 5M, priority 3"
    );
    assert_eq!(lines[5], "  new  down 30M, up 3M");
    let audit = json(&server, &["modems", "audit", "cm1"]);
    assert_eq!(audit[1]["old"]["max_down_bps"], 20_000_000);
    assert_eq!(
        audit[1]["by"],
        serde_json::json!({ "kind": "api", "role": "csr", "subject": "alice" })
    );

    // Service targets are part of the plan too.
    let t = json(
        &server,
        &[
            "modems",
            "set-base",
            "cm1",
            "--max-down",
            "30M",
            "--max-up",
            "3M",
            "--target-availability",
            "999900",
            "--target-loss",
            "1000",
        ],
    );
    assert_eq!(t["base"]["targets"]["availability_ppm"], 999_900, "{t}");
    assert_eq!(t["base"]["targets"]["loss_ppm"], 1000, "{t}");
    assert!(t["base"]["targets"]["repair_time_ms"].is_null(), "{t}");
    let v = json(
        &server,
        &[
            "modems",
            "set-base",
            "cm1",
            "--max-down",
            "30M",
            "--max-up",
            "3M",
        ],
    );
    assert!(
        v["base"]["targets"]["availability_ppm"].is_null(),
        "left out, unset: {v}"
    );

    // Refusals exit 1 with the API's status and field, and change nothing.
    let out = shaper(
        &server,
        TOKEN,
        &[
            "modems",
            "set-base",
            "cm1",
            "--max-down",
            "10M",
            "--max-up",
            "1M",
            "--committed-down",
            "20M",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("422") && stderr.contains("committed_down_bps"),
        "{stderr}"
    );
    let out = shaper(
        &server,
        TOKEN,
        &[
            "modems",
            "set-base",
            "nosuch",
            "--max-down",
            "1M",
            "--max-up",
            "1M",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    // Both maximum rates are required.
    let out = shaper(
        &server,
        TOKEN,
        &["modems", "set-base", "cm1", "--max-down", "1M"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-up"));
    let status = json(&server, &["status", "--modem", "cm1"]);
    assert_eq!(status["base"]["max_down_bps"], 30_000_000);
    assert_eq!(
        json(&server, &["modems", "audit", "cm1"])
            .as_array()
            .unwrap()
            .len(),
        4,
        "two changes before the refusals, two with targets, none by the refusals"
    );
}
