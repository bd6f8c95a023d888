//! A TFTP read client (RFC 1350, with RFC 2347 options: RFC 2348 `blksize`, RFC 2349 `tsize`),
//! as a cable modem uses to fetch its configuration file: sans-IO, time passed in.
//!
//! The client sends an RRQ to the server's well-known port; the first answer fixes the
//! server's transfer identifier (its source address), and packets from any other source get
//! ERROR 5 (unknown transfer ID) without disturbing the transfer (RFC 1350 §4). An OACK fixes
//! the block size (never larger than asked, RFC 2348) and is acknowledged with ACK 0; a server
//! that ignores options answers with DATA 1 of 512-byte blocks. Every DATA block in order is
//! acknowledged; a duplicate of the previous block is acknowledged again (its ACK was lost);
//! a short block ends the transfer. On a timeout the last packet is sent again, a bounded
//! number of times.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::packet::{ErrorCode, Packet, Request, TftpOption, encode_error};

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("the server answered ERROR {code}: {message}")]
    Server { code: u16, message: String },
    #[error("no answer after {tries} tries of {timeout:?}")]
    Timeout { tries: u32, timeout: Duration },
    #[error("malformed packet from the server: {0}")]
    Malformed(String),
    #[error("unexpected {what} from the server")]
    Unexpected { what: &'static str },
    #[error("the server's OACK {detail}")]
    BadOack { detail: String },
    #[error("the file is larger than the {max} bytes this client accepts")]
    TooLarge { max: usize },
}

/// What the caller sends: `bytes` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Settings of one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Block size to ask for (RFC 2348, 8..=65464); `None` sends no options.
    pub blksize: Option<u16>,
    /// Ask for the file size (RFC 2349 `tsize` = 0).
    pub tsize: bool,
    /// Wait per try before sending the last packet again.
    pub timeout: Duration,
    /// Tries per packet (the first send included).
    pub tries: u32,
    /// Largest file accepted.
    pub max_size: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            blksize: Some(1428),
            tsize: true,
            timeout: Duration::from_secs(1),
            tries: 5,
            max_size: 16 << 20,
        }
    }
}

/// One read transfer, driven by [`ReadClient::handle`], [`ReadClient::handle_timeout`] and
/// [`ReadClient::poll_transmit`].
#[derive(Debug)]
pub struct ReadClient {
    cfg: ClientConfig,
    server: SocketAddr,
    /// The server's transfer identifier, once it answered.
    tid: Option<SocketAddr>,
    blksize: usize,
    /// Last block received in order (0 = none yet).
    last_block: u16,
    data: Vec<u8>,
    /// The packet to send again on a timeout, and where.
    last: Transmit,
    tries: u32,
    deadline: Instant,
    out: Vec<Transmit>,
    result: Option<Result<Vec<u8>, ClientError>>,
    /// The size the server announced (tsize), if any.
    announced: Option<u64>,
}

impl ReadClient {
    /// Starts a fetch of `filename` from `server` at `now`: the RRQ is the first transmit.
    #[must_use]
    pub fn new(now: Instant, server: SocketAddr, filename: &str, cfg: ClientConfig) -> Self {
        let blk = cfg.blksize.map(|b| b.to_string());
        let mut options = Vec::new();
        if let Some(b) = &blk {
            options.push(TftpOption {
                name: "blksize",
                value: b,
            });
        }
        if cfg.tsize {
            options.push(TftpOption {
                name: "tsize",
                value: "0",
            });
        }
        let mut bytes = Vec::new();
        Packet::Rrq(Request {
            filename,
            mode: "octet",
            options,
        })
        .encode(&mut bytes);
        let first = Transmit { to: server, bytes };
        Self {
            cfg,
            server,
            tid: None,
            blksize: 512,
            last_block: 0,
            data: Vec::new(),
            out: vec![first.clone()],
            last: first,
            tries: 1,
            deadline: now + cfg.timeout,
            result: None,
            announced: None,
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.remove(0))
        }
    }

    /// When [`ReadClient::handle_timeout`] is due, while the transfer runs.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.result.is_none().then_some(self.deadline)
    }

    /// The outcome, once the transfer ended: the file's bytes, or why it failed.
    #[must_use]
    pub fn result(&self) -> Option<&Result<Vec<u8>, ClientError>> {
        self.result.as_ref()
    }

    /// The size the server announced with `tsize`, if it did.
    #[must_use]
    pub fn announced_size(&self) -> Option<u64> {
        self.announced
    }

    fn fail(&mut self, e: ClientError) {
        self.result = Some(Err(e));
    }

    fn send(&mut self, now: Instant, p: &Packet<'_>, to: SocketAddr) {
        let mut bytes = Vec::new();
        p.encode(&mut bytes);
        let t = Transmit { to, bytes };
        self.out.push(t.clone());
        self.last = t;
        self.tries = 1;
        self.deadline = now + self.cfg.timeout;
    }

    /// A datagram from `from` arrived at `now`.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if self.result.is_some() {
            return;
        }
        match self.tid {
            Some(tid) if tid != from => {
                // RFC 1350 §4: another TID gets ERROR 5; the transfer goes on.
                let mut bytes = Vec::new();
                encode_error(ErrorCode::UnknownTid, "unknown transfer ID", 64, &mut bytes);
                self.out.push(Transmit { to: from, bytes });
                return;
            }
            None if from.ip() != self.server.ip() => return,
            _ => {}
        }
        let packet = match Packet::parse(datagram) {
            Ok(p) => p,
            Err(e) => return self.fail(ClientError::Malformed(e.to_string())),
        };
        let first = self.tid.is_none();
        self.tid = Some(from);
        match packet {
            Packet::Oack { options } if first => {
                for o in &options {
                    if o.name.eq_ignore_ascii_case("blksize") {
                        let Some(asked) = self.cfg.blksize else {
                            return self.fail(ClientError::BadOack {
                                detail: "has blksize, which was not asked for".into(),
                            });
                        };
                        match o.value.parse::<u16>() {
                            Ok(b) if (8..=asked).contains(&b) => self.blksize = usize::from(b),
                            _ => {
                                return self.fail(ClientError::BadOack {
                                    detail: format!("blksize {:?} is not in 8..={asked}", o.value),
                                });
                            }
                        }
                    } else if o.name.eq_ignore_ascii_case("tsize") {
                        match o.value.parse::<u64>() {
                            Ok(n) if n <= self.cfg.max_size as u64 => self.announced = Some(n),
                            Ok(_) => {
                                return self.fail(ClientError::TooLarge {
                                    max: self.cfg.max_size,
                                });
                            }
                            Err(_) => {
                                return self.fail(ClientError::BadOack {
                                    detail: format!("tsize {:?} is not a number", o.value),
                                });
                            }
                        }
                    } else if !o.name.eq_ignore_ascii_case("timeout") {
                        return self.fail(ClientError::BadOack {
                            detail: format!("has {:?}, which was not asked for", o.name),
                        });
                    }
                }
                self.send(now, &Packet::Ack { block: 0 }, from);
            }
            Packet::Data { block, data } => {
                let next = self.last_block.wrapping_add(1);
                if block == next {
                    if self.data.len() + data.len() > self.cfg.max_size {
                        return self.fail(ClientError::TooLarge {
                            max: self.cfg.max_size,
                        });
                    }
                    self.data.extend_from_slice(data);
                    self.last_block = block;
                    self.send(now, &Packet::Ack { block }, from);
                    if data.len() < self.blksize {
                        self.result = Some(Ok(std::mem::take(&mut self.data)));
                    }
                } else if block == self.last_block && !(first && block == 0) {
                    // Our ACK was lost: acknowledge again (the server resends on its timeout
                    // only, so this cannot start a Sorcerer's Apprentice exchange).
                    let mut bytes = Vec::new();
                    Packet::Ack { block }.encode(&mut bytes);
                    self.out.push(Transmit { to: from, bytes });
                }
            }
            Packet::Error { code, message } => {
                self.fail(ClientError::Server {
                    code: code.to_u16(),
                    message: message.to_string(),
                });
            }
            Packet::Oack { .. } => {}
            Packet::Rrq(_) => self.fail(ClientError::Unexpected { what: "RRQ" }),
            Packet::Wrq(_) => self.fail(ClientError::Unexpected { what: "WRQ" }),
            Packet::Ack { .. } => self.fail(ClientError::Unexpected { what: "ACK" }),
        }
    }

    /// Called at or after [`ReadClient::poll_timeout`]: sends the last packet again, or gives
    /// up after the configured tries.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.result.is_some() || now < self.deadline {
            return;
        }
        if self.tries >= self.cfg.tries {
            return self.fail(ClientError::Timeout {
                tries: self.tries,
                timeout: self.cfg.timeout,
            });
        }
        self.tries += 1;
        self.deadline = now + self.cfg.timeout;
        self.out.push(self.last.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::proto::tftp::{Config, ReadTransfer};

    const SERVER: &str = "198.18.0.1:69";
    const TID: &str = "198.18.0.1:40000";
    const CLIENT: &str = "198.18.0.2:50000";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Runs our client against the server core until the client finishes, dropping the
    /// datagrams `drop` selects (by their sequence number over both directions), advancing a
    /// virtual clock to the next deadline when nothing is in flight.
    fn exchange(
        data: &[u8],
        cfg: ClientConfig,
        drop: impl Fn(u64) -> bool,
    ) -> (Result<Vec<u8>, ClientError>, u64) {
        let mut now = Instant::now();
        let mut c = ReadClient::new(now, addr(SERVER), "cm1.cfg", cfg);
        let mut server: Option<ReadTransfer> = None;
        let data: Arc<[u8]> = data.into();
        let mut seq = 0u64;
        let mut buf = Vec::new();
        for _ in 0..10_000_000 {
            if let Some(r) = c.result() {
                return (r.clone(), seq);
            }
            let mut moved = false;
            while let Some(t) = c.poll_transmit() {
                moved = true;
                seq += 1;
                if drop(seq) {
                    continue;
                }
                if t.to == addr(SERVER) {
                    // The well-known port: a request starts the transfer; a repeated one gets
                    // one more reply (the server shell's rule for unverified peers).
                    match (&mut server, Packet::parse(&t.bytes).unwrap()) {
                        (None, Packet::Rrq(req)) => {
                            server = Some(ReadTransfer::new(
                                now,
                                addr(CLIENT),
                                &req,
                                data.clone(),
                                &Config::default(),
                            ));
                        }
                        (Some(s), Packet::Rrq(_)) => s.handle_duplicate_request(now),
                        (_, p) => panic!("unexpected {p:?} to port 69"),
                    }
                } else {
                    assert_eq!(t.to, addr(TID));
                    server.as_mut().unwrap().handle(now, addr(CLIENT), &t.bytes);
                }
            }
            if let Some(s) = &mut server {
                while let Some(t) = s.poll_transmit(&mut buf) {
                    moved = true;
                    seq += 1;
                    assert_eq!(t.destination, addr(CLIENT));
                    if !drop(seq) {
                        c.handle(now, addr(TID), &buf);
                    }
                }
            }
            if !moved {
                let next = [
                    c.poll_timeout(),
                    server.as_ref().and_then(ReadTransfer::poll_timeout),
                ]
                .into_iter()
                .flatten()
                .min()
                .expect("someone waits");
                now = now.max(next);
                c.handle_timeout(now);
                if let Some(s) = &mut server {
                    s.handle_timeout(now);
                }
            }
        }
        panic!("no end");
    }

    fn file(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 256) as u8).collect()
    }

    #[test]
    fn fetches_every_size_with_and_without_options() {
        for n in [0, 1, 511, 512, 513, 1428, 1429, 5000, 100_000] {
            for blksize in [None, Some(512), Some(1428)] {
                let cfg = ClientConfig {
                    blksize,
                    tsize: blksize.is_some(),
                    ..ClientConfig::default()
                };
                let (r, _) = exchange(&file(n), cfg, |_| false);
                assert_eq!(r.unwrap(), file(n), "{n} bytes, blksize {blksize:?}");
            }
        }
    }

    #[test]
    fn survives_loss_in_both_directions_and_block_rollover() {
        // Every 7th datagram lost; 8-byte blocks over 600,000 bytes: 75,001 blocks, so the
        // block number wraps past 65535.
        let cfg = ClientConfig {
            blksize: Some(8),
            tries: 10,
            ..ClientConfig::default()
        };
        let (r, _) = exchange(&file(600_000), cfg, |s| s % 7 == 0);
        assert_eq!(r.unwrap(), file(600_000));
        // The first datagrams lost: the RRQ, then the OACK (the client asks again).
        let (r, _) = exchange(&file(20_000), ClientConfig::default(), |s| s <= 2);
        assert_eq!(r.unwrap(), file(20_000));
    }

    #[test]
    fn gives_up_after_its_tries_and_names_server_errors() {
        let cfg = ClientConfig {
            tries: 3,
            ..ClientConfig::default()
        };
        let (r, sent) = exchange(&file(10), cfg, |_| true);
        assert_eq!(
            r,
            Err(ClientError::Timeout {
                tries: 3,
                timeout: cfg.timeout
            })
        );
        assert_eq!(sent, 3, "three RRQs, nothing else");
        let now = Instant::now();
        let mut c = ReadClient::new(now, addr(SERVER), "nope.cfg", ClientConfig::default());
        c.poll_transmit().unwrap();
        let mut e = Vec::new();
        encode_error(ErrorCode::FileNotFound, "file not found", 64, &mut e);
        c.handle(now, addr(TID), &e);
        assert_eq!(
            c.result(),
            Some(&Err(ClientError::Server {
                code: 1,
                message: "file not found".into()
            }))
        );
    }

    #[test]
    fn another_tid_gets_error_5_and_the_transfer_goes_on() {
        let now = Instant::now();
        let cfg = ClientConfig {
            blksize: None,
            tsize: false,
            ..ClientConfig::default()
        };
        let mut c = ReadClient::new(now, addr(SERVER), "cm1.cfg", cfg);
        c.poll_transmit().unwrap();
        let mut d = Vec::new();
        Packet::Data {
            block: 1,
            data: &[1; 512],
        }
        .encode(&mut d);
        c.handle(now, addr(TID), &d);
        assert_eq!(c.poll_transmit().unwrap().bytes, [0, 4, 0, 1]);
        let stray = addr("198.18.0.9:4444");
        c.handle(now, stray, &d);
        let t = c.poll_transmit().unwrap();
        assert_eq!((t.to, &t.bytes[..4]), (stray, &[0u8, 5, 0, 5][..]));
        let mut last = Vec::new();
        Packet::Data {
            block: 2,
            data: &[2; 3],
        }
        .encode(&mut last);
        c.handle(now, addr(TID), &last);
        let mut want = vec![1u8; 512];
        want.extend([2, 2, 2]);
        assert_eq!(c.result(), Some(&Ok(want)));
        // An OACK granting a larger block than asked is refused.
        let mut c = ReadClient::new(now, addr(SERVER), "cm1.cfg", ClientConfig::default());
        c.poll_transmit().unwrap();
        let mut o = Vec::new();
        Packet::Oack {
            options: vec![TftpOption {
                name: "blksize",
                value: "9000",
            }],
        }
        .encode(&mut o);
        c.handle(now, addr(TID), &o);
        assert!(matches!(c.result(), Some(Err(ClientError::BadOack { .. }))));
    }
}
