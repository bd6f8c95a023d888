//! Internet checksum helpers: from-scratch sums (RFC 1071) and the incremental update of
//! RFC 1624 eqn. 3, exactly as the kernel programs do them.

/// Folds a 32-bit (or wider) ones-complement accumulator into 16 bits.
#[must_use]
pub fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Adds `data` as big-endian 16-bit words to `sum` (an odd trailing byte is padded with 0).
#[must_use]
pub fn sum_bytes(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// The standard internet checksum of `data`: `!fold(sum)`, written as is (0 stays 0).
#[must_use]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_bytes(0, data))
}

/// RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`, 16-bit ones-complement arithmetic.
#[must_use]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    let sum = u64::from(!hc) + u64::from(!old) + u64::from(new);
    !fold(sum)
}

/// Reads a big-endian u16 at `off`.
#[must_use]
pub fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// Writes a big-endian u16 at `off`.
pub fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example: 0001 f203 f4f5 f6f7 sums to ddf2 (before complement).
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_bytes(0, &d)), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn incremental_matches_recompute_on_valid_input() {
        let mut hdr = [
            0x45u8, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0, 0, 198, 18, 0, 1, 198,
            19, 0, 2,
        ];
        let c = checksum(&hdr);
        put16(&mut hdr, 10, c);
        let old = be16(&hdr, 0);
        hdr[1] = 0xb8;
        let new = be16(&hdr, 0);
        let inc = update16(c, old, new);
        hdr[10] = 0;
        hdr[11] = 0;
        assert_eq!(inc, checksum(&hdr));
    }

    #[test]
    fn odd_trailing_byte_is_padded() {
        assert_eq!(sum_bytes(0, &[0x12]), 0x1200);
        assert_eq!(sum_bytes(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }
}
