//! The data-plane loader: loads the C programs with aya, pins their maps and links under a
//! bpffs directory named by the ABI version, attaches XDP (native, falling back to generic)
//! and TC egress (TCX links), and gives the controller typed, validated updates of
//! subscribers, classes and rules, plus counters and kernel events.
//!
//! Hitless restarts: maps and links are pinned. A new process reuses the pinned maps (after
//! checking their type, sizes and the creation flags it relies on) and swaps its programs
//! into the pinned links with `BPF_LINK_UPDATE`, so enforcement never stops, not even while
//! no controller runs.
//!
//! Classes are written through a mapping of their array ([`mmap`]): no syscall per change.

mod attach;
mod batch;
pub mod htb;
mod maps;
mod mmap;
mod pinlock;
pub mod rules;
pub mod subs;
pub mod testrun;

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::MapInfo,
    programs::{SchedClassifier, Xdp},
};
use tracing::{debug, info};

use crate::abi::{self, ABI_VERSION};
use crate::policy::{ClassConfig, PolicyError, Prefix, Rule, SubscriberKey};

use attach::Attached;
pub use attach::ensure_bpffs;
pub use maps::MapSpec;

/// Which side of the gateway an interface faces; fixes which address is the subscriber's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Faces the subscribers: ingress packets come from them (subscriber = source).
    Subscriber,
    /// Faces the core/providers: ingress packets go to subscribers (subscriber = destination).
    Upstream,
}

impl Role {
    /// XDP program for ingress on an interface of this role.
    #[must_use]
    pub fn xdp_program(self) -> &'static str {
        match self {
            Role::Subscriber => "shaper_xdp_sub",
            Role::Upstream => "shaper_xdp_up",
        }
    }
    /// TC program for egress on an interface of this role.
    #[must_use]
    pub fn tc_program(self) -> &'static str {
        match self {
            Role::Subscriber => "shaper_tc_down",
            Role::Upstream => "shaper_tc_up",
        }
    }
}

/// Which build of the programs to load (see `shaper_ebpf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    Production,
    /// Virtual clock and per-run decision record, for tests.
    Test,
    /// Random subscriber addresses in `base_v4 .. base_v4 + spread`, for the benchmark.
    BenchSpread {
        base_v4: u32,
        spread: u32,
    },
}

/// Map capacities (entries). Hash maps are not preallocated, so large limits cost nothing
/// until used; the class arrays are preallocated (64 bytes per class, per CPU for counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_subscribers: u32,
    pub max_classes: u32,
    pub max_rule_keys: u32,
    pub max_rule_entries: u32,
    pub max_flows: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_subscribers: 1 << 20,
            max_classes: 1 << 16,
            max_rule_keys: 1 << 15,
            max_rule_entries: 1 << 15,
            max_flows: 1 << 16,
        }
    }
}

/// Everything the loader needs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// bpffs directory under which `v<ABI>/` holds pinned maps and links; `None` = no pinning
    /// (tests, benchmarks).
    pub pin_root: Option<PathBuf>,
    pub limits: Limits,
    pub fail_closed: bool,
    pub malformed_drop: bool,
    /// Sample one packet in 2^n into the flow table; 31 = off.
    pub flow_sample_shift: u32,
    pub build: Build,
    /// Subscriber address pools (IPv4 prefixes of /32s, IPv6 prefixes of /64s): addresses in
    /// them find their slot by arithmetic instead of a hash lookup (`subs`).
    pub pools: Vec<Prefix>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            pin_root: None,
            limits: Limits::default(),
            fail_closed: false,
            malformed_drop: false,
            flow_sample_shift: 4,
            build: Build::Production,
            pools: Vec::new(),
        }
    }
}

/// Errors of the data plane, each naming what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error(
        "pinned map {path} does not match this build ({what}: pinned {pinned}, expected {expected}); \
         another shaper version owns it: stop it, or remove {path}"
    )]
    PinnedMismatch {
        path: PathBuf,
        what: &'static str,
        pinned: String,
        expected: String,
    },
    #[error(
        "another shaper process ({holder}) holds the pinned data plane at {root} (lock {lock}): \
         stop it first; two processes on the same pins would fight over its links and maps"
    )]
    PinsBusy {
        root: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error("bpffs at {path}: {source}")]
    Bpffs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mapping map {name} into memory (it must be created with BPF_F_MMAPABLE): {source}")]
    Mmap {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("unknown interface {0:?}")]
    UnknownInterface(String),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Rules(#[from] rules::CompileError),
    #[error("{map} is full: it holds {max} entries and this change needs {needed}")]
    Full {
        map: &'static str,
        max: u32,
        needed: u64,
    },
    #[error("class {0} does not exist")]
    UnknownClass(u32),
    #[error("class {class} is still used by {users}")]
    ClassInUse { class: u32, users: String },
    #[error("subscriber {0} has no entry")]
    UnknownSubscriber(String),
    #[error("subscriber key {addr}/{len}: IPv4 takes /32, IPv6 /128 or /64")]
    BadSubscriberKey { addr: IpAddr, len: u8 },
    #[error(transparent)]
    Pool(#[from] subs::PoolError),
    #[error(
        "the pinned maps hold subscribers laid out for other subscriber pools ({pinned}); \
         restore the previous pools, or remove {path} to start afresh"
    )]
    PoolsChanged { pinned: String, path: PathBuf },
    #[error("this operation needs the {0} build of the programs")]
    WrongBuild(&'static str),
}

type Result<T> = std::result::Result<T, DataplaneError>;

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |e| DataplaneError::Map {
        name,
        source: Box::new(e),
    }
}

fn prog_err(name: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> DataplaneError {
    move |e| DataplaneError::Program {
        name,
        source: Box::new(e),
    }
}

/// The loaded data plane.
pub struct Dataplane {
    ebpf: Ebpf,
    /// `shaper_classes`, mapped: classes are read and written here, without syscalls.
    class_mem: mmap::ClassArray,
    opts: LoadOptions,
    dir: Option<PathBuf>,
    classes: HashMap<u32, ClassConfig>,
    subs: HashMap<SubscriberKey, [u32; 2]>,
    pools: subs::Pools,
    /// Slots of subscribers outside the pools (hash entries).
    hashed: HashMap<SubscriberKey, u32>,
    alloc: subs::SlotAlloc,
    rules: Vec<Rule>,
    /// Keys of the active rule set (for deletion after the next flip).
    active_keys: (Vec<abi::RuleKeyV4>, Vec<abi::RuleKeyV6>),
    active_set: u32,
    epoch: u32,
    attached: Vec<Attached>,
    /// Held while pinning: one process per pin root ([`pinlock`]).
    _pin_lock: Option<pinlock::PinLock>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("dir", &self.dir)
            .field("classes", &self.classes.len())
            .field("subscribers", &self.subs.len())
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Loads the programs (not yet attached), creating or reusing pinned maps.
    pub fn load(opts: LoadOptions) -> Result<Self> {
        let bytes = match opts.build {
            Build::Production => shaper_ebpf::SHAPER,
            Build::Test => shaper_ebpf::SHAPER_TEST,
            Build::BenchSpread { .. } => shaper_ebpf::SHAPER_BENCH_SPREAD,
        };
        let specs = maps::specs(&opts.limits);
        let pools = subs::Pools::new(&opts.pools, opts.limits.max_subscribers)?;
        let pin_lock = opts
            .pin_root
            .as_deref()
            .map(pinlock::PinLock::acquire)
            .transpose()?
            .inspect(|l| debug!(lock = %l.path().display(), "pin root locked"));
        let dir = match &opts.pin_root {
            Some(root) => {
                ensure_bpffs()?;
                let dir = root.join(format!("v{ABI_VERSION}"));
                for sub in ["maps", "links"] {
                    let d = dir.join(sub);
                    std::fs::create_dir_all(&d)
                        .map_err(|source| DataplaneError::Bpffs { path: d, source })?;
                }
                for spec in &specs {
                    if spec.pinned {
                        spec.check_pinned(&dir.join("maps").join(spec.name))?;
                    }
                }
                Some(dir)
            }
            None => None,
        };
        let pin_paths: Vec<(&'static str, PathBuf)> = match &dir {
            Some(d) => specs
                .iter()
                .filter(|s| s.pinned)
                .map(|s| (s.name, d.join("maps").join(s.name)))
                .collect(),
            None => Vec::new(),
        };
        let fail_closed = u32::from(opts.fail_closed);
        let malformed_drop = u32::from(opts.malformed_drop);
        let shift = opts.flow_sample_shift.min(31);
        let mut loader = EbpfLoader::new();
        for spec in &specs {
            loader.map_max_entries(spec.name, spec.max_entries);
        }
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        loader
            .override_global("cfg_fail_closed", &fail_closed, true)
            .override_global("cfg_malformed_drop", &malformed_drop, true)
            .override_global("cfg_flow_sample_shift", &shift, true);
        let (base, spread) = match opts.build {
            Build::BenchSpread { base_v4, spread } => (base_v4, spread.max(1)),
            _ => (0, 1),
        };
        if matches!(opts.build, Build::BenchSpread { .. }) {
            loader.override_global("cfg_bench_base_v4", &base, true);
            loader.override_global("cfg_bench_spread", &spread, true);
        }
        let mut ebpf = loader
            .load(bytes)
            .map_err(|e| DataplaneError::Load(Box::new(e)))?;
        let class_mem = maps::map_classes(&ebpf, opts.limits.max_classes)?;
        for name in ["shaper_xdp_sub", "shaper_xdp_up"] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .expect("object has the program")
                .try_into()
                .map_err(prog_err(name))?;
            p.load().map_err(prog_err(name))?;
        }
        for name in ["shaper_tc_down", "shaper_tc_up"] {
            let p: &mut SchedClassifier = ebpf
                .program_mut(name)
                .expect("object has the program")
                .try_into()
                .map_err(prog_err(name))?;
            p.load().map_err(prog_err(name))?;
        }
        let opts_max_subs = opts.limits.max_subscribers;
        let mut dp = Self {
            ebpf,
            class_mem,
            opts,
            dir,
            classes: HashMap::new(),
            subs: HashMap::new(),
            alloc: subs::SlotAlloc::new(pools.total(), opts_max_subs, []),
            pools,
            hashed: HashMap::new(),
            rules: Vec::new(),
            active_keys: (Vec::new(), Vec::new()),
            active_set: 0,
            epoch: 0,
            attached: Vec::new(),
            _pin_lock: pin_lock,
        };
        dp.read_back()?;
        Ok(dp)
    }

    /// The pinned directory (`<pin_root>/v<ABI>`), if pinning.
    #[must_use]
    pub fn pin_dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    #[must_use]
    pub fn options(&self) -> &LoadOptions {
        &self.opts
    }

    pub(crate) fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub(crate) fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Takes the kernel event ring buffer (once) for a reader task.
    pub fn take_events(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        let m = self.ebpf.take_map("shaper_events")?;
        aya::maps::RingBuf::try_from(m).ok()
    }

    /// Ids of the classes currently defined.
    #[must_use]
    pub fn class_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.classes.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Subscribers currently defined.
    #[must_use]
    pub fn subscribers(&self) -> Vec<(SubscriberKey, [u32; 2])> {
        self.subs.iter().map(|(k, v)| (*k, *v)).collect()
    }

    // ---- classes --------------------------------------------------------------------------

    /// Creates or changes a class: stores into the mapped class array, no syscall. The
    /// policer state (`tat`) is the kernel's and is not written, so changing a rate does not
    /// hand out a fresh burst, and no packet's update of it is lost.
    pub fn upsert_class(&mut self, id: u32, cfg: &ClassConfig) -> Result<()> {
        cfg.validate(id)?;
        self.class_mem
            .write_config(id, &class_entry(cfg, 0))
            .ok_or(PolicyError::ClassOutOfRange {
                class: id,
                max: self.class_mem.entries(),
            })?;
        self.classes.insert(id, *cfg);
        Ok(())
    }

    /// Deletes a class that no subscriber or rule uses any more.
    pub fn delete_class(&mut self, id: u32) -> Result<()> {
        if !self.classes.contains_key(&id) {
            return Err(DataplaneError::UnknownClass(id));
        }
        let mut users: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, c)| c.contains(&id))
            .map(|(k, _)| format!("subscriber {}/{}", k.addr, k.len))
            .collect();
        users.extend(
            self.rules
                .iter()
                .filter(|r| r.class == id)
                .map(|r| format!("rule {}", r.id)),
        );
        if !users.is_empty() {
            users.sort();
            users.truncate(5);
            return Err(DataplaneError::ClassInUse {
                class: id,
                users: users.join(", "),
            });
        }
        // `tat` too: the id, when reused, starts with a full bucket.
        self.class_mem
            .clear(id)
            .ok_or(DataplaneError::UnknownClass(id))?;
        self.classes.remove(&id);
        Ok(())
    }

    #[must_use]
    pub fn class(&self, id: u32) -> Option<&ClassConfig> {
        self.classes.get(&id)
    }

    // ---- subscribers ----------------------------------------------------------------------

    /// Creates or changes subscribers in one batch: all are validated (keys, classes,
    /// capacity) before the first is written. A subscriber whose class changes in a direction
    /// starts that direction with a full bucket; its counters are kept.
    pub fn upsert_subscribers(&mut self, batch: &[(SubscriberKey, [u32; 2])]) -> Result<()> {
        let mut new_hashed = 0u64;
        let mut seen = std::collections::HashSet::new();
        for (key, classes) in batch {
            sub_table(key)?;
            for c in classes {
                if *c != 0 && !self.classes.contains_key(c) {
                    return Err(DataplaneError::UnknownClass(*c));
                }
            }
            if self.pools.slot_of(key).is_none()
                && !self.hashed.contains_key(key)
                && seen.insert(*key)
            {
                new_hashed += 1;
            }
        }
        if new_hashed > self.alloc.available() {
            let max = self.opts.limits.max_subscribers;
            return Err(DataplaneError::Full {
                map: "shaper_sub_slots",
                max,
                needed: u64::from(max) - self.alloc.available() + new_hashed,
            });
        }
        // Plan: the slot of every key (allocating for new hashed ones) and its new contents.
        // A key twice in one batch: the last one wins.
        let mut plan: Vec<Planned> = Vec::with_capacity(batch.len());
        let mut planned: HashMap<SubscriberKey, usize> = HashMap::new();
        for (key, classes) in batch {
            if let Some(&i) = planned.get(key) {
                plan[i].new_slot = with_classes(plan[i].old_slot, *classes);
                plan[i].classes = *classes;
                continue;
            }
            let (slot, new) = match self.pools.slot_of(key) {
                Some(s) => (s, false),
                None => match self.hashed.get(key) {
                    Some(&s) => (s, false),
                    None => (self.alloc.take().expect("capacity checked"), true),
                },
            };
            let old_slot = self.slot_contents(slot, key)?;
            planned.insert(*key, plan.len());
            plan.push(Planned {
                key: *key,
                slot,
                new_hash: new,
                classes: *classes,
                old_slot,
                new_slot: with_classes(old_slot, *classes),
            });
        }
        if let Err(e) = self.write_plan(&plan) {
            for p in plan.iter().filter(|p| p.new_hash) {
                self.alloc.put(p.slot);
            }
            return Err(e);
        }
        for p in &plan {
            if p.new_hash {
                self.hashed.insert(p.key, p.slot);
            }
            self.subs.insert(p.key, p.classes);
        }
        Ok(())
    }

    /// The slot's current contents for `key` (empty for a subscriber not yet known: a freed
    /// slot may still hold an old subscriber's counters).
    fn slot_contents(&self, slot: u32, key: &SubscriberKey) -> Result<abi::SubSlot> {
        if !self.subs.contains_key(key) {
            return Ok(abi::SubSlot::default());
        }
        maps::slot_read(&self.ebpf, slot)
    }

    /// Writes planned slots, then the hash entries of new hashed subscribers (so the kernel
    /// never follows a hash entry to a stale slot). All or nothing: on an error part-way, what
    /// was written is put back.
    fn write_plan(&mut self, plan: &[Planned]) -> Result<()> {
        let idx: Vec<u32> = plan.iter().map(|p| p.slot).collect();
        let vals: Vec<abi::SubSlot> = plan.iter().map(|p| p.new_slot).collect();
        let slot_res = if plan.len() < 64 {
            let mut r = Ok(());
            for (i, p) in plan.iter().enumerate() {
                if let Err(e) = maps::slot_write(&mut self.ebpf, p.slot, p.new_slot) {
                    r = Err((i, e));
                    break;
                }
            }
            r
        } else {
            maps::slot_write_batch(&mut self.ebpf, &idx, &vals)
        };
        let restore_slots = |ebpf: &mut Ebpf, n: usize| {
            for p in &plan[..n.min(plan.len())] {
                let _ = maps::slot_write(ebpf, p.slot, p.old_slot);
            }
        };
        if let Err((n, e)) = slot_res {
            restore_slots(&mut self.ebpf, n + 1);
            return Err(e);
        }
        let hashes: Vec<(SubscriberKey, u32)> = plan
            .iter()
            .filter(|p| p.new_hash)
            .map(|p| (p.key, p.slot))
            .collect();
        let mut written: Vec<SubscriberKey> = Vec::new();
        let res = if hashes.len() < 64 {
            let mut r = Ok(());
            for (k, s) in &hashes {
                written.push(*k);
                if let Err(e) = maps::sub_hash_write(&mut self.ebpf, k, *s) {
                    r = Err(e);
                    break;
                }
            }
            r
        } else {
            maps::sub_hash_write_batch(&mut self.ebpf, &hashes, |k| written.push(*k))
        };
        if let Err(e) = res {
            for k in &written {
                let _ = maps::sub_hash_delete(&mut self.ebpf, k);
            }
            restore_slots(&mut self.ebpf, plan.len());
            return Err(e);
        }
        Ok(())
    }

    pub fn upsert_subscriber(&mut self, key: SubscriberKey, classes: [u32; 2]) -> Result<()> {
        self.upsert_subscribers(&[(key, classes)])
    }

    pub fn delete_subscriber(&mut self, key: &SubscriberKey) -> Result<()> {
        if !self.subs.contains_key(key) {
            return Err(DataplaneError::UnknownSubscriber(format!(
                "{}/{}",
                key.addr, key.len
            )));
        }
        if let Some(slot) = self.pools.slot_of(key) {
            maps::slot_write(&mut self.ebpf, slot, abi::SubSlot::default())?;
        } else if let Some(&slot) = self.hashed.get(key) {
            // The hash entry first: from then on no packet reaches the slot.
            maps::sub_hash_delete(&mut self.ebpf, key)?;
            self.hashed.remove(key);
            maps::slot_write(&mut self.ebpf, slot, abi::SubSlot::default())?;
            self.alloc.put(slot);
        }
        self.subs.remove(key);
        Ok(())
    }

    /// The policer state (`tat`) behind each policed class that has exactly one bucket: a
    /// class used by rules, or a shared-bucket class, polices with its own bucket; a class used by exactly one subscriber
    /// direction (as the controller gives each modem its own classes) with that subscriber's.
    /// A plan shared by several subscribers has one bucket each and is left out.
    pub fn class_buckets(&self) -> Result<HashMap<u32, u64>> {
        let mut users: HashMap<u32, Vec<(SubscriberKey, usize)>> = HashMap::new();
        for (k, classes) in &self.subs {
            for (d, c) in classes.iter().enumerate() {
                if *c != 0 {
                    users.entry(*c).or_default().push((*k, d));
                }
            }
        }
        let rule_classes: std::collections::HashSet<u32> =
            self.rules.iter().map(|r| r.class).collect();
        let mut out = HashMap::new();
        for (id, cfg) in &self.classes {
            if cfg.rate_bps.is_none() {
                continue;
            }
            if cfg.shared_bucket || rule_classes.contains(id) {
                out.insert(*id, self.class_tat(*id)?);
            } else if let Some([(k, d)]) = users.get(id).map(Vec::as_slice) {
                out.insert(*id, self.subscriber_slot(k)?.d[*d].tat);
            }
        }
        Ok(out)
    }

    /// A subscriber's own counters and policer state (both directions), read from its slot.
    pub fn subscriber_slot(&self, key: &SubscriberKey) -> Result<abi::SubSlot> {
        let slot = self
            .subs
            .contains_key(key)
            .then(|| {
                self.pools
                    .slot_of(key)
                    .or_else(|| self.hashed.get(key).copied())
            })
            .flatten()
            .ok_or_else(|| {
                DataplaneError::UnknownSubscriber(format!("{}/{}", key.addr, key.len))
            })?;
        maps::slot_read(&self.ebpf, slot)
    }

    /// The classes `[up, down]` of one subscriber entry, as written.
    #[must_use]
    pub fn subscriber(&self, key: &SubscriberKey) -> Option<[u32; 2]> {
        self.subs.get(key).copied()
    }

    #[must_use]
    pub fn subscriber_count(&self) -> usize {
        self.subs.len()
    }

    // ---- rules ----------------------------------------------------------------------------

    /// Replaces the whole rule set atomically: the new set is validated and compiled, written
    /// into the inactive half, made active with one map write, and only then is the old half
    /// cleared. On any error before the flip, what was written is removed and the old set
    /// stays in force.
    pub fn set_rules(&mut self, rules: &[Rule]) -> Result<()> {
        crate::policy::validate_rules(rules)?;
        for r in rules {
            if !self.classes.contains_key(&r.class) {
                return Err(PolicyError::UnknownClass {
                    rule: r.id,
                    class: r.class,
                }
                .into());
            }
        }
        let next_set = self.active_set ^ 1;
        let half = self.opts.limits.max_rule_entries / 2;
        let compiled = rules::compile(rules, next_set, next_set * half)?;
        if compiled.entries.len() as u64 > u64::from(half) {
            return Err(DataplaneError::Full {
                map: "shaper_rule_entries",
                max: half,
                needed: compiled.entries.len() as u64,
            });
        }
        let keys_needed = (compiled.keys_v4.len()
            + compiled.keys_v6.len()
            + self.active_keys.0.len()
            + self.active_keys.1.len()) as u64;
        if keys_needed > u64::from(self.opts.limits.max_rule_keys) {
            return Err(DataplaneError::Full {
                map: "shaper_rules",
                max: self.opts.limits.max_rule_keys,
                needed: keys_needed,
            });
        }
        if let Err(e) = maps::rules_write(&mut self.ebpf, &compiled, next_set, half) {
            let _ = maps::rules_clear(
                &mut self.ebpf,
                next_set,
                &compiled.keys_v4.iter().map(|k| k.0).collect::<Vec<_>>(),
                &compiled.keys_v6.iter().map(|k| k.0).collect::<Vec<_>>(),
            );
            return Err(e);
        }
        self.epoch = self.epoch.wrapping_add(1);
        maps::ctl_write(
            &mut self.ebpf,
            abi::ShaperCtl {
                active_set: next_set,
                epoch: self.epoch,
            },
        )?;
        // Packets that read the old set index finish within microseconds; give them a moment
        // before the old half disappears under them.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let old = std::mem::replace(
            &mut self.active_keys,
            (
                compiled.keys_v4.iter().map(|k| k.0).collect(),
                compiled.keys_v6.iter().map(|k| k.0).collect(),
            ),
        );
        maps::rules_clear(&mut self.ebpf, self.active_set, &old.0, &old.1)?;
        self.active_set = next_set;
        self.rules = rules.to_vec();
        Ok(())
    }

    #[must_use]
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    // ---- counters -------------------------------------------------------------------------

    /// A class's counters, summed over CPUs.
    pub fn class_stats(&self, id: u32) -> Result<abi::ClassStats> {
        maps::class_stats(&self.ebpf, id)
    }

    /// Global counters (`abi::gs::*`), summed over CPUs.
    pub fn global_stats(&self) -> Result<abi::GlobalStats> {
        maps::global_stats(&self.ebpf)
    }

    /// The `n` flows with the most sampled bytes.
    pub fn top_flows(&self, n: usize) -> Result<Vec<(abi::FlowKey, abi::FlowValue)>> {
        maps::top_flows(&self.ebpf, n)
    }

    /// The clock the policer reads, in ns: `CLOCK_MONOTONIC` (what `bpf_ktime_get_ns`
    /// returns), or the test build's virtual clock. A class's `tat` is on this clock.
    pub fn policer_clock_ns(&self) -> Result<u64> {
        if self.opts.build == Build::Test {
            let name = "shaper_test_clock";
            let m: aya::maps::Array<_, u64> =
                aya::maps::Array::try_from(self.ebpf.map(name).expect("test build"))
                    .map_err(map_err(name))?;
            return m.get(&0, 0).map_err(map_err(name));
        }
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
        Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
    }

    /// Reads the state a previous controller left in pinned maps (classes and subscribers), so
    /// that this one reconciles instead of starting blind.
    fn read_back(&mut self) -> Result<()> {
        if self.dir.is_none() {
            return maps::pools_write(&mut self.ebpf, &self.pools.to_abi());
        }
        let st = maps::read_state(&self.ebpf, &self.class_mem)?;
        let want = self.pools.to_abi();
        let pinned = maps::pools_read(&self.ebpf)?;
        if pinned != want {
            if !st.hashed.is_empty() || !st.slots.is_empty() {
                let list: Vec<String> = pinned
                    .iter()
                    .filter(|(_, p)| p.count != 0)
                    .map(|(i, p)| format!("#{i}: base {:#x}, {} addresses", p.base, p.count))
                    .collect();
                return Err(DataplaneError::PoolsChanged {
                    pinned: if list.is_empty() {
                        "none".into()
                    } else {
                        list.join(", ")
                    },
                    path: self.dir.clone().unwrap_or_default(),
                });
            }
            maps::pools_write(&mut self.ebpf, &want)?;
        }
        self.classes = st.classes;
        let mut subs = HashMap::new();
        for (key, slot) in &st.hashed {
            subs.insert(*key, st.slots.get(slot).copied().unwrap_or([0, 0]));
        }
        for (slot, classes) in &st.slots {
            if let Some(key) = self.pools.key_of_slot(*slot) {
                subs.insert(key, *classes);
            }
        }
        self.subs = subs;
        self.alloc = subs::SlotAlloc::new(
            self.pools.total(),
            self.opts.limits.max_subscribers,
            st.hashed.values().copied(),
        );
        self.hashed = st.hashed;
        let ctl = st.ctl;
        self.active_set = ctl.active_set & 1;
        self.epoch = ctl.epoch;
        let (k4, k6) = maps::rule_keys_of_set(&self.ebpf, self.active_set)?;
        self.active_keys = (k4, k6);
        if !self.classes.is_empty() || !self.subs.is_empty() {
            info!(
                classes = self.classes.len(),
                subscribers = self.subs.len(),
                "reusing pinned data-plane state"
            );
        }
        Ok(())
    }

    /// A class's policer state (`tat`), read from the mapping.
    pub fn class_tat(&self, id: u32) -> Result<u64> {
        self.class_mem.tat(id).ok_or_else(|| {
            PolicyError::ClassOutOfRange {
                class: id,
                max: self.class_mem.entries(),
            }
            .into()
        })
    }

    /// Class `id` as the kernel sees it (all fields, `tat` included), read from the mapping.
    pub fn class_raw(&self, id: u32) -> Result<abi::ClassEntry> {
        self.class_mem.read(id).ok_or_else(|| {
            PolicyError::ClassOutOfRange {
                class: id,
                max: self.class_mem.entries(),
            }
            .into()
        })
    }
}

/// The kernel entry for a class configuration, with the policer state `tat` (which
/// [`Dataplane::upsert_class`] does not write: the kernel owns it).
#[must_use]
pub fn class_entry(cfg: &ClassConfig, tat: u64) -> abi::ClassEntry {
    abi::ClassEntry {
        ns_per_byte_q16: cfg.ns_per_byte_q16(),
        burst_ns: cfg.burst_ns(),
        tat,
        skb_priority: cfg.skb_priority,
        mtu: cfg.mtu.unwrap_or(0),
        dscp: cfg.dscp.unwrap_or(abi::DSCP_KEEP),
        flags: abi::CLASS_F_VALID
            | if cfg.block { abi::CLASS_F_BLOCK } else { 0 }
            | if cfg.shared_bucket {
                abi::CLASS_F_SHARED
            } else {
                0
            },
        rate_bps: cfg.rate_bps.unwrap_or(0),
        burst_bytes: cfg.burst_bytes,
        ..Default::default()
    }
}

/// `old` with the classes `classes`: a direction whose class changes gets a full bucket.
fn with_classes(mut old: abi::SubSlot, classes: [u32; 2]) -> abi::SubSlot {
    for (d, c) in old.d.iter_mut().zip(classes) {
        if d.class_id != c {
            d.class_id = c;
            d.tat = 0;
        }
    }
    old
}

/// 0 = v4 /32, 1 = v6 /128, 2 = v6 /64.
fn sub_table(key: &SubscriberKey) -> Result<usize> {
    match (key.addr, key.len) {
        (IpAddr::V4(_), 32) => Ok(0),
        (IpAddr::V6(_), 128) => Ok(1),
        (IpAddr::V6(_), 64) => Ok(2),
        (addr, len) => Err(DataplaneError::BadSubscriberKey { addr, len }),
    }
}

/// Checks a pinned map against what this build would create.
impl MapSpec {
    fn check_pinned(&self, path: &Path) -> Result<()> {
        if !path.exists() {
            return Ok(());
        }
        let info = MapInfo::from_pin(path).map_err(map_err(self.name))?;
        let ty = info.map_type().map_err(map_err(self.name))?;
        let mismatch =
            |what: &'static str, pinned: String, expected: String| DataplaneError::PinnedMismatch {
                path: path.to_path_buf(),
                what,
                pinned,
                expected,
            };
        if ty != self.map_type {
            return Err(mismatch(
                "type",
                format!("{ty:?}"),
                format!("{:?}", self.map_type),
            ));
        }
        if info.key_size() != self.key_size {
            return Err(mismatch(
                "key size",
                info.key_size().to_string(),
                self.key_size.to_string(),
            ));
        }
        if info.value_size() != self.value_size {
            return Err(mismatch(
                "value size",
                info.value_size().to_string(),
                self.value_size.to_string(),
            ));
        }
        if info.max_entries() != self.max_entries {
            return Err(mismatch(
                "max entries",
                info.max_entries().to_string(),
                self.max_entries.to_string(),
            ));
        }
        let missing = self.required_flags & !info.map_flags();
        if missing != 0 {
            return Err(mismatch(
                "map flags",
                format!("{:#x}, without {}", info.map_flags(), flag_names(missing)),
                format!(
                    "{} ({:#x})",
                    flag_names(self.required_flags),
                    self.required_flags
                ),
            ));
        }
        Ok(())
    }
}

/// `BPF_F_*` names of the flags this build requires of some map (see [`MapSpec`]).
fn flag_names(flags: u32) -> String {
    let known = [(abi::BPF_F_MMAPABLE, "BPF_F_MMAPABLE")];
    let mut names: Vec<String> = known
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, n)| (*n).to_string())
        .collect();
    let rest = known.iter().fold(flags, |r, (f, _)| r & !f);
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names.join("|")
}

/// One subscriber of an upsert batch, planned before anything is written.
struct Planned {
    key: SubscriberKey,
    slot: u32,
    /// A hashed subscriber new to the data plane: its hash entry is written after its slot.
    new_hash: bool,
    classes: [u32; 2],
    old_slot: abi::SubSlot,
    new_slot: abi::SubSlot,
}
