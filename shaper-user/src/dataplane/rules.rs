//! Compiles a validated rule set into the kernel's tuple-space-search layout
//! (`docs/DATAPLANE.md` §2, `shaper_abi.h` "rules"): one tuple per match shape (protocol exact
//! or any, source prefix length, destination prefix length), sorted by the lowest precedence
//! it holds so the kernel can stop early; one hash key per masked (protocol, source,
//! destination); a chain of entries per key, sorted by precedence, carrying the port ranges.
//!
//! Pure: no maps, no syscalls. The loader writes the result into the inactive rule set.

use std::collections::BTreeMap;

use crate::abi::{
    IGNORE_DPORT, IGNORE_DST, IGNORE_SPORT, IGNORE_SRC, MAX_CHAIN, MAX_TUPLES, RULE_END, RuleEntry,
    RuleKeyV4, RuleKeyV6, TUPLE_F_ANY_PROTO, TUPLE_F_VALID, TupleV4, TupleV6,
};
use crate::policy::{Prefix, Rule, mask_bytes};

/// Why a rule set cannot be laid out in the data plane.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error(
        "the IPv{family} rules use {shapes} distinct match shapes (protocol-any x source prefix length x destination prefix length); the data plane holds {max}"
    )]
    TooManyShapes { family: u8, shapes: usize, max: u32 },
    #[error(
        "rules {rules:?} share protocol, source and destination prefix; the data plane holds at most {max} rules per such key"
    )]
    ChainTooLong { rules: Vec<u32>, max: usize },
    #[error("rule {rule}: precedence {precedence} is reserved (use 0..=4294967294)")]
    ReservedPrecedence { rule: u32, precedence: u32 },
    #[error("rule id 0 is reserved for \"no rule\"")]
    ReservedRuleId,
}

/// The kernel-side image of one rule set.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// Tuples of the set, in kernel order (index `set * MAX_TUPLES + i`).
    pub tuples_v4: Vec<TupleV4>,
    pub tuples_v6: Vec<TupleV6>,
    /// Hash keys and the absolute index of their chain head in `shaper_rule_entries`.
    pub keys_v4: Vec<(RuleKeyV4, u32)>,
    pub keys_v6: Vec<(RuleKeyV6, u32)>,
    /// Entries, to be written at `entry_base + i`.
    pub entries: Vec<RuleEntry>,
}

type Shape = (bool, u8, u8); // (any protocol, src len, dst len)
/// (tuple, protocol, masked source, masked destination): one hash key.
type KeyFields = (u8, u8, Vec<u8>, Vec<u8>);

fn mask_of(len: u8, bytes: usize) -> Vec<u8> {
    let mut m = vec![0xffu8; bytes];
    mask_bytes(&mut m, len);
    m
}

fn masked(p: &Prefix, n: usize) -> Vec<u8> {
    p.masked_bytes()[..n].to_vec()
}

/// Lays out `rules` (already checked by [`crate::policy::validate_rules`]) as rule set `set`,
/// with entries starting at `entry_base`.
pub fn compile(rules: &[Rule], set: u32, entry_base: u32) -> Result<Compiled, CompileError> {
    for r in rules {
        if r.id == 0 {
            return Err(CompileError::ReservedRuleId);
        }
        if r.precedence == u32::MAX {
            return Err(CompileError::ReservedPrecedence {
                rule: r.id,
                precedence: r.precedence,
            });
        }
    }
    let mut out = Compiled::default();
    for family in [4u8, 6] {
        let fam: Vec<&Rule> = rules
            .iter()
            .filter(|r| r.src.is_v4() == (family == 4))
            .collect();
        // Shapes sorted by the lowest precedence they hold.
        let mut shapes: BTreeMap<Shape, u32> = BTreeMap::new();
        for r in &fam {
            let s = (r.proto.is_none(), r.src.len, r.dst.len);
            let e = shapes.entry(s).or_insert(u32::MAX);
            *e = (*e).min(r.precedence);
        }
        if shapes.len() > MAX_TUPLES as usize {
            return Err(CompileError::TooManyShapes {
                family,
                shapes: shapes.len(),
                max: MAX_TUPLES,
            });
        }
        let mut order: Vec<(Shape, u32)> = shapes.into_iter().collect();
        order.sort_by_key(|&(s, p)| (p, s));
        let nbytes = if family == 4 { 4 } else { 16 };
        // Group rules by (tuple, proto, masked src, masked dst).
        let mut groups: BTreeMap<KeyFields, Vec<&Rule>> = BTreeMap::new();
        for (i, (shape, min_prec)) in order.iter().enumerate() {
            let tuple = (set * MAX_TUPLES) as u8 + i as u8;
            let (any, sl, dl) = *shape;
            let flags = TUPLE_F_VALID | if any { TUPLE_F_ANY_PROTO } else { 0 };
            if family == 4 {
                let mut t = TupleV4 {
                    min_precedence: *min_prec,
                    flags,
                    ..Default::default()
                };
                t.src_mask.copy_from_slice(&mask_of(sl, 4));
                t.dst_mask.copy_from_slice(&mask_of(dl, 4));
                out.tuples_v4.push(t);
            } else {
                let mut t = TupleV6 {
                    min_precedence: *min_prec,
                    flags,
                    ..Default::default()
                };
                t.src_mask.copy_from_slice(&mask_of(sl, 16));
                t.dst_mask.copy_from_slice(&mask_of(dl, 16));
                out.tuples_v6.push(t);
            }
            for r in fam
                .iter()
                .filter(|r| (r.proto.is_none(), r.src.len, r.dst.len) == *shape)
            {
                let key = (
                    tuple,
                    r.proto.unwrap_or(0),
                    masked(&r.src, nbytes),
                    masked(&r.dst, nbytes),
                );
                groups.entry(key).or_default().push(r);
            }
        }
        // Fields no rule of this family looks at: the classification cache leaves them out of
        // its key (shaper_abi.h SHAPER_IGNORE_*), stored in the set's first tuple.
        let ignore = ignore_flags(&fam);
        if family == 4 {
            if let Some(t) = out.tuples_v4.first_mut() {
                t.ignore = ignore;
            }
        } else if let Some(t) = out.tuples_v6.first_mut() {
            t.ignore = ignore;
        }
        for ((tuple, proto, src, dst), mut chain) in groups {
            if chain.len() > MAX_CHAIN {
                let mut ids: Vec<u32> = chain.iter().map(|r| r.id).collect();
                ids.sort_unstable();
                return Err(CompileError::ChainTooLong {
                    rules: ids,
                    max: MAX_CHAIN,
                });
            }
            chain.sort_by_key(|r| r.precedence);
            let head = entry_base + out.entries.len() as u32;
            let n = chain.len();
            for (j, r) in chain.iter().enumerate() {
                let next = if j + 1 < n {
                    head + j as u32 + 1
                } else {
                    RULE_END
                };
                out.entries.push(RuleEntry {
                    class_id: r.class,
                    precedence: r.precedence,
                    sport_lo: r.sport.lo,
                    sport_hi: r.sport.hi,
                    dport_lo: r.dport.lo,
                    dport_hi: r.dport.hi,
                    next,
                    rule_id: r.id,
                });
            }
            if family == 4 {
                let mut k = RuleKeyV4 {
                    tuple,
                    proto,
                    ..Default::default()
                };
                k.src.copy_from_slice(&src);
                k.dst.copy_from_slice(&dst);
                out.keys_v4.push((k, head));
            } else {
                let mut k = RuleKeyV6 {
                    tuple,
                    proto,
                    ..Default::default()
                };
                k.src.copy_from_slice(&src);
                k.dst.copy_from_slice(&dst);
                out.keys_v6.push((k, head));
            }
        }
    }
    Ok(out)
}

/// `IGNORE_*` for a family's rules: a field is ignored when no rule restricts it.
#[must_use]
pub fn ignore_flags(rules: &[&Rule]) -> u8 {
    let mut f = 0;
    if rules.iter().all(|r| r.src.len == 0) {
        f |= IGNORE_SRC;
    }
    if rules.iter().all(|r| r.dst.len == 0) {
        f |= IGNORE_DST;
    }
    if rules
        .iter()
        .all(|r| r.sport.lo == 0 && r.sport.hi == u16::MAX)
    {
        f |= IGNORE_SPORT;
    }
    if rules
        .iter()
        .all(|r| r.dport.lo == 0 && r.dport.hi == u16::MAX)
    {
        f |= IGNORE_DPORT;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PortRange;

    fn rule(id: u32, dst: &str, len: u8, dport: (u16, u16), prec: u32) -> Rule {
        Rule {
            id,
            proto: Some(6),
            src: Prefix::any_v4(),
            dst: Prefix {
                addr: dst.parse().unwrap(),
                len,
            },
            sport: PortRange::ANY,
            dport: PortRange {
                lo: dport.0,
                hi: dport.1,
            },
            precedence: prec,
            class: id + 100,
        }
    }

    #[test]
    fn the_first_tuple_names_the_fields_no_rule_looks_at() {
        // Destination prefix and port only: source and source port are ignored.
        let c = compile(&[rule(1, "198.19.0.0", 24, (443, 443), 20)], 0, 0).unwrap();
        assert_eq!(c.tuples_v4[0].ignore, IGNORE_SRC | IGNORE_SPORT);
        // One rule on the source port makes it part of the key.
        let mut r = rule(2, "198.19.1.0", 24, (0, 65535), 10);
        r.sport = PortRange { lo: 1, hi: 1023 };
        let c = compile(&[rule(1, "198.19.0.0", 24, (443, 443), 20), r], 0, 0).unwrap();
        assert_eq!(c.tuples_v4[0].ignore, IGNORE_SRC);
        // Any-to-any on all ports: only protocol and family remain.
        let c = compile(&[rule(3, "0.0.0.0", 0, (0, 65535), 1)], 0, 0).unwrap();
        assert_eq!(
            c.tuples_v4[0].ignore,
            IGNORE_SRC | IGNORE_DST | IGNORE_SPORT | IGNORE_DPORT
        );
        assert!(c.tuples_v6.is_empty());
    }

    #[test]
    fn rules_sharing_a_key_form_one_chain_sorted_by_precedence() {
        let rules = [
            rule(1, "198.19.0.0", 24, (443, 443), 20),
            rule(2, "198.19.0.0", 24, (80, 80), 10),
        ];
        let c = compile(&rules, 1, 1000).unwrap();
        assert_eq!(c.tuples_v4.len(), 1);
        assert_eq!(c.tuples_v4[0].min_precedence, 10);
        assert_eq!(c.tuples_v4[0].dst_mask, [255, 255, 255, 0]);
        assert_eq!(c.keys_v4.len(), 1);
        let (k, head) = c.keys_v4[0];
        assert_eq!(k.tuple, 16);
        assert_eq!(k.dst, [198, 19, 0, 0]);
        assert_eq!(head, 1000);
        assert_eq!(c.entries[0].rule_id, 2);
        assert_eq!(c.entries[0].next, 1001);
        assert_eq!(c.entries[1].rule_id, 1);
        assert_eq!(c.entries[1].next, RULE_END);
    }

    #[test]
    fn tuples_are_ordered_by_lowest_precedence() {
        let rules = [
            rule(1, "198.19.0.0", 16, (0, 65535), 50),
            rule(2, "198.19.1.0", 24, (0, 65535), 5),
        ];
        let c = compile(&rules, 0, 0).unwrap();
        assert_eq!(c.tuples_v4[0].dst_mask, [255, 255, 255, 0]);
        assert_eq!(c.tuples_v4[1].dst_mask, [255, 255, 0, 0]);
    }

    #[test]
    fn too_many_shapes_and_long_chains_are_refused() {
        let rules: Vec<Rule> = (0..17)
            .map(|i| rule(i + 1, "198.19.0.0", 8 + i as u8, (0, 65535), i))
            .collect();
        assert!(matches!(
            compile(&rules, 0, 0),
            Err(CompileError::TooManyShapes {
                family: 4,
                shapes: 17,
                ..
            })
        ));
        let rules: Vec<Rule> = (0..9)
            .map(|i| rule(i + 1, "198.19.0.0", 24, (i as u16, i as u16), i))
            .collect();
        assert!(matches!(
            compile(&rules, 0, 0),
            Err(CompileError::ChainTooLong { .. })
        ));
        let mut r = rule(1, "198.19.0.0", 24, (1, 1), u32::MAX);
        assert!(matches!(
            compile(&[r], 0, 0),
            Err(CompileError::ReservedPrecedence { .. })
        ));
        r.id = 0;
        r.precedence = 1;
        assert_eq!(compile(&[r], 0, 0), Err(CompileError::ReservedRuleId));
    }
}
