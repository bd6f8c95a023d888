//! `shaper demo`: the lab demonstration. Three network namespaces joined by veth pairs —
//! `sub` (a subscriber at 198.18.0.10) — `gw` (shaper's XDP and TC programs, HTB) — `net`
//! (a provider at 198.19.0.2) — and real traffic measured with iperf3:
//!
//! 1. the subscriber's 20 Mbit/s download plan, enforced by the XDP policer;
//! 2. a live boost to 50 Mbit/s (one class update: no reload, no reattach);
//! 3. the revert to 20 Mbit/s;
//! 4. an MTU policy of 1280: `ping -M do -s 1400` is answered with "fragmentation needed";
//! 5. the counters the data plane kept.
//!
//! Everything is created here and deleted on exit; traffic never leaves the namespaces.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, bail};

use crate::dataplane::{Dataplane, LoadOptions, Role};
use crate::lab::{
    IperfClient, IperfOpts, IperfServer, Link, Topology, in_netns, iperf::next_port, ping,
    topo::NET_V4,
};
use crate::policy::{ClassConfig, SubscriberKey};

const SUB: &str = "198.18.0.10";

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

fn down_class(mbit: u64) -> ClassConfig {
    let rate = mbit * 1_000_000;
    // 50 ms of burst at the rate: enough for TCP to fill the pipe on a veth (RTT < 1 ms).
    ClassConfig {
        rate_bps: Some(rate),
        burst_bytes: (rate / 8 / 20) as u32,
        ..Default::default()
    }
}

fn measure(topo: &Topology, secs: u32) -> anyhow::Result<f64> {
    let port = next_port();
    let server = IperfServer::start(&topo.sub, SUB.parse()?, port)?;
    let mut opts = IperfOpts::tcp(SUB.parse()?, port, secs);
    opts.extra = vec!["-O".into(), "1".into(), "-C".into(), "cubic".into()];
    let report = IperfClient::run(&topo.net, &opts)?;
    server.finish(Duration::from_secs(5)).ok();
    Ok(report.mbps())
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
    // XDP_TX on a veth reaches the peer only if the peer runs XDP too (any program).
    let mut floor = in_netns(topo.sub.name(), || -> anyhow::Result<aya::Ebpf> {
        let mut e = aya::Ebpf::load(shaper_ebpf::FLOOR)?;
        let p: &mut aya::programs::Xdp = e
            .program_mut("floor_pass")
            .context("floor_pass")?
            .try_into()?;
        p.load()?;
        p.attach("eth0", aya::programs::XdpMode::Default)?;
        Ok(e)
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

    dp.upsert_class(1, &down_class(20))?;
    dp.upsert_subscriber(
        SubscriberKey {
            addr: SUB.parse()?,
            len: 32,
        },
        [0, 1],
    )?;
    let baseline = measure(&topo, 4)?;
    println!("\n1. plan 20 Mbit/s down: iperf3 TCP net → subscriber measured {baseline:.1} Mbit/s");

    dp.upsert_class(1, &down_class(50))?;
    let boosted = measure(&topo, 4)?;
    println!("2. boost to 50 Mbit/s (live class update): measured {boosted:.1} Mbit/s");

    dp.upsert_class(1, &down_class(20))?;
    let reverted = measure(&topo, 4)?;
    println!("3. revert to 20 Mbit/s: measured {reverted:.1} Mbit/s");

    dp.upsert_class(
        1,
        &ClassConfig {
            mtu: Some(1280),
            ..down_class(20)
        },
    )?;
    dp.upsert_class(
        2,
        &ClassConfig {
            mtu: Some(1280),
            ..Default::default()
        },
    )?;
    dp.upsert_subscriber(
        SubscriberKey {
            addr: SUB.parse()?,
            len: 32,
        },
        [2, 1],
    )?;
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

    let st = dp.class_stats(1)?;
    let up = dp.class_stats(2)?;
    let gs = dp.global_stats()?;
    println!("\n5. counters");
    println!(
        "  class 1 (download): {} packets, {} bytes, {} policed drops",
        st.pkts, st.bytes, st.drop_police
    );
    println!(
        "  class 2 (upload, MTU 1280): {} packets, {} ICMP answers sent",
        up.pkts, up.icmp_sent
    );
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
    drop(floor.program_mut("floor_pass"));
    drop(dp);
    println!("\ndemo done; namespaces removed.");
    Ok(())
}
