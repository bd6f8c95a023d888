//! The TLV tree of a DOCSIS configuration file and its byte codec.
//!
//! Layout (docs/PROTOCOLS.md §1; CM-SP-MULPIv3.0 Annex C.1): a flat run of `type (1 B), length
//! (1 B), value` settings; the aggregates 4, 22–26 and 43 hold sub-TLVs of the same form; the
//! file ends with type 255 (no length byte) and 0x00 padding.
//!
//! Only the top level is parsed into aggregates: a sub-TLV's value is kept as bytes, whatever
//! it holds (classifier sub-sub-TLVs, vendor payloads), so decode → encode reproduces every
//! file byte for byte.

use super::codes::{self, Ctx};

/// The end-of-data marker: one byte, no length, followed only by 0x00 padding.
pub const END: u8 = 255;
/// The pad setting (a lone 0x00, MULPI C.1.1.1); only accepted after [`END`].
pub const PAD: u8 = 0;
/// Largest value a one-byte length can describe.
pub const MAX_VALUE_LEN: usize = 255;

/// Top-level types whose value is a run of sub-TLVs (docs/PROTOCOLS.md §1): class of service,
/// upstream/downstream packet classifiers, upstream/downstream service flows, PHS rules and
/// vendor-specific information.
pub const AGGREGATES: [u8; 7] = [4, 22, 23, 24, 25, 26, 43];

/// True when a top-level TLV of type `code` is decoded as sub-TLVs.
#[must_use]
pub fn is_aggregate(code: u8) -> bool {
    AGGREGATES.contains(&code)
}

/// One setting of the file, or one sub-TLV of an aggregate.
///
/// `Value` and `Unknown` both keep the value bytes as they were; they differ only in whether
/// the code table ([`codes`]) names the type, which is what the typed accessors and the text
/// form use. [`Tlv::leaf`] picks between them, and the decoder does the same, so a tree built
/// with it round-trips through bytes to an equal tree.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Tlv {
    /// A type the code table knows, kept as its value bytes.
    Value { code: u8, data: Vec<u8> },
    /// An aggregate: a top-level type from [`AGGREGATES`] holding sub-TLVs.
    Aggregate { code: u8, subs: Vec<Tlv> },
    /// A type the code table does not know, kept byte-exact.
    Unknown { code: u8, data: Vec<u8> },
}

impl Tlv {
    /// A leaf TLV under `parent` (`None` at the top level): [`Tlv::Value`] when the code table
    /// names the type there, else [`Tlv::Unknown`].
    #[must_use]
    pub fn leaf(parent: Option<u8>, code: u8, data: Vec<u8>) -> Tlv {
        if codes::lookup(Ctx::from_parent(parent), code).is_some() {
            Tlv::Value { code, data }
        } else {
            Tlv::Unknown { code, data }
        }
    }

    /// The type byte.
    #[must_use]
    pub fn code(&self) -> u8 {
        match self {
            Tlv::Value { code, .. } | Tlv::Aggregate { code, .. } | Tlv::Unknown { code, .. } => {
                *code
            }
        }
    }

    /// The value bytes of a leaf; `None` for an aggregate.
    #[must_use]
    pub fn data(&self) -> Option<&[u8]> {
        match self {
            Tlv::Value { data, .. } | Tlv::Unknown { data, .. } => Some(data),
            Tlv::Aggregate { .. } => None,
        }
    }

    /// The sub-TLVs of an aggregate; `None` for a leaf.
    #[must_use]
    pub fn subs(&self) -> Option<&[Tlv]> {
        match self {
            Tlv::Aggregate { subs, .. } => Some(subs),
            _ => None,
        }
    }

    /// Length of the whole encoded TLV (type, length and value bytes).
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        2 + match self {
            Tlv::Value { data, .. } | Tlv::Unknown { data, .. } => data.len(),
            Tlv::Aggregate { subs, .. } => subs.iter().map(Tlv::encoded_len).sum(),
        }
    }

    /// Appends the encoded TLV to `out`. `parent` is the enclosing aggregate's type (for error
    /// messages). A value or aggregate longer than 255 bytes is an error, never a truncation.
    ///
    /// # Errors
    /// [`EncodeError::ValueTooLong`] and [`EncodeError::AggregateTooLong`].
    pub fn encode_into(&self, parent: Option<u8>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Tlv::Value { code, data } | Tlv::Unknown { code, data } => {
                let len = u8::try_from(data.len()).map_err(|_| EncodeError::ValueTooLong {
                    path: TlvPath::new(parent, *code),
                    len: data.len(),
                })?;
                out.extend_from_slice(&[*code, len]);
                out.extend_from_slice(data);
            }
            Tlv::Aggregate { code, subs } => {
                let start = out.len();
                out.extend_from_slice(&[*code, 0]);
                for s in subs {
                    s.encode_into(Some(*code), out)?;
                }
                let len = out.len() - start - 2;
                let Ok(len8) = u8::try_from(len) else {
                    out.truncate(start);
                    return Err(EncodeError::AggregateTooLong {
                        path: TlvPath::new(parent, *code),
                        len,
                    });
                };
                out[start + 1] = len8;
            }
        }
        Ok(())
    }
}

/// Where a TLV sits: its type, under its parent's type when it is a sub-TLV. Displays as
/// `24` or `24.8`, the dotted form DOCSIS documents use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlvPath {
    /// The enclosing aggregate's type, `None` at the top level.
    pub parent: Option<u8>,
    /// The TLV's own type.
    pub code: u8,
}

impl TlvPath {
    /// The path of `code` under `parent`.
    #[must_use]
    pub fn new(parent: Option<u8>, code: u8) -> Self {
        TlvPath { parent, code }
    }
}

impl std::fmt::Display for TlvPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = codes::lookup(Ctx::from_parent(self.parent), self.code).map(|c| c.name);
        match self.parent {
            Some(p) => write!(f, "{p}.{}", self.code)?,
            None => write!(f, "{}", self.code)?,
        }
        match name {
            Some(n) => write!(f, " ({n})"),
            None => Ok(()),
        }
    }
}

/// A byte string that cannot be a DOCSIS configuration file; every variant gives the offset
/// (from the start of the file) where decoding stopped and what was found there.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum DecodeError {
    #[error("offset {offset}: TLV type {code} has no length byte (the file ends)")]
    MissingLength { offset: usize, code: u8 },
    #[error(
        "offset {offset}: TLV type {code} declares {len} value bytes but only {available} remain"
    )]
    Truncated {
        offset: usize,
        code: u8,
        len: usize,
        available: usize,
    },
    #[error("offset {offset}: sub-TLV {parent}.{code} has no length byte (the aggregate ends)")]
    SubMissingLength { offset: usize, parent: u8, code: u8 },
    #[error(
        "offset {offset}: sub-TLV {parent}.{code} declares {len} value bytes but only {available} remain in the aggregate"
    )]
    SubTruncated {
        offset: usize,
        parent: u8,
        code: u8,
        len: usize,
        available: usize,
    },
    #[error("offset {offset}: pad byte (type 0) before the end marker (type 255)")]
    PadBeforeEnd { offset: usize },
    #[error("no end-of-data marker (type 255) in {len} bytes")]
    MissingEnd { len: usize },
    #[error(
        "offset {offset}: byte {byte:#04x} after the end marker, where only 0x00 padding may follow"
    )]
    TrailingData { offset: usize, byte: u8 },
}

/// A tree that cannot be written as a DOCSIS file.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum EncodeError {
    #[error("TLV {path}: value of {len} bytes does not fit the one-byte length (max 255)")]
    ValueTooLong { path: TlvPath, len: usize },
    #[error(
        "TLV {path}: aggregate of {len} bytes does not fit the one-byte length (max 255); split it"
    )]
    AggregateTooLong { path: TlvPath, len: usize },
    #[error("TLV type {code} is reserved at the top level (0 pad, 255 end marker)")]
    ReservedType { code: u8 },
    #[error("TLV type {code} ({name}) is computed by the encoder; remove it from the settings")]
    Computed { code: u8, name: &'static str },
}

/// Position of one top-level TLV in the file bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The TLV's type.
    pub code: u8,
    /// Offset of the type byte.
    pub start: usize,
    /// Offset one past the last value byte.
    pub end: usize,
}

impl Span {
    /// The value bytes (without type and length) of this TLV in `bytes`.
    #[must_use]
    pub fn value<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.start + 2..self.end]
    }
}

/// The top-level structure of a file: every TLV's span, where the end marker is, and how many
/// pad bytes follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// The top-level TLVs in file order.
    pub spans: Vec<Span>,
    /// Offset of the end-of-data marker.
    pub end_offset: usize,
    /// Number of 0x00 bytes after the end marker.
    pub pad: usize,
}

/// Walks the top level of `bytes`: TLV headers and lengths, the end marker and the padding.
///
/// # Errors
/// [`DecodeError`] with the offset of the first byte that does not fit.
pub fn scan(bytes: &[u8]) -> Result<Scan, DecodeError> {
    let mut spans = Vec::new();
    let mut i = 0;
    loop {
        let Some(&code) = bytes.get(i) else {
            return Err(DecodeError::MissingEnd { len: bytes.len() });
        };
        match code {
            END => break,
            PAD => return Err(DecodeError::PadBeforeEnd { offset: i }),
            _ => {}
        }
        let Some(&len) = bytes.get(i + 1) else {
            return Err(DecodeError::MissingLength { offset: i, code });
        };
        let len = usize::from(len);
        let available = bytes.len() - i - 2;
        if len > available {
            return Err(DecodeError::Truncated {
                offset: i,
                code,
                len,
                available,
            });
        }
        spans.push(Span {
            code,
            start: i,
            end: i + 2 + len,
        });
        i += 2 + len;
    }
    let end_offset = i;
    if let Some(k) = bytes[i + 1..].iter().position(|&b| b != 0) {
        return Err(DecodeError::TrailingData {
            offset: i + 1 + k,
            byte: bytes[i + 1 + k],
        });
    }
    Ok(Scan {
        spans,
        end_offset,
        pad: bytes.len() - i - 1,
    })
}

/// Parses the value of aggregate `parent` (which starts at file offset `base`) into sub-TLVs.
fn decode_subs(parent: u8, value: &[u8], base: usize) -> Result<Vec<Tlv>, DecodeError> {
    let mut subs = Vec::new();
    let mut i = 0;
    while i < value.len() {
        let code = value[i];
        let Some(&len) = value.get(i + 1) else {
            return Err(DecodeError::SubMissingLength {
                offset: base + i,
                parent,
                code,
            });
        };
        let len = usize::from(len);
        let available = value.len() - i - 2;
        if len > available {
            return Err(DecodeError::SubTruncated {
                offset: base + i,
                parent,
                code,
                len,
                available,
            });
        }
        subs.push(Tlv::leaf(
            Some(parent),
            code,
            value[i + 2..i + 2 + len].to_vec(),
        ));
        i += 2 + len;
    }
    Ok(subs)
}

/// Builds the tree of one top-level TLV from its span.
///
/// # Errors
/// [`DecodeError::SubTruncated`]/[`DecodeError::SubMissingLength`] for a broken aggregate.
pub fn decode_span(bytes: &[u8], span: &Span) -> Result<Tlv, DecodeError> {
    let value = span.value(bytes);
    if is_aggregate(span.code) {
        Ok(Tlv::Aggregate {
            code: span.code,
            subs: decode_subs(span.code, value, span.start + 2)?,
        })
    } else {
        Ok(Tlv::leaf(None, span.code, value.to_vec()))
    }
}

/// A decoded configuration file: its settings (MIC TLVs included, as they appear) and the
/// number of pad bytes after the end marker, kept so that re-encoding is byte-exact.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigFile {
    /// Top-level TLVs in file order.
    pub tlvs: Vec<Tlv>,
    /// 0x00 bytes after the end marker (a canonical file has `(4 - len % 4) % 4`).
    pub pad: usize,
}

impl ConfigFile {
    /// Decodes a whole file: every top-level TLV, sub-TLVs of aggregates, end marker, padding.
    ///
    /// # Errors
    /// [`DecodeError`] naming the offset and what is wrong there.
    pub fn decode(bytes: &[u8]) -> Result<ConfigFile, DecodeError> {
        let scan = scan(bytes)?;
        let tlvs = scan
            .spans
            .iter()
            .map(|s| decode_span(bytes, s))
            .collect::<Result<_, _>>()?;
        Ok(ConfigFile {
            tlvs,
            pad: scan.pad,
        })
    }

    /// Encodes the TLVs as they are (MICs are not recomputed: see `build` for that), the end
    /// marker and `self.pad` zero bytes.
    ///
    /// # Errors
    /// [`EncodeError`] for an over-long value or aggregate, or a top-level type 0/255.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.tlvs.iter().map(Tlv::encoded_len).sum::<usize>() + 4);
        encode_top(&self.tlvs, &mut out, None)?;
        out.push(END);
        out.resize(out.len() + self.pad, 0);
        Ok(out)
    }

    /// The first top-level TLV of type `code`.
    #[must_use]
    pub fn find(&self, code: u8) -> Option<&Tlv> {
        self.tlvs.iter().find(|t| t.code() == code)
    }
}

/// Number of pad bytes after the end marker for a file of `len` bytes up to and including the
/// marker: `(4 - len % 4) % 4`, as rlaager/docsis writes (docs/PROTOCOLS.md §1).
#[must_use]
pub fn pad_len(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Encodes top-level TLVs, refusing types 0 and 255 (they would decode as pad/end), and
/// records each TLV's span in `spans` when given.
pub(crate) fn encode_top(
    tlvs: &[Tlv],
    out: &mut Vec<u8>,
    mut spans: Option<&mut Vec<Span>>,
) -> Result<(), EncodeError> {
    for t in tlvs {
        let code = t.code();
        if code == PAD || code == END {
            return Err(EncodeError::ReservedType { code });
        }
        let start = out.len();
        t.encode_into(None, out)?;
        if let Some(s) = spans.as_deref_mut() {
            s.push(Span {
                code,
                start,
                end: out.len(),
            });
        }
    }
    Ok(())
}
