//! TFTP read-only server core (RFC 1350, RFC 2347/2348/2349, RFC 7440), sans-IO.
//!
//! DOCSIS cable modems fetch their configuration file by TFTP only (docs/PROTOCOLS.md §2). This
//! module has no sockets and no clock: [`accept`] decides what to do with a datagram that
//! arrived on the well-known port, and [`ReadTransfer`] is one transfer's state machine, driven
//! quinn-proto style with `handle(now, from, bytes)`, `handle_timeout(now)`, `poll_timeout()` and
//! `poll_transmit(buf)`. The tokio shell lives in `crate::tftp`.
//!
//! # Rules it enforces
//! - Read-only: WRQ gets error 2 (RFC 1350 §5 code 2, access violation); an unknown opcode gets
//!   error 4; stray DATA/ACK/ERROR/OACK on the well-known port are ignored (they belong to
//!   finished transfers).
//! - Retransmission only on timeout, never on a duplicate ACK: the Sorcerer's Apprentice
//!   syndrome (RFC 1123 §4.2.3.1) doubles every packet once a single one is delayed.
//! - Windows (RFC 7440 §4): up to `windowsize` blocks in flight; an ACK for a block inside the
//!   window moves the window to the block after it (go-back-N when it was not the last block
//!   sent, which is how an RFC 7440 receiver reports a gap).
//! - Block numbers wrap from 65535 to 0 (what curl, tftp-hpa and atftp expect), so files larger
//!   than 65535 blocks transfer.
//!
//! # Amplification (Sieklik et al. 2016 measured ~60x for TFTP reflection)
//! A peer is *unverified* until it sends an ACK that only a receiver of our reply can send (ACK 0
//! after an OACK, or ACK of a block we sent). Towards an unverified peer:
//! - With options, the first reply is the OACK, which echoes the request's own options (only
//!   `tsize` grows, by at most 19 digits), so it is about as large as the request; DATA flows only
//!   after ACK 0 proves the peer receives on that address.
//! - Without options, RFC 1350 §2 makes DATA 1 the reply: at most 516 bytes for a request of at
//!   least 10 (`\0\1` `a\0` `octet\0`), ≤ 52x payload, ≤ 14x on the wire with IP/UDP headers;
//!   about 18x for a realistic `cm-<mac>.cfg` name, and an attacker must know a valid name.
//! - That first packet is sent once: [`Config::unverified_retransmits`] defaults to 0, so an
//!   unverified transfer retransmits nothing and is dropped silently after one timeout. A client
//!   whose first packet was lost repeats its request, and each repeated request yields one
//!   packet ([`ReadTransfer::handle_duplicate_request`]): one reply per request, never more.
//! - Errors to requests are cut to the request's own length ([`packet::encode_error`]); the
//!   "wrong TID" error 5 is sent only for a well-formed, non-ERROR packet, at most one pending.

pub mod client;
mod options;
pub mod packet;
mod transfer;

use std::time::Duration;

pub use options::{Negotiated, OptionError, negotiate};
pub use packet::{ErrorCode, Mode, Packet, ParseError, Request, TftpOption};
pub use transfer::{Outcome, ReadTransfer, Transmit};

/// Limits and defaults of the TFTP server core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest block size granted (RFC 2348). Default 1468: a 1500-byte Ethernet MTU minus
    /// 20 IP + 8 UDP + 4 TFTP header, so no block is ever fragmented.
    pub max_blksize: u16,
    /// Largest window granted (RFC 7440). Default 64.
    pub max_windowsize: u16,
    /// Retransmission timeout when the client does not negotiate one (RFC 2349). Default 1 s,
    /// tftpd-hpa's default.
    pub timeout: Duration,
    /// Retransmissions of one window to a verified peer before giving up. Default 5.
    pub max_retries: u32,
    /// Retransmissions of the first reply to a peer that has not acknowledged anything yet.
    /// Default 0 (see the module docs on amplification).
    pub unverified_retransmits: u32,
    /// Refuse out-of-range option values with error 8 instead of ignoring them (both are allowed
    /// by RFC 2347 §4). Default false: a modem with an odd option still gets its file.
    pub strict_options: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_blksize: 1468,
            max_windowsize: 64,
            timeout: Duration::from_secs(1),
            max_retries: 5,
            unverified_retransmits: 0,
            strict_options: false,
        }
    }
}

/// A [`Config`] value outside what the RFCs allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `max_blksize` outside RFC 2348's 8–65464.
    #[error("max_blksize {0} is outside RFC 2348's 8-65464")]
    BlkSize(u16),
    /// `max_windowsize` of 0 (RFC 7440 minimum is 1).
    #[error("max_windowsize must be at least 1 (RFC 7440)")]
    WindowSize,
    /// `timeout` outside RFC 2349's 1–255 s.
    #[error("timeout {0:?} is outside RFC 2349's 1-255 s")]
    Timeout(Duration),
}

impl Config {
    /// Checks the limits against their RFC ranges.
    ///
    /// # Errors
    /// The first value out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Self {
            max_blksize,
            max_windowsize,
            timeout,
            max_retries: _,
            unverified_retransmits: _,
            strict_options: _,
        } = self;
        if !(packet::MIN_BLKSIZE..=packet::MAX_BLKSIZE).contains(max_blksize) {
            return Err(ConfigError::BlkSize(*max_blksize));
        }
        if *max_windowsize == 0 {
            return Err(ConfigError::WindowSize);
        }
        if *timeout < Duration::from_secs(1) || *timeout > Duration::from_secs(255) {
            return Err(ConfigError::Timeout(*timeout));
        }
        Ok(())
    }
}

/// What to do with a datagram that arrived on the well-known port (RFC 1350 §4).
#[derive(Debug, PartialEq, Eq)]
pub enum Accept<'a> {
    /// A read request: open the file and start a [`ReadTransfer`] from a new TID.
    Read(Request<'a>),
    /// Reply with this error (already cut to the request's length) and forget the request.
    Reply(Vec<u8>),
    /// Say nothing.
    Ignore,
}

/// Classifies a datagram received on the server port.
///
/// RRQ → [`Accept::Read`]; WRQ → error 2 (this server is read-only); unknown opcode or a
/// malformed request → error 4; DATA/ACK/ERROR/OACK → ignored (late packets of finished
/// transfers, or a reflection attempt).
#[must_use]
pub fn accept(datagram: &[u8]) -> Accept<'_> {
    let reply = |code, msg: &str| {
        let mut out = Vec::new();
        packet::encode_error(code, msg, datagram.len(), &mut out);
        Accept::Reply(out)
    };
    match Packet::parse(datagram) {
        Ok(Packet::Rrq(r)) => Accept::Read(r),
        Ok(Packet::Wrq(_)) => reply(ErrorCode::AccessViolation, "read-only server"),
        Ok(_) => Accept::Ignore,
        Err(ParseError::UnknownOpcode { .. }) => reply(ErrorCode::IllegalOperation, "bad opcode"),
        Err(_) if datagram.len() >= 2 && matches!(datagram[1], 1 | 2) && datagram[0] == 0 => {
            reply(ErrorCode::IllegalOperation, "malformed request")
        }
        Err(_) => Accept::Ignore,
    }
}

/// Converts bytes to netascii for a `netascii` transfer (RFC 1350 §1, RFC 764): LF → CR LF,
/// CR → CR NUL. The receiver undoes it, so any binary file survives a netascii transfer.
#[must_use]
pub fn netascii_encode(data: &[u8]) -> Vec<u8> {
    let extra = data.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    let mut out = Vec::with_capacity(data.len() + extra);
    for &b in data {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            b => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_limits_are_checked() {
        Config::default().validate().unwrap();
        let bad = |f: fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.max_blksize = 7), ConfigError::BlkSize(7));
        assert_eq!(bad(|c| c.max_blksize = 65465), ConfigError::BlkSize(65465));
        assert_eq!(bad(|c| c.max_windowsize = 0), ConfigError::WindowSize);
        assert!(matches!(
            bad(|c| c.timeout = Duration::from_millis(500)),
            ConfigError::Timeout(_)
        ));
    }

    #[test]
    fn accept_read_request() {
        let Accept::Read(r) = accept(b"\x00\x01cm.cfg\x00octet\x00") else {
            panic!()
        };
        assert_eq!(r.filename, "cm.cfg");
    }

    #[test]
    fn write_request_is_access_violation() {
        assert_eq!(
            accept(b"\x00\x02upload-file.bin\x00octet\x00"),
            Accept::Reply(b"\x00\x05\x00\x02read-only server\x00".to_vec())
        );
    }

    #[test]
    fn unknown_opcode_is_illegal_operation_no_larger_than_request() {
        let req = b"\x00\x07whatever-is-this";
        let Accept::Reply(r) = accept(req) else {
            panic!()
        };
        assert_eq!(&r[..4], b"\x00\x05\x00\x04");
        assert!(r.len() <= req.len());
        // A 2-byte probe gets the 5-byte minimum, not the full message.
        assert_eq!(
            accept(b"\x00\x09"),
            Accept::Reply(b"\x00\x05\x00\x04\x00".to_vec())
        );
    }

    #[test]
    fn malformed_request_is_illegal_operation() {
        let Accept::Reply(r) = accept(b"\x00\x01no-terminator") else {
            panic!()
        };
        assert_eq!(&r[..4], b"\x00\x05\x00\x04");
    }

    #[test]
    fn stray_packets_on_the_server_port_are_ignored() {
        for d in [
            &b"\x00\x04\x00\x01"[..],
            b"\x00\x03\x00\x01data",
            b"\x00\x05\x00\x00\x00",
            b"\x00\x06\x00",
            b"",
            b"x",
        ] {
            assert_eq!(accept(d), Accept::Ignore, "{d:?}");
        }
    }

    #[test]
    fn netascii_conversion() {
        assert_eq!(netascii_encode(b"a\nb\rc\r\n"), b"a\r\nb\r\0c\r\0\r\n");
        assert_eq!(netascii_encode(b""), b"");
    }
}
