//! The benchmarks' performance targets: one `target:` line each, and a non-zero exit status
//! when one is missed, so that a regression fails the run instead of scrolling by.
//!
//! Included by each bench with a target through `#[path = "common/targets.rs"] mod targets;`.

use std::sync::atomic::{AtomicUsize, Ordering};

static MISSED: AtomicUsize = AtomicUsize::new(0);

/// Prints `target: {what}: {value} {unit} (≥|≤ {limit} {unit}): met|MISSED` and counts a miss.
/// A value that is not a number (no sample at all) is a miss. Returns whether it was met.
pub fn target(what: &str, value: f64, limit: f64, unit: &str, at_least: bool) -> bool {
    let met = if at_least {
        value >= limit
    } else {
        value <= limit
    };
    println!(
        "target: {what}: {value:.2} {unit} ({} {limit} {unit}): {}",
        if at_least { "≥" } else { "≤" },
        if met { "met" } else { "MISSED" }
    );
    if !met {
        MISSED.fetch_add(1, Ordering::Relaxed);
    }
    met
}

/// Ends the process with status 1 when a target was missed (after every line was printed).
pub fn exit_if_missed() {
    let n = MISSED.load(Ordering::Relaxed);
    if n > 0 {
        eprintln!("{n} target(s) MISSED");
        std::process::exit(1);
    }
}
