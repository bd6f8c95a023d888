//! Hand-built test frames: every byte is chosen here, so the tests control exactly what the
//! kernel sees. Outputs are checked with an independent parser (etherparse).
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];

pub fn csum(data: &[u8], mut sum: u32) -> u16 {
    let mut i = 0;
    while i + 1 < data.len() {
        sum += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
        i += 2;
    }
    if i < data.len() {
        sum += u32::from(data[i]) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[derive(Clone, Debug)]
pub enum L2 {
    Eth,
    Vlan(u16),
    QinQ(u16, u16),
    Pppoe(u16),
}

#[derive(Clone, Debug)]
pub enum L4 {
    Udp {
        sport: u16,
        dport: u16,
    },
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        options: Vec<u8>,
    },
    Icmp {
        ty: u8,
        code: u8,
    },
    Other,
}

#[derive(Clone, Debug)]
pub struct Ip {
    pub v6: bool,
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    pub tos: u8,
    pub df: bool,
    pub proto_override: Option<u8>,
}

impl Ip {
    pub fn v4(src: &str, dst: &str) -> Self {
        Self {
            v6: false,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            tos: 0,
            df: false,
            proto_override: None,
        }
    }
    pub fn v6(src: &str, dst: &str) -> Self {
        Self {
            v6: true,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            tos: 0,
            df: false,
            proto_override: None,
        }
    }
}

fn addr_bytes(a: std::net::IpAddr) -> Vec<u8> {
    match a {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// L4 header + payload with a correct checksum for the pseudo-header of `ip`.
fn l4_bytes(ip: &Ip, l4: &L4, payload: usize) -> (u8, Vec<u8>) {
    let (proto, mut b, csum_off) = match l4 {
        L4::Udp { sport, dport } => {
            let mut b = Vec::new();
            b.extend(sport.to_be_bytes());
            b.extend(dport.to_be_bytes());
            b.extend(((8 + payload) as u16).to_be_bytes());
            b.extend([0, 0]);
            (17u8, b, Some(6))
        }
        L4::Tcp {
            sport,
            dport,
            flags,
            options,
        } => {
            assert!(options.len() % 4 == 0);
            let mut b = Vec::new();
            b.extend(sport.to_be_bytes());
            b.extend(dport.to_be_bytes());
            b.extend(1000u32.to_be_bytes());
            b.extend(0u32.to_be_bytes());
            b.push((((20 + options.len()) / 4) as u8) << 4);
            b.push(*flags);
            b.extend(65535u16.to_be_bytes());
            b.extend([0, 0, 0, 0]);
            b.extend(options);
            (6u8, b, Some(16))
        }
        L4::Icmp { ty, code } => {
            let proto = if ip.v6 { 58 } else { 1 };
            (proto, vec![*ty, *code, 0, 0, 0, 0, 0, 0], Some(2))
        }
        L4::Other => (47u8, Vec::new(), None),
    };
    b.extend((0..payload).map(|i| (i % 251) as u8));
    let proto = ip.proto_override.unwrap_or(proto);
    if let Some(off) = csum_off {
        let mut pseudo = Vec::new();
        if proto != 1 {
            pseudo.extend(addr_bytes(ip.src));
            pseudo.extend(addr_bytes(ip.dst));
            if ip.v6 {
                pseudo.extend((b.len() as u32).to_be_bytes());
                pseudo.extend([0, 0, 0, proto]);
            } else {
                pseudo.extend([0, proto]);
                pseudo.extend((b.len() as u16).to_be_bytes());
            }
        }
        let mut all = pseudo;
        all.extend(&b);
        let c = csum(&all, 0);
        b[off..off + 2].copy_from_slice(&c.to_be_bytes());
    }
    (proto, b)
}

/// A whole frame: L2 + IP + L4 + `payload` bytes.
pub fn frame(l2: &L2, ip: &Ip, l4: &L4, payload: usize) -> Vec<u8> {
    let (proto, l4b) = l4_bytes(ip, l4, payload);
    let mut l3 = Vec::new();
    if ip.v6 {
        l3.push(0x60 | (ip.tos >> 4));
        l3.push(ip.tos << 4);
        l3.extend([0, 0]);
        l3.extend((l4b.len() as u16).to_be_bytes());
        l3.push(proto);
        l3.push(64);
        l3.extend(addr_bytes(ip.src));
        l3.extend(addr_bytes(ip.dst));
    } else {
        l3.push(0x45);
        l3.push(ip.tos);
        l3.extend(((20 + l4b.len()) as u16).to_be_bytes());
        l3.extend([0x12, 0x34]);
        l3.extend(if ip.df { [0x40, 0] } else { [0, 0] });
        l3.push(64);
        l3.push(proto);
        l3.extend([0, 0]);
        l3.extend(addr_bytes(ip.src));
        l3.extend(addr_bytes(ip.dst));
        let c = csum(&l3, 0);
        l3[10..12].copy_from_slice(&c.to_be_bytes());
    }
    l3.extend(l4b);
    let et: u16 = if ip.v6 { 0x86dd } else { 0x0800 };
    let mut f = Vec::new();
    f.extend(MAC_B);
    f.extend(MAC_A);
    match l2 {
        L2::Eth => f.extend(et.to_be_bytes()),
        L2::Vlan(id) => {
            f.extend([0x81, 0x00]);
            f.extend(id.to_be_bytes());
            f.extend(et.to_be_bytes());
        }
        L2::QinQ(o, i) => {
            f.extend([0x88, 0xa8]);
            f.extend(o.to_be_bytes());
            f.extend([0x81, 0x00]);
            f.extend(i.to_be_bytes());
            f.extend(et.to_be_bytes());
        }
        L2::Pppoe(sid) => {
            f.extend([0x88, 0x64, 0x11, 0x00]);
            f.extend(sid.to_be_bytes());
            f.extend(((l3.len() + 2) as u16).to_be_bytes());
            f.extend(if ip.v6 { [0x00, 0x57] } else { [0x00, 0x21] });
        }
    }
    f.extend(l3);
    f
}

pub fn udp4(src: &str, dst: &str, sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    frame(
        &L2::Eth,
        &Ip::v4(src, dst),
        &L4::Udp { sport, dport },
        payload,
    )
}

pub fn udp6(src: &str, dst: &str, sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    frame(
        &L2::Eth,
        &Ip::v6(src, dst),
        &L4::Udp { sport, dport },
        payload,
    )
}

/// TCP options with an MSS option at `nops` NOPs from the start (so at an odd offset when
/// `nops` is odd), padded to a multiple of 4.
pub fn mss_options(mss: u16, nops: usize) -> Vec<u8> {
    let mut o = vec![1u8; nops];
    o.extend([2, 4]);
    o.extend(mss.to_be_bytes());
    while !o.len().is_multiple_of(4) {
        o.push(0);
    }
    o
}
