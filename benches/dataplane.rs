//! Data-plane benchmark (issue 2): ns/packet of the whole XDP pipeline through
//! BPF_PROG_TEST_RUN, at 1, 10k, 100k and 1M subscribers and 1, 100 and 10k rules, with the
//! same key every packet and with random keys, each row beside XDP_PASS floor programs
//! measured interleaved in the same run. Results and method: `docs/PERFORMANCE.md`.
//!
//! A benchmark, not a test: it needs root (CAP_BPF) and prints a table.
//!
//! ```text
//! cargo bench -p shaper-user --bench dataplane                 # full: repeat 5M, 5 runs
//! cargo bench -p shaper-user --bench dataplane -- --quick      # repeat 1M, 3 runs
//! cargo bench -p shaper-user --bench dataplane -- --subs 1M --rules 10k --keys random
//! ```
//!
//! Options: `--quick`, `--repeat N`, `--runs N`, `--subs LIST`, `--rules LIST`,
//! `--keys same,random`, `--flow-shift N` (default 4 = 1 packet in 16 sampled into the flow
//! table; 31 = off), `--no-pin` (do not pin the process to the CPU it started on).
//! Lists are comma-separated and take k/M suffixes (`1,10k,100k,1M`).

#[path = "common/targets.rs"]
mod targets;

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use anyhow::{Context, Result, bail, ensure};
use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions, Xdp},
};
use shaper::{
    abi,
    dataplane::{Build, Dataplane, Limits, LoadOptions, Role, testrun::XDP_PASS},
    policy::{ClassConfig, PortRange, Prefix, Rule, SubscriberKey},
};

// ---- the bench packet ---------------------------------------------------------------------

/// The frame: 64-byte Ethernet/IPv4/UDP (no FCS), from a subscriber to a provider host.
const FRAME_SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const FRAME_DST: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const FRAME_SPORT: u16 = 40000;
const FRAME_DPORT: u16 = 5001;
const FRAME_LEN: usize = 64;

fn frame() -> Vec<u8> {
    let mut f = vec![0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (FRAME_LEN - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&FRAME_SRC.octets());
    ip[16..20].copy_from_slice(&FRAME_DST.octets());
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&FRAME_SPORT.to_be_bytes());
    udp[2..4].copy_from_slice(&FRAME_DPORT.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    // UDP checksum 0 (none), payload zeros.
    f
}

// ---- policy ---------------------------------------------------------------------------------

/// Map keys of the subscribers (never sent anywhere): `SUB_BASE + i`.
const SUB_BASE: u32 = 0x0b00_0000;
/// Subscribers are on plans 1..=SUB_CLASSES (class = 1 + i % SUB_CLASSES); every subscriber
/// polices against its own bucket at its plan's rate.
const SUB_CLASSES: u32 = 64;
/// Most plans `--sub-classes` accepts.
const MAX_SUB_CLASSES: u32 = 60_000;
/// Class of the rule the bench packet matches.
const MATCH_CLASS: u32 = 65_000;
/// Classes of the other rules: 65001..=65500.
const OTHER_RULE_CLASSES: u32 = 500;
/// The matching rule has the largest precedence value (lowest priority): no tuple can be
/// skipped before it is found.
const MATCH_PRECEDENCE: u32 = 1_000_000;

fn policed(dscp: Option<u8>, v: Variant) -> ClassConfig {
    let c = ClassConfig {
        // 100 Gbit/s with a 1 MB bucket: a 50-byte packet costs 4 ns of a 80 µs bucket, so
        // every packet conforms (checked) while the full GCRA path runs (clock read + CAS).
        rate_bps: Some(100_000_000_000),
        burst_bytes: 1_000_000,
        dscp,
        mtu: Some(1500),
        skb_priority: 0x0001_0010,
        block: false,
        shared_bucket: false,
    };
    ClassConfig {
        rate_bps: if v.no_police { None } else { c.rate_bps },
        burst_bytes: if v.no_police { 0 } else { c.burst_bytes },
        dscp: if v.no_dscp { None } else { c.dscp },
        ..c
    }
}

fn v4(a: u32, len: u8) -> Prefix {
    Prefix {
        addr: IpAddr::V4(Ipv4Addr::from(a)),
        len,
    }
}

fn ports(lo: u16, hi: u16) -> PortRange {
    PortRange { lo, hi }
}

/// `n` rules over four match shapes, exactly one of which matches the bench packet:
///
/// - S32: protocol exact (UDP/TCP), any source, destination /32, destination port range;
/// - S24: protocol exact, any source, destination /24, destination port range;
/// - A32: any protocol, any source, destination /32, destination port range;
/// - A16: any protocol, any source, destination /16, destination port range.
///
/// The packet (UDP to 198.19.0.1:5001) hits a key in every shape and walks its chain:
/// S32 (UDP, 198.19.0.1/32) holds ports 53, 123, 443 and then the matching rule (5000-5099,
/// precedence 1,000,000, the lowest priority), S24 (UDP, 198.19.0.0/24) holds 1-1023 and
/// 8000-9000, A32 (198.19.0.1/32) holds 0-1023, A16 (198.19.0.0/16) holds 60000-65535: four
/// tuple probes, four hash hits and eight chain entries read per packet. The other rules are
/// spread evenly over the four shapes on distinct provider prefixes the packet does not hit
/// (S32 in 198.19.1.0+, A32 in 198.19.128.0+, S24 /24s in 172.16.0.0/12, A16 /16s from
/// 16.0.0.0), one rule per key. With `n = 1` only the matching rule exists (one shape).
fn rules(n: usize, v: Variant) -> Vec<Rule> {
    let any = Prefix::any_v4();
    let dst = u32::from(FRAME_DST);
    let matching = Rule {
        id: 1,
        proto: Some(17),
        src: any,
        dst: v4(dst, 32),
        sport: PortRange::ANY,
        dport: ports(5000, 5099),
        precedence: if v.match_first { 0 } else { MATCH_PRECEDENCE },
        class: MATCH_CLASS,
    };
    if n <= 1 {
        return vec![matching];
    }
    let mut out = vec![matching];
    let mut next_id = 2u32;
    let mut push = |out: &mut Vec<Rule>, proto: Option<u8>, dst: Prefix, dport: PortRange| {
        let id = next_id;
        next_id += 1;
        out.push(Rule {
            id,
            proto,
            src: any,
            dst,
            sport: PortRange::ANY,
            dport,
            // Distinct precedences below the matching rule's.
            precedence: id,
            class: MATCH_CLASS + 1 + id % OTHER_RULE_CLASSES,
        });
    };
    // On the packet's path, not matching it.
    for p in [53, 123, 443] {
        push(&mut out, Some(17), v4(dst, 32), ports(p, p));
    }
    push(
        &mut out,
        Some(17),
        v4(dst & 0xffff_ff00, 24),
        ports(1, 1023),
    );
    push(
        &mut out,
        Some(17),
        v4(dst & 0xffff_ff00, 24),
        ports(8000, 9000),
    );
    push(&mut out, None, v4(dst, 32), ports(0, 1023));
    push(
        &mut out,
        None,
        v4(dst & 0xffff_0000, 16),
        ports(60000, 65535),
    );
    // Elsewhere.
    let mut j = 0u32;
    while out.len() < n {
        let k = j / 4;
        let lo = ((j * 7919) % 60000) as u16;
        let dport = ports(lo, lo + 99);
        let proto = if j % 8 < 4 { Some(17) } else { Some(6) };
        match j % 4 {
            0 => push(&mut out, proto, v4(0xc613_0100 + k, 32), dport), // 198.19.1.0+
            1 => push(&mut out, proto, v4(0xac10_0000 + (k << 8), 24), dport), // 172.16/12
            2 => push(&mut out, None, v4(0xc613_8000 + k, 32), dport),  // 198.19.128.0+
            _ => push(&mut out, None, v4(0x1000_0000 + (k << 16), 16), dport), // 16.0.0.0+
        }
        j += 1;
    }
    out
}

// ---- measurement ----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keys {
    Same,
    Random,
}

struct Args {
    repeat: u32,
    runs: usize,
    subs: Vec<u32>,
    rules: Vec<usize>,
    keys: Vec<Keys>,
    flow_shift: u32,
    pin: bool,
    variant: Variant,
}

/// Departures from the benchmark policy, for cost break-downs only (not the issue's table).
#[derive(Clone, Copy, Debug, Default)]
struct Variant {
    /// Classes without a policer: no clock read, no compare-and-swap.
    no_police: bool,
    /// Classes without a DSCP mark.
    no_dscp: bool,
    /// The matching rule gets the highest priority (precedence 0): the tuple search stops
    /// after the first tuple.
    match_first: bool,
    /// Subscribers are on this many plans instead of 64.
    sub_classes: Option<u32>,
    /// No subscriber pool: every subscriber is a hash entry.
    no_pools: bool,
}

fn parse_count(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1_000),
        Some('M' | 'm') => (&s[..s.len() - 1], 1_000_000),
        _ => (s, 1),
    };
    Ok(num
        .parse::<u64>()
        .with_context(|| format!("bad count {s:?}"))?
        * mul)
}

fn parse_list(s: &str) -> Result<Vec<u64>> {
    s.split(',').map(parse_count).collect()
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        repeat: 5_000_000,
        runs: 5,
        subs: vec![1, 10_000, 100_000, 1_000_000],
        rules: vec![1, 100, 10_000],
        keys: vec![Keys::Same, Keys::Random],
        flow_shift: 4,
        pin: true,
        variant: Variant::default(),
    };
    let mut it = std::env::args().skip(1);
    let mut repeat = None;
    let mut runs = None;
    let mut quick = false;
    while let Some(arg) = it.next() {
        let mut val = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            "--quick" => quick = true,
            "--no-pin" => a.pin = false,
            "--no-police" => a.variant.no_police = true,
            "--no-dscp" => a.variant.no_dscp = true,
            "--match-first" => a.variant.match_first = true,
            "--no-pools" => a.variant.no_pools = true,
            "--sub-classes" => {
                let n = u32::try_from(parse_count(&val()?)?)?;
                ensure!(
                    (1..=MAX_SUB_CLASSES).contains(&n),
                    "--sub-classes takes 1..=60000"
                );
                a.variant.sub_classes = Some(n);
            }
            "--repeat" => repeat = Some(u32::try_from(parse_count(&val()?)?)?),
            "--runs" => runs = Some(parse_count(&val()?)? as usize),
            "--subs" => {
                a.subs = parse_list(&val()?)?
                    .into_iter()
                    .map(u32::try_from)
                    .collect::<Result<_, _>>()?;
            }
            "--rules" => {
                a.rules = parse_list(&val()?)?
                    .into_iter()
                    .map(|n| n as usize)
                    .collect();
            }
            "--keys" => {
                a.keys = val()?
                    .split(',')
                    .map(|k| match k {
                        "same" => Ok(Keys::Same),
                        "random" => Ok(Keys::Random),
                        _ => bail!("--keys takes same,random"),
                    })
                    .collect::<Result<_>>()?;
            }
            "--flow-shift" => a.flow_shift = u32::try_from(parse_count(&val()?)?)?,
            "-h" | "--help" => {
                eprintln!(
                    "options: --quick | --repeat N | --runs N | --subs 1,10k,100k,1M | \
                     --rules 1,100,10k | --keys same,random | --flow-shift N | --no-pin\n\
                     break-down variants (not the issue's policy): --no-police | --no-dscp | \
                     --match-first | --sub-classes N"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if quick {
        a.repeat = 1_000_000;
        a.runs = 3;
    }
    a.repeat = repeat.unwrap_or(a.repeat).max(1000);
    a.runs = runs.unwrap_or(a.runs).max(1);
    ensure!(
        a.subs.iter().all(|&n| n >= 1),
        "subscriber counts must be ≥ 1"
    );
    ensure!(a.rules.iter().all(|&n| n >= 1), "rule counts must be ≥ 1");
    Ok(a)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Runs a floor program: the kernel's `duration` is the mean per repetition (net/bpf/test_run.c
/// `bpf_test_timer_continue` divides the elapsed time by the repetitions). Checked against the
/// wall clock of the call.
fn run_floor(prog: &Xdp, frame: &[u8], repeat: u32) -> Result<f64> {
    let mut out = vec![0u8; frame.len() + 256];
    let t = Instant::now();
    let res = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..Default::default()
    })?;
    let wall = t.elapsed().as_nanos() as f64 / f64::from(repeat);
    ensure!(
        res.return_value == XDP_PASS,
        "floor returned {}",
        res.return_value
    );
    let ns = res.duration.as_nanos() as f64;
    ensure!(
        ns <= wall * 1.05 + 1.0,
        "kernel duration {ns} ns is not a per-repetition mean (wall {wall:.1} ns/rep)"
    );
    Ok(ns)
}

/// How `Dataplane::run_xdp` reports `ns_per_run`, detected from the wall clock: either the
/// kernel's per-repetition mean, or that mean divided by `repeat` once more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunXdpScale {
    PerRepetition,
    DividedByRepeat,
}

/// Runs shaper's XDP program; returns the kernel's per-repetition mean in ns.
fn run_shaper(
    dp: &Dataplane,
    frame: &[u8],
    repeat: u32,
    scale: &mut Option<RunXdpScale>,
) -> Result<f64> {
    let t = Instant::now();
    let run = dp.run_xdp(Role::Subscriber, frame, repeat)?;
    let wall = t.elapsed().as_nanos() as f64 / f64::from(repeat);
    ensure!(run.action == XDP_PASS, "shaper returned {}", run.action);
    let as_is = run.ns_per_run;
    let undone = (run.ns_per_run * f64::from(repeat)).round();
    // The two readings differ by a factor `repeat` (≥ 1000): the wall clock tells them apart.
    let detected = if (as_is.max(1e-9) / wall).ln().abs() < (undone.max(1e-9) / wall).ln().abs() {
        RunXdpScale::PerRepetition
    } else {
        RunXdpScale::DividedByRepeat
    };
    match scale {
        None => *scale = Some(detected),
        Some(s) => ensure!(*s == detected, "run_xdp scale changed between calls"),
    }
    Ok(match detected {
        RunXdpScale::PerRepetition => as_is,
        RunXdpScale::DividedByRepeat => undone,
    })
}

struct Floors {
    _ebpf: Ebpf,
}

impl Floors {
    fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(shaper_ebpf::FLOOR).context("loading the floor programs")?;
        for name in ["floor_pass", "floor_prandom"] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name}"))?
                .try_into()?;
            p.load()?;
        }
        Ok(Self { _ebpf: ebpf })
    }
    fn prog(&self, name: &str) -> &Xdp {
        self._ebpf
            .program(name)
            .expect("floor program")
            .try_into()
            .expect("XDP program")
    }
}

struct Row {
    subs: u32,
    rules: usize,
    keys: Keys,
    shaper: Vec<f64>,
    pass: Vec<f64>,
    prandom: Vec<f64>,
}

impl Row {
    fn ratio(&self) -> f64 {
        median(&self.shaper) / median(&self.pass)
    }
    fn target(&self) -> Option<f64> {
        match self.keys {
            Keys::Same if self.subs == 100_000 && self.rules == 10_000 => Some(4.0),
            Keys::Random if self.subs == 1_000_000 => Some(12.0),
            _ => None,
        }
    }
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn load_dataplane(n: u32, keys: Keys, flow_shift: u32, v: Variant) -> Result<Dataplane> {
    let build = match keys {
        Keys::Same => Build::Production,
        Keys::Random => Build::BenchSpread {
            base_v4: SUB_BASE,
            spread: n,
        },
    };
    // The subscribers' addresses form one pool (a prefix just big enough), as an ISP's
    // framed-IP pool would; in same-key mode the frame's source (the last subscriber) is in a
    // second pool, 198.18.0.0/24. `--no-pools`: every subscriber is a hash entry.
    let bits = 32 - (n.max(1) - 1).leading_zeros();
    let pools = if v.no_pools {
        Vec::new()
    } else {
        vec![
            v4(SUB_BASE, 32 - bits as u8),
            v4(u32::from(FRAME_SRC) & !0xff, 24),
        ]
    };
    let mut dp = Dataplane::load(LoadOptions {
        build,
        pools,
        limits: Limits {
            max_subscribers: (1u32 << bits).max(1 << 20) + 1024,
            max_classes: 65536,
            max_rule_keys: 32768,
            max_rule_entries: 32768,
            max_flows: 65536,
        },
        flow_sample_shift: flow_shift,
        ..Default::default()
    })
    .context("loading the data plane (needs root)")?;
    let k = sub_class_count(v);
    let classes = n.min(k);
    for id in 1..=classes {
        dp.upsert_class(id, &policed(Some(10), v))?;
    }
    for id in MATCH_CLASS..=MATCH_CLASS + OTHER_RULE_CLASSES {
        dp.upsert_class(id, &policed(None, v))?;
    }
    let mut batch: Vec<(SubscriberKey, [u32; 2])> = (0..n)
        .map(|i| {
            let c = 1 + i % k;
            (
                SubscriberKey {
                    addr: IpAddr::V4(Ipv4Addr::from(SUB_BASE + i)),
                    len: 32,
                },
                [c, c],
            )
        })
        .collect();
    if keys == Keys::Same {
        // The frame's own source is the last of the n subscribers.
        batch.last_mut().expect("n ≥ 1").0.addr = IpAddr::V4(FRAME_SRC);
    }
    dp.upsert_subscribers(&batch)?;
    Ok(dp)
}

fn sub_class_count(v: Variant) -> u32 {
    v.sub_classes.unwrap_or(SUB_CLASSES)
}

/// Class of the frame's subscriber in same-key mode (the last one).
fn same_key_class(n: u32, v: Variant) -> u32 {
    1 + (n - 1) % sub_class_count(v)
}

/// Checks, with a short run, that the packet takes the path the row claims: passed, classified
/// by its subscriber and by the matching rule, conforming to both policers, and (random keys)
/// that every spread address is a subscriber.
fn check_path(
    dp: &Dataplane,
    frame: &[u8],
    n: u32,
    keys: Keys,
    shift: u32,
    v: Variant,
) -> Result<()> {
    const REPS: u32 = 10_000;
    let sub_classes: Vec<u32> = match keys {
        Keys::Same => vec![same_key_class(n, v)],
        Keys::Random => (1..=n.min(sub_class_count(v))).collect(),
    };
    let sum = |ids: &[u32]| -> Result<abi::ClassStats> {
        let mut s = abi::ClassStats::default();
        for &id in ids {
            s.add(&dp.class_stats(id)?);
        }
        Ok(s)
    };
    let (s0, m0, g0) = (
        sum(&sub_classes)?,
        dp.class_stats(MATCH_CLASS)?,
        dp.global_stats()?,
    );
    let run = dp.run_xdp(Role::Subscriber, frame, REPS)?;
    ensure!(run.action == XDP_PASS, "action {}", run.action);
    let (s1, m1, g1) = (
        sum(&sub_classes)?,
        dp.class_stats(MATCH_CLASS)?,
        dp.global_stats()?,
    );
    let reps = u64::from(REPS);
    ensure!(
        s1.pkts - s0.pkts == reps,
        "subscriber classes counted {} of {reps} packets",
        s1.pkts - s0.pkts
    );
    ensure!(
        m1.pkts - m0.pkts == reps,
        "the matching rule's class counted {} of {reps} packets",
        m1.pkts - m0.pkts
    );
    ensure!(
        s1.drop_police == s0.drop_police && m1.drop_police == m0.drop_police,
        "policer drops"
    );
    ensure!(
        g1.v[abi::gs::UNCLASSIFIED] == g0.v[abi::gs::UNCLASSIFIED],
        "unclassified packets"
    );
    let samples = g1.v[abi::gs::FLOW_SAMPLES] - g0.v[abi::gs::FLOW_SAMPLES];
    let expect = if shift > 30 { 0 } else { reps >> shift };
    ensure!(
        samples.abs_diff(expect) <= 1,
        "flow samples {samples}, expected {expect}"
    );
    Ok(())
}

fn pin_to_current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu has no preconditions; the cpu_set_t is zeroed and then filled.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return None;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return None;
        }
        Some(cpu as usize)
    }
}

fn v_is_default(v: Variant) -> bool {
    !v.no_police && !v.no_dscp && !v.match_first && v.sub_classes.is_none() && !v.no_pools
}

fn fmt_ns(v: f64) -> String {
    format!("{v:.0}")
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let jit = std::fs::read_to_string("/proc/sys/net/core/bpf_jit_enable")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let cpu = if args.pin { pin_to_current_cpu() } else { None };
    eprintln!(
        "shaper data-plane bench: kernel {kernel}, bpf_jit_enable={jit}, repeat {}, {} runs, \
         flow_sample_shift {}, pinned to CPU {}",
        args.repeat,
        args.runs,
        args.flow_shift,
        cpu.map_or("-".into(), |c| c.to_string())
    );
    if jit != "1" && jit != "2" {
        eprintln!("warning: the BPF JIT is off: figures are meaningless");
    }
    let frame = frame();
    let floors = Floors::load()?;
    let pass = floors.prog("floor_pass");
    let prandom = floors.prog("floor_prandom");
    let mut scale = None;
    let mut rows: Vec<Row> = Vec::new();
    let started = Instant::now();

    for &n in &args.subs {
        for &keys in &args.keys {
            let t = Instant::now();
            let mut dp = load_dataplane(n, keys, args.flow_shift, args.variant)?;
            eprintln!(
                "[{:>5.1}s] loaded {:?} build with {} subscribers in {:.1}s",
                started.elapsed().as_secs_f64(),
                keys,
                human(u64::from(n)),
                t.elapsed().as_secs_f64()
            );
            for &r in &args.rules {
                let set = rules(r, args.variant);
                dp.set_rules(&set)
                    .with_context(|| format!("set_rules with {r} rules"))?;
                check_path(&dp, &frame, n, keys, args.flow_shift, args.variant)
                    .with_context(|| format!("{n} subscribers, {r} rules, {keys:?} keys"))?;
                // Warm-up: caches, branch predictors, the flow table.
                run_shaper(&dp, &frame, args.repeat / 10, &mut scale)?;
                run_floor(pass, &frame, args.repeat / 10)?;
                let mut row = Row {
                    subs: n,
                    rules: r,
                    keys,
                    shaper: Vec::new(),
                    pass: Vec::new(),
                    prandom: Vec::new(),
                };
                for _ in 0..args.runs {
                    row.pass.push(run_floor(pass, &frame, args.repeat)?);
                    row.shaper
                        .push(run_shaper(&dp, &frame, args.repeat, &mut scale)?);
                    if keys == Keys::Random {
                        row.prandom.push(run_floor(prandom, &frame, args.repeat)?);
                    }
                }
                eprintln!(
                    "[{:>5.1}s] {:>5} subs {:>5} rules {:<6} shaper {:?} pass {:?} prandom {:?}",
                    started.elapsed().as_secs_f64(),
                    human(u64::from(n)),
                    human(r as u64),
                    format!("{keys:?}"),
                    row.shaper,
                    row.pass,
                    row.prandom
                );
                rows.push(row);
            }
        }
    }

    if scale == Some(RunXdpScale::DividedByRepeat) {
        eprintln!(
            "note: Dataplane::run_xdp reported ns_per_run = (kernel per-repetition mean) / \
             repeat; the bench multiplied it back (see docs/PERFORMANCE.md)"
        );
    }
    println!();
    println!(
        "repeat {}, median of {} runs, floors measured interleaved with each row, \
         flow_sample_shift {}, kernel {kernel}, JIT {jit}{}",
        args.repeat,
        args.runs,
        args.flow_shift,
        if v_is_default(args.variant) {
            String::new()
        } else {
            format!(", VARIANT {:?} (not the benchmark policy)", args.variant)
        }
    );
    println!();
    println!(
        "| subscribers | rules | keys | shaper ns/pkt | shaper min–max | floor_pass ns/pkt | \
         ratio vs floor_pass | floor_prandom ns/pkt | ratio vs floor_prandom | target (vs floor_pass) | result |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut misses = 0;
    for row in &rows {
        let min = row.shaper.iter().copied().fold(f64::INFINITY, f64::min);
        let max = row.shaper.iter().copied().fold(0.0, f64::max);
        let ratio = row.ratio();
        let (pr, prr) = if row.prandom.is_empty() {
            ("–".to_string(), "–".to_string())
        } else {
            let p = median(&row.prandom);
            (fmt_ns(p), format!("{:.1}×", median(&row.shaper) / p))
        };
        let (target, result) = match row.target() {
            Some(t) if ratio <= t => (format!("≤ {t:.0}×"), "PASS"),
            Some(t) => {
                misses += 1;
                (format!("≤ {t:.0}×"), "MISS")
            }
            None => ("–".to_string(), ""),
        };
        println!(
            "| {} | {} | {} | {} | {}–{} | {} | {:.1}× | {} | {} | {} | {} |",
            human(u64::from(row.subs)),
            human(row.rules as u64),
            match row.keys {
                Keys::Same => "same",
                Keys::Random => "random",
            },
            fmt_ns(median(&row.shaper)),
            fmt_ns(min),
            fmt_ns(max),
            fmt_ns(median(&row.pass)),
            ratio,
            pr,
            prr,
            target,
            result
        );
    }
    println!();
    for row in &rows {
        if let Some(t) = row.target() {
            targets::target(
                &format!(
                    "{} subscribers, {} rules, {} keys: ns/packet vs floor_pass",
                    human(u64::from(row.subs)),
                    human(row.rules as u64),
                    match row.keys {
                        Keys::Same => "same",
                        Keys::Random => "random",
                    }
                ),
                row.ratio(),
                t,
                "×",
                false,
            );
        }
    }
    println!(
        "{} rows, {} target(s) missed, {:.0}s",
        rows.len(),
        misses,
        started.elapsed().as_secs_f64()
    );
    targets::exit_if_missed();
    Ok(())
}
