//! The server core, driven with signed packets and a sink that records its calls.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use super::*;
use crate::proto::radius::{encode_request, verify_response};
use crate::sessions::SessionTable;

pub(super) const SECRET: &str = "coa-secret";
pub(super) const NOW_MS: u64 = 1_764_000_000_000;

/// Records calls; knows the sessions of User-Name "alice" only.
#[derive(Default)]
pub(super) struct Recorder {
    pub(super) calls: Mutex<Vec<(String, SessionSelector, Option<QosLevel>)>>,
}

impl CoaSink for Recorder {
    fn coa(&self, target: SessionSelector, qos: QosLevel) -> Result<(), CoaRefusal> {
        if target.user_name.as_deref() != Some("alice") {
            return Err(CoaRefusal::SessionNotFound);
        }
        self.calls
            .lock()
            .unwrap()
            .push(("coa".into(), target, Some(qos)));
        Ok(())
    }
    fn disconnect(&self, target: SessionSelector) -> Result<(), CoaRefusal> {
        if target.user_name.as_deref() != Some("alice") {
            return Err(CoaRefusal::SessionNotFound);
        }
        self.calls
            .lock()
            .unwrap()
            .push(("disconnect".into(), target, None));
        Ok(())
    }
}

pub(super) fn client_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

pub(super) fn server(require_ma: bool) -> (RadiusServer, Arc<Recorder>, Arc<SessionTable>) {
    server_with(require_ma, |_| {})
}

/// [`server`] with its configuration changed by `tune`.
pub(super) fn server_with(
    require_ma: bool,
    tune: impl FnOnce(&mut RadiusServerConfig),
) -> (RadiusServer, Arc<Recorder>, Arc<SessionTable>) {
    let sink = Arc::new(Recorder::default());
    let table = Arc::new(SessionTable::new());
    let mut config = RadiusServerConfig {
        clients: vec![ClientConfig {
            addr: client_addr().ip(),
            secret: SECRET.into(),
            require_message_authenticator: require_ma,
            name: Some("pcrf".into()),
        }],
        gateway: Some("gw1".into()),
        ..RadiusServerConfig::default()
    };
    tune(&mut config);
    let s = RadiusServer::new(config, sink.clone(), table.clone()).unwrap();
    (s, sink, table)
}

pub(super) fn coa(id: u8, user: &str, extra: &[(u8, &[u8])], ma: bool) -> Vec<u8> {
    let mut p = Packet::new(Code::CoaRequest, id);
    p.push(dict::USER_NAME, user.as_bytes());
    for (t, v) in extra {
        p.push(*t, *v);
    }
    if ma {
        p.add_message_authenticator();
    }
    signed(&p)
}

pub(super) fn with_rate(mut bytes_packet: Packet, rate: &str) -> Packet {
    bytes_packet.push_vendor(dict::MIKROTIK_RATE_LIMIT, rate.as_bytes());
    bytes_packet
}

/// Signs `p`; a CoA or Disconnect without an Event-Timestamp gets one (now), as the server
/// requires by default.
pub(super) fn signed(p: &Packet) -> Vec<u8> {
    let mut p = p.clone();
    if matches!(p.code, Code::CoaRequest | Code::DisconnectRequest)
        && p.get(dict::EVENT_TIMESTAMP).is_none()
    {
        p.push_integer(dict::EVENT_TIMESTAMP, now_s());
    }
    encode_request(&p, SECRET.as_bytes()).unwrap()
}

pub(super) fn now_s() -> u32 {
    u32::try_from(NOW_MS / 1000).unwrap()
}

/// Handles `req` on the CoA port and returns the verified response.
pub(super) fn reply(s: &RadiusServer, listener: Listener, req: &[u8]) -> Packet {
    match s.handle(listener, NOW_MS, client_addr(), req) {
        Handled::Reply(r) => {
            let auth: [u8; 16] = req[4..20].try_into().unwrap();
            verify_response(&r, &auth, SECRET.as_bytes(), false).unwrap();
            Packet::decode(&r).unwrap()
        }
        other => panic!("expected a reply, got {other:?}"),
    }
}

pub(super) fn cause(p: &Packet) -> Option<ErrorCause> {
    p.integer(dict::ERROR_CAUSE)
        .unwrap()
        .map(ErrorCause::from_code)
}

#[test]
fn coa_with_mikrotik_rate_is_acked_and_reaches_the_sink() {
    let (s, sink, _) = server(true);
    let mut p = Packet::new(Code::CoaRequest, 9);
    p.push(dict::USER_NAME, "alice");
    p.push(dict::PROXY_STATE, "ps1");
    p = with_rate(p, "10M/50M 0/0 0/0 0/0 2");
    p.add_message_authenticator();
    let resp = reply(&s, Listener::Coa, &signed(&p));
    assert_eq!(resp.code, Code::CoaAck);
    assert_eq!(resp.identifier, 9);
    assert_eq!(resp.get(dict::PROXY_STATE), Some(b"ps1".as_slice()));
    assert!(
        resp.get(dict::MESSAGE_AUTHENTICATOR).is_some(),
        "answers MA with MA"
    );
    let calls = sink.calls.lock().unwrap();
    assert_eq!(calls.len(), 1);
    let qos = calls[0].2.unwrap();
    assert_eq!(qos.max_up_bps, Some(10_000_000));
    assert_eq!(qos.max_down_bps, Some(50_000_000));
    assert_eq!(qos.priority, Some(6));
    assert_eq!(calls[0].1.user_name.as_deref(), Some("alice"));
}

#[test]
fn plain_filter_id_rate_is_accepted() {
    let (s, sink, _) = server(false);
    let req = coa(1, "alice", &[(dict::FILTER_ID, b"20000/5000")], false);
    assert_eq!(reply(&s, Listener::Coa, &req).code, Code::CoaAck);
    let qos = sink.calls.lock().unwrap()[0].2.unwrap();
    assert_eq!(
        (qos.max_down_bps, qos.max_up_bps),
        (Some(20_000_000), Some(5_000_000))
    );
}

#[test]
fn naks_carry_the_right_error_cause() {
    let (s, sink, _) = server(false);
    let cases: Vec<(Vec<u8>, ErrorCause)> = vec![
        (
            coa(1, "bob", &[(dict::FILTER_ID, b"1000/1000")], false),
            ErrorCause::SessionContextNotFound,
        ),
        (
            coa(
                2,
                "alice",
                &[
                    (dict::FILTER_ID, b"1000/1000"),
                    (dict::SESSION_TIMEOUT, &[0, 0, 0, 9]),
                ],
                false,
            ),
            ErrorCause::UnsupportedAttribute,
        ),
        (coa(3, "alice", &[], false), ErrorCause::MissingAttribute),
        (
            coa(4, "alice", &[(dict::FILTER_ID, b"fast")], false),
            ErrorCause::InvalidAttributeValue,
        ),
        (
            coa(5, "alice", &[(dict::FILTER_ID, b"0/0")], false),
            ErrorCause::InvalidAttributeValue,
        ),
    ];
    for (req, want) in cases {
        let resp = reply(&s, Listener::Coa, &req);
        assert_eq!(resp.code, Code::CoaNak, "{want}");
        assert_eq!(cause(&resp), Some(want));
    }
    // NAS identification only: no session named.
    let mut p = Packet::new(Code::CoaRequest, 6);
    p.push(dict::NAS_IDENTIFIER, "bras1");
    p.push(dict::FILTER_ID, "1000/1000");
    let resp = reply(&s, Listener::Coa, &signed(&p));
    assert_eq!(cause(&resp), Some(ErrorCause::MissingAttribute));
    // A Cisco AVPair that is not a rate-limit.
    let mut p = Packet::new(Code::CoaRequest, 7);
    p.push(dict::USER_NAME, "alice");
    p.push_vendor(dict::CISCO_AVPAIR, "subscriber:command=account-logoff");
    let resp = reply(&s, Listener::Coa, &signed(&p));
    assert_eq!(cause(&resp), Some(ErrorCause::UnsupportedAttribute));
    assert!(sink.calls.lock().unwrap().is_empty());
}

#[test]
fn nas_identity_mismatch_is_403() {
    let sink = Arc::new(Recorder::default());
    let config = RadiusServerConfig {
        clients: vec![ClientConfig {
            addr: client_addr().ip(),
            secret: SECRET.into(),
            require_message_authenticator: false,
            name: None,
        }],
        nas_identity: Some(NasIdentity {
            ip: Some(Ipv4Addr::new(198, 18, 1, 1)),
            identifier: None,
        }),
        ..RadiusServerConfig::default()
    };
    let s = RadiusServer::new(config, sink.clone(), Arc::new(SessionTable::new())).unwrap();
    let other = coa(
        1,
        "alice",
        &[
            (dict::NAS_IP_ADDRESS, &[198, 18, 1, 2]),
            (dict::FILTER_ID, b"1000/1000"),
        ],
        false,
    );
    assert_eq!(
        cause(&reply(&s, Listener::Coa, &other)),
        Some(ErrorCause::NasIdentificationMismatch)
    );
    let ours = coa(
        2,
        "alice",
        &[
            (dict::NAS_IP_ADDRESS, &[198, 18, 1, 1]),
            (dict::FILTER_ID, b"1000/1000"),
        ],
        false,
    );
    assert_eq!(reply(&s, Listener::Coa, &ours).code, Code::CoaAck);
    assert_eq!(
        sink.calls.lock().unwrap()[0].1.nas_ip,
        None,
        "our own identity does not narrow the match"
    );
}

#[test]
fn disconnect_is_acked_or_naked() {
    let (s, sink, _) = server(false);
    let mut p = Packet::new(Code::DisconnectRequest, 1);
    p.push(dict::USER_NAME, "alice");
    p.push(dict::ACCT_SESSION_ID, "s1");
    assert_eq!(
        reply(&s, Listener::Coa, &signed(&p)).code,
        Code::DisconnectAck
    );
    let mut p = Packet::new(Code::DisconnectRequest, 2);
    p.push(dict::USER_NAME, "nobody");
    let resp = reply(&s, Listener::Coa, &signed(&p));
    assert_eq!(resp.code, Code::DisconnectNak);
    assert_eq!(cause(&resp), Some(ErrorCause::SessionContextNotFound));
    let mut p = Packet::new(Code::DisconnectRequest, 3);
    p.push(dict::USER_NAME, "alice");
    p.push(dict::FILTER_ID, "1000/1000");
    assert_eq!(
        cause(&reply(&s, Listener::Coa, &signed(&p))),
        Some(ErrorCause::UnsupportedAttribute)
    );
    assert_eq!(sink.calls.lock().unwrap().len(), 1);
}

#[test]
fn bad_packets_are_dropped_silently_with_a_reason() {
    let (s, _, _) = server(true);
    let good = coa(1, "alice", &[(dict::FILTER_ID, b"1000/1000")], true);
    let stranger = SocketAddr::from(([127, 0, 0, 2], 40000));
    assert!(matches!(
        s.handle(Listener::Coa, NOW_MS, stranger, &good),
        Handled::Drop(DropReason::UnknownClient(_))
    ));
    let mut p = Packet::new(Code::CoaRequest, 2);
    p.push(dict::USER_NAME, "alice");
    p.push(dict::FILTER_ID, "1000/1000");
    p.add_message_authenticator();
    let wrong = encode_request(&p, b"not-the-secret").unwrap();
    assert!(matches!(
        s.handle(Listener::Coa, NOW_MS, client_addr(), &wrong),
        Handled::Drop(DropReason::Auth(AuthError::RequestAuthenticator))
    ));
    let no_ma = coa(3, "alice", &[(dict::FILTER_ID, b"1000/1000")], false);
    assert!(matches!(
        s.handle(Listener::Coa, NOW_MS, client_addr(), &no_ma),
        Handled::Drop(DropReason::Auth(AuthError::MissingMessageAuthenticator))
    ));
    assert!(matches!(
        s.handle(Listener::Accounting, NOW_MS, client_addr(), &good),
        Handled::Drop(DropReason::UnexpectedCode { .. })
    ));
    assert!(matches!(
        s.handle(Listener::Coa, NOW_MS, client_addr(), &good[..10]),
        Handled::Drop(DropReason::Decode(_))
    ));
    // Event-Timestamp an hour old (RFC 5176 §3.6).
    let stale = u32::try_from(NOW_MS / 1000 - 3600).unwrap().to_be_bytes();
    let old = coa(
        4,
        "alice",
        &[
            (dict::FILTER_ID, b"1000/1000"),
            (dict::EVENT_TIMESTAMP, &stale),
        ],
        true,
    );
    assert!(matches!(
        s.handle(Listener::Coa, NOW_MS, client_addr(), &old),
        Handled::Drop(DropReason::StaleEventTimestamp { .. })
    ));
    assert_eq!(s.stats().dropped.load(Ordering::Relaxed), 6);
}

#[test]
fn retransmissions_get_the_cached_response_and_the_sink_runs_once() {
    let (s, sink, _) = server(false);
    let req = coa(7, "alice", &[(dict::FILTER_ID, b"1000/1000")], false);
    let first = match s.handle(Listener::Coa, NOW_MS, client_addr(), &req) {
        Handled::Reply(r) => r,
        other => panic!("{other:?}"),
    };
    match s.handle(Listener::Coa, NOW_MS + 1000, client_addr(), &req) {
        Handled::Resend(r) => assert_eq!(r, first),
        other => panic!("{other:?}"),
    }
    assert_eq!(sink.calls.lock().unwrap().len(), 1);
    // After the duplicate window, or from another port, the same request is a replay
    // (replay cache, keyed by client address and Request Authenticator): dropped.
    assert!(matches!(
        s.handle(Listener::Coa, NOW_MS + 31_000, client_addr(), &req),
        Handled::Drop(DropReason::Replay { .. })
    ));
    let other_port = SocketAddr::from(([127, 0, 0, 1], 40001));
    assert!(matches!(
        s.handle(Listener::Coa, NOW_MS + 2_000, other_port, &req),
        Handled::Drop(DropReason::Replay { .. })
    ));
    // Same identifier, different content: a new request.
    let req2 = coa(7, "alice", &[(dict::FILTER_ID, b"2000/1000")], false);
    assert!(matches!(
        s.handle(Listener::Coa, NOW_MS + 31_001, client_addr(), &req2),
        Handled::Reply(_)
    ));
    assert_eq!(sink.calls.lock().unwrap().len(), 2);
    assert_eq!(s.stats().resent.load(Ordering::Relaxed), 1);
    assert_eq!(s.stats().replays.load(Ordering::Relaxed), 2);
}

pub(super) fn acct(id: u8, status: u32, session: &str, ip: [u8; 4]) -> Vec<u8> {
    let mut p = Packet::new(Code::AccountingRequest, id);
    p.push_integer(dict::ACCT_STATUS_TYPE, status);
    p.push(dict::ACCT_SESSION_ID, session);
    p.push(dict::USER_NAME, "alice");
    p.push(dict::FRAMED_IP_ADDRESS, ip);
    p.push(dict::NAS_IP_ADDRESS, [198, 18, 1, 1]);
    p.push(dict::NAS_IDENTIFIER, "bras1");
    p.push_ipv6_prefix(
        dict::DELEGATED_IPV6_PREFIX,
        "2001:db8:100::".parse().unwrap(),
        56,
    );
    signed(&p)
}

#[test]
fn accounting_start_interim_stop_update_the_table() {
    let (s, _, table) = server(false);
    let r = reply(
        &s,
        Listener::Accounting,
        &acct(1, acct_status::START, "s1", [198, 18, 0, 10]),
    );
    assert_eq!(r.code, Code::AccountingResponse);
    let all = table.all().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].framed_ipv4, Some(Ipv4Addr::new(198, 18, 0, 10)));
    assert_eq!(all[0].nas_identifier.as_deref(), Some("bras1"));
    assert_eq!(all[0].gateway.as_deref(), Some("gw1"));
    assert_eq!(all[0].since_ms, NOW_MS);
    assert_eq!(
        all[0].delegated_ipv6_prefix,
        Some(("2001:db8:100::".parse().unwrap(), 56))
    );
    reply(
        &s,
        Listener::Accounting,
        &acct(2, acct_status::INTERIM_UPDATE, "s1", [198, 18, 0, 11]),
    );
    let sel = SessionSelector {
        framed_ipv4: Some(Ipv4Addr::new(198, 18, 0, 11)),
        ..SessionSelector::default()
    };
    assert_eq!(table.find(&sel).unwrap().len(), 1);
    reply(
        &s,
        Listener::Accounting,
        &acct(3, acct_status::STOP, "s1", [198, 18, 0, 11]),
    );
    assert!(table.all().unwrap().is_empty());
    // Accounting-On from the BRAS clears its sessions.
    reply(
        &s,
        Listener::Accounting,
        &acct(4, acct_status::START, "s2", [198, 18, 0, 12]),
    );
    let mut on = Packet::new(Code::AccountingRequest, 5);
    on.push_integer(dict::ACCT_STATUS_TYPE, acct_status::ACCOUNTING_ON);
    on.push(dict::NAS_IDENTIFIER, "bras1");
    reply(&s, Listener::Accounting, &signed(&on));
    assert!(table.all().unwrap().is_empty());
    // No Acct-Session-Id: not recorded, so no response (RFC 2866 §4.1).
    let mut bad = Packet::new(Code::AccountingRequest, 6);
    bad.push_integer(dict::ACCT_STATUS_TYPE, acct_status::START);
    assert!(matches!(
        s.handle(Listener::Accounting, NOW_MS, client_addr(), &signed(&bad)),
        Handled::Drop(DropReason::MissingSessionId)
    ));
    assert_eq!(s.stats().accounting.load(Ordering::Relaxed), 5);
}

#[test]
fn config_validation() {
    let mut c = RadiusServerConfig::default();
    c.clients.push(ClientConfig {
        addr: client_addr().ip(),
        secret: String::new(),
        require_message_authenticator: false,
        name: None,
    });
    assert_eq!(
        c.validate(),
        Err(ConfigError::EmptySecret(client_addr().ip()))
    );
    c.clients[0].secret = "x".into();
    c.clients.push(c.clients[0].clone());
    assert_eq!(
        c.validate(),
        Err(ConfigError::DuplicateClient(client_addr().ip()))
    );
    assert!(!format!("{:?}", c.clients[0]).contains("\"x\""));
}
