//! Lab tests of the whole data plane with real traffic: the production XDP and TC programs
//! (`Build::Production`) attached by the loader to the gateway's veths, iperf3 / ping / tcpdump
//! traffic between the `sub` and `net` namespaces (see `shaper::lab::topo`). Needs root,
//! iproute2, iperf3, iputils-ping, tcpdump and ethtool. CI runs it as root:
//!
//! `cargo test -p shaper-user --test lab_dataplane -- --test-threads=1`
//!
//! Roles on the gateway: `sub0` faces the subscribers (Role::Subscriber: XDP polices uploads
//! with `class_id[0]`, TC egress steers downloads into sub0's HTB), `up0` faces upstream
//! (Role::Upstream: XDP polices downloads with `class_id[1]`, TC egress steers uploads).
//!
//! The loader attaches in the network namespace of the calling thread, so every attach runs
//! on a thread that entered `gw` (or `sub`) first ([`shaper::lab::in_netns`]). Map updates
//! and dropping links work from any thread.
//!
//! # Rates: what is measured
//!
//! The policer counts L3 (IP) bytes; iperf3 reports goodput (payload). Each measured goodput
//! is converted back to an L3 rate with packet sizes the test controls:
//! - UDP with `-l 1400`: every datagram is 1400 + 8 (UDP) + 20 (IPv4) = 1428 L3 bytes, so
//!   L3 = goodput × 1428 / 1400.
//! - TCP at MTU 1500 with timestamps (Linux default): each full segment carries 1448 payload
//!   bytes in 1500 L3 bytes (20 IP + 20 TCP + 12 timestamp option), so
//!   L3 = goodput × 1500 / 1448.
//! - HTB (test 2) accounts `skb->len` at egress, i.e. L2 frames: 1514 bytes per 1448, so
//!   HTB-rate = goodput × 1514 / 1448.
//!
//! Every flow skips its first second (`iperf3 -O 1`): slow start and the policer's initial
//! burst are not part of the figure. Tolerances: policed rates ±5 % of the configured rate;
//! per-second intervals across a controller restart ±10 %.
//!
//! # Policer burst for TCP
//!
//! A policer has no queue: TCP only reaches the rate when the bucket absorbs its bursts. The
//! classes here use burst = rate × 20 ms (at least 3000 bytes): 25 kB at 10 Mbit/s, 250 kB at
//! 100 Mbit/s.
//!
//! Every test builds its own namespaces (deleted on drop, also on panic); only
//! 198.18.0.0/15 and 2001:db8::/32 addresses are used.

use std::net::IpAddr;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use aya::programs::{Xdp, XdpMode};
use shaper::abi;
use shaper::dataplane::htb::{self, HtbClass, HtbTree};
use shaper::dataplane::{Build, Dataplane, Limits, LoadOptions, Role};
use shaper::lab::topo::{GW_SUB_IF, GW_UP_IF, NET_IF, NET_V4, NET_V6, SUB_IF};
use shaper::lab::{
    IperfClient, IperfOpts, IperfReport, IperfServer, NetNs, Topology, next_port, ping,
};
use shaper::policy::{ClassConfig, SubscriberKey};

const SUB_A: &str = "198.18.0.10";
const SUB_B: &str = "198.18.0.11";
const SUB_A6: &str = "2001:db8::10";

/// UDP payload per datagram (`iperf3 -l`).
const UDP_LEN: u32 = 1400;
/// L3 bytes per UDP datagram: payload + UDP 8 + IPv4 20.
const UDP_L3: f64 = 1428.0;
/// TCP payload per full segment at MTU 1500 with the timestamp option.
const TCP_PAYLOAD: f64 = 1448.0;
/// L3 bytes per full TCP segment.
const TCP_L3: f64 = 1500.0;
/// L2 bytes per full TCP segment (what HTB accounts).
const TCP_L2: f64 = 1514.0;

/// Tolerance of a policed rate (fraction of the configured rate).
const POLICE_TOL: f64 = 0.05;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(s: &str) -> SubscriberKey {
    let addr = ip(s);
    SubscriberKey {
        addr,
        len: if addr.is_ipv4() { 32 } else { 128 },
    }
}

fn limits() -> Limits {
    Limits {
        max_subscribers: 1024,
        max_classes: 256,
        max_rule_keys: 256,
        max_rule_entries: 256,
        max_flows: 1024,
    }
}

fn opts(pin_root: Option<PathBuf>) -> LoadOptions {
    LoadOptions {
        pin_root,
        limits: limits(),
        build: Build::Production,
        ..Default::default()
    }
}

/// A policer class: `rate` bit/s of L3 bytes, burst = rate × 20 ms (at least 3000 bytes).
fn policer(rate_bps: u64) -> ClassConfig {
    ClassConfig {
        rate_bps: Some(rate_bps),
        burst_bytes: ((rate_bps / 8 / 50) as u32).max(3000),
        ..Default::default()
    }
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "lab_dataplane needs root (ip netns, bpf); also iproute2, iperf3, iputils-ping, tcpdump"
    );
}

/// Loads the production programs and attaches XDP + TC egress on both gateway interfaces,
/// from a thread inside the `gw` namespace.
fn gw_dataplane(gw: &NetNs, o: LoadOptions) -> Dataplane {
    gw.run_in(move || -> anyhow::Result<Dataplane> {
        let mut dp = Dataplane::load(o)?;
        attach_gw(&mut dp)?;
        Ok(dp)
    })
    .expect("enter gw netns")
    .expect("load + attach the data plane in gw")
}

fn attach_gw(dp: &mut Dataplane) -> anyhow::Result<()> {
    for (ifname, role) in [(GW_SUB_IF, Role::Subscriber), (GW_UP_IF, Role::Upstream)] {
        dp.attach_xdp(ifname, role)?;
        dp.attach_tc(ifname, role)?;
    }
    Ok(())
}

/// Attaches the pass-through XDP program `floor_pass` to `ifname` in `ns`. A veth delivers
/// the XDP_TX frames of its peer only while it has an XDP program itself (see `shaper::lab`).
fn attach_pass_xdp(ns: &NetNs, ifname: &'static str) -> aya::Ebpf {
    ns.run_in(move || -> anyhow::Result<aya::Ebpf> {
        let mut bpf = aya::Ebpf::load(shaper_ebpf::FLOOR)?;
        let p: &mut Xdp = bpf
            .program_mut("floor_pass")
            .expect("floor object has floor_pass")
            .try_into()?;
        p.load()?;
        p.attach(ifname, XdpMode::Default)?;
        Ok(bpf)
    })
    .expect("enter netns")
    .expect("attach floor_pass")
}

struct Lab {
    // Dropped in this order: the data plane (its links detach), the pass-through program,
    // then the namespaces.
    dp: Dataplane,
    _pass: Option<aya::Ebpf>,
    topo: Topology,
}

fn setup(prefix: &str, subs: &[&str]) -> Lab {
    require_root();
    let topo = Topology::sub_gw_net(prefix).expect("topology");
    for s in subs {
        topo.add_sub_addr(ip(s)).unwrap();
    }
    let dp = gw_dataplane(&topo.gw, opts(None));
    let modes = dp.attachments();
    eprintln!("attached: {modes:?}");
    Lab {
        dp,
        _pass: None,
        topo,
    }
}

/// `iperf3 -O 1`: the first second is not counted.
fn omit_first_second(o: &mut IperfOpts) {
    o.extra.extend(["-O".to_string(), "1".to_string()]);
}

/// UDP at `offered_bps` for `secs` (+1 s skipped) from `net` to `dst` in `sub`.
fn udp_down(lab: &Lab, dst: &str, offered_bps: u64, secs: u32) -> IperfReport {
    let port = next_port();
    let srv = IperfServer::start(&lab.topo.sub, ip(dst), port).unwrap();
    let mut o = IperfOpts::udp(ip(dst), port, secs, offered_bps);
    o.bind = Some(IpAddr::V4(NET_V4));
    o.len = Some(UDP_LEN);
    omit_first_second(&mut o);
    let rep = IperfClient::run(&lab.topo.net, &o).unwrap();
    let _ = srv.finish(Duration::from_secs(10));
    rep
}

/// UDP from `src` in `sub` to `net`.
fn udp_up(lab: &Lab, src: &str, offered_bps: u64, secs: u32) -> IperfReport {
    let port = next_port();
    let srv = IperfServer::start(&lab.topo.net, IpAddr::V4(NET_V4), port).unwrap();
    let mut o = IperfOpts::udp(IpAddr::V4(NET_V4), port, secs, offered_bps);
    o.bind = Some(ip(src));
    o.len = Some(UDP_LEN);
    omit_first_second(&mut o);
    let rep = IperfClient::run(&lab.topo.sub, &o).unwrap();
    let _ = srv.finish(Duration::from_secs(10));
    rep
}

fn tcp_down_opts(dst: &str, port: u16, secs: u32) -> IperfOpts {
    let mut o = IperfOpts::tcp(ip(dst), port, secs);
    o.bind = Some(IpAddr::V4(NET_V4));
    omit_first_second(&mut o);
    o
}

/// TCP for `secs` (+1 s skipped) from `net` to `dst` in `sub`.
fn tcp_down(lab: &Lab, dst: &str, secs: u32) -> IperfReport {
    let port = next_port();
    let srv = IperfServer::start(&lab.topo.sub, ip(dst), port).unwrap();
    let rep = IperfClient::run(&lab.topo.net, &tcp_down_opts(dst, port, secs)).unwrap();
    let _ = srv.finish(Duration::from_secs(10));
    rep
}

/// Checks an L3 rate against the configured one; returns the deviation for the log.
fn check_rate(what: &str, goodput_bps: f64, l3_per_payload: f64, target_bps: u64, tol: f64) {
    let l3 = goodput_bps * l3_per_payload;
    let dev = l3 / target_bps as f64 - 1.0;
    eprintln!(
        "{what}: goodput {:.2} Mbit/s -> L3 {:.2} Mbit/s, configured {:.1} Mbit/s ({:+.1} %)",
        goodput_bps / 1e6,
        l3 / 1e6,
        target_bps as f64 / 1e6,
        dev * 100.0
    );
    assert!(
        dev.abs() <= tol,
        "{what}: L3 rate {:.2} Mbit/s is {:+.1} % off the configured {:.1} Mbit/s (tolerance \
         ±{:.0} %)",
        l3 / 1e6,
        dev * 100.0,
        target_bps as f64 / 1e6,
        tol * 100.0
    );
}

// ---- 1. policer --------------------------------------------------------------------------

#[test]
fn police_udp_and_tcp_at_10_and_100_mbit() {
    const UP: u32 = 1;
    const DOWN: u32 = 2;
    let mut lab = setup("dpp", &[SUB_A]);
    lab.dp.upsert_class(UP, &policer(10_000_000)).unwrap();
    lab.dp.upsert_class(DOWN, &policer(10_000_000)).unwrap();
    lab.dp.upsert_subscriber(key(SUB_A), [UP, DOWN]).unwrap();

    let udp_f = UDP_L3 / f64::from(UDP_LEN);
    let tcp_f = TCP_L3 / TCP_PAYLOAD;
    let secs = 2;

    let r = udp_down(&lab, SUB_A, 20_000_000, secs);
    check_rate(
        "UDP down @10M",
        r.bits_per_second,
        udp_f,
        10_000_000,
        POLICE_TOL,
    );
    let before = lab.dp.class_stats(DOWN).unwrap();
    let r = tcp_down(&lab, SUB_A, secs);
    eprintln!(
        "DEBUG before {before:?}\nafter {:?}",
        lab.dp.class_stats(DOWN).unwrap()
    );
    eprintln!(
        "DEBUG {}",
        lab.topo.net.run(["ethtool", "-k", "eth0"]).unwrap()
    );
    eprintln!(
        "DEBUG {}",
        lab.topo.gw.run(["ethtool", "-k", "up0"]).unwrap()
    );
    eprintln!(
        "DEBUG {}",
        lab.topo.gw.run(["ethtool", "-S", "up0"]).unwrap()
    );
    eprintln!(
        "DEBUG {}",
        lab.topo
            .net
            .run([
                "nstat",
                "-az",
                "TcpRetransSegs",
                "TcpExtTCPLostRetransmit",
                "TcpOutSegs"
            ])
            .unwrap()
    );
    check_rate(
        "TCP down @10M",
        r.bits_per_second,
        tcp_f,
        10_000_000,
        POLICE_TOL,
    );

    // Live change of the downstream class (the policer state is kept).
    lab.dp.upsert_class(DOWN, &policer(100_000_000)).unwrap();
    let r = udp_down(&lab, SUB_A, 200_000_000, secs);
    check_rate(
        "UDP down @100M",
        r.bits_per_second,
        udp_f,
        100_000_000,
        POLICE_TOL,
    );
    let r = tcp_down(&lab, SUB_A, secs);
    check_rate(
        "TCP down @100M",
        r.bits_per_second,
        tcp_f,
        100_000_000,
        POLICE_TOL,
    );

    // Upstream: the Subscriber-role XDP on sub0 polices with class_id[0].
    let r = udp_up(&lab, SUB_A, 20_000_000, secs);
    check_rate(
        "UDP up @10M",
        r.bits_per_second,
        udp_f,
        10_000_000,
        POLICE_TOL,
    );

    let up = lab.dp.class_stats(UP).unwrap();
    let down = lab.dp.class_stats(DOWN).unwrap();
    eprintln!("class stats: up {up:?}\n             down {down:?}");
    assert!(up.drop_police > 0, "upstream policer never dropped: {up:?}");
    assert!(
        down.drop_police > 0,
        "downstream policer never dropped: {down:?}"
    );
}

// ---- 2. HTB steering ---------------------------------------------------------------------

#[test]
fn htb_committed_rate_under_saturation() {
    const LINK: u64 = 100_000_000;
    const MINOR_A: u16 = 0x10;
    const MINOR_B: u16 = 0x11;
    const DEFAULT_MINOR: u16 = 0xfffe;
    const CA: u32 = 10;
    const CB: u32 = 11;
    let mut lab = setup("dph", &[SUB_A, SUB_B]);
    let mut tree = HtbTree::new(
        GW_SUB_IF,
        Some(lab.topo.gw.name().to_string()),
        LINK,
        DEFAULT_MINOR,
    )
    .expect("htb root");
    tree.upsert_class(MINOR_A, HtbClass::new(30_000_000, LINK))
        .unwrap();
    tree.upsert_class(MINOR_B, HtbClass::new(10_000_000, LINK))
        .unwrap();
    for (id, minor) in [(CA, MINOR_A), (CB, MINOR_B)] {
        let cfg = ClassConfig {
            skb_priority: htb::skb_priority(minor),
            ..Default::default()
        };
        lab.dp.upsert_class(id, &cfg).unwrap();
    }
    lab.dp.upsert_subscriber(key(SUB_A), [CA, CA]).unwrap();
    lab.dp.upsert_subscriber(key(SUB_B), [CB, CB]).unwrap();
    let steered0 = lab.dp.global_stats().unwrap().v[abi::gs::TC_STEERED];

    let (pa, pb) = (next_port(), next_port());
    let srv_a = IperfServer::start(&lab.topo.sub, ip(SUB_A), pa).unwrap();
    let srv_b = IperfServer::start(&lab.topo.sub, ip(SUB_B), pb).unwrap();
    let mut udp = IperfOpts::udp(ip(SUB_B), pb, 6, 200_000_000);
    udp.bind = Some(IpAddr::V4(NET_V4));
    udp.len = Some(UDP_LEN);
    let b = IperfClient::spawn(&lab.topo.net, &udp).unwrap();
    sleep(Duration::from_millis(500));
    let a = IperfClient::run(&lab.topo.net, &tcp_down_opts(SUB_A, pa, 4)).unwrap();
    let b = b.wait().unwrap();
    let _ = srv_a.finish(Duration::from_secs(10));
    let _ = srv_b.finish(Duration::from_secs(10));

    let stats = tree.stats().unwrap();
    let steered = lab.dp.global_stats().unwrap().v[abi::gs::TC_STEERED] - steered0;
    let a_htb = a.bits_per_second * TCP_L2 / TCP_PAYLOAD;
    let (sa, sb) = (&stats[&MINOR_A], &stats[&MINOR_B]);
    let sd = stats.get(&DEFAULT_MINOR).cloned().unwrap_or_default();
    eprintln!(
        "A (TCP): goodput {:.1} Mbit/s = {:.1} Mbit/s of frames (HTB accounting); B (UDP, \
         200 offered) {:.1} Mbit/s goodput, lost {:?}/{:?}\n\
         HTB 1:10 {} B / {} pkts, 1:11 {} B / {} pkts (drops {}), default {} B / {} pkts; \
         TC steered +{}",
        a.mbps(),
        a_htb / 1e6,
        b.mbps(),
        b.lost_packets,
        b.packets,
        sa.bytes,
        sa.packets,
        sb.bytes,
        sb.packets,
        sb.drops,
        sd.bytes,
        sd.packets,
        steered
    );
    assert!(
        a_htb >= 30e6 * 0.95,
        "A got {:.1} Mbit/s (frames) while B flooded, want >= 28.5 (committed 30 x 0.95)",
        a_htb / 1e6
    );
    assert!(
        sa.bytes >= a.bytes,
        "A's traffic did not go through 1:10: {stats:?}"
    );
    assert!(
        sb.bytes > 0 && sb.drops > 0,
        "B's flood did not go through (and get limited in) 1:11: {stats:?}"
    );
    assert!(
        sd.bytes * 100 < sa.bytes + sb.bytes,
        "default class carried {} bytes: steering missed traffic: {stats:?}",
        sd.bytes
    );
    assert!(
        steered >= sa.packets + sb.packets,
        "TC_STEERED grew by {steered}, fewer than the {} packets HTB sent in 1:10 + 1:11",
        sa.packets + sb.packets
    );
}

// ---- 3. MSS clamp ------------------------------------------------------------------------

/// `tcpdump -Q in` on `ifname` in `ns` for the first two TCP packets with SYN set.
fn tcpdump_syns(ns: &NetNs, ifname: &str) -> shaper::lab::BgProcess {
    ns.spawn([
        "tcpdump",
        "-i",
        ifname,
        "-Q",
        "in",
        "-c",
        "2",
        "-nn",
        "-v",
        "-l",
        "tcp[tcpflags] & tcp-syn != 0",
    ])
    .unwrap()
}

#[test]
fn mss_clamp_on_real_tcp_connection() {
    const C: u32 = 3;
    let mut lab = setup("dpm", &[SUB_A]);
    let cfg = ClassConfig {
        mtu: Some(1280),
        ..Default::default()
    };
    lab.dp.upsert_class(C, &cfg).unwrap();
    lab.dp.upsert_subscriber(key(SUB_A), [C, C]).unwrap();
    // Full checksums on the wire: on a veth, locally sent TCP carries only the pseudo-header
    // sum (CHECKSUM_PARTIAL), so tcpdump could not tell whether the clamp kept the checksum
    // right. With tx checksumming off the senders write complete checksums.
    lab.topo
        .sub
        .run(["ethtool", "-K", SUB_IF, "tx", "off"])
        .unwrap();
    lab.topo
        .net
        .run(["ethtool", "-K", NET_IF, "tx", "off"])
        .unwrap();

    let dump_net = tcpdump_syns(&lab.topo.net, NET_IF);
    let dump_sub = tcpdump_syns(&lab.topo.sub, SUB_IF);
    sleep(Duration::from_millis(1000));
    let port = next_port();
    let srv = IperfServer::start(&lab.topo.net, IpAddr::V4(NET_V4), port).unwrap();
    let mut o = IperfOpts::tcp(IpAddr::V4(NET_V4), port, 2);
    o.bind = Some(ip(SUB_A));
    let rep = IperfClient::run(&lab.topo.sub, &o).unwrap();
    let _ = srv.finish(Duration::from_secs(10));
    let net = dump_net.wait_timeout(Duration::from_secs(5)).unwrap();
    let sub = dump_sub.wait_timeout(Duration::from_secs(5)).unwrap();
    let net = String::from_utf8_lossy(&net.stdout).into_owned();
    let sub = String::from_utf8_lossy(&sub.stdout).into_owned();
    let st = lab.dp.class_stats(C).unwrap();
    eprintln!(
        "TCP sub -> net {:.1} Mbit/s\n--- SYNs arriving in net:\n{net}--- SYN-ACKs arriving in \
         sub:\n{sub}class stats {st:?}",
        rep.mbps()
    );
    assert!(rep.bytes > 0, "no data went through");
    // SYN from sub (MSS 1460) clamped by sub0's XDP (direction UP) to 1280 - 40.
    assert!(
        net.contains("Flags [S],") && net.contains("mss 1240") && !net.contains("mss 1460"),
        "SYN not clamped to 1240 on its way up:\n{net}"
    );
    // SYN-ACK from net (MSS 1460) clamped by up0's XDP (direction DOWN).
    assert!(
        sub.contains("Flags [S.],") && sub.contains("mss 1240") && !sub.contains("mss 1460"),
        "SYN-ACK not clamped to 1240 on its way down:\n{sub}"
    );
    for (what, out) in [("net", &net), ("sub", &sub)] {
        assert!(
            !out.contains("incorrect"),
            "TCP checksum wrong after the clamp ({what}):\n{out}"
        );
        assert!(
            out.contains("(correct)"),
            "tcpdump did not verify a checksum ({what}):\n{out}"
        );
    }
    assert!(st.mss_clamped >= 2, "mss_clamped {st:?}");
    assert_eq!(
        (st.drop_mtu, st.icmp_sent),
        (0, 0),
        "with the MSS clamped nothing should exceed the MTU: {st:?}"
    );
}

// ---- 4. ICMP frag-needed / packet-too-big ------------------------------------------------

#[test]
fn ping_df_oversize_gets_frag_needed_1280() {
    const C: u32 = 4;
    let mut lab = setup("dpi", &[SUB_A, SUB_A6]);
    lab._pass = Some(attach_pass_xdp(&lab.topo.sub, SUB_IF));
    let cfg = ClassConfig {
        mtu: Some(1280),
        ..Default::default()
    };
    lab.dp.upsert_class(C, &cfg).unwrap();
    lab.dp.upsert_subscriber(key(SUB_A), [C, C]).unwrap();
    lab.dp.upsert_subscriber(key(SUB_A6), [C, C]).unwrap();
    let t = Duration::from_secs(10);

    // Small packets pass both ways.
    let ok = ping(
        &lab.topo.sub,
        IpAddr::V4(NET_V4),
        &["-c", "1", "-W", "2", "-I", SUB_A],
        t,
    )
    .unwrap();
    assert!(ok.status.success(), "small v4 ping failed: {ok:?}");
    let ok = ping(
        &lab.topo.sub,
        IpAddr::V6(NET_V6),
        &["-6", "-c", "1", "-W", "2", "-I", SUB_A6],
        t,
    )
    .unwrap();
    assert!(ok.status.success(), "small v6 ping failed: {ok:?}");

    let big = ["-M", "do", "-s", "1400", "-c", "2", "-W", "2"];
    let mut a4 = big.to_vec();
    a4.extend(["-I", SUB_A]);
    let o4 = ping(&lab.topo.sub, IpAddr::V4(NET_V4), &a4, t).unwrap();
    let out4 = format!(
        "{}{}",
        String::from_utf8_lossy(&o4.stdout),
        String::from_utf8_lossy(&o4.stderr)
    );
    let mut a6 = vec!["-6"];
    a6.extend(big);
    a6.extend(["-I", SUB_A6]);
    let o6 = ping(&lab.topo.sub, IpAddr::V6(NET_V6), &a6, t).unwrap();
    let out6 = format!(
        "{}{}",
        String::from_utf8_lossy(&o6.stdout),
        String::from_utf8_lossy(&o6.stderr)
    );
    let st = lab.dp.class_stats(C).unwrap();
    let gs = lab.dp.global_stats().unwrap();
    eprintln!(
        "--- ping v4:\n{out4}--- ping v6:\n{out6}class stats {st:?}; XDP_TX {}",
        gs.v[abi::gs::XDP_TX]
    );
    assert!(
        out4.contains("Frag needed and DF set (mtu = 1280)"),
        "v4: no frag-needed answer with mtu 1280:\n{out4}"
    );
    assert!(
        out6.contains("Packet too big: mtu=1280"),
        "v6: no packet-too-big answer with mtu 1280:\n{out6}"
    );
    assert!(st.icmp_sent >= 2, "icmp_sent {st:?}");
    assert!(gs.v[abi::gs::XDP_TX] >= 2, "XDP_TX {:?}", gs.v);
}

// ---- 5. restart --------------------------------------------------------------------------

/// A bpffs directory removed (recursively) on drop.
struct PinRoot(PathBuf);

impl Drop for PinRoot {
    fn drop(&mut self) {
        if self.0.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.0) {
                eprintln!("removing {}: {e}", self.0.display());
            }
        }
    }
}

/// XDP program id attached to `ifname` in `ns` (`ip -d link show`: `prog/xdp id N`).
fn xdp_prog_id(ns: &NetNs, ifname: &str) -> Option<u32> {
    let out = ns.run(["ip", "-d", "link", "show", "dev", ifname]).unwrap();
    let i = out.find("prog/xdp id ")?;
    out[i + "prog/xdp id ".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn restart_keeps_enforcement_without_gap() {
    const DOWN: u32 = 1;
    const RATE: u64 = 10_000_000;
    require_root();
    let topo = Topology::sub_gw_net("dpr").expect("topology");
    topo.add_sub_addr(ip(SUB_A)).unwrap();
    let root = PinRoot(PathBuf::from(format!(
        "/sys/fs/bpf/shaper-test-{}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&root.0);
    let cfg = policer(RATE);

    let mut a = gw_dataplane(&topo.gw, opts(Some(root.0.clone())));
    a.upsert_class(DOWN, &cfg).unwrap();
    a.upsert_subscriber(key(SUB_A), [0, DOWN]).unwrap();
    let ids_a = (
        xdp_prog_id(&topo.gw, GW_SUB_IF),
        xdp_prog_id(&topo.gw, GW_UP_IF),
    );

    let port = next_port();
    let srv = IperfServer::start(&topo.sub, ip(SUB_A), port).unwrap();
    let mut o = IperfOpts::udp(ip(SUB_A), port, 6, 3 * RATE);
    o.bind = Some(IpAddr::V4(NET_V4));
    o.len = Some(UDP_LEN);
    let t0 = Instant::now();
    let flow = IperfClient::spawn(&topo.net, &o).unwrap();

    // t = 2 s: the controller dies. Its fds close; the pinned links and maps stay.
    sleep(Duration::from_secs(2).saturating_sub(t0.elapsed()));
    drop(a);
    let t_drop = t0.elapsed();
    let ids_orphan = (
        xdp_prog_id(&topo.gw, GW_SUB_IF),
        xdp_prog_id(&topo.gw, GW_UP_IF),
    );
    assert_eq!(
        ids_orphan, ids_a,
        "XDP programs changed or vanished when the controller went away"
    );
    assert!(ids_a.0.is_some() && ids_a.1.is_some(), "no XDP: {ids_a:?}");

    // t = 3 s: a new controller starts on the same pins.
    sleep(Duration::from_secs(3).saturating_sub(t0.elapsed()));
    let t_b = t0.elapsed();
    let b = topo
        .gw
        .run_in({
            let o = opts(Some(root.0.clone()));
            move || -> anyhow::Result<Dataplane> {
                let mut dp = Dataplane::load(o)?;
                anyhow::ensure!(
                    dp.class(DOWN) == Some(&cfg),
                    "class {DOWN} read back as {:?}",
                    dp.class(DOWN)
                );
                anyhow::ensure!(
                    dp.subscriber_count() == 1,
                    "{} subscribers read back",
                    dp.subscriber_count()
                );
                attach_gw(&mut dp)?;
                Ok(dp)
            }
        })
        .unwrap();
    let t_b_done = t0.elapsed();
    let mut b = match b {
        Ok(b) => b,
        Err(e) => panic!("second controller: {e:#}"),
    };
    let ids_b = (
        xdp_prog_id(&topo.gw, GW_SUB_IF),
        xdp_prog_id(&topo.gw, GW_UP_IF),
    );

    let rep = flow.wait().unwrap();
    let _ = srv.finish(Duration::from_secs(10));
    let st = b.class_stats(DOWN).unwrap();
    b.detach_all().unwrap();
    let ids_after = (
        xdp_prog_id(&topo.gw, GW_SUB_IF),
        xdp_prog_id(&topo.gw, GW_UP_IF),
    );
    drop(b);

    let f = UDP_L3 / f64::from(UDP_LEN);
    let ivs: Vec<f64> = rep
        .intervals
        .iter()
        .filter(|(_, s)| *s >= 0.5)
        .map(|(bps, _)| bps * f)
        .collect();
    eprintln!(
        "A dropped at {t_drop:.2?}, B loaded at {t_b:.2?}, attached at {t_b_done:.2?}; XDP ids \
         A {ids_a:?}, orphaned {ids_orphan:?}, B {ids_b:?}, after detach_all {ids_after:?}\n\
         per-second L3 rates (Mbit/s): {:?}; class stats {st:?}",
        ivs.iter()
            .map(|b| (b / 1e4).round() / 100.0)
            .collect::<Vec<_>>()
    );
    assert!(
        ids_b.0.is_some() && ids_b.0 != ids_a.0 && ids_b.1 != ids_a.1,
        "B's programs did not replace A's in the pinned links: {ids_a:?} -> {ids_b:?}"
    );
    assert_eq!(ids_after, (None, None), "detach_all left XDP attached");
    assert!(ivs.len() >= 6, "too few intervals: {:?}", rep.intervals);
    for (i, l3) in ivs.iter().enumerate() {
        let dev = l3 / RATE as f64 - 1.0;
        assert!(
            dev.abs() <= 0.10,
            "second {i}: {:.2} Mbit/s L3 is {:+.1} % off {} Mbit/s: enforcement gap or block \
             around the restart",
            l3 / 1e6,
            dev * 100.0,
            RATE / 1_000_000
        );
    }
}

#[test]
fn zz_experiment() {
    let Ok(spec) = std::env::var("XP") else {
        return;
    };
    let mut lab = setup("dpx", &[SUB_A]);
    for item in spec.split(';') {
        let f: Vec<&str> = item.split(',').collect();
        let (cc, rate, burst): (&str, u64, u32) =
            (f[0], f[1].parse().unwrap(), f[2].parse().unwrap());
        let cfg = ClassConfig {
            rate_bps: Some(rate),
            burst_bytes: burst,
            ..Default::default()
        };
        lab.dp.upsert_class(2, &cfg).unwrap();
        lab.dp.upsert_subscriber(key(SUB_A), [0, 2]).unwrap();
        let port = next_port();
        let srv = IperfServer::start(&lab.topo.sub, ip(SUB_A), port).unwrap();
        let mut o = tcp_down_opts(SUB_A, port, 3);
        o.extra.extend(["-C".to_string(), cc.to_string()]);
        let b = lab.dp.class_stats(2).unwrap();
        let r = IperfClient::run(&lab.topo.net, &o).unwrap();
        let _ = srv.finish(Duration::from_secs(10));
        let a = lab.dp.class_stats(2).unwrap();
        let retr = r.raw.pointer("/end/sum_sent/retransmits").cloned();
        eprintln!(
            "XP cc {cc} rate {rate} burst {burst}: goodput {:.2} Mbit/s L3 {:.2} ({:+.1}%), passed {} dropped {} retr {retr:?}",
            r.mbps(),
            r.bits_per_second * TCP_L3 / TCP_PAYLOAD / 1e6,
            (r.bits_per_second * TCP_L3 / TCP_PAYLOAD / rate as f64 - 1.0) * 100.0,
            a.pkts - b.pkts - (a.drop_police - b.drop_police),
            a.drop_police - b.drop_police
        );
    }
}
