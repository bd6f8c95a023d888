//! §3 Act (XDP) and §4 TC egress.

use super::csum::{be16, put16, update16};
use super::icmp;
use super::parse::{ParseResult, Parsed, parse};
use super::rate;
use super::{
    DROP_BLOCK, DROP_FAIL_CLOSED, DROP_MALFORMED, DROP_MTU, DROP_POLICE_RULE, DROP_POLICE_SUB,
    DSCP_KEEP, Dir, Model, ModelClass, ParseKind, Verdict, XdpOutcome,
};

/// IPv4 ICMP types that are errors (never answered with another ICMP error).
#[must_use]
pub fn is_icmp4_error(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

impl ModelClass {
    /// The kernel's `mtu` field: 0 = none.
    #[must_use]
    pub fn mtu(&self) -> u16 {
        self.cfg.mtu.unwrap_or(0)
    }
    /// The kernel's `dscp` field: `DSCP_KEEP` = keep.
    #[must_use]
    pub fn dscp(&self) -> u8 {
        self.cfg.dscp.unwrap_or(DSCP_KEEP)
    }
}

/// GCRA step of §3.6: `Some(new_tat)` when the packet conforms, `None` when it exceeds.
#[must_use]
pub fn police(tat: u64, now: u64, l3_len: u64, ns_per_byte_q16: u64, burst_ns: u64) -> Option<u64> {
    let cost = l3_len.wrapping_mul(ns_per_byte_q16) >> 16;
    let base = tat.max(now);
    let new = base.wrapping_add(cost);
    if new.wrapping_sub(now) > burst_ns {
        None
    } else {
        Some(new)
    }
}

/// §3.7 on the frame: rewrites the DS field of the IP header at `p.l3` to `dscp << 2 | ecn`.
/// Returns whether the byte changed (nothing is written when it did not).
pub fn rewrite_dscp(f: &mut [u8], p: &Parsed, dscp: u8) -> bool {
    let l3 = p.l3;
    if p.v6 {
        let old_tc = (f[l3] & 0x0f) << 4 | f[l3 + 1] >> 4;
        let tc = dscp << 2 | (old_tc & 3);
        if tc == old_tc {
            return false;
        }
        f[l3] = (f[l3] & 0xf0) | tc >> 4;
        f[l3 + 1] = (tc & 0x0f) << 4 | (f[l3 + 1] & 0x0f);
    } else {
        let old_tos = f[l3 + 1];
        let tos = dscp << 2 | (old_tos & 3);
        if tos == old_tos {
            return false;
        }
        let old = be16(f, l3);
        f[l3 + 1] = tos;
        let new = be16(f, l3);
        let hc = update16(be16(f, l3 + 10), old, new);
        put16(f, l3 + 10, hc);
    }
    true
}

/// §3.8 on the frame: lowers the first MSS option above `clamp` to `clamp`, updating the
/// TCP checksum incrementally. Returns whether an option was changed.
pub fn clamp_mss(f: &mut [u8], p: &Parsed, clamp: u16) -> bool {
    let Some(l4) = p.l4 else { return false };
    let end = p.tcp_hdr_len;
    let mut i = 20;
    while i < end {
        let kind = f[l4 + i];
        if kind == 0 {
            break;
        }
        if kind == 1 {
            i += 1;
            continue;
        }
        if i + 1 >= end {
            break;
        }
        let len = usize::from(f[l4 + i + 1]);
        if len < 2 || i + len > end {
            break;
        }
        if kind == 2 && len == 4 {
            let at = i + 2;
            let val = be16(f, l4 + at);
            if val > clamp {
                put16(f, l4 + at, clamp);
                let (old, new) = if at % 2 == 1 {
                    (val.swap_bytes(), clamp.swap_bytes())
                } else {
                    (val, clamp)
                };
                let hc = update16(be16(f, l4 + 16), old, new);
                put16(f, l4 + 16, hc);
                return true;
            }
        }
        i += len;
    }
    false
}

impl Model {
    fn class(&self, id: u32) -> Option<&ModelClass> {
        if id == 0 { None } else { self.classes.get(&id) }
    }

    /// Runs the XDP program of direction `dir` on `frame` at clock `now_ns`; updates `tat`.
    pub fn run_xdp(&mut self, dir: Dir, now_ns: u64, frame: &[u8]) -> XdpOutcome {
        let mut o = XdpOutcome {
            verdict: Verdict::Pass,
            output: frame.to_vec(),
            parse: ParseKind::Ok,
            parse_err: 0,
            sub_class: 0,
            rule_class: 0,
            rule_id: 0,
            drop_reason: 0,
        };
        let p = match parse(frame) {
            ParseResult::Ok(p) => p,
            ParseResult::NonIp => {
                o.parse = ParseKind::NonIp;
                return o;
            }
            ParseResult::Malformed(e) => {
                o.parse = ParseKind::Malformed;
                o.parse_err = e;
                if self.malformed_drop {
                    o.verdict = Verdict::Drop;
                    o.drop_reason = DROP_MALFORMED;
                }
                return o;
            }
            ParseResult::Unsupported => {
                o.parse = ParseKind::Unsupported;
                if self.fail_closed {
                    o.verdict = Verdict::Drop;
                    o.drop_reason = DROP_FAIL_CLOSED;
                }
                return o;
            }
        };
        let c = self.classify(dir, &p);
        o.sub_class = c.sub_class;
        o.rule_class = c.rule_class;
        o.rule_id = c.rule_id;
        let (r, s) = (c.rule_class, c.sub_class);
        if r == 0 && s == 0 {
            if self.fail_closed {
                o.verdict = Verdict::Drop;
                o.drop_reason = DROP_FAIL_CLOSED;
            }
            return o;
        }
        let rc = self.class(r).copied();
        let sc = self.class(s).copied();
        // 4. block
        if rc.is_some_and(|c| c.cfg.block) || sc.is_some_and(|c| c.cfg.block) {
            o.verdict = Verdict::Drop;
            o.drop_reason = DROP_BLOCK;
            return o;
        }
        // 5. MTU: the smaller non-zero of R and S.
        let mtu = [rc, sc]
            .iter()
            .flatten()
            .map(ModelClass::mtu)
            .filter(|&m| m != 0)
            .min()
            .unwrap_or(0);
        if mtu != 0 && p.l3_len > usize::from(mtu) {
            if p.v6 {
                let icmp_err = p.proto == 58 && p.icmp_type.is_some_and(|t| t < 128);
                o.drop_reason = DROP_MTU;
                if icmp_err {
                    o.verdict = Verdict::Drop;
                } else {
                    o.verdict = Verdict::Tx;
                    o.output = icmp::ptb_v6(frame, &p, u32::from(mtu));
                }
                return o;
            }
            if p.df {
                let icmp_err = p.proto == 1 && p.icmp_type.is_some_and(is_icmp4_error);
                o.drop_reason = DROP_MTU;
                if icmp_err || p.frag_offset_nonzero {
                    o.verdict = Verdict::Drop;
                } else {
                    o.verdict = Verdict::Tx;
                    o.output = icmp::frag_needed_v4(frame, &p, mtu);
                }
                return o;
            }
            // IPv4 without DF: not acted on here; the stack may fragment.
        }
        // 6. police R (the rule class's one bucket), then S (the plan's rate and burst, the
        // subscriber's own bucket).
        if let Some(cl) = self.classes.get_mut(&r).filter(|_| r != 0) {
            let (q16, burst) = rate::policer(&cl.cfg);
            if q16 != 0 {
                match police(cl.tat, now_ns, p.l3_len as u64, q16, burst) {
                    Some(t) => cl.tat = t,
                    None => {
                        o.verdict = Verdict::Drop;
                        o.drop_reason = DROP_POLICE_RULE;
                        return o;
                    }
                }
            }
        }
        if let (Some(cl), Some(sub)) = (sc, c.sub) {
            let (q16, burst) = rate::policer(&cl.cfg);
            if q16 != 0 {
                let tat = if cl.cfg.shared_bucket {
                    &mut self.classes.get_mut(&s).expect("valid class").tat
                } else {
                    &mut self.sub_tat.entry(sub).or_default()[dir as usize]
                };
                match police(*tat, now_ns, p.l3_len as u64, q16, burst) {
                    Some(t) => *tat = t,
                    None => {
                        o.verdict = Verdict::Drop;
                        o.drop_reason = DROP_POLICE_SUB;
                        return o;
                    }
                }
            }
        }
        // 7. DSCP: R's if R exists and keeps none, else S's.
        let dscp = match rc {
            Some(c) if c.dscp() != DSCP_KEEP => c.dscp(),
            _ => sc.map_or(DSCP_KEEP, |c| c.dscp()),
        };
        if dscp != DSCP_KEEP {
            rewrite_dscp(&mut o.output, &p, dscp);
        }
        // (The MSS clamp happens at TC egress: see `tc`.)
        let _ = mtu;
        o
    }

    /// Runs the TC egress program of direction `dir`: the new `skb->priority`, or `None` when
    /// it is left untouched.
    #[must_use]
    pub fn run_tc(&self, dir: Dir, frame: &[u8]) -> Option<u32> {
        self.tc(dir, frame).priority
    }

    /// Runs the TC egress program of direction `dir` (DATAPLANE.md §4): `skb->priority` and
    /// the frame after the MSS clamp.
    #[must_use]
    pub fn tc(&self, dir: Dir, frame: &[u8]) -> TcOutcome {
        let mut out = TcOutcome {
            priority: None,
            output: frame.to_vec(),
        };
        let ParseResult::Ok(p) = parse(frame) else {
            return out;
        };
        let c = self.classify(dir, &p);
        let prio = |id: u32| self.class(id).map_or(0, |c| c.cfg.skb_priority);
        out.priority = match (prio(c.rule_class), prio(c.sub_class)) {
            (0, 0) => None,
            (0, s) => Some(s),
            (r, _) => Some(r),
        };
        let mtu_of = |id: u32| self.class(id).map_or(0, ModelClass::mtu);
        let (rm, sm) = (mtu_of(c.rule_class), mtu_of(c.sub_class));
        let mtu = match (rm, sm) {
            (0, s) => s,
            (r, 0) => r,
            (r, s) => r.min(s),
        };
        if p.proto == 6 && !p.frag && p.tcp_flags & 0x02 != 0 && mtu != 0 {
            let clamp = if p.v6 {
                mtu.wrapping_sub(60)
            } else {
                mtu.wrapping_sub(40)
            };
            clamp_mss(&mut out.output, &p, clamp);
        }
        out
    }
}

/// What one TC egress run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcOutcome {
    pub priority: Option<u32>,
    pub output: Vec<u8>,
}
