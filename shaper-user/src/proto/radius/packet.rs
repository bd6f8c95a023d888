//! RADIUS packet codec (RFC 2865 §3 header, §5 attributes, §5.26 Vendor-Specific).
//!
//! A [`Packet`] holds what is on the wire, minus the shared secret (docs/ARCHITECTURE.md §7: the
//! secret is an argument of the functions that sign and verify, never a field). Attributes outside
//! Vendor-Specific are kept as raw `(type, value)` pairs, so an attribute this code does not
//! know re-encodes byte for byte. A Vendor-Specific attribute is split into sub-attributes when
//! its body follows the RFC 2865 §5.26 recommended format (vendor id, then `type, length,
//! value` triples that fill it exactly); otherwise it stays raw.

use std::net::Ipv4Addr;

use super::dict;

/// RFC 2865 §3: the smallest packet is the 20-byte header.
pub const HEADER_LEN: usize = 20;
/// RFC 2865 §3: "The maximum length is 4096."
pub const MAX_PACKET_LEN: usize = 4096;
/// RFC 2865 §5: an attribute value holds at most 253 octets.
pub const MAX_VALUE_LEN: usize = 253;
/// Offset of the 16-byte authenticator in the header.
pub const AUTH_OFFSET: usize = 4;

/// Packet codes (RFC 2865 §3, RFC 2866 §3, RFC 5176 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    AccessRequest,
    AccessAccept,
    AccessReject,
    /// RFC 2866 §4.1.
    AccountingRequest,
    /// RFC 2866 §4.2.
    AccountingResponse,
    AccessChallenge,
    /// RFC 5997.
    StatusServer,
    /// RFC 5176 §3: 40.
    DisconnectRequest,
    DisconnectAck,
    DisconnectNak,
    /// RFC 5176 §3: 43.
    CoaRequest,
    CoaAck,
    CoaNak,
    /// Any other code, kept so the packet still round-trips.
    Other(u8),
}

impl Code {
    /// The code octet.
    #[must_use]
    pub fn to_u8(self) -> u8 {
        match self {
            Code::AccessRequest => 1,
            Code::AccessAccept => 2,
            Code::AccessReject => 3,
            Code::AccountingRequest => 4,
            Code::AccountingResponse => 5,
            Code::AccessChallenge => 11,
            Code::StatusServer => 12,
            Code::DisconnectRequest => 40,
            Code::DisconnectAck => 41,
            Code::DisconnectNak => 42,
            Code::CoaRequest => 43,
            Code::CoaAck => 44,
            Code::CoaNak => 45,
            Code::Other(c) => c,
        }
    }

    /// The code for an octet (never fails: unknown codes are [`Code::Other`]).
    #[must_use]
    pub fn from_u8(c: u8) -> Code {
        match c {
            1 => Code::AccessRequest,
            2 => Code::AccessAccept,
            3 => Code::AccessReject,
            4 => Code::AccountingRequest,
            5 => Code::AccountingResponse,
            11 => Code::AccessChallenge,
            12 => Code::StatusServer,
            40 => Code::DisconnectRequest,
            41 => Code::DisconnectAck,
            42 => Code::DisconnectNak,
            43 => Code::CoaRequest,
            44 => Code::CoaAck,
            45 => Code::CoaNak,
            c => Code::Other(c),
        }
    }

    /// Requests whose authenticator is `MD5(header | 16 zero octets | attributes | secret)`:
    /// Accounting-Request (RFC 2866 §3), CoA- and Disconnect-Request (RFC 5176 §2.3).
    #[must_use]
    pub fn has_computed_request_authenticator(self) -> bool {
        matches!(
            self,
            Code::AccountingRequest | Code::CoaRequest | Code::DisconnectRequest
        )
    }

    /// Responses, whose authenticator is `MD5(header | request authenticator | attributes |
    /// secret)` (RFC 2865 §3, RFC 2866 §4.2, RFC 5176 §3).
    #[must_use]
    pub fn is_response(self) -> bool {
        matches!(
            self,
            Code::AccessAccept
                | Code::AccessReject
                | Code::AccessChallenge
                | Code::AccountingResponse
                | Code::DisconnectAck
                | Code::DisconnectNak
                | Code::CoaAck
                | Code::CoaNak
        )
    }
}

/// One sub-attribute of a Vendor-Specific attribute (RFC 2865 §5.26 recommended format).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubAttribute {
    pub typ: u8,
    pub value: Vec<u8>,
}

/// One attribute (RFC 2865 §5).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// Any attribute, value verbatim. Also a Vendor-Specific whose body is not in the
    /// recommended format.
    Raw { typ: u8, value: Vec<u8> },
    /// Vendor-Specific (26) in the recommended format.
    Vendor {
        vendor: u32,
        subs: Vec<SubAttribute>,
    },
}

impl Attribute {
    /// The attribute type octet.
    #[must_use]
    pub fn typ(&self) -> u8 {
        match self {
            Attribute::Raw { typ, .. } => *typ,
            Attribute::Vendor { .. } => dict::VENDOR_SPECIFIC,
        }
    }

    fn encoded_value_len(&self) -> usize {
        match self {
            Attribute::Raw { value, .. } => value.len(),
            Attribute::Vendor { subs, .. } => {
                4 + subs.iter().map(|s| 2 + s.value.len()).sum::<usize>()
            }
        }
    }
}

/// Why bytes are not a RADIUS packet. RFC 2865 §3 says such packets are silently discarded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("{len} bytes is shorter than the 20-byte RADIUS header")]
    TooShort { len: usize },
    #[error("length field {field} is outside 20..=4096")]
    LengthOutOfRange { field: usize },
    #[error("length field {field} exceeds the {received} bytes received")]
    Truncated { field: usize, received: usize },
    #[error("attribute at offset {offset}: header runs past the packet end")]
    AttributeHeaderTruncated { offset: usize },
    #[error("attribute type {typ} at offset {offset}: length {len} is below 2")]
    AttributeLengthTooSmall { typ: u8, offset: usize, len: usize },
    #[error("attribute type {typ} at offset {offset}: length {len} runs past the packet end")]
    AttributeOverrun { typ: u8, offset: usize, len: usize },
}

/// Why a packet cannot be put on the wire.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    #[error("attribute type {typ}: value of {len} bytes exceeds 253")]
    AttributeTooLong { typ: u8, len: usize },
    #[error("vendor {vendor}: Vendor-Specific body of {len} bytes exceeds 253")]
    VendorAttributeTooLong { vendor: u32, len: usize },
    #[error("packet of {len} bytes exceeds 4096")]
    PacketTooLong { len: usize },
    #[error("Message-Authenticator must be 16 bytes, found {len}")]
    MessageAuthenticatorLength { len: usize },
    #[error("more than one Message-Authenticator")]
    DuplicateMessageAuthenticator,
    #[error("{0:?} cannot be signed this way (request signer given a response or vice versa)")]
    WrongKind(Code),
}

/// A value that does not have the shape its attribute's type requires.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ValueError {
    #[error("attribute {typ}: {len} bytes, expected {expected}")]
    Length {
        typ: u8,
        len: usize,
        expected: usize,
    },
    #[error("attribute {typ}: text is not UTF-8")]
    Utf8 { typ: u8 },
    #[error("attribute {typ}: IPv6 prefix length {bits} exceeds 128 or the value")]
    PrefixLength { typ: u8, bits: u8 },
}

/// A RADIUS packet without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Packet {
    pub code: Code,
    pub identifier: u8,
    /// Request or Response Authenticator as on the wire; filled in by the `encode_*` signers.
    pub authenticator: [u8; 16],
    pub attributes: Vec<Attribute>,
}

fn parse_vsa(value: &[u8]) -> Option<Attribute> {
    if value.len() < 4 {
        return None;
    }
    let vendor = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
    // RFC 2865 §5.26: the high-order octet of the Vendor-Id is 0.
    if vendor >> 24 != 0 {
        return None;
    }
    let mut subs = Vec::new();
    let mut rest = &value[4..];
    while !rest.is_empty() {
        if rest.len() < 2 {
            return None;
        }
        let len = usize::from(rest[1]);
        if len < 2 || len > rest.len() {
            return None;
        }
        subs.push(SubAttribute {
            typ: rest[0],
            value: rest[2..len].to_vec(),
        });
        rest = &rest[len..];
    }
    Some(Attribute::Vendor { vendor, subs })
}

impl Packet {
    /// A packet with no attributes and a zero authenticator.
    #[must_use]
    pub fn new(code: Code, identifier: u8) -> Packet {
        Packet {
            code,
            identifier,
            authenticator: [0; 16],
            attributes: Vec::new(),
        }
    }

    /// Parses one packet (RFC 2865 §3). Octets beyond the Length field are padding and are
    /// ignored, as §3 requires; a Length larger than what arrived is an error.
    pub fn decode(buf: &[u8]) -> Result<Packet, DecodeError> {
        let body = packet_bytes(buf)?;
        let mut attributes = Vec::new();
        let mut off = HEADER_LEN;
        while off < body.len() {
            if off + 2 > body.len() {
                return Err(DecodeError::AttributeHeaderTruncated { offset: off });
            }
            let typ = body[off];
            let len = usize::from(body[off + 1]);
            if len < 2 {
                return Err(DecodeError::AttributeLengthTooSmall {
                    typ,
                    offset: off,
                    len,
                });
            }
            if off + len > body.len() {
                return Err(DecodeError::AttributeOverrun {
                    typ,
                    offset: off,
                    len,
                });
            }
            let value = &body[off + 2..off + len];
            let attr = if typ == dict::VENDOR_SPECIFIC {
                parse_vsa(value)
            } else {
                None
            };
            attributes.push(attr.unwrap_or_else(|| Attribute::Raw {
                typ,
                value: value.to_vec(),
            }));
            off += len;
        }
        let mut authenticator = [0; 16];
        authenticator.copy_from_slice(&body[AUTH_OFFSET..HEADER_LEN]);
        Ok(Packet {
            code: Code::from_u8(body[0]),
            identifier: body[1],
            authenticator,
            attributes,
        })
    }

    /// Serialises the packet with [`Packet::authenticator`] as it stands (no signing).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(HEADER_LEN + 64);
        out.push(self.code.to_u8());
        out.push(self.identifier);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.authenticator);
        for a in &self.attributes {
            let len = a.encoded_value_len();
            match a {
                Attribute::Raw { typ, value } => {
                    if len > MAX_VALUE_LEN {
                        return Err(EncodeError::AttributeTooLong { typ: *typ, len });
                    }
                    out.push(*typ);
                    out.push(u8::try_from(len + 2).expect("checked above"));
                    out.extend_from_slice(value);
                }
                Attribute::Vendor { vendor, subs } => {
                    if len > MAX_VALUE_LEN {
                        return Err(EncodeError::VendorAttributeTooLong {
                            vendor: *vendor,
                            len,
                        });
                    }
                    out.push(dict::VENDOR_SPECIFIC);
                    out.push(u8::try_from(len + 2).expect("checked above"));
                    out.extend_from_slice(&vendor.to_be_bytes());
                    for s in subs {
                        out.push(s.typ);
                        out.push(u8::try_from(s.value.len() + 2).expect("bounded by len"));
                        out.extend_from_slice(&s.value);
                    }
                }
            }
        }
        if out.len() > MAX_PACKET_LEN {
            return Err(EncodeError::PacketTooLong { len: out.len() });
        }
        let len = u16::try_from(out.len()).expect("checked above");
        out[2..4].copy_from_slice(&len.to_be_bytes());
        Ok(out)
    }

    // ---- attribute access ------------------------------------------------------------------

    /// The first raw attribute of type `typ`.
    #[must_use]
    pub fn get(&self, typ: u8) -> Option<&[u8]> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Raw { typ: t, value } if *t == typ => Some(value.as_slice()),
            _ => None,
        })
    }

    /// Every raw attribute of type `typ`, in order.
    pub fn get_all(&self, typ: u8) -> impl Iterator<Item = &[u8]> {
        self.attributes.iter().filter_map(move |a| match a {
            Attribute::Raw { typ: t, value } if *t == typ => Some(value.as_slice()),
            _ => None,
        })
    }

    /// Every value of vendor sub-attribute `(vendor, typ)`, in order.
    pub fn vendor_values(&self, (vendor, typ): (u32, u8)) -> impl Iterator<Item = &[u8]> {
        self.attributes
            .iter()
            .filter_map(move |a| match a {
                Attribute::Vendor { vendor: v, subs } if *v == vendor => Some(subs),
                _ => None,
            })
            .flatten()
            .filter(move |s| s.typ == typ)
            .map(|s| s.value.as_slice())
    }

    /// The first value of `typ` as UTF-8 text (RFC 8044 §3.4).
    pub fn text(&self, typ: u8) -> Result<Option<&str>, ValueError> {
        self.get(typ)
            .map(|v| std::str::from_utf8(v).map_err(|_| ValueError::Utf8 { typ }))
            .transpose()
    }

    /// The first value of `typ` as a 32-bit integer (RFC 8044 §3.1).
    pub fn integer(&self, typ: u8) -> Result<Option<u32>, ValueError> {
        self.get(typ).map(|v| integer(typ, v)).transpose()
    }

    /// The first value of `typ` as an IPv4 address (RFC 8044 §3.8).
    pub fn ipv4(&self, typ: u8) -> Result<Option<Ipv4Addr>, ValueError> {
        self.get(typ)
            .map(|v| {
                <[u8; 4]>::try_from(v)
                    .map(Ipv4Addr::from)
                    .map_err(|_| ValueError::Length {
                        typ,
                        len: v.len(),
                        expected: 4,
                    })
            })
            .transpose()
    }

    /// The first value of `typ` as an IPv6 prefix (RFC 3162 §2.3): `(address, length)`, bits
    /// beyond the length zeroed.
    pub fn ipv6_prefix(&self, typ: u8) -> Result<Option<(std::net::Ipv6Addr, u8)>, ValueError> {
        self.get(typ).map(|v| ipv6_prefix(typ, v)).transpose()
    }

    /// Appends a raw attribute.
    pub fn push(&mut self, typ: u8, value: impl Into<Vec<u8>>) {
        self.attributes.push(Attribute::Raw {
            typ,
            value: value.into(),
        });
    }

    /// Appends a 32-bit integer attribute.
    pub fn push_integer(&mut self, typ: u8, v: u32) {
        self.push(typ, v.to_be_bytes());
    }

    /// Appends an IPv6 prefix attribute (RFC 3162 §2.3: only the octets the length covers).
    pub fn push_ipv6_prefix(&mut self, typ: u8, addr: std::net::Ipv6Addr, len: u8) {
        let len = len.min(128);
        let n = usize::from(len).div_ceil(8);
        let mut v = vec![0, len];
        v.extend_from_slice(&addr.octets()[..n]);
        self.push(typ, v);
    }

    /// Appends a Vendor-Specific attribute holding one sub-attribute.
    pub fn push_vendor(&mut self, (vendor, typ): (u32, u8), value: impl Into<Vec<u8>>) {
        self.attributes.push(Attribute::Vendor {
            vendor,
            subs: vec![SubAttribute {
                typ,
                value: value.into(),
            }],
        });
    }

    /// Puts a zeroed Message-Authenticator first (RFC 3579 §3.2; first, as RFC 9765 and the
    /// BlastRADIUS advisories recommend), unless one is present. The signers fill it in.
    pub fn add_message_authenticator(&mut self) {
        if self.get(dict::MESSAGE_AUTHENTICATOR).is_none() {
            self.attributes.insert(
                0,
                Attribute::Raw {
                    typ: dict::MESSAGE_AUTHENTICATOR,
                    value: vec![0; 16],
                },
            );
        }
    }
}

/// A 32-bit integer value (RFC 8044 §3.1).
pub fn integer(typ: u8, v: &[u8]) -> Result<u32, ValueError> {
    <[u8; 4]>::try_from(v)
        .map(u32::from_be_bytes)
        .map_err(|_| ValueError::Length {
            typ,
            len: v.len(),
            expected: 4,
        })
}

/// An IPv6 prefix value (RFC 3162 §2.3): reserved octet, length, up to 16 prefix octets.
pub fn ipv6_prefix(typ: u8, v: &[u8]) -> Result<(std::net::Ipv6Addr, u8), ValueError> {
    if v.len() < 2 || v.len() > 18 {
        return Err(ValueError::Length {
            typ,
            len: v.len(),
            expected: 18,
        });
    }
    let bits = v[1];
    if bits > 128 || usize::from(bits).div_ceil(8) > v.len() - 2 {
        return Err(ValueError::PrefixLength { typ, bits });
    }
    let mut o = [0u8; 16];
    o[..v.len() - 2].copy_from_slice(&v[2..]);
    let mask = if bits == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(bits))
    };
    Ok((
        std::net::Ipv6Addr::from(u128::from_be_bytes(o) & mask),
        bits,
    ))
}

/// The packet's own bytes: `buf` cut at its Length field, checked (RFC 2865 §3).
pub fn packet_bytes(buf: &[u8]) -> Result<&[u8], DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::TooShort { len: buf.len() });
    }
    let field = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if !(HEADER_LEN..=MAX_PACKET_LEN).contains(&field) {
        return Err(DecodeError::LengthOutOfRange { field });
    }
    if field > buf.len() {
        return Err(DecodeError::Truncated {
            field,
            received: buf.len(),
        });
    }
    Ok(&buf[..field])
}
