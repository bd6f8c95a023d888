//! The compiled eBPF objects, embedded (8-byte aligned, as the ELF parser requires).
//!
//! - [`SHAPER`]: the production programs (`shaper_xdp_sub`, `shaper_xdp_up`, `shaper_tc_down`,
//!   `shaper_tc_up`).
//! - [`SHAPER_TEST`]: the same source built with `SHAPER_TEST`: the clock comes from the
//!   `shaper_test_clock` map and each XDP run records its decision in `shaper_test_last`, so
//!   tests are deterministic and can check the class chosen.
//! - [`SHAPER_BENCH_SPREAD`]: built with `SHAPER_BENCH_SPREAD`: the subscriber address is
//!   replaced by a pseudo-random one from a configured range, so one BPF_PROG_TEST_RUN with a
//!   large repeat count measures random-key lookups.
//! - [`FLOOR`]: `XDP_PASS` alone, and `XDP_PASS` after one `bpf_get_prandom_u32`: the baselines
//!   the benchmark divides by.

pub static SHAPER: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shaper.bpf.o"));
pub static SHAPER_TEST: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shaper_test.bpf.o"));
pub static SHAPER_BENCH_SPREAD: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shaper_bench_spread.bpf.o"));
pub static FLOOR: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor.bpf.o"));

/// The ABI header, for the layout check against the Rust mirror.
pub const ABI_HEADER: &str = include_str!("../include/shaper_abi.h");
