//! The OpenAPI document as a contract, checked by independent tools:
//!
//! - openapi-spec-validator validates the document (no server needed);
//! - Schemathesis runs against a real `shaper run` (data plane, controller and network
//!   service manager, in a fresh network namespace) once per role token (admin, csr,
//!   subscriber, provider, automation) with every check: no 5xx, every status documented,
//!   every response conforming to the document, every error problem+json, schema-valid
//!   requests accepted and schema-violating ones refused, and stateful sequences along the
//!   document's links. Bounded: a fixed seed, a fixed number of examples per operation and a
//!   wall-clock limit per role. Any failure fails the test with Schemathesis' report.
//!
//! The tools live in a venv under `target/pyenv` (pinned in `tests/schema/requirements.txt`;
//! `cargo xtask deps` or the test itself installs them). Needs root and iproute2.
//!
//! Run: `cargo test -p shaper-user --test api_schema`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::pyenv;
use common::shaper_run::{self, Guard, start};
use shaper::lab::NetNs;

const PORT: u16 = 18_095;
/// (token, role, subject): the subscriber owns cm1, the provider is p1.
const TOKENS: [(&str, &str, &str); 5] = [
    ("schema-admin-token", "admin", "root"),
    ("schema-csr-token", "csr", "alice"),
    ("schema-subscriber-token", "subscriber", "cm1"),
    ("schema-provider-token", "provider", "p1"),
    ("schema-automation-token", "automation", "billing"),
];
/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "15";
/// Fixed, so a failure reproduces.
const SEED: &str = "20261208";
/// Wall-clock limit of one role's run.
const ROLE_LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_document_is_valid_openapi_3_1() {
    let bin = pyenv::ensure();
    let dir = std::env::temp_dir().join(format!("shaper-schema-doc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("openapi.json");
    std::fs::write(
        &file,
        serde_json::to_vec_pretty(&shaper::api::openapi::document()).unwrap(),
    )
    .unwrap();
    let out = Command::new(bin.join("openapi-spec-validator"))
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_validator_refuses_a_broken_document() {
    // The check above can fail: a document with an unknown schema type is refused.
    let bin = pyenv::ensure();
    let dir = std::env::temp_dir().join(format!("shaper-schema-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut doc = shaper::api::openapi::document();
    doc["components"]["schemas"]["QosLevel"]["type"] = "objekt".into();
    let file = dir.join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let status = Command::new(bin.join("openapi-spec-validator"))
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!status.success());
}

/// A namespace with a veth pair, loopback up, and a `shaper run` serving the API on it.
fn serve() -> (NetNs, Guard) {
    let ns = NetNs::unique("apischema").expect("netns (needs root and iproute2)");
    ns.run([
        "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ])
    .unwrap();
    for dev in ["d0", "d1", "lo"] {
        ns.run(["ip", "link", "set", dev, "up"]).unwrap();
    }
    let id = std::process::id();
    let mut guard = Guard {
        child: None,
        pins: PathBuf::from(format!("/sys/fs/bpf/shaper-apischema-{id}")),
        dir: std::env::temp_dir().join(format!("shaper-apischema-{id}")),
    };
    let _ = std::fs::remove_dir_all(&guard.dir);
    std::fs::create_dir_all(&guard.dir).unwrap();
    let tokens = guard.dir.join("tokens.toml");
    shaper_run::write_tokens(&tokens, &TOKENS);
    let config = guard.dir.join("shaper.toml");
    std::fs::write(
        &config,
        format!(
            r#"
{dataplane}[controller]
store = "{store}"
listen = "127.0.0.1:{PORT}"
tokens_file = "{tokens}"
class_first = 128
class_last = 255
[nsm]
class_first = 16
class_last = 127
local_gateway = "gw1"
[[nsm.link]]
id = "gw1"
kind = "gateway"
capacity_up = "10M"
capacity_down = "100M"
[[modem]]
id = "cm1"
addrs = ["198.18.0.10"]
max_down = 10000000
max_up = "2M"
burst = 15000
[[modem]]
id = "cm2"
addrs = ["198.18.0.11"]
max_down = 20000000
max_up = "4M"
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
    let t0 = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("shaper run exited with {status}: {}", read(&log));
        }
        if let Ok((200, _)) =
            shaper_run::http(&ns_name, PORT, TOKENS[0].0, "GET", "/v1/modems/cm1", None)
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the API did not answer within 30 s: {}",
            read(&log)
        );
        sleep(Duration::from_millis(100));
    }
    // Something for the provider routes to find: p1 with an application, cm1 online.
    for (path, body) in [
        (
            "/v1/providers/p1",
            r#"{"kind":"asp","name":"Video One","prefixes":["198.19.0.0/24"]}"#,
        ),
        (
            "/v1/providers/p1/applications/video",
            r#"{"name":"video","classifiers":[{"direction":"down","proto":17,"provider_prefix":"198.19.0.0/24","provider_ports":"5000-5100"}]}"#,
        ),
        (
            "/v1/sessions/s1",
            r#"{"subscriber":"cm1","prefix":"198.18.0.10","bras":"gw1","gateway":"gw1"}"#,
        ),
    ] {
        let (status, answer) =
            shaper_run::http(&ns_name, PORT, TOKENS[0].0, "PUT", path, Some(body)).unwrap();
        assert_eq!(status, 200, "PUT {path}: {answer}");
    }
    (ns, guard)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Runs Schemathesis as one role; `Some(report)` when it found anything.
fn schemathesis(bin: &Path, ns: &str, dir: &Path, token: &str, role: &str) -> Option<String> {
    let out = dir.join(format!("st-{role}.txt"));
    let config = pyenv::root().join("tests/schema/schemathesis.toml");
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin.join("st"))
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("http://127.0.0.1:{PORT}/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        // Every check, from the config file (`[checks] enabled = true`): `--checks all` on
        // the command line would override its two documented per-operation exceptions.
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args(["--workers", "1", "--request-timeout", "10", "--no-color"])
        .args([
            "--generation-database",
            "none",
            "--output-sanitize",
            "false",
        ])
        .current_dir(dir)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ip netns exec st");
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if t0.elapsed() > ROLE_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(200));
    };
    let report = read(&out);
    match status {
        Some(s) if s.success() => None,
        Some(s) => Some(format!("== {role}: st exited with {s}\n{report}")),
        None => Some(format!(
            "== {role}: st did not finish within {ROLE_LIMIT:?}\n{report}"
        )),
    }
}

#[test]
fn schemathesis_finds_nothing_for_any_role() {
    let bin = pyenv::ensure();
    let (ns, guard) = serve();
    let mut failures = Vec::new();
    for (token, role, _) in TOKENS {
        let t0 = Instant::now();
        if let Some(report) = schemathesis(&bin, ns.name(), &guard.dir, token, role) {
            failures.push(report);
        }
        eprintln!(
            "schemathesis as {role}: {:.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    // Kept for reading after the run (the namespace's directory is removed).
    let kept = pyenv::root().join("target/api_schema-report.txt");
    let _ = std::fs::write(&kept, failures.join("\n"));
    assert!(
        failures.is_empty(),
        "Schemathesis found failures (also in {}):\n{}\n\nshaper log:\n{}",
        kept.display(),
        failures.join("\n"),
        read(&guard.dir.join("shaper.log"))
    );
}
