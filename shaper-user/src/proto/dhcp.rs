//! DHCPv4 messages (RFC 2131 §2) and authenticated FORCERENEW (RFC 3203, RFC 3118, RFC 6704).
//!
//! A FORCERENEW makes a bound DHCP client renew at once; operators use it to make a modem pick
//! up new parameters (docs/PROTOCOLS.md §3). It is a BOOTREPLY with `chaddr` = client MAC, option
//! 53 = 9 and a server identifier (54), unicast from port 67 to the client on port 68.
//! Authentication is mandatory (RFC 3203 §6): option 90 (RFC 3118 §2) with either
//!
//! - RFC 3118 §5 delayed authentication: protocol 1, algorithm 1 (HMAC-MD5), RDM 0
//!   (monotonically increasing counter), information = secret ID (4 B) + HMAC (16 B); or
//! - RFC 6704 §3 reconfigure key: protocol 3, algorithm 1, RDM 0, information = type (1 B) +
//!   value (16 B). The server hands the key to the client in its DHCPACK (type 1, value = key)
//!   and signs FORCERENEWs with it (type 2, value = HMAC-MD5).
//!
//! In both, the HMAC covers the whole message with the HMAC field, `hops` and `giaddr` set to
//! zero (RFC 3118 §5.3). The receiving side ([`verify_forcerenew`]) checks the HMAC over the
//! bytes as received, then the replay counter, which must increase (RFC 3118 §2).
//!
//! Sans-IO (docs/ARCHITECTURE.md §7): bytes in, bytes and verdicts out; keys and counters come from
//! the caller. Keys never live inside [`Message`] (docs/ARCHITECTURE.md §7).

use std::net::Ipv4Addr;

use thiserror::Error;

use super::auth::{DIGEST_LEN, digest_eq, hmac_md5};

/// `op` of a client message (RFC 2131 §2).
pub const BOOTREQUEST: u8 = 1;
/// `op` of a server message, FORCERENEW included (RFC 3203 §4).
pub const BOOTREPLY: u8 = 2;
/// RFC 2131 §3: the four octets that start the options field.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Length of the fixed BOOTP header before the cookie (RFC 2131 §2, figure 1).
pub const FIXED_LEN: usize = 236;
/// RFC 1542 §2.1: BOOTP messages are at least 300 octets; servers pad shorter replies (ISC
/// dhcpd does) so that strict clients and relays accept them.
pub const MIN_BOOTP_LEN: usize = 300;
/// DHCP server port (RFC 2131 §4.1).
pub const SERVER_PORT: u16 = 67;
/// DHCP client port (RFC 2131 §4.1).
pub const CLIENT_PORT: u16 = 68;

const OFF_HOPS: usize = 3;
const OFF_GIADDR: usize = 24;

/// Option codes this module interprets (RFC 2132 §3, §9; RFC 3118 §2; RFC 6704 §4).
pub mod code {
    pub const PAD: u8 = 0;
    pub const REQUESTED_IP: u8 = 50;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const AUTHENTICATION: u8 = 90;
    /// RFC 6704 §4 FORCERENEW_NONCE_CAPABLE (`91 01 01`: the client supports HMAC-MD5).
    pub const FORCERENEW_NONCE_CAPABLE: u8 = 145;
    pub const END: u8 = 255;
}

/// DHCP message type, option 53 (RFC 2132 §9.6, RFC 3203 §4 for FORCERENEW = 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageType(pub u8);

impl MessageType {
    pub const DISCOVER: MessageType = MessageType(1);
    pub const OFFER: MessageType = MessageType(2);
    pub const REQUEST: MessageType = MessageType(3);
    pub const DECLINE: MessageType = MessageType(4);
    pub const ACK: MessageType = MessageType(5);
    pub const NAK: MessageType = MessageType(6);
    pub const RELEASE: MessageType = MessageType(7);
    pub const INFORM: MessageType = MessageType(8);
    pub const FORCERENEW: MessageType = MessageType(9);
}

/// RFC 3118 §2 protocol 1: delayed authentication.
pub const PROTO_DELAYED: u8 = 1;
/// RFC 6704 §3: reconfigure key authentication (the DHCPv6 protocol number, reused).
pub const PROTO_RECONFIGURE_KEY: u8 = 3;
/// RFC 3118 §5 / RFC 6704 §3 algorithm 1: HMAC-MD5.
pub const ALG_HMAC_MD5: u8 = 1;
/// RFC 3118 §2 replay detection method 0: monotonically increasing counter.
pub const RDM_MONOTONIC: u8 = 0;
/// RFC 6704 §3 reconfigure key information type 1: the key itself (in the DHCPACK).
pub const RKAP_TYPE_KEY: u8 = 1;
/// RFC 6704 §3 reconfigure key information type 2: HMAC-MD5 of the message.
pub const RKAP_TYPE_HMAC: u8 = 2;

/// The authentication option, 90 (RFC 3118 §2): `code len protocol algorithm RDM replay8 info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthOption {
    pub protocol: u8,
    pub algorithm: u8,
    pub rdm: u8,
    /// Replay detection field: with RDM 0 a counter the receiver requires to increase.
    pub replay: u64,
    /// Authentication information; its layout depends on `protocol`.
    pub info: Vec<u8>,
}

impl AuthOption {
    /// The RFC 6704 §3 option a server puts in the DHCPACK to hand the client its reconfigure
    /// key: `5a 1c 03 01 00 <replay8> 01 <key16>`.
    #[must_use]
    pub fn reconfigure_key(replay: u64, key: &[u8; DIGEST_LEN]) -> AuthOption {
        let mut info = vec![RKAP_TYPE_KEY];
        info.extend_from_slice(key);
        AuthOption {
            protocol: PROTO_RECONFIGURE_KEY,
            algorithm: ALG_HMAC_MD5,
            rdm: RDM_MONOTONIC,
            replay,
            info,
        }
    }

    /// The reconfigure key this option carries, if it is an RFC 6704 type-1 option.
    #[must_use]
    pub fn reconfigure_key_value(&self) -> Option<[u8; DIGEST_LEN]> {
        if self.protocol != PROTO_RECONFIGURE_KEY
            || self.algorithm != ALG_HMAC_MD5
            || self.info.len() != 1 + DIGEST_LEN
            || self.info[0] != RKAP_TYPE_KEY
        {
            return None;
        }
        self.info[1..].try_into().ok()
    }
}

/// One option (RFC 2132). Options we do not interpret are kept as `Unknown` so a decoded
/// message encodes back to the same options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhcpOption {
    /// 50 (RFC 2132 §9.1).
    RequestedIp(Ipv4Addr),
    /// 53 (RFC 2132 §9.6).
    MessageType(MessageType),
    /// 54 (RFC 2132 §9.7).
    ServerId(Ipv4Addr),
    /// 90 (RFC 3118 §2).
    Authentication(AuthOption),
    /// 145 (RFC 6704 §4): the HMAC algorithms the client accepts for FORCERENEW.
    ForcerenewNonceCapable(Vec<u8>),
    /// Anything else, verbatim.
    Unknown { code: u8, data: Vec<u8> },
}

impl DhcpOption {
    fn code(&self) -> u8 {
        match self {
            DhcpOption::RequestedIp(_) => code::REQUESTED_IP,
            DhcpOption::MessageType(_) => code::MESSAGE_TYPE,
            DhcpOption::ServerId(_) => code::SERVER_ID,
            DhcpOption::Authentication(_) => code::AUTHENTICATION,
            DhcpOption::ForcerenewNonceCapable(_) => code::FORCERENEW_NONCE_CAPABLE,
            DhcpOption::Unknown { code, .. } => *code,
        }
    }

    fn value(&self) -> Vec<u8> {
        match self {
            DhcpOption::RequestedIp(a) | DhcpOption::ServerId(a) => a.octets().to_vec(),
            DhcpOption::MessageType(t) => vec![t.0],
            DhcpOption::Authentication(a) => {
                let mut v = vec![a.protocol, a.algorithm, a.rdm];
                v.extend_from_slice(&a.replay.to_be_bytes());
                v.extend_from_slice(&a.info);
                v
            }
            DhcpOption::ForcerenewNonceCapable(algs) => algs.clone(),
            DhcpOption::Unknown { data, .. } => data.clone(),
        }
    }

    fn decode(code: u8, data: &[u8]) -> Result<DhcpOption, DhcpError> {
        let fixed = |n: usize| {
            if data.len() == n {
                Ok(())
            } else {
                Err(DhcpError::OptionLength {
                    code,
                    len: data.len(),
                    expected: n,
                })
            }
        };
        let ip = || Ipv4Addr::new(data[0], data[1], data[2], data[3]);
        Ok(match code {
            code::REQUESTED_IP => {
                fixed(4)?;
                DhcpOption::RequestedIp(ip())
            }
            code::MESSAGE_TYPE => {
                fixed(1)?;
                DhcpOption::MessageType(MessageType(data[0]))
            }
            code::SERVER_ID => {
                fixed(4)?;
                DhcpOption::ServerId(ip())
            }
            code::AUTHENTICATION => {
                if data.len() < 11 {
                    return Err(DhcpError::OptionLength {
                        code,
                        len: data.len(),
                        expected: 11,
                    });
                }
                DhcpOption::Authentication(AuthOption {
                    protocol: data[0],
                    algorithm: data[1],
                    rdm: data[2],
                    replay: u64::from_be_bytes(data[3..11].try_into().expect("8 bytes")),
                    info: data[11..].to_vec(),
                })
            }
            code::FORCERENEW_NONCE_CAPABLE => DhcpOption::ForcerenewNonceCapable(data.to_vec()),
            code => DhcpOption::Unknown {
                code,
                data: data.to_vec(),
            },
        })
    }
}

/// What is wrong with a DHCP message's bytes (or with a message to encode).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DhcpError {
    #[error("message of {len} bytes is shorter than the {min}-byte header and cookie")]
    TooShort { len: usize, min: usize },
    #[error("magic cookie {0:02x?} is not 99.130.83.99 (RFC 2131 §3)")]
    BadCookie([u8; 4]),
    #[error("option {code} at offset {offset}: length runs past the end of the message")]
    OptionTruncated { code: u8, offset: usize },
    #[error("option {code}: length {len}, expected {expected}")]
    OptionLength {
        code: u8,
        len: usize,
        expected: usize,
    },
    #[error("options do not end with the end option (255)")]
    MissingEnd,
    #[error("option {code}: {len}-byte value does not fit the 1-byte length")]
    OptionTooLong { code: u8, len: usize },
    #[error("option {0} cannot be encoded as a value option (pad/end)")]
    ReservedCode(u8),
    #[error("hlen {0} exceeds the 16-byte chaddr")]
    BadHlen(u8),
}

/// A DHCPv4 message (RFC 2131 §2, figure 1). `sname` and `file` are kept as raw fields
/// (option overload, RFC 2131 §4.1 / option 52, is not interpreted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub sname: [u8; 64],
    pub file: [u8; 128],
    /// In wire order, pads and the end option left out.
    pub options: Vec<DhcpOption>,
}

impl Message {
    /// A BOOTREPLY to `mac` with every other field zero and no options.
    #[must_use]
    pub fn reply_to(mac: [u8; 6], xid: u32) -> Message {
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&mac);
        Message {
            op: BOOTREPLY,
            htype: 1,
            hlen: 6,
            hops: 0,
            xid,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            sname: [0; 64],
            file: [0; 128],
            options: Vec::new(),
        }
    }

    /// Option 53, if present.
    #[must_use]
    pub fn message_type(&self) -> Option<MessageType> {
        self.options.iter().find_map(|o| match o {
            DhcpOption::MessageType(t) => Some(*t),
            _ => None,
        })
    }

    /// Option 54, if present.
    #[must_use]
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.options.iter().find_map(|o| match o {
            DhcpOption::ServerId(a) => Some(*a),
            _ => None,
        })
    }

    /// Option 90, if present.
    #[must_use]
    pub fn authentication(&self) -> Option<&AuthOption> {
        self.options.iter().find_map(|o| match o {
            DhcpOption::Authentication(a) => Some(a),
            _ => None,
        })
    }

    /// The client hardware address (`chaddr` up to `hlen`).
    pub fn client_hw(&self) -> Result<&[u8], DhcpError> {
        self.chaddr
            .get(..usize::from(self.hlen))
            .ok_or(DhcpError::BadHlen(self.hlen))
    }

    /// Wire bytes: header, cookie, options, end option (RFC 2131 §2, §3).
    pub fn encode(&self) -> Result<Vec<u8>, DhcpError> {
        Ok(self.encode_with_offsets()?.0)
    }

    /// Encode and return, for each option, the offset of its value.
    fn encode_with_offsets(&self) -> Result<(Vec<u8>, Vec<usize>), DhcpError> {
        let Message {
            op,
            htype,
            hlen,
            hops,
            xid,
            secs,
            flags,
            ciaddr,
            yiaddr,
            siaddr,
            giaddr,
            chaddr,
            sname,
            file,
            options,
        } = self;
        let mut b = Vec::with_capacity(300);
        b.extend_from_slice(&[*op, *htype, *hlen, *hops]);
        b.extend_from_slice(&xid.to_be_bytes());
        b.extend_from_slice(&secs.to_be_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
        for a in [ciaddr, yiaddr, siaddr, giaddr] {
            b.extend_from_slice(&a.octets());
        }
        b.extend_from_slice(chaddr);
        b.extend_from_slice(sname);
        b.extend_from_slice(file);
        b.extend_from_slice(&MAGIC_COOKIE);
        let mut offsets = Vec::with_capacity(options.len());
        for o in options {
            let code = o.code();
            if code == code::PAD || code == code::END {
                return Err(DhcpError::ReservedCode(code));
            }
            let v = o.value();
            let len = u8::try_from(v.len())
                .map_err(|_| DhcpError::OptionTooLong { code, len: v.len() })?;
            b.push(code);
            b.push(len);
            offsets.push(b.len());
            b.extend_from_slice(&v);
        }
        b.push(code::END);
        Ok((b, offsets))
    }

    /// Decode a message. Pads are skipped; bytes after the end option (padding) are ignored.
    pub fn decode(buf: &[u8]) -> Result<Message, DhcpError> {
        Ok(parse(buf)?.0)
    }
}

/// Decode, and return the offset of the value of the (first) authentication option.
fn parse(buf: &[u8]) -> Result<(Message, Option<usize>), DhcpError> {
    let min = FIXED_LEN + MAGIC_COOKIE.len();
    if buf.len() < min {
        return Err(DhcpError::TooShort {
            len: buf.len(),
            min,
        });
    }
    let u16at = |o: usize| u16::from_be_bytes([buf[o], buf[o + 1]]);
    let ip = |o: usize| Ipv4Addr::new(buf[o], buf[o + 1], buf[o + 2], buf[o + 3]);
    let cookie: [u8; 4] = buf[FIXED_LEN..min].try_into().expect("4 bytes");
    if cookie != MAGIC_COOKIE {
        return Err(DhcpError::BadCookie(cookie));
    }
    let mut options = Vec::new();
    let mut auth_at = None;
    let mut i = min;
    let mut ended = false;
    while i < buf.len() {
        let code = buf[i];
        if code == code::PAD {
            i += 1;
            continue;
        }
        if code == code::END {
            ended = true;
            break;
        }
        let Some(&len) = buf.get(i + 1) else {
            return Err(DhcpError::OptionTruncated { code, offset: i });
        };
        let start = i + 2;
        let end = start + usize::from(len);
        let data = buf
            .get(start..end)
            .ok_or(DhcpError::OptionTruncated { code, offset: i })?;
        if code == code::AUTHENTICATION && auth_at.is_none() {
            auth_at = Some(start);
        }
        options.push(DhcpOption::decode(code, data)?);
        i = end;
    }
    if !ended {
        return Err(DhcpError::MissingEnd);
    }
    let msg = Message {
        op: buf[0],
        htype: buf[1],
        hlen: buf[2],
        hops: buf[OFF_HOPS],
        xid: u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes")),
        secs: u16at(8),
        flags: u16at(10),
        ciaddr: ip(12),
        yiaddr: ip(16),
        siaddr: ip(20),
        giaddr: ip(OFF_GIADDR),
        chaddr: buf[28..44].try_into().expect("16 bytes"),
        sname: buf[44..108].try_into().expect("64 bytes"),
        file: buf[108..236].try_into().expect("128 bytes"),
        options,
    };
    Ok((msg, auth_at))
}

/// Offset of the HMAC inside the value of option 90, per protocol: after protocol, algorithm,
/// RDM, replay (11 B), then the secret ID (RFC 3118 §5.3, 4 B) or the type byte (RFC 6704 §3).
fn hmac_offset_in_value(protocol: u8) -> Option<usize> {
    match protocol {
        PROTO_DELAYED => Some(11 + 4),
        PROTO_RECONFIGURE_KEY => Some(11 + 1),
        _ => None,
    }
}

/// HMAC-MD5 over `msg` with `hops`, `giaddr` and the HMAC field (at `hmac_at`) zeroed
/// (RFC 3118 §5.3, RFC 6704 §3).
fn message_hmac(key: &[u8], msg: &[u8], hmac_at: usize) -> [u8; DIGEST_LEN] {
    let mut m = msg.to_vec();
    m[OFF_HOPS] = 0;
    m[OFF_GIADDR..OFF_GIADDR + 4].fill(0);
    m[hmac_at..hmac_at + DIGEST_LEN].fill(0);
    hmac_md5(key, &[&m])
}

/// How a FORCERENEW is authenticated. Keys are borrowed: they belong to the caller's store.
#[derive(Clone, Copy)]
pub enum ForceRenewAuth<'a> {
    /// RFC 6704 §3: the per-client reconfigure key the server sent in its DHCPACK.
    ReconfigureKey(&'a [u8; DIGEST_LEN]),
    /// RFC 3118 §5: delayed authentication with the shared secret named by `secret_id`.
    Delayed { secret_id: u32, key: &'a [u8] },
    /// No option 90. RFC 3203 §6 forbids this; only for tests of the receive side.
    Unauthenticated,
}

impl std::fmt::Debug for ForceRenewAuth<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForceRenewAuth::ReconfigureKey(_) => f.write_str("ReconfigureKey(<redacted>)"),
            ForceRenewAuth::Delayed { secret_id, .. } => {
                write!(f, "Delayed {{ secret_id: {secret_id}, key: <redacted> }}")
            }
            ForceRenewAuth::Unauthenticated => f.write_str("Unauthenticated"),
        }
    }
}

/// The addressing of a FORCERENEW (RFC 3203 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForceRenew {
    /// The client's MAC, put in `chaddr`.
    pub client_mac: [u8; 6],
    /// The client's leased address, put in `ciaddr` (the packet is unicast to it).
    pub client_ip: Ipv4Addr,
    /// Option 54, the server's identifier.
    pub server_id: Ipv4Addr,
    /// dhcpcd 9.4 accepts a FORCERENEW only if `xid` equals its current xid (docs/PROTOCOLS.md §3).
    pub xid: u32,
}

/// Build a FORCERENEW: BOOTREPLY, option 53 = 9, option 54, then option 90 signed with
/// `auth` and carrying `replay` (RFC 3203 §4, RFC 3118 §5.3, RFC 6704 §3), padded with zeros
/// after the end option to [`MIN_BOOTP_LEN`]. The HMAC covers the padding too: it is part of
/// the message as the client receives it.
#[must_use]
pub fn encode_forcerenew(fr: &ForceRenew, auth: ForceRenewAuth<'_>, replay: u64) -> Vec<u8> {
    let mut m = Message::reply_to(fr.client_mac, fr.xid);
    m.ciaddr = fr.client_ip;
    m.options
        .push(DhcpOption::MessageType(MessageType::FORCERENEW));
    m.options.push(DhcpOption::ServerId(fr.server_id));
    let (key, info): (&[u8], Vec<u8>) = match auth {
        ForceRenewAuth::Unauthenticated => {
            let mut b = m.encode().expect("fixed options fit");
            pad_to_min(&mut b);
            return b;
        }
        ForceRenewAuth::ReconfigureKey(k) => {
            let mut info = vec![RKAP_TYPE_HMAC];
            info.extend_from_slice(&[0; DIGEST_LEN]);
            (k, info)
        }
        ForceRenewAuth::Delayed { secret_id, key } => {
            let mut info = secret_id.to_be_bytes().to_vec();
            info.extend_from_slice(&[0; DIGEST_LEN]);
            (key, info)
        }
    };
    let protocol = match auth {
        ForceRenewAuth::ReconfigureKey(_) => PROTO_RECONFIGURE_KEY,
        _ => PROTO_DELAYED,
    };
    m.options.push(DhcpOption::Authentication(AuthOption {
        protocol,
        algorithm: ALG_HMAC_MD5,
        rdm: RDM_MONOTONIC,
        replay,
        info,
    }));
    let (mut bytes, offsets) = m.encode_with_offsets().expect("fixed options fit");
    pad_to_min(&mut bytes);
    let hmac_at = offsets[2] + hmac_offset_in_value(protocol).expect("known protocol");
    let mac = message_hmac(key, &bytes, hmac_at);
    bytes[hmac_at..hmac_at + DIGEST_LEN].copy_from_slice(&mac);
    bytes
}

fn pad_to_min(b: &mut Vec<u8>) {
    if b.len() < MIN_BOOTP_LEN {
        b.resize(MIN_BOOTP_LEN, code::PAD);
    }
}

/// The keys a client holds to check a FORCERENEW.
#[derive(Clone, Copy, Default)]
pub struct ClientKeys<'a> {
    /// RFC 6704 reconfigure key (from the DHCPACK).
    pub reconfigure_key: Option<&'a [u8; DIGEST_LEN]>,
    /// RFC 3118 delayed-authentication secret and its ID.
    pub delayed: Option<(u32, &'a [u8])>,
}

/// Last accepted replay counter (RFC 3118 §2, RDM 0). Starts empty: the first authenticated
/// message sets it. A client that got a DHCPACK with a reconfigure key starts from that
/// message's counter ([`ReplayWindow::starting_at`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    last: Option<u64>,
}

impl ReplayWindow {
    /// A window that only accepts counters greater than `last`.
    #[must_use]
    pub fn starting_at(last: u64) -> ReplayWindow {
        ReplayWindow { last: Some(last) }
    }

    /// The last accepted counter.
    #[must_use]
    pub fn last(&self) -> Option<u64> {
        self.last
    }
}

/// Why a client rejects a FORCERENEW.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ForceRenewReject {
    #[error("malformed DHCP message: {0}")]
    Malformed(#[from] DhcpError),
    #[error("op {0} is not BOOTREPLY (RFC 3203 §4)")]
    NotBootReply(u8),
    #[error("message type {0:?} is not FORCERENEW (9)")]
    NotForceRenew(Option<MessageType>),
    #[error("chaddr {got:02x?} is not this client's {expected:02x?}")]
    WrongChaddr { expected: Vec<u8>, got: Vec<u8> },
    #[error("no server identifier (option 54, RFC 3203 §4)")]
    NoServerId,
    #[error("unauthenticated: no authentication option (RFC 3203 §6 requires one)")]
    Unauthenticated,
    #[error("authentication protocol {protocol}, algorithm {algorithm}, RDM {rdm} not accepted")]
    UnsupportedAuth {
        protocol: u8,
        algorithm: u8,
        rdm: u8,
    },
    #[error("authentication information of {len} bytes, expected {expected}")]
    BadAuthInfo { len: usize, expected: usize },
    #[error("reconfigure key information type {0} is not 2 (HMAC-MD5 digest)")]
    NotHmacType(u8),
    #[error("unknown secret ID {0}")]
    UnknownSecretId(u32),
    #[error("HMAC-MD5 does not verify: wrong key or altered message")]
    WrongKey,
    #[error("replayed: counter {got} is not above the last accepted {last}")]
    Replayed { last: u64, got: u64 },
}

/// What an accepted FORCERENEW said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptedForceRenew {
    pub server_id: Ipv4Addr,
    pub xid: u32,
    pub protocol: u8,
    pub replay: u64,
}

/// Check a received FORCERENEW as a client must (RFC 3203 §4-6, RFC 3118 §5.4, RFC 6704 §3):
/// a BOOTREPLY of type 9 with our `chaddr` and a server ID, authenticated with a key we hold
/// (HMAC over the bytes as received), with a replay counter above the last accepted one.
/// On success the window moves to the new counter; on any failure it is left as it was, so a
/// forged message cannot advance it.
pub fn verify_forcerenew(
    raw: &[u8],
    mac: &[u8; 6],
    keys: ClientKeys<'_>,
    window: &mut ReplayWindow,
) -> Result<AcceptedForceRenew, ForceRenewReject> {
    let (msg, auth_at) = parse(raw)?;
    if msg.op != BOOTREPLY {
        return Err(ForceRenewReject::NotBootReply(msg.op));
    }
    let t = msg.message_type();
    if t != Some(MessageType::FORCERENEW) {
        return Err(ForceRenewReject::NotForceRenew(t));
    }
    let hw = msg.client_hw()?;
    if hw != mac {
        return Err(ForceRenewReject::WrongChaddr {
            expected: mac.to_vec(),
            got: hw.to_vec(),
        });
    }
    let server_id = msg.server_id().ok_or(ForceRenewReject::NoServerId)?;
    let (Some(auth), Some(value_at)) = (msg.authentication(), auth_at) else {
        return Err(ForceRenewReject::Unauthenticated);
    };
    let unsupported = || ForceRenewReject::UnsupportedAuth {
        protocol: auth.protocol,
        algorithm: auth.algorithm,
        rdm: auth.rdm,
    };
    if auth.algorithm != ALG_HMAC_MD5 || auth.rdm != RDM_MONOTONIC {
        return Err(unsupported());
    }
    let key: &[u8] = match auth.protocol {
        PROTO_RECONFIGURE_KEY => {
            let k = keys.reconfigure_key.ok_or_else(unsupported)?;
            if auth.info.len() != 1 + DIGEST_LEN {
                return Err(ForceRenewReject::BadAuthInfo {
                    len: auth.info.len(),
                    expected: 1 + DIGEST_LEN,
                });
            }
            if auth.info[0] != RKAP_TYPE_HMAC {
                return Err(ForceRenewReject::NotHmacType(auth.info[0]));
            }
            k
        }
        PROTO_DELAYED => {
            let (id, k) = keys.delayed.ok_or_else(unsupported)?;
            if auth.info.len() != 4 + DIGEST_LEN {
                return Err(ForceRenewReject::BadAuthInfo {
                    len: auth.info.len(),
                    expected: 4 + DIGEST_LEN,
                });
            }
            let got = u32::from_be_bytes(auth.info[..4].try_into().expect("4 bytes"));
            if got != id {
                return Err(ForceRenewReject::UnknownSecretId(got));
            }
            k
        }
        _ => return Err(unsupported()),
    };
    let hmac_at = value_at + hmac_offset_in_value(auth.protocol).expect("checked above");
    let expected = message_hmac(key, raw, hmac_at);
    if !digest_eq(&expected, &raw[hmac_at..hmac_at + DIGEST_LEN]) {
        return Err(ForceRenewReject::WrongKey);
    }
    if let Some(last) = window.last.filter(|&last| auth.replay <= last) {
        return Err(ForceRenewReject::Replayed {
            last,
            got: auth.replay,
        });
    }
    window.last = Some(auth.replay);
    Ok(AcceptedForceRenew {
        server_id,
        xid: msg.xid,
        protocol: auth.protocol,
        replay: auth.replay,
    })
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

    const MAC: [u8; 6] = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55];
    const KEY: [u8; 16] = *b"0123456789abcdef";

    fn fr() -> ForceRenew {
        ForceRenew {
            client_mac: MAC,
            client_ip: Ipv4Addr::new(198, 18, 0, 2),
            server_id: Ipv4Addr::new(198, 18, 0, 1),
            xid: 0x1234_5678,
        }
    }

    /// The 236-byte header of [`fr`]'s FORCERENEW, then the cookie.
    fn header_hex() -> String {
        let mut h = String::from("02010600 12345678 0000 0000 c6120002 00000000 00000000 00000000");
        h.push_str("001122334455 00000000000000000000");
        h.push_str(&"00".repeat(64 + 128));
        h.push_str("63825363");
        h
    }

    #[test]
    fn forcerenew_reconfigure_key_vector() {
        let b = encode_forcerenew(&fr(), ForceRenewAuth::ReconfigureKey(&KEY), 7);
        // Options: 53=9, 54, 90 (RFC 6704 type 2), end.
        let mut want = hex(&header_hex());
        want.extend(hex("350109 3604c6120001 5a1c030100 0000000000000007 02"));
        let hmac_at = want.len();
        want.extend([0; 16]);
        want.push(0xff);
        assert_eq!(want.len(), 240 + 3 + 6 + 30 + 1);
        want.resize(MIN_BOOTP_LEN, 0); // RFC 1542 §2.1 padding
        assert_eq!(b.len(), want.len());
        assert_eq!(b[..hmac_at], want[..hmac_at]);
        assert_eq!(b[hmac_at + 16..], want[hmac_at + 16..]);
        // The HMAC, recomputed independently over the zeroed-field message.
        assert_eq!(b[hmac_at..hmac_at + 16], hmac_md5(&KEY, &[&want]));

        let m = Message::decode(&b).unwrap();
        assert_eq!(m.message_type(), Some(MessageType::FORCERENEW));
        assert_eq!(m.server_id(), Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(m.encode().unwrap(), b[..280]);
    }

    #[test]
    fn forcerenew_delayed_auth_vector() {
        let secret = b"shared secret";
        let b = encode_forcerenew(
            &fr(),
            ForceRenewAuth::Delayed {
                secret_id: 0xdead_beef,
                key: secret,
            },
            1,
        );
        let mut want = hex(&header_hex());
        want.extend(hex(
            "350109 3604c6120001 5a1f010100 0000000000000001 deadbeef",
        ));
        let hmac_at = want.len();
        want.extend([0; 16]);
        want.push(0xff);
        want.resize(MIN_BOOTP_LEN, 0);
        assert_eq!(b[..hmac_at], want[..hmac_at]);
        assert_eq!(b[hmac_at + 16..], want[hmac_at + 16..]);
        assert_eq!(b[hmac_at..hmac_at + 16], hmac_md5(secret, &[&want]));

        let keys = ClientKeys {
            reconfigure_key: None,
            delayed: Some((0xdead_beef, secret)),
        };
        let mut w = ReplayWindow::default();
        let ok = verify_forcerenew(&b, &MAC, keys, &mut w).unwrap();
        assert_eq!(ok.protocol, PROTO_DELAYED);
        assert_eq!(w.last(), Some(1));
        let other_id = ClientKeys {
            reconfigure_key: None,
            delayed: Some((1, secret)),
        };
        assert_eq!(
            verify_forcerenew(&b, &MAC, other_id, &mut ReplayWindow::default()),
            Err(ForceRenewReject::UnknownSecretId(0xdead_beef))
        );
    }

    #[test]
    fn hops_and_giaddr_are_outside_the_hmac() {
        // A relay may change hops and giaddr in flight (RFC 3118 §5.3).
        let mut b = encode_forcerenew(&fr(), ForceRenewAuth::ReconfigureKey(&KEY), 9);
        b[OFF_HOPS] = 3;
        b[OFF_GIADDR..OFF_GIADDR + 4].copy_from_slice(&[10, 0, 0, 1]);
        let keys = ClientKeys {
            reconfigure_key: Some(&KEY),
            delayed: None,
        };
        let ok = verify_forcerenew(&b, &MAC, keys, &mut ReplayWindow::default()).unwrap();
        assert_eq!(ok.xid, 0x1234_5678);
        // Any other byte is covered.
        b[12] ^= 1; // ciaddr
        assert_eq!(
            verify_forcerenew(&b, &MAC, keys, &mut ReplayWindow::default()),
            Err(ForceRenewReject::WrongKey)
        );
    }

    #[test]
    fn verify_rejects_precisely() {
        let keys = ClientKeys {
            reconfigure_key: Some(&KEY),
            delayed: None,
        };
        let good = encode_forcerenew(&fr(), ForceRenewAuth::ReconfigureKey(&KEY), 100);
        let mut w = ReplayWindow::default();
        assert_eq!(
            verify_forcerenew(
                &encode_forcerenew(&fr(), ForceRenewAuth::Unauthenticated, 0),
                &MAC,
                keys,
                &mut w
            ),
            Err(ForceRenewReject::Unauthenticated)
        );
        let wrong = encode_forcerenew(&fr(), ForceRenewAuth::ReconfigureKey(&[9; 16]), 100);
        assert_eq!(
            verify_forcerenew(&wrong, &MAC, keys, &mut w),
            Err(ForceRenewReject::WrongKey)
        );
        // Failures leave the window alone.
        assert_eq!(w.last(), None);
        assert!(verify_forcerenew(&good, &MAC, keys, &mut w).is_ok());
        assert_eq!(
            verify_forcerenew(&good, &MAC, keys, &mut w),
            Err(ForceRenewReject::Replayed {
                last: 100,
                got: 100
            })
        );
        let older = encode_forcerenew(&fr(), ForceRenewAuth::ReconfigureKey(&KEY), 99);
        assert!(matches!(
            verify_forcerenew(&older, &MAC, keys, &mut w),
            Err(ForceRenewReject::Replayed { .. })
        ));
        let newer = encode_forcerenew(&fr(), ForceRenewAuth::ReconfigureKey(&KEY), 101);
        assert_eq!(
            verify_forcerenew(&newer, &MAC, keys, &mut w)
                .unwrap()
                .replay,
            101
        );

        let other_mac = [0, 0x11, 0x22, 0x33, 0x44, 0x56];
        assert!(matches!(
            verify_forcerenew(&good, &other_mac, keys, &mut ReplayWindow::default()),
            Err(ForceRenewReject::WrongChaddr { .. })
        ));
        assert!(matches!(
            verify_forcerenew(&good[..100], &MAC, keys, &mut w),
            Err(ForceRenewReject::Malformed(DhcpError::TooShort {
                len: 100,
                ..
            }))
        ));
        // Truncating inside option 90 is malformed, not "wrong key".
        assert!(matches!(
            verify_forcerenew(&good[..275], &MAC, keys, &mut w),
            Err(ForceRenewReject::Malformed(DhcpError::OptionTruncated {
                code: 90,
                ..
            }))
        ));
        let mut req = good.clone();
        req[0] = BOOTREQUEST;
        assert_eq!(
            verify_forcerenew(&req, &MAC, keys, &mut w),
            Err(ForceRenewReject::NotBootReply(1))
        );
        let mut ack = good.clone();
        ack[242] = 5; // option 53's value
        assert_eq!(
            verify_forcerenew(&ack, &MAC, keys, &mut w),
            Err(ForceRenewReject::NotForceRenew(Some(MessageType::ACK)))
        );
        // A delayed-auth message to a client that only has a reconfigure key.
        let delayed = encode_forcerenew(
            &fr(),
            ForceRenewAuth::Delayed {
                secret_id: 1,
                key: &KEY,
            },
            500,
        );
        assert_eq!(
            verify_forcerenew(&delayed, &MAC, keys, &mut w),
            Err(ForceRenewReject::UnsupportedAuth {
                protocol: 1,
                algorithm: 1,
                rdm: 0
            })
        );
    }

    #[test]
    fn ack_carries_reconfigure_key() {
        let mut ack = Message::reply_to(MAC, 42);
        ack.yiaddr = Ipv4Addr::new(198, 18, 0, 2);
        ack.options = vec![
            DhcpOption::MessageType(MessageType::ACK),
            DhcpOption::ServerId(Ipv4Addr::new(198, 18, 0, 1)),
            DhcpOption::Unknown {
                code: 51,
                data: vec![0, 0, 0x0e, 0x10],
            },
            DhcpOption::Authentication(AuthOption::reconfigure_key(5, &KEY)),
        ];
        let b = ack.encode().unwrap();
        let mut opt = hex("5a1c030100 0000000000000005 01");
        opt.extend_from_slice(&KEY);
        let tail = &b[b.len() - 1 - opt.len()..b.len() - 1];
        assert_eq!(tail, &opt[..]);
        let d = Message::decode(&b).unwrap();
        assert_eq!(d, ack);
        assert_eq!(
            d.authentication().unwrap().reconfigure_key_value(),
            Some(KEY)
        );
    }

    #[test]
    fn decoder_errors() {
        let signed = encode_forcerenew(&fr(), ForceRenewAuth::ReconfigureKey(&KEY), 1);
        let mut b = Message::decode(&signed).unwrap().encode().unwrap();
        let n = b.len();
        assert_eq!((n, b[n - 1]), (280, 0xff));
        assert_eq!(Message::decode(&b[..n - 1]), Err(DhcpError::MissingEnd));
        // Pads before the end and padding after it are fine.
        let mut padded = b[..n - 1].to_vec();
        padded.extend([0, 0, 0xff, 0, 0, 0]);
        assert_eq!(
            Message::decode(&padded).unwrap(),
            Message::decode(&b).unwrap()
        );
        b[236] = 0;
        assert_eq!(
            Message::decode(&b),
            Err(DhcpError::BadCookie([0, 130, 83, 99]))
        );
        let mut m = Message::reply_to(MAC, 1);
        m.options.push(DhcpOption::Unknown {
            code: 53,
            data: vec![],
        });
        let bad53 = m.encode().unwrap();
        assert_eq!(
            Message::decode(&bad53),
            Err(DhcpError::OptionLength {
                code: 53,
                len: 0,
                expected: 1
            })
        );
        m.options = vec![DhcpOption::Unknown {
            code: 200,
            data: vec![0; 256],
        }];
        assert_eq!(
            m.encode(),
            Err(DhcpError::OptionTooLong {
                code: 200,
                len: 256
            })
        );
        m.options = vec![DhcpOption::Unknown {
            code: 0,
            data: vec![],
        }];
        assert_eq!(m.encode(), Err(DhcpError::ReservedCode(0)));
        m.options = vec![DhcpOption::ForcerenewNonceCapable(vec![1])];
        let b = m.encode().unwrap();
        assert_eq!(&b[240..], &hex("910101ff")[..]); // RFC 6704 §4, as dhcpcd sends it
        assert_eq!(Message::decode(&b).unwrap(), m);
    }

    /// What the fuzz target checks, over single-byte mutations of a signed FORCERENEW's
    /// options: no panic, whatever decodes round-trips, and no mutation still verifies
    /// (except in `hops`/`giaddr`, which the HMAC excludes).
    #[test]
    fn mutations_never_verify_and_round_trip() {
        let good = encode_forcerenew(&fr(), ForceRenewAuth::ReconfigureKey(&KEY), 5);
        let keys = ClientKeys {
            reconfigure_key: Some(&KEY),
            delayed: None,
        };
        for i in (0..44).chain(236..good.len()) {
            for x in [0x00, 0x01, 0x09, 0x1c, 0x5a, 0xff] {
                let mut b = good.clone();
                if b[i] == x {
                    continue;
                }
                b[i] = x;
                if let Ok(m) = Message::decode(&b) {
                    assert_eq!(Message::decode(&m.encode().unwrap()).unwrap(), m);
                }
                let r = verify_forcerenew(&b, &MAC, keys, &mut ReplayWindow::default());
                let excluded = i == OFF_HOPS || (OFF_GIADDR..OFF_GIADDR + 4).contains(&i);
                assert_eq!(r.is_ok(), excluded, "byte {i} = {x:#04x}: {r:?}");
            }
        }
    }
}
