//! Reproducible random policies, frames and frame mutations for the differential test.
//!
//! Everything is drawn from one [`SmallRng`] seeded by the caller, so a failing run is
//! replayed from the seed it prints. Addresses come from small pools (IPv4 in 198.18.0.0/15,
//! IPv6 in 2001:db8::/32 under a few /64s) so that subscribers and rules match often.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::Model;
use crate::policy::{ClassConfig, PortRange, Prefix, Rule, proto_has_ports, validate_rules};

mod frames;

/// A rule chain in the kernel: family, tuple (any proto, prefix lengths), proto, masked addresses.
type ChainKey = (bool, bool, u8, u8, u8, [u8; 16], [u8; 16]);

/// Knobs of the generator.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Rule sets have 0..=max_rules rules before filtering (at most 200 is sensible).
    pub max_rules: usize,
    /// Classes 1..=n with n in 1..=max_classes; a few more ids are referenced but missing.
    pub max_classes: u32,
    /// IPv4 / IPv6 address pool sizes.
    pub v4_pool: usize,
    pub v6_pool: usize,
    /// Kernel limits the rule set must fit: tuples per family, rules per masked key.
    pub max_tuples: usize,
    pub max_chain: usize,
    /// Frames are never shorter than this (XDP test runs need 14 bytes) nor longer than max_len.
    pub min_len: usize,
    pub max_len: usize,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            max_rules: 64,
            max_classes: 12,
            v4_pool: 12,
            v6_pool: 12,
            max_tuples: 16,
            max_chain: 8,
            min_len: 14,
            max_len: 3000,
        }
    }
}

/// A random policy: subscribers, classes and a rule set that passes `validate_rules`.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub subs_v4: HashMap<Ipv4Addr, [u32; 2]>,
    pub subs_v6: HashMap<Ipv6Addr, [u32; 2]>,
    pub subs_v6_64: HashMap<[u8; 8], [u32; 2]>,
    pub classes: HashMap<u32, ClassConfig>,
    pub rules: Vec<Rule>,
}

/// The generator: a seeded RNG and address pools.
pub struct Generator {
    pub rng: SmallRng,
    pub cfg: GenConfig,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
    ports: Vec<u16>,
    macs: Vec<[u8; 6]>,
}

const PROTOS: [Option<u8>; 8] = [
    None,
    None,
    Some(6),
    Some(17),
    Some(132),
    Some(1),
    Some(58),
    Some(47),
];

impl Generator {
    #[must_use]
    pub fn new(seed: u64, cfg: GenConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let v4 = (0..cfg.v4_pool.max(1))
            .map(|_| {
                Ipv4Addr::new(
                    198,
                    rng.gen_range(18..=19),
                    rng.gen_range(0..=3),
                    rng.gen_range(1..=20),
                )
            })
            .collect();
        let prefixes: Vec<u16> = (0..4).map(|_| rng.gen_range(0..=7)).collect();
        let v6 = (0..cfg.v6_pool.max(1))
            .map(|_| {
                let p = prefixes[rng.gen_range(0..prefixes.len())];
                let iid: u16 = rng.gen_range(1..=20);
                Ipv6Addr::new(0x2001, 0xdb8, rng.gen_range(0..=1), p, 0, 0, 0, iid)
            })
            .collect();
        let mut ports = vec![0, 53, 80, 123, 443, 1234, 5000, 5001, 5002, 8080, 65535];
        ports.extend((0..5).map(|_| rng.gen_range(1024..=65535)));
        let macs = (0..4)
            .map(|_| {
                let mut m = [0u8; 6];
                rng.fill(&mut m[..]);
                m[0] &= 0xfe;
                m
            })
            .collect();
        Self {
            rng,
            cfg,
            v4,
            v6,
            ports,
            macs,
        }
    }

    fn byte(&mut self) -> u8 {
        self.rng.gen_range(0..=255)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.rng.fill(&mut v[..]);
        v
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    fn v4_addr(&mut self) -> Ipv4Addr {
        if self.chance(0.9) {
            *self.v4.choose(&mut self.rng).expect("pool")
        } else {
            Ipv4Addr::from(self.rng.gen_range(0..=u32::MAX))
        }
    }

    fn v6_addr(&mut self) -> Ipv6Addr {
        if self.chance(0.9) {
            let mut a = *self.v6.choose(&mut self.rng).expect("pool");
            if self.chance(0.2) {
                // Same /64, another interface id: only the /64 subscriber entry can match.
                let mut o = a.octets();
                o[15] = self.byte();
                a = Ipv6Addr::from(o);
            }
            a
        } else {
            Ipv6Addr::from(self.rng.gen_range(0..=u128::MAX))
        }
    }

    fn port(&mut self) -> u16 {
        if self.chance(0.8) {
            *self.ports.choose(&mut self.rng).expect("ports")
        } else {
            self.rng.gen_range(0..=65535)
        }
    }

    // ---- policy ------------------------------------------------------------------------------

    /// A random class satisfying `ClassConfig::validate`.
    pub fn random_class(&mut self) -> ClassConfig {
        let mtu = if self.chance(0.35) {
            Some(if self.chance(0.8) {
                self.rng.gen_range(1280..=1500)
            } else {
                self.rng.gen_range(1280..=9000)
            })
        } else {
            None
        };
        let rate_bps = if self.chance(0.5) {
            // Log-uniform 8 bit/s .. 400 Gbit/s, mostly 100 kbit/s .. 10 Gbit/s.
            let exp = if self.chance(0.9) {
                self.rng.gen_range(5.0..10.0)
            } else {
                self.rng.gen_range(0.91..11.6)
            };
            Some((10f64.powf(exp) as u64).clamp(8, crate::policy::MAX_RATE_BPS))
        } else {
            None
        };
        let floor = u32::from(mtu.unwrap_or(1500));
        let burst_bytes = if rate_bps.is_some() {
            if self.chance(0.3) {
                floor
            } else {
                self.rng.gen_range(floor..=200_000)
            }
        } else {
            0
        };
        let dscp = if self.chance(0.4) {
            Some(self.rng.gen_range(0..=63))
        } else {
            None
        };
        let skb_priority = if self.chance(0.5) {
            self.rng.gen_range(1..=0x20u32) << 16 | self.rng.gen_range(1..=0x40)
        } else {
            0
        };
        let block = self.chance(0.05);
        let shared_bucket = self.chance(0.3);
        ClassConfig {
            rate_bps,
            burst_bytes,
            dscp,
            mtu,
            skb_priority,
            block,
            shared_bucket,
        }
    }

    fn class_ref(&mut self, n: u32) -> u32 {
        match self.rng.gen_range(0..20) {
            0 => n + self.rng.gen_range(1..=3), // missing class
            1..=3 => 0,
            _ => self.rng.gen_range(1..=n),
        }
    }

    fn random_prefix(&mut self, v6: bool) -> Prefix {
        if v6 {
            let len = *[0u8, 0, 32, 48, 63, 64, 64, 96, 120, 127, 128, 128]
                .choose(&mut self.rng)
                .expect("lens");
            let len = if self.chance(0.1) {
                self.rng.gen_range(0..=128)
            } else {
                len
            };
            Prefix {
                addr: IpAddr::V6(self.v6_addr()),
                len,
            }
        } else {
            let len = *[0u8, 0, 8, 15, 16, 22, 24, 24, 30, 31, 32, 32]
                .choose(&mut self.rng)
                .expect("lens");
            let len = if self.chance(0.1) {
                self.rng.gen_range(0..=32)
            } else {
                len
            };
            Prefix {
                addr: IpAddr::V4(self.v4_addr()),
                len,
            }
        }
    }

    fn random_range(&mut self, portless: bool) -> PortRange {
        if self.chance(0.55) {
            return PortRange::ANY;
        }
        if portless {
            return PortRange {
                lo: 0,
                hi: self.rng.gen_range(0..=65535),
            };
        }
        let a = self.port();
        match self.rng.gen_range(0..4) {
            0 => PortRange { lo: a, hi: a },
            1 => PortRange {
                lo: a.saturating_sub(self.rng.gen_range(0..=100)),
                hi: a,
            },
            2 => PortRange {
                lo: a,
                hi: a.saturating_add(self.rng.gen_range(0..=3000)),
            },
            _ => {
                let b = self.port();
                PortRange {
                    lo: a.min(b),
                    hi: a.max(b),
                }
            }
        }
    }

    /// A random rule (valid on its own) with id `id`, pointing at classes 1..=n (or missing).
    pub fn random_rule(&mut self, id: u32, n_classes: u32) -> Rule {
        let v6 = self.chance(0.5);
        let proto = *PROTOS.choose(&mut self.rng).expect("protos");
        let portless = proto.is_some_and(|p| !proto_has_ports(p));
        let precedence = if self.chance(0.5) {
            self.rng.gen_range(0..20)
        } else {
            self.rng.gen_range(0..100_000)
        };
        let class = self.class_ref(n_classes).max(1);
        Rule {
            id,
            proto,
            src: self.random_prefix(v6),
            dst: self.random_prefix(v6),
            sport: self.random_range(portless),
            dport: self.random_range(portless),
            precedence,
            class,
        }
    }

    /// Keeps the rules, in order, that together pass `validate_rules` and fit the kernel's
    /// tuple and chain limits.
    #[must_use]
    pub fn filter_rules(&self, rules: &[Rule]) -> Vec<Rule> {
        let mut kept: Vec<Rule> = Vec::new();
        let mut tuples: [HashSet<(bool, u8, u8)>; 2] = [HashSet::new(), HashSet::new()];
        let mut chains: HashMap<ChainKey, usize> = HashMap::new();
        for r in rules {
            let fam = usize::from(!r.src.is_v4());
            let tuple = (r.proto.is_none(), r.src.len, r.dst.len);
            if !tuples[fam].contains(&tuple) && tuples[fam].len() >= self.cfg.max_tuples {
                continue;
            }
            let chain = (
                fam == 1,
                tuple.0,
                tuple.1,
                tuple.2,
                r.proto.unwrap_or(0),
                r.src.masked_bytes(),
                r.dst.masked_bytes(),
            );
            if chains.get(&chain).copied().unwrap_or(0) >= self.cfg.max_chain {
                continue;
            }
            kept.push(*r);
            if validate_rules(&kept).is_err() {
                kept.pop();
                continue;
            }
            tuples[fam].insert(tuple);
            *chains.entry(chain).or_default() += 1;
        }
        kept
    }

    /// A random policy: classes, subscribers (some pointing at missing classes) and a rule
    /// set of up to `cfg.max_rules` rules reduced until it validates.
    pub fn random_policy(&mut self) -> Policy {
        let n = self.rng.gen_range(1..=self.cfg.max_classes.max(1));
        let mut p = Policy::default();
        for id in 1..=n {
            let c = self.random_class();
            debug_assert_eq!(c.validate(id), Ok(()));
            p.classes.insert(id, c);
        }
        for a in self.v4.clone() {
            if self.chance(0.6) {
                let v = [self.class_ref(n), self.class_ref(n)];
                p.subs_v4.insert(a, v);
            }
        }
        for a in self.v6.clone() {
            if self.chance(0.4) {
                let v = [self.class_ref(n), self.class_ref(n)];
                p.subs_v6.insert(a, v);
            }
            if self.chance(0.4) {
                let mut k = [0u8; 8];
                k.copy_from_slice(&a.octets()[..8]);
                let v = [self.class_ref(n), self.class_ref(n)];
                p.subs_v6_64.insert(k, v);
            }
        }
        let count = self.rng.gen_range(0..=self.cfg.max_rules);
        let rules: Vec<Rule> = (1..=count as u32)
            .map(|id| self.random_rule(id, n))
            .collect();
        p.rules = self.filter_rules(&rules);
        p
    }

    /// A model of a random policy with random `fail_closed` / `malformed_drop`.
    pub fn random_model(&mut self) -> Model {
        let p = self.random_policy();
        let fc = self.chance(0.3);
        let md = self.chance(0.3);
        Model::from_policy(&p, fc, md)
    }

    /// Advances a virtual clock by a random step (0, a few µs, ms or s).
    pub fn next_clock(&mut self, now: u64) -> u64 {
        now + match self.rng.gen_range(0..10) {
            0..=2 => 0,
            3..=5 => self.rng.gen_range(0..10_000),
            6..=8 => self.rng.gen_range(0..5_000_000),
            _ => self.rng.gen_range(0..2_000_000_000),
        }
    }
}
