//! RADIUS authenticators: signing and verification with a shared secret passed in.
//!
//! - Request Authenticator of Accounting-Request (RFC 2866 §3), CoA-Request and
//!   Disconnect-Request (RFC 5176 §2.3): `MD5(Code | Identifier | Length | 16 zero octets |
//!   attributes | secret)`.
//! - Response Authenticator (RFC 2865 §3, RFC 2866 §4.2, RFC 5176 §3): `MD5(Code | Identifier |
//!   Length | Request Authenticator | attributes | secret)`.
//! - Message-Authenticator (RFC 3579 §3.2, RFC 5176 §3.1): HMAC-MD5 keyed by the secret over the
//!   whole packet with its own value zeroed. The authenticator field while computing it, as
//!   radclient checks (docs/PROTOCOLS.md §4): in a CoA/Disconnect/Accounting request, zero (the
//!   Request Authenticator is computed afterwards, over the filled-in attribute); in an
//!   Access-Request, the random Request Authenticator; in a response, the *request's*
//!   authenticator (the Response Authenticator is computed afterwards).
//!
//! Every comparison is constant-time ([`crate::proto::auth::digest_eq`]).

use super::dict;
use super::packet::{
    AUTH_OFFSET, Code, DecodeError, EncodeError, HEADER_LEN, Packet, packet_bytes,
};
use crate::proto::auth::{digest_eq, hmac_md5, md5};

/// Why a packet failed authentication. RFC 2865 §3 / RFC 5176 §3 say the receiver silently
/// discards it; the variants say why, for logs.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("malformed packet: {0}")]
    Decode(#[from] DecodeError),
    #[error("Request Authenticator does not match (wrong shared secret or altered packet)")]
    RequestAuthenticator,
    #[error(
        "Response Authenticator does not match (wrong shared secret, altered packet or not a response to this request)"
    )]
    ResponseAuthenticator,
    #[error("Message-Authenticator does not match")]
    MessageAuthenticator,
    #[error("Message-Authenticator is required but absent")]
    MissingMessageAuthenticator,
    #[error("Message-Authenticator is {len} bytes, not 16")]
    MessageAuthenticatorLength { len: usize },
    #[error("more than one Message-Authenticator")]
    DuplicateMessageAuthenticator,
    #[error("code {0:?} is not a {1}")]
    WrongKind(Code, &'static str),
}

/// Offset of the Message-Authenticator *value* in a well-formed packet, if it has one.
fn find_message_authenticator(body: &[u8]) -> Result<Option<usize>, AuthError> {
    let mut off = HEADER_LEN;
    let mut found = None;
    while off + 2 <= body.len() {
        let typ = body[off];
        let len = usize::from(body[off + 1]);
        if len < 2 || off + len > body.len() {
            break; // packet_bytes/decode report these; here they only end the walk
        }
        if typ == dict::MESSAGE_AUTHENTICATOR {
            if len != 18 {
                return Err(AuthError::MessageAuthenticatorLength { len: len - 2 });
            }
            if found.is_some() {
                return Err(AuthError::DuplicateMessageAuthenticator);
            }
            found = Some(off + 2);
        }
        off += len;
    }
    Ok(found)
}

fn fill_message_authenticator(bytes: &mut [u8], secret: &[u8]) -> Result<(), EncodeError> {
    match find_message_authenticator(bytes) {
        Ok(Some(at)) => {
            bytes[at..at + 16].fill(0);
            let mac = hmac_md5(secret, &[bytes]);
            bytes[at..at + 16].copy_from_slice(&mac);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(AuthError::MessageAuthenticatorLength { len }) => {
            Err(EncodeError::MessageAuthenticatorLength { len })
        }
        Err(_) => Err(EncodeError::DuplicateMessageAuthenticator),
    }
}

/// Encodes a request and signs it: Message-Authenticator (if the packet carries one) then the
/// Request Authenticator for Accounting/CoA/Disconnect. For Access-Request and Status-Server
/// the caller's random [`Packet::authenticator`] is kept (RFC 2865 §3) and only the
/// Message-Authenticator is filled in.
pub fn encode_request(packet: &Packet, secret: &[u8]) -> Result<Vec<u8>, EncodeError> {
    if packet.code.is_response() {
        return Err(EncodeError::WrongKind(packet.code));
    }
    let mut bytes = packet.encode()?;
    let computed = packet.code.has_computed_request_authenticator();
    if computed {
        bytes[AUTH_OFFSET..HEADER_LEN].fill(0);
    }
    fill_message_authenticator(&mut bytes, secret)?;
    if computed {
        let auth = md5(&[&bytes, secret]);
        bytes[AUTH_OFFSET..HEADER_LEN].copy_from_slice(&auth);
    }
    Ok(bytes)
}

/// Encodes a response to a request whose authenticator was `request_auth` and signs it
/// (Message-Authenticator, then Response Authenticator).
pub fn encode_response(
    packet: &Packet,
    request_auth: &[u8; 16],
    secret: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    if !packet.code.is_response() {
        return Err(EncodeError::WrongKind(packet.code));
    }
    let mut bytes = packet.encode()?;
    bytes[AUTH_OFFSET..HEADER_LEN].copy_from_slice(request_auth);
    fill_message_authenticator(&mut bytes, secret)?;
    let auth = md5(&[&bytes, secret]);
    bytes[AUTH_OFFSET..HEADER_LEN].copy_from_slice(&auth);
    Ok(bytes)
}

fn check_message_authenticator(
    copy: &mut [u8],
    received: &[u8],
    secret: &[u8],
    require: bool,
) -> Result<(), AuthError> {
    match find_message_authenticator(received)? {
        Some(at) => {
            copy[at..at + 16].fill(0);
            let mac = hmac_md5(secret, &[copy]);
            if digest_eq(&mac, &received[at..at + 16]) {
                Ok(())
            } else {
                Err(AuthError::MessageAuthenticator)
            }
        }
        None if require => Err(AuthError::MissingMessageAuthenticator),
        None => Ok(()),
    }
}

/// Verifies a received request: the Request Authenticator (Accounting/CoA/Disconnect) and the
/// Message-Authenticator if present — or absent while `require_message_authenticator`.
pub fn verify_request(
    buf: &[u8],
    secret: &[u8],
    require_message_authenticator: bool,
) -> Result<(), AuthError> {
    let body = packet_bytes(buf)?;
    let code = Code::from_u8(body[0]);
    if code.is_response() {
        return Err(AuthError::WrongKind(code, "request"));
    }
    let mut copy = body.to_vec();
    if code.has_computed_request_authenticator() {
        copy[AUTH_OFFSET..HEADER_LEN].fill(0);
        let expect = md5(&[&copy, secret]);
        if !digest_eq(&expect, &body[AUTH_OFFSET..HEADER_LEN]) {
            return Err(AuthError::RequestAuthenticator);
        }
    }
    check_message_authenticator(&mut copy, body, secret, require_message_authenticator)
}

/// Verifies a received response to the request whose authenticator was `request_auth`.
pub fn verify_response(
    buf: &[u8],
    request_auth: &[u8; 16],
    secret: &[u8],
    require_message_authenticator: bool,
) -> Result<(), AuthError> {
    let body = packet_bytes(buf)?;
    let code = Code::from_u8(body[0]);
    if !code.is_response() {
        return Err(AuthError::WrongKind(code, "response"));
    }
    let mut copy = body.to_vec();
    copy[AUTH_OFFSET..HEADER_LEN].copy_from_slice(request_auth);
    let expect = md5(&[&copy, secret]);
    if !digest_eq(&expect, &body[AUTH_OFFSET..HEADER_LEN]) {
        return Err(AuthError::ResponseAuthenticator);
    }
    check_message_authenticator(&mut copy, body, secret, require_message_authenticator)
}
