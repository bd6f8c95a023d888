//! Enforcement of allocations in the local data plane.
//!
//! # Mapping
//!
//! An allocation gets, per direction with a committed rate, one data-plane class of its own —
//! so every provider and every subscriber address holds its own level — and one rule per
//! (session address, classifier of that direction) pointing at it:
//!
//! - **Rule**: the classifier's literal fields with the subscriber side scoped to the session
//!   prefix (or the one address the allocation names). Precedence = the rule id, so rules of
//!   different allocations never tie (`docs/DATAPLANE.md` §2) and an older allocation wins
//!   where two overlap.
//! - **Policer** (XDP token bucket): rate = the ceiling (the rate when none is given), burst =
//!   the request's, else 250 ms of the ceiling, at least one frame
//!   ([`crate::controller::policer_burst`]). Traffic beyond the ceiling is dropped: the
//!   application is restricted to its allocation.
//! - **DSCP**: the allocation's (its priority's by default, [`super::model::dscp_for_priority`]).
//! - **MTU**: the request's MTU policy (MSS clamp, ICMP too-big).
//! - **HTB** (only when a tree is configured for the direction): rate = the committed rate,
//!   ceil = the ceiling, prio = `7 − priority`; the class's `skb_priority` steers into it.
//!
//! # All or nothing
//!
//! Everything is planned and validated first (ids, class configurations, the complete new rule
//! set together with the configuration's rules), then written in the order that never leaves
//! a rule pointing at a missing class: HTB classes, policer classes, then the rule set in one
//! atomic flip ([`Dataplane::set_rules`]). A failure part-way removes what this call wrote.
//! Removal runs in the reverse order.
//!
//! # Cost and limits
//!
//! The data plane's rule sets are double-buffered wholes, so every allocation change rewrites
//! the whole rule set: O(rules) map writes per change. Allocation rules are scoped to one
//! subscriber address each, so each is its own (protocol, source, destination) key:
//! `dataplane.limits.max_rule_keys` and `max_rule_entries` bound the allocation rules a
//! gateway holds, and the classes in `nsm.class_first..=class_last` bound the allocations
//! (one class per direction each). Incremental rule updates are the next step if gateways
//! need tens of thousands of concurrent allocations.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::model::{CompiledClassifier, Dir};
use crate::controller::{IdPool, htb_prio, policer_burst};
use crate::dataplane::htb::{self, HtbClass, HtbError, HtbTree};
use crate::dataplane::{Dataplane, DataplaneError};
use crate::policy::{ClassConfig, PolicyError, Prefix, Rule, validate_rules};

/// What the data plane must do for one allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnforcePlan {
    pub id: u64,
    /// Subscriber-side prefixes, each with the classifiers of its address family.
    pub scopes: Vec<(Prefix, Vec<CompiledClassifier>)>,
    /// Committed rate and ceiling per direction (0 = nothing in that direction).
    pub rate_up: u64,
    pub rate_down: u64,
    pub ceil_up: u64,
    pub ceil_down: u64,
    pub burst_bytes: Option<u32>,
    pub dscp: u8,
    pub priority: u8,
    pub mtu: Option<u16>,
}

impl EnforcePlan {
    fn rate(&self, dir: Dir) -> u64 {
        match dir {
            Dir::Up => self.rate_up,
            Dir::Down => self.rate_down,
        }
    }
    fn ceil(&self, dir: Dir) -> u64 {
        match dir {
            Dir::Up => self.ceil_up,
            Dir::Down => self.ceil_down,
        }
    }
}

/// Why enforcing or removing an allocation failed. Nothing of it changed unless the variant
/// says so.
#[derive(Debug, thiserror::Error)]
pub enum AllocEnforceError {
    #[error("allocation {id}: no free {what} left in {range}")]
    Exhausted {
        id: u64,
        what: &'static str,
        range: String,
    },
    #[error("allocation {id}: class {class}: {source}")]
    Class {
        id: u64,
        class: u32,
        #[source]
        source: DataplaneError,
    },
    #[error("allocation {id}: rule set: {source}")]
    Policy {
        id: u64,
        #[source]
        source: PolicyError,
    },
    #[error("allocation {id}: writing the rule set: {source}")]
    Rules {
        id: u64,
        #[source]
        source: DataplaneError,
    },
    #[error("allocation {id}: {dir} HTB class: {source}")]
    Htb {
        id: u64,
        dir: Dir,
        #[source]
        source: HtbError,
    },
    #[error("allocation {0} is already enforced")]
    Duplicate(u64),
    /// Removal failed part-way; the listed parts are still in the data plane.
    #[error("allocation {id}: removal left {left}")]
    Remove { id: u64, left: String },
}

/// Puts allocations into a data plane. Implementations are all-or-nothing per call.
pub trait AllocationTarget: Send {
    fn apply(&mut self, plan: &EnforcePlan) -> Result<(), AllocEnforceError>;
    /// Removes an allocation; removing one that is not there is not an error.
    fn remove(&mut self, id: u64) -> Result<(), AllocEnforceError>;
}

/// Data-plane enforcement switched off in configuration (`nsm.dataplane = false`): the
/// manager still admits, accounts and notifies (the gateways that carry the traffic may be
/// remote ones only).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDataplane;

impl AllocationTarget for NoDataplane {
    fn apply(&mut self, _: &EnforcePlan) -> Result<(), AllocEnforceError> {
        Ok(())
    }
    fn remove(&mut self, _: u64) -> Result<(), AllocEnforceError> {
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct Applied {
    classes: Vec<(Dir, u32)>,
    minors: Vec<(Dir, u16)>,
    rules: Vec<Rule>,
}

struct HtbSlot {
    tree: HtbTree,
    minors: IdPool,
}

/// The local data plane as an [`AllocationTarget`] (see the module documentation).
pub struct AllocationEnforcer {
    dp: Arc<Mutex<Dataplane>>,
    /// The rules that are not allocations' (the configuration's), kept in every rule set.
    base_rules: Vec<Rule>,
    classes: IdPool,
    rule_ids: IdPool,
    htb_up: Option<HtbSlot>,
    htb_down: Option<HtbSlot>,
    applied: BTreeMap<u64, Applied>,
}

impl std::fmt::Debug for AllocationEnforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllocationEnforcer")
            .field("classes", self.classes.range())
            .field("rule_ids", self.rule_ids.range())
            .field("applied", &self.applied.len())
            .finish_non_exhaustive()
    }
}

fn lock(dp: &Arc<Mutex<Dataplane>>) -> MutexGuard<'_, Dataplane> {
    dp.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AllocationEnforcer {
    /// An enforcer handing out data-plane classes from `classes` and rule ids (= precedences)
    /// from `rule_ids`. The data plane's current rules outside `rule_ids` are kept as the base
    /// of every rule set; ones inside are leftovers of a previous process and are replaced.
    pub fn new(
        dp: Arc<Mutex<Dataplane>>,
        classes: RangeInclusive<u32>,
        rule_ids: RangeInclusive<u32>,
    ) -> Self {
        let base_rules = lock(&dp)
            .rules()
            .iter()
            .filter(|r| !rule_ids.contains(&r.id))
            .copied()
            .collect();
        Self {
            dp,
            base_rules,
            classes: IdPool::new(classes),
            rule_ids: IdPool::new(rule_ids),
            htb_up: None,
            htb_down: None,
            applied: BTreeMap::new(),
        }
    }

    /// Shapes one direction with an HTB tree (down: the subscriber-facing interface's egress;
    /// up: the upstream-facing one's), giving allocations the minors in `minors`.
    #[must_use]
    pub fn with_htb(mut self, dir: Dir, tree: HtbTree, minors: RangeInclusive<u16>) -> Self {
        let slot = Some(HtbSlot {
            tree,
            minors: IdPool::new(u32::from(*minors.start())..=u32::from(*minors.end())),
        });
        match dir {
            Dir::Up => self.htb_up = slot,
            Dir::Down => self.htb_down = slot,
        }
        self
    }

    fn htb(&mut self, dir: Dir) -> Option<&mut HtbSlot> {
        match dir {
            Dir::Up => self.htb_up.as_mut(),
            Dir::Down => self.htb_down.as_mut(),
        }
    }

    /// The rules of every applied allocation but `except`, after the base rules.
    fn rule_set(&self, except: Option<u64>) -> Vec<Rule> {
        let mut v = self.base_rules.clone();
        for (id, a) in &self.applied {
            if Some(*id) != except {
                v.extend(a.rules.iter().copied());
            }
        }
        v
    }

    /// The data-plane classes of an applied allocation (for counters and tests).
    #[must_use]
    pub fn classes_of(&self, id: u64) -> Option<Vec<(Dir, u32)>> {
        self.applied.get(&id).map(|a| a.classes.clone())
    }

    fn undo(&mut self, id: u64, classes: &[(Dir, u32)], minors: &[(Dir, u16)]) {
        {
            let mut dp = lock(&self.dp);
            for (_, c) in classes {
                let _ = dp.delete_class(*c);
            }
        }
        for (dir, m) in minors {
            if let Some(slot) = self.htb(*dir) {
                let _ = slot.tree.remove_class(*m);
            }
        }
        tracing::debug!(allocation = id, "undid a partial enforcement");
    }
}

fn exhausted(id: u64, what: &'static str, pool: &IdPool) -> AllocEnforceError {
    AllocEnforceError::Exhausted {
        id,
        what,
        range: format!("{}..={}", pool.range().start(), pool.range().end()),
    }
}

impl AllocationTarget for AllocationEnforcer {
    fn apply(&mut self, plan: &EnforcePlan) -> Result<(), AllocEnforceError> {
        let id = plan.id;
        if self.applied.contains_key(&id) {
            return Err(AllocEnforceError::Duplicate(id));
        }
        let dirs: Vec<Dir> = Dir::BOTH
            .into_iter()
            .filter(|d| plan.rate(*d) > 0)
            .collect();
        // ---- plan: ids ----
        let class_ids = self
            .classes
            .lowest_free(dirs.len())
            .ok_or_else(|| exhausted(id, "data-plane class", &self.classes))?;
        let n_rules: usize = plan
            .scopes
            .iter()
            .map(|(_, cs)| cs.iter().filter(|c| plan.rate(c.direction) > 0).count())
            .sum();
        let rule_ids = self
            .rule_ids
            .lowest_free(n_rules)
            .ok_or_else(|| exhausted(id, "rule id", &self.rule_ids))?;
        let max_classes = lock(&self.dp).options().limits.max_classes;
        // ---- plan: HTB, classes ----
        let mut htb_steps: Vec<(Dir, u16, HtbClass)> = Vec::new();
        let mut classes: Vec<(Dir, u32, ClassConfig)> = Vec::new();
        for (dir, class) in dirs.iter().copied().zip(class_ids) {
            let rate = plan.rate(dir);
            let ceil = plan.ceil(dir).max(rate);
            let mut skb_priority = 0;
            if let Some(slot) = self.htb(dir) {
                let minor = slot
                    .minors
                    .lowest_free(1)
                    .and_then(|v| u16::try_from(v[0]).ok())
                    .ok_or_else(|| exhausted(id, "HTB minor", &slot.minors))?;
                let hc = HtbClass::new(rate.max(htb::MIN_RATE_BPS), ceil)
                    .with_prio(htb_prio(Some(plan.priority)));
                slot.tree
                    .plan_upsert(minor, &hc)
                    .map_err(|source| AllocEnforceError::Htb { id, dir, source })?;
                skb_priority = htb::skb_priority(minor);
                htb_steps.push((dir, minor, hc));
            }
            let cfg = ClassConfig {
                rate_bps: Some(ceil),
                burst_bytes: policer_burst(ceil, plan.burst_bytes, plan.mtu),
                dscp: Some(plan.dscp),
                mtu: plan.mtu,
                skb_priority,
                block: false,
                // Used by rules only: a rule class always polices with its one bucket.
                shared_bucket: false,
            };
            let class_err = |source: DataplaneError| AllocEnforceError::Class { id, class, source };
            cfg.validate(class).map_err(|e| class_err(e.into()))?;
            if class >= max_classes {
                return Err(class_err(
                    PolicyError::ClassOutOfRange {
                        class,
                        max: max_classes,
                    }
                    .into(),
                ));
            }
            classes.push((dir, class, cfg));
        }
        // ---- plan: rules ----
        let class_of = |dir: Dir| classes.iter().find(|(d, _, _)| *d == dir).map(|c| c.1);
        let mut rules = Vec::with_capacity(n_rules);
        let mut next = rule_ids.into_iter();
        for (prefix, cs) in &plan.scopes {
            for c in cs {
                let Some(class) = class_of(c.direction) else {
                    continue;
                };
                let rid = next.next().expect("one id per rule");
                let (proto, src, dst, sport, dport) = c.fields(*prefix);
                rules.push(Rule {
                    id: rid,
                    proto,
                    src,
                    dst,
                    sport,
                    dport,
                    precedence: rid,
                    class,
                });
            }
        }
        let mut set = self.rule_set(None);
        set.extend(rules.iter().copied());
        validate_rules(&set).map_err(|source| AllocEnforceError::Policy { id, source })?;
        // ---- write ----
        let mut minors_done = Vec::new();
        for (dir, minor, hc) in &htb_steps {
            let slot = self.htb(*dir).expect("planned with a tree");
            if let Err(source) = slot.tree.upsert_class(*minor, hc.clone()) {
                self.undo(id, &[], &minors_done);
                return Err(AllocEnforceError::Htb {
                    id,
                    dir: *dir,
                    source,
                });
            }
            minors_done.push((*dir, *minor));
        }
        let mut classes_done = Vec::new();
        for (dir, class, cfg) in &classes {
            let res = lock(&self.dp).upsert_class(*class, cfg);
            if let Err(source) = res {
                self.undo(id, &classes_done, &minors_done);
                return Err(AllocEnforceError::Class {
                    id,
                    class: *class,
                    source,
                });
            }
            classes_done.push((*dir, *class));
        }
        let res = lock(&self.dp).set_rules(&set);
        if let Err(source) = res {
            self.undo(id, &classes_done, &minors_done);
            return Err(AllocEnforceError::Rules { id, source });
        }
        for (_, c) in &classes_done {
            self.classes.take(*c);
        }
        for r in &rules {
            self.rule_ids.take(r.id);
        }
        for (dir, m) in &minors_done {
            if let Some(slot) = self.htb(*dir) {
                slot.minors.take(u32::from(*m));
            }
        }
        self.applied.insert(
            id,
            Applied {
                classes: classes_done,
                minors: minors_done,
                rules,
            },
        );
        Ok(())
    }

    fn remove(&mut self, id: u64) -> Result<(), AllocEnforceError> {
        let Some(applied) = self.applied.get(&id).cloned() else {
            return Ok(());
        };
        let set = self.rule_set(Some(id));
        lock(&self.dp)
            .set_rules(&set)
            .map_err(|source| AllocEnforceError::Rules { id, source })?;
        self.applied.remove(&id);
        for r in &applied.rules {
            self.rule_ids.release(r.id);
        }
        let mut left = Vec::new();
        for (_, c) in &applied.classes {
            match lock(&self.dp).delete_class(*c) {
                Ok(()) => self.classes.release(*c),
                Err(e) => left.push(format!("class {c} ({e})")),
            }
        }
        for (dir, m) in &applied.minors {
            if let Some(slot) = self.htb(*dir) {
                match slot.tree.remove_class(*m) {
                    Ok(()) => slot.minors.release(u32::from(*m)),
                    Err(e) => left.push(format!("{dir} HTB class 1:{m:x} ({e})")),
                }
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(AllocEnforceError::Remove {
                id,
                left: left.join(", "),
            })
        }
    }
}
