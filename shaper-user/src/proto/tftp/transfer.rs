//! One read transfer (RFC 1350 §2, RFC 2347 §4, RFC 7440 §4) as a state machine.
//!
//! The caller owns the socket and the clock: it feeds every datagram that reaches the
//! transfer's socket to [`ReadTransfer::handle`], calls [`ReadTransfer::handle_timeout`] when
//! [`ReadTransfer::poll_timeout`] passes, and sends whatever [`ReadTransfer::poll_transmit`]
//! yields until it yields nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::options::{OptionError, negotiate};
use super::packet::{self, ErrorCode, Mode, Packet, ParseError, Request};
use super::{Config, netascii_encode};

/// A datagram [`ReadTransfer::poll_transmit`] wrote into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it: the client's TID, or a stray sender for error 5.
    pub destination: SocketAddr,
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client acknowledged the last block.
    Complete,
    /// The client sent an ERROR (RFC 1350 §7), e.g. error 8 rejecting the OACK.
    PeerError {
        /// Its code.
        code: ErrorCode,
        /// Its message (lossy UTF-8).
        message: String,
    },
    /// No acknowledgment within the retry budget. `verified` says whether the client had
    /// acknowledged anything (an unverified one was dropped silently).
    TimedOut {
        /// Whether the peer ever acknowledged.
        verified: bool,
    },
    /// Strict option checking refused an option (error 8 sent, RFC 2347 §5).
    OptionsRefused(OptionError),
    /// The request's mode is not `octet` or `netascii` (error 4 sent).
    UnsupportedMode,
    /// The client sent an unknown opcode (error 4 sent).
    IllegalOperation,
    /// The server aborted the transfer, e.g. at shutdown (error 0 sent).
    Aborted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// OACK sent, waiting for ACK 0 (RFC 2347 §4: on a read the client ACKs block 0).
    AwaitAck0,
    /// Sending DATA blocks.
    Sending,
    /// Finished; only a queued error may still go out.
    Done,
}

/// The state of one read transfer.
#[derive(Debug)]
pub struct ReadTransfer {
    peer: SocketAddr,
    data: Arc<[u8]>,
    blksize: usize,
    window: u64,
    timeout: Duration,
    max_retries: u32,
    unverified_retransmits: u32,
    oack: Vec<u8>,
    phase: Phase,
    send_oack: bool,
    /// Highest block (absolute, 1-based) the client acknowledged; 0 before any.
    base: u64,
    /// Next block to send.
    next: u64,
    /// Highest block ever sent, to count retransmissions.
    highest_sent: u64,
    /// Final block: the first one shorter than `blksize` (possibly empty).
    last: u64,
    verified: bool,
    retries: u32,
    deadline: Option<Instant>,
    final_error: Option<Vec<u8>>,
    stray: Option<SocketAddr>,
    outcome: Option<Outcome>,
    retransmitted: u64,
    duplicate_acks: u64,
}

fn request_len(r: &Request<'_>) -> usize {
    let mut out = Vec::new();
    Packet::Rrq(r.clone()).encode(&mut out);
    out.len()
}

impl ReadTransfer {
    /// Starts serving `data` to `peer` for `request` at `now`.
    ///
    /// The first thing [`Self::poll_transmit`] yields is the OACK when an option was accepted,
    /// DATA 1 otherwise, or the error that refuses the request (unsupported mode, strict option
    /// refusal). Netascii transfers send `data` converted by [`netascii_encode`].
    #[must_use]
    pub fn new(
        now: Instant,
        peer: SocketAddr,
        request: &Request<'_>,
        data: Arc<[u8]>,
        config: &Config,
    ) -> Self {
        let mut t = Self {
            peer,
            data,
            blksize: usize::from(packet::DEFAULT_BLKSIZE),
            window: 1,
            timeout: config.timeout,
            max_retries: config.max_retries,
            unverified_retransmits: config.unverified_retransmits,
            oack: Vec::new(),
            phase: Phase::Sending,
            send_oack: false,
            base: 0,
            next: 1,
            highest_sent: 0,
            last: 0,
            verified: false,
            retries: 0,
            deadline: Some(now + config.timeout),
            final_error: None,
            stray: None,
            outcome: None,
            retransmitted: 0,
            duplicate_acks: 0,
        };
        let budget = request_len(request);
        let mode = match request.mode() {
            Some(m @ (Mode::Octet | Mode::NetAscii)) => m,
            Some(Mode::Mail) | None => {
                t.fail(
                    Outcome::UnsupportedMode,
                    ErrorCode::IllegalOperation,
                    "unsupported mode",
                    budget,
                );
                return t;
            }
        };
        let negotiated = match negotiate(&request.options, t.data.len() as u64, mode, config) {
            Ok(n) => n,
            Err(e) => {
                t.fail(
                    Outcome::OptionsRefused(e),
                    ErrorCode::OptionRefused,
                    "option refused",
                    budget,
                );
                return t;
            }
        };
        if mode == Mode::NetAscii {
            t.data = netascii_encode(&t.data).into();
        }
        t.blksize = usize::from(negotiated.blksize);
        t.window = u64::from(negotiated.windowsize);
        t.timeout = negotiated.timeout;
        t.deadline = Some(now + t.timeout);
        t.last = t.data.len() as u64 / t.blksize as u64 + 1;
        if !negotiated.oack.is_empty() {
            let options = negotiated
                .oack
                .iter()
                .map(|(name, value)| packet::TftpOption { name, value })
                .collect();
            Packet::Oack { options }.encode(&mut t.oack);
            t.phase = Phase::AwaitAck0;
            t.send_oack = true;
        }
        t
    }

    fn fail(&mut self, outcome: Outcome, code: ErrorCode, message: &str, budget: usize) {
        let mut e = Vec::new();
        packet::encode_error(code, message, budget, &mut e);
        self.final_error = Some(e);
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Outcome) {
        self.phase = Phase::Done;
        self.deadline = None;
        self.outcome = Some(outcome);
    }

    /// The client's TID.
    #[must_use]
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Negotiated block size in bytes.
    #[must_use]
    pub fn blksize(&self) -> usize {
        self.blksize
    }

    /// Negotiated window in blocks.
    #[must_use]
    pub fn windowsize(&self) -> u64 {
        self.window
    }

    /// Whether the client has acknowledged something (see the amplification notes in
    /// `proto::tftp`).
    #[must_use]
    pub fn is_verified(&self) -> bool {
        self.verified
    }

    /// DATA blocks sent more than once so far.
    #[must_use]
    pub fn retransmitted(&self) -> u64 {
        self.retransmitted
    }

    /// Duplicate ACKs received (and ignored, RFC 1123 §4.2.3.1).
    #[must_use]
    pub fn duplicate_acks(&self) -> u64 {
        self.duplicate_acks
    }

    /// How the transfer ended, once it has.
    #[must_use]
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// True once the transfer ended and its last datagram (if any) was polled.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Done && self.final_error.is_none()
    }

    /// When [`Self::handle_timeout`] must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Writes the next datagram to send into `buf` (cleared first) and says where it goes.
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        if let Some(destination) = self.stray.take() {
            packet::encode_error(ErrorCode::UnknownTid, "wrong TID", usize::MAX, buf);
            return Some(Transmit { destination });
        }
        if let Some(e) = self.final_error.take() {
            buf.extend_from_slice(&e);
            return Some(Transmit {
                destination: self.peer,
            });
        }
        match self.phase {
            Phase::AwaitAck0 if self.send_oack => {
                self.send_oack = false;
                buf.extend_from_slice(&self.oack);
            }
            Phase::Sending if self.next <= self.last && self.next <= self.base + self.window => {
                let block = self.next;
                self.next += 1;
                if block <= self.highest_sent {
                    self.retransmitted += 1;
                }
                self.highest_sent = self.highest_sent.max(block);
                let start = usize::try_from(block - 1).expect("block fits memory") * self.blksize;
                let end = (start + self.blksize).min(self.data.len());
                // Block numbers wrap past 65535 to 0.
                packet::encode_data_header((block & 0xffff) as u16, buf);
                buf.extend_from_slice(&self.data[start..end]);
            }
            _ => return None,
        }
        Some(Transmit {
            destination: self.peer,
        })
    }

    /// Handles a datagram that arrived on the transfer's socket from `from` at `now`.
    ///
    /// A datagram from any other address than the client's TID is answered with error 5 and
    /// otherwise ignored (RFC 1350 §4); it never disturbs the transfer.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let parsed = Packet::parse(datagram);
        if from != self.peer {
            // Never answer an ERROR (RFC 1350 §7) nor garbage; one pending reply at most.
            if matches!(&parsed, Ok(p) if !matches!(p, Packet::Error { .. }))
                && self.stray.is_none()
            {
                self.stray = Some(from);
            }
            return;
        }
        if self.phase == Phase::Done {
            return;
        }
        match parsed {
            Ok(Packet::Ack { block }) => self.on_ack(now, block),
            Ok(Packet::Error { code, message }) => self.finish(Outcome::PeerError {
                code,
                message: message.into(),
            }),
            Err(ParseError::UnknownOpcode { .. }) => self.fail(
                Outcome::IllegalOperation,
                ErrorCode::IllegalOperation,
                "bad opcode",
                datagram.len(),
            ),
            // A malformed ERROR still ends the transfer: the client gave up.
            Err(_) if datagram.len() >= 4 && datagram[..2] == [0, 5] => {
                self.finish(Outcome::PeerError {
                    code: ErrorCode::from_u16(u16::from_be_bytes([datagram[2], datagram[3]])),
                    message: String::from_utf8_lossy(&datagram[4..])
                        .trim_end_matches('\0')
                        .into(),
                });
            }
            // Anything else (a repeated RRQ sent to our TID, DATA, a malformed ACK) is ignored.
            Ok(_) | Err(_) => {}
        }
    }

    fn on_ack(&mut self, now: Instant, block: u16) {
        match self.phase {
            Phase::AwaitAck0 if block == 0 => {
                self.verified = true;
                self.phase = Phase::Sending;
                self.retries = 0;
                self.deadline = Some(now + self.timeout);
            }
            Phase::Sending => {
                // Map the 16-bit number onto the blocks in flight (base, highest sent].
                let diff = u64::from(block.wrapping_sub((self.base & 0xffff) as u16));
                if diff == 0 {
                    // Sorcerer's Apprentice (RFC 1123 §4.2.3.1): never resend on this.
                    self.duplicate_acks += 1;
                    return;
                }
                let acked = self.base + diff;
                if acked >= self.next {
                    return; // not sent yet: a forged or confused ACK
                }
                self.base = acked;
                self.verified = true;
                self.retries = 0;
                if acked == self.last {
                    self.finish(Outcome::Complete);
                    return;
                }
                // RFC 7440 §4: an ACK inside the window reports a gap after it; the next
                // window starts right after the acknowledged block.
                self.next = acked + 1;
                self.deadline = Some(now + self.timeout);
            }
            Phase::AwaitAck0 | Phase::Done => {}
        }
    }

    /// Handles the expiry of [`Self::poll_timeout`]: retransmits the OACK or the window from
    /// the first unacknowledged block, or gives up once the retries are spent (error 0 to a
    /// verified peer, silence to an unverified one).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(d) if d <= now && self.phase != Phase::Done => {}
            _ => return,
        }
        let limit = if self.verified {
            self.max_retries
        } else {
            self.unverified_retransmits
        };
        if self.retries >= limit {
            if self.verified {
                self.fail(
                    Outcome::TimedOut { verified: true },
                    ErrorCode::NotDefined,
                    "timed out",
                    usize::MAX,
                );
            } else {
                self.finish(Outcome::TimedOut { verified: false });
            }
            return;
        }
        self.retries += 1;
        self.deadline = Some(now + self.timeout);
        self.resend_first_unacked();
    }

    fn resend_first_unacked(&mut self) {
        match self.phase {
            Phase::AwaitAck0 => self.send_oack = true,
            Phase::Sending => self.next = self.base + 1,
            Phase::Done => {}
        }
    }

    /// Handles the same request arriving again on the server port from the client's TID: the
    /// client did not get our first reply. While the peer is unverified this resends that reply
    /// once (one reply per request, so no amplification); afterwards it is a stale duplicate
    /// and ignored.
    pub fn handle_duplicate_request(&mut self, now: Instant) {
        if self.verified || self.phase == Phase::Done {
            return;
        }
        self.deadline = Some(now + self.timeout);
        self.resend_first_unacked();
    }

    /// Ends the transfer with error 0 carrying `message` (e.g. at server shutdown).
    pub fn abort(&mut self, message: &str) {
        if self.phase != Phase::Done {
            self.fail(Outcome::Aborted, ErrorCode::NotDefined, message, usize::MAX);
        }
    }
}

#[cfg(test)]
#[path = "transfer_tests.rs"]
mod tests;
