//! Option negotiation for a read request: RFC 2347 §4 (negotiation), RFC 2348 (`blksize`),
//! RFC 2349 (`timeout`, `tsize`), RFC 7440 (`windowsize`).
//!
//! The server answers every option it understands and accepts in its OACK and omits the others
//! (RFC 2347 §4: "options not acknowledged by the server must be ignored by the client"). A value
//! outside the range its RFC defines is either ignored (default) or refused with error 8
//! ([`super::Config::strict_options`]).

use std::time::Duration;

use super::Config;
use super::packet::{DEFAULT_BLKSIZE, MAX_BLKSIZE, MIN_BLKSIZE, Mode, TftpOption};

/// The parameters a transfer runs with after negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Data bytes per block (RFC 2348); 512 unless negotiated.
    pub blksize: u16,
    /// Blocks sent before waiting for an ACK (RFC 7440); 1 unless negotiated.
    pub windowsize: u16,
    /// Retransmission timeout: the client's `timeout` (RFC 2349 §2) or the configured one.
    pub timeout: Duration,
    /// Accepted options for the OACK, names as the client spelled them, in request order.
    /// Empty means no OACK: the transfer starts with DATA 1 (RFC 2347 §4).
    pub oack: Vec<(String, String)>,
}

/// An option value outside the range of its RFC, refused with error 8 in strict mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("option {name}={value:?} is invalid: {rule}")]
pub struct OptionError {
    /// Option name as sent.
    pub name: String,
    /// Value as sent.
    pub value: String,
    /// The rule it breaks.
    pub rule: &'static str,
}

fn decimal(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Negotiates `options` of a read request for a file of `file_len` bytes sent in `mode`.
///
/// Rules: names are case-insensitive and the first occurrence wins (RFC 2347 §2);
/// `blksize` 8–65464 clamped to [`Config::max_blksize`] (RFC 2348 §3 lets the server answer a
/// smaller value); `timeout` 1–255 s echoed unchanged (RFC 2349 §2); `tsize` answered with the
/// file size in octet mode (RFC 2349 §3; omitted in netascii mode, where the size on the wire
/// differs, as tftpd-hpa does, and for an empty file, which curl refuses as `tsize 0`); `windowsize` 1–65535 clamped to [`Config::max_windowsize`]
/// (RFC 7440 §3). Unknown options are omitted.
///
/// # Errors
/// In strict mode, the first option whose value is outside its RFC range.
pub fn negotiate(
    options: &[TftpOption<'_>],
    file_len: u64,
    mode: Mode,
    config: &Config,
) -> Result<Negotiated, OptionError> {
    let mut out = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: config.timeout,
        oack: Vec::new(),
    };
    let mut seen = [false; 4];
    for opt in options {
        let key = ["blksize", "timeout", "tsize", "windowsize"]
            .iter()
            .position(|k| opt.name.eq_ignore_ascii_case(k));
        let Some(key) = key else { continue };
        if std::mem::replace(&mut seen[key], true) {
            continue;
        }
        let n = decimal(opt.value);
        let answer = match key {
            0 => match n {
                Some(n) if (u64::from(MIN_BLKSIZE)..=u64::from(MAX_BLKSIZE)).contains(&n) => {
                    let b = u16::try_from(n)
                        .expect("range checked")
                        .min(config.max_blksize);
                    out.blksize = b;
                    Ok(b.to_string())
                }
                _ => Err("RFC 2348 blksize is 8-65464 octets"),
            },
            1 => match n {
                Some(n @ 1..=255) => {
                    out.timeout = Duration::from_secs(n);
                    Ok(n.to_string())
                }
                _ => Err("RFC 2349 timeout is 1-255 seconds"),
            },
            2 => match (n, mode) {
                (Some(_), Mode::Octet) if file_len > 0 => Ok(file_len.to_string()),
                // Empty file: curl 7.88 rejects `tsize 0` in an OACK as illegal (exit 71, also
                // against tftpd-hpa), so the option is left out and the client learns the size
                // from the empty DATA 1.
                (Some(_), _) => continue,
                (None, _) => Err("RFC 2349 tsize is a decimal octet count"),
            },
            _ => match n {
                Some(n @ 1..=65535) => {
                    let w = u16::try_from(n)
                        .expect("range checked")
                        .min(config.max_windowsize);
                    out.windowsize = w;
                    Ok(w.to_string())
                }
                _ => Err("RFC 7440 windowsize is 1-65535 blocks"),
            },
        };
        match answer {
            Ok(value) => out.oack.push((opt.name.to_owned(), value)),
            Err(rule) if config.strict_options => {
                return Err(OptionError {
                    name: opt.name.into(),
                    value: opt.value.into(),
                    rule,
                });
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<TftpOption<'a>> {
        pairs
            .iter()
            .map(|&(name, value)| TftpOption { name, value })
            .collect()
    }

    fn oack(n: &Negotiated) -> Vec<(&str, &str)> {
        n.oack
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect()
    }

    #[test]
    fn no_options_means_rfc1350_defaults_and_no_oack() {
        let n = negotiate(&[], 600, Mode::Octet, &Config::default()).unwrap();
        assert_eq!(n.blksize, 512);
        assert_eq!(n.windowsize, 1);
        assert_eq!(n.timeout, Config::default().timeout);
        assert!(n.oack.is_empty());
    }

    #[test]
    fn curl_options_are_answered_in_order() {
        let n = negotiate(
            &opts(&[("tsize", "0"), ("blksize", "1428"), ("timeout", "6")]),
            4_194_304,
            Mode::Octet,
            &Config::default(),
        )
        .unwrap();
        assert_eq!(n.blksize, 1428);
        assert_eq!(n.timeout, Duration::from_secs(6));
        assert_eq!(
            oack(&n),
            [("tsize", "4194304"), ("blksize", "1428"), ("timeout", "6")]
        );
    }

    #[test]
    fn blksize_is_clamped_to_the_configured_maximum() {
        let c = Config::default();
        let n = negotiate(&opts(&[("BLKSIZE", "65464")]), 1, Mode::Octet, &c).unwrap();
        assert_eq!(n.blksize, 1468);
        assert_eq!(oack(&n), [("BLKSIZE", "1468")]);
        let n = negotiate(&opts(&[("blksize", "8")]), 1, Mode::Octet, &c).unwrap();
        assert_eq!(n.blksize, 8);
    }

    #[test]
    fn windowsize_is_clamped() {
        let n = negotiate(
            &opts(&[("windowsize", "65535")]),
            1,
            Mode::Octet,
            &Config::default(),
        )
        .unwrap();
        assert_eq!(n.windowsize, 64);
        assert_eq!(oack(&n), [("windowsize", "64")]);
    }

    #[test]
    fn invalid_values_are_ignored_by_default() {
        let n = negotiate(
            &opts(&[
                ("blksize", "7"),
                ("blksize", "1024"), // a later duplicate never counts
                ("timeout", "0"),
                ("windowsize", "65536"),
                ("tsize", "-1"),
                ("multicast", ""),
            ]),
            1,
            Mode::Octet,
            &Config::default(),
        )
        .unwrap();
        assert_eq!(n.blksize, 512);
        assert_eq!(n.windowsize, 1);
        assert!(n.oack.is_empty(), "{n:?}");
    }

    #[test]
    fn invalid_values_are_error_8_in_strict_mode() {
        let c = Config {
            strict_options: true,
            ..Config::default()
        };
        for (name, value) in [
            ("blksize", "65465"),
            ("blksize", "x"),
            ("timeout", "256"),
            ("windowsize", "0"),
            ("tsize", ""),
        ] {
            let e = negotiate(&opts(&[(name, value)]), 1, Mode::Octet, &c).unwrap_err();
            assert_eq!((e.name.as_str(), e.value.as_str()), (name, value));
        }
        // Unknown options are still omitted, not refused.
        assert!(negotiate(&opts(&[("rollover", "0")]), 1, Mode::Octet, &c).is_ok());
    }

    #[test]
    fn tsize_is_omitted_for_an_empty_file() {
        let n = negotiate(
            &opts(&[("tsize", "0"), ("blksize", "1024")]),
            0,
            Mode::Octet,
            &Config::default(),
        )
        .unwrap();
        assert_eq!(oack(&n), [("blksize", "1024")]);
    }

    #[test]
    fn tsize_is_omitted_in_netascii() {
        let n = negotiate(
            &opts(&[("tsize", "0"), ("blksize", "1024")]),
            10,
            Mode::NetAscii,
            &Config::default(),
        )
        .unwrap();
        assert_eq!(oack(&n), [("blksize", "1024")]);
    }
}
