//! shaper's own TLV 43 vendor-specific blocks (MULPI C.1.1.17: a modem ignores a vendor
//! block whose OUI is not its own, so these travel through any DOCSIS parser untouched).
//!
//! OUI `02:53:48`: the first octet has the IEEE "locally administered" bit (0x02) set, so no
//! IEEE-assigned OUI equals it and no modem vendor's parser claims the block; `53 48` is
//! ASCII "SH". Two kinds of block share it, told apart by their sub-types (docs/MODEM-CONFIG.md):
//!
//! | sub | block | meaning | size |
//! |---|---|---|---|
//! | 1 | targets | availability, ppm of time | 4 B |
//! | 2 | targets | error-performance ratio, ppm | 4 B |
//! | 3 | targets | loss under congestion, ppm | 4 B |
//! | 4 | targets | connection setup time, ms | 4 B |
//! | 5 | targets | fault detection/correction time, ms | 4 B |
//! | 6 | targets | L3 MTU, bytes | 2 B |
//! | 7 | targets | modem id the file was made for, UTF-8 | 1–200 B |
//! | 32 | signature | signing key id | 8 B |
//! | 33 | signature | Ed25519 signature | 64 B |
//! | 34 | signature | batch position: index (2 B) ‖ Merkle path (32 B per level, 1–5) | 34–162 B |

use super::fields::{VENDOR_ID, VENDOR_SPECIFIC, VendorSpecific};
use super::tlv::Tlv;

/// shaper's vendor identifier (sub-TLV 43.8).
pub const SHAPER_OUI: [u8; 3] = [0x02, 0x53, 0x48];

/// Targets block: availability, ppm.
pub const SUB_AVAILABILITY: u8 = 1;
/// Targets block: error-performance ratio, ppm.
pub const SUB_ERROR_RATE: u8 = 2;
/// Targets block: loss under congestion, ppm.
pub const SUB_LOSS: u8 = 3;
/// Targets block: connection setup time, ms.
pub const SUB_SETUP_TIME: u8 = 4;
/// Targets block: fault detection and correction time, ms.
pub const SUB_REPAIR_TIME: u8 = 5;
/// Targets block: L3 MTU, bytes.
pub const SUB_MTU: u8 = 6;
/// Targets block: the modem id the file was generated for.
pub const SUB_MODEM_ID: u8 = 7;
/// Signature block: key id.
pub const SUB_KEY_ID: u8 = 32;
/// Signature block: Ed25519 signature.
pub const SUB_SIGNATURE: u8 = 33;
/// Signature block of a batch-signed file: its leaf index and Merkle path.
pub const SUB_BATCH_PATH: u8 = 34;

/// True when `t` is a TLV 43 whose first sub-TLV is shaper's OUI.
#[must_use]
pub fn is_shaper_block(t: &Tlv) -> bool {
    t.code() == VENDOR_SPECIFIC
        && t.subs()
            .and_then(<[Tlv]>::first)
            .is_some_and(|s| s.code() == VENDOR_ID && s.data() == Some(&SHAPER_OUI[..]))
}

/// A shaper vendor block holding `subs` after the OUI.
#[must_use]
pub fn shaper_block(subs: Vec<Tlv>) -> Tlv {
    VendorSpecific {
        oui: SHAPER_OUI,
        subs,
    }
    .to_tlv()
}
