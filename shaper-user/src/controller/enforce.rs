//! Enforcement in the data plane: a modem's effective [`QosLevel`] becomes one policer class
//! per direction (and, where an HTB tree is configured, one HTB class per direction), and the
//! modem's addresses point at those classes.
//!
//! # Mapping
//!
//! Per direction (`up` = modem → network, `down` = network → modem):
//!
//! - **Maximum rate → policer rate.** `max_{dir}_bps` is the class's `rate_bps`; no maximum
//!   means no policer.
//! - **Burst.** `max(QosLevel.burst_bytes, rate × 250 ms / 8, max(MTU, 1500))`. A policer has
//!   no queue, so TCP only reaches the configured rate when the bucket absorbs its bursts; on
//!   paths whose RTT is small against TCP's minimum retransmission timeout (200 ms) tail drops
//!   are recovered by timeouts and the bucket has to bank about 200 ms of traffic
//!   (`docs/DATAPLANE.md` §7, measured in `tests/lab_dataplane.rs`). 250 ms covers that with a
//!   margin. The floor of one frame (the MTU, at least 1500 bytes) is what the data plane
//!   requires of every bucket (`ClassConfig::validate`). A larger burst the plan asks for wins.
//! - **MTU → class MTU.**
//! - **Committed and maximum rate → HTB** (only when an HTB tree is configured for the
//!   direction *and* the binding names a minor for it): `rate` = the committed rate, or 1 % of
//!   the maximum when none is committed (HTB needs some rate; 1 % is what the tree's default
//!   class gets too), at least 8 bit/s; `ceil` = the maximum rate, or the link rate when the
//!   level has no maximum. The class's `skb_priority` is then `htb::skb_priority(minor)`, so
//!   the TC egress program steers the modem's packets into its HTB class; without HTB it is 0
//!   (the tree's default class, or no tree at all).
//! - **Priority → HTB prio** = `7 − priority`. DOCSIS traffic priority runs 0..=7 with 7 the
//!   highest; HTB serves prio 0 first. A level without a priority gets the DOCSIS default 0,
//!   i.e. HTB prio 7, the same as the tree's default class.
//! - **Service targets** (availability, error and loss ratios, setup and repair times) are
//!   *not* enforced in the data plane: nothing in a packet path can make a link available.
//!   They are stored, carried to the modem pipeline and to reports.
//!
//! # All or nothing
//!
//! [`DataplaneEnforcer::apply`] first builds and validates everything (binding, class
//! configurations, class ids within the data plane's limits, subscriber keys, HTB plans against
//! the tree's view, ownership of class ids and addresses) and only then writes. The writes run
//! in the order that never leaves a packet pointing at something missing: HTB classes, then the
//! policer classes, then the subscriber entries (one all-or-nothing batch). If a write fails
//! part-way, what was already written for this modem is put back as it was (best effort).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::dataplane::htb::{self, HtbClass, HtbError, HtbTree};
use crate::dataplane::{Dataplane, DataplaneError};
use crate::policy::{ClassConfig, SubscriberKey};
use crate::provision::QosLevel;

use super::{Direction, Enforcer};

/// How much traffic a policer bucket banks at its rate, in milliseconds (see the module
/// documentation).
pub const POLICER_BURST_MS: u64 = 250;
/// Smallest policer bucket: one full-size Ethernet frame.
pub const MIN_POLICER_BURST: u32 = 1500;

/// Where one modem lives in the data plane: its addresses and the class ids (and HTB minors)
/// the controller allocated for it, one per direction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModemBinding {
    pub modem: String,
    /// The modem's subscriber keys (IPv4 /32, IPv6 /128 or /64). May be empty (a modem not
    /// online yet): its classes are still kept up to date.
    pub addrs: Vec<SubscriberKey>,
    /// Data-plane class of traffic from the modem.
    pub up_class: u32,
    /// Data-plane class of traffic to the modem.
    pub down_class: u32,
    /// HTB class `1:<minor>` on the downstream tree, if the modem gets one.
    pub htb_minor_down: Option<u16>,
    /// HTB class `1:<minor>` on the upstream tree, if the modem gets one.
    pub htb_minor_up: Option<u16>,
}

impl ModemBinding {
    /// The class id of one direction.
    pub fn class(&self, dir: Direction) -> u32 {
        match dir {
            Direction::Up => self.up_class,
            Direction::Down => self.down_class,
        }
    }

    /// The HTB minor of one direction.
    pub fn htb_minor(&self, dir: Direction) -> Option<u16> {
        match dir {
            Direction::Up => self.htb_minor_up,
            Direction::Down => self.htb_minor_down,
        }
    }

    /// Checks the binding on its own: a modem id, two distinct non-zero classes, well-formed
    /// and distinct subscriber keys, HTB minors in range.
    pub fn validate(&self) -> Result<(), EnforceError> {
        let bad = |reason: String| EnforceError::Binding {
            modem: self.modem.clone(),
            reason,
        };
        if self.modem.is_empty() {
            return Err(bad("modem id is empty".into()));
        }
        if self.up_class == 0 || self.down_class == 0 {
            return Err(bad("class id 0 means \"no class\"".into()));
        }
        if self.up_class == self.down_class {
            return Err(bad(format!(
                "up and down share class {}: each direction needs its own policer",
                self.up_class
            )));
        }
        let mut seen = BTreeSet::new();
        for key in &self.addrs {
            let ok = matches!(
                (key.addr, key.len),
                (IpAddr::V4(_), 32) | (IpAddr::V6(_), 128) | (IpAddr::V6(_), 64)
            );
            if !ok {
                return Err(bad(format!(
                    "subscriber key {}/{}: IPv4 takes /32, IPv6 /128 or /64",
                    key.addr, key.len
                )));
            }
            if !seen.insert((key.addr, key.len)) {
                return Err(bad(format!(
                    "address {}/{} appears twice",
                    key.addr, key.len
                )));
            }
        }
        for minor in [self.htb_minor_down, self.htb_minor_up]
            .into_iter()
            .flatten()
        {
            if !(htb::MIN_MINOR..=htb::MAX_MINOR).contains(&minor) {
                return Err(bad(format!(
                    "HTB minor {minor:#x} is outside {:#x}..={:#x}",
                    htb::MIN_MINOR,
                    htb::MAX_MINOR
                )));
            }
        }
        Ok(())
    }
}

/// Why enforcing a level failed. Nothing of this modem changed unless the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("modem {modem}: binding: {reason}")]
    Binding { modem: String, reason: String },
    #[error("modem {modem}: {dir} class {class}: {source}")]
    Class {
        modem: String,
        dir: Direction,
        class: u32,
        #[source]
        source: DataplaneError,
    },
    #[error("modem {modem}: subscriber entries: {source}")]
    Subscribers {
        modem: String,
        #[source]
        source: DataplaneError,
    },
    #[error("modem {modem}: {dir} HTB class: {source}")]
    Htb {
        modem: String,
        dir: Direction,
        #[source]
        source: HtbError,
    },
    #[error("modem {modem}: {what} is already used by modem {owner}")]
    Taken {
        modem: String,
        what: String,
        owner: String,
    },
    /// The modem pipeline could not generate or store the modem's file; nothing was delivered
    /// and the previous file stays in force.
    #[error("modem {modem}: modem pipeline: {source}")]
    Pipeline {
        modem: String,
        #[source]
        source: crate::modem::pipeline::PipelineError,
    },
    /// Removing part of a modem failed; the listed parts are still in the data plane.
    #[error("modem {modem}: removal left {left}")]
    Remove { modem: String, left: String },
}

/// The policer bucket for `rate_bps`: see the module documentation.
pub fn policer_burst(rate_bps: u64, asked: Option<u32>, mtu: Option<u16>) -> u32 {
    let banked = rate_bps.saturating_mul(POLICER_BURST_MS) / 1000 / 8;
    let banked = u32::try_from(banked).unwrap_or(u32::MAX);
    let floor = MIN_POLICER_BURST.max(mtu.map_or(0, u32::from));
    asked.unwrap_or(0).max(banked).max(floor)
}

/// HTB prio for a DOCSIS traffic priority: `7 − priority` (7 highest there, 0 first here);
/// no priority is the DOCSIS default 0, HTB prio 7.
pub fn htb_prio(priority: Option<u8>) -> u8 {
    htb::MAX_PRIO - priority.unwrap_or(0).min(htb::MAX_PRIO)
}

/// The policer class of one direction of `qos`. `skb_priority` is where TC egress steers the
/// packets (an HTB class, or 0).
pub fn class_config(qos: &QosLevel, dir: Direction, skb_priority: u32) -> ClassConfig {
    let max = match dir {
        Direction::Up => qos.max_up_bps,
        Direction::Down => qos.max_down_bps,
    };
    ClassConfig {
        rate_bps: max,
        burst_bytes: max.map_or(0, |rate| policer_burst(rate, qos.burst_bytes, qos.mtu)),
        dscp: None,
        mtu: qos.mtu,
        skb_priority,
        block: false,
        // One bucket for all of the modem's addresses (IPv4 and IPv6 alike).
        shared_bucket: true,
    }
}

/// The HTB class of one direction of `qos` on a tree whose link runs at `link_bps`.
pub fn htb_class(qos: &QosLevel, dir: Direction, link_bps: u64) -> HtbClass {
    let (max, committed) = match dir {
        Direction::Up => (qos.max_up_bps, qos.committed_up_bps),
        Direction::Down => (qos.max_down_bps, qos.committed_down_bps),
    };
    let ceil = max.unwrap_or(link_bps);
    let rate = committed
        .unwrap_or(ceil / 100)
        .max(htb::MIN_RATE_BPS)
        .min(ceil.max(htb::MIN_RATE_BPS));
    HtbClass::new(rate, ceil).with_prio(htb_prio(qos.priority))
}

/// The real enforcer: writes classes and subscriber entries into the loaded data plane and,
/// per direction, HTB classes into an optional [`HtbTree`].
///
/// The data plane is shared (`Arc<Mutex<_>>`) because the rest of the process reads counters
/// from it and a restarted controller takes the same one over.
pub struct DataplaneEnforcer {
    dp: Arc<Mutex<Dataplane>>,
    htb_down: Option<HtbTree>,
    htb_up: Option<HtbTree>,
    /// What is in the data plane for each modem (the binding last applied).
    applied: HashMap<String, ModemBinding>,
    class_owner: HashMap<u32, String>,
    addr_owner: HashMap<SubscriberKey, String>,
}

impl std::fmt::Debug for DataplaneEnforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataplaneEnforcer")
            .field("htb_down", &self.htb_down.as_ref().map(HtbTree::ifname))
            .field("htb_up", &self.htb_up.as_ref().map(HtbTree::ifname))
            .field("modems", &self.applied.len())
            .finish_non_exhaustive()
    }
}

/// One planned policer-class write: direction, class id, configuration.
type PlannedClass = (Direction, u32, ClassConfig);

/// One planned HTB write, with what to put back if a later write fails.
struct HtbStep {
    dir: Direction,
    minor: u16,
    class: HtbClass,
    old: Option<HtbClass>,
}

impl DataplaneEnforcer {
    /// An enforcer without HTB: policer classes only.
    pub fn new(dp: Arc<Mutex<Dataplane>>) -> Self {
        Self {
            dp,
            htb_down: None,
            htb_up: None,
            applied: HashMap::new(),
            class_owner: HashMap::new(),
            addr_owner: HashMap::new(),
        }
    }

    /// Adds the HTB tree that shapes one direction (downstream: the subscriber-facing
    /// interface's egress; upstream: the upstream-facing one's).
    pub fn with_htb(mut self, dir: Direction, tree: HtbTree) -> Self {
        *self.tree_slot(dir) = Some(tree);
        self
    }

    /// The HTB tree of one direction, if configured.
    pub fn htb(&self, dir: Direction) -> Option<&HtbTree> {
        match dir {
            Direction::Up => self.htb_up.as_ref(),
            Direction::Down => self.htb_down.as_ref(),
        }
    }

    /// The shared data plane.
    pub fn dataplane(&self) -> &Arc<Mutex<Dataplane>> {
        &self.dp
    }

    /// The binding last applied for `modem`.
    pub fn applied(&self, modem: &str) -> Option<&ModemBinding> {
        self.applied.get(modem)
    }

    /// Takes the HTB trees back (for example to destroy them), leaving the enforcer without.
    pub fn take_htb(&mut self) -> (Option<HtbTree>, Option<HtbTree>) {
        (self.htb_down.take(), self.htb_up.take())
    }

    fn tree_slot(&mut self, dir: Direction) -> &mut Option<HtbTree> {
        match dir {
            Direction::Up => &mut self.htb_up,
            Direction::Down => &mut self.htb_down,
        }
    }

    /// The data plane's methods update their in-memory view only after the kernel write
    /// succeeded, so a panic elsewhere while the lock was held leaves it consistent.
    fn lock(dp: &Arc<Mutex<Dataplane>>) -> MutexGuard<'_, Dataplane> {
        dp.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_owner<K: std::hash::Hash + Eq>(
        owners: &HashMap<K, String>,
        key: &K,
        modem: &str,
        what: impl FnOnce() -> String,
    ) -> Result<(), EnforceError> {
        match owners.get(key) {
            Some(owner) if owner != modem => Err(EnforceError::Taken {
                modem: modem.to_owned(),
                what: what(),
                owner: owner.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Everything `apply` will write, validated: the two policer classes and the HTB steps.
    fn plan(
        &self,
        b: &ModemBinding,
        qos: &QosLevel,
        max_classes: u32,
    ) -> Result<([PlannedClass; 2], Vec<HtbStep>), EnforceError> {
        b.validate()?;
        let modem = b.modem.as_str();
        for dir in Direction::BOTH {
            let class = b.class(dir);
            Self::check_owner(&self.class_owner, &class, modem, || {
                format!("class {class}")
            })?;
        }
        for key in &b.addrs {
            Self::check_owner(&self.addr_owner, key, modem, || {
                format!("address {}/{}", key.addr, key.len)
            })?;
        }
        let mut steps = Vec::new();
        let mut classes = Vec::with_capacity(2);
        for dir in Direction::BOTH {
            let mut skb_priority = 0;
            if let (Some(tree), Some(minor)) = (self.htb(dir), b.htb_minor(dir)) {
                let class = htb_class(qos, dir, tree.link_rate_bps());
                tree.plan_upsert(minor, &class)
                    .map_err(|source| EnforceError::Htb {
                        modem: modem.to_owned(),
                        dir,
                        source,
                    })?;
                skb_priority = htb::skb_priority(minor);
                let old = tree.classes().get(&minor).cloned();
                steps.push(HtbStep {
                    dir,
                    minor,
                    class,
                    old,
                });
            }
            let id = b.class(dir);
            let cfg = class_config(qos, dir, skb_priority);
            let class_err = |source: DataplaneError| EnforceError::Class {
                modem: modem.to_owned(),
                dir,
                class: id,
                source,
            };
            cfg.validate(id).map_err(|e| class_err(e.into()))?;
            if id >= max_classes {
                return Err(class_err(
                    crate::policy::PolicyError::ClassOutOfRange {
                        class: id,
                        max: max_classes,
                    }
                    .into(),
                ));
            }
            classes.push((dir, id, cfg));
        }
        let classes = [classes[0], classes[1]];
        Ok((classes, steps))
    }

    /// Puts HTB classes back as they were before `done` ran (best effort).
    fn undo_htb(&mut self, done: &[HtbStep]) {
        for step in done.iter().rev() {
            if let Some(tree) = self.tree_slot(step.dir).as_mut() {
                let _ = match &step.old {
                    Some(old) => tree.upsert_class(step.minor, old.clone()).map(|_| ()),
                    None => tree.remove_class(step.minor),
                };
            }
        }
    }

    /// Forgets the ownership entries of a binding.
    fn disown(&mut self, b: &ModemBinding) {
        for dir in Direction::BOTH {
            if self.class_owner.get(&b.class(dir)) == Some(&b.modem) {
                self.class_owner.remove(&b.class(dir));
            }
        }
        for key in &b.addrs {
            if self.addr_owner.get(key) == Some(&b.modem) {
                self.addr_owner.remove(key);
            }
        }
    }

    fn own(&mut self, b: &ModemBinding) {
        for dir in Direction::BOTH {
            self.class_owner.insert(b.class(dir), b.modem.clone());
        }
        for key in &b.addrs {
            self.addr_owner.insert(*key, b.modem.clone());
        }
    }
}

impl Enforcer for DataplaneEnforcer {
    fn apply(&mut self, b: &ModemBinding, qos: &QosLevel) -> Result<(), EnforceError> {
        let modem = b.modem.as_str();
        let dp_arc = Arc::clone(&self.dp);
        let mut dp = Self::lock(&dp_arc);
        let max_classes = dp.options().limits.max_classes;
        let (classes, steps) = self.plan(b, qos, max_classes)?;

        // 1. HTB classes, so that the skb->priority the classes carry names an existing class.
        for (i, step) in steps.iter().enumerate() {
            let tree = self
                .tree_slot(step.dir)
                .as_mut()
                .expect("planned only for configured trees");
            if let Err(source) = tree.upsert_class(step.minor, step.class.clone()) {
                self.undo_htb(&steps[..i]);
                return Err(EnforceError::Htb {
                    modem: modem.to_owned(),
                    dir: step.dir,
                    source,
                });
            }
        }
        // 2. Policer classes.
        let old: Vec<Option<ClassConfig>> = classes
            .iter()
            .map(|(_, id, _)| dp.class(*id).copied())
            .collect();
        let undo_classes = |dp: &mut Dataplane, n: usize| {
            for ((_, id, _), old) in classes[..n].iter().zip(&old).rev() {
                let _ = match old {
                    Some(cfg) => dp.upsert_class(*id, cfg),
                    None => dp.delete_class(*id),
                };
            }
        };
        for (i, (dir, id, cfg)) in classes.iter().enumerate() {
            if let Err(source) = dp.upsert_class(*id, cfg) {
                undo_classes(&mut dp, i);
                self.undo_htb(&steps);
                return Err(EnforceError::Class {
                    modem: modem.to_owned(),
                    dir: *dir,
                    class: *id,
                    source,
                });
            }
        }
        // 3. Subscriber entries, one all-or-nothing batch. If this enforcer already wrote
        // this very binding, the entries are in place (a QoS change rewrites classes only, and
        // leaves the data plane's classification caches valid).
        let batch: Vec<(SubscriberKey, [u32; 2])> = b
            .addrs
            .iter()
            .map(|k| (*k, [b.up_class, b.down_class]))
            .collect();
        let unchanged = self.applied.get(modem) == Some(b)
            && batch.iter().all(|(k, c)| dp.subscriber(k) == Some(*c));
        if !batch.is_empty() && !unchanged {
            if let Err(source) = dp.upsert_subscribers(&batch) {
                undo_classes(&mut dp, classes.len());
                self.undo_htb(&steps);
                return Err(EnforceError::Subscribers {
                    modem: modem.to_owned(),
                    source,
                });
            }
        }

        // The new state is in force. What the previous binding had and this one has not
        // (addresses given up, re-allocated classes or minors) goes now; failures there leave
        // only unused leftovers, so they are logged rather than reported.
        if let Some(prev) = self.applied.get(modem).cloned() {
            for key in prev.addrs.iter().filter(|k| !b.addrs.contains(k)) {
                if let Err(e) = dp.delete_subscriber(key) {
                    tracing::warn!(modem, error = %e, "removing a released address");
                }
            }
            for dir in Direction::BOTH {
                let id = prev.class(dir);
                if id != b.up_class && id != b.down_class {
                    if let Err(e) = dp.delete_class(id) {
                        tracing::warn!(modem, class = id, error = %e, "removing a released class");
                    }
                }
                if let Some(minor) = prev.htb_minor(dir).filter(|m| Some(*m) != b.htb_minor(dir)) {
                    if let Some(tree) = self.tree_slot(dir).as_mut() {
                        if let Err(e) = tree.remove_class(minor) {
                            tracing::warn!(modem, minor, error = %e, "removing a released HTB class");
                        }
                    }
                }
            }
            self.disown(&prev);
        }
        drop(dp);
        self.own(b);
        self.applied.insert(modem.to_owned(), b.clone());
        Ok(())
    }

    fn remove(&mut self, b: &ModemBinding) -> Result<(), EnforceError> {
        let modem = b.modem.as_str();
        // What is actually in the data plane, if this enforcer wrote it; else what the caller
        // says (a modem written by a previous process).
        let target = self
            .applied
            .get(modem)
            .cloned()
            .unwrap_or_else(|| b.clone());
        let dp_arc = Arc::clone(&self.dp);
        let mut dp = Self::lock(&dp_arc);
        let mut left = Vec::new();
        for key in &target.addrs {
            match dp.delete_subscriber(key) {
                Ok(()) | Err(DataplaneError::UnknownSubscriber(_)) => {}
                Err(e) => left.push(format!("address {}/{} ({e})", key.addr, key.len)),
            }
        }
        for dir in Direction::BOTH {
            let id = target.class(dir);
            match dp.delete_class(id) {
                Ok(()) | Err(DataplaneError::UnknownClass(_)) => {}
                Err(e) => left.push(format!("class {id} ({e})")),
            }
        }
        drop(dp);
        for dir in Direction::BOTH {
            if let (Some(minor), Some(tree)) = (target.htb_minor(dir), self.tree_slot(dir).as_mut())
            {
                match tree.remove_class(minor) {
                    Ok(()) | Err(HtbError::NoSuchClass { .. }) => {}
                    Err(e) => left.push(format!("{dir} HTB class 1:{minor:x} ({e})")),
                }
            }
        }
        if !left.is_empty() {
            return Err(EnforceError::Remove {
                modem: modem.to_owned(),
                left: left.join(", "),
            });
        }
        self.disown(&target);
        self.applied.remove(modem);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level() -> QosLevel {
        QosLevel {
            max_up_bps: Some(5_000_000),
            max_down_bps: Some(50_000_000),
            committed_down_bps: Some(10_000_000),
            burst_bytes: Some(20_000),
            priority: Some(5),
            mtu: Some(1400),
            ..QosLevel::default()
        }
    }

    #[test]
    fn burst_banks_250_ms_with_floors() {
        // 50 Mbit/s for 250 ms = 1_562_500 bytes.
        assert_eq!(policer_burst(50_000_000, Some(20_000), None), 1_562_500);
        // A larger asked burst wins.
        assert_eq!(policer_burst(50_000_000, Some(2_000_000), None), 2_000_000);
        // Slow rates: one frame, or the MTU when it is larger.
        assert_eq!(policer_burst(8_000, None, None), 1500);
        assert_eq!(policer_burst(8_000, None, Some(9000)), 9000);
        assert_eq!(policer_burst(8_000, None, Some(1280)), 1500);
        // Saturates instead of wrapping.
        assert_eq!(policer_burst(u64::MAX, None, None), u32::MAX);
    }

    #[test]
    fn priority_maps_to_htb_prio_inverted() {
        assert_eq!(htb_prio(Some(7)), 0);
        assert_eq!(htb_prio(Some(0)), 7);
        assert_eq!(htb_prio(Some(5)), 2);
        assert_eq!(htb_prio(None), 7);
    }

    #[test]
    fn class_config_per_direction() {
        let q = level();
        let down = class_config(&q, Direction::Down, htb::skb_priority(0x20));
        assert_eq!(down.rate_bps, Some(50_000_000));
        assert_eq!(down.burst_bytes, 1_562_500);
        assert_eq!(down.mtu, Some(1400));
        assert_eq!(down.skb_priority, 0x0001_0020);
        assert_eq!(down.validate(3), Ok(()));
        let up = class_config(&q, Direction::Up, 0);
        assert_eq!(up.rate_bps, Some(5_000_000));
        assert_eq!(up.burst_bytes, 156_250);
        // No maximum: no policer, and still a valid class (MTU policy only).
        let open = class_config(&QosLevel::default(), Direction::Up, 0);
        assert_eq!(open.rate_bps, None);
        assert_eq!(open.validate(3), Ok(()));
    }

    #[test]
    fn htb_class_rate_ceil_prio() {
        let q = level();
        let down = htb_class(&q, Direction::Down, 1_000_000_000);
        assert_eq!(
            (down.rate_bps, down.ceil_bps, down.prio),
            (10_000_000, 50_000_000, 2)
        );
        // No committed rate: 1 % of the maximum.
        let up = htb_class(&q, Direction::Up, 1_000_000_000);
        assert_eq!((up.rate_bps, up.ceil_bps), (50_000, 5_000_000));
        // No maximum: the link is the ceil.
        let none = htb_class(&QosLevel::default(), Direction::Down, 100_000_000);
        assert_eq!(
            (none.rate_bps, none.ceil_bps, none.prio),
            (1_000_000, 100_000_000, 7)
        );
        // Tiny rates stay at HTB's minimum.
        let tiny = QosLevel {
            max_up_bps: Some(100),
            ..QosLevel::default()
        };
        let c = htb_class(&tiny, Direction::Up, 100_000_000);
        assert_eq!((c.rate_bps, c.ceil_bps), (8, 100));
    }

    #[test]
    fn binding_validation() {
        let key = |s: &str, len| SubscriberKey {
            addr: s.parse().unwrap(),
            len,
        };
        let b = ModemBinding {
            modem: "cm1".into(),
            addrs: vec![key("198.18.0.10", 32), key("2001:db8::", 64)],
            up_class: 10,
            down_class: 11,
            htb_minor_down: Some(0x10),
            htb_minor_up: None,
        };
        assert!(b.validate().is_ok());
        for bad in [
            ModemBinding {
                up_class: 11,
                ..b.clone()
            },
            ModemBinding {
                down_class: 0,
                ..b.clone()
            },
            ModemBinding {
                addrs: vec![key("198.18.0.10", 24)],
                ..b.clone()
            },
            ModemBinding {
                addrs: vec![key("198.18.0.10", 32), key("198.18.0.10", 32)],
                ..b.clone()
            },
            ModemBinding {
                htb_minor_up: Some(1),
                ..b.clone()
            },
            ModemBinding {
                modem: String::new(),
                ..b.clone()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(EnforceError::Binding { .. })),
                "{bad:?}"
            );
        }
    }
}
