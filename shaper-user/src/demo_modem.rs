//! The demo's second part: the product's own flow with real processes. `shaper run` in the
//! gateway namespace (controller, embedded SQLite store, HTTP API, data plane, modem pipeline
//! with TFTP), `shaper modem-emulator` as the cable modem in the subscriber namespace, and a
//! timed boost posted to the API: the controller writes the modem's new DOCSIS file (MICs,
//! Ed25519 signature), reboots the modem by an authenticated FORCERENEW, the modem fetches and
//! verifies the file by TFTP, the data plane enforces the same level; at the stop the previous
//! level comes back the same way. iperf3 measures each phase.
//!
//! Everything lives in a temporary directory and the lab namespaces, removed at the end (also
//! on error).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use rand::RngCore as _;
use serde_json::Value;

use crate::lab::topo::GW_SUB_V4;
use crate::lab::{IperfClient, IperfOpts, IperfServer, Topology, next_port};

/// The modem's address in sub.
const MODEM: &str = "198.18.0.10";
const MAC: &str = "02:00:5e:00:00:01";
const API_PORT: u16 = 18_080;
const BASE_DOWN: u64 = 10_000_000;
const BOOST_DOWN: u64 = 40_000_000;
const WAIT: Duration = Duration::from_secs(30);

/// Kills the processes and removes the pins and the directory, also on error.
struct Cleanup {
    children: Vec<Child>,
    pins: PathBuf,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.pins);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(u64::MAX)
}

/// One exchange with the API on the gateway namespace's loopback.
fn http(
    ns: &str,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    Ok(crate::lab::http(
        ns,
        API_PORT,
        token,
        method,
        path,
        Some(body).filter(|b| !b.is_empty()),
    )?)
}

/// The emulator's JSON lines so far.
fn events(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits for the next `config` / `config_error` line at index `from` or later.
fn wait_fetch(out: &Path, from: usize, emu: &mut Child) -> anyhow::Result<(Vec<Value>, usize)> {
    let t0 = Instant::now();
    loop {
        let ev = events(out);
        if let Some(i) = (from..ev.len()).find(|&i| ev[i]["event"] != "reboot") {
            return Ok((ev, i));
        }
        if let Some(st) = emu.try_wait()? {
            bail!("the modem emulator exited with {st}");
        }
        if t0.elapsed() > WAIT {
            bail!("the modem fetched no configuration within {WAIT:?}");
        }
        sleep(Duration::from_millis(50));
    }
}

/// Prints the reboots and the fetch among `ev[from..=to]`; returns the granted downstream rate.
fn show(ev: &[Value], from: usize, to: usize, posted: Option<u64>) -> anyhow::Result<u64> {
    for e in &ev[from..to] {
        println!(
            "     modem: reboot by {} from {}",
            e["method"].as_str().unwrap_or("?"),
            e["peer"].as_str().unwrap_or("?")
        );
    }
    let c = &ev[to];
    if c["event"] != "config" {
        bail!("the modem refused its configuration: {c}");
    }
    let down = c["qos"]["max_down_bps"].as_u64().unwrap_or(0);
    println!(
        "     modem: fetched {} ({} bytes) by TFTP, MICs and signature ({}) verified: {} Mbit/s down{}",
        c["file"].as_str().unwrap_or("?"),
        c["bytes"],
        c["signed_by"].as_str().unwrap_or("unsigned"),
        down / 1_000_000,
        posted.map_or(String::new(), |p| format!(
            ", {:.1} s after the POST",
            (now_ms().saturating_sub(p)) as f64 / 1000.0
        ))
    );
    Ok(down)
}

/// UDP at 80 Mbit/s from net to the modem for 3 s: the median per-second L3 rate, Mbit/s.
fn measure(topo: &Topology) -> anyhow::Result<f64> {
    let addr: IpAddr = MODEM.parse()?;
    let port = next_port();
    let srv = IperfServer::start(&topo.sub, addr, port)?;
    let mut o = IperfOpts::udp(addr, port, 3, 80_000_000);
    o.len = Some(1400);
    let r = IperfClient::spawn(&topo.net, &o)?.wait()?;
    let _ = srv.finish(Duration::from_secs(5));
    let mut v: Vec<f64> = r
        .intervals
        .iter()
        .skip(1)
        .map(|(bps, _)| bps * 1428.0 / 1400.0 / 1e6)
        .collect();
    v.sort_by(f64::total_cmp);
    Ok(v.get(v.len() / 2).copied().unwrap_or(0.0))
}

/// Runs the second part of the demo.
pub fn run(exe: &Path) -> anyhow::Result<()> {
    println!(
        "\nPart 2: the controller and a simulated cable modem (shaper run + shaper modem-emulator)"
    );
    let topo = Topology::sub_gw_net("shaper-demo2").context("building the lab topology")?;
    topo.add_sub_addr(MODEM.parse()?)?;
    let gw = topo.gw.name().to_string();
    let id = std::process::id();
    let mut clean = Cleanup {
        children: Vec::new(),
        pins: PathBuf::from(format!("/sys/fs/bpf/shaper-demo-{id}")),
        dir: std::env::temp_dir().join(format!("shaper-demo-{id}")),
    };
    let dir = clean.dir.clone();
    let configs = dir.join("configs");
    std::fs::create_dir_all(&configs)?;

    // Keys: CMTS shared secret, Ed25519 signing pair, file-name key, FORCERENEW key.
    let mut rng = rand::rngs::OsRng;
    let mut secret = [0u8; 16];
    rng.fill_bytes(&mut secret);
    std::fs::write(dir.join("cmts.key"), format!("{}\n", hex(&secret)))?;
    crate::modem::cli::keygen(&dir.join("signing"), &mut rng)?;
    let mut name_key = [0u8; 32];
    rng.fill_bytes(&mut name_key);
    std::fs::write(dir.join("name.key"), format!("{}\n", hex(&name_key)))?;
    let stable = crate::modem::ConfigStore::new(".", name_key, 1).file_name("cm1", 0);
    let mut fr_key = [0u8; 16];
    rng.fill_bytes(&mut fr_key);
    let fr_key = hex(&fr_key);
    let mut token = [0u8; 16];
    rng.fill_bytes(&mut token);
    let token = hex(&token);
    std::fs::write(
        dir.join("tokens.toml"),
        format!(
            "[[token]]\nsha256 = \"{}\"\nrole = \"csr\"\nsubject = \"demo\"\n",
            crate::tokens::hash_token(&token)
        ),
    )?;
    let config = dir.join("shaper.toml");
    std::fs::write(
        &config,
        format!(
            r#"[dataplane]
pin_root = "{pins}"
[dataplane.limits]
max_subscribers = 64
max_classes = 256
max_rule_keys = 64
max_rule_entries = 64
max_flows = 64
[[interface]]
name = "sub0"
role = "subscriber"
[[interface]]
name = "up0"
role = "upstream"
[controller]
store = "{dir}/shaper.db"
listen = "127.0.0.1:{API_PORT}"
tokens_file = "{dir}/tokens.toml"
class_first = 16
class_last = 255
[controller.enforcement]
dataplane = true
modem_pipeline = true
[controller.modem_pipeline]
config_dir = "configs"
cmts_key_file = "cmts.key"
signing_key_file = "signing.key"
name_key_file = "name.key"
keep_versions = 4
max_cpe = 4
tftp_listen = "{GW_SUB_V4}:69"
reboot_attempts = 3
reboot_backoff_ms = 300
[[modem]]
id = "cm1"
addrs = ["{MODEM}"]
max_down = "10M"
max_up = "10M"
mac = "{MAC}"
reboot = "forcerenew"
forcerenew_key = "{fr_key}"
forcerenew_xid = 0
"#,
            pins = clean.pins.display(),
            dir = dir.display(),
        ),
    )?;
    println!(
        "   config {} (SQLite store, keys and files beside it)",
        config.display()
    );

    let log = dir.join("shaper.log");
    let gwp = Command::new(exe)
        .args(["run", "--netns", &gw, "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting shaper run")?;
    clean.children.push(gwp);
    let t0 = Instant::now();
    loop {
        if let Ok((200, _)) = http(&gw, &token, "GET", "/v1/modems/cm1", "") {
            break;
        }
        if t0.elapsed() > WAIT {
            bail!(
                "shaper run did not answer: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        sleep(Duration::from_millis(100));
    }
    println!("   shaper run up in gw: API on 127.0.0.1:{API_PORT}, TFTP on {GW_SUB_V4}:69");

    // The modem, powered on after the gateway: it fetches the file the gateway wrote for it
    // at start (version 1; the gateway reboots no modem when it starts).
    let emu_out = dir.join("emulator.out");
    let emu = topo
        .sub
        .command(exe)
        .args(["modem-emulator", "--mac", MAC])
        .args(["--dhcp-listen", &format!("{MODEM}:68")])
        .args(["--snmp-listen", &format!("{MODEM}:161")])
        .args(["--forcerenew-key", &fr_key])
        .args(["--tftp-server", &format!("{GW_SUB_V4}:69")])
        .args(["--config-file", &stable])
        .arg("--fetch-at-start")
        .arg("--cmts-key-file")
        .arg(dir.join("cmts.key"))
        .arg("--trusted-key")
        .arg(dir.join("signing.pub"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&emu_out)?)
        .stderr(std::fs::File::create(dir.join("emulator.err"))?)
        .spawn()
        .context("starting shaper modem-emulator")?;
    clean.children.push(emu);
    let t0 = Instant::now();
    while !topo
        .sub
        .run(["ss", "-Hlun"])?
        .contains(&format!("{MODEM}:68"))
    {
        if t0.elapsed() > WAIT {
            bail!("the modem emulator did not start");
        }
        sleep(Duration::from_millis(50));
    }
    println!("   modem cm1 ({MODEM}, {MAC}) up in sub: FORCERENEW on :68, SNMP on :161");

    let emu = clean.children.last_mut().expect("the emulator");
    let (ev, i) = wait_fetch(&emu_out, 0, emu)?;
    println!("\n6. power-on: the modem fetches the file for its base plan (10 Mbit/s down):");
    show(&ev, 0, i, None)?;
    println!(
        "     iperf3 (UDP 80 Mbit/s offered): {:.1} Mbit/s",
        measure(&topo)?
    );

    let posted = now_ms();
    let body = format!(
        r#"{{"modem":"cm1","qos":{{"max_down_bps":{BOOST_DOWN}}},"start_ms":{},"stop_ms":{}}}"#,
        posted + 2_000,
        posted + 12_000
    );
    let (status, answer) = http(&gw, &token, "POST", "/v1/events", &body)?;
    if status != 201 {
        bail!("POST /v1/events: {status} {answer}");
    }
    println!("\n7. POST /v1/events: boost to 40 Mbit/s from +2 s to +12 s: {status} {answer}");
    let emu = clean.children.last_mut().expect("the emulator");
    let (ev, j) = wait_fetch(&emu_out, i + 1, emu)?;
    let down = show(&ev, i + 1, j, Some(posted))?;
    if down != BOOST_DOWN {
        bail!("the modem got {down} bit/s, not the boost");
    }
    println!("     iperf3: {:.1} Mbit/s", measure(&topo)?);
    let (ev, k) = wait_fetch(&emu_out, j + 1, emu)?;
    println!("\n8. the stop: back to the plan underneath");
    let down = show(&ev, j + 1, k, Some(posted))?;
    if down != BASE_DOWN {
        bail!("the modem got {down} bit/s, not its base plan");
    }
    println!("     iperf3: {:.1} Mbit/s", measure(&topo)?);
    let mut files: Vec<String> = std::fs::read_dir(&configs)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cfg"))
        .collect();
    files.sort();
    println!(
        "     {} configuration files kept in {} (versions 1..3 and the current one, {stable})",
        files.len(),
        configs.display()
    );
    Ok(())
}
