//! Unit tests of the model against etherparse as the independent parser / checksummer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    Icmpv4Type, Icmpv6Type, Ipv4Header, NetHeaders, PacketBuilder, PacketHeaders, PayloadSlice,
    TcpOptionElement, TransportHeader, icmpv4::DestUnreachableHeader,
};

use super::csum::{checksum, put16};
use super::parse::*;
use super::*;
use crate::policy::{ClassConfig, PortRange, Prefix, Rule};

mod act;
mod generated;

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];
const SUB4: [u8; 4] = [198, 18, 0, 1];
const NET4: [u8; 4] = [198, 19, 7, 7];
const SUB6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const NET6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];

fn tcp4(opts: &[u8], syn: bool, payload: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(SUB4, NET4, 64)
        .tcp(40000, 443, 1, 1000);
    let b = if syn { b.syn() } else { b.ack(5) };
    let b = b.options_raw(opts).unwrap();
    let mut v = Vec::new();
    b.write(&mut v, &vec![0x5a; payload]).unwrap();
    v
}

fn tcp6(opts: &[u8], payload: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(SUB6, NET6, 64)
        .tcp(40000, 443, 1, 1000)
        .syn();
    let b = b.options_raw(opts).unwrap();
    let mut v = Vec::new();
    b.write(&mut v, &vec![0x5a; payload]).unwrap();
    v
}

fn udp4(payload: usize) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(SUB4, NET4, 64)
        .udp(5000, 53)
        .write(&mut v, &vec![7; payload])
        .unwrap();
    v
}

fn udp6(payload: usize) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(SUB6, NET6, 64)
        .udp(5000, 53)
        .write(&mut v, &vec![7; payload])
        .unwrap();
    v
}

/// Recomputes the IPv4 header checksum with etherparse.
fn fix_v4(f: &mut [u8], l3: usize) {
    let (h, _) = Ipv4Header::from_slice(&f[l3..]).unwrap();
    put16(f, l3 + 10, h.calc_header_checksum());
}

fn set_df(f: &mut [u8], l3: usize) {
    f[l3 + 6] |= 0x40;
    fix_v4(f, l3);
}

/// Inserts a VLAN tag (TPID `tpid`) after the MACs.
fn add_tag(f: &[u8], tpid: u16) -> Vec<u8> {
    let mut v = f[..12].to_vec();
    v.extend_from_slice(&tpid.to_be_bytes());
    v.extend_from_slice(&[0x00, 0x64]);
    v.extend_from_slice(&f[12..]);
    v
}

/// Wraps the IP packet of a plain Ethernet frame into a PPPoE session.
fn pppoe(f: &[u8]) -> Vec<u8> {
    let ip = &f[14..];
    let ppp: u16 = if be(f, 12) == 0x0800 { 0x21 } else { 0x57 };
    let mut v = f[..12].to_vec();
    v.extend_from_slice(&[0x88, 0x64, 0x11, 0x00, 0x12, 0x34]);
    v.extend_from_slice(&((ip.len() + 2) as u16).to_be_bytes());
    v.extend_from_slice(&ppp.to_be_bytes());
    v.extend_from_slice(ip);
    v
}

fn be(f: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([f[o], f[o + 1]])
}

fn ok(f: &[u8]) -> Parsed {
    match parse(f) {
        ParseResult::Ok(p) => p,
        other => panic!("expected ok, got {other:?}"),
    }
}

fn class(cfg: ClassConfig) -> ModelClass {
    ModelClass::new(cfg)
}

/// A model where subscriber SUB4 / SUB6 (UP direction, source) is in class 1 with `cfg`.
fn sub_model(cfg: ClassConfig) -> Model {
    let mut m = Model::default();
    m.subs_v4.insert(Ipv4Addr::from(SUB4), [1, 0]);
    m.subs_v6.insert(Ipv6Addr::from(SUB6), [1, 0]);
    m.classes.insert(1, class(cfg));
    m
}

fn rule(id: u32, proto: Option<u8>, dport: PortRange, precedence: u32, class: u32) -> Rule {
    Rule {
        id,
        proto,
        src: Prefix::any_v4(),
        dst: Prefix::any_v4(),
        sport: PortRange::ANY,
        dport,
        precedence,
        class,
    }
}

// ---- parse -------------------------------------------------------------------------------------

#[test]
fn parse_ipv4_tcp_agrees_with_etherparse() {
    let f = tcp4(&[2, 4, 5, 0xb4], true, 100);
    let p = ok(&f);
    let h = PacketHeaders::from_ethernet_slice(&f).unwrap();
    let (ip, _) = h.net.as_ref().unwrap().ipv4_ref().unwrap();
    let Some(TransportHeader::Tcp(t)) = &h.transport else {
        panic!()
    };
    assert_eq!(
        (p.l3, p.l3_len, p.proto, p.v6),
        (14, usize::from(ip.total_len), 6, false)
    );
    assert_eq!(p.src, IpAddr::V4(Ipv4Addr::from(ip.source)));
    assert_eq!(p.dst, IpAddr::V4(Ipv4Addr::from(ip.destination)));
    assert_eq!((p.sport, p.dport), (t.source_port, t.destination_port));
    assert_eq!(p.tcp_hdr_len, t.header_len());
    assert_eq!(p.tcp_flags & 0x02, 0x02);
    assert_eq!(p.l4, Some(34));
    assert!(!p.frag);
}

#[test]
fn parse_vlan_qinq_and_third_tag() {
    let base = udp4(10);
    let one = add_tag(&base, 0x8100);
    let two = add_tag(&one, 0x88a8);
    let p1 = ok(&one);
    let p2 = ok(&two);
    assert_eq!((p1.l3, p2.l3), (18, 22));
    assert_eq!((p2.sport, p2.dport), (5000, 53));
    // etherparse agrees on the double tag and finds the same UDP header.
    let h = PacketHeaders::from_ethernet_slice(&two).unwrap();
    assert!(matches!(h.vlan, Some(etherparse::VlanHeader::Double(_))));
    assert!(matches!(h.transport, Some(TransportHeader::Udp(u)) if u.destination_port == 53));
    let three = add_tag(&two, 0x9100);
    assert_eq!(parse(&three), ParseResult::Unsupported);
    // Truncated tags.
    assert_eq!(parse(&one[..16]), ParseResult::Malformed(PE_VLAN));
    assert_eq!(parse(&two[..21]), ParseResult::Malformed(PE_VLAN));
    assert_eq!(parse(&two[..22]), ParseResult::Malformed(PE_IPV4));
    // A third tag is unsupported even when it is truncated: the count is checked first.
    assert_eq!(parse(&three[..23]), ParseResult::Unsupported);
}

#[test]
fn parse_pppoe_session() {
    for base in [udp4(30), udp6(30)] {
        let f = pppoe(&base);
        let p = ok(&f);
        assert_eq!((p.l3, p.pppoe, p.dport), (22, Some(14), 53));
        assert_eq!(p.v6, base[12] == 0x86);
        // Padding after the PPPoE payload is allowed; a length past the frame is not.
        let mut padded = f.clone();
        padded.extend_from_slice(&[0; 10]);
        assert!(matches!(parse(&padded), ParseResult::Ok(_)));
        let mut bad = f.clone();
        put16(&mut bad, 18, (f.len() - 20 + 1) as u16);
        assert_eq!(parse(&bad), ParseResult::Malformed(PE_PPPOE));
        put16(&mut bad, 18, 1);
        assert_eq!(parse(&bad), ParseResult::Malformed(PE_PPPOE));
        let mut bad = f.clone();
        bad[14] = 0x12;
        assert_eq!(parse(&bad), ParseResult::Malformed(PE_PPPOE));
        let mut bad = f.clone();
        bad[15] = 0x09;
        assert_eq!(parse(&bad), ParseResult::Malformed(PE_PPPOE));
        assert_eq!(parse(&f[..21]), ParseResult::Malformed(PE_PPPOE));
        let mut lcp = f.clone();
        put16(&mut lcp, 20, 0xc021);
        assert_eq!(parse(&lcp), ParseResult::NonIp);
    }
}

#[test]
fn parse_non_ip() {
    let mut f = udp4(10);
    for et in [0x0806u16, 0x8863, 0x88cc] {
        put16(&mut f, 12, et);
        assert_eq!(parse(&f), ParseResult::NonIp);
    }
    assert_eq!(parse(&f[..14]), ParseResult::NonIp);
    assert_eq!(parse(&f[..13]), ParseResult::Malformed(PE_ETH));
    assert_eq!(parse(&[]), ParseResult::Malformed(PE_ETH));
}

#[test]
fn parse_ipv4_header_checks() {
    let f = udp4(60);
    let mut v = f.clone();
    v[14] = 0x55; // version 5
    assert_eq!(parse(&v), ParseResult::Malformed(PE_IPV4));
    v[14] = 0x44; // IHL 4
    assert_eq!(parse(&v), ParseResult::Malformed(PE_IPV4));
    let mut v = f.clone();
    put16(&mut v, 16, 19); // total length < IHL*4
    assert_eq!(parse(&v), ParseResult::Malformed(PE_IPV4));
    put16(&mut v, 16, (f.len() - 14 + 1) as u16); // past the frame
    assert_eq!(parse(&v), ParseResult::Malformed(PE_IPV4));
    let mut v = f.clone();
    v[14] = 0x4f; // IHL 15 = 60 bytes > frame
    put16(&mut v, 16, 60);
    assert_eq!(parse(&v[..14 + 59]), ParseResult::Malformed(PE_IPV4));
    for n in 14..34 {
        assert_eq!(parse(&f[..n]), ParseResult::Malformed(PE_IPV4), "len {n}");
    }
    // Ethernet padding after total length is ignored.
    let mut v = f.clone();
    v.extend_from_slice(&[0xee; 12]);
    assert_eq!(ok(&v).l3_len, f.len() - 14);
}

#[test]
fn parse_l4_minimum_lengths() {
    // IPv4 header whose total length leaves `k` bytes for L4, all inside a larger frame.
    for (proto, need) in [(6u8, 20usize), (17, 8), (132, 12), (1, 4), (58, 4)] {
        for k in 0..=need {
            let mut f = udp4(40);
            f[23] = proto;
            put16(&mut f, 16, (20 + k) as u16);
            f[34 + 12] = 0x50; // TCP doff 5 (harmless for the others)
            fix_v4(&mut f, 14);
            let r = parse(&f);
            if k < need {
                assert_eq!(r, ParseResult::Malformed(PE_L4), "proto {proto} k {k}");
            } else {
                assert!(
                    matches!(r, ParseResult::Ok(_)),
                    "proto {proto} k {k}: {r:?}"
                );
            }
        }
    }
    // TCP data offset < 5 or past the L3 length.
    let mut f = tcp4(&[], false, 0);
    f[34 + 12] = 0x40;
    assert_eq!(parse(&f), ParseResult::Malformed(PE_L4));
    f[34 + 12] = 0x60;
    assert_eq!(parse(&f), ParseResult::Malformed(PE_L4));
    // Other protocols are not checked; a fragment has no L4.
    let mut f = udp4(40);
    f[23] = 47;
    put16(&mut f, 16, 20);
    fix_v4(&mut f, 14);
    assert_eq!((ok(&f).sport, ok(&f).l4), (0, None));
    let mut f = udp4(40);
    put16(&mut f, 16, 20);
    f[20] = 0x20; // MF
    fix_v4(&mut f, 14);
    let p = ok(&f);
    assert!(p.frag && !p.frag_offset_nonzero);
    assert_eq!((p.sport, p.dport, p.proto), (0, 0, 17));
}

/// IPv6 UDP frame with the given extension headers (kind, raw bytes without next header).
fn v6_with_exts(exts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let base = udp6(16);
    let udp = &base[54..];
    let mut body = Vec::new();
    for (i, (_, bytes)) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(17, |e| e.0);
        body.push(next);
        body.extend_from_slice(&bytes[1..]);
    }
    body.extend_from_slice(udp);
    let mut f = base[..54].to_vec();
    put16(&mut f, 18, body.len() as u16);
    f[20] = exts.first().map_or(17, |e| e.0);
    f.extend(body);
    f
}

fn opt_hdr(len8: u8) -> Vec<u8> {
    let n = (usize::from(len8) + 1) * 8;
    let mut v = vec![0, len8, 1, (n - 4) as u8];
    v.resize(n, 0);
    v
}

#[test]
fn parse_ipv6_extension_headers() {
    let f = v6_with_exts(&[
        (0, opt_hdr(0)),
        (43, vec![0, 0, 4, 0, 0, 0, 0, 0]),
        (60, opt_hdr(1)),
    ]);
    let p = ok(&f);
    assert_eq!(
        (p.proto, p.sport, p.dport, p.l3_len),
        (17, 5000, 53, f.len() - 14)
    );
    assert_eq!(p.l4, Some(14 + 40 + 8 + 8 + 16));
    let h = PacketHeaders::from_ethernet_slice(&f).unwrap();
    assert!(matches!(h.transport, Some(TransportHeader::Udp(u)) if u.source_port == 5000));
    // AH: (len + 2) * 4 bytes.
    let mut ah = vec![0, 4, 0, 0];
    ah.resize(24, 0xa5);
    let p = ok(&v6_with_exts(&[(51, ah)]));
    assert_eq!((p.l4, p.dport), (Some(14 + 40 + 24), 53));
    // Atomic fragment: continue; real fragment: stop with its next header, no ports.
    let atomic = v6_with_exts(&[(44, vec![0, 0, 0, 0, 1, 2, 3, 4])]);
    assert_eq!(ok(&atomic).dport, 53);
    for fo in [0x0001u16, 0x0008, 0xfff8] {
        let mut fr = vec![0, 0];
        fr.extend_from_slice(&fo.to_be_bytes());
        fr.extend_from_slice(&[1, 2, 3, 4]);
        let p = ok(&v6_with_exts(&[(0, opt_hdr(0)), (44, fr)]));
        assert!(p.frag);
        assert_eq!((p.proto, p.sport, p.dport, p.l4), (17, 0, 0, None));
    }
    // Six headers fine, a seventh unsupported.
    let six: Vec<_> = (0..6).map(|_| (60u8, opt_hdr(0))).collect();
    assert_eq!(ok(&v6_with_exts(&six)).dport, 53);
    let seven: Vec<_> = (0..7).map(|_| (60u8, opt_hdr(0))).collect();
    assert_eq!(parse(&v6_with_exts(&seven)), ParseResult::Unsupported);
    // Extension header longer than the L3 length; 8 bytes not fitting.
    let mut f = v6_with_exts(&[(60, opt_hdr(0))]);
    f[14 + 40 + 1] = 9;
    assert_eq!(parse(&f), ParseResult::Malformed(PE_IPV6_EXT));
    let mut f = v6_with_exts(&[(60, opt_hdr(0))]);
    put16(&mut f, 18, 7);
    assert_eq!(parse(&f), ParseResult::Malformed(PE_IPV6_EXT));
    // Payload length covering only the ext header: L4 missing.
    let mut f = v6_with_exts(&[(60, opt_hdr(0))]);
    put16(&mut f, 18, 8 + 7);
    assert_eq!(parse(&f), ParseResult::Malformed(PE_L4));
}

#[test]
fn parse_ipv6_header_checks() {
    let f = udp6(10);
    for n in 14..54 {
        assert_eq!(parse(&f[..n]), ParseResult::Malformed(PE_IPV6));
    }
    assert_eq!(parse(&f[..f.len() - 1]), ParseResult::Malformed(PE_IPV6));
    let mut v = f.clone();
    v[14] = 0x40;
    assert_eq!(parse(&v), ParseResult::Malformed(PE_IPV6));
    let mut v = f.clone();
    put16(&mut v, 18, 4);
    assert_eq!(parse(&v), ParseResult::Malformed(PE_L4));
    assert_eq!(ok(&f).l3_len, 40 + 18);
}

#[test]
fn truncation_codes_through_every_layer() {
    // VLAN + PPPoE + IPv4 TCP: each prefix length gives the code of the layer that does not fit.
    let f = add_tag(&pppoe(&tcp4(&[2, 4, 5, 0xb4], true, 0)), 0x8100);
    assert!(matches!(parse(&f), ParseResult::Ok(_)));
    for n in 0..f.len() {
        let want = match n {
            0..=13 => PE_ETH,
            14..=17 => PE_VLAN,
            _ => PE_PPPOE, // PPPoE length counts the whole packet
        };
        assert_eq!(parse(&f[..n]), ParseResult::Malformed(want), "len {n}");
    }
}

// ---- classify ----------------------------------------------------------------------------------

#[test]
fn rule_precedence_and_port_ranges() {
    let mut m = Model::default();
    for id in 1..=4 {
        m.classes.insert(id, class(ClassConfig::default()));
    }
    m.rules = vec![
        rule(10, Some(6), PortRange { lo: 400, hi: 443 }, 50, 1),
        rule(11, None, PortRange::ANY, 90, 2),
        rule(12, Some(6), PortRange { lo: 443, hi: 443 }, 20, 3),
        rule(13, Some(17), PortRange { lo: 53, hi: 53 }, 5, 4),
        rule(14, Some(6), PortRange { lo: 444, hi: 500 }, 1, 99), // missing class
    ];
    crate::policy::validate_rules(&m.rules).unwrap();
    let mut run = |f: &[u8]| {
        let o = m.run_xdp(Dir::Up, 0, f);
        (o.rule_id, o.rule_class)
    };
    assert_eq!(run(&tcp4(&[], false, 0)), (12, 3)); // dport 443: 12 (20) beats 10 (50) and 11 (90)
    let mut f = tcp4(&[], false, 0);
    put16(&mut f, 36, 400);
    assert_eq!(run(&f), (10, 1)); // inclusive low end
    put16(&mut f, 36, 399);
    assert_eq!(run(&f), (11, 2));
    put16(&mut f, 36, 444);
    assert_eq!(run(&f), (14, 0)); // winner's class invalid: id kept, class none
    assert_eq!(run(&udp4(0)), (13, 4));
    let mut f = udp4(0);
    put16(&mut f, 36, 54);
    assert_eq!(run(&f), (11, 2));
    // Fragments have ports 0: the port rules cannot match.
    let mut f = udp4(8);
    f[20] = 0x20;
    fix_v4(&mut f, 14);
    assert_eq!(run(&f), (11, 2));
    // IPv6 packets never match IPv4 rules.
    assert_eq!(run(&udp6(0)), (0, 0));
}

#[test]
fn rule_prefixes_and_portless_protocols() {
    let mut m = Model::default();
    m.classes.insert(1, class(ClassConfig::default()));
    m.classes.insert(2, class(ClassConfig::default()));
    let p6 = |s: &str, len| Prefix {
        addr: s.parse().unwrap(),
        len,
    };
    m.rules = vec![
        Rule {
            src: p6("2001:db8:1::", 64),
            dst: Prefix::any_v6(),
            ..rule(1, Some(58), PortRange::ANY, 3, 1)
        },
        Rule {
            src: p6("2001:db8::", 32),
            dst: p6("2001:db8:9::9", 128),
            dport: PortRange { lo: 0, hi: 0 },
            ..rule(2, None, PortRange::ANY, 4, 2)
        },
    ];
    let mut f = udp6(8);
    f[20] = 58;
    let o = m.run_xdp(Dir::Up, 0, &f);
    assert_eq!((o.rule_id, o.rule_class), (1, 1));
    let o = m.run_xdp(Dir::Up, 0, &udp6(8)); // dport 53 ≠ 0
    assert_eq!(o.rule_id, 0);
    let mut f = udp6(8);
    f[20] = 47; // GRE: ports 0
    assert_eq!(m.run_xdp(Dir::Up, 0, &f).rule_id, 2);
}

#[test]
fn subscriber_lookup_by_direction_and_v6_64() {
    let mut m = Model::default();
    for id in [1, 2, 3, 4] {
        m.classes.insert(id, class(ClassConfig::default()));
    }
    m.subs_v4.insert(Ipv4Addr::from(SUB4), [1, 2]);
    m.subs_v4.insert(Ipv4Addr::from(NET4), [3, 77]);
    let f = udp4(0); // SUB4 -> NET4
    assert_eq!(m.run_xdp(Dir::Up, 0, &f).sub_class, 1);
    assert_eq!(m.run_xdp(Dir::Down, 0, &f).sub_class, 0); // NET4's DOWN class 77 is missing
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&SUB6[..8]);
    m.subs_v6_64.insert(prefix, [4, 4]);
    let f = udp6(0);
    assert_eq!(m.run_xdp(Dir::Up, 0, &f).sub_class, 4);
    m.subs_v6.insert(Ipv6Addr::from(SUB6), [2, 0]);
    assert_eq!(m.run_xdp(Dir::Up, 0, &f).sub_class, 2);
    // An exact /128 entry wins even when its class for this direction is 0.
    m.subs_v6.insert(Ipv6Addr::from(SUB6), [0, 0]);
    assert_eq!(m.run_xdp(Dir::Up, 0, &f).sub_class, 0);
    assert_eq!(m.run_xdp(Dir::Down, 0, &f).sub_class, 0);
}
