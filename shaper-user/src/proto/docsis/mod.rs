//! DOCSIS cable-modem configuration files: TLV codec, CM/CMTS MICs, shaper's Ed25519
//! signature, typed settings and the operators' text form. Sans-IO: bytes in, bytes out; no
//! sockets, clock or RNG (docs/ARCHITECTURE.md §7; key generation takes the caller's RNG).
//!
//! Facts: docs/PROTOCOLS.md §1 (layout, MIC algorithm as rlaager/docsis computes it, Vector B);
//! CM-SP-MULPIv3.0 Annex C (settings) and D.2 (MICs). Operator guide: docs/MODEM-CONFIG.md.
//!
//! ```text
//! settings…  [43 signature block]  06 10 <CM MIC>  07 10 <CMTS MIC>  ff  00…
//! ```
//!
//! - [`ConfigFile::decode`] / [`ConfigFile::encode`]: exact round trip of any well-formed file.
//! - [`build`]: settings → signed (optionally) and MIC-protected file bytes; [`build_batch`]
//!   signs many files with one signature per batch of up to 32.
//! - [`verify_mics`], [`verify_signature`]: checks with precise errors.

mod codes;
mod fields;
mod mic;
mod sign;
mod snmp;
#[cfg(test)]
mod tests;
pub mod text;
mod tlv;
mod vendor;

pub use codes::{CodeInfo, Ctx, Kind, Unit, by_name, lookup};
pub use fields::{
    CLASS_OF_SERVICE, ClassOfService, DS_SERVICE_FLOW, Direction, FieldError, MAX_CPE,
    NETWORK_ACCESS, QOS_SET_ALL, SCHEDULING_BEST_EFFORT, SNMP_MIB_OBJECT, ServiceFlow,
    US_SERVICE_FLOW, VENDOR_ID, VENDOR_SPECIFIC, VendorSpecific, uint,
};
pub use mic::{
    CM_MIC, CMTS_MIC, CMTS_MIC_ORDER, CmtsKey, Digest, MAX_KEY_LEN, Mic, VerifyError, cm_mic,
    cmts_mic, decode_verified, verify_cm_mic, verify_mics,
};
pub use sign::{
    BATCH_CONTEXT, KeyId, MAX_BATCH, SIGNATURE_CONTEXT, SIGNATURE_TLV_LEN, SignatureError, Signer,
    TrustedKeys, is_signature_block, signature_tlv, signature_tlvs, verify_signature,
    verifying_key,
};
pub use snmp::{BerError, SnmpValue, VarBind, oid_text};
pub use tlv::{
    AGGREGATES, ConfigFile, DecodeError, END, EncodeError, MAX_VALUE_LEN, PAD, Scan, Span, Tlv,
    TlvPath, decode_span, is_aggregate, pad_len, scan,
};
pub use vendor::{
    SHAPER_OUI, SUB_AVAILABILITY, SUB_BATCH_PATH, SUB_ERROR_RATE, SUB_KEY_ID, SUB_LOSS,
    SUB_MODEM_ID, SUB_MTU, SUB_REPAIR_TIME, SUB_SETUP_TIME, SUB_SIGNATURE, is_shaper_block,
    shaper_block,
};

/// Checks and encodes the settings of one file; returns the bytes and the TLV spans.
fn encode_settings(settings: &[Tlv], signing: bool) -> Result<(Vec<u8>, Vec<Span>), EncodeError> {
    for t in settings {
        match t.code() {
            CM_MIC => {
                return Err(EncodeError::Computed {
                    code: CM_MIC,
                    name: "CM MIC",
                });
            }
            CMTS_MIC => {
                return Err(EncodeError::Computed {
                    code: CMTS_MIC,
                    name: "CMTS MIC",
                });
            }
            VENDOR_SPECIFIC if signing && is_signature_block(t) => {
                return Err(EncodeError::Computed {
                    code: VENDOR_SPECIFIC,
                    name: "shaper signature block",
                });
            }
            _ => {}
        }
    }
    let len: usize = settings.iter().map(Tlv::encoded_len).sum();
    let mut out = Vec::with_capacity(len + 256 + 40);
    let mut spans = Vec::with_capacity(settings.len() + 3);
    tlv::encode_top(settings, &mut out, Some(&mut spans))?;
    Ok((out, spans))
}

/// Builds a complete file from `settings`: the settings in order, then (with `signer`) the
/// signature block over them, then CM MIC, CMTS MIC keyed with `key`, end marker and padding
/// (rlaager/docsis `encode_one_file()` order, docs/PROTOCOLS.md §1).
///
/// # Errors
/// [`EncodeError`]: an over-long value or aggregate (never truncated), a top-level type 0 or
/// 255, a MIC among the settings (they are computed here), or a signature block among the
/// settings when signing (it would be signed over and duplicated).
pub fn build(
    settings: &[Tlv],
    key: &CmtsKey,
    signer: Option<&Signer>,
) -> Result<Vec<u8>, EncodeError> {
    let (mut out, mut spans) = encode_settings(settings, signer.is_some())?;
    if let Some(s) = signer {
        let sig = signature_tlv(&out, s);
        tlv::encode_top(std::slice::from_ref(&sig), &mut out, Some(&mut spans))?;
    }
    mic::seal(&mut out, &mut spans, key);
    Ok(out)
}

/// Builds many signed files at once: as [`build`] for each, but signed in batches of up to
/// [`MAX_BATCH`] files with one Ed25519 signature per batch ([`signature_tlvs`]), which is
/// what makes mass regeneration (a plan change for every modem) fast. Each file verifies on
/// its own with [`verify_signature`].
///
/// # Errors
/// As [`build`], for the first file that fails.
pub fn build_batch<S: AsRef<[Tlv]>>(
    files: &[S],
    key: &CmtsKey,
    signer: &Signer,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let mut encoded = files
        .iter()
        .map(|f| encode_settings(f.as_ref(), true))
        .collect::<Result<Vec<_>, _>>()?;
    let sigs = {
        let signed: Vec<&[u8]> = encoded.iter().map(|(b, _)| b.as_slice()).collect();
        signature_tlvs(&signed, signer)
    };
    for ((out, spans), sig) in encoded.iter_mut().zip(&sigs) {
        tlv::encode_top(std::slice::from_ref(sig), out, Some(spans))?;
        mic::seal(out, spans, key);
    }
    Ok(encoded.into_iter().map(|(b, _)| b).collect())
}
