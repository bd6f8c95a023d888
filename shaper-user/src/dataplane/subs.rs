//! Subscriber slots and address pools (`shaper_abi.h` "subscribers", DATAPLANE.md §2.1).
//!
//! Every subscriber owns one slot of `shaper_sub_slots`: its class per direction and its own
//! policer state and counters in one cache line. Addresses in a declared *pool* (a dense
//! range, as RADIUS framed pools and DHCP ranges hand them out) have their slot at a fixed
//! offset, found by the kernel with one subtraction; any other address is a hash entry
//! pointing at a slot this module allocates. Pure: no maps, no syscalls.

use std::net::IpAddr;

use crate::abi::{MAX_POOLS, SubPool};
use crate::policy::{Prefix, SubscriberKey};

/// Largest pool: 2^20 addresses (an IPv4 /12, or the /64s of an IPv6 /44).
pub const MAX_POOL_BITS: u8 = 20;

/// A pool declaration that cannot be laid out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error(
        "subscriber pool {pool}: an IPv4 pool is a prefix of /{min} to /32, an IPv6 pool a prefix of /{min6} to /64 (its /64s are the subscribers)",
        min = 32 - MAX_POOL_BITS,
        min6 = 64 - MAX_POOL_BITS
    )]
    BadLength { pool: String },
    #[error("subscriber pool {pool}: host bits are set (did you mean {masked}?)")]
    HostBits { pool: String, masked: String },
    #[error("subscriber pools {a} and {b} overlap")]
    Overlap { a: String, b: String },
    #[error("more than {max} IPv{family} subscriber pools")]
    TooMany { family: u8, max: u32 },
    #[error(
        "the subscriber pools hold {total} addresses; the subscriber slots ({max}) must hold them all"
    )]
    TooBig { total: u64, max: u32 },
}

/// One laid-out pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub prefix: Prefix,
    /// 0 = IPv4, 1 = IPv6 /64s.
    pub family: u32,
    pub base: u64,
    pub count: u32,
    pub slot0: u32,
}

/// The validated pools, slots `0..total()` reserved for them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pools {
    pools: Vec<Pool>,
    total: u32,
}

fn pool_name(p: &Prefix) -> String {
    format!("{}/{}", p.addr, p.len)
}

/// The pool key of an address: (family, host-order key) — the IPv4 address, or the upper 64
/// bits of an IPv6 address.
fn key_of(addr: IpAddr) -> (u32, u64) {
    match addr {
        IpAddr::V4(a) => (0, u64::from(u32::from(a))),
        IpAddr::V6(a) => (1, (u128::from(a) >> 64) as u64),
    }
}

impl Pools {
    /// Validates `prefixes` and assigns their slots in order, within `max_slots`.
    pub fn new(prefixes: &[Prefix], max_slots: u32) -> Result<Self, PoolError> {
        let mut pools: Vec<Pool> = Vec::new();
        let mut next: u64 = 0;
        for p in prefixes {
            let (family, bits) = if p.is_v4() {
                (0, 32u8.checked_sub(p.len))
            } else {
                (1, 64u8.checked_sub(p.len))
            };
            let bits = match bits {
                Some(b) if b <= MAX_POOL_BITS => b,
                _ => return Err(PoolError::BadLength { pool: pool_name(p) }),
            };
            if p.masked_addr() != p.addr {
                return Err(PoolError::HostBits {
                    pool: pool_name(p),
                    masked: format!("{}/{}", p.masked_addr(), p.len),
                });
            }
            if let Some(o) = pools.iter().find(|o| o.prefix.overlaps(p)) {
                return Err(PoolError::Overlap {
                    a: pool_name(&o.prefix),
                    b: pool_name(p),
                });
            }
            let count = 1u32 << bits;
            let (_, base) = key_of(p.addr);
            pools.push(Pool {
                prefix: *p,
                family,
                base,
                count,
                slot0: next as u32,
            });
            next += u64::from(count);
            if next > u64::from(max_slots) {
                return Err(PoolError::TooBig {
                    total: next,
                    max: max_slots,
                });
            }
        }
        for family in [0u32, 1] {
            if pools.iter().filter(|p| p.family == family).count() > MAX_POOLS as usize {
                return Err(PoolError::TooMany {
                    family: if family == 0 { 4 } else { 6 },
                    max: MAX_POOLS,
                });
            }
        }
        Ok(Self {
            pools,
            total: next as u32,
        })
    }

    /// Slots reserved for pools: `0..total`.
    #[must_use]
    pub fn total(&self) -> u32 {
        self.total
    }

    #[must_use]
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// The slot of `key` if a pool covers it. IPv4 /32 keys and IPv6 /64 keys can live in a
    /// pool; an IPv6 /128 is always a hash entry (it takes precedence over its /64).
    #[must_use]
    pub fn slot_of(&self, key: &SubscriberKey) -> Option<u32> {
        if key.len == 128 {
            return None;
        }
        let (family, k) = key_of(key.addr);
        self.pools.iter().find_map(|p| {
            let off = k.checked_sub(p.base)?;
            (p.family == family && off < u64::from(p.count)).then(|| p.slot0 + off as u32)
        })
    }

    /// The subscriber key whose pool slot is `slot`, if any.
    #[must_use]
    pub fn key_of_slot(&self, slot: u32) -> Option<SubscriberKey> {
        let p = self
            .pools
            .iter()
            .find(|p| slot >= p.slot0 && slot - p.slot0 < p.count)?;
        let k = p.base + u64::from(slot - p.slot0);
        Some(if p.family == 0 {
            SubscriberKey {
                addr: IpAddr::V4((k as u32).into()),
                len: 32,
            }
        } else {
            SubscriberKey {
                addr: IpAddr::V6((u128::from(k) << 64).into()),
                len: 64,
            }
        })
    }

    /// The kernel's `shaper_pools` image: (index, entry) for every index, unused ones zero.
    #[must_use]
    pub fn to_abi(&self) -> Vec<(u32, SubPool)> {
        let mut out = Vec::new();
        for family in [0u32, 1] {
            let mut fam = self.pools.iter().filter(|p| p.family == family);
            for i in 0..MAX_POOLS {
                let e = fam.next().map_or(SubPool::default(), |p| SubPool {
                    base: p.base,
                    count: p.count,
                    slot0: p.slot0,
                });
                out.push((family * MAX_POOLS + i, e));
            }
        }
        out
    }
}

/// Slots for hashed subscribers: `first..max`, lowest free first.
#[derive(Clone, Debug, Default)]
pub struct SlotAlloc {
    next: u32,
    max: u32,
    free: Vec<u32>,
}

impl SlotAlloc {
    /// An allocator over `first..max` with `used` already taken.
    #[must_use]
    pub fn new(first: u32, max: u32, used: impl IntoIterator<Item = u32>) -> Self {
        let mut used: Vec<u32> = used.into_iter().filter(|s| *s >= first).collect();
        used.sort_unstable();
        let next = used.last().map_or(first, |l| l + 1);
        let mut free = Vec::new();
        let mut it = used.iter().peekable();
        for s in first..next {
            if it.peek() == Some(&&s) {
                it.next();
            } else {
                free.push(s);
            }
        }
        free.reverse();
        Self { next, max, free }
    }

    /// Slots still free.
    #[must_use]
    pub fn available(&self) -> u64 {
        u64::from(self.max - self.next) + self.free.len() as u64
    }

    pub fn take(&mut self) -> Option<u32> {
        if let Some(s) = self.free.pop() {
            return Some(s);
        }
        (self.next < self.max).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    pub fn put(&mut self, slot: u32) {
        self.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        let (a, l) = s.split_once('/').unwrap();
        Prefix {
            addr: a.parse().unwrap(),
            len: l.parse().unwrap(),
        }
    }

    fn k(s: &str, len: u8) -> SubscriberKey {
        SubscriberKey {
            addr: s.parse().unwrap(),
            len,
        }
    }

    #[test]
    fn pools_lay_out_consecutive_slots() {
        let pools = Pools::new(&[p("198.18.0.0/24"), p("2001:db8:100::/56")], 1024).unwrap();
        assert_eq!(pools.total(), 256 + 256);
        assert_eq!(pools.slot_of(&k("198.18.0.0", 32)), Some(0));
        assert_eq!(pools.slot_of(&k("198.18.0.255", 32)), Some(255));
        assert_eq!(pools.slot_of(&k("198.18.1.0", 32)), None);
        assert_eq!(pools.slot_of(&k("2001:db8:100:5::", 64)), Some(256 + 5));
        assert_eq!(pools.slot_of(&k("2001:db8:100:5::1", 128)), None);
        assert_eq!(pools.slot_of(&k("2001:db8:101::", 64)), None);
        assert_eq!(pools.key_of_slot(255), Some(k("198.18.0.255", 32)));
        assert_eq!(pools.key_of_slot(261), Some(k("2001:db8:100:5::", 64)));
        assert_eq!(pools.key_of_slot(512), None);
        let abi = pools.to_abi();
        assert_eq!(abi.len(), 2 * MAX_POOLS as usize);
        assert_eq!(abi[0].1.count, 256);
        assert_eq!(abi[1].1.count, 0);
        assert_eq!(abi[MAX_POOLS as usize].1.slot0, 256);
    }

    #[test]
    fn bad_pools_are_refused_with_the_reason() {
        assert_eq!(
            Pools::new(&[p("198.18.0.0/8")], 1 << 24),
            Err(PoolError::BadLength {
                pool: "198.18.0.0/8".into()
            })
        );
        assert!(matches!(
            Pools::new(&[p("198.18.0.1/24")], 1024),
            Err(PoolError::HostBits { .. })
        ));
        assert!(matches!(
            Pools::new(&[p("198.18.0.0/24"), p("198.18.0.128/25")], 1024),
            Err(PoolError::Overlap { .. })
        ));
        assert_eq!(
            Pools::new(&[p("198.18.0.0/22")], 1000),
            Err(PoolError::TooBig {
                total: 1024,
                max: 1000
            })
        );
        assert!(matches!(
            Pools::new(&[p("2001:db8::/65")], 1 << 20),
            Err(PoolError::BadLength { .. })
        ));
    }

    #[test]
    fn slot_alloc_reuses_freed_and_skips_used() {
        let mut a = SlotAlloc::new(10, 16, [11, 13]);
        assert_eq!(a.available(), 4);
        assert_eq!(a.take(), Some(10));
        assert_eq!(a.take(), Some(12));
        assert_eq!(a.take(), Some(14));
        assert_eq!(a.take(), Some(15));
        assert_eq!(a.take(), None);
        a.put(12);
        assert_eq!(a.take(), Some(12));
    }
}
