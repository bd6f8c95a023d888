//! §5 ICMP answers sent with XDP_TX: IPv4 fragmentation needed and ICMPv6 packet too big.

use super::csum::{checksum, fold, put16, sum_bytes};
use super::parse::Parsed;

/// Bytes of the offending IPv6 packet quoted in a packet-too-big answer (1280 − 40 − 8).
pub const PTB_QUOTE: usize = 1232;

/// The L2 header of `frame` (up to the IP header) with MACs swapped and, for PPPoE, the
/// session length set to `new_l3_len + 2`.
fn l2_swapped(frame: &[u8], p: &Parsed, new_l3_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.l3 + new_l3_len);
    out.extend_from_slice(&frame[..p.l3]);
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[0..6]);
    if let Some(pp) = p.pppoe {
        put16(&mut out, pp + 4, (new_l3_len + 2) as u16);
    }
    out
}

/// ICMP type 3 code 4 answering the IPv4 packet `p` in `frame`, next-hop MTU `mtu`.
#[must_use]
pub fn frag_needed_v4(frame: &[u8], p: &Parsed, mtu: u16) -> Vec<u8> {
    let l3 = p.l3;
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    let quote = &frame[l3..l3 + (ihl + 8).min(p.l3_len)];
    let tot = 20 + 8 + quote.len();
    let mut out = l2_swapped(frame, p, tot);
    let ip = out.len();
    out.extend_from_slice(&[0x45, 0x00]);
    out.extend_from_slice(&(tot as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
    out.extend_from_slice(&frame[l3 + 16..l3 + 20]); // src = offending dst
    out.extend_from_slice(&frame[l3 + 12..l3 + 16]); // dst = offending src
    let c = checksum(&out[ip..ip + 20]);
    put16(&mut out, ip + 10, c);
    let ic = out.len();
    out.extend_from_slice(&[3, 4, 0, 0, 0, 0]);
    out.extend_from_slice(&mtu.to_be_bytes());
    out.extend_from_slice(quote);
    let c = checksum(&out[ic..]);
    put16(&mut out, ic + 2, c);
    out
}

/// ICMPv6 type 2 answering the IPv6 packet `p` in `frame`, MTU `mtu`.
#[must_use]
pub fn ptb_v6(frame: &[u8], p: &Parsed, mtu: u32) -> Vec<u8> {
    let l3 = p.l3;
    let quote = &frame[l3..l3 + PTB_QUOTE.min(p.l3_len)];
    let plen = 8 + quote.len();
    let mut out = l2_swapped(frame, p, 40 + plen);
    let ip = out.len();
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&(plen as u16).to_be_bytes());
    out.extend_from_slice(&[58, 64]);
    out.extend_from_slice(&frame[l3 + 24..l3 + 40]); // src = offending dst
    out.extend_from_slice(&frame[l3 + 8..l3 + 24]); // dst = offending src
    let ic = out.len();
    out.extend_from_slice(&[2, 0, 0, 0]);
    out.extend_from_slice(&mtu.to_be_bytes());
    out.extend_from_slice(quote);
    // Pseudo-header: addresses, upper-layer length (32 bit), next header.
    let mut sum = sum_bytes(0, &out[ip + 8..ip + 40]);
    sum += plen as u64 + 58;
    sum = sum_bytes(sum, &out[ic..]);
    put16(&mut out, ic + 2, !fold(sum));
    out
}
