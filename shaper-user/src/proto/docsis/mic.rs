//! CM MIC and CMTS MIC: computing them when a file is built and checking them when one is read.
//!
//! As rlaager/docsis `encode_one_file()` does (docs/PROTOCOLS.md §1; MULPI D.2.1–D.2.3):
//! 1. CM MIC (type 6): MD5 over every byte emitted so far (all settings in file order);
//! 2. CMTS MIC (type 7): HMAC-MD5 keyed with the shared secret over whole TLVs collected by type
//!    in [`CMTS_MIC_ORDER`], every instance of a type in file order, the CM MIC included, TLV 11
//!    and unlisted types excluded;
//! 3. end marker 255 and `(4 - len % 4) % 4` bytes of 0x00.

use crate::proto::auth::{DIGEST_LEN, digest_eq, hmac_md5, md5};

use super::tlv::{ConfigFile, DecodeError, END, Scan, Span, decode_span, pad_len, scan};

/// Type of the CM MIC setting.
pub const CM_MIC: u8 = 6;
/// Type of the CMTS MIC setting.
pub const CMTS_MIC: u8 = 7;

/// The order in which the CMTS MIC digest collects TLVs by type (rlaager/docsis
/// `add_cmts_mic()`, MULPI D.2.3).
pub const CMTS_MIC_ORDER: [u8; 21] = [
    1, 2, 3, 4, 17, 43, 6, 18, 19, 20, 22, 23, 24, 25, 28, 29, 26, 35, 36, 37, 40,
];

/// Longest key read from a key file, as rlaager/docsis reads it.
pub const MAX_KEY_LEN: usize = 64;

/// The CM–CMTS shared secret. Held apart from any file struct and redacted in `Debug`.
#[derive(Clone)]
pub struct CmtsKey(Vec<u8>);

impl CmtsKey {
    /// A key from its raw bytes, used as they are.
    #[must_use]
    pub fn new(key: &[u8]) -> CmtsKey {
        CmtsKey(key.to_vec())
    }

    /// A key from the contents of a key file the way rlaager/docsis reads one: the first 64
    /// bytes, then trailing CR and LF stripped (docs/PROTOCOLS.md §1).
    #[must_use]
    pub fn from_key_file(contents: &[u8]) -> CmtsKey {
        let mut k = &contents[..contents.len().min(MAX_KEY_LEN)];
        while let [rest @ .., b'\r' | b'\n'] = k {
            k = rest;
        }
        CmtsKey(k.to_vec())
    }

    /// The key bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for CmtsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CmtsKey(<{} bytes redacted>)", self.0.len())
    }
}

/// Which of the two MICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mic {
    Cm,
    Cmts,
}

impl Mic {
    /// The TLV type carrying this MIC.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Mic::Cm => CM_MIC,
            Mic::Cmts => CMTS_MIC,
        }
    }
}

impl std::fmt::Display for Mic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mic::Cm => "CM MIC (type 6, MD5)",
            Mic::Cmts => "CMTS MIC (type 7, HMAC-MD5 with the shared secret)",
        })
    }
}

/// A 16-byte digest, displayed as hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest(pub [u8; DIGEST_LEN]);

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// Why a file's MICs do not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum VerifyError {
    #[error("malformed file: {0}")]
    Malformed(#[from] DecodeError),
    #[error("no {0} in the file")]
    MissingMic(Mic),
    #[error("offset {offset}: a second {mic}; a file carries exactly one")]
    DuplicateMic { mic: Mic, offset: usize },
    #[error("offset {offset}: {mic} has {len} bytes, expected 16")]
    MicLength { mic: Mic, offset: usize, len: usize },
    #[error("offset {offset}: CMTS MIC before the CM MIC (it must follow it)")]
    CmtsMicFirst { offset: usize },
    #[error(
        "offset {offset}: TLV type {code} after the CM MIC, which covers only what precedes it"
    )]
    AfterCmMic { offset: usize, code: u8 },
    #[error(
        "{mic} mismatch at offset {offset}: the file has {actual}, the content gives {expected}"
    )]
    Mismatch {
        mic: Mic,
        offset: usize,
        expected: Digest,
        actual: Digest,
    },
}

/// MD5 over `bytes[..end]`: the CM MIC of a file whose CM MIC TLV starts at `end`.
#[must_use]
pub fn cm_mic(bytes: &[u8], end: usize) -> [u8; DIGEST_LEN] {
    md5(&[&bytes[..end]])
}

/// HMAC-MD5 over the whole TLVs of `spans` collected in [`CMTS_MIC_ORDER`].
#[must_use]
pub fn cmts_mic(bytes: &[u8], spans: &[Span], key: &CmtsKey) -> [u8; DIGEST_LEN] {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(spans.len());
    for code in CMTS_MIC_ORDER {
        parts.extend(
            spans
                .iter()
                .filter(|s| s.code == code)
                .map(|s| &bytes[s.start..s.end]),
        );
    }
    hmac_md5(key.as_bytes(), &parts)
}

/// Appends CM MIC, CMTS MIC, end marker and padding to `out`, which holds the encoded
/// settings whose spans are `spans` (the CM MIC's span is added to it).
pub(crate) fn seal(out: &mut Vec<u8>, spans: &mut Vec<Span>, key: &CmtsKey) {
    let cm = cm_mic(out, out.len());
    let start = out.len();
    out.extend_from_slice(&[CM_MIC, 16]);
    out.extend_from_slice(&cm);
    spans.push(Span {
        code: CM_MIC,
        start,
        end: out.len(),
    });
    let cmts = cmts_mic(out, spans, key);
    out.extend_from_slice(&[CMTS_MIC, 16]);
    out.extend_from_slice(&cmts);
    out.push(END);
    out.resize(out.len() + pad_len(out.len()), 0);
}

/// Checks both MICs of `bytes` with `key` and returns the file's top-level layout.
///
/// Beyond the digests it requires exactly one CM MIC and one CMTS MIC, 16 bytes each, and
/// nothing but the CMTS MIC after the CM MIC (a setting there would be covered by no CM MIC).
///
/// # Errors
/// [`VerifyError`] naming the MIC, its offset and expected/actual digests, or the malformation.
pub fn verify_mics(bytes: &[u8], key: &CmtsKey) -> Result<Scan, VerifyError> {
    check_mics(bytes, Some(key))
}

/// What a cable modem checks (MULPI D.2.2): the file's layout as [`verify_mics`] requires it
/// and the CM MIC digest. The CMTS MIC must be present and 16 bytes long, but its digest is not
/// checked: only the CMTS holds the shared secret.
///
/// # Errors
/// As [`verify_mics`], without CMTS MIC mismatches.
pub fn verify_cm_mic(bytes: &[u8]) -> Result<Scan, VerifyError> {
    check_mics(bytes, None)
}

/// Layout and CM MIC checks, and the CMTS MIC digest when `key` is given.
fn check_mics(bytes: &[u8], key: Option<&CmtsKey>) -> Result<Scan, VerifyError> {
    let scan = scan(bytes)?;
    let find = |mic: Mic| -> Result<(usize, &Span), VerifyError> {
        let mut it = scan
            .spans
            .iter()
            .enumerate()
            .filter(|(_, s)| s.code == mic.code());
        let (i, s) = it.next().ok_or(VerifyError::MissingMic(mic))?;
        if let Some((_, dup)) = it.next() {
            return Err(VerifyError::DuplicateMic {
                mic,
                offset: dup.start,
            });
        }
        if s.end - s.start != 2 + DIGEST_LEN {
            return Err(VerifyError::MicLength {
                mic,
                offset: s.start,
                len: s.end - s.start - 2,
            });
        }
        Ok((i, s))
    };
    let (cm_i, cm) = find(Mic::Cm)?;
    let (cmts_i, cmts) = find(Mic::Cmts)?;
    if cmts_i < cm_i {
        return Err(VerifyError::CmtsMicFirst { offset: cmts.start });
    }
    if let Some(s) = scan.spans[cm_i + 1..].iter().find(|s| s.code != CMTS_MIC) {
        return Err(VerifyError::AfterCmMic {
            offset: s.start,
            code: s.code,
        });
    }
    // Aggregates must parse too, or the file is malformed whatever its MICs say.
    for s in &scan.spans {
        decode_span(bytes, s)?;
    }
    let check = |mic: Mic, span: &Span, expected: [u8; DIGEST_LEN]| {
        let actual = span.value(bytes);
        if digest_eq(&expected, actual) {
            Ok(())
        } else {
            let mut a = [0; DIGEST_LEN];
            a.copy_from_slice(actual);
            Err(VerifyError::Mismatch {
                mic,
                offset: span.start,
                expected: Digest(expected),
                actual: Digest(a),
            })
        }
    };
    check(Mic::Cm, cm, cm_mic(bytes, cm.start))?;
    if let Some(key) = key {
        check(Mic::Cmts, cmts, cmts_mic(bytes, &scan.spans, key))?;
    }
    Ok(scan)
}

/// [`verify_mics`], then the decoded file.
///
/// # Errors
/// As [`verify_mics`].
pub fn decode_verified(bytes: &[u8], key: &CmtsKey) -> Result<ConfigFile, VerifyError> {
    verify_mics(bytes, key)?;
    Ok(ConfigFile::decode(bytes)?)
}
