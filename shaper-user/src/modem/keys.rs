//! Reading the key files the modem pipeline and `shaper modem-config` use
//! (docs/MODEM-CONFIG.md): the CMTS shared secret (first 64 bytes, trailing CR/LF stripped, as
//! rlaager/docsis reads it) and 32-byte keys written as one line of 64 hex digits (`#` lines
//! are comments): Ed25519 seeds (`NAME.key`), Ed25519 public keys (`NAME.pub`) and the
//! file-name key of [`super::ConfigStore`].

use std::path::{Path, PathBuf};

use crate::proto::docsis::{self, CmtsKey, Signer};

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the CMTS shared secret is empty")]
    EmptyCmtsKey { path: PathBuf },
    #[error("{path}: no key line (64 hex digits expected)")]
    NoKeyLine { path: PathBuf },
    #[error("{path}: expected 64 hex digits (32 bytes)")]
    BadHex { path: PathBuf },
    #[error("{path}: not an Ed25519 public key: {reason}")]
    BadPublicKey { path: PathBuf, reason: String },
}

fn read(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    std::fs::read(path).map_err(|source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The CMTS shared secret in `path`.
///
/// # Errors
/// Unreadable or empty file.
pub fn cmts_key(path: &Path) -> Result<CmtsKey, KeyFileError> {
    let k = CmtsKey::from_key_file(&read(path)?);
    if k.as_bytes().is_empty() {
        return Err(KeyFileError::EmptyCmtsKey {
            path: path.to_path_buf(),
        });
    }
    Ok(k)
}

/// Parses 64 hex digits into 32 bytes.
#[must_use]
pub fn hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Parses 32 hex digits into 16 bytes (an RFC 6704 reconfigure key).
#[must_use]
pub fn hex16(s: &str) -> Option<[u8; 16]> {
    let s = s.trim();
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The 32 bytes of a key file: the first line that is neither empty nor a `#` comment, as 64
/// hex digits.
///
/// # Errors
/// Unreadable file, no key line, not 64 hex digits.
pub fn key32(path: &Path) -> Result<[u8; 32], KeyFileError> {
    let bytes = read(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| KeyFileError::NoKeyLine {
            path: path.to_path_buf(),
        })?;
    hex32(line).ok_or_else(|| KeyFileError::BadHex {
        path: path.to_path_buf(),
    })
}

/// An Ed25519 signer from a secret seed file (`shaper modem-config keygen`'s `NAME.key`).
///
/// # Errors
/// As [`key32`].
pub fn signer(path: &Path) -> Result<Signer, KeyFileError> {
    Ok(Signer::from_seed(&key32(path)?))
}

/// An Ed25519 public key from a `NAME.pub` file.
///
/// # Errors
/// As [`key32`], and bytes that are no Ed25519 point.
pub fn public(path: &Path) -> Result<ed25519_dalek::VerifyingKey, KeyFileError> {
    docsis::verifying_key(&key32(path)?).map_err(|e| KeyFileError::BadPublicKey {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_parse_and_errors_name_the_file() {
        let dir = crate::store::TempDir::new("keys");
        let p = dir.path().join("name.key");
        std::fs::write(&p, format!("# comment\n\n{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(key32(&p).unwrap(), [0xab; 32]);
        std::fs::write(&p, "xyz\n").unwrap();
        let e = key32(&p).unwrap_err();
        assert!(matches!(e, KeyFileError::BadHex { .. }), "{e}");
        assert!(e.to_string().contains("name.key"), "{e}");
        std::fs::write(&p, "# only a comment\n").unwrap();
        assert!(matches!(key32(&p), Err(KeyFileError::NoKeyLine { .. })));
        let e = cmts_key(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, KeyFileError::Read { .. }), "{e}");
        std::fs::write(&p, "\r\n").unwrap();
        assert!(matches!(
            cmts_key(&p),
            Err(KeyFileError::EmptyCmtsKey { .. })
        ));
        assert_eq!(hex16("00112233445566778899aabbccddeeff").unwrap()[15], 0xff);
        assert!(hex16("0011").is_none());
        assert!(hex16("zz112233445566778899aabbccddeeff").is_none());
    }
}
