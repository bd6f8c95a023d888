//! A modem's committed rate, end to end with the real binary: `shaper run` in the gateway gives
//! each modem an HTB class on the subscriber-side tree (`controller.htb_minor_first..last`:
//! rate = committed, ceil = maximum). Modem A (committed 40 Mbit/s) keeps at least its
//! committed rate for a TCP download while modem B (committed 50 Mbit/s) floods the 100 Mbit/s
//! link with UDP at 200 Mbit/s; together they stay within the link, and B's class shows the
//! overlimits and drops of its excess. Without A's committed rate, A gets ~2 Mbit/s.
//! Needs root, iproute2 and iperf3. Namespaces, pins and files are removed on exit.
//!
//! Run: `cargo test -p shaper-user --test lab_committed -- --nocapture`.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::shaper_run::{self, Guard, start};
use shaper::lab::{IperfClient, IperfOpts, IperfServer, Topology, next_port};

const A: &str = "198.18.0.10";
const B: &str = "198.18.0.11";
const PORT: u16 = 18_093;
const TOKEN: &str = "csr-committed-token";
const COMMITTED_A: u64 = 40_000_000;
const SECS: u32 = 6;
/// The link (the HTB root's rate), bit/s.
const LINK: f64 = 100e6;

#[test]
fn a_modems_committed_rate_holds_while_another_floods_the_link() {
    let topo = Topology::sub_gw_net("lcm").expect("topology (needs root)");
    for a in [A, B] {
        topo.add_sub_addr(a.parse().unwrap()).unwrap();
    }
    topo.gw.run(["ip", "link", "set", "lo", "up"]).unwrap();
    let gw = topo.gw.name().to_string();
    let id = std::process::id();
    let mut guard = Guard {
        child: None,
        pins: PathBuf::from(format!("/sys/fs/bpf/shaper-lcm-{id}")),
        dir: std::env::temp_dir().join(format!("shaper-lcm-{id}")),
    };
    let _ = std::fs::remove_dir_all(&guard.pins);
    let _ = std::fs::remove_dir_all(&guard.dir);
    std::fs::create_dir_all(&guard.dir).unwrap();
    let tokens = guard.dir.join("tokens.toml");
    shaper_run::write_tokens(&tokens, &[(TOKEN, "csr", "alice")]);
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
htb_minor_first = 0x100
htb_minor_last = 0x1ff
[[modem]]
id = "cm-a"
addrs = ["{A}"]
max_down = "100M"
committed_down = "40M"
burst = 1000000
[[modem]]
id = "cm-b"
addrs = ["{B}"]
max_down = "100M"
committed_down = "50M"
burst = 1000000
"#,
            dataplane = shaper_run::dataplane_toml(&guard.pins, "sub0", "up0", Some("100M")),
            store = guard.dir.join("db/shaper.db").display(),
            tokens = tokens.display(),
        ),
    )
    .unwrap();
    let log = guard.dir.join("shaper.log");
    let child = guard.child.insert(start(&gw, &config, &log));
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "shaper run exited with {st}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if let Ok((200, _)) = shaper_run::http(&gw, PORT, TOKEN, "GET", "/v1/modems/cm-a", None) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the API did not answer: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        sleep(Duration::from_millis(100));
    }

    // The modems' HTB classes: modem i gets minor 0x100 + i, rate = committed, ceil = max.
    let classes = topo.gw.run(["tc", "class", "show", "dev", "sub0"]).unwrap();
    let line = |minor: &str| {
        classes
            .lines()
            .find(|l| l.contains(&format!("htb 1:{minor} ")))
            .unwrap_or_else(|| panic!("no HTB class 1:{minor}:\n{classes}"))
            .to_string()
    };
    let a = line("100");
    assert!(
        a.contains("rate 40Mbit") && a.contains("ceil 100Mbit"),
        "{a}"
    );
    let b = line("101");
    assert!(
        b.contains("rate 50Mbit") && b.contains("ceil 100Mbit"),
        "{b}"
    );

    // B floods with UDP at twice the link; A downloads over TCP at the same time. B runs
    // SECS + 2 s and A starts 1 s into it, so B's seconds 2..SECS+1 lie inside A's run.
    let (a_ip, b_ip): (IpAddr, IpAddr) = (A.parse().unwrap(), B.parse().unwrap());
    let (pa, pb) = (next_port(), next_port());
    let sa = IperfServer::start(&topo.sub, a_ip, pa).unwrap();
    let sb = IperfServer::start(&topo.sub, b_ip, pb).unwrap();
    let before = class_stats(
        &topo
            .gw
            .run(["tc", "-s", "class", "show", "dev", "sub0"])
            .unwrap(),
    );
    let mut flood = IperfOpts::udp(b_ip, pb, SECS + 2, 200_000_000);
    flood.len = Some(1400);
    let flood = IperfClient::spawn(&topo.net, &flood).unwrap();
    sleep(Duration::from_secs(1));
    let report = IperfClient::run(&topo.net, &IperfOpts::tcp(a_ip, pa, SECS)).unwrap();
    let flood = flood.wait().unwrap();
    let _ = sa.finish(Duration::from_secs(5));
    let _ = sb.finish(Duration::from_secs(5));
    let after_out = topo
        .gw
        .run(["tc", "-s", "class", "show", "dev", "sub0"])
        .unwrap();
    let after = class_stats(&after_out);
    let mbit = |v: &[(f64, f64)]| {
        v.iter()
            .map(|(bps, _)| (bps / 1e5).round() / 10.0)
            .collect::<Vec<f64>>()
    };
    let mean = |v: &[(f64, f64)]| {
        let (bits, secs) = v
            .iter()
            .fold((0.0, 0.0), |(b, s), (bps, d)| (b + bps * d, s + d));
        bits / secs
    };
    // A without its first second (TCP slow start); B over the seconds A was running.
    let a_steady = mean(report.intervals.get(1..).unwrap_or_default());
    let b_during = mean(flood.intervals.get(2..=SECS as usize).unwrap_or_default());
    let delta = |minor: &str| {
        let (b, a) = (before.get(minor), after.get(minor));
        let (b, a) = (
            b.copied().unwrap_or_default(),
            a.copied()
                .unwrap_or_else(|| panic!("no stats of HTB class 1:{minor}:\n{after_out}")),
        );
        HtbStats {
            bytes: a.bytes - b.bytes,
            dropped: a.dropped - b.dropped,
            overlimits: a.overlimits - b.overlimits,
        }
    };
    let (a_htb, b_htb) = (delta("100"), delta("101"));
    eprintln!(
        "A (committed 40 Mbit/s) while B (committed 50 Mbit/s) floods at 200 Mbit/s: A {:.1} \
         Mbit/s goodput ({:.1} after its first second), per second {:?}; B received {:.1} \
         Mbit/s ({:.1} while A ran), per second {:?}; HTB A {a_htb:?}, B {b_htb:?}",
        report.mbps(),
        a_steady / 1e6,
        mbit(&report.intervals),
        flood.mbps(),
        b_during / 1e6,
        mbit(&flood.intervals),
    );
    // The link was contended: B got at least its own committed rate meanwhile.
    assert!(
        b_during >= 0.9 * 50e6,
        "B received only {:.1} Mbit/s while A ran: the link was not contended",
        b_during / 1e6
    );
    // A keeps its committed rate (TCP goodput counts payload only, ~95 % of L3 bytes at
    // 1500-byte packets, hence 90 %). Without A's committed class B's flood takes the link.
    assert!(
        a_steady >= 0.9 * COMMITTED_A as f64,
        "A got {:.1} Mbit/s, below its committed 40 Mbit/s (per second {:?})",
        a_steady / 1e6,
        mbit(&report.intervals)
    );
    // Together they fit the 100 Mbit/s link (payload rates, below the L2 rate HTB counts):
    // unshaped, the veths would carry A's TCP and all of B's 200 Mbit/s.
    assert!(
        a_steady + b_during <= LINK,
        "A {:.1} + B {:.1} Mbit/s exceed the {} Mbit/s link",
        a_steady / 1e6,
        b_during / 1e6,
        LINK / 1e6
    );
    // The excess of B's flood was held back by B's own class: it went over its rate and
    // its queue dropped what the link could not carry, while A's class carried A.
    assert!(
        b_htb.overlimits > 0 && b_htb.dropped > 0,
        "B's HTB class 1:101 shows no overlimits or drops: {b_htb:?}\n{after_out}"
    );
    assert!(
        a_htb.bytes as f64 * 8.0 >= 0.9 * COMMITTED_A as f64 * f64::from(SECS - 1),
        "A's HTB class 1:100 carried only {} bytes: {a_htb:?}",
        a_htb.bytes
    );
}

/// One HTB class's counters from `tc -s class show`.
#[derive(Clone, Copy, Debug, Default)]
struct HtbStats {
    bytes: u64,
    dropped: u64,
    overlimits: u64,
}

/// `tc -s class show` output → the counters of each `htb 1:<minor>` class, by minor (hex, as
/// tc prints it). A class line is followed by ` Sent B bytes P pkt (dropped D, overlimits O
/// requeues R)`.
fn class_stats(out: &str) -> std::collections::HashMap<String, HtbStats> {
    let mut m = std::collections::HashMap::new();
    let mut current: Option<String> = None;
    for line in out.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("class htb 1:") {
            current = rest.split_whitespace().next().map(str::to_string);
        } else if let (Some(minor), Some(rest)) = (&current, t.strip_prefix("Sent ")) {
            let num = |key: &str| {
                rest.split(key)
                    .next()
                    .and_then(|s| s.split([' ', '(']).rfind(|w| !w.is_empty()))
                    .and_then(|w| w.parse::<u64>().ok())
            };
            let field = |key: &str| {
                rest.split_once(key)
                    .and_then(|(_, r)| r.split([',', ' ', ')']).find(|w| !w.is_empty()))
                    .and_then(|w| w.parse::<u64>().ok())
            };
            if let (Some(bytes), Some(dropped), Some(overlimits)) =
                (num(" bytes"), field("dropped "), field("overlimits "))
            {
                m.insert(
                    minor.clone(),
                    HtbStats {
                        bytes,
                        dropped,
                        overlimits,
                    },
                );
            }
            current = None;
        }
    }
    m
}
