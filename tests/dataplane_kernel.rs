//! Kernel fixture tests: the real XDP/TC programs run through BPF_PROG_TEST_RUN on crafted
//! frames (PKTGEN), with maps seeded from Rust (SETUP), and the verdict, output bytes,
//! decision record and counters checked (CHECK). Outputs are parsed with etherparse, an
//! independent parser. Needs root (CAP_BPF); CI runs it as root.

mod common;

use common::pkt::{self, Ip, L2, L4};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use shaper::{
    abi,
    dataplane::{
        Build, Dataplane, DataplaneError, Limits, LoadOptions, Role,
        testrun::{XDP_DROP, XDP_PASS, XDP_TX},
    },
    policy::{ClassConfig, PolicyError, PortRange, Prefix, Rule, SubscriberKey},
};

const SUB4: &str = "198.18.0.10";
const NET4: &str = "198.19.0.2";
const SUB6: &str = "2001:db8::10";
const NET6: &str = "2001:db8:1::2";

fn limits() -> Limits {
    Limits {
        max_subscribers: 1024,
        max_classes: 256,
        max_rule_keys: 256,
        max_rule_entries: 256,
        max_flows: 1024,
    }
}

fn load() -> Dataplane {
    load_with(|_| {})
}

fn load_with(f: impl FnOnce(&mut LoadOptions)) -> Dataplane {
    let mut o = LoadOptions {
        build: Build::Test,
        limits: limits(),
        ..Default::default()
    };
    f(&mut o);
    Dataplane::load(o).expect("load test build (needs root)")
}

fn sub(addr: &str, len: u8) -> SubscriberKey {
    SubscriberKey {
        addr: addr.parse().unwrap(),
        len,
    }
}

fn class(dp: &mut Dataplane, id: u32, cfg: ClassConfig) {
    dp.upsert_class(id, &cfg).unwrap();
}

fn plain() -> ClassConfig {
    ClassConfig::default()
}

fn rule(
    id: u32,
    proto: Option<u8>,
    dst: &str,
    dlen: u8,
    dport: (u16, u16),
    precedence: u32,
    class: u32,
) -> Rule {
    let dst = Prefix {
        addr: dst.parse().unwrap(),
        len: dlen,
    };
    Rule {
        id,
        proto,
        src: if dst.is_v4() {
            Prefix::any_v4()
        } else {
            Prefix::any_v6()
        },
        dst,
        sport: PortRange::ANY,
        dport: PortRange {
            lo: dport.0,
            hi: dport.1,
        },
        precedence,
        class,
    }
}

/// Subscriber 198.18.0.10 (up class 1, down class 2) and 2001:db8::10/128 (3, 4).
fn with_subscribers() -> Dataplane {
    let mut dp = load();
    for id in 1..=4 {
        class(&mut dp, id, plain());
    }
    dp.upsert_subscriber(sub(SUB4, 32), [1, 2]).unwrap();
    dp.upsert_subscriber(sub(SUB6, 128), [3, 4]).unwrap();
    dp
}

#[test]
fn classifies_by_role_ipv4_ipv6_vlan_qinq_pppoe() {
    let dp = with_subscribers();
    let cases: Vec<(&str, Role, Vec<u8>, u32)> = vec![
        (
            "v4 from subscriber",
            Role::Subscriber,
            pkt::udp4(SUB4, NET4, 1000, 53, 20),
            1,
        ),
        (
            "v4 to subscriber",
            Role::Upstream,
            pkt::udp4(NET4, SUB4, 53, 1000, 20),
            2,
        ),
        (
            "v4 other host",
            Role::Subscriber,
            pkt::udp4("198.18.0.99", NET4, 1000, 53, 20),
            0,
        ),
        (
            "v6 from subscriber",
            Role::Subscriber,
            pkt::udp6(SUB6, NET6, 1000, 53, 20),
            3,
        ),
        (
            "v6 to subscriber",
            Role::Upstream,
            pkt::udp6(NET6, SUB6, 53, 1000, 20),
            4,
        ),
        (
            "802.1Q",
            Role::Subscriber,
            pkt::frame(
                &L2::Vlan(100),
                &Ip::v4(SUB4, NET4),
                &L4::Udp { sport: 1, dport: 2 },
                10,
            ),
            1,
        ),
        (
            "QinQ",
            Role::Subscriber,
            pkt::frame(
                &L2::QinQ(10, 20),
                &Ip::v6(SUB6, NET6),
                &L4::Udp { sport: 1, dport: 2 },
                10,
            ),
            3,
        ),
        (
            "PPPoE v4",
            Role::Upstream,
            pkt::frame(
                &L2::Pppoe(7),
                &Ip::v4(NET4, SUB4),
                &L4::Tcp {
                    sport: 80,
                    dport: 999,
                    flags: 0x10,
                    options: vec![],
                },
                10,
            ),
            2,
        ),
        (
            "PPPoE v6",
            Role::Subscriber,
            pkt::frame(
                &L2::Pppoe(7),
                &Ip::v6(SUB6, NET6),
                &L4::Icmp { ty: 128, code: 0 },
                10,
            ),
            3,
        ),
    ];
    for (what, role, frame, want) in cases {
        let run = dp.run_xdp(role, &frame, 1).unwrap();
        let rec = dp.last_record().unwrap();
        assert_eq!(rec.parse, abi::PARSE_OK, "{what}");
        assert_eq!(rec.sub_class, want, "{what}");
        assert_eq!(run.action, XDP_PASS, "{what}");
        assert_eq!(run.output, frame, "{what}: untouched");
    }
}

#[test]
fn ipv6_slash64_subscriber_is_found_after_the_128_miss() {
    let mut dp = load();
    class(&mut dp, 9, plain());
    dp.upsert_subscriber(sub("2001:db8:0:5::", 64), [9, 9])
        .unwrap();
    dp.run_xdp(
        Role::Subscriber,
        &pkt::udp6("2001:db8:0:5::abcd", NET6, 1, 2, 0),
        1,
    )
    .unwrap();
    assert_eq!(dp.last_record().unwrap().sub_class, 9);
    dp.run_xdp(
        Role::Subscriber,
        &pkt::udp6("2001:db8:0:6::abcd", NET6, 1, 2, 0),
        1,
    )
    .unwrap();
    assert_eq!(dp.last_record().unwrap().sub_class, 0);
}

#[test]
fn rule_precedence_and_port_ranges() {
    let mut dp = with_subscribers();
    for id in 10..=13 {
        class(&mut dp, id, plain());
    }
    dp.set_rules(&[
        rule(1, Some(17), NET4, 32, (5000, 5999), 20, 10),
        rule(2, Some(17), "198.19.0.0", 16, (5500, 5500), 10, 11),
        rule(3, None, "198.19.0.0", 24, (0, 65535), 30, 12),
        rule(4, Some(6), NET6, 128, (443, 443), 5, 13),
    ])
    .unwrap();
    let cases = [
        (pkt::udp4(SUB4, NET4, 1, 5000, 0), 1, 10),
        (pkt::udp4(SUB4, NET4, 1, 5999, 0), 1, 10),
        (pkt::udp4(SUB4, NET4, 1, 5500, 0), 2, 11), // both match: precedence 10 beats 20
        (pkt::udp4(SUB4, NET4, 1, 6000, 0), 3, 12), // only the any-protocol /24
        (pkt::udp4(SUB4, NET4, 1, 4999, 0), 3, 12),
        (pkt::udp4(SUB4, "198.19.1.1", 1, 5500, 0), 2, 11),
        (pkt::udp4(SUB4, "198.20.0.1", 1, 5500, 0), 0, 0),
        (
            pkt::frame(
                &L2::Eth,
                &Ip::v6(SUB6, NET6),
                &L4::Tcp {
                    sport: 9,
                    dport: 443,
                    flags: 0x10,
                    options: vec![],
                },
                0,
            ),
            4,
            13,
        ),
        (
            pkt::frame(
                &L2::Eth,
                &Ip::v6(SUB6, NET6),
                &L4::Tcp {
                    sport: 9,
                    dport: 444,
                    flags: 0x10,
                    options: vec![],
                },
                0,
            ),
            0,
            0,
        ),
    ];
    for (i, (frame, rule_id, class_id)) in cases.iter().enumerate() {
        dp.run_xdp(Role::Subscriber, frame, 1).unwrap();
        let rec = dp.last_record().unwrap();
        assert_eq!(
            (rec.rule_id, rec.rule_class),
            (*rule_id, *class_id),
            "case {i}"
        );
        assert_ne!(rec.sub_class, 0, "case {i}: subscriber still classified");
    }
    // Replacing the set is atomic and drops the old rules.
    dp.set_rules(&[rule(5, Some(17), NET4, 32, (1, 65535), 1, 11)])
        .unwrap();
    dp.run_xdp(Role::Subscriber, &pkt::udp4(SUB4, NET4, 1, 5000, 0), 1)
        .unwrap();
    assert_eq!(dp.last_record().unwrap().rule_id, 5);
    dp.set_rules(&[]).unwrap();
    dp.run_xdp(Role::Subscriber, &pkt::udp4(SUB4, NET4, 1, 5000, 0), 1)
        .unwrap();
    assert_eq!(dp.last_record().unwrap().rule_id, 0);
}

#[test]
fn police_conform_exceed_refill() {
    let mut dp = load();
    // 8 Mbit/s = 1 byte/µs; burst 3000 bytes = 3 ms.
    class(
        &mut dp,
        1,
        ClassConfig {
            rate_bps: Some(8_000_000),
            burst_bytes: 3000,
            ..plain()
        },
    );
    dp.upsert_subscriber(sub(SUB4, 32), [1, 0]).unwrap();
    let f = pkt::udp4(SUB4, NET4, 1, 2, 972); // L3 length 1000
    let t0 = 1_000_000_000u64;
    dp.set_test_clock(t0).unwrap();
    let mut verdicts = Vec::new();
    for _ in 0..4 {
        verdicts.push(dp.run_xdp(Role::Subscriber, &f, 1).unwrap().action);
    }
    assert_eq!(
        verdicts,
        [XDP_PASS, XDP_PASS, XDP_PASS, XDP_DROP],
        "burst of 3000 bytes"
    );
    assert_eq!(dp.last_record().unwrap().drop_reason, abi::DROP_POLICE_SUB);
    // 999 µs later the bucket holds 999 bytes: not enough for 1000.
    dp.set_test_clock(t0 + 999_000).unwrap();
    assert_eq!(
        dp.run_xdp(Role::Subscriber, &f, 1).unwrap().action,
        XDP_DROP
    );
    dp.set_test_clock(t0 + 1_000_000).unwrap();
    assert_eq!(
        dp.run_xdp(Role::Subscriber, &f, 1).unwrap().action,
        XDP_PASS
    );
    // Long idle: the bucket refills only to the burst.
    dp.set_test_clock(t0 + 10_000_000_000).unwrap();
    let passed = (0..5)
        .filter(|_| dp.run_xdp(Role::Subscriber, &f, 1).unwrap().action == XDP_PASS)
        .count();
    assert_eq!(passed, 3);
    let st = dp.class_stats(1).unwrap();
    assert_eq!(st.pkts, 11);
    assert_eq!(st.bytes, 11_000);
    assert_eq!(st.drop_police, 4);
    // The downstream direction has no class: not policed.
    assert_eq!(
        dp.run_xdp(Role::Upstream, &pkt::udp4(NET4, SUB4, 1, 2, 972), 1)
            .unwrap()
            .action,
        XDP_PASS
    );
}

#[test]
fn rule_and_subscriber_buckets_cascade() {
    let mut dp = load();
    class(
        &mut dp,
        1,
        ClassConfig {
            rate_bps: Some(8_000_000),
            burst_bytes: 2000,
            ..plain()
        },
    );
    class(
        &mut dp,
        2,
        ClassConfig {
            rate_bps: Some(8_000_000),
            burst_bytes: 5000,
            ..plain()
        },
    );
    dp.upsert_subscriber(sub(SUB4, 32), [2, 0]).unwrap();
    dp.set_rules(&[rule(1, Some(17), NET4, 32, (53, 53), 1, 1)])
        .unwrap();
    dp.set_test_clock(5_000_000_000).unwrap();
    let dns = pkt::udp4(SUB4, NET4, 1, 53, 972);
    let other = pkt::udp4(SUB4, NET4, 1, 80, 972);
    let v: Vec<u32> = (0..3)
        .map(|_| dp.run_xdp(Role::Subscriber, &dns, 1).unwrap().action)
        .collect();
    assert_eq!(v, [XDP_PASS, XDP_PASS, XDP_DROP]);
    assert_eq!(dp.last_record().unwrap().drop_reason, abi::DROP_POLICE_RULE);
    // The subscriber bucket paid for the two rule packets too: 3000 bytes left.
    let v: Vec<u32> = (0..4)
        .map(|_| dp.run_xdp(Role::Subscriber, &other, 1).unwrap().action)
        .collect();
    assert_eq!(v, [XDP_PASS, XDP_PASS, XDP_PASS, XDP_DROP]);
    assert_eq!(dp.last_record().unwrap().drop_reason, abi::DROP_POLICE_SUB);
}

fn ipv4_of(out: &[u8]) -> etherparse::Ipv4Header {
    match SlicedPacket::from_ethernet(out).unwrap().net.unwrap() {
        NetSlice::Ipv4(v4) => v4.header().to_header(),
        other => panic!("not IPv4: {other:?}"),
    }
}

#[test]
fn dscp_remark_keeps_ecn_and_checksum() {
    let mut dp = load();
    class(
        &mut dp,
        1,
        ClassConfig {
            dscp: Some(46),
            ..plain()
        },
    );
    class(
        &mut dp,
        2,
        ClassConfig {
            dscp: Some(10),
            ..plain()
        },
    );
    dp.upsert_subscriber(sub(SUB4, 32), [1, 0]).unwrap();
    dp.upsert_subscriber(sub(SUB6, 128), [2, 0]).unwrap();
    for ecn in 0..4u8 {
        let mut ip = Ip::v4(SUB4, NET4);
        ip.tos = (8 << 2) | ecn;
        let f = pkt::frame(&L2::Vlan(5), &ip, &L4::Udp { sport: 1, dport: 2 }, 30);
        let out = dp.run_xdp(Role::Subscriber, &f, 1).unwrap().output;
        let hdr = ipv4_of(&out);
        assert_eq!(hdr.dscp.value(), 46);
        assert_eq!(hdr.ecn.value(), ecn);
        assert_eq!(
            hdr.header_checksum,
            hdr.calc_header_checksum(),
            "IPv4 checksum after remark"
        );
        assert_eq!(out.len(), f.len());
    }
    let mut ip = Ip::v6(SUB6, NET6);
    ip.tos = (3 << 2) | 1;
    let f = pkt::frame(&L2::Eth, &ip, &L4::Udp { sport: 1, dport: 2 }, 30);
    let out = dp.run_xdp(Role::Subscriber, &f, 1).unwrap().output;
    match SlicedPacket::from_ethernet(&out).unwrap().net.unwrap() {
        NetSlice::Ipv6(v6) => {
            let h = v6.header();
            assert_eq!(h.traffic_class(), (10 << 2) | 1);
            assert_eq!(h.flow_label().value(), 0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(dp.class_stats(2).unwrap().dscp_marked, 1);
    // Already marked: unchanged, not counted.
    let mut ip = Ip::v4(SUB4, NET4);
    ip.tos = 46 << 2;
    let f = pkt::frame(&L2::Eth, &ip, &L4::Udp { sport: 1, dport: 2 }, 30);
    assert_eq!(dp.run_xdp(Role::Subscriber, &f, 1).unwrap().output, f);
    assert_eq!(dp.class_stats(1).unwrap().dscp_marked, 4);
}

fn tcp_of(out: &[u8]) -> (etherparse::TcpHeader, Vec<u8>, u16) {
    let p = SlicedPacket::from_ethernet(out).unwrap();
    let TransportSlice::Tcp(t) = p.transport.unwrap() else {
        panic!("not tcp")
    };
    let calc = match p.net.unwrap() {
        NetSlice::Ipv4(v4) => t
            .to_header()
            .calc_checksum_ipv4(&v4.header().to_header(), t.payload())
            .unwrap(),
        NetSlice::Ipv6(v6) => t
            .to_header()
            .calc_checksum_ipv6(&v6.header().to_header(), t.payload())
            .unwrap(),
    };
    (t.to_header(), t.payload().to_vec(), calc)
}

fn mss_of(h: &etherparse::TcpHeader) -> Option<u16> {
    h.options_iterator().find_map(|o| match o {
        Ok(etherparse::TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
        _ => None,
    })
}

#[test]
fn mss_clamp_lowers_never_raises_and_keeps_checksums() {
    let mut dp = load();
    class(
        &mut dp,
        1,
        ClassConfig {
            mtu: Some(1280),
            ..plain()
        },
    );
    dp.upsert_subscriber(sub(SUB4, 32), [1, 1]).unwrap();
    dp.upsert_subscriber(sub(SUB6, 128), [1, 1]).unwrap();
    // (ip, mss in, nops before the option, flags, mss out)
    let cases = [
        (Ip::v4(SUB4, NET4), 1460, 0, 0x02, 1240),
        (Ip::v4(SUB4, NET4), 1460, 1, 0x02, 1240), // option at an odd offset
        (Ip::v4(SUB4, NET4), 1460, 3, 0x12, 1240), // SYN-ACK
        (Ip::v4(SUB4, NET4), 1000, 0, 0x02, 1000), // never raised
        (Ip::v4(SUB4, NET4), 1460, 0, 0x10, 1460), // not a SYN
        (Ip::v6(SUB6, NET6), 1440, 0, 0x02, 1220),
        (Ip::v6(SUB6, NET6), 1440, 1, 0x02, 1220),
    ];
    for (i, (ip, mss, nops, flags, want)) in cases.into_iter().enumerate() {
        let f = pkt::frame(
            &L2::Eth,
            &ip,
            &L4::Tcp {
                sport: 40000,
                dport: 80,
                flags,
                options: pkt::mss_options(mss, nops),
            },
            0,
        );
        // XDP ingress leaves the SYN alone; TC egress on the upstream side (the SYN leaves
        // the gateway there) clamps it.
        let xdp = dp.run_xdp(Role::Subscriber, &f, 1).unwrap().output;
        assert_eq!(xdp, f, "case {i}: XDP does not clamp");
        let out = dp.run_tc(Role::Upstream, &f).unwrap().output;
        let (h, _, calc) = tcp_of(&out);
        assert_eq!(mss_of(&h), Some(want), "case {i}");
        assert_eq!(h.checksum, calc, "case {i}: TCP checksum");
        if want == mss {
            assert_eq!(out, f, "case {i}: untouched");
        }
    }
    assert_eq!(dp.class_stats(1).unwrap().mss_clamped, 5);
}

#[test]
fn oversize_df_gets_frag_needed_and_ipv6_gets_packet_too_big() {
    let mut dp = load();
    class(
        &mut dp,
        1,
        ClassConfig {
            mtu: Some(1280),
            ..plain()
        },
    );
    dp.upsert_subscriber(sub(SUB4, 32), [1, 1]).unwrap();
    dp.upsert_subscriber(sub(SUB6, 128), [1, 1]).unwrap();

    for l2 in [L2::Eth, L2::QinQ(3, 4), L2::Pppoe(9)] {
        let mut ip = Ip::v4(SUB4, NET4);
        ip.df = true;
        let f = pkt::frame(&l2, &ip, &L4::Udp { sport: 1, dport: 2 }, 1400 - 28);
        let run = dp.run_xdp(Role::Subscriber, &f, 1).unwrap();
        assert_eq!(run.action, XDP_TX, "{l2:?}");
        let out = &run.output;
        assert_eq!(out[..6], pkt::MAC_A, "answer goes back to the sender");
        assert_eq!(out[6..12], pkt::MAC_B);
        let l2len = match l2 {
            L2::Eth => 14,
            L2::QinQ(..) => 22,
            L2::Pppoe(_) => 22,
            L2::Vlan(_) => 18,
        };
        let mut want_l2 = f[12..l2len].to_vec();
        if let L2::Pppoe(_) = l2 {
            want_l2[6..8].copy_from_slice(&(20u16 + 8 + 28 + 2).to_be_bytes());
        }
        assert_eq!(
            out[12..l2len],
            want_l2[..],
            "tags, ethertype and PPPoE header kept (length rewritten)"
        );
        assert_eq!(out.len(), l2len + 20 + 8 + 28);
        let p = SlicedPacket::from_ip(&out[l2len..]).unwrap();
        let NetSlice::Ipv4(v4) = p.net.as_ref().unwrap() else {
            panic!()
        };
        let h = v4.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(
            h.source,
            NET4.parse::<std::net::Ipv4Addr>().unwrap().octets()
        );
        assert_eq!(
            h.destination,
            SUB4.parse::<std::net::Ipv4Addr>().unwrap().octets()
        );
        let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
            panic!("{l2:?}: not icmp")
        };
        assert_eq!(
            icmp.icmp_type(),
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1280
                }
            )
        );
        assert_eq!(
            icmp.checksum(),
            icmp.header().icmp_type.calc_checksum(icmp.payload())
        );
        // The quote is the offending header + 8 bytes.
        let l3 = &f[l2len..];
        assert_eq!(icmp.payload(), &l3[..28]);
    }
    // Without DF the stack may fragment: passed untouched, not counted as a drop.
    let f = pkt::udp4(SUB4, NET4, 1, 2, 1400 - 28);
    assert_eq!(
        dp.run_xdp(Role::Subscriber, &f, 1).unwrap().action,
        XDP_PASS
    );
    // At the MTU exactly: passes.
    let mut ip = Ip::v4(SUB4, NET4);
    ip.df = true;
    let f = pkt::frame(&L2::Eth, &ip, &L4::Udp { sport: 1, dport: 2 }, 1280 - 28);
    assert_eq!(
        dp.run_xdp(Role::Subscriber, &f, 1).unwrap().action,
        XDP_PASS
    );

    let f = pkt::udp6(SUB6, NET6, 1, 2, 1400);
    let run = dp.run_xdp(Role::Subscriber, &f, 1).unwrap();
    assert_eq!(run.action, XDP_TX);
    assert_eq!(run.output.len(), 14 + 1280);
    let p = SlicedPacket::from_ethernet(&run.output).unwrap();
    let NetSlice::Ipv6(v6) = p.net.as_ref().unwrap() else {
        panic!()
    };
    let h6 = v6.header().to_header();
    assert_eq!(
        h6.source,
        NET6.parse::<std::net::Ipv6Addr>().unwrap().octets()
    );
    let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
        panic!("not icmpv6")
    };
    assert_eq!(
        icmp.icmp_type(),
        etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 }
    );
    let calc = icmp
        .header()
        .icmp_type
        .calc_checksum(h6.source, h6.destination, icmp.payload())
        .unwrap();
    assert_eq!(icmp.checksum(), calc);
    assert_eq!(icmp.payload(), &f[14..14 + 1232]);

    // An ICMP error is never answered with an ICMP error.
    let mut ip = Ip::v4(SUB4, NET4);
    ip.df = true;
    let f = pkt::frame(&L2::Eth, &ip, &L4::Icmp { ty: 3, code: 1 }, 1400);
    assert_eq!(
        dp.run_xdp(Role::Subscriber, &f, 1).unwrap().action,
        XDP_DROP
    );
    let st = dp.class_stats(1).unwrap();
    assert_eq!((st.icmp_sent, st.drop_mtu), (4, 5));
}

#[test]
fn truncated_and_malformed_are_counted_never_classified() {
    let mut dp = with_subscribers();
    dp.set_rules(&[rule(1, None, "198.19.0.0", 16, (0, 65535), 1, 1)])
        .unwrap();
    let good = pkt::udp4(SUB4, NET4, 1, 2, 40);
    let tcp = pkt::frame(
        &L2::Eth,
        &Ip::v4(SUB4, NET4),
        &L4::Tcp {
            sport: 1,
            dport: 2,
            flags: 2,
            options: vec![],
        },
        0,
    );
    let mut bad_ver = good.clone();
    bad_ver[14] = 0x55;
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    let mut long_tot = good.clone();
    long_tot[16] = 0x05;
    let mut bad_doff = tcp.clone();
    bad_doff[14 + 20 + 12] = 0x40;
    let v6 = pkt::udp6(SUB6, NET6, 1, 2, 10);
    let mut pppoe = pkt::frame(
        &L2::Pppoe(1),
        &Ip::v4(SUB4, NET4),
        &L4::Udp { sport: 1, dport: 2 },
        10,
    );
    pppoe[14 + 4] = 0xff; // PPPoE length past the frame
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        // (Frames shorter than 14 bytes cannot be fed to BPF_PROG_TEST_RUN; the model's tests
        // cover PE_ETH.)
        (
            "vlan",
            pkt::frame(&L2::Vlan(1), &Ip::v4(SUB4, NET4), &L4::Other, 0)[..16].to_vec(),
            abi::PE_VLAN,
        ),
        ("ipv4 short", good[..30].to_vec(), abi::PE_IPV4),
        ("ipv4 version", bad_ver, abi::PE_IPV4),
        ("ipv4 ihl", bad_ihl, abi::PE_IPV4),
        ("ipv4 total length", long_tot, abi::PE_IPV4),
        ("udp cut", good[..14 + 20 + 4].to_vec(), abi::PE_IPV4),
        ("tcp doff", bad_doff, abi::PE_L4),
        ("ipv6 short", v6[..50].to_vec(), abi::PE_IPV6),
        ("pppoe length", pppoe, abi::PE_PPPOE),
    ];
    for (what, f, pe) in &cases {
        let run = dp.run_xdp(Role::Subscriber, f, 1).unwrap();
        let rec = dp.last_record().unwrap();
        assert_eq!(
            (rec.parse, rec.parse_err),
            (abi::PARSE_MALFORMED, *pe),
            "{what}"
        );
        assert_eq!((rec.sub_class, rec.rule_class), (0, 0), "{what}");
        assert_eq!(run.action, XDP_PASS, "{what}: fail-open by default");
        assert_eq!(&run.output, f, "{what}");
    }
    let gs = dp.global_stats().unwrap();
    assert_eq!(gs.v[abi::gs::MALFORMED], cases.len() as u64);

    let dp = load_with(|o| o.malformed_drop = true);
    let run = dp.run_xdp(Role::Subscriber, &good[..30], 1).unwrap();
    assert_eq!(run.action, XDP_DROP);
    assert_eq!(dp.last_record().unwrap().drop_reason, abi::DROP_MALFORMED);
}

#[test]
fn non_ip_passes_and_three_vlan_tags_are_unsupported() {
    let dp = with_subscribers();
    let mut arp = vec![0xffu8; 6];
    arp.extend(pkt::MAC_A);
    arp.extend([0x08, 0x06]);
    arp.extend([0u8; 28]);
    assert_eq!(
        dp.run_xdp(Role::Subscriber, &arp, 1).unwrap().action,
        XDP_PASS
    );
    assert_eq!(dp.last_record().unwrap().parse, abi::PARSE_NON_IP);
    let mut f = pkt::frame(
        &L2::QinQ(1, 2),
        &Ip::v4(SUB4, NET4),
        &L4::Udp { sport: 1, dport: 2 },
        0,
    );
    f.splice(12..12, [0x81, 0x00, 0x00, 0x03]);
    assert_eq!(
        dp.run_xdp(Role::Subscriber, &f, 1).unwrap().action,
        XDP_PASS
    );
    assert_eq!(dp.last_record().unwrap().parse, abi::PARSE_UNSUPPORTED);
}

#[test]
fn fail_closed_drops_what_no_policy_covers() {
    let mut dp = load_with(|o| o.fail_closed = true);
    class(&mut dp, 1, plain());
    dp.upsert_subscriber(sub(SUB4, 32), [1, 1]).unwrap();
    assert_eq!(
        dp.run_xdp(Role::Subscriber, &pkt::udp4(SUB4, NET4, 1, 2, 0), 1)
            .unwrap()
            .action,
        XDP_PASS
    );
    assert_eq!(
        dp.run_xdp(
            Role::Subscriber,
            &pkt::udp4("198.18.0.11", NET4, 1, 2, 0),
            1
        )
        .unwrap()
        .action,
        XDP_DROP
    );
    assert_eq!(dp.last_record().unwrap().drop_reason, abi::DROP_FAIL_CLOSED);
}

#[test]
fn block_class_drops_everything() {
    let mut dp = load();
    class(
        &mut dp,
        1,
        ClassConfig {
            block: true,
            ..plain()
        },
    );
    dp.upsert_subscriber(sub(SUB4, 32), [1, 1]).unwrap();
    assert_eq!(
        dp.run_xdp(Role::Upstream, &pkt::udp4(NET4, SUB4, 1, 2, 0), 1)
            .unwrap()
            .action,
        XDP_DROP
    );
    assert_eq!(dp.class_stats(1).unwrap().drop_block, 1);
}

#[test]
fn tc_egress_sets_skb_priority_rule_first() {
    let mut dp = load();
    class(
        &mut dp,
        1,
        ClassConfig {
            skb_priority: 0x0001_0010,
            ..plain()
        },
    );
    class(
        &mut dp,
        2,
        ClassConfig {
            skb_priority: 0x0001_0020,
            ..plain()
        },
    );
    class(&mut dp, 3, plain());
    dp.upsert_subscriber(sub(SUB4, 32), [0, 1]).unwrap();
    dp.set_rules(&[
        rule(1, Some(17), SUB4, 32, (5004, 5004), 1, 2),
        rule(2, Some(17), SUB4, 32, (6000, 6000), 2, 3),
    ])
    .unwrap();
    assert_eq!(
        dp.run_tc(Role::Subscriber, &pkt::udp4(NET4, SUB4, 9, 80, 10))
            .unwrap()
            .priority,
        0x0001_0010
    );
    assert_eq!(
        dp.run_tc(Role::Subscriber, &pkt::udp4(NET4, SUB4, 9, 5004, 10))
            .unwrap()
            .priority,
        0x0001_0020
    );
    // A rule class without a priority falls back to the subscriber's.
    assert_eq!(
        dp.run_tc(Role::Subscriber, &pkt::udp4(NET4, SUB4, 9, 6000, 10))
            .unwrap()
            .priority,
        0x0001_0010
    );
    // Upload direction: the subscriber has no up class.
    assert_eq!(
        dp.run_tc(Role::Upstream, &pkt::udp4(SUB4, NET4, 9, 80, 10))
            .unwrap()
            .priority,
        0
    );
}

#[test]
fn invalid_updates_are_refused_and_change_nothing() {
    let mut dp = load();
    class(
        &mut dp,
        1,
        ClassConfig {
            rate_bps: Some(1_000_000),
            burst_bytes: 1500,
            ..plain()
        },
    );
    dp.upsert_subscriber(sub(SUB4, 32), [1, 1]).unwrap();
    let zero = ClassConfig {
        rate_bps: Some(0),
        burst_bytes: 1500,
        ..plain()
    };
    assert!(matches!(
        dp.upsert_class(1, &zero),
        Err(DataplaneError::Policy(PolicyError::RateTooLow { .. }))
    ));
    let small = ClassConfig {
        rate_bps: Some(1_000_000),
        burst_bytes: 100,
        ..plain()
    };
    let e = dp.upsert_class(1, &small).unwrap_err();
    assert_eq!(
        e.to_string(),
        "class 1: burst 100 bytes is smaller than one MTU (1500 bytes)"
    );
    assert_eq!(dp.class(1).unwrap().burst_bytes, 1500, "unchanged");
    // Overlapping rules with equal precedence: refused, the old set stays.
    dp.set_rules(&[rule(7, Some(17), NET4, 32, (1, 100), 3, 1)])
        .unwrap();
    let e = dp
        .set_rules(&[
            rule(1, Some(17), NET4, 32, (1, 100), 5, 1),
            rule(2, Some(17), "198.19.0.0", 24, (50, 60), 5, 1),
        ])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "rules 1 and 2 overlap and share precedence 5"
    );
    dp.run_xdp(Role::Subscriber, &pkt::udp4(SUB4, NET4, 1, 50, 0), 1)
        .unwrap();
    assert_eq!(
        dp.last_record().unwrap().rule_id,
        7,
        "old rule set still in force"
    );
    // A rule pointing at a class that does not exist.
    let e = dp
        .set_rules(&[rule(3, Some(17), NET4, 32, (1, 1), 1, 99)])
        .unwrap_err();
    assert_eq!(e.to_string(), "rule 3: class 99 does not exist");
    // Unknown interface.
    let e = dp.attach_xdp("no-such-if0", Role::Subscriber).unwrap_err();
    assert_eq!(e.to_string(), "unknown interface \"no-such-if0\"");
    // More subscribers than the map holds: refused whole.
    let batch: Vec<_> = (0..1100u32)
        .map(|i| {
            (
                SubscriberKey {
                    addr: std::net::Ipv4Addr::from(0xc612_0000 + i).into(),
                    len: 32,
                },
                [1, 1],
            )
        })
        .collect();
    let e = dp.upsert_subscribers(&batch).unwrap_err();
    assert!(
        matches!(
            e,
            DataplaneError::Full {
                map: "shaper_sub_slots",
                max: 1024,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(dp.subscriber_count(), 1, "nothing of the batch was written");
    // Unknown class for a subscriber; bad key length.
    assert!(matches!(
        dp.upsert_subscriber(sub(SUB4, 32), [42, 0]),
        Err(DataplaneError::UnknownClass(42))
    ));
    assert!(matches!(
        dp.upsert_subscriber(sub(SUB4, 24), [1, 0]),
        Err(DataplaneError::BadSubscriberKey { .. })
    ));
    // A class in use cannot be deleted.
    assert!(matches!(
        dp.delete_class(1),
        Err(DataplaneError::ClassInUse { class: 1, .. })
    ));
}

#[test]
fn kernel_events_reach_the_ring_buffer() {
    let mut dp = with_subscribers();
    let mut rb = dp.take_events().expect("ring buffer");
    let good = pkt::udp4(SUB4, NET4, 1, 2, 40);
    dp.run_xdp(Role::Subscriber, &good[..30], 1).unwrap();
    let item = rb.next().expect("an event for the malformed packet");
    let ev: abi::ShaperEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
    assert_eq!((ev.kind, ev.detail), (abi::EV_MALFORMED, abi::PE_IPV4));
    assert!(ev.ts_ns > 0);
    drop(item);
    // Rate limit: a second malformed packet within a millisecond is counted, not reported.
    dp.run_xdp(Role::Subscriber, &good[..30], 1).unwrap();
    assert!(rb.next().is_none());
    assert_eq!(dp.global_stats().unwrap().v[abi::gs::MALFORMED], 2);
}

#[test]
fn pinned_maps_are_reused_and_checked() {
    let root = std::path::PathBuf::from(format!("/sys/fs/bpf/shaper-kt-{}", std::process::id()));
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(root.clone());
    let opts = |l: Limits| LoadOptions {
        pin_root: Some(root.clone()),
        limits: l,
        build: Build::Test,
        ..Default::default()
    };
    {
        let mut a = Dataplane::load(opts(limits())).unwrap();
        a.upsert_class(
            3,
            &ClassConfig {
                rate_bps: Some(5_000_000),
                burst_bytes: 9000,
                ..plain()
            },
        )
        .unwrap();
        a.upsert_subscriber(sub(SUB4, 32), [3, 0]).unwrap();
        assert!(
            root.join(format!("v{}/maps/shaper_sub_slots", abi::ABI_VERSION))
                .exists()
        );
    }
    // A second controller finds the state the first left.
    let b = Dataplane::load(opts(limits())).unwrap();
    assert_eq!(b.class(3).unwrap().rate_bps, Some(5_000_000));
    assert_eq!(b.subscriber_count(), 1);
    b.run_xdp(Role::Subscriber, &pkt::udp4(SUB4, NET4, 1, 2, 0), 1)
        .unwrap();
    assert_eq!(b.last_record().unwrap().sub_class, 3);
    // While it lives, no other data plane loads on the same pins.
    let busy = Dataplane::load(opts(limits())).unwrap_err().to_string();
    assert!(
        busy.contains("another shaper process")
            && busy.contains(&format!("pid {}", std::process::id()))
            && busy.contains(&*root.to_string_lossy()),
        "{busy}"
    );
    drop(b);
    // A build with other map sizes must not silently reuse them.
    let e = Dataplane::load(opts(Limits {
        max_subscribers: 2048,
        ..limits()
    }))
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("shaper_subs_v4") && msg.contains("max entries: pinned 1024, expected 2048"),
        "{msg}"
    );
}

/// Classes are written through the mapped class array: a rate change reaches the running
/// program with no map update syscall, and the bucket state (`tat`), which the kernel owns,
/// is kept across it. A deleted class's id starts afresh when reused.
#[test]
fn class_change_through_the_mapping_reaches_the_kernel_and_keeps_tat() {
    let mut dp = load();
    // 8 Mbit/s = 1 byte/µs, burst 3000 bytes = 3 ms; one bucket shared by the class's users.
    let at = |rate_bps| ClassConfig {
        rate_bps: Some(rate_bps),
        burst_bytes: 3000,
        shared_bucket: true,
        ..plain()
    };
    class(&mut dp, 1, at(8_000_000));
    dp.upsert_subscriber(sub(SUB4, 32), [1, 0]).unwrap();
    let f = pkt::udp4(SUB4, NET4, 1, 2, 972); // L3 length 1000
    let t0 = 1_000_000_000u64;
    dp.set_test_clock(t0).unwrap();
    let send = |dp: &Dataplane, n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| dp.run_xdp(Role::Subscriber, &f, 1).unwrap().action)
            .collect()
    };
    assert_eq!(send(&dp, 2), [XDP_PASS, XDP_PASS]);
    // Two packets of 1 ms each: the class's bucket is 2 ms ahead.
    assert_eq!(dp.class_tat(1).unwrap(), t0 + 2_000_000);

    // Half the rate: 2 µs per byte, and the same 3000 bytes of burst are now 6 ms deep.
    class(&mut dp, 1, at(4_000_000));
    let raw = dp.class_raw(1).unwrap();
    assert_eq!(raw.tat, t0 + 2_000_000, "the change kept the bucket state");
    assert_eq!(raw.rate_bps, 4_000_000);
    assert_eq!(raw.burst_ns, 6_000_000);
    assert_ne!(raw.flags & abi::CLASS_F_SHARED, 0);
    // Seen by the program: at the old rate the next two would be [PASS, DROP] (3 ms of
    // burst); at the new one the bucket is 2 of 6 ms full and two 2-ms packets still fit.
    assert_eq!(send(&dp, 3), [XDP_PASS, XDP_PASS, XDP_DROP]);
    assert_eq!(dp.last_record().unwrap().drop_reason, abi::DROP_POLICE_SUB);
    assert_eq!(dp.class_tat(1).unwrap(), t0 + 6_000_000);
    // Rewriting the same configuration (as restart reconciliation does) keeps it too.
    class(&mut dp, 1, at(4_000_000));
    assert_eq!(dp.class_tat(1).unwrap(), t0 + 6_000_000);
    // A block flag is seen at once.
    class(
        &mut dp,
        1,
        ClassConfig {
            block: true,
            ..at(4_000_000)
        },
    );
    assert_eq!(send(&dp, 1), [XDP_DROP]);
    assert_eq!(dp.last_record().unwrap().drop_reason, abi::DROP_BLOCK);

    // Deleted: everything zeroed, tat included, and the program no longer finds the class.
    dp.delete_subscriber(&sub(SUB4, 32)).unwrap();
    dp.delete_class(1).unwrap();
    assert_eq!(dp.class_raw(1).unwrap(), abi::ClassEntry::default());
    // Reused: a fresh bucket (3 ms of burst at the old 8 Mbit/s).
    class(&mut dp, 1, at(8_000_000));
    dp.upsert_subscriber(sub(SUB4, 32), [1, 0]).unwrap();
    assert_eq!(send(&dp, 4), [XDP_PASS, XDP_PASS, XDP_PASS, XDP_DROP]);
    // Outside the array: refused, as before.
    let e = dp.upsert_class(limits().max_classes, &plain()).unwrap_err();
    assert!(
        matches!(
            e,
            DataplaneError::Policy(PolicyError::ClassOutOfRange {
                class: 256,
                max: 256
            })
        ),
        "{e}"
    );
}

/// A pinned class array created without `BPF_F_MMAPABLE` (as by a build before ABI 3, or by
/// hand) cannot be written through a mapping: the loader refuses it, naming map and flag.
/// The map this build creates has the flag.
#[test]
fn pinned_classes_map_without_mmapable_is_refused() {
    use aya::maps::{Array, MapData, MapInfo};
    let root =
        std::path::PathBuf::from(format!("/sys/fs/bpf/shaper-kt-mmap-{}", std::process::id()));
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(root.clone());
    let opts = || LoadOptions {
        pin_root: Some(root.clone()),
        limits: limits(),
        build: Build::Test,
        ..Default::default()
    };
    shaper::dataplane::ensure_bpffs().unwrap();
    let maps = root.join(format!("v{}/maps", abi::ABI_VERSION));
    std::fs::create_dir_all(&maps).unwrap();
    let path = maps.join("shaper_classes");
    // Right type, key, value and size; only the flag is missing.
    Array::<MapData, abi::ClassEntry>::create(limits().max_classes, 0)
        .unwrap()
        .pin(&path)
        .unwrap();
    let e = Dataplane::load(opts()).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            DataplaneError::PinnedMismatch {
                what: "map flags",
                ..
            }
        ) && msg.contains("shaper_classes")
            && msg.contains("without BPF_F_MMAPABLE"),
        "{msg}"
    );
    std::fs::remove_file(&path).unwrap();
    let dp = Dataplane::load(opts()).unwrap();
    let flags = MapInfo::from_pin(&path).unwrap().map_flags();
    assert_ne!(flags & abi::BPF_F_MMAPABLE, 0, "created with {flags:#x}");
    drop(dp);
}

#[test]
fn large_subscriber_batches_are_written_whole() {
    let mut dp = load();
    class(&mut dp, 1, plain());
    class(&mut dp, 2, plain());
    let mut batch: Vec<(SubscriberKey, [u32; 2])> = (0..900u32)
        .map(|i| {
            (
                SubscriberKey {
                    addr: std::net::Ipv4Addr::from(0xc612_0000 + i).into(),
                    len: 32,
                },
                [1, 2],
            )
        })
        .collect();
    batch.extend((0..100u16).map(|i| {
        (
            SubscriberKey {
                addr: std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, i, 0, 0, 0, 0).into(),
                len: 64,
            },
            [2, 1],
        )
    }));
    dp.upsert_subscribers(&batch).unwrap();
    assert_eq!(dp.subscriber_count(), 1000);
    dp.run_xdp(
        Role::Subscriber,
        &pkt::udp4("198.18.3.131", NET4, 1, 2, 0),
        1,
    )
    .unwrap();
    assert_eq!(
        dp.last_record().unwrap().sub_class,
        1,
        "198.18.3.131 = 0xc6120383, index 899"
    );
    dp.run_xdp(
        Role::Upstream,
        &pkt::udp6(NET6, "2001:db8:0:63::77", 1, 2, 0),
        1,
    )
    .unwrap();
    assert_eq!(
        dp.last_record().unwrap().sub_class,
        1,
        "/64 number 99, down class"
    );
}

/// The per-CPU classification cache (used when a family's rule set has several match shapes)
/// must never serve a decision older than the last subscriber or rule change.
#[test]
fn classification_cache_follows_subscriber_and_rule_changes() {
    let mut dp = load();
    for id in 1..=4 {
        class(&mut dp, id, plain());
    }
    // Two shapes (/32 and /24): the cache is in use.
    dp.set_rules(&[
        rule(1, Some(17), NET4, 32, (53, 53), 1, 3),
        rule(2, Some(17), "198.19.0.0", 24, (0, 65535), 2, 4),
    ])
    .unwrap();
    dp.upsert_subscriber(sub(SUB4, 32), [1, 0]).unwrap();
    let f = pkt::udp4(SUB4, NET4, 1000, 53, 0);
    let decide = |dp: &Dataplane| {
        dp.run_xdp(Role::Subscriber, &f, 1).unwrap();
        let r = dp.last_record().unwrap();
        (r.sub_class, r.rule_id, r.rule_class)
    };
    assert_eq!(decide(&dp), (1, 1, 3));
    assert_eq!(decide(&dp), (1, 1, 3), "served from the cache");
    dp.upsert_subscriber(sub(SUB4, 32), [2, 0]).unwrap();
    assert_eq!(decide(&dp), (2, 1, 3), "subscriber change seen at once");
    dp.delete_subscriber(&sub(SUB4, 32)).unwrap();
    assert_eq!(decide(&dp), (0, 1, 3), "subscriber deletion seen at once");
    dp.set_rules(&[
        rule(1, Some(17), NET4, 32, (54, 54), 1, 3),
        rule(2, Some(17), "198.19.0.0", 24, (0, 65535), 2, 4),
    ])
    .unwrap();
    assert_eq!(decide(&dp), (0, 2, 4), "rule change seen at once");
    // Direction is part of the key: the same packet on the upstream side is another decision.
    dp.upsert_subscriber(sub(NET4, 32), [0, 1]).unwrap();
    dp.run_xdp(Role::Upstream, &f, 1).unwrap();
    assert_eq!(dp.last_record().unwrap().sub_class, 1);
    assert_eq!(decide(&dp), (0, 2, 4));
}

/// The verifier walks at most 1,000,000 instructions per program; a program near that limit
/// breaks on the next small change. Keep every program well inside it.
#[test]
fn programs_verify_with_headroom() {
    for build in [Build::Production, Build::Test] {
        let dp = load_with(|o| o.build = build);
        for (name, n) in dp.verified_instructions().unwrap() {
            eprintln!("{build:?} {name}: {n} instructions verified");
            assert!(
                n < 250_000,
                "{name} ({build:?}): {n} verified instructions, limit 1,000,000"
            );
        }
    }
}

fn prefix(s: &str) -> Prefix {
    let (a, l) = s.split_once('/').unwrap();
    Prefix {
        addr: a.parse().unwrap(),
        len: l.parse().unwrap(),
    }
}

/// Subscribers on one plan police against buckets of their own, whether their address is in a
/// pool (slot by arithmetic) or a hash entry, and count in their own slots.
#[test]
fn each_subscriber_has_its_own_bucket_and_counters_pool_or_hash() {
    let mut dp = load_with(|o| {
        o.pools = vec![prefix("198.18.0.0/28"), prefix("2001:db8:0:100::/60")];
    });
    // One plan: 8 Mbit/s, 2000-byte burst: two 1000-byte packets at once, not three.
    class(
        &mut dp,
        1,
        ClassConfig {
            rate_bps: Some(8_000_000),
            burst_bytes: 2000,
            ..plain()
        },
    );
    let in_pool = "198.18.0.5"; // slot 5 of the first pool
    let hashed = "198.18.1.5"; // outside every pool
    let v6_pool = "2001:db8:0:103::7"; // its /64 is the 4th of the IPv6 pool
    dp.upsert_subscribers(&[
        (sub(in_pool, 32), [1, 1]),
        (sub(hashed, 32), [1, 1]),
        (sub("2001:db8:0:103::", 64), [1, 0]),
    ])
    .unwrap();
    dp.set_test_clock(1_000_000_000).unwrap();
    let run = |dp: &Dataplane, src: &str| {
        let f = if src.contains(':') {
            pkt::udp6(src, NET6, 1, 2, 952) // L3 length 1000
        } else {
            pkt::udp4(src, NET4, 1, 2, 972) // L3 length 1000
        };
        (0..3)
            .map(|_| dp.run_xdp(Role::Subscriber, &f, 1).unwrap().action)
            .collect::<Vec<_>>()
    };
    for src in [in_pool, hashed, v6_pool] {
        assert_eq!(
            run(&dp, src),
            [XDP_PASS, XDP_PASS, XDP_DROP],
            "{src}: its own 2000-byte bucket, untouched by the others"
        );
        assert_eq!(dp.last_record().unwrap().drop_reason, abi::DROP_POLICE_SUB);
    }
    // The plan's class counts all of them; each slot counts its own.
    let st = dp.class_stats(1).unwrap();
    assert_eq!((st.pkts, st.drop_police), (9, 3));
    for key in [
        sub(in_pool, 32),
        sub(hashed, 32),
        sub("2001:db8:0:103::", 64),
    ] {
        let s = dp.subscriber_slot(&key).unwrap();
        let up = s.d[abi::DIR_UP];
        assert_eq!((up.class_id, up.pkts, up.bytes, up.drops), (1, 3, 3000, 1));
        assert!(up.tat > 1_000_000_000, "{key:?}: bucket in use");
        assert_eq!(s.d[abi::DIR_DOWN].pkts, 0);
    }
    // A pool address nobody was given is no subscriber; nor is one outside every pool.
    dp.run_xdp(Role::Subscriber, &pkt::udp4("198.18.0.6", NET4, 1, 2, 0), 1)
        .unwrap();
    assert_eq!(dp.last_record().unwrap().sub_class, 0);
    // A class change gives a full bucket, keeps the counters; deletion frees the slot.
    class(&mut dp, 2, plain());
    dp.run_xdp(Role::Upstream, &pkt::udp4(NET4, in_pool, 1, 2, 972), 1)
        .unwrap();
    dp.upsert_subscriber(sub(in_pool, 32), [2, 1]).unwrap();
    let s = dp.subscriber_slot(&sub(in_pool, 32)).unwrap();
    assert_eq!((s.d[0].class_id, s.d[0].tat, s.d[0].pkts), (2, 0, 3));
    assert_ne!(s.d[1].tat, 0, "the unchanged direction keeps its bucket");
    dp.delete_subscriber(&sub(in_pool, 32)).unwrap();
    dp.delete_subscriber(&sub(hashed, 32)).unwrap();
    dp.run_xdp(Role::Subscriber, &pkt::udp4(in_pool, NET4, 1, 2, 0), 1)
        .unwrap();
    assert_eq!(dp.last_record().unwrap().sub_class, 0);
    dp.run_xdp(Role::Subscriber, &pkt::udp4(hashed, NET4, 1, 2, 0), 1)
        .unwrap();
    assert_eq!(dp.last_record().unwrap().sub_class, 0);
    // A re-added hashed subscriber starts with fresh counters.
    dp.upsert_subscriber(sub(hashed, 32), [1, 0]).unwrap();
    assert_eq!(dp.subscriber_slot(&sub(hashed, 32)).unwrap().d[0].pkts, 0);
    // A shared-bucket class (a modem's addresses): its subscribers draw from one bucket.
    class(
        &mut dp,
        3,
        ClassConfig {
            rate_bps: Some(8_000_000),
            burst_bytes: 2000,
            shared_bucket: true,
            ..plain()
        },
    );
    dp.upsert_subscribers(&[
        (sub("198.18.0.7", 32), [3, 0]),
        (sub("2001:db8:0:104::", 64), [3, 0]),
    ])
    .unwrap();
    let once = |dp: &Dataplane, f: &[u8]| dp.run_xdp(Role::Subscriber, f, 1).unwrap().action;
    let f4 = pkt::udp4("198.18.0.7", NET4, 1, 2, 972);
    let f6 = pkt::udp6("2001:db8:0:104::1", NET6, 1, 2, 952);
    assert_eq!(
        [once(&dp, &f4), once(&dp, &f6), once(&dp, &f4)],
        [XDP_PASS, XDP_PASS, XDP_DROP],
        "one 2000-byte bucket for both addresses"
    );
    // Bad pools are refused at load with the reason.
    let e = Dataplane::load(LoadOptions {
        build: Build::Test,
        limits: limits(),
        pools: vec![prefix("198.18.0.0/24"), prefix("198.18.0.128/25")],
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "subscriber pools 198.18.0.0/24 and 198.18.0.128/25 overlap"
    );
}

/// The classification cache keys on the fields the rule set looks at: with rules on the
/// destination only, packets from many sources share one entry, and a rule set that does look
/// at the source gets a key that has it.
#[test]
fn classification_cache_key_follows_the_fields_rules_use() {
    let mut dp = load();
    for id in 1..=3 {
        class(&mut dp, id, plain());
    }
    dp.set_rules(&[rule(1, Some(17), NET4, 32, (53, 53), 1, 2)])
        .unwrap();
    let decide = |dp: &Dataplane, src: &str| {
        dp.run_xdp(Role::Subscriber, &pkt::udp4(src, NET4, 1000, 53, 0), 1)
            .unwrap();
        let r = dp.last_record().unwrap();
        (r.rule_id, r.rule_class)
    };
    assert_eq!(decide(&dp, "198.18.0.1"), (1, 2));
    assert_eq!(
        decide(&dp, "198.18.0.2"),
        (1, 2),
        "another source, same entry"
    );
    // Now a rule on the source: a source it does not cover must not get the cached answer.
    let mut r = rule(2, Some(17), NET4, 32, (53, 53), 0, 3);
    r.src = prefix("198.18.0.2/32");
    dp.set_rules(&[rule(1, Some(17), NET4, 32, (53, 53), 1, 2), r])
        .unwrap();
    assert_eq!(decide(&dp, "198.18.0.2"), (2, 3));
    assert_eq!(decide(&dp, "198.18.0.1"), (1, 2));
    assert_eq!(decide(&dp, "198.18.0.2"), (2, 3));
}
