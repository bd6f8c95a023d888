//! Incremental HTB tree management with `tc`.
//!
//! Layout on one interface (all handles hex, as `tc` writes them):
//!
//! ```text
//! 1:      htb qdisc, `default <default_minor>`
//! └ 1:1   root class, rate = ceil = link rate
//!   ├ 1:<minor>   one class per subscriber / provider, leaf qdisc <minor>: (bfifo or pfifo)
//!   └ 1:<default> the default class (unclassified traffic), created by [`HtbTree::new`]
//! ```
//!
//! Classes are changed in place with `tc class replace` (HTB changes rate/ceil/prio/quantum of
//! an existing class without touching its queue or counters), so updating one subscriber never
//! disturbs another's traffic. The tree keeps an in-memory view: an [`HtbTree::upsert_class`]
//! that changes nothing runs no command at all. Every request is validated against the view
//! before any command runs, so a refused request leaves the kernel and the view unchanged.
//!
//! Packets are steered into a class by the TC egress eBPF program writing
//! [`skb_priority`]`(minor)` = `0x0001_<minor>` into `skb->priority`: HTB's classifier takes a
//! priority whose major equals the qdisc handle (1:) as a class id before it runs any filter.
//!
//! Leaf qdiscs are fifos (`bfifo` by default) because the target kernel has no fq / fq_codel /
//! cake. Note iproute2 6.1 (Debian 12) cannot print classes as JSON (`tc -j class show` prints
//! text), so [`HtbTree::stats`] parses JSON when it gets it and the text format otherwise.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The root class minor (1:1); children hang below it.
pub const ROOT_MINOR: u16 = 1;
/// Smallest valid minor for a leaf class.
pub const MIN_MINOR: u16 = 2;
/// Largest valid minor for a leaf class.
pub const MAX_MINOR: u16 = 0xfffe;
/// Smallest rate HTB accepts, bit/s.
pub const MIN_RATE_BPS: u64 = 8;
/// Highest HTB priority value (0 is served first).
pub const MAX_PRIO: u8 = 7;

/// The `skb->priority` value that makes HTB (handle 1:) put a packet into class `1:minor`.
pub const fn skb_priority(minor: u16) -> u32 {
    (1 << 16) | minor as u32
}

/// Leaf queue of a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafQdisc {
    /// `pfifo limit N` (packets; a GSO packet counts as one).
    Pfifo {
        /// Queue limit in packets.
        limit_pkts: u32,
    },
    /// `bfifo limit N` (bytes).
    Bfifo {
        /// Queue limit in bytes.
        limit_bytes: u32,
    },
}

impl LeafQdisc {
    /// Default leaf for a class with this ceil: a bfifo holding ~50 ms at ceil, at least
    /// 200 kB (a few 64 kB GSO packets) and at most 32 MB.
    pub fn default_for(ceil_bps: u64) -> LeafQdisc {
        let bytes = (ceil_bps / 8 / 20).clamp(200_000, 32 << 20);
        LeafQdisc::Bfifo {
            limit_bytes: bytes as u32,
        }
    }

    fn tc_args(&self) -> String {
        match self {
            LeafQdisc::Pfifo { limit_pkts } => format!("pfifo limit {limit_pkts}"),
            LeafQdisc::Bfifo { limit_bytes } => format!("bfifo limit {limit_bytes}"),
        }
    }
}

/// Parameters of one HTB class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtbClass {
    /// Committed rate, bit/s (≥ 8). The children's rates together may not exceed the link.
    pub rate_bps: u64,
    /// Ceil (rate reachable by borrowing), bit/s, ≥ rate.
    pub ceil_bps: u64,
    /// HTB priority 0..=7, 0 first.
    pub prio: u8,
    /// DRR quantum in bytes (share of spare bandwidth among borrowing classes of one prio);
    /// `None`: rate in bytes/s / 100 (r2q 100), clamped to 1514..=200000, so proportional
    /// to the rate up to 160 Mbit/s.
    pub quantum: Option<u32>,
    /// Burst in bytes; `None`: let `tc` choose.
    pub burst: Option<u32>,
    /// Ceil burst in bytes; `None`: let `tc` choose.
    pub cburst: Option<u32>,
    /// Leaf qdisc; `None`: [`LeafQdisc::default_for`] the ceil. Applied when the class is
    /// created; on a later upsert only an explicitly *changed* `Some` leaf is re-applied.
    pub leaf: Option<LeafQdisc>,
}

impl HtbClass {
    /// A class with these rates, prio 0 and every optional parameter left to the defaults.
    pub fn new(rate_bps: u64, ceil_bps: u64) -> HtbClass {
        HtbClass {
            rate_bps,
            ceil_bps,
            prio: 0,
            quantum: None,
            burst: None,
            cburst: None,
            leaf: None,
        }
    }

    /// Builder: set the priority.
    pub fn with_prio(mut self, prio: u8) -> HtbClass {
        self.prio = prio;
        self
    }

    /// The quantum that will be used.
    pub fn effective_quantum(&self) -> u32 {
        self.quantum
            .unwrap_or_else(|| (self.rate_bps / 8 / 100).clamp(1514, 200_000) as u32)
    }

    /// The leaf qdisc that will be used.
    pub fn effective_leaf(&self) -> LeafQdisc {
        self.leaf
            .unwrap_or_else(|| LeafQdisc::default_for(self.ceil_bps))
    }
}

/// Counters of one class, from `tc -s class show`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HtbClassStats {
    /// Class minor (1 = the root class 1:1).
    pub minor: u16,
    /// Bytes sent.
    pub bytes: u64,
    /// Packets sent (a GSO packet counts once).
    pub packets: u64,
    /// Packets dropped (leaf queue full).
    pub drops: u64,
    /// Times the class was over its limit.
    pub overlimits: u64,
    /// Bytes queued now (approximate when `tc` prints it with a unit, e.g. `12Kb`).
    pub backlog_bytes: u64,
    /// Packets queued now.
    pub qlen: u64,
}

/// Errors of the HTB manager. Each names the class (`1:<minor>` in hex) and the value.
#[derive(Debug, thiserror::Error)]
pub enum HtbError {
    /// Minor outside 2..=0xfffe.
    #[error(
        "class 1:{minor:x}: minor {minor:#x} is out of range 0x2..=0xfffe (1:1 is the root class)"
    )]
    InvalidMinor {
        /// The minor asked for.
        minor: u16,
    },
    /// Rate below 8 bit/s.
    #[error(
        "class 1:{minor:x}: rate {rate_bps} bit/s is below the minimum of {MIN_RATE_BPS} bit/s"
    )]
    RateTooLow {
        /// Class minor.
        minor: u16,
        /// Requested rate.
        rate_bps: u64,
    },
    /// Ceil below rate.
    #[error("class 1:{minor:x}: ceil {ceil_bps} bit/s is below its rate {rate_bps} bit/s")]
    CeilBelowRate {
        /// Class minor.
        minor: u16,
        /// Requested rate.
        rate_bps: u64,
        /// Requested ceil.
        ceil_bps: u64,
    },
    /// Prio above 7.
    #[error("class 1:{minor:x}: prio {prio} is out of range 0..=7")]
    InvalidPrio {
        /// Class minor.
        minor: u16,
        /// Requested prio.
        prio: u8,
    },
    /// A zero leaf limit or quantum.
    #[error("class 1:{minor:x}: {what} must be non-zero")]
    ZeroParameter {
        /// Class minor.
        minor: u16,
        /// Which parameter.
        what: &'static str,
    },
    /// The committed rates would exceed the link.
    #[error(
        "class 1:{minor:x}: committed rate {rate_bps} bit/s does not fit: link {link_bps} bit/s, \
         {available_bps} bit/s left for this class"
    )]
    Oversubscribed {
        /// Class minor.
        minor: u16,
        /// Requested rate.
        rate_bps: u64,
        /// What is left on the link for this class (link − other classes' rates).
        available_bps: u64,
        /// The link rate.
        link_bps: u64,
    },
    /// A new link rate below what the classes already commit.
    #[error("link rate {link_bps} bit/s is below the classes' committed {committed_bps} bit/s")]
    LinkBelowCommitted {
        /// Requested link rate.
        link_bps: u64,
        /// Sum of the children's rates.
        committed_bps: u64,
    },
    /// Removing a class that is not in the tree.
    #[error("class 1:{minor:x} does not exist")]
    NoSuchClass {
        /// Class minor.
        minor: u16,
    },
    /// Removing the default class.
    #[error("class 1:{minor:x} is the default class and cannot be removed")]
    DefaultClass {
        /// Class minor.
        minor: u16,
    },
    /// `tc` ran and failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Tc {
        /// The command (for a batch: its lines joined with "; ").
        cmd: String,
        /// Exit status.
        status: String,
        /// What tc printed on stderr.
        stderr: String,
    },
    /// `tc` could not be started.
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        /// The command.
        cmd: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Unexpected `tc` output.
    #[error("cannot parse `{what}` output: {detail}")]
    Parse {
        /// Which command's output.
        what: String,
        /// What was wrong.
        detail: String,
    },
}

/// What an upsert would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpsertPlan {
    /// Nothing changed: no command.
    Noop,
    /// New class: class + leaf qdisc.
    Create(Vec<String>),
    /// Existing class changed in place.
    Modify(Vec<String>),
}

/// An HTB tree on one interface, managed incrementally.
#[derive(Debug)]
pub struct HtbTree {
    ifname: String,
    netns: Option<String>,
    link_rate_bps: u64,
    default_minor: u16,
    classes: BTreeMap<u16, HtbClass>,
}

impl HtbTree {
    /// The default class's parameters: rate 1 % of the link (≥ 8 bit/s), ceil = link, prio 7.
    pub fn default_class_for(link_rate_bps: u64) -> HtbClass {
        HtbClass::new((link_rate_bps / 100).max(MIN_RATE_BPS), link_rate_bps).with_prio(MAX_PRIO)
    }

    /// Set up (idempotently) `1: htb default <default_minor>` on `ifname` (inside `netns` when
    /// given), the root class 1:1 at `link_rate_bps` and the default class
    /// ([`HtbTree::default_class_for`]).
    ///
    /// If the root qdisc already is `htb 1:` with the same default, it is kept and its child
    /// classes are adopted into the view (rates as `tc` prints them, i.e. possibly rounded), so
    /// a restarted controller interrupts nobody. Any other root qdisc — or an HTB with another
    /// default class, which HTB cannot change in place — is replaced.
    pub fn new(
        ifname: &str,
        netns: Option<String>,
        link_rate_bps: u64,
        default_minor: u16,
    ) -> Result<HtbTree, HtbError> {
        check_minor(default_minor)?;
        let mut tree = HtbTree {
            ifname: ifname.to_string(),
            netns,
            link_rate_bps,
            default_minor,
            classes: BTreeMap::new(),
        };
        if link_rate_bps < MIN_RATE_BPS {
            return Err(HtbError::RateTooLow {
                minor: ROOT_MINOR,
                rate_bps: link_rate_bps,
            });
        }
        let root_json = tree.run_tc(&["-j", "qdisc", "show", "dev", ifname, "root"])?;
        let keep = root_is_our_htb(&root_json, default_minor)?;
        let mut lines = Vec::new();
        if keep {
            let text = tree.run_tc(&["-d", "class", "show", "dev", ifname])?;
            for (minor, class) in parse_class_params(&text) {
                tree.classes.insert(minor, class);
            }
        } else {
            // HTB has no in-place change for the qdisc itself: delete whatever root qdisc is
            // there (fails harmlessly for the built-in handle-0 ones), then add ours.
            let _ = tree.run_batch(&[format!("qdisc del dev {ifname} root")]);
            lines.push(format!(
                "qdisc add dev {ifname} root handle 1: htb default {default_minor:#x}"
            ));
        }
        lines.push(tree.root_class_line(link_rate_bps));
        let committed: u64 = tree.classes.values().map(|c| c.rate_bps).sum();
        if committed > link_rate_bps {
            return Err(HtbError::LinkBelowCommitted {
                link_bps: link_rate_bps,
                committed_bps: committed,
            });
        }
        if !tree.classes.contains_key(&default_minor) {
            let dc = HtbTree::default_class_for(link_rate_bps);
            validate(&tree, default_minor, &dc)?;
            lines.push(tree.class_line(default_minor, &dc));
            lines.push(tree.leaf_line(default_minor, &dc.effective_leaf()));
            tree.run_batch(&lines)?;
            tree.classes.insert(default_minor, dc);
        } else {
            tree.run_batch(&lines)?;
        }
        Ok(tree)
    }

    /// Interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Namespace the interface lives in, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// Link (root class) rate, bit/s.
    pub fn link_rate_bps(&self) -> u64 {
        self.link_rate_bps
    }

    /// Minor of the default class.
    pub fn default_minor(&self) -> u16 {
        self.default_minor
    }

    /// The in-memory view: every child class of 1:1 by minor (including the default class).
    pub fn classes(&self) -> &BTreeMap<u16, HtbClass> {
        &self.classes
    }

    /// Sum of the children's committed rates, bit/s.
    pub fn committed_bps(&self) -> u64 {
        self.classes.values().map(|c| c.rate_bps).sum()
    }

    /// Link rate minus the committed rates, bit/s.
    pub fn available_bps(&self) -> u64 {
        self.link_rate_bps.saturating_sub(self.committed_bps())
    }

    /// Validate a change and return the `tc` batch lines it needs, without running anything.
    pub fn plan_upsert(&self, minor: u16, class: &HtbClass) -> Result<UpsertPlan, HtbError> {
        validate(self, minor, class)?;
        match self.classes.get(&minor) {
            Some(old) if old == class => Ok(UpsertPlan::Noop),
            Some(old) => {
                let mut lines = vec![self.class_line(minor, class)];
                if class.leaf.is_some() && class.effective_leaf() != old.effective_leaf() {
                    lines.push(self.leaf_line(minor, &class.effective_leaf()));
                }
                Ok(UpsertPlan::Modify(lines))
            }
            None => Ok(UpsertPlan::Create(vec![
                self.class_line(minor, class),
                self.leaf_line(minor, &class.effective_leaf()),
            ])),
        }
    }

    /// Create class 1:`minor` or change it in place. A no-op when nothing changed. Returns
    /// `true` when a command ran. On error the kernel and the view are unchanged (for a `tc`
    /// failure half-way: best-effort rollback).
    pub fn upsert_class(&mut self, minor: u16, class: HtbClass) -> Result<bool, HtbError> {
        match self.plan_upsert(minor, &class)? {
            UpsertPlan::Noop => return Ok(false),
            UpsertPlan::Create(lines) => {
                if let Err(e) = self.run_batch(&lines) {
                    let _ = self.run_batch(&[self.class_del_line(minor)]);
                    return Err(e);
                }
            }
            UpsertPlan::Modify(lines) => {
                if let Err(e) = self.run_batch(&lines) {
                    if let Some(old) = self.classes.get(&minor) {
                        let _ = self.run_batch(&[self.class_line(minor, old)]);
                    }
                    return Err(e);
                }
            }
        }
        self.classes.insert(minor, class);
        Ok(true)
    }

    /// `tc` lines that remove class 1:`minor` (its leaf qdisc, then the class).
    pub fn plan_remove(&self, minor: u16) -> Result<Vec<String>, HtbError> {
        check_minor(minor)?;
        if minor == self.default_minor {
            return Err(HtbError::DefaultClass { minor });
        }
        if !self.classes.contains_key(&minor) {
            return Err(HtbError::NoSuchClass { minor });
        }
        let ifname = &self.ifname;
        Ok(vec![
            format!("qdisc del dev {ifname} parent 1:{minor:x} handle {minor:x}:"),
            self.class_del_line(minor),
        ])
    }

    /// Delete class 1:`minor` and its leaf qdisc. Filters still pointing at it are unbound by
    /// the kernel.
    pub fn remove_class(&mut self, minor: u16) -> Result<(), HtbError> {
        let lines = self.plan_remove(minor)?;
        // The leaf may have been created by someone else (adopted class): then only the
        // class deletion matters, it takes its leaf along.
        if self.run_batch(&lines).is_err() {
            self.run_batch(&lines[1..])?;
        }
        self.classes.remove(&minor);
        Ok(())
    }

    /// Change the link (root class) rate in place. Refused below the committed rates.
    pub fn set_link_rate(&mut self, link_rate_bps: u64) -> Result<(), HtbError> {
        if link_rate_bps < MIN_RATE_BPS {
            return Err(HtbError::RateTooLow {
                minor: ROOT_MINOR,
                rate_bps: link_rate_bps,
            });
        }
        let committed = self.committed_bps();
        if committed > link_rate_bps {
            return Err(HtbError::LinkBelowCommitted {
                link_bps: link_rate_bps,
                committed_bps: committed,
            });
        }
        if link_rate_bps != self.link_rate_bps {
            self.run_batch(&[self.root_class_line(link_rate_bps)])?;
            self.link_rate_bps = link_rate_bps;
        }
        Ok(())
    }

    /// Per-class counters (root class 1:1 included, as minor 1), by minor.
    pub fn stats(&self) -> Result<BTreeMap<u16, HtbClassStats>, HtbError> {
        let out = self.run_tc(&["-s", "-j", "class", "show", "dev", &self.ifname])?;
        parse_class_stats(&out)
    }

    /// Remove the whole tree (`tc qdisc del dev IF root`).
    pub fn destroy(self) -> Result<(), HtbError> {
        self.run_batch(&[format!("qdisc del dev {} root", self.ifname)])
    }

    // ---- command generation (pure) ----

    fn root_class_line(&self, link: u64) -> String {
        format!(
            "class replace dev {} parent 1: classid 1:1 htb rate {link}bit ceil {link}bit",
            self.ifname
        )
    }

    /// The `tc class replace` line for a class.
    pub fn class_line(&self, minor: u16, c: &HtbClass) -> String {
        let mut s = format!(
            "class replace dev {} parent 1:1 classid 1:{minor:x} htb rate {}bit ceil {}bit prio {} quantum {}",
            self.ifname,
            c.rate_bps,
            c.ceil_bps,
            c.prio,
            c.effective_quantum()
        );
        if let Some(b) = c.burst {
            s.push_str(&format!(" burst {b}"));
        }
        if let Some(b) = c.cburst {
            s.push_str(&format!(" cburst {b}"));
        }
        s
    }

    fn leaf_line(&self, minor: u16, leaf: &LeafQdisc) -> String {
        format!(
            "qdisc replace dev {} parent 1:{minor:x} handle {minor:x}: {}",
            self.ifname,
            leaf.tc_args()
        )
    }

    fn class_del_line(&self, minor: u16) -> String {
        format!("class del dev {} classid 1:{minor:x}", self.ifname)
    }

    // ---- running tc ----

    fn tc_command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "tc"]);
                c
            }
            None => Command::new("tc"),
        }
    }

    fn describe(&self, rest: &str) -> String {
        match &self.netns {
            Some(ns) => format!("ip netns exec {ns} tc {rest}"),
            None => format!("tc {rest}"),
        }
    }

    fn run_tc(&self, args: &[&str]) -> Result<String, HtbError> {
        let cmd = self.describe(&args.join(" "));
        let out = self
            .tc_command()
            .args(args)
            .output()
            .map_err(|source| HtbError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(HtbError::Tc {
                cmd,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run lines through `tc -batch -` (stops at the first failing line).
    fn run_batch(&self, lines: &[String]) -> Result<(), HtbError> {
        let cmd = self.describe(&format!("-batch - <<< {}", lines.join("; ")));
        let mut child = self
            .tc_command()
            .args(["-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HtbError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        let mut input = lines.join("\n");
        input.push('\n');
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(|source| HtbError::Spawn {
                    cmd: cmd.clone(),
                    source,
                })?;
        }
        let out = child.wait_with_output().map_err(|source| HtbError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(HtbError::Tc {
                cmd,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}

fn check_minor(minor: u16) -> Result<(), HtbError> {
    if !(MIN_MINOR..=MAX_MINOR).contains(&minor) {
        return Err(HtbError::InvalidMinor { minor });
    }
    Ok(())
}

/// Validate `class` as the new state of 1:`minor` in `tree`.
fn validate(tree: &HtbTree, minor: u16, c: &HtbClass) -> Result<(), HtbError> {
    check_minor(minor)?;
    if c.rate_bps < MIN_RATE_BPS {
        return Err(HtbError::RateTooLow {
            minor,
            rate_bps: c.rate_bps,
        });
    }
    if c.ceil_bps < c.rate_bps {
        return Err(HtbError::CeilBelowRate {
            minor,
            rate_bps: c.rate_bps,
            ceil_bps: c.ceil_bps,
        });
    }
    if c.prio > MAX_PRIO {
        return Err(HtbError::InvalidPrio {
            minor,
            prio: c.prio,
        });
    }
    if c.quantum == Some(0) {
        return Err(HtbError::ZeroParameter {
            minor,
            what: "quantum",
        });
    }
    match c.leaf {
        Some(LeafQdisc::Pfifo { limit_pkts: 0 }) | Some(LeafQdisc::Bfifo { limit_bytes: 0 }) => {
            return Err(HtbError::ZeroParameter {
                minor,
                what: "leaf qdisc limit",
            });
        }
        _ => {}
    }
    let others: u64 = tree
        .classes
        .iter()
        .filter(|(m, _)| **m != minor)
        .map(|(_, c)| c.rate_bps)
        .sum();
    let available = tree.link_rate_bps.saturating_sub(others);
    if c.rate_bps > available {
        return Err(HtbError::Oversubscribed {
            minor,
            rate_bps: c.rate_bps,
            available_bps: available,
            link_bps: tree.link_rate_bps,
        });
    }
    Ok(())
}

/// `true` if `tc -j qdisc show dev IF root` shows `htb 1:` with this default class.
fn root_is_our_htb(json: &str, default_minor: u16) -> Result<bool, HtbError> {
    let json = json.trim();
    if json.is_empty() {
        return Ok(false);
    }
    let v: Value = serde_json::from_str(json).map_err(|e| HtbError::Parse {
        what: "tc -j qdisc show".into(),
        detail: format!("{e}: {json}"),
    })?;
    let Some(q) = v.as_array().and_then(|a| a.first()) else {
        return Ok(false);
    };
    let is_htb1 = q.get("kind").and_then(Value::as_str) == Some("htb")
        && q.get("handle").and_then(Value::as_str) == Some("1:");
    let default = q.pointer("/options/default").and_then(|d| match d {
        Value::String(s) => u32::from_str_radix(s.trim_start_matches("0x"), 16).ok(),
        Value::Number(n) => n.as_u64().map(|n| n as u32),
        _ => None,
    });
    Ok(is_htb1 && default == Some(default_minor as u32))
}

/// Minor of a `1:xx` handle (hex), `None` for other majors.
fn handle_minor(h: &str) -> Option<u16> {
    let (maj, min) = h.split_once(':')?;
    if maj != "1" {
        return None;
    }
    u16::from_str_radix(min, 16).ok()
}

/// Parse a `tc` rate such as `30Mbit`, `500Kbit`, `8bit`, `1.5Gbit`, `12Kbps`, `1Mibit`.
pub fn parse_tc_rate(s: &str) -> Option<u64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let (mult, rest) = match unit.chars().next() {
        Some('K') | Some('k') => (1e3, &unit[1..]),
        Some('M') | Some('m') => (1e6, &unit[1..]),
        Some('G') | Some('g') => (1e9, &unit[1..]),
        Some('T') | Some('t') => (1e12, &unit[1..]),
        _ => (1.0, unit),
    };
    let (mult, rest) = match rest.strip_prefix('i') {
        Some(r) => (
            match mult as u64 {
                1_000 => 1024.0,
                1_000_000 => 1_048_576.0,
                1_000_000_000 => 1_073_741_824.0,
                1_000_000_000_000 => 1_099_511_627_776.0,
                _ => mult,
            },
            r,
        ),
        None => (mult, rest),
    };
    let bits = match rest {
        "bit" | "" => 1.0,
        "bps" => 8.0,
        _ => return None,
    };
    Some((num * mult * bits).round() as u64)
}

/// Parse a `tc` size such as `1514b`, `12Kb`, `3Mb`, `0b` into bytes (1024-based units).
pub fn parse_tc_size(s: &str) -> Option<u64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult = match unit {
        "" | "b" => 1.0,
        "Kb" | "k" | "kb" | "K" => 1024.0,
        "Mb" | "m" | "mb" | "M" => 1_048_576.0,
        "Gb" | "g" | "gb" | "G" => 1_073_741_824.0,
        _ => return None,
    };
    Some((num * mult).round() as u64)
}

/// Parse `tc -d class show` text into the children of 1:1 (for adopting an existing tree).
pub fn parse_class_params(text: &str) -> Vec<(u16, HtbClass)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        if toks.len() < 3 || toks[0] != "class" || toks[1] != "htb" {
            continue;
        }
        let Some(minor) = handle_minor(toks[2]) else {
            continue;
        };
        let val = |key: &str| {
            toks.iter()
                .position(|t| *t == key)
                .and_then(|i| toks.get(i + 1).copied())
        };
        if val("parent") != Some("1:1") {
            continue;
        }
        let (Some(rate), Some(ceil)) = (
            val("rate").and_then(parse_tc_rate),
            val("ceil").and_then(parse_tc_rate),
        ) else {
            continue;
        };
        let mut c = HtbClass::new(rate, ceil.max(rate));
        c.prio = val("prio").and_then(|p| p.parse().ok()).unwrap_or(0);
        c.quantum = val("quantum").and_then(|q| q.parse().ok());
        out.push((minor, c));
    }
    out
}

/// Parse `tc -s [-j] class show` output (JSON from iproute2 ≥ 6.2-ish, text before).
pub fn parse_class_stats(out: &str) -> Result<BTreeMap<u16, HtbClassStats>, HtbError> {
    let t = out.trim_start();
    if t.starts_with('[') {
        parse_class_stats_json(t)
    } else {
        Ok(parse_class_stats_text(out))
    }
}

fn parse_class_stats_json(json: &str) -> Result<BTreeMap<u16, HtbClassStats>, HtbError> {
    let v: Value = serde_json::from_str(json).map_err(|e| HtbError::Parse {
        what: "tc -s -j class show".into(),
        detail: e.to_string(),
    })?;
    let mut map = BTreeMap::new();
    for c in v.as_array().into_iter().flatten() {
        let Some(minor) = c
            .get("handle")
            .and_then(Value::as_str)
            .and_then(handle_minor)
        else {
            continue;
        };
        // Counters are either flat on the class object or inside "stats".
        let s = c.get("stats").unwrap_or(c);
        let n = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
        map.insert(
            minor,
            HtbClassStats {
                minor,
                bytes: n("bytes"),
                packets: n("packets"),
                drops: n("drops"),
                overlimits: n("overlimits"),
                backlog_bytes: n("backlog"),
                qlen: n("qlen"),
            },
        );
    }
    Ok(map)
}

fn parse_class_stats_text(text: &str) -> BTreeMap<u16, HtbClassStats> {
    let mut map = BTreeMap::new();
    let mut cur: Option<HtbClassStats> = None;
    let num = |t: Option<&&str>| {
        t.map(|s| s.trim_end_matches([',', ')']))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    for line in text.lines() {
        let toks: Vec<&str> = line.split_whitespace().collect();
        match toks.first().copied() {
            Some("class") => {
                if let Some(c) = cur.take() {
                    map.insert(c.minor, c);
                }
                cur = toks
                    .get(2)
                    .and_then(|h| handle_minor(h))
                    .map(|minor| HtbClassStats {
                        minor,
                        ..Default::default()
                    });
            }
            Some("Sent") => {
                if let Some(c) = cur.as_mut() {
                    // Sent B bytes P pkt (dropped D, overlimits O requeues R)
                    c.bytes = num(toks.get(1));
                    c.packets = num(toks.get(3));
                    let after = |k: &str| toks.iter().position(|t| *t == k).map(|i| i + 1);
                    c.drops = num(after("(dropped").and_then(|i| toks.get(i)));
                    c.overlimits = num(after("overlimits").and_then(|i| toks.get(i)));
                }
            }
            Some("backlog") => {
                if let Some(c) = cur.as_mut() {
                    // backlog 0b 0p requeues 0
                    c.backlog_bytes = toks.get(1).and_then(|s| parse_tc_size(s)).unwrap_or(0);
                    c.qlen = toks
                        .get(2)
                        .and_then(|s| s.trim_end_matches('p').parse().ok())
                        .unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    if let Some(c) = cur.take() {
        map.insert(c.minor, c);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(link: u64) -> HtbTree {
        let mut t = HtbTree {
            ifname: "sub0".into(),
            netns: None,
            link_rate_bps: link,
            default_minor: 0xfffe,
            classes: BTreeMap::new(),
        };
        t.classes.insert(0xfffe, HtbTree::default_class_for(link));
        t
    }

    #[test]
    fn skb_priority_values() {
        assert_eq!(skb_priority(0x10), 0x0001_0010);
        assert_eq!(skb_priority(0xfffe), 0x0001_fffe);
    }

    #[test]
    fn validation() {
        let t = tree(100_000_000);
        let ok = HtbClass::new(30_000_000, 100_000_000);
        assert!(matches!(
            t.plan_upsert(1, &ok),
            Err(HtbError::InvalidMinor { minor: 1 })
        ));
        assert!(matches!(
            t.plan_upsert(0xffff, &ok),
            Err(HtbError::InvalidMinor { .. })
        ));
        assert!(matches!(
            t.plan_upsert(0x10, &HtbClass::new(7, 100)),
            Err(HtbError::RateTooLow {
                minor: 0x10,
                rate_bps: 7
            })
        ));
        assert!(matches!(
            t.plan_upsert(0x10, &HtbClass::new(100, 99)),
            Err(HtbError::CeilBelowRate { .. })
        ));
        assert!(matches!(
            t.plan_upsert(0x10, &ok.clone().with_prio(8)),
            Err(HtbError::InvalidPrio { prio: 8, .. })
        ));
        let mut z = ok.clone();
        z.leaf = Some(LeafQdisc::Pfifo { limit_pkts: 0 });
        assert!(matches!(
            t.plan_upsert(0x10, &z),
            Err(HtbError::ZeroParameter { .. })
        ));
        // default class holds 1 Mbit: 99 Mbit left.
        let e = t
            .plan_upsert(0x10, &HtbClass::new(99_000_001, 100_000_000))
            .unwrap_err();
        match &e {
            HtbError::Oversubscribed {
                minor,
                available_bps,
                ..
            } => {
                assert_eq!(*minor, 0x10);
                assert_eq!(*available_bps, 99_000_000);
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("1:10"), "{e}");
        assert!(e.to_string().contains("99000000 bit/s left"), "{e}");
        assert!(
            t.plan_upsert(0x10, &HtbClass::new(99_000_000, 100_000_000))
                .is_ok()
        );
    }

    #[test]
    fn oversubscription_counts_other_classes_only() {
        let mut t = tree(100_000_000);
        t.classes
            .insert(0x10, HtbClass::new(60_000_000, 100_000_000));
        // Raising 1:10 itself to 99 Mbit is fine (its old rate is not counted twice).
        assert!(
            t.plan_upsert(0x10, &HtbClass::new(99_000_000, 100_000_000))
                .is_ok()
        );
        // A second class only has 39 Mbit.
        assert!(matches!(
            t.plan_upsert(0x11, &HtbClass::new(40_000_000, 100_000_000)),
            Err(HtbError::Oversubscribed {
                available_bps: 39_000_000,
                ..
            })
        ));
    }

    #[test]
    fn diffing_and_commands() {
        let mut t = tree(100_000_000);
        let a = HtbClass::new(30_000_000, 100_000_000).with_prio(1);
        let plan = t.plan_upsert(0x10, &a).unwrap();
        assert_eq!(
            plan,
            UpsertPlan::Create(vec![
                "class replace dev sub0 parent 1:1 classid 1:10 htb rate 30000000bit ceil 100000000bit prio 1 quantum 37500".into(),
                "qdisc replace dev sub0 parent 1:10 handle 10: bfifo limit 625000".into(),
            ])
        );
        t.classes.insert(0x10, a.clone());
        assert_eq!(t.plan_upsert(0x10, &a).unwrap(), UpsertPlan::Noop);
        let mut b = a.clone();
        b.rate_bps = 20_000_000;
        b.burst = Some(20_000);
        assert_eq!(
            t.plan_upsert(0x10, &b).unwrap(),
            UpsertPlan::Modify(vec![
                "class replace dev sub0 parent 1:1 classid 1:10 htb rate 20000000bit ceil 100000000bit prio 1 quantum 25000 burst 20000".into(),
            ])
        );
        // An explicitly changed leaf is re-applied in place.
        let mut c = a.clone();
        c.leaf = Some(LeafQdisc::Pfifo { limit_pkts: 100 });
        match t.plan_upsert(0x10, &c).unwrap() {
            UpsertPlan::Modify(l) => {
                assert_eq!(l.len(), 2);
                assert_eq!(
                    l[1],
                    "qdisc replace dev sub0 parent 1:10 handle 10: pfifo limit 100"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            t.plan_remove(0x10).unwrap(),
            vec![
                "qdisc del dev sub0 parent 1:10 handle 10:".to_string(),
                "class del dev sub0 classid 1:10".to_string()
            ]
        );
        assert!(matches!(
            t.plan_remove(0x11),
            Err(HtbError::NoSuchClass { minor: 0x11 })
        ));
        assert!(matches!(
            t.plan_remove(0xfffe),
            Err(HtbError::DefaultClass { .. })
        ));
    }

    #[test]
    fn quantum_and_leaf_defaults() {
        assert_eq!(HtbClass::new(8, 8).effective_quantum(), 1514);
        assert_eq!(
            HtbClass::new(10_000_000_000, 10_000_000_000).effective_quantum(),
            200_000
        );
        assert_eq!(
            LeafQdisc::default_for(1_000_000),
            LeafQdisc::Bfifo {
                limit_bytes: 200_000
            }
        );
    }

    #[test]
    fn rates_and_sizes() {
        assert_eq!(parse_tc_rate("30Mbit"), Some(30_000_000));
        assert_eq!(parse_tc_rate("500Kbit"), Some(500_000));
        assert_eq!(parse_tc_rate("8bit"), Some(8));
        assert_eq!(parse_tc_rate("1.5Gbit"), Some(1_500_000_000));
        assert_eq!(parse_tc_rate("1Kbps"), Some(8_000));
        assert_eq!(parse_tc_rate("1Mibit"), Some(1_048_576));
        assert_eq!(parse_tc_rate("x"), None);
        assert_eq!(parse_tc_size("1514b"), Some(1514));
        assert_eq!(parse_tc_size("12Kb"), Some(12_288));
        assert_eq!(parse_tc_size("0b"), Some(0));
    }

    const TEXT: &str = "class htb 1:11 parent 1:1 leaf 11: prio 1 rate 10Mbit ceil 100Mbit burst 1600b cburst 1600b \n Sent 1234567 bytes 890 pkt (dropped 12, overlimits 34 requeues 0) \n backlog 12Kb 3p requeues 0\n lended: 0 borrowed: 0 giants: 0\n tokens: 20000 ctokens: 2000\n\nclass htb 1:1 root rate 100Mbit ceil 100Mbit burst 1600b cburst 1600b \n Sent 99 bytes 1 pkt (dropped 0, overlimits 0 requeues 0) \n backlog 0b 0p requeues 0\n";

    #[test]
    fn stats_text() {
        let m = parse_class_stats(TEXT).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[&0x11],
            HtbClassStats {
                minor: 0x11,
                bytes: 1_234_567,
                packets: 890,
                drops: 12,
                overlimits: 34,
                backlog_bytes: 12_288,
                qlen: 3
            }
        );
        assert_eq!(m[&1].bytes, 99);
    }

    #[test]
    fn stats_json() {
        let flat = r#"[{"class":"htb","handle":"1:10","parent":"1:1","leaf":"10:","bytes":5,"packets":2,"drops":1,"overlimits":0,"requeues":0,"backlog":0,"qlen":0},
                      {"class":"htb","handle":"1:1","root":true,"stats":{"bytes":7,"packets":3,"drops":0}}]"#;
        let m = parse_class_stats(flat).unwrap();
        assert_eq!(m[&0x10].bytes, 5);
        assert_eq!(m[&0x10].drops, 1);
        assert_eq!(m[&1].packets, 3);
    }

    #[test]
    fn adopt_params() {
        let d = "class htb 1:10 parent 1:1 leaf 10: prio 1 quantum 37500 rate 30Mbit ceil 100Mbit linklayer ethernet burst 1593b/1 mpu 0b cburst 1600b/1 mpu 0b level 0 \nclass htb 1:1 root rate 100Mbit ceil 100Mbit linklayer ethernet burst 1600b/1 mpu 0b cburst 1600b/1 mpu 0b level 7 \n";
        let v = parse_class_params(d);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, 0x10);
        assert_eq!(v[0].1.rate_bps, 30_000_000);
        assert_eq!(v[0].1.ceil_bps, 100_000_000);
        assert_eq!(v[0].1.prio, 1);
        assert_eq!(v[0].1.quantum, Some(37_500));
    }

    #[test]
    fn root_detection() {
        let j =
            r#"[{"kind":"htb","handle":"1:","root":true,"options":{"r2q":10,"default":"0xfffe"}}]"#;
        assert!(root_is_our_htb(j, 0xfffe).unwrap());
        assert!(!root_is_our_htb(j, 0x20).unwrap());
        assert!(!root_is_our_htb("[]", 0xfffe).unwrap());
        assert!(!root_is_our_htb(r#"[{"kind":"noqueue","handle":"0:","root":true}]"#, 2).unwrap());
    }
}
