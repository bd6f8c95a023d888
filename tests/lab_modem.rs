//! The seed flow end to end with real processes (issue 4 items 7 and 8): a timed boost makes
//! the controller write the modem's new DOCSIS configuration file, serve it by TFTP and reboot
//! the modem; the modem (the `shaper modem-emulator` binary) re-fetches and verifies the file;
//! the data plane enforces the same level.
//!
//! Topology sub — gw — net. In gw: `shaper run` (the real binary) with the controller, the
//! data plane and the modem pipeline. In sub: `shaper modem-emulator` on the modem's address,
//! fetching its stable file name from the gateway's TFTP server and checking CM MIC, CMTS MIC
//! and the Ed25519 signature. A boost to 40 Mbit/s down starts 2 s after the POST and stops 8 s
//! later. At the start the emulator must print a `reboot` then a `config` granting 40 Mbit/s,
//! and iperf3 (UDP, net → sub) must see 40 Mbit/s; after the stop a `reboot` and a `config`
//! granting 10 Mbit/s, and 10 Mbit/s. Before the boost, the gateway's power-on provisioning
//! (version 1 at the base plan, written without a reboot) reaches the modem by its start
//! fetch. The previous file versions stay in `config_dir`, each verifying with the controller's
//! keys.
//!
//! Two variants: the reboot by RFC 3203 FORCERENEW and by SNMP `docsDevResetNow`. A third
//! test runs the modem half alone (our TFTP server and `Rebooter`, no controller): start
//! fetch, a good file, a corrupted one, one signed by an untrusted key, a good one again. The
//! tests run one after the other (a lock), each in its own namespaces, which are deleted on
//! exit, also on panic. Needs root, iproute2 and iperf3.
//!
//! Run: `cargo test -p shaper-user --test lab_modem -- --nocapture`.

mod common;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, PoisonError},
    thread::sleep,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::shaper_run::{self, Guard, start};
use serde_json::Value;
use shaper::lab::topo::GW_SUB_V4;
use shaper::lab::{IperfClient, IperfOpts, IperfServer, Topology, next_port};
use shaper::modem::load_and_verify;
use shaper::proto::docsis::{CmtsKey, TrustedKeys, verifying_key};

/// The modem's (and subscriber's) address in sub.
const SUB: &str = "198.18.0.10";
const MAC: &str = "02:00:5e:00:00:01";
const TOKEN: &str = "csr-modem-token";
const BASE_DOWN: u64 = 10_000_000;
const BOOST_DOWN: u64 = 40_000_000;
/// UDP offered by iperf3: above both levels.
const OFFERED: u64 = 80_000_000;
/// Seconds of each measurement; interval 0 (connect, bucket settling) is not counted.
const MEASURE_SECS: u32 = 4;
/// Boost start and stop, in ms after the POST.
const START_AFTER_MS: u64 = 2_000;
const STOP_AFTER_MS: u64 = 10_000;
const CMTS_SECRET: &str = "lab-cmts-shared-secret";
const FORCERENEW_KEY: &str = "6c61622d7265636f6e6669672d6b6579";
const NAME_KEY: &str = "4f1c9a27d3e85b6024c7aa9e31f0d8b25e6a7c4093b1f2d8e5c6a7b8091a2b3c";
/// Longest wait for the gateway or the emulator to do something (a liveness bound).
const WAIT: Duration = Duration::from_secs(20);

/// The two variants share the host's CPU; one at a time keeps the rates honest.
static LAB: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reboot {
    ForceRenew,
    Snmp,
}

impl Reboot {
    fn method(self) -> &'static str {
        match self {
            Reboot::ForceRenew => "forcerenew",
            Reboot::Snmp => "snmp",
        }
    }

    /// The `[[modem]]` lines choosing this reboot method.
    fn modem_keys(self) -> String {
        match self {
            Reboot::ForceRenew => format!(
                "reboot = \"forcerenew\"\nforcerenew_key = \"{FORCERENEW_KEY}\"\nforcerenew_xid = 0\n"
            ),
            Reboot::Snmp => "reboot = \"snmp\"\nsnmp_community = \"private\"\n".to_string(),
        }
    }
}

#[test]
fn boost_reconfigures_the_modem_by_forcerenew_and_the_data_plane_follows() {
    run(Reboot::ForceRenew, "lmf", 18091);
}

#[test]
fn boost_reconfigures_the_modem_by_snmp_and_the_data_plane_follows() {
    run(Reboot::Snmp, "lms", 18092);
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
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

/// `shaper <args>` in the test's own namespace (file tools only); its stdout, or a panic
/// with its stderr.
fn shaper_cli(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_shaper"))
        .args(args)
        .output()
        .expect("spawn shaper");
    assert!(
        o.status.success(),
        "shaper {args:?}: {}; stdout: {}; stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout).trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The emulator process; killed on drop.
struct Emulator {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Emulator {
    /// Every JSON line printed so far.
    fn events(&self) -> Vec<Value> {
        log_text(&self.stdout)
            .lines()
            .filter(|l| l.ends_with('}'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    fn context(&self) -> String {
        format!(
            "emulator stdout:\n{}\nemulator stderr:\n{}",
            log_text(&self.stdout),
            log_text(&self.stderr)
        )
    }

    /// Waits for the first `config` or `config_error` event at index `from` or later (the
    /// fetch that follows a reboot); returns every event so far and that index.
    fn wait_fetch(&mut self, from: usize, gw_log: &Path) -> (Vec<Value>, usize) {
        let t0 = Instant::now();
        loop {
            let ev = self.events();
            if let Some(i) = (from..ev.len()).find(|&i| ev[i]["event"] != "reboot") {
                return (ev, i);
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("the emulator exited with {st}; {}", self.context());
            }
            if t0.elapsed() > WAIT {
                panic!(
                    "no configuration fetch within {WAIT:?}; {}\ngateway log:\n{}",
                    self.context(),
                    log_text(gw_log)
                );
            }
            sleep(Duration::from_millis(50));
        }
    }
}

/// Waits until the API answers GET /v1/modems/cm1.
fn wait_ready(child: &mut Child, ns: &str, port: u16, log: &Path) {
    let t0 = Instant::now();
    while t0.elapsed() < WAIT {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("shaper run exited with {status}: {}", log_text(log));
        }
        if let Ok((200, _)) = shaper_run::http(ns, port, TOKEN, "GET", "/v1/modems/cm1", None) {
            return;
        }
        sleep(Duration::from_millis(100));
    }
    panic!("the API did not answer within {WAIT:?}: {}", log_text(log));
}

/// Waits until UDP ports 68 and 161 are bound on the modem's address in `ns`.
fn wait_emulator_bound(ns: &shaper::lab::NetNs, emu: &mut Emulator) {
    let t0 = Instant::now();
    loop {
        let out = ns.run(["ss", "-Hlun"]).unwrap();
        if out.contains(&format!("{SUB}:68")) && out.contains(&format!("{SUB}:161")) {
            return;
        }
        if let Ok(Some(st)) = emu.child.try_wait() {
            panic!("the emulator exited with {st}; {}", emu.context());
        }
        assert!(
            t0.elapsed() < WAIT,
            "the emulator did not bind: {out}; {}",
            emu.context()
        );
        sleep(Duration::from_millis(50));
    }
}

fn mbps(r: f64) -> f64 {
    (r / 1e5).round() / 10.0
}

/// UDP at [`OFFERED`] from net to the modem for [`MEASURE_SECS`]; every whole interval after
/// the first must be within ±10 % of `want` (the tolerance of lab_boost).
fn measure(topo: &Topology, want: u64, phase: &str) {
    let sub: IpAddr = SUB.parse().unwrap();
    let port = next_port();
    let srv = IperfServer::start(&topo.sub, sub, port).unwrap();
    let mut opts = IperfOpts::udp(sub, port, MEASURE_SECS, OFFERED);
    opts.len = Some(1400);
    let report = IperfClient::spawn(&topo.net, &opts)
        .unwrap()
        .wait()
        .unwrap();
    let _ = srv.finish(Duration::from_secs(10));
    // UDP -l 1400: 1428 L3 bytes per 1400 of payload.
    let rates: Vec<f64> = report
        .intervals
        .iter()
        .map(|(bps, _)| bps * 1428.0 / 1400.0)
        .collect();
    let secs: Vec<usize> = (1..rates.len())
        .filter(|&i| report.intervals[i].1 >= 0.9)
        .collect();
    eprintln!(
        "{phase}: per-second L3 rates (Mbit/s) {:?}",
        rates.iter().map(|r| mbps(*r)).collect::<Vec<_>>()
    );
    assert!(
        secs.len() >= MEASURE_SECS as usize - 2,
        "{phase}: iperf3 reported {} intervals",
        rates.len()
    );
    for &i in &secs {
        let dev = rates[i] / want as f64 - 1.0;
        assert!(
            dev.abs() <= 0.10,
            "{phase}: second {i}: {:.2} Mbit/s is {:+.0} % off {} Mbit/s; all: {:?}",
            rates[i] / 1e6,
            dev * 100.0,
            want / 1_000_000,
            rates.iter().map(|r| mbps(*r)).collect::<Vec<_>>()
        );
    }
}

/// Checks the events from `from` on: one or more `reboot`s by `method` from the gateway,
/// then a `config` for cm1, signed by `key_id`, granting `down`.
fn assert_reconfigured(ev: &[Value], from: usize, method: &str, key_id: &str, down: u64) {
    let all = || {
        ev.iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let new = &ev[from..];
    let (config, reboots) = new.split_last().expect("events");
    assert!(
        !reboots.is_empty(),
        "no reboot before the fetch; events:\n{}",
        all()
    );
    for r in reboots {
        assert_eq!(r["event"], "reboot", "events:\n{}", all());
        assert_eq!(r["method"], method, "events:\n{}", all());
        let peer: std::net::SocketAddr = r["peer"].as_str().unwrap().parse().unwrap();
        assert_eq!(peer.ip(), IpAddr::V4(GW_SUB_V4), "events:\n{}", all());
    }
    assert_eq!(
        config["event"],
        "config",
        "the fetch after the reboot failed; events:\n{}",
        all()
    );
    assert_eq!(config["method"], method, "events:\n{}", all());
    assert_eq!(config["modem"], "cm1", "events:\n{}", all());
    assert_eq!(config["signed_by"], key_id, "events:\n{}", all());
    assert_eq!(
        config["qos"]["max_down_bps"].as_u64(),
        Some(down),
        "events:\n{}",
        all()
    );
    assert!(config["bytes"].as_u64().unwrap() > 0);
}

fn run(reboot: Reboot, tag: &str, api_port: u16) {
    let _lab = LAB.lock().unwrap_or_else(PoisonError::into_inner);
    let topo = Topology::sub_gw_net(tag).expect("topology (needs root)");
    let sub: IpAddr = SUB.parse().unwrap();
    topo.add_sub_addr(sub).unwrap();
    let gw = topo.gw.name().to_string();

    let id = std::process::id();
    let mut guard = Guard {
        child: None,
        pins: PathBuf::from(format!("/sys/fs/bpf/shaper-{tag}-{id}")),
        dir: std::env::temp_dir().join(format!("shaper-{tag}-{id}")),
    };
    let _ = std::fs::remove_dir_all(&guard.pins);
    let _ = std::fs::remove_dir_all(&guard.dir);
    let dir = guard.dir.clone();
    let configs = dir.join("configs");
    std::fs::create_dir_all(&configs).unwrap();

    // Keys: the CMTS shared secret, the Ed25519 signing pair, the file-name key.
    let cmts_key = dir.join("cmts.key");
    std::fs::write(&cmts_key, format!("{CMTS_SECRET}\n")).unwrap();
    let signing = dir.join("signing");
    let keygen = shaper_cli(&["modem-config", "keygen", "--out", signing.to_str().unwrap()]);
    let key_id = keygen
        .split_whitespace()
        .nth(2)
        .expect("keygen prints `key id ID: …`")
        .trim_end_matches(':')
        .to_string();
    let (signing_key, signing_pub) = (dir.join("signing.key"), dir.join("signing.pub"));
    let name_key = dir.join("name.key");
    std::fs::write(&name_key, format!("{NAME_KEY}\n")).unwrap();
    let stable = shaper_cli(&[
        "modem-config",
        "name",
        "--name-key-file",
        name_key.to_str().unwrap(),
        "--modem",
        "cm1",
    ])
    .trim()
    .to_string();
    assert!(
        !stable.is_empty() && !stable.contains(char::is_whitespace),
        "`modem-config name` printed {stable:?}"
    );

    let tokens = dir.join("tokens.toml");
    shaper_run::write_tokens(&tokens, &[(TOKEN, "csr", "alice")]);
    let config = dir.join("shaper.toml");
    std::fs::write(
        &config,
        format!(
            r#"
{dataplane}[controller]
store = "{store}"
listen = "127.0.0.1:{api_port}"
tokens_file = "{tokens}"
class_first = 16
class_last = 255

[controller.enforcement]
dataplane = true
modem_pipeline = true

[controller.modem_pipeline]
config_dir = "{configs}"
cmts_key_file = "{cmts_key}"
signing_key_file = "{signing_key}"
name_key_file = "{name_key}"
keep_versions = 4
max_cpe = 4
tftp_listen = "{GW_SUB_V4}:69"
reboot_attempts = 3
reboot_backoff_ms = 300
snmp_port = 161
forcerenew_source_port = 67

[[modem]]
id = "cm1"
addrs = ["{SUB}"]
max_down = "10M"
max_up = "10M"
mac = "{MAC}"
{reboot_keys}"#,
            dataplane = shaper_run::dataplane_toml(&guard.pins, "sub0", "up0", None),
            store = dir.join("db/shaper.db").display(),
            tokens = tokens.display(),
            configs = configs.display(),
            cmts_key = cmts_key.display(),
            signing_key = signing_key.display(),
            name_key = name_key.display(),
            reboot_keys = reboot.modem_keys(),
        ),
    )
    .unwrap();
    let log = dir.join("shaper.log");
    let child = guard.child.insert(start(&gw, &config, &log));
    wait_ready(child, &gw, api_port, &log);
    // The modem, on its address in sub.
    let (emu_out, emu_err) = (dir.join("emulator.out"), dir.join("emulator.err"));
    let sub_addr = |port: u16| format!("{SUB}:{port}");
    let mut emu = Emulator {
        child: topo
            .sub
            .command(env!("CARGO_BIN_EXE_shaper"))
            .args([
                "modem-emulator",
                "--mac",
                MAC,
                "--dhcp-listen",
                &sub_addr(68),
                "--snmp-listen",
                &sub_addr(161),
                "--forcerenew-key",
                FORCERENEW_KEY,
                "--community",
                "private",
                "--tftp-server",
                &format!("{GW_SUB_V4}:69"),
                "--config-file",
                &stable,
                "--cmts-key-file",
                cmts_key.to_str().unwrap(),
                "--trusted-key",
                signing_pub.to_str().unwrap(),
                "--fetch-at-start",
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&emu_out).unwrap())
            .stderr(std::fs::File::create(&emu_err).unwrap())
            .spawn()
            .expect("spawn shaper modem-emulator"),
        stdout: emu_out,
        stderr: emu_err,
    };
    wait_emulator_bound(&topo.sub, &mut emu);

    let http = |method: &str, path: &str, body: Option<&str>| {
        shaper_run::http(&gw, api_port, TOKEN, method, path, body).unwrap()
    };
    let (status, body) = http("GET", "/v1/modems/cm1", None);
    assert_eq!(status, 200, "{body}");
    let modem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        modem["effective"]["max_down_bps"].as_u64(),
        Some(BASE_DOWN),
        "{modem}"
    );

    // Power-on provisioning: the pipeline wrote version 1 at the base plan without rebooting
    // the modem (a gateway start must not restart every modem); the modem, powered on after
    // the gateway, fetches it at start.
    let (ev, boot) = emu.wait_fetch(0, &log);
    assert_eq!(boot, 0, "no reboot expected at power-on: {}", emu.context());
    assert_eq!(ev[0]["event"], "config", "{}", emu.context());
    assert_eq!(ev[0]["method"], "start", "{}", emu.context());
    assert_eq!(ev[0]["signed_by"], key_id.as_str(), "{}", emu.context());
    assert_eq!(
        ev[0]["qos"]["max_down_bps"].as_u64(),
        Some(BASE_DOWN),
        "{}",
        emu.context()
    );
    let before = boot + 1;

    // The boost, timed on the system clock (the controller's clock).
    let posted = now_ms();
    let (start_ms, stop_ms) = (posted + START_AFTER_MS, posted + STOP_AFTER_MS);
    let (status, body) = http(
        "POST",
        "/v1/events",
        Some(&format!(
            r#"{{"modem":"cm1","qos":{{"max_down_bps":{BOOST_DOWN}}},"start_ms":{start_ms},"stop_ms":{stop_ms}}}"#
        )),
    );
    assert_eq!(status, 201, "{body}");
    let event_id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_u64()
        .expect("event id");

    // Start: reboot(s), then the boosted file; the data plane enforces the boost.
    let (ev, first) = emu.wait_fetch(before, &log);
    assert_reconfigured(&ev[..=first], before, reboot.method(), &key_id, BOOST_DOWN);
    eprintln!(
        "{}: boosted config fetched {} ms after the POST (start due at {START_AFTER_MS} ms)",
        reboot.method(),
        now_ms() - posted
    );
    measure(&topo, BOOST_DOWN, "during the boost");

    // Stop: reboot(s), then the base file again.
    let (ev, second) = emu.wait_fetch(first + 1, &log);
    assert_reconfigured(
        &ev[..=second],
        first + 1,
        reboot.method(),
        &key_id,
        BASE_DOWN,
    );
    eprintln!(
        "{}: base config fetched {} ms after the POST (stop due at {STOP_AFTER_MS} ms)",
        reboot.method(),
        now_ms() - posted
    );
    measure(&topo, BASE_DOWN, "after the stop");
    assert!(
        !ev.iter().any(|e| e["event"] == "config_error"),
        "{}",
        emu.context()
    );

    // The event completed; the files: the stable one grants the base plan and verifies with
    // the controller's keys; at least two earlier versions are kept beside it.
    let (status, body) = http("GET", &format!("/v1/events/{event_id}"), None);
    assert_eq!(status, 200, "{body}");
    let ev_json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ev_json["state"], "completed", "{ev_json}");
    let mut trusted = TrustedKeys::new();
    let pub_hex = log_text(&signing_pub)
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap()
        .trim()
        .to_string();
    let mut pub_bytes = [0u8; 32];
    for (i, b) in pub_bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&pub_hex[2 * i..2 * i + 2], 16).unwrap();
    }
    trusted.add(verifying_key(&pub_bytes).unwrap());
    let cmts = CmtsKey::new(CMTS_SECRET.as_bytes());
    let grants = |name: &str| {
        load_and_verify(&configs.join(name), &cmts, &trusted)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let current = grants(&stable);
    assert_eq!(current.qos.max_down_bps, Some(BASE_DOWN));
    assert_eq!(current.modem.as_deref(), Some("cm1"));
    let mut versions: Vec<(String, Option<u64>)> = std::fs::read_dir(&configs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != &stable && n.ends_with(".cfg"))
        .map(|n| {
            let down = grants(&n).qos.max_down_bps;
            (n, down)
        })
        .collect();
    versions.sort();
    eprintln!(
        "{}: config_dir versions besides {stable}: {versions:?}",
        reboot.method()
    );
    assert!(
        versions.len() >= 2,
        "config_dir holds {versions:?} besides {stable}"
    );
    for want in [BOOST_DOWN, BASE_DOWN] {
        assert!(
            versions.iter().any(|(_, d)| *d == Some(want)),
            "no kept version grants {want} bit/s: {versions:?}"
        );
    }
    drop(emu);
}

/// One step of [`emulator_refetches_and_verifies_after_each_reboot`]: the trigger, the file
/// written before it (max down, signer, corrupted), and the expected outcome: `Ok(max_down)`
/// or `Err(text the error must contain)`.
type Step<'a> = (
    shaper::modem::reboot::RebootTarget,
    u64,
    &'a shaper::proto::docsis::Signer,
    bool,
    Result<u64, &'static str>,
);

/// The modem half on its own, with the real emulator binary and no controller: our TFTP
/// server serves the file, our `Rebooter` triggers; the emulator must apply each good file,
/// refuse a corrupted one (CM MIC) and one signed by an untrusted key, keeping the previous
/// configuration, and fetch at start with `--fetch-at-start`.
#[test]
fn emulator_refetches_and_verifies_after_each_reboot() {
    use shaper::modem::configfile::{BuildOptions, build};
    use shaper::modem::reboot::{
        ForceRenewKey, ForceRenewSender, RebootMethod, RebootTarget, Rebooter, RetryPolicy,
        SnmpReset,
    };
    use shaper::proto::docsis::Signer;
    use shaper::provision::QosLevel;
    use shaper::tftp::{FsHandler, ServerConfig, TftpServer};
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    let _lab = LAB.lock().unwrap_or_else(PoisonError::into_inner);
    let ns = shaper::lab::NetNs::unique("lme").expect("netns (needs root)");
    let dir = std::env::temp_dir().join(format!("shaper-lme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let served = dir.join("tftp");
    std::fs::create_dir_all(&served).unwrap();
    struct RmDir(PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = RmDir(dir.clone());

    let cmts = CmtsKey::new(CMTS_SECRET.as_bytes());
    let cmts_file = dir.join("cmts.key");
    std::fs::write(&cmts_file, format!("{CMTS_SECRET}\n")).unwrap();
    let signing = dir.join("signing");
    shaper_cli(&["modem-config", "keygen", "--out", signing.to_str().unwrap()]);
    let seed_hex = log_text(&dir.join("signing.key"))
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap()
        .trim()
        .to_string();
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::from_str_radix(&seed_hex[2 * i..2 * i + 2], 16).unwrap();
    }
    let signer = Signer::from_seed(&seed);
    let stranger = Signer::from_seed(&[7; 32]);
    let name = "0123456789abcdef0123456789abcdef.cfg";
    let write = |down: u64, s: &Signer, corrupt: bool| {
        let qos = QosLevel {
            max_down_bps: Some(down),
            max_up_bps: Some(BASE_DOWN),
            ..QosLevel::default()
        };
        let opts = BuildOptions {
            cmts_key: &cmts,
            signer: Some(s),
            max_cpe: 4,
        };
        let mut bytes = build("cm1", &qos, &opts).unwrap();
        if corrupt {
            let pos = bytes
                .windows(4)
                .position(|w| w == u32::try_from(down).unwrap().to_be_bytes())
                .unwrap();
            bytes[pos + 3] ^= 1;
        }
        shaper::modem::write_atomic(&served.join(name), &bytes).unwrap();
    };
    write(BASE_DOWN, &signer, false);

    let key: [u8; 16] =
        std::array::from_fn(|i| u8::from_str_radix(&FORCERENEW_KEY[2 * i..2 * i + 2], 16).unwrap());
    let (emu_out, emu_err) = (dir.join("emulator.out"), dir.join("emulator.err"));
    let mut emu = Emulator {
        child: ns
            .command(env!("CARGO_BIN_EXE_shaper"))
            .args([
                "modem-emulator",
                "--mac",
                MAC,
                "--dhcp-listen",
                "127.0.0.1:68",
                "--snmp-listen",
                "127.0.0.1:161",
                "--forcerenew-key",
                FORCERENEW_KEY,
                "--tftp-server",
                "127.0.0.1:69",
                "--config-file",
                name,
                "--cmts-key-file",
                cmts_file.to_str().unwrap(),
                "--trusted-key",
                dir.join("signing.pub").to_str().unwrap(),
                "--fetch-at-start",
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&emu_out).unwrap())
            .stderr(std::fs::File::create(&emu_err).unwrap())
            .spawn()
            .expect("spawn shaper modem-emulator"),
        stdout: emu_out,
        stderr: emu_err,
    };
    let no_log = dir.join("no-gateway.log");

    let rebooter = Rebooter {
        snmp: SnmpReset {
            port: 161,
            timeout: Duration::from_secs(2),
        },
        forcerenew: Some(ForceRenewSender {
            source: "127.0.0.1:67".parse().unwrap(),
            server_id: Ipv4Addr::LOCALHOST,
            client_port: 68,
        }),
        hook: None,
        retry: RetryPolicy {
            attempts: 1,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(50),
        },
    };
    let target = |method| RebootTarget {
        modem: "cm1".into(),
        mac: [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01],
        ip: Ipv4Addr::LOCALHOST,
        method,
    };
    let snmp = || {
        target(RebootMethod::Snmp {
            community: "private".into(),
        })
    };
    let forcerenew = || {
        target(RebootMethod::ForceRenew {
            key: ForceRenewKey::Reconfigure(key),
            xid: 0,
        })
    };

    let served_root = served.clone();
    ns.run_in(|| {
        // Workers are created from this thread, so they are in the namespace too.
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let server = TftpServer::bind(
                    ServerConfig {
                        bind: "127.0.0.1:69".parse().unwrap(),
                        ..ServerConfig::default()
                    },
                    Arc::new(FsHandler::new(&served_root).unwrap()),
                )
                .await
                .unwrap()
                .spawn();
                // Power-on: the emulator's start fetch (its client retries until the server
                // is up) grants the base plan.
                let (ev, mut at) = emu.wait_fetch(0, &no_log);
                assert_eq!(ev[at]["event"], "config", "{}", emu.context());
                assert_eq!(ev[at]["method"], "start");
                assert_eq!(ev[at]["qos"]["max_down_bps"].as_u64(), Some(BASE_DOWN));

                let steps: [Step<'_>; 4] = [
                    (snmp(), BOOST_DOWN, &signer, false, Ok(BOOST_DOWN)),
                    (forcerenew(), BASE_DOWN, &signer, true, Err("CM MIC")),
                    (
                        snmp(),
                        BASE_DOWN,
                        &stranger,
                        false,
                        Err("not among the trusted keys"),
                    ),
                    (forcerenew(), BASE_DOWN, &signer, false, Ok(BASE_DOWN)),
                ];
                for (replay, (t, down, s, corrupt, want)) in (1u64..).zip(steps) {
                    write(down, s, corrupt);
                    let out = rebooter.reboot(&t, replay).await;
                    assert!(out.ok, "{out:?}; {}", emu.context());
                    let (ev, i) = emu.wait_fetch(at + 1, &no_log);
                    let method = ev[i - 1]["method"].clone();
                    assert_eq!(ev[i - 1]["event"], "reboot", "{}", emu.context());
                    assert_eq!(ev[i]["method"], method, "{}", emu.context());
                    assert_eq!(ev[i]["file"], name);
                    match want {
                        Ok(d) => {
                            assert_eq!(ev[i]["event"], "config", "{}", emu.context());
                            assert_eq!(ev[i]["qos"]["max_down_bps"].as_u64(), Some(d));
                            assert_eq!(ev[i]["signed_by"], signer.key_id().to_string());
                        }
                        Err(text) => {
                            assert_eq!(ev[i]["event"], "config_error", "{}", emu.context());
                            let e = ev[i]["error"].as_str().unwrap();
                            assert!(e.contains(text), "{e}");
                        }
                    }
                    at = i;
                }
                let methods: Vec<Value> = emu
                    .events()
                    .iter()
                    .filter(|e| e["event"] == "reboot")
                    .map(|e| e["method"].clone())
                    .collect();
                assert_eq!(methods, ["snmp", "forcerenew", "snmp", "forcerenew"]);
                eprintln!("emulator events:\n{}", log_text(&emu.stdout));
                server.shutdown().await;
            });
    })
    .unwrap();
}
