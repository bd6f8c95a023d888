//! Frame generation and mutation: Ethernet, VLAN tags, PPPoE, IPv4 / IPv6 with options and
//! extension headers, TCP / UDP / SCTP / ICMP with valid checksums.

use rand::Rng;
use rand::seq::SliceRandom;

use super::Generator;
use crate::model::csum::{checksum, fold, put16, sum_bytes};
use crate::model::parse::{ParseResult, parse};

const MSS_VALUES: [u16; 12] = [
    536, 1200, 1220, 1240, 1260, 1380, 1400, 1440, 1460, 1500, 8960, 9000,
];
const VLAN_TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

impl Generator {
    // ---- frames ------------------------------------------------------------------------------

    fn l3_payload_len(&mut self) -> usize {
        match self.rng.gen_range(0..10) {
            0..=2 => self.rng.gen_range(0..100),
            3..=5 => self.rng.gen_range(100..1300),
            6..=8 => self.rng.gen_range(1200..1480),
            _ => self.rng.gen_range(1480..1960),
        }
    }

    fn tcp_options(&mut self, syn: bool) -> Vec<u8> {
        let mut o = Vec::new();
        let mut parts: Vec<Vec<u8>> = Vec::new();
        if syn || self.chance(0.1) {
            let v = if self.chance(0.8) {
                *MSS_VALUES.choose(&mut self.rng).expect("mss")
            } else {
                self.rng.gen_range(0..=u16::MAX)
            };
            let mut mss = vec![2, 4];
            mss.extend_from_slice(&v.to_be_bytes());
            if self.chance(0.05) {
                mss = vec![2, 6, mss[2], mss[3], 0, 0]; // wrong length: never clamped
            }
            parts.push(mss);
            if self.chance(0.05) {
                let v: u16 = self.rng.gen_range(536..=9000);
                parts.push(vec![2, 4, (v >> 8) as u8, v as u8]);
            }
        }
        if self.chance(0.5) {
            parts.push(vec![3, 3, self.rng.gen_range(0..15)]);
        }
        if self.chance(0.5) {
            parts.push(vec![4, 2]);
        }
        if self.chance(0.4) {
            let mut ts = vec![8, 10];
            ts.extend(self.bytes(8));
            parts.push(ts);
        }
        parts.shuffle(&mut self.rng);
        for part in parts {
            let nops = self.rng.gen_range(0..=2);
            o.resize(o.len() + nops, 1);
            if o.len() + part.len() > 40 {
                break;
            }
            o.extend(part);
        }
        o.truncate(40);
        let pad = if self.chance(0.5) { 1 } else { 0 };
        while o.len() % 4 != 0 {
            o.push(pad);
        }
        o
    }

    /// L4 segment of `proto` with `payload` bytes, checksummed with the pseudo-header sum
    /// `pseudo` (addresses only; length and protocol are added here).
    fn l4(&mut self, proto: u8, payload: usize, pseudo: u64, v6: bool) -> Vec<u8> {
        let mut s = match proto {
            6 => {
                let flags = match self.rng.gen_range(0..10) {
                    0..=3 => 0x02,
                    4..=5 => 0x12,
                    6 => 0x02 | (self.byte() & 0xed),
                    _ => self.byte() & 0xfd,
                };
                let opts = self.tcp_options(flags & 0x02 != 0);
                let mut h = Vec::with_capacity(20 + opts.len() + payload);
                let (sp, dp) = (self.port(), self.port());
                h.extend_from_slice(&sp.to_be_bytes());
                h.extend_from_slice(&dp.to_be_bytes());
                h.extend(self.bytes(8));
                h.push((((20 + opts.len()) / 4) << 4) as u8);
                h.push(flags);
                h.extend(self.bytes(2));
                h.extend_from_slice(&[0, 0, 0, 0]);
                h.extend(opts);
                h
            }
            17 => {
                let mut h = Vec::new();
                let (sp, dp) = (self.port(), self.port());
                h.extend_from_slice(&sp.to_be_bytes());
                h.extend_from_slice(&dp.to_be_bytes());
                h.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
                h.extend_from_slice(&[0, 0]);
                h
            }
            132 => {
                let mut h = Vec::new();
                let (sp, dp) = (self.port(), self.port());
                h.extend_from_slice(&sp.to_be_bytes());
                h.extend_from_slice(&dp.to_be_bytes());
                h.extend(self.bytes(8));
                h
            }
            1 | 58 => {
                let types: &[u8] = if proto == 1 {
                    &[0, 8, 3, 3, 11, 4, 5, 12, 13, 42]
                } else {
                    &[1, 2, 3, 4, 128, 129, 133, 135, 136, 200]
                };
                let t = if self.chance(0.9) {
                    *types.choose(&mut self.rng).expect("types")
                } else {
                    self.byte()
                };
                let mut h = vec![t, self.rng.gen_range(0..5), 0, 0];
                h.extend(self.bytes(4));
                h
            }
            _ => Vec::new(),
        };
        // ICMP timestamps need 20 bytes in etherparse's eyes: keep ICMP at least that long.
        let payload = if matches!(proto, 1 | 58) {
            payload.max(12)
        } else {
            payload
        };
        s.extend(self.bytes(payload));
        let len = s.len();
        let csum_at = match proto {
            6 => Some(16),
            17 if v6 || self.chance(0.9) => Some(6),
            1 => Some(2),
            58 => Some(2),
            _ => None,
        };
        if let Some(at) = csum_at {
            let pseudo = if proto == 1 && !v6 {
                0
            } else {
                pseudo + len as u64 + u64::from(proto)
            };
            let mut c = !fold(sum_bytes(pseudo, &s));
            if proto == 17 && c == 0 {
                c = 0xffff;
            }
            put16(&mut s, at, c);
        }
        s
    }

    fn pick_proto(&mut self, v6: bool) -> u8 {
        match self.rng.gen_range(0..20) {
            0..=7 => 6,
            8..=12 => 17,
            13 => 132,
            14..=15 => {
                if v6 {
                    58
                } else {
                    1
                }
            }
            16 => 47,
            17 => 50,
            18 => {
                if v6 {
                    1
                } else {
                    58
                }
            }
            _ => loop {
                // Any other number; under IPv6 not an extension header (that needs its bytes).
                let b = self.byte();
                if !v6 || !matches!(b, 0 | 43 | 44 | 51 | 60) {
                    break b;
                }
            },
        }
    }

    /// A random IPv4 packet (header checksum and L4 checksum valid).
    pub fn ipv4_packet(&mut self) -> Vec<u8> {
        let ihl = if self.chance(0.85) {
            5
        } else {
            self.rng.gen_range(6..=15)
        };
        let proto = self.pick_proto(false);
        let (src, dst) = (self.v4_addr().octets(), self.v4_addr().octets());
        let pseudo = sum_bytes(sum_bytes(0, &src), &dst);
        let payload = self.l3_payload_len().saturating_sub(ihl * 4 + 20);
        let l4 = self.l4(proto, payload, pseudo, false);
        let tot = ihl * 4 + l4.len();
        let mut frag: u16 = 0;
        if self.chance(0.5) {
            frag |= 0x4000;
        }
        if self.chance(0.08) {
            frag |= 0x2000;
        }
        if self.chance(0.08) {
            frag |= self.rng.gen_range(1..0x2000);
        }
        let mut h = vec![0x40 | ihl as u8, self.byte()];
        h.extend_from_slice(&(tot as u16).to_be_bytes());
        h.extend(self.bytes(2));
        h.extend_from_slice(&frag.to_be_bytes());
        h.push(self.rng.gen_range(1..=255));
        h.push(proto);
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        let opts = (ihl - 5) * 4;
        for i in 0..opts {
            h.push(if i + 1 == opts || self.chance(0.8) {
                1
            } else {
                0
            });
        }
        let c = checksum(&h);
        put16(&mut h, 10, c);
        h.extend(l4);
        h
    }

    fn ext_header(&mut self, kind: u8, next: u8) -> Vec<u8> {
        match kind {
            44 => {
                let mut fo: u16 = 0;
                if self.chance(0.4) {
                    fo = self.rng.gen_range(0..0x2000) << 3 | u16::from(self.chance(0.5));
                }
                let mut h = vec![next, 0];
                h.extend_from_slice(&fo.to_be_bytes());
                h.extend(self.bytes(4));
                h
            }
            51 => {
                let l: u8 = self.rng.gen_range(1..=5);
                let mut h = vec![next, l, 0, 0];
                h.extend(self.bytes((usize::from(l) + 2) * 4 - 4));
                h
            }
            _ => {
                let l: u8 = self.rng.gen_range(0..=2);
                let mut h = vec![next, l];
                if kind == 43 {
                    // routing type 4 (SRH-like, unknown to most), segments left 0
                    h.extend_from_slice(&[self.rng.gen_range(0..=4), 0]);
                    h.extend(self.bytes(usize::from(l) * 8 + 4));
                } else {
                    // PadN option filling the header
                    let n = usize::from(l) * 8 + 6;
                    h.extend_from_slice(&[1, (n - 2) as u8]);
                    h.extend(vec![0; n - 2]);
                }
                h
            }
        }
    }

    /// A random IPv6 packet, possibly with extension headers.
    pub fn ipv6_packet(&mut self) -> Vec<u8> {
        let proto = self.pick_proto(true);
        let (src, dst) = (self.v6_addr().octets(), self.v6_addr().octets());
        let pseudo = sum_bytes(sum_bytes(0, &src), &dst);
        let mut kinds: Vec<u8> = Vec::new();
        if self.chance(0.3) {
            let n = if self.chance(0.1) {
                self.rng.gen_range(6..=9)
            } else {
                self.rng.gen_range(1..=4)
            };
            if self.chance(0.5) {
                kinds.push(0);
            }
            while kinds.len() < n {
                kinds.push(*[43u8, 60, 51, 44, 60].choose(&mut self.rng).expect("kinds"));
            }
        }
        let mut exts = Vec::new();
        for (i, &k) in kinds.iter().enumerate() {
            let next = kinds.get(i + 1).copied().unwrap_or(proto);
            exts.extend(self.ext_header(k, next));
        }
        let payload = self.l3_payload_len().saturating_sub(40 + exts.len() + 20);
        let l4 = self.l4(proto, payload, pseudo, true);
        let plen = exts.len() + l4.len();
        let tc = self.byte();
        let fl = self.rng.gen_range(0..0x10_0000u32);
        let w = 6u32 << 28 | u32::from(tc) << 20 | fl;
        let mut h = w.to_be_bytes().to_vec();
        h.extend_from_slice(&(plen as u16).to_be_bytes());
        h.push(kinds.first().copied().unwrap_or(proto));
        h.push(self.rng.gen_range(1..=255));
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h.extend(exts);
        h.extend(l4);
        h
    }

    /// A random Ethernet frame: VLAN tags, PPPoE, non-IP, IPv4/IPv6, padding.
    pub fn random_frame(&mut self) -> Vec<u8> {
        let mut f = Vec::with_capacity(1600);
        let (a, b) = (
            *self.macs.choose(&mut self.rng).expect("m"),
            *self.macs.choose(&mut self.rng).expect("m"),
        );
        f.extend_from_slice(&a);
        f.extend_from_slice(&b);
        let tags = match self.rng.gen_range(0..100) {
            0..=59 => 0,
            60..=79 => 1,
            80..=95 => 2,
            _ => 3,
        };
        for _ in 0..tags {
            let tpid = *VLAN_TPIDS.choose(&mut self.rng).expect("tpid");
            f.extend_from_slice(&tpid.to_be_bytes());
            let tci: u16 = self.rng.gen_range(0..=u16::MAX);
            f.extend_from_slice(&tci.to_be_bytes());
        }
        let v6 = self.chance(0.45);
        let kind = self.rng.gen_range(0..100);
        if kind < 6 {
            // Non-IP: ARP, PPPoE discovery, LLDP, something else.
            let et = *[0x0806u16, 0x8863, 0x88cc, 0x1234]
                .choose(&mut self.rng)
                .expect("et");
            f.extend_from_slice(&et.to_be_bytes());
            let n = self.rng.gen_range(0..100);
            f.extend(self.bytes(n));
        } else if kind < 18 {
            f.extend_from_slice(&0x8864u16.to_be_bytes());
            let lcp = self.chance(0.1);
            let pkt = if lcp {
                let n = self.rng.gen_range(4..60);
                self.bytes(n)
            } else if v6 {
                self.ipv6_packet()
            } else {
                self.ipv4_packet()
            };
            f.extend_from_slice(&[0x11, 0]);
            f.extend(self.bytes(2));
            f.extend_from_slice(&((pkt.len() + 2) as u16).to_be_bytes());
            let ppp: u16 = if lcp {
                0xc021
            } else if v6 {
                0x0057
            } else {
                0x0021
            };
            f.extend_from_slice(&ppp.to_be_bytes());
            f.extend(pkt);
        } else {
            f.extend_from_slice(&(if v6 { 0x86ddu16 } else { 0x0800 }).to_be_bytes());
            let pkt = if v6 {
                self.ipv6_packet()
            } else {
                self.ipv4_packet()
            };
            f.extend(pkt);
        }
        if f.len() < 60 && self.chance(0.5) {
            f.resize(60, 0);
        } else if self.chance(0.1) {
            let n = self.rng.gen_range(1..30);
            f.extend(self.bytes(n));
        }
        self.clamp_len(f)
    }

    fn clamp_len(&mut self, mut f: Vec<u8>) -> Vec<u8> {
        f.truncate(self.cfg.max_len.max(1));
        if f.len() < self.cfg.min_len {
            let n = self.cfg.min_len - f.len();
            f.extend(self.bytes(n));
        }
        f
    }

    /// Interesting offsets of `f` for mutation: L2 type fields, PPPoE, IP and L4 headers.
    fn hot_offsets(&self, f: &[u8]) -> Vec<usize> {
        let mut v: Vec<usize> = vec![12, 13, 14, 16, 17, 18, 20, 21];
        if let ParseResult::Ok(p) = parse(f) {
            let l3 = p.l3;
            if let Some(pp) = p.pppoe {
                v.extend([pp, pp + 1, pp + 4, pp + 5, pp + 6, pp + 7]);
            }
            v.extend([
                l3,
                l3,
                l3 + 1,
                l3 + 2,
                l3 + 3,
                l3 + 4,
                l3 + 5,
                l3 + 6,
                l3 + 9,
            ]);
            if p.v6 {
                v.extend((l3 + 40..l3 + 104).step_by(4));
                v.extend((l3 + 41..l3 + 104).step_by(8));
            }
            if let Some(l4) = p.l4 {
                v.extend([l4 + 4, l4 + 5, l4 + 12, l4 + 12, l4 + 13]);
                v.extend(l4 + 20..l4 + p.tcp_hdr_len);
            }
        } else {
            v.extend(14..f.len().min(80));
        }
        v.retain(|&o| o < f.len());
        v
    }

    /// Truncates, flips header bytes, appends junk (one to three of these).
    pub fn mutate(&mut self, frame: &[u8]) -> Vec<u8> {
        let mut f = frame.to_vec();
        for _ in 0..self.rng.gen_range(1..=3) {
            match self.rng.gen_range(0..10) {
                0 if f.len() > 1 => {
                    let at = self.rng.gen_range(1..f.len());
                    f.truncate(at);
                }
                1 => {
                    // Truncate near a header field: inside tags, PPPoE, IP and L4 headers.
                    let hot = self.hot_offsets(&f);
                    if let Some(&at) = hot.choose(&mut self.rng) {
                        f.truncate(at + self.rng.gen_range(0..4));
                    }
                }
                2 => {
                    let n = self.rng.gen_range(1..200);
                    f.extend(self.bytes(n));
                }
                3 if !f.is_empty() => {
                    let at = self.rng.gen_range(0..f.len());
                    f[at] = self.byte();
                }
                _ => {
                    let hot = self.hot_offsets(&f);
                    if let Some(&at) = hot.choose(&mut self.rng) {
                        f[at] = match self.rng.gen_range(0..6) {
                            0 => f[at].wrapping_add(1),
                            1 => f[at].wrapping_sub(1),
                            2 => 0,
                            3 => 0xff,
                            4 => f[at] ^ (1 << self.rng.gen_range(0..8)),
                            _ => self.byte(),
                        };
                    }
                }
            }
        }
        self.clamp_len(f)
    }

    /// A random frame, mutated with probability `p_mutate`.
    pub fn frame(&mut self, p_mutate: f64) -> Vec<u8> {
        let f = self.random_frame();
        if self.chance(p_mutate) {
            self.mutate(&f)
        } else {
            f
        }
    }
}
