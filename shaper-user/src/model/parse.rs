//! §1 Parse: Ethernet, up to two VLAN tags, PPPoE session, IPv4 / IPv6 (+ extension headers),
//! L4 ports. Every read is bounds-checked against the frame; failures carry `SHAPER_PE_*`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::csum::be16;

pub use crate::abi::{PE_ETH, PE_IPV4, PE_IPV6, PE_IPV6_EXT, PE_L4, PE_NONE, PE_PPPOE, PE_VLAN};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_PPPOE_SES: u16 = 0x8864;
pub const PPP_IP: u16 = 0x0021;
pub const PPP_IPV6: u16 = 0x0057;

/// Ethertypes taken as VLAN tags.
pub fn is_vlan(et: u16) -> bool {
    matches!(et, 0x8100 | 0x88a8 | 0x9100)
}

/// At most this many VLAN tags; one more is *unsupported*.
pub const MAX_VLAN: usize = 2;
/// At most this many IPv6 extension headers; one more is *unsupported*.
pub const MAX_EXT: usize = 6;

/// The fields of an *ok* packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Offset of the IP header in the frame.
    pub l3: usize,
    /// L3 length: IPv4 total length, or 40 + IPv6 payload length.
    pub l3_len: usize,
    /// Offset of the PPPoE header, when the packet came in a PPPoE session.
    pub pppoe: Option<usize>,
    pub v6: bool,
    /// IPv4 protocol, or the IPv6 L4 protocol after the extension headers (for an IPv6
    /// fragment: the fragment header's next header).
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// 0 for fragments and port-less protocols.
    pub sport: u16,
    pub dport: u16,
    /// A fragment (IPv4 MF or offset ≠ 0; IPv6 fragment header with M or offset ≠ 0): no L4.
    pub frag: bool,
    /// IPv4 fragment offset ≠ 0.
    pub frag_offset_nonzero: bool,
    /// IPv4 DF bit.
    pub df: bool,
    /// Offset of the L4 header when it was parsed (not for fragments).
    pub l4: Option<usize>,
    /// TCP flags byte (0 unless TCP was parsed).
    pub tcp_flags: u8,
    /// TCP header length in bytes (`doff * 4`), 0 unless TCP was parsed.
    pub tcp_hdr_len: usize,
    /// ICMP / ICMPv6 type when such a header was parsed.
    pub icmp_type: Option<u8>,
}

impl Parsed {
    /// End of the L3 packet in the frame.
    #[must_use]
    pub fn l3_end(&self) -> usize {
        self.l3 + self.l3_len
    }
}

/// Outcome of §1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseResult {
    Ok(Parsed),
    NonIp,
    /// Malformed, with the `SHAPER_PE_*` code.
    Malformed(u32),
    Unsupported,
}

/// Parses a frame per DATAPLANE.md §1.
#[must_use]
pub fn parse(f: &[u8]) -> ParseResult {
    let n = f.len();
    if n < 14 {
        return ParseResult::Malformed(PE_ETH);
    }
    let mut et = be16(f, 12);
    let mut off = 14;
    let mut tags = 0;
    while is_vlan(et) {
        if tags == MAX_VLAN {
            return ParseResult::Unsupported;
        }
        if off + 4 > n {
            return ParseResult::Malformed(PE_VLAN);
        }
        et = be16(f, off + 2);
        off += 4;
        tags += 1;
    }
    let mut pppoe = None;
    let v6 = if et == ETH_P_PPPOE_SES {
        let p = off;
        if p + 8 > n {
            return ParseResult::Malformed(PE_PPPOE);
        }
        let len = usize::from(be16(f, p + 4));
        if f[p] != 0x11 || f[p + 1] != 0 || len < 2 || p + 6 + len > n {
            return ParseResult::Malformed(PE_PPPOE);
        }
        pppoe = Some(p);
        off = p + 8;
        match be16(f, p + 6) {
            PPP_IP => false,
            PPP_IPV6 => true,
            _ => return ParseResult::NonIp,
        }
    } else {
        match et {
            ETH_P_IP => false,
            ETH_P_IPV6 => true,
            _ => return ParseResult::NonIp,
        }
    };
    if v6 {
        parse_v6(f, off, pppoe)
    } else {
        parse_v4(f, off, pppoe)
    }
}

fn parse_v4(f: &[u8], l3: usize, pppoe: Option<usize>) -> ParseResult {
    let n = f.len();
    if l3 + 20 > n {
        return ParseResult::Malformed(PE_IPV4);
    }
    let ihl = usize::from(f[l3] & 0x0f) * 4;
    let tot = usize::from(be16(f, l3 + 2));
    if f[l3] >> 4 != 4 || ihl < 20 || l3 + ihl > n || tot < ihl || l3 + tot > n {
        return ParseResult::Malformed(PE_IPV4);
    }
    let frag_field = be16(f, l3 + 6);
    let mf = frag_field & 0x2000 != 0;
    let offset_nz = frag_field & 0x1fff != 0;
    let src = IpAddr::V4(Ipv4Addr::new(
        f[l3 + 12],
        f[l3 + 13],
        f[l3 + 14],
        f[l3 + 15],
    ));
    let dst = IpAddr::V4(Ipv4Addr::new(
        f[l3 + 16],
        f[l3 + 17],
        f[l3 + 18],
        f[l3 + 19],
    ));
    let mut p = Parsed {
        l3,
        l3_len: tot,
        pppoe,
        v6: false,
        proto: f[l3 + 9],
        src,
        dst,
        sport: 0,
        dport: 0,
        frag: mf || offset_nz,
        frag_offset_nonzero: offset_nz,
        df: frag_field & 0x4000 != 0,
        l4: None,
        tcp_flags: 0,
        tcp_hdr_len: 0,
        icmp_type: None,
    };
    if !p.frag
        && let Err(e) = parse_l4(f, &mut p, l3 + ihl)
    {
        return ParseResult::Malformed(e);
    }
    ParseResult::Ok(p)
}

fn parse_v6(f: &[u8], l3: usize, pppoe: Option<usize>) -> ParseResult {
    let n = f.len();
    if l3 + 40 > n {
        return ParseResult::Malformed(PE_IPV6);
    }
    let plen = usize::from(be16(f, l3 + 4));
    if f[l3] >> 4 != 6 || l3 + 40 + plen > n {
        return ParseResult::Malformed(PE_IPV6);
    }
    let end = l3 + 40 + plen;
    let mut a = [0u8; 16];
    a.copy_from_slice(&f[l3 + 8..l3 + 24]);
    let src = IpAddr::V6(Ipv6Addr::from(a));
    a.copy_from_slice(&f[l3 + 24..l3 + 40]);
    let dst = IpAddr::V6(Ipv6Addr::from(a));
    let mut nh = f[l3 + 6];
    let mut off = l3 + 40;
    let mut count = 0;
    let mut frag = false;
    while matches!(nh, 0 | 43 | 60 | 51 | 44) {
        if count == MAX_EXT {
            return ParseResult::Unsupported;
        }
        count += 1;
        if off + 8 > end {
            return ParseResult::Malformed(PE_IPV6_EXT);
        }
        let hlen = match nh {
            44 => 8,
            51 => (usize::from(f[off + 1]) + 2) * 4,
            _ => (usize::from(f[off + 1]) + 1) * 8,
        };
        if off + hlen > end {
            return ParseResult::Malformed(PE_IPV6_EXT);
        }
        if nh == 44 {
            let fo = be16(f, off + 2);
            if fo & 0xfff8 != 0 || fo & 1 != 0 {
                frag = true;
                nh = f[off];
                break;
            }
        }
        nh = f[off];
        off += hlen;
    }
    let mut p = Parsed {
        l3,
        l3_len: 40 + plen,
        pppoe,
        v6: true,
        proto: nh,
        src,
        dst,
        sport: 0,
        dport: 0,
        frag,
        frag_offset_nonzero: false,
        df: false,
        l4: None,
        tcp_flags: 0,
        tcp_hdr_len: 0,
        icmp_type: None,
    };
    if !frag && let Err(e) = parse_l4(f, &mut p, off) {
        return ParseResult::Malformed(e);
    }
    ParseResult::Ok(p)
}

/// §1.7: the L4 header must lie within the L3 length.
fn parse_l4(f: &[u8], p: &mut Parsed, l4: usize) -> Result<(), u32> {
    let end = p.l3_end();
    let need = |k: usize| if l4 + k <= end { Ok(()) } else { Err(PE_L4) };
    match p.proto {
        6 => {
            need(20)?;
            let doff = usize::from(f[l4 + 12] >> 4) * 4;
            if doff < 20 {
                return Err(PE_L4);
            }
            need(doff)?;
            p.sport = be16(f, l4);
            p.dport = be16(f, l4 + 2);
            p.tcp_flags = f[l4 + 13];
            p.tcp_hdr_len = doff;
        }
        17 => {
            need(8)?;
            p.sport = be16(f, l4);
            p.dport = be16(f, l4 + 2);
        }
        132 => {
            need(12)?;
            p.sport = be16(f, l4);
            p.dport = be16(f, l4 + 2);
        }
        // The contract lists the check by protocol number, so 1 and 58 are checked in either
        // family (the MTU step only treats the family's own ICMP as ICMP).
        1 | 58 => {
            need(4)?;
            p.icmp_type = Some(f[l4]);
        }
        _ => return Ok(()),
    }
    p.l4 = Some(l4);
    Ok(())
}
