//! Hitless restart with the real binary: `shaper run` in the gateway namespace is killed with
//! SIGKILL in the middle of a flow and started again; the pinned maps and links keep the
//! subscriber's policer in force the whole time, and the second process reuses them.
//! Needs root, iproute2 and iperf3. Namespaces and pins are removed on exit, also on panic.

use std::{
    net::IpAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use shaper::lab::{IperfClient, IperfOpts, IperfServer, Topology, next_port};

const SUB: &str = "198.18.0.10";
const RATE: u64 = 10_000_000;

struct Guard {
    child: Option<Child>,
    pins: PathBuf,
    config: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.pins);
        let _ = std::fs::remove_file(&self.config);
    }
}

fn start(gw: &str, config: &PathBuf) -> Child {
    // `--netns`, not `ip netns exec`: the latter's private mount namespace would take the
    // pins down with the process.

    Command::new(env!("CARGO_BIN_EXE_shaper"))
        .args(["run", "--netns", gw, "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shaper run")
}

/// Waits until `ip -d link show sub0` in the gateway shows an XDP program.
fn xdp_attached(gw: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", gw, "-d", "link", "show", "sub0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

fn wait_ready(child: &mut Child, gw: &str) {
    let t0 = Instant::now();
    // `shaper run` logs "data plane in force" once attached; the link check is the proof.
    while t0.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            use std::io::Read as _;
            child.stderr.take().unwrap().read_to_string(&mut err).ok();
            panic!("shaper run exited with {status}: {err}");
        }
        if xdp_attached(gw) && t0.elapsed() > Duration::from_millis(300) {
            return;
        }
        sleep(Duration::from_millis(50));
    }
    panic!("shaper run did not attach within 30 s");
}

#[test]
fn sigkill_and_restart_keep_the_policer_in_force() {
    let topo = Topology::sub_gw_net("rst").expect("topology (needs root)");
    topo.add_sub_addr(SUB.parse().unwrap()).unwrap();
    let gw = topo.gw.name().to_string();
    let pins = PathBuf::from(format!("/sys/fs/bpf/shaper-rst-{}", std::process::id()));
    let config = std::env::temp_dir().join(format!("shaper-rst-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            r#"
[dataplane]
pin_root = "{}"
[dataplane.limits]
max_subscribers = 1024
max_classes = 64
[[interface]]
name = "sub0"
role = "subscriber"
[[interface]]
name = "up0"
role = "upstream"
[[class]]
id = 1
rate = {RATE}
burst = {}
[[subscriber]]
addr = "{SUB}"
down_class = 1
"#,
            pins.display(),
            RATE / 8 / 50
        ),
    )
    .unwrap();
    let mut g = Guard {
        child: Some(start(&gw, &config)),
        pins: pins.clone(),
        config: config.clone(),
    };
    wait_ready(g.child.as_mut().unwrap(), &gw);

    // 9 s of UDP at 3x the rate from net to the subscriber; per-second receive rates.
    let port = next_port();
    let srv = IperfServer::start(&topo.sub, SUB.parse().unwrap(), port).unwrap();
    let mut opts = IperfOpts::udp(SUB.parse::<IpAddr>().unwrap(), port, 9, 3 * RATE);
    opts.len = Some(1400);
    let client = IperfClient::spawn(&topo.net, &opts).unwrap();

    sleep(Duration::from_secs(2));
    let mut first = g.child.take().unwrap();
    first.kill().unwrap(); // SIGKILL: no cleanup code runs
    first.wait().unwrap();
    assert!(
        xdp_attached(&gw),
        "XDP must stay attached after the controller dies"
    );
    sleep(Duration::from_secs(2));
    g.child = Some(start(&gw, &config));
    wait_ready(g.child.as_mut().unwrap(), &gw);

    let report = client.wait().unwrap();
    let _ = srv.finish(Duration::from_secs(10));
    // UDP -l 1400: 1428 L3 bytes per 1400 of payload.
    let rates: Vec<f64> = report
        .intervals
        .iter()
        .map(|(bps, _)| bps * 1428.0 / 1400.0)
        .collect();
    eprintln!(
        "per-second L3 rates (Mbit/s): {:?}",
        rates
            .iter()
            .map(|r| (r / 1e5).round() / 10.0)
            .collect::<Vec<_>>()
    );
    assert!(
        rates.len() >= 8,
        "iperf3 reported {} intervals",
        rates.len()
    );
    // Skip the first second (the bucket's initial burst) and the last (partial).
    for (i, r) in rates.iter().enumerate().take(rates.len() - 1).skip(1) {
        let dev = r / RATE as f64 - 1.0;
        assert!(
            dev.abs() <= 0.10,
            "second {i}: {:.2} Mbit/s is {:+.0} % off {RATE} bit/s: enforcement lapsed",
            r / 1e6,
            dev * 100.0
        );
    }
    // The restarted controller reused the pinned maps and links.
    let v = format!("v{}", shaper::abi::ABI_VERSION);
    assert!(pins.join(&v).join("links/xdp-sub0").exists());
    assert!(pins.join(&v).join("maps/shaper_classes").exists());
}
