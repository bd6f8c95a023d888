//! MD5 and HMAC-MD5, the digests DOCSIS, DHCP and RADIUS authenticate with.
//!
//! - DOCSIS CM MIC: MD5 over the configuration TLVs; CMTS MIC: HMAC-MD5 (docs/PROTOCOLS.md §1).
//! - DHCP authentication (RFC 3118 delayed authentication, RFC 6704 reconfigure key): HMAC-MD5.
//! - RADIUS (RFC 2865 §3, RFC 5176 §2.3): MD5 authenticators; Message-Authenticator (RFC 3579
//!   §3.2): HMAC-MD5.
//!
//! Digests are compared in constant time ([`digest_eq`]): a byte-by-byte early exit would let a
//! peer learn a valid MIC one byte at a time.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};

/// Length of an MD5 digest and of every MIC/authenticator built on it.
pub const DIGEST_LEN: usize = 16;

/// MD5 over the concatenation of `parts` (RFC 1321).
#[must_use]
pub fn md5(parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC-MD5 (RFC 2104) keyed with `key` over the concatenation of `parts`.
#[must_use]
pub fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time equality of two byte strings (false when the lengths differ).
#[must_use]
pub fn digest_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn md5_rfc1321_vectors() {
        assert_eq!(
            md5(&[b""]).to_vec(),
            hex("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(
            md5(&[b"abc"]).to_vec(),
            hex("900150983cd24fb0d6963f7d28e17f72")
        );
        // Split input gives the same digest as the whole.
        assert_eq!(md5(&[b"a", b"bc"]), md5(&[b"abc"]));
    }

    #[test]
    fn hmac_md5_rfc2104_vectors() {
        // RFC 2104 appendix / RFC 2202 test cases 1 and 2.
        assert_eq!(
            hmac_md5(&[0x0b; 16], &[b"Hi There"]).to_vec(),
            hex("9294727a3638bb1c13f48ef8158bfc9d")
        );
        assert_eq!(
            hmac_md5(b"Jefe", &[b"what do ya want ", b"for nothing?"]).to_vec(),
            hex("750c783e6ab0b503eaa86e310a5db738")
        );
        // RFC 2202 case 6: a key longer than the 64-byte block is hashed first.
        assert_eq!(
            hmac_md5(
                &[0xaa; 80],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )
            .to_vec(),
            hex("6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd")
        );
    }

    #[test]
    fn digest_eq_checks_every_byte_and_length() {
        let a = md5(&[b"x"]);
        let mut b = a;
        assert!(digest_eq(&a, &b));
        b[15] ^= 1;
        assert!(!digest_eq(&a, &b));
        assert!(!digest_eq(&a, &a[..15]));
    }
}
