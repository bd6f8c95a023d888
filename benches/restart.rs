//! Restart benchmark: how long a new controller process takes to load the data plane over
//! pinned maps that hold a million subscribers, reading their state back to reconcile
//! (`Dataplane::load` with a pin root: `maps::read_state`). Results and method:
//! `docs/PERFORMANCE.md`, section "Data plane: restart read-back".
//!
//! A benchmark, not a test: it needs root (CAP_BPF, bpffs) and prints a table.
//!
//! ```text
//! cargo bench -p shaper-user --bench restart                 # 1M subscribers
//! cargo bench -p shaper-user --bench restart -- --subs 200000
//! ```
//!
//! Two layouts: every subscriber in a declared address pool (its state is a slot of the
//! `shaper_sub_slots` array), and no pools (every subscriber is also a `shaper_subs_v4` hash
//! entry). Baselines in the same run: loading over pins of the same sizes that hold no
//! subscriber (program load and verification, map reuse, the same arrays read: the floor), and
//! reading the full pinned maps with aya's per-entry iterators alone (one or two syscalls per
//! entry: how read-back worked before batching).
//! Keys are map keys only (11.0.0.0/12, as in the data-plane bench): no packet is sent.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result, bail, ensure};
use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use shaper::{
    abi,
    dataplane::{Dataplane, Limits, LoadOptions},
    policy::{ClassConfig, Prefix, SubscriberKey},
};

const SUB_BASE: u32 = 0x0b00_0000;
const CLASSES: u32 = 64;

struct Args {
    subs: u32,
    runs: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        subs: 1_000_000,
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--subs" => {
                a.subs = it
                    .next()
                    .context("--subs needs a number")?
                    .parse()
                    .context("--subs: not a number")?;
            }
            "--runs" => {
                a.runs = it
                    .next()
                    .context("--runs needs a number")?
                    .parse()
                    .context("--runs: not a number")?;
            }
            // cargo bench passes --bench to every harness=false target.
            "--bench" => {}
            other => bail!("unknown argument {other:?} (known: --subs N, --runs N)"),
        }
    }
    ensure!(
        (1..=1 << 20).contains(&a.subs),
        "--subs must be 1..=1048576"
    );
    ensure!(a.runs >= 1, "--runs must be at least 1");
    Ok(a)
}

/// Removes the pin root (maps and links of every ABI version under it) when dropped.
struct PinRoot(PathBuf);

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options(root: &Path, n: u32, pooled: bool) -> LoadOptions {
    let bits = 32 - (n.max(2) - 1).leading_zeros();
    LoadOptions {
        pin_root: Some(root.to_path_buf()),
        limits: Limits {
            max_subscribers: (1u32 << bits) + 1024,
            max_classes: 1024,
            ..Limits::default()
        },
        pools: if pooled {
            vec![Prefix {
                addr: IpAddr::V4(Ipv4Addr::from(SUB_BASE)),
                len: u8::try_from(32 - bits).expect("prefix length"),
            }]
        } else {
            Vec::new()
        },
        ..LoadOptions::default()
    }
}

/// Loads a pinned data plane under `root` and fills it with `n` subscribers on 64 plans.
fn fill(root: &Path, n: u32, pooled: bool) -> Result<()> {
    let mut dp = Dataplane::load(options(root, n, pooled)).context("loading (needs root)")?;
    for id in 1..=CLASSES {
        dp.upsert_class(
            id,
            &ClassConfig {
                rate_bps: Some(10_000_000 * u64::from(id)),
                burst_bytes: 100_000,
                ..ClassConfig::default()
            },
        )?;
    }
    let batch: Vec<(SubscriberKey, [u32; 2])> = (0..n)
        .map(|i| {
            let c = 1 + i % CLASSES;
            (
                SubscriberKey {
                    addr: IpAddr::V4(Ipv4Addr::from(SUB_BASE + i)),
                    len: 32,
                },
                [c, c],
            )
        })
        .collect();
    dp.upsert_subscribers(&batch)?;
    ensure!(
        dp.subscriber_count() == n as usize,
        "not all subscribers written"
    );
    Ok(())
}

/// The old read-back: aya's per-entry iterators over the pinned hash and slot array.
fn iterate(root: &Path) -> Result<(usize, usize)> {
    let maps = root.join(format!("v{}/maps", abi::ABI_VERSION));
    let hash = MapData::from_pin(maps.join("shaper_subs_v4"))?;
    let hash: BpfHashMap<_, abi::SubKeyV4, abi::SubValue> =
        BpfHashMap::try_from(aya::maps::Map::HashMap(hash))?;
    let mut hashed = 0usize;
    for e in hash.iter() {
        e?;
        hashed += 1;
    }
    let slots = MapData::from_pin(maps.join("shaper_sub_slots"))?;
    let slots: Array<_, abi::SubSlot> = Array::try_from(aya::maps::Map::Array(slots))?;
    let mut used = 0usize;
    for s in slots.iter() {
        let s = s?;
        if s.d[0].class_id != 0 || s.d[1].class_id != 0 {
            used += 1;
        }
    }
    Ok((hashed, used))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = parse_args()?;
    shaper::dataplane::ensure_bpffs()?;
    let n = args.subs;
    println!(
        "shaper restart bench: {n} subscribers, {} runs each (median), kernel {}",
        args.runs,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    );
    println!();
    println!(
        "{:<34} {:>16} {:>12} {:>20}",
        "layout", "empty pins s", "restart s", "per-entry reads s"
    );
    for pooled in [true, false] {
        let layout = if pooled {
            "pooled (slots array)"
        } else {
            "no pools (hash + slots array)"
        };
        let root = PinRoot(PathBuf::from(format!(
            "/sys/fs/bpf/shaper-bench-restart-{}",
            std::process::id()
        )));
        let empty = PinRoot(PathBuf::from(format!(
            "/sys/fs/bpf/shaper-bench-restart-empty-{}",
            std::process::id()
        )));
        fill(&root.0, n, pooled)?;
        // Pins of the same sizes with nothing written: the load reuses maps as over the full
        // pins, and reads the same arrays back, but finds no subscriber.
        drop(Dataplane::load(options(&empty.0, n, pooled))?);
        let (mut floor, mut load, mut iter) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let t = Instant::now();
            let dp = Dataplane::load(options(&empty.0, n, pooled))?;
            floor.push(t.elapsed().as_secs_f64());
            ensure!(
                dp.subscriber_count() == 0,
                "the empty pins hold subscribers"
            );
            drop(dp);

            let t = Instant::now();
            let dp = Dataplane::load(options(&root.0, n, pooled))?;
            load.push(t.elapsed().as_secs_f64());
            ensure!(
                dp.subscriber_count() == n as usize,
                "read back {} subscribers, wrote {n}",
                dp.subscriber_count()
            );
            drop(dp);

            let t = Instant::now();
            let (hashed, used) = iterate(&root.0)?;
            iter.push(t.elapsed().as_secs_f64());
            ensure!(
                used == n as usize && hashed == if pooled { 0 } else { n as usize },
                "iteration found {hashed} hashed, {used} slots"
            );
        }
        let (f, l, i) = (median(floor), median(load), median(iter));
        println!("{layout:<34} {f:>16.3} {l:>12.3} {i:>20.3}");
    }
    println!();
    println!(
        "empty pins: Dataplane::load over pinned maps of the same sizes holding no subscriber; \
         restart: Dataplane::load over the pins holding {n} (read back with batch lookups, \
         classes through the mapping); per-entry reads: aya's iterators over the same pinned \
         hash and slot array alone (how read-back went before batching)."
    );
    Ok(())
}
