//! Replay protection, sessions superseded on their address, expiry of silent sessions, and
//! rates a DOCSIS file cannot carry (issue 11).

use std::net::SocketAddr;

use super::tests::{
    NOW_MS, SECRET, acct, cause, client_addr, coa, reply, server, server_with, signed,
};
use super::*;
use crate::proto::radius::{encode_request, verify_response};

fn port(p: u16) -> SocketAddr {
    SocketAddr::new(client_addr().ip(), p)
}

fn stat(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// The verified response of a handled request at `now_ms`.
fn reply_at(s: &RadiusServer, listener: Listener, now_ms: u64, req: &[u8]) -> Packet {
    match s.handle(listener, now_ms, client_addr(), req) {
        Handled::Reply(r) => {
            let auth: [u8; 16] = req[4..20].try_into().unwrap();
            verify_response(&r, &auth, SECRET.as_bytes(), false).unwrap();
            Packet::decode(&r).unwrap()
        }
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn a_captured_coa_replayed_from_another_port_is_dropped_and_counted() {
    let (s, sink, _) = server(true);
    let req = coa(11, "alice", &[(dict::FILTER_ID, b"1000/1000")], true);
    let first = match s.handle(Listener::Coa, NOW_MS, port(40000), &req) {
        Handled::Reply(r) => r,
        other => panic!("{other:?}"),
    };
    // A legitimate retransmission (same port, id, authenticator): the cached answer.
    match s.handle(Listener::Coa, NOW_MS + 500, port(40000), &req) {
        Handled::Resend(r) => assert_eq!(r, first),
        other => panic!("{other:?}"),
    }
    // The same bytes from another port after the ACK, within the window: a replay.
    for (p, at) in [(40001, 1_000), (50000, 200_000), (40000, 60_000)] {
        match s.handle(Listener::Coa, NOW_MS + at, port(p), &req) {
            Handled::Drop(DropReason::Replay { client }) => assert_eq!(client, client_addr().ip()),
            other => panic!("port {p} at +{at} ms: {other:?}"),
        }
    }
    assert_eq!(sink.calls.lock().unwrap().len(), 1, "applied once");
    assert_eq!(stat(&s.stats().replays), 3);
    assert_eq!(stat(&s.stats().dropped), 3);
    assert_eq!(stat(&s.stats().resent), 1);
    // Past the window the timestamp check refuses it: no replay either.
    assert!(matches!(
        s.handle(Listener::Coa, NOW_MS + 302_000, port(40002), &req),
        Handled::Drop(DropReason::StaleEventTimestamp { .. })
    ));
    // A Disconnect is protected the same way.
    let mut d = Packet::new(Code::DisconnectRequest, 12);
    d.push(dict::USER_NAME, "alice");
    d.add_message_authenticator();
    let d = signed(&d);
    assert_eq!(
        reply_at(&s, Listener::Coa, NOW_MS, &d).code,
        Code::DisconnectAck
    );
    assert!(matches!(
        s.handle(Listener::Coa, NOW_MS + 10, port(40003), &d),
        Handled::Drop(DropReason::Replay { .. })
    ));
    assert_eq!(sink.calls.lock().unwrap().len(), 2);
    assert_eq!(s.replay_cache_len(client_addr().ip()), 2);
}

#[test]
fn event_timestamp_is_required_unless_configured_otherwise() {
    let unstamped = |id: u8| {
        let mut p = Packet::new(Code::CoaRequest, id);
        p.push(dict::USER_NAME, "alice");
        p.push(dict::FILTER_ID, "1000/1000");
        encode_request(&p, SECRET.as_bytes()).unwrap()
    };
    let (s, sink, _) = server(false);
    assert!(matches!(
        s.handle(Listener::Coa, NOW_MS, client_addr(), &unstamped(1)),
        Handled::Drop(DropReason::MissingEventTimestamp)
    ));
    assert_eq!(stat(&s.stats().bad_event_timestamp), 1);
    assert!(sink.calls.lock().unwrap().is_empty());

    // Not required: taken, and still protected against replays for the window.
    let (s, sink, _) = server_with(false, |c| c.require_event_timestamp = false);
    let req = unstamped(2);
    assert_eq!(reply_at(&s, Listener::Coa, NOW_MS, &req).code, Code::CoaAck);
    assert!(matches!(
        s.handle(Listener::Coa, NOW_MS + 100_000, port(40009), &req),
        Handled::Drop(DropReason::Replay { .. })
    ));
    // After the window from its arrival it is taken again (nothing dates it).
    assert!(matches!(
        s.handle(Listener::Coa, NOW_MS + 301_000, port(40009), &req),
        Handled::Reply(_)
    ));
    assert_eq!(sink.calls.lock().unwrap().len(), 2);
}

#[test]
fn a_full_replay_cache_drops_new_requests_and_forgets_nothing() {
    let (s, sink, _) = server_with(false, |c| c.replay_cache_per_client = 2);
    let req = |id: u8, rate: &[u8]| coa(id, "alice", &[(dict::FILTER_ID, rate)], false);
    let (a, b, c) = (
        req(1, b"1000/1000"),
        req(2, b"2000/1000"),
        req(3, b"3000/1000"),
    );
    assert_eq!(reply_at(&s, Listener::Coa, NOW_MS, &a).code, Code::CoaAck);
    assert_eq!(reply_at(&s, Listener::Coa, NOW_MS, &b).code, Code::CoaAck);
    assert!(matches!(
        s.handle(Listener::Coa, NOW_MS + 1, client_addr(), &c),
        Handled::Drop(DropReason::ReplayCacheFull { cap: 2, .. })
    ));
    assert_eq!(stat(&s.stats().replay_cache_full), 1);
    // The old entries are still there: a replay of `a` is still refused as one.
    assert!(matches!(
        s.handle(Listener::Coa, NOW_MS + 2, port(40100), &a),
        Handled::Drop(DropReason::Replay { .. })
    ));
    // A NAK is an answer too: its authenticator stays (here: the cache had room again after
    // the entries expired with their timestamps' window).
    let later = NOW_MS + 301_000;
    let mut nak = Packet::new(Code::CoaRequest, 4);
    nak.push(dict::USER_NAME, "bob");
    nak.push(dict::FILTER_ID, "1000/1000");
    nak.push_integer(dict::EVENT_TIMESTAMP, u32::try_from(later / 1000).unwrap());
    let nak = signed(&nak);
    assert_eq!(
        cause(&reply_at(&s, Listener::Coa, later, &nak)),
        Some(ErrorCause::SessionContextNotFound)
    );
    assert!(matches!(
        s.handle(Listener::Coa, later + 5, port(40101), &nak),
        Handled::Drop(DropReason::Replay { .. })
    ));
    assert_eq!(sink.calls.lock().unwrap().len(), 2);
    assert!(s.replay_cache_len(client_addr().ip()) <= 2);
}

#[test]
fn a_new_session_on_a_held_address_supersedes_the_old_one_and_is_answered() {
    let (s, _, table) = server(false);
    let r = reply(
        &s,
        Listener::Accounting,
        &acct(1, acct_status::START, "old", [198, 18, 0, 10]),
    );
    assert_eq!(r.code, Code::AccountingResponse);
    // The old session's Stop was lost; the BRAS gives the address to a new session.
    let r = reply(
        &s,
        Listener::Accounting,
        &acct(2, acct_status::START, "new", [198, 18, 0, 10]),
    );
    assert_eq!(r.code, Code::AccountingResponse);
    let ids: Vec<String> = table
        .all()
        .unwrap()
        .into_iter()
        .map(|x| x.acct_session_id)
        .collect();
    assert_eq!(ids, ["new"]);
    assert_eq!(stat(&s.stats().superseded), 1);
    // An Interim-Update of a session on another session's address supersedes it as well.
    reply(
        &s,
        Listener::Accounting,
        &acct(3, acct_status::INTERIM_UPDATE, "newer", [198, 18, 0, 10]),
    );
    assert_eq!(table.all().unwrap()[0].acct_session_id, "newer");
    assert_eq!(stat(&s.stats().superseded), 2);
    // A late Interim-Update of "old" (up for 600 s: it started before "newer") is answered
    // but takes nothing back.
    let mut late = Packet::new(Code::AccountingRequest, 4);
    late.push_integer(dict::ACCT_STATUS_TYPE, acct_status::INTERIM_UPDATE);
    late.push(dict::ACCT_SESSION_ID, "old");
    late.push(dict::USER_NAME, "alice");
    late.push(dict::FRAMED_IP_ADDRESS, [198, 18, 0, 10]);
    late.push_integer(dict::ACCT_SESSION_TIME, 600);
    let r = reply(&s, Listener::Accounting, &signed(&late));
    assert_eq!(r.code, Code::AccountingResponse);
    assert_eq!(table.all().unwrap()[0].acct_session_id, "newer");
    assert_eq!(table.all().unwrap().len(), 1);
    assert_eq!(stat(&s.stats().outdated), 1);
    assert_eq!(stat(&s.stats().superseded), 2);
    assert_eq!(stat(&s.stats().accounting), 4);
    // The superseded sessions are no longer tracked for expiry.
    assert_eq!(s.tracked_sessions(), 1);
}

#[test]
fn sessions_without_interim_updates_expire() {
    let (s, _, table) = server_with(false, |c| c.session_timeout_s = Some(60));
    let at = |ms: u64| NOW_MS + ms;
    let acct_at = |now: u64, req: &[u8]| reply_at(&s, Listener::Accounting, now, req);
    acct_at(at(0), &acct(1, acct_status::START, "s1", [198, 18, 0, 1]));
    // s2 announces a 300 s interim interval: it expires after three of them.
    let mut p = Packet::new(Code::AccountingRequest, 2);
    p.push_integer(dict::ACCT_STATUS_TYPE, acct_status::START);
    p.push(dict::ACCT_SESSION_ID, "s2");
    p.push(dict::USER_NAME, "bob");
    p.push(dict::FRAMED_IP_ADDRESS, [198, 18, 0, 2]);
    p.push_integer(dict::ACCT_INTERIM_INTERVAL, 300);
    acct_at(at(0), &signed(&p));
    acct_at(at(0), &acct(3, acct_status::START, "s3", [198, 18, 0, 3]));
    acct_at(
        at(10_000),
        &acct(4, acct_status::STOP, "s3", [198, 18, 0, 3]),
    );
    // s1 is heard of again at +30 s.
    acct_at(
        at(30_000),
        &acct(5, acct_status::INTERIM_UPDATE, "s1", [198, 18, 0, 1]),
    );
    assert!(s.expire_sessions(at(89_999)).is_empty());
    let ended = s.expire_sessions(at(90_000));
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].0.acct_session_id, "s1");
    assert_eq!(ended[0].1, EndCause::Expired { silent_ms: 60_000 });
    assert_eq!(ended[0].1.to_string(), "expired: no accounting for 60 s");
    let ids = || -> Vec<String> {
        table
            .all()
            .unwrap()
            .into_iter()
            .map(|x| x.acct_session_id)
            .collect()
    };
    assert_eq!(ids(), ["s2"]);
    assert!(s.expire_sessions(at(899_999)).is_empty());
    assert_eq!(s.expire_sessions(at(900_000))[0].0.acct_session_id, "s2");
    assert!(ids().is_empty());
    assert_eq!(stat(&s.stats().expired), 2);
    assert_eq!(s.tracked_sessions(), 0);

    // Switched off: nothing is tracked or ended.
    let (s, _, table) = server_with(false, |c| c.session_timeout_s = None);
    reply_at(
        &s,
        Listener::Accounting,
        NOW_MS,
        &acct(1, acct_status::START, "s1", [198, 18, 0, 1]),
    );
    assert!(s.expire_sessions(NOW_MS + 86_400_000).is_empty());
    assert_eq!(table.all().unwrap().len(), 1);
}

#[test]
fn a_coa_rate_above_the_docsis_maximum_is_naked_407() {
    let (s, sink, _) = server(false);
    let mut p = Packet::new(Code::CoaRequest, 21);
    p.push(dict::USER_NAME, "alice");
    p.push_vendor(dict::MIKROTIK_RATE_LIMIT, "5G/5G".as_bytes());
    let r = reply(&s, Listener::Coa, &signed(&p));
    assert_eq!(r.code, Code::CoaNak);
    assert_eq!(cause(&r), Some(ErrorCause::InvalidAttributeValue));
    assert!(sink.calls.lock().unwrap().is_empty());
    // The maximum itself is taken.
    let mut p = Packet::new(Code::CoaRequest, 22);
    p.push(dict::USER_NAME, "alice");
    p.push_vendor(
        dict::MIKROTIK_RATE_LIMIT,
        "4294967295/4294967295".as_bytes(),
    );
    assert_eq!(reply(&s, Listener::Coa, &signed(&p)).code, Code::CoaAck);
    let calls = sink.calls.lock().unwrap();
    assert_eq!(calls[0].2.unwrap().max_down_bps, Some(u64::from(u32::MAX)));
}

#[test]
fn config_refuses_an_empty_replay_cache_and_zero_windows() {
    let mut c = RadiusServerConfig {
        replay_cache_per_client: 0,
        ..RadiusServerConfig::default()
    };
    assert_eq!(c.validate(), Err(ConfigError::EmptyReplayCache));
    c.replay_cache_per_client = 1;
    c.session_timeout_s = Some(0);
    assert_eq!(
        c.validate(),
        Err(ConfigError::ZeroWindow {
            field: "session_timeout_s"
        })
    );
}
