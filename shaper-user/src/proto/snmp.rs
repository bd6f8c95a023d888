//! SNMPv2c messages in BER, enough to reset a cable modem and to answer such a reset.
//!
//! Operators re-register a DOCSIS modem (so it fetches a new configuration file) with
//! `SET docsDevResetNow.0 = INTEGER 1` (RFC 4639 §4, TruthValue; reads return `false(2)`),
//! see docs/PROTOCOLS.md §3. This module encodes and decodes the community-based SNMPv2 message
//! (RFC 1901 §3: `SEQUENCE { version INTEGER (1), community OCTET STRING, data PDUs }`) with
//! the PDUs of RFC 3416 §3 (GetRequest, GetNextRequest, Response, SetRequest) in the BER
//! subset of X.690 that SNMP uses (RFC 3417 §8): definite lengths only, minimal INTEGERs.
//!
//! Decoding is strict: every length is checked against what is left, trailing bytes are an
//! error, and each error names the field it was reading. No sockets here (docs/ARCHITECTURE.md §7):
//! the tokio shells are `modem::reboot` (manager) and `modem::emulator` (agent).

use std::fmt;

use thiserror::Error;

/// `docsDevResetNow.0` (RFC 4639 DOCS-CABLE-DEVICE-MIB): setting it to `true(1)` resets the
/// cable modem; a read returns `false(2)`.
pub const DOCS_DEV_RESET_NOW: &[u32] = &[1, 3, 6, 1, 2, 1, 69, 1, 1, 3, 0];

/// SNMPv2c `version` field value (RFC 1901 §3: `version-2c(1)`; v1 is 0).
pub const VERSION_2C: i64 = 1;

/// The largest SNMP message we build or accept: RFC 3417 §3.2 requires support for 484
/// octets; UDP allows up to 65507. Anything larger cannot be a single datagram.
pub const MAX_MESSAGE: usize = 65_507;

const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
/// RFC 3416 §2 `noSuchObject [0] IMPLICIT NULL`.
const TAG_NO_SUCH_OBJECT: u8 = 0x80;
/// RFC 3416 §2 `noSuchInstance [1] IMPLICIT NULL`.
const TAG_NO_SUCH_INSTANCE: u8 = 0x81;
/// RFC 3416 §2 `endOfMibView [2] IMPLICIT NULL`.
const TAG_END_OF_MIB_VIEW: u8 = 0x82;

/// What went wrong decoding (or, for sizes, encoding) an SNMP message. `what` names the field.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SnmpError {
    #[error("{what}: truncated: need {need} bytes, {have} left")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{what}: expected tag {expected:#04x}, found {found:#04x}")]
    UnexpectedTag {
        what: &'static str,
        expected: u8,
        found: u8,
    },
    #[error("{what}: indefinite length (0x80) is not allowed in SNMP (RFC 3417 §8)")]
    IndefiniteLength { what: &'static str },
    #[error("{what}: length field of {octets} octets is longer than 4")]
    LengthTooLong { what: &'static str, octets: usize },
    #[error("{what}: {count} trailing bytes after the value")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("{what}: INTEGER of {len} octets (allowed 1..={max})")]
    IntegerLength {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what}: INTEGER not minimally encoded (X.690 §8.3.2)")]
    NonMinimalInteger { what: &'static str },
    #[error("{what}: NULL with {len} content octets")]
    NullWithContent { what: &'static str, len: usize },
    #[error("unsupported SNMP version {0} (only v2c = 1)")]
    UnsupportedVersion(i64),
    #[error("unsupported PDU tag {0:#04x}")]
    UnsupportedPdu(u8),
    #[error("unknown error-status {0} (RFC 3416 §3 defines 0..=18)")]
    UnknownErrorStatus(i64),
    #[error("OBJECT IDENTIFIER: {0}")]
    BadOid(&'static str),
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
}

/// An OBJECT IDENTIFIER as its arcs (`1.3.6.1...`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oid(pub Vec<u32>);

impl Oid {
    /// X.690 §8.19: the first two arcs share the first sub-identifier (`40 * a + b`), every
    /// sub-identifier is base-128 with the high bit set on all but its last octet.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), SnmpError> {
        let arcs = &self.0;
        if arcs.len() < 2 {
            return Err(SnmpError::BadOid("fewer than two arcs"));
        }
        if arcs[0] > 2 || (arcs[0] < 2 && arcs[1] >= 40) {
            return Err(SnmpError::BadOid("first arcs out of range"));
        }
        let first = u64::from(arcs[0]) * 40 + u64::from(arcs[1]);
        push_base128(out, first);
        for &a in &arcs[2..] {
            push_base128(out, u64::from(a));
        }
        Ok(())
    }

    fn decode(content: &[u8]) -> Result<Oid, SnmpError> {
        if content.is_empty() {
            return Err(SnmpError::BadOid("empty"));
        }
        let mut subids = Vec::new();
        let mut cur: u64 = 0;
        let mut in_progress = false;
        for &b in content {
            if !in_progress && b == 0x80 {
                return Err(SnmpError::BadOid(
                    "sub-identifier with a leading 0x80 octet",
                ));
            }
            cur = (cur << 7) | u64::from(b & 0x7f);
            if cur > u64::from(u32::MAX) + 80 {
                return Err(SnmpError::BadOid("sub-identifier exceeds 32 bits"));
            }
            in_progress = b & 0x80 != 0;
            if !in_progress {
                subids.push(cur);
                cur = 0;
            }
        }
        if in_progress {
            return Err(SnmpError::BadOid("last sub-identifier unterminated"));
        }
        let first = subids[0];
        let (a, b): (u32, u64) = match first {
            0..=39 => (0, first),
            40..=79 => (1, first - 40),
            _ => (2, first - 80),
        };
        let mut arcs = Vec::with_capacity(subids.len() + 1);
        arcs.push(a);
        arcs.push(u32::try_from(b).map_err(|_| SnmpError::BadOid("second arc exceeds 32 bits"))?);
        for &s in &subids[1..] {
            arcs.push(u32::try_from(s).map_err(|_| SnmpError::BadOid("arc exceeds 32 bits"))?);
        }
        Ok(Oid(arcs))
    }
}

impl From<&[u32]> for Oid {
    fn from(a: &[u32]) -> Oid {
        Oid(a.to_vec())
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({self})")
    }
}

fn push_base128(out: &mut Vec<u8>, v: u64) {
    let mut tmp = [0u8; 10];
    let mut n = 0;
    let mut v = v;
    loop {
        tmp[n] = (v & 0x7f) as u8;
        n += 1;
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        out.push(tmp[i] | if i > 0 { 0x80 } else { 0 });
    }
}

/// A varbind value (RFC 3416 §3 `ObjectSyntax` plus the three exceptions). Application types
/// we do not interpret (Counter32, IpAddress, TimeTicks, …) are kept as `Other` so a decoded
/// message encodes back to the same bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `INTEGER` (Integer32 range, RFC 2578 §7.1.1).
    Integer(i32),
    /// `OCTET STRING`.
    OctetString(Vec<u8>),
    /// `NULL`: the value of every varbind in a Get request.
    Null,
    /// `OBJECT IDENTIFIER`.
    ObjectId(Oid),
    /// Response exception `noSuchObject`.
    NoSuchObject,
    /// Response exception `noSuchInstance`.
    NoSuchInstance,
    /// Response exception `endOfMibView`.
    EndOfMibView,
    /// Any other tag, kept verbatim.
    Other { tag: u8, data: Vec<u8> },
}

/// One `VarBind` (RFC 3416 §3): a name and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarBind {
    pub oid: Oid,
    pub value: Value,
}

/// The PDU kinds we handle (RFC 3416 §3 context tags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PduKind {
    GetRequest,
    GetNextRequest,
    Response,
    SetRequest,
}

impl PduKind {
    fn tag(self) -> u8 {
        match self {
            PduKind::GetRequest => 0xa0,
            PduKind::GetNextRequest => 0xa1,
            PduKind::Response => 0xa2,
            PduKind::SetRequest => 0xa3,
        }
    }

    fn from_tag(tag: u8) -> Result<PduKind, SnmpError> {
        Ok(match tag {
            0xa0 => PduKind::GetRequest,
            0xa1 => PduKind::GetNextRequest,
            0xa2 => PduKind::Response,
            0xa3 => PduKind::SetRequest,
            t => return Err(SnmpError::UnsupportedPdu(t)),
        })
    }
}

macro_rules! error_statuses {
    ($($name:ident = $code:literal, $text:literal;)*) => {
        /// `error-status` of a Response-PDU (RFC 3416 §3), every value the RFC defines.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorStatus {
            $(#[doc = $text] $name,)*
        }

        impl ErrorStatus {
            /// The wire value.
            #[must_use]
            pub fn code(self) -> i32 {
                match self { $(ErrorStatus::$name => $code,)* }
            }

            /// The status with this wire value, if RFC 3416 defines one.
            #[must_use]
            pub fn from_code(code: i64) -> Option<ErrorStatus> {
                match code { $($code => Some(ErrorStatus::$name),)* _ => None }
            }

            /// The RFC's name (`noAccess`, `wrongValue`, …), as net-snmp prints it.
            #[must_use]
            pub fn name(self) -> &'static str {
                match self { $(ErrorStatus::$name => $text,)* }
            }
        }
    };
}

error_statuses! {
    NoError = 0, "noError";
    TooBig = 1, "tooBig";
    NoSuchName = 2, "noSuchName";
    BadValue = 3, "badValue";
    ReadOnly = 4, "readOnly";
    GenErr = 5, "genErr";
    NoAccess = 6, "noAccess";
    WrongType = 7, "wrongType";
    WrongLength = 8, "wrongLength";
    WrongEncoding = 9, "wrongEncoding";
    WrongValue = 10, "wrongValue";
    NoCreation = 11, "noCreation";
    InconsistentValue = 12, "inconsistentValue";
    ResourceUnavailable = 13, "resourceUnavailable";
    CommitFailed = 14, "commitFailed";
    UndoFailed = 15, "undoFailed";
    AuthorizationError = 16, "authorizationError";
    NotWritable = 17, "notWritable";
    InconsistentName = 18, "inconsistentName";
}

impl fmt::Display for ErrorStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.code())
    }
}

/// A PDU (RFC 3416 §3): requests carry `noError`/0 in the two error fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pdu {
    pub kind: PduKind,
    pub request_id: i32,
    pub error_status: ErrorStatus,
    /// 1-based index of the varbind the error is about; 0 when none.
    pub error_index: i32,
    pub varbinds: Vec<VarBind>,
}

/// A community-based SNMPv2 message (RFC 1901 §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The community string, sent in clear (RFC 1901 §3; it is a password, not a secret).
    pub community: Vec<u8>,
    pub pdu: Pdu,
}

impl Message {
    /// A SetRequest-PDU (RFC 3416 §4.2.5).
    #[must_use]
    pub fn set_request(community: &[u8], request_id: i32, varbinds: Vec<VarBind>) -> Message {
        Message::request(PduKind::SetRequest, community, request_id, varbinds)
    }

    /// A GetRequest-PDU (RFC 3416 §4.2.1) for `oids` (values NULL).
    #[must_use]
    pub fn get_request(community: &[u8], request_id: i32, oids: &[Oid]) -> Message {
        let vbs = oids
            .iter()
            .map(|o| VarBind {
                oid: o.clone(),
                value: Value::Null,
            })
            .collect();
        Message::request(PduKind::GetRequest, community, request_id, vbs)
    }

    fn request(
        kind: PduKind,
        community: &[u8],
        request_id: i32,
        varbinds: Vec<VarBind>,
    ) -> Message {
        Message {
            community: community.to_vec(),
            pdu: Pdu {
                kind,
                request_id,
                error_status: ErrorStatus::NoError,
                error_index: 0,
                varbinds,
            },
        }
    }

    /// The Response-PDU to `self` (RFC 3416 §4.2): same community and request-id.
    #[must_use]
    pub fn response(
        &self,
        error_status: ErrorStatus,
        error_index: i32,
        varbinds: Vec<VarBind>,
    ) -> Message {
        Message {
            community: self.community.clone(),
            pdu: Pdu {
                kind: PduKind::Response,
                request_id: self.pdu.request_id,
                error_status,
                error_index,
                varbinds,
            },
        }
    }

    /// BER encoding (RFC 3417 §8, definite lengths, minimal INTEGERs).
    pub fn encode(&self) -> Result<Vec<u8>, SnmpError> {
        let Message { community, pdu } = self;
        let Pdu {
            kind,
            request_id,
            error_status,
            error_index,
            varbinds,
        } = pdu;
        let mut vbl = Vec::new();
        for VarBind { oid, value } in varbinds {
            let mut vb = Vec::new();
            let mut o = Vec::new();
            oid.encode(&mut o)?;
            put_tlv(&mut vb, TAG_OID, &o);
            match value {
                Value::Integer(i) => put_tlv(&mut vb, TAG_INTEGER, &int_bytes(i64::from(*i))),
                Value::OctetString(s) => put_tlv(&mut vb, TAG_OCTET_STRING, s),
                Value::Null => put_tlv(&mut vb, TAG_NULL, &[]),
                Value::ObjectId(oid) => {
                    let mut o = Vec::new();
                    oid.encode(&mut o)?;
                    put_tlv(&mut vb, TAG_OID, &o);
                }
                Value::NoSuchObject => put_tlv(&mut vb, TAG_NO_SUCH_OBJECT, &[]),
                Value::NoSuchInstance => put_tlv(&mut vb, TAG_NO_SUCH_INSTANCE, &[]),
                Value::EndOfMibView => put_tlv(&mut vb, TAG_END_OF_MIB_VIEW, &[]),
                Value::Other { tag, data } => put_tlv(&mut vb, *tag, data),
            }
            put_tlv(&mut vbl, TAG_SEQUENCE, &vb);
        }
        let mut p = Vec::new();
        put_tlv(&mut p, TAG_INTEGER, &int_bytes(i64::from(*request_id)));
        put_tlv(
            &mut p,
            TAG_INTEGER,
            &int_bytes(i64::from(error_status.code())),
        );
        put_tlv(&mut p, TAG_INTEGER, &int_bytes(i64::from(*error_index)));
        put_tlv(&mut p, TAG_SEQUENCE, &vbl);
        let mut m = Vec::new();
        put_tlv(&mut m, TAG_INTEGER, &int_bytes(VERSION_2C));
        put_tlv(&mut m, TAG_OCTET_STRING, community);
        put_tlv(&mut m, kind.tag(), &p);
        let mut out = Vec::with_capacity(m.len() + 4);
        put_tlv(&mut out, TAG_SEQUENCE, &m);
        if out.len() > MAX_MESSAGE {
            return Err(SnmpError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// Decode one message; the whole buffer must be exactly one message.
    pub fn decode(buf: &[u8]) -> Result<Message, SnmpError> {
        if buf.len() > MAX_MESSAGE {
            return Err(SnmpError::TooLarge(buf.len()));
        }
        let mut outer = Reader::new(buf);
        let body = outer.expect(TAG_SEQUENCE, "message SEQUENCE")?;
        outer.finish("message")?;
        let mut r = Reader::new(body);
        let version = r.integer("version", 4)?;
        if version != VERSION_2C {
            return Err(SnmpError::UnsupportedVersion(version));
        }
        let community = r.expect(TAG_OCTET_STRING, "community")?.to_vec();
        let (tag, pdu_body) = r.tlv("PDU")?;
        let kind = PduKind::from_tag(tag)?;
        r.finish("message body")?;
        let mut p = Reader::new(pdu_body);
        let request_id = int32(p.integer("request-id", 4)?);
        let status = p.integer("error-status", 4)?;
        let error_status =
            ErrorStatus::from_code(status).ok_or(SnmpError::UnknownErrorStatus(status))?;
        let error_index = int32(p.integer("error-index", 4)?);
        let vbl = p.expect(TAG_SEQUENCE, "variable-bindings")?;
        p.finish("PDU")?;
        let mut v = Reader::new(vbl);
        let mut varbinds = Vec::new();
        while !v.is_empty() {
            let vb = v.expect(TAG_SEQUENCE, "VarBind")?;
            let mut b = Reader::new(vb);
            let oid = Oid::decode(b.expect(TAG_OID, "VarBind name")?)?;
            let (tag, data) = b.tlv("VarBind value")?;
            b.finish("VarBind")?;
            let value = match tag {
                TAG_INTEGER => Value::Integer(int32(decode_int(data, "INTEGER value", 4)?)),
                TAG_OCTET_STRING => Value::OctetString(data.to_vec()),
                TAG_NULL => {
                    null(data, "NULL value")?;
                    Value::Null
                }
                TAG_OID => Value::ObjectId(Oid::decode(data)?),
                TAG_NO_SUCH_OBJECT => {
                    null(data, "noSuchObject")?;
                    Value::NoSuchObject
                }
                TAG_NO_SUCH_INSTANCE => {
                    null(data, "noSuchInstance")?;
                    Value::NoSuchInstance
                }
                TAG_END_OF_MIB_VIEW => {
                    null(data, "endOfMibView")?;
                    Value::EndOfMibView
                }
                tag => Value::Other {
                    tag,
                    data: data.to_vec(),
                },
            };
            varbinds.push(VarBind { oid, value });
        }
        Ok(Message {
            community,
            pdu: Pdu {
                kind,
                request_id,
                error_status,
                error_index,
                varbinds,
            },
        })
    }
}

/// Why a manager rejects what came back for its request (RFC 3416 §4.1, §4.2).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReplyError {
    #[error("expected a Response-PDU, got {0:?}")]
    NotAResponse(PduKind),
    #[error("response request-id {got} does not match request {expected}")]
    RequestIdMismatch { expected: i32, got: i32 },
    #[error("agent answered {status} (error-index {index}{})", oid.as_ref().map(|o| format!(", {o}")).unwrap_or_default())]
    Status {
        status: ErrorStatus,
        index: i32,
        /// The varbind `index` points at, if it does.
        oid: Option<Oid>,
    },
}

impl Message {
    /// Check that `self` is the successful Response to request `request_id`: a Response-PDU
    /// with that request-id and error-status `noError` (RFC 3416 §4.2.5: a SET either
    /// succeeds for every varbind or for none, and says which one failed in error-index).
    pub fn check_response(&self, request_id: i32) -> Result<&[VarBind], ReplyError> {
        let pdu = &self.pdu;
        if pdu.kind != PduKind::Response {
            return Err(ReplyError::NotAResponse(pdu.kind));
        }
        if pdu.request_id != request_id {
            return Err(ReplyError::RequestIdMismatch {
                expected: request_id,
                got: pdu.request_id,
            });
        }
        if pdu.error_status != ErrorStatus::NoError {
            let oid = usize::try_from(pdu.error_index)
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| pdu.varbinds.get(i))
                .map(|vb| vb.oid.clone());
            return Err(ReplyError::Status {
                status: pdu.error_status,
                index: pdu.error_index,
                oid,
            });
        }
        Ok(&pdu.varbinds)
    }
}

fn int32(v: i64) -> i32 {
    // decode_int with max 4 octets yields exactly the i32 range.
    i32::try_from(v).expect("4-octet INTEGER fits i32")
}

fn null(data: &[u8], what: &'static str) -> Result<(), SnmpError> {
    if data.is_empty() {
        Ok(())
    } else {
        Err(SnmpError::NullWithContent {
            what,
            len: data.len(),
        })
    }
}

/// Two's-complement, minimal (X.690 §8.3).
fn int_bytes(v: i64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let redundant = (b[start] == 0x00 && b[start + 1] & 0x80 == 0)
            || (b[start] == 0xff && b[start + 1] & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    b[start..].to_vec()
}

fn decode_int(data: &[u8], what: &'static str, max: usize) -> Result<i64, SnmpError> {
    if data.is_empty() || data.len() > max {
        return Err(SnmpError::IntegerLength {
            what,
            len: data.len(),
            max,
        });
    }
    if data.len() > 1
        && ((data[0] == 0x00 && data[1] & 0x80 == 0) || (data[0] == 0xff && data[1] & 0x80 != 0))
    {
        return Err(SnmpError::NonMinimalInteger { what });
    }
    let mut v: i64 = if data[0] & 0x80 != 0 { -1 } else { 0 };
    for &b in data {
        v = (v << 8) | i64::from(b);
    }
    Ok(v)
}

/// X.690 §8.1.3: short form below 128, else long form with the minimal number of octets.
fn put_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(u8::try_from(len).expect("below 0x80"));
        return;
    }
    let b = len.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count();
    let octets = u8::try_from(b.len() - skip).expect("a usize has at most 8 octets");
    out.push(0x80 | octets);
    out.extend_from_slice(&b[skip..]);
}

fn put_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    put_len(out, content.len());
    out.extend_from_slice(content);
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SnmpError> {
        if self.buf.len() < n {
            return Err(SnmpError::Truncated {
                what,
                need: n,
                have: self.buf.len(),
            });
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    /// One TLV with a single-octet tag (SNMP uses no high tag numbers).
    fn tlv(&mut self, what: &'static str) -> Result<(u8, &'a [u8]), SnmpError> {
        let tag = self.take(1, what)?[0];
        let first = self.take(1, what)?[0];
        let len = if first < 0x80 {
            usize::from(first)
        } else if first == 0x80 {
            return Err(SnmpError::IndefiniteLength { what });
        } else {
            let n = usize::from(first & 0x7f);
            if n > 4 {
                return Err(SnmpError::LengthTooLong { what, octets: n });
            }
            self.take(n, what)?
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        Ok((tag, self.take(len, what)?))
    }

    fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], SnmpError> {
        let (found, data) = self.tlv(what)?;
        if found != tag {
            return Err(SnmpError::UnexpectedTag {
                what,
                expected: tag,
                found,
            });
        }
        Ok(data)
    }

    fn integer(&mut self, what: &'static str, max: usize) -> Result<i64, SnmpError> {
        decode_int(self.expect(TAG_INTEGER, what)?, what, max)
    }

    fn finish(&self, what: &'static str) -> Result<(), SnmpError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(SnmpError::TrailingBytes {
                what,
                count: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Captured with tcpdump on loopback: net-snmp 5.9.3 `snmpset -v2c -c private
    // 127.0.0.1:1161 1.3.6.1.2.1.69.1.1.3.0 i 1` and snmpd's answers (docs/PROTOCOLS.md §3).
    const SET_PRIVATE_1: &str = "302d0201010407 70726976617465 a31f 02040d4a3150 020100 020100 \
                                 3011 300f 060a2b060102014501010300 020101";
    const RESP_NO_ERROR: &str = "302d0201010407 70726976617465 a21f 02040d4a3150 020100 020100 \
                                 3011 300f 060a2b060102014501010300 020101";
    const RESP_WRONG_VALUE: &str = "302d0201010407 70726976617465 a21f 0204411943d1 02010a 020101 \
                                    3011 300f 060a2b060102014501010300 020102";
    const RESP_NO_ACCESS: &str = "302c0201010406 7075626c6963 a21f 020430933034 020106 020101 \
                                  3011 300f 060a2b060102014501010300 020101";
    const GET_PUBLIC: &str = "302b0201010406 7075626c6963 a01e 02046a5660e6 020100 020100 \
                              3010 300e 060a2b060102014501010300 0500";
    const GET_RESP_2: &str = "302c0201010406 7075626c6963 a21f 02046a5660e6 020100 020100 \
                              3011 300f 060a2b060102014501010300 020102";

    fn reset_vb(v: i32) -> VarBind {
        VarBind {
            oid: Oid::from(DOCS_DEV_RESET_NOW),
            value: Value::Integer(v),
        }
    }

    #[test]
    fn set_request_matches_net_snmp_capture() {
        let m = Message::set_request(b"private", 0x0d4a_3150, vec![reset_vb(1)]);
        assert_eq!(m.encode().unwrap(), hex(SET_PRIVATE_1));
        let d = Message::decode(&hex(SET_PRIVATE_1)).unwrap();
        assert_eq!(d, m);
        assert_eq!(d.pdu.kind, PduKind::SetRequest);
    }

    #[test]
    fn get_request_and_response_match_capture() {
        let m = Message::get_request(b"public", 0x6a56_60e6, &[Oid::from(DOCS_DEV_RESET_NOW)]);
        assert_eq!(m.encode().unwrap(), hex(GET_PUBLIC));
        let r = m.response(ErrorStatus::NoError, 0, vec![reset_vb(2)]);
        assert_eq!(r.encode().unwrap(), hex(GET_RESP_2));
        let d = Message::decode(&hex(GET_RESP_2)).unwrap();
        assert_eq!(d.check_response(0x6a56_60e6).unwrap(), &[reset_vb(2)]);
    }

    #[test]
    fn response_statuses_from_snmpd() {
        let ok = Message::decode(&hex(RESP_NO_ERROR)).unwrap();
        assert_eq!(ok.check_response(0x0d4a_3150).unwrap(), &[reset_vb(1)]);
        assert_eq!(
            ok.check_response(7),
            Err(ReplyError::RequestIdMismatch {
                expected: 7,
                got: 0x0d4a_3150
            })
        );

        let wv = Message::decode(&hex(RESP_WRONG_VALUE)).unwrap();
        let e = wv.check_response(0x4119_43d1).unwrap_err();
        assert_eq!(
            e,
            ReplyError::Status {
                status: ErrorStatus::WrongValue,
                index: 1,
                oid: Some(Oid::from(DOCS_DEV_RESET_NOW)),
            }
        );
        assert!(e.to_string().contains("wrongValue(10)"), "{e}");

        let na = Message::decode(&hex(RESP_NO_ACCESS)).unwrap();
        assert_eq!(na.community, b"public");
        let e = na.check_response(0x3093_3034).unwrap_err();
        assert!(e.to_string().contains("noAccess"), "{e}");

        // Building the same responses gives snmpd's bytes.
        let req = Message::decode(&hex(SET_PRIVATE_1)).unwrap();
        assert_eq!(
            req.response(ErrorStatus::NoError, 0, req.pdu.varbinds.clone())
                .encode()
                .unwrap(),
            hex(RESP_NO_ERROR)
        );
        let e = req.check_response(0x0d4a_3150).unwrap_err();
        assert_eq!(e, ReplyError::NotAResponse(PduKind::SetRequest));
    }

    #[test]
    fn every_error_status_round_trips() {
        for code in 0..=18 {
            let s = ErrorStatus::from_code(code).unwrap();
            assert_eq!(i64::from(s.code()), code);
            let m = Message::set_request(b"c", 1, vec![reset_vb(1)]).response(s, 1, vec![]);
            assert_eq!(Message::decode(&m.encode().unwrap()).unwrap(), m);
        }
        assert_eq!(ErrorStatus::from_code(19), None);
        assert_eq!(ErrorStatus::AuthorizationError.name(), "authorizationError");
        assert_eq!(ErrorStatus::InconsistentName.code(), 18);
        let mut b = hex(RESP_NO_ACCESS);
        b[23] = 19; // error-status content octet
        assert_eq!(Message::decode(&b), Err(SnmpError::UnknownErrorStatus(19)));
    }

    #[test]
    fn integers_are_minimal_and_checked() {
        for (v, enc) in [
            (0i64, "00"),
            (127, "7f"),
            (128, "0080"),
            (-1, "ff"),
            (-128, "80"),
            (-129, "ff7f"),
            (i64::from(i32::MAX), "7fffffff"),
            (i64::from(i32::MIN), "80000000"),
        ] {
            assert_eq!(int_bytes(v), hex(enc), "{v}");
            assert_eq!(decode_int(&hex(enc), "x", 4).unwrap(), v);
        }
        assert_eq!(
            decode_int(&hex("0001"), "x", 4),
            Err(SnmpError::NonMinimalInteger { what: "x" })
        );
        assert_eq!(
            decode_int(&hex("0100000000"), "x", 4),
            Err(SnmpError::IntegerLength {
                what: "x",
                len: 5,
                max: 4
            })
        );
        assert!(decode_int(&[], "x", 4).is_err());
    }

    #[test]
    fn strict_lengths() {
        let good = hex(SET_PRIVATE_1);
        // Every truncation fails, none panics.
        for n in 0..good.len() {
            assert!(Message::decode(&good[..n]).is_err(), "prefix {n}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            Message::decode(&trailing),
            Err(SnmpError::TrailingBytes {
                what: "message",
                count: 1
            })
        );
        let mut indef = good.clone();
        indef[1] = 0x80;
        assert_eq!(
            Message::decode(&indef),
            Err(SnmpError::IndefiniteLength {
                what: "message SEQUENCE"
            })
        );
        let mut v1 = good.clone();
        v1[4] = 0; // version 0 = SNMPv1
        assert_eq!(Message::decode(&v1), Err(SnmpError::UnsupportedVersion(0)));
        let mut trap = good;
        trap[14] = 0xa7; // SNMPv2-Trap-PDU
        assert_eq!(Message::decode(&trap), Err(SnmpError::UnsupportedPdu(0xa7)));
    }

    #[test]
    fn long_form_lengths_and_other_values_round_trip() {
        let m = Message::set_request(
            &[b'x'; 200],
            -5,
            vec![
                VarBind {
                    oid: Oid(vec![1, 3, 6, 1, 4, 1, 4_294_967_295, 128]),
                    value: Value::OctetString(vec![7; 300]),
                },
                VarBind {
                    oid: Oid(vec![2, 999]),
                    value: Value::Other {
                        tag: 0x41,
                        data: vec![1, 2],
                    },
                },
                VarBind {
                    oid: Oid(vec![0, 0]),
                    value: Value::ObjectId(Oid(vec![1, 3, 6])),
                },
            ],
        );
        let b = m.encode().unwrap();
        assert_eq!(&b[..2], &[0x30, 0x82]);
        assert_eq!(Message::decode(&b).unwrap(), m);
        assert_eq!(Oid(vec![2, 999]).to_string(), "2.999");
        let mut o = Vec::new();
        Oid(vec![2, 999]).encode(&mut o).unwrap();
        assert_eq!(o, hex("8837")); // X.690 §8.19.5 example: 2.999 -> 0x88 0x37
        assert_eq!(
            Oid(vec![1, 40]).encode(&mut Vec::new()),
            Err(SnmpError::BadOid("first arcs out of range"))
        );
        assert_eq!(
            Oid::decode(&hex("2b86")),
            Err(SnmpError::BadOid("last sub-identifier unterminated"))
        );
        assert_eq!(
            Oid::decode(&hex("2b8001")),
            Err(SnmpError::BadOid(
                "sub-identifier with a leading 0x80 octet"
            ))
        );
    }

    /// What the fuzz target checks, over every single-byte mutation of the captured vectors:
    /// no panic, and whatever decodes round-trips.
    #[test]
    fn single_byte_mutations_round_trip_or_fail_cleanly() {
        for v in [SET_PRIVATE_1, RESP_WRONG_VALUE, RESP_NO_ACCESS, GET_PUBLIC] {
            let good = hex(v);
            for i in 0..good.len() {
                for x in [0x00, 0x01, 0x7f, 0x80, 0x81, 0x84, 0xff] {
                    let mut b = good.clone();
                    b[i] = x;
                    if let Ok(m) = Message::decode(&b) {
                        let again = Message::decode(&m.encode().unwrap()).unwrap();
                        assert_eq!(again, m, "byte {i} = {x:#04x}");
                    }
                }
            }
        }
    }
}
