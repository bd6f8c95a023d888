//! The policer's fixed-point parameters, derived here from a class's rate and burst rather
//! than taken from `policy::ClassConfig`'s methods the loader writes into the kernel, so that
//! a conversion bug there shows up as a mismatch instead of hiding on both sides.
//!
//! Definitions (DATAPLANE.md §3.6 uses them; the loader must write exactly these):
//! - one byte is 8 bits, and at `rate` bit/s it takes `8 · 10⁹ / rate` ns; `ns_per_byte_q16`
//!   is that time in fixed point with 16 fractional bits, rounded down:
//!   `⌊8 · 10⁹ · 2¹⁶ / rate⌋`; no rate (or 0) is 0 = no policer;
//! - `burst_ns` is the time the whole burst takes at that per-byte cost, rounded down:
//!   `⌊burst_bytes · ns_per_byte_q16 / 2¹⁶⌋`.

/// Nanoseconds per second.
const NS_PER_S: u64 = 1_000_000_000;
/// Bits per byte.
const BITS: u64 = 8;
/// Fractional bits of the fixed-point per-byte cost.
const FRAC_BITS: u32 = 16;

/// `⌊8 · 10⁹ · 2¹⁶ / rate⌋`, 0 without a rate. The dividend, 5.24 · 10¹⁴, fits u64.
#[must_use]
pub fn ns_per_byte_q16(rate_bps: Option<u64>) -> u64 {
    match rate_bps {
        Some(rate) if rate != 0 => ((BITS * NS_PER_S) << FRAC_BITS) / rate,
        _ => 0,
    }
}

/// `⌊burst_bytes · ns_per_byte_q16 / 2¹⁶⌋`, computed without overflow (the product needs up
/// to 78 bits at the lowest rates; the quotient always fits u64).
#[must_use]
pub fn burst_ns(burst_bytes: u32, ns_per_byte_q16: u64) -> u64 {
    let ns = (u128::from(burst_bytes) * u128::from(ns_per_byte_q16)) >> FRAC_BITS;
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// The policer parameters of a class: `(ns_per_byte_q16, burst_ns)`.
#[must_use]
pub fn policer(cfg: &crate::policy::ClassConfig) -> (u64, u64) {
    let q16 = ns_per_byte_q16(cfg.rate_bps);
    (q16, burst_ns(cfg.burst_bytes, q16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_byte_cost_and_burst_from_first_principles() {
        // 8 Mbit/s: 1 µs per byte, exactly.
        assert_eq!(ns_per_byte_q16(Some(8_000_000)), 1000 << 16);
        assert_eq!(burst_ns(1500, 1000 << 16), 1_500_000);
        // 3 bit/s does not divide: 8e9 / 3 = 2666666666.67 ns per byte, rounded down in Q16.
        assert_eq!(ns_per_byte_q16(Some(3)), 174_762_666_666_666);
        // 400 Gbit/s: 0.02 ns per byte = 1310.72 in Q16.
        assert_eq!(ns_per_byte_q16(Some(400_000_000_000)), 1310);
        assert_eq!(ns_per_byte_q16(None), 0);
        assert_eq!(ns_per_byte_q16(Some(0)), 0);
        // 8 bit/s: 1 s per byte; a 1 MB burst is 10⁶ s, and the Q16 product (6.6 · 10¹⁹)
        // does not fit u64.
        let q = ns_per_byte_q16(Some(8));
        assert_eq!(q, NS_PER_S << 16);
        assert_eq!(burst_ns(1_000_000, q), 1_000_000 * NS_PER_S);
        assert_eq!(burst_ns(u32::MAX, q), u64::from(u32::MAX) * NS_PER_S);
    }
}
