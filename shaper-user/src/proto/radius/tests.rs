//! Golden vectors: packets captured with tcpdump on loopback in a network namespace, sent by
//! radclient 3.2.1 (freeradius-utils, Debian 12) and answered by FreeRADIUS 3.2.1 running a
//! `listen { type = coa }` virtual server, shared secret `s3cr3t`:
//!
//! ```text
//! printf 'User-Name = "alice"\nAcct-Session-Id = "sess-1"\nMikrotik-Rate-Limit = "10M/50M"\n
//!         Message-Authenticator = 0x00\n' | radclient -x 127.0.0.1:13799 coa s3cr3t     → CoA-ACK
//! printf 'User-Name = "nobody"\nMessage-Authenticator = 0x00\n' | radclient … coa s3cr3t
//!                                                     → CoA-NAK Error-Cause = Session-Context-Not-Found
//! radclient … acct s3cr3t   (Start, Framed-IP/IPv6-Prefix/Delegated-IPv6-Prefix, Event-Timestamp)
//! radclient … disconnect s3cr3t  (User-Name, Acct-Session-Id, Message-Authenticator)
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use super::dict::{self, acct_status};
use super::*;

const SECRET: &[u8] = b"s3cr3t";

const COA_REQ: &str = "2b740044dfbadd332f02292e1462b0e5cdd3acbd0107616c6963652c08736573732d311a0f00003a8c080931304d2f35304d501249de273cdc7187995e8b31edf0e8f6de";
const COA_ACK: &str = "2c740014dee2129e9faa77b4687634eed7f8b099";
const COA_REQ_NOBODY: &str =
    "2bd9002ed87595d5207d244344bf2fb3bd8fd38d01086e6f626f64795012580db0e8c2dfdf7d5864baaf7646b1a8";
const COA_NAK: &str = "2dd9001a4d4e735da8b5fe4b6a5c0a3e016f18566506000001f7";
const ACCT_START: &str = "0436006a756239e363e8c684dde5ef5297dfe6182806000000012c08736573732d310107616c6963650806c612000a0406c6120101200762726173316114004020010db80001000000000000000000007b14003820010db8010000000000000000000000370669248100";
const DISCONNECT: &str = "28650035f752a67f346bd8cc4fc2ecf1bd3101010107616c6963652c08736573732d31501264312351de9482afc46a51ee29259a35";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn auth_of(b: &[u8]) -> [u8; 16] {
    b[4..20].try_into().unwrap()
}

#[test]
fn radclient_coa_request_decodes_verifies_and_resigns_identically() {
    let bytes = hex(COA_REQ);
    let p = Packet::decode(&bytes).unwrap();
    assert_eq!(p.code, Code::CoaRequest);
    assert_eq!(p.identifier, 0x74);
    assert_eq!(p.text(dict::USER_NAME).unwrap(), Some("alice"));
    assert_eq!(p.text(dict::ACCT_SESSION_ID).unwrap(), Some("sess-1"));
    let rl: Vec<&[u8]> = p.vendor_values(dict::MIKROTIK_RATE_LIMIT).collect();
    assert_eq!(rl, vec![b"10M/50M".as_slice()]);
    assert_eq!(p.encode().unwrap(), bytes, "byte-exact round trip");
    verify_request(&bytes, SECRET, true).unwrap();
    // radclient computes the same signature we do, Message-Authenticator included.
    assert_eq!(encode_request(&p, SECRET).unwrap(), bytes);
    assert_eq!(
        verify_request(&bytes, b"wrong", false),
        Err(AuthError::RequestAuthenticator)
    );
}

#[test]
fn freeradius_ack_and_nak_verify_and_resign_identically() {
    let req = hex(COA_REQ);
    let ack = hex(COA_ACK);
    verify_response(&ack, &auth_of(&req), SECRET, false).unwrap();
    let p = Packet::decode(&ack).unwrap();
    assert_eq!((p.code, p.identifier), (Code::CoaAck, 0x74));
    assert_eq!(encode_response(&p, &auth_of(&req), SECRET).unwrap(), ack);
    assert_eq!(
        verify_response(&ack, &[0; 16], SECRET, false),
        Err(AuthError::ResponseAuthenticator)
    );
    assert_eq!(
        verify_response(&ack, &auth_of(&req), SECRET, true),
        Err(AuthError::MissingMessageAuthenticator)
    );

    let req = hex(COA_REQ_NOBODY);
    verify_request(&req, SECRET, true).unwrap();
    let nak = hex(COA_NAK);
    verify_response(&nak, &auth_of(&req), SECRET, false).unwrap();
    let p = Packet::decode(&nak).unwrap();
    assert_eq!(p.code, Code::CoaNak);
    let cause = ErrorCause::from_code(p.integer(dict::ERROR_CAUSE).unwrap().unwrap());
    assert_eq!(cause, ErrorCause::SessionContextNotFound);
    assert_eq!(cause.to_string(), "Session-Context-Not-Found (503)");
    assert_eq!(encode_response(&p, &auth_of(&req), SECRET).unwrap(), nak);
}

#[test]
fn radclient_accounting_start_decodes_every_session_attribute() {
    let bytes = hex(ACCT_START);
    verify_request(&bytes, SECRET, false).unwrap();
    assert_eq!(
        verify_request(&bytes, SECRET, true),
        Err(AuthError::MissingMessageAuthenticator)
    );
    let p = Packet::decode(&bytes).unwrap();
    assert_eq!(p.code, Code::AccountingRequest);
    assert_eq!(
        p.integer(dict::ACCT_STATUS_TYPE).unwrap(),
        Some(acct_status::START)
    );
    assert_eq!(
        p.ipv4(dict::FRAMED_IP_ADDRESS).unwrap(),
        Some(Ipv4Addr::new(198, 18, 0, 10))
    );
    assert_eq!(
        p.ipv4(dict::NAS_IP_ADDRESS).unwrap(),
        Some(Ipv4Addr::new(198, 18, 1, 1))
    );
    assert_eq!(p.text(dict::NAS_IDENTIFIER).unwrap(), Some("bras1"));
    assert_eq!(
        p.ipv6_prefix(dict::FRAMED_IPV6_PREFIX).unwrap(),
        Some(("2001:db8:1::".parse::<Ipv6Addr>().unwrap(), 64))
    );
    assert_eq!(
        p.ipv6_prefix(dict::DELEGATED_IPV6_PREFIX).unwrap(),
        Some(("2001:db8:100::".parse::<Ipv6Addr>().unwrap(), 56))
    );
    assert_eq!(
        p.integer(dict::EVENT_TIMESTAMP).unwrap(),
        Some(1_764_000_000)
    );
    assert_eq!(encode_request(&p, SECRET).unwrap(), bytes);
}

#[test]
fn radclient_disconnect_with_message_authenticator() {
    let bytes = hex(DISCONNECT);
    verify_request(&bytes, SECRET, true).unwrap();
    let p = Packet::decode(&bytes).unwrap();
    assert_eq!(p.code, Code::DisconnectRequest);
    assert_eq!(encode_request(&p, SECRET).unwrap(), bytes);
    // Flip one bit of the Message-Authenticator, then fix the Request Authenticator over it:
    // only the HMAC check can catch it.
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    bad[4..20].fill(0);
    let a = crate::proto::auth::md5(&[&bad, SECRET]);
    bad[4..20].copy_from_slice(&a);
    assert_eq!(
        verify_request(&bad, SECRET, false),
        Err(AuthError::MessageAuthenticator)
    );
}

#[test]
fn response_message_authenticator_uses_the_request_authenticator() {
    let req = hex(COA_REQ);
    let mut ack = Packet::new(Code::CoaAck, 0x74);
    ack.add_message_authenticator();
    let bytes = encode_response(&ack, &auth_of(&req), SECRET).unwrap();
    verify_response(&bytes, &auth_of(&req), SECRET, true).unwrap();
    // The HMAC is over the packet with the *request's* authenticator in the header
    // (RFC 5176 §3.1), not zeros.
    let mut copy = bytes.clone();
    copy[4..20].copy_from_slice(&auth_of(&req));
    copy[22..38].fill(0);
    assert_eq!(
        &bytes[22..38],
        &crate::proto::auth::hmac_md5(SECRET, &[&copy])
    );
    let mut other = auth_of(&req);
    other[0] ^= 1;
    assert!(verify_response(&bytes, &other, SECRET, true).is_err());
}

#[test]
fn unknown_attributes_codes_and_odd_vsas_round_trip_exactly() {
    let mut p = Packet::new(Code::Other(250), 7);
    p.authenticator = [9; 16];
    p.push(200, vec![1, 2, 3]);
    p.push(dict::VENDOR_SPECIFIC, vec![0, 0, 1]); // too short for a vendor id
    p.push(dict::VENDOR_SPECIFIC, vec![0, 0, 0, 9, 1, 1]); // sub-attribute length 1
    p.push(dict::VENDOR_SPECIFIC, vec![0, 0, 0, 9]); // vendor id, no sub-attributes
    p.push(5, vec![]);
    let bytes = p.encode().unwrap();
    let back = Packet::decode(&bytes).unwrap();
    assert_eq!(back.encode().unwrap(), bytes);
    assert!(matches!(
        back.attributes[3],
        Attribute::Vendor { vendor: 9, ref subs } if subs.is_empty()
    ));
    assert!(matches!(back.attributes[2], Attribute::Raw { typ: 26, .. }));
    // Padding beyond the Length field is ignored (RFC 2865 §3).
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0xee; 5]);
    assert_eq!(Packet::decode(&padded).unwrap(), back);
}

#[test]
fn malformed_packets_are_named() {
    assert_eq!(
        Packet::decode(&[0; 10]),
        Err(DecodeError::TooShort { len: 10 })
    );
    let mut b = hex(COA_ACK);
    b[3] = 19;
    assert_eq!(
        Packet::decode(&b),
        Err(DecodeError::LengthOutOfRange { field: 19 })
    );
    b[3] = 30;
    assert_eq!(
        Packet::decode(&b),
        Err(DecodeError::Truncated {
            field: 30,
            received: 20
        })
    );
    let mut b = hex(COA_ACK);
    b.extend_from_slice(&[1, 1]);
    b[3] = 22;
    assert_eq!(
        Packet::decode(&b),
        Err(DecodeError::AttributeLengthTooSmall {
            typ: 1,
            offset: 20,
            len: 1
        })
    );
    b[21] = 5;
    assert_eq!(
        Packet::decode(&b),
        Err(DecodeError::AttributeOverrun {
            typ: 1,
            offset: 20,
            len: 5
        })
    );
    let mut b = hex(COA_ACK);
    b.push(1);
    b[3] = 21;
    assert_eq!(
        Packet::decode(&b),
        Err(DecodeError::AttributeHeaderTruncated { offset: 20 })
    );
    let mut p = Packet::new(Code::CoaRequest, 1);
    p.push(dict::USER_NAME, vec![b'a'; 254]);
    assert_eq!(
        p.encode(),
        Err(EncodeError::AttributeTooLong { typ: 1, len: 254 })
    );
    assert_eq!(
        encode_request(&Packet::new(Code::CoaAck, 1), SECRET),
        Err(EncodeError::WrongKind(Code::CoaAck))
    );
    let mut p = Packet::new(Code::CoaRequest, 1);
    p.push(dict::MESSAGE_AUTHENTICATOR, vec![0; 4]);
    assert_eq!(
        encode_request(&p, SECRET),
        Err(EncodeError::MessageAuthenticatorLength { len: 4 })
    );
    let mut p = Packet::new(Code::CoaRequest, 1);
    p.push(dict::MESSAGE_AUTHENTICATOR, vec![0; 16]);
    p.push(dict::MESSAGE_AUTHENTICATOR, vec![0; 16]);
    assert_eq!(
        encode_request(&p, SECRET),
        Err(EncodeError::DuplicateMessageAuthenticator)
    );
    assert_eq!(
        verify_request(&hex(COA_ACK), SECRET, false),
        Err(AuthError::WrongKind(Code::CoaAck, "request"))
    );
}

#[test]
fn error_cause_table() {
    for c in [401, 402, 403, 404, 503, 506] {
        assert_eq!(ErrorCause::from_code(c).code(), c);
        assert_ne!(ErrorCause::from_code(c).name(), "Unknown");
    }
    assert_eq!(ErrorCause::from_code(999), ErrorCause::Other(999));
    assert_eq!(ErrorCause::MissingAttribute.name(), "Missing-Attribute");
}

/// What the `radius_packet` fuzz target checks, on stable: 20k deterministic mutations of the
/// golden packets (bit flips, truncations, length-field edits). Whatever decodes re-encodes to
/// exactly its own bytes, and verification never panics.
#[test]
fn mutated_golden_packets_round_trip_or_fail_cleanly() {
    let seeds: Vec<Vec<u8>> = [
        COA_REQ,
        COA_ACK,
        COA_REQ_NOBODY,
        COA_NAK,
        ACCT_START,
        DISCONNECT,
    ]
    .iter()
    .map(|s| hex(s))
    .collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut decoded, mut refused) = (0, 0);
    for i in 0..20_000u32 {
        let mut b = seeds[i as usize % seeds.len()].clone();
        for _ in 0..=(next() % 4) {
            let at = usize::try_from(next() % b.len() as u64).unwrap();
            match next() % 4 {
                0 => b[at] ^= 1 << (next() % 8),
                1 => b[at] = u8::try_from(next() % 256).unwrap(),
                2 => b.truncate(at.max(1)),
                _ if b.len() > 3 => b[3] = u8::try_from(next() % 256).unwrap(),
                _ => {}
            }
        }
        let _ = verify_request(&b, SECRET, true);
        let _ = verify_response(&b, &[0; 16], SECRET, true);
        match Packet::decode(&b) {
            Ok(p) => {
                decoded += 1;
                let own = packet::packet_bytes(&b).unwrap();
                assert_eq!(p.encode().unwrap(), own, "mutation {i}");
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        decoded > 1000 && refused > 1000,
        "{decoded} decoded, {refused} refused"
    );
}
