//! §3–§5: block, MTU and ICMP answers, policer, DSCP, MSS clamp, TC.

use super::*;
use crate::model::act::police;

// ---- act ---------------------------------------------------------------------------------------

#[test]
fn policer_conform_exceed_refill() {
    // 8 Mbit/s = 1000 ns per byte; burst 1500 bytes = 1.5 ms.
    let cfg = ClassConfig {
        rate_bps: Some(8_000_000),
        burst_bytes: 1500,
        ..Default::default()
    };
    let (q, b) = crate::model::rate::policer(&cfg);
    assert_eq!(police(0, 0, 1000, q, b), Some(1_000_000));
    assert_eq!(police(1_000_000, 0, 1000, q, b), None); // 2 ms ahead > 1.5 ms
    assert_eq!(police(1_000_000, 500_000, 1000, q, b), Some(2_000_000)); // exactly at the edge
    assert_eq!(
        police(1_000_000, 10_000_000_000, 1000, q, b),
        Some(10_001_000_000)
    ); // refilled
    assert_eq!(police(0, 0, 1501, q, b), None); // bigger than the burst

    let mut m = sub_model(cfg);
    let f = udp4(1000 - 28); // L3 length 1000
    let t0 = 1_000_000_000;
    let o = m.run_xdp(Dir::Up, t0, &f);
    assert_eq!(
        (o.verdict, o.sub_class, o.drop_reason),
        (Verdict::Pass, 1, DROP_NONE)
    );
    // The subscriber's own bucket moves; the class's (a rule bucket) does not.
    let tat = |m: &Model| m.sub_tat.values().next().unwrap()[Dir::Up as usize];
    assert_eq!(tat(&m), t0 + 1_000_000);
    assert_eq!(m.classes[&1].tat, 0);
    let o = m.run_xdp(Dir::Up, t0, &f);
    assert_eq!((o.verdict, o.drop_reason), (Verdict::Drop, DROP_POLICE_SUB));
    assert_eq!(tat(&m), t0 + 1_000_000, "exceeding leaves tat");
    assert_eq!(o.output, f);
    assert_eq!(m.run_xdp(Dir::Up, t0 + 500_000, &f).verdict, Verdict::Pass);
    assert_eq!(tat(&m), t0 + 2_000_000);
}

#[test]
fn rule_policer_first_and_keeps_its_tat_when_sub_exceeds() {
    let fast = ClassConfig {
        rate_bps: Some(8_000_000_000),
        burst_bytes: 100_000,
        ..Default::default()
    };
    let slow = ClassConfig {
        rate_bps: Some(8_000_000),
        burst_bytes: 1500,
        ..Default::default()
    };
    let mut m = sub_model(slow);
    m.classes.insert(2, class(fast));
    m.rules = vec![rule(1, None, PortRange::ANY, 1, 2)];
    let f = udp4(1000 - 28);
    assert_eq!(m.run_xdp(Dir::Up, 0, &f).verdict, Verdict::Pass);
    assert_eq!(m.classes[&2].tat, 1000);
    let o = m.run_xdp(Dir::Up, 0, &f);
    assert_eq!(
        (o.verdict, o.drop_reason, o.rule_class, o.sub_class),
        (Verdict::Drop, DROP_POLICE_SUB, 2, 1)
    );
    assert_eq!(
        m.classes[&2].tat, 2000,
        "R conformed: its tat stays advanced"
    );
    // Rule policer exceeding: reason POLICE_RULE, subscriber untouched.
    m.classes.get_mut(&2).unwrap().tat = 1 << 40;
    let sub_tat = m.classes[&1].tat;
    let o = m.run_xdp(Dir::Up, 0, &f);
    assert_eq!(o.drop_reason, DROP_POLICE_RULE);
    assert_eq!(m.classes[&1].tat, sub_tat);
}

#[test]
fn dscp_rewrite_keeps_ecn_and_checksum() {
    let mut m = sub_model(ClassConfig {
        dscp: Some(46),
        ..Default::default()
    });
    let mut f = udp4(30);
    f[15] = 0b0010_1011; // dscp 10, ECN 3
    fix_v4(&mut f, 14);
    let o = m.run_xdp(Dir::Up, 0, &f);
    assert_eq!(o.verdict, Verdict::Pass);
    let h = PacketHeaders::from_ethernet_slice(&o.output).unwrap();
    let (ip, _) = h.net.as_ref().unwrap().ipv4_ref().unwrap();
    assert_eq!((ip.dscp.value(), ip.ecn.value()), (46, 3));
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    assert_eq!(checksum(&o.output[14..34]), 0);
    assert_eq!(o.output[34..], f[34..]);
    // A wrong input checksum stays exactly as wrong (incremental, not recomputed).
    let mut bad = f.clone();
    bad[24] ^= 0x10;
    let o = m.run_xdp(Dir::Up, 0, &bad);
    assert_eq!(checksum(&o.output[14..34]), checksum(&bad[14..34]));
    assert_ne!(checksum(&o.output[14..34]), 0);
    // Same DSCP already: untouched.
    let o2 = m.run_xdp(Dir::Up, 0, &o.output);
    assert_eq!(o2.output, o.output);
    // Rule DSCP beats the subscriber's; a rule keeping DSCP defers to it.
    m.classes.insert(
        2,
        class(ClassConfig {
            dscp: Some(8),
            ..Default::default()
        }),
    );
    m.rules = vec![rule(1, None, PortRange::ANY, 1, 2)];
    assert_eq!(m.run_xdp(Dir::Up, 0, &f).output[15], 8 << 2 | 3);
    m.classes.insert(2, class(ClassConfig::default()));
    assert_eq!(m.run_xdp(Dir::Up, 0, &f).output[15], 46 << 2 | 3);
}

#[test]
fn dscp_rewrite_ipv6_keeps_ecn_and_flow_label() {
    let mut m = sub_model(ClassConfig {
        dscp: Some(0x2e),
        ..Default::default()
    });
    let mut f = udp6(30);
    f[14..18].copy_from_slice(&[0x60 | 0x0a, 0x1b, 0xcd, 0xef]); // tc 0xa1, flow 0xbcdef
    let o = m.run_xdp(Dir::Up, 0, &f);
    let h = PacketHeaders::from_ethernet_slice(&o.output).unwrap();
    let (ip, _) = h.net.as_ref().unwrap().ipv6_ref().unwrap();
    assert_eq!(ip.traffic_class, 0x2e << 2 | 0x01);
    assert_eq!(ip.flow_label.value(), 0xbcdef);
    assert_eq!(o.output[18..], f[18..]);
}

fn tcp_mss(f: &[u8]) -> (Vec<u16>, bool) {
    let h = PacketHeaders::from_ethernet_slice(f).unwrap();
    let Some(TransportHeader::Tcp(t)) = &h.transport else {
        panic!()
    };
    let PayloadSlice::Tcp(payload) = h.payload else {
        panic!()
    };
    let mss = t
        .options_iterator()
        .filter_map(|o| match o.unwrap() {
            TcpOptionElement::MaximumSegmentSize(v) => Some(v),
            _ => None,
        })
        .collect();
    let valid = match h.net.as_ref().unwrap() {
        NetHeaders::Ipv4(ip, _) => t.calc_checksum_ipv4(ip, payload).unwrap() == t.checksum,
        NetHeaders::Ipv6(ip, _) => t.calc_checksum_ipv6(ip, payload).unwrap() == t.checksum,
    };
    (mss, valid)
}

#[test]
fn mss_clamp_at_odd_and_even_offsets() {
    let m = sub_model(ClassConfig {
        mtu: Some(1400),
        ..Default::default()
    });
    // MSS at option offset 1 (field at TCP offset 23: odd) and 0 (even).
    for opts in [
        &[1u8, 2, 4, 0x05, 0xb4, 1, 1, 1][..],
        &[2, 4, 0x05, 0xb4][..],
        &[1, 1, 1, 2, 4, 0x23, 0x28, 0][..],
    ] {
        let f = tcp4(opts, true, 10);
        assert!(tcp_mss(&f).1);
        let o = m.tc(Dir::Up, &f);
        let (mss, valid) = tcp_mss(&o.output);
        assert_eq!(mss, vec![1360]);
        assert!(valid, "TCP checksum after clamping {opts:?}");
    }
    // IPv6: clamp = mtu - 60.
    let f = tcp6(&[1, 2, 4, 0x05, 0xb4, 1, 1, 0], 0);
    let (mss, valid) = tcp_mss(&m.tc(Dir::Up, &f).output);
    assert_eq!((mss, valid), (vec![1340], true));
    // Never raised; non-SYN untouched; wrong length untouched.
    let f = tcp4(&[2, 4, 0x03, 0xe8], true, 0);
    assert_eq!(m.tc(Dir::Up, &f).output, f);
    let f = tcp4(&[2, 4, 0x05, 0xb4], false, 0);
    assert_eq!(m.tc(Dir::Up, &f).output, f);
    let f = tcp4(&[2, 6, 0x05, 0xb4, 0, 0, 0, 0], true, 0);
    assert_eq!(m.tc(Dir::Up, &f).output, f);
    // End of options before the MSS: no change.
    let f = tcp4(&[0, 0, 0, 0, 2, 4, 0x05, 0xb4], true, 0);
    assert_eq!(m.tc(Dir::Up, &f).output, f);
    // The first MSS above the clamp is the one lowered.
    let f = tcp4(&[2, 4, 0x03, 0xe8, 2, 4, 0x05, 0xb4], true, 0);
    let o = m.tc(Dir::Up, &f);
    assert_eq!(be(&o.output, 34 + 26), 1360);
    assert_eq!(be(&o.output, 34 + 22), 1000);
    // No MTU, no clamp.
    let m = sub_model(ClassConfig::default());
    let f = tcp4(&[2, 4, 0x05, 0xb4], true, 0);
    assert_eq!(m.tc(Dir::Up, &f).output, f);
}

#[test]
fn icmp_frag_needed_answer() {
    let mut m = sub_model(ClassConfig {
        mtu: Some(1400),
        ..Default::default()
    });
    let mut f = add_tag(&udp4(1500 - 28), 0x8100);
    set_df(&mut f, 18);
    let o = m.run_xdp(Dir::Up, 0, &f);
    assert_eq!((o.verdict, o.drop_reason), (Verdict::Tx, DROP_MTU));
    assert_eq!(o.output.len(), 18 + 20 + 8 + 28);
    assert_eq!(&o.output[0..6], &MAC_A);
    assert_eq!(&o.output[6..12], &MAC_B);
    assert_eq!(&o.output[12..18], &f[12..18]);
    let h = PacketHeaders::from_ethernet_slice(&o.output).unwrap();
    let (ip, _) = h.net.as_ref().unwrap().ipv4_ref().unwrap();
    assert_eq!(
        (ip.source, ip.destination, ip.time_to_live, ip.protocol.0),
        (NET4, SUB4, 64, 1)
    );
    assert_eq!(
        (ip.identification, ip.dont_fragment, ip.dscp.value()),
        (0, false, 0)
    );
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    let Some(TransportHeader::Icmpv4(icmp)) = &h.transport else {
        panic!()
    };
    let PayloadSlice::Icmpv4(payload) = h.payload else {
        panic!()
    };
    assert_eq!(
        icmp.icmp_type,
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400
        })
    );
    assert_eq!(icmp.checksum, icmp.icmp_type.calc_checksum(payload));
    assert_eq!(payload, &f[18..18 + 28]);
    // No DF (etherparse sets it by default): passed untouched.
    let mut f = udp4(1500 - 28);
    f[20] &= !0x40;
    fix_v4(&mut f, 14);
    let o = m.run_xdp(Dir::Up, 0, &f);
    assert_eq!(
        (o.verdict, o.drop_reason, &o.output),
        (Verdict::Pass, DROP_NONE, &f)
    );
    // DF + ICMP error: drop.
    let mut f = udp4(1500 - 28);
    f[23] = 1;
    f[34] = 11;
    set_df(&mut f, 14);
    assert_eq!(m.run_xdp(Dir::Up, 0, &f).verdict, Verdict::Drop);
    // DF + ICMP echo: answered.
    f[34] = 8;
    assert_eq!(m.run_xdp(Dir::Up, 0, &f).verdict, Verdict::Tx);
    // DF + fragment with offset: drop; first fragment (MF only): answered.
    let mut f = udp4(1500 - 28);
    f[20] = 0x40;
    f[21] = 0x10;
    fix_v4(&mut f, 14);
    let o = m.run_xdp(Dir::Up, 0, &f);
    assert_eq!((o.verdict, o.drop_reason), (Verdict::Drop, DROP_MTU));
    f[20] = 0x60;
    f[21] = 0;
    fix_v4(&mut f, 14);
    assert_eq!(m.run_xdp(Dir::Up, 0, &f).verdict, Verdict::Tx);
    // Exactly the MTU: fine.
    let mut f = udp4(1400 - 28);
    set_df(&mut f, 14);
    assert_eq!(m.run_xdp(Dir::Up, 0, &f).verdict, Verdict::Pass);
}

#[test]
fn icmp_frag_needed_quotes_options_and_uses_smaller_mtu() {
    let mut m = sub_model(ClassConfig {
        mtu: Some(1500),
        ..Default::default()
    });
    m.classes.insert(
        2,
        class(ClassConfig {
            mtu: Some(1300),
            ..Default::default()
        }),
    );
    m.rules = vec![rule(1, None, PortRange::ANY, 1, 2)];
    // IPv4 with 8 bytes of options (IHL 7).
    let base = udp4(1400);
    let mut f = base[..34].to_vec();
    f[14] = 0x47;
    f.extend_from_slice(&[1, 1, 1, 1, 1, 1, 1, 0]);
    f.extend_from_slice(&base[34..]);
    let tot = (f.len() - 14) as u16;
    put16(&mut f, 16, tot);
    set_df(&mut f, 14);
    let o = m.run_xdp(Dir::Up, 0, &f);
    assert_eq!(o.verdict, Verdict::Tx);
    assert_eq!(be(&o.output, 34 + 6), 1300);
    assert_eq!(&o.output[34 + 8..], &f[14..14 + 28 + 8]);
    assert_eq!(checksum(&o.output[34..]), 0);
    assert_eq!(checksum(&o.output[14..34]), 0);
}

#[test]
fn icmpv6_packet_too_big_answer() {
    let mut m = sub_model(ClassConfig {
        mtu: Some(1280),
        ..Default::default()
    });
    for f in [udp6(1500 - 48), pppoe(&udp6(1500 - 48))] {
        let o = m.run_xdp(Dir::Up, 0, &f);
        assert_eq!((o.verdict, o.drop_reason), (Verdict::Tx, DROP_MTU));
        let l3 = if f[12] == 0x88 { 22 } else { 14 };
        assert_eq!(o.output.len(), l3 + 1280);
        if l3 == 22 {
            assert_eq!(be(&o.output, 18), 1282);
            let p = ok(&o.output);
            assert_eq!(p.l3_len, 1280);
            // etherparse has no PPPoE: check the IPv6 part on its own.
            let mut plain = o.output[..12].to_vec();
            plain.extend_from_slice(&[0x86, 0xdd]);
            plain.extend_from_slice(&o.output[22..]);
            check_ptb(&plain, &f[22..]);
        } else {
            check_ptb(&o.output, &f[14..]);
        }
        assert_eq!(&o.output[0..6], &MAC_A);
    }
    // ICMPv6 error over the MTU: dropped; informational: answered.
    let mut f = udp6(1500 - 48);
    f[20] = 58;
    f[54] = 1;
    let o = m.run_xdp(Dir::Up, 0, &f);
    assert_eq!(
        (o.verdict, o.drop_reason, o.output == f),
        (Verdict::Drop, DROP_MTU, true)
    );
    f[54] = 128;
    assert_eq!(m.run_xdp(Dir::Up, 0, &f).verdict, Verdict::Tx);
}

fn check_ptb(frame: &[u8], offending_ip: &[u8]) {
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let (ip, _) = h.net.as_ref().unwrap().ipv6_ref().unwrap();
    assert_eq!((ip.source, ip.destination), (NET6, SUB6));
    assert_eq!(
        (
            ip.payload_length,
            ip.hop_limit,
            ip.traffic_class,
            ip.flow_label.value()
        ),
        (1240, 64, 0, 0)
    );
    let Some(TransportHeader::Icmpv6(icmp)) = &h.transport else {
        panic!()
    };
    let PayloadSlice::Icmpv6(payload) = h.payload else {
        panic!()
    };
    assert_eq!(icmp.icmp_type, Icmpv6Type::PacketTooBig { mtu: 1280 });
    assert_eq!(
        icmp.checksum,
        icmp.icmp_type
            .calc_checksum(ip.source, ip.destination, payload)
            .unwrap()
    );
    assert_eq!(payload, &offending_ip[..1232]);
}

#[test]
fn block_fail_closed_malformed_and_non_ip() {
    let mut m = sub_model(ClassConfig {
        block: true,
        mtu: Some(1280),
        ..Default::default()
    });
    let o = m.run_xdp(Dir::Up, 0, &udp4(1500));
    assert_eq!((o.verdict, o.drop_reason), (Verdict::Drop, DROP_BLOCK)); // block before MTU
    let o = m.run_xdp(Dir::Down, 0, &udp4(10)); // nobody for DOWN
    assert_eq!(
        (o.verdict, o.drop_reason, o.sub_class),
        (Verdict::Pass, DROP_NONE, 0)
    );
    m.fail_closed = true;
    let o = m.run_xdp(Dir::Down, 0, &udp4(10));
    assert_eq!(
        (o.verdict, o.drop_reason, o.parse),
        (Verdict::Drop, DROP_FAIL_CLOSED, ParseKind::Ok)
    );
    let three = add_tag(&add_tag(&add_tag(&udp4(10), 0x8100), 0x8100), 0x8100);
    let o = m.run_xdp(Dir::Up, 0, &three);
    assert_eq!(
        (o.verdict, o.drop_reason, o.parse, o.sub_class),
        (Verdict::Drop, DROP_FAIL_CLOSED, ParseKind::Unsupported, 0)
    );
    let mut arp = udp4(10);
    put16(&mut arp, 12, 0x0806);
    let o = m.run_xdp(Dir::Up, 0, &arp);
    assert_eq!((o.verdict, o.parse), (Verdict::Pass, ParseKind::NonIp));
    let trunc = &udp4(10)[..30];
    let o = m.run_xdp(Dir::Up, 0, trunc);
    assert_eq!(
        (o.verdict, o.parse, o.parse_err),
        (Verdict::Pass, ParseKind::Malformed, PE_IPV4)
    );
    m.malformed_drop = true;
    let o = m.run_xdp(Dir::Up, 0, trunc);
    assert_eq!(
        (o.verdict, o.drop_reason, o.parse_err),
        (Verdict::Drop, DROP_MALFORMED, PE_IPV4)
    );
}

#[test]
fn tc_priority_rule_then_subscriber() {
    let mut m = sub_model(ClassConfig {
        skb_priority: 0x10002,
        ..Default::default()
    });
    m.classes.insert(
        2,
        class(ClassConfig {
            skb_priority: 0x10005,
            ..Default::default()
        }),
    );
    m.classes.insert(3, class(ClassConfig::default()));
    let f = udp4(10);
    assert_eq!(m.run_tc(Dir::Up, &f), Some(0x10002));
    assert_eq!(m.run_tc(Dir::Down, &f), None);
    m.rules = vec![rule(1, Some(17), PortRange::ANY, 1, 2)];
    assert_eq!(m.run_tc(Dir::Up, &f), Some(0x10005));
    assert_eq!(m.run_tc(Dir::Down, &f), Some(0x10005));
    m.rules = vec![rule(1, Some(17), PortRange::ANY, 1, 3)]; // rule class without priority
    assert_eq!(m.run_tc(Dir::Up, &f), Some(0x10002));
    assert_eq!(m.run_tc(Dir::Up, &f[..20]), None);
}
