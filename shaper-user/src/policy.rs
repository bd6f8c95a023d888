//! Policy objects shared by the data-plane loader, the reference model and the controller:
//! classes (what to do), subscribers (who) and rules (which provider/application traffic).
//!
//! Validation lives here so that every path into the data plane refuses the same bad input
//! with the same error, before anything is written.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Smallest L3 MTU a class may carry. The policy applies to IPv4 and IPv6 alike and IPv6 is
/// never told to go below 1280 bytes (RFC 8200 §5), so 1280 is the floor for both.
pub const MIN_MTU: u16 = 1280;

/// What the data plane does with the packets of one class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClassConfig {
    /// Policer rate in bit/s of L3 bytes; `None` = no policer.
    pub rate_bps: Option<u64>,
    /// Policer bucket depth in bytes (required with a rate; at least one MTU).
    pub burst_bytes: u32,
    /// DSCP to mark, 0..=63; `None` keeps the packet's DSCP.
    pub dscp: Option<u8>,
    /// L3 MTU policy; `None` = no MTU policy.
    pub mtu: Option<u16>,
    /// `skb->priority` for TC egress (HTB classid `major:minor` as `major << 16 | minor`).
    pub skb_priority: u32,
    /// Drop all traffic of the class (DOCSIS network access off).
    pub block: bool,
    /// Subscribers on the class share one bucket (a modem's addresses). Without it the class
    /// is a plan: each subscriber on it has a bucket of its own. Rules always share theirs.
    pub shared_bucket: bool,
}

/// Errors in a policy object, each naming the field and the value that was wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("class {class}: rate must be at least 8 bit/s, got {rate}")]
    RateTooLow { class: u32, rate: u64 },
    #[error("class {class}: rate {rate} bit/s is above the 400 Gbit/s the policer represents")]
    RateTooHigh { class: u32, rate: u64 },
    #[error("class {class}: burst {burst} bytes is smaller than one MTU ({mtu} bytes)")]
    BurstTooSmall { class: u32, burst: u32, mtu: u32 },
    #[error("class {class}: dscp {dscp} is outside 0..=63")]
    BadDscp { class: u32, dscp: u8 },
    #[error("class {class}: mtu {mtu} is below the minimum {min}")]
    MtuTooSmall { class: u32, mtu: u16, min: u16 },
    #[error("class id 0 is reserved for \"no class\"")]
    ReservedClass,
    #[error("class id {class} is beyond the data plane's {max} classes")]
    ClassOutOfRange { class: u32, max: u32 },
    #[error("rule {rule}: {what} prefix length {len} is longer than {max}")]
    BadPrefix {
        rule: u32,
        what: &'static str,
        len: u8,
        max: u8,
    },
    #[error("rule {rule}: source and destination prefixes are of different address families")]
    MixedFamily { rule: u32 },
    #[error("rule {rule}: {what} port range {lo}-{hi} is empty")]
    EmptyPortRange {
        rule: u32,
        what: &'static str,
        lo: u16,
        hi: u16,
    },
    #[error("rule {rule}: ports given for protocol {proto}, which has none")]
    PortsWithoutPortProtocol { rule: u32, proto: u8 },
    #[error("rules {a} and {b} overlap and share precedence {precedence}")]
    OverlapSamePrecedence { a: u32, b: u32, precedence: u32 },
    #[error("rule {rule}: duplicate rule id")]
    DuplicateRule { rule: u32 },
    #[error("rule {rule}: class {class} does not exist")]
    UnknownClass { rule: u32, class: u32 },
}

/// Largest policer rate: 400 Gbit/s keeps `ns_per_byte_q16` meaningful (≥ 1310).
pub const MAX_RATE_BPS: u64 = 400_000_000_000;

impl ClassConfig {
    /// Checks the class against the rules in `docs/DATAPLANE.md`: rate ≥ 8 bit/s, burst at
    /// least one MTU (the class MTU, or 1500 without one), DSCP 0..=63, MTU ≥ 1280.
    pub fn validate(&self, class: u32) -> Result<(), PolicyError> {
        if class == 0 {
            return Err(PolicyError::ReservedClass);
        }
        if let Some(mtu) = self.mtu {
            if mtu < MIN_MTU {
                return Err(PolicyError::MtuTooSmall {
                    class,
                    mtu,
                    min: MIN_MTU,
                });
            }
        }
        if let Some(rate) = self.rate_bps {
            if rate < 8 {
                return Err(PolicyError::RateTooLow { class, rate });
            }
            if rate > MAX_RATE_BPS {
                return Err(PolicyError::RateTooHigh { class, rate });
            }
            let mtu = u32::from(self.mtu.unwrap_or(1500));
            if self.burst_bytes < mtu {
                return Err(PolicyError::BurstTooSmall {
                    class,
                    burst: self.burst_bytes,
                    mtu,
                });
            }
        }
        if let Some(dscp) = self.dscp {
            if dscp > 63 {
                return Err(PolicyError::BadDscp { class, dscp });
            }
        }
        Ok(())
    }

    /// Policer cost of one byte in ns, fixed point with 16 fractional bits; 0 = no policer.
    #[must_use]
    pub fn ns_per_byte_q16(&self) -> u64 {
        match self.rate_bps {
            // 8e9 ns·bit/s per byte, << 16; the quotient fits u64 for rate ≥ 8.
            Some(rate) if rate > 0 => ((8_000_000_000u128 << 16) / u128::from(rate)) as u64,
            _ => 0,
        }
    }

    /// Bucket depth in ns: the time the burst takes at the rate.
    #[must_use]
    pub fn burst_ns(&self) -> u64 {
        // In 128 bits: a 4 GiB burst at 8 bit/s overflows 64 bits before the shift (the
        // result, 136 years in ns, still fits; anything longer saturates).
        let ns = (u128::from(self.burst_bytes) * u128::from(self.ns_per_byte_q16())) >> 16;
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

/// An IP prefix (address + length), host bits allowed but ignored when matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    #[must_use]
    pub fn any_v4() -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            len: 0,
        }
    }
    #[must_use]
    pub fn any_v6() -> Self {
        Self {
            addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            len: 0,
        }
    }
    #[must_use]
    pub fn is_v4(&self) -> bool {
        self.addr.is_ipv4()
    }
    #[must_use]
    pub fn max_len(&self) -> u8 {
        if self.is_v4() { 32 } else { 128 }
    }
    /// The address as 16 bytes (IPv4 in the first 4) with host bits cleared.
    #[must_use]
    pub fn masked_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        match self.addr {
            IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => b.copy_from_slice(&a.octets()),
        }
        mask_bytes(&mut b, self.len);
        b
    }
    /// The address with host bits cleared.
    #[must_use]
    pub fn masked_addr(&self) -> IpAddr {
        let b = self.masked_bytes();
        if self.is_v4() {
            IpAddr::from([b[0], b[1], b[2], b[3]])
        } else {
            IpAddr::from(b)
        }
    }
    /// Does `addr` (same family) fall inside the prefix?
    #[must_use]
    pub fn contains(&self, addr: IpAddr) -> bool {
        let other = Prefix {
            addr,
            len: self.len,
        };
        addr.is_ipv4() == self.is_v4() && other.masked_bytes() == self.masked_bytes()
    }
    /// Do the two prefixes share any address?
    #[must_use]
    pub fn overlaps(&self, other: &Prefix) -> bool {
        if self.is_v4() != other.is_v4() {
            return false;
        }
        let len = self.len.min(other.len);
        let a = Prefix {
            addr: self.addr,
            len,
        }
        .masked_bytes();
        let b = Prefix {
            addr: other.addr,
            len,
        }
        .masked_bytes();
        a == b
    }
}

/// Clears every bit of `b` after the first `len` bits.
pub fn mask_bytes(b: &mut [u8], len: u8) {
    let len = usize::from(len);
    for (i, byte) in b.iter_mut().enumerate() {
        let bit = i * 8;
        if bit >= len {
            *byte = 0;
        } else if bit + 8 > len {
            *byte &= 0xffu8 << (8 - (len - bit));
        }
    }
}

/// Inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };
    #[must_use]
    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }
    #[must_use]
    pub fn overlaps(&self, o: &PortRange) -> bool {
        self.lo <= o.hi && o.lo <= self.hi
    }
}

/// A provider/application rule: literal packet fields → class. Lower precedence wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The controller's identifier, unique within a rule set.
    pub id: u32,
    /// IP protocol number; `None` = any protocol.
    pub proto: Option<u8>,
    pub src: Prefix,
    pub dst: Prefix,
    pub sport: PortRange,
    pub dport: PortRange,
    pub precedence: u32,
    pub class: u32,
}

/// Protocols whose packets carry ports the data plane reads.
#[must_use]
pub fn proto_has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132)
}

impl Rule {
    /// Checks one rule on its own.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let rule = self.id;
        if self.src.is_v4() != self.dst.is_v4() {
            return Err(PolicyError::MixedFamily { rule });
        }
        for (what, p) in [("source", &self.src), ("destination", &self.dst)] {
            if p.len > p.max_len() {
                return Err(PolicyError::BadPrefix {
                    rule,
                    what,
                    len: p.len,
                    max: p.max_len(),
                });
            }
        }
        for (what, r) in [("source", &self.sport), ("destination", &self.dport)] {
            if r.lo > r.hi {
                return Err(PolicyError::EmptyPortRange {
                    rule,
                    what,
                    lo: r.lo,
                    hi: r.hi,
                });
            }
        }
        if let Some(proto) = self.proto {
            let ports_given = self.sport != PortRange::ANY || self.dport != PortRange::ANY;
            // Port-less protocols are seen with ports 0; a range excluding 0 could never match.
            if ports_given
                && !proto_has_ports(proto)
                && (!self.sport.contains(0) || !self.dport.contains(0))
            {
                return Err(PolicyError::PortsWithoutPortProtocol { rule, proto });
            }
        }
        Ok(())
    }

    /// Can one packet match both rules?
    #[must_use]
    pub fn overlaps(&self, o: &Rule) -> bool {
        let proto = match (self.proto, o.proto) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        proto
            && self.src.overlaps(&o.src)
            && self.dst.overlaps(&o.dst)
            && self.sport.overlaps(&o.sport)
            && self.dport.overlaps(&o.dport)
    }

    /// Does the rule match these packet fields? Ports are 0 for port-less packets.
    #[must_use]
    pub fn matches(&self, proto: u8, src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> bool {
        self.proto.is_none_or(|p| p == proto)
            && self.src.contains(src)
            && self.dst.contains(dst)
            && self.sport.contains(sport)
            && self.dport.contains(dport)
    }
}

/// Validates a whole rule set: each rule, unique ids, and no two overlapping rules with the
/// same precedence (the winner must be unique). O(n²) in the worst case over rules sharing a
/// precedence; rules are grouped by precedence first so typical sets check quickly.
pub fn validate_rules(rules: &[Rule]) -> Result<(), PolicyError> {
    let mut ids = std::collections::HashSet::with_capacity(rules.len());
    for r in rules {
        r.validate()?;
        if !ids.insert(r.id) {
            return Err(PolicyError::DuplicateRule { rule: r.id });
        }
    }
    let mut by_prec: std::collections::HashMap<u32, Vec<&Rule>> = std::collections::HashMap::new();
    for r in rules {
        by_prec.entry(r.precedence).or_default().push(r);
    }
    for (precedence, group) in by_prec {
        for (i, a) in group.iter().enumerate() {
            for b in &group[i + 1..] {
                if a.overlaps(b) {
                    let (a, b) = if a.id < b.id {
                        (a.id, b.id)
                    } else {
                        (b.id, a.id)
                    };
                    return Err(PolicyError::OverlapSamePrecedence { a, b, precedence });
                }
            }
        }
    }
    Ok(())
}

/// A subscriber's entry: its address (IPv4 /32, IPv6 /128 or /64) and its class per direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriberKey {
    pub addr: IpAddr,
    /// 32 for IPv4; 128 or 64 for IPv6.
    pub len: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str, len: u8) -> Prefix {
        Prefix {
            addr: s.parse().unwrap(),
            len,
        }
    }

    /// Schemathesis found it: a 4 GiB burst at 8 bit/s overflowed the 64-bit product and
    /// panicked under the controller's lock.
    #[test]
    fn the_largest_burst_at_the_lowest_rate_does_not_overflow() {
        let c = ClassConfig {
            rate_bps: Some(8),
            burst_bytes: u32::MAX - 1,
            ..Default::default()
        };
        // 1 s per byte: the burst lasts (2^32 - 2) s.
        assert_eq!(c.burst_ns(), (u64::from(u32::MAX) - 1) * 1_000_000_000);
        let c = ClassConfig {
            rate_bps: Some(10_000_000),
            burst_bytes: 15_000,
            ..Default::default()
        };
        assert_eq!(c.burst_ns(), 12_000_000, "15 kB at 10 Mbit/s: 12 ms");
    }

    #[test]
    fn burst_must_cover_an_mtu() {
        let c = ClassConfig {
            rate_bps: Some(10_000_000),
            burst_bytes: 1000,
            ..Default::default()
        };
        assert_eq!(
            c.validate(7),
            Err(PolicyError::BurstTooSmall {
                class: 7,
                burst: 1000,
                mtu: 1500
            })
        );
        let c = ClassConfig {
            burst_bytes: 1500,
            ..c
        };
        assert_eq!(c.validate(7), Ok(()));
    }

    #[test]
    fn zero_rate_and_bad_dscp_are_refused() {
        let c = ClassConfig {
            rate_bps: Some(0),
            burst_bytes: 9000,
            ..Default::default()
        };
        assert_eq!(
            c.validate(1),
            Err(PolicyError::RateTooLow { class: 1, rate: 0 })
        );
        let c = ClassConfig {
            dscp: Some(64),
            ..Default::default()
        };
        assert_eq!(
            c.validate(1),
            Err(PolicyError::BadDscp { class: 1, dscp: 64 })
        );
        assert_eq!(
            ClassConfig::default().validate(0),
            Err(PolicyError::ReservedClass)
        );
    }

    #[test]
    fn fixed_point_cost_is_exact_for_round_rates() {
        // 8 Mbit/s = 1 byte per µs = 1000 ns per byte.
        let c = ClassConfig {
            rate_bps: Some(8_000_000),
            burst_bytes: 1500,
            ..Default::default()
        };
        assert_eq!(c.ns_per_byte_q16(), 1000 << 16);
        assert_eq!(c.burst_ns(), 1_500_000);
    }

    #[test]
    fn prefixes_mask_and_overlap() {
        assert!(v4("198.18.1.0", 24).contains("198.18.1.77".parse().unwrap()));
        assert!(!v4("198.18.1.0", 24).contains("198.18.2.1".parse().unwrap()));
        assert!(v4("198.18.0.0", 16).overlaps(&v4("198.18.5.0", 24)));
        assert!(!v4("198.18.4.0", 24).overlaps(&v4("198.18.5.0", 24)));
        assert!(!v4("0.0.0.0", 0).overlaps(&Prefix::any_v6()));
        let mut b = [0xffu8; 4];
        mask_bytes(&mut b, 13);
        assert_eq!(b, [0xff, 0xf8, 0, 0]);
    }

    #[test]
    fn overlapping_rules_with_equal_precedence_are_refused() {
        let a = Rule {
            id: 1,
            proto: Some(6),
            src: Prefix::any_v4(),
            dst: v4("198.18.0.0", 16),
            sport: PortRange::ANY,
            dport: PortRange { lo: 80, hi: 443 },
            precedence: 10,
            class: 2,
        };
        let b = Rule {
            id: 2,
            dport: PortRange { lo: 443, hi: 443 },
            ..a
        };
        assert_eq!(
            validate_rules(&[a, b]),
            Err(PolicyError::OverlapSamePrecedence {
                a: 1,
                b: 2,
                precedence: 10
            })
        );
        let b = Rule {
            precedence: 11,
            ..b
        };
        assert_eq!(validate_rules(&[a, b]), Ok(()));
        let c = Rule {
            id: 3,
            dport: PortRange { lo: 444, hi: 500 },
            ..a
        };
        assert_eq!(validate_rules(&[a, c]), Ok(()));
        let d = Rule {
            id: 4,
            proto: Some(17),
            ..a
        };
        assert_eq!(validate_rules(&[a, d]), Ok(()));
    }
}
