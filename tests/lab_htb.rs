//! Lab test of the HTB manager with real traffic (needs root; run in CI as root).
//!
//! Topology (see `shaper::lab::topo`): `net` → `gw` → `sub`; HTB sits on `gw`:`sub0` egress,
//! i.e. shapes downstream traffic toward the subscribers 198.18.0.10 (A) and 198.18.0.11 (B).
//! Link 100 Mbit/s; A: rate 30 Mbit ceil 100 Mbit; B: rate 10 Mbit ceil 100 Mbit.
//!
//! Traffic is steered into the classes by plain `tc filter ... u32 match ip dst ... flowid`
//! installed here, because the eBPF programs are not part of this test. The data-plane test
//! does the same with `skb->priority` = `skb_priority(minor)` written by the TC egress program
//! (HTB classifies by skb->priority before running filters).
//!
//! Every test builds its own namespaces (unique names) and they are deleted on drop, also when
//! an assertion fails. Run: `cargo test -p shaper-user --test lab_htb -- --test-threads=1`.

use std::net::IpAddr;
use std::thread::sleep;
use std::time::Duration;

use shaper::dataplane::htb::{HtbClass, HtbTree, parse_class_params};
use shaper::lab::topo::{GW_SUB_IF, NET_V4};
use shaper::lab::{IperfClient, IperfOpts, IperfServer, Topology, next_port};

const LINK_BPS: u64 = 100_000_000;
const MINOR_A: u16 = 0x10;
const MINOR_B: u16 = 0x11;
const MINOR_C: u16 = 0x12;
const DEFAULT_MINOR: u16 = 0xfffe;

fn addr_a() -> IpAddr {
    "198.18.0.10".parse().unwrap()
}

fn addr_b() -> IpAddr {
    "198.18.0.11".parse().unwrap()
}

fn class_a() -> HtbClass {
    HtbClass::new(30_000_000, LINK_BPS)
}

fn class_b() -> HtbClass {
    HtbClass::new(10_000_000, LINK_BPS)
}

struct Lab {
    // Field order: the tree is plain data; the topology guard deletes the namespaces.
    htb: HtbTree,
    topo: Topology,
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "lab_htb needs root (ip netns, tc); it also needs iproute2 and iperf3 installed"
    );
}

fn setup() -> Lab {
    require_root();
    let topo = Topology::sub_gw_net("htb").expect("topology");
    topo.add_sub_addr(addr_a()).unwrap();
    topo.add_sub_addr(addr_b()).unwrap();
    let mut htb = HtbTree::new(
        GW_SUB_IF,
        Some(topo.gw.name().to_string()),
        LINK_BPS,
        DEFAULT_MINOR,
    )
    .expect("htb root");
    assert!(htb.upsert_class(MINOR_A, class_a()).unwrap());
    assert!(htb.upsert_class(MINOR_B, class_b()).unwrap());
    // Steering for this test only (the data plane uses skb->priority instead).
    for (addr, minor) in [(addr_a(), MINOR_A), (addr_b(), MINOR_B)] {
        topo.gw
            .run([
                "tc",
                "filter",
                "add",
                "dev",
                GW_SUB_IF,
                "parent",
                "1:",
                "protocol",
                "ip",
                "prio",
                "1",
                "u32",
                "match",
                "ip",
                "dst",
                &format!("{addr}/32"),
                "flowid",
                &format!("1:{minor:x}"),
            ])
            .unwrap();
    }
    Lab { htb, topo }
}

/// TCP from `net` (bound to its address) to a subscriber: downstream through `sub0`'s HTB.
fn tcp_from_net(dst: IpAddr, port: u16, secs: u32) -> IperfOpts {
    let mut o = IperfOpts::tcp(dst, port, secs);
    o.bind = Some(IpAddr::V4(NET_V4));
    o
}

#[test]
fn a_alone_gets_the_link() {
    let lab = setup();
    let port = next_port();
    let srv = IperfServer::start(&lab.topo.sub, addr_a(), port).unwrap();
    let rep = IperfClient::run(&lab.topo.net, &tcp_from_net(addr_a(), port, 5)).unwrap();
    let _ = srv.finish(Duration::from_secs(10));
    let stats = lab.htb.stats().unwrap();
    eprintln!(
        "A alone: {:.1} Mbit/s; class 1:10 sent {} bytes, drops {}",
        rep.mbps(),
        stats[&MINOR_A].bytes,
        stats[&MINOR_A].drops
    );
    assert!(
        stats[&MINOR_A].bytes >= rep.bytes,
        "traffic did not go through class 1:10: {stats:?}"
    );
    assert!(
        rep.bits_per_second >= 85e6,
        "A alone got {:.1} Mbit/s, want >= 85",
        rep.mbps()
    );
    assert!(
        rep.bits_per_second <= 105e6,
        "A alone got {:.1} Mbit/s, more than the 100 Mbit/s link: not shaped?",
        rep.mbps()
    );
}

#[test]
fn a_keeps_its_rate_while_b_floods() {
    let lab = setup();
    let (pa, pb) = (next_port(), next_port());
    let srv_a = IperfServer::start(&lab.topo.sub, addr_a(), pa).unwrap();
    let srv_b = IperfServer::start(&lab.topo.sub, addr_b(), pb).unwrap();
    let mut udp = IperfOpts::udp(addr_b(), pb, 6, 200_000_000);
    udp.bind = Some(IpAddr::V4(NET_V4));
    udp.len = Some(1400);
    let b = IperfClient::spawn(&lab.topo.net, &udp).unwrap();
    sleep(Duration::from_millis(500));
    let a = IperfClient::run(&lab.topo.net, &tcp_from_net(addr_a(), pa, 5)).unwrap();
    let b = b.wait().unwrap();
    let _ = srv_a.finish(Duration::from_secs(10));
    let _ = srv_b.finish(Duration::from_secs(10));
    let stats = lab.htb.stats().unwrap();
    eprintln!(
        "A (TCP) {:.1} Mbit/s; B (UDP, 200 Mbit/s offered) received {:.1} Mbit/s, lost {:?}/{:?}; \
         class 1:11 drops {}",
        a.mbps(),
        b.mbps(),
        b.lost_packets,
        b.packets,
        stats[&MINOR_B].drops
    );
    assert!(
        a.bits_per_second >= 30e6 * 0.95,
        "A got {:.1} Mbit/s while B flooded, want >= 28.5 (its committed rate x0.95)",
        a.mbps()
    );
    // Loose sanity: B was really flooding and got limited, not starved.
    assert!(
        stats[&MINOR_B].drops > 0,
        "B's class never dropped: {stats:?}"
    );
    assert!(
        b.bits_per_second >= 5e6,
        "B starved: {:.1} Mbit/s",
        b.mbps()
    );
}

#[test]
fn incremental_changes_do_not_disturb_others() {
    let mut lab = setup();
    let port = next_port();
    let srv = IperfServer::start(&lab.topo.sub, addr_b(), port).unwrap();
    let flow = IperfClient::spawn(&lab.topo.net, &tcp_from_net(addr_b(), port, 8)).unwrap();

    sleep(Duration::from_secs(2));
    let b1 = lab.htb.stats().unwrap()[&MINOR_B].bytes;

    // Change A in place; a second identical upsert is a no-op.
    let a2 = HtbClass::new(20_000_000, 80_000_000).with_prio(1);
    assert!(lab.htb.upsert_class(MINOR_A, a2.clone()).unwrap());
    assert!(!lab.htb.upsert_class(MINOR_A, a2).unwrap());
    // Add a third class, then remove it.
    assert!(
        lab.htb
            .upsert_class(MINOR_C, HtbClass::new(5_000_000, 50_000_000))
            .unwrap()
    );
    sleep(Duration::from_secs(1));
    let b2 = lab.htb.stats().unwrap()[&MINOR_B].bytes;
    lab.htb.remove_class(MINOR_C).unwrap();

    let rep = flow.wait().unwrap();
    let _ = srv.finish(Duration::from_secs(10));
    let stats = lab.htb.stats().unwrap();
    let b3 = stats[&MINOR_B].bytes;

    // The kernel has A's new parameters, no 1:12 any more, B untouched.
    let kernel = lab
        .topo
        .gw
        .run(["tc", "-d", "class", "show", "dev", GW_SUB_IF])
        .unwrap();
    let params = parse_class_params(&kernel);
    let find = |m: u16| params.iter().find(|(x, _)| *x == m).map(|(_, c)| c.clone());
    let ka = find(MINOR_A).expect("class 1:10 in kernel");
    assert_eq!(
        (ka.rate_bps, ka.ceil_bps, ka.prio),
        (20_000_000, 80_000_000, 1)
    );
    assert!(find(MINOR_C).is_none(), "1:12 still there:\n{kernel}");
    let kb = find(MINOR_B).expect("class 1:11 in kernel");
    assert_eq!((kb.rate_bps, kb.ceil_bps), (10_000_000, LINK_BPS));
    assert!(!stats.contains_key(&MINOR_C));

    let ivs: Vec<f64> = rep
        .intervals
        .iter()
        .filter(|(_, secs)| *secs >= 0.5)
        .map(|(bps, _)| *bps)
        .collect();
    let mean = ivs.iter().sum::<f64>() / ivs.len().max(1) as f64;
    eprintln!(
        "B flow {:.1} Mbit/s; intervals (Mbit/s) {:?}; class 1:11 bytes {b1} -> {b2} -> {b3}, \
         iperf3 received {} bytes",
        rep.mbps(),
        ivs.iter()
            .map(|b| (b / 1e5).round() / 10.0)
            .collect::<Vec<_>>(),
        rep.bytes
    );
    assert!(ivs.len() >= 6, "too few intervals: {:?}", rep.intervals);
    for (i, bps) in ivs.iter().enumerate() {
        assert!(
            *bps >= 0.5 * mean,
            "interval {i}: {:.1} Mbit/s < 50% of the mean {:.1}: B's flow was interrupted",
            bps / 1e6,
            mean / 1e6
        );
    }
    // Counter kept growing and covers the whole flow: the class was never rebuilt.
    assert!(
        b1 > 0 && b2 > b1 && b3 > b2,
        "B's counter: {b1} -> {b2} -> {b3}"
    );
    assert!(
        b3 >= rep.bytes,
        "B's class counter {b3} < bytes B received {}: counter was reset",
        rep.bytes
    );
}
