//! Reference model of the data plane (`docs/DATAPLANE.md`), written independently of the
//! kernel programs, and random packet / rule-set generators for the differential test that
//! runs both on the same inputs and demands identical verdicts, classes and output bytes.
//!
//! - [`parse`]: §1, frame → [`parse::ParseResult`].
//! - [`classify`]: §2, subscriber and rule classes.
//! - [`act`]: §3 (XDP: block, MTU, police, DSCP, MSS) and §4 (TC priority).
//! - [`icmp`]: §5, the ICMP / ICMPv6 answers.
//! - [`rate`]: the policer's per-byte cost and bucket depth from a class's rate and burst.
//! - [`csum`]: internet checksum and RFC 1624 incremental update.
//! - [`gen`]: reproducible random policies, frames and mutations.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::policy::{ClassConfig, Rule};

pub mod act;
pub mod classify;
pub mod csum;
pub mod r#gen;
pub mod icmp;
pub mod parse;
pub mod rate;

#[cfg(test)]
mod tests;

pub use act::TcOutcome;
pub use classify::{Classification, SubRef};
pub use r#gen::{GenConfig, Generator, Policy};
pub use parse::{ParseResult, Parsed};

pub use crate::abi::{
    DROP_BLOCK, DROP_FAIL_CLOSED, DROP_MALFORMED, DROP_MTU, DROP_NONE, DROP_POLICE_RULE,
    DROP_POLICE_SUB, DSCP_KEEP,
};

/// Direction of a packet relative to the subscriber (`SHAPER_DIR_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    Up = 0,
    Down = 1,
}

/// XDP verdict: `XDP_PASS`, `XDP_DROP`, `XDP_TX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Pass,
    Drop,
    Tx,
}

impl Verdict {
    /// The kernel's `XDP_*` action value.
    #[must_use]
    pub fn xdp_action(self) -> u32 {
        match self {
            Verdict::Drop => 1,
            Verdict::Pass => 2,
            Verdict::Tx => 3,
        }
    }
}

/// `SHAPER_PARSE_*` (`ParseKind::X as u32` is the ABI value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseKind {
    Ok = 0,
    NonIp = 1,
    Malformed = 2,
    Unsupported = 3,
}

/// One class: its configuration and the policer state (`tat`, ns) of a rule class (a
/// subscriber class's bucket is per subscriber: [`Model::sub_tat`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelClass {
    pub cfg: ClassConfig,
    pub tat: u64,
}

impl ModelClass {
    #[must_use]
    pub fn new(cfg: ClassConfig) -> Self {
        Self { cfg, tat: 0 }
    }
}

/// The data plane's state as the model sees it.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// class_id per direction, 0 = none.
    pub subs_v4: HashMap<Ipv4Addr, [u32; 2]>,
    /// exact /128.
    pub subs_v6: HashMap<Ipv6Addr, [u32; 2]>,
    /// /64 prefix, consulted after /128 misses.
    pub subs_v6_64: HashMap<[u8; 8], [u32; 2]>,
    /// absent = not valid.
    pub classes: HashMap<u32, ModelClass>,
    pub rules: Vec<Rule>,
    pub fail_closed: bool,
    pub malformed_drop: bool,
    /// Each subscriber's own policer state (`tat`, ns) per direction; absent = 0 (a full
    /// bucket). A subscriber's class gives the rate and burst, the subscriber its bucket.
    pub sub_tat: HashMap<SubRef, [u64; 2]>,
}

impl Model {
    /// A model holding `policy` (every class with `tat` 0).
    #[must_use]
    pub fn from_policy(policy: &Policy, fail_closed: bool, malformed_drop: bool) -> Self {
        Self {
            subs_v4: policy.subs_v4.clone(),
            subs_v6: policy.subs_v6.clone(),
            subs_v6_64: policy.subs_v6_64.clone(),
            classes: policy
                .classes
                .iter()
                .map(|(&id, &cfg)| (id, ModelClass::new(cfg)))
                .collect(),
            rules: policy.rules.clone(),
            fail_closed,
            malformed_drop,
            sub_tat: HashMap::new(),
        }
    }
}

/// What one XDP run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpOutcome {
    pub verdict: Verdict,
    /// The frame after the program (== input when untouched).
    pub output: Vec<u8>,
    pub parse: ParseKind,
    /// `SHAPER_PE_*`.
    pub parse_err: u32,
    /// 0 = none (an absent class counts as none).
    pub sub_class: u32,
    pub rule_class: u32,
    /// 0 when no rule matched.
    pub rule_id: u32,
    /// `SHAPER_DROP_*`.
    pub drop_reason: u32,
}
