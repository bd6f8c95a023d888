//! §2 Classify: subscriber lookup by role and the lowest-precedence matching rule.

use std::net::IpAddr;

use super::parse::Parsed;
use super::{Dir, Model};

/// What §2 found for one packet. Class ids are 0 when absent or not valid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Classification {
    pub sub_class: u32,
    pub rule_class: u32,
    /// Id of the winning rule, 0 when no rule matched (set even when its class is invalid).
    pub rule_id: u32,
    /// The subscriber entry the packet belongs to (its own bucket), when `sub_class` is set.
    pub sub: Option<SubRef>,
}

/// Which subscriber entry a packet found: the entry owns the subscriber's policer state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubRef {
    V4(std::net::Ipv4Addr),
    V6(std::net::Ipv6Addr),
    V6_64([u8; 8]),
}

impl Model {
    /// The subscriber's raw class id for `dir` (before the validity check), 0 = none.
    #[must_use]
    pub fn sub_class_raw(&self, dir: Dir, p: &Parsed) -> u32 {
        self.sub_entry(dir, p).map_or(0, |(_, c)| c)
    }

    /// The subscriber entry of the packet for `dir` and its raw class id.
    #[must_use]
    pub fn sub_entry(&self, dir: Dir, p: &Parsed) -> Option<(SubRef, u32)> {
        let addr = match dir {
            Dir::Up => p.src,
            Dir::Down => p.dst,
        };
        let d = dir as usize;
        match addr {
            IpAddr::V4(a) => self.subs_v4.get(&a).map(|v| (SubRef::V4(a), v[d])),
            IpAddr::V6(a) => {
                if let Some(v) = self.subs_v6.get(&a) {
                    return Some((SubRef::V6(a), v[d]));
                }
                let mut k = [0u8; 8];
                k.copy_from_slice(&a.octets()[..8]);
                self.subs_v6_64.get(&k).map(|v| (SubRef::V6_64(k), v[d]))
            }
        }
    }

    /// `id` if its class exists (F_VALID), else 0.
    #[must_use]
    pub fn valid(&self, id: u32) -> u32 {
        if id != 0 && self.classes.contains_key(&id) {
            id
        } else {
            0
        }
    }

    /// The matching rule with the lowest precedence, if any.
    #[must_use]
    pub fn winning_rule(&self, p: &Parsed) -> Option<&policy::Rule> {
        self.rules
            .iter()
            .filter(|r| rule_matches(r, p))
            .min_by_key(|r| (r.precedence, r.id))
    }

    /// §2 for an *ok* packet.
    #[must_use]
    pub fn classify(&self, dir: Dir, p: &Parsed) -> Classification {
        let entry = self.sub_entry(dir, p);
        let sub_class = self.valid(entry.map_or(0, |(_, c)| c));
        let sub = entry.filter(|_| sub_class != 0).map(|(r, _)| r);
        let (rule_class, rule_id) = match self.winning_rule(p) {
            Some(r) => (self.valid(r.class), r.id),
            None => (0, 0),
        };
        Classification {
            sub_class,
            rule_class,
            rule_id,
            sub,
        }
    }
}

/// §2: every field of the rule matches the packet's literal fields (ports are 0 for
/// fragments and port-less protocols, as the parser leaves them). Written here, not taken from
/// `policy::Rule::matches` (the loader's side), so a matching bug there cannot hide in both.
#[must_use]
pub fn rule_matches(r: &policy::Rule, p: &Parsed) -> bool {
    r.proto.is_none_or(|proto| proto == p.proto)
        && prefix_contains(r.src.addr, r.src.len, p.src)
        && prefix_contains(r.dst.addr, r.dst.len, p.dst)
        && (r.sport.lo..=r.sport.hi).contains(&p.sport)
        && (r.dport.lo..=r.dport.hi).contains(&p.dport)
}

/// Does `addr` share its first `len` bits with `net` (same family; host bits of `net` are
/// ignored)? The addresses as integers: the bits beyond `len` are shifted out of their XOR.
#[must_use]
pub fn prefix_contains(net: IpAddr, len: u8, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let diff = u32::from(n) ^ u32::from(a);
            len == 0 || (len <= 32 && diff >> (32 - u32::from(len)) == 0)
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let diff = u128::from(n) ^ u128::from(a);
            len == 0 || (len <= 128 && diff >> (128 - u32::from(len)) == 0)
        }
        _ => false,
    }
}

use crate::policy;

#[cfg(test)]
mod tests {
    use super::prefix_contains;

    #[test]
    fn prefix_contains_compares_the_leading_bits_only() {
        let v4 = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // Host bits of the prefix are ignored; the boundary bit decides.
        assert!(prefix_contains(v4("198.18.3.77"), 22, v4("198.18.0.1")));
        assert!(!prefix_contains(v4("198.18.3.77"), 22, v4("198.18.4.1")));
        assert!(prefix_contains(v4("198.18.0.1"), 31, v4("198.18.0.0")));
        assert!(!prefix_contains(v4("198.18.0.1"), 32, v4("198.18.0.0")));
        assert!(prefix_contains(v4("198.18.0.1"), 32, v4("198.18.0.1")));
        assert!(prefix_contains(v4("0.0.0.0"), 0, v4("255.255.255.255")));
        assert!(prefix_contains(v4("2001:db8::"), 0, v4("::1")));
        assert!(prefix_contains(
            v4("2001:db8:0:7::5"),
            61,
            v4("2001:db8:0:0:ffff::1")
        ));
        assert!(!prefix_contains(
            v4("2001:db8:0:7::5"),
            61,
            v4("2001:db8:0:8::1")
        ));
        assert!(prefix_contains(v4("2001:db8::1"), 127, v4("2001:db8::")));
        assert!(!prefix_contains(v4("2001:db8::1"), 128, v4("2001:db8::")));
        // Families never match, not even with length 0.
        assert!(!prefix_contains(v4("0.0.0.0"), 0, v4("::")));
        assert!(!prefix_contains(v4("::"), 0, v4("198.18.0.1")));
        // A length beyond the family's width matches nothing (the loader refuses it).
        assert!(!prefix_contains(v4("198.18.0.1"), 33, v4("198.18.0.1")));
    }
}
