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
}

impl Model {
    /// The subscriber's raw class id for `dir` (before the validity check), 0 = none.
    #[must_use]
    pub fn sub_class_raw(&self, dir: Dir, p: &Parsed) -> u32 {
        let addr = match dir {
            Dir::Up => p.src,
            Dir::Down => p.dst,
        };
        let d = dir as usize;
        match addr {
            IpAddr::V4(a) => self.subs_v4.get(&a).map_or(0, |v| v[d]),
            IpAddr::V6(a) => {
                if let Some(v) = self.subs_v6.get(&a) {
                    return v[d];
                }
                let mut k = [0u8; 8];
                k.copy_from_slice(&a.octets()[..8]);
                self.subs_v6_64.get(&k).map_or(0, |v| v[d])
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
            .filter(|r| r.matches(p.proto, p.src, p.dst, p.sport, p.dport))
            .min_by_key(|r| (r.precedence, r.id))
    }

    /// §2 for an *ok* packet.
    #[must_use]
    pub fn classify(&self, dir: Dir, p: &Parsed) -> Classification {
        let sub_class = self.valid(self.sub_class_raw(dir, p));
        let (rule_class, rule_id) = match self.winning_rule(p) {
            Some(r) => (self.valid(r.class), r.id),
            None => (0, 0),
        };
        Classification {
            sub_class,
            rule_class,
            rule_id,
        }
    }
}

use crate::policy;
