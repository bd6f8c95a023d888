//! API tokens and roles, on the ground floor: the configuration parses the tokens file into a
//! [`TokenTable`], the HTTP adapter (`api::auth`) authenticates requests against it.
//!
//! Tokens are random strings handed to clients once; only their SHA-256 digests are kept
//! ([`hash_token`]) with a role and a subject. A token is hashed and compared with every stored
//! digest in constant time (no early exit, neither within a digest nor across the table), so
//! response timing tells nothing about how close a guess came. What each role may do is the
//! adapter's: see `api::auth`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Csr,
    Subscriber,
    Provider,
    Automation,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Csr,
        Role::Subscriber,
        Role::Provider,
        Role::Automation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Csr => "csr",
            Role::Subscriber => "subscriber",
            Role::Provider => "provider",
            Role::Automation => "automation",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored token: its digest, never the token itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// SHA-256 of the token, 64 hex digits (see [`hash_token`]).
    pub sha256_hex: String,
    pub role: Role,
    /// User name (admin, csr), modem id (subscriber), provider id, or trigger name.
    pub subject: String,
}

/// Why a token table was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token {index}: sha256_hex is not 64 hex digits")]
    BadHash { index: usize },
    #[error("token {index}: subject is empty")]
    EmptySubject { index: usize },
    #[error("token {index}: the same digest as token {first}")]
    Duplicate { index: usize, first: usize },
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub role: Role,
    pub subject: String,
}

/// The stored tokens.
#[derive(Clone, Debug, Default)]
pub struct TokenTable {
    entries: Vec<([u8; 32], Principal)>,
}

/// The SHA-256 of `token` as 64 lowercase hex digits: what a [`TokenEntry`] stores.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// Equality of two digests without an early exit.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl TokenTable {
    /// A table of `entries`; refused if a digest is malformed or repeated, or a subject empty.
    pub fn new(entries: impl IntoIterator<Item = TokenEntry>) -> Result<TokenTable, TokenError> {
        let mut table = TokenTable::default();
        for (index, e) in entries.into_iter().enumerate() {
            let digest = parse_hex32(&e.sha256_hex).ok_or(TokenError::BadHash { index })?;
            if e.subject.is_empty() {
                return Err(TokenError::EmptySubject { index });
            }
            if let Some(first) = table.entries.iter().position(|(d, _)| *d == digest) {
                return Err(TokenError::Duplicate { index, first });
            }
            table.entries.push((
                digest,
                Principal {
                    role: e.role,
                    subject: e.subject,
                },
            ));
        }
        Ok(table)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal a presented token stands for. Every stored digest is compared, whatever
    /// matched before.
    pub fn lookup(&self, token: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (stored, principal) in &self.entries {
            if ct_eq(stored, &digest) && found.is_none() {
                found = Some(principal);
            }
        }
        found.cloned()
    }
}
