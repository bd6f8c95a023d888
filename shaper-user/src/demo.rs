//! `shaper demo`: the lab demonstration. Three network namespaces joined by veth pairs —
//! `sub` (a subscriber at 198.18.0.10) — `gw` (shaper's XDP and TC programs, HTB) — `net`
//! (a provider at 198.19.0.2) — and real traffic measured with iperf3:
//!
//! 1. the subscriber's plan: 20 Mbit/s down, shaped by HTB (the TC egress program steers the
//!    subscriber's packets into its HTB class with `skb->priority`), and 10 Mbit/s up,
//!    policed by the XDP program;
//! 2. a live boost of the download to 50 Mbit/s (one HTB class changed in place: no reload,
//!    no reattach, nobody else disturbed);
//! 3. the revert to 20 Mbit/s;
//! 4. an MTU policy of 1280: `ping -M do -s 1400` is answered with "fragmentation needed";
//! 5. the counters the data plane kept.
//!
//! Everything is created here and deleted on exit; traffic never leaves the namespaces.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, bail};

use crate::dataplane::htb::{self, HtbClass, HtbTree};
use crate::dataplane::{Dataplane, LoadOptions, Role};
use crate::lab::{
    IperfClient, IperfOpts, IperfServer, Link, Topology, in_netns, iperf::next_port, ping,
    topo::NET_V4,
};
use crate::policy::{ClassConfig, SubscriberKey};

const SUB: &str = "198.18.0.10";
const UP_CLASS: u32 = 1;
const DOWN_CLASS: u32 = 2;
const DOWN_MINOR: u16 = 0x10;

fn check_tools() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and loads eBPF programs: run it as root");
    }
    for tool in ["ip", "iperf3", "ping", "tc"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            bail!(
                "{tool} is not installed (apt-get install iproute2 iperf3 iputils-ping), or run `cargo xtask demo`, which installs them"
            );
        }
    }
    Ok(())
}

/// The subscriber's two classes: upload policed to 10 Mbit/s (bucket 100 ms), download
/// steered into HTB class 1:10; both with `mtu` as the MTU policy.
fn set_classes(dp: &mut Dataplane, mtu: Option<u16>) -> anyhow::Result<()> {
    let up = ClassConfig {
        rate_bps: Some(10_000_000),
        burst_bytes: 125_000,
        mtu,
        ..Default::default()
    };
    let down = ClassConfig {
        skb_priority: htb::skb_priority(DOWN_MINOR),
        mtu,
        ..Default::default()
    };
    dp.upsert_class(UP_CLASS, &up)?;
    dp.upsert_class(DOWN_CLASS, &down)?;
    Ok(())
}

fn down_plan(tree: &mut HtbTree, mbit: u64) -> anyhow::Result<()> {
    let rate = mbit * 1_000_000;
    tree.upsert_class(DOWN_MINOR, HtbClass::new(rate, rate).with_prio(3))?;
    Ok(())
}

/// TCP from the provider to the subscriber, goodput in Mbit/s.
fn measure_down(topo: &Topology, secs: u32) -> anyhow::Result<f64> {
    let port = next_port();
    let server = IperfServer::start(&topo.sub, SUB.parse()?, port)?;
    let mut opts = IperfOpts::tcp(SUB.parse()?, port, secs);
    opts.extra = vec!["-O".into(), "1".into()];
    let report = IperfClient::run(&topo.net, &opts)?;
    server.finish(Duration::from_secs(5)).ok();
    Ok(report.mbps())
}

/// UDP from the subscriber at `offered` Mbit/s, 1400-byte datagrams: the L3 rate the provider
/// received, in Mbit/s (1428 IP bytes per 1400 of payload).
fn measure_up(topo: &Topology, offered: u64) -> anyhow::Result<f64> {
    let port = next_port();
    let server = IperfServer::start(&topo.net, IpAddr::V4(NET_V4), port)?;
    let mut opts = IperfOpts::udp(IpAddr::V4(NET_V4), port, 3, offered * 1_000_000);
    opts.bind = Some(SUB.parse()?);
    opts.len = Some(1400);
    opts.extra = vec!["-O".into(), "1".into()];
    let report = IperfClient::run(&topo.sub, &opts)?;
    server.finish(Duration::from_secs(5)).ok();
    Ok(report.bits_per_second * 1428.0 / 1400.0 / 1e6)
}

/// Runs the demo, printing what it does and what it measures.
pub fn run() -> anyhow::Result<()> {
    check_tools()?;
    println!("shaper lab demo: namespaces sub — gw — net (198.18.0.0/15, 2001:db8::/32 only)");
    let topo = Topology::sub_gw_net("shaper-demo").context("building the lab topology")?;
    topo.add_sub_addr(SUB.parse()?)?;

    // The data plane lives in the gateway namespace: attach there.
    let mut dp = in_netns(topo.gw.name(), || -> anyhow::Result<Dataplane> {
        let mut dp = Dataplane::load(LoadOptions::default())?;
        dp.attach_xdp("sub0", Role::Subscriber)?;
        dp.attach_tc("sub0", Role::Subscriber)?;
        dp.attach_xdp("up0", Role::Upstream)?;
        dp.attach_tc("up0", Role::Upstream)?;
        Ok(dp)
    })??;
    println!(
        "data plane attached on gw: XDP + TC egress on sub0 (subscriber side) and up0 (upstream side)"
    );
    for (ifname, kind, generic) in dp.attachments() {
        println!(
            "  {kind:>3} on {ifname}{}",
            if generic { " (generic mode)" } else { "" }
        );
    }

    // The plan: download shaped to 20 Mbit/s in sub0's HTB tree (1 Gbit/s link), upload
    // policed to 10 Mbit/s by XDP on sub0 (bucket: 100 ms at the rate).
    let mut tree = HtbTree::new(
        "sub0",
        Some(topo.gw.name().to_string()),
        1_000_000_000,
        0xfffe,
    )?;
    down_plan(&mut tree, 20)?;
    set_classes(&mut dp, None)?;
    dp.upsert_subscriber(
        SubscriberKey {
            addr: SUB.parse()?,
            len: 32,
        },
        [UP_CLASS, DOWN_CLASS],
    )?;
    let down = measure_down(&topo, 4)?;
    let up = measure_up(&topo, 30)?;
    println!(
        "\n1. plan 20/10 Mbit/s: download (TCP, HTB) {down:.1} Mbit/s goodput; upload (UDP 30 Mbit/s offered, XDP policer) {up:.1} Mbit/s"
    );

    down_plan(&mut tree, 50)?;
    let boosted = measure_down(&topo, 4)?;
    println!(
        "2. boost the download to 50 Mbit/s (HTB class changed in place): {boosted:.1} Mbit/s"
    );

    down_plan(&mut tree, 20)?;
    let reverted = measure_down(&topo, 4)?;
    println!("3. revert to 20 Mbit/s: {reverted:.1} Mbit/s");

    // XDP_TX on a veth reaches the peer only if the peer runs XDP too (any program). Attached
    // only now: XDP on the receiving veth also changes how it queues, and the rates above
    // should be measured on the plain path.
    let floor = in_netns(topo.sub.name(), || -> anyhow::Result<aya::Ebpf> {
        let mut e = aya::Ebpf::load(shaper_ebpf::FLOOR)?;
        let p: &mut aya::programs::Xdp = e
            .program_mut("floor_pass")
            .context("floor_pass")?
            .try_into()?;
        p.load()?;
        p.attach("eth0", aya::programs::XdpMode::Default)?;
        Ok(e)
    })??;
    set_classes(&mut dp, Some(1280))?;
    let out = ping(
        &topo.sub,
        IpAddr::V4(NET_V4),
        &["-M", "do", "-s", "1400", "-c", "2", "-I", SUB],
        Duration::from_secs(10),
    )?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let answered = text
        .lines()
        .find(|l| l.contains("mtu") || l.contains("Frag"))
        .unwrap_or("(no ICMP answer seen)");
    println!(
        "4. MTU policy 1280, `ping -M do -s 1400`: {}",
        answered.trim()
    );

    let up = dp.class_stats(UP_CLASS)?;
    let down = dp.class_stats(DOWN_CLASS)?;
    let gs = dp.global_stats()?;
    println!("\n5. counters");
    println!(
        "  class {UP_CLASS} (upload: policer, MTU 1280): {} packets, {} bytes, {} policed drops, {} ICMP answers sent",
        up.pkts, up.bytes, up.drop_police, up.icmp_sent
    );
    println!(
        "  class {DOWN_CLASS} (download: HTB 1:{DOWN_MINOR:x}): {} packets, {} bytes",
        down.pkts, down.bytes
    );
    if let Ok(stats) = tree.stats() {
        if let Some(c) = stats.get(&DOWN_MINOR) {
            println!(
                "  HTB class 1:{DOWN_MINOR:x} on sub0: {} packets, {} bytes sent, {} dropped",
                c.packets, c.bytes, c.drops
            );
        }
    }
    for (i, name) in crate::abi::gs::NAMES.iter().enumerate() {
        if gs.v[i] != 0 {
            println!("  {name}: {}", gs.v[i]);
        }
    }
    for (k, v) in dp.top_flows(3)? {
        let ip = |b: [u8; 16]| -> IpAddr {
            let v6 = std::net::Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        };
        println!(
            "  top flow {}:{} → {}:{} proto {}: {} sampled packets, {} bytes",
            ip(k.src),
            u16::from_be(k.sport),
            ip(k.dst),
            u16::from_be(k.dport),
            k.proto,
            v.pkts,
            v.bytes
        );
    }
    let _ = topo.set_mtu(Link::Sub, 1500);
    drop(floor);
    drop(dp);
    drop(topo);
    let exe = std::env::current_exe().context("locating the shaper binary")?;
    crate::demo_modem::run(&exe)?;
    println!("\ndemo done; namespaces, pins and files removed.");
    Ok(())
}
