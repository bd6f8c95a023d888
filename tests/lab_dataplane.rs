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
//! The rate checks skip each flow's first second (`iperf3 -O 1`): slow start and the
//! policer's initial burst are not part of the figure. Tolerances: policed rates ±5 % of the
//! configured rate; per-second intervals across a controller restart ±10 % (every second
//! counts there, the first one includes the 20 ms initial bucket: +2 %).
//!
//! # Policer burst for TCP
//!
//! A policer has no queue: TCP only reaches the rate when the bucket absorbs its bursts. UDP
//! checks use a bucket of rate × 100 ms (see `UDP_BURST_MS`). TCP needs far more *in this
//! lab*; measured with cubic over 3 s (L3 rate as a share of the configured rate):
//!
//! | bucket       | 10 Mbit/s | 100 Mbit/s |
//! |--------------|-----------|------------|
//! | 20 ms        | 22–37 %   | 13–15 %    |
//! | 50 ms        | 41 %      | 28 %       |
//! | 100 ms       | 51 %      | 51 %       |
//! | 200 ms       | 93–99 %   | 97–99 %    |
//! | 250 ms       | 101 %     | 101 %      |
//!
//! The lab's RTT is ~50 µs and the veths run at CPU speed, so a window leaves the sender in
//! microseconds and the policer cuts its tail: tail losses are recovered by retransmission
//! timeouts (Linux minimum RTO: 200 ms), and the average only reaches the rate once the bucket
//! can bank a whole RTO of idle time, i.e. holds ≥ 200 ms. So the TCP checks use a 250 ms
//! bucket (312.5 kB at 10 Mbit/s, 3.125 MB at 100 Mbit/s), measured over 4 s: a bucket that
//! size can by itself move a 4 s average by up to 250/4000 = 6 %, but in practice the sender
//! keeps it mostly drained (measured over 4 s: −2.0 % … +2.8 %). How smaller buckets do on
//! real paths (RTT of milliseconds, a slower access link clocking the ACKs) this lab cannot
//! show: the kernel has no netem. The sender's congestion control is pinned to cubic
//! (`iperf3 -C cubic`): kernel defaults differ (this VM: bbr, which did no better).
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
/// Policer bucket for the UDP rate checks: 100 ms at the rate. The bucket only banks time in
/// which the sender sent less than the rate, so its size cannot make an over-dropping policer
/// look right, but it keeps a sender that stalls for tens of ms on a busy 2-core VM (seen: a
/// 2 s run at −8 % with a 20 ms bucket while another job loaded a CPU) from failing the check.
const UDP_BURST_MS: u64 = 100;
/// Bucket of the restart test: 20 ms, small so that an enforcement gap or block would show
/// in the per-second figures instead of being banked and made up.
const RESTART_BURST_MS: u64 = 20;
/// Policer bucket for the TCP checks: 250 ms at the rate (see the module docs: in this lab
/// TCP needs a bucket of at least its minimum RTO, 200 ms, to reach the rate; 250 ms leaves a
/// margin: with exactly 200 ms one run in three came out at −6.6 %).
const TCP_BURST_MS: u64 = 250;
/// Congestion control of the TCP senders (fixed: the kernel default differs between hosts;
/// this VM defaults to bbr).
const TCP_CC: &str = "cubic";

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

/// A policer class: `rate` bit/s of L3 bytes, bucket = `burst_ms` at that rate (at least
/// 3000 bytes).
fn policer(rate_bps: u64, burst_ms: u64) -> ClassConfig {
    ClassConfig {
        rate_bps: Some(rate_bps),
        burst_bytes: ((rate_bps / 8 * burst_ms / 1000) as u32).max(3000),
        ..Default::default()
    }
}

/// Sender-side TCP retransmissions of an iperf3 run.
fn retransmits(r: &IperfReport) -> u64 {
    r.raw
        .pointer("/end/sum_sent/retransmits")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
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
    o.extra.extend(["-C".to_string(), TCP_CC.to_string()]);
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
fn check_rate(what: &str, r: &IperfReport, l3_per_payload: f64, target_bps: u64, tol: f64) {
    let goodput_bps = r.bits_per_second;
    let l3 = goodput_bps * l3_per_payload;
    let dev = l3 / target_bps as f64 - 1.0;
    eprintln!(
        "{what}: sent {:.2} Mbit/s, goodput {:.2} Mbit/s -> L3 {:.2} Mbit/s, configured {:.1} \
         Mbit/s ({:+.1} %)",
        r.sender_bits_per_second / 1e6,
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
    lab.dp
        .upsert_class(UP, &policer(10_000_000, UDP_BURST_MS))
        .unwrap();
    lab.dp
        .upsert_class(DOWN, &policer(10_000_000, UDP_BURST_MS))
        .unwrap();
    lab.dp.upsert_subscriber(key(SUB_A), [UP, DOWN]).unwrap();

    let udp_f = UDP_L3 / f64::from(UDP_LEN);
    let tcp_f = TCP_L3 / TCP_PAYLOAD;

    for rate in [10_000_000, 100_000_000] {
        let mbit = rate / 1_000_000;
        // Live changes of the downstream class (upsert_class keeps the policer state).
        lab.dp
            .upsert_class(DOWN, &policer(rate, UDP_BURST_MS))
            .unwrap();
        let r = udp_down(&lab, SUB_A, 2 * rate, 2);
        check_rate(
            &format!("UDP down @{mbit}M, burst {UDP_BURST_MS} ms"),
            &r,
            udp_f,
            rate,
            POLICE_TOL,
        );
        lab.dp
            .upsert_class(DOWN, &policer(rate, TCP_BURST_MS))
            .unwrap();
        let r = tcp_down(&lab, SUB_A, 4);
        check_rate(
            &format!(
                "TCP ({TCP_CC}) down @{mbit}M, burst {TCP_BURST_MS} ms, {} retransmits",
                retransmits(&r)
            ),
            &r,
            tcp_f,
            rate,
            POLICE_TOL,
        );
    }

    // Upstream: the Subscriber-role XDP on sub0 polices with class_id[0].
    let r = udp_up(&lab, SUB_A, 20_000_000, 2);
    check_rate(
        &format!("UDP up @10M, burst {UDP_BURST_MS} ms"),
        &r,
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
    // Full checksums on the wire: on a veth, locally sent TCP is CHECKSUM_PARTIAL (the field
    // holds only the pseudo-header sum; nobody computes the rest, the receiver trusts it), so
    // tcpdump could not tell whether the clamp kept the checksum right. With tx checksumming
    // off the senders write complete checksums, as packets from a wire have. (Partial
    // checksums: `mss_clamp_keeps_checksum_partial_packets_right`.)
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
    // SYN from sub (MSS 1460) clamped by up0's TC egress (direction UP) to 1280 - 40.
    assert!(
        net.contains("Flags [S],") && net.contains("mss 1240") && !net.contains("mss 1460"),
        "SYN not clamped to 1240 on its way up:\n{net}"
    );
    // SYN-ACK from net (MSS 1460) clamped by sub0's TC egress (direction DOWN).
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

/// The MSS clamp must be right for CHECKSUM_PARTIAL packets too. A TCP packet sent by a local
/// stack over a veth is CHECKSUM_PARTIAL: its checksum field holds the pseudo-header sum only,
/// and whoever transmits it last computes the real checksum over the segment. An in-place
/// rewrite in XDP, which cannot see `ip_summed`, corrupted such packets (the final checksum
/// was that of the *unclamped* segment: `net` counted TcpInCsumErrors and the connection
/// never opened); the clamp now runs at TC egress through `bpf_l4_csum_replace`, which keeps
/// a partial sum partial. Here the gateway's `up0` has tx checksumming off, so the kernel
/// completes the checksum in software on the way out, after the clamp.
#[test]
fn mss_clamp_keeps_checksum_partial_packets_right() {
    const C: u32 = 3;
    let mut lab = setup("dpc", &[SUB_A]);
    let cfg = ClassConfig {
        mtu: Some(1280),
        ..Default::default()
    };
    lab.dp.upsert_class(C, &cfg).unwrap();
    lab.dp.upsert_subscriber(key(SUB_A), [C, C]).unwrap();
    lab.topo
        .gw
        .run(["ethtool", "-K", GW_UP_IF, "tx", "off"])
        .unwrap();
    let port = next_port();
    let srv = IperfServer::start(&lab.topo.net, IpAddr::V4(NET_V4), port).unwrap();
    let mut o = IperfOpts::tcp(IpAddr::V4(NET_V4), port, 1);
    o.bind = Some(ip(SUB_A));
    let rep = IperfClient::run(&lab.topo.sub, &o);
    drop(srv);
    let nstat = lab
        .topo
        .net
        .run(["nstat", "-az", "TcpInCsumErrors"])
        .unwrap();
    eprintln!("{nstat}");
    let st = lab.dp.class_stats(C).unwrap();
    assert!(
        rep.is_ok(),
        "TCP through the MSS clamp failed ({st:?}); net: {nstat}: {}",
        rep.err().map(|e| format!("{e:#}")).unwrap_or_default()
    );
    // The clamp really ran (on the SYN and the SYN-ACK) and `net` saw no bad checksum: a
    // corrupted clamped SYN is dropped by `net`'s stack and counted there.
    assert!(st.mss_clamped > 0, "the MSS was never clamped: {st:?}");
    assert_eq!(
        nstat_counter(&nstat, "TcpInCsumErrors"),
        Some(0),
        "net received TCP segments with a bad checksum:\n{nstat}"
    );
}

/// The value of `name` in `nstat -az` output (`name value rate`), `None` when absent.
fn nstat_counter(out: &str, name: &str) -> Option<u64> {
    out.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next() == Some(name))
            .then(|| f.next().and_then(|v| v.parse().ok()))
            .flatten()
    })
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
    // iputils prints the ICMP error for the first probe; once that error has set the path
    // MTU, the next probe fails locally ("message too long"). Either proves the answer
    // arrived (the namespaces are fresh: no cached PMTU from anywhere else).
    assert!(
        out4.contains("Frag needed and DF set (mtu = 1280)")
            || out4.contains("message too long, mtu=1280"),
        "v4: no frag-needed answer with mtu 1280:\n{out4}"
    );
    assert!(
        out6.contains("Packet too big: mtu=1280") || out6.contains("message too long, mtu: 1280"),
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

/// A controller restart under load: data plane A (pinned) enforces a 10 Mbit/s downstream
/// policer on a 30 Mbit/s UDP flow; at t = 2 s A is dropped (its fds close, as when the
/// process dies; pinned maps and links must keep enforcing), at t = 3 s data plane B loads
/// on the same pins (must read class and subscriber back) and re-attaches, which swaps its
/// programs into the pinned links. Every second of the flow must stay at 10 Mbit/s ±10 %.
///
/// The controller process is simulated by a `Dataplane` value; the `kill -9` variant (spawn
/// the `shaper` binary, SIGKILL it, start another) belongs with the controller binary.
#[test]
fn restart_keeps_enforcement_without_gap() {
    const DOWN: u32 = 1;
    const RATE: u64 = 10_000_000;
    // Loading takes ~4 s here (kernel verification of the four programs), so B attaches at
    // t ≈ 7 s; the flow runs long enough for B to enforce a few seconds too.
    const FLOW_SECS: u32 = 10;
    require_root();
    let topo = Topology::sub_gw_net("dpr").expect("topology");
    topo.add_sub_addr(ip(SUB_A)).unwrap();
    let root = PinRoot(PathBuf::from(format!(
        "/sys/fs/bpf/shaper-test-{}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&root.0);
    let cfg = policer(RATE, RESTART_BURST_MS);

    let mut a = gw_dataplane(&topo.gw, opts(Some(root.0.clone())));
    a.upsert_class(DOWN, &cfg).unwrap();
    a.upsert_subscriber(key(SUB_A), [0, DOWN]).unwrap();
    let ids_a = (
        xdp_prog_id(&topo.gw, GW_SUB_IF),
        xdp_prog_id(&topo.gw, GW_UP_IF),
    );

    let port = next_port();
    let srv = IperfServer::start(&topo.sub, ip(SUB_A), port).unwrap();
    let mut o = IperfOpts::udp(ip(SUB_A), port, FLOW_SECS, 3 * RATE);
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
    let links = root.0.join(format!("v{}", abi::ABI_VERSION)).join("links");
    let pins = |links: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(links)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(
        pins(&links),
        ["tc-sub0", "tc-up0", "xdp-sub0", "xdp-up0"],
        "pinned links after the controller went away"
    );

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
    let pins_after = pins(&links);
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
         per-second L3 rates (Mbit/s): {:?}; class stats {st:?}; datagrams passed by the \
         policer {} (incl. a few of iperf3's control connection), received {:?}",
        ivs.iter()
            .map(|b| (b / 1e4).round() / 100.0)
            .collect::<Vec<_>>(),
        st.pkts - st.drop_police,
        rep.packets.zip(rep.lost_packets).map(|(p, l)| p - l)
    );
    assert!(
        ids_b.0.is_some() && ids_b.0 != ids_a.0 && ids_b.1 != ids_a.1,
        "B's programs did not replace A's in the pinned links: {ids_a:?} -> {ids_b:?}"
    );
    assert!(
        t_b_done + Duration::from_secs(1) <= Duration::from_secs(u64::from(FLOW_SECS)),
        "B attached only at {t_b_done:.2?}, too late in the {FLOW_SECS} s flow to show it enforces"
    );
    assert_eq!(ids_after, (None, None), "detach_all left XDP attached");
    assert!(
        pins_after.is_empty(),
        "detach_all left pins: {pins_after:?}"
    );
    assert!(
        ivs.len() >= FLOW_SECS as usize,
        "too few intervals: {:?}",
        rep.intervals
    );
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

/// An upgrade across ABI versions: links pinned under an older version's directory (here the
/// current pins moved to `v<ABI-1>`, as an older shaper would have left them) are adopted by
/// the new controller: its programs are swapped into the same links (no second attach, which
/// the kernel would refuse), the pins move to this version's directory, and the old
/// version's maps are unpinned once no link uses them.
#[test]
fn upgrade_adopts_links_pinned_by_an_older_abi() {
    require_root();
    let topo = Topology::sub_gw_net("dpu").expect("topology");
    let root = PinRoot(PathBuf::from(format!(
        "/sys/fs/bpf/shaper-upgrade-{}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&root.0);
    let a = gw_dataplane(&topo.gw, opts(Some(root.0.clone())));
    let ids_a = xdp_prog_id(&topo.gw, GW_SUB_IF);
    assert!(ids_a.is_some(), "A attached no XDP");
    drop(a);
    let cur = root.0.join(format!("v{}", abi::ABI_VERSION));
    let old = root.0.join(format!("v{}", abi::ABI_VERSION - 1));
    std::fs::rename(&cur, &old).expect("rename the pin directory (bpffs)");
    assert_eq!(
        xdp_prog_id(&topo.gw, GW_SUB_IF),
        ids_a,
        "the old link still enforces"
    );

    let mut b = gw_dataplane(&topo.gw, opts(Some(root.0.clone())));
    let ids_b = xdp_prog_id(&topo.gw, GW_SUB_IF);
    assert!(
        ids_b.is_some() && ids_b != ids_a,
        "B's program did not replace A's in the adopted link: {ids_a:?} -> {ids_b:?}"
    );
    for l in ["xdp-", "tc-"] {
        for ifname in [GW_SUB_IF, GW_UP_IF] {
            assert!(
                cur.join("links").join(format!("{l}{ifname}")).exists(),
                "{l}{ifname} not pinned under {}",
                cur.display()
            );
        }
    }
    assert!(
        !old.exists(),
        "the old version's directory (maps) was not removed"
    );
    b.detach_all().unwrap();
    assert_eq!(xdp_prog_id(&topo.gw, GW_SUB_IF), None);
}
