//! `shaper run` with the modem pipeline, the real binary, in a fresh network namespace: the
//! controller writes cm1's configuration file at start (version 1, no reboot), serves it by
//! TFTP and at `GET /files/{name}`; an immediate boost becomes version 2 and an authenticated
//! FORCERENEW that `shaper modem-emulator` (same namespace, the modem's address) accepts; an
//! operator's file dropped in the incoming directory becomes the base plan (version 3), a
//! garbage file is refused and listed at `GET /v1/modem-files`; cancelling the boost
//! regenerates the level beneath (version 4) and reboots again; a boost on cm2 reboots it by
//! SNMP (a second emulator). A file that cannot be delivered (cm2's stable name taken by a
//! directory) shows in `GET /v1/modems/cm2` and the metrics, is retried with backoff, logged
//! once, and clears once fixed; a 5000-character file name is 404 and never logged whole.
//! Needs root and iproute2.
//!
//! Run: `cargo test -p shaper-user --test pipeline_run`.

mod common;

use common::shaper_run::{self, Guard};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use serde_json::Value;
use shaper::lab::{NetNs, in_netns};
use shaper::modem::configfile::{BuildOptions, build, load_and_verify};
use shaper::proto::docsis::{CmtsKey, TrustedKeys};
use shaper::provision::QosLevel;

const PORT: u16 = 18081;
const TOKEN: &str = "csr-secret-token";
const ADMIN: &str = "admin-secret-token";
const BASE_DOWN: u64 = 10_000_000;
const BOOST_DOWN: u64 = 50_000_000;
const DROPPED_DOWN: u64 = 30_000_000;
const FR_KEY: &str = "00112233445566778899aabbccddeeff";
const MAC: &str = "02:00:5e:00:00:01";
const MAC2: &str = "02:00:5e:00:00:02";
const CMTS: &str = "cmts-secret";

fn http(ns: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    shaper_run::http(ns, PORT, TOKEN, method, path, body).unwrap()
}

fn get_modem(ns: &str) -> Value {
    let (status, body) = http(ns, "GET", "/v1/modems/cm1", None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `secs` seconds.
fn wait_for<T>(secs: u64, what: &str, log: &Path, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s\n{}",
            log_text(log)
        );
        sleep(Duration::from_millis(100));
    }
}

/// Fetches `name` by TFTP from the gateway inside the namespace.
fn tftp_get(ns: &str, name: &str) -> Vec<u8> {
    in_netns(ns, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(shaper::tftp::client::fetch(
                "198.18.0.1:6969".parse().unwrap(),
                name,
                shaper::tftp::client::ClientConfig::default(),
            ))
    })
    .unwrap()
    .unwrap()
}

/// What a file grants, checked with the CMTS key.
fn granted(dir: &Path, bytes: &[u8]) -> QosLevel {
    let p = dir.join("fetched.cfg");
    std::fs::write(&p, bytes).unwrap();
    load_and_verify(&p, &CmtsKey::new(CMTS.as_bytes()), &TrustedKeys::new())
        .unwrap()
        .qos
}

/// GET `path` without a token: (status, body bytes).
fn http_bytes(ns: &str, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read as _, Write as _};
    let mut s = in_netns(ns, || std::net::TcpStream::connect(("127.0.0.1", PORT)))
        .unwrap()
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&resp[..head_end]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, resp[head_end + 4..].to_vec())
}

/// `shaper run --netns NS` from `bin`; stderr goes to `log`.
fn start(bin: &str, ns: &str, config: &Path, log: &Path) -> Child {
    Command::new(bin)
        .args(["run", "--netns", ns, "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn shaper run")
}

struct Emulator(Child);

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_generates_delivers_reboots_and_takes_dropped_files() {
    let ns = NetNs::unique("piperun").expect("netns (needs root and iproute2)");
    ns.run([
        "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ])
    .unwrap();
    for dev in ["d0", "d1", "lo"] {
        ns.run(["ip", "link", "set", dev, "up"]).unwrap();
    }
    ns.run(["ip", "addr", "add", "198.18.0.1/24", "dev", "d0"])
        .unwrap();
    for a in ["198.18.0.10/32", "198.18.0.11/32"] {
        ns.run(["ip", "addr", "add", a, "dev", "d1"]).unwrap();
    }
    let id = std::process::id();
    let mut guard = Guard {
        child: None,
        pins: PathBuf::from(format!("/sys/fs/bpf/shaper-piperun-{id}")),
        dir: std::env::temp_dir().join(format!("shaper-piperun-{id}")),
    };
    let dir = guard.dir.clone();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    shaper_run::write_tokens(
        &dir.join("tokens.toml"),
        &[(TOKEN, "csr", "alice"), (ADMIN, "admin", "root")],
    );
    std::fs::write(dir.join("cmts.key"), format!("{CMTS}\n")).unwrap();
    std::fs::write(dir.join("name.key"), format!("{}\n", "3c".repeat(32))).unwrap();
    let config = dir.join("shaper.toml");
    // Relative paths: relative to the configuration file's directory.
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
[controller.enforcement]
modem_pipeline = true
[controller.modem_pipeline]
config_dir = "cfg"
incoming_dir = "incoming"
cmts_key_file = "cmts.key"
name_key_file = "name.key"
keep_versions = 2
tftp_listen = "198.18.0.1:6969"
reboot_attempts = 3
reboot_backoff_ms = 100
[[modem]]
id = "cm1"
addrs = ["198.18.0.10"]
max_down = {BASE_DOWN}
max_up = "2M"
mac = "{MAC}"
reboot = "forcerenew"
forcerenew_key = "{FR_KEY}"
[[modem]]
id = "cm2"
addrs = ["198.18.0.11"]
max_down = {BASE_DOWN}
mac = "{MAC2}"
reboot = "snmp"
snmp_community = "private"
"#,
            dataplane = shaper_run::dataplane_toml(&guard.pins, "d0", "d1", None),
            store = dir.join("db/shaper.db").display(),
            tokens = dir.join("tokens.toml").display(),
        ),
    )
    .unwrap();
    // A private copy of the binary: a shared target directory may be rebuilt by another
    // checkout while this test runs.
    let bin = dir.join("shaper");
    std::fs::copy(env!("CARGO_BIN_EXE_shaper"), &bin).unwrap();
    let bin = bin.to_str().unwrap().to_owned();
    let log = dir.join("shaper.log");
    let ns_name = ns.name().to_string();

    let check = Command::new(&bin)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    let emu_out = dir.join("emulator.jsonl");
    let _emulator = Emulator(
        Command::new("ip")
            .args(["netns", "exec", &ns_name, &bin])
            .args(["modem-emulator", "--mac", MAC, "--forcerenew-key", FR_KEY])
            .args([
                "--dhcp-listen",
                "198.18.0.10:68",
                "--snmp-listen",
                "198.18.0.10:1161",
            ])
            .stdout(std::fs::File::create(&emu_out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let emu2_out = dir.join("emulator2.jsonl");
    let _emulator2 = Emulator(
        Command::new("ip")
            .args(["netns", "exec", &ns_name, &bin])
            .args(["modem-emulator", "--mac", MAC2, "--community", "private"])
            .args([
                "--dhcp-listen",
                "198.18.0.11:68",
                "--snmp-listen",
                "198.18.0.11:161",
            ])
            .stdout(std::fs::File::create(&emu2_out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let child = guard.child.insert(start(&bin, &ns_name, &config, &log));
    wait_for(30, "the API answers", &log, || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("shaper run exited with {status}: {}", log_text(&log));
        }
        shaper_run::http(&ns_name, PORT, TOKEN, "GET", "/v1/modems/cm1", None)
            .ok()
            .filter(|(s, _)| *s == 200)
    });

    // Version 1 at start, under the stable name `modem-config name` prints; no reboot for it.
    let name = Command::new(&bin)
        .args(["modem-config", "name", "--modem", "cm1", "--name-key-file"])
        .arg(dir.join("name.key"))
        .output()
        .unwrap();
    assert!(name.status.success(), "{name:?}");
    let stable = String::from_utf8(name.stdout).unwrap().trim().to_owned();
    let modem = get_modem(&ns_name);
    let p = &modem["pipeline"];
    assert_eq!(p["version"], 1, "{modem}");
    assert_eq!(p["file"].as_str(), Some(stable.as_str()), "{modem}");
    assert_eq!(p["last_reboot"]["skipped"], true, "{modem}");
    let v1 = tftp_get(&ns_name, &stable);
    assert_eq!(granted(&dir, &v1).max_down_bps, Some(BASE_DOWN));
    assert_eq!(v1, std::fs::read(dir.join("cfg").join(&stable)).unwrap());
    // The same bytes over HTTP, without a token; nothing but the files.
    assert_eq!(
        http_bytes(&ns_name, &format!("/files/{stable}")),
        (200, v1.clone())
    );
    assert_eq!(http_bytes(&ns_name, "/files/index.json").0, 404);

    // An immediate boost: version 2, delivered, the modem rebooted by FORCERENEW.
    let (status, body) = http(
        &ns_name,
        "POST",
        "/v1/events",
        Some(&format!(
            r#"{{"modem":"cm1","qos":{{"max_down_bps":{BOOST_DOWN}}}}}"#
        )),
    );
    assert_eq!(status, 201, "{body}");
    let event = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_u64()
        .unwrap();
    let modem = wait_for(10, "the boost's reboot is recorded", &log, || {
        let m = get_modem(&ns_name);
        (m["pipeline"]["last_reboot"]["version"] == 2).then_some(m)
    });
    let r = &modem["pipeline"]["last_reboot"];
    assert_eq!(r["method"], "forcerenew", "{modem}");
    assert_eq!(r["ok"], true, "{modem}");
    assert_eq!(r["attempts"], 1, "{modem}");
    let line = wait_for(10, "the emulator accepts the FORCERENEW", &log, || {
        std::fs::read_to_string(&emu_out)
            .ok()
            .filter(|t| t.contains("forcerenew"))
    });
    assert!(line.contains("\"event\":\"reboot\""), "{line}");
    let v2 = tftp_get(&ns_name, &stable);
    assert_eq!(granted(&dir, &v2).max_down_bps, Some(BOOST_DOWN));

    // A garbage file in the incoming directory is refused and listed; nothing changes.
    std::fs::write(dir.join("incoming/cm1.cfg"), b"not a config file").unwrap();
    let files = wait_for(10, "the garbage file is refused", &log, || {
        let (s, body) = http(&ns_name, "GET", "/v1/modem-files", None);
        assert_eq!(s, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        (v.as_array().unwrap().len() == 1).then_some(v)
    });
    assert_eq!(files[0]["ok"], false, "{files}");
    assert!(dir.join("incoming/rejected/cm1.cfg").is_file());
    assert_eq!(get_modem(&ns_name)["pipeline"]["version"], 2);
    assert!(log_text(&log).contains("modem configuration file refused"));

    // A valid operator file becomes the base plan: version 3, the boost still on top of it.
    let dropped = QosLevel {
        max_down_bps: Some(DROPPED_DOWN),
        max_up_bps: Some(3_000_000),
        ..QosLevel::default()
    };
    let key = CmtsKey::new(CMTS.as_bytes());
    let bytes = build(
        "cm1",
        &dropped,
        &BuildOptions {
            cmts_key: &key,
            signer: None,
            max_cpe: 2,
        },
    )
    .unwrap();
    std::fs::write(dir.join(".op.tmp"), &bytes).unwrap();
    std::fs::rename(dir.join(".op.tmp"), dir.join("incoming/op-1.cfg")).unwrap();
    let modem = wait_for(10, "the dropped file is applied", &log, || {
        let m = get_modem(&ns_name);
        (m["base"]["max_down_bps"] == DROPPED_DOWN).then_some(m)
    });
    assert_eq!(modem["effective"]["max_down_bps"], BOOST_DOWN, "{modem}");
    assert_eq!(modem["effective"]["max_up_bps"], 3_000_000, "{modem}");
    assert_eq!(modem["pipeline"]["version"], 3, "{modem}");
    // Moved once handled (just after the controller call).
    wait_for(10, "the applied file is moved", &log, || {
        dir.join("incoming/applied/op-1.cfg")
            .is_file()
            .then_some(())
    });
    let v3 = tftp_get(&ns_name, &stable);
    assert_eq!(granted(&dir, &v3).max_up_bps, Some(3_000_000));

    // The boost ends (cancelled): the level beneath is regenerated as version 4 and delivered.
    let (status, body) = http(&ns_name, "DELETE", &format!("/v1/events/{event}"), None);
    assert_eq!(status, 200, "{body}");
    let modem = wait_for(10, "the revert's reboot is recorded", &log, || {
        let m = get_modem(&ns_name);
        (m["pipeline"]["last_reboot"]["version"] == 4).then_some(m)
    });
    assert_eq!(modem["pipeline"]["last_reboot"]["ok"], true, "{modem}");
    let v4 = tftp_get(&ns_name, &stable);
    assert_eq!(granted(&dir, &v4).max_down_bps, Some(DROPPED_DOWN));
    // Three reboots accepted by the modem: the boost, the dropped file, the revert.
    wait_for(
        10,
        "the emulator accepts the third FORCERENEW",
        &log,
        || {
            let t = std::fs::read_to_string(&emu_out).unwrap_or_default();
            (t.lines().filter(|l| l.contains("forcerenew")).count() == 3).then_some(())
        },
    );

    // The SNMP variant: a boost on cm2 reboots it with SET docsDevResetNow.
    let (status, body) = http(
        &ns_name,
        "POST",
        "/v1/events",
        Some(&format!(
            r#"{{"modem":"cm2","qos":{{"max_down_bps":{BOOST_DOWN}}}}}"#
        )),
    );
    assert_eq!(status, 201, "{body}");
    let cm2 = wait_for(10, "cm2's SNMP reboot is recorded", &log, || {
        let (s, body) = http(&ns_name, "GET", "/v1/modems/cm2", None);
        assert_eq!(s, 200, "{body}");
        let m: Value = serde_json::from_str(&body).unwrap();
        (m["pipeline"]["last_reboot"]["version"] == 2).then_some(m)
    });
    let r = &cm2["pipeline"]["last_reboot"];
    assert_eq!(
        (r["method"].as_str(), r["ok"].as_bool()),
        (Some("snmp"), Some(true)),
        "{cm2}"
    );
    let line = wait_for(10, "the emulator accepts the SNMP reset", &log, || {
        std::fs::read_to_string(&emu2_out)
            .ok()
            .filter(|t| t.contains("snmp"))
    });
    assert!(line.contains("\"event\":\"reboot\""), "{line}");
    let cm2_file = cm2["pipeline"]["file"].as_str().unwrap();
    assert_eq!(
        granted(&dir, &tftp_get(&ns_name, cm2_file)).max_down_bps,
        Some(BOOST_DOWN)
    );

    // cm2's stable name is taken by a directory: its next file cannot be delivered. The modem
    // shows it, the metrics count it, it is retried with backoff and logged once.
    let cm2_stable = dir.join("cfg").join(cm2_file);
    std::fs::remove_file(&cm2_stable).unwrap();
    std::fs::create_dir(&cm2_stable).unwrap();
    let (status, body) = http(
        &ns_name,
        "PUT",
        "/v1/modems/cm2/base",
        Some(r#"{"max_down_bps":20000000}"#),
    );
    assert_eq!(status, 200, "{body}");
    let cm2_view = || {
        let (s, body) = http(&ns_name, "GET", "/v1/modems/cm2", None);
        assert_eq!(s, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let p = cm2_view()["pipeline"].clone();
    assert_eq!(p["failing"], true, "{p}");
    assert_eq!(p["file_failure"]["stage"], "deliver", "{p}");
    assert_eq!(p["version"], 2, "the modem keeps its file: {p}");
    let metric = |series: &str| -> f64 {
        let (s, text) = shaper_run::http(&ns_name, PORT, ADMIN, "GET", "/metrics", None).unwrap();
        assert_eq!(s, 200, "{text}");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(metric("shaper_modem_pipeline_failing_modems"), 1.0);
    // The controller ticks every second; the pipeline retries after 1 s, then 2 s, ….
    sleep(Duration::from_millis(3500));
    let f = cm2_view()["pipeline"]["file_failure"].clone();
    let attempts = f["attempts"].as_u64().unwrap();
    assert!((2..=3).contains(&attempts), "{f}");
    assert_eq!(
        metric("shaper_modem_pipeline_failures_total{stage=\"deliver\"}"),
        attempts as f64
    );
    let text = log_text(&log);
    let cm2_lines = |what: &str| {
        text.lines()
            .filter(|l| l.contains(what) && l.contains("cm2"))
            .count()
    };
    assert_eq!(cm2_lines("modem pipeline failing"), 1, "{text}");
    assert_eq!(cm2_lines("enforcement failed"), 1, "{text}");
    // Fixed: the next retry delivers the file and clears the failure.
    std::fs::remove_dir(&cm2_stable).unwrap();
    let p = wait_for(10, "cm2's file is delivered", &log, || {
        let p = cm2_view()["pipeline"].clone();
        (p["failing"] == false).then_some(p)
    });
    assert_eq!(p["file_failure"], Value::Null, "{p}");
    assert_eq!(p["version"], 3, "{p}");
    assert!(cm2_stable.is_file());
    assert_eq!(metric("shaper_modem_pipeline_failing_modems"), 0.0);
    assert!(log_text(&log).contains("modem pipeline recovered"));

    // A 5000-character file name: 404, and never in the log whole.
    let long = "a".repeat(5000);
    assert_eq!(http_bytes(&ns_name, &format!("/files/{long}.cfg")).0, 404);
    assert!(!log_text(&log).contains(&"a".repeat(65)));

    // `shaper status` shows the file and the last reboot.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns_name, &bin])
        .args(["status", "--modem", "cm1", "--api"])
        .arg(format!("http://127.0.0.1:{PORT}"))
        .env("SHAPER_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains(&format!("file       {stable} (version 4)")),
        "{text}"
    );
    assert!(
        text.contains("reboot     forcerenew ok after 1 attempt(s), version 4"),
        "{text}"
    );

    let pid = i32::try_from(guard.child.as_ref().unwrap().id()).unwrap();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = guard.child.as_mut().unwrap().wait().unwrap();
    assert!(status.success(), "{}", log_text(&log));
    assert!(log_text(&log).contains("TFTP server stopped"));
    guard.child = None;
}
