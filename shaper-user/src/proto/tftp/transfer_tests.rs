//! Unit tests of [`ReadTransfer`]: one per rule, then a lossy exchange on a fake clock.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::proto::tftp::packet::TftpOption;

const CLIENT: &str = "192.0.2.10:3000";
const STRAY: &str = "192.0.2.10:3001";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn file(len: usize) -> Arc<[u8]> {
    (0..len)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect::<Vec<_>>()
        .into()
}

fn start(now: Instant, len: usize, opts: &[(&str, &str)], config: &Config) -> ReadTransfer {
    let r = Request {
        filename: "cm.cfg",
        mode: "octet",
        options: opts
            .iter()
            .map(|&(name, value)| TftpOption { name, value })
            .collect(),
    };
    ReadTransfer::new(now, addr(CLIENT), &r, file(len), config)
}

/// Everything the transfer wants to send now, parsed into owned (destination, bytes).
fn drain(t: &mut ReadTransfer) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(tx) = t.poll_transmit(&mut buf) {
        out.push((tx.destination, buf.clone()));
    }
    out
}

fn data_blocks(sent: &[(SocketAddr, Vec<u8>)]) -> Vec<(u16, usize)> {
    sent.iter()
        .map(|(_, b)| match Packet::parse(b).unwrap() {
            Packet::Data { block, data } => (block, data.len()),
            p => panic!("not DATA: {p:?}"),
        })
        .collect()
}

fn ack(block: u16) -> Vec<u8> {
    let mut v = Vec::new();
    Packet::Ack { block }.encode(&mut v);
    v
}

#[test]
fn sizes_without_options_end_with_a_short_block() {
    let now = Instant::now();
    for (len, blocks) in [
        (0, vec![(1, 0)]),
        (511, vec![(1, 511)]),
        (512, vec![(1, 512), (2, 0)]),
        (513, vec![(1, 512), (2, 1)]),
        (1024, vec![(1, 512), (2, 512), (3, 0)]),
    ] {
        let mut t = start(now, len, &[], &Config::default());
        let mut got: Vec<(u16, usize)> = Vec::new();
        loop {
            let sent = data_blocks(&drain(&mut t));
            assert_eq!(sent.len(), 1, "lock-step without windowsize");
            got.extend(&sent);
            t.handle(now, addr(CLIENT), &ack(sent[0].0));
            if t.is_finished() {
                break;
            }
        }
        assert_eq!(got, blocks, "len {len}");
        assert_eq!(t.outcome(), Some(&Outcome::Complete));
        assert!(drain(&mut t).is_empty());
    }
}

#[test]
fn payload_is_the_file() {
    let now = Instant::now();
    let mut t = start(now, 1500, &[], &Config::default());
    let mut got = Vec::new();
    for block in 1..=3u16 {
        let sent = drain(&mut t);
        let Packet::Data { data, .. } = Packet::parse(&sent[0].1).unwrap() else {
            panic!()
        };
        got.extend_from_slice(data);
        t.handle(now, addr(CLIENT), &ack(block));
    }
    assert_eq!(got, &*file(1500));
}

#[test]
fn options_send_oack_and_wait_for_ack_0() {
    let now = Instant::now();
    let mut t = start(
        now,
        3000,
        &[("blksize", "1428"), ("tsize", "0"), ("timeout", "3")],
        &Config::default(),
    );
    let sent = drain(&mut t);
    assert_eq!(sent.len(), 1, "only the OACK before ACK 0");
    assert_eq!(
        Packet::parse(&sent[0].1).unwrap(),
        Packet::Oack {
            options: vec![
                TftpOption {
                    name: "blksize",
                    value: "1428"
                },
                TftpOption {
                    name: "tsize",
                    value: "3000"
                },
                TftpOption {
                    name: "timeout",
                    value: "3"
                },
            ]
        }
    );
    assert!(!t.is_verified());
    // Wrong ACKs before ACK 0 do nothing.
    t.handle(now, addr(CLIENT), &ack(1));
    assert!(drain(&mut t).is_empty());
    assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(3)));
    t.handle(now, addr(CLIENT), &ack(0));
    assert!(t.is_verified());
    assert_eq!(data_blocks(&drain(&mut t)), [(1, 1428)]);
}

#[test]
fn duplicate_ack_never_triggers_a_retransmission() {
    let now = Instant::now();
    let mut t = start(now, 4000, &[], &Config::default());
    assert_eq!(data_blocks(&drain(&mut t)), [(1, 512)]);
    t.handle(now, addr(CLIENT), &ack(1));
    assert_eq!(data_blocks(&drain(&mut t)), [(2, 512)]);
    // The delayed duplicate ACK 1 (RFC 1123 §4.2.3.1): nothing is sent.
    t.handle(now, addr(CLIENT), &ack(1));
    t.handle(now, addr(CLIENT), &ack(1));
    assert!(drain(&mut t).is_empty());
    assert_eq!(t.duplicate_acks(), 2);
    assert_eq!(t.retransmitted(), 0);
    // ACK of an unsent block is ignored too.
    t.handle(now, addr(CLIENT), &ack(7));
    assert!(drain(&mut t).is_empty());
}

#[test]
fn timeout_retransmits_then_gives_up_with_error_0() {
    let now = Instant::now();
    let c = Config {
        max_retries: 2,
        ..Config::default()
    };
    let mut t = start(now, 2000, &[], &c);
    drain(&mut t);
    t.handle(now, addr(CLIENT), &ack(1));
    assert_eq!(data_blocks(&drain(&mut t)), [(2, 512)]);
    let mut at = now;
    // Too early: nothing.
    t.handle_timeout(at + Duration::from_millis(999));
    assert!(drain(&mut t).is_empty());
    for _ in 0..2 {
        at = t.poll_timeout().unwrap();
        t.handle_timeout(at);
        assert_eq!(data_blocks(&drain(&mut t)), [(2, 512)]);
    }
    assert_eq!(t.retransmitted(), 2);
    t.handle_timeout(t.poll_timeout().unwrap());
    let sent = drain(&mut t);
    assert_eq!(sent.len(), 1);
    assert!(matches!(
        Packet::parse(&sent[0].1).unwrap(),
        Packet::Error {
            code: ErrorCode::NotDefined,
            ..
        }
    ));
    assert_eq!(t.outcome(), Some(&Outcome::TimedOut { verified: true }));
    assert!(t.is_finished());
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn unverified_peer_gets_one_packet_per_request() {
    let now = Instant::now();
    let mut t = start(now, 2000, &[], &Config::default());
    assert_eq!(data_blocks(&drain(&mut t)), [(1, 512)]);
    // The client repeats its RRQ: one more DATA 1, no more.
    t.handle_duplicate_request(now + Duration::from_millis(500));
    assert_eq!(data_blocks(&drain(&mut t)), [(1, 512)]);
    assert!(drain(&mut t).is_empty());
    // No ACK ever: dropped silently after one timeout, nothing retransmitted.
    t.handle_timeout(t.poll_timeout().unwrap());
    assert!(drain(&mut t).is_empty());
    assert_eq!(t.outcome(), Some(&Outcome::TimedOut { verified: false }));

    // Same with options: the OACK is not retransmitted either.
    let mut t = start(now, 2000, &[("blksize", "1024")], &Config::default());
    assert_eq!(drain(&mut t).len(), 1);
    t.handle_timeout(t.poll_timeout().unwrap());
    assert!(drain(&mut t).is_empty());
    assert!(t.is_finished());
}

#[test]
fn unverified_retransmits_are_configurable() {
    let now = Instant::now();
    let c = Config {
        unverified_retransmits: 1,
        ..Config::default()
    };
    let mut t = start(now, 100, &[("tsize", "0")], &c);
    let oack = drain(&mut t);
    t.handle_timeout(t.poll_timeout().unwrap());
    assert_eq!(drain(&mut t), oack);
    t.handle_timeout(t.poll_timeout().unwrap());
    assert!(drain(&mut t).is_empty());
    assert!(t.is_finished());
}

#[test]
fn duplicate_request_after_verification_is_ignored() {
    let now = Instant::now();
    let mut t = start(now, 2000, &[], &Config::default());
    drain(&mut t);
    t.handle(now, addr(CLIENT), &ack(1));
    drain(&mut t);
    t.handle_duplicate_request(now);
    assert!(drain(&mut t).is_empty());
}

#[test]
fn window_sends_windowsize_blocks_and_slides_on_acks() {
    let now = Instant::now();
    let mut t = start(
        now,
        512 * 10 + 5,
        &[("windowsize", "4")],
        &Config::default(),
    );
    drain(&mut t);
    t.handle(now, addr(CLIENT), &ack(0));
    let b = |v: &[(u16, usize)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
    assert_eq!(b(&data_blocks(&drain(&mut t))), [1, 2, 3, 4]);
    t.handle(now, addr(CLIENT), &ack(4));
    assert_eq!(b(&data_blocks(&drain(&mut t))), [5, 6, 7, 8]);
    // Block 7 lost: the client acknowledges 6 (RFC 7440 §4); the window restarts at 7.
    t.handle(now, addr(CLIENT), &ack(6));
    assert_eq!(b(&data_blocks(&drain(&mut t))), [7, 8, 9, 10]);
    assert_eq!(t.retransmitted(), 2);
    // Repeats of ACK 6 are duplicates: nothing.
    t.handle(now, addr(CLIENT), &ack(6));
    assert!(drain(&mut t).is_empty());
    t.handle(now, addr(CLIENT), &ack(10));
    assert_eq!(data_blocks(&drain(&mut t)), [(11, 5)]);
    t.handle(now, addr(CLIENT), &ack(11));
    assert_eq!(t.outcome(), Some(&Outcome::Complete));
}

#[test]
fn timeout_resends_the_whole_window_from_the_first_unacked_block() {
    let now = Instant::now();
    let mut t = start(now, 512 * 10, &[("windowsize", "3")], &Config::default());
    drain(&mut t);
    t.handle(now, addr(CLIENT), &ack(0));
    drain(&mut t);
    t.handle(now, addr(CLIENT), &ack(3));
    assert_eq!(data_blocks(&drain(&mut t)).len(), 3);
    t.handle_timeout(t.poll_timeout().unwrap());
    let blocks: Vec<u16> = data_blocks(&drain(&mut t)).iter().map(|x| x.0).collect();
    assert_eq!(blocks, [4, 5, 6]);
}

#[test]
fn block_numbers_wrap_to_zero_past_65535() {
    let now = Instant::now();
    let blk = 8usize;
    let len = 65_536 * blk + 100;
    let mut t = start(
        now,
        len,
        &[("blksize", "8"), ("windowsize", "64")],
        &Config::default(),
    );
    drain(&mut t);
    t.handle(now, addr(CLIENT), &ack(0));
    let mut got = Vec::with_capacity(len);
    let mut expect: u16 = 1;
    let mut saw_zero = false;
    while !t.is_finished() {
        let sent = drain(&mut t);
        let mut last = 0;
        for (_, b) in &sent {
            let Packet::Data { block, data } = Packet::parse(b).unwrap() else {
                panic!()
            };
            assert_eq!(block, expect);
            saw_zero |= block == 0;
            expect = expect.wrapping_add(1);
            got.extend_from_slice(data);
            last = block;
        }
        t.handle(now, addr(CLIENT), &ack(last));
    }
    assert!(saw_zero, "rolled over to block 0");
    assert_eq!(got, &*file(len));
    assert_eq!(t.outcome(), Some(&Outcome::Complete));
}

#[test]
fn stray_tid_gets_error_5_and_does_not_disturb() {
    let now = Instant::now();
    let mut t = start(now, 1000, &[], &Config::default());
    drain(&mut t);
    t.handle(now, addr(STRAY), &ack(1));
    t.handle(now, addr(STRAY), &ack(1)); // one pending error at most
    let sent = drain(&mut t);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, addr(STRAY));
    assert_eq!(
        Packet::parse(&sent[0].1).unwrap(),
        Packet::Error {
            code: ErrorCode::UnknownTid,
            message: "wrong TID"
        }
    );
    // The stray ACK did not advance the transfer; an ERROR from a stray is not answered.
    t.handle(now, addr(STRAY), b"\x00\x05\x00\x00go away\x00".as_slice());
    t.handle(now, addr(STRAY), b"garbage");
    assert!(drain(&mut t).is_empty());
    t.handle(now, addr(CLIENT), &ack(1));
    assert_eq!(data_blocks(&drain(&mut t)), [(2, 488)]);
}

#[test]
fn peer_error_ends_the_transfer_silently() {
    let now = Instant::now();
    let mut t = start(now, 1000, &[("blksize", "1000")], &Config::default());
    drain(&mut t);
    // The client rejects our OACK (RFC 2347 §4: error 8).
    t.handle(now, addr(CLIENT), b"\x00\x05\x00\x08no\x00");
    assert!(drain(&mut t).is_empty());
    assert_eq!(
        t.outcome(),
        Some(&Outcome::PeerError {
            code: ErrorCode::OptionRefused,
            message: "no".into()
        })
    );
    // Even a malformed ERROR counts.
    let mut t = start(now, 1000, &[], &Config::default());
    drain(&mut t);
    t.handle(now, addr(CLIENT), b"\x00\x05\x00\x03disk");
    assert!(matches!(
        t.outcome(),
        Some(Outcome::PeerError {
            code: ErrorCode::DiskFull,
            ..
        })
    ));
}

#[test]
fn unknown_opcode_from_the_client_is_error_4() {
    let now = Instant::now();
    let mut t = start(now, 1000, &[], &Config::default());
    drain(&mut t);
    t.handle(now, addr(CLIENT), b"\x00\x0a\x00\x01");
    let sent = drain(&mut t);
    assert_eq!(sent.len(), 1);
    assert!(matches!(
        Packet::parse(&sent[0].1).unwrap(),
        Packet::Error {
            code: ErrorCode::IllegalOperation,
            ..
        }
    ));
    assert_eq!(t.outcome(), Some(&Outcome::IllegalOperation));
}

#[test]
fn strict_option_refusal_is_error_8_and_mail_mode_is_error_4() {
    let now = Instant::now();
    let c = Config {
        strict_options: true,
        ..Config::default()
    };
    let mut t = start(now, 10, &[("blksize", "70000")], &c);
    let sent = drain(&mut t);
    assert_eq!(sent.len(), 1);
    assert!(matches!(
        Packet::parse(&sent[0].1).unwrap(),
        Packet::Error {
            code: ErrorCode::OptionRefused,
            ..
        }
    ));
    assert!(matches!(t.outcome(), Some(Outcome::OptionsRefused(_))));
    assert!(t.is_finished());

    let r = Request {
        filename: "f",
        mode: "mail",
        options: vec![],
    };
    let mut t = ReadTransfer::new(now, addr(CLIENT), &r, file(10), &Config::default());
    let sent = drain(&mut t);
    assert!(matches!(
        Packet::parse(&sent[0].1).unwrap(),
        Packet::Error {
            code: ErrorCode::IllegalOperation,
            ..
        }
    ));
    assert_eq!(t.outcome(), Some(&Outcome::UnsupportedMode));
}

#[test]
fn netascii_mode_sends_converted_bytes() {
    let now = Instant::now();
    let r = Request {
        filename: "f",
        mode: "netascii",
        options: vec![],
    };
    let mut t = ReadTransfer::new(
        now,
        addr(CLIENT),
        &r,
        b"a\nb\r".to_vec().into(),
        &Config::default(),
    );
    let sent = drain(&mut t);
    assert_eq!(
        Packet::parse(&sent[0].1).unwrap(),
        Packet::Data {
            block: 1,
            data: b"a\r\nb\r\0"
        }
    );
}

#[test]
fn abort_sends_error_0() {
    let now = Instant::now();
    let mut t = start(now, 1000, &[], &Config::default());
    drain(&mut t);
    t.abort("shutting down");
    let sent = drain(&mut t);
    assert_eq!(
        Packet::parse(&sent[0].1).unwrap(),
        Packet::Error {
            code: ErrorCode::NotDefined,
            message: "shutting down"
        }
    );
    assert_eq!(t.outcome(), Some(&Outcome::Aborted));
    t.abort("again");
    assert!(drain(&mut t).is_empty());
}

/// Deterministic xorshift so the lossy run is reproducible without an RNG in the core.
struct Rng(u64);
impl Rng {
    fn chance(&mut self, percent: u64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % 100 < percent
    }
}

/// An RFC 1350/7440 receiver: ACKs every `window` in-order blocks and the final one, ACKs the
/// last in-order block on a gap or on its own timeout, and re-ACKs nothing else.
struct Client {
    window: u16,
    blksize: usize,
    expect: u16,
    in_order: u16,
    got: Vec<u8>,
    done: bool,
    deadline: Instant,
}

#[test]
fn lossy_exchange_on_a_fake_clock_completes_without_doubling() {
    // Go-back-N (RFC 7440 §4) costs up to a window per loss, so large windows get low loss rates.
    for (window, loss) in [(1u16, 20u64), (8, 5), (64, 1)] {
        let t0 = Instant::now();
        let len = 200_000;
        let config = Config {
            max_retries: 50,
            ..Config::default()
        };
        let w = window.to_string();
        let mut t = start(
            t0,
            len,
            &[("blksize", "1024"), ("windowsize", &w)],
            &Config {
                max_windowsize: 64,
                ..config
            },
        );
        // The client verified us already (ACK 0 cannot be lost in this model: we send it
        // reliably, then everything else is lossy).
        drain(&mut t);
        t.handle(t0, addr(CLIENT), &ack(0));
        let one_way = Duration::from_millis(5);
        let client_timeout = Duration::from_millis(300);
        let mut c = Client {
            window,
            blksize: 1024,
            expect: 1,
            in_order: 0,
            got: Vec::new(),
            done: false,
            deadline: t0 + client_timeout,
        };
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(window));
        // (deliver_at, to_client, bytes)
        let mut wire: VecDeque<(Instant, bool, Vec<u8>)> = VecDeque::new();
        let mut now = t0;
        let mut server_sent = 0u64;
        let mut buf = Vec::new();
        for _ in 0..1_000_000 {
            while let Some(tx) = t.poll_transmit(&mut buf) {
                assert_eq!(tx.destination, addr(CLIENT));
                server_sent += 1;
                if !rng.chance(loss) {
                    wire.push_back((now + one_way, true, buf.clone()));
                }
            }
            if c.done && t.is_finished() {
                break;
            }
            // Advance the fake clock to the next event.
            let next_wire = wire.iter().map(|w| w.0).min();
            let next = [next_wire, t.poll_timeout(), (!c.done).then_some(c.deadline)]
                .into_iter()
                .flatten()
                .min()
                .expect("something pending");
            now = next;
            if t.poll_timeout().is_some_and(|d| d <= now) {
                t.handle_timeout(now);
            }
            let mut client_acks = Vec::new();
            if !c.done && c.deadline <= now {
                client_acks.push(c.in_order);
                c.deadline = now + client_timeout;
            }
            let (due, rest): (Vec<_>, Vec<_>) = wire.drain(..).partition(|w| w.0 <= now);
            wire.extend(rest);
            for (_, to_client, bytes) in due {
                if !to_client {
                    t.handle(now, addr(CLIENT), &bytes);
                    continue;
                }
                let Ok(Packet::Data { block, data }) = Packet::parse(&bytes) else {
                    continue;
                };
                if block == c.expect && !c.done {
                    c.got.extend_from_slice(data);
                    c.in_order = block;
                    c.expect = block.wrapping_add(1);
                    c.deadline = now + client_timeout;
                    let last = data.len() < c.blksize;
                    if last {
                        c.done = true;
                    }
                    if last || block % c.window == 0 {
                        client_acks.push(block);
                    }
                } else {
                    // A gap or a repeat (also after the end, while dallying): report the last
                    // in-order block (RFC 7440 §4); the server ignores it if it is a duplicate.
                    client_acks.push(c.in_order);
                }
            }
            for a in client_acks {
                if !rng.chance(loss) {
                    wire.push_back((now + one_way, false, ack(a)));
                }
            }
        }
        assert_eq!(t.outcome(), Some(&Outcome::Complete), "window {window}");
        assert_eq!(c.got, &*file(len), "window {window}");
        let blocks = (len / 1024 + 1) as u64;
        // No Sorcerer's Apprentice: the server sends well under 3x the blocks.
        assert!(
            server_sent < 3 * blocks,
            "window {window}: {server_sent} datagrams for {blocks} blocks"
        );
        assert!(t.retransmitted() > 0, "the loss model did drop packets");
    }
}
