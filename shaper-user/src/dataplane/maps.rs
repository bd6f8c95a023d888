//! Typed access to the data-plane maps: the capacity table, and reads and writes of
//! subscribers, rules, control state and counters.

use std::{collections::HashMap, net::IpAddr, os::fd::AsFd as _};

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapType, PerCpuArray, PerCpuHashMap},
};

use super::{Limits, Result, map_err};
use crate::abi::{self, MAX_TUPLES};
use crate::policy::{ClassConfig, SubscriberKey};

/// What this build creates for one map; pinned maps are checked against it before reuse.
#[derive(Clone, Copy, Debug)]
pub struct MapSpec {
    pub name: &'static str,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// Creation flags this build relies on (`BPF_F_*`): a pinned map must have all of them.
    pub required_flags: u32,
    pub pinned: bool,
}

const fn sz<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// Every map of the object with its size for `limits`.
#[must_use]
#[rustfmt::skip]
pub fn specs(l: &Limits) -> Vec<MapSpec> {
    let sets = abi::RULE_SETS * MAX_TUPLES;
    let m = |name, map_type, key_size, value_size, max_entries| MapSpec { name, map_type, key_size, value_size, max_entries, required_flags: 0, pinned: true };
    let mmapable = |s: MapSpec| MapSpec { required_flags: abi::BPF_F_MMAPABLE, ..s };
    vec![
        m("shaper_subs_v4",      MapType::Hash,          sz::<abi::SubKeyV4>(),    sz::<abi::SubValue>(),    l.max_subscribers),
        m("shaper_subs_v6",      MapType::Hash,          sz::<abi::SubKeyV6>(),    sz::<abi::SubValue>(),    l.max_subscribers),
        m("shaper_subs_v6_64",   MapType::Hash,          sz::<abi::SubKeyV6_64>(), sz::<abi::SubValue>(),    l.max_subscribers),
        m("shaper_sub_slots",    MapType::Array,         4,                        sz::<abi::SubSlot>(),     l.max_subscribers),
        m("shaper_pools",        MapType::Array,         4,                        sz::<abi::SubPool>(),     2 * abi::MAX_POOLS),
        mmapable(m("shaper_classes", MapType::Array,     4,                        sz::<abi::ClassEntry>(),  l.max_classes)),
        m("shaper_class_stats",  MapType::PerCpuArray,   4,                        sz::<abi::ClassStats>(),  l.max_classes),
        m("shaper_global_stats", MapType::PerCpuArray,   4,                        sz::<abi::GlobalStats>(), 1),
        m("shaper_tuples_v4",    MapType::Array,         4,                        sz::<abi::TupleV4>(),     sets),
        m("shaper_tuples_v6",    MapType::Array,         4,                        sz::<abi::TupleV6>(),     sets),
        m("shaper_rules_v4",     MapType::Hash,          sz::<abi::RuleKeyV4>(),   sz::<abi::RuleHead>(),    l.max_rule_keys),
        m("shaper_rules_v6",     MapType::Hash,          sz::<abi::RuleKeyV6>(),   sz::<abi::RuleHead>(),    l.max_rule_keys),
        m("shaper_rule_entries", MapType::Array,         4,                        sz::<abi::RuleEntry>(),   l.max_rule_entries),
        m("shaper_ctl",          MapType::Array,         4,                        sz::<abi::ShaperCtl>(),   1),
        m("shaper_flows",        MapType::LruPerCpuHash, sz::<abi::FlowKey>(),     sz::<abi::FlowValue>(),   l.max_flows),
        m("shaper_events",       MapType::RingBuf,       0,                        0,                        256 * 1024),
    ]
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> &'a mut aya::maps::Map {
    ebpf.map_mut(name)
        .unwrap_or_else(|| panic!("object has map {name}"))
}

fn map_ref<'a>(ebpf: &'a Ebpf, name: &'static str) -> &'a aya::maps::Map {
    ebpf.map(name)
        .unwrap_or_else(|| panic!("object has map {name}"))
}

/// A subscriber key in its table's ABI form.
enum SubK {
    V4(abi::SubKeyV4),
    V6(abi::SubKeyV6),
    V64(abi::SubKeyV6_64),
}

fn sub_k(key: &SubscriberKey) -> SubK {
    match key.addr {
        IpAddr::V4(a) => SubK::V4(abi::SubKeyV4 { addr: a.octets() }),
        IpAddr::V6(a) if key.len == 128 => SubK::V6(abi::SubKeyV6 { addr: a.octets() }),
        IpAddr::V6(a) => {
            let mut prefix = [0u8; 8];
            prefix.copy_from_slice(&a.octets()[..8]);
            SubK::V64(abi::SubKeyV6_64 { prefix })
        }
    }
}

type SubMap<'a, K> = BpfHashMap<&'a mut aya::maps::MapData, K, abi::SubValue>;

/// Runs `f` on the subscriber table `name`, mapping its error.
fn on_sub_map<K: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    f: impl FnOnce(&mut SubMap<'_, K>) -> std::result::Result<(), aya::maps::MapError>,
) -> Result<()> {
    let mut m: SubMap<'_, K> = BpfHashMap::try_from(map(ebpf, name)).map_err(map_err(name))?;
    f(&mut m).map_err(map_err(name))
}

/// Points the hash entry of `key` at `slot`.
pub fn sub_hash_write(ebpf: &mut Ebpf, key: &SubscriberKey, slot: u32) -> Result<()> {
    let v = abi::SubValue { slot };
    match sub_k(key) {
        SubK::V4(k) => on_sub_map(ebpf, "shaper_subs_v4", |m| m.insert(k, v, 0)),
        SubK::V6(k) => on_sub_map(ebpf, "shaper_subs_v6", |m| m.insert(k, v, 0)),
        SubK::V64(k) => on_sub_map(ebpf, "shaper_subs_v6_64", |m| m.insert(k, v, 0)),
    }
}

pub fn sub_hash_delete(ebpf: &mut Ebpf, key: &SubscriberKey) -> Result<()> {
    match sub_k(key) {
        SubK::V4(k) => on_sub_map(ebpf, "shaper_subs_v4", |m| m.remove(&k)),
        SubK::V6(k) => on_sub_map(ebpf, "shaper_subs_v6", |m| m.remove(&k)),
        SubK::V64(k) => on_sub_map(ebpf, "shaper_subs_v6_64", |m| m.remove(&k)),
    }
}

fn batch_err(name: &'static str, e: std::io::Error) -> super::DataplaneError {
    syscall_err(name, "bpf_map_update_batch", e)
}

fn lookup_batch_err(name: &'static str, e: std::io::Error) -> super::DataplaneError {
    syscall_err(name, "bpf_map_lookup_batch", e)
}

fn syscall_err(name: &'static str, call: &'static str, e: std::io::Error) -> super::DataplaneError {
    super::DataplaneError::Map {
        name,
        source: Box::new(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call,
            io_error: e,
        })),
    }
}

/// Writes hash entries `key -> slot` with one batch syscall per table; `on_written` sees
/// every key the kernel may have written, for rollback.
pub fn sub_hash_write_batch(
    ebpf: &mut Ebpf,
    batch: &[(SubscriberKey, u32)],
    mut on_written: impl FnMut(&SubscriberKey),
) -> Result<()> {
    let mut v4 = (Vec::new(), Vec::new(), Vec::new());
    let mut v6 = (Vec::new(), Vec::new(), Vec::new());
    let mut v64 = (Vec::new(), Vec::new(), Vec::new());
    for (k, slot) in batch {
        let v = abi::SubValue { slot: *slot };
        match sub_k(k) {
            SubK::V4(x) => (v4.0.push(x), v4.1.push(v), v4.2.push(*k)),
            SubK::V6(x) => (v6.0.push(x), v6.1.push(v), v6.2.push(*k)),
            SubK::V64(x) => (v64.0.push(x), v64.1.push(v), v64.2.push(*k)),
        };
    }
    fn one<K: aya::Pod>(
        ebpf: &Ebpf,
        name: &'static str,
        keys: &[K],
        vals: &[abi::SubValue],
        subs: &[SubscriberKey],
        on_written: &mut impl FnMut(&SubscriberKey),
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        match super::batch::update(map_ref(ebpf, name), keys, vals) {
            Ok(()) => {
                subs.iter().for_each(&mut *on_written);
                Ok(())
            }
            Err((n, e)) => {
                subs[..n.min(subs.len())].iter().for_each(&mut *on_written);
                Err(batch_err(name, e))
            }
        }
    }
    one(ebpf, "shaper_subs_v4", &v4.0, &v4.1, &v4.2, &mut on_written)?;
    one(ebpf, "shaper_subs_v6", &v6.0, &v6.1, &v6.2, &mut on_written)?;
    one(
        ebpf,
        "shaper_subs_v6_64",
        &v64.0,
        &v64.1,
        &v64.2,
        &mut on_written,
    )?;
    Ok(())
}

/// Maps `shaper_classes` (created `BPF_F_MMAPABLE`, `entries` long) into this process.
pub fn map_classes(ebpf: &Ebpf, entries: u32) -> Result<super::mmap::ClassArray> {
    let name = "shaper_classes";
    let aya::maps::Map::Array(data) = map_ref(ebpf, name) else {
        return Err(super::DataplaneError::Mmap {
            name,
            source: std::io::Error::other("the object defines it as another map type"),
        });
    };
    super::mmap::ClassArray::map(data.fd().as_fd(), entries)
        .map_err(|source| super::DataplaneError::Mmap { name, source })
}

pub fn slot_read(ebpf: &Ebpf, idx: u32) -> Result<abi::SubSlot> {
    let name = "shaper_sub_slots";
    let m: Array<_, abi::SubSlot> = Array::try_from(map_ref(ebpf, name)).map_err(map_err(name))?;
    m.get(&idx, 0).map_err(map_err(name))
}

pub fn slot_write(ebpf: &mut Ebpf, idx: u32, slot: abi::SubSlot) -> Result<()> {
    let name = "shaper_sub_slots";
    let mut m: Array<_, abi::SubSlot> = Array::try_from(map(ebpf, name)).map_err(map_err(name))?;
    m.set(idx, slot, 0).map_err(map_err(name))
}

/// Writes slots with batch syscalls. Returns how many were written on error.
pub fn slot_write_batch(
    ebpf: &mut Ebpf,
    idx: &[u32],
    slots: &[abi::SubSlot],
) -> std::result::Result<(), (usize, super::DataplaneError)> {
    let name = "shaper_sub_slots";
    super::batch::update(map_ref(ebpf, name), idx, slots).map_err(|(n, e)| (n, batch_err(name, e)))
}

pub fn pools_write(ebpf: &mut Ebpf, pools: &[(u32, abi::SubPool)]) -> Result<()> {
    let name = "shaper_pools";
    let mut m: Array<_, abi::SubPool> = Array::try_from(map(ebpf, name)).map_err(map_err(name))?;
    for (i, p) in pools {
        m.set(*i, *p, 0).map_err(map_err(name))?;
    }
    Ok(())
}

pub fn pools_read(ebpf: &Ebpf) -> Result<Vec<(u32, abi::SubPool)>> {
    let name = "shaper_pools";
    let m: Array<_, abi::SubPool> = Array::try_from(map_ref(ebpf, name)).map_err(map_err(name))?;
    (0..2 * abi::MAX_POOLS)
        .map(|i| Ok((i, m.get(&i, 0).map_err(map_err(name))?)))
        .collect()
}

/// Writes a compiled rule set into set `set` (entries at `set * half ..`).
pub fn rules_write(ebpf: &mut Ebpf, c: &super::rules::Compiled, set: u32, half: u32) -> Result<()> {
    {
        let name = "shaper_rule_entries";
        let mut m: Array<_, abi::RuleEntry> =
            Array::try_from(map(ebpf, name)).map_err(map_err(name))?;
        for (i, e) in c.entries.iter().enumerate() {
            m.set(set * half + i as u32, e, 0).map_err(map_err(name))?;
        }
    }
    {
        let name = "shaper_rules_v4";
        let mut m: BpfHashMap<_, abi::RuleKeyV4, abi::RuleHead> =
            BpfHashMap::try_from(map(ebpf, name)).map_err(map_err(name))?;
        for (k, head) in &c.keys_v4 {
            m.insert(k, abi::RuleHead { entry: *head }, 0)
                .map_err(map_err(name))?;
        }
    }
    {
        let name = "shaper_rules_v6";
        let mut m: BpfHashMap<_, abi::RuleKeyV6, abi::RuleHead> =
            BpfHashMap::try_from(map(ebpf, name)).map_err(map_err(name))?;
        for (k, head) in &c.keys_v6 {
            m.insert(k, abi::RuleHead { entry: *head }, 0)
                .map_err(map_err(name))?;
        }
    }
    // Tuples last: the set is complete before any tuple points into it. Unused slots are
    // cleared so a shorter list ends where it should.
    {
        let name = "shaper_tuples_v4";
        let mut m: Array<_, abi::TupleV4> =
            Array::try_from(map(ebpf, name)).map_err(map_err(name))?;
        for i in 0..MAX_TUPLES {
            let t = c.tuples_v4.get(i as usize).copied().unwrap_or_default();
            m.set(set * MAX_TUPLES + i, t, 0).map_err(map_err(name))?;
        }
    }
    {
        let name = "shaper_tuples_v6";
        let mut m: Array<_, abi::TupleV6> =
            Array::try_from(map(ebpf, name)).map_err(map_err(name))?;
        for i in 0..MAX_TUPLES {
            let t = c.tuples_v6.get(i as usize).copied().unwrap_or_default();
            m.set(set * MAX_TUPLES + i, t, 0).map_err(map_err(name))?;
        }
    }
    Ok(())
}

/// Clears rule set `set`: its tuples and the given keys.
pub fn rules_clear(
    ebpf: &mut Ebpf,
    set: u32,
    k4: &[abi::RuleKeyV4],
    k6: &[abi::RuleKeyV6],
) -> Result<()> {
    {
        let name = "shaper_tuples_v4";
        let mut m: Array<_, abi::TupleV4> =
            Array::try_from(map(ebpf, name)).map_err(map_err(name))?;
        for i in 0..MAX_TUPLES {
            m.set(set * MAX_TUPLES + i, abi::TupleV4::default(), 0)
                .map_err(map_err(name))?;
        }
    }
    {
        let name = "shaper_tuples_v6";
        let mut m: Array<_, abi::TupleV6> =
            Array::try_from(map(ebpf, name)).map_err(map_err(name))?;
        for i in 0..MAX_TUPLES {
            m.set(set * MAX_TUPLES + i, abi::TupleV6::default(), 0)
                .map_err(map_err(name))?;
        }
    }
    {
        let name = "shaper_rules_v4";
        let mut m: BpfHashMap<_, abi::RuleKeyV4, abi::RuleHead> =
            BpfHashMap::try_from(map(ebpf, name)).map_err(map_err(name))?;
        for k in k4 {
            let _ = m.remove(k);
        }
    }
    {
        let name = "shaper_rules_v6";
        let mut m: BpfHashMap<_, abi::RuleKeyV6, abi::RuleHead> =
            BpfHashMap::try_from(map(ebpf, name)).map_err(map_err(name))?;
        for k in k6 {
            let _ = m.remove(k);
        }
    }
    Ok(())
}

pub fn ctl_write(ebpf: &mut Ebpf, ctl: abi::ShaperCtl) -> Result<()> {
    let name = "shaper_ctl";
    let mut m: Array<_, abi::ShaperCtl> =
        Array::try_from(map(ebpf, name)).map_err(map_err(name))?;
    m.set(0, ctl, 0).map_err(map_err(name))
}

pub fn class_stats(ebpf: &Ebpf, id: u32) -> Result<abi::ClassStats> {
    let name = "shaper_class_stats";
    let m: PerCpuArray<_, abi::ClassStats> =
        PerCpuArray::try_from(map_ref(ebpf, name)).map_err(map_err(name))?;
    let vals = m.get(&id, 0).map_err(map_err(name))?;
    let mut sum = abi::ClassStats::default();
    for v in vals.iter() {
        sum.add(v);
    }
    Ok(sum)
}

pub fn global_stats(ebpf: &Ebpf) -> Result<abi::GlobalStats> {
    let name = "shaper_global_stats";
    let m: PerCpuArray<_, abi::GlobalStats> =
        PerCpuArray::try_from(map_ref(ebpf, name)).map_err(map_err(name))?;
    let vals = m.get(&0, 0).map_err(map_err(name))?;
    let mut sum = abi::GlobalStats::default();
    for v in vals.iter() {
        for (s, x) in sum.v.iter_mut().zip(v.v.iter()) {
            *s += x;
        }
    }
    Ok(sum)
}

pub fn top_flows(ebpf: &Ebpf, n: usize) -> Result<Vec<(abi::FlowKey, abi::FlowValue)>> {
    let name = "shaper_flows";
    let m: PerCpuHashMap<_, abi::FlowKey, abi::FlowValue> =
        PerCpuHashMap::try_from(map_ref(ebpf, name)).map_err(map_err(name))?;
    let mut out = Vec::new();
    for item in m.iter() {
        let (k, vals) = item.map_err(map_err(name))?;
        let mut sum = abi::FlowValue::default();
        for v in vals.iter() {
            sum.pkts += v.pkts;
            sum.bytes += v.bytes;
            if v.class_id != 0 {
                sum.class_id = v.class_id;
            }
        }
        out.push((k, sum));
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.1.bytes));
    out.truncate(n);
    Ok(out)
}

/// What a previous controller left in the pinned maps: classes, hashed subscribers (key ->
/// slot), the class ids of every slot in use, and the control word.
pub struct PinnedState {
    pub classes: HashMap<u32, ClassConfig>,
    pub hashed: HashMap<SubscriberKey, u32>,
    pub slots: HashMap<u32, [u32; 2]>,
    pub ctl: abi::ShaperCtl,
}

/// Adds every entry of one subscriber table to `out`, `key` turning its ABI key into
/// (address, prefix length).
fn read_subs<K: aya::Pod>(
    ebpf: &Ebpf,
    name: &'static str,
    out: &mut HashMap<SubscriberKey, u32>,
    key: impl Fn(K) -> (IpAddr, u8),
) -> Result<()> {
    let all: Vec<(K, abi::SubValue)> =
        super::batch::lookup_all(map_ref(ebpf, name)).map_err(|e| lookup_batch_err(name, e))?;
    out.reserve(all.len());
    for (k, v) in all {
        let (addr, len) = key(k);
        out.insert(SubscriberKey { addr, len }, v.slot);
    }
    Ok(())
}

/// Classes (read from their mapping), subscribers (a few thousand per syscall) and control
/// state as a previous controller left them.
pub fn read_state(ebpf: &Ebpf, class_mem: &super::mmap::ClassArray) -> Result<PinnedState> {
    let mut classes = HashMap::new();
    {
        let all = (0..class_mem.entries()).filter_map(|i| Some((i, class_mem.read(i)?)));
        for (i, e) in all {
            if e.flags & abi::CLASS_F_VALID != 0 {
                classes.insert(
                    i,
                    ClassConfig {
                        rate_bps: (e.rate_bps != 0).then_some(e.rate_bps),
                        burst_bytes: e.burst_bytes,
                        dscp: (e.dscp != abi::DSCP_KEEP).then_some(e.dscp),
                        mtu: (e.mtu != 0).then_some(e.mtu),
                        skb_priority: e.skb_priority,
                        block: e.flags & abi::CLASS_F_BLOCK != 0,
                        shared_bucket: e.flags & abi::CLASS_F_SHARED != 0,
                    },
                );
            }
        }
    }
    let mut hashed = HashMap::new();
    read_subs(ebpf, "shaper_subs_v4", &mut hashed, |k: abi::SubKeyV4| {
        (IpAddr::from(k.addr), 32)
    })?;
    read_subs(ebpf, "shaper_subs_v6", &mut hashed, |k: abi::SubKeyV6| {
        (IpAddr::from(k.addr), 128)
    })?;
    read_subs(
        ebpf,
        "shaper_subs_v6_64",
        &mut hashed,
        |k: abi::SubKeyV6_64| {
            let mut a = [0u8; 16];
            a[..8].copy_from_slice(&k.prefix);
            (IpAddr::from(a), 64)
        },
    )?;
    let mut slots = HashMap::new();
    {
        let name = "shaper_sub_slots";
        let all: Vec<(u32, abi::SubSlot)> =
            super::batch::lookup_all(map_ref(ebpf, name)).map_err(|e| lookup_batch_err(name, e))?;
        for (i, s) in all {
            let c = [s.d[0].class_id, s.d[1].class_id];
            if c != [0, 0] {
                slots.insert(i, c);
            }
        }
    }
    let name = "shaper_ctl";
    let m: Array<_, abi::ShaperCtl> =
        Array::try_from(map_ref(ebpf, name)).map_err(map_err(name))?;
    let ctl = m.get(&0, 0).map_err(map_err(name))?;
    Ok(PinnedState {
        classes,
        hashed,
        slots,
        ctl,
    })
}

/// The hash keys that belong to rule set `set`.
pub fn rule_keys_of_set(
    ebpf: &Ebpf,
    set: u32,
) -> Result<(Vec<abi::RuleKeyV4>, Vec<abi::RuleKeyV6>)> {
    let in_set = |tuple: u8| u32::from(tuple) / MAX_TUPLES == set;
    let name = "shaper_rules_v4";
    let m: BpfHashMap<_, abi::RuleKeyV4, abi::RuleHead> =
        BpfHashMap::try_from(map_ref(ebpf, name)).map_err(map_err(name))?;
    let k4 = m
        .keys()
        .filter_map(std::result::Result::ok)
        .filter(|k| in_set(k.tuple))
        .collect();
    let name = "shaper_rules_v6";
    let m: BpfHashMap<_, abi::RuleKeyV6, abi::RuleHead> =
        BpfHashMap::try_from(map_ref(ebpf, name)).map_err(map_err(name))?;
    let k6 = m
        .keys()
        .filter_map(std::result::Result::ok)
        .filter(|k| in_set(k.tuple))
        .collect();
    Ok((k4, k6))
}
