//! TFTP packet codec: RFC 1350 §5 (RRQ, WRQ, DATA, ACK, ERROR) and RFC 2347 §2-3 (request
//! options, OACK).
//!
//! Parsing borrows from the datagram and is exact: every packet that parses encodes back to the
//! same bytes (option names keep their case and order, unknown error codes keep their number),
//! which the `tftp_packet` fuzz target checks. Anything else is a [`ParseError`] that names the
//! field that was wrong.

use std::fmt;

/// Largest request (RRQ/WRQ with options) a server has to accept: RFC 2347 §2 ("the request
/// packet must not exceed 512 octets").
pub const MAX_REQUEST_LEN: usize = 512;

/// Largest block size RFC 2348 §3 allows (65464 = 65535 - 20 IP - 8 UDP - 4 TFTP, minus 39 for
/// safety in the RFC's own words), and the smallest.
pub const MAX_BLKSIZE: u16 = 65464;
/// Smallest block size RFC 2348 §3 allows.
pub const MIN_BLKSIZE: u16 = 8;
/// Block size without the `blksize` option (RFC 1350 §2).
pub const DEFAULT_BLKSIZE: u16 = 512;

/// Opcodes of RFC 1350 §5 and RFC 2347 §3 (OACK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Opcode {
    /// Read request.
    Rrq = 1,
    /// Write request.
    Wrq = 2,
    /// Data block.
    Data = 3,
    /// Acknowledgment.
    Ack = 4,
    /// Error.
    Error = 5,
    /// Option acknowledgment (RFC 2347 §3).
    Oack = 6,
}

/// TFTP error codes (RFC 1350 appendix "Error Codes", RFC 2347 §5 for code 8).
///
/// Codes outside the table are kept as [`ErrorCode::Other`] so a round trip is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: not defined, see the message.
    NotDefined,
    /// 1: file not found.
    FileNotFound,
    /// 2: access violation.
    AccessViolation,
    /// 3: disk full or allocation exceeded.
    DiskFull,
    /// 4: illegal TFTP operation.
    IllegalOperation,
    /// 5: unknown transfer ID.
    UnknownTid,
    /// 6: file already exists.
    FileExists,
    /// 7: no such user.
    NoSuchUser,
    /// 8: option negotiation refused (RFC 2347 §5).
    OptionRefused,
    /// Any other code.
    Other(u16),
}

impl ErrorCode {
    /// The code as sent on the wire.
    #[must_use]
    pub fn to_u16(self) -> u16 {
        match self {
            Self::NotDefined => 0,
            Self::FileNotFound => 1,
            Self::AccessViolation => 2,
            Self::DiskFull => 3,
            Self::IllegalOperation => 4,
            Self::UnknownTid => 5,
            Self::FileExists => 6,
            Self::NoSuchUser => 7,
            Self::OptionRefused => 8,
            Self::Other(c) => c,
        }
    }

    /// The code for a wire value.
    #[must_use]
    pub fn from_u16(code: u16) -> Self {
        match code {
            0 => Self::NotDefined,
            1 => Self::FileNotFound,
            2 => Self::AccessViolation,
            3 => Self::DiskFull,
            4 => Self::IllegalOperation,
            5 => Self::UnknownTid,
            6 => Self::FileExists,
            7 => Self::NoSuchUser,
            8 => Self::OptionRefused,
            c => Self::Other(c),
        }
    }
}

/// Transfer modes of RFC 1350 §1 (compared case-insensitively).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `netascii`: 8-bit ASCII with CR LF line ends (RFC 764); see [`super::netascii_encode`].
    NetAscii,
    /// `octet`: raw bytes.
    Octet,
    /// `mail`: obsolete, refused by this server.
    Mail,
}

/// One `name\0value\0` pair of RFC 2347 §2, as sent (case and order kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TftpOption<'a> {
    /// Option name (case-insensitive by RFC 2347 §2, kept as sent).
    pub name: &'a str,
    /// Option value.
    pub value: &'a str,
}

/// A read or write request (RFC 1350 §5 figure 5-1, RFC 2347 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// Requested file name, as sent.
    pub filename: &'a str,
    /// Transfer mode string, as sent; [`Request::mode`] interprets it.
    pub mode: &'a str,
    /// Options in the order sent.
    pub options: Vec<TftpOption<'a>>,
}

impl Request<'_> {
    /// The transfer mode, or `None` for a mode RFC 1350 does not define.
    #[must_use]
    pub fn mode(&self) -> Option<Mode> {
        if self.mode.eq_ignore_ascii_case("octet") {
            Some(Mode::Octet)
        } else if self.mode.eq_ignore_ascii_case("netascii") {
            Some(Mode::NetAscii)
        } else if self.mode.eq_ignore_ascii_case("mail") {
            Some(Mode::Mail)
        } else {
            None
        }
    }
}

/// A TFTP packet borrowing from its datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Read request (opcode 1).
    Rrq(Request<'a>),
    /// Write request (opcode 2).
    Wrq(Request<'a>),
    /// Data block (opcode 3): 0 to blksize bytes; a short block ends the transfer.
    Data {
        /// Block number (wraps past 65535).
        block: u16,
        /// Payload.
        data: &'a [u8],
    },
    /// Acknowledgment (opcode 4).
    Ack {
        /// Acknowledged block number.
        block: u16,
    },
    /// Error (opcode 5); not acknowledged and ends the transfer (RFC 1350 §7).
    Error {
        /// Error code.
        code: ErrorCode,
        /// Message, without its NUL.
        message: &'a str,
    },
    /// Option acknowledgment (opcode 6, RFC 2347 §3).
    Oack {
        /// Accepted options.
        options: Vec<TftpOption<'a>>,
    },
}

/// Which string field of a packet a [`ParseError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Request file name.
    Filename,
    /// Request mode.
    Mode,
    /// Option name.
    OptionName,
    /// Option value.
    OptionValue,
    /// ERROR message.
    ErrorMessage,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Filename => "file name",
            Self::Mode => "mode",
            Self::OptionName => "option name",
            Self::OptionValue => "option value",
            Self::ErrorMessage => "error message",
        })
    }
}

/// Why a datagram is not a TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer than the 2 opcode bytes, or a DATA/ACK/ERROR without its 2-byte number.
    #[error("{len}-byte datagram is too short for a TFTP {what}")]
    TooShort {
        /// Datagram length.
        len: usize,
        /// What was expected.
        what: &'static str,
    },
    /// Opcode outside 1..=6.
    #[error("unknown TFTP opcode {opcode}")]
    UnknownOpcode {
        /// The opcode received.
        opcode: u16,
    },
    /// A request longer than RFC 2347 §2 allows.
    #[error("{len}-byte request exceeds the {MAX_REQUEST_LEN}-byte limit of RFC 2347")]
    RequestTooLong {
        /// Datagram length.
        len: usize,
    },
    /// A string field without its terminating NUL.
    #[error("{field} is not NUL-terminated")]
    Unterminated {
        /// The field.
        field: Field,
    },
    /// A string field that is not UTF-8 (netascii is a subset).
    #[error("{field} is not valid UTF-8/netascii")]
    NotUtf8 {
        /// The field.
        field: Field,
    },
    /// An empty file name, mode or option name.
    #[error("{field} is empty")]
    Empty {
        /// The field.
        field: Field,
    },
    /// An option name with no value after it (RFC 2347 §2 pairs).
    #[error("option {name:?} has no value")]
    OptionWithoutValue {
        /// The option name.
        name: String,
    },
    /// An ACK that is not exactly 4 bytes (RFC 1350 §5 figure 5-3).
    #[error("ACK is {len} bytes, not 4")]
    AckLength {
        /// Datagram length.
        len: usize,
    },
    /// DATA with more than [`MAX_BLKSIZE`] bytes of payload.
    #[error("DATA carries {len} bytes, more than the RFC 2348 maximum {MAX_BLKSIZE}")]
    DataTooLong {
        /// Payload length.
        len: usize,
    },
    /// Bytes after the NUL that ends an ERROR message.
    #[error("{extra} bytes after the ERROR message")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

fn cstr(buf: &[u8], field: Field) -> Result<(&str, &[u8]), ParseError> {
    let nul = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(ParseError::Unterminated { field })?;
    let s = std::str::from_utf8(&buf[..nul]).map_err(|_| ParseError::NotUtf8 { field })?;
    Ok((s, &buf[nul + 1..]))
}

fn nonempty(s: &str, field: Field) -> Result<&str, ParseError> {
    if s.is_empty() {
        Err(ParseError::Empty { field })
    } else {
        Ok(s)
    }
}

fn parse_options(mut rest: &[u8]) -> Result<Vec<TftpOption<'_>>, ParseError> {
    let mut options = Vec::new();
    while !rest.is_empty() {
        let (name, after) = cstr(rest, Field::OptionName)?;
        let name = nonempty(name, Field::OptionName)?;
        if after.is_empty() {
            return Err(ParseError::OptionWithoutValue { name: name.into() });
        }
        let (value, after) = cstr(after, Field::OptionValue)?;
        options.push(TftpOption { name, value });
        rest = after;
    }
    Ok(options)
}

fn parse_request(buf: &[u8]) -> Result<Request<'_>, ParseError> {
    if buf.len() > MAX_REQUEST_LEN {
        return Err(ParseError::RequestTooLong { len: buf.len() });
    }
    let (filename, rest) = cstr(&buf[2..], Field::Filename)?;
    let filename = nonempty(filename, Field::Filename)?;
    let (mode, rest) = cstr(rest, Field::Mode)?;
    let mode = nonempty(mode, Field::Mode)?;
    Ok(Request {
        filename,
        mode,
        options: parse_options(rest)?,
    })
}

fn number(buf: &[u8], what: &'static str) -> Result<u16, ParseError> {
    if buf.len() < 4 {
        return Err(ParseError::TooShort {
            len: buf.len(),
            what,
        });
    }
    Ok(u16::from_be_bytes([buf[2], buf[3]]))
}

impl<'a> Packet<'a> {
    /// Parses one datagram.
    ///
    /// # Errors
    /// A [`ParseError`] naming the first rule of RFC 1350 §5 / RFC 2347 the datagram breaks.
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < 2 {
            return Err(ParseError::TooShort {
                len: buf.len(),
                what: "opcode",
            });
        }
        match u16::from_be_bytes([buf[0], buf[1]]) {
            1 => Ok(Self::Rrq(parse_request(buf)?)),
            2 => Ok(Self::Wrq(parse_request(buf)?)),
            3 => {
                let block = number(buf, "DATA")?;
                let data = &buf[4..];
                if data.len() > usize::from(MAX_BLKSIZE) {
                    return Err(ParseError::DataTooLong { len: data.len() });
                }
                Ok(Self::Data { block, data })
            }
            4 => {
                if buf.len() != 4 {
                    return Err(ParseError::AckLength { len: buf.len() });
                }
                Ok(Self::Ack {
                    block: number(buf, "ACK")?,
                })
            }
            5 => {
                let code = ErrorCode::from_u16(number(buf, "ERROR")?);
                let (message, rest) = cstr(&buf[4..], Field::ErrorMessage)?;
                if !rest.is_empty() {
                    return Err(ParseError::TrailingBytes { extra: rest.len() });
                }
                Ok(Self::Error { code, message })
            }
            6 => Ok(Self::Oack {
                options: parse_options(&buf[2..])?,
            }),
            opcode => Err(ParseError::UnknownOpcode { opcode }),
        }
    }

    /// Appends the wire form of the packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Rrq(r) => encode_request(Opcode::Rrq, r, out),
            Self::Wrq(r) => encode_request(Opcode::Wrq, r, out),
            Self::Data { block, data } => {
                out.extend_from_slice(&(Opcode::Data as u16).to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
                out.extend_from_slice(data);
            }
            Self::Ack { block } => {
                out.extend_from_slice(&(Opcode::Ack as u16).to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Self::Error { code, message } => {
                encode_error(*code, message, usize::MAX, out);
            }
            Self::Oack { options } => {
                out.extend_from_slice(&(Opcode::Oack as u16).to_be_bytes());
                encode_options(options, out);
            }
        }
    }
}

fn encode_options(options: &[TftpOption<'_>], out: &mut Vec<u8>) {
    for o in options {
        out.extend_from_slice(o.name.as_bytes());
        out.push(0);
        out.extend_from_slice(o.value.as_bytes());
        out.push(0);
    }
}

fn encode_request(op: Opcode, r: &Request<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&(op as u16).to_be_bytes());
    out.extend_from_slice(r.filename.as_bytes());
    out.push(0);
    out.extend_from_slice(r.mode.as_bytes());
    out.push(0);
    encode_options(&r.options, out);
}

/// Appends an ERROR packet of at most `budget` bytes (never less than the 5 bytes of an empty
/// message), cutting the message at a character boundary.
///
/// Replies to unverified peers use the request's own length as the budget, so an error is never
/// larger than what provoked it (no amplification; see the module docs of `proto::tftp`).
pub fn encode_error(code: ErrorCode, message: &str, budget: usize, out: &mut Vec<u8>) {
    let room = budget.saturating_sub(5);
    let mut cut = message.len().min(room);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    out.extend_from_slice(&(Opcode::Error as u16).to_be_bytes());
    out.extend_from_slice(&code.to_u16().to_be_bytes());
    // A NUL inside the message would end it early on the wire; drop such bytes.
    out.extend(message[..cut].bytes().filter(|&b| b != 0));
    out.push(0);
}

/// Appends the 4-byte DATA header (RFC 1350 §5 figure 5-2); the caller appends the payload.
pub fn encode_data_header(block: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&(Opcode::Data as u16).to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(bytes: &[u8]) -> Packet<'_> {
        let p = Packet::parse(bytes).unwrap();
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(out, bytes, "{p:?}");
        p
    }

    #[test]
    fn rrq_without_options() {
        let p = roundtrip(b"\x00\x01cm-0011.cfg\x00octet\x00");
        let Packet::Rrq(r) = p else { panic!("{p:?}") };
        assert_eq!(r.filename, "cm-0011.cfg");
        assert_eq!(r.mode(), Some(Mode::Octet));
        assert!(r.options.is_empty());
    }

    #[test]
    fn rrq_with_options_keeps_case_and_order() {
        // What curl 7.88 sends (docs/PROTOCOLS.md §2).
        let p =
            roundtrip(b"\x00\x01f\x00OCTET\x00tsize\x000\x00blksize\x001428\x00TimeOut\x006\x00");
        let Packet::Rrq(r) = p else { panic!("{p:?}") };
        assert_eq!(r.mode(), Some(Mode::Octet));
        let names: Vec<_> = r.options.iter().map(|o| (o.name, o.value)).collect();
        assert_eq!(
            names,
            [("tsize", "0"), ("blksize", "1428"), ("TimeOut", "6")]
        );
    }

    #[test]
    fn modes() {
        for (m, want) in [
            ("netascii", Some(Mode::NetAscii)),
            ("NetAscii", Some(Mode::NetAscii)),
            ("octet", Some(Mode::Octet)),
            ("mail", Some(Mode::Mail)),
            ("binary", None),
        ] {
            let r = Request {
                filename: "f",
                mode: m,
                options: vec![],
            };
            assert_eq!(r.mode(), want, "{m}");
        }
    }

    #[test]
    fn wrq_data_ack_error_oack() {
        assert!(matches!(
            roundtrip(b"\x00\x02up\x00octet\x00"),
            Packet::Wrq(_)
        ));
        assert_eq!(
            roundtrip(b"\x00\x03\xff\xfeabc"),
            Packet::Data {
                block: 0xfffe,
                data: b"abc"
            }
        );
        assert_eq!(
            roundtrip(b"\x00\x03\x00\x01"),
            Packet::Data {
                block: 1,
                data: b""
            }
        );
        assert_eq!(
            roundtrip(b"\x00\x04\x01\x02"),
            Packet::Ack { block: 0x0102 }
        );
        assert_eq!(
            roundtrip(b"\x00\x05\x00\x08bad\x00"),
            Packet::Error {
                code: ErrorCode::OptionRefused,
                message: "bad"
            }
        );
        assert_eq!(
            roundtrip(b"\x00\x05\x01\x00\x00"),
            Packet::Error {
                code: ErrorCode::Other(256),
                message: ""
            }
        );
        let p = roundtrip(b"\x00\x06blksize\x001428\x00");
        assert_eq!(
            p,
            Packet::Oack {
                options: vec![TftpOption {
                    name: "blksize",
                    value: "1428"
                }]
            }
        );
    }

    #[test]
    fn error_codes_round_trip() {
        for c in 0..=9u16 {
            assert_eq!(ErrorCode::from_u16(c).to_u16(), c);
        }
    }

    #[test]
    fn precise_parse_errors() {
        let cases: &[(&[u8], ParseError)] = &[
            (
                b"\x00",
                ParseError::TooShort {
                    len: 1,
                    what: "opcode",
                },
            ),
            (b"\x00\x09", ParseError::UnknownOpcode { opcode: 9 }),
            (b"\x00\x00", ParseError::UnknownOpcode { opcode: 0 }),
            (
                b"\x00\x01file",
                ParseError::Unterminated {
                    field: Field::Filename,
                },
            ),
            (
                b"\x00\x01\x00octet\x00",
                ParseError::Empty {
                    field: Field::Filename,
                },
            ),
            (
                b"\x00\x01f\x00octet",
                ParseError::Unterminated { field: Field::Mode },
            ),
            (
                b"\x00\x01f\x00\x00",
                ParseError::Empty { field: Field::Mode },
            ),
            (
                b"\x00\x01f\xff\x00octet\x00",
                ParseError::NotUtf8 {
                    field: Field::Filename,
                },
            ),
            (
                b"\x00\x01f\x00octet\x00blksize\x00",
                ParseError::OptionWithoutValue {
                    name: "blksize".into(),
                },
            ),
            (
                b"\x00\x01f\x00octet\x00blksize\x00512",
                ParseError::Unterminated {
                    field: Field::OptionValue,
                },
            ),
            (
                b"\x00\x01f\x00octet\x00\x00\x00",
                ParseError::Empty {
                    field: Field::OptionName,
                },
            ),
            (b"\x00\x04\x00", ParseError::AckLength { len: 3 }),
            (b"\x00\x04\x00\x01\x00", ParseError::AckLength { len: 5 }),
            (
                b"\x00\x03\x00",
                ParseError::TooShort {
                    len: 3,
                    what: "DATA",
                },
            ),
            (
                b"\x00\x05\x00\x01oops",
                ParseError::Unterminated {
                    field: Field::ErrorMessage,
                },
            ),
            (
                b"\x00\x05\x00\x01oops\x00x",
                ParseError::TrailingBytes { extra: 1 },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(Packet::parse(bytes).unwrap_err(), *want, "{bytes:?}");
        }
    }

    #[test]
    fn request_limit_is_512_bytes() {
        let mut ok = b"\x00\x01".to_vec();
        ok.extend(std::iter::repeat_n(b'a', 512 - 2 - 1 - 6));
        ok.extend_from_slice(b"\x00octet\x00");
        assert_eq!(ok.len(), 512);
        assert!(Packet::parse(&ok).is_ok());
        let mut long = b"\x00\x01a".to_vec();
        long.extend_from_slice(&ok[2..]);
        assert_eq!(
            Packet::parse(&long).unwrap_err(),
            ParseError::RequestTooLong { len: 513 }
        );
    }

    #[test]
    fn data_limit_is_max_blksize() {
        let mut d = vec![0, 3, 0, 1];
        d.resize(4 + usize::from(MAX_BLKSIZE), 7);
        assert!(Packet::parse(&d).is_ok());
        d.push(7);
        assert_eq!(
            Packet::parse(&d).unwrap_err(),
            ParseError::DataTooLong {
                len: usize::from(MAX_BLKSIZE) + 1
            }
        );
    }

    #[test]
    fn error_budget_truncates_message() {
        let mut out = Vec::new();
        encode_error(ErrorCode::FileNotFound, "file not found", 10, &mut out);
        assert_eq!(out, b"\x00\x05\x00\x01file \x00");
        out.clear();
        // Never below the empty-message packet; multi-byte characters are not split.
        encode_error(ErrorCode::NotDefined, "ééé", 8, &mut out);
        assert_eq!(out, "\x00\x05\x00\x00é\x00".as_bytes());
        out.clear();
        encode_error(ErrorCode::NotDefined, "x", 0, &mut out);
        assert_eq!(out, b"\x00\x05\x00\x00\x00");
    }
}
